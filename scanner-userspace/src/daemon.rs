//! `scanner run`: load, attach, then poll -> detect -> report until a signal.

use std::{collections::HashMap, time::SystemTime};

use anyhow::Context as _;
use scanner_common::{Config, SourceKey, SourceStats};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::RunArgs,
    detect::{Detector, Finding, Rule, kind_of},
    iface, load,
    poll::{Maps, monotonic_ns},
    report::{Event, InterfaceEvent, Reporter, ScanEvent, ip_of, timestamp},
};

/// How many ports an event lists in `top_ports`.
const TOP_PORTS: usize = 10;

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Resolve every interface before touching the kernel: a typo attaches nothing.
    let mut names = HashMap::new();
    for name in &args.ifaces {
        names.insert(iface::index_of(name)?, name.clone());
    }
    let config = kernel_config(&args)?;
    let mut ebpf = load::load(&config)?;
    let mut reporter = Reporter::new(args.events, std::io::stdout());
    let mut attached = Vec::new();
    for name in &args.ifaces {
        let mode = load::attach(&mut ebpf, name, args.xdp_mode)?;
        tracing::info!(iface = %name, mode = mode.as_str(), "XDP program attached");
        attached.push((name.clone(), mode));
        emit_interface(&mut reporter, "attached", name, mode.as_str())?;
    }
    let maps = Maps::take(&mut ebpf).context("opening the maps")?;
    let mut detector = Detector::new(Rule {
        min_ports: args.min_ports,
        quiet_ns: u64::try_from(args.quiet_after.as_nanos()).unwrap_or(u64::MAX),
    });

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut tick = tokio::time::interval(args.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let findings = detector.poll(monotonic_ns(), &maps.sources());
                report_findings(&mut reporter, &maps, &names, &findings)?;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }

    // Nothing lost on the way out: a final poll, then close every open scan.
    let mut findings = detector.poll(monotonic_ns(), &maps.sources());
    findings.extend(detector.finish());
    report_findings(&mut reporter, &maps, &names, &findings)?;
    if let Ok(c) = maps.counters() {
        tracing::info!(
            seen = c.seen,
            passed = c.passed,
            dropped = c.dropped,
            parse_failures = c.parse_failures,
            "packet counters"
        );
    }
    // Dropping the object detaches every link and unloads the program.
    drop(maps);
    drop(ebpf);
    for (name, mode) in &attached {
        emit_interface(&mut reporter, "detached", name, mode.as_str())?;
    }
    tracing::info!("detached, exiting");
    Ok(())
}

/// The kernel-side settings: window length and this host's ephemeral ports.
fn kernel_config(args: &RunArgs) -> anyhow::Result<Config> {
    let (ephemeral_lo, ephemeral_hi) = ephemeral_range()?;
    Ok(Config {
        window_ns: u64::try_from(args.window.as_nanos()).unwrap_or(u64::MAX),
        ephemeral_lo,
        ephemeral_hi,
        _pad: 0,
    })
}

const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The host's ephemeral port range (it applies to IPv6 too).
fn ephemeral_range() -> anyhow::Result<(u16, u16)> {
    let text = std::fs::read_to_string(LOCAL_PORT_RANGE)
        .with_context(|| format!("reading {LOCAL_PORT_RANGE}"))?;
    parse_port_range(&text).with_context(|| format!("parsing {LOCAL_PORT_RANGE}: {text:?}"))
}

fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) if lo <= hi => Some((lo, hi)),
        _ => None,
    }
}

fn emit_interface(
    reporter: &mut Reporter<std::io::Stdout>,
    event: &'static str,
    iface: &str,
    mode: &'static str,
) -> anyhow::Result<()> {
    reporter
        .emit(&Event::Interface(InterfaceEvent {
            ts: timestamp(SystemTime::now()),
            event,
            iface: iface.to_owned(),
            mode,
        }))
        .context("writing an event to stdout")
}

fn report_findings(
    reporter: &mut Reporter<std::io::Stdout>,
    maps: &Maps,
    names: &HashMap<u32, String>,
    findings: &[Finding],
) -> anyhow::Result<()> {
    for finding in findings {
        let (event, source, stats) = match finding {
            Finding::Detected { source, stats } => ("scan_detected", source, stats),
            Finding::Ended { source, stats } => ("scan_ended", source, stats),
        };
        let e = scan_event(event, source, stats, maps, names);
        if event == "scan_detected" {
            tracing::warn!(source = %e.source, kind = e.kind, ports = e.ports, "port scan detected");
        }
        reporter
            .emit(&Event::Scan(e))
            .context("writing an event to stdout")?;
    }
    Ok(())
}

fn scan_event(
    event: &'static str,
    source: &SourceKey,
    stats: &SourceStats,
    maps: &Maps,
    names: &HashMap<u32, String>,
) -> ScanEvent {
    ScanEvent {
        ts: timestamp(SystemTime::now()),
        event,
        source: ip_of(source).to_string(),
        kind: kind_of(&stats.classes).as_str(),
        ports: stats.distinct_ports,
        probes: stats.probes,
        top_ports: maps.top_ports(*source, stats, TOP_PORTS),
        iface: names
            .get(&stats.ifindex)
            .cloned()
            .unwrap_or_else(|| format!("if{}", stats.ifindex)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("1024 1024"), Some((1024, 1024)));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range("32768"), None);
        assert_eq!(parse_port_range("a b"), None);
    }
}
