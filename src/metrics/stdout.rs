//! Metrics from what a plain PyTorch loop prints: a line is a metrics line
//! when it holds `name=value` or `name: value` pairs (however separated:
//! spaces, commas, `|`) and one of the names is `epoch` or `step`, in any
//! case (`Epoch: 3` is as common as `epoch=3`), with a whole number, which
//! may be written `3/10`. Its other numeric pairs are the metrics.
//!
//! ```text
//! epoch=3 val_loss=0.2134 val_acc=0.91      epoch 3: val_loss, val_acc
//! Epoch: 3/10 | loss: 1e-3                   epoch 3: loss
//! step=1200 train_loss=0.31                  step 1200: train_loss
//! Epoch 3/10                                 not a metrics line: no pair
//! ```
//!
//! Terminal output is taken as a terminal shows it: colour codes are
//! dropped, and a carriage return (tqdm redraws its bar with them) starts
//! the line over, so only the text after the last one counts. NaN and
//! infinite values are counted and left out; other words are ignored.

use super::Point;
use super::tail::Tail;
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

/// A line still without its end after this many bytes is no metrics line
/// anyone printed: the rest of it is passed over, not held in memory.
const MAX_LINE: usize = 64 << 10;
/// How much of the file one read takes in.
const CHUNK: usize = 1 << 20;

/// What one read of an output file found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The finite values of the metrics lines read, in file order.
    pub points: Vec<Point>,
    /// Metrics lines read.
    pub lines: u64,
    /// Lines that ran past [`MAX_LINE`] bytes, passed over.
    pub skipped: u64,
    /// Pairs whose value was NaN or infinite, left out of `points`.
    pub non_finite: u64,
    /// The file ends in an unterminated line. While the job runs it is left
    /// for the next read; once it has ended it is read as it is.
    pub partial: bool,
    /// The file was replaced or cut short: its points are all here again, and
    /// the caller should drop the ones it had.
    pub restarted: bool,
}

/// One metrics line, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Line {
    pub step: Option<u64>,
    pub epoch: Option<u64>,
    /// Finite values, in the order the line has them.
    pub metrics: Vec<(String, f64)>,
    /// Pairs with a NaN or infinite value.
    pub non_finite: u64,
}

/// Reads a job's output as it grows: each [`read_new`](Self::read_new)
/// returns the metrics of the lines completed since the last one.
#[derive(Debug, Default)]
pub struct StdoutReader {
    tail: Tail,
    /// The consumed part of the file ends inside an over-long line, whose
    /// rest is to be passed over too.
    skipping: bool,
    /// Metric names, shared by their points.
    names: HashSet<Arc<str>>,
}

impl StdoutReader {
    /// The byte offset up to which the file has been consumed.
    pub fn offset(&self) -> u64 {
        self.tail.offset()
    }

    /// Bytes read so far (see [`super::tail::Tail::bytes_read`]).
    pub fn bytes_read(&self) -> u64 {
        self.tail.bytes_read()
    }

    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the lines completed since the last call. `live` says that the
    /// job still runs, so an unterminated last line may be still being
    /// written. A missing file has nothing new (and, if one was read before,
    /// restarts).
    pub fn read_new(&mut self, path: &Path, live: bool) -> io::Result<Batch> {
        let opened = self.tail.open(path)?;
        let mut batch = Batch {
            restarted: opened.restarted,
            ..Batch::default()
        };
        if opened.restarted || opened.file.is_none() {
            self.skipping = false;
        }
        let Some(mut file) = opened.file else {
            return Ok(batch);
        };
        let mut consumed = self.tail.offset();
        if consumed >= opened.len {
            return Ok(batch);
        }
        file.seek(SeekFrom::Start(consumed))?;
        let mut unread = opened.len - consumed;
        let mut buf = Vec::new();
        // One line without its colour codes.
        let mut clean = Vec::new();
        // `buf` holds the file from `consumed` on: a part of a line carried
        // over, then what each turn reads.
        loop {
            let want = (CHUNK as u64).min(unread);
            let got = read_more(&mut file, want, &mut buf)?;
            unread = if got == want { unread - want } else { 0 };
            let end = unread == 0;
            let used = self.lines(&buf, end && !live, &mut clean, &mut batch);
            consumed += used as u64;
            buf.drain(..used);
            if buf.len() > MAX_LINE {
                // Far into a line with no end in sight: pass over it.
                if !self.skipping {
                    batch.skipped += 1;
                    self.skipping = true;
                }
                consumed += buf.len() as u64;
                buf.clear();
            }
            if end {
                break;
            }
        }
        if live {
            batch.partial = !buf.is_empty() || self.skipping;
        } else {
            // What is left is the rest of an over-long line.
            batch.partial |= self.skipping;
            consumed += buf.len() as u64;
            self.skipping = false;
        }
        self.tail.advance_to(consumed);
        Ok(batch)
    }

