//! Warm start (`[batch] warm_start`, docs/batch-file.md#warm-start): when a
//! batch is created, each job is given the best checkpoint of the same job
//! in the previous batch of the same name under the same runs directory —
//! the most recent earlier batch in which that job succeeded and left a
//! best checkpoint. A trainer job gets `train.init_from` pointing at it; every
//! job gets that job's directory read-only at `/previous` and
//! `TB_PREVIOUS_BEST` (`executor::container_spec`). A job with no such
//! checkpoint starts cold, and says why.

use crate::metrics::MetricsSpec;
use crate::run::{BatchDir, BatchState, JobFile, Status, best_checkpoint};
use crate::settings::{JobSpec, Plan, WarmStart};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Decides where every job of `plan` starts from (a plan without
/// `warm_start` is left alone). Runs before the batch's directory exists,
/// so every batch found is an earlier one.
pub fn apply(plan: &mut Plan, runs_dir: &Path) {
    if !plan.settings.warm_start {
        return;
    }
    let earlier = earlier_batches(runs_dir, &plan.name);
    for job in &mut plan.jobs {
        let start = start_of(job, &plan.name, &earlier);
        if let Some(path) = start.checkpoint_in_container()
            && let Some(train) = job.train.as_mut().and_then(Value::as_object_mut)
        {
            train.insert("init_from".into(), Value::String(path));
        }
        job.warm_start = Some(start);
    }
}

/// One line per job for people: where it starts from.
pub fn describe(job: &JobSpec) -> Option<String> {
    Some(match job.warm_start.as_ref()? {
        WarmStart::Warm {
            batch,
            checkpoint,
            best,
            replaced_init_from,
            ..
        } => {
            let score = best
                .as_ref()
                .map(|b| format!(" ({} {})", b.metric, crate::human::value(b.value)))
                .unwrap_or_default();
            let instead = replaced_init_from
                .as_ref()
                .map(|i| format!(", instead of its train.init_from `{i}`"))
                .unwrap_or_default();
            format!(
                "{}: warm start from batch {batch}, {checkpoint}{score}{instead}",
                job.name
            )
        }
        WarmStart::Cold { why } => format!("{}: cold start: {why}", job.name),
    })
}

/// The batches named `name` under `runs_dir`, newest first.
fn earlier_batches(runs_dir: &Path, name: &str) -> Vec<(BatchDir, BatchState)> {
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return Vec::new();
    };
    let mut found: Vec<(BatchDir, BatchState)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        // `latest` is a link to one of the others.
        .filter(|p| !p.is_symlink() && p.join("batch.json").is_file())
        .filter_map(|p| {
            let dir = BatchDir::at(&p).ok()?;
            let state = dir.read_batch().ok()?;
            (state.name == name).then_some((dir, state))
        })
        .collect();
    found.sort_by(|(a, sa), (b, sb)| (sb.created_at, &b.id).cmp(&(sa.created_at, &a.id)));
    found
}

/// Where `job` starts from, given the earlier batches (newest first).
fn start_of(job: &JobSpec, batch_name: &str, earlier: &[(BatchDir, BatchState)]) -> WarmStart {
    let Some((dir, job_dir, checkpoint)) = earlier.iter().find_map(|(dir, _)| {
        let origin = succeeded_dir(dir, &job.name)?;
        let checkpoint = best_checkpoint(&origin)?;
        Some((dir, origin, checkpoint))
    }) else {
        let why = if earlier.is_empty() {
            format!("no earlier batch named `{batch_name}` under the runs directory")
        } else {
            format!(
                "none of the {} earlier batch(es) named `{batch_name}` holds a best checkpoint of this job from a run \
                 that succeeded",
                earlier.len()
            )
        };
        return WarmStart::Cold { why };
    };
    let before = dir.read_job_file(&job.name).ok();
    if let Some(differs) = model_change(job, before.as_ref()) {
        return WarmStart::Cold {
            why: format!(
                "its {differs} differs from batch {}'s, whose checkpoint would not fit",
                dir.id
            ),
        };
    }
    let best = before.as_ref().and_then(|f| {
        let spec: &MetricsSpec = &f.spec.metrics;
        crate::metrics::judge(&job_dir, spec, f.spec.train.as_ref(), false).best
    });
    let replaced_init_from = job
        .train
        .as_ref()
        .and_then(|t| t.get("init_from"))
        .and_then(Value::as_str)
        .map(String::from);
    WarmStart::Warm {
        batch: dir.id.clone(),
        job_dir,
        checkpoint,
        best,
        replaced_init_from,
    }
}

