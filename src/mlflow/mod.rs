//! The night in MLflow, from the supervisor, with no SDK in the job: each
//! job one run (created when it starts, its metrics streamed while it runs
//! from whatever source it writes, its status and artifacts set when it
//! ends), under one parent run of the batch that gets the report.
//!
//! Idempotent: `mlflow.json` in the batch directory names each job's run
//! and the last step of each metric sent; a run that file does not know is
//! looked for by its `tb.job_id` tag before one is created, and what the
//! server already has of a run (its latest step per metric) is never sent
//! again — after a SIGKILL and `tb resume`, or on `tb retry` (a retry's
//! attempts are one run, its `tb.attempt` tag updated).
//!
//! Never costs the night: a server that is down or slow is warned about
//! once; what was not sent stays in the job directories and goes out when
//! the server answers, or with `tb mlflow-sync`.

pub mod client;

pub use crate::batch::mlflow::{Artifact, MlflowSpec, check_uri};

use crate::metrics::{Reader, SourceChoice};
use crate::run::{BatchDir, JobState, Status};
use chrono::{DateTime, Utc};
use client::{Client, KeyValue, Metric, RunInfo};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The MLflow status of a job's run.
pub fn run_status(s: Status) -> Option<&'static str> {
    match s {
        Status::Pending => None,
        Status::Running => Some("RUNNING"),
        Status::Succeeded => Some("FINISHED"),
        Status::Failed | Status::Oom | Status::Timeout | Status::Lost => Some("FAILED"),
        Status::Cancelled | Status::Pruned => Some("KILLED"),
    }
}

/// The format version of `mlflow.json`.
const VERSION: u32 = 1;
const LEDGER: &str = "mlflow.json";

/// `mlflow.json`: what was sent where.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Ledger {
    version: u32,
    tracking_uri: String,
    /// The experiment's name, as the spec gave it.
    #[serde(default)]
    experiment: String,
    experiment_id: Option<String>,
    parent_run_id: Option<String>,
    /// The parent run's end was sent.
    #[serde(default)]
    parent_ended: bool,
    #[serde(default)]
    runs: BTreeMap<String, RunLedger>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RunLedger {
    run_id: String,
    /// The params went up.
    #[serde(default)]
    params: bool,
    /// Per metric, the last step sent.
    #[serde(default)]
    sent: BTreeMap<String, i64>,
    /// The attempt, status and stop reason last set on the run.
    #[serde(default)]
    attempt: u32,
    #[serde(default)]
    status: String,
    /// The attempt whose artifacts went up.
    #[serde(default)]
    artifacts_of: u32,
}

/// One batch's export.
pub struct Exporter {
    client: Client,
    spec: MlflowSpec,
    dir: BatchDir,
    batch_name: String,
    ledger: Ledger,
    readers: HashMap<String, Reader>,
    /// Runs checked against the server in this process (their latest
    /// points read), by job.
    runs: HashMap<String, RunInfo>,
    /// When the batch was created: the timestamps' base for a job with no
    /// start recorded.
    created_at: DateTime<Utc>,
    /// Said once that the server does not answer.
    warned: bool,
    /// Said once that the server takes no artifacts through its API.
    said_no_artifacts: bool,
    failing_since: Option<Instant>,
    retry_at: Option<Instant>,
    /// What was sent in this process: runs created, points.
    pub created: usize,
    pub points: usize,
}

/// After a failed round, how long before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(30);

impl Exporter {
    pub fn new(spec: &MlflowSpec, dir: &BatchDir, batch_name: &str) -> anyhow::Result<Exporter> {
        let path = dir.path.join(LEDGER);
        let mut ledger: Ledger = if path.exists() {
            crate::run::read_version(&path, VERSION)?
        } else {
            Ledger::default()
        };
        if ledger.tracking_uri != spec.tracking_uri || ledger.experiment != spec.experiment {
            // Another server or experiment: what was sent to the old one
            // says nothing.
            ledger = Ledger::default();
        }
        ledger.version = VERSION;
        ledger.tracking_uri = spec.tracking_uri.clone();
        ledger.experiment = spec.experiment.clone();
        Ok(Exporter {
            client: Client::new(&spec.tracking_uri)?,
            spec: spec.clone(),
            dir: dir.clone(),
            batch_name: batch_name.to_string(),
            ledger,
            readers: HashMap::new(),
            runs: HashMap::new(),
            created_at: dir.read_batch().map(|b| b.created_at).unwrap_or_else(|_| Utc::now()),
            warned: false,
            said_no_artifacts: false,
            failing_since: None,
            retry_at: None,
            created: 0,
            points: 0,
        })
    }

