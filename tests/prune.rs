//! Pruning a sweep: nine command jobs whose `val_loss` is a fixed function
//! of their swept value (val_loss = Q/10 + 1/epoch, an epoch every 0.3 s),
//! three at a time. Which jobs reach a rung first depends on timing, so the
//! test takes the order from `prune.json` and recomputes every decision the
//! rule calls for from the known curves: each must be there, right, and
//! acted on — pruned jobs `pruned`, the rest run to the end.

use crate::common::*;
use std::collections::BTreeMap;

const SCRIPT: &str = concat!(
    "import json, os, time\n",
    "open('/downloads/ran', 'a').write(os.environ['TB_JOB'] + '\\n')\n",
    "q = float(os.environ['Q'])\n",
    "with open('/out/metrics.jsonl', 'a') as f:\n",
    "    for e in range(1, 10):\n",
    "        time.sleep(0.3)\n",
    "        f.write(json.dumps({'epoch': e, 'metrics': {'val_loss': q / 10 + 1 / e}}) + '\\n')\n",
    "        f.flush()\n",
);

/// The swept values, not in order of quality.
const QS: [u32; 9] = [5, 9, 1, 7, 3, 8, 2, 6, 4];

/// The sweep, run on `backend`: the dispatcher decides, the backend stops
/// (a container here, `scancel` on the Slurm test cluster).
fn batch(w: &Work, method: &str, backend: &str) -> std::path::PathBuf {
    let command = serde_json::to_string(&["python3", "-c", SCRIPT]).unwrap();
    let qs: Vec<String> = QS.iter().map(u32::to_string).collect();
    w.batch(
        "sweep.toml",
        &format!(
            "[batch]\ndownloads = \"./downloads\"\nconcurrency = 3\nbackend = \"{backend}\"\ngpu_mode = \"env\"\n\
             [defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\ncommand = {command}\n\
             [[job]]\nname = \"pr\"\n[job.sweep]\n\"env.Q\" = [{}]\n\
             [job.prune]\nmethod = \"{method}\"\ngrace = 1\nreduction = 3\nmax_epochs = 9\n",
            qs.join(", ")
        ),
    )
}

fn q_of(job: &str) -> f64 {
    job.rsplit('-').next().unwrap().parse().unwrap()
}

fn loss(job: &str, epoch: u64) -> f64 {
    q_of(job) / 10.0 + 1.0 / epoch as f64
}

fn table(w: &Work) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(w.batch_dir().join("prune.json")).unwrap()).unwrap()
}

/// (job, epoch) → stop, for every decision taken.
fn decisions(t: &serde_json::Value) -> BTreeMap<(String, u64), bool> {
    t["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                (d["job"].as_str().unwrap().to_string(), d["epoch"].as_u64().unwrap()),
                d["stop"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// The arrivals at each rung or epoch, in order: (job, value).
fn arrivals(t: &serde_json::Value) -> BTreeMap<u64, Vec<(String, f64)>> {
    t["groups"]["pr"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let list = v
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_f64().unwrap()))
                .collect();
            (k.parse().unwrap(), list)
        })
        .collect()
}

/// What ASHA (η = 3, rungs 1, 3, 9; none at the last) says of each
/// arrival, from the known curves.
fn asha_expected(t: &serde_json::Value) -> BTreeMap<(String, u64), bool> {
    let mut expected = BTreeMap::new();
    for (rung, list) in arrivals(t) {
        for (k, (job, value)) in list.iter().enumerate() {
            assert!((value - loss(job, rung)).abs() < 1e-9, "{job} at rung {rung}: {value}");
            let n = k + 1;
            if rung == 9 || n < 3 {
                continue;
            }
            let mut seen: Vec<f64> = list[..n].iter().map(|(_, v)| *v).collect();
            seen.sort_by(f64::total_cmp);
            let cutoff = seen[n.div_ceil(3) - 1];
            expected.insert((job.clone(), rung), *value > cutoff);
        }
    }
    expected
}

/// What the median rule (after epoch 1, against ≥ 3 others at the epoch)
/// says of each arrival: the stops (the table keeps only those; a job
/// that goes on is in the log).
fn median_expected(t: &serde_json::Value) -> BTreeMap<(String, u64), bool> {
    let mut expected = BTreeMap::new();
    let mut stopped: Vec<String> = Vec::new();
    for (epoch, list) in arrivals(t) {
        for (k, (job, value)) in list.iter().enumerate() {
            assert!((value - loss(job, epoch)).abs() < 1e-9);
            if epoch <= 1 || epoch >= 9 || k < 3 || stopped.contains(job) {
                continue;
            }
            let mut others: Vec<f64> = list[..k].iter().map(|(_, v)| *v).collect();
            others.sort_by(f64::total_cmp);
            let median = if k % 2 == 1 {
                others[k / 2]
            } else {
                (others[k / 2 - 1] + others[k / 2]) / 2.0
            };
            // The curves fall: the best so far is the latest.
            if loss(job, epoch) > median {
                expected.insert((job.clone(), epoch), true);
                stopped.push(job.clone());
            }
        }
    }
    expected
}

