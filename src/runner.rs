//! Schedules a batch's jobs on the local engine: concurrency slots,
//! exclusive GPUs, one task per job that reports by message, signals, the
//! deadline, and containers taken over from an earlier supervisor. A job's
//! failure is data; nothing a job does stops the others.

use crate::docker::{Engine, is_unreachable, short};
use crate::executor::{self, Launch, Outcome, Stop};
use crate::progress::Progress;
use crate::settings::Plan;
use crate::state::{BatchDir, JobState, Status};
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

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

/// What stopped new jobs from starting before all had run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    Deadline,
    /// The Docker engine stayed away past the limit.
    EngineGone,
}

impl Summary {
    pub fn count(&self, status: Status) -> usize {
        self.jobs.iter().filter(|(_, s)| s.status == status).count()
    }

    pub fn all_succeeded(&self) -> bool {
        self.jobs.iter().all(|(_, s)| s.status == Status::Succeeded)
    }
}

/// What job tasks tell the dispatcher.
enum Event {
    Started {
        index: usize,
        container_id: String,
        at: DateTime<Utc>,
    },
    Finished {
        index: usize,
        outcome: Outcome,
    },
    /// A job prepared ahead that was never started (the batch was stopped,
    /// or `tb cancel --job` came first); `slotted` if it had been given a slot.
    Withdrawn {
        index: usize,
        slotted: bool,
    },
    /// A job that could not start because the engine is gone.
    EngineGone {
        index: usize,
        slotted: bool,
    },
    /// A failed job's backoff is over: it may run again.
    RetryDue {
        index: usize,
    },
}

/// How many jobs at most wait, created, for a slot.
const MAX_STAGED: usize = 4;

/// Knobs that are not part of the plan.
#[derive(Debug, Clone)]
pub struct Options {
    pub stop_grace: Duration,
    pub engine_wait: Duration,
    /// No job starts after this.
    pub deadline: Option<DateTime<Utc>>,
    /// Containers of this batch still running from an earlier supervisor.
    pub adopt: Vec<Adopt>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stop_grace: executor::STOP_GRACE,
            engine_wait: executor::engine_wait(),
            deadline: None,
            adopt: Vec::new(),
        }
    }
}

/// A running container to follow again rather than start anew.
#[derive(Debug, Clone)]
pub struct Adopt {
    pub index: usize,
    pub container_id: String,
    pub started_at: DateTime<Utc>,
    pub gpus: Vec<String>,
}

/// What the dispatcher keeps about the jobs and hands to their tasks.
struct Dispatcher<'a> {
    plan: &'a Plan,
    dir: &'a BatchDir,
    engine: &'a Engine,
    options: &'a Options,
    tx: mpsc::UnboundedSender<Event>,
    stop_rx: watch::Receiver<Stop>,
    tasks: JoinSet<()>,
    states: Vec<JobState>,
    gpus_of: Vec<Vec<String>>,
    free_gpus: Vec<String>,
}

