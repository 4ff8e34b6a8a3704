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
    let mut pruning = crate::prune::Table::load(&dir.path)?;
    let launch: Vec<usize> = (0..names.len())
        .filter(|&i| {
            let status = states[i].status();
            // A pruned trial stays pruned unless named (also one whose run
            // vanished after the decision, recorded lost by an older tb).
            let pruned = pruning.pruned(&names[i]);
            if !args.jobs.is_empty() {
                args.jobs.contains(&names[i])
            } else if args.failed_only {
                matches!(status, Status::Failed | Status::Oom | Status::Timeout | Status::Lost) && !pruned
            } else {
                !status.is_fine() && !pruned
            }
        })
        .collect();
    if launch.is_empty() {
        let pruned = states.iter().filter(|s| s.status() == Status::Pruned).count();
        if pruned > 0 && args.jobs.is_empty() {
            eprintln!(
                "batch {}: nothing to retry ({pruned} pruned job(s) stay pruned; name one with --job to run it again)",
                dir.id
            );
        } else {
            eprintln!("batch {}: nothing to retry (every selected job succeeded)", dir.id);
        }
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
        // Named pruned trials go on: the decisions that stopped them no
        // longer stand (they stay in prune.json, marked withdrawn).
        let mut withdrawn = false;
        for &i in &launch {
            if pruning.withdraw(&names[i], chrono::Utc::now()) {
                tracing::info!(
                    "{}: its pruning decision is withdrawn; it goes on from where it stopped",
                    names[i]
                );
                withdrawn = true;
            }
        }
        if withdrawn {
            pruning.save(&dir.path)?;
        }
        for &i in &launch {
            let mut state = states[i].clone();
            state.prepare_retry();
            // An old `tb cancel` must not stop what is asked for now.
            dir.clear_cancel_request(&names[i]);
            // Each launch writes its new attempt as it begins: only a state
            // this changed is written now.
            if state != states[i] {
                dir.write_job_state(&names[i], &state)?;
            }
        }
        let work = Work {
            launch,
            follow: Vec::new(),
        };
        dispatch::supervise(&plan, &dir, backend, &ready, work, Options::default(), lock).await
    })
}
