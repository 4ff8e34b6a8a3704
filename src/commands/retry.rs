//! `tb retry [BATCH]`: run again, in the same batch directory, the jobs
//! that did not succeed (or the named ones), each as a new attempt that
//! resumes from its `checkpoints/last.ckpt` when there is one.

use crate::cli::{GlobalArgs, RetryArgs};
use crate::docker::Engine;
use crate::error::hinted;
use crate::exit::Exit;
use crate::gpu::Inventory;
use crate::settings::Plan;
use crate::state::{BatchDir, Status};

pub fn run(args: &RetryArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let dir = BatchDir::open(&global.runs_dir, args.batch.as_deref())?;
    let batch = dir.read_batch()?;
    let gpus = Inventory::detect();
    let mut jobs = Vec::new();
    let mut states = Vec::new();
    for name in &batch.jobs {
        jobs.push(dir.read_job_file(name)?.into_spec());
        states.push(dir.read_job_state(name)?);
    }
    for name in &args.jobs {
        if !batch.jobs.contains(name) {
            let names: Vec<&str> = batch.jobs.iter().map(String::as_str).collect();
            let hint = crate::batch::suggest(name, &names)
                .unwrap_or_default()
                .replace("valid keys here", "the jobs are");
            return Err(hinted(format!("batch {} has no job `{name}`", dir.id), hint));
        }
    }
    let to_run: Vec<usize> = (0..jobs.len())
        .filter(|&i| {
            let status = states[i].status;
            if !args.jobs.is_empty() {
                args.jobs.contains(&jobs[i].name)
            } else if args.failed_only {
                matches!(status, Status::Failed | Status::Oom | Status::Timeout | Status::Lost)
            } else {
                status != Status::Succeeded
            }
        })
        .collect();
    if let Some(job) = jobs.iter().find(|j| j.gpus as usize > gpus.len()) {
        return Err(hinted(
            format!(
                "job `{}` asks for {} GPU(s) but this host has {}",
                job.name,
                job.gpus,
                gpus.len()
            ),
            "retry on the host the batch ran on, or set TB_GPUS",
        ));
    }
    if to_run.is_empty() {
        eprintln!("batch {}: nothing to retry (every selected job succeeded)", dir.id);
        return Ok(Exit::Success);
    }
    let plan = Plan {
        file: batch.file.clone(),
        text: std::fs::read_to_string(dir.path.join("batch.toml")).unwrap_or_default(),
        name: batch.name.clone(),
        concurrency: batch.concurrency,
        gpu_mode: batch.settings.gpu_mode,
        downloads: batch.settings.downloads.clone(),
        gpus,
        retries: batch.settings.retries,
        continue_on_timeout: batch.settings.continue_on_timeout,
        jobs,
    };
    let runs_dir = std::path::absolute(&global.runs_dir)?;
    crate::runtime()?.block_on(async {
        let engine = Engine::connect().await?;
        let checked = crate::preflight::check(&plan, &engine, &runs_dir).await?;
        std::fs::create_dir_all(&plan.downloads).map_err(|e| {
            hinted(
                format!(
                    "cannot create the downloads directory `{}`: {e}",
                    plan.downloads.display()
                ),
                "the batch's downloads directory must be writable",
            )
        })?;
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
            dir.write_job_state(&plan.jobs[i].name, &state)?;
        }
        crate::commands::batch::supervise(&plan, &dir, &engine, &checked, &to_run).await
    })
}
