//! The one dispatcher: runs a batch's jobs on a backend. A single
//! `select!` loop turns what happens — backend events, signals, retries
//! falling due, the deadline, `tb cancel` requests — into one [`Input`] at
//! a time; [`decide`] decides; the loop carries the decision out. It is the
//! only code that writes job state while a batch runs, whatever the
//! backend. [`supervise`] wraps it for the commands: the batch's own state,
//! the report and summary at the end, the exit status.

mod close;
pub mod decide;
mod elsewhere;

pub use decide::{Halt, backoff, log_end};

use crate::backend::{Attempt, Backend, Found, Ready};
use crate::exit::Exit;
use crate::logging;
use crate::progress::Progress;
use crate::run::{BatchDir, BatchStatus, Halted, JobFile, JobState, Lock, Status, Supervisor};
use crate::settings::Plan;
use crate::signal::Signals;
use chrono::{DateTime, Utc};
use decide::{Action, Dispatcher, Input, Note};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The signals to stop on, from a caller that listened before the
    /// batch began (`tb watch`): one that came meanwhile stops it before
    /// any job starts. `None`: the dispatcher listens from its start.
    pub signals: Option<Signals>,
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

    /// Every job succeeded (or was pruned: a sweep's losing trial, stopped
    /// on purpose, is no failure of the batch).
    pub fn all_fine(&self) -> bool {
        self.jobs.iter().all(|(_, s)| s.status().is_fine())
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
    state.halted = None;
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
    let following = plan.settings.mlflow.as_ref().and_then(|spec| {
        let names = plan.jobs.iter().map(|j| j.name.clone()).collect();
        crate::mlflow::Following::start(spec, dir, &plan.name, names)
            .map_err(|e| {
                tracing::warn!(
                    "{e:#}; the batch runs without MLflow (`tb mlflow-sync {}` sends it later)",
                    dir.id
                )
            })
            .ok()
    });
    let summary = run(plan, dir, backend.as_mut(), ready, work, &options, &progress).await?;

    let mut state = dir.read_batch()?;
    state.status = if summary.interrupted || summary.halted.is_some() {
        BatchStatus::Interrupted
    } else {
        BatchStatus::Finished
    };
    state.finished_at = Some(Utc::now());
    state.engine_lost_at = match &summary.halted {
        // Given up on now: what a signal stops from here on, the engine
        // stopped as it came back.
        Some(Halt::Gone(_)) => Some(Utc::now()),
        _ => None,
    };
    state.halted = summary.halted.as_ref().map(|halt| match halt {
        Halt::Deadline => Halted::Deadline,
        Halt::Gone(_) => Halted::EngineGone,
    });
    dir.write_batch(&state)?;
    let mut deploy_interrupted = false;
    if let Some(spec) = &plan.settings.deploy {
        let finished = state.status == BatchStatus::Finished;
        deploy_interrupted =
            crate::deploy::at_end(dir, spec, plan.gpus.ids.clone(), finished, options.signals.as_ref()).await;
    }
    close::close(plan, dir, &summary);
    if let Some(following) = following {
        let ended = summary.interrupted || summary.halted.is_some();
        following
            .finish(crate::mlflow::batch_status(ended, summary.all_fine()))
            .await;
    }
    let pending = summary.count(Status::Pending);
    let running = summary.count(Status::Running);
    match &summary.halted {
        // One next step, the one that finishes the batch.
        Some(Halt::Gone(why)) => tracing::error!(
            "{why}: tb stopped with {running} job(s) left running and {pending} pending. Run `tb resume {}` once it \
             is back: it records how the running ones ended (exit status and output) and runs the rest",
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
    Ok(if summary.interrupted || deploy_interrupted {
        Exit::Interrupted
    } else if summary.all_fine() {
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
    let held = elsewhere::Held::of(&work.launch, &states);
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
    let mut signals = match &options.signals {
        Some(signals) => signals.clone(),
        None => Signals::new()?,
    };
    let mut loop_ = Loop {
        plan,
        dir,
        ready,
        progress,
        unwritten: std::collections::HashSet::new(),
        held,
    };
    let mut pruning = Pruning::load(plan, dir)?;

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
    // A run followed again that the rules had stopped before the last
    // supervisor died: stopped again now, before it can end as anything else.
    for input in pruning.decided(&d) {
        let actions = d.handle(input, Instant::now());
        loop_.carry_out(&mut d, backend, actions);
    }
    d.queue.extend(work.launch);
    if let Some(signal) = signals.pending() {
        // Came before this loop listened: nothing new starts.
        let actions = d.handle(Input::Signal(signal), Instant::now());
        loop_.carry_out(&mut d, backend, actions);
    }
    let deadline = options.deadline;
    let mut requests = tokio::time::interval(REQUESTS_EVERY);
    requests.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    let mut job_files = None;
    loop {
        if d.halt.is_none()
            && let Some(at) = deadline
            && Utc::now() >= at
        {
            let actions = d.handle(Input::Deadline, Instant::now());
            loop_.carry_out(&mut d, backend, actions);
        }
        loop_.fill(&mut d, backend);
        // Once the first jobs are handed over (with their own files).
        job_files.get_or_insert_with(|| JobFiles::start(plan, dir));
        if d.done() {
            break;
        }
        let retry = d.next_retry();
        let deadline_in = deadline
            .filter(|_| d.halt.is_none())
            .and_then(|at| Instant::now().checked_add((at - Utc::now()).to_std().unwrap_or_default()));
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
                loop_.settle_held(&mut d);
                for input in pruning.look(&d) {
                    let actions = d.handle(input, Instant::now());
                    loop_.carry_out(&mut d, backend, actions);
                }
                continue;
            }
        };
        if let Input::Backend(crate::backend::Event::Ended { index, .. }) = &input {
            // What it logged up to its end counts for the jobs after it.
            pruning.ended(*index);
        }
        let actions = d.handle(input, Instant::now());
        loop_.carry_out(&mut d, backend, actions);
    }
    if let Some(files) = job_files {
        // Ended early: the rest can wait for the next supervisor.
        files.finish(dir, d.stop.is_some() || d.halt.is_some());
    }
    pruning.save();
    backend.close(matches!(d.halt, Some(Halt::Gone(_)))).await;
    progress.finish();
    Ok(Summary {
        jobs: plan.jobs.iter().map(|j| j.name.clone()).zip(d.states).collect(),
        interrupted: d.stop.is_some(),
        wall: began.elapsed(),
        halted: d.halt,
    })
}

/// The jobs' own files ([`BatchDir::write_job_files`]), written on a
/// thread of their own beside the loop, at a lower priority: the jobs come
/// first. A batch that ends early (Ctrl-C, a deadline) stops it, and the
/// next supervisor writes the rest.
struct JobFiles {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<usize>>>,
}

impl JobFiles {
    fn start(plan: &Plan, dir: &BatchDir) -> JobFiles {
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, name, jobs, stopped) = (dir.clone(), plan.name.clone(), plan.jobs.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("tb-job-files".into())
            .spawn(move || {
                // SAFETY: setpriority on this thread's own id touches no memory.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
                dir.write_job_files(&name, &jobs, &stopped)
            })
            .map_err(|e| tracing::warn!("could not start writing the jobs' files: {e}"))
            .ok();
        JobFiles { stop, thread }
    }

    /// Waits for the writing to end (or, with `stop`, stops it where it is:
    /// a job's files at most), saying what went wrong.
    fn finish(self, dir: &BatchDir, stop: bool) {
        self.stop.store(stop, Ordering::Relaxed);
        let Some(thread) = self.thread else {
            return;
        };
        match thread.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(
                "{e:#}; jobs without files read as `plan.json` says, and `tb resume {}` writes them",
                dir.id
            ),
            Err(_) => tracing::warn!("writing the jobs' files panicked; `tb resume {}` writes them", dir.id),
        }
    }
}

/// The sweep's pruning while the batch runs: the running jobs' metrics,
/// read as they grow, through the rules into `prune.json`.
struct Pruning<'a> {
    plan: &'a Plan,
    dir: &'a BatchDir,
    table: crate::prune::Table,
    readers: std::collections::HashMap<usize, crate::metrics::Reader>,
    /// When the table was last written.
    saved: Instant,
}

