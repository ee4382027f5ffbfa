//! `cargo xtask fuzz [TARGET] [--time SECONDS]`: coverage-guided fuzzing of
//! the parsers that read what others wrote (scanner-userspace/fuzz, one
//! libFuzzer target each, calling `scanner_userspace::fuzzing`), with
//! cargo-fuzz on the nightly toolchain. Each target runs for the time
//! given, its corpus is minimised (`cargo fuzz cmin`) so what is committed
//! stays small, and a table says what each run did: executions, the
//! coverage libFuzzer reached, the corpus, and any crash (its input is in
//! scanner-userspace/fuzz/artifacts/TARGET). `cargo test` replays every
//! committed corpus without nightly.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::{setup, shell};

/// The cargo-fuzz release installed on first use.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The fuzz crate (its own workspace).
fn fuzz_dir() -> PathBuf {
    shell::workspace_root().join("scanner-userspace/fuzz")
}

/// The targets, from `fuzz_targets/NAME.rs`.
fn targets() -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// What one run did, from libFuzzer's last lines.
#[derive(Debug, Default, PartialEq)]
struct Run {
    executions: u64,
    per_second: u64,
    coverage: u64,
    features: u64,
    corpus: String,
}

/// Reads `-print_final_stats=1`'s `stat::` lines and the last status line
/// (`#N DONE cov: C ft: F corp: N/SIZE ...`).
fn parse_run(log: &str) -> Run {
    let mut run = Run::default();
    let stat = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    run.executions = stat("stat::number_of_executed_units:").unwrap_or(0);
    run.per_second = stat("stat::average_exec_per_sec:").unwrap_or(0);
    if let Some(last) = log
        .lines()
        .rev()
        .find(|l| l.starts_with('#') && l.contains("cov:"))
    {
        let mut words = last.split_whitespace();
        while let Some(w) = words.next() {
            match w {
                "cov:" => run.coverage = words.next().and_then(|v| v.parse().ok()).unwrap_or(0),
                "ft:" => run.features = words.next().and_then(|v| v.parse().ok()).unwrap_or(0),
                "corp:" => run.corpus = words.next().unwrap_or_default().to_owned(),
                _ => {}
            }
        }
    }
    run
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    shell::ensure_cargo_tool("fuzz", "fuzz", "cargo-fuzz", CARGO_FUZZ_VERSION)
}

/// `cargo +nightly fuzz SUBCOMMAND TARGET` on the fuzz crate.
fn cargo_fuzz(subcommand: &str, target: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz", subcommand, "--fuzz-dir"])
        .arg(fuzz_dir())
        .arg(target)
        .current_dir(shell::workspace_root());
    cmd
}

pub(crate) fn fuzz(only: Option<&str>, seconds: u64) -> anyhow::Result<()> {
    // The fuzz crate builds scanner-userspace, and with it the XDP program.
    setup::setup(setup::Need::Build)?;
    ensure_cargo_fuzz()?;
    let all = targets()?;
    let chosen: Vec<String> = match only {
        Some(t) if all.iter().any(|a| a == t) => vec![t.to_owned()],
        Some(t) => bail!("no fuzz target {t:?}: the targets are {}", all.join(", ")),
        None => all,
    };
    let mut rows = Vec::new();
    for target in &chosen {
        println!("fuzz: {target} for {seconds} s");
        let began = std::time::Instant::now();
        let out = cargo_fuzz("run", target)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-print_final_stats=1",
            ])
            .output()
            .with_context(|| format!("running cargo fuzz run {target}"))?;
        // The build included: a crash ends the run early.
        let ran = began.elapsed().as_secs();
        let log = String::from_utf8_lossy(&out.stderr);
        let run = parse_run(&log);
        let found = if out.status.success() {
            "none".to_owned()
        } else {
            // The panic and where, then how to reproduce it.
            let lines: Vec<&str> = log.lines().collect();
            let from = lines
                .iter()
                .position(|l| l.contains("panicked at") || l.contains("ERROR: AddressSanitizer"))
                .unwrap_or(lines.len().saturating_sub(30));
            eprintln!(
                "{}",
                lines[from..]
                    .iter()
                    .take(40)
                    .copied()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            format!("crash ({}), see fuzz/artifacts/{target}", out.status)
        };
        shell::status(&mut cargo_fuzz("cmin", target))?;
        rows.push((target.clone(), ran, run, found));
    }
    println!(
        "\n| target | seconds (with the build) | executions | exec/s | coverage (cov) | features (ft) | corpus | found |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |");
    for (target, ran, r, found) in &rows {
        println!(
            "| {target} | {ran} | {} | {} | {} | {} | {} | {found} |",
            r.executions, r.per_second, r.coverage, r.features, r.corpus
        );
    }
    if rows.iter().any(|(_, _, _, found)| found != "none") {
        bail!("a fuzz target crashed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_figures_are_read_from_libfuzzers_last_lines() {
        let log = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 11 corp: 3/30b exec/s: 0 rss: 40Mb\n\
                   #123456\tDONE   cov: 1234 ft: 5678 corp: 345/12Kb lim: 4096 exec/s: 2057 rss: 512Mb\n\
                   Done 123456 runs in 60 second(s)\n\
                   stat::number_of_executed_units: 123456\nstat::average_exec_per_sec:     2057\n";
        assert_eq!(
            parse_run(log),
            Run {
                executions: 123_456,
                per_second: 2057,
                coverage: 1234,
                features: 5678,
                corpus: "345/12Kb".into(),
            }
        );
        assert_eq!(parse_run(""), Run::default());
    }

    #[test]
    fn the_targets_are_the_fuzz_crates_files() {
        let t = targets().unwrap();
        assert!(t.contains(&"control_request".to_owned()), "{t:?}");
        assert_eq!(t.len(), 6, "{t:?}");
    }
}
