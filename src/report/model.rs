//! The report's content: every job's state, result and metrics read from the
//! run directory into one [`Report`], ranked by the monitored metric, with
//! cross-validation folds grouped. Reads files only; knows nothing of Docker.

use super::compare::{self, Factor};
use super::tail;
use crate::gpu::Fraction;
use crate::metrics::{self, BadLine, MetricsSpec, Source};
pub use crate::metrics::{Best, Mode, Monitor};
use crate::run::{BatchDir, BatchStatus, JobState, Status, read_versioned};
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The version of `report.json`'s format.
pub const FORMAT_VERSION: u32 = 1;
/// Lines of stderr shown for a job that did not succeed.
pub const STDERR_TAIL: usize = 20;

/// A batch's report: what `report.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: u32,
    pub generated_at: DateTime<Utc>,
    pub batch: BatchInfo,
    pub headline: Headline,
    /// The metric the ranking orders by: the monitor most jobs share.
    pub ranking: Option<Monitor>,
    /// Every swept key, in first-seen order.
    pub swept_keys: Vec<String>,
    /// The configuration keys whose values differ between jobs: the jobs
    /// table's columns (swept keys first).
    pub config_keys: Vec<String>,
    /// The configuration every job shares, listed once (a key only some
    /// jobs have counts as shared if they all have one value of it).
    pub common: BTreeMap<String, Value>,
    /// Common keys that only some jobs have: how many.
    pub common_in: BTreeMap<String, usize>,
    /// The test scores any job has.
    pub test_keys: Vec<String>,
    /// For each swept key, the monitored metric by its value; the keys that
    /// matter most first.
    pub mattered: Vec<Factor>,
    /// All jobs, best first; jobs without a value of the monitor come last.
    pub jobs: Vec<JobReport>,
    /// Cross-validation folds of one configuration.
    pub groups: Vec<Group>,
    /// The batch's latest deploy decision (`deploy.json`), as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Value>,
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchInfo {
    pub id: String,
    pub name: String,
    pub status: BatchStatus,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What started the batch, when `tb watch` did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<crate::run::Trigger>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Headline {
    pub jobs: usize,
    pub counts: Counts,
    /// From the batch's creation to its end (or now, while it runs).
    pub wall_seconds: f64,
    /// Σ over jobs of GPUs held × time held.
    pub gpu_hours: f64,
    /// Metrics lines skipped in all jobs.
    pub bad_metrics_lines: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub succeeded: usize,
    pub failed: usize,
    pub oom: usize,
    pub timeout: usize,
    pub cancelled: usize,
    pub lost: usize,
    pub pruned: usize,
    pub running: usize,
    pub pending: usize,
}

impl Counts {
    fn add(&mut self, s: Status) {
        *match s {
            Status::Succeeded => &mut self.succeeded,
            Status::Failed => &mut self.failed,
            Status::Oom => &mut self.oom,
            Status::Timeout => &mut self.timeout,
            Status::Cancelled => &mut self.cancelled,
            Status::Lost => &mut self.lost,
            Status::Pruned => &mut self.pruned,
            Status::Running => &mut self.running,
            Status::Pending => &mut self.pending,
        } += 1;
    }

    /// Status and count, the six final ones always; pruned, running and
    /// pending only when there are any.
    pub fn listed(&self) -> Vec<(&'static str, usize)> {
        let mut v = vec![
            ("succeeded", self.succeeded),
            ("failed", self.failed),
            ("oom", self.oom),
            ("timeout", self.timeout),
            ("cancelled", self.cancelled),
            ("lost", self.lost),
        ];
        v.extend(
            [
                ("pruned", self.pruned),
                ("running", self.running),
                ("pending", self.pending),
            ]
            .into_iter()
            .filter(|(_, n)| *n > 0),
        );
        v
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// 1-based place in the ranking; `None` without a best value.
    pub rank: Option<usize>,
    pub name: String,
    pub status: Status,
    pub attempt: u32,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
    /// How many GPUs its attempt was given.
    pub gpus: usize,
    /// The share of its one GPU it held, if a share (`gpus = 0.5`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_share: Option<Fraction>,
    /// What the job is judged by: `[job.metrics]`, the trainer's
    /// `monitor`, else `val_loss` if it logged one.
    pub monitor: Option<Monitor>,
    pub stop_reason: Option<String>,
    pub epochs: Option<u64>,
    pub best: Option<Best>,
    /// `result.json`'s `final`, else the last metrics line.
    #[serde(rename = "final")]
    pub final_metrics: Map<String, Value>,
    pub test: Map<String, Value>,
    pub swept: Map<String, Value>,
    /// The job's values of the configuration keys that differ between
    /// jobs (`config_keys`).
    pub config: BTreeMap<String, Value>,
    /// The fold group's name.
    pub group: Option<String>,
    pub metrics: MetricsInfo,
    /// What could not be read (a corrupt `result.json`, say), and why.
    pub problems: Vec<String>,
    /// The last lines of `stderr.log`, for a job that did not succeed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stderr_tail: Vec<String>,
    /// Under `warm_start`: where it started from (`job.json`'s `warm_start`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<Value>,
    /// Every metric's value by epoch (by step, if the job logged no
    /// epochs), for the charts.
    #[serde(skip)]
    pub series: BTreeMap<String, Vec<(u64, f64)>>,
    /// Step-level values (`*_step`, thinned), for one chart per job.
    #[serde(skip)]
    pub step_series: BTreeMap<String, Vec<(u64, f64)>>,
}

/// Where a job's metrics came from, and what reading them found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MetricsInfo {
    /// `jsonl`, `tensorboard`, `csv` or `stdout`; none if the job logged
    /// no metrics tb could find.
    pub source: Option<Source>,
    /// The files read, relative to the job directory.
    pub files: Vec<String>,
    /// Other sources the job directory has, not used.
    pub unused: Vec<Source>,
    /// The x of the curves is the step: the job logged no epochs.
    pub by_step: bool,
    /// Records (lines, rows, events) read.
    pub lines: u64,
    /// Records skipped: malformed, truncated, corrupt.
    pub bad_lines: u64,
    /// Values that were NaN or infinite: left out of the curves.
    pub non_finite: u64,
    /// The first few skipped `metrics.jsonl` lines: number, reason, text.
    pub bad: Vec<BadLine>,
    /// For a job without metrics: where tb looked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub looked: Vec<&'static str>,
}

/// Folds of one configuration: jobs whose `job.json` differ only in name,
/// attempt and `train.cv.fold`.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub name: String,
    pub folds: u64,
    /// Members, in the batch's order.
    pub jobs: Vec<String>,
    pub monitor: Option<Monitor>,
    /// Members with a best value.
    pub n: usize,
    pub mean: Option<f64>,
    /// Sample standard deviation (n − 1); `None` below two values.
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub swept: Map<String, Value>,
}

