//! `tb retry [BATCH]`: run again, in the same batch directory, the jobs
//! that did not succeed (or the named ones), each as a new attempt that
//! resumes from its `checkpoints/last.ckpt` when there is one.

use crate::cli::{GlobalArgs, RetryArgs};
use crate::docker::Engine;
use crate::error::hinted;
use crate::exit::Exit;
use crate::gpu::Inventory;
use crate::state::{BatchDir, Status};

pub fn run(args: &RetryArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let dir = BatchDir::open(&global.runs_dir, args.batch.as_deref())?;
    let lock = dir.lock()?;
    let plan = crate::settings::from_dir(&dir, Inventory::detect())?;
    let states = plan
        .jobs
        .iter()
        .map(|j| dir.read_job_state(&j.name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for name in &args.jobs {
        if !plan.jobs.iter().any(|j| &j.name == name) {
            let names: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
            let hint = crate::batch::suggest(name, &names)
                .unwrap_or_default()
                .replace("valid keys here", "the jobs are");
            return Err(hinted(format!("batch {} has no job `{name}`", dir.id), hint));
        }
    }
    let to_run: Vec<usize> = (0..plan.jobs.len())
        .filter(|&i| {
            let status = states[i].status;
            if !args.jobs.is_empty() {
                args.jobs.contains(&plan.jobs[i].name)
            } else if args.failed_only {
                matches!(status, Status::Failed | Status::Oom | Status::Timeout | Status::Lost)
            } else {
                status != Status::Succeeded
            }
        })
        .collect();
    if to_run.is_empty() {
        eprintln!("batch {}: nothing to retry (every selected job succeeded)", dir.id);
        return Ok(Exit::Success);
    }
    let runs_dir = std::path::absolute(&global.runs_dir)?;
    crate::runtime()?.block_on(async {
        let engine = Engine::connect().await?;
        let checked = crate::preflight::check(&plan, &engine, &runs_dir).await?;
        // A container still running belongs to a supervisor that died: a new
        // attempt next to it would share its /out (and maybe its GPU).
        let containers = if plan.backend == crate::batch::Backend::Local {
            engine.list_labelled(&format!("tb.dir={}", dir.path.display())).await?
        } else {
            crate::slurm::preflight(&plan)?;
            // A job still in Slurm's hands must not get a second one next to it.
            let ids: Vec<String> = to_run.iter().filter_map(|&i| states[i].slurm_job_id.clone()).collect();
            if let Some(id) = crate::slurm::still_queued(&ids)?.first() {
                return Err(hinted(
                    format!("Slurm job {id} of this batch is still queued or running"),
                    format!(
                        "`tb resume {}` follows it to its end, or `tb cancel` stops it; retry after that",
                        dir.id
                    ),
                ));
            }
            Vec::new()
        };
        if let Some(c) = containers.iter().find(|c| c.state == "running") {
            return Err(hinted(
                format!(
                    "job `{}` still runs in container {} from a supervisor that stopped",
                    c.labels.get("tb.job").map(String::as_str).unwrap_or("?"),
                    crate::docker::short(&c.id)
                ),
                format!("`tb resume {}` follows it to its end; retry after that", dir.id),
            ));
        }
        for c in &containers {
            engine.remove(&c.id).await?;
        }
        crate::commands::batch::ensure_downloads(&plan)?;
        crate::logging::attach_supervisor_log(&dir.path.join("supervisor.log"))?;
        let names: Vec<&str> = to_run.iter().map(|&i| plan.jobs[i].name.as_str()).collect();
        tracing::info!(
            "retrying {} job(s) of batch {}: {}",
            to_run.len(),
            dir.id,
            names.join(", ")
        );
        for &i in &to_run {
            let mut state = dir.read_job_state(&plan.jobs[i].name)?;
            state.identity = Some(crate::identity::of(&plan.jobs[i], checked.image_ids[i].as_deref()));
            state.reused_from = None;
            // An old `tb cancel` must not stop what is asked for now.
            let _ = std::fs::remove_file(dir.job_dir(&plan.jobs[i].name).join(crate::executor::CANCEL_REQUEST));
            dir.write_job_state(&plan.jobs[i].name, &state)?;
        }
        let options = crate::runner::Options::default();
        crate::commands::batch::supervise(&plan, &dir, &engine, &checked, &to_run, options, lock).await
    })
}