/// The directory holding the result of `job` in `dir`, if it succeeded
/// there: its own, or the one a `--skip-done` reuse points at.
fn succeeded_dir(dir: &BatchDir, job: &str) -> Option<PathBuf> {
    let state = dir.read_job_state(job).ok()?;
    (state.status() == Status::Succeeded).then(|| {
        state
            .reused_from()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.job_dir(job))
    })
}

/// For a trainer job: which of `train.model` and `train.model_args`
/// differs from the earlier job's (a checkpoint of another network does
/// not load), a key left out being the trainer's default. What else shapes
/// the network (the data's channels and classes) tb cannot know: a
/// trainer whose warm-start checkpoint does not fit starts cold and says
/// so in `result.json` (docs/trainer-protocol.md#in).
fn model_change(job: &JobSpec, before: Option<&JobFile>) -> Option<&'static str> {
    let now = job.train.as_ref()?;
    let then = before.and_then(|f| f.spec.train.as_ref());
    let value = |t: Option<&Value>, key: &str| {
        t.and_then(|t| t.get(key)).cloned().unwrap_or_else(|| match key {
            "model" => Value::String(DEFAULT_MODEL.into()),
            _ => Value::Object(Default::default()),
        })
    };
    ["model", "model_args"]
        .into_iter()
        .find(|key| value(Some(now), key) != value(then, key))
        .map(|key| {
            if key == "model" {
                "train.model"
            } else {
                "train.model_args"
            }
        })
}

