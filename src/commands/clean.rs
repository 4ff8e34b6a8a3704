//! `tb clean`: remove leftover containers of batches that no supervisor
//! holds (a supervisor killed with SIGKILL, a machine that rebooted). Only
//! containers carrying all of tb's labels are ever touched.

use crate::cli::CleanArgs;
use crate::docker::{Engine, short};
use crate::exit::Exit;
use crate::state::BatchDir;
use std::path::PathBuf;

pub fn run(args: &CleanArgs) -> anyhow::Result<Exit> {
    crate::runtime()?.block_on(async {
        let engine = Engine::connect().await?;
        let mut removed = 0;
        let mut kept = 0;
        for c in engine.list_labelled("tb.batch").await? {
            let (Some(batch), Some(job), Some(attempt)) = (
                c.labels.get("tb.batch"),
                c.labels.get("tb.job"),
                c.labels.get("tb.attempt"),
            ) else {
                continue;
            };
            let held = c.labels.get("tb.dir").map(PathBuf::from).is_some_and(|path| {
                let id = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                path.join("batch.json").is_file() && BatchDir { path, id }.supervisor().is_some()
            });
            if held {
                kept += 1;
                continue;
            }
            println!("{}\t{batch}\t{job}\tattempt {attempt}\t{}", short(&c.id), c.state);
            if !args.dry_run {
                engine.remove(&c.id).await?;
            }
            removed += 1;
        }
        let verb = if args.dry_run { "would remove" } else { "removed" };
        eprintln!("{verb} {removed} leftover container(s); {kept} belong to batches being supervised");
        Ok(Exit::Success)
    })
}
