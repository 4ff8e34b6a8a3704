//! The two commands on a machine that lacks something: `make demo` checks
//! the cheap prerequisites first and stops at once, before compiling,
//! with the command to run.

use crate::common::text;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A PATH directory with every program of the usual directories except
/// `hidden`, and a `cargo` that only records that it was called.
fn path_without(dir: &Path, hidden: &[&str]) -> (PathBuf, PathBuf) {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let home_cargo = std::env::var("HOME")
        .map(|h| format!("{h}/.cargo/bin"))
        .unwrap_or_default();
    for from in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        &home_cargo,
    ] {
        let Ok(entries) = std::fs::read_dir(from) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let target = bin.join(&name);
            if hidden.iter().any(|h| name == **h) || name == "cargo" || target.exists() {
                continue;
            }
            symlink(entry.path(), target).unwrap();
        }
    }
    let called = dir.join("cargo-was-called");
    let cargo = bin.join("cargo");
    std::fs::write(&cargo, format!("#!/bin/sh\ntouch '{}'\nexit 1\n", called.display())).unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    (bin, called)
}

fn make(path: &Path, envs: &[(&str, &str)], args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new("make")
        .current_dir(ROOT)
        .args(args)
        .env("PATH", path)
        // Not a sub-make of the `make test` that may be running this test.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .envs(envs.iter().copied())
        .output()
        .expect("run make");
    (out, started.elapsed())
}

#[test]
fn make_demo_without_debootstrap_or_apt_stops_before_compiling_and_names_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, cargo_called) = path_without(dir.path(), &["debootstrap", "apt-get", "apt"]);
    // A base image tag no engine has, so that debootstrap would be needed.
    let (out, took) = make(&bin, &[], &["demo", "BASE_TAG=tb-base:not-built-here"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "make demo went on without debootstrap: {err}");
    assert!(
        !cargo_called.exists(),
        "cargo ran before the prerequisite check stopped: {err}"
    );
    assert!(took < Duration::from_secs(20), "the check took {took:?}");
    assert!(
        err.contains("debootstrap is not installed") && err.contains("run: sudo apt-get install -y debootstrap"),
        "no command to run: {err}"
    );
    assert!(err.contains("BASE_IMAGE="), "no registry alternative named: {err}");
}

#[test]
fn make_test_with_no_engine_stops_before_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, cargo_called) = path_without(dir.path(), &[]);
    let dead = format!("unix://{}/no-engine.sock", dir.path().display());
    let (out, took) = make(&bin, &[("DOCKER_HOST", &dead)], &["test"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "make test went on with no engine: {err}");
    assert!(!cargo_called.exists(), "cargo ran with no engine: {err}");
    assert!(took < Duration::from_secs(30), "the check took {took:?}");
    assert!(
        err.contains("the Docker engine is not reachable") && err.contains("run: sudo systemctl start docker"),
        "{err}"
    );
}

#[test]
fn the_prerequisite_check_passes_on_this_machine() {
    // What the other two tests take away is all there is to miss: on the
    // machine that runs the tests, the same check finds nothing missing.
    let dir = tempfile::tempdir().unwrap();
    let (bin, cargo_called) = path_without(dir.path(), &[]);
    let (out, _) = make(&bin, &[], &["prereqs-test"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("ready for make test"));
    assert!(!cargo_called.exists());
}

#[test]
fn every_make_targets_commands_are_valid_shell() {
    // A comma outside parentheses in `$(call step,"…")` splits the message
    // and leaves a quote open: the target fails only when it is run, after
    // its prerequisites (for `make bench`, minutes of builds). `make -n -B`
    // prints every command a target would run without running it.
    // Through `make()`: run from `make test`, this is a sub-make, which
    // would print "Entering directory" lines among the targets.
    let path = PathBuf::from(std::env::var_os("PATH").unwrap());
    let (help, _) = make(&path, &[], &["help"]);
    assert!(help.status.success(), "{}", text(&help.stderr));
    let targets: Vec<String> = text(&help.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("  make "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert!(targets.iter().any(|t| t == "bench"), "{targets:?}");
    for target in &targets {
        let (commands, _) = make(&path, &[], &["-n", "-B", target]);
        assert!(
            commands.status.success(),
            "make -n {target}: {}",
            text(&commands.stderr)
        );
        let mut bash = Command::new("bash")
            .arg("-n")
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut bash.stdin.take().unwrap(), &commands.stdout).unwrap();
        let checked = bash.wait_with_output().unwrap();
        assert!(
            checked.status.success(),
            "make {target} would run invalid shell: {}",
            text(&checked.stderr)
        );
    }
}
