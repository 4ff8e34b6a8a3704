//! Bring your own code: unmodified Lightning and PyTorch scripts, run in the
//! real trainer image, each swept over three values; tb reads what they
//! already write (TensorBoard event files, CSVLogger's metrics.csv,
//! `epoch=N val_loss=X` lines) and ranks, charts and reports them. The
//! expected best values are read back independently: with TensorBoard's own
//! reader, from the CSV itself, from the log.

use crate::common::*;
use std::path::{Path, PathBuf};

const TRAINER: &str = "tb-trainer:latest";

fn trainer_image() {
    assert!(
        std::process::Command::new("docker")
            .args(["image", "inspect", TRAINER])
            .output()
            .is_ok_and(|o| o.status.success()),
        "the image {TRAINER} is missing: run `make image` first"
    );
}

/// The repository's example scripts, under `jobs/`.
fn example(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs").join(dir)
}

/// A batch of three jobs of `command`, swept over `key` (an `args` key).
fn swept(code: &str, command: &str, args: &str, key: &str, values: &str) -> String {
    format!(
        "[batch]\ndownloads = \"./downloads\"\nconcurrency = 3\n\
         [defaults]\nimage = \"{TRAINER}\"\ngpus = 0\ncode = \"{}\"\ncommand = {command}\n\
         [defaults.args]\n{args}\n\
         [[job]]\nname = \"sweep\"\n[job.sweep]\n\"args.{key}\" = {values}\n",
        example(code).display()
    )
}

const LIGHTNING_ARGS: &str = "\"trainer.max_epochs\" = 3\n\"trainer.default_root_dir\" = \"/out\"\n\
                              \"trainer.enable_progress_bar\" = false\nseed_everything = 0";

fn report(w: &Work) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(w.batch_dir().join("report.json")).unwrap()).unwrap()
}

/// The jobs of `report.json`, best first: (name, rank, best value).
fn ranked(r: &serde_json::Value) -> Vec<(String, Option<u64>, Option<f64>)> {
    r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap().to_string(),
                j["rank"].as_u64(),
                j["best"]["value"].as_f64(),
            )
        })
        .collect()
}