    /// Reads the lines in `bytes`, returning how many bytes they took. A
    /// line ends at `\n` or `\r\n`; a lone `\r` starts it over. With `last`,
    /// the end of `bytes` ends a line too.
    fn lines(&mut self, bytes: &[u8], last: bool, clean: &mut Vec<u8>, batch: &mut Batch) -> usize {
        let mut start = 0;
        let mut i = 0;
        while let Some(at) = memchr::memchr2(b'\n', b'\r', &bytes[i..]) {
            let at = i + at;
            let (line_end, next) = match bytes[at] {
                b'\n' => (true, at + 1),
                _ => match bytes.get(at + 1) {
                    Some(b'\n') => (true, at + 2),
                    Some(_) => (false, at + 1),
                    // A `\r` that may yet be followed by `\n`.
                    None if !last => return start,
                    None => {
                        batch.partial = true;
                        (true, at + 1)
                    }
                },
            };
            if line_end && !self.skipping {
                self.line(&bytes[start..at], clean, batch);
            }
            // Either way, an over-long line's rest ends here: what follows
            // a `\r` overwrites it.
            self.skipping = false;
            start = next;
            i = next;
        }
        if last && start < bytes.len() {
            batch.partial = true;
            if !self.skipping {
                self.line(&bytes[start..], clean, batch);
            }
            return bytes.len();
        }
        start
    }

    fn line(&mut self, raw: &[u8], clean: &mut Vec<u8>, batch: &mut Batch) {
        // Colour codes could split a name: only then is the line copied
        // before it is looked at.
        let plain = if memchr::memchr(0x1b, raw).is_some() {
            strip_ansi(raw, clean);
            &clean[..]
        } else {
            raw
        };
        if !may_be_metrics(plain) {
            return;
        }
        let text = String::from_utf8_lossy(plain);
        let mut pairs = Vec::new();
        let Some((step, epoch)) = parse(&text, &mut pairs) else {
            return;
        };
        batch.lines += 1;
        for (name, value) in pairs {
            // Counted, and passed on: a diverged value is news for pruning.
            if !value.is_finite() {
                batch.non_finite += 1;
            }
            let tag = match self.names.get(name) {
                Some(tag) => tag.clone(),
                None => {
                    let tag: Arc<str> = name.into();
                    self.names.insert(tag.clone());
                    tag
                }
            };
            batch.points.push(Point {
                tag,
                step,
                epoch,
                value,
            });
        }
    }
}

/// Reads a whole output file of a job that has ended.
pub fn read_all(path: &Path) -> io::Result<Batch> {
    StdoutReader::new().read_new(path, false)
}

/// Parses one line of output (without its `\n`), if it is a metrics line.
pub fn parse_line(line: &str) -> Option<Line> {
    let mut clean = Vec::new();
    let after_cr = line.rsplit('\r').next().unwrap_or_default();
    strip_ansi(after_cr.as_bytes(), &mut clean);
    let text = String::from_utf8_lossy(&clean);
    let mut pairs = Vec::new();
    let (step, epoch) = parse(&text, &mut pairs)?;
    let mut parsed = Line {
        step,
        epoch,
        ..Line::default()
    };
    for (name, value) in pairs {
        if value.is_finite() {
            parsed.metrics.push((name.to_string(), value));
        } else {
            parsed.non_finite += 1;
        }
    }
    Some(parsed)
}

/// Whether `line` (without colour codes) can be a metrics line at all: it
/// has a `=` or `:` and, in any case, `epoch` or `step`. Most of what a job
/// prints is not, and is passed over here without being decoded or split
/// (1 GiB of output is read in seconds, not half a minute). Never false for
/// a line [`parse`] takes: its names are ASCII, and one of them is one of
/// those two.
fn may_be_metrics(line: &[u8]) -> bool {
    if memchr::memchr2(b'=', b':', line).is_none() {
        return false;
    }
    memchr::memchr2_iter(b'p', b'P', line).any(|at| {
        let epoch = at >= 1
            && line[at - 1].eq_ignore_ascii_case(&b'e')
            && line
                .get(at + 1..at + 4)
                .is_some_and(|och| och.eq_ignore_ascii_case(b"och"));
        let step = at >= 3 && line[at - 3..at].eq_ignore_ascii_case(b"ste");
        epoch || step
    })
}

