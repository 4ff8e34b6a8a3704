//! The everyday commands as a person or a script sees them: help, `tb ls`,
//! `tb status` (once and `--watch`), `tb logs -f`, the end-of-batch summary,
//! progress on a terminal and off it, `on_finish`, shell completions.

use crate::common::*;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HEAD: &str = "[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\n";

/// [`HEAD`] with two jobs at a time.
const HEAD2: &str =
    "[batch]\ndownloads = \"./downloads\"\nconcurrency = 2\n[defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\n";

/// [`HEAD`] with one job at a time.
const HEAD1: &str =
    "[batch]\ndownloads = \"./downloads\"\nconcurrency = 1\n[defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\n";

/// A job that "trains": one metrics line per epoch, `val_loss` falling
/// from `start` tenths, `pause` seconds apart, and a line of output each.
fn epochs(name: &str, n: u32, start: u32, pause: f64) -> String {
    let script = format!(
        "for e in $(seq 1 {n}); do sleep {pause}; echo \"{{\\\"epoch\\\": $e, \\\"metrics\\\": {{\\\"val_loss\\\": 0.$(({start} - e))}}}}\" >> /out/metrics.jsonl; echo {name} epoch $e; done"
    );
    format!("[[job]]\nname = \"{name}\"\ncommand = [\"sh\", \"-c\", {script:?}]\n")
}

const TRAIN: &str = "[defaults.train]\nmax_epochs = 5\nmonitor = \"val_loss\"\n";

