//! Findings and rule changes turned into events, and the response to a
//! detection: the block the kernel made, or what a dry run would do.

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime},
};

use scanner_common::{SourceKey, SourceStats, block_reason, reason, scope};

use crate::{
    config::settings::Settings,
    daemon::responder::Responder,
    detect::{EntryId, Finding, decoy::Released, kind_of},
    fleet::alert::{Alert, Detection},
    kernel::{
        load::AttachedMode,
        maps::{
            Maps, monotonic_ns,
            probed::{Probed, ranges},
        },
        policy::{net_name, parse_net},
        protect::ProtectedBy,
    },
    sinks::{
        event::{
            Action, DecidedBy, Event, InterfaceEvent, InterfaceName, InterfaceReason, PolicyEvent,
            PolicyName, ScanEvent, ScanName, ip_of, timestamp,
        },
        metrics::Metrics,
        reporter::Reporter,
    },
};

/// How many ports an event lists in `top_ports`.
const TOP_PORTS: usize = 10;

/// The undecided sources are read at most this often while detections are
/// held for their decoy group: a storm of decisions costs one map read per
/// interval, not one per decision.
const UNDECIDED_READ_EVERY: Duration = Duration::from_millis(50);

/// Everything the loop needs to turn findings into events and responses.
pub(crate) struct Output {
    pub reporter: Reporter,
    pub names: HashMap<u32, String>,
    pub metrics: Metrics,
    /// What is done about detections and decisions.
    pub responder: Responder,
    /// The CrowdSec link, when configured.
    pub fleet: Option<crate::fleet::Fleet>,
    /// The syslog sender's counts, when `[signals] syslog` is set.
    pub signals: Option<std::sync::Arc<crate::sinks::syslog::SyslogStats>>,
    /// The probe signals, when `[signals]` sends them.
    pub probes: Option<crate::daemon::probes::ProbeWatch>,
    /// The ports of the scans ending in this poll (see `probed_ports`).
    pub probed: HashMap<EntryId, Probed>,
    /// The long memory, when it is kept (`[slow]`, with a history file).
    pub memory: Option<crate::memory::Memory>,
}

/// Writes one event: stdout, and the journal when one is connected.
pub(crate) fn write(reporter: &mut Reporter, event: &Event) {
    reporter.emit(event);
}

pub(crate) fn emit_interface(
    reporter: &mut Reporter,
    event: InterfaceName,
    iface: &str,
    mode: AttachedMode,
    reason: Option<InterfaceReason>,
) {
    let event = Event::Interface(InterfaceEvent {
        ts: timestamp(SystemTime::now()),
        event,
        iface: iface.to_owned(),
        mode,
        reason,
    });
    write(reporter, &event)
}

/// Reports findings. A source's detection is held until its decoy group is
/// known (at once, unless an undecided source matches it; see
/// `detect::decoy`); everything else is reported in order.
pub(crate) fn report(
    out: &mut Output,
    maps: &mut Maps,
    settings: &Settings,
    findings: &[Finding],
) -> anyhow::Result<()> {
    let now = monotonic_ns();
    mark(out.memory.as_ref(), settings, findings);
    out.probed = probed_ports(out, maps, findings);
    for finding in findings {
        match finding {
            Finding::Detected {
                id,
                stats,
                since_ns,
            } if id.scope == scope::SOURCE => {
                out.responder.decoys.hold(*id, *stats, *since_ns, now)
            }
            Finding::Ended { id, .. } if out.responder.decoys.is_held(id) => {
                release(out, maps, settings, true)?;
                report_one(out, maps, settings, finding, None, false)?;
            }
            _ => report_one(out, maps, settings, finding, None, false)?,
        }
    }
    release(out, maps, settings, false)
}

/// Marks the entries the kernel decided among `findings` in the long
/// memory: it decides none of them again as a slow scan.
fn mark(memory: Option<&crate::memory::Memory>, settings: &Settings, findings: &[Finding]) {
    let Some(memory) = memory else { return };
    let decided: Vec<(ipnet::IpNet, bool)> = findings
        .iter()
        .filter_map(|f| match f {
            Finding::Detected { id, .. } => {
                Some((settings.net_of(*id).trunc(), id.scope == scope::PREFIX))
            }
            Finding::Ended { .. } => None,
        })
        .collect();
    memory.decided(decided);
}

/// The ports each scan that ended among `findings` probed, for the
/// history (nothing when no history is kept): one read of PORTS for all.
fn probed_ports(out: &Output, maps: &Maps, findings: &[Finding]) -> HashMap<EntryId, Probed> {
    if out.reporter.history().is_none() {
        return HashMap::new();
    }
    let ended: Vec<(EntryId, SourceStats)> = findings
        .iter()
        .filter_map(|f| match f {
            Finding::Ended { id, stats } => Some((*id, *stats)),
            Finding::Detected { .. } => None,
        })
        .collect();
    if ended.is_empty() {
        return HashMap::new();
    }
    maps.probed(&ended).unwrap_or_else(|e| {
        tracing::warn!(
            "reading the ports ended scans probed (the history keeps their top ports only): {:#}",
            anyhow::Error::from(e)
        );
        HashMap::new()
    })
}

