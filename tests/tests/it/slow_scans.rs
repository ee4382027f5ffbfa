//! Scans spread out in time, decided by the long memory (`[slow]`) and only
//! by it: the kernel's idle timeout is set to a few seconds, so that every
//! probe comes after the kernel forgot the one before, while the memory's
//! settings stay at their defaults (a week, ten closed ports). Days are
//! scaled down to seconds by the idle timeout, as the -T0 kernel test does.
//!
//! - real nmap with `--scan-delay 12s` over 16 closed ports: decided as
//!   `slow` while the scan still runs;
//! - a crawler rotating over 30 addresses of one /24, one or two ports each,
//!   with a restart of the daemon in the middle: the /24 decided, from
//!   probes on both sides of the restart, and none of its addresses alone;
//! - two lone slow scanners meanwhile, with `--block`: the first reported
//!   only (`block_slow` off), the second, after a reload turned it on,
//!   blocked;
//! - meanwhile, on the same server: a client connecting to open ports over
//!   and over, a NAT'd office's many addresses hitting the same services
//!   (and a port that is down), a monitor checking its ports, the server's
//!   own outbound connections and DNS queries with their replies: never
//!   decided.

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use scanner_tests::{
    Lab, TempDir, daemon::scanner_binary, packets, require_root, scenario::Scenario, traffic,
};
use serde_json::Value;

/// Lone slow scanners of the crawler test, in /24s of their own.
const LONE_BEFORE: [u8; 4] = [198, 18, 66, 6];
const LONE_AFTER: [u8; 4] = [198, 18, 55, 5];

/// The kernel forgets a source after this much quiet.
const IDLE: Duration = Duration::from_secs(2);
/// Probes of one actor come further apart than that.
const GAP: Duration = Duration::from_millis(2_300);

/// Services the server runs: what the benign clients use.
const OPEN_TCP: &[u16] = &[22, 80];
const OPEN_UDP: &[u16] = &[53];

/// The daemon's configuration: sources forgotten after [`IDLE`], slow
/// scans blocked or not.
fn configure(path: &Path, block_slow: bool) -> anyhow::Result<()> {
    std::fs::write(
        path,
        format!(
            "[detection]\nidle_timeout = \"{}s\"\n\n[response]\nblock_slow = {block_slow}\n",
            IDLE.as_secs()
        ),
    )?;
    Ok(())
}

/// A scenario whose daemon keeps a history (and the long memory in it),
/// forgets sources after [`IDLE`], and runs with `extra`.
fn start(dir: &TempDir, extra: &[&str]) -> anyhow::Result<(Scenario, String)> {
    let config = dir.0.join("scanner.toml");
    configure(&config, false)?;
    let db = dir.0.join("history.db").to_string_lossy().into_owned();
    let config = config.to_string_lossy().into_owned();
    let mut args = vec!["--history", db.as_str(), "--config", config.as_str()];
    args.extend_from_slice(extra);
    let sc = Scenario::start(OPEN_TCP, OPEN_UDP, &args)?;
    Ok((sc, db))
}

