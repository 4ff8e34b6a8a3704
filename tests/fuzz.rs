//! The batch-file parser and validator under hostile input, for a bounded
//! time (`make fuzz`, `TB_FUZZ_SECONDS`, default 60): files built from the
//! real keys and their typos, huge numbers, odd units, huge grids, control
//! characters, bytes that are not UTF-8 and deep tables, generated with
//! proptest. Two properties:
//!
//! (a) no input panics, and every input either validates or is refused
//!     (exit 2) with an `error:` message that names no Rust type;
//! (b) every input that validates also starts under `tb batch --dry-run`.
//!
//! Most inputs go through the library in-process (`settings::resolve`, the
//! directory preflight, and — for an accepted plan — a batch directory
//! created and read back); a share of them also through the real `tb`
//! binary, `tb validate` and `tb batch --dry-run` against the engine.
//! The figures are printed at the end; every failing input is kept under
//! `target/fuzz-failures/`.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tb::gpu::Inventory;
use tb::settings::{self, Overrides};

const BATCH_KEYS: &[&str] = &[
    "name",
    "concurrency",
    "retries",
    "continue_on_timeout",
    "downloads",
    "gpu_mode",
    "on_finish",
    "deadline",
    "backend",
    "mlflow",
    "warm_start",
    "deploy",
];

const JOB_KEYS: &[&str] = &[
    "image",
    "command",
    "gpus",
    "cpus",
    "memory",
    "shm_size",
    "time_limit",
    "env",
    "pass_env",
    "mounts",
    "code",
    "network",
    "args",
];

const SWEEP_PATHS: &[&str] = &[
    "train.lr",
    "train.model_args.channels",
    "memory",
    "shm_size",
    "time_limit",
    "cpus",
    "gpus",
    "env.SEED",
    "args.lr",
    "image",
    "trian.lr",
    "memory.x",
    "train",
];

/// Values as TOML source: the hostile ones next to ordinary ones.
const VALUES: &[&str] = &[
    "0",
    "1",
    "2",
    "-1",
    "65",
    "1025",
    "4097",
    "0.001",
    "0.5",
    "1.5",
    "1e308",
    "-0.0",
    "nan",
    "inf",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "true",
    "1979-05-27T07:32:00Z",
    "\"\"",
    "\"auto\"",
    "\"all\"",
    "\"8g\"",
    "\"1\"",
    "\"6m\"",
    "\"5m\"",
    "\"64t\"",
    "\"65t\"",
    "\"0.5k\"",
    "\"1e3g\"",
    "\"8x\"",
    "\"-5m\"",
    "\"99999999999999999999g\"",
    "\"18446744073709551616\"",
    "\"23h\"",
    "\"1h 30m\"",
    "\"365d\"",
    "\"366d\"",
    "\"0s\"",
    "\"500ms\"",
    "\"1ns\"",
    "\"18446744073709551615s\"",
    "\"99999999999999999999999s\"",
    "\"07:00\"",
    "\"25:00\"",
    "\"2999-01-01 07:00\"",
    "\"2000-01-01 07:00\"",
    "\"local\"",
    "\"slurm\"",
    "\"pbs\"",
    "\"device_request\"",
    "\"env\"",
    "\"min\"",
    "\"asha\"",
    "\"median\"",
    "\"csv\"",
    "\"tb-base:bookworm\"",
    "\"tb-no-such-image:1\"",
    "\"./data\"",
    "\"./dl\"",
    "\"/proc/tb-fuzz/downloads\"",
    "\"~/x\"",
    "\"../x\"",
    "\"a/b\"",
    "\"a\\u001b[31mred\"",
    "\"\\u0000\"",
    "\"\\u202e\"",
    "\"日本語\"",
    "[]",
    "[\"true\"]",
    "[\"python3\", \"-c\", \"print(1)\"]",
    "[\"./data:/data:ro\"]",
    "[\"/proc:/out\"]",
    "[\"a:b:c:d\"]",
    "[\"TB_JOB\", \"HOME\", \"1X\"]",
    "[1, \"a\", 2.5]",
    "{ A = \"1\", B = 2 }",
    "{ TB_JOB = \"x\" }",
    "{ \"--lr\" = 1 }",
    "{ lr = 0.1, \"trainer.max_epochs\" = 3 }",
    "{ uniform = [0, 1] }",
    "{ log_uniform = [0, 1] }",
    "{ int = [5, 1] }",
    "{ x = { y = { z = 1 } } }",
];

