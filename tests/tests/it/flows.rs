//! A block that spares live flows (`protect_established = "flows"`, the
//! default): a scanner that holds a TCP session open and then scans is
//! blocked, its session goes on, and nothing new of it gets through; a
//! scan spoofed with a peer's address never costs the peer's session an
//! exchange, and the report says its flows were spared; a flow's pass ends
//! with the flow, and the block's with its time.

use std::{
    net::{SocketAddr, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use scanner_tests::{
    Lab, require_root,
    scenario::Scenario,
    traffic::{self, exchange},
};

const PEER: &str = "198.18.0.5";
const SERVICE: u16 = 8080;

fn at(ip: &str, port: u16) -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::new(ip.parse()?, port))
}

/// A blocking daemon, PEER an attacker-side address, and a session from
/// `from` to the server's SERVICE port: (scenario, client end, server end).
fn session_lab(from: &str, extra: &[&str]) -> anyhow::Result<(Scenario, TcpStream, TcpStream)> {
    let mut args = vec!["--block"];
    args.extend_from_slice(extra);
    let sc = Scenario::start(&[22, 80, SERVICE], &[], &args)?;
    sc.lab.add_attacker_address(&format!("{PEER}/24"))?;
    let (client, server) = traffic::session(
        &sc.lab.attacker,
        at(from, 0)?,
        at(Lab::SERVER_V4, SERVICE)?,
        sc.listener(SERVICE)?,
    )?;
    Ok((sc, client, server))
}

/// Whether `from` gets any answer on a new connection to SERVICE.
fn new_connection_answered(sc: &Scenario, from: &str) -> anyhow::Result<bool> {
    let (from, to) = (at(from, 0)?, at(Lab::SERVER_V4, SERVICE)?);
    sc.lab
        .attacker
        .enter(|| traffic::answers_within(from, to, Duration::from_secs(2)))?
}

#[test]
fn a_scanner_holding_a_session_is_blocked_and_only_its_session_goes_on() -> anyhow::Result<()> {
    if !require_root("a_scanner_holding_a_session_is_blocked_and_only_its_session_goes_on") {
        return Ok(());
    }
    let src = Lab::ATTACKER_V4;
    let (mut sc, mut client, mut server) = session_lab(src, &[])?;
    exchange(&mut client, &mut server, 1)?;
    // The keep-alive session is open; now the same address scans.
    assert!(
        sc.answered(None, "1-1000")? < 10,
        "blocked within a few ports"
    );
    let detected = sc.wait("scan_detected", src)?;
    assert_eq!(detected["action"], "block", "{detected}");
    assert_eq!(detected["spared_flows"], 1, "{detected}");
    assert!(detected.get("protected").is_none(), "{detected}");
    sc.wait("blocked", src)?;
    // Its session still exchanges data...
    exchange(&mut client, &mut server, 2)?;
    // ... but a new connection or a rescan gets no answer.
    assert!(
        !new_connection_answered(&sc, src)?,
        "a new connection got through"
    );
    assert_eq!(sc.answered(None, "22,80")?, 0, "the rescan got answers");
    exchange(&mut client, &mut server, 3)?;
    sc.stop()?;
    Ok(())
}

#[test]
fn a_scan_spoofed_as_a_peer_never_costs_its_session_an_exchange() -> anyhow::Result<()> {
    if !require_root("a_scan_spoofed_as_a_peer_never_costs_its_session_an_exchange") {
        return Ok(());
    }
    let (mut sc, mut client, mut server) = session_lab(PEER, &[])?;
    exchange(&mut client, &mut server, 0)?;
    // The peer exchanges all through the scan and its decision. A segment
    // dropped would cost a retransmission (200 ms at least): every round
    // trip must be quicker than that.
    let scanning = AtomicBool::new(true);
    let (rounds, slowest) = std::thread::scope(|s| -> anyhow::Result<(u32, Duration)> {
        let talk = s.spawn(|| -> anyhow::Result<(u32, Duration)> {
            let (mut rounds, mut slowest) = (0u32, Duration::ZERO);
            while scanning.load(Ordering::Relaxed) || rounds < 20 {
                let began = Instant::now();
                exchange(&mut client, &mut server, rounds as u8)?;
                slowest = slowest.max(began.elapsed());
                rounds += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok((rounds, slowest))
        });
        let scan = sc.answered(Some(PEER), "1-1000");
        scanning.store(false, Ordering::Relaxed);
        let talked = talk
            .join()
            .map_err(|_| anyhow::anyhow!("the session thread panicked"))?;
        assert!(scan? < 10, "the spoofed scan is blocked");
        talked
    })?;
    let detected = sc.wait("scan_detected", PEER)?;
    assert_eq!(
        (
            detected["action"].as_str(),
            detected["spared_flows"].as_u64()
        ),
        (Some("block"), Some(1)),
        "the report says the peer's flow was spared: {detected}"
    );
    assert!(
        slowest < Duration::from_millis(150),
        "{rounds} exchanges, the slowest took {slowest:?}: one was lost and retransmitted"
    );
    sc.stop()?;
    Ok(())
}

#[test]
fn a_flows_pass_ends_with_the_flow_and_the_block_with_its_time() -> anyhow::Result<()> {
    if !require_root("a_flows_pass_ends_with_the_flow_and_the_block_with_its_time") {
        return Ok(());
    }
    let (mut sc, mut client, mut server) = session_lab(PEER, &["--block-ttl", "8s"])?;
    let port = client.local_addr()?.port();
    exchange(&mut client, &mut server, 1)?;
    assert!(sc.answered(Some(PEER), "1-1000")? < 10);
    sc.wait("blocked", PEER)?;
    exchange(&mut client, &mut server, 2)?;
    // The session closes (the server first, so the peer's port is free
    // again): its pass goes with it, while the block stays. A connection
    // from the very port it used gets no answer.
    drop(server);
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut client, &mut rest);
    drop(client);
    let (from, to) = (at(PEER, port)?, at(Lab::SERVER_V4, SERVICE)?);
    let answered = sc
        .lab
        .attacker
        .enter(|| traffic::answers_within(from, to, Duration::from_secs(2)))??;
    assert!(!answered, "the closed session's pass outlived it");
    // The block expires, and nothing of it is left in the kernel: the
    // passes were never state of their own (the kernel's socket table is
    // asked), so there is none to clear.
    let lifted = sc.wait("unblocked", PEER)?;
    assert_eq!(lifted["reason"], "expired", "{lifted}");
    let status = scanner_userspace::testing::call(
        sc.daemon.socket(),
        &scanner_userspace::testing::Request::Status {},
    )?;
    assert_eq!(status["blocks"], 0, "{status}");
    sc.stop()?;
    Ok(())
}
