//! Starting `scanner run`: everything is checked and claimed (interfaces,
//! privileges, pins, metrics port, control socket) before anything is
//! attached; then the program is loaded and attached, what an earlier daemon
//! reported is taken over, what it did not is reported, and the daemon says
//! it is ready.

use std::{collections::HashMap, sync::Arc, time::Instant};

use anyhow::Context as _;
use aya::maps::{Array, LpmTrie, RingBuf};
use scanner_common::names::{
    ALLOWLIST_MAP, BLOCKLIST_MAP, BLOCKS_EMPTY_MAP, EVENTS_MAP, PORT_BITS_MAP, PROTECTED_MAP,
};

use crate::{
    cli::RunArgs,
    config::{
        FileConfig,
        settings::{Settings, ephemeral_range},
    },
    control,
    daemon::{
        Daemon, FullScans,
        interfaces::warn_shared_counter_slots,
        respond::{
            Output, emit_interface, forget_lifted, report, spare_protected, sweep_policy, write,
        },
        upkeep::{forget_allowlisted, log_protected, refresh_open_ports},
    },
    detect::Detector,
    kernel::{
        decisions::Decisions,
        iface, load,
        load::Attached,
        maps::{Maps, monotonic_ns, take_map},
        pin::PinDir,
        policy::{self, AllowOrigin, Policy, net_name},
        port_bits::PortBits,
        protect::Protected,
        reported::Reported,
    },
    sinks::{
        event::{DaemonEvent, DaemonName, InterfaceName},
        file::EventsFile,
        journal::{self, Journal},
        metrics::{self, Metrics},
        notify,
        reporter::Reporter,
        stdout::Stdout,
    },
};

