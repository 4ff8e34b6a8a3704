//! `tb status [BATCH]`: one row per job, once or (`--watch`) until the
//! batch ends.

use crate::cli::{GlobalArgs, StatusArgs};
use crate::exit::Exit;
use crate::metrics;
use crate::run::{BatchDir, BatchState, BatchStatus, JobFile, JobState};
use chrono::Utc;
use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::time::Duration;

#[derive(Debug, Serialize)]
struct Row {
    job: String,
    status: String,
    attempt: u32,
    elapsed_seconds: Option<f64>,
    epoch: Option<u64>,
    /// The last step, for a job that logs steps but no epochs.
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<u64>,
    best: Option<Best>,
    /// Where its metrics come from: `jsonl`, `tensorboard`, `csv`, `stdout`;
    /// none when it logged none (yet).
    metrics: Option<String>,
    /// Where it was told to look (`[job.metrics] source`).
    #[serde(skip)]
    source: metrics::SourceChoice,
    exit_code: Option<i64>,
    error: Option<String>,
    container_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct Best {
    metric: String,
    value: f64,
    epoch: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<u64>,
}

pub fn run(args: &StatusArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let dir = BatchDir::open(&global.runs_dir, args.batch.as_deref())?;
    if args.watch {
        return watch(&dir);
    }
    let (batch, rows) = load(&dir, &mut Readers::new())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "batch": batch.id, "status": batch.status, "jobs": rows })
            )?
        );
        return Ok(Exit::Success);
    }
    println!("{}", table(&rows));
    eprintln!("batch {} ({})", batch.id, batch_status(&dir, &batch));
    // Jobs that ended without metrics, by where tb looked for them.
    let mut silent: Vec<(metrics::SourceChoice, Vec<&str>)> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.metrics.is_none() && r.status != "pending" && r.status != "running")
    {
        match silent.iter_mut().find(|(c, _)| *c == r.source) {
            Some((_, jobs)) => jobs.push(&r.job),
            None => silent.push((r.source, vec![&r.job])),
        }
    }
    for (choice, jobs) in silent {
        eprintln!(
            "no metrics from {}: tb looked for {} (docs/metrics.md)",
            jobs.join(", "),
            metrics::JobMetrics::looked(choice).join(", ")
        );
    }
    Ok(Exit::Success)
}

/// How often `--watch` looks again.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// `--watch`: on a terminal, the table redrawn in place every
/// [`WATCH_EVERY`]; elsewhere (a pipe, a log file) the table printed again
/// only when a job's status, attempt, epoch or best value changed, so that
/// the output is a readable history rather than a copy every two seconds.
/// Either way it returns once the batch is no longer supervised.
fn watch(dir: &BatchDir) -> anyhow::Result<Exit> {
    let terminal = std::io::stdout().is_terminal();
    let mut shown: Option<Vec<String>> = None;
    let mut readers = Readers::new();
    loop {
        let (batch, rows) = load(dir, &mut readers)?;
        let live = supervised(dir, &batch);
        let footer = format!("batch {} ({})", batch.id, batch_status(dir, &batch));
        let mut out = std::io::stdout().lock();
        let written = if terminal {
            let hint = if live { "  every 2s, Ctrl-C to stop" } else { "" };
            write!(out, "\x1b[H\x1b[2J{}\n\n{footer}{hint}\n", table(&rows))
        } else {
            let key: Vec<String> = rows.iter().map(Row::key).collect();
            if shown.as_ref() != Some(&key) {
                shown = Some(key);
                writeln!(out, "{}\n", table(&rows))
            } else {
                Ok(())
            }
        };
        if written.and_then(|_| out.flush()).is_err() {
            // The reader went away: not an error.
            return Ok(Exit::Success);
        }
        if !live {
            if !terminal {
                eprintln!("{footer}");
            }
            return Ok(Exit::Success);
        }
        drop(out);
        std::thread::sleep(WATCH_EVERY);
    }
}

/// Each job's metrics reader: kept across `--watch` rounds, so that a
/// round reads only what the jobs wrote since the last.
type Readers = std::collections::HashMap<String, metrics::Reader>;