/// Reports the held detections that are ready (all of them with `force`:
/// the daemon is stopping).
pub(crate) fn release(
    out: &mut Output,
    maps: &mut Maps,
    settings: &Settings,
    force: bool,
) -> anyhow::Result<()> {
    if !out.responder.decoys.holding() {
        out.responder.undecided = None;
        return Ok(());
    }
    if !force {
        read_undecided(out, maps);
    }
    let undecided = out
        .responder
        .undecided
        .as_ref()
        .map_or(&[][..], |(_, _, u)| u.as_slice());
    for r in out
        .responder
        .decoys
        .release(monotonic_ns(), undecided, force)
    {
        let Released {
            id,
            stats,
            detected_ns,
            group,
            joined,
        } = r;
        report_one(
            out,
            maps,
            settings,
            &Finding::Detected {
                id,
                stats,
                since_ns: detected_ns,
            },
            group.as_deref(),
            joined,
        )?;
    }
    Ok(())
}

/// Reads the undecided sources that could join a held detection's group:
/// admitted, of two ports or more, started near one. Found from the rings
/// of the latest admissions, so at every call, before the held detections
/// are judged; where the rings cannot tell, SOURCES is walked, at most as
/// often as its walk allows (1% of a core, every [`UNDECIDED_READ_EVERY`]
/// at most), and that read serves until then.
fn read_undecided(out: &mut Output, maps: &Maps) {
    use crate::detect::decoy::{MIN_SHARED_PORTS, WINDOW_NS};
    let decoys = &out.responder.decoys;
    let starts = decoys.held_starts();
    let Some(earliest) = starts.iter().min() else {
        return;
    };
    let near = |s: &SourceStats| {
        s.decided_ns == 0
            && s.ports >= MIN_SHARED_PORTS as u32
            && starts
                .iter()
                .any(|t| t.abs_diff(s.first_seen_ns) <= WINDOW_NS)
    };
    let from_ns = earliest.saturating_sub(WINDOW_NS);
    let stale = out
        .responder
        .undecided
        .as_ref()
        .is_none_or(|(at, took, _)| at.elapsed() >= (*took * 100).max(UNDECIDED_READ_EVERY));
    let began = Instant::now();
    let found = match maps.admitted_since(from_ns, |key, at| decoys.decided_since(key, at), near) {
        Some(found) => found,
        None if stale => maps.sources_where(near),
        None => return,
    };
    let undecided = found.into_iter().map(|(_, s)| s).collect();
    // A walk is spaced by what it cost; the rings' answer is for now only.
    let took = began.elapsed();
    out.responder.undecided = Some((Instant::now(), took, undecided));
}

/// Reports one finding: its event, and for a source's detection the
/// response. `group`: its decoy group; `joined`: another member was
/// reported already (the group is counted once in the metrics).
fn report_one(
    out: &mut Output,
    maps: &mut Maps,
    settings: &Settings,
    finding: &Finding,
    group: Option<&[SourceKey]>,
    joined: bool,
) -> anyhow::Result<()> {
    let (event, id, stats, since_ns) = match finding {
        Finding::Detected {
            id,
            stats,
            since_ns,
        } => (ScanName::Detected, id, stats, Some(*since_ns)),
        Finding::Ended { id, stats } => (ScanName::Ended, id, stats, None),
    };
    let ip = ip_of(&id.key);
    let source = id.scope == scope::SOURCE;
    // Whether the source is protected is decided once, at its detection.
    let protected = match event {
        ScanName::Detected if source => out.responder.protection_at_detection(ip),
        _ if source => out.responder.protection_of(ip),
        _ => None,
    };
    let group = group.or_else(|| {
        source
            .then(|| out.responder.decoys.group_of(&id.key))
            .flatten()
    });
    let mut e = scan_event(out, settings, event, *id, stats, maps, protected, since_ns);
    if event == ScanName::Ended {
        e.probed = out
            .probed
            .remove(id)
            .map(|p| ranges(&p))
            .unwrap_or_default();
    }
    e.decoy_group = group.map(|g| g.iter().map(|k| ip_of(k).to_string()).collect());
    let detected = event == ScanName::Detected;
    if detected && !joined {
        out.metrics.detection(e.kind.as_str());
        tracing::debug!(source = %e.source, kind = %e.kind, ports = e.ports, "port scan detected");
    }
    let pushed = detected.then(|| e.clone());
    write(&mut out.reporter, &Event::Scan(e));
    if detected && source {
        match protected {
            Some(why) => out.respond_with(|r| r.spare(maps, ip, why))?,
            None => out.respond_with(|r| r.respond(settings, *id))?,
        }
    }
    // After the response: the alert carries a ban only for a block made.
    if let Some(e) = pushed {
        push(out, settings, &e, stats);
    }
    Ok(())
}

