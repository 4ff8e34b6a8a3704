//! Injected faults, each asserting that nothing is lost: a supervisor killed
//! with SIGKILL and resumed, a second supervisor, a deadline, a full disk,
//! leftover containers, the engine's socket going away, a detached batch.

use crate::common::*;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Each job records that it ran, then prints a counted sequence slowly.
fn counting(jobs: &[&str], lines: u32, concurrency: u32) -> String {
    let mut text = format!(
        "[batch]\ndownloads = \"./downloads\"\nconcurrency = {concurrency}\n[defaults]\nimage = \"tb-base:bookworm\"\n\
         command = [\"sh\", \"-c\", \"echo $TB_JOB >> /downloads/ran; i=1; while [ $i -le {lines} ]; do echo \\\"$TB_JOB line $i\\\"; i=$((i+1)); sleep 0.4; done\"]\n"
    );
    for j in jobs {
        text.push_str(&format!("[[job]]\nname = \"{j}\"\n"));
    }
    text
}

fn expected(job: &str, lines: u32) -> String {
    (1..=lines).map(|i| format!("{job} line {i}\n")).collect()
}

fn ran(w: &Work) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(w.path().join("downloads/ran"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

#[test]
fn a_supervisor_killed_with_sigkill_resumes_and_nothing_runs_twice() {
    let _guard = unsupervised();
    let w = Work::new();
    let f = w.batch("night.toml", &counting(&["a", "b", "c"], 12, 2));
    let mut tb = in_background(&w, &f);
    wait_until(60, "two jobs to print", || {
        printed(&w, "a", 2) && lines_of(&w.job_dir("b").join("stdout.log")) >= 2
    });
    // SAFETY: our own child.
    unsafe { libc::kill(tb.0.id() as i32, libc::SIGKILL) };
    tb.0.wait().unwrap();
    let at_kill = lines_of(&w.job_dir("a").join("stdout.log"));
    // The containers go on printing while nobody listens: a's engine log
    // grows while its stdout.log (nobody writes it now) does not.
    let container = w.state("a")["container_id"].as_str().unwrap().to_string();
    wait_until(30, "a to print while unsupervised", || {
        let logs = std::process::Command::new("docker")
            .args(["logs", &container])
            .output()
            .unwrap();
        text(&logs.stdout).lines().count() > at_kill + 1
    });
    assert_eq!(
        lines_of(&w.job_dir("a").join("stdout.log")),
        at_kill,
        "nobody wrote meanwhile"
    );
    assert_eq!(
        w.state("a")["status"],
        "running",
        "the killed supervisor left it running"
    );

    let out = w.run(&["resume"]);
    assert_exit(&out, 0);
    assert!(text(&out.stderr).contains("following a again"), "{}", text(&out.stderr));
    for j in ["a", "b", "c"] {
        assert_eq!(w.state(j)["status"], "succeeded", "{j}");
        assert_eq!(w.stdout_of(j), expected(j, 12), "{j}: a gap or doubled output");
    }
    assert_eq!(w.state("a")["attempt"], 1, "a was followed again, not restarted");
    assert!(at_kill < 12, "a finished before the kill: the test proved nothing");
    assert_eq!(ran(&w), ["a", "b", "c"], "every job ran exactly once");
    assert!(w.leftover_containers().is_empty());
}

/// A random sweep of `n` jobs, each of which records that it ran and ends.
fn recording_sweep(n: usize, concurrency: u32) -> String {
    format!(
        "[batch]\ndownloads = \"./downloads\"\nconcurrency = {concurrency}\n[defaults]\nimage = \"tb-base:bookworm\"\n\
         command = [\"sh\", \"-c\", \"echo $TB_JOB >> /downloads/ran\"]\n\
         [[job]]\nname = \"s\"\n[job.sweep]\nmethod = \"random\"\nsamples = {n}\nseed = 1\n\
         \"env.X\" = {{ int = [0, 1000000] }}\n"
    )
}

/// `tb batch` SIGKILLed (by its debug-build hook `TB_TEST_KILL_AT_STEP`) at
/// known points of writing its jobs' files, while its first jobs already
/// run: `tb status` reads the batch as it was left, and `tb resume` runs
/// every job exactly once.
#[test]
fn a_batch_killed_while_writing_its_job_files_resumes_and_nothing_runs_twice() {
    use std::os::unix::process::ExitStatusExt;
    const JOBS: usize = 200;
    let _guard = unsupervised();
    // Three steps a job (its directory, job.json, state.json), begun once
    // the first jobs (and their files) are handed over: a quarter of the
    // way, a directory without files; half-way, job.json without
    // state.json; all written, not yet synced.
    for step in [3 * (JOBS / 4) + 1, 3 * (JOBS / 2) + 2, 3 * JOBS] {
        let w = Work::new();
        let f = w.batch("sweep.toml", &recording_sweep(JOBS, 8));
        let out = w
            .tb()
            .args(["batch", f.to_str().unwrap()])
            .env("TB_TEST_KILL_AT_STEP", step.to_string())
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "step {step}: {}",
            text(&out.stderr)
        );
        let batch: serde_json::Value =
            serde_json::from_slice(&std::fs::read(w.batch_dir().join("batch.json")).unwrap()).unwrap();
        let names: Vec<String> = batch["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        assert_eq!(names.len(), JOBS);
        // Where the kill landed (the jobs this far down the list are beyond
        // what 8 slots start in the time a few hundred files take).
        let (at, done) = (step / 3, step % 3);
        if at < JOBS {
            let jd = w.job_dir(&names[at]);
            assert_eq!(jd.is_dir(), done >= 1, "step {step}: {}", jd.display());
            assert_eq!(jd.join("job.json").exists(), done >= 2, "step {step}");
            assert!(!jd.join("state.json").exists(), "step {step}");
            assert!(
                !w.job_dir(&names[JOBS - 1]).exists(),
                "step {step}: the last job was written"
            );
        } else {
            assert!(names.iter().all(|n| w.job_dir(n).join("state.json").is_file()));
        }

        let statuses = w.statuses();
        assert_eq!(statuses.len(), JOBS, "step {step}");
        assert!(
            statuses
                .iter()
                .all(|s| ["pending", "running", "succeeded"].contains(&s.as_str())),
            "step {step}: {statuses:?}"
        );
        assert_exit(&w.run(&["status"]), 0);

        let out = w.run(&["resume"]);
        assert_exit(&out, 0);
        let mut all = names.clone();
        all.sort();
        assert_eq!(ran(&w), all, "step {step}: every job ran exactly once");
        for n in &names {
            let state = w.state(n);
            assert_eq!(
                (state["status"].as_str(), state["attempt"].as_u64()),
                (Some("succeeded"), Some(1)),
                "{n}"
            );
            assert!(w.job_dir(n).join("job.json").is_file(), "{n}");
        }
        assert!(w.leftover_containers().is_empty(), "step {step}");
    }
}

#[test]
fn a_second_supervisor_is_refused_and_a_stale_lock_is_taken_over() {
    let _guard = unsupervised();
    let w = Work::new();
    let f = w.batch("night.toml", &counting(&["a", "b"], 8, 1));
    let mut tb = in_background(&w, &f);
    wait_until(60, "the first job to print", || printed(&w, "a", 1));
    let second = w.run(&["resume"]);
    assert_exit(&second, 2);
    let err = text(&second.stderr);
    let pid = tb.0.id();
    assert!(
        err.contains(&format!("is already being supervised by pid {pid} on ")),
        "{err}"
    );
    let retry = w.run(&["retry"]);
    assert_exit(&retry, 2);

    // SIGKILL leaves the lock file behind, naming a dead pid: stale.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    tb.0.wait().unwrap();
    let lock = std::fs::read_to_string(w.batch_dir().join("supervisor.lock")).unwrap();
    assert!(lock.contains(&format!("\"pid\":{pid}")), "{lock}");
    let out = w.run(&["resume"]);
    assert_exit(&out, 0);
    assert_eq!(w.state("a")["status"], "succeeded");
    assert_eq!(w.state("b")["status"], "succeeded");
    assert_eq!(ran(&w), ["a", "b"]);
}

#[test]
fn a_deadline_in_the_past_leaves_jobs_pending_for_resume() {
    let w = Work::new();
    let body = counting(&["a", "b"], 1, 1).replace(
        "concurrency = 1\n",
        "concurrency = 1\ndeadline = \"2020-01-01 00:00\"\n",
    );
    let f = w.batch("late.toml", &body);
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 1);
    assert!(text(&out.stderr).contains("the deadline"), "{}", text(&out.stderr));
    // Stopped at once, it may not have written its jobs' own files: they
    // read as plan.json has them.
    assert_eq!(w.statuses(), ["pending", "pending"]);
    assert!(ran(&w).is_empty());
    let out = w.run(&["resume"]);
    assert_exit(&out, 0);
    assert_eq!(w.state("a")["status"], "succeeded");
    assert_eq!(w.state("b")["status"], "succeeded");
}

/// Bytes free on the filesystem holding `path`.
#[allow(clippy::unnecessary_cast)] // statvfs's field types differ between platforms
fn free_bytes(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string and a zeroed struct for statvfs to fill.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_bavail as u64 * s.f_frsize as u64
}

/// The reserve of `dir` and any temporary one: each must be whole (1 MiB).
fn reserves(dir: &Path) -> Vec<(String, u64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tb-reserve"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect()
}

#[test]
fn a_full_disk_fails_the_job_that_filled_it_the_others_finish_and_retry_runs_after() {
    // SAFETY: a plain getter.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test mounts a tmpfs: run it as root (CI does)"
    );
    let w = Work::new();
    let runs = w.path().join("tiny");
    std::fs::create_dir_all(&runs).unwrap();
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&runs)
        .status()
        .unwrap();
    assert!(mount.success(), "mount tmpfs failed");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(runs.clone());
    // `big` fills the disk while the flag is there; then it is fixed.
    std::fs::create_dir_all(w.path().join("downloads")).unwrap();
    let flag = w.path().join("downloads/fill");
    std::fs::write(&flag, "").unwrap();
    let f = w.batch(
        "full.toml",
        "[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"tb-base:bookworm\"\n\
         [[job]]\nname = \"big\"\ncommand = [\"sh\", \"-c\", \"if [ -e /downloads/fill ]; then yes | head -c 8000000; else echo fixed; fi\"]\n\
         [[job]]\nname = \"small\"\ncommand = [\"echo\", \"fine\"]\n",
    );
    let tb = |args: &[&str]| w.tb().args(args).env("TB_RUNS_DIR", &runs).output().unwrap();
    let out = tb(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 1);
    let dir = std::fs::canonicalize(runs.join("latest")).unwrap();
    let state = |j: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("jobs").join(j).join("state.json")).unwrap()).unwrap()
    };
    let big = state("big");
    assert_eq!(big["status"], "failed", "{big}");
    assert!(
        big["error"].as_str().unwrap().contains("No space left on device"),
        "{big}"
    );
    let small = state("small");
    assert_eq!(small["status"], "succeeded", "{small}");
    assert_eq!(
        std::fs::read_to_string(dir.join("jobs/small/stdout.log")).unwrap(),
        "fine\n"
    );
    serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(dir.join("batch.json")).unwrap()).unwrap();
    assert!(
        text(&out.stderr).contains("released tb's reserve"),
        "{}",
        text(&out.stderr)
    );
    assert!(reserves(&dir).is_empty(), "{:?}", reserves(&dir));

    // The job is fixed, the disk still almost full: too full for a new
    // reserve, not for the states. No part of a reserve may take the rest.
    std::fs::remove_file(&flag).unwrap();
    let free = free_bytes(&dir);
    assert!(free < 1 << 20, "{free} bytes free: the disk is not almost full");
    let out = tb(&["retry"]);
    assert_exit(&out, 0);
    assert!(
        text(&out.stderr).contains("could not set aside tb's 1 MiB reserve"),
        "{}",
        text(&out.stderr)
    );
    assert!(reserves(&dir).is_empty(), "a partial reserve: {:?}", reserves(&dir));
    assert_eq!(state("big")["status"], "succeeded", "{}", state("big"));
    assert_eq!(
        std::fs::read_to_string(dir.join("jobs/big/stdout.log")).unwrap(),
        "fixed\n"
    );

    // Space freed (the failed attempt's output), the reserve is whole again.
    std::fs::remove_file(dir.join("jobs/big/attempts/1/stdout.log")).unwrap();
    let out = tb(&["retry"]);
    assert_exit(&out, 0);
    assert_eq!(reserves(&dir), [(".tb-reserve".to_string(), 1 << 20)]);
}