/// `result.json` as far as the report needs it; every key optional, since
/// the trainer is the user's code.
#[derive(Debug, Default, Deserialize)]
struct ResultFile {
    stop_reason: Option<String>,
    epochs: Option<u64>,
    #[serde(rename = "final")]
    final_metrics: Option<Map<String, Value>>,
    test: Option<Map<String, Value>>,
    /// The trainer's word on where it started, when it differs from the
    /// plan: `{"kind": "cold", "why": …}` for a warm-start checkpoint that
    /// did not fit.
    warm_start: Option<Value>,
}

/// Reads the batch directory into a report, as of now.
pub fn build(dir: &BatchDir) -> anyhow::Result<Report> {
    build_at(dir, Utc::now())
}

impl JobReport {
    /// GPUs' worth it held while it ran: its GPUs, or its share of one.
    pub fn gpus_held(&self) -> f64 {
        match self.gpu_share {
            Some(share) => share.exact(),
            None => self.gpus as f64,
        }
    }
}

/// [`build`] with a fixed "now", which running jobs' durations count to.
pub fn build_at(dir: &BatchDir, now: DateTime<Utc>) -> anyhow::Result<Report> {
    let batch = dir.read_batch()?;
    let read = |name: &String| read_job(dir, name, now);
    let mut read: Vec<(JobReport, Option<String>)> = parallel_map(&batch.jobs, read)?;

    let mut counts = Counts::default();
    let mut gpu_hours = 0.0;
    let mut bad = 0;
    let mut last_end = None;
    for (j, _) in &read {
        counts.add(j.status);
        bad += j.metrics.bad_lines;
        if let Some(start) = j.started_at {
            let end = j.finished_at.unwrap_or(now);
            gpu_hours += j.gpus_held() * (end - start).num_milliseconds() as f64 / 3_600_000.0;
        }
        last_end = last_end.max(j.finished_at);
    }
    let end = match (batch.finished_at, batch.status) {
        (Some(t), _) => t,
        (None, BatchStatus::Running) => now,
        (None, _) => last_end.unwrap_or(now),
    };

    let mut swept_keys: Vec<String> = Vec::new();
    for (j, _) in &read {
        for k in j.swept.keys() {
            if !swept_keys.contains(k) {
                swept_keys.push(k.clone());
            }
        }
    }

    let groups = group(&mut read);
    let mut jobs: Vec<JobReport> = read.into_iter().map(|(j, _)| j).collect();
    let compare::Columns {
        keys: config_keys,
        common,
        common_in,
    } = {
        let configs: Vec<&BTreeMap<String, Value>> = jobs.iter().map(|j| &j.config).collect();
        compare::columns(&configs, &swept_keys)
    };
    for j in &mut jobs {
        j.config.retain(|k, _| config_keys.contains(k));
    }
    let ranking = rank(&mut jobs);
    // Step charts are drawn for the best-ranked jobs with curves only.
    for j in jobs
        .iter_mut()
        .filter(|j| !j.series.is_empty())
        .skip(super::html::CHART_JOBS)
    {
        j.step_series = BTreeMap::new();
    }
    let groups = order_groups(groups, ranking.as_ref());
    let test_keys = compare::test_keys(&jobs);
    let mattered = compare::mattered(&jobs, &swept_keys, ranking.as_ref());

    Ok(Report {
        version: FORMAT_VERSION,
        generated_at: now,
        batch: BatchInfo {
            id: batch.id,
            name: batch.name,
            status: batch.status,
            created_at: batch.created_at,
            finished_at: batch.finished_at,
            trigger: batch.trigger,
        },
        headline: Headline {
            jobs: jobs.len(),
            counts,
            wall_seconds: (end - batch.created_at).num_milliseconds().max(0) as f64 / 1000.0,
            gpu_hours,
            bad_metrics_lines: bad,
        },
        ranking,
        swept_keys,
        config_keys,
        common,
        common_in,
        test_keys,
        mattered,
        jobs,
        groups,
        deploy: read_deploy(&dir.path),
        dir: dir.path.clone(),
    })
}

