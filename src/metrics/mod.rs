//! One model of a job's metrics, whatever wrote them: tb's own
//! `metrics.jsonl` ([`jsonl`]), TensorBoard event files ([`tfevents`]:
//! Lightning's default logger, `SummaryWriter`, tensorboardX), Lightning's
//! `CSVLogger` file ([`csvlog`]) and `name=value` lines on stdout
//! ([`stdout`]). A [`Reader`] finds the job's sources (at any depth of its
//! directory), picks one ([`Source`] precedence, or `[job.metrics] source`),
//! reads it incrementally — each poll costs only what was appended — and
//! turns its points into per-metric series by epoch ([`JobMetrics`]). The
//! report, `tb status`, the progress lines and the summary all read this
//! model, so they agree.

pub mod csvlog;
pub mod jsonl;
pub mod stdout;
mod tail;
pub mod tfevents;

pub use jsonl::BadLine;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One value of one metric where training was at the time, as the CSV and
/// stdout readers give it; a TensorBoard [`tfevents::Scalar`] converts into
/// one. A source may know the step, the epoch, or both.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Shared by all the points of a tag, which a reader names once.
    pub tag: Arc<str>,
    pub step: Option<u64>,
    pub epoch: Option<u64>,
    pub value: f64,
}

/// A kind of file a job's metrics can come from, in the order `auto` tries
/// them: tb's own file first, then what Lightning's loggers write, then
/// stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `metrics.jsonl` (docs/trainer-protocol.md).
    Jsonl,
    /// `events.out.tfevents.*`.
    Tensorboard,
    /// `metrics.csv`.
    Csv,
    /// `name=value` lines in `stdout.log`.
    Stdout,
}

impl Source {
    pub const ALL: [Source; 4] = [Source::Jsonl, Source::Tensorboard, Source::Csv, Source::Stdout];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Jsonl => "jsonl",
            Source::Tensorboard => "tensorboard",
            Source::Csv => "csv",
            Source::Stdout => "stdout",
        }
    }

    /// Where a job's files of this kind are, for people.
    pub fn looked(self) -> &'static str {
        match self {
            Source::Jsonl => "metrics.jsonl",
            Source::Tensorboard => "TensorBoard event files (events.out.tfevents.*, at any depth)",
            Source::Csv => "CSVLogger's metrics.csv (at any depth)",
            Source::Stdout => "`name=value` lines with an epoch or step in stdout.log",
        }
    }
}

/// `[job.metrics] source`: one source, or the first found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "lowercase",
    expecting = "\"auto\", \"jsonl\", \"tensorboard\", \"csv\" or \"stdout\""
)]
pub enum SourceChoice {
    #[default]
    Auto,
    Jsonl,
    Tensorboard,
    Csv,
    Stdout,
}

impl SourceChoice {
    fn only(self) -> Option<Source> {
        match self {
            SourceChoice::Auto => None,
            SourceChoice::Jsonl => Some(Source::Jsonl),
            SourceChoice::Tensorboard => Some(Source::Tensorboard),
            SourceChoice::Csv => Some(Source::Csv),
            SourceChoice::Stdout => Some(Source::Stdout),
        }
    }
}

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "\"min\" or \"max\"")]
pub enum Mode {
    Min,
    Max,
}

impl Mode {
    pub fn maximize(self) -> bool {
        self == Mode::Max
    }
}

/// The metric a job is judged by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Monitor {
    pub metric: String,
    pub mode: Mode,
}

/// The metric tb judges a job by when none is named.
pub const DEFAULT_MONITOR: &str = "val_loss";

/// `[job.metrics]`, as resolved into `job.json` (`metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSpec {
    /// The metric the job is judged by; none: `train.monitor`, else
    /// `val_loss` when the job logs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub source: SourceChoice,
}

impl MetricsSpec {
    /// The monitor the job names: `[job.metrics]`, else its trainer's
    /// `train.monitor` (and `train.mode`).
    pub fn named(&self, train: Option<&serde_json::Value>) -> Option<Monitor> {
        let t_monitor = train.and_then(|t| t.get("monitor")).and_then(|m| m.as_str());
        let t_mode = match train.and_then(|t| t.get("mode")).and_then(|m| m.as_str()) {
            Some("max") => Some(Mode::Max),
            Some("min") => Some(Mode::Min),
            _ => None,
        };
        match (&self.monitor, t_monitor) {
            (Some(m), _) => Some(Monitor {
                metric: m.clone(),
                // The trainer's mode goes with the trainer's metric only.
                mode: self
                    .mode
                    .or(t_mode.filter(|_| t_monitor == Some(m.as_str())))
                    .unwrap_or(Mode::Min),
            }),
            (None, Some(m)) => Some(Monitor {
                metric: m.to_string(),
                mode: self.mode.or(t_mode).unwrap_or(Mode::Min),
            }),
            // A trainer job's monitor defaults to val_loss, as the trainer's does.
            (None, None) if train.is_some() => Some(Monitor {
                metric: DEFAULT_MONITOR.into(),
                mode: self.mode.unwrap_or(Mode::Min),
            }),
            (None, None) => None,
        }
    }