impl Output {
    /// Writes a policy event, and counts a block made.
    pub(crate) fn emit(&mut self, event: PolicyEvent) {
        if event.event == PolicyName::Blocked && !event.dry_run {
            self.metrics.block(event.reason.as_str());
            tracing::debug!(source = %event.source, reason = %event.reason, "blocked");
        }
        write(&mut self.reporter, &Event::Policy(event))
    }

    /// Runs `f` on the Responder, then writes what it did (also when it
    /// failed part way: what it did, it did).
    pub(crate) fn respond_with<T>(
        &mut self,
        f: impl FnOnce(&mut Responder) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let result = f(&mut self.responder);
        for event in self.responder.take_said() {
            self.emit(event);
        }
        result
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "the finding's parts and where to read the rest"
)]
fn scan_event(
    out: &Output,
    settings: &Settings,
    event: ScanName,
    id: EntryId,
    stats: &SourceStats,
    maps: &Maps,
    protected: Option<ProtectedBy>,
    // The probe a detection stands for: its latency runs from there.
    since_ns: Option<u64>,
) -> ScanEvent {
    let prefix = id.scope == scope::PREFIX;
    let net = settings.net_of(id);
    let source = if prefix {
        net.to_string()
    } else {
        net.addr().to_string()
    };
    let top = maps.top_ports(id, stats, TOP_PORTS);
    let open = (stats.open_ports as usize).min(stats.open_sample.len());
    let mut open_ports = stats.open_sample[..open].to_vec();
    open_ports.sort_unstable();
    ScanEvent {
        ts: timestamp(SystemTime::now()),
        event,
        source,
        kind: kind_of(id.scope, stats),
        ports: stats.ports,
        probes: stats.probes,
        top_ports: port_numbers(&top),
        top_probed: top
            .iter()
            .map(|&(proto, port)| format!("{}/{port}", crate::audit::proto_name(proto)))
            .collect(),
        iface: out
            .names
            .get(&stats.ifindex)
            .cloned()
            .unwrap_or_else(|| format!("if{}", stats.ifindex)),
        open_ports,
        open_hits: stats.open_ports,
        reason: if stats.reason == reason::FANOUT {
            DecidedBy::Fanout
        } else {
            DecidedBy::Trw
        },
        decided_after: stats.decided_ports,
        sources: if prefix { stats.sources } else { 1 },
        latency_us: since_ns.map(|t| monotonic_ns().saturating_sub(t) / 1000),
        // Prefixes found by the distributed rule are reported, never blocked.
        action: match (prefix, settings.dry_run(), settings.blocks()) {
            (true, _, _) => Action::Report,
            (false, true, _) | (false, false, true) if protected.is_some() => Action::Protected,
            (false, true, _) => Action::DryRun,
            (false, false, true) => Action::Block,
            (false, false, false) => Action::Report,
        },
        protected,
        decoy_group: None,
        fragments: (stats.fragments > 0).then_some(stats.fragments),
        spared_flows: spared_flows(settings, event, id),
        slow: None,
        probed: Vec::new(),
    }
}

/// At a source's detection, when blocking spares live flows: how many TCP
/// connections the host has open with it (their segments pass the block).
fn spared_flows(settings: &Settings, event: ScanName, id: EntryId) -> Option<u32> {
    if event != ScanName::Detected
        || id.scope != scope::SOURCE
        || !settings.blocks()
        || !settings.spares_flows()
    {
        return None;
    }
    let n = crate::audit::listeners::established_with(ip_of(&id.key));
    (n > 0).then(|| u32::try_from(n).unwrap_or(u32::MAX))
}

/// The ports of ranked pairs, in their order, each once.
pub(crate) fn port_numbers(pairs: &[(u8, u16)]) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::with_capacity(pairs.len());
    for &(_, port) in pairs {
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

/// Pushes a detection to the fleet, with a ban when this host blocked the
/// source for its scan. Members of a decoy group are pushed without one:
/// all but one of them are borrowed addresses, and a fleet-wide ban would
/// hand the decoys' owner the very attack the group reveals.
fn push(out: &Output, settings: &Settings, e: &ScanEvent, stats: &SourceStats) {
    let Some(fleet) = out.fleet.as_ref().filter(|f| f.pushing()) else {
        return;
    };
    let Ok(source) = parse_net(&e.source) else {
        return;
    };
    let now = SystemTime::now();
    let age = Duration::from_nanos(monotonic_ns().saturating_sub(stats.first_seen_ns));
    let detection = Detection {
        source,
        kind: e.kind.as_str(),
        ports: e.ports,
        probes: e.probes,
        top_ports: e.top_ports.clone(),
        started: now.checked_sub(age).unwrap_or(now),
        decided: now,
        ban: (e.decoy_group.is_none()
            && !settings.dry_run()
            && out
                .responder
                .policy
                .block_of(&source)
                .is_some_and(|b| b.reason == block_reason::SCAN))
        .then(|| settings.block_ttl()),
    };
    tracing::debug!(source = %net_name(&source), "pushing the detection to CrowdSec");
    fleet.push(Alert::of(&detection));
}
