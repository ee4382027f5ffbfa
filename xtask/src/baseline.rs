//! The XDP program as it was before single-probe sources were gathered by
//! prefix (issue 22's "today"), built from that commit for `cargo xtask
//! bench`, which measures it beside this build's in the same rounds.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::shell;

/// The last commit before prefix slots (173e372 and the work before it).
pub(crate) const COMMIT: &str = "5460a810eddcdc054c6d6f6e2a283f7a417b03e2";

/// The baseline's object file, built once (the old tree's own build script
/// makes it, in target/baseline) and kept.
pub(crate) fn elf() -> anyhow::Result<PathBuf> {
    let dir = shell::workspace_root().join("target/baseline");
    let short = &COMMIT[..7];
    let elf = dir.join(format!("scanner-{short}.o"));
    if elf.exists() {
        return Ok(elf);
    }
    let tree = dir.join(short);
    if !tree.join("Cargo.toml").exists() {
        std::fs::create_dir_all(&tree).with_context(|| format!("creating {}", tree.display()))?;
        let archive = Command::new("git")
            .arg("-C")
            .arg(shell::workspace_root())
            .args(["archive", "--format=tar", COMMIT])
            .output()
            .context("running git archive")?;
        if !archive.status.success() {
            bail!(
                "git archive {short}: {} (a shallow clone lacks the baseline commit)",
                String::from_utf8_lossy(&archive.stderr).trim()
            );
        }
        let tar = tree.join("baseline.tar");
        std::fs::write(&tar, &archive.stdout)?;
        shell::status(
            Command::new("tar")
                .arg("-xf")
                .arg(&tar)
                .arg("-C")
                .arg(&tree),
        )?;
        let _ = std::fs::remove_file(&tar);
    }
    println!("bench: building the baseline program ({short})");
    let target = dir.join("target");
    shell::status(
        shell::cargo()
            .current_dir(&tree)
            .args([
                "check",
                "--package",
                "scanner-userspace",
                "--bin",
                "scanner",
            ])
            .env("CARGO_TARGET_DIR", &target),
    )?;
    // `check` runs the build script, which leaves the object in its
    // OUT_DIR (the newest one); nothing else needs building.
    let built = std::fs::read_dir(target.join("debug/build"))?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("scanner-userspace-")
        })
        .map(|e| e.path().join("out/scanner"))
        .filter(|p| p.exists())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .context("the baseline build left no XDP object")?;
    std::fs::copy(&built, &elf).with_context(|| format!("copying {}", built.display()))?;
    Ok(elf)
}
