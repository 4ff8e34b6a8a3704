//! Runs one attempt of one job in one container: create, attach, start,
//! stream the output into the job directory byte for byte, enforce the time
//! limit, wait, and say how it ended. It knows one job and nothing of the
//! batch, so a cluster node (`tb exec`) runs it as well as the local backend.

use crate::batch::GpuMode;
use crate::docker::{Chunk, ContainerSpec, Engine, OutputStream};
use crate::run::{CANCEL_REQUEST, JobFile, Outcome, Status, short};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How a running attempt is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// Keep running.
    Run,
    /// SIGTERM, the grace period, then SIGKILL.
    Graceful,
    /// SIGKILL now.
    Kill,
}

/// How long a container has between SIGTERM and SIGKILL: long enough for a
/// trainer to write its last checkpoint.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// Counts container starts in flight: the engine's busiest moment, on which
/// the next job's start waits. Work that can wait (removing a finished
/// container) waits for them to pass, a little, without polling.
#[derive(Clone)]
pub struct StartGate {
    starting: Arc<watch::Sender<usize>>,
}

impl Default for StartGate {
    fn default() -> Self {
        StartGate {
            starting: Arc::new(watch::channel(0).0),
        }
    }
}

impl StartGate {
    /// Marks a start in flight until the guard drops.
    fn enter(&self) -> StartGuard {
        self.starting.send_modify(|n| *n += 1);
        StartGuard(self.starting.clone())
    }

    /// Waits (at most `cap`) until no container start is in flight.
    pub async fn quiet(&self, cap: Duration) {
        let mut rx = self.starting.subscribe();
        let _ = tokio::time::timeout(cap, rx.wait_for(|n| *n == 0)).await;
    }
}

struct StartGuard(Arc<watch::Sender<usize>>);

impl Drop for StartGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// The file in a job directory naming the attempt whose container tb asked
/// the engine to start.
pub const STARTING: &str = ".tb-starting";

/// After the container stopped, how long its output may take to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything one attempt needs; the local backend (or `tb exec`) fills it in.
#[derive(Debug, Clone)]
pub struct Launch {
    pub job: JobFile,
    /// The job directory, absolute; mounted at `/out`.
    pub job_dir: PathBuf,
    /// The shared downloads cache, absolute; mounted at `/downloads`.
    pub downloads: PathBuf,
    /// GPU ids this attempt may use: whole, or its share of the one.
    pub gpus: Vec<String>,
    pub gpu_mode: GpuMode,
    /// Where the batch directory is, for the container's labels.
    pub batch_dir: PathBuf,
    pub stop_grace: Duration,
    /// How long to wait for an engine that went away.
    pub engine_wait: Duration,
    /// Since when tb has not seen the engine (a run taken up after an
    /// earlier supervisor gave up on it): a run a signal stopped after
    /// this was stopped by the engine coming back.
    pub away_since: Option<DateTime<Utc>>,
}

/// A created container with its output attached, not yet started.
pub struct Prepared {
    pub container_id: String,
    output: OutputStream,
}

/// How an attempt ended, and whether the engine stayed away past the
/// limit meanwhile (then the night cannot go on).
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub outcome: Outcome,
    pub engine_gone: bool,
}

impl Finish {
    fn of(outcome: Outcome) -> Finish {
        Finish {
            outcome,
            engine_gone: false,
        }
    }

    fn failed_before_start(error: String, container_id: Option<String>) -> Finish {
        Finish::of(Outcome::failed_before_start(error, container_id))
    }
}

