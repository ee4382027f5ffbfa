//! What the history costs: the daemon's CPU at 1M tracked sources with
//! and without it (one pinned state, two daemons in turn, the same window),
//! and the size of a day of history at 1,000 probing sources a second,
//! written through the daemon's own store in simulated time.

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use scanner_tests::{Daemon, Lab};
use scanner_userspace::testing::{EventRow, PortHour, Record, Store};

use crate::{
    daemon_cost::{self, cpu_ns},
    throughput,
};

const WINDOW: Duration = Duration::from_secs(60);
const METRICS_PORT: u16 = 9465;
const SOURCES: u64 = 1_048_576;

pub(crate) struct Cost {
    pub tracked: f64,
    pub with_history: f64,
    pub without: f64,
}

pub(crate) struct Size {
    pub bytes: u64,
    pub events: u64,
    pub port_rows: u64,
    pub probes: u64,
    /// Seconds the store took to write the day.
    pub write_s: f64,
}

fn tracked(lab: &Lab) -> f64 {
    scanner_tests::traffic::scrape_metrics(&lab.server, METRICS_PORT)
        .ok()
        .and_then(|m| m.get("scanner_sources_tracked").copied())
        .unwrap_or(0.0)
}

/// A daemon on the lab's pins with its metrics served, attached.
fn start(lab: &Lab, extra: &[&str]) -> anyhow::Result<Daemon> {
    daemon_cost::start(lab, METRICS_PORT, extra)
}

/// A daemon on the lab's pins; its CPU over the window once it tracks them all.
fn window(lab: &Lab, history: &[&str]) -> anyhow::Result<(f64, f64)> {
    let mut daemon = start(lab, history)?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while tracked(lab) < 0.9 * SOURCES as f64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let c0 = cpu_ns(daemon.pid())?;
    let t0 = Instant::now();
    std::thread::sleep(WINDOW);
    let c1 = cpu_ns(daemon.pid())?;
    let cpu = 100.0 * (c1 - c0) as f64 / 1e9 / t0.elapsed().as_secs_f64();
    let n = tracked(lab);
    daemon.stop().context("stopping the daemon")?;
    Ok((cpu, n))
}

pub(crate) fn cost(dir: &Path) -> anyhow::Result<Cost> {
    let lab = Lab::new()?;
    let (_, syn) = throughput::configs(
        throughput::mac(&lab.server, Lab::SERVER_IF)?,
        throughput::mac(&lab.attacker, Lab::ATTACKER_IF)?,
    );
    let syn_file = dir.join("fill.cfg");
    std::fs::write(&syn_file, syn)?;
    // Fill the pinned state once, through a first daemon.
    let db = dir.join("history.db");
    let db_s = db.to_string_lossy().into_owned();
    {
        let mut d = start(&lab, &[])?;
        throughput::blast(&lab, &syn_file, SOURCES)?;
        d.stop()?;
    }
    let (with_history, tracked) = window(&lab, &["--history", &db_s])?;
    let (without, _) = window(&lab, &["--no-history"])?;
    eprintln!(
        "history at {tracked:.0} sources: {with_history:.2}% CPU with, {without:.2}% without"
    );
    Ok(Cost {
        tracked,
        with_history,
        without,
    })
}

