//! What the report compares across jobs: each job's configuration,
//! flattened into keys (`train.lr`, `args.model.learning_rate`,
//! `env.SEED`, `image`, …) so that the keys whose values differ become the
//! jobs table's columns and the rest the batch's common settings; the test
//! scores; the few metrics the `final` column shows; and, for each swept
//! key, how the monitored metric depends on its value ("what mattered").

use super::model::{JobReport, Monitor};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Keys of `job.json` that say what a job is (not where it ran or who it is).
const JOB_KEYS: [&str; 8] = [
    "image",
    "gpus",
    "cpus",
    "memory",
    "shm_size",
    "time_limit",
    "network",
    "code",
];

/// A job's configuration as flat keys, from its `job.json`: the job keys
/// above, `command` (without the options `args` appended), `mounts`,
/// `env.*`, `train.*` (nested tables by dotted path) and `args.*`. Never a
/// `pass_env` value (job.json has only their names).
pub fn config_of(job: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let Some(obj) = job.as_object() else { return out };
    for k in JOB_KEYS {
        if let Some(v) = obj.get(k).filter(|v| !v.is_null()) {
            out.insert(k.to_string(), v.clone());
        }
    }
    let args = obj.get("args").and_then(Value::as_object);
    if let Some(cmd) = obj.get("command").and_then(Value::as_array) {
        let base = cmd.len() - args.map_or(0, |a| a.len()).min(cmd.len());
        let words: Vec<String> = cmd[..base]
            .iter()
            .map(|w| w.as_str().map_or_else(|| w.to_string(), String::from))
            .collect();
        out.insert("command".into(), Value::String(words.join(" ")));
    }
    if let Some(mounts) = obj.get("mounts").and_then(Value::as_array).filter(|m| !m.is_empty()) {
        let shown: Vec<String> = mounts
            .iter()
            .map(|m| {
                format!(
                    "{}:{}",
                    m["host"].as_str().unwrap_or_default(),
                    m["container"].as_str().unwrap_or_default()
                )
            })
            .collect();
        out.insert("mounts".into(), Value::String(shown.join(" ")));
    }
    if let Some(env) = obj.get("env").and_then(Value::as_object) {
        for (k, v) in env {
            out.insert(format!("env.{k}"), v.clone());
        }
    }
    if let Some(train) = obj.get("train").filter(|t| t.is_object()) {
        flatten("train", train, &mut out);
    }
    for (k, v) in args.into_iter().flatten() {
        out.insert(format!("args.{k}"), v.clone());
    }
    out
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// How the jobs' configurations compare.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    /// The keys that tell jobs apart: swept keys first (in the order they
    /// were first seen), then the others sorted.
    pub keys: Vec<String>,
    /// Keys with one value in every job that has them.
    pub common: BTreeMap<String, Value>,
    /// Of those, the ones only some jobs have: how many.
    pub common_in: BTreeMap<String, usize>,
}

/// A key tells jobs apart when two jobs have different values of it, or
/// when only some jobs have it — except a `train.*` key that every job
/// with a `train` table has, with one value: a common setting of the
/// trainer jobs (the others are not trainer jobs).
pub fn columns(configs: &[&BTreeMap<String, Value>], swept: &[String]) -> Columns {
    let mut all: Vec<&String> = configs.iter().flat_map(|c| c.keys()).collect();
    all.sort();
    all.dedup();
    let trainers = configs
        .iter()
        .filter(|c| c.keys().any(|k| k.starts_with("train.")))
        .count();
    let mut differing = Vec::new();
    let mut out = Columns::default();
    for k in all {
        let present: Vec<&Value> = configs.iter().filter_map(|c| c.get(k)).collect();
        let one_value = present.windows(2).all(|w| w[0] == w[1]);
        let everywhere = present.len() == configs.len();
        let in_every_trainer = k.starts_with("train.") && present.len() == trainers;
        if configs.len() > 1 && (!one_value || (!everywhere && !in_every_trainer)) {
            differing.push(k.clone());
        } else if let Some(v) = present.first() {
            out.common.insert(k.clone(), (*v).clone());
            if !everywhere {
                out.common_in.insert(k.clone(), present.len());
            }
        }
    }
    out.keys = swept.iter().filter(|k| differing.contains(k)).cloned().collect();
    out.keys.extend(differing.into_iter().filter(|k| !swept.contains(k)));
    out
}

