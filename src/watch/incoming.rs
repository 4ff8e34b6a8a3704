//! The watched data directory: which of its files are new (not taken by an
//! earlier trigger) and settled (unchanged for `settle`), looked at anew at
//! every poll.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Name endings of files still being written by common tools (downloads,
/// `rsync --partial`, WinSCP, editors): never counted, whatever their age.
pub const TEMPORARY: [&str; 9] = [
    ".part",
    ".partial",
    ".tmp",
    ".temp",
    ".crdownload",
    ".download",
    ".filepart",
    ".swp",
    "~",
];

/// What one look at the directory found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Look {
    /// Every file counted (relative paths), new or not.
    pub present: BTreeSet<String>,
    /// The device the directory was on (a share mounted on it is another
    /// device than the directory beneath).
    pub device: Option<u64>,
    /// The new settled files, first arrived first (modification time, then
    /// name).
    pub settled: Vec<String>,
    /// New files not settled yet.
    pub arriving: usize,
}

/// A file as last seen: its size and modification time.
pub type Stamp = (u64, SystemTime);

/// One listing of the directory: every file under it with its stamp, and
/// the device the directory was on.
#[derive(Debug, Default)]
pub struct Listing {
    pub files: Vec<(String, Stamp)>,
    pub device: Option<u64>,
}

/// The data directory, with what the previous look saw of its new files.
#[derive(Debug)]
pub struct Incoming {
    pub dir: PathBuf,
    settle: Duration,
    /// Each new file's stamp at the previous look, and since when (by the
    /// watch's own clock) it has had that stamp.
    previous: HashMap<String, (Stamp, Instant)>,
}

impl Incoming {
    pub fn new(dir: PathBuf, settle: Duration) -> Incoming {
        Incoming {
            dir,
            settle,
            previous: HashMap::new(),
        }
    }

    /// Looks at every file under the directory: [`list`] (which blocks on
    /// the disk), then [`judge`](Self::judge).
    pub fn look(&mut self, seen: &BTreeSet<String>, now: SystemTime, tick: Instant) -> std::io::Result<Look> {
        let listing = list(&self.dir)?;
        Ok(self.judge(listing, seen, now, tick))
    }

    /// Judges the files [`list`] found, at wall-clock time `now` and the
    /// watch's own clock `tick`. A new file is settled when the previous
    /// look (if any) saw it with the same size and time, and either its
    /// modification time is at least `settle` before `now` (each write
    /// moves it), or the watch has seen it unchanged for `settle` by its
    /// own clock (a file dated in the future, or a wall clock that jumped).
    pub fn judge(&mut self, listing: Listing, seen: &BTreeSet<String>, now: SystemTime, tick: Instant) -> Look {
        let mut look = Look {
            device: listing.device,
            ..Look::default()
        };
        let files = listing.files;
        let mut settled: Vec<(SystemTime, String)> = Vec::new();
        let mut current = HashMap::new();
        for (name, stamp) in files {
            look.present.insert(name.clone());
            if seen.contains(&name) {
                continue;
            }
            let before = self.previous.get(&name);
            let unchanged = before.is_none_or(|(old, _)| *old == stamp);
            let since = before.filter(|(old, _)| *old == stamp).map(|(_, since)| *since);
            let old_enough = now.duration_since(stamp.1).is_ok_and(|age| age >= self.settle);
            let still_long_enough = since.is_some_and(|since| tick.saturating_duration_since(since) >= self.settle);
            if unchanged && (old_enough || still_long_enough) {
                settled.push((stamp.1, name.clone()));
            } else {
                look.arriving += 1;
            }
            current.insert(name, (stamp, since.unwrap_or(tick)));
        }
        settled.sort();
        look.settled = settled.into_iter().map(|(_, name)| name).collect();
        self.previous = current;
        look
    }
}

/// Whether a file or directory of this name is left out: hidden (a
/// leading `.`, which is also how `rsync` and many uploaders name a file
/// they are still writing) or temporary.
pub fn left_out(name: &str) -> bool {
    name.starts_with('.') || TEMPORARY.iter().any(|t| name.ends_with(t))
}

/// Every file under `dir` (relative to it), with its stamp: regular files
/// and links to them; directories are entered, except links to them (no
/// loops) and left-out ones. Complete or an error: an entry gone meanwhile
/// (or a broken link) is no file, but one that cannot be read fails the
/// whole list, so that no file it holds is taken for gone.
pub fn list(dir: &Path) -> std::io::Result<Listing> {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::metadata(dir).ok().map(|m| m.dev());
    let mut files = Vec::new();
    walk(dir, "", &mut files)?;
    Ok(Listing { files, device })
}

