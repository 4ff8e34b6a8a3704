//! What the dispatcher decides, apart from any waiting: it takes one
//! [`Input`] at a time (a backend event, a signal, a retry falling due, the
//! deadline, a cancel request) and changes the jobs' states through their
//! transitions, returning the [`Action`]s the loop carries out (writes,
//! requests to the backend, notes for the reporters). Retries, backoff,
//! the deadline and stopping live here, once, for every backend.

use crate::backend::{Event, Request, Stop};
use crate::run::{JobState, Status};
use crate::signal::SignalEvent;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// One thing that happened.
#[derive(Debug)]
pub enum Input {
    Backend(Event),
    Signal(SignalEvent),
    /// A failed job's backoff is over.
    RetryDue(usize),
    /// `[batch] deadline` has passed.
    Deadline,
    /// `tb cancel --job` asked to cancel this job.
    CancelRequested(usize),
    /// The sweep's pruning rule stops this job (`why`, for its state).
    Prune {
        index: usize,
        why: String,
    },
}

/// What the loop does for a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The job's state changed: write it.
    Write(usize),
    /// Ask the backend something of the job's run.
    Request(usize, Request),
    /// The job's run is over and its state written: the backend may clean up.
    Collect(usize),
    /// Attempt `n` of the job is current again: its archived output comes back.
    Unarchive(usize, u32),
    /// The job's cancel request was acted on.
    ClearCancel(usize),
    /// For the reporters.
    Note(Note),
}

/// What reporters hear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    Started(usize),
    /// An attempt ended (its end is logged then); the job may still run again.
    AttemptEnded(usize),
    /// The job will not run again in this batch.
    Finished(usize),
}

/// What stopped new jobs from starting before all had run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    Deadline,
    /// The backend can run nothing more, and why.
    Gone(String),
}

/// Why the dispatcher itself asked a run to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reason {
    Cancel,
    /// The sweep's pruning rule, and its decision in words.
    Prune(String),
}

/// A job handed to the backend.
#[derive(Debug, Clone, Default)]
struct Flight {
    started: bool,
    requested: Option<Reason>,
    /// The job's state before this attempt began, put back if it is
    /// withdrawn; and the attempt whose output was archived for it.
    before: JobState,
    archived: Option<u32>,
}

/// Before retry `n` (1-based): 2 s, 4 s, 6 s, … at most 30 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs((2 * u64::from(n)).min(30))
}

/// The dispatcher's view of the batch.
pub struct Dispatcher {
    names: Vec<String>,
    job_dirs: Vec<PathBuf>,
    retries: u32,
    continue_on_timeout: bool,
    pub states: Vec<JobState>,
    /// Jobs waiting to be handed over, in order.
    pub queue: VecDeque<usize>,
    flights: BTreeMap<usize, Flight>,
    retry_at: BTreeSet<(Instant, usize)>,
    retries_used: Vec<u32>,
    /// Set by a signal: how running jobs are being stopped.
    pub stop: Option<Stop>,
    pub halt: Option<Halt>,
}

impl Dispatcher {
    pub fn new(
        names: Vec<String>,
        job_dirs: Vec<PathBuf>,
        states: Vec<JobState>,
        retries: u32,
        continue_on_timeout: bool,
    ) -> Dispatcher {
        let n = names.len();
        Dispatcher {
            names,
            job_dirs,
            retries,
            continue_on_timeout,
            states,
            queue: VecDeque::new(),
            flights: BTreeMap::new(),
            retry_at: BTreeSet::new(),
            retries_used: vec![0; n],
            stop: None,
            halt: None,
        }
    }

    /// New jobs may be handed over.
    pub fn starting(&self) -> bool {
        self.stop.is_none() && self.halt.is_none()
    }

    /// Nothing is in flight or due, and nothing more will start.
    pub fn done(&self) -> bool {
        self.flights.is_empty() && self.retry_at.is_empty() && (self.queue.is_empty() || !self.starting())
    }

    /// When the next retry falls due, and for which job.
    pub fn next_retry(&self) -> Option<(Instant, usize)> {
        self.retry_at.first().copied()
    }

