//! Running it as an operator does: Prometheus metrics, the open-ports
//! audit, configuration reload on SIGHUP, sd_notify with the least
//! capabilities, and the live `scanner top` dashboard in a real terminal.

use std::{
    collections::HashMap,
    os::unix::net::UnixDatagram,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use scanner_tests::{
    Daemon, Lab,
    daemon::{SOCKET_DIR, scanner_binary},
    require_root,
    scenario::Scenario,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// The daemon counts tracked sources at its full scans, which come at
/// most 30 s apart (more often when a scan is quick, but a debug build
/// under a loaded suite is not): wait for two of them.
const FULL_SCANS: Duration = Duration::from_secs(70);

/// Polls `f` until it returns Some, or fails after `timeout`.
fn until<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn scrape(sc: &Scenario, port: u16) -> anyhow::Result<HashMap<String, f64>> {
    scanner_tests::traffic::scrape_metrics(&sc.lab.server, port)
}

#[test]
fn metrics_are_served_in_prometheus_text() -> anyhow::Result<()> {
    if !require_root("metrics_are_served_in_prometheus_text") {
        return Ok(());
    }
    let mut sc = Scenario::start(
        &[22],
        &[],
        &["--block", "--metrics-listen", "127.0.0.1:9464"],
    )?;
    let src = Lab::ATTACKER_V4;
    sc.answered(None, "1-200")?;
    sc.wait("blocked", src)?;
    let iface = format!("{{iface=\"{}\"}}", Lab::SERVER_IF);
    // Metrics follow the kernel at each poll: wait for the one after the scan.
    let seen = format!("scanner_packets_seen_total{iface}");
    let mut last = HashMap::new();
    let m = until(FULL_SCANS, "metrics after the scan", || {
        let m = scrape(&sc, 9464)?;
        // Tracked sources are counted by full scans.
        let done = m.get("scanner_blocks_active").copied() == Some(1.0)
            && m.get(&seen).copied().unwrap_or(0.0) >= 200.0
            && m.get("scanner_sources_tracked").copied().unwrap_or(0.0) >= 1.0;
        last.clone_from(&m);
        Ok(done.then_some(m))
    })
    .with_context(|| {
        let show = |k: &str| format!("{k} = {:?}", last.get(k));
        format!(
            "the last scrape had {}, {}, {}",
            show("scanner_blocks_active"),
            show(&seen),
            show("scanner_sources_tracked")
        )
    })?;
    let get = |name: &str| m.get(name).copied().unwrap_or(-1.0);
    assert!(
        get(&format!("scanner_packets_seen_total{iface}")) >= 200.0,
        "{m:#?}"
    );
    assert!(
        get(&format!("scanner_packets_passed_total{iface}")) > 0.0,
        "{m:#?}"
    );
    assert!(
        get(&format!("scanner_packets_dropped_total{iface}")) > 0.0,
        "blocked probes: {m:#?}"
    );
    assert_eq!(get(&format!("scanner_parse_failures_total{iface}")), 0.0);
    assert_eq!(get("scanner_detections_total{kind=\"syn\"}"), 1.0, "{m:#?}");
    assert_eq!(get("scanner_blocks_total{reason=\"scan\"}"), 1.0, "{m:#?}");
    assert!(get("scanner_sources_tracked") >= 1.0);
    let fill = get("scanner_sources_fill_ratio");
    assert!(fill > 0.0 && fill < 1.0, "{fill}");
    assert_eq!(get("scanner_sources_capacity"), 1_048_576.0);
    assert_eq!(get("scanner_events_dropped_total"), 0.0);
    assert!(get("scanner_poll_duration_seconds_count") >= 1.0, "{m:#?}");
    assert!(
        m.keys()
            .any(|k| k.starts_with("scanner_poll_duration_seconds_bucket{le="))
    );
    sc.stop()?;
    Ok(())
}

#[test]
fn the_ports_audit_shows_services_owners_and_probes() -> anyhow::Result<()> {
    if !require_root("the_ports_audit_shows_services_owners_and_probes") {
        return Ok(());
    }
    let mut sc = Scenario::start(&[21, 23, 8080], &[53], &[])?;
    let src = Lab::ATTACKER_V4;
    sc.answered(None, "1-100")?;
    sc.wait("scan_detected", src)?;

    let rows = sc.cli_json(&["ports", "--json"])?;
    let row = |proto: &str, port: u16| -> Value {
        rows.as_array()
            .into_iter()
            .flatten()
            .find(|r| r["proto"] == proto && r["port"] == port)
            .cloned()
            .unwrap_or_default()
    };
    let telnet = row("tcp", 23);
    assert_eq!(telnet["service"], "telnet", "{rows:#}");
    assert!(
        telnet["risk"]
            .as_str()
            .is_some_and(|r| r.contains("Telnet"))
    );
    assert_eq!(telnet["address"], "::");
    assert_eq!(
        (
            telnet["all_addresses"].as_bool(),
            telnet["exposed"].as_bool()
        ),
        (Some(true), Some(true))
    );
    // The test process holds the listeners.
    assert_eq!(telnet["pid"], std::process::id(), "{telnet}");
    assert!(telnet["probes"].as_u64() >= Some(1), "{telnet}");
    assert_eq!(telnet["sources"], 1, "{telnet}");
    assert!(telnet["probes_last_hour"].as_u64() >= Some(1), "{telnet}");
    assert_eq!(row("tcp", 21)["service"], "ftp");
    assert_eq!(row("tcp", 8080)["service"], "http-alt");
    let dns = row("udp", 53);
    assert_eq!(dns["service"], "domain");
    assert_eq!(dns["probes"], 0, "a TCP scan does not touch UDP 53");

    // The most probed ports, open or closed, from the daemon.
    let probed = sc.cli_json(&["ports", "--probed", "--json", "--limit", "500"])?;
    let probed = probed.as_array().cloned().unwrap_or_default();
    assert_eq!(probed.len(), 100, "every scanned port, once: {probed:#?}");
    let counts: Vec<u64> = probed.iter().filter_map(|h| h["probes"].as_u64()).collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "most probed first: {counts:?}"
    );
    let telnet = probed
        .iter()
        .find(|h| h["port"] == 23)
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (telnet["open"].as_bool(), telnet["sources"].as_u64()),
        (Some(true), Some(1))
    );
    assert_eq!(telnet["proto"], "tcp", "as `scanner ports --json` names it");
    let closed = probed
        .iter()
        .find(|h| h["port"] == 25)
        .cloned()
        .unwrap_or_default();
    assert_eq!(closed["open"], false, "{closed}");
    let top3 = sc.cli_json(&["ports", "--probed", "--json", "--limit", "3"])?;
    assert_eq!(top3.as_array().map(Vec::len), Some(3));

    // The table for people names the risk and flags all-address binds.
    let bin = scanner_binary()?;
    let out = sc
        .lab
        .server
        .command(bin.to_str().context("path")?)
        .args(["ports", "--socket"])
        .arg(sc.daemon.socket())
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table
        .lines()
        .find(|l| l.contains(" 23 "))
        .unwrap_or_default();
    assert!(
        line.contains("telnet") && line.contains("! all addresses") && line.contains("Telnet"),
        "{table}"
    );
    // Both tables head their probe counts alike.
    let probed = sc
        .lab
        .server
        .command(bin.to_str().context("path")?)
        .args(["ports", "--probed", "--socket"])
        .arg(sc.daemon.socket())
        .output()?;
    let probed = String::from_utf8_lossy(&probed.stdout);
    // A daemon started a minute ago: "last hour" says it covers less.
    let counts = "probes last 1m sources last 1m";
    for t in [&table, &probed] {
        let header: Vec<&str> = t
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert!(header.join(" ").contains(counts), "{t}");
    }
    sc.stop()?;
    Ok(())
}