fn walk(dir: &Path, prefix: &str, files: &mut Vec<(String, Stamp)>) -> std::io::Result<()> {
    // The watched directory's own errors are said with its name already.
    let named = |e| if prefix.is_empty() { e } else { at(dir, e) };
    let entries = match std::fs::read_dir(dir) {
        // A subdirectory that vanished meanwhile holds nothing.
        Err(e) if !prefix.is_empty() && absent(&e) => return Ok(()),
        entries => entries.map_err(named)?,
    };
    for entry in entries {
        let entry = entry.map_err(named)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if left_out(&name) {
            continue;
        }
        let relative = format!("{prefix}{name}");
        let path = entry.path();
        let Some(kind) = found(&path, entry.file_type())? else {
            continue;
        };
        if kind.is_dir() {
            walk(&path, &format!("{relative}/"), files)?;
            continue;
        }
        // A link is counted by what it points to; a broken one not at all.
        let Some(meta) = found(&path, std::fs::metadata(&path))? else {
            continue;
        };
        if meta.is_file() {
            let modified = meta.modified().map_err(|e| at(&path, e))?;
            files.push((relative, (meta.len(), modified)));
        }
    }
    Ok(())
}

/// What a look at one entry gave: `None` when it is not there (gone
/// meanwhile, or a link to nothing); an error naming it otherwise.
fn found<T>(path: &Path, result: std::io::Result<T>) -> std::io::Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if absent(&e) => Ok(None),
        Err(e) => Err(at(path, e)),
    }
}

/// Whether an error says there is nothing at the path: gone, a link to
/// nowhere, a loop of links, or a path through a file.
fn absent(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
}