    /// One pass over `jobs`: runs created, new points sent, ended runs
    /// closed. A server that does not answer ends the pass (and is warned
    /// about once); whether everything went.
    pub async fn round(&mut self, jobs: &[String], live: bool) -> bool {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let result = self.try_round(jobs, live).await;
        self.outcome(result)
    }

    /// Everything, now: each job as it stands, and the parent run's report
    /// and end (`batch_ended`: its status, once the batch is over).
    pub async fn flush(&mut self, jobs: &[String], batch_ended: Option<&str>) -> bool {
        self.retry_at = None;
        let result = async {
            self.try_round(jobs, false).await?;
            if let Some(status) = batch_ended {
                self.end_parent(status).await?;
            }
            anyhow::Ok(())
        }
        .await;
        self.outcome(result)
    }

    fn outcome(&mut self, result: anyhow::Result<()>) -> bool {
        let saved = self.save();
        match result.and(saved) {
            Ok(()) => {
                if self.failing_since.take().is_some() {
                    tracing::info!(
                        "MLflow at {} answers again: what was kept went up",
                        self.spec.tracking_uri
                    );
                }
                self.retry_at = None;
                true
            }
            Err(e) => {
                self.failing_since.get_or_insert_with(Instant::now);
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        "{e:#}; the night goes on: what is not in MLflow stays in the job directories, goes up when the \
                         server answers, or with `tb mlflow-sync {}`",
                        self.dir.id
                    );
                } else {
                    tracing::debug!("mlflow: {e:#}");
                }
                false
            }
        }
    }

    fn save(&self) -> anyhow::Result<()> {
        crate::run::write_json(&self.dir.path.join(LEDGER), &self.ledger)
    }

    async fn experiment(&mut self) -> anyhow::Result<String> {
        if let Some(id) = &self.ledger.experiment_id {
            return Ok(id.clone());
        }
        let id = self.client.experiment(&self.spec.experiment).await?;
        self.ledger.experiment_id = Some(id.clone());
        Ok(id)
    }

    /// The batch's parent run: the one recorded, else found by its tag,
    /// else created.
    async fn parent(&mut self) -> anyhow::Result<String> {
        if let Some(id) = &self.ledger.parent_run_id {
            return Ok(id.clone());
        }
        let experiment = self.experiment().await?;
        let found = self
            .client
            .runs_tagged(&experiment, "tb.batch_id", &self.dir.id)
            .await?;
        let id = match found.into_iter().find(|r| r.data.tag("tb.job").is_none()) {
            Some(r) => r.info.run_id,
            None => {
                let started = self
                    .dir
                    .read_batch()
                    .map(|b| b.created_at)
                    .unwrap_or_else(|_| Utc::now());
                let tags = vec![
                    KeyValue::new("tb.batch_id", self.dir.id.clone()),
                    KeyValue::new("tb.batch", self.batch_name.clone()),
                    KeyValue::new("mlflow.user", "tb"),
                    KeyValue::new("mlflow.source.name", "tb"),
                ];
                self.created += 1;
                self.client
                    .create_run(&experiment, &self.dir.id, millis(started), &tags)
                    .await?
                    .info
                    .run_id
            }
        };
        self.ledger.parent_run_id = Some(id.clone());
        Ok(id)
    }

    /// Every job in turn; one job the server refuses does not hold up the
    /// others (a server that does not answer ends the round: the rest
    /// would not go either). The first failure, if any.
    async fn try_round(&mut self, jobs: &[String], live: bool) -> anyhow::Result<()> {
        self.parent().await?;
        let mut first: Option<anyhow::Error> = None;
        for job in jobs {
            if let Err(e) = self.sync_job(job, live).await {
                // Checked again next time: what the server holds may
                // differ from what this process believes.
                self.runs.remove(job);
                let unreachable = e
                    .downcast_ref::<client::Error>()
                    .is_some_and(client::Error::is_unreachable);
                first.get_or_insert(e.context(format!("job {job}")));
                if unreachable {
                    break;
                }
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The job's run, as it stands: created (with its params) once the job
    /// started, its new points, its attempt and status, and once it ended,
    /// its end and artifacts. What went up is written down call by call.
    async fn sync_job(&mut self, job: &str, live: bool) -> anyhow::Result<()> {
        let state = self.dir.read_job_state(job)?;
        let Some(status) = run_status(state.status()) else {
            return Ok(());
        };
        if state.started_at().is_none() && state.attempts().is_empty() {
            // Ended without ever running (cancelled before it started).
            return Ok(());
        }
        let ended = state.status().is_final();
        let entry = self.ledger.runs.get(job).cloned().unwrap_or_default();
        if ended && entry.attempt == state.attempt() && entry.status == status && entry.artifacts_of == state.attempt()
        {
            // All of it went up already; nothing is left to read.
            self.readers.remove(job);
            return Ok(());
        }
        let run = self.run_of(job, &state).await?;
        // Points of a running job's last epoch wait: it may still change.
        let metrics = self.new_points(job, &state, ended || !live);
        let mut tags = vec![
            KeyValue::new("tb.attempt", state.attempt().to_string()),
            KeyValue::new("tb.status", state.status().to_string()),
        ];
        if let Some(id) = state.identity() {
            tags.push(KeyValue::new("tb.identity", id));
        }
        if let Some(image) = state.image_id() {
            tags.push(KeyValue::new("tb.image_id", image));
        }
        if let Some(reason) = stop_reason(&self.dir, job, &state) {
            tags.push(KeyValue::new("tb.stop_reason", reason));
        }
        let entry = self.ledger.runs.get(job).cloned().unwrap_or_default();
        let params = if entry.params {
            Vec::new()
        } else {
            params(&self.dir, job)?
        };
        let changed = entry.attempt != state.attempt() || entry.status != status;
        if !metrics.is_empty() || !params.is_empty() || changed {
            self.client.log(&run.run_id, &metrics, &params, &tags).await?;
            let e = self.ledger.runs.get_mut(job).expect("recorded by run_of");
            e.params = true;
            for m in &metrics {
                let last = e.sent.entry(m.key.clone()).or_insert(i64::MIN);
                *last = (*last).max(m.step);
            }
            self.points += metrics.len();
        }
        if changed {
            let end = if ended { state.finished_at().map(millis) } else { None };
            self.client.update_run(&run.run_id, status, end).await?;
            let e = self.ledger.runs.get_mut(job).expect("recorded by run_of");
            e.attempt = state.attempt();
            e.status = status.to_string();
        }
        if ended && entry.artifacts_of != state.attempt() {
            self.upload_artifacts(job, &run).await?;
            let e = self.ledger.runs.get_mut(job).expect("recorded by run_of");
            e.artifacts_of = state.attempt();
        }
        Ok(())
    }

    /// The job's run: the one this process checked, else the one recorded
    /// (if the server still has it), else the one tagged with its id, else
    /// a new one. What the server holds of it (its latest step per metric)
    /// is read when it is checked, so that no point goes up twice.
    async fn run_of(&mut self, job: &str, state: &JobState) -> anyhow::Result<RunInfo> {
        if let Some(info) = self.runs.get(job) {
            return Ok(info.clone());
        }
        let experiment = self.experiment().await?;
        let parent = self.parent().await?;
        let job_id = format!("{}/{job}", self.dir.id);
        let known = self.ledger.runs.get(job).map(|r| r.run_id.clone());
        let run = match known {
            Some(id) => match self.client.get_run(&id).await {
                Ok(r) if r.info.lifecycle_stage != "deleted" => Some(r),
                Ok(_) => None,
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let run = match run {
            Some(r) => r,
            None => match self
                .client
                .runs_tagged(&experiment, "tb.job_id", &job_id)
                .await?
                .into_iter()
                .next()
            {
                Some(r) => r,
                None => {
                    let started = state.started_at().unwrap_or_else(Utc::now);
                    let tags = vec![
                        KeyValue::new("tb.job_id", job_id),
                        KeyValue::new("tb.job", job),
                        KeyValue::new("tb.batch", self.batch_name.clone()),
                        KeyValue::new("tb.batch_id", self.dir.id.clone()),
                        KeyValue::new("mlflow.parentRunId", parent),
                        KeyValue::new("mlflow.user", "tb"),
                        KeyValue::new("mlflow.source.name", "tb"),
                    ];
                    self.created += 1;
                    self.client.create_run(&experiment, job, millis(started), &tags).await?
                }
            },
        };
        let entry = self.ledger.runs.entry(job.to_string()).or_default();
        if entry.run_id != run.info.run_id {
            *entry = RunLedger {
                run_id: run.info.run_id.clone(),
                ..RunLedger::default()
            };
        }
        // Sent by an earlier process that died before writing it down (a
        // run found or read here carries its latest point per metric).
        for p in &run.data.metrics {
            let last = entry.sent.entry(p.key.clone()).or_insert(i64::MIN);
            *last = (*last).max(p.step);
        }
        entry.params |= !run.data.params.is_empty();
        self.runs.insert(job.to_string(), run.info.clone());
        Ok(run.info)
    }

    /// The job's points not sent yet: each metric by epoch (by step for a
    /// job that logs no epochs); unless `whole`, not its last epoch, which
    /// may still change. A point's timestamp is derived from the attempt's
    /// start and its step, so that one sent twice (an answer lost on the
    /// way back) is the same point, which the server keeps once.
    fn new_points(&mut self, job: &str, state: &JobState, whole: bool) -> Vec<Metric> {
        let spec = self
            .dir
            .read_job_file(job)
            .map(|f| f.spec.metrics.source)
            .unwrap_or(SourceChoice::Auto);
        let reader = self
            .readers
            .entry(job.to_string())
            .or_insert_with(|| Reader::new(&self.dir.job_dir(job), spec));
        reader.poll(!whole);
        let m = reader.metrics();
        let sent = self.ledger.runs.get(job).map(|r| &r.sent);
        let base = millis(state.started_at().unwrap_or(self.created_at));
        let mut out = Vec::new();
        for (name, series) in &m.epochs {
            let Some(key) = metric_key(name) else { continue };
            let from = sent.and_then(|s| s.get(&key)).copied().unwrap_or(i64::MIN);
            let upto = if whole {
                series.len()
            } else {
                series.len().saturating_sub(1)
            };
            for &(x, v) in &series[..upto] {
                let step = i64::try_from(x).unwrap_or(i64::MAX);
                if step > from {
                    out.push(Metric {
                        key: key.clone(),
                        value: v,
                        timestamp: base.saturating_add(step.clamp(0, 1 << 40)),
                        step,
                    });
                }
            }
        }
        out
    }

    async fn upload_artifacts(&mut self, job: &str, run: &RunInfo) -> anyhow::Result<()> {
        let jd = self.dir.job_dir(job);
        let mut files: Vec<(std::path::PathBuf, String)> = Vec::new();
        if self.spec.artifacts.contains(&Artifact::Logs) {
            for f in ["stdout.log", "stderr.log"] {
                files.push((jd.join(f), format!("logs/{f}")));
            }
        }
        if self.spec.artifacts.contains(&Artifact::BestCheckpoint) {
            files.push((jd.join("checkpoints/best.ckpt"), "checkpoints/best.ckpt".into()));
        }
        for (path, name) in files {
            let Ok(file) = tokio::fs::File::open(&path).await else {
                continue;
            };
            let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
            match self.client.upload(run, &name, body, len).await {
                Ok(()) => {}
                Err(e @ client::Error::NoArtifactProxy { .. }) => {
                    // A setting of the server's, not a passing fault: said
                    // once, and the metrics still go up.
                    self.no_artifacts(&e);
                    return Ok(());
                }
                Err(e) => return Err(anyhow::Error::new(e).context(format!("failed to upload {}", path.display()))),
            }
        }
        Ok(())
    }

    fn no_artifacts(&mut self, e: &client::Error) {
        if !self.said_no_artifacts {
            self.said_no_artifacts = true;
            tracing::warn!("{e}; tb sends metrics, params and tags, and no artifacts");
        }
    }

    /// The batch is over: its report on the parent run, and the parent's end.
    async fn end_parent(&mut self, status: &str) -> anyhow::Result<()> {
        if self.ledger.parent_ended {
            return Ok(());
        }
        let id = self.parent().await?;
        let run = self.client.get_run(&id).await?;
        if self.spec.artifacts.contains(&Artifact::Report) {
            for f in ["report.html", "report.md", "report.csv", "report.json"] {
                let path = self.dir.path.join(f);
                if let Ok(bytes) = tokio::fs::read(&path).await {
                    let len = bytes.len() as u64;
                    match self.client.upload(&run.info, f, bytes.into(), len).await {
                        Ok(()) => {}
                        Err(e @ client::Error::NoArtifactProxy { .. }) => {
                            self.no_artifacts(&e);
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        let end = self
            .dir
            .read_batch()
            .ok()
            .and_then(|b| b.finished_at)
            .unwrap_or_else(Utc::now);
        self.client.update_run(&id, status, Some(millis(end))).await?;
        self.ledger.parent_ended = true;
        Ok(())
    }

    /// The batch runs again (`tb retry`, `tb resume`): its parent run too.
    pub fn reopen(&mut self) {
        self.ledger.parent_ended = false;
    }
}

/// The export while a batch runs: a round every few seconds over the jobs
/// that started, in a task of its own (a slow server never holds up the
/// dispatcher), then everything once the batch is over.
pub struct Following {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Exporter>,
    jobs: Vec<String>,
}

/// How often a running batch's new points go up.
const EVERY: Duration = Duration::from_secs(5);

/// How long the end of a batch waits for MLflow, at most.
const FLUSH_WITHIN: Duration = Duration::from_secs(120);

impl Following {
    pub fn start(spec: &MlflowSpec, dir: &BatchDir, batch_name: &str, jobs: Vec<String>) -> anyhow::Result<Following> {
        let mut exporter = Exporter::new(spec, dir, batch_name)?;
        exporter.reopen();
        tracing::info!(
            "sending the batch to MLflow at {} (experiment {})",
            spec.tracking_uri,
            spec.experiment
        );
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let names = jobs.clone();
        let task = tokio::spawn(async move {
            loop {
                // A round a slow server drags out is cut short when the
                // batch ends: what went up is written down call by call.
                tokio::select! {
                    _ = exporter.round(&names, true) => {}
                    _ = stopped.changed() => return exporter,
                }
                tokio::select! {
                    _ = tokio::time::sleep(EVERY) => {}
                    _ = stopped.changed() => return exporter,
                }
            }
        });
        Ok(Following { stop, task, jobs })
    }

    /// The batch is over (its report written): the rest goes up, and the
    /// parent run ends with `status`.
    pub async fn finish(self, status: &str) {
        let _ = self.stop.send(true);
        let Ok(mut exporter) = self.task.await else {
            tracing::warn!("the MLflow export stopped early; `tb mlflow-sync` sends the batch");
            return;
        };
        // At most FLUSH_WITHIN, and not past Ctrl-C or SIGTERM: the batch
        // is over.
        tracing::info!(
            "sending the rest to MLflow at {} (at most {}s; Ctrl-C skips it)",
            exporter.spec.tracking_uri,
            FLUSH_WITHIN.as_secs()
        );
        let mut signals = crate::signal::Signals::new().unwrap_or_else(|_| crate::signal::Signals::none());
        let flushed = tokio::select! {
            f = tokio::time::timeout(FLUSH_WITHIN, exporter.flush(&self.jobs, Some(status))) => f,
            signal = signals.recv() => {
                tracing::warn!("{signal}: `tb mlflow-sync {}` sends the rest to MLflow", exporter.dir.id);
                return;
            }
        };
        match flushed {
            Ok(true) => tracing::info!(
                "in MLflow: experiment {} at {} ({} run(s) created, {} point(s) sent)",
                exporter.spec.experiment,
                exporter.spec.tracking_uri,
                exporter.created,
                exporter.points
            ),
            Ok(false) => tracing::warn!(
                "not all of the batch is in MLflow at {}; `tb mlflow-sync {}` sends the rest",
                exporter.spec.tracking_uri,
                exporter.dir.id
            ),
            Err(_) => tracing::warn!(
                "MLflow took over {}s to take the batch; `tb mlflow-sync {}` sends the rest",
                FLUSH_WITHIN.as_secs(),
                exporter.dir.id
            ),
        }
    }
}

/// The MLflow status of a batch that ended so.
pub fn batch_status(interrupted: bool, all_fine: bool) -> &'static str {
    match (interrupted, all_fine) {
        (true, _) => "KILLED",
        (false, true) => "FINISHED",
        (false, false) => "FAILED",
    }
}

/// Why the job's training stopped, as its `result.json` says (`pruned` for
/// a pruned job, whose trainer saw only an interruption).
fn stop_reason(dir: &BatchDir, job: &str, state: &JobState) -> Option<String> {
    if state.status() == Status::Pruned {
        return Some("pruned".into());
    }
    #[derive(Deserialize)]
    struct Result {
        stop_reason: Option<String>,
    }
    let bytes = std::fs::read(dir.job_dir(job).join("result.json")).ok()?;
    serde_json::from_slice::<Result>(&bytes).ok()?.stop_reason
}

/// The job's configuration as params: swept keys first, then every other
/// key of `job.json` the report compares on (`train.*`, `args.*`, `env.*`,
/// image, resources, command). Never a `pass_env` value: job.json has only
/// their names.
fn params(dir: &BatchDir, job: &str) -> anyhow::Result<Vec<KeyValue>> {
    let doc: serde_json::Value = dir.read_job_json(job)?;
    let config = crate::report::compare::config_of(&doc);
    let swept: Vec<String> = doc
        .get("swept")
        .and_then(|s| s.as_object())
        .map(|s| s.keys().cloned().collect())
        .unwrap_or_default();
    let mut out: Vec<KeyValue> = Vec::new();
    let mut push = |k: &str, v: &serde_json::Value| {
        if let Some(key) = metric_key(k)
            && !out.iter().any(|p| p.key == key)
        {
            out.push(KeyValue::new(key, crate::report::fmt_swept(v)));
        }
    };
    for k in &swept {
        if let Some(v) = config.get(k) {
            push(k, v);
        }
    }
    for (k, v) in &config {
        push(k, v);
    }
    Ok(out)
}

/// A name MLflow takes as a metric, param or tag key (letters, digits,
/// `_ - . space : /`, at most 250 characters, no empty path part); others
/// become `_`.
fn metric_key(name: &str) -> Option<String> {
    let mapped: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "_-. :/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // A normalised relative path, as the server checks: no empty, `.` or
    // `..` part, no leading or trailing `/`.
    let parts: Vec<&str> = mapped
        .split('/')
        .filter(|p| !p.is_empty())
        .map(|p| if p == "." || p == ".." { "_" } else { p })
        .collect();
    let key: String = parts.join("/").chars().take(250).collect();
    let key = key.trim_end_matches('/').to_string();
    (!key.is_empty()).then_some(key)
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_mlflows() {
        assert_eq!(run_status(Status::Succeeded), Some("FINISHED"));
        for s in [Status::Failed, Status::Oom, Status::Timeout, Status::Lost] {
            assert_eq!(run_status(s), Some("FAILED"));
        }
        assert_eq!(run_status(Status::Cancelled), Some("KILLED"));
        assert_eq!(run_status(Status::Pruned), Some("KILLED"));
        assert_eq!(run_status(Status::Running), Some("RUNNING"));
        assert_eq!(run_status(Status::Pending), None);
    }

    #[test]
    fn keys_are_what_mlflow_takes() {
        assert_eq!(metric_key("val/loss").as_deref(), Some("val/loss"));
        assert_eq!(metric_key("lr-Adam@0").as_deref(), Some("lr-Adam_0"));
        assert_eq!(metric_key("a//b").as_deref(), Some("a/b"));
        assert_eq!(metric_key("/x").as_deref(), Some("x"));
        assert_eq!(metric_key("").as_deref(), None);
        assert_eq!(metric_key("val/").as_deref(), Some("val"));
        assert_eq!(metric_key("a/./b/../c").as_deref(), Some("a/_/b/_/c"));
        assert_eq!(metric_key("..").as_deref(), Some("_"));
        assert_eq!(metric_key(&"k".repeat(300)).map(|k| k.len()), Some(250));
    }
}
