//! The second phase: the program loaded, its maps filled, an earlier
//! daemon's state taken over.

use std::collections::HashMap;

use anyhow::Context as _;
use aya::maps::{Array, LpmTrie, RingBuf};
use scanner_common::names::{
    ALLOWLIST_MAP, BLOCKLIST_MAP, BLOCKS_EMPTY_MAP, EVENTS_MAP, PORT_BITS_MAP, PROTECTED_MAP,
    RULES_GENERATION_MAP, SOURCES_MAP,
};

use crate::{
    audit::listeners::Listener,
    config::settings::Settings,
    control,
    daemon::{
        Kernel,
        probes::ProbeWatch,
        respond::Output,
        responder::Responder,
        start::claim::Claimed,
        upkeep::{forget_allowlisted, log_protected, refresh_open_ports},
    },
    detect::Detector,
    history::ListeningRow,
    kernel::{
        decisions::Decisions,
        load,
        maps::{Maps, monotonic_ns, take_map},
        policy::{self, AllowOrigin, Policy, net_name},
        port_bits::PortBits,
        protect::Protected,
        reported::Reported,
    },
    sinks::{metrics::Metrics, reporter::Reporter, stdout::Stdout, syslog::Syslog},
};

/// The program loaded, its maps filled, and what an earlier daemon left
/// taken over: everything but the attach.
pub(super) struct Loaded {
    /// The program and its maps; not attached yet.
    pub(super) kernel: Kernel,
    pub(super) out: Output,
    pub(super) detector: Detector,
    pub(super) control: tokio::net::UnixListener,
    pub(super) metrics: Option<(
        tokio::net::TcpListener,
        prometheus_client::registry::Registry,
    )>,
    /// Listening sockets now, and as the history last saw them.
    pub(super) listeners: Vec<Listener>,
    pub(super) listening_before: Option<Vec<ListeningRow>>,
    pub(super) history: crate::daemon::history::LastHour,
    pub(super) port_hours: crate::daemon::history::PortHours,
    /// Addresses protected now (a scan block kept on one is lifted).
    pub(super) protected_now: Vec<std::net::IpAddr>,
    /// Detections and blocks an earlier daemon had reported.
    pub(super) resumed: (usize, usize),
    pub(super) kernel_memory: u64,
}

