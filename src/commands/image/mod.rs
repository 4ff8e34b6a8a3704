//! `tb image build`: the trainer image from `images/trainer` and
//! `trainer-py`, sent to the engine as a tar made here. The sha256 of that
//! tar (with the build arguments and the base image's id) is the image's
//! tag, so an unchanged context is a cache hit that builds nothing.

mod steps;

use crate::cli::ImageBuildArgs;
use crate::docker::Engine;
use crate::error::hinted;
use crate::exit::Exit;
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The trees the build context holds, at their paths in the project.
const CONTEXT_DIRS: [&str; 2] = ["images/trainer", "trainer-py"];
const DOCKERFILE: &str = "images/trainer/Dockerfile";
const DEFAULT_BASE: &str = "tb-base:bookworm";

pub fn build(args: &ImageBuildArgs) -> anyhow::Result<Exit> {
    let mut build_args: BTreeMap<String, String> = BTreeMap::new();
    for kv in &args.build_args {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| hinted(format!("invalid --build-arg `{kv}`"), "write it as KEY=VALUE"))?;
        build_args.insert(k.to_string(), v.to_string());
    }
    let (repo, _) = args.tag.rsplit_once(':').unwrap_or((args.tag.as_str(), "latest"));
    let files = context_files(&args.context)?;
    let tar = context_tar(&args.context, &files)?;
    let dockerfile = std::fs::read_to_string(args.context.join(DOCKERFILE))
        .with_context(|| format!("failed to read `{}`", args.context.join(DOCKERFILE).display()))?;
    let base = build_args
        .get("BASE_IMAGE")
        .cloned()
        .unwrap_or_else(|| default_base(&dockerfile));

    crate::runtime()?.block_on(async {
        let engine = Engine::connect().await?;
        let base_id = engine.image_id(&base).await?.ok_or_else(|| {
            hinted(
                format!("the base image `{base}` is not in the Docker engine"),
                "build it with `make base-image`, or name one you have: make image BASE_IMAGE=python:3.11-slim",
            )
        })?;
        let mut h = Sha256::new();
        h.update(&tar);
        for (k, v) in &build_args {
            h.update(format!("\0{k}={v}").as_bytes());
        }
        h.update(format!("\0base={base_id}").as_bytes());
        let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let content_tag = format!("{repo}:{}", &digest[..16]);
        let tags = vec![content_tag.clone(), args.tag.clone()];

        if !args.force
            && let Some(id) = engine.image_id(&content_tag).await?
        {
            if engine.image_id(&args.tag).await?.as_deref() != Some(id.as_str()) {
                engine.build_tag(&id, &args.tag).await?;
            }
            eprintln!(
                "{content_tag} is up to date ({} files, context sha256 {}); tagged {}",
                files.len(),
                &digest[..16],
                args.tag
            );
            println!("{content_tag}");
            return Ok(Exit::Success);
        }
        eprintln!(
            "building {content_tag} from {} files ({} KiB) on {base}",
            files.len(),
            tar.len() / 1024
        );
        let started = std::time::Instant::now();
        let args_map: HashMap<String, String> = build_args.into_iter().collect();
        let mut steps = steps::Steps::new(crate::logging::output_mode(), &base);
        let built = engine
            .build(tar, DOCKERFILE, &tags, &args_map, |line| steps.line(line))
            .await;
        let id = match built {
            Ok(id) => {
                steps.finish();
                id
            }
            Err(e) => {
                steps.fail();
                return Err(e);
            }
        };
        eprintln!(
            "built {content_tag} ({}) in {:.0}s; tagged {}",
            crate::docker::short(id.trim_start_matches("sha256:")),
            started.elapsed().as_secs_f64(),
            args.tag
        );
        println!("{content_tag}");
        Ok(Exit::Success)
    })
}

/// `ARG BASE_IMAGE=…`'s default in the Dockerfile.
fn default_base(dockerfile: &str) -> String {
    dockerfile
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("ARG BASE_IMAGE=")
                .map(|v| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| DEFAULT_BASE.to_string())
}

/// The files of the context, sorted, relative to `root`; caches and
/// build leftovers excluded.
fn context_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for dir in CONTEXT_DIRS {
        let abs = root.join(dir);
        if !abs.is_dir() {
            return Err(hinted(
                format!("`{}` is not a directory", abs.display()),
                "run `tb image build` from the project directory, or pass --context DIR",
            ));
        }
        walk(root, &abs, &mut out)?;
    }
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("failed to read `{}`", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if matches!(
            name.as_str(),
            "__pycache__" | ".pytest_cache" | ".mypy_cache" | ".ruff_cache" | "build" | "dist" | ".venv"
        ) || name.ends_with(".egg-info")
            || name.ends_with(".pyc")
        {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() {
            out.push(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
    Ok(())
}

/// A reproducible tar: fixed order, times, owners; modes kept (the
/// executable bit matters).
fn context_tar(root: &Path, files: &[PathBuf]) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for rel in files {
        let abs = root.join(rel);
        let data = std::fs::read(&abs).with_context(|| format!("failed to read `{}`", abs.display()))?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&abs)?.permissions());
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(if mode & 0o111 != 0 { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, rel, data.as_slice())?;
    }
    Ok(builder.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_hash_ignores_times_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        for d in CONTEXT_DIRS {
            std::fs::create_dir_all(dir.path().join(d).join("__pycache__")).unwrap();
        }
        std::fs::write(
            dir.path().join("images/trainer/Dockerfile"),
            "ARG BASE_IMAGE=tb-base:bookworm\nFROM ${BASE_IMAGE}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("trainer-py/a.py"), "x = 1\n").unwrap();
        std::fs::write(dir.path().join("trainer-py/__pycache__/a.pyc"), "junk").unwrap();
        let files = context_files(dir.path()).unwrap();
        assert_eq!(
            files,
            vec![
                PathBuf::from("images/trainer/Dockerfile"),
                PathBuf::from("trainer-py/a.py")
            ]
        );
        let one = context_tar(dir.path(), &files).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(dir.path().join("trainer-py/a.py"), "x = 1\n").unwrap();
        assert_eq!(
            one,
            context_tar(dir.path(), &files).unwrap(),
            "a touched file changed the tar"
        );
        std::fs::write(dir.path().join("trainer-py/a.py"), "x = 2\n").unwrap();
        assert_ne!(one, context_tar(dir.path(), &files).unwrap());
        assert_eq!(
            default_base("ARG BASE_IMAGE=tb-base:bookworm\nFROM ${BASE_IMAGE}\n"),
            "tb-base:bookworm"
        );
    }
}
