//! The checks every backend makes before a batch starts: the runs and
//! downloads directories are usable, and the disk has room. Each backend
//! adds its own (the engine and its images; the cluster) and turns the
//! problems into one error with [`verdict`].

use crate::batch::{Problem, Problems};
use crate::error::with_hint;
use crate::settings::Plan;
use std::path::Path;

/// The directories' problems (and a warning on low disk space).
pub fn directories(plan: &Plan, runs_dir: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    let downloads = plan.settings.downloads.as_path();
    for (what, dir) in [("runs directory", runs_dir), ("downloads directory", downloads)] {
        if let Err(why) = writable(dir) {
            problems.push(Problem {
                at: None,
                message: format!("the {what} `{}` is not usable: {why}", dir.display()),
                hint: Some(if what == "runs directory" {
                    "choose another with --runs-dir or TB_RUNS_DIR".into()
                } else {
                    "set `downloads` in [batch] to a writable directory".into()
                }),
            });
        }
    }
    for (what, dir) in [("runs directory", runs_dir), ("downloads directory", downloads)] {
        if let Some(free) = free_bytes(dir)
            && free < LOW_DISK
        {
            tracing::warn!(
                "only {} free on the {what} `{}`: a night of checkpoints and logs may fill it",
                crate::human::bytes(free),
                dir.display()
            );
        }
    }
    problems
}

/// `Ok` without problems; otherwise one error listing them all.
pub fn verdict(problems: Vec<Problem>) -> anyhow::Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    let hint = match problems.as_slice() {
        [one] => one.hint.clone(),
        _ => None,
    };
    let err = anyhow::Error::new(Problems(problems)).context("the system is not ready for this batch");
    Err(match hint {
        Some(h) => with_hint(err, h),
        None => err,
    })
}

/// Below this much free space, preflight warns.
const LOW_DISK: u64 = 5 << 30;

/// Free bytes (for unprivileged users) on the filesystem of `dir` or its
/// nearest existing ancestor.
fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: `stat` is plain data the call fills; `c` outlives the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// A directory tb can create (or has) and write in, checked without
/// writing: the directory itself or its nearest existing ancestor.
fn writable(dir: &Path) -> Result<(), String> {
    let mut probe = dir;
    loop {
        if probe.exists() {
            if !probe.is_dir() {
                return Err(format!("`{}` is not a directory", probe.display()));
            }
            let c = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
            // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
            let ok = unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
            return if ok {
                Ok(())
            } else {
                Err(format!("`{}` is not writable", probe.display()))
            };
        }
        match probe.parent() {
            Some(p) => probe = p,
            None => return Err("no existing parent directory".into()),
        }
    }
}