/// `scanner history --source NET --json` on `db`.
fn record(db: &str, net: &str) -> anyhow::Result<Value> {
    let out = std::process::Command::new(scanner_binary()?)
        .args([
            "history",
            "--history",
            db,
            "--since",
            "1d",
            "--source",
            net,
            "--json",
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "scanner history: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn detections(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["event"] == "scan_detected")
        .collect()
}

/// A child process stopped by its pid (SIGTERM: `timeout` passes it on to
/// what it runs) when the test ends early.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait()
            && let Ok(pid) = i32::try_from(self.0.id())
        {
            // SAFETY: a signal to our own child, by its pid.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
}

#[test]
fn nmap_with_a_scan_delay_past_the_idle_timeout_is_decided_slow() -> anyhow::Result<()> {
    if !require_root("nmap_with_a_scan_delay_past_the_idle_timeout_is_decided_slow") {
        return Ok(());
    }
    let dir = TempDir::new("slow-nmap")?;
    let (mut sc, db) = start(&dir, &[])?;
    // 16 closed ports, 12 s apart: three minutes of scan, bounded.
    let mut nmap = sc
        .lab
        .attacker
        .command("timeout")
        .args([
            "300",
            "nmap",
            "-n",
            "-Pn",
            "-sS",
            "--scan-delay",
            "12s",
            "--max-retries",
            "0",
        ])
        .args(["-p2001-2016", Lab::SERVER_V4])
        .stdout(std::process::Stdio::null())
        .spawn()
        .map(Stopped)
        .context("starting nmap")?;
    let detected = sc
        .daemon
        .wait_for_event(
            |e| e["event"] == "scan_detected" && e["source"] == Lab::ATTACKER_V4,
            Duration::from_secs(240),
        )
        .context("the slow scan was not decided")?;
    let running = nmap.0.try_wait()?.is_none();
    if !running {
        anyhow::bail!("decided only after the scan ended: {detected}");
    }
    assert_eq!(detected["kind"], "slow", "{detected}");
    assert_eq!(detected["reason"], "long_memory", "{detected}");
    assert_eq!(detected["sources"], 1, "{detected}");
    let slow = &detected["slow"];
    assert!(
        slow["closed_ports"].as_u64().is_some_and(|n| n >= 10),
        "{detected}"
    );
    assert!(
        slow["probed"].as_array().is_some_and(|p| p
            .iter()
            .all(|p| p.as_str().is_some_and(|p| p.starts_with("tcp/20")))),
        "{detected}"
    );
    assert_eq!(slow["window"], "7d", "the memory's defaults: {detected}");
    // Decided before the sixteenth probe, after the tenth.
    assert!(
        detected["decided_after"]
            .as_u64()
            .is_some_and(|n| (10..16).contains(&n)),
        "{detected}"
    );
    let status = nmap.0.wait()?;
    anyhow::ensure!(status.success(), "nmap: {status}");
    let events = sc.stop()?;
    // Only the long memory decided: the kernel never did, and the scan
    // was reported once.
    let all = detections(&events);
    assert_eq!(all.len(), 1, "{all:?}");
    // Its record: the ports probed, each once, by first probe (nmap now and
    // then spends a probe on a timing ping of a port it already probed, so
    // one of the sixteen may be missing).
    let r = record(&db, Lab::ATTACKER_V4)?;
    let rows = r["record"].as_array().context("no record")?;
    assert!((15..=16).contains(&rows.len()), "{r}");
    assert!(
        rows.iter().all(|row| row["state"] == "closed"
            && row["port"]
                .as_u64()
                .is_some_and(|p| (2001..=2016).contains(&p))),
        "{r}"
    );
    Ok(())
}

/// Raw SYNs as an OS sends them, from `source` to `port` of the server.
fn syn(sc: &Scenario, source: [u8; 4], port: u16) -> anyhow::Result<()> {
    let frame = packets::stack_syn_v4(source, port);
    traffic::send_frames(
        &sc.lab.attacker,
        Lab::ATTACKER_IF,
        std::iter::once(frame),
        Duration::from_secs(1),
    )
    .map(drop)
}

/// Counts of the benign clients' rounds.
#[derive(Default)]
struct Rounds {
    client: AtomicUsize,
    outbound: AtomicUsize,
}

/// The benign traffic with threads of its own, until `stop`: a client of
/// the server's services on the attacker's side, and the server's own
/// connections out and queries to its DNS resolver (the attacker's side
/// answers on port 53), whose replies come back to its ephemeral ports.
fn benign(
    sc: &Scenario,
    stop: &Arc<AtomicBool>,
    rounds: &Arc<Rounds>,
) -> anyhow::Result<Vec<std::thread::JoinHandle<()>>> {
    let (stop_a, rounds_a) = (Arc::clone(stop), Arc::clone(rounds));
    let web = traffic::listen(&sc.lab.attacker, "198.18.0.1:8080".parse()?)?;
    web.set_nonblocking(true)?;
    let resolver = sc
        .lab
        .attacker
        .enter(|| UdpSocket::bind("198.18.0.1:53"))??;
    resolver.set_read_timeout(Some(Duration::from_millis(100)))?;
    let client = sc.lab.attacker.spawn_in(move || {
        let from = SocketAddr::from(([198, 18, 0, 1], 0));
        while !stop_a.load(Ordering::Relaxed) {
            // A client of the web and SSH services, however often.
            let ok = [80u16, 22].iter().all(|&p| {
                traffic::tcp_check(from, SocketAddr::from(([198, 18, 0, 2], p))).unwrap_or(false)
            });
            if ok {
                rounds_a.client.fetch_add(1, Ordering::Relaxed);
            }
            // The server's peers answer it.
            while let Ok((s, _)) = web.accept() {
                drop(s);
            }
            let mut buf = [0u8; 64];
            while let Ok((n, peer)) = resolver.recv_from(&mut buf) {
                let _ = resolver.send_to(&buf[..n], peer);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    })?;
    let (stop_s, rounds_s) = (Arc::clone(stop), Arc::clone(rounds));
    let outbound = sc.lab.server.spawn_in(move || {
        while !stop_s.load(Ordering::Relaxed) {
            let web = "198.18.0.1:8080".parse().ok();
            let connected = web.and_then(|a| {
                std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).ok()
            });
            let queried = UdpSocket::bind("198.18.0.2:0").and_then(|q| {
                q.set_read_timeout(Some(Duration::from_secs(1)))?;
                q.send_to(b"query", "198.18.0.1:53")?;
                let mut buf = [0u8; 64];
                q.recv_from(&mut buf).map(drop)
            });
            if connected.is_some() && queried.is_ok() {
                rounds_s.outbound.fetch_add(1, Ordering::Relaxed);
            }
            drop(connected);
            std::thread::sleep(Duration::from_millis(300));
        }
    })?;
    Ok(vec![client, outbound])
}

/// Raw SYNs as an OS sends them from a NAT'd office's /24 (its users hit
/// the same services, and one port that is down) and from a monitor (its
/// checks of two services and of one that is down).
fn office_and_monitor(sc: &Scenario) -> anyhow::Result<()> {
    let mut frames = Vec::new();
    for host in 1..=20u8 {
        let down = if host % 5 == 0 { 8443 } else { 22 };
        for port in [80u16, 22, down] {
            frames.push(packets::stack_syn_v4([198, 18, 88, host], port));
        }
    }
    for port in [22u16, 80, 9100] {
        frames.push(packets::stack_syn_v4([198, 18, 99, 5], port));
    }
    traffic::send_frames(
        &sc.lab.attacker,
        Lab::ATTACKER_IF,
        frames.into_iter(),
        Duration::from_secs(2),
    )
    .map(drop)
}

#[test]
fn a_crawler_rotating_addresses_in_its_24_is_decided_slow_across_a_restart_and_benign_traffic_never()
-> anyhow::Result<()> {
    if !require_root(
        "a_crawler_rotating_addresses_in_its_24_is_decided_slow_across_a_restart_and_benign_traffic_never",
    ) {
        return Ok(());
    }
    let dir = TempDir::new("slow-crawler")?;
    // Blocking on: the kernel's decisions would be blocked, a slow scan's
    // source only with block_slow (off at first, on after a reload).
    let (mut sc, db) = start(&dir, &["--block"])?;
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(Rounds::default());
    let clients = benign(&sc, &stop, &rounds)?;
    // 30 addresses of 198.18.77.0/24, one or two closed ports each, every
    // probe of the /24 past the kernel's idle timeout after the last.
    let began = Instant::now();
    let mut probes = 0;
    let mut restarted = false;
    for host in 0..30u8 {
        let source = [198, 18, 77, 10 + host];
        let mut ports = vec![3000 + u16::from(host)];
        if host % 2 == 1 {
            ports.push(4000 + u16::from(host));
        }
        for port in ports {
            syn(&sc, source, port)?;
            probes += 1;
            office_and_monitor(&sc)?;
            // Two lone slow scanners, a closed port each per step, one
            // before and one after block_slow is turned on.
            let step = u16::try_from(probes)?;
            if (1..=12).contains(&step) {
                syn(&sc, LONE_BEFORE, 5000 + step)?;
            }
            if (20..=31).contains(&step) {
                syn(&sc, LONE_AFTER, 6000 + step)?;
            }
            if step == 16 {
                configure(&dir.0.join("scanner.toml"), true)?;
                sc.daemon.signal(libc::SIGHUP)?;
            }
            std::thread::sleep(GAP);
        }
        // Eight ports in (below the ten that decide): a restart. What the
        // memory decides after it, it decides from probes on both sides.
        if probes == 8 && !restarted {
            let before = sc.stop()?;
            assert!(detections(&before).is_empty(), "{:?}", detections(&before));
            sc.restart()?;
            restarted = true;
        }
    }
    let crawled = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join()
            .map_err(|_| anyhow::anyhow!("a benign client's thread panicked"))?;
    }
    let (client, outbound) = (
        rounds.client.load(Ordering::Relaxed),
        rounds.outbound.load(Ordering::Relaxed),
    );
    assert!(
        client > 50 && outbound > 50,
        "the benign clients' rounds answered: {client} in, {outbound} out"
    );
    let detected = sc
        .daemon
        .wait_for_event(
            |e| e["event"] == "scan_detected" && e["source"] == "198.18.77.0/24",
            Duration::from_secs(10),
        )
        .with_context(|| format!("the crawler's /24 was not decided ({crawled:?} of crawling)"))?;
    assert_eq!(detected["kind"], "slow", "{detected}");
    assert_eq!(
        detected["action"], "report",
        "prefixes are never blocked: {detected}"
    );
    let slow = &detected["slow"];
    assert!(
        detected["sources"].as_u64().is_some_and(|n| n >= 3),
        "{detected}"
    );
    assert!(
        slow["addresses"].as_array().is_some_and(|a| a.len() >= 3),
        "{detected}"
    );
    let events = sc.stop()?;
    // The /24 once, the two lone scanners, and nothing else: no address of
    // the /24 alone, none of the benign sources, no kernel decision.
    let all = detections(&events);
    assert_eq!(all.len(), 3, "{all:?}");
    let lone = |a: [u8; 4]| {
        let a = std::net::Ipv4Addr::from(a).to_string();
        let detected = all.iter().find(|e| e["source"] == a.as_str()).copied();
        let blocked = events
            .iter()
            .any(|e| e["event"] == "blocked" && e["source"] == a.as_str() && e["origin"] == "scan");
        (detected.cloned(), blocked)
    };
    let (before, blocked) = lone(LONE_BEFORE);
    let before = before.context("the first lone slow scanner was not decided")?;
    assert_eq!(
        (&before["kind"], &before["action"]),
        (&"slow".into(), &"report".into()),
        "{before}"
    );
    assert!(!blocked, "block_slow off, yet it was blocked");
    let (after, blocked) = lone(LONE_AFTER);
    let after = after.context("the second lone slow scanner was not decided")?;
    assert_eq!(
        (&after["kind"], &after["action"]),
        (&"slow".into(), &"block".into()),
        "{after}"
    );
    assert!(blocked, "block_slow on, and no block: {after}");
    // The record, read without a daemon: every probe of the crawl, on both
    // sides of the restart.
    let r = record(&db, "198.18.77.0/24")?;
    let rows = r["record"].as_array().context("no record")?;
    assert_eq!(rows.len(), probes, "{r}");
    let history = std::process::Command::new(scanner_binary()?)
        .args([
            "history",
            "--history",
            &db,
            "--since",
            "1d",
            "--source",
            "198.18.77.0/24",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(text.contains("long record of 198.18.77.0/24"), "{text}");
    assert!(text.contains("from 30 addresses"), "{text}");
    report_lists(&db, "198.18.77.0/24", &dir.0)?;
    Ok(())
}

/// `scanner report --json` lists the slow scan with its record by day.
fn report_lists(db: &str, source: &str, dir: &Path) -> anyhow::Result<()> {
    let html = dir.join("report.html");
    let out = std::process::Command::new(scanner_binary()?)
        .args([
            "report",
            "--history",
            db,
            "--since",
            "1d",
            "--json",
            "--html",
        ])
        .arg(&html)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout)?;
    let slow = r["slow"]
        .as_array()
        .context("no slow scans in the report")?;
    let row = slow
        .iter()
        .find(|s| s["source"] == source)
        .with_context(|| format!("{source} not in {slow:?}"))?;
    assert!(
        row["days"][0]["ports"]
            .as_array()
            .is_some_and(|p| p.len() >= 10),
        "{row}"
    );
    let page = std::fs::read_to_string(&html)?;
    assert!(
        page.contains("Slow scans") && page.contains(source),
        "the page lacks the slow scan"
    );
    Ok(())
}
