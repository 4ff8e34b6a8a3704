//! The report: generated run directories of 1,000 to 10,000 jobs × 200
//! epochs, reported in all its formats — jobs that write tb's
//! `metrics.jsonl`, then jobs that write only a TensorBoard event file (200
//! epochs and 20,000 step scalars each, as Lightning's logger writes them).
//! Each report runs in a child process (this binary again) so that its peak
//! memory is its own and not the generator's. Gives walls, growth against
//! job count, peak RSS; and how much a progress poll of a growing event file
//! reads.

use crate::session::Session;
use crate::table::{Table, mb, secs};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const EPOCHS: usize = 200;
const SIZES: [usize; 4] = [1_000, 2_000, 5_000, 10_000];
const ROUNDS: usize = 3;
const TARGET_1K_SECONDS: f64 = 1.0;
const CHILD: &str = "TB_BENCH_REPORT_DIR";

/// In the child a report runs in: write the report of the batch directory
/// this names and print the seconds it took.
pub fn child() -> Option<()> {
    let dir = std::env::var_os(CHILD)?;
    write_report(Path::new(&dir));
    Some(())
}

pub fn run(s: &Session, t: &mut Table) -> anyhow::Result<()> {
    let (_, work) = s.run_dir("report")?;
    let max = *SIZES.iter().max().unwrap();
    let started = Instant::now();
    let jobs = work.join("jobs");
    let bytes = generate(&jobs, max);
    eprintln!(
        "  generated {max} jobs x {EPOCHS} epochs ({:.0} MB of metrics) in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    t.heading(format!(
        "the report (Markdown, JSON, HTML, CSV) of generated batches, {EPOCHS} epochs a job (medians of {ROUNDS})"
    ));
    let mut results = Vec::new();
    for &n in &SIZES {
        let dir = batch(&work, &jobs, n);
        let (median, peak) = measure(&dir, ROUNDS);
        let html = std::fs::metadata(dir.join("report.html")).map_or(0, |m| m.len());
        eprintln!("  report of {n} jobs: {}", secs(median));
        let row = t.row(
            format!("  {} jobs writing metrics.jsonl", tb::batch::expand::jobs(n as u64)),
            secs(median),
            format!("peak RSS {}, report.html {}", mb(peak), mb(html)),
        );
        if n == 1_000 {
            row.target(format!("< {TARGET_1K_SECONDS} s"), median < TARGET_1K_SECONDS);
        }
        results.push((n, median));
    }
    growth(t, &results);
    tensorboard_jobs(t, &work);
    progress_tail(t, &work);
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// The median wall of `rounds` reports of `dir` and their peak RSS (bytes).
fn measure(dir: &Path, rounds: usize) -> (f64, u64) {
    let mut walls = Vec::new();
    let mut peak = 0;
    for _ in 0..rounds {
        let (wall, rss_kb) = report_in_child(dir);
        walls.push(wall);
        peak = peak.max(rss_kb);
    }
    (crate::session::median(&walls), peak as u64 * 1024)
}

/// From the fewest jobs to the most: the time grows no faster than the jobs.
fn growth(t: &mut Table, results: &[(usize, f64)]) {
    let ((n0, t0), (n, tn)) = (results[0], results[results.len() - 1]);
    let (jobs_x, time_x) = (n as f64 / n0 as f64, tn / t0);
    t.row(
        format!(
            "  growth {} → {} jobs",
            tb::batch::expand::jobs(n0 as u64),
            tb::batch::expand::jobs(n as u64)
        ),
        format!("{time_x:.2}x the time"),
        format!("{jobs_x:.0}x the jobs"),
    )
    .target(format!("≤ {:.1}x (linear)", jobs_x * 1.15), time_x <= jobs_x * 1.15);
}

const STEPS_PER_EPOCH: u64 = 100;
const TB_TARGET_1K_SECONDS: f64 = 3.0;

