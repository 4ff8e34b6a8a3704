//! `tb board [BATCH]`: TensorBoard over every job of a batch, from the
//! trainer image (no TensorBoard on the host), each job a run named after
//! it. Host networking, the batch's job directories mounted read-only; the
//! container goes when TensorBoard stops, on Ctrl-C or otherwise.

use crate::cli::{BoardArgs, GlobalArgs};
use crate::docker::{Chunk, ContainerSpec, Engine};
use crate::error::hinted;
use crate::exit::Exit;
use crate::run::BatchDir;
use crate::signal::Signals;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// Where the jobs directory is mounted in the container.
const MOUNT: &str = "/tb-runs";
/// The label naming the `tb board` process that owns a container.
const OWNER: &str = "tb.board.pid";
/// The label naming the host of that process.
const HOST: &str = "tb.board.host";

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// How long TensorBoard may take to answer.
const READY_WITHIN: Duration = Duration::from_secs(120);

pub fn run(args: &BoardArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let dir = BatchDir::open(&global.runs_dir, args.batch.as_deref())?;
    let batch = dir.read_batch()?;
    let with_events = batch.jobs.iter().filter(|j| has_events(&dir.job_dir(j))).count();
    if with_events == 0 && batch.status != crate::run::BatchStatus::Running {
        return Err(hinted(
            format!("no job of batch {} wrote TensorBoard event files", dir.id),
            "tb's trainer and Lightning's default logger (TensorBoardLogger) write them; `tb report` charts the other metric sources",
        ));
    }
    let port = match args.port {
        Some(p) => {
            if let Err(e) = std::net::TcpListener::bind((args.host.as_str(), p)) {
                return Err(hinted(
                    format!("cannot listen on {}:{p}: {e}", args.host),
                    "pick another --port (1024 or more unless tb runs as root), or leave it out for a free one",
                ));
            }
            p
        }
        None => free_port(6006)?,
    };
    let spec = container(&dir, &batch.jobs, &args.image, &args.host, port);
    crate::runtime()?.block_on(serve(spec, &args.host, port, with_events, batch.jobs.len()))
}

/// 6006 if it is free on this host, else any free port.
fn free_port(preferred: u16) -> anyhow::Result<u16> {
    if std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        return Ok(preferred);
    }
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
    tracing::info!("port {preferred} is taken; TensorBoard takes {port}");
    Ok(port)
}

/// Whether `dir` holds a TensorBoard event file, at any depth.
fn has_events(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => has_events(&path),
            Ok(t) if t.is_file() => e.file_name().to_string_lossy().starts_with("events.out.tfevents"),
            _ => false,
        }
    })
}

fn container(dir: &BatchDir, jobs: &[String], image: &str, host: &str, port: u16) -> ContainerSpec {
    // Job names are letters, digits and `._-`: no `,` or `:` to escape.
    let spec: Vec<String> = jobs.iter().map(|j| format!("{j}:{MOUNT}/{j}")).collect();
    let spec = spec.join(",");
    // One argument may hold 128 KiB: past that (a sweep of thousands of
    // jobs), the jobs directory itself, whose subdirectories TensorBoard
    // names its runs after, which are the job names all the same.
    let (flag, logdir) = if spec.len() < 64 * 1024 {
        ("--logdir_spec", spec)
    } else {
        ("--logdir", MOUNT.to_string())
    };
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    ContainerSpec {
        name: format!("tb-board-{}-{}", dir.id, std::process::id()),
        image: image.to_string(),
        cmd: Some(vec![
            "tensorboard".into(),
            flag.into(),
            logdir,
            "--host".into(),
            host.to_string(),
            "--port".into(),
            port.to_string(),
            // The Python loader: no data-server binary to start, same curves.
            "--load_fast=false".into(),
        ]),
        env: vec!["HOME=/tmp".into()],
        labels: HashMap::from([
            ("tb.board".to_string(), dir.id.clone()),
            // Whose it is: a container whose tb is gone is removed by the next `tb board`.
            (OWNER.to_string(), std::process::id().to_string()),
            (HOST.to_string(), hostname()),
        ]),
        binds: vec![format!("{}:{MOUNT}:ro", dir.path.join("jobs").display())],
        user: format!("{uid}:{gid}"),
        shm_size: 64 << 20,
        memory: None,
        cpus: None,
        network: "host".into(),
        device_ids: Vec::new(),
    }
}

