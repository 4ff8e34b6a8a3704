//! A checkpoint scored on a batch's test split: `python -m tb_trainer
//! --evaluate` in a container like the candidate job's (its image, code,
//! mounts, downloads cache, resources, one of its GPUs), run by the
//! executor, with the checkpoint mounted read-only. The candidate and the
//! deployed model go through the same code on the same tiles, so their
//! scores compare (docs/trainer-protocol.md#evaluating-a-checkpoint).

use crate::batch::GpuMode;
use crate::docker::Engine;
use crate::executor::{self, Launch, StartGate, Stop};
use crate::metrics::Mode;
use crate::run::{BatchDir, JobFile, Status, write_json};
use crate::settings::{JobSpec, Mount};
use anyhow::{Context, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

/// Where the checkpoint is in the evaluation's container.
const MOUNT: &str = "/evaluate";
/// The longest an evaluation runs when its job sets no `time_limit`.
const DEFAULT_LIMIT: Duration = Duration::from_secs(3600);

/// `evaluation.json`, as far as tb reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct Evaluation {
    /// The monitor's test counterpart (`test_loss` for `val_loss`).
    pub metric: String,
    pub mode: Mode,
    pub value: f64,
    #[serde(default)]
    pub samples: Option<u64>,
}

/// Where evaluations of one deploy run.
pub struct Evaluator {
    engine: Engine,
    batch: BatchDir,
    batch_name: String,
    downloads: PathBuf,
    gpu_mode: GpuMode,
    gpu_ids: Vec<String>,
}

impl Evaluator {
    /// Evaluations of `batch`'s candidates, on this host's engine, with
    /// the batch's downloads cache and GPU mode, on `gpu_ids` (this host's).
    pub async fn new(batch: &BatchDir, gpu_ids: Vec<String>) -> anyhow::Result<Evaluator> {
        let state = batch.read_batch()?;
        let engine = Engine::connect()
            .await
            .context("the deploy scores models in containers on this host's Docker engine")?;
        Ok(Evaluator {
            engine,
            batch: batch.clone(),
            batch_name: state.name,
            downloads: state.settings.downloads,
            gpu_mode: state.settings.gpu_mode,
            gpu_ids,
        })
    }

