//! Scalars from TensorBoard event files (`events.out.tfevents.*`), as
//! PyTorch's `SummaryWriter`, tensorboardX and Lightning's
//! `TensorBoardLogger` write them: TFRecord framing around `Event` protobufs.
//!
//! A record is a u64 little-endian length, the masked CRC-32C of those 8
//! bytes, the data, and the masked CRC-32C of the data. A killed writer
//! leaves a partial last record; a damaged file may have a bad record
//! anywhere. Neither is fatal: a record whose data fails its checksum is
//! skipped and counted, and a length that fails its checksum ends the file,
//! since nothing after it can be framed.
//!
//! The message types are a hand-written subset of TensorFlow's
//! `event.proto`, `summary.proto` and `tensor.proto` (field numbers as
//! there); prost skips every field left out, so images, histograms, graphs,
//! text and hparams decode to nothing.
//!
//! A report reads a thousand of these files of 20,000 scalars each, so the
//! file is read in large chunks that records and tags are sliced from
//! without copying, and each tag is decoded once per reader.

use super::Point;
use super::tail::Tail;
use bytes::Bytes;
use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

/// A record longer than this is not read into memory. Scalars are tens of
/// bytes; only a graph or a large image comes near it.
const MAX_RECORD: u64 = 64 << 20;
/// The length and its checksum.
const HEADER: u64 = 12;
/// The data's checksum.
const FOOTER: u64 = 4;
/// How much of the file one read takes in.
const CHUNK: usize = 1 << 20;

/// One scalar as the event file has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// Shared by all the scalars of a tag.
    pub tag: Arc<str>,
    pub step: i64,
    /// Seconds since the Unix epoch, when the writer logged it.
    pub wall_time: f64,
    pub value: f64,
}

impl From<Scalar> for Point {
    /// A negative step (which no PyTorch writer produces) becomes no step.
    fn from(s: Scalar) -> Point {
        Point {
            tag: s.tag,
            step: u64::try_from(s.step).ok(),
            epoch: None,
            value: s.value,
        }
    }
}

/// What one read of an event file found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The finite scalars of the records read, in file order.
    pub scalars: Vec<Scalar>,
    /// Records framed, checked and decoded, scalars or not.
    pub records: u64,
    /// Records skipped: data that failed its checksum or is not an `Event`,
    /// a record too long to read, a partial last record of a job that has
    /// ended, and the unframeable rest of a file (counted as one).
    pub skipped: u64,
    /// Scalars that were NaN or infinite, left out of `scalars`.
    pub non_finite: u64,
    /// The file ends in a partial record. While the job runs it is a write
    /// in progress, left for the next read; once it has ended it is counted
    /// in `skipped`.
    pub partial: bool,
    /// The byte offset of a length that failed its checksum: nothing from
    /// there on can be read, now or later.
    pub lost_at: Option<u64>,
    /// The file is not the one read before (replaced, or shorter than what
    /// was read): its scalars are all here again, and the caller should drop
    /// the ones it had.
    pub restarted: bool,
}

/// Reads an event file as it grows: each [`read_new`](Self::read_new)
/// returns what was appended since the last one.
#[derive(Debug, Default)]
pub struct TfEventsReader {
    tail: Tail,
    /// Set once framing is lost; stays set until the file is replaced.
    lost: bool,
    /// Every tag seen, and where in `tags` each one's bytes in the file are.
    tags: Vec<Tag>,
    tag_index: HashMap<Bytes, usize, BuildHasherDefault<WordHash>>,
    /// The tag looked up last.
    last_tag: Option<usize>,
    /// The values of the record read last, by the fast path: kept for
    /// their memory.
    fast_values: Vec<(usize, usize, f32)>,
    /// The event decoded last, reused: merging into its summary's `Vec` of
    /// values keeps that memory from one record to the next.
    event: proto::Event,
}

#[derive(Debug)]
struct Tag {
    name: Arc<str>,
    /// The plugin its tensors belong to. Writers may put the metadata on a
    /// tag's first value only, so it has to be remembered.
    plugin: Plugin,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Plugin {
    /// `scalars`, or none named.
    Scalars,
    /// Histograms, text, hparams, PR curves, ...: never a scalar.
    Other,
}

impl TfEventsReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// The byte offset up to which the file has been consumed.
    pub fn offset(&self) -> u64 {
        self.tail.offset()
    }

    /// Bytes read so far (see [`super::tail::Tail::bytes_read`]).
    pub fn bytes_read(&self) -> u64 {
        self.tail.bytes_read()
    }

