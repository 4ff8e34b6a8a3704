//! The only module that talks to the Docker engine (through bollard). It
//! speaks in tb's terms — a [`ContainerSpec`] in, output chunks and an
//! [`ExitInfo`] out — so that callers never see bollard's types.

use crate::error::hinted;
use anyhow::Context;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::HostConfigLogConfig;
use bollard::models::{ContainerCreateBody, DeviceMapping, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, BuildImageOptionsBuilder, CreateContainerOptions, CreateContainerOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::pin::Pin;

/// A connection to the engine, its API version negotiated.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

/// What a container runs with. Built by the executor from a job.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// `None`: the image's own command.
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    /// `host:container[:options]`.
    pub binds: Vec<String>,
    /// `uid:gid`.
    pub user: String,
    pub shm_size: u64,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub network: String,
    /// GPU device ids for a device request; empty for none.
    pub device_ids: Vec<String>,
}

/// One piece of a container's output.
#[derive(Debug)]
pub enum Chunk {
    Stdout(Bytes),
    Stderr(Bytes),
}

pub type OutputStream = Pin<Box<dyn Stream<Item = anyhow::Result<Chunk>> + Send>>;

/// How a container ended, from the engine's record of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitInfo {
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// The engine's own error (e.g. the runtime failed to start the process).
    pub error: Option<String>,
    /// When it stopped, as the engine recorded it.
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The engine's `FinishedAt` ("0001-01-01T00:00:00Z" for never).
fn finished_at(text: Option<&str>) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = chrono::DateTime::parse_from_rfc3339(text?)
        .ok()?
        .with_timezone(&chrono::Utc);
    (t.timestamp() > 0).then_some(t)
}

/// The engine could not be reached (it went away, or its socket did): the
/// call may succeed later. Everything else the engine says is final.
#[derive(Debug, thiserror::Error)]
#[error("the Docker engine is unreachable: {0}")]
pub struct Unreachable(pub String);

/// Whether `err` (anywhere in its chain) is the engine being unreachable.
pub fn is_unreachable(err: &anyhow::Error) -> bool {
    err.downcast_ref::<Unreachable>().is_some()
}

/// bollard's error as tb sees it: unreachable, or the engine's answer.
fn lift(e: BollardError) -> anyhow::Error {
    match e {
        BollardError::RequestTimeoutError
        | BollardError::IOError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::HyperLegacyError { .. }
        | BollardError::HttpClientError { .. }
        | BollardError::SocketNotFoundError(_) => anyhow::Error::new(Unreachable(e.to_string())),
        BollardError::DockerResponseServerError { message, .. } => anyhow::anyhow!("{message}"),
        other => anyhow::Error::new(other),
    }
}

/// A container's state as the engine has it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub running: bool,
    /// `created`: never started.
    pub created: bool,
    pub exit: ExitInfo,
}

/// The network probe's device and entrypoint: paths no host or image has.
const PROBE_DEVICE: &str = "/dev/tb-network-probe-not-a-device";
const PROBE_ENTRYPOINT: &str = "/tb-network-probe-not-a-program";

/// A tb-labelled container as the engine lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub state: String,
    pub labels: HashMap<String, String>,
}

/// A progress line of an image build.
#[derive(Debug)]
pub enum BuildEvent {
    Output(String),
    Done,
}