/// `deploy.json`, when a deploy was made (or tried); an unreadable one is
/// left out of the report, with a warning.
fn read_deploy(batch: &Path) -> Option<Value> {
    let path = batch.join("deploy.json");
    if !path.exists() {
        return None;
    }
    read_versioned(&path)
        .map_err(|e| tracing::warn!("the report leaves the deploy out: {e:#}"))
        .ok()
}

/// `f` over `items` on every core, results in `items`' order: a thousand
/// metrics files parse in a fraction of the time on one.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> anyhow::Result<R> + Sync) -> anyhow::Result<Vec<R>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if threads == 1 || items.len() < 8 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut slots: Vec<Option<anyhow::Result<R>>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        for w in workers {
            for (i, r) in w.join().expect("a report worker panicked") {
                slots[i] = Some(r);
            }
        }
    });
    slots.into_iter().map(|r| r.expect("every job read")).collect()
}

/// One job's report and, for a cross-validation fold, the key that its
/// fellow folds share.
fn read_job(dir: &BatchDir, name: &str, now: DateTime<Utc>) -> anyhow::Result<(JobReport, Option<String>)> {
    let jd = dir.job_dir(name);
    let state: JobState = dir.read_job_state(name)?;
    // Read as JSON rather than `JobFile`: the fold key compares whole
    // documents, and a report should read what older tbs wrote.
    let job: Value = dir.read_job_json(name)?;
    let train = job.get("train").filter(|t| t.is_object());
    let spec: MetricsSpec = job
        .get("metrics")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default();
    let swept = job.get("swept").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut problems = Vec::new();

    let result = read_result(&jd.join("result.json"), &mut problems);
    let live = !state.status().is_final();
    let judged = metrics::judge(&jd, &spec, train, live);
    let m = judged.metrics;
    let final_metrics = result.final_metrics.unwrap_or_else(|| {
        m.last_values()
            .into_iter()
            .map(|(k, v)| (k, serde_json::json!(v)))
            .collect()
    });
    let epochs = m.epochs.values().map(Vec::len).max().map(|n| n as u64);
    // Test scores: the trainer's, else what the job logged as test_*.
    let test = result.test.unwrap_or_else(|| {
        m.last_values()
            .into_iter()
            .filter(|(k, _)| compare::is_test(k))
            .map(|(k, v)| (k, serde_json::json!(v)))
            .collect()
    });
    let info = MetricsInfo {
        source: m.source,
        files: m.files.clone(),
        unused: m.unused.clone(),
        by_step: m.by_step,
        lines: m.records,
        bad_lines: m.skipped,
        non_finite: m.non_finite,
        bad: m.bad.clone(),
        looked: if m.source.is_none() {
            metrics::JobMetrics::looked(spec.source)
        } else {
            Vec::new()
        },
    };
    let stderr_tail = if state.status().is_final() && !state.status().is_fine() {
        let path = jd.join("stderr.log");
        tail::tail(&path, STDERR_TAIL).unwrap_or_else(|e| {
            problems.push(format!("stderr.log unreadable: {e}"));
            Vec::new()
        })
    } else {
        Vec::new()
    };
    let key = fold_key(&job);
    Ok((
        JobReport {
            rank: None,
            name: name.to_string(),
            status: state.status(),
            attempt: state.attempt(),
            exit_code: state.exit_code(),
            oom_killed: state.oom_killed(),
            error: state.error().map(String::from),
            started_at: state.started_at(),
            finished_at: state.finished_at(),
            duration_seconds: state.elapsed(now).map(|d| d.num_milliseconds() as f64 / 1000.0),
            gpus: state.gpus().len(),
            gpu_share: state.gpu_share(),
            monitor: judged.monitor,
            // A pruned job's trainer saw only an interruption.
            stop_reason: if state.status() == Status::Pruned {
                Some("pruned".into())
            } else {
                result.stop_reason
            },
            epochs: result.epochs.or(epochs),
            best: judged.best,
            final_metrics,
            test,
            swept,
            config: compare::config_of(&job),
            group: None,
            metrics: info,
            problems,
            stderr_tail,
            warm_start: started_from(job.get("warm_start"), result.warm_start),
            series: m.epochs,
            step_series: m.steps,
        },
        key,
    ))
}