    /// The monitor of a job that logged `metrics`: the named one, else
    /// `val_loss` (lower is better) if it was logged.
    pub fn monitor(&self, train: Option<&serde_json::Value>, metrics: &JobMetrics) -> Option<Monitor> {
        self.named(train).or_else(|| {
            metrics.epochs.contains_key(DEFAULT_MONITOR).then(|| Monitor {
                metric: DEFAULT_MONITOR.into(),
                mode: self.mode.unwrap_or(Mode::Min),
            })
        })
    }
}

/// `v` beats `best` (a tie does not: the earlier epoch stays the best).
/// NaN is the worst value: it beats nothing, and any number beats it.
pub fn better(v: f64, best: f64, maximize: bool) -> bool {
    match (v.is_nan(), best.is_nan()) {
        (true, _) => false,
        (false, true) => true,
        _ if maximize => v > best,
        _ => v < best,
    }
}

/// Most step-level points a series keeps (evenly thinned, the last kept):
/// enough to draw, little enough for a report of ten thousand jobs.
const MAX_STEP_POINTS: usize = 500;

/// A job's metrics as one model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobMetrics {
    /// The source the values come from, if any was found.
    pub source: Option<Source>,
    /// The files read, relative to the job directory.
    pub files: Vec<String>,
    /// Other sources present in the job directory, not used.
    pub unused: Vec<Source>,
    /// Each metric's value by epoch (the last one logged in the epoch),
    /// ascending. Lightning's `_epoch` suffix is dropped: `train_loss_epoch`
    /// is the epoch curve of `train_loss`.
    pub epochs: BTreeMap<String, Vec<(u64, f64)>>,
    /// Step-level values (Lightning's `_step` tags, without the suffix), by
    /// step, thinned to at most a few hundred points.
    pub steps: BTreeMap<String, Vec<(u64, f64)>>,
    /// The x of `epochs` is the step: the source logged no epochs.
    pub by_step: bool,
    /// Per metric, the epochs at which its (last) value was NaN or
    /// infinite: left out of `epochs`, kept for pruning (a diverged trial
    /// is the worst there is).
    pub diverged: BTreeMap<String, Vec<u64>>,
    /// Well-formed records (lines, rows, events) read.
    pub records: u64,
    /// Records skipped: malformed, truncated, corrupt.
    pub skipped: u64,
    /// Values that were NaN or infinite (left out of `epochs`).
    pub non_finite: u64,
    /// Skipped `metrics.jsonl` lines, described (the first few).
    pub bad: Vec<BadLine>,
}

impl JobMetrics {
    /// The best value of `monitor` and its epoch.
    pub fn best(&self, monitor: &Monitor) -> Option<(f64, u64)> {
        let mut best: Option<(f64, u64)> = None;
        for &(x, v) in self.epochs.get(&monitor.metric)? {
            if best.is_none_or(|(b, _)| better(v, b, monitor.mode.maximize())) {
                best = Some((v, x));
            }
        }
        best
    }

    /// The latest value of `metric`.
    pub fn latest(&self, metric: &str) -> Option<f64> {
        self.epochs.get(metric).and_then(|s| s.last()).map(|p| p.1)
    }

    /// The highest epoch any metric reached.
    pub fn last_epoch(&self) -> Option<u64> {
        self.epochs.values().filter_map(|s| s.last()).map(|p| p.0).max()
    }

    /// Every metric's last value.
    pub fn last_values(&self) -> BTreeMap<String, f64> {
        self.epochs
            .iter()
            .filter_map(|(k, s)| s.last().map(|p| (k.clone(), p.1)))
            .collect()
    }

    /// Where tb looks for metrics, for a job that logged none.
    pub fn looked(choice: SourceChoice) -> Vec<&'static str> {
        match choice.only() {
            Some(s) => vec![s.looked()],
            None => Source::ALL.iter().map(|s| s.looked()).collect(),
        }
    }
}

/// A job's best value of its monitor, and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub metric: String,
    pub value: f64,
    pub epoch: Option<u64>,
    /// Where it was, for a job that logged steps but no epochs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// `result.json` (the trainer's own verdict), or the metrics source.
    pub source: String,
}

/// A job's metrics, the monitor it is judged by, and its best value: what
/// the report, `tb status`, the progress lines and the summary all show.
#[derive(Debug, Clone, Default)]
pub struct Judged {
    pub metrics: JobMetrics,
    pub monitor: Option<Monitor>,
    pub best: Option<Best>,
}

/// Reads and judges the metrics of the job in `job_dir`.
pub fn judge(job_dir: &Path, spec: &MetricsSpec, train: Option<&serde_json::Value>, live: bool) -> Judged {
    judged(job_dir, spec, train, read(job_dir, spec.source, live))
}

