//! A set of jobs run three ways — through `tb batch`, through pueue, and
//! on the bare engine API — each giving its wall and the engine's record
//! of when each container started and ended.

use crate::events::{Event, Scope, idle_gaps, mean};
use crate::pueue::{self, Pueue};
use crate::session::Session;
use crate::{floor, jobs};
use std::time::{Duration, SystemTime};

/// The jobs: how many, how many at once, what each runs.
#[derive(Debug, Clone, Copy)]
pub struct Set<'a> {
    pub jobs: usize,
    pub at_once: usize,
    pub command: &'a [&'a str],
}

/// One run of a set.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Seconds: tb from invocation to exit; pueue from the first
    /// `pueue add` to the end of the last task as pueued recorded it; the
    /// floor from the first create to the last remove.
    pub wall: f64,
    /// The mean seconds from one container's end to the next one's start.
    pub gap: f64,
}

/// How long after a run the engine's last events may take to arrive.
const EVENTS_LATE: Duration = Duration::from_secs(20);

pub fn tb(s: &Session, set: Set) -> anyhow::Result<Run> {
    let (tag, dir) = s.run_dir("tb")?;
    let (wall, _) = s.run_batch(&dir, &jobs::batch_file(&tag, set.jobs, set.at_once, set.command))?;
    finish(s, &Scope::TbRuns(&dir.join("runs")), set, wall)
}

pub fn pueue(s: &Session, set: Set) -> anyhow::Result<Run> {
    let (tag, dir) = s.run_dir("pueue")?;
    let p = Pueue::start(s.pueue_dir()?, &dir, set.at_once)?;
    let t0 = SystemTime::now();
    p.add_jobs(&dir, &s.labels(&tag), set.jobs, set.command)?;
    p.wait()?;
    let wall = pueue::wall(&p.tasks()?, set.jobs, t0)?;
    drop(p);
    finish(s, &Scope::Run(&tag), set, wall)
}

pub fn floor(s: &Session, set: Set) -> anyhow::Result<Run> {
    let (tag, dir) = s.run_dir("floor")?;
    let wall = floor::run(s, &tag, &dir, set.jobs, set.at_once, set.command)?.as_secs_f64();
    finish(s, &Scope::Run(&tag), set, wall)
}

/// The run, once the engine has reported every container's start and end.
fn finish(s: &Session, scope: &Scope, set: Set, wall: f64) -> anyhow::Result<Run> {
    let events = s.events.wait(scope, set.jobs, set.jobs, EVENTS_LATE, || false)?;
    Ok(Run {
        wall,
        gap: gap(&events, set),
    })
}

/// Gaps mean something only when one job runs at a time.
fn gap(events: &[Event], set: Set) -> f64 {
    if set.at_once == 1 {
        mean(&idle_gaps(events))
    } else {
        f64::NAN
    }
}
