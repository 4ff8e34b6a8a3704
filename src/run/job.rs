//! A job's state (`jobs/<job>/state.json`, docs/run-directory.md) and the named
//! transitions that are the only way to change it: an attempt begins, is
//! queued, starts, ends; a job is withdrawn, cancelled before it started,
//! or lost. Each transition leaves the fields consistent for its status, so
//! that impossible combinations (a pending job with an exit code, a running
//! one with a finish time) cannot be written.

use crate::durable::VERSION;
use crate::gpu::Fraction;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A job's fate, as `state.json` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Running,
    Succeeded,
    Failed,
    Oom,
    Timeout,
    Cancelled,
    /// The container vanished, or its engine or cluster lost it.
    Lost,
    /// Stopped early by the sweep's pruning rule: it was not going to win.
    Pruned,
}

impl Status {
    /// Every status, in the order reports list them.
    pub const ALL: [Status; 9] = [
        Status::Pending,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Oom,
        Status::Timeout,
        Status::Cancelled,
        Status::Lost,
        Status::Pruned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Oom => "oom",
            Status::Timeout => "timeout",
            Status::Cancelled => "cancelled",
            Status::Lost => "lost",
            Status::Pruned => "pruned",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, Status::Pending | Status::Running)
    }

    /// Ended as well as a job can: it succeeded, or was pruned (a sweep's
    /// losing trial stopped on purpose is not a failure of the batch).
    pub fn is_fine(self) -> bool {
        matches!(self, Status::Succeeded | Status::Pruned)
    }

    /// Whether an attempt that ended so runs again under `[batch] retries`:
    /// a failure, an OOM, a lost run, and a timeout when the batch says
    /// `continue_on_timeout`. A cancelled or pruned job is never retried on
    /// its own.
    pub fn is_retryable(self, continue_on_timeout: bool) -> bool {
        matches!(self, Status::Failed | Status::Oom | Status::Lost) || (self == Status::Timeout && continue_on_timeout)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an attempt runs, as the backend that runs it knows it: what it
/// needs to follow or stop the run again after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunHandle {
    /// A container on this host's Docker engine.
    Container { id: String },
    /// A Slurm job; `container` is the container `tb exec` ran on its node,
    /// once known.
    Slurm { job_id: String, container: Option<String> },
}

impl RunHandle {
    /// The container the attempt runs in, wherever that is.
    pub fn container_id(&self) -> Option<&str> {
        match self {
            RunHandle::Container { id } => Some(id),
            RunHandle::Slurm { container, .. } => container.as_deref(),
        }
    }

    pub fn slurm_job_id(&self) -> Option<&str> {
        match self {
            RunHandle::Slurm { job_id, .. } => Some(job_id),
            RunHandle::Container { .. } => None,
        }
    }

    /// `container 0123456789ab` or `Slurm job 17`, for messages.
    pub fn describe(&self) -> String {
        match self {
            RunHandle::Container { id } => format!("container {}", short(id)),
            RunHandle::Slurm { job_id, .. } => format!("Slurm job {job_id}"),
        }
    }

    /// The handle as `state.json` spells it: `container_id`, `slurm_job_id`.
    fn from_fields(container_id: Option<String>, slurm_job_id: Option<String>) -> Option<RunHandle> {
        match (slurm_job_id, container_id) {
            (Some(job_id), container) => Some(RunHandle::Slurm { job_id, container }),
            (None, Some(id)) => Some(RunHandle::Container { id }),
            (None, None) => None,
        }
    }
}

/// The first 12 characters of a container id, as `docker ps` shows it.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// How an attempt ended. A failed job is an outcome, not an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: Option<String>,
    /// The container that ran it, if one was created.
    pub container_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
}

impl Outcome {
    /// An attempt that ended before anything ran.
    pub fn failed_before_start(error: String, container_id: Option<String>) -> Outcome {
        Outcome {
            status: Status::Failed,
            exit_code: None,
            oom_killed: false,
            error: Some(error),
            container_id,
            started_at: None,
            finished_at: Utc::now(),
        }
    }
}

/// `jobs/<job>/state.json`. Read its fields through the getters; change
/// them only through the transitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "Wire", into = "Wire")]
pub struct JobState {
    status: Status,
    attempt: u32,
    exit_code: Option<i64>,
    oom_killed: bool,
    error: Option<String>,
    handle: Option<RunHandle>,
    image_id: Option<String>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    gpus: Vec<String>,
    gpu_share: Option<Fraction>,
    identity: Option<String>,
    reused_from: Option<PathBuf>,
    waits_for: Option<PathBuf>,
    attempts: Vec<AttemptRecord>,
}

