//! `tb cancel [BATCH] [--job NAME]...`: stop running jobs gracefully —
//! SIGTERM, the grace period (a trainer saves its checkpoint), then
//! SIGKILL — and mark them `cancelled`. With a live supervisor, tb asks it:
//! the whole batch by signal (as Ctrl-C would), single jobs by a request it
//! acts on. Without one, tb stops the runs itself through the backend and
//! records them. The same on every backend.

use crate::backend;
use crate::cli::{CancelArgs, GlobalArgs};
use crate::error::hinted;
use crate::executor::STOP_GRACE;
use crate::exit::Exit;
use crate::gpu::Inventory;
use crate::run::{BatchDir, Outcome, Status};
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
    match (&supervisor, args.jobs.is_empty()) {
        (Some(s), true) => through_signal(&dir, s.pid),
        (Some(_), false) => through_requests(&dir, &args.jobs),
        (None, _) => {
            let names = if args.jobs.is_empty() {
                batch.jobs.clone()
            } else {
                args.jobs.clone()
            };
            by_itself(&dir, &names, !args.jobs.is_empty())
        }
    }
}

/// The supervisor stops its running jobs and leaves the rest pending.
fn through_signal(dir: &BatchDir, pid: u32) -> anyhow::Result<Exit> {
    // SAFETY: a plain signal to a pid read from the lock it holds.
    if unsafe { libc::kill(pid as i32, libc::SIGTERM) } != 0 {
        anyhow::bail!(
            "failed to signal the supervisor (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    eprintln!(
        "asked the supervisor (pid {pid}) to stop batch {}; waiting for it",
        dir.id
    );
    let until = Instant::now() + STOP_GRACE + Duration::from_secs(60);
    while dir.supervisor().is_some() {
        if Instant::now() > until {
            eprintln!("the supervisor is still stopping; `tb status` shows where it is");
            return Ok(Exit::JobsFailed);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("batch {} stopped", dir.id);
    Ok(Exit::Success)
}

/// Leaves a request for each job, which the supervisor acts on (stopping
/// a running job, dropping a queued one or a retry), and waits for it.
fn through_requests(dir: &BatchDir, names: &[String]) -> anyhow::Result<Exit> {
    let mut asked = Vec::new();
    for name in names {
        let state = dir.read_job_state(name)?;
        if state.status().is_final() && !state.status().is_retryable(true) {
            eprintln!("{name}: not running ({})", state.status());
            continue;
        }
        dir.request_cancel(name)?;
        asked.push(name);
    }
    let until = Instant::now() + STOP_GRACE + Duration::from_secs(60);
    for name in asked {
        loop {
            let taken = !dir.cancel_requested(name);
            if taken || dir.supervisor().is_none() {
                let state = dir.read_job_state(name)?;
                eprintln!("{name}: {}", state.status());
                break;
            }
            if Instant::now() > until {
                eprintln!("{name}: still stopping; `tb status` shows where it is");
                return Ok(Exit::JobsFailed);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(Exit::Success)
}

/// No supervisor: this process takes the lock and does it all.
fn by_itself(dir: &BatchDir, names: &[String], named: bool) -> anyhow::Result<Exit> {
    let _lock = dir.lock()?;
    let plan = dir.plan(Inventory::detect())?;
    let all: Vec<String> = plan.jobs.iter().map(|j| j.name.clone()).collect();
    let mut states = dir.read_states(&all)?;
    crate::runtime()?.block_on(async {
        let mut backend = backend::for_plan(&plan);
        let survey = backend.survey(dir, &all, &states).await?;
        for (i, name) in all.iter().enumerate() {
            if !names.contains(name) {
                continue;
            }
            let state = &mut states[i];
            let found = survey.jobs[i].as_ref();
            match (state.status(), found) {
                (Status::Running | Status::Pending, Some(f)) if f.started && !f.running => {
                    // It ended while nobody watched: its real outcome (and the
                    // output it wrote meanwhile) is for `tb resume` to record.
                    eprintln!("{name}: already ended; `tb resume` records how");
                    continue;
                }
                (Status::Running | Status::Pending, Some(f)) if f.started => {
                    eprintln!("{name}: stopping {}", f.handle.describe());
                    // How it ended, or (when the backend cannot tell) that
                    // it was stopped now: it ran, so it keeps its start.
                    let outcome = backend
                        .stop(dir, name, &f.handle, STOP_GRACE)
                        .await?
                        .unwrap_or(Outcome {
                            status: Status::Cancelled,
                            exit_code: None,
                            oom_killed: false,
                            error: None,
                            container_id: None,
                            started_at: state.started_at().or(f.started_at),
                            finished_at: chrono::Utc::now(),
                        });
                    state.stopped(&outcome, Status::Cancelled, "cancelled (tb cancel)");
                    eprintln!("{name}: stopped");
                }
                (Status::Running, None) => {
                    eprintln!("{name}: its run is gone; `tb resume` records it as lost");
                    continue;
                }
                (Status::Pending, found) => {
                    if let Some(f) = found {
                        backend.stop(dir, name, &f.handle, STOP_GRACE).await?;
                    }
                    state.cancelled_before_start("cancelled before it started (tb cancel)");
                    eprintln!("{name}: cancelled before it started");
                }
                (other, _) if named => {
                    eprintln!("{name}: not running ({other})");
                    continue;
                }
                _ => continue,
            }
            dir.write_job_state(name, state)?;
            dir.clear_cancel_request(name);
        }
        Ok(Exit::Success)
    })
}
