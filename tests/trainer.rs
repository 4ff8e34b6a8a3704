//! The real trainer image under tb: a tiny surface-water job end to end,
//! and a job stopped mid-training that `tb retry` resumes from last.ckpt.

use crate::common::*;
use std::time::{Duration, Instant};

/// What `make image` builds; `make test` builds it before these tests run.
pub fn trainer_image() -> String {
    let image = std::env::var("TB_TRAINER_IMAGE").unwrap_or_else(|_| "tb-trainer:latest".into());
    let ok = std::process::Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "the trainer image {image} is missing: run `make image` first");
    image
}

fn tiny(image: &str, max_epochs: u32) -> String {
    format!(
        "[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"{image}\"\ngpus = 0\nnetwork = \"none\"\n\
         [defaults.train]\nmodel = \"unet\"\nmodel_args = {{ channels = 8, depth = 2 }}\n\
         data_args = {{ samples = 64, size = 32, seed = 1 }}\nmax_epochs = {max_epochs}\npatience = 0\nbatch_size = 16\n\
         [[job]]\nname = \"tiny\"\n"
    )
}

fn epochs(w: &Work, job: &str) -> Vec<u64> {
    std::fs::read_to_string(w.job_dir(job).join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn result(w: &Work, job: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(w.job_dir(job).join("result.json")).unwrap()).unwrap()
}

#[test]
fn a_tiny_surface_water_job_leaves_metrics_result_and_checkpoints() {
    let image = trainer_image();
    let w = Work::new();
    let f = w.batch("tiny.toml", &tiny(&image, 2));
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 0);
    let dir = w.job_dir("tiny");
    assert_eq!(epochs(&w, "tiny"), vec![1, 2], "one metrics line per validated epoch");
    let r = result(&w, "tiny");
    assert_eq!(r["stop_reason"], "max_epochs");
    assert_eq!(r["epochs"], 2);
    assert_eq!(r["best"]["metric"], "val_loss");
    assert!(r["best"]["value"].as_f64().unwrap().is_finite());
    assert!(r["test"]["test_iou"].is_number(), "the best checkpoint is tested: {r}");
    for f in ["checkpoints/best.ckpt", "checkpoints/last.ckpt"] {
        assert!(dir.join(f).metadata().unwrap().len() > 1000, "{f}");
    }
    assert!(dir.join("tensorboard").is_dir());
    assert_eq!(w.state("tiny")["status"], "succeeded");
}

#[test]
fn a_stopped_job_resumes_from_last_ckpt_under_tb_retry() {
    let image = trainer_image();
    let w = Work::new();
    let f = w.batch("resume.toml", &tiny(&image, 4));
    let mut child = w
        .tb()
        .args(["batch", f.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Stop it once two epochs are done (their checkpoint is written just
    // after their metrics line).
    let deadline = Instant::now() + Duration::from_secs(300);
    while !(std::fs::canonicalize(w.path().join("runs/latest")).is_ok() && epochs(&w, "tiny").len() >= 2) {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the job did not reach epoch 2 while running");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let stopped = w.state("tiny");
    assert_eq!(stopped["status"], "cancelled", "{stopped}");
    let done_before = epochs(&w, "tiny");
    assert!(
        done_before.len() < 4,
        "it finished before it could be stopped: {done_before:?}"
    );
    assert_eq!(result(&w, "tiny")["stop_reason"], "interrupted");
    assert!(w.job_dir("tiny").join("checkpoints/last.ckpt").is_file());

    let out = w.run(&["retry"]);
    assert_exit(&out, 0);
    let s = w.state("tiny");
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["attempt"], 2);
    assert_eq!(epochs(&w, "tiny"), vec![1, 2, 3, 4], "every epoch exactly once");
    let r = result(&w, "tiny");
    assert_eq!(r["stop_reason"], "max_epochs");
    let resumed = r["resumed_from_epoch"].as_u64().expect("a resumed run says so");
    assert!(
        resumed >= 2 && (resumed as usize) <= done_before.len(),
        "resumed from {resumed}, {done_before:?}"
    );
    let stderr = std::fs::read_to_string(w.job_dir("tiny").join("attempts/1/stderr.log")).unwrap();
    assert!(!stderr.is_empty(), "the first attempt's output is kept");
}
