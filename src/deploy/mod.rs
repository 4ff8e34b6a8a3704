//! Deploy (`[batch.deploy]`, `tb deploy`): a batch's best job — by the
//! report's ranking, or the one named — replaces the model in the deploy
//! directory only if it is better on the same data. A trainer job's
//! checkpoint and the deployed one are both scored on this batch's test
//! split by the same code ([`evaluate`]), on tb's monitor and mode; a
//! command job's logged best is compared with the deployed model's. Every
//! decision goes to the deploy directory's `history.jsonl` and the batch's
//! `deploy.json` ([`Record`]); a promotion replaces the model atomically
//! ([`store`]). One signal listener covers a whole deploy — the wait for
//! another deploy's lock and both scorings — so Ctrl-C or SIGTERM stops it
//! anywhere before the promotion, changing nothing.

mod candidate;
mod evaluate;
pub mod store;

use crate::metrics::{Mode, better};
use crate::run::{BatchDir, read_versioned, write_json};
use crate::signal::Signals;
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
    /// The deployed model stays (`blocked` says when the candidate was
    /// never judged better or worse).
    Kept,
    /// No decision could be made (nothing to deploy, a scoring failed):
    /// nothing changed. Only in the batch's `deploy.json`.
    Failed,
    /// Ctrl-C or SIGTERM stopped the deploy before it decided: nothing
    /// changed. Only in the batch's `deploy.json`.
    Interrupted,
    /// The automatic deploy at a batch's end did not compare: the deployed
    /// model comes from a batch created after this one. Only in the
    /// batch's `deploy.json`.
    Skipped,
}

/// Why a kept candidate was never judged better or worse than the
/// deployed model (`tb deploy` exits 1 for these, 3 for a candidate that lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Blocked {
    /// Their logged monitors are of different metrics or modes, or a
    /// logged value is missing.
    NotComparable,
    /// The export its job asked for (`train.export`) was not made: it
    /// would be deployed without `model.pt`.
    ExportFailed,
}

/// One model of a decision, and its scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub batch: String,
    /// When its batch was created (absent in records of tb before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_created_at: Option<DateTime<Utc>>,
    pub job: String,
    /// The value compared (`compared_on`): scored on this batch's test
    /// split, or the job's logged best; none when nothing was compared or
    /// the score was not a finite number.
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
    /// With `kept`: what kept the candidate out before it could be judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
    /// The monitor (tb's, the one the candidate was chosen by) and the
    /// mode the comparison used.
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
    /// What went wrong without changing the decision (a history line that
    /// could not be written, a broken `current` replaced with --force).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
    /// The deploy at a batch's end (not `tb deploy`): it never replaces a
    /// model of a batch created after this one (a `tb retry` of an old
    /// batch must not roll production back).
    pub automatic: bool,
}

/// A request that cannot be carried out as asked: no such job, nothing
/// that can be deployed. `tb deploy` exits 2 for it, 1 for a deploy that
/// fails on the way.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// How the candidate and the deployed model are to be compared.
#[derive(Debug, PartialEq)]
enum Plan {
    Promote(String),
    Keep(String),
    /// Kept out without being judged.
    Block(Blocked, String),
    /// Both are trainer jobs: score both checkpoints on the batch's test split.
    Score,
    /// Compare what the jobs logged.
    Logged,
}

/// Deploys: decides, promotes when the candidate wins, records the
/// decision in the batch (`deploy.json`) and the deploy directory. `Err`
/// is a request that cannot be carried out ([`BadRequest`]: nothing to
/// deploy) or a batch whose files cannot be read. Anything that goes
/// wrong once the candidate is known is a `failed` record, and a signal
/// (from `signals`) an `interrupted` one: nothing changed.
pub async fn deploy(req: &Request<'_>, signals: &mut Signals) -> anyhow::Result<Record> {
    let candidate = Candidate::of(req.batch, req.job)?;
    let record = match open_and_decide(req, signals, &candidate).await {
        Ok(r) => r,
        Err((e, deployed)) => {
            let (verdict, why) = match e.downcast_ref::<Interrupted>() {
                Some(i) => (
                    Verdict::Interrupted,
                    format!("{i}; `tb deploy {}` deploys it", req.batch.id),
                ),
                None => (Verdict::Failed, format!("{e:#}")),
            };
            let mut r = record(req.target, verdict, why, Some(&candidate), deployed.as_ref());
            r.forced = req.force;
            r.current = deployed.map(|d| d.version);
            r
        }
    };
    // The decision stands (and is in the deploy directory) whether or not
    // the batch can keep its copy.
    if let Err(e) = write_json(&req.batch.path.join(BATCH_RECORD), &record) {
        tracing::warn!("deploy: {e:#}");
    }
    Ok(record)
}

