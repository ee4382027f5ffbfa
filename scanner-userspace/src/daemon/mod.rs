//! `scanner run`: load, attach, then poll -> detect -> report / block until
//! a signal; and `scanner config`.

pub(crate) mod interfaces;
pub(crate) mod requests;
pub(crate) mod respond;

use std::{collections::HashMap, sync::Arc, time::Instant};

use anyhow::Context as _;
use aya::maps::{Array, LpmTrie, RingBuf};
use scanner_common::names::{
    ALLOWLIST_MAP, BLOCKLIST_MAP, BLOCKS_EMPTY_MAP, EVENTS_MAP, PORT_BITS_MAP,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    audit::listeners,
    cli::RunArgs,
    config::{
        FileConfig, reload,
        settings::{Settings, ephemeral_range},
    },
    control::{self, Response},
    daemon::{
        interfaces::{warn_shared_counter_slots, watch_interfaces},
        requests::{State, handle},
        respond::{
            Output, emit, emit_interface, host_key, policy_event, report, sweep_policy, write,
        },
    },
    detect::{Detector, EntryId, hits::PortHistory},
    kernel::{
        decisions::{self, Decisions},
        iface, load,
        load::Attached,
        maps::{CounterTable, Maps, PollError, monotonic_ns, take_map},
        pin::PinDir,
        policy::{self, AllowOrigin, Change, Policy, net_name},
        port_bits::{self, PortBits},
        reported::Reported,
    },
    sinks::{
        events::{DaemonEvent, Reporter},
        journal::{self, Journal},
        metrics::{self, Metrics},
        notify,
    },
};

