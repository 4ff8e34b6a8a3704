//! The Slurm backend: each attempt is an `sbatch` job whose script runs
//! `tb exec JOB_DIR` on its node ([`node`]: the same executor as on one
//! machine, so the job directory and logs look the same). Slurm places jobs
//! and assigns GPUs; this side submits, follows Slurm's view (`squeue`,
//! then `scontrol` once a job left the queue) and what `tb exec` reports,
//! and stops jobs with `scancel`. It needs no Docker engine on this host.

pub mod cli;
pub mod gres;
pub mod node;

use super::{Attempt, Backend, Event, Found, Ready, Request, Stop, Survey};
use crate::batch::{Problem, SlurmSection};
use crate::gpu::GpuShare;
use crate::run::{BatchDir, JobState, Outcome, RunHandle, Status};
use crate::settings::{JobSpec, Plan};
use anyhow::Context;
use chrono::Utc;
use node::read_record;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A Slurm job id as a number, for ordering ("9" before "10").
fn numeric(id: &str) -> u64 {
    id.split(['_', '.']).next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// How often Slurm and the job directories are looked at.
const POLL: Duration = Duration::from_millis(1000);
/// Rounds a job may be missing from `squeue` (caught mid-transition)
/// before tb asks `scontrol` how it ended.
const UNKNOWN_ROUNDS: u32 = 5;
/// After a graceful stop, how long `tb exec` has to record the outcome.
fn stop_patience() -> Duration {
    crate::executor::STOP_GRACE + Duration::from_secs(60)
}

/// A Slurm cluster, through its command-line tools.
pub struct Slurm {
    section: SlurmSection,
    session: Option<Session>,
}

struct Session {
    commands: mpsc::UnboundedSender<Command>,
    actor: tokio::task::JoinHandle<()>,
    handed: usize,
    most: usize,
}

/// What the dispatcher's calls become for the actor that talks to Slurm.
enum Command {
    Launch {
        index: usize,
        attempt: Attempt,
    },
    Follow {
        index: usize,
        attempt: Attempt,
        found: Found,
    },
    Request {
        index: usize,
        request: Request,
    },
}

impl Slurm {
    pub fn new(plan: &Plan) -> Slurm {
        Slurm {
            section: plan.settings.slurm.clone(),
            session: None,
        }
    }

    /// Whether the partition's nodes have the GPUs and shards the jobs ask
    /// for; and, for shares, how many shards one GPU has: `shards_per_gpu`
    /// if set, else learned from the nodes' gres (then kept for the
    /// submissions). What it found, for the describe line.
    async fn gpu_problems(&mut self, plan: &Plan, problems: &mut Vec<Problem>) -> anyhow::Result<String> {
        let whole = plan.jobs.iter().find(|j| matches!(j.gpus, GpuShare::Whole(n) if n > 0));
        let shared = plan.jobs.iter().find(|j| j.gpus.fraction().is_some());
        if whole.is_none() && shared.is_none() {
            return Ok(String::new());
        }
        let lines = cli::node_gres(self.section.partition.as_deref()).await?;
        let offers = |name: &str| gres::offers(&lines, name);
        let lacking = |job: &JobSpec, name: &str, hint: &str| Problem {
            at: None,
            message: format!(
                "job `{}` asks for {} but the cluster's nodes offer no `{name}` gres",
                job.name,
                job.gpus.describe()
            ),
            hint: Some(hint.into()),
        };
        if let Some(job) = whole
            && !offers("gpu")
        {
            problems.push(lacking(
                job,
                "gpu",
                "set gpus = 0 (on Slurm, gpus = \"auto\" means 1), or pick a GPU partition in [batch.slurm]",
            ));
        }
        let Some(job) = shared else {
            return Ok(String::new());
        };
        if !offers("shard") {
            problems.push(lacking(
                job,
                "shard",
                "ask for a whole GPU (gpus = 1), or pick a partition whose nodes have GPU sharding set up",
            ));
            return Ok(String::new());
        }
        match shards_per_gpu(&lines, self.section.shards_per_gpu, job) {
            Ok((n, source)) => {
                self.section.shards_per_gpu = Some(n);
                Ok(format!(", {n} shards per GPU ({source})"))
            }
            Err(problem) => {
                problems.push(problem);
                Ok(String::new())
            }
        }
    }
}

/// The shards one GPU has, and where that came from: `set`
/// (`shards_per_gpu`), else the nodes' gres `lines`; a problem naming
/// `shards_per_gpu` when neither says, for `job`'s sake.
fn shards_per_gpu(lines: &[String], set: Option<u32>, job: &JobSpec) -> Result<(u32, &'static str), Problem> {
    let learned = gres::shards_per_gpu(lines);
    if let Some(n) = set {
        if let Some(m) = learned.filter(|m| *m != n) {
            tracing::warn!("[batch.slurm] shards_per_gpu = {n}, but the cluster's nodes have {m} per GPU; using {n}");
        }
        return Ok((n, "shards_per_gpu"));
    }
    learned.map(|n| (n, "from sinfo")).ok_or_else(|| Problem {
        at: None,
        message: format!(
            "job `{}` asks for {}, but how many shards the cluster gives one GPU cannot be told from its nodes' gres ({})",
            job.name,
            job.gpus.describe(),
            if lines.is_empty() { "none".to_string() } else { lines.join("; ") }
        ),
        hint: Some("set shards_per_gpu in [batch.slurm]: Gres=gpu:2,shard:64 in slurm.conf means 32".into()),
    })
}

#[async_trait::async_trait]
impl Backend for Slurm {
    async fn preflight(&mut self, plan: &Plan, runs_dir: &Path) -> anyhow::Result<Ready> {
        let version = cli::version().await.map_err(|e| {
            crate::error::with_hint(
                e.context("the Slurm backend needs the Slurm client tools (sbatch) on this host"),
                "install slurm-client, and point SLURM_CONF at the cluster's slurm.conf",
            )
        })?;
        let partitions = cli::partitions()
            .await
            .map_err(|e| crate::error::with_hint(e, "is slurmctld running, and SLURM_CONF right?"))?;
        let mut problems = Vec::new();
        let partition = self.section.partition.clone();
        let partition = partition.as_deref();
        if let Some(p) = partition
            && !partitions.iter().any(|q| q == p)
        {
            problems.push(Problem {
                at: None,
                message: format!("Slurm has no partition `{p}`"),
                hint: Some(format!("the partitions are: {}", partitions.join(", "))),
            });
        }
        let shards = self.gpu_problems(plan, &mut problems).await?;
        problems.extend(crate::preflight::directories(plan, runs_dir));
        if problems.is_empty() {
            // The nodes write the job directories: they must see the runs
            // directory (or, before it exists, where it will be).
            let shared = runs_dir.ancestors().find(|p| p.exists()).unwrap_or(runs_dir);
            match cli::node_sees(partition, shared).await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => problems.push(Problem {
                    at: None,
                    message: format!(
                        "the cluster's nodes do not see the runs directory `{}`{}",
                        runs_dir.display(),
                        if why.is_empty() {
                            String::new()
                        } else {
                            format!(": {why}")
                        }
                    ),
                    hint: Some(
                        "put the runs directory on a filesystem the nodes share (--runs-dir or TB_RUNS_DIR)".into(),
                    ),
                }),
                Err(e) => tracing::warn!("could not check that the nodes see `{}`: {e:#}", shared.display()),
            }
        }
        crate::preflight::verdict(problems)?;
        Ok(Ready {
            // The images are the nodes' engines' business.
            image_ids: vec![None; plan.jobs.len()],
            describe: format!(
                "{version}, partition {}{shards}",
                partition.unwrap_or("(the cluster's default)")
            ),
        })
    }

    async fn survey(&mut self, dir: &BatchDir, names: &[String], states: &[JobState]) -> anyhow::Result<Survey> {
        let queue = cli::squeue()
            .await
            .context("cannot tell which of the batch's Slurm jobs still run")?;
        // Ours, by name: several jobs may carry one name (a submission
        // taken back and made again); the newest one still in Slurm's hands.
        let mut by_name: BTreeMap<&str, &str> = BTreeMap::new();
        let prefix = format!("tb-{}-", dir.id);
        for (id, l) in queue.iter().filter(|(_, l)| l.name.starts_with(&prefix)) {
            let newer = by_name.get(l.name.as_str()).is_none_or(|old| {
                let old_live = queue.get(*old).is_some_and(|o| cli::in_flight(&o.state));
                (cli::in_flight(&l.state), numeric(id)) > (old_live, numeric(old))
            });
            if newer {
                by_name.insert(&l.name, id);
            }
        }
        let mut survey = Survey {
            jobs: vec![None; names.len()],
            leftovers: Vec::new(),
        };
        let mut current: Vec<String> = Vec::new();
        for (i, (name, state)) in names.iter().zip(states).enumerate() {
            if state.status().is_final() || state.attempt() == 0 {
                continue;
            }
            let job_dir = dir.job_dir(name);
            let job_id = state
                .handle()
                .and_then(|h| h.slurm_job_id())
                .map(String::from)
                // Submitted, but the supervisor died before recording the
                // id: `tb exec` recorded it, or Slurm has it by name.
                .or_else(|| read_record(&job_dir, state.attempt(), None).and_then(|r| r.slurm_job_id))
                .or_else(|| {
                    by_name
                        .get(cli::job_name(&dir.id, name, state.attempt()).as_str())
                        .map(|id| id.to_string())
                });
            let Some(job_id) = job_id else { continue };
            current.push(job_id.clone());
            let record = read_record(&job_dir, state.attempt(), Some(&job_id));
            let listed = queue.get(&job_id);
            if listed.is_none() && record.as_ref().is_none_or(|r| r.outcome.is_none()) {
                continue;
            }
            survey.jobs[i] = Some(Found {
                handle: RunHandle::Slurm {
                    job_id,
                    container: record.as_ref().and_then(|r| r.container_id.clone()),
                },
                attempt: state.attempt(),
                // Running in Slurm is not yet running in a container.
                started: record.as_ref().is_some_and(|r| r.started_at.is_some()),
                running: listed.is_some_and(|l| cli::in_flight(&l.state)),
                started_at: record.as_ref().and_then(|r| r.started_at),
                gpu_share: record.as_ref().and_then(|r| r.gpu_share),
                gpus: record.map(|r| r.gpus).unwrap_or_default(),
            });
        }
        // Anything else of this batch still in Slurm's hands belongs to no
        // current attempt.
        for (id, l) in &queue {
            if l.name.starts_with(&prefix) && cli::in_flight(&l.state) && !current.contains(id) {
                survey.leftovers.push(RunHandle::Slurm {
                    job_id: id.clone(),
                    container: None,
                });
            }
        }
        Ok(survey)
    }

    async fn discard(&mut self, leftovers: &[RunHandle]) -> anyhow::Result<()> {
        if leftovers.is_empty() {
            return Ok(());
        }
        // Only what Slurm still has: cancelling a finished job is an error.
        let queue = cli::squeue().await?;
        let ids: Vec<String> = leftovers
            .iter()
            .filter_map(|h| h.slurm_job_id())
            .filter(|id| queue.get(*id).is_some_and(|l| cli::in_flight(&l.state)))
            .map(String::from)
            .collect();
        if !ids.is_empty() {
            tracing::info!("cancelling leftover Slurm jobs {}", ids.join(" "));
            cli::scancel(&ids).await?;
        }
        Ok(())
    }

    async fn stop(
        &mut self,
        dir: &BatchDir,
        job: &str,
        handle: &RunHandle,
        _grace: Duration,
    ) -> anyhow::Result<Option<Outcome>> {
        let Some(id) = handle.slurm_job_id().map(String::from) else {
            return Ok(None);
        };
        let ids = [id.clone()];
        let attempt = dir.read_job_state(job)?.attempt();
        let recorded = || read_record(&dir.job_dir(job), attempt, Some(&id)).and_then(|r| r.outcome);
        cli::scancel_pending(&ids).await?;
        cli::terminate(&ids).await?;
        let until = Instant::now() + stop_patience();
        loop {
            if let Some(outcome) = recorded() {
                return Ok(Some(outcome));
            }
            let queue = cli::squeue().await?;
            if !queue.get(&id).is_some_and(|l| cli::in_flight(&l.state)) {
                // Gone from the queue: a last look for what tb exec wrote.
                tokio::time::sleep(POLL).await;
                return Ok(recorded());
            }
            if Instant::now() > until {
                eprintln!("{job}: Slurm job {id} still running; cancelling it outright");
                cli::scancel(&ids).await?;
                return Ok(None);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn open(&mut self, plan: &Plan, dir: &BatchDir, events: mpsc::UnboundedSender<Event>) -> anyhow::Result<()> {
        let tb = std::env::current_exe().context("failed to find the tb executable")?;
        let (commands, rx) = mpsc::unbounded_channel();
        let actor = Actor {
            dir: dir.clone(),
            section: self.section.clone(),
            tb,
            events,
            tracked: BTreeMap::new(),
            resubmit: Vec::new(),
        };
        self.session = Some(Session {
            commands,
            actor: tokio::spawn(actor.run(rx)),
            handed: 0,
            most: plan.settings.concurrency.max(1),
        });
        Ok(())
    }

    fn has_room(&self, _job: &JobSpec) -> bool {
        self.session.as_ref().is_some_and(|s| s.handed < s.most)
    }

    fn launch(&mut self, index: usize, attempt: Attempt) {
        let s = self.session.as_mut().expect("an open session");
        s.handed += 1;
        let _ = s.commands.send(Command::Launch { index, attempt });
    }

    fn follow(&mut self, index: usize, attempt: Attempt, found: Found) {
        let s = self.session.as_mut().expect("an open session");
        s.handed += 1;
        let _ = s.commands.send(Command::Follow { index, attempt, found });
    }

    fn request(&mut self, index: usize, request: Request) {
        if let Some(s) = &self.session {
            let _ = s.commands.send(Command::Request { index, request });
        }
    }

    fn collect(&mut self, _index: usize, _handle: Option<&RunHandle>) {
        if let Some(s) = self.session.as_mut() {
            s.handed = s.handed.saturating_sub(1);
        }
    }

    async fn close(&mut self, _gone: bool) {
        if let Some(s) = self.session.take() {
            drop(s.commands);
            let _ = s.actor.await;
        }
    }
}

/// One attempt in Slurm's hands.
struct Tracked {
    name: String,
    attempt: u32,
    job_id: String,
    /// `tb exec` recorded the start (and the dispatcher was told).
    started: bool,
    /// Slurm runs it: it may start any moment, and is no longer taken back.
    running: bool,
    /// Rounds missing from `squeue` without an outcome.
    unknown: u32,
    /// What the dispatcher asked, not yet done: take it back while queued,
    /// or stop it.
    want: Option<Request>,
    /// When a graceful stop was sent.
    stopping: Option<Instant>,
}

/// An attempt whose `sbatch` failed for want of the controller, tried again.
struct Resubmit {
    index: usize,
    attempt: Attempt,
    at: Instant,
    since: Instant,
}

/// How long submissions are tried again while the controller does not
/// answer, before the backend gives up.
const SUBMIT_PATIENCE: Duration = Duration::from_secs(120);

/// Owns everything Slurm-facing during a session: submissions, polling,
/// cancellation. Receives the dispatcher's calls as [`Command`]s.
struct Actor {
    dir: BatchDir,
    section: SlurmSection,
    tb: PathBuf,
    events: mpsc::UnboundedSender<Event>,
    tracked: BTreeMap<usize, Tracked>,
    resubmit: Vec<Resubmit>,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open = true;
        while open || !self.tracked.is_empty() || !self.resubmit.is_empty() {
            let busy = !self.tracked.is_empty() || !self.resubmit.is_empty();
            tokio::select! {
                command = rx.recv(), if open => match command {
                    Some(c) => {
                        // Everything asked meanwhile, requests first: a stop
                        // must not wait behind a burst of submissions.
                        let mut batch = vec![c];
                        while let Ok(c) = rx.try_recv() {
                            batch.push(c);
                        }
                        self.on(batch).await;
                    }
                    None => open = false,
                },
                _ = tick.tick(), if busy => {
                    self.retry_submissions().await;
                    self.poll().await;
                }
            }
        }
    }

    fn send(&self, event: Event) {
        let _ = self.events.send(event);
    }

    async fn on(&mut self, commands: Vec<Command>) {
        let (mut requests, mut others) = (Vec::new(), Vec::new());
        for c in commands {
            match c {
                Command::Request { index, request } => requests.push((index, request)),
                other => others.push(other),
            }
        }
        for (index, request) in requests {
            if let Some(t) = self.tracked.get_mut(&index) {
                t.want = match (t.want, request) {
                    (Some(Request::Stop(a)), Request::Stop(b)) => Some(Request::Stop(a.max(b))),
                    (Some(Request::Stop(a)), Request::Withdraw) => Some(Request::Stop(a)),
                    (_, r) => Some(r),
                };
            } else if let Some(pos) = self.resubmit.iter().position(|r| r.index == index) {
                // Never submitted: nothing to cancel.
                self.resubmit.remove(pos);
                self.send(Event::Withdrawn { index });
            }
        }
        self.carry_out_wants().await;
        for c in others {
            match c {
                Command::Launch { index, attempt } => self.submit(index, attempt, Instant::now()).await,
                Command::Follow { index, attempt, found } => {
                    let job_id = found.handle.slurm_job_id().unwrap_or_default().to_string();
                    tracing::info!("following {} again (Slurm job {job_id})", attempt.spec().name);
                    if !found.started {
                        self.send(Event::Queued {
                            index,
                            handle: found.handle.clone(),
                        });
                    }
                    self.tracked.insert(
                        index,
                        Tracked {
                            name: attempt.spec().name.clone(),
                            attempt: attempt.job.attempt,
                            job_id,
                            started: found.started,
                            running: found.started,
                            unknown: 0,
                            want: None,
                            stopping: None,
                        },
                    );
                }
                Command::Request { .. } => unreachable!("handled above"),
            }
        }
    }

    /// Does what was asked: queued jobs are cancelled only while still
    /// queued (`scancel --state=PENDING`: one that just started is left to
    /// run, or stopped); running ones get SIGTERM through `tb exec`, or are
    /// cancelled outright. One command for all.
    async fn carry_out_wants(&mut self) {
        let (mut queued, mut terminate, mut kill) = (Vec::new(), Vec::new(), Vec::new());
        for t in self.tracked.values_mut() {
            let Some(want) = t.want else { continue };
            if !t.running
                && read_record(&self.dir.job_dir(&t.name), t.attempt, Some(&t.job_id))
                    .is_some_and(|r| r.started_at.is_some())
            {
                t.running = true;
            }
            match (want, t.running) {
                (Request::Withdraw, true) | (Request::Stop(Stop::Run), _) => t.want = None,
                (_, false) => queued.push(t.job_id.clone()),
                (Request::Stop(Stop::Graceful), true) => {
                    if t.stopping.is_none() {
                        t.stopping = Some(Instant::now());
                        terminate.push(t.job_id.clone());
                    }
                    t.want = None;
                }
                (Request::Stop(Stop::Kill), true) => {
                    t.stopping.get_or_insert_with(Instant::now);
                    kill.push(t.job_id.clone());
                    t.want = None;
                }
            }
        }
        // A queued job taken back is reported withdrawn by the next poll,
        // once Slurm no longer has it (or it is found running after all).
        for (what, result) in [
            ("scancel --state=PENDING", cli::scancel_pending(&queued).await),
            ("scancel --batch --signal=TERM", cli::terminate(&terminate).await),
            ("scancel", cli::scancel(&kill).await),
        ] {
            if let Err(e) = result {
                tracing::warn!("{what}: {e:#}; trying again");
            }
        }
    }

    async fn submit(&mut self, index: usize, attempt: Attempt, since: Instant) {
        let name = attempt.spec().name.clone();
        let job_dir = self.dir.job_dir(&name);
        let script = cli::Script {
            name: cli::job_name(&self.dir.id, &name, attempt.job.attempt),
            job_dir: &job_dir,
            job: attempt.spec(),
            slurm: &self.section,
            tb: &self.tb,
        }
        .render();
        let path = job_dir.join("slurm.sh");
        // A record of an earlier submission of this attempt (one taken back)
        // must not be read as this one's.
        let _ = std::fs::remove_file(job_dir.join(node::RECORD));
        // The job will outlive a power loss here: its record goes to disk
        // first.
        let written = script
            .and_then(|s| crate::run::write_atomic(&path, s.as_bytes()))
            .and_then(|()| self.dir.sync_job_dir(&name));
        if let Err(e) = written {
            let why = format!("could not write job `{name}`'s Slurm script and record, so it was not submitted: {e:#}");
            self.send(Event::Ended {
                index,
                outcome: Outcome::failed_before_start(why, None),
            });
            return;
        }
        let submitted = cli::submit(&path, &self.section.extra).await;
        match submitted {
            Ok(job_id) => {
                tracing::info!(
                    "submitted {name} (attempt {}) as Slurm job {job_id}",
                    attempt.job.attempt
                );
                self.send(Event::Queued {
                    index,
                    handle: RunHandle::Slurm {
                        job_id: job_id.clone(),
                        container: None,
                    },
                });
                self.tracked.insert(
                    index,
                    Tracked {
                        name,
                        attempt: attempt.job.attempt,
                        job_id,
                        started: false,
                        running: false,
                        unknown: 0,
                        want: None,
                        stopping: None,
                    },
                );
            }
            Err(e) if cli::unreachable(&e) && since.elapsed() < SUBMIT_PATIENCE => {
                tracing::warn!("{name}: {e:#}; submitting it again shortly");
                self.resubmit.push(Resubmit {
                    index,
                    attempt,
                    at: Instant::now() + Duration::from_secs(5),
                    since,
                });
            }
            Err(e) if cli::unreachable(&e) => {
                self.send(Event::Gone {
                    why: format!(
                        "the Slurm controller has not answered for {}: {e:#}",
                        humantime::format_duration(SUBMIT_PATIENCE)
                    ),
                });
                self.send(Event::Withdrawn { index });
            }
            Err(e) => self.send(Event::Ended {
                index,
                outcome: Outcome::failed_before_start(format!("sbatch refused job `{name}`: {e:#}"), None),
            }),
        }
    }

    async fn retry_submissions(&mut self) {
        let now = Instant::now();
        let due: Vec<Resubmit> = {
            let (due, later) = std::mem::take(&mut self.resubmit)
                .into_iter()
                .partition(|r| r.at <= now);
            self.resubmit = later;
            due
        };
        for r in due {
            self.submit(r.index, r.attempt, r.since).await;
        }
    }

    /// One look at what `tb exec` reported, and at Slurm.
    async fn poll(&mut self) {
        self.carry_out_wants().await;
        let mut ended = Vec::new();
        // What tb exec wrote needs no Slurm: read it even when squeue fails.
        for (&index, t) in self.tracked.iter_mut() {
            let record = read_record(&self.dir.job_dir(&t.name), t.attempt, Some(&t.job_id));
            if let Some(r) = &record
                && !t.started
                && let Some(at) = r.started_at
            {
                t.started = true;
                t.running = true;
                let _ = self.events.send(Event::Started {
                    index,
                    handle: RunHandle::Slurm {
                        job_id: t.job_id.clone(),
                        container: r.container_id.clone(),
                    },
                    at,
                    gpus: r.gpus.clone(),
                    gpu_share: r.gpu_share,
                });
            }
            if let Some(outcome) = record.and_then(|r| r.outcome) {
                ended.push((index, Event::Ended { index, outcome }));
                continue;
            }
            if t.stopping.is_some_and(|at| at.elapsed() > stop_patience()) {
                tracing::warn!(
                    "Slurm job {} still running after the grace period; cancelling it outright",
                    t.job_id
                );
                let _ = cli::scancel(std::slice::from_ref(&t.job_id)).await;
                ended.push((
                    index,
                    Event::Ended {
                        index,
                        outcome: Outcome {
                            status: Status::Cancelled,
                            error: Some("cancelled; tb exec did not record an outcome in time".into()),
                            ..Outcome::failed_before_start(String::new(), None)
                        },
                    },
                ));
            }
        }
        for (index, event) in ended {
            self.tracked.remove(&index);
            self.send(event);
        }
        // A failed squeue says nothing about the jobs: look again next round.
        let queue = match cli::squeue().await {
            Ok(q) => q,
            Err(e) => {
                tracing::debug!("{e:#}");
                return;
            }
        };
        let mut gone = Vec::new();
        for (&index, t) in self.tracked.iter_mut() {
            let listed = queue.get(&t.job_id);
            let in_flight = listed.is_some_and(|l| cli::in_flight(&l.state));
            if listed.is_some_and(|l| l.state == "RUNNING") {
                t.running = true;
            }
            if t.want.is_some() && !t.running && !t.started && !in_flight {
                gone.push((index, Event::Withdrawn { index }));
                continue;
            }
            if in_flight {
                continue;
            }
            // Slurm is done with it (or no longer knows it) and `tb exec`
            // said nothing: a few rounds' grace for its last write.
            t.unknown += 1;
            if t.unknown < UNKNOWN_ROUNDS {
                continue;
            }
            let (state, code) = match cli::scontrol(&t.job_id).await {
                Some((s, c)) => (s, c),
                None => (
                    listed.map(|l| l.state.clone()).unwrap_or_else(|| "UNKNOWN".into()),
                    None,
                ),
            };
            let id = &t.job_id;
            gone.push((
                index,
                Event::Ended {
                    index,
                    outcome: Outcome {
                        status: cli::status_of(&state),
                        exit_code: code.filter(|c| *c != 0),
                        oom_killed: state == "OUT_OF_MEMORY",
                        error: Some(format!(
                            "Slurm job {id} ended {state} before tb exec recorded an outcome (see slurm-{id}.out)"
                        )),
                        container_id: None,
                        started_at: None,
                        finished_at: Utc::now(),
                    },
                },
            ));
        }
        for (index, event) in gone {
            self.tracked.remove(&index);
            self.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shards_per_gpu_are_set_or_learned_or_a_problem_naming_the_key() {
        let job: JobSpec = serde_json::from_value(serde_json::json!({
            "name": "a", "image": "img", "command": null, "gpus": 0.5, "cpus": null,
            "memory": null, "shm_size": 1, "time_limit": null, "env": {},
            "pass_env": [], "mounts": [], "code": null, "network": "bridge", "train": null
        }))
        .unwrap();
        let lines = |t: &str| t.lines().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            shards_per_gpu(&lines("gpu:2,shard:64"), None, &job).unwrap(),
            (32, "from sinfo")
        );
        assert_eq!(
            shards_per_gpu(&lines("gpu:2,shard:64"), Some(8), &job).unwrap(),
            (8, "shards_per_gpu"),
            "the key overrides the cluster"
        );
        assert_eq!(
            shards_per_gpu(&lines("shard:64"), Some(8), &job).unwrap(),
            (8, "shards_per_gpu")
        );
        let p = shards_per_gpu(&lines("shard:64\n(null)"), None, &job).unwrap_err();
        assert_eq!(
            p.message,
            "job `a` asks for a share of a GPU (gpus = 0.5), but how many shards the cluster gives one GPU cannot be told from its nodes' gres (shard:64; (null))"
        );
        assert!(p.hint.unwrap().starts_with("set shards_per_gpu in [batch.slurm]"));
    }
}
