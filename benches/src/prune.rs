//! `make bench-prune`: what pruning saves on a real sweep. One random sweep of
//! the surface-water task with the trainer image on this machine's CPU,
//! run twice side by side in one bench: to the end, then with ASHA. Gives
//! each run's total job-seconds (the sum of the jobs' container run times),
//! their ratio, and the best monitored value each found.
//!
//! The sweep: 20 configurations drawn from one seed (learning rate
//! log-uniform over [3e-4, 1e-1], U-Net width 8 or 16), 27 epochs of small
//! tiles each at a constant learning rate (the trainer's default), no
//! early stopping (what is measured is pruning), one job at a time (what a
//! CPU host runs). ASHA with grace 1 and η = 3: rungs at epochs 1, 3 and 9.
//! Targets: at least 2.5× fewer job-seconds, the best value within 2% of
//! the unpruned run's.
//!
//! Why 20: the first η − 1 = 2 jobs to reach a rung always go on (nothing
//! to compare them with yet), and each job pays ~8 s of container and
//! Python start-up however early it is stopped. With 12 configurations,
//! 4 of them ran all 27 epochs (the first two and the two best) and ASHA
//! saved 2.2× (849 against 383 job-seconds; best found exactly); the more
//! configurations, the smaller that fixed share.
//!
//! Measured with 20 (2026-11-30, 2 CPU cores, no GPU): 1414 job-seconds
//! without pruning, 504 with ASHA = 2.80× fewer, 16 of 20 pruned (12 at
//! epoch 1, 2 at 3, 2 at 9), the same best job (val_loss 0.0350) found by
//! both. Each run had one job that ran about twice as slow as its like
//! (173 s and 64 s): without both, 2.9×.
//!
//! Why a constant rate: with a schedule annealed to `max_epochs` (cosine)
//! every curve drops late, when its rate does, and a rung's ranking says
//! little about the end — on the 12-configuration sweep, ASHA then saved
//! 3.3× but missed the best configuration by 12% (pruned at rung 9, it
//! went on to win).
//! Successive halving assumes early ranks predict late ones; the docs say
//! so (docs/batch-file.md).

use crate::session::{Session, require_image};
use crate::table::{Table, secs};
use anyhow::{Context, bail};

const IMAGE: &str = "tb-trainer:latest";
const ASHA: &str = "[job.prune]\nmethod = \"asha\"\ngrace = 1\nreduction = 3\n";
const CONFIGS: usize = 20;
/// Targets: this many times fewer job-seconds, the best value this close.
const FEWER: f64 = 2.5;
const BEST_WITHIN: f64 = 0.02;

pub fn run(s: &Session, t: &mut Table) -> anyhow::Result<()> {
    require_image(IMAGE, "image")?;
    eprintln!("  a random sweep of {CONFIGS} surface-water configurations, 27 epochs, one at a time: without pruning");
    let full = sweep(s, "full", None)?;
    print_run("without pruning", &full);
    eprintln!("  the same with ASHA");
    let asha = sweep(s, "asha", Some(ASHA))?;
    print_run("with asha", &asha);

    t.heading(format!(
        "pruning: a random sweep of {CONFIGS} surface-water configurations, 27 epochs, one at a time"
    ));
    let ratio = full.job_seconds / asha.job_seconds;
    eprintln!("  {ratio:.2}x fewer job-seconds with ASHA");
    t.row(
        "  job-seconds with ASHA",
        format!("{:.0}", asha.job_seconds),
        format!("without pruning {:.0}", full.job_seconds),
    )
    // At least FEWER times fewer.
    .at_most(1.0 / ratio, 1.0 / FEWER);
    t.row(
        "  wall with ASHA",
        secs(asha.wall),
        format!("without pruning {}", secs(full.wall)),
    )
    .ratio(asha.wall / full.wall);
    t.row(
        format!("  jobs pruned (of {CONFIGS})"),
        asha.pruned.to_string(),
        format!("without pruning {}", full.pruned),
    );
    let gap = (asha.best - full.best) / full.best.abs();
    t.row(
        "  best val_loss found",
        format!("{:.4} ({})", asha.best, asha.best_job),
        format!("without pruning {:.4} ({})", full.best, full.best_job),
    )
    .target(format!("within {:.0}%", BEST_WITHIN * 100.0), gap <= BEST_WITHIN);
    Ok(())
}