/// Where a job started from: `job.json`'s `warm_start`, unless its trainer
/// found that the checkpoint did not fit and started cold (`result.json`).
fn started_from(planned: Option<&Value>, ran: Option<Value>) -> Option<Value> {
    let planned = planned.filter(|w| w.is_object())?;
    match ran {
        Some(r) if r.get("kind").and_then(Value::as_str) == Some("cold") => Some(r),
        _ => Some(planned.clone()),
    }
}

/// A missing `result.json` is normal (the job was killed, or still runs); a
/// corrupt one is noted and the metrics stand in for it.
fn read_result(path: &Path, problems: &mut Vec<String>) -> ResultFile {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ResultFile::default(),
        Err(e) => {
            problems.push(format!("result.json unreadable: {e}"));
            return ResultFile::default();
        }
    };
    serde_json::from_slice(&bytes)
        .with_context(|| "result.json is not valid".to_string())
        .unwrap_or_else(|e| {
            problems.push(format!("{e:#}; the metrics stand in for it"));
            ResultFile::default()
        })
}

/// The part of `job.json` that folds of one configuration share, for a job
/// with `train.cv`; its name, attempt and fold (also the fold's pruning
/// group) left out.
fn fold_key(job: &Value) -> Option<String> {
    job.get("train")?.get("cv")?.get("fold")?;
    let mut job = job.clone();
    let obj = job.as_object_mut()?;
    obj.remove("name");
    obj.remove("attempt");
    // Each fold starts from its own earlier fold.
    obj.remove("warm_start");
    if let Some(prune) = obj.get_mut("prune").and_then(Value::as_object_mut) {
        prune.remove("group");
    }
    if let Some(cv) = obj
        .get_mut("train")
        .and_then(|t| t.get_mut("cv"))
        .and_then(Value::as_object_mut)
    {
        cv.remove("fold");
    }
    if let Some(swept) = obj.get_mut("swept").and_then(Value::as_object_mut) {
        swept.remove("train.cv.fold");
    }
    // serde_json's maps are sorted, so equal documents print equal.
    Some(job.to_string())
}

