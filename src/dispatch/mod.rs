//! The one dispatcher: runs a batch's jobs on a backend. A single
//! `select!` loop turns what happens — backend events, signals, retries
//! falling due, the deadline, `tb cancel` requests — into one [`Input`] at
//! a time; [`decide`] decides; the loop carries the decision out. It is the
//! only code that writes job state while a batch runs, whatever the
//! backend. [`supervise`] wraps it for the commands: the batch's own state,
//! the report and summary at the end, the exit status.

mod close;
pub mod decide;

pub use decide::{Halt, backoff, log_end};

use crate::backend::{Attempt, Backend, Found, Ready};
use crate::exit::Exit;
use crate::logging;
use crate::progress::Progress;
use crate::run::{BatchDir, BatchStatus, JobFile, JobState, Lock, Status, Supervisor};
use crate::settings::Plan;
use crate::signal::Signals;
use chrono::{DateTime, Utc};
use decide::{Action, Dispatcher, Input, Note};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What a supervisor is to do with a batch.
#[derive(Debug, Default)]
pub struct Work {
    /// Jobs to run, by index into the plan, in order.
    pub launch: Vec<usize>,
    /// Runs an earlier supervisor handed over, to follow to their ends.
    pub follow: Vec<(usize, Found)>,
}

/// Knobs of one supervision that are not part of the plan.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// No job starts after this.
    pub deadline: Option<DateTime<Utc>>,
}

/// How the batch ended, for the exit status and the summary.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Job name and final state, in the file's order (pending ones included).
    pub jobs: Vec<(String, JobState)>,
    pub interrupted: bool,
    pub wall: Duration,
    /// Why jobs were left pending, if something stopped the night early.
    pub halted: Option<Halt>,
}

impl Summary {
    pub fn count(&self, status: Status) -> usize {
        self.jobs.iter().filter(|(_, s)| s.status() == status).count()
    }

    pub fn all_succeeded(&self) -> bool {
        self.jobs.iter().all(|(_, s)| s.status() == Status::Succeeded)
    }
}

/// How often cancel requests are looked for.
const REQUESTS_EVERY: Duration = Duration::from_millis(500);

/// Runs `work` of `plan` in `dir` on `backend` (already through its
/// preflight, `ready`) and closes the batch: its state, the report and
/// summary, `on_finish`, the exit status (which covers every job of the
/// batch). Holds `lock` throughout.
pub async fn supervise(
    plan: &Plan,
    dir: &BatchDir,
    mut backend: Box<dyn Backend>,
    ready: &Ready,
    work: Work,
    options: Options,
    lock: Lock,
) -> anyhow::Result<Exit> {
    let mut state = dir.read_batch()?;
    state.status = BatchStatus::Running;
    state.finished_at = None;
    state.supervisor = Some(Supervisor::current());
    dir.write_batch(&state)?;
    tracing::info!(
        "batch {}: {} job(s) to run of {}{}, concurrency {}, {}",
        dir.id,
        work.launch.len(),
        plan.jobs.len(),
        if work.follow.is_empty() {
            String::new()
        } else {
            format!(", {} to follow again", work.follow.len())
        },
        plan.settings.concurrency,
        ready.describe
    );
    let progress = Progress::new(logging::output_mode().bars);
    let summary = run(plan, dir, backend.as_mut(), ready, work, &options, &progress).await?;

    let mut state = dir.read_batch()?;
    state.status = if summary.interrupted || summary.halted.is_some() {
        BatchStatus::Interrupted
    } else {
        BatchStatus::Finished
    };
    state.finished_at = Some(Utc::now());
    dir.write_batch(&state)?;
    close::close(plan, dir, &summary);
    let pending = summary.count(Status::Pending);
    match &summary.halted {
        Some(Halt::Gone(why)) => tracing::error!(
            "{why}: tb stopped; the {pending} job(s) that had not run are pending. Run `tb resume {}` once it is back",
            dir.id
        ),
        Some(Halt::Deadline) => tracing::info!(
            "the deadline stopped the night; `tb resume {}` runs the {pending} pending job(s)",
            dir.id
        ),
        None if pending > 0 => tracing::info!("{pending} job(s) did not start; `tb resume {}` runs them", dir.id),
        None => {}
    }
    logging::detach_supervisor_log();
    drop(lock);
    println!("{}", dir.path.display());
    Ok(if summary.interrupted {
        Exit::Interrupted
    } else if summary.all_succeeded() {
        Exit::Success
    } else {
        Exit::JobsFailed
    })
}

