//! The same batch on a Slurm cluster: `make test-slurm` starts a single-node
//! cluster on this machine with two fake GPUs (tests/slurm/cluster.sh) and
//! runs these with `--ignored`; without a cluster they are ignored, not run
//! (all but the validation test, which needs no cluster).

use crate::common::*;

fn head(extra: &str) -> String {
    format!(
        "[batch]\ndownloads = \"./downloads\"\nbackend = \"slurm\"\ngpu_mode = \"env\"\n{extra}\
         [defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\n"
    )
}

fn cluster() {
    assert!(
        std::env::var_os("SLURM_CONF").is_some(),
        "no Slurm cluster: run these through `make test-slurm`, which starts one"
    );
}

#[test]
#[ignore = "needs the Slurm test cluster: make test-slurm"]
fn four_one_gpu_jobs_run_two_at_a_time_each_on_its_own_gpu() {
    cluster();
    let w = Work::new();
    let mut body = head("");
    body.push_str("[[job]]\nname = \"g1\"\n[[job]]\nname = \"g2\"\n[[job]]\nname = \"g3\"\n[[job]]\nname = \"g4\"\n");
    let body = body.replace(
        "gpus = 0\n",
        "gpus = 1\ncommand = [\"sh\", \"-c\", \"echo $NVIDIA_VISIBLE_DEVICES; sleep 4\"]\n",
    );
    let f = w.batch("gpu.toml", &body);
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 0);
    let mut jobs = Vec::new();
    for j in ["g1", "g2", "g3", "g4"] {
        let state = w.state(j);
        assert_eq!(state["status"], "succeeded", "{j}: {state}");
        assert!(state["slurm_job_id"].is_string(), "{state}");
        let device = w.stdout_of(j).trim().to_string();
        assert!(
            device == "0" || device == "1",
            "{j} saw NVIDIA_VISIBLE_DEVICES={device:?}"
        );
        jobs.push((j, interval(&state), device));
    }
    two_at_a_time_each_on_its_own_gpu(&jobs);
    assert!(w.leftover_containers().is_empty());
}

/// Jobs (name, run interval, the GPU id they saw) ran two at a time, and
/// never two at once on one GPU.
fn two_at_a_time_each_on_its_own_gpu(jobs: &[(&str, (f64, f64), String)]) {
    let intervals: Vec<(f64, f64)> = jobs.iter().map(|j| j.1).collect();
    assert_eq!(max_overlap(&intervals), 2, "two GPUs, two jobs at a time: {jobs:?}");
    for (a, ia, da) in jobs {
        for (b, ib, db) in jobs {
            if a < b && ia.0 < ib.1 && ib.0 < ia.1 {
                assert_ne!(da, db, "{a} and {b} ran at once on GPU {da}");
            }
        }
    }
}

#[test]
#[ignore = "needs the Slurm test cluster: make test-slurm"]
fn a_failing_job_is_failed_with_its_exit_code() {
    cluster();
    let w = Work::new();
    let f = w.batch(
        "fail.toml",
        &format!(
            "{}[[job]]\nname = \"three\"\ncommand = [\"sh\", \"-c\", \"echo bye >&2; exit 3\"]\n",
            head("")
        ),
    );
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 1);
    let s = w.state("three");
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["exit_code"], 3);
    assert_eq!(
        std::fs::read_to_string(w.job_dir("three").join("stderr.log")).unwrap(),
        "bye\n"
    );
}

