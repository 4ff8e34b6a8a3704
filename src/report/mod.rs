//! The batch report (docs/run-directory.md): `report.md`, `report.json` and
//! `report.html` in the batch directory, made from its files alone, and the
//! short summary printed when a batch ends.

mod charts;
pub mod compare;
mod csv;
mod html;
mod markdown;
pub mod model;
pub(crate) mod tail;

pub use model::{Best, Group, JobReport, Mode, Monitor, Report, build, build_at};

use crate::run::{BatchDir, write_atomic};
use serde_json::Value;
use std::path::PathBuf;

/// A report file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Md,
    Json,
    Html,
    /// The jobs table, for a spreadsheet or pandas.
    Csv,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Md, Format::Json, Format::Html, Format::Csv];

    pub fn file_name(self) -> &'static str {
        match self {
            Format::Md => "report.md",
            Format::Json => "report.json",
            Format::Html => "report.html",
            Format::Csv => "report.csv",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Format> {
        match s {
            "md" | "markdown" => Ok(Format::Md),
            "json" => Ok(Format::Json),
            "html" => Ok(Format::Html),
            "csv" => Ok(Format::Csv),
            _ => anyhow::bail!("unknown report format `{s}`; use md, json, html or csv"),
        }
    }
}

/// Reads the batch directory and writes the report in `formats`; returns
/// the files written.
pub fn write(dir: &BatchDir, formats: &[Format]) -> anyhow::Result<Vec<PathBuf>> {
    let report = build(dir)?;
    write_report(dir, &report, formats)
}

/// Writes an already built report, each file atomically.
pub fn write_report(dir: &BatchDir, report: &Report, formats: &[Format]) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for &format in formats {
        let bytes = render(report, format)?;
        let path = dir.path.join(format.file_name());
        write_atomic(&path, &bytes)?;
        written.push(path);
    }
    Ok(written)
}

/// The report as the bytes of one file.
pub fn render(report: &Report, format: Format) -> anyhow::Result<Vec<u8>> {
    Ok(match format {
        Format::Md => markdown::render(report).into_bytes(),
        Format::Json => {
            let mut v = serde_json::to_vec_pretty(report)?;
            v.push(b'\n');
            v
        }
        Format::Html => html::render(report)?.into_bytes(),
        Format::Csv => csv::render(report)?,
    })
}

/// Where each job's metrics came from, as lines for people: one line when
/// every job read the same kind of file, else one per job; and for each
/// job without metrics, where tb looked and how a command can emit them.
pub(crate) fn metrics_notes(report: &Report) -> Vec<String> {
    use crate::metrics::Source;
    // Jobs by where their metrics came from (and what else was found), and
    // the jobs with none by where tb looked: one line each, however many
    // jobs (report.json has each job's files).
    // (source, the others found) → jobs
    type From<'a> = ((Source, Vec<Source>), Vec<&'a str>);
    let mut from: Vec<From> = Vec::new();
    let mut none: Vec<(Vec<&str>, Vec<&str>)> = Vec::new();
    for j in &report.jobs {
        match j.metrics.source {
            Some(s) => {
                let key = (s, j.metrics.unused.clone());
                match from.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, names)) => names.push(&j.name),
                    None => from.push((key, vec![&j.name])),
                }
            }
            None if !j.status.is_final() => {}
            None => match none.iter_mut().find(|(k, _)| *k == j.metrics.looked) {
                Some((_, names)) => names.push(&j.name),
                None => none.push((j.metrics.looked.clone(), vec![&j.name])),
            },
        }
    }
    let mut lines = Vec::new();
    if let [((only, unused), _)] = from.as_slice()
        && unused.is_empty()
    {
        lines.push(format!("Metrics read from {}.", only.looked()));
    } else {
        for ((source, unused), names) in &from {
            let mut line = format!("Metrics from {} for {}", source.looked(), some_jobs(names));
            if !unused.is_empty() {
                let also: Vec<&str> = unused.iter().map(|u| u.as_str()).collect();
                line.push_str(&format!(" (also found, not used: {})", also.join(", ")));
            }
            line.push('.');
            lines.push(line);
        }
    }
    let diverging: Vec<String> = report
        .jobs
        .iter()
        .filter(|j| j.metrics.non_finite > 0)
        .map(|j| format!("{} ({})", j.name, j.metrics.non_finite))
        .collect();
    if !diverging.is_empty() {
        let shown: Vec<&str> = diverging.iter().map(String::as_str).collect();
        lines.push(format!(
            "Values that were NaN or infinite (a run diverging), left out of the curves, in {}.",
            some_jobs(&shown)
        ));
    }
    for (looked, names) in none {
        lines.push(format!(
            "No metrics found for {}; tb looked for {}. A command reports metrics by printing \
             `epoch=N name=value` lines, logging with Lightning's TensorBoardLogger or CSVLogger, \
             or writing metrics.jsonl (docs/metrics.md).",
            some_jobs(&names),
            looked.join(", ")
        ));
    }
    lines
}

