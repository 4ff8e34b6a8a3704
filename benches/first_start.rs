//! How long a large sweep waits before its first job starts: `tb batch` of
//! a random sweep of N jobs of `true` (concurrency 4), from invocation to
//! the engine's `start` event of the batch's first container (its own
//! clock, from `docker events`), then stopped with Ctrl-C. N is 100, 1,000
//! and 10,000, or the sizes given as arguments; `TB_BIN` names another tb
//! to compare. Prints the median of three rounds per size.

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const IMAGE: &str = "tb-base:bookworm";
const ROUNDS: usize = 3;

fn main() {
    let tb = common::tb_binary();
    common::require_image(IMAGE, "base-image");
    // `cargo bench` passes `--bench`; any number is a size.
    let mut sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![100, 1_000, 10_000];
    }
    println!("== invocation to first container start, {tb} ==");
    for n in sizes {
        let mut walls: Vec<f64> = (0..ROUNDS).map(|r| first_start(&tb, n, r)).collect();
        walls.sort_by(f64::total_cmp);
        let shown: Vec<String> = walls.iter().map(|w| format!("{w:.2}s")).collect();
        println!("{n:>6} jobs: median {:.2}s  ({})", walls[ROUNDS / 2], shown.join(", "));
    }
}

/// Seconds from `tb batch` of `n` jobs to its first container's start.
fn first_start(tb: &str, n: usize, round: usize) -> f64 {
    let work = tempfile::Builder::new().prefix("tb-bench-").tempdir().unwrap();
    let runs = work.path().join("runs");
    let file = work.path().join("sweep.toml");
    std::fs::write(&file, sweep(n, round)).unwrap();

    let mut events = Command::new("docker")
        .args(["events", "--filter", "type=container", "--filter", "event=start"])
        .args(["--format", "{{.TimeNano}} {{index .Actor.Attributes \"tb.dir\"}}"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // `docker events` reports only what happens after it has subscribed.
    std::thread::sleep(Duration::from_millis(500));
    let stdout = events.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let runs_prefix = runs.display().to_string();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((nanos, dir)) = line.split_once(' ')
                && dir.starts_with(&runs_prefix)
            {
                let _ = tx.send(nanos.parse::<u128>().unwrap());
                return;
            }
        }
    });

    let began = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let mut child = Command::new(tb)
        .args(["--no-progress", "batch"])
        .arg(&file)
        .env("TB_RUNS_DIR", &runs)
        .env("TB_GPUS", "")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = rx
        .recv_timeout(Duration::from_secs(600))
        .expect("no container started in 10 min");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child.wait().unwrap();
    let _ = events.kill();
    let _ = events.wait();
    remove_containers(&runs);
    (started - began) as f64 / 1e9
}

fn sweep(n: usize, round: usize) -> String {
    format!(
        "[batch]\nname = \"first\"\nconcurrency = 4\ndownloads = \"./downloads\"\n\
         [[job]]\nname = \"s\"\nimage = \"{IMAGE}\"\ncommand = [\"true\"]\n\
         [job.sweep]\nmethod = \"random\"\nsamples = {n}\nseed = {round}\n\"env.X\" = {{ int = [0, 1000000] }}\n"
    )
}

/// Whatever Ctrl-C left of the batch's containers.
fn remove_containers(runs: &Path) {
    let Ok(batch) = std::fs::canonicalize(runs.join("latest")) else {
        return;
    };
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=tb.dir={}", batch.display())])
        .output()
        .unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker").args(["rm", "-f"]).args(&ids).output();
    }
}
