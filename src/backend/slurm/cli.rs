//! Slurm's command-line tools, run without blocking (`tokio::process`),
//! and the parsing of what they print, as pure functions.

use crate::run::Status;
use crate::settings::JobSpec;
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::Path;
use tokio::process::Command;

/// A job as `squeue` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    /// `PENDING`, `RUNNING`, `COMPLETED`, …
    pub state: String,
}

/// How long one Slurm command may take before tb gives up on it.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `program args`, its stdout on success; its stderr in the error.
async fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut command = Command::new(program);
    command.args(args).kill_on_drop(true);
    let out = tokio::time::timeout(COMMAND_TIMEOUT, command.output())
        .await
        .map_err(|_| anyhow::anyhow!("`{program}` did not answer within {}s", COMMAND_TIMEOUT.as_secs()))?
        .with_context(|| format!("failed to run `{program}`"))?;
    if !out.status.success() {
        anyhow::bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `sbatch --version`: `slurm 22.05.8`.
pub async fn version() -> anyhow::Result<String> {
    Ok(run("sbatch", &["--version"]).await?.trim().to_string())
}

/// The cluster's partition names.
pub async fn partitions() -> anyhow::Result<Vec<String>> {
    Ok(parse_partitions(&run("sinfo", &["-h", "-o", "%P"]).await?))
}

/// `sinfo -o %P`: one partition a line, the default marked `*`.
pub fn parse_partitions(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim().trim_end_matches('*').to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The gres lists (`sinfo -o %G`, one a line) of the nodes of
/// `partition`, or of the default partition.
pub async fn node_gres(partition: Option<&str>) -> anyhow::Result<Vec<String>> {
    Ok(parse_node_gres(&run("sinfo", &["-h", "-o", "%P|%G"]).await?, partition))
}

/// `sinfo -o %P|%G` lines: the gres of `partition`'s nodes, or of the
/// default partition's (marked `*`; all of them if none is).
pub fn parse_node_gres(text: &str, partition: Option<&str>) -> Vec<String> {
    let rows: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.trim().split_once('|'))
        .map(|(p, g)| (p.trim(), g.trim()))
        .collect();
    let default = rows.iter().any(|(p, _)| p.ends_with('*'));
    rows.into_iter()
        .filter(|(p, _)| match partition {
            Some(want) => p.trim_end_matches('*') == want,
            None => !default || p.ends_with('*'),
        })
        .map(|(_, g)| g.to_string())
        .collect()
}

/// `scontrol show job -d ID`: the job with the resources of each node.
pub async fn job_detail(id: &str) -> anyhow::Result<String> {
    run("scontrol", &["show", "job", "-d", id]).await
}

/// Runs `test -d path` on a node; `Ok(false)` when the node does not see
/// it, `Err` when no node could be had in time.
pub async fn node_sees(partition: Option<&str>, path: &Path) -> anyhow::Result<Result<(), String>> {
    let mut srun = Command::new("srun");
    srun.args(["--immediate=20", "--quiet", "--ntasks=1", "--time=1"]);
    if let Some(p) = partition {
        srun.arg(format!("--partition={p}"));
    }
    let out = srun
        .arg("test")
        .arg("-d")
        .arg(path)
        .output()
        .await
        .context("failed to run `srun`")?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if err.contains("Unable to allocate") || err.contains("unavailable") {
        anyhow::bail!("the cluster is busy: {err}");
    }
    Ok(Err(err))
}

/// Submits `script`; the Slurm job id.
pub async fn submit(script: &Path, extra: &[String]) -> anyhow::Result<String> {
    let mut args: Vec<&str> = vec!["--parsable"];
    args.extend(extra.iter().map(String::as_str));
    let script = script.to_string_lossy();
    args.push(&script);
    let out = run("sbatch", &args).await?;
    parse_sbatch(&out).ok_or_else(|| anyhow::anyhow!("sbatch answered no job id: {out:?}"))
}

/// `sbatch --parsable`: `17` or `17;cluster`.
pub fn parse_sbatch(text: &str) -> Option<String> {
    let id = text.trim().split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit() || c == '_')).then(|| id.to_string())
}