#[test]
fn sighup_reloads_the_config_in_place() -> anyhow::Result<()> {
    if !require_root("sighup_reloads_the_config_in_place") {
        return Ok(());
    }
    let dir = PathBuf::from(SOCKET_DIR).join(format!("reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("scanner.toml");
    let src = Lab::ATTACKER_V4;
    // The attacker starts allowlisted: its scan is neither counted nor blocked.
    std::fs::write(
        &config,
        format!("[response]\nblock = true\nallowlist = [\"{src}/32\"]\n"),
    )?;
    let config_str = config.to_string_lossy().into_owned();
    let mut sc = Scenario::start(&[22], &[], &["--config", &config_str])?;
    let programs = sc.xdp_programs()?;
    assert_eq!(
        sc.answered(None, "1-100")?,
        100,
        "allowlisted: nothing blocked"
    );

    std::fs::write(&config, "[response]\nblock = true\nblock_ttl = \"7m\"\n")?;
    sc.daemon.signal(libc::SIGHUP)?;
    let reloaded = sc
        .daemon
        .wait_for_event(|e| e["event"] == "config_reloaded", WAIT)?;
    assert!(
        reloaded["detail"]
            .as_str()
            .is_some_and(|d| d.contains("allowlist +0 -1")),
        "{reloaded}"
    );
    // Same daemon, same program, and now the scan is seen and blocked with
    // the new TTL.
    sc.answered(None, "1-100")?;
    let blocked = sc.wait("blocked", src)?;
    assert_eq!(blocked["ttl_s"], 420, "{blocked}");
    assert_eq!(sc.xdp_programs()?, programs, "never detached");

    // An invalid file is rejected with its reason; the old config stays.
    std::fs::write(&config, "[response]\nblock_ttl = 5\n")?;
    sc.daemon.signal(libc::SIGHUP)?;
    let rejected = sc
        .daemon
        .wait_for_event(|e| e["event"] == "config_rejected", WAIT)?;
    let why = rejected["detail"].as_str().unwrap_or_default();
    assert!(why.contains("scanner.toml:2"), "names file and line: {why}");
    let out = Command::new(scanner_binary()?)
        .args(["block", "198.18.0.77", "--socket"])
        .arg(sc.daemon.socket())
        .output()?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("for 7m"),
        "old TTL kept"
    );
    let events = sc.stop()?;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "scan_detected")
            .count(),
        1,
        "state kept across reloads: {events:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn systemd_hears_ready_from_a_daemon_with_least_capabilities() -> anyhow::Result<()> {
    if !require_root("systemd_hears_ready_from_a_daemon_with_least_capabilities") {
        return Ok(());
    }
    let lab = Lab::new()?;
    let notify_path = PathBuf::from(SOCKET_DIR).join(format!("notify-{}", std::process::id()));
    let _ = std::fs::remove_file(&notify_path);
    std::fs::create_dir_all(SOCKET_DIR)?;
    let notify = UnixDatagram::bind(&notify_path)?;
    notify.set_read_timeout(Some(WAIT))?;
    let notify_str = notify_path.to_string_lossy().into_owned();
    // The capabilities packaging/scanner.service grants, and no others.
    let caps = "-all,+bpf,+net_admin,+perfmon";
    let wrapper = [
        "setpriv",
        "--inh-caps",
        caps,
        "--ambient-caps",
        caps,
        "--bounding-set",
        caps,
        "--",
    ];
    let mut daemon = Daemon::start_via(
        &lab.server,
        &wrapper,
        &[("NOTIFY_SOCKET", &notify_str)],
        &["run", "--iface", Lab::SERVER_IF, "--events", "json"],
    )?;
    daemon.wait_attached(Lab::SERVER_IF)?;
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).context("no sd_notify message")?;
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.starts_with("READY=1"), "{msg}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid()))?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .unwrap_or_default();
    // CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39).
    assert_eq!(
        u64::from_str_radix(eff, 16)?,
        (1 << 12) | (1 << 38) | (1 << 39),
        "CapEff {eff}"
    );
    daemon.signal(libc::SIGTERM)?;
    let n = notify.recv(&mut buf)?;
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("STOPPING=1"));
    daemon.wait_exit()?;
    let _ = std::fs::remove_file(&notify_path);
    Ok(())
}