pub(crate) async fn run(args: RunArgs, to_journal: bool) -> anyhow::Result<()> {
    // Handlers first: a stop asked for while starting waits for the start,
    // then detaches cleanly, instead of killing the daemon half-attached.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut settings = Settings::new(FileConfig::load(args.config.as_deref())?, &args.overrides());
    // Resolve every interface before touching the kernel: a typo attaches nothing.
    let mut names = HashMap::new();
    for name in &args.ifaces {
        names.insert(iface::index_of(name)?, name.clone());
    }
    load::check_privileges()?;
    let ephemeral = ephemeral_range()?;
    let config = settings.kernel(ephemeral)?;
    let response = &settings.file.response;
    let pins = PinDir::prepare(&args.pin_dir)?;
    if pins.mounted_bpffs() {
        warn_private_mount(&args.pin_dir);
    }
    // Another program on an interface: refuse before loading anything.
    for name in &args.ifaces {
        pins.check_free(name)?;
    }
    let capacity = load::Capacity {
        blocks: response.block_cap,
        sources: settings.file.detection.max_sources,
    };
    let journal = if to_journal {
        let path = journal::socket_path();
        Some(
            Journal::connect(&path)
                .with_context(|| format!("connecting to the journal at {}", path.display()))?,
        )
    } else {
        None
    };
    // Claim the metrics port before loading anything: a taken port fails
    // the start, attaching nothing.
    let metrics_listener = match settings.file.report.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("serving metrics on {addr}"))?,
        ),
        None => None,
    };
    let mut ebpf = load::load_pinned(&config, &capacity, Some(&pins))?;
    // Claim the control socket before attaching: a second daemon stops
    // here, attaching nothing.
    let listener = control::server::bind(&args.socket, args.socket_group.as_deref())
        .context("opening the control socket")?;
    let mut maps = Maps::take(&mut ebpf).context("opening the maps")?;
    let mut port_bits = PortBits::new(take_map::<Array<_, u64>>(&mut ebpf, PORT_BITS_MAP)?);
    // Know the open ports before the first packet is judged.
    refresh_open_ports(&mut port_bits, &settings.file.detection.ignore_ports)?;
    let mut decisions = Decisions::new(take_map::<RingBuf<_>>(&mut ebpf, EVENTS_MAP)?)
        .context("watching the EVENTS ring buffer")?;
    // What an earlier daemon on these pins reported stays reported.
    let mut reported = Reported::open(&pins).context("opening the pinned state")?;
    let reported_ns = reported.get().context("opening the pinned state")?;

    let mut policy = Policy::new(
        take_map::<LpmTrie<_, _, _>>(&mut ebpf, ALLOWLIST_MAP)?,
        take_map::<LpmTrie<_, _, _>>(&mut ebpf, BLOCKLIST_MAP)?,
        response.block_cap,
    )
    .with_empty_flag(take_map::<Array<_, u32>>(&mut ebpf, BLOCKS_EMPTY_MAP)?);
    // A dry run drops nothing, not even blocks kept from an earlier run.
    policy
        .set_enforcing(!response.dry_run)
        .context("writing the BLOCKS_EMPTY map")?;
    let restored = policy.restore(reported_ns, monotonic_ns());
    allow_all(&mut policy, &policy::default_allowlist(), AllowOrigin::Host)?;
    allow_all(&mut policy, &response.allowlist, AllowOrigin::Config)?;
    let allow: Vec<String> = policy.allowlist().iter().map(net_name).collect();
    tracing::info!(allowlist = %allow.join(" "), "never blocked, never counted");
    if response.dry_run {
        tracing::warn!(
            kept = policy.active_blocks(),
            "dry run: nothing is dropped; detections say what would be blocked"
        );
    } else if settings.blocks() {
        tracing::warn!(
            ttl = ?response.block_ttl,
            cap = response.block_cap,
            "blocking is on: detected sources are dropped in the kernel"
        );
    }
    let (metrics, registry) = Metrics::new(capacity.sources);
    let mut out = Output {
        reporter: Reporter::new(args.events, std::io::stdout()).with_journal(journal),
        names,
        prefixes: settings.prefix_lengths(),
        policy,
        blocking: settings.blocks(),
        dry_run: response.dry_run,
        block_ttl_s: response.block_ttl.as_secs(),
        metrics,
    };
    let mut attached: Vec<Attached> = Vec::new();
    for name in &args.ifaces {
        let (mode, taken_over) = match pins.attach(&mut ebpf, name, args.xdp_mode) {
            Ok(a) => a,
            Err(e) => {
                // A clean failure: detach what this run attached.
                for done in &attached {
                    pins.release(&done.name);
                }
                return Err(e.into());
            }
        };
        if taken_over {
            tracing::info!(iface = %name, "took over the XDP link a previous daemon left pinned");
        }
        tracing::info!(iface = %name, mode = mode.as_str(), "XDP program attached");
        attached.push(Attached {
            name: name.clone(),
            mode,
            index: iface::lookup(name),
        });
        emit_interface(&mut out.reporter, "attached", name, mode.as_str(), None);
    }
    warn_shared_counter_slots(&attached);
    let mut detector = Detector::new(settings.quiet_ns());
    // Catch up before saying ready: take over what an earlier daemon
    // reported, and report at once what it did not (decisions and blocks
    // the kernel made while no daemon read them).
    let snapshot = maps.decided();
    let resumed = detector.resume(reported_ns, &snapshot.entries);
    if resumed + restored > 0 {
        tracing::info!(
            detections = resumed,
            blocks = restored,
            "resumed what an earlier daemon reported: not reported again"
        );
    }
    let findings = detector.poll(monotonic_ns(), &snapshot.entries);
    report(&mut out, &maps, &findings)?;
    for net in sweep_policy(&mut out)? {
        if let Some(key) = host_key(&net) {
            maps.forget(&key);
        }
    }
    let (calls_tx, mut calls) = tokio::sync::mpsc::channel(16);
    let server = tokio::spawn(control::server::serve(listener, calls_tx));
    let metrics_server = metrics_listener.map(|l| {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        }
        tokio::spawn(metrics::serve(l, Arc::new(registry)))
    });
    let started = Instant::now();
    // A pin file's times are those of its pinning: when counting began.
    let counting_since = std::fs::metadata(pins.map(scanner_common::names::COUNTERS_MAP))
        .and_then(|m| m.modified())
        .ok();
    let mut history = PortHistory::default();
    // Sources tracked, as of the last full scan; when that was; the ring
    // buffer's dropped records then.
    let mut tracked = 0;
    let mut last_full: Option<Instant> = None;
    let mut full_every = std::time::Duration::ZERO;
    let mut events_dropped = 0;

    let mut tick = interval(settings.poll_interval());
    let mut refresh = interval(settings.file.report.open_ports_refresh);
    let ifaces: Vec<&str> = args.ifaces.iter().map(String::as_str).collect();
    let detail = format!("watching {}; {}", ifaces.join(", "), blocking_state(&out));
    write(
        &mut out.reporter,
        &DaemonEvent::now("daemon_started", detail),
    );
    notify::tell(&format!("READY=1\nSTATUS=watching {}", ifaces.join(", ")));
    // Why the loop stopped on its own, if it did.
    let mut failure: Option<anyhow::Error> = None;
    loop {
        tokio::select! {
            batch = decisions.next_batch() => {
                let batch = batch.context("reading the EVENTS ring buffer")?;
                on_decisions(&batch, &maps, &mut detector, &mut out)?;
            }
            _ = tick.tick() => {
                let began = Instant::now();
                // Every decision made before `began_ns` is in the ring
                // buffer by now, or was dropped there (counted, and a full
                // scan follows): after this poll all of them are reported.
                let began_ns = monotonic_ns();
                on_decisions(&decisions.drain(), &maps, &mut detector, &mut out)?;
                // Decisions arrive on the ring buffer; a poll only follows
                // the scans already known. Every `full_every`, and at once
                // when the ring buffer dropped a record, every entry is read
                // (only decided ones are kept: a scan the detector knows that
                // is gone from them was evicted or started anew).
                let counters = maps.counter_table();
                let dropped = counters.as_ref().map_or(events_dropped, |c| c.total().events_dropped);
                let full = last_full.is_none_or(|t: Instant| t.elapsed() >= full_every)
                    || dropped != events_dropped;
                let entries = if full {
                    let snapshot = maps.decided();
                    let took = began.elapsed();
                    out.metrics.full_scan_took(took);
                    // At most 1% of a core on full scans: a small map is
                    // read every 2 s, a million sources every 30 s.
                    full_every = (took * 100).clamp(FULL_SCAN_MIN, FULL_SCAN_MAX);
                    (tracked, last_full, events_dropped) = (snapshot.sources, Some(Instant::now()), dropped);
                    snapshot.entries
                } else {
                    maps.decided_among(&detector.ids())
                };
                let findings = detector.poll(monotonic_ns(), &entries);
                out.metrics.poll_took(began.elapsed());
                report(&mut out, &maps, &findings)?;
                for net in sweep_policy(&mut out)? {
                    // A lifted block starts the source afresh: if it scans
                    // on, it is decided, and blocked, again.
                    if let Some(key) = host_key(&net) {
                        maps.forget(&key);
                    }
                }
                update_metrics(&mut out, counters, &attached, tracked);
                if let Err(e) = reported.set(began_ns.saturating_sub(RING_SLACK_NS)) {
                    tracing::warn!("{:#}", anyhow::Error::from(e));
                }
                if !watch_interfaces(&mut attached, &mut ebpf, &pins, &args, &mut out) {
                    failure = Some(anyhow::anyhow!(
                        "no watched interface is left (removed, and --no-reattach is set)"
                    ));
                    break;
                }
                if !out.reporter.has_sink() && !out.blocking && metrics_server.is_none() {
                    failure = Some(anyhow::anyhow!(
                        "stdout is closed and there is no journal, no metrics and no blocking: nothing left to do"
                    ));
                    break;
                }
            }
            _ = refresh.tick() => {
                refresh_open_ports(&mut port_bits, &settings.file.detection.ignore_ports)?;
                let now = Instant::now();
                if history.due(now) {
                    match maps.port_hits() {
                        Ok(current) => history.record(now, &current),
                        Err(e) => tracing::warn!("reading probes per port: {:#}", anyhow::Error::from(e)),
                    }
                }
            }
            Some((request, reply)) = calls.recv() => {
                let state = State {
                    attached: &attached,
                    started,
                    default_ttl: settings.file.response.block_ttl,
                    detector: &detector,
                    ports: &history,
                    tracked,
                    counting_since,
                    prefixes: out.prefixes,
                    resumed: (resumed, restored),
                };
                let answer = handle(request, &mut out, &mut maps, &state)
                    .unwrap_or_else(|e| Response::error(format!("{e:#}")));
                let _ = reply.send(answer);
            }
            _ = sighup.recv() => {
                notify::tell(&format!("RELOADING=1\nMONOTONIC_USEC={}", notify::monotonic_usec()));
                match reload_config(&args, &settings, ephemeral, &mut ebpf, &mut out) {
                    Ok((new, summary)) => {
                        detector.set_quiet_ns(new.quiet_ns());
                        if new.poll_interval() != settings.poll_interval() {
                            tick = interval(new.poll_interval());
                        }
                        if new.file.report.open_ports_refresh != settings.file.report.open_ports_refresh {
                            refresh = interval(new.file.report.open_ports_refresh);
                        }
                        settings = new;
                        tracing::info!("configuration reloaded: {summary}");
                        write(&mut out.reporter, &DaemonEvent::now("config_reloaded", summary));
                    }
                    Err(e) => {
                        tracing::error!("configuration rejected, the previous one stays: {e:#}");
                        write(&mut out.reporter, &DaemonEvent::now("config_rejected", format!("{e:#}")));
                    }
                }
                notify::tell("READY=1");
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    notify::tell("STOPPING=1");

    // Nothing lost on the way out: a final poll, then close every open scan.
    let mut findings = detector.poll(monotonic_ns(), &maps.decided().entries);
    findings.extend(detector.finish());
    report(&mut out, &maps, &findings)?;
    if let Err(e) = reported.set(monotonic_ns()) {
        tracing::warn!("{:#}", anyhow::Error::from(e));
    }
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
    // A clean stop detaches: unpin the links, then dropping the object
    // closes them. The maps stay pinned, blocks included, for the next start.
    sweep_policy(&mut out)?;
    if out.policy.active_blocks() > 0 {
        tracing::info!(
            blocks = out.policy.active_blocks(),
            pin_dir = %args.pin_dir.display(),
            "blocks kept for the next start"
        );
    }
    for a in &attached {
        pins.release(&a.name);
    }
    drop(ebpf);
    for a in attached.iter().filter(|a| a.index.is_some()) {
        emit_interface(
            &mut out.reporter,
            "detached",
            &a.name,
            a.mode.as_str(),
            None,
        );
    }
    server.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
    let _ = std::fs::remove_file(&args.socket);
    match failure {
        None => {
            write(
                &mut out.reporter,
                &DaemonEvent::now("daemon_stopped", "detached, exiting"),
            );
            tracing::info!("detached, exiting");
            Ok(())
        }
        Some(e) => {
            write(
                &mut out.reporter,
                &DaemonEvent::now("daemon_stopped", format!("detached: {e:#}")),
            );
            Err(e)
        }
    }
}

/// How long after the kernel stamps a decision its ring buffer record is
/// surely committed (reserve and submit are one program run apart).
const RING_SLACK_NS: u64 = 10_000_000;

/// Findings from ring buffer records, reported.
fn on_decisions(
    batch: &[scanner_common::Decision],
    maps: &Maps,
    detector: &mut Detector,
    out: &mut Output,
) -> anyhow::Result<()> {
    for d in batch {
        let id = EntryId {
            scope: d.scope,
            key: d.key,
        };
        // Under a flood the entry may be evicted already: the record itself
        // still tells who and when.
        let stats = maps.entry(id).unwrap_or_else(|| decisions::stats_of(d));
        let findings = detector.observe(monotonic_ns(), id, &stats);
        report(out, maps, &findings)?;
    }
    Ok(())
}

fn allow_all(
    policy: &mut Policy,
    nets: &[ipnet::IpNet],
    origin: AllowOrigin,
) -> anyhow::Result<()> {
    for net in nets {
        policy
            .allow(*net, monotonic_ns(), origin)
            .with_context(|| format!("allowlisting {net}"))?;
    }
    Ok(())
}

/// "blocking on", "blocking off", or what a dry run does.
fn blocking_state(out: &Output) -> String {
    if out.dry_run {
        format!(
            "dry run: nothing is dropped ({} kept blocks not enforced)",
            out.policy.active_blocks()
        )
    } else if out.blocking {
        "blocking on".into()
    } else {
        "blocking off".into()
    }
}

/// bpffs mounted by this daemon inside a mount namespace of its own (e.g.
/// under `ip netns exec`) goes away with the namespace: say so.
fn warn_private_mount(pin_dir: &std::path::Path) {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    // PID 1's namespace is the host's; where it cannot be read (a
    // container), the parent's tells whether this process got one of its own.
    let reference = ns("1").or_else(|| ns(&std::os::unix::process::parent_id().to_string()));
    let private = matches!((ns("self"), reference), (Some(me), Some(other)) if me != other);
    if private {
        tracing::warn!(
            pin_dir = %pin_dir.display(),
            "mounted bpffs at /sys/fs/bpf inside a private mount namespace (e.g. `ip netns exec`): pinned blocks and state will not outlive this namespace; mount bpffs where the daemon runs, or use a --pin-dir on a bpffs outside it"
        );
    } else {
        tracing::info!(pin_dir = %pin_dir.display(), "mounted bpffs at /sys/fs/bpf");
    }
}

/// The longest time between two polls that read every tracked source (the
/// safety net for ring buffer records lost, and the count of tracked
/// sources); other polls only look up the scans already detected.
const FULL_SCAN_MAX: std::time::Duration = std::time::Duration::from_secs(30);
/// Even an empty map costs a walk of its buckets: not at every poll.
const FULL_SCAN_MIN: std::time::Duration = std::time::Duration::from_secs(2);

fn interval(period: std::time::Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval(period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

/// Reads the configuration file again and applies it: the kernel's
/// thresholds, blocking and block TTL, the file's allowlist. State (tracked
/// sources, blocks, detections) is kept. On any error nothing changes.
fn reload_config(
    args: &RunArgs,
    current: &Settings,
    ephemeral: (u16, u16),
    ebpf: &mut aya::Ebpf,
    out: &mut Output,
) -> anyhow::Result<(Settings, String)> {
    let file = FileConfig::load(args.config.as_deref())?;
    let new = Settings::new(file, &args.overrides());
    let config = new.kernel(ephemeral)?;
    let plan = reload::plan(current, &new);
    // Check every new allowlist entry fits before changing anything.
    if out.policy.allowlist().len() + plan.allow.len()
        > scanner_common::names::ALLOW_CAPACITY as usize
    {
        anyhow::bail!(
            "the allowlist would exceed {} entries",
            scanner_common::names::ALLOW_CAPACITY
        );
    }
    load::write_config(ebpf, &config).context("writing the CONFIG map")?;
    for net in &plan.disallow {
        // Gone already (`scanner disallow`) is fine.
        let _ = out.policy.disallow(*net);
    }
    // The host's own addresses may have changed: they stay allowlisted.
    let host = policy::default_allowlist();
    let allow = plan
        .allow
        .iter()
        .map(|n| (n, AllowOrigin::Config))
        .chain(host.iter().map(|n| (n, AllowOrigin::Host)));
    for (net, origin) in allow {
        for change in out.policy.allow(*net, monotonic_ns(), origin)? {
            if let Change::Unblocked { net: lifted, .. } = change {
                emit(
                    out,
                    policy_event("unblocked", &lifted, "manual", None, false),
                );
            }
        }
    }
    out.blocking = new.blocks();
    out.dry_run = new.file.response.dry_run;
    out.policy
        .set_enforcing(!out.dry_run)
        .context("writing the BLOCKS_EMPTY map")?;
    out.block_ttl_s = new.file.response.block_ttl.as_secs();
    let summary = reload::summary(&new, &plan);
    Ok((new, summary))
}

/// Kernel counters per interface, tracked sources and blocks, for /metrics.
fn update_metrics(
    out: &mut Output,
    counters: Result<CounterTable, PollError>,
    attached: &[Attached],
    sources: usize,
) {
    match counters {
        Ok(table) => {
            for a in attached {
                if let Some(index) = a.index {
                    out.metrics.packets(&a.name, table.iface(index));
                }
            }
            out.metrics.totals(table.total());
        }
        Err(e) => tracing::warn!("reading counters: {:#}", anyhow::Error::from(e)),
    }
    out.metrics.sources(sources);
    out.metrics.blocks_active(out.policy.active_blocks());
}

fn refresh_open_ports(bits: &mut PortBits, ignored: &[u16]) -> anyhow::Result<()> {
    let listeners = listeners::listeners();
    let changed = bits
        .update(&port_bits::bitmap(&listeners, ignored))
        .context("writing the PORT_BITS map")?;
    if changed > 0 {
        let open: Vec<String> = listeners::open_ports(&listeners)
            .into_iter()
            .map(|(proto, port)| format!("{}/{port}", crate::audit::proto_name(proto)))
            .collect();
        tracing::debug!(open = %open.join(" "), "open ports updated");
    }
    Ok(())
}
