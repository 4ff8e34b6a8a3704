//! The batch file: its TOML model, the `[defaults]` inheritance, and every
//! check that needs nothing but the file's text (docs/batch-file.md).

pub mod expand;
pub mod mlflow;
pub mod units;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

pub use units::{ByteSize, Concurrency, Cpus, GpuRequest, Span};

/// The file as written. Every type of the file names itself in user terms
/// (`expecting`): a message must never show a Rust type's name.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a batch file of [batch], [defaults] and [[job]] tables"
)]
pub struct BatchFile {
    #[serde(default)]
    pub batch: BatchSection,
    #[serde(default)]
    pub defaults: JobFields,
    #[serde(default, rename = "job")]
    pub jobs: Vec<JobFields>,
}

/// `[batch]`: settings of the night as a whole.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [batch] table")]
pub struct BatchSection {
    pub name: Option<Spanned<String>>,
    pub concurrency: Option<Concurrency>,
    pub downloads: Option<Spanned<String>>,
    pub gpu_mode: Option<GpuMode>,
    /// Automatic re-runs of a failed attempt.
    pub retries: Option<Spanned<units::Retries>>,
    /// A job stopped at its time limit goes on from its checkpoint.
    pub continue_on_timeout: Option<bool>,
    /// A command run once when the batch ends (mail, chat): program and arguments.
    pub on_finish: Option<Spanned<Vec<String>>>,
    // Keys of the batch file that this version does not implement yet: accepted
    // by the parser so that the error can say so instead of "unknown key".
    /// No job starts after this local time.
    pub deadline: Option<Spanned<String>>,
    /// Where jobs run: this host's engine, or a Slurm cluster.
    pub backend: Option<Backend>,
    pub slurm: Option<SlurmSection>,
    /// Send the night to an MLflow tracking server.
    pub mlflow: Option<MlflowSection>,
    /// When `tb watch` runs the file again.
    pub watch: Option<WatchSection>,
    /// Each job starts from the previous batch's best checkpoint of the
    /// same job name.
    pub warm_start: Option<bool>,
    /// When the batch ends, its best model replaces the deployed one if it
    /// is better on the same data.
    pub deploy: Option<DeploySection>,
}

/// `[batch.watch]`: the triggers of `tb watch` (docs/batch-file.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [batch.watch] table")]
pub struct WatchSection {
    /// A directory: new files arriving in it fire the trigger.
    pub data: Option<Spanned<String>>,
    /// How many new settled files fire it (default 1).
    pub min_new: Option<Spanned<units::Whole>>,
    /// How long a file must stay unchanged to count (default 30 s).
    pub settle: Option<Spanned<Span>>,
    /// A time trigger: this long after the last trigger.
    pub every: Option<Spanned<Span>>,
}

/// `[batch.deploy]`: where the batch's best model goes (docs/batch-file.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [batch.deploy] table")]
pub struct DeploySection {
    /// The deploy directory; relative paths start at the batch file's.
    pub dir: Option<Spanned<String>>,
}

/// `[batch.deploy]`, resolved: kept in `batch.json` for `tb retry`,
/// `tb resume` and `tb deploy`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct DeploySpec {
    /// The deploy directory, absolute.
    pub dir: std::path::PathBuf,
}

/// `[batch.mlflow]`: where the batch's runs go (docs/batch-file.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [batch.mlflow] table")]
pub struct MlflowSection {
    /// `http(s)://host:port`; default: `MLFLOW_TRACKING_URI`.
    pub tracking_uri: Option<Spanned<String>>,
    /// Default: the batch's name.
    pub experiment: Option<Spanned<String>>,
    /// Any of "report", "logs", "best_checkpoint"; default: report and logs.
    pub artifacts: Option<Vec<Spanned<String>>>,
}

/// Where the jobs of a batch run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case", expecting = "\"local\" or \"slurm\"")]
pub enum Backend {
    /// One container per job on this host's Docker engine.
    #[default]
    Local,
    /// One Slurm job per job; each runs `tb exec` on its node.
    Slurm,
}

