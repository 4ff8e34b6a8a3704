//! The watched data directory: which of its files are new (not taken by an
//! earlier trigger) and settled (unchanged for `settle`), looked at anew at
//! every poll.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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
    /// The new settled files, first arrived first (modification time, then
    /// name).
    pub settled: Vec<String>,
    /// New files not settled yet.
    pub arriving: usize,
}

/// A file as last seen: its size and modification time.
type Stamp = (u64, SystemTime);

/// The data directory, with what the previous look saw of its new files.
#[derive(Debug)]
pub struct Incoming {
    pub dir: PathBuf,
    settle: Duration,
    previous: HashMap<String, Stamp>,
}

impl Incoming {
    pub fn new(dir: PathBuf, settle: Duration) -> Incoming {
        Incoming {
            dir,
            settle,
            previous: HashMap::new(),
        }
    }

    /// Looks at every file under the directory. A new file is settled when
    /// its modification time is at least `settle` before `now` (each write
    /// moves it) and, if the previous look saw it, with the same size and
    /// time as then.
    pub fn look(&mut self, seen: &BTreeSet<String>, now: SystemTime) -> std::io::Result<Look> {
        let mut files = Vec::new();
        walk(&self.dir, "", &mut files)?;
        let mut look = Look::default();
        let mut settled: Vec<(SystemTime, String)> = Vec::new();
        let mut current = HashMap::new();
        for (name, stamp) in files {
            look.present.insert(name.clone());
            if seen.contains(&name) {
                continue;
            }
            let old_enough = now.duration_since(stamp.1).is_ok_and(|age| age >= self.settle);
            let unchanged = self.previous.get(&name).is_none_or(|before| *before == stamp);
            if old_enough && unchanged {
                settled.push((stamp.1, name.clone()));
            } else {
                look.arriving += 1;
            }
            current.insert(name, stamp);
        }
        settled.sort();
        look.settled = settled.into_iter().map(|(_, name)| name).collect();
        self.previous = current;
        Ok(look)
    }
}

/// Whether a file or directory of this name is left out: hidden (a
/// leading `.`, which is also how `rsync` and many uploaders name a file
/// they are still writing) or temporary.
pub fn left_out(name: &str) -> bool {
    name.starts_with('.') || TEMPORARY.iter().any(|t| name.ends_with(t))
}

/// The files under `dir` (relative to the watched directory, as `prefix`
/// says), with their stamps: regular files and links to them; directories
/// are entered, except links to them (no loops) and left-out ones.
fn walk(dir: &Path, prefix: &str, files: &mut Vec<(String, Stamp)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if left_out(&name) {
            continue;
        }
        let relative = format!("{prefix}{name}");
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            // A directory that vanished meanwhile is no error.
            let _ = walk(&entry.path(), &format!("{relative}/"), files);
            continue;
        }
        // A link is counted by what it points to; a broken one not at all.
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if meta.is_file() {
            files.push((relative, (meta.len(), meta.modified()?)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, body: &str, age: Duration) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, body).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
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
        let look = incoming.look(&seen, SystemTime::now()).unwrap();
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
        assert_eq!(incoming.look(&none, SystemTime::now()).unwrap().settled, ["a.csv"]);
        // Grown, with its old time put back (as `cp -p` or `touch -d` can).
        file(dir.path(), "a.csv", "12", old);
        let look = incoming.look(&none, SystemTime::now()).unwrap();
        assert_eq!((look.settled.len(), look.arriving), (0, 1));
        assert_eq!(incoming.look(&none, SystemTime::now()).unwrap().settled, ["a.csv"]);
        // Settled by the clock alone: 30 s after its last change.
        file(dir.path(), "b.csv", "1", Duration::ZERO);
        let later = SystemTime::now() + Duration::from_secs(31);
        assert_eq!(incoming.look(&none, later).unwrap().settled, ["a.csv", "b.csv"]);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let mut incoming = Incoming::new("/nonexistent/tb-incoming".into(), Duration::from_secs(1));
        assert!(incoming.look(&BTreeSet::new(), SystemTime::now()).is_err());
    }
}
