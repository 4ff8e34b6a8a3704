//! Where jobs run, behind one seam. A [`Backend`] owns its capacity and the
//! runs it starts: it checks that it can run a plan (`preflight`), says what
//! of a batch it still holds (`survey`, for `tb resume`, `tb retry` and
//! `tb cancel`), stops a run nobody follows, and — during a batch — takes
//! attempts from the dispatcher and reports back by [`Event`]. It never
//! writes job state: the dispatcher does, from its events.
//!
//! Backends: [`local`] (this host's Docker engine) and [`slurm`] (a Slurm
//! cluster, each job running `tb exec` on its node). Another one is a new
//! file implementing [`Backend`], a variant of [`crate::batch::Backend`],
//! and an arm in [`for_plan`].

pub mod local;
pub mod slurm;

use crate::gpu::Fraction;
use crate::run::{BatchDir, JobFile, JobState, Outcome, RunHandle};
use crate::settings::{JobSpec, Plan};
use chrono::{DateTime, Utc};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// The backend the plan asks for.
pub fn for_plan(plan: &Plan) -> Box<dyn Backend> {
    match plan.settings.backend {
        crate::batch::Backend::Local => Box::new(local::Local::new()),
        crate::batch::Backend::Slurm => Box::new(slurm::Slurm::new(plan)),
    }
}

/// What a backend tells the dispatcher about the attempts it was given.
#[derive(Debug)]
pub enum Event {
    /// Handed to a scheduler that starts it later (Slurm's queue).
    Queued { index: usize, handle: RunHandle },
    /// It runs, since `at`, on `gpus` (whole, or `gpu_share` of the one).
    Started {
        index: usize,
        handle: RunHandle,
        at: DateTime<Utc>,
        gpus: Vec<String>,
        gpu_share: Option<Fraction>,
    },
    /// It ended (or never could start: an outcome says why).
    Ended { index: usize, outcome: Outcome },
    /// It never started and nothing of it remains: as before its launch.
    Withdrawn { index: usize },
    /// It started, and the backend lost sight of it (its engine stayed
    /// away): how it ends is for `tb resume` to record.
    Abandoned { index: usize },
    /// The backend can run nothing more (its engine or cluster is gone past
    /// waiting for it): `why`, for the user.
    Gone { why: String },
}

/// What the dispatcher asks of a run it handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Take it back if it has not started; leave it running if it has.
    Withdraw,
    /// Take it back if it has not started; stop it if it has.
    Stop(Stop),
}

/// How a running attempt is stopped (the executor's, for every backend).
pub use crate::executor::Stop;

/// One attempt of one job, as the dispatcher hands it over.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// `job.json` of the attempt (its number included).
    pub job: JobFile,
}

impl Attempt {
    pub fn spec(&self) -> &JobSpec {
        &self.job.spec
    }
}

/// What preflight found: what the run needs to know, and a line for people.
#[derive(Debug, Clone)]
pub struct Ready {
    /// Per job, in plan order: the id of its image, where the backend knows
    /// it (part of the job's identity).
    pub image_ids: Vec<Option<String>>,
    /// Where the jobs run, e.g. `Docker 20.10.24 (API 1.41), GPUs: none`.
    pub describe: String,
}

/// A run a backend still holds for a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub handle: RunHandle,
    /// The attempt it belongs to.
    pub attempt: u32,
    /// It started (a cluster job may still be queued).
    pub started: bool,
    /// It still runs, rather than having ended while nobody watched.
    pub running: bool,
    /// The GPUs it holds, where known.
    pub gpus: Vec<String>,
    /// The share of its GPU it holds, if a share.
    pub gpu_share: Option<Fraction>,
    /// When it started, where known (else the job's state says).
    pub started_at: Option<DateTime<Utc>>,
}

/// What a backend holds of a batch.
#[derive(Debug, Clone, Default)]
pub struct Survey {
    /// Per job, in plan order: its current attempt's run, if any.
    pub jobs: Vec<Option<Found>>,
    /// Runs that belong to no current attempt, safe to remove.
    pub leftovers: Vec<RunHandle>,
}

impl Survey {
    /// The first job with a run that is still going, by index.
    pub fn first_running(&self) -> Option<(usize, &Found)> {
        self.jobs
            .iter()
            .enumerate()
            .find_map(|(i, f)| f.as_ref().filter(|f| f.running).map(|f| (i, f)))
    }
}

/// A place where jobs run. See the module documentation.
#[async_trait::async_trait]
pub trait Backend: Send {
    /// Checks that this backend can run `plan` (engine, images, cluster,
    /// directories), before anything is written. Every problem at once.
    async fn preflight(&mut self, plan: &Plan, runs_dir: &Path) -> anyhow::Result<Ready>;

    /// What of the batch in `dir` (jobs `names`, with their `states`) this
    /// backend still holds.
    async fn survey(&mut self, dir: &BatchDir, names: &[String], states: &[JobState]) -> anyhow::Result<Survey>;

    /// Removes runs that [`survey`](Self::survey) found left over.
    async fn discard(&mut self, leftovers: &[RunHandle]) -> anyhow::Result<()>;

    /// Stops `handle`, a run of `job` that no supervisor follows
    /// (`tb cancel`): gracefully, then by force after `grace`. How it
    /// ended, when the backend can tell.
    async fn stop(
        &mut self,
        dir: &BatchDir,
        job: &str,
        handle: &RunHandle,
        grace: Duration,
    ) -> anyhow::Result<Option<Outcome>>;

    /// Begins a session for the batch in `dir`: from now on attempts are
    /// handed over, and what becomes of them is sent to `events`.
    fn open(&mut self, plan: &Plan, dir: &BatchDir, events: UnboundedSender<Event>) -> anyhow::Result<()>;

    /// Whether `job` can be handed over now (a slot, its GPUs).
    fn has_room(&self, job: &JobSpec) -> bool;

    /// Which of the jobs waiting (keyed, in queue order) to hand over
    /// next: its key. By default the first with room; a backend whose jobs
    /// could starve one another (the local one, over GPUs) lets a job that
    /// must wait hold back what it waits for from the jobs behind it.
    fn first_fit(&mut self, queued: &mut dyn Iterator<Item = (usize, &JobSpec)>) -> Option<usize> {
        queued
            .map(|(key, job)| (key, self.has_room(job)))
            .find(|(_, fits)| *fits)
            .map(|(key, _)| key)
    }

    /// Runs an attempt of job `index` (its state is already written).
    fn launch(&mut self, index: usize, attempt: Attempt);

    /// Follows a run that an earlier supervisor handed over.
    fn follow(&mut self, index: usize, attempt: Attempt, found: Found);

    /// Asks something of job `index`'s run.
    fn request(&mut self, index: usize, request: Request);

    /// Job `index`'s attempt ended (or was withdrawn) and its state is
    /// written: free what it held, clean up after it.
    fn collect(&mut self, index: usize, handle: Option<&RunHandle>);

    /// Waits for the session's work to wind down; `gone`: the backend is
    /// unreachable, do not wait for it.
    async fn close(&mut self, gone: bool);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survey_finds_the_first_running_job() {
        let found = |running| {
            Some(Found {
                handle: RunHandle::Container { id: "c".into() },
                attempt: 1,
                started: true,
                running,
                gpus: vec![],
                gpu_share: None,
                started_at: None,
            })
        };
        let s = Survey {
            jobs: vec![None, found(false), found(true)],
            leftovers: vec![],
        };
        assert_eq!(s.first_running().map(|(i, _)| i), Some(2));
    }
}
