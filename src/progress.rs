//! What a running batch shows. On a terminal: a batch bar (done / total,
//! failures, ETA) over one line per running job (attempt, epoch, latest
//! value of `monitor`, elapsed). Elsewhere: plain log lines, with an epoch
//! milestone per job at most every [`MILESTONE_EVERY`] (and always the
//! last), so that a cron mail stays readable. Both are fed by a thread that
//! reads each running job's metrics as they grow (`metrics::Reader`: the
//! same model the report and `tb status` read, from whatever source the job
//! writes).

use crate::metrics::{MetricsSpec, Reader};
use crate::run::Status;
use crate::settings::JobSpec;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How often the running jobs' metrics are read.
const POLL: Duration = Duration::from_millis(500);
/// Plain output logs a job's epoch at most this often (a fast trainer
/// would otherwise bury the start and end lines).
pub const MILESTONE_EVERY: Duration = Duration::from_secs(30);

static MULTI: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Runs `print` so that its output lands above the bars, not through them.
pub fn above_bars(print: impl FnOnce()) {
    let multi = MULTI.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match multi {
        Some(multi) => multi.suspend(print),
        None => print(),
    }
}

/// The batch's progress, drawn as bars or told as log lines.
pub struct Progress {
    shared: Arc<Shared>,
    tailer: Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
}

struct Shared {
    /// Draw bars (a terminal) rather than log lines.
    bars: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    drawn: Option<Drawn>,
    running: BTreeMap<String, Tail>,
    failed: usize,
}

struct Drawn {
    multi: MultiProgress,
    batch: ProgressBar,
}

/// One running job, as far as its metrics have been read.
struct Tail {
    line: Option<ProgressBar>,
    reader: Reader,
    spec: MetricsSpec,
    train: Option<serde_json::Value>,
    attempt: u32,
    /// `train.max_epochs`, when the job has a `train` table.
    max_epochs: Option<u64>,
    /// The metric shown: the job's monitor, once known.
    monitor: Option<String>,
    trains: bool,
    epoch: Option<u64>,
    /// `epoch` is a step: the job logs steps but no epochs.
    by_step: bool,
    value: Option<f64>,
    started: Instant,
    /// The last milestone logged: its epoch and when.
    logged: Option<(u64, Instant)>,
}

impl Progress {
    /// `bars`: draw on stderr (a terminal); otherwise log plain lines.
    pub fn new(bars: bool) -> Progress {
        Progress {
            shared: Arc::new(Shared {
                bars,
                state: Mutex::new(State::default()),
            }),
            tailer: Mutex::new(None),
        }
    }

    /// Shows the bars (when drawing) and starts tailing metrics.
    pub fn start(&self, total: usize) {
        if self.shared.bars {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let batch = multi.add(ProgressBar::new(total as u64));
            batch.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} jobs  ETA {eta}  {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            batch.enable_steady_tick(Duration::from_millis(200));
            *MULTI.lock().unwrap_or_else(|e| e.into_inner()) = Some(multi.clone());
            self.shared.lock().drawn = Some(Drawn { multi, batch });
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = self.shared.clone();
        let thread = std::thread::Builder::new().name("tb-progress".into()).spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(POLL) {
                shared.poll();
            }
        });
        match thread {
            Ok(handle) => *self.tailer.lock().unwrap_or_else(|e| e.into_inner()) = Some((stop, handle)),
            // Progress is a courtesy: the batch runs without it.
            Err(e) => tracing::debug!("no progress thread: {e}"),
        }
    }

    /// `spec`'s attempt `attempt` started; its files are in `job_dir`.
    pub fn job_started(&self, spec: &JobSpec, job_dir: &Path, attempt: u32) {
        let train = spec.train.as_ref();
        let mut tail = Tail {
            line: None,
            reader: Reader::new(job_dir, spec.metrics.source),
            spec: spec.metrics.clone(),
            train: spec.train.clone(),
            attempt,
            max_epochs: train.and_then(|t| t.get("max_epochs")).and_then(|v| v.as_u64()),
            monitor: None,
            trains: train.is_some(),
            epoch: None,
            by_step: false,
            value: None,
            started: Instant::now(),
            logged: None,
        };
        let mut state = self.shared.lock();
        if let Some(old) = state.running.remove(&spec.name) {
            // A retry: the same line, a new attempt.
            tail.line = old.line;
        }
        if let Some(d) = &state.drawn
            && tail.line.is_none()
        {
            let line = d.multi.add(ProgressBar::new_spinner());
            line.set_style(ProgressStyle::with_template("  {msg}").expect("a valid template"));
            tail.line = Some(line);
        }
        tail.poll();
        if let Some(line) = &tail.line {
            line.set_message(tail.describe(&spec.name));
        }
        state.running.insert(spec.name.clone(), tail);
    }

    /// An attempt of `name` ended (before its end is logged): its last
    /// epoch is told, however recent the one before.
    pub fn attempt_ended(&self, name: &str) {
        let mut state = self.shared.lock();
        if let Some(tail) = state.running.get_mut(name) {
            tail.poll();
            if tail.epoch.is_some() && tail.epoch != tail.logged.map(|(e, _)| e) {
                tail.log_milestone(name, self.shared.bars);
            }
        }
    }

    /// `name` ended for good with `status` (no retry follows).
    pub fn job_finished(&self, name: &str, status: Status) {
        self.attempt_ended(name);
        let mut state = self.shared.lock();
        if let Some(tail) = state.running.remove(name)
            && let (Some(line), Some(d)) = (&tail.line, &state.drawn)
        {
            line.finish_and_clear();
            d.multi.remove(line);
        }
        if !status.is_fine() {
            state.failed += 1;
        }
        if let Some(d) = &state.drawn {
            d.batch.inc(1);
            if state.failed > 0 {
                d.batch.set_message(format!("{} not succeeded", state.failed));
            }
        }
    }

    /// Stops tailing and takes the bars off the screen.
    pub fn finish(&self) {
        if let Some((stop, handle)) = self.tailer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(());
            let _ = handle.join();
        }
        let mut state = self.shared.lock();
        if let Some(d) = state.drawn.take() {
            for tail in state.running.values() {
                if let Some(line) = &tail.line {
                    line.finish_and_clear();
                    d.multi.remove(line);
                }
            }
            d.batch.finish_and_clear();
            let _ = d.multi.clear();
        }
        *MULTI.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads what each running job wrote since the last poll and tells it.
    fn poll(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        for (name, tail) in state.running.iter_mut() {
            tail.poll();
            if let Some(line) = &tail.line {
                line.set_message(tail.describe(name));
            }
            let due = match (tail.epoch, tail.logged) {
                (Some(_), None) => true,
                (Some(e), Some((logged, at))) => e != logged && now.duration_since(at) >= MILESTONE_EVERY,
                (None, _) => false,
            };
            if due {
                tail.log_milestone(name, self.bars);
            }
        }
    }
}

