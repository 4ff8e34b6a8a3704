//! How long a sweep takes to get going: from spawning `tb batch` on a
//! random sweep of N jobs of `true` to the engine's start event of its
//! first container, for 100, 1,000 and 10,000 jobs. Each batch is stopped
//! (SIGTERM, as Ctrl-C) once its first container has started, and its
//! directory removed.

use crate::events::{Action, Scope};
use crate::jobs;
use crate::session::{Session, median, stop};
use crate::table::{Table, secs};
use anyhow::Context;
use std::process::Stdio;
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [100, 1_000, 10_000];
/// The target for 10,000 jobs.
const TARGET_10K: f64 = 2.0;
/// A batch that starts nothing in this long is a failure, not a figure.
const LIMIT: Duration = Duration::from_secs(300);
/// Below this, 10,000 jobs are measured as many rounds as the rest;
/// above it (a slow start-up), once.
const REPEAT_BELOW: f64 = 10.0;

pub fn run(s: &Session, t: &mut Table) -> anyhow::Result<()> {
    let mut figures = Vec::new();
    for n in SIZES {
        let mut v = vec![start_up(s, n)?];
        if n < 10_000 || v[0] < REPEAT_BELOW {
            for _ in 1..s.rounds {
                v.push(start_up(s, n)?);
            }
        }
        eprintln!(
            "  sweep of {n} jobs: first container started after {}",
            v.iter().map(|x| secs(*x)).collect::<Vec<_>>().join(", ")
        );
        figures.push((n, median(&v), v.len()));
    }
    t.heading("a random sweep of `true` jobs: from `tb batch` to its first container's start");
    for (n, secs_, rounds) in figures {
        let row = t.row(
            format!("  {} jobs (median of {rounds})", tb::batch::expand::jobs(n as u64)),
            secs(secs_),
            "",
        );
        if n == 10_000 {
            row.target(format!("≤ {TARGET_10K:.0} s"), secs_ <= TARGET_10K);
        }
    }
    Ok(())
}

/// Seconds from spawning tb to the engine's start of the first container.
fn start_up(s: &Session, n: usize) -> anyhow::Result<f64> {
    let (tag, dir) = s.run_dir(&format!("sweep{n}"))?;
    let stderr = std::fs::File::create(dir.join("tb.stderr"))?;
    let runs = dir.join("runs");
    let mut cmd = s.batch(&dir, &jobs::sweep_file(&tag, n))?;
    let t = Instant::now();
    let mut tb = cmd
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("failed to run tb")?;
    let first = s.events.wait(&Scope::TbRuns(&runs), 1, 0, LIMIT, || {
        matches!(tb.try_wait(), Ok(Some(_)))
    });
    let status = stop(&mut tb, Duration::from_secs(120))?;
    let result = match first {
        Ok(events) => {
            let started = events
                .iter()
                .filter(|e| e.action == Action::Start)
                .map(|e| e.received)
                .min();
            Ok(started.context("no start event")?.duration_since(t).as_secs_f64())
        }
        Err(e) => {
            let said = std::fs::read_to_string(dir.join("tb.stderr")).unwrap_or_default();
            let said = said.lines().rev().take(5).collect::<Vec<_>>();
            Err(e).with_context(|| format!("tb batch on {n} jobs ({status}): {}", said.join(" | ")))
        }
    };
    std::fs::remove_dir_all(&dir)?;
    result
}
