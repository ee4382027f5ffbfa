//! `[signals] syslog`: every event reaches a syslog collector as an RFC
//! 5424 message carrying its JSON line, over UDP and over TCP (octet
//! counting); a collector that is down costs counted drops, never
//! detection, and gets the events again once it is back. The collector
//! listens in the attacker's namespace, on the lab's address.

use std::{
    io::Read as _,
    net::{TcpListener, UdpSocket},
    time::{Duration, Instant},
};

use scanner_tests::{Lab, TempDir, require_root, scenario::Scenario};
use serde_json::Value;

/// A configuration file that sends events to `url`.
fn config(dir: &TempDir, url: &str) -> anyhow::Result<String> {
    let path = dir.0.join("scanner.toml");
    std::fs::write(&path, format!("[signals]\nsyslog = \"{url}\"\n"))?;
    Ok(path.to_string_lossy().into_owned())
}

/// An RFC 5424 message's MSGID and its MSG parsed as JSON.
fn parse(message: &str) -> anyhow::Result<(String, Value)> {
    anyhow::ensure!(message.starts_with('<'), "no PRI: {message}");
    let fields: Vec<&str> = message.splitn(7, ' ').collect();
    anyhow::ensure!(fields.len() == 7, "not RFC 5424: {message}");
    anyhow::ensure!(fields[0].ends_with(">1"), "not version 1: {message}");
    anyhow::ensure!(fields[3] == "scanner", "APP-NAME: {message}");
    let (sd, msg) = fields[6].split_once(' ').unwrap_or(("", ""));
    anyhow::ensure!(sd == "-", "no structured data expected: {message}");
    Ok((fields[5].to_owned(), serde_json::from_str(msg)?))
}

#[test]
fn events_reach_a_udp_collector_as_rfc5424_json() -> anyhow::Result<()> {
    if !require_root("events_reach_a_udp_collector_as_rfc5424_json") {
        return Ok(());
    }
    let dir = TempDir::new("signals-udp")?;
    let url = format!("udp://{}:5514", Lab::ATTACKER_V4);
    let cfg = config(&dir, &url)?;
    let mut sc = Scenario::start(&[22], &[], &["--config", &cfg])?;
    let collector = sc
        .lab
        .attacker
        .enter(|| UdpSocket::bind((Lab::ATTACKER_V4, 5514)))??;
    collector.set_read_timeout(Some(Duration::from_secs(5)))?;
    sc.answered(None, "1-100")?;
    let detected = sc.wait("scan_detected", Lab::ATTACKER_V4)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 65536];
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no scan_detected at the collector"
        );
        let n = collector.recv(&mut buf)?;
        let (msgid, json) = parse(&String::from_utf8_lossy(&buf[..n]))?;
        if msgid == "scan_detected" {
            assert_eq!(json, detected, "the message is the event's JSON line");
            break;
        }
    }
    sc.stop()?;
    Ok(())
}

#[test]
fn a_tcp_collector_that_is_down_costs_counted_drops_and_gets_events_once_back() -> anyhow::Result<()>
{
    if !require_root("a_tcp_collector_that_is_down_costs_counted_drops_and_gets_events_once_back") {
        return Ok(());
    }
    let dir = TempDir::new("signals-tcp")?;
    let url = format!("tcp://{}:5601", Lab::ATTACKER_V4);
    let cfg = config(&dir, &url)?;
    let mut sc = Scenario::start(
        &[22],
        &[],
        &["--config", &cfg, "--metrics-listen", "127.0.0.1:9465"],
    )?;
    // Nobody listens: detection goes on, and the events are counted lost.
    sc.answered(None, "1-100")?;
    sc.wait("scan_detected", Lab::ATTACKER_V4)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = scanner_tests::traffic::scrape_metrics(&sc.lab.server, 9465)?;
        if m.get("scanner_syslog_dropped_total")
            .copied()
            .unwrap_or(0.0)
            >= 1.0
        {
            assert_eq!(m.get("scanner_syslog_sent_total").copied(), Some(0.0));
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no drop counted: {m:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The collector comes back: a new event reaches it, length-prefixed.
    let listener = sc
        .lab
        .attacker
        .enter(|| TcpListener::bind((Lab::ATTACKER_V4, 5601)))??;
    listener.set_nonblocking(true)?;
    let socket = sc.daemon.socket().to_path_buf();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    let mut stream = loop {
        // One event after another until the sender's backoff lets it in.
        n += 1;
        scanner_tests::daemon::cli_ok(&socket, &["block", &format!("198.18.9.{n}")])?;
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                anyhow::ensure!(Instant::now() < deadline, "the sender never reconnected");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e.into()),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    scanner_tests::daemon::cli_ok(&socket, &["block", "198.18.9.200"])?;
    let mut got = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while !got.contains("198.18.9.200") {
        anyhow::ensure!(Instant::now() < deadline, "no blocked event arrived: {got}");
        let k = stream.read(&mut buf)?;
        anyhow::ensure!(k > 0, "the daemon closed the stream: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..k]));
    }
    // Octet counting: "LEN SP MSG" after "LEN SP MSG".
    let mut rest = got.as_str();
    let mut blocked = None;
    while let Some((len, tail)) = rest.split_once(' ') {
        let len: usize = len.parse()?;
        if tail.len() < len {
            break;
        }
        let (msgid, json) = parse(&tail[..len])?;
        if msgid == "blocked" && json["source"] == "198.18.9.200" {
            blocked = Some(json);
        }
        rest = &tail[len..];
    }
    let blocked = blocked.ok_or_else(|| anyhow::anyhow!("no whole blocked message in {got}"))?;
    assert_eq!(blocked["reason"], "manual", "{blocked}");
    sc.stop()?;
    Ok(())
}

/// Probe records from a UDP collector until `done` says every expected
/// one is in, or the deadline.
fn probe_records(
    collector: &UdpSocket,
    wait: Duration,
    mut done: impl FnMut(&[Value]) -> bool,
) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    let mut records = Vec::new();
    while !done(&records) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "probe records missing; got {records:?}"
        );
        let n = match collector.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        let (msgid, json) = parse(&String::from_utf8_lossy(&buf[..n]))?;
        if msgid == "probe" {
            assert_eq!(json["event"], "probe", "{json}");
            records.push(json);
        }
    }
    Ok(records)
}

