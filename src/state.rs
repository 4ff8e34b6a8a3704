//! The run directory (CONTRACT §3): creating a batch directory, and reading
//! and atomically writing its versioned state files.

use crate::error::hinted;
use crate::settings::{JobSpec, Plan};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The format version of every state file this tb writes.
pub const VERSION: u32 = 1;

/// A job's fate, as `state.json` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Running,
    Succeeded,
    Failed,
    Oom,
    Timeout,
    Cancelled,
    /// The container vanished.
    Lost,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Oom => "oom",
            Status::Timeout => "timeout",
            Status::Cancelled => "cancelled",
            Status::Lost => "lost",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, Status::Pending | Status::Running)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `jobs/<job>/state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    pub version: u32,
    pub status: Status,
    pub attempt: u32,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: Option<String>,
    pub container_id: Option<String>,
    pub image_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The GPU ids the job was given.
    #[serde(default)]
    pub gpus: Vec<String>,
    /// sha256 of everything that decides the job's result (see `identity`).
    #[serde(default)]
    pub identity: Option<String>,
    /// Where the result came from when `--skip-done` found it already done.
    #[serde(default)]
    pub reused_from: Option<PathBuf>,
    /// The Slurm job running (or that ran) the current attempt.
    #[serde(default)]
    pub slurm_job_id: Option<String>,
    /// How each earlier attempt ended, oldest first.
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
}

/// One ended attempt, as kept in `state.json` once the next one starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub status: Status,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The Slurm job that ran it, on the Slurm backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job_id: Option<String>,
}

impl JobState {
    pub fn pending() -> JobState {
        JobState {
            version: VERSION,
            status: Status::Pending,
            attempt: 0,
            exit_code: None,
            oom_killed: false,
            error: None,
            container_id: None,
            image_id: None,
            started_at: None,
            finished_at: None,
            gpus: Vec::new(),
            identity: None,
            reused_from: None,
            slurm_job_id: None,
            attempts: Vec::new(),
        }
    }

    /// The current attempt as a record of history.
    pub fn record(&self) -> AttemptRecord {
        AttemptRecord {
            attempt: self.attempt,
            status: self.status,
            exit_code: self.exit_code,
            oom_killed: self.oom_killed,
            error: self.error.clone(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            slurm_job_id: self.slurm_job_id.clone(),
        }
    }

    /// Clears what belonged to the previous attempt.
    pub fn begin_attempt(&mut self) {
        if self.attempt > 0 && !self.attempts.iter().any(|a| a.attempt == self.attempt) {
            self.attempts.push(self.record());
        }
        self.attempt += 1;
        self.status = Status::Pending;
        self.exit_code = None;
        self.oom_killed = false;
        self.error = None;
        self.container_id = None;
        self.slurm_job_id = None;
        self.started_at = None;
        self.finished_at = None;
        self.gpus.clear();
    }

    /// Wall time of the current attempt so far (or in all, once finished).
    pub fn elapsed(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        let start = self.started_at?;
        Some(self.finished_at.unwrap_or(now) - start)
    }
}

/// Where the batch stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    Running,
    Finished,
    Interrupted,
}

/// Who supervises (or last supervised) the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Supervisor {
    pub pid: u32,
    pub host: String,
    pub started_at: DateTime<Utc>,
}

/// `batch.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchState {
    pub version: u32,
    /// The directory name, unique under the runs directory.
    pub id: String,
    pub name: String,
    /// The file the batch was submitted from.
    pub file: PathBuf,
    pub created_at: DateTime<Utc>,
    pub status: BatchStatus,
    pub finished_at: Option<DateTime<Utc>>,
    pub concurrency: usize,
    pub supervisor: Option<Supervisor>,
    /// Job names, in the file's order.
    pub jobs: Vec<String>,
    /// The batch-wide settings `tb retry` runs with again.
    #[serde(default)]
    pub settings: BatchSettings,
}

/// `[batch]` settings as resolved when the batch was created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchSettings {
    pub gpu_mode: crate::batch::GpuMode,
    pub downloads: PathBuf,
    pub retries: u32,
    pub continue_on_timeout: bool,
    /// Where the jobs run.
    #[serde(default)]
    pub backend: crate::batch::Backend,
    #[serde(default)]
    pub slurm: crate::batch::SlurmSection,
    /// `[batch] deadline`, when it falls.
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    /// `[batch] on_finish`, run again at the end of `tb retry`.
    #[serde(default)]
    pub on_finish: Option<Vec<String>>,
}