/// trainer-py's `train.model` when none is given.
const DEFAULT_MODEL: &str = "unet";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::JobState;

    fn spec(name: &str, train: Option<Value>) -> JobSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "image": "img", "command": null, "gpus": 0, "cpus": null, "memory": null,
            "shm_size": 1, "time_limit": null, "env": {}, "pass_env": [], "mounts": [],
            "code": null, "network": "bridge", "train": train
        }))
        .unwrap()
    }

    /// A batch directory named `id` of the batch `name`, created at
    /// `minute`, whose job `job` ended `status`, with a best checkpoint or not.
    fn batch(runs: &Path, id: &str, minute: u32, job: &JobSpec, status: Status, ckpt: bool) -> PathBuf {
        let dir = BatchDir::new(runs.join(id), id.into());
        std::fs::create_dir_all(dir.job_dir(&job.name).join("checkpoints")).unwrap();
        let created = chrono::DateTime::parse_from_rfc3339(&format!("2026-11-22T23:{minute:02}:00Z")).unwrap();
        let state = serde_json::json!({"version": 1, "id": id, "name": "night", "file": "/x.toml",
            "created_at": created, "status": "finished", "finished_at": null, "supervisor": null, "jobs": [job.name]});
        std::fs::write(dir.path.join("batch.json"), state.to_string()).unwrap();
        dir.write_job_file(&JobFile::new("night", id, 1, job)).unwrap();
        let mut s = JobState::pending();
        s.begin_attempt(None);
        s.started(
            crate::run::RunHandle::Container { id: "c".into() },
            chrono::Utc::now(),
            vec![],
            None,
        );
        let mut outcome = crate::run::Outcome::failed_before_start("x".into(), None);
        outcome.status = status;
        s.ended(&outcome);
        dir.write_job_state(&job.name, &s).unwrap();
        if ckpt {
            std::fs::write(dir.job_dir(&job.name).join("checkpoints/best.ckpt"), "w").unwrap();
            std::fs::write(
                dir.job_dir(&job.name).join("result.json"),
                r#"{"best": {"metric": "val_loss", "value": 0.25, "epoch": 2, "checkpoint": "checkpoints/best.ckpt"}}"#,
            )
            .unwrap();
        }
        dir.job_dir(&job.name)
    }

    fn plan(jobs: Vec<JobSpec>) -> Plan {
        Plan {
            file: "/x.toml".into(),
            text: String::new(),
            name: "night".into(),
            settings: crate::settings::BatchSettings {
                warm_start: true,
                ..Default::default()
            },
            gpus: crate::gpu::Inventory {
                ids: vec![],
                source: "test",
            },
            jobs,
            watch: None,
        }
    }

    #[test]
    fn a_job_starts_from_the_newest_earlier_success_with_a_checkpoint() {
        let runs = tempfile::tempdir().unwrap();
        let train = serde_json::json!({"model": "unet", "model_args": {"channels": 8}, "init_from": "/code/pre.ckpt"});
        let a = spec("a", Some(train.clone()));
        let old = batch(runs.path(), "b1", 1, &a, Status::Succeeded, true);
        // Newer, but no use: failed, or succeeded without a checkpoint.
        batch(runs.path(), "b2", 2, &a, Status::Failed, true);
        batch(runs.path(), "b3", 3, &a, Status::Succeeded, false);
        let mut p = plan(vec![a.clone(), spec("new", Some(train))]);
        apply(&mut p, runs.path());

        let Some(WarmStart::Warm {
            batch,
            job_dir,
            checkpoint,
            best,
            replaced_init_from,
        }) = &p.jobs[0].warm_start
        else {
            panic!("{:?}", p.jobs[0].warm_start)
        };
        assert_eq!(
            (batch.as_str(), job_dir, checkpoint.as_str()),
            ("b1", &old, "checkpoints/best.ckpt")
        );
        assert_eq!(best.as_ref().map(|b| b.value), Some(0.25));
        assert_eq!(replaced_init_from.as_deref(), Some("/code/pre.ckpt"));
        assert_eq!(
            p.jobs[0].train.as_ref().unwrap()["init_from"],
            "/previous/checkpoints/best.ckpt"
        );
        let line = describe(&p.jobs[0]).unwrap();
        assert!(
            line.starts_with("a: warm start from batch b1, checkpoints/best.ckpt (val_loss 0.25"),
            "{line}"
        );

        // A job no earlier batch ran starts cold, keeping its own init_from.
        let WarmStart::Cold { why } = p.jobs[1].warm_start.as_ref().unwrap() else {
            panic!()
        };
        assert!(
            why.starts_with("none of the 3 earlier batch(es) named `night` holds"),
            "{why}"
        );
        assert_eq!(p.jobs[1].train.as_ref().unwrap()["init_from"], "/code/pre.ckpt");
    }

    #[test]
    fn another_model_starts_cold_and_a_first_batch_says_so() {
        let runs = tempfile::tempdir().unwrap();
        let mut p = plan(vec![spec("a", Some(serde_json::json!({"model": "unet"})))]);
        apply(&mut p, runs.path());
        assert_eq!(
            p.jobs[0].warm_start,
            Some(WarmStart::Cold {
                why: "no earlier batch named `night` under the runs directory".into()
            })
        );

        batch(
            runs.path(),
            "b1",
            1,
            &spec("a", Some(serde_json::json!({"model": "fcn"}))),
            Status::Succeeded,
            true,
        );
        let mut p = plan(vec![spec("a", Some(serde_json::json!({"model": "unet"})))]);
        apply(&mut p, runs.path());
        let WarmStart::Cold { why } = p.jobs[0].warm_start.as_ref().unwrap() else {
            panic!()
        };
        assert!(why.starts_with("its train.model differs from batch b1's"), "{why}");
        assert!(p.jobs[0].train.as_ref().unwrap().get("init_from").is_none());
    }

    #[test]
    fn a_default_spelled_out_is_the_same_model() {
        let runs = tempfile::tempdir().unwrap();
        batch(
            runs.path(),
            "b1",
            1,
            &spec("a", Some(serde_json::json!({"lr": 0.1}))),
            Status::Succeeded,
            true,
        );
        let mut p = plan(vec![spec(
            "a",
            Some(serde_json::json!({"model": "unet", "model_args": {}})),
        )]);
        apply(&mut p, runs.path());
        assert!(
            matches!(p.jobs[0].warm_start, Some(WarmStart::Warm { .. })),
            "{:?}",
            p.jobs[0].warm_start
        );
        let mut p = plan(vec![spec(
            "a",
            Some(serde_json::json!({"model_args": {"channels": 4}})),
        )]);
        apply(&mut p, runs.path());
        let Some(WarmStart::Cold { why }) = &p.jobs[0].warm_start else {
            panic!("{:?}", p.jobs[0].warm_start)
        };
        assert!(why.starts_with("its train.model_args differs"), "{why}");
    }

    #[test]
    fn a_command_job_gets_the_checkpoint_but_no_train_table() {
        let runs = tempfile::tempdir().unwrap();
        let mut job = spec("c", None);
        job.command = Some(vec!["python".into(), "fit.py".into()]);
        batch(runs.path(), "b1", 1, &job, Status::Succeeded, true);
        let mut p = plan(vec![job]);
        apply(&mut p, runs.path());
        assert!(matches!(p.jobs[0].warm_start, Some(WarmStart::Warm { .. })));
        assert_eq!(p.jobs[0].train, None);
        assert_eq!(
            p.jobs[0]
                .warm_start
                .as_ref()
                .unwrap()
                .checkpoint_in_container()
                .as_deref(),
            Some("/previous/checkpoints/best.ckpt")
        );
        let mut off = plan(vec![spec("c", None)]);
        off.settings.warm_start = false;
        apply(&mut off, runs.path());
        assert_eq!(off.jobs[0].warm_start, None, "without warm_start nothing is decided");
    }
}