#[test]
#[ignore = "needs the Slurm test cluster: make test-slurm"]
fn logs_and_report_match_the_local_backend() {
    cluster();
    let jobs = "[[job]]\nname = \"ok\"\ncommand = [\"sh\", \"-c\", \"printf 'one\\\\ntwo\\\\n'; echo err >&2\"]\n\
                [[job]]\nname = \"bad\"\ncommand = [\"sh\", \"-c\", \"echo partial; exit 2\"]\n";
    let run = |backend: &str| {
        let w = Work::new();
        let f = w.batch(
            "same.toml",
            &format!(
                "{}{jobs}",
                head("").replace("backend = \"slurm\"", &format!("backend = \"{backend}\""))
            ),
        );
        let out = w.run(&["batch", f.to_str().unwrap()]);
        assert_exit(&out, 1);
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(w.batch_dir().join("report.json")).unwrap()).unwrap();
        let logs: Vec<(String, String)> = ["ok", "bad"]
            .iter()
            .map(|j| {
                (
                    w.stdout_of(j),
                    std::fs::read_to_string(w.job_dir(j).join("stderr.log")).unwrap(),
                )
            })
            .collect();
        let states: Vec<(String, i64)> = ["ok", "bad"]
            .iter()
            .map(|j| {
                let s = w.state(j);
                (
                    s["status"].as_str().unwrap().to_string(),
                    s["exit_code"].as_i64().unwrap(),
                )
            })
            .collect();
        (logs, states, report)
    };
    let (local_logs, local_states, local_report) = run("local");
    let (slurm_logs, slurm_states, slurm_report) = run("slurm");
    assert_eq!(local_logs, slurm_logs);
    assert_eq!(local_states, slurm_states);
    assert_eq!(local_states[1], ("failed".to_string(), 2));
    let summary = |r: &serde_json::Value| {
        let jobs = r["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| (j["name"].clone(), j["status"].clone(), j["exit_code"].clone()))
            .collect::<Vec<_>>();
        (r["headline"]["counts"].clone(), jobs)
    };
    assert_eq!(summary(&local_report), summary(&slurm_report));
}

#[test]
#[ignore = "needs the Slurm test cluster: make test-slurm"]
fn slurm_resume_follows_a_run_and_records_everything() {
    cluster();
    crate::backends::resume_scenario("slurm");
}

#[test]
#[ignore = "needs the Slurm test cluster: make test-slurm"]
fn slurm_retry_runs_failures_as_new_attempts() {
    cluster();
    crate::backends::retry_scenario("slurm");
}

#[test]
#[ignore = "needs the Slurm test cluster: make test-slurm"]
fn slurm_cancel_one_job_then_the_rest_without_a_supervisor() {
    cluster();
    crate::backends::cancel_scenario("slurm");
}

/// This user's Slurm jobs of the newest batch, as squeue lists them.
#[test]
#[ignore = "needs the Slurm test cluster: make test-slurm"]
fn slurm_asha_prunes_with_scancel() {
    cluster();
    let _ = crate::prune::asha_scenario("slurm");
}

fn submitted(w: &Work) -> Vec<String> {
    let id = w.batch_dir().file_name().unwrap().to_string_lossy().into_owned();
    let out = std::process::Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%j"])
        .output()
        .unwrap();
    text(&out.stdout)
        .lines()
        .filter(|n| n.starts_with(&format!("tb-{id}-")))
        .map(String::from)
        .collect()
}

#[test]
#[ignore = "needs the Slurm test cluster: make test-slurm"]
fn a_deadline_in_the_past_submits_nothing_and_resume_submits_the_rest() {
    cluster();
    let w = Work::new();
    let f = w.batch(
        "late.toml",
        &format!(
            "{}[[job]]\nname = \"a\"\ncommand = [\"echo\", \"a\"]\n[[job]]\nname = \"b\"\ncommand = [\"echo\", \"b\"]\n",
            head("deadline = \"2020-01-01 00:00\"\n")
        ),
    );
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 1);
    // No job started: their states are as the plan has them (read as
    // `tb status` reads them; the files may not be written yet).
    assert_eq!(w.statuses(), ["pending", "pending"]);
    assert!(
        submitted(&w).is_empty(),
        "submitted after the deadline: {:?}",
        submitted(&w)
    );
    let log = std::fs::read_to_string(w.batch_dir().join("supervisor.log")).unwrap();
    assert!(log.contains("the deadline has passed: no new job starts"), "{log}");

    // Resumed under a deadline still in the past: still nothing submitted.
    let out = w.run(&["resume", "--deadline", "2020-01-02 00:00"]);
    assert_exit(&out, 1);
    assert!(
        submitted(&w).is_empty(),
        "submitted after the deadline: {:?}",
        submitted(&w)
    );
    assert_eq!(w.statuses(), ["pending", "pending"]);
    // The deadline moved a day ahead: every job is submitted and runs.
    let later = (chrono::Local::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d %H:%M")
        .to_string();
    let out = w.run(&["resume", "--deadline", &later]);
    assert_exit(&out, 0);
    assert_eq!(w.stdout_of("a"), "a\n");
    assert_eq!(w.state("b")["status"], "succeeded");
    assert_eq!(submitted(&w).len(), 2);
}

