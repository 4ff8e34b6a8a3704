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
const JOB_KEYS: [&str; 8] = ["image", "gpus", "cpus", "memory", "shm_size", "time_limit", "network", "code"];

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
/// when it is a job key (`image`, `command`, …) that only some jobs set.
/// A `train.*`, `args.*` or `env.*` key that only some jobs have, with one
/// value, is a common setting of those jobs.
pub fn columns(configs: &[&BTreeMap<String, Value>], swept: &[String]) -> Columns {
    let mut all: Vec<&String> = configs.iter().flat_map(|c| c.keys()).collect();
    all.sort();
    all.dedup();
    let mut differing = Vec::new();
    let mut out = Columns::default();
    for k in all {
        let present: Vec<&Value> = configs.iter().filter_map(|c| c.get(k)).collect();
        let one_value = present.windows(2).all(|w| w[0] == w[1]);
        let nested = ["train.", "args.", "env."].iter().any(|p| k.starts_with(p));
        let everywhere = present.len() == configs.len();
        if configs.len() > 1 && (!one_value || (!everywhere && !nested)) {
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

/// A configuration value for the tables: as written, a long one cut short
/// (report.json and report.csv have it whole).
pub fn show(v: &Value) -> String {
    let text = super::fmt_swept(v);
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
    ["val_", "val/", "valid_", "validation_"].iter().any(|p| name.starts_with(p))
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
    /// Best level first.
    pub levels: Vec<Level>,
    /// Between the best and the worst level's mean.
    pub spread: Option<f64>,
}

/// One value of a swept key, and the best monitored values of the jobs
/// that had it.
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

/// For each swept key with more than one value (a fold index is not a
/// choice: it is left out), the mean ± std of the ranked jobs' best values
/// per value; the keys that matter most first.
pub fn mattered(jobs: &[JobReport], swept: &[String], ranking: Option<&Monitor>) -> Vec<Factor> {
    let Some(m) = ranking else { return Vec::new() };
    let mut factors = Vec::new();
    for key in swept.iter().filter(|k| *k != "train.cv.fold") {
        let mut by_value: Vec<(Value, Vec<(f64, String)>)> = Vec::new();
        for j in jobs {
            let (Some(v), Some(b)) = (j.swept.get(key), &j.best) else { continue };
            if b.metric != m.metric {
                continue;
            }
            match by_value.iter_mut().find(|(x, _)| x == v) {
                Some((_, list)) => list.push((b.value, j.name.clone())),
                None => by_value.push((v.clone(), vec![(b.value, j.name.clone())])),
            }
        }
        if by_value.len() < 2 {
            continue;
        }
        let mut levels: Vec<Level> = by_value
            .into_iter()
            .map(|(value, list)| {
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
                    jobs: list.into_iter().map(|(_, n)| n).collect(),
                }
            })
            .collect();
        levels.sort_by(|a, b| {
            if m.mode.maximize() {
                b.mean.total_cmp(&a.mean)
            } else {
                a.mean.total_cmp(&b.mean)
            }
        });
        let spread = Some((levels[0].mean - levels[levels.len() - 1].mean).abs());
        factors.push(Factor {
            key: key.clone(),
            levels,
            spread,
        });
    }
    factors.sort_by(|a, b| b.spread.unwrap_or(0.0).total_cmp(&a.spread.unwrap_or(0.0)));
    factors
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
        let a = config(&[("image", json!("x")), ("train.lr", json!(0.1)), ("gpus", json!(1)), ("train.model", json!("unet"))]);
        let b = config(&[("image", json!("y")), ("train.lr", json!(0.2)), ("gpus", json!(1)), ("train.model", json!("unet"))]);
        // A command job: no train table, a command of its own.
        let c = config(&[("image", json!("y")), ("gpus", json!(1)), ("command", json!("echo"))]);
        let cols = columns(&[&a, &b, &c], &["train.lr".to_string()]);
        assert_eq!(cols.keys, ["train.lr", "command", "image"]);
        assert_eq!(
            cols.common,
            config(&[("gpus", json!(1)), ("train.model", json!("unet"))])
        );
        assert_eq!(cols.common_in, BTreeMap::from([("train.model".to_string(), 2)]));
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
            "val_b": 2, "val_c": 3, "val_d": 4, "val_loss": 0.5, "test_x": 9})).unwrap();
        let m = Monitor {
            metric: "val_loss".into(),
            mode: crate::metrics::Mode::Min,
        };
        let shown: Vec<String> = final_short(&f, Some(&m)).into_iter().map(|(k, _)| k).collect();
        assert_eq!(shown, ["val_loss", "test_x", "val_a", "val_b"]);
    }
}