/// `jobs/<job>/job.json`: the resolved job as the container sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFile {
    pub version: u32,
    pub batch: String,
    pub batch_id: String,
    pub attempt: u32,
    #[serde(flatten)]
    pub spec: JobSpec,
    /// The values a sweep chose for this job (none yet: sweeps come later).
    #[serde(default)]
    pub swept: serde_json::Map<String, serde_json::Value>,
}

impl JobFile {
    pub fn new(batch: &str, batch_id: &str, attempt: u32, spec: &JobSpec) -> JobFile {
        JobFile {
            version: VERSION,
            batch: batch.to_string(),
            batch_id: batch_id.to_string(),
            attempt,
            spec: spec.clone(),
            swept: spec.swept.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// The job as a plan holds it (with its swept values).
    pub fn into_spec(self) -> JobSpec {
        let mut spec = self.spec;
        spec.swept = self.swept.into_iter().collect();
        spec
    }
}

/// A batch directory on disk.
#[derive(Debug, Clone)]
pub struct BatchDir {
    pub path: PathBuf,
    pub id: String,
}

impl BatchDir {
    /// Creates `runs/<date>_<time>_<name>` with the batch file, `batch.json`
    /// and every job's `job.json` and pending `state.json`, then points
    /// `runs/latest` at it.
    pub fn create(runs_dir: &Path, plan: &Plan) -> anyhow::Result<BatchDir> {
        std::fs::create_dir_all(runs_dir).map_err(|e| {
            hinted(
                format!("cannot create the runs directory `{}`: {e}", runs_dir.display()),
                "pick a writable place with --runs-dir or TB_RUNS_DIR",
            )
        })?;
        // One spelling of the path everywhere (container labels, binds,
        // `tb resume` matching them): absolute, symlinks resolved.
        let runs_dir = &std::fs::canonicalize(runs_dir)
            .with_context(|| format!("failed to resolve the runs directory `{}`", runs_dir.display()))?;
        let stamp = chrono::Local::now().format("%Y-%m-%d_%H%M%S");
        let (id, path) = (1..)
            .map(|n| {
                let id = if n == 1 {
                    format!("{stamp}_{}", plan.name)
                } else {
                    format!("{stamp}_{}-{n}", plan.name)
                };
                let path = runs_dir.join(&id);
                (id, path)
            })
            .find(|(_, p)| !p.exists())
            .expect("an unused name");
        std::fs::create_dir(&path).with_context(|| format!("failed to create batch directory `{}`", path.display()))?;
        let dir = BatchDir { path, id };

        write_atomic(&dir.path.join("batch.toml"), plan.text.as_bytes())?;
        let state = BatchState {
            version: VERSION,
            id: dir.id.clone(),
            name: plan.name.clone(),
            file: plan.file.clone(),
            created_at: Utc::now(),
            status: BatchStatus::Running,
            finished_at: None,
            concurrency: plan.concurrency,
            supervisor: Some(Supervisor::current()),
            jobs: plan.jobs.iter().map(|j| j.name.clone()).collect(),
            settings: BatchSettings {
                gpu_mode: plan.gpu_mode,
                downloads: plan.downloads.clone(),
                retries: plan.retries,
                continue_on_timeout: plan.continue_on_timeout,
                on_finish: plan.on_finish.clone(),
                deadline: plan.deadline,
                backend: plan.backend,
                slurm: plan.slurm.clone(),
            },
        };
        dir.write_batch(&state)?;
        for job in &plan.jobs {
            let jd = dir.job_dir(&job.name);
            std::fs::create_dir_all(&jd).with_context(|| format!("failed to create `{}`", jd.display()))?;
            dir.write_job_file(&JobFile::new(&plan.name, &dir.id, 1, job))?;
            dir.write_job_state(&job.name, &JobState::pending())?;
        }
        point_latest(runs_dir, &dir.id)?;
        create_reserve(&dir.path);
        Ok(dir)
    }

    /// Finds a batch: a directory path, a directory name under `runs_dir`,
    /// a batch name (its newest directory), or with `None` the newest batch.
    pub fn open(runs_dir: &Path, selector: Option<&str>) -> anyhow::Result<BatchDir> {
        let candidate = match selector {
            None => {
                let latest = runs_dir.join("latest");
                if !latest.exists() {
                    return Err(hinted(
                        format!("no batch under `{}`", runs_dir.display()),
                        "start one with `tb batch FILE`, or point --runs-dir (TB_RUNS_DIR) at your runs directory",
                    ));
                }
                std::fs::canonicalize(&latest).with_context(|| format!("failed to follow `{}`", latest.display()))?
            }
            Some(sel) => {
                let as_path = PathBuf::from(sel);
                if as_path.join("batch.json").is_file() {
                    as_path
                } else if runs_dir.join(sel).join("batch.json").is_file() {
                    runs_dir.join(sel)
                } else if let Some(p) = newest_named(runs_dir, sel)? {
                    p
                } else {
                    return Err(hinted(
                        format!("no batch `{sel}` under `{}`", runs_dir.display()),
                        "name a batch directory or a batch name; `ls runs/` shows them",
                    ));
                }
            }
        };
        if !candidate.join("batch.json").is_file() {
            bail!("`{}` is not a batch directory (no batch.json)", candidate.display());
        }
        let candidate = std::fs::canonicalize(&candidate)
            .with_context(|| format!("failed to resolve `{}`", candidate.display()))?;
        let id = candidate
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(BatchDir { path: candidate, id })
    }

    pub fn job_dir(&self, job: &str) -> PathBuf {
        self.path.join("jobs").join(job)
    }

    pub fn read_batch(&self) -> anyhow::Result<BatchState> {
        read_versioned(&self.path.join("batch.json"))
    }

    pub fn write_batch(&self, state: &BatchState) -> anyhow::Result<()> {
        write_json(&self.path.join("batch.json"), state)
    }

    pub fn read_job_state(&self, job: &str) -> anyhow::Result<JobState> {
        read_versioned(&self.job_dir(job).join("state.json"))
    }

    pub fn write_job_state(&self, job: &str, state: &JobState) -> anyhow::Result<()> {
        write_json(&self.job_dir(job).join("state.json"), state)
    }

    pub fn read_job_file(&self, job: &str) -> anyhow::Result<JobFile> {
        read_versioned(&self.job_dir(job).join("job.json"))
    }

    pub fn write_job_file(&self, file: &JobFile) -> anyhow::Result<()> {
        write_json(&self.job_dir(&file.spec.name).join("job.json"), file)
    }

    /// Moves the output of attempt `n` of `job` under `attempts/<n>/`, with
    /// its state as it ended, so that the next attempt starts clean and
    /// nothing of this one is lost.
    pub fn archive_attempt(&self, job: &str, n: u32, state: &JobState) -> anyhow::Result<()> {
        let jd = self.job_dir(job);
        let to = jd.join("attempts").join(n.to_string());
        std::fs::create_dir_all(&to).with_context(|| format!("failed to create `{}`", to.display()))?;
        for name in ["stdout.log", "stderr.log"] {
            let from = jd.join(name);
            if from.exists() {
                std::fs::rename(&from, to.join(name))
                    .with_context(|| format!("failed to move `{}` to `{}`", from.display(), to.display()))?;
            }
        }
        write_json(&to.join("state.json"), state)
    }
}

impl Supervisor {
    pub fn current() -> Supervisor {
        Supervisor {
            pid: std::process::id(),
            host: hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            started_at: Utc::now(),
        }
    }
}

fn newest_named(runs_dir: &Path, name: &str) -> anyhow::Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return Ok(None);
    };
    let suffix = format!("_{name}");
    let mut matches: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(&suffix)))
        .filter(|p| p.join("batch.json").is_file())
        .collect();
    matches.sort();
    Ok(matches.pop())
}

