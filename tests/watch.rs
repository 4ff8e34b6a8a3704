//! `tb watch`: a batch per trigger, files below `min_new` fire nothing,
//! files that arrive during a batch queue one more, a SIGKILL and a
//! restart neither lose nor repeat a trigger, `--once` from cron, and
//! Ctrl-C stopping the watch and its batch as `tb batch` would.

use crate::common::*;
use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// A batch file watching `./incoming` for 3 new files (settled 1 s), and
/// its one job: it records its batch and how many files it sees, then
/// (with `gate`) waits for `shared/release`.
fn project(w: &Work, gate: bool, extra_watch: &str) -> PathBuf {
    for d in ["incoming", "shared"] {
        std::fs::create_dir_all(w.path().join(d)).unwrap();
    }
    // Bounded, so that a failed test leaves no container waiting forever.
    let wait = if gate {
        "; for i in $(seq 600); do [ -e /shared/release ] && break; sleep 0.1; done"
    } else {
        ""
    };
    w.batch(
        "retrain.toml",
        &format!(
            "[batch]\ndownloads = \"./downloads\"\n\
             [batch.watch]\ndata = \"./incoming\"\nmin_new = 3\nsettle = \"1s\"\n{extra_watch}\n\
             [defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\nmounts = [\"./shared:/shared\", \"./incoming:/in:ro\"]\n\
             [[job]]\nname = \"train\"\n\
             command = [\"sh\", \"-c\", \"echo $TB_BATCH $(ls /in/*.csv | wc -l) >> /shared/runs.txt{wait}\"]\n"
        ),
    )
}

/// Files dropped into `incoming/`, their time `age` in the past.
pub(crate) fn drop_files(w: &Work, names: &[&str], age: Duration) {
    for name in names {
        let path = w.path().join("incoming").join(name);
        std::fs::write(&path, name).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }
}

