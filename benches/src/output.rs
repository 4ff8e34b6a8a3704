//! 1 GiB of random (not UTF-8) bytes on a job's stdout, captured to a
//! file: through tb (its `stdout.log`) against `docker run … > file` with
//! the same container. Both are checked byte for byte: the job writes one
//! random 16 MiB block 64 times and keeps the block in /out, so the check
//! is a comparison, not a second copy of the output.

use crate::jobs;
use crate::session::{Session, children_cpu, median};
use crate::table::{Table, secs};
use anyhow::{Context, bail};
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const BLOCK: usize = 16 << 20;
const BLOCKS: usize = 64;
const SCRIPT: &str = "head -c 16777216 /dev/urandom > /out/block && i=0 && \
                      while [ $i -lt 64 ]; do cat /out/block; i=$((i + 1)); done";

/// One capture: its wall, the CPU of the process that captured it (tb, or
/// the docker CLI), and whether it was exact.
struct Capture {
    wall: f64,
    cpu: f64,
    exact: bool,
}

pub fn run(s: &Session, t: &mut Table) -> anyhow::Result<()> {
    let (mut tb, mut docker) = (Vec::new(), Vec::new());
    for round in 0..s.rounds {
        for k in 0..2 {
            if (round + k) % 2 == 0 {
                tb.push(through_tb(s)?);
            } else {
                docker.push(through_docker(s)?);
            }
        }
        eprintln!(
            "  1 GiB of stdout, round {}/{}: tb {} ({} CPU), docker run > file {} ({} CPU)",
            round + 1,
            s.rounds,
            secs(tb[round].wall),
            secs(tb[round].cpu),
            secs(docker[round].wall),
            secs(docker[round].cpu)
        );
    }
    let m = |v: &[Capture], f: fn(&Capture) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    let exact = |v: &[Capture]| v.iter().all(|c| c.exact);
    let yes = |ok| if ok { "yes" } else { "NO" };
    t.heading(format!(
        "1 GiB of stdout captured to a file (medians of {} rounds)",
        s.rounds
    ));
    let (a, b) = (m(&tb, |c| c.wall), m(&docker, |c| c.wall));
    t.row("  wall", secs(a), format!("docker run > file {}", secs(b)))
        .ratio(a / b);
    let (a, b) = (m(&tb, |c| c.cpu), m(&docker, |c| c.cpu));
    t.row(
        "  CPU of the capturing process",
        secs(a),
        format!("docker CLI {}", secs(b)),
    )
    .ratio(a / b);
    t.row(
        "  byte-exact, every round",
        yes(exact(&tb)),
        format!("docker run > file {}", yes(exact(&docker))),
    )
    .target("byte-exact", exact(&tb));
    Ok(())
}

/// tb running the job; exact if its `stdout.log` is.
fn through_tb(s: &Session) -> anyhow::Result<Capture> {
    let (tag, dir) = s.run_dir("tb-output")?;
    let (wall, cpu) = s.run_batch(&dir, &jobs::batch_file(&tag, 1, 1, &["sh", "-c", SCRIPT]))?;
    finish(&dir, &dir.join("runs/latest/jobs/j00000"), wall, cpu)
}

/// `docker run … > file`; exact if the file is.
fn through_docker(s: &Session) -> anyhow::Result<Capture> {
    let (tag, dir) = s.run_dir("docker-output")?;
    let job = dir.join("jobs/j00000");
    std::fs::create_dir_all(&job)?;
    let args = jobs::docker_run(&job, &dir.join("downloads"), &s.labels(&tag), &["sh", "-c", SCRIPT]);
    let log = std::fs::File::create(job.join("stdout.log"))?;
    let (t, cpu) = (Instant::now(), children_cpu());
    let st = Command::new("docker").args(&args).stdout(log).status()?;
    let (wall, cpu) = (t.elapsed().as_secs_f64(), children_cpu() - cpu);
    if !st.success() {
        bail!("docker run failed ({st})");
    }
    finish(&dir, &job, wall, cpu)
}

/// The capture, once its job directory is checked; `dir` is then removed.
fn finish(dir: &Path, job: &Path, wall: f64, cpu: f64) -> anyhow::Result<Capture> {
    let exact = verify(job);
    std::fs::remove_dir_all(dir)?;
    Ok(Capture {
        wall,
        cpu,
        exact: exact?,
    })
}

/// Whether the job directory's `stdout.log` is exactly what the job
/// wrote. A block of the wrong size is a job that did not do its work.
fn verify(job: &Path) -> anyhow::Result<bool> {
    let block = job.join("block");
    let size = std::fs::metadata(&block).with_context(|| format!("the job left no `{}`", block.display()))?;
    if size.len() != BLOCK as u64 {
        bail!("the job's block is {} bytes, not {BLOCK}", size.len());
    }
    exact(&job.join("stdout.log"), &block, BLOCKS)
}

/// Whether `log` is `block` written `blocks` times and nothing else.
fn exact(log: &Path, block: &Path, blocks: usize) -> anyhow::Result<bool> {
    let block = std::fs::read(block).with_context(|| format!("failed to read `{}`", block.display()))?;
    let mut f = std::fs::File::open(log).with_context(|| format!("failed to open `{}`", log.display()))?;
    if f.metadata()?.len() != (block.len() * blocks) as u64 {
        return Ok(false);
    }
    let mut buf = vec![0; block.len()];
    for _ in 0..blocks {
        f.read_exact(&mut buf)?;
        if buf != block {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_block_repeated_exactly_is_exact() {
        let dir = std::env::temp_dir().join(format!("tb-bench-output-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let blocks = 16;
        let block: Vec<u8> = (0..65536 + 7).map(|i| (i * 7 + i / 4099) as u8).collect();
        std::fs::write(dir.join("block"), &block).unwrap();
        let whole = block.repeat(blocks);
        let check = |bytes: &[u8]| {
            std::fs::write(dir.join("log"), bytes).unwrap();
            exact(&dir.join("log"), &dir.join("block"), blocks).unwrap()
        };
        assert!(check(&whole));
        let mut flipped = whole.clone();
        flipped[block.len() * 9 + 12345] ^= 1;
        assert!(!check(&flipped), "one bit");
        assert!(!check(&whole[..whole.len() - 1]), "one byte short");
        let mut shifted = whole[1..].to_vec();
        shifted.push(whole[0]);
        assert!(!check(&shifted), "the same bytes, one off");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
