//! Two batches of the same file at once: both run, in their own batch
//! directories, and the second says which batch already runs the file;
//! with `--skip-done` it waits for a job running in the other instead of
//! running it twice, and runs it only if that run does not succeed.

use crate::common::*;
use std::path::PathBuf;

/// One slow job that records each run; with `fail_first`, its first run
/// (whichever batch makes it) fails.
fn slow(fail_first: bool) -> String {
    let check = if fail_first { "[ $n -ge 1 ]" } else { "true" };
    format!(
        "[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"tb-base:bookworm\"\n[[job]]\nname = \"a\"\n\
         command = [\"sh\", \"-c\", \"n=$(wc -l < /downloads/ran 2>/dev/null || echo 0); echo a >> /downloads/ran; \
         sleep 4; echo ok; {check}\"]\n"
    )
}

fn runs(w: &Work) -> usize {
    lines_of(&w.path().join("downloads/ran"))
}

/// Starts `tb batch FILE` and waits until its job runs; its batch directory.
fn first_running(w: &Work, file: &std::path::Path) -> (Running, PathBuf) {
    let first = in_background(w, file);
    wait_until(60, "the first batch's job to run", || {
        std::fs::canonicalize(w.path().join("runs/latest")).is_ok() && runs(w) == 1
    });
    wait_until(10, "its state to say so", || w.state("a")["status"] == "running");
    (first, w.batch_dir())
}

fn id(dir: &std::path::Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_second_batch_of_a_running_file_warns_naming_the_first_and_both_run() {
    let w = Work::new();
    let f = w.batch("night.toml", &slow(false));
    let (mut first, first_dir) = first_running(&w, &f);
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 0);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "`{}` is already running as batch {} under another supervisor (pid {}",
            f.display(),
            id(&first_dir),
            first.0.id()
        )),
        "{err}"
    );
    assert_ne!(w.batch_dir(), first_dir, "a batch directory of its own");
    assert_eq!(first.0.wait().unwrap().code(), Some(0));
    assert_eq!(runs(&w), 2, "both ran the job");
}

#[test]
fn skip_done_waits_for_a_job_running_elsewhere_and_reuses_its_result() {
    let w = Work::new();
    let f = w.batch("night.toml", &slow(false));
    let (mut first, first_dir) = first_running(&w, &f);
    let out = w.run(&["batch", f.to_str().unwrap(), "--skip-done"]);
    assert_exit(&out, 0);
    let err = text(&out.stderr);
    let other = id(&first_dir);
    assert!(
        err.contains(&format!("a: skipped while it runs in batch {other}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("a: succeeded in batch {other}; reusing that result")),
        "{err}"
    );
    assert_eq!(runs(&w), 1, "the job ran twice");
    let state = w.state("a");
    assert_eq!(state["status"], "succeeded", "{state}");
    assert_eq!(
        state["reused_from"].as_str().map(PathBuf::from),
        Some(first_dir.join("jobs/a"))
    );
    assert!(state.get("waits_for").is_none(), "{state}");
    assert_eq!(w.stdout_of("a"), "ok\n", "its output came along");
    assert_eq!(first.0.wait().unwrap().code(), Some(0));
}

#[test]
fn skip_done_runs_a_job_here_when_its_run_elsewhere_fails() {
    let w = Work::new();
    let f = w.batch("night.toml", &slow(true));
    let (mut first, first_dir) = first_running(&w, &f);
    let out = w.run(&["batch", f.to_str().unwrap(), "--skip-done"]);
    assert_exit(&out, 0);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "a: it ended failed in batch {}; running it here",
            id(&first_dir)
        )),
        "{err}"
    );
    assert_eq!(first.0.wait().unwrap().code(), Some(1));
    assert_eq!(runs(&w), 2);
    let state = w.state("a");
    assert_eq!(state["status"], "succeeded", "{state}");
    assert_eq!(state["attempt"], 1);
    assert!(state["reused_from"].is_null(), "{state}");
}
