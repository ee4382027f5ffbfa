//! Builds the XDP program (scanner-ebpf) for the BPF target with the nightly
//! toolchain and bpf-linker, and leaves the object in OUT_DIR for
//! `include_bytes_aligned!`. `cargo xtask setup` installs what this needs.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "scanner-ebpf")
        .ok_or_else(|| anyhow!("scanner-ebpf package not found in the workspace"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("scanner-ebpf manifest has no parent"))?;
    // The program also compiles scanner-common (the parser and the map types).
    let common = root
        .parent()
        .ok_or_else(|| anyhow!("workspace root not found"))?
        .join("scanner-common");
    println!("cargo:rerun-if-changed={common}");
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
        .context("building the XDP program: run `cargo xtask setup` if bpf-linker or the nightly rust-src is missing")
}
