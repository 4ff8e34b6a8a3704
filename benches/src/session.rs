//! What every measurement shares: the binaries (tb, pueue), a scratch
//! directory, the engine's event stream, children that die with the
//! bench, and the containers the bench made, removed at the end whatever
//! happened.

use crate::events::Events;
use anyhow::{Context, bail};
use std::cell::Cell;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// The image every job but the trainer's runs.
pub const BASE: &str = "tb-base:bookworm";
/// The label on every container the bench starts itself (not through tb):
/// the bench's pid, so that a later bench can tell leftovers of a killed
/// one from containers of a bench still running.
pub const LABEL: &str = "tb.bench";
/// The label naming the one measurement a container belongs to.
pub const RUN_LABEL: &str = "tb.bench.run";
const WORK_PREFIX: &str = "tb-bench.";

pub struct Session {
    pub tb: PathBuf,
    /// The directory holding `pueue` and `pueued`, when they are installed.
    pub pueue: Option<PathBuf>,
    pub work: PathBuf,
    /// Interleaved rounds per comparison; the median is reported.
    pub rounds: usize,
    pub events: Events,
    pub rt: tokio::runtime::Runtime,
    pub engine: tb::docker::Engine,
    runs: Cell<usize>,
}

impl Session {
    pub fn open(rounds: usize) -> anyhow::Result<Session> {
        let tb = tb_binary()?;
        require_image(BASE, "base-image")?;
        remove_leftovers();
        let work = std::env::temp_dir().join(format!("{WORK_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&work).with_context(|| format!("failed to create `{}`", work.display()))?;
        let rt = tokio::runtime::Runtime::new().context("failed to start the tokio runtime")?;
        rt.spawn(clean_up_when_stopped(work.clone()));
        let engine = rt.block_on(tb::docker::Engine::connect())?;
        Ok(Session {
            tb,
            pueue: pueue_dir(),
            work,
            rounds,
            events: Events::start()?,
            rt,
            engine,
            runs: Cell::new(0),
        })
    }

    /// A fresh directory for one measurement, and its tag (unique in this
    /// bench: it names the measurement's containers).
    pub fn run_dir(&self, what: &str) -> anyhow::Result<(String, PathBuf)> {
        let n = self.runs.get();
        self.runs.set(n + 1);
        let tag = format!("{what}-{n}");
        let dir = self.work.join(&tag);
        std::fs::create_dir_all(dir.join("downloads"))
            .with_context(|| format!("failed to create `{}`", dir.display()))?;
        Ok((tag, dir))
    }

    /// The labels of a container the bench starts for measurement `tag`.
    pub fn labels(&self, tag: &str) -> Vec<(String, String)> {
        vec![
            (LABEL.to_string(), std::process::id().to_string()),
            (RUN_LABEL.to_string(), tag.to_string()),
        ]
    }

    /// `tb batch FILE -q` on `text`, written to `dir/batch.toml`.
    pub fn batch(&self, dir: &Path, text: &str) -> anyhow::Result<Command> {
        let file = dir.join("batch.toml");
        std::fs::write(&file, text).with_context(|| format!("failed to write `{}`", file.display()))?;
        let mut c = self.tb(dir);
        c.arg("batch").arg(&file).arg("-q");
        Ok(c)
    }

    /// Runs [`Session::batch`] to its end: its wall and tb's CPU seconds.
    /// Fails with what tb said unless every job succeeded.
    pub fn run_batch(&self, dir: &Path, text: &str) -> anyhow::Result<(f64, f64)> {
        let mut cmd = self.batch(dir, text)?;
        let (t, cpu) = (Instant::now(), children_cpu());
        let out = cmd.output().context("failed to run tb")?;
        let (wall, cpu) = (t.elapsed().as_secs_f64(), children_cpu() - cpu);
        if !out.status.success() {
            bail!(
                "tb batch failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((wall, cpu))
    }

    /// Removes the containers of measurement `tag`, running or not.
    pub fn remove_run(&self, tag: &str) {
        remove_containers(&format!("label={RUN_LABEL}={tag}"), |_| true);
    }

    /// `tb` with its runs directory in `dir` and no GPUs.
    pub fn tb(&self, dir: &Path) -> Command {
        let mut c = Command::new(&self.tb);
        c.current_dir(dir)
            .env("TB_RUNS_DIR", dir.join("runs"))
            .env("TB_GPUS", "")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG");
        dies_with_bench(&mut c);
        c
    }

    pub fn pueue_dir(&self) -> anyhow::Result<&Path> {
        self.pueue
            .as_deref()
            .context("pueue is not installed: run `make bench-tools` (or set TB_BENCH_PUEUE to the directory holding pueue and pueued)")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        clean_up(&self.work);
    }
}

/// Removes what the bench made: its containers and its scratch directory.
/// The children it runs end with it (SIGTERM: `dies_with_bench`).
fn clean_up(work: &Path) {
    remove_containers(&format!("label={LABEL}={}", std::process::id()), |_| true);
    // tb removes its containers itself; these would be those of a tb
    // that was killed outright.
    remove_containers("label=tb.dir", |dir| Path::new(dir).starts_with(work));
    let _ = std::fs::remove_dir_all(work);
}

/// Ctrl-C, SIGTERM or SIGHUP: clean up and exit 130, as an interrupted
/// command does (the default action would leave the containers behind).
async fn clean_up_when_stopped(work: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
    eprintln!("tb-bench: stopped; removing its containers and `{}`", work.display());
    clean_up(&work);
    std::process::exit(130);
}

/// The `tb` binary next to the bench's own (`target/release/tb`, what
/// `make build` made), or `TB_BIN`.
fn tb_binary() -> anyhow::Result<PathBuf> {
    let tb = match std::env::var_os("TB_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?.with_file_name("tb"),
    };
    if !tb.is_file() {
        bail!("no tb binary at `{}`: run `make build` or set TB_BIN", tb.display());
    }
    Ok(tb)
}

/// `TB_BENCH_PUEUE`, or `target/bench-tools/bin` (where `make bench-tools`
/// installs pueue) when it holds both binaries.
fn pueue_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("TB_BENCH_PUEUE") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .ok()?
            .parent()?
            .parent()?
            .join("bench-tools/bin"),
    };
    (dir.join("pueue").is_file() && dir.join("pueued").is_file()).then_some(dir)
}

pub fn require_image(image: &str, make_target: &str) -> anyhow::Result<()> {
    let ok = Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        bail!("the image {image} is missing: run `make {make_target}`");
    }
    Ok(())
}

/// The child gets SIGTERM when the bench dies, however it dies: no tb,
/// pueued or event reader outlives a bench that was killed.
pub fn dies_with_bench(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

pub fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: a plain syscall on our own child's pid (not yet reaped).
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let until = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, `grace` to exit, then SIGKILL.
pub fn stop(child: &mut Child, grace: Duration) -> anyhow::Result<ExitStatus> {
    if let Some(st) = child.try_wait()? {
        return Ok(st);
    }
    signal(child, libc::SIGTERM);
    if let Some(st) = wait_timeout(child, grace)? {
        return Ok(st);
    }
    signal(child, libc::SIGKILL);
    Ok(child.wait()?)
}

/// Containers and scratch directories of benches that are no longer
/// running (killed before they could clean up).
fn remove_leftovers() {
    remove_containers(&format!("label={LABEL}"), |pid| !alive(pid));
    remove_containers("label=tb.dir", |dir| leftover_work(Path::new(dir)).is_some());
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        if leftover_work(&e.path()).is_some() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The scratch directory of a bench no longer running that `path` is in.
fn leftover_work(path: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix(std::env::temp_dir()).ok()?;
    let first = rest.components().next()?.as_os_str().to_str()?;
    let pid = first.strip_prefix(WORK_PREFIX)?;
    (!alive(pid)).then(|| std::env::temp_dir().join(first))
}

fn alive(pid: &str) -> bool {
    match pid.parse::<libc::pid_t>() {
        // SAFETY: signal 0 only asks whether the process exists.
        Ok(pid) if pid > 0 => unsafe { libc::kill(pid, 0) == 0 },
        _ => false,
    }
}

/// Removes the containers `filter` (`label=NAME[=VALUE]`) lists whose
/// value of that label `pick` accepts.
fn remove_containers(filter: &str, pick: impl Fn(&str) -> bool) {
    let label = filter
        .trim_start_matches("label=")
        .split('=')
        .next()
        .unwrap_or_default();
    let Ok(out) = Command::new("docker")
        .args(["ps", "-a", "--filter", filter, "--format"])
        .arg(format!("{{{{.ID}}}} {{{{.Label \"{label}\"}}}}"))
        .output()
    else {
        return;
    };
    let ids: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, value)| pick(value))
        .map(|(id, _)| id)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker").args(["rm", "-f"]).args(&ids).output();
    }
}

