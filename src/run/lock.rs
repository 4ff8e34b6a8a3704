//! The one-holder locks: `supervisor.lock` in a batch directory (one
//! supervisor per batch) and `watch.lock` of a watch (one `tb watch` per
//! batch file). Each is held (flock) for as long as its holder lives, and
//! says who holds it. The kernel drops it when the process dies, however
//! it dies, so a stale lock file is simply taken over.

use super::{BatchDir, Supervisor};
use crate::durable::create_reserve;
use crate::error::hinted;
use anyhow::Context;
use chrono::Utc;
use std::io::Write;
use std::path::Path;

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct Lock {
    _file: std::fs::File,
}

impl Lock {
    /// Takes the lock at `path`, writing who holds it now; or, when another
    /// process holds it, who does (as far as its file says).
    pub fn take(path: &Path) -> anyhow::Result<Result<Lock, Option<Supervisor>>> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("failed to open `{}`", path.display()))?;
        // A `holder()` probe (a shared lock, held for an instant) must not
        // read as a holder: try a few times.
        let taken = (0..5).any(|i| {
            if i > 0 {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            try_flock(&file, libc::LOCK_EX)
        });
        if !taken {
            let holder = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| serde_json::from_str::<Supervisor>(&t).ok());
            return Ok(Err(holder));
        }
        let me = serde_json::to_vec(&Supervisor::current())?;
        file.set_len(0)?;
        file.write_all(&me)?;
        file.sync_all()?;
        Ok(Ok(Lock { _file: file }))
    }

    /// Who holds the lock at `path` now, if anyone does.
    pub fn holder(path: &Path) -> Option<Supervisor> {
        let file = std::fs::File::open(path).ok()?;
        if try_flock(&file, libc::LOCK_SH) {
            // Nobody holds it; ours goes with `file`.
            return None;
        }
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok().or(Some(Supervisor {
            pid: 0,
            host: String::new(),
            started_at: Utc::now(),
        }))
    }
}

impl Supervisor {
    /// "pid 4242 on gpu-box since 2026-11-22 23:00:00 UTC", or "another tb"
    /// for a holder that did not say.
    pub fn describe(holder: Option<&Supervisor>) -> String {
        match holder {
            Some(h) => format!(
                "pid {} on {} since {}",
                h.pid,
                h.host,
                h.started_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            None => "another tb".into(),
        }
    }
}

impl BatchDir {
    /// Takes the supervisor lock, or says who holds it.
    pub fn lock(&self) -> anyhow::Result<Lock> {
        match Lock::take(&self.path.join("supervisor.lock"))? {
            Ok(lock) => {
                create_reserve(&self.path);
                Ok(lock)
            }
            Err(holder) => Err(hinted(
                format!(
                    "batch {} is already being supervised by {}",
                    self.id,
                    Supervisor::describe(holder.as_ref())
                ),
                "watch it with `tb status` and `tb logs -f`; stop it with `tb cancel`",
            )),
        }
    }

    /// Who supervises this batch now, if anyone does.
    pub fn supervisor(&self) -> Option<Supervisor> {
        Lock::holder(&self.path.join("supervisor.lock"))
    }
}

fn try_flock(file: &std::fs::File, how: i32) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; flock touches no memory.
    unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) == 0 }
}
