//! The batch report on check-in run directories (tests/fixtures/report): a
//! healthy batch, garbage metrics lines, failures, fold groups; and the HTML
//! page opened in headless Chromium.

use crate::common::copy_dir;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tb::report::{self, Format, Report};
use tb::run::{BatchDir, Status};

/// "Now" for every report here, so running jobs' durations are fixed.
fn now() -> chrono::DateTime<chrono::Utc> {
    "2026-11-23T02:00:00Z".parse().unwrap()
}

/// A copy of a fixture in a scratch directory: reports are written next to
/// the files they read, and tests/fixtures stays untouched.
fn fixture(name: &str) -> (tempfile::TempDir, BatchDir) {
    let tmp = tempfile::Builder::new().prefix("tb-report-").tempdir().unwrap();
    let dst = tmp.path().join(format!("2026-11-22_230000_{name}"));
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/report")
            .join(name),
        &dst,
    );
    let id = dst.file_name().unwrap().to_string_lossy().into_owned();
    (tmp, BatchDir::new(dst, id))
}

fn build(dir: &BatchDir) -> Report {
    report::build_at(dir, now()).unwrap()
}

fn md(r: &Report) -> String {
    String::from_utf8(report::render(r, Format::Md).unwrap()).unwrap()
}

fn html(r: &Report) -> String {
    String::from_utf8(report::render(r, Format::Html).unwrap()).unwrap()
}

fn job<'a>(r: &'a Report, name: &str) -> &'a report::JobReport {
    r.jobs
        .iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no job {name}"))
}

#[test]
fn healthy_batch_ranks_every_job_and_writes_four_files() {
    let (_tmp, dir) = fixture("healthy");
    let r = build(&dir);
    let order: Vec<(&str, Option<usize>)> = r.jobs.iter().map(|j| (j.name.as_str(), j.rank)).collect();
    assert_eq!(
        order,
        [
            ("lr_lr-0.001", Some(1)),
            ("baseline", Some(2)),
            ("lr_lr-0.01", Some(3)),
            ("bench", None)
        ],
        "best val_loss first; the command job, without metrics, last"
    );
    assert_eq!(r.headline.counts.succeeded, 4);
    assert_eq!(r.headline.wall_seconds, 7200.0);
    assert!((r.headline.gpu_hours - 2.0).abs() < 1e-9, "{}", r.headline.gpu_hours);
    assert_eq!(r.headline.bad_metrics_lines, 0);
    assert_eq!(r.swept_keys, ["train.lr"]);
    let best = job(&r, "baseline").best.as_ref().unwrap();
    assert_eq!(
        (best.value, best.epoch, best.source.as_str()),
        (0.3, Some(2), "result.json")
    );

    let text = md(&r);
    for want in [
        "# Batch healthy — 2026-11-22_230000_healthy",
        "**finished** · 4 jobs: 4 succeeded · 0 failed · 0 oom · 0 timeout · 0 cancelled · 0 lost · wall 2h00m · 2.00 GPU-hours",
        "Ranked by best `val_loss` (lower is better).",
        "**Best: lr_lr-0.001** — val_loss 0.2100 @ epoch 3 with `train.lr = 0.001`, `gpus = 1`",
        "Common settings: `image = tb-trainer:latest`, `network = bridge`, `shm_size = 1.0 GiB`, `train.data = surface_water` (3 of 4 jobs),",
        "| # | job | status | train.lr | command | gpus | best val_loss | test_loss | stop | epochs | final | duration |",
        "| 1 | lr_lr-0.001 | succeeded | 0.001 | – | 1 | 0.2100 @ epoch 3 | – | target_reached | 5 | val_loss=0.22 val_iou=0.78 | 30m00s |",
        "| 2 | baseline | succeeded | – | – | 1 | 0.3000 @ epoch 2 | 0.3100 | early_stopping | 5 |",
        "| – | bench | succeeded | – | python3 -c print('hi') | 0 | – | – | – | – | – | 5.0s |",
        "| train.lr | jobs | mean ± std | best |\n|---|--:|--:|--:|\n| 0.001 | 1 | 0.2100 | 0.2100 |\n| 0.01 | 1 | 0.4500 | 0.4500 |",
    ] {
        assert!(text.contains(want), "report.md lacks {want:?}:\n{text}");
    }
    assert!(!text.contains("## Failures") && !text.contains("## Skipped"), "{text}");

    let written = report::write_report(&dir, &r, &Format::ALL).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into())
        .collect();
    assert_eq!(names, ["report.md", "report.json", "report.html", "report.csv"]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["jobs"][0]["name"], "lr_lr-0.001");
    assert_eq!(json["jobs"][0]["best"]["value"], 0.21);
    assert_eq!(json["jobs"][0]["swept"]["train.lr"], 0.001);
    assert_eq!(json["headline"]["counts"]["succeeded"], 4);
    let stray: Vec<_> = std::fs::read_dir(&dir.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "temp files left: {stray:?}");

    let summary = report::summary_lines(&r, &written);
    assert_eq!(summary[0], "4 jobs: 4 succeeded · wall 2h00m · 2.00 GPU-hours");
    assert_eq!(summary[1], "best: lr_lr-0.001 val_loss=0.2100 @ epoch 3");
    assert_eq!(
        summary.last().unwrap(),
        &format!("report: {}", dir.path.join("report.md").display())
    );
}

