//! The batch file, the command-line flags and the environment resolved into
//! one checked [`Plan`] before anything starts. Everything here is pure: it
//! reads the file and looks at paths, and writes nothing.

use crate::batch::{self, BatchFile, Concurrency, GpuMode, GpuRequest, JobFields, Problem, Problems, expand};
use crate::error::with_hint;
use crate::gpu::{GpuShare, Inventory};
use crate::limits;
use crate::metrics::{MetricsSpec, Mode};
use crate::prune::{Method, PruneSpec};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Docker's default `/dev/shm` of 64 MB starves PyTorch DataLoader workers.
pub const DEFAULT_SHM: u64 = 1 << 30;
pub const DEFAULT_DOWNLOADS: &str = "~/.cache/tb/downloads";
pub const DEFAULT_NETWORK: &str = "bridge";

/// A validated batch, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The batch file, absolute.
    pub file: PathBuf,
    /// Its text, verbatim (copied into the batch directory).
    pub text: String,
    pub name: String,
    pub settings: BatchSettings,
    /// The GPUs of this host.
    pub gpus: Inventory,
    pub jobs: Vec<JobSpec>,
    /// `[batch.watch]`: what `tb watch` runs the file again on. Not kept in
    /// the batch directory: a batch is one run, whatever started it.
    pub watch: Option<WatchSpec>,
}

/// `[batch.watch]`, resolved: at least one trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchSpec {
    /// The directory whose new files fire the files trigger, absolute.
    pub data: Option<PathBuf>,
    /// New settled files that fire it.
    pub min_new: u64,
    /// How long a file stays unchanged before it counts.
    pub settle: Duration,
    /// The time trigger: this long after the last trigger.
    pub every: Option<Duration>,
}

/// `[batch.watch] settle` when the file does not say.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(30);

/// The batch-wide settings (`[batch]`), resolved. Declared once: the plan
/// holds them, and `batch.json` keeps them for `tb retry` and `tb resume`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchSettings {
    /// Jobs at once.
    #[serde(default)]
    pub concurrency: usize,
    pub gpu_mode: GpuMode,
    pub downloads: PathBuf,
    /// Automatic re-runs of a failed attempt.
    pub retries: u32,
    /// A job stopped at its time limit goes on from its checkpoint.
    pub continue_on_timeout: bool,
    /// Where the jobs run.
    #[serde(default)]
    pub backend: batch::Backend,
    #[serde(default)]
    pub slurm: batch::SlurmSection,
    /// No job starts after this (`[batch] deadline`).
    #[serde(default)]
    pub deadline: Option<chrono::DateTime<chrono::Utc>>,
    /// Run once when the batch ends: program and arguments (never empty).
    #[serde(default)]
    pub on_finish: Option<Vec<String>>,
    /// Where the night goes in MLflow (`[batch.mlflow]`).
    #[serde(default)]
    pub mlflow: Option<batch::mlflow::MlflowSpec>,
    /// Each job starts from the previous batch's best checkpoint of its
    /// name (`[batch] warm_start`); what each found is its `warm_start`.
    #[serde(default)]
    pub warm_start: bool,
    /// Where the best model goes when the batch ends (`[batch.deploy]`).
    #[serde(default)]
    pub deploy: Option<batch::DeploySpec>,
}

/// One job, resolved: `[defaults]` applied, paths absolute, GPUs counted.
/// This is what `job.json` holds (with the batch and attempt around it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub image: String,
    /// `None`: the image's own command (the trainer).
    pub command: Option<Vec<String>>,
    /// Whole GPUs, or a share of one (written `1`, or `0.5`).
    pub gpus: GpuShare,
    pub cpus: Option<f64>,
    pub memory: Option<u64>,
    pub shm_size: u64,
    #[serde(with = "opt_secs")]
    pub time_limit: Option<Duration>,
    pub env: BTreeMap<String, String>,
    /// Names only: values are read from tb's environment at launch and
    /// never written anywhere.
    pub pass_env: Vec<String>,
    pub mounts: Vec<Mount>,
    pub code: Option<PathBuf>,
    pub network: String,
    pub train: Option<serde_json::Value>,
    /// Options that were appended to `command` as `--key=value`, kept for
    /// the report.
    #[serde(default)]
    pub args: BTreeMap<String, serde_json::Value>,
    /// How the job's metrics are read and judged (`[job.metrics]`).
    #[serde(default)]
    pub metrics: MetricsSpec,
    /// Whether and how a sweep stops this job early (`[job.prune]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneSpec>,
    /// The values a sweep chose (dotted path → value); `job.json` carries
    /// them as its `swept` table.
    #[serde(skip)]
    pub swept: BTreeMap<String, serde_json::Value>,
    /// Under `[batch] warm_start`: what the job starts from, decided when
    /// the batch is created (`crate::warm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<WarmStart>,
}

/// Where a deploy's scoring container finds the checkpoint it scores
/// (`crate::deploy`): reserved, like `/previous`, since it runs with the
/// job's own mounts.
pub const EVALUATE_MOUNT: &str = "/evaluate";

/// Where a job of a `warm_start` batch starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WarmStart {
    /// From the best checkpoint of the same job in an earlier batch: that
    /// job's directory is mounted read-only at `/previous`.
    Warm {
        /// The earlier batch's directory name.
        batch: String,
        /// Its job directory (the one holding the checkpoint), absolute.
        job_dir: PathBuf,
        /// The checkpoint, relative to `job_dir`.
        checkpoint: String,
        /// That job's best value of its monitor, for the report.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        best: Option<crate::metrics::Best>,
        /// The job's own `train.init_from`, which the checkpoint replaced.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaced_init_from: Option<String>,
    },
    /// From scratch (or the job's own `train.init_from`): why.
    Cold { why: String },
}

impl WarmStart {
    /// Where the earlier job's directory is in the container.
    pub const MOUNT: &'static str = "/previous";

    /// The checkpoint's path in the container.
    pub fn checkpoint_in_container(&self) -> Option<String> {
        match self {
            WarmStart::Warm { checkpoint, .. } => Some(format!("{}/{checkpoint}", WarmStart::MOUNT)),
            WarmStart::Cold { .. } => None,
        }
    }
}

/// A bind mount, `host:container[:options]`, with the host side absolute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mount {
    pub host: PathBuf,
    pub container: String,
    pub options: Option<String>,
}

impl Mount {
    /// The `docker -v` form.
    pub fn bind(&self) -> String {
        match &self.options {
            Some(o) => format!("{}:{}:{o}", self.host.display(), self.container),
            None => format!("{}:{}", self.host.display(), self.container),
        }
    }
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    /// A value past what a `Duration` holds (a run directory written
    /// before time limits were bounded) reads as `Duration::MAX`: a limit
    /// no clock reaches. A negative or NaN one is a damaged file.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|secs| match Duration::try_from_secs_f64(secs) {
                Ok(d) => Ok(d),
                Err(_) if secs > 0.0 => Ok(Duration::MAX),
                Err(_) => Err(serde::de::Error::custom(format!(
                    "invalid time_limit {secs}: expected seconds, 0 or more"
                ))),
            })
            .transpose()
    }
}

/// What the command line adds to the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub concurrency: Option<String>,
    pub only: Vec<String>,
    /// `--backend`: `local` or `slurm`.
    pub backend: Option<String>,
}

/// Reads, parses and checks `file`. The error lists every problem found.
pub fn resolve(file: &Path, overrides: &Overrides, gpus: Inventory) -> anyhow::Result<Plan> {
    let bytes = std::fs::read(file).map_err(|e| {
        let err = anyhow::Error::new(e).context(format!("failed to read batch file `{}`", file.display()));
        with_hint(err, "pass the path of a TOML batch file, such as jobs/night.toml")
    })?;
    let text = batch::decode(bytes).map_err(|problems| {
        let hint = problems.single_hint().map(String::from).unwrap_or_default();
        with_hint(
            anyhow::Error::new(problems).context(format!("invalid batch file `{}`", file.display())),
            hint,
        )
    })?;
    let abs = std::path::absolute(file).with_context(|| format!("failed to resolve the path `{}`", file.display()))?;
    let base_dir = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let home = std::env::var_os("HOME").map(PathBuf::from);
    resolve_text(&abs, text, &base_dir, home.as_deref(), overrides, gpus).map_err(|problems| {
        let hint = problems.single_hint().map(String::from);
        let err = anyhow::Error::new(problems).context(format!("invalid batch file `{}`", file.display()));
        match hint {
            Some(h) => with_hint(err, h),
            None => err,
        }
    })
}