/// Runs the jobs of `plan` listed in `to_run` (indexes, in order) in `dir`,
/// after taking up `options.adopt`; returns when all have ended, or when a
/// stop (Ctrl-C, SIGTERM), the deadline or the engine's absence has ended
/// the night. The summary covers every job of the plan.
pub async fn run(
    plan: &Plan,
    dir: &BatchDir,
    engine: &Engine,
    image_ids: &[Option<String>],
    to_run: &[usize],
    options: &Options,
    progress: &Progress,
) -> anyhow::Result<Summary> {
    let began = std::time::Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let (stop_tx, stop_rx) = watch::channel(Stop::Run);
    let mut states: Vec<JobState> = plan
        .jobs
        .iter()
        .map(|j| dir.read_job_state(&j.name))
        .collect::<anyhow::Result<_>>()?;
    for &i in to_run {
        states[i].image_id = image_ids[i].clone();
    }
    let mut d = Dispatcher {
        plan,
        dir,
        engine,
        options,
        tx: tx.clone(),
        stop_rx,
        tasks: JoinSet::new(),
        states,
        gpus_of: vec![Vec::new(); plan.jobs.len()],
        free_gpus: plan.gpus.ids.clone(),
    };
    let mut pending: VecDeque<usize> = to_run.iter().copied().collect();
    let mut auto_retries = vec![0u32; plan.jobs.len()];
    let mut running = 0usize;
    let mut alive = 0usize;
    // Jobs prepared ahead (container created, output attached), waiting
    // for a slot: their start signals, oldest first.
    let mut staged: VecDeque<oneshot::Sender<()>> = VecDeque::new();
    let stage_depth = plan.concurrency.min(MAX_STAGED);
    // Finished jobs whose state is written once the freed slot is refilled:
    // the next start does not wait for an fsync. Each is removed after its
    // state is written (output drained and state on disk first), by a
    // queue that nobody waits for.
    let mut unwritten: Vec<(usize, Option<String>)> = Vec::new();
    let removals = Removals::start(engine.clone());
    let mut stop = Stop::Run;
    let mut halted: Option<Halt> = None;
    let mut signals = Signals::new()?;

    progress.start(to_run.len() + options.adopt.len());
    for a in &options.adopt {
        d.adopt(a);
        progress.job_started(
            &plan.jobs[a.index],
            &dir.job_dir(&plan.jobs[a.index].name),
            d.states[a.index].attempt,
        );
        running += 1;
        alive += 1;
    }
    loop {
        if halted.is_none()
            && let Some(deadline) = options.deadline
            && Utc::now() >= deadline
        {
            halted = Some(Halt::Deadline);
            staged.clear();
            tracing::warn!(
                "the deadline ({}) has passed: no new job starts; `tb resume` runs the rest",
                deadline.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M")
            );
        }
        let starting = stop == Stop::Run && halted.is_none();
        if starting {
            while running < plan.concurrency {
                if let Some(go) = staged.pop_front() {
                    let _ = go.send(());
                    running += 1;
                    continue;
                }
                let Some(index) = d.next(&mut pending, progress) else {
                    break;
                };
                let (go_tx, go_rx) = oneshot::channel();
                let _ = go_tx.send(());
                d.spawn(index, go_rx);
                running += 1;
                alive += 1;
            }
        }
        for (index, container) in unwritten.drain(..) {
            write_state(dir, &plan.jobs[index].name, &d.states[index]);
            if let Some(id) = container {
                removals.push(id);
            }
        }
        if starting {
            // Create the next containers while the slots are busy: the
            // engine's create is then off the critical path when one frees.
            while staged.len() < stage_depth {
                let Some(index) = d.next(&mut pending, progress) else {
                    break;
                };
                let (go_tx, go_rx) = oneshot::channel();
                d.spawn(index, go_rx);
                staged.push_back(go_tx);
                alive += 1;
            }
        }
        if alive == 0 && (pending.is_empty() || stop != Stop::Run || halted.is_some()) {
            break;
        }
        tokio::select! {
            event = rx.recv() => {
                let Some(event) = event else { break };
                match event {
                    Event::Started { index, container_id, at } => {
                        let name = &plan.jobs[index].name;
                        let state = &mut d.states[index];
                        state.status = Status::Running;
                        state.container_id = Some(container_id.clone());
                        state.started_at = Some(at);
                        state.gpus = d.gpus_of[index].clone();
                        tracing::info!("started {name} (attempt {}) in container {}", state.attempt, short(&container_id));
                        write_state(dir, name, state);
                        progress.job_started(&plan.jobs[index], &dir.job_dir(name), state.attempt);
                    }
                    Event::Finished { index, outcome } => {
                        running -= 1;
                        alive -= 1;
                        let freed = std::mem::take(&mut d.gpus_of[index]);
                        d.free_gpus.extend(freed);
                        let name = &plan.jobs[index].name;
                        let job_dir = dir.job_dir(name);
                        let state = &mut d.states[index];
                        apply(state, &outcome);
                        progress.attempt_ended(name);
                        log_end(name, state);
                        let _ = std::fs::remove_file(job_dir.join(executor::CANCEL_REQUEST));
                        if outcome.engine_gone && halted != Some(Halt::EngineGone) {
                            halted = Some(Halt::EngineGone);
                            staged.clear();
                        }
                        let retryable = matches!(state.status, Status::Failed | Status::Oom | Status::Lost)
                            || (state.status == Status::Timeout && plan.continue_on_timeout);
                        if stop == Stop::Run && halted.is_none() && retryable && auto_retries[index] < plan.retries {
                            auto_retries[index] += 1;
                            let wait = backoff(auto_retries[index]);
                            let resume = job_dir.join("checkpoints/last.ckpt").is_file();
                            tracing::info!(
                                "{name}: running it again in {}s (retry {} of {}){}",
                                wait.as_secs(),
                                auto_retries[index],
                                plan.retries,
                                if resume { ", resuming from checkpoints/last.ckpt" } else { "" }
                            );
                            alive += 1;
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(wait).await;
                                let _ = tx.send(Event::RetryDue { index });
                            });
                        } else {
                            progress.job_finished(name, state.status);
                        }
                        unwritten.push((index, outcome.container_id));
                    }
                    Event::RetryDue { index } => {
                        alive -= 1;
                        if stop == Stop::Run && halted.is_none() {
                            pending.push_front(index);
                        } else {
                            progress.job_finished(&plan.jobs[index].name, d.states[index].status);
                        }
                    }
                    Event::Withdrawn { index, slotted } => {
                        alive -= 1;
                        if slotted {
                            running -= 1;
                        }
                        d.withdraw(index);
                        pending.push_front(index);
                    }
                    Event::EngineGone { index, slotted } => {
                        alive -= 1;
                        if slotted {
                            running -= 1;
                        }
                        d.withdraw(index);
                        pending.push_front(index);
                        if halted != Some(Halt::EngineGone) {
                            halted = Some(Halt::EngineGone);
                            staged.clear();
                        }
                    }
                }
            }
            signal = signals.next() => {
                stop = if stop == Stop::Run { Stop::Graceful } else { Stop::Kill };
                match stop {
                    Stop::Graceful => tracing::warn!("{signal}: stopping the running jobs (SIGTERM, then SIGKILL after {}s); again to kill them now", options.stop_grace.as_secs()),
                    _ => tracing::warn!("{signal} again: killing the running jobs"),
                }
                let _ = stop_tx.send(stop);
                // Staged jobs never started: their tasks see the stop and withdraw.
                staged.clear();
            }
        }
    }
    for (index, container) in unwritten.drain(..) {
        write_state(dir, &plan.jobs[index].name, &d.states[index]);
        if let Some(id) = container {
            removals.push(id);
        }
    }
    while d.tasks.join_next().await.is_some() {}
    if halted == Some(Halt::EngineGone) {
        // Nothing can be removed without an engine; `tb clean` can later.
        drop(removals);
    } else {
        removals.finish().await;
    }
    progress.finish();

    Ok(Summary {
        jobs: plan.jobs.iter().map(|j| j.name.clone()).zip(d.states).collect(),
        interrupted: stop != Stop::Run,
        wall: began.elapsed(),
        halted,
    })
}