/// Longest configuration value the tables show in full.
const SHOWN_CHARS: usize = 120;

/// A configuration value for the tables: as written (sizes and durations
/// as a person reads them: job.json keeps bytes and seconds), a long one
/// cut short (report.json and report.csv have it whole and raw).
pub fn show(key: &str, v: &Value) -> String {
    let text = match (key, v.as_u64(), v.as_f64()) {
        ("memory" | "shm_size", Some(b), _) => crate::human::bytes(b),
        ("time_limit", _, Some(s)) => crate::human::seconds(s),
        _ => super::fmt_swept(v),
    };
    if text.chars().count() <= SHOWN_CHARS {
        return text;
    }
    let cut: String = text.chars().take(SHOWN_CHARS - 1).collect();
    format!("{cut}…")
}

/// A test score's name: `test_*` (or `test/*`).
pub fn is_test(name: &str) -> bool {
    name.starts_with("test_") || name.starts_with("test/")
}

/// A validation metric's name.
pub fn is_validation(name: &str) -> bool {
    ["val_", "val/", "valid_", "validation_"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Most test columns the tables show (report.json has them all).
pub const MAX_TEST_COLUMNS: usize = 6;

/// The test scores the jobs have, in the order the tables show them.
pub fn test_keys(jobs: &[JobReport]) -> Vec<String> {
    let mut keys: Vec<String> = jobs.iter().flat_map(|j| j.test.keys().cloned()).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// What the `final` column shows: the monitored metric, then at most three
/// other validation or test metrics.
pub fn final_short(final_metrics: &Map<String, Value>, monitor: Option<&Monitor>) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    let number = |k: &str| final_metrics.get(k).and_then(Value::as_f64);
    if let Some(m) = monitor
        && let Some(v) = number(&m.metric)
    {
        out.push((m.metric.clone(), v));
    }
    for (k, v) in final_metrics {
        if out.len() >= 4 {
            break;
        }
        if Some(k.as_str()) == monitor.map(|m| m.metric.as_str()) || !(is_validation(k) || is_test(k)) {
            continue;
        }
        if let Some(v) = v.as_f64() {
            out.push((k.clone(), v));
        }
    }
    out
}

/// A number to four significant digits: `0.04456`, `12.35`, `1.235e6`.
pub fn sig4(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { v.to_string() };
    }
    let mag = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&mag) {
        return format!("{v:.3e}");
    }
    let decimals = (3 - mag).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// How the monitored metric depends on one swept key.
#[derive(Debug, Clone, Serialize)]
pub struct Factor {
    pub key: String,
    /// Best level first; a numeric key with many values (a random search)
    /// is binned into ranges of about equally many jobs, in value order.
    pub levels: Vec<Level>,
    /// Between the best and the worst level's mean.
    pub spread: Option<f64>,
    /// The share of the variance of the jobs' best values that lies
    /// between the levels, corrected for chance (ω², 0 to 1): how much of
    /// the differences this key explains. Factors are sorted by it.
    pub explained: Option<f64>,
    /// Whether the levels are ranges of values.
    pub binned: bool,
}

/// One value of a swept key (or a range of them), and the best monitored
/// values of the jobs that had it.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub value: Value,
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n − 1); none below two jobs.
    pub std: Option<f64>,
    pub best: f64,
    pub jobs: Vec<String>,
}

/// A level's mean, with its standard deviation when it has one.
pub fn level_mean(l: &Level) -> String {
    match l.std {
        Some(s) => format!("{} ± {}", super::fmt_value(l.mean), super::fmt_value(s)),
        None => super::fmt_value(l.mean),
    }
}

/// More distinct numeric values than this and a key's levels are ranges.
const MAX_LEVELS: usize = 8;
/// How many ranges a binned key gets.
const BINS: usize = 5;