/// The deploy directory taken, and the decision carried out; an error
/// with the deployed model, if it was known by then.
async fn open_and_decide(
    req: &Request<'_>,
    signals: &mut Signals,
    candidate: &Candidate,
) -> Result<Record, (anyhow::Error, Option<Deployed>)> {
    let store = Store::open(req.target, signals.recv()).await.map_err(|e| (e, None))?;
    let mut warnings = Vec::new();
    let deployed = deployed_model(&store, req.force, &mut warnings).map_err(|e| (e, None))?;
    if req.automatic
        && let Some(d) = &deployed
        && let Some(why) = newer_deployed(req.batch, candidate, d)
    {
        let mut r = record(req.target, Verdict::Skipped, why, Some(candidate), Some(d));
        r.current = Some(d.version.clone());
        return Ok(r);
    }
    match decide(req, signals, &store, candidate, deployed.as_ref(), warnings).await {
        Ok(r) => Ok(r),
        Err(e) => Err((e, deployed)),
    }
}

/// The model `current` points at; with --force, a `current` that cannot
/// be read is as good as none (a warning says so), since it is replaced.
fn deployed_model(store: &Store, force: bool, warnings: &mut Vec<String>) -> anyhow::Result<Option<Deployed>> {
    match store.current() {
        Ok(d) => Ok(d),
        Err(e) if force => {
            let w =
                format!("the deployed model cannot be read ({e:#}); --force replaces it as if nothing were deployed");
            tracing::warn!("deploy: {w}");
            warnings.push(w);
            Ok(None)
        }
        Err(e) => Err(e.context(format!(
            "the deployed model in `{}` cannot be read; `tb deploy --force` replaces it",
            store.dir.display()
        ))),
    }
}

/// Why the automatic deploy leaves `d` alone, if it comes from a batch
/// created after the candidate's.
fn newer_deployed(batch: &BatchDir, c: &Candidate, d: &Deployed) -> Option<String> {
    let side = d.record.candidate.as_ref()?;
    let theirs = side.batch_created_at.or_else(|| {
        // A record of a tb before `batch_created_at`: its batch, if it is a neighbour.
        let dir = BatchDir::at(&batch.path.parent()?.join(&side.batch)).ok()?;
        dir.read_batch().ok().map(|s| s.created_at)
    })?;
    let mine = c.batch_created_at?;
    (theirs > mine).then(|| {
        format!(
            "the deployed model ({} of batch {}) comes from a batch created after this one: an automatic deploy \
             (at the end of `tb retry` or `tb resume` of an older batch) never replaces it; `tb deploy {}` compares \
             them by hand",
            side.job, side.batch, batch.id
        )
    })
}

/// A deploy stopped by Ctrl-C or SIGTERM while it scored: nothing changed.
#[derive(Debug, thiserror::Error)]
#[error("the deploy was {0}; nothing changed")]
pub struct Interrupted(pub crate::signal::SignalEvent);

