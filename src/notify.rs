//! `[batch] on_finish`: a command run once when a batch ends (a mail, a
//! chat message), told the outcome through its environment. It is a
//! courtesy: its failure is logged and never changes tb's exit status.

use crate::run::{BatchDir, JobState, Status};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `on_finish` may take before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(60);

const STATUSES: [Status; 9] = Status::ALL;

/// How a batch ended, as `on_finish` is told.
pub struct Ending<'a> {
    pub dir: &'a BatchDir,
    pub name: &'a str,
    /// `report.md`, when the report could be written.
    pub report: Option<&'a Path>,
    pub jobs: &'a [(String, JobState)],
    pub interrupted: bool,
}

/// `TB_REPORT`, `TB_BATCH_DIR`, `TB_BATCH` (the directory's name, as jobs
/// see it), `TB_BATCH_NAME`, `TB_BATCH_STATUS`, `TB_TOTAL`,
/// `TB_SUCCEEDED`, `TB_FAILED` (every job that did not succeed, but for
/// pruned ones: a pruned trial is no failure) and `TB_COUNT_<STATUS>` for
/// each status.
pub fn environment(e: &Ending) -> Vec<(String, String)> {
    let count = |s: Status| e.jobs.iter().filter(|(_, j)| j.status() == s).count();
    let succeeded = count(Status::Succeeded);
    let mut env = vec![
        ("TB_BATCH_DIR".to_string(), e.dir.path.display().to_string()),
        ("TB_BATCH".to_string(), e.dir.id.clone()),
        ("TB_BATCH_NAME".to_string(), e.name.to_string()),
        (
            "TB_BATCH_STATUS".to_string(),
            if e.interrupted { "interrupted" } else { "finished" }.to_string(),
        ),
        ("TB_TOTAL".to_string(), e.jobs.len().to_string()),
        ("TB_SUCCEEDED".to_string(), succeeded.to_string()),
        (
            "TB_FAILED".to_string(),
            (e.jobs.len() - succeeded - count(Status::Pruned)).to_string(),
        ),
    ];
    if let Some(report) = e.report {
        env.push(("TB_REPORT".to_string(), report.display().to_string()));
    }
    for s in STATUSES {
        env.push((format!("TB_COUNT_{}", s.as_str().to_uppercase()), count(s).to_string()));
    }
    env
}

/// Runs `command` in the batch directory with [`environment`], its output
/// logged line by line; waits at most `timeout`, then kills it.
pub fn run(command: &[String], ending: &Ending, timeout: Duration) {
    let Some((program, args)) = command.split_first() else {
        return;
    };
    let shown = command.join(" ");
    tracing::info!("on_finish: running `{shown}`");
    let child = Command::new(program)
        .args(args)
        .envs(environment(ending))
        .current_dir(&ending.dir.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("on_finish: cannot run `{program}`: {e}");
            return;
        }
    };
    // Its output goes to the log (stderr and supervisor.log), never to
    // stdout, which carries tb's data.
    let readers: Vec<_> = [
        child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>),
        child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|r| {
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                tracing::info!("on_finish: {line}");
            }
        })
    })
    .collect();
    let began = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if began.elapsed() < timeout => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!("on_finish: `{shown}` still ran after {}s; killed it", timeout.as_secs());
                break None;
            }
            Err(e) => {
                tracing::warn!("on_finish: failed to wait for `{shown}`: {e}");
                break None;
            }
        }
    };
    // A background process it left holding the pipes must not hold up tb.
    let deadline = Instant::now() + Duration::from_secs(2);
    for r in readers {
        while !r.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if r.is_finished() {
            let _ = r.join();
        }
    }
    match status {
        Some(s) if s.success() => tracing::info!("on_finish: `{shown}` done"),
        Some(s) => match s.code() {
            Some(code) => tracing::warn!("on_finish: `{shown}` exited with code {code}"),
            None => tracing::warn!("on_finish: `{shown}` was killed by a signal"),
        },
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_counts_every_status() {
        let dir = BatchDir::new("/runs/2026-11-22_230000_night".into(), "2026-11-22_230000_night".into());
        let job = |s: Status| {
            let mut j = JobState::pending();
            if s != Status::Pending {
                j.begin_attempt(None);
                j.ended(&crate::run::Outcome {
                    status: s,
                    ..crate::run::Outcome::failed_before_start(String::new(), None)
                });
            }
            j
        };
        let jobs = vec![
            ("a".to_string(), job(Status::Succeeded)),
            ("b".to_string(), job(Status::Oom)),
            ("c".to_string(), job(Status::Pending)),
        ];
        let report = Path::new("/runs/2026-11-22_230000_night/report.md");
        let env = environment(&Ending {
            dir: &dir,
            name: "night",
            report: Some(report),
            jobs: &jobs,
            interrupted: false,
        });
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("TB_REPORT"), Some("/runs/2026-11-22_230000_night/report.md"));
        assert_eq!(get("TB_BATCH"), Some("2026-11-22_230000_night"));
        assert_eq!(get("TB_TOTAL"), Some("3"));
        assert_eq!(get("TB_SUCCEEDED"), Some("1"));
        assert_eq!(get("TB_FAILED"), Some("2"));
        assert_eq!(get("TB_COUNT_OOM"), Some("1"));
        assert_eq!(get("TB_COUNT_LOST"), Some("0"));
        assert_eq!(get("TB_BATCH_STATUS"), Some("finished"));
    }
}
