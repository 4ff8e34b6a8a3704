//! One job, the same container, three ways: a tb batch file, the `docker
//! run` a pueue task runs (the settings tb gives its containers, spelled
//! as flags), and the bare API's create (through tb's own `docker`
//! module). `same_container` checks that a tb container and a `docker run`
//! one were made alike, so that what is compared is the supervisors.

use crate::session::BASE;
use anyhow::{Context, bail};
use std::path::Path;
use std::process::Command;

/// tb's default `shm_size` (docs/batch-file.md).
const SHM_SIZE: u64 = 1 << 30;

/// A batch of `jobs` jobs running `command`, `concurrency` at a time.
pub fn batch_file(name: &str, jobs: usize, concurrency: usize, command: &[&str]) -> String {
    let mut text = header(name, concurrency, command);
    for i in 0..jobs {
        text.push_str(&format!("[[job]]\nname = \"j{i:05}\"\n"));
    }
    text
}

/// A random sweep of `samples` jobs running `true`.
pub fn sweep_file(name: &str, samples: usize) -> String {
    header(name, 1, &["true"])
        + &format!(
            "[[job]]\nname = \"rnd\"\n[job.sweep]\nmethod = \"random\"\nsamples = {samples}\nseed = 1\n\
             \"env.SEED\" = {{ int = [0, 1000000000] }}\n"
        )
}

fn header(name: &str, concurrency: usize, command: &[&str]) -> String {
    format!(
        "[batch]\nname = \"{name}\"\nconcurrency = {concurrency}\ndownloads = \"./downloads\"\n\
         [defaults]\nimage = \"{BASE}\"\ngpus = 0\ncommand = {command:?}\n"
    )
}

/// `docker run` with the container tb makes for a job (tb's `docker`
/// module: init, the user, /dev/shm, no new privileges, the `local` log
/// driver and its rotation, the job directory on /out and the downloads
/// cache on /downloads), removed when it exits.
pub fn docker_run(out: &Path, downloads: &Path, labels: &[(String, String)], command: &[&str]) -> Vec<String> {
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut args: Vec<String> = [
        "run",
        "--rm",
        "--init",
        "--network",
        "bridge",
        "--security-opt",
        "no-new-privileges",
        "--log-driver",
        "local",
        "--log-opt",
        "max-size=256m",
        "--log-opt",
        "max-file=4",
    ]
    .map(String::from)
    .into();
    args.extend([
        "--user".into(),
        format!("{uid}:{gid}"),
        "--shm-size".into(),
        SHM_SIZE.to_string(),
        "-v".into(),
        format!("{}:/out", out.display()),
        "-v".into(),
        format!("{}:/downloads", downloads.display()),
    ]);
    for (k, v) in labels {
        args.extend(["--label".into(), format!("{k}={v}")]);
    }
    args.push(BASE.into());
    args.extend(command.iter().map(|s| s.to_string()));
    args
}