#[test]
#[ignore = "needs the Slurm test cluster: make test-slurm"]
fn a_slurm_batch_makes_no_call_to_the_local_engine() {
    cluster();
    let w = Work::new();
    // The submitting host's engine is a dead socket; the node's (this same
    // machine's, reached through the job's environment) is the real one.
    let dead = format!("unix://{}", w.path().join("no-engine.sock").display());
    let f = w.batch(
        "remote.toml",
        &format!(
            "{}[[job]]\nname = \"hi\"\ncommand = [\"sh\", \"-c\", \"echo hi from $TB_JOB\"]\n",
            head("[batch.slurm]\nextra = [\"--export=ALL,DOCKER_HOST=unix:///var/run/docker.sock\"]\n")
        ),
    );
    let validate = w
        .tb()
        .args(["validate", f.to_str().unwrap()])
        .env("DOCKER_HOST", &dead)
        .output()
        .unwrap();
    assert_exit(&validate, 0);
    let out = w
        .tb()
        .args(["batch", f.to_str().unwrap()])
        .env("DOCKER_HOST", &dead)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(!text(&out.stderr).contains("Docker"), "{}", text(&out.stderr));
    assert_eq!(w.stdout_of("hi"), "hi from hi\n");
    // And the local backend, with the same dead engine, says so.
    let local = w
        .tb()
        .args(["validate", f.to_str().unwrap(), "--backend", "local"])
        .env("DOCKER_HOST", &dead)
        .output()
        .unwrap();
    assert_exit(&local, 2);
    assert!(
        text(&local.stderr).contains("cannot reach the Docker engine"),
        "{}",
        text(&local.stderr)
    );
}

/// A batch of half-GPU jobs as `shard`s, the shards per GPU learned from
/// the cluster (the test cluster gives each of its two GPUs 3, so `0.5`
/// asks for `shard:2` and two at once cannot share a GPU).
fn halves(w: &Work, names: &[&str], command: &str) -> std::path::PathBuf {
    let mut body = head("[batch.slurm]\ngres_share = \"shard\"\n").replace(
        "gpus = 0\n",
        &format!("gpus = 0.5\ncommand = [\"sh\", \"-c\", \"{command}\"]\n"),
    );
    for n in names {
        body.push_str(&format!("[[job]]\nname = \"{n}\"\n"));
    }
    w.batch("halves.toml", &body)
}

#[test]
#[ignore = "needs the Slurm test cluster: make test-slurm"]
fn half_gpu_jobs_run_as_shards_each_on_the_nodes_id_of_its_gpu() {
    cluster();
    let w = Work::new();
    let names = ["h1", "h2", "h3", "h4"];
    let f = halves(&w, &names, "echo $NVIDIA_VISIBLE_DEVICES; sleep 4");
    let validate = w.run(&["validate", f.to_str().unwrap()]);
    assert_exit(&validate, 0);
    assert!(
        text(&validate.stderr).contains(", 3 shards per GPU (from sinfo)"),
        "{}",
        text(&validate.stderr)
    );
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 0);
    let mut jobs = Vec::new();
    for j in names {
        let state = w.state(j);
        assert_eq!(state["status"], "succeeded", "{j}: {state}");
        assert_eq!(state["gpu_share"], 0.5, "{j}: state.json records the share: {state}");
        let script = std::fs::read_to_string(w.job_dir(j).join("slurm.sh")).unwrap();
        assert!(script.contains("#SBATCH --gres=shard:2\n"), "{script}");
        let seen: Vec<String> = w.stdout_of(j).lines().map(String::from).collect();
        assert_eq!(seen.len(), 1, "{j} saw NVIDIA_VISIBLE_DEVICES={seen:?}");
        let device = seen[0].clone();
        assert!(
            device == "0" || device == "1",
            "{j} saw NVIDIA_VISIBLE_DEVICES={device:?}"
        );
        assert_eq!(state["gpus"], serde_json::json!([device]), "{j}: {state}");
        jobs.push((j, interval(&state), device));
    }
    // Two CPUs: two jobs at a time; 2 of a GPU's 3 shards each: never two
    // on one GPU.
    two_at_a_time_each_on_its_own_gpu(&jobs);
    let used: std::collections::BTreeSet<&str> = jobs.iter().map(|j| j.2.as_str()).collect();
    assert_eq!(used, ["0", "1"].into(), "{jobs:?}");
    assert!(w.leftover_containers().is_empty());
}

