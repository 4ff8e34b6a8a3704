//! The real Docker engine killed (SIGKILL) under a running batch and
//! started again. The host's engine cannot be restarted by a test, so the
//! test starts a private one: its own socket, data root, exec root and
//! pidfile, inside its own network namespace (a second dockerd in the
//! host's namespace with `--bridge none` would delete the host's `docker0`
//! and break every other container on the machine). It is stopped by pid,
//! and the host's bridge is checked to be there afterwards.
//!
//! What an engine restart does, measured on Docker 20.10: the containers'
//! shims outlive the engine, so a job that ends while the engine is away
//! keeps its real exit status (what it printed meanwhile is not in the
//! engine's log: the engine was not there to read it); the engine coming
//! back stops the containers it finds still running (137, SIGKILL).

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A dockerd of the test's own, in a network namespace of its own.
struct PrivateEngine {
    dir: tempfile::TempDir,
    netns: String,
    pid: Option<u32>,
}

impl PrivateEngine {
    fn start() -> PrivateEngine {
        assert!(bridge_exists(), "the host has no docker0 before the test");
        let dir = tempfile::Builder::new().prefix("tb-engine-").tempdir().unwrap();
        let netns = format!("tb-engine-{}", std::process::id());
        let added = Command::new("ip").args(["netns", "add", &netns]).status().unwrap();
        assert!(
            added.success(),
            "`ip netns add` failed: this test needs root and iproute2"
        );
        let _ = Command::new("ip")
            .args(["netns", "exec", &netns, "ip", "link", "set", "lo", "up"])
            .status();
        std::fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        let mut engine = PrivateEngine { dir, netns, pid: None };
        engine.launch();
        let image = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save {BASE} | DOCKER_HOST={} docker load",
                engine.host()
            ))
            .output()
            .unwrap();
        assert!(image.status.success(), "{}", text(&image.stderr));
        engine
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts dockerd (again) on the same directories; returns once it answers.
    fn launch(&mut self) {
        // `ip netns exec` would also give it a mount namespace with a fresh
        // /sys and no cgroups: enter the network namespace only.
        let driver = Command::new("docker")
            .args(["info", "--format", "{{.Driver}}"])
            .output()
            .unwrap();
        let driver = text(&driver.stdout).trim().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("dockerd.log"))
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("dockerd")
            .arg(format!("--config-file={}", self.path("daemon.json").display()))
            .arg(format!("--host={}", self.host()))
            .arg(format!("--data-root={}", self.path("data").display()))
            .arg(format!("--exec-root={}", self.path("exec").display()))
            .arg(format!("--pidfile={}", self.path("docker.pid").display()))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
            ])
            .arg(format!("--storage-driver={driver}"))
            .args(["--cgroup-parent=/tb-test-engine", "--containerd-namespace=tb-test"])
            .arg("--containerd-plugins-namespace=tb-test-plugins")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.pid = Some(child.id());
        // Reaped by whoever waits; the pid is what the test stops it by.
        std::mem::forget(child);
        wait_until(60, "the private engine to answer", || self.answers());
    }

    fn answers(&self) -> bool {
        Command::new("docker")
            .env("DOCKER_HOST", self.host())
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn kill9(&mut self) {
        let pid = self.pid.take().expect("running");
        // SAFETY: the dockerd this test started (our child: reaped here, so
        // that no zombie holds its pidfile's pid).
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
        }
        wait_until(30, "the private engine to die", || !self.answers());
    }

    fn stop(&mut self) {
        let Some(pid) = self.pid.take() else { return };
        let _ = Command::new("sh")
            .arg("-c")
            .arg("docker rm -f $(docker ps -aq) 2>/dev/null; true")
            .env("DOCKER_HOST", self.host())
            .output();
        // SAFETY: the dockerd this test started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let gone = (0..150).any(|_| {
            std::thread::sleep(Duration::from_millis(200));
            reaped(pid)
        });
        if !gone {
            // SAFETY: as above.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
        }
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kept = std::env::temp_dir().join("tb-engine-dockerd.log");
            if std::fs::copy(self.path("dockerd.log"), &kept).is_ok() {
                eprintln!("the private engine's log: {}", kept.display());
            }
        }
        self.stop();
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
        // dockerd bind-mounts its data root; unmount what is left, deepest first.
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let root = self.dir.path().display().to_string();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        // What the engine left of itself: shims of containers it lost when
        // killed, fuse-overlayfs mounts. Ours are named by our directory.
        for pid in processes_mentioning(&root) {
            // SAFETY: a process whose command line names this test's directory.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let bridge = bridge_exists();
        if !std::thread::panicking() {
            assert!(bridge, "the host's docker0 is gone after the test");
        }
    }
}