/// The container a launch runs in, without touching the engine.
pub fn container_spec(launch: &Launch) -> ContainerSpec {
    let job = &launch.job;
    let spec = &job.spec;
    let mut env: Vec<String> = vec![
        format!("TB_BATCH={}", job.batch_id),
        format!("TB_JOB={}", spec.name),
        format!("TB_ATTEMPT={}", job.attempt),
        "TB_OUT=/out".into(),
        "TB_DOWNLOADS=/downloads".into(),
    ];
    if let Some(best) = spec.warm_start.as_ref().and_then(|w| w.checkpoint_in_container()) {
        env.push(format!("TB_PREVIOUS_BEST={best}"));
    }
    let resume = launch.job_dir.join("checkpoints").join("last.ckpt");
    if job.attempt > 1 && resume.is_file() {
        env.push("TB_RESUME=/out/checkpoints/last.ckpt".into());
    }
    if !spec.env.contains_key("PYTHONUNBUFFERED") {
        // Live `tb logs -f`: Python block-buffers a non-terminal stdout.
        env.push("PYTHONUNBUFFERED=1".into());
    }
    if spec.code.is_some() {
        let user = spec.env.get("PYTHONPATH").map(|p| format!(":{p}")).unwrap_or_default();
        env.push(format!("PYTHONPATH=/code{user}"));
    }
    if launch.gpu_mode == GpuMode::Env {
        // "void" keeps an NVIDIA default runtime from exposing every GPU to
        // a job that asked for none.
        let visible = if launch.gpus.is_empty() {
            "void".to_string()
        } else {
            launch.gpus.join(",")
        };
        env.push(format!("NVIDIA_VISIBLE_DEVICES={visible}"));
    }
    if let Some(share) = spec.gpus.fraction() {
        // Other jobs use the same GPU: a job can hold its memory to its share
        // (`torch.cuda.set_per_process_memory_fraction`).
        env.push(format!("TB_GPU_SHARE={share}"));
    }
    for (k, v) in &spec.env {
        if k == "PYTHONPATH" && spec.code.is_some() {
            continue;
        }
        env.push(format!("{k}={v}"));
    }
    for name in &spec.pass_env {
        match crate::secrets::read_pass_env(name) {
            Some(v) => env.push(format!("{name}={v}")),
            None => tracing::warn!(
                "job {}: pass_env `{name}` is not set in tb's environment; not passed",
                spec.name
            ),
        }
    }

    let mut binds = vec![
        format!("{}:/out", launch.job_dir.display()),
        format!("{}:/downloads", launch.downloads.display()),
    ];
    if let Some(code) = &spec.code {
        binds.push(format!("{}:/code:ro", code.display()));
    }
    if let Some(crate::settings::WarmStart::Warm { job_dir, .. }) = &spec.warm_start {
        binds.push(format!(
            "{}:{}:ro",
            job_dir.display(),
            crate::settings::WarmStart::MOUNT
        ));
    }
    binds.extend(spec.mounts.iter().map(|m| m.bind()));

    let mut labels = HashMap::from([
        ("tb.batch".to_string(), job.batch_id.clone()),
        ("tb.job".to_string(), spec.name.clone()),
        ("tb.attempt".to_string(), job.attempt.to_string()),
        ("tb.dir".to_string(), launch.batch_dir.display().to_string()),
        // So that a supervisor taking the container over knows its GPUs.
        ("tb.gpus".to_string(), launch.gpus.join(",")),
    ]);
    if let Some(share) = spec.gpus.fraction() {
        labels.insert("tb.gpu_share".to_string(), share.to_string());
    }
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    ContainerSpec {
        // Container names are global to the engine: batches of the same
        // name started in the same second from two runs directories must
        // not collide, so the batch directory's path is part of the name.
        name: format!(
            "tb-{}-{}-{}-{}",
            job.batch_id,
            spec.name,
            job.attempt,
            path_tag(&launch.batch_dir)
        ),
        image: spec.image.clone(),
        cmd: spec.command.clone(),
        env,
        labels,
        binds,
        user: format!("{uid}:{gid}"),
        shm_size: spec.shm_size,
        memory: spec.memory,
        cpus: spec.cpus,
        network: spec.network.clone(),
        device_ids: if launch.gpu_mode == GpuMode::DeviceRequest {
            launch.gpus.clone()
        } else {
            Vec::new()
        },
    }
}

