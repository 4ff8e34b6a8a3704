//! `tb watch FILE`: runs the batch file again each time a trigger of its
//! `[batch.watch]` fires — new settled files in a directory, or a time
//! (docs/cli.md). Each trigger's batch is a `tb batch FILE` run in this
//! process (the file resolved again, so edits apply); a trigger that comes
//! due while a batch runs waits for it. Every step is written to
//! `watch.json` ([`crate::watch`]) before it is taken, so a restart after
//! any kill goes on where the last one stopped.

use crate::backend::{Backend, Ready};
use crate::cli::{GlobalArgs, WatchArgs};
use crate::commands::batch::{self, How, NewBatch};
use crate::dispatch::Options;
use crate::error::hinted;
use crate::exit::Exit;
use crate::gpu::Inventory;
use crate::run::{BatchDir, Halted, Supervisor, Trigger};
use crate::settings::{self, Overrides, Plan, WatchSpec};
use crate::signal::{SignalEvent, Signals};
use crate::watch::incoming::{self, Incoming, Listing, Look};
use crate::watch::{self, Due, Ended, Next, Opened, Watch};
use chrono::Utc;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

pub fn run(args: &WatchArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let plan = resolve(&args.file)?;
    let spec = plan.watch.clone().ok_or_else(|| {
        hinted(
            format!(
                "`{}` has no [batch.watch] table: tb watch has nothing to wait for",
                args.file.display()
            ),
            "add one: [batch.watch] with data = \"./incoming\" and min_new = 100, or every = \"24h\"",
        )
    })?;
    if let Some(data) = &spec.data
        && !data.is_dir()
    {
        return Err(hinted(
            format!("the watched directory `{}` does not exist", data.display()),
            "create it, or set `data` in [batch.watch] to the directory new files arrive in",
        ));
    }
    let runs_dir = std::path::absolute(&global.runs_dir)?;
    crate::runtime()?.block_on(async {
        // The system checked up front, as `tb batch` would, before anything
        // is written: a watch that could not run its batch says so now, not
        // at the first trigger.
        crate::preflight::run(&plan, &runs_dir).await?;
        let watch = match Watch::open(&runs_dir, &plan.name, &plan.file)? {
            Opened::Ready(w) => w,
            Opened::Busy(holder) if args.once => {
                tracing::info!(
                    "`{}` is watched by {}: it runs what is due; nothing to do here",
                    args.file.display(),
                    Supervisor::describe(holder.as_ref())
                );
                return Ok(Exit::Success);
            }
            Opened::Busy(holder) => {
                return Err(hinted(
                    format!(
                        "`{}` is already watched by {}",
                        args.file.display(),
                        Supervisor::describe(holder.as_ref())
                    ),
                    "one `tb watch` per batch file: stop that one first (Ctrl-C, or `kill PID`)",
                ));
            }
        };
        let mut watcher = Watcher::new(args.file.clone(), runs_dir, watch, spec, args.once)?;
        watcher.run().await
    })
}

/// The batch file resolved as `tb batch FILE` resolves it.
fn resolve(file: &Path) -> anyhow::Result<Plan> {
    let plan = settings::resolve(file, &Overrides::default(), Inventory::detect())?;
    crate::secrets::register_pass_env(plan.jobs.iter().flat_map(|j| &j.pass_env));
    Ok(plan)
}

/// How often the watch looks (`TB_WATCH_POLL` seconds overrides it).
pub fn poll_every() -> Duration {
    crate::limits::seconds_from_env(&crate::limits::WATCH_POLL, Duration::from_secs(5))
}

/// The longest wait between tries while a problem lasts.
const RETRY_AT_MOST: Duration = Duration::from_secs(300);

/// The wait before the next look after `failures` turns in a row failed:
/// `poll`, doubled at each failure, at most [`RETRY_AT_MOST`] (or `poll`,
/// if longer).
fn retry_after(poll: Duration, failures: u32) -> Duration {
    let doubled = poll.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(poll.max(RETRY_AT_MOST))
}

/// What one turn of the loop came to.
#[derive(Debug, PartialEq)]
enum Step {
    /// A batch ran, and ended so.
    Ran(Exit),
    /// A trigger was closed without a batch to run: look again now.
    Again,
    /// Nothing to do before the next look.
    Wait,
}