/// Loads, attaches and catches up; returns the running daemon, ready.
pub(super) async fn start(args: RunArgs, to_journal: bool) -> anyhow::Result<Daemon> {
    let settings = Settings::new(FileConfig::load(args.config.as_deref())?, &args.overrides());
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
    let events_file = args
        .events_file
        .as_deref()
        .map(EventsFile::open)
        .transpose()?;
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
    let mut ebpf = load::load_pinned(&config, &capacity, Some(pins.path()))?;
    crate::kernel::migrate::migrate(&pins, &mut ebpf);
    // Claim the control socket before attaching: a second daemon stops
    // here, attaching nothing.
    let listener = control::server::bind(&args.socket, args.socket_group.as_deref())
        .context("opening the control socket")?;
    let mut maps = Maps::take(&mut ebpf).context("opening the maps")?;
    let mut port_bits = PortBits::new(take_map::<Array<_, u64>>(&mut ebpf, PORT_BITS_MAP)?);
    // Know the open ports before the first packet is judged.
    let listeners = refresh_open_ports(&mut port_bits, &settings.file.detection.ignore_ports)?;
    let decisions = Decisions::new(take_map::<RingBuf<_>>(&mut ebpf, EVENTS_MAP)?)
        .context("watching the EVENTS ring buffer")?;
    // What an earlier daemon on these pins reported stays reported.
    let reported = Reported::open(&pins).context("opening the pinned state")?;
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
    forget_allowlisted(&mut maps, &policy);
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
    // Gateways and resolvers are in the kernel's map before the first
    // packet is judged.
    let mut protected = Protected::new(
        take_map::<aya::maps::HashMap<_, _, _>>(&mut ebpf, PROTECTED_MAP)?,
        settings.protection(),
    );
    let protected_now = log_protected(&mut protected)?;
    // A Local API that refuses the bouncer key or the machine's password
    // stops the start (exit 2); one that cannot be reached is retried.
    let fleet = crate::fleet::Fleet::start(&settings.file.crowdsec)
        .await
        .context("starting the CrowdSec link")?;
    let counts = maps.counts_identity();
    let opened = super::history::open(&args, &settings, &counts);
    let (metrics, registry) = Metrics::new(capacity.sources);
    let mut out = Output {
        reporter: Reporter::new(opened.writer)
            .with(journal)
            .with(events_file)
            .with(Some(Stdout::new(args.events, std::io::stdout()))),
        names,
        prefixes: settings.prefix_lengths(),
        policy,
        blocking: settings.blocks(),
        spare_flows: settings.established() == crate::config::Established::Flows,
        dry_run: response.dry_run,
        block_ttl_s: response.block_ttl.as_secs(),
        metrics,
        protected,
        protected_scans: HashMap::new(),
        decoys: Default::default(),
        undecided: None,
        fleet,
        enforced: Default::default(),
        probed: HashMap::new(),
    };
    // The "last hour" of probes per port: an earlier daemon's snapshots,
    // and one before any probe this daemon's program sees.
    let history = super::history::LastHour::start(&maps, counts, opened.snapshots, &out);
    let kernel_memory: u64 = match load::map_memory(&mut ebpf) {
        Ok(maps) => maps.iter().map(|(_, bytes)| bytes).sum(),
        Err(e) => {
            tracing::debug!("kernel memory of the maps: {e:#}");
            0
        }
    };
    tracing::info!(
        "kernel maps hold {:.1} MiB for {} sources",
        kernel_memory as f64 / (1024.0 * 1024.0),
        capacity.sources
    );
    // Everything the new programs read is filled: the attached program (an
    // earlier daemon's, until it is swapped) may tail-call the new one now.
    load::arm_admission(&mut ebpf)?;
    // Take over what an earlier daemon reported as the maps stood before
    // this daemon's program counts anything: a probe arriving between the
    // attach and the snapshot would make a scan that had ended look as if
    // it never stopped (and its resumption would go unreported).
    let mut detector = Detector::new(settings.quiet_ns());
    let ended_ns = reported.ended().context("opening the pinned state")?;
    let resumed = detector.resume(reported_ns, ended_ns, &maps.decided().entries);
    // Likewise the probes per port: what the kernel counted before now
    // belongs to earlier runs (each records its own at its stop).
    let port_hours = super::history::PortHours::new(&maps);
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
        emit_interface(&mut out.reporter, InterfaceName::Attached, name, mode, None);
    }
    warn_shared_counter_slots(&attached);
    // Catch up before saying ready: report at once what the earlier daemon
    // did not (decisions and blocks the kernel made while no daemon read
    // them).
    let snapshot = maps.decided();
    if resumed + restored > 0 {
        tracing::info!(
            detections = resumed,
            blocks = restored,
            "resumed what an earlier daemon reported: not reported again"
        );
    }
    let findings = detector.poll(monotonic_ns(), &snapshot.entries);
    report(&mut out, &mut maps, &findings)?;
    let lifted = sweep_policy(&mut out)?;
    forget_lifted(&mut maps, &lifted);
    // A scan block kept from before on an address protected now.
    spare_protected(&mut out, &mut maps, &protected_now)?;
    let (calls_tx, calls) = tokio::sync::mpsc::channel(16);
    let server = tokio::spawn(control::server::serve(listener, calls_tx));
    let metrics_server = metrics_listener.map(|l| {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        }
        tokio::spawn(metrics::serve(l, Arc::new(registry)))
    });
    // Listening ports: what changed while no daemon watched is reported
    // now.
    let (mut listening, from_history) =
        super::history::Listening::new(opened.listening, &listeners);
    listening.update(&mut out, &listeners, !from_history);
    let started = Instant::now();
    // A pin file's times are those of its pinning: when counting began.
    let counting_since = std::fs::metadata(pins.map(scanner_common::names::COUNTERS_MAP))
        .and_then(|m| m.modified())
        .ok();
    let ifaces: Vec<&str> = args.ifaces.iter().map(String::as_str).collect();
    let detail = format!("watching {}; {}", ifaces.join(", "), blocking_state(&out));
    write(
        &mut out.reporter,
        &DaemonEvent::now(DaemonName::Started, detail),
    );
    notify::tell(&format!("READY=1\nSTATUS=watching {}", ifaces.join(", ")));
    Ok(Daemon {
        args,
        settings,
        ephemeral,
        pins,
        ebpf,
        maps,
        port_bits,
        decisions,
        reported,
        out,
        attached,
        detector,
        calls,
        server,
        metrics_server,
        started,
        counting_since,
        history,
        port_hours,
        listening,
        scans: FullScans::default(),
        resumed: (resumed, restored),
        kernel_memory,
    })
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
pub(super) fn blocking_state(out: &Output) -> String {
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