async fn serve(spec: ContainerSpec, host: &str, port: u16, with_events: usize, jobs: usize) -> anyhow::Result<Exit> {
    let engine = Engine::connect().await?;
    if engine.image_id(&spec.image).await?.is_none() {
        return Err(hinted(
            format!("the image {} is not in the engine", spec.image),
            "build it with `make image`, or name another image with TensorBoard in it: --image",
        ));
    }
    remove_orphans(&engine).await;
    let mut signals = Signals::new()?;
    // A closed terminal (SSH gone) stops it too.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let id = engine.create(&spec).await?;
    let result = async {
        let mut output = engine.attach(&id).await?;
        engine.start(&id).await?;
        let shown = match host {
            "0.0.0.0" => "127.0.0.1".to_string(),
            "::" => "[::1]".to_string(),
            h if h.contains(':') => format!("[{h}]"),
            h => h.to_string(),
        };
        let url = format!("http://{shown}:{port}/");
        // TensorBoard's own lines, kept to say why if it stops.
        let mut said = Vec::new();
        let mut ready = false;
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        let mut poll = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                chunk = output.next() => match chunk {
                    Some(Ok(Chunk::Stdout(b) | Chunk::Stderr(b))) => {
                        said.extend_from_slice(&b);
                        let keep = said.len().saturating_sub(4000);
                        said.drain(..keep);
                    }
                    Some(Err(_)) | None => {
                        let code = engine.wait(&id).await.unwrap_or(-1);
                        let tail = String::from_utf8_lossy(&said).trim().to_string();
                        return Err(hinted(
                            format!("TensorBoard stopped (exit code {code}): {tail}"),
                            "if the port is taken, pick another with --port",
                        ));
                    }
                },
                _ = poll.tick(), if !ready => {
                    if answers(&url).await {
                        ready = true;
                        tracing::info!(
                            "TensorBoard over {with_events} of {jobs} job(s) with event files; Ctrl-C stops it"
                        );
                        println!("{url}");
                    } else if tokio::time::Instant::now() > deadline {
                        anyhow::bail!("TensorBoard did not answer at {url} within {}s", READY_WITHIN.as_secs());
                    }
                }
                signal = signals.recv() => {
                    tracing::info!("{signal}: stopping TensorBoard");
                    return Ok(Exit::Success);
                }
                _ = hangup.recv() => {
                    tracing::info!("hung up: stopping TensorBoard");
                    return Ok(Exit::Success);
                }
            }
        }
    }
    .await;
    if let Err(e) = engine.remove(&id).await {
        tracing::warn!("{e:#}; remove it with `docker rm -f {}`", spec.name);
    }
    result
}

/// Removes TensorBoard containers of `tb board` processes that are gone
/// (killed, or their machine's session closed before they could clean up).
async fn remove_orphans(engine: &Engine) {
    let Ok(listed) = engine.list_labelled(OWNER).await else {
        return;
    };
    let here = hostname();
    for c in listed {
        // Only a process of this host can be looked for here.
        if c.labels.get(HOST) != Some(&here) {
            continue;
        }
        let alive = c
            .labels
            .get(OWNER)
            .and_then(|p| p.parse::<u32>().ok())
            .and_then(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
            .is_some_and(|cmd| String::from_utf8_lossy(&cmd).contains("board"));
        if !alive {
            match engine.remove(&c.id).await {
                Ok(()) => tracing::info!("removed a TensorBoard container an earlier `tb board` left behind"),
                Err(e) => tracing::debug!("{e:#}"),
            }
        }
    }
}

async fn answers(url: &str) -> bool {
    crate::mlflow::client::install_tls_provider();
    let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(2)).build() else {
        return false;
    };
    client.get(url).send().await.is_ok_and(|r| r.status().is_success())
}
