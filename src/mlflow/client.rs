//! MLflow's tracking REST API, the calls tb makes and nothing more: no SDK,
//! no Python on the host. The server's quirks (verified against
//! `mlflow server` 3.17.2) are handled here: ids are strings, a status is
//! exact uppercase, a run needs its `start_time`, a batch carries at most
//! 1000 metrics, 100 params and 100 tags (1000 entries in all), a
//! non-finite value is the string `"NaN"` or `"±Infinity"` (a bare `NaN`
//! makes the server drop the rest of the batch with 200), and error bodies
//! are not always JSON.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize, Serializer};
use std::time::Duration;

/// At most this many metrics in one `log-batch` (and entries in all).
pub const MAX_BATCH: usize = 1000;
/// At most this many params, and tags, in one `log-batch`.
pub const MAX_PARAMS: usize = 100;
/// The longest param value the server takes, in characters.
pub const MAX_PARAM_VALUE: usize = 6000;
/// The longest tag value the server takes, in characters.
pub const MAX_TAG_VALUE: usize = 8000;

/// A tracking server.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    auth: Auth,
}

/// Credentials from the environment, as MLflow's own clients read them.
#[derive(Clone)]
enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

/// What a call can fail with: the server is not there (or too slow), or it
/// answered no.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the MLflow server at {uri} does not answer: {why}")]
    Unreachable { uri: String, why: String },
    #[error(
        "the server keeps artifacts at `{uri}`, which tb cannot upload to through MLflow's REST API (start the \
         server with --serve-artifacts)"
    )]
    NoArtifactProxy { uri: String },
    #[error("MLflow answered {status}{}: {message}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Refused {
        status: u16,
        code: Option<String>,
        message: String,
    },
}

impl Error {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }

    /// The server has no such run (or experiment).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Refused { status: 404, .. }) || self.code() == Some("RESOURCE_DOES_NOT_EXIST")
    }

    fn code(&self) -> Option<&str> {
        match self {
            Error::Refused { code, .. } => code.as_deref(),
            Error::Unreachable { .. } | Error::NoArtifactProxy { .. } => None,
        }
    }
}

/// A metric point as `log-batch` takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    pub key: String,
    #[serde(serialize_with = "finite_or_named")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub step: i64,
}

/// A param or a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }

    /// At most `max` characters of the value, the cut marked with `…`.
    fn cut(&self, max: usize) -> KeyValue {
        if self.value.chars().count() <= max {
            return self.clone();
        }
        let mut value: String = self.value.chars().take(max - 1).collect();
        value.push('…');
        KeyValue {
            key: self.key.clone(),
            value,
        }
    }
}

/// A run, as `runs/create`, `runs/get` and `runs/search` describe it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Run {
    pub info: RunInfo,
    #[serde(default)]
    pub data: RunData,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    #[serde(default)]
    pub experiment_id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub artifact_uri: String,
    #[serde(default)]
    pub run_name: String,
    /// `active` or `deleted`.
    #[serde(default)]
    pub lifecycle_stage: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunData {
    /// The latest point of each metric.
    #[serde(default)]
    pub metrics: Vec<Point>,
    #[serde(default)]
    pub params: Vec<KeyValue>,
    #[serde(default)]
    pub tags: Vec<KeyValue>,
}

/// A metric point as the server gives it back.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Point {
    pub key: String,
    #[serde(deserialize_with = "number_or_named")]
    pub value: f64,
    #[serde(default)]
    pub timestamp: i64,
    #[serde(default)]
    pub step: i64,
}

impl RunData {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|t| t.key == key).map(|t| t.value.as_str())
    }
}

fn finite_or_named<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_str("NaN")
    } else if *v > 0.0 {
        s.serialize_str("Infinity")
    } else {
        s.serialize_str("-Infinity")
    }
}

fn number_or_named<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        N(f64),
        S(String),
    }
    Ok(match V::deserialize(d)? {
        V::N(n) => n,
        V::S(s) => match s.as_str() {
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            other => other.parse().unwrap_or(f64::NAN),
        },
    })
}

