//! `tb watch`'s own state (docs/run-directory.md): `<runs>/<name>.watch/`
//! with `watch.json` (every trigger fired, the files triggers took, the
//! batch each started) and `watch.lock` (one `tb watch` per batch file);
//! and the decisions made from them: whether a trigger is due, and what
//! becomes of one whose batch did not end. The loop that acts on them is
//! `commands/watch.rs`.
//!
//! A trigger is recorded `fired` (with the files it took) before its batch
//! directory exists, and `started` once it does; the directory's
//! `batch.json` names the trigger. So a `tb watch` killed at any point
//! finds on restart either nothing fired (the files are still new), or a
//! fired trigger whose batch it then finds, resumes or creates: never a
//! trigger lost, never one fired twice.

pub mod incoming;

use crate::durable::{read_versioned, write_json};
use crate::error::hinted;
use crate::run::{
    BatchDir, BatchState, BatchStatus, Halted, Lock, NewFiles, Status, Supervisor, Trigger, VERSION, same_file,
};
use crate::settings::WatchSpec;
use crate::watch::incoming::Look;
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `watch.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchState {
    pub version: u32,
    /// The batch file watched, absolute.
    pub file: PathBuf,
    /// When the watch first started: the time trigger counts from here
    /// until a trigger fires.
    pub created_at: DateTime<Utc>,
    /// What the time trigger counts `every` from, once a trigger fired:
    /// when the last one was due (for the time trigger, its own moment,
    /// so that it keeps its rhythm however long a preflight took). Absent
    /// (as tb wrote it before): the last trigger's `fired_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_from: Option<DateTime<Utc>>,
    /// The files of the data directory that triggers took (relative to
    /// it), as far as they were still there at the last trigger, unless
    /// the directory was then empty and not on the device `data_device`
    /// names (a share not mounted).
    pub seen: BTreeSet<String>,
    /// The device the data directory was on at the last trigger that found
    /// files in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_device: Option<u64>,
    /// Every trigger fired, oldest first.
    pub triggers: Vec<Fired>,
}

/// One trigger and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fired {
    #[serde(flatten)]
    pub trigger: Trigger,
    #[serde(flatten)]
    pub progress: Progress,
}

/// How far a trigger got: each state carries what it knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Progress {
    /// Recorded; its batch directory may not exist yet.
    Fired,
    /// Its batch directory exists.
    Started { batch: String },
    /// Its batch ended (finished, or stopped for good by a deadline or an
    /// engine that went away); `batch_status` is `None` when the directory
    /// was gone.
    Ended {
        batch: String,
        batch_status: Option<BatchStatus>,
    },
}

impl WatchState {
    fn new(file: &Path) -> WatchState {
        WatchState {
            version: VERSION,
            file: file.to_path_buf(),
            created_at: Utc::now(),
            time_from: None,
            seen: BTreeSet::new(),
            data_device: None,
            triggers: Vec::new(),
        }
    }

    /// The trigger whose batch has not ended, if any (only the last can be:
    /// none fires before the one before it ended).
    pub fn unfinished(&self) -> Option<&Fired> {
        self.triggers
            .last()
            .filter(|f| !matches!(f.progress, Progress::Ended { .. }))
    }

    /// When the time trigger is due next: `every` after the last trigger
    /// (of either kind) was due, or after the watch first started.
    pub fn next_time(&self, every: Option<std::time::Duration>) -> Option<DateTime<Utc>> {
        let every = chrono::Duration::from_std(every?).ok()?;
        self.time_base().checked_add_signed(every)
    }

    /// What the time trigger counts from.
    fn time_base(&self) -> DateTime<Utc> {
        self.time_from
            .or(self.triggers.last().map(|f| f.trigger.fired_at))
            .unwrap_or(self.created_at)
    }

    /// After the wall clock went back: a time that the time trigger counts
    /// from that is still to come counts from `now` instead (else the
    /// trigger would wait for the clock to catch up, and then a period
    /// more). Whether it did.
    fn clamp(&mut self, now: DateTime<Utc>) -> bool {
        if self.time_base() <= now {
            return false;
        }
        self.time_from = Some(now);
        true
    }

