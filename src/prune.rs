//! Stopping a sweep's hopeless trials early, from outside the container:
//! asynchronous successive halving (ASHA: Li et al., "A System for
//! Massively Parallel Hyperparameter Tuning", MLSys 2020) or the median
//! stopping rule (Google Vizier). The rules are pure: they read the values
//! a job logged and the [`Table`] of what the other jobs of its group
//! logged, and decide. The table is the batch's `prune.json`, so that a
//! supervisor killed mid-sweep resumes with every decision standing.

use crate::metrics::Mode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Which rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "\"asha\" or \"median\"")]
pub enum Method {
    Asha,
    Median,
}

/// A job's pruning, resolved (`[job.prune]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneSpec {
    pub method: Method,
    /// The metric decisions look at, and which way is better.
    pub metric: String,
    pub mode: Mode,
    /// Epochs before the first rung (ASHA) or the first decision (median).
    pub grace: u64,
    /// η: rungs at grace·η^k epochs; ASHA keeps the best 1/η at each.
    pub reduction: u64,
    /// The epochs a job runs at most, when known: no decision at or past
    /// the last rung within them.
    pub max_epochs: Option<u64>,
    /// The jobs compared: those expanded from one `[[job]]` (and, with
    /// k-fold, one fold).
    pub group: String,
}

/// How many rungs are listed when there is no last one.
const LISTED_RUNGS: usize = 4;

impl PruneSpec {
    /// The rung epochs (ASHA), at most `limit` of them.
    pub fn rungs(&self, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut r = self.grace.max(1);
        while out.len() < limit && self.max_epochs.is_none_or(|m| r <= m) {
            out.push(r);
            r = match r.checked_mul(self.reduction) {
                Some(next) => next,
                None => break,
            };
        }
        out
    }

    /// Whether a decision is taken at rung `r`: any rung but the last one
    /// within `max_epochs`.
    fn decides_at(&self, r: u64) -> bool {
        match self.max_epochs {
            Some(max) => r.saturating_mul(self.reduction) <= max && r < max,
            None => true,
        }
    }

    /// `asha on val_loss (min): rungs at epochs 1, 3, 9; keep 1/3`.
    pub fn describe(&self) -> String {
        let mode = if self.mode.maximize() { "max" } else { "min" };
        match self.method {
            Method::Asha => {
                let rungs = self.rungs(LISTED_RUNGS + 1);
                let more = self.max_epochs.is_none() || rungs.len() > LISTED_RUNGS;
                let listed: Vec<String> = rungs.iter().take(LISTED_RUNGS).map(u64::to_string).collect();
                format!(
                    "asha on {} ({mode}): rungs at epochs {}{}; keep 1/{}",
                    self.metric,
                    listed.join(", "),
                    if more { ", …" } else { "" },
                    self.reduction
                )
            }
            Method::Median => format!(
                "median on {} ({mode}): after epoch {}, stop a job whose best is worse than the median of the others at the same epoch",
                self.metric, self.grace
            ),
        }
    }
}

/// The format version of `prune.json`.
pub const VERSION: u32 = 1;

/// The table's file in the batch directory.
pub const FILE: &str = "prune.json";

/// `prune.json`: every value a decision rested on, and every decision.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Table {
    pub version: u32,
    /// Per group: per rung (ASHA) or epoch (median), each job's value
    /// there, in the order they came.
    pub groups: BTreeMap<String, BTreeMap<u64, Vec<(String, f64)>>>,
    /// Every ASHA decision taken, and every median decision that stopped a
    /// job (the median rule's "continues" are in the log only: one per job
    /// per epoch), in order.
    pub decisions: Vec<Decision>,
    /// Per job, the last rung or epoch recorded: what is new in a curve.
    #[serde(skip)]
    seen: HashMap<String, u64>,
    /// Per job, its standing stop decision.
    #[serde(skip)]
    stops: HashMap<String, usize>,
    /// Jobs a person ran again after they were pruned: their values count
    /// for the others; they are not judged again.
    #[serde(skip)]
    exempt: std::collections::HashSet<String>,
    /// Changed since last written.
    #[serde(skip)]
    dirty: bool,
}