fn point_latest(runs_dir: &Path, id: &str) -> anyhow::Result<()> {
    let tmp = runs_dir.join(format!(".latest.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(id, &tmp).with_context(|| format!("failed to create `{}`", tmp.display()))?;
    std::fs::rename(&tmp, runs_dir.join("latest"))
        .with_context(|| format!("failed to update `{}/latest`", runs_dir.display()))
}

/// The name of the space tb keeps in each batch directory for a full disk.
const RESERVE: &str = ".tb-reserve";
const RESERVE_BYTES: usize = 1 << 20;

/// Sets aside 1 MiB in the batch directory, released when the disk fills
/// up so that the jobs' states can still be written. Best effort.
pub fn create_reserve(batch_dir: &Path) {
    let path = batch_dir.join(RESERVE);
    if !path.exists() {
        let _ = std::fs::write(&path, vec![0u8; RESERVE_BYTES]);
    }
}

/// Frees the reserve; whether there was one to free.
pub fn release_reserve(batch_dir: &Path) -> bool {
    std::fs::remove_file(batch_dir.join(RESERVE)).is_ok()
}

/// The one-supervisor-per-batch lock: `supervisor.lock` in the batch
/// directory, held (flock) for as long as the supervisor lives, and saying
/// who holds it. The kernel drops it when the process dies, however it
/// dies, so a stale lock file is simply taken over.
#[derive(Debug)]
pub struct Lock {
    _file: std::fs::File,
}

impl BatchDir {
    /// Takes the supervisor lock, or says who holds it.
    pub fn lock(&self) -> anyhow::Result<Lock> {
        let path = self.path.join("supervisor.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("failed to open `{}`", path.display()))?;
        // A `supervisor()` probe (a shared lock, held for an instant) must
        // not read as a supervisor: try a few times.
        let taken = (0..5).any(|i| {
            if i > 0 {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            try_flock(&file, libc::LOCK_EX)
        });
        if !taken {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<Supervisor>(&t).ok());
            let who = match holder {
                Some(h) => format!(
                    "pid {} on {} since {}",
                    h.pid,
                    h.host,
                    h.started_at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                None => "another tb".into(),
            };
            return Err(hinted(
                format!("batch {} is already being supervised by {who}", self.id),
                "watch it with `tb status` and `tb logs -f`; stop it with `tb cancel`",
            ));
        }
        let me = serde_json::to_vec(&Supervisor::current())?;
        file.set_len(0)?;
        file.write_all(&me)?;
        file.sync_all()?;
        create_reserve(&self.path);
        Ok(Lock { _file: file })
    }

    /// Who supervises this batch now, if anyone does.
    pub fn supervisor(&self) -> Option<Supervisor> {
        let path = self.path.join("supervisor.lock");
        let file = std::fs::File::open(&path).ok()?;
        if try_flock(&file, libc::LOCK_SH) {
            // Nobody holds it; ours goes with `file`.
            return None;
        }
        let text = std::fs::read_to_string(&path).ok()?;
        serde_json::from_str(&text).ok().or(Some(Supervisor {
            pid: 0,
            host: String::new(),
            started_at: Utc::now(),
        }))
    }
}

fn try_flock(file: &std::fs::File, how: i32) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; flock touches no memory.
    unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) == 0 }
}

/// Writes `bytes` to `path` so that a reader sees the old or the new file,
/// never a mix: temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique across hosts too: a supervisor and a `tb exec` on a node may
    // share the directory (and a pid).
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{host}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e).context(format!("failed to write `{}`", path.display())));
    }
    Ok(())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads a state file; a corrupt file or one from a newer tb is an error,