/// One ended attempt, as kept in `state.json` once the next one starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub status: Status,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The Slurm job that ran it, on the Slurm backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// The share of its one GPU it held, if it held a share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_share: Option<Fraction>,
}

/// The file format of `state.json`, field for field (docs/run-directory.md): what
/// scripts read, and what every version-1 file written before still holds.
#[derive(Serialize, Deserialize)]
struct Wire {
    version: u32,
    status: Status,
    attempt: u32,
    exit_code: Option<i64>,
    oom_killed: bool,
    error: Option<String>,
    container_id: Option<String>,
    image_id: Option<String>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    gpus: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gpu_share: Option<Fraction>,
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    reused_from: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    waits_for: Option<PathBuf>,
    #[serde(default)]
    slurm_job_id: Option<String>,
    #[serde(default)]
    attempts: Vec<AttemptRecord>,
}

impl From<Wire> for JobState {
    fn from(w: Wire) -> JobState {
        JobState {
            status: w.status,
            attempt: w.attempt,
            exit_code: w.exit_code,
            oom_killed: w.oom_killed,
            error: w.error,
            handle: RunHandle::from_fields(w.container_id, w.slurm_job_id),
            image_id: w.image_id,
            started_at: w.started_at,
            finished_at: w.finished_at,
            gpus: w.gpus,
            gpu_share: w.gpu_share,
            identity: w.identity,
            reused_from: w.reused_from,
            waits_for: w.waits_for,
            attempts: w.attempts,
        }
    }
}

impl From<JobState> for Wire {
    fn from(s: JobState) -> Wire {
        Wire {
            version: VERSION,
            status: s.status,
            attempt: s.attempt,
            exit_code: s.exit_code,
            oom_killed: s.oom_killed,
            error: s.error,
            container_id: s.handle.as_ref().and_then(|h| h.container_id()).map(String::from),
            image_id: s.image_id,
            started_at: s.started_at,
            finished_at: s.finished_at,
            gpus: s.gpus,
            gpu_share: s.gpu_share,
            identity: s.identity,
            reused_from: s.reused_from,
            waits_for: s.waits_for,
            slurm_job_id: s.handle.as_ref().and_then(|h| h.slurm_job_id()).map(String::from),
            attempts: s.attempts,
        }
    }
}

impl Default for JobState {
    fn default() -> Self {
        JobState::pending()
    }
}

/// Reading.
impl JobState {
    /// A job that has not run yet.
    pub fn pending() -> JobState {
        JobState {
            status: Status::Pending,
            attempt: 0,
            exit_code: None,
            oom_killed: false,
            error: None,
            handle: None,
            image_id: None,
            started_at: None,
            finished_at: None,
            gpus: Vec::new(),
            gpu_share: None,
            identity: None,
            reused_from: None,
            waits_for: None,
            attempts: Vec::new(),
        }
    }

    pub fn status(&self) -> Status {
        self.status
    }
    /// The current attempt, 1-based; 0 before the first.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    pub fn exit_code(&self) -> Option<i64> {
        self.exit_code
    }
    pub fn oom_killed(&self) -> bool {
        self.oom_killed
    }
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
    pub fn handle(&self) -> Option<&RunHandle> {
        self.handle.as_ref()
    }
    pub fn container_id(&self) -> Option<&str> {
        self.handle.as_ref().and_then(|h| h.container_id())
    }
    pub fn image_id(&self) -> Option<&str> {
        self.image_id.as_deref()
    }
    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        self.started_at
    }
    pub fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.finished_at
    }
    /// The GPU ids the current attempt was given.
    pub fn gpus(&self) -> &[String] {
        &self.gpus
    }
    /// The share of its one GPU the current attempt holds, if it holds a
    /// share rather than whole GPUs.
    pub fn gpu_share(&self) -> Option<Fraction> {
        self.gpu_share
    }
    /// sha256 of everything that decides the job's result (see `identity`).
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }
    /// Where the result came from when `--skip-done` found it already done.
    pub fn reused_from(&self) -> Option<&Path> {
        self.reused_from.as_deref()
    }
    /// The job directory, in another batch, of the run of the same job
    /// that `--skip-done` holds this one back for.
    pub fn waits_for(&self) -> Option<&Path> {
        self.waits_for.as_deref()
    }
    /// How each earlier attempt ended, oldest first.
    pub fn attempts(&self) -> &[AttemptRecord] {
        &self.attempts
    }

    /// Wall time of the current attempt so far (or in all, once finished).
    pub fn elapsed(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        let start = self.started_at?;
        Some(self.finished_at.unwrap_or(now) - start)
    }

    /// The current attempt was handed to a backend but never started.
    pub fn never_started(&self) -> bool {
        self.status == Status::Pending && self.started_at.is_none()
    }

    /// The current attempt as a record of history.
    fn record(&self) -> AttemptRecord {
        AttemptRecord {
            attempt: self.attempt,
            status: self.status,
            exit_code: self.exit_code,
            oom_killed: self.oom_killed,
            error: self.error.clone(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            container_id: self.container_id().map(String::from),
            slurm_job_id: self.handle.as_ref().and_then(|h| h.slurm_job_id()).map(String::from),
            gpus: self.gpus.clone(),
            gpu_share: self.gpu_share,
        }
    }

    /// Clears what belonged to the current attempt's run.
    fn clear_run(&mut self) {
        self.exit_code = None;
        self.oom_killed = false;
        self.error = None;
        self.handle = None;
        self.started_at = None;
        self.finished_at = None;
        self.gpus.clear();
        self.gpu_share = None;
    }
}