/// One decision about one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub job: String,
    pub group: String,
    pub method: Method,
    /// The rung (ASHA) or epoch (median) decided at.
    pub epoch: u64,
    /// The job's value there (ASHA), or its best so far (median).
    pub value: f64,
    /// The value it had to match: the worst value kept at the rung (ASHA),
    /// or the others' median (median).
    pub cutoff: f64,
    /// How many values the cutoff came from (the job's own included for
    /// ASHA; the others' for median).
    pub compared: usize,
    pub stop: bool,
    pub at: DateTime<Utc>,
    /// When `tb retry --job` overrode this stop: the job went on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<DateTime<Utc>>,
}

impl Decision {
    /// The line for `supervisor.log`, and the stopped job's error.
    pub fn describe(&self) -> String {
        let verdict = if self.stop { "pruned" } else { "continues" };
        match self.method {
            Method::Asha => format!(
                "{verdict} at rung {}: value {} against the cut-off {} (the best 1/η of {} values)",
                self.epoch,
                fmt(self.value),
                fmt(self.cutoff),
                self.compared
            ),
            Method::Median => format!(
                "{verdict} at epoch {}: best so far {} against the median {} of {} other jobs",
                self.epoch,
                fmt(self.value),
                fmt(self.cutoff),
                self.compared
            ),
        }
    }
}

/// What the rules read of a job's metrics: `spec.metric` by epochs
/// trained — a job that counts its epochs from 0 (Lightning's loggers) has
/// its epoch 0 at rung 1 — with a diverged value (NaN, infinite) as the
/// worst there is. A job that logs only steps gives nothing: rungs are
/// epochs.
pub fn curve(m: &crate::metrics::JobMetrics, spec: &PruneSpec) -> Vec<(u64, f64)> {
    if m.by_step {
        return Vec::new();
    }
    let mut points: Vec<(u64, f64)> = m.epochs.get(&spec.metric).cloned().unwrap_or_default();
    if let Some(xs) = m.diverged.get(&spec.metric) {
        points.extend(xs.iter().map(|&x| (x, diverged(spec.mode))));
        points.sort_by_key(|p| p.0);
    }
    if points.first().is_some_and(|p| p.0 == 0) {
        for p in &mut points {
            p.0 += 1;
        }
    }
    points
}

/// The value recorded for a metric that was NaN or infinite: the worst
/// there is, and one JSON can hold.
pub fn diverged(mode: Mode) -> f64 {
    if mode.maximize() { f64::MIN } else { f64::MAX }
}

impl Table {
    pub fn new() -> Table {
        Table {
            version: VERSION,
            ..Table::default()
        }
    }

    /// The batch's table as an earlier supervisor left it, or a new one.
    pub fn load(batch_dir: &std::path::Path) -> anyhow::Result<Table> {
        let path = batch_dir.join(FILE);
        if !path.exists() {
            return Ok(Table::new());
        }
        Ok(crate::durable::read_version::<Table>(&path, VERSION)?.loaded())
    }

