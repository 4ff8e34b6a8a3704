//! The bounds on every number a batch file (or tb's environment) gives:
//! sizes, durations and counts. One definition each, used by the parsers
//! and the checks, and rendered as the table in docs/batch-file.md (a test
//! keeps the two equal). A value inside these bounds is one the engine
//! takes and tb's own arithmetic cannot overflow on.

use std::time::Duration;

const MIB: u64 = 1 << 20;
const TIB: u64 = 1 << 40;
const DAY: u64 = 24 * 3600;

/// A closed range `min..=max` of a key, with how to write its ends.
#[derive(Debug, Clone, Copy)]
pub struct Range<T> {
    /// The key, as the batch file writes it.
    pub key: &'static str,
    pub min: T,
    pub max: T,
    /// The ends as a user writes them, and why the range is what it is.
    pub shown: (&'static str, &'static str),
    pub why: &'static str,
}

impl<T: PartialOrd + Copy> Range<T> {
    pub fn contains(&self, v: T) -> bool {
        self.min <= v && v <= self.max
    }

    /// "must be between MIN and MAX"
    pub fn between(&self) -> String {
        format!("must be between {} and {}", self.shown.0, self.shown.1)
    }
}

pub const MEMORY: Range<u64> = Range {
    key: "memory",
    min: 6 * MIB,
    max: 64 * TIB,
    shown: ("6m", "64t"),
    why: "6 MiB is the Docker engine's minimum",
};

pub const SHM_SIZE: Range<u64> = Range {
    key: "shm_size",
    min: MIB,
    max: 64 * TIB,
    shown: ("1m", "64t"),
    why: "",
};

pub const CPUS: Range<f64> = Range {
    key: "cpus",
    min: 0.01,
    max: 4096.0,
    shown: ("0.01", "4096"),
    why: "the engine's smallest CPU share is 0.01",
};

pub const GPUS: Range<u32> = Range {
    key: "gpus",
    min: 0,
    max: 64,
    shown: ("0", "64"),
    why: "and no more than the host (or Slurm node) has",
};

/// How many jobs may share one GPU: `gpus` = 1/n for n in this range.
pub const GPU_SHARERS: Range<u8> = Range {
    key: "jobs sharing one GPU",
    min: 2,
    max: 8,
    shown: ("2", "8"),
    why: "`gpus` = 1/n, written 0.5, 0.33, 0.25, 0.2, 0.17, 0.14 or 0.12",
};

/// `[batch.slurm] shards_per_gpu`.
pub const SHARDS_PER_GPU: Range<u32> = Range {
    key: "shards_per_gpu",
    min: 1,
    max: 1024,
    shown: ("1", "1024"),
    why: "as the cluster's gres.conf gives one GPU",
};

pub const TIME_LIMIT: Range<Duration> = Range {
    key: "time_limit",
    min: Duration::from_secs(1),
    max: Duration::from_secs(365 * DAY),
    shown: ("1s", "365d"),
    why: "",
};

/// How far ahead `[batch] deadline` may be.
pub const DEADLINE_AHEAD: Range<Duration> = Range {
    key: "deadline",
    min: Duration::ZERO,
    max: Duration::from_secs(365 * DAY),
    shown: ("any", "365 days ahead"),
    why: "one already past is accepted and starts no job (the jobs stay pending for `tb resume`)",
};

pub const CONCURRENCY: Range<i64> = Range {
    key: "concurrency",
    min: 1,
    max: 1024,
    shown: ("1", "1024"),
    why: "or \"auto\"",
};

pub const RETRIES: Range<i64> = Range {
    key: "retries",
    min: 0,
    max: 100,
    shown: ("0", "100"),
    why: "",
};

pub const FOLDS: Range<i64> = Range {
    key: "cv.folds",
    min: 2,
    max: 100,
    shown: ("2", "100"),
    why: "",
};

pub const SAMPLES: Range<i64> = Range {
    key: "sweep.samples",
    min: 1,
    max: 100_000,
    shown: ("1", "100,000"),
    why: "a random sweep's jobs",
};

/// The jobs one `[[job]]` expands into (a grid's product, or the random
/// samples, times the folds), counted before anything is expanded.
pub const EXPANDED: Range<u64> = Range {
    key: "jobs of one [[job]]",
    min: 1,
    max: 100_000,
    shown: ("1", "100,000"),
    why: "a grid's product × folds, counted before it is expanded",
};

/// The jobs of a whole batch, after expansion.
pub const BATCH_JOBS: Range<u64> = Range {
    key: "jobs of a batch",
    min: 1,
    max: 100_000,
    shown: ("1", "100,000"),
    why: "every [[job]]'s expansion added up",
};

pub const PRUNE_GRACE: Range<u64> = Range {
    key: "prune.grace",
    min: 1,
    max: 1_000_000,
    shown: ("1", "1,000,000"),
    why: "epochs, and below `max_epochs`",
};

pub const PRUNE_REDUCTION: Range<u64> = Range {
    key: "prune.reduction",
    min: 2,
    max: 100,
    shown: ("2", "100"),
    why: "",
};

pub const PRUNE_MAX_EPOCHS: Range<u64> = Range {
    key: "prune.max_epochs",
    min: 1,
    max: 1_000_000,
    shown: ("1", "1,000,000"),
    why: "epochs; also `train.max_epochs` when pruning reads it",
};

pub const JOB_NAME: Range<usize> = Range {
    key: "name",
    min: 1,
    max: 100,
    shown: ("1", "100 characters"),
    why: "expanded names too",
};

/// `TB_ENGINE_WAIT`, in seconds.
pub const ENGINE_WAIT: Range<Duration> = Range {
    key: "TB_ENGINE_WAIT",
    min: Duration::ZERO,
    max: Duration::from_secs(7 * DAY),
    shown: ("0", "604800 (7 days)"),
    why: "seconds; a value outside is ignored with a warning",
};

