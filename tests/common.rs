//! A scratch project for one test: a directory with batch files, a runs
//! directory, and the `tb` binary pointed at them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BASE: &str = "tb-base:bookworm";

pub struct Work {
    pub dir: tempfile::TempDir,
}

impl Work {
    pub fn new() -> Work {
        assert!(
            Command::new("docker")
                .args(["image", "inspect", BASE])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false),
            "the image {BASE} is missing: run `make base-image` first"
        );
        let dir = tempfile::Builder::new().prefix("tb-test-").tempdir().unwrap();
        Work { dir }
    }

    /// A scratch project for a test that never reaches the engine's images
    /// (a file refused before preflight, a run directory read from disk).
    pub fn scratch() -> Work {
        let dir = tempfile::Builder::new().prefix("tb-test-").tempdir().unwrap();
        Work { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a batch file whose downloads cache stays inside the scratch dir.
    pub fn batch(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, body).unwrap();
        path
    }

    /// `tb` with the runs directory here and no GPUs unless a test says so.
    pub fn tb(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tb"));
        c.current_dir(self.path())
            .env("TB_RUNS_DIR", self.path().join("runs"))
            .env("TB_GPUS", "")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.tb().args(args).output().unwrap()
    }

    /// `tb batch FILE` on the injected GPUs `gpus` (`TB_GPUS`); it must
    /// succeed.
    pub fn batch_on_gpus(&self, file: &Path, gpus: &str) -> Output {
        let out = self
            .tb()
            .args(["batch", file.to_str().unwrap()])
            .env("TB_GPUS", gpus)
            .output()
            .unwrap();
        assert_exit(&out, 0);
        out
    }

    pub fn batch_dir(&self) -> PathBuf {
        std::fs::canonicalize(self.path().join("runs/latest")).expect("a batch directory")
    }

    pub fn job_dir(&self, job: &str) -> PathBuf {
        self.batch_dir().join("jobs").join(job)
    }

    pub fn state(&self, job: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(self.job_dir(job).join("state.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// `tb status --json [ARGS]`; it must succeed.
    pub fn status_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(&[&["status", "--json"], args].concat());
        assert_exit(&out, 0);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Each job's status as `tb status --json` shows it, in the batch's order.
    pub fn statuses(&self) -> Vec<String> {
        self.status_json(&[])["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["status"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn stdout_of(&self, job: &str) -> String {
        String::from_utf8_lossy(&std::fs::read(self.job_dir(job).join("stdout.log")).unwrap()).into_owned()
    }

    /// Containers of the newest batch that the engine still has.
    pub fn leftover_containers(&self) -> Vec<String> {
        containers_labelled(&format!("tb.dir={}", self.batch_dir().display()))
    }
}

pub fn containers_labelled(label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code, showing tb's stderr when it is not the expected one.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "tb exited {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Start and finish of a job, in seconds since the epoch.
pub fn interval(state: &serde_json::Value) -> (f64, f64) {
    let t = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(state[k].as_str().unwrap_or_else(|| panic!("no {k} in {state}")))
            .unwrap()
            .timestamp_micros() as f64
            / 1e6
    };
    (t("started_at"), t("finished_at"))
}

/// The most intervals that overlap at any instant.
pub fn max_overlap(intervals: &[(f64, f64)]) -> usize {
    intervals
        .iter()
        .map(|&(s, _)| intervals.iter().filter(|&&(a, b)| a <= s && s < b).count())
        .max()
        .unwrap_or(0)
}

/// Held by tests that leave containers without a supervisor for a while
/// (a killed tb, a container created by hand) and by the `tb clean` test,
/// which would otherwise remove them from under each other.
pub static UNSUPERVISED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The guard of [`UNSUPERVISED`], whatever an earlier test's panic did to it.
pub fn unsupervised() -> std::sync::MutexGuard<'static, ()> {
    UNSUPERVISED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running `tb` that is stopped if the test fails before it ends.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let _ = self.0.wait();
        }
    }
}

/// Waits up to `secs` for `cond`, panicking with `what` otherwise.
pub fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The lines of a job's stdout.log, or none yet.
pub fn lines_of(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

/// `tb batch FILE` running in the background, quietly.
pub fn in_background(w: &Work, file: &Path) -> Running {
    Running(
        w.tb()
            .args(["batch", file.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Whether the newest batch's `job` has printed at least `lines` lines.
pub fn printed(w: &Work, job: &str, lines: usize) -> bool {
    std::fs::canonicalize(w.path().join("runs/latest")).is_ok() && lines_of(&w.job_dir(job).join("stdout.log")) >= lines
}

/// Copies the directory `src` to `dst`, recursively.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}