/// Appends up to `want` more bytes of `file` to `buf`; how many it got.
fn read_more(file: &mut File, want: u64, buf: &mut Vec<u8>) -> io::Result<u64> {
    Ok(file.take(want).read_to_end(buf)? as u64)
}

/// The step and epoch of a metrics line, with its other pairs put in
/// `pairs`; `None` if it has neither.
fn parse<'a>(text: &'a str, pairs: &mut Vec<(&'a str, f64)>) -> Option<(Option<u64>, Option<u64>)> {
    let tokens: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .map(|t| t.trim_matches(WRAPPERS))
        .filter(|t| !t.is_empty())
        .collect();
    let mut step = None;
    let mut epoch = None;
    let mut i = 0;
    while i < tokens.len() {
        let Some((name, value, used)) = pair(&tokens[i..]) else {
            i += 1;
            continue;
        };
        i += used;
        if name.eq_ignore_ascii_case("epoch") {
            epoch = epoch.or(whole(value));
        } else if name.eq_ignore_ascii_case("step") {
            step = step.or(whole(value));
        } else if let Some(v) = number(value) {
            pairs.push((name, v));
        }
    }
    (step.is_some() || epoch.is_some()).then_some((step, epoch))
}

/// Characters that wrap a token rather than belong to it: quotes of a
/// printed dict, brackets, the bars of a table.
const WRAPPERS: &[char] = &['\'', '"', '`', '{', '}', '[', ']', '(', ')', '|', ';'];

/// A pair at the start of `tokens`: `name=value`, `name:value`, `name= value`,
/// `name: value` or `name = value`; with how many tokens it took.
fn pair<'a>(tokens: &[&'a str]) -> Option<(&'a str, &'a str, usize)> {
    let token = tokens[0];
    let (name, value, used) = match token.find(['=', ':']) {
        Some(at) => {
            let name = token[..at].trim_matches(WRAPPERS);
            let rest = token[at + 1..].trim_matches(WRAPPERS);
            if rest.is_empty() {
                (name, *tokens.get(1)?, 2)
            } else {
                (name, rest, 1)
            }
        }
        None if matches!(tokens.get(1), Some(&"=" | &":")) => (token, *tokens.get(2)?, 3),
        None => return None,
    };
    let mut chars = name.chars();
    let starts = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let named = starts && chars.all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c));
    // A value that is no number is left for the next pair to start from.
    (named && (number(value).is_some() || whole(value).is_some())).then_some((name, value, used))
}

/// A value: a float in any of Python's spellings, or a printed tensor.
fn number(text: &str) -> Option<f64> {
    let text = text.strip_prefix("tensor(").unwrap_or(text);
    text.parse().ok()
}

/// An epoch or step: a whole number, or the `3` of `3/10`.
fn whole(text: &str) -> Option<u64> {
    let text = text.split_once('/').map_or(text, |(n, _)| n);
    text.parse().ok()
}

