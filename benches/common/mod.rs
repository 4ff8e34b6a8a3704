//! What the benches that drive the real `tb` binary share: finding it and
//! checking that the image they run is in the engine.

use std::path::Path;
use std::process::Command;

/// The `tb` binary next to the bench's own (`target/release/tb`), or
/// `TB_BIN`.
pub fn tb_binary() -> String {
    let tb = std::env::var("TB_BIN").unwrap_or_else(|_| {
        let exe = std::env::current_exe().unwrap();
        let target = exe.parent().unwrap().parent().unwrap();
        target.join("tb").display().to_string()
    });
    assert!(
        Path::new(&tb).is_file(),
        "no tb binary at {tb}: build it first (cargo build --release) or set TB_BIN"
    );
    tb
}

/// Stops the bench at once when `image` is missing, saying how to build it.
pub fn require_image(image: &str, make_target: &str) {
    let ok = Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "the image {image} is missing: run `make {make_target}`");
}
