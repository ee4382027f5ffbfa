//! The daemon's own cost: CPU time per second of wall time, and the time of
//! one poll (its metrics' histogram), at idle and with 10k and 1M tracked
//! sources (filled by a trafgen SYN flood from random 2001:db8::/32 sources).

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use scanner_tests::{Daemon, Lab};

use crate::throughput;

/// Two periods of the slowest full scan (30 s), so the 1M row includes them.
const WINDOW: Duration = Duration::from_secs(60);
const METRICS_PORT: u16 = 9464;

pub(crate) struct Row {
    pub label: &'static str,
    pub tracked: f64,
    /// Percent of one core.
    pub cpu: f64,
    /// Mean poll duration, ms.
    pub poll_ms: f64,
    pub polls: f64,
    /// The last read of every tracked source, ms.
    pub full_scan_ms: f64,
}

/// CPU time of every thread of `pid`, in ns (schedstat: precise, unlike
/// the 10 ms ticks of /proc/pid/stat).
pub(crate) fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let text = std::fs::read_to_string(task?.path().join("schedstat"))?;
        total += text
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

fn metrics(lab: &Lab) -> anyhow::Result<std::collections::HashMap<String, f64>> {
    scanner_tests::traffic::scrape_metrics(&lab.server, METRICS_PORT)
}

/// The daemon on the lab's server, its metrics on 127.0.0.1:`port`, with
/// `extra` arguments; attached.
pub(crate) fn start(lab: &Lab, port: u16, extra: &[&str]) -> anyhow::Result<Daemon> {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--metrics-listen", listen.as_str()];
    args.extend_from_slice(extra);
    crate::report_latency::json_daemon(lab, &[], &args)
}

pub(crate) fn measure() -> anyhow::Result<Vec<Row>> {
    let lab = Lab::new()?;
    let mut daemon = start(&lab, METRICS_PORT, &[])?;
    let (_, syn) = throughput::configs(
        throughput::mac(&lab.server, Lab::SERVER_IF)?,
        throughput::mac(&lab.attacker, Lab::ATTACKER_IF)?,
    );
    let syn_file =
        std::env::temp_dir().join(format!("scanner-bench-fill-{}.cfg", std::process::id()));
    std::fs::write(&syn_file, syn)?;
    let mut rows = Vec::new();
    let mut sent = 0u64;
    for (label, target) in [
        ("idle", 0u64),
        ("10k sources", 10_000),
        ("1M sources", 1_048_576),
    ] {
        if target > sent {
            throughput::blast(&lab, &syn_file, target - sent)?;
            sent = target;
        }
        // Let the daemon see them all before the window opens.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let tracked = metrics(&lab)?
                .get("scanner_sources_tracked")
                .copied()
                .unwrap_or(0.0);
            if tracked >= 0.9 * target as f64 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let m0 = metrics(&lab)?;
        let c0 = cpu_ns(daemon.pid())?;
        let t0 = Instant::now();
        std::thread::sleep(WINDOW);
        let c1 = cpu_ns(daemon.pid())?;
        let elapsed = t0.elapsed().as_secs_f64();
        let m1 = metrics(&lab)?;
        let get =
            |m: &std::collections::HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
        let polls = get(&m1, "scanner_poll_duration_seconds_count")
            - get(&m0, "scanner_poll_duration_seconds_count");
        let secs = get(&m1, "scanner_poll_duration_seconds_sum")
            - get(&m0, "scanner_poll_duration_seconds_sum");
        let row = Row {
            label,
            tracked: get(&m1, "scanner_sources_tracked"),
            cpu: 100.0 * (c1 - c0) as f64 / 1e9 / elapsed,
            poll_ms: 1000.0 * secs / polls.max(1.0),
            polls,
            full_scan_ms: 1000.0 * get(&m1, "scanner_full_scan_seconds"),
        };
        eprintln!(
            "daemon {label}: {:.0} sources, {:.2}% CPU, poll {:.1} ms",
            row.tracked, row.cpu, row.poll_ms
        );
        rows.push(row);
    }
    let _ = std::fs::remove_file(&syn_file);
    daemon.stop().context("stopping the daemon")?;
    Ok(rows)
}

pub(crate) fn markdown(md: &mut String, rows: &[Row]) -> anyhow::Result<()> {
    writeln!(md, "## The daemon's cost\n")?;
    writeln!(
        md,
        "The daemon (release build, `--poll-interval 1s`, the default) watching one \
         interface; sources filled by a trafgen SYN flood from random 2001:db8::/32 \
         addresses. CPU is the daemon's CPU time over a {}-second window (schedstat), in \
         percent of one core. A poll (every second) looks up the scans already detected; \
         decisions themselves arrive on the ring buffer. A full scan reads every tracked \
         source and prefix (BPF_MAP_LOOKUP_BATCH, 8,192 entries a call, streamed: only \
         decided entries are kept) to count them and to catch any decision whose ring \
         buffer record was lost; it runs at every poll while that costs under 1% of a \
         core, at least every 30 s, and at once when the kernel counts a lost record. \
         Poll times are the daemon's own `scanner_poll_duration_seconds` histogram (full \
         scans included), the full scan its `scanner_full_scan_seconds`.\n",
        WINDOW.as_secs()
    )?;
    writeln!(
        md,
        "| state | sources tracked | daemon CPU (% of a core) | mean poll (ms) | polls | full scan (ms) |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: |")?;
    for r in rows {
        writeln!(
            md,
            "| {} | {:.0} | {:.2} | {:.1} | {:.0} | {:.1} |",
            r.label, r.tracked, r.cpu, r.poll_ms, r.polls, r.full_scan_ms
        )?;
    }
    writeln!(md)?;
    Ok(())
}