/// How often a table with new values (and no new stop) is written: a stop
/// is written before it is acted on; values in between can be read again
/// from the jobs' files.
const PRUNE_SAVE_EVERY: Duration = Duration::from_secs(5);

impl<'a> Pruning<'a> {
    /// The batch's table as an earlier supervisor left it (its decisions
    /// stand), or a new one.
    fn load(plan: &'a Plan, dir: &'a BatchDir) -> anyhow::Result<Pruning<'a>> {
        Ok(Pruning {
            plan,
            dir,
            table: crate::prune::Table::load(&dir.path)?,
            readers: std::collections::HashMap::new(),
            saved: Instant::now(),
        })
    }

    fn curve(&mut self, index: usize, live: bool) -> Option<(&crate::prune::PruneSpec, Vec<(u64, f64)>)> {
        let spec = &self.plan.jobs[index];
        let prune = spec.prune.as_ref()?;
        let reader = self
            .readers
            .entry(index)
            .or_insert_with(|| crate::metrics::Reader::new(&self.dir.job_dir(&spec.name), spec.metrics.source));
        reader.poll(live);
        Some((prune, crate::prune::curve(&reader.metrics(), prune)))
    }

    /// The running jobs that a decision already stopped.
    fn decided(&self, d: &Dispatcher) -> Vec<Input> {
        d.running()
            .filter_map(|index| {
                let decision = self.table.stopped(&self.plan.jobs[index].name)?;
                Some(Input::Prune {
                    index,
                    why: decision.describe(),
                })
            })
            .collect()
    }

    /// Reads what the running jobs logged since the last look; the jobs the
    /// rules stop, as inputs for the dispatcher (the table written first).
    fn look(&mut self, d: &Dispatcher) -> Vec<Input> {
        let mut stops = Vec::new();
        for index in d.running().collect::<Vec<_>>() {
            let Some((prune, curve)) = self.curve(index, true) else {
                continue;
            };
            let prune = prune.clone();
            let name = &self.plan.jobs[index].name;
            if let Some(decision) = self.table.stopped(name) {
                // Decided before (by a supervisor since killed): it stands.
                stops.push(Input::Prune {
                    index,
                    why: decision.describe(),
                });
                continue;
            }
            for decision in self.table.observe(name, &prune, &curve, Utc::now()) {
                let why = decision.describe();
                if decision.stop {
                    tracing::info!("{name}: {why}");
                    stops.push(Input::Prune { index, why });
                } else {
                    tracing::debug!("{name}: {why}");
                }
            }
        }
        if !stops.is_empty() || self.saved.elapsed() >= PRUNE_SAVE_EVERY {
            self.save();
        }
        stops
    }

    /// Job `index` ended: its last values are recorded, and its reader goes.
    fn ended(&mut self, index: usize) {
        if let Some((prune, curve)) = self.curve(index, false) {
            let prune = prune.clone();
            self.table.record(&self.plan.jobs[index].name, &prune, &curve);
        }
        self.readers.remove(&index);
        if self.saved.elapsed() >= PRUNE_SAVE_EVERY {
            self.save();
        }
    }

    /// Writes the table if it changed.
    fn save(&mut self) {
        if !self.table.dirty() {
            return;
        }
        self.saved = Instant::now();
        if let Err(e) = self.table.save(&self.dir.path) {
            tracing::error!("{e:#}");
        }
    }
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
    /// Queued jobs waiting for the same job's run in another batch.
    held: elsewhere::Held,
}

