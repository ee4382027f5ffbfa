//! The soak's figures: the history file and the Local API read back, and
//! the section of BENCHMARKS.md written from the ledger.

use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf};

use anyhow::Context as _;
use scanner_tests::{
    daemon::scanner_binary,
    netns::run,
    soak::{self, Ledger},
};
use serde_json::Value;

use crate::lab::SoakLab;

/// Every event the history file holds.
pub(crate) fn history(lab: &SoakLab) -> anyhow::Result<Vec<Value>> {
    let out = run(std::process::Command::new(scanner_binary()?)
        .arg("history")
        .arg("--history")
        .arg(&lab.history)
        .args(["--since", "1d", "--json"]))?;
    let doc: Value = serde_json::from_slice(&out.stdout).context("scanner history --json")?;
    Ok(doc["events"].as_array().cloned().unwrap_or_default())
}

/// Every alert the soak's machine pushed to the Local API.
pub(crate) fn alerts(lab: &SoakLab) -> anyhow::Result<Vec<Value>> {
    let text = lab.lapi.cscli(
        &lab.net.lapi,
        &["alerts", "list", "-a", "-l", "0", "-o", "json"],
    )?;
    let all: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(all
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["machine_id"] == "soak")
        .cloned()
        .collect())
}

/// Keeps every instance's events and log in `dir` (target/soak), for a
/// look at what the figures came from.
pub(crate) fn keep(ledger: &Ledger, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (n, i) in ledger.instances.iter().enumerate() {
        let events: Vec<String> = i.events.iter().map(Value::to_string).collect();
        std::fs::write(
            dir.join(format!("instance-{}.jsonl", n + 1)),
            events.join("\n") + "\n",
        )?;
        std::fs::write(
            dir.join(format!("instance-{}.log", n + 1)),
            i.log.join("\n") + "\n",
        )?;
    }
    let history: Vec<String> = ledger.history.iter().map(Value::to_string).collect();
    std::fs::write(dir.join("history.jsonl"), history.join("\n") + "\n")?;
    std::fs::write(
        dir.join("alerts.json"),
        Value::Array(ledger.alerts.clone()).to_string(),
    )?;
    Ok(())
}

/// Writes the soak's section into BENCHMARKS.md (in `$BENCH_OUT`, else
/// the workspace) and prints it; an error when a check is missed.
pub(crate) fn write(ledger: &Ledger, minutes: u64) -> anyhow::Result<()> {
    let checks = ledger.checks();
    let mut md = String::new();
    writeln!(md, "{}", soak::BEGIN)?;
    writeln!(md, "## Soak: everything at once for {minutes} minutes\n")?;
    let a = &ledger.actions;
    writeln!(
        md,
        "`cargo xtask soak --minutes {minutes}`: the daemon (release build) on a server of a bridged lab, \
         with `--block --block-ttl 90s` (`idle_timeout` 60 s: a source is forgotten before its block lapses, as at the defaults), history and the long memory in it (`[slow]`, its defaults: every flood's 50,000 sources remembered), JSON events and a real CrowdSec 1.4.6 Local API \
         (bouncer and machine, its outbox on disk). At once: a benign client (an HTTP and a UDP request \
         every 250 ms, a session held open and used every 5 s); {} real scans cycling through every \
         family (nmap -sS, -sT, -sF, -sN, -sX, -sM, -sA, -sW, -sU, -sY, -sO, -sS -f, -6 -sS, masscan; \
         ports 1-200, each from an address and a /24 or /48 of its own); {} spoofed floods of 50,000 SYNs, \
         one from each of 50,000 addresses of 198.19.0.0/16, to random ports ({} frames); the Local API stopped for 30 s {} times; a SIGHUP \
         every minute ({}, each flipping the `[crowdsec]` pull interval, so the fleet tasks start again on \
         their outbox); a second watched interface removed and added again {} times; {} restarts by SIGTERM \
         and {} kill -9, each just after a detection. RSS and open descriptors sampled every 5 s; \
         warm-up {} s.\n",
        ledger.scans.len(),
        a.bursts,
        a.flood_frames,
        a.lapi_restarts,
        a.sighups,
        a.flaps,
        a.restarts,
        a.kills,
        ledger.warmup.as_secs()
    )?;
    writeln!(md, "| check | measured | |\n| --- | --- | --- |")?;
    for c in &checks {
        writeln!(
            md,
            "| {} | {} | {} |",
            c.what,
            c.measured.replace('|', "/"),
            if c.met { "met" } else { "missed" }
        )?;
    }
    writeln!(
        md,
        "\n| family | scans | kind reported | reported once (event, history, alert) |\n| --- | ---: | --- | ---: |"
    )?;
    let mut families: BTreeMap<&str, (usize, Vec<String>, usize)> = BTreeMap::new();
    for s in ledger.scan_reports() {
        let f = families.entry(s.family).or_default();
        f.0 += 1;
        if !f.1.contains(&s.kind) {
            f.1.push(s.kind.clone());
        }
        if s.events == 1 && s.history == 1 && s.alerts == 1 {
            f.2 += 1;
        }
    }
    for (family, (n, kinds, once)) in &families {
        writeln!(md, "| {family} | {n} | {} | {once} |", kinds.join(", "))?;
    }
    writeln!(
        md,
        "\n| instance | ended by | samples | RSS first (KiB) | RSS last | RSS peak | fds first | fds peak |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    for (n, i) in ledger.instances.iter().enumerate() {
        let rss = i.samples.iter().map(|s| s.1);
        let fds = i.samples.iter().map(|s| s.2);
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            n + 1,
            i.end,
            i.samples.len(),
            i.samples.first().map_or(0, |s| s.1),
            i.samples.last().map_or(0, |s| s.1),
            rss.max().unwrap_or(0),
            i.samples.first().map_or(0, |s| s.2),
            fds.max().unwrap_or(0)
        )?;
    }
    if let Some(longest) = ledger.instances.iter().max_by_key(|i| i.samples.len()) {
        let minutes: Vec<String> = longest
            .samples
            .iter()
            .step_by(12)
            .map(|(t, rss, fds)| format!("{:.0} min {rss} KiB {fds} fds", t / 60.0))
            .collect();
        writeln!(
            md,
            "\nThe longest instance, a sample a minute (minutes from the soak's start): {}.",
            minutes.join("; ")
        )?;
    }
    let failures: Vec<&str> = ledger
        .scans
        .iter()
        .filter_map(|s| s.error.as_deref())
        .collect();
    if !failures.is_empty() {
        writeln!(md, "\nScans whose tool failed: {}.", failures.join("; "))?;
    }
    write!(md, "{}", soak::END)?;

    let out = std::env::var_os("BENCH_OUT").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
        PathBuf::from,
    );
    keep(ledger, &out.join("target/soak"))?;
    let path = out.join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, soak::splice(&old, &md))
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("{md}\nwrote {}", path.display());
    let missed = checks.iter().filter(|c| !c.met).count();
    anyhow::ensure!(
        missed == 0,
        "{missed} of {} checks missed (BENCHMARKS.md says which)",
        checks.len()
    );
    Ok(())
}
