//! `tb validate FILE`: every check `tb batch` makes, and the job list.

use crate::cli::{GlobalArgs, ValidateArgs};
use crate::exit::Exit;
use crate::gpu::Inventory;
use crate::sanitize;
use crate::settings::{self, Overrides, Plan};
use comfy_table::{Table, presets::NOTHING};

pub fn run(args: &ValidateArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let overrides = Overrides {
        only: args.only.clone(),
        concurrency: args.concurrency.clone(),
        backend: args.backend.clone(),
    };
    let plan = settings::resolve(&args.file, &overrides, Inventory::detect())?;
    crate::secrets::register_pass_env(plan.jobs.iter().flat_map(|j| &j.pass_env));
    let runs_dir = std::path::absolute(&global.runs_dir)?;
    let (_, ready) = crate::runtime()?.block_on(crate::preflight::run(&plan, &runs_dir))?;
    print_plan(&plan);
    eprintln!(
        "{} valid: {} job(s), concurrency {}, {}",
        args.file.display(),
        plan.jobs.len(),
        plan.settings.concurrency,
        ready.describe,
    );
    Ok(Exit::Success)
}

/// The expanded jobs, one row each, on stdout.
pub fn print_plan(plan: &Plan) {
    let mut table = Table::new();
    table.load_style(NOTHING);
    let swept = plan.jobs.iter().any(|j| !j.swept.is_empty() || fold(j).is_some());
    let mut header = vec!["JOB", "IMAGE", "GPUS", "COMMAND"];
    if swept {
        header.push("SWEPT");
    }
    table.set_header(header);
    for j in &plan.jobs {
        let command = match &j.command {
            Some(c) => c.join(" "),
            None => match j.train.as_ref().and_then(|t| t.get("model")) {
                Some(m) => format!("(image default) model={}", m.as_str().unwrap_or("?")),
                None => "(image default)".into(),
            },
        };
        let mut row = vec![j.name.clone(), j.image.clone(), j.gpus.to_string(), command];
        if swept {
            let mut values: Vec<String> = j.swept.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if let Some(f) = fold(j) {
                values.push(f);
            }
            row.push(values.join(" "));
        }
        // A command's text is the user's: it must not drive the terminal.
        table.add_row(row.iter().map(|cell| sanitize::escape_controls(cell).into_owned()));
    }
    println!("{}", table.trim_fmt());
    let mut groups: Vec<(&str, String)> = Vec::new();
    for j in &plan.jobs {
        if let Some(p) = &j.prune
            && !groups.iter().any(|(g, _)| *g == p.group)
        {
            let n = plan
                .jobs
                .iter()
                .filter(|o| o.prune.as_ref().is_some_and(|q| q.group == p.group))
                .count();
            let mut what = format!("{} ({n} jobs)", p.describe());
            if p.max_epochs.is_none() {
                what.push_str(
                    "\n  the jobs' epochs are unknown: no rung is known to be the last, so a job may be stopped at \
                     any; set `max_epochs` in [job.prune]",
                );
            }
            groups.push((&p.group, what));
        }
    }
    for (group, what) in groups {
        println!("prune {group}: {what}");
    }
    if let Some(m) = &plan.settings.mlflow {
        let artifacts: Vec<&str> = crate::mlflow::Artifact::ALL
            .iter()
            .filter(|(_, a)| m.artifacts.contains(a))
            .map(|(n, _)| *n)
            .collect();
        println!(
            "mlflow: experiment {} at {} (artifacts: {})",
            m.experiment,
            m.tracking_uri,
            if artifacts.is_empty() {
                "none".to_string()
            } else {
                artifacts.join(", ")
            }
        );
    }
}

fn fold(job: &crate::settings::JobSpec) -> Option<String> {
    let cv = job.train.as_ref()?.get("cv")?;
    Some(format!("fold={}/{}", cv.get("fold")?, cv.get("folds")?))
}
