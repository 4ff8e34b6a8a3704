//! How every state file of a run directory reaches the disk and comes back:
//! atomic writes (temp file, fsync, rename), versioned reads that refuse a
//! corrupt or newer file instead of silently resetting it, and the small
//! reserve of disk space kept for recording states on a full disk.

use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::Write;
use std::path::Path;

/// The format version of every state file this tb writes.
pub const VERSION: u32 = 1;

/// Writes `bytes` to `path` so that a reader sees the old or the new file,
/// never a mix: temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique across hosts too: a supervisor and a `tb exec` on a node may
    // share the directory (and a pid).
    let tmp = dir.join(format!(".{name}.{}.{}.tmp", host(), std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e).context(format!("failed to write `{}`", path.display())));
    }
    Ok(())
}

/// `value` as pretty JSON, written atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads a state file; a corrupt file or one from a newer tb is an error,
/// never a silent reset.
pub fn read_versioned<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    read_version(path, VERSION)
}

/// [`read_versioned`] for a file with a format version of its own.
pub fn read_version<T: DeserializeOwned>(path: &Path, known: u32) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    let probe: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("`{}` is corrupt (not JSON)", path.display()))?;
    match probe.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v <= u64::from(known) => {}
        Some(v) => bail!(
            "`{}` has format version {v}, newer than this tb understands ({known}); upgrade tb",
            path.display()
        ),
        None => bail!("`{}` is corrupt (no \"version\")", path.display()),
    }
    serde_json::from_value(probe).with_context(|| format!("`{}` is corrupt", path.display()))
}

/// The name of the space tb keeps in each batch directory for a full disk.
const RESERVE: &str = ".tb-reserve";
const RESERVE_BYTES: u64 = 1 << 20;

/// Sets aside 1 MiB in the batch directory, released when the disk fills
/// up so that the jobs' states can still be written. Whole or not at all:
/// on a disk without the room, there is no reserve (and a warning), never
/// a part of one holding the last free space.
pub fn create_reserve(batch_dir: &Path) {
    if let Err(e) = make_reserve(batch_dir) {
        tracing::warn!(
            "could not set aside tb's 1 MiB reserve in `{}`: {e}; on a full disk, job states may go unrecorded",
            batch_dir.display()
        );
    }
}

/// [`create_reserve`]: allocated under a temporary name, synced, then
/// renamed into place; the temporary file goes on any failure.
fn make_reserve(batch_dir: &Path) -> std::io::Result<()> {
    remove_reserve_leftovers(batch_dir);
    let path = batch_dir.join(RESERVE);
    match std::fs::metadata(&path) {
        Ok(m) if is_whole(&m) => return Ok(()),
        // Cut short by a full disk (an older tb wrote it in place): it
        // frees its space before the whole one takes it.
        Ok(_) => std::fs::remove_file(&path)?,
        Err(_) => {}
    }
    let tmp = batch_dir.join(format!("{RESERVE}.{}.{}.tmp", host(), std::process::id()));
    let made = (|| {
        let f = std::fs::File::create(&tmp)?;
        allocate(&f, RESERVE_BYTES)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    made
}

/// Takes `len` bytes of real disk blocks for `file`: unlike written zeros
/// (which a compressing filesystem stores as nothing) or a sparse length,
/// they are there to give back.
fn allocate(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; posix_fallocate touches no memory of ours.
    let err = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    match err {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

fn is_whole(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    m.len() == RESERVE_BYTES && m.blocks() * 512 >= RESERVE_BYTES
}

/// Temporary reserves of a tb killed while making one. Only the batch's
/// supervisor (or its creator) makes reserves, so any found are stale.
fn remove_reserve_leftovers(batch_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(batch_dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{RESERVE}.")) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn host() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Frees the reserve; whether there was one to free.
pub fn release_reserve(batch_dir: &Path) -> bool {
    std::fs::remove_file(batch_dir.join(RESERVE)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_and_future_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        std::fs::write(&p, "{\"status\": ").unwrap();
        let e = read_versioned::<serde_json::Value>(&p).unwrap_err();
        assert!(format!("{e:#}").contains("is corrupt (not JSON)"));
        std::fs::write(&p, "{\"version\": 9}").unwrap();
        let e = read_versioned::<serde_json::Value>(&p).unwrap_err();
        assert!(e.to_string().contains("format version 9, newer than this tb"));
        std::fs::write(&p, "{\"status\": 1}").unwrap();
        let e = read_versioned::<serde_json::Value>(&p).unwrap_err();
        assert!(e.to_string().contains("is corrupt (no \"version\")"));
    }

    #[test]
    fn a_partial_reserve_or_a_leftover_is_replaced_by_a_whole_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RESERVE), vec![0u8; 4096]).unwrap();
        std::fs::write(dir.path().join(format!("{RESERVE}.gone.42.tmp")), vec![0u8; 4096]).unwrap();
        create_reserve(dir.path());
        let m = std::fs::metadata(dir.path().join(RESERVE)).unwrap();
        assert!(is_whole(&m), "{} bytes", m.len());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a leftover stayed");
        assert!(release_reserve(dir.path()));
        assert!(!release_reserve(dir.path()));
    }

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_atomic(&p, b"1").unwrap();
        write_atomic(&p, b"2").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"2");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