/// Values a key takes, as TOML source: those before `|` are valid, the
/// edges and what lies past them come after.
fn values_of(key: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match key {
        "name" => (&["\"night\""], &["\"a b\"", "\"x\\u001b\"", "\"\""]),
        "concurrency" => (&["1", "\"auto\"", "1024"], &["1025", "0", "\"4\""]),
        "retries" => (&["0", "3", "100"], &["101", "-1"]),
        "continue_on_timeout" => (&["true", "false"], &["1"]),
        "downloads" => (
            &["\"./dl\"", "\"./data/x/y\""],
            &["\"/proc/tb-fuzz/downloads\"", "\"./data/f/x\""],
        ),
        "gpu_mode" => (&["\"env\"", "\"device_request\""], &["\"cuda\"", "3"]),
        "on_finish" => (&["[\"true\"]"], &["[]", "[\"\"]"]),
        "deadline" => (
            &["\"07:00\"", "\"2000-01-01 07:00\""],
            &["\"2999-01-01 07:00\"", "\"25:00\""],
        ),
        "backend" => (&["\"local\""], &["\"slurm\"", "\"pbs\""]),
        "mlflow" => (
            &["{ tracking_uri = \"http://127.0.0.1:5000\", experiment = \"x\" }"],
            &[
                "3",
                "{ tracking_uri = \"ftp://x\" }",
                "{ tracking_uri = \"http://u:p@h\" }",
                "{ artifacts = [\"nope\"] }",
            ],
        ),
        "warm_start" => (&["true", "false"], &["1", "\"yes\""]),
        "deploy" => (
            &["{ dir = \"./deployed\" }", "{ dir = \"./data/d/e\" }"],
            &["3", "{ }", "{ dir = \"\" }", "{ dri = \"x\" }", "{ dir = 3 }"],
        ),
        "image" => (&["\"tb-base:bookworm\""], &["\"tb-no-such-image:1\"", "\"\""]),
        "command" => (
            &["[\"true\"]", "[\"python3\", \"-c\", \"print(1)\"]"],
            &["[]", "\"true\""],
        ),
        "gpus" => (&["0", "\"auto\""], &["\"all\"", "1", "64", "65", "-1", "4294967296"]),
        "cpus" => (&["1", "0.5", "0.01", "4096"], &["0.001", "4097", "1e308", "nan", "-2"]),
        "memory" | "shm_size" => (
            &["\"8g\"", "\"6m\"", "\"64t\"", "\"1.5g\"", "\"1e3g\"", "7000000"],
            &[
                "\"5m\"",
                "\"1\"",
                "1",
                "\"65t\"",
                "\"0.5k\"",
                "\"99999999999999999999g\"",
                "\"18446744073709551616\"",
                "9223372036854775807",
                "\"8x\"",
            ],
        ),
        "time_limit" => (
            &["\"23h\"", "\"1h 30m\"", "\"365d\"", "\"1s\"", "\"1s 1ns\""],
            &[
                "\"366d\"",
                "\"500ms\"",
                "\"1ns\"",
                "\"0s\"",
                "\"18446744073709551615s\"",
                "\"99999999999999999999999s\"",
                "\"soon\"",
            ],
        ),
        "env" => (
            &["{ A = \"1\", B = 2 }"],
            &["{ TB_JOB = \"x\" }", "{ \"1X\" = 1 }", "{ A = [1] }"],
        ),
        "pass_env" => (&["[\"HOME\"]"], &["[\"TB_JOB\"]", "[\"1X\"]"]),
        "mounts" => (
            &["[\"./data:/data:ro\"]"],
            &["[\"./nope:/x\"]", "[\"./data:/out\"]", "[\"a:b:c:d\"]"],
        ),
        "code" => (&["\"./data\""], &["\"./nope\""]),
        "network" => (&["\"bridge\"", "\"none\""], &["\"\""]),
        "args" => (
            &["{ lr = 0.1, \"trainer.max_epochs\" = 3 }"],
            &["{ \"--lr\" = 1 }", "{ x = { y = 1 } }"],
        ),
        _ => (&[], VALUES),
    }
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (0..VALUES.len()).prop_map(|i| VALUES[i].to_string()),
        1 => (1usize..3000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
        1 => (0..VALUES.len(), 0..VALUES.len()).prop_map(|(a, b)| format!("[{}, {}]", VALUES[a], VALUES[b])),
    ]
}