/// The transitions.
impl JobState {
    /// A new attempt begins, on `image_id`: the current one goes to history
    /// if it ran. An attempt that was begun but never started keeps its
    /// number, so that numbers count runs, not launches.
    pub fn begin_attempt(&mut self, image_id: Option<String>) {
        if self.attempt == 0 || !self.never_started() {
            if self.attempt > 0 && !self.attempts.iter().any(|a| a.attempt == self.attempt) {
                self.attempts.push(self.record());
            }
            self.attempt += 1;
        }
        self.status = Status::Pending;
        self.clear_run();
        self.waits_for = None;
        if image_id.is_some() {
            self.image_id = image_id;
        }
    }

    /// Handed to a scheduler that starts it later (Slurm's queue): still
    /// pending, but followable by `handle`.
    pub fn queued(&mut self, handle: RunHandle) {
        self.handle = Some(handle);
    }

    /// The attempt runs, since `at`, on `gpus` (whole, or `gpu_share` of
    /// the one).
    pub fn started(&mut self, handle: RunHandle, at: DateTime<Utc>, gpus: Vec<String>, gpu_share: Option<Fraction>) {
        self.status = Status::Running;
        self.handle = Some(handle);
        self.started_at = Some(at);
        self.finished_at = None;
        self.gpus = gpus;
        self.gpu_share = gpu_share;
    }

    /// The attempt ended as `outcome` says.
    pub fn ended(&mut self, outcome: &Outcome) {
        self.status = outcome.status;
        self.exit_code = outcome.exit_code;
        self.oom_killed = outcome.oom_killed;
        self.error = outcome.error.clone();
        if let Some(id) = &outcome.container_id {
            match &mut self.handle {
                Some(RunHandle::Slurm { container, .. }) => *container = Some(id.clone()),
                _ => self.handle = Some(RunHandle::Container { id: id.clone() }),
            }
        }
        self.started_at = outcome.started_at.or(self.started_at);
        self.finished_at = Some(outcome.finished_at);
    }

    /// The attempt ended after a request to stop it (`tb cancel`, a
    /// pruning decision): `status` says which — unless it succeeded, when
    /// the request came too late to matter.
    pub fn stopped(&mut self, outcome: &Outcome, status: Status, why: &str) {
        self.ended(outcome);
        if self.status != Status::Succeeded {
            self.status = status;
            let code = self
                .exit_code
                .map(|c| format!("; exited with code {c}"))
                .unwrap_or_default();
            self.error = Some(format!("{why}{code}"));
        }
    }

    /// `tb cancel` came before the job started: it will not run.
    pub fn cancelled_before_start(&mut self, why: &str) {
        self.status = Status::Cancelled;
        self.clear_run();
        self.error = Some(why.to_string());
        self.finished_at = Some(Utc::now());
    }

    /// An attempt that was begun but never started is taken back: the job
    /// is again exactly as it was before (`before`, as it stood when the
    /// attempt began).
    pub fn withdraw(&mut self, before: JobState) {
        *self = before;
    }

