//! tb's own metrics file, `metrics.jsonl` (docs/trainer-protocol.md): one
//! JSON object a line, read one line at a time, tolerating what a killed
//! job leaves behind (partial or garbage lines, Python's `NaN`), which is
//! skipped, counted and described, never fatal.

use super::Point;
use super::tail::Tail;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

/// How many skipped lines a [`Scan`] describes; the rest are only counted.
pub const BAD_EXAMPLES: usize = 5;

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

/// What one read of `metrics.jsonl` found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// One point per numeric metric of each well-formed line, in file order.
    pub points: Vec<Point>,
    /// Well-formed lines.
    pub lines: u64,
    /// Lines that were not valid metrics (counted, never fatal).
    pub skipped: u64,
    /// The first [`BAD_EXAMPLES`] of them (of this read).
    pub bad: Vec<BadLine>,
    /// Values that were not finite numbers, left out.
    pub non_finite: u64,
    /// The file is not the one read before: its points are all here again.
    pub restarted: bool,
}

/// Reads `metrics.jsonl` as it grows: each [`read_new`](Self::read_new)
/// returns the lines completed since the last one.
#[derive(Debug, Default)]
pub struct JsonlReader {
    tail: Tail,
    /// Lines consumed, for the numbers in [`BadLine`].
    line: u64,
    examples: usize,
    names: HashSet<Arc<str>>,
}

impl JsonlReader {
    /// The byte offset up to which the file has been consumed.
    pub fn offset(&self) -> u64 {
        self.tail.offset()
    }

    /// Bytes read so far (see [`super::tail::Tail::bytes_read`]).
    pub fn bytes_read(&self) -> u64 {
        self.tail.bytes_read()
    }

    pub fn new() -> JsonlReader {
        JsonlReader::default()
    }

    /// Reads the lines completed since the last call. With `live` (the job
    /// still runs) an unterminated last line is a write in progress, left
    /// for the next read; without, it is a truncated line, counted.
    pub fn read_new(&mut self, path: &Path, live: bool) -> io::Result<Batch> {
        let opened = self.tail.open(path)?;
        let mut batch = Batch {
            restarted: opened.restarted,
            ..Batch::default()
        };
        if opened.restarted {
            self.line = 0;
            self.examples = 0;
        }
        let Some(mut file) = opened.file else {
            return Ok(batch);
        };
        let start = self.tail.offset();
        if start >= opened.len {
            return Ok(batch);
        }
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((opened.len - start).min(1 << 20) as usize);
        file.take(opened.len - start).read_to_end(&mut buf)?;
        let mut pos = 0;
        while pos < buf.len() {
            let (line, next, terminated) = match buf[pos..].iter().position(|&b| b == b'\n') {
                Some(n) => (&buf[pos..pos + n], pos + n + 1, true),
                None => (&buf[pos..], buf.len(), false),
            };
            if !terminated && live {
                break;
            }
            self.line += 1;
            self.parse(line, terminated, &mut batch);
            pos = next;
        }
        self.tail.advance_to(start + pos as u64);
        Ok(batch)
    }

    fn parse(&mut self, line: &[u8], terminated: bool, batch: &mut Batch) {
        let bytes = line.trim_ascii();
        if bytes.is_empty() {
            return;
        }
        let e = match serde_json::from_slice::<Record>(bytes) {
            Ok(record) => return self.take(&record, batch),
            Err(e) => e,
        };
        // Python's `json.dumps` writes a diverged loss as `NaN`, which JSON
        // has no number for: read the line with those values marked.
        if terminated && non_finite(bytes) {
            let marked = mark_non_finite(bytes);
            if let Ok(record) = serde_json::from_slice::<Record>(&marked) {
                return self.take(&record, batch);
            }
        }
        let reason = if !terminated {
            "truncated last line (the job was killed mid-write)".to_string()
        } else if e.is_data() {
            // serde's own words: "missing field `epoch`", "invalid type …"
            strip_position(&e.to_string())
        } else {
            "not JSON".to_string()
        };
        batch.skipped += 1;
        if self.examples < BAD_EXAMPLES {
            self.examples += 1;
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
            batch.bad.push(BadLine {
                line: self.line,
                reason,
                text,
            });
        }
    }

    /// A well-formed line's points; a value that is not finite (or was
    /// marked so) is counted, and passed on: a diverged value is news for
    /// pruning.
    fn take(&mut self, record: &Record, batch: &mut Batch) {
        batch.lines += 1;
        for (name, value) in &record.metrics.0 {
            let Some(mut v) = *value else { continue };
            if v == NON_FINITE {
                v = f64::NAN;
            }
            if !v.is_finite() {
                batch.non_finite += 1;
            }
            let tag = match self.names.get(name.as_ref()) {
                Some(t) => t.clone(),
                None => {
                    let t: Arc<str> = Arc::from(name.as_ref());
                    self.names.insert(t.clone());
                    t
                }
            };
            batch.points.push(Point {
                tag,
                step: record.step,
                epoch: Some(record.epoch),
                value: v,
            });
        }
    }
}