    /// Reads the records appended since the last call. `live` says that the
    /// job still runs, so a partial last record is a write in progress. A
    /// missing file has nothing new (and, if one was read before, restarts).
    pub fn read_new(&mut self, path: &Path, live: bool) -> io::Result<Batch> {
        let opened = self.tail.open(path)?;
        let mut batch = Batch {
            restarted: opened.restarted,
            ..Batch::default()
        };
        if opened.restarted || opened.file.is_none() {
            self.lost = false;
            self.tags.clear();
            self.tag_index.clear();
            self.last_tag = None;
        }
        let Some(mut file) = opened.file else {
            return Ok(batch);
        };
        let len = opened.len;
        let mut pos = self.tail.offset();
        if self.lost || pos >= len {
            return Ok(batch);
        }
        file.seek(SeekFrom::Start(pos))?;
        let mut window = Window {
            file,
            unread: len - pos,
            chunk: Bytes::new(),
            at: 0,
        };
        // Some 50 bytes a scalar record: room for the scalars of a file of
        // nothing else, up to a bound for files that hold images.
        batch.scalars.reserve(((len - pos) / 48).min(1 << 16) as usize);
        while pos < len {
            if !window.fill(HEADER as usize)? {
                batch.partial = true;
                break;
            }
            let head = window.peek(HEADER as usize);
            let (length, length_crc) = head.split_at(8);
            if masked_crc(length) != u32::from_le_bytes(length_crc.try_into().expect("4 bytes")) {
                batch.lost_at = Some(pos);
                batch.skipped += 1;
                self.lost = true;
                pos = len;
                break;
            }
            let n = u64::from_le_bytes(length.try_into().expect("8 bytes"));
            // The length is genuine (its checksum holds), so even a huge one
            // says where the next record starts.
            let end = HEADER.saturating_add(n).saturating_add(FOOTER);
            if len - pos < end {
                batch.partial = true;
                break;
            }
            if n > MAX_RECORD {
                window.skip(end)?;
                batch.skipped += 1;
                pos += end;
                continue;
            }
            if !window.fill(end as usize)? {
                // The file was cut short while being read.
                batch.partial = true;
                break;
            }
            let (data, crc) = window.take(end as usize, HEADER as usize, n as usize);
            pos += end;
            if masked_crc(&data) != crc {
                batch.skipped += 1;
                continue;
            }
            if self.fast_scalars(&data, &mut batch) {
                batch.records += 1;
            } else if self.decode(data) {
                batch.records += 1;
                self.scalars(&mut batch);
            } else {
                batch.skipped += 1;
            }
        }
        if batch.partial && !live {
            batch.skipped += 1;
            pos = len;
        }
        self.tail.advance_to(pos);
        // The values' tags are slices of the last chunk: a reader kept
        // between reads must not keep that alive.
        if let Some(summary) = &mut self.event.summary {
            summary.value.clear();
        }
        Ok(batch)
    }

    /// The common record — an `Event` whose summary holds only
    /// `simple_value`s under plain tags, as every logger writes scalars —
    /// read without a general decoder: its scalars go to `batch`. Anything
    /// else (a tensor, metadata, another field) returns false, for
    /// [`decode`](Self::decode) to read in full.
    fn fast_scalars(&mut self, data: &[u8], batch: &mut Batch) -> bool {
        let mut values = std::mem::take(&mut self.fast_values);
        let Some((wall_time, step)) = fast::event(data, &mut values) else {
            self.fast_values = values;
            return false;
        };
        for &(from, to, value) in &values {
            let number = f64::from(value);
            // Counted, and passed on: a diverged value is news for pruning.
            if !number.is_finite() {
                batch.non_finite += 1;
            }
            let name = self.tag(&data[from..to]).name.clone();
            batch.scalars.push(Scalar {
                tag: name,
                step,
                wall_time,
                value: number,
            });
        }
        self.fast_values = values;
        true
    }

    /// Decodes one record into `event`; false if it is not an `Event`.
    fn decode(&mut self, data: Bytes) -> bool {
        use prost::Message;
        // Not `clear()`, which would drop the summary and its `Vec` of
        // values. A record without a summary leaves an empty one, which
        // holds no values.
        let event = &mut self.event;
        event.wall_time = 0.0;
        event.step = 0;
        if let Some(summary) = &mut event.summary {
            summary.value.clear();
        }
        event.merge(data).is_ok()
    }

    fn scalars(&mut self, batch: &mut Batch) {
        use proto::Kind;
        let (step, wall_time) = (self.event.step, self.event.wall_time);
        let Some(summary) = self.event.summary.take() else {
            return;
        };
        for value in &summary.value {
            let (name, number) = match &value.kind {
                Some(Kind::SimpleValue(v)) => (self.tag(&value.tag).name.clone(), f64::from(*v)),
                Some(Kind::Tensor(t)) => {
                    let tag = self.tag(&value.tag);
                    if let Some(name) = value.plugin_name() {
                        tag.plugin = if name.is_empty() || name == "scalars" {
                            Plugin::Scalars
                        } else {
                            Plugin::Other
                        };
                    }
                    match t.scalar() {
                        Some(v) if tag.plugin == Plugin::Scalars => (tag.name.clone(), v),
                        _ => continue,
                    }
                }
                None => continue,
            };
            // Counted, and passed on: a diverged value is news for pruning.
            if !number.is_finite() {
                batch.non_finite += 1;
            }
            batch.scalars.push(Scalar {
                tag: name,
                step,
                wall_time,
                value: number,
            });
        }
        self.event.summary = Some(summary);
    }

    /// The tag with these bytes, added the first time it is seen.
    fn tag(&mut self, bytes: &[u8]) -> &mut Tag {
        // Writers log one tag many times in a row (a step metric).
        if let Some(i) = self.last_tag
            && self.tags[i].name.as_bytes() == bytes
        {
            return &mut self.tags[i];
        }
        let i = match self.tag_index.get(bytes) {
            Some(&i) => i,
            None => {
                let name = String::from_utf8_lossy(bytes).into();
                self.tags.push(Tag {
                    name,
                    plugin: Plugin::Scalars,
                });
                // A copy, so as not to keep the chunk it was sliced from.
                self.tag_index
                    .insert(Bytes::copy_from_slice(bytes), self.tags.len() - 1);
                self.tags.len() - 1
            }
        };
        self.last_tag = Some(i);
        &mut self.tags[i]
    }
}

/// rustc's FxHash, a word at a time, for tags: short strings from the
/// job's own files, where SipHash's defence against chosen keys buys
/// nothing and cost a third of the read.
#[derive(Default)]
struct WordHash(u64);