/// never a silent reset.
pub fn read_versioned<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    let probe: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("`{}` is corrupt (not JSON)", path.display()))?;
    match probe.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v as u32 <= VERSION => {}
        Some(v) => bail!(
            "`{}` has format version {v}, newer than this tb understands ({VERSION}); upgrade tb",
            path.display()
        ),
        None => bail!("`{}` is corrupt (no \"version\")", path.display()),
    }
    serde_json::from_value(probe).with_context(|| format!("`{}` is corrupt", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_job_state_fixture_loads() {
        let s: JobState = read_versioned(Path::new("tests/fixtures/state/v1_state.json")).unwrap();
        assert_eq!(s.status, Status::Oom);
        assert_eq!(s.exit_code, Some(137));
        assert!(s.oom_killed);
        let b: BatchState = read_versioned(Path::new("tests/fixtures/state/v1_batch.json")).unwrap();
        assert_eq!(b.jobs, vec!["baseline", "big"]);
    }

    #[test]
    fn corrupt_and_future_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        std::fs::write(&p, "{\"status\": ").unwrap();
        let e = read_versioned::<JobState>(&p).unwrap_err();
        assert!(format!("{e:#}").contains("is corrupt (not JSON)"));
        std::fs::write(&p, "{\"version\": 9}").unwrap();
        let e = read_versioned::<JobState>(&p).unwrap_err();
        assert!(e.to_string().contains("format version 9, newer than this tb"));
    }

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_atomic(&p, b"1").unwrap();
        write_atomic(&p, b"2").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"2");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