    /// Written atomically, compact (a median sweep of thousands of jobs
    /// records a value per job per epoch): `jq .` reads it.
    pub fn save(&mut self, batch_dir: &std::path::Path) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec(self)?;
        bytes.push(b'\n');
        crate::durable::write_atomic(&batch_dir.join(FILE), &bytes)?;
        self.dirty = false;
        Ok(())
    }

    /// A table as read from `prune.json`, its indexes rebuilt.
    fn loaded(mut self) -> Table {
        for points in self.groups.values().flat_map(|g| g.iter()) {
            let (at, list) = points;
            for (job, _) in list {
                let last = self.seen.entry(job.clone()).or_insert(*at);
                *last = (*last).max(*at);
            }
        }
        for (i, d) in self.decisions.iter().enumerate() {
            if d.withdrawn.is_some() {
                self.exempt.insert(d.job.clone());
            } else if d.stop {
                self.stops.entry(d.job.clone()).or_insert(i);
            }
        }
        self.dirty = false;
        self
    }

    /// The decision that stopped `job`, if one did (and stands).
    pub fn stopped(&self, job: &str) -> Option<&Decision> {
        self.stops.get(job).map(|&i| &self.decisions[i])
    }

    /// Whether a standing decision stopped `job`.
    pub fn pruned(&self, job: &str) -> bool {
        self.stops.contains_key(job)
    }

    /// `tb retry --job`: the decision that stopped `job` no longer stands
    /// (it stays in the table, marked), and the job, run again because a
    /// person asked for it, is not judged again.
    pub fn withdraw(&mut self, job: &str, now: DateTime<Utc>) -> bool {
        let Some(i) = self.stops.remove(job) else { return false };
        self.decisions[i].withdrawn = Some(now);
        self.exempt.insert(job.to_string());
        self.dirty = true;
        true
    }

    /// Whether anything changed since it was loaded or saved.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Job `job` logged `curve` of `spec.metric` (by epoch, ascending): the
    /// values not yet in the table are recorded, and the decisions they
    /// call for taken, in order, up to the first that stops it. Returns the
    /// new decisions; a job already stopped gets none.
    pub fn observe(&mut self, job: &str, spec: &PruneSpec, curve: &[(u64, f64)], now: DateTime<Utc>) -> Vec<Decision> {
        self.see(job, spec, curve, now, true)
    }

    /// Records the values of a job that ended on its own: they count for
    /// the jobs that come after it; nothing is decided about it.
    pub fn record(&mut self, job: &str, spec: &PruneSpec, curve: &[(u64, f64)]) {
        self.see(job, spec, curve, Utc::now(), false);
    }

    fn see(
        &mut self,
        job: &str,
        spec: &PruneSpec,
        curve: &[(u64, f64)],
        now: DateTime<Utc>,
        decide: bool,
    ) -> Vec<Decision> {
        if self.pruned(job) {
            return Vec::new();
        }
        let seen = self.seen.get(job).copied();
        let decide = decide && !self.exempt.contains(job);
        let mut taken = Vec::new();
        let mut last = seen;
        let group = self.groups.entry(spec.group.clone()).or_default();
        match spec.method {
            Method::Asha => {
                for rung in spec.rungs(usize::MAX) {
                    if seen.is_some_and(|s| rung <= s) {
                        continue;
                    }
                    // A job's value at a rung: at the first epoch it logged
                    // at or past it.
                    let Some(&(epoch, value)) = curve.iter().find(|(e, _)| *e >= rung) else {
                        break;
                    };
                    let recorded = group.entry(rung).or_default();
                    recorded.push((job.to_string(), value));
                    last = Some(rung);
                    // Not at the last rung, nor on a value from the job's
                    // last epoch: a job that got there is never stopped.
                    let last_epoch = spec.max_epochs.is_some_and(|m| epoch >= m);
                    if !decide || !spec.decides_at(rung) || last_epoch {
                        continue;
                    }
                    if let Some(d) = asha(job, spec, rung, value, recorded, now) {
                        let stop = d.stop;
                        taken.push(d);
                        if stop {
                            break;
                        }
                    }
                }
            }
            Method::Median => {
                let mut best: Option<f64> = None;
                for &(epoch, value) in curve {
                    best = Some(match best {
                        Some(b) if !crate::metrics::better(value, b, spec.mode.maximize()) => b,
                        _ => value,
                    });
                    if seen.is_some_and(|s| epoch <= s) {
                        continue;
                    }
                    let at = group.entry(epoch).or_default();
                    at.push((job.to_string(), value));
                    last = Some(epoch);
                    if !decide || epoch <= spec.grace || spec.max_epochs.is_some_and(|m| epoch >= m) {
                        continue;
                    }
                    let others: Vec<f64> = at.iter().filter(|(j, _)| *j != job).map(|(_, v)| *v).collect();
                    if others.len() < 3 {
                        continue;
                    }
                    let compared = others.len();
                    let median = median(others);
                    let best = best.expect("a value");
                    let stop = crate::metrics::better(median, best, spec.mode.maximize());
                    taken.push(Decision {
                        job: job.to_string(),
                        group: spec.group.clone(),
                        method: Method::Median,
                        epoch,
                        value: best,
                        cutoff: median,
                        compared,
                        stop,
                        at: now,
                        withdrawn: None,
                    });
                    if stop {
                        break;
                    }
                }
            }
        }
        if last != seen {
            self.dirty = true;
            if let Some(l) = last {
                self.seen.insert(job.to_string(), l);
            }
        }
        for d in &taken {
            if d.stop {
                self.stops.insert(job.to_string(), self.decisions.len());
            }
            if d.stop || d.method == Method::Asha {
                self.decisions.push(d.clone());
                self.dirty = true;
            }
        }
        taken
    }
}

