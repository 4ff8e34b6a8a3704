//! Checks of the system a plan needs, made before anything is written:
//! the engine answers, every image is there, the directories are usable.

use crate::batch::Problem;
use crate::docker::Engine;
use crate::error::with_hint;
use crate::settings::Plan;
use std::collections::BTreeMap;
use std::path::Path;

/// What preflight learned that the run needs.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Per job, in plan order: the id of its image.
    pub image_ids: Vec<Option<String>>,
    pub engine_version: String,
    pub api_version: String,
}

/// Checks the engine, the images, and the runs and downloads directories.
pub async fn check(plan: &Plan, engine: &Engine, runs_dir: &Path) -> anyhow::Result<Checked> {
    let (engine_version, api_version) = engine.version().await?;
    let mut problems = Vec::new();
    let mut ids: BTreeMap<&str, Option<String>> = BTreeMap::new();
    for job in &plan.jobs {
        if !ids.contains_key(job.image.as_str()) {
            let id = engine.image_id(&job.image).await?;
            if id.is_none() {
                let users: Vec<&str> = plan
                    .jobs
                    .iter()
                    .filter(|j| j.image == job.image)
                    .map(|j| j.name.as_str())
                    .collect();
                let hint = if job.image.starts_with("tb-trainer") {
                    "build it with `make image` (tb image build)"
                } else if job.image.starts_with("tb-base") {
                    "build it with `make base-image`"
                } else {
                    "build or load it first (`docker build`, `docker load`); tb does not pull images"
                };
                problems.push(Problem {
                    at: None,
                    message: format!(
                        "the Docker engine has no image `{}` (used by {})",
                        job.image,
                        users.join(", ")
                    ),
                    hint: Some(hint.into()),
                });
            }
            ids.insert(&job.image, id);
        }
    }
    for (what, dir) in [
        ("runs directory", runs_dir),
        ("downloads directory", plan.downloads.as_path()),
    ] {
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
    for (what, dir) in [
        ("runs directory", runs_dir),
        ("downloads directory", plan.downloads.as_path()),
    ] {
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
    if !problems.is_empty() {
        let hint = match problems.as_slice() {
            [one] => one.hint.clone(),
            _ => None,
        };
        let err =
            anyhow::Error::new(crate::batch::Problems(problems)).context("the system is not ready for this batch");
        return Err(match hint {
            Some(h) => with_hint(err, h),
            None => err,
        });
    }
    Ok(Checked {
        image_ids: plan.jobs.iter().map(|j| ids[j.image.as_str()].clone()).collect(),
        engine_version,
        api_version,
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