/// For each swept key with more than one value (a fold index is not a
/// choice: it is left out), the mean ± std of the ranked jobs' best values
/// per value; the keys that explain most of the differences first.
pub fn mattered(jobs: &[JobReport], swept: &[String], ranking: Option<&Monitor>) -> Vec<Factor> {
    let Some(m) = ranking else { return Vec::new() };
    let mut factors = Vec::new();
    for key in swept.iter().filter(|k| *k != "train.cv.fold") {
        // Pruned jobs stopped early: their best is not comparable.
        let points: Vec<(&Value, f64, &str)> = jobs
            .iter()
            .filter(|j| j.status != crate::run::Status::Pruned)
            .filter_map(|j| {
                let (v, b) = (j.swept.get(key)?, j.best.as_ref()?);
                (b.metric == m.metric).then_some((v, b.value, j.name.as_str()))
            })
            .collect();
        let (groups, binned) = group_levels(&points);
        if groups.len() < 2 {
            continue;
        }
        let mut levels: Vec<Level> = groups.into_iter().map(|(value, list)| level(value, &list, m)).collect();
        if !binned {
            levels.sort_by(|a, b| {
                if m.mode.maximize() {
                    b.mean.total_cmp(&a.mean)
                } else {
                    a.mean.total_cmp(&b.mean)
                }
            });
        }
        let means = levels.iter().map(|l| l.mean);
        let (lo, hi) = means.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
        factors.push(Factor {
            key: key.clone(),
            spread: Some(hi - lo),
            explained: explained(&levels, &points),
            levels,
            binned,
        });
    }
    factors.sort_by(|a, b| {
        let rank = |f: &Factor| (f.explained.unwrap_or(0.0), f.spread.unwrap_or(0.0));
        let (ra, rb) = (rank(a), rank(b));
        rb.0.total_cmp(&ra.0).then(rb.1.total_cmp(&ra.1))
    });
    factors
}

/// One line on a factor: how much it explains, and how far its levels lie.
pub fn factor_note(f: &Factor) -> String {
    let mut parts = Vec::new();
    if let Some(e) = f.explained {
        parts.push(format!(
            "{} explains {:.0}% of the variance between jobs (ω²)",
            f.key,
            e * 100.0
        ));
    }
    if let Some(s) = f.spread {
        parts.push(format!("best and worst level {} apart", super::fmt_value(s)));
    }
    if f.binned {
        let jobs: usize = f.levels.iter().map(|l| l.n).sum();
        parts.push(format!("{jobs} jobs in {} ranges of its values", f.levels.len()));
    }
    parts.join("; ")
}

type Group<'a> = (Value, Vec<(f64, &'a str)>);