/// How long one call may take; the supervisor never waits on MLflow longer.
const TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Client {
    /// A client of the server at `uri` (`http://host:port`, a path prefix
    /// allowed), with the credentials of `MLFLOW_TRACKING_TOKEN` or
    /// `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`.
    pub fn new(uri: &str) -> anyhow::Result<Client> {
        install_tls_provider();
        let auth = match (
            std::env::var("MLFLOW_TRACKING_TOKEN").ok().filter(|t| !t.is_empty()),
            std::env::var("MLFLOW_TRACKING_USERNAME").ok().filter(|u| !u.is_empty()),
        ) {
            (Some(token), _) => Auth::Bearer(token),
            (None, Some(user)) => Auth::Basic(user, std::env::var("MLFLOW_TRACKING_PASSWORD").unwrap_or_default()),
            (None, None) => Auth::None,
        };
        // Never in a log, whatever the level.
        match &auth {
            Auth::Bearer(t) => {
                crate::secrets::register(t);
            }
            Auth::Basic(_, p) => {
                crate::secrets::register(p);
            }
            Auth::None => {}
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("tb/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("failed to set up an HTTP client")?;
        Ok(Client {
            base: uri.trim_end_matches('/').to_string(),
            http,
            auth,
        })
    }

    pub fn uri(&self) -> &str {
        &self.base
    }

    fn authorize(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::None => r,
            Auth::Bearer(t) => r.bearer_auth(t),
            Auth::Basic(u, p) => r.basic_auth(u, Some(p)),
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<String, Error> {
        let response = self.authorize(r).send().await.map_err(|e| Error::Unreachable {
            uri: self.base.clone(),
            why: reqwest_why(&e),
        })?;
        let status = response.status();
        let body = response.text().await.map_err(|e| Error::Unreachable {
            uri: self.base.clone(),
            why: reqwest_why(&e),
        })?;
        if status.is_success() {
            return Ok(body);
        }
        #[derive(Deserialize)]
        struct Body {
            error_code: Option<String>,
            message: Option<String>,
            detail: Option<String>,
        }
        let parsed: Option<Body> = serde_json::from_str(&body).ok();
        let code = parsed.as_ref().and_then(|b| b.error_code.clone());
        let mut message = parsed
            .and_then(|b| b.message.or(b.detail))
            .unwrap_or_else(|| body.chars().take(300).collect::<String>().trim().to_string());
        if status.as_u16() == 403 && message.contains("Invalid Host header") {
            message.push_str(" (start the server with --allowed-hosts naming this host)");
        }
        // A server that is starting or overloaded answers 5xx: not there yet.
        if status.is_server_error() && code.is_none() {
            return Err(Error::Unreachable {
                uri: self.base.clone(),
                why: format!("HTTP {status}: {message}"),
            });
        }
        Err(Error::Refused {
            status: status.as_u16(),
            code,
            message,
        })
    }

    async fn post<T: for<'de> Deserialize<'de>>(&self, path: &str, body: &serde_json::Value) -> Result<T, Error> {
        let text = self
            .send(
                self.http
                    .post(format!("{}/api/2.0/mlflow/{path}", self.base))
                    .json(body),
            )
            .await?;
        parse(&text)
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str, query: &[(&str, &str)]) -> Result<T, Error> {
        let text = self
            .send(
                self.http
                    .get(format!("{}/api/2.0/mlflow/{path}", self.base))
                    .query(query),
            )
            .await?;
        parse(&text)
    }

    /// The id of the experiment named `name`, created if there is none.
    pub async fn experiment(&self, name: &str) -> anyhow::Result<String> {
        #[derive(Deserialize)]
        struct Got {
            experiment: Experiment,
        }
        #[derive(Deserialize)]
        struct Experiment {
            experiment_id: String,
            #[serde(default)]
            lifecycle_stage: String,
        }
        #[derive(Deserialize)]
        struct Created {
            experiment_id: String,
        }
        let query = [("experiment_name", name)];
        let by_name = || self.get::<Got>("experiments/get-by-name", &query);
        let found = match by_name().await {
            Ok(g) => Some(g.experiment),
            Err(e) if e.code() == Some("RESOURCE_DOES_NOT_EXIST") => None,
            Err(e) => return Err(e.into()),
        };
        let experiment = match found {
            Some(e) => e,
            None => match self
                .post::<Created>("experiments/create", &serde_json::json!({ "name": name }))
                .await
            {
                Ok(c) => return Ok(c.experiment_id),
                // Created meanwhile by someone else: theirs is ours.
                Err(e) if e.code() == Some("RESOURCE_ALREADY_EXISTS") => by_name().await?.experiment,
                Err(e) => return Err(e.into()),
            },
        };
        if experiment.lifecycle_stage == "deleted" {
            bail!(
                "the MLflow experiment `{name}` is deleted; restore it (mlflow experiments restore) or choose another `experiment` in [batch.mlflow]"
            );
        }
        Ok(experiment.experiment_id)
    }

    /// The runs of `experiment` whose tag `key` is `value` (not deleted ones).
    pub async fn runs_tagged(&self, experiment: &str, key: &str, value: &str) -> Result<Vec<Run>, Error> {
        #[derive(Deserialize)]
        struct Found {
            #[serde(default)]
            runs: Vec<Run>,
            next_page_token: Option<String>,
        }
        let filter = format!("tags.`{key}` = '{}'", value.replace('\'', "\\'"));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = serde_json::json!({
                "experiment_ids": [experiment], "filter": filter, "max_results": 1000, "run_view_type": "ACTIVE_ONLY",
            });
            if let Some(t) = &token {
                body["page_token"] = serde_json::Value::String(t.clone());
            }
            let page: Found = self.post("runs/search", &body).await?;
            let empty = page.runs.is_empty();
            out.extend(page.runs);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) if !empty => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// Creates a run named `name` in `experiment`, started at `start_ms`.
    pub async fn create_run(
        &self,
        experiment: &str,
        name: &str,
        start_ms: i64,
        tags: &[KeyValue],
    ) -> Result<Run, Error> {
        #[derive(Deserialize)]
        struct Created {
            run: Run,
        }
        let body = serde_json::json!({
            "experiment_id": experiment, "run_name": name, "start_time": start_ms, "tags": tags,
        });
        Ok(self.post::<Created>("runs/create", &body).await?.run)
    }

    pub async fn get_run(&self, run_id: &str) -> Result<Run, Error> {
        #[derive(Deserialize)]
        struct Got {
            run: Run,
        }
        Ok(self.get::<Got>("runs/get", &[("run_id", run_id)]).await?.run)
    }

    /// Sends metrics, params and tags, cut into batches the server takes.
    pub async fn log(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<(), Error> {
        // The server's limits on values (6000 characters for a param, 8000
        // for a tag): cut here rather than have the batch refused.
        let params: Vec<KeyValue> = params.iter().map(|kv| kv.cut(MAX_PARAM_VALUE)).collect();
        let tags: Vec<KeyValue> = tags.iter().map(|kv| kv.cut(MAX_TAG_VALUE)).collect();
        for (m, p, t) in batches(metrics, &params, &tags) {
            let body = serde_json::json!({ "run_id": run_id, "metrics": m, "params": p, "tags": t });
            self.post::<serde_json::Value>("runs/log-batch", &body).await?;
        }
        Ok(())
    }

    /// Sets the run's status (`RUNNING`, `FINISHED`, `FAILED`, `KILLED`)
    /// and, once it ended, its end time.
    pub async fn update_run(&self, run_id: &str, status: &str, end_ms: Option<i64>) -> Result<(), Error> {
        #[derive(Deserialize)]
        struct Updated {
            run_info: RunInfo,
        }
        let mut body = serde_json::json!({ "run_id": run_id, "status": status });
        if let Some(end) = end_ms {
            body["end_time"] = end.into();
        }
        let updated: Updated = self.post("runs/update", &body).await?;
        // The server ignores a status it does not know, and says 200.
        if updated.run_info.status != status {
            return Err(Error::Refused {
                status: 200,
                code: None,
                message: format!(
                    "run {run_id} kept status {} instead of {status}",
                    updated.run_info.status
                ),
            });
        }
        Ok(())
    }

    /// Every point of one metric of a run, oldest first.
    pub async fn history(&self, run_id: &str, key: &str) -> Result<Vec<Point>, Error> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            metrics: Vec<Point>,
            next_page_token: Option<String>,
        }
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut query = vec![("run_id", run_id), ("metric_key", key), ("max_results", "25000")];
            if !token.is_empty() {
                query.push(("page_token", token.as_str()));
            }
            let page: Page = self.get("metrics/get-history", &query).await?;
            let empty = page.metrics.is_empty();
            out.extend(page.metrics);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) if !empty => token = t,
                _ => return Ok(out),
            }
        }
    }

    /// Uploads `bytes` as the run's artifact at `path` (`logs/stdout.log`),
    /// through the server's artifact proxy; an artifact there is replaced.
    ///
    /// `len` (the body's size) sets how long the upload may take: a minute,
    /// and a second more per megabyte.
    pub async fn upload(&self, run: &RunInfo, path: &str, body: reqwest::Body, len: u64) -> Result<(), Error> {
        let Some(rest) = run.artifact_uri.strip_prefix("mlflow-artifacts:") else {
            return Err(Error::NoArtifactProxy {
                uri: run.artifact_uri.clone(),
            });
        };
        // `mlflow-artifacts:/1/<run>/artifacts`, or with a host:
        // `mlflow-artifacts://host:port/1/<run>/artifacts`.
        let root = match rest.strip_prefix("//") {
            Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
            None => rest.trim_start_matches('/'),
        };
        let encoded: Vec<String> = path.split('/').map(percent_encode).collect();
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{root}/{}",
            self.base,
            encoded.join("/")
        );
        let within = Duration::from_secs(60 + len / 1_000_000);
        self.send(self.http.put(url).timeout(within).body(body))
            .await
            .map(|_| ())
    }
}