/// ASHA at a rung: with at least η values recorded there, the job goes on
/// only if its value is within the best ⌈n/η⌉ of them (ties go on).
fn asha(
    job: &str,
    spec: &PruneSpec,
    rung: u64,
    value: f64,
    recorded: &[(String, f64)],
    now: DateTime<Utc>,
) -> Option<Decision> {
    let n = recorded.len() as u64;
    if n < spec.reduction {
        return None;
    }
    let keep = n.div_ceil(spec.reduction) as usize;
    let mut values: Vec<f64> = recorded.iter().map(|(_, v)| *v).collect();
    values.sort_by(|a, b| {
        if spec.mode.maximize() {
            b.total_cmp(a)
        } else {
            a.total_cmp(b)
        }
    });
    let cutoff = values[keep - 1];
    let stop = crate::metrics::better(cutoff, value, spec.mode.maximize());
    Some(Decision {
        job: job.to_string(),
        group: spec.group.clone(),
        method: Method::Asha,
        epoch: rung,
        value,
        cutoff,
        compared: n as usize,
        stop,
        at: now,
        withdrawn: None,
    })
}

/// A value in a decision's words.
fn fmt(v: f64) -> String {
    if v.abs() == f64::MAX {
        return "diverged (NaN or infinite)".into();
    }
    if v != 0.0 && !(1e-3..1e5).contains(&v.abs()) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        return v[n / 2];
    }
    let (a, b) = (v[n / 2 - 1], v[n / 2]);
    // Halfway without overflow (two values near f64::MAX, the diverged).
    if a == b { a } else { a + (b - a) / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: Method, max_epochs: Option<u64>) -> PruneSpec {
        PruneSpec {
            method,
            metric: "val_loss".into(),
            mode: Mode::Min,
            grace: 1,
            reduction: 3,
            max_epochs,
            group: "lr".into(),
        }
    }

    /// A job whose loss is `level` at every epoch 1..=n.
    fn flat(level: f64, n: u64) -> Vec<(u64, f64)> {
        (1..=n).map(|e| (e, level)).collect()
    }

    #[test]
    fn rungs_grow_by_eta_up_to_the_last_one() {
        let s = spec(Method::Asha, Some(9));
        assert_eq!(s.rungs(10), [1, 3, 9]);
        assert!(s.decides_at(1) && s.decides_at(3) && !s.decides_at(9));
        assert_eq!(
            s.describe(),
            "asha on val_loss (min): rungs at epochs 1, 3, 9; keep 1/3"
        );
        let open = spec(Method::Asha, None);
        assert_eq!(open.rungs(4), [1, 3, 9, 27]);
        assert!(open.describe().contains("rungs at epochs 1, 3, 9, 27, …"));
        assert_eq!(spec(Method::Asha, Some(12)).rungs(10), [1, 3, 9]);
        assert!(spec(Method::Asha, Some(12)).decides_at(3) && !spec(Method::Asha, Some(12)).decides_at(9));
    }

    #[test]
    fn asha_keeps_the_best_third_once_eta_jobs_reported() {
        let s = spec(Method::Asha, Some(9));
        let mut t = Table::new();
        let now = Utc::now();
        // The first two to reach rung 1 always go on.
        assert!(t.observe("a", &s, &flat(0.5, 1), now).is_empty());
        assert!(t.observe("b", &s, &flat(0.3, 1), now).is_empty());
        // The third: kept only among the best ⌈3/3⌉ = 1.
        let d = t.observe("c", &s, &flat(0.4, 1), now);
        assert_eq!(d.len(), 1);
        assert!(d[0].stop);
        assert_eq!((d[0].epoch, d[0].value, d[0].cutoff, d[0].compared), (1, 0.4, 0.3, 3));
        // A tie with the cut-off goes on.
        let d = t.observe("d", &s, &flat(0.3, 1), now);
        assert!(!d[0].stop, "4 values, keep 2: 0.3 and 0.3");
        // Seen again (a resumed supervisor): no new decision, none undone.
        assert!(t.observe("c", &s, &flat(0.4, 3), now).is_empty());
        assert!(t.pruned("c") && !t.pruned("d"));
        // The last rung decides nothing.
        t.observe("b", &s, &flat(0.3, 9), now);
        assert!(t.groups["lr"][&9].iter().any(|(j, _)| j == "b"));
        assert!(!t.decisions.iter().any(|d| d.epoch == 9));
    }

    #[test]
    fn asha_decides_each_rung_in_turn() {
        let s = spec(Method::Asha, Some(27));
        let mut t = Table::new();
        let now = Utc::now();
        for (j, v) in [("a", 0.1), ("b", 0.2), ("c", 0.3)] {
            t.observe(j, &s, &flat(v, 1), now);
        }
        // a reaches rung 3 with two others there already, ahead of it.
        t.groups
            .get_mut("lr")
            .unwrap()
            .entry(3)
            .or_default()
            .extend([("x".to_string(), 0.05), ("y".to_string(), 0.06)]);
        let d = t.observe("a", &s, &flat(0.1, 3), now);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].epoch, d[0].stop, d[0].cutoff), (3, true, 0.05));
    }

    #[test]
    fn median_stops_a_job_worse_than_the_others_median() {
        let s = spec(Method::Median, Some(10));
        let mut t = Table::new();
        let now = Utc::now();
        for (j, v) in [("a", 0.2), ("b", 0.3), ("c", 0.4)] {
            assert!(t.observe(j, &s, &flat(v, 5), now).is_empty(), "fewer than 3 others");
        }
        // d: at epoch 1 (grace) nothing; at 2 its best 0.35 against the
        // median 0.3 of a, b, c: stopped.
        let d = t.observe("d", &s, &[(1, 0.25), (2, 0.35)], now);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(!d[0].stop, "epoch 2: best so far 0.25 beats the median 0.3");
        let d = t.observe("e", &s, &[(1, 0.5), (2, 0.45)], now);
        assert!(d[0].stop);
        assert_eq!((d[0].epoch, d[0].value, d[0].compared), (2, 0.45, 4));
        assert!((d[0].cutoff - 0.325).abs() < 1e-12, "the median of 0.2, 0.3, 0.35, 0.4");
        let max = PruneSpec {
            mode: Mode::Max,
            ..s.clone()
        };
        let mut t = Table::new();
        for (j, v) in [("a", 0.9), ("b", 0.8), ("c", 0.7)] {
            t.observe(j, &max, &flat(v, 3), now);
        }
        assert!(t.observe("d", &max, &[(2, 0.6)], now)[0].stop, "max: lower is worse");
    }

    #[test]
    fn the_table_round_trips() {
        let s = spec(Method::Asha, Some(9));
        let mut t = Table::new();
        assert!(
            Table::load(std::path::Path::new("/nonexistent"))
                .unwrap()
                .decisions
                .is_empty()
        );
        for (j, v) in [("a", 0.1), ("b", 0.2), ("c", 0.3)] {
            t.observe(j, &s, &flat(v, 1), Utc::now());
        }
        let dir = tempfile::tempdir().unwrap();
        t.save(dir.path()).unwrap();
        let mut back = Table::load(dir.path()).unwrap();
        assert_eq!((&back.groups, &back.decisions), (&t.groups, &t.decisions));
        assert!(back.pruned("c") && !back.dirty());
        // Seen before the supervisor died: nothing new, nothing decided.
        assert!(back.observe("c", &s, &flat(0.3, 1), Utc::now()).is_empty());
        assert!(back.observe("a", &s, &flat(0.1, 1), Utc::now()).is_empty());
        assert!(!back.dirty());
    }

    #[test]
    fn a_value_from_the_last_epoch_decides_nothing() {
        // Validation every few epochs: the first value at or past rung 3 is
        // the job's last epoch, 9. It got there: never stopped.
        let s = spec(Method::Asha, Some(9));
        let mut t = Table::new();
        let now = Utc::now();
        for (j, v) in [("a", 0.1), ("b", 0.2)] {
            t.observe(j, &s, &[(1, v), (3, v)], now);
        }
        let d = t.observe("c", &s, &[(1, 0.05), (9, 0.9)], now);
        assert!(d.iter().all(|d| d.epoch == 1), "{d:?}");
        assert!(!t.pruned("c"));
    }

    #[test]
    fn a_withdrawn_stop_no_longer_stands_and_the_job_is_not_judged_again() {
        let s = spec(Method::Asha, Some(27));
        let mut t = Table::new();
        let now = Utc::now();
        for (j, v) in [("a", 0.1), ("b", 0.2), ("c", 0.3)] {
            t.observe(j, &s, &flat(v, 1), now);
        }
        assert!(t.pruned("c"));
        assert!(t.withdraw("c", now) && !t.pruned("c") && !t.withdraw("c", now));
        assert!(t.decisions.iter().any(|d| d.job == "c" && d.withdrawn.is_some()));
        // Run again: its values are recorded, nothing is decided.
        for (j, v) in [("a", 0.1), ("b", 0.2)] {
            t.observe(j, &s, &flat(v, 3), now);
        }
        assert!(t.observe("c", &s, &flat(0.3, 3), now).is_empty());
        assert!(t.groups["lr"][&3].iter().any(|(j, _)| j == "c"));
        let dir = tempfile::tempdir().unwrap();
        t.save(dir.path()).unwrap();
        let mut back = Table::load(dir.path()).unwrap();
        assert!(!back.pruned("c"));
        assert!(
            back.observe("c", &s, &flat(0.3, 9), now).is_empty(),
            "still not judged after a restart"
        );
    }

    #[test]
    fn median_keeps_only_its_stops() {
        let s = spec(Method::Median, Some(10));
        let mut t = Table::new();
        let now = Utc::now();
        for (j, v) in [("a", 0.2), ("b", 0.3), ("c", 0.4)] {
            t.observe(j, &s, &flat(v, 5), now);
        }
        let d = t.observe("d", &s, &flat(0.1, 5), now);
        assert_eq!(d.len(), 4, "a decision at epochs 2 to 5, all go on");
        assert!(t.decisions.is_empty(), "continues are logged, not kept");
        let d = t.observe("e", &s, &flat(0.9, 3), now);
        assert!(d[0].stop);
        assert_eq!(t.decisions.len(), 1);
    }

    #[test]
    fn the_curve_counts_epochs_trained_and_diverged_values_are_the_worst() {
        use crate::metrics::JobMetrics;
        let s = spec(Method::Asha, Some(9));
        let mut m = JobMetrics::default();
        m.epochs.insert("val_loss".into(), vec![(0, 0.5), (1, 0.4)]);
        m.diverged.insert("val_loss".into(), vec![2, 3]);
        assert_eq!(
            curve(&m, &s),
            [(1, 0.5), (2, 0.4), (3, f64::MAX), (4, f64::MAX)],
            "Lightning counts from 0"
        );
        m.epochs.insert("val_loss".into(), vec![(1, 0.5)]);
        assert_eq!(curve(&m, &s), [(1, 0.5), (2, f64::MAX), (3, f64::MAX)]);
        let max = PruneSpec {
            mode: Mode::Max,
            ..s.clone()
        };
        assert_eq!(curve(&m, &max)[1].1, f64::MIN);
        m.by_step = true;
        assert!(curve(&m, &s).is_empty(), "rungs are epochs");
        // A diverged job is the first to go, and its decision says so.
        let mut t = Table::new();
        let now = Utc::now();
        for (j, v) in [("a", 0.1), ("b", 0.2)] {
            t.observe(j, &s, &flat(v, 1), now);
        }
        let d = t.observe("c", &s, &[(1, f64::MAX)], now);
        assert!(d[0].stop && d[0].describe().contains("diverged"), "{}", d[0].describe());
        let dir = tempfile::tempdir().unwrap();
        t.save(dir.path()).unwrap();
        assert!(
            Table::load(dir.path()).unwrap().pruned("c"),
            "the worst value survives JSON"
        );
    }

    #[test]
    fn the_median_of_huge_values_does_not_overflow() {
        assert_eq!(median(vec![f64::MAX, f64::MAX]), f64::MAX);
        assert_eq!(median(vec![f64::MAX, f64::MAX / 2.0]), f64::MAX / 2.0 + f64::MAX / 4.0);
        assert_eq!(median(vec![1.0, 3.0, 2.0]), 2.0);
    }
}
