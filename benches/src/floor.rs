//! The bare engine API: create, start, wait, remove and nothing else, the
//! containers made by tb's own `docker` module. The floor no supervisor
//! beats without overlapping one job's start with another's end.

use crate::jobs;
use crate::session::Session;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `jobs` containers running `command` over `workers` concurrent loops
/// of create, start, wait, remove; their containers labelled `tag`.
pub fn run(
    s: &Session,
    tag: &str,
    dir: &Path,
    jobs: usize,
    workers: usize,
    command: &[&str],
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let labels = s.labels(tag);
    let command: Vec<String> = command.iter().map(|c| c.to_string()).collect();
    let t = Instant::now();
    s.rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (engine, next, dir, labels, command) = (
                s.engine.clone(),
                next.clone(),
                dir.to_path_buf(),
                labels.clone(),
                command.clone(),
            );
            let tag = tag.to_string();
            set.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= jobs {
                        return anyhow::Ok(());
                    }
                    let out = dir.join(format!("jobs/j{i:05}"));
                    std::fs::create_dir_all(&out)?;
                    let command: Vec<&str> = command.iter().map(String::as_str).collect();
                    let name = format!("tb-bench-{}-{tag}-{i}", std::process::id());
                    let spec = jobs::spec(name, &out, &dir.join("downloads"), &labels, &command);
                    let id = engine.create(&spec).await?;
                    engine.start(&id).await?;
                    let code = engine.wait(&id).await?;
                    engine.remove(&id).await?;
                    anyhow::ensure!(code == 0, "a floor container exited with {code}");
                }
            });
        }
        while let Some(done) = set.join_next().await {
            done??;
        }
        anyhow::Ok(())
    })?;
    Ok(t.elapsed())
}