#[test]
fn garbage_and_truncated_metrics_lines_are_counted_named_and_survived() {
    let (_tmp, dir) = fixture("garbage");
    let r = build(&dir);
    let noisy = job(&r, "noisy");
    // The NaN line is read (its value counted apart, kept for pruning);
    // the two broken ones are named.
    assert_eq!(
        (noisy.metrics.lines, noisy.metrics.bad_lines, noisy.metrics.non_finite),
        (4, 2, 2)
    );
    let named: Vec<(u64, &str)> = noisy.metrics.bad.iter().map(|b| (b.line, b.reason.as_str())).collect();
    assert_eq!(named, [(2, "not JSON"), (5, "missing field `epoch`")]);
    assert_eq!(noisy.epochs, Some(4), "result.json's count");

    // Killed mid-write: the half line counts, the metrics stand in for the
    // missing result.json.
    let killed = job(&r, "killed");
    assert_eq!(killed.metrics.bad_lines, 1);
    assert_eq!(killed.metrics.bad[0].line, 3);
    let best = killed.best.as_ref().unwrap();
    assert_eq!((best.value, best.epoch, best.source.as_str()), (0.5, Some(2), "jsonl"));
    assert_eq!(killed.epochs, Some(2));
    assert_eq!(killed.final_metrics["val_loss"], 0.5, "the last valid line");

    // Still running: a half-written last line is a write in progress.
    let live = job(&r, "live");
    assert_eq!((live.status, live.metrics.bad_lines), (Status::Running, 0));
    assert_eq!(live.duration_seconds, Some(3.0 * 3600.0), "counted to now");
    assert_eq!(r.headline.bad_metrics_lines, 3);
    assert_eq!((r.headline.counts.running, r.headline.counts.timeout), (1, 1));
    assert_eq!(
        r.headline.wall_seconds,
        3.0 * 3600.0,
        "a running batch's wall counts to now"
    );

    let text = md(&r);
    for want in [
        "**running** · 3 jobs: 1 succeeded · 0 failed · 0 oom · 1 timeout · 0 cancelled · 0 lost · 1 running",
        "3 metrics records skipped (see below).",
        "## Skipped metrics records",
        "- noisy: 2 skipped",
        "  - line 2: not JSON — `this is not json`",
        "  - line 5: missing field `epoch` — `{\"step\": 400, \"metrics\": {\"val_loss\": 0.01}}`",
        "- killed: 1 skipped",
        "  - line 3: truncated last line (the job was killed mid-write) — `{\"time\": \"2026-11-22T23:03:00Z\", \"epoch\": 3, \"metr`",
        "| live | running | 0.7000 @ epoch 1 |",
    ] {
        assert!(text.contains(want), "report.md lacks {want:?}:\n{text}");
    }
    assert!(
        !text.contains("- live:"),
        "no skipped lines for the running job:\n{text}"
    );
    assert!(
        text.contains(
            "Values that were NaN or infinite (a run diverging), left out of the curves, in 1 job (noisy (2))."
        ),
        "{text}"
    );
}

