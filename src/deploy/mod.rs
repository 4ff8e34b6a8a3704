//! Deploy (`[batch.deploy]`, `tb deploy`): a batch's best job — by the
//! report's ranking, or the one named — replaces the model in the deploy
//! directory only if it is better on the same data. A trainer job's
//! checkpoint and the deployed one are both scored on this batch's test
//! split by the same code ([`evaluate`]); a command job's logged best is
//! compared with the deployed model's. Every decision goes to the deploy
//! directory's `history.jsonl` and the batch's `deploy.json` ([`Record`]);
//! a promotion replaces the model atomically ([`store`]).

mod candidate;
mod evaluate;
pub mod store;

use crate::metrics::{Mode, better};
use crate::run::{BatchDir, read_versioned, write_json};
use candidate::Candidate;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use store::{Deployed, Files, Store};

/// The file in a batch directory with its latest deploy decision.
pub const BATCH_RECORD: &str = "deploy.json";

/// What a deploy decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The candidate is the deployed model now.
    Promoted,
    /// The deployed model stays.
    Kept,
    /// No decision could be made (nothing to deploy, a scoring failed):
    /// nothing changed. Only in the batch's `deploy.json`.
    Failed,
}

/// One model of a decision, and its scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub batch: String,
    pub job: String,
    /// The value compared (`compared_on`): scored on this batch's test
    /// split, or the job's logged best.
    pub score: Option<f64>,
    /// The job's own best value of its monitor, as it logged it.
    pub logged: Option<f64>,
    /// sha256 of the checkpoint.
    pub checkpoint_sha256: String,
    /// For the deployed model: its directory (`versions/<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A deploy decision: a line of `history.jsonl`, the batch's
/// `deploy.json`, and a deployed model's own `deploy.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub at: DateTime<Utc>,
    /// The deploy directory.
    pub dir: PathBuf,
    pub decision: Verdict,
    /// Why, in words.
    pub why: String,
    /// `tb deploy --force`: promoted without comparing.
    #[serde(default)]
    pub forced: bool,
    /// The candidate's monitor and its mode.
    pub metric: Option<String>,
    pub mode: Option<Mode>,
    /// What the two scores are: the monitor's test counterpart (scored on
    /// this batch's test split) or the monitor as logged.
    pub compared_on: Option<String>,
    /// The scores come from scoring both checkpoints on this batch's test split.
    #[serde(default)]
    pub re_evaluated: bool,
    /// Test samples they were scored on, when the trainer says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// The batch's model (none when there was no job to deploy).
    pub candidate: Option<Side>,
    /// The model that was deployed before the decision, if any.
    pub deployed: Option<Side>,
    /// What `current` points at after the decision.
    pub current: Option<String>,
    /// The candidate's `train.export` result, as its `result.json` has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<serde_json::Value>,
}

/// What `tb deploy` (or the end of a batch) asks for.
pub struct Request<'a> {
    pub batch: &'a BatchDir,
    /// The deploy directory, absolute.
    pub target: &'a Path,
    /// This job, rather than the batch's best.
    pub job: Option<&'a str>,
    /// Promote without comparing.
    pub force: bool,
    /// This host's GPU ids, for scoring.
    pub gpu_ids: Vec<String>,
}

/// How the candidate and the deployed model are to be compared.
#[derive(Debug, PartialEq)]
enum Plan {
    Promote(String),
    Keep(String),
    /// Both are trainer jobs: score both checkpoints on the batch's test split.
    Score,
    /// Compare what the jobs logged.
    Logged,
}

/// Deploys: decides, promotes when the candidate wins, records the
/// decision. `Err` is a request that cannot be carried out (no such job,
/// nothing succeeded, an unusable deploy directory) or [`Interrupted`]:
/// nothing changed. A scoring that fails is a `Failed` record; every
/// record is written to the batch.
pub async fn deploy(req: &Request<'_>) -> anyhow::Result<Record> {
    let candidate = Candidate::of(req.batch, req.job)?;
    let store = Store::open(req.target)?;
    let deployed = store.current()?;
    let (record, interrupted) = match decide(req, &store, &candidate, deployed.as_ref()).await {
        Ok(record) => (record, None),
        Err(e) => {
            let mut r = record(
                req.target,
                Verdict::Failed,
                format!("{e:#}"),
                Some(&candidate),
                deployed.as_ref(),
            );
            r.forced = req.force;
            (r, e.downcast::<Interrupted>().ok())
        }
    };
    write_json(&req.batch.path.join(BATCH_RECORD), &record)?;
    match interrupted {
        Some(i) => Err(i.into()),
        None => Ok(record),
    }
}