/// The deploy of a batch with `[batch.deploy]`, when it ends: the decision
/// is logged and written for the report; a deploy that cannot be made is
/// too, and changes nothing else (`tb deploy` can try again). A batch that
/// did not finish (interrupted, or stopped by its deadline) is not
/// deployed. `true` when Ctrl-C or SIGTERM stopped the deploy: the batch
/// then ends as interrupted.
pub async fn at_end(
    batch: &BatchDir,
    spec: &crate::batch::DeploySpec,
    gpu_ids: Vec<String>,
    finished: bool,
    listening: Option<&Signals>,
) -> bool {
    if !finished {
        tracing::info!(
            "deploy: skipped, since the batch did not finish; `tb deploy {}` deploys it",
            batch.id
        );
        return false;
    }
    // The caller's listener (`tb watch`'s, which has heard every signal
    // since it started), else one from now on.
    let mut signals = match listening {
        Some(signals) => signals.clone(),
        None => Signals::new().unwrap_or_else(|e| {
            tracing::warn!("deploy: cannot listen for signals ({e}); Ctrl-C does not stop the deploy");
            Signals::none()
        }),
    };
    let request = Request {
        batch,
        target: &spec.dir,
        job: None,
        force: false,
        gpu_ids,
        automatic: true,
    };
    match deploy(&request, &mut signals).await {
        Ok(r) => {
            match r.decision {
                Verdict::Failed => tracing::error!("{}", describe(&r)),
                Verdict::Interrupted => tracing::warn!("{}", describe(&r)),
                _ => tracing::info!("{}", describe(&r)),
            }
            r.decision == Verdict::Interrupted
        }
        Err(e) => {
            tracing::error!("deploy: {e:#}");
            if let Err(e) = record_failure(batch, &spec.dir, format!("{e:#}")) {
                tracing::warn!("{e:#}");
            }
            false
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
    let mut line = match r.decision {
        Verdict::Promoted => format!(
            "deploy: promoted {} to {}: {}",
            job(&r.candidate),
            r.dir.join(store::CURRENT).display(),
            r.why
        ),
        Verdict::Kept if r.deployed.is_none() => format!(
            "deploy: did not deploy {} into {}: {}",
            job(&r.candidate),
            r.dir.display(),
            r.why
        ),
        Verdict::Kept => format!(
            "deploy: kept the deployed model ({}) over {}: {}",
            job(&r.deployed),
            job(&r.candidate),
            r.why
        ),
        Verdict::Skipped => format!("deploy: skipped: {}", r.why),
        Verdict::Interrupted => format!("deploy: {}", r.why),
        Verdict::Failed => format!("deploy failed, nothing changed in {}: {}", r.dir.display(), r.why),
    };
    for w in &r.warnings {
        line.push_str(&format!("\n  warning: {w}"));
    }
    line
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
    signals: &mut Signals,
    store: &Store,
    candidate: &Candidate,
    deployed: Option<&Deployed>,
    warnings: Vec<String>,
) -> anyhow::Result<Record> {
    let mut r = match plan(candidate, deployed, req.force) {
        Plan::Promote(why) => record(req.target, Verdict::Promoted, why, Some(candidate), deployed),
        Plan::Keep(why) => record(req.target, Verdict::Kept, why, Some(candidate), deployed),
        Plan::Block(blocked, why) => {
            let mut r = record(req.target, Verdict::Kept, why, Some(candidate), deployed);
            r.blocked = Some(blocked);
            r
        }
        Plan::Logged => compare_logged(req.target, candidate, deployed.expect("a deployed model to compare")),
        Plan::Score => score_both(req, signals, candidate, deployed.expect("a deployed model to score")).await?,
    };
    r.forced = req.force;
    r.warnings = warnings;
    if r.decision == Verdict::Promoted {
        // A job that never ran here (reused by --skip-done, the batch
        // stopped early) may have its job.json only in plan.json: written
        // out, whole and synced, before it is copied.
        let job_file = req.batch.read_job_file(&candidate.job)?;
        req.batch.write_job_file(&job_file)?;
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
    // Once `current` has switched, the promotion stands: a history line
    // that cannot be written is a warning, not a failure of the deploy.
    if let Err(e) = store.append(&r) {
        let w = format!(
            "the decision is not in `{}`: {e:#}",
            store.dir.join(store::HISTORY).display()
        );
        tracing::warn!("deploy: {w}");
        r.warnings.push(w);
    }
    Ok(r)
}

/// What to do, before anything is scored.
fn plan(c: &Candidate, deployed: Option<&Deployed>, force: bool) -> Plan {
    // First, even with --force: promoting the model deployed already would
    // make `previous` the same model and delete the real rollback target.
    if let Some(d) = deployed
        && d.record
            .candidate
            .as_ref()
            .is_some_and(|s| s.checkpoint_sha256 == c.sha256)
    {
        return Plan::Keep(format!("this checkpoint is the deployed model already ({})", d.version));
    }
    if force {
        return Plan::Promote("forced with --force, without comparing".into());
    }
    if let Some(why) = c.export_missing() {
        return Plan::Block(
            Blocked::ExportFailed,
            format!("{why}; it would serve without model.pt (`tb deploy --force` deploys it so)"),
        );
    }
    let Some(d) = deployed else {
        return Plan::Promote("nothing was deployed yet".into());
    };
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
        r.blocked = Some(Blocked::NotComparable);
        r.why = format!(
            "not comparable: the deployed model is judged by {}, this job by {} ({}); `tb deploy --force` replaces it",
            dm.as_deref().unwrap_or("nothing"),
            c.metric,
            mode_word(c.mode)
        );
        return r;
    }
    let (Some(cv), Some(dv)) = (c.logged, dv) else {
        r.blocked = Some(Blocked::NotComparable);
        r.why = format!("not comparable: a logged {} is missing", c.metric);
        return r;
    };
    if let Some(s) = r.candidate.as_mut() {
        s.score = Some(cv).filter(|v| v.is_finite());
    }
    if let Some(s) = r.deployed.as_mut() {
        s.score = Some(dv).filter(|v| v.is_finite());
    }
    (r.decision, r.why) = verdict(
        &c.metric,
        c.mode,
        Some(cv),
        Some(dv),
        "as each job logged it (not re-evaluated)",
    );
    r
}

/// Two trainer jobs: both checkpoints scored on this batch's test split,
/// on the candidate's monitor and mode (tb's, which chose it).
async fn score_both(req: &Request<'_>, signals: &mut Signals, c: &Candidate, d: &Deployed) -> anyhow::Result<Record> {
    let evaluator = evaluate::Evaluator::new(req.batch, scoring_gpus(&c.gpus, &req.gpu_ids)).await?;
    let monitor = evaluate::Monitor {
        metric: &c.metric,
        mode: c.mode,
    };
    let mine = evaluator
        .score("candidate", &c.spec, None, &c.checkpoint, &monitor, signals)
        .await?;
    let theirs = evaluator
        .score(
            "deployed",
            &c.spec,
            d.job.train.as_ref(),
            &d.checkpoint,
            &monitor,
            signals,
        )
        .await?;
    for e in [&mine, &theirs] {
        if e.mode != c.mode || e.metric != mine.metric {
            anyhow::bail!(
                "the scorings do not agree with tb's monitor: asked for {} ({}), got {} ({}) and {} ({})",
                c.metric,
                mode_word(c.mode),
                mine.metric,
                mode_word(mine.mode),
                theirs.metric,
                mode_word(theirs.mode)
            );
        }
    }
    let mut r = record(req.target, Verdict::Kept, String::new(), Some(c), Some(d));
    r.re_evaluated = true;
    r.compared_on = Some(mine.metric.clone());
    r.samples = mine.samples;
    if let Some(s) = r.candidate.as_mut() {
        s.score = mine.value.filter(|v| v.is_finite());
    }
    if let Some(s) = r.deployed.as_mut() {
        s.score = theirs.value.filter(|v| v.is_finite());
    }
    let on = match mine.samples {
        Some(n) => format!("on this batch's test split ({n} samples)"),
        None => "on this batch's test split".into(),
    };
    (r.decision, r.why) = verdict(&mine.metric, c.mode, mine.value, theirs.value, &on);
    Ok(r)
}

/// The GPUs to score on: the one the candidate job ran on, when this host
/// has it; else this host's first.
fn scoring_gpus(ran_on: &[String], host: &[String]) -> Vec<String> {
    match ran_on.iter().find(|g| host.contains(g)) {
        Some(g) => std::iter::once(g.clone())
            .chain(host.iter().filter(|h| *h != g).cloned())
            .collect(),
        None => host.to_vec(),
    }
}

/// Promoted only if strictly better: a tie keeps the model serving now.
/// A score that is missing or not a finite number is the worst there is:
/// a candidate's never wins, a deployed model's always loses.
fn verdict(metric: &str, mode: Mode, candidate: Option<f64>, deployed: Option<f64>, on: &str) -> (Verdict, String) {
    const NO_NUMBER: &str = "not a number (NaN or infinite)";
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
    match (finite(candidate), finite(deployed)) {
        (None, d) => (
            Verdict::Kept,
            format!(
                "{metric} of this model is {NO_NUMBER}, which beats nothing (the deployed model's: {}) {on}",
                d.map_or(NO_NUMBER.into(), crate::human::value)
            ),
        ),
        (Some(c), None) => (
            Verdict::Promoted,
            format!(
                "{metric} {} beats the deployed model's, which is {NO_NUMBER}, {on}",
                crate::human::value(c)
            ),
        ),
        (Some(c), Some(d)) if better(c, d, mode.maximize()) => (
            Verdict::Promoted,
            format!(
                "{metric} {} beats the deployed model's {} {on}",
                crate::human::value(c),
                crate::human::value(d)
            ),
        ),
        (Some(c), Some(d)) => (
            Verdict::Kept,
            format!(
                "{metric} {} does not beat the deployed model's {} ({} is better) {on}",
                crate::human::value(c),
                crate::human::value(d),
                mode_word(mode)
            ),
        ),
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
        blocked: None,
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
        warnings: Vec::new(),
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
            batch_created_at: None,
            gpus: Vec::new(),
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
        // --force of the deployed checkpoint is a no-op, not a promotion
        // that would turn `previous` into the same model.
        assert!(matches!(plan(&trainer, Some(&same), true), Plan::Keep(w) if w.contains("deployed model already")));
    }

    #[test]
    fn a_candidate_without_its_requested_export_is_kept_out_unless_forced() {
        let mut c = candidate(true, 0.2, "new");
        c.spec.train = Some(serde_json::json!({"model": "unet", "export": ["torchscript"]}));
        c.export = Some(serde_json::json!({"torchscript": {"error": "cannot be scripted (x), nor traced (y)"}}));
        let d = deployed(&candidate(true, 0.3, "old"));
        let Plan::Block(Blocked::ExportFailed, why) = plan(&c, Some(&d), false) else {
            panic!("{:?}", plan(&c, Some(&d), false))
        };
        assert_eq!(
            why,
            "its TorchScript export failed: cannot be scripted (x), nor traced (y); it would serve without model.pt \
             (`tb deploy --force` deploys it so)"
        );
        assert!(
            matches!(plan(&c, None, false), Plan::Block(Blocked::ExportFailed, _)),
            "nothing deployed: still out"
        );
        assert!(matches!(plan(&c, Some(&d), true), Plan::Promote(_)));
        // Not asked for: no export is no obstacle.
        c.spec.train = Some(serde_json::json!({"model": "unet"}));
        assert_eq!(plan(&c, Some(&d), false), Plan::Score);
    }

    #[test]
    fn an_automatic_deploy_never_replaces_a_model_of_a_newer_batch() {
        let at = |m: u32| {
            Some(
                chrono::DateTime::parse_from_rfc3339(&format!("2026-11-22T23:{m:02}:00Z"))
                    .unwrap()
                    .to_utc(),
            )
        };
        let batch = BatchDir::new("/nowhere/runs/b1".into(), "b1".into());
        let mut c = candidate(true, 0.2, "old");
        c.batch_created_at = at(1);
        let mut d = deployed(&candidate(true, 0.3, "newer"));
        d.record.candidate.as_mut().unwrap().batch_created_at = at(2);
        let why = newer_deployed(&batch, &c, &d).unwrap();
        assert!(
            why.starts_with("the deployed model (a of batch b1) comes from a batch created after this one"),
            "{why}"
        );
        assert!(why.ends_with("`tb deploy b1` compares them by hand"), "{why}");
        c.batch_created_at = at(3);
        assert_eq!(
            newer_deployed(&batch, &c, &d),
            None,
            "an older deployed model is compared"
        );
        // A record without the time, of a batch not found: compared as before.
        d.record.candidate.as_mut().unwrap().batch_created_at = None;
        c.batch_created_at = at(1);
        assert_eq!(newer_deployed(&batch, &c, &d), None);
    }

    #[test]
    fn scoring_runs_on_the_candidates_gpu_when_this_host_has_it() {
        let host: Vec<String> = ["0", "1", "2"].map(String::from).to_vec();
        assert_eq!(scoring_gpus(&["1".into()], &host), ["1", "0", "2"]);
        assert_eq!(scoring_gpus(&[], &host), ["0", "1", "2"]);
        assert_eq!(
            scoring_gpus(&["7".into()], &host),
            ["0", "1", "2"],
            "a node's GPU is not this host's"
        );
    }

    #[tokio::test]
    async fn a_promotion_stands_when_its_history_line_cannot_be_written() {
        let tmp = tempfile::tempdir().unwrap();
        let batch = BatchDir::new(tmp.path().join("runs/b2"), "b2".into());
        let mut c = candidate(true, 0.2, "new");
        c.job_dir = batch.job_dir("a");
        c.checkpoint = c.job_dir.join("checkpoints/best.ckpt");
        std::fs::create_dir_all(c.checkpoint.parent().unwrap()).unwrap();
        std::fs::write(&c.checkpoint, "weights").unwrap();
        write_json(
            &c.job_dir.join("job.json"),
            &crate::run::JobFile::new("n", "b2", 1, &c.spec),
        )
        .unwrap();
        let target = tmp.path().join("deployed");
        let store = Store::open(&target, std::future::pending()).await.unwrap();
        // history.jsonl cannot be opened for appending.
        std::fs::create_dir_all(target.join(store::HISTORY)).unwrap();
        let req = Request {
            batch: &batch,
            target: &target,
            job: None,
            force: false,
            gpu_ids: Vec::new(),
            automatic: true,
        };
        let r = decide(&req, &mut Signals::none(), &store, &c, None, Vec::new())
            .await
            .unwrap();
        assert_eq!(r.decision, Verdict::Promoted);
        assert_eq!(r.current.as_deref(), Some("versions/b2.a"));
        assert_eq!(r.warnings.len(), 1);
        assert!(
            r.warnings[0].starts_with("the decision is not in `"),
            "{:?}",
            r.warnings
        );
        assert_eq!(store.current().unwrap().unwrap().version, "versions/b2.a");
    }

    #[test]
    fn only_a_strictly_better_score_promotes() {
        let (v, why) = verdict(
            "test_loss",
            Mode::Min,
            Some(0.2),
            Some(0.25),
            "on this batch's test split",
        );
        assert_eq!(v, Verdict::Promoted);
        assert_eq!(
            why,
            "test_loss 0.2000 beats the deployed model's 0.2500 on this batch's test split"
        );
        assert_eq!(
            verdict("test_loss", Mode::Min, Some(0.25), Some(0.25), "").0,
            Verdict::Kept,
            "a tie keeps"
        );
        let (v, why) = verdict("test_iou", Mode::Max, Some(0.7), Some(0.8), "here");
        assert_eq!(v, Verdict::Kept);
        assert_eq!(
            why,
            "test_iou 0.7000 does not beat the deployed model's 0.8000 (higher is better) here"
        );
        assert_eq!(
            verdict("test_iou", Mode::Max, Some(0.9), Some(0.8), "").0,
            Verdict::Promoted
        );
    }

    #[test]
    fn a_score_that_is_no_number_is_the_worst() {
        for mode in [Mode::Min, Mode::Max] {
            let (v, why) = verdict("test_loss", mode, Some(f64::NAN), Some(0.3), "here");
            assert_eq!(v, Verdict::Kept, "{why}");
            assert_eq!(
                why,
                "test_loss of this model is not a number (NaN or infinite), which beats nothing (the deployed \
                 model's: 0.3000) here"
            );
            assert_eq!(verdict("test_loss", mode, None, Some(0.3), "").0, Verdict::Kept);
            let (v, why) = verdict("test_loss", mode, Some(0.3), None, "here");
            assert_eq!(v, Verdict::Promoted, "{why}");
            assert_eq!(
                why,
                "test_loss 0.3000 beats the deployed model's, which is not a number (NaN or infinite), here"
            );
            assert_eq!(
                verdict("test_loss", mode, Some(0.3), Some(f64::INFINITY), "").0,
                Verdict::Promoted
            );
            assert_eq!(verdict("test_loss", mode, None, None, "").0, Verdict::Kept);
        }
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
        assert_eq!(r.blocked, Some(Blocked::NotComparable));
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
        assert!(!text.contains("blocked") && !text.contains("warnings") && !text.contains("batch_created_at"));
        let mut r2 = r.clone();
        (r2.blocked, r2.warnings) = (Some(Blocked::ExportFailed), vec!["w".into()]);
        r2.decision = Verdict::Interrupted;
        let text = serde_json::to_string(&r2).unwrap();
        assert!(text.contains(r#""decision":"interrupted""#) && text.contains(r#""blocked":"export_failed""#));
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r2);
        // As the tb before `blocked`, `warnings` and `batch_created_at` wrote it.
        let older = r#"{"version": 1, "at": "2026-11-23T07:02:11Z", "dir": "/srv/deployed", "decision": "kept",
            "forced": false, "why": "w", "metric": "val_loss", "mode": "min", "compared_on": null,
            "re_evaluated": false, "candidate": {"batch": "b2", "job": "a", "score": null, "logged": 0.2,
            "checkpoint_sha256": "9b0e"}, "deployed": null, "current": null}"#;
        let old: Record = serde_json::from_str(older).unwrap();
        assert_eq!((old.blocked, old.warnings.len()), (None, 0));
        assert_eq!(old.candidate.unwrap().batch_created_at, None);
        let line = describe(&r);
        assert_eq!(
            line,
            "deploy: kept the deployed model (a of batch b1) over a of batch b2: why"
        );
    }
}
