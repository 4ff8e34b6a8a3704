//! Jobs that `tb batch --skip-done` found running right now in another
//! batch (`waits_for` in their state): held in the queue, not handed over,
//! until that run ends; then they take its result (it succeeded) or run
//! here (it did not, or its batch lost its supervisor first).

use crate::run::{JobState, Status, batch_of, read_versioned, supervised};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How a run waited for ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// It succeeded: the job directory whose result stands for ours.
    Succeeded(PathBuf),
    /// It did not, and why: ours runs here.
    Not(String),
}

/// The held jobs, by index, with the job directory each waits for.
#[derive(Debug, Default)]
pub struct Held(BTreeMap<usize, PathBuf>);

impl Held {
    /// The jobs of `launch` whose state waits for a run elsewhere.
    pub fn of(launch: &[usize], states: &[JobState]) -> Held {
        Held(
            launch
                .iter()
                .filter_map(|&i| Some((i, states[i].waits_for()?.to_path_buf())))
                .collect(),
        )
    }

    pub fn holds(&self, index: usize) -> bool {
        self.0.contains_key(&index)
    }

    /// The held jobs whose run elsewhere is over, no longer held; jobs no
    /// longer `queued` (cancelled meanwhile) are let go without a word.
    pub fn look(&mut self, queued: impl Fn(usize) -> bool) -> Vec<(usize, Ended)> {
        self.0.retain(|&i, _| queued(i));
        let over: Vec<(usize, Ended)> = self.0.iter().filter_map(|(&i, dir)| Some((i, ended(dir)?))).collect();
        for (i, _) in &over {
            self.0.remove(i);
        }
        over
    }
}

/// How the run in `job_dir` ended, if it is over: a job still pending or
/// running there goes on while its batch has a supervisor.
pub fn ended(job_dir: &Path) -> Option<Ended> {
    let batch = batch_of(job_dir);
    let state = match read_versioned::<JobState>(&job_dir.join("state.json")) {
        Ok(s) => s,
        Err(e) => return Some(Ended::Not(format!("its state in batch {batch} cannot be read ({e:#})"))),
    };
    match state.status() {
        Status::Succeeded => Some(Ended::Succeeded(
            state
                .reused_from()
                .map_or_else(|| job_dir.to_path_buf(), Path::to_path_buf),
        )),
        s if !s.is_final() && supervised(job_dir) => None,
        s if !s.is_final() => Some(Ended::Not(format!("batch {batch} stopped before it ended"))),
        s => Some(Ended::Not(format!("it ended {} in batch {batch}", s.as_str()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_elsewhere_is_over_once_it_ended_or_lost_its_supervisor() {
        let runs = tempfile::tempdir().unwrap();
        let job = runs.path().join("b1/jobs/a");
        std::fs::create_dir_all(&job).unwrap();
        let write = |s: &JobState| crate::run::write_json(&job.join("state.json"), s).unwrap();
        let mut state = JobState::pending();
        write(&state);
        // Nobody supervises b1: a pending or running job there never ends.
        assert_eq!(ended(&job), Some(Ended::Not("batch b1 stopped before it ended".into())));
        state.reused(PathBuf::from("/elsewhere/jobs/a"), None);
        write(&state);
        assert_eq!(ended(&job), Some(Ended::Succeeded(PathBuf::from("/elsewhere/jobs/a"))));

        let mut waiting = JobState::pending();
        waiting.wait_for(job.clone());
        let mut held = Held::of(&[0, 1], &[JobState::pending(), waiting]);
        assert!(!held.holds(0) && held.holds(1));
        assert_eq!(held.look(|_| true).len(), 1);
        assert!(!held.holds(1), "let go once over");
    }
}