/// Polls `scontrol show job -d ID` until the job runs; its line's `GRES=`.
fn running_gres(id: &str) -> String {
    for _ in 0..60 {
        let out = std::process::Command::new("scontrol")
            .args(["show", "job", "-d", id])
            .output()
            .unwrap();
        let t = text(&out.stdout);
        if t.contains("JobState=RUNNING")
            && let Some(g) = t
                .split_whitespace()
                .find_map(|w| w.strip_prefix("GRES=").filter(|g| !g.is_empty()))
        {
            return g.to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("Slurm job {id} did not start");
}

#[test]
#[ignore = "needs the Slurm test cluster: make test-slurm"]
fn without_slurm_job_gpus_tb_exec_asks_scontrol_for_the_nodes_gpu_id() {
    cluster();
    let w = Work::new();
    let f = halves(&w, &["a"], "echo $NVIDIA_VISIBLE_DEVICES");
    assert_exit(&w.run(&["batch", f.to_str().unwrap()]), 0);
    let job_dir = w.job_dir("a");

    // The first GPU's shards taken, a job of 2 shards goes to the second,
    // where (ConstrainDevices) CUDA_VISIBLE_DEVICES says 0. Run tb exec
    // there as tb's script does, with the variables that name the GPU gone.
    let blocker = std::process::Command::new("sbatch")
        .args(["--parsable", "--gres=shard:2", "--job-name=tb-test-blocker"])
        .args(["--output=/dev/null", "--wrap", "sleep 60"])
        .output()
        .unwrap();
    assert!(blocker.status.success(), "{}", text(&blocker.stderr));
    let blocker = text(&blocker.stdout).trim().to_string();
    let _cancel = Cancel(blocker.clone());
    assert_eq!(
        running_gres(&blocker),
        "shard:2(IDX:0)",
        "Slurm places the first shards on the first GPU"
    );
    let wrap = format!(
        "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES; unset SLURM_JOB_GPUS SLURM_STEP_GPUS; exec {} exec {}",
        env!("CARGO_BIN_EXE_tb"),
        job_dir.display()
    );
    let out_file = w.path().join("by-hand.out");
    let by_hand = std::process::Command::new("sbatch")
        .args(["--parsable", "--wait", "--gres=shard:2"])
        .arg(format!("--output={}", out_file.display()))
        .args(["--wrap", &wrap])
        .output()
        .unwrap();
    let slurm_out = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert!(by_hand.status.success(), "{}\n{slurm_out}", text(&by_hand.stderr));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(job_dir.join("exec.json")).unwrap()).unwrap();
    assert_eq!(record["gpus"], serde_json::json!(["1"]), "{record}\n{slurm_out}");
    assert_eq!(record["gpu_share"], 0.5, "{record}");
    assert_eq!(record["outcome"]["status"], "succeeded", "{record}");
    assert!(w.stdout_of("a").ends_with("1\n"), "{:?}", w.stdout_of("a"));
    let config = std::fs::read_to_string(std::env::var("SLURM_CONF").unwrap()).unwrap();
    if config.contains("TaskPlugin=task/cgroup") {
        assert!(
            slurm_out.contains("CUDA_VISIBLE_DEVICES=0\n"),
            "the job's own count, which tb must not use: {slurm_out}"
        );
    } else {
        eprintln!("devices not constrained on this cluster: CUDA_VISIBLE_DEVICES is the node's id here");
    }

    // Outside Slurm nothing names the GPU: an error, not GPU 0.
    let out = w
        .tb()
        .args(["exec", job_dir.to_str().unwrap()])
        .env("CUDA_VISIBLE_DEVICES", "0")
        .env_remove("SLURM_JOB_ID")
        .env_remove("SLURM_JOB_GPUS")
        .env_remove("SLURM_STEP_GPUS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot tell which GPU(s) Slurm gave job `a` (a share of a GPU (gpus = 0.5))")
            && err.contains("is this a Slurm job?"),
        "{err}"
    );
}