impl Dispatcher<'_> {
    /// The first pending job whose GPUs fit, removed from the queue; jobs
    /// that `tb cancel --job` asked to drop are marked cancelled on the way.
    fn next(&mut self, pending: &mut VecDeque<usize>, progress: &Progress) -> Option<usize> {
        loop {
            let free = self.free_gpus.len();
            let pos = pending.iter().position(|&i| self.plan.jobs[i].gpus as usize <= free)?;
            let index = pending.remove(pos)?;
            let name = &self.plan.jobs[index].name;
            let request = self.dir.job_dir(name).join(executor::CANCEL_REQUEST);
            if request.exists() {
                let state = &mut self.states[index];
                state.status = Status::Cancelled;
                state.error = Some("cancelled before it started (tb cancel)".into());
                state.finished_at = Some(Utc::now());
                write_state(self.dir, name, state);
                let _ = std::fs::remove_file(&request);
                tracing::info!("{name}: cancelled before it started");
                progress.job_finished(name, Status::Cancelled);
                continue;
            }
            return Some(index);
        }
    }

    fn launch(&self, index: usize, gpus: Vec<String>) -> Launch {
        let spec = &self.plan.jobs[index];
        Launch {
            job: crate::state::JobFile::new(&self.plan.name, &self.dir.id, self.states[index].attempt, spec),
            job_dir: self.dir.job_dir(&spec.name),
            downloads: self.plan.downloads.clone(),
            gpus,
            gpu_mode: self.plan.gpu_mode,
            batch_dir: self.dir.path.clone(),
            stop_grace: self.options.stop_grace,
            engine_wait: self.options.engine_wait,
        }
    }

    /// Starts a new attempt of job `index`: its container is created at
    /// once, and started when `go` fires.
    fn spawn(&mut self, index: usize, go: oneshot::Receiver<()>) {
        let spec = &self.plan.jobs[index];
        let gpus: Vec<String> = self.free_gpus.drain(..spec.gpus as usize).collect();
        self.gpus_of[index] = gpus.clone();
        let state = &mut self.states[index];
        if state.attempt > 0
            && let Err(e) = self.dir.archive_attempt(&spec.name, state.attempt, state)
        {
            tracing::warn!("job {}: {e:#}", spec.name);
        }
        state.begin_attempt();
        let launch = self.launch(index, gpus);
        let engine = self.engine.clone();
        let tx = self.tx.clone();
        let mut stop = self.stop_rx.clone();
        self.tasks.spawn(async move {
            let mut go = go;
            let mut prepared = executor::prepare(&engine, &launch).await;
            if matches!(&prepared, Err(e) if is_unreachable(e)) {
                tracing::warn!(
                    "job {}: the Docker engine is unreachable; waiting for it",
                    launch.job.spec.name
                );
                if !executor::wait_for_engine(&engine, launch.engine_wait).await {
                    let slotted = matches!(go.try_recv(), Ok(()));
                    let _ = tx.send(Event::EngineGone { index, slotted });
                    return;
                }
                prepared = executor::prepare(&engine, &launch).await;
            }
            // Whether it was given a slot (the dispatcher counts it running).
            let slotted = tokio::select! {
                r = &mut go => r.is_ok(),
                _ = stop.wait_for(|s| *s != Stop::Run) => false,
            };
            let go_ahead = slotted && *stop.borrow() == Stop::Run;
            // `tb cancel --job` may have come while it waited for its slot.
            let go_ahead = go_ahead && !launch.job_dir.join(executor::CANCEL_REQUEST).exists();
            if !go_ahead {
                if let Ok(p) = prepared {
                    executor::discard(&engine, p).await;
                }
                let _ = tx.send(Event::Withdrawn { index, slotted });
                return;
            }
            let started = tx.clone();
            let outcome = executor::run(&engine, prepared, &launch, stop, |id, at| {
                let _ = started.send(Event::Started {
                    index,
                    container_id: id.to_string(),
                    at,
                });
            })
            .await;
            if outcome.engine_gone && outcome.started_at.is_none() {
                let _ = tx.send(Event::EngineGone { index, slotted: true });
            } else {
                let _ = tx.send(Event::Finished { index, outcome });
            }
        });
    }

    /// Follows a container an earlier supervisor started.
    fn adopt(&mut self, a: &Adopt) {
        self.free_gpus.retain(|g| !a.gpus.contains(g));
        self.gpus_of[a.index] = a.gpus.clone();
        let launch = self.launch(a.index, a.gpus.clone());
        let engine = self.engine.clone();
        let tx = self.tx.clone();
        let stop = self.stop_rx.clone();
        let (index, id, started_at) = (a.index, a.container_id.clone(), a.started_at);
        tracing::info!("following {} again (container {})", launch.job.spec.name, short(&id));
        self.tasks.spawn(async move {
            let outcome = executor::reattach(&engine, &id, &launch, stop, started_at).await;
            let _ = tx.send(Event::Finished { index, outcome });
        });
    }

    /// Puts a job that never started back as its previous attempt left it.
    fn withdraw(&mut self, index: usize) {
        let freed = std::mem::take(&mut self.gpus_of[index]);
        self.free_gpus.extend(freed);
        let name = &self.plan.jobs[index].name;
        let state = &mut self.states[index];
        state.attempt -= 1;
        match state.attempts.last() {
            Some(r) if r.attempt == state.attempt && r.attempt > 0 => {
                let r = state.attempts.pop().expect("a record");
                state.status = r.status;
                state.exit_code = r.exit_code;
                state.oom_killed = r.oom_killed;
                state.error = r.error;
                state.started_at = r.started_at;
                state.finished_at = r.finished_at;
            }
            _ => state.status = Status::Pending,
        }
        state.container_id = None;
        write_state(self.dir, name, state);
    }
}

