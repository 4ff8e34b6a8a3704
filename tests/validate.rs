//! Invalid input fails the whole file before anything starts: exit 2,
//! nothing written, a message that says where and what to do.

use crate::common::*;
use std::path::Path;

#[test]
fn a_bad_file_exits_2_and_writes_nothing() {
    let w = Work::new();
    let f = w.batch(
        "night.toml",
        "[defaults]\nimage = \"tb-base:bookworm\"\npatience = 3\n[[job]]\nname = \"a\"\n",
    );
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "error: invalid batch file `{}`\n  caused by: line 3, column 1: unknown field `patience`",
            f.display()
        )),
        "{err}"
    );
    assert!(err.contains("hint: valid keys here: `name`, `image`"), "{err}");
    assert!(!w.path().join("runs").exists(), "a runs directory was written");
    assert!(!w.path().join("downloads").exists());
}

#[test]
fn syntax_errors_point_at_line_and_column() {
    let w = Work::new();
    let f = w.batch("x.toml", "[batch]\nname = \"x\n");
    let out = w.run(&["validate", f.to_str().unwrap()]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(err.contains("caused by: line 2, column"), "{err}");
    assert!(err.contains("2 | name = \"x"), "no excerpt: {err}");
}

#[test]
fn a_missing_image_is_refused_before_anything_starts() {
    let w = Work::new();
    let f = w.batch("x.toml", "[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"tb-no-such-image:1\"\n[[job]]\nname = \"a\"\n[[job]]\nname = \"b\"\n");
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.contains("the Docker engine has no image `tb-no-such-image:1` (used by a, b)"),
        "{err}"
    );
    assert!(err.contains("hint: build or load it first"), "{err}");
    assert!(!w.path().join("runs").exists());
}

#[test]
fn a_gpu_request_without_a_gpu_is_refused() {
    let w = Work::new();
    let f = w.batch(
        "x.toml",
        "[defaults]\nimage = \"tb-base:bookworm\"\ngpus = 1\n[[job]]\nname = \"a\"\n",
    );
    let out = w.run(&["validate", f.to_str().unwrap()]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.contains("job `a` asks for 1 GPU(s) but this host has none"),
        "{err}"
    );
    assert!(err.contains("hint: set gpus = 0"), "{err}");
}

#[test]
fn validate_lists_the_jobs_and_writes_nothing() {
    let w = Work::new();
    let f = w.batch(
        "night.toml",
        "[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"tb-base:bookworm\"\n[defaults.train]\nmodel = \"unet\"\n[[job]]\nname = \"a\"\n[[job]]\nname = \"b\"\ncommand = [\"echo\", \"hi\"]\n",
    );
    let out = w.run(&["validate", f.to_str().unwrap()]);
    assert_exit(&out, 0);
    let table = text(&out.stdout);
    assert!(table.lines().next().unwrap().trim_start().starts_with("JOB"), "{table}");
    assert!(table.contains("(image default) model=unet"), "{table}");
    assert!(table.contains("echo hi"), "{table}");
    assert!(text(&out.stderr).contains("valid: 2 job(s), concurrency 1"));
    assert!(!w.path().join("runs").exists());
    assert!(!w.path().join("downloads").exists());
}

#[test]
fn an_unreachable_engine_is_a_clear_error() {
    let w = Work::new();
    let f = w.batch(
        "x.toml",
        "[defaults]\nimage = \"tb-base:bookworm\"\n[[job]]\nname = \"a\"\n",
    );
    let out = w
        .tb()
        .args(["batch", f.to_str().unwrap()])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(err.starts_with("error: cannot reach the Docker engine"), "{err}");
    assert!(err.contains("hint: start it"), "{err}");
    assert!(!w.path().join("runs").exists());
}

#[test]
fn status_without_a_batch_says_how_to_start_one() {
    let w = Work::new();
    let out = w.run(&["status"]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(err.starts_with("error: no batch under"), "{err}");
    assert!(err.contains("hint: start one with `tb batch FILE`"), "{err}");
}

/// The text of the excerpt's source line from its caret's column on.
fn caret_points_at(err: &str) -> String {
    let lines: Vec<&str> = err.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("| ") && l.contains('^'))
        .unwrap_or_else(|| panic!("no caret line: {err}"));
    let col = lines[at].chars().position(|c| c == '^').unwrap();
    lines[at - 1].chars().skip(col).collect()
}

