//! `tb batch FILE`: validate, create the batch directory, and hand the
//! jobs to the dispatcher on the plan's backend.

use crate::backend::Ready;
use crate::cli::{BatchArgs, GlobalArgs};
use crate::dispatch::{self, Options, Work};
use crate::error::hinted;
use crate::exit::Exit;
use crate::gpu::Inventory;
use crate::logging;
use crate::run::{BatchDir, JobState, Lock};
use crate::settings::{self, Overrides, Plan};
use anyhow::Context;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub fn run(args: &BatchArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let overrides = Overrides {
        concurrency: args.concurrency.clone(),
        only: args.only.clone(),
        backend: args.backend.clone(),
    };
    let mut plan = settings::resolve(&args.file, &overrides, Inventory::detect())?;
    crate::secrets::register_pass_env(plan.jobs.iter().flat_map(|j| &j.pass_env));
    let runs_dir = std::path::absolute(&global.runs_dir)?;
    crate::warm::apply(&mut plan, &runs_dir);
    crate::runtime()?.block_on(async {
        let (backend, ready) = crate::preflight::run(&plan, &runs_dir).await?;
        if args.dry_run {
            crate::commands::validate::print_plan(&plan);
            log_warm_starts(&plan);
            eprintln!(
                "dry run: {} job(s) would run, concurrency {}; nothing started",
                plan.jobs.len(),
                plan.settings.concurrency
            );
            return Ok(Exit::Success);
        }
        ensure_downloads(&plan)?;
        let how = How {
            skip_done: args.skip_done,
            detach: args.detach,
            trigger: None,
        };
        let NewBatch { dir, lock, work } = create(&plan, &runs_dir, &ready, how)?;
        let Some(lock) = lock else {
            logging::detach_supervisor_log();
            return detach(&dir, global);
        };
        supervise_new(&plan, &dir, backend, &ready, work, lock, None).await
    })
}

/// How a new batch starts.
pub(crate) struct How {
    pub skip_done: bool,
    /// Handed to a background supervisor: no lock taken here.
    pub detach: bool,
    /// The trigger of `tb watch` that starts it.
    pub trigger: Option<crate::run::Trigger>,
}

/// A new batch directory, its jobs prepared for the dispatcher.
pub(crate) struct NewBatch {
    pub dir: BatchDir,
    /// The supervisor lock, unless detached.
    pub lock: Option<Lock>,
    pub work: Work,
}

/// Creates the batch directory of `plan` (already through its preflight)
/// and prepares its jobs: what `tb batch` and each trigger of `tb watch`
/// do before the dispatcher runs them. Its log goes to the batch's
/// `supervisor.log` from here on.
pub(crate) fn create(plan: &Plan, runs_dir: &Path, ready: &Ready, how: How) -> anyhow::Result<NewBatch> {
    let live = crate::run::supervised_under(runs_dir);
    let trigger = how.trigger.as_ref().map(|t| t.describe());
    let dir = BatchDir::create_triggered(runs_dir, plan, how.trigger)?;
    // Taken before anything runs, so that a `tb resume` racing a
    // detached start cannot supervise the batch twice.
    let lock = if how.detach { None } else { Some(dir.lock()?) };
    logging::attach_supervisor_log(&dir.path.join("supervisor.log"))?;
    if let Some(why) = trigger {
        tracing::info!("batch {}: started by `tb watch`: {why}", dir.id);
    }
    warn_if_running(plan, &live, how.skip_done);
    log_warm_starts(plan);

    let elsewhere = if how.skip_done {
        Elsewhere {
            done: crate::identity::succeeded_under(runs_dir, &dir.path),
            running: crate::identity::running_in(&live),
        }
    } else {
        Elsewhere::default()
    };
    let launch = prepare_jobs(plan, &dir, ready, &elsewhere)?;
    Ok(NewBatch {
        dir,
        lock,
        work: Work {
            launch,
            follow: Vec::new(),
        },
    })
}

