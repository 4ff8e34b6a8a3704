//! `tb image build`: the context hash is the tag, an unchanged context
//! builds nothing, and a failing step is named.

use crate::common::*;
use std::process::Command;

fn context(w: &Work, dockerfile: &str) -> std::path::PathBuf {
    let root = w.path().join("project");
    std::fs::create_dir_all(root.join("images/trainer")).unwrap();
    std::fs::create_dir_all(root.join("trainer-py/src")).unwrap();
    std::fs::write(root.join("images/trainer/Dockerfile"), dockerfile).unwrap();
    std::fs::write(root.join("trainer-py/src/hello.py"), "print('hello')\n").unwrap();
    root
}

#[test]
fn an_unchanged_context_is_a_cache_hit_and_a_change_rebuilds() {
    let w = Work::new();
    let repo = format!("tb-test-image-{}", std::process::id());
    let tag = format!("{repo}:latest");
    let root = context(
        &w,
        "ARG BASE_IMAGE=tb-base:bookworm\nFROM ${BASE_IMAGE}\nCOPY trainer-py/ /opt/tb/trainer-py/\nRUN python3 /opt/tb/trainer-py/src/hello.py\n",
    );
    let build = || w.run(&["image", "build", "--tag", &tag, "--context", root.to_str().unwrap()]);
    let first = build();
    assert_exit(&first, 0);
    let content_tag = text(&first.stdout).trim().to_string();
    assert!(
        content_tag.starts_with(&format!("{repo}:")) && content_tag.len() == repo.len() + 17,
        "{content_tag}"
    );
    // One line per step, in words; the engine's own stream only under -v.
    let said = text(&first.stderr);
    for step in [
        "[2/4] starting from tb-base:bookworm",
        "[3/4] copying trainer-py/",
        "[4/4] RUN python3",
    ] {
        assert!(said.contains(step), "no `{step}` line: {said}");
    }
    assert!(
        !said.contains("Step 3/4 :") && !said.lines().any(|l| l.trim() == "hello"),
        "the engine's stream leaked: {said}"
    );

    let second = build();
    assert_exit(&second, 0);
    assert_eq!(text(&second.stdout).trim(), content_tag);
    assert!(
        text(&second.stderr).contains("is up to date"),
        "{}",
        text(&second.stderr)
    );
    assert!(!text(&second.stderr).contains("Step "), "a cache hit builds nothing");

    std::fs::write(root.join("trainer-py/src/hello.py"), "print('changed')\n").unwrap();
    let third = w.run(&[
        "-v",
        "image",
        "build",
        "--tag",
        &tag,
        "--context",
        root.to_str().unwrap(),
    ]);
    assert!(
        text(&third.stderr).contains("Step 3/4 : COPY trainer-py/") && text(&third.stderr).contains("changed"),
        "-v streams the engine's output: {}",
        text(&third.stderr)
    );
    assert_exit(&third, 0);
    assert_ne!(
        text(&third.stdout).trim(),
        content_tag,
        "a changed file changes the tag"
    );
    let ids = |t: &str| {
        text(
            &Command::new("docker")
                .args(["image", "inspect", "-f", "{{.Id}}", t])
                .output()
                .unwrap()
                .stdout,
        )
    };
    assert_eq!(
        ids(&tag),
        ids(text(&third.stdout).trim()),
        "--tag follows the newest build"
    );
    for t in [content_tag.as_str(), text(&third.stdout).trim(), tag.as_str()] {
        let _ = Command::new("docker").args(["image", "rm", t]).output();
    }
}

#[test]
fn a_failing_step_is_named_and_the_exit_is_non_zero() {
    let w = Work::new();
    let tag = format!("tb-test-image-fail-{}:latest", std::process::id());
    let root = context(
        &w,
        "FROM tb-base:bookworm\nRUN echo fine\nRUN echo broken >&2 && exit 3\n",
    );
    let out = w.run(&["image", "build", "--tag", &tag, "--context", root.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(
        err.contains("error: the image build failed at Step 3/3 : RUN echo broken >&2 && exit 3"),
        "{err}"
    );
    assert!(err.contains("returned a non-zero code: 3"), "{err}");
    // What the step printed is shown above the error.
    assert!(err.contains("the engine's last") && err.contains("  broken"), "{err}");
}

#[test]
fn a_missing_base_image_says_how_to_get_one() {
    let w = Work::new();
    let root = context(&w, "ARG BASE_IMAGE=tb-base:bookworm\nFROM ${BASE_IMAGE}\n");
    let out = w.run(&[
        "image",
        "build",
        "--tag",
        "tb-test-nobase:latest",
        "--context",
        root.to_str().unwrap(),
        "--build-arg",
        "BASE_IMAGE=tb-no-such-base:1",
    ]);
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.contains("the base image `tb-no-such-base:1` is not in the Docker engine"),
        "{err}"
    );
    assert!(err.contains("hint: build it with `make base-image`"), "{err}");
}