#[test]
fn control_characters_from_the_file_are_shown_escaped() {
    let w = Work::new();
    let f = w.batch(
        "x.toml",
        "[defaults]\nimage = \"tb-base:bookworm\"\n[[job]]\nname = \"a\\u001b[31mred\"\n",
    );
    let out = w.run(&["validate", f.to_str().unwrap()]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(!out.stderr.contains(&0x1b), "a raw ESC reached the terminal: {err:?}");
    assert!(err.contains("job name `a\\u{1b}[31mred` contains `\\u{1b}`"), "{err}");

    // A raw ESC in the file is a TOML error: its excerpt shows the line,
    // with the caret still under the (now escaped) character.
    std::fs::write(
        &f,
        b"[defaults]\nimage = \"tb-base:bookworm\"\n[[job]]\nname = \"a\x1b[31mred\"\n",
    )
    .unwrap();
    let out = w.run(&["validate", f.to_str().unwrap()]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(!out.stderr.contains(&0x1b), "a raw ESC reached the terminal: {err:?}");
    assert!(caret_points_at(&err).starts_with("\\u{1b}[31mred\""), "{err}");
}

#[test]
fn a_10000_character_value_is_cut_wherever_it_is_shown() {
    let w = Work::new();
    let long = "x".repeat(10_000);
    // toml quotes the value in its message and shows its line with carets;
    // tb's own check quotes a name.
    let files = [
        format!("[defaults]\nimage = \"tb-base:bookworm\"\ncpus = \"{long}\"\n[[job]]\nname = \"a\"\n"),
        format!("[defaults]\nimage = \"tb-base:bookworm\"\n[[job]]\nname = \"{long}\"\n"),
    ];
    for body in &files {
        let f = w.batch("x.toml", body);
        let out = w.run(&["validate", f.to_str().unwrap()]);
        assert_exit(&out, 2);
        let err = text(&out.stderr);
        assert!(err.len() < 2_000, "{} bytes of error", err.len());
        assert!(err.contains(" characters cut)"), "{err}");
        assert!(err.lines().all(|l| l.chars().count() < 360), "{err}");
    }
    let f = w.batch("x.toml", &files[0]);
    let err = text(&w.run(&["validate", f.to_str().unwrap()]).stderr);
    assert!(
        caret_points_at(&err).starts_with("\"xxx"),
        "the caret moved off the value: {err}"
    );
}

/// A run directory whose job.json holds a time limit no clock can reach (as
/// an older tb wrote one) still reads: status shows it, resume and retry
/// end with a message, and none of them panics.
#[test]
fn a_run_directory_with_a_huge_time_limit_reads() {
    let w = Work::scratch();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report/healthy");
    let dir = w.path().join("runs/2026-11-22_230000_healthy");
    copy_dir(&fixture, &dir);
    let job = dir.join("jobs/baseline/job.json");
    let mut spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&job).unwrap()).unwrap();
    spec["time_limit"] = serde_json::json!(1.8446744073709552e19);
    std::fs::write(&job, spec.to_string()).unwrap();
    let d = dir.to_str().unwrap();
    let out = w.tb().args(["status", d]).output().unwrap();
    assert_exit(&out, 0);
    assert!(text(&out.stdout).contains("baseline"), "{}", text(&out.stdout));
    for command in ["resume", "retry"] {
        let out = w.tb().args([command, d]).env("TB_GPUS", "0").output().unwrap();
        let err = text(&out.stderr);
        assert!(!err.contains("panicked"), "tb {command} panicked: {err}");
        assert_ne!(out.status.code(), Some(101), "tb {command}: {err}");
    }
}