/// Runs a new batch to its end under its file's deadline, stopping on
/// `signals` (`None`: the dispatcher listens for its own).
pub(crate) async fn supervise_new(
    plan: &Plan,
    dir: &BatchDir,
    backend: Box<dyn crate::backend::Backend>,
    ready: &Ready,
    work: Work,
    lock: Lock,
    signals: Option<crate::signal::Signals>,
) -> anyhow::Result<Exit> {
    let options = Options {
        deadline: plan.settings.deadline,
        signals,
    };
    dispatch::supervise(plan, dir, backend, ready, work, options, lock).await
}

/// What `--skip-done` found of this batch's jobs in other batches, by
/// identity: job directories where they succeeded, and where they run now.
#[derive(Default)]
struct Elsewhere {
    done: HashMap<String, PathBuf>,
    running: HashMap<String, PathBuf>,
}

impl Elsewhere {
    fn is_empty(&self) -> bool {
        self.done.is_empty() && self.running.is_empty()
    }
}

/// With `--skip-done`: a job done elsewhere takes that result, and one
/// running elsewhere is marked to wait for it (their states written now;
/// every other job is pending as the plan has it, and its identity is
/// recorded as it starts). The jobs to hand to the dispatcher, by index.
fn prepare_jobs(plan: &Plan, dir: &BatchDir, ready: &Ready, elsewhere: &Elsewhere) -> anyhow::Result<Vec<usize>> {
    if elsewhere.is_empty() {
        return Ok((0..plan.jobs.len()).collect());
    }
    let mut launch = Vec::new();
    for (i, job) in plan.jobs.iter().enumerate() {
        let identity = crate::identity::of(job, ready.image_ids[i].as_deref());
        let mut state = JobState::pending();
        state.identify(identity.clone());
        if let Some(origin) = elsewhere.done.get(&identity) {
            crate::identity::reuse(dir, &job.name, origin, &mut state)?;
            tracing::info!(
                "{}: already succeeded in {}; reusing that result",
                job.name,
                origin.display()
            );
            continue;
        }
        if let Some(other) = elsewhere.running.get(&identity) {
            tracing::info!(
                "{}: skipped while it runs in batch {}: its result is reused if it succeeds there, \
                 else it runs here (--skip-done)",
                job.name,
                crate::run::batch_of(other)
            );
            state.wait_for(other.clone());
            dir.write_job_state(&job.name, &state)?;
        }
        launch.push(i);
    }
    Ok(launch)
}

/// Under `warm_start`, where each job starts from.
fn log_warm_starts(plan: &Plan) {
    for line in plan.jobs.iter().filter_map(crate::warm::describe) {
        tracing::info!("{line}");
    }
}

/// Warns when the batch file (or a batch of the same name) already runs
/// under another supervisor: that is allowed, and both run every job,
/// unless `--skip-done` makes this one wait for the jobs running there.
fn warn_if_running(plan: &Plan, live: &[crate::run::Live], skip_done: bool) {
    for other in live {
        let what = if crate::run::same_file(&other.state.file, &plan.file) {
            format!("`{}`", plan.file.display())
        } else if other.state.name == plan.name {
            format!("a batch named `{}`", plan.name)
        } else {
            continue;
        };
        let s = &other.supervisor;
        let then = if skip_done {
            "its jobs that run there now are waited for, not run twice"
        } else {
            "both run every job (`--skip-done` waits for the ones running there instead)"
        };
        tracing::warn!(
            "{what} is already running as batch {} under another supervisor (pid {} on {}); {then}",
            other.dir.id,
            s.pid,
            s.host
        );
    }
}

/// Creates the downloads cache, or says why it cannot be.
pub(crate) fn ensure_downloads(plan: &Plan) -> anyhow::Result<()> {
    std::fs::create_dir_all(&plan.settings.downloads).map_err(|e| {
        hinted(
            format!(
                "cannot create the downloads directory `{}`: {e}",
                plan.settings.downloads.display()
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