/// `e`, naming `path`.
fn at(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("`{}`: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file `age` old (a negative age: dated in the future).
    fn file(dir: &Path, name: &str, body: &str, age: Duration) {
        dated(dir, name, body, SystemTime::now() - age);
    }

    fn dated(dir: &Path, name: &str, body: &str, at: SystemTime) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, body).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(at).unwrap();
    }

    #[test]
    fn new_settled_files_are_counted_in_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let old = Duration::from_secs(60);
        file(dir.path(), "b.csv", "1", old + Duration::from_secs(1));
        file(dir.path(), "a.csv", "1", old);
        file(dir.path(), "sub/c.csv", "1", old);
        file(dir.path(), "fresh.csv", "1", Duration::ZERO);
        file(dir.path(), "seen.csv", "1", old);
        for hidden in [".x.csv", "y.csv.part", "z~", ".cache/d.csv", "w.crdownload"] {
            file(dir.path(), hidden, "1", old);
        }
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
        let mut incoming = Incoming::new(dir.path().to_path_buf(), Duration::from_secs(30));
        let seen = BTreeSet::from(["seen.csv".to_string()]);
        let look = incoming.look(&seen, SystemTime::now(), Instant::now()).unwrap();
        // b is the oldest; a was written just before sub/c.
        assert_eq!(look.settled, ["b.csv", "a.csv", "sub/c.csv"]);
        assert_eq!(look.arriving, 1);
        assert_eq!(
            look.present.iter().map(String::as_str).collect::<Vec<_>>(),
            ["a.csv", "b.csv", "fresh.csv", "seen.csv", "sub/c.csv"]
        );
    }

    #[test]
    fn a_file_that_changed_since_the_last_look_is_not_settled() {
        let dir = tempfile::tempdir().unwrap();
        let old = Duration::from_secs(60);
        file(dir.path(), "a.csv", "1", old);
        let mut incoming = Incoming::new(dir.path().to_path_buf(), Duration::from_secs(30));
        let none = BTreeSet::new();
        let tick = Instant::now();
        assert_eq!(
            incoming.look(&none, SystemTime::now(), tick).unwrap().settled,
            ["a.csv"]
        );
        // Grown, with its old time put back (as `cp -p` or `touch -d` can).
        file(dir.path(), "a.csv", "12", old);
        let look = incoming.look(&none, SystemTime::now(), tick).unwrap();
        assert_eq!((look.settled.len(), look.arriving), (0, 1));
        assert_eq!(
            incoming.look(&none, SystemTime::now(), tick).unwrap().settled,
            ["a.csv"]
        );
        // Settled by the clock alone: 30 s after its last change.
        file(dir.path(), "b.csv", "1", Duration::ZERO);
        let later = SystemTime::now() + Duration::from_secs(31);
        assert_eq!(incoming.look(&none, later, tick).unwrap().settled, ["a.csv", "b.csv"]);
    }

    #[test]
    fn a_file_dated_in_the_future_settles_once_seen_unchanged_for_settle() {
        let dir = tempfile::tempdir().unwrap();
        let an_hour_ahead = SystemTime::now() + Duration::from_secs(3600);
        dated(dir.path(), "ahead.csv", "1", an_hour_ahead);
        let mut incoming = Incoming::new(dir.path().to_path_buf(), Duration::from_secs(30));
        let t0 = Instant::now();
        // Whether it is settled at `secs` on the watch's clock.
        let mut settled_at = |secs: u64| {
            let tick = t0 + Duration::from_secs(secs);
            let look = incoming.look(&BTreeSet::new(), SystemTime::now(), tick).unwrap();
            assert_eq!(look.settled.len() + look.arriving, 1);
            look.settled == ["ahead.csv"]
        };
        assert_eq!([0, 29, 30].map(&mut settled_at), [false, false, true]);
        // Written again: its own clock starts over.
        dated(dir.path(), "ahead.csv", "12", an_hour_ahead);
        assert_eq!([31, 60, 61].map(&mut settled_at), [false, false, true]);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let mut incoming = Incoming::new("/nonexistent/tb-incoming".into(), Duration::from_secs(1));
        assert!(
            incoming
                .look(&BTreeSet::new(), SystemTime::now(), Instant::now())
                .is_err()
        );
    }

    #[test]
    fn broken_links_are_no_files_and_an_unreadable_subdirectory_fails_the_look() {
        let dir = tempfile::tempdir().unwrap();
        file(dir.path(), "a.csv", "1", Duration::from_secs(60));
        std::os::unix::fs::symlink(dir.path().join("nowhere.csv"), dir.path().join("broken.csv")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("self.csv"), dir.path().join("self.csv")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a.csv/x"), dir.path().join("through.csv")).unwrap();
        let listing = list(dir.path()).unwrap();
        let names: Vec<String> = listing.files.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a.csv"]);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(listing.device, Some(std::fs::metadata(dir.path()).unwrap().dev()));

        // A subdirectory that cannot be read (here: its path is longer
        // than the system takes, which stops root too) fails the whole
        // look, naming it, rather than leaving its files out as if gone.
        let deep = too_deep(dir.path());
        let e = list(dir.path()).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("`{}", dir.path().join("deep").display())),
            "{e}"
        );
        assert!(e.to_string().contains("too long"), "{e}");
        let mut incoming = Incoming::new(dir.path().to_path_buf(), Duration::from_secs(1));
        assert!(
            incoming
                .look(&BTreeSet::new(), SystemTime::now(), Instant::now())
                .is_err()
        );
        assert!(deep > libc::PATH_MAX as usize);
    }

    /// Makes `dir/deep/…` nested past `PATH_MAX` (with `mkdirat`, which
    /// takes one name at a time); the length of the deepest path.
    fn too_deep(dir: &Path) -> usize {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let name = "d".repeat(200);
        let top = CString::new(dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: plain libc calls on owned, NUL-terminated strings; every
        // descriptor opened is closed.
        unsafe {
            let mut fd = libc::open(top.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            assert!(fd >= 0);
            let mut length = dir.as_os_str().len();
            for level in 0..25 {
                let part = CString::new(if level == 0 { "deep".to_string() } else { name.clone() }).unwrap();
                assert_eq!(libc::mkdirat(fd, part.as_ptr(), 0o755), 0);
                let next = libc::openat(fd, part.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
                libc::close(fd);
                assert!(next >= 0);
                fd = next;
                length += 1 + part.as_bytes().len();
            }
            libc::close(fd);
            length
        }
    }

    #[test]
    fn an_entry_that_is_not_there_is_skipped_any_other_error_is_one() {
        let path = Path::new("/in/sub");
        let gone = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(matches!(found::<()>(path, Err(gone)), Ok(None)));
        let looped = std::io::Error::from_raw_os_error(libc::ELOOP);
        assert!(matches!(found::<()>(path, Err(looped)), Ok(None)));
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = found::<()>(path, Err(denied)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(e.to_string().starts_with("`/in/sub`: "), "{e}");
    }
}
