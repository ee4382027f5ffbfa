//! Findings and rule changes turned into events, and the response to a
//! detection: the block the kernel made, or what a dry run would do.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use scanner_common::{SourceKey, SourceStats, block_reason, reason, scope};

use crate::{
    config::settings::Settings,
    detect::{
        EntryId, Finding,
        decoy::{Decoys, Released},
        kind_of,
    },
    fleet::alert::{Alert, Detection},
    kernel::{
        load::AttachedMode,
        maps::{
            Maps, monotonic_ns,
            probed::{Probed, ranges},
        },
        policy::{self, Change, Origin, Policy, PolicyError, net_name, parse_net},
        protect::{self, Protected, ProtectedBy},
    },
    sinks::{
        event::{
            Action, DecidedBy, Event, InterfaceEvent, InterfaceName, InterfaceReason, PolicyEvent,
            PolicyName, PolicyReason, ScanEvent, ScanName, ip_of, timestamp,
        },
        metrics::Metrics,
        reporter::Reporter,
    },
};

/// Most protected detections remembered for `scanner list`.
const PROTECTED_SCANS: usize = 4096;

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
    pub policy: Policy,
    pub metrics: Metrics,
    /// Sources never blocked (gateways, resolvers, established peers).
    pub protected: Protected,
    /// Detected sources found protected at their latest detection, and why
    /// (for `scanner list`).
    pub protected_scans: HashMap<IpAddr, ProtectedBy>,
    /// Source detections held for their decoy group, and the groups found.
    pub decoys: Decoys,
    /// The latest read of the undecided sources that could join a held
    /// detection's group: when, how long it took, what it found.
    pub undecided: Option<(Instant, Duration, Vec<SourceStats>)>,
    /// The CrowdSec link, when configured.
    pub fleet: Option<crate::fleet::Fleet>,
    /// The CrowdSec decisions behind blocks.
    pub enforced: crate::daemon::enforced::Enforced,
    /// The ports of the scans ending in this poll (see `probed_ports`).
    pub probed: HashMap<EntryId, Probed>,
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
    out.probed = probed_ports(out, maps, findings);
    for finding in findings {
        match finding {
            Finding::Detected {
                id,
                stats,
                since_ns,
            } if id.scope == scope::SOURCE => out.decoys.hold(*id, *stats, *since_ns, now),
            Finding::Ended { id, .. } if out.decoys.is_held(id) => {
                release(out, maps, settings, true)?;
                report_one(out, maps, settings, finding, None, false)?;
            }
            _ => report_one(out, maps, settings, finding, None, false)?,
        }
    }
    release(out, maps, settings, false)
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
    if !out.decoys.holding() {
        out.undecided = None;
        return Ok(());
    }
    let stale = out
        .undecided
        .as_ref()
        .is_none_or(|(at, took, _)| at.elapsed() >= (*took * 100).max(UNDECIDED_READ_EVERY));
    if stale && !force {
        // Only what could be a held detection's member is copied: an
        // undecided source of two ports or more that started near one.
        let starts = out.decoys.held_starts();
        let began = Instant::now();
        let undecided = maps
            .sources_where(|s| {
                s.decided_ns == 0
                    && s.ports >= crate::detect::decoy::MIN_SHARED_PORTS as u32
                    && starts
                        .iter()
                        .any(|t| t.abs_diff(s.first_seen_ns) <= crate::detect::decoy::WINDOW_NS)
            })
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        // Reads are spaced by what they cost (1% of a core at most), like
        // full scans.
        out.undecided = Some((Instant::now(), began.elapsed(), undecided));
    }
    let undecided = out
        .undecided
        .as_ref()
        .map_or(&[][..], |(_, _, u)| u.as_slice());
    for r in out.decoys.release(monotonic_ns(), undecided, force) {
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
        ScanName::Detected if source => {
            let why = out.protected.reason(ip).map(ProtectedBy::of);
            match why {
                Some(why) => {
                    // A handful in practice; bounded all the same.
                    if out.protected_scans.len() >= PROTECTED_SCANS {
                        out.protected_scans.clear();
                    }
                    out.protected_scans.insert(ip, why)
                }
                None => out.protected_scans.remove(&ip),
            };
            why
        }
        _ if source => out.protected_scans.get(&ip).copied(),
        _ => None,
    };
    let group = group.or_else(|| source.then(|| out.decoys.group_of(&id.key)).flatten());
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
            Some(why) => spare(out, maps, ip, why)?,
            None => respond(out, settings, *id)?,
        }
    }
    // After the response: the alert carries a ban only for a block made.
    if let Some(e) = pushed {
        push(out, settings, &e, stats);
    }
    Ok(())
}

/// A protected source was detected: it is not blocked. The kernel does not
/// block gateways and resolvers; an established peer it may have blocked at
/// the deciding probe, and that block is lifted here, before it is ever
/// reported (or, if a sweep reported it already, with an `unblocked` event).
fn spare(out: &mut Output, maps: &mut Maps, ip: IpAddr, why: ProtectedBy) -> anyhow::Result<()> {
    tracing::warn!(source = %ip, protected = %why, "protected source detected: reported, not blocked");
    lift_protected(out, maps, ip)?;
    Ok(())
}

