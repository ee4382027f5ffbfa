//! `scanner run`: load, attach, then poll -> detect -> report until a signal;
//! and `scanner config`.

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use aya::maps::{Array, LpmTrie, RingBuf};
use scanner_common::{
    EVENTS_MAP, POLICY_MAP, PORT_BITS_MAP, REASON_FANOUT, SCOPE_PREFIX, SCOPE_SOURCE, SourceStats,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::{ConfigArgs, RunArgs, parse_duration, parse_net},
    config::{DEFAULT_FILE, FileConfig},
    control::{self, Request, Response},
    decisions::Decisions,
    detect::{Detector, EntryId, Finding, kind_of},
    iface, load,
    policy::{self, Change, Policy},
    poll::{Maps, monotonic_ns, take_map},
    ports::{self, PortBits},
    report::{Event, InterfaceEvent, PolicyEvent, Reporter, ScanEvent, ip_of, net_name, timestamp},
    settings::{Settings, ephemeral_range},
};

/// How many ports an event lists in `top_ports`.
const TOP_PORTS: usize = 10;

/// `scanner config`.
pub fn config_command(args: &ConfigArgs) -> anyhow::Result<()> {
    if args.print_default {
        print!("{DEFAULT_FILE}");
        return Ok(());
    }
    if let Some(path) = &args.check {
        let config = FileConfig::load(Some(path))?;
        let steps = config.probabilities().steps()?;
        println!("{}: ok", path.display());
        println!("{config:#?}");
        println!(
            "TRW steps (1/1024 nat): open {} closed {} stealth {}; decide at {} (floor {}); {} closed ports decide",
            steps.open,
            steps.closed,
            steps.stealth,
            steps.upper,
            steps.lower,
            steps.closed_probes_to_decide()
        );
    }
    Ok(())
}

/// Everything the loop needs to turn findings into events and responses.
struct Output {
    reporter: Reporter<std::io::Stdout>,
    names: HashMap<u32, String>,
    prefixes: (u8, u8),
    policy: Policy,
    /// The kernel blocks decided sources (`--block` without `--dry-run`).
    blocking: bool,
    /// `--dry-run`: say what would be blocked.
    dry_run: bool,
    block_ttl_s: u64,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = Settings::new(FileConfig::load(args.config.as_deref())?, &args);
    // Resolve every interface before touching the kernel: a typo attaches nothing.
    let mut names = HashMap::new();
    for name in &args.ifaces {
        names.insert(iface::index_of(name)?, name.clone());
    }
    let config = settings.kernel(ephemeral_range()?)?;
    let response = &settings.file.response;
    let mut ebpf = load::load_with_cap(&config, response.block_cap)?;
    // Claim the control socket before attaching: a second daemon stops
    // here, attaching nothing.
    let listener = control::bind(&args.socket, args.socket_group.as_deref())
        .context("opening the control socket")?;
    let mut maps = Maps::take(&mut ebpf).context("opening the maps")?;
    let mut port_bits = PortBits::new(take_map::<Array<_, u64>>(&mut ebpf, PORT_BITS_MAP)?);
    let ignored = settings.file.detection.ignore_ports.clone();
    // Know the open ports before the first packet is judged.
    refresh_open_ports(&mut port_bits, &ignored)?;
    let mut decisions = Decisions::new(take_map::<RingBuf<_>>(&mut ebpf, EVENTS_MAP)?)
        .context("watching the EVENTS ring buffer")?;

