//! The timing variants of the XDP program (scanner-ebpf's `steps` feature,
//! see scanner_common::step), built as an object of their own for `cargo
//! xtask bench`: the daemon's object has none of the early stops.

use std::{path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::shell;

/// Builds the steps object (cargo rebuilds it only when the sources
/// changed) and returns its path.
pub(crate) fn elf() -> anyhow::Result<PathBuf> {
    let target = shell::workspace_root().join("target/steps");
    // As aya-build builds the daemon's object (scanner-userspace/build.rs),
    // with the feature on.
    let arch = std::env::consts::ARCH;
    let flags = format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf");
    shell::status(
        Command::new("rustup")
            .args(["run", "nightly", "cargo", "build", "--quiet"])
            .args(["--package", "scanner-ebpf", "--bins", "--release"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .args(["--features", "steps"])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(shell::workspace_root())
            .env("CARGO_ENCODED_RUSTFLAGS", flags)
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER"),
    )
    .context("building the XDP program's timing variants")?;
    Ok(target.join("bpfel-unknown-none/release/scanner"))
}