/// Copies `raw` into `out` without its ANSI escape sequences.
fn strip_ansi(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut bytes = raw.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if b != 0x1b {
            out.push(b);
            continue;
        }
        match bytes.next() {
            // CSI: parameters, then one final byte in @..~.
            Some(b'[') => {
                for b in bytes.by_ref() {
                    if (0x40..=0x7e).contains(&b) {
                        break;
                    }
                }
            }
            // OSC (titles, links): up to BEL or ESC \.
            Some(b']') => {
                while let Some(b) = bytes.next() {
                    if b == 0x07 || (b == 0x1b && bytes.next_if_eq(&b'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Step, epoch and metrics.
    type Parsed = (Option<u64>, Option<u64>, Vec<(String, f64)>);

    fn metrics(line: &str) -> Option<Parsed> {
        parse_line(line).map(|l| (l.step, l.epoch, l.metrics))
    }

    fn m(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn the_usual_formats() {
        assert_eq!(
            metrics("epoch=3 val_loss=0.2134 val_acc=0.91"),
            Some((None, Some(3), m(&[("val_loss", 0.2134), ("val_acc", 0.91)])))
        );
        assert_eq!(
            metrics("epoch: 3, val_loss: 0.2134"),
            Some((None, Some(3), m(&[("val_loss", 0.2134)])))
        );
        assert_eq!(
            metrics("step=1200 train_loss=0.31"),
            Some((Some(1200), None, m(&[("train_loss", 0.31)])))
        );
        assert_eq!(
            metrics("Epoch: 3/10 | Step: 40 | loss: 1e-3 | lr = 5E-4 | acc:0.5"),
            Some((Some(40), Some(3), m(&[("loss", 0.001), ("lr", 0.0005), ("acc", 0.5)])))
        );
        // A printed dict, and a printed tensor.
        assert_eq!(
            metrics("{'epoch': 2, 'loss': 0.5, 'val/acc': 0.75}"),
            Some((None, Some(2), m(&[("loss", 0.5), ("val/acc", 0.75)])))
        );
        assert_eq!(
            metrics("epoch=1 loss=tensor(0.6875, grad_fn=<NllLossBackward0>)"),
            Some((None, Some(1), m(&[("loss", 0.6875)])))
        );
        assert_eq!(metrics("EPOCH=4"), Some((None, Some(4), vec![])));
    }

    #[test]
    fn nan_and_inf_are_counted_and_left_out() {
        let l = parse_line("epoch=1 loss=nan val_loss=inf acc=-Infinity x=0.5").unwrap();
        assert_eq!((l.metrics, l.non_finite), (m(&[("x", 0.5)]), 3));
    }

    #[test]
    fn junk_is_not_a_metrics_line() {
        for line in [
            "",
            "Epoch 3/10",
            "loss=0.5 acc=0.9",
            "epoch=three loss=0.5",
            "epoch=0.5 loss=0.5",
            "Restoring states from the checkpoint path at epoch=3-step=1200.ckpt",
            "Epoch 3, global step 1200: 'val_loss' reached 0.21340 (best 0.21340)",
            "12:30:01 step done",
            "`Trainer.fit` stopped: `max_epochs=10` reached.",
            // Lightning's own progress bar.
            "Epoch 3: 100%|##########| 10/10 [00:01<00:00, 8.5it/s, v_num=0, train_loss=0.3]",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn the_quick_look_passes_over_what_is_no_metrics_line() {
        for line in ["", "hello", "loss=0.5", "Epoch 3/10", "step 3", "st\x1b[0mep=1"] {
            assert!(!may_be_metrics(line.as_bytes()), "{line:?}");
        }
        for line in ["epoch=1", "STEP: 2", "x=1 Epoch", "a:b step"] {
            assert!(may_be_metrics(line.as_bytes()), "{line:?}");
        }
    }

    /// Pieces of a line, as bytes: colour codes whole, cut short or lone;
    /// bytes that are no UTF-8; separators, numbers, words and junk.
    fn piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            prop::sample::select(vec![
                &b"="[..],
                b": ",
                b" ",
                b",",
                b"|",
                b"\x1b[1m",
                b"\x1b]8;;x\x07",
                b"\x1b",
                b"\x1b[",
                b"\xff\xfe",
                b"\xe2\x80",
            ])
            .prop_map(<[u8]>::to_vec),
            "[0-9]{1,3}(/[0-9])?".prop_map(String::into_bytes),
            "[a-zA-Z_]{1,6}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..4),
        ]
    }

    /// `epoch` or `step` in any case, sometimes cut by a colour code.
    fn name() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        (
            prop::sample::select(vec!["epoch", "step"]),
            prop::collection::vec(any::<bool>(), 5),
            prop::option::of(0usize..5),
        )
            .prop_map(|(name, upper, cut)| {
                let mut bytes: Vec<u8> = name
                    .bytes()
                    .zip(upper)
                    .map(|(b, up)| if up { b.to_ascii_uppercase() } else { b })
                    .collect();
                if let Some(at) = cut {
                    let at = at.min(bytes.len());
                    bytes.splice(at..at, b"\x1b[0m".iter().copied());
                }
                bytes
            })
    }

    proptest::proptest! {
        /// The quick look never passes over a line the parser takes: for
        /// any bytes, what the line reads as (colour codes dropped, UTF-8
        /// made whole) parses only if the reader counts the line.
        #[test]
        fn the_quick_look_never_drops_a_metrics_line(
            before in proptest::collection::vec(piece(), 0..5),
            name in name(),
            sep in proptest::sample::select(vec!["=", ":", ": ", " = ", " :"]),
            pair in proptest::collection::vec(piece(), 0..3),
            after in proptest::collection::vec(piece(), 0..5),
        ) {
            let mut line = before.concat();
            line.extend(name);
            line.extend(sep.bytes());
            line.extend(pair.concat());
            line.extend(b"3 ");
            line.extend(after.concat());
            line.retain(|&b| b != b'\n' && b != b'\r');
            let mut clean = Vec::new();
            strip_ansi(&line, &mut clean);
            let parses = parse(&String::from_utf8_lossy(&clean), &mut Vec::new()).is_some();
            let mut batch = Batch::default();
            StdoutReader::new().line(&line, &mut clean, &mut batch);
            proptest::prop_assert_eq!(batch.lines, u64::from(parses), "{:?}", String::from_utf8_lossy(&line));
        }
    }

    #[test]
    fn colours_and_carriage_returns_are_read_as_a_terminal_shows_them() {
        assert_eq!(
            metrics("\x1b[1;32mepoch\x1b[0m=2 \x1b]8;;http://x\x07loss\x1b]8;;\x1b\\=0.5"),
            Some((None, Some(2), m(&[("loss", 0.5)])))
        );
        assert_eq!(
            metrics("epoch=1 loss=0.9\r 50%|###  |\repoch=2 loss=0.5"),
            Some((None, Some(2), m(&[("loss", 0.5)])))
        );
        assert_eq!(metrics("epoch=1 loss=0.9\r 50%|###  |"), None);
    }

    fn points(b: &Batch) -> Vec<(&str, Option<u64>, Option<u64>, f64)> {
        b.points.iter().map(|p| (&*p.tag, p.step, p.epoch, p.value)).collect()
    }

    fn append(path: &Path, bytes: &[u8]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    #[test]
    fn reads_a_plain_loop_under_tqdm() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics/plain_loop.stdout");
        let b = read_all(&path).unwrap();
        assert_eq!(
            points(&b),
            [
                ("train_loss", None, Some(0), 1.0),
                ("val_loss", None, Some(0), 1.5),
                ("train_loss", None, Some(1), 0.75),
                ("val_loss", None, Some(1), 1.25),
                ("train_loss", None, Some(2), 0.5),
                ("val_loss", None, Some(2), 1.0),
                ("val_loss", Some(120), None, 0.875),
            ]
        );
        assert_eq!((b.lines, b.skipped, b.partial), (4, 0, false));
        assert!(Arc::ptr_eq(&b.points[1].tag, &b.points[3].tag));
    }

    #[test]
    fn only_complete_lines_while_live() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut r = StdoutReader::new();
        assert_eq!(r.read_new(&path, true).unwrap(), Batch::default());
        append(&path, b"starting\nepoch=0 loss=1.0\nepoch=1 lo");
        let b = r.read_new(&path, true).unwrap();
        assert_eq!((points(&b), b.partial), (vec![("loss", None, Some(0), 1.0)], true));
        append(&path, b"ss=0.5\r");
        // A `\r` at the end may be half of `\r\n`.
        assert_eq!(
            r.read_new(&path, true).unwrap(),
            Batch {
                partial: true,
                ..Batch::default()
            }
        );
        append(&path, b"\nepoch=2 loss=0.25");
        let b = r.read_new(&path, true).unwrap();
        assert_eq!((points(&b), b.partial), (vec![("loss", None, Some(1), 0.5)], true));
        // The job ended: its unterminated last line counts.
        let b = r.read_new(&path, false).unwrap();
        assert_eq!((points(&b), b.partial), (vec![("loss", None, Some(2), 0.25)], true));
        assert_eq!(r.read_new(&path, false).unwrap(), Batch::default());
    }

    #[test]
    fn a_progress_bar_redrawn_for_long_is_not_held_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut r = StdoutReader::new();
        // 3 MiB of bar redraws without a newline, then the epoch's line.
        let bar = format!("\r{}", "#".repeat(99));
        append(&path, bar.repeat(3 << 20 >> 7).as_bytes());
        let b = r.read_new(&path, true).unwrap();
        assert_eq!((b.points.len(), b.skipped, b.partial), (0, 0, true));
        assert!(r.tail.offset() > 3 << 20 >> 1, "redrawn bars are consumed");
        append(&path, b"\repoch=1 loss=0.5\n");
        assert_eq!(
            points(&r.read_new(&path, true).unwrap()),
            [("loss", None, Some(1), 0.5)]
        );
    }

    #[test]
    fn an_over_long_line_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut r = StdoutReader::new();
        append(&path, format!("epoch=0 {}", "x".repeat(CHUNK + 10)).as_bytes());
        let b = r.read_new(&path, true).unwrap();
        assert_eq!((b.points.len(), b.skipped, b.partial), (0, 1, true));
        append(&path, b" loss=1\nepoch=1 loss=0.5\n");
        let b = r.read_new(&path, true).unwrap();
        assert_eq!(
            (points(&b), b.skipped, b.partial),
            (vec![("loss", None, Some(1), 0.5)], 0, false)
        );
    }
}
