//! Output capture is byte-exact, however much and however interleaved.

use crate::common::*;

#[test]
fn fifty_mb_stdout_and_five_mb_stderr_interleaved_are_byte_identical() {
    let w = Work::new();
    // The job makes random (non-UTF-8) data, keeps a copy in /out, and
    // writes it in 64 KiB blocks: ten to stdout, one to stderr, and so on.
    let script = "head -c 52428800 /dev/urandom > /out/expected.out && head -c 5242880 /dev/urandom > /out/expected.err && \
        i=0; while [ $i -lt 800 ]; do dd if=/out/expected.out bs=65536 skip=$i count=1 status=none; \
        if [ $((i % 10)) -eq 0 ]; then dd if=/out/expected.err bs=65536 skip=$((i / 10)) count=1 status=none >&2; fi; i=$((i + 1)); done";
    let f = w.batch(
        "big.toml",
        &format!("[batch]\ndownloads = \"./downloads\"\n[defaults]\nimage = \"tb-base:bookworm\"\n[[job]]\nname = \"big\"\ncommand = [\"sh\", \"-c\", {script:?}]\n"),
    );
    let out = w.run(&["batch", f.to_str().unwrap()]);
    assert_exit(&out, 0);
    let dir = w.job_dir("big");
    let got_out = std::fs::read(dir.join("stdout.log")).unwrap();
    let got_err = std::fs::read(dir.join("stderr.log")).unwrap();
    let want_out = std::fs::read(dir.join("expected.out")).unwrap();
    let want_err = std::fs::read(dir.join("expected.err")).unwrap();
    assert_eq!(want_out.len(), 50 << 20);
    assert_eq!(want_err.len(), 5 << 20);
    assert_eq!(got_out.len(), want_out.len(), "stdout.log has the wrong size");
    assert_eq!(got_err.len(), want_err.len(), "stderr.log has the wrong size");
    assert!(got_out == want_out, "stdout.log differs from what the job wrote");
    assert!(got_err == want_err, "stderr.log differs from what the job wrote");
    assert!(
        std::str::from_utf8(&want_out).is_err(),
        "the data should not be valid UTF-8"
    );
}