/// The metrics, params and tags in batches of at most [`MAX_BATCH`]
/// entries, [`MAX_BATCH`] metrics, [`MAX_PARAMS`] params and tags each.
fn batches<'a>(
    metrics: &'a [Metric],
    params: &'a [KeyValue],
    tags: &'a [KeyValue],
) -> Vec<(&'a [Metric], &'a [KeyValue], &'a [KeyValue])> {
    let mut out = Vec::new();
    let (mut m, mut p, mut t) = (metrics, params, tags);
    while !(m.is_empty() && p.is_empty() && t.is_empty()) || out.is_empty() {
        let np = p.len().min(MAX_PARAMS);
        let nt = t.len().min(MAX_PARAMS);
        let nm = m.len().min(MAX_BATCH - np - nt);
        out.push((&m[..nm], &p[..np], &t[..nt]));
        (m, p, t) = (&m[nm..], &p[np..], &t[nt..]);
        if m.is_empty() && p.is_empty() && t.is_empty() {
            break;
        }
    }
    out
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, Error> {
    // proto3 JSON leaves empty fields out: `{}` is a valid empty answer.
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_json::from_str(text).map_err(|e| Error::Refused {
        status: 200,
        code: None,
        message: format!(
            "an answer tb does not understand ({e}): {}",
            text.chars().take(200).collect::<String>()
        ),
    })
}

fn reqwest_why(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "it did not answer in time".into();
    }
    // The innermost cause says it best ("Connection refused").
    let mut source: &dyn std::error::Error = e;
    while let Some(s) = source.source() {
        source = s;
    }
    source.to_string()
}

fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// rustls needs one process-wide crypto provider.
pub(crate) fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(i: usize) -> Metric {
        Metric {
            key: format!("m{}", i % 7),
            value: i as f64,
            timestamp: 0,
            step: i as i64,
        }
    }

    #[test]
    fn batches_stay_within_the_servers_limits() {
        let metrics: Vec<Metric> = (0..2500).map(metric).collect();
        let params: Vec<KeyValue> = (0..150).map(|i| KeyValue::new(format!("p{i}"), "v")).collect();
        let tags: Vec<KeyValue> = (0..20).map(|i| KeyValue::new(format!("t{i}"), "v")).collect();
        let b = batches(&metrics, &params, &tags);
        for (m, p, t) in &b {
            assert!(m.len() + p.len() + t.len() <= MAX_BATCH && p.len() <= MAX_PARAMS && t.len() <= MAX_PARAMS);
        }
        assert_eq!(b.iter().map(|x| x.0.len()).sum::<usize>(), 2500);
        assert_eq!(b.iter().map(|x| x.1.len()).sum::<usize>(), 150);
        assert_eq!(b.iter().map(|x| x.2.len()).sum::<usize>(), 20);
        assert_eq!(batches(&[], &[], &[]).len(), 1, "an empty call is one empty batch");
    }

    #[test]
    fn non_finite_values_are_named_and_read_back() {
        let m = |v| {
            serde_json::to_value(Metric {
                key: "a".into(),
                value: v,
                timestamp: 1,
                step: 2,
            })
            .unwrap()["value"]
                .clone()
        };
        assert_eq!(m(f64::NAN), "NaN");
        assert_eq!(m(f64::INFINITY), "Infinity");
        assert_eq!(m(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(m(0.5), 0.5);
        let p: Point = serde_json::from_str(r#"{"key": "a", "value": "NaN", "timestamp": 1, "step": 3}"#).unwrap();
        assert!(p.value.is_nan());
        assert_eq!(percent_encode("my file+.txt"), "my%20file%2B.txt");
    }
}
