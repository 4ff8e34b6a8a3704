//! tb (torchbearer): runs a batch of training jobs, one Docker container
//! each, and records what became of every one.

pub mod backend;
pub mod batch;
pub mod cli;
pub mod commands;
pub mod deploy;
pub mod dispatch;
pub mod docker;
pub mod durable;
pub mod error;
pub mod executor;
pub mod exit;
pub mod gpu;
pub mod human;
pub mod identity;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod mlflow;
pub mod notify;
pub mod preflight;
pub mod progress;
pub mod prune;
pub mod report;
pub mod run;
pub mod sanitize;
pub mod secrets;
pub mod settings;
pub mod signal;
pub mod warm;
pub mod watch;

use cli::{Cli, Command, ImageCommand};
use exit::Exit;

/// Runs the command `cli` names; `Err` is an invalid input or system.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    match &cli.command {
        Command::Batch(args) => commands::batch::run(args, &cli.global),
        Command::Watch(args) => commands::watch::run(args, &cli.global),
        Command::Validate(args) => commands::validate::run(args, &cli.global),
        Command::Report(args) => commands::report::run(args, &cli.global),
        Command::MlflowSync(args) => commands::mlflow_sync::run(args, &cli.global),
        Command::Board(args) => commands::board::run(args, &cli.global),
        Command::Deploy(args) => commands::deploy::run(args, &cli.global),
        Command::Resume(args) => commands::resume::run(args, &cli.global),
        Command::Cancel(args) => commands::cancel::run(args, &cli.global),
        Command::Clean(args) => commands::clean::run(args),
        Command::Exec(args) => commands::exec::run(args),
        Command::Retry(args) => commands::retry::run(args, &cli.global),
        Command::Status(args) => commands::status::run(args, &cli.global),
        Command::Logs(args) => commands::logs::run(args, &cli.global),
        Command::Ls(args) => commands::ls::run(args, &cli.global),
        Command::Completions(args) => commands::completions::run(args),
        Command::Image(ImageCommand::Build(args)) => commands::image::build(args),
    }
}

/// The runtime for the commands that wait on the engine.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
