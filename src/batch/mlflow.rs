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
    /// The batch's report files (`report.html`, `.md`, `.csv`, `.json`) on the parent run.
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
    let shown = without_userinfo(trimmed);
    if shown != trimmed {
        return Err((
            format!("the tracking URI `{shown}` holds credentials, which tb would write into batch.json"),
            "drop them from the URI; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or \
             MLFLOW_TRACKING_TOKEN) in tb's environment",
        ));
    }
    let parsed = reqwest::Url::parse(trimmed).map_err(|e| {
        (
            format!("`{shown}` is not a URL: {e}"),
            "write it as http://host:5000, the address of an `mlflow server`",
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err((
            format!(
                "tracking URI `{shown}`: tb sends to a tracking server over http(s), not `{}:`",
                parsed.scheme()
            ),
            "start `mlflow server` over the store and give its address, such as http://127.0.0.1:5000",
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err((
            format!("tracking URI `{shown}` names no host"),
            "write it as http://host:5000",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err((
            format!("tracking URI `{shown}` has a query or fragment"),
            "give the server's address only, such as http://host:5000",
        ));
    }
    Ok(trimmed.trim_end_matches('/').to_string())
}

/// `uri` with anything between `scheme://` and an `@` before the path
/// replaced by `***`: what may be shown of a URI (a database URL such as
/// `postgresql://user:pw@db/mlflow` carries a password there).
fn without_userinfo(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uri_with_credentials_is_refused_without_showing_them() {
        for uri in [
            "http://me:pw123456@host:5000",
            "postgresql://user:s3cr3t-pw@db/mlflow",
            "https://token@host",
        ] {
            let (why, _) = check_uri(uri).unwrap_err();
            assert!(why.contains("holds credentials") && why.contains("***@"), "{why}");
            assert!(
                !why.contains("pw123456") && !why.contains("s3cr3t") && !why.contains("token@"),
                "{why}"
            );
        }
    }

    #[test]
    fn only_http_servers_with_a_host() {
        assert_eq!(check_uri(" http://127.0.0.1:5000/ ").unwrap(), "http://127.0.0.1:5000");
        assert_eq!(
            check_uri("https://mlflow.lab/prefix").unwrap(),
            "https://mlflow.lab/prefix"
        );
        assert!(check_uri("file:///tmp/mlruns").unwrap_err().0.contains("not `file:`"));
        assert!(check_uri("databricks").unwrap_err().0.contains("is not a URL"));
        assert!(check_uri("http://host:5000/?x=1").unwrap_err().0.contains("query"));
    }
}
