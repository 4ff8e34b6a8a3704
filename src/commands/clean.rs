//! `tb clean`: remove leftover containers of batches that no supervisor
//! holds (a supervisor killed with SIGKILL, a machine that rebooted), on
//! this host's engine. Only containers carrying all of tb's labels are
//! ever touched.

use crate::cli::CleanArgs;
use crate::exit::Exit;

pub fn run(args: &CleanArgs) -> anyhow::Result<Exit> {
    let (removed, kept) = crate::runtime()?.block_on(crate::backend::local::clean(args.dry_run))?;
    let verb = if args.dry_run { "would remove" } else { "removed" };
    eprintln!("{verb} {removed} leftover container(s); {kept} belong to batches being supervised");
    Ok(Exit::Success)
}