#[test]
fn failures_show_exit_code_oom_error_and_the_last_20_lines_of_stderr() {
    let (_tmp, dir) = fixture("failures");
    let r = build(&dir);
    let crash = job(&r, "crash");
    assert_eq!(crash.stderr_tail.len(), 20);
    assert_eq!(crash.stderr_tail[0], "warning 09: <noise> & more");
    assert_eq!(crash.stderr_tail[19], "ValueError: bad <shape> & \"size\"");
    assert!(job(&r, "ok").stderr_tail.is_empty(), "no tail for a success");

    let text = md(&r);
    for want in [
        "## Failures (3)",
        "### crash — failed\n\n- exit code: 3 · out of memory: no · attempt 1\n- reason: exited with code 3\n",
        "Last 20 lines of stderr:\n\n```\nwarning 09: <noise> & more\n",
        "  File \"train.py\", line 9, in <module>\nValueError: bad <shape> & \"size\"\n```",
        "### big — oom\n\n- exit code: 137 · out of memory: yes · attempt 1\n- reason: killed by the kernel: out of memory (limit 8.0 GiB)\n",
        "Last 2 lines of stderr:\n\n```\nloading data\nallocating batch of 4096\n```",
        "### vanished — lost\n\n- exit code: none · out of memory: no · attempt 1\n- reason: the container vanished\n\nstderr: empty",
    ] {
        assert!(text.contains(want), "report.md lacks {want:?}:\n{text}");
    }
    assert!(!text.contains("warning 08"), "more than 20 lines:\n{text}");

    let page = html(&r);
    assert!(page.contains("ValueError: bad &lt;shape&gt; &amp; &quot;size&quot;"));
    assert!(
        !page.contains("<shape>") && !page.contains("<noise>"),
        "stderr must be escaped"
    );

    let summary = report::summary_lines(&r, &[]);
    assert_eq!(
        summary,
        [
            "4 jobs: 1 succeeded, 1 failed, 1 oom, 1 lost · wall 2h00m · 1.67 GPU-hours",
            "best: ok val_loss=0.4000 @ epoch 1",
            "failed: crash: exited with code 3",
            "oom: big: killed by the kernel: out of memory (limit 8.0 GiB)",
            "lost: vanished: the container vanished",
        ]
    );
}

#[test]
fn folds_of_one_configuration_show_mean_and_sample_std() {
    let (_tmp, dir) = fixture("folds");
    let r = build(&dir);
    assert_eq!(r.groups.len(), 2);
    let unet = &r.groups[0];
    assert_eq!(unet.name, "unet");
    assert_eq!(
        unet.jobs,
        ["unet_fold-0", "unet_fold-1", "unet_fold-2"],
        "attempt 2 of fold 1 still belongs"
    );
    assert_eq!((unet.n, unet.folds), (3, 3));
    assert!((unet.mean.unwrap() - 0.82).abs() < 1e-12);
    assert!(
        (unet.std.unwrap() - 0.02).abs() < 1e-12,
        "sample std of 0.80, 0.82, 0.84 is 0.02"
    );
    let lr = &r.groups[1];
    assert_eq!(lr.name, "lr_lr-0.01");
    assert!((lr.mean.unwrap() - 0.72).abs() < 1e-12);
    // (0.70, 0.74): deviations ±0.02, Σ² = 0.0008, / (n − 1) = 0.0008, √ = 0.028284…
    assert!((lr.std.unwrap() - 0.0008f64.sqrt()).abs() < 1e-12);
    assert_eq!(job(&r, "lr_lr-0.01_fold-1").best.as_ref().unwrap().source, "jsonl");
    assert_eq!(job(&r, "unet_fold-1").group.as_deref(), Some("unet"));
    assert_eq!(r.jobs[0].name, "unet_fold-2", "mode max: the highest val_iou first");

    let text = md(&r);
    for want in [
        "Mean ± sample standard deviation (n − 1) of the folds' best values.",
        "| group | metric | folds | mean ± std | min | max | train.lr |",
        "| unet | val_iou | 3/3 | 0.8200 ± 0.0200 | 0.8000 | 0.8400 | – |",
        "| lr_lr-0.01 | val_iou | 2/2 | 0.7200 ± 0.0283 | 0.7000 | 0.7400 | 0.01 |",
        "Ranked by best `val_iou` (higher is better).",
    ] {
        assert!(text.contains(want), "report.md lacks {want:?}:\n{text}");
    }
    let json: serde_json::Value = serde_json::from_slice(&report::render(&r, Format::Json).unwrap()).unwrap();
    assert_eq!(json["groups"][0]["name"], "unet");
    assert_eq!(json["groups"][0]["n"], 3);
    assert!(html(&r).contains("0.8200 ± 0.0200"));
}

#[test]
fn html_is_self_contained() {
    for name in ["healthy", "garbage", "failures", "folds"] {
        let (_tmp, dir) = fixture(name);
        let page = html(&build(&dir));
        for attr in ["src=", "href=", "url(", "@import"] {
            for (i, _) in page.match_indices(attr) {
                let rest = page[i + attr.len()..].trim_start_matches(['"', '\'', ' ']);
                assert!(
                    !rest.starts_with("http:") && !rest.starts_with("https:") && !rest.starts_with("//"),
                    "{name}: external resource at {:?}",
                    &page[i..(i + 60).min(page.len())]
                );
            }
        }
        assert!(!page.contains("<link") && !page.contains("<script src"), "{name}");
        assert!(page.contains("<svg") || name == "failures", "{name}: charts inline");
    }
}

