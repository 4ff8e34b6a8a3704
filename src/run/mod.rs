//! The run directory (docs/run-directory.md): a batch directory created from a plan,
//! its versioned state files, the supervisor lock, and the requests other
//! tb processes leave for the supervisor. Job state itself, with its named
//! transitions, is in [`job`].

pub mod job;
mod lock;
mod trigger;

pub use crate::durable::{
    VERSION, create_reserve, read_version, read_versioned, read_written, release_reserve, write_atomic, write_json,
};
pub use job::{AttemptRecord, JobState, Outcome, RunHandle, Status, short};
pub use lock::Lock;
pub use trigger::{NewFiles, Trigger};

use crate::durable::{sync_dir, sync_filesystem, unsynced_bytes, write_new};
use crate::error::hinted;
use crate::gpu::Inventory;
use crate::settings::{BatchSettings, JobSpec, Plan};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Where the batch stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    Running,
    Finished,
    Interrupted,
}

impl BatchStatus {
    /// As `batch.json` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Running => "running",
            BatchStatus::Finished => "finished",
            BatchStatus::Interrupted => "interrupted",
        }
    }
}

/// What stopped a batch before all its jobs ran, when not a signal: its
/// pending jobs wait for `tb resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Halted {
    /// Its deadline passed.
    Deadline,
    /// Its engine (or cluster) went away for good.
    EngineGone,
}

/// Who supervises (or last supervised) the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Supervisor {
    pub pid: u32,
    pub host: String,
    pub started_at: DateTime<Utc>,
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
    pub supervisor: Option<Supervisor>,
    /// Job names, in the file's order.
    pub jobs: Vec<String>,
    /// The batch-wide settings, as resolved when the batch was created:
    /// what `tb retry` and `tb resume` run with again.
    #[serde(default)]
    pub settings: BatchSettings,
    /// Where files written before the settings held it kept the concurrency.
    #[serde(default, skip_serializing)]
    concurrency: Option<usize>,
    /// When a supervisor lost its engine for good: a run that a signal
    /// stopped after this (the engine stopping its containers as it came
    /// back) was lost, not failed. Cleared once a supervisor sees the
    /// engine again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_lost_at: Option<DateTime<Utc>>,
    /// What stopped its last supervisor before every job ran, when not a
    /// signal (written with `status` `interrupted`; cleared when one starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<Halted>,
    /// What started the batch, when `tb watch` did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
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
    /// The values a sweep chose for this job.
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

/// The file `tb cancel --job` leaves in a job directory for the supervisor
/// (and, on a cluster node, for `tb exec`).
pub const CANCEL_REQUEST: &str = "cancel.request";

/// The file that holds every job of a batch as resolved when it was
/// created ([`PlanFile`]).
pub const PLAN: &str = "plan.json";

/// `plan.json`: every job of the batch as its first attempt's `job.json`
/// holds it, in the file's order. Written and synced before `batch.json`,
/// never changed after: each job's own files are made from it, and until
/// they are on disk it stands for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    pub version: u32,
    pub jobs: Vec<JobFile>,
}

/// A batch's `plan.json` as read, with its jobs by name.
#[derive(Debug)]
struct Planned {
    jobs: Vec<JobFile>,
    index: HashMap<String, usize>,
}

impl Planned {
    fn new(jobs: Vec<JobFile>) -> Planned {
        let index = jobs.iter().enumerate().map(|(i, j)| (j.spec.name.clone(), i)).collect();
        Planned { jobs, index }
    }

    fn get(&self, job: &str) -> Option<&JobFile> {
        self.index.get(job).map(|&i| &self.jobs[i])
    }
}

/// A batch directory on disk.
#[derive(Debug, Clone)]
pub struct BatchDir {
    pub path: PathBuf,
    pub id: String,
    /// `plan.json`, once read; `None` inside for a batch made before it
    /// existed (whose every job has its files).
    planned: Arc<OnceLock<Option<Planned>>>,
}

