//! An interface removed while attached: the daemon says so, keeps watching
//! the others, and attaches again when it comes back (unless told not to,
//! and then it exits once nothing is left to watch).

use std::time::Duration;

use scanner_tests::{Daemon, Lab, require_root, scenario::Scenario, traffic};

const EXTRA_IF: &str = "veth-x0";

fn add_extra_pair(lab: &Lab) -> anyhow::Result<()> {
    lab.server.ip(&[
        "link", "add", EXTRA_IF, "type", "veth", "peer", "name", "veth-x1",
    ])?;
    lab.server.ip(&["link", "set", EXTRA_IF, "up"])?;
    lab.server.ip(&["link", "set", "veth-x1", "up"])?;
    Ok(())
}

#[test]
fn a_removed_interface_is_reported_and_reattached_when_it_returns() -> anyhow::Result<()> {
    if !require_root("a_removed_interface_is_reported_and_reattached_when_it_returns") {
        return Ok(());
    }
    let mut sc = Scenario::start_with(
        add_extra_pair,
        &[],
        &[],
        // Reattaching is the default: no flag needed.
        &["--iface", EXTRA_IF],
    )?;
    sc.daemon.wait_attached(EXTRA_IF)?;

    sc.lab.server.ip(&["link", "del", EXTRA_IF])?;
    let removed = sc.daemon.wait_for_event(
        |e| e["event"] == "detached" && e["iface"] == EXTRA_IF,
        Duration::from_secs(30),
    )?;
    assert_eq!(removed["reason"], "removed", "{removed}");

    // The other interface is still watched.
    traffic::nmap(
        &sc.lab.attacker,
        &["-sS", "--max-retries", "0", "-p1-50", Lab::SERVER_V4],
    )?;
    sc.wait("scan_detected", Lab::ATTACKER_V4)?;

    add_extra_pair(&sc.lab)?;
    let back = sc.daemon.wait_for_event(
        |e| e["event"] == "attached" && e["iface"] == EXTRA_IF && e["reason"] == "reappeared",
        Duration::from_secs(30),
    )?;
    assert!(back["mode"].is_string(), "{back}");
    let link = sc.lab.server.ip(&["-j", "-d", "link", "show", EXTRA_IF])?;
    let json: serde_json::Value = serde_json::from_slice(&link.stdout)?;
    assert!(
        json[0]["xdp"]["prog"]["id"].is_u64(),
        "XDP is attached again: {json}"
    );
    sc.stop()?;
    Ok(())
}

#[test]
fn with_no_reattach_the_daemon_exits_once_nothing_is_watched() -> anyhow::Result<()> {
    if !require_root("with_no_reattach_the_daemon_exits_once_nothing_is_watched") {
        return Ok(());
    }
    let lab = Lab::new()?;
    add_extra_pair(&lab)?;
    let mut d = Daemon::start(
        &lab.server,
        &[
            "run",
            "--iface",
            EXTRA_IF,
            "--events",
            "json",
            "--poll-interval",
            "200ms",
            "--no-reattach",
        ],
    )?;
    d.wait_attached(EXTRA_IF)?;
    lab.server.ip(&["link", "del", EXTRA_IF])?;
    let removed = d.wait_for_event(
        |e| e["event"] == "detached" && e["iface"] == EXTRA_IF,
        Duration::from_secs(30),
    )?;
    assert_eq!(removed["reason"], "removed", "{removed}");
    let status = d.wait_status(Duration::from_secs(30))?;
    assert_eq!(status.code(), Some(1), "{}", d.log_tail());
    let stopped = d
        .events()
        .into_iter()
        .find(|e| e["event"] == "daemon_stopped")
        .unwrap_or_default();
    assert!(
        stopped["detail"]
            .as_str()
            .is_some_and(|s| s.contains("no watched interface is left")),
        "{stopped}"
    );
    Ok(())
}