/// The running watch.
struct Watcher {
    /// The batch file, as given.
    file: PathBuf,
    runs_dir: PathBuf,
    watch: Watch,
    spec: WatchSpec,
    /// The batch file's length and time when `spec` was read from it.
    file_stamp: Option<(u64, SystemTime)>,
    incoming: Option<Incoming>,
    poll: Duration,
    /// Turns in a row that failed: the next look waits longer.
    failures: u32,
    /// The one listener for the whole watch, handed to each batch's
    /// dispatcher too: a signal at any moment stops the watch.
    signals: Signals,
    /// The last line said on each topic: each is said once, when it changes.
    said: HashMap<&'static str, String>,
    /// `--once`: a problem ends the watch instead of waiting for a fix.
    once: bool,
}

impl Watcher {
    fn new(file: PathBuf, runs_dir: PathBuf, watch: Watch, spec: WatchSpec, once: bool) -> anyhow::Result<Watcher> {
        let mut watcher = Watcher {
            file_stamp: stamp(&file),
            file,
            runs_dir,
            watch,
            spec: spec.clone(),
            incoming: None,
            poll: poll_every(),
            failures: 0,
            signals: Signals::new()?,
            said: HashMap::new(),
            once,
        };
        watcher.set_spec(spec);
        Ok(watcher)
    }

    async fn run(&mut self) -> anyhow::Result<Exit> {
        tracing::info!(
            "watching `{}` ({}); its state is in `{}`",
            self.file.display(),
            self.triggers(),
            self.watch.path().display()
        );
        loop {
            let turn = self.turn().await;
            self.failures = if turn.is_ok() { 0 } else { self.failures + 1 };
            match turn {
                Ok(Step::Ran(exit)) if self.once || exit == Exit::Interrupted => return Ok(exit),
                // A trigger that came due meanwhile fires now.
                Ok(Step::Ran(_) | Step::Again) => {
                    self.said.clear();
                    continue;
                }
                Ok(Step::Wait) if self.once => return Ok(Exit::Success),
                Ok(Step::Wait) => {}
                Err(e) if self.once => return Err(e),
                Err(e) => {
                    let line = format!(
                        "{}\n(trying again in {}, less often while it lasts: at most every {})",
                        in_words(&e),
                        crate::human::seconds(self.poll.as_secs_f64()),
                        crate::human::seconds(self.poll.max(RETRY_AT_MOST).as_secs_f64())
                    );
                    self.say("problem", line, tracing::Level::ERROR);
                }
            }
            if let Some(signal) = self.sleep().await {
                tracing::info!("{signal}: tb watch stops (no batch was running)");
                return Ok(Exit::Interrupted);
            }
        }
    }

    /// One turn: the unfinished trigger first; else a look, and the
    /// trigger that is due, or a line on what it waits for.
    async fn turn(&mut self) -> anyhow::Result<Step> {
        if self.watch.state.unfinished().is_some() {
            return self.finish().await;
        }
        self.reload();
        self.watch.clamp(Utc::now())?;
        let look = self.look().await;
        if let Some(due) = self.due(look.as_ref()) {
            return self.fire(due, look).await;
        }
        let waiting = self.waiting(look.as_ref());
        if self.once {
            tracing::info!("nothing is due; {waiting}");
        } else {
            self.say("status", format!("waiting: {waiting}"), tracing::Level::INFO);
        }
        Ok(Step::Wait)
    }

    /// "at least 100 new file(s) in `/data/in`, each unchanged for 30.0s,
    /// or every 24h00m"
    fn triggers(&self) -> String {
        let mut parts = Vec::new();
        if let Some(dir) = &self.spec.data {
            parts.push(format!(
                "at least {} new file(s) in `{}`, each unchanged for {}",
                self.spec.min_new,
                dir.display(),
                crate::human::seconds(self.spec.settle.as_secs_f64())
            ));
        }
        if let Some(every) = self.spec.every {
            parts.push(format!("every {}", crate::human::seconds(every.as_secs_f64())));
        }
        parts.join(", or ")
    }

    /// "37/100 new files settled in `/data/in` (2 still arriving); next
    /// time trigger at 2026-11-23 23:00:00"
    fn waiting(&self, look: Option<&Look>) -> String {
        let mut parts = Vec::new();
        match (&self.spec.data, look) {
            (Some(dir), Some(look)) => {
                let mut s = format!(
                    "{}/{} new files settled in `{}`",
                    look.settled.len(),
                    self.spec.min_new,
                    dir.display()
                );
                if look.arriving > 0 {
                    s.push_str(&format!(" ({} still arriving)", look.arriving));
                }
                parts.push(s);
            }
            (Some(dir), None) => parts.push(format!("`{}` cannot be read", dir.display())),
            (None, _) => {}
        }
        if let Some(at) = self.watch.state.next_time(self.spec.every) {
            parts.push(format!(
                "next time trigger at {}",
                at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S")
            ));
        }
        parts.join("; ")
    }