/// Judges `metrics`, read from `job_dir`: the best value of the monitor,
/// as `result.json` has it for the monitor's metric (the trainer's
/// checkpoint-best), else from the metrics.
pub fn judged(job_dir: &Path, spec: &MetricsSpec, train: Option<&serde_json::Value>, metrics: JobMetrics) -> Judged {
    let monitor = spec.monitor(train, &metrics);
    #[derive(Deserialize)]
    struct Result {
        best: Option<ResultBest>,
    }
    #[derive(Deserialize)]
    struct ResultBest {
        metric: Option<String>,
        value: Option<f64>,
        epoch: Option<u64>,
    }
    let from_result = monitor.as_ref().and_then(|m| {
        let bytes = std::fs::read(job_dir.join("result.json")).ok()?;
        let best = serde_json::from_slice::<Result>(&bytes).ok()?.best?;
        let value = best.value.filter(|v| v.is_finite())?;
        (best.metric.as_deref().unwrap_or(&m.metric) == m.metric).then(|| Best {
            metric: m.metric.clone(),
            value,
            epoch: best.epoch,
            step: None,
            source: "result.json".into(),
        })
    });
    let best = from_result.or_else(|| {
        let m = monitor.as_ref()?;
        let (value, x) = metrics.best(m)?;
        let (epoch, step) = if metrics.by_step {
            (None, Some(x))
        } else {
            (Some(x), None)
        };
        Some(Best {
            metric: m.metric.clone(),
            value,
            epoch,
            step,
            source: metrics.source.map(|s| s.as_str()).unwrap_or_default().to_string(),
        })
    });
    Judged { metrics, monitor, best }
}

/// Reads a job's metrics, once. `live`: the job still runs (a partial last
/// line or record is a write in progress, not damage).
pub fn read(job_dir: &Path, choice: SourceChoice, live: bool) -> JobMetrics {
    let mut r = Reader::new(job_dir, choice);
    r.poll(live);
    r.metrics()
}

/// How often a live job's directory is searched again for new files.
const RESCAN_EVERY: Duration = Duration::from_secs(5);
/// For this long after the first look, a job with no metrics yet is
/// searched at every poll (its logger may create its file any moment).
const EAGER_FOR: Duration = Duration::from_secs(30);
/// How deep, and how many directories, a search of a job directory goes.
const MAX_DEPTH: usize = 6;
const MAX_DIRS: usize = 2_000;
/// And how many entries it looks at in all: a flat directory of a million
/// files is not read in full at every poll.
const MAX_ENTRIES: usize = 50_000;
/// Where loggers put their files: searched first.
const LOG_DIRS: [&str; 5] = ["lightning_logs", "logs", "runs", "tb_logs", "tensorboard"];

/// A job's metrics, read as they grow.
pub struct Reader {
    dir: PathBuf,
    choice: SourceChoice,
    first_look: Option<Instant>,
    scanned: Option<Instant>,
    found: BTreeMap<Source, Vec<PathBuf>>,
    /// The sources read so far, with their files, by precedence.
    sources: BTreeMap<Source, Vec<FileState>>,
    /// What `metrics()` gave last, until more is read.
    cache: std::cell::RefCell<Option<JobMetrics>>,
}

/// One file of a source and what was read of it.
struct FileState {
    path: PathBuf,
    reader: FileReader,
    points: Vec<Point>,
    records: u64,
    skipped: u64,
    non_finite: u64,
    bad: Vec<BadLine>,
}

enum FileReader {
    Jsonl(jsonl::JsonlReader),
    Tensorboard(tfevents::TfEventsReader),
    Csv(csvlog::CsvReader),
    Stdout(stdout::StdoutReader),
}

impl Reader {
    pub fn new(job_dir: &Path, choice: SourceChoice) -> Reader {
        Reader {
            dir: job_dir.to_path_buf(),
            choice,
            first_look: None,
            scanned: None,
            found: BTreeMap::new(),
            sources: BTreeMap::new(),
            cache: std::cell::RefCell::new(None),
        }
    }

    /// Reads what was written since the last poll. Errors reading a file
    /// (it vanished, it is unreadable) count as nothing new.
    pub fn poll(&mut self, live: bool) {
        let first = *self.first_look.get_or_insert_with(Instant::now);
        let nothing_yet = self.chosen().is_none();
        let rescan = !live
            || self.scanned.is_none_or(|t| t.elapsed() >= RESCAN_EVERY)
            || (nothing_yet && first.elapsed() < EAGER_FOR);
        if rescan {
            self.found = find(&self.dir);
            self.scanned = Some(Instant::now());
        }
        // Each candidate in turn, until one has metrics: a source found but
        // empty (a TensorBoard file holding only Lightning's hyperparameter
        // record) does not hide the next.
        for source in self.candidates() {
            let files = self.sources.entry(source).or_default();
            for path in self.found.get(&source).into_iter().flatten() {
                if !files.iter().any(|f| &f.path == path) {
                    files.push(FileState {
                        path: path.clone(),
                        reader: FileReader::new(source),
                        points: Vec::new(),
                        records: 0,
                        skipped: 0,
                        non_finite: 0,
                        bad: Vec::new(),
                    });
                }
            }
            files.sort_by_cached_key(|f| file_order(&self.dir, &f.path));
            let mut changed = false;
            for f in files.iter_mut() {
                let Ok(b) = f.reader.read(&f.path, live) else { continue };
                if b.restarted {
                    f.points.clear();
                    (f.records, f.skipped, f.non_finite) = (0, 0, 0);
                    f.bad.clear();
                    changed = true;
                }
                changed |= !b.points.is_empty() || b.skipped > 0;
                f.records += b.records;
                f.skipped += b.skipped;
                f.non_finite += b.non_finite;
                if f.bad.len() < jsonl::BAD_EXAMPLES {
                    f.bad.extend(b.bad);
                    f.bad.truncate(jsonl::BAD_EXAMPLES);
                }
                f.points.reserve(b.points.len());
                f.points.extend(b.points);
            }
            if changed {
                self.cache.replace(None);
            }
            if has_metric(files) {
                break;
            }
        }
    }