/// Cancels a Slurm job when dropped, also when the test fails half way.
struct Cancel(String);

impl Drop for Cancel {
    fn drop(&mut self) {
        let _ = std::process::Command::new("scancel").arg(&self.0).output();
    }
}

#[test]
#[ignore = "needs the Slurm test cluster: make test-slurm"]
fn watch_runs_each_trigger_on_slurm_and_the_next_batch_warm_starts() {
    use crate::watch::{batches, drop_files, ended, once_ok, runs};
    cluster();
    let w = Work::new();
    for d in ["incoming", "shared"] {
        std::fs::create_dir_all(w.path().join(d)).unwrap();
    }
    // Each run leaves a checkpoint naming its batch, and records
    // `<batch> <the checkpoint it started from, or cold> <its content>`.
    let f = w.batch(
        "retrain.toml",
        &format!(
            "{}[[job]]\nname = \"train\"\nmounts = [\"./shared:/shared\"]\n\
             command = [\"sh\", \"-c\", 'mkdir -p /out/checkpoints && echo \"from-$TB_BATCH\" > /out/checkpoints/best.ckpt \
             && echo \"$TB_BATCH ${{TB_PREVIOUS_BEST:-cold}} $(cat ${{TB_PREVIOUS_BEST:-/dev/null}})\" >> /shared/runs.txt']\n",
            head("warm_start = true\n[batch.watch]\ndata = \"./incoming\"\nmin_new = 2\nsettle = \"1s\"\n")
        ),
    );
    let on_slurm = |batch: &std::path::Path| {
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(batch.join("jobs/train/state.json")).unwrap()).unwrap();
        assert_eq!(s["status"], "succeeded", "{s}");
        assert!(s["slurm_job_id"].is_string(), "{s}");
    };

    drop_files(&w, &["a.csv", "b.csv"], std::time::Duration::from_secs(60));
    once_ok(&w, &f, &[]);
    assert!(ended(&w, 1));
    let first = batches(&w).remove(0);
    on_slurm(&first);
    let id = first.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(runs(&w), [format!("{id} cold ")]);

    // Nothing new: nothing runs.
    once_ok(&w, &f, &["nothing is due"]);
    assert_eq!(runs(&w).len(), 1);

    drop_files(&w, &["c.csv", "d.csv"], std::time::Duration::from_secs(60));
    once_ok(&w, &f, &[]);
    assert!(ended(&w, 2));
    let second = batches(&w).remove(1);
    on_slurm(&second);
    let id2 = second.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(
        runs(&w)[1],
        format!("{id2} /previous/checkpoints/best.ckpt from-{id}"),
        "the second batch starts from the first's checkpoint"
    );
    assert!(w.leftover_containers().is_empty());
}

#[test]
fn a_share_on_slurm_without_gres_share_is_refused_at_validation() {
    let w = Work::scratch();
    let f = w.batch(
        "half.toml",
        "[batch]\nbackend = \"slurm\"\n[defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0.5\n[[job]]\nname = \"a\"\n",
    );
    let out = w.run(&["validate", f.to_str().unwrap()]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.contains("job `a` asks for a share of a GPU (gpus = 0.5), which Slurm grants only as a `shard` gres"),
        "{err}"
    );
    assert!(err.contains("add gres_share = \"shard\" to [batch.slurm]"), "{err}");
}