/// What the jobs recorded: one line per run, `<batch dir> <files seen>`.
pub(crate) fn runs(w: &Work) -> Vec<String> {
    std::fs::read_to_string(w.path().join("shared/runs.txt"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

pub(crate) fn watch_json(w: &Work) -> Value {
    let text = std::fs::read_to_string(w.path().join("runs/retrain.watch/watch.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

pub(crate) fn triggers(w: &Work) -> Vec<Value> {
    watch_json(w)["triggers"].as_array().cloned().unwrap_or_default()
}

pub(crate) fn ended(w: &Work, n: usize) -> bool {
    let t = triggers(w);
    t.len() == n && t.iter().all(|t| t["status"] == "ended")
}

/// The batch directories under the runs directory, oldest first.
pub(crate) fn batches(w: &Work) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(w.path().join("runs")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| !p.is_symlink() && p.join("batch.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A `tb watch` in the background, its stderr collected as it comes.
struct Watching {
    child: Running,
    err: Arc<Mutex<String>>,
    /// The thread collecting stderr: joined once tb has ended, so that
    /// its last lines are there.
    reader: Option<std::thread::JoinHandle<()>>,
}

fn watch(w: &Work, file: &Path, args: &[&str]) -> Watching {
    let mut child = w
        .tb()
        .env("TB_WATCH_POLL", "0.2")
        .args(["--no-progress", "watch", file.to_str().unwrap()])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let err = Arc::new(Mutex::new(String::new()));
    let sink = err.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut all = sink.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    Watching {
        child: Running(child),
        err,
        reader: Some(reader),
    }
}

impl Watching {
    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    fn wait_said(&self, secs: u64, what: &str) {
        let until = std::time::Instant::now() + Duration::from_secs(secs);
        while !self.stderr().contains(what) {
            assert!(
                std::time::Instant::now() < until,
                "tb watch never said {what:?}; it said:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&mut self, signal: i32) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.0.id() as i32, signal) };
        let status = self.child.0.wait().unwrap();
        self.read_to_end();
        status
    }

    /// Waits for the rest of what the ended tb said.
    fn read_to_end(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
    }

    /// Sends `signal` the moment tb watch says `what` (looking every
    /// 2 ms), and gives it `secs` to end.
    fn signal_when_said(&mut self, what: &str, signal: i32, secs: u64) -> std::process::ExitStatus {
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while !self.stderr().contains(what) {
            assert!(
                std::time::Instant::now() < until,
                "tb watch never said {what:?}; it said:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.0.id() as i32, signal) };
        let sent = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                self.read_to_end();
                return status;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(secs),
                "tb watch went on {secs}s after the signal; it said:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `tb watch --once` ends with status 0, having said each of `says`.
pub(crate) fn once_ok(w: &Work, file: &Path, says: &[&str]) -> std::process::Output {
    once_exits(w, file, 0, says)
}

/// `tb watch --once` ends with status `code`, having said each of `says`.
pub(crate) fn once_exits(w: &Work, file: &Path, code: i32, says: &[&str]) -> std::process::Output {
    let out = once(w, file);
    assert_exit(&out, code);
    for what in says {
        assert!(
            text(&out.stderr).contains(what),
            "no {what:?} in:\n{}",
            text(&out.stderr)
        );
    }
    out
}

/// `watch.json` as a kill before tb watch recorded the end of trigger 1's
/// batch would have left it.
fn unrecord_end(w: &Work) {
    edit_watch_json(w, |state| {
        let t = state["triggers"][0].as_object_mut().unwrap();
        t.insert("status".into(), "started".into());
        t.remove("batch_status");
    });
}

/// Changes `watch.json` as a kill or the passing of time would have left it.
fn edit_watch_json(w: &Work, edit: impl FnOnce(&mut Value)) {
    let mut state = watch_json(w);
    edit(&mut state);
    std::fs::write(w.path().join("runs/retrain.watch/watch.json"), state.to_string()).unwrap();
}

/// A `tb watch --once`, to its end (at most 2 minutes).
fn once(w: &Work, file: &Path) -> std::process::Output {
    let child = w
        .tb()
        .args(["--no-progress", "watch", file.to_str().unwrap(), "--once"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: signalling our own child; it stops its batch.
            unsafe { libc::kill(pid, libc::SIGINT) };
            let out = rx.recv().unwrap().unwrap();
            panic!("`tb watch --once` did not end in 2 minutes:\n{}", text(&out.stderr));
        }
    }
}

#[test]
fn below_min_new_nothing_fires_reaching_it_one_batch_and_files_during_it_queue_one_more() {
    let w = Work::new();
    let f = project(&w, true, "");
    let mut tb = watch(&w, &f, &[]);
    tb.wait_said(30, "waiting: 0/3 new files settled");

    // Two files, and some that never count: hidden, temporary, in a hidden directory.
    drop_files(&w, &["a.csv", "b.csv"], Duration::ZERO);
    drop_files(&w, &[".hidden.csv", "c.csv.part", "d.csv~"], Duration::from_secs(60));
    std::fs::create_dir_all(w.path().join("incoming/.cache")).unwrap();
    drop_files(&w, &[".cache/e.csv"], Duration::from_secs(60));
    tb.wait_said(30, "waiting: 2/3 new files settled");
    assert!(triggers(&w).is_empty(), "{}", watch_json(&w));
    assert!(batches(&w).is_empty());

    drop_files(&w, &["c.csv"], Duration::ZERO);
    wait_until(60, "the first batch's job to start", || runs(&w).len() == 1);
    let t = triggers(&w);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0]["number"], 1);
    assert_eq!(t[0]["status"], "started");
    assert_eq!(t[0]["files"]["count"], 3);
    assert_eq!(t[0]["files"]["first"], "a.csv");
    assert_eq!(t[0]["files"]["last"], "c.csv");
    let first = batches(&w);
    assert_eq!(first.len(), 1);
    assert_eq!(t[0]["batch"], first[0].file_name().unwrap().to_str().unwrap());

    // Four more while it runs: due, and queued behind it, not run beside it.
    drop_files(&w, &["d.csv", "e.csv", "f.csv", "g.csv"], Duration::ZERO);
    tb.wait_said(30, "a trigger is due while batch");
    assert_eq!(runs(&w).len(), 1);
    assert_eq!(triggers(&w).len(), 1);

    std::fs::write(w.path().join("shared/release"), "").unwrap();
    wait_until(60, "the queued trigger's batch to end", || ended(&w, 2));
    let t = triggers(&w);
    assert_eq!(t[1]["files"]["count"], 4, "{t:?}");
    assert_eq!(t[1]["batch_status"], "finished");
    let all = batches(&w);
    assert_eq!(all.len(), 2);
    // Each batch ran once, on the files there were when it started.
    let ran = runs(&w);
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert_eq!(ran[0], format!("{} 3", first[0].file_name().unwrap().to_str().unwrap()));
    assert!(ran[1].ends_with(" 7"), "{ran:?}");

    // What triggered each batch is in its batch.json and its report.
    let b = json(&all[0].join("batch.json"));
    assert_eq!(b["trigger"]["number"], 1);
    assert_eq!(b["status"], "finished");
    let report = std::fs::read_to_string(all[0].join("report.md")).unwrap();
    assert!(
        report.contains("Started by `tb watch`, trigger 1: 3 new files in `")
            && report.contains("(first `a.csv`, last `c.csv`)"),
        "{report}"
    );
    let html = std::fs::read_to_string(all[1].join("report.html")).unwrap();
    assert!(
        html.contains("trigger 2: 4 new files in"),
        "no trigger in the HTML report"
    );

    // Nothing new: nothing more fires, however long it looks.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(triggers(&w).len(), 2, "{}", watch_json(&w));
    assert_eq!(batches(&w).len(), 2);

    let status = tb.signal(libc::SIGINT);
    assert_eq!(status.code(), Some(130), "{}", tb.stderr());
    assert!(
        tb.stderr().contains("tb watch stops (no batch was running)"),
        "{}",
        tb.stderr()
    );
}

#[test]
fn sigkill_and_a_restart_lose_no_trigger_and_repeat_none() {
    let _guard = unsupervised();
    let w = Work::new();
    let f = project(&w, true, "");
    let mut tb = watch(&w, &f, &[]);
    drop_files(&w, &["a.csv", "b.csv", "c.csv"], Duration::from_secs(60));
    wait_until(60, "the first batch's job to start", || runs(&w).len() == 1);
    let status = tb.signal(libc::SIGKILL);
    assert_eq!(status.code(), None);
    let first = batches(&w);
    assert_eq!(first.len(), 1);
    assert_eq!(json(&first[0].join("batch.json"))["status"], "running");

    // More files come while no watch runs; then it starts again.
    drop_files(&w, &["d.csv", "e.csv", "f.csv"], Duration::from_secs(60));
    let tb = watch(&w, &f, &[]);
    tb.wait_said(30, "did not end; taking it up again");
    // Its batch is followed again, not started again, and nothing else
    // runs beside it.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(runs(&w).len(), 1, "{:?}", runs(&w));
    assert_eq!(batches(&w).len(), 1);
    std::fs::write(w.path().join("shared/release"), "").unwrap();
    wait_until(60, "both triggers' batches to end", || ended(&w, 2));
    let t = triggers(&w);
    assert_eq!(t[0]["batch"], first[0].file_name().unwrap().to_str().unwrap());
    assert_eq!(
        (t[0]["files"]["count"].clone(), t[1]["files"]["count"].clone()),
        (3.into(), 3.into())
    );
    let all = batches(&w);
    assert_eq!(all.len(), 2);
    assert_eq!(runs(&w).len(), 2, "{:?}", runs(&w));
    let job = json(&all[0].join("jobs/train/state.json"));
    assert_eq!(
        (job["status"].as_str(), job["attempt"].as_u64()),
        (Some("succeeded"), Some(1))
    );
    drop(tb);

    // Killed between recording a trigger and creating its batch: the
    // restart creates that batch, under that trigger, and fires no other.
    edit_watch_json(&w, |state| {
        let mut fired = state["triggers"][1].clone();
        let obj = fired.as_object_mut().unwrap();
        obj.insert("number".into(), 3.into());
        obj.insert("fired_at".into(), chrono::Utc::now().to_rfc3339().into());
        obj.insert("status".into(), "fired".into());
        obj.remove("batch");
        obj.remove("batch_status");
        state["triggers"].as_array_mut().unwrap().push(fired);
    });
    once_ok(&w, &f, &["trigger 3 fired before tb watch stopped; creating its batch"]);
    assert!(ended(&w, 3), "{}", watch_json(&w));
    let all = batches(&w);
    assert_eq!(all.len(), 3);
    assert_eq!(json(&all[2].join("batch.json"))["trigger"]["number"], 3);
    assert_eq!(runs(&w).len(), 3);
    assert!(
        containers_labelled(&format!("tb.dir={}", all[0].display())).is_empty(),
        "the followed container was left behind"
    );
}

#[test]
fn once_runs_what_is_due_and_exits_for_cron() {
    let w = Work::new();
    let f = project(&w, false, "");
    once_ok(&w, &f, &["nothing is due; 0/3 new files settled"]);
    assert!(triggers(&w).is_empty());
    assert!(batches(&w).is_empty());

    // Three settled files: one batch, to its end; its directory on stdout.
    drop_files(&w, &["a.csv", "b.csv", "c.csv"], Duration::from_secs(60));
    let out = once_ok(&w, &f, &[]);
    let all = batches(&w);
    assert_eq!(all.len(), 1);
    assert_eq!(text(&out.stdout).trim(), all[0].display().to_string());
    assert!(ended(&w, 1));
    assert_eq!(triggers(&w)[0]["files"]["count"], 3);
    assert!(triggers(&w)[0].get("every_seconds").is_none());
    once_ok(&w, &f, &["nothing is due; 0/3 new files settled"]);
    assert_eq!(batches(&w).len(), 1);

    // A time trigger, counted from the last trigger (kept in watch.json):
    // not due an hour after it, due once an hour has passed.
    let f = project(&w, false, "every = \"1h\"");
    once_ok(&w, &f, &["nothing is due", "next time trigger at"]);
    assert_eq!(batches(&w).len(), 1);
    edit_watch_json(&w, |state| {
        let an_hour_ago = chrono::Utc::now() - chrono::Duration::minutes(61);
        state["time_from"] = an_hour_ago.to_rfc3339().into();
    });
    let out = once_ok(&w, &f, &["trigger 2 fired: the time trigger"]);
    assert!(ended(&w, 2), "{}", text(&out.stderr));
    let t = &triggers(&w)[1];
    assert_eq!(t["every_seconds"], 3600);
    assert!(t.get("files").is_none(), "{t}");
    let report = std::fs::read_to_string(batches(&w)[1].join("report.md")).unwrap();
    assert!(report.contains("trigger 2: the time trigger (every 1h00m)"), "{report}");
    once_ok(&w, &f, &["nothing is due"]);
    assert_eq!(batches(&w).len(), 2);

    // One watch per file: a second `tb watch` is refused, a `--once`
    // leaves it to the one that runs.
    let tb = watch(&w, &f, &[]);
    tb.wait_said(30, "watching `");
    let second = w.tb().args(["watch", f.to_str().unwrap()]).output().unwrap();
    assert_exit(&second, 2);
    assert!(
        text(&second.stderr).contains("is already watched by pid"),
        "{}",
        text(&second.stderr)
    );
    once_ok(&w, &f, &["nothing to do here"]);
}

#[test]
fn ctrl_c_stops_the_watch_and_its_batch_as_tb_batch_would() {
    let w = Work::new();
    let f = project(&w, true, "");
    let mut tb = watch(&w, &f, &[]);
    drop_files(&w, &["a.csv", "b.csv", "c.csv"], Duration::from_secs(60));
    wait_until(60, "the batch's job to start", || runs(&w).len() == 1);
    let dir = batches(&w).remove(0);
    let sent = std::time::Instant::now();
    let status = tb.signal(libc::SIGINT);
    assert_eq!(status.code(), Some(130), "{}", tb.stderr());
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "stopping took {:?}",
        sent.elapsed()
    );
    assert!(
        tb.stderr().contains("interrupted: stopping the running jobs"),
        "{}",
        tb.stderr()
    );
    assert_eq!(json(&dir.join("jobs/train/state.json"))["status"], "cancelled");
    assert_eq!(json(&dir.join("batch.json"))["status"], "interrupted");
    assert!(containers_labelled(&format!("tb.dir={}", dir.display())).is_empty());
    // The trigger is not done: the next watch takes its batch up (here,
    // with nothing left to run, it closes it) and fires nothing new.
    assert_eq!(triggers(&w)[0]["status"], "started");
    once_ok(&w, &f, &["has ended (interrupted)", "nothing is due"]);
    let t = triggers(&w);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(
        (t[0]["status"].as_str(), t[0]["batch_status"].as_str()),
        (Some("ended"), Some("interrupted"))
    );
    assert_eq!(batches(&w).len(), 1);
    assert_eq!(runs(&w).len(), 1);

    // SIGTERM stops an idle watch the same way.
    let mut tb = watch(&w, &f, &[]);
    tb.wait_said(30, "waiting: 0/3 new files settled");
    assert_eq!(tb.signal(libc::SIGTERM).code(), Some(130), "{}", tb.stderr());
}

#[test]
fn a_file_without_a_watch_table_or_its_directory_is_refused() {
    let w = Work::scratch();
    let job = "[[job]]\nname = \"a\"\nimage = \"tb-base:bookworm\"\ncommand = [\"true\"]\n";
    let plain = w.batch("plain.toml", &format!("[batch]\ndownloads = \"./downloads\"\n{job}"));
    let missing = w.batch("missing.toml", &format!("[batch.watch]\ndata = \"./nowhere\"\n{job}"));
    let bad = w.batch("bad.toml", &format!("[batch.watch]\nmin_new = 0\n{job}"));
    for (command, file, once, says) in [
        ("watch", &plain, false, "has no [batch.watch] table"),
        ("watch", &plain, true, "has no [batch.watch] table"),
        ("watch", &missing, false, "nowhere` does not exist"),
        ("watch", &missing, true, "nowhere` does not exist"),
        ("watch", &bad, true, "`batch.watch.min_new` = 0 is out of range"),
        ("validate", &bad, false, "`batch.watch.min_new` = 0 is out of range"),
    ] {
        let mut args = vec![command, file.to_str().unwrap()];
        if once {
            args.push("--once");
        }
        let out = w.run(&args);
        assert_exit(&out, 2);
        assert!(text(&out.stderr).contains(says), "{args:?}: {}", text(&out.stderr));
    }
    assert!(!w.path().join("runs").exists(), "a refused watch wrote something");
}

/// A batch file of 300 jobs, one at a time (each records its batch): a
/// batch whose directory takes a while to make, and all night to run.
fn many_jobs(w: &Work) -> PathBuf {
    for d in ["incoming", "shared"] {
        std::fs::create_dir_all(w.path().join(d)).unwrap();
    }
    w.batch(
        "retrain.toml",
        "[batch]\ndownloads = \"./downloads\"\nconcurrency = 1\n\
         [batch.watch]\ndata = \"./incoming\"\nmin_new = 3\nsettle = \"1s\"\n\
         [defaults]\nimage = \"tb-base:bookworm\"\ngpus = 0\nmounts = [\"./shared:/shared\"]\n\
         [[job]]\nname = \"train\"\ncommand = [\"sh\", \"-c\", \"echo $TB_BATCH >> /shared/runs.txt\"]\n\
         [job.sweep]\nmethod = \"random\"\nsamples = 300\nseed = 1\n\"env.SEED\" = { int = [0, 1000000] }\n",
    )
}

/// Every job of the batch in `dir` is still pending, and no container of it is left.
fn nothing_ran(w: &Work, dir: &Path) {
    assert!(runs(w).is_empty(), "jobs ran: {:?}", runs(w));
    // Read as `tb status` reads them: a job's files may not be written yet.
    let out = w.run(&["status", dir.to_str().unwrap(), "--json"]);
    assert_exit(&out, 0);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = shown["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 300);
    for job in jobs {
        assert_eq!(job["status"], "pending", "{job}");
    }
    assert!(containers_labelled(&format!("tb.dir={}", dir.display())).is_empty());
}

#[test]
fn ctrl_c_as_a_batch_is_made_or_taken_up_stops_it_before_any_job_starts() {
    let w = Work::new();
    let f = many_jobs(&w);
    let mut tb = watch(&w, &f, &[]);
    tb.wait_said(30, "waiting: 0/3 new files settled");
    drop_files(&w, &["a.csv", "b.csv", "c.csv"], Duration::from_secs(60));
    // While its 300 job directories are being made, long before the
    // batch's dispatcher begins: the signal is not lost.
    let status = tb.signal_when_said("trigger 1 fired", libc::SIGINT, 30);
    assert_eq!(status.code(), Some(130), "{}", tb.stderr());
    assert!(
        tb.stderr().contains("interrupted: stopping the running jobs"),
        "{}",
        tb.stderr()
    );
    let all = batches(&w);
    assert_eq!(all.len(), 1, "{}", tb.stderr());
    assert_eq!(json(&all[0].join("batch.json"))["status"], "interrupted");
    nothing_ran(&w, &all[0]);
    assert_eq!(triggers(&w)[0]["status"], "started");

    // Taken up by the next watch, and stopped again while it surveys the
    // batch and writes its 300 jobs down, before its dispatcher begins.
    let mut tb = watch(&w, &f, &[]);
    let status = tb.signal_when_said("did not end; taking it up again", libc::SIGINT, 30);
    assert_eq!(status.code(), Some(130), "{}", tb.stderr());
    assert_eq!(batches(&w).len(), 1);
    assert_eq!(json(&all[0].join("batch.json"))["status"], "interrupted");
    nothing_ran(&w, &all[0]);
    assert_eq!(triggers(&w).len(), 1);
    assert_eq!(triggers(&w)[0]["status"], "started");
}

#[test]
fn a_batch_left_unclosed_is_closed_on_restart_and_a_halted_one_is_not_run_on() {
    let w = Work::new();
    let f = project(&w, false, "");
    drop_files(&w, &["a.csv", "b.csv", "c.csv"], Duration::from_secs(60));
    once_ok(&w, &f, &[]);
    let dir = batches(&w).remove(0);
    assert!(ended(&w, 1));

    // As a kill after its last job ended, before its supervisor closed it:
    // `running`, no report, the trigger `started`.
    let reopen = |status: &str| {
        let mut b = json(&dir.join("batch.json"));
        b["status"] = status.into();
        std::fs::write(dir.join("batch.json"), b.to_string()).unwrap();
        for report in ["report.md", "report.json", "report.html", "report.csv"] {
            let _ = std::fs::remove_file(dir.join(report));
        }
        unrecord_end(&w);
    };
    for status in ["running", "finished"] {
        reopen(status);
        once_ok(
            &w,
            &f,
            &[
                "did not end; taking it up again",
                "no job is running or pending; closing it",
            ],
        );
        assert!(dir.join("report.json").is_file(), "{status}: no report");
        assert_eq!(json(&dir.join("batch.json"))["status"], "finished");
        assert!(ended(&w, 1), "{}", watch_json(&w));
        assert_eq!(triggers(&w)[0]["batch_status"], "finished");
    }
    assert_eq!(runs(&w).len(), 1, "{:?}", runs(&w));

    // A batch its deadline stopped, the watch killed before it recorded
    // that: closed as it was, its pending job left for `tb resume`.
    let w = Work::new();
    let f = project(&w, false, "");
    let text = std::fs::read_to_string(&f).unwrap();
    std::fs::write(
        &f,
        text.replace("[batch]\n", "[batch]\ndeadline = \"2020-01-01 00:00\"\n"),
    )
    .unwrap();
    drop_files(&w, &["a.csv", "b.csv", "c.csv"], Duration::from_secs(60));
    once_exits(&w, &f, 1, &["the deadline has passed"]);
    let dir = batches(&w).remove(0);
    let b = json(&dir.join("batch.json"));
    assert_eq!(
        (b["status"].as_str(), b["halted"].as_str()),
        (Some("interrupted"), Some("deadline"))
    );
    assert_eq!(triggers(&w)[0]["batch_status"], "interrupted");
    unrecord_end(&w);
    once_ok(
        &w,
        &f,
        &["has ended (interrupted): its deadline stopped it", "nothing is due"],
    );
    assert!(ended(&w, 1), "{}", watch_json(&w));
    // Its report lost too: taken up under its own deadline, which has passed.
    std::fs::remove_file(dir.join("report.json")).unwrap();
    unrecord_end(&w);
    once_exits(
        &w,
        &f,
        1,
        &["did not end; taking it up again", "the deadline has passed"],
    );
    assert!(dir.join("report.json").is_file());
    assert!(ended(&w, 1), "{}", watch_json(&w));
    // Never started: its state as `tb status` reads it (its files may not
    // be written yet).
    let shown = w.status_json(&[dir.to_str().unwrap()]);
    assert_eq!(shown["jobs"][0]["status"], "pending", "{shown}");
    assert!(runs(&w).is_empty(), "{:?}", runs(&w));
}
