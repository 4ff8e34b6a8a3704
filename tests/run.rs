//! Jobs end as data: success, a failing exit, an OOM kill; concurrency;
//! the container's identity and environment.

use crate::common::*;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

const HEAD: &str = "[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\n";

#[test]
fn success_failure_and_oom_are_recorded_and_the_night_goes_on() {
    let w = Work::new();
    let f = w.batch(
        "night.toml",
        &format!(
            "{HEAD}[[job]]\nname = \"three\"\ncommand = [\"sh\", \"-c\", \"echo about to fail; exit 3\"]\n\
             [[job]]\nname = \"oom\"\nmemory = \"64m\"\ncommand = [\"sh\", \"-c\", \"tail /dev/zero\"]\n\
             [[job]]\nname = \"ok\"\ncommand = [\"sh\", \"-c\", \"echo hello; echo to-stderr >&2\"]\n"
        ),
    );
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 1);

    let three = w.state("three");
    assert_eq!(three["status"], "failed");
    assert_eq!(three["exit_code"], 3);
    assert_eq!(three["error"], "exited with code 3");
    assert_eq!(w.stdout_of("three"), "about to fail\n");

    let oom = w.state("oom");
    assert_eq!(oom["status"], "oom", "{oom}");
    assert_eq!(oom["oom_killed"], true);
    assert_eq!(oom["error"], "killed by the kernel: out of memory (limit 64.0 MiB)");

    let ok = w.state("ok");
    assert_eq!(ok["status"], "succeeded");
    assert_eq!(ok["exit_code"], 0);
    assert_eq!(ok["version"], 1);
    assert!(ok["image_id"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(w.stdout_of("ok"), "hello\n");
    assert_eq!(
        std::fs::read_to_string(w.job_dir("ok").join("stderr.log")).unwrap(),
        "to-stderr\n"
    );

    let dir = w.batch_dir();
    assert!(dir.file_name().unwrap().to_string_lossy().ends_with("_night"));
    assert_eq!(
        std::fs::read_to_string(dir.join("batch.toml")).unwrap(),
        std::fs::read_to_string(&f).unwrap()
    );
    let batch: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("batch.json")).unwrap()).unwrap();
    assert_eq!(batch["jobs"], serde_json::json!(["three", "oom", "ok"]));
    assert_eq!(batch["status"], "finished");
    let job: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.job_dir("ok").join("job.json")).unwrap()).unwrap();
    assert_eq!(job["name"], "ok");
    assert_eq!(job["version"], 1);
    let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap();
    assert!(log.contains("three: failed"), "{log}");
    assert!(
        w.path().join("downloads").is_dir(),
        "the downloads cache was not created"
    );
    assert_eq!(text(&out.stdout).trim(), dir.display().to_string());
    assert!(w.leftover_containers().is_empty(), "containers left behind");
    for f in ["report.md", "report.json", "report.html"] {
        assert!(dir.join(f).is_file(), "{f} not written at the end of the batch");
    }
    let err = text(&out.stderr);
    assert!(err.contains("3 jobs: 1 succeeded, 1 failed, 1 oom"), "{err}");
    assert!(err.contains("failed: three: exited with code 3"), "{err}");
    std::fs::remove_file(dir.join("report.json")).unwrap();
    let report = w.run(&["report", "--format", "json"]);
    assert_exit(&report, 0);
    assert_eq!(
        text(&report.stdout).trim(),
        dir.join("report.json").display().to_string()
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["version"], 1);

    // `tb status` and `tb logs` read it back.
    assert_eq!(w.statuses(), ["failed", "oom", "succeeded"]);
    let logs = w.run(&["logs", "ok"]);
    assert_exit(&logs, 0);
    assert_eq!(text(&logs.stdout), "hello\n");
    let logs = w.run(&["logs", "night", "ok", "--stderr"]);
    assert_eq!(text(&logs.stdout), "to-stderr\n");
    let logs = w.run(&["logs", "okk"]);
    assert_exit(&logs, 2);
    assert!(
        text(&logs.stderr).contains("hint: did you mean `ok`?"),
        "{}",
        text(&logs.stderr)
    );
}

fn sleepers(w: &Work, concurrency: u32) -> Vec<(f64, f64)> {
    let f = w.batch(
        "sleep.toml",
        &format!(
            "[batch]\ndownloads = \"./downloads\"\nconcurrency = {concurrency}\n[defaults]\nimage = \"tb-base:bookworm\"\ncommand = [\"sleep\", \"2\"]\n\
             [[job]]\nname = \"a\"\n[[job]]\nname = \"b\"\n[[job]]\nname = \"c\"\n"
        ),
    );
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 0);
    ["a", "b", "c"].iter().map(|j| interval(&w.state(j))).collect()
}