/// One line of `[defaults]` at or past the edge of what its key takes: in
/// an otherwise calm file, the one value validation must judge.
fn edge() -> impl Strategy<Value = String> {
    (0..JOB_KEYS.len(), any::<usize>()).prop_map(|(k, v)| {
        let (_, edges) = values_of(JOB_KEYS[k]);
        format!("{} = {}\n", JOB_KEYS[k], edges[v % edges.len()])
    })
}

/// How hostile a file is: the chance of each line being damaged.
#[derive(Debug, Clone, Copy)]
struct Mood(f64);

/// A `key = value` line: a real key with a valid value, or — as often as
/// the mood says — a typo of the key, an edge value, or any value.
fn entry(keys: &'static [&'static str], mood: Mood) -> impl Strategy<Value = String> {
    (
        0..keys.len(),
        0..6usize,
        any::<usize>(),
        any::<usize>(),
        prop::bool::weighted(mood.0),
    )
        .prop_map(move |(k, how, at, v, hostile)| {
            let real = keys[k];
            let (valid, edges) = values_of(real);
            if !hostile && !valid.is_empty() {
                return format!("{real} = {}\n", valid[v % valid.len()]);
            }
            let mut c: Vec<char> = real.chars().collect();
            let (i, n) = (at % c.len(), c.len());
            let pool = match how {
                // A dropped letter, two swapped, one doubled: typos.
                0 => {
                    c.remove(i);
                    valid
                }
                1 if n > 1 => {
                    c.swap(i, (i + 1) % n);
                    valid
                }
                2 => {
                    let d = c[i];
                    c.insert(i, d);
                    valid
                }
                3 => VALUES,
                _ => edges,
            };
            let key: String = c.into_iter().collect();
            let key = if key.is_empty() { "x".into() } else { key };
            let pool = if pool.is_empty() { VALUES } else { pool };
            format!("{key} = {}\n", pool[v % pool.len()])
        })
}

fn entries(keys: &'static [&'static str], most: usize, mood: Mood) -> impl Strategy<Value = String> {
    prop::collection::vec(entry(keys, mood), 0..most).prop_map(|lines| lines.concat())
}

/// A `[job.sweep]`: a grid of up to 3 lists up to 1000 long (products up
/// to 10^9 — refused — and up to 25,000 accepted, which validate in a
/// second or two), or a random sweep; and maybe `[job.cv]`.
fn sweep(mood: Mood) -> impl Strategy<Value = String> {
    let sizes = if mood.0 < 0.05 {
        vec![1usize, 2, 3, 10]
    } else {
        vec![0usize, 1, 2, 3, 5, 1000]
    };
    let paths = if mood.0 < 0.05 { 8 } else { SWEEP_PATHS.len() };
    let axis = (0..paths, prop::sample::select(sizes), any::<bool>()).prop_map(|(p, n, quoted)| {
        let values: Vec<String> = (0..n)
            .map(|i| {
                if quoted {
                    format!("\"{}m\"", 6 + i)
                } else {
                    format!("{}", i + 1)
                }
            })
            .collect();
        format!("\"{}\" = [{}]\n", SWEEP_PATHS[p], values.join(", "))
    });
    let grid = prop::collection::vec(axis, 1..4).prop_map(|a| a.concat());
    let calm = mood.0 < 0.05;
    let random = (
        prop::sample::select(if calm {
            vec!["1", "5", "50"]
        } else {
            // 100,000 itself is left to the unit tests: it validates, slowly.
            vec!["1", "5", "50", "100001", "-1", "\"x\""]
        }),
        any::<i64>(),
        0..if calm { 2 } else { SWEEP_PATHS.len() },
        if calm {
            prop::sample::select(vec![
                "[1, 2]",
                "{ uniform = [0, 1] }",
                "{ log_uniform = [1e-5, 1] }",
                "{ int = [1, 9] }",
            ])
            .prop_map(String::from)
            .boxed()
        } else {
            value().boxed()
        },
    )
        .prop_map(|(n, seed, p, v)| {
            format!(
                "method = \"random\"\nsamples = {n}\nseed = {seed}\n\"{}\" = {v}\n",
                SWEEP_PATHS[p]
            )
        });
    let cv = prop::option::of(prop::sample::select(vec!["2", "3", "100", "1", "101", "\"x\""]));
    (prop_oneof![3 => grid, 1 => random], cv).prop_map(|(s, cv)| {
        let mut out = format!("[job.sweep]\n{s}");
        if let Some(k) = cv {
            out.push_str(&format!("[job.cv]\nfolds = {k}\n"));
        }
        out
    })
}

