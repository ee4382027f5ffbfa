//! `scanner run`: load, attach, then poll -> detect -> report / block until
//! a signal; and `scanner config`.

use std::{collections::HashMap, time::Instant};

use anyhow::Context as _;
use aya::maps::{Array, LpmTrie, RingBuf};
use scanner_common::{ALLOWLIST_MAP, BLOCKLIST_MAP, EVENTS_MAP, PORT_BITS_MAP};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::{ConfigArgs, RunArgs},
    config::{DEFAULT_FILE, FileConfig},
    control::{self, Response},
    decisions::{self, Decisions},
    detect::{Detector, EntryId},
    iface, load,
    output::{Output, emit_interface, host_key, report, sweep_policy},
    pin::PinDir,
    policy::{self, Policy},
    poll::{Maps, monotonic_ns, take_map},
    ports::{self, PortBits},
    report::{Reporter, net_name},
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

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = Settings::new(FileConfig::load(args.config.as_deref())?, &args);
    // Resolve every interface before touching the kernel: a typo attaches nothing.
    let mut names = HashMap::new();
    for name in &args.ifaces {
        names.insert(iface::index_of(name)?, name.clone());
    }
    load::check_privileges()?;
    let config = settings.kernel(ephemeral_range()?)?;
    let response = &settings.file.response;
    let pins = PinDir::prepare(&args.pin_dir)?;
    let capacity = load::Capacity {
        blocks: response.block_cap,
        sources: settings.file.detection.max_sources,
    };
    let mut ebpf = load::load_pinned(&config, &capacity, Some(&pins))?;
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
        take_map::<LpmTrie<_, _, _>>(&mut ebpf, ALLOWLIST_MAP)?,
        take_map::<LpmTrie<_, _, _>>(&mut ebpf, BLOCKLIST_MAP)?,
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
                    // Under a flood the entry may be evicted already: the
                    // record itself still tells who and when.
                    let stats = maps.entry(id).unwrap_or_else(|| decisions::stats_of(&d));
                    let findings = detector.observe(monotonic_ns(), id, &stats);
                    report(&mut out, &maps, &findings)?;
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
                watch_interfaces(&mut attached, &mut ebpf, &pins, &args, &mut out)?;
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
    let _ = std::fs::remove_file(&args.socket);
    tracing::info!("detached, exiting");
    Ok(())
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
            .map(|(proto, port)| format!("{}/{port}", if proto == 6 { "tcp" } else { "udp" }))
            .collect();
        tracing::debug!(open = %open.join(" "), "open ports updated");
    }
    Ok(())
}
