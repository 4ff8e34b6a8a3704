//! `tb resume [BATCH]`: continue a batch whose supervisor stopped (killed,
//! even with SIGKILL; the machine rebooted; the engine went away): follow
//! its runs that the backend still holds (recording those that ended
//! meanwhile), mark vanished ones `lost`, and run its pending jobs. No job
//! runs twice. The same on every backend.

use crate::backend::{self, Found};
use crate::cli::{GlobalArgs, ResumeArgs};
use crate::dispatch::{self, Options, Work};
use crate::exit::Exit;
use crate::gpu::Inventory;
use crate::run::{BatchDir, JobState, Lock, Status};
use crate::settings::Plan;
use chrono::Utc;
use std::path::Path;

pub fn run(args: &ResumeArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    if args.started_detached {
        // Logging out must not end the night.
        // SAFETY: installing SIG_IGN has no memory effects.
        unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    }
    let dir = BatchDir::open(&global.runs_dir, args.batch.as_deref())?;
    let lock = dir.lock()?;
    let plan = dir.plan(Inventory::detect())?;
    let runs_dir = std::path::absolute(&global.runs_dir)?;
    let options = Options {
        // The file's deadline binds the night it was written for: the
        // first supervisor (also when detached); a resume is a new start.
        // `--deadline` sets a new one for this night.
        deadline: match &args.deadline {
            Some(d) => Some(d.0),
            None if args.started_detached => plan.settings.deadline,
            None => None,
        },
        signals: None,
    };
    crate::runtime()?.block_on(take_up(&plan, &dir, lock, &runs_dir, options))
}

/// Supervises `dir` (of `plan`, its lock held) again: what `tb resume`
/// does, and `tb watch` for the batch of a trigger it was killed during.
pub(crate) async fn take_up(
    plan: &Plan,
    dir: &BatchDir,
    lock: Lock,
    runs_dir: &Path,
    options: Options,
) -> anyhow::Result<Exit> {
    let mut backend = backend::for_plan(plan);
    let ready = backend.preflight(plan, runs_dir).await?;
    crate::commands::batch::ensure_downloads(plan)?;
    crate::logging::attach_supervisor_log(&dir.path.join("supervisor.log"))?;
    let names: Vec<String> = plan.jobs.iter().map(|j| j.name.clone()).collect();
    let mut states = dir.read_states(&names)?;
    let survey = backend.survey(dir, &names, &states).await?;
    backend.discard(&survey.leftovers).await?;
    let pruning = crate::prune::Table::load(&dir.path)?;

    let mut work = Work::default();
    let mut ended = Vec::new();
    for (index, mut found) in survey.jobs.into_iter().enumerate() {
        let name = &names[index];
        // A run's share as its container's label says, else as the job asks.
        if let Some(f) = found.as_mut() {
            f.gpu_share = f.gpu_share.or_else(|| plan.jobs[index].gpus.fraction());
        }
        let state = &mut states[index];
        let before = state.clone();
        let handle = found.as_ref().map(|f| f.handle.clone());
        let pruned = pruning.stopped(name).map(|d| d.describe());
        match take_up_job(name, state, found, pruned.as_deref()) {
            Next::Follow(found) => work.follow.push((index, found)),
            Next::Launch => work.launch.push(index),
            Next::Nothing => {
                // The run of a job whose end is recorded: nothing to follow.
                ended.extend(handle);
                continue;
            }
        }
        // Only what changed: a pending job stays as the plan has it (a sweep
        // of 100k jobs is not written out, one synced file at a time, before
        // the first starts); each launch writes its attempt as it begins.
        if *state != before {
            dir.write_job_state(name, state)?;
        }
    }
    backend.discard(&ended).await?;
    if work.follow.is_empty() && work.launch.is_empty() {
        eprintln!(
            "batch {}: no job is running or pending; closing it (`tb retry` runs failed ones)",
            dir.id
        );
    }
    dispatch::supervise(plan, dir, backend, &ready, work, options, lock).await
}

/// What becomes of one job on resume.
#[derive(Debug, PartialEq)]
enum Next {
    Follow(Found),
    Launch,
    Nothing,
}

/// Reconciles a job's recorded state with what the backend still holds
/// (and, for a vanished run, with the pruning decision that stopped it).
fn take_up_job(name: &str, state: &mut JobState, found: Option<Found>, pruned: Option<&str>) -> Next {
    match (state.status(), found) {
        (Status::Running, Some(mut f)) => {
            f.started_at = f.started_at.or(state.started_at());
            Next::Follow(f)
        }
        (Status::Pending, Some(f)) if f.started => {
            // The supervisor died between the start and writing it down.
            tracing::info!("{name}: its {} started unrecorded; following it", f.handle.describe());
            if f.attempt > state.attempt() {
                state.begin_attempt(None);
            }
            state.started(
                f.handle.clone(),
                f.started_at.unwrap_or_else(Utc::now),
                f.gpus.clone(),
                f.gpu_share,
            );
            Next::Follow(f)
        }
        // Queued in a cluster: it starts when the cluster says so.
        (Status::Pending, Some(f)) => Next::Follow(f),
        (Status::Running, None) if let Some(why) = pruned => {
            tracing::info!("{name}: its run vanished after a pruning decision stopped it; marking it pruned");
            state.pruned_while_away(why);
            Next::Nothing
        }
        (Status::Running, None) => {
            tracing::warn!("{name}: its run vanished while no supervisor ran; marking it lost");
            state.lost("its run vanished while no supervisor was running".into());
            Next::Nothing
        }
        (Status::Pending, None) => Next::Launch,
        _ => Next::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunHandle;

    fn found(started: bool) -> Found {
        Found {
            handle: RunHandle::Container { id: "c".into() },
            attempt: 1,
            started,
            running: true,
            gpus: vec!["0".into()],
            gpu_share: None,
            started_at: None,
        }
    }

    #[test]
    fn resume_follows_launches_and_marks_lost() {
        let mut pending = JobState::pending();
        pending.begin_attempt(None);
        let mut s = pending.clone();
        assert_eq!(
            take_up_job("a", &mut s, Some(found(true)), None),
            Next::Follow(found(true))
        );
        assert_eq!(
            (s.status(), s.attempt(), s.gpus()),
            (Status::Running, 1, &["0".to_string()][..])
        );

        let mut s = pending.clone();
        assert_eq!(
            take_up_job("a", &mut s, Some(found(false)), None),
            Next::Follow(found(false))
        );
        assert_eq!(s.status(), Status::Pending);

        let mut s = pending.clone();
        assert_eq!(take_up_job("a", &mut s, None, None), Next::Launch);

        let mut running = pending.clone();
        running.started(RunHandle::Container { id: "c".into() }, Utc::now(), vec![], None);
        let mut s = running.clone();
        assert_eq!(take_up_job("a", &mut s, None, None), Next::Nothing);
        assert_eq!(s.status(), Status::Lost);
        // Gone after a pruning decision stopped it: pruned, not lost.
        let mut s = running.clone();
        assert_eq!(take_up_job("a", &mut s, None, Some("pruned at rung 3")), Next::Nothing);
        assert_eq!(s.status(), Status::Pruned);
        assert!(s.error().unwrap().starts_with("pruned at rung 3"));

        // A tb that recorded attempts only once they ran: attempt 0 pending,
        // its container labelled attempt 1.
        let mut s = JobState::pending();
        take_up_job("a", &mut s, Some(found(true)), None);
        assert_eq!((s.status(), s.attempt()), (Status::Running, 1));
    }
}
