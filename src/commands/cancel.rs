//! `tb cancel [BATCH] [--job NAME]...`: stop running jobs gracefully —
//! SIGTERM, the grace period (a trainer saves its checkpoint), then
//! SIGKILL — and mark them `cancelled`. With a live supervisor the whole
//! batch is stopped through it (as Ctrl-C would), single jobs through
//! their containers; without one, tb does it all itself.

use crate::cli::{CancelArgs, GlobalArgs};
use crate::docker::Engine;
use crate::error::hinted;
use crate::executor::{CANCEL_REQUEST, STOP_GRACE};
use crate::exit::Exit;
use crate::state::{BatchDir, Status};
use std::time::{Duration, Instant};

pub fn run(args: &CancelArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let dir = BatchDir::open(&global.runs_dir, args.batch.as_deref())?;
    let batch = dir.read_batch()?;
    for name in &args.jobs {
        if !batch.jobs.contains(name) {
            let names: Vec<&str> = batch.jobs.iter().map(String::as_str).collect();
            let hint = crate::batch::suggest(name, &names)
                .unwrap_or_default()
                .replace("valid keys here", "the jobs are");
            return Err(hinted(format!("batch {} has no job `{name}`", dir.id), hint));
        }
    }
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let supervisor = dir.supervisor();
    if let Some(s) = &supervisor
        && s.host != host
    {
        return Err(hinted(
            format!(
                "batch {} is supervised by pid {} on {}, not this host",
                dir.id, s.pid, s.host
            ),
            format!("run `tb cancel` on {}", s.host),
        ));
    }

    if args.jobs.is_empty()
        && let Some(s) = &supervisor
    {
        // The supervisor stops its running jobs and leaves the rest pending.
        // SAFETY: a plain signal to a pid read from the lock it holds.
        if unsafe { libc::kill(s.pid as i32, libc::SIGTERM) } != 0 {
            anyhow::bail!(
                "failed to signal the supervisor (pid {}): {}",
                s.pid,
                std::io::Error::last_os_error()
            );
        }
        eprintln!(
            "asked the supervisor (pid {}) to stop batch {}; waiting for it",
            s.pid, dir.id
        );
        let until = Instant::now() + STOP_GRACE + Duration::from_secs(30);
        while dir.supervisor().is_some() {
            if Instant::now() > until {
                eprintln!("the supervisor is still stopping; `tb status` shows where it is");
                return Ok(Exit::JobsFailed);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("batch {} stopped", dir.id);
        return Ok(Exit::Success);
    }

    let names: Vec<String> = if args.jobs.is_empty() {
        batch.jobs.clone()
    } else {
        args.jobs.clone()
    };
    if batch.settings.backend == crate::batch::Backend::Slurm {
        return cancel_slurm(&dir, &names, supervisor.is_some());
    }
    // Without a supervisor, this process is the one that writes states.
    let lock = if supervisor.is_none() { Some(dir.lock()?) } else { None };
    crate::runtime()?.block_on(async {
        let engine = Engine::connect().await?;
        let mut stopping = Vec::new();
        for name in &names {
            let mut state = dir.read_job_state(name)?;
            match state.status {
                Status::Running => {
                    let running = match &state.container_id {
                        Some(id) => engine.observe(id).await?.is_some_and(|o| o.running),
                        None => false,
                    };
                    if !running && lock.is_some() {
                        // It ended while nobody watched: its real outcome (and the
                        // output it wrote meanwhile) is for `tb resume` to record.
                        eprintln!("{name}: already ended; `tb resume` records how");
                        continue;
                    }
                    crate::state::write_atomic(&dir.job_dir(name).join(CANCEL_REQUEST), b"tb cancel\n")?;
                    if let (Some(id), true) = (state.container_id.clone(), running) {
                        engine.signal(&id, "SIGTERM").await?;
                        stopping.push((name.clone(), id));
                    }
                }
                Status::Failed | Status::Oom | Status::Timeout | Status::Lost
                    if lock.is_none() && !args.jobs.is_empty() =>
                {
                    // It may be waiting to be retried: make sure it is not.
                    crate::state::write_atomic(&dir.job_dir(name).join(CANCEL_REQUEST), b"tb cancel\n")?;
                    eprintln!("{name}: will not be retried");
                }
                Status::Pending if lock.is_none() => {
                    // The supervisor marks it cancelled instead of starting it.
                    crate::state::write_atomic(&dir.job_dir(name).join(CANCEL_REQUEST), b"tb cancel\n")?;
                    eprintln!("{name}: will not start");
                }
                Status::Pending => {
                    state.status = Status::Cancelled;
                    state.error = Some("cancelled before it started (tb cancel)".into());
                    state.finished_at = Some(chrono::Utc::now());
                    dir.write_job_state(name, &state)?;
                    eprintln!("{name}: cancelled before it started");
                }
                other if !args.jobs.is_empty() => eprintln!("{name}: not running ({other})"),
                _ => {}
            }
        }
        let until = tokio::time::Instant::now() + STOP_GRACE;
        for (name, id) in &stopping {
            loop {
                match engine.observe(id).await? {
                    Some(o) if o.running && tokio::time::Instant::now() < until => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Some(o) if o.running => {
                        eprintln!("{name}: still running after {}s; killing it", STOP_GRACE.as_secs());
                        engine.signal(id, "SIGKILL").await?;
                        break;
                    }
                    _ => break,
                }
            }
            eprintln!("{name}: stopped");
            if lock.is_some() {
                // Nobody else will record it.
                let mut state = dir.read_job_state(name)?;
                let exit = engine.observe(id).await?.map(|o| o.exit);
                state.status = Status::Cancelled;
                state.exit_code = exit.as_ref().and_then(|e| e.exit_code);
                state.error = Some("cancelled (tb cancel)".into());
                state.finished_at = Some(chrono::Utc::now());
                dir.write_job_state(name, &state)?;
                let _ = std::fs::remove_file(dir.job_dir(name).join(CANCEL_REQUEST));
                engine.remove(id).await?;
            }
        }
        Ok(Exit::Success)
    })
}

/// On Slurm: running jobs get SIGTERM through `scancel --batch` (`tb exec`
/// stops its container gracefully and records `cancelled`); queued ones are
/// cancelled in Slurm (recorded here when no supervisor will); a job waiting
/// to be retried is asked not to be.
fn cancel_slurm(dir: &BatchDir, names: &[String], supervised: bool) -> anyhow::Result<Exit> {
    let (mut running, mut queued) = (Vec::new(), Vec::new());
    for name in names {
        let mut state = dir.read_job_state(name)?;
        match (state.status, state.slurm_job_id.clone()) {
            (Status::Running, Some(id)) => running.push(id),
            (Status::Pending, id) => {
                queued.extend(id);
                if !supervised {
                    state.status = Status::Cancelled;
                    state.error = Some("cancelled before it started (tb cancel)".into());
                    state.finished_at = Some(chrono::Utc::now());
                    dir.write_job_state(name, &state)?;
                }
            }
            (Status::Failed | Status::Oom | Status::Timeout | Status::Lost, _) if supervised => {
                crate::state::write_atomic(&dir.job_dir(name).join(CANCEL_REQUEST), b"tb cancel\n")?;
            }
            _ => {}
        }
    }
    crate::slurm::terminate(&running)?;
    crate::slurm::scancel(&queued)?;
    eprintln!(
        "stopping {} running Slurm job(s) {}; cancelled {} queued {}",
        running.len(),
        running.join(" "),
        queued.len(),
        queued.join(" ")
    );
    Ok(Exit::Success)
}
