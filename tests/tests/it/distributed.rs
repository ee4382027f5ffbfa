//! Scans that send every probe from a fresh address of one network, with
//! real hping3 and nmap between namespaces: one SYN from each of 40 addresses of the
//! lab's /64 (or /24), each to another closed port, is one distributed scan
//! of that network, also when the probes are spread over a minute. A NAT
//! pool of 200 addresses of one /24, each opening one real connection to an
//! open port, is not.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use scanner_tests::{
    Lab, require_root,
    scenario::{Scenario, about},
    traffic,
};
use serde_json::Value;

/// One SYN from `source` (an attacker's address, added beforehand) to
/// `port` of the server: hping3 over IPv4 (light enough to run 40 times),
/// nmap's raw-packet SYN over IPv6 (hping3 has no IPv6).
fn one_probe(sc: &Scenario, source: &str, port: u16) -> anyhow::Result<()> {
    let port = port.to_string();
    if source.contains(':') {
        let args = [
            "-6",
            "-sS",
            "--max-retries",
            "0",
            "-S",
            source,
            "-e",
            Lab::ATTACKER_IF,
            "-p",
            &port,
            Lab::SERVER_V6,
        ];
        return traffic::nmap(&sc.lab.attacker, &args).map(drop);
    }
    // Exit 1: no reply counted (the RST goes to the address hping3 does not
    // listen as); the probe was sent all the same.
    let args = [
        "-q",
        "-S",
        "-c",
        "1",
        "-a",
        source,
        "-I",
        Lab::ATTACKER_IF,
        "-p",
        &port,
        Lab::SERVER_V4,
    ];
    traffic::tool(&sc.lab.attacker, 10, "hping3", &args, &[1]).map(drop)
}

/// 40 addresses (from `address(i)`), one probe each to port 1000 + i,
/// `pause` apart; then the distributed scan of `network` must be reported,
/// with every address among its sources (its figures as the stopping
/// daemon ends it) and no address on its own.
fn forty_addresses(
    address: impl Fn(u16) -> String,
    prefix_len: u8,
    network: &str,
    pause: Duration,
) -> anyhow::Result<()> {
    // Scans end after a minute of quiet: the probes, however spread, are
    // one scan, which the stop ends.
    let mut sc = Scenario::start_quiet(&[22, 80], &[], &[], "1m")?;
    let addresses: Vec<String> = (0..40).map(&address).collect();
    for a in &addresses {
        sc.lab.add_attacker_address(&format!("{a}/{prefix_len}"))?;
    }
    for (i, a) in addresses.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        one_probe(&sc, a, 1000 + u16::try_from(i)?)?;
    }
    let detected = sc.wait("scan_detected", network)?;
    assert_eq!(detected["kind"], "distributed", "{detected}");
    assert_eq!(detected["action"], "report", "prefixes are never blocked");
    let events = sc.stop()?;
    let ended = about(&events, network)
        .into_iter()
        .rfind(|e| e["event"] == "scan_ended")
        .cloned()
        .unwrap_or_default();
    assert_eq!(ended["sources"], 40, "every address, once: {ended}");
    let ports = ended["ports"].as_u64().unwrap_or(0);
    assert!((36..=40).contains(&ports), "distinct ports: {ended}");
    for a in &addresses {
        let alone = about(&events, a);
        assert!(alone.is_empty(), "{a} reported on its own: {alone:?}");
    }
    Ok(())
}

#[test]
fn one_probe_from_each_of_40_addresses_of_a_64_is_a_distributed_scan() -> anyhow::Result<()> {
    if !require_root("one_probe_from_each_of_40_addresses_of_a_64_is_a_distributed_scan") {
        return Ok(());
    }
    forty_addresses(
        |i| format!("2001:db8::{:x}", 0x100 + i),
        64,
        "2001:db8::/64",
        Duration::ZERO,
    )
}

#[test]
fn one_probe_from_each_of_40_addresses_of_a_24_is_a_distributed_scan() -> anyhow::Result<()> {
    if !require_root("one_probe_from_each_of_40_addresses_of_a_24_is_a_distributed_scan") {
        return Ok(());
    }
    forty_addresses(
        |i| format!("198.18.0.{}", 100 + i),
        24,
        "198.18.0.0/24",
        Duration::ZERO,
    )
}

#[test]
fn forty_single_probes_spread_over_a_minute_are_a_distributed_scan() -> anyhow::Result<()> {
    if !require_root("forty_single_probes_spread_over_a_minute_are_a_distributed_scan") {
        return Ok(());
    }
    // 39 gaps of 1.5 s: the probes span about 60 s, past the fan-out window.
    forty_addresses(
        |i| format!("198.18.0.{}", 100 + i),
        24,
        "198.18.0.0/24",
        Duration::from_millis(1500),
    )
}

#[test]
fn a_nat_pool_of_200_clients_of_an_open_port_is_not_a_scan() -> anyhow::Result<()> {
    if !require_root("a_nat_pool_of_200_clients_of_an_open_port_is_not_a_scan") {
        return Ok(());
    }
    let mut sc = Scenario::start(&[22, 80, 8080], &[], &[])?;
    let clients: Vec<IpAddr> = (0..200u16)
        .map(|i| format!("198.18.0.{}", 10 + i).parse())
        .collect::<Result<_, _>>()?;
    for c in &clients {
        sc.lab.add_attacker_address(&format!("{c}/24"))?;
    }
    let server = SocketAddr::new(Lab::SERVER_V4.parse()?, 8080);
    let listener = sc.listener(8080)?;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let served = s.spawn(|| traffic::serve_http(listener, clients.len()));
        for c in &clients {
            sc.lab
                .attacker
                .enter(|| traffic::http_get(SocketAddr::new(*c, 0), server))??;
        }
        served
            .join()
            .map_err(|_| anyhow::anyhow!("server panicked"))?
    })?;
    // A scan from another network marks the point by which the kernel has
    // judged every connection: its decisions reach the daemon in order.
    traffic::nmap(
        &sc.lab.attacker,
        &["-6", "-sS", "-p1-100", "--max-retries", "1", Lab::SERVER_V6],
    )?;
    sc.wait("scan_detected", Lab::ATTACKER_V6)?;
    let events = sc.stop()?;
    let prefix: Vec<&Value> = about(&events, "198.18.0.0/24");
    assert!(prefix.is_empty(), "the NAT pool reported: {prefix:?}");
    for c in &clients {
        let alone = about(&events, &c.to_string());
        assert!(alone.is_empty(), "{c} reported: {alone:?}");
    }
    Ok(())
}
