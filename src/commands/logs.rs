//! `tb logs [BATCH] [JOB]`: print or follow captured output: one job's,
//! across its attempts, or every job's with each line prefixed by its name.

use crate::cli::{GlobalArgs, LogsArgs};
use crate::commands::status::supervised;
use crate::error::hinted;
use crate::exit::Exit;
use crate::run::{BatchDir, BatchState, JobState};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a followed file is read again.
const POLL: Duration = Duration::from_millis(250);

pub fn run(args: &LogsArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let (dir, job) = target(&args.target, &global.runs_dir)?;
    let stream = if args.stderr { "stderr.log" } else { "stdout.log" };
    let mut out = std::io::stdout().lock();
    let written = match job {
        Some(job) => one(&dir, &job, stream, args, &mut out),
        None => all(&dir, stream, args, &mut out),
    };
    match written {
        // The reader went away (`| head`): not an error.
        Err(e) if e.downcast_ref::<std::io::Error>().map(|e| e.kind()) == Some(std::io::ErrorKind::BrokenPipe) => {
            Ok(Exit::Success)
        }
        other => other.map(|_| Exit::Success),
    }
}

/// `[]`: every job of the newest batch. `[NAME]`: that job of the newest
/// batch if it has one, else the batch so named (every job of it).
/// `[BATCH, JOB]`: as said.
fn target(values: &[String], runs_dir: &Path) -> anyhow::Result<(BatchDir, Option<String>)> {
    match values {
        [] => Ok((BatchDir::open(runs_dir, None)?, None)),
        [name] => {
            let newest = BatchDir::open(runs_dir, None);
            if let Ok(dir) = &newest
                && dir.read_batch()?.jobs.contains(name)
            {
                return Ok((dir.clone(), Some(name.clone())));
            }
            if let Ok(dir) = BatchDir::open(runs_dir, Some(name)) {
                return Ok((dir, None));
            }
            let dir = newest?;
            Err(no_such_job(&dir, name, " nor is there a batch so named")?)
        }
        [batch, job] => {
            let dir = BatchDir::open(runs_dir, Some(batch))?;
            if !dir.read_batch()?.jobs.contains(job) {
                return Err(no_such_job(&dir, job, "")?);
            }
            Ok((dir, Some(job.clone())))
        }
        _ => unreachable!("clap takes at most two values"),
    }
}

fn no_such_job(dir: &BatchDir, job: &str, also: &str) -> anyhow::Result<anyhow::Error> {
    let names = dir.read_batch()?.jobs;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let hint = match crate::batch::suggest(job, &refs) {
        Some(h) => h.replace("valid keys here", "the jobs are"),
        None => format!("the jobs of batch {} are: {}", dir.id, names.join(", ")),
    };
    Ok(hinted(format!("batch {} has no job `{job}`{also}", dir.id), hint))
}

