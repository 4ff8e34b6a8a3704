//! Schedules a batch's jobs on the local engine: concurrency slots,
//! exclusive GPUs, one task per job that reports by message, signals. A
//! job's failure is data; nothing a job does stops the others.

use crate::docker::{Engine, short};
use crate::executor::{self, Launch, Outcome, Stop};
use crate::progress::Progress;
use crate::settings::Plan;
use crate::state::{BatchDir, JobState, Status};
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::path::PathBuf;
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
    /// A job prepared ahead that was never started (the batch was stopped).
    Withdrawn {
        index: usize,
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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stop_grace: executor::STOP_GRACE,
        }
    }
}

/// Runs the jobs of `plan` listed in `to_run` (indexes, in order) in `dir`;
/// returns when all have ended, or when a stop (Ctrl-C, SIGTERM) has
/// brought the running ones down. The summary covers every job of the plan.
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
    let downloads = plan.downloads.clone();
    let batch_dir: PathBuf = dir.path.clone();
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
    let mut gpus_of: Vec<Vec<String>> = vec![Vec::new(); plan.jobs.len()];
    let mut pending: VecDeque<usize> = to_run.iter().copied().collect();
    let mut auto_retries = vec![0u32; plan.jobs.len()];
    let mut free_gpus: Vec<String> = plan.gpus.ids.clone();
    let mut running = 0usize;
    let mut alive = 0usize;
    // Jobs prepared ahead (container created, output attached), waiting
    // for a slot: their start signals, oldest first.
    let mut staged: VecDeque<oneshot::Sender<()>> = VecDeque::new();
    let stage_depth = plan.concurrency.min(MAX_STAGED);
    // Finished jobs whose state is written once the freed slot is refilled:
    // the next start does not wait for an fsync.
    // Each is removed after its state is written (output drained and
    // state on disk first), by a queue that nobody waits for.
    let mut unwritten: Vec<(usize, Option<String>)> = Vec::new();
    let mut tasks = JoinSet::new();
    let removals = Removals::start(engine.clone());
    let mut stop = Stop::Run;
    let mut signals = Signals::new()?;

    progress.start(to_run.len());
    loop {
        if stop == Stop::Run {
            while running < plan.concurrency {
                if let Some(go) = staged.pop_front() {
                    let _ = go.send(());
                    running += 1;
                    continue;
                }
                let Some(index) = take_fitting(&mut pending, plan, free_gpus.len()) else {
                    break;
                };
                let (go_tx, go_rx) = oneshot::channel();
                let _ = go_tx.send(());
                spawn_job(
                    index,
                    plan,
                    dir,
                    &downloads,
                    &batch_dir,
                    options,
                    &mut free_gpus,
                    &mut gpus_of,
                    &mut states,
                    engine,
                    &tx,
                    &stop_rx,
                    go_rx,
                    &mut tasks,
                );
                running += 1;
                alive += 1;
            }
        }
        for (index, container) in unwritten.drain(..) {
            write_state(dir, &plan.jobs[index].name, &states[index]);
            if let Some(id) = container {
                removals.push(id);
            }
        }
        if stop == Stop::Run {
            // Create the next containers while the slots are busy: the
            // engine's create is then off the critical path when one frees.
            while staged.len() < stage_depth {
                let Some(index) = take_fitting(&mut pending, plan, free_gpus.len()) else {
                    break;
                };
                let (go_tx, go_rx) = oneshot::channel();
                spawn_job(
                    index,
                    plan,
                    dir,
                    &downloads,
                    &batch_dir,
                    options,
                    &mut free_gpus,
                    &mut gpus_of,
                    &mut states,
                    engine,
                    &tx,
                    &stop_rx,
                    go_rx,
                    &mut tasks,
                );
                staged.push_back(go_tx);
                alive += 1;
            }
        }
        if alive == 0 && (pending.is_empty() || stop != Stop::Run) {
            break;
        }
        tokio::select! {
            event = rx.recv() => {
                let Some(event) = event else { break };
                match event {
                    Event::Started { index, container_id, at } => {
                        let name = &plan.jobs[index].name;
                        let state = &mut states[index];
                        state.status = Status::Running;
                        state.container_id = Some(container_id.clone());
                        state.started_at = Some(at);
                        state.gpus = gpus_of[index].clone();
                        tracing::info!("started {name} (attempt {}) in container {}", state.attempt, short(&container_id));
                        write_state(dir, name, state);
                        progress.job_started(name);
                    }
                    Event::Finished { index, outcome } => {
                        running -= 1;
                        alive -= 1;
                        free_gpus.append(&mut gpus_of[index]);
                        let name = &plan.jobs[index].name;
                        let state = &mut states[index];
                        apply(state, &outcome);
                        log_end(name, state);
                        let retryable = matches!(state.status, Status::Failed | Status::Oom | Status::Lost)
                            || (state.status == Status::Timeout && plan.continue_on_timeout);
                        if stop == Stop::Run && retryable && auto_retries[index] < plan.retries {
                            auto_retries[index] += 1;
                            let wait = backoff(auto_retries[index]);
                            let resume = dir.job_dir(name).join("checkpoints/last.ckpt").is_file();
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
                        if stop == Stop::Run {
                            pending.push_front(index);
                        } else {
                            progress.job_finished(&plan.jobs[index].name, states[index].status);
                        }
                    }
                    Event::Withdrawn { index } => {
                        alive -= 1;
                        free_gpus.append(&mut gpus_of[index]);
                        let name = &plan.jobs[index].name;
                        let state = &mut states[index];
                        state.attempt -= 1;
                        // Back to how the previous attempt (if any) left it.
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
                        write_state(dir, name, state);
                        pending.push_front(index);
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
        write_state(dir, &plan.jobs[index].name, &states[index]);
        if let Some(id) = container {
            removals.push(id);
        }
    }
    while tasks.join_next().await.is_some() {}
    removals.finish().await;
    progress.finish();

    Ok(Summary {
        jobs: plan.jobs.iter().map(|j| j.name.clone()).zip(states).collect(),
        interrupted: stop != Stop::Run,
        wall: began.elapsed(),
    })
}

/// The first pending job whose GPUs fit in `free`, removed from the queue.
fn take_fitting(pending: &mut VecDeque<usize>, plan: &Plan, free: usize) -> Option<usize> {
    let pos = pending.iter().position(|&i| plan.jobs[i].gpus as usize <= free)?;
    pending.remove(pos)
}

#[allow(clippy::too_many_arguments)]
fn spawn_job(
    index: usize,
    plan: &Plan,
    dir: &BatchDir,
    downloads: &std::path::Path,
    batch_dir: &std::path::Path,
    options: &Options,
    free_gpus: &mut Vec<String>,
    gpus_of: &mut [Vec<String>],
    states: &mut [JobState],
    engine: &Engine,
    tx: &mpsc::UnboundedSender<Event>,
    stop_rx: &watch::Receiver<Stop>,
    go: oneshot::Receiver<()>,
    tasks: &mut JoinSet<()>,
) {
    let spec = plan.jobs[index].clone();
    let gpus: Vec<String> = free_gpus.drain(..spec.gpus as usize).collect();
    gpus_of[index] = gpus.clone();
    let state = &mut states[index];
    if state.attempt > 0
        && let Err(e) = dir.archive_attempt(&spec.name, state.attempt, state)
    {
        tracing::warn!("job {}: {e:#}", spec.name);
    }
    state.begin_attempt();
    let launch = Launch {
        job: crate::state::JobFile::new(&plan.name, &dir.id, state.attempt, &spec),
        job_dir: dir.job_dir(&plan.jobs[index].name),
        downloads: downloads.to_path_buf(),
        gpus,
        gpu_mode: plan.gpu_mode,
        batch_dir: batch_dir.to_path_buf(),
        stop_grace: options.stop_grace,
    };
    let engine = engine.clone();
    let tx = tx.clone();
    let mut stop = stop_rx.clone();
    tasks.spawn(async move {
        let prepared = executor::prepare(&engine, &launch).await;
        let go_ahead = tokio::select! {
            r = go => r.is_ok(),
            _ = stop.wait_for(|s| *s != Stop::Run) => false,
        };
        if !go_ahead {
            if let Ok(p) = prepared {
                executor::discard(&engine, p).await;
            }
            let _ = tx.send(Event::Withdrawn { index });
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
        let _ = tx.send(Event::Finished { index, outcome });
    });
}

/// Before retry `n` (1-based): 2 s, 4 s, 6 s, … at most 30 s.
fn backoff(n: u32) -> Duration {
    Duration::from_secs((2 * n as u64).min(30))
}

fn apply(state: &mut JobState, outcome: &Outcome) {
    state.status = outcome.status;
    state.exit_code = outcome.exit_code;
    state.oom_killed = outcome.oom_killed;
    state.error = outcome.error.clone();
    state.container_id = outcome.container_id.clone().or(state.container_id.take());
    state.started_at = outcome.started_at.or(state.started_at);
    state.finished_at = Some(outcome.finished_at);
}

fn write_state(dir: &BatchDir, name: &str, state: &JobState) {
    // The state of one job failing to reach the disk must not end the
    // night; the error is logged and the job's container still ends.
    if let Err(e) = dir.write_job_state(name, state) {
        tracing::error!("job {name}: {e:#}");
    }
}

fn log_end(name: &str, state: &JobState) {
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

/// Ctrl-C and SIGTERM, as one stream of names.
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
