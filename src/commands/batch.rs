//! `tb batch FILE`: validate, create the batch directory, run every job,
//! and say how the night went. `supervise` is shared with `tb retry`.

use crate::cli::{BatchArgs, GlobalArgs};
use crate::docker::Engine;
use crate::error::hinted;
use crate::exit::Exit;
use crate::gpu::Inventory;
use crate::logging;
use crate::preflight::Checked;
use crate::progress::Progress;
use crate::report::{self, Format};
use crate::runner::{self, Summary};
use crate::settings::{self, Overrides, Plan};
use crate::state::{BatchDir, BatchStatus, Status, Supervisor};
use anyhow::Context;
use chrono::Utc;

pub fn run(args: &BatchArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let overrides = Overrides {
        concurrency: args.concurrency.clone(),
        only: args.only.clone(),
        backend: args.backend.clone(),
    };
    let plan = settings::resolve(&args.file, &overrides, Inventory::detect())?;
    let runs_dir = std::path::absolute(&global.runs_dir)?;
    crate::runtime()?.block_on(async {
        let engine = Engine::connect().await?;
        let checked = crate::preflight::check(&plan, &engine, &runs_dir).await?;
        if plan.backend == crate::batch::Backend::Slurm {
            crate::slurm::preflight(&plan)?;
        }
        if args.dry_run {
            crate::commands::validate::print_plan(&plan);
            eprintln!(
                "dry run: {} job(s) would run, concurrency {}; nothing started",
                plan.jobs.len(),
                plan.concurrency
            );
            return Ok(Exit::Success);
        }
        ensure_downloads(&plan)?;
        if plan.backend == crate::batch::Backend::Slurm {
            std::fs::create_dir_all(&runs_dir)
                .with_context(|| format!("failed to create the runs directory `{}`", runs_dir.display()))?;
            crate::slurm::nodes_see(&plan, &runs_dir)?;
        }
        let dir = BatchDir::create(&runs_dir, &plan)?;
        // Taken before anything runs, so that a `tb resume` racing a
        // detached start cannot supervise the batch twice.
        let lock = if args.detach { None } else { Some(dir.lock()?) };
        logging::attach_supervisor_log(&dir.path.join("supervisor.log"))?;

        let done = if args.skip_done {
            crate::identity::succeeded_under(&runs_dir, &dir.path)
        } else {
            Default::default()
        };
        let mut to_run = Vec::new();
        for (i, job) in plan.jobs.iter().enumerate() {
            let identity = crate::identity::of(job, checked.image_ids[i].as_deref());
            let mut state = dir.read_job_state(&job.name)?;
            state.identity = Some(identity.clone());
            match done.get(&identity) {
                Some(origin) => {
                    crate::identity::reuse(&dir, &job.name, origin, &mut state)?;
                    tracing::info!(
                        "{}: already succeeded in {}; reusing that result",
                        job.name,
                        origin.display()
                    );
                }
                None => {
                    dir.write_job_state(&job.name, &state)?;
                    to_run.push(i);
                }
            }
        }
        let Some(lock) = lock else {
            logging::detach_supervisor_log();
            return detach(&dir, global);
        };
        let options = runner::Options {
            deadline: plan.deadline,
            ..Default::default()
        };
        supervise(&plan, &dir, &engine, &checked, &to_run, options, lock).await
    })
}

/// Creates the downloads cache, or says why it cannot be.
pub(crate) fn ensure_downloads(plan: &Plan) -> anyhow::Result<()> {
    std::fs::create_dir_all(&plan.downloads).map_err(|e| {
        hinted(
            format!(
                "cannot create the downloads directory `{}`: {e}",
                plan.downloads.display()
            ),
            "set `downloads` in [batch] to a writable directory",
        )
    })
}

/// Hands the new batch to a supervisor in the background (`tb resume` in
/// its own session, with no terminal), and says how to watch it.
fn detach(dir: &BatchDir, global: &GlobalArgs) -> anyhow::Result<Exit> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("failed to find the tb executable")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path.join("supervisor.log"))?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("--runs-dir")
        .arg(std::path::absolute(&global.runs_dir)?)
        .args(["--no-progress", "resume", "--started-detached"])
        .arg(&dir.path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        // Anything tb prints before its own log is attached still lands
        // in the batch's log.
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory; a new
    // session has no terminal, so logging out or SIGHUP does not reach it.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().context("failed to start the background supervisor")?;
    eprintln!(
        "batch {} runs in the background (supervisor pid {})",
        dir.id,
        child.id()
    );
    eprintln!("  tb status {}      how it is doing", dir.id);
    eprintln!("  tb logs {} -f     follow its jobs' output", dir.id);
    eprintln!("  tb cancel {}      stop it", dir.id);
    println!("{}", dir.path.display());
    Ok(Exit::Success)
}