    /// The run is gone, and a pruning decision had stopped it: it ended
    /// pruned, whatever it did after.
    pub fn pruned_while_away(&mut self, why: &str) {
        self.status = Status::Pruned;
        self.error = Some(format!("{why} (its run was gone when tb came back)"));
        self.finished_at = Some(Utc::now());
    }

    /// The run is gone and nobody can say how it ended.
    pub fn lost(&mut self, why: String) {
        self.status = Status::Lost;
        self.error = Some(why);
        self.finished_at = Some(Utc::now());
    }

    /// What the job's result depends on (see `identity`).
    pub fn identify(&mut self, identity: String) {
        self.identity = Some(identity);
    }

    /// `--skip-done` found the job already done in `origin` (whose state,
    /// when readable, is `done`): it succeeded without running.
    pub fn reused(&mut self, origin: PathBuf, done: Option<&JobState>) {
        if let Some(d) = done {
            self.exit_code = d.exit_code;
            self.started_at = d.started_at;
            self.finished_at = d.finished_at;
            self.image_id = d.image_id.clone();
        }
        self.status = Status::Succeeded;
        self.reused_from = Some(origin);
        self.waits_for = None;
    }

    /// `--skip-done` found the same job running in another batch, in
    /// `other`: it waits for that run rather than running twice.
    pub fn wait_for(&mut self, other: PathBuf) {
        self.waits_for = Some(other);
    }

    /// The run waited for ended without a result to reuse: it runs here.
    pub fn stop_waiting(&mut self) {
        self.waits_for = None;
    }

    /// `tb retry` is about to run the job again: a result reused from an
    /// earlier batch no longer stands for it.
    pub fn prepare_retry(&mut self) {
        self.reused_from = None;
        self.waits_for = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: Status, code: i64) -> Outcome {
        Outcome {
            status,
            exit_code: Some(code),
            oom_killed: false,
            error: (code != 0).then(|| format!("exited with code {code}")),
            container_id: Some("c1".into()),
            started_at: None,
            finished_at: Utc::now(),
        }
    }

    fn run_once(s: &mut JobState, status: Status, code: i64) {
        s.begin_attempt(Some("sha256:i".into()));
        s.started(
            RunHandle::Container { id: "c1".into() },
            Utc::now(),
            vec!["0".into()],
            None,
        );
        s.ended(&outcome(status, code));
    }

    #[test]
    fn an_attempt_begins_starts_and_ends() {
        let mut s = JobState::pending();
        s.begin_attempt(Some("sha256:i".into()));
        assert_eq!((s.status(), s.attempt()), (Status::Pending, 1));
        assert!(s.never_started());
        s.started(
            RunHandle::Container { id: "c1".into() },
            Utc::now(),
            vec!["0".into()],
            None,
        );
        assert_eq!(s.status(), Status::Running);
        assert_eq!(s.container_id(), Some("c1"));
        assert_eq!(s.gpus(), ["0"]);
        assert!(s.finished_at().is_none());
        s.ended(&outcome(Status::Failed, 3));
        assert_eq!((s.status(), s.exit_code()), (Status::Failed, Some(3)));
        assert!(s.finished_at().is_some() && s.started_at().is_some());
        assert_eq!(s.image_id(), Some("sha256:i"));
    }

    #[test]
    fn the_next_attempt_keeps_the_last_in_history_and_starts_clean() {
        let mut s = JobState::pending();
        run_once(&mut s, Status::Failed, 3);
        s.begin_attempt(None);
        assert_eq!((s.status(), s.attempt()), (Status::Pending, 2));
        assert_eq!(s.exit_code(), None);
        assert!(s.handle().is_none() && s.gpus().is_empty() && s.error().is_none());
        assert_eq!(s.attempts().len(), 1);
        assert_eq!(s.attempts()[0].exit_code, Some(3));
        assert_eq!(s.attempts()[0].container_id.as_deref(), Some("c1"));
        assert_eq!(s.image_id(), Some("sha256:i"), "kept when no new id is known");
    }

    #[test]
    fn an_attempt_that_never_started_keeps_its_number() {
        let mut s = JobState::pending();
        s.begin_attempt(None);
        s.begin_attempt(None);
        assert_eq!(s.attempt(), 1);
        assert!(s.attempts().is_empty());
    }

