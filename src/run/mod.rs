//! The run directory (docs/run-directory.md): a batch directory created from a plan,
//! its versioned state files, the supervisor lock, and the requests other
//! tb processes leave for the supervisor. Job state itself, with its named
//! transitions, is in [`job`].

pub mod job;
mod lock;
mod trigger;

pub use crate::durable::{
    VERSION, create_reserve, read_version, read_versioned, release_reserve, write_atomic, write_json,
};
pub use job::{AttemptRecord, JobState, Outcome, RunHandle, Status, short};
pub use lock::Lock;
pub use trigger::{NewFiles, Trigger};

use crate::error::hinted;
use crate::gpu::Inventory;
use crate::settings::{BatchSettings, JobSpec, Plan};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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

/// A batch directory on disk.
#[derive(Debug, Clone)]
pub struct BatchDir {
    pub path: PathBuf,
    pub id: String,
}

impl BatchDir {
    /// Creates `runs/<date>_<time>_<name>` with the batch file, every job's
    /// `job.json` and pending `state.json`, and last `batch.json` (what makes
    /// a directory a batch: one cut short before it is none), then points
    /// `runs/latest` at it.
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
        let dir = BatchDir { path, id };
        if let Err(e) = dir.fill(plan, trigger) {
            // Not a batch yet (no batch.json): nothing of it is kept.
            let _ = std::fs::remove_dir_all(&dir.path);
            return Err(e);
        }
        point_latest(runs_dir, &dir.id)?;
        create_reserve(&dir.path);
        Ok(dir)
    }

    /// Writes a new batch's files into its empty directory, `batch.json`
    /// last.
    fn fill(&self, plan: &Plan, trigger: Option<Trigger>) -> anyhow::Result<()> {
        let dir = self;
        write_atomic(&dir.path.join("batch.toml"), plan.text.as_bytes())?;
        for job in &plan.jobs {
            let jd = dir.job_dir(&job.name);
            std::fs::create_dir_all(&jd).with_context(|| format!("failed to create `{}`", jd.display()))?;
            dir.write_job_file(&JobFile::new(&plan.name, &dir.id, 1, job))?;
            dir.write_job_state(&job.name, &JobState::pending())?;
        }
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
        Ok(BatchDir { path, id })
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

    pub fn read_job_state(&self, job: &str) -> anyhow::Result<JobState> {
        read_versioned(&self.job_dir(job).join("state.json"))
    }

    pub fn write_job_state(&self, job: &str, state: &JobState) -> anyhow::Result<()> {
        write_json(&self.job_dir(job).join("state.json"), state)
    }

    /// Every job's state, in the batch's order.
    pub fn read_states(&self, names: &[String]) -> anyhow::Result<Vec<JobState>> {
        names.iter().map(|n| self.read_job_state(n)).collect()
    }

    pub fn read_job_file(&self, job: &str) -> anyhow::Result<JobFile> {
        read_versioned(&self.job_dir(job).join("job.json"))
    }

    pub fn write_job_file(&self, file: &JobFile) -> anyhow::Result<()> {
        write_json(&self.job_dir(&file.spec.name).join("job.json"), file)
    }

    /// The plan of a batch that already has a directory (for `tb retry`,
    /// `tb resume`, `tb cancel`): the jobs as resolved when it was created,
    /// with the GPUs of this host. Their `pass_env` values in tb's
    /// environment are secrets from now on.
    pub fn plan(&self, gpus: Inventory) -> anyhow::Result<Plan> {
        let batch = self.read_batch()?;
        let jobs = batch
            .jobs
            .iter()
            .map(|name| self.read_job_file(name).map(|f| f.into_spec()))
            .collect::<anyhow::Result<Vec<_>>>()?;
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
        write_atomic(&self.job_dir(job).join(CANCEL_REQUEST), b"tb cancel\n")
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
        let b = BatchDir {
            path: dir.path().to_path_buf(),
            id: "x".into(),
        }
        .read_batch()
        .unwrap();
        assert_eq!(b.jobs, vec!["baseline", "big"]);
        assert_eq!(b.settings.concurrency, 1);
        assert_eq!(b.status, BatchStatus::Finished);
    }

    #[test]
    fn an_archived_attempt_comes_back_when_its_successor_is_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let b = BatchDir {
            path: dir.path().to_path_buf(),
            id: "x".into(),
        };
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
    fn a_batch_cut_short_before_its_batch_json_leaves_no_directory() {
        let runs = tempfile::tempdir().unwrap();
        let text = "[defaults]\nimage = \"img\"\ncommand = [\"true\"]\n[[job]]\nname = \"a\"\n[[job]]\nname = \"b\"\n";
        let mut plan = crate::settings::resolve_text(
            &runs.path().join("night.toml"),
            text.into(),
            runs.path(),
            None,
            &crate::settings::Overrides::default(),
            Inventory::from_list("", "TB_GPUS"),
        )
        .unwrap();
        // Its second job's directory cannot be made (as on a full disk).
        plan.jobs[1].name = "b".repeat(300);
        let e = BatchDir::create(runs.path(), &plan).unwrap_err();
        assert!(format!("{e:#}").contains("File name too long"), "{e:#}");
        let left: Vec<_> = std::fs::read_dir(runs.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        plan.jobs[1].name = "b".into();
        let dir = BatchDir::create(runs.path(), &plan).unwrap();
        assert_eq!(dir.read_batch().unwrap().jobs, ["a", "b"]);
    }

    #[test]
    fn cancel_requests_are_made_seen_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let b = BatchDir {
            path: dir.path().to_path_buf(),
            id: "x".into(),
        };
        std::fs::create_dir_all(b.job_dir("a")).unwrap();
        assert!(!b.cancel_requested("a"));
        b.request_cancel("a").unwrap();
        assert!(b.cancel_requested("a"));
        b.clear_cancel_request("a");
        assert!(!b.cancel_requested("a"));
    }
}