/// What `tb status --json` says each job's best value is.
fn status_bests(w: &Work) -> std::collections::BTreeMap<String, f64> {
    w.status_json(&[])["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["job"].as_str().unwrap().to_string(),
                j["best"]["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The common checks: three jobs ranked 1–3 by `val_loss` from `source`,
/// each best equal to `truth(job)`, `tb status` agreeing, curves drawn.
fn check(w: &Work, source: &str, truth: impl Fn(&str) -> f64) {
    let r = report(w);
    assert_eq!(r["ranking"]["metric"], "val_loss", "{}", r["ranking"]);
    let jobs = ranked(&r);
    assert_eq!(jobs.len(), 3);
    let bests = status_bests(w);
    let page = std::fs::read_to_string(w.batch_dir().join("report.html")).unwrap();
    let curves = page.split("<h2>Learning curves</h2>").nth(1).unwrap_or_default();
    for (i, (name, rank, best)) in jobs.iter().enumerate() {
        assert_eq!(*rank, Some(i as u64 + 1), "{jobs:?}");
        let best = best.unwrap_or_else(|| panic!("{name} has no best value"));
        let expected = truth(name);
        assert!(
            (best - expected).abs() <= 1e-6 * expected.abs().max(1.0),
            "{name}: report's best {best} is not the minimum {expected} of its own files"
        );
        assert_eq!(bests[name], best, "tb status and report.json disagree on {name}");
        let job = &r["jobs"][i];
        assert_eq!(job["metrics"]["source"], source, "{job}");
        assert!(
            curves.contains(&format!("{name}</h3>")),
            "no curves for {name} in report.html"
        );
    }
    // The ranking is by the files' own minima: the truth, sorted.
    let mut truths: Vec<(f64, &str)> = jobs.iter().map(|(n, _, _)| (truth(n), n.as_str())).collect();
    truths.sort_by(|a, b| a.0.total_cmp(&b.0));
    let order: Vec<&str> = jobs.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        order,
        truths.iter().map(|t| t.1).collect::<Vec<_>>(),
        "ranked not by the files' minima"
    );
    assert!(curves.matches("<svg").count() >= 3, "no curve charts drawn");
    let md = std::fs::read_to_string(w.batch_dir().join("report.md")).unwrap();
    assert!(md.contains("Ranked by best `val_loss` (lower is better)."), "{md}");
}

/// `val_loss` of every job's event files, as TensorBoard's own
/// `EventAccumulator` reads them (run in the trainer image).
fn tensorboard_minimums(w: &Work) -> std::collections::BTreeMap<String, f64> {
    let script = "import glob, json, os\n\
                  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
                  out = {}\n\
                  for d in sorted(glob.glob('/b/jobs/*')):\n\
                  \x20   vals = []\n\
                  \x20   for f in glob.glob(d + '/**/events.out.tfevents.*', recursive=True):\n\
                  \x20       ea = EventAccumulator(f); ea.Reload()\n\
                  \x20       if 'val_loss' in ea.Tags()['scalars']:\n\
                  \x20           vals += [e.value for e in ea.Scalars('val_loss')]\n\
                  \x20   out[os.path.basename(d)] = min(vals)\n\
                  print(json.dumps(out))\n";
    let out = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!("{}:/b:ro", w.batch_dir().display()))
        .args([TRAINER, "python", "-c", script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

#[test]
fn lightning_cli_with_its_default_tensorboard_logger() {
    trainer_image();
    let w = Work::new();
    let f = w.batch(
        "cli.toml",
        &swept(
            "lightning_cli",
            "[\"python\", \"/code/main.py\", \"fit\"]",
            LIGHTNING_ARGS,
            "model.learning_rate",
            "[1e-3, 3e-4, 1e-4]",
        ),
    );
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 0);
    let truth = tensorboard_minimums(&w);
    check(&w, "tensorboard", |job| truth[job]);
    assert_eq!(ranked(&report(&w))[0].0, "sweep_learning_rate-0.001");
    assert!(
        text(&out.stderr).contains("best: sweep_learning_rate-0.001 val_loss="),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn lightning_cli_with_csvlogger() {
    trainer_image();
    let w = Work::new();
    let args = format!("{LIGHTNING_ARGS}\n\"trainer.logger\" = \"CSVLogger\"\n\"trainer.logger.save_dir\" = \"/out\"");
    let f = w.batch(
        "csv.toml",
        &swept(
            "lightning_cli",
            "[\"python\", \"/code/main.py\", \"fit\"]",
            &args,
            "model.learning_rate",
            "[1e-3, 3e-4, 1e-4]",
        ),
    );
    assert_exit(&w.run(&["batch", f.to_str().unwrap()]), 0);
    check(&w, "csv", |job| {
        let csv = find(&w.job_dir(job), "metrics.csv");
        let text = std::fs::read_to_string(&csv).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let col = header.iter().position(|h| *h == "val_loss").expect("a val_loss column");
        lines
            .filter_map(|l| l.split(',').nth(col).and_then(|v| v.parse::<f64>().ok()))
            .fold(f64::INFINITY, f64::min)
    });
}

#[test]
fn a_plain_pytorch_loop_printing_its_metrics() {
    trainer_image();
    let w = Work::new();
    let f = w.batch(
        "plain.toml",
        &swept(
            "plain_loop",
            "[\"python\", \"/code/train.py\"]",
            "epochs = 6",
            "lr",
            "[0.1, 0.03, 0.01]",
        ),
    );
    assert_exit(&w.run(&["batch", f.to_str().unwrap()]), 0);
    check(&w, "stdout", |job| {
        w.stdout_of(job)
            .lines()
            .filter_map(|l| l.split_whitespace().find_map(|kv| kv.strip_prefix("val_loss=")))
            .map(|v| v.parse::<f64>().unwrap())
            .fold(f64::INFINITY, f64::min)
    });
}

#[test]
fn a_job_that_logs_nothing_is_reported_with_where_tb_looked() {
    let w = Work::new();
    let f = w.batch(
        "quiet.toml",
        "[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\n\
         command = [\"python3\", \"-c\", \"import sys; print('training', sys.argv[1:])\"]\n\
         [[job]]\nname = \"quiet\"\n[job.sweep]\n\"args.seed\" = [1, 2, 3]\n",
    );
    assert_exit(&w.run(&["batch", f.to_str().unwrap()]), 0);
    assert_eq!(w.stdout_of("quiet_seed-2"), "training ['--seed=2']\n");
    let r = report(&w);
    for j in r["jobs"].as_array().unwrap() {
        assert!(j["best"].is_null() && j["rank"].is_null(), "{j}");
        assert!(j["metrics"]["source"].is_null(), "{j}");
        let looked = j["metrics"]["looked"].to_string();
        assert!(
            looked.contains("metrics.jsonl") && looked.contains("stdout.log"),
            "{looked}"
        );
    }
    let md = std::fs::read_to_string(w.batch_dir().join("report.md")).unwrap();
    assert!(
        md.contains(
            "No metrics found for 3 jobs (quiet_seed-1, quiet_seed-2, quiet_seed-3); tb looked for metrics.jsonl, \
             TensorBoard event files"
        ),
        "{md}"
    );
    let status = w.run(&["status"]);
    assert!(
        text(&status.stderr).contains("no metrics from quiet_seed-1, quiet_seed-2, quiet_seed-3: tb looked for"),
        "{}",
        text(&status.stderr)
    );
}

/// The one file named `name` under `dir`, at any depth.
fn find(dir: &Path, name: &str) -> PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_name() == name {
                return e.path();
            }
        }
    }
    panic!("no {name} under {}", dir.display());
}
