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
use crate::gpu::{Fraction, GpuShare};
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
    let need = job.spec.gpus;
    let runtime = crate::runtime()?;
    let gpus = match need.gpus() {
        0 => Vec::new(),
        _ => held_gpus(
            &name,
            need,
            |k| std::env::var(k).ok(),
            |id| runtime.block_on(super::cli::job_detail(id)),
        )?,
    };
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
    runtime.block_on(async {
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

/// The node's ids of the GPUs Slurm gave this job, as many as it needs
/// (one for a share): `SLURM_JOB_GPUS` (or `SLURM_STEP_GPUS`), else the
/// job's `GRES` in `scontrol show job -d` (`detail`). The container is
/// created by the node's Docker engine, outside the job's cgroup, so it
/// needs the node's id: never `CUDA_VISIBLE_DEVICES`, which under
/// `ConstrainDevices` counts from 0 within the job (a share on the
/// second GPU sees `0`). An error, rather than a guess, when neither says.
fn held_gpus(
    name: &str,
    need: GpuShare,
    env: impl Fn(&str) -> Option<String>,
    detail: impl FnOnce(&str) -> anyhow::Result<String>,
) -> anyhow::Result<Vec<String>> {
    let listed = ["SLURM_JOB_GPUS", "SLURM_STEP_GPUS"]
        .iter()
        .find_map(|k| env(k).filter(|v| !v.trim().is_empty()))
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        });
    let ids = match listed {
        Some(ids) => ids,
        None => from_scontrol(name, need, env("SLURM_JOB_ID"), detail)?,
    };
    if ids.len() < need.gpus() as usize {
        return Err(hinted(
            format!(
                "job `{name}` asks for {} but Slurm assigned {} GPU(s)",
                need.describe(),
                ids.len()
            ),
            "submit it with --gres=gpu:N, or shard:N for a share (tb does); check the cluster's gres.conf",
        ));
    }
    Ok(ids.into_iter().take(need.gpus() as usize).collect())
}

/// [`held_gpus`] without `SLURM_JOB_GPUS`: what `scontrol show job -d`
/// says of job `job_id`, through `detail`.
fn from_scontrol(
    name: &str,
    need: GpuShare,
    job_id: Option<String>,
    detail: impl FnOnce(&str) -> anyhow::Result<String>,
) -> anyhow::Result<Vec<String>> {
    let unknown = |why: String| {
        hinted(
            format!(
                "cannot tell which GPU(s) Slurm gave job `{name}` ({}): {why}",
                need.describe()
            ),
            "Slurm names them only for a gres with device files: gres.conf needs File= for each GPU (and shard); CUDA_VISIBLE_DEVICES is not used, as it counts from 0 within the job",
        )
    };
    let id = job_id
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| unknown("SLURM_JOB_GPUS and SLURM_JOB_ID are not set: is this a Slurm job?".into()))?;
    let text = detail(&id).map_err(|e| unknown(format!("SLURM_JOB_GPUS is not set, and {e:#}")))?;
    let host = hostname::get()
        .map(|h| h.to_string_lossy().split('.').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    super::gres::held_gpus(&text, &host).ok_or_else(|| {
        unknown(format!(
            "SLURM_JOB_GPUS is not set, and `scontrol show job -d {id}` names no GPU index for this node"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| vars.get(k).cloned()
    }

    fn half() -> GpuShare {
        GpuShare::Fraction(Fraction::of(2).unwrap())
    }

    /// What a `--gres=shard:2` job on the second GPU saw on the test
    /// cluster (Slurm 22.05, `ConstrainDevices=yes`), less `SLURM_JOB_GPUS`.
    const SHARD_ON_GPU_1: &str = "JobId=7 JobName=x\n   JOB_GRES=shard:2\n     \
                                  Nodes=vm CPU_IDs=1 Mem=0 GRES=shard:2(IDX:1)\n";

    #[test]
    fn a_share_takes_the_nodes_gpu_id_never_the_cgroup_relative_one() {
        let relative = [("CUDA_VISIBLE_DEVICES", "0"), ("SLURM_SHARDS_ON_NODE", "2")];
        // Slurm names it: no need to ask.
        let mut vars = relative.to_vec();
        vars.push(("SLURM_JOB_GPUS", "1"));
        let gpus = held_gpus("a", half(), env(&vars), |_| panic!("scontrol asked")).unwrap();
        assert_eq!(gpus, ["1"]);
        let mut vars = relative.to_vec();
        vars.push(("SLURM_STEP_GPUS", "1"));
        assert_eq!(held_gpus("a", half(), env(&vars), |_| panic!()).unwrap(), ["1"]);
        // Only CUDA_VISIBLE_DEVICES: scontrol says which GPU.
        let mut vars = relative.to_vec();
        vars.push(("SLURM_JOB_ID", "7"));
        let asked = std::cell::Cell::new(None);
        let gpus = held_gpus("a", half(), env(&vars), |id| {
            asked.set(Some(id.to_string()));
            Ok(SHARD_ON_GPU_1.to_string())
        })
        .unwrap();
        assert_eq!(gpus, ["1"]);
        assert_eq!(asked.take().as_deref(), Some("7"));
        // A share is of one GPU, whatever Slurm lists.
        let two = env(&[("SLURM_JOB_GPUS", "0,1")]);
        assert_eq!(held_gpus("a", half(), two, |_| panic!()).unwrap(), ["0"]);
    }

    #[test]
    fn no_gpu_id_is_an_error_not_a_guess() {
        let only_relative = env(&[("CUDA_VISIBLE_DEVICES", "0"), ("SLURM_JOB_ID", "7")]);
        let e = held_gpus("a", half(), only_relative, |_| {
            Err(anyhow::anyhow!("`scontrol` failed: down"))
        })
        .unwrap_err();
        let text = e.root_cause().to_string();
        assert!(
            text.starts_with("cannot tell which GPU(s) Slurm gave job `a` (a share of a GPU (gpus = 0.5)): SLURM_JOB_GPUS is not set, and `scontrol` failed: down"),
            "{text}"
        );
        let e = held_gpus(
            "a",
            half(),
            env(&[("CUDA_VISIBLE_DEVICES", "0"), ("SLURM_JOB_ID", "7")]),
            |_| Ok("   JOB_GRES=shard:2\n     Nodes=vm CPU_IDs=1 Mem=0 GRES=\n".into()),
        )
        .unwrap_err();
        assert!(e.root_cause().to_string().contains("names no GPU index"), "{e:#}");
        let e = held_gpus("a", half(), env(&[("CUDA_VISIBLE_DEVICES", "0")]), |_| panic!()).unwrap_err();
        assert!(e.root_cause().to_string().contains("is this a Slurm job?"), "{e:#}");
        let e = held_gpus("a", GpuShare::Whole(2), env(&[("SLURM_JOB_GPUS", "3")]), |_| panic!()).unwrap_err();
        assert_eq!(
            e.root_cause().to_string(),
            "job `a` asks for 2 GPU(s) but Slurm assigned 1 GPU(s)"
        );
    }
}