    /// Scores `checkpoint` on the test split of `job` (the candidate's
    /// data), building the network from `model` (a deployed job's `train`;
    /// default: `job`'s). `side` names the run: `candidate` or `deployed`;
    /// its files are in `<batch>/deploy/<side>/`.
    pub async fn score(
        &self,
        side: &str,
        job: &JobSpec,
        model: Option<&serde_json::Value>,
        checkpoint: &Path,
    ) -> anyhow::Result<Evaluation> {
        let out = self.batch.path.join("deploy").join(side);
        if out.exists() {
            std::fs::remove_dir_all(&out).with_context(|| format!("failed to clear `{}`", out.display()))?;
        }
        std::fs::create_dir_all(&out).with_context(|| format!("failed to create `{}`", out.display()))?;
        let spec = evaluation_spec(job, side, model, checkpoint)?;
        let file = JobFile::new(&self.batch_name, &self.batch.id, 1, &spec);
        write_json(&out.join("job.json"), &file)?;
        let launch = Launch {
            job: file,
            job_dir: out.clone(),
            downloads: self.downloads.clone(),
            gpus: self.gpu_ids.iter().take(spec.gpus.gpus() as usize).cloned().collect(),
            gpu_mode: self.gpu_mode,
            batch_dir: self.batch.path.clone(),
            stop_grace: executor::STOP_GRACE,
            engine_wait: crate::backend::local::engine_wait(),
            away_since: None,
        };
        tracing::info!("deploy: scoring the {side} model on the test split of `{}`", job.name);
        let finish = self.run(&launch).await?;
        if let Some(id) = &finish.outcome.container_id
            && let Err(e) = self.engine.remove(id).await
        {
            tracing::warn!("{e:#}");
        }
        if finish.outcome.status != Status::Succeeded {
            let tail = crate::report::tail::tail(&out.join("stderr.log"), 5).unwrap_or_default();
            let o = &finish.outcome;
            bail!(
                "scoring the {side} model ended {}: {} (see `{}`){}",
                o.status,
                o.error.as_deref().unwrap_or("no reason given"),
                out.display(),
                tail.iter().map(|l| format!("\n  {l}")).collect::<String>()
            );
        }
        let path = out.join("evaluation.json");
        let bytes = std::fs::read(&path)
            .with_context(|| format!("the {side} model's evaluation wrote no `{}`", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("`{}` is not an evaluation", path.display()))
    }

    /// One container run to its end; Ctrl-C or SIGTERM stops it.
    async fn run(&self, launch: &Launch) -> anyhow::Result<executor::Finish> {
        let (stop, stopped) = watch::channel(Stop::Run);
        let mut signals = crate::signal::Signals::new()?;
        let prepared = executor::prepare(&self.engine, launch).await;
        let gate = StartGate::default();
        let running = executor::run(&self.engine, prepared, launch, stopped, &gate, |_, _| {});
        tokio::pin!(running);
        tokio::select! {
            finish = &mut running => Ok(finish),
            signal = signals.recv() => {
                tracing::warn!("deploy {signal}: stopping the evaluation");
                stop.send_replace(Stop::Graceful);
                let finish = running.await;
                if let Some(id) = &finish.outcome.container_id {
                    let _ = self.engine.remove(id).await;
                }
                Err(super::Interrupted(signal).into())
            }
        }
    }
}

/// The job that scores `checkpoint`: `job` (its image, data, resources),
/// running the trainer's `--evaluate` on the checkpoint mounted read-only,
/// with the network of `model` when given, on at most one GPU.
fn evaluation_spec(
    job: &JobSpec,
    side: &str,
    model: Option<&serde_json::Value>,
    checkpoint: &Path,
) -> anyhow::Result<JobSpec> {
    let (Some(parent), Some(file)) = (checkpoint.parent(), checkpoint.file_name()) else {
        bail!("`{}` is not a checkpoint file", checkpoint.display());
    };
    let mut spec = job.clone();
    spec.name = format!("{}.evaluate-{side}", job.name);
    spec.command = Some(vec![
        "python".into(),
        "-m".into(),
        "tb_trainer".into(),
        "--evaluate".into(),
        format!("{MOUNT}/{}", file.to_string_lossy()),
    ]);
    spec.args = BTreeMap::new();
    // One GPU at most (a share stays a share: the model was trained on one).
    if let crate::gpu::GpuShare::Whole(n) = spec.gpus {
        spec.gpus = crate::gpu::GpuShare::Whole(n.min(1));
    }
    spec.time_limit = Some(spec.time_limit.unwrap_or(DEFAULT_LIMIT));
    spec.warm_start = None;
    spec.prune = None;
    spec.mounts.push(Mount {
        host: parent.to_path_buf(),
        container: MOUNT.into(),
        options: Some("ro".into()),
    });
    let mut train = spec.train.take().unwrap_or_else(|| serde_json::json!({}));
    if let Some(t) = train.as_object_mut() {
        // The checkpoint is the weights; what the job started from is not mounted here.
        t.remove("init_from");
        t.remove("export");
        if let Some(m) = model {
            for key in ["model", "model_args"] {
                match m.get(key) {
                    Some(v) => t.insert(key.into(), v.clone()),
                    None => t.remove(key),
                };
            }
        }
    }
    spec.train = Some(train);
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        serde_json::from_value(serde_json::json!({
            "name": "a", "image": "tb-trainer:latest", "command": null, "gpus": 2, "cpus": 2.0, "memory": null,
            "shm_size": 1, "time_limit": null, "env": {}, "pass_env": [], "mounts": [],
            "code": null, "network": "none",
            "train": {"model": "unet", "model_args": {"channels": 8}, "data_args": {"samples": 64},
                      "init_from": "/previous/checkpoints/best.ckpt", "export": ["torchscript"]}
        }))
        .unwrap()
    }

    #[test]
    fn the_deployed_model_is_scored_on_the_candidates_data() {
        let deployed = serde_json::json!({"model": "fcn", "data_args": {"samples": 9}});
        let s = evaluation_spec(
            &spec(),
            "deployed",
            Some(&deployed),
            Path::new("/deploy/current/model.ckpt"),
        )
        .unwrap();
        let t = s.train.as_ref().unwrap();
        assert_eq!(t["model"], "fcn");
        assert!(
            t.get("model_args").is_none(),
            "the deployed job had none: the trainer's default"
        );
        assert_eq!(t["data_args"]["samples"], 64, "the data is the candidate's");
        assert!(t.get("init_from").is_none() && t.get("export").is_none());
        assert_eq!(
            s.command.as_deref().unwrap().join(" "),
            "python -m tb_trainer --evaluate /evaluate/model.ckpt"
        );
        assert_eq!(s.mounts[0].bind(), "/deploy/current:/evaluate:ro");
        assert_eq!(
            (s.gpus, s.time_limit),
            (crate::gpu::GpuShare::Whole(1), Some(DEFAULT_LIMIT))
        );
        assert_eq!(s.name, "a.evaluate-deployed");

        let c = evaluation_spec(
            &spec(),
            "candidate",
            None,
            Path::new("/runs/b/jobs/a/checkpoints/best.ckpt"),
        )
        .unwrap();
        assert_eq!(c.train.as_ref().unwrap()["model_args"]["channels"], 8);
    }
}
