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
