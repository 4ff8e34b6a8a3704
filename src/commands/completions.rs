//! `tb completions SHELL`: a completion script on stdout, made by clap from
//! the same definition the parser uses, so it never falls out of date.

use crate::cli::{Cli, CompletionsArgs};
use crate::exit::Exit;
use clap::CommandFactory;

pub fn run(args: &CompletionsArgs) -> anyhow::Result<Exit> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "tb", &mut std::io::stdout());
    Ok(Exit::Success)
}
