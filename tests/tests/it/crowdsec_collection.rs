//! The CrowdSec collection (packaging/crowdsec) under CrowdSec's own
//! engine: Debian's crowdsec replays syslog lines in scanner's format
//! (`crowdsec -dsn file://... -type syslog -no-api`) through the shipped
//! parser and scenarios, against a real Local API, and `cscli explain`
//! shows the parser taking a line. Timestamps come from the records, so a
//! sweep spread over twenty minutes replays in a second.

use std::time::{Duration, SystemTime};

use scanner_tests::{
    Netns,
    agent::Agent,
    crowdsec::{LAPI_PORT, Lapi},
    require_root,
};
use serde_json::{Value, json};

/// The Local API's address, on the namespace's loopback.
const LAPI: &str = "198.18.0.10";

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A probe record as a file written by rsyslog (or read by the syslog
/// datasource) holds it: `Mmm dd HH:MM:SS HOST scanner[PID]: {json}`.
fn line(at: SystemTime, host: &str, source: &str, port: u16) -> String {
    let ts = humantime::format_rfc3339_millis(at).to_string();
    let month = ts[5..7].parse::<usize>().unwrap_or(1);
    let day = ts[8..10].trim_start_matches('0');
    let prefix = format!("{} {day:>2} {}", MONTHS[month - 1], &ts[11..19]);
    let record = json!({
        "ts": ts, "event": "probe", "host": host, "source": source,
        "destination": "198.18.1.1", "iface": "eth0", "proto": "tcp",
        "port": port, "port_state": "closed", "kind": "syn",
    });
    format!("{prefix} {host} scanner[4242]: {record}\n")
}

/// The alerts' (scenario, source value) pairs.
fn alerts(lapi: &Lapi, ns: &Netns) -> anyhow::Result<Vec<(String, String)>> {
    let all = lapi.alerts(ns)?;
    Ok(all
        .as_array()
        .into_iter()
        .flatten()
        .map(|a: &Value| {
            (
                a["scenario"].as_str().unwrap_or_default().to_owned(),
                a["source"]["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

#[test]
fn the_collection_decides_sweeps_across_servers_and_nothing_less() -> anyhow::Result<()> {
    if !require_root("the_collection_decides_sweeps_across_servers_and_nothing_less") {
        return Ok(());
    }
    let ns = Netns::new("cs")?;
    ns.ip(&["addr", "add", &format!("{LAPI}/32"), "dev", "lo"])?;
    let lapi = Lapi::start(&ns, LAPI, LAPI_PORT)?;
    let agent = Agent::new(&lapi, &ns, "central", "")?;
    let t0 = SystemTime::now() - Duration::from_secs(3600);
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut lines = String::new();
    // A sweep of port 22: five servers, one probe each, 10 s apart.
    for i in 1..=5 {
        lines += &line(at(10 * i), &format!("server-{i}"), "198.18.0.1", 22);
    }
    // Four servers only, twice over: not enough.
    for round in 0..2 {
        for i in 1..=4 {
            lines += &line(
                at(5 * i + 20 * round),
                &format!("server-{i}"),
                "198.18.0.2",
                22 + round as u16,
            );
        }
    }
    // One port across five servers, one every 3 minutes: too slow for
    // horizontal-scan, a port sweep.
    for i in 1..=5 {
        lines += &line(at(180 * i), &format!("server-{i}"), "198.18.0.3", 3389);
    }
    // Ten addresses of 198.18.7.0/24, one probe each of one server.
    for i in 1..=10 {
        lines += &line(at(60 + i), "server-1", &format!("198.18.7.{i}"), 445);
    }
    // IPv6: five servers from one address.
    for i in 1..=5 {
        lines += &line(at(300 + i), &format!("server-{i}"), "2001:db8:5::1", 22);
    }
    // Other events of scanner's are not probes: never counted.
    lines += "Dec  3 10:00:00 server-1 scanner[4242]: {\"event\":\"scan_detected\",\"source\":\"198.18.0.4\"}\n";
    let out = agent.replay(&ns, &lines)?;
    let got = alerts(&lapi, &ns)?;
    let has = |scenario: &str, source: &str| got.iter().any(|(s, v)| s == scenario && v == source);
    assert!(
        has("scanner/horizontal-scan", "198.18.0.1"),
        "{got:?}\n{out}"
    );
    assert!(has("scanner/port-sweep", "198.18.0.1"), "{got:?}");
    assert!(has("scanner/horizontal-scan", "2001:db8:5::1"), "{got:?}");
    assert!(
        !got.iter().any(|(_, v)| v == "198.18.0.2"),
        "four servers are not a sweep: {got:?}"
    );
    assert!(has("scanner/port-sweep", "198.18.0.3"), "{got:?}");
    assert!(!has("scanner/horizontal-scan", "198.18.0.3"), "{got:?}");
    assert!(
        has("scanner/distributed-horizontal", "198.18.7.0/24"),
        "{got:?}"
    );
    assert!(!got.iter().any(|(_, v)| v == "198.18.0.4"), "{got:?}");
    // Every alert carries its ban, as the Local API's profile made it.
    let all = lapi.alerts(&ns)?;
    for a in all.as_array().into_iter().flatten() {
        let d = &a["decisions"][0];
        assert_eq!(d["type"], "ban", "{a}");
        assert_eq!(d["value"], a["source"]["value"], "{a}");
    }
    // cscli explain: the line goes through syslog-logs, then ours.
    let explained = agent.explain(&ns, line(at(0), "server-1", "198.18.0.9", 22).trim_end())?;
    assert!(
        explained.contains("scanner/scanner-logs") && explained.contains("🟢"),
        "{explained}"
    );
    Ok(())
}