/// [`resolve`] on text already read; `base_dir` anchors relative paths.
pub fn resolve_text(
    file: &Path,
    text: String,
    base_dir: &Path,
    home: Option<&Path>,
    overrides: &Overrides,
    gpus: Inventory,
) -> Result<Plan, Problems> {
    let BatchFile {
        batch: section,
        defaults,
        jobs,
    } = batch::parse(&text)?;
    let mut ck = Checker {
        text: &text,
        base_dir,
        home,
        problems: Vec::new(),
    };
    let (name, mut settings, concurrency) = ck.batch_section(file, &section, overrides);
    let watch = section.watch.as_ref().and_then(|w| ck.watch(w));
    // On a cluster, Slurm's nodes have the GPUs, not this host: any count is
    // the cluster's to grant (and sbatch's to refuse).
    let job_gpus = if settings.backend.uses_host_gpus() {
        gpus.clone()
    } else {
        Inventory {
            ids: (0..64).map(|i| i.to_string()).collect(),
            source: "the Slurm cluster",
        }
    };
    let mut specs = ck.jobs(&text, &defaults, &jobs, &job_gpus);
    ck.select(&overrides.only, &mut specs);
    ck.slurm_shares(&settings, &specs);
    if !ck.problems.is_empty() {
        return Err(Problems(ck.problems));
    }
    settings.concurrency = match concurrency {
        Concurrency::Fixed(n) => n as usize,
        // A cluster queues what it cannot run yet: submit every job.
        Concurrency::Auto if !settings.backend.uses_host_gpus() => usize::MAX,
        Concurrency::Auto => auto_concurrency(&gpus, &specs),
    };
    if !settings.backend.uses_host_gpus() {
        settings.concurrency = settings.concurrency.min(specs.len().max(1));
    }
    Ok(Plan {
        file: file.to_path_buf(),
        text,
        name,
        settings,
        gpus,
        jobs: specs,
        watch,
    })
}

