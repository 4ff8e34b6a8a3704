//! `[batch.mlflow]` resolved: where a batch goes in MLflow and what goes
//! with it; the checks that need only the text (the export itself is
//! `crate::mlflow`).

use serde::{Deserialize, Serialize};

/// `[batch.mlflow]`, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlflowSpec {
    /// `http(s)://host:port`, no credentials in it.
    pub tracking_uri: String,
    pub experiment: String,
    pub artifacts: Vec<Artifact>,
}

/// What goes up besides metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Artifact {
    /// The batch's `report.html` (and `report.md`, `report.csv`) on the parent run.
    Report,
    /// Each job's `stdout.log` and `stderr.log`, under `logs/`.
    Logs,
    /// Each job's `checkpoints/best.ckpt`, under `checkpoints/`.
    BestCheckpoint,
}

impl Artifact {
    pub const ALL: [(&'static str, Artifact); 3] = [
        ("report", Artifact::Report),
        ("logs", Artifact::Logs),
        ("best_checkpoint", Artifact::BestCheckpoint),
    ];
}

/// Checks a tracking URI as tb can use it: `http(s)://host[:port][/prefix]`,
/// with no credentials in it (they belong in the environment, never in a
/// file tb writes). The URI as tb keeps it, or why not and what to do.
pub fn check_uri(uri: &str) -> Result<String, (String, &'static str)> {
    let trimmed = uri.trim();
    let parsed = reqwest::Url::parse(trimmed).map_err(|e| {
        (
            format!("`{}` is not a URL: {e}", trimmed),
            "write it as http://host:5000, the address of an `mlflow server`",
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err((
            format!(
                "tracking URI `{}`: tb sends to a tracking server over http(s), not `{}:`",
                trimmed,
                parsed.scheme()
            ),
            "start `mlflow server` over the store and give its address, such as http://127.0.0.1:5000",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err((
            "the tracking URI holds credentials, which tb would write into batch.json".into(),
            "drop them from the URI; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in tb's environment",
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err((
            format!("tracking URI `{}` names no host", trimmed),
            "write it as http://host:5000",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err((
            format!("tracking URI `{}` has a query or fragment", trimmed),
            "give the server's address only, such as http://host:5000",
        ));
    }
    Ok(trimmed.trim_end_matches('/').to_string())
}
