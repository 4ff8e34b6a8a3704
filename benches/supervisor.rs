//! `make bench`: tb against the ways a user could do without it, measured
//! side by side in one run on this machine. Prints walls and ratios.
//!
//! 1. 30 jobs of `true` at concurrency 1: through `tb batch`; through a
//!    shell loop of `docker run` with the same mounts and log redirection;
//!    and through the bare engine API (create, start, wait, remove and
//!    nothing else), the floor no supervisor beats without overlapping jobs.
//! 2. 16 jobs of `sleep 2` at concurrency 4 through tb, against the ideal 8 s.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const IMAGE: &str = "tb-base:bookworm";
const JOBS: usize = 30;
const ROUNDS: usize = 5;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument would mean nothing here.
    let tb = common::tb_binary();
    common::require_image(IMAGE, "base-image");
    let work = tempfile::Builder::new().prefix("tb-bench-").tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = rt.block_on(tb::docker::Engine::connect()).unwrap();

    // Warm the engine's caches (image layers, the bridge) before measuring.
    let _ = floor(&rt, &engine, work.path(), 3, "warm");

    println!("== {JOBS} jobs of `true`, concurrency 1, {ROUNDS} rounds (median wall) ==");
    let (mut t_tb, mut t_shell, mut t_floor) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Rotate the order so that no way always runs first on a cold engine.
        for k in 0..3 {
            match (round + k) % 3 {
                0 => t_tb.push(through_tb(&tb, work.path(), round)),
                1 => t_shell.push(shell_loop(work.path(), round)),
                _ => t_floor.push(floor(&rt, &engine, work.path(), JOBS, &format!("floor{round}"))),
            }
        }
        println!(
            "round {round}: tb {:.2}s  shell {:.2}s  api floor {:.2}s",
            t_tb[round].as_secs_f64(),
            t_shell[round].as_secs_f64(),
            t_floor[round].as_secs_f64()
        );
    }
    let (m_tb, m_shell, m_floor) = (median(&mut t_tb), median(&mut t_shell), median(&mut t_floor));
    println!("tb         {:>7.2}s  {:.3}s/job", m_tb, m_tb / JOBS as f64);
    println!("shell loop {:>7.2}s  {:.3}s/job", m_shell, m_shell / JOBS as f64);
    println!("api floor  {:>7.2}s  {:.3}s/job", m_floor, m_floor / JOBS as f64);
    let r_floor = m_tb / m_floor;
    let r_shell = m_tb / m_shell;
    println!(
        "tb / api floor   = {r_floor:.3}  (target <= 1.15) {}",
        verdict(r_floor <= 1.15)
    );
    println!(
        "tb / shell loop  = {r_shell:.3}  (target <= 0.80) {}",
        verdict(r_shell <= 0.80)
    );

    println!("== 16 jobs of `sleep 2`, concurrency 4 ==");
    let wall = sleepers(&tb, work.path()).as_secs_f64();
    // The same work on the bare API, four workers each doing create, start,
    // wait, remove: what the engine itself costs on this machine.
    let api = parallel_floor(&rt, &engine, work.path(), 16, 4).as_secs_f64();
    let r = wall / 8.0;
    println!("tb         {wall:>7.2}s");
    println!("api floor  {api:>7.2}s  (4 workers: create, start, wait, remove)");
    println!("tb / ideal 8 s   = {r:.3}  (target <= 1.10) {}", verdict(r <= 1.10));
    println!("api floor / 8 s  = {:.3}  (what the engine alone allows)", api / 8.0);
    println!("tb / api floor   = {:.3}", wall / api);
}

/// `jobs` jobs of `sleep 2` over `workers` concurrent create-start-wait-remove loops.
fn parallel_floor(
    rt: &tokio::runtime::Runtime,
    engine: &tb::docker::Engine,
    dir: &Path,
    jobs: usize,
    workers: usize,
) -> Duration {
    let root = dir.join("pfloor");
    std::fs::create_dir_all(root.join("downloads")).unwrap();
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (engine, next, root) = (engine.clone(), next.clone(), root.clone());
            set.spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= jobs {
                        break;
                    }
                    let d = root.join(format!("j{i}"));
                    std::fs::create_dir_all(&d).unwrap();
                    let spec = tb::docker::ContainerSpec {
                        name: format!("tb-bench-pfloor-{}-{i}", std::process::id()),
                        image: IMAGE.into(),
                        cmd: Some(vec!["sleep".into(), "2".into()]),
                        labels: [("tb.batch".to_string(), "bench-pfloor".to_string())].into(),
                        binds: vec![
                            format!("{}:/out", d.display()),
                            format!("{}:/downloads", root.join("downloads").display()),
                        ],
                        user: format!("{uid}:{gid}"),
                        shm_size: 1 << 30,
                        network: "bridge".into(),
                        ..Default::default()
                    };
                    let id = engine.create(&spec).await.unwrap();
                    engine.start(&id).await.unwrap();
                    assert_eq!(engine.wait(&id).await.unwrap(), 0);
                    engine.remove(&id).await.unwrap();
                }
            });
        }
        while set.join_next().await.is_some() {}
    });
    t.elapsed()
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

