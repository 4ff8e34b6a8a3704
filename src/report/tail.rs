//! The last lines of a log, read backwards from its end: a night of stderr
//! can be gigabytes, and the report wants only its final words.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const CHUNK: u64 = 8 * 1024;
/// Enough for 20 long lines; a file of one endless line stops here.
const MAX_BYTES: u64 = 256 * 1024;
/// A progress bar redrawn ten thousand times is one line; keep it readable.
const MAX_LINE_CHARS: usize = 400;

/// The last `n` lines of `path`, as a terminal would show them (text after
/// the last carriage return of each line). A missing file is no lines.
pub fn tail(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut pos = len;
    let mut buf: Vec<u8> = Vec::new();
    let mut newlines = 0;
    // n lines need n separators, plus one for a trailing newline and one to
    // know the first line kept is whole.
    while pos > 0 && newlines <= n + 1 && len - pos < MAX_BYTES {
        let start = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        newlines += chunk.iter().filter(|&&b| b == b'\n').count();
        chunk.extend_from_slice(&buf);
        buf = chunk;
        pos = start;
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    if pos > 0 && lines.len() > 1 {
        // The first line began before what was read.
        lines.remove(0);
    }
    let keep = lines.len().saturating_sub(n);
    Ok(lines[keep..].iter().map(|l| shown(l)).collect())
}

fn shown(line: &str) -> String {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let visible = line.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
    if visible.chars().count() > MAX_LINE_CHARS {
        let cut: String = visible.chars().take(MAX_LINE_CHARS).collect();
        format!("{cut}…")
    } else {
        visible.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_lines_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stderr.log");
        let text: String = (0..5000)
            .map(|i| format!("line {i} {}\n", "x".repeat(i % 50)))
            .collect();
        std::fs::write(&p, &text).unwrap();
        let t = tail(&p, 20).unwrap();
        assert_eq!(t.len(), 20);
        assert!(t[0].starts_with("line 4980 "), "{}", t[0]);
        assert!(t[19].starts_with("line 4999 "));
    }

    #[test]
    fn short_files_progress_bars_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stderr.log");
        std::fs::write(&p, "a\n 10%\r 50%\r100%\r\nTraceback\nno newline").unwrap();
        assert_eq!(tail(&p, 20).unwrap(), ["a", "100%", "Traceback", "no newline"]);
        assert_eq!(tail(&p, 2).unwrap(), ["Traceback", "no newline"]);
        assert!(tail(&dir.path().join("none"), 20).unwrap().is_empty());
        std::fs::write(&p, "").unwrap();
        assert!(tail(&p, 20).unwrap().is_empty());
    }

    #[test]
    fn one_endless_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stderr.log");
        std::fs::write(&p, "y".repeat(1_000_000)).unwrap();
        let t = tail(&p, 20).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].chars().count(), MAX_LINE_CHARS + 1);
    }
}
