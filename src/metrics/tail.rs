//! Following a file that a trainer appends to across polls: where the last
//! read stopped, and whether the file has since been replaced or cut short,
//! in which case everything read before is void and reading starts over.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// How far a reader has consumed a file, and which file that was.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    offset: u64,
    /// Device and inode: a file deleted and written anew under the same name
    /// (Lightning removes `metrics.csv` when a run reuses its directory) is
    /// another file even when it has grown past the old offset. Best effort:
    /// the file system may hand the new file the old inode.
    id: Option<(u64, u64)>,
    /// Bytes handed to reads so far (what each [`Tail::open`] left between
    /// the offset and the end), over restarts: what following costs.
    read: u64,
}

/// The file as it is now, opened for one read.
pub(crate) struct Opened {
    /// `None` when there is no file (yet, or any more).
    pub file: Option<File>,
    /// Its length when opened: a read stops there, so that one poll sees one
    /// consistent state however fast the writer goes on.
    pub len: u64,
    /// What was read before belongs to a file that is gone: the offset is
    /// back at 0.
    pub restarted: bool,
}

impl Tail {
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    pub(crate) fn advance_to(&mut self, offset: u64) {
        self.offset = offset;
    }

    /// Bytes read so far, over every open and restart.
    pub(crate) fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Forgets the file, as if it had never been read (what reading it
    /// cost so far stays counted).
    pub(crate) fn reset(&mut self) {
        *self = Tail {
            read: self.read,
            ..Tail::default()
        };
    }

    pub(crate) fn open(&mut self, path: &Path) -> io::Result<Opened> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let restarted = self.offset > 0;
                self.reset();
                return Ok(Opened {
                    file: None,
                    len: 0,
                    restarted,
                });
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let id = (meta.dev(), meta.ino());
        let replaced = self.id.is_some_and(|old| old != id) || meta.len() < self.offset;
        let restarted = replaced && self.offset > 0;
        if replaced {
            self.offset = 0;
        }
        self.id = Some(id);
        self.read += meta.len().saturating_sub(self.offset);
        Ok(Opened {
            file: Some(file),
            len: meta.len(),
            restarted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shorter_or_replaced_file_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut tail = Tail::default();
        assert!(tail.open(&path).unwrap().file.is_none());

        std::fs::write(&path, "abcdef").unwrap();
        let o = tail.open(&path).unwrap();
        assert_eq!((o.len, o.restarted), (6, false));
        tail.advance_to(6);

        std::fs::write(&path, "abc").unwrap();
        assert!(tail.open(&path).unwrap().restarted);
        assert_eq!(tail.offset(), 0);
        tail.advance_to(3);

        // Longer, but another file (written beside it first, so that its
        // inode cannot be the old one's, reused).
        std::fs::write(dir.path().join("g"), "abcdefgh").unwrap();
        std::fs::rename(dir.path().join("g"), &path).unwrap();
        assert!(tail.open(&path).unwrap().restarted);
        tail.advance_to(8);

        std::fs::remove_file(&path).unwrap();
        let o = tail.open(&path).unwrap();
        assert!(o.file.is_none() && o.restarted);
        assert!(!tail.open(&path).unwrap().restarted);
    }
}
