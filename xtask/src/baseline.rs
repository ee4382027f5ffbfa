//! Earlier builds of the XDP program, each built from its commit for
//! `cargo xtask bench`, which measures them beside this build's in the same
//! rounds: the program as it was before single-probe sources were gathered
//! by prefix (issue 22's "today"), and the previous commit's (what a change to
//! the data path is measured against, see [`previous`]).

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::shell;

/// The last commit before prefix slots (173e372 and the work before it).
pub(crate) const COMMIT: &str = "5460a810eddcdc054c6d6f6e2a283f7a417b03e2";

/// What the XDP object is built from: a change to any of these is a change
/// to the program.
const PROGRAM_SOURCES: [&str; 4] = ["scanner-ebpf", "scanner-common", "Cargo.toml", "Cargo.lock"];

/// The commit this build is measured against, with its full hash: HEAD
/// when the working tree changes the program's sources (the change under
/// way, new files too), else HEAD's parent (the last commit's change).
pub(crate) fn previous() -> anyhow::Result<String> {
    let mut status = vec!["status", "--porcelain", "--"];
    status.extend(PROGRAM_SOURCES);
    let changed = !git(&status, "")?.is_empty();
    let (rev, why) = if changed {
        ("HEAD", "")
    } else {
        ("HEAD~1", " (a shallow clone has no parent commit)")
    };
    let hash = git(
        &["rev-parse", "--verify", &format!("{rev}^{{commit}}")],
        why,
    )?;
    Ok(String::from_utf8_lossy(&hash).trim().to_owned())
}

/// A commit's abbreviated hash, as the bench names it.
pub(crate) fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

/// What `git args` printed, run in the workspace; `why` follows its error.
fn git(args: &[&str], why: &str) -> anyhow::Result<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(shell::workspace_root())
        .args(args)
        .output()
        .with_context(|| format!("running git {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "git {}: {}{why}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// The object file of `commit`'s XDP program, built once (the old tree's
/// own build script makes it, in target/baseline) and kept.
pub(crate) fn elf(commit: &str) -> anyhow::Result<PathBuf> {
    let dir = shell::workspace_root().join("target/baseline");
    let short = short(commit);
    let elf = dir.join(format!("scanner-{short}.o"));
    if elf.exists() {
        return Ok(elf);
    }
    let tree = dir.join(short);
    if !tree.join("Cargo.toml").exists() {
        std::fs::create_dir_all(&tree).with_context(|| format!("creating {}", tree.display()))?;
        let archive = git(
            &["archive", "--format=tar", commit],
            " (a shallow clone lacks the commit)",
        )?;
        let tar = tree.join("baseline.tar");
        std::fs::write(&tar, &archive)?;
        shell::status(
            Command::new("tar")
                .arg("-xf")
                .arg(&tar)
                .arg("-C")
                .arg(&tree),
        )?;
        let _ = std::fs::remove_file(&tar);
    }
    println!("bench: building the XDP program of {short}");
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
        .with_context(|| format!("the build of {short} left no XDP object"))?;
    std::fs::copy(&built, &elf).with_context(|| format!("copying {}", built.display()))?;
    Ok(elf)
}
