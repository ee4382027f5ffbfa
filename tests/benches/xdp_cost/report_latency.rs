//! From the kernel's decision to the report: many scanners, one after
//! another, each deciding on its own (disjoint ports, one per /24, so
//! neither decoy groups nor prefixes hold anything back). The decision's
//! time is the deciding probe's crossing of the server's interface (an
//! AF_PACKET capture's kernel timestamp: XDP decides on that very packet,
//! just before the capture sees it); the report's time is when the event
//! line came out of the daemon's stdout, when journald received its entry,
//! and when its syslog message reached a collector's socket.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::UdpSocket,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use scanner_common::IPPROTO_TCP;
use scanner_tests::{
    Daemon, Lab, TempDir,
    capture::Capture,
    journald,
    packets::{SYN, eth, ipv4, tcp},
    traffic,
};
use serde_json::Value;

/// Scanners in the run.
const SCANNERS: usize = 200;
/// SYNs each sends, all to closed ports of its own.
const PROBES: u16 = 5;
/// The gap between two scanners: each decision is reported on its own.
const GAP: Duration = Duration::from_millis(20);

/// The daemon runs at the packaged unit's niceness (`Nice=-10` in
/// packaging/scanner.service): on two cores a scan's burst otherwise keeps
/// it waiting for a CPU.
pub(crate) const NICE: [&str; 3] = ["nice", "-n", "-10"];

/// The release daemon on the lab's server as the packaged unit runs it
/// (`NICE`, a history file and so the long memory, which walks the first
/// probes at every poll), its events as JSON on stdout and in the
/// journal, with `extra` arguments; attached. The history file is in
/// `history` (removed with it).
pub(crate) fn reporting_daemon(
    lab: &Lab,
    history: &TempDir,
    extra: &[&str],
) -> anyhow::Result<Daemon> {
    let file = history.0.join("history.db");
    let file = file.to_string_lossy();
    let mut args = vec!["--log", "journal", "--history", &file];
    args.extend_from_slice(extra);
    json_daemon(lab, &NICE, &args)
}

/// The daemon on the lab's server, run through `wrapper` (empty: directly),
/// its events as JSON on stdout, with `extra` arguments; attached.
pub(crate) fn json_daemon(lab: &Lab, wrapper: &[&str], extra: &[&str]) -> anyhow::Result<Daemon> {
    let mut args = vec!["run", "--iface", Lab::SERVER_IF, "--events", "json"];
    args.extend_from_slice(extra);
    let mut daemon = Daemon::start_via(&lab.server, wrapper, &[], &args)?;
    daemon.wait_attached(Lab::SERVER_IF)?;
    Ok(daemon)
}

/// Milliseconds from the decision to each report, one per scanner.
pub(crate) struct Latency {
    pub stdout: Vec<f64>,
    pub journal: Vec<f64>,
    pub syslog: Vec<f64>,
    /// The daemon's own `latency_us` (decision to the event's making), ms.
    pub reported: Vec<f64>,
    /// From the scanner's first probe to its line on stdout, ms.
    pub first_probe: Vec<f64>,
}

/// The address of scanner `i`: 198.19.i.7, a /24 of its own.
fn scanner(i: usize) -> [u8; 4] {
    [198, 19, i as u8, 7]
}

fn frames(i: usize) -> Vec<Vec<u8>> {
    let base = 1000 + (i as u16) * PROBES;
    (0..PROBES)
        .map(|p| {
            eth(
                0x0800,
                &[],
                &ipv4(scanner(i), IPPROTO_TCP, 5, 0, &tcp(base + p, SYN, 5)),
            )
        })
        .collect()
}

/// When each scan's `scan_detected` syslog message arrived, by source.
type Arrivals = Arc<Mutex<HashMap<String, SystemTime>>>;

/// A syslog collector in the server's namespace, until `stop`: its port,
/// what it received, its thread.
struct Collector {
    port: u16,
    seen: Arrivals,
    thread: std::thread::JoinHandle<()>,
}

