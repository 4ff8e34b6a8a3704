//! Metrics from the `metrics.csv` that Lightning's `CSVLogger` writes: a
//! header of every key logged so far (sorted, with `epoch` and `step`
//! among them), then one sparse row per logging call, the keys not logged
//! in it left empty.
//!
//! Lightning appends rows, except when a call logs a key the header lacks:
//! then it reads the whole file back and writes it anew under the wider
//! header (`_ExperimentWriter._rewrite_with_new_header`). A reader that
//! went on from its old offset would read garbage, so each read first checks
//! that the file still starts with the header it saw, and starts over when
//! not, telling the caller to drop what it had.

use super::Point;
use super::tail::Tail;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// What one read of a CSV file found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// One point per filled numeric cell of the rows read, in file order.
    pub points: Vec<Point>,
    /// Rows read, whether or not they held a number.
    pub rows: u64,
    /// Lines skipped: rows whose cells do not match the header, and a
    /// partial last line of a job that has ended.
    pub skipped: u64,
    /// Cells that were `nan` or `inf`, left out of `points`.
    pub non_finite: u64,
    /// The file ends in a partial line. While the job runs it is a write in
    /// progress, left for the next read; once it has ended it is counted in
    /// `skipped`.
    pub partial: bool,
    /// The file was rewritten (a new header), replaced or cut short: its
    /// points are all here again, and the caller should drop the ones it had.
    pub restarted: bool,
}

/// Reads a `metrics.csv` as it grows: each [`read_new`](Self::read_new)
/// returns the rows appended since the last one.
#[derive(Debug, Default)]
pub struct CsvReader {
    tail: Tail,
    /// The header line as the file has it, terminator included; empty until
    /// a whole one has been read.
    header: Vec<u8>,
    columns: Vec<Column>,
}

#[derive(Debug, Clone)]
enum Column {
    Step,
    Epoch,
    Metric(Arc<str>),
}

impl CsvReader {
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

    /// Reads the rows appended since the last call. `live` says that the job
    /// still runs, so a partial last line is a write in progress. A missing
    /// file has nothing new (and, if one was read before, restarts).
    pub fn read_new(&mut self, path: &Path, live: bool) -> io::Result<Batch> {
        let opened = self.tail.open(path)?;
        let mut batch = Batch {
            restarted: opened.restarted,
            ..Batch::default()
        };
        let Some(mut file) = opened.file else {
            self.forget_header();
            return Ok(batch);
        };
        if opened.restarted {
            self.forget_header();
        }
        if !self.header.is_empty() && !starts_with(&file, &self.header)? {
            self.tail.advance_to(0);
            self.forget_header();
            batch.restarted = true;
        }
        let offset = self.tail.offset();
        if offset >= opened.len {
            return Ok(batch);
        }
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        file.take(opened.len - offset).read_to_end(&mut buf)?;
        let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut consumed = complete;
        if complete < buf.len() {
            batch.partial = true;
            if !live {
                batch.skipped += 1;
                consumed = buf.len();
            }
        }
        self.rows(&buf[..complete], &mut batch);
        self.tail.advance_to(offset + consumed as u64);
        Ok(batch)
    }

    fn forget_header(&mut self) {
        self.header.clear();
        self.columns.clear();
    }

    /// Reads whole lines: the header first, if it has not been read yet.
    fn rows(&mut self, lines: &[u8], batch: &mut Batch) {
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(lines);
        let mut record = ::csv::ByteRecord::new();
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                // Only I/O fails a byte record, and a slice has none.
                Err(_) => {
                    batch.skipped += 1;
                    break;
                }
            }
            if self.header.is_empty() {
                let end = reader.position().byte() as usize;
                self.header = lines[..end].to_vec();
                self.columns = columns(&record);
                continue;
            }
            if record.len() != self.columns.len() {
                batch.skipped += 1;
                continue;
            }
            batch.rows += 1;
            let mut step = None;
            let mut epoch = None;
            for (column, cell) in self.columns.iter().zip(&record) {
                match column {
                    Column::Step => step = whole(cell),
                    Column::Epoch => epoch = whole(cell),
                    Column::Metric(_) => {}
                }
            }
            for (column, cell) in self.columns.iter().zip(&record) {
                let Column::Metric(tag) = column else {
                    continue;
                };
                let Some(value) = number(cell) else {
                    continue;
                };
                // Counted, and passed on: a diverged value is news for pruning.
                if !value.is_finite() {
                    batch.non_finite += 1;
                }
                batch.points.push(Point {
                    tag: tag.clone(),
                    step,
                    epoch,
                    value,
                });
            }
        }
    }
}

