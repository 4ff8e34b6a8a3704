//! `tb exec JOB_DIR`: run one job of a batch on this host, in one container,
//! with the same executor the local backend uses. This is what a Slurm job
//! runs on its node: the GPUs are the ones Slurm assigned, the outcome goes
//! into the job's `state.json` on the shared filesystem, and SIGTERM (from
//! `scancel`) stops the container gracefully.

use crate::cli::ExecArgs;
use crate::docker::Engine;
use crate::error::hinted;
use crate::executor::{self, Launch, Stop};
use crate::exit::Exit;
use crate::state::{BatchDir, Status};
use anyhow::Context;
use chrono::Utc;

pub fn run(args: &ExecArgs) -> anyhow::Result<Exit> {
    let job_dir = std::fs::canonicalize(&args.job_dir)
        .with_context(|| format!("no job directory `{}`", args.job_dir.display()))?;
    let batch_path = job_dir
        .parent()
        .and_then(|p| p.parent())
        .ok_or_else(|| anyhow::anyhow!("`{}` is not inside a batch directory", job_dir.display()))?;
    let dir = BatchDir::open(batch_path, Some(&batch_path.display().to_string()))?;
    let name = job_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let batch = dir.read_batch()?;
    let job = dir.read_job_file(&name)?;
    let mut state = dir.read_job_state(&name)?;
    // This run is the attempt job.json names, under this Slurm job.
    state.attempt = job.attempt;
    if let Ok(id) = std::env::var("SLURM_JOB_ID") {
        state.slurm_job_id = Some(id);
    }
    let gpus = assigned_gpus();
    if gpus.len() < job.spec.gpus as usize {
        return Err(hinted(
            format!(
                "job `{name}` asks for {} GPU(s) but Slurm assigned {}",
                job.spec.gpus,
                gpus.len()
            ),
            "submit it with --gres=gpu:N (tb does); check the cluster's gres.conf",
        ));
    }
    let gpus: Vec<String> = gpus.into_iter().take(job.spec.gpus as usize).collect();
    let launch = Launch {
        job,
        job_dir: job_dir.clone(),
        downloads: batch.settings.downloads.clone(),
        gpus: gpus.clone(),
        gpu_mode: batch.settings.gpu_mode,
        batch_dir: dir.path.clone(),
        stop_grace: executor::STOP_GRACE,
        engine_wait: executor::engine_wait(),
    };
    crate::runtime()?.block_on(async {
        let engine = Engine::connect().await?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(Stop::Run);
        // scancel, and Slurm at the job's time limit, send SIGTERM.
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return;
            };
            let mut level = Stop::Run;
            loop {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
                level = if level == Stop::Run { Stop::Graceful } else { Stop::Kill };
                let _ = stop_tx.send(level);
            }
        });
        let prepared = executor::prepare(&engine, &launch).await;
        let started = std::sync::Mutex::new(None);
        let outcome = executor::run(&engine, prepared, &launch, stop_rx, |id, at| {
            *started.lock().unwrap_or_else(|e| e.into_inner()) = Some((id.to_string(), at));
            let mut running = state.clone();
            running.status = Status::Running;
            running.container_id = Some(id.to_string());
            running.started_at = Some(at);
            running.gpus = gpus.clone();
            crate::runner::write_state(&dir, &name, &running);
        })
        .await;
        state.gpus = gpus.clone();
        if let Some((id, at)) = started.into_inner().unwrap_or_else(|e| e.into_inner()) {
            state.container_id = Some(id);
            state.started_at = Some(at);
        }
        crate::runner::apply(&mut state, &outcome);
        if state.finished_at.is_none() {
            state.finished_at = Some(Utc::now());
        }
        crate::runner::write_state(&dir, &name, &state);
        crate::runner::log_end(&name, &state);
        if let Some(id) = &outcome.container_id {
            let _ = engine.remove(id).await;
        }
        let _ = std::fs::remove_file(job_dir.join(executor::CANCEL_REQUEST));
        Ok(if state.status == Status::Succeeded {
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