    /// The sources to read, in order: the one asked for, or those found by
    /// precedence, stdout last.
    fn candidates(&self) -> Vec<Source> {
        match self.choice.only() {
            Some(s) => vec![s],
            None => Source::ALL
                .into_iter()
                .filter(|s| *s == Source::Stdout || self.found.get(s).is_some_and(|f| !f.is_empty()))
                .collect(),
        }
    }

    /// The source the metrics come from: the first read that has any.
    fn chosen(&self) -> Option<Source> {
        self.sources
            .iter()
            .find(|(_, files)| has_metric(files))
            .map(|(s, _)| *s)
    }

    /// Bytes consumed so far, over all the files read: what a poll reads
    /// is what this grew by.
    pub fn consumed(&self) -> u64 {
        self.sources
            .values()
            .flatten()
            .map(|f| match &f.reader {
                FileReader::Jsonl(r) => r.offset(),
                FileReader::Tensorboard(r) => r.offset(),
                FileReader::Csv(r) => r.offset(),
                FileReader::Stdout(r) => r.offset(),
            })
            .sum()
    }

    /// Bytes read from the files so far, re-reads included: what a poll
    /// read is what this grew by.
    pub fn bytes_read(&self) -> u64 {
        self.sources
            .values()
            .flatten()
            .map(|f| match &f.reader {
                FileReader::Jsonl(r) => r.bytes_read(),
                FileReader::Tensorboard(r) => r.bytes_read(),
                FileReader::Csv(r) => r.bytes_read(),
                FileReader::Stdout(r) => r.bytes_read(),
            })
            .sum()
    }

    /// The model of what was read so far.
    pub fn metrics(&self) -> JobMetrics {
        if let Some(m) = self.cache.borrow().as_ref() {
            return m.clone();
        }
        let m = self.derive();
        self.cache.replace(Some(m.clone()));
        m
    }

    fn derive(&self) -> JobMetrics {
        let mut m = JobMetrics::default();
        let Some(source) = self.chosen() else {
            m.unused = self
                .found
                .iter()
                .filter(|(s, f)| **s != Source::Stdout && !f.is_empty())
                .map(|(s, _)| *s)
                .collect();
            return m;
        };
        let files = &self.sources[&source];
        m.source = Some(source);
        m.files = files
            .iter()
            .map(|f| f.path.strip_prefix(&self.dir).unwrap_or(&f.path).display().to_string())
            .collect();
        m.unused = self
            .found
            .iter()
            .filter(|(s, f)| **s != source && **s != Source::Stdout && !f.is_empty())
            .map(|(s, _)| *s)
            .collect();
        m.records = files.iter().map(|f| f.records).sum();
        m.skipped = files.iter().map(|f| f.skipped).sum();
        m.non_finite = files.iter().map(|f| f.non_finite).sum();
        m.bad = files
            .iter()
            .flat_map(|f| f.bad.iter().cloned())
            .take(jsonl::BAD_EXAMPLES)
            .collect();
        let mut series = Series::default();
        for f in files {
            series.add_file(&f.points);
        }
        series.finish(&mut m);
        m
    }
}

/// Whether a source's files hold a value of any metric (not only the
/// epoch scalar or Lightning's `hp_metric`).
fn has_metric(files: &[FileState]) -> bool {
    files.iter().any(|f| {
        f.points
            .iter()
            .any(|p| !matches!(&*p.tag, "epoch" | "step" | "hp_metric"))
    })
}

impl FileReader {
    fn new(source: Source) -> FileReader {
        match source {
            Source::Jsonl => FileReader::Jsonl(jsonl::JsonlReader::new()),
            Source::Tensorboard => FileReader::Tensorboard(tfevents::TfEventsReader::new()),
            Source::Csv => FileReader::Csv(csvlog::CsvReader::new()),
            Source::Stdout => FileReader::Stdout(stdout::StdoutReader::new()),
        }
    }