/// xorshift64*: reproducible, fast.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A day at 1,000 new sources a second, each probing one random TCP port
/// (the Internet's background), one in a hundred a scanner the daemon
/// detects (a `scan_detected` and a `scan_ended` event each), written as
/// the daemon writes: events in one transaction a second, probes per port
/// added to their hour (here every ten minutes: the rows are the same).
pub(crate) fn size(dir: &Path) -> anyhow::Result<Size> {
    let path = dir.join("day.db");
    let _ = std::fs::remove_file(&path);
    let mut store = Store::open(&path)?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let start_ms: i64 = 1_795_600_800_000;
    let mut events = 0u64;
    let mut port_rows = std::collections::HashSet::new();
    let mut probes = 0u64;
    let began = Instant::now();
    let mut counts = vec![0u64; 65_536];
    for second in 0..86_400i64 {
        for _ in 0..1_000 {
            counts[(rng.next() % 65_536) as usize] += 1;
        }
        probes += 1_000;
        let ts_ms = start_ms + second * 1000;
        let mut batch = Vec::with_capacity(20);
        for i in 0..10u64 {
            let n = rng.next();
            let source = format!("203.0.{}.{}", (n >> 8) % 256, n % 256);
            for event in ["scan_detected", "scan_ended"] {
                let json = serde_json::json!({
                    "ts": "2026-11-26T04:32:22.123Z", "event": event, "source": source, "kind": "syn",
                    "ports": 4 + i, "probes": 5 + i, "top_ports": [22, 23, 80, 443, 3389],
                    "iface": "eth0", "open_ports": [22], "open_hits": 1, "reason": "trw",
                    "decided_after": 4, "sources": 1, "latency_us": 212, "action": "block",
                });
                batch.push(Record::Event(EventRow {
                    ts_ms,
                    event: event.into(),
                    source: Some(source.clone()),
                    kind: Some("syn".into()),
                    proto: None,
                    port: None,
                    json: json.to_string(),
                    id: 0,
                    // A scan's ports as the daemon keeps them at its end.
                    probed: if event == "scan_ended" {
                        vec![(6, 1, 1000)]
                    } else {
                        Vec::new()
                    },
                }));
                events += 1;
            }
        }
        if (second + 1) % 600 == 0 {
            let hour_s = (ts_ms / 1000) - (ts_ms / 1000).rem_euclid(3600);
            let mut hours = Vec::new();
            for (port, c) in counts.iter_mut().enumerate() {
                if *c > 0 {
                    hours.push(PortHour {
                        hour_s,
                        proto: 6,
                        port: port as u16,
                        probes: *c,
                        sources: *c,
                    });
                    port_rows.insert((hour_s, port));
                    *c = 0;
                }
            }
            batch.push(Record::Probes(hours));
        }
        store.write(&batch)?;
    }
    let write_s = began.elapsed().as_secs_f64();
    drop(store);
    let bytes = ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum();
    let _ = std::fs::remove_file(&path);
    Ok(Size {
        bytes,
        events,
        port_rows: port_rows.len() as u64,
        probes,
        write_s,
    })
}

pub(crate) fn markdown(md: &mut String, cost: &Cost, size: &Size) -> anyhow::Result<()> {
    writeln!(md, "## History\n")?;
    writeln!(
        md,
        "The daemon's CPU over a {}-second window at {:.0} tracked sources (one pinned state, \
         a daemon with `--history` then one with `--no-history`, the same idle traffic): \
         **{:.2}%** of a core with history, **{:.2}%** without: **{:+.2} points** \
         (target: at most +0.5). History costs the data path nothing: it is written by the \
         daemon's own thread, from events and from the per-port counts the kernel keeps anyway.\n",
        WINDOW.as_secs(),
        cost.tracked,
        cost.with_history,
        cost.without,
        cost.with_history - cost.without
    )?;
    writeln!(
        md,
        "A day of history at 1,000 probing sources a second ({:.1} M probes, each source one \
         random TCP port; one in a hundred a scanner: {:.2} M `scan_detected`/`scan_ended` \
         events), written through the daemon's store as the daemon writes it (a transaction a \
         second): **{:.0} MiB** ({:.2} M port-hour rows). Writing the day took the store {:.0} s \
         of one core ({:.3}% of a core over the day). With the default 90-day retention that is \
         at most {:.1} GiB at this rate.\n",
        size.probes as f64 / 1e6,
        size.events as f64 / 1e6,
        size.bytes as f64 / (1024.0 * 1024.0),
        size.port_rows as f64 / 1e6,
        size.write_s,
        100.0 * size.write_s / 86_400.0,
        90.0 * size.bytes as f64 / (1024.0 * 1024.0 * 1024.0)
    )?;
    Ok(())
}