/// Under `warm_start` and `[batch.deploy]`, as lines for people: which jobs
/// started from which earlier batch and which started cold (and why), and
/// the deploy decision.
pub(crate) fn retraining_lines(report: &Report) -> Vec<String> {
    let mut warm: Vec<(String, Vec<&str>)> = Vec::new();
    let mut cold: Vec<(String, Vec<&str>)> = Vec::new();
    for j in &report.jobs {
        let Some(w) = &j.warm_start else { continue };
        let text = |k: &str| w.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let (groups, key) = match w.get("kind").and_then(Value::as_str) {
            Some("warm") => (&mut warm, text("batch")),
            _ => (&mut cold, text("why")),
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, names)) => names.push(&j.name),
            None => groups.push((key, vec![&j.name])),
        }
    }
    let mut lines: Vec<String> = warm
        .iter()
        .map(|(batch, names)| {
            format!(
                "Warm start: {} from the best checkpoints of batch {batch}.",
                some_jobs(names)
            )
        })
        .collect();
    lines.extend(
        cold.iter()
            .map(|(why, names)| format!("Cold start: {}: {why}.", some_jobs(names))),
    );
    if let Some(d) = &report.deploy {
        lines.extend(deploy_lines(d));
    }
    lines
}

/// `deploy.json` in words.
fn deploy_lines(d: &Value) -> Vec<String> {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let side = |k: &str| d.get(k).filter(|s| s.is_object());
    let who = |s: &Value| format!("{} of batch {}", text(s, "job"), text(s, "batch"));
    let dir = text(d, "dir");
    let why = text(d, "why");
    let forced = if d.get("forced").and_then(Value::as_bool) == Some(true) {
        " (forced)"
    } else {
        ""
    };
    let decision = text(d, "decision");
    let mut lines = vec![match (decision.as_str(), side("deployed")) {
        ("promoted", _) => format!(
            "Deployed{forced}: {} is the model in {dir}/current now: {why}.",
            side("candidate").map_or("none".into(), who)
        ),
        ("kept", Some(deployed)) => format!(
            "Not deployed: the deployed model ({}) stays in {dir}: {why}.",
            who(deployed)
        ),
        ("kept", None) => format!(
            "Not deployed: {} did not go into {dir}: {why}.",
            side("candidate").map_or("none".into(), who)
        ),
        ("skipped", _) => format!("Not deployed: {why}."),
        ("interrupted", _) => format!("Deploy interrupted, nothing changed in {dir}: {why}."),
        _ => format!("Deploy failed, nothing changed in {dir}: {why}."),
    }];
    // The export matters for the model that serves: a promoted one.
    if decision == "promoted"
        && let Some(ts) = d.get("export").and_then(|e| e.get("torchscript"))
    {
        lines.push(match (ts.get("method").and_then(Value::as_str), ts.get("error")) {
            (Some("script"), _) => "TorchScript: model.pt, scripted.".into(),
            (Some(m), _) => format!("TorchScript: model.pt, {m}d: {}.", text(ts, "not_scripted")),
            (None, Some(e)) => format!("TorchScript: not exported: {}.", e.as_str().unwrap_or_default()),
            (None, None) => "TorchScript: not exported.".into(),
        });
    }
    for w in d.get("warnings").and_then(Value::as_array).into_iter().flatten() {
        lines.push(format!("Deploy warning: {}.", w.as_str().unwrap_or_default()));
    }
    lines
}

/// Jobs named in a note at most.
const NAMED_JOBS: usize = 8;

/// `a, b and c`; `1 job (a)`; past [`NAMED_JOBS`], `40 jobs (a, b, … and 32 more)`.
fn some_jobs(names: &[&str]) -> String {
    let n = names.len();
    let listed = if n <= NAMED_JOBS {
        names.join(", ")
    } else {
        format!("{}, … and {} more", names[..NAMED_JOBS].join(", "), n - NAMED_JOBS)
    };
    format!("{n} job{} ({listed})", if n == 1 { "" } else { "s" })
}

/// Failures the summary names one by one; the rest are counted.
const SUMMARY_FAILURES: usize = 10;

/// The few lines printed when a batch ends: the counts, the best job, each
/// failure with its reason, and where the report is (`written`).
pub fn summary_lines(report: &Report, written: &[PathBuf]) -> Vec<String> {
    let mut lines = vec![headline(report)];
    if let Some(best) = report.jobs.first().filter(|j| j.rank.is_some()) {
        let b = best.best.as_ref().expect("a ranked job has a best value");
        lines.push(format!(
            "best: {} {}={}{}",
            best.name,
            b.metric,
            fmt_value(b.value),
            at(b)
        ));
    }
    let failures: Vec<&JobReport> = failures(report).collect();
    for j in failures.iter().take(SUMMARY_FAILURES) {
        lines.push(format!("{}: {}: {}", j.status, j.name, reason(j)));
    }
    if failures.len() > SUMMARY_FAILURES {
        lines.push(format!(
            "… and {} more that did not succeed",
            failures.len() - SUMMARY_FAILURES
        ));
    }
    if let Some(p) = written.first() {
        lines.push(format!("report: {}", p.display()));
    }
    lines
}

