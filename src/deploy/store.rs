//! The deploy directory (docs/run-directory.md#the-deploy-directory): each
//! promoted model is a complete directory under `versions/`, written as
//! `.incoming-<id>/`, synced, and renamed into place; `current` is a
//! relative symlink to the deployed one, replaced by a rename (atomic: a
//! reader opening `current/model.ckpt` gets the old model or the new one,
//! whole), and `previous` points at the one before. `history.jsonl` has
//! every decision, one line each, appended and synced. One deploy at a time
//! holds `.lock`.

use super::Record;
use crate::error::hinted;
use crate::run::{JobFile, read_versioned, write_json};
use crate::settings::JobSpec;
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const CURRENT: &str = "current";
pub const PREVIOUS: &str = "previous";
pub const VERSIONS: &str = "versions";
pub const HISTORY: &str = "history.jsonl";
/// The file names inside a deployed model's directory.
pub const CHECKPOINT: &str = "model.ckpt";
pub const TORCHSCRIPT: &str = "model.pt";
pub const RECORD: &str = "deploy.json";
const LOCK: &str = ".lock";

/// A deploy directory, held for one deploy.
pub struct Store {
    pub dir: PathBuf,
    _lock: std::fs::File,
}

/// The model `current` points at.
pub struct Deployed {
    /// `versions/<id>`, relative to the deploy directory.
    pub version: String,
    /// The decision that promoted it.
    pub record: Record,
    /// The job it came from, as its `job.json` had it.
    pub job: JobSpec,
    pub checkpoint: PathBuf,
}

/// What goes into a promoted model's directory, from the job's.
pub struct Files {
    pub checkpoint: PathBuf,
    pub job_json: PathBuf,
    /// `result.json`, the evaluation of the candidate, a TorchScript export:
    /// each copied when present.
    pub result: Option<PathBuf>,
    pub evaluation: Option<PathBuf>,
    pub torchscript: Option<PathBuf>,
}