/// Forms the fold groups and marks each member with its group's name.
fn group(jobs: &mut [(JobReport, Option<String>)]) -> Vec<Group> {
    let mut members: Vec<(String, Vec<usize>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, (_, key)) in jobs.iter().enumerate() {
        if let Some(key) = key {
            let g = *index.entry(key.as_str()).or_insert_with(|| {
                members.push((key.clone(), Vec::new()));
                members.len() - 1
            });
            members[g].1.push(i);
        }
    }
    let mut groups = Vec::new();
    for (key, idx) in members {
        let names: Vec<String> = idx.iter().map(|&i| jobs[i].0.name.clone()).collect();
        let (monitor, mut swept) = (jobs[idx[0]].0.monitor.clone(), jobs[idx[0]].0.swept.clone());
        let doc: Value = serde_json::from_str(&key).unwrap_or_default();
        let folds = doc["train"]["cv"]["folds"].as_u64().unwrap_or(idx.len() as u64);
        // A pruned fold stopped early: its best is not comparable.
        let values: Vec<f64> = idx
            .iter()
            .filter(|&&i| jobs[i].0.status != Status::Pruned)
            .filter_map(|&i| jobs[i].0.best.as_ref().map(|b| b.value))
            .collect();
        let (mean, std) = mean_std(&values);
        swept.remove("train.cv.fold");
        let name = group_name(&names);
        for &i in &idx {
            jobs[i].0.group = Some(name.clone());
        }
        groups.push(Group {
            name,
            folds,
            jobs: names,
            monitor,
            n: values.len(),
            mean,
            std,
            min: values.iter().copied().reduce(f64::min),
            max: values.iter().copied().reduce(f64::max),
            swept,
        });
    }
    groups
}

/// The mean and the sample standard deviation (n − 1).
pub fn mean_std(values: &[f64]) -> (Option<f64>, Option<f64>) {
    if values.is_empty() {
        return (None, None);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.len() > 1).then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (Some(mean), std)
}