fn job(mood: Mood) -> impl Strategy<Value = String> {
    (
        (prop::bool::weighted(mood.0), 0..5usize).prop_map(|(bad, i)| {
            if bad {
                ["", "../x", "a b", "x\\u001b", "é"][i]
            } else {
                ["a", "b", "lr"][i % 3]
            }
        }),
        prop::bool::weighted(1.0 - mood.0),
        entries(JOB_KEYS, 4, mood),
        prop::option::weighted(0.3, sweep(mood)),
        prop::option::weighted(
            0.15,
            prop::sample::select(vec![
                "[job.prune]\ngrace = 1\nreduction = 3\nmax_epochs = 9\n",
                "[job.prune]\ngrace = 2000000\n",
                "[job.prune]\nmax_epochs = 18446744073709551615\n",
                "[job.prune]\nreduction = 1\nmethod = \"bayes\"\n",
                "[job.prune]\nmetric = \"val_acc\"\n",
                "[job.metrics]\nmonitor = \"val_acc\"\nmode = \"max\"\n",
                "[job.train]\nmax_epochs = 5\nmodel = \"unet\"\n",
                "[job.train.a.b.c.d.e.f.g]\nx = 1\n",
            ]),
        ),
    )
        .prop_map(|(name, command, keys, sweep, extra)| {
            // `#` is replaced by the job's number: names mostly differ.
            let mut out = format!("[[job]]\nname = \"{name}#\"\n");
            if command {
                out.push_str("command = [\"true\"]\ngpus = 0\n");
            }
            out.push_str(&keys);
            out.push_str(extra.unwrap_or_default());
            out.push_str(&sweep.unwrap_or_default());
            out
        })
}

/// A whole file, as bytes, then maybe damaged: bytes that are not UTF-8,
/// raw control characters, a cut, deep nesting, or noise. The mood sets
/// how hostile the lines are, so that many files validate too.
fn file() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![0.0, 0.02, 0.1, 0.4]).prop_flat_map(|p| {
        let mood = Mood(p);
        let text = (
            prop::option::weighted(0.6, entries(BATCH_KEYS, 4, mood)),
            entries(JOB_KEYS, 5, mood),
            prop::collection::vec(job(mood), if p < 0.05 { 1..5 } else { 0..5 }),
            prop::option::weighted(0.5, edge()),
        )
            .prop_map(|(batch, defaults, jobs, edge)| {
                let mut out = String::new();
                out.push_str("[batch]\ndownloads = \"./dl\"\n");
                if let Some(b) = batch {
                    out.push_str(&b);
                }
                out.push_str("[defaults]\nimage = \"tb-base:bookworm\"\n");
                out.push_str(&defaults);
                out.push_str(&edge.unwrap_or_default());
                for (i, j) in jobs.iter().enumerate() {
                    out.push_str(&j.replacen('#', &i.to_string(), 1));
                }
                out
            });
        let damage = prop_oneof![
            (1.0 + 60.0 * (0.5 - p)) as u32 => Just(Damage::None),
            1 => (any::<usize>(), prop::sample::select(vec![
                &b"\xff"[..], b"\xc3", b"\xed\xa0\x80", b"\x00", b"\x1b[31m", b"\r", b"\x7f", b"\xe2\x80\xae"
            ])).prop_map(|(at, bytes)| Damage::Insert(at, bytes.to_vec())),
            1 => any::<usize>().prop_map(Damage::Cut),
            1 => (prop::sample::select(vec![10usize, 100, 5000]), any::<bool>()).prop_map(|(n, t)| Damage::Deep(n, t)),
            1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Damage::Noise),
        ];
        (text, damage).prop_map(|(text, damage)| damage.apply(text.into_bytes()))
    })
}

#[derive(Debug, Clone)]
enum Damage {
    None,
    Insert(usize, Vec<u8>),
    Cut(usize),
    /// Nested tables (`true`: dotted table headers) or arrays.
    Deep(usize, bool),
    Noise(Vec<u8>),
}