    fn read(&mut self, path: &Path, live: bool) -> std::io::Result<Read> {
        Ok(match self {
            FileReader::Jsonl(r) => {
                let b = r.read_new(path, live)?;
                Read {
                    points: b.points,
                    records: b.lines,
                    skipped: b.skipped,
                    non_finite: b.non_finite,
                    bad: b.bad,
                    restarted: b.restarted,
                }
            }
            FileReader::Tensorboard(r) => {
                let b = r.read_new(path, live)?;
                Read {
                    points: b.scalars.into_iter().map(Point::from).collect(),
                    records: b.records,
                    skipped: b.skipped,
                    non_finite: b.non_finite,
                    bad: Vec::new(),
                    restarted: b.restarted,
                }
            }
            FileReader::Csv(r) => {
                let b = r.read_new(path, live)?;
                Read {
                    points: b.points,
                    records: b.rows,
                    skipped: b.skipped,
                    non_finite: b.non_finite,
                    bad: Vec::new(),
                    restarted: b.restarted,
                }
            }
            FileReader::Stdout(r) => {
                let b = r.read_new(path, live)?;
                Read {
                    points: b.points,
                    records: b.lines,
                    skipped: 0,
                    non_finite: b.non_finite,
                    bad: Vec::new(),
                    restarted: b.restarted,
                }
            }
        })
    }
}

/// What one read of one file gave, whatever its kind.
struct Read {
    points: Vec<Point>,
    records: u64,
    skipped: u64,
    bad: Vec<BadLine>,
    restarted: bool,
    non_finite: u64,
}

/// Files in the order their points are merged (later ones win): earlier
/// attempts' output before the current one's, then by path with numbers
/// compared as numbers (Lightning's `version_9` before `version_10`).
fn file_order(dir: &Path, path: &Path) -> (u8, u64, Vec<Part>) {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    let text = rel.to_string_lossy();
    let mut parts = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned());
    let (tier, attempt) = match (parts.next().as_deref(), parts.next()) {
        (Some("attempts"), Some(n)) => (0, n.parse().unwrap_or(u64::MAX)),
        _ => (1, 0),
    };
    (tier, attempt, natural(&text))
}

/// A piece of a name: text, or a number compared as one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Text(String),
    Number(u64),
}

fn natural(text: &str) -> Vec<Part> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits > 0 {
            out.push(Part::Number(rest[..digits].parse().unwrap_or(u64::MAX)));
            rest = &rest[digits..];
        } else {
            let text_end = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            out.push(Part::Text(rest[..text_end].to_string()));
            rest = &rest[text_end..];
        }
    }
    out
}

/// The metric files of each kind in a job directory: breadth first, where
/// loggers write first, within a bound on directories (a job that unpacks
/// a dataset into its output does not hide its logs).
fn find(dir: &Path) -> BTreeMap<Source, Vec<PathBuf>> {
    let mut found: BTreeMap<Source, Vec<PathBuf>> = BTreeMap::new();
    let mut add = |s: Source, p: PathBuf| found.entry(s).or_default().push(p);
    if dir.join("metrics.jsonl").is_file() {
        add(Source::Jsonl, dir.join("metrics.jsonl"));
    }
    // Earlier attempts' output (tb moved it there), then the current one's.
    if let Ok(entries) = std::fs::read_dir(dir.join("attempts")) {
        for e in entries.flatten() {
            let p = e.path().join("stdout.log");
            if p.is_file() {
                add(Source::Stdout, p);
            }
        }
    }
    if dir.join("stdout.log").is_file() {
        add(Source::Stdout, dir.join("stdout.log"));
    }
    let mut queue = std::collections::VecDeque::from([(dir.to_path_buf(), 0usize)]);
    let (mut dirs, mut seen) = (0, 0);
    while let Some((d, depth)) = queue.pop_front() {
        dirs += 1;
        if dirs > MAX_DIRS || seen >= MAX_ENTRIES {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        let mut subdirs = Vec::new();
        for e in entries.flatten().take(MAX_ENTRIES - seen) {
            seen += 1;
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                // tb's own: archived logs and checkpoints hold no metrics files.
                let skip = depth == 0 && matches!(name.as_ref(), "attempts" | "checkpoints");
                if !skip && depth + 1 < MAX_DEPTH {
                    subdirs.push((!LOG_DIRS.contains(&name.as_ref()), e.path()));
                }
            } else if name.starts_with("events.out.tfevents.") {
                add(Source::Tensorboard, e.path());
            } else if name == "metrics.csv" {
                add(Source::Csv, e.path());
            }
        }
        subdirs.sort();
        queue.extend(subdirs.into_iter().map(|(_, p)| (p, depth + 1)));
    }
    found
}

/// Points turned into series: suffixes read, steps placed on epochs, the
/// last value of each epoch kept.
#[derive(Default)]
struct Series {
    /// Interned names, and per name its epoch and step values as they come.
    names: Vec<String>,
    index: HashMap<String, usize>,
    epochs: Vec<Vec<(u64, f64)>>,
    steps: Vec<Vec<(u64, f64)>>,
    any_epoch: bool,
    any_plain: bool,
}