/// One job's output; with `-f`, followed across attempts until it ends.
fn one(dir: &BatchDir, job: &str, stream: &str, args: &LogsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let state = dir.read_job_state(job)?;
    let current = dir.job_dir(job).join(stream);
    if let Some(n) = args.attempt.filter(|&n| n != state.attempt()) {
        let p = attempt_path(dir, job, stream, n, &state)?;
        return copy_file(&p, out);
    }
    if !args.follow {
        return copy_file(&current, out);
    }
    let mut f = Follower::new(current);
    loop {
        // Decided before the last read, so that nothing written before
        // the end is missed.
        let done = ended(dir, job);
        let mut buf = Vec::new();
        f.read(&mut buf)?;
        out.write_all(&buf)?;
        out.flush()?;
        if done {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// Every job's output, each line prefixed `name | `; with `-f`, the jobs
/// that run or may still run, followed until each has ended.
fn all(dir: &BatchDir, stream: &str, args: &LogsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let batch = dir.read_batch()?;
    let width = batch.jobs.iter().map(|j| j.chars().count()).max().unwrap_or(0);
    let follow = args.follow && args.attempt.is_none() && supervised(dir, &batch);
    if !follow {
        for job in &batch.jobs {
            let state = dir.read_job_state(job)?;
            let path = match args.attempt.filter(|&n| n != state.attempt()) {
                Some(n) if dir.job_dir(job).join("attempts").join(n.to_string()).is_dir() => {
                    attempt_path(dir, job, stream, n, &state)?
                }
                Some(_) => continue,
                None => dir.job_dir(job).join(stream),
            };
            let mut bytes = Vec::new();
            if let Ok(mut f) = File::open(&path) {
                f.read_to_end(&mut bytes)?;
            }
            let mut lines = Prefixed::new(job, width);
            lines.write(&bytes, out)?;
            lines.end(out)?;
        }
        return Ok(());
    }
    let mut followed: Vec<(Follower, Prefixed, &String)> = batch
        .jobs
        .iter()
        .filter(|job| !ended(dir, job))
        .map(|job| {
            (
                Follower::new(dir.job_dir(job).join(stream)),
                Prefixed::new(job, width),
                job,
            )
        })
        .collect();
    if followed.is_empty() {
        eprintln!(
            "batch {}: no job runs or waits to run; `tb logs {} JOB` prints one",
            dir.id, dir.id
        );
    }
    while !followed.is_empty() {
        let mut still = Vec::new();
        for (mut f, mut lines, job) in followed {
            let done = ended(dir, job);
            let mut buf = Vec::new();
            f.read(&mut buf)?;
            lines.write(&buf, out)?;
            if done {
                lines.end(out)?;
            } else {
                still.push((f, lines, job));
            }
        }
        out.flush()?;
        followed = still;
        if !followed.is_empty() {
            std::thread::sleep(POLL);
        }
    }
    Ok(())
}

fn attempt_path(dir: &BatchDir, job: &str, stream: &str, n: u32, state: &JobState) -> anyhow::Result<PathBuf> {
    let p = dir.job_dir(job).join("attempts").join(n.to_string()).join(stream);
    if !p.exists() {
        return Err(hinted(
            format!("job `{job}` has no attempt {n}"),
            format!("its current attempt is {}", state.attempt()),
        ));
    }
    Ok(p)
}

fn copy_file(path: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    // Not there yet: the job has not started.
    if let Ok(mut f) = File::open(path) {
        std::io::copy(&mut f, out)?;
    }
    out.flush()?;
    Ok(())
}

/// The job has ended and will not start again: it succeeded or was
/// cancelled, or no supervisor will run it again (the batch is over, or
/// its automatic retries are used up). A state that cannot be read ends
/// the following too.
fn ended(dir: &BatchDir, job: &str) -> bool {
    let (Ok(state), Ok(batch)) = (dir.read_job_state(job), dir.read_batch()) else {
        return true;
    };
    if !supervised(dir, &batch) {
        return true;
    }
    state.status().is_final() && !may_run_again(&batch, &state)
}

/// A job that ended badly while its batch still runs starts again if the
/// batch's automatic retries allow: the supervisor gives each job
/// `retries` re-runs per run of the batch (`tb batch`, `tb retry`).
fn may_run_again(batch: &BatchState, state: &JobState) -> bool {
    let retryable = state.status().is_retryable(batch.settings.continue_on_timeout);
    if !retryable {
        return false;
    }
    let since = batch.supervisor.as_ref().map(|s| s.started_at);
    let this_run =
        state.attempts().iter().filter(|a| a.started_at >= since).count() + usize::from(state.started_at() >= since);
    this_run <= batch.settings.retries as usize
}

/// Reads a job's current output file as it grows, and goes on with the
/// next attempt's file when the supervisor moves this one to
/// `attempts/<n>/`: the old file is read to its end first, so nothing is
/// lost or printed twice.
struct Follower {
    path: PathBuf,
    /// The open file and its inode.
    file: Option<(File, u64)>,
}

impl Follower {
    fn new(path: PathBuf) -> Follower {
        Follower { path, file: None }
    }

    fn read(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        if let Some((f, _)) = &mut self.file {
            f.read_to_end(out)?;
        }
        let Ok(meta) = std::fs::metadata(&self.path) else {
            // Moved away, and the next attempt's file is not there yet.
            return Ok(());
        };
        match &mut self.file {
            Some((f, ino)) if *ino == meta.ino() => {
                if meta.len() < f.stream_position()? {
                    // Truncated in place (the move failed): start over.
                    f.seek(SeekFrom::Start(0))?;
                    f.read_to_end(out)?;
                }
            }
            _ => {
                // A new file: the old one had its last bytes written before
                // it was moved, so read them before switching.
                if let Some((old, _)) = &mut self.file {
                    old.read_to_end(out)?;
                }
                if let Ok(mut f) = File::open(&self.path) {
                    let ino = f.metadata()?.ino();
                    f.read_to_end(out)?;
                    self.file = Some((f, ino));
                }
            }
        }
        Ok(())
    }
}

/// Writes whole lines with a `name | ` prefix, holding back a partial one.
struct Prefixed {
    prefix: Vec<u8>,
    partial: Vec<u8>,
}

impl Prefixed {
    fn new(job: &str, width: usize) -> Prefixed {
        Prefixed {
            prefix: format!("{job:<width$} | ").into_bytes(),
            partial: Vec::new(),
        }
    }

    fn write(&mut self, bytes: &[u8], out: &mut impl Write) -> std::io::Result<()> {
        self.partial.extend_from_slice(bytes);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        for line in self.partial[..end].split(|&b| b == b'\n') {
            out.write_all(&self.prefix)?;
            out.write_all(line)?;
            out.write_all(b"\n")?;
        }
        self.partial.drain(..=end);
        Ok(())
    }

    /// The output ended: a last line without its newline is printed too.
    fn end(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if !self.partial.is_empty() {
            out.write_all(&self.prefix)?;
            out.write_all(&self.partial)?;
            out.write_all(b"\n")?;
            self.partial.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_reads_across_a_move_without_loss_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut f = Follower::new(path.clone());
        let mut got = Vec::new();
        f.read(&mut got).unwrap();
        assert!(got.is_empty());
        let mut w = File::create(&path).unwrap();
        w.write_all(b"one\n").unwrap();
        f.read(&mut got).unwrap();
        // The attempt writes its last line, then the next one begins.
        w.write_all(b"two\n").unwrap();
        std::fs::create_dir(dir.path().join("1")).unwrap();
        std::fs::rename(&path, dir.path().join("1/stdout.log")).unwrap();
        f.read(&mut got).unwrap();
        let mut w = File::create(&path).unwrap();
        w.write_all(b"three\n").unwrap();
        f.read(&mut got).unwrap();
        f.read(&mut got).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), "one\ntwo\nthree\n");
    }

    #[test]
    fn a_last_line_missed_before_the_switch_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut w = File::create(&path).unwrap();
        w.write_all(b"a\n").unwrap();
        let mut f = Follower::new(path.clone());
        let mut got = Vec::new();
        f.read(&mut got).unwrap();
        w.write_all(b"b\n").unwrap();
        std::fs::rename(&path, dir.path().join("old.log")).unwrap();
        File::create(&path).unwrap().write_all(b"c\n").unwrap();
        f.read(&mut got).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), "a\nb\nc\n");
    }

    #[test]
    fn prefixed_lines_wait_for_their_newline() {
        let mut out = Vec::new();
        let mut p = Prefixed::new("ab", 4);
        p.write(b"x\ny", &mut out).unwrap();
        p.write(b"z\n", &mut out).unwrap();
        p.write(b"tail", &mut out).unwrap();
        p.end(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "ab   | x\nab   | yz\nab   | tail\n");
    }
}
