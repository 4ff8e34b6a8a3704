//! Expansion of one `[[job]]` into many: `[job.sweep]` (a grid, or random
//! samples from a seed) and `[job.cv]` (one job per fold). Works on the raw
//! TOML of the job so that a sweep can set any key a job has, and is
//! deterministic: the same file gives the same jobs with the same names.

use std::collections::BTreeMap;

/// One expanded job: its name, the values the sweep chose, and the job's
/// table with those values set.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub name: String,
    /// Dotted path → value.
    pub swept: BTreeMap<String, toml::Value>,
    pub table: toml::Table,
}

/// The keys a `[job.sweep]` table takes besides the swept paths.
const SWEEP_SETTINGS: [&str; 3] = ["method", "samples", "seed"];

/// The job keys a sweep path may start with, and whether they are tables
/// (a path may go deeper into those).
const SWEEPABLE: [(&str, bool); 14] = [
    ("image", false),
    ("command", false),
    ("gpus", false),
    ("cpus", false),
    ("memory", false),
    ("shm_size", false),
    ("time_limit", false),
    ("env", true),
    ("pass_env", false),
    ("mounts", false),
    ("code", false),
    ("network", false),
    ("train", true),
    ("args", true),
];

/// How many jobs `job` (its raw table) expands into, and the factors of
/// that count as a user would multiply them ("3 × 2 × 5 folds"), without
/// expanding anything. Saturates at `u64::MAX`, which every limit refuses.
/// A malformed sweep or cv counts as one: [`expand`] says what is wrong.
pub fn count(job: &toml::Table) -> (u64, Vec<String>) {
    let mut factors: Vec<(u64, String)> = Vec::new();
    if let Some(toml::Value::Table(spec)) = job.get("sweep") {
        match spec.get("method").and_then(|m| m.as_str()) {
            Some("random") => {
                if let Some(n) = spec.get("samples").and_then(|n| n.as_integer())
                    && crate::limits::SAMPLES.contains(n)
                {
                    factors.push((n as u64, format!("{n} samples")));
                }
            }
            _ => {
                for (key, value) in spec.iter().filter(|(k, _)| !SWEEP_SETTINGS.contains(&k.as_str())) {
                    if let toml::Value::Array(a) = value {
                        factors.push((a.len() as u64, format!("{} ({key})", a.len())));
                    }
                }
            }
        }
    }
    if let Some(k) = job
        .get("cv")
        .and_then(|cv| cv.get("folds"))
        .and_then(|k| k.as_integer())
        .filter(|k| crate::limits::FOLDS.contains(*k))
    {
        factors.push((k as u64, format!("{k} folds")));
    }
    let n = factors
        .iter()
        .try_fold(1u64, |acc, (f, _)| acc.checked_mul(*f))
        .unwrap_or(u64::MAX);
    (n, factors.into_iter().map(|(_, s)| s).collect())
}

