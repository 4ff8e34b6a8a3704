//! The night in a real MLflow tracking server (`mlflow==3.17.2` from PyPI,
//! in the venv `make mlflow-venv` makes), started by each test in its own
//! process group on a free port and stopped as a group (the server forks
//! workers that outlive a signal to it alone). What tb sent is read back
//! through the REST API and compared with the run directory.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tb::mlflow::client::Client;

/// The venv with MLflow: `TB_MLFLOW_VENV`, else `target/mlflow-venv`.
fn venv() -> PathBuf {
    let dir = std::env::var_os("TB_MLFLOW_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/mlflow-venv"));
    assert!(
        dir.join("bin/mlflow").is_file(),
        "no MLflow at {}: run `make mlflow-venv` (or set TB_MLFLOW_VENV)",
        dir.display()
    );
    dir
}

/// An MLflow server of the test's own.
struct Server {
    dir: tempfile::TempDir,
    port: u16,
    pgid: Option<i32>,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::Builder::new().prefix("tb-mlflow-").tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = Server { dir, port, pgid: None };
        s.launch();
        s
    }

    fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let mut cmd = Command::new(venv().join("bin/mlflow"));
        cmd.args([
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            &self.port.to_string(),
            "--workers",
            "1",
        ])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}/db.sqlite", self.dir.path().display()))
        .arg("--artifacts-destination")
        .arg(self.dir.path().join("artifacts"))
        .current_dir(self.dir.path())
        .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        // SAFETY: setpgid in the child before exec, no allocation.
        unsafe {
            cmd.pre_exec(|| {
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        self.pgid = Some(child.id() as i32);
        std::mem::forget(child);
        let health = format!("{}/health", self.uri());
        wait_until(180, "the MLflow server to answer", || {
            Command::new("curl")
                .args(["-sf", "--max-time", "2", &health])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    }

    /// The whole process group, TERM then KILL.
    fn stop(&mut self) {
        let Some(pgid) = self.pgid.take() else { return };
        // SAFETY: signals to the group this test created.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: reaps the leader if it is our exited child.
            unsafe { libc::waitpid(pgid, std::ptr::null_mut(), libc::WNOHANG) };
            !group_alive(pgid)
        });
        if !gone {
            // SAFETY: as above.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
                libc::waitpid(pgid, std::ptr::null_mut(), 0);
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether any process is left in the group.
fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Four jobs, one failing, each writing `val_loss` and `train_loss` per
/// epoch; `sleep` between epochs sets the pace.
fn batch(w: &Work, uri: &str, sleep: f64) -> PathBuf {
    let script = |fail: bool| {
        format!(
            "import json, os, sys, time\n\
             lr = float(os.environ['LR'])\n\
             with open('/out/metrics.jsonl', 'a') as f:\n\
             \x20   if {fail}:\n\
             \x20       for e in range(1, 1501):\n\
             \x20           f.write(json.dumps({{'epoch': e, 'metrics': {{'warmup': 1 / e}}}}) + '\\n')\n\
             \x20   for e in range(1, 7):\n\
             \x20       time.sleep({sleep})\n\
             \x20       f.write(json.dumps({{'epoch': e, 'metrics': {{'val_loss': lr / e, 'train_loss': 2 * lr / e}}}}) + '\\n')\n\
             \x20       f.flush()\n\
             print('done')\n\
             sys.exit({})\n",
            if fail { 3 } else { 0 },
            fail = if fail { "True" } else { "False" },
        )
    };
    let command = |fail| serde_json::to_string(&["python3", "-c", &script(fail)]).unwrap();
    w.batch(
        "night.toml",
        &format!(
            "[batch]\nname = \"night\"\ndownloads = \"./downloads\"\nconcurrency = 2\n\
             [batch.mlflow]\ntracking_uri = \"{uri}\"\nexperiment = \"tb-test\"\nartifacts = [\"report\", \"logs\"]\n\
             [defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\ncommand = {ok}\n\
             [[job]]\nname = \"lr\"\n[job.sweep]\n\"env.LR\" = [\"0.1\", \"0.2\", \"0.3\"]\n\
             [[job]]\nname = \"broken\"\ncommand = {bad}\nenv = {{ LR = \"0.5\" }}\n",
            ok = command(false),
            bad = command(true),
        ),
    )
}

const JOBS: [&str; 4] = ["lr_LR-0.1", "lr_LR-0.2", "lr_LR-0.3", "broken"];

/// What the server holds of the batch: the parent run and each job's run.
struct Seen {
    parent: tb::mlflow::client::Run,
    runs: BTreeMap<String, Vec<tb::mlflow::client::Run>>,
}

fn seen(uri: &str, batch_id: &str) -> Seen {
    rt().block_on(async {
        let c = Client::new(uri).unwrap();
        let exp = c.experiment("tb-test").await.unwrap();
        let all = c.runs_tagged(&exp, "tb.batch_id", batch_id).await.unwrap();
        let mut runs: BTreeMap<String, Vec<_>> = BTreeMap::new();
        let mut parent = None;
        for r in all {
            match r.data.tag("tb.job").map(String::from) {
                Some(job) => runs.entry(job).or_default().push(r),
                None => parent = Some(r),
            }
        }
        Seen {
            parent: parent.expect("a parent run"),
            runs,
        }
    })
}

fn history(uri: &str, run_id: &str, key: &str) -> Vec<(i64, f64)> {
    rt().block_on(async {
        let c = Client::new(uri).unwrap();
        c.history(run_id, key)
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.step, p.value))
            .collect()
    })
}

/// The run directory's curve of `metric` for `job`.
fn curve(w: &Work, job: &str, metric: &str) -> Vec<(i64, f64)> {
    let m = tb::metrics::read(&w.job_dir(job), tb::metrics::SourceChoice::Auto, false);
    m.epochs[metric].iter().map(|&(e, v)| (e as i64, v)).collect()
}

/// The server's view equals the run directory's: one run per job, under
/// the parent, with its params, tags, status and every point once.
fn check(w: &Work, server: &Server) {
    let uri = &server.uri();
    let batch_id = w.batch_dir().file_name().unwrap().to_string_lossy().into_owned();
    let s = seen(uri, &batch_id);
    assert_eq!(s.parent.info.status, "FAILED", "one job failed");
    let parent_id = s.parent.info.run_id.clone();
    assert_eq!(s.runs.keys().collect::<Vec<_>>().len(), 4, "{:?}", s.runs.keys());
    // Artifacts, as the server stored them: the report on the parent, each
    // job's logs on its run.
    let stored = |r: &tb::mlflow::client::Run, path: &str| {
        std::fs::read(
            server
                .dir
                .path()
                .join("artifacts")
                .join(&r.info.experiment_id)
                .join(&r.info.run_id)
                .join("artifacts")
                .join(path),
        )
    };
    assert_eq!(
        stored(&s.parent, "report.html").unwrap(),
        std::fs::read(w.batch_dir().join("report.html")).unwrap()
    );
    for job in JOBS {
        let runs = &s.runs[job];
        assert_eq!(runs.len(), 1, "{job}: one run, no duplicate");
        let r = &runs[0];
        assert_eq!(r.info.run_name, job);
        assert_eq!(r.data.tag("mlflow.parentRunId"), Some(parent_id.as_str()));
        let state = w.state(job);
        assert_eq!(r.data.tag("tb.status"), state["status"].as_str(), "{job}");
        assert_eq!(r.data.tag("tb.attempt"), Some(state["attempt"].to_string().as_str()));
        assert_eq!(r.data.tag("tb.identity"), state["identity"].as_str());
        let expected = if job == "broken" { "FAILED" } else { "FINISHED" };
        assert_eq!(r.info.status, expected, "{job}");
        let lr = r
            .data
            .params
            .iter()
            .find(|p| p.key == "env.LR")
            .map(|p| p.value.as_str());
        let want_lr = if job == "broken" {
            "0.5"
        } else {
            job.trim_start_matches("lr_LR-")
        };
        assert_eq!(lr, Some(want_lr), "{job}: {:?}", r.data.params);
        assert!(
            r.data
                .params
                .iter()
                .any(|p| p.key == "image" && p.value == "tb-base:bookworm")
        );
        for log in ["stdout.log", "stderr.log"] {
            let got = stored(r, &format!("logs/{log}")).unwrap_or_else(|e| panic!("{job} {log}: {e}"));
            assert_eq!(got, std::fs::read(w.job_dir(job).join(log)).unwrap(), "{job} {log}");
        }
        let m = tb::metrics::read(&w.job_dir(job), tb::metrics::SourceChoice::Auto, false);
        let names: Vec<&String> = m.epochs.keys().collect();
        let want: &[&str] = if job == "broken" {
            &["train_loss", "val_loss", "warmup"]
        } else {
            &["train_loss", "val_loss"]
        };
        assert_eq!(names, want, "{job}");
        // `warmup`: 1500 points, more than one log-batch takes.
        for metric in want.iter().copied() {
            let got = history(uri, &r.info.run_id, metric);
            let mut steps: Vec<i64> = got.iter().map(|p| p.0).collect();
            steps.dedup();
            assert_eq!(steps.len(), got.len(), "{job} {metric}: a point sent twice: {got:?}");
            assert_eq!(got, curve(w, job, metric), "{job} {metric}");
        }
    }
}

#[test]
fn a_batch_in_mlflow_equals_its_run_directory() {
    let server = Server::start();
    let w = Work::new();
    let f = batch(&w, &server.uri(), 0.2);
    // A token (the server has no auth and ignores it) must reach no log
    // and no file, at any verbosity.
    const TOKEN: &str = "tok-5ecret-9f8e7d";
    let out = w
        .tb()
        .args(["batch", f.to_str().unwrap()])
        .env("MLFLOW_TRACKING_TOKEN", TOKEN)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_exit(&out, 1);
    check(&w, &server);
    let err = text(&out.stderr);
    assert!(err.contains("in MLflow: experiment tb-test"), "{err}");
    assert!(!err.contains(TOKEN));
    let grep = Command::new("grep")
        .args(["-r", "-l", TOKEN])
        .arg(w.path())
        .output()
        .unwrap();
    assert!(grep.stdout.is_empty(), "the token is in {}", text(&grep.stdout));

    // A retry is the same run, its attempt tag updated, no point twice.
    let out = w.run(&["retry", "--job", "broken"]);
    assert_exit(&out, 1);
    assert_eq!(w.state("broken")["attempt"], 2);
    check(&w, &server);
}

#[test]
fn a_killed_supervisor_and_resume_send_no_run_or_point_twice() {
    let _guard = unsupervised();
    let server = Server::start();
    let w = Work::new();
    let f = batch(&w, &server.uri(), 1.0);
    let mut tb = in_background(&w, &f);
    // Mid-batch: some points sent, jobs running.
    wait_until(120, "a first point in MLflow", || {
        std::fs::read_to_string(w.path().join("runs/latest/mlflow.json")).is_ok_and(|l| l.contains("val_loss"))
    });
    // SAFETY: our own child.
    unsafe { libc::kill(tb.0.id() as i32, libc::SIGKILL) };
    tb.0.wait().unwrap();
    let out = w.run(&["resume"]);
    assert_exit(&out, 1);
    check(&w, &server);
}

#[test]
fn a_server_that_goes_away_costs_nothing_and_sync_completes_it() {
    let mut server = Server::start();
    let w = Work::new();
    let f = batch(&w, &server.uri(), 0.5);
    let mut tb = Running(
        w.tb()
            .args(["batch", f.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until(120, "a first point in MLflow", || {
        std::fs::read_to_string(w.path().join("runs/latest/mlflow.json")).is_ok_and(|l| l.contains("val_loss"))
    });
    server.stop();
    let status = tb.0.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(tb.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "the batch ran as usual (one job fails):\n{err}");
    for job in JOBS {
        let want = if job == "broken" { "failed" } else { "succeeded" };
        assert_eq!(w.state(job)["status"], want);
    }
    assert_eq!(err.matches("the night goes on").count(), 1, "warned once:\n{err}");
    server.launch();
    let out = w.run(&["mlflow-sync"]);
    assert_exit(&out, 0);
    check(&w, &server);
}

/// `[batch.mlflow]` as `tb validate` sees it: no server needed.
fn validate_mlflow(w: &Work, table: &str, env: &[(&str, &str)]) -> std::process::Output {
    let f = w.batch(
        "m.toml",
        &format!(
            "[batch]\nname = \"m\"\ndownloads = \"./downloads\"\n{table}\n\
             [[job]]\nname = \"a\"\nimage = \"tb-base:bookworm\"\ngpus = 0\ncommand = [\"true\"]\n"
        ),
    );
    let mut c = w.tb();
    c.args(["validate", f.to_str().unwrap()])
        .env_remove("MLFLOW_TRACKING_URI");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn mlflow_settings_are_checked_before_anything_runs() {
    let w = Work::new();
    // Defaults: the batch's name, report and logs; the URI from the environment.
    let out = validate_mlflow(
        &w,
        "[batch.mlflow]",
        &[("MLFLOW_TRACKING_URI", "http://mlflow.lab:5000/")],
    );
    assert_exit(&out, 0);
    assert!(
        text(&out.stdout).contains("mlflow: experiment m at http://mlflow.lab:5000 (artifacts: report, logs)"),
        "{}",
        text(&out.stdout)
    );
    // No server named anywhere.
    let out = validate_mlflow(&w, "[batch.mlflow]\nexperiment = \"x\"", &[]);
    assert_exit(&out, 2);
    assert!(
        text(&out.stderr).contains("MLFLOW_TRACKING_URI is not set"),
        "{}",
        text(&out.stderr)
    );
    // Credentials in the URI would land in batch.json: refused, not echoed.
    let out = validate_mlflow(
        &w,
        "[batch.mlflow]\ntracking_uri = \"http://me:hunter22@host:5000\"",
        &[],
    );
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.contains("holds credentials") && err.contains("MLFLOW_TRACKING_PASSWORD"),
        "{err}"
    );
    assert!(!err.contains("hunter22"), "{err}");
    // Not a server tb can talk to.
    let out = validate_mlflow(&w, "[batch.mlflow]\ntracking_uri = \"file:///tmp/mlruns\"", &[]);
    assert_exit(&out, 2);
    assert!(
        text(&out.stderr).contains("over http(s), not `file:`"),
        "{}",
        text(&out.stderr)
    );
    // An artifact tb does not know, with the nearest name.
    let out = validate_mlflow(
        &w,
        "[batch.mlflow]\ntracking_uri = \"http://h:5000\"\nartifacts = [\"log\"]",
        &[],
    );
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown artifact `log`") && err.contains("did you mean \"logs\""),
        "{err}"
    );
    // A key tb does not know.
    let out = validate_mlflow(
        &w,
        "[batch.mlflow]\ntracking_uri = \"http://h:5000\"\nexperiment_name = \"x\"",
        &[],
    );
    assert_exit(&out, 2);
}