    /// Fires a trigger: it takes the settled new files `due` names (seen
    /// from now on). `look` is what the directory held: a seen file no
    /// longer there is forgotten, unless the directory is empty and not
    /// known to be on the device it last held files on — a share not
    /// mounted, whose files would all be new again once it is back.
    fn fire(
        &mut self,
        watch: &Path,
        due: &Due,
        data: Option<&Path>,
        look: Option<&Look>,
        now: DateTime<Utc>,
    ) -> Trigger {
        let files = match (data, due.files.first(), due.files.last()) {
            (Some(dir), Some(first), Some(last)) => Some(NewFiles {
                dir: dir.to_path_buf(),
                count: due.files.len() as u64,
                first: first.clone(),
                last: last.clone(),
            }),
            _ => None,
        };
        let trigger = Trigger {
            watch: watch.to_path_buf(),
            number: self.triggers.last().map_or(1, |f| f.trigger.number + 1),
            fired_at: now,
            files,
            every_seconds: due.time.map(|every| every.as_secs()),
        };
        if let Some(look) = look {
            // Empty: forgotten only on the very device it held files on.
            let same_device = look.device.is_some() && look.device == self.data_device;
            if !look.present.is_empty() || same_device {
                self.seen.retain(|f| look.present.contains(f));
            }
            if !look.present.is_empty() && look.device.is_some() {
                self.data_device = look.device;
            }
        }
        self.seen.extend(due.files.iter().cloned());
        self.time_from = Some(due.at);
        self.triggers.push(Fired {
            trigger: trigger.clone(),
            progress: Progress::Fired,
        });
        trigger
    }

    fn progress(&mut self, number: u64, progress: Progress) {
        if let Some(f) = self.triggers.iter_mut().find(|f| f.trigger.number == number) {
            f.progress = progress;
        }
    }
}

/// A trigger that is due now: the settled new files it takes (all there
/// are, whichever trigger fired) and, when the time trigger fired, its
/// period.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub files: Vec<String>,
    pub time: Option<std::time::Duration>,
    /// When it was due: the time trigger counts from here once it fired.
    pub at: DateTime<Utc>,
}

/// Whether a trigger is due: at least `min_new` settled new files, or the
/// time trigger's moment reached; both at once are one trigger. It was
/// due `now`, or, when the time trigger's moment came, at the last moment
/// of its rhythm that has come (periods missed while tb was down fire
/// once, and the rhythm stays).
pub fn due(
    spec: &WatchSpec,
    settled: Option<&[String]>,
    next_time: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<Due> {
    let settled = settled.unwrap_or_default();
    let files_due = spec.data.is_some() && settled.len() as u64 >= spec.min_new;
    let time_due = next_time.filter(|at| now >= *at);
    let time = spec.every.filter(|_| time_due.is_some());
    (files_due || time_due.is_some()).then(|| Due {
        files: settled.to_vec(),
        time,
        at: match (time_due, time) {
            (Some(at), Some(every)) => last_moment(at, every, now),
            _ => now,
        },
    })
}

/// The last of `first`, `first + every`, `first + 2 every`, … that is not
/// after `now`.
fn last_moment(first: DateTime<Utc>, every: std::time::Duration, now: DateTime<Utc>) -> DateTime<Utc> {
    let every = every.as_millis().max(1);
    let behind = (now - first).num_milliseconds().max(0) as u128;
    i64::try_from(behind / every * every)
        .ok()
        .and_then(chrono::Duration::try_milliseconds)
        .and_then(|periods| first.checked_add_signed(periods))
        .unwrap_or(now)
}

/// The batch of an unfinished trigger, as found on disk.
#[derive(Debug)]
pub enum Found {
    /// No batch directory names the trigger: it was never created.
    Nothing,
    /// The trigger recorded a batch that is no longer there.
    Gone(String),
    Batch {
        dir: BatchDir,
        status: BatchStatus,
        supervisor: Option<Supervisor>,
        /// Its jobs still pending or running.
        left: usize,
        /// What halted it, when not a signal.
        halted: Option<Halted>,
        /// Its last supervisor closed it: the report was written for the
        /// end `batch.json` records (after the deploy; `on_finish` runs
        /// next).
        closed: bool,
    },
}

/// What becomes of an unfinished trigger.
#[derive(Debug)]
pub enum Next {
    /// Create its batch now.
    Create,
    /// Take its batch up again, as `tb resume` would.
    Resume(BatchDir),
    /// Another supervisor (a `tb resume` by hand) holds its batch: wait.
    Wait(String, Supervisor),
    /// Its batch ended and was closed, with nothing left for tb watch to
    /// run (or is gone: `None`): the trigger is done.
    Close(String, Option<Ended>),
}

/// How a batch ended, as `batch.json` says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ended {
    pub status: BatchStatus,
    pub halted: Option<Halted>,
}

