//! Two batches of the same file at once: both run, in their own batch
//! directories, and the second says which batch already runs the file.

use crate::common::*;
use std::path::PathBuf;

/// One slow job that records each run.
fn slow() -> String {
    "[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"tb-base:bookworm\"\n[[job]]\nname = \"a\"\n\
     command = [\"sh\", \"-c\", \"echo a >> /downloads/ran; sleep 4; echo ok\"]\n"
        .to_string()
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
    let f = w.batch("night.toml", &slow());
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