/// A grid is counted before it is expanded: 1000³ jobs are refused at once,
/// with the count, by `validate` and `batch` alike.
#[test]
fn a_huge_grid_is_refused_with_its_count_before_it_is_expanded() {
    let w = Work::scratch();
    let list = format!("[{}]", (0..1000).map(|i| i.to_string()).collect::<Vec<_>>().join(", "));
    let f = w.batch(
        "grid.toml",
        &format!(
            "[defaults]\nimage = \"tb-base:bookworm\"\n[[job]]\nname = \"big\"\n[job.sweep]\n\
             \"train.a\" = {list}\n\"train.b\" = {list}\n\"train.c\" = {list}\n"
        ),
    );
    for command in ["validate", "batch"] {
        let started = std::time::Instant::now();
        let out = w.run(&[command, f.to_str().unwrap()]);
        assert_exit(&out, 2);
        let err = text(&out.stderr);
        assert!(
            err.contains(
                "job `big`: the sweep would expand into 1000 (train.a) × 1000 (train.b) × 1000 (train.c) \
                 = 1,000,000,000 jobs; one [[job]] expands into at most 100,000"
            ),
            "{err}"
        );
        assert!(
            started.elapsed().as_secs() < 10,
            "tb {command} took {:?}",
            started.elapsed()
        );
    }
    assert!(!w.path().join("runs").exists());
}