impl Engine {
    /// Connects through `DOCKER_HOST` or the local socket, and negotiates the
    /// API version down to what the engine speaks.
    pub async fn connect() -> anyhow::Result<Engine> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| unreachable_daemon(e.to_string()))?
            // Nothing tb sends blocks for long: stops are a signal plus our
            // own grace period, and waits/attaches answer their headers at once.
            .with_timeout(std::time::Duration::from_secs(120));
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable_daemon(e.to_string()))?;
        docker.ping().await.map_err(|e| unreachable_daemon(e.to_string()))?;
        Ok(Engine { docker })
    }

    /// The engine's version and API version, for messages.
    pub async fn version(&self) -> anyhow::Result<(String, String)> {
        let v = self
            .docker
            .version()
            .await
            .context("failed to ask the Docker engine its version")?;
        Ok((v.version.unwrap_or_default(), v.api_version.unwrap_or_default()))
    }

    /// The id of `image` if the engine has it.
    pub async fn image_id(&self, image: &str) -> anyhow::Result<Option<String>> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(i.id),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("failed to inspect image `{image}`"))),
        }
    }

    /// Creates (does not start) a container; returns its id.
    pub async fn create(&self, spec: &ContainerSpec) -> anyhow::Result<String> {
        let device_requests = (!spec.device_ids.is_empty()).then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".into()),
                count: None,
                device_ids: Some(spec.device_ids.clone()),
                capabilities: Some(vec![vec!["gpu".into()]]),
                options: None,
            }]
        });
        let host = HostConfig {
            binds: Some(spec.binds.clone()),
            init: Some(true),
            // Bounded at validation (crate::limits); a value from an older
            // run directory saturates rather than turning negative.
            shm_size: Some(i64::try_from(spec.shm_size).unwrap_or(i64::MAX)),
            memory: spec.memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            // No swap on top of the limit: a job over its memory is OOM-killed
            // and reported as such rather than crawling.
            memory_swap: spec.memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            nano_cpus: spec.cpus.map(|c| (c * 1e9) as i64),
            network_mode: Some(spec.network.clone()),
            security_opt: Some(vec!["no-new-privileges".into()]),
            cap_add: None,
            device_requests,
            // A driver that keeps every byte (binary-safe) and that the logs
            // endpoint can read back: how `tb resume` recovers what a container
            // wrote while no supervisor was attached.
            log_config: Some(HostConfigLogConfig {
                typ: Some("local".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "256m".to_string()),
                    ("max-file".to_string(), "4".to_string()),
                ])),
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.cmd.clone(),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone()),
            user: Some(spec.user.clone()),
            tty: Some(false),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(false),
            host_config: Some(host),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&spec.name).build();
        let created = match self.docker.create_container(Some(options.clone()), body.clone()).await {
            // A container of this name is a leftover of the same attempt (its
            // name holds the batch directory, the job and the attempt): an
            // earlier create whose answer was lost.
            Err(BollardError::DockerResponseServerError { status_code: 409, .. }) => {
                self.remove(&spec.name).await?;
                self.docker.create_container(Some(options), body).await
            }
            other => other,
        }
        .map_err(lift)
        .with_context(|| format!("failed to create container `{}`", spec.name))?;
        Ok(created.id)
    }

    /// Whether a container of `image` can join `network`: `Err` holds the
    /// engine's message. The engine attaches a container to its network
    /// when it starts it, not when it creates it, so the probe is asked to
    /// start — with a device that does not exist: the engine sets the
    /// network up, then fails to find [`PROBE_DEVICE`] while it writes the
    /// container's runtime spec, before any process exists (a quarter of
    /// the time of a real start). That failure, or failing to exec
    /// [`PROBE_ENTRYPOINT`] on an engine that checks devices later, is the
    /// sign that the network worked. Nothing of the image runs; the probe
    /// is removed.
    pub async fn probe_network(&self, image: &str, network: &str) -> anyhow::Result<Result<(), String>> {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(vec![PROBE_ENTRYPOINT.to_string()]),
            cmd: Some(vec![]),
            labels: Some(HashMap::from([("tb.probe".to_string(), network.to_string())])),
            host_config: Some(HostConfig {
                network_mode: Some(network.to_string()),
                devices: Some(vec![DeviceMapping {
                    path_on_host: Some(PROBE_DEVICE.to_string()),
                    path_in_container: Some(PROBE_DEVICE.to_string()),
                    cgroup_permissions: Some("rwm".to_string()),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = match self.docker.create_container(None::<CreateContainerOptions>, body).await {
            Ok(c) => c,
            Err(BollardError::DockerResponseServerError { message, .. }) => return Ok(Err(message)),
            Err(e) => return Err(lift(e).context(format!("failed to create a probe container on network `{network}`"))),
        };
        let started = self.docker.start_container(&created.id, None).await;
        self.remove(&created.id).await?;
        match started {
            Ok(()) => Ok(Ok(())),
            Err(BollardError::DockerResponseServerError { message, .. })
                if message.contains(PROBE_DEVICE) || message.contains(PROBE_ENTRYPOINT) =>
            {
                Ok(Ok(()))
            }
            Err(BollardError::DockerResponseServerError { message, .. }) => Ok(Err(message)),
            Err(e) => Err(lift(e).context(format!("failed to start a probe container on network `{network}`"))),
        }
    }

    /// Attaches to a created container's stdout and stderr. Attach before
    /// start, and nothing the container writes is missed; the stream ends
    /// when the container's output is closed.
    pub async fn attach(&self, id: &str) -> anyhow::Result<OutputStream> {
        let options = AttachContainerOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .stream(true)
            .logs(false)
            .build();
        let attached = self
            .docker
            .attach_container(id, Some(options))
            .await
            .map_err(lift)
            .with_context(|| format!("failed to attach to container {}", short(id)))?;
        let stream = attached.output.filter_map(|item| async move {
            match item {
                Ok(bollard::container::LogOutput::StdOut { message }) => Some(Ok(Chunk::Stdout(message))),
                Ok(bollard::container::LogOutput::StdErr { message }) => Some(Ok(Chunk::Stderr(message))),
                // A non-TTY container's stream is multiplexed; console output
                // only appears for TTYs, which tb never allocates.
                Ok(bollard::container::LogOutput::Console { message }) => Some(Ok(Chunk::Stdout(message))),
                Ok(bollard::container::LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(anyhow::Error::new(e).context("the container's output stream broke"))),
            }
        });
        Ok(Box::pin(stream))
    }

    pub async fn start(&self, id: &str) -> anyhow::Result<()> {
        self.docker.start_container(id, None).await.map_err(lift)
    }

    /// Whether the engine answers now.
    pub async fn ping(&self) -> bool {
        self.docker.ping().await.is_ok()
    }

    /// Everything the container wrote since it started, from the engine's
    /// log, less the first `skip_out` and `skip_err` bytes (what tb already
    /// has); follows the container until it stops.
    pub fn output_since(&self, id: &str, skip_out: u64, skip_err: u64) -> OutputStream {
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut skip = (skip_out, skip_err);
        let stream = self.docker.logs(id, Some(options)).filter_map(move |item| {
            let out = match item {
                Ok(bollard::container::LogOutput::StdOut { message })
                | Ok(bollard::container::LogOutput::Console { message }) => {
                    trim_front(&mut skip.0, message).map(|m| Ok(Chunk::Stdout(m)))
                }
                Ok(bollard::container::LogOutput::StdErr { message }) => {
                    trim_front(&mut skip.1, message).map(|m| Ok(Chunk::Stderr(m)))
                }
                Ok(bollard::container::LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(lift(e).context("the container's log stream broke"))),
            };
            async move { out }
        });
        Box::pin(stream)
    }

    /// The container's state, or `None` if the engine has no such container.
    pub async fn observe(&self, id: &str) -> anyhow::Result<Option<Observed>> {
        match self.docker.inspect_container(id, None).await {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                let status = state.status.map(|s| s.to_string()).unwrap_or_default();
                Ok(Some(Observed {
                    running: state.running.unwrap_or(false) || status == "restarting",
                    created: status == "created",
                    exit: ExitInfo {
                        exit_code: state.exit_code,
                        oom_killed: state.oom_killed.unwrap_or(false),
                        finished_at: finished_at(state.finished_at.as_deref()),
                        error: state.error.filter(|e| !e.is_empty()),
                    },
                }))
            }
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(lift(e).context(format!("failed to inspect container {}", short(id)))),
        }
    }

    /// Waits for the container to stop; its exit code. A non-zero exit is
    /// an outcome here, not an error.
    pub async fn wait(&self, id: &str) -> anyhow::Result<i64> {
        let options = WaitContainerOptionsBuilder::default().condition("not-running").build();
        let mut stream = self.docker.wait_container(id, Some(options));
        match stream.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(lift(e).context(format!("failed to wait for container {}", short(id)))),
            // The engine went away mid-wait (it answers a finished wait).
            None => Err(anyhow::Error::new(Unreachable(format!(
                "the wait for container {} ended without an answer",
                short(id)
            )))),
        }
    }

    /// The engine's record of how a stopped container ended.
    pub async fn exit_info(&self, id: &str) -> anyhow::Result<ExitInfo> {
        let info = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(lift)
            .with_context(|| format!("failed to inspect container {}", short(id)))?;
        let state = info.state.unwrap_or_default();
        Ok(ExitInfo {
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            finished_at: finished_at(state.finished_at.as_deref()),
            error: state.error.filter(|e| !e.is_empty()),
        })
    }

    /// Sends `signal` (e.g. "SIGTERM") to the container's init process,
    /// which forwards it. A container that already stopped is not an error.
    pub async fn signal(&self, id: &str, signal: &str) -> anyhow::Result<()> {
        let options = KillContainerOptionsBuilder::default().signal(signal).build();
        match self.docker.kill_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 404 | 409, ..
            }) => Ok(()),
            Err(e) => Err(lift(e).context(format!("failed to send {signal} to container {}", short(id)))),
        }
    }

    /// Removes a container, running or not. One already gone is not an error.
    pub async fn remove(&self, id: &str) -> anyhow::Result<()> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(lift(e).context(format!("failed to remove container {}", short(id)))),
        }
    }

    /// Containers, running or not, carrying `label` (`key` or `key=value`).
    pub async fn list_labelled(&self, label: &str) -> anyhow::Result<Vec<Listed>> {
        let filters: HashMap<String, Vec<String>> = HashMap::from([("label".into(), vec![label.into()])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(lift)
            .context("failed to list containers")?;
        Ok(list
            .into_iter()
            .map(|c| Listed {
                id: c.id.unwrap_or_default(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                labels: c.labels.unwrap_or_default(),
            })
            .collect())
    }

    /// Builds an image from a tar context with host networking (bridge DNS
    /// cannot be relied on where images are built), tagged `tags[0]` and
    /// then every other tag. Streams the build's output lines to `on_line`.
    pub async fn build(
        &self,
        context: Vec<u8>,
        dockerfile: &str,
        tags: &[String],
        build_args: &HashMap<String, String>,
        mut on_line: impl FnMut(&str),
    ) -> anyhow::Result<String> {
        let options = BuildImageOptionsBuilder::default()
            .dockerfile(dockerfile)
            .t(&tags[0])
            .networkmode("host")
            .rm(true)
            .forcerm(true)
            .buildargs(build_args)
            .build();
        let mut stream = self
            .docker
            .build_image(options, None, Some(bollard::body_full(Bytes::from(context))));
        let mut last_step = String::new();
        while let Some(item) = stream.next().await {
            let info = item
                .map_err(|e| anyhow::anyhow!("{}", engine_message(&e)))
                .with_context(|| {
                    if last_step.is_empty() {
                        "the image build failed".to_string()
                    } else {
                        format!("the image build failed at {last_step}")
                    }
                })?;
            if let Some(text) = info.stream {
                for line in text.lines() {
                    if line.starts_with("Step ") {
                        last_step = line.to_string();
                    }
                    on_line(line);
                }
            }
            if let Some(status) = info.status {
                on_line(&status);
            }
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                anyhow::bail!(
                    "the image build failed at {}: {err}",
                    if last_step.is_empty() { "its start" } else { &last_step }
                );
            }
        }
        let id = self
            .image_id(&tags[0])
            .await?
            .with_context(|| format!("the build finished but the engine has no image `{}`", tags[0]))?;
        for tag in &tags[1..] {
            self.build_tag(&id, tag).await?;
        }
        Ok(id)
    }

    /// Tags the image `id` as `tag` (`repo:tag`).
    pub async fn build_tag(&self, id: &str, tag: &str) -> anyhow::Result<()> {
        let (repo, t) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
        let options = bollard::query_parameters::TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(t)
            .build();
        self.docker
            .tag_image(id, Some(options))
            .await
            .with_context(|| format!("failed to tag the image `{tag}`"))
    }
}

/// Drops the first `*skip` bytes of a stream from `message`.
fn trim_front(skip: &mut u64, message: Bytes) -> Option<Bytes> {
    if *skip == 0 {
        return Some(message);
    }
    let n = (*skip).min(message.len() as u64) as usize;
    *skip -= n as u64;
    (n < message.len()).then(|| message.slice(n..))
}

/// The first 12 characters of a container id, as `docker ps` shows it.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn unreachable_daemon(detail: String) -> anyhow::Error {
    hinted(
        format!("cannot reach the Docker engine: {detail}"),
        "start it (`sudo systemctl start docker`, or `dockerd &`), check DOCKER_HOST, and that you may use /var/run/docker.sock",
    )
}