fn median(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64()
}

fn batch_file(dir: &Path, name: &str, jobs: usize, concurrency: usize, command: &str) -> std::path::PathBuf {
    let mut text = format!(
        "[batch]\nname = \"{name}\"\nconcurrency = {concurrency}\ndownloads = \"./downloads\"\n[defaults]\nimage = \"{IMAGE}\"\ngpus = 0\ncommand = {command}\n"
    );
    for i in 0..jobs {
        text.push_str(&format!("[[job]]\nname = \"j{i:03}\"\n"));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run_tb(tb: &str, dir: &Path, file: &Path) -> Duration {
    let t = Instant::now();
    let out = Command::new(tb)
        .args(["batch", file.to_str().unwrap(), "-q"])
        .current_dir(dir)
        .env("TB_RUNS_DIR", dir.join("runs"))
        .env("TB_GPUS", "")
        .output()
        .unwrap();
    let wall = t.elapsed();
    assert!(
        out.status.success(),
        "tb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wall
}

fn through_tb(tb: &str, dir: &Path, round: usize) -> Duration {
    let file = batch_file(dir, &format!("tb{round}"), JOBS, 1, "[\"true\"]");
    run_tb(tb, dir, &file)
}

fn sleepers(tb: &str, dir: &Path) -> Duration {
    let file = batch_file(dir, "sleepers", 16, 4, "[\"sleep\", \"2\"]");
    run_tb(tb, dir, &file)
}

/// What a user would write without tb: one `docker run` a job, the same
/// mounts, user, init and labels, output redirected into the job directory.
fn shell_loop(dir: &Path, round: usize) -> Duration {
    let root = dir.join(format!("shell{round}"));
    std::fs::create_dir_all(root.join("downloads")).unwrap();
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let script = format!(
        "for i in $(seq 1 {JOBS}); do d={root}/jobs/j$i; mkdir -p $d; \
         docker run --rm --init --user {uid}:{gid} --shm-size 1g --security-opt no-new-privileges \
         -v $d:/out -v {root}/downloads:/downloads --label tb.batch=bench-shell --label tb.job=j$i --label tb.attempt=1 \
         {IMAGE} true > $d/stdout.log 2> $d/stderr.log || exit 1; done",
        root = root.display()
    );
    let t = Instant::now();
    let st = Command::new("sh").args(["-c", &script]).status().unwrap();
    let wall = t.elapsed();
    assert!(st.success(), "the shell loop failed");
    wall
}

/// create, start, wait, remove: one job after another, nothing else.
fn floor(rt: &tokio::runtime::Runtime, engine: &tb::docker::Engine, dir: &Path, jobs: usize, tag: &str) -> Duration {
    let root = dir.join(tag);
    std::fs::create_dir_all(root.join("downloads")).unwrap();
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let t = Instant::now();
    rt.block_on(async {
        for i in 0..jobs {
            let d = root.join(format!("j{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let spec = tb::docker::ContainerSpec {
                name: format!("tb-bench-{tag}-{}-{i}", std::process::id()),
                image: IMAGE.into(),
                cmd: Some(vec!["true".into()]),
                env: vec![],
                labels: [("tb.batch".to_string(), format!("bench-{tag}"))].into(),
                binds: vec![
                    format!("{}:/out", d.display()),
                    format!("{}:/downloads", root.join("downloads").display()),
                ],
                user: format!("{uid}:{gid}"),
                shm_size: 1 << 30,
                memory: None,
                cpus: None,
                network: "bridge".into(),
                device_ids: vec![],
            };
            let id = engine.create(&spec).await.unwrap();
            engine.start(&id).await.unwrap();
            assert_eq!(engine.wait(&id).await.unwrap(), 0);
            engine.remove(&id).await.unwrap();
        }
    });
    t.elapsed()
}