/// Ids, times, durations and paths that change from run to run.
fn settings(w: &Work) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("snapshots");
    s.set_prepend_module_to_snapshot(false);
    let real = std::fs::canonicalize(w.path()).unwrap();
    s.add_filter(&regex_escape(&real.display().to_string()), "[WORK]");
    s.add_filter(&regex_escape(&w.path().display().to_string()), "[WORK]");
    s.add_filter(r"\d{4}-\d{2}-\d{2}_\d{6}_", "[DATE]_");
    s.add_filter(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", "[CREATED]");
    s.add_filter(r"\d{2}:\d{2}:\d{2}", "[TIME]");
    s.add_filter(r"\b(\d+h\d{2}m|\d+m\d{2}s|\d+\.\d+s)", "[DURATION]");
    s.add_filter(r"container [0-9a-f]{12}", "container [ID]");
    s
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// Table columns padded to the width of an unfiltered value (a duration)
/// read the same whatever that value was.
fn squeeze(table: &str) -> String {
    table
        .lines()
        .map(|l| {
            let mut out = String::new();
            let mut spaces = 0;
            for c in l.trim_end().chars() {
                if c == ' ' {
                    spaces += 1;
                    continue;
                }
                out.push_str(if spaces >= 2 { "  " } else { &" "[..spaces] });
                spaces = 0;
                out.push(c);
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits for `child` at most `limit`; kills it and fails past that.
fn wait(mut child: Child, limit: Duration, what: &str) -> Output {
    let began = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if began.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} still ran after {limit:?}\n--- stdout\n{}\n--- stderr\n{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn spawn(w: &Work, args: &[&str]) -> Child {
    w.tb()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `job` of the newest batch has started.
fn wait_running(w: &Work, job: &str) {
    let began = Instant::now();
    loop {
        let state = w.path().join("runs/latest/jobs").join(job).join("state.json");
        if let Ok(s) = std::fs::read_to_string(&state)
            && s.contains("\"running\"")
        {
            return;
        }
        assert!(began.elapsed() < Duration::from_secs(30), "{job} never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn help_reads_for_a_newcomer() {
    let w = Work::new();
    let s = settings(&w);
    for (name, args) in [
        ("help", vec!["--help"]),
        ("help_batch", vec!["batch", "--help"]),
        ("help_status", vec!["status", "--help"]),
        ("help_logs", vec!["logs", "--help"]),
        ("help_ls", vec!["ls", "--help"]),
        ("help_completions", vec!["completions", "--help"]),
    ] {
        let out = w.run(&args);
        assert_exit(&out, 0);
        s.bind(|| insta::assert_snapshot!(name, text(&out.stdout)));
    }
    // Every subcommand shows an example.
    let help = text(&w.run(&["--help"]).stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 8, "{commands:?}");
    for c in commands {
        let out = text(&w.run(&[c, "--help"]).stdout);
        assert!(out.contains("Example"), "`tb {c} --help` shows no example:\n{out}");
    }
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let w = Work::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = w.run(&["completions", shell]);
        assert_exit(&out, 0);
        let script = text(&out.stdout);
        for word in ["batch", "status", "logs", "runs-dir"] {
            assert!(script.contains(word), "{shell} completions lack `{word}`");
        }
    }
    let path = w.path().join("tb.bash");
    std::fs::write(&path, w.run(&["completions", "bash"]).stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert_exit(&w.run(&["completions", "tcsh"]), 2);
}

#[test]
fn status_ls_and_the_end_of_batch_summary() {
    let w = Work::new();
    let f = w.batch(
        "night.toml",
        &format!(
            "{HEAD1}{TRAIN}{}{}[[job]]\nname = \"crash\"\ncommand = [\"sh\", \"-c\", \"echo boom >&2; exit 3\"]\n",
            epochs("small", 3, 9, 0.0),
            epochs("large", 4, 8, 0.0)
        ),
    );
    let s = settings(&w);
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 1);
    let err = text(&out.stderr);
    let summary: Vec<&str> = err.lines().skip_while(|l| !l.contains(" finished after ")).collect();
    s.bind(|| insta::assert_snapshot!("batch_summary", summary.join("\n")));

    let status = w.run(&["status"]);
    assert_exit(&status, 0);
    s.bind(|| insta::assert_snapshot!("status", squeeze(&text(&status.stdout))));
    assert!(
        text(&status.stderr).contains("_night (finished)"),
        "{}",
        text(&status.stderr)
    );

    let again = w.batch(
        "again.toml",
        &format!("{HEAD}[[job]]\nname = \"one\"\ncommand = [\"true\"]\n"),
    );
    assert_exit(&w.run(&["batch", again.to_str().unwrap()]), 0);
    let ls = w.run(&["ls"]);
    assert_exit(&ls, 0);
    s.bind(|| insta::assert_snapshot!("ls", text(&ls.stdout)));
    let json: serde_json::Value = serde_json::from_slice(&w.run(&["ls", "--json"]).stdout).unwrap();
    assert_eq!(json[0]["name"], "again");
    assert_eq!(json[1]["counts"]["failed"], 1);
    assert_eq!(json[1]["counts"]["succeeded"], 2);
}

#[test]
fn ls_with_no_batches_says_so() {
    let w = Work::new();
    let out = w.run(&["ls"]);
    assert_exit(&out, 0);
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("no batch under"), "{}", text(&out.stderr));
}

/// The raw bytes a terminal would receive from `tb batch`, through
/// util-linux `script` (in every Debian: bsdutils is Essential).
#[test]
fn on_a_terminal_the_bars_advance_and_job_lines_show_epochs() {
    let w = Work::new();
    let f = w.batch(
        "night.toml",
        &format!(
            "{HEAD2}{TRAIN}{}{}{}",
            // Ends a second apart, so that each count is drawn.
            epochs("a", 3, 9, 0.5),
            epochs("b", 5, 9, 0.5),
            epochs("c", 4, 9, 0.5)
        ),
    );
    let tb = format!("{} batch {}", env!("CARGO_BIN_EXE_tb"), f.display());
    let mut child = Command::new("script")
        .args(["-qfec", &tb, "/dev/null"])
        .current_dir(w.path())
        .env("TB_RUNS_DIR", w.path().join("runs"))
        .env("TB_GPUS", "")
        .env("COLUMNS", "120")
        .env("LINES", "40")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script`");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut raw = Vec::new();
        stdout.read_to_end(&mut raw).unwrap();
        raw
    });
    let out = wait(child, Duration::from_secs(60), "tb batch under script");
    let raw = text(&reader.join().unwrap());
    assert!(out.status.success(), "{raw}");
    assert!(raw.contains("\x1b["), "no escape codes: not drawn as bars?\n{raw}");
    let plain = strip_ansi(&raw);
    let at = |needle: &str| {
        plain
            .find(needle)
            .unwrap_or_else(|| panic!("`{needle}` never shown:\n{plain}"))
    };
    assert!(at("0/3 jobs") < at("1/3 jobs"), "{plain}");
    assert!(at("1/3 jobs") < at("2/3 jobs"), "{plain}");
    assert!(plain.contains("attempt 1  epoch 2/5  val_loss=0.7000"), "{plain}");
    assert!(at("epoch -/5") < at("epoch 3/5"), "{plain}");
    // Log lines land above the bars, whole.
    assert!(plain.contains("INFO started a (attempt 1) in container "), "{plain}");
    assert!(plain.contains("INFO 3 jobs: 3 succeeded"), "{plain}");
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[test]
fn off_a_terminal_progress_is_plain_lines() {
    let w = Work::new();
    let f = w.batch(
        "night.toml",
        &format!("{HEAD}{TRAIN}{}{}", epochs("a", 5, 9, 1.0), epochs("b", 3, 9, 0.3)),
    );
    // Colour would be allowed; it is the pipe that rules escape codes out.
    let out = w
        .tb()
        .args(["batch", f.to_str().unwrap()])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let err = text(&out.stderr);
    assert!(!err.contains('\x1b'), "escape codes off a terminal:\n{err:?}");
    assert!(!err.contains('\r'), "carriage returns off a terminal:\n{err:?}");
    let lines: Vec<&str> = err.lines().collect();
    let line = |needle: &str| {
        lines
            .iter()
            .position(|l| l.ends_with(needle))
            .unwrap_or_else(|| panic!("no line ending `{needle}`:\n{err}"))
    };
    // The first epoch at once, the last always (the ones between come at
    // most every 30 s), each before the job's end.
    assert!(line("a: epoch 1/5 val_loss=0.8000") < line("a: epoch 5/5 val_loss=0.4000"));
    assert!(line("a: epoch 5/5 val_loss=0.4000") < lines.iter().position(|l| l.contains("a succeeded")).unwrap());
    assert!(line("b: epoch 3/5 val_loss=0.6000") > 0);
    assert!(!err.contains("a: epoch 3/5"), "a milestone every epoch:\n{err}");
    let log = std::fs::read_to_string(w.batch_dir().join("supervisor.log")).unwrap();
    assert!(log.contains("a: epoch 5/5 val_loss=0.4000"), "{log}");
}

#[test]
fn logs_follow_a_job_across_attempts_and_every_job_while_status_watches() {
    let w = Work::new();
    // `flaky` fails its first attempt and succeeds on the automatic retry.
    let flaky = "if [ -e /out/marker ]; then echo second-1; sleep 1; echo second-2; \
                 else touch /out/marker; echo first-1; sleep 2; echo first-2; exit 4; fi";
    let f = w.batch(
        "night.toml",
        &format!(
            "[batch]\ndownloads = \"./downloads\"\nretries = 1\n[defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\n\
             [[job]]\nname = \"flaky\"\ncommand = [\"sh\", \"-c\", {flaky:?}]\n\
             [[job]]\nname = \"other\"\ncommand = [\"sh\", \"-c\", \"echo o-1; sleep 3; printf o-2\"]\n"
        ),
    );
    let batch = spawn(&w, &["batch", f.to_str().unwrap()]);
    wait_running(&w, "flaky");
    let one = spawn(&w, &["logs", "flaky", "-f"]);
    let every = spawn(&w, &["logs", "-f"]);
    let watch = spawn(&w, &["status", "--watch"]);
    let limit = Duration::from_secs(60);
    assert_exit(&wait(batch, limit, "tb batch"), 0);
    let one = wait(one, limit, "tb logs flaky -f");
    let every = wait(every, limit, "tb logs -f");
    let watch = wait(watch, limit, "tb status --watch");

    assert_exit(&one, 0);
    assert_eq!(text(&one.stdout), "first-1\nfirst-2\nsecond-1\nsecond-2\n");

    assert_exit(&every, 0);
    let mut lines: Vec<String> = text(&every.stdout).lines().map(String::from).collect();
    let flaky_lines: Vec<&String> = lines.iter().filter(|l| l.starts_with("flaky | ")).collect();
    assert_eq!(
        flaky_lines,
        [
            "flaky | first-1",
            "flaky | first-2",
            "flaky | second-1",
            "flaky | second-2"
        ],
        "{lines:?}"
    );
    lines.retain(|l| !l.starts_with("flaky | "));
    assert_eq!(lines, ["other | o-1", "other | o-2"]);

    assert_exit(&watch, 0);
    let tables = text(&watch.stdout);
    assert!(tables.matches("JOB").count() >= 2, "one table only:\n{tables}");
    let last = tables.trim_end().rsplit("JOB").next().unwrap();
    assert_eq!(last.matches("succeeded").count(), 2, "{tables}");
    assert!(tables.contains("running"), "{tables}");
    assert!(!tables.contains('\x1b'), "{tables}");

    // Afterwards: one name is a job of the newest batch, or else a batch.
    let all = w.run(&["logs", "night"]);
    assert_exit(&all, 0);
    assert_eq!(
        text(&all.stdout),
        "flaky | second-1\nflaky | second-2\nother | o-1\nother | o-2\n"
    );
    let first = w.run(&["logs", "--attempt", "1"]);
    // Attempt 1 of each job: `other` is still on it.
    assert_eq!(
        text(&first.stdout),
        "flaky | first-1\nflaky | first-2\nother | o-1\nother | o-2\n"
    );
    let nothing = w.run(&["logs", "nope"]);
    assert_exit(&nothing, 2);
    assert!(
        text(&nothing.stderr).contains("has no job `nope` nor is there a batch so named"),
        "{}",
        text(&nothing.stderr)
    );
}

fn calls(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn on_finish_runs_once_with_the_report_path_and_again_after_retry() {
    let w = Work::new();
    let log = w.path().join("calls");
    let flaky = "if [ -e /out/marker ]; then echo ok; else touch /out/marker; exit 4; fi";
    let f = w.batch(
        "night.toml",
        &format!(
            "[batch]\ndownloads = \"./downloads\"\non_finish = [\"sh\", \"-c\", \"echo \\\"$TB_REPORT $TB_SUCCEEDED $TB_FAILED $TB_TOTAL $TB_COUNT_FAILED $TB_BATCH_STATUS\\\" >> {}\"]\n\
             [defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\n\
             [[job]]\nname = \"flaky\"\ncommand = [\"sh\", \"-c\", {flaky:?}]\n[[job]]\nname = \"fine\"\ncommand = [\"true\"]\n",
            log.display()
        ),
    );
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 1);
    let report = w.batch_dir().join("report.md");
    assert_eq!(calls(&log), [format!("{} 1 1 2 1 finished", report.display())]);
    assert!(report.is_file());

    assert_exit(&w.run(&["retry"]), 0);
    let c = calls(&log);
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(c[1], format!("{} 2 0 2 0 finished", report.display()));
}

#[test]
fn a_failing_or_missing_on_finish_does_not_change_the_exit_status() {
    let w = Work::new();
    for (command, warning) in [
        ("[\"false\"]", "on_finish: `false` exited with code 1"),
        ("[\"no-such-cmd-tb\"]", "on_finish: cannot run `no-such-cmd-tb`"),
    ] {
        let f = w.batch(
            "x.toml",
            &format!("[batch]\ndownloads = \"./downloads\"\non_finish = {command}\n[defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\n[[job]]\nname = \"a\"\ncommand = [\"true\"]\n"),
        );
        let out = w.run(&["batch", f.to_str().unwrap()]);
        assert_exit(&out, 0);
        let err = text(&out.stderr);
        assert!(err.lines().any(|l| l.contains("WARN") && l.contains(warning)), "{err}");
        assert_eq!(text(&out.stdout).trim(), w.batch_dir().display().to_string());
    }
    let f = w.batch(
        "bad.toml",
        "[batch]\non_finish = []\n[defaults]\nimage = \"tb-base:bookworm\"\n[[job]]\nname = \"a\"\n",
    );
    let out = w.run(&["validate", f.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert!(
        text(&out.stderr).contains("`batch.on_finish` names no program"),
        "{}",
        text(&out.stderr)
    );
}