/// This user's jobs as Slurm lists them now (finished ones too, for
/// `MinJobAge`), by id.
pub async fn squeue() -> anyhow::Result<BTreeMap<String, Listed>> {
    // SAFETY: a plain getter.
    let uid = unsafe { libc::getuid() }.to_string();
    Ok(parse_squeue(
        &run("squeue", &["-h", "-t", "all", "-o", "%i|%T|%j", "-u", &uid]).await?,
    ))
}

/// `squeue -o %i|%T|%j` lines.
pub fn parse_squeue(text: &str) -> BTreeMap<String, Listed> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.trim().splitn(3, '|');
            let id = parts.next()?.trim();
            let state = parts.next()?.trim();
            let name = parts.next().unwrap_or_default().trim();
            (!id.is_empty()).then(|| {
                (
                    id.to_string(),
                    Listed {
                        name: name.to_string(),
                        state: state.to_string(),
                    },
                )
            })
        })
        .collect()
}

/// `JobState` and the exit code of a job, from `scontrol show job`.
pub async fn scontrol(id: &str) -> Option<(String, Option<i64>)> {
    parse_scontrol(&run("scontrol", &["show", "job", id]).await.ok()?)
}

/// `… JobState=FAILED Reason=… ExitCode=3:0 …`.
pub fn parse_scontrol(text: &str) -> Option<(String, Option<i64>)> {
    let field = |k: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")).map(String::from))
    };
    let state = field("JobState")?;
    let code = field("ExitCode").and_then(|c| c.split(':').next().and_then(|n| n.parse().ok()));
    Some((state, code))
}

/// Asks running jobs to stop: SIGTERM to their batch script (`tb exec`)
/// alone, which stops its container within tb's grace period — without
/// starting Slurm's KillWait, which could end `tb exec` first.
pub async fn terminate(ids: &[String]) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut args = vec!["--batch", "--signal=TERM"];
    args.extend(ids.iter().map(String::as_str));
    run("scancel", &args).await.map(|_| ())
}

/// Cancels those of `ids` that are still queued; ones already running are
/// left alone.
pub async fn scancel_pending(ids: &[String]) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut args = vec!["--state=PENDING"];
    args.extend(ids.iter().map(String::as_str));
    run("scancel", &args).await.map(|_| ())
}

/// Whether a failed Slurm command failed for want of the controller (it
/// may answer later) rather than refusing what it was asked.
pub fn unreachable(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}");
    [
        "Unable to contact slurm controller",
        "Socket timed out",
        "Connection refused",
        "temporarily unable",
        "Resource temporarily unavailable",
        "did not answer within",
    ]
    .iter()
    .any(|m| text.contains(m))
}

/// Cancels Slurm jobs outright (queued ones, or ones that would not stop).
pub async fn scancel(ids: &[String]) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let args: Vec<&str> = ids.iter().map(String::as_str).collect();
    run("scancel", &args).await.map(|_| ())
}

/// Whether Slurm still has the job in hand (it may yet run or finish).
pub fn in_flight(state: &str) -> bool {
    matches!(
        state,
        "PENDING"
            | "RUNNING"
            | "CONFIGURING"
            | "COMPLETING"
            | "SUSPENDED"
            | "REQUEUED"
            | "REQUEUE_HOLD"
            | "REQUEUE_FED"
            | "RESIZING"
            | "SIGNALING"
            | "STAGE_OUT"
            | "PREEMPTED"
            | "RESV_DEL_HOLD"
    )
}

/// The status of a job that Slurm ended before `tb exec` could say how.
pub fn status_of(slurm_state: &str) -> Status {
    match slurm_state {
        "CANCELLED" => Status::Cancelled,
        "TIMEOUT" | "DEADLINE" => Status::Timeout,
        "OUT_OF_MEMORY" => Status::Oom,
        "FAILED" | "NODE_FAIL" | "BOOT_FAIL" => Status::Failed,
        _ => Status::Lost,
    }
}

