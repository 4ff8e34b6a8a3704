//! `tb resume [BATCH]`: continue a batch whose supervisor stopped (killed,
//! even with SIGKILL; the machine rebooted; the engine went away): follow
//! its containers that still run, record those that ended meanwhile, mark
//! vanished ones `lost`, and run its pending jobs. No job runs twice.

use crate::cli::{GlobalArgs, ResumeArgs};
use crate::docker::{Engine, Listed, short};
use crate::exit::Exit;
use crate::gpu::Inventory;
use crate::runner::{Adopt, Options};
use crate::state::{BatchDir, Status};
use chrono::Utc;

pub fn run(args: &ResumeArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    if args.started_detached {
        // Logging out must not end the night.
        // SAFETY: installing SIG_IGN has no memory effects.
        unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    }
    let dir = BatchDir::open(&global.runs_dir, args.batch.as_deref())?;
    let lock = dir.lock()?;
    let plan = crate::settings::from_dir(&dir, Inventory::detect())?;
    let runs_dir = std::path::absolute(&global.runs_dir)?;
    crate::runtime()?.block_on(async {
        let engine = Engine::connect().await?;
        let checked = crate::preflight::check(&plan, &engine, &runs_dir).await?;
        crate::commands::batch::ensure_downloads(&plan)?;
        crate::logging::attach_supervisor_log(&dir.path.join("supervisor.log"))?;
        if plan.backend == crate::batch::Backend::Slurm {
            // Slurm kept the jobs: follow the submitted ones by id, submit the rest.
            crate::slurm::preflight(&plan)?;
            let mut adopt = Vec::new();
            let mut to_run = Vec::new();
            for (index, job) in plan.jobs.iter().enumerate() {
                let state = dir.read_job_state(&job.name)?;
                match (state.status, &state.slurm_job_id) {
                    (Status::Pending | Status::Running, Some(id)) => adopt.push(Adopt {
                        index,
                        container_id: id.clone(),
                        started_at: state.started_at.unwrap_or_else(Utc::now),
                        gpus: state.gpus.clone(),
                    }),
                    (Status::Pending, None) => to_run.push(index),
                    _ => {}
                }
            }
            let options = Options {
                adopt,
                ..Default::default()
            };
            return crate::commands::batch::supervise(&plan, &dir, &engine, &checked, &to_run, options, lock).await;
        }
        let containers = engine.list_labelled(&format!("tb.dir={}", dir.path.display())).await?;

        let mut adopt = Vec::new();
        let mut to_run = Vec::new();
        for (index, job) in plan.jobs.iter().enumerate() {
            let mut state = dir.read_job_state(&job.name)?;
            let mine: Vec<&Listed> = containers
                .iter()
                .filter(|c| c.labels.get("tb.job") == Some(&job.name))
                .collect();
            // Only a running job's current, started container is followed
            // again; anything else of this job is a leftover (a container
            // created ahead of its slot, or one that ended and was recorded
            // before the supervisor died but not yet removed).
            // A pending job whose next attempt's container did start: the
            // supervisor died between the start and writing it down.
            if state.status == Status::Pending
                && let Some(c) = mine.iter().find(|c| {
                    c.labels.get("tb.attempt") == Some(&(state.attempt + 1).to_string()) && c.state != "created"
                })
            {
                tracing::info!(
                    "{}: its container {} started unrecorded; following it",
                    job.name,
                    short(&c.id)
                );
                state.begin_attempt();
                state.status = Status::Running;
                state.container_id = Some(c.id.clone());
                state.started_at = Some(Utc::now());
                dir.write_job_state(&job.name, &state)?;
            }
            let current = (state.status == Status::Running)
                .then(|| {
                    mine.iter().find(|c| {
                        c.labels.get("tb.attempt") == Some(&state.attempt.to_string()) && c.state != "created"
                    })
                })
                .flatten()
                .copied();
            for c in &mine {
                if current.is_some_and(|cur| cur.id == c.id) {
                    continue;
                }
                tracing::info!(
                    "{}: removing leftover container {} ({})",
                    job.name,
                    short(&c.id),
                    c.state
                );
                engine.remove(&c.id).await?;
            }
            match state.status {
                Status::Running => match current {
                    Some(c) => adopt.push(Adopt {
                        index,
                        container_id: c.id.clone(),
                        started_at: state.started_at.unwrap_or_else(Utc::now),
                        gpus: state.gpus.clone(),
                    }),
                    None => {
                        tracing::warn!(
                            "{}: its container vanished while no supervisor ran; marking it lost",
                            job.name
                        );
                        state.status = Status::Lost;
                        state.error = Some("its container vanished while no supervisor was running".into());
                        state.finished_at = Some(Utc::now());
                        dir.write_job_state(&job.name, &state)?;
                    }
                },
                Status::Pending => to_run.push(index),
                _ => {}
            }
        }
        if adopt.is_empty() && to_run.is_empty() {
            eprintln!(
                "batch {}: no job is running or pending; closing it (`tb retry` runs failed ones)",
                dir.id
            );
        }
        let options = Options {
            adopt,
            deadline: if args.started_detached { plan.deadline } else { None },
            ..Default::default()
        };
        crate::commands::batch::supervise(&plan, &dir, &engine, &checked, &to_run, options, lock).await
    })
}
