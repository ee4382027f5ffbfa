//! End to end: a real nmap SYN scan of 1,000 ports between two namespaces is
//! detected by the XDP program and reported by the daemon as JSON events,
//! over IPv4 and IPv6.

use scanner_tests::{Lab, require_root, scenario::Scenario, traffic};
use serde_json::Value;

/// Scans 1,000 closed ports of the server from `source` and checks what is reported.
fn syn_scan_is_reported(source: &str, target: &str, extra: &[&str]) -> anyhow::Result<()> {
    let mut sc = Scenario::start(&[], &[], &[])?;
    let mut args = vec!["-sS", "-p1-1000", "--max-retries", "1"];
    args.extend_from_slice(extra);
    args.push(target);
    traffic::nmap(&sc.lab.attacker, &args)?;

    let detected = sc.wait("scan_detected", source)?;
    assert_eq!(detected["kind"], "syn", "{detected}");
    assert_eq!(detected["iface"], Lab::SERVER_IF, "{detected}");
    assert!(detected["decided_after"].as_u64() <= Some(6), "{detected}");

    let ended = sc.wait("scan_ended", source)?;
    let ports = ended["ports"].as_u64().unwrap_or(0);
    assert!(
        (990..=1010).contains(&ports),
        "ports within 1% of 1000: {ended}"
    );
    assert!(ended["probes"].as_u64() >= Some(ports), "{ended}");
    assert_eq!(ended["kind"], "syn", "{ended}");
    assert_eq!(ended["open_ports"], serde_json::json!([]), "{ended}");
    let top = ended["top_ports"].as_array().cloned().unwrap_or_default();
    assert!(!top.is_empty() && top.len() <= 10, "{ended}");
    assert!(
        top.iter()
            .all(|p| p.as_u64().is_some_and(|p| (1..=1000).contains(&p))),
        "{ended}"
    );
    assert!(
        ended["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{ended}"
    );

    let events = sc.stop()?;
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "detached" && e["iface"] == Lab::SERVER_IF),
        "no detached event: {events:?}"
    );
    // One detection and one end for the one scan: nothing repeated.
    let count = |name: &str| {
        events
            .iter()
            .filter(|e: &&Value| e["event"] == name && e["source"] == source)
            .count()
    };
    assert_eq!((count("scan_detected"), count("scan_ended")), (1, 1));
    Ok(())
}

#[test]
fn nmap_syn_scan_over_ipv4_is_detected() -> anyhow::Result<()> {
    if !require_root("nmap_syn_scan_over_ipv4_is_detected") {
        return Ok(());
    }
    syn_scan_is_reported(Lab::ATTACKER_V4, Lab::SERVER_V4, &[])
}

#[test]
fn nmap_syn_scan_over_ipv6_is_detected() -> anyhow::Result<()> {
    if !require_root("nmap_syn_scan_over_ipv6_is_detected") {
        return Ok(());
    }
    syn_scan_is_reported(Lab::ATTACKER_V6, Lab::SERVER_V6, &["-6"])
}
