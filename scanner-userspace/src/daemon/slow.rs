//! The long memory's side of the loop: each poll's probes handed to it, the
//! kernel's decisions marked in it, and the slow scans it decided reported
//! through every sink (a `scan_detected` of kind `slow` with its evidence:
//! stdout, journal, history, metrics, syslog, a CrowdSec alert). A slow
//! scan's source is blocked, and its ban pushed, only with
//! `[response] block_slow`: its evidence may be days old.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use scanner_common::scope;

use crate::{
    config::{settings::Settings, show},
    daemon::respond::{Output, port_numbers, write},
    detect::{EntryId, ScanKind},
    fleet::alert::{Alert, Detection},
    kernel::{maps::Maps, policy::net_name, protect},
    memory::{self, Memory, SlowScan},
    sinks::event::{Action, DecidedBy, Event, ScanEvent, ScanName, SlowEvidence, timestamp},
};

/// Ports an event's `top_ports` lists, and its evidence at most.
const TOP_PORTS: usize = 10;
const PROBED_SHOWN: usize = 64;

/// The memory's settings from the daemon's; None when it is off.
pub(crate) fn settings(s: &Settings) -> Option<memory::Settings> {
    let slow = &s.file.slow;
    if !slow.enabled {
        return None;
    }
    let rule = slow.rule(&s.file.probabilities()).ok()?;
    Some(memory::Settings {
        rule,
        window: slow.window,
        max_rows: slow.max_rows,
    })
}

/// Starts the memory over the history file, when both are on. A file that
/// cannot be opened is logged, and the daemon runs without.
pub(crate) fn start(s: &Settings) -> Option<Memory> {
    let path = s.history_path()?;
    let settings = settings(s)?;
    match Memory::start(&path, settings) {
        Ok(m) => {
            tracing::info!(
                window = %show(s.file.slow.window),
                closed_ports = settings.rule.closed_ports_to_decide(),
                "long memory on: slow scans decided"
            );
            Some(m)
        }
        Err(e) => {
            tracing::warn!(
                "long memory off: {:#}; everything else goes on",
                anyhow::Error::from(e)
            );
            None
        }
    }
}

/// Hands the probes read since the last poll to the memory. Allowlisted
/// sources are left out: the kernel writes their first probes (it reads
/// the allowlist only when it admits or decides), and they are never to be
/// counted.
pub(crate) fn hand_over(out: &mut Output) {
    let (Some(probes), Some(memory)) = (&mut out.probes, &out.memory) else {
        return;
    };
    let (mut taken, left_out) = probes.remembered();
    let allowed = out.responder.policy.allowlist();
    taken.retain(|p| !allowed.iter().any(|net| net.contains(&p.seen.source)));
    memory.observe((taken, left_out));
}

/// Reports the slow scans the memory decided since the last poll.
pub(crate) fn report_decided(
    out: &mut Output,
    maps: &mut Maps,
    settings: &Settings,
) -> anyhow::Result<()> {
    let scans = out.memory.as_ref().map(Memory::take).unwrap_or_default();
    report_all(out, maps, settings, scans)
}

/// Reports `scans`, in order.
pub(crate) fn report_all(
    out: &mut Output,
    maps: &mut Maps,
    settings: &Settings,
    scans: Vec<SlowScan>,
) -> anyhow::Result<()> {
    for scan in scans {
        report(out, maps, settings, &scan)?;
    }
    Ok(())
}

fn report(
    out: &mut Output,
    maps: &mut Maps,
    settings: &Settings,
    scan: &SlowScan,
) -> anyhow::Result<()> {
    let ip = scan.net.addr();
    let protected = (!scan.prefix)
        .then(|| out.responder.protection_at_detection(ip))
        .flatten();
    let blocks = !scan.prefix && settings.file.response.block_slow;
    let e = event(out, settings, scan, protected, blocks);
    out.metrics.detection(ScanKind::Slow.as_str());
    tracing::debug!(source = %e.source, ports = e.ports, "slow scan decided");
    let pushed = e.clone();
    write(&mut out.reporter, &Event::Scan(e));
    if blocks {
        let id = EntryId {
            scope: scope::SOURCE,
            key: protect::key_of(ip),
        };
        match protected {
            Some(why) => out.respond_with(|r| r.spare(maps, ip, why))?,
            None => out.respond_with(|r| r.respond(settings, id))?,
        }
    }
    push(out, settings, scan, &pushed, blocks);
    Ok(())
}