    let mut policy = Policy::new(
        take_map::<LpmTrie<_, _, _>>(&mut ebpf, POLICY_MAP)?,
        response.block_cap,
    );
    for net in policy::default_allowlist()
        .into_iter()
        .chain(response.allowlist.iter().copied())
    {
        policy
            .allow(net, monotonic_ns())
            .with_context(|| format!("allowlisting {net}"))?;
    }
    let allow: Vec<String> = policy.allowlist().iter().map(net_name).collect();
    tracing::info!(allowlist = %allow.join(" "), "never blocked, never counted");
    if settings.blocks() {
        tracing::warn!(
            ttl = ?response.block_ttl,
            cap = response.block_cap,
            "blocking is on: detected sources are dropped in the kernel"
        );
    }
    let mut out = Output {
        reporter: Reporter::new(args.events, std::io::stdout()),
        names,
        prefixes: settings.prefix_lengths(),
        policy,
        blocking: settings.blocks(),
        dry_run: response.dry_run,
        block_ttl_s: response.block_ttl.as_secs(),
    };
    let mut attached = Vec::new();
    for name in &args.ifaces {
        let mode = load::attach(&mut ebpf, name, args.xdp_mode)?;
        tracing::info!(iface = %name, mode = mode.as_str(), "XDP program attached");
        attached.push((name.clone(), mode));
        emit_interface(&mut out.reporter, "attached", name, mode.as_str())?;
    }
    let mut detector = Detector::new(settings.quiet_ns());
    let (calls_tx, mut calls) = tokio::sync::mpsc::channel(16);
    let server = tokio::spawn(control::serve(listener, calls_tx));
    let started = Instant::now();
    let default_ttl = settings.file.response.block_ttl;

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut tick = tokio::time::interval(settings.poll_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refresh = tokio::time::interval(settings.file.report.open_ports_refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = decisions.next_batch() => {
                for d in batch.context("reading the EVENTS ring buffer")? {
                    let id = EntryId { scope: d.scope, key: d.key };
                    if let Some(stats) = maps.entry(id) {
                        let findings = detector.observe(monotonic_ns(), id, &stats);
                        report(&mut out, &maps, &findings)?;
                    }
                }
            }
            _ = tick.tick() => {
                let findings = detector.poll(monotonic_ns(), &maps.entries());
                report(&mut out, &maps, &findings)?;
                for net in sweep_policy(&mut out)? {
                    // A lifted block starts the source afresh: if it scans
                    // on, it is decided, and blocked, again.
                    if let Some(key) = host_key(&net) {
                        maps.forget(&key);
                    }
                }
            }
            _ = refresh.tick() => refresh_open_ports(&mut port_bits, &ignored)?,
            Some((request, reply)) = calls.recv() => {
                let state = State { attached: &attached, started, default_ttl, detector: &detector };
                let answer = handle(request, &mut out, &mut maps, &state)
                    .unwrap_or_else(|e| Response::error(format!("{e:#}")));
                let _ = reply.send(answer);
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }

    // Nothing lost on the way out: a final poll, then close every open scan.
    let mut findings = detector.poll(monotonic_ns(), &maps.entries());
    findings.extend(detector.finish());
    report(&mut out, &maps, &findings)?;
    if let Ok(c) = maps.counters() {
        tracing::info!(
            seen = c.seen,
            passed = c.passed,
            dropped = c.dropped,
            parse_failures = c.parse_failures,
            events_dropped = c.events_dropped,
            "packet counters"
        );
    }
    // Dropping the object detaches every link and unloads the program, and
    // with it the POLICY map: blocks end with the daemon. Say so.
    sweep_policy(&mut out)?;
    for net in out.policy.drain_blocks() {
        emit(
            &mut out,
            policy_event("unblocked", &net, "shutdown", None, false),
        )?;
    }
    drop(ebpf);
    for (name, mode) in &attached {
        emit_interface(&mut out.reporter, "detached", name, mode.as_str())?;
    }
    server.abort();
    let _ = std::fs::remove_file(&args.socket);
    tracing::info!("detached, exiting");
    Ok(())
}

/// What control requests can see of the daemon.
struct State<'a> {
    attached: &'a [(String, load::AttachedMode)],
    started: Instant,
    default_ttl: Duration,
    detector: &'a Detector,
}

/// Answers one control request.
fn handle(
    request: Request,
    out: &mut Output,
    maps: &mut Maps,
    state: &State<'_>,
) -> anyhow::Result<Response> {
    let target = |t: &str| parse_net(t).map_err(anyhow::Error::msg);
    Ok(match request {
        Request::Status => {
            let c = maps.counters()?;
            let interfaces: Vec<serde_json::Value> = state
                .attached
                .iter()
                .map(|(iface, mode)| serde_json::json!({"iface": iface, "mode": mode.as_str()}))
                .collect();
            Response::ok(serde_json::json!({
                "interfaces": interfaces,
                "uptime_s": state.started.elapsed().as_secs(),
                "packets": {
                    "seen": c.seen, "passed": c.passed, "dropped": c.dropped,
                    "parse_failures": c.parse_failures, "allowed": c.allowed,
                },
                "events_dropped": c.events_dropped,
                "blocks_refused": c.blocks_refused,
                "sources_tracked": maps.sources().len(),
                "active_detections": state.detector.active(),
                "blocks": out.policy.active_blocks(),
                "block_cap": out.policy.cap(),
                "blocking": out.blocking,
                "allowlist": out.policy.allowlist().iter().map(net_name).collect::<Vec<_>>(),
            }))
        }
        Request::List => Response::ok(serde_json::Value::Array(suspects(out, maps))),
        Request::Block { target: t, ttl } => {
            let net = target(&t)?;
            let ttl = match ttl {
                Some(s) => parse_duration(&s).map_err(anyhow::Error::msg)?,
                None => state.default_ttl,
            };
            out.policy.block(net, Some(ttl), monotonic_ns())?;
            emit(
                out,
                policy_event("blocked", &net, "manual", Some(ttl.as_secs()), false),
            )?;
            Response::ok(serde_json::json!({"blocked": net_name(&net), "ttl_s": ttl.as_secs()}))
        }
        Request::Unblock { target: t } => {
            let net = target(&t)?;
            out.policy.unblock(net)?;
            if let Some(key) = host_key(&net) {
                maps.forget(&key);
            }
            emit(out, policy_event("unblocked", &net, "manual", None, false))?;
            Response::ok(serde_json::json!({"unblocked": net_name(&net)}))
        }
        Request::Allow { target: t } => {
            let net = target(&t)?;
            for change in out.policy.allow(net, monotonic_ns())? {
                if let Change::Unblocked { net: lifted, .. } = change {
                    emit(
                        out,
                        policy_event("unblocked", &lifted, "manual", None, false),
                    )?;
                }
            }
            Response::ok(serde_json::json!({"allowed": net_name(&net)}))
        }
        Request::Disallow { target: t } => {
            let net = target(&t)?;
            out.policy.disallow(net)?;
            Response::ok(serde_json::json!({"disallowed": net_name(&net)}))
        }
    })
}

/// Sources with evidence against them (a positive score or a decision),
/// and every block, for `scanner list`.
fn suspects(out: &Output, maps: &Maps) -> Vec<serde_json::Value> {
    let now_mono = monotonic_ns();
    let wall = |mono: u64| -> String {
        let ago = Duration::from_nanos(now_mono.saturating_sub(mono));
        timestamp(SystemTime::now() - ago)
    };
    let mut rows: Vec<(i64, serde_json::Value)> = Vec::new();
    let mut listed = std::collections::HashSet::new();
    for (key, s) in maps.sources() {
        if s.decided_ns == 0 && s.score <= 0 {
            continue;
        }
        let net = ipnet::IpNet::from(ip_of(&key));
        let block = out.policy.blocks().find(|(n, _)| n.contains(&net.addr()));
        let state = match (block, s.decided_ns) {
            (Some(_), _) => "blocked",
            (None, 0) => "watching",
            (None, _) => "detected",
        };
        listed.insert(net);
        rows.push((
            i64::from(s.score),
            serde_json::json!({
                "address": net_name(&net),
                "state": state,
                "kind": kind_of(SCOPE_SOURCE, &s).as_str(),
                "ports": s.ports,
                "probes": s.probes,
                "score": s.score,
                "first_seen": wall(s.first_seen_ns),
                "last_seen": wall(s.last_seen_ns),
                "block_expires": block.and_then(|(_, e)| (e.expires_ns != 0).then(|| wall_future(now_mono, e.expires_ns))),
            }),
        ));
    }
    for (net, e) in out.policy.blocks() {
        if listed.contains(net) {
            continue;
        }
        rows.push((
            i64::MAX,
            serde_json::json!({
                "address": net_name(net),
                "state": "blocked",
                "kind": null, "ports": null, "probes": null, "score": null,
                "first_seen": null, "last_seen": null,
                "block_expires": (e.expires_ns != 0).then(|| wall_future(now_mono, e.expires_ns)),
            }),
        ));
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    rows.into_iter().map(|(_, v)| v).collect()
}

/// The wall-clock time of a future monotonic instant.
fn wall_future(now_mono: u64, at_mono: u64) -> String {
    timestamp(SystemTime::now() + Duration::from_nanos(at_mono.saturating_sub(now_mono)))
}

fn refresh_open_ports(bits: &mut PortBits, ignored: &[u16]) -> anyhow::Result<()> {
    let listeners = ports::listeners();
    let changed = bits
        .update(&ports::bitmap(&listeners, ignored))
        .context("writing the PORT_BITS map")?;
    if changed > 0 {
        let open: Vec<String> = ports::open_ports(&listeners)
            .into_iter()
            .map(|(proto, port)| format!("{}/{port}", if proto == 6 { "tcp" } else { "udp" }))
            .collect();
        tracing::debug!(open = %open.join(" "), "open ports updated");
    }
    Ok(())
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

fn report(out: &mut Output, maps: &Maps, findings: &[Finding]) -> anyhow::Result<()> {
    for finding in findings {
        let (event, id, stats) = match finding {
            Finding::Detected { id, stats } => ("scan_detected", id, stats),
            Finding::Ended { id, stats } => ("scan_ended", id, stats),
        };
        let e = scan_event(out, event, *id, stats, maps);
        if event == "scan_detected" {
            tracing::warn!(source = %e.source, kind = e.kind, ports = e.ports, "port scan detected");
        }
        out.reporter
            .emit(&Event::Scan(e))
            .context("writing an event to stdout")?;
        if event == "scan_detected" && id.scope == SCOPE_SOURCE {
            respond(out, *id)?;
        }
    }
    Ok(())
}

/// After a source's detection: the block the kernel made (or could not),
/// or what a dry run would have done.
fn respond(out: &mut Output, id: EntryId) -> anyhow::Result<()> {
    let net = ipnet::IpNet::from(ip_of(&id.key));
    if out.dry_run {
        let event = policy_event("blocked", &net, "scan", Some(out.block_ttl_s), true);
        return emit(out, event);
    }
    if !out.blocking {
        return Ok(());
    }
    // The kernel blocked at the deciding probe; the sweep reports it.
    sweep_policy(out)?;
    if !out.policy.is_blocked(&net) {
        tracing::error!(source = %net_name(&net), cap = out.policy.cap(), "block refused: the block cap is reached; still reporting");
        emit(out, policy_event("block_refused", &net, "cap", None, false))?;
    }
    Ok(())
}

/// The source key of a host network (/32, /128).
fn host_key(net: &ipnet::IpNet) -> Option<scanner_common::SourceKey> {
    if net.prefix_len() != net.max_prefix_len() {
        return None;
    }
    Some(match net.addr() {
        std::net::IpAddr::V4(a) => scanner_common::SourceKey::from_v4(a.octets()),
        std::net::IpAddr::V6(a) => scanner_common::SourceKey::from_v6(a.octets()),
    })
}

/// Reports blocks the kernel made and blocks that expired (now removed);
/// returns the networks unblocked.
fn sweep_policy(out: &mut Output) -> anyhow::Result<Vec<ipnet::IpNet>> {
    let changes = out
        .policy
        .sweep(monotonic_ns())
        .context("reading the POLICY map")?;
    let mut lifted = Vec::new();
    for change in changes {
        if let Change::Unblocked { net, .. } = &change {
            lifted.push(*net);
        }
        let event = match change {
            Change::Blocked { net, reason, ttl } => policy_event(
                "blocked",
                &net,
                policy::reason_name(reason),
                ttl.map(|t| t.as_secs()),
                false,
            ),
            Change::Unblocked { net, expired } => policy_event(
                "unblocked",
                &net,
                if expired { "expired" } else { "manual" },
                None,
                false,
            ),
        };
        emit(out, event)?;
    }
    Ok(lifted)
}

fn policy_event(
    event: &'static str,
    net: &ipnet::IpNet,
    reason: &'static str,
    ttl_s: Option<u64>,
    dry_run: bool,
) -> PolicyEvent {
    PolicyEvent {
        ts: timestamp(SystemTime::now()),
        event,
        source: net_name(net),
        reason,
        ttl_s,
        dry_run,
    }
}

fn emit(out: &mut Output, event: PolicyEvent) -> anyhow::Result<()> {
    if event.event == "blocked" && !event.dry_run {
        tracing::warn!(source = %event.source, reason = event.reason, "blocked");
    }
    out.reporter
        .emit(&Event::Policy(event))
        .context("writing an event to stdout")
}

fn scan_event(
    out: &Output,
    event: &'static str,
    id: EntryId,
    stats: &SourceStats,
    maps: &Maps,
) -> ScanEvent {
    let prefix = id.scope == SCOPE_PREFIX;
    let source = if prefix {
        let ip = ip_of(&id.key);
        let len = if ip.is_ipv4() {
            out.prefixes.0
        } else {
            out.prefixes.1
        };
        format!("{ip}/{len}")
    } else {
        ip_of(&id.key).to_string()
    };
    let open = (stats.open_ports as usize).min(stats.open_sample.len());
    let mut open_ports = stats.open_sample[..open].to_vec();
    open_ports.sort_unstable();
    let latency_us =
        (event == "scan_detected").then(|| monotonic_ns().saturating_sub(stats.decided_ns) / 1000);
    ScanEvent {
        ts: timestamp(SystemTime::now()),
        event,
        source,
        kind: kind_of(id.scope, stats).as_str(),
        ports: stats.ports,
        probes: stats.probes,
        top_ports: maps.top_ports(id, stats, TOP_PORTS),
        iface: out
            .names
            .get(&stats.ifindex)
            .cloned()
            .unwrap_or_else(|| format!("if{}", stats.ifindex)),
        open_ports,
        open_hits: stats.open_ports,
        reason: if stats.reason == REASON_FANOUT {
            "fanout"
        } else {
            "trw"
        },
        decided_after: stats.decided_ports,
        sources: if prefix { stats.sources } else { 1 },
        latency_us,
    }
}
