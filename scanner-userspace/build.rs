//! Builds the XDP program (scanner-ebpf) for the BPF target with the nightly
//! toolchain and bpf-linker, and leaves the object in OUT_DIR for
//! `include_bytes_aligned!`. `cargo xtask setup` installs what this needs.
//!
//! aya-build relays every line of the nested cargo build as a
//! `cargo:warning`, which cargo replays on every build, even when nothing was
//! rebuilt. Those lines are held back here: shown as warnings only when the
//! build fails, and otherwise printed as plain build-script output, which
//! cargo shows with `-vv`.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, anyhow};

const WARNING: &str = "cargo:warning=";

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
    let (result, held) =
        holding_warnings(|| aya_build::build_ebpf([package], aya_build::Toolchain::default()))?;
    let failed = result.is_err();
    let mut out = std::io::stdout().lock();
    for line in held {
        // Plain output on success (cargo shows it with -vv), warnings on failure.
        let shown = if failed {
            format!("{WARNING}{line}")
        } else {
            line
        };
        writeln!(out, "{shown}").context("writing build output")?;
    }
    result.context(
        "building the XDP program: run `cargo xtask setup` if bpf-linker or the nightly rust-src is missing",
    )
}

/// Runs `f` with this process's stdout going through a pipe: `cargo:warning=`
/// lines are kept (their text returned), every other line (cargo
/// instructions) passes through at once.
fn holding_warnings<T>(f: impl FnOnce() -> T) -> anyhow::Result<(T, Vec<String>)> {
    std::io::stdout().flush().context("flushing stdout")?;
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    // SAFETY: dup of our own stdout; the result is a fresh descriptor we own.
    let saved = unsafe { libc::dup(1) };
    if saved < 0 {
        return Err(std::io::Error::last_os_error()).context("duplicating stdout");
    }
    // SAFETY: `saved` is a valid descriptor nobody else owns.
    let saved = unsafe { OwnedFd::from_raw_fd(saved) };
    let relay_to = saved.try_clone().context("duplicating stdout")?;
    let relay = std::thread::spawn(move || {
        let mut real = std::fs::File::from(relay_to);
        let mut held = Vec::new();
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            match line.strip_prefix(WARNING) {
                Some(text) => held.push(text.to_owned()),
                None => {
                    let _ = writeln!(real, "{line}");
                }
            }
        }
        held
    });
    // SAFETY: point fd 1 at the pipe; `writer` stays open until restored.
    if unsafe { libc::dup2(writer.as_raw_fd(), 1) } < 0 {
        return Err(std::io::Error::last_os_error()).context("redirecting stdout");
    }
    let value = f();
    std::io::stdout().flush().context("flushing stdout")?;
    // SAFETY: put the saved stdout back on fd 1; this closes the pipe's
    // second write end, so with `writer` dropped the relay sees its end.
    if unsafe { libc::dup2(saved.as_raw_fd(), 1) } < 0 {
        return Err(std::io::Error::last_os_error()).context("restoring stdout");
    }
    drop(writer);
    let held = relay
        .join()
        .map_err(|_| anyhow!("the build output relay panicked"))?;
    Ok((value, held))
}
