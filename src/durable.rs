//! How every state file of a run directory reaches the disk and comes back:
//! atomic writes (temp file, fsync, rename), unsynced first writes of files
//! that the batch's plan can make again, versioned reads that refuse a
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

/// Writes `bytes` to `path` unless a file is there already; whether it
/// wrote. Atomic (a reader sees no file or the whole one) but not synced:
/// only for files whose content can be made again from a synced one, and
/// which [`read_written`] reads. Never replaces a file, so that it cannot
/// undo what an atomic write put there meanwhile. `tmp` is its temporary
/// name: one writer at a time per `tmp`.
pub fn write_new(path: &Path, tmp: &Path, bytes: &[u8]) -> anyhow::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let result = (|| -> std::io::Result<bool> {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        // link(2), unlike rename(2), fails on an existing file: portable,
        // NFS included.
        let linked = match std::fs::hard_link(tmp, path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        };
        std::fs::remove_file(tmp)?;
        Ok(linked)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        anyhow::Error::new(e).context(format!("failed to write `{}`", path.display()))
    })
}

/// Syncs the filesystem that holds `dir` (syncfs(2)): one flush for many
/// files written by [`write_new`].
pub fn sync_filesystem(dir: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dir).with_context(|| format!("failed to open `{}`", dir.display()))?;
    // SAFETY: a valid open descriptor; syncfs touches no memory of ours.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(anyhow::Error::new(e).context(format!("failed to sync the filesystem of `{}`", dir.display())));
    }
    Ok(())
}

/// Makes the names in `dir` durable (fsync of the directory): the files
/// renamed or created in it survive a power loss.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("failed to sync `{}`", dir.display()))
}

/// Reads a state file; a corrupt file or one from a newer tb is an error,
/// never a silent reset.
pub fn read_versioned<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    read_version(path, VERSION)
}

/// The bytes [`write_new`] is given for `value`: pretty JSON and a newline
/// (what [`read_written`] compares a torn file with).
pub fn unsynced_bytes<T: Serialize>(value: &T) -> anyhow::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// [`read_versioned`], for a file that [`write_new`] may not have written
/// yet: `None` when there is none, or none that ever reached the disk
/// whole, as a power loss leaves an unsynced new file: empty, zeros, or
/// the start of `unsynced` (what `write_new` was given; [`unsynced_bytes`])
/// with the rest missing or zeros (a file of more than a page, only part
/// of it written back). A synced write ([`write_atomic`]) is never seen in
/// part. Anything else that does not parse is corrupt, as ever.
pub fn read_written<T: DeserializeOwned>(
    path: &Path,
    unsynced: impl FnOnce() -> Option<Vec<u8>>,
) -> anyhow::Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("failed to read `{}`", path.display()))),
    };
    if bytes.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    match parse_version(path, &bytes, VERSION) {
        Ok(value) => Ok(Some(value)),
        Err(e) => match unsynced() {
            Some(whole) if torn(&bytes, &whole) => Ok(None),
            _ => Err(e),
        },
    }
}

/// Whether `bytes` are the start of `whole`, possibly followed by zeros
/// (`whole`, JSON text, holds no NUL byte).
fn torn(bytes: &[u8], whole: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
    let text = &bytes[..end];
    !text.is_empty() && whole.starts_with(text)
}

/// [`read_versioned`] for a file with a format version of its own.
pub fn read_version<T: DeserializeOwned>(path: &Path, known: u32) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    parse_version(path, &bytes, known)
}

fn parse_version<T: DeserializeOwned>(path: &Path, bytes: &[u8], known: u32) -> anyhow::Result<T> {
    let probe: serde_json::Value =
        serde_json::from_slice(bytes).with_context(|| format!("`{}` is corrupt (not JSON)", path.display()))?;
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
    fn a_new_file_is_written_once_and_never_over_another() {
        let dir = tempfile::tempdir().unwrap();
        let (p, tmp) = (dir.path().join("s.json"), dir.path().join(".s.json.new"));
        // A killed writer's leftover under the temporary name is written over.
        std::fs::write(&tmp, b"stale").unwrap();
        assert!(write_new(&p, &tmp, b"{\"version\": 1, \"n\": 1}").unwrap());
        write_atomic(&p, b"{\"version\": 1, \"n\": 2}").unwrap();
        assert!(!write_new(&p, &tmp, b"{\"version\": 1, \"n\": 3}").unwrap());
        let v: serde_json::Value = read_versioned(&p).unwrap();
        assert_eq!(v["n"], 2, "an atomic write is never undone");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file stays"
        );
    }

    #[test]
    fn a_file_that_never_reached_the_disk_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("job.json");
        let whole =
            unsynced_bytes(&serde_json::json!({"version": 1, "spec": {"name": "a", "env": "x".repeat(5000)}})).unwrap();
        let read = |bytes: &[u8]| {
            std::fs::write(&p, bytes).unwrap();
            read_written::<serde_json::Value>(&p, || Some(whole.clone()))
        };
        assert!(
            read_written::<serde_json::Value>(&p, || None).unwrap().is_none(),
            "missing"
        );
        assert!(read(b"").unwrap().is_none(), "empty");
        assert!(read(&[0u8; 300]).unwrap().is_none(), "zeros");
        // Its first page written back, the rest missing or zeros.
        assert!(read(&whole[..4096]).unwrap().is_none(), "cut short");
        let mut page = whole[..4096].to_vec();
        page.resize(whole.len(), 0);
        assert!(read(&page).unwrap().is_none(), "cut short, then zeros");
        // Not what write_new was given: corrupt, whatever its shape.
        let mut other = whole[..4096].to_vec();
        other[20] = b'X';
        for junk in [
            &other[..],
            b"{\"version\": 1, \"st",
            b"not json",
            b"{\"version\": 1} trailing",
        ] {
            let e = read(junk).unwrap_err();
            assert!(format!("{e:#}").contains("is corrupt"), "{e:#}");
        }
        let mut middle = whole[..100].to_vec();
        middle.extend([0, 0]);
        middle.extend(&whole[102..4096]);
        assert!(read(&middle).is_err(), "a NUL inside is no tail of zeros");
        assert!(read(&whole).unwrap().is_some());
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