impl Tail {
    /// Reads what the job wrote since the last call (only that: the
    /// reader keeps its place in each file).
    fn poll(&mut self) {
        self.reader.poll(true);
        let m = self.reader.metrics();
        self.epoch = m.last_epoch();
        self.by_step = m.by_step;
        self.monitor = self.spec.monitor(self.train.as_ref(), &m).map(|m| m.metric);
        self.value = self.monitor.as_deref().and_then(|k| m.latest(k));
    }

    /// `unet_w16  attempt 2  epoch 7/30  val_loss=0.2134  3m12s`.
    fn describe(&self, name: &str) -> String {
        let mut parts = vec![name.to_string(), format!("attempt {}", self.attempt)];
        if self.trains || self.epoch.is_some() {
            parts.push(self.epochs());
        }
        if let (Some(k), Some(v)) = (&self.monitor, self.value) {
            parts.push(format!("{k}={}", crate::report::fmt_value(v)));
        }
        parts.push(crate::human::duration(
            chrono::Duration::from_std(self.started.elapsed()).unwrap_or_default(),
        ));
        parts.join("  ")
    }

    /// `epoch 7/30`, `epoch 7`, `epoch -/30`.
    fn epochs(&self) -> String {
        if let (true, Some(s)) = (self.by_step, self.epoch) {
            return format!("step {s}");
        }
        let done = self.epoch.map_or("-".to_string(), |e| e.to_string());
        match self.max_epochs {
            Some(max) => format!("epoch {done}/{max}"),
            None => format!("epoch {done}"),
        }
    }

    /// `unet_w16: epoch 5/12 val_loss=0.2134`: in the log on stderr when no
    /// bars are drawn, and in `supervisor.log` always.
    fn log_milestone(&mut self, name: &str, bars: bool) {
        let Some(epoch) = self.epoch else { return };
        let mut text = format!("{name}: {}", self.epochs());
        if let (Some(k), Some(v)) = (&self.monitor, self.value) {
            text.push_str(&format!(" {k}={}", crate::report::fmt_value(v)));
        }
        if self.attempt > 1 {
            text.push_str(&format!(" (attempt {})", self.attempt));
        }
        if bars {
            tracing::debug!("{text}");
        } else {
            tracing::info!("{text}");
        }
        self.logged = Some((epoch, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tail(dir: &Path, train: bool) -> Tail {
        Tail {
            line: None,
            reader: Reader::new(dir, crate::metrics::SourceChoice::Auto),
            spec: MetricsSpec::default(),
            train: train.then(|| serde_json::json!({"max_epochs": 30})),
            attempt: 2,
            max_epochs: train.then_some(30),
            monitor: None,
            trains: train,
            epoch: None,
            by_step: false,
            value: None,
            started: Instant::now(),
            logged: None,
        }
    }

    #[test]
    fn reads_only_whole_new_lines_and_skips_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = tail(dir.path(), true);
        t.poll();
        assert_eq!(t.epoch, None, "no file yet is no progress");
        assert_eq!(t.epochs(), "epoch -/30");
        let path = dir.path().join("metrics.jsonl");
        let mut f = std::fs::File::create(&path).unwrap();
        write!(
            f,
            "{{\"epoch\": 1, \"metrics\": {{\"val_loss\": 0.5}}}}\ngarbage\n{{\"epoch\": 2, \"metr"
        )
        .unwrap();
        t.poll();
        assert_eq!((t.epoch, t.value), (Some(1), Some(0.5)));
        writeln!(f, "ics\": {{\"val_loss\": 0.25, \"val_iou\": 0.7}}}}").unwrap();
        t.poll();
        assert_eq!((t.epoch, t.value), (Some(2), Some(0.25)));
        let text = t.describe("unet");
        assert!(
            text.starts_with("unet  attempt 2  epoch 2/30  val_loss=0.2500  "),
            "{text}"
        );
    }

    #[test]
    fn a_script_printing_its_metrics_shows_them_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = tail(dir.path(), false);
        std::fs::write(dir.path().join("stdout.log"), "epoch=3 val_loss=0.2134 val_acc=0.91\n").unwrap();
        t.poll();
        let text = t.describe("plain");
        assert!(
            text.starts_with("plain  attempt 2  epoch 3  val_loss=0.2134  "),
            "{text}"
        );
    }

    #[test]
    fn a_job_without_training_shows_no_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let t = tail(dir.path(), false);
        let text = t.describe("bench");
        assert!(text.starts_with("bench  attempt 2  0."), "{text}");
    }
}