/// Sizes, durations and counts outside docs/batch-file.md's limits are
/// refused by validation, naming the key and the range.
#[test]
fn values_outside_the_limits_are_refused_naming_key_and_range() {
    let w = Work::scratch();
    let f = w.batch(
        "x.toml",
        "[defaults]\nimage = \"tb-base:bookworm\"\ntime_limit = \"18446744073709551615s\"\n[[job]]\nname = \"a\"\n\
         memory = \"99999999999999999999g\"\nshm_size = \"18446744073709551616\"\n[[job]]\nname = \"b\"\n\
         memory = \"1\"\ntime_limit = \"1h\"\n",
    );
    let out = w.run(&["validate", f.to_str().unwrap()]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    for says in [
        "job `a`: `memory` = \"99999999999999999999g\" is out of range: it must be between 6m and 64t",
        "job `a`: `shm_size` = \"18446744073709551616\" is out of range: it must be between 1m and 64t",
        "job `a`: `time_limit` = \"18446744073709551615s\" is out of range: it must be between 1s and 365d",
        "job `b`: `memory` = \"1\" is out of range: it must be between 6m and 64t (6 MiB is the Docker engine's minimum)",
    ] {
        assert!(err.contains(says), "missing {says:?} in:\n{err}");
    }
}

/// `validate` checks what `batch` would, with the same severity: a
/// downloads directory that cannot be created (here under /proc, which
/// mode bits call writable for root) is an error for both, and so is a
/// Slurm backend on a host without Slurm.
#[test]
fn validate_and_batch_share_one_preflight() {
    let w = Work::new();
    let f = w.batch(
        "x.toml",
        "[batch]\ndownloads = \"/proc/tb-no-such-dir/downloads\"\n[defaults]\nimage = \"tb-base:bookworm\"\n\
         command = [\"true\"]\n[[job]]\nname = \"a\"\n",
    );
    for args in [&["validate"][..], &["batch", "--dry-run"], &["batch"]] {
        let out = w.tb().args(args).arg(&f).output().unwrap();
        assert_exit(&out, 2);
        let err = text(&out.stderr);
        assert!(
            err.contains(
                "the downloads directory `/proc/tb-no-such-dir/downloads` is not usable: \
                 cannot create `/proc/tb-no-such-dir`"
            ),
            "tb {args:?}: {err}"
        );
        assert!(err.contains("hint: set `downloads` in [batch]"), "{err}");
    }
    assert!(!w.path().join("runs").exists(), "a runs directory was written");

    if which("sbatch") {
        return;
    }
    let f = w.batch(
        "s.toml",
        "[batch]\nbackend = \"slurm\"\ndownloads = \"./downloads\"\n[defaults]\nimage = \"tb-base:bookworm\"\n\
         command = [\"true\"]\n[[job]]\nname = \"a\"\n",
    );
    for args in [&["validate"][..], &["batch", "--dry-run"]] {
        let out = w.tb().args(args).arg(&f).output().unwrap();
        assert_exit(&out, 2);
        assert!(
            text(&out.stderr).starts_with("error: the Slurm backend needs the Slurm client tools"),
            "tb {args:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(
        !w.path().join("downloads").exists(),
        "validate left the downloads directory"
    );
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// A byte that is not UTF-8 is located, with a hint about the encoding
/// (not about the path); a wrong type is named in the file's words, never
/// a Rust type's.
#[test]
fn invalid_utf8_is_located_and_types_are_named_in_words() {
    let w = Work::scratch();
    let f = w.path().join("x.toml");
    std::fs::write(&f, b"[batch]\nname = \"caf\xe9\"\n[[job]]\nname = \"a\"\n").unwrap();
    let out = w.run(&["validate", f.to_str().unwrap()]);
    assert_exit(&out, 2);
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: invalid batch file `{}`\n  caused by: line 2, column 12: the file is not UTF-8 text: byte 0xE9 \
             (offset 19) is not part of a UTF-8 character\nhint: TOML files are UTF-8: save it as UTF-8 \
             (e.g. `iconv -f latin1 -t utf-8`), or remove the byte\n",
            f.display()
        )
    );

    for (body, says) in [
        ("job = [3]\n", "expected a [[job]] (or [defaults]) table"),
        ("[defaults.prune]\ngrace = \"x\"\n", "expected a whole number such as 3"),
        ("[batch]\nretries = \"x\"\n", "expected a number of retries such as 1"),
    ] {
        let f = w.batch("t.toml", body);
        let out = w.run(&["validate", f.to_str().unwrap()]);
        assert_exit(&out, 2);
        let err = text(&out.stderr);
        assert!(err.contains(says), "{body:?}: {err}");
        assert!(
            !err.contains("struct") && !err.contains("u64") && !err.contains("i64"),
            "{err}"
        );
    }
}

/// A Docker network made for one test, removed when dropped.
struct Network(String);

impl Network {
    fn create() -> Network {
        let name = format!("tb-test-net-{}", std::process::id());
        let out = std::process::Command::new("docker")
            .args(["network", "create", &name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        Network(name)
    }

    /// The host interface of the network's bridge: `br-` and the id's first 12.
    fn bridge(&self) -> String {
        let out = std::process::Command::new("docker")
            .args(["network", "inspect", "-f", "{{.Id}}", &self.0])
            .output()
            .unwrap();
        format!("br-{}", &text(&out.stdout).trim()[..12])
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

#[test]
fn a_network_whose_bridge_is_gone_is_refused_before_any_job_starts() {
    let w = Work::new();
    let net = Network::create();
    let f = w.batch(
        "x.toml",
        &format!(
            "[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"{BASE}\"\nnetwork = \"{}\"\n\
             command = [\"sh\", \"-c\", \"touch /out/ran\"]\n[[job]]\nname = \"a\"\n[[job]]\nname = \"b\"\n",
            net.0
        ),
    );
    // The network works: the batch runs (the probe passes a sound network).
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 0);
    std::fs::remove_dir_all(w.path().join("runs")).unwrap();

    let bridge = net.bridge();
    let del = std::process::Command::new("ip")
        .args(["link", "delete", &bridge])
        .output()
        .unwrap();
    assert!(del.status.success(), "ip link delete {bridge}: {}", text(&del.stderr));
    for verb in ["validate", "batch"] {
        let out = w.run(&[verb, f.to_str().unwrap()]);
        assert_exit(&out, 2);
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "a container cannot join the network `{}` (2 jobs use it)",
                net.0
            )),
            "{verb}: {err}"
        );
        assert!(
            err.contains(&format!("could not find bridge {bridge}")),
            "{verb}: the engine's message is missing: {err}"
        );
        assert!(err.contains("hint: recreate the network"), "{verb}: {err}");
    }
    assert!(!w.path().join("runs").exists(), "a batch directory was written");
    assert_eq!(
        containers_labelled(&format!("tb.probe={}", net.0)),
        Vec::<String>::new(),
        "a probe was left"
    );
    let docker0 = std::process::Command::new("ip")
        .args(["link", "show", "docker0"])
        .output()
        .unwrap();
    assert!(docker0.status.success(), "the host's docker0 is gone");
}

#[test]
fn a_network_that_does_not_exist_is_refused_before_any_job_starts() {
    let w = Work::new();
    let f = w.batch(
        "x.toml",
        &format!("[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"{BASE}\"\nnetwork = \"tb-no-such-net\"\n[[job]]\nname = \"a\"\n"),
    );
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.contains("a container cannot join the network `tb-no-such-net` (1 job uses it)"),
        "{err}"
    );
    assert!(
        err.contains("hint: create it (docker network create tb-no-such-net)"),
        "{err}"
    );
    assert!(!w.path().join("runs").exists());
}
