//! Running commands from the workspace root.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

pub(crate) fn workspace_root() -> PathBuf {
    let xtask = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().map(PathBuf::from).unwrap_or(xtask)
}

/// The cargo that runs us, in the workspace root.
pub(crate) fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs `cmd`, its output going to ours; a failure names the command.
pub(crate) fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// A cargo subcommand from crates.io (`cargo SUB`, crate `name`) at
/// `version`: installed (`cargo install --locked`) unless `cargo SUB
/// --version` already says that version. `task` names who asks.
pub(crate) fn ensure_cargo_tool(
    task: &str,
    sub: &str,
    name: &str,
    version: &str,
) -> anyhow::Result<()> {
    let have = Command::new("cargo")
        .args([sub, "--version"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(version));
    if have {
        return Ok(());
    }
    println!("{task}: installing {name} {version}");
    status(Command::new("cargo").args(["install", name, "--locked", "--version", version]))
}

/// Builds the scanner binary and returns its path.
pub(crate) fn build_scanner(release: bool) -> anyhow::Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--package",
        "scanner-userspace",
        "--bin",
        "scanner",
    ]);
    if release {
        cmd.arg("--release");
    }
    status(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    Ok(workspace_root()
        .join("target")
        .join(profile)
        .join("scanner"))
}

/// Runs `cargo test`, echoing its output, and closes with one line totalling
/// every test binary's results.
pub(crate) fn test_status(cmd: &mut Command) -> anyhow::Result<()> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            if let Some(counts) = line.strip_prefix("test result: ") {
                passed += count(counts, "passed");
                failed += count(counts, "failed");
                ignored += count(counts, "ignored");
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// The number before `word` in "ok. 3 passed; 0 failed; ...".
fn count(counts: &str, word: &str) -> u64 {
    let words: Vec<&str> = counts.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].trim_end_matches(';') == word)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_come_from_cargo_result_lines() {
        let line =
            "FAILED. 3 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.1s";
        assert_eq!(count(line, "passed"), 3);
        assert_eq!(count(line, "failed"), 1);
        assert_eq!(count(line, "ignored"), 2);
        assert_eq!(count(line, "skipped"), 0);
    }
}
