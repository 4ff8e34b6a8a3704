//! Reading what trainers write to `metrics.jsonl`, one line at a time,
//! tolerating what a killed job leaves behind (partial or garbage lines,
//! Python's `NaN`), which is skipped, counted and described, never fatal.
//!
//! The submodules read what unmodified training code writes instead, each
//! incrementally (a reader remembers where it stopped, so polling a running
//! job costs only what was appended): TensorBoard event files
//! ([`tfevents`]), Lightning's `CSVLogger` file ([`csvlog`]) and
//! `name=value` lines on stdout ([`stdout`]). They keep metric names as
//! written (`train_loss_step` and `train_loss_epoch` are two tags); giving
//! suffixes a meaning is the caller's business.

pub mod csvlog;
pub mod stdout;
mod tail;
pub mod tfevents;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::borrow::Cow;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

/// How many skipped lines a [`Scan`] describes; the rest are only counted.
pub const BAD_EXAMPLES: usize = 5;

/// One value of one metric where training was at the time, as the CSV and
/// stdout readers give it; a TensorBoard [`tfevents::Scalar`] converts into
/// one. A source may know the step, the epoch, or both.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Shared by all the points of a tag, which a reader names once.
    pub tag: Arc<str>,
    pub step: Option<u64>,
    pub epoch: Option<u64>,
    pub value: f64,
}

/// A well-formed line (docs/trainer-protocol.md), borrowed from the read buffer so that a
/// night of lines costs no allocation per metric name.
#[derive(Debug, Deserialize)]
pub struct Record<'a> {
    pub epoch: u64,
    #[serde(default)]
    pub step: Option<u64>,
    #[serde(borrow)]
    pub metrics: Metrics<'a>,
}

/// A line's `metrics` object; values that are not numbers read as `None`.
#[derive(Debug, Default)]
pub struct Metrics<'a>(pub Vec<(Cow<'a, str>, Option<f64>)>);

