//! The Slurm backend: each job is an `sbatch` job whose script runs
//! `tb exec JOB_DIR` on its node (the same executor as on one machine, so
//! the job directory, logs and `state.json` look the same). Slurm places
//! jobs and assigns GPUs; this supervisor submits, follows Slurm's view
//! (`squeue`, then `scontrol show job` once a job left the queue) and the
//! job directories, retries, and cancels with `scancel`.

use crate::error::hinted;
use crate::progress::Progress;
use crate::runner::{Summary, backoff, log_end, write_state};
use crate::settings::{JobSpec, Plan};
use crate::state::{BatchDir, JobFile, JobState, Status};
use anyhow::Context;
use chrono::Utc;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How often Slurm and the job directories are looked at.
const POLL: Duration = Duration::from_millis(1000);

/// Checks that Slurm answers and knows the partition.
pub fn preflight(plan: &Plan) -> anyhow::Result<()> {
    let version = Command::new("sbatch").arg("--version").output();
    match version {
        Ok(o) if o.status.success() => {}
        _ => {
            return Err(hinted(
                "cannot run `sbatch`: the Slurm backend needs the Slurm client tools on this host",
                "install slurm-client, and point SLURM_CONF at the cluster's slurm.conf",
            ));
        }
    }
    let mut sinfo = Command::new("sinfo");
    sinfo.args(["-h", "-o", "%P"]);
    let out = sinfo.output().context("failed to run `sinfo`")?;
    if !out.status.success() {
        return Err(hinted(
            format!("`sinfo` failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
            "is slurmctld running, and SLURM_CONF right?",
        ));
    }
    let partitions: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches('*').to_string())
        .collect();
    if let Some(p) = &plan.slurm.partition
        && !partitions.contains(p)
    {
        return Err(hinted(
            format!("Slurm has no partition `{p}`"),
            format!("the partitions are: {}", partitions.join(", ")),
        ));
    }
    if let Some(job) = plan.jobs.iter().find(|j| j.gpus > 0) {
        let mut gres = Command::new("sinfo");
        gres.args(["-h", "-o", "%G"]);
        if let Some(p) = &plan.slurm.partition {
            gres.arg(format!("--partition={p}"));
        }
        let out = gres.output().context("failed to run `sinfo`")?;
        if !String::from_utf8_lossy(&out.stdout).contains("gpu") {
            return Err(hinted(
                format!(
                    "job `{}` asks for {} GPU(s) but the cluster's nodes offer no `gpu` gres",
                    job.name, job.gpus
                ),
                "set gpus = 0 (on Slurm, gpus = \"auto\" means 1), or pick a GPU partition in [batch.slurm]",
            ));
        }
    }
    Ok(())
}

/// Checks that the cluster's nodes see `path` (the runs directory: job
/// directories, logs and states live there) by running `test -d` on one.
/// A cluster too busy to answer within seconds is a warning, not an error.
pub fn nodes_see(plan: &Plan, path: &Path) -> anyhow::Result<()> {
    let mut srun = Command::new("srun");
    srun.args(["--immediate=20", "--quiet", "--ntasks=1", "--time=1"]);
    if let Some(p) = &plan.slurm.partition {
        srun.arg(format!("--partition={p}"));
    }
    let out = srun
        .arg("test")
        .arg("-d")
        .arg(path)
        .output()
        .context("failed to run `srun`")?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Unable to allocate") || err.contains("unavailable") {
        tracing::warn!(
            "could not check that the nodes see `{}` (the cluster is busy)",
            path.display()
        );
        return Ok(());
    }
    Err(hinted(
        format!(
            "the cluster's nodes do not see the runs directory `{}`{}",
            path.display(),
            if err.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", err.trim())
            }
        ),
        "put the runs directory on a filesystem the nodes share (--runs-dir or TB_RUNS_DIR)",
    ))
}