/// The Slurm job name of an attempt: how `tb resume` finds one whose id
/// was never recorded.
pub fn job_name(batch_id: &str, job: &str, attempt: u32) -> String {
    format!("tb-{batch_id}-{job}-{attempt}")
}

/// What the job script asks Slurm for.
pub struct Script<'a> {
    pub name: String,
    pub job_dir: &'a Path,
    pub job: &'a JobSpec,
    pub slurm: &'a crate::batch::SlurmSection,
    /// The tb executable the node runs.
    pub tb: &'a Path,
}

impl Script<'_> {
    /// `sbatch` options from the job's resources, then `tb exec` (exec'd,
    /// so that Slurm's SIGTERM reaches it).
    pub fn render(&self) -> anyhow::Result<String> {
        let job = self.job;
        let mut s = String::from("#!/bin/bash\n");
        let mut opt = |o: String| s.push_str(&format!("#SBATCH {o}\n"));
        opt(format!("--job-name={}", self.name));
        opt(format!("--output={}/slurm-%j.out", self.job_dir.display()));
        opt(format!("--chdir={}", self.job_dir.display()));
        if let Some(gres) = super::gres::request(job.gpus, self.slurm.shards_per_gpu)? {
            opt(format!("--gres={gres}"));
        }
        opt(format!(
            "--cpus-per-task={}",
            job.cpus.map(|c| c.ceil() as u64).unwrap_or(1)
        ));
        if let Some(m) = job.memory {
            opt(format!("--mem={}M", m.div_ceil(1 << 20)));
        }
        if let Some(t) = job.time_limit {
            // tb stops the container itself at the limit (status `timeout`,
            // checkpoint written); Slurm's own limit only backs it up.
            opt(format!("--time={}", t.as_secs().saturating_add(300).div_ceil(60)));
        }
        for (key, value) in [
            ("partition", &self.slurm.partition),
            ("account", &self.slurm.account),
            ("qos", &self.slurm.qos),
        ] {
            if let Some(v) = value {
                opt(format!("--{key}={v}"));
            }
        }
        s.push_str(&format!(
            "exec {} exec {}\n",
            shell_quote(&self.tb.display().to_string()),
            shell_quote(&self.job_dir.display().to_string())
        ));
        Ok(s)
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_tools_print() {
        assert_eq!(parse_partitions("debug*\ngpu\n\n"), ["debug", "gpu"]);
        assert_eq!(parse_sbatch("17\n").as_deref(), Some("17"));
        assert_eq!(parse_sbatch("42;cluster1\n").as_deref(), Some("42"));
        assert_eq!(parse_sbatch("sbatch: error\n"), None);
        assert_eq!(parse_sbatch(""), None);
        let q = parse_squeue("17|RUNNING|tb-b-a-1\n18|COMPLETED|tb-b-b-2\nbad\n");
        assert_eq!(q.len(), 2);
        assert_eq!(q["17"].state, "RUNNING");
        assert_eq!(q["18"].name, "tb-b-b-2");
        let text = "JobId=18 JobName=x\n   UserId=root(0) JobState=FAILED Reason=NonZeroExitCode\n   ExitCode=3:0 RunTime=00:00:01";
        assert_eq!(parse_scontrol(text), Some(("FAILED".to_string(), Some(3))));
        assert_eq!(parse_scontrol("slurm_load_jobs error: Invalid job id specified"), None);
    }

    #[test]
    fn slurm_states_map_to_statuses() {
        assert!(in_flight("PENDING") && in_flight("COMPLETING"));
        assert!(!in_flight("COMPLETED") && !in_flight("CANCELLED"));
        assert_eq!(status_of("OUT_OF_MEMORY"), Status::Oom);
        assert_eq!(status_of("TIMEOUT"), Status::Timeout);
        assert_eq!(status_of("NODE_FAIL"), Status::Failed);
        assert_eq!(
            status_of("COMPLETED"),
            Status::Lost,
            "completed without an outcome: tb exec never ran"
        );
    }

    #[test]
    fn the_job_script_asks_for_the_job_resources() {
        let job: JobSpec = serde_json::from_value(serde_json::json!({
            "name": "a", "image": "img", "command": null, "gpus": 2, "cpus": 1.5,
            "memory": 1610612736u64, "shm_size": 1, "time_limit": 3600.0, "env": {},
            "pass_env": [], "mounts": [], "code": null, "network": "bridge", "train": null
        }))
        .unwrap();
        let slurm = crate::batch::SlurmSection {
            partition: Some("gpu".into()),
            account: Some("lab".into()),
            qos: None,
            extra: vec![],
            ..Default::default()
        };
        let s = Script {
            name: job_name("b1", "a", 2),
            job_dir: Path::new("/shared/runs/b1/jobs/a"),
            job: &job,
            slurm: &slurm,
            tb: Path::new("/opt/tb's/tb"),
        }
        .render()
        .unwrap();
        assert_eq!(
            s,
            "#!/bin/bash\n#SBATCH --job-name=tb-b1-a-2\n#SBATCH --output=/shared/runs/b1/jobs/a/slurm-%j.out\n\
             #SBATCH --chdir=/shared/runs/b1/jobs/a\n#SBATCH --gres=gpu:2\n#SBATCH --cpus-per-task=2\n\
             #SBATCH --mem=1536M\n#SBATCH --time=65\n#SBATCH --partition=gpu\n#SBATCH --account=lab\n\
             exec '/opt/tb'\\''s/tb' exec '/shared/runs/b1/jobs/a'\n"
        );
    }

    #[test]
    fn a_share_of_a_gpu_asks_for_shards_once_their_number_is_known() {
        let shard = |per_gpu| crate::batch::SlurmSection {
            gres_share: Some(crate::batch::GresShare::Shard),
            shards_per_gpu: per_gpu,
            ..Default::default()
        };
        let job: JobSpec = serde_json::from_value(serde_json::json!({
            "name": "a", "image": "img", "command": null, "gpus": 0.25, "cpus": null,
            "memory": null, "shm_size": 1, "time_limit": null, "env": {},
            "pass_env": [], "mounts": [], "code": null, "network": "bridge", "train": null
        }))
        .unwrap();
        let render = |slurm| {
            Script {
                name: job_name("b1", "a", 1),
                job_dir: Path::new("/shared/runs/b1/jobs/a"),
                job: &job,
                slurm,
                tb: Path::new("/opt/tb"),
            }
            .render()
        };
        let (known, unknown) = (shard(Some(8)), shard(None));
        let s = render(&known).unwrap();
        assert!(s.contains("#SBATCH --gres=shard:2\n"), "{s}");
        assert!(!s.contains("gres=gpu"), "{s}");
        let e = render(&unknown).unwrap_err().to_string();
        assert!(e.contains("shards_per_gpu"), "{e}");
    }

    #[test]
    fn the_gres_of_a_partitions_nodes() {
        let text = "debug*|gpu:2,shard:6\ngpu|gpu:tesla:4(S:0-1),shard:64(S:0-1)\ngpu|(null)\ncpu|(null)\n";
        assert_eq!(parse_node_gres(text, None), ["gpu:2,shard:6"], "the default partition");
        assert_eq!(
            parse_node_gres(text, Some("gpu")),
            ["gpu:tesla:4(S:0-1),shard:64(S:0-1)", "(null)"]
        );
        assert_eq!(parse_node_gres(text, Some("debug")), ["gpu:2,shard:6"]);
        assert!(parse_node_gres(text, Some("none")).is_empty());
        assert_eq!(
            parse_node_gres("a|gpu:1\nb|gpu:2\n", None),
            ["gpu:1", "gpu:2"],
            "no default partition: all"
        );
    }
}
