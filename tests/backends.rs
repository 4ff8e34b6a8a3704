//! `tb resume`, `tb retry` and `tb cancel` on one scenario each, the same
//! batch file run on either backend: the local engine here, the Slurm
//! test cluster from `tests/slurm.rs` (`make test-slurm`). What a user sees
//! — states, exit codes, output, what ran how often — must not depend on
//! where the jobs ran.

use crate::common::*;

/// A batch file for `backend`: every job records that it ran.
fn file(backend: &str, concurrency: u32, jobs: &[(&str, &str)]) -> String {
    let mut text = format!(
        "[batch]\ndownloads = \"./downloads\"\nbackend = \"{backend}\"\ngpu_mode = \"env\"\nconcurrency = {concurrency}\n\
         [defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\n"
    );
    for (name, script) in jobs {
        let script = format!("echo $TB_JOB >> /downloads/ran; {script}").replace('"', "\\\"");
        text.push_str(&format!(
            "[[job]]\nname = \"{name}\"\ncommand = [\"sh\", \"-c\", \"{script}\"]\n"
        ));
    }
    text
}

/// The jobs that ran, once per run, sorted.
fn ran(w: &Work) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(w.path().join("downloads/ran"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// What a backend calls the run of a job: its container here, its Slurm
/// job on a cluster.
fn handle(w: &Work, job: &str) -> serde_json::Value {
    let s = w.state(job);
    if s["slurm_job_id"].is_null() {
        s["container_id"].clone()
    } else {
        s["slurm_job_id"].clone()
    }
}

fn kill9(tb: &mut Running) {
    // SAFETY: our own child.
    unsafe { libc::kill(tb.0.id() as i32, libc::SIGKILL) };
    tb.0.wait().unwrap();
}

const FLAKY: &str = "if [ -e /out/marker ]; then echo second; else touch /out/marker; echo first; exit 4; fi";

fn resume_and_retry_batch(backend: &str) -> String {
    file(
        backend,
        2,
        &[
            ("slow", "echo start; sleep 6; echo done"),
            ("flaky", FLAKY),
            ("later", "sleep 1; echo later"),
        ],
    )
}

/// A supervisor killed with SIGKILL while a job runs: `tb resume` follows
/// that run to its end (not a second one), runs what had not started, and
/// records how everything ended.
pub fn resume_scenario(backend: &str) {
    let _guard = unsupervised();
    let w = Work::new();
    let f = w.batch("mixed.toml", &resume_and_retry_batch(backend));
    let mut tb = in_background(&w, &f);
    wait_until(90, "the slow job to run", || {
        printed(&w, "slow", 1) && w.state("slow")["status"] == "running"
    });
    let before = handle(&w, "slow");
    kill9(&mut tb);
    assert_eq!(
        w.state("slow")["status"],
        "running",
        "the killed supervisor left it running"
    );

    let out = w.run(&["resume"]);
    assert_exit(&out, 1);
    assert!(
        text(&out.stderr).contains("following slow again"),
        "{}",
        text(&out.stderr)
    );
    let slow = w.state("slow");
    assert_eq!(slow["status"], "succeeded", "{slow}");
    assert_eq!(slow["attempt"], 1);
    assert_eq!(handle(&w, "slow"), before, "followed, not started again");
    assert_eq!(w.stdout_of("slow"), "start\ndone\n");
    assert_eq!(w.state("flaky")["status"], "failed");
    assert_eq!(w.state("flaky")["exit_code"], 4);
    assert_eq!(w.state("later")["status"], "succeeded");
    assert_eq!(ran(&w), ["flaky", "later", "slow"], "each job ran once");
    assert!(w.leftover_containers().is_empty());
}

/// `tb retry` runs what failed as a new attempt, keeps the old one, and
/// leaves what succeeded alone.
pub fn retry_scenario(backend: &str) {
    let w = Work::new();
    let f = w.batch("mixed.toml", &resume_and_retry_batch(backend));
    assert_exit(&w.run(&["batch", f.to_str().unwrap()]), 1);
    let slow_before = w.state("slow");
    assert_eq!(w.state("flaky")["status"], "failed");

    let out = w.run(&["retry"]);
    assert_exit(&out, 0);
    let flaky = w.state("flaky");
    assert_eq!(flaky["status"], "succeeded", "{flaky}");
    assert_eq!(flaky["attempt"], 2);
    assert_eq!(flaky["attempts"][0]["status"], "failed");
    assert_eq!(flaky["attempts"][0]["exit_code"], 4);
    assert_ne!(
        handle(&w, "flaky"),
        flaky["attempts"][0][if backend == "slurm" {
            "slurm_job_id"
        } else {
            "container_id"
        }],
        "a new run"
    );
    assert_eq!(w.stdout_of("flaky"), "second\n");
    assert_eq!(
        std::fs::read_to_string(w.job_dir("flaky").join("attempts/1/stdout.log")).unwrap(),
        "first\n"
    );
    assert_eq!(w.state("slow"), slow_before, "a succeeded job is not run again");
    assert_eq!(ran(&w), ["flaky", "flaky", "later", "slow"]);
    let again = w.run(&["retry"]);
    assert_exit(&again, 0);
    assert!(
        text(&again.stderr).contains("nothing to retry"),
        "{}",
        text(&again.stderr)
    );
}

/// `tb cancel --job` through a live supervisor stops one job while the
/// others go on; with the supervisor gone, `tb cancel` stops and records
/// the rest itself.
pub fn cancel_scenario(backend: &str) {
    let _guard = unsupervised();
    let w = Work::new();
    let f = w.batch(
        "long.toml",
        &file(
            backend,
            2,
            &[
                ("long", "echo up; sleep 300"),
                ("other", "echo up; sleep 300"),
                ("queued", "echo queued"),
            ],
        ),
    );
    let mut tb = in_background(&w, &f);
    wait_until(90, "both long jobs to run", || {
        printed(&w, "long", 1) && printed(&w, "other", 1)
    });
    let out = w.run(&["cancel", "--job", "long"]);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stderr), "long: cancelled\n");
    assert_eq!(w.state("long")["status"], "cancelled");
    assert_eq!(w.state("other")["status"], "running", "the other job goes on");
    wait_until(90, "the queued job to take the free slot", || {
        w.state("queued")["status"] == "succeeded"
    });
    // Its container is removed just after its end is written: let that
    // happen before the supervisor dies, as it would have by then.
    wait_until(30, "the ended runs to be removed", || {
        w.leftover_containers().len() == 1
    });

    kill9(&mut tb);
    let out = w.run(&["cancel"]);
    assert_exit(&out, 0);
    assert!(text(&out.stderr).contains("other: stopped"), "{}", text(&out.stderr));
    let other = w.state("other");
    assert_eq!(other["status"], "cancelled", "{other}");
    assert!(other["finished_at"].is_string());
    assert_eq!(w.stdout_of("other"), "up\n");
    assert!(w.leftover_containers().is_empty(), "a container is left");
    assert_eq!(ran(&w), ["long", "other", "queued"]);
}

#[test]
fn local_resume_follows_a_run_and_records_everything() {
    resume_scenario("local");
}

#[test]
fn local_retry_runs_failures_as_new_attempts() {
    retry_scenario("local");
}

#[test]
fn local_cancel_one_job_then_the_rest_without_a_supervisor() {
    cancel_scenario("local");
}