/// A tmux session running a command; killed on drop.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(command: &str) -> anyhow::Result<Self> {
        let name = format!("scanner-top-{}", std::process::id());
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &name])
            .output();
        // CI runs without a terminal: tmux's client wants TERM set.
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
        let ok = Command::new("tmux")
            .env("TERM", term)
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "160",
                "-y",
                "45",
                command,
            ])
            .status()?
            .success();
        anyhow::ensure!(ok, "tmux new-session failed");
        Ok(Self { name })
    }

    fn screen(&self) -> anyhow::Result<String> {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn keys(&self, keys: &str) -> anyhow::Result<()> {
        let ok = Command::new("tmux")
            .args(["send-keys", "-t", &self.name, keys])
            .status()?
            .success();
        anyhow::ensure!(ok, "tmux send-keys failed");
        Ok(())
    }

    fn wait_screen(&self, what: &str, want: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let mut last = String::new();
        until(WAIT, what, || {
            last = self.screen()?;
            Ok(want(&last).then(|| last.clone()))
        })
        .with_context(|| format!("screen:\n{last}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .output();
    }
}

#[test]
fn top_shows_the_daemon_live_and_blocks_from_the_keyboard() -> anyhow::Result<()> {
    if !require_root("top_shows_the_daemon_live_and_blocks_from_the_keyboard") {
        return Ok(());
    }
    let mut sc = Scenario::start(&[22, 80], &[], &[])?;
    let src = Lab::ATTACKER_V4;
    // Ports 20-30 are probed twice: the most probed, open 22 among them.
    sc.answered(None, "20-30")?;
    sc.answered(None, "1-100")?;
    sc.wait("scan_detected", src)?;
    let bin = scanner_binary()?;
    // The shell stays after top exits, so its status (or error) is on screen.
    let command = format!(
        "{} top --interval 300ms --socket {}; echo top exited $?; sleep 60",
        bin.display(),
        sc.daemon.socket().display()
    );
    let tmux = Tmux::start(&command)?;
    let screen = tmux.wait_screen("the scanner on screen", |s| {
        s.contains(src) && s.contains("scan_detected") && s.contains("tcp/22")
    })?;
    assert!(screen.contains("scanner top"), "{screen}");
    assert!(screen.contains("veth-srv (native)"), "{screen}");
    assert!(screen.contains("OPEN"), "open ports are marked: {screen}");
    let row = screen
        .lines()
        // Ended once quiet for the scenario's 2 s.
        .find(|l| l.contains(src) && (l.contains("detected") || l.contains("ended")))
        .unwrap_or_default();
    assert!(row.contains("syn"), "kind shown: {screen}");

    // b blocks the selected (worst) source, u lifts the block.
    tmux.keys("b")?;
    let blocked = sc.wait("blocked", src)?;
    assert_eq!(blocked["reason"], "manual");
    tmux.wait_screen("the block on screen", |s| {
        s.contains(&format!("blocked {src}")) && s.contains(" left")
    })?;
    tmux.keys("u")?;
    sc.wait("unblocked", src)?;
    tmux.wait_screen("the unblock on screen", |s| {
        s.contains(&format!("unblocked {src}"))
    })?;
    tmux.keys("q")?;
    tmux.wait_screen("top to quit", |s| s.contains("top exited 0"))?;
    sc.stop()?;
    Ok(())
}
