//! Events in the systemd journal, through its native protocol, read back
//! with `journalctl -o json` from a real systemd-journald.

use std::time::Duration;

use scanner_tests::{Lab, journald, require_root, scenario::Scenario};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn field<'a>(e: &'a Value, name: &str) -> &'a str {
    e[name].as_str().unwrap_or("")
}

#[test]
fn events_reach_the_journal_with_structured_fields() -> anyhow::Result<()> {
    if !require_root("events_reach_the_journal_with_structured_fields") {
        return Ok(());
    }
    let _journal = journald::Journald::ensure()?;
    let dir = tempdir()?;
    let config = dir.join("scanner.toml");
    std::fs::write(&config, "[response]\nblock_ttl = \"3s\"\n")?;
    let config_str = config.to_string_lossy().into_owned();
    let mut sc = Scenario::start(
        &[22, 80],
        &[],
        &["--log", "journal", "--block", "--config", &config_str],
    )?;
    let pid = format!("_PID={}", sc.daemon.pid());
    let src = Lab::ATTACKER_V4;
    let by_source = format!("SCANNER_SOURCE={src}");

    sc.answered(None, "1-200")?;
    sc.wait("scan_detected", src)?;
    sc.wait("blocked", src)?;
    // `journalctl -t scanner SCANNER_SOURCE=...` finds the detection.
    let entries = journald::wait_entries(
        &["-t", "scanner", &by_source, &pid],
        |e| field(e, "SCANNER_EVENT") == "blocked",
        WAIT,
    )?;
    let detected = entries
        .iter()
        .find(|e| field(e, "SCANNER_EVENT") == "scan_detected")
        .ok_or_else(|| anyhow::anyhow!("no scan_detected entry in {entries:#?}"))?;
    assert_eq!(field(detected, "PRIORITY"), "4", "detections are warnings");
    assert_eq!(field(detected, "SYSLOG_IDENTIFIER"), "scanner");
    assert_eq!(field(detected, "SCANNER_KIND"), "syn");
    assert_eq!(field(detected, "SCANNER_IFACE"), Lab::SERVER_IF);
    assert_eq!(field(detected, "SCANNER_ACTION"), "block");
    assert!(field(detected, "SCANNER_PORTS").parse::<u32>()? >= 4);
    assert!(field(detected, "SCANNER_PROBES").parse::<u32>()? >= 4);
    assert!(!field(detected, "SCANNER_TOP_PORTS").is_empty());
    let message = field(detected, "MESSAGE");
    assert!(
        message.contains(src) && message.contains("port scan"),
        "{message}"
    );
    let blocked = entries
        .iter()
        .find(|e| field(e, "SCANNER_EVENT") == "blocked")
        .ok_or_else(|| anyhow::anyhow!("no blocked entry"))?;
    assert_eq!(field(blocked, "PRIORITY"), "5", "blocks are notices");
    assert_eq!(field(blocked, "SCANNER_ACTION"), "block");

    // The block expires: an unblock entry with its reason.
    sc.wait("unblocked", src)?;
    let entries = journald::wait_entries(
        &["-t", "scanner", &by_source, &pid, "SCANNER_EVENT=unblocked"],
        |e| field(e, "SCANNER_REASON") == "expired",
        WAIT,
    )?;
    assert!(
        entries
            .iter()
            .any(|e| field(e, "SCANNER_ACTION") == "unblock"),
        "{entries:#?}"
    );

    // A broken config on SIGHUP is an error entry; the daemon goes on.
    std::fs::write(&config, "[response]\nblock_ttl = \"soon\"\n")?;
    sc.daemon.signal(libc::SIGHUP)?;
    let rejected = journald::wait_entries(
        &["-t", "scanner", &pid, "SCANNER_EVENT=config_rejected"],
        |_| true,
        WAIT,
    )?;
    let rejected = rejected
        .first()
        .ok_or_else(|| anyhow::anyhow!("no config_rejected entry"))?;
    assert_eq!(field(rejected, "PRIORITY"), "3", "errors are err");
    assert!(
        field(rejected, "MESSAGE").contains("block_ttl"),
        "{rejected}"
    );

    sc.stop()?;
    let lifecycle = journald::wait_entries(
        &["-t", "scanner", &pid],
        |e| field(e, "SCANNER_EVENT") == "daemon_stopped",
        WAIT,
    )?;
    let events: Vec<&str> = lifecycle
        .iter()
        .map(|e| field(e, "SCANNER_EVENT"))
        .collect();
    for want in ["attached", "daemon_started", "detached", "daemon_stopped"] {
        assert!(events.contains(&want), "{want} missing from {events:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn log_journal_without_a_journal_is_a_clear_error() -> anyhow::Result<()> {
    // No root needed: the check comes before anything is loaded.
    let out = std::process::Command::new(scanner_tests::daemon::scanner_binary()?)
        .args(["run", "--iface", "scn-no-such-if", "--log", "journal"])
        .env("SCANNER_JOURNAL_SOCKET", "/nonexistent/socket")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no journal socket at /nonexistent/socket"),
        "{stderr}"
    );
    Ok(())
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("scanner-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