    fn due(&self, look: Option<&Look>) -> Option<Due> {
        let settled = look.map(|l| l.settled.as_slice());
        let next_time = self.watch.state.next_time(self.spec.every);
        watch::due(&self.spec, settled, next_time, Utc::now())
    }

    /// Says `line` on `topic` unless it was the last thing said on it.
    fn say(&mut self, topic: &'static str, line: String, level: tracing::Level) {
        if self.said.get(topic) == Some(&line) {
            return;
        }
        if level == tracing::Level::ERROR {
            tracing::error!("{line}");
        } else if level == tracing::Level::WARN {
            tracing::warn!("{line}");
        } else {
            tracing::info!("{line}");
        }
        self.said.insert(topic, line);
    }

    fn set_spec(&mut self, spec: WatchSpec) {
        self.incoming = spec.data.clone().map(|dir| Incoming::new(dir, spec.settle));
        self.spec = spec;
    }

    /// Reads `[batch.watch]` again when the batch file changed: its new
    /// triggers apply from now on. A file that no longer validates is
    /// said, and the last good triggers stay.
    fn reload(&mut self) {
        let now = stamp(&self.file);
        if now == self.file_stamp {
            return;
        }
        self.file_stamp = now;
        match resolve(&self.file) {
            Ok(plan) => match plan.watch {
                Some(spec) if spec != self.spec => {
                    tracing::info!("`{}` changed; watching with its new [batch.watch]", self.file.display());
                    self.set_spec(spec);
                    self.said.remove("file");
                }
                Some(_) => {
                    self.said.remove("file");
                }
                None => self.say(
                    "file",
                    format!(
                        "`{}` no longer has a [batch.watch] table; watching as it said before",
                        self.file.display()
                    ),
                    tracing::Level::WARN,
                ),
            },
            Err(e) => self.file_problem(&e),
        }
    }

    /// Says (once) that the batch file does not resolve: the watch goes on
    /// with the triggers it had, and none fires until the file is fixed.
    fn file_problem(&mut self, e: &anyhow::Error) {
        let line = format!(
            "{}\n(the watch goes on as before; a trigger that is due fires once the file is fixed)",
            in_words(e)
        );
        self.say("file", line, tracing::Level::ERROR);
    }

    /// Looks at the data directory; `None` without one, or when it cannot
    /// be read (said once).
    async fn look(&mut self) -> Option<Look> {
        let listed = list(self.incoming.as_ref()?.dir.clone()).await;
        self.judge(listed)
    }

    /// What a listing of the data directory comes to.
    fn judge(&mut self, listed: std::io::Result<Listing>) -> Option<Look> {
        let incoming = self.incoming.as_mut()?;
        match listed {
            Ok(listing) => {
                self.said.remove("data");
                Some(incoming.judge(listing, &self.watch.state.seen, SystemTime::now(), Instant::now()))
            }
            Err(e) => {
                let line = format!(
                    "cannot read the watched directory `{}`: {e}; no new file counts until it can be read",
                    incoming.dir.display()
                );
                self.say("data", line, tracing::Level::WARN);
                None
            }
        }
    }

    /// Fires a due trigger: the file resolved and the system checked first
    /// (a problem leaves it unfired, its files new, to fire once fixed);
    /// then recorded, and its batch run.
    async fn fire(&mut self, due: Due, look: Option<Look>) -> anyhow::Result<Step> {
        let Some((plan, backend, ready)) = self.prepare().await? else {
            return Ok(Step::Wait);
        };
        if self.stop_pending() {
            tracing::info!("stopping; the trigger that was due did not fire");
            return Ok(Step::Ran(Exit::Interrupted));
        }
        let data = self.incoming.as_ref().map(|i| i.dir.clone());
        let trigger = self.watch.fire(&due, data.as_deref(), look.as_ref())?;
        tracing::info!("trigger {} fired: {}", trigger.number, trigger.describe());
        self.start(trigger, plan, backend, ready).await
    }