/// One run's figures, from its report.
struct Figures {
    job_seconds: f64,
    wall: f64,
    best: f64,
    best_job: String,
    pruned: usize,
    /// (job, epochs it trained, seconds), in the sweep's order.
    jobs: Vec<(String, u64, f64)>,
}

fn batch_file(name: &str, prune: Option<&str>) -> String {
    format!(
        r#"[batch]
name = "{name}"
downloads = "./downloads"
concurrency = 1

[defaults]
image = "{IMAGE}"
gpus = 0
shm_size = "1g"

[defaults.train]
model = "unet"
data = "surface_water"
data_args = {{ samples = 720, size = 48, seed = 0 }}
max_epochs = 27
patience = 27
monitor = "val_loss"
mode = "min"
batch_size = 16
seed = 0

[[job]]
name = "rnd"
[job.sweep]
method = "random"
samples = {CONFIGS}
seed = 7
"train.lr" = {{ log_uniform = [3e-4, 1e-1] }}
"train.model_args.channels" = [8, 16]
{}"#,
        prune.unwrap_or("")
    )
}

fn sweep(s: &Session, name: &str, prune: Option<&str>) -> anyhow::Result<Figures> {
    let (_, dir) = s.run_dir(&format!("prune-{name}"))?;
    let file = dir.join("batch.toml");
    std::fs::write(&file, batch_file(name, prune))?;
    let started = std::time::Instant::now();
    let status = s
        .tb(&dir)
        .arg("batch")
        .arg(&file)
        .status()
        .context("failed to run tb")?;
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!(
            "the {name} sweep failed ({status}): see {}",
            dir.join("runs/latest").display()
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("runs/latest/report.json"))?).context("report.json")?;
    let jobs = report["jobs"].as_array().context("report.json has no jobs")?;
    if jobs.len() != CONFIGS {
        bail!("the {name} sweep ran {} jobs, not {CONFIGS}", jobs.len());
    }
    let best = &jobs[0];
    let mut per_job: Vec<(String, u64, f64)> = jobs
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap_or_default().to_string(),
                j["epochs"].as_u64().unwrap_or(0),
                j["duration_seconds"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    per_job.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Figures {
        job_seconds: per_job.iter().map(|j| j.2).sum(),
        wall,
        best: best["best"]["value"].as_f64().context("the best job has no value")?,
        best_job: best["name"].as_str().unwrap_or_default().to_string(),
        pruned: jobs.iter().filter(|j| j["status"] == "pruned").count(),
        jobs: per_job,
    })
}

/// Each job's epochs and seconds, on stderr with the progress.
fn print_run(title: &str, f: &Figures) {
    eprintln!(
        "  {title}: {:.0} job-seconds, wall {:.0}s, {} pruned, best val_loss {:.4} ({})",
        f.job_seconds, f.wall, f.pruned, f.best, f.best_job
    );
    let shown: Vec<String> = f.jobs.iter().map(|(n, e, s)| format!("{n} {e} ep {s:.0}s")).collect();
    eprintln!("    {}", shown.join(" · "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sweeps_are_the_same_twenty_trainer_jobs_and_only_one_prunes() {
        let full = crate::jobs::resolve(batch_file("full", None));
        let asha = crate::jobs::resolve(batch_file("asha", Some(ASHA)));
        assert_eq!(full.jobs.len(), CONFIGS);
        assert_eq!(asha.jobs.len(), CONFIGS);
        for (f, a) in full.jobs.iter().zip(&asha.jobs) {
            assert_eq!((&f.name, &f.train, &f.image), (&a.name, &a.train, &a.image));
            assert!(f.prune.is_none() && a.prune.is_some());
        }
        assert_eq!(full.jobs[0].image, IMAGE);
    }
}
