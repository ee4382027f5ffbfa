//! Answers to control-socket requests (`scanner status`, `list`, `block`...).

use std::time::{Duration, Instant, SystemTime};

use scanner_common::{PolicyEntry, scope};

use crate::{
    config::settings::Settings,
    control::{
        Request, Response,
        reply::{
            AllowEntry, AllowReply, BlockReply, DisallowReply, IfaceMode, InterfaceStatus, ListRow,
            ListState, Packets, ProtectedAddress, Resumed, StatusReply, UnblockReply,
        },
    },
    daemon::respond::Output,
    detect::{
        Detector,
        hits::{PortHistory, most_probed},
        kind_of,
    },
    kernel::{
        load::Attached,
        maps::{Maps, monotonic_ns},
        policy::{Origin, net_name, parse_net},
    },
    sinks::event::{ip_of, timestamp},
};

/// What control requests can see of the daemon.
pub(crate) struct State<'a> {
    pub attached: &'a [Attached],
    pub started: Instant,
    pub detector: &'a Detector,
    pub ports: &'a PortHistory,
    /// Sources tracked at the last full scan of the maps (a count of a
    /// million-entry map is not redone for every `scanner status`).
    pub tracked: usize,
    /// When the pinned counters were created: packet counts run from then,
    /// across daemon restarts.
    pub counting_since: Option<SystemTime>,
    /// What the daemon runs with.
    pub settings: &'a Settings,
    /// Detections and blocks taken over at start from an earlier daemon,
    /// which had reported them.
    pub resumed: (usize, usize),
    /// Kernel memory of the maps, in bytes.
    pub kernel_memory: u64,
    /// CLOCK_MONOTONIC time up to which every decision and block has been
    /// reported (the pinned REPORTED mark); 0 before the first poll.
    pub reported_ns: u64,
}

/// Answers one control request.
pub(crate) fn handle(
    request: Request,
    out: &mut Output,
    maps: &mut Maps,
    state: &State<'_>,
) -> anyhow::Result<Response> {
    let target = |t: &str| parse_net(t).map_err(anyhow::Error::msg);
    Ok(match request {
        Request::Status {} => Response::ok(status(out, maps, state)?),
        Request::List {} => Response::ok(suspects(out, maps, state)),
        Request::Block {
            target: t,
            ttl,
            force,
        } => block(out, &t, ttl.as_deref(), force, state.settings)?,
        Request::Unblock { target: t } => {
            let net = target(&t)?;
            out.respond_with(|r| r.unblock_manual(maps, net))?;
            Response::ok(UnblockReply {
                unblocked: net_name(&net),
            })
        }
        Request::Allow { target: t } => {
            let net = target(&t)?;
            // Blocks the new rule lifts, said in the answer.
            let lifted = out.respond_with(|r| r.allow_runtime(maps, net))?;
            Response::ok(AllowReply {
                allowed: net_name(&net),
                unblocked: lifted.iter().map(net_name).collect(),
            })
        }
        Request::Disallow { target: t } => {
            let net = target(&t)?;
            out.respond_with(|r| r.disallow(net))?;
            Response::ok(DisallowReply {
                disallowed: net_name(&net),
            })
        }
        Request::Allowlist {} => {
            let entries: Vec<AllowEntry> = out
                .responder
                .policy
                .allow_entries()
                .iter()
                .map(|(net, origin)| AllowEntry {
                    address: net_name(net),
                    origin: *origin,
                })
                .collect();
            Response::ok(entries)
        }
        Request::Events {} => {
            let events: Vec<&crate::sinks::event::Event> = out.reporter.recent().collect();
            Response::ok(events)
        }
        Request::PortHits { limit } => {
            let current = maps.port_hits()?;
            let open = crate::audit::listeners::open_ports(&crate::audit::listeners::listeners());
            let hits = state.ports.report(Instant::now(), &current, &open);
            let n = limit.map_or(usize::MAX, |l| l as usize);
            Response::ok(most_probed(hits, n))
        }
    })
}

