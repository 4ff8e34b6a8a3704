//! The same batch on a Slurm cluster: `make test-slurm` starts a single-node
//! cluster on this machine with two fake GPUs (tests/slurm/cluster.sh) and
//! runs these with `--ignored`; without a cluster they are ignored, not run.

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
    let intervals: Vec<(f64, f64)> = jobs.iter().map(|j| j.1).collect();
    assert_eq!(max_overlap(&intervals), 2, "two GPUs, two jobs at a time: {jobs:?}");
    for (a, ia, da) in &jobs {
        for (b, ib, db) in &jobs {
            if a < b && ia.0 < ib.1 && ib.0 < ia.1 {
                assert_ne!(da, db, "{a} and {b} ran at once on GPU {da}");
            }
        }
    }
    assert!(w.leftover_containers().is_empty());
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
    for j in ["a", "b"] {
        let s = w.state(j);
        assert_eq!(s["status"], "pending", "{s}");
        assert!(s["slurm_job_id"].is_null(), "{s}");
    }
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
    assert_eq!(w.state("a")["status"], "pending");
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
