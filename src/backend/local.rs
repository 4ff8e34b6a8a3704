//! The local backend: one container per attempt on this host's Docker
//! engine. It owns the slots (`concurrency`, a semaphore), the GPUs (whole
//! or shared, [`crate::gpu::pool`]), the containers created ahead of their slot (so that the engine's
//! create is off the critical path when a slot frees), and the queue that
//! removes finished containers behind the dispatcher. One task per attempt
//! runs it through the executor and reports by message.

use super::{Attempt, Backend, Event, Found, Ready, Request, Stop, Survey};
use crate::docker::{Engine, Listed, is_unreachable};
use crate::executor::{self, Launch, StartGate};
use crate::gpu::Fraction;
use crate::gpu::pool::{Place, Pool};
use crate::run::{BatchDir, JobState, Outcome, RunHandle, Status, short};
use crate::settings::{JobSpec, Plan};
use chrono::Utc;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// How many attempts at most wait, container created, for a slot.
const MAX_STAGED: usize = 4;

/// This host's Docker engine.
#[derive(Default)]
pub struct Local {
    engine: Option<Engine>,
    session: Option<Session>,
}

impl Local {
    pub fn new() -> Local {
        Local::default()
    }

    async fn engine(&mut self) -> anyhow::Result<Engine> {
        if let Some(e) = &self.engine {
            return Ok(e.clone());
        }
        let e = Engine::connect().await?;
        self.engine = Some(e.clone());
        Ok(e)
    }
}

/// How long tb waits for an engine that went away before it gives the
/// jobs up (`TB_ENGINE_WAIT` seconds overrides it).
pub fn engine_wait() -> Duration {
    crate::limits::seconds_from_env(&crate::limits::ENGINE_WAIT, Duration::from_secs(300))
}

/// A batch being run: what the backend holds for the dispatcher.
struct Session {
    engine: Engine,
    dir: BatchDir,
    plan_downloads: std::path::PathBuf,
    gpu_mode: crate::batch::GpuMode,
    events: mpsc::UnboundedSender<Event>,
    /// Containers running at once.
    slots: Arc<Semaphore>,
    /// Attempts handed over and not yet collected: running ones and those
    /// waiting, created, for a slot.
    handed: usize,
    most_handed: usize,
    /// Who holds which GPU.
    pool: Pool,
    /// Where the job [`Backend::first_fit`] chose last goes, for its launch.
    placed: Option<Place>,
    runs: BTreeMap<usize, Controls>,
    /// Set once the last launched attempt has its slot (or gave up): slots
    /// go to attempts in the order they were launched, whichever container
    /// the engine happens to create first.
    last_turn: Option<oneshot::Receiver<()>>,
    tasks: JoinSet<()>,
    removals: Removals,
    gate: StartGate,
    engine_wait: Duration,
    /// When an earlier supervisor gave up on the engine (batch.json).
    engine_lost_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// How the dispatcher reaches one attempt's task.
struct Controls {
    /// Set: give the attempt up if it has not started.
    withdraw: watch::Sender<bool>,
    stop: watch::Sender<Stop>,
}

#[async_trait::async_trait]
impl Backend for Local {
    async fn preflight(&mut self, plan: &Plan, runs_dir: &Path) -> anyhow::Result<Ready> {
        let engine = self.engine().await?;
        let (engine_version, api_version) = engine.version().await?;
        let mut problems = Vec::new();
        let mut ids: BTreeMap<&str, Option<String>> = BTreeMap::new();
        for job in &plan.jobs {
            if ids.contains_key(job.image.as_str()) {
                continue;
            }
            let id = engine.image_id(&job.image).await?;
            if id.is_none() {
                problems.push(missing_image(plan, &job.image));
            }
            ids.insert(&job.image, id);
        }
        if problems.is_empty() {
            problems.extend(networks(&engine, plan).await?);
        }
        problems.extend(crate::preflight::directories(plan, runs_dir));
        crate::preflight::verdict(problems)?;
        Ok(Ready {
            image_ids: plan.jobs.iter().map(|j| ids[j.image.as_str()].clone()).collect(),
            describe: format!(
                "Docker {engine_version} (API {api_version}), GPUs: {}",
                plan.gpus.describe()
            ),
        })
    }