// ---- the page in a real browser ----------------------------------------

/// Runs chromium headless with `args` and the page, within a minute.
pub fn chromium(profile: &Path, args: &[&str], url: &str) -> std::process::Output {
    let child = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run chromium ({e}): install chromium (apt-get install chromium)"));
    // The pipes are drained while it runs: a page's DOM is more than a
    // pipe holds, and chromium would wait for room forever.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: signalling the chromium this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("chromium did not finish within 60 s");
        }
    }
}

/// What went wrong on the page: the script's marker missing (it sets it
/// last, so any exception before leaves it unset), an error the page's own
/// handler caught, or an uncaught error Chromium logged.
fn page_errors(dom: &str, log: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if !dom.contains("data-ok=\"1\"") {
        errors.push("the report's script did not finish (no data-ok on <body>)".to_string());
    }
    if let Some(i) = dom.find("data-error=") {
        errors.push(format!("page error: {}", &dom[i..(i + 120).min(dom.len())]));
    }
    for line in log.lines().filter(|l| l.contains("Uncaught") || l.contains(":CONSOLE")) {
        errors.push(format!("console: {line}"));
    }
    errors
}

fn url(path: &Path, fragment: &str) -> String {
    format!("file://{}{fragment}", path.display())
}

fn dump_dom(profile: &Path, page: &Path, fragment: &str) -> (String, String) {
    let out = chromium(
        profile,
        &["--dump-dom", "--enable-logging=stderr", "--v=0"],
        &url(page, fragment),
    );
    assert!(
        out.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn chromium_renders_the_report_without_console_errors() {
    assert!(
        Command::new("chromium")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "chromium is missing: install chromium (apt-get install chromium)"
    );
    let scratch = tempfile::Builder::new().prefix("tb-chromium-").tempdir().unwrap();
    let profile = scratch.path().join("profile");

    for name in ["healthy", "garbage", "failures", "folds"] {
        let (_tmp, dir) = fixture(name);
        let page = report::write(&dir, &[Format::Html]).unwrap().remove(0);
        let (dom, log) = dump_dom(&profile, &page, "");
        let errors = page_errors(&dom, &log);
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }

    // Sorting runs in the browser: #sort=1 orders the table by job name.
    let (_tmp, dir) = fixture("healthy");
    let page: PathBuf = report::write(&dir, &[Format::Html]).unwrap().remove(0);
    let (dom, log) = dump_dom(&profile, &page, "#sort=1");
    assert!(page_errors(&dom, &log).is_empty(), "{:?}", page_errors(&dom, &log));
    let at = |name: &str| {
        dom.find(&format!("<td>{name}</td>"))
            .or_else(|| dom.find(&format!(">{name}</a>")))
    };
    let order: Vec<usize> = ["baseline", "bench", "lr_lr-0.001", "lr_lr-0.01"]
        .iter()
        .map(|n| at(n).unwrap_or_else(|| panic!("{n} not in the table")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "not sorted by name: {order:?}");
    assert!(dom.contains("aria-sort=\"ascending\""));

    // The check catches a script that throws: the same page with one call
    // to nothing must fail it.
    let broken = scratch.path().join("broken.html");
    let text = std::fs::read_to_string(&page).unwrap();
    let planted = text.replacen("document.body.setAttribute('data-ok', '1');", "notDefined();", 1);
    assert_ne!(planted, text, "the marker line moved; update this test");
    std::fs::write(&broken, planted).unwrap();
    let (dom, log) = dump_dom(&profile, &broken, "");
    let errors = page_errors(&dom, &log);
    assert!(errors.iter().any(|e| e.contains("no data-ok")), "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("notDefined")),
        "the thrown error is reported: {errors:?}"
    );

    // The screenshot: a real page, not a blank one.
    let png = dir.path.join("report.png");
    let out = chromium(
        &profile,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,2000",
            "--hide-scrollbars",
        ],
        &url(&page, ""),
    );
    assert!(
        out.status.success(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // A blank 1280×2000 page compresses to a few kilobytes; text, a table
    // and charts do not.
    assert!(
        bytes.len() > 40_000,
        "the screenshot looks blank ({} bytes)",
        bytes.len()
    );
    if let Ok(keep) = std::env::var("TB_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
}