impl Damage {
    fn apply(self, mut bytes: Vec<u8>) -> Vec<u8> {
        match self {
            Damage::None => bytes,
            Damage::Insert(at, b) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, b);
                bytes
            }
            Damage::Cut(at) => {
                bytes.truncate(at % (bytes.len() + 1));
                bytes
            }
            Damage::Deep(n, true) => {
                let path: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
                bytes.extend(format!("[defaults.train.{}]\nx = 1\n", path.join(".")).into_bytes());
                bytes
            }
            Damage::Deep(n, false) => {
                bytes.extend(format!("[defaults.train]\nx = {}1{}\n", "[".repeat(n), "]".repeat(n)).into_bytes());
                bytes
            }
            Damage::Noise(noise) => noise,
        }
    }
}

/// Whether a message shows a Rust type's name rather than words.
fn names_a_rust_type(message: &str) -> bool {
    const WORDS: &[&str] = &[
        "struct ",
        "enum ",
        "i64",
        "u64",
        "u32",
        "usize",
        "f64",
        "Option<",
        "Vec<",
        "Spanned",
        "Fields",
        "BatchFile",
        "BatchSection",
        "SlurmSection",
        "newtype",
    ];
    // The excerpt of the file (`  3 | …`) is the user's own text.
    message
        .lines()
        .filter(|l| !l.contains(" | ") && !l.trim_end().ends_with(" |"))
        .any(|l| WORDS.iter().any(|w| l.contains(w)))
}

#[derive(Default)]
struct Figures {
    inputs: u64,
    accepted: u64,
    panics: u64,
    bad_errors: u64,
    dry_run_failures: u64,
    binary_inputs: u64,
    binary_accepted: u64,
}

struct Scratch {
    dir: tempfile::TempDir,
    failures: PathBuf,
}

impl Scratch {
    fn file(&self) -> PathBuf {
        self.dir.path().join("night.toml")
    }

    fn runs(&self) -> PathBuf {
        self.dir.path().join("runs")
    }

    fn keep(&self, what: &str, n: u64, bytes: &[u8], why: &str) {
        std::fs::create_dir_all(&self.failures).unwrap();
        let path = self.failures.join(format!("{what}-{n}.toml"));
        std::fs::write(&path, bytes).unwrap();
        eprintln!("fuzz: {what}: {why}\n  input kept in {}", path.display());
    }
}

/// Property (a) and the in-process half of (b), on one input.
fn in_process(s: &Scratch, bytes: &[u8], f: &mut Figures) {
    let file = s.file();
    std::fs::write(&file, bytes).unwrap();
    let outcome = std::panic::catch_unwind(|| {
        settings::resolve(&file, &Overrides::default(), Inventory::from_list("", "TB_GPUS"))
    });
    let plan = match outcome {
        Err(_) => {
            f.panics += 1;
            s.keep("panic", f.inputs, bytes, "settings::resolve panicked");
            return;
        }
        Ok(Err(err)) => {
            let text = tb::error::format(&err);
            if !text.starts_with("error: ") || names_a_rust_type(&text) {
                f.bad_errors += 1;
                s.keep("message", f.inputs, bytes, &text);
            }
            return;
        }
        Ok(Ok(plan)) => plan,
    };
    f.accepted += 1;
    // What `tb batch --dry-run` adds to the parse, short of the engine: the
    // directories; then, as a real start would, the batch directory
    // written and read back (as status, resume and retry read it).
    let started = std::panic::catch_unwind(|| -> anyhow::Result<()> {
        tb::preflight::verdict(tb::preflight::directories(&plan, &s.runs()))?;
        if plan.jobs.len() > 20 {
            return Ok(());
        }
        let made = tb::run::BatchDir::create(&s.runs(), &plan)?;
        // Read back as another process would, from the disk: first from
        // plan.json, then from the jobs' own files.
        for written in [false, true] {
            if written {
                made.write_job_files(&plan.name, &plan.jobs, &Default::default())?;
            }
            let dir = tb::run::BatchDir::at(&made.path)?;
            for job in &plan.jobs {
                let back = dir.read_job_file(&job.name)?;
                dir.read_job_state(&job.name)?;
                let mut spec = job.clone();
                spec.swept.clear();
                let close = match (spec.time_limit, back.spec.time_limit) {
                    (Some(a), Some(b)) => a.abs_diff(b) < Duration::from_micros(1),
                    (a, b) => a == b,
                };
                spec.time_limit = back.spec.time_limit;
                anyhow::ensure!(close && spec == back.spec, "job `{}` reads back otherwise", job.name);
            }
        }
        std::fs::remove_dir_all(&made.path)?;
        Ok(())
    });
    match started {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            f.dry_run_failures += 1;
            s.keep("dry-run", f.inputs, bytes, &format!("{e:#}"));
        }
        Err(_) => {
            f.panics += 1;
            s.keep("panic", f.inputs, bytes, "starting the accepted plan panicked");
        }
    }
}

