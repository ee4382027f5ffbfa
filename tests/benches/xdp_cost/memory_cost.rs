//! What the long memory (`[slow]`) costs at Internet background rates: a
//! week of 5,000 new sources a day, each probing three ports (a fifth of
//! them back on a later day), taken through the daemon's own memory code
//! (`LongMemory`: the same store, the same walks after every poll that
//! brought probes) in simulated time. Rows and MiB on disk at the end of the
//! week, the CPU all that took spread over the week, and the time to walk
//! a new probe's records (its source's and its /24's) against the week.

use std::{fmt::Write as _, net::IpAddr, path::Path, time::Duration};

use scanner_userspace::testing::{LongMemory, Probed};

use crate::{daemon_cost::cpu_ns, history_cost::Rng};

const DAYS: i64 = 7;
const SOURCES_A_DAY: u64 = 5_000;
const PORTS_EACH: u64 = 3;
/// Ports background scanners favour (a probe picks one of these, or any).
const FAVOURITE: [u16; 12] = [
    22, 23, 80, 443, 445, 1433, 3306, 3389, 5900, 6379, 8080, 8443,
];
const DAY_MS: i64 = 86_400_000;
/// Walks timed against the week's memory.
const WALKS: usize = 2_000;

pub(crate) struct Figures {
    pub probes: u64,
    pub rows: u64,
    pub bytes: u64,
    pub cpu_s: f64,
    pub decided: usize,
    pub walk_median_us: f64,
    pub walk_p99_us: f64,
}

fn address(rng: &mut Rng) -> IpAddr {
    // Spread over the whole IPv4 space, as background sources are; these
    // are rows in a file, never packets.
    IpAddr::from((rng.next() as u32).to_be_bytes())
}

fn port(rng: &mut Rng) -> u16 {
    let n = rng.next();
    if n.is_multiple_of(3) {
        (n >> 8) as u16
    } else {
        FAVOURITE[(n >> 8) as usize % FAVOURITE.len()]
    }
}

pub(crate) fn measure(dir: &Path) -> anyhow::Result<Figures> {
    let path = dir.join("memory.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let mut memory = LongMemory::open(&path)?;
    let mut rng = Rng(0x51ED_2701_A5A5_0F0F);
    let start_ms: i64 = 1_795_600_800_000;
    // Every probe of the week, at its millisecond.
    let mut week: Vec<Probed> = Vec::new();
    let mut seen: Vec<IpAddr> = Vec::new();
    for day in 0..DAYS {
        for i in 0..SOURCES_A_DAY {
            // A fifth come back from an earlier day.
            let source = if day > 0 && i % 5 == 0 {
                seen[(rng.next() % seen.len() as u64) as usize]
            } else {
                let a = address(&mut rng);
                seen.push(a);
                a
            };
            let at = start_ms + day * DAY_MS + (rng.next() % DAY_MS as u64) as i64;
            for k in 0..PORTS_EACH {
                // A few minutes between a source's ports.
                let ms = at + k as i64 * (60_000 + (rng.next() % 600_000) as i64);
                week.push((source, 6, port(&mut rng), false, ms));
            }
        }
    }
    week.sort_by_key(|p| p.4);
    // One poll a second: the probes of each second taken together.
    let cpu0 = cpu_ns(std::process::id())?;
    let mut decided = 0;
    let mut i = 0;
    while i < week.len() {
        let second = week[i].4 / 1000;
        let j = week[i..]
            .iter()
            .position(|p| p.4 / 1000 != second)
            .map_or(week.len(), |n| i + n);
        decided += memory.take(&week[i..j], (second + 1) * 1000)?;
        i = j;
    }
    let end_ms = start_ms + DAYS * DAY_MS;
    memory.prune(end_ms)?;
    let cpu_s = (cpu_ns(std::process::id())? - cpu0) as f64 / 1e9;
    let rows = memory.rows()?;
    let bytes = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum();
    let mut walks: Vec<Duration> = (0..WALKS)
        .map(|_| {
            let source = seen[(rng.next() % seen.len() as u64) as usize];
            memory.walk(source, end_ms)
        })
        .collect::<anyhow::Result<_>>()?;
    walks.sort_unstable();
    let us = |q: f64| walks[((walks.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    Ok(Figures {
        probes: week.len() as u64,
        rows,
        bytes,
        cpu_s,
        decided,
        walk_median_us: us(0.5),
        walk_p99_us: us(0.99),
    })
}

pub(crate) fn markdown(md: &mut String, f: &Figures) -> anyhow::Result<()> {
    let mib = f.bytes as f64 / (1024.0 * 1024.0);
    let core = 100.0 * f.cpu_s / (DAYS as f64 * 86_400.0);
    writeln!(md, "## Long memory (slow scans)\n")?;
    writeln!(
        md,
        "A week at Internet background rates: {SOURCES_A_DAY} sources a day, each probing \
         {PORTS_EACH} closed TCP ports minutes apart (a fifth of them back from an earlier day), \
         {:.0} k probes in all, taken through the daemon's own long-memory code (`LongMemory`: \
         the history file's `memory_ports` table, a transaction per one-second poll that brought \
         probes, then the walk of every source and /24 the poll touched) in simulated time, \
         default settings (7-day window, ten closed ports decide).\n",
        f.probes as f64 / 1e3
    )?;
    writeln!(md, "| figure | this run | target |")?;
    writeln!(md, "| --- | ---: | --- |")?;
    writeln!(md, "| rows at the end of the week | {} | |", f.rows)?;
    writeln!(
        md,
        "| on disk (file and WAL) | {mib:.1} MiB | ≤ 200 MiB ({}) |",
        if mib <= 200.0 { "met" } else { "missed" }
    )?;
    writeln!(
        md,
        "| CPU for the week's probes | {:.1} s: {core:.4}% of a core | ≤ +0.5% ({}) |",
        f.cpu_s,
        if core <= 0.5 { "met" } else { "missed" }
    )?;
    writeln!(
        md,
        "| walk of a new probe's records (source and /24) against the week | median {:.0} µs, p99 {:.0} µs | median ≤ 1 ms ({}) |",
        f.walk_median_us,
        f.walk_p99_us,
        if f.walk_median_us <= 1000.0 {
            "met"
        } else {
            "missed"
        }
    )?;
    writeln!(
        md,
        "| slow scans decided (sources back on several days, three new ports each visit, reach ten closed ports) | {} | |",
        f.decided
    )?;
    writeln!(md)?;
    Ok(())
}