    async fn survey(&mut self, dir: &BatchDir, names: &[String], states: &[JobState]) -> anyhow::Result<Survey> {
        let engine = self.engine().await?;
        let label = format!("tb.dir={}", dir.path.display());
        let mut listed = engine.list_labelled(&label).await?;
        // A supervisor killed while the engine started a container leaves it
        // `created` for a moment, then running: let such starts land rather
        // than take the container for one that never ran.
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        while listed
            .iter()
            .any(|c| c.state == "created" && starting(dir, c, names, states))
            && tokio::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            listed = engine.list_labelled(&label).await?;
        }
        Ok(survey_of(&listed, names, states))
    }

    async fn discard(&mut self, leftovers: &[RunHandle]) -> anyhow::Result<()> {
        let engine = self.engine().await?;
        for h in leftovers {
            if let Some(id) = h.container_id() {
                tracing::info!("removing leftover container {}", short(id));
                engine.remove(id).await?;
            }
        }
        Ok(())
    }

    async fn stop(
        &mut self,
        _dir: &BatchDir,
        job: &str,
        handle: &RunHandle,
        grace: Duration,
    ) -> anyhow::Result<Option<Outcome>> {
        let Some(id) = handle.container_id() else {
            return Ok(None);
        };
        let engine = self.engine().await?;
        if !engine.observe(id).await?.is_some_and(|o| o.running) {
            return Ok(None);
        }
        engine.signal(id, "SIGTERM").await?;
        let until = tokio::time::Instant::now() + grace;
        let observed = loop {
            match engine.observe(id).await? {
                Some(o) if o.running && tokio::time::Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Some(o) if o.running => {
                    eprintln!("{job}: still running after {}s; killing it", grace.as_secs());
                    engine.signal(id, "SIGKILL").await?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break engine.observe(id).await?;
                }
                other => break other,
            }
        };
        let exit = observed.map(|o| o.exit);
        engine.remove(id).await?;
        Ok(Some(Outcome {
            status: Status::Cancelled,
            exit_code: exit.as_ref().and_then(|e| e.exit_code),
            oom_killed: exit.as_ref().is_some_and(|e| e.oom_killed),
            error: None,
            container_id: Some(id.to_string()),
            started_at: None,
            finished_at: Utc::now(),
        }))
    }

    fn open(&mut self, plan: &Plan, dir: &BatchDir, events: mpsc::UnboundedSender<Event>) -> anyhow::Result<()> {
        let engine = self
            .engine
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the local backend opened before its preflight"))?;
        let concurrency = plan.settings.concurrency.max(1);
        let gate = StartGate::default();
        self.session = Some(Session {
            removals: Removals::start(engine.clone(), gate.clone()),
            engine,
            dir: dir.clone(),
            plan_downloads: plan.settings.downloads.clone(),
            gpu_mode: plan.settings.gpu_mode,
            events,
            slots: Arc::new(Semaphore::new(concurrency)),
            handed: 0,
            most_handed: concurrency + concurrency.min(MAX_STAGED),
            pool: Pool::new(&plan.gpus.ids),
            placed: None,
            runs: BTreeMap::new(),
            last_turn: None,
            tasks: JoinSet::new(),
            gate,
            engine_wait: engine_wait(),
            engine_lost_at: dir.read_batch().ok().and_then(|b| b.engine_lost_at),
        });
        Ok(())
    }