/// `scanner status`: what is watched, the packet counts of the watched
/// interfaces, and what the daemon holds.
fn status(out: &Output, maps: &Maps, state: &State<'_>) -> anyhow::Result<StatusReply> {
    // Packets of the watched interfaces; ring buffer and block
    // refusals are the program's own, whatever the interface.
    let table = maps.counter_table()?;
    let watched: Vec<u32> = state.attached.iter().filter_map(|a| a.index).collect();
    let total = table.total();
    let c = crate::kernel::maps::Counters {
        events_dropped: total.events_dropped,
        blocks_refused: total.blocks_refused,
        ..table.ifaces(&watched)
    };
    let interfaces = state
        .attached
        .iter()
        .map(|a| InterfaceStatus {
            iface: a.name.clone(),
            mode: IfaceMode::from(a.index.map(|_| a.mode)),
        })
        .collect();
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    Ok(StatusReply {
        interfaces,
        uptime_s: state.started.elapsed().as_secs(),
        counting_since: state.counting_since.map(timestamp),
        resumed: Resumed {
            detections: count(state.resumed.0),
            blocks: count(state.resumed.1),
        },
        packets: Packets {
            seen: c.seen,
            passed: c.passed,
            dropped: c.dropped,
            parse_failures: c.parse_failures,
            allowed: c.allowed,
            fragments: c.fragments,
        },
        events_dropped: c.events_dropped,
        blocks_refused: c.blocks_refused,
        sources_tracked: count(state.tracked),
        kernel_memory_bytes: state.kernel_memory,
        // Decisions and blocks up to here are reported: a restart,
        // even after a crash, does not report them again.
        reported_until: (state.reported_ns != 0)
            .then(|| wall_past(monotonic_ns(), state.reported_ns)),
        active_detections: count(state.detector.active()),
        blocks: count(out.responder.policy.active_blocks()),
        block_cap: out.responder.policy.cap(),
        blocking: state.settings.blocks(),
        dry_run: state.settings.dry_run(),
        allowlist: out
            .responder
            .policy
            .allowlist()
            .iter()
            .map(net_name)
            .collect(),
        crowdsec: out.fleet.as_ref().map(crate::daemon::crowdsec::status),
        history: out
            .reporter
            .history()
            .map(|h| h.path().display().to_string()),
        long_memory: out.memory.as_ref().map(|m| {
            use std::sync::atomic::Ordering::Relaxed;
            let s = m.stats();
            crate::control::reply::MemoryStatus {
                window: crate::config::show(state.settings.file.slow.window),
                rows: s.rows.load(Relaxed),
                probes: s.probes.load(Relaxed),
                dropped: s.dropped.load(Relaxed),
                slow_scans: s.decided.load(Relaxed),
            }
        }),
    })
}

/// `scanner block`: see [`Responder::block_manual`](crate::daemon::responder::Responder).
fn block(
    out: &mut Output,
    t: &str,
    ttl: Option<&str>,
    force: bool,
    settings: &Settings,
) -> anyhow::Result<Response> {
    let net = crate::kernel::policy::parse_exact_net(t).map_err(anyhow::Error::msg)?;
    let asked = ttl
        .map(|s| crate::config::parse_ttl(s).map_err(anyhow::Error::msg))
        .transpose()?;
    let done = out.respond_with(|r| r.block_manual(net, asked, force, settings))?;
    Ok(Response::ok(BlockReply {
        blocked: net_name(&net),
        ttl_s: done.ttl_s,
        kept: done.kept,
        dry_run: settings.dry_run(),
        protected: done
            .protected
            .iter()
            .map(|(ip, why)| ProtectedAddress {
                address: ip.to_string(),
                why: *why,
            })
            .collect(),
    }))
}

/// Sources with evidence against them (a positive score or a decision),
/// distributed scans, and every block, for `scanner list`: worst first.
fn suspects(out: &Output, maps: &Maps, state: &State<'_>) -> Vec<ListRow> {
    let now = monotonic_ns();
    let mut rows: Vec<(i64, ListRow)> = Vec::new();
    let listed = source_rows(out, maps, state, now, &mut rows);
    prefix_rows(maps, state, now, &mut rows);
    block_rows(out, state, now, &listed, &mut rows);
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    rows.into_iter().map(|(_, v)| v).collect()
}

/// When `mono` was, on the wall clock.
fn wall(now_mono: u64, mono: u64) -> Option<String> {
    Some(wall_past(now_mono, mono))
}

/// When a block ends, on the wall clock; None for one without expiry.
fn expiry(now_mono: u64, e: &PolicyEntry) -> Option<String> {
    (e.expires_ns != 0).then(|| wall_future(now_mono, e.expires_ns))
}