impl Backend {
    /// Whether jobs run on this host, with its GPUs (rather than on a
    /// cluster's nodes, which have their own).
    pub fn uses_host_gpus(self) -> bool {
        match self {
            Backend::Local => true,
            Backend::Slurm => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Slurm => "slurm",
        }
    }
}

/// `[batch.slurm]`: how jobs are submitted with `sbatch`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, expecting = "a [batch.slurm] table")]
pub struct SlurmSection {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// More `sbatch` arguments, as written.
    #[serde(default)]
    pub extra: Vec<String>,
    /// How a job with a share of a GPU (`gpus = 0.5`) asks Slurm for it;
    /// without it such a job is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gres_share: Option<GresShare>,
    /// How many `shard`s the cluster's gres.conf gives one GPU: a job with
    /// 1/n of a GPU asks for this divided by n, rounded up. Unset, the
    /// Slurm backend learns it from the nodes' gres (`sinfo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards_per_gpu: Option<u32>,
}

/// The gres that stands for a share of a GPU on a Slurm cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case", expecting = "\"shard\"")]
pub enum GresShare {
    /// Slurm's GPU sharding (`--gres=shard:N`), set up by the site.
    Shard,
}

/// How a container is given its GPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case", expecting = "\"device_request\" or \"env\"")]
pub enum GpuMode {
    /// A Docker device request naming the assigned device ids.
    #[default]
    DeviceRequest,
    /// `NVIDIA_VISIBLE_DEVICES`, for hosts whose default runtime is NVIDIA's.
    Env,
}

/// The keys of `[defaults]` and of each `[[job]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[job]] (or [defaults]) table")]
pub struct JobFields {
    pub name: Option<Spanned<String>>,
    pub image: Option<Spanned<String>>,
    pub command: Option<Vec<String>>,
    pub gpus: Option<GpuRequest>,
    pub cpus: Option<Cpus>,
    pub memory: Option<ByteSize>,
    pub shm_size: Option<ByteSize>,
    pub time_limit: Option<Span>,
    pub env: Option<BTreeMap<String, EnvValue>>,
    pub pass_env: Option<Vec<Spanned<String>>>,
    pub mounts: Option<Vec<Spanned<String>>>,
    pub code: Option<Spanned<String>>,
    pub network: Option<String>,
    pub train: Option<toml::Table>,
    /// Options appended to `command` as `--key=value`.
    pub args: Option<Spanned<toml::Table>>,
    /// How the job's metrics are read and judged.
    pub metrics: Option<MetricsFields>,
    /// Stop the sweep's hopeless trials early.
    pub prune: Option<PruneFields>,
    pub sweep: Option<Spanned<toml::Value>>,
    pub cv: Option<Spanned<toml::Value>>,
}

/// `[job.prune]` (or `[defaults.prune]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [job.prune] table")]
pub struct PruneFields {
    /// `asha` (the default) or `median`.
    pub method: Option<crate::prune::Method>,
    /// Default: the job's monitor.
    pub metric: Option<String>,
    pub mode: Option<crate::metrics::Mode>,
    pub grace: Option<units::Whole>,
    pub reduction: Option<units::Whole>,
    /// Default: `train.max_epochs`.
    pub max_epochs: Option<units::Whole>,
}

/// `[job.metrics]` (or `[defaults.metrics]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [job.metrics] table")]
pub struct MetricsFields {
    /// The metric the job is judged by (ranking, best value, pruning).
    pub monitor: Option<String>,
    /// `min` or `max`.
    pub mode: Option<crate::metrics::Mode>,
    /// `auto`, `jsonl`, `tensorboard`, `csv` or `stdout`.
    pub source: Option<crate::metrics::SourceChoice>,
}

/// An environment value: strings, and numbers or booleans written bare.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvValue(pub String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(EnvValue(s)),
            toml::Value::Integer(i) => Ok(EnvValue(i.to_string())),
            toml::Value::Float(f) => Ok(EnvValue(f.to_string())),
            toml::Value::Boolean(b) => Ok(EnvValue(b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "invalid environment value {other}: expected a string, number or boolean"
            ))),
        }
    }
}