/// `12 jobs: 9 succeeded, 2 failed, 1 oom · wall 5h12m · 3.40 GPU-hours`
/// (zero counts left out).
fn headline(report: &Report) -> String {
    let h = &report.headline;
    let counts: Vec<String> = h
        .counts
        .listed()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    format!(
        "{} jobs: {} · wall {} · {:.2} GPU-hours",
        h.jobs,
        if counts.is_empty() {
            "none".into()
        } else {
            counts.join(", ")
        },
        fmt_seconds(h.wall_seconds),
        h.gpu_hours
    )
}

/// Jobs that ended without succeeding, in the ranking's order.
pub(crate) fn failures(report: &Report) -> impl Iterator<Item = &JobReport> {
    report.jobs.iter().filter(|j| is_failure(j))
}

/// Ended, and not by succeeding.
pub(crate) fn is_failure(j: &JobReport) -> bool {
    j.status.is_final() && !j.status.is_fine()
}

/// Why a job did not succeed, in one line.
pub(crate) fn reason(j: &JobReport) -> String {
    let mut why = match (&j.error, j.exit_code) {
        (Some(e), _) => e.lines().next().unwrap_or_default().to_string(),
        (None, Some(c)) => format!("exited with code {c}"),
        (None, None) => j.status.to_string(),
    };
    if j.oom_killed && !why.contains("out of memory") {
        why.push_str(" (out of memory)");
    }
    why
}

/// A metric value, to four decimals where that reads well.
pub(crate) fn fmt_value(v: f64) -> String {
    crate::human::value(v)
}

/// A swept value as written in the batch file: `0.001`, `16`, `adam`.
pub(crate) fn fmt_swept(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn fmt_seconds(s: f64) -> String {
    crate::human::seconds(s)
}

/// ` @ epoch 7`, ` @ step 1200` (a job that logged no epochs), or nothing.
pub(crate) fn at(b: &crate::metrics::Best) -> String {
    match (b.epoch, b.step) {
        (Some(e), _) => format!(" @ epoch {e}"),
        (None, Some(s)) => format!(" @ step {s}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_at_four_decimals_or_in_scientific() {
        assert_eq!(fmt_value(0.82), "0.8200");
        assert_eq!(fmt_value(0.0), "0");
        assert_eq!(fmt_value(12345.678), "12345.6780");
        assert_eq!(fmt_value(0.00001234), "1.234e-5");
        assert_eq!(fmt_value(-2.5e6), "-2.500e6");
    }

    #[test]
    fn a_deploy_in_words() {
        let lines = |d: Value| deploy_lines(&d);
        let ts = serde_json::json!({"torchscript": {"path": "export/model.pt", "method": "script"}});
        let c = serde_json::json!({"job": "a", "batch": "b2"});
        let d = serde_json::json!({"job": "a", "batch": "b1"});
        assert_eq!(
            lines(
                serde_json::json!({"decision": "promoted", "dir": "/d", "why": "better", "candidate": c,
                "export": ts, "warnings": ["the decision is not in `/d/history.jsonl`: disk full"]})
            ),
            [
                "Deployed: a of batch b2 is the model in /d/current now: better.",
                "TorchScript: model.pt, scripted.",
                "Deploy warning: the decision is not in `/d/history.jsonl`: disk full."
            ]
        );
        // A kept candidate's export is not what serves: no line for it.
        assert_eq!(
            lines(
                serde_json::json!({"decision": "kept", "dir": "/d", "why": "worse", "candidate": c, "deployed": d,
                "export": ts})
            ),
            ["Not deployed: the deployed model (a of batch b1) stays in /d: worse."]
        );
        assert_eq!(
            lines(
                serde_json::json!({"decision": "kept", "dir": "/d", "why": "its export failed", "candidate": c,
                "deployed": null})
            ),
            ["Not deployed: a of batch b2 did not go into /d: its export failed."]
        );
        assert_eq!(
            lines(serde_json::json!({"decision": "interrupted", "dir": "/d", "why": "the deploy was terminated"})),
            ["Deploy interrupted, nothing changed in /d: the deploy was terminated."]
        );
        assert_eq!(
            lines(serde_json::json!({"decision": "skipped", "dir": "/d", "why": "newer"})),
            ["Not deployed: newer."]
        );
    }

    #[test]
    fn formats_parse() {
        assert_eq!("md".parse::<Format>().unwrap(), Format::Md);
        assert_eq!("html".parse::<Format>().unwrap(), Format::Html);
        assert!("pdf".parse::<Format>().is_err());
    }
}