    fn has_room(&self, job: &JobSpec) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.handed < s.most_handed && s.pool.fits(job.gpus))
    }

    /// The first job the GPU pool's queue admits: one that must wait keeps
    /// the GPUs it waits for from the jobs behind it.
    fn first_fit(&mut self, queued: &mut dyn Iterator<Item = (usize, &JobSpec)>) -> Option<usize> {
        let s = self.session.as_mut()?;
        if s.handed >= s.most_handed {
            return None;
        }
        let mut queue = s.pool.queue();
        for (key, job) in queued {
            if let Some(place) = queue.admit(job.gpus) {
                s.placed = Some(place);
                return Some(key);
            }
        }
        None
    }

    fn launch(&mut self, index: usize, attempt: Attempt) {
        let s = self.session.as_mut().expect("an open session");
        let need = attempt.spec().gpus;
        let gpus = match s.placed.take().filter(|p| p.need() == need) {
            Some(place) => s.pool.hold(index, place),
            // Launched without asking first_fit: the first GPUs that fit.
            None => s
                .pool
                .take(index, need)
                .expect("a job is launched only when its GPUs are free"),
        };
        s.handed += 1;
        let gpu_share = need.fraction();
        let launch = s.launch_of(attempt, gpus.clone());
        let (controls, mut withdraw, stop) = Controls::new();
        s.runs.insert(index, controls);
        let (my_turn_done, next_turn) = oneshot::channel::<()>();
        let turn = s.last_turn.replace(next_turn);
        let (engine, events, slots, gate) = (s.engine.clone(), s.events.clone(), s.slots.clone(), s.gate.clone());
        s.tasks.spawn(async move {
            let guard = Report::new(index, events.clone());
            let name = launch.job.spec.name.clone();
            let mut prepared = executor::prepare(&engine, &launch).await;
            if matches!(&prepared, Err(e) if is_unreachable(e)) {
                tracing::warn!("job {name}: the Docker engine is unreachable; waiting for it");
                if !executor::wait_for_engine(&engine, launch.engine_wait).await {
                    let _ = events.send(Event::Gone {
                        why: gone_why(launch.engine_wait),
                    });
                    guard.send(Event::Withdrawn { index });
                    return;
                }
                prepared = executor::prepare(&engine, &launch).await;
            }
            let permit = tokio::select! {
                p = async {
                    if let Some(turn) = turn {
                        // The earlier attempt got its slot, or gave up.
                        let _ = turn.await;
                    }
                    slots.acquire_owned().await
                } => p.ok(),
                _ = withdraw.wait_for(|w| *w) => None,
            };
            drop(my_turn_done);
            // `tb cancel --job` may have come while it waited for its slot.
            let cancelled = launch.job_dir.join(crate::run::CANCEL_REQUEST).exists();
            if permit.is_none() || *withdraw.borrow() || cancelled {
                if let Ok(p) = prepared {
                    executor::discard(&engine, p).await;
                }
                guard.send(Event::Withdrawn { index });
                return;
            }
            let started = events.clone();
            let finish = executor::run(&engine, prepared, &launch, stop, &gate, |id, at| {
                let _ = started.send(Event::Started {
                    index,
                    handle: RunHandle::Container { id: id.to_string() },
                    at,
                    gpus,
                    gpu_share,
                });
            })
            .await;
            // The next staged attempt may start now, before this one's
            // state is written.
            drop(permit);
            guard.finish(finish, &launch);
        });
    }

    fn follow(&mut self, index: usize, attempt: Attempt, found: Found) {
        let s = self.session.as_mut().expect("an open session");
        // Whole or a share, as job.json says: the container has its devices.
        s.pool.adopt(index, &found.gpus, attempt.spec().gpus);
        s.handed += 1;
        let mut launch = s.launch_of(attempt, found.gpus.clone());
        launch.away_since = s.engine_lost_at;
        let (controls, _, stop) = Controls::new();
        s.runs.insert(index, controls);
        // A container taken over counts against the slots like any other;
        // taken now, before any launch can.
        let permit = s.slots.clone().try_acquire_owned().ok();
        let (engine, events) = (s.engine.clone(), s.events.clone());
        let Some(id) = found.handle.container_id().map(String::from) else {
            let _ = events.send(Event::Withdrawn { index });
            return;
        };
        tracing::info!("following {} again (container {})", launch.job.spec.name, short(&id));
        let started_at = found.started_at.unwrap_or_else(Utc::now);
        s.tasks.spawn(async move {
            let guard = Report::new(index, events.clone());
            let finish = executor::reattach(&engine, &id, &launch, stop, started_at).await;
            drop(permit);
            guard.finish(finish, &launch);
        });
    }

    fn request(&mut self, index: usize, request: Request) {
        let Some(c) = self.session.as_ref().and_then(|s| s.runs.get(&index)) else {
            return;
        };
        c.withdraw.send_replace(true);
        if let Request::Stop(how) = request {
            c.stop.send_if_modified(|s| {
                let raise = how > *s;
                if raise {
                    *s = how;
                }
                raise
            });
        }
    }

    fn collect(&mut self, index: usize, handle: Option<&RunHandle>) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if s.runs.remove(&index).is_some() {
            s.handed -= 1;
        }
        s.pool.release(index);
        if let Some(id) = handle.and_then(|h| h.container_id()) {
            s.removals.push(id.to_string());
        }
    }

    async fn close(&mut self, gone: bool) {
        let Some(mut s) = self.session.take() else {
            return;
        };
        while s.tasks.join_next().await.is_some() {}
        if gone {
            // Nothing can be removed without an engine; `tb clean` can later.
            drop(s.removals);
        } else {
            s.removals.finish().await;
        }
    }
}