/// Reports of 1,000 and 10,000 jobs whose only metrics are one TensorBoard
/// event file each (one file's bytes, hard-linked into every job: the
/// parsing is measured, from the page cache, as right after a batch).
fn tensorboard_jobs(t: &mut Table, root: &Path) {
    let file = root.join("events.out.tfevents.bench");
    let bytes = write_event_file(&file, EPOCHS as u64);
    let jobs = root.join("tb-jobs");
    let max = 10_000;
    for i in 0..max {
        let dir = jobs.join(name(i));
        let logs = dir.join("lightning_logs/version_0");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::hard_link(&file, logs.join("events.out.tfevents.1.host.1.0")).unwrap();
        let job = serde_json::json!({
            "version": 1, "batch": "bench", "batch_id": "bench", "attempt": 1, "name": name(i),
            "image": "tb-trainer:latest", "command": ["python", "main.py", "fit"], "gpus": 0, "cpus": null,
            "memory": null, "shm_size": 1073741824u64, "time_limit": null, "env": {}, "pass_env": [], "mounts": [],
            "code": null, "network": "bridge", "train": null, "swept": {"args.model.learning_rate": i},
        });
        std::fs::write(dir.join("job.json"), serde_json::to_vec(&job).unwrap()).unwrap();
        let state = serde_json::json!({
            "version": 1, "status": "succeeded", "attempt": 1, "exit_code": 0, "oom_killed": false, "error": null,
            "container_id": "c", "image_id": "sha256:i", "started_at": "2026-11-22T23:00:00Z",
            "finished_at": "2026-11-23T00:00:00Z", "gpus": [],
        });
        std::fs::write(dir.join("state.json"), serde_json::to_vec(&state).unwrap()).unwrap();
    }
    eprintln!(
        "  TensorBoard jobs: one event file of {EPOCHS} epochs and {} step scalars ({:.2} MB) per job",
        EPOCHS as u64 * STEPS_PER_EPOCH,
        bytes as f64 / 1e6
    );
    let mut results = Vec::new();
    for (n, rounds) in [(1_000, ROUNDS), (10_000, 1)] {
        let dir = batch(root, &jobs, n);
        let (median, peak) = measure(&dir, rounds);
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["jobs"][0]["metrics"]["source"], "tensorboard");
        assert_eq!(report["ranking"]["metric"], "val_loss");
        eprintln!("  report of {n} TensorBoard jobs: {}", secs(median));
        let row = t.row(
            format!(
                "  {} jobs writing TensorBoard events (median of {rounds})",
                tb::batch::expand::jobs(n as u64)
            ),
            secs(median),
            format!("peak RSS {}", mb(peak)),
        );
        if n == 1_000 {
            row.target(format!("< {TB_TARGET_1K_SECONDS} s"), median < TB_TARGET_1K_SECONDS);
        }
        results.push((n, median));
    }
    growth(t, &results);
}

/// A progress poll of a running job reads only what was appended since the
/// last one: the bytes read per poll and its time, early in the file and
/// late, for one epoch appended each time.
fn progress_tail(t: &mut Table, root: &Path) {
    let dir = root.join("tail-job");
    let logs = dir.join("lightning_logs/version_0");
    std::fs::create_dir_all(&logs).unwrap();
    let path = logs.join("events.out.tfevents.1.host.1.0");
    let mut reader = tb::metrics::Reader::new(&dir, tb::metrics::SourceChoice::Auto);
    let mut file = std::fs::File::create(&path).unwrap();
    let mut sizes = Vec::new();
    let at = |epoch: u64, reader: &mut tb::metrics::Reader, file: &mut std::fs::File| {
        let before = file.metadata().unwrap().len();
        let appended = append_epoch(file, epoch);
        let read_before = reader.bytes_read();
        let t = Instant::now();
        reader.poll(true);
        let m = reader.metrics();
        let took = t.elapsed().as_secs_f64();
        let read = reader.bytes_read() - read_before;
        assert_eq!(m.last_epoch(), Some(epoch), "the poll saw the new epoch");
        (before, appended, read, took)
    };
    for e in 0..EPOCHS as u64 {
        let (before, appended, read, took) = at(e, &mut reader, &mut file);
        if e == 9 || e == EPOCHS as u64 - 1 {
            sizes.push((e + 1, before, appended, read, took));
        }
    }
    for (epochs, before, appended, read, took) in sizes {
        t.row(
            format!("  progress poll at epoch {epochs} ({} file)", mb(before + appended)),
            format!("read {:.1} KB", read as f64 / 1e3),
            format!("appended {:.1} KB; poll {:.2} ms", appended as f64 / 1e3, took * 1e3),
        )
        .target("only what was appended", read == appended);
    }
}