/// The loop: returns when every job handed over has ended and nothing more
/// may start (all ran, or a signal, the deadline or the backend's absence
/// ended the night). The summary covers every job of the plan.
pub async fn run(
    plan: &Plan,
    dir: &BatchDir,
    backend: &mut dyn Backend,
    ready: &Ready,
    work: Work,
    options: &Options,
    progress: &Progress,
) -> anyhow::Result<Summary> {
    let began = std::time::Instant::now();
    let names: Vec<String> = plan.jobs.iter().map(|j| j.name.clone()).collect();
    let states = dir.read_states(&names)?;
    let job_dirs = names.iter().map(|n| dir.job_dir(n)).collect();
    let mut d = Dispatcher::new(
        names,
        job_dirs,
        states,
        plan.settings.retries,
        plan.settings.continue_on_timeout,
    );
    let (tx, mut events) = mpsc::unbounded_channel();
    backend.open(plan, dir, tx)?;
    let mut signals = Signals::new()?;
    let mut loop_ = Loop {
        plan,
        dir,
        ready,
        progress,
        unwritten: std::collections::HashSet::new(),
    };

    progress.start(work.launch.len() + work.follow.len());
    for (index, found) in work.follow {
        let started = found.started;
        let job = JobFile::new(&plan.name, &dir.id, d.states[index].attempt(), &plan.jobs[index]);
        d.followed(index, started);
        backend.follow(index, Attempt { job }, found);
        if started {
            loop_.note(&d, Note::Started(index));
        }
    }
    d.queue.extend(work.launch);
    let deadline = options.deadline;
    let mut requests = tokio::time::interval(REQUESTS_EVERY);
    requests.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    loop {
        if d.halt.is_none()
            && let Some(at) = deadline
            && Utc::now() >= at
        {
            let actions = d.handle(Input::Deadline, Instant::now());
            loop_.carry_out(&mut d, backend, actions);
        }
        loop_.fill(&mut d, backend);
        if d.done() {
            break;
        }
        let retry = d.next_retry();
        let deadline_in = deadline
            .filter(|_| d.halt.is_none())
            .map(|at| Instant::now() + (at - Utc::now()).to_std().unwrap_or_default());
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let input = tokio::select! {
            event = events.recv() => match event {
                Some(e) => Input::Backend(e),
                None => break,
            },
            signal = signals.recv() => Input::Signal(signal),
            _ = tokio::time::sleep_until(retry.map_or(far, |r| r.0)), if retry.is_some() => {
                Input::RetryDue(retry.expect("a retry").1)
            }
            _ = tokio::time::sleep_until(deadline_in.unwrap_or(far)), if deadline_in.is_some() => Input::Deadline,
            _ = requests.tick() => {
                // The jobs it matters for, often; all (to clear requests
                // that came too late to matter), now and then.
                ticks += 1;
                let asked: Vec<usize> = if ticks.is_multiple_of(10) {
                    (0..plan.jobs.len()).filter(|&i| dir.cancel_requested(&plan.jobs[i].name)).collect()
                } else {
                    d.watched().filter(|&i| dir.cancel_requested(&plan.jobs[i].name)).collect()
                };
                for i in asked {
                    let actions = d.handle(Input::CancelRequested(i), Instant::now());
                    loop_.carry_out(&mut d, backend, actions);
                }
                continue;
            }
        };
        let actions = d.handle(input, Instant::now());
        loop_.carry_out(&mut d, backend, actions);
    }
    backend.close(matches!(d.halt, Some(Halt::Gone(_)))).await;
    progress.finish();
    Ok(Summary {
        jobs: plan.jobs.iter().map(|j| j.name.clone()).zip(d.states).collect(),
        interrupted: d.stop.is_some(),
        wall: began.elapsed(),
        halted: d.halt,
    })
}