impl Session {
    fn launch_of(&self, attempt: Attempt, gpus: Vec<String>) -> Launch {
        Launch {
            job_dir: self.dir.job_dir(&attempt.job.spec.name),
            job: attempt.job,
            downloads: self.plan_downloads.clone(),
            gpus,
            gpu_mode: self.gpu_mode,
            batch_dir: self.dir.path.clone(),
            stop_grace: executor::STOP_GRACE,
            engine_wait: self.engine_wait,
            away_since: None,
        }
    }
}

/// Sends a task's last word to the dispatcher — and, if the task ends
/// without one (a panic), says the run was lost rather than leave the
/// dispatcher waiting for it.
struct Report {
    index: usize,
    events: Option<mpsc::UnboundedSender<Event>>,
}

impl Report {
    fn new(index: usize, events: mpsc::UnboundedSender<Event>) -> Report {
        Report {
            index,
            events: Some(events),
        }
    }

    fn send(mut self, event: Event) {
        if let Some(e) = self.events.take() {
            let _ = e.send(event);
        }
    }

    /// How an attempt that ran (or tried to) ended.
    fn finish(self, finish: executor::Finish, launch: &Launch) {
        if finish.engine_gone
            && let Some(e) = &self.events
        {
            let _ = e.send(Event::Gone {
                why: gone_why(launch.engine_wait),
            });
        }
        let index = self.index;
        if finish.engine_gone && finish.outcome.started_at.is_none() {
            self.send(Event::Withdrawn { index });
        } else if finish.engine_gone && finish.outcome.status == crate::run::Status::Lost {
            // Out of sight, not over: the container may still run, or have
            // ended with a real exit status, for `tb resume` to record.
            self.send(Event::Abandoned { index });
        } else {
            self.send(Event::Ended {
                index,
                outcome: finish.outcome,
            });
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if let Some(e) = self.events.take() {
            let _ = e.send(Event::Ended {
                index: self.index,
                outcome: Outcome {
                    status: Status::Lost,
                    ..Outcome::failed_before_start(
                        "tb's task following this job failed; see supervisor.log".into(),
                        None,
                    )
                },
            });
        }
    }
}

impl Controls {
    fn new() -> (Controls, watch::Receiver<bool>, watch::Receiver<Stop>) {
        let (withdraw, withdraw_rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(Stop::Run);
        (Controls { withdraw, stop }, withdraw_rx, stop_rx)
    }
}

fn gone_why(waited: Duration) -> String {
    format!(
        "the Docker engine has been unreachable for {}",
        humantime::format_duration(waited)
    )
}

/// The networks the jobs use that a container cannot join: one probe per
/// network, with the image of its first job (see [`Engine::probe_network`]).
async fn networks(engine: &Engine, plan: &Plan) -> anyhow::Result<Vec<crate::batch::Problem>> {
    let mut probed: BTreeMap<&str, ()> = BTreeMap::new();
    let mut problems = Vec::new();
    for job in &plan.jobs {
        if probed.insert(job.network.as_str(), ()).is_some() {
            continue;
        }
        if let Err(message) = engine.probe_network(&job.image, &job.network).await? {
            problems.push(broken_network(plan, &job.network, &message));
        }
    }
    Ok(problems)
}

fn broken_network(plan: &Plan, network: &str, message: &str) -> crate::batch::Problem {
    let users = plan.jobs.iter().filter(|j| j.network == network).count();
    let hint = if message.contains("not found") {
        format!("create it (docker network create {network}) or set `network` in the batch file to one that exists")
    } else if network == "bridge" || network == "default" {
        "the engine's default bridge (docker0) is broken: restart the Docker engine (sudo systemctl restart docker)"
            .to_string()
    } else {
        format!(
            "recreate the network (docker network rm {network} && docker network create {network}) or restart \
             the Docker engine (sudo systemctl restart docker)"
        )
    };
    crate::batch::Problem {
        at: None,
        message: format!(
            "a container cannot join the network `{network}` ({users} job{} use{} it): {message}",
            if users == 1 { "" } else { "s" },
            if users == 1 { "s" } else { "" }
        ),
        hint: Some(hint),
    }
}

fn missing_image(plan: &Plan, image: &str) -> crate::batch::Problem {
    let users: Vec<&str> = plan
        .jobs
        .iter()
        .filter(|j| j.image == image)
        .map(|j| j.name.as_str())
        .collect();
    let hint = if image.starts_with("tb-trainer") {
        "build it with `make image` (tb image build)"
    } else if image.starts_with("tb-base") {
        "build it with `make base-image`"
    } else {
        "build or load it first (`docker build`, `docker load`); tb does not pull images"
    };
    crate::batch::Problem {
        at: None,
        message: format!(
            "the Docker engine has no image `{image}` (used by {})",
            users.join(", ")
        ),
        hint: Some(hint.into()),
    }
}

/// Whether the engine may be starting `c`: the container of a job's
/// current attempt, not known to have started, that tb asked to start.
fn starting(dir: &BatchDir, c: &Listed, names: &[String], states: &[JobState]) -> bool {
    let job = c.labels.get("tb.job").and_then(|j| names.iter().position(|n| n == j));
    let attempt: Option<u32> = c.labels.get("tb.attempt").and_then(|a| a.parse().ok());
    match (job, attempt) {
        (Some(i), Some(a)) if a == states[i].attempt() && states[i].never_started() => {
            std::fs::read_to_string(dir.job_dir(&names[i]).join(executor::STARTING)).is_ok_and(|t| t == a.to_string())
        }
        _ => false,
    }
}

/// Sorts the batch's containers: each job's current attempt (a container
/// that started; one only created never ran and is a leftover), and the
/// rest, left over from earlier attempts or created ahead of a slot.
fn survey_of(listed: &[Listed], names: &[String], states: &[JobState]) -> Survey {
    let mut survey = Survey {
        jobs: vec![None; names.len()],
        leftovers: Vec::new(),
    };
    for c in listed {
        let handle = RunHandle::Container { id: c.id.clone() };
        let job = c.labels.get("tb.job").and_then(|j| names.iter().position(|n| n == j));
        let attempt: Option<u32> = c.labels.get("tb.attempt").and_then(|a| a.parse().ok());
        let current = match (job, attempt) {
            (Some(i), Some(a)) => {
                let s = &states[i];
                let mine = a == s.attempt()
                    // Written by a tb that recorded an attempt only once it ran.
                    || (a == s.attempt() + 1 && s.status() == Status::Pending);
                (mine && c.state != "created" && survey.jobs[i].is_none()).then_some((i, a))
            }
            _ => None,
        };
        match current {
            Some((i, a)) => {
                survey.jobs[i] = Some(Found {
                    handle,
                    attempt: a,
                    started: true,
                    running: matches!(c.state.as_str(), "running" | "restarting" | "paused"),
                    gpus: c
                        .labels
                        .get("tb.gpus")
                        .map(|g| g.split(',').filter(|s| !s.is_empty()).map(String::from).collect())
                        .unwrap_or_default(),
                    gpu_share: c
                        .labels
                        .get("tb.gpu_share")
                        .and_then(|v| v.parse().ok())
                        .and_then(Fraction::from_value),
                    started_at: None,
                })
            }
            None => survey.leftovers.push(handle),
        }
    }
    survey
}

/// Removes leftover containers of batches that no supervisor holds (`tb
/// clean`): only containers carrying all of tb's labels. Prints one line
/// per container on stdout; returns (removed, kept).
pub async fn clean(dry_run: bool) -> anyhow::Result<(usize, usize)> {
    let engine = Engine::connect().await?;
    let mut removed = 0;
    let mut kept = 0;
    for c in engine.list_labelled("tb.batch").await? {
        let (Some(batch), Some(job), Some(attempt)) = (
            c.labels.get("tb.batch"),
            c.labels.get("tb.job"),
            c.labels.get("tb.attempt"),
        ) else {
            continue;
        };
        let held = c
            .labels
            .get("tb.dir")
            .map(std::path::PathBuf::from)
            .is_some_and(|path| {
                path.join("batch.json").is_file() && BatchDir::at(&path).is_ok_and(|d| d.supervisor().is_some())
            });
        if held {
            kept += 1;
            continue;
        }
        println!("{}\t{batch}\t{job}\tattempt {attempt}\t{}", short(&c.id), c.state);
        if !dry_run {
            engine.remove(&c.id).await?;
        }
        removed += 1;
    }
    Ok((removed, kept))
}

/// Removes finished containers one at a time, behind the dispatcher: the
/// engine's removal work never crowds the next job's start.
struct Removals {
    queue: mpsc::UnboundedSender<String>,
    worker: tokio::task::JoinHandle<()>,
}

impl Removals {
    fn start(engine: Engine, gate: StartGate) -> Removals {
        let (queue, mut rx) = mpsc::unbounded_channel::<String>();
        let worker = tokio::spawn(async move {
            while let Some(id) = rx.recv().await {
                gate.quiet(Duration::from_secs(1)).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn listed(id: &str, job: &str, attempt: u32, state: &str) -> Listed {
        Listed {
            id: id.into(),
            state: state.into(),
            labels: HashMap::from([
                ("tb.job".to_string(), job.to_string()),
                ("tb.attempt".to_string(), attempt.to_string()),
                ("tb.gpus".to_string(), "1".to_string()),
            ]),
        }
    }

    fn state(attempt: u32, running: bool) -> JobState {
        let mut s = JobState::pending();
        for _ in 0..attempt {
            s.begin_attempt(None);
            s.started(RunHandle::Container { id: "x".into() }, Utc::now(), vec![], None);
        }
        if !running {
            s.begin_attempt(None);
        }
        s
    }

    #[test]
    fn the_survey_follows_current_attempts_and_leaves_the_rest() {
        let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        // a runs attempt 2; b's attempt 2 was launched and its container
        // started before the supervisor recorded it; c's was only created.
        let states = vec![state(2, true), state(1, false), state(1, false)];
        let mut listed = vec![
            listed("a1", "a", 1, "exited"),
            listed("a2", "a", 2, "running"),
            listed("b2", "b", 2, "exited"),
            listed("c2", "c", 2, "created"),
            listed("z", "zz", 1, "running"),
        ];
        // a holds half of GPU 1; b (an older tb's container) whole GPUs.
        listed[1].labels.insert("tb.gpu_share".into(), "0.5".into());
        let s = survey_of(&listed, &names, &states);
        let a = s.jobs[0].as_ref().unwrap();
        assert_eq!(
            (a.handle.container_id(), a.running, a.gpus.as_slice(), a.gpu_share),
            (Some("a2"), true, &["1".to_string()][..], Fraction::of(2))
        );
        let b = s.jobs[1].as_ref().unwrap();
        assert_eq!((b.handle.container_id(), b.running, b.attempt), (Some("b2"), false, 2));
        assert_eq!(b.gpu_share, None);
        assert!(s.jobs[2].is_none());
        let left: Vec<_> = s.leftovers.iter().filter_map(|h| h.container_id()).collect();
        assert_eq!(left, ["a1", "c2", "z"]);
    }
}
