//! `tb mlflow-sync [BATCH]`: send a batch to MLflow now — what a server
//! that was down missed, or a batch that ran without `[batch.mlflow]`.
//! Idempotent: what the server has already is not sent again.

use crate::cli::{GlobalArgs, MlflowSyncArgs};
use crate::error::hinted;
use crate::exit::Exit;
use crate::mlflow::{Exporter, MlflowSpec};
use crate::run::{BatchDir, BatchStatus};

pub fn run(args: &MlflowSyncArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let dir = BatchDir::open(&global.runs_dir, args.batch.as_deref())?;
    let batch = dir.read_batch()?;
    let spec = spec(args, batch.settings.mlflow.clone(), &batch.name, &dir)?;
    // One writer of mlflow.json: a running batch's supervisor sends it
    // itself (with [batch.mlflow]), or this command does once it is over.
    if let Some(s) = dir.supervisor() {
        return Err(hinted(
            format!("batch {} is running (tb pid {} on {})", dir.id, s.pid, s.host),
            "run `tb mlflow-sync` once it has ended; a batch with [batch.mlflow] is sent as it runs",
        ));
    }
    let _lock = dir.lock()?;
    let jobs = batch.jobs.clone();
    let ended = match batch.status {
        BatchStatus::Running => None,
        BatchStatus::Interrupted => Some("KILLED"),
        BatchStatus::Finished => {
            let fine = jobs
                .iter()
                .all(|j| dir.read_job_state(j).is_ok_and(|s| s.status().is_fine()));
            Some(if fine { "FINISHED" } else { "FAILED" })
        }
    };
    let mut exporter = Exporter::new(&spec, &dir, &batch.name)?;
    let sent = crate::runtime()?.block_on(async { exporter.flush(&jobs, ended).await });
    if !sent {
        return Err(hinted(
            format!("the batch did not all go to MLflow at {}", spec.tracking_uri),
            "the warning above says why; run `tb mlflow-sync` again once the server answers",
        ));
    }
    eprintln!(
        "batch {} is in MLflow: experiment {} at {} ({} run(s) created, {} point(s) sent)",
        dir.id, spec.experiment, spec.tracking_uri, exporter.created, exporter.points
    );
    Ok(Exit::Success)
}

/// The batch's own `[batch.mlflow]`, with the command line's overrides; a
/// batch that had none goes where `--tracking-uri` or `MLFLOW_TRACKING_URI`
/// says.
fn spec(args: &MlflowSyncArgs, recorded: Option<MlflowSpec>, name: &str, dir: &BatchDir) -> anyhow::Result<MlflowSpec> {
    let uri = args
        .tracking_uri
        .clone()
        .or_else(|| recorded.as_ref().map(|s| s.tracking_uri.clone()))
        .or_else(|| {
            std::env::var("MLFLOW_TRACKING_URI")
                .ok()
                .filter(|u| !u.trim().is_empty())
        });
    let Some(uri) = uri else {
        return Err(hinted(
            format!(
                "batch {} has no [batch.mlflow] and no tracking server was named",
                dir.id
            ),
            "pass --tracking-uri http://host:5000, or set MLFLOW_TRACKING_URI",
        ));
    };
    let tracking_uri = crate::mlflow::check_uri(&uri).map_err(|(why, hint)| hinted(why, hint))?;
    let experiment = args
        .experiment
        .clone()
        .or_else(|| recorded.as_ref().map(|s| s.experiment.clone()))
        .unwrap_or_else(|| name.to_string());
    let artifacts = recorded
        .map(|s| s.artifacts)
        .unwrap_or_else(|| vec![crate::mlflow::Artifact::Report, crate::mlflow::Artifact::Logs]);
    Ok(MlflowSpec {
        tracking_uri,
        experiment,
        artifacts,
    })
}
