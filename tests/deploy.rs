//! Retraining on new data with the real trainer image: a batch that warm
//! starts from the previous batch's best checkpoint begins lower than a
//! cold start on the same data, and `[batch.deploy]` promotes a model only
//! when it scores better than the deployed one on the new batch's test
//! split (both outcomes forced by a model that learned and one that could
//! not), recording both scores. Command jobs are compared by what they
//! logged, and `tb deploy` does it all by hand.
//!
//! `TB_TRAINER_SRC=<repo>/trainer-py/src` runs the trainer from that source
//! (mounted as the jobs' `code`, first on `PYTHONPATH`) instead of the one
//! installed in the image: trainer changes tried before `make image`.

use crate::common::*;
use crate::trainer::trainer_image;
use std::path::{Path, PathBuf};

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A tiny trainer batch named `name`: `epochs` epochs at `lr` on the
/// synthetic tiles of `data_seed`; `extra` goes into `[batch]`, `train`
/// into `[defaults.train]`.
fn trainer_batch(image: &str, name: &str, extra: &str, data_seed: u32, epochs: u32, lr: f64, train: &str) -> String {
    let code = std::env::var("TB_TRAINER_SRC")
        .map(|src| format!("code = \"{src}\"\n"))
        .unwrap_or_default();
    format!(
        "[batch]\nname = \"{name}\"\ndownloads = \"./downloads\"\n{extra}\n\
         [defaults]\nimage = \"{image}\"\ngpus = 0\nnetwork = \"none\"\n{code}\
         [defaults.train]\nmodel = \"unet\"\nmodel_args = {{ channels = 8, depth = 2 }}\n\
         data_args = {{ samples = 96, size = 32, seed = {data_seed} }}\nmax_epochs = {epochs}\nlr = {lr:?}\n\
         patience = 0\nbatch_size = 16\n{train}\n\
         [[job]]\nname = \"seg\"\n"
    )
}

/// Runs `body` as a batch file and returns its batch directory.
fn run_batch(w: &Work, file: &str, body: &str, code: i32) -> PathBuf {
    let f = w.batch(file, body);
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, code);
    PathBuf::from(text(&out.stdout).trim())
}