fn load(dir: &BatchDir, readers: &mut Readers) -> anyhow::Result<(BatchState, Vec<Row>)> {
    let batch = dir.read_batch()?;
    let now = Utc::now();
    let mut jobs = Vec::with_capacity(batch.jobs.len());
    for name in &batch.jobs {
        let state = dir.read_job_state(name)?;
        let file = dir.read_job_file(name).ok();
        let spec = file.as_ref().map(|f| f.spec.metrics.clone()).unwrap_or_default();
        let reader = readers
            .remove(name)
            .unwrap_or_else(|| metrics::Reader::new(&dir.job_dir(name), spec.source));
        jobs.push((name.clone(), state, file, reader));
    }
    // Reading a large batch's metrics is the slow part: spread over the
    // cores, in order.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let chunk = jobs.len().div_ceil(threads).max(1);
    let rows: Vec<Row> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks_mut(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter_mut()
                        .map(|(name, state, file, reader)| row(dir, name, state, file.as_ref(), reader, now))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("reading metrics does not panic"))
            .collect()
    });
    readers.extend(jobs.into_iter().map(|(name, _, _, reader)| (name, reader)));
    Ok((batch, rows))
}

fn table(rows: &[Row]) -> String {
    let mut table = Table::new();
    table.load_style(NOTHING);
    table.set_header(["JOB", "STATUS", "ATTEMPT", "ELAPSED", "EPOCH", "BEST"]);
    for r in rows {
        table.add_row([
            r.job.clone(),
            r.status.clone(),
            r.attempt.to_string(),
            r.elapsed_seconds
                .map(crate::human::seconds)
                .unwrap_or_else(|| "-".into()),
            match (r.epoch, r.step) {
                (Some(e), _) => e.to_string(),
                (None, Some(s)) => format!("step {s}"),
                (None, None) => "-".into(),
            },
            r.best
                .as_ref()
                .map(|b| match (b.epoch, b.step) {
                    (Some(e), _) => format!("{}={:.4} @{e}", b.metric, b.value),
                    (None, Some(s)) => format!("{}={:.4} @step {s}", b.metric, b.value),
                    (None, None) => format!("{}={:.4}", b.metric, b.value),
                })
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    table.trim_fmt()
}

impl Row {
    /// What `--watch` off a terminal compares: everything but the clock.
    fn key(&self) -> String {
        format!(
            "{} {} {} {:?} {:?}",
            self.job,
            self.status,
            self.attempt,
            self.epoch.or(self.step),
            self.best.as_ref().map(|b| (b.value, b.epoch.or(b.step)))
        )
    }
}

/// A supervisor that was just started (`tb batch --detach`) may not hold
/// the lock yet; until this long after it started, it is believed.
const STARTING: chrono::TimeDelta = chrono::TimeDelta::seconds(15);

/// The batch is recorded as running and a supervisor holds it (or one is
/// still starting up).
pub(crate) fn supervised(dir: &BatchDir, batch: &BatchState) -> bool {
    batch.status == BatchStatus::Running
        && (dir.supervisor().is_some()
            || batch
                .supervisor
                .as_ref()
                .is_some_and(|s| Utc::now() - s.started_at < STARTING))
}

/// `running`, `finished`, `interrupted`; a batch recorded as running whose
/// supervisor has gone reads `stopped`.
pub(crate) fn batch_status(dir: &BatchDir, batch: &BatchState) -> String {
    match batch.status {
        BatchStatus::Running if !supervised(dir, batch) => "stopped".into(),
        BatchStatus::Running => "running".into(),
        BatchStatus::Finished => "finished".into(),
        BatchStatus::Interrupted => "interrupted".into(),
    }
}

fn row(
    dir: &BatchDir,
    name: &str,
    state: &JobState,
    file: Option<&JobFile>,
    reader: &mut metrics::Reader,
    now: chrono::DateTime<Utc>,
) -> Row {
    let spec = file.map(|f| f.spec.metrics.clone()).unwrap_or_default();
    let train = file.and_then(|f| f.spec.train.as_ref());
    let live = !state.status().is_final();
    reader.poll(live);
    let judged = metrics::judged(&dir.job_dir(name), &spec, train, reader.metrics());
    Row {
        job: name.to_string(),
        status: state.status().to_string(),
        attempt: state.attempt(),
        elapsed_seconds: state.elapsed(now).map(|d| d.num_milliseconds() as f64 / 1000.0),
        epoch: judged.metrics.last_epoch().filter(|_| !judged.metrics.by_step),
        step: judged.metrics.last_epoch().filter(|_| judged.metrics.by_step),
        best: judged.best.map(|b| Best {
            metric: b.metric,
            value: b.value,
            epoch: b.epoch,
            step: b.step,
        }),
        metrics: judged.metrics.source.map(|s| s.as_str().to_string()),
        source: spec.source,
        exit_code: state.exit_code(),
        error: state.error().map(String::from),
        container_id: state.container_id().map(String::from),
    }
}
