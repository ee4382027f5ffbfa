//! Normal clients are not scanners. Each test runs one kind of benign
//! traffic from its own address, then a real scan from another address: once
//! that scan has been reported the benign traffic has been judged too, and
//! stopping the daemon closes every open report, so the full event list
//! shows nothing about the benign source (nor about its prefix).

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use scanner_tests::{
    Lab, require_root,
    scenario::{Scenario, about},
    traffic,
};

const HTTP_PORT: u16 = 8080;
const OPEN_TCP: &[u16] = &[22, 80, 443, HTTP_PORT];

fn addr(ip: &str, port: u16) -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::new(ip.parse::<IpAddr>()?, port))
}

/// Starts a scenario with `client` as an extra attacker-side address.
fn scenario(client: &str) -> anyhow::Result<Scenario> {
    let sc = Scenario::start(OPEN_TCP, &[], &[])?;
    sc.lab.add_attacker_address(&format!("{client}/24"))?;
    Ok(sc)
}

/// The marker scan, then the check that `client` was never reported.
fn assert_not_reported(mut sc: Scenario, client: &str) -> anyhow::Result<()> {
    traffic::nmap(
        &sc.lab.attacker,
        &["-sS", "-p1-100", "--max-retries", "1", Lab::SERVER_V4],
    )?;
    sc.wait("scan_ended", Lab::ATTACKER_V4)?;
    let events = sc.stop()?;
    let reported = about(&events, client);
    assert!(
        reported.is_empty(),
        "benign {client} reported: {reported:?}"
    );
    let prefix = about(&events, "198.18.0.0/24");
    assert!(prefix.is_empty(), "benign prefix reported: {prefix:?}");
    Ok(())
}

/// `count` HTTP requests from `client`, `parallel` at a time.
fn http_requests(client: &str, count: usize, parallel: usize) -> anyhow::Result<()> {
    let sc = scenario(client)?;
    let server = addr(Lab::SERVER_V4, HTTP_PORT)?;
    let from = addr(client, 0)?;
    let listener = sc.listener(HTTP_PORT)?;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let served = s.spawn(|| traffic::serve_http(listener, count));
        let clients: Vec<_> = (0..parallel)
            .map(|_| {
                s.spawn(|| {
                    sc.lab.attacker.enter(|| -> anyhow::Result<()> {
                        for _ in 0..count / parallel {
                            traffic::http_get(from, server)?;
                        }
                        Ok(())
                    })?
                })
            })
            .collect();
        for c in clients {
            c.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
        }
        served
            .join()
            .map_err(|_| anyhow::anyhow!("server panicked"))?
    })?;
    assert_not_reported(sc, client)
}

#[test]
fn sequential_http_client_is_not_reported() -> anyhow::Result<()> {
    if !require_root("sequential_http_client_is_not_reported") {
        return Ok(());
    }
    http_requests("198.18.0.3", 300, 1)
}

#[test]
fn concurrent_http_clients_are_not_reported() -> anyhow::Result<()> {
    if !require_root("concurrent_http_clients_are_not_reported") {
        return Ok(());
    }
    http_requests("198.18.0.4", 500, 100)
}

#[test]
fn health_checker_for_a_minute_is_not_reported() -> anyhow::Result<()> {
    if !require_root("health_checker_for_a_minute_is_not_reported") {
        return Ok(());
    }
    let client = "198.18.0.5";
    let sc = scenario(client)?;
    let from = addr(client, 0)?;
    let targets = [22, 80, 443].map(|p| addr(Lab::SERVER_V4, p));
    sc.lab.attacker.enter(|| -> anyhow::Result<()> {
        // Three open ports, once a second, for a minute: the pacing is the
        // traffic being modelled, not a wait for the daemon.
        let start = Instant::now();
        for round in 1..=60u32 {
            for to in &targets {
                let to = to.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
                assert!(traffic::tcp_check(from, *to)?, "{to} should be open");
            }
            let next = start + Duration::from_secs(u64::from(round));
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        Ok(())
    })??;
    assert_not_reported(sc, client)
}

#[test]
fn client_refused_twice_is_not_reported() -> anyhow::Result<()> {
    if !require_root("client_refused_twice_is_not_reported") {
        return Ok(());
    }
    let client = "198.18.0.6";
    let sc = scenario(client)?;
    let from = addr(client, 0)?;
    sc.lab.attacker.enter(|| -> anyhow::Result<()> {
        // A mistyped port, then another: both refused.
        for port in [8081, 8082] {
            assert!(!traffic::tcp_check(from, addr(Lab::SERVER_V4, port)?)?);
        }
        // ... and the service it meant.
        assert!(traffic::tcp_check(from, addr(Lab::SERVER_V4, HTTP_PORT)?)?);
        Ok(())
    })??;
    assert_not_reported(sc, client)
}

#[test]
fn replies_to_outbound_connections_are_not_reported() -> anyhow::Result<()> {
    if !require_root("replies_to_outbound_connections_are_not_reported") {
        return Ok(());
    }
    // The server is the client here: 200 connections out to a web server on
    // the other side, whose SYN-ACKs, ACKs and FINs arrive at ephemeral ports.
    let peer = "198.18.0.7";
    let sc = scenario(peer)?;
    let remote = addr(peer, 8000)?;
    let listener = traffic::listen(&sc.lab.attacker, remote)?;
    let from = addr(Lab::SERVER_V4, 0)?;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let served = s.spawn(|| traffic::serve_http(&listener, 200));
        sc.lab.server.enter(|| -> anyhow::Result<()> {
            for _ in 0..200 {
                traffic::http_get(from, remote)?;
            }
            Ok(())
        })??;
        served
            .join()
            .map_err(|_| anyhow::anyhow!("server panicked"))?
    })?;
    assert_not_reported(sc, peer)
}