/// A count of jobs for people: `1,000,000`, or "more than 18446744073709551614"
/// where [`count`] saturated.
pub fn jobs(n: u64) -> String {
    if n == u64::MAX {
        return format!("more than {}", thousands(u64::MAX - 1));
    }
    thousands(n)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Expands `job` (its raw table, `name` set). A job without `sweep` or `cv`
/// is one variant of itself. Errors name the offending key. A job that
/// would expand into more than [`crate::limits::EXPANDED`] jobs is refused
/// before anything is expanded.
pub fn expand(name: &str, job: &toml::Table) -> Result<Vec<Variant>, String> {
    let (n, factors) = count(job);
    let most = crate::limits::EXPANDED;
    if n > most.max {
        return Err(format!(
            "the sweep would expand into {} = {} jobs; one [[job]] expands into at most {}",
            factors.join(" × "),
            jobs(n),
            most.shown.1
        ));
    }
    let mut base = job.clone();
    let sweep = base.remove("sweep");
    let cv = base.remove("cv");
    let mut variants = match sweep {
        None => vec![Variant {
            name: name.to_string(),
            swept: BTreeMap::new(),
            table: base,
        }],
        Some(toml::Value::Table(spec)) => sweep_variants(name, &base, &spec)?,
        Some(other) => return Err(format!("`sweep` must be a table, not {}", other.type_str())),
    };
    if let Some(cv) = cv {
        let folds = folds(&cv)?;
        variants = variants
            .into_iter()
            .flat_map(|v| {
                (0..folds).map(move |fold| {
                    let mut table = v.table.clone();
                    let mut cv = toml::Table::new();
                    cv.insert("folds".into(), toml::Value::Integer(folds));
                    cv.insert("fold".into(), toml::Value::Integer(fold));
                    set_path(&mut table, &["train", "cv"], toml::Value::Table(cv)).expect("train is a table");
                    Variant {
                        name: format!("{}_fold-{fold}", v.name),
                        swept: v.swept.clone(),
                        table,
                    }
                })
            })
            .collect();
    }
    Ok(variants)
}

fn folds(cv: &toml::Value) -> Result<i64, String> {
    let table = cv.as_table().ok_or("`cv` must be a table such as { folds = 5 }")?;
    if let Some(bad) = table.keys().find(|k| k.as_str() != "folds") {
        return Err(format!("unknown key `cv.{bad}`; `cv` takes `folds`"));
    }
    let r = crate::limits::FOLDS;
    match table.get("folds") {
        Some(toml::Value::Integer(k)) if r.contains(*k) => Ok(*k),
        Some(toml::Value::Integer(k)) => Err(format!("`cv.folds` = {k}: must be between {} and {}", r.min, r.max)),
        Some(other) => Err(format!("`cv.folds` must be an integer, not {}", other.type_str())),
        None => Err("`cv` needs `folds`, e.g. folds = 5".into()),
    }
}

fn sweep_variants(name: &str, base: &toml::Table, spec: &toml::Table) -> Result<Vec<Variant>, String> {
    let method = match spec.get("method") {
        None => "grid",
        Some(toml::Value::String(m)) if m == "grid" || m == "random" => m.as_str(),
        Some(other) => return Err(format!("`sweep.method` = {other}: expected \"grid\" or \"random\"")),
    };
    let axes: Vec<(&String, &toml::Value)> = spec
        .iter()
        .filter(|(k, _)| !SWEEP_SETTINGS.contains(&k.as_str()))
        .collect();
    if axes.is_empty() {
        return Err("`sweep` has no keys to sweep, e.g. \"train.lr\" = [1e-2, 1e-3]".into());
    }
    for (key, _) in &axes {
        check_path(key)?;
    }
    let mut chosen: Vec<(Vec<(String, toml::Value)>, String)> = Vec::new();
    if method == "grid" {
        for key in ["samples", "seed"] {
            if spec.contains_key(key) {
                return Err(format!("`sweep.{key}` only applies to method = \"random\""));
            }
        }
        let mut lists = Vec::new();
        for (key, value) in &axes {
            match value {
                toml::Value::Array(a) if a.is_empty() => return Err(format!("`sweep.\"{key}\"` is an empty list")),
                toml::Value::Array(a) => lists.push((key.to_string(), a.clone())),
                other => {
                    return Err(format!(
                        "`sweep.\"{key}\"` must be a list of values for a grid, not {} (distributions need method = \"random\")",
                        other.type_str()
                    ));
                }
            }
        }
        for combo in cartesian(&lists) {
            let label = combo
                .iter()
                .map(|(k, v)| format!("{}-{}", last_segment(k), slug(v)))
                .collect::<Vec<_>>();
            chosen.push((combo, format!("{name}_{}", label.join("_"))));
        }
    } else {
        let r = crate::limits::SAMPLES;
        let samples = match spec.get("samples") {
            Some(toml::Value::Integer(n)) if r.contains(*n) => *n as usize,
            Some(other) => {
                return Err(format!(
                    "`sweep.samples` = {other}: must be an integer between {} and {}",
                    r.min, r.max
                ));
            }
            None => return Err("a random sweep needs `samples`, e.g. samples = 20".into()),
        };
        let seed = match spec.get("seed") {
            Some(toml::Value::Integer(s)) => *s as u64,
            Some(other) => return Err(format!("`sweep.seed` must be an integer, not {}", other.type_str())),
            None => 0,
        };
        let dists: Vec<(String, Distribution)> = axes
            .iter()
            .map(|(k, v)| Ok((k.to_string(), Distribution::parse(k, v)?)))
            .collect::<Result<_, String>>()?;
        let mut rng = SplitMix64(seed);
        let width = (samples - 1).to_string().len().max(2);
        for i in 0..samples {
            let combo = dists.iter().map(|(k, d)| (k.clone(), d.sample(&mut rng))).collect();
            chosen.push((combo, format!("{name}_r{i:0width$}")));
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (combo, mut vname) in chosen {
        if !seen.insert(vname.clone()) {
            // Two values with the same slug (e.g. 0.1 and "0.1"): number them.
            vname = format!("{vname}_{}", out.len());
            seen.insert(vname.clone());
        }
        let mut table = base.clone();
        let mut swept = BTreeMap::new();
        for (key, value) in combo {
            let parts = path_of(&key);
            set_path(&mut table, &parts, value.clone()).map_err(|e| format!("`sweep.\"{key}\"`: {e}"))?;
            swept.insert(key, value);
        }
        out.push(Variant {
            name: vname,
            swept,
            table,
        });
    }
    Ok(out)
}

/// The table path a sweep key sets: its dotted parts, except in `args`,
/// whose keys are option names that may hold dots themselves
/// (`args.model.learning_rate` sets `args["model.learning_rate"]`).
fn path_of(key: &str) -> Vec<&str> {
    match key.split_once('.') {
        Some(("args", option)) => vec!["args", option],
        _ => key.split('.').collect(),
    }
}

/// A path must start at a job key; only table keys go deeper.
fn check_path(key: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`sweep.\"{key}\"`: a path has no empty parts"));
    }
    match SWEEPABLE.iter().find(|(k, _)| *k == parts[0]) {
        Some((_, true)) if parts.len() >= 2 => Ok(()),
        Some((k, true)) => Err(format!(
            "`sweep.\"{key}\"`: `{k}` is a table; sweep a key inside it, e.g. \"{k}.x\""
        )),
        Some((k, false)) if parts.len() == 1 => Ok(()),
        Some((k, false)) => Err(format!("`sweep.\"{key}\"`: `{k}` has no keys inside it")),
        None => {
            let names: Vec<&str> = SWEEPABLE.iter().map(|(k, _)| *k).collect();
            let hint = super::suggest(parts[0], &names)
                .unwrap_or_default()
                .replace("valid keys here", "a path starts with");
            Err(format!(
                "`sweep.\"{key}\"`: `{}` is not a job key that can be swept; {hint}",
                parts[0]
            ))
        }
    }
}

/// Sets `value` at `path` in `table`, creating tables on the way.
fn set_path(table: &mut toml::Table, path: &[&str], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("a non-empty path");
    let mut cur = table;
    for (i, p) in parents.iter().enumerate() {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            other => {
                return Err(format!(
                    "`{}` is a {}, not a table",
                    path[..=i].join("."),
                    other.type_str()
                ));
            }
        };
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

fn cartesian(lists: &[(String, Vec<toml::Value>)]) -> Vec<Vec<(String, toml::Value)>> {
    let mut out: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
    for (key, values) in lists {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push((key.clone(), v.clone()));
                    next
                })
            })
            .collect();
    }
    out
}