#[test]
fn clean_removes_labelled_orphans_and_nothing_else() {
    let _guard = unsupervised();
    let create = |labels: &[&str]| {
        let mut c = std::process::Command::new("docker");
        c.arg("create");
        for l in labels {
            c.args(["--label", l]);
        }
        let out = c.args(["tb-base:bookworm", "true"]).output().unwrap();
        assert!(out.status.success());
        text(&out.stdout).trim().to_string()
    };
    let tag = format!("clean-test-{}", std::process::id());
    let orphan = create(&[
        &format!("tb.batch={tag}"),
        "tb.job=a",
        "tb.attempt=1",
        "tb.dir=/nonexistent/tb-clean-test",
    ]);
    let partial = create(&[&format!("tb.batch={tag}")]);
    let plain = create(&[]);
    let w = Work::new();
    let dry = w.run(&["clean", "--dry-run"]);
    assert_exit(&dry, 0);
    assert!(text(&dry.stdout).contains(&orphan[..12]), "{}", text(&dry.stdout));
    let exists = |id: &str| {
        std::process::Command::new("docker")
            .args(["inspect", id])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(exists(&orphan), "--dry-run removed it");
    let out = w.run(&["clean"]);
    assert_exit(&out, 0);
    assert!(!exists(&orphan), "the labelled orphan is still there");
    assert!(exists(&plain), "an unlabelled container was touched");
    assert!(exists(&partial), "a container without all of tb's labels was touched");
    for id in [plain, partial] {
        let _ = std::process::Command::new("docker").args(["rm", "-f", &id]).output();
    }
}

/// A stand-in for the engine's socket that can go away and come back: it
/// forwards each connection to the real socket.
struct Proxy {
    path: PathBuf,
    conns: Arc<Mutex<Vec<UnixStream>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(path: &Path) -> Proxy {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let conns: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (conns.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(engine) = UnixStream::connect("/var/run/docker.sock") else {
                            continue;
                        };
                        c.lock()
                            .unwrap()
                            .extend([client.try_clone().unwrap(), engine.try_clone().unwrap()]);
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), engine.try_clone().unwrap()),
                            (engine, client),
                        ] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(std::net::Shutdown::Write);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Proxy {
            path: path.to_path_buf(),
            conns,
            stop,
            thread: Some(thread),
        }
    }

    /// The socket disappears and every connection through it breaks.
    fn kill(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let _ = std::fs::remove_file(&self.path);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn the_engine_going_away_and_back_mid_job_loses_nothing() {
    let w = Work::new();
    let sock = w.path().join("engine.sock");
    let mut proxy = Proxy::start(&sock);
    let f = w.batch("night.toml", &counting(&["a"], 15, 1));
    let tb = Running(
        w.tb()
            .args(["batch", f.to_str().unwrap()])
            .env("DOCKER_HOST", format!("unix://{}", sock.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until(60, "the job to print", || printed(&w, "a", 2));
    proxy.kill();
    // Back only once tb noticed it was gone.
    wait_until(30, "tb to notice the engine is gone", || {
        std::fs::read_to_string(w.batch_dir().join("supervisor.log"))
            .is_ok_and(|l| l.contains("waiting for the engine to come back"))
    });
    let _back = Proxy::start(&sock);
    let mut tb = tb;
    let status = tb.0.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(tb.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("waiting for the engine to come back"), "{err}");
    assert_eq!(w.state("a")["status"], "succeeded");
    assert_eq!(
        w.stdout_of("a"),
        expected("a", 15),
        "output lost or doubled across the outage"
    );
    assert_eq!(ran(&w), ["a"]);
}

#[test]
fn an_engine_that_stays_away_ends_the_night_with_one_next_step_that_finishes_it() {
    let _guard = unsupervised();
    let w = Work::new();
    let sock = w.path().join("engine.sock");
    let mut proxy = Proxy::start(&sock);
    let f = w.batch("night.toml", &counting(&["a", "b"], 30, 1));
    let mut tb = Running(
        w.tb()
            .args(["batch", f.to_str().unwrap()])
            .env("DOCKER_HOST", format!("unix://{}", sock.display()))
            .env("TB_ENGINE_WAIT", "3")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until(60, "the job to print", || printed(&w, "a", 1));
    proxy.kill();
    let status = tb.0.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(tb.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("the Docker engine has been unreachable for 3s"), "{err}");
    // One next step, and it is the one that finishes the batch.
    assert!(err.contains("Run `tb resume"), "{err}");
    assert!(!err.contains("tb retry"), "{err}");
    // Out of sight, not lost: its container (on the real engine, which
    // never went away) runs on.
    let a = w.state("a");
    assert_eq!(a["status"], "running", "{a}");
    assert_eq!(w.state("b")["status"], "pending");
    let id = a["container_id"].as_str().unwrap().to_string();
    assert!(
        w.leftover_containers()
            .iter()
            .any(|c| id.starts_with(c.as_str()) || c.starts_with(&id)),
        "the run is kept for resume"
    );

    // The engine is back: resume records how `a` ended, with all of its
    // output, and runs `b`.
    let _back = Proxy::start(&sock);
    let out = w
        .tb()
        .args(["resume"])
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(w.state("a")["status"], "succeeded");
    assert_eq!(w.stdout_of("a"), expected("a", 30), "output lost or doubled");
    assert_eq!(w.state("b")["status"], "succeeded");
    assert_eq!(ran(&w), ["a", "b"], "nothing ran twice");
    assert!(w.leftover_containers().is_empty(), "{:?}", w.leftover_containers());
    let batch: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.batch_dir().join("batch.json")).unwrap()).unwrap();
    assert!(
        batch.get("engine_lost_at").is_none(),
        "cleared once the engine is seen again: {batch}"
    );
}

#[test]
fn a_detached_batch_runs_on_after_its_terminal_and_sighup() {
    let w = Work::new();
    let f = w.batch("night.toml", &counting(&["a", "b"], 6, 1));
    let out = w.run(&["batch", f.to_str().unwrap(), "--detach"]);
    assert_exit(&out, 0);
    let dir = std::path::PathBuf::from(text(&out.stdout).trim());
    assert!(
        text(&out.stderr).contains("runs in the background"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("tb logs"), "{}", text(&out.stderr));
    wait_until(30, "the background supervisor to take the lock", || {
        std::fs::read_to_string(dir.join("supervisor.lock")).is_ok_and(|t| t.contains("pid"))
    });
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("supervisor.lock")).unwrap()).unwrap();
    let pid = lock["pid"].as_i64().unwrap() as i32;
    // SAFETY: a signal to the supervisor we started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_until(90, "the batch to finish", || {
        std::fs::read_to_string(dir.join("batch.json")).is_ok_and(|t| t.contains("\"finished\""))
    });
    assert_eq!(w.state("a")["status"], "succeeded");
    assert_eq!(w.state("b")["status"], "succeeded");
    assert_eq!(w.stdout_of("b"), expected("b", 6));
    let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap();
    assert!(log.contains("b succeeded"), "{log}");
}

#[test]
fn cancel_stops_one_job_or_the_whole_batch() {
    let w = Work::new();
    let f = w.batch("night.toml", &counting(&["a", "b", "c", "d"], 40, 2));
    let mut tb = in_background(&w, &f);
    wait_until(60, "a and b to print", || {
        printed(&w, "a", 1) && lines_of(&w.job_dir("b").join("stdout.log")) >= 1
    });
    let one = w.run(&["cancel", "--job", "a"]);
    assert_exit(&one, 0);
    wait_until(30, "a to be cancelled", || w.state("a")["status"] == "cancelled");
    assert_eq!(w.state("b")["status"], "running", "the other job goes on");
    wait_until(30, "c to take a's slot", || w.state("c")["status"] == "running");

    let all = w.run(&["cancel"]);
    assert_exit(&all, 0);
    assert!(
        text(&all.stderr).contains("asked the supervisor"),
        "{}",
        text(&all.stderr)
    );
    assert_eq!(tb.0.wait().unwrap().code(), Some(130));
    assert_eq!(w.state("b")["status"], "cancelled");
    assert_eq!(w.state("c")["status"], "cancelled");
    assert_eq!(w.state("d")["status"], "pending");
    assert!(w.leftover_containers().is_empty());
}