/// The jobs' best values by level: one per distinct value, in the order
/// first seen; or, for a numeric key with more than `MAX_LEVELS` values,
/// `BINS` ranges of about equally many jobs, in value order.
fn group_levels<'a>(points: &[(&Value, f64, &'a str)]) -> (Vec<Group<'a>>, bool) {
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut groups: Vec<Group<'a>> = Vec::new();
    for (v, best, name) in points {
        let i = *index.entry(v.to_string()).or_insert_with(|| {
            groups.push(((*v).clone(), Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push((*best, name));
    }
    let numeric = points.iter().all(|(v, _, _)| v.is_number());
    if groups.len() <= MAX_LEVELS || !numeric {
        return (groups, false);
    }
    let mut sorted: Vec<(f64, f64, &'a str)> = points
        .iter()
        .map(|(v, b, n)| (v.as_f64().unwrap_or(f64::NAN), *b, *n))
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut bins: Vec<Group<'a>> = Vec::new();
    let mut start = 0;
    for b in 1..=BINS {
        let mut end = sorted.len() * b / BINS;
        // Equal values stay in one range.
        while end < sorted.len() && end > 0 && sorted[end].0 == sorted[end - 1].0 {
            end += 1;
        }
        if end <= start {
            continue;
        }
        let slice = &sorted[start..end];
        let (a, z) = (slice[0].0, slice[slice.len() - 1].0);
        let label = if a == z {
            sig4(a)
        } else {
            format!("{} – {}", sig4(a), sig4(z))
        };
        bins.push((Value::String(label), slice.iter().map(|(_, b, n)| (*b, *n)).collect()));
        start = end;
    }
    (bins, true)
}

fn level(value: Value, list: &[(f64, &str)], m: &Monitor) -> Level {
    let values: Vec<f64> = list.iter().map(|(v, _)| *v).collect();
    let (mean, std) = super::model::mean_std(&values);
    let best = if m.mode.maximize() {
        values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    } else {
        values.iter().copied().fold(f64::INFINITY, f64::min)
    };
    Level {
        value,
        n: values.len(),
        mean: mean.expect("a level has a value"),
        std,
        best,
        jobs: list.iter().map(|(_, n)| n.to_string()).collect(),
    }
}

/// ω²: the share of the variance that lies between the levels, corrected
/// for chance (η², the plain share, grows with the number of levels even
/// when they do not matter: a swept seed with 8 values would "explain"
/// half of 16 jobs' differences). None when the values do not vary, or
/// with no two jobs at any level to measure the variance within.
fn explained(levels: &[Level], points: &[(&Value, f64, &str)]) -> Option<f64> {
    let (n, k) = (points.len() as f64, levels.len() as f64);
    if n <= k {
        return None;
    }
    let grand = points.iter().map(|p| p.1).sum::<f64>() / n;
    let total: f64 = points.iter().map(|p| (p.1 - grand).powi(2)).sum();
    let between: f64 = levels.iter().map(|l| l.n as f64 * (l.mean - grand).powi(2)).sum();
    let within_mean_square = (total - between).max(0.0) / (n - k);
    let omega = (between - (k - 1.0) * within_mean_square) / (total + within_mean_square);
    (total > 0.0 && total.is_finite()).then(|| omega.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_job_json_flattens_into_keys() {
        let job = json!({"name": "a", "attempt": 2, "image": "img", "gpus": 1, "cpus": null, "memory": 1024,
            "command": ["python", "m.py", "--lr=0.1"], "args": {"lr": 0.1}, "env": {"SEED": "1"},
            "pass_env": ["TOKEN"], "mounts": [{"host": "/d", "container": "/data", "options": "ro"}],
            "train": {"model": "unet", "model_args": {"channels": 16}, "cv": {"folds": 3, "fold": 1}},
            "swept": {"train.model_args.channels": 16}});
        let c = config_of(&job);
        let keys: Vec<&str> = c.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "args.lr",
                "command",
                "env.SEED",
                "gpus",
                "image",
                "memory",
                "mounts",
                "train.cv.fold",
                "train.cv.folds",
                "train.model",
                "train.model_args.channels",
            ]
        );
        assert_eq!(c["command"], "python m.py");
        assert_eq!(c["mounts"], "/d:/data");
        assert!(!c.contains_key("pass_env") && !c.contains_key("name"));
    }

    #[test]
    fn differing_keys_are_columns_swept_first_and_the_rest_is_common() {
        let config = |pairs: &[(&str, Value)]| -> BTreeMap<String, Value> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
        };
        let a = config(&[
            ("image", json!("x")),
            ("train.lr", json!(0.1)),
            ("gpus", json!(1)),
            ("train.model", json!("unet")),
        ]);
        let b = config(&[
            ("image", json!("y")),
            ("train.lr", json!(0.2)),
            ("gpus", json!(1)),
            ("train.model", json!("unet")),
        ]);
        // A command job: no train table, a command of its own.
        let c = config(&[("image", json!("y")), ("gpus", json!(1)), ("command", json!("echo"))]);
        let cols = columns(&[&a, &b, &c], &["train.lr".to_string()]);
        assert_eq!(cols.keys, ["train.lr", "command", "image"]);
        assert_eq!(
            cols.common,
            config(&[("gpus", json!(1)), ("train.model", json!("unet"))])
        );
        assert_eq!(cols.common_in, BTreeMap::from([("train.model".to_string(), 2)]));
        // An env variable or option only some jobs set tells them apart;
        // a train key a trainer job lacks does too.
        let d = config(&[
            ("image", json!("x")),
            ("train.lr", json!(0.1)),
            ("env.SEED", json!("1")),
        ]);
        let e = config(&[
            ("image", json!("x")),
            ("train.lr", json!(0.1)),
            ("train.model", json!("unet")),
        ]);
        let cols = columns(&[&d, &e], &[]);
        assert_eq!(cols.keys, ["env.SEED", "train.model"]);
        assert_eq!(cols.common, config(&[("image", json!("x")), ("train.lr", json!(0.1))]));
    }

    #[test]
    fn four_significant_digits() {
        assert_eq!(sig4(0.044561), "0.04456");
        assert_eq!(sig4(12.3456), "12.35");
        assert_eq!(sig4(0.5), "0.5");
        assert_eq!(sig4(0.0), "0");
        assert_eq!(sig4(1234567.0), "1.235e6");
        assert_eq!(sig4(0.00001234), "1.234e-5");
    }

    #[test]
    fn the_final_column_keeps_the_monitor_and_three_more() {
        let f: Map<String, Value> = serde_json::from_value(json!({"lr": 0.0, "train_loss": 0.1, "val_a": 1,
            "val_b": 2, "val_c": 3, "val_d": 4, "val_loss": 0.5, "test_x": 9}))
        .unwrap();
        let m = Monitor {
            metric: "val_loss".into(),
            mode: crate::metrics::Mode::Min,
        };
        let shown: Vec<String> = final_short(&f, Some(&m)).into_iter().map(|(k, _)| k).collect();
        assert_eq!(shown, ["val_loss", "test_x", "val_a", "val_b"]);
    }

    #[test]
    fn many_numeric_values_are_binned_and_eta_squared_measures_them() {
        let values: Vec<Value> = (0..20).map(|i| json!(i as f64 / 10.0)).collect();
        let names: Vec<String> = (0..20).map(|i| format!("j{i}")).collect();
        // The best value rises with the key: most of the variance lies
        // between the ranges.
        let points: Vec<(&Value, f64, &str)> = (0..20)
            .map(|i| (&values[i], i as f64 + (i % 2) as f64 * 0.5, names[i].as_str()))
            .collect();
        let (groups, binned) = group_levels(&points);
        assert!(binned);
        assert_eq!(groups.len(), BINS);
        assert_eq!(groups[0].0, json!("0 – 0.3"));
        assert_eq!(groups.iter().map(|g| g.1.len()).sum::<usize>(), 20);
        let m = Monitor {
            metric: "val_loss".into(),
            mode: crate::metrics::Mode::Min,
        };
        let levels: Vec<Level> = groups.into_iter().map(|(v, l)| level(v, &l, &m)).collect();
        let e = explained(&levels, &points).unwrap();
        assert!(e > 0.85 && e <= 1.0, "{e}");
        // A key whose levels do not differ explains nothing.
        let a = json!("a");
        let b = json!("b");
        let flat = [(&a, 1.0, "x"), (&b, 1.0, "y"), (&a, 2.0, "z"), (&b, 2.0, "w")];
        let (groups, binned) = group_levels(&flat);
        assert!(!binned);
        let levels: Vec<Level> = groups.into_iter().map(|(v, l)| level(v, &l, &m)).collect();
        assert_eq!(explained(&levels, &flat), Some(0.0));
        let same = [(&a, 1.0, "x"), (&b, 1.0, "y"), (&b, 1.0, "z")];
        let (groups, _) = group_levels(&same);
        let levels: Vec<Level> = groups.into_iter().map(|(v, l)| level(v, &l, &m)).collect();
        assert_eq!(explained(&levels, &same), None, "no variance to explain");
        let one_each = [(&a, 1.0, "x"), (&b, 2.0, "y")];
        let (groups, _) = group_levels(&one_each);
        let levels: Vec<Level> = groups.into_iter().map(|(v, l)| level(v, &l, &m)).collect();
        assert_eq!(
            explained(&levels, &one_each),
            None,
            "one job a level: no variance within to compare"
        );
        // Noise alone: eight levels of two jobs each, values unrelated to
        // the key, explain (almost) nothing.
        let keys: Vec<Value> = (0..8).map(|i| json!(i)).collect();
        let noise: Vec<(&Value, f64, &str)> = (0..16)
            .map(|i| (&keys[i % 8], [0.3, 0.1, 0.4, 0.15, 0.5, 0.9, 0.2, 0.6][i / 2], "j"))
            .collect();
        let (groups, _) = group_levels(&noise);
        let levels: Vec<Level> = groups.into_iter().map(|(v, l)| level(v, &l, &m)).collect();
        let e = explained(&levels, &noise).unwrap();
        assert!(e < 0.2, "{e}");
    }
}