/// `lr-0.01_fold-2` → `lr-0.01`: what the folds' names share.
fn group_name(names: &[String]) -> String {
    let base = |n: &str| -> String {
        match n.rsplit_once("_fold-") {
            Some((b, k)) if !k.is_empty() && k.bytes().all(|c| c.is_ascii_digit()) => b.to_string(),
            _ => n.to_string(),
        }
    };
    let first = base(&names[0]);
    if names.iter().all(|n| base(n) == first) {
        return first;
    }
    let mut prefix = names[0].as_str();
    for n in names {
        let common = prefix.chars().zip(n.chars()).take_while(|(a, b)| a == b).count();
        prefix = &prefix[..prefix.char_indices().nth(common).map_or(prefix.len(), |(i, _)| i)];
    }
    match prefix.trim_end_matches(['_', '-', '.']) {
        "" => names[0].clone(),
        p => p.to_string(),
    }
}

/// Sorts `jobs` best first on the monitor most of them share; jobs ranked on
/// another metric follow, then those with no value (in the batch's order).
fn rank(jobs: &mut [JobReport]) -> Option<Monitor> {
    let key = |j: &JobReport| -> Option<Monitor> {
        let best = j.best.as_ref()?;
        Some(Monitor {
            metric: best.metric.clone(),
            mode: j.monitor.as_ref().map_or(Mode::Min, |m| m.mode),
        })
    };
    let mut tally: Vec<(Monitor, usize)> = Vec::new();
    for m in jobs.iter().filter_map(key) {
        match tally.iter_mut().find(|(t, _)| *t == m) {
            Some((_, n)) => *n += 1,
            None => tally.push((m, 1)),
        }
    }
    // The first-seen monitor wins a tie: max_by_key keeps the last maximum.
    let primary = tally.iter().rev().max_by_key(|(_, n)| *n).map(|(m, _)| m.clone());
    // On the common monitor: the jobs that completed (or still run), then
    // the pruned ones (stopped early by design: their best is not
    // comparable), then those that failed, timed out, were cancelled or
    // lost partway; then jobs ranked on another metric; then the rest.
    let signed = |j: &JobReport| -> (u8, String, f64) {
        match (key(j), &primary) {
            (Some(m), Some(p)) => {
                let v = j.best.as_ref().map_or(0.0, |b| b.value);
                let v = if m.mode.maximize() { -v } else { v };
                let tier = if m != *p {
                    3
                } else {
                    match j.status {
                        Status::Succeeded | Status::Running | Status::Pending => 0,
                        Status::Pruned => 1,
                        _ => 2,
                    }
                };
                (tier, m.metric, v)
            }
            _ => (4, String::new(), 0.0),
        }
    };
    // Stable: equal values keep the batch's order.
    jobs.sort_by(|a, b| {
        let (a, b) = (signed(a), signed(b));
        a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.total_cmp(&b.2))
    });
    for (i, j) in jobs.iter_mut().enumerate() {
        j.rank = j.best.is_some().then_some(i + 1);
    }
    primary
}

