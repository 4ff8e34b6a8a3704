//! A checkpoint scored on a batch's test split: `python -m tb_trainer
//! --evaluate` in a container like the candidate job's (its image, code,
//! mounts, downloads cache, resources, one of its GPUs), run by the
//! executor, with the checkpoint mounted read-only. The candidate and the
//! deployed model go through the same code on the same tiles, on tb's
//! monitor and mode, so their scores compare
//! (docs/trainer-protocol.md#evaluating-a-checkpoint).

use crate::batch::GpuMode;
use crate::docker::Engine;
use crate::executor::{self, Launch, StartGate, Stop};
use crate::metrics::Mode;
use crate::run::{BatchDir, JobFile, Status, write_json};
use crate::settings::{EVALUATE_MOUNT as MOUNT, JobSpec, Mount};
use crate::signal::Signals;
use anyhow::{Context, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
/// The longest an evaluation runs when its job sets no `time_limit`.
const DEFAULT_LIMIT: Duration = Duration::from_secs(3600);

/// `evaluation.json`, as far as tb reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct Evaluation {
    /// The monitor's test counterpart (`test_loss` for `val_loss`).
    pub metric: String,
    pub mode: Mode,
    /// `null` (or, from a trainer that writes them, `NaN`, `Infinity`)
    /// when the score is not a finite number.
    pub value: Option<f64>,
    #[serde(default)]
    pub samples: Option<u64>,
}

/// What the scores are to be on: the metric the candidate was chosen by
/// (tb's monitor) and which way is better.
pub struct Monitor<'a> {
    pub metric: &'a str,
    pub mode: Mode,
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
    /// its files are in `<batch>/deploy/<side>/`. A signal stops it
    /// ([`super::Interrupted`]).
    pub async fn score(
        &self,
        side: &str,
        job: &JobSpec,
        model: Option<&serde_json::Value>,
        checkpoint: &Path,
        monitor: &Monitor<'_>,
        signals: &mut Signals,
    ) -> anyhow::Result<Evaluation> {
        let out = self.batch.path.join("deploy").join(side);
        if out.exists() {
            std::fs::remove_dir_all(&out).with_context(|| format!("failed to clear `{}`", out.display()))?;
        }
        std::fs::create_dir_all(&out).with_context(|| format!("failed to create `{}`", out.display()))?;
        let spec = evaluation_spec(job, side, model, checkpoint, monitor)?;
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
        let finish = self.run(&launch, signals).await?;
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
        parse(&bytes).with_context(|| format!("`{}` is not an evaluation", path.display()))
    }

    /// One container run to its end; Ctrl-C or SIGTERM stops it.
    async fn run(&self, launch: &Launch, signals: &mut Signals) -> anyhow::Result<executor::Finish> {
        let (stop, stopped) = watch::channel(Stop::Run);
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

/// `evaluation.json`: JSON, except that the bare `NaN`, `Infinity` and
/// `-Infinity` Python's `json` writes by default are read as `null`.
fn parse(bytes: &[u8]) -> anyhow::Result<Evaluation> {
    let text = std::str::from_utf8(bytes)?;
    Ok(serde_json::from_str(&non_finite_as_null(text))?)
}

/// `text` with every `NaN`, `Infinity` and `-Infinity` outside a string
/// replaced by `null`.
fn non_finite_as_null(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(ch) = rest.chars().next() {
        if in_string {
            (in_string, escaped) = match (escaped, ch) {
                (true, _) => (true, false),
                (false, '\\') => (true, true),
                (false, '"') => (false, false),
                _ => (true, false),
            };
        } else if ch == '"' {
            in_string = true;
        } else if let Some(word) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|w| rest.starts_with(w))
        {
            out.push_str("null");
            rest = &rest[word.len()..];
            continue;
        }
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}

/// The job that scores `checkpoint`: `job` (its image, data, resources),
/// running the trainer's `--evaluate` on the checkpoint mounted read-only,
/// with the network of `model` when given, judged by `monitor`, on at
/// most one GPU.
fn evaluation_spec(
    job: &JobSpec,
    side: &str,
    model: Option<&serde_json::Value>,
    checkpoint: &Path,
    monitor: &Monitor<'_>,
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
        // tb's monitor chose the candidate; the trainer's own may differ.
        t.insert("monitor".into(), monitor.metric.into());
        t.insert("mode".into(), serde_json::to_value(monitor.mode)?);
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

    const IOU: Monitor = Monitor {
        metric: "val_iou",
        mode: Mode::Max,
    };

    #[test]
    fn the_deployed_model_is_scored_on_the_candidates_data() {
        let deployed = serde_json::json!({"model": "fcn", "data_args": {"samples": 9}});
        let s = evaluation_spec(
            &spec(),
            "deployed",
            Some(&deployed),
            Path::new("/deploy/current/model.ckpt"),
            &IOU,
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
            &IOU,
        )
        .unwrap();
        assert_eq!(c.train.as_ref().unwrap()["model_args"]["channels"], 8);
    }

    #[test]
    fn the_scoring_is_on_tbs_monitor_and_mode_not_the_trainers() {
        // The job's trainer monitors val_loss (min); tb chose the candidate by val_iou (max).
        let mut job = spec();
        job.train.as_mut().unwrap()["monitor"] = "val_loss".into();
        for side in [None, Some(&serde_json::json!({"model": "unet", "monitor": "val_f1"}))] {
            let s = evaluation_spec(&job, "x", side, Path::new("/c/best.ckpt"), &IOU).unwrap();
            let t = s.train.unwrap();
            assert_eq!(
                (&t["monitor"], &t["mode"]),
                (&serde_json::json!("val_iou"), &serde_json::json!("max"))
            );
        }
    }

    #[test]
    fn non_finite_scores_read_as_none() {
        let python = r#"{"metric": "test_loss", "mode": "min", "value": NaN, "samples": 4,
            "test": {"test_loss": NaN, "test_iou": -Infinity, "x": Infinity, "note": "NaN stays \" NaN"}}"#;
        let e = parse(python.as_bytes()).unwrap();
        assert_eq!(
            (e.metric.as_str(), e.mode, e.value, e.samples),
            ("test_loss", Mode::Min, None, Some(4))
        );
        assert_eq!(
            non_finite_as_null(r#"{"note": "NaN stays \" NaN", "v": -Infinity}"#),
            r#"{"note": "NaN stays \" NaN", "v": null}"#
        );
        let e = parse(br#"{"metric": "test_iou", "mode": "max", "value": null}"#).unwrap();
        assert_eq!(e.value, None);
        let e = parse(br#"{"metric": "test_iou", "mode": "max", "value": -0.5e-3}"#).unwrap();
        assert_eq!(e.value, Some(-0.5e-3));
    }
}