impl Store {
    /// Creates the directory if needed and takes its lock, waiting for a
    /// deploy into it that holds it.
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| {
            hinted(
                format!("cannot create the deploy directory `{}`: {e}", dir.display()),
                "set `dir` in [batch.deploy] (or --dir) to a writable place",
            )
        })?;
        let path = dir.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("failed to open `{}`", path.display()))?;
        if !flock(&file, libc::LOCK_NB) {
            tracing::info!("waiting for another deploy into `{}` to end", dir.display());
            if !flock(&file, 0) {
                anyhow::bail!(
                    "failed to lock `{}`: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            _lock: file,
        })
    }

    /// The deployed model, if there is one.
    pub fn current(&self) -> anyhow::Result<Option<Deployed>> {
        let link = self.dir.join(CURRENT);
        let target = match std::fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("`{}` is not tb's symlink", link.display())),
        };
        let path = self.dir.join(&target);
        let record: Record = read_versioned(&path.join(RECORD))?;
        let job = read_versioned::<JobFile>(&path.join("job.json"))?.into_spec();
        let checkpoint = path.join(CHECKPOINT);
        if !checkpoint.is_file() {
            anyhow::bail!("the deployed model `{}` has no {CHECKPOINT}", path.display());
        }
        Ok(Some(Deployed {
            version: target.to_string_lossy().into_owned(),
            record,
            job,
            checkpoint,
        }))
    }

    /// Makes `files` the deployed model, with `record` (its `current` set
    /// here) as its `deploy.json`; the model it replaces becomes
    /// `previous`, and older ones are removed.
    pub fn promote(&self, files: &Files, record: &mut Record, name: &str) -> anyhow::Result<()> {
        let versions = self.dir.join(VERSIONS);
        std::fs::create_dir_all(&versions).with_context(|| format!("failed to create `{}`", versions.display()))?;
        let id = (1..)
            .map(|n| {
                if n == 1 {
                    name.to_string()
                } else {
                    format!("{name}-{n}")
                }
            })
            .find(|id| !versions.join(id).exists())
            .expect("an unused name");
        let version = format!("{VERSIONS}/{id}");
        record.current = Some(version.clone());

        let incoming = self.dir.join(format!(".incoming-{id}"));
        self.fill(&incoming, files, record)
            .with_context(|| format!("failed to write the new model into `{}`", incoming.display()))?;
        let placed = versions.join(&id);
        std::fs::rename(&incoming, &placed).with_context(|| format!("failed to move it to `{}`", placed.display()))?;
        sync_dir(&versions)?;

        let before = std::fs::read_link(self.dir.join(CURRENT)).ok();
        self.point(CURRENT, Path::new(&version))?;
        if let Some(before) = &before {
            self.point(PREVIOUS, before)?;
        }
        self.remove_old(&[Path::new(&version), before.as_deref().unwrap_or(Path::new(""))]);
        Ok(())
    }

    /// Appends `record` to `history.jsonl` and syncs it.
    pub fn append(&self, record: &Record) -> anyhow::Result<()> {
        let path = self.dir.join(HISTORY);
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let new = !path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("failed to open `{}`", path.display()))?;
        f.write_all(&line)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("failed to write `{}`", path.display()))?;
        if new {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// A complete model directory at `to`, every file synced.
    fn fill(&self, to: &Path, files: &Files, record: &Record) -> anyhow::Result<()> {
        if to.exists() {
            std::fs::remove_dir_all(to)?;
        }
        std::fs::create_dir_all(to)?;
        copy_synced(&files.checkpoint, &to.join(CHECKPOINT))?;
        copy_synced(&files.job_json, &to.join("job.json"))?;
        for (from, name) in [
            (&files.result, "result.json"),
            (&files.evaluation, "evaluation.json"),
            (&files.torchscript, TORCHSCRIPT),
        ] {
            if let Some(from) = from {
                copy_synced(from, &to.join(name))?;
            }
        }
        write_json(&to.join(RECORD), record)?;
        sync_dir(to)
    }

    /// Points the symlink `name` at `target` by renaming a new link over it.
    fn point(&self, name: &str, target: &Path) -> anyhow::Result<()> {
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp).with_context(|| format!("failed to create `{}`", tmp.display()))?;
        let link = self.dir.join(name);
        std::fs::rename(&tmp, &link).with_context(|| format!("failed to replace `{}`", link.display()))?;
        sync_dir(&self.dir)
    }

    /// Removes the models neither `current` nor `previous` points at, and
    /// what a deploy that died left half-written.
    fn remove_old(&self, keep: &[&Path]) {
        let versions = self.dir.join(VERSIONS);
        let kept: Vec<PathBuf> = keep.iter().map(|k| self.dir.join(k)).collect();
        for entry in std::fs::read_dir(&versions).into_iter().flatten().flatten() {
            if !kept.contains(&entry.path())
                && let Err(e) = std::fs::remove_dir_all(entry.path())
            {
                tracing::warn!("failed to remove the old model `{}`: {e}", entry.path().display());
            }
        }
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(".incoming-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn flock(file: &std::fs::File, nonblocking: i32) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; flock touches no memory.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | nonblocking) == 0 }
}

fn copy_synced(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to).with_context(|| format!("failed to copy `{}`", from.display()))?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("failed to sync `{}`", to.display()))
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("failed to sync `{}`", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::Verdict;

    fn files(dir: &Path, weights: &str) -> Files {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("best.ckpt"), weights).unwrap();
        let spec: JobSpec = serde_json::from_value(serde_json::json!({
            "name": "a", "image": "img", "command": null, "gpus": 0, "cpus": null, "memory": null,
            "shm_size": 1, "time_limit": null, "env": {}, "pass_env": [], "mounts": [],
            "code": null, "network": "bridge", "train": {"model": "unet"}
        }))
        .unwrap();
        write_json(&dir.join("job.json"), &JobFile::new("night", "b", 1, &spec)).unwrap();
        Files {
            checkpoint: dir.join("best.ckpt"),
            job_json: dir.join("job.json"),
            result: None,
            evaluation: None,
            torchscript: None,
        }
    }

    fn record(dir: &Path) -> Record {
        Record {
            version: 1,
            at: chrono::Utc::now(),
            dir: dir.to_path_buf(),
            decision: Verdict::Promoted,
            why: "test".into(),
            forced: false,
            metric: None,
            mode: None,
            compared_on: None,
            re_evaluated: false,
            samples: None,
            candidate: None,
            deployed: None,
            current: None,
            export: None,
        }
    }

    #[test]
    fn promotions_swap_current_keep_previous_and_remove_older_models() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("deployed");
        let store = Store::open(&dir).unwrap();
        assert!(store.current().unwrap().is_none());
        for (i, w) in ["one", "two", "three"].iter().enumerate() {
            let mut r = record(&dir);
            store.promote(&files(&tmp.path().join(w), w), &mut r, "b.a").unwrap();
            store.append(&r).unwrap();
            let name = if i == 0 {
                "b.a".to_string()
            } else {
                format!("b.a-{}", i + 1)
            };
            assert_eq!(r.current.as_deref(), Some(format!("versions/{name}").as_str()));
            let now = store.current().unwrap().unwrap();
            assert_eq!(std::fs::read_to_string(&now.checkpoint).unwrap(), *w);
            assert_eq!(now.record.current, r.current, "its own deploy.json says what it is");
            assert_eq!(now.job.name, "a");
        }
        assert_eq!(
            std::fs::read_link(dir.join(CURRENT)).unwrap(),
            Path::new("versions/b.a-3")
        );
        assert_eq!(
            std::fs::read_link(dir.join(PREVIOUS)).unwrap(),
            Path::new("versions/b.a-2")
        );
        assert_eq!(std::fs::read_to_string(dir.join("previous/model.ckpt")).unwrap(), "two");
        let mut left: Vec<String> = std::fs::read_dir(dir.join(VERSIONS))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["b.a-2", "b.a-3"], "the first model is gone");
        let history = std::fs::read_to_string(dir.join(HISTORY)).unwrap();
        assert_eq!(history.lines().count(), 3);
        for line in history.lines() {
            let r: Record = serde_json::from_str(line).unwrap();
            assert_eq!(r.decision, Verdict::Promoted);
        }
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with(".incoming") || n.ends_with(".tmp")),
            "{names:?}"
        );
    }

    #[test]
    fn a_half_written_model_never_becomes_current() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("deployed");
        let store = Store::open(&dir).unwrap();
        let mut r = record(&dir);
        store
            .promote(&files(&tmp.path().join("one"), "one"), &mut r, "b.a")
            .unwrap();
        let mut broken = files(&tmp.path().join("two"), "two");
        broken.checkpoint = tmp.path().join("missing.ckpt");
        let mut r = record(&dir);
        assert!(store.promote(&broken, &mut r, "b.a").is_err());
        let now = store.current().unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(&now.checkpoint).unwrap(), "one");
        assert!(!dir.join(VERSIONS).join("b.a-2").exists());
    }
}