impl Metrics<'_> {
    /// The finite value of `name`, if the line has one.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| *v)
            .filter(|v| v.is_finite())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Metrics<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Metrics<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of metrics")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(Key(k)) = map.next_key()? {
                    let Num(v) = map.next_value()?;
                    out.push((k, v));
                }
                Ok(Metrics(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A metric name, borrowed unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a metric name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A metric value: a number, or anything else (a string, null, a list),
/// which a trainer may log beside its numbers and the report ignores.
struct Num(Option<f64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a metric value")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num(Some(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(Some(v as f64)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(Some(v as f64)))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Num, E> {
                Ok(Num(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Num, E> {
                Ok(Num(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Num, E> {
                Ok(Num(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Num, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Num(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Num, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Num(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A skipped line, described for the report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BadLine {
    /// 1-based.
    pub line: u64,
    pub reason: String,
    /// The start of the line, lossily decoded.
    pub text: String,
}

/// What one pass over a metrics file found besides its records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scan {
    /// The file exists.
    pub found: bool,
    /// Well-formed lines.
    pub lines: u64,
    /// Lines that were not valid metrics (counted, never fatal).
    pub bad_lines: u64,
    /// The first [`BAD_EXAMPLES`] of them.
    pub bad: Vec<BadLine>,
}

/// Streams `path`, calling `each` with every well-formed line (and its raw
/// bytes). A missing file is an empty scan. With `live` (the job still runs)
/// an unterminated last line is a write in progress, not a bad line.
pub fn scan(path: &Path, live: bool, mut each: impl FnMut(&Record<'_>, &[u8])) -> Scan {
    let mut scan = Scan::default();
    let Ok(file) = std::fs::File::open(path) else {
        return scan;
    };
    scan.found = true;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut buf = Vec::with_capacity(256);
    let mut number = 0u64;
    loop {
        buf.clear();
        number += 1;
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                scan.bad(number, format!("unreadable: {e}"), b"");
                break;
            }
        }
        let terminated = buf.last() == Some(&b'\n');
        let bytes = buf.trim_ascii();
        if bytes.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(bytes) {
            Ok(record) => {
                scan.lines += 1;
                each(&record, bytes);
            }
            Err(_) if !terminated && live => {}
            Err(e) => {
                let reason = if !terminated {
                    "truncated last line (the job was killed mid-write)".to_string()
                } else if non_finite(bytes) {
                    "NaN or Infinity, which JSON has no number for".to_string()
                } else if e.is_data() {
                    // serde's own words: "missing field `epoch`", "invalid type …"
                    strip_position(&e.to_string())
                } else {
                    "not JSON".to_string()
                };
                scan.bad(number, reason, bytes);
            }
        }
    }
    scan
}

impl Scan {
    fn bad(&mut self, line: u64, reason: String, bytes: &[u8]) {
        self.bad_lines += 1;
        if self.bad.len() < BAD_EXAMPLES {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
            self.bad.push(BadLine { line, reason, text });
        }
    }
}

fn non_finite(bytes: &[u8]) -> bool {
    [&b"NaN"[..], b"Infinity"]
        .iter()
        .any(|w| bytes.windows(w.len()).any(|x| x == *w))
}

/// "missing field `epoch` at line 1 column 30" → "missing field `epoch`".
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The latest epoch and the best value of the monitored metric.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub last_epoch: Option<u64>,
    /// Value and epoch.
    pub best: Option<(f64, u64)>,
    pub latest: Option<f64>,
    /// Lines that were not valid metrics (counted, never fatal).
    pub bad_lines: usize,
}

/// Streams `path`; a missing file is no progress yet.
pub fn progress(path: &Path, monitor: &str, maximize: bool) -> Progress {
    let mut p = Progress::default();
    let scan = scan(path, true, |line, _| {
        p.last_epoch = Some(p.last_epoch.map_or(line.epoch, |e| e.max(line.epoch)));
        if let Some(v) = line.metrics.get(monitor) {
            p.latest = Some(v);
            if p.best.is_none_or(|(b, _)| better(v, b, maximize)) {
                p.best = Some((v, line.epoch));
            }
        }
    });
    p.bad_lines = scan.bad_lines as usize;
    p
}

/// `v` beats `best` (a tie does not: the earlier epoch stays the best).
pub fn better(v: f64, best: f64, maximize: bool) -> bool {
    if maximize { v > best } else { v < best }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &str = concat!(
        "{\"epoch\": 1, \"metrics\": {\"val_loss\": 0.5}}\n",
        "garbage\n",
        "{\"epoch\": 2, \"metrics\": {\"val_loss\": 0.3, \"note\": \"x\", \"lr\": [1]}}\n",
        "{\"epoch\": 3, \"metrics\": {\"val_loss\": NaN}}\n",
        "\n",
        "{\"epoch\": 4, \"metrics\": {\"val_loss\": 0.4}}\n",
        "{\"metrics\": {\"val_loss\": 0.1}}\n",
        "{\"epoch\": 5, \"metr"
    );

    #[test]
    fn skips_and_counts_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, MIXED).unwrap();
        // progress() reads a live file: the unterminated tail is not counted.
        let p = progress(&path, "val_loss", false);
        assert_eq!(p.last_epoch, Some(4));
        assert_eq!(p.best, Some((0.3, 2)));
        assert_eq!(p.latest, Some(0.4));
        assert_eq!(p.bad_lines, 3);
        assert_eq!(progress(&path, "val_loss", true).best, Some((0.5, 1)));
    }

    #[test]
    fn a_finished_file_names_each_bad_line_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, MIXED).unwrap();
        let mut epochs = Vec::new();
        let s = scan(&path, false, |r, _| epochs.push(r.epoch));
        assert_eq!(epochs, [1, 2, 4]);
        assert_eq!((s.lines, s.bad_lines), (3, 4));
        let described: Vec<(u64, &str)> = s.bad.iter().map(|b| (b.line, b.reason.as_str())).collect();
        assert_eq!(
            described,
            [
                (2, "not JSON"),
                (4, "NaN or Infinity, which JSON has no number for"),
                (7, "missing field `epoch`"),
                (8, "truncated last line (the job was killed mid-write)"),
            ]
        );
        assert_eq!(s.bad[3].text, "{\"epoch\": 5, \"metr");
    }

    #[test]
    fn non_numbers_read_as_absent_and_escaped_names_still_match() {
        let r: Record = serde_json::from_str(r#"{"epoch":0,"metrics":{"a":"x","v\u0061l":2,"c":null}}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.metrics.get("a"), None);
        assert_eq!(r.metrics.get("val"), Some(2.0));
        assert_eq!(r.metrics.get("c"), None);
    }

    #[test]
    fn a_missing_file_is_an_empty_scan() {
        let s = scan(Path::new("/nonexistent/metrics.jsonl"), false, |_, _| {
            panic!("no lines")
        });
        assert_eq!(s, Scan::default());
    }
}
