//! `tb report [BATCH]`: write the batch report again, any time.

use crate::cli::{GlobalArgs, ReportArgs};
use crate::exit::Exit;
use crate::report::{self, Format};
use crate::run::BatchDir;

pub fn run(args: &ReportArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let dir = BatchDir::open(&global.runs_dir, args.batch.as_deref())?;
    let formats: Vec<Format> = match &args.format {
        Some(f) => vec![f.parse()?],
        None => Format::ALL.to_vec(),
    };
    for path in report::write(&dir, &formats)? {
        println!("{}", path.display());
    }
    Ok(Exit::Success)
}