/// CPU seconds (user and system) of every child reaped so far: its
/// growth across a child's run is that child's CPU time.
pub fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given and nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// The median of `v` (the lower middle of an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_and_the_lower_middle_of_an_even_count() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.0);
        assert_eq!(median(&[5.0]), 5.0);
    }

    #[test]
    fn a_leftover_is_under_the_scratch_directory_of_a_bench_that_is_gone() {
        let tmp = std::env::temp_dir();
        let mine = tmp.join(format!("{WORK_PREFIX}{}", std::process::id()));
        assert_eq!(leftover_work(&mine.join("tb-0/runs/x")), None, "this bench runs");
        let gone = tmp.join(format!("{WORK_PREFIX}0"));
        assert_eq!(leftover_work(&gone.join("tb-0/runs/x")), Some(gone.clone()));
        assert_eq!(leftover_work(&gone), Some(gone));
        assert_eq!(leftover_work(&tmp.join("tb-test-0/runs")), None, "not a bench's");
        assert_eq!(leftover_work(Path::new("/elsewhere/tb-bench.0")), None);
    }

    #[test]
    fn only_a_live_positive_pid_is_alive() {
        assert!(alive(&std::process::id().to_string()));
        assert!(!alive("0"));
        assert!(!alive("-1"));
        assert!(!alive("not a pid"));
    }
}
