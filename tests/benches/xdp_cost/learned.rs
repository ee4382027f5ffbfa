//! What an attacker learns before the block: the server ports that answered
//! the scanner (SYN-ACK or RST, seen leaving the server by a capture on its
//! interface), with `--block`, for nmap -sS at -T4 and -T5 and masscan at
//! 100,000 packets per second; and the same scans against a detector that
//! only logs (scanner without `--block`, which is what scanlogd offers).

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::Context as _;
use scanner_tests::{
    Daemon, Lab,
    capture::{Capture, Learned},
    traffic,
};

use crate::median;

const RUNS: usize = 3;
/// Ports the server listens on during the scans.
const OPEN: [u16; 3] = [22, 80, 443];

/// An IPv4 address's octets.
pub(crate) fn v4(s: &str) -> anyhow::Result<[u8; 4]> {
    Ok(s.parse::<Ipv4Addr>()?.octets())
}

struct Scan {
    name: &'static str,
    run: fn(&Lab) -> anyhow::Result<()>,
}

fn nmap(lab: &Lab, timing: &str) -> anyhow::Result<()> {
    traffic::nmap(
        &lab.attacker,
        &[
            "-sS",
            timing,
            "--max-retries",
            "0",
            "--host-timeout",
            "5s",
            "-p",
            "1-1000",
            Lab::SERVER_V4,
        ],
    )?;
    Ok(())
}

fn masscan(lab: &Lab) -> anyhow::Result<()> {
    traffic::masscan_at(lab, "1-1000", 100_000)?;
    Ok(())
}

const SCANS: [Scan; 3] = [
    Scan {
        name: "nmap -sS -T4 -p1-1000",
        run: |lab| nmap(lab, "-T4"),
    },
    Scan {
        name: "nmap -sS -T5 -p1-1000",
        run: |lab| nmap(lab, "-T5"),
    },
    Scan {
        name: "masscan --rate 100000 -p1-1000",
        run: masscan,
    },
];

/// One scan against a fresh daemon: what the capture saw, and the kernel's
/// decision time after the first probe (ms).
fn one(scan: &Scan, block: bool) -> anyhow::Result<(Learned, Option<f64>)> {
    let lab = Lab::new()?;
    let _listeners = OPEN
        .iter()
        .map(|&p| traffic::listen(&lab.server, SocketAddr::from(([0u16; 8], p))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut args = vec!["run", "--iface", Lab::SERVER_IF, "--events", "json"];
    if block {
        args.push("--block");
    }
    let mut daemon = Daemon::start(&lab.server, &args)?;
    daemon.wait_attached(Lab::SERVER_IF)?;
    let capture = Capture::start(
        &lab.server,
        Lab::SERVER_IF,
        v4(Lab::ATTACKER_V4)?,
        v4(Lab::SERVER_V4)?,
        Duration::from_secs(60),
    )?;
    (scan.run)(&lab)?;
    let event = daemon.wait_for_event(
        |e| e["event"] == "scan_detected" && e["source"] == Lab::ATTACKER_V4,
        Duration::from_secs(30),
    )?;
    let learned = capture.finish()?;
    daemon.stop()?;
    // The kernel decided `latency_us` before the event was written.
    let reported = humantime::parse_rfc3339(event["ts"].as_str().context("event ts")?)?;
    let decided = reported - Duration::from_micros(event["latency_us"].as_u64().unwrap_or(0));
    let after = learned
        .first_probe
        .map(|f| decided.duration_since(f).unwrap_or_default().as_secs_f64() * 1000.0);
    Ok((learned, after))
}

pub(crate) struct Row {
    pub scan: &'static str,
    /// Ports answered with `--block`, per run.
    pub answered: Vec<usize>,
    pub open: Vec<usize>,
    pub decided_ms: Vec<f64>,
    /// Ports answered without blocking (one run).
    pub unblocked: usize,
    pub unblocked_open: usize,
}

pub(crate) fn measure() -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for scan in &SCANS {
        let mut row = Row {
            scan: scan.name,
            answered: Vec::new(),
            open: Vec::new(),
            decided_ms: Vec::new(),
            unblocked: 0,
            unblocked_open: 0,
        };
        for _ in 0..RUNS {
            let (learned, decided) = one(scan, true)?;
            eprintln!(
                "{}: {} ports answered ({} open), {} probes passed, decided {decided:?} ms after the first probe",
                scan.name,
                learned.answered.len(),
                learned.open.len(),
                learned.probes
            );
            row.answered.push(learned.answered.len());
            row.open.push(learned.open.len());
            row.decided_ms.extend(decided);
        }
        let (learned, _) = one(scan, false)?;
        row.unblocked = learned.answered.len();
        row.unblocked_open = learned.open.len();
        rows.push(row);
    }
    Ok(rows)
}

fn med(v: &[usize]) -> usize {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The median ports answered with `--block` for each scan.
pub(crate) fn answered_medians(rows: &[Row]) -> Vec<(&'static str, usize)> {
    rows.iter().map(|r| (r.scan, med(&r.answered))).collect()
}

pub(crate) fn markdown(md: &mut String, rows: &[Row]) -> anyhow::Result<()> {
    writeln!(md, "## What a scanner learns before the block\n")?;
    writeln!(
        md,
        "Ports of the server that answered the scanner (a SYN-ACK or an RST seen leaving \
         the server, by an AF_PACKET capture on its interface), so what the scan learned, \
         open or closed. The server listens on {OPEN:?}. With `--block`: {RUNS} runs each \
         against a fresh daemon, every run listed; decided: the kernel's decision after \
         the scan's first probe reached the server (the daemon's event time, less the \
         latency it reports, against the capture's kernel timestamp: millisecond resolution). Without blocking: the same scan \
         against a detector that only logs (scanner without `--block`; scanlogd cannot \
         block either, so it leaves the scanner the same answers). psad, which can block \
         through iptables, is not installed on this machine and was not measured.\n"
    )?;
    writeln!(
        md,
        "| scan | ports answered with --block | of them open | decided after the first probe (ms, median) | ports answered, log only | of them open |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: |")?;
    let list = |v: &[usize]| {
        v.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for r in rows {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            r.scan,
            list(&r.answered),
            list(&r.open),
            median(r.decided_ms.clone()).map_or("-".to_owned(), |m| if m < 1.0 {
                "< 1".to_owned()
            } else {
                format!("{m:.1}")
            }),
            r.unblocked,
            r.unblocked_open
        )?;
    }
    writeln!(md)?;
    Ok(())
}
