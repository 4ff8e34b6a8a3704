//! `report.md`: the headline and the best configuration, one ranked table
//! of every job with the settings that tell them apart, what mattered, the
//! fold groups, where metrics came from, the failures with their stderr,
//! and the skipped metrics records.

use super::compare::{self, level_mean};
use super::{Report, at, failures, fmt_seconds, fmt_swept, fmt_value, is_failure, reason};
use std::fmt::Write;

pub fn render(r: &Report) -> String {
    let mut out = String::with_capacity(256 + r.jobs.len() * 200);
    let h = &r.headline;
    let _ = writeln!(out, "# Batch {} — {}\n", cell(&r.batch.name), cell(&r.batch.id));
    let counts: Vec<String> = h.counts.listed().iter().map(|(s, n)| format!("{n} {s}")).collect();
    let _ = writeln!(
        out,
        "**{}** · {} jobs: {} · wall {} · {:.2} GPU-hours\n",
        status_word(r),
        h.jobs,
        counts.join(" · "),
        fmt_seconds(h.wall_seconds),
        h.gpu_hours
    );
    if let Some(t) = &r.batch.trigger {
        let _ = writeln!(
            out,
            "Started by `tb watch`, trigger {}: {}.\n",
            t.number,
            cell(&t.describe())
        );
    }
    let _ = write!(out, "Generated {}.", r.generated_at.format("%Y-%m-%d %H:%M:%S UTC"));
    if h.bad_metrics_lines > 0 {
        let _ = write!(
            out,
            " {} metrics record{} skipped (see below).",
            h.bad_metrics_lines,
            plural(h.bad_metrics_lines)
        );
    }
    out.push_str("\n\n");
    if let Some(best) = r.jobs.first().filter(|j| j.rank.is_some()) {
        let b = best.best.as_ref().expect("a ranked job has a best value");
        let _ = write!(
            out,
            "**Best: {}** — {} {}{}",
            cell(&best.name),
            cell(&b.metric),
            fmt_value(b.value),
            at(b)
        );
        let cfg: Vec<String> = r
            .config_keys
            .iter()
            .filter_map(|k| {
                best.config
                    .get(k)
                    .map(|v| format!("`{} = {}`", code(k), code(&compare::show(k, v))))
            })
            .collect();
        if !cfg.is_empty() {
            let _ = write!(out, " with {}", cfg.join(", "));
        }
        out.push_str("\n\n");
    }
    let retraining = super::retraining_lines(r);
    if !retraining.is_empty() {
        out.push_str("## Retraining\n\n");
        for line in retraining {
            let _ = writeln!(out, "- {}", cell(&line));
        }
        out.push('\n');
    }
    out.push_str("## Jobs\n\n");
    if let Some(m) = &r.ranking {
        let _ = writeln!(
            out,
            "Ranked by best `{}` ({} is better).\n",
            code(&m.metric),
            if m.mode.maximize() { "higher" } else { "lower" }
        );
    }
    if !r.common.is_empty() {
        let shown: Vec<String> = r
            .common
            .iter()
            .map(|(k, v)| match r.common_in.get(k) {
                Some(n) => format!(
                    "`{} = {}` ({n} of {} jobs)",
                    code(k),
                    code(&compare::show(k, v)),
                    r.jobs.len()
                ),
                None => format!("`{} = {}`", code(k), code(&compare::show(k, v))),
            })
            .collect();
        let _ = writeln!(out, "Common settings: {}\n", shown.join(", "));
    }
    let best_col = r
        .ranking
        .as_ref()
        .map_or("best".to_string(), |m| format!("best {}", cell(&m.metric)));
    let tests: Vec<&String> = r.test_keys.iter().take(compare::MAX_TEST_COLUMNS).collect();
    out.push_str("| # | job | status |");
    for k in &r.config_keys {
        let _ = write!(out, " {} |", cell(k));
    }
    let _ = write!(out, " {best_col} |");
    for k in &tests {
        let _ = write!(out, " {} |", cell(k));
    }
    out.push_str(" stop | epochs | final | duration |\n|--:|---|---|");
    out.push_str(&"---|".repeat(r.config_keys.len()));
    out.push_str("--:|");
    out.push_str(&"--:|".repeat(tests.len()));
    out.push_str("---|--:|---|--:|\n");
    for j in &r.jobs {
        let best = match &j.best {
            Some(b) if r.ranking.as_ref().is_some_and(|m| m.metric == b.metric) => {
                format!("{}{}", fmt_value(b.value), at(b))
            }
            Some(b) => format!("{} {}{}", cell(&b.metric), fmt_value(b.value), at(b)),
            None => "–".into(),
        };
        let _ = write!(
            out,
            "| {} | {} | {} |",
            j.rank.map_or("–".into(), |n| n.to_string()),
            cell(&j.name),
            j.status,
        );
        for k in &r.config_keys {
            let _ = write!(
                out,
                " {} |",
                cell(&j.config.get(k).map_or("–".into(), |v| compare::show(k, v)))
            );
        }
        let _ = write!(out, " {best} |");
        for k in &tests {
            let _ = write!(
                out,
                " {} |",
                j.test.get(*k).and_then(|v| v.as_f64()).map_or("–".into(), fmt_value)
            );
        }
        let short: Vec<String> = compare::final_short(&j.final_metrics, j.monitor.as_ref())
            .into_iter()
            .map(|(k, v)| format!("{k}={}", compare::sig4(v)))
            .collect();
        let _ = writeln!(
            out,
            " {} | {} | {} | {} |",
            cell(j.stop_reason.as_deref().unwrap_or("–")),
            j.epochs.map_or("–".into(), |e| e.to_string()),
            cell(&or_dash(short.join(" "))),
            j.duration_seconds.map_or("–".into(), fmt_seconds),
        );
    }

    if let (Some(m), false) = (&r.ranking, r.mattered.is_empty()) {
        let _ = writeln!(
            out,
            "\n## What mattered\n\nFor each swept key, the best `{}` of the jobs that share each of its values \
             (mean ± sample standard deviation, n − 1), best first; a numeric key with more than eight \
             values in ranges of about equally many jobs. The keys that explain most of the differences first.",
            code(&m.metric)
        );
        for f in &r.mattered {
            let _ = writeln!(out, "\n{}\n", cell(&super::compare::factor_note(f)));
            let _ = writeln!(
                out,
                "| {} | jobs | mean ± std | best |\n|---|--:|--:|--:|",
                cell(&f.key)
            );
            for l in &f.levels {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    cell(&fmt_swept(&l.value)),
                    l.n,
                    level_mean(l),
                    fmt_value(l.best)
                );
            }
        }
    }

    let notes = super::metrics_notes(r);
    if !notes.is_empty() {
        out.push_str("\n## Metrics\n\n");
        for n in notes {
            let _ = writeln!(out, "- {}", cell(&n));
        }
    }

    if !r.groups.is_empty() {
        out.push_str("\n## Cross-validation groups\n\n");
        out.push_str("Mean ± sample standard deviation (n − 1) of the folds' best values.\n\n");
        let _ = write!(out, "| group | metric | folds | mean ± std | min | max |");
        let keys: Vec<&String> = r.swept_keys.iter().filter(|k| *k != "train.cv.fold").collect();
        for k in &keys {
            let _ = write!(out, " {} |", cell(k));
        }
        out.push_str("\n|---|---|--:|--:|--:|--:|");
        out.push_str(&"---|".repeat(keys.len()));
        out.push('\n');
        for g in &r.groups {
            let _ = write!(
                out,
                "| {} | {} | {}/{} | {} | {} | {} |",
                cell(&g.name),
                cell(g.monitor.as_ref().map_or("–", |m| m.metric.as_str())),
                g.n,
                g.folds,
                mean_std(g.mean, g.std),
                g.min.map_or("–".into(), fmt_value),
                g.max.map_or("–".into(), fmt_value),
            );
            for k in &keys {
                let _ = write!(out, " {} |", cell(&g.swept.get(*k).map_or("–".into(), fmt_swept)));
            }
            out.push('\n');
        }
    }

    let failed: Vec<_> = failures(r).collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\n## Failures ({})", failed.len());
        for j in failed {
            let _ = writeln!(out, "\n### {} — {}\n", cell(&j.name), j.status);
            let _ = writeln!(
                out,
                "- exit code: {} · out of memory: {} · attempt {}",
                j.exit_code.map_or("none".into(), |c| c.to_string()),
                if j.oom_killed { "yes" } else { "no" },
                j.attempt
            );
            let _ = writeln!(out, "- reason: {}", cell(&reason(j)));
            if let Some(s) = &j.stop_reason {
                let _ = writeln!(out, "- trainer's stop reason: {}", cell(s));
            }
            for p in &j.problems {
                let _ = writeln!(out, "- note: {}", cell(p));
            }
            if j.stderr_tail.is_empty() {
                out.push_str("\nstderr: empty\n");
            } else {
                let fence = fence(&j.stderr_tail);
                let _ = writeln!(out, "\nLast {} lines of stderr:\n\n{fence}", j.stderr_tail.len());
                for l in &j.stderr_tail {
                    out.push_str(l);
                    out.push('\n');
                }
                out.push_str(&fence);
                out.push('\n');
            }
        }
    }

    let bad: Vec<_> = r.jobs.iter().filter(|j| j.metrics.bad_lines > 0).collect();
    if !bad.is_empty() {
        let _ = writeln!(
            out,
            "\n## Skipped metrics records\n\n{} record{} (lines, rows, events) in {} job{} were not valid metrics and were skipped:\n",
            r.headline.bad_metrics_lines,
            plural(r.headline.bad_metrics_lines),
            bad.len(),
            plural(bad.len() as u64)
        );
        for j in bad {
            let _ = writeln!(out, "- {}: {} skipped", cell(&j.name), j.metrics.bad_lines);
            for b in &j.metrics.bad {
                let _ = writeln!(out, "  - line {}: {} — `{}`", b.line, cell(&b.reason), code(&b.text));
            }
            let more = j.metrics.bad_lines - j.metrics.bad.len() as u64;
            if more > 0 {
                let _ = writeln!(out, "  - … and {more} more");
            }
        }
    }

    let noted: Vec<_> = r
        .jobs
        .iter()
        .filter(|j| !j.problems.is_empty() && !is_failure(j))
        .collect();
    if !noted.is_empty() {
        out.push_str("\n## Notes\n\n");
        for j in noted {
            for p in &j.problems {
                let _ = writeln!(out, "- {}: {}", cell(&j.name), cell(p));
            }
        }
    }
    out
}

