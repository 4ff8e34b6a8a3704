//! Automatic retries and `tb retry`: a failed attempt runs again as a new
//! attempt, and every attempt's output and state is kept.

use crate::common::*;

/// Fails on its first attempt, succeeds once /out/marker exists.
const FLAKY: &str = "[[job]]\nname = \"flaky\"\ncommand = [\"sh\", \"-c\", \"if [ -e /out/marker ]; then echo second; else touch /out/marker; echo first; exit 4; fi\"]\n";

#[test]
fn a_failed_attempt_is_retried_and_both_are_kept() {
    let w = Work::new();
    let f = w.batch(
        "x.toml",
        &format!(
            "[batch]\ndownloads = \"./downloads\"\nretries = 1\n[defaults]\nimage = \"tb-base:bookworm\"\n{FLAKY}"
        ),
    );
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 0);
    let s = w.state("flaky");
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["attempt"], 2);
    assert_eq!(s["attempts"][0]["attempt"], 1);
    assert_eq!(s["attempts"][0]["status"], "failed");
    assert_eq!(s["attempts"][0]["exit_code"], 4);
    assert_eq!(w.stdout_of("flaky"), "second\n");
    let dir = w.job_dir("flaky");
    assert_eq!(
        std::fs::read_to_string(dir.join("attempts/1/stdout.log")).unwrap(),
        "first\n"
    );
    let old: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("attempts/1/state.json")).unwrap()).unwrap();
    assert_eq!(old["status"], "failed");
    assert!(
        text(&out.stderr).contains("flaky: running it again in 2s (retry 1 of 1)"),
        "{}",
        text(&out.stderr)
    );
    let logs = w.run(&["logs", "flaky", "--attempt", "1"]);
    assert_eq!(text(&logs.stdout), "first\n");
}

#[test]
fn without_retries_it_fails_and_tb_retry_runs_it_again() {
    let w = Work::new();
    let f = w.batch(
        "x.toml",
        &format!(
            "[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"tb-base:bookworm\"\n{FLAKY}[[job]]\nname = \"fine\"\ncommand = [\"true\"]\n"
        ),
    );
    assert_exit(&w.run(&["batch", f.to_str().unwrap()]), 1);
    assert_eq!(w.state("flaky")["status"], "failed");
    let fine_finished = w.state("fine")["finished_at"].clone();

    let out = w.run(&["retry"]);
    assert_exit(&out, 0);
    let s = w.state("flaky");
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["attempt"], 2);
    assert_eq!(s["attempts"][0]["status"], "failed");
    assert_eq!(
        w.state("fine")["finished_at"],
        fine_finished,
        "a succeeded job is not run again"
    );
    assert_eq!(w.state("fine")["attempt"], 1);
    let dir = w.job_dir("flaky");
    assert_eq!(
        std::fs::read_to_string(dir.join("attempts/1/stdout.log")).unwrap(),
        "first\n"
    );
    assert_eq!(std::fs::read_to_string(dir.join("stdout.log")).unwrap(), "second\n");

    let again = w.run(&["retry"]);
    assert_exit(&again, 0);
    assert!(
        text(&again.stderr).contains("nothing to retry"),
        "{}",
        text(&again.stderr)
    );
}