/// Every decision taken is the rule's; every one the rule calls for was
/// taken, but for those a job's end came first (what a job logged in its
/// last moments is recorded when it ends, for the jobs after it, with
/// nothing left to decide). Pruned jobs are `pruned` (and no job ran
/// twice), the rest ran to the end.
fn check_outcome(w: &Work, taken: &BTreeMap<(String, u64), bool>, expected: &BTreeMap<(String, u64), bool>) {
    for (key, stop) in taken {
        assert_eq!(
            expected.get(key),
            Some(stop),
            "decision {key:?} is not the rule's:\n{taken:?}\n{expected:?}"
        );
    }
    for ((job, epoch), stop) in expected {
        if taken.contains_key(&(job.clone(), *epoch)) {
            continue;
        }
        let last_taken = taken
            .keys()
            .filter(|(j, _)| j == job)
            .map(|(_, e)| *e)
            .max()
            .unwrap_or(0);
        assert!(
            *epoch > last_taken && w.state(job)["status"] == "succeeded",
            "the rule's decision ({job}, {epoch}, stop {stop}) was not taken:\n{taken:?}\n{expected:?}"
        );
    }
    let pruned: Vec<&String> = taken.iter().filter(|(_, s)| **s).map(|((j, _), _)| j).collect();
    assert!(pruned.len() >= 3, "the rule stopped too few: {pruned:?}");
    for q in QS {
        let job = format!("pr_Q-{q}");
        let state = w.state(&job);
        if pruned.contains(&&job) {
            assert_eq!(state["status"], "pruned", "{state}");
            assert!(state["error"].as_str().unwrap().contains("pruned at"), "{state}");
        } else {
            assert_eq!(state["status"], "succeeded", "{job}: {state}");
            let epochs = std::fs::read_to_string(w.job_dir(&job).join("metrics.jsonl")).unwrap();
            assert_eq!(epochs.lines().count(), 9, "{job} ran to the end");
        }
    }
    assert!(!pruned.contains(&&"pr_Q-1".to_string()), "the best job is never pruned");
    let mut ran: Vec<String> = std::fs::read_to_string(w.path().join("downloads/ran"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    ran.sort();
    let mut all: Vec<String> = QS.iter().map(|q| format!("pr_Q-{q}")).collect();
    all.sort();
    assert_eq!(ran, all, "every job ran once: none restarted");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.batch_dir().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["headline"]["counts"]["pruned"], pruned.len());
    let last_ranked = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .rposition(|j| j["status"] == "succeeded")
        .unwrap();
    let first_pruned = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .position(|j| j["status"] == "pruned")
        .unwrap();
    assert!(last_ranked < first_pruned, "pruned jobs rank below completed ones");
}

#[test]
fn asha_prunes_what_the_rule_says_at_the_rungs_it_says() {
    let w = asha_scenario("local");
    // A pruned trial runs again only when named, and then to its end.
    let t = table(&w);
    let pruned = t["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["stop"] == true)
        .unwrap()["job"]
        .as_str()
        .unwrap()
        .to_string();
    let out = w.run(&["retry"]);
    assert_exit(&out, 0);
    assert!(text(&out.stderr).contains("stay pruned"), "{}", text(&out.stderr));
    let out = w.run(&["retry", "--job", &pruned]);
    assert_exit(&out, 0);
    assert_eq!(w.state(&pruned)["status"], "succeeded", "run again, not pruned again");
    let t = table(&w);
    let d = t["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["job"] == pruned.as_str() && d["stop"] == true)
        .unwrap();
    assert!(d["withdrawn"].is_string(), "the decision stays, marked: {d}");
    let ran = std::fs::read_to_string(w.path().join("downloads/ran")).unwrap();
    assert_eq!(ran.lines().filter(|l| *l == pruned).count(), 2);
}

pub fn asha_scenario(backend: &str) -> Work {
    let w = Work::new();
    let f = batch(&w, "asha", backend);
    let validate = w.run(&["validate", f.to_str().unwrap()]);
    assert!(
        text(&validate.stdout).contains("prune pr: asha on val_loss (min): rungs at epochs 1, 3, 9; keep 1/3 (9 jobs)"),
        "{}",
        text(&validate.stdout)
    );
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 0);
    let t = table(&w);
    check_outcome(&w, &decisions(&t), &asha_expected(&t));
    let err = text(&out.stderr);
    assert!(
        err.contains("pruned at rung 1") || err.contains("pruned at rung 3"),
        "{err}"
    );
    assert!(
        err.lines().any(|l| l.contains("jobs:") && l.contains("pruned")),
        "{err}"
    );
    let log = std::fs::read_to_string(w.batch_dir().join("supervisor.log")).unwrap();
    assert!(
        log.contains("continues at rung"),
        "every decision is in the log:\n{log}"
    );
    w
}

#[test]
fn the_median_rule_prunes_what_it_says() {
    let w = Work::new();
    let f = batch(&w, "median", "local");
    assert_exit(&w.run(&["batch", f.to_str().unwrap()]), 0);
    let t = table(&w);
    check_outcome(&w, &decisions(&t), &median_expected(&t));
}

#[test]
fn decisions_survive_a_killed_supervisor_and_no_pruned_job_restarts() {
    let _guard = unsupervised();
    let w = Work::new();
    let f = batch(&w, "asha", "local");
    let mut tb = in_background(&w, &f);
    wait_until(120, "a first pruning decision", || {
        std::fs::canonicalize(w.path().join("runs/latest")).is_ok()
            && std::fs::read(w.batch_dir().join("prune.json"))
                .ok()
                .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
                .is_some_and(|t| t["decisions"].as_array().unwrap().iter().any(|d| d["stop"] == true))
    });
    let before = table(&w)["decisions"].as_array().unwrap().clone();
    // SAFETY: our own child.
    unsafe { libc::kill(tb.0.id() as i32, libc::SIGKILL) };
    tb.0.wait().unwrap();

    let out = w.run(&["resume"]);
    assert_exit(&out, 0);
    let t = table(&w);
    let after = t["decisions"].as_array().unwrap();
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "decisions taken before the kill stand"
    );
    check_outcome(&w, &decisions(&t), &asha_expected(&t));
}