/// Lightning's records for one epoch: a step scalar per training step (with
/// the `epoch` scalar Lightning logs beside it every 50 steps), then the
/// epoch's `val_loss` and `train_loss_epoch` at the last step.
fn epoch_records(epoch: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let x = epoch as f64;
    for s in 0..STEPS_PER_EPOCH {
        let step = epoch * STEPS_PER_EPOCH + s;
        out.extend(record(
            step,
            "train_loss_step",
            (1.0 / (1.0 + x * 0.1) + 0.01 * (s as f64).sin()) as f32,
        ));
        if s % 50 == 49 {
            out.extend(record(step, "epoch", epoch as f32));
        }
    }
    let last = epoch * STEPS_PER_EPOCH + STEPS_PER_EPOCH - 1;
    out.extend(record(last, "val_loss", (0.2 + 0.8 / (1.0 + x * 0.1)) as f32));
    out.extend(record(last, "train_loss_epoch", (0.18 + 0.8 / (1.0 + x * 0.1)) as f32));
    out.extend(record(last, "epoch", epoch as f32));
    out
}

fn append_epoch(file: &mut std::fs::File, epoch: u64) -> u64 {
    let bytes = epoch_records(epoch);
    file.write_all(&bytes).unwrap();
    file.flush().unwrap();
    bytes.len() as u64
}

fn write_event_file(path: &Path, epochs: u64) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    (0..epochs).map(|e| append_epoch(&mut file, e)).sum()
}