fn order_groups(mut groups: Vec<Group>, ranking: Option<&Monitor>) -> Vec<Group> {
    let max = ranking.is_some_and(|m| m.mode.maximize());
    groups.sort_by(|a, b| match (a.mean, b.mean) {
        (Some(x), Some(y)) if max => y.total_cmp(&x),
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_standard_deviation_divides_by_n_minus_one() {
        let (m, s) = mean_std(&[0.80, 0.82, 0.84]);
        assert!((m.unwrap() - 0.82).abs() < 1e-12);
        assert!((s.unwrap() - 0.02).abs() < 1e-12);
        let (m, s) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, Some(5.0));
        assert!((s.unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[1.5]), (Some(1.5), None));
        assert_eq!(mean_std(&[]), (None, None));
    }

    #[test]
    fn a_warm_start_that_did_not_fit_reads_as_the_cold_start_it_was() {
        let warm = serde_json::json!({"kind": "warm", "batch": "b1", "checkpoint": "checkpoints/best.ckpt"});
        let cold = serde_json::json!({"kind": "cold", "why": "the warm-start checkpoint did not fit the model"});
        assert_eq!(started_from(Some(&warm), None), Some(warm.clone()));
        assert_eq!(started_from(Some(&warm), Some(cold.clone())), Some(cold.clone()));
        assert_eq!(
            started_from(Some(&warm), Some(serde_json::json!({"kind": "warm"}))),
            Some(warm)
        );
        assert_eq!(started_from(None, Some(cold)), None, "no warm_start, nothing to say");
    }

    #[test]
    fn group_names_drop_the_fold() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(group_name(&names(&["lr-0.1_fold-0", "lr-0.1_fold-1"])), "lr-0.1");
        assert_eq!(group_name(&names(&["cv_a", "cv_b"])), "cv");
        assert_eq!(group_name(&names(&["x", "y"])), "x");
    }

    #[test]
    fn fold_key_ignores_name_attempt_and_fold_only() {
        let a = serde_json::json!({"name": "a_fold-0", "attempt": 1, "image": "i",
            "train": {"lr": 0.1, "cv": {"folds": 3, "fold": 0}}, "swept": {"train.lr": 0.1},
            "prune": {"method": "asha", "group": "a/fold-0"}});
        let mut b = a.clone();
        b["name"] = "a_fold-1".into();
        b["prune"]["group"] = "a/fold-1".into();
        b["attempt"] = 2.into();
        b["train"]["cv"]["fold"] = 1.into();
        assert_eq!(fold_key(&a), fold_key(&b));
        b["train"]["lr"] = 0.2.into();
        assert_ne!(fold_key(&a), fold_key(&b));
        assert_eq!(fold_key(&serde_json::json!({"train": {"lr": 1}})), None);
    }

    fn job(name: &str, metric: &str, mode: Mode, value: Option<f64>) -> JobReport {
        JobReport {
            rank: None,
            name: name.into(),
            status: Status::Succeeded,
            attempt: 1,
            exit_code: Some(0),
            oom_killed: false,
            error: None,
            started_at: None,
            finished_at: None,
            duration_seconds: None,
            gpus: 0,
            gpu_share: None,
            monitor: Some(Monitor {
                metric: metric.into(),
                mode,
            }),
            stop_reason: None,
            epochs: None,
            best: value.map(|value| Best {
                metric: metric.into(),
                value,
                epoch: None,
                step: None,
                source: "result.json".into(),
            }),
            final_metrics: Map::new(),
            test: Map::new(),
            swept: Map::new(),
            config: BTreeMap::new(),
            group: None,
            metrics: MetricsInfo::default(),
            problems: Vec::new(),
            stderr_tail: Vec::new(),
            warm_start: None,
            series: BTreeMap::new(),
            step_series: BTreeMap::new(),
        }
    }

    #[test]
    fn ranks_on_the_common_monitor_then_others_then_none() {
        let mut jobs = vec![
            job("none", "val_loss", Mode::Min, None),
            job("iou", "val_iou", Mode::Max, Some(0.9)),
            job("b", "val_loss", Mode::Min, Some(0.3)),
            job("a", "val_loss", Mode::Min, Some(0.2)),
            job("c", "val_loss", Mode::Min, Some(0.3)),
        ];
        let primary = rank(&mut jobs).unwrap();
        assert_eq!(
            primary,
            Monitor {
                metric: "val_loss".into(),
                mode: Mode::Min
            }
        );
        let order: Vec<(&str, Option<usize>)> = jobs.iter().map(|j| (j.name.as_str(), j.rank)).collect();
        assert_eq!(
            order,
            [
                ("a", Some(1)),
                ("b", Some(2)),
                ("c", Some(3)),
                ("iou", Some(4)),
                ("none", None)
            ]
        );

        let mut jobs = vec![
            job("lo", "acc", Mode::Max, Some(0.5)),
            job("hi", "acc", Mode::Max, Some(0.7)),
        ];
        rank(&mut jobs);
        assert_eq!(jobs[0].name, "hi", "max mode ranks the highest first");
    }
}
