//! Blocks a spoofed scan cannot aim: scans that borrow the address of the
//! server's default gateway or of its DNS resolver are reported as
//! `protected` and never blocked, nor (with `protect_established =
//! "address"`) one of a peer with an open TCP session, while a real scanner
//! in the same run is. The default for peers, a block that spares their
//! sessions, is `flows.rs`.

use std::path::PathBuf;

use anyhow::Context as _;
use scanner_tests::{
    Lab, TempDir,
    daemon::cli,
    require_root,
    scenario::Scenario,
    traffic::{self, exchange},
};
use scanner_userspace::testing::{Request, call};
use serde_json::Value;

const GATEWAY: &str = "198.18.0.3";
const RESOLVER: &str = "198.18.0.4";
const PEER: &str = "198.18.0.5";

/// /etc/netns/NAME: what `ip netns exec NAME` mounts over /etc (here, the
/// server's resolv.conf). Removed on drop.
struct NetnsEtc(PathBuf);

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A blocking daemon whose server has GATEWAY as its default gateway and
/// RESOLVER as its resolver, both (and PEER) attacker-side addresses:
/// anyone there can borrow them.
/// Established peers are protected by address (the behaviour before
/// blocks spared flows), set in a configuration file of the test's.
fn protected_lab() -> anyhow::Result<(Scenario, NetnsEtc, TempDir)> {
    let mut etc = None;
    let dir = TempDir::new("protected")?;
    let file = dir.0.join("scanner.toml");
    std::fs::write(&file, "[response]\nprotect_established = \"address\"\n")?;
    let config = file.to_string_lossy().into_owned();
    let sc = Scenario::start_with(
        |lab| {
            lab.server
                .ip(&["route", "add", "default", "via", GATEWAY])?;
            let dir = PathBuf::from("/etc/netns").join(lab.server.name());
            std::fs::create_dir_all(&dir)?;
            etc = Some(NetnsEtc(dir.clone()));
            std::fs::write(dir.join("resolv.conf"), format!("nameserver {RESOLVER}\n"))?;
            for ip in [GATEWAY, RESOLVER, PEER] {
                lab.add_attacker_address(&format!("{ip}/24"))?;
            }
            Ok(())
        },
        &[22, 80],
        &[],
        &["--block", "--config", &config],
    )?;
    Ok((sc, etc.context("no /etc/netns directory")?, dir))
}