impl WordHash {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for WordHash {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Reads a whole event file of a job that has ended.
pub fn read_all(path: &Path) -> io::Result<Batch> {
    TfEventsReader::new().read_new(path, false)
}

/// The part of the file being framed: a chunk read in, of which `at` is the
/// next byte, and how much of the file after the chunk is left to read.
struct Window {
    file: File,
    unread: u64,
    chunk: Bytes,
    at: usize,
}

impl Window {
    fn available(&self) -> usize {
        self.chunk.len() - self.at
    }

    /// Makes `need` bytes available, reading on into a new chunk that
    /// starts with the bytes not yet taken; false if the file does not have
    /// them.
    fn fill(&mut self, need: usize) -> io::Result<bool> {
        let have = self.available();
        if have >= need {
            return Ok(true);
        }
        if have as u64 + self.unread < need as u64 {
            return Ok(false);
        }
        let size = (need.max(CHUNK) as u64).min(have as u64 + self.unread) as usize;
        let mut next = Vec::with_capacity(size);
        next.extend_from_slice(&self.chunk[self.at..]);
        let want = (size - have) as u64;
        let got = (&mut self.file).take(want).read_to_end(&mut next)? as u64;
        // A short read means the file was cut short since it was opened.
        self.unread = if got == want { self.unread - want } else { 0 };
        self.chunk = Bytes::from(next);
        self.at = 0;
        Ok(self.chunk.len() >= need)
    }

    fn peek(&self, n: usize) -> &[u8] {
        &self.chunk[self.at..self.at + n]
    }

    /// Takes a whole record of `len` bytes: its `n` bytes of data after the
    /// `header`, and the checksum that ends it.
    fn take(&mut self, len: usize, header: usize, n: usize) -> (Bytes, u32) {
        let data = self.chunk.slice(self.at + header..self.at + header + n);
        let crc = &self.chunk[self.at + header + n..self.at + len];
        self.at += len;
        (data, u32::from_le_bytes(crc.try_into().expect("4 bytes")))
    }

