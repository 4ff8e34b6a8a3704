//! The model a deploy is about: the batch's best job by the report's
//! ranking (or the job named), with its best checkpoint and its scores as
//! it logged them.

use super::{BadRequest, Side};
use crate::error::with_hint;
use crate::metrics::Mode;
use crate::run::{BatchDir, Status};
use crate::settings::JobSpec;
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

/// The batch's model a deploy is about.
pub(super) struct Candidate {
    pub(super) batch: String,
    pub(super) batch_created_at: Option<DateTime<Utc>>,
    pub(super) job: String,
    /// The directory holding its files (the origin of a `--skip-done` reuse).
    pub(super) job_dir: PathBuf,
    pub(super) spec: JobSpec,
    pub(super) checkpoint: PathBuf,
    pub(super) sha256: String,
    pub(super) metric: String,
    pub(super) mode: Mode,
    pub(super) logged: Option<f64>,
    pub(super) export: Option<serde_json::Value>,
    /// The GPUs its last attempt ran on, as its state has them.
    pub(super) gpus: Vec<String>,
}

impl Candidate {
    /// The job to deploy: `job`, or the best succeeded job of the report's
    /// ranking; either with a best value and a best checkpoint.
    pub(super) fn of(batch: &BatchDir, job: Option<&str>) -> anyhow::Result<Candidate> {
        let report = crate::report::build(batch)?;
        let deployable = |j: &&crate::report::JobReport| {
            j.status == Status::Succeeded
                && j.best.is_some()
                && origin(batch, &j.name).is_some_and(|o| crate::run::best_checkpoint(&o).is_some())
        };
        let chosen = match job {
            Some(name) => {
                let j = report.jobs.iter().find(|j| j.name == name).ok_or_else(|| {
                    bad(
                        format!("batch {} has no job `{name}`", batch.id),
                        "`tb status BATCH` lists its jobs",
                    )
                })?;
                if !deployable(&j) {
                    return Err(bad(
                        format!(
                            "job `{name}` cannot be deployed: it is {} and needs to have succeeded with a best value and a best checkpoint (checkpoints/best.ckpt)",
                            j.status
                        ),
                        "deploy another job with --job, or the batch's best without it",
                    ));
                }
                j
            }
            None => {
                let ranking = report.ranking.as_ref();
                report
                    .jobs
                    .iter()
                    .filter(|j| j.best.as_ref().map(|b| &b.metric) == ranking.map(|m| &m.metric))
                    .find(deployable)
                    .ok_or_else(|| {
                        anyhow::Error::new(BadRequest(format!(
                            "no job of batch {} succeeded with a best value and a best checkpoint",
                            batch.id
                        )))
                    })?
            }
        };
        let job_dir = origin(batch, &chosen.name).expect("a deployable job has a directory");
        let rel = crate::run::best_checkpoint(&job_dir).expect("a deployable job has a checkpoint");
        super::store::regular_file_in(&job_dir, Path::new(&rel))?;
        let checkpoint = job_dir.join(rel);
        let best = chosen.best.as_ref().expect("a deployable job has a best value");
        let mode = chosen.monitor.as_ref().map_or(Mode::Min, |m| m.mode);
        let spec = batch.read_job_file(&chosen.name)?.into_spec();
        let gpus = batch.read_job_state(&chosen.name)?.gpus().to_vec();
        let export = std::fs::read(job_dir.join("result.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|r| r.get("export").cloned());
        Ok(Candidate {
            batch: batch.id.clone(),
            batch_created_at: Some(batch.read_batch()?.created_at),
            job: chosen.name.clone(),
            sha256: sha256_of(&checkpoint)?,
            checkpoint,
            job_dir,
            spec,
            metric: best.metric.clone(),
            mode,
            logged: Some(best.value),
            export,
            gpus,
        })
    }

    /// Its TorchScript export, if its trainer wrote one (a regular file
    /// inside its job directory).
    pub(super) fn torchscript(&self) -> Option<PathBuf> {
        let rel = self.export.as_ref()?.get("torchscript")?.get("path")?.as_str()?;
        let p = Path::new(rel);
        (p.is_relative() && p.components().all(|x| matches!(x, std::path::Component::Normal(_))))
            .then(|| self.job_dir.join(p))
            .filter(|_| super::store::regular_file_in(&self.job_dir, p).is_ok())
    }

    /// Why an export its `train.export` asks for is not there to deploy.
    pub(super) fn export_missing(&self) -> Option<String> {
        let asked = self.spec.train.as_ref()?.get("export")?.as_array()?;
        if !asked.iter().any(|k| k.as_str() == Some("torchscript")) || self.torchscript().is_some() {
            return None;
        }
        let error = self
            .export
            .as_ref()
            .and_then(|e| e.get("torchscript"))
            .and_then(|t| t.get("error"))
            .and_then(|e| e.as_str());
        Some(match error {
            Some(e) => format!("its TorchScript export failed: {e}"),
            None => "its TorchScript export (train.export) is missing".into(),
        })
    }

    pub(super) fn side(&self, score: Option<f64>) -> Side {
        Side {
            batch: self.batch.clone(),
            batch_created_at: self.batch_created_at,
            job: self.job.clone(),
            score,
            logged: self.logged,
            checkpoint_sha256: self.sha256.clone(),
            model: None,
        }
    }
}

/// A [`BadRequest`] with a hint.
fn bad(message: String, hint: &str) -> anyhow::Error {
    with_hint(anyhow::Error::new(BadRequest(message)), hint)
}

/// The directory with the job's files: its own, or the origin of a
/// `--skip-done` reuse.
fn origin(batch: &BatchDir, job: &str) -> Option<PathBuf> {
    let state = batch.read_job_state(job).ok()?;
    Some(
        state
            .reused_from()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| batch.job_dir(job)),
    )
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("failed to read `{}`", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