#[test]
fn three_jobs_overlap_under_concurrency_3() {
    let w = Work::new();
    let iv = sleepers(&w, 3);
    let last_start = iv.iter().map(|i| i.0).fold(f64::MIN, f64::max);
    let first_end = iv.iter().map(|i| i.1).fold(f64::MAX, f64::min);
    assert!(last_start < first_end, "not all three ran at once: {iv:?}");
    assert_eq!(max_overlap(&iv), 3);
}

#[test]
fn three_jobs_run_one_by_one_under_concurrency_1() {
    let w = Work::new();
    let iv = sleepers(&w, 1);
    assert_eq!(max_overlap(&iv), 1, "{iv:?}");
    for pair in iv.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "b started before a ended: {iv:?}");
    }
}

#[test]
fn pass_env_values_reach_the_container_and_no_file() {
    let w = Work::new();
    let secret = format!(
        "s3cr3t-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap()
    );
    let f = w.batch(
        "x.toml",
        &format!(
            "{HEAD}pass_env = [\"WANDB_TEST_TOKEN\"]\n[[job]]\nname = \"a\"\ncommand = [\"sh\", \"-c\", \"printf %s \\\"$WANDB_TEST_TOKEN\\\" | wc -c > /out/token_length\"]\n"
        ),
    );
    let out = w
        .tb()
        .args(["batch", f.to_str().unwrap()])
        .env("WANDB_TEST_TOKEN", &secret)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let length = std::fs::read_to_string(w.job_dir("a").join("token_length")).unwrap();
    assert_eq!(
        length.trim(),
        secret.len().to_string(),
        "the container did not get the value"
    );
    let mut files = 0;
    for entry in walk(&w.path().join("runs")) {
        files += 1;
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|win| win == secret.as_bytes()),
            "the secret is in {}",
            entry.display()
        );
    }
    assert!(files >= 6, "only {files} files checked");
    assert!(
        text(&std::fs::read(w.job_dir("a").join("job.json")).unwrap()).contains("\"WANDB_TEST_TOKEN\""),
        "the name belongs in job.json"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_symlink() {
            continue;
        }
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn containers_run_as_the_invoking_user() {
    let w = Work::new();
    let f = w.batch(
        "x.toml",
        &format!(
            "{HEAD}[[job]]\nname = \"who\"\ncommand = [\"sh\", \"-c\", \"echo $(id -u):$(id -g); touch /out/mine\"]\n"
        ),
    );
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid != 0 {
        let out = w.run(&["batch", f.to_str().unwrap()]);
        assert_exit(&out, 0);
        assert_eq!(w.stdout_of("who").trim(), format!("{uid}:{gid}"));
        return;
    }
    // As root, the default user of the image would pass by accident: run
    // tb as another user (with the socket's group to reach the engine).
    let sock_gid = std::fs::metadata("/var/run/docker.sock").unwrap().gid();
    std::fs::set_permissions(w.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=4321",
            "--regid=4321",
            &format!("--groups={sock_gid}"),
            "--reset-env",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_tb"))
        .args(["batch", f.to_str().unwrap()])
        .current_dir(w.path())
        .env("TB_RUNS_DIR", w.path().join("runs"))
        .env("TB_GPUS", "")
        .env("HOME", w.path())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(w.stdout_of("who").trim(), "4321:4321");
    let meta = std::fs::metadata(w.job_dir("who").join("mine")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4321, 4321));
}

#[test]
fn a_job_over_its_time_limit_is_stopped_as_timeout() {
    let w = Work::new();
    let f = w.batch(
        "x.toml",
        &format!("{HEAD}[[job]]\nname = \"slow\"\ntime_limit = \"3s\"\ncommand = [\"sleep\", \"30\"]\n[[job]]\nname = \"next\"\ncommand = [\"true\"]\n"),
    );
    let t = std::time::Instant::now();
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 1);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    let s = w.state("slow");
    assert_eq!(s["status"], "timeout", "{s}");
    assert!(
        s["error"]
            .as_str()
            .unwrap()
            .starts_with("stopped at its time limit of 3s"),
        "{s}"
    );
    let (start, end) = interval(&s);
    assert!(end - start < 10.0, "ran {:.1}s", end - start);
    assert_eq!(w.state("next")["status"], "succeeded");
}
