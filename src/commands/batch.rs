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
use chrono::Utc;

pub fn run(args: &BatchArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let overrides = Overrides {
        concurrency: args.concurrency.clone(),
        only: args.only.clone(),
    };
    let plan = settings::resolve(&args.file, &overrides, Inventory::detect())?;
    let runs_dir = std::path::absolute(&global.runs_dir)?;
    crate::runtime()?.block_on(async {
        let engine = Engine::connect().await?;
        let checked = crate::preflight::check(&plan, &engine, &runs_dir).await?;
        if args.dry_run {
            crate::commands::validate::print_plan(&plan);
            eprintln!(
                "dry run: {} job(s) would run, concurrency {}; nothing started",
                plan.jobs.len(),
                plan.concurrency
            );
            return Ok(Exit::Success);
        }
        std::fs::create_dir_all(&plan.downloads).map_err(|e| {
            hinted(
                format!(
                    "cannot create the downloads directory `{}`: {e}",
                    plan.downloads.display()
                ),
                "set `downloads` in [batch] to a writable directory",
            )
        })?;
        let dir = BatchDir::create(&runs_dir, &plan)?;
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
        supervise(&plan, &dir, &engine, &checked, &to_run).await
    })
}

/// Runs `to_run` of `plan` in `dir` and closes the batch: its state, the
/// summary, the exit status (which covers every job of the batch).
pub(crate) async fn supervise(
    plan: &Plan,
    dir: &BatchDir,
    engine: &Engine,
    checked: &Checked,
    to_run: &[usize],
) -> anyhow::Result<Exit> {
    let mut state = dir.read_batch()?;
    state.status = BatchStatus::Running;
    state.finished_at = None;
    state.supervisor = Some(Supervisor::current());
    dir.write_batch(&state)?;
    tracing::info!(
        "batch {}: {} job(s) to run of {}, concurrency {}, Docker {} (API {}), GPUs: {}",
        dir.id,
        to_run.len(),
        plan.jobs.len(),
        plan.concurrency,
        checked.engine_version,
        checked.api_version,
        if plan.gpus.is_empty() {
            "none".to_string()
        } else {
            plan.gpus.ids.join(",")
        }
    );
    let progress = Progress::new(logging::output_mode().bars);
    let summary = runner::run(
        plan,
        dir,
        engine,
        &checked.image_ids,
        to_run,
        &runner::Options::default(),
        &progress,
    )
    .await?;

    let mut state = dir.read_batch()?;
    state.status = if summary.interrupted {
        BatchStatus::Interrupted
    } else {
        BatchStatus::Finished
    };
    state.finished_at = Some(Utc::now());
    dir.write_batch(&state)?;
    close(dir, &summary);
    logging::detach_supervisor_log();
    println!("{}", dir.path.display());
    Ok(if summary.interrupted {
        Exit::Interrupted
    } else if summary.all_succeeded() {
        Exit::Success
    } else {
        Exit::JobsFailed
    })
}

/// The end of a batch: the report written, and its summary for people on
/// stderr (through the log, so that `supervisor.log` has it too).
fn close(dir: &BatchDir, s: &Summary) {
    let wall = crate::human::duration(chrono::Duration::from_std(s.wall).unwrap_or_default());
    let verb = if s.interrupted { "interrupted" } else { "finished" };
    tracing::info!("batch {} {verb} after {wall}", dir.id);
    let written = report::build(dir).and_then(|r| {
        let paths = report::write_report(dir, &r, &Format::ALL)?;
        Ok((r, paths))
    });
    match written {
        Ok((r, paths)) => {
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
}