fn last_segment(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// A value as part of a job name: letters, digits, `.` and `-` only.
fn slug(v: &toml::Value) -> String {
    let raw = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => format!("{f}"),
        other => other.to_string(),
    };
    let s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "x".into()
    } else {
        s.chars().take(40).collect()
    }
}

/// What a random sweep draws a key's value from.
#[derive(Debug, Clone)]
enum Distribution {
    Choice(Vec<toml::Value>),
    Uniform(f64, f64),
    LogUniform(f64, f64),
    Int(i64, i64),
}

impl Distribution {
    fn parse(key: &str, v: &toml::Value) -> Result<Distribution, String> {
        let bad = || {
            format!(
                "`sweep.\"{key}\"` must be a list or one of {{ uniform = [a, b] }}, {{ log_uniform = [a, b] }}, {{ int = [a, b] }}"
            )
        };
        match v {
            toml::Value::Array(a) if a.is_empty() => Err(format!("`sweep.\"{key}\"` is an empty list")),
            toml::Value::Array(a) => Ok(Distribution::Choice(a.clone())),
            toml::Value::Table(t) if t.len() == 1 => {
                let (kind, range) = t.iter().next().expect("one entry");
                let pair = match range.as_array().map(|a| a.as_slice()) {
                    Some([a, b]) => (a.clone(), b.clone()),
                    _ => return Err(format!("`sweep.\"{key}\".{kind}` must be a pair [a, b]")),
                };
                let num = |x: &toml::Value| x.as_float().or_else(|| x.as_integer().map(|i| i as f64));
                match kind.as_str() {
                    "uniform" | "log_uniform" => {
                        let (Some(a), Some(b)) = (num(&pair.0), num(&pair.1)) else {
                            return Err(format!("`sweep.\"{key}\".{kind}` takes two numbers"));
                        };
                        if a >= b || a.is_nan() || b.is_nan() || !a.is_finite() || !b.is_finite() {
                            return Err(format!(
                                "`sweep.\"{key}\".{kind}` = [{a}, {b}]: the range is empty (a must be below b)"
                            ));
                        }
                        if kind == "log_uniform" {
                            if a <= 0.0 {
                                return Err(format!(
                                    "`sweep.\"{key}\".log_uniform` = [{a}, {b}]: both ends must be above 0"
                                ));
                            }
                            Ok(Distribution::LogUniform(a, b))
                        } else {
                            Ok(Distribution::Uniform(a, b))
                        }
                    }
                    "int" => match (pair.0.as_integer(), pair.1.as_integer()) {
                        (Some(a), Some(b)) if a <= b => Ok(Distribution::Int(a, b)),
                        (Some(a), Some(b)) => Err(format!(
                            "`sweep.\"{key}\".int` = [{a}, {b}]: the range is empty (a must not exceed b)"
                        )),
                        _ => Err(format!("`sweep.\"{key}\".int` takes two integers")),
                    },
                    other => Err(format!("`sweep.\"{key}\"`: unknown distribution `{other}`; {}", bad())),
                }
            }
            _ => Err(bad()),
        }
    }