fn status_word(r: &Report) -> &'static str {
    match r.batch.status {
        crate::run::BatchStatus::Running => "running",
        crate::run::BatchStatus::Finished => "finished",
        crate::run::BatchStatus::Interrupted => "interrupted",
    }
}

pub(crate) fn mean_std(mean: Option<f64>, std: Option<f64>) -> String {
    match (mean, std) {
        (Some(m), Some(s)) => format!("{} ± {}", fmt_value(m), fmt_value(s)),
        (Some(m), None) => format!("{} (one fold)", fmt_value(m)),
        _ => "–".into(),
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "–".into() } else { s }
}

/// Text for a table cell or a list item: no line breaks, no column
/// separators, no HTML (Markdown renders it).
fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Text for inline code: backticks would end the span.
fn code(s: &str) -> String {
    s.replace('`', "'").replace(['\n', '\r'], " ")
}

/// A code fence longer than any run of backticks in `lines`.
fn fence(lines: &[String]) -> String {
    let longest = lines
        .iter()
        .flat_map(|l| l.split(|c| c != '`').map(str::len))
        .max()
        .unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cannot_break_the_table() {
        assert_eq!(cell("a|b\nc<script>"), "a\\|b c&lt;script&gt;");
    }

    #[test]
    fn fences_outgrow_backticks_in_stderr() {
        assert_eq!(fence(&["plain".into()]), "```");
        assert_eq!(fence(&["a ```` b".into()]), "`````");
    }

    #[test]
    fn one_fold_has_no_deviation() {
        assert_eq!(mean_std(Some(0.82), Some(0.02)), "0.8200 ± 0.0200");
        assert_eq!(mean_std(Some(0.5), None), "0.5000 (one fold)");
    }
}