/// The processes whose command line holds `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// Reaps `pid` if it is our exited child; whether it was.
fn reaped(pid: u32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid on a pid with WNOHANG has no memory effects.
    unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) == pid as i32 }
}

fn bridge_exists() -> bool {
    Command::new("ip")
        .args(["link", "show", "docker0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Three jobs: one still running when the engine comes back (stopped by
/// it: lost, then retried, and its second attempt succeeds), one that fails
/// and one that succeeds while the engine is away.
fn batch(w: &Work) -> PathBuf {
    w.batch(
        "night.toml",
        r#"[batch]
downloads = "./downloads"
concurrency = 3
retries = 1
[defaults]
image = "tb-base:bookworm"
gpus = 0
network = "none"
[[job]]
name = "long"
command = ["sh", "-c", "echo long $TB_ATTEMPT; if [ -e /out/once ]; then exit 0; fi; touch /out/once; sleep 120"]
[[job]]
name = "fails"
command = ["sh", "-c", "echo fails before; sleep 6; echo fails after; exit 3"]
[[job]]
name = "succeeds"
command = ["sh", "-c", "echo succeeds before; sleep 6; echo succeeds after"]
"#,
    )
}

/// `tb batch FILE` in the background against the private engine, waiting
/// at most `engine_wait` seconds for it when it goes away.
fn batch_on(w: &Work, file: &Path, engine: &PrivateEngine, engine_wait: u64) -> Running {
    Running(
        w.tb()
            .args(["batch", file.to_str().unwrap()])
            .env("DOCKER_HOST", engine.host())
            .env("TB_ENGINE_WAIT", engine_wait.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn all_printed(w: &Work) -> bool {
    std::fs::canonicalize(w.path().join("runs/latest")).is_ok()
        && ["long", "fails", "succeeds"]
            .iter()
            .all(|j| std::fs::read_to_string(w.job_dir(j).join("stdout.log")).is_ok_and(|s| !s.is_empty()))
}

/// The ends the engine recorded while tb could not see them.
fn check_ends(w: &Work) {
    let fails = w.state("fails");
    assert_eq!(
        (fails["status"].as_str(), fails["exit_code"].as_i64()),
        (Some("failed"), Some(3)),
        "{fails}"
    );
    assert_eq!(w.state("succeeds")["status"], "succeeded");
    assert!(
        w.stdout_of("fails").starts_with("fails before\n"),
        "{}",
        w.stdout_of("fails")
    );
    let long = w.state("long");
    assert_eq!(
        (long["status"].as_str(), long["attempt"].as_u64()),
        (Some("succeeded"), Some(2)),
        "{long}"
    );
    let first = &long["attempts"][0];
    assert_eq!(first["status"], "lost", "{long}");
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .contains("stopped by the Docker engine"),
        "{long}"
    );
}

#[test]
fn an_engine_killed_and_restarted_under_a_batch() {
    let _guard = unsupervised();
    let mut engine = PrivateEngine::start();

    // 1. tb waits for the engine, which comes back within TB_ENGINE_WAIT.
    let w = Work::new();
    let f = batch(&w);
    let mut tb = batch_on(&w, &f, &engine, 120);
    wait_until(60, "every job to print", || all_printed(&w));
    engine.kill9();
    // Long enough for two of them to end while it is away.
    std::thread::sleep(Duration::from_secs(10));
    engine.launch();
    let status = tb.0.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(tb.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "one job failed (exit 3):\n{err}");
    check_ends(&w);

    // 2. tb gives up on the engine; `tb resume` records what ended.
    let w = Work::new();
    let f = batch(&w);
    let mut tb = batch_on(&w, &f, &engine, 2);
    wait_until(60, "every job to print", || all_printed(&w));
    engine.kill9();
    let status = tb.0.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(tb.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("Run `tb resume") && !err.contains("tb retry"),
        "one next step:\n{err}"
    );
    for j in ["long", "fails", "succeeds"] {
        assert_eq!(w.state(j)["status"], "running", "{j} is out of sight, not lost");
    }
    std::thread::sleep(Duration::from_secs(8));
    engine.launch();
    let out = w
        .tb()
        .args(["resume"])
        .env("DOCKER_HOST", engine.host())
        .output()
        .unwrap();
    assert_exit(&out, 1);
    check_ends(&w);
}