impl Checker<'_> {
    /// `[batch]`, with the command line's overrides: the batch's name and
    /// settings, and the concurrency asked for (resolved once the jobs are
    /// known).
    fn batch_section(
        &mut self,
        file: &Path,
        section: &batch::BatchSection,
        overrides: &Overrides,
    ) -> (String, BatchSettings, Concurrency) {
        let deadline = section
            .deadline
            .as_ref()
            .and_then(|d| match deadline_of(d.get_ref(), chrono::Local::now()) {
                Ok(t) => Some(t),
                Err(why) => {
                    self.at(
                        d.span().start,
                        why,
                        Some("write it as \"07:00\" (the next 7 o'clock) or \"2026-11-23 07:00\""),
                    );
                    None
                }
            });
        let backend = match overrides.backend.as_deref() {
            None => section.backend.unwrap_or_default(),
            Some("local") => batch::Backend::Local,
            Some("slurm") => batch::Backend::Slurm,
            Some(other) => {
                self.problem(None, format!("--backend `{other}`: expected `local` or `slurm`"), None);
                batch::Backend::Local
            }
        };
        let slurm = section.slurm.clone().unwrap_or_default();
        // A program given as a path is found from the batch file, like mounts;
        // a bare name goes through PATH.
        let on_finish = section.on_finish.as_ref().map(|c| {
            let mut command = c.get_ref().clone();
            if let Some(program) = command.first_mut()
                && program.contains('/')
            {
                *program = self.path(program).to_string_lossy().into_owned();
            }
            command
        });
        if let Some(c) = &section.on_finish
            && c.get_ref().first().is_none_or(|program| program.trim().is_empty())
        {
            self.at(
                c.span().start,
                "`batch.on_finish` names no program".to_string(),
                Some("write it as a list: on_finish = [\"notify-send\", \"tb: batch done\"]"),
            );
        }

        let name = match &section.name {
            Some(n) => {
                if let Some(why) = batch::job_name_problem(n.get_ref()) {
                    self.at(n.span().start, why.replace("job name", "batch name"), None);
                }
                n.get_ref().clone()
            }
            None => file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "batch".into()),
        };
        if section.name.is_none() && batch::job_name_problem(&name).is_some() {
            self.problem(
                None,
                format!("the file name `{name}` cannot name a batch"),
                Some("set `name` in [batch]"),
            );
        }

        let concurrency = match &overrides.concurrency {
            Some(text) => match Concurrency::parse(text) {
                Ok(c) => c,
                Err(e) => {
                    self.problem(None, format!("--concurrency: {e}"), None);
                    Concurrency::Auto
                }
            },
            None => section.concurrency.unwrap_or(Concurrency::Auto),
        };

        let downloads = match &section.downloads {
            Some(d) => self.path(d.get_ref()),
            None => self.path(DEFAULT_DOWNLOADS),
        };

        let settings = BatchSettings {
            concurrency: 0,
            gpu_mode: section.gpu_mode.unwrap_or_default(),
            downloads,
            retries: section.retries.as_ref().map(|r| r.get_ref().0).unwrap_or(0),
            continue_on_timeout: section.continue_on_timeout.unwrap_or(false),
            backend,
            slurm,
            deadline,
            on_finish,
            mlflow: None,
            warm_start: section.warm_start.unwrap_or(false),
            deploy: section.deploy.as_ref().and_then(|d| self.deploy(d)),
        };
        let mlflow = section.mlflow.as_ref().and_then(|m| self.mlflow(m, &name));
        (name, BatchSettings { mlflow, ..settings }, concurrency)
    }

    /// `[batch.slurm]`'s sharing keys; and on Slurm, a share of a GPU is a
    /// `shard` gres, which only a site that set up sharding has. How many
    /// shards one GPU has is the cluster's: the backend asks it before
    /// submitting, unless `shards_per_gpu` says.
    fn slurm_shares(&mut self, settings: &BatchSettings, specs: &[JobSpec]) {
        let slurm = &settings.slurm;
        if let Some(n) = slurm.shards_per_gpu
            && !limits::SHARDS_PER_GPU.contains(n)
        {
            self.problem(
                None,
                format!("invalid shards_per_gpu {n}: {}", limits::SHARDS_PER_GPU.between()),
                None,
            );
        }
        let shared = specs.iter().find(|j| j.gpus.fraction().is_some());
        if let (Some(job), batch::Backend::Slurm, None) = (shared, settings.backend, slurm.gres_share) {
            self.problem(
                None,
                format!(
                    "job `{}` asks for a share of a GPU (gpus = {}), which Slurm grants only as a `shard` gres",
                    job.name, job.gpus
                ),
                Some(
                    "if the cluster's gres.conf sets up GPU sharding, add gres_share = \"shard\" to [batch.slurm]; else ask for a whole GPU (gpus = 1)",
                ),
            );
        }
    }

    /// `[batch.deploy]`: its directory, anchored at the batch file's.
    fn deploy(&mut self, d: &batch::DeploySection) -> Option<batch::DeploySpec> {
        match &d.dir {
            Some(dir) if dir.get_ref().trim().is_empty() => {
                self.at(dir.span().start, "`batch.deploy.dir` is empty".into(), None);
                None
            }
            Some(dir) => Some(batch::DeploySpec {
                dir: self.path(dir.get_ref()),
            }),
            None => {
                self.problem(
                    None,
                    "[batch.deploy] names no directory".into(),
                    Some("add dir = \"./deployed\" to [batch.deploy]: the best model goes there"),
                );
                None
            }
        }
    }

    /// `[batch.mlflow]`: the tracking URI from the file or
    /// `MLFLOW_TRACKING_URI`, the experiment (default: the batch's name),
    /// the artifacts (default: report and logs).
    fn mlflow(&mut self, m: &batch::MlflowSection, batch_name: &str) -> Option<batch::mlflow::MlflowSpec> {
        let from_env = std::env::var("MLFLOW_TRACKING_URI")
            .ok()
            .filter(|u| !u.trim().is_empty());
        let uri = match (&m.tracking_uri, from_env) {
            (Some(u), _) => match batch::mlflow::check_uri(u.get_ref()) {
                Ok(uri) => Some(uri),
                Err((why, hint)) => {
                    self.at(
                        u.span().start,
                        format!("`batch.mlflow.tracking_uri`: {why}"),
                        Some(hint),
                    );
                    None
                }
            },
            (None, Some(u)) => match batch::mlflow::check_uri(&u) {
                Ok(uri) => Some(uri),
                Err((why, hint)) => {
                    self.problem(None, format!("MLFLOW_TRACKING_URI: {why}"), Some(hint));
                    None
                }
            },
            (None, None) => {
                self.problem(
                    None,
                    "[batch.mlflow] names no tracking server, and MLFLOW_TRACKING_URI is not set".into(),
                    Some("add tracking_uri = \"http://host:5000\" to [batch.mlflow], or export MLFLOW_TRACKING_URI"),
                );
                None
            }
        };
        let experiment = match &m.experiment {
            Some(e) if e.get_ref().trim().is_empty() => {
                self.at(
                    e.span().start,
                    "`batch.mlflow.experiment` is empty".into(),
                    Some("name the experiment, or leave the key out to use the batch's name"),
                );
                String::new()
            }
            Some(e) if e.get_ref().chars().count() > 500 => {
                self.at(
                    e.span().start,
                    "`batch.mlflow.experiment` is longer than 500 characters".into(),
                    None,
                );
                String::new()
            }
            Some(e) => e.get_ref().trim().to_string(),
            None => batch_name.to_string(),
        };
        let mut artifacts = Vec::new();
        match &m.artifacts {
            None => artifacts.extend([batch::mlflow::Artifact::Report, batch::mlflow::Artifact::Logs]),
            Some(list) => {
                for a in list {
                    match batch::mlflow::Artifact::ALL.iter().find(|(n, _)| n == a.get_ref()) {
                        Some((_, kind)) if !artifacts.contains(kind) => artifacts.push(*kind),
                        Some(_) => {}
                        None => {
                            let names: Vec<&str> = batch::mlflow::Artifact::ALL.iter().map(|(n, _)| *n).collect();
                            let near = names
                                .iter()
                                .min_by_key(|n| strsim::levenshtein(n, a.get_ref()))
                                .filter(|n| strsim::levenshtein(n, a.get_ref()) <= 3);
                            let hint = match near {
                                Some(n) => format!("did you mean \"{n}\"? tb sends {}", names.join(", ")),
                                None => format!("tb sends {}", names.join(", ")),
                            };
                            self.at(
                                a.span().start,
                                format!("`batch.mlflow.artifacts`: unknown artifact `{}`", a.get_ref()),
                                Some(&hint),
                            );
                        }
                    }
                }
            }
        }
        Some(batch::mlflow::MlflowSpec {
            tracking_uri: uri?,
            experiment,
            artifacts,
        })
    }

    /// `[batch.watch]`: a directory, a time, or both, each within its limits.
    fn watch(&mut self, w: &batch::WatchSection) -> Option<WatchSpec> {
        let before = self.problems.len();
        let data = w.data.as_ref().and_then(|d| {
            if d.get_ref().trim().is_empty() {
                self.at(
                    d.span().start,
                    "`batch.watch.data` is empty".into(),
                    Some("name the directory new files arrive in"),
                );
                return None;
            }
            Some(self.path(d.get_ref()))
        });
        let min_new = match &w.min_new {
            Some(n) => {
                let r = limits::WATCH_MIN_NEW;
                if !r.contains(n.get_ref().0) {
                    self.at(
                        n.span().start,
                        format!(
                            "`batch.watch.min_new` = {} is out of range: it {}",
                            n.get_ref().0,
                            r.between()
                        ),
                        None,
                    );
                }
                n.get_ref().0
            }
            None => 1,
        };
        let settle = match &w.settle {
            Some(s) => {
                self.span_in_range(s, &limits::WATCH_SETTLE);
                s.get_ref().duration
            }
            None => DEFAULT_SETTLE,
        };
        let every = w.every.as_ref().map(|e| {
            self.span_in_range(e, &limits::WATCH_EVERY);
            e.get_ref().duration
        });
        if w.data.is_none() {
            for (key, set) in [("min_new", w.min_new.is_some()), ("settle", w.settle.is_some())] {
                if set {
                    self.problem(
                        None,
                        format!("`batch.watch.{key}` counts files, but [batch.watch] names no `data` directory"),
                        Some("add data = \"./incoming\" to [batch.watch], or remove the key"),
                    );
                }
            }
        }
        if w.data.is_none() && w.every.is_none() {
            self.problem(
                None,
                "[batch.watch] has no trigger: it needs `data` (a directory new files arrive in), `every`, or both"
                    .into(),
                Some("add data = \"./incoming\" or every = \"24h\" to [batch.watch]"),
            );
        }
        (self.problems.len() == before).then_some(WatchSpec {
            data,
            min_new,
            settle,
            every,
        })
    }

    /// A problem at the value unless the duration is inside `range`.
    fn span_in_range(&mut self, value: &toml::Spanned<batch::Span>, range: &limits::Range<Duration>) {
        if !range.contains(value.get_ref().duration) {
            self.at(
                value.span().start,
                format!(
                    "`batch.{}` = {} is out of range: it {}",
                    range.key,
                    value.get_ref().written,
                    range.between()
                ),
                None,
            );
        }
    }

    /// Every `[[job]]`, expanded, with `[defaults]` applied.
    fn jobs(&mut self, text: &str, defaults: &JobFields, jobs: &[JobFields], job_gpus: &Inventory) -> Vec<JobSpec> {
        if let Some(n) = &defaults.name {
            self.at(
                n.span().start,
                "`name` belongs in a [[job]], not in [defaults]".into(),
                None,
            );
        }
        for (key, value) in [("sweep", &defaults.sweep), ("cv", &defaults.cv)] {
            if let Some(v) = value {
                self.at(
                    v.span().start,
                    format!("`{key}` belongs in a [[job]], not in [defaults]"),
                    None,
                );
            }
        }
        if jobs.is_empty() {
            self.problem(
                None,
                "the file has no [[job]]".into(),
                Some("add at least one [[job]] with a `name`"),
            );
        }

        // The raw tables of the jobs, for expansion: a sweep may set any key.
        let raw_jobs: Vec<toml::Table> = toml::from_str::<toml::Table>(text)
            .ok()
            .and_then(|doc| doc.get("job").and_then(|j| j.as_array()).cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.as_table().cloned())
            .collect();
        // The whole batch, counted before anything is expanded.
        // A [[job]] over its own limit is refused by its expansion, and
        // counts for nothing here.
        let counts: Vec<u64> = raw_jobs
            .iter()
            .map(|raw| expand::count(raw).0)
            .map(|n| if n > limits::EXPANDED.max { 0 } else { n })
            .collect();
        let total = counts
            .iter()
            .try_fold(0u64, |a, n| a.checked_add(*n))
            .unwrap_or(u64::MAX);
        let most = limits::BATCH_JOBS;
        if total > most.max {
            let mut parts: Vec<(u64, String)> = jobs
                .iter()
                .zip(&counts)
                .enumerate()
                .filter(|(_, (_, n))| **n > 1)
                .map(|(i, (j, n))| {
                    let name = j
                        .name
                        .as_ref()
                        .map_or(format!("number {}", i + 1), |n| format!("`{}`", n.get_ref()));
                    (*n, format!("{name}: {}", expand::jobs(*n)))
                })
                .collect();
            parts.sort_by_key(|p| std::cmp::Reverse(p.0));
            let parts: Vec<String> = parts.into_iter().take(5).map(|(_, p)| p).collect();
            self.problem(
                None,
                format!(
                    "the batch would hold {} jobs ({}); a batch holds at most {}",
                    expand::jobs(total),
                    parts.join(", "),
                    most.shown.1
                ),
                Some("split the sweeps over several batch files, or sweep fewer values"),
            );
            return Vec::new();
        }
        let mut seen: HashSet<String> = HashSet::new();
        let mut specs = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let name = match &job.name {
                None => {
                    self.problem(
                        None,
                        format!("[[job]] number {} has no `name`", i + 1),
                        Some("give every [[job]] a unique `name`"),
                    );
                    continue;
                }
                Some(n) => {
                    if let Some(why) = batch::job_name_problem(n.get_ref()) {
                        self.at(n.span().start, why, None);
                        continue;
                    }
                    n.get_ref().clone()
                }
            };
            let at = job.name.as_ref().map(|n| n.span().start).unwrap_or(0);
            if job.sweep.is_none() && job.cv.is_none() {
                if !seen.insert(name.clone()) {
                    self.at(
                        at,
                        format!("duplicate job name `{name}`"),
                        Some("job names must be unique within a batch"),
                    );
                    continue;
                }
                if let Some(spec) = self.job(&name, defaults, job, job_gpus) {
                    specs.push(spec);
                }
                continue;
            }
            let key_at = job
                .sweep
                .as_ref()
                .or(job.cv.as_ref())
                .map(|v| v.span().start)
                .unwrap_or(at);
            let variants = match raw_jobs.get(i).map(|raw| expand::expand(&name, raw)) {
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    self.at(key_at, format!("job `{name}`: {e}"), None);
                    continue;
                }
                None => continue,
            };
            for variant in variants {
                if let Some(why) = batch::job_name_problem(&variant.name) {
                    self.at(
                        key_at,
                        format!("job `{name}`: expanded {why}"),
                        Some("use a shorter job name"),
                    );
                    continue;
                }
                if !seen.insert(variant.name.clone()) {
                    self.at(
                        key_at,
                        format!(
                            "job `{name}`: the expanded job `{}` duplicates another job's name",
                            variant.name
                        ),
                        Some("rename one of the jobs"),
                    );
                    continue;
                }
                // Through TOML text, since spans (which some keys carry) only
                // come from a parser; problems are then placed at the sweep.
                let synthetic = toml::to_string(&variant.table).unwrap_or_default();
                let fields: JobFields = match toml::from_str(&synthetic) {
                    Ok(f) => f,
                    Err(e) => {
                        self.at(
                            key_at,
                            format!("job `{}`: {}", variant.name, e.message().trim_end()),
                            None,
                        );
                        continue;
                    }
                };
                let mut sub = Checker {
                    text: &synthetic,
                    base_dir: self.base_dir,
                    home: self.home,
                    problems: Vec::new(),
                };
                let spec = sub.job(&variant.name, defaults, &fields, job_gpus);
                for mut p in sub.problems {
                    p.at = Some(batch::line_col(text, key_at));
                    self.problems.push(p);
                }
                if let Some(mut spec) = spec {
                    spec.swept = variant
                        .swept
                        .into_iter()
                        .map(|(k, v)| (k, serde_json::to_value(v).expect("TOML values are JSON")))
                        .collect();
                    // Pruning compares the jobs of one [[job]] (and fold).
                    let fold = spec.train.as_ref().and_then(|t| t["cv"]["fold"].as_u64());
                    if let Some(p) = spec.prune.as_mut() {
                        p.group = match fold {
                            Some(k) => format!("{name}/fold-{k}"),
                            None => name.clone(),
                        };
                    }
                    specs.push(spec);
                }
            }
        }

        specs
    }

    /// `--only`: the jobs named by it, each selector matching some job.
    fn select(&mut self, only: &[String], specs: &mut Vec<JobSpec>) {
        if !only.is_empty() {
            for sel in only {
                if !specs.iter().any(|j| selects(sel, &j.name)) {
                    let names: Vec<&str> = specs.iter().map(|j| j.name.as_str()).collect();
                    let hint = batch::suggest(sel, &names).map(|h| h.replace("valid keys here", "the jobs are"));
                    self.problem(None, format!("--only `{sel}` matches no job"), hint.as_deref());
                }
            }
            specs.retain(|j| only.iter().any(|sel| selects(sel, &j.name)));
        }
    }
}

