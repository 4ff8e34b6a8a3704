//! The one-supervisor-per-batch lock: `supervisor.lock` in the batch
//! directory, held (flock) for as long as the supervisor lives, and saying
//! who holds it. The kernel drops it when the process dies, however it
//! dies, so a stale lock file is simply taken over.

use super::{BatchDir, Supervisor};
use crate::durable::create_reserve;
use crate::error::hinted;
use anyhow::Context;
use chrono::Utc;
use std::io::Write;

/// The held lock; dropping it releases the batch.
#[derive(Debug)]
pub struct Lock {
    _file: std::fs::File,
}

impl BatchDir {
    /// Takes the supervisor lock, or says who holds it.
    pub fn lock(&self) -> anyhow::Result<Lock> {
        let path = self.path.join("supervisor.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("failed to open `{}`", path.display()))?;
        // A `supervisor()` probe (a shared lock, held for an instant) must
        // not read as a supervisor: try a few times.
        let taken = (0..5).any(|i| {
            if i > 0 {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            try_flock(&file, libc::LOCK_EX)
        });
        if !taken {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<Supervisor>(&t).ok());
            let who = match holder {
                Some(h) => format!(
                    "pid {} on {} since {}",
                    h.pid,
                    h.host,
                    h.started_at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                None => "another tb".into(),
            };
            return Err(hinted(
                format!("batch {} is already being supervised by {who}", self.id),
                "watch it with `tb status` and `tb logs -f`; stop it with `tb cancel`",
            ));
        }
        let me = serde_json::to_vec(&Supervisor::current())?;
        file.set_len(0)?;
        file.write_all(&me)?;
        file.sync_all()?;
        create_reserve(&self.path);
        Ok(Lock { _file: file })
    }

    /// Who supervises this batch now, if anyone does.
    pub fn supervisor(&self) -> Option<Supervisor> {
        let path = self.path.join("supervisor.lock");
        let file = std::fs::File::open(&path).ok()?;
        if try_flock(&file, libc::LOCK_SH) {
            // Nobody holds it; ours goes with `file`.
            return None;
        }
        let text = std::fs::read_to_string(&path).ok()?;
        serde_json::from_str(&text).ok().or(Some(Supervisor {
            pid: 0,
            host: String::new(),
            started_at: Utc::now(),
        }))
    }
}

fn try_flock(file: &std::fs::File, how: i32) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; flock touches no memory.
    unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) == 0 }
}