/// How a tag is read.
#[derive(Clone, Copy)]
enum Kind {
    /// The epoch scalar Lightning logs beside every metric.
    EpochMarker,
    /// A value of the epoch curve of a metric.
    Epoch(usize),
    /// A step-level value of a metric.
    Step(usize),
    Ignored,
}

impl Series {
    fn name(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), self.names.len() - 1);
        self.epochs.push(Vec::new());
        self.steps.push(Vec::new());
        self.names.len() - 1
    }

    fn kind(&mut self, tag: &str) -> Kind {
        match tag {
            "epoch" => Kind::EpochMarker,
            // Lightning's placeholder for hyperparameter logging.
            "hp_metric" | "step" => Kind::Ignored,
            _ => match (tag.strip_suffix("_step"), tag.strip_suffix("_epoch")) {
                (Some(base), _) if !base.is_empty() => Kind::Step(self.name(base)),
                (_, Some(base)) if !base.is_empty() => Kind::Epoch(self.name(base)),
                _ => Kind::Epoch(self.name(tag)),
            },
        }
    }

    /// The points of one file, in its order. A point without an epoch but
    /// with a step (a TensorBoard scalar; a CSV row of LearningRateMonitor)
    /// takes the epoch of that step, from the `epoch` scalars Lightning
    /// logs and the points that carry both; a file with no epochs at all is
    /// drawn against its steps.
    fn add_file(&mut self, points: &[Point]) {
        let mut epoch_at: Vec<(u64, u64)> = Vec::new();
        for p in points {
            let Some(step) = p.step else { continue };
            match (&*p.tag, p.epoch) {
                ("epoch", _) if p.value >= 0.0 => epoch_at.push((step, p.value as u64)),
                (_, Some(e)) => epoch_at.push((step, e)),
                _ => {}
            }
        }
        if !epoch_at.is_sorted() {
            epoch_at.sort_unstable();
        }
        // Points come tag after tag and step after step: the kind of the
        // last tag, and where the last step fell among the epochs, are
        // nearly always the answer for the next point.
        let mut last: Option<(*const u8, Kind)> = None;
        let mut cursor = 0usize;
        for p in points {
            let kind = match last {
                Some((ptr, kind)) if ptr == p.tag.as_ptr() => kind,
                _ => {
                    let kind = self.kind(&p.tag);
                    last = Some((p.tag.as_ptr(), kind));
                    kind
                }
            };
            if matches!(kind, Kind::EpochMarker | Kind::Ignored) {
                continue;
            }
            let epoch = match (p.epoch, p.step) {
                (Some(e), _) => Some(e),
                (None, Some(step)) if !epoch_at.is_empty() => {
                    // Lightning logs an epoch's end at the step of its last
                    // batch: a step belongs to the first epoch that ends at
                    // or after it, or, past them all, to the last known.
                    if cursor > 0 && epoch_at[cursor - 1].0 >= step {
                        cursor = epoch_at.partition_point(|&(s, _)| s < step);
                    }
                    while cursor < epoch_at.len() && epoch_at[cursor].0 < step {
                        cursor += 1;
                    }
                    Some(epoch_at[cursor.min(epoch_at.len() - 1)].1)
                }
                _ => None,
            };
            match kind {
                Kind::EpochMarker | Kind::Ignored => {}
                Kind::Step(i) => {
                    if let Some(step) = p.step.filter(|_| p.value.is_finite()) {
                        push_last(&mut self.steps[i], step, p.value);
                    }
                }
                Kind::Epoch(i) => {
                    let x = match (epoch, p.step) {
                        (Some(e), _) => {
                            self.any_epoch = true;
                            e
                        }
                        (None, Some(s)) => {
                            self.any_plain = true;
                            s
                        }
                        (None, None) => continue,
                    };
                    push_last(&mut self.epochs[i], x, p.value);
                }
            }
        }
    }

    fn finish(self, m: &mut JobMetrics) {
        m.by_step = self.any_plain && !self.any_epoch;
        for ((name, mut epochs), steps) in self.names.into_iter().zip(self.epochs).zip(self.steps) {
            if !epochs.is_empty() {
                sort_last(&mut epochs);
                if epochs.iter().any(|p| !p.1.is_finite()) {
                    let xs: Vec<u64> = epochs.iter().filter(|p| !p.1.is_finite()).map(|p| p.0).collect();
                    epochs.retain(|p| p.1.is_finite());
                    m.diverged.insert(name.clone(), xs);
                }
            }
            if !epochs.is_empty() {
                // Against steps, a curve may have a point per step: thinned.
                if m.by_step {
                    epochs = thin(epochs);
                }
                m.epochs.insert(name.clone(), epochs);
            }
            if !steps.is_empty() {
                m.steps.insert(name, thin(steps));
            }
        }
    }
}

/// Appends `(x, v)`, replacing the last point of the same `x`.
fn push_last(series: &mut Vec<(u64, f64)>, x: u64, v: f64) {
    match series.last_mut() {
        Some(last) if last.0 == x => last.1 = v,
        _ => series.push((x, v)),
    }
}