    /// The jobs running now that no one has asked to stop.
    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        self.flights
            .iter()
            .filter(|(_, f)| f.started && f.requested.is_none())
            .map(|(i, _)| *i)
    }

    /// Jobs whose cancel requests must be acted on soon: handed over, or
    /// waiting to be retried. (Queued jobs are checked as they come up.)
    pub fn watched(&self) -> impl Iterator<Item = usize> + '_ {
        self.flights
            .keys()
            .copied()
            .chain(self.retry_at.iter().map(|(_, i)| *i))
    }

    /// Job `index` was handed to the backend: an attempt begun from
    /// `before` (archiving attempt `archived`'s output), to be started.
    pub fn launched(&mut self, index: usize, before: JobState, archived: Option<u32>) {
        self.flights.insert(
            index,
            Flight {
                started: false,
                requested: None,
                before,
                archived,
            },
        );
    }

    /// Job `index`'s run, which an earlier supervisor handed over, is
    /// followed (`started`, or still queued).
    pub fn followed(&mut self, index: usize, started: bool) {
        // Taken back while queued, it is a launched attempt that never ran.
        let mut before = self.states[index].clone();
        before.begin_attempt(None);
        self.flights.insert(
            index,
            Flight {
                started,
                requested: None,
                before,
                archived: None,
            },
        );
    }

    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Backend(event) => self.on_event(event, now, &mut out),
            Input::Signal(signal) => {
                let level = if self.stop.is_none() {
                    Stop::Graceful
                } else {
                    Stop::Kill
                };
                self.stop = Some(level);
                match level {
                    Stop::Graceful => tracing::warn!(
                        "{signal}: stopping the running jobs (SIGTERM, then SIGKILL after {}s); again to kill them now",
                        crate::executor::STOP_GRACE.as_secs()
                    ),
                    _ => tracing::warn!("{signal} again: killing the running jobs"),
                }
                for &i in self.flights.keys() {
                    out.push(Action::Request(i, Request::Stop(level)));
                }
                self.drop_retries(&mut out);
            }
            Input::RetryDue(index) => {
                self.retry_at.retain(|(_, i)| *i != index);
                if self.starting() {
                    self.queue.push_front(index);
                } else {
                    out.push(Action::Note(Note::Finished(index)));
                }
            }
            Input::Deadline => {
                if self.halt.is_none() {
                    self.halt = Some(Halt::Deadline);
                    tracing::warn!("the deadline has passed: no new job starts; `tb resume` runs the rest");
                    self.withdraw_unstarted(&mut out);
                    self.drop_retries(&mut out);
                }
            }
            Input::CancelRequested(index) => self.on_cancel(index, &mut out),
            Input::Prune { index, why } => {
                if let Some(f) = self.flights.get_mut(&index)
                    && f.requested.is_none()
                {
                    f.requested = Some(Reason::Prune(why));
                    out.push(Action::Request(index, Request::Stop(Stop::Graceful)));
                }
            }
        }
        out
    }

    fn on_event(&mut self, event: Event, now: Instant, out: &mut Vec<Action>) {
        let index = match &event {
            Event::Queued { index, .. }
            | Event::Started { index, .. }
            | Event::Ended { index, .. }
            | Event::Withdrawn { index }
            | Event::Abandoned { index } => Some(*index),
            Event::Gone { .. } => None,
        };
        if let Some(i) = index
            && !self.flights.contains_key(&i)
        {
            // A late word about a run that already ended or was taken back.
            tracing::debug!("ignored {event:?}: job {} has no run in flight", self.names[i]);
            return;
        }
        match event {
            Event::Queued { index, handle } => {
                self.states[index].queued(handle);
                out.push(Action::Write(index));
            }
            Event::Started {
                index,
                handle,
                at,
                gpus,
                gpu_share,
            } => {
                if let Some(f) = self.flights.get_mut(&index) {
                    f.started = true;
                }
                let state = &mut self.states[index];
                tracing::info!(
                    "started {} (attempt {}) in {}",
                    self.names[index],
                    state.attempt(),
                    handle.describe()
                );
                state.started(handle, at, gpus, gpu_share);
                out.push(Action::Write(index));
                out.push(Action::Note(Note::Started(index)));
            }
            Event::Ended { index, outcome } => {
                let requested = self.flights.remove(&index).and_then(|f| f.requested);
                let starting = self.starting();
                let name = &self.names[index];
                let state = &mut self.states[index];
                match &requested {
                    Some(Reason::Cancel) => state.stopped(&outcome, Status::Cancelled, "cancelled (tb cancel)"),
                    Some(Reason::Prune(why)) => state.stopped(&outcome, Status::Pruned, why),
                    None => state.ended(&outcome),
                }
                out.push(Action::Note(Note::AttemptEnded(index)));
                if requested == Some(Reason::Cancel) {
                    out.push(Action::ClearCancel(index));
                }
                let retry = starting
                    && requested.is_none()
                    && state.status().is_retryable(self.continue_on_timeout)
                    && self.retries_used[index] < self.retries;
                if retry {
                    self.retries_used[index] += 1;
                    let n = self.retries_used[index];
                    let wait = backoff(n);
                    let resume = self.job_dirs[index].join("checkpoints/last.ckpt").is_file();
                    tracing::info!(
                        "{name}: running it again in {}s (retry {n} of {}){}",
                        wait.as_secs(),
                        self.retries,
                        if resume {
                            ", resuming from checkpoints/last.ckpt"
                        } else {
                            ""
                        }
                    );
                    self.retry_at.insert((now + wait, index));
                } else {
                    out.push(Action::Note(Note::Finished(index)));
                }
                out.push(Action::Write(index));
                out.push(Action::Collect(index));
            }
            Event::Withdrawn { index } => {
                let flight = self.flights.remove(&index).expect("a flight");
                let state = &mut self.states[index];
                state.withdraw(flight.before);
                out.push(Action::Write(index));
                if let Some(n) = flight.archived {
                    out.push(Action::Unarchive(index, n));
                }
                if flight.requested == Some(Reason::Cancel) {
                    self.cancel_waiting(index, out);
                } else {
                    self.queue.push_front(index);
                }
                out.push(Action::Collect(index));
            }
            Event::Abandoned { index } => {
                // Its state stays `running`, its run where it is: `tb
                // resume` follows it or records how it ended.
                self.flights.remove(&index);
                tracing::warn!(
                    "{}: out of sight while the backend is away; left running for `tb resume`",
                    self.names[index]
                );
                out.push(Action::Note(Note::Finished(index)));
                out.push(Action::Collect(index));
            }
            Event::Gone { why } => {
                if !matches!(self.halt, Some(Halt::Gone(_))) {
                    tracing::error!("{why}: no new job starts");
                    self.halt = Some(Halt::Gone(why));
                    self.withdraw_unstarted(out);
                    self.drop_retries(out);
                }
            }
        }
    }

    fn on_cancel(&mut self, index: usize, out: &mut Vec<Action>) {
        let name = &self.names[index];
        if let Some(f) = self.flights.get_mut(&index) {
            if f.requested.is_none() {
                f.requested = Some(Reason::Cancel);
                tracing::info!("{name}: cancelling it (tb cancel)");
                out.push(Action::Request(index, Request::Stop(Stop::Graceful)));
            }
        } else if self.retry_at.iter().any(|(_, i)| *i == index) {
            self.retry_at.retain(|(_, i)| *i != index);
            tracing::info!("{name}: will not be retried (tb cancel)");
            out.push(Action::ClearCancel(index));
            out.push(Action::Note(Note::Finished(index)));
        } else if let Some(pos) = self.queue.iter().position(|&i| i == index) {
            self.queue.remove(pos);
            self.cancel_waiting(index, out);
        } else {
            out.push(Action::ClearCancel(index));
        }
    }

    /// A job that was waiting (queued, or taken back before it started) is
    /// cancelled: one that never ran is `cancelled`; a failed one waiting
    /// for its retry keeps how it failed and is not retried.
    fn cancel_waiting(&mut self, index: usize, out: &mut Vec<Action>) {
        let name = &self.names[index];
        let state = &mut self.states[index];
        if state.status().is_final() {
            tracing::info!("{name}: will not be retried (tb cancel)");
        } else {
            state.cancelled_before_start("cancelled before it started (tb cancel)");
            tracing::info!("{name}: cancelled before it started");
            out.push(Action::Write(index));
        }
        out.push(Action::ClearCancel(index));
        out.push(Action::Note(Note::Finished(index)));
    }

    /// Takes back every handed-over job that has not started.
    fn withdraw_unstarted(&self, out: &mut Vec<Action>) {
        for (&i, f) in &self.flights {
            if !f.started {
                out.push(Action::Request(i, Request::Withdraw));
            }
        }
    }

    /// Jobs waiting for a retry will not get it: they end as they are.
    fn drop_retries(&mut self, out: &mut Vec<Action>) {
        for (_, i) in std::mem::take(&mut self.retry_at) {
            out.push(Action::Note(Note::Finished(i)));
        }
    }
}

