//! `tb deploy [BATCH] [--job NAME] [--force] [--dir DIR]`: the batch's best
//! model (or the named job's) into the deploy directory if it beats the
//! deployed one on the same data — what a batch with `[batch.deploy]` does
//! when it ends, by hand.

use crate::cli::{DeployArgs, GlobalArgs};
use crate::deploy::{self, Request, Verdict};
use crate::error::hinted;
use crate::exit::Exit;
use crate::gpu::Inventory;
use crate::run::BatchDir;

pub fn run(args: &DeployArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let dir = BatchDir::open(&global.runs_dir, args.batch.as_deref())?;
    if let Some(s) = dir.supervisor() {
        return Err(hinted(
            format!("batch {} is running (tb pid {} on {})", dir.id, s.pid, s.host),
            "run `tb deploy` once it has ended; a batch with [batch.deploy] deploys itself when it ends",
        ));
    }
    // Held while it deploys: no `tb resume` or `tb retry` changes the jobs meanwhile.
    let _lock = dir.lock()?;
    let batch = dir.read_batch()?;
    let target = match (&args.dir, &batch.settings.deploy) {
        (Some(d), _) => std::path::absolute(d)?,
        (None, Some(spec)) => spec.dir.clone(),
        (None, None) => {
            return Err(hinted(
                format!("batch {} has no [batch.deploy] to say where models go", dir.id),
                "name the deploy directory with --dir",
            ));
        }
    };
    let request = Request {
        batch: &dir,
        target: &target,
        job: args.job.as_deref(),
        force: args.force,
        gpu_ids: Inventory::detect().ids,
    };
    let record = match crate::runtime()?.block_on(deploy::deploy(&request)) {
        Ok(r) => r,
        Err(e) if e.is::<deploy::Interrupted>() => {
            eprintln!("{e}");
            return Ok(Exit::Interrupted);
        }
        Err(e) => return Err(e),
    };
    eprintln!("{}", deploy::describe(&record));
    println!("{}", target.join(deploy::store::CURRENT).display());
    Ok(match record.decision {
        Verdict::Promoted => Exit::Success,
        Verdict::Kept => Exit::Kept,
        Verdict::Failed => Exit::JobsFailed,
    })
}
