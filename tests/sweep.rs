//! Sweeps and folds expand into jobs with stable names and the chosen
//! values in each job.json; `--skip-done` reuses what already succeeded.

use crate::common::*;
use std::process::Command;

const GRID: &str = "[batch]\ndownloads = \"./downloads\"\nconcurrency = 3\n[defaults]\nimage = \"tb-base:bookworm\"\ncommand = [\"true\"]\n\
    [defaults.train]\nmodel = \"unet\"\n[[job]]\nname = \"lr\"\n[job.sweep]\n\"train.lr\" = [1e-2, 1e-3, 1e-4]\n\
    \"train.model_args.channels\" = [16, 32]\n[job.cv]\nfolds = 3\n";

#[test]
fn a_3x2_grid_with_3_folds_runs_18_jobs_with_their_values() {
    let w = Work::new();
    let f = w.batch("grid.toml", GRID);
    let listed = w.run(&["validate", f.to_str().unwrap()]);
    assert_exit(&listed, 0);
    let names: Vec<String> = text(&listed.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 18);
    assert_eq!(
        text(&w.run(&["validate", f.to_str().unwrap()]).stdout),
        text(&listed.stdout),
        "stable"
    );

    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 0);
    let mut seen = std::collections::HashSet::new();
    for name in &names {
        let job: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(w.job_dir(name).join("job.json")).unwrap()).unwrap();
        let lr = job["swept"]["train.lr"].as_f64().unwrap();
        let ch = job["swept"]["train.model_args.channels"].as_i64().unwrap();
        assert_eq!(job["train"]["lr"].as_f64().unwrap(), lr, "{name}");
        assert_eq!(job["train"]["model_args"]["channels"].as_i64().unwrap(), ch, "{name}");
        assert_eq!(job["train"]["model"], "unet", "defaults.train is inherited");
        let fold = job["train"]["cv"]["fold"].as_i64().unwrap();
        assert_eq!(job["train"]["cv"]["folds"], 3);
        assert_eq!(name, &format!("lr_lr-{lr}_channels-{ch}_fold-{fold}"));
        assert!(seen.insert((lr.to_bits(), ch, fold)), "{name} repeats a combination");
        assert_eq!(w.state(name)["status"], "succeeded");
    }
    assert_eq!(seen.len(), 18);
}

#[test]
fn a_bad_sweep_is_refused_naming_the_key() {
    let w = Work::new();
    let f = w.batch(
        "bad.toml",
        "[defaults]\nimage = \"tb-base:bookworm\"\n[[job]]\nname = \"a\"\n[job.sweep]\n\"train.lr\" = []\n",
    );
    let out = w.run(&["validate", f.to_str().unwrap()]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.contains("line 5, column 1: job `a`: `sweep.\"train.lr\"` is an empty list"),
        "{err}"
    );
}

#[test]
fn skip_done_reuses_results_until_the_image_changes() {
    let w = Work::new();
    let tag = format!("tb-test-skip:{}", std::process::id());
    let build = |label: &str| {
        let mut child = Command::new("docker")
            .args(["build", "-q", "-t", &tag, "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("FROM tb-base:bookworm\nLABEL tb.test={label}\n").as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    };
    build("one");
    let f = w.batch(
        "skip.toml",
        &format!(
            "[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"{tag}\"\ncommand = [\"sh\", \"-c\", \"echo $TB_JOB >> /downloads/ran; echo done\"]\n\
             [[job]]\nname = \"a\"\nenv = {{ WHO = \"a\" }}\n[[job]]\nname = \"b\"\nenv = {{ WHO = \"b\" }}\n"
        ),
    );
    let ran = || {
        std::fs::read_to_string(w.path().join("downloads/ran"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_exit(&w.run(&["batch", f.to_str().unwrap(), "--skip-done"]), 0);
    assert_eq!(ran(), 2);
    let first = w.batch_dir();

    let out = w.run(&["batch", f.to_str().unwrap(), "--skip-done"]);
    assert_exit(&out, 0);
    assert_eq!(ran(), 2, "an unchanged batch started containers");
    assert_ne!(w.batch_dir(), first);
    let a = w.state("a");
    assert_eq!(a["status"], "succeeded");
    assert_eq!(a["reused_from"], first.join("jobs/a").display().to_string());
    assert_eq!(w.stdout_of("a"), "done\n", "the result's files come along");
    assert!(
        text(&out.stderr).contains("2 job(s) reused an earlier result"),
        "{}",
        text(&out.stderr)
    );

    build("two");
    assert_exit(&w.run(&["batch", f.to_str().unwrap(), "--skip-done"]), 0);
    assert_eq!(ran(), 4, "a new image must run the jobs again");
    assert!(w.state("a")["reused_from"].is_null());
    let _ = Command::new("docker").args(["image", "rm", &tag]).output();
}
