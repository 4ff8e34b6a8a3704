//! The command line: clap's view of it. Nothing here leaves this module but
//! through `settings` and `commands`, which turn it into checked values.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// tb (torchbearer) runs a night of training jobs, one Docker container each,
/// and tells you in the morning what trained, what stopped early and why.
#[derive(Debug, Parser)]
#[command(name = "tb", version, propagate_version = true, max_term_width = 100)]
#[command(
    after_help = "Examples:\n  tb batch jobs/night.toml      run a batch\n  tb status --watch             how the newest batch is doing\n  tb logs baseline -f           follow one job's output\n  tb ls                         the batches, newest first"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where batch directories live.
    #[arg(long, global = true, env = "TB_RUNS_DIR", default_value = "runs", value_name = "DIR")]
    pub runs_dir: PathBuf,
    /// More detail on stderr (repeat for more); turns progress bars into plain lines.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Plain lines instead of progress bars.
    #[arg(long, global = true)]
    pub no_progress: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a batch file, run every job in it, and write the results.
    #[command(
        after_help = "Examples:\n  tb batch jobs/night.toml\n  tb batch jobs/night.toml --concurrency 2 --only baseline\n  tb batch jobs/night.toml --dry-run"
    )]
    Batch(BatchArgs),
    /// Run a batch file again each time a trigger of its [batch.watch] fires: new files, or a time.
    #[command(
        after_help = "Each trigger starts a new batch directory, as `tb batch FILE` would; one that fires\nwhile a batch runs waits for it. State is kept in RUNS/<name>.watch/watch.json: after a\nkill and a restart no trigger is lost or fired twice, and an unfinished batch is resumed.\nTB_WATCH_POLL=SECONDS sets how often it looks (default 5).\n\nExamples:\n  tb watch jobs/retrain.toml\n  tb watch jobs/retrain.toml --once      from cron: run what is due, then exit"
    )]
    Watch(WatchArgs),
    /// Check a batch file and the system as `tb batch` would, and list its jobs; runs nothing.
    #[command(after_help = "Example:\n  tb validate jobs/night.toml")]
    Validate(ValidateArgs),
    /// One row per job of a batch: status, attempt, elapsed, epoch, best metric.
    #[command(after_help = "Examples:\n  tb status\n  tb status --watch\n  tb status 2026-11-22_230000_night --json")]
    Status(StatusArgs),
    /// Continue a batch whose supervisor stopped: follow its containers that still run, run its pending jobs.
    #[command(
        after_help = "Safe after tb was killed, even with SIGKILL: no job runs twice, and the output written\nmeanwhile is recovered from the engine.\n\nExamples:\n  tb resume\n  tb resume 2026-11-22_230000_night\n  tb resume --deadline 07:00      start no job after 7 o'clock"
    )]
    Resume(ResumeArgs),
    /// Stop running jobs gracefully (SIGTERM, a grace period, then SIGKILL).
    #[command(
        after_help = "Examples:\n  tb cancel                      the whole newest batch\n  tb cancel --job lr_r03         one job; the others go on"
    )]
    Cancel(CancelArgs),
    /// Run one job of a batch here, in one container: what a Slurm job runs on its node.
    #[command(
        after_help = "tb writes the job script that calls this; you rarely run it by hand.\nIt uses this node's Docker engine and the GPUs Slurm assigned, by the node's ids\n(SLURM_JOB_GPUS, else `scontrol show job -d`).\n\nExample:\n  tb exec /shared/runs/2026-11-22_230000_night/jobs/baseline"
    )]
    Exec(ExecArgs),
    /// Remove leftover tb containers of batches that no supervisor holds.
    #[command(
        after_help = "Only containers with tb's labels (tb.batch, tb.job, tb.attempt) are touched.\n\nExample:\n  tb clean --dry-run"
    )]
    Clean(CleanArgs),
    /// Run again, in the same batch directory, the jobs that did not succeed.
    #[command(
        after_help = "Jobs with a checkpoints/last.ckpt resume from it.\n\nExamples:\n  tb retry\n  tb retry --failed-only\n  tb retry 2026-11-22_230000_night --job lr_r03"
    )]
    Retry(RetryArgs),
    /// Write the batch report (report.md, report.json, report.html, report.csv) again, and print their paths.
    #[command(
        after_help = "Works while the batch still runs (running jobs are shown as such).\n\nExamples:\n  tb report\n  tb report 2026-11-22_230000_night --format html"
    )]
    Report(ReportArgs),
    /// Send a batch to MLflow now: what a server that was down missed, or a batch run without [batch.mlflow].
    #[command(
        name = "mlflow-sync",
        after_help = "Idempotent: runs are found by their tb.job_id tag and no point is sent twice.\nCredentials come from MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME and\nMLFLOW_TRACKING_PASSWORD.\n\nExamples:\n  tb mlflow-sync\n  tb mlflow-sync 2026-11-22_230000_night --tracking-uri http://mlflow.lab:5000"
    )]
    MlflowSync(MlflowSyncArgs),
    /// Deploy a batch's best model if it beats the deployed one on the same data.
    #[command(
        after_help = "The model goes to [batch.deploy]'s dir (or --dir) only if it is better: a trainer job's\ncheckpoint and the deployed one are both scored on this batch's test split; a command\njob's logged monitor is compared. Every decision is appended to DIR/history.jsonl.\nServing code reads DIR/current/ (model.ckpt, model.pt, job.json, deploy.json).\n\nExit status: 0 promoted, 3 kept (the deployed model is as good or better), 1 the\ncomparison could not be made, 2 the request is invalid.\n\nExamples:\n  tb deploy\n  tb deploy 2026-11-22_230000_night --job lr_r03\n  tb deploy --force --dir ./deployed"
    )]
    Deploy(DeployArgs),
    /// Start TensorBoard over every job of a batch (from the trainer image), print its URL; Ctrl-C stops it.
    #[command(
        after_help = "Each job is a run named after it. The container uses host networking, mounts the\nbatch read-only, and is removed when TensorBoard stops.\n\nExamples:\n  tb board\n  tb board 2026-11-22_230000_night --port 6007"
    )]
    Board(BoardArgs),
    /// Print (or follow) a job's captured stdout or stderr; with no job, every job's.
    #[command(
        after_help = "A single name is a job of the newest batch if it has one, else a batch.\n`-f` follows a job across its attempts (retries) until it ends; with no job\nit follows every running job of the batch, each line prefixed `job | `.\n\nExamples:\n  tb logs baseline\n  tb logs baseline -f --stderr\n  tb logs -f\n  tb logs 2026-11-22_230000_night baseline --attempt 1"
    )]
    Logs(LogsArgs),
    /// List the batches under the runs directory, newest first, with their job counts.
    #[command(after_help = "Examples:\n  tb ls\n  tb ls --json\n  tb --runs-dir /data/runs ls")]
    Ls(LsArgs),
    /// Print a shell completion script for tb.
    #[command(
        after_help = "Examples:\n  tb completions bash > ~/.local/share/bash-completion/completions/tb\n  tb completions zsh > ~/.zfunc/_tb\n  tb completions fish > ~/.config/fish/completions/tb.fish"
    )]
    Completions(CompletionsArgs),
    /// Build and manage the trainer image.
    #[command(subcommand, after_help = "Example:\n  tb image build")]
    Image(ImageCommand),
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The batch file (TOML).
    pub file: PathBuf,
    /// Jobs to run at once ("auto" or a number); overrides the file's `concurrency`.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<String>,
    /// Run only the jobs with this name or name prefix (repeatable).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Validate and show what would run; start nothing, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not run a job whose identity already succeeded in an earlier batch
    /// under the runs directory; reuse that result.
    #[arg(long)]
    pub skip_done: bool,
    /// Run in the background (own session, no terminal); print the batch
    /// directory and how to watch it.
    #[arg(long)]
    pub detach: bool,
    /// Where the jobs run: `local` (this host's Docker engine) or `slurm`;
    /// overrides the file's `backend`.
    #[arg(long, value_name = "BACKEND", value_parser = ["local", "slurm"])]
    pub backend: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The job directory (`runs/<batch>/jobs/<job>`), on a filesystem this node shares.
    pub job_dir: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The batch file (TOML), with a [batch.watch] table.
    pub file: PathBuf,
    /// Run the batch of a trigger that is due (or left unfinished) to its end, then exit; exit at once when none is.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// A batch directory or its name (default: the newest batch).
    pub batch: Option<String>,
    /// No job starts after this local time ("07:00", the next 7 o'clock, or
    /// "2026-11-23 07:00"); default: none (the file's deadline bound the
    /// night it was written for).
    #[arg(long, value_name = "TIME")]
    pub deadline: Option<DeadlineArg>,
    /// Set by `tb batch --detach`: this is the batch's first supervisor, so
    /// its deadline applies.
    #[arg(long, hide = true)]
    pub started_detached: bool,
}