/// One thing wrong with a batch file, located where possible.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// 1-based line and column.
    pub at: Option<(usize, usize)>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, col)) = self.at {
            write!(f, "line {line}, column {col}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a file, reported together.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

/// The most problems an error lists.
const SHOWN_PROBLEMS: usize = 20;

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems:", many.len())?;
                // A value in [defaults] wrong for every job of a large sweep
                // is one problem many times: the first ones say it.
                for p in many.iter().take(SHOWN_PROBLEMS) {
                    write!(f, "\n- {p}")?;
                    if let Some(h) = &p.hint {
                        write!(f, "\n  hint: {h}")?;
                    }
                }
                if many.len() > SHOWN_PROBLEMS {
                    write!(f, "\n- … and {} more", many.len() - SHOWN_PROBLEMS)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Problems {}

impl Problems {
    /// The hint to print under the error: only when there is one problem,
    /// since several carry theirs inline.
    pub fn single_hint(&self) -> Option<&str> {
        match self.0.as_slice() {
            [one] => one.hint.as_deref(),
            _ => None,
        }
    }
}

/// 1-based line and column of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// The text of a batch file's bytes: TOML is UTF-8, and a byte that is not
/// is located by line, column and byte offset.
pub fn decode(bytes: Vec<u8>) -> Result<String, Problems> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let offset = e.utf8_error().valid_up_to();
        // The text before the bad byte is valid, so lines and columns
        // count as in any other message.
        let before = std::str::from_utf8(&bytes[..offset]).expect("valid up to here");
        let (line, col) = line_col(before, offset);
        let bad: Vec<String> = bytes[offset..]
            .iter()
            .take(e.utf8_error().error_len().unwrap_or(bytes.len() - offset).max(1))
            .map(|b| format!("0x{b:02X}"))
            .collect();
        Problems(vec![Problem {
            at: Some((line, col)),
            message: format!(
                "the file is not UTF-8 text: byte {} (offset {offset}) is not part of a UTF-8 character",
                bad.join(" ")
            ),
            hint: Some(
                "TOML files are UTF-8: save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`), or remove the byte".into(),
            ),
        }])
    })
}

/// Parses the text of a batch file. A syntax or type error is one problem
/// with toml's own line, column and excerpt, plus a nearest-key hint for an
/// unknown key.
pub fn parse(text: &str) -> Result<BatchFile, Problems> {
    toml::from_str::<BatchFile>(text).map_err(|err| {
        let at = err.span().map(|s| line_col(text, s.start));
        let message = err.message().to_string();
        let hint = unknown_key_hint(&message);
        let excerpt = err.to_string();
        // toml's Display carries the excerpt with a caret; keep it, it is
        // what a user needs to see, and drop its first line (the location,
        // which `Problem` prints in our own words).
        let body = excerpt.split_once('\n').map(|(_, rest)| {
            let rest = rest.trim_end();
            rest.strip_suffix(message.trim_end())
                .unwrap_or(rest)
                .trim_end()
                .to_string()
        });
        let message = in_words(&message);
        Problems(vec![Problem {
            at,
            message: match body {
                Some(b) if !b.is_empty() => format!("{message}\n{b}", message = message.trim_end()),
                _ => message,
            },
            hint,
        }])
    })
}

/// toml's messages that speak of Rust types, in the file's words.
fn in_words(message: &str) -> String {
    message.replace(
        "u64 value was too large",
        "the number is too large: TOML integers go up to 9223372036854775807",
    )
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" message: the
/// nearest valid key, or the list of valid keys.
pub fn unknown_key_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, rest) = rest.split_once('`')?;
    let valid: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    suggest(unknown, &valid)
}

/// "did you mean `x`?" for the closest of `valid`, or the list of them.
pub fn suggest(unknown: &str, valid: &[&str]) -> Option<String> {
    if valid.is_empty() {
        return None;
    }
    let best = valid
        .iter()
        .map(|v| (strsim::jaro_winkler(unknown, v), *v))
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
    if best.0 >= 0.8 {
        Some(format!("did you mean `{}`?", best.1))
    } else {
        let list: Vec<String> = valid.iter().map(|v| format!("`{v}`")).collect();
        Some(format!("valid keys here: {}", list.join(", ")))
    }
}