/// The engine's message without bollard's wrapping.
fn engine_message(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_at_reads_the_engines_time_and_its_never() {
        let t = finished_at(Some("2026-11-30T19:20:16.123456789Z")).unwrap();
        assert_eq!(t.timestamp(), 1_796_066_416);
        assert_eq!(finished_at(Some("0001-01-01T00:00:00Z")), None, "never finished");
        assert_eq!(finished_at(Some("yesterday")), None);
        assert_eq!(finished_at(None), None);
    }

    #[test]
    fn lost_connections_are_unreachable_and_answers_are_final() {
        let gone = lift(BollardError::SocketNotFoundError("/run/docker.sock".into()));
        assert!(is_unreachable(&gone));
        assert!(
            is_unreachable(&gone.context("failed to start container x")),
            "anywhere in the chain"
        );
        assert!(is_unreachable(&lift(BollardError::RequestTimeoutError)));
        let answer = lift(BollardError::DockerResponseServerError {
            status_code: 404,
            message: "No such image: nope:latest".into(),
        });
        assert!(!is_unreachable(&answer));
        assert_eq!(
            answer.to_string(),
            "No such image: nope:latest",
            "the engine's words, nothing around them"
        );
    }

    #[test]
    fn trim_front_skips_what_was_already_captured_across_messages() {
        let mut skip = 5;
        assert_eq!(
            trim_front(&mut skip, Bytes::from_static(b"abc")),
            None,
            "all of it was captured"
        );
        assert_eq!(skip, 2);
        assert_eq!(
            trim_front(&mut skip, Bytes::from_static(b"defgh")),
            Some(Bytes::from_static(b"fgh"))
        );
        assert_eq!(skip, 0);
        assert_eq!(
            trim_front(&mut skip, Bytes::from_static(b"ij")),
            Some(Bytes::from_static(b"ij"))
        );
        let mut exact = 3;
        assert_eq!(trim_front(&mut exact, Bytes::from_static(b"xyz")), None);
        assert_eq!(exact, 0);
    }

    #[test]
    fn short_ids_are_twelve_characters_at_most() {
        assert_eq!(short("6bd756e74362aaaaffff"), "6bd756e74362");
        assert_eq!(short("abc"), "abc");
    }
}