impl Loop<'_> {
    /// Hands queued jobs to the backend while it has room: the first the
    /// backend's `first_fit` admits (locally: in queue order where the
    /// GPUs fit, except that a job waiting for GPUs keeps the ones it waits
    /// for from the jobs behind it, so it is not starved; a job that needs
    /// no GPU is never held up). Each begins a new attempt, written before
    /// it is handed over.
    fn fill(&mut self, d: &mut Dispatcher, backend: &mut dyn Backend) {
        while d.starting() {
            let mut waiting = d
                .queue
                .iter()
                .enumerate()
                .filter(|(_, i)| !self.held.holds(**i))
                .map(|(pos, &i)| (pos, &self.plan.jobs[i]));
            let Some(pos) = backend.first_fit(&mut waiting) else {
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
            let image_id = self.ready.image_ids[index].clone();
            // What it runs on now decides its result (`--skip-done`).
            state.identify(crate::identity::of(spec, image_id.as_deref()));
            state.begin_attempt(image_id);
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

    /// Held jobs whose run in another batch is over: they take its result,
    /// or are let go to run here.
    fn settle_held(&mut self, d: &mut Dispatcher) {
        for (index, ended) in self.held.look(|i| d.queue.contains(&i)) {
            let reused = match ended {
                elsewhere::Ended::Succeeded(origin) => self.reuse(d, index, &origin),
                elsewhere::Ended::Not(why) => {
                    tracing::info!("{}: {why}; running it here", self.plan.jobs[index].name);
                    false
                }
            };
            if !reused {
                d.states[index].stop_waiting();
                self.write(d, index);
            }
        }
    }

    /// Queued job `index` takes the result of the run in `origin` and is
    /// done; whether it could.
    fn reuse(&self, d: &mut Dispatcher, index: usize, origin: &std::path::Path) -> bool {
        let name = &self.plan.jobs[index].name;
        let mut state = d.states[index].clone();
        if let Err(e) = crate::identity::reuse(self.dir, name, origin, &mut state) {
            tracing::error!("{name}: {e:#}; running it here");
            return false;
        }
        tracing::info!(
            "{name}: succeeded in batch {}; reusing that result",
            crate::run::batch_of(origin)
        );
        d.states[index] = state;
        d.queue.retain(|&i| i != index);
        self.progress.job_finished(name, Status::Succeeded);
        true
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
                // Only a run whose end is recorded may be removed.
                Action::Collect(i) => {
                    backend.collect(i, d.states[i].handle().filter(|_| d.states[i].status().is_final()))
                }
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