/// `[batch.watch] min_new`: the new settled files that fire the trigger.
pub const WATCH_MIN_NEW: Range<u64> = Range {
    key: "watch.min_new",
    min: 1,
    max: 1_000_000,
    shown: ("1", "1,000,000"),
    why: "files; default 1",
};

/// `[batch.watch] settle`: how long a new file stays unchanged to count.
pub const WATCH_SETTLE: Range<Duration> = Range {
    key: "watch.settle",
    min: Duration::from_secs(1),
    max: Duration::from_secs(DAY),
    shown: ("1s", "1d"),
    why: "default 30s",
};

/// `[batch.watch] every`: the time trigger, from the last trigger.
pub const WATCH_EVERY: Range<Duration> = Range {
    key: "watch.every",
    min: Duration::from_secs(1),
    max: Duration::from_secs(365 * DAY),
    shown: ("1s", "365d"),
    why: "",
};

/// `TB_WATCH_POLL`, in seconds: how often `tb watch` looks.
pub const WATCH_POLL: Range<Duration> = Range {
    key: "TB_WATCH_POLL",
    min: Duration::from_millis(100),
    max: Duration::from_secs(3600),
    shown: ("0.1", "3600 (1 hour)"),
    why: "seconds, default 5; a value outside is ignored with a warning",
};

/// The environment variable `range.key`, in seconds (fractions allowed):
/// `default` when it is unset, and when it is not a number inside `range`
/// (with a warning saying so).
pub fn seconds_from_env(range: &Range<Duration>, default: Duration) -> Duration {
    seconds_in(range, std::env::var(range.key).ok().as_deref(), default)
}

/// [`seconds_from_env`] of the variable's value, `None` when unset.
fn seconds_in(range: &Range<Duration>, value: Option<&str>, default: Duration) -> Duration {
    let Some(text) = value else {
        return default;
    };
    match text
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
    {
        Some(d) if range.contains(d) => d,
        _ => {
            tracing::warn!(
                "{}=`{}` ignored: expected seconds between {} and {}; using {} s",
                range.key,
                crate::sanitize::escape_controls(text),
                range.shown.0,
                range.shown.1,
                default.as_secs_f64()
            );
            default
        }
    }
}

/// The limits table of docs/batch-file.md, in Markdown.
pub fn table() -> String {
    fn row<T>(out: &mut String, r: &Range<T>) {
        let key = if r.key.contains(' ') {
            r.key.to_string()
        } else {
            format!("`{}`", r.key)
        };
        out.push_str(&format!("| {key} | {} | {} | {} |\n", r.shown.0, r.shown.1, r.why));
    }
    let mut out = String::from("| what | least | most | note |\n| --- | --- | --- | --- |\n");
    row(&mut out, &MEMORY);
    row(&mut out, &SHM_SIZE);
    row(&mut out, &CPUS);
    row(&mut out, &GPUS);
    row(&mut out, &GPU_SHARERS);
    row(&mut out, &SHARDS_PER_GPU);
    row(&mut out, &TIME_LIMIT);
    row(&mut out, &DEADLINE_AHEAD);
    row(&mut out, &CONCURRENCY);
    row(&mut out, &RETRIES);
    row(&mut out, &FOLDS);
    row(&mut out, &SAMPLES);
    row(&mut out, &EXPANDED);
    row(&mut out, &BATCH_JOBS);
    row(&mut out, &PRUNE_GRACE);
    row(&mut out, &PRUNE_REDUCTION);
    row(&mut out, &PRUNE_MAX_EPOCHS);
    row(&mut out, &JOB_NAME);
    row(&mut out, &ENGINE_WAIT);
    row(&mut out, &WATCH_MIN_NEW);
    row(&mut out, &WATCH_SETTLE);
    row(&mut out, &WATCH_EVERY);
    row(&mut out, &WATCH_POLL);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docs_table_is_this_one() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/batch-file.md")).unwrap();
        assert!(
            docs.contains(&table()),
            "docs/batch-file.md does not hold the limits table; put this there:\n{}",
            table()
        );
    }

    #[test]
    fn seconds_from_the_environment_are_bounded() {
        const R: Range<Duration> = Range {
            key: "TB_TEST_SECONDS_FROM_ENV",
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
            shown: ("0.1", "10"),
            why: "",
        };
        let default = Duration::from_secs(5);
        assert_eq!(seconds_from_env(&R, default), default);
        assert_eq!(seconds_in(&R, None, default), default);
        for (set, got) in [
            ("0.5", 500),
            (" 10 ", 10_000),
            ("0.05", 5000),
            ("11", 5000),
            ("x", 5000),
            ("-1", 5000),
        ] {
            assert_eq!(
                seconds_in(&R, Some(set), default),
                Duration::from_millis(got),
                "{set:?}"
            );
        }
    }

    #[test]
    fn the_shown_ends_parse_to_the_ends() {
        use crate::batch::ByteSize;
        for r in [MEMORY, SHM_SIZE] {
            assert_eq!(ByteSize::parse(r.shown.0).unwrap().bytes, r.min, "{}", r.key);
            assert_eq!(ByteSize::parse(r.shown.1).unwrap().bytes, r.max, "{}", r.key);
        }
        for r in [TIME_LIMIT, WATCH_SETTLE, WATCH_EVERY] {
            assert_eq!(humantime::parse_duration(r.shown.0).unwrap(), r.min, "{}", r.key);
            assert_eq!(humantime::parse_duration(r.shown.1).unwrap(), r.max, "{}", r.key);
        }
    }
}