/// Sorted by x, the last value given for each x kept (a resumed attempt
/// logs again the epochs after its checkpoint: the later values win).
fn sort_last(series: &mut Vec<(u64, f64)>) {
    if series.windows(2).all(|w| w[0].0 < w[1].0) {
        return;
    }
    // Stable: equal x keep their order, so the last one given is last.
    series.sort_by_key(|p| p.0);
    let mut out: Vec<(u64, f64)> = Vec::with_capacity(series.len());
    for &(x, v) in series.iter() {
        push_last(&mut out, x, v);
    }
    *series = out;
}

fn thin(mut steps: Vec<(u64, f64)>) -> Vec<(u64, f64)> {
    sort_last(&mut steps);
    if steps.len() <= MAX_STEP_POINTS {
        return steps;
    }
    let every = steps.len().div_ceil(MAX_STEP_POINTS);
    let last = *steps.last().expect("not empty");
    let mut out: Vec<(u64, f64)> = steps.into_iter().step_by(every).collect();
    if out.last() != Some(&last) {
        out.push(last);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn nan_is_the_worst_value_either_way() {
        for maximize in [false, true] {
            assert!(!better(f64::NAN, 0.5, maximize), "NaN beats nothing");
            assert!(better(0.5, f64::NAN, maximize), "anything beats NaN");
            assert!(!better(f64::NAN, f64::NAN, maximize));
        }
        assert!(better(0.4, 0.5, false) && !better(0.5, 0.5, false) && better(0.6, 0.5, true));
    }

    #[test]
    fn tb_jsonl_wins_and_folds_suffixes() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "metrics.jsonl",
            "{\"epoch\": 0, \"metrics\": {\"val_loss\": 0.5, \"train_loss_epoch\": 0.7}}\n\
             {\"epoch\": 1, \"metrics\": {\"val_loss\": 0.3}}\n\
             {\"epoch\": 1, \"step\": 10, \"metrics\": {\"val_loss\": 0.35, \"train_loss_step\": 0.6}}\n",
        );
        write(dir.path(), "stdout.log", "epoch=0 val_loss=9\n");
        write(
            dir.path(),
            "lightning_logs/version_0/metrics.csv",
            "epoch,step,val_loss\n0,1,7\n",
        );
        let m = read(dir.path(), SourceChoice::Auto, false);
        assert_eq!(m.source, Some(Source::Jsonl));
        assert_eq!(m.unused, [Source::Csv]);
        assert_eq!(
            m.epochs["val_loss"],
            [(0, 0.5), (1, 0.35)],
            "the last value of an epoch"
        );
        assert_eq!(m.epochs["train_loss"], [(0, 0.7)]);
        assert!(m.steps.contains_key("train_loss"));
        let min = Monitor {
            metric: "val_loss".into(),
            mode: Mode::Min,
        };
        assert_eq!(m.best(&min), Some((0.35, 1)));
        let m = read(dir.path(), SourceChoice::Csv, false);
        assert_eq!(m.source, Some(Source::Csv));
        assert_eq!(m.files, ["lightning_logs/version_0/metrics.csv"]);
        assert_eq!(m.epochs["val_loss"], [(0, 7.0)]);
    }

    #[test]
    fn stdout_counts_only_with_metrics_lines_and_never_over_a_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "stdout.log", "hello\nEpoch 3/10\n");
        let m = read(dir.path(), SourceChoice::Auto, false);
        assert_eq!(m.source, None);
        assert!(m.epochs.is_empty());
        write(
            dir.path(),
            "attempts/1/stdout.log",
            "epoch=1 val_loss=0.4\nepoch=2 val_loss=0.3\n",
        );
        write(
            dir.path(),
            "stdout.log",
            "epoch=2 val_loss=0.25\nepoch=3 val_loss=0.2\n",
        );
        let m = read(dir.path(), SourceChoice::Auto, false);
        assert_eq!(m.source, Some(Source::Stdout));
        assert_eq!(
            m.epochs["val_loss"],
            [(1, 0.4), (2, 0.25), (3, 0.2)],
            "the current attempt's epochs win over the earlier one's"
        );
    }

    #[test]
    fn a_live_reader_finds_new_files_and_switches_to_a_better_source() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "stdout.log", "epoch=0 val_loss=0.9\n");
        let mut r = Reader::new(dir.path(), SourceChoice::Auto);
        r.poll(true);
        assert_eq!(r.metrics().source, Some(Source::Stdout));
        write(
            dir.path(),
            "lightning_logs/version_0/metrics.csv",
            "epoch,step,val_loss\n0,3,0.5\n1,7,0.4\n",
        );
        r.scanned = None;
        r.poll(true);
        let m = r.metrics();
        assert_eq!(m.source, Some(Source::Csv));
        assert_eq!(m.epochs["val_loss"], [(0, 0.5), (1, 0.4)]);
        assert_eq!(m.last_epoch(), Some(1));
    }

    #[test]
    fn the_monitor_is_named_or_val_loss_when_logged() {
        let m = JobMetrics {
            epochs: BTreeMap::from([("val_loss".to_string(), vec![(0, 1.0)])]),
            ..JobMetrics::default()
        };
        let none = MetricsSpec::default();
        assert_eq!(none.monitor(None, &JobMetrics::default()), None);
        assert_eq!(none.monitor(None, &m).unwrap().metric, "val_loss");
        let train = serde_json::json!({"monitor": "val_iou", "mode": "max"});
        let t = none.monitor(Some(&train), &m).unwrap();
        assert_eq!((t.metric.as_str(), t.mode), ("val_iou", Mode::Max));
        let spec = MetricsSpec {
            monitor: Some("val_acc".into()),
            mode: Some(Mode::Max),
            source: SourceChoice::Auto,
        };
        assert_eq!(spec.monitor(Some(&train), &m).unwrap().metric, "val_acc");
        let plain = MetricsSpec {
            monitor: Some("val_iou".into()),
            ..MetricsSpec::default()
        };
        assert_eq!(
            plain.monitor(Some(&train), &m).unwrap().mode,
            Mode::Max,
            "the trainer's mode for its metric"
        );
        assert_eq!(
            none.monitor(Some(&serde_json::json!({"model": "unet"})), &JobMetrics::default())
                .unwrap()
                .metric,
            "val_loss",
            "a trainer job is judged by the trainer's default"
        );
    }

    #[test]
    fn an_empty_source_does_not_hide_the_next() {
        let dir = tempfile::tempdir().unwrap();
        // Lightning's hyperparameter record only: a TensorBoard file with
        // `hp_metric` and nothing else.
        write(
            dir.path(),
            "lightning_logs/version_0/metrics.csv",
            "epoch,step,val_loss\n0,4,0.5\n",
        );
        write(dir.path(), "stdout.log", "epoch=0 val_loss=0.9\n");
        let m = read(dir.path(), SourceChoice::Auto, false);
        assert_eq!(m.source, Some(Source::Csv));
        write(
            dir.path(),
            "lightning_logs/version_0/metrics.csv",
            "epoch,step,hp_metric\n0,0,-1\n",
        );
        let m = read(dir.path(), SourceChoice::Auto, false);
        assert_eq!(m.source, Some(Source::Stdout), "a file with no metric falls through");
        assert_eq!(m.unused, [Source::Csv]);
    }

    #[test]
    fn step_only_points_take_the_epoch_of_their_step_and_versions_sort_as_numbers() {
        let dir = tempfile::tempdir().unwrap();
        // LearningRateMonitor rows carry a step and no epoch; the rows with
        // both say which epoch each step belongs to.
        write(
            dir.path(),
            "lightning_logs/version_10/metrics.csv",
            "epoch,step,lr,val_loss\n,20,0.1,\n2,29,,0.2\n,30,0.05,\n3,39,,0.1\n",
        );
        write(
            dir.path(),
            "lightning_logs/version_9/metrics.csv",
            "epoch,step,lr,val_loss\n,0,0.3,\n0,9,,0.6\n,10,0.2,\n1,19,,0.4\n",
        );
        let m = read(dir.path(), SourceChoice::Auto, false);
        assert_eq!(
            m.files,
            [
                "lightning_logs/version_9/metrics.csv",
                "lightning_logs/version_10/metrics.csv"
            ]
        );
        assert!(!m.by_step);
        assert_eq!(m.epochs["val_loss"], [(0, 0.6), (1, 0.4), (2, 0.2), (3, 0.1)]);
        assert_eq!(
            m.epochs["lr"],
            [(0, 0.3), (1, 0.2), (2, 0.1), (3, 0.05)],
            "epoch 0 ends at step 9: step 10 is in epoch 1, which ends at 19"
        );
    }

    #[test]
    fn the_search_prefers_log_directories_over_a_deep_dataset() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..(MAX_DIRS + 10) {
            std::fs::create_dir_all(dir.path().join(format!("data/d{i}"))).unwrap();
        }
        write(
            dir.path(),
            "zz/lightning_logs/version_0/metrics.csv",
            "epoch,step,val_loss\n0,1,0.5\n",
        );
        write(dir.path(), "tb_logs/x/metrics.csv", "epoch,step,val_loss\n0,1,0.25\n");
        let found = find(dir.path());
        assert_eq!(found[&Source::Csv], [dir.path().join("tb_logs/x/metrics.csv")]);
    }

    #[test]
    fn series_keep_the_last_value_of_each_x_and_thin_steps() {
        let mut s = vec![(2, 1.0), (1, 5.0), (2, 3.0), (0, 0.5)];
        sort_last(&mut s);
        assert_eq!(s, [(0, 0.5), (1, 5.0), (2, 3.0)]);
        let steps: Vec<(u64, f64)> = (0..20_001).map(|i| (i, i as f64)).collect();
        let t = thin(steps);
        assert!(t.len() <= MAX_STEP_POINTS + 1, "{}", t.len());
        assert_eq!(*t.last().unwrap(), (20_000, 20_000.0));
    }
}
