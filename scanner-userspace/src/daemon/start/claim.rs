//! The first phase: claiming what the daemon needs, nothing loaded yet.

use std::collections::HashMap;

use anyhow::Context as _;

use crate::{
    config::settings::{Settings, ephemeral_range},
    kernel::{iface, load, pin::PinDir},
    sinks::{
        file::EventsFile,
        journal::{self, Journal},
    },
};

/// What the start claimed before loading anything.
pub(super) struct Claimed {
    /// The watched interfaces by index.
    pub(super) names: HashMap<u32, String>,
    pub(super) ephemeral: (u16, u16),
    /// The CONFIG map's value: the settings, checked.
    pub(super) config: scanner_common::Config,
    pub(super) pins: PinDir,
    pub(super) journal: Option<Journal>,
    pub(super) events_file: Option<EventsFile>,
    pub(super) metrics_listener: Option<tokio::net::TcpListener>,
}

/// Claims what the daemon needs before the kernel is touched: a typo in an
/// interface, missing privileges, another daemon's pins, another XDP
/// program, a taken metrics port or an events file that cannot be opened
/// stop the start here, with nothing loaded or attached.
pub(super) async fn claim(settings: &Settings, to_journal: bool) -> anyhow::Result<Claimed> {
    let launch = &settings.launch;
    let mut names = HashMap::new();
    for name in &launch.ifaces {
        names.insert(iface::index_of(name)?, name.clone());
    }
    load::check_privileges()?;
    let ephemeral = ephemeral_range()?;
    let config = settings.kernel(ephemeral)?;
    let pins = PinDir::prepare(&launch.pin_dir)?;
    if pins.mounted_bpffs() {
        warn_private_mount(&launch.pin_dir);
    }
    for name in &launch.ifaces {
        pins.check_free(name)?;
    }
    let journal = if to_journal {
        let path = journal::socket_path();
        Some(
            Journal::connect(&path)
                .with_context(|| format!("connecting to the journal at {}", path.display()))?,
        )
    } else {
        None
    };
    let events_file = launch
        .events_file
        .as_deref()
        .map(EventsFile::open)
        .transpose()?;
    let metrics_listener = match settings.file.report.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("serving metrics on {addr}"))?,
        ),
        None => None,
    };
    Ok(Claimed {
        names,
        ephemeral,
        config,
        pins,
        journal,
        events_file,
        metrics_listener,
    })
}

/// bpffs mounted by this daemon inside a mount namespace of its own (e.g.
/// under `ip netns exec`) goes away with the namespace: say so.
pub(super) fn warn_private_mount(pin_dir: &std::path::Path) {
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