fn first_val_loss(batch: &Path) -> f64 {
    let metrics = std::fs::read_to_string(batch.join("jobs/seg/metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    assert_eq!(first["epoch"], 1);
    first["metrics"]["val_loss"].as_f64().unwrap()
}

fn history(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("history.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_warm_start_begins_lower_than_a_cold_start_on_the_same_data() {
    let image = trainer_image();
    let w = Work::new();
    // A: the first batch of its name, so it starts cold although it asks.
    let a = run_batch(
        &w,
        "a.toml",
        &trainer_batch(&image, "lakes", "warm_start = true", 1, 3, 3e-3, ""),
        0,
    );
    let a_job = json(&a.join("jobs/seg/job.json"));
    assert_eq!(a_job["warm_start"]["kind"], "cold", "{a_job}");
    assert!(a_job["train"].get("init_from").is_none());

    // B: the same file again: from A's best checkpoint, one epoch.
    let b = run_batch(
        &w,
        "b.toml",
        &trainer_batch(&image, "lakes", "warm_start = true", 1, 1, 3e-3, ""),
        0,
    );
    let b_job = json(&b.join("jobs/seg/job.json"));
    let warm = &b_job["warm_start"];
    assert_eq!(warm["kind"], "warm", "{b_job}");
    assert_eq!(warm["batch"], a.file_name().unwrap().to_str().unwrap());
    assert_eq!(Path::new(warm["job_dir"].as_str().unwrap()), a.join("jobs/seg"));
    assert_eq!(warm["checkpoint"], "checkpoints/best.ckpt");
    assert_eq!(b_job["train"]["init_from"], "/previous/checkpoints/best.ckpt");
    let a_best = json(&a.join("jobs/seg/result.json"))["best"]["value"].as_f64().unwrap();
    assert_eq!(warm["best"]["value"].as_f64(), Some(a_best));

    // C: the same data and settings, cold.
    let c = run_batch(&w, "c.toml", &trainer_batch(&image, "cold", "", 1, 1, 3e-3, ""), 0);
    assert!(json(&c.join("jobs/seg/job.json")).get("warm_start").is_none());

    let (warm_first, cold_first) = (first_val_loss(&b), first_val_loss(&c));
    eprintln!("first val_loss: warm {warm_first:.4}, cold {cold_first:.4}; A's best {a_best:.4}");
    assert!(
        warm_first < cold_first,
        "warm {warm_first} should begin below cold {cold_first}"
    );
    // Cold starts are what a run without warm start is: A's first epoch is C's.
    assert!((first_val_loss(&a) - cold_first).abs() < 1e-6);

    // A warm start is another job (--skip-done must not take A's result for B's).
    let id = |d: &Path| {
        json(&d.join("jobs/seg/state.json"))["identity"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_ne!(id(&a), id(&b));

    let report = std::fs::read_to_string(b.join("report.md")).unwrap();
    let a_id = a.file_name().unwrap().to_str().unwrap();
    assert!(
        report.contains(&format!(
            "Warm start: 1 job (seg) from the best checkpoints of batch {a_id}."
        )),
        "{report}"
    );
    let html = std::fs::read_to_string(b.join("report.html")).unwrap();
    assert!(
        html.contains("<section id=\"retraining\"><h2>Retraining</h2><ul><li>Warm start: 1 job (seg)"),
        "{html}"
    );
    let report_a = std::fs::read_to_string(a.join("report.md")).unwrap();
    assert!(
        report_a.contains("Cold start: 1 job (seg): no earlier batch named `lakes` under the runs directory."),
        "{report_a}"
    );
    let log = std::fs::read_to_string(b.join("supervisor.log")).unwrap();
    assert!(log.contains(&format!("seg: warm start from batch {a_id}")), "{log}");
}

#[test]
fn deploy_promotes_a_model_only_when_it_scores_better_on_the_new_data() {
    let image = trainer_image();
    let w = Work::new();
    let deployed = w.path().join("deployed");
    let section = "[batch.deploy]\ndir = \"./deployed\"";
    let weak = |seed| trainer_batch(&image, "lakes", section, seed, 1, 0.0, "");
    let strong = trainer_batch(&image, "lakes", section, 2, 4, 3e-3, "export = [\"torchscript\"]");

    // 1. A model that never learned (lr 0) goes into the empty directory.
    let w1 = run_batch(&w, "w1.toml", &weak(1), 0);
    let d1 = json(&w1.join("deploy.json"));
    assert_eq!(
        (d1["decision"].as_str(), d1["why"].as_str()),
        (Some("promoted"), Some("nothing was deployed yet"))
    );

    // 2. One that learned, on new tiles: both scored there; it wins.
    let s = run_batch(&w, "s.toml", &strong, 0);
    let d2 = json(&s.join("deploy.json"));
    assert_eq!(d2["decision"], "promoted", "{d2}");
    assert_eq!(
        (d2["compared_on"].as_str(), d2["re_evaluated"].as_bool()),
        (Some("test_loss"), Some(true))
    );
    let (cand, dep) = (
        d2["candidate"]["score"].as_f64().unwrap(),
        d2["deployed"]["score"].as_f64().unwrap(),
    );
    assert!(cand < dep, "{d2}");
    // The scores are the scoring runs' own, on this batch's test split.
    let scored = |side: &str| json(&s.join(format!("deploy/{side}/evaluation.json")));
    assert_eq!(scored("candidate")["value"].as_f64(), Some(cand));
    assert_eq!(scored("deployed")["value"].as_f64(), Some(dep));
    assert_eq!(scored("candidate")["samples"], 14);
    assert_eq!(d2["deployed"]["batch"], w1.file_name().unwrap().to_str().unwrap());

    // 3. Another model that could not learn, on yet newer tiles: kept.
    let w2 = run_batch(&w, "w2.toml", &weak(3), 0);
    let d3 = json(&w2.join("deploy.json"));
    assert_eq!(d3["decision"], "kept", "{d3}");
    let (cand, dep) = (
        d3["candidate"]["score"].as_f64().unwrap(),
        d3["deployed"]["score"].as_f64().unwrap(),
    );
    assert!(cand > dep, "{d3}");
    assert!(d3["why"].as_str().unwrap().starts_with("test_loss "), "{d3}");

    // The history has every decision with its scores; current is the strong model.
    let h = history(&deployed);
    let decisions: Vec<&str> = h.iter().map(|r| r["decision"].as_str().unwrap()).collect();
    assert_eq!(decisions, ["promoted", "promoted", "kept"]);
    for r in &h[1..] {
        assert!(
            r["candidate"]["score"].is_number() && r["deployed"]["score"].is_number(),
            "{r}"
        );
    }
    let current = std::fs::canonicalize(deployed.join("current")).unwrap();
    let previous = std::fs::canonicalize(deployed.join("previous")).unwrap();
    let s_id = s.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(
        current,
        deployed.join(format!("versions/{s_id}.seg")).canonicalize().unwrap()
    );
    assert_eq!(
        sha256(&current.join("model.ckpt")),
        sha256(&s.join("jobs/seg/checkpoints/best.ckpt"))
    );
    assert!(previous.ends_with(format!("{}.seg", w1.file_name().unwrap().to_str().unwrap())));
    assert!(
        current.join("model.pt").metadata().unwrap().len() > 1000,
        "the TorchScript export"
    );
    assert_eq!(json(&current.join("deploy.json"))["decision"], "promoted");
    assert_eq!(json(&current.join("job.json"))["batch_id"], s_id.as_str());
    assert!(current.join("evaluation.json").is_file());
    assert_eq!(
        std::fs::read_dir(deployed.join("versions")).unwrap().count(),
        2,
        "current and previous"
    );
    assert!(
        !std::fs::read_dir(&deployed)
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().starts_with(".incoming") })
    );

    let report = std::fs::read_to_string(w2.join("report.md")).unwrap();
    assert!(
        report.contains(&format!("Not deployed: the deployed model (seg of batch {s_id}) stays")),
        "{report}"
    );
    let report = std::fs::read_to_string(s.join("report.md")).unwrap();
    assert!(report.contains("Deployed: seg of batch"), "{report}");
    assert!(report.contains("TorchScript: model.pt, scripted."), "{report}");

    // By hand: the kept model forced in, then the same again is a no-op.
    let w2_id = w2.file_name().unwrap().to_str().unwrap().to_string();
    let out = w.run(&["deploy", &w2_id, "--force"]);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout).trim(), deployed.join("current").to_str().unwrap());
    let out = w.run(&["deploy", &w2_id]);
    assert_exit(&out, 3);
    assert!(
        text(&out.stderr).contains("this checkpoint is the deployed model already"),
        "{}",
        text(&out.stderr)
    );
    let h = history(&deployed);
    assert_eq!(h.len(), 5);
    assert_eq!(
        (h[3]["decision"].as_str(), h[3]["forced"].as_bool()),
        (Some("promoted"), Some(true))
    );
    assert_eq!(h[4]["decision"], "kept");
    assert_exit(&w.run(&["deploy", &w2_id, "--job", "nope"]), 2);
    assert!(w.leftover_containers().is_empty(), "the scoring containers are removed");
}

/// A command job: writes `checkpoints/best.ckpt` and logs a val_loss of `$LOSS`.
const LOGGER: &str = concat!(
    "import json, os\n",
    "os.makedirs('/out/checkpoints', exist_ok=True)\n",
    "open('/out/checkpoints/best.ckpt', 'w').write('weights ' + os.environ['LOSS'])\n",
    "v = float(os.environ['LOSS'])\n",
    "with open('/out/metrics.jsonl', 'w') as f:\n",
    "    for e, x in enumerate([v + 0.2, v]):\n",
    "        f.write(json.dumps({'epoch': e + 1, 'metrics': {'val_loss': x}}) + '\\n')\n",
    "print('previous', os.environ.get('TB_PREVIOUS_BEST'), open(os.environ['TB_PREVIOUS_BEST']).read() if os.environ.get('TB_PREVIOUS_BEST') else '')\n",
);

#[test]
fn command_jobs_are_compared_by_what_they_logged_and_see_the_previous_checkpoint() {
    let w = Work::new();
    let command = serde_json::to_string(&["python3", "-c", LOGGER]).unwrap();
    let body = |loss: f64| {
        format!(
            "[batch]\nname = \"cmd\"\ndownloads = \"./downloads\"\nwarm_start = true\n\
             [batch.deploy]\ndir = \"./deployed\"\n\
             [defaults]\nimage = \"{BASE}\"\ngpus = 0\nnetwork = \"none\"\ncommand = {command}\n\
             [defaults.env]\nLOSS = \"{loss}\"\n[[job]]\nname = \"fit\"\n"
        )
    };
    let first = run_batch(&w, "cmd.toml", &body(0.5), 0);
    assert_eq!(json(&first.join("deploy.json"))["decision"], "promoted");
    let worse = run_batch(&w, "cmd.toml", &body(0.7), 0);
    // It saw the first batch's checkpoint, read-only.
    let stdout = std::fs::read_to_string(worse.join("jobs/fit/stdout.log")).unwrap();
    assert_eq!(stdout.trim(), "previous /previous/checkpoints/best.ckpt weights 0.5");
    let d = json(&worse.join("deploy.json"));
    assert_eq!(d["decision"], "kept", "{d}");
    assert_eq!(
        (d["re_evaluated"].as_bool(), d["compared_on"].as_str()),
        (Some(false), Some("val_loss"))
    );
    assert_eq!(
        (d["candidate"]["score"].as_f64(), d["deployed"]["score"].as_f64()),
        (Some(0.7), Some(0.5))
    );
    assert!(
        d["why"]
            .as_str()
            .unwrap()
            .contains("as each job logged it (not re-evaluated)"),
        "{d}"
    );
    // Warm starts follow the newest success: the kept batch's job, not the deployed one.
    let better = run_batch(&w, "cmd.toml", &body(0.3), 0);
    let stdout = std::fs::read_to_string(better.join("jobs/fit/stdout.log")).unwrap();
    assert_eq!(stdout.trim(), "previous /previous/checkpoints/best.ckpt weights 0.7");
    let d = json(&better.join("deploy.json"));
    assert_eq!(d["decision"], "promoted", "{d}");
    let deployed = w.path().join("deployed");
    assert_eq!(
        std::fs::read_to_string(deployed.join("current/model.ckpt")).unwrap(),
        "weights 0.3"
    );
    let decisions: Vec<String> = history(&deployed)
        .iter()
        .map(|r| r["decision"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(decisions, ["promoted", "kept", "promoted"]);
}

#[test]
fn a_batch_with_nothing_to_deploy_says_so_and_changes_nothing() {
    let w = Work::new();
    let body = format!(
        "[batch]\ndownloads = \"./downloads\"\n[batch.deploy]\ndir = \"./deployed\"\n\
         [defaults]\nimage = \"{BASE}\"\ngpus = 0\nnetwork = \"none\"\n\
         [[job]]\nname = \"no-ckpt\"\ncommand = [\"sh\", \"-c\", \"echo epoch=1 val_loss=0.5\"]\n"
    );
    let b = run_batch(&w, "none.toml", &body, 0);
    let d = json(&b.join("deploy.json"));
    assert_eq!(d["decision"], "failed", "{d}");
    assert!(
        d["why"]
            .as_str()
            .unwrap()
            .contains("succeeded with a best value and a best checkpoint"),
        "{d}"
    );
    assert!(!w.path().join("deployed/current").exists());
    assert!(
        !w.path().join("deployed/history.jsonl").exists(),
        "a failure is no decision"
    );
    let report = std::fs::read_to_string(b.join("report.md")).unwrap();
    assert!(report.contains("Deploy failed, nothing changed in"), "{report}");
    let out = w.run(&["deploy"]);
    assert_exit(&out, 2);
    assert!(text(&out.stderr).contains("no job of batch"), "{}", text(&out.stderr));
    let out = w.run(&["deploy", "--job", "no-ckpt"]);
    assert_exit(&out, 2);
}