/// The job script: `sbatch` options from the job's resources, then
/// `tb exec` (exec'd, so that Slurm's SIGTERM reaches it).
pub fn script(plan: &Plan, dir: &BatchDir, job: &JobSpec, tb: &Path) -> String {
    let job_dir = dir.job_dir(&job.name);
    let mut s = String::from("#!/bin/bash\n");
    let mut opt = |o: String| s.push_str(&format!("#SBATCH {o}\n"));
    opt(format!("--job-name=tb-{}-{}", dir.id, job.name));
    opt(format!("--output={}/slurm-%j.out", job_dir.display()));
    opt(format!("--chdir={}", job_dir.display()));
    if job.gpus > 0 {
        opt(format!("--gres=gpu:{}", job.gpus));
    }
    opt(format!(
        "--cpus-per-task={}",
        job.cpus.map(|c| c.ceil() as u64).unwrap_or(1)
    ));
    if let Some(m) = job.memory {
        opt(format!("--mem={}M", m.div_ceil(1 << 20)));
    }
    if let Some(t) = job.time_limit {
        // tb stops the container itself at the limit (status `timeout`,
        // checkpoint written); Slurm's own limit only backs it up.
        opt(format!("--time={}", (t.as_secs() + 300).div_ceil(60)));
    }
    for (key, value) in [
        ("partition", &plan.slurm.partition),
        ("account", &plan.slurm.account),
        ("qos", &plan.slurm.qos),
    ] {
        if let Some(v) = value {
            opt(format!("--{key}={v}"));
        }
    }
    s.push_str(&format!(
        "exec {} exec {}\n",
        shell_quote(&tb.display().to_string()),
        shell_quote(&job_dir.display().to_string())
    ));
    s
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Submits job `index` as a new attempt; its Slurm id.
fn submit(plan: &Plan, dir: &BatchDir, index: usize, state: &mut JobState, tb: &Path) -> anyhow::Result<String> {
    let job = &plan.jobs[index];
    if state.attempt > 0 {
        dir.archive_attempt(&job.name, state.attempt, state)?;
    }
    state.begin_attempt();
    // On disk before sbatch: `tb exec` may start (and read it) at once.
    state.status = Status::Pending;
    dir.write_job_state(&job.name, state)?;
    dir.write_job_file(&JobFile::new(&plan.name, &dir.id, state.attempt, job))?;
    let path = dir.job_dir(&job.name).join("slurm.sh");
    crate::state::write_atomic(&path, script(plan, dir, job, tb).as_bytes())?;
    let out = Command::new("sbatch")
        .arg("--parsable")
        .args(&plan.slurm.extra)
        .arg(&path)
        .output()
        .context("failed to run `sbatch`")?;
    if !out.status.success() {
        anyhow::bail!(
            "sbatch refused job `{}`: {}",
            job.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let id = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    state.slurm_job_id = Some(id.clone());
    // `tb exec` records its own id and progress; only a state it has not
    // touched yet gets the id from here.
    match dir.read_job_state(&job.name) {
        Ok(now) if now.attempt == state.attempt && now.status == Status::Pending && now.slurm_job_id.is_none() => {
            write_state(dir, &job.name, state);
        }
        Ok(now) => *state = now,
        Err(_) => write_state(dir, &job.name, state),
    }
    tracing::info!("submitted {} (attempt {}) as Slurm job {id}", job.name, state.attempt);
    Ok(id)
}

/// Slurm's state of our jobs among `ids` that it still lists (finished ones
/// too, for `MinJobAge`); `None` if squeue failed this time.
fn squeue(ids: &[&String]) -> Option<BTreeMap<String, String>> {
    if ids.is_empty() {
        return Some(BTreeMap::new());
    }
    // SAFETY: a plain getter.
    let uid = unsafe { libc::getuid() }.to_string();
    let out = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%i %T", "-u", &uid])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
            })
            .filter(|(id, _)| ids.contains(&id))
            .collect(),
    )
}

/// The jobs among `ids` that Slurm still has in hand, or an error if it
/// cannot say.
pub fn still_queued(ids: &[String]) -> anyhow::Result<Vec<String>> {
    let refs: Vec<&String> = ids.iter().collect();
    let queue = squeue(&refs).ok_or_else(|| anyhow::anyhow!("`squeue` failed; cannot tell which jobs still run"))?;
    Ok(queue
        .into_iter()
        .filter(|(_, s)| in_flight(s))
        .map(|(id, _)| id)
        .collect())
}

/// Whether Slurm still has the job in hand (it may yet run or finish).
fn in_flight(state: &str) -> bool {
    matches!(
        state,
        "PENDING"
            | "RUNNING"
            | "CONFIGURING"
            | "COMPLETING"
            | "SUSPENDED"
            | "REQUEUED"
            | "REQUEUE_HOLD"
            | "REQUEUE_FED"
            | "RESIZING"
            | "SIGNALING"
            | "STAGE_OUT"
            | "PREEMPTED"
            | "RESV_DEL_HOLD"
    )
}

/// `JobState` and `ExitCode` of a job from `scontrol show job`.
fn scontrol(id: &str) -> Option<(String, Option<i64>)> {
    let out = Command::new("scontrol").args(["show", "job", id]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")).map(String::from))
    };
    let state = field("JobState")?;
    let code = field("ExitCode").and_then(|c| c.split(':').next().and_then(|n| n.parse().ok()));
    Some((state, code))
}

