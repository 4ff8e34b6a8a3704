//! `tb status [BATCH]`: one row per job.

use crate::cli::{GlobalArgs, StatusArgs};
use crate::exit::Exit;
use crate::metrics;
use crate::state::{BatchDir, JobFile, JobState};
use chrono::Utc;
use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;

#[derive(Debug, Serialize)]
struct Row {
    job: String,
    status: String,
    attempt: u32,
    elapsed_seconds: Option<f64>,
    epoch: Option<u64>,
    best: Option<Best>,
    exit_code: Option<i64>,
    error: Option<String>,
    container_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct Best {
    metric: String,
    value: f64,
    epoch: u64,
}

pub fn run(args: &StatusArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let dir = BatchDir::open(&global.runs_dir, args.batch.as_deref())?;
    let batch = dir.read_batch()?;
    let now = Utc::now();
    let mut rows = Vec::new();
    for name in &batch.jobs {
        let state = dir.read_job_state(name)?;
        let file = dir.read_job_file(name).ok();
        rows.push(row(&dir, name, &state, file.as_ref(), now));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "batch": batch.id, "status": batch.status, "jobs": rows })
            )?
        );
        return Ok(Exit::Success);
    }
    let mut table = Table::new();
    table.load_style(NOTHING);
    table.set_header(["JOB", "STATUS", "ATTEMPT", "ELAPSED", "EPOCH", "BEST"]);
    for r in &rows {
        table.add_row([
            r.job.clone(),
            r.status.clone(),
            r.attempt.to_string(),
            r.elapsed_seconds
                .map(|s| crate::human::duration(chrono::Duration::milliseconds((s * 1000.0) as i64)))
                .unwrap_or_else(|| "-".into()),
            r.epoch.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
            r.best
                .as_ref()
                .map(|b| format!("{}={:.4} @{}", b.metric, b.value, b.epoch))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    println!("{}", table.trim_fmt());
    eprintln!("batch {} ({:?})", batch.id, batch.status);
    Ok(Exit::Success)
}

fn row(dir: &BatchDir, name: &str, state: &JobState, file: Option<&JobFile>, now: chrono::DateTime<Utc>) -> Row {
    let train = file.and_then(|f| f.spec.train.as_ref());
    let monitor = train
        .and_then(|t| t.get("monitor"))
        .and_then(|m| m.as_str())
        .unwrap_or("val_loss")
        .to_string();
    let maximize = train.and_then(|t| t.get("mode")).and_then(|m| m.as_str()) == Some("max");
    let p = metrics::progress(&dir.job_dir(name).join("metrics.jsonl"), &monitor, maximize);
    Row {
        job: name.to_string(),
        status: state.status.to_string(),
        attempt: state.attempt,
        elapsed_seconds: state.elapsed(now).map(|d| d.num_milliseconds() as f64 / 1000.0),
        epoch: p.last_epoch,
        best: p.best.map(|(value, epoch)| Best {
            metric: monitor,
            value,
            epoch,
        }),
        exit_code: state.exit_code,
        error: state.error.clone(),
        container_id: state.container_id.clone(),
    }
}