/// `concurrency = "auto"` on this host: every GPU share there can be, so
/// that the GPUs, not a count, bound what runs — one per GPU for whole-GPU
/// jobs, two per GPU when a job asks for 0.5; 1 on a CPU-only host.
fn auto_concurrency(gpus: &Inventory, specs: &[JobSpec]) -> usize {
    let per_gpu = specs
        .iter()
        .filter_map(|j| j.gpus.fraction())
        .map(|f| usize::from(f.per_gpu()))
        .max()
        .unwrap_or(1);
    (gpus.len() * per_gpu).max(1)
}

/// When `[batch] deadline` falls: "HH:MM" is its next occurrence after
/// `now` (local time); a date and time is taken as written (local, unless
/// it carries an offset).
pub fn deadline_of(value: &str, now: chrono::DateTime<chrono::Local>) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let at = deadline_at(value, now)?;
    let most = limits::DEADLINE_AHEAD;
    if (at - now.with_timezone(&chrono::Utc))
        .to_std()
        .is_ok_and(|ahead| ahead > most.max)
    {
        return Err(format!(
            "deadline `{}` is more than {} away",
            value.trim(),
            most.shown.1.trim_end_matches(" ahead")
        ));
    }
    Ok(at)
}

/// [`deadline_of`], unbounded.
fn deadline_at(value: &str, now: chrono::DateTime<chrono::Local>) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{NaiveDateTime, NaiveTime, TimeZone};
    let text = value.trim();
    if let Ok(t) = NaiveTime::parse_from_str(text, "%H:%M") {
        let today = now.date_naive().and_time(t);
        let local = chrono::Local
            .from_local_datetime(&today)
            .earliest()
            .ok_or_else(|| format!("deadline `{text}` does not exist today (a clock change)"))?;
        let at = if local > now {
            local
        } else {
            local + chrono::Duration::days(1)
        };
        return Ok(at.with_timezone(&chrono::Utc));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return chrono::Local
                .from_local_datetime(&t)
                .earliest()
                .map(|l| l.with_timezone(&chrono::Utc))
                .ok_or_else(|| format!("deadline `{text}` does not exist (a clock change)"));
        }
    }
    Err(format!("invalid deadline `{text}`"))
}

/// `--only` takes a job's name or a prefix of it.
fn selects(selector: &str, name: &str) -> bool {
    name.starts_with(selector)
}

