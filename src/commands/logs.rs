//! `tb logs [BATCH] JOB`: print or follow a job's captured output.

use crate::cli::{GlobalArgs, LogsArgs};
use crate::error::hinted;
use crate::exit::Exit;
use crate::state::BatchDir;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

pub fn run(args: &LogsArgs, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let (batch, job) = match args.target.as_slice() {
        [job] => (None, job.as_str()),
        [batch, job] => (Some(batch.as_str()), job.as_str()),
        _ => unreachable!("clap takes one or two values"),
    };
    let dir = BatchDir::open(&global.runs_dir, batch)?;
    let names = dir.read_batch()?.jobs;
    if !names.iter().any(|n| n == job) {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let hint = crate::batch::suggest(job, &refs)
            .map(|h| h.replace("valid keys here", "the jobs are"))
            .unwrap_or_default();
        return Err(hinted(format!("batch {} has no job `{job}`", dir.id), hint));
    }
    let stream = if args.stderr { "stderr.log" } else { "stdout.log" };
    let state = dir.read_job_state(job)?;
    let path: PathBuf = match args.attempt {
        Some(n) if n != state.attempt => {
            let p = dir.job_dir(job).join("attempts").join(n.to_string()).join(stream);
            if !p.exists() {
                return Err(hinted(
                    format!("job `{job}` has no attempt {n}"),
                    format!("its current attempt is {}", state.attempt),
                ));
            }
            p
        }
        _ => dir.job_dir(job).join(stream),
    };
    let mut out = std::io::stdout().lock();
    let mut offset = 0u64;
    loop {
        let finished = !args.follow || dir.read_job_state(job).map(|s| s.status.is_final()).unwrap_or(true);
        if let Ok(mut f) = std::fs::File::open(&path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offset {
                // A new attempt started over the file.
                offset = 0;
            }
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            offset += buf.len() as u64;
            if out.write_all(&buf).and_then(|_| out.flush()).is_err() {
                // The reader went away (`| head`): not an error.
                return Ok(Exit::Success);
            }
        }
        if finished {
            return Ok(Exit::Success);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
