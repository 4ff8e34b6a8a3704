//! The morning report compares: command jobs that write known curves (a
//! grid of two swept keys × two values, and one job on another image)
//! yield configuration columns of exactly the keys that differ, common
//! settings listed once, test scores, a CSV of the same rows as
//! report.json, overlay charts naming every job, and a "what mattered"
//! table whose numbers this test recomputes itself.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::Path;

/// val_loss of epoch e = base + 1/(e+1), with base from A and B: A=1 is
/// better than A=2 by 0.3, B=x better than B=y by 0.05. val_acc = 1 −
/// val_loss; the test score in result.json is 1 − base.
const WRITER: &str = concat!(
    "import json, os\n",
    "a = float(os.environ.get('A', '3')); b = os.environ.get('B', 'z')\n",
    "base = 0.1 * a + {'x': 0.0, 'y': 0.05}.get(b, 0.2)\n",
    "with open('/out/metrics.jsonl', 'w') as f:\n",
    "    for e in range(4):\n",
    "        v = base + 1.0 / (e + 1)\n",
    "        f.write(json.dumps({'epoch': e, 'metrics': {'val_loss': v, 'val_acc': 1 - v, 'lr': 0.0}}) + '\\n')\n",
    "json.dump({'stop_reason': 'max_epochs', 'epochs': 4, 'test': {'test_acc': 1 - base}}, open('/out/result.json', 'w'))\n",
);

fn batch_file(w: &Work) -> std::path::PathBuf {
    let command = serde_json::to_string(&["python3", "-c", WRITER]).unwrap();
    w.batch(
        "grid.toml",
        &format!(
            "[batch]\ndownloads = \"./downloads\"\nconcurrency = 2\n\
             [defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\ncommand = {command}\n\
             [[job]]\nname = \"g\"\n[job.sweep]\n\"env.A\" = [1, 2]\n\"env.B\" = [\"x\", \"y\"]\n\
             [[job]]\nname = \"other\"\nimage = \"tb-trainer:latest\"\n"
        ),
    )
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn the_report_compares_configurations() {
    let w = Work::new();
    let f = batch_file(&w);
    assert_exit(&w.run(&["batch", f.to_str().unwrap()]), 0);
    let dir = w.batch_dir();
    let r = json(&dir.join("report.json"));

    // Exactly the keys that differ, swept first; the rest once, in common.
    assert_eq!(
        r["config_keys"],
        serde_json::json!(["env.A", "env.B", "image"]),
        "{}",
        r["config_keys"]
    );
    assert_eq!(r["common"]["gpus"], 0);
    assert!(
        r["common"]["command"]
            .as_str()
            .unwrap()
            .starts_with("python3 -c import json")
    );
    let jobs: BTreeMap<String, &serde_json::Value> = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["name"].as_str().unwrap().to_string(), j))
        .collect();
    assert_eq!(jobs["g_A-1_B-x"]["config"]["env.A"], "1");
    assert_eq!(jobs["g_A-2_B-y"]["config"]["env.B"], "y");
    assert_eq!(jobs["g_A-2_B-y"]["config"]["image"], "tb-base:bookworm");
    assert_eq!(jobs["other"]["config"]["image"], "tb-trainer:latest");
    assert!(jobs["other"]["config"].get("env.A").is_none());
    assert_eq!(r["jobs"][0]["name"], "g_A-1_B-x", "the best configuration first");
    assert!((jobs["g_A-1_B-x"]["test"]["test_acc"].as_f64().unwrap() - 0.9).abs() < 1e-9);

    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert_eq!(md.matches("Common settings:").count(), 1, "{md}");
    assert!(
        md.contains("| # | job | status | env.A | env.B | image | best val_loss | test_acc |"),
        "{md}"
    );
    assert!(
        md.contains("**Best: g_A-1_B-x** — val_loss 0.3500 @ epoch 3 with `env.A = 1`, `env.B = x`"),
        "{md}"
    );
    assert!(
        md.contains("| val_loss=0.35 val_acc=0.65 |"),
        "final: the monitor and a validation metric, not lr:\n{md}"
    );

    csv_matches_json(&dir);
    what_mattered_is_recomputed(&r);
    the_html_overlays_every_job(&w, &dir, &jobs.keys().cloned().collect::<Vec<_>>());
}

/// report.csv, read with Python's csv module, has report.json's rows.
fn csv_matches_json(dir: &Path) {
    let script = concat!(
        "import csv, json, sys\n",
        "d = sys.argv[1]\n",
        "rows = list(csv.DictReader(open(d + '/report.csv', newline='')))\n",
        "r = json.load(open(d + '/report.json'))\n",
        "assert len(rows) == len(r['jobs']), (len(rows), len(r['jobs']))\n",
        "for row, j in zip(rows, r['jobs']):\n",
        "    assert row['job'] == j['name'], (row['job'], j['name'])\n",
        "    assert row['status'] == j['status']\n",
        "    assert row['rank'] == ('' if j['rank'] is None else str(j['rank']))\n",
        "    for k in r['config_keys']:\n",
        "        assert row[k] == str(j['config'].get(k, '')), (k, row[k], j['config'].get(k))\n",
        "    assert float(row['best']) == j['best']['value'], (row['best'], j['best'])\n",
        "    for k in r['test_keys']:\n",
        "        assert float(row[k]) == j['test'][k]\n",
        "print('ok', len(rows))\n",
    );
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "report.csv and report.json disagree:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "ok 5\n");
}