struct Checker<'a> {
    text: &'a str,
    base_dir: &'a Path,
    home: Option<&'a Path>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&mut self, at: Option<(usize, usize)>, message: String, hint: Option<&str>) {
        self.problems.push(Problem {
            at,
            message,
            hint: hint.map(String::from),
        });
    }

    /// A problem unless `value` (with the text it was written as) is inside
    /// `range`.
    fn in_range<T: PartialOrd + Copy>(&mut self, job: &str, range: &limits::Range<T>, value: Option<(T, &str)>) {
        if let Some((v, written)) = value
            && !range.contains(v)
        {
            let why = if range.why.is_empty() {
                String::new()
            } else {
                format!(" ({})", range.why)
            };
            self.problem(
                None,
                format!(
                    "job `{job}`: `{}` = {written} is out of range: it {}{why}",
                    range.key,
                    range.between()
                ),
                None,
            );
        }
    }

    fn at(&mut self, offset: usize, message: String, hint: Option<&str>) {
        let at = Some(batch::line_col(self.text, offset));
        self.problem(at, message, hint);
    }

    /// `~` and relative paths, anchored at the batch file's directory.
    fn path(&self, raw: &str) -> PathBuf {
        let expanded = match (raw.strip_prefix("~"), self.home) {
            (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
                home.join(rest.trim_start_matches('/'))
            }
            _ => PathBuf::from(raw),
        };
        let joined = if expanded.is_absolute() {
            expanded
        } else {
            self.base_dir.join(expanded)
        };
        normalize(&joined)
    }

    fn job(&mut self, name: &str, d: &JobFields, j: &JobFields, gpus: &Inventory) -> Option<JobSpec> {
        let before = self.problems.len();
        let image = match j.image.as_ref().or(d.image.as_ref()) {
            Some(i) if !i.get_ref().trim().is_empty() => i.get_ref().clone(),
            Some(i) => {
                self.at(i.span().start, format!("job `{name}`: `image` is empty"), None);
                String::new()
            }
            None => {
                self.problem(
                    None,
                    format!("job `{name}` has no `image`"),
                    Some("set `image` in [defaults] or in the job, e.g. image = \"tb-trainer:latest\""),
                );
                String::new()
            }
        };
        let command = j.command.clone().or_else(|| d.command.clone());
        if command.as_ref().is_some_and(|c| c.is_empty()) {
            self.problem(
                None,
                format!("job `{name}`: `command` is empty"),
                Some("leave `command` out to run the image's own command"),
            );
        }

        let request = j.gpus.or(d.gpus).unwrap_or(GpuRequest::Auto);
        let share = match request {
            GpuRequest::Auto => GpuShare::Whole(u32::from(!gpus.is_empty())),
            GpuRequest::All => GpuShare::Whole(gpus.len() as u32),
            GpuRequest::Given(share) => share,
        };
        if share.gpus() as usize > gpus.len() {
            let have = if gpus.is_empty() {
                "none".to_string()
            } else {
                format!("{} ({})", gpus.len(), gpus.ids.join(","))
            };
            self.problem(
                None,
                format!(
                    "job `{name}` asks for {} but this host has {have} (found by {})",
                    share.describe(),
                    gpus.source
                ),
                Some("set gpus = 0 or \"auto\" to run on CPU; on a GPU host, check that `nvidia-smi` lists the GPUs"),
            );
        }
        if request == GpuRequest::All && gpus.source == "the Slurm cluster" {
            self.problem(
                None,
                format!("job `{name}`: gpus = \"all\" has no meaning on a Slurm cluster"),
                Some("give the number of GPUs the job needs"),
            );
        }
        if request == GpuRequest::All && gpus.is_empty() {
            self.problem(
                None,
                format!("job `{name}` asks for all GPUs but this host has none"),
                Some("set gpus = 0 or \"auto\""),
            );
        }

        let mut env: BTreeMap<String, String> = d.env.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        for (k, v) in j.env.iter().flatten() {
            env.insert(k.clone(), v.0.clone());
        }
        for key in env.keys() {
            if !is_env_name(key) {
                self.problem(
                    None,
                    format!("job `{name}`: `{key}` is not a valid environment variable name"),
                    None,
                );
            } else if reserved_env(key) {
                self.problem(
                    None,
                    format!("job `{name}`: `{key}` is set by tb itself (TB_* and NVIDIA_VISIBLE_DEVICES are reserved)"),
                    None,
                );
            }
        }
        let pass_env: Vec<String> = j
            .pass_env
            .as_ref()
            .or(d.pass_env.as_ref())
            .into_iter()
            .flatten()
            .map(|s| s.get_ref().clone())
            .collect();
        for (k, raw) in pass_env
            .iter()
            .zip(j.pass_env.as_ref().or(d.pass_env.as_ref()).into_iter().flatten())
        {
            if !is_env_name(k) {
                self.at(
                    raw.span().start,
                    format!("`{k}` in pass_env is not a valid environment variable name"),
                    None,
                );
            } else if reserved_env(k) {
                self.at(
                    raw.span().start,
                    format!("`{k}` in pass_env is set by tb itself (TB_* and NVIDIA_VISIBLE_DEVICES are reserved)"),
                    None,
                );
            }
        }

        let mut mounts = Vec::new();
        for raw in j.mounts.as_ref().or(d.mounts.as_ref()).into_iter().flatten() {
            match self.mount(raw.get_ref()) {
                Ok(m) => {
                    if !m.host.exists() {
                        self.at(
                            raw.span().start,
                            format!("job `{name}`: mount source `{}` does not exist", m.host.display()),
                            Some("create it, or fix the path (relative paths start at the batch file's directory)"),
                        );
                    }
                    mounts.push(m)
                }
                Err(why) => self.at(
                    raw.span().start,
                    format!("job `{name}`: invalid mount `{}`: {why}", raw.get_ref()),
                    Some("write mounts as \"host:container\" or \"host:container:ro\""),
                ),
            }
        }
        let code = j.code.as_ref().or(d.code.as_ref()).map(|c| {
            let p = self.path(c.get_ref());
            if !p.is_dir() {
                self.at(
                    c.span().start,
                    format!("job `{name}`: code directory `{}` does not exist", p.display()),
                    None,
                );
            }
            p
        });

        let train = match (&d.train, &j.train) {
            (None, None) => None,
            (Some(a), None) | (None, Some(a)) => Some(a.clone()),
            (Some(a), Some(b)) => Some(batch::merge_tables(a, b)),
        };
        let train = train.map(|t| serde_json::to_value(t).expect("a TOML table is valid JSON"));

        let args = match (&d.args, &j.args) {
            (None, None) => toml::Table::new(),
            (Some(a), None) | (None, Some(a)) => a.get_ref().clone(),
            (Some(a), Some(b)) => batch::merge_tables(a.get_ref(), b.get_ref()),
        };
        let at = j.args.as_ref().or(d.args.as_ref()).map(|a| a.span().start);
        let mut command = command;
        if !args.is_empty() {
            match command.as_mut() {
                Some(c) => {
                    for (key, value) in &args {
                        match arg(key, value) {
                            Ok(flag) => c.push(flag),
                            Err(why) => self.at(at.unwrap_or(0), format!("job `{name}`: {why}"), None),
                        }
                    }
                }
                None => self.at(
                    at.unwrap_or(0),
                    format!("job `{name}`: `args` are appended to `command`, and the job has none"),
                    Some("give the job a `command`, e.g. command = [\"python\", \"train.py\"]"),
                ),
            }
        }
        let args: BTreeMap<String, serde_json::Value> = args
            .into_iter()
            .map(|(k, v)| (k, serde_json::to_value(v).expect("TOML values are JSON")))
            .collect();
        let (jm, dm) = (
            j.metrics.clone().unwrap_or_default(),
            d.metrics.clone().unwrap_or_default(),
        );
        let metrics = MetricsSpec {
            monitor: jm.monitor.or(dm.monitor),
            mode: jm.mode.or(dm.mode),
            source: jm.source.or(dm.source).unwrap_or_default(),
        };
        if metrics.monitor.as_deref().is_some_and(|m| m.trim().is_empty()) {
            self.problem(None, format!("job `{name}`: `metrics.monitor` is empty"), None);
        }
        let prune = self.prune(
            name,
            d.prune.as_ref(),
            j.prune.as_ref(),
            &metrics,
            train.as_ref(),
            &args,
        );

        let memory = j.memory.as_ref().or(d.memory.as_ref());
        self.in_range(name, &limits::MEMORY, memory.map(|m| (m.bytes, m.written.as_str())));
        let shm = j.shm_size.as_ref().or(d.shm_size.as_ref());
        self.in_range(name, &limits::SHM_SIZE, shm.map(|m| (m.bytes, m.written.as_str())));
        let time_limit = j.time_limit.as_ref().or(d.time_limit.as_ref());
        self.in_range(
            name,
            &limits::TIME_LIMIT,
            time_limit.map(|t| (t.duration, t.written.as_str())),
        );
        let (memory, time_limit) = (memory.map(|m| m.bytes), time_limit.map(|t| t.duration));
        let shm_size = shm.map(|m| m.bytes).unwrap_or(DEFAULT_SHM);

        if self.problems.len() > before {
            return None;
        }
        Some(JobSpec {
            name: name.to_string(),
            image,
            command,
            gpus: share,
            cpus: j.cpus.or(d.cpus).map(|c| c.0),
            memory,
            shm_size,
            time_limit,
            env,
            pass_env,
            mounts,
            code,
            network: j
                .network
                .clone()
                .or_else(|| d.network.clone())
                .unwrap_or_else(|| DEFAULT_NETWORK.into()),
            train,
            args,
            metrics,
            prune,
            swept: BTreeMap::new(),
            warm_start: None,
        })
    }

    /// `[job.prune]` over `[defaults.prune]`, resolved: the metric is the
    /// job's monitor unless named, with its mode; `max_epochs` the job's
    /// (`train.max_epochs`, the trainer's default, or a LightningCLI
    /// script's `trainer.max_epochs` option) unless given. The group is
    /// set by the caller, which knows the job's `[[job]]`.
    fn prune(
        &mut self,
        name: &str,
        d: Option<&batch::PruneFields>,
        j: Option<&batch::PruneFields>,
        metrics: &MetricsSpec,
        train: Option<&serde_json::Value>,
        args: &BTreeMap<String, serde_json::Value>,
    ) -> Option<PruneSpec> {
        if d.is_none() && j.is_none() {
            return None;
        }
        let (d, j) = (d.cloned().unwrap_or_default(), j.cloned().unwrap_or_default());
        let monitor = metrics.named(train);
        let metric = j
            .metric
            .or(d.metric)
            .or_else(|| monitor.as_ref().map(|m| m.metric.clone()))
            .unwrap_or_else(|| crate::metrics::DEFAULT_MONITOR.into());
        let mode = j
            .mode
            .or(d.mode)
            .or_else(|| monitor.as_ref().filter(|m| m.metric == metric).map(|m| m.mode))
            .or_else(|| (monitor.is_none() && metric == crate::metrics::DEFAULT_MONITOR).then_some(Mode::Min));
        let mode = match mode {
            Some(m) => m,
            None => {
                self.problem(
                    None,
                    format!(
                        "job `{name}`: `prune.metric` = \"{metric}\" is not the job's monitor, so tb cannot tell \
                         whether higher or lower is better"
                    ),
                    Some("set `mode = \"max\"` or `mode = \"min\"` in [job.prune]"),
                );
                Mode::Min
            }
        };
        let grace = j.grace.or(d.grace).map_or(1, |g| g.0);
        let reduction = j.reduction.or(d.reduction).map_or(3, |r| r.0);
        let max_epochs = j
            .max_epochs
            .or(d.max_epochs)
            .map(|m| m.0)
            .or_else(|| train.and_then(|t| t.get("max_epochs")).and_then(|m| m.as_u64()))
            .or_else(|| args.get("trainer.max_epochs").and_then(|m| m.as_u64()))
            .or_else(|| train.is_some().then_some(TRAINER_MAX_EPOCHS));
        let (r, g, m) = (limits::PRUNE_REDUCTION, limits::PRUNE_GRACE, limits::PRUNE_MAX_EPOCHS);
        if !g.contains(grace) {
            self.problem(
                None,
                format!(
                    "job `{name}`: `prune.grace` = {grace}: must be between {} and {} epochs",
                    g.min, g.max
                ),
                None,
            );
        }
        if !r.contains(reduction) {
            self.problem(
                None,
                format!(
                    "job `{name}`: `prune.reduction` = {reduction}: must be between {} and {}",
                    r.min, r.max
                ),
                Some("3 keeps the best third at each rung"),
            );
        }
        if let Some(max) = max_epochs.filter(|&e| !m.contains(e)) {
            self.problem(
                None,
                format!(
                    "job `{name}`: the jobs' max_epochs = {max}: pruning needs between {} and {} epochs",
                    m.min, m.max
                ),
                Some("set `max_epochs` in [job.prune]"),
            );
        } else if let Some(max) = max_epochs.filter(|&m| grace >= m) {
            self.problem(
                None,
                format!("job `{name}`: `prune.grace` = {grace} leaves no decision within {max} epochs"),
                Some("make `grace` smaller than the epochs the job runs"),
            );
        }
        Some(PruneSpec {
            method: j.method.or(d.method).unwrap_or(Method::Asha),
            metric,
            mode,
            grace,
            reduction,
            max_epochs,
            group: name.to_string(),
        })
    }

    fn mount(&self, raw: &str) -> Result<Mount, String> {
        let parts: Vec<&str> = raw.split(':').collect();
        let (host, container, options) = match parts.as_slice() {
            [h, c] => (*h, *c, None),
            [h, c, o] => (*h, *c, Some(o.to_string())),
            _ => return Err("expected host:container[:options]".into()),
        };
        if host.is_empty() || container.is_empty() {
            return Err("both sides of `:` are needed".into());
        }
        if !container.starts_with('/') {
            return Err(format!("the container path `{container}` must be absolute"));
        }
        let reserved = ["/out", "/downloads", "/code", WarmStart::MOUNT, EVALUATE_MOUNT];
        let target = normalize(Path::new(container));
        if reserved.iter().any(|r| target == Path::new(r)) {
            return Err(format!("`{container}` is where tb mounts its own directory"));
        }
        if let Some(o) = &options
            && o.split(',').any(|opt| {
                !matches!(
                    opt,
                    "ro" | "rw"
                        | "z"
                        | "Z"
                        | "shared"
                        | "slave"
                        | "private"
                        | "rshared"
                        | "rslave"
                        | "rprivate"
                        | "nocopy"
                        | "consistent"
                        | "cached"
                        | "delegated"
                )
            })
        {
            return Err(format!("unknown mount option in `{o}`"));
        }
        Ok(Mount {
            host: self.path(host),
            container: container.to_string(),
            options,
        })
    }
}

