//! `tb retry [BATCH]`: run again, in the same batch directory, the jobs
//! that did not succeed (or the named ones), each as a new attempt that
//! resumes from its `checkpoints/last.ckpt` when there is one.

use crate::backend;
use crate::cli::{GlobalArgs, RetryArgs};
use crate::dispatch::{self, Options, Work};
use crate::error::hinted;
use crate::exit::Exit;
use crate::gpu::Inventory;
use crate::run::{BatchDir, Status};

pub fn run(args: &RetryArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let dir = BatchDir::open(&global.runs_dir, args.batch.as_deref())?;
    let lock = dir.lock()?;
    let plan = dir.plan(Inventory::detect())?;
    let names: Vec<String> = plan.jobs.iter().map(|j| j.name.clone()).collect();
    let states = dir.read_states(&names)?;
    for name in &args.jobs {
        if !names.contains(name) {
            let all: Vec<&str> = names.iter().map(String::as_str).collect();
            let hint = crate::batch::suggest(name, &all)
                .unwrap_or_default()
                .replace("valid keys here", "the jobs are");
            return Err(hinted(format!("batch {} has no job `{name}`", dir.id), hint));
        }
    }
    let launch: Vec<usize> = (0..names.len())
        .filter(|&i| {
            let status = states[i].status();
            if !args.jobs.is_empty() {
                args.jobs.contains(&names[i])
            } else if args.failed_only {
                matches!(status, Status::Failed | Status::Oom | Status::Timeout | Status::Lost)
            } else {
                status != Status::Succeeded
            }
        })
        .collect();
    if launch.is_empty() {
        eprintln!("batch {}: nothing to retry (every selected job succeeded)", dir.id);
        return Ok(Exit::Success);
    }
    let runs_dir = std::path::absolute(&global.runs_dir)?;
    crate::runtime()?.block_on(async {
        let mut backend = backend::for_plan(&plan);
        let ready = backend.preflight(&plan, &runs_dir).await?;
        // A run still going belongs to a supervisor that died: a new attempt
        // next to it would share its /out (and maybe its GPU).
        let survey = backend.survey(&dir, &names, &states).await?;
        if let Some((i, found)) = survey.first_running() {
            return Err(hinted(
                format!(
                    "job `{}` still runs ({}) from a supervisor that stopped",
                    names[i],
                    found.handle.describe()
                ),
                format!("`tb resume {}` follows it to its end; retry after that", dir.id),
            ));
        }
        let ended: Vec<_> = survey.jobs.into_iter().flatten().map(|f| f.handle).collect();
        backend.discard(&survey.leftovers).await?;
        backend.discard(&ended).await?;
        crate::commands::batch::ensure_downloads(&plan)?;
        crate::logging::attach_supervisor_log(&dir.path.join("supervisor.log"))?;
        let selected: Vec<&str> = launch.iter().map(|&i| names[i].as_str()).collect();
        tracing::info!(
            "retrying {} job(s) of batch {}: {}",
            launch.len(),
            dir.id,
            selected.join(", ")
        );
        for &i in &launch {
            let mut state = states[i].clone();
            state.identify(crate::identity::of(&plan.jobs[i], ready.image_ids[i].as_deref()));
            state.prepare_retry();
            // An old `tb cancel` must not stop what is asked for now.
            dir.clear_cancel_request(&names[i]);
            dir.write_job_state(&names[i], &state)?;
        }
        let work = Work {
            launch,
            follow: Vec::new(),
        };
        dispatch::supervise(&plan, &dir, backend, &ready, work, Options::default(), lock).await
    })
}
