//! What supervising costs while nothing happens: four jobs sleep, and the
//! supervisor's CPU and memory are sampled — tb's process, against
//! pueued's (and against pueued with the `sh` and `docker run` processes
//! it runs its tasks through: tb needs none). Interleaved, tb first in
//! even rounds.

use crate::events::{Action, Event, Scope};
use crate::jobs;
use crate::proc::{self, Usage};
use crate::pueue::Pueue;
use crate::session::{Session, median, stop};
use crate::table::{Table, cores, mb};
use anyhow::Context;
use std::process::Stdio;
use std::time::Duration;

const JOBS: usize = 4;
const ROUNDS: usize = 2;
/// Sampled over this, once every job has started and settled.
const WINDOW: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_secs(2);
const START: Duration = Duration::from_secs(120);
const SLEEP: &[&str] = &["sleep", "600"];

pub fn run(s: &Session, t: &mut Table) -> anyhow::Result<()> {
    let pueue_dir = s.pueue_dir()?;
    let (mut tb, mut pueue) = (Vec::new(), Vec::new());
    let mut containers = Vec::new();
    for round in 0..ROUNDS {
        for k in 0..2 {
            if (round + k) % 2 == 0 {
                let (u, c) = through_tb(s)?;
                tb.push(u);
                containers.push(c);
            } else {
                let (u, c) = through_pueue(s, pueue_dir)?;
                pueue.push(u);
                containers.push(c);
            }
        }
        eprintln!(
            "  {JOBS} jobs sleeping, round {}/{ROUNDS}: tb {} {}, pueued {} {}",
            round + 1,
            cores(tb[round].cpu),
            mb(tb[round].rss),
            cores(pueue[round].cpu),
            mb(pueue[round].rss)
        );
    }
    let m = |v: &[Usage], f: fn(&Usage) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    t.heading(format!(
        "{JOBS} jobs sleeping: the supervisor over {} s (medians of {ROUNDS} rounds)",
        WINDOW.as_secs()
    ));
    let rows: [Shown; 4] = [
        ("  CPU (share of one core)", |u| u.cpu, cores, "pueued"),
        ("  resident memory", |u| u.rss as f64, |b| mb(b as u64), "pueued"),
        (
            "  CPU, with what runs the jobs",
            |u| u.tree_cpu,
            cores,
            "pueued+docker CLI",
        ),
        (
            "  memory (PSS), with what runs the jobs",
            |u| u.tree_pss as f64,
            |b| mb(b as u64),
            "pueued+docker CLI",
        ),
    ];
    for (what, f, show, other) in rows {
        let (a, b) = (m(&tb, f), m(&pueue, f));
        t.row(what, show(a), format!("{other} {}", show(b))).ratio(a / b);
    }
    // Only now, with the figures in the table: were the containers alike?
    let [a, b, ..] = containers.as_slice() else {
        unreachable!("two containers a round")
    };
    jobs::same_container(a, b).context("tb's and pueue's jobs ran in different containers")?;
    Ok(())
}

/// A row: its name, the figure, how it is shown, what tb's is set against.
type Shown = (&'static str, fn(&Usage) -> f64, fn(f64) -> String, &'static str);

/// tb's usage while its jobs sleep, and one of its containers inspected.
fn through_tb(s: &Session) -> anyhow::Result<(Usage, serde_json::Value)> {
    let (tag, dir) = s.run_dir("tb-idle")?;
    let mut tb = s
        .batch(&dir, &jobs::batch_file(&tag, JOBS, JOBS, SLEEP))?
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("failed to run tb")?;
    let runs = dir.join("runs");
    let scope = Scope::TbRuns(&runs);
    let pid = tb.id();
    let sampled = s
        .events
        .wait(&scope, JOBS, 0, START, || matches!(tb.try_wait(), Ok(Some(_))))
        .and_then(|events| measure(pid, &events));
    // SIGTERM: tb stops its jobs (SIGTERM to each, which ends a sleep) and exits.
    stop(&mut tb, Duration::from_secs(60))?;
    if sampled.is_ok() {
        s.events.wait(&scope, JOBS, JOBS, START, || false)?;
    }
    sampled
}

/// pueued's usage while its tasks sleep, and one of their containers.
fn through_pueue(s: &Session, bin: &std::path::Path) -> anyhow::Result<(Usage, serde_json::Value)> {
    let (tag, dir) = s.run_dir("pueue-idle")?;
    let p = Pueue::start(bin, &dir, JOBS)?;
    p.add_jobs(&dir, &s.labels(&tag), JOBS, SLEEP)?;
    let sampled = s
        .events
        .wait(&Scope::Run(&tag), JOBS, 0, START, || false)
        .and_then(|events| measure(p.pid(), &events));
    // Its tasks end when their containers do.
    s.remove_run(&tag);
    drop(p);
    sampled
}

fn measure(pid: u32, events: &[Event]) -> anyhow::Result<(Usage, serde_json::Value)> {
    std::thread::sleep(SETTLE);
    let usage = proc::sample(pid, WINDOW, Duration::from_secs(1))?;
    let started = events
        .iter()
        .find(|e| e.action == Action::Start)
        .and_then(|e| e.attributes.get("name"))
        .context("a start event without the container's name")?;
    Ok((usage, jobs::inspect(started)?))
}