impl BatchDir {
    /// The batch directory `id` at `path`, as it is.
    pub fn new(path: PathBuf, id: String) -> BatchDir {
        BatchDir {
            path,
            id,
            planned: Arc::default(),
        }
    }

    /// Creates `runs/<date>_<time>_<name>` with `jobs/`, the batch file,
    /// `plan.json` and last `batch.json` (in that order, synced: from
    /// `batch.json` on, the batch and all its jobs are on disk; a directory
    /// cut short before it is no batch), then
    /// points `runs/latest` at it. Each job's own files are written after,
    /// by [`write_job_files`](Self::write_job_files) and as each job starts.
    pub fn create(runs_dir: &Path, plan: &Plan) -> anyhow::Result<BatchDir> {
        BatchDir::create_triggered(runs_dir, plan, None)
    }

    /// [`create`](Self::create), recording in `batch.json` the trigger of
    /// `tb watch` that started it.
    pub fn create_triggered(runs_dir: &Path, plan: &Plan, trigger: Option<Trigger>) -> anyhow::Result<BatchDir> {
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
        let dir = BatchDir::new(path, id);
        if let Err(e) = dir.fill(plan, trigger) {
            // Not a batch yet (no batch.json): nothing of it is kept.
            let _ = std::fs::remove_dir_all(&dir.path);
            return Err(e);
        }
        // The names too survive a power loss: a batch is whole or absent.
        sync_dir(&dir.path)?;
        sync_dir(runs_dir)?;
        point_latest(runs_dir, &dir.id)?;
        create_reserve(&dir.path);
        Ok(dir)
    }

    /// Writes a new batch's files into its empty directory, `batch.json`
    /// last.
    fn fill(&self, plan: &Plan, trigger: Option<Trigger>) -> anyhow::Result<()> {
        let dir = self;
        let jobs = dir.path.join("jobs");
        std::fs::create_dir(&jobs).with_context(|| format!("failed to create `{}`", jobs.display()))?;
        write_atomic(&dir.path.join("batch.toml"), plan.text.as_bytes())?;
        let planned = PlanFile {
            version: VERSION,
            jobs: plan
                .jobs
                .iter()
                .map(|j| JobFile::new(&plan.name, &dir.id, 1, j))
                .collect(),
        };
        // Compact: a sweep's plan is large, and read whole.
        let mut bytes = serde_json::to_vec(&planned)?;
        bytes.push(b'\n');
        write_atomic(&dir.path.join(PLAN), &bytes)?;
        let _ = dir.planned.set(Some(Planned::new(planned.jobs)));
        let state = BatchState {
            version: VERSION,
            id: dir.id.clone(),
            name: plan.name.clone(),
            file: plan.file.clone(),
            created_at: Utc::now(),
            status: BatchStatus::Running,
            finished_at: None,
            supervisor: Some(Supervisor::current()),
            jobs: plan.jobs.iter().map(|j| j.name.clone()).collect(),
            settings: plan.settings.clone(),
            concurrency: None,
            engine_lost_at: None,
            halted: None,
            trigger,
        };
        dir.write_batch(&state)
    }

