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

/// [`LOGGER`] batches of the name `cmd` into `./deployed`, logging `loss`;
/// `extra` goes into `[defaults]`.
fn logger_batch(loss: f64, extra: &str) -> String {
    let command = serde_json::to_string(&["python3", "-c", LOGGER]).unwrap();
    format!(
        "[batch]\nname = \"cmd\"\ndownloads = \"./downloads\"\n[batch.deploy]\ndir = \"./deployed\"\n\
         [defaults]\nimage = \"{BASE}\"\ngpus = 0\nnetwork = \"none\"\ncommand = {command}\n{extra}\n\
         [defaults.env]\nLOSS = \"{loss}\"\n[[job]]\nname = \"fit\"\n"
    )
}

fn id_of(batch: &Path) -> String {
    batch.file_name().unwrap().to_str().unwrap().to_string()
}

#[test]
fn a_retry_of_an_older_batch_never_rolls_production_back_and_exit_codes_say_why() {
    let w = Work::new();
    let deployed = w.path().join("deployed");
    let model = || std::fs::read_to_string(deployed.join("current/model.ckpt")).unwrap();
    let b1 = run_batch(&w, "b1.toml", &logger_batch(0.2, ""), 0);
    let b2 = run_batch(&w, "b2.toml", &logger_batch(0.3, ""), 0);
    assert_eq!(json(&b2.join("deploy.json"))["decision"], "kept");
    let (b1_id, b2_id) = (id_of(&b1), id_of(&b2));

    // Kept because it lost: 3. Forced in: 0. Forced again: a no-op, 3,
    // and `previous` is still the model it replaced.
    assert_exit(&w.run(&["deploy", &b2_id]), 3);
    assert_exit(&w.run(&["deploy", &b2_id, "--force"]), 0);
    let previous = || std::fs::read_link(deployed.join("previous")).unwrap();
    assert_eq!(previous(), Path::new(&format!("versions/{b1_id}.fit")));
    let out = w.run(&["deploy", &b2_id, "--force"]);
    assert_exit(&out, 3);
    assert!(
        text(&out.stderr).contains("this checkpoint is the deployed model already"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(previous(), Path::new(&format!("versions/{b1_id}.fit")));
    assert_eq!(model(), "weights 0.3");
    let lines = history(&deployed).len();

    // B1 again, by `tb retry`: its own logged 0.2 beats 0.3, but B2 is the
    // newer batch; the automatic deploy leaves it.
    assert_exit(&w.run(&["retry", &b1_id, "--job", "fit"]), 0);
    let d = json(&b1.join("deploy.json"));
    assert_eq!(d["decision"], "skipped", "{d}");
    assert!(
        d["why"]
            .as_str()
            .unwrap()
            .contains("comes from a batch created after this one"),
        "{d}"
    );
    assert_eq!(model(), "weights 0.3");
    assert_eq!(history(&deployed).len(), lines, "a skip is no decision");
    let log = std::fs::read_to_string(b1.join("supervisor.log")).unwrap();
    assert!(
        log.contains("deploy: skipped: the deployed model (fit of batch"),
        "{log}"
    );

    // By hand it compares, and the report says what it decided.
    assert_exit(&w.run(&["deploy", &b1_id]), 0);
    assert_eq!(model(), "weights 0.2");
    let report = std::fs::read_to_string(b1.join("report.md")).unwrap();
    assert!(
        report.contains(&format!("Deployed: fit of batch {b1_id} is the model in")),
        "{report}"
    );
    let html = std::fs::read_to_string(b1.join("report.html")).unwrap();
    assert!(
        html.contains("Deployed: fit of batch"),
        "report.html is written again too"
    );

    // Judged by another mode: not comparable, 1 (not 3).
    let b3 = run_batch(
        &w,
        "b3.toml",
        &logger_batch(0.1, "metrics = { monitor = \"val_loss\", mode = \"max\" }"),
        0,
    );
    let d = json(&b3.join("deploy.json"));
    assert_eq!(
        (d["decision"].as_str(), d["blocked"].as_str()),
        (Some("kept"), Some("not_comparable")),
        "{d}"
    );
    let b3_id = id_of(&b3);
    assert_exit(&w.run(&["deploy", &b3_id]), 1);

    // A deployed model that cannot be read: 1 (not 2); --force replaces it, with a warning.
    let current = std::fs::canonicalize(deployed.join("current")).unwrap();
    std::fs::remove_file(current.join("model.ckpt")).unwrap();
    let out = w.run(&["deploy", &b3_id]);
    assert_exit(&out, 1);
    assert!(
        text(&out.stderr).contains("tb deploy --force` replaces it"),
        "{}",
        text(&out.stderr)
    );
    let out = w.run(&["deploy", &b3_id, "--force"]);
    assert_exit(&out, 0);
    assert_eq!(model(), "weights 0.1");
    let d = json(&b3.join("deploy.json"));
    assert!(d["warnings"][0].as_str().unwrap().contains("cannot be read"), "{d}");
    assert!(text(&out.stderr).contains("warning: the deployed model cannot be read"));
}

/// Runs `tb` in the background, its stderr into `log`.
fn spawn(tb: &mut std::process::Command, log: &Path) -> Running {
    let err = std::fs::File::create(log).unwrap();
    Running(tb.stdout(std::process::Stdio::piped()).stderr(err).spawn().unwrap())
}

/// Waits until the file at `path` holds `text`.
fn wait_for(path: &Path, text: &str) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(path).is_ok_and(|t| t.contains(text)) {
        assert!(
            std::time::Instant::now() < until,
            "no `{text}` in {}: {}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn signal_and_wait(mut tb: Running, signal: i32) -> std::process::ExitStatus {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tb.0.id() as i32, signal) };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = tb.0.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < until, "tb did not stop on signal {signal}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Holds the deploy directory's lock, as a deploy in progress does, until dropped.
struct Holder {
    _lock: std::fs::File,
}

impl Holder {
    fn take(dir: &Path) -> Holder {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(dir).unwrap();
        let file = std::fs::File::create(dir.join(".lock")).unwrap();
        // SAFETY: a valid open descriptor; flock touches no memory.
        assert_eq!(
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
            0
        );
        Holder { _lock: file }
    }
}

#[test]
fn a_signal_while_another_deploy_holds_the_directory_stops_the_deploy_and_the_batch() {
    let w = Work::new();
    let deployed = w.path().join("deployed");
    let holder = Holder::take(&deployed);

    // The batch ends, waits for the lock, and SIGTERM (`tb cancel`) stops it: 130.
    let f = w.batch("b.toml", &logger_batch(0.2, ""));
    let log = w.path().join("batch.log");
    let tb = spawn(w.tb().args(["batch", f.to_str().unwrap()]), &log);
    wait_for(&log, "waiting for another deploy into");
    let status = signal_and_wait(tb, libc::SIGTERM);
    assert_eq!(status.code(), Some(130), "{}", std::fs::read_to_string(&log).unwrap());
    let batch = w.batch_dir();
    let d = json(&batch.join("deploy.json"));
    assert_eq!(d["decision"], "interrupted", "{d}");
    let id = id_of(&batch);
    assert_eq!(
        d["why"],
        format!("the deploy was terminated; nothing changed; `tb deploy {id}` deploys it")
    );
    assert_eq!(w.state("fit")["status"], "succeeded");
    assert!(!deployed.join("current").exists() && !deployed.join("history.jsonl").exists());
    let report = std::fs::read_to_string(batch.join("report.md")).unwrap();
    assert!(report.contains("Deploy interrupted, nothing changed in"), "{report}");

    // `tb deploy` by hand, Ctrl-C: 130 too.
    let log = w.path().join("deploy.log");
    let tb = spawn(w.tb().args(["deploy", &id]), &log);
    wait_for(&log, "waiting for another deploy into");
    assert_eq!(signal_and_wait(tb, libc::SIGINT).code(), Some(130));
    assert_eq!(json(&batch.join("deploy.json"))["decision"], "interrupted");

    // Once the other deploy is done, `tb deploy` does it.
    drop(holder);
    assert_exit(&w.run(&["deploy", &id]), 0);
    assert_eq!(
        std::fs::read_to_string(deployed.join("current/model.ckpt")).unwrap(),
        "weights 0.2"
    );
}

/// A stand-in for tb_trainer, put first on PYTHONPATH through `code`: a
/// "training" writes `checkpoints/best.ckpt` holding `weights $WEIGHTS`
/// (default `$SCORE`) and logs `val_score = $SCORE`; `--evaluate CKPT`
/// scores a checkpoint as the weights it holds, on the monitor and mode
/// its `job.json` names, writing `evaluation.json` as Python's `json` does
/// (a NaN bare) and the GPUs it was given. It waits while `/ctl/hold` exists.
const FAKE_TRAINER: &str = r#"
import json, os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
out = os.environ.get("TB_OUT", "/out")
train = json.load(open(os.path.join(out, "job.json"))).get("train") or {}
if "--evaluate" in sys.argv:
    weights = open(sys.argv[sys.argv.index("--evaluate") + 1]).read().split()[-1]
    while os.path.exists("/ctl/hold"):
        time.sleep(0.1)
    monitor = train.get("monitor", "val_loss")
    doc = {"version": 1, "monitor": monitor, "mode": train.get("mode", "min"),
           "metric": "test" + monitor[3:], "value": float(weights), "samples": 7,
           "gpus": os.environ.get("NVIDIA_VISIBLE_DEVICES")}
    json.dump(doc, open(os.path.join(out, "evaluation.json"), "w"))
    sys.exit(0)
time.sleep(float(os.environ.get("SLEEP", "0")))
os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
open(os.path.join(out, "checkpoints", "best.ckpt"), "w").write("weights " + os.environ.get("WEIGHTS", os.environ["SCORE"]))
with open(os.path.join(out, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"epoch": 1, "metrics": {"val_loss": 1.0, "val_score": float(os.environ["SCORE"])}}) + "\n")
"#;

/// The fake trainer's code directory (with `bin/python`, which the scoring
/// command calls) and the `ctl` directory it watches, in `w`.
fn fake_trainer(w: &Work) {
    use std::os::unix::fs::PermissionsExt;
    let code = w.path().join("fake");
    std::fs::create_dir_all(code.join("tb_trainer")).unwrap();
    std::fs::create_dir_all(code.join("bin")).unwrap();
    std::fs::create_dir_all(w.path().join("ctl")).unwrap();
    std::fs::write(code.join("tb_trainer/__init__.py"), "").unwrap();
    std::fs::write(code.join("tb_trainer/__main__.py"), FAKE_TRAINER).unwrap();
    let python = code.join("bin/python");
    std::fs::write(&python, "#!/bin/sh\nexec python3 \"$@\"\n").unwrap();
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A batch of fake-trainer jobs judged by tb's `val_score` (higher is
/// better) while their trainer monitors `val_loss` (lower); `jobs` are
/// `(name, env)`; each asks for one GPU of `TB_GPUS`, given by env.
fn fake_batch(jobs: &[(&str, &str)]) -> String {
    let mut body = format!(
        "[batch]\nname = \"fake\"\ndownloads = \"./downloads\"\ngpu_mode = \"env\"\nconcurrency = 2\n\
         [batch.deploy]\ndir = \"./deployed\"\n\
         [defaults]\nimage = \"{BASE}\"\ngpus = 1\nnetwork = \"none\"\ncode = \"./fake\"\n\
         command = [\"python3\", \"-m\", \"tb_trainer\"]\nmounts = [\"./ctl:/ctl\"]\n\
         metrics = {{ monitor = \"val_score\", mode = \"max\" }}\n\
         [defaults.env]\nPATH = \"/code/bin:/usr/local/bin:/usr/bin:/bin\"\n\
         [defaults.train]\nmonitor = \"val_loss\"\n"
    );
    for (name, env) in jobs {
        body.push_str(&format!("[[job]]\nname = \"{name}\"\nenv = {{ {env} }}\n"));
    }
    body
}

fn run_fake(w: &Work, file: &str, jobs: &[(&str, &str)]) -> PathBuf {
    let f = w.batch(file, &fake_batch(jobs));
    PathBuf::from(text(&w.batch_on_gpus(&f, "0,1").stdout).trim())
}

#[test]
fn scoring_is_on_tbs_monitor_on_the_candidates_gpu_and_a_score_that_is_no_number_loses() {
    let w = Work::new();
    fake_trainer(&w);
    let deployed = w.path().join("deployed");
    let model = || std::fs::read_to_string(deployed.join("current/model.ckpt")).unwrap();
    run_fake(&w, "f1.toml", &[("a", "SCORE = \"0.5\"")]);
    assert_eq!(model(), "weights 0.5");

    // `a` (GPU 0) runs on while `b` starts (GPU 1); `b` is best by val_score.
    let b2 = run_fake(
        &w,
        "f2.toml",
        &[("a", "SCORE = \"0.6\", SLEEP = \"3\""), ("b", "SCORE = \"0.9\"")],
    );
    let state = json(&b2.join("jobs/b/state.json"));
    assert_eq!(state["gpus"], serde_json::json!(["1"]), "{state}");
    let d = json(&b2.join("deploy.json"));
    assert_eq!(d["decision"], "promoted", "{d}");
    // The trainer monitors val_loss (min); the comparison is tb's val_score, max.
    assert_eq!(
        (d["metric"].as_str(), d["mode"].as_str(), d["compared_on"].as_str()),
        (Some("val_score"), Some("max"), Some("test_score")),
        "{d}"
    );
    assert_eq!(
        d["why"],
        "test_score 0.9000 beats the deployed model's 0.5000 on this batch's test split (7 samples)"
    );
    for side in ["candidate", "deployed"] {
        let e = json(&b2.join(format!("deploy/{side}/evaluation.json")));
        assert_eq!(
            (e["mode"].as_str(), e["gpus"].as_str()),
            (Some("max"), Some("1")),
            "{side}: {e}"
        );
    }
    let h = history(&deployed);
    assert_eq!(h.last().unwrap()["mode"], "max");

    // Weights that score NaN (a bare NaN in evaluation.json) never win…
    let b3 = run_fake(&w, "f3.toml", &[("a", "SCORE = \"0.99\", WEIGHTS = \"nan\"")]);
    let d = json(&b3.join("deploy.json"));
    assert_eq!(d["decision"], "kept", "{d}");
    assert!(d["candidate"]["score"].is_null(), "{d}");
    assert!(
        d["why"]
            .as_str()
            .unwrap()
            .starts_with("test_score of this model is not a number (NaN or infinite), which beats nothing"),
        "{d}"
    );
    assert_eq!(model(), "weights 0.9");
    // …and a deployed model that scores NaN loses to any number.
    assert_exit(&w.run(&["deploy", &id_of(&b3), "--force"]), 0);
    let b4 = run_fake(&w, "f4.toml", &[("a", "SCORE = \"0.1\"")]);
    let d = json(&b4.join("deploy.json"));
    assert_eq!(d["decision"], "promoted", "{d}");
    assert!(d["deployed"]["score"].is_null(), "{d}");
    assert!(d["why"].as_str().unwrap().contains("which is not a number"), "{d}");
    assert_eq!(model(), "weights 0.1");
    assert!(w.leftover_containers().is_empty());
}

#[test]
fn a_signal_while_a_model_is_scored_interrupts_the_deploy_and_the_batch() {
    let w = Work::new();
    fake_trainer(&w);
    let deployed = w.path().join("deployed");
    run_fake(&w, "f1.toml", &[("a", "SCORE = \"0.5\"")]);

    // The scorings wait on /ctl/hold; SIGTERM comes while the candidate's runs.
    let hold = w.path().join("ctl/hold");
    std::fs::write(&hold, "").unwrap();
    let f = w.batch("f2.toml", &fake_batch(&[("a", "SCORE = \"0.9\"")]));
    let log = w.path().join("batch.log");
    let tb = spawn(w.tb().args(["batch", f.to_str().unwrap()]).env("TB_GPUS", "0,1"), &log);
    wait_for(&log, "deploy: scoring the candidate model");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let status = signal_and_wait(tb, libc::SIGTERM);
    assert_eq!(status.code(), Some(130), "{}", std::fs::read_to_string(&log).unwrap());
    let batch = w.batch_dir();
    let d = json(&batch.join("deploy.json"));
    assert_eq!(d["decision"], "interrupted", "{d}");
    assert_eq!(history(&deployed).len(), 1, "no decision");
    assert_eq!(
        std::fs::read_to_string(deployed.join("current/model.ckpt")).unwrap(),
        "weights 0.5"
    );
    assert!(w.leftover_containers().is_empty(), "the scoring container is removed");

    // Later, by hand.
    std::fs::remove_file(&hold).unwrap();
    let out = w
        .tb()
        .args(["deploy", &id_of(&batch)])
        .env("TB_GPUS", "0,1")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(json(&batch.join("deploy.json"))["decision"], "promoted");
}
