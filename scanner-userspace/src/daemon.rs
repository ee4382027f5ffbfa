//! `scanner run`: load, attach, then poll -> detect -> report / block until
//! a signal; and `scanner config`.

use std::{collections::HashMap, sync::Arc, time::Instant};

use anyhow::Context as _;
use aya::maps::{Array, LpmTrie, RingBuf};
use scanner_common::{ALLOWLIST_MAP, BLOCKLIST_MAP, BLOCKS_EMPTY_MAP, EVENTS_MAP, PORT_BITS_MAP};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::{ConfigArgs, RunArgs},
    config::{DEFAULT_FILE, FileConfig},
    control::{self, Response},
    decisions::{self, Decisions},
    detect::{Detector, EntryId},
    hits::PortHistory,
    iface,
    journal::{self, Journal},
    load,
    metrics::{self, Metrics},
    notify,
    output::{Output, emit, emit_interface, host_key, policy_event, report, sweep_policy, write},
    pin::PinDir,
    policy::{self, Change, Policy},
    poll::{CounterTable, Maps, PollError, monotonic_ns, take_map},
    ports::{self, PortBits},
    reload,
    report::{DaemonEvent, Reporter, net_name},
    requests::{State, handle},
    settings::{Settings, ephemeral_range},
};

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

pub async fn run(args: RunArgs, to_journal: bool) -> anyhow::Result<()> {
    let mut settings = Settings::new(FileConfig::load(args.config.as_deref())?, &args);
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
    let listener = control::bind(&args.socket, args.socket_group.as_deref())
        .context("opening the control socket")?;
    let mut maps = Maps::take(&mut ebpf).context("opening the maps")?;
    let mut port_bits = PortBits::new(take_map::<Array<_, u64>>(&mut ebpf, PORT_BITS_MAP)?);
    // Know the open ports before the first packet is judged.
    refresh_open_ports(&mut port_bits, &settings.file.detection.ignore_ports)?;
    let mut decisions = Decisions::new(take_map::<RingBuf<_>>(&mut ebpf, EVENTS_MAP)?)
        .context("watching the EVENTS ring buffer")?;

    let mut policy = Policy::new(
        take_map::<LpmTrie<_, _, _>>(&mut ebpf, ALLOWLIST_MAP)?,
        take_map::<LpmTrie<_, _, _>>(&mut ebpf, BLOCKLIST_MAP)?,
        response.block_cap,
    )
    .with_empty_flag(take_map::<Array<_, u32>>(&mut ebpf, BLOCKS_EMPTY_MAP)?);
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
        emit_interface(&mut out.reporter, "attached", name, mode.as_str(), None)?;
    }
    warn_shared_counter_slots(&attached);
    let mut detector = Detector::new(settings.quiet_ns());
    let (calls_tx, mut calls) = tokio::sync::mpsc::channel(16);
    let server = tokio::spawn(control::serve(listener, calls_tx));
    let metrics_server = metrics_listener.map(|l| {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        }
        tokio::spawn(metrics::serve(l, Arc::new(registry)))
    });
    let started = Instant::now();
    let mut history = PortHistory::default();
    // Sources tracked, as of the last full scan; when that was; the ring
    // buffer's dropped records then.
    let mut tracked = 0;
    let mut last_full: Option<Instant> = None;
    let mut full_every = std::time::Duration::ZERO;
    let mut events_dropped = 0;

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut tick = interval(settings.poll_interval());
    let mut refresh = interval(settings.file.report.open_ports_refresh);
    let ifaces: Vec<&str> = args.ifaces.iter().map(String::as_str).collect();
    write(
        &mut out.reporter,
        &DaemonEvent::now(
            "daemon_started",
            format!(
                "watching {}; blocking {}",
                ifaces.join(", "),
                if out.blocking { "on" } else { "off" }
            ),
        ),
    )?;
    notify::tell(&format!("READY=1\nSTATUS=watching {}", ifaces.join(", ")));
    loop {
        tokio::select! {
            batch = decisions.next_batch() => {
                for d in batch.context("reading the EVENTS ring buffer")? {
                    let id = EntryId { scope: d.scope, key: d.key };
                    // Under a flood the entry may be evicted already: the
                    // record itself still tells who and when.
                    let stats = maps.entry(id).unwrap_or_else(|| decisions::stats_of(&d));
                    let findings = detector.observe(monotonic_ns(), id, &stats);
                    report(&mut out, &maps, &findings)?;
                }
            }
            _ = tick.tick() => {
                let began = Instant::now();
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
                watch_interfaces(&mut attached, &mut ebpf, &pins, &args, &mut out)?;
            }
            _ = refresh.tick() => {
                refresh_open_ports(&mut port_bits, &settings.file.detection.ignore_ports)?;
                let now = Instant::now();
                if history.due(now) {
                    match maps.port_hits() {
                        Ok(current) => history.record(now, &current),
                        Err(e) => tracing::warn!("reading probes per port: {e}"),
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
                        write(&mut out.reporter, &DaemonEvent::now("config_reloaded", summary))?;
                    }
                    Err(e) => {
                        tracing::error!("configuration rejected, the previous one stays: {e:#}");
                        write(&mut out.reporter, &DaemonEvent::now("config_rejected", format!("{e:#}")))?;
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
        )?;
    }
    server.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
    let _ = std::fs::remove_file(&args.socket);
    write(
        &mut out.reporter,
        &DaemonEvent::now("daemon_stopped", "detached, exiting"),
    )?;
    tracing::info!("detached, exiting");
    Ok(())
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

/// The kernel counts packets per interface in IFACE_SLOTS slots by ifindex:
/// two watched interfaces in one slot share their per-interface counters.
fn warn_shared_counter_slots(attached: &[Attached]) {
    let slot = |a: &Attached| a.index.map(|i| i % scanner_common::IFACE_SLOTS);
    for (i, a) in attached.iter().enumerate() {
        for b in &attached[i + 1..] {
            if slot(a).is_some() && slot(a) == slot(b) {
                tracing::warn!(
                    first = %a.name,
                    second = %b.name,
                    "these interfaces share a packet-counter slot: their per-interface metrics count both"
                );
            }
        }
    }
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
    let new = Settings::new(file, args);
    let config = new.kernel(ephemeral)?;
    let plan = reload::plan(current, &new);
    // Check every new allowlist entry fits before changing anything.
    if out.policy.allowlist().len() + plan.allow.len() > scanner_common::ALLOW_CAPACITY as usize {
        anyhow::bail!(
            "the allowlist would exceed {} entries",
            scanner_common::ALLOW_CAPACITY
        );
    }
    load::write_config(ebpf, &config).context("writing the CONFIG map")?;
    for net in &plan.disallow {
        // Gone already (`scanner disallow`) is fine.
        let _ = out.policy.disallow(*net);
    }
    for net in &plan.allow {
        for change in out.policy.allow(*net, monotonic_ns())? {
            if let Change::Unblocked { net: lifted, .. } = change {
                emit(
                    out,
                    policy_event("unblocked", &lifted, "manual", None, false),
                )?;
            }
        }
    }
    out.blocking = new.blocks();
    out.dry_run = new.file.response.dry_run;
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
        Err(e) => tracing::warn!("reading counters: {e}"),
    }
    out.metrics.sources(sources);
    out.metrics.blocks_active(out.policy.active_blocks());
}

/// An interface the daemon watches.
pub struct Attached {
    pub name: String,
    pub mode: load::AttachedMode,
    /// Its index while attached; None once it has been removed.
    pub index: Option<u32>,
}

/// Notices interfaces that went away (their XDP program went with them),
/// and, with `--reattach`, attaches again when they come back.
fn watch_interfaces(
    attached: &mut [Attached],
    ebpf: &mut aya::Ebpf,
    pins: &PinDir,
    args: &RunArgs,
    out: &mut Output,
) -> anyhow::Result<()> {
    for a in attached.iter_mut() {
        let now = iface::lookup(&a.name);
        if a.index.is_some() && a.index != now {
            tracing::warn!(iface = %a.name, "interface removed: not watched until it comes back");
            pins.release(&a.name);
            a.index = None;
            emit_interface(
                &mut out.reporter,
                "detached",
                &a.name,
                a.mode.as_str(),
                Some("removed"),
            )?;
        }
        let (None, Some(index)) = (a.index, now) else {
            continue;
        };
        if !args.reattach {
            continue;
        }
        match pins.attach(ebpf, &a.name, args.xdp_mode) {
            Ok((mode, _)) => {
                tracing::info!(iface = %a.name, mode = mode.as_str(), "interface is back: XDP program attached again");
                a.mode = mode;
                a.index = Some(index);
                out.names.insert(index, a.name.clone());
                emit_interface(
                    &mut out.reporter,
                    "attached",
                    &a.name,
                    mode.as_str(),
                    Some("reappeared"),
                )?;
            }
            Err(e) => tracing::warn!(iface = %a.name, "cannot attach again yet: {e}"),
        }
    }
    Ok(())
}

fn refresh_open_ports(bits: &mut PortBits, ignored: &[u16]) -> anyhow::Result<()> {
    let listeners = ports::listeners();
    let changed = bits
        .update(&ports::bitmap(&listeners, ignored))
        .context("writing the PORT_BITS map")?;
    if changed > 0 {
        let open: Vec<String> = ports::open_ports(&listeners)
            .into_iter()
            .map(|(proto, port)| format!("{}/{port}", crate::audit::proto_name(proto)))
            .collect();
        tracing::debug!(open = %open.join(" "), "open ports updated");
    }
    Ok(())
}
