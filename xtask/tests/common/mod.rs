//! What the `cargo xtask` tests share: running the binary and a tiny
//! training run's settings.

#![allow(dead_code)] // each test binary uses its own part

use std::path::Path;
use std::process::{Command, Output};

/// Runs the built `xtask` with `args`, capturing its output.
pub fn xtask<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("run xtask")
}

/// Standard output then standard error, as text.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A tiny run's `--set` arguments: 6 people × 8 images of 64 px under
/// `dir/data`, batch 8, a metrics row per iteration, output in `dir/run`.
pub fn tiny_settings(dir: &Path) -> Vec<String> {
    [
        format!("data.dir=\"{}\"", dir.join("data").display()),
        "data.subjects=6".into(),
        "data.images_per_subject=8".into(),
        "data.size=64".into(),
        "image_size=64".into(),
        "resize=64".into(),
        "batch_size=8".into(),
        "validation_ratio=0.34".into(),
        "log_every=1".into(),
        "progress_seconds=0".into(),
        format!("output=\"{}\"", dir.join("run").display()),
    ]
    .into_iter()
    .flat_map(|setting| ["--set".to_string(), setting])
    .collect()
}