/// Operators cannot cut the host off from its gateway or resolver by
/// mistake: naming one needs --force, a CIDR that covers them spares them
/// (and says so), and a CIDR with host bits set is refused, not widened.
#[test]
fn manual_blocks_spare_protected_hosts_unless_forced() -> anyhow::Result<()> {
    if !require_root("manual_blocks_spare_protected_hosts_unless_forced") {
        return Ok(());
    }
    let (mut sc, etc, _config) = protected_lab()?;
    let socket = sc.daemon.socket().to_path_buf();
    let (ok, _, err) = cli(&socket, &["block", GATEWAY])?;
    assert!(!ok, "the gateway was blocked without --force");
    assert!(
        err.contains("is protected (gateway)") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(sc.answered(Some(GATEWAY), "22,80")?, 2);

    let (ok, _, err) = cli(&socket, &["block", "198.18.0.1/24"])?;
    assert!(!ok && err.contains("host bits"), "{err}");

    // 198.18.0.4/30: the resolver, and PEER (no session now: not protected).
    let (ok, out, err) = cli(&socket, &["block", "198.18.0.4/30", "--ttl", "10m"])?;
    assert!(ok, "{err}");
    assert!(out.contains("blocked 198.18.0.4/30"), "{out}");
    assert!(err.contains(&format!("{RESOLVER} (resolver)")), "{err}");
    let refused = sc.wait("block_refused", RESOLVER)?;
    assert_eq!(refused["reason"], "protected", "{refused}");
    assert_eq!(
        sc.answered(Some(RESOLVER), "22,80")?,
        2,
        "the resolver cut off by the /30"
    );
    assert_eq!(
        sc.answered(Some(PEER), "22,80")?,
        0,
        "the rest of the /30 is blocked"
    );

    let (ok, _, err) = cli(&socket, &["block", "--force", GATEWAY, "--ttl", "10m"])?;
    assert!(ok && err.contains("forced"), "{err}");
    assert_eq!(sc.answered(Some(GATEWAY), "22,80")?, 0, "--force blocks it");
    sc.stop()?;
    drop(etc);
    Ok(())
}

#[test]
fn spoofed_scans_from_the_gateway_resolver_and_a_peer_are_never_blocked() -> anyhow::Result<()> {
    if !require_root("spoofed_scans_from_the_gateway_resolver_and_a_peer_are_never_blocked") {
        return Ok(());
    }
    let (mut sc, etc, _config) = protected_lab()?;
    let status = call(sc.daemon.socket(), &Request::Status {})?;
    assert_eq!(status["blocking"], true, "{status}");

    // A long-lived session from the peer, exchanging data.
    let (mut client, mut server) = traffic::session(
        &sc.lab.attacker,
        format!("{PEER}:0").parse()?,
        format!("{}:22", Lab::SERVER_V4).parse()?,
        sc.listener(22)?,
    )?;
    // The listener is on [::]: an IPv4 peer shows IPv4-mapped.
    assert_eq!(server.peer_addr()?.ip().to_canonical().to_string(), PEER);
    exchange(&mut client, &mut server, 1)?;

    for (source, why) in [
        (GATEWAY, "gateway"),
        (RESOLVER, "resolver"),
        (PEER, "established"),
    ] {
        let answered = sc.answered(Some(source), "1-200")?;
        // Gateways and resolvers are never blocked at all. An established
        // peer is found at its decision: the kernel's block at the deciding
        // probe is lifted within milliseconds.
        if why != "established" {
            assert_eq!(
                answered, 200,
                "{source}: a protected source is never dropped"
            );
        }
        let detected = sc.wait("scan_detected", source)?;
        assert_eq!(
            (detected["action"].as_str(), detected["protected"].as_str()),
            (Some("protected"), Some(why)),
            "{detected}"
        );
        // Still answered after its detection, and again later.
        assert_eq!(sc.answered(Some(source), "22,80")?, 2, "{source}");
    }
    // The session goes on.
    exchange(&mut client, &mut server, 2)?;

    // A real scanner in the same run is blocked.
    assert!(sc.answered(None, "1-1000")? < 10);
    let blocked = sc.wait("blocked", Lab::ATTACKER_V4)?;
    assert_eq!(blocked["reason"], "scan", "{blocked}");

    // Listed as protected, also once their scans have ended.
    sc.wait("scan_ended", GATEWAY)?;
    let list = call(sc.daemon.socket(), &Request::List {})?;
    for (source, why) in [
        (GATEWAY, "gateway"),
        (RESOLVER, "resolver"),
        (PEER, "established"),
    ] {
        let row: Value = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["address"] == source)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (row["state"].as_str(), row["protected"].as_str()),
            (Some("protected"), Some(why)),
            "{list}"
        );
    }
    let status = call(sc.daemon.socket(), &Request::Status {})?;
    assert_eq!(status["blocks"], 1, "only the real scanner: {status}");
    let events = sc.stop()?;
    for source in [GATEWAY, RESOLVER] {
        let blocks: Vec<&Value> = events
            .iter()
            .filter(|e| e["source"] == source && e["event"] == "blocked")
            .collect();
        assert!(blocks.is_empty(), "{source} blocked: {blocks:?}");
    }
    // The peer's block, if a sweep saw it before its detection was read,
    // was lifted as protected; none is left.
    let peer: Vec<&str> = events
        .iter()
        .filter(|e| e["source"] == PEER && (e["event"] == "blocked" || e["event"] == "unblocked"))
        .map(|e| e["reason"].as_str().unwrap_or_default())
        .collect();
    assert!(peer.is_empty() || peer == ["scan", "protected"], "{peer:?}");
    drop(etc);
    Ok(())
}