fn collector(lab: &Lab, stop: Arc<AtomicBool>) -> anyhow::Result<Collector> {
    let socket = lab
        .server
        .enter(|| UdpSocket::bind((Lab::SERVER_V4, 0)))??;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let port = socket.local_addr()?.port();
    let seen = Arrivals::default();
    let into = Arc::clone(&seen);
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            let Ok(n) = socket.recv(&mut buf) else {
                continue;
            };
            let at = SystemTime::now();
            let text = String::from_utf8_lossy(&buf[..n]);
            let Some(json) = text
                .find('{')
                .and_then(|i| serde_json::from_str::<Value>(&text[i..]).ok())
            else {
                continue;
            };
            if json["event"] == "scan_detected"
                && let (Some(source), Ok(mut seen)) = (json["source"].as_str(), into.lock())
            {
                seen.entry(source.to_owned()).or_insert(at);
            }
        }
    });
    Ok(Collector { port, seen, thread })
}

fn ms(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

/// Both runs: the daemon reporting only, and with `--block`.
pub(crate) struct Latencies {
    pub report: Latency,
    /// With `--block`: each detection blocks its source and, before its
    /// report, counts the connections the block spares (`spared_flows`).
    pub block: Latency,
}

pub(crate) fn measure() -> anyhow::Result<Latencies> {
    Ok(Latencies {
        report: measure_one(false)?,
        block: measure_one(true)?,
    })
}

/// One run; `block`: the daemon blocks what it detects.
fn measure_one(block: bool) -> anyhow::Result<Latency> {
    let _journal = journald::Journald::ensure()?;
    let lab = Lab::new()?;
    let stop = Arc::new(AtomicBool::new(false));
    let Collector {
        port,
        seen: syslog,
        thread: listener,
    } = collector(&lab, Arc::clone(&stop))?;
    let dir = std::env::temp_dir().join(format!("scanner-bench-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("scanner.toml");
    std::fs::write(
        &config,
        format!(
            "[signals]\nsyslog = \"udp://{}:{port}\"\nprobes = false\n",
            Lab::SERVER_V4
        ),
    )?;
    let config = config.to_string_lossy().into_owned();
    let history = TempDir::new("bench-history")?;
    let mut args = vec!["--config", config.as_str()];
    if block {
        args.push("--block");
    }
    let mut daemon = reporting_daemon(&lab, &history, &args)?;
    // A block drops the deciding probe in XDP, before a capture on the
    // server's interface would see it: it is then taken leaving the
    // attacker's (a veth pair: microseconds before XDP runs on it).
    let (ns, iface) = if block {
        (&lab.attacker, Lab::ATTACKER_IF)
    } else {
        (&lab.server, Lab::SERVER_IF)
    };
    let capture = Capture::start(
        ns,
        iface,
        [0; 4],
        crate::learned::v4(Lab::SERVER_V4)?,
        Duration::from_secs(60),
    )?;
    for i in 0..SCANNERS {
        traffic::send_frames(
            &lab.attacker,
            Lab::ATTACKER_IF,
            frames(i).into_iter(),
            Duration::from_secs(1),
        )?;
        std::thread::sleep(GAP);
    }
    let last = format!("198.19.{}.7", SCANNERS - 1);
    daemon.wait_for_event(
        |e| e["event"] == "scan_detected" && e["source"] == last.as_str(),
        Duration::from_secs(30),
    )?;
    let syns = capture.finish()?.syns;
    let events = daemon.timed_events();
    let pid = format!("_PID={}", daemon.pid());
    let entries = journald::wait_entries(
        &["-t", "scanner", "SCANNER_EVENT=scan_detected", &pid],
        |e| e["SCANNER_SOURCE"] == last.as_str(),
        Duration::from_secs(10),
    )?;
    // Let the last syslog messages land.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let _ = listener.join();
    daemon.stop()?;
    let _ = std::fs::remove_dir_all(&dir);

    let journal: HashMap<String, SystemTime> = entries
        .iter()
        .filter_map(|e| {
            Some((
                e["SCANNER_SOURCE"].as_str()?.to_owned(),
                journald::received_at(e)?,
            ))
        })
        .collect();
    let syslog = syslog
        .lock()
        .map_err(|_| anyhow::anyhow!("collector poisoned"))?
        .clone();
    let mut latency = Latency {
        stdout: Vec::new(),
        journal: Vec::new(),
        syslog: Vec::new(),
        reported: Vec::new(),
        first_probe: Vec::new(),
    };
    for (at, e) in &events {
        let Some(source) = e["source"]
            .as_str()
            .filter(|_| e["event"] == "scan_detected")
        else {
            continue;
        };
        let Ok(addr) = source.parse::<std::net::Ipv4Addr>() else {
            continue;
        };
        let octets = addr.octets();
        // The deciding probe: the one that brought the scanner's distinct
        // ports to the count it was decided at.
        let after = e["decided_after"].as_u64().context("decided_after")? as usize;
        let mut ports = Vec::new();
        let mut decided = None;
        let mut first = None;
        for (t, src, dport) in &syns {
            if *src != octets {
                continue;
            }
            first.get_or_insert(*t);
            if !ports.contains(dport) {
                ports.push(*dport);
                if ports.len() == after {
                    decided = Some(*t);
                    break;
                }
            }
        }
        let (Some(decided), Some(first)) = (decided, first) else {
            continue;
        };
        latency.stdout.push(ms(decided, *at));
        latency.first_probe.push(ms(first, *at));
        if let Some(us) = e["latency_us"].as_f64() {
            latency.reported.push(us / 1000.0);
        }
        if let Some(t) = journal.get(source) {
            latency.journal.push(ms(decided, *t));
        }
        if let Some(t) = syslog.get(source) {
            latency.syslog.push(ms(decided, *t));
        }
    }
    anyhow::ensure!(
        latency.stdout.len() == SCANNERS,
        "{} of {SCANNERS} scanners matched a decision and a report",
        latency.stdout.len()
    );
    Ok(latency)
}

/// The `p`th percentile (nearest rank) of `v`.
pub(crate) fn percentile(v: &[f64], p: f64) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.saturating_sub(1)).copied()
}

pub(crate) fn markdown(md: &mut String, both: &Latencies) -> anyhow::Result<()> {
    let l = &both.report;
    writeln!(md, "## From the decision to the report\n")?;
    writeln!(
        md,
        "{SCANNERS} scanners one after another, {GAP:?} apart, each {PROBES} raw SYNs to closed \
         ports of its own from an address of its own /24 (so neither a decoy group nor a prefix \
         holds a detection back), against the daemon as the packaged unit runs it (release build, `Nice=-10`, a history file and so the long memory, which reads the first probes at every poll) with `--events json --log journal` and `[signals] syslog` to a UDP \
         collector in the server's namespace. The decision is the deciding probe crossing the \
         server's interface (an AF_PACKET capture's kernel timestamp; XDP decides on that \
         packet just before the capture sees it); the report is the event line read from the \
         daemon's stdout, journald's receive time of its entry (`__REALTIME_TIMESTAMP`), and \
         the collector's receive time of its syslog message. `latency_us` is the daemon's \
         own figure in the event: the kernel's decision to the event's making.\n"
    )?;
    writeln!(
        md,
        "| decision to | median (ms) | p99 (ms) | max (ms) | reports |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: | ---: |")?;
    let row = |md: &mut String, what: &str, v: &[f64]| -> anyhow::Result<()> {
        let cell = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
        writeln!(
            md,
            "| {what} | {} | {} | {} | {} |",
            cell(percentile(v, 50.0)),
            cell(percentile(v, 99.0)),
            cell(percentile(v, 100.0)),
            v.len()
        )?;
        Ok(())
    };
    row(md, "the event made (`latency_us`)", &l.reported)?;
    row(md, "the line on stdout", &l.stdout)?;
    row(md, "the journal entry", &l.journal)?;
    row(md, "the syslog message at the collector", &l.syslog)?;
    row(
        md,
        "(from the scanner's first probe) the line on stdout",
        &l.first_probe,
    )?;
    let b = &both.block;
    row(
        md,
        "with `--block`: the event made (`latency_us`)",
        &b.reported,
    )?;
    row(md, "with `--block`: the line on stdout", &b.stdout)?;
    row(md, "with `--block`: the journal entry", &b.journal)?;
    writeln!(md)?;
    writeln!(
        md,
        "With `--block` (a second run, the same scanners against a fresh daemon), each \
         detection blocks its source (the kernel did, at the deciding probe; the daemon reports \
         it) and, before its report, counts the TCP connections the host has open with the \
         source, which the block spares (`spared_flows`, `protect_established = \"flows\"`, \
         the default). The daemon asks sock_diag for the connections with that address: the \
         kernel picks them, but it walks every bucket of the host's established-connection \
         table to do so (262,144 buckets here, sized by memory), once for both families \
         (inet_diag's TCPDIAG_GETSOCK request; sock_diag's own asks one family at a time): \
         1.5 ms with the table in the cache, against 11.5 ms for /proc/net/tcp and tcp6, \
         which it read before. The deciding \
         probe is dropped before a capture on the server's interface sees it: its time here \
         is its leaving the attacker's end of the veth pair.\n"
    )?;
    writeln!(
        md,
        "Where the time goes from the decision to the event. These figures come from a build \
         timed at each stage, in this scenario on this machine (2026-12-07, medians of 200 \
         decisions), not from this run:\n\n\
         - **Waking on the ring buffer: 85 µs.** This is epoll, then the daemon's task on its \
           current-thread runtime.\n\
         - **Reading the entry and the detector's record: 65 µs more.**\n\
         - **The decoy hold's check.** A detection waits only while an undecided source may \
           belong to its group. Finding such sources used to walk SOURCES, which cost 250 µs at \
           the default 32,768 entries whatever the map held. The walk was reused for 50 ms, so \
           it ran before half of these reports. Now the daemon reads the per-CPU rings of the \
           latest admissions in one system call instead (see docs/design.md). That took the \
           median of `latency_us` from 0.31 to 0.18-0.21 ms in four runs.\n\
         - **Writing the event: about 120 µs.** This covers the JSON line, stdout (a pipe), the \
           journal (a datagram to journald's socket) and the syslog queue (its own thread \
           sends).\n\n\
         The tail was the daemon's periodic reads, which held the ring buffer \
         unread while they ran. Before, a maximum of 10-16 ms showed in every run:\n\n\
         - **The open-port refresh, every 2 s: 12-17 ms.** Nearly all of it was \
           /proc/net/tcp and tcp6. To print the few listeners, they walk every bucket of the \
           host's established-connection table, 5 ms a file here. The daemon now asks \
           sock_diag for listeners only, which skips that table.\n\
         - **The full scan's sweep of the million first-probe slots: 4-7 ms.** That is \
           32 MiB, read every 2-3 s.\n\
         - **The long memory's walk of the same slots for new probes: 3-4 ms**, at every \
           poll.\n\n\
         The last two now go 2 MiB at a time, with the ring buffer read between steps. The \
         maximum fell to 2.8-3.6 ms in the runs after these changes. One read on the way is \
         left, with `--block`: the count of the connections the block spares (above).\n"
    )?;
    Ok(())
}

/// The targets' rows (issue 27): each report at most 1 ms after the
/// decision in the median, 5 ms at the 99th percentile.
pub(crate) fn targets(md: &mut String, both: &Latencies) -> anyhow::Result<()> {
    let (l, b) = (&both.report, &both.block);
    for (what, v) in [
        ("stdout", &l.stdout),
        ("the journal", &l.journal),
        ("the syslog collector", &l.syslog),
        ("stdout, with `--block`", &b.stdout),
        ("the journal, with `--block`", &b.journal),
    ] {
        let (Some(median), Some(p99)) = (percentile(v, 50.0), percentile(v, 99.0)) else {
            writeln!(
                md,
                "| decision to {what}: median at most 1 ms, p99 at most 5 ms | no reports | missed |"
            )?;
            continue;
        };
        let met = median <= 1.0 && p99 <= 5.0 && v.len() == SCANNERS;
        writeln!(
            md,
            "| decision to {what}: median at most 1 ms, p99 at most 5 ms | {median:.2} ms, {p99:.2} ms ({} of {SCANNERS} reported) | {} |",
            v.len(),
            if met { "met" } else { "missed" }
        )?;
    }
    Ok(())
}
