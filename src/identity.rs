//! A job's identity: the sha256 of everything that decides its result, so
//! that `--skip-done` can tell that a job already succeeded somewhere.

use crate::run::{BatchDir, JobState, Status};
use crate::settings::JobSpec;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The identity of `spec` run on the image `image_id`.
///
/// In: the image id (not its tag), command, GPU count, limits, network,
/// env, the names of `pass_env` (never their values), mounts, the code
/// path, the `train` table, and under `warm_start` the checkpoint it
/// starts from (a job warm-started from another run is another job; one
/// that starts cold, or without warm start, keeps the identity it always
/// had). Out: the job's name, the batch, attempts and `time_limit`, which
/// decide where and how long, not what.
pub fn of(spec: &JobSpec, image_id: Option<&str>) -> String {
    let mut canonical = serde_json::json!({
        // Without an id (a cluster's nodes have the image, this host may not),
        // the name stands for it.
        "image_id": image_id.unwrap_or(&spec.image),
        "command": spec.command,
        "gpus": spec.gpus,
        "cpus": spec.cpus,
        "memory": spec.memory,
        "shm_size": spec.shm_size,
        "network": spec.network,
        "env": spec.env,
        "pass_env": spec.pass_env,
        "mounts": spec.mounts,
        "code": spec.code,
        "train": spec.train,
    });
    if let Some(crate::settings::WarmStart::Warm {
        job_dir, checkpoint, ..
    }) = &spec.warm_start
    {
        canonical["warm_start"] = serde_json::json!(job_dir.join(checkpoint));
    }
    // serde_json's maps are sorted, so equal jobs give equal bytes.
    let bytes = serde_json::to_vec(&canonical).expect("JSON values serialize");
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Job directories under `runs_dir` (except in `skip`) whose job succeeded,
/// by identity; the newest wins.
pub fn succeeded_under(runs_dir: &Path, skip: &Path) -> HashMap<String, PathBuf> {
    let mut found: HashMap<String, (chrono::DateTime<chrono::Utc>, PathBuf)> = HashMap::new();
    let Ok(batches) = std::fs::read_dir(runs_dir) else {
        return HashMap::new();
    };
    for batch in batches.filter_map(|e| e.ok()) {
        let path = batch.path();
        if path == skip || path.is_symlink() || !path.join("batch.json").is_file() {
            continue;
        }
        let Ok(jobs) = std::fs::read_dir(path.join("jobs")) else {
            continue;
        };
        for job in jobs.filter_map(|e| e.ok()) {
            let Ok(state) = crate::run::read_versioned::<JobState>(&job.path().join("state.json")) else {
                continue;
            };
            if state.status() != Status::Succeeded {
                continue;
            }
            let (Some(id), Some(done)) = (state.identity().map(String::from), state.finished_at()) else {
                continue;
            };
            // A reused result points at its origin; follow it there.
            let origin = state.reused_from().map(Path::to_path_buf).unwrap_or_else(|| job.path());
            match found.get(&id) {
                Some((t, _)) if *t >= done => {}
                _ => {
                    found.insert(id, (done, origin));
                }
            }
        }
    }
    found.into_iter().map(|(k, (_, p))| (k, p)).collect()
}

/// Job directories of `live` batches whose job runs right now, by identity.
pub fn running_in(live: &[crate::run::Live]) -> HashMap<String, PathBuf> {
    let mut found = HashMap::new();
    for batch in live {
        for job in &batch.state.jobs {
            let Ok(state) = batch.dir.read_job_state(job) else {
                continue;
            };
            if state.status() == Status::Running
                && let Some(id) = state.identity()
            {
                found.insert(id.to_string(), batch.dir.job_dir(job));
            }
        }
    }
    found
}

/// Marks `job` of `dir` as done by the run in `origin`: its state says so,
/// and its metrics, result and logs are copied (checkpoints stay where they
/// are, named by `reused_from`).
pub fn reuse(dir: &BatchDir, job: &str, origin: &Path, state: &mut JobState) -> anyhow::Result<()> {
    let to = dir.made_job_dir(job)?;
    for name in ["metrics.jsonl", "result.json", "stdout.log", "stderr.log"] {
        let from = origin.join(name);
        if from.is_file() {
            std::fs::copy(&from, to.join(name))
                .map_err(|e| anyhow::anyhow!("failed to copy `{}`: {e}", from.display()))?;
        }
    }
    let done = crate::run::read_versioned::<JobState>(&origin.join("state.json")).ok();
    state.reused(origin.to_path_buf(), done.as_ref());
    dir.write_job_state(job, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        serde_json::from_value(serde_json::json!({
            "name": "a", "image": "img", "command": null, "gpus": 0, "cpus": null, "memory": null,
            "shm_size": 1, "time_limit": null, "env": {"A": "1"}, "pass_env": ["TOKEN"], "mounts": [],
            "code": null, "network": "bridge", "train": {"lr": 0.1}
        }))
        .unwrap()
    }

    #[test]
    fn a_whole_gpu_count_hashes_as_it_always_did() {
        let mut a = spec();
        a.gpus = crate::gpu::GpuShare::Whole(1);
        // The canonical bytes a whole count gave before shares existed.
        let before = r#"{"code":null,"command":null,"cpus":null,"env":{"A":"1"},"gpus":1,"image_id":"sha256:1","memory":null,"mounts":[],"network":"bridge","pass_env":["TOKEN"],"shm_size":1,"train":{"lr":0.1}}"#;
        let want: String = Sha256::digest(before.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(of(&a, Some("sha256:1")), want);
        a.gpus = crate::gpu::GpuShare::Fraction(crate::gpu::Fraction::of(2).unwrap());
        assert_ne!(of(&a, Some("sha256:1")), want, "a share is another job");
    }

    #[test]
    fn identity_follows_what_decides_the_result() {
        let a = spec();
        let id = of(&a, Some("sha256:1"));
        assert_eq!(id.len(), 64);
        let mut renamed = a.clone();
        renamed.name = "b".into();
        renamed.time_limit = Some(std::time::Duration::from_secs(5));
        assert_eq!(of(&renamed, Some("sha256:1")), id, "name and time limit do not count");
        assert_ne!(of(&a, Some("sha256:2")), id, "the image does");
        let mut lr = a.clone();
        lr.train = Some(serde_json::json!({"lr": 0.2}));
        assert_ne!(of(&lr, Some("sha256:1")), id, "train does");
    }

    #[test]
    fn a_warm_start_is_part_of_the_identity_and_a_cold_one_is_not() {
        use crate::settings::WarmStart;
        let a = spec();
        let id = of(&a, Some("sha256:1"));
        assert_eq!(
            id, "6b77858dd25ae134bf2dcdd243c206d6a0ff8fa4528a6f88ba2b197393822389",
            "identities of jobs without warm start stay what they were (the sha256 of the canonical JSON, computed apart)"
        );
        let mut cold = a.clone();
        cold.warm_start = Some(WarmStart::Cold { why: "first".into() });
        assert_eq!(of(&cold, Some("sha256:1")), id);
        let warm = |dir: &str| {
            let mut w = a.clone();
            w.warm_start = Some(WarmStart::Warm {
                batch: "b".into(),
                job_dir: dir.into(),
                checkpoint: "checkpoints/best.ckpt".into(),
                best: None,
                replaced_init_from: None,
            });
            of(&w, Some("sha256:1"))
        };
        assert_ne!(warm("/runs/b1/jobs/a"), id);
        assert_ne!(
            warm("/runs/b1/jobs/a"),
            warm("/runs/b2/jobs/a"),
            "each earlier run is another start"
        );
    }
}
