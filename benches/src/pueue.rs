//! pueue, the task queue tb is measured against: a daemon of its own for
//! each measurement (its config, state, socket and pid file in the
//! measurement's directory, none of the user's), stopped by its pid when
//! the measurement ends — or when the bench dies.

use crate::jobs;
use crate::session::{dies_with_bench, stop};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub struct Pueue {
    bin: PathBuf,
    config: PathBuf,
    daemon: Child,
}

impl Pueue {
    /// Starts `pueued` with a private config in `dir`, running `parallel`
    /// tasks at a time.
    pub fn start(bin_dir: &Path, dir: &Path, parallel: usize) -> anyhow::Result<Pueue> {
        let home = dir.join("pueue");
        std::fs::create_dir_all(&home).with_context(|| format!("failed to create `{}`", home.display()))?;
        let config = home.join("pueue.yml");
        std::fs::write(&config, config_text(&home)).context("failed to write pueue's config")?;
        let mut cmd = Command::new(bin_dir.join("pueued"));
        cmd.arg("-c")
            .arg(&config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(home.join("pueued.log"))?));
        let daemon = dies_with_bench(&mut cmd).spawn().context("failed to start pueued")?;
        let mut p = Pueue {
            bin: bin_dir.join("pueue"),
            config,
            daemon,
        };
        p.wait_until_up(&home.join("pueue.socket"))?;
        p.run(&["parallel", &parallel.to_string()])?;
        Ok(p)
    }

    pub fn pid(&self) -> u32 {
        self.daemon.id()
    }

    fn wait_until_up(&mut self, socket: &Path) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Some(st) = self.daemon.try_wait()? {
                let log = std::fs::read_to_string(socket.with_file_name("pueued.log")).unwrap_or_default();
                let said: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).take(4).collect();
                bail!("pueued exited at start ({st}): {}", said.join(" | "));
            }
            if Instant::now() > until {
                bail!("pueued did not open its socket within 20 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn client(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("-c").arg(&self.config);
        c
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.client().args(args).output().context("failed to run pueue")?;
        if !out.status.success() {
            bail!(
                "pueue {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Queues `line` (run by pueue through `sh -c`).
    fn add(&self, line: &str) -> anyhow::Result<()> {
        self.run(&["add", "--", line]).map(drop)
    }

    /// Queues `n` jobs running `command`, each a `docker run` of the
    /// container tb makes for a job, its directory `dir/jobs/jNNNNN`.
    pub fn add_jobs(&self, dir: &Path, labels: &[(String, String)], n: usize, command: &[&str]) -> anyhow::Result<()> {
        for i in 0..n {
            let out = dir.join(format!("jobs/j{i:05}"));
            std::fs::create_dir_all(&out).with_context(|| format!("failed to create `{}`", out.display()))?;
            self.add(&jobs::shell_line(&jobs::docker_run(
                &out,
                &dir.join("downloads"),
                labels,
                command,
            )))?;
        }
        Ok(())
    }

    /// Returns once every task is done (`pueue wait` asks every 2 s; the
    /// figures come from the times pueued recorded, not from this).
    pub fn wait(&self) -> anyhow::Result<()> {
        self.run(&["wait", "--quiet"]).map(drop)
    }

    /// Every task, as pueued has it.
    pub fn tasks(&self) -> anyhow::Result<Vec<Task>> {
        tasks(&self.run(&["status", "--json"])?)
    }
}

impl Drop for Pueue {
    fn drop(&mut self) {
        let _ = stop(&mut self.daemon, Duration::from_secs(10));
    }
}

/// Everything in `home`: nothing of the user's pueue is read or touched.
fn config_text(home: &Path) -> String {
    let h = home.display();
    format!(
        "shared:\n  pueue_directory: {h}/data\n  runtime_directory: {h}\n  alias_file: {h}/pueue_aliases.yml\n  \
         use_unix_socket: true\n  unix_socket_path: {h}/pueue.socket\n  pid_path: {h}/pueue.pid\n  \
         shared_secret_path: {h}/shared_secret\n\
         client:\n  read_local_logs: true\n\
         daemon:\n  callback: null\n"
    )
}

/// A task that pueued ran to its end.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: u64,
    pub end: Option<SystemTime>,
    pub success: bool,
}

/// `pueue status --json`: tasks by id, each `status` one of `Queued`,
/// `Running` or `Done { start, end, result }`.
fn tasks(json: &str) -> anyhow::Result<Vec<Task>> {
    let v: serde_json::Value = serde_json::from_str(json).context("pueue status printed no JSON")?;
    let all = v["tasks"].as_object().context("pueue status has no tasks")?;
    let mut tasks: Vec<Task> = all
        .values()
        .map(|t| {
            let done = &t["status"]["Done"];
            let end = done["end"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(SystemTime::from);
            Task {
                id: t["id"].as_u64().unwrap_or_default(),
                end,
                success: done["result"] == "Success",
            }
        })
        .collect();
    tasks.sort_by_key(|t| t.id);
    Ok(tasks)
}

/// The wall of `n` tasks queued from `t0`: until pueued recorded the last
/// one's end. Fails unless all `n` ran and succeeded.
pub fn wall(tasks: &[Task], n: usize, t0: SystemTime) -> anyhow::Result<f64> {
    if tasks.len() != n || tasks.iter().any(|t| !t.success) {
        bail!(
            "pueue ran {} of {n} tasks, {} of them successfully",
            tasks.len(),
            tasks.iter().filter(|t| t.success).count()
        );
    }
    let last = tasks.iter().filter_map(|t| t.end).max().context("no task has an end")?;
    Ok(last.duration_since(t0)?.as_secs_f64())
}

/// The installed pueue's version (`pueued --version`).
pub fn version(bin_dir: &Path) -> String {
    Command::new(bin_dir.join("pueued"))
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .trim_start_matches("pueued ")
                .to_string()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_gives_each_task_s_end_and_result() {
        let json = r#"{"tasks":{
            "1":{"id":1,"status":{"Done":{"enqueued_at":"2026-11-30T22:00:00.5+01:00","start":"2026-11-30T22:00:01+01:00","end":"2026-11-30T22:00:03.25+01:00","result":"Success"}}},
            "0":{"id":0,"status":{"Done":{"enqueued_at":"2026-11-30T22:00:00+01:00","start":"2026-11-30T22:00:00+01:00","end":"2026-11-30T22:00:01+01:00","result":{"Failed":1}}}},
            "2":{"id":2,"status":{"Running":{"enqueued_at":"2026-11-30T22:00:00+01:00","start":"2026-11-30T22:00:03+01:00"}}}
        },"groups":{}}"#;
        let t = tasks(json).unwrap();
        assert_eq!(t.iter().map(|t| t.id).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(!t[0].success && t[1].success && !t[2].success);
        assert_eq!(t[2].end, None);
        let t0 = SystemTime::from(chrono::DateTime::parse_from_rfc3339("2026-11-30T21:00:00Z").unwrap());
        assert!(wall(&t, 3, t0).is_err(), "a failed or unfinished task is no figure");
        assert_eq!(wall(&t[1..2], 1, t0).unwrap(), 3.25);
    }

    #[test]
    fn the_config_keeps_everything_in_its_directory() {
        let text = config_text(Path::new("/x/p"));
        for line in text.lines().filter(|l| l.contains(": /")) {
            let path = line.split_once(": ").unwrap().1;
            assert!(Path::new(path).starts_with("/x/p"), "{line}");
        }
        assert!(text.contains("unix_socket_path: /x/p/pueue.socket"));
    }
}