    /// Writes `job.json` (its first attempt) and a pending `state.json` for
    /// each job of `jobs` that has none, in order; then syncs the
    /// filesystem once. Each file is written unsynced and never over
    /// another ([`write_new`]): what the dispatcher writes for a job it
    /// starts meanwhile stands, and a file that never reached the disk
    /// reads as the plan says. Returns early, unsynced, once `stop` is
    /// set. The number of files written.
    ///
    /// Only a supervisor (holding the lock) calls it: one writer per batch.
    pub fn write_job_files(&self, batch_name: &str, jobs: &[JobSpec], stop: &AtomicBool) -> anyhow::Result<usize> {
        let pending = { unsynced_bytes(&JobState::pending())? };
        let mut written = 0;
        let mut step = 0;
        test_kill_point(step);
        for spec in jobs {
            if stop.load(Ordering::Relaxed) {
                return Ok(written);
            }
            let jd = self.job_dir(&spec.name);
            if !jd.is_dir() {
                std::fs::create_dir_all(&jd).with_context(|| format!("failed to create `{}`", jd.display()))?;
            }
            step += 1;
            test_kill_point(step);
            let path = jd.join("job.json");
            if !path.exists() {
                let file = unsynced_bytes(&JobFile::new(batch_name, &self.id, 1, spec))?;
                written += usize::from(write_new(&path, &jd.join(".job.json.new"), &file)?);
            }
            step += 1;
            test_kill_point(step);
            written += usize::from(write_new(
                &jd.join("state.json"),
                &jd.join(".state.json.new"),
                &pending,
            )?);
            step += 1;
            test_kill_point(step);
        }
        if written > 0 {
            sync_filesystem(&self.path)?;
        }
        Ok(written)
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
                } else if let Some(p) = newest_named(runs_dir, sel) {
                    p
                } else {
                    return Err(hinted(
                        format!("no batch `{sel}` under `{}`", runs_dir.display()),
                        "name a batch directory or a batch name; `tb ls` shows them",
                    ));
                }
            }
        };
        if !candidate.join("batch.json").is_file() {
            bail!("`{}` is not a batch directory (no batch.json)", candidate.display());
        }
        BatchDir::at(&candidate)
    }

    /// The batch directory at `path` (absolute or not).
    pub fn at(path: &Path) -> anyhow::Result<BatchDir> {
        let path = std::fs::canonicalize(path).with_context(|| format!("failed to resolve `{}`", path.display()))?;
        let id = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(BatchDir::new(path, id))
    }

    pub fn job_dir(&self, job: &str) -> PathBuf {
        self.path.join("jobs").join(job)
    }

    pub fn read_batch(&self) -> anyhow::Result<BatchState> {
        let mut state: BatchState = read_versioned(&self.path.join("batch.json"))?;
        if state.settings.concurrency == 0 {
            state.settings.concurrency = state.concurrency.unwrap_or(1).max(1);
        }
        Ok(state)
    }

    pub fn write_batch(&self, state: &BatchState) -> anyhow::Result<()> {
        write_json(&self.path.join("batch.json"), state)
    }

    /// `plan.json`, read once; `None` for a batch made before it existed.
    fn planned(&self) -> anyhow::Result<Option<&Planned>> {
        if let Some(p) = self.planned.get() {
            return Ok(p.as_ref());
        }
        let path = self.path.join(PLAN);
        let loaded = if path.exists() {
            let file: PlanFile = read_versioned(&path)?;
            Some(Planned::new(file.jobs))
        } else {
            None
        };
        let _ = self.planned.set(loaded);
        Ok(self.planned.get().and_then(Option::as_ref))
    }

    /// Job `job` as the plan has it, when the batch has a plan and the job.
    fn planned_job(&self, job: &str) -> anyhow::Result<Option<&JobFile>> {
        Ok(self.planned()?.and_then(|p| p.get(job)))
    }

    /// The job's `job.json` as the lazy writer writes it from the plan.
    fn planned_bytes(&self, job: &str) -> Option<Vec<u8>> {
        unsynced_bytes(self.planned_job(job).ok()??).ok()
    }

    /// The job's directory, made if its files are not written yet.
    pub fn made_job_dir(&self, job: &str) -> anyhow::Result<PathBuf> {
        let jd = self.job_dir(job);
        if !jd.is_dir() {
            std::fs::create_dir_all(&jd).with_context(|| format!("failed to create `{}`", jd.display()))?;
        }
        Ok(jd)
    }

    /// Makes the job's directory and the names in it durable (its
    /// `job.json` and `state.json` are synced as written; their names and
    /// the directory's are not): for a job about to outlive a power loss of
    /// this host (handed to Slurm), whose record must then not be lost, or
    /// `tb resume` would hand it over again.
    pub fn sync_job_dir(&self, job: &str) -> anyhow::Result<()> {
        sync_dir(&self.path.join("jobs"))?;
        sync_dir(&self.job_dir(job))
    }

    /// The job's `state.json`; pending when the plan has the job and the
    /// file is not written yet (or never reached the disk).
    pub fn read_job_state(&self, job: &str) -> anyhow::Result<JobState> {
        let path = self.job_dir(job).join("state.json");
        // A pending state is smaller than a page: a power loss leaves it
        // whole or not at all, never cut short. Anything cut is corrupt
        // (read as pending, a job that ran would run again).
        if let Some(state) = read_written(&path, || None)? {
            return Ok(state);
        }
        match self.planned_job(job)? {
            Some(_) => Ok(JobState::pending()),
            // Not a job of this batch, or a file lost: the error as it is.
            None => read_versioned(&path),
        }
    }

    pub fn write_job_state(&self, job: &str, state: &JobState) -> anyhow::Result<()> {
        write_json(&self.made_job_dir(job)?.join("state.json"), state)
    }

    /// Every job's state, in the batch's order.
    pub fn read_states(&self, names: &[String]) -> anyhow::Result<Vec<JobState>> {
        names.iter().map(|n| self.read_job_state(n)).collect()
    }

    /// The job's `job.json`, or the plan's when it is not written yet.
    pub fn read_job_file(&self, job: &str) -> anyhow::Result<JobFile> {
        let path = self.job_dir(job).join("job.json");
        if let Some(file) = read_written(&path, || self.planned_bytes(job))? {
            return Ok(file);
        }
        match self.planned_job(job)? {
            Some(file) => Ok(file.clone()),
            None => read_versioned(&path),
        }
    }

    /// [`read_job_file`](Self::read_job_file) as a JSON document: what the
    /// report and MLflow compare, also of files older tbs wrote.
    pub fn read_job_json(&self, job: &str) -> anyhow::Result<serde_json::Value> {
        let path = self.job_dir(job).join("job.json");
        if let Some(doc) = read_written(&path, || self.planned_bytes(job))? {
            return Ok(doc);
        }
        match self.planned_job(job)? {
            Some(file) => Ok(serde_json::to_value(file)?),
            None => read_versioned(&path),
        }
    }

    pub fn write_job_file(&self, file: &JobFile) -> anyhow::Result<()> {
        write_json(&self.made_job_dir(&file.spec.name)?.join("job.json"), file)
    }

    /// The plan of a batch that already has a directory (for `tb retry`,
    /// `tb resume`, `tb cancel`): the jobs as resolved when it was created,
    /// with the GPUs of this host. Their `pass_env` values in tb's
    /// environment are secrets from now on.
    pub fn plan(&self, gpus: Inventory) -> anyhow::Result<Plan> {
        let batch = self.read_batch()?;
        let jobs = match self.planned()? {
            Some(planned) => planned.jobs.iter().map(|f| f.clone().into_spec()).collect(),
            None => batch
                .jobs
                .iter()
                .map(|name| self.read_job_file(name).map(|f| f.into_spec()))
                .collect::<anyhow::Result<Vec<_>>>()?,
        };
        if batch.settings.backend.uses_host_gpus()
            && let Some(job) = jobs.iter().find(|j| j.gpus.gpus() as usize > gpus.len())
        {
            return Err(hinted(
                format!(
                    "job `{}` asks for {} but this host has {}",
                    job.name,
                    job.gpus.describe(),
                    gpus.len()
                ),
                "run it on the host the batch was made for, or set TB_GPUS",
            ));
        }
        let plan = Plan {
            file: batch.file.clone(),
            text: std::fs::read_to_string(self.path.join("batch.toml")).unwrap_or_default(),
            name: batch.name.clone(),
            settings: batch.settings,
            gpus,
            jobs,
            watch: None,
        };
        crate::secrets::register_pass_env(plan.jobs.iter().flat_map(|j| &j.pass_env));
        Ok(plan)
    }

    /// Moves the output of attempt `n` of `job` under `attempts/<n>/`, with
    /// its state as it ended, so that the next attempt starts clean and
    /// nothing of this one is lost. What is archived already stays: a
    /// current file beside it is a never-started attempt's leftover.
    pub fn archive_attempt(&self, job: &str, n: u32, state: &JobState) -> anyhow::Result<()> {
        let jd = self.job_dir(job);
        let to = jd.join("attempts").join(n.to_string());
        std::fs::create_dir_all(&to).with_context(|| format!("failed to create `{}`", to.display()))?;
        for name in ["stdout.log", "stderr.log"] {
            let (from, dest) = (jd.join(name), to.join(name));
            if dest.exists() {
                let _ = std::fs::remove_file(&from);
            } else if from.exists() {
                std::fs::rename(&from, &dest)
                    .with_context(|| format!("failed to move `{}` to `{}`", from.display(), to.display()))?;
            }
        }
        write_json(&to.join("state.json"), state)
    }

    /// Undoes [`archive_attempt`](Self::archive_attempt) for an attempt
    /// that is the current one again (its successor never started): its
    /// output comes back, over whatever the successor left.
    pub fn unarchive_attempt(&self, job: &str, n: u32) -> anyhow::Result<()> {
        let jd = self.job_dir(job);
        let from = jd.join("attempts").join(n.to_string());
        if !from.is_dir() {
            return Ok(());
        }
        for name in ["stdout.log", "stderr.log"] {
            let src = from.join(name);
            if src.exists() {
                std::fs::rename(&src, jd.join(name))
                    .with_context(|| format!("failed to move `{}` back to `{}`", src.display(), jd.display()))?;
            }
        }
        std::fs::remove_dir_all(&from).with_context(|| format!("failed to remove `{}`", from.display()))
    }

    /// Asks whoever runs `job` to cancel it (`tb cancel --job`).
    pub fn request_cancel(&self, job: &str) -> anyhow::Result<()> {
        write_atomic(&self.made_job_dir(job)?.join(CANCEL_REQUEST), b"tb cancel\n")
    }

    /// Whether `tb cancel` asked for `job` to be cancelled.
    pub fn cancel_requested(&self, job: &str) -> bool {
        self.job_dir(job).join(CANCEL_REQUEST).exists()
    }

    /// Forgets a cancel request, once it was acted on (or no longer applies).
    pub fn clear_cancel_request(&self, job: &str) {
        let _ = std::fs::remove_file(self.job_dir(job).join(CANCEL_REQUEST));
    }
}