/// Reads a whole `metrics.csv` of a job that has ended.
pub fn read_all(path: &Path) -> io::Result<Batch> {
    CsvReader::new().read_new(path, false)
}

fn columns(header: &::csv::ByteRecord) -> Vec<Column> {
    header
        .iter()
        .map(|name| match name {
            b"step" => Column::Step,
            b"epoch" => Column::Epoch,
            _ => Column::Metric(String::from_utf8_lossy(name).into()),
        })
        .collect()
}

/// Whether the file still begins with `header`.
fn starts_with(file: &std::fs::File, header: &[u8]) -> io::Result<bool> {
    let mut start = vec![0; header.len()];
    match file.read_exact_at(&mut start, 0) {
        Ok(()) => Ok(start == header),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// A cell's number, if it holds one (`nan` and `inf` included).
fn number(cell: &[u8]) -> Option<f64> {
    std::str::from_utf8(cell).ok()?.trim().parse().ok()
}

/// A step or epoch: a whole number, which a float column may hold as `3.0`.
fn whole(cell: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(cell).ok()?.trim();
    text.parse().ok().or_else(|| {
        let v: f64 = text.parse().ok()?;
        (v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64).then_some(v as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(b: &Batch) -> Vec<(&str, Option<u64>, Option<u64>, f64)> {
        b.points.iter().map(|p| (&*p.tag, p.step, p.epoch, p.value)).collect()
    }

    fn append(path: &Path, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn sparse_rows_give_one_point_per_filled_cell() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        std::fs::write(
            &path,
            "epoch,step,train_loss_step,val_acc,val_loss\r\n\
             0,0,1.0,,\r\n\
             0,3,,0.5,1.5\r\n\
             ,5,0.25,,\r\n\
             1,7,nan,note,inf\r\n",
        )
        .unwrap();
        let b = read_all(&path).unwrap();
        let p = points(&b);
        assert_eq!(
            p[..4],
            [
                ("train_loss_step", Some(0), Some(0), 1.0),
                ("val_acc", Some(3), Some(0), 0.5),
                ("val_loss", Some(3), Some(0), 1.5),
                ("train_loss_step", Some(5), None, 0.25),
            ]
        );
        // Not finite: counted, and passed on for pruning.
        assert_eq!(p.len(), 6);
        assert!(p[4].3.is_nan() && p[5].3.is_infinite());
        assert_eq!(
            (b.rows, b.skipped, b.non_finite, b.partial, b.restarted),
            (4, 0, 2, false, false)
        );
        assert!(Arc::ptr_eq(&b.points[0].tag, &b.points[3].tag));
    }

    #[test]
    fn reads_what_lightning_wrote() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics/lightning_metrics.csv");
        let b = read_all(&path).unwrap();
        assert_eq!((b.rows, b.skipped, b.non_finite, b.partial), (18, 0, 0, false));
        let of = |tag: &str| -> Vec<(Option<u64>, Option<u64>, f64)> {
            b.points
                .iter()
                .filter(|p| &*p.tag == tag)
                .map(|p| (p.step, p.epoch, p.value))
                .collect()
        };
        assert_eq!(
            of("val_loss"),
            [
                (Some(3), Some(0), 1.5),
                (Some(7), Some(1), 1.25),
                (Some(11), Some(2), 1.0)
            ]
        );
        assert_eq!(
            of("val_acc"),
            [
                (Some(3), Some(0), 0.5),
                (Some(7), Some(1), 0.625),
                (Some(11), Some(2), 0.75)
            ]
        );
        let steps = of("train_loss_step");
        assert_eq!(steps.len(), 12);
        assert_eq!(steps[0], (Some(0), Some(0), 1.0));
        assert_eq!(steps[11], (Some(11), Some(2), f64::from(1.0f32 / 12.0)));
        assert_eq!(
            of("train_loss_epoch")[0],
            (Some(3), Some(0), f64::from((1.0 + 0.5 + 1.0 / 3.0 + 0.25f32) / 4.0))
        );
        assert!(of("epoch").is_empty() && of("step").is_empty());
    }

    #[test]
    fn a_real_file_cut_anywhere_reads_back_whole() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics/lightning_metrics.csv");
        let whole = std::fs::read(&fixture).unwrap();
        let all = read_all(&fixture).unwrap().points;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        for cut in 0..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let mut r = CsvReader::new();
            let mut first = r.read_new(&path, true).unwrap();
            append(&path, std::str::from_utf8(&whole[cut..]).unwrap());
            let second = r.read_new(&path, true).unwrap();
            assert_eq!(
                (first.skipped, second.skipped, second.restarted),
                (0, 0, false),
                "cut at {cut}"
            );
            first.points.extend(second.points);
            assert_eq!(first.points, all, "cut at {cut}");
        }
    }

    #[test]
    fn a_growing_file_gives_only_the_new_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        let mut r = CsvReader::new();
        assert_eq!(r.read_new(&path, true).unwrap(), Batch::default());
        append(&path, "epoch,st");
        assert_eq!(
            r.read_new(&path, true).unwrap(),
            Batch {
                partial: true,
                ..Batch::default()
            }
        );
        append(&path, "ep,loss\n0,0,1.0\n");
        assert_eq!(
            points(&r.read_new(&path, true).unwrap()),
            [("loss", Some(0), Some(0), 1.0)]
        );
        append(&path, "0,1,0.5\n");
        assert_eq!(
            points(&r.read_new(&path, true).unwrap()),
            [("loss", Some(1), Some(0), 0.5)]
        );
        assert_eq!(r.read_new(&path, true).unwrap(), Batch::default());
    }

    #[test]
    fn a_new_header_rewrites_the_file_and_restarts_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        std::fs::write(&path, "epoch,loss,step\n0,1.0,0\n0,0.5,1\n").unwrap();
        let mut r = CsvReader::new();
        assert_eq!(r.read_new(&path, true).unwrap().points.len(), 2);
        // What `_rewrite_with_new_header` then `save` leave: the old rows
        // under the wider header, then the new ones. Longer than before, so
        // only the header tells.
        std::fs::write(&path, "epoch,loss,step,val_loss\n0,1.0,0,\n0,0.5,1,\n0,,1,2.0\n").unwrap();
        let b = r.read_new(&path, true).unwrap();
        assert!(b.restarted);
        assert_eq!(
            points(&b),
            [
                ("loss", Some(0), Some(0), 1.0),
                ("loss", Some(1), Some(0), 0.5),
                ("val_loss", Some(1), Some(0), 2.0)
            ]
        );
        // Caught mid-rewrite: shorter than what was read.
        std::fs::write(&path, "epoch,loss,step,val_loss,x\n0,1.0,0").unwrap();
        let b = r.read_new(&path, true).unwrap();
        assert_eq!((b.restarted, b.partial, b.points.len()), (true, true, 0));
        append(&path, ",,\n");
        let b = r.read_new(&path, true).unwrap();
        assert_eq!(
            (b.restarted, points(&b)),
            (false, vec![("loss", Some(0), Some(0), 1.0)])
        );
    }

    #[test]
    fn a_partial_last_line_waits_while_live_and_counts_once_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        std::fs::write(&path, "epoch,loss,step\n0,1.0,0\n0,0.5").unwrap();
        let mut r = CsvReader::new();
        let b = r.read_new(&path, true).unwrap();
        assert_eq!((b.points.len(), b.partial, b.skipped), (1, true, 0));
        let b = r.read_new(&path, true).unwrap();
        assert_eq!((b.points.len(), b.partial, b.skipped), (0, true, 0));
        let b = r.read_new(&path, false).unwrap();
        assert_eq!((b.points.len(), b.partial, b.skipped), (0, true, 1));
        assert_eq!(r.read_new(&path, false).unwrap(), Batch::default());
    }

    #[test]
    fn a_garbled_line_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        let text = b"epoch,loss,step\n0,1.0,0\n\xff\x00garbage\n0,0.5,1,9,9\n1,0.25,2\n";
        std::fs::write(&path, text).unwrap();
        let b = read_all(&path).unwrap();
        assert_eq!(
            points(&b),
            [("loss", Some(0), Some(0), 1.0), ("loss", Some(2), Some(1), 0.25)]
        );
        assert_eq!((b.rows, b.skipped), (2, 2));
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats() {
        assert_eq!(whole(b"3"), Some(3));
        assert_eq!(whole(b"3.0"), Some(3));
        assert_eq!(whole(b"3.5"), None);
        assert_eq!(whole(b"-1"), None);
        assert_eq!(whole(b""), None);
    }
}