/// Before retry `n` (1-based): 2 s, 4 s, 6 s, … at most 30 s.
pub(crate) fn backoff(n: u32) -> Duration {
    Duration::from_secs((2 * n as u64).min(30))
}

pub(crate) fn apply(state: &mut JobState, outcome: &Outcome) {
    state.status = outcome.status;
    state.exit_code = outcome.exit_code;
    state.oom_killed = outcome.oom_killed;
    state.error = outcome.error.clone();
    state.container_id = outcome.container_id.clone().or(state.container_id.take());
    state.started_at = outcome.started_at.or(state.started_at);
    state.finished_at = Some(outcome.finished_at);
}

pub(crate) fn write_state(dir: &BatchDir, name: &str, state: &JobState) {
    // The state of one job failing to reach the disk must not end the
    // night; the error is logged and the job's container still ends.
    if let Err(e) = dir.write_job_state(name, state) {
        tracing::error!("job {name}: {e:#}");
    }
}

pub(crate) fn log_end(name: &str, state: &JobState) {
    let took = state
        .elapsed(Utc::now())
        .map(|d| format!(" after {}", crate::human::duration(d)))
        .unwrap_or_default();
    match (&state.status, &state.error) {
        (Status::Succeeded, _) => tracing::info!("{name} succeeded{took}"),
        (status, Some(e)) => tracing::warn!("{name}: {status}{took}: {e}"),
        (status, None) => tracing::warn!("{name}: {status}{took}"),
    }
}

/// Removes finished containers one at a time, behind the dispatcher: the
/// engine's removal work never crowds the next job's start.
struct Removals {
    queue: mpsc::UnboundedSender<String>,
    worker: tokio::task::JoinHandle<()>,
}

impl Removals {
    fn start(engine: Engine) -> Removals {
        let (queue, mut rx) = mpsc::unbounded_channel::<String>();
        let worker = tokio::spawn(async move {
            while let Some(id) = rx.recv().await {
                executor::engine_quiet(Duration::from_secs(1)).await;
                if let Err(e) = engine.remove(&id).await {
                    tracing::warn!("{e:#}");
                }
            }
        });
        Removals { queue, worker }
    }

    fn push(&self, id: String) {
        let _ = self.queue.send(id);
    }

    /// Waits until every queued container is removed.
    async fn finish(self) {
        drop(self.queue);
        let _ = self.worker.await;
    }
}

/// Ctrl-C and SIGTERM, as one stream of names.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "interrupted",
            _ = self.term.recv() => "terminated",
        }
    }
}
