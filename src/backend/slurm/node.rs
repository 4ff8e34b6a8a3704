//! The node's side of a Slurm job: `tb exec JOB_DIR` runs the attempt that
//! `job.json` names in one container, with the same executor the local
//! backend uses, on the GPUs Slurm assigned, and reports through
//! `exec.json` in the job directory (on the shared filesystem) — when it
//! started, and how it ended. The supervisor turns that into job state;
//! SIGTERM (from `scancel`) stops the container gracefully.

use crate::backend::Stop;
use crate::docker::Engine;
use crate::error::hinted;
use crate::executor::{self, Launch, StartGate};
use crate::exit::Exit;
use crate::gpu::Fraction;
use crate::run::{BatchDir, Outcome, Status, read_versioned, write_json};
use crate::signal::Signals;
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file `tb exec` reports through.
pub const RECORD: &str = "exec.json";

/// `jobs/<job>/exec.json`: what `tb exec` saw of its attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub version: u32,
    pub attempt: u32,
    pub slurm_job_id: Option<String>,
    pub host: String,
    pub container_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub gpus: Vec<String>,
    /// The share of its GPU it holds, if a share (`gpus = 0.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_share: Option<Fraction>,
    /// Set once the attempt ended.
    pub outcome: Option<Outcome>,
}

/// The record `tb exec` wrote for `attempt` in `job_dir`, run as Slurm job
/// `job_id` (when known: an attempt number can be submitted again after a
/// submission that never ran was taken back).
pub fn read_record(job_dir: &Path, attempt: u32, job_id: Option<&str>) -> Option<NodeRecord> {
    read_versioned::<NodeRecord>(&job_dir.join(RECORD))
        .ok()
        .filter(|r| r.attempt == attempt && job_id.is_none_or(|id| r.slurm_job_id.as_deref() == Some(id)))
}

/// Runs the attempt of the job in `job_dir` here; the exit status says
/// whether it succeeded.
pub fn run(job_dir: &Path) -> anyhow::Result<Exit> {
    let job_dir =
        std::fs::canonicalize(job_dir).with_context(|| format!("no job directory `{}`", job_dir.display()))?;
    let batch_path = job_dir
        .parent()
        .and_then(|p| p.parent())
        .ok_or_else(|| anyhow::anyhow!("`{}` is not inside a batch directory", job_dir.display()))?;
    let dir = BatchDir::at(batch_path)?;
    let name = job_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let batch = dir.read_batch()?;
    let job = dir.read_job_file(&name)?;
    let gpus = assigned_gpus();
    let need = job.spec.gpus;
    if gpus.len() < need.gpus() as usize {
        return Err(hinted(
            format!(
                "job `{name}` asks for {} but Slurm assigned {} GPU(s)",
                need.describe(),
                gpus.len()
            ),
            "submit it with --gres=gpu:N, or shard:N for a share (tb does); check the cluster's gres.conf",
        ));
    }
    let gpus: Vec<String> = gpus.into_iter().take(need.gpus() as usize).collect();
    let mut record = NodeRecord {
        version: crate::run::VERSION,
        attempt: job.attempt,
        slurm_job_id: std::env::var("SLURM_JOB_ID").ok(),
        host: hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        container_id: None,
        started_at: None,
        gpus: gpus.clone(),
        gpu_share: need.fraction(),
        outcome: None,
    };
    let launch = Launch {
        job,
        job_dir: job_dir.clone(),
        downloads: batch.settings.downloads.clone(),
        gpus,
        gpu_mode: batch.settings.gpu_mode,
        batch_dir: dir.path.clone(),
        stop_grace: executor::STOP_GRACE,
        engine_wait: crate::backend::local::engine_wait(),
        away_since: None,
    };
    let record_path = job_dir.join(RECORD);
    crate::runtime()?.block_on(async {
        let engine = Engine::connect().await?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(Stop::Run);
        // scancel, and Slurm at the job's time limit, send SIGTERM.
        let mut signals = Signals::new()?;
        tokio::spawn(async move {
            let mut level = Stop::Run;
            loop {
                signals.recv().await;
                level = if level == Stop::Run { Stop::Graceful } else { Stop::Kill };
                let _ = stop_tx.send(level);
            }
        });
        let prepared = executor::prepare(&engine, &launch).await;
        let started = std::sync::Mutex::new(None);
        let finish = executor::run(&engine, prepared, &launch, stop_rx, &StartGate::default(), |id, at| {
            let mut r = record.clone();
            r.container_id = Some(id.to_string());
            r.started_at = Some(at);
            if let Err(e) = write_json(&record_path, &r) {
                tracing::error!("job {name}: {e:#}");
            }
            *started.lock().unwrap_or_else(|e| e.into_inner()) = Some((id.to_string(), at));
        })
        .await;
        if let Some((id, at)) = started.into_inner().unwrap_or_else(|e| e.into_inner()) {
            record.container_id = Some(id);
            record.started_at = Some(at);
        }
        let status = finish.outcome.status;
        if let Some(id) = &finish.outcome.container_id {
            record.container_id.get_or_insert(id.clone());
        }
        record.outcome = Some(finish.outcome);
        write_json(&record_path, &record)?;
        if let Some(id) = &record.container_id {
            let _ = engine.remove(id).await;
        }
        tracing::info!("{name}: {status}");
        Ok(if status == Status::Succeeded {
            Exit::Success
        } else {
            Exit::JobsFailed
        })
    })
}

/// The GPU ids Slurm gave this job: `SLURM_JOB_GPUS`, else
/// `SLURM_STEP_GPUS`, else `CUDA_VISIBLE_DEVICES`.
fn assigned_gpus() -> Vec<String> {
    ["SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}
