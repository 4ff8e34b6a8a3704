use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = tb::cli::Cli::parse();
    tb::logging::init(&cli.global);
    let code = match tb::run(cli) {
        Ok(exit) => exit,
        Err(err) => {
            tb::error::render(&err);
            tb::exit::Exit::Invalid
        }
    };
    ExitCode::from(code as u8)
}
