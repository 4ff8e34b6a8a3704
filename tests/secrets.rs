//! A `pass_env` secret reaches its container and nothing tb prints: not
//! stderr at the highest verbosity (where the Docker client logs the
//! requests it sends), not `supervisor.log`, not an error message.

use crate::common::*;
use sha2::{Digest, Sha256};

#[test]
fn a_pass_env_secret_reaches_the_container_and_no_log_at_any_verbosity() {
    let w = Work::new();
    // Quotes, a backslash and a non-ASCII letter: each log escapes them its
    // own way. The marker must show up nowhere.
    let marker = format!("Qz{}vK", std::process::id());
    let secret = format!("tok-\"{marker}\"\\ü-9c1e");
    let f = w.batch(
        "secret.toml",
        "[batch]\ndownloads = \"./downloads\"\non_finish = [\"sh\", \"-c\", \"echo \\\"notified with $API_TOKEN\\\"\"]\n\
         [defaults]\nimage = \"tb-base:bookworm\"\npass_env = [\"API_TOKEN\"]\n\
         [[job]]\nname = \"a\"\ncommand = [\"sh\", \"-c\", \"printf %s \\\"$API_TOKEN\\\" | sha256sum | cut -d' ' -f1\"]\n",
    );
    let out = w
        .tb()
        .args(["-vv", "batch", f.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .env("API_TOKEN", &secret)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let want: String = Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(w.stdout_of("a").trim(), want, "the container did not get the secret");

    let err = text(&out.stderr);
    assert!(!err.contains(&marker), "the secret is on stderr");
    assert!(
        err.contains("\"Env\":[\"TB_BATCH="),
        "the request that carries it was not logged: the test proved nothing"
    );
    // on_finish runs with tb's environment, and its output is logged.
    assert!(err.contains("on_finish: notified with ***"), "{err}");
    let log = std::fs::read_to_string(w.batch_dir().join("supervisor.log")).unwrap();
    assert!(!log.contains(&marker), "the secret is in supervisor.log");
    assert!(log.contains("on_finish: notified with ***"), "{log}");

    // An error message that quotes it.
    let out = w
        .tb()
        .args(["retry", "--job", &secret])
        .env("API_TOKEN", &secret)
        .output()
        .unwrap();
    assert_exit(&out, 2);
    let err = text(&out.stderr);
    assert!(err.contains("has no job `***`"), "{err}");
    assert!(!err.contains(&marker), "{err}");
}