/// Properties (a) and (b) through the real binary.
fn through_binary(s: &Scratch, bytes: &[u8], f: &mut Figures) {
    std::fs::write(s.file(), bytes).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tb"))
            .args(args)
            .arg(s.file())
            .current_dir(s.dir.path())
            .env("TB_RUNS_DIR", s.runs())
            .env("TB_GPUS", "")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    f.binary_inputs += 1;
    let mut exits = Vec::new();
    for args in [&["validate"][..], &["batch", "--dry-run"]] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code();
        let refused_well = code == Some(2) && err.lines().any(|l| l.starts_with("error: ")) && !names_a_rust_type(&err);
        if err.contains("panicked") || code.is_none() || code == Some(101) {
            f.panics += 1;
            s.keep(
                "binary-panic",
                f.inputs,
                bytes,
                &format!("tb {args:?} exited {code:?}: {err}"),
            );
        } else if code != Some(0) && !refused_well {
            f.bad_errors += 1;
            s.keep(
                "binary-message",
                f.inputs,
                bytes,
                &format!("tb {args:?} exited {code:?}: {err}"),
            );
        }
        exits.push((code, err));
    }
    if exits[0].0 == Some(0) {
        f.binary_accepted += 1;
        if exits[1].0 != Some(0) {
            f.dry_run_failures += 1;
            s.keep(
                "binary-dry-run",
                f.inputs,
                bytes,
                &format!(
                    "validate accepted it; tb batch --dry-run exited {:?}: {}",
                    exits[1].0, exits[1].1
                ),
            );
        }
    }
    assert!(!s.runs().join("latest").exists(), "a dry run wrote a batch directory");
}

#[test]
#[ignore = "bounded in time: `make fuzz` (part of `make test`) runs it"]
fn fuzz_the_batch_file_parser_and_validator() {
    let seconds: u64 = std::env::var("TB_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("TB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &key),
    );
    // On tmpfs where there is one: a started batch syncs every file it
    // writes, and the disk's syncs would be most of the time.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new().prefix("tb-fuzz-").tempdir_in(shm)
    } else {
        tempfile::Builder::new().prefix("tb-fuzz-").tempdir()
    }
    .unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/f"), "").unwrap();
    let s = Scratch {
        dir,
        failures: Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures"),
    };
    let strategy = file();
    let mut f = Figures::default();
    let started = Instant::now();
    let budget = Duration::from_secs(seconds);
    // About a third of the time goes to the binary, which is slower by
    // hundreds of times: every input in-process, some through `tb` too.
    let mut binary_time = Duration::ZERO;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < budget {
        let case = Instant::now();
        let bytes = strategy.new_tree(&mut runner).expect("a value").current();
        f.inputs += 1;
        in_process(&s, &bytes, &mut f);
        if binary_time < started.elapsed() / 3 {
            let t = Instant::now();
            through_binary(&s, &bytes, &mut f);
            binary_time += t.elapsed();
        }
        slowest = slowest.max(case.elapsed());
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {} inputs in {secs:.0} s (seed {seed}; slowest input {:.1} s): {} accepted; {} through the tb binary, \
         {} of them accepted by `tb validate`\nfuzz: panics: {}\nfuzz: validate-accepted inputs that failed --dry-run: {}\nfuzz: refusals \
         without exit 2 and an `error:` in words: {}",
        f.inputs,
        slowest.as_secs_f64(),
        f.accepted,
        f.binary_inputs,
        f.binary_accepted,
        f.panics,
        f.dry_run_failures,
        f.bad_errors
    );
    assert_eq!(f.panics, 0, "inputs that panicked are under target/fuzz-failures");
    assert_eq!(f.dry_run_failures, 0, "inputs are under target/fuzz-failures");
    assert_eq!(f.bad_errors, 0, "inputs are under target/fuzz-failures");
    assert!(
        f.binary_inputs > 0 && f.inputs > f.binary_inputs,
        "the fuzz ran too briefly to tell"
    );
}