/// Asks running jobs to stop: SIGTERM to their batch script (`tb exec`)
/// alone, which stops its container within tb's grace period — without
/// starting Slurm's KillWait, which could end `tb exec` first.
pub fn terminate(ids: &[String]) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let st = Command::new("scancel")
        .args(["--batch", "--signal=TERM"])
        .args(ids)
        .status()
        .context("failed to run `scancel`")?;
    if !st.success() {
        anyhow::bail!("scancel --signal=TERM failed for {}", ids.join(" "));
    }
    Ok(())
}

/// Cancels Slurm jobs outright (queued ones, or ones that would not stop).
pub fn scancel(ids: &[String]) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let st = Command::new("scancel")
        .args(ids)
        .status()
        .context("failed to run `scancel`")?;
    if !st.success() {
        anyhow::bail!("scancel failed for {}", ids.join(" "));
    }
    Ok(())
}

/// Submits `to_run`, follows them and the already submitted `adopt`
/// (indexes whose state holds a Slurm id) to their ends.
pub async fn run(
    plan: &Plan,
    dir: &BatchDir,
    to_run: &[usize],
    adopt: &[usize],
    progress: &Progress,
) -> anyhow::Result<Summary> {
    use tokio::signal::unix::{SignalKind, signal};
    let began = std::time::Instant::now();
    let tb = std::env::current_exe().context("failed to find the tb executable")?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut states: Vec<JobState> = plan
        .jobs
        .iter()
        .map(|j| dir.read_job_state(&j.name))
        .collect::<anyhow::Result<_>>()?;
    let mut active: BTreeMap<usize, String> = BTreeMap::new();
    let mut auto_retries = vec![0u32; plan.jobs.len()];
    let mut retry_at: BTreeMap<usize, std::time::Instant> = BTreeMap::new();
    let mut started: HashSet<usize> = HashSet::new();
    let mut unknown_rounds: BTreeMap<usize, u32> = BTreeMap::new();
    let mut interrupted = false;
    // After a stop: when to stop waiting for `tb exec` to wind down.
    let mut give_up_at: Option<std::time::Instant> = None;
    progress.start(to_run.len() + adopt.len());
    for &i in adopt {
        if let Some(id) = states[i].slurm_job_id.clone() {
            tracing::info!("following {} again (Slurm job {id})", plan.jobs[i].name);
            active.insert(i, id);
        }
    }
    let record_submit_error = |i: usize, state: &mut JobState, e: anyhow::Error| {
        state.status = Status::Failed;
        state.error = Some(format!("{e:#}"));
        state.finished_at = Some(Utc::now());
        write_state(dir, &plan.jobs[i].name, state);
        log_end(&plan.jobs[i].name, state);
        progress.job_finished(&plan.jobs[i].name, state.status);
    };
    for &i in to_run {
        let stop_now = tokio::select! {
            biased;
            _ = int.recv() => true,
            _ = term.recv() => true,
            _ = std::future::ready(()) => false,
        };
        if stop_now {
            interrupted = true;
            break;
        }
        match submit(plan, dir, i, &mut states[i], &tb) {
            Ok(id) => {
                active.insert(i, id);
            }
            Err(e) => record_submit_error(i, &mut states[i], e),
        }
    }
    let mut stop_sent = false;
    while !active.is_empty() || (!retry_at.is_empty() && !interrupted) {
        if interrupted && !stop_sent {
            stop_sent = true;
            retry_at.clear();
            // Running ones stop gracefully through `tb exec`; queued ones are
            // withdrawn and stay pending, for `tb resume`.
            let (mut running, mut queued) = (Vec::new(), Vec::new());
            for (&i, id) in &active {
                if dir
                    .read_job_state(&plan.jobs[i].name)
                    .is_ok_and(|s| s.status == Status::Running)
                {
                    running.push(id.clone());
                } else {
                    queued.push((i, id.clone()));
                }
            }
            tracing::warn!(
                "interrupted: stopping {} running Slurm job(s), withdrawing {} queued",
                running.len(),
                queued.len()
            );
            let _ = terminate(&running);
            let _ = scancel(&queued.iter().map(|q| q.1.clone()).collect::<Vec<_>>());
            for (i, _) in queued {
                active.remove(&i);
                let state = &mut states[i];
                state.status = Status::Pending;
                state.slurm_job_id = None;
                state.attempt = state.attempt.saturating_sub(1);
                write_state(dir, &plan.jobs[i].name, state);
            }
            give_up_at = Some(std::time::Instant::now() + crate::executor::STOP_GRACE + Duration::from_secs(60));
        }
        if let Some(t) = give_up_at
            && std::time::Instant::now() > t
        {
            let ids: Vec<String> = active.values().cloned().collect();
            tracing::warn!(
                "Slurm jobs still running after the grace period; cancelling them outright: {}",
                ids.join(" ")
            );
            let _ = scancel(&ids);
            for &i in active.keys() {
                let state = &mut states[i];
                state.status = Status::Cancelled;
                state.error = Some("cancelled; tb exec did not record an outcome in time".into());
                state.finished_at = Some(Utc::now());
                write_state(dir, &plan.jobs[i].name, state);
            }
            active.clear();
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = int.recv() => { interrupted = true; }
            _ = term.recv() => { interrupted = true; }
        }
        let due: Vec<usize> = retry_at
            .iter()
            .filter(|(_, t)| **t <= std::time::Instant::now())
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            retry_at.remove(&i);
            let name = &plan.jobs[i].name;
            let request = dir.job_dir(name).join(crate::executor::CANCEL_REQUEST);
            if request.exists() {
                let _ = std::fs::remove_file(&request);
                let state = &mut states[i];
                state.status = Status::Cancelled;
                state.error = Some("cancelled before its retry (tb cancel)".into());
                write_state(dir, name, state);
                progress.job_finished(name, state.status);
                continue;
            }
            match submit(plan, dir, i, &mut states[i], &tb) {
                Ok(id) => {
                    active.insert(i, id);
                }
                Err(e) => record_submit_error(i, &mut states[i], e),
            }
        }
        let ids: Vec<&String> = active.values().collect();
        // A failed squeue says nothing about the jobs: look again next round.
        let Some(queue) = squeue(&ids) else { continue };
        let mut ended = Vec::new();
        for (&i, id) in &active {
            let name = &plan.jobs[i].name;
            let state = &mut states[i];
            if let Ok(on_disk) = dir.read_job_state(name)
                && on_disk.attempt == state.attempt
            {
                *state = on_disk;
            }
            if state.status == Status::Running && started.insert(i) {
                progress.job_started(&plan.jobs[i], &dir.job_dir(name), state.attempt);
            }
            let in_queue = queue.get(id).map(String::as_str);
            if in_queue.is_some_and(in_flight) {
                continue;
            }
            // Slurm is done with it (or no longer knows it): the job ended.
            if state.status.is_final() {
                ended.push(i);
                continue;
            }
            let slurm_state = match in_queue {
                Some(s) => s.to_string(),
                None => {
                    // Gone past MinJobAge, or squeue caught it mid-transition.
                    let n = unknown_rounds.entry(i).or_default();
                    *n += 1;
                    if *n < 5 {
                        continue;
                    }
                    "UNKNOWN".to_string()
                }
            };
            let code = scontrol(id).and_then(|(_, c)| c);
            state.status = match slurm_state.as_str() {
                "CANCELLED" => Status::Cancelled,
                "TIMEOUT" | "DEADLINE" => Status::Timeout,
                "OUT_OF_MEMORY" => Status::Oom,
                "FAILED" => Status::Failed,
                _ => Status::Lost,
            };
            state.exit_code = code.filter(|c| *c != 0).or(state.exit_code);
            state.error = Some(format!(
                "Slurm job {id} ended {slurm_state} before tb exec recorded an outcome (see slurm-{id}.out)"
            ));
            state.finished_at = Some(Utc::now());
            write_state(dir, name, state);
            ended.push(i);
        }
        for i in ended {
            active.remove(&i);
            unknown_rounds.remove(&i);
            started.remove(&i);
            let name = &plan.jobs[i].name;
            let state = &states[i];
            log_end(name, state);
            let retryable = matches!(state.status, Status::Failed | Status::Oom | Status::Lost)
                || (state.status == Status::Timeout && plan.continue_on_timeout);
            if !interrupted && retryable && auto_retries[i] < plan.retries {
                auto_retries[i] += 1;
                let wait = backoff(auto_retries[i]);
                tracing::info!(
                    "{name}: submitting it again in {}s (retry {} of {})",
                    wait.as_secs(),
                    auto_retries[i],
                    plan.retries
                );
                retry_at.insert(i, std::time::Instant::now() + wait);
            } else {
                progress.job_finished(name, state.status);
            }
        }
    }
    progress.finish();
    Ok(Summary {
        jobs: plan.jobs.iter().map(|j| j.name.clone()).zip(states).collect(),
        interrupted,
        wall: began.elapsed(),
        halted: None,
    })
}
