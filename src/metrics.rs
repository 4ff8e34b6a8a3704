//! Reading what trainers write to `metrics.jsonl`, one line at a time,
//! tolerating what a killed job leaves behind (partial or garbage lines).

use serde::Deserialize;
use std::io::BufRead;
use std::path::Path;

/// A well-formed line (CONTRACT §4).
#[derive(Debug, Clone, Deserialize)]
pub struct Line {
    pub epoch: u64,
    #[serde(default)]
    pub step: Option<u64>,
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
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
    let Ok(file) = std::fs::File::open(path) else { return p };
    for line in std::io::BufReader::new(file).split(b'\n') {
        let Ok(bytes) = line else {
            p.bad_lines += 1;
            break;
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(line) = serde_json::from_slice::<Line>(&bytes) else {
            p.bad_lines += 1;
            continue;
        };
        p.last_epoch = Some(p.last_epoch.map_or(line.epoch, |e| e.max(line.epoch)));
        if let Some(v) = line
            .metrics
            .get(monitor)
            .and_then(|v| v.as_f64())
            .filter(|v| v.is_finite())
        {
            p.latest = Some(v);
            let better = match p.best {
                None => true,
                Some((b, _)) => {
                    if maximize {
                        v > b
                    } else {
                        v < b
                    }
                }
            };
            if better {
                p.best = Some((v, line.epoch));
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_and_counts_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(
            &path,
            concat!(
                "{\"epoch\": 1, \"metrics\": {\"val_loss\": 0.5}}\n",
                "garbage\n",
                "{\"epoch\": 2, \"metrics\": {\"val_loss\": 0.3}}\n",
                "{\"epoch\": 3, \"metrics\": {\"val_loss\": NaN}}\n",
                "{\"epoch\": 4, \"metrics\": {\"val_loss\": 0.4}}\n",
                "{\"epoch\": 5, \"metr"
            ),
        )
        .unwrap();
        let p = progress(&path, "val_loss", false);
        assert_eq!(p.last_epoch, Some(4));
        assert_eq!(p.best, Some((0.3, 2)));
        assert_eq!(p.latest, Some(0.4));
        assert_eq!(p.bad_lines, 3);
        assert_eq!(progress(&path, "val_loss", true).best, Some((0.5, 1)));
    }
}