/// Why `name` cannot name a job directory, or `None` if it can.
pub fn job_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a job name cannot be empty".into());
    }
    if name == "." || name == ".." {
        return Some(format!("job name `{name}` is not a valid directory name"));
    }
    let most = crate::limits::JOB_NAME.max;
    if name.chars().count() > most {
        return Some(format!("job name `{name}` is longer than {most} characters"));
    }
    if !name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Some(format!("job name `{name}` must start with a letter or digit"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "job name `{name}` contains `{bad}`; names become directory and container names, so use letters, digits, `.`, `_` and `-`"
        ));
    }
    None
}

/// Merges `over` into `base` key by key, recursing into tables: a job's keys
/// win, tables it shares with `[defaults]` combine.
pub fn merge_tables(base: &toml::Table, over: &toml::Table) -> toml::Table {
    let mut out = base.clone();
    for (k, v) in over {
        match (out.get(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                let merged = merge_tables(b, o);
                out.insert(k.clone(), toml::Value::Table(merged));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> Problem {
        let mut p = parse(text).unwrap_err().0;
        assert_eq!(p.len(), 1);
        p.remove(0)
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let p = problem("[batch]\nname = \"night\"\nconcurrency = = 2\n");
        assert_eq!(p.at, Some((3, 15)));
        assert!(p.to_string().starts_with("line 3, column 15: "), "{p}");
        assert!(
            p.message.contains("concurrency = = 2"),
            "excerpt missing: {}",
            p.message
        );
    }

    #[test]
    fn unknown_key_names_key_and_nearest() {
        let p = problem("[defaults]\nimage = \"x\"\nmemroy = \"8g\"\n");
        assert_eq!(p.at, Some((3, 1)));
        assert!(p.message.starts_with("unknown field `memroy`"), "{}", p.message);
        assert_eq!(p.hint.as_deref(), Some("did you mean `memory`?"));

        let p = problem("[batch]\nconcurency = 2\n");
        assert_eq!(p.hint.as_deref(), Some("did you mean `concurrency`?"));

        let p = problem("[[job]]\nname = \"a\"\nzzzz = 1\n");
        assert!(p.hint.unwrap().starts_with("valid keys here: `name`, `image`"));

        let p = problem("[jobs]\nname = \"a\"\n");
        assert_eq!(p.hint.as_deref(), Some("did you mean `job`?"));
    }

    #[test]
    fn wrong_types_and_ranges_are_located() {
        let p = problem("[defaults]\nmemory = \"8x\"\n");
        assert_eq!(p.at, Some((2, 10)));
        assert!(p.message.starts_with("invalid size `8x`"), "{}", p.message);

        let p = problem("[defaults]\ncpus = -2\n");
        assert_eq!(p.at.unwrap().0, 2);
        assert!(p.message.starts_with("invalid cpus -2"), "{}", p.message);

        let p = problem("[batch]\nconcurrency = 0\n");
        assert!(
            p.message
                .starts_with("invalid concurrency 0: must be between 1 and 1024"),
            "{}",
            p.message
        );

        let p = problem("[defaults]\ngpus = \"some\"\n");
        assert!(p.message.starts_with("invalid gpus `some`"), "{}", p.message);

        let p = problem("[defaults]\ntime_limit = \"soon\"\n");
        assert!(p.message.starts_with("invalid duration `soon`"), "{}", p.message);

        let p = problem("[defaults]\ncommand = \"echo hi\"\n");
        assert_eq!(p.at.unwrap().0, 2);
        assert!(p.message.contains("expected a sequence"), "{}", p.message);

        let p = problem("[batch]\ngpu_mode = \"cuda\"\n");
        assert!(p.message.contains("unknown variant `cuda`"), "{}", p.message);
    }

    #[test]
    fn path_unsafe_names_are_refused() {
        for bad in ["../x", "a/b", "", ".", "..", "-x", "a b"] {
            assert!(job_name_problem(bad).is_some(), "{bad:?} accepted");
        }
        for good in ["baseline", "lr_1e-3", "unet.w16", "3"] {
            assert_eq!(job_name_problem(good), None);
        }
        assert_eq!(
            job_name_problem("a/b").unwrap(),
            "job name `a/b` contains `/`; names become directory and container names, so use letters, digits, `.`, `_` and `-`"
        );
    }

    #[test]
    fn tables_merge_key_by_key() {
        let base: toml::Table =
            toml::from_str("model = \"unet\"\nlr = 1\n[model_args]\nchannels = 16\ndepth = 3\n").unwrap();
        let over: toml::Table = toml::from_str("lr = 2\n[model_args]\nchannels = 32\n").unwrap();
        let m = merge_tables(&base, &over);
        assert_eq!(m["model"].as_str(), Some("unet"));
        assert_eq!(m["lr"].as_integer(), Some(2));
        assert_eq!(m["model_args"]["channels"].as_integer(), Some(32));
        assert_eq!(m["model_args"]["depth"].as_integer(), Some(3));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_located() {
        let p = decode(b"[batch]\nname = \"a\xff\"\n".to_vec()).unwrap_err().0.remove(0);
        assert_eq!(p.at, Some((2, 10)));
        assert_eq!(
            p.message,
            "the file is not UTF-8 text: byte 0xFF (offset 17) is not part of a UTF-8 character"
        );
        assert!(p.hint.unwrap().starts_with("TOML files are UTF-8"));
        // A character cut short at the end of the file.
        let p = decode("é\n\u{e9}".as_bytes()[..4].to_vec()).unwrap_err().0.remove(0);
        assert_eq!(p.at, Some((2, 1)));
        assert!(p.message.contains("byte 0xC3 (offset 3)"), "{}", p.message);
        assert_eq!(decode(b"a = 1".to_vec()).unwrap(), "a = 1");
    }

    #[test]
    fn no_message_names_a_rust_type() {
        for text in [
            "defaults = 3\n",
            "batch = 3\n",
            "job = [3]\n",
            "[batch]\nslurm = 3\n",
            "[batch]\nretries = \"x\"\n",
            "[defaults]\nprune = 3\n",
            "[defaults]\nmetrics = 3\n",
            "[defaults.prune]\ngrace = \"x\"\n",
            "[defaults.prune]\nreduction = -1\n",
            "[defaults.prune]\nmax_epochs = 1.5\n",
            "[defaults]\ntime_limit = 3\n",
            "[defaults]\nmemory = true\n",
            "[defaults]\ncpus = \"x\"\n",
            "[defaults]\ngpus = 1.5\n",
            "[batch]\nconcurrency = 1.5\n",
            "[batch]\ngpu_mode = { x = 1 }\n",
            "[defaults.metrics]\nmode = { x = 1 }\n",
            "[defaults.train]\nx = 18446744073709551615\n",
            "[batch]\nmlflow = 3\n",
            "[batch]\nwatch = 3\n",
            "[batch.watch]\nmin_new = \"x\"\n",
            "[batch.watch]\nmin_new = -1\n",
            "[batch.watch]\nsettle = 3\n",
            "[batch.watch]\nevery = true\n",
            "[batch]\nwarm_start = 3\n",
            "[batch]\ndeploy = 3\n",
            "[batch.deploy]\ndir = 3\n",
        ] {
            let p = problem(text);
            assert!(!names_a_rust_type(&p.message), "{text:?}: {}", p.message);
        }
    }

    /// Whether a message shows a Rust type's name (`struct JobFields`,
    /// `expected u64`, …) rather than words.
    fn names_a_rust_type(message: &str) -> bool {
        let words = [
            "struct ",
            "enum ",
            "i64",
            "u64",
            "u32",
            "usize",
            "f64",
            "Option<",
            "Vec<",
            "String",
            "Spanned",
            "Fields",
            "Section",
            "BatchFile",
            "newtype",
            "unit variant",
            "tuple",
        ];
        words.iter().any(|w| message.contains(w))
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