/// Eight hex digits of the sha256 of `path`.
fn path_tag(path: &Path) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(path.as_os_str().as_encoded_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Creates the attempt's container and attaches to its output (its
/// `job.json` is written already). Nothing runs yet.
pub async fn prepare(engine: &Engine, launch: &Launch) -> anyhow::Result<Prepared> {
    let spec = container_spec(launch);
    let container_id = engine.create(&spec).await?;
    match engine.attach(&container_id).await {
        Ok(output) => Ok(Prepared { container_id, output }),
        Err(e) => {
            let _ = engine.remove(&container_id).await;
            Err(e)
        }
    }
}

/// Gives up a prepared container that will not run.
pub async fn discard(engine: &Engine, prepared: Prepared) {
    if let Err(e) = engine.remove(&prepared.container_id).await {
        tracing::warn!("{e:#}");
    }
}

/// Starts the prepared container (counted by `gate` while it starts) and
/// follows it to its end. `on_start` is called once the container runs.
/// Never returns an error: whatever goes wrong is the attempt's outcome.
pub async fn run(
    engine: &Engine,
    prepared: anyhow::Result<Prepared>,
    launch: &Launch,
    stop: watch::Receiver<Stop>,
    gate: &StartGate,
    on_start: impl FnOnce(&str, DateTime<Utc>),
) -> Finish {
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => return Finish::failed_before_start(format!("{e:#}"), None),
    };
    let id = prepared.container_id.clone();
    let files = match LogFiles::open(&launch.job_dir, false) {
        Ok(f) => f,
        Err(e) => {
            discard(engine, prepared).await;
            return Finish::failed_before_start(e, Some(id));
        }
    };
    // Says, to a `tb resume` after this supervisor is killed, that the
    // engine may be starting this container (not fsynced: it only matters
    // while the engine is up).
    let _ = std::fs::write(launch.job_dir.join(STARTING), launch.job.attempt.to_string());
    let guard = gate.enter();
    let mut started = engine.start(&id).await;
    drop(guard);
    let mut output = prepared.output;
    if let Err(e) = &started
        && crate::docker::is_unreachable(e)
    {
        // The engine may have started it and lost only the answer.
        tracing::warn!("job {}: {e:#}; waiting for the engine", launch.job.spec.name);
        if !wait_for_engine(engine, launch.engine_wait).await {
            return Finish {
                engine_gone: true,
                ..Finish::failed_before_start(format!("{e:#}"), Some(id))
            };
        }
        started = match engine.observe(&id).await {
            Ok(Some(o)) if o.created => engine.start(&id).await,
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(anyhow::anyhow!("the container vanished while the engine was away")),
            Err(e) => Err(e),
        };
        // The attach did not survive the engine; its log did.
        output = engine.output_since(&id, 0, 0);
    }
    if let Err(e) = started {
        let info = engine.exit_info(&id).await.ok();
        let mut error = format!("the container did not start: {e:#}");
        if error.contains("could not select device driver") {
            error.push_str(" (GPU containers need the NVIDIA Container Toolkit on the host)");
        }
        let mut finish = Finish::failed_before_start(error, Some(id));
        finish.outcome.exit_code = info.as_ref().and_then(|i| i.exit_code).filter(|c| *c != 0);
        finish.engine_gone = crate::docker::is_unreachable(&e);
        return finish;
    }
    let started_at = Utc::now();
    on_start(&id, started_at);
    follow(engine, &id, output, files, launch, stop, started_at).await
}

/// Takes up a container that ran while no supervisor followed it: what it
/// wrote meanwhile comes from the engine's log (after the bytes the job's
/// log files already hold, so nothing is lost or doubled), then it is
/// followed to its end like any other.
pub async fn reattach(
    engine: &Engine,
    id: &str,
    launch: &Launch,
    stop: watch::Receiver<Stop>,
    started_at: DateTime<Utc>,
) -> Finish {
    let files = match LogFiles::open(&launch.job_dir, true) {
        Ok(f) => f,
        Err(e) => return Finish::failed_before_start(e, Some(id.to_string())),
    };
    let (out, err) = files.sizes();
    let output = engine.output_since(id, out, err);
    follow(engine, id, output, files, launch, stop, started_at).await
}

