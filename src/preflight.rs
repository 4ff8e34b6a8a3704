//! The checks of the system before a batch starts, the same for
//! `tb validate` and `tb batch` ([`run`]): the backend's own (the engine
//! and its images; the cluster), and those every backend makes — the runs
//! and downloads directories are usable, and the disk has room. A backend
//! turns the problems into one error with [`verdict`].

use crate::backend::{self, Backend, Ready};
use crate::batch::{Problem, Problems};
use crate::error::with_hint;
use crate::settings::Plan;
use std::path::Path;

/// Everything `tb batch` checks of the system before it writes anything,
/// and all `tb validate` checks: the plan's backend, ready to run it.
/// Both commands call this, so a problem is an error (or a warning) in
/// both alike.
pub async fn run(plan: &Plan, runs_dir: &Path) -> anyhow::Result<(Box<dyn Backend>, Ready)> {
    let mut backend = backend::for_plan(plan);
    let ready = backend.preflight(plan, runs_dir).await?;
    Ok((backend, ready))
}

/// The directories' problems (and a warning on low disk space).
pub fn directories(plan: &Plan, runs_dir: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    let downloads = plan.settings.downloads.as_path();
    let mut dirs = vec![("runs directory", runs_dir), ("downloads directory", downloads)];
    if let Some(d) = &plan.settings.deploy {
        dirs.push(("deploy directory", d.dir.as_path()));
    }
    for (what, dir) in dirs {
        if let Err(why) = writable(dir) {
            problems.push(Problem {
                at: None,
                message: format!("the {what} `{}` is not usable: {why}", dir.display()),
                hint: Some(match what {
                    "runs directory" => "choose another with --runs-dir or TB_RUNS_DIR".into(),
                    "deploy directory" => "set `dir` in [batch.deploy] to a writable directory".into(),
                    _ => "set `downloads` in [batch] to a writable directory".into(),
                }),
            });
        } else if let Some(free) = free_bytes(dir)
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

/// A directory tb can create (or has) and write in, found out by doing
/// it — permission bits say nothing to root, nor of a read-only or special
/// filesystem — and undoing it: the missing directories are created, a
/// file is written in the last, and everything made is removed again.
fn writable(dir: &Path) -> Result<(), String> {
    let mut missing = Vec::new();
    let mut existing = dir;
    while !existing.exists() {
        missing.push(existing);
        existing = existing.parent().ok_or("no existing parent directory")?;
    }
    if !existing.is_dir() {
        return Err(format!("`{}` is not a directory", existing.display()));
    }
    let mut created = Vec::new();
    let tried = (|| {
        for d in missing.iter().rev() {
            std::fs::create_dir(d).map_err(|e| format!("cannot create `{}`: {e}", d.display()))?;
            created.push(*d);
        }
        let probe = dir.join(format!(".tb-probe-{}", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| format!("cannot write in `{}`: {e}", dir.display()))?;
        std::fs::remove_file(&probe).map_err(|e| format!("cannot remove `{}`: {e}", probe.display()))
    })();
    for d in created.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
    tried
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writability_is_tried_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        assert_eq!(writable(&deep), Ok(()));
        assert!(!tmp.path().join("a").exists(), "the probe left its directories");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        assert_eq!(writable(tmp.path()), Ok(()));
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "the probe left its file"
        );

        let file = tmp.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(writable(&file.join("x")).unwrap_err().contains("is not a directory"));
        // Root may write anywhere the mode bits say no, but not in /proc:
        // only trying tells.
        let err = writable(Path::new("/proc/tb-no-such-dir/downloads")).unwrap_err();
        assert!(err.starts_with("cannot create `/proc/tb-no-such-dir`"), "{err}");
    }
}
