//! Every family of port scan, with the real tool, between namespaces: each
//! is detected, with the right source and kind, within a handful of probes.
//! The server listens on TCP 22 and 80 and UDP 53, so scans meet open ports.

use scanner_tests::{
    Lab, require_root,
    scenario::{Scenario, about},
    traffic,
};
use scanner_userspace::testing::{Request, call};
use serde_json::Value;

const OPEN_TCP: &[u16] = &[22, 80];
const OPEN_UDP: &[u16] = &[53];

/// Runs `scan` against a fresh scenario and checks the detection of `source`.
pub(crate) fn detected_as(
    source: &str,
    kind: &str,
    scan: impl FnOnce(&Lab) -> anyhow::Result<()>,
) -> anyhow::Result<(Value, Value)> {
    let mut sc = Scenario::start(OPEN_TCP, OPEN_UDP, &[])?;
    scan(&sc.lab)?;
    let detected = sc.wait("scan_detected", source)?;
    let ended = sc.wait("scan_ended", source)?;
    let events = sc.stop()?;
    eprintln!(
        "{kind} scan from {source}: decided after {} ports, latency_us={}",
        detected["decided_after"], detected["latency_us"]
    );
    assert_eq!(ended["kind"], kind, "{ended}");
    // Four closed ports decide; each open port met first (a success for the
    // walk) costs two more trials. The scan of closed ports only is held to
    // 6 in scan_detection.rs.
    let decided_after = detected["decided_after"].as_u64().unwrap_or(u64::MAX);
    let open = detected["open_hits"].as_u64().unwrap_or(0);
    assert!(decided_after <= 4 + 2 * open, "decided late: {detected}");
    assert!(detected["latency_us"].as_u64().is_some(), "{detected}");
    assert_eq!(detected["sources"], 1, "{detected}");
    // Nothing else was reported: no prefix, no other source.
    let others: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "scan_detected" && e["source"] != source)
        .collect();
    assert!(others.is_empty(), "unexpected detections: {others:?}");
    Ok((detected, ended))
}

pub(crate) fn nmap(args: &'static [&'static str]) -> impl FnOnce(&Lab) -> anyhow::Result<()> {
    move |lab| traffic::nmap(&lab.attacker, args).map(drop)
}

/// One scan family: the real tool against a fresh scenario, detected as `$kind`.
macro_rules! family {
    ($name:ident, $source:expr, $kind:literal, $scan:expr) => {
        #[test]
        fn $name() -> anyhow::Result<()> {
            if !require_root(stringify!($name)) {
                return Ok(());
            }
            detected_as($source, $kind, $scan).map(drop)
        }
    };
}

const V4: &str = Lab::ATTACKER_V4;
const V6: &str = Lab::ATTACKER_V6;