    fn sample(&self, rng: &mut SplitMix64) -> toml::Value {
        match self {
            Distribution::Choice(values) => {
                values[(rng.next_f64() * values.len() as f64) as usize % values.len()].clone()
            }
            Distribution::Uniform(a, b) => toml::Value::Float(round_sig(a + rng.next_f64() * (b - a))),
            Distribution::LogUniform(a, b) => {
                toml::Value::Float(round_sig((a.ln() + rng.next_f64() * (b.ln() - a.ln())).exp()))
            }
            Distribution::Int(a, b) => {
                let span = (b - a + 1) as f64;
                toml::Value::Integer(a + ((rng.next_f64() * span) as i64).min(b - a))
            }
        }
    }
}

/// Six significant digits: readable in job.json and reports, and exactly
/// reproducible.
fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = 6 - x.abs().log10().ceil() as i32;
    let factor = 10f64.powi(digits);
    (x * factor).round() / factor
}

/// SplitMix64: tiny, and its stream is fixed forever, so a seed keeps
/// giving the same jobs whatever version of tb or of a crate is installed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_grid_with_folds_gives_the_product() {
        let j = job(
            "[train]\nmodel = \"unet\"\n[sweep]\n\"train.lr\" = [1e-2, 1e-3, 1e-4]\n\"train.model_args.channels\" = [16, 32]\n[cv]\nfolds = 3\n",
        );
        let v = expand("lr", &j).unwrap();
        assert_eq!(v.len(), 18);
        let names: Vec<&str> = v.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names[0], "lr_lr-0.01_channels-16_fold-0");
        assert_eq!(names[1], "lr_lr-0.01_channels-16_fold-1");
        assert_eq!(names[3], "lr_lr-0.01_channels-32_fold-0");
        assert_eq!(names[17], "lr_lr-0.0001_channels-32_fold-2");
        assert_eq!(
            names.iter().collect::<std::collections::HashSet<_>>().len(),
            18,
            "names are unique"
        );
        let last = &v[17];
        assert_eq!(last.table["train"]["lr"].as_float(), Some(1e-4));
        assert_eq!(last.table["train"]["model_args"]["channels"].as_integer(), Some(32));
        assert_eq!(last.table["train"]["cv"]["folds"].as_integer(), Some(3));
        assert_eq!(last.table["train"]["cv"]["fold"].as_integer(), Some(2));
        assert_eq!(last.table["train"]["model"].as_str(), Some("unet"));
        assert!(!last.table.contains_key("sweep") && !last.table.contains_key("cv"));
        assert_eq!(last.swept["train.lr"].as_float(), Some(1e-4));
        assert_eq!(expand("lr", &j).unwrap(), v, "expansion is deterministic");
    }

    #[test]
    fn random_samples_are_reproducible_from_the_seed() {
        let text = "[sweep]\nmethod = \"random\"\nsamples = 5\nseed = 7\n\"train.lr\" = { log_uniform = [1e-5, 1e-1] }\n\"train.dropout\" = { uniform = [0.0, 0.5] }\n\"train.batch_size\" = { int = [8, 64] }\n\"train.model\" = [\"unet\", \"fcn\"]\n";
        let a = expand("r", &job(text)).unwrap();
        let b = expand("r", &job(text)).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            ["r_r00", "r_r01", "r_r02", "r_r03", "r_r04"]
        );
        for v in &a {
            let lr = v.swept["train.lr"].as_float().unwrap();
            assert!((1e-5..=1e-1).contains(&lr), "{lr}");
            let bs = v.swept["train.batch_size"].as_integer().unwrap();
            assert!((8..=64).contains(&bs));
            assert!(["unet", "fcn"].contains(&v.swept["train.model"].as_str().unwrap()));
        }
        let lrs: std::collections::HashSet<u64> = a
            .iter()
            .map(|v| v.swept["train.lr"].as_float().unwrap().to_bits())
            .collect();
        assert_eq!(lrs.len(), 5, "samples differ");
        let other = expand("r", &job(&text.replace("seed = 7", "seed = 8"))).unwrap();
        assert_ne!(other[0].swept, a[0].swept, "another seed, other samples");
    }

    #[test]
    fn bad_sweeps_name_the_key() {
        let err = |t: &str| expand("j", &job(t)).unwrap_err();
        assert_eq!(
            err("[sweep]\n\"train.lr\" = []\n"),
            "`sweep.\"train.lr\"` is an empty list"
        );
        assert!(
            err("[sweep]\n\"trian.lr\" = [1]\n")
                .starts_with("`sweep.\"trian.lr\"`: `trian` is not a job key that can be swept; did you mean `train`?")
        );
        assert_eq!(
            err("[sweep]\n\"memory.x\" = [1]\n"),
            "`sweep.\"memory.x\"`: `memory` has no keys inside it"
        );
        assert!(
            err("[sweep]\nmethod = \"random\"\nsamples = 3\n\"train.lr\" = { uniform = [1, 0.5] }\n")
                .contains("the range is empty")
        );
        assert!(
            err("[sweep]\nmethod = \"random\"\nsamples = 3\n\"train.lr\" = { log_uniform = [0, 1] }\n")
                .contains("both ends must be above 0")
        );
        assert!(
            err("[sweep]\nmethod = \"random\"\nsamples = 3\n\"train.lr\" = { normal = [0, 1] }\n")
                .contains("unknown distribution `normal`")
        );
        assert_eq!(
            err("[sweep]\nmethod = \"random\"\n\"train.lr\" = [1]\n"),
            "a random sweep needs `samples`, e.g. samples = 20"
        );
        assert!(err("[sweep]\nmethod = \"bayes\"\n\"train.lr\" = [1]\n").contains("expected \"grid\" or \"random\""));
        assert!(err("[sweep]\n\"train.lr\" = { uniform = [0, 1] }\n").contains("must be a list of values for a grid"));
        assert_eq!(err("[cv]\nfolds = 1\n"), "`cv.folds` = 1: must be between 2 and 100");
        assert_eq!(err("[cv]\nfold = 3\n"), "unknown key `cv.fold`; `cv` takes `folds`");
        assert_eq!(
            err("[sweep]\nmethod = \"grid\"\n"),
            "`sweep` has no keys to sweep, e.g. \"train.lr\" = [1e-2, 1e-3]"
        );
    }

    #[test]
    fn a_huge_grid_is_counted_and_refused_before_it_is_expanded() {
        let thousand: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let list = format!("[{}]", thousand.join(", "));
        let grid = format!("[sweep]\n\"train.a\" = {list}\n\"train.b\" = {list}\n\"train.c\" = {list}\n");
        let started = std::time::Instant::now();
        let e = expand("big", &job(&grid)).unwrap_err();
        assert_eq!(
            e,
            "the sweep would expand into 1000 (train.a) × 1000 (train.b) × 1000 (train.c) = 1,000,000,000 jobs; \
             one [[job]] expands into at most 100,000"
        );
        assert!(started.elapsed().as_secs() < 5, "it was expanded first");

        // Folds multiply; exactly the limit is in.
        let j = job("[sweep]\nmethod = \"random\"\nsamples = 100000\n\"train.a\" = [1]\n[cv]\nfolds = 2\n");
        assert_eq!(count(&j).0, 200_000);
        assert!(
            expand("r", &j)
                .unwrap_err()
                .contains("100000 samples × 2 folds = 200,000 jobs")
        );
        let j = job("[sweep]\n\"train.a\" = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n[cv]\nfolds = 10\n");
        assert_eq!(count(&j).0, 100);

        // A product past u64 saturates instead of wrapping.
        let mut axes = String::from("[sweep]\n");
        for i in 0..7 {
            axes.push_str(&format!("\"train.k{i}\" = {list}\n"));
        }
        let (n, _) = count(&job(&axes));
        assert_eq!(n, u64::MAX);
        assert!(jobs(n).starts_with("more than 18,446,744,073,709,551,614"));
    }

    #[test]
    fn a_sweep_reaches_any_job_key() {
        let v = expand("m", &job("[sweep]\nmemory = [\"4g\", \"8g\"]\n\"env.SEED\" = [1, 2]\n")).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].name, "m_SEED-1_memory-4g", "keys in sorted order");
        assert_eq!(v[0].table["memory"].as_str(), Some("4g"));
        assert_eq!(v[0].table["env"]["SEED"].as_integer(), Some(1));
    }
}