fn has(records: &[Value], source: &str, port: u16) -> bool {
    records
        .iter()
        .any(|r| r["source"] == source && r["port"] == port)
}

#[test]
fn undecided_probes_reach_the_collector_once_each_and_clients_do_not() -> anyhow::Result<()> {
    if !require_root("undecided_probes_reach_the_collector_once_each_and_clients_do_not") {
        return Ok(());
    }
    let dir = TempDir::new("signals-probes")?;
    let url = format!("udp://{}:5514", Lab::ATTACKER_V4);
    let cfg = config(&dir, &url)?;
    let mut sc = Scenario::start(&[22], &[], &["--config", &cfg])?;
    let collector = sc
        .lab
        .attacker
        .enter(|| UdpSocket::bind((Lab::ATTACKER_V4, 5514)))??;
    collector.set_read_timeout(Some(Duration::from_secs(2)))?;
    for a in ["198.18.0.5", "198.18.0.6", "198.18.0.7"] {
        sc.lab.add_attacker_address(&format!("{a}/24"))?;
    }
    let server = |port: u16| std::net::SocketAddr::from(([198, 18, 0, 2], port));
    let from = |last: u8| std::net::SocketAddr::from(([198, 18, 0, last], 0));
    // A client of the open port 22 (the stack's SYN, a full handshake):
    // no evidence. Then a connect() to the closed port 23, twice: one
    // record. A raw SYN to port 80, and a source that probes two closed
    // ports (admitted, undecided): a record for each port.
    sc.lab.attacker.enter(|| -> anyhow::Result<()> {
        anyhow::ensure!(scanner_tests::traffic::tcp_check(from(1), server(22))?);
        for _ in 0..2 {
            anyhow::ensure!(!scanner_tests::traffic::tcp_check(from(5), server(23))?);
        }
        Ok(())
    })??;
    sc.answered(Some("198.18.0.6"), "80")?;
    sc.answered(Some("198.18.0.7"), "81,82")?;
    let records = probe_records(&collector, Duration::from_secs(60), |r| {
        has(r, "198.18.0.5", 23)
            && has(r, "198.18.0.6", 80)
            && has(r, "198.18.0.7", 81)
            && has(r, "198.18.0.7", 82)
    })?;
    // A while more: nothing else comes (each key once, no client).
    let mut quiet = Vec::new();
    let end = Instant::now() + Duration::from_secs(6);
    let _ = probe_records(&collector, Duration::from_secs(6), |r| {
        quiet = r.to_vec();
        Instant::now() >= end
    });
    let records: Vec<Value> = records.into_iter().chain(quiet).collect();
    let connect = records
        .iter()
        .find(|r| r["source"] == "198.18.0.5")
        .cloned()
        .unwrap_or_default();
    assert_eq!(connect["destination"], Lab::SERVER_V4, "{connect}");
    assert_eq!(connect["iface"], Lab::SERVER_IF, "{connect}");
    assert_eq!(connect["proto"], "tcp", "{connect}");
    assert_eq!(connect["port_state"], "closed", "{connect}");
    assert_eq!(connect["kind"], "connect", "{connect}");
    let raw = records
        .iter()
        .find(|r| r["source"] == "198.18.0.6")
        .cloned()
        .unwrap_or_default();
    assert_eq!(raw["kind"], "syn", "nmap's bare SYN: {raw}");
    assert!(
        !records.iter().any(|r| r["source"] == Lab::ATTACKER_V4),
        "a client's connection is no evidence: {records:?}"
    );
    for (source, port) in [("198.18.0.5", 23), ("198.18.0.7", 81), ("198.18.0.7", 82)] {
        let n = records
            .iter()
            .filter(|r| r["source"] == source && r["port"] == port)
            .count();
        assert_eq!(n, 1, "{source} port {port} once: {records:?}");
    }
    let events = sc.stop()?;
    assert!(
        !events.iter().any(|e| e["event"] == "scan_detected"),
        "nothing here is a scan on its own: {events:?}"
    );
    Ok(())
}