/// A deploy stopped by Ctrl-C or SIGTERM while it scored: nothing changed.
#[derive(Debug, thiserror::Error)]
#[error("the deploy was {0}; nothing changed")]
pub struct Interrupted(pub crate::signal::SignalEvent);

/// The deploy of a batch with `[batch.deploy]`, when it ends: the decision
/// is logged and written for the report; a deploy that cannot be made is
/// too, and changes nothing else (`tb deploy` can try again). A batch that
/// did not finish (interrupted, or stopped by its deadline) is not deployed.
pub async fn at_end(batch: &BatchDir, spec: &crate::batch::DeploySpec, gpu_ids: Vec<String>, finished: bool) {
    if !finished {
        tracing::info!(
            "deploy: skipped, since the batch did not finish; `tb deploy {}` deploys it",
            batch.id
        );
        return;
    }
    let request = Request {
        batch,
        target: &spec.dir,
        job: None,
        force: false,
        gpu_ids,
    };
    match deploy(&request).await {
        Ok(r) if r.decision == Verdict::Failed => tracing::error!("{}", describe(&r)),
        Ok(r) => tracing::info!("{}", describe(&r)),
        Err(e) if e.is::<Interrupted>() => tracing::warn!("{e}"),
        Err(e) => {
            tracing::error!("deploy: {e:#}");
            if let Err(e) = record_failure(batch, &spec.dir, format!("{e:#}")) {
                tracing::warn!("{e:#}");
            }
        }
    }
}

/// The decision in one line, for people.
pub fn describe(r: &Record) -> String {
    let job = |s: &Option<Side>| {
        s.as_ref()
            .map(|s| format!("{} of batch {}", s.job, s.batch))
            .unwrap_or_else(|| "nothing".into())
    };
    match r.decision {
        Verdict::Promoted => format!(
            "deploy: promoted {} to {}: {}",
            job(&r.candidate),
            r.dir.join(store::CURRENT).display(),
            r.why
        ),
        Verdict::Kept => format!(
            "deploy: kept the deployed model ({}) over {}: {}",
            job(&r.deployed),
            job(&r.candidate),
            r.why
        ),
        Verdict::Failed => format!("deploy failed, nothing changed in {}: {}", r.dir.display(), r.why),
    }
}

/// Records in the batch that no deploy could be made, and why.
pub fn record_failure(batch: &BatchDir, target: &Path, why: String) -> anyhow::Result<Record> {
    let r = record(target, Verdict::Failed, why, None, None);
    write_json(&batch.path.join(BATCH_RECORD), &r)?;
    Ok(r)
}

/// The batch's latest deploy decision, if it has one.
pub fn read_record(batch: &Path) -> anyhow::Result<Option<Record>> {
    let path = batch.join(BATCH_RECORD);
    if !path.exists() {
        return Ok(None);
    }
    read_versioned(&path).map(Some)
}

/// The decision, carried out: the comparison, the promotion, the history line.
async fn decide(
    req: &Request<'_>,
    store: &Store,
    candidate: &Candidate,
    deployed: Option<&Deployed>,
) -> anyhow::Result<Record> {
    let mut r = match plan(candidate, deployed, req.force) {
        Plan::Promote(why) => record(req.target, Verdict::Promoted, why, Some(candidate), deployed),
        Plan::Keep(why) => record(req.target, Verdict::Kept, why, Some(candidate), deployed),
        Plan::Logged => compare_logged(req.target, candidate, deployed.expect("a deployed model to compare")),
        Plan::Score => score_both(req, candidate, deployed.expect("a deployed model to score")).await?,
    };
    r.forced = req.force;
    if r.decision == Verdict::Promoted {
        let evaluation = req.batch.path.join("deploy/candidate/evaluation.json");
        let files = Files {
            checkpoint: candidate.checkpoint.clone(),
            job_json: req.batch.job_dir(&candidate.job).join("job.json"),
            result: Some(candidate.job_dir.join("result.json")).filter(|p| p.is_file()),
            evaluation: Some(evaluation).filter(|p| r.re_evaluated && p.is_file()),
            torchscript: candidate.torchscript(),
        };
        store.promote(&files, &mut r, &format!("{}.{}", candidate.batch, candidate.job))?;
    } else {
        r.current = deployed.map(|d| d.version.clone());
    }
    store.append(&r)?;
    Ok(r)
}

/// What to do, before anything is scored.
fn plan(c: &Candidate, deployed: Option<&Deployed>, force: bool) -> Plan {
    if force {
        return Plan::Promote("forced with --force, without comparing".into());
    }
    let Some(d) = deployed else {
        return Plan::Promote("nothing was deployed yet".into());
    };
    let same = d
        .record
        .candidate
        .as_ref()
        .is_some_and(|s| s.checkpoint_sha256 == c.sha256);
    if same {
        return Plan::Keep(format!("this checkpoint is the deployed model already ({})", d.version));
    }
    if c.spec.train.is_some() && d.job.train.is_some() {
        Plan::Score
    } else {
        Plan::Logged
    }
}