/// The one line that says how an attempt ended.
pub fn log_end(name: &str, state: &JobState) {
    let took = state
        .elapsed(chrono::Utc::now())
        .map(|d| format!(" after {}", crate::human::duration(d)))
        .unwrap_or_default();
    match (state.status(), state.error()) {
        (Status::Succeeded, _) => tracing::info!("{name} succeeded{took}"),
        (Status::Pruned, Some(e)) => tracing::info!("{name}: pruned{took}: {e}"),
        (status, Some(e)) => tracing::warn!("{name}: {status}{took}: {e}"),
        (status, None) => tracing::warn!("{name}: {status}{took}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Outcome, RunHandle};
    use chrono::Utc;

    fn dispatcher(n: usize, retries: u32) -> Dispatcher {
        let names: Vec<String> = (0..n).map(|i| format!("j{i}")).collect();
        let dirs = names.iter().map(|n| PathBuf::from("/nonexistent").join(n)).collect();
        let mut d = Dispatcher::new(names, dirs, vec![JobState::pending(); n], retries, false);
        d.queue = (0..n).collect();
        d
    }

    /// Hands job `i` over as the loop's fill would.
    fn hand(d: &mut Dispatcher, i: usize) {
        d.queue.retain(|&j| j != i);
        let before = d.states[i].clone();
        let archived = (before.attempt() > 0 && !before.never_started()).then(|| before.attempt());
        d.states[i].begin_attempt(None);
        d.launched(i, before, archived);
    }

    fn started(i: usize) -> Input {
        Input::Backend(Event::Started {
            index: i,
            handle: RunHandle::Container { id: format!("c{i}") },
            at: Utc::now(),
            gpus: vec![],
            gpu_share: None,
        })
    }

    fn ended(i: usize, status: Status, code: i64) -> Input {
        Input::Backend(Event::Ended {
            index: i,
            outcome: Outcome {
                status,
                exit_code: Some(code),
                oom_killed: false,
                error: None,
                container_id: Some(format!("c{i}")),
                started_at: None,
                finished_at: Utc::now(),
            },
        })
    }

    #[test]
    fn a_run_starts_ends_and_is_written_then_collected() {
        let mut d = dispatcher(1, 0);
        let now = Instant::now();
        hand(&mut d, 0);
        assert_eq!(
            d.handle(started(0), now),
            [Action::Write(0), Action::Note(Note::Started(0))]
        );
        assert_eq!(d.states[0].status(), Status::Running);
        let a = d.handle(ended(0, Status::Succeeded, 0), now);
        assert_eq!(
            a,
            [
                Action::Note(Note::AttemptEnded(0)),
                Action::Note(Note::Finished(0)),
                Action::Write(0),
                Action::Collect(0)
            ]
        );
        assert!(d.done());
    }

    #[test]
    fn a_failure_is_retried_after_its_backoff_and_only_as_often_as_allowed() {
        let mut d = dispatcher(1, 1);
        let now = Instant::now();
        hand(&mut d, 0);
        d.handle(started(0), now);
        let a = d.handle(ended(0, Status::Failed, 1), now);
        assert!(!a.contains(&Action::Note(Note::Finished(0))), "{a:?}");
        assert_eq!(d.next_retry(), Some((now + backoff(1), 0)));
        assert!(!d.done());
        d.handle(Input::RetryDue(0), now + backoff(1));
        assert_eq!(d.queue, [0]);
        hand(&mut d, 0);
        assert_eq!(d.states[0].attempt(), 2);
        d.handle(started(0), now);
        let a = d.handle(ended(0, Status::Failed, 1), now);
        assert!(a.contains(&Action::Note(Note::Finished(0))), "the one retry is spent");
        assert!(d.done());
    }

    #[test]
    fn backoff_grows_to_thirty_seconds() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(6));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }

    #[test]
    fn a_signal_stops_started_runs_takes_back_the_rest_and_drops_retries() {
        let mut d = dispatcher(4, 3);
        let now = Instant::now();
        for i in 0..3 {
            hand(&mut d, i);
        }
        d.handle(started(0), now);
        d.handle(started(2), now);
        d.handle(ended(2, Status::Failed, 1), now);
        let a = d.handle(Input::Signal(SignalEvent::Interrupt), now);
        assert_eq!(
            a,
            [
                Action::Request(0, Request::Stop(Stop::Graceful)),
                Action::Request(1, Request::Stop(Stop::Graceful)),
                Action::Note(Note::Finished(2)),
            ]
        );
        assert!(!d.starting());
        let a = d.handle(Input::Signal(SignalEvent::Terminate), now);
        assert_eq!(a[0], Action::Request(0, Request::Stop(Stop::Kill)));
        // The unstarted one comes back pending; job 3 never left the queue.
        d.handle(Input::Backend(Event::Withdrawn { index: 1 }), now);
        assert_eq!((d.states[1].status(), d.states[1].attempt()), (Status::Pending, 0));
        d.handle(ended(0, Status::Cancelled, 143), now);
        assert!(d.done());
        assert_eq!(d.states[3].status(), Status::Pending);
    }

    #[test]
    fn the_deadline_withdraws_what_has_not_started_and_keeps_what_runs() {
        let mut d = dispatcher(3, 0);
        let now = Instant::now();
        hand(&mut d, 0);
        hand(&mut d, 1);
        d.handle(started(0), now);
        let a = d.handle(Input::Deadline, now);
        assert_eq!(a, [Action::Request(1, Request::Withdraw)]);
        assert_eq!(d.halt, Some(Halt::Deadline));
        assert!(d.handle(Input::Deadline, now).is_empty(), "once");
        d.handle(Input::Backend(Event::Withdrawn { index: 1 }), now);
        assert!(!d.done(), "job 0 still runs");
        d.handle(ended(0, Status::Succeeded, 0), now);
        assert!(d.done());
        assert_eq!(d.states[1].status(), Status::Pending);
        assert_eq!(d.states[2].status(), Status::Pending);
    }

    #[test]
    fn a_gone_backend_halts_the_night() {
        let mut d = dispatcher(2, 2);
        let now = Instant::now();
        hand(&mut d, 0);
        let a = d.handle(
            Input::Backend(Event::Gone {
                why: "engine away".into(),
            }),
            now,
        );
        assert_eq!(a, [Action::Request(0, Request::Withdraw)]);
        assert_eq!(d.halt, Some(Halt::Gone("engine away".into())));
        d.handle(Input::Backend(Event::Withdrawn { index: 0 }), now);
        assert!(d.done());
    }

    #[test]
    fn cancel_requests_stop_runs_drop_retries_and_cancel_queued_jobs() {
        let mut d = dispatcher(4, 1);
        let now = Instant::now();
        hand(&mut d, 0);
        d.handle(started(0), now);
        hand(&mut d, 1);
        d.handle(started(1), now);
        d.handle(ended(1, Status::Failed, 1), now);
        hand(&mut d, 2);

        let a = d.handle(Input::CancelRequested(0), now);
        assert_eq!(a, [Action::Request(0, Request::Stop(Stop::Graceful))]);
        assert!(d.handle(Input::CancelRequested(0), now).is_empty(), "asked once");
        let a = d.handle(ended(0, Status::Failed, 143), now);
        assert!(a.contains(&Action::ClearCancel(0)) && a.contains(&Action::Note(Note::Finished(0))));
        assert_eq!(d.states[0].status(), Status::Cancelled, "cancelled, not retried");

        let a = d.handle(Input::CancelRequested(1), now);
        assert_eq!(a, [Action::ClearCancel(1), Action::Note(Note::Finished(1))]);
        assert_eq!(d.states[1].status(), Status::Failed, "keeps how it failed");

        d.handle(Input::CancelRequested(2), now);
        d.handle(Input::Backend(Event::Withdrawn { index: 2 }), now);
        assert_eq!(d.states[2].status(), Status::Cancelled);
        assert_eq!(d.states[2].attempt(), 0, "it never ran");

        let a = d.handle(Input::CancelRequested(3), now);
        assert!(a.contains(&Action::Write(3)));
        assert_eq!(d.states[3].status(), Status::Cancelled);
        assert!(d.done());
    }

    #[test]
    fn a_withdrawn_retry_brings_back_its_previous_attempt() {
        let mut d = dispatcher(1, 1);
        let now = Instant::now();
        hand(&mut d, 0);
        d.handle(started(0), now);
        d.handle(ended(0, Status::Failed, 1), now);
        d.handle(Input::RetryDue(0), now);
        hand(&mut d, 0);
        let a = d.handle(Input::Backend(Event::Withdrawn { index: 0 }), now);
        let (w, u) = (
            a.iter().position(|x| *x == Action::Write(0)).unwrap(),
            a.iter().position(|x| *x == Action::Unarchive(0, 1)).unwrap(),
        );
        assert!(w < u, "the state is written before its output comes back: {a:?}");
        assert_eq!((d.states[0].status(), d.states[0].attempt()), (Status::Failed, 1));
        assert_eq!(d.queue, [0]);

        // Cancelled while staged for its retry: it keeps how it failed.
        hand(&mut d, 0);
        d.handle(Input::CancelRequested(0), now);
        d.handle(Input::Backend(Event::Withdrawn { index: 0 }), now);
        assert_eq!(
            (d.states[0].status(), d.states[0].exit_code()),
            (Status::Failed, Some(1))
        );
        assert!(d.done());
    }

    #[test]
    fn a_pruned_run_is_stopped_and_recorded_pruned_not_retried() {
        let mut d = dispatcher(2, 3);
        let now = Instant::now();
        hand(&mut d, 0);
        d.handle(started(0), now);
        assert_eq!(d.running().collect::<Vec<_>>(), [0]);
        let why = "pruned at rung 1: value 0.5 against the cut-off 0.3".to_string();
        let a = d.handle(
            Input::Prune {
                index: 0,
                why: why.clone(),
            },
            now,
        );
        assert_eq!(a, [Action::Request(0, Request::Stop(Stop::Graceful))]);
        assert!(d.running().next().is_none(), "asked to stop");
        let a = d.handle(ended(0, Status::Cancelled, 143), now);
        assert!(a.contains(&Action::Note(Note::Finished(0))), "never retried");
        assert_eq!(d.states[0].status(), Status::Pruned);
        assert_eq!(
            d.states[0].error(),
            Some(format!("{why}; exited with code 143").as_str())
        );
        // The decision came as the job finished on its own: it succeeded.
        hand(&mut d, 1);
        d.handle(started(1), now);
        d.handle(Input::Prune { index: 1, why }, now);
        d.handle(ended(1, Status::Succeeded, 0), now);
        assert_eq!(d.states[1].status(), Status::Succeeded);
    }

    #[test]
    fn a_late_event_of_a_run_that_ended_is_ignored() {
        let mut d = dispatcher(1, 0);
        let now = Instant::now();
        hand(&mut d, 0);
        d.handle(started(0), now);
        d.handle(ended(0, Status::Succeeded, 0), now);
        assert!(d.handle(ended(0, Status::Failed, 1), now).is_empty());
        assert!(d.handle(Input::Backend(Event::Withdrawn { index: 0 }), now).is_empty());
        assert_eq!(d.states[0].status(), Status::Succeeded);
    }
}
