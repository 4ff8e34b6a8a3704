//! The trainer's throughput against a plain PyTorch loop on the same model
//! and data (`python -m tb_trainer.bench` in the trainer image: the
//! comparison is the trainer's own, this only runs it and reads its JSON).

use crate::session::require_image;
use crate::table::Table;
use anyhow::{Context, bail};
use std::process::Command;

const IMAGE: &str = "tb-trainer:latest";

pub fn run(_: &crate::session::Session, t: &mut Table) -> anyhow::Result<()> {
    require_image(IMAGE, "image")?;
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            &format!("{uid}:{gid}"),
            IMAGE,
        ])
        .args(["python", "-m", "tb_trainer.bench", "--json"])
        .output()
        .context("failed to run docker")?;
    if !out.status.success() {
        bail!(
            "the trainer's bench failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(last_line(&out.stdout))
        .context("the trainer's bench printed no JSON on its last line")?;
    let f = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("the trainer's bench gave no `{k}`"))
    };
    let (plain, trainer) = (f("plain_samples_per_s")?, f("trainer_samples_per_s")?);
    t.heading(format!(
        "the trainer on CPU: UNet w{} on {} tiles {}x{}, batch {}, {} threads (medians of its rounds)",
        v["channels"], v["samples"], v["size"], v["size"], v["batch_size"], v["threads"]
    ));
    t.row(
        "  samples/s",
        format!("{trainer:.1}"),
        format!("plain PyTorch loop {plain:.1}"),
    )
    .ratio(trainer / plain);
    Ok(())
}

fn last_line(out: &[u8]) -> &[u8] {
    let trimmed = out.trim_ascii_end();
    let start = trimmed.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    &trimmed[start..]
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_json_is_the_last_line() {
        assert_eq!(super::last_line(b"warning: x\n{\"a\": 1}\n\n"), b"{\"a\": 1}");
        assert_eq!(super::last_line(b"{}"), b"{}");
    }
}