family!(
    nmap_connect,
    V4,
    "connect",
    nmap(&["-sT", "-p1-200", "198.18.0.2"])
);
family!(nmap_fin, V4, "fin", nmap(&["-sF", "-p1-200", "198.18.0.2"]));
family!(
    nmap_null,
    V4,
    "null",
    nmap(&["-sN", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_xmas,
    V4,
    "xmas",
    nmap(&["-sX", "-p1-200", "198.18.0.2"])
);
family!(
    nmap_maimon,
    V4,
    "maimon",
    nmap(&["-sM", "-p1-200", "198.18.0.2"])
);
family!(nmap_ack, V4, "ack", nmap(&["-sA", "-p1-200", "198.18.0.2"]));
family!(
    nmap_udp,
    V4,
    "udp",
    nmap(&["-sU", "-p1-30", "--max-retries", "0", "198.18.0.2"])
);
family!(
    nmap_xmas_over_ipv6,
    V6,
    "xmas",
    nmap(&["-6", "-sX", "-p1-200", "2001:db8::2"])
);
family!(
    nmap_udp_over_ipv6,
    V6,
    "udp",
    nmap(&["-6", "-sU", "-p1-30", "--max-retries", "0", "2001:db8::2"])
);
family!(masscan_syn, V4, "syn", |lab: &Lab| traffic::masscan(
    lab, "1-500"
)
.map(drop));
family!(hping3_syn_incrementing_ports, V4, "syn", |lab: &Lab| {
    // SYNs to ports 1, 2, 3, ... : 40 packets, 10 ms apart.
    traffic::tool(
        &lab.attacker,
        30,
        "hping3",
        &[
            "-S",
            "-p",
            "++1",
            "-c",
            "40",
            "-i",
            "u10000",
            Lab::SERVER_V4,
        ],
        &[1],
    )
    .map(drop)
});
// Slow scans: detection does not depend on probes arriving close together.
family!(
    nmap_slow_scan_delay_5s,
    V4,
    "syn",
    nmap(&[
        "-sS",
        "--scan-delay",
        "5s",
        "--max-retries",
        "0",
        "-p1-6",
        "198.18.0.2"
    ])
);
family!(
    nmap_paranoid_timing_t1,
    V4,
    "syn",
    nmap(&["-sS", "-T1", "--max-retries", "0", "-p1-5", "198.18.0.2"])
);

#[test]
fn syn_scan_names_the_open_ports_it_found() -> anyhow::Result<()> {
    if !require_root("syn_scan_names_the_open_ports_it_found") {
        return Ok(());
    }
    let (detected, ended) = detected_as(
        V4,
        "syn",
        nmap(&["-sS", "-p1-1000", "--max-retries", "1", "198.18.0.2"]),
    )?;
    assert_eq!(detected["reason"], "trw", "{detected}");
    assert_eq!(ended["open_ports"], serde_json::json!([22, 80]), "{ended}");
    assert_eq!(ended["open_hits"], 2, "{ended}");
    assert!(
        ended["ports"]
            .as_u64()
            .is_some_and(|p| (990..=1010).contains(&p))
    );
    Ok(())
}

/// Many sources of one prefix, each probing two ports: each source alone is
/// below every threshold, the prefix is not.
fn distributed(sources: &[String], v6: bool, prefix: &str) -> anyhow::Result<()> {
    let mut sc = Scenario::start(OPEN_TCP, OPEN_UDP, &[])?;
    let len = if v6 { 64 } else { 24 };
    let target = if v6 { Lab::SERVER_V6 } else { Lab::SERVER_V4 };
    // Resolve the server's link-layer address first (ARP, or IPv6 neighbour
    // discovery, which on a link up for a moment can take nmap's first tries).
    let mut warm = vec!["-n", "-sn", target];
    if v6 {
        warm.push("-6");
    }
    traffic::tool(&sc.lab.attacker, 30, "nmap", &warm, &[])?;
    for (i, src) in sources.iter().enumerate() {
        sc.lab.add_attacker_address(&format!("{src}/{len}"))?;
        let ports = format!("{},{}", 1000 + 2 * i, 1001 + 2 * i);
        let mut args = vec![
            "-sS",
            "--max-retries",
            "0",
            "-e",
            Lab::ATTACKER_IF,
            "-S",
            src,
        ];
        if v6 {
            args.push("-6");
        }
        args.extend(["-p", &ports, target]);
        traffic::nmap(&sc.lab.attacker, &args)?;
    }
    let detected = sc.wait("scan_detected", prefix)?;
    // `scanner list` shows the distributed scan too.
    let list = call(sc.daemon.socket(), &Request::List {})?;
    let row = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["address"] == prefix)
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["kind"], "distributed", "{list}");
    assert!(row["sources"].as_u64() >= Some(3), "{row}");
    let events = sc.stop()?;
    eprintln!(
        "distributed scan {prefix}: latency_us={}",
        detected["latency_us"]
    );
    assert_eq!(detected["kind"], "distributed", "{detected}");
    assert!(detected["sources"].as_u64() >= Some(3), "{detected}");
    for src in sources {
        let individual = about(&events, src);
        assert!(
            individual.is_empty(),
            "{src} reported alone: {individual:?}"
        );
    }
    // The last end carries the final figures (a slow round of nmap runs can
    // make the scan pause, end, and resume).
    let ended = about(&events, prefix)
        .into_iter()
        .rev()
        .find(|e| e["event"] == "scan_ended")
        .cloned()
        .unwrap_or_default();
    assert_eq!(ended["sources"], sources.len(), "{ended}");
    Ok(())
}

#[test]
fn distributed_scan_over_an_ipv4_prefix() -> anyhow::Result<()> {
    if !require_root("distributed_scan_over_an_ipv4_prefix") {
        return Ok(());
    }
    let sources: Vec<String> = (50..62).map(|n| format!("198.18.0.{n}")).collect();
    distributed(&sources, false, "198.18.0.0/24")
}

#[test]
fn distributed_scan_over_an_ipv6_prefix() -> anyhow::Result<()> {
    if !require_root("distributed_scan_over_an_ipv6_prefix") {
        return Ok(());
    }
    let sources: Vec<String> = (0x50..0x5c).map(|n| format!("2001:db8::{n:x}")).collect();
    distributed(&sources, true, "2001:db8::/64")
}