/// What `NaN`, `Infinity` and `-Infinity` are read as: a number no metric
/// is (the largest finite double), turned back into NaN.
const NON_FINITE: f64 = f64::MAX;

/// `bytes` with every `NaN`, `Infinity` and `-Infinity` outside a string
/// replaced by [`NON_FINITE`].
fn mark_non_finite(bytes: &[u8]) -> Vec<u8> {
    let mark = format!("{NON_FINITE:e}");
    let mut out = Vec::with_capacity(bytes.len() + 32);
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            out.push(b);
            match b {
                b'\\' if i + 1 < bytes.len() => {
                    out.push(bytes[i + 1]);
                    i += 1;
                }
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        let token = [&b"-Infinity"[..], b"Infinity", b"NaN"]
            .into_iter()
            .find(|t| bytes[i..].starts_with(t));
        match (b, token) {
            (b'"', _) => {
                in_string = true;
                out.push(b);
                i += 1;
            }
            (_, Some(t)) => {
                out.extend_from_slice(mark.as_bytes());
                i += t.len();
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &str = concat!(
        "{\"epoch\": 1, \"metrics\": {\"val_loss\": 0.5}}\n",
        "garbage\n",
        "{\"epoch\": 2, \"metrics\": {\"val_loss\": 0.3, \"note\": \"x\", \"lr\": [1]}}\n",
        "{\"epoch\": 3, \"metrics\": {\"val_loss\": NaN}}\n",
        "\n",
        "{\"epoch\": 4, \"step\": 40, \"metrics\": {\"val_loss\": 0.4}}\n",
        "{\"metrics\": {\"val_loss\": 0.1}}\n",
        "{\"epoch\": 5, \"metr"
    );

    fn values(b: &Batch) -> Vec<(Option<u64>, Option<u64>, f64)> {
        b.points.iter().map(|p| (p.epoch, p.step, p.value)).collect()
    }

    #[test]
    fn a_live_file_leaves_its_unfinished_line_for_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, MIXED).unwrap();
        let mut r = JsonlReader::new();
        let b = r.read_new(&path, true).unwrap();
        let v = values(&b);
        assert_eq!(v.len(), 4);
        assert_eq!(
            [v[0], v[1], v[3]],
            [(Some(1), None, 0.5), (Some(2), None, 0.3), (Some(4), Some(40), 0.4)]
        );
        assert!(
            v[2].2.is_nan() && v[2].0 == Some(3),
            "a NaN line is read, its value marked"
        );
        assert_eq!((b.lines, b.skipped, b.non_finite), (4, 2, 1));
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"ics\": {\"val_loss\": 0.2}}\n").unwrap();
        let b = r.read_new(&path, true).unwrap();
        assert_eq!(values(&b), [(Some(5), None, 0.2)], "only what was appended");
        assert!(r.read_new(&path, true).unwrap().points.is_empty());
    }

    #[test]
    fn a_finished_file_names_each_bad_line_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(&path, MIXED).unwrap();
        let b = JsonlReader::new().read_new(&path, false).unwrap();
        assert_eq!((b.lines, b.skipped), (4, 3));
        let described: Vec<(u64, &str)> = b.bad.iter().map(|b| (b.line, b.reason.as_str())).collect();
        assert_eq!(
            described,
            [
                (2, "not JSON"),
                (7, "missing field `epoch`"),
                (8, "truncated last line (the job was killed mid-write)"),
            ]
        );
        assert_eq!(b.bad[2].text, "{\"epoch\": 5, \"metr");
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
    fn a_missing_file_is_nothing_yet() {
        let b = JsonlReader::new()
            .read_new(Path::new("/nonexistent/metrics.jsonl"), false)
            .unwrap();
        assert_eq!(b, Batch::default());
    }

    #[test]
    fn nan_and_infinity_are_marked_outside_strings_only() {
        let line =
            br#"{"epoch": 2, "metrics": {"a": NaN, "b": -Infinity, "c": Infinity, "note\"NaN": "NaN", "d": 1.5}}"#;
        let marked = String::from_utf8(mark_non_finite(line)).unwrap();
        assert_eq!(marked.matches("1.7976931348623157e308").count(), 3, "{marked}");
        assert!(marked.contains(r#""note\"NaN": "NaN""#), "{marked}");
        let r: Record = serde_json::from_str(&marked).unwrap();
        assert_eq!(r.metrics.get("d"), Some(1.5));
    }
}
