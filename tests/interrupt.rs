//! Ctrl-C: the running containers are stopped and marked cancelled, the
//! rest stay pending, and nothing of tb's is left running.

use crate::common::*;
use std::time::{Duration, Instant};

#[test]
fn ctrl_c_stops_everything_and_leaves_no_container() {
    let w = Work::new();
    let f = w.batch(
        "long.toml",
        "[batch]\ndownloads = \"./downloads\"\nconcurrency = 2\n[defaults]\nimage = \"tb-base:bookworm\"\ncommand = [\"sleep\", \"300\"]\n\
         [[job]]\nname = \"a\"\n[[job]]\nname = \"b\"\n[[job]]\nname = \"c\"\n[[job]]\nname = \"d\"\n",
    );
    let mut child = KillOnDrop(
        w.tb()
            .args(["batch", f.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the jobs never started");
        let running = std::fs::canonicalize(w.path().join("runs/latest")).is_ok()
            && ["a", "b"].iter().all(|j| {
                std::fs::read_to_string(w.job_dir(j).join("state.json")).is_ok_and(|s| s.contains("\"running\""))
            });
        // c and d are created ahead of time, waiting for a slot: they must go too.
        if running && w.leftover_containers().len() == 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) };
    let status = child.0.wait().unwrap();
    let took = sent.elapsed();
    let mut err = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(took < Duration::from_secs(20), "stopping took {took:?}");
    assert!(err.contains("interrupted: stopping the running jobs"), "{err}");
    for j in ["a", "b"] {
        let s = w.state(j);
        assert_eq!(s["status"], "cancelled", "{j}: {s}");
        assert!(s["finished_at"].is_string());
    }
    for j in ["c", "d"] {
        let s = w.state(j);
        assert_eq!(s["status"], "pending", "{j}: {s}");
        assert_eq!(s["attempt"], 0);
    }
    let batch: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.batch_dir().join("batch.json")).unwrap()).unwrap();
    assert_eq!(batch["status"], "interrupted");
    assert!(
        w.leftover_containers().is_empty(),
        "containers left: {:?}",
        w.leftover_containers()
    );
}

/// A failing assertion must not leave tb (and its containers) running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let _ = self.0.wait();
        }
    }
}
