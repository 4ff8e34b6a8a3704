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
fn tb_cancel_stops_the_container_and_marks_the_job_cancelled() {
    cluster();
    let w = Work::new();
    let f = w.batch(
        "long.toml",
        &format!("{}[[job]]\nname = \"long\"\ncommand = [\"sleep\", \"300\"]\n", head("")),
    );
    let mut tb = in_background(&w, &f);
    wait_until(90, "the job to run", || {
        std::fs::canonicalize(w.path().join("runs/latest")).is_ok() && w.state("long")["status"] == "running"
    });
    let out = w.run(&["cancel", "--job", "long"]);
    assert_exit(&out, 0);
    assert_eq!(tb.0.wait().unwrap().code(), Some(1));
    let s = w.state("long");
    assert_eq!(s["status"], "cancelled", "{s}");
    assert!(w.leftover_containers().is_empty(), "a container is left running");
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
fn resume_follows_submitted_jobs_by_id_and_retry_resubmits() {
    cluster();
    let w = Work::new();
    let f = w.batch(
        "mixed.toml",
        &format!(
            "{}[[job]]\nname = \"slow\"\ncommand = [\"sh\", \"-c\", \"sleep 6; echo done\"]\n\
             [[job]]\nname = \"flaky\"\ncommand = [\"sh\", \"-c\", \"if [ -e /out/marker ]; then echo second; else touch /out/marker; exit 4; fi\"]\n",
            head("")
        ),
    );
    let mut tb = in_background(&w, &f);
    wait_until(90, "the slow job to run", || {
        std::fs::canonicalize(w.path().join("runs/latest")).is_ok() && w.state("slow")["status"] == "running"
    });
    let id = w.state("slow")["slurm_job_id"].as_str().unwrap().to_string();
    // SAFETY: our own child.
    unsafe { libc::kill(tb.0.id() as i32, libc::SIGKILL) };
    tb.0.wait().unwrap();

    let out = w.run(&["resume"]);
    assert_exit(&out, 1);
    assert!(
        text(&out.stderr).contains(&format!("following slow again (Slurm job {id})")),
        "{}",
        text(&out.stderr)
    );
    let slow = w.state("slow");
    assert_eq!(slow["status"], "succeeded", "{slow}");
    assert_eq!(slow["slurm_job_id"], id.as_str(), "followed, not resubmitted");
    assert_eq!(w.stdout_of("slow"), "done\n");
    assert_eq!(w.state("flaky")["status"], "failed");

    let out = w.run(&["retry"]);
    assert_exit(&out, 0);
    let flaky = w.state("flaky");
    assert_eq!(flaky["status"], "succeeded", "{flaky}");
    assert_eq!(flaky["attempt"], 2);
    assert_ne!(flaky["slurm_job_id"], flaky["attempts"][0]["slurm_job_id"]);
    assert_eq!(w.stdout_of("flaky"), "second\n");
}
