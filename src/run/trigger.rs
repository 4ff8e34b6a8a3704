//! What started a batch when `tb watch` did: `batch.json` keeps it as
//! `trigger`, the report shows it, and `tb watch` finds by it the batch of a
//! trigger it fired before it was killed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One firing of a watch's triggers: the new files, the time, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// The watch's state file (`<runs>/<name>.watch/watch.json`).
    pub watch: PathBuf,
    /// Its number in that watch, from 1.
    pub number: u64,
    pub fired_at: DateTime<Utc>,
    /// The new files, when they fired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<NewFiles>,
    /// The time trigger's period in seconds, when it fired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_seconds: Option<u64>,
}

/// The settled new files a trigger took: how many, and the first and last
/// to arrive (by modification time, then name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewFiles {
    /// The watched directory.
    pub dir: PathBuf,
    pub count: u64,
    /// Relative to `dir`.
    pub first: String,
    pub last: String,
}

impl Trigger {
    /// Whether this is firing `number` of the watch kept in `watch`, fired
    /// at `fired_at` (a watch started afresh numbers from 1 again).
    pub fn is(&self, watch: &Path, number: u64, fired_at: DateTime<Utc>) -> bool {
        self.watch == watch && self.number == number && self.fired_at == fired_at
    }

    /// "120 new files in /data/incoming (first a.csv, last z.csv)", "the
    /// time trigger (every 24h00m)", or both joined by "and".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = &self.files {
            let which = if f.count == 1 {
                format!("`{}`", f.first)
            } else {
                format!("first `{}`, last `{}`", f.first, f.last)
            };
            parts.push(format!(
                "{} new file{} in `{}` ({which})",
                f.count,
                if f.count == 1 { "" } else { "s" },
                f.dir.display()
            ));
        }
        if let Some(secs) = self.every_seconds {
            let every = chrono::Duration::try_seconds(secs as i64).unwrap_or_else(chrono::Duration::zero);
            parts.push(format!("the time trigger (every {})", crate::human::duration(every)));
        }
        parts.join(" and ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_says_what_fired_it() {
        let mut t = Trigger {
            watch: "/r/night.watch/watch.json".into(),
            number: 3,
            fired_at: Utc::now(),
            files: Some(NewFiles {
                dir: "/data/in".into(),
                count: 120,
                first: "a.csv".into(),
                last: "z.csv".into(),
            }),
            every_seconds: None,
        };
        assert_eq!(
            t.describe(),
            "120 new files in `/data/in` (first `a.csv`, last `z.csv`)"
        );
        t.every_seconds = Some(86400);
        assert_eq!(
            t.describe(),
            "120 new files in `/data/in` (first `a.csv`, last `z.csv`) and the time trigger (every 24h00m)"
        );
        t.files = None;
        assert_eq!(t.describe(), "the time trigger (every 24h00m)");
        assert!(t.is(Path::new("/r/night.watch/watch.json"), 3, t.fired_at));
        assert!(!t.is(Path::new("/r/night.watch/watch.json"), 2, t.fired_at));
    }
}