    /// The batch file resolved and the system checked, as `tb batch` does
    /// before it writes anything. While watching, a file that does not
    /// resolve is said (once) and gives `None`; with `--once` it is the
    /// error.
    async fn prepare(&mut self) -> anyhow::Result<Option<(Plan, Box<dyn Backend>, Ready)>> {
        let mut plan = match resolve(&self.file) {
            Ok(plan) => plan,
            Err(e) if !self.once => {
                self.file_problem(&e);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        self.said.remove("file");
        // Under `warm_start`, each job starts from the previous batch's best.
        crate::warm::apply(&mut plan, &self.runs_dir);
        let (backend, ready) = crate::preflight::run(&plan, &self.runs_dir).await?;
        batch::ensure_downloads(&plan)?;
        Ok(Some((plan, backend, ready)))
    }

    /// Creates the batch of a fired trigger and runs it, exactly as
    /// `tb batch FILE` would.
    async fn start(
        &mut self,
        trigger: Trigger,
        plan: Plan,
        backend: Box<dyn Backend>,
        ready: Ready,
    ) -> anyhow::Result<Step> {
        let number = trigger.number;
        if self.stop_pending() {
            tracing::info!("stopping before the batch of trigger {number} was made; the next `tb watch` makes it");
            return Ok(Step::Ran(Exit::Interrupted));
        }
        let how = How {
            skip_done: false,
            detach: false,
            trigger: Some(trigger),
        };
        let created = batch::create(&plan, &self.runs_dir, &ready, how).and_then(|new| {
            self.watch.started(number, &new.dir.id)?;
            Ok(new)
        });
        let NewBatch { dir, lock, work } = match created {
            Ok(new) => new,
            Err(e) => {
                crate::logging::detach_supervisor_log();
                return Err(e);
            }
        };
        let lock = lock.expect("a batch of tb watch is supervised here");
        let signals = Some(self.signals.clone());
        let exit = self
            .supervising(
                &dir,
                batch::supervise_new(&plan, &dir, backend, &ready, work, lock, signals),
            )
            .await;
        self.ended(number, &dir, exit)
    }

    /// Goes on with the trigger whose batch did not end: creates, resumes
    /// or closes it, or waits for the supervisor that holds it.
    async fn finish(&mut self) -> anyhow::Result<Step> {
        let fired = self.watch.state.unfinished().cloned().expect("an unfinished trigger");
        let number = fired.trigger.number;
        match watch::next(watch::find(&self.runs_dir, &fired)?) {
            Next::Create => {
                let line = format!("trigger {number} fired before tb watch stopped; creating its batch");
                self.say("create", line, tracing::Level::INFO);
                let Some((plan, backend, ready)) = self.prepare().await? else {
                    return Ok(Step::Wait);
                };
                self.start(fired.trigger, plan, backend, ready).await
            }
            Next::Resume(dir) => self.resume(number, dir).await,
            Next::Wait(batch, holder) => {
                let line = format!(
                    "batch {batch} of trigger {number} is supervised by {}; waiting for it to end",
                    Supervisor::describe(Some(&holder))
                );
                self.say("busy", line, tracing::Level::INFO);
                Ok(Step::Wait)
            }
            Next::Close(batch, ended) => {
                match ended {
                    Some(Ended { status, halted }) => {
                        let then = match halted {
                            Some(Halted::Deadline) => {
                                format!("its deadline stopped it; `tb resume {batch}` runs the rest")
                            }
                            Some(Halted::EngineGone) => {
                                format!("its engine went away; `tb resume {batch}` runs the rest once it is back")
                            }
                            None => "nothing left to run".into(),
                        };
                        tracing::info!(
                            "batch {batch} of trigger {number} has ended ({}): {then}",
                            status.as_str()
                        );
                    }
                    None => tracing::warn!(
                        "batch {batch} of trigger {number} is gone from `{}`; the trigger counts as done",
                        self.runs_dir.display()
                    ),
                }
                self.watch.ended(number, &batch, ended.map(|e| e.status))?;
                Ok(Step::Again)
            }
        }
    }

    /// Takes the batch of trigger `number` up again, as `tb resume` would.
    async fn resume(&mut self, number: u64, dir: BatchDir) -> anyhow::Result<Step> {
        if self.stop_pending() {
            tracing::info!("stopping; batch {} of trigger {number} was not taken up", dir.id);
            return Ok(Step::Ran(Exit::Interrupted));
        }
        let lock = dir.lock()?;
        self.watch.started(number, &dir.id)?;
        let plan = dir.plan(Inventory::detect())?;
        tracing::info!("trigger {number}: its batch {} did not end; taking it up again", dir.id);
        let runs_dir = self.runs_dir.clone();
        let options = Options {
            // Still the first supervisor's night: the file's deadline binds it.
            deadline: plan.settings.deadline,
            signals: Some(self.signals.clone()),
        };
        let resumed = crate::commands::resume::take_up(&plan, &dir, lock, &runs_dir, options);
        let exit = self.supervising(&dir, resumed).await;
        self.ended(number, &dir, exit)
    }

    /// Waits for a batch to end, looking meanwhile: a trigger that comes due
    /// is said to wait for it (once).
    async fn supervising(
        &mut self,
        dir: &BatchDir,
        batch: impl Future<Output = anyhow::Result<Exit>>,
    ) -> anyhow::Result<Exit> {
        tokio::pin!(batch);
        let mut ticks = tokio::time::interval(self.poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut queued = false;
        // The directory is listed beside the batch, which goes on meanwhile.
        let mut listing = None;
        loop {
            let look = tokio::select! {
                exit = &mut batch => return exit,
                _ = ticks.tick(), if !queued && listing.is_none() => match &self.incoming {
                    Some(incoming) => {
                        listing = Some(Box::pin(list(incoming.dir.clone())));
                        continue;
                    }
                    None => None,
                },
                listed = async { listing.as_mut().expect("a listing").await }, if listing.is_some() => {
                    listing = None;
                    self.judge(listed)
                }
            };
            if self.due(look.as_ref()).is_some() {
                let then = if self.once {
                    "the next `tb watch` fires it (--once ends with this batch)"
                } else {
                    "it fires when that one ends"
                };
                tracing::info!("a trigger is due while batch {} runs; {then}", dir.id);
                queued = true;
            }
        }
    }

    /// Records how the batch of trigger `number` ended. One a signal
    /// stopped stays unfinished: the next `tb watch` takes it up.
    fn ended(&mut self, number: u64, dir: &BatchDir, exit: anyhow::Result<Exit>) -> anyhow::Result<Step> {
        crate::logging::detach_supervisor_log();
        let exit = exit?;
        if exit == Exit::Interrupted {
            tracing::info!(
                "tb watch stops; batch {} of trigger {number} is interrupted: the next `tb watch` takes it up \
                 again (or `tb resume {}` now)",
                dir.id,
                dir.id
            );
            return Ok(Step::Ran(exit));
        }
        let status = dir.read_batch()?.status;
        self.watch.ended(number, &dir.id, Some(status))?;
        Ok(Step::Ran(exit))
    }

    /// Whether a signal came that nothing acted on yet.
    fn stop_pending(&mut self) -> bool {
        self.signals.pending().is_some()
    }

    /// Sleeps until the next look (later after failures); a signal ends it
    /// early.
    async fn sleep(&mut self) -> Option<SignalEvent> {
        tokio::select! {
            _ = tokio::time::sleep(retry_after(self.poll, self.failures)) => None,
            signal = self.signals.recv() => Some(signal),
        }
    }
}

/// Lists the data directory in a thread of its own: a slow disk holds up
/// neither the batch nor a signal.
async fn list(dir: PathBuf) -> std::io::Result<Listing> {
    tokio::task::spawn_blocking(move || incoming::list(&dir))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// An error as the log says it: the message, its causes and its hint on
/// lines of their own.
fn in_words(e: &anyhow::Error) -> String {
    let text = crate::error::format(e);
    let text = text.trim_end();
    text.strip_prefix("error: ").unwrap_or(text).to_string()
}

/// A file's length and modification time, to see that it changed.
fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_that_lasts_is_tried_again_less_and_less_often() {
        let poll = Duration::from_secs(5);
        let waits: Vec<u64> = (0..9).map(|n| retry_after(poll, n).as_secs()).collect();
        assert_eq!(waits, [5, 5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(retry_after(poll, u32::MAX), RETRY_AT_MOST);
        // A poll longer than the cap is never shortened.
        let hour = Duration::from_secs(3600);
        assert_eq!(retry_after(hour, 5), hour);
        assert_eq!(retry_after(Duration::from_millis(100), 2), Duration::from_millis(200));
    }
}
