//! `tb ls`: the batches under the runs directory, newest first, with how
//! many of their jobs stand where.

use crate::cli::{GlobalArgs, LsArgs};
use crate::exit::Exit;
use crate::run::{BatchDir, BatchState, Status};
use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Serialize)]
struct Row {
    id: String,
    name: String,
    path: PathBuf,
    status: String,
    created_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    jobs: usize,
    /// Jobs per status; statuses no job has are left out.
    counts: BTreeMap<&'static str, usize>,
}

pub fn run(args: &LsArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let rows = batches(&global.runs_dir);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(Exit::Success);
    }
    if rows.is_empty() {
        eprintln!(
            "no batch under `{}` (start one with `tb batch FILE`)",
            global.runs_dir.display()
        );
        return Ok(Exit::Success);
    }
    let mut table = Table::new();
    table.load_style(NOTHING);
    table.set_header([
        "BATCH",
        "STATUS",
        "JOBS",
        "SUCCEEDED",
        "FAILED",
        "PRUNED",
        "RUNNING",
        "PENDING",
        "CREATED",
    ]);
    for r in &rows {
        let n = |s: Status| r.counts.get(s.as_str()).copied().unwrap_or(0);
        let failed = r.jobs - n(Status::Succeeded) - n(Status::Pruned) - n(Status::Running) - n(Status::Pending);
        table.add_row([
            r.id.clone(),
            r.status.clone(),
            r.jobs.to_string(),
            n(Status::Succeeded).to_string(),
            failed.to_string(),
            n(Status::Pruned).to_string(),
            n(Status::Running).to_string(),
            n(Status::Pending).to_string(),
            r.created_at
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M")
                .to_string(),
        ]);
    }
    println!("{}", table.trim_fmt());
    Ok(Exit::Success)
}

/// Every readable batch directory, newest first; an unreadable one is
/// mentioned and skipped, so one broken directory does not hide the rest.
fn batches(runs_dir: &std::path::Path) -> Vec<Row> {
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        // `latest` is a link to one of the others.
        if path.is_symlink() || !path.join("batch.json").is_file() {
            continue;
        }
        let dir = BatchDir::new(path, entry.file_name().to_string_lossy().into_owned());
        match row(&dir) {
            Ok(r) => rows.push(r),
            Err(e) => tracing::warn!("skipping {}: {e:#}", dir.id),
        }
    }
    rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
    rows
}

fn row(dir: &BatchDir) -> anyhow::Result<Row> {
    let batch: BatchState = dir.read_batch()?;
    let mut counts = BTreeMap::new();
    for job in &batch.jobs {
        // A job whose state cannot be read is not counted, not fatal.
        if let Ok(state) = dir.read_job_state(job) {
            *counts.entry(state.status().as_str()).or_insert(0) += 1;
        }
    }
    Ok(Row {
        status: crate::commands::status::batch_status(dir, &batch),
        id: dir.id.clone(),
        name: batch.name,
        path: dir.path.clone(),
        created_at: batch.created_at,
        finished_at: batch.finished_at,
        jobs: batch.jobs.len(),
        counts,
    })
}