/// A batch whose supervisor runs now.
#[derive(Debug, Clone)]
pub struct Live {
    pub dir: BatchDir,
    pub state: BatchState,
    pub supervisor: Supervisor,
}

/// The batches under `runs_dir` whose supervisor lock is held now.
pub fn supervised_under(runs_dir: &Path) -> Vec<Live> {
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return Vec::new();
    };
    let mut live: Vec<Live> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        // `latest` is a link to one of the others.
        .filter(|p| !p.is_symlink() && p.join("batch.json").is_file())
        .filter_map(|p| {
            let dir = BatchDir::at(&p).ok()?;
            let supervisor = dir.supervisor()?;
            let state = dir.read_batch().ok()?;
            Some(Live { dir, state, supervisor })
        })
        .collect();
    live.sort_by(|a, b| a.dir.id.cmp(&b.dir.id));
    live
}

/// Whether the batch that `job_dir` (`<batch>/jobs/<job>`) belongs to has a
/// supervisor now.
pub fn supervised(job_dir: &Path) -> bool {
    job_dir
        .parent()
        .and_then(Path::parent)
        .and_then(|b| BatchDir::at(b).ok())
        .is_some_and(|b| b.supervisor().is_some())
}

/// The id of the batch that `job_dir` (`<batch>/jobs/<job>`) belongs to.
pub fn batch_of(job_dir: &Path) -> String {
    job_dir
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether two paths name one file (as written, when either is gone): a
/// batch file, however it was spelled on the command line.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The best checkpoint a job directory holds, relative to it: the one
/// `result.json` names (`best.checkpoint`), else `checkpoints/best.ckpt`
/// (docs/trainer-protocol.md). Only a file inside the directory counts.
pub fn best_checkpoint(job_dir: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct Result {
        best: Option<Best>,
    }
    #[derive(Deserialize)]
    struct Best {
        checkpoint: Option<String>,
    }
    let named = std::fs::read(job_dir.join("result.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Result>(&b).ok())
        .and_then(|r| r.best?.checkpoint);
    let inside = |rel: &str| {
        let p = Path::new(rel);
        p.is_relative()
            && p.components().all(|c| matches!(c, std::path::Component::Normal(_)))
            && job_dir.join(p).is_file()
    };
    named
        .filter(|c| inside(c))
        .or_else(|| inside("checkpoints/best.ckpt").then(|| "checkpoints/best.ckpt".to_string()))
}

fn newest_named(runs_dir: &Path, name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(runs_dir).ok()?;
    let suffix = format!("_{name}");
    let mut matches: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(&suffix)))
        .filter(|p| p.join("batch.json").is_file())
        .collect();
    matches.sort();
    matches.pop()
}

/// Test-only, in debug builds: with `TB_TEST_KILL_AT_STEP=N`, tb SIGKILLs
/// itself once [`BatchDir::write_job_files`] has done N steps (each job
/// takes three: its directory, `job.json`, `state.json`; 0 is before the
/// first), so that a test stops it at a known point of writing a batch.
#[cfg(debug_assertions)]
fn test_kill_point(step: usize) {
    static AT: OnceLock<Option<usize>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("TB_TEST_KILL_AT_STEP").ok()?.parse().ok());
    if *at == Some(step) {
        // SAFETY: kill(2) of this process touches no memory.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

#[cfg(not(debug_assertions))]
fn test_kill_point(_step: usize) {}

fn point_latest(runs_dir: &Path, id: &str) -> anyhow::Result<()> {
    let tmp = runs_dir.join(format!(".latest.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(id, &tmp).with_context(|| format!("failed to create `{}`", tmp.display()))?;
    std::fs::rename(&tmp, runs_dir.join("latest"))
        .with_context(|| format!("failed to update `{}/latest`", runs_dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_batch_fixture_loads_with_its_concurrency() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy("tests/fixtures/state/v1_batch.json", dir.path().join("batch.json")).unwrap();
        let b = BatchDir::new(dir.path().to_path_buf(), "x".into())
            .read_batch()
            .unwrap();
        assert_eq!(b.jobs, vec!["baseline", "big"]);
        assert_eq!(b.settings.concurrency, 1);
        assert_eq!(b.status, BatchStatus::Finished);
    }

    /// A batch of `n` jobs made under `runs`.
    fn made(runs: &Path, n: usize) -> (Plan, BatchDir) {
        let text = format!(
            "[batch]\nname = \"sw\"\n[[job]]\nname = \"s\"\nimage = \"img\"\n[job.sweep]\n\"env.SEED\" = {:?}\n",
            (0..n).collect::<Vec<_>>()
        );
        let plan = crate::settings::resolve_text(
            &runs.join("sw.toml"),
            text,
            runs,
            None,
            &Default::default(),
            Inventory::from_list("", "TB_GPUS"),
        )
        .unwrap();
        let dir = BatchDir::create(&runs.join("runs"), &plan).unwrap();
        (plan, dir)
    }

    fn names(plan: &Plan) -> Vec<String> {
        plan.jobs.iter().map(|j| j.name.clone()).collect()
    }

    #[test]
    fn a_new_batch_has_its_plan_and_reads_whole_before_its_job_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (plan, made) = made(tmp.path(), 3);
        assert!(made.path.join("plan.json").is_file() && made.path.join("batch.json").is_file());
        assert_eq!(std::fs::read_dir(made.path.join("jobs")).unwrap().count(), 0);
        // As another process sees it: from the disk, not what `create` kept.
        let dir = BatchDir::at(&made.path).unwrap();
        let names = names(&plan);
        for (name, spec) in names.iter().zip(&plan.jobs) {
            assert_eq!(dir.read_job_state(name).unwrap(), JobState::pending());
            let file = dir.read_job_file(name).unwrap();
            assert_eq!((file.attempt, &file.spec.env), (1, &spec.env));
            assert_eq!(
                dir.read_job_json(name).unwrap()["swept"],
                serde_json::to_value(&file.swept).unwrap()
            );
        }
        let back = dir.plan(Inventory::from_list("", "TB_GPUS")).unwrap();
        assert_eq!(
            back.jobs.iter().map(|j| &j.swept).collect::<Vec<_>>(),
            plan.jobs.iter().map(|j| &j.swept).collect::<Vec<_>>()
        );
        let e = dir.read_job_state("nope").unwrap_err();
        assert!(
            format!("{e:#}").contains("failed to read"),
            "not a job of the batch: {e:#}"
        );
    }

    #[test]
    fn job_files_are_written_once_and_never_over_what_the_dispatcher_wrote() {
        let tmp = tempfile::tempdir().unwrap();
        let (plan, dir) = made(tmp.path(), 4);
        let names = names(&plan);
        // Started before its files were written, as the dispatcher does.
        let mut begun = JobState::pending();
        begun.begin_attempt(Some("sha256:i".into()));
        dir.write_job_file(&JobFile::new(&plan.name, &dir.id, 2, &plan.jobs[1]))
            .unwrap();
        dir.write_job_state(&names[1], &begun).unwrap();
        // Left empty by a killed writer (or a power loss).
        std::fs::create_dir_all(dir.job_dir(&names[2])).unwrap();
        std::fs::write(dir.job_dir(&names[2]).join("state.json"), b"").unwrap();
        assert_eq!(dir.read_job_state(&names[2]).unwrap(), JobState::pending());

        let written = dir
            .write_job_files(&plan.name, &plan.jobs, &AtomicBool::new(false))
            .unwrap();
        assert_eq!(written, 2 + 2 + 1, "job 1 had both files, job 2 its state");
        assert_eq!(dir.read_job_state(&names[1]).unwrap(), begun);
        assert_eq!(dir.read_job_file(&names[1]).unwrap().attempt, 2);
        for n in [&names[0], &names[3]] {
            let state: JobState = read_versioned(&dir.job_dir(n).join("state.json")).unwrap();
            assert_eq!(state, JobState::pending());
            let file: JobFile = read_versioned(&dir.job_dir(n).join("job.json")).unwrap();
            assert_eq!(file.attempt, 1);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.job_dir(&names[0]))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
        assert_eq!(
            dir.write_job_files(&plan.name, &plan.jobs, &AtomicBool::new(false))
                .unwrap(),
            0,
            "all there"
        );

        // What the writer wrote is what a torn job.json is compared with:
        // cut short and zero-filled, it reads as the plan says.
        let path = dir.job_dir(&names[0]).join("job.json");
        let whole = std::fs::read(&path).unwrap();
        assert_eq!(Some(whole.clone()), dir.planned_bytes(&names[0]));
        let mut torn = whole[..whole.len() / 2].to_vec();
        torn.resize(whole.len(), 0);
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(dir.read_job_file(&names[0]).unwrap().attempt, 1);
        assert!(dir.read_job_json(&names[0]).is_ok());
        // A state cut short is corrupt, never pending.
        let path = dir.job_dir(&names[1]).join("state.json");
        let state = std::fs::read(&path).unwrap();
        std::fs::write(&path, &state[..20]).unwrap();
        assert!(dir.read_job_state(&names[1]).is_err());
    }

    #[test]
    fn a_batch_without_a_plan_still_needs_every_job_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (plan, dir) = made(tmp.path(), 2);
        let names = names(&plan);
        dir.write_job_files(&plan.name, &plan.jobs, &AtomicBool::new(false))
            .unwrap();
        std::fs::remove_file(dir.path.join(PLAN)).unwrap();
        let old = BatchDir::at(&dir.path).unwrap();
        assert_eq!(old.plan(Inventory::from_list("", "TB_GPUS")).unwrap().jobs.len(), 2);
        std::fs::remove_file(old.job_dir(&names[0]).join("state.json")).unwrap();
        assert!(old.read_job_state(&names[0]).is_err(), "a lost file is an error there");
    }

    #[test]
    fn version_1_plan_fixture_loads() {
        let plan: PlanFile = read_versioned(Path::new("tests/fixtures/state/v1_plan.json")).unwrap();
        let names: Vec<&str> = plan.jobs.iter().map(|j| j.spec.name.as_str()).collect();
        assert_eq!(names, ["lr_lr-0.01", "lr_lr-0.001"]);
        let spec = plan.jobs[1].clone().into_spec();
        assert_eq!(spec.swept["train.lr"], serde_json::json!(0.001));
        assert_eq!(spec.train.unwrap()["max_epochs"], 2);
    }

    #[test]
    fn an_archived_attempt_comes_back_when_its_successor_is_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let b = BatchDir::new(dir.path().to_path_buf(), "x".into());
        std::fs::create_dir_all(b.job_dir("a")).unwrap();
        std::fs::write(b.job_dir("a").join("stdout.log"), "one\n").unwrap();
        b.archive_attempt("a", 1, &JobState::pending()).unwrap();
        assert!(!b.job_dir("a").join("stdout.log").exists());
        b.unarchive_attempt("a", 1).unwrap();
        assert_eq!(
            std::fs::read_to_string(b.job_dir("a").join("stdout.log")).unwrap(),
            "one\n"
        );
        assert!(!b.job_dir("a").join("attempts/1").exists());
    }

    #[test]
    fn the_best_checkpoint_is_the_one_result_json_names_inside_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let jd = dir.path();
        assert_eq!(best_checkpoint(jd), None);
        std::fs::create_dir_all(jd.join("checkpoints")).unwrap();
        std::fs::write(jd.join("checkpoints/best.ckpt"), "w").unwrap();
        assert_eq!(best_checkpoint(jd).as_deref(), Some("checkpoints/best.ckpt"));
        std::fs::write(jd.join("checkpoints/epoch3.ckpt"), "w").unwrap();
        std::fs::write(
            jd.join("result.json"),
            r#"{"best": {"checkpoint": "checkpoints/epoch3.ckpt"}}"#,
        )
        .unwrap();
        assert_eq!(best_checkpoint(jd).as_deref(), Some("checkpoints/epoch3.ckpt"));
        for outside in ["/etc/passwd", "../x/best.ckpt", "checkpoints/missing.ckpt"] {
            std::fs::write(
                jd.join("result.json"),
                format!(r#"{{"best": {{"checkpoint": "{outside}"}}}}"#),
            )
            .unwrap();
            assert_eq!(
                best_checkpoint(jd).as_deref(),
                Some("checkpoints/best.ckpt"),
                "{outside}"
            );
        }
    }

    #[test]
    fn cancel_requests_are_made_seen_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let b = BatchDir::new(dir.path().to_path_buf(), "x".into());
        std::fs::create_dir_all(b.job_dir("a")).unwrap();
        assert!(!b.cancel_requested("a"));
        b.request_cancel("a").unwrap();
        assert!(b.cancel_requested("a"));
        b.clear_cancel_request("a");
        assert!(!b.cancel_requested("a"));
    }
}
