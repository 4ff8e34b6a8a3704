//! The Slurm backend: each attempt is an `sbatch` job whose script runs
//! `tb exec JOB_DIR` on its node ([`node`]: the same executor as on one
//! machine, so the job directory and logs look the same). Slurm places jobs
//! and assigns GPUs; this side submits, follows Slurm's view (`squeue`,
//! then `scontrol` once a job left the queue) and what `tb exec` reports,
//! and stops jobs with `scancel`. It needs no Docker engine on this host.

pub mod cli;
pub mod node;

use super::{Attempt, Backend, Event, Found, Ready, Request, Stop, Survey};
use crate::batch::{Problem, SlurmSection};
use crate::run::{BatchDir, JobState, Outcome, RunHandle, Status};
use crate::settings::{JobSpec, Plan};
use anyhow::Context;
use chrono::Utc;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

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
        let partition = self.section.partition.as_deref();
        if let Some(p) = partition
            && !partitions.iter().any(|q| q == p)
        {
            problems.push(Problem {
                at: None,
                message: format!("Slurm has no partition `{p}`"),
                hint: Some(format!("the partitions are: {}", partitions.join(", "))),
            });
        }
        if let Some(job) = plan.jobs.iter().find(|j| j.gpus > 0)
            && !cli::offers_gpus(partition).await?
        {
            problems.push(Problem {
                at: None,
                message: format!(
                    "job `{}` asks for {} GPU(s) but the cluster's nodes offer no `gpu` gres",
                    job.name, job.gpus
                ),
                hint: Some(
                    "set gpus = 0 (on Slurm, gpus = \"auto\" means 1), or pick a GPU partition in [batch.slurm]".into(),
                ),
            });
        }
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
                "{version}, partition {}",
                partition.unwrap_or("(the cluster's default)")
            ),
        })
    }

    async fn survey(&mut self, dir: &BatchDir, names: &[String], states: &[JobState]) -> anyhow::Result<Survey> {
        let queue = cli::squeue()
            .await
            .context("cannot tell which of the batch's Slurm jobs still run")?;
        let by_name: BTreeMap<&str, &str> = queue.iter().map(|(id, l)| (l.name.as_str(), id.as_str())).collect();
        let mut survey = Survey {
            jobs: vec![None; names.len()],
            leftovers: Vec::new(),
        };
        for (i, (name, state)) in names.iter().zip(states).enumerate() {
            if state.status().is_final() || state.attempt() == 0 {
                continue;
            }
            let job_id = match state.handle().and_then(|h| h.slurm_job_id()) {
                Some(id) => id.to_string(),
                // Submitted, but the supervisor died before recording the id.
                None => match by_name.get(cli::job_name(&dir.id, name, state.attempt()).as_str()) {
                    Some(id) => id.to_string(),
                    None => continue,
                },
            };
            let record = node::read_record(&dir.job_dir(name), state.attempt());
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
                started: record.as_ref().is_some_and(|r| r.started_at.is_some())
                    || listed.is_some_and(|l| l.state == "RUNNING"),
                running: listed.is_some_and(|l| cli::in_flight(&l.state)),
                gpus: record.map(|r| r.gpus).unwrap_or_default(),
            });
        }
        Ok(survey)
    }

    async fn discard(&mut self, _leftovers: &[RunHandle]) -> anyhow::Result<()> {
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
        let queue = cli::squeue().await?;
        let Some(listed) = queue.get(&id).filter(|l| cli::in_flight(&l.state)) else {
            return Ok(None);
        };
        if listed.state != "RUNNING" {
            cli::scancel(std::slice::from_ref(&id)).await?;
            return Ok(None);
        }
        cli::terminate(std::slice::from_ref(&id)).await?;
        let state = dir.read_job_state(job)?;
        let until = Instant::now() + stop_patience();
        loop {
            if let Some(outcome) = node::read_record(&dir.job_dir(job), state.attempt()).and_then(|r| r.outcome) {
                return Ok(Some(outcome));
            }
            if Instant::now() > until {
                eprintln!("{job}: Slurm job {id} still running; cancelling it outright");
                cli::scancel(std::slice::from_ref(&id)).await?;
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
    started: bool,
    /// Rounds missing from `squeue` without an outcome.
    unknown: u32,
    /// When a graceful stop was asked.
    stopping: Option<Instant>,
}

/// Owns everything Slurm-facing during a session: submissions, polling,
/// cancellation. Receives the dispatcher's calls as [`Command`]s.
struct Actor {
    dir: BatchDir,
    section: SlurmSection,
    tb: PathBuf,
    events: mpsc::UnboundedSender<Event>,
    tracked: BTreeMap<usize, Tracked>,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open = true;
        while open || !self.tracked.is_empty() {
            tokio::select! {
                command = rx.recv(), if open => match command {
                    Some(c) => self.on(c).await,
                    None => open = false,
                },
                _ = tick.tick(), if !self.tracked.is_empty() => self.poll().await,
            }
        }
    }

    fn send(&self, event: Event) {
        let _ = self.events.send(event);
    }

    async fn on(&mut self, command: Command) {
        match command {
            Command::Launch { index, attempt } => self.submit(index, attempt).await,
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
                        unknown: 0,
                        stopping: None,
                    },
                );
            }
            Command::Request { index, request } => self.request(index, request).await,
        }
    }

    async fn submit(&mut self, index: usize, attempt: Attempt) {
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
        let submitted = match crate::run::write_atomic(&path, script.as_bytes()) {
            Ok(()) => cli::submit(&path, &self.section.extra).await,
            Err(e) => Err(e),
        };
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
                        unknown: 0,
                        stopping: None,
                    },
                );
            }
            Err(e) => self.send(Event::Ended {
                index,
                outcome: Outcome::failed_before_start(format!("sbatch refused job `{name}`: {e:#}"), None),
            }),
        }
    }

    async fn request(&mut self, index: usize, request: Request) {
        let Some(t) = self.tracked.get_mut(&index) else {
            return;
        };
        // `tb exec` may have started it since the last poll.
        if !t.started
            && let Some(r) = node::read_record(&self.dir.job_dir(&t.name), t.attempt)
        {
            t.started = r.started_at.is_some();
        }
        let ids = [t.job_id.clone()];
        match (request, t.started) {
            (Request::Withdraw, true) | (Request::Stop(Stop::Run), _) => {}
            (_, false) => {
                if let Err(e) = cli::scancel(&ids).await {
                    tracing::warn!("{e:#}");
                }
                self.tracked.remove(&index);
                self.send(Event::Withdrawn { index });
            }
            (Request::Stop(Stop::Graceful), true) => {
                if t.stopping.is_none() {
                    t.stopping = Some(Instant::now());
                    if let Err(e) = cli::terminate(&ids).await {
                        tracing::warn!("{e:#}");
                    }
                }
            }
            (Request::Stop(Stop::Kill), true) => {
                t.stopping.get_or_insert_with(Instant::now);
                if let Err(e) = cli::scancel(&ids).await {
                    tracing::warn!("{e:#}");
                }
            }
        }
    }

    /// One look at Slurm and at what `tb exec` reported.
    async fn poll(&mut self) {
        // A failed squeue says nothing about the jobs: look again next round.
        let queue = match cli::squeue().await {
            Ok(q) => q,
            Err(e) => {
                tracing::debug!("{e:#}");
                return;
            }
        };
        let mut ended = Vec::new();
        for (&index, t) in self.tracked.iter_mut() {
            let record = node::read_record(&self.dir.job_dir(&t.name), t.attempt);
            if let Some(r) = &record
                && !t.started
                && let Some(at) = r.started_at
            {
                t.started = true;
                let _ = self.events.send(Event::Started {
                    index,
                    handle: RunHandle::Slurm {
                        job_id: t.job_id.clone(),
                        container: r.container_id.clone(),
                    },
                    at,
                    gpus: r.gpus.clone(),
                });
            }
            if let Some(outcome) = record.and_then(|r| r.outcome) {
                ended.push((index, outcome));
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
                    Outcome {
                        status: Status::Cancelled,
                        error: Some("cancelled; tb exec did not record an outcome in time".into()),
                        ..Outcome::failed_before_start(String::new(), None)
                    },
                ));
                continue;
            }
            let listed = queue.get(&t.job_id);
            if listed.is_some_and(|l| cli::in_flight(&l.state)) {
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
            ended.push((
                index,
                Outcome {
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
            ));
        }
        for (index, outcome) in ended {
            self.tracked.remove(&index);
            self.send(Event::Ended { index, outcome });
        }
    }
}