/// Runs `to_run` of `plan` in `dir` (and follows `options.adopt`) and
/// closes the batch: its state, the report and summary, the exit status
/// (which covers every job of the batch). Holds `lock` throughout.
pub(crate) async fn supervise(
    plan: &Plan,
    dir: &BatchDir,
    engine: &Engine,
    checked: &Checked,
    to_run: &[usize],
    options: runner::Options,
    lock: crate::state::Lock,
) -> anyhow::Result<Exit> {
    let mut state = dir.read_batch()?;
    state.status = BatchStatus::Running;
    state.finished_at = None;
    state.supervisor = Some(Supervisor::current());
    dir.write_batch(&state)?;
    tracing::info!(
        "batch {}: {} job(s) to run of {}{}, concurrency {}, Docker {} (API {}), GPUs: {}",
        dir.id,
        to_run.len(),
        plan.jobs.len(),
        if options.adopt.is_empty() {
            String::new()
        } else {
            format!(", {} to follow again", options.adopt.len())
        },
        plan.concurrency,
        checked.engine_version,
        checked.api_version,
        plan.gpus.describe()
    );
    let progress = Progress::new(logging::output_mode().bars);
    let summary = match plan.backend {
        crate::batch::Backend::Local => {
            runner::run(plan, dir, engine, &checked.image_ids, to_run, &options, &progress).await?
        }
        crate::batch::Backend::Slurm => {
            let adopt: Vec<usize> = options.adopt.iter().map(|a| a.index).collect();
            crate::slurm::run(plan, dir, to_run, &adopt, &progress).await?
        }
    };

    let mut state = dir.read_batch()?;
    state.status = if summary.interrupted || summary.halted.is_some() {
        BatchStatus::Interrupted
    } else {
        BatchStatus::Finished
    };
    state.finished_at = Some(Utc::now());
    dir.write_batch(&state)?;
    close(plan, dir, &summary);
    match summary.halted {
        Some(runner::Halt::EngineGone) => tracing::error!(
            "the Docker engine has been unreachable for {}: tb stopped; the jobs that had not run are pending. Run `tb resume {}` once the engine is back",
            humantime::format_duration(options.engine_wait),
            dir.id
        ),
        Some(runner::Halt::Deadline) => tracing::info!(
            "the deadline stopped the night; `tb resume {}` runs the {} pending job(s)",
            dir.id,
            summary.count(Status::Pending)
        ),
        None => {}
    }
    logging::detach_supervisor_log();
    drop(lock);
    println!("{}", dir.path.display());
    Ok(if summary.interrupted {
        Exit::Interrupted
    } else if summary.all_succeeded() {
        Exit::Success
    } else {
        Exit::JobsFailed
    })
}

/// The end of a batch: the report written, its summary for people on
/// stderr (through the log, so that `supervisor.log` has it too), and
/// `on_finish` run.
fn close(plan: &Plan, dir: &BatchDir, s: &Summary) {
    let wall = crate::human::duration(chrono::Duration::from_std(s.wall).unwrap_or_default());
    let verb = if s.interrupted { "interrupted" } else { "finished" };
    tracing::info!("batch {} {verb} after {wall}", dir.id);
    let written = report::build(dir).and_then(|r| {
        let paths = report::write_report(dir, &r, &Format::ALL)?;
        Ok((r, paths))
    });
    let mut report_md = None;
    match written {
        Ok((r, paths)) => {
            report_md = paths.first().cloned();
            for line in report::summary_lines(&r, &paths) {
                tracing::info!("{line}");
            }
        }
        Err(e) => {
            // The night's results are in the job directories either way.
            tracing::error!("failed to write the report: {e:#}");
            for (name, state) in &s.jobs {
                tracing::info!("  {name}: {}", state.status);
            }
        }
    }
    let reused = s.jobs.iter().filter(|(_, st)| st.reused_from.is_some()).count();
    if reused > 0 {
        tracing::info!("{reused} job(s) reused an earlier result (--skip-done)");
    }
    if s.count(Status::Pending) > 0 {
        tracing::info!(
            "{} job(s) did not start; `tb retry` runs them",
            s.count(Status::Pending)
        );
    }
    tracing::info!("results in {} (tb status, tb logs JOB, tb report)", dir.path.display());
    if let Some(command) = &plan.on_finish {
        let ending = crate::notify::Ending {
            dir,
            name: &plan.name,
            report: report_md.as_deref(),
            jobs: &s.jobs,
            interrupted: s.interrupted,
        };
        crate::notify::run(command, &ending, crate::notify::TIMEOUT);
    }
}