/// The mean ± sample std of the best val_loss per value of each swept key,
/// from the jobs' best values, equals report.json's "mattered".
fn what_mattered_is_recomputed(r: &serde_json::Value) {
    let jobs = r["jobs"].as_array().unwrap();
    let mattered = r["mattered"].as_array().unwrap();
    assert_eq!(mattered.len(), 2);
    // A matters more than B (0.3 against 0.05): it comes first.
    assert_eq!(mattered[0]["key"], "env.A");
    for factor in mattered {
        let key = factor["key"].as_str().unwrap();
        for level in factor["levels"].as_array().unwrap() {
            let bests: Vec<f64> = jobs
                .iter()
                .filter(|j| j["swept"][key] == level["value"])
                .map(|j| j["best"]["value"].as_f64().unwrap())
                .collect();
            let n = bests.len() as f64;
            let mean = bests.iter().sum::<f64>() / n;
            let std = (bests.iter().map(|b| (b - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            assert_eq!(level["n"], bests.len());
            assert!((level["mean"].as_f64().unwrap() - mean).abs() < 1e-12, "{key}: {level}");
            assert!((level["std"].as_f64().unwrap() - std).abs() < 1e-12, "{key}: {level}");
        }
    }
    let a = &mattered[0]["levels"];
    assert_eq!(a[0]["value"], 1, "the better value first");
    assert!((a[1]["mean"].as_f64().unwrap() - a[0]["mean"].as_f64().unwrap() - 0.1).abs() < 1e-9);
}

/// The report in headless Chromium at 1280×800: its DOM, where its best
/// box ends (px), and the box's markup.
fn first_screen(w: &Work, page: &Path) -> (String, u32, String) {
    let dump = crate::report::chromium(
        &w.path().join("chromium-profile"),
        &["--dump-dom", "--window-size=1280,800"],
        &format!("file://{}", page.display()),
    );
    let dom = text(&dump.stdout);
    assert!(dom.contains("data-ok=\"1\""), "the page's script did not finish");
    let bottom: u32 = dom
        .split("data-best-bottom=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .expect("the page measured its best box");
    let boxed = dom
        .split("id=\"best\"")
        .nth(1)
        .and_then(|s| s.split("</section>").next())
        .expect("a best box")
        .to_string();
    (dom, bottom, boxed)
}

/// The page in headless Chromium: every job's name in the overlay's
/// legend; the best configuration on the first screen (1280×800); a
/// screenshot kept for a person to look at.
fn the_html_overlays_every_job(w: &Work, dir: &Path, names: &[String]) {
    let page = dir.join("report.html");
    let profile = w.path().join("chromium-profile");
    let (dom, bottom, best) = first_screen(w, &page);
    let overlays = dom
        .split("<h2>Curves compared</h2>")
        .nth(1)
        .and_then(|s| s.split("</section>").next())
        .expect("an overlay section");
    let first = overlays.split("</figure>").next().unwrap();
    assert!(first.contains("val_loss, every job"), "the monitor's overlay first");
    for name in names {
        assert!(
            first.contains(name.as_str()),
            "{name} missing from the overlay's legend"
        );
    }
    assert!(first.contains("g_A-1_B-x (best)"));
    assert!(
        bottom <= 800,
        "the best configuration ends at {bottom}px, below the first screen"
    );
    assert!(best.contains("env.A = 1") && best.contains("env.B = x"), "{best}");

    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-compare.png");
    let shot = crate::report::chromium(
        &profile,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,800",
            "--hide-scrollbars",
        ],
        &format!("file://{}", page.display()),
    );
    assert!(shot.status.success(), "{}", text(&shot.stderr));
    assert!(std::fs::metadata(&png).unwrap().len() > 20_000, "a blank screenshot");
    eprintln!("the first screen of the report: {}", png.display());
}

/// `make demo`'s night (jobs/night.toml, the trainer image, six real
/// trainings of about 20 s each): its report names the best job's
/// configuration values in the first screen of a 1280×800 window.
#[test]
fn the_demo_report_shows_the_best_configuration_on_the_first_screen() {
    let w = Work::new();
    let night = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/night.toml");
    let out = w
        .tb()
        .args(["batch", night.to_str().unwrap()])
        .env("HOME", w.path())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let dir = w.batch_dir();
    let r = json(&dir.join("report.json"));
    let best = &r["jobs"][0];
    let values: Vec<String> = best["config"]
        .as_object()
        .expect("the best job's configuration")
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k} = {s}"),
            other => format!("{k} = {other}"),
        })
        .collect();
    assert!(!values.is_empty(), "the demo's jobs differ in their configuration");
    let (_, bottom, boxed) = first_screen(&w, &dir.join("report.html"));
    assert!(
        bottom <= 800,
        "the best configuration ends at {bottom}px, below the first screen"
    );
    assert!(boxed.contains(best["name"].as_str().unwrap()), "{boxed}");
    for v in &values {
        assert!(boxed.contains(v.as_str()), "{v} missing from the first screen: {boxed}");
    }
}