/// Addresses that became protected (a new gateway or resolver): a scan's
/// block on one of them is lifted, since the kernel spares protected
/// addresses only from other blocks (see `verdict::spares_protected`).
pub(crate) fn spare_protected(
    out: &mut Output,
    maps: &mut Maps,
    ips: &[IpAddr],
) -> anyhow::Result<()> {
    for ip in ips {
        if lift_protected(out, maps, *ip)? {
            tracing::warn!(source = %ip, "a blocked scanner's address is protected now (a gateway or resolver): block lifted");
        }
    }
    Ok(())
}

/// Lifts the scan block on protected `ip` (an `unblocked` event when it had
/// been reported) and unmarks its entry, or the kernel would block it again
/// at its next probe, as it does a scanner whose block lapsed. Whether a
/// block was lifted.
fn lift_protected(out: &mut Output, maps: &mut Maps, ip: IpAddr) -> anyhow::Result<bool> {
    let net = ipnet::IpNet::from(ip);
    maps.unmark_blocked(&protect::key_of(ip));
    let lifted = out
        .policy
        .lift_scan_block(net)
        .context("lifting a protected address's block")?;
    if lifted {
        emit(
            out,
            PolicyEvent::unblocked(&net, PolicyReason::Protected, Origin::Scan),
        );
    }
    Ok(lifted)
}

/// After a source's detection: the block the kernel made (or could not),
/// or what a dry run would have done.
fn respond(out: &mut Output, settings: &Settings, id: EntryId) -> anyhow::Result<()> {
    let net = ipnet::IpNet::from(ip_of(&id.key));
    let ttl = settings.block_ttl();
    if settings.dry_run() {
        let event = PolicyEvent::blocked(&net, Origin::Scan, Some(ttl.as_secs()), true);
        emit(out, event);
        return Ok(());
    }
    if !settings.blocks() {
        return Ok(());
    }
    // The kernel blocked at the deciding probe; the sweep reports it.
    sweep_policy(out)?;
    if out.policy.is_blocked(&net) {
        return Ok(());
    }
    // Decided before blocking was on, or the kernel's insert failed: block
    // it here, unless the cap is what stopped it.
    match out
        .policy
        .block(net, Some(ttl), monotonic_ns(), block_reason::SCAN)
    {
        Ok(_) => emit(
            out,
            PolicyEvent::blocked(&net, Origin::Scan, Some(ttl.as_secs()), false),
        ),
        Err(PolicyError::CapReached(cap, _)) => {
            tracing::error!(source = %net_name(&net), cap, "block refused: the block cap is reached; still reporting");
            emit(
                out,
                PolicyEvent::refused(&net, PolicyReason::Cap, Origin::Scan),
            );
        }
        Err(e) => return Err(e).context("blocking a detected source"),
    }
    Ok(())
}

/// The source key of a host network (/32, /128).
pub(crate) fn host_key(net: &ipnet::IpNet) -> Option<SourceKey> {
    (net.prefix_len() == net.max_prefix_len()).then(|| policy::key_of(*net).data())
}

/// Reports blocks the kernel made and blocks that expired (now removed);
/// returns the networks unblocked, with their block's reason.
pub(crate) fn sweep_policy(out: &mut Output) -> anyhow::Result<Vec<(ipnet::IpNet, u32)>> {
    let changes = out
        .policy
        .sweep(monotonic_ns())
        .context("reading the BLOCKLIST map")?;
    let mut lifted = Vec::new();
    for change in changes {
        if let Change::Unblocked { net, reason, .. } = &change {
            lifted.push((*net, *reason));
        }
        let event = match change {
            Change::Blocked { net, reason, ttl } => {
                PolicyEvent::blocked(&net, Origin::of(reason), ttl.map(|t| t.as_secs()), false)
            }
            Change::Unblocked {
                net,
                expired,
                reason,
            } => PolicyEvent::unblocked(
                &net,
                if expired {
                    PolicyReason::Expired
                } else {
                    PolicyReason::Manual
                },
                Origin::of(reason),
            ),
        };
        emit(out, event);
    }
    Ok(lifted)
}

/// After blocks lapsed (`lifted`, from [`sweep_policy`]): a source whose
/// block was not the kernel's own starts afresh, so if it scans on it is
/// decided, and blocked, again. A scanner the kernel blocked at its decision
/// keeps its entry: the kernel blocks it again at its next probe, the same
/// scan.
pub(crate) fn forget_lifted(maps: &mut Maps, lifted: &[(ipnet::IpNet, u32)]) {
    for (net, reason) in lifted {
        if *reason != block_reason::SCAN
            && let Some(key) = host_key(net)
        {
            maps.forget(&key);
        }
    }
}

pub(crate) fn emit(out: &mut Output, event: PolicyEvent) {
    if event.event == PolicyName::Blocked && !event.dry_run {
        out.metrics.block(event.reason.as_str());
        tracing::debug!(source = %event.source, reason = %event.reason, "blocked");
    }
    write(&mut out.reporter, &Event::Policy(event))
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
    let source = if prefix {
        let ip = ip_of(&id.key);
        let (v4, v6) = settings.prefix_lengths();
        let len = if ip.is_ipv4() { v4 } else { v6 };
        format!("{ip}/{len}")
    } else {
        ip_of(&id.key).to_string()
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
fn port_numbers(pairs: &[(u8, u16)]) -> Vec<u16> {
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
                .policy
                .block_of(&source)
                .is_some_and(|b| b.reason == block_reason::SCAN))
        .then(|| settings.block_ttl()),
    };
    tracing::debug!(source = %net_name(&source), "pushing the detection to CrowdSec");
    fleet.push(Alert::of(&detection));
}
