//! The deploy directory (docs/run-directory.md#the-deploy-directory): each
//! promoted model is a complete directory under `versions/`, written as
//! `.incoming-<id>/`, synced, and renamed into place; `current` is a
//! relative symlink to the deployed one, replaced by a rename (atomic: a
//! reader opening `current/model.ckpt` gets the old model or the new one,
//! whole), and `previous` points at the one before. `history.jsonl` has
//! every decision, one line each, appended and synced. One deploy at a time
//! holds `.lock`. What goes in is copied from regular files only (a job's
//! symlink is refused, never followed) and made readable by all: 0644
//! files in 0755 directories.

use super::{Interrupted, Record};
use crate::error::hinted;
use crate::run::{JobFile, read_versioned, write_json};
use crate::settings::JobSpec;
use crate::signal::SignalEvent;
use anyhow::{Context, bail};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CURRENT: &str = "current";
pub const PREVIOUS: &str = "previous";
pub const VERSIONS: &str = "versions";
pub const HISTORY: &str = "history.jsonl";
/// The file names inside a deployed model's directory.
pub const CHECKPOINT: &str = "model.ckpt";
pub const TORCHSCRIPT: &str = "model.pt";
pub const RECORD: &str = "deploy.json";
const LOCK: &str = ".lock";
/// How often a deploy waiting for another one tries the lock again.
const LOCK_RETRY: Duration = Duration::from_millis(500);
/// The modes of what a promotion writes: serving code runs as anyone.
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

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
    /// Creates the directory if needed and takes its lock, waiting while
    /// another deploy into it holds it — until `stop` comes (Ctrl-C,
    /// SIGTERM), which is [`Interrupted`].
    pub async fn open(dir: &Path, stop: impl std::future::Future<Output = SignalEvent>) -> anyhow::Result<Store> {
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
        tokio::pin!(stop);
        let mut told = false;
        while !try_flock(&file).with_context(|| format!("failed to lock `{}`", path.display()))? {
            if !told {
                tracing::info!("waiting for another deploy into `{}` to end", dir.display());
                told = true;
            }
            tokio::select! {
                signal = &mut stop => return Err(Interrupted(signal).into()),
                _ = tokio::time::sleep(LOCK_RETRY) => {}
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
        set_mode(&versions, DIR_MODE)?;
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

        // A `current` that points at no model (a broken one replaced with
        // --force) is no rollback target: `previous` stays where it was.
        let before = std::fs::read_link(self.dir.join(CURRENT))
            .ok()
            .filter(|b| self.dir.join(b).join(CHECKPOINT).is_file());
        self.point(CURRENT, Path::new(&version))?;
        if let Some(before) = &before {
            self.point(PREVIOUS, before)?;
        }
        let previous = std::fs::read_link(self.dir.join(PREVIOUS)).ok();
        self.remove_old(&[Path::new(&version), previous.as_deref().unwrap_or(Path::new(""))]);
        Ok(())
    }

    /// Appends `record` to `history.jsonl` and syncs it. A last line left
    /// torn (by a crash, a full disk) is ended first, so that it stays one
    /// bad line and this one reads.
    pub fn append(&self, record: &Record) -> anyhow::Result<()> {
        let path = self.dir.join(HISTORY);
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let new = !path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .with_context(|| format!("failed to open `{}`", path.display()))?;
        if !ends_a_line(&mut f).with_context(|| format!("failed to read `{}`", path.display()))? {
            line.insert(0, b'\n');
        }
        f.write_all(&line)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("failed to write `{}`", path.display()))?;
        if new {
            set_mode(&path, FILE_MODE)?;
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
        set_mode(to, DIR_MODE)?;
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
        let own = to.join(RECORD);
        write_json(&own, record)?;
        set_mode(&own, FILE_MODE)?;
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

/// Takes the lock if it is free: `false` when another deploy holds it.
fn try_flock(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; flock touches no memory.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => Ok(false),
        _ => Err(e),
    }
}

/// The file is empty or ends with a newline.
fn ends_a_line(f: &mut std::fs::File) -> std::io::Result<bool> {
    if f.metadata()?.len() == 0 {
        return Ok(true);
    }
    f.seek(std::io::SeekFrom::End(-1))?;
    let mut last = [0u8];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Copies the regular file `from` (a symlink is refused: a job could point
/// one anywhere on this host) to `to`, readable by all, and syncs it.
fn copy_synced(from: &Path, to: &Path) -> anyhow::Result<()> {
    regular_file(from)?;
    std::fs::copy(from, to).with_context(|| format!("failed to copy `{}`", from.display()))?;
    set_mode(to, FILE_MODE)?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("failed to sync `{}`", to.display()))
}

/// `path` is a regular file itself, not a symlink to one.
pub(super) fn regular_file(path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    if meta.file_type().is_symlink() {
        bail!("`{}` is a symlink; a deploy copies regular files only", path.display());
    }
    if !meta.is_file() {
        bail!("`{}` is not a regular file", path.display());
    }
    Ok(())
}

/// `root/rel` is a regular file, reached through no symlink below `root`.
pub(super) fn regular_file_in(root: &Path, rel: &Path) -> anyhow::Result<()> {
    let mut at = root.to_path_buf();
    let mut parts = rel.components().peekable();
    while let Some(part) = parts.next() {
        at.push(part);
        if parts.peek().is_none() {
            break;
        }
        let meta = std::fs::symlink_metadata(&at).with_context(|| format!("failed to read `{}`", at.display()))?;
        if !meta.is_dir() {
            bail!(
                "`{}` is not a directory (a symlink?); a deploy copies regular files only",
                at.display()
            );
        }
    }
    regular_file(&at)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("failed to set the mode of `{}`", path.display()))
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
            blocked: None,
            warnings: Vec::new(),
        }
    }

    async fn open(dir: &Path) -> Store {
        Store::open(dir, std::future::pending()).await.unwrap()
    }

    #[tokio::test]
    async fn promotions_swap_current_keep_previous_and_remove_older_models() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("deployed");
        let store = open(&dir).await;
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

    #[tokio::test]
    async fn a_half_written_model_never_becomes_current() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("deployed");
        let store = open(&dir).await;
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

    #[tokio::test]
    async fn a_deploy_waiting_for_the_lock_stops_on_a_signal_and_goes_on_when_it_is_free() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("deployed");
        let held = open(&dir).await;
        let began = std::time::Instant::now();
        let stop = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            SignalEvent::Terminate
        };
        let Err(e) = Store::open(&dir, stop).await else {
            panic!("the lock is held: no store")
        };
        assert!(
            matches!(
                e.downcast_ref::<Interrupted>(),
                Some(Interrupted(SignalEvent::Terminate))
            ),
            "{e:#}"
        );
        assert!(began.elapsed() < Duration::from_secs(3), "{:?}", began.elapsed());

        // Released a moment later: the waiting deploy takes it.
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(held);
        });
        let waited = tokio::time::timeout(Duration::from_secs(5), open(&dir)).await;
        assert!(waited.is_ok(), "the lock was taken once free");
        release.await.unwrap();
    }

    #[tokio::test]
    async fn a_torn_last_line_of_the_history_stays_one_bad_line() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("deployed");
        let store = open(&dir).await;
        store.append(&record(&dir)).unwrap();
        let path = dir.join(HISTORY);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"version": 1, "at": "20"#).unwrap();
        drop(f);
        store.append(&record(&dir)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(serde_json::from_str::<Record>(lines[1]).is_err());
        for line in [lines[0], lines[2]] {
            serde_json::from_str::<Record>(line).unwrap();
        }
        assert!(text.ends_with('\n'));
    }

    #[tokio::test]
    async fn symlinks_are_refused_and_what_is_copied_is_readable_by_all() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("deployed");
        let store = open(&dir).await;
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, "host file").unwrap();

        // A job that made its checkpoint (or a directory on the way to its
        // export) a symlink: nothing of it is deployed.
        let mut linked = files(&tmp.path().join("one"), "one");
        std::fs::remove_file(&linked.checkpoint).unwrap();
        symlink(&secret, &linked.checkpoint).unwrap();
        let e = store.promote(&linked, &mut record(&dir), "b.a").unwrap_err();
        assert!(format!("{e:#}").contains("is a symlink"), "{e:#}");
        assert!(store.current().unwrap().is_none());
        std::fs::create_dir(tmp.path().join("real")).unwrap();
        std::fs::write(tmp.path().join("real/model.pt"), "x").unwrap();
        symlink(tmp.path().join("real"), tmp.path().join("one/export")).unwrap();
        let e = regular_file_in(&tmp.path().join("one"), Path::new("export/model.pt")).unwrap_err();
        assert!(format!("{e:#}").contains("is not a directory"), "{e:#}");
        linked.torchscript = Some(tmp.path().join("one/export/model.pt"));
        assert!(store.promote(&linked, &mut record(&dir), "b.a").is_err());

        // A job's files of mode 0600 are 0644 in the deploy directory (and
        // a `versions` made private, 0755).
        let private = files(&tmp.path().join("two"), "two");
        for p in [&private.checkpoint, &private.job_json] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::set_permissions(dir.join(VERSIONS), std::fs::Permissions::from_mode(0o700)).unwrap();
        store.promote(&private, &mut record(&dir), "b.a").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let now = dir.join(CURRENT);
        for f in [CHECKPOINT, "job.json", RECORD] {
            assert_eq!(mode(&now.join(f)), 0o644, "{f}");
        }
        assert_eq!(mode(&std::fs::canonicalize(&now).unwrap()), 0o755);
        assert_eq!(mode(&dir.join(VERSIONS)), 0o755);
    }

    #[tokio::test]
    async fn a_broken_current_replaced_leaves_previous_the_rollback_target() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("deployed");
        let store = open(&dir).await;
        for w in ["one", "two"] {
            store
                .promote(&files(&tmp.path().join(w), w), &mut record(&dir), "b.a")
                .unwrap();
        }
        // current (b.a-2) loses its checkpoint; previous is b.a.
        std::fs::remove_file(dir.join("versions/b.a-2").join(CHECKPOINT)).unwrap();
        assert!(store.current().is_err());
        store
            .promote(&files(&tmp.path().join("three"), "three"), &mut record(&dir), "b.a")
            .unwrap();
        assert_eq!(
            std::fs::read_link(dir.join(CURRENT)).unwrap(),
            Path::new("versions/b.a-3")
        );
        assert_eq!(
            std::fs::read_link(dir.join(PREVIOUS)).unwrap(),
            Path::new("versions/b.a")
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("previous").join(CHECKPOINT)).unwrap(),
            "one"
        );
        assert!(!dir.join("versions/b.a-2").exists(), "the broken one is removed");
    }
}
