//! The command line: clap's view of it. Nothing here leaves this module but
//! through `settings` and `commands`, which turn it into checked values.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// tb (torchbearer) runs a night of training jobs, one Docker container each,
/// and tells you in the morning what trained, what stopped early and why.
#[derive(Debug, Parser)]
#[command(name = "tb", version, propagate_version = true, max_term_width = 100)]
#[command(
    after_help = "Examples:\n  tb batch jobs/night.toml      run a batch\n  tb status                     how the newest batch is doing\n  tb logs baseline -f           follow one job's output"
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
    /// Check a batch file and the system as `tb batch` would, and list its jobs; runs nothing.
    #[command(after_help = "Example:\n  tb validate jobs/night.toml")]
    Validate(ValidateArgs),
    /// One row per job of a batch: status, attempt, elapsed, epoch, best metric.
    #[command(after_help = "Examples:\n  tb status\n  tb status 2026-11-22_230000_night --json")]
    Status(StatusArgs),
    /// Run again, in the same batch directory, the jobs that did not succeed.
    #[command(
        after_help = "Jobs with a checkpoints/last.ckpt resume from it.\n\nExamples:\n  tb retry\n  tb retry --failed-only\n  tb retry 2026-11-22_230000_night --job lr_r03"
    )]
    Retry(RetryArgs),
    /// Write the batch report (report.md, report.json, report.html) again, and print its path.
    #[command(
        after_help = "Works while the batch still runs (running jobs are shown as such).\n\nExamples:\n  tb report\n  tb report 2026-11-22_230000_night --format html"
    )]
    Report(ReportArgs),
    /// Print (or follow) a job's captured stdout or stderr.
    #[command(
        after_help = "Examples:\n  tb logs baseline\n  tb logs baseline -f --stderr\n  tb logs 2026-11-22_230000_night baseline --attempt 1"
    )]
    Logs(LogsArgs),
    /// Build and manage the trainer image.
    #[command(subcommand)]
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
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A batch directory or its name (default: the newest batch).
    pub batch: Option<String>,
    /// Write only this format (md, json or html); default: all three.
    #[arg(long, value_name = "FORMAT", value_parser = ["md", "json", "html"])]
    pub format: Option<String>,
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
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A batch directory or its name (default: the newest batch).
    pub batch: Option<String>,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// `[BATCH] JOB`: the batch (default: the newest) and the job.
    #[arg(num_args = 1..=2, required = true, value_names = ["BATCH", "JOB"])]
    pub target: Vec<String>,
    /// Keep printing as the job writes, until it ends.
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