/// A command job (on either side): the logged bests, if they are of one metric.
fn compare_logged(target: &Path, c: &Candidate, d: &Deployed) -> Record {
    let (dm, dv) = (&d.record.metric, d.record.candidate.as_ref().and_then(|s| s.logged));
    let mut r = record(target, Verdict::Kept, String::new(), Some(c), Some(d));
    r.compared_on = Some(c.metric.clone());
    if dm.as_deref() != Some(c.metric.as_str()) || d.record.mode != Some(c.mode) {
        r.why = format!(
            "not comparable: the deployed model is judged by {}, this job by {} ({}); `tb deploy --force` replaces it",
            dm.as_deref().unwrap_or("nothing"),
            c.metric,
            mode_word(c.mode)
        );
        return r;
    }
    let (Some(cv), Some(dv)) = (c.logged, dv) else {
        r.why = format!("not comparable: a logged {} is missing", c.metric);
        return r;
    };
    if let Some(s) = r.candidate.as_mut() {
        s.score = Some(cv);
    }
    if let Some(s) = r.deployed.as_mut() {
        s.score = Some(dv);
    }
    (r.decision, r.why) = verdict(&c.metric, c.mode, cv, dv, "as each job logged it (not re-evaluated)");
    r
}

/// Two trainer jobs: both checkpoints scored on this batch's test split.
async fn score_both(req: &Request<'_>, c: &Candidate, d: &Deployed) -> anyhow::Result<Record> {
    let evaluator = evaluate::Evaluator::new(req.batch, req.gpu_ids.clone()).await?;
    let mine = evaluator.score("candidate", &c.spec, None, &c.checkpoint).await?;
    let theirs = evaluator
        .score("deployed", &c.spec, d.job.train.as_ref(), &d.checkpoint)
        .await?;
    let mut r = record(req.target, Verdict::Kept, String::new(), Some(c), Some(d));
    r.re_evaluated = true;
    r.compared_on = Some(mine.metric.clone());
    r.samples = mine.samples;
    if let Some(s) = r.candidate.as_mut() {
        s.score = Some(mine.value);
    }
    if let Some(s) = r.deployed.as_mut() {
        s.score = Some(theirs.value);
    }
    let on = match mine.samples {
        Some(n) => format!("on this batch's test split ({n} samples)"),
        None => "on this batch's test split".into(),
    };
    (r.decision, r.why) = verdict(&mine.metric, mine.mode, mine.value, theirs.value, &on);
    Ok(r)
}

/// Promoted only if strictly better: a tie keeps the model serving now.
fn verdict(metric: &str, mode: Mode, candidate: f64, deployed: f64, on: &str) -> (Verdict, String) {
    let (c, d) = (crate::human::value(candidate), crate::human::value(deployed));
    if better(candidate, deployed, mode.maximize()) {
        (
            Verdict::Promoted,
            format!("{metric} {c} beats the deployed model's {d} {on}"),
        )
    } else {
        (
            Verdict::Kept,
            format!(
                "{metric} {c} does not beat the deployed model's {d} ({} is better) {on}",
                mode_word(mode)
            ),
        )
    }
}

fn mode_word(mode: Mode) -> &'static str {
    if mode.maximize() { "higher" } else { "lower" }
}