/// Waits, with backoff, until the engine answers again or `limit` passes.
pub async fn wait_for_engine(engine: &Engine, limit: Duration) -> bool {
    // `limit` may be any length: past what the clock holds is "forever".
    let until = Instant::now().checked_add(limit);
    let mut pause = Duration::from_millis(250);
    loop {
        if engine.ping().await {
            return true;
        }
        if until.is_some_and(|u| Instant::now() >= u) {
            return false;
        }
        let left = until.map_or(pause, |u| u.saturating_duration_since(Instant::now()));
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Follows a started container: streams its output into the log files,
/// enforces the time limit and stop requests, rides out the engine going
/// away, and judges how it ended.
async fn follow(
    engine: &Engine,
    id: &str,
    mut output: OutputStream,
    mut files: LogFiles,
    launch: &Launch,
    mut stop: watch::Receiver<Stop>,
    started_at: DateTime<Utc>,
) -> Finish {
    let name = &launch.job.spec.name;
    let mut output_done = false;
    let mut exit_code: Option<i64> = None;
    let mut wait_error: Option<String> = None;
    let mut write_error: Option<String> = None;
    let mut stopping: Option<Status> = None;
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    let mut drain_deadline: Option<Instant> = None;
    let mut lost: Option<String> = None;
    let mut engine_gone = false;
    let mut away_since = launch.away_since;
    let elapsed = (Utc::now() - started_at).to_std().unwrap_or_default();
    let limit_at = launch
        .job
        .spec
        .time_limit
        // A limit past what the clock holds (a run directory from before
        // limits were bounded) is no limit.
        .and_then(|d| Instant::now().checked_add(d.saturating_sub(elapsed)));
    let mut wait = Box::pin(engine.wait(id));
    let mut waited = false;
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);

    // Acting on a stop request that is already there when we start.
    let mut pending_stop = *stop.borrow();
    loop {
        if pending_stop != Stop::Run && !waited {
            if pending_stop == Stop::Kill && !killed {
                let _ = engine.signal(id, "SIGKILL").await;
                killed = true;
            } else if stopping.is_none() {
                let _ = engine.signal(id, "SIGTERM").await;
                kill_at = Some(Instant::now() + launch.stop_grace);
            }
            stopping.get_or_insert(Status::Cancelled);
            pending_stop = Stop::Run;
        }
        if output_done && waited {
            break;
        }
        tokio::select! {
            chunk = output.next(), if !output_done => match chunk {
                Some(Ok(chunk)) => {
                    if write_error.is_none()
                        && let Err(e) = files.write(&chunk)
                    {
                        // A full disk fails this job, not the night: stop the
                        // container, say why, and free the batch's reserve so
                        // that the states of all jobs can still be written.
                        if crate::run::release_reserve(&launch.batch_dir) {
                            tracing::warn!("the disk of the runs directory is full; released tb's reserve to record the jobs' states");
                        }
                        write_error = Some(e);
                        let _ = engine.signal(id, "SIGKILL").await;
                        killed = true;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!("job {name}: {e:#}");
                    output_done = true;
                }
                None => output_done = true,
            },
            code = &mut wait, if !waited => {
                match code {
                    Ok(c) => {
                        waited = true;
                        exit_code = Some(c);
                        drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
                    }
                    Err(e) if crate::docker::is_unreachable(&e) => {
                        tracing::warn!("job {name}: {e:#}; waiting for the engine to come back");
                        away_since.get_or_insert_with(Utc::now);
                        let back = tokio::select! {
                            back = wait_for_engine(engine, launch.engine_wait) => back,
                            _ = stop.wait_for(|s| *s != Stop::Run) => {
                                lost = Some("tb was stopped while the Docker engine was unreachable".into());
                                break;
                            }
                        };
                        if !back {
                            lost = Some(format!(
                                "the Docker engine was unreachable for {}",
                                humantime::format_duration(launch.engine_wait)
                            ));
                            engine_gone = true;
                            break;
                        }
                        match engine.observe(id).await {
                            Ok(Some(_)) => {
                                // Running or ended meanwhile: either way the engine's log
                                // has what tb missed, and the wait answers at once if it ended.
                                let (out, err) = files.sizes();
                                tracing::info!("job {name}: the engine is back; following container {} again", short(id));
                                output = engine.output_since(id, out, err);
                                output_done = false;
                                wait = Box::pin(engine.wait(id));
                            }
                            Ok(None) => {
                                lost = Some("the container vanished while the Docker engine was away".into());
                                break;
                            }
                            Err(e) => {
                                lost = Some(format!("{e:#}"));
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        waited = true;
                        wait_error = Some(format!("{e:#}"));
                        drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
                    }
                }
            }
            changed = stop.changed(), if !waited => {
                if changed.is_ok() {
                    pending_stop = *stop.borrow();
                }
            }
            _ = tokio::time::sleep_until(limit_at.unwrap_or(far)), if limit_at.is_some() && stopping.is_none() && !waited => {
                tracing::info!("job {name}: time limit reached; stopping it");
                let _ = engine.signal(id, "SIGTERM").await;
                stopping = Some(Status::Timeout);
                kill_at = Some(Instant::now() + launch.stop_grace);
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() && !killed && !waited => {
                tracing::info!("job {name}: still running after the grace period; killing it");
                let _ = engine.signal(id, "SIGKILL").await;
                killed = true;
            }
            _ = tokio::time::sleep_until(drain_deadline.unwrap_or(far)), if drain_deadline.is_some() && !output_done => {
                tracing::warn!("job {name}: output still open {}s after the container stopped; closing it", DRAIN_TIMEOUT.as_secs());
                output_done = true;
            }
        }
    }
    drop(files);
    let finished_at = Utc::now();
    if let Some(why) = lost {
        return Finish {
            outcome: Outcome {
                status: Status::Lost,
                exit_code: None,
                oom_killed: false,
                error: Some(why),
                container_id: Some(id.to_string()),
                started_at: Some(started_at),
                finished_at,
            },
            engine_gone,
        };
    }

    // A clean exit needs no inspection: OOM and engine errors only explain
    // failures, and the round trip would delay the next job's start.
    let (exit_code, oom_killed, engine_error, ended_at) = if exit_code == Some(0) && wait_error.is_none() {
        (exit_code, false, None, None)
    } else {
        match engine.exit_info(id).await {
            Ok(i) => (i.exit_code.or(exit_code), i.oom_killed, i.error, i.finished_at),
            Err(e) => (
                exit_code,
                false,
                Some(wait_error.clone().unwrap_or_else(|| format!("{e:#}"))),
                None,
            ),
        }
    };
    // `tb cancel --job` asks through the job directory.
    if stopping.is_none() && launch.job_dir.join(CANCEL_REQUEST).exists() {
        stopping = Some(Status::Cancelled);
    }
    if stopping.is_none()
        && !oom_killed
        && let Some(why) = stopped_by_engine(exit_code, ended_at, away_since)
    {
        tracing::warn!("job {name}: {why}");
        return Finish::of(Outcome {
            status: Status::Lost,
            exit_code,
            oom_killed,
            error: Some(why),
            container_id: Some(id.to_string()),
            started_at: Some(started_at),
            finished_at,
        });
    }
    let (status, error) = judge(
        exit_code,
        oom_killed,
        stopping,
        write_error,
        engine_error.or(wait_error),
        &launch.job.spec,
    );
    tracing::debug!("job {name}: container {} ended: {status}", short(id));
    Finish::of(Outcome {
        status,
        exit_code,
        oom_killed,
        error,
        container_id: Some(id.to_string()),
        started_at: Some(started_at),
        finished_at,
    })
}

/// Why a run that a signal stopped after tb lost sight of the engine
/// (`away_since`) was lost rather than failed: an engine that restarts
/// stops the containers it finds running (SIGTERM, then SIGKILL). A run
/// that ended any other way meanwhile keeps its real exit status.
fn stopped_by_engine(
    exit_code: Option<i64>,
    ended_at: Option<DateTime<Utc>>,
    away_since: Option<DateTime<Utc>>,
) -> Option<String> {
    let (code, since) = (exit_code?, away_since?);
    // What the engine sends; a crash (SIGSEGV, SIGABRT) is the job's own.
    let by_engine = matches!(code, 137 | 143);
    (by_engine && ended_at.is_none_or(|t| t >= since)).then(|| {
        format!(
            "stopped by the Docker engine while tb could not reach it (an engine restart stops the containers \
             it finds running): {}",
            describe_exit(code)
        )
    })
}

/// The status and the one-line reason of an ended attempt.
fn judge(
    exit_code: Option<i64>,
    oom_killed: bool,
    stopping: Option<Status>,
    write_error: Option<String>,
    engine_error: Option<String>,
    spec: &crate::settings::JobSpec,
) -> (Status, Option<String>) {
    if let Some(e) = write_error {
        return (Status::Failed, Some(e));
    }
    if exit_code == Some(0) {
        return (Status::Succeeded, None);
    }
    if oom_killed {
        let limit = spec
            .memory
            .map(|m| format!(" (limit {})", crate::human::bytes(m)))
            .unwrap_or_default();
        return (Status::Oom, Some(format!("killed by the kernel: out of memory{limit}")));
    }
    let code = exit_code
        .map(describe_exit)
        .unwrap_or_else(|| "ended without an exit code".into());
    match stopping {
        Some(Status::Timeout) => {
            let limit = spec
                .time_limit
                .map(|d| humantime::format_duration(d).to_string())
                .unwrap_or_default();
            (
                Status::Timeout,
                Some(format!("stopped at its time limit of {limit}; {code}")),
            )
        }
        Some(_) => (Status::Cancelled, Some(format!("cancelled; {code}"))),
        None => {
            let reason = match engine_error {
                Some(e) => format!("{code}: {e}"),
                None => code,
            };
            (Status::Failed, Some(reason))
        }
    }
}

fn describe_exit(code: i64) -> String {
    let signal = match code {
        130 => Some("SIGINT"),
        134 => Some("SIGABRT"),
        137 => Some("SIGKILL"),
        139 => Some("SIGSEGV"),
        143 => Some("SIGTERM"),
        _ => None,
    };
    match signal {
        Some(s) => format!("exited with code {code} ({s})"),
        None => format!("exited with code {code}"),
    }
}

/// `stdout.log` and `stderr.log` of the current attempt. Written unbuffered
/// so that `tb logs -f` sees output as the engine delivers it.
struct LogFiles {
    stdout: (PathBuf, std::fs::File),
    stderr: (PathBuf, std::fs::File),
}

impl LogFiles {
    /// The current attempt's log files: new ones, or (to continue after a
    /// re-attach) the existing ones, appended to.
    fn open(dir: &Path, append: bool) -> Result<LogFiles, String> {
        let open = |name: &str| {
            let path = dir.join(name);
            let mut options = std::fs::OpenOptions::new();
            if append {
                options.create(true).append(true);
            } else {
                options.create(true).write(true).truncate(true);
            }
            options
                .open(&path)
                .map(|f| (path.clone(), f))
                .map_err(|e| format!("failed to open `{}`: {e}", path.display()))
        };
        Ok(LogFiles {
            stdout: open("stdout.log")?,
            stderr: open("stderr.log")?,
        })
    }

    /// Bytes held so far, per stream.
    fn sizes(&self) -> (u64, u64) {
        let len = |f: &std::fs::File| f.metadata().map(|m| m.len()).unwrap_or(0);
        (len(&self.stdout.1), len(&self.stderr.1))
    }

    fn write(&mut self, chunk: &Chunk) -> Result<(), String> {
        let ((path, file), bytes) = match chunk {
            Chunk::Stdout(b) => (&mut self.stdout, b),
            Chunk::Stderr(b) => (&mut self.stderr, b),
        };
        file.write_all(bytes)
            .map_err(|e| format!("failed to write `{}`: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::JobSpec;

    fn spec() -> JobSpec {
        serde_json::from_value(serde_json::json!({
            "name": "a", "image": "img", "command": ["true"], "gpus": 1, "cpus": null,
            "memory": 67108864u64, "shm_size": 1, "time_limit": 90.0, "env": {"A": "1", "PYTHONPATH": "/x"},
            "pass_env": [], "mounts": [], "code": "/src", "network": "bridge", "train": null
        }))
        .unwrap()
    }

    fn launch(mode: GpuMode) -> Launch {
        Launch {
            job: JobFile::new("night", "2026-11-22_230000_night", 2, &spec()),
            job_dir: PathBuf::from("/runs/b/jobs/a"),
            downloads: PathBuf::from("/cache"),
            gpus: vec!["1".into()],
            gpu_mode: mode,
            batch_dir: PathBuf::from("/runs/b"),
            stop_grace: STOP_GRACE,
            engine_wait: Duration::from_secs(1),
            away_since: None,
        }
    }

    #[test]
    fn a_signal_after_the_engine_went_away_is_the_engines() {
        let away = Utc::now();
        let after = Some(away + chrono::TimeDelta::seconds(5));
        let before = Some(away - chrono::TimeDelta::seconds(5));
        assert!(stopped_by_engine(Some(143), after, Some(away)).is_some());
        assert!(
            stopped_by_engine(Some(137), None, Some(away)).is_some(),
            "when unknown, the engine's"
        );
        assert!(
            stopped_by_engine(Some(143), before, Some(away)).is_none(),
            "ended before tb lost it"
        );
        assert!(
            stopped_by_engine(Some(3), after, Some(away)).is_none(),
            "its own exit status"
        );
        assert!(
            stopped_by_engine(Some(139), after, Some(away)).is_none(),
            "a crash is the job's own"
        );
        assert!(
            stopped_by_engine(Some(143), after, None).is_none(),
            "the engine never went away"
        );
    }

    #[test]
    fn judging_an_exit() {
        let s = spec();
        assert_eq!(judge(Some(0), false, None, None, None, &s), (Status::Succeeded, None));
        let (st, why) = judge(Some(137), true, None, None, None, &s);
        assert_eq!(st, Status::Oom);
        assert_eq!(why.unwrap(), "killed by the kernel: out of memory (limit 64.0 MiB)");
        let (st, why) = judge(Some(143), false, Some(Status::Timeout), None, None, &s);
        assert_eq!(st, Status::Timeout);
        assert_eq!(
            why.unwrap(),
            "stopped at its time limit of 1m 30s; exited with code 143 (SIGTERM)"
        );
        let (st, why) = judge(Some(143), false, Some(Status::Cancelled), None, None, &s);
        assert_eq!(
            (st, why.as_deref()),
            (Status::Cancelled, Some("cancelled; exited with code 143 (SIGTERM)"))
        );
        let (st, why) = judge(Some(2), false, None, None, Some("boom".into()), &s);
        assert_eq!((st, why.as_deref()), (Status::Failed, Some("exited with code 2: boom")));
        let (st, why) = judge(Some(0), false, None, Some("disk full".into()), None, &s);
        assert_eq!(
            (st, why.as_deref()),
            (Status::Failed, Some("disk full")),
            "a lost write fails even a clean exit"
        );
        let (st, why) = judge(None, false, None, None, None, &s);
        assert_eq!(
            (st, why.as_deref()),
            (Status::Failed, Some("ended without an exit code"))
        );
    }

    #[test]
    fn the_container_carries_the_job_and_nothing_more() {
        let c = container_spec(&launch(GpuMode::DeviceRequest));
        assert_eq!(c.device_ids, ["1"]);
        assert!(c.env.contains(&"TB_ATTEMPT=2".to_string()));
        assert!(c.env.contains(&"PYTHONPATH=/code:/x".to_string()));
        assert!(!c.env.iter().any(|e| e.starts_with("NVIDIA_VISIBLE_DEVICES")));
        assert!(c.binds.contains(&"/src:/code:ro".to_string()));
        assert_eq!(c.labels["tb.job"], "a");
        assert_eq!(c.labels["tb.attempt"], "2");
        assert_eq!(c.labels["tb.gpus"], "1");
        assert!(c.name.starts_with("tb-2026-11-22_230000_night-a-2-"), "{}", c.name);
        assert!(!c.labels.contains_key("tb.gpu_share") && !c.env.iter().any(|e| e.starts_with("TB_GPU_SHARE")));
        let e = container_spec(&launch(GpuMode::Env));
        assert!(e.device_ids.is_empty());
        assert!(e.env.contains(&"NVIDIA_VISIBLE_DEVICES=1".to_string()));
        assert!(!c.env.iter().any(|e| e.starts_with("TB_PREVIOUS_BEST")));
        assert!(!c.binds.iter().any(|b| b.contains("/previous")));
    }

    #[test]
    fn a_warm_start_mounts_the_earlier_job_read_only() {
        let mut l = launch(GpuMode::DeviceRequest);
        l.job.spec.warm_start = Some(crate::settings::WarmStart::Warm {
            batch: "b1".into(),
            job_dir: "/runs/b1/jobs/a".into(),
            checkpoint: "checkpoints/best.ckpt".into(),
            best: None,
            replaced_init_from: None,
        });
        let c = container_spec(&l);
        assert!(
            c.binds.contains(&"/runs/b1/jobs/a:/previous:ro".to_string()),
            "{:?}",
            c.binds
        );
        assert!(
            c.env
                .contains(&"TB_PREVIOUS_BEST=/previous/checkpoints/best.ckpt".to_string())
        );
        l.job.spec.warm_start = Some(crate::settings::WarmStart::Cold { why: "first".into() });
        let c = container_spec(&l);
        assert!(!c.binds.iter().any(|b| b.contains("/previous")));
    }

    #[test]
    fn a_share_names_its_one_gpu_and_says_how_much_of_it() {
        for mode in [GpuMode::DeviceRequest, GpuMode::Env] {
            let mut l = launch(mode);
            l.job.spec.gpus = crate::gpu::GpuShare::Fraction(crate::gpu::Fraction::of(4).unwrap());
            let c = container_spec(&l);
            assert_eq!(c.labels["tb.gpus"], "1");
            assert_eq!(c.labels["tb.gpu_share"], "0.25");
            assert!(c.env.contains(&"TB_GPU_SHARE=0.25".to_string()), "{:?}", c.env);
            match mode {
                GpuMode::DeviceRequest => assert_eq!(c.device_ids, ["1"]),
                GpuMode::Env => assert!(c.env.contains(&"NVIDIA_VISIBLE_DEVICES=1".to_string())),
            }
        }
    }

    #[tokio::test]
    async fn the_start_gate_opens_when_starts_pass() {
        let gate = StartGate::default();
        let guard = gate.enter();
        let waited = tokio::time::timeout(Duration::from_millis(30), gate.quiet(Duration::from_secs(5))).await;
        assert!(waited.is_err(), "quiet while a start is in flight");
        drop(guard);
        tokio::time::timeout(Duration::from_millis(100), gate.quiet(Duration::from_secs(5)))
            .await
            .expect("quiet once it passed");
    }
}