/// `--key=value` for an `args` entry: strings as written, numbers and
/// booleans as TOML writes them, lists and tables as JSON (which
/// jsonargparse and most parsers take).
/// `train.max_epochs` when a trainer job does not set it (the trainer's
/// `TrainConfig` default).
const TRAINER_MAX_EPOCHS: u64 = 30;

fn arg(key: &str, value: &toml::Value) -> Result<String, String> {
    if key.is_empty() || key.starts_with('-') || key.chars().any(|c| c.is_whitespace() || c == '=') {
        return Err(format!(
            "`args` key `{key}` is not an option name (write it without dashes, e.g. \"model.lr\")"
        ));
    }
    let text = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        // `1.0` stays a float to the script's parser (`{f}` would give `1`,
        // which jsonargparse reads as an int); `1e-05` and `0.03` as written.
        toml::Value::Float(f) => format!("{f:?}"),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        other => serde_json::to_string(other).expect("TOML values are JSON"),
    };
    Ok(format!("--{key}={text}"))
}

/// Variables tb sets in every container: a job's own value would silently
/// change which GPUs it gets or what it thinks its job is.
fn reserved_env(key: &str) -> bool {
    key.starts_with("TB_") || key == "NVIDIA_VISIBLE_DEVICES"
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Removes `.` and `..` components without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str, gpus: &str) -> Result<Plan, Problems> {
        let dir = std::env::temp_dir();
        resolve_text(
            &dir.join("night.toml"),
            text.to_string(),
            &dir,
            Some(Path::new("/home/u")),
            &Overrides::default(),
            Inventory::from_list(gpus, "TB_GPUS"),
        )
    }

    fn messages(text: &str) -> Vec<String> {
        plan(text, "").unwrap_err().0.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn warm_start_and_deploy_are_batch_settings() {
        let p = plan(
            "[batch]\nwarm_start = true\n[batch.deploy]\ndir = \"./deployed\"\n[[job]]\nname = \"a\"\nimage = \"i\"\n",
            "",
        )
        .unwrap();
        assert!(p.settings.warm_start);
        assert_eq!(
            p.settings.deploy.as_ref().map(|d| d.dir.clone()),
            Some(std::env::temp_dir().join("deployed"))
        );
        assert_eq!(
            p.jobs[0].warm_start, None,
            "decided when the batch is created, not here"
        );
        let off = plan("[[job]]\nname = \"a\"\nimage = \"i\"\n", "").unwrap();
        assert!(!off.settings.warm_start && off.settings.deploy.is_none());

        let m = messages("[batch.deploy]\n[[job]]\nname = \"a\"\nimage = \"i\"\n");
        assert_eq!(m, ["[batch.deploy] names no directory"]);
        let m = messages("[batch.deploy]\ndir = \"\"\n[[job]]\nname = \"a\"\nimage = \"i\"\n");
        assert_eq!(m, ["line 2, column 7: `batch.deploy.dir` is empty"]);
        let m = messages("[batch.deploy]\ndri = \"x\"\n[[job]]\nname = \"a\"\nimage = \"i\"\n");
        assert!(m[0].contains("unknown field `dri`"), "{m:?}");
        let m = messages("[[job]]\nname = \"a\"\nimage = \"i\"\nmounts = [\"/tmp:/previous\"]\n");
        assert!(
            m[0].contains("`/previous` is where tb mounts its own directory"),
            "{m:?}"
        );
        // A deploy scores with the job's mounts and the checkpoint at /evaluate.
        let m = messages("[[job]]\nname = \"a\"\nimage = \"i\"\nmounts = [\"/tmp:/evaluate/\"]\n");
        assert!(
            m[0].contains("`/evaluate/` is where tb mounts its own directory"),
            "{m:?}"
        );
    }

    #[test]
    fn defaults_are_inherited_and_tables_merge() {
        let p = plan(
            r#"
[defaults]
image = "img"
memory = "8g"
env = { A = "1", B = 2 }
[defaults.train]
model = "unet"
max_epochs = 30
[[job]]
name = "a"
env = { B = "x" }
[job.train]
max_epochs = 5
[[job]]
name = "b"
image = "other"
shm_size = "2g"
"#,
            "",
        )
        .unwrap();
        assert_eq!(p.name, "night");
        assert_eq!(p.settings.concurrency, 1);
        assert_eq!(p.settings.downloads, PathBuf::from("/home/u/.cache/tb/downloads"));
        let a = &p.jobs[0];
        assert_eq!(a.image, "img");
        assert_eq!(a.memory, Some(8 << 30));
        assert_eq!(a.shm_size, DEFAULT_SHM);
        assert_eq!(a.env["A"], "1");
        assert_eq!(a.env["B"], "x");
        assert_eq!(a.train.as_ref().unwrap()["model"], "unet");
        assert_eq!(a.train.as_ref().unwrap()["max_epochs"], 5);
        assert_eq!(a.gpus, GpuShare::Whole(0));
        assert_eq!(a.network, "bridge");
        let b = &p.jobs[1];
        assert_eq!(b.image, "other");
        assert_eq!(b.shm_size, 2 << 30);
        assert_eq!(b.env["B"], "2");
    }

    #[test]
    fn duplicate_and_unsafe_names_are_located() {
        let m = messages(
            "[defaults]\nimage = \"i\"\n[[job]]\nname = \"a\"\n[[job]]\nname = \"a\"\n[[job]]\nname = \"../x\"\n",
        );
        assert_eq!(m[0], "line 6, column 8: duplicate job name `a`");
        assert!(
            m[1].starts_with("line 8, column 8: job name `../x` must start with a letter or digit"),
            "{}",
            m[1]
        );
        let m = messages("[defaults]\nimage = \"i\"\n[[job]]\nname = \"\"\n");
        assert_eq!(m[0], "line 4, column 8: a job name cannot be empty");
    }

    #[test]
    fn missing_mount_source_is_refused() {
        let m =
            messages("[defaults]\nimage = \"i\"\nmounts = [\"./no-such-dir-tb:/data:ro\"]\n[[job]]\nname = \"a\"\n");
        assert!(
            m[0].starts_with("line 3, column 11: job `a`: mount source `"),
            "{}",
            m[0]
        );
        assert!(m[0].ends_with("no-such-dir-tb` does not exist"), "{}", m[0]);
        let m = messages("[defaults]\nimage = \"i\"\nmounts = [\"/tmp:data\"]\n[[job]]\nname = \"a\"\n");
        assert!(m[0].contains("the container path `data` must be absolute"), "{}", m[0]);
        let m = messages("[defaults]\nimage = \"i\"\nmounts = [\"/tmp:/out\"]\n[[job]]\nname = \"a\"\n");
        assert!(m[0].contains("`/out` is where tb mounts its own directory"), "{}", m[0]);
    }

    #[test]
    fn gpu_request_without_gpu_is_refused() {
        let text = "[defaults]\nimage = \"i\"\ngpus = 1\n[[job]]\nname = \"a\"\n";
        let m = messages(text);
        assert_eq!(
            m[0],
            "job `a` asks for 1 GPU(s) but this host has none (found by TB_GPUS)"
        );
        let p = plan(text, "0,1").unwrap();
        assert_eq!(p.jobs[0].gpus, GpuShare::Whole(1));
        assert_eq!(p.settings.concurrency, 2);
        let m: Vec<String> = plan("[defaults]\nimage = \"i\"\ngpus = 3\n[[job]]\nname = \"a\"\n", "0,1")
            .unwrap_err()
            .0
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            m[0],
            "job `a` asks for 3 GPU(s) but this host has 2 (0,1) (found by TB_GPUS)"
        );
        let p = plan(
            "[defaults]\nimage = \"i\"\ngpus = \"all\"\n[[job]]\nname = \"a\"\n",
            "0,1",
        )
        .unwrap();
        assert_eq!(p.jobs[0].gpus, GpuShare::Whole(2));
    }

    #[test]
    fn a_share_of_a_gpu_resolves_and_auto_concurrency_counts_shares() {
        let half = "[defaults]\nimage = \"i\"\ngpus = 0.5\n[[job]]\nname = \"a\"\n[[job]]\nname = \"b\"\ngpus = 1\n";
        let p = plan(half, "0,1").unwrap();
        assert_eq!(p.jobs[0].gpus.fraction().map(|f| f.per_gpu()), Some(2));
        assert_eq!(p.jobs[1].gpus, GpuShare::Whole(1));
        assert_eq!(p.settings.concurrency, 4, "two GPUs of halves");
        let p = plan(&half.replace("0.5", "0.25"), "0,1").unwrap();
        assert_eq!(p.settings.concurrency, 8);
        let p = plan(&format!("[batch]\nconcurrency = 3\n{half}"), "0,1").unwrap();
        assert_eq!(p.settings.concurrency, 3, "a number is a number");
        let p = plan(&half.replace("0.5", "0.33"), "0").unwrap();
        assert_eq!(p.settings.concurrency, 3);
        assert_eq!(
            messages(half)[0],
            "job `a` asks for a share of a GPU (gpus = 0.5) but this host has none (found by TB_GPUS)"
        );
    }

    #[test]
    fn shares_that_are_not_one_over_n_are_refused_naming_the_allowed_ones() {
        for bad in ["0.3", "1.5", "0.6", "-0.5"] {
            let m = messages(&format!(
                "[defaults]\nimage = \"i\"\ngpus = {bad}\n[[job]]\nname = \"a\"\n"
            ));
            assert!(m[0].starts_with(&format!("line 3, column 8: invalid gpus {bad}: expected 0.5, 0.33, 0.25, 0.2, 0.17, 0.14, 0.12 or a whole number between 0 and 64")), "{}", m[0]);
        }
    }

    #[test]
    fn a_share_on_slurm_needs_the_sites_shards() {
        let job = "[defaults]\nimage = \"i\"\ngpus = 0.5\n[[job]]\nname = \"a\"\n";
        let on_slurm = |slurm: &str| {
            plan(
                &format!("[batch]\nbackend = \"slurm\"\n[batch.slurm]\n{slurm}{job}"),
                "",
            )
        };
        let m = on_slurm("").unwrap_err().0;
        assert_eq!(
            m[0].message,
            "job `a` asks for a share of a GPU (gpus = 0.5), which Slurm grants only as a `shard` gres"
        );
        assert!(m[0].hint.as_deref().unwrap().contains("gres_share = \"shard\""));
        // The shards per GPU are the cluster's: preflight asks it.
        let p = on_slurm("gres_share = \"shard\"\n").unwrap();
        assert_eq!(p.settings.slurm.gres_share, Some(batch::GresShare::Shard));
        assert_eq!(p.settings.slurm.shards_per_gpu, None);
        let m = on_slurm("gres_share = \"shard\"\nshards_per_gpu = 0\n").unwrap_err().0;
        assert_eq!(m[0].message, "invalid shards_per_gpu 0: must be between 1 and 1024");
        let p = on_slurm("gres_share = \"shard\"\nshards_per_gpu = 8\n").unwrap();
        assert_eq!(p.settings.slurm.shards_per_gpu, Some(8));
        let m = on_slurm("gres_share = \"mps\"\n").unwrap_err().0;
        assert!(m[0].message.contains("unknown variant `mps`"), "{}", m[0].message);
        // Whole GPUs need none of it.
        assert!(
            plan(
                &format!("[batch]\nbackend = \"slurm\"\n{}", job.replace("0.5", "1")),
                ""
            )
            .is_ok()
        );
    }

    #[test]
    fn all_problems_are_reported_together() {
        let m = messages("[defaults]\nenv = { TB_JOB = \"x\" }\n[[job]]\nname = \"a\"\n[[job]]\n");
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[0].contains("job `a` has no `image`"));
        assert!(m[1].contains("`TB_JOB` is set by tb itself"));
        assert_eq!(m[2], "[[job]] number 2 has no `name`");
    }

    #[test]
    fn unimplemented_contract_keys_say_so() {
        let m = messages("[batch]\nbackend = \"pbs\"\n[defaults]\nimage = \"i\"\n[[job]]\nname = \"a\"\n");
        assert!(
            m[0].starts_with("line 2, column 11: unknown variant `pbs`, expected `local` or `slurm`"),
            "{}",
            m[0]
        );
    }

    #[test]
    fn only_selects_by_name_or_prefix() {
        let dir = std::env::temp_dir();
        let text =
            "[defaults]\nimage = \"i\"\n[[job]]\nname = \"lr_1\"\n[[job]]\nname = \"lr_2\"\n[[job]]\nname = \"base\"\n";
        let ov = Overrides {
            only: vec!["lr".into()],
            ..Default::default()
        };
        let p = resolve_text(&dir.join("x.toml"), text.into(), &dir, None, &ov, Inventory::default()).unwrap();
        assert_eq!(
            p.jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
            ["lr_1", "lr_2"]
        );
        let ov = Overrides {
            only: vec!["bsae".into()],
            ..Default::default()
        };
        let e = resolve_text(&dir.join("x.toml"), text.into(), &dir, None, &ov, Inventory::default()).unwrap_err();
        assert_eq!(e.0[0].message, "--only `bsae` matches no job");
        assert_eq!(e.0[0].hint.as_deref(), Some("did you mean `base`?"));
    }

    #[test]
    fn args_are_appended_as_options_and_swept_by_their_last_part() {
        let p = plan(
            r#"
[defaults]
image = "i"
command = ["python", "main.py", "fit"]
[defaults.args]
"trainer.max_epochs" = 5
"trainer.logger" = false
"trainer.gradient_clip_val" = 1.0
tags = ["a", "b"]
[[job]]
name = "lr"
args = { seed_everything = 0 }
[job.metrics]
monitor = "val_acc"
mode = "max"
[job.sweep]
"args.model.learning_rate" = [1e-3, 3e-4]
"#,
            "",
        )
        .unwrap();
        let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["lr_learning_rate-0.001", "lr_learning_rate-0.0003"]);
        let j = &p.jobs[1];
        assert_eq!(
            j.command.as_ref().unwrap(),
            &[
                "python",
                "main.py",
                "fit",
                "--model.learning_rate=0.0003",
                "--seed_everything=0",
                "--tags=[\"a\",\"b\"]",
                "--trainer.gradient_clip_val=1.0",
                "--trainer.logger=false",
                "--trainer.max_epochs=5",
            ]
        );
        assert_eq!(j.args["model.learning_rate"], 0.0003);
        assert_eq!(j.swept["args.model.learning_rate"], 0.0003);
        assert_eq!(j.metrics.monitor.as_deref(), Some("val_acc"));
        assert_eq!(j.metrics.mode, Some(crate::metrics::Mode::Max));
    }

    #[test]
    fn sizes_and_durations_outside_the_limits_name_key_and_range() {
        let m = messages(
            "[defaults]\nimage = \"i\"\ntime_limit = \"18446744073709551615s\"\n[[job]]\nname = \"a\"\n\
             memory = \"99999999999999999999g\"\nshm_size = \"18446744073709551616\"\n[[job]]\nname = \"b\"\n\
             memory = \"1\"\ntime_limit = \"1s\"\n",
        );
        assert_eq!(
            m,
            [
                "job `a`: `memory` = \"99999999999999999999g\" is out of range: it must be between 6m and 64t \
                 (6 MiB is the Docker engine's minimum)",
                "job `a`: `shm_size` = \"18446744073709551616\" is out of range: it must be between 1m and 64t",
                "job `a`: `time_limit` = \"18446744073709551615s\" is out of range: it must be between 1s and 365d",
                "job `b`: `memory` = \"1\" is out of range: it must be between 6m and 64t \
                 (6 MiB is the Docker engine's minimum)",
            ]
        );
        // The ends are in.
        let p = plan(
            "[defaults]\nimage = \"i\"\nmemory = \"6m\"\nshm_size = \"64t\"\ntime_limit = \"365d\"\n[[job]]\nname = \"a\"\n",
            "",
        )
        .unwrap();
        assert_eq!(p.jobs[0].memory, Some(limits::MEMORY.min));
        assert_eq!(p.jobs[0].time_limit, Some(limits::TIME_LIMIT.max));
        // A sweep's values are checked as the job's own.
        let m = messages("[defaults]\nimage = \"i\"\n[[job]]\nname = \"a\"\n[job.sweep]\nmemory = [\"8g\", 5]\n");
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("job `a_memory-5`: `memory` = 5 is out of range"), "{m:?}");
    }

    #[test]
    fn counts_outside_the_limits_are_refused() {
        for (text, says) in [
            ("[defaults]\ngpus = 65\n", "invalid gpus 65: must be between 0 and 64"),
            (
                "[defaults]\ncpus = 0.001\n",
                "invalid cpus 0.001: must be between 0.01 and 4096",
            ),
            (
                "[batch]\nretries = 101\n",
                "invalid retries 101: must be between 0 and 100",
            ),
            ("[batch]\nretries = \"x\"\n", "expected a number of retries"),
            (
                "[defaults.prune]\ngrace = 2000000\n",
                "`prune.grace` = 2000000: must be between 1 and 1000000",
            ),
            (
                "[defaults.prune]\nmax_epochs = 2000000\n",
                "max_epochs = 2000000: pruning needs between 1 and 1000000 epochs",
            ),
            (
                "[batch]\ndeadline = \"2999-01-01 07:00\"\n",
                "deadline `2999-01-01 07:00` is more than 365 days away",
            ),
        ] {
            let file = format!("{text}\n[[job]]\nname = \"a\"\nimage = \"i\"\ncommand = [\"x\"]\n");
            let m: Vec<String> = match plan(&file, "") {
                Ok(_) => panic!("accepted: {file}"),
                Err(p) => p.0.iter().map(|p| p.to_string()).collect(),
            };
            assert!(m.iter().any(|l| l.contains(says)), "{file}\n{m:?}");
        }
    }

    #[test]
    fn watch_takes_a_directory_a_time_or_both_with_defaults() {
        let job = "\n[[job]]\nname = \"a\"\nimage = \"i\"\ncommand = [\"x\"]\n";
        let p = plan(&format!("[batch.watch]\ndata = \"./incoming\"\n{job}"), "").unwrap();
        let w = p.watch.unwrap();
        assert_eq!(w.data, Some(std::env::temp_dir().join("incoming")));
        assert_eq!((w.min_new, w.settle, w.every), (1, DEFAULT_SETTLE, None));
        let p = plan(
            &format!("[batch.watch]\ndata = \"/in\"\nmin_new = 100\nsettle = \"1s\"\nevery = \"24h\"\n{job}"),
            "",
        )
        .unwrap();
        let w = p.watch.unwrap();
        assert_eq!(
            (w.min_new, w.settle, w.every),
            (100, Duration::from_secs(1), Some(Duration::from_secs(86400)))
        );
        let p = plan(&format!("[batch.watch]\nevery = \"1h\"\n{job}"), "").unwrap();
        assert_eq!(p.watch.unwrap().data, None);
        assert_eq!(plan(job, "").unwrap().watch, None);
    }

    #[test]
    fn watch_without_a_trigger_or_out_of_range_is_refused() {
        let job = "\n[[job]]\nname = \"a\"\nimage = \"i\"\ncommand = [\"x\"]\n";
        for (text, says) in [
            ("[batch.watch]\n", "[batch.watch] has no trigger: it needs `data`"),
            (
                "[batch.watch]\nmin_new = 5\nevery = \"1h\"\n",
                "`batch.watch.min_new` counts files, but [batch.watch] names no `data` directory",
            ),
            (
                "[batch.watch]\ndata = \"/in\"\nmin_new = 0\n",
                "line 3, column 11: `batch.watch.min_new` = 0 is out of range: it must be between 1 and 1,000,000",
            ),
            (
                "[batch.watch]\ndata = \"/in\"\nsettle = \"2d\"\n",
                "`batch.watch.settle` = \"2d\" is out of range: it must be between 1s and 1d",
            ),
            (
                "[batch.watch]\nevery = \"500ms\"\n",
                "`batch.watch.every` = \"500ms\" is out of range: it must be between 1s and 365d",
            ),
            ("[batch.watch]\ndata = \" \"\n", "`batch.watch.data` is empty"),
            ("[batch.watch]\nevery = \"0s\"\n", "must be greater than zero"),
            ("[batch.watch]\nevrey = \"1h\"\n", "unknown field `evrey`"),
        ] {
            let m = messages(&format!("{text}{job}"));
            assert!(m.iter().any(|l| l.contains(says)), "{text}\n{m:?}");
        }
    }

    #[test]
    fn a_time_limit_past_the_clock_in_job_json_reads() {
        let mut spec = plan("[defaults]\nimage = \"i\"\n[[job]]\nname = \"a\"\n", "")
            .unwrap()
            .jobs
            .remove(0);
        let mut json = serde_json::to_value(&spec).unwrap();
        json["time_limit"] = serde_json::json!(1.8446744073709552e19);
        let back: JobSpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back.time_limit, Some(Duration::MAX));
        json["time_limit"] = serde_json::json!(-1.0);
        assert!(serde_json::from_value::<JobSpec>(json).is_err());
        spec.time_limit = Some(Duration::from_secs(90));
        let back: JobSpec = serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(back.time_limit, spec.time_limit);
    }

    #[test]
    fn a_batch_over_the_job_limit_is_refused_with_its_count() {
        let list = format!("[{}]", (0..300).map(|i| i.to_string()).collect::<Vec<_>>().join(", "));
        let m = messages(&format!(
            "[defaults]\nimage = \"i\"\n[[job]]\nname = \"a\"\n[job.sweep]\n\"train.x\" = {list}\n\"train.y\" = {list}\n\
             [[job]]\nname = \"b\"\n[job.sweep]\n\"train.x\" = {list}\n\"train.y\" = {list}\n\
             [[job]]\nname = \"c\"\n"
        ));
        assert_eq!(
            m,
            ["the batch would hold 180,001 jobs (`a`: 90,000, `b`: 90,000); a batch holds at most 100,000"]
        );
        let m = messages(&format!(
            "[defaults]\nimage = \"i\"\n[[job]]\nname = \"big\"\n[job.sweep]\n\"train.x\" = {list}\n\"train.y\" = {list}\n\
             [job.cv]\nfolds = 2\n"
        ));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains(
                "job `big`: the sweep would expand into 300 (train.x) × 300 (train.y) × 2 folds = 180,000 jobs"
            ),
            "{m:?}"
        );
    }

    #[test]
    fn args_need_a_command_and_option_names() {
        let m = messages("[defaults]\nimage = \"i\"\n[[job]]\nname = \"a\"\nargs = { lr = 1 }\n");
        assert!(
            m[0].contains("job `a`: `args` are appended to `command`, and the job has none"),
            "{m:?}"
        );
        let m =
            messages("[defaults]\nimage = \"i\"\ncommand = [\"x\"]\n[[job]]\nname = \"a\"\nargs = { \"--lr\" = 1 }\n");
        assert!(m[0].contains("`args` key `--lr` is not an option name"), "{m:?}");
        let m = messages("[defaults]\nimage = \"i\"\n[defaults.metrics]\nmonitr = \"x\"\n[[job]]\nname = \"a\"\n");
        assert!(m[0].contains("unknown field `monitr`"), "{m:?}");
    }
}