/// A record of `verdict` with the two sides as known before any scoring.
fn record(target: &Path, decision: Verdict, why: String, c: Option<&Candidate>, d: Option<&Deployed>) -> Record {
    Record {
        version: crate::run::VERSION,
        at: Utc::now(),
        dir: target.to_path_buf(),
        decision,
        why,
        forced: false,
        metric: c.map(|c| c.metric.clone()),
        mode: c.map(|c| c.mode),
        compared_on: None,
        re_evaluated: false,
        samples: None,
        candidate: c.map(|c| c.side(None)),
        deployed: d.and_then(|d| {
            let s = d.record.candidate.clone()?;
            Some(Side {
                score: None,
                model: Some(d.version.clone()),
                ..s
            })
        }),
        current: None,
        export: c.and_then(|c| c.export.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::JobSpec;

    fn spec(train: Option<serde_json::Value>) -> JobSpec {
        serde_json::from_value(serde_json::json!({
            "name": "a", "image": "img", "command": null, "gpus": 0, "cpus": null, "memory": null,
            "shm_size": 1, "time_limit": null, "env": {}, "pass_env": [], "mounts": [],
            "code": null, "network": "bridge", "train": train
        }))
        .unwrap()
    }

    fn candidate(trainer: bool, logged: f64, sha: &str) -> Candidate {
        Candidate {
            batch: "b2".into(),
            job: "a".into(),
            job_dir: "/runs/b2/jobs/a".into(),
            spec: spec(trainer.then(|| serde_json::json!({"model": "unet"}))),
            checkpoint: "/runs/b2/jobs/a/checkpoints/best.ckpt".into(),
            sha256: sha.into(),
            metric: "val_loss".into(),
            mode: Mode::Min,
            logged: Some(logged),
            export: None,
        }
    }

    /// What was deployed: `c`, promoted into `versions/b1.a`.
    fn deployed(c: &Candidate) -> Deployed {
        let mut record = record(Path::new("/d"), Verdict::Promoted, "first".into(), Some(c), None);
        record.current = Some("versions/b1.a".into());
        if let Some(s) = record.candidate.as_mut() {
            s.batch = "b1".into();
        }
        Deployed {
            version: "versions/b1.a".into(),
            record,
            job: c.spec.clone(),
            checkpoint: "/d/versions/b1.a/model.ckpt".into(),
        }
    }

    #[test]
    fn what_is_compared_depends_on_the_two_jobs() {
        let trainer = candidate(true, 0.2, "new");
        let old_trainer = deployed(&candidate(true, 0.3, "old"));
        let old_command = deployed(&candidate(false, 0.3, "old"));
        assert_eq!(
            plan(&trainer, None, false),
            Plan::Promote("nothing was deployed yet".into())
        );
        assert!(matches!(plan(&trainer, Some(&old_trainer), true), Plan::Promote(w) if w.starts_with("forced")));
        assert_eq!(plan(&trainer, Some(&old_trainer), false), Plan::Score);
        assert_eq!(plan(&trainer, Some(&old_command), false), Plan::Logged);
        assert_eq!(
            plan(&candidate(false, 0.2, "new"), Some(&old_trainer), false),
            Plan::Logged
        );
        let same = deployed(&candidate(true, 0.2, "new"));
        assert!(matches!(plan(&trainer, Some(&same), false), Plan::Keep(w) if w.contains("deployed model already")));
    }

    #[test]
    fn only_a_strictly_better_score_promotes() {
        let (v, why) = verdict("test_loss", Mode::Min, 0.2, 0.25, "on this batch's test split");
        assert_eq!(v, Verdict::Promoted);
        assert_eq!(
            why,
            "test_loss 0.2000 beats the deployed model's 0.2500 on this batch's test split"
        );
        assert_eq!(
            verdict("test_loss", Mode::Min, 0.25, 0.25, "").0,
            Verdict::Kept,
            "a tie keeps"
        );
        let (v, why) = verdict("test_iou", Mode::Max, 0.7, 0.8, "here");
        assert_eq!(v, Verdict::Kept);
        assert_eq!(
            why,
            "test_iou 0.7000 does not beat the deployed model's 0.8000 (higher is better) here"
        );
        assert_eq!(verdict("test_iou", Mode::Max, 0.9, 0.8, "").0, Verdict::Promoted);
    }

    #[test]
    fn logged_values_compare_only_on_one_metric() {
        let c = candidate(false, 0.2, "new");
        let d = deployed(&candidate(false, 0.3, "old"));
        let r = compare_logged(Path::new("/d"), &c, &d);
        assert_eq!(r.decision, Verdict::Promoted);
        assert_eq!(
            (r.candidate.as_ref().unwrap().score, r.deployed.as_ref().unwrap().score),
            (Some(0.2), Some(0.3))
        );
        assert!(r.why.ends_with("as each job logged it (not re-evaluated)"), "{}", r.why);
        assert!(!r.re_evaluated);
        assert_eq!(r.deployed.as_ref().unwrap().model.as_deref(), Some("versions/b1.a"));

        let mut other = candidate(false, 0.2, "new");
        other.metric = "val_iou".into();
        other.mode = Mode::Max;
        let r = compare_logged(Path::new("/d"), &other, &d);
        assert_eq!(r.decision, Verdict::Kept);
        assert!(
            r.why
                .starts_with("not comparable: the deployed model is judged by val_loss, this job by val_iou"),
            "{}",
            r.why
        );
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let c = candidate(true, 0.2, "new");
        let r = record(
            Path::new("/d"),
            Verdict::Kept,
            "why".into(),
            Some(&c),
            Some(&deployed(&c)),
        );
        let text = serde_json::to_string(&r).unwrap();
        let back: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let line = describe(&r);
        assert_eq!(
            line,
            "deploy: kept the deployed model (a of batch b1) over a of batch b2: why"
        );
    }
}