/// The tracked sources with evidence against them, each with its score;
/// returns their networks.
fn source_rows(
    out: &Output,
    maps: &Maps,
    state: &State<'_>,
    now_mono: u64,
    rows: &mut Vec<(i64, ListRow)>,
) -> std::collections::HashSet<ipnet::IpNet> {
    let mut listed = std::collections::HashSet::new();
    for (key, s) in maps.sources_where(|s| s.decided_ns != 0 || s.score > 0) {
        let net = ipnet::IpNet::from(ip_of(&key));
        let block = out
            .responder
            .policy
            .blocks()
            .find(|(n, _)| n.contains(&net.addr()));
        let protected = out.responder.protection_of(net.addr());
        let scan = crate::detect::EntryId {
            scope: scope::SOURCE,
            key,
        };
        let row_state = match (block, s.decided_ns, protected) {
            // A dry run keeps blocks in the map without enforcing them.
            (Some(_), _, _) if state.settings.dry_run() => ListState::Unenforced,
            (Some(_), _, _) => ListState::Blocked,
            (None, 0, _) => ListState::Watching,
            (None, _, Some(_)) => ListState::Protected,
            (None, _, None) if state.detector.has_ended(&scan) => ListState::Ended,
            (None, _, None) => ListState::Detected,
        };
        listed.insert(net);
        rows.push((
            i64::from(s.score),
            ListRow {
                address: net_name(&net),
                state: row_state,
                kind: Some(kind_of(scope::SOURCE, &s)),
                ports: Some(s.ports),
                probes: Some(s.probes),
                score: Some(s.score),
                sources: Some(1),
                protected: Some(protected),
                decoy_group: Some(
                    out.responder
                        .decoys
                        .group_of(&key)
                        .map(|g| g.iter().map(|k| ip_of(k).to_string()).collect()),
                ),
                fragments: Some(s.fragments),
                first_seen: wall(now_mono, s.first_seen_ns),
                last_seen: wall(now_mono, s.last_seen_ns),
                block_expires: block.and_then(|(_, e)| expiry(now_mono, e)),
                block_origin: Some(block.map(|(_, e)| Origin::of(e.reason))),
            },
        ));
    }
    listed
}

/// The prefixes of distributed scans.
fn prefix_rows(maps: &Maps, state: &State<'_>, now_mono: u64, rows: &mut Vec<(i64, ListRow)>) {
    for id in state.detector.ids() {
        if id.scope != scope::PREFIX {
            continue;
        }
        let Some(s) = maps.entry(id).filter(|s| s.decided_ns != 0) else {
            continue;
        };
        let net = state.settings.net_of(id);
        rows.push((
            i64::from(s.score),
            ListRow {
                address: net.to_string(),
                state: if state.detector.has_ended(&id) {
                    ListState::Ended
                } else {
                    ListState::Detected
                },
                kind: Some(kind_of(scope::PREFIX, &s)),
                ports: Some(s.ports),
                probes: Some(s.probes),
                score: Some(s.score),
                sources: Some(s.sources),
                protected: None,
                decoy_group: None,
                fragments: None,
                first_seen: wall(now_mono, s.first_seen_ns),
                last_seen: wall(now_mono, s.last_seen_ns),
                block_expires: None,
                block_origin: None,
            },
        ));
    }
}

/// The blocks of sources not listed already (manual, CrowdSec, or of an
/// entry gone), first.
fn block_rows(
    out: &Output,
    state: &State<'_>,
    now_mono: u64,
    listed: &std::collections::HashSet<ipnet::IpNet>,
    rows: &mut Vec<(i64, ListRow)>,
) {
    for (net, e) in out.responder.policy.blocks() {
        if listed.contains(net) {
            continue;
        }
        rows.push((
            i64::MAX,
            ListRow {
                block_expires: expiry(now_mono, e),
                block_origin: Some(Some(Origin::of(e.reason))),
                ..ListRow::bare(
                    net_name(net),
                    if state.settings.dry_run() {
                        ListState::Unenforced
                    } else {
                        ListState::Blocked
                    },
                )
            },
        ));
    }
}

/// The wall-clock time of a future monotonic instant.
fn wall_past(now_mono: u64, at_mono: u64) -> String {
    timestamp(SystemTime::now() - Duration::from_nanos(now_mono.saturating_sub(at_mono)))
}

fn wall_future(now_mono: u64, at_mono: u64) -> String {
    timestamp(SystemTime::now() + Duration::from_nanos(at_mono.saturating_sub(now_mono)))
}