/// Decides, from what was found, how an unfinished trigger goes on. Only
/// a batch its supervisor closed (its report written) is done: one that
/// finished, was halted (its deadline, its engine gone: what is pending
/// waits for `tb resume`, as when tb watch saw it end), or has nothing
/// left. Any other is taken up: what is left runs, and a batch with
/// nothing left is closed as its supervisor would have (the report,
/// `on_finish`, the deploy).
pub fn next(found: Found) -> Next {
    match found {
        Found::Nothing => Next::Create,
        Found::Gone(batch) => Next::Close(batch, None),
        Found::Batch {
            dir,
            supervisor: Some(s),
            ..
        } => Next::Wait(dir.id, s),
        Found::Batch {
            dir,
            status,
            left,
            halted,
            closed: true,
            ..
        } if status == BatchStatus::Finished || left == 0 || halted.is_some() => {
            Next::Close(dir.id, Some(Ended { status, halted }))
        }
        Found::Batch { dir, .. } => Next::Resume(dir),
    }
}

/// Finds the batch of an unfinished trigger: the one it recorded, or the
/// one whose `batch.json` names it (created before `tb watch` could record
/// it).
pub fn find(runs_dir: &Path, fired: &Fired) -> anyhow::Result<Found> {
    let dir = match &fired.progress {
        Progress::Started { batch } => {
            let path = runs_dir.join(batch);
            if !path.join("batch.json").is_file() {
                return Ok(Found::Gone(batch.clone()));
            }
            BatchDir::at(&path)?
        }
        _ => match triggered_by(runs_dir, &fired.trigger) {
            Some(dir) => dir,
            None => return Ok(Found::Nothing),
        },
    };
    let state = dir.read_batch()?;
    let states = dir.read_states(&state.jobs)?;
    let left = states
        .iter()
        .filter(|s| matches!(s.status(), Status::Pending | Status::Running))
        .count();
    Ok(Found::Batch {
        supervisor: dir.supervisor(),
        closed: closed(&dir, &state),
        dir,
        status: state.status,
        left,
        halted: state.halted,
    })
}