/// A `--deadline`, resolved when the command line is read (`07:00` is the
/// next 7 o'clock from then).
#[derive(Debug, Clone)]
pub struct DeadlineArg(pub chrono::DateTime<chrono::Utc>);

impl std::str::FromStr for DeadlineArg {
    type Err = String;
    fn from_str(s: &str) -> Result<DeadlineArg, String> {
        crate::settings::deadline_of(s, chrono::Local::now())
            .map(DeadlineArg)
            .map_err(|e| format!("{e} (write it as \"07:00\", the next 7 o'clock, or \"2026-11-23 07:00\")"))
    }
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// A batch directory or its name (default: the newest batch).
    pub batch: Option<String>,
    /// Only this job (repeatable); default: the whole batch.
    #[arg(long = "job", value_name = "NAME")]
    pub jobs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Show what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A batch directory or its name (default: the newest batch).
    pub batch: Option<String>,
    /// Write only this format (md, json, html, or csv: the jobs table); default: all four.
    #[arg(long, value_name = "FORMAT", value_parser = ["md", "json", "html", "csv"])]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct MlflowSyncArgs {
    /// A batch directory or its name (default: the newest batch).
    pub batch: Option<String>,
    /// The tracking server (default: the batch's [batch.mlflow], else MLFLOW_TRACKING_URI).
    #[arg(long, value_name = "URI")]
    pub tracking_uri: Option<String>,
    /// The experiment (default: the batch's [batch.mlflow], else the batch's name).
    #[arg(long, value_name = "NAME")]
    pub experiment: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// A batch directory or its name (default: the newest batch).
    pub batch: Option<String>,
    /// Deploy this job rather than the batch's best.
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Promote without comparing (the decision is still recorded).
    #[arg(long)]
    pub force: bool,
    /// The deploy directory (default: the batch's [batch.deploy] dir).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BoardArgs {
    /// A batch directory or its name (default: the newest batch).
    pub batch: Option<String>,
    /// The port (default: 6006, or a free one if 6006 is taken).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// The address TensorBoard listens on; 0.0.0.0 for every interface.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub host: String,
    /// An image with TensorBoard in it.
    #[arg(long, default_value = "tb-trainer:latest", value_name = "IMAGE")]
    pub image: String,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// A batch directory or its name (default: the newest batch).
    pub batch: Option<String>,
    /// Only this job (repeatable), whatever its status.
    #[arg(long = "job", value_name = "NAME")]
    pub jobs: Vec<String>,
    /// Only jobs that failed, ran out of memory, timed out or were lost (not cancelled or pending ones).
    #[arg(long, conflicts_with = "jobs")]
    pub failed_only: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The batch file (TOML).
    pub file: PathBuf,
    /// Validate only the jobs with this name or name prefix (repeatable).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Jobs to run at once ("auto" or a number), as `tb batch --concurrency`.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<String>,
    /// Where the jobs would run: `local` or `slurm`, as `tb batch --backend`.
    #[arg(long, value_name = "BACKEND", value_parser = ["local", "slurm"])]
    pub backend: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A batch directory or its name (default: the newest batch).
    pub batch: Option<String>,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
    /// Redraw every 2 seconds until the batch ends (on a terminal; otherwise
    /// print the table again whenever it changes).
    #[arg(short, long, conflicts_with = "json")]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The batch (default: the newest) and the job (default: every job).
    #[arg(num_args = 0..=2, value_names = ["BATCH", "JOB"])]
    pub target: Vec<String>,
    /// Keep printing as the job writes, across its attempts, until it ends.
    #[arg(short, long)]
    pub follow: bool,
    /// Print stderr instead of stdout.
    #[arg(long)]
    pub stderr: bool,
    /// An earlier attempt's output (default: the current attempt).
    #[arg(long, value_name = "N")]
    pub attempt: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the trainer image from images/trainer and trainer-py through the Docker API.
    #[command(
        after_help = "Examples:\n  tb image build\n  tb image build --tag tb-trainer:dev --build-arg BASE_IMAGE=python:3.11-slim"
    )]
    Build(ImageBuildArgs),
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// The tag besides the content hash tag.
    #[arg(long, default_value = "tb-trainer:latest")]
    pub tag: String,
    /// The project directory holding images/trainer and trainer-py.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub context: PathBuf,
    /// A Dockerfile build argument, KEY=VALUE (repeatable), e.g. BASE_IMAGE=python:3.11-slim.
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Rebuild even when an image for this context already exists.
    #[arg(long)]
    pub force: bool,
}