/// One TFRecord holding an `Event` with one scalar: `wall_time` (1),
/// `step` (2), `summary` (5) { `value` (1) { `tag` (1), `simple_value` (2) } }.
fn record(step: u64, tag: &str, value: f32) -> Vec<u8> {
    let mut v = vec![0x0a, tag.len() as u8];
    v.extend_from_slice(tag.as_bytes());
    v.push(0x15);
    v.extend_from_slice(&value.to_le_bytes());
    let mut summary = vec![0x0a];
    varint(&mut summary, v.len() as u64);
    summary.extend(v);
    let mut event = vec![0x09];
    event.extend_from_slice(&(1.8e9 + step as f64).to_le_bytes());
    event.push(0x10);
    varint(&mut event, step);
    event.push(0x2a);
    varint(&mut event, summary.len() as u64);
    event.extend(summary);
    let len = (event.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(event.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(&event);
    out.extend_from_slice(&masked_crc(&event).to_le_bytes());
    out
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Writes every format of the report of `dir`, prints the seconds it
/// took.
fn write_report(dir: &Path) {
    let id = dir.file_name().unwrap().to_string_lossy().into_owned();
    let batch = tb::run::BatchDir::new(dir.to_path_buf(), id);
    let t = Instant::now();
    tb::report::write(&batch, &tb::report::Format::ALL).unwrap();
    println!("{}", t.elapsed().as_secs_f64());
}

/// Runs the report for `dir` in a child; its time and peak RSS (KiB).
#[allow(clippy::zombie_processes)] // reaped by wait4, which std's Child cannot see
fn report_in_child(dir: &Path) -> (f64, i64) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    // wait4, not Child::wait: it also gives the child's own resource usage.
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the report child failed"
    );
    (
        out.trim().parse().expect("the child prints its seconds"),
        usage.ru_maxrss,
    )
}

/// A batch directory over the first `n` generated jobs (its `jobs` a link
/// to the shared ones, so every size reads the same files).
fn batch(root: &Path, jobs: &Path, n: usize) -> PathBuf {
    let id = format!("2026-11-22_230000_bench-{n}");
    let dir = root.join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<String> = (0..n).map(name).collect();
    let _ = std::fs::remove_file(dir.join("jobs"));
    let _ = std::os::unix::fs::symlink(jobs, dir.join("jobs"));
    let batch = serde_json::json!({
        "version": 1, "id": id, "name": format!("bench-{n}"), "file": "/bench.toml",
        "created_at": "2026-11-22T23:00:00Z", "status": "finished", "finished_at": "2026-11-23T07:00:00Z",
        "concurrency": 8, "supervisor": null, "jobs": names,
    });
    std::fs::write(dir.join("batch.json"), serde_json::to_vec(&batch).unwrap()).unwrap();
    dir
}

/// Sweeps of `train.lr` with five folds each.
fn name(i: usize) -> String {
    format!("lr_lr-{}_fold-{}", i / 5, i % 5)
}

/// Writes `n` jobs like a night of real ones: 200 validation lines each, a
/// garbage line now and then, 1 % failed with a stderr, 4 % killed before
/// their result.json. Returns the bytes of metrics written.
fn generate(jobs: &Path, n: usize) -> u64 {
    let mut total = 0;
    for i in 0..n {
        let name = name(i);
        let dir = jobs.join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let lr = 1e-4 * (1 + i / 5) as f64;
        let job = serde_json::json!({
            "version": 1, "batch": "bench", "batch_id": "bench", "attempt": 1, "name": name,
            "image": "tb-trainer:latest", "command": null, "gpus": 1, "cpus": null, "memory": null,
            "shm_size": 1073741824u64, "time_limit": null, "env": {}, "pass_env": [], "mounts": [], "code": null,
            "network": "bridge",
            "train": {"model": "unet", "monitor": "val_loss", "mode": "min", "lr": lr, "cv": {"folds": 5, "fold": i % 5}},
            "swept": {"train.lr": lr},
        });
        std::fs::write(dir.join("job.json"), serde_json::to_vec_pretty(&job).unwrap()).unwrap();
        let failed = i % 100 == 7;
        let killed = i % 25 == 3;
        let state = serde_json::json!({
            "version": 1, "status": if failed { "failed" } else if killed { "timeout" } else { "succeeded" },
            "attempt": 1, "exit_code": if failed { 1 } else if killed { 143 } else { 0 }, "oom_killed": false,
            "error": if failed { Some("exited with code 1") } else { None },
            "container_id": "c", "image_id": "sha256:i",
            "started_at": "2026-11-22T23:00:00Z", "finished_at": "2026-11-23T00:00:00Z", "gpus": [(i % 8).to_string()],
        });
        std::fs::write(dir.join("state.json"), serde_json::to_vec_pretty(&state).unwrap()).unwrap();

        let mut m = BufWriter::new(std::fs::File::create(dir.join("metrics.jsonl")).unwrap());
        let (mut best, mut best_epoch) = (f64::INFINITY, 0);
        let seed = (i % 97) as f64 / 97.0;
        for e in 0..EPOCHS {
            let x = e as f64;
            let val = 0.2 + seed * 0.1 + 0.8 / (1.0 + x * 0.1) + 0.002 * ((x * 1.7 + seed * 10.0).sin());
            let train = val * 0.9;
            if val < best {
                (best, best_epoch) = (val, e);
            }
            let line = format!(
                "{{\"time\": \"2026-11-22T23:{:02}:{:02}Z\", \"epoch\": {e}, \"step\": {}, \"metrics\": \
                 {{\"train_loss\": {train:.6}, \"val_loss\": {val:.6}, \"val_iou\": {:.6}, \"lr\": {lr}}}}}\n",
                e / 60,
                e % 60,
                (e + 1) * 400,
                1.0 - val
            );
            total += line.len() as u64;
            m.write_all(line.as_bytes()).unwrap();
            if e == 50 && i % 10 == 0 {
                m.write_all(b"{\"epoch\": 51, \"metrics\": {\"val_loss\": NaN}}\nnot json\n")
                    .unwrap();
            }
        }
        if killed {
            m.write_all(b"{\"time\": \"2026-11-23T00:00:00Z\", \"epo").unwrap();
        }
        m.flush().unwrap();
        if !killed {
            let result = serde_json::json!({
                "stop_reason": "max_epochs", "epochs": EPOCHS,
                "best": {"metric": "val_loss", "value": best, "epoch": best_epoch, "checkpoint": "checkpoints/best.ckpt"},
                "final": {"train_loss": 0.3, "val_loss": 0.33}, "test": {"test_loss": 0.34},
            });
            std::fs::write(dir.join("result.json"), serde_json::to_vec_pretty(&result).unwrap()).unwrap();
        }
        if failed {
            let stderr: String = (0..200).map(|k| format!("step {k}: loss nan\n")).collect::<String>()
                + "RuntimeError: CUDA error: device-side assert triggered\n";
            std::fs::write(dir.join("stderr.log"), stderr).unwrap();
        }
    }
    total
}
