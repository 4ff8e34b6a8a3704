//! `tb deploy [BATCH] [--job NAME] [--force] [--dir DIR]`: the batch's best
//! model (or the named job's) into the deploy directory if it beats the
//! deployed one on the same data — what a batch with `[batch.deploy]` does
//! when it ends, by hand. The batch's report is written again, with the
//! decision.

use crate::cli::{DeployArgs, GlobalArgs};
use crate::deploy::{self, Record, Request, Verdict};
use crate::error::hinted;
use crate::exit::Exit;
use crate::gpu::Inventory;
use crate::run::BatchDir;
use crate::signal::Signals;

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
        automatic: false,
    };
    let deployed = crate::runtime()?.block_on(async {
        let mut signals = Signals::new()?;
        deploy::deploy(&request, &mut signals).await
    });
    let record = match deployed {
        Ok(r) => r,
        Err(e) if e.is::<deploy::BadRequest>() => return Err(e),
        // Not the request: the batch's or the deploy directory's files.
        Err(e) => {
            crate::error::render(&e);
            return Ok(Exit::JobsFailed);
        }
    };
    if let Err(e) = crate::report::write(&dir, &crate::report::Format::ALL) {
        tracing::warn!("the report does not have the decision: {e:#}");
    }
    eprintln!("{}", deploy::describe(&record));
    println!("{}", target.join(deploy::store::CURRENT).display());
    Ok(exit(&record))
}

/// 0 promoted, 3 kept because the candidate is not better, 1 anything
/// that needs a look (not comparable, a failed export, a failed deploy),
/// 130 interrupted.
fn exit(r: &Record) -> Exit {
    match r.decision {
        Verdict::Promoted => Exit::Success,
        Verdict::Kept if r.blocked.is_none() => Exit::Kept,
        Verdict::Interrupted => Exit::Interrupted,
        Verdict::Kept | Verdict::Failed | Verdict::Skipped => Exit::JobsFailed,
    }
}