    /// Passes over `n` bytes without reading them.
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let have = self.available() as u64;
        if n <= have {
            self.at += n as usize;
            return Ok(());
        }
        let beyond = n - have;
        self.file.seek(SeekFrom::Current(beyond as i64))?;
        self.unread = self.unread.saturating_sub(beyond);
        self.chunk = Bytes::new();
        self.at = 0;
        Ok(())
    }
}

/// TFRecord's checksum: CRC-32C, rotated and offset so that a checksum of
/// data that holds checksums is not itself trivially regular.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// CRC-32C of `data`. A record is a few dozen bytes: the crate's dispatch
/// costs more than the sum itself, so on x86-64 the CPU's own instruction
/// does it inline.
fn crc32c(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU has SSE 4.2, as checked just above.
            return unsafe { crc32c_sse42(data) };
        }
    }
    crc32c::crc32c(data)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_sse42(data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let mut crc: u64 = 0xffff_ffff;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        crc = _mm_crc32_u64(crc, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let mut crc = crc as u32;
    for &b in words.remainder() {
        crc = _mm_crc32_u8(crc, b);
    }
    !crc
}

/// A hand-written reader of the one shape of `Event` that makes up nearly
/// all of a scalar log (field numbers as in `event.proto` and
/// `summary.proto`): `wall_time` (1, double), `step` (2, varint), a
/// `summary` (5) of `value`s (1) that hold a `tag` (1, string) and a
/// `simple_value` (2, float). It gives up on anything else.
mod fast {
    /// Reads `data` into its wall time and step, and its values into
    /// `values` (as byte ranges of the tag in `data`); `None` if the event
    /// has another shape. A `file_version` event reads as one with no
    /// values.
    pub fn event(data: &[u8], values: &mut Vec<(usize, usize, f32)>) -> Option<(f64, i64)> {
        values.clear();
        let (mut wall_time, mut step) = (0.0, 0);
        let mut at = 0;
        while at < data.len() {
            let key = byte(data, &mut at)?;
            match key {
                0x09 => {
                    wall_time = f64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?);
                    at += 8;
                }
                0x10 => step = varint(data, &mut at)? as i64,
                // file_version (3): skipped.
                0x1a => {
                    let n = varint(data, &mut at)? as usize;
                    at = at.checked_add(n).filter(|&e| e <= data.len())?;
                }
                0x2a => {
                    let n = varint(data, &mut at)? as usize;
                    let end = at.checked_add(n).filter(|&e| e <= data.len())?;
                    summary(data, at, end, values)?;
                    at = end;
                }
                _ => return None,
            }
        }
        Some((wall_time, step))
    }

    fn summary(data: &[u8], mut at: usize, end: usize, values: &mut Vec<(usize, usize, f32)>) -> Option<()> {
        while at < end {
            if byte(data, &mut at)? != 0x0a {
                return None;
            }
            let n = varint(data, &mut at)? as usize;
            let value_end = at.checked_add(n).filter(|&e| e <= end)?;
            let (mut tag, mut number) = (None, None);
            while at < value_end {
                match byte(data, &mut at)? {
                    0x0a => {
                        let n = varint(data, &mut at)? as usize;
                        let tag_end = at.checked_add(n).filter(|&e| e <= value_end)?;
                        tag = Some((at, tag_end));
                        at = tag_end;
                    }
                    0x15 => {
                        number = Some(f32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?));
                        at += 4;
                    }
                    _ => return None,
                }
            }
            if at != value_end {
                return None;
            }
            let ((from, to), v) = (tag?, number?);
            values.push((from, to, v));
        }
        Some(())
    }

    fn byte(data: &[u8], at: &mut usize) -> Option<u8> {
        let b = *data.get(*at)?;
        *at += 1;
        Some(b)
    }

    /// A protobuf varint.
    pub(super) fn varint(data: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = byte(data, at)?;
            // The tenth byte holds the 64th bit only: more is not a u64.
            if shift == 63 && b > 1 {
                return None;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
}

/// The subset of TensorFlow's protos that holds scalars.
mod proto {
    use bytes::Bytes;

    /// `tensorflow.Event`. Of the `what` oneof only `summary` is kept:
    /// `file_version`, `graph_def`, `session_log` and the rest are skipped.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(double, tag = "1")]
        pub wall_time: f64,
        #[prost(int64, tag = "2")]
        pub step: i64,
        #[prost(message, optional, tag = "5")]
        pub summary: Option<Summary>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<Value>,
    }

    /// `Summary.Value`; of its `value` oneof, images (4), histograms (5),
    /// audio (6) and the obsolete histogram (3) are skipped.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        /// A `string` in the proto, kept as bytes: decoded from `Bytes`,
        /// that is a slice of the record, where a `String` would be an
        /// allocation per value.
        #[prost(bytes = "bytes", tag = "1")]
        pub tag: Bytes,
        #[prost(message, optional, tag = "9")]
        pub metadata: Option<Metadata>,
        #[prost(oneof = "Kind", tags = "2, 8")]
        pub kind: Option<Kind>,
    }

    impl Value {
        pub fn plugin_name(&self) -> Option<&str> {
            Some(self.metadata.as_ref()?.plugin_data.as_ref()?.plugin_name.as_str())
        }
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// What `add_scalar` writes by default.
        #[prost(float, tag = "2")]
        SimpleValue(f32),
        /// What `add_scalar(new_style=True)`, TF2's `tf.summary.scalar` and
        /// every other plugin write. Boxed: most values are simple.
        #[prost(message, boxed, tag = "8")]
        Tensor(Box<Tensor>),
    }

    /// `SummaryMetadata`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metadata {
        #[prost(message, optional, tag = "1")]
        pub plugin_data: Option<PluginData>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PluginData {
        #[prost(string, tag = "1")]
        pub plugin_name: String,
    }

    /// `TensorProto`, for floating-point types only.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        #[prost(int32, tag = "1")]
        pub dtype: i32,
        #[prost(message, optional, tag = "2")]
        pub tensor_shape: Option<Shape>,
        #[prost(bytes = "vec", tag = "4")]
        pub tensor_content: Vec<u8>,
        #[prost(float, repeated, tag = "5")]
        pub float_val: Vec<f32>,
        #[prost(double, repeated, tag = "6")]
        pub double_val: Vec<f64>,
        /// Half and bfloat16 values, as their bits.
        #[prost(int32, repeated, tag = "13")]
        pub half_val: Vec<i32>,
    }

    /// `TensorShapeProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Shape {
        #[prost(message, repeated, tag = "2")]
        pub dim: Vec<Dim>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        #[prost(int64, tag = "1")]
        pub size: i64,
    }

    // `DataType` values from `types.proto`.
    pub const DT_FLOAT: i32 = 1;
    pub const DT_DOUBLE: i32 = 2;
    pub const DT_BFLOAT16: i32 = 14;
    pub const DT_HALF: i32 = 19;

    impl Tensor {
        /// The value of a one-element floating-point tensor. TensorFlow
        /// lets one `*_val` element stand for a whole tensor of any shape,
        /// so the shape is what says there is one element.
        pub fn scalar(&self) -> Option<f64> {
            let one = self
                .tensor_shape
                .as_ref()
                .is_none_or(|s| s.dim.iter().all(|d| d.size == 1));
            if !one {
                return None;
            }
            let content = self.tensor_content.as_slice();
            match self.dtype {
                DT_FLOAT => single(&self.float_val)
                    .or_else(|| Some(f32::from_le_bytes(content.try_into().ok()?)))
                    .map(f64::from),
                DT_DOUBLE => single(&self.double_val).or_else(|| Some(f64::from_le_bytes(content.try_into().ok()?))),
                DT_HALF | DT_BFLOAT16 => {
                    let bits = single(&self.half_val)
                        .map(|b| b as u16)
                        .or_else(|| Some(u16::from_le_bytes(content.try_into().ok()?)))?;
                    Some(if self.dtype == DT_HALF {
                        half(bits)
                    } else {
                        f64::from(f32::from_bits(u32::from(bits) << 16))
                    })
                }
                _ => None,
            }
        }
    }

    fn single<T: Copy>(values: &[T]) -> Option<T> {
        match values {
            [v] => Some(*v),
            _ => None,
        }
    }

    /// IEEE 754 binary16.
    fn half(bits: u16) -> f64 {
        let sign = if bits & 0x8000 == 0 { 1.0 } else { -1.0 };
        let exponent = i32::from((bits >> 10) & 0x1f);
        let fraction = f64::from(bits & 0x3ff);
        sign * match exponent {
            0 => fraction * 2f64.powi(-24),
            31 if fraction == 0.0 => f64::INFINITY,
            31 => f64::NAN,
            e => (1.0 + fraction / 1024.0) * 2f64.powi(e - 15),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::proto::{self, Kind};
    use super::*;
    use prost::Message;

    /// Frames `data` as one TFRecord.
    pub(crate) fn frame(data: &[u8]) -> Vec<u8> {
        let len = (data.len() as u64).to_le_bytes();
        let mut out = Vec::with_capacity(data.len() + 16);
        out.extend_from_slice(&len);
        out.extend_from_slice(&masked_crc(&len).to_le_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(&masked_crc(data).to_le_bytes());
        out
    }

    /// The first record of every event file.
    #[derive(Clone, PartialEq, prost::Message)]
    struct VersionEvent {
        #[prost(double, tag = "1")]
        wall_time: f64,
        #[prost(string, tag = "3")]
        file_version: String,
    }

    /// A `Summary.Value` holding a histogram (field 5), which the reader's
    /// `Value` does not know.
    #[derive(Clone, PartialEq, prost::Message)]
    struct HistogramValue {
        #[prost(string, tag = "1")]
        tag: String,
        #[prost(bytes = "vec", tag = "5")]
        histo: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct HistogramSummary {
        #[prost(message, repeated, tag = "1")]
        value: Vec<HistogramValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct HistogramEvent {
        #[prost(double, tag = "1")]
        wall_time: f64,
        #[prost(int64, tag = "2")]
        step: i64,
        #[prost(message, optional, tag = "5")]
        summary: Option<HistogramSummary>,
    }

    pub(crate) fn version() -> Vec<u8> {
        frame(
            &VersionEvent {
                wall_time: 1.0,
                file_version: "brain.Event:2".into(),
            }
            .encode_to_vec(),
        )
    }

    fn value(tag: &str, kind: Kind) -> proto::Value {
        proto::Value {
            tag: Bytes::copy_from_slice(tag.as_bytes()),
            metadata: None,
            kind: Some(kind),
        }
    }

    fn event(step: i64, values: Vec<proto::Value>) -> Vec<u8> {
        let summary = Some(proto::Summary { value: values });
        frame(
            &proto::Event {
                wall_time: 1000.0 + step as f64,
                step,
                summary,
            }
            .encode_to_vec(),
        )
    }

    /// A record with one `add_scalar` value.
    pub(crate) fn scalar(tag: &str, step: i64, v: f32) -> Vec<u8> {
        event(step, vec![value(tag, Kind::SimpleValue(v))])
    }

    fn histogram(tag: &str, step: i64) -> Vec<u8> {
        let value = HistogramValue {
            tag: tag.into(),
            histo: vec![9, 0, 0, 0, 0, 0, 0, 240, 63],
        };
        let e = HistogramEvent {
            wall_time: 1.0,
            step,
            summary: Some(HistogramSummary { value: vec![value] }),
        };
        frame(&e.encode_to_vec())
    }

    fn tensor(dtype: i32, dims: &[i64]) -> proto::Tensor {
        proto::Tensor {
            dtype,
            tensor_shape: Some(proto::Shape {
                dim: dims.iter().map(|&size| proto::Dim { size }).collect(),
            }),
            ..Default::default()
        }
    }

    fn with_plugin(mut v: proto::Value, plugin: &str) -> proto::Value {
        let plugin_data = Some(proto::PluginData {
            plugin_name: plugin.into(),
        });
        v.metadata = Some(proto::Metadata { plugin_data });
        v
    }

    fn write(dir: &tempfile::TempDir, records: &[Vec<u8>]) -> std::path::PathBuf {
        let path = dir.path().join("events.out.tfevents.1.host");
        std::fs::write(&path, records.concat()).unwrap();
        path
    }

    fn tags_and_values(b: &Batch) -> Vec<(&str, i64, f64)> {
        b.scalars.iter().map(|s| (&*s.tag, s.step, s.value)).collect()
    }

    #[test]
    fn reads_scalars_and_skips_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let two = event(
            5,
            vec![value("a", Kind::SimpleValue(0.5)), value("b", Kind::SimpleValue(-2.0))],
        );
        let path = write(
            &dir,
            &[version(), scalar("loss", 0, 0.25), histogram("weights", 0), two],
        );
        let b = read_all(&path).unwrap();
        assert_eq!(tags_and_values(&b), [("loss", 0, 0.25), ("a", 5, 0.5), ("b", 5, -2.0)]);
        assert_eq!(b.scalars[1].wall_time, 1005.0);
        assert_eq!(
            (b.records, b.skipped, b.partial, b.lost_at, b.restarted),
            (4, 0, false, None, false)
        );
        let p = Point::from(b.scalars[0].clone());
        assert_eq!(
            p,
            Point {
                tag: "loss".into(),
                step: Some(0),
                epoch: None,
                value: 0.25
            }
        );
    }

    #[test]
    fn one_element_float_tensors_are_scalars() {
        let dir = tempfile::tempdir().unwrap();
        let f = proto::Tensor {
            float_val: vec![1.5],
            ..tensor(proto::DT_FLOAT, &[])
        };
        let d = proto::Tensor {
            double_val: vec![0.1],
            ..tensor(proto::DT_DOUBLE, &[1])
        };
        let fc = proto::Tensor {
            tensor_content: 2.5f32.to_le_bytes().to_vec(),
            ..tensor(proto::DT_FLOAT, &[1, 1])
        };
        let dc = proto::Tensor {
            tensor_content: 0.3f64.to_le_bytes().to_vec(),
            ..tensor(proto::DT_DOUBLE, &[])
        };
        // 0x3e00 is 1.5 in binary16; 0x3fc0 is 1.5 in bfloat16.
        let h = proto::Tensor {
            half_val: vec![0x3e00],
            ..tensor(proto::DT_HALF, &[])
        };
        let hc = proto::Tensor {
            tensor_content: 0xc000u16.to_le_bytes().to_vec(),
            ..tensor(proto::DT_HALF, &[])
        };
        let bf = proto::Tensor {
            half_val: vec![0x3fc0],
            ..tensor(proto::DT_BFLOAT16, &[])
        };
        // One `float_val` standing for three elements.
        let broadcast = proto::Tensor {
            float_val: vec![1.0],
            ..tensor(proto::DT_FLOAT, &[3])
        };
        let ints = proto::Tensor {
            tensor_content: vec![1, 0, 0, 0],
            ..tensor(3, &[])
        };
        let histo = proto::Tensor {
            double_val: vec![0.0, 1.0, 4.0],
            ..tensor(proto::DT_DOUBLE, &[1, 3])
        };
        let path = write(
            &dir,
            &[
                event(
                    1,
                    vec![
                        with_plugin(value("f", Kind::Tensor(Box::new(f))), "scalars"),
                        value("d", Kind::Tensor(Box::new(d))),
                    ],
                ),
                event(
                    2,
                    vec![
                        value("fc", Kind::Tensor(Box::new(fc))),
                        value("dc", Kind::Tensor(Box::new(dc))),
                    ],
                ),
                event(
                    3,
                    vec![
                        value("h", Kind::Tensor(Box::new(h.clone()))),
                        value("hc", Kind::Tensor(Box::new(hc))),
                    ],
                ),
                event(
                    4,
                    vec![
                        value("bf", Kind::Tensor(Box::new(bf))),
                        value("broadcast", Kind::Tensor(Box::new(broadcast))),
                    ],
                ),
                event(
                    5,
                    vec![
                        value("ints", Kind::Tensor(Box::new(ints))),
                        value("histo", Kind::Tensor(Box::new(histo))),
                    ],
                ),
                // A plugin's metadata on a tag's first value only: its later
                // values are still that plugin's, not scalars.
                event(
                    6,
                    vec![with_plugin(
                        value("custom", Kind::Tensor(Box::new(h.clone()))),
                        "my_plugin",
                    )],
                ),
                event(7, vec![value("custom", Kind::Tensor(Box::new(h)))]),
            ],
        );
        let b = read_all(&path).unwrap();
        assert_eq!(
            tags_and_values(&b),
            [
                ("f", 1, 1.5),
                ("d", 1, 0.1),
                ("fc", 2, 2.5),
                ("dc", 2, 0.3),
                ("h", 3, 1.5),
                ("hc", 3, -2.0),
                ("bf", 4, 1.5)
            ]
        );
        assert_eq!((b.records, b.skipped), (7, 0));
    }

    #[test]
    fn binary16_edge_values() {
        let v = |bits| {
            proto::Tensor {
                half_val: vec![bits],
                ..tensor(proto::DT_HALF, &[])
            }
            .scalar()
            .unwrap()
        };
        assert_eq!(v(0x0001), 2f64.powi(-24));
        assert_eq!(v(0x7bff), 65504.0);
        assert_eq!(v(0xfc00), f64::NEG_INFINITY);
        assert!(v(0x7e00).is_nan());
    }

    #[test]
    fn non_finite_values_are_counted_and_returned() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            &[
                scalar("a", 0, f32::NAN),
                scalar("a", 1, f32::INFINITY),
                scalar("a", 2, 1.0),
            ],
        );
        let b = read_all(&path).unwrap();
        let got: Vec<(u64, bool)> = b.scalars.iter().map(|s| (s.step as u64, s.value.is_finite())).collect();
        assert_eq!(got, [(0, false), (1, false), (2, true)]);
        assert_eq!((b.records, b.non_finite), (3, 2));
    }

    #[test]
    fn a_partial_last_record_waits_while_live_and_counts_once_ended() {
        let dir = tempfile::tempdir().unwrap();
        let last = scalar("loss", 2, 0.5);
        for cut in [1, 11, 12, 20, last.len() - 1] {
            let path = write(&dir, &[version(), scalar("loss", 1, 1.0), last[..cut].to_vec()]);
            let mut r = TfEventsReader::new();
            let b = r.read_new(&path, true).unwrap();
            assert_eq!(tags_and_values(&b), [("loss", 1, 1.0)], "cut at {cut}");
            assert_eq!((b.records, b.skipped, b.partial), (2, 0, true), "cut at {cut}");
            let consumed = r.offset();
            // Still mid-write: the same partial record, not consumed again.
            let b = r.read_new(&path, true).unwrap();
            assert_eq!((b.records, b.skipped, b.partial, r.offset()), (0, 0, true, consumed));
            let b = r.read_new(&path, false).unwrap();
            assert_eq!((b.records, b.skipped, b.partial, b.scalars.len()), (0, 1, true, 0));
            let b = r.read_new(&path, false).unwrap();
            assert_eq!((b.records, b.skipped, b.partial), (0, 0, false));
        }
    }

    #[test]
    fn a_partial_record_finished_later_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let last = scalar("loss", 2, 0.5);
        let path = write(&dir, &[version(), last[..7].to_vec()]);
        let mut r = TfEventsReader::new();
        assert!(r.read_new(&path, true).unwrap().partial);
        write(&dir, &[version(), last]);
        let b = r.read_new(&path, true).unwrap();
        assert_eq!(tags_and_values(&b), [("loss", 2, 0.5)]);
        assert!(!b.partial);
    }

    #[test]
    fn a_record_with_bad_data_is_skipped_and_the_rest_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = scalar("loss", 2, 0.5);
        let at = bad.len() - 6;
        bad[at] ^= 0xff;
        let not_an_event = frame(b"\xff\xff\xff");
        let path = write(
            &dir,
            &[
                version(),
                scalar("loss", 1, 1.0),
                bad,
                not_an_event,
                scalar("loss", 3, 0.25),
            ],
        );
        let b = read_all(&path).unwrap();
        assert_eq!(tags_and_values(&b), [("loss", 1, 1.0), ("loss", 3, 0.25)]);
        assert_eq!((b.records, b.skipped, b.lost_at), (3, 2, None));
    }

    #[test]
    fn a_length_with_a_bad_checksum_ends_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = scalar("loss", 2, 0.5);
        // A garbage length far beyond any file: it must not be allocated.
        bad[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        let head = [version(), scalar("loss", 1, 1.0)].concat();
        let path = write(&dir, &[head.clone(), bad, scalar("loss", 3, 0.25)]);
        let mut r = TfEventsReader::new();
        let b = r.read_new(&path, true).unwrap();
        assert_eq!(tags_and_values(&b), [("loss", 1, 1.0)]);
        assert_eq!(
            (b.records, b.skipped, b.lost_at, b.partial),
            (2, 1, Some(head.len() as u64), false)
        );
        // Nothing more comes of the file, however much it grows.
        std::fs::write(&path, [std::fs::read(&path).unwrap(), scalar("loss", 4, 0.1)].concat()).unwrap();
        assert_eq!(r.read_new(&path, true).unwrap(), Batch::default());
    }

    #[test]
    fn a_genuine_huge_length_is_never_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let len = (1u64 << 40).to_le_bytes();
        let huge = [&len[..], &masked_crc(&len).to_le_bytes(), b"some data"].concat();
        let path = write(&dir, &[version(), huge]);
        let b = TfEventsReader::new().read_new(&path, true).unwrap();
        assert_eq!((b.records, b.skipped, b.partial), (1, 0, true));
        let b = read_all(&path).unwrap();
        assert_eq!((b.records, b.skipped, b.partial), (1, 1, true));
    }

    #[test]
    fn empty_and_missing_files_have_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, &[]);
        assert_eq!(read_all(&path).unwrap(), Batch::default());
        assert_eq!(read_all(&dir.path().join("nope")).unwrap(), Batch::default());
    }

    #[test]
    fn a_growing_file_gives_only_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let mut records = vec![version(), scalar("loss", 0, 1.0)];
        let path = write(&dir, &records);
        let mut r = TfEventsReader::new();
        assert_eq!(tags_and_values(&r.read_new(&path, true).unwrap()), [("loss", 0, 1.0)]);
        assert_eq!(r.read_new(&path, true).unwrap(), Batch::default());
        records.extend([scalar("loss", 1, 0.5), scalar("val_loss", 1, 0.75)]);
        write(&dir, &records);
        let b = r.read_new(&path, true).unwrap();
        assert_eq!(tags_and_values(&b), [("loss", 1, 0.5), ("val_loss", 1, 0.75)]);
        assert_eq!((b.records, b.restarted), (2, false));
        // A new file under the old name: all of it again, flagged.
        let path = write(&dir, &[version(), scalar("other", 0, 2.0)]);
        let b = r.read_new(&path, true).unwrap();
        assert_eq!(tags_and_values(&b), [("other", 0, 2.0)]);
        assert!(b.restarted);
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/metrics")
            .join(name)
    }

    fn series(b: &Batch, tag: &str) -> Vec<(i64, f64)> {
        b.scalars
            .iter()
            .filter(|s| &*s.tag == tag)
            .map(|s| (s.step, s.value))
            .collect()
    }

    /// The records of a framed file, unchecked.
    fn records_of(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 12 <= bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            let start = at + 12;
            if start + len + 4 > bytes.len() {
                break;
            }
            out.push(bytes[start..start + len].to_vec());
            at = start + len + 4;
        }
        out
    }

    #[test]
    fn the_fast_path_reads_what_the_protobuf_decoder_reads() {
        // Every record of the two real files and of hand-made ones: where
        // the hand-written fast path takes a record, prost must read the
        // same scalars (tag, step, wall time, value) from it.
        let mut records = Vec::new();
        for name in ["summary_writer.tfevents", "lightning.tfevents"] {
            records.extend(records_of(&std::fs::read(fixture(name)).unwrap()));
        }
        for made in [
            scalar("val_loss", 3, 0.25),
            scalar("a/b c", i64::MAX, -1.5e-30),
            scalar("nan", 0, f32::NAN),
            scalar("inf", -4, f32::INFINITY),
            event(
                9,
                vec![value("x", Kind::SimpleValue(1.0)), value("y", Kind::SimpleValue(2.0))],
            ),
            event(1, vec![]),
            version(),
            histogram("h", 2),
        ] {
            records.extend(records_of(&made));
        }
        let (mut taken, mut left) = (0, 0);
        for data in &records {
            let mut fast = Batch::default();
            if !TfEventsReader::new().fast_scalars(data, &mut fast) {
                left += 1;
                continue;
            }
            taken += 1;
            let mut full = Batch::default();
            let mut reader = TfEventsReader::new();
            assert!(
                reader.decode(Bytes::copy_from_slice(data)),
                "prost refuses a record the fast path took"
            );
            reader.scalars(&mut full);
            let shown = |b: &Batch| -> Vec<(String, i64, u64, u64)> {
                b.scalars
                    .iter()
                    .map(|s| (s.tag.to_string(), s.step, s.wall_time.to_bits(), s.value.to_bits()))
                    .collect()
            };
            assert_eq!(shown(&fast), shown(&full), "record {data:?}");
            assert_eq!(fast.non_finite, full.non_finite);
        }
        // Both paths were exercised: most records are plain scalars; the
        // tensors, texts and histograms go to prost.
        assert!(taken >= 40 && left >= 5, "fast path took {taken} records, left {left}");
    }

    #[test]
    fn reads_what_torch_summary_writer_wrote() {
        let b = read_all(&fixture("summary_writer.tfevents")).unwrap();
        // The version, a text, 15 scalars, two tensor scalars, a histogram
        // and a NaN.
        assert_eq!(
            (b.records, b.skipped, b.non_finite, b.partial, b.lost_at),
            (21, 0, 1, false, None)
        );
        let steps = [9, 19, 29, 39, 49];
        let zip = |values: [f64; 5]| steps.into_iter().zip(values).collect::<Vec<_>>();
        assert_eq!(series(&b, "train_loss"), zip([1.0, 0.75, 0.5, 0.375, 0.25]));
        assert_eq!(series(&b, "val_loss"), zip([1.5, 1.25, 1.0, 0.875, 0.8125]));
        assert_eq!(series(&b, "epoch"), zip([0.0, 1.0, 2.0, 3.0, 4.0]));
        // `new_style=True`: a float tensor, and with `double_precision` a
        // double one.
        assert_eq!(series(&b, "lr"), [(49, 0.5)]);
        assert_eq!(series(&b, "lr_double"), [(49, 0.1)]);
        assert_eq!(b.scalars.len(), 18, "no text or histogram; the NaN counted and kept");
        assert_eq!(b.scalars.iter().filter(|s| s.value.is_nan()).count(), 1);
        assert!(b.scalars.iter().all(|s| s.wall_time > 1.7e9));
    }

    #[test]
    fn reads_what_lightning_tensorboard_logger_wrote() {
        let b = read_all(&fixture("lightning.tfevents")).unwrap();
        assert_eq!((b.records, b.skipped, b.non_finite, b.partial), (44, 0, 0, false));
        // `log_hyperparams` logs a placeholder `hp_metric` of -1, and three
        // hparams-plugin values with no value at all.
        assert_eq!(series(&b, "hp_metric"), [(0, -1.0)]);
        // `on_epoch` only: no suffix, at the global step of the epoch's last
        // training batch.
        assert_eq!(series(&b, "val_loss"), [(3, 1.5), (7, 1.25), (11, 1.0)]);
        assert_eq!(series(&b, "val_acc"), [(3, 0.5), (7, 0.625), (11, 0.75)]);
        // `on_step` and `on_epoch`: two tags.
        let per_step = series(&b, "train_loss_step");
        assert_eq!(per_step.len(), 12);
        assert_eq!(per_step[1], (1, 0.5));
        assert_eq!(
            series(&b, "train_loss_epoch")[0],
            (3, f64::from((1.0 + 0.5 + 1.0 / 3.0 + 0.25f32) / 4.0))
        );
        // `epoch` beside every logging call, so twice at an epoch's end.
        let epochs = series(&b, "epoch");
        assert_eq!(epochs.len(), 18);
        assert_eq!(&epochs[4..7], [(3, 0.0), (3, 0.0), (4, 1.0)]);
    }

    #[test]
    fn a_real_file_cut_anywhere_reads_back_whole() {
        let whole = std::fs::read(fixture("summary_writer.tfevents")).unwrap();
        let all = read_all(&fixture("summary_writer.tfevents")).unwrap().scalars;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.out.tfevents.1.host");
        for cut in (0..whole.len()).step_by(7) {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let mut r = TfEventsReader::new();
            let mut first = r.read_new(&path, true).unwrap();
            std::fs::write(&path, &whole).unwrap();
            let second = r.read_new(&path, true).unwrap();
            assert_eq!(
                (first.skipped, second.skipped, second.partial),
                (0, 0, false),
                "cut at {cut}"
            );
            first.scalars.extend(second.scalars);
            // NaN is not equal to itself: compared by its bits.
            let bits = |v: &[Scalar]| {
                v.iter()
                    .map(|s| (s.tag.clone(), s.step, s.value.to_bits()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(&first.scalars), bits(&all), "cut at {cut}");
        }
    }

    /// Writes what a 200-epoch Lightning run with 100 steps an epoch logs:
    /// a step loss every step, and the epoch's losses, accuracy and epoch.
    pub(crate) fn night(path: &Path) {
        let mut out = version();
        let mut step = 0;
        for epoch in 0..200 {
            for _ in 0..100 {
                out.extend(scalar("train_loss_step", step, 1.0 / (step + 1) as f32));
                step += 1;
            }
            for (tag, v) in [
                ("val_loss", 0.5),
                ("val_acc", 0.9),
                ("train_loss_epoch", 0.4),
                ("epoch", epoch as f32),
            ] {
                out.extend(scalar(tag, step - 1, v));
            }
        }
        std::fs::write(path, out).unwrap();
    }

    /// `cargo test --release --lib metrics::tfevents -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing, not a check"]
    fn time_a_night_of_scalars() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.out.tfevents.1.host");
        night(&path);
        let mut times: Vec<_> = (0..30)
            .map(|_| {
                let start = std::time::Instant::now();
                let batch = read_all(&path).unwrap();
                let took = start.elapsed();
                assert_eq!(batch.scalars.len(), 20_800);
                took
            })
            .collect();
        times.sort();
        let size = std::fs::metadata(&path).unwrap().len();
        // The fastest is the one least disturbed by other work on the machine.
        eprintln!("{size} bytes: {:?} fastest, {:?} median", times[0], times[15]);
    }

    #[test]
    fn the_inline_checksum_is_crc32c() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in 0..data.len() {
            assert_eq!(crc32c(&data[..n]), crc32c::crc32c(&data[..n]), "length {n}");
        }
    }

    #[test]
    fn a_varint_past_64_bits_is_refused() {
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(fast::varint(&max, &mut 0), Some(u64::MAX));
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(fast::varint(&over, &mut 0), None);
        assert_eq!(fast::varint(&[0x96, 0x01], &mut 0), Some(150));
    }
}