/// What the loop carries out decisions with.
struct Loop<'a> {
    plan: &'a Plan,
    dir: &'a BatchDir,
    ready: &'a Ready,
    progress: &'a Progress,
    /// Jobs whose last state write failed: their runs are left to the
    /// backend (not cleaned up), for `tb resume` to record.
    unwritten: std::collections::HashSet<usize>,
}

impl Loop<'_> {
    /// Hands queued jobs to the backend while it has room: the first whose
    /// needs fit (a job waiting for GPUs does not hold up one that needs
    /// none). Each begins a new attempt, written before it is handed over.
    fn fill(&mut self, d: &mut Dispatcher, backend: &mut dyn Backend) {
        while d.starting() {
            let Some(pos) = d.queue.iter().position(|&i| backend.has_room(&self.plan.jobs[i])) else {
                return;
            };
            let index = d.queue[pos];
            let spec = &self.plan.jobs[index];
            if self.dir.cancel_requested(&spec.name) {
                // Dequeued, cancelled, written, noted.
                let actions = d.handle(Input::CancelRequested(index), Instant::now());
                self.carry_out(d, backend, actions);
                continue;
            }
            d.queue.remove(pos);
            let state = &mut d.states[index];
            let before = state.clone();
            let mut archived = None;
            if state.attempt() > 0 && !state.never_started() {
                match self.dir.archive_attempt(&spec.name, state.attempt(), state) {
                    Ok(()) => archived = Some(state.attempt()),
                    Err(e) => tracing::warn!("job {}: {e:#}", spec.name),
                }
            }
            state.begin_attempt(self.ready.image_ids[index].clone());
            let job = JobFile::new(&self.plan.name, &self.dir.id, state.attempt(), spec);
            d.launched(index, before, archived);
            if let Err(e) = self.dir.write_job_file(&job) {
                // The run would read the previous attempt's job.json.
                let why = format!("{e:#}");
                let actions = d.handle(
                    Input::Backend(crate::backend::Event::Ended {
                        index,
                        outcome: crate::run::Outcome::failed_before_start(why, None),
                    }),
                    Instant::now(),
                );
                self.carry_out(d, backend, actions);
                continue;
            }
            self.write(d, index);
            backend.launch(index, Attempt { job });
        }
    }

    fn carry_out(&mut self, d: &mut Dispatcher, backend: &mut dyn Backend, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Write(i) => self.write(d, i),
                Action::Request(i, r) => backend.request(i, r),
                Action::Collect(i) if self.unwritten.contains(&i) => {
                    // Its end is not on disk: keep its run for `tb resume`.
                    tracing::warn!(
                        "{}: its state could not be written; its run is kept for `tb resume`",
                        self.plan.jobs[i].name
                    );
                    backend.collect(i, None);
                }
                Action::Collect(i) => backend.collect(i, d.states[i].handle()),
                Action::Unarchive(i, n) => {
                    if let Err(e) = self.dir.unarchive_attempt(&self.plan.jobs[i].name, n) {
                        tracing::warn!("{e:#}");
                    }
                }
                Action::ClearCancel(i) => self.dir.clear_cancel_request(&self.plan.jobs[i].name),
                Action::Note(n) => self.note(d, n),
            }
        }
    }

    fn write(&mut self, d: &Dispatcher, index: usize) {
        let name = &self.plan.jobs[index].name;
        // The state of one job failing to reach the disk must not end the
        // night; the error is logged and the job's run still ends.
        match self.dir.write_job_state(name, &d.states[index]) {
            Ok(()) => {
                self.unwritten.remove(&index);
            }
            Err(e) => {
                tracing::error!("job {name}: {e:#}");
                self.unwritten.insert(index);
            }
        }
    }

    fn note(&self, d: &Dispatcher, note: Note) {
        match note {
            Note::Started(i) => {
                let spec = &self.plan.jobs[i];
                self.progress
                    .job_started(spec, &self.dir.job_dir(&spec.name), d.states[i].attempt());
            }
            Note::AttemptEnded(i) => {
                // The last epoch is told before the end.
                self.progress.attempt_ended(&self.plan.jobs[i].name);
                log_end(&self.plan.jobs[i].name, &d.states[i]);
            }
            Note::Finished(i) => self
                .progress
                .job_finished(&self.plan.jobs[i].name, d.states[i].status()),
        }
    }
}