fn ms_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn event(
    out: &Output,
    settings: &Settings,
    scan: &SlowScan,
    protected: Option<protect::ProtectedBy>,
    blocks: bool,
) -> ScanEvent {
    let ev = &scan.evidence;
    let named: Vec<String> = ev
        .ports
        .iter()
        .map(|&(proto, port)| format!("{}/{port}", crate::audit::proto_name(proto)))
        .collect();
    let mut top_ports = port_numbers(&ev.ports);
    top_ports.truncate(TOP_PORTS);
    ScanEvent {
        ts: timestamp(SystemTime::now()),
        event: ScanName::Detected,
        source: if scan.prefix {
            scan.net.to_string()
        } else {
            scan.net.addr().to_string()
        },
        kind: ScanKind::Slow,
        ports: u32::try_from(ev.ports.len()).unwrap_or(u32::MAX),
        probes: u32::try_from(ev.probes).unwrap_or(u32::MAX),
        top_ports,
        top_probed: named.iter().take(TOP_PORTS).cloned().collect(),
        iface: out
            .names
            .get(&scan.ifindex)
            .cloned()
            .unwrap_or_else(|| format!("if{}", scan.ifindex)),
        open_ports: Vec::new(),
        open_hits: ev.open,
        reason: DecidedBy::LongMemory,
        decided_after: ev.decided_after,
        sources: scan.address_count,
        latency_us: None,
        // A slow scan is acted on only with block_slow, never a prefix's.
        action: match (blocks, settings.dry_run(), settings.blocks(), protected) {
            (false, ..) | (true, false, false, _) => Action::Report,
            (true, true, _, Some(_)) | (true, false, true, Some(_)) => Action::Protected,
            (true, true, _, None) => Action::DryRun,
            (true, false, true, None) => Action::Block,
        },
        protected,
        decoy_group: None,
        fragments: None,
        spared_flows: None,
        slow: Some(Box::new(SlowEvidence {
            first_seen: timestamp(ms_time(ev.first_ms)),
            last_seen: timestamp(ms_time(ev.last_ms)),
            window: show(settings.file.slow.window),
            closed_ports: ev.closed,
            open_ports: ev.open,
            probed: named.into_iter().take(PROBED_SHOWN).collect(),
            addresses: scan.addresses.iter().map(IpAddr::to_string).collect(),
        })),
        probed: Vec::new(),
    }
}

/// The slow scan as a CrowdSec alert (scenario `scanner/slow-scan`), with
/// a ban only when this daemon blocked its source for it.
fn push(out: &Output, settings: &Settings, scan: &SlowScan, e: &ScanEvent, blocks: bool) {
    let Some(fleet) = out.fleet.as_ref().filter(|f| f.pushing()) else {
        return;
    };
    let detection = Detection {
        source: scan.net,
        kind: ScanKind::Slow.as_str(),
        ports: e.ports,
        probes: e.probes,
        top_ports: e.top_ports.clone(),
        started: ms_time(scan.evidence.first_ms),
        decided: SystemTime::now(),
        ban: (blocks
            && !settings.dry_run()
            && out
                .responder
                .policy
                .block_of(&scan.net)
                .is_some_and(|b| b.reason == scanner_common::block_reason::SCAN))
        .then(|| settings.block_ttl()),
    };
    tracing::debug!(source = %net_name(&scan.net), "pushing the slow scan to CrowdSec");
    fleet.push(Alert::of(&detection));
}