/// `docker ARGS` as one `sh -c` line (what pueue runs).
pub fn shell_line(args: &[String]) -> String {
    std::iter::once("docker".to_string())
        .chain(args.iter().map(|a| quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The container tb's `docker` module creates for a job in `out` (the
/// executor's binds, user, /dev/shm and network).
pub fn spec(
    name: String,
    out: &Path,
    downloads: &Path,
    labels: &[(String, String)],
    command: &[&str],
) -> tb::docker::ContainerSpec {
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    tb::docker::ContainerSpec {
        name,
        image: BASE.into(),
        cmd: Some(command.iter().map(|s| s.to_string()).collect()),
        labels: labels.iter().cloned().collect(),
        binds: vec![
            format!("{}:/out", out.display()),
            format!("{}:/downloads", downloads.display()),
        ],
        user: format!("{uid}:{gid}"),
        shm_size: SHM_SIZE,
        network: "bridge".into(),
        ..Default::default()
    }
}

/// What decides how a container runs, as `docker inspect` shows it, with
/// the host side of each bind left out (each job has its own directory).
const COMPARED: [&str; 12] = [
    "/HostConfig/Init",
    "/HostConfig/ShmSize",
    "/HostConfig/SecurityOpt",
    "/HostConfig/LogConfig",
    "/HostConfig/NetworkMode",
    "/HostConfig/Memory",
    "/HostConfig/NanoCpus",
    "/HostConfig/Privileged",
    "/Config/User",
    "/Config/Tty",
    "/Config/OpenStdin",
    "/Config/Image",
];

/// Fails naming each setting in which two inspected containers differ.
pub fn same_container(ia: &serde_json::Value, ib: &serde_json::Value) -> anyhow::Result<()> {
    let mut differ: Vec<String> = COMPARED
        .iter()
        .filter(|p| ia.pointer(p) != ib.pointer(p))
        .map(|p| format!("{p}: {} against {}", show(ia.pointer(p)), show(ib.pointer(p))))
        .collect();
    if bind_targets(ia) != bind_targets(ib) {
        differ.push(format!("binds: {:?} against {:?}", bind_targets(ia), bind_targets(ib)));
    }
    if !differ.is_empty() {
        bail!(
            "containers {} and {} are not made alike: {}",
            ia["Name"],
            ib["Name"],
            differ.join("; ")
        );
    }
    Ok(())
}

fn show(v: Option<&serde_json::Value>) -> String {
    v.map_or("nothing".into(), |v| v.to_string())
}

/// `docker inspect` of one container.
pub fn inspect(container: &str) -> anyhow::Result<serde_json::Value> {
    let out = Command::new("docker").args(["inspect", container]).output()?;
    if !out.status.success() {
        bail!(
            "docker inspect {container} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("docker inspect printed no JSON")?;
    Ok(v[0].clone())
}

fn bind_targets(inspected: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = inspected["HostConfig"]["Binds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| Some(b.as_str()?.split_once(':')?.1.to_string()))
        .collect();
    v.sort();
    v
}

/// The file as tb resolves it: what `tb batch` would run.
#[cfg(test)]
pub fn resolve(text: String) -> tb::settings::Plan {
    let dir = Path::new("/tmp");
    let none = tb::gpu::Inventory {
        ids: vec![],
        source: "the test",
    };
    tb::settings::resolve_text(&dir.join("b.toml"), text, dir, None, &Default::default(), none).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tb_runs_the_batch_s_jobs_with_the_command_in_the_base_image() {
        let plan = resolve(batch_file("b", 3, 2, &["sleep", "2"]));
        assert_eq!(plan.settings.concurrency, 2);
        assert_eq!(plan.jobs.len(), 3);
        assert_eq!(plan.jobs[2].name, "j00002");
        assert_eq!(plan.jobs[0].image, BASE);
        assert_eq!(plan.jobs[0].command, Some(vec!["sleep".to_string(), "2".to_string()]));
        assert_eq!(
            plan.jobs[0].shm_size, SHM_SIZE,
            "tb's default, which docker_run gives too"
        );
    }

    #[test]
    fn tb_expands_the_sweep_into_that_many_jobs() {
        let plan = resolve(sweep_file("s", 10_000));
        assert_eq!(plan.jobs.len(), 10_000);
        assert_eq!(plan.jobs[0].command, Some(vec!["true".to_string()]));
    }

    #[test]
    fn the_shell_line_keeps_every_word_whole() {
        let args = vec![
            "run".to_string(),
            "it's a b".to_string(),
            "a=b".to_string(),
            String::new(),
        ];
        let line = shell_line(&args);
        assert_eq!(line, r"docker run 'it'\''s a b' a=b ''");
        let out = Command::new("sh")
            .args(["-c", &format!("printf '%s|' {}", &line["docker ".len()..])])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "run|it's a b|a=b||");
    }

    #[test]
    fn containers_differ_in_the_settings_compared_and_not_in_where_their_binds_come_from() {
        let a = serde_json::json!({"Name": "/a", "HostConfig": {"Init": true, "ShmSize": 1, "Binds": ["/x/1:/out", "/d:/downloads"]}, "Config": {"User": "1:1"}});
        let mut b = a.clone();
        b["Name"] = "/b".into();
        b["HostConfig"]["Binds"] = serde_json::json!(["/d:/downloads", "/y/2:/out"]);
        same_container(&a, &b).unwrap();
        b["HostConfig"]["Init"] = false.into();
        b["HostConfig"]["Binds"] = serde_json::json!(["/y/2:/out"]);
        let err = same_container(&a, &b).unwrap_err().to_string();
        assert!(err.contains("/HostConfig/Init: true against false"), "{err}");
        assert!(err.contains("binds:"), "{err}");
        assert!(!err.contains("ShmSize"), "{err}");
    }

    #[test]
    fn docker_run_mounts_the_job_directory_and_labels_the_container() {
        let labels = [("tb.bench".to_string(), "1".to_string())];
        let args = docker_run(Path::new("/o"), Path::new("/d"), &labels, &["true"]);
        let at = |s: &str| args.iter().position(|a| a == s).unwrap();
        assert_eq!(args[at("-v") + 1], "/o:/out");
        assert_eq!(args[at("--label") + 1], "tb.bench=1");
        assert_eq!(args[args.len() - 2..], [BASE.to_string(), "true".to_string()]);
    }
}
