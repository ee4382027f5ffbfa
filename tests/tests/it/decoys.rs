//! Decoy scans (nmap -D): one scan sent from several addresses at once is
//! reported as one group, every member's event listing all of them, and
//! with `--block` the members are blocked except a protected one (here the
//! server's default gateway, whose address the scan borrowed).

use scanner_tests::{Lab, require_root, scenario::Scenario, traffic};
use scanner_userspace::testing::{Request, call};
use serde_json::{Value, json};

const GATEWAY: &str = "198.18.0.3";
const DECOYS: [&str; 2] = ["198.18.0.6", "198.18.0.7"];

#[test]
fn a_decoy_scan_is_one_group_and_only_its_unprotected_members_are_blocked() -> anyhow::Result<()> {
    if !require_root("a_decoy_scan_is_one_group_and_only_its_unprotected_members_are_blocked") {
        return Ok(());
    }
    let mut sc = Scenario::start_with(
        |lab| {
            lab.server
                .ip(&["route", "add", "default", "via", GATEWAY])?;
            Ok(())
        },
        &[22, 80],
        &[],
        &["--block", "--metrics-listen", "127.0.0.1:9464"],
    )?;
    // Three decoys and the real address (ME), the gateway among the decoys.
    let decoys = format!("{GATEWAY},{},ME,{}", DECOYS[0], DECOYS[1]);
    traffic::nmap(
        &sc.lab.attacker,
        &[
            "-sS",
            "-D",
            &decoys,
            "--max-retries",
            "0",
            "-p1-200",
            Lab::SERVER_V4,
        ],
    )?;
    let mut members = vec![Lab::ATTACKER_V4, GATEWAY, DECOYS[0], DECOYS[1]];
    members.sort_unstable();
    let mut detections = Vec::new();
    for member in &members {
        let detected = sc.wait("scan_detected", member)?;
        assert_eq!(
            detected["decoy_group"],
            json!(members),
            "every member's event lists the whole group: {detected}"
        );
        detections.push(detected);
    }
    for d in &detections {
        let want = if d["source"] == GATEWAY {
            "protected"
        } else {
            "block"
        };
        assert_eq!(d["action"], want, "{d}");
    }
    for member in members.iter().filter(|m| **m != GATEWAY) {
        let blocked = sc.wait("blocked", member)?;
        assert_eq!(blocked["reason"], "scan", "{blocked}");
    }
    let status = call(sc.daemon.socket(), &Request::Status {})?;
    assert_eq!(status["blocks"], 3, "the gateway is not blocked: {status}");
    // `scanner list` shows the group on each member.
    let list = call(sc.daemon.socket(), &Request::List {})?;
    for member in &members {
        let row: Value = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["address"] == *member)
            .cloned()
            .unwrap_or_default();
        assert_eq!(row["decoy_group"], json!(members), "{list}");
    }
    // Counted once in the metrics: one scan, not four.
    let metrics = traffic::scrape_metrics(&sc.lab.server, 9464)?;
    let detections: f64 = metrics
        .iter()
        .filter(|(name, _)| name.starts_with("scanner_detections_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(detections, 1.0, "{metrics:?}");
    let events = sc.stop()?;
    let gateway_blocks = events
        .iter()
        .filter(|e| e["source"] == GATEWAY && e["event"] == "blocked")
        .count();
    assert_eq!(gateway_blocks, 0);
    Ok(())
}