    #[test]
    fn withdraw_puts_back_the_state_before_the_attempt() {
        let mut s = JobState::pending();
        run_once(&mut s, Status::Oom, 137);
        let before = s.clone();
        s.begin_attempt(None);
        s.withdraw(before.clone());
        assert_eq!(s, before);

        // A launch that kept its number (the one before never started).
        let mut pending = JobState::pending();
        pending.begin_attempt(None);
        let before = pending.clone();
        pending.begin_attempt(None);
        pending.withdraw(before.clone());
        assert_eq!((pending.status(), pending.attempt()), (Status::Pending, 1));
    }

    #[test]
    fn queued_runs_keep_their_slurm_id_and_gain_the_container() {
        let mut s = JobState::pending();
        s.begin_attempt(None);
        s.queued(RunHandle::Slurm {
            job_id: "17".into(),
            container: None,
        });
        assert_eq!(s.status(), Status::Pending);
        assert!(!s.never_started() || s.started_at().is_none());
        s.ended(&outcome(Status::Succeeded, 0));
        assert_eq!(
            s.handle(),
            Some(&RunHandle::Slurm {
                job_id: "17".into(),
                container: Some("c1".into())
            })
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["slurm_job_id"], "17");
        assert_eq!(json["container_id"], "c1");
        let back: JobState = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn a_share_of_a_gpu_is_recorded_beside_its_id() {
        let mut s = JobState::pending();
        s.begin_attempt(None);
        let half = Fraction::of(2);
        s.started(
            RunHandle::Container { id: "c".into() },
            Utc::now(),
            vec!["1".into()],
            half,
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            (&json["gpus"], &json["gpu_share"]),
            (&serde_json::json!(["1"]), &serde_json::json!(0.5))
        );
        let back: JobState = serde_json::from_value(json).unwrap();
        assert_eq!(back.gpu_share(), half);
        s.ended(&outcome(Status::Succeeded, 0));
        s.begin_attempt(None);
        assert_eq!(s.gpu_share(), None, "the next attempt starts clean");
        assert_eq!(s.attempts()[0].gpu_share, half, "history keeps it");

        let mut whole = JobState::pending();
        run_once(&mut whole, Status::Succeeded, 0);
        let json = serde_json::to_value(&whole).unwrap();
        assert!(json.get("gpu_share").is_none(), "whole GPUs write no share: {json}");
    }

    #[test]
    fn cancel_lost_and_stopped_say_why() {
        let mut s = JobState::pending();
        s.cancelled_before_start("cancelled before it started (tb cancel)");
        assert_eq!(s.status(), Status::Cancelled);
        assert!(s.finished_at().is_some() && s.started_at().is_none());

        let mut s = JobState::pending();
        s.begin_attempt(None);
        s.started(RunHandle::Container { id: "c".into() }, Utc::now(), vec![], None);
        s.lost("the container vanished".into());
        assert_eq!((s.status(), s.error()), (Status::Lost, Some("the container vanished")));

        let mut s = JobState::pending();
        run_once(&mut s, Status::Failed, 143);
        s.stopped(
            &outcome(Status::Failed, 143),
            Status::Cancelled,
            "cancelled (tb cancel)",
        );
        assert_eq!(s.status(), Status::Cancelled);
        assert_eq!(s.error(), Some("cancelled (tb cancel); exited with code 143"));
    }

    #[test]
    fn retryable_statuses() {
        for s in [Status::Failed, Status::Oom, Status::Lost] {
            assert!(s.is_retryable(false), "{s}");
        }
        for s in [
            Status::Succeeded,
            Status::Cancelled,
            Status::Pruned,
            Status::Pending,
            Status::Running,
        ] {
            assert!(!s.is_retryable(true), "{s}");
        }
        assert!(!Status::Timeout.is_retryable(false));
        assert!(Status::Timeout.is_retryable(true));
    }

    #[test]
    fn version_1_job_state_fixture_loads() {
        let s: JobState = crate::durable::read_versioned(Path::new("tests/fixtures/state/v1_state.json")).unwrap();
        assert_eq!(s.status(), Status::Oom);
        assert_eq!(s.exit_code(), Some(137));
        assert!(s.oom_killed());
        assert_eq!(
            s.handle(),
            Some(&RunHandle::Container {
                id: "4f1c2b9a7e0d5c3b1a2f4e6d8c0b9a7e5d3c1b2a4f6e8d0c9b7a5e3d1c2b4a6f".into()
            })
        );
        let round: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(round["version"], 1);
        assert_eq!(round["container_id"], s.container_id().unwrap());
        assert!(round["slurm_job_id"].is_null());
    }
}