/// Loads the program (or reuses the pinned maps), claims the control
/// socket, fills the maps the first packet is judged by (open ports, rules,
/// protected addresses), and takes over what an earlier daemon reported,
/// as the maps stood before this daemon's program counts anything.
pub(super) async fn load_and_restore(
    settings: &Settings,
    claimed: Claimed,
) -> anyhow::Result<Loaded> {
    let launch = &settings.launch;
    let response = &settings.file.response;
    let Claimed {
        names,
        ephemeral,
        config,
        pins,
        journal,
        events_file,
        metrics_listener,
    } = claimed;
    let capacity = load::Capacity {
        blocks: response.block_cap,
        sources: settings.file.detection.max_sources,
    };
    // A SOURCES made by this load holds only what this object's programs
    // admit, each admission in their rings (see `Maps::admissions_from`).
    let fresh_sources = !pins.path().join(SOURCES_MAP).exists();
    let mut ebpf = load::load_pinned(&config, &capacity, Some(pins.path()))?;
    crate::kernel::migrate::migrate(&pins, &mut ebpf);
    // Claim the control socket before attaching: a second daemon stops
    // here, attaching nothing.
    let control = control::server::bind(&launch.socket, launch.socket_group.as_deref())
        .context("opening the control socket")?;
    let mut maps = Maps::take(&mut ebpf).context("opening the maps")?;
    if fresh_sources {
        maps.admissions_from(0);
    }
    let mut port_bits = PortBits::new(take_map::<Array<_, u64>>(&mut ebpf, PORT_BITS_MAP)?);
    // Know the open ports before the first packet is judged.
    let listeners = refresh_open_ports(&mut port_bits, &settings.file.detection.ignore_ports)?;
    let decisions = Decisions::new(take_map::<RingBuf<_>>(&mut ebpf, EVENTS_MAP)?)
        .context("watching the EVENTS ring buffer")?;
    // What an earlier daemon on these pins reported stays reported.
    let reported = Reported::open(&pins).context("opening the pinned state")?;
    let reported_ns = reported.get().context("opening the pinned state")?;
    let (mut policy, restored) = rules(settings, &mut ebpf, &mut maps, reported_ns)?;
    // Gateways and resolvers are in the kernel's map before the first
    // packet is judged.
    let mut protected = Protected::new(
        take_map::<aya::maps::HashMap<_, _, _>>(&mut ebpf, PROTECTED_MAP)?,
        settings.protection(),
    );
    let protected_now = log_protected(&mut protected, &mut policy)?;
    // A Local API that refuses the bouncer key or the machine's password
    // stops the start (exit 2); one that cannot be reached is retried.
    let fleet = crate::fleet::Fleet::start(&settings.file.crowdsec)
        .await
        .context("starting the CrowdSec link")?;
    let counts = maps.counts_identity();
    let opened = crate::daemon::history::open(settings, &counts);
    let (metrics, registry) = Metrics::new(capacity.sources);
    let signals = &settings.file.signals;
    let syslog = signals
        .collector()
        .map(|c| Syslog::start(c, signals.queue, signals.host.as_deref()));
    let syslog_stats = syslog.as_ref().map(Syslog::stats);
    let memory = crate::daemon::slow::start(settings);
    let probes = ProbeWatch::new(
        signals,
        syslog.as_ref().map(Syslog::queue),
        memory.is_some().then(|| settings.prefix_lengths()),
    );
    let out = Output {
        reporter: Reporter::new(opened.writer)
            .with(journal)
            .with(events_file)
            .with(syslog)
            .with(Some(Stdout::new(launch.events, std::io::stdout()))),
        signals: syslog_stats,
        probes,
        names,
        metrics,
        responder: Responder::new(policy, protected),
        fleet,
        probed: HashMap::new(),
        memory,
    };
    // The "last hour" of probes per port: an earlier daemon's snapshots,
    // and one before any probe this daemon's program sees.
    let history = crate::daemon::history::LastHour::start(&maps, counts, opened.snapshots, &out);
    let kernel_memory = kernel_memory(&mut ebpf, capacity.sources);
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
    let port_hours = crate::daemon::history::PortHours::new(&maps);
    Ok(Loaded {
        kernel: Kernel {
            ephemeral,
            pins,
            ebpf,
            maps,
            port_bits,
            decisions,
            reported,
            attached: Vec::new(),
        },
        out,
        detector,
        control,
        metrics: metrics_listener.map(|l| (l, registry)),
        listeners,
        listening_before: opened.listening,
        history,
        port_hours,
        protected_now,
        resumed: (resumed, restored),
        kernel_memory,
    })
}

/// The allow and block rules: blocks an earlier daemon left restored, the
/// host's and the configuration's allowlist entries added. Returns them and
/// how many blocks were restored.
pub(super) fn rules(
    settings: &Settings,
    ebpf: &mut aya::Ebpf,
    maps: &mut Maps,
    reported_ns: u64,
) -> anyhow::Result<(Policy, usize)> {
    let response = &settings.file.response;
    let mut policy = Policy::new(
        take_map::<LpmTrie<_, _, _>>(ebpf, ALLOWLIST_MAP)?,
        take_map::<LpmTrie<_, _, _>>(ebpf, BLOCKLIST_MAP)?,
        take_map::<Array<_, u32>>(ebpf, RULES_GENERATION_MAP)?,
        response.block_cap,
    )
    .with_empty_flag(take_map::<Array<_, u32>>(ebpf, BLOCKS_EMPTY_MAP)?);
    // A dry run drops nothing, not even blocks kept from an earlier run.
    policy
        .set_enforcing(!settings.dry_run())
        .context("writing the BLOCKS_EMPTY map")?;
    let restored = policy.restore(reported_ns, monotonic_ns());
    allow_all(&mut policy, &policy::default_allowlist(), AllowOrigin::Host)?;
    allow_all(&mut policy, &response.allowlist, AllowOrigin::Config)?;
    forget_allowlisted(maps, &policy);
    let allow: Vec<String> = policy.allowlist().iter().map(net_name).collect();
    tracing::info!(allowlist = %allow.join(" "), "never blocked, never counted");
    if settings.dry_run() {
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
    Ok((policy, restored))
}

/// Kernel memory of the maps (memlock), logged.
pub(super) fn kernel_memory(ebpf: &mut aya::Ebpf, sources: u32) -> u64 {
    let bytes = match load::map_memory(ebpf) {
        Ok(maps) => maps.iter().map(|(_, bytes)| bytes).sum(),
        Err(e) => {
            tracing::debug!("kernel memory of the maps: {e:#}");
            0
        }
    };
    tracing::info!(
        "kernel maps hold {:.1} MiB for {sources} sources",
        bytes as f64 / (1024.0 * 1024.0),
    );
    bytes
}

pub(super) fn allow_all(
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