/// Whether the batch's last supervisor closed it: it ended, and its
/// `report.json` (written last, after the deploy) is of that end.
fn closed(dir: &BatchDir, state: &BatchState) -> bool {
    #[derive(Deserialize)]
    struct Report {
        batch: Batch,
    }
    #[derive(Deserialize)]
    struct Batch {
        finished_at: Option<DateTime<Utc>>,
    }
    if state.status == BatchStatus::Running {
        return false;
    }
    std::fs::read(dir.path.join("report.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Report>(&bytes).ok())
        .is_some_and(|r| r.batch.finished_at == state.finished_at)
}

/// The batch directory under `runs_dir` that `trigger` started, if any.
fn triggered_by(runs_dir: &Path, trigger: &Trigger) -> Option<BatchDir> {
    std::fs::read_dir(runs_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| !p.is_symlink() && p.join("batch.json").is_file())
        .filter_map(|p| BatchDir::at(&p).ok())
        .find(|dir| {
            dir.read_batch()
                .ok()
                .and_then(|b| b.trigger)
                .is_some_and(|t| t.is(&trigger.watch, trigger.number, trigger.fired_at))
        })
}

/// The directory of the watch of `file` under `runs_dir`, whatever it is
/// named (the batch's `name` may have changed since it started): a
/// `*.watch/watch.json` of that file. With more than one, `ours` (the name
/// now), else the last to fire. A `watch.json` that cannot be read is said
/// and passed over (`ours` is read again, and refused, by the caller).
fn watch_of(runs_dir: &Path, file: &Path, ours: &str) -> Option<PathBuf> {
    let mut found: Vec<(DateTime<Utc>, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(runs_dir).ok()?.filter_map(|e| e.ok()) {
        let path = entry.path();
        let named = entry.file_name().to_string_lossy().ends_with(".watch");
        if !named || path.is_symlink() || !path.join("watch.json").is_file() {
            continue;
        }
        match read_versioned::<WatchState>(&path.join("watch.json")) {
            Ok(state) if same_file(&state.file, file) => {
                if entry.file_name() == ours {
                    return Some(path);
                }
                found.push((state.time_base(), path));
            }
            Ok(_) => {}
            Err(_) if entry.file_name() == ours => {}
            Err(e) => tracing::warn!(
                "{e:#}; passed over (were it the watch of `{}`, repair it)",
                file.display()
            ),
        }
    }
    found.into_iter().max().map(|(_, path)| path)
}

/// A watch, open: its directory, its state, and its lock.
#[derive(Debug)]
pub struct Watch {
    /// `<runs>/<name>.watch` (`name` as it was when the watch first
    /// started), absolute.
    pub dir: PathBuf,
    pub state: WatchState,
    _lock: Lock,
}

/// What opening a watch found.
#[derive(Debug)]
pub enum Opened {
    Ready(Watch),
    /// Another `tb watch` holds it.
    Busy(Option<Supervisor>),
}

impl Watch {
    /// Opens the watch of `file` under `runs_dir`, found by the file
    /// (whatever its batch's `name` is now), or starts one as
    /// `<name>.watch`; and takes its lock. A `<name>.watch` of another file
    /// is refused; a corrupt `watch.json` is an error, never a fresh start.
    pub fn open(runs_dir: &Path, name: &str, file: &Path) -> anyhow::Result<Opened> {
        let ours = format!("{name}.watch");
        let dir = match watch_of(runs_dir, file, &ours) {
            Some(dir) => dir,
            None => runs_dir.join(ours),
        };
        std::fs::create_dir_all(&dir).map_err(|e| {
            hinted(
                format!("cannot create the watch directory `{}`: {e}", dir.display()),
                "pick a writable place with --runs-dir or TB_RUNS_DIR",
            )
        })?;
        let dir = std::fs::canonicalize(&dir).with_context(|| format!("failed to resolve `{}`", dir.display()))?;
        let lock = match Lock::take(&dir.join("watch.lock"))? {
            Ok(lock) => lock,
            Err(holder) => return Ok(Opened::Busy(holder)),
        };
        let path = dir.join("watch.json");
        let state = if path.exists() {
            let state: WatchState = read_versioned(&path).map_err(|e| {
                hinted(
                    format!("{e:#}"),
                    format!(
                        "move `{}` away to start the watch afresh (every file in the data directory is new again)",
                        path.display()
                    ),
                )
            })?;
            if !same_file(&state.file, file) {
                return Err(hinted(
                    format!(
                        "`{}` watches `{}`, another file with the batch name `{name}`",
                        path.display(),
                        state.file.display()
                    ),
                    "give this file another `name` in [batch], or watch the other one",
                ));
            }
            state
        } else {
            let state = WatchState::new(file);
            write_json(&path, &state)?;
            state
        };
        Ok(Opened::Ready(Watch {
            dir,
            state,
            _lock: lock,
        }))
    }

    /// After the wall clock went back: the time trigger counts from now
    /// rather than from a time still to come (written down).
    pub fn clamp(&mut self, now: DateTime<Utc>) -> anyhow::Result<()> {
        let mut state = self.state.clone();
        if state.clamp(now) {
            tracing::warn!("the clock is behind the time of the last trigger; the time trigger counts from now");
            self.commit(state)?;
        }
        Ok(())
    }

    /// `watch.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join("watch.json")
    }

    /// Writes `state` and makes it the watch's: on a failed write, the
    /// state in memory stays what is on disk.
    fn commit(&mut self, state: WatchState) -> anyhow::Result<()> {
        write_json(&self.path(), &state)?;
        self.state = state;
        Ok(())
    }

    /// Records a trigger fired, with the files it took, before anything of
    /// its batch exists.
    pub fn fire(&mut self, due: &Due, data: Option<&Path>, look: Option<&Look>) -> anyhow::Result<Trigger> {
        let mut state = self.state.clone();
        let trigger = state.fire(&self.path(), due, data, look, Utc::now());
        self.commit(state)?;
        Ok(trigger)
    }

    /// Records the batch directory of trigger `number`.
    pub fn started(&mut self, number: u64, batch: &str) -> anyhow::Result<()> {
        let mut state = self.state.clone();
        state.progress(number, Progress::Started { batch: batch.into() });
        self.commit(state)
    }

    /// Records that the batch of trigger `number` ended.
    pub fn ended(&mut self, number: u64, batch: &str, status: Option<BatchStatus>) -> anyhow::Result<()> {
        let mut state = self.state.clone();
        state.progress(
            number,
            Progress::Ended {
                batch: batch.into(),
                batch_status: status,
            },
        );
        self.commit(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(min_new: u64, every: Option<u64>) -> WatchSpec {
        WatchSpec {
            data: Some("/in".into()),
            min_new,
            settle: Duration::from_secs(1),
            every: every.map(Duration::from_secs),
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("f{i}")).collect()
    }

    fn files(names: &[&str]) -> Due {
        Due {
            files: names.iter().map(|s| s.to_string()).collect(),
            time: None,
            at: Utc::now(),
        }
    }

    #[test]
    fn files_fire_at_min_new_and_time_at_its_moment_both_as_one() {
        let now = Utc::now();
        let s = spec(3, None);
        assert_eq!(due(&s, Some(&names(2)), None, now), None);
        let d = due(&s, Some(&names(3)), None, now).unwrap();
        assert_eq!((d.files.len(), d.time, d.at), (3, None, now));
        // A missing directory counts no file.
        assert_eq!(due(&s, None, None, now), None);

        let s = spec(3, Some(60));
        let soon = now + chrono::Duration::seconds(1);
        assert_eq!(due(&s, Some(&names(1)), Some(soon), now), None);
        // The time trigger takes the settled files there are too.
        let d = due(&s, Some(&names(1)), Some(now), now).unwrap();
        assert_eq!((d.files.len(), d.time), (1, Some(Duration::from_secs(60))));
        let d = due(&s, Some(&names(5)), Some(now), now).unwrap();
        assert_eq!((d.files.len(), d.time), (5, Some(Duration::from_secs(60))));
        // Only a time trigger: no directory to count.
        let only_time = WatchSpec { data: None, ..s };
        assert_eq!(due(&only_time, None, Some(soon), now), None);
        assert!(due(&only_time, None, Some(now), now).is_some());
    }

    #[test]
    fn the_time_trigger_keeps_its_rhythm_and_fires_missed_periods_once() {
        let s = WatchSpec {
            data: None,
            ..spec(1, Some(3600))
        };
        let mut st = WatchState::new(Path::new("/j/night.toml"));
        let watch = Path::new("/r/night.watch/watch.json");
        let slot = st.next_time(s.every).unwrap();
        // Seen 4 s late (a look's interval), fired 90 s later still (a
        // preflight pulling an image): the next comes an hour after its
        // moment, not after either.
        let d = due(&s, None, Some(slot), slot + chrono::Duration::seconds(4)).unwrap();
        assert_eq!(d.at, slot);
        let t = st.fire(watch, &d, None, None, slot + chrono::Duration::seconds(94));
        assert_eq!(t.fired_at, slot + chrono::Duration::seconds(94));
        let next = st.next_time(s.every).unwrap();
        assert_eq!(next, slot + chrono::Duration::hours(1));
        // Down for three periods and a half: one trigger, and the rhythm
        // goes on from the last moment that passed.
        let late = next + chrono::Duration::minutes(210);
        let d = due(&s, None, Some(next), late).unwrap();
        assert_eq!(d.at, next + chrono::Duration::hours(3));
        st.fire(watch, &d, None, None, late);
        assert_eq!(st.next_time(s.every).unwrap(), next + chrono::Duration::hours(4));
        assert!(due(&s, None, st.next_time(s.every), late).is_none());

        // A files trigger counts from when it was found due.
        let found = late + chrono::Duration::minutes(10);
        let d = due(&spec(1, Some(3600)), Some(&names(1)), st.next_time(s.every), found).unwrap();
        assert_eq!((d.time, d.at), (None, found));
        st.fire(
            watch,
            &d,
            Some(Path::new("/in")),
            None,
            found + chrono::Duration::seconds(90),
        );
        assert_eq!(st.next_time(s.every).unwrap(), found + chrono::Duration::hours(1));
    }

    #[test]
    fn a_time_still_to_come_after_the_clock_went_back_counts_from_now() {
        let every = Some(Duration::from_secs(3600));
        let mut st = WatchState::new(Path::new("/j/night.toml"));
        let now = Utc::now();
        assert!(!st.clamp(now + chrono::Duration::seconds(1)));
        st.fire(
            Path::new("/r/night.watch/watch.json"),
            &files(&["a"]),
            Some(Path::new("/in")),
            None,
            now,
        );
        // Written by a clock two hours ahead (`time_from` as an older tb
        // left it: absent, the trigger's `fired_at` counts).
        st.time_from = None;
        st.triggers[0].trigger.fired_at = now + chrono::Duration::hours(2);
        assert_eq!(st.next_time(every), Some(now + chrono::Duration::hours(3)));
        assert!(st.clamp(now));
        assert_eq!(st.next_time(every), Some(now + chrono::Duration::hours(1)));
        assert!(!st.clamp(now + chrono::Duration::seconds(1)));
        // Before any trigger: the watch's start.
        let mut st = WatchState::new(Path::new("/j/night.toml"));
        st.created_at = now + chrono::Duration::days(1);
        assert!(st.clamp(now));
        assert_eq!(st.next_time(every), Some(now + chrono::Duration::hours(1)));
    }

    #[test]
    fn firing_takes_the_files_numbers_the_trigger_and_moves_the_clock() {
        let mut st = WatchState::new(Path::new("/j/night.toml"));
        let every = Some(Duration::from_secs(3600));
        assert_eq!(st.next_time(every), Some(st.created_at + chrono::Duration::hours(1)));
        assert_eq!(st.next_time(None), None);
        st.seen.insert("gone.csv".into());
        let look = |names: &[&str], device: u64| Look {
            present: names.iter().map(|s| s.to_string()).collect(),
            device: Some(device),
            ..Look::default()
        };
        let due = files(&["b", "a"]);
        let now = Utc::now();
        let watch = Path::new("/r/night.watch/watch.json");
        let t = st.fire(
            watch,
            &due,
            Some(Path::new("/in")),
            Some(&look(&["a", "b", "c"], 7)),
            now,
        );
        assert_eq!(t.number, 1);
        let files = t.files.unwrap();
        assert_eq!((files.count, files.first.as_str(), files.last.as_str()), (2, "b", "a"));
        assert_eq!(t.every_seconds, None);
        // Taken files are seen; one no longer there is forgotten.
        assert_eq!(st.seen.iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(st.unfinished().unwrap().progress, Progress::Fired);
        assert_eq!(st.next_time(every), Some(due.at + chrono::Duration::hours(1)));

        // A time trigger over the directory empty and on another device (a
        // share not mounted): nothing is forgotten, so nothing is new once
        // it is back. Emptied on its own device: forgotten, as ever (a name
        // that comes back is new).
        let time = Due {
            files: Vec::new(),
            time: every,
            at: now,
        };
        let mut unmounted = st.clone();
        unmounted.fire(watch, &time, Some(Path::new("/in")), Some(&look(&[], 8)), now);
        assert_eq!((&unmounted.seen, unmounted.data_device), (&st.seen, Some(7)));
        let mut emptied = st.clone();
        emptied.fire(watch, &time, Some(Path::new("/in")), Some(&look(&[], 7)), now);
        assert!(emptied.seen.is_empty());
        // Its device never recorded (a watch.json of an older tb): kept.
        let mut older = st.clone();
        older.data_device = None;
        older.fire(watch, &time, Some(Path::new("/in")), Some(&look(&[], 7)), now);
        assert_eq!(older.seen, st.seen);

        st.progress(1, Progress::Started { batch: "b1".into() });
        assert!(st.unfinished().is_some());
        st.progress(
            1,
            Progress::Ended {
                batch: "b1".into(),
                batch_status: Some(BatchStatus::Finished),
            },
        );
        assert!(st.unfinished().is_none());
        let due = Due {
            files: vec![],
            time: Some(Duration::from_secs(3600)),
            at: now,
        };
        let t = st.fire(watch, &due, Some(Path::new("/in")), None, now);
        assert_eq!((t.number, t.files, t.every_seconds), (2, None, Some(3600)));
    }

    #[test]
    fn watch_json_round_trips_each_progress() {
        let mut st = WatchState::new(Path::new("/j/night.toml"));
        let watch = Path::new("/r/night.watch/watch.json");
        for _ in 0..3 {
            st.fire(watch, &files(&["a"]), Some(Path::new("/in")), None, Utc::now());
        }
        st.progress(1, Progress::Started { batch: "b1".into() });
        st.progress(
            2,
            Progress::Ended {
                batch: "b2".into(),
                batch_status: None,
            },
        );
        let text = serde_json::to_string_pretty(&st).unwrap();
        assert!(text.contains("\"status\": \"started\""), "{text}");
        assert!(text.contains("\"time_from\": "), "{text}");
        let back: WatchState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, st);
    }

    #[test]
    fn a_watch_json_fixture_of_version_1_loads() {
        let st: WatchState = read_versioned(Path::new("tests/fixtures/state/v1_watch.json")).unwrap();
        assert_eq!(st.triggers.len(), 3);
        assert_eq!(
            st.triggers[1].trigger.describe(),
            "120 new files in `/data/incoming` (first `tile_0001.tif`, last `tile_0120.tif`) and the time trigger (every 24h00m)"
        );
        assert!(matches!(
            st.unfinished().map(|f| &f.progress),
            Some(Progress::Started { batch }) if batch == "2026-11-24_230000_night"
        ));
        // Without `time_from`, the time trigger counts from the last trigger.
        assert_eq!(st.time_from, None);
        assert_eq!(
            st.next_time(Some(Duration::from_secs(60))),
            Some(st.triggers[2].trigger.fired_at + chrono::Duration::minutes(1))
        );
    }

    /// How a batch of the tests was left.
    struct Left {
        status: BatchStatus,
        halted: Option<Halted>,
        /// Its report written for that end.
        closed: bool,
    }

    const RUNNING: Left = Left {
        status: BatchStatus::Running,
        halted: None,
        closed: false,
    };

    fn left(status: BatchStatus, halted: Option<Halted>, closed: bool) -> Left {
        Left { status, halted, closed }
    }

    fn batch_dir(runs: &Path, id: &str, trigger: Option<Trigger>, how: Left, jobs: &[Status]) -> BatchDir {
        let dir = BatchDir::new(runs.join(id), id.into());
        let names: Vec<String> = (0..jobs.len()).map(|i| format!("j{i}")).collect();
        let text = format!(
            "{{\"version\": 1, \"id\": \"{id}\", \"name\": \"night\", \"file\": \"/j/night.toml\", \
             \"created_at\": \"2026-11-22T23:00:00Z\", \"status\": \"running\", \"finished_at\": null, \
             \"supervisor\": null, \"jobs\": {}}}",
            serde_json::to_string(&names).unwrap()
        );
        std::fs::create_dir_all(&dir.path).unwrap();
        std::fs::write(dir.path.join("batch.json"), text).unwrap();
        let mut state = dir.read_batch().unwrap();
        state.trigger = trigger;
        state.status = how.status;
        state.halted = how.halted;
        state.finished_at = (how.status != BatchStatus::Running).then(Utc::now);
        dir.write_batch(&state).unwrap();
        if how.closed {
            let report = serde_json::json!({"batch": {"status": how.status, "finished_at": state.finished_at}});
            std::fs::write(dir.path.join("report.json"), report.to_string()).unwrap();
        }
        for (name, status) in names.iter().zip(jobs) {
            std::fs::create_dir_all(dir.job_dir(name)).unwrap();
            let mut s = crate::run::JobState::pending();
            match status {
                Status::Running => {
                    s.begin_attempt(None);
                    s.started(
                        crate::run::RunHandle::Container { id: "c".into() },
                        Utc::now(),
                        vec![],
                        None,
                    );
                }
                Status::Cancelled => s.cancelled_before_start("interrupted"),
                _ => {}
            }
            assert_eq!(s.status(), *status);
            dir.write_job_state(name, &s).unwrap();
        }
        dir
    }

    #[test]
    fn an_unfinished_trigger_is_created_found_resumed_or_closed_never_fired_again() {
        use BatchStatus::{Finished, Interrupted};
        let runs = tempfile::tempdir().unwrap();
        let mut st = WatchState::new(Path::new("/j/night.toml"));
        let watch = runs.path().join("night.watch/watch.json");
        let t = st.fire(&watch, &files(&["a"]), Some(Path::new("/in")), None, Utc::now());
        let fired = st.unfinished().unwrap().clone();

        // Killed before its batch directory was made: make it.
        assert!(matches!(next(find(runs.path(), &fired).unwrap()), Next::Create));

        // Killed after it was made, before it was recorded: found by the
        // trigger its batch.json names (another watch's trigger 1 is not it).
        let mut other = t.clone();
        other.fired_at = t.fired_at - chrono::Duration::days(1);
        batch_dir(runs.path(), "old", Some(other), RUNNING, &[Status::Pending]);
        batch_dir(
            runs.path(),
            "b1",
            Some(t.clone()),
            RUNNING,
            &[Status::Pending, Status::Running],
        );
        match next(find(runs.path(), &fired).unwrap()) {
            Next::Resume(dir) => assert_eq!(dir.id, "b1"),
            other => panic!("{other:?}"),
        }

        let started = |batch: &str| Fired {
            trigger: t.clone(),
            progress: Progress::Started { batch: batch.into() },
        };
        let decide = |id: &str, how: Left, jobs: &[Status]| {
            batch_dir(runs.path(), id, Some(t.clone()), how, jobs);
            next(find(runs.path(), &started(id)).unwrap())
        };
        let closed = |n: Next, id: &str, status: BatchStatus, halted: Option<Halted>| {
            let want = Some(Ended { status, halted });
            assert!(matches!(&n, Next::Close(b, e) if b == id && *e == want), "{id}: {n:?}");
        };
        let resumed = |n: Next, id: &str| assert!(matches!(&n, Next::Resume(d) if d.id == id), "{id}: {n:?}");

        // Interrupted and closed with nothing left to run: done.
        closed(
            decide("b2", left(Interrupted, None, true), &[Status::Cancelled]),
            "b2",
            Interrupted,
            None,
        );
        // Interrupted with jobs pending: resumed.
        resumed(
            decide(
                "b3",
                left(Interrupted, None, true),
                &[Status::Cancelled, Status::Pending],
            ),
            "b3",
        );
        // Finished and closed: done.
        closed(
            decide("b4", left(Finished, None, true), &[Status::Cancelled]),
            "b4",
            Finished,
            None,
        );
        // Stopped by its deadline (or its engine gone) and closed: done, its
        // pending jobs left for `tb resume`, as when tb watch saw it end.
        for (id, halted) in [("b5", Halted::Deadline), ("b6", Halted::EngineGone)] {
            closed(
                decide(id, left(Interrupted, Some(halted), true), &[Status::Pending]),
                id,
                Interrupted,
                Some(halted),
            );
        }
        // Killed after its last job ended, before its supervisor closed it
        // (`running`), or before its report was written (during the deploy,
        // say): taken up, which closes it.
        resumed(decide("b7", RUNNING, &[Status::Cancelled]), "b7");
        resumed(decide("b8", left(Finished, None, false), &[Status::Cancelled]), "b8");
        resumed(
            decide(
                "b9",
                left(Interrupted, Some(Halted::Deadline), false),
                &[Status::Pending],
            ),
            "b9",
        );
        // A report of an earlier end (before it was taken up once) is not one.
        batch_dir(
            runs.path(),
            "b10",
            Some(t.clone()),
            left(Interrupted, None, true),
            &[Status::Pending],
        );
        let dir = BatchDir::at(&runs.path().join("b10")).unwrap();
        let mut state = dir.read_batch().unwrap();
        state.status = Finished;
        state.finished_at = Some(Utc::now() + chrono::Duration::seconds(1));
        dir.write_batch(&state).unwrap();
        resumed(next(find(runs.path(), &started("b10")).unwrap()), "b10");

        // Its directory removed by hand: done, nothing to resume.
        assert!(matches!(next(find(runs.path(), &started("gone")).unwrap()), Next::Close(id, None) if id == "gone"));
        // Held by a `tb resume` by hand: wait for it.
        let dir = BatchDir::at(&runs.path().join("b3")).unwrap();
        let _held = dir.lock().unwrap();
        assert!(matches!(next(find(runs.path(), &started("b3")).unwrap()), Next::Wait(id, _) if id == "b3"));
    }

    #[test]
    fn one_watch_per_file_and_its_state_survives_a_restart() {
        let runs = tempfile::tempdir().unwrap();
        let file = runs.path().join("night.toml");
        std::fs::write(&file, "").unwrap();
        let Opened::Ready(mut w) = Watch::open(runs.path(), "night", &file).unwrap() else {
            panic!("busy")
        };
        assert!(matches!(
            Watch::open(runs.path(), "night", &file).unwrap(),
            Opened::Busy(Some(s)) if s.pid == std::process::id()
        ));
        w.fire(&files(&["a"]), Some(Path::new("/in")), None).unwrap();
        let before = w.state.clone();
        drop(w);
        let Opened::Ready(w) = Watch::open(runs.path(), "night", &file).unwrap() else {
            panic!("busy")
        };
        assert_eq!(w.state, before);
        drop(w);
        let other = runs.path().join("other.toml");
        std::fs::write(&other, "").unwrap();
        let e = crate::error::format(&Watch::open(runs.path(), "night", &other).unwrap_err());
        assert!(e.contains("another file with the batch name `night`"), "{e}");

        // The batch renamed: its watch is found by the file, not the name
        // (no fresh watch firing again on every file taken already).
        let Opened::Ready(w) = Watch::open(runs.path(), "renamed", &file).unwrap() else {
            panic!("busy")
        };
        assert_eq!(w.dir, std::fs::canonicalize(runs.path().join("night.watch")).unwrap());
        assert_eq!(w.state, before);
        assert!(!runs.path().join("renamed.watch").exists());
        drop(w);
        // Another file named as this one was: a watch of its own.
        let Opened::Ready(w) = Watch::open(runs.path(), "renamed", &other).unwrap() else {
            panic!("busy")
        };
        assert!(w.dir.ends_with("renamed.watch"));
        assert!(w.state.triggers.is_empty());
        drop(w);

        std::fs::write(runs.path().join("night.watch/watch.json"), "{").unwrap();
        let e = crate::error::format(&Watch::open(runs.path(), "night", &file).unwrap_err());
        assert!(e.contains("is corrupt") && e.contains("hint: move"), "{e}");
    }
}
