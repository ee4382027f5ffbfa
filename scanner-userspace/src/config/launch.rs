//! What only the command line says: which interfaces, where the daemon's
//! pins, socket and files are, how events are written. The daemon gets
//! these with its [`Settings`](super::settings::Settings), never the CLI's
//! own arguments; a reload reads the file again with the same flags on top.

use std::{path::PathBuf, time::Duration};

use crate::{kernel::load::XdpMode, sinks::stdout::EventFormat};

/// What the command line sets on top of the file (`None`, `false`, empty:
/// the file decides).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Overrides {
    pub poll_interval: Option<Duration>,
    pub quiet_after: Option<Duration>,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub fanout_ports: Option<u32>,
    pub fanout_window: Option<Duration>,
    pub max_sources: Option<u32>,
    pub block: bool,
    pub dry_run: bool,
    pub block_ttl: Option<Duration>,
    pub block_cap: Option<u32>,
    pub allow: Vec<ipnet::IpNet>,
}

/// The command line of `scanner run`, as the daemon needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Launch {
    /// The interfaces to watch, in the order given.
    pub ifaces: Vec<String>,
    pub xdp_mode: XdpMode,
    /// The configuration file (None: /etc/scanner/scanner.toml if it exists).
    pub config: Option<PathBuf>,
    pub events: EventFormat,
    pub events_file: Option<PathBuf>,
    /// `--history FILE`, or `--no-history` (then `keep_history` is false).
    pub history: Option<PathBuf>,
    pub keep_history: bool,
    /// Stop once every watched interface is gone, rather than wait for it.
    pub no_reattach: bool,
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub pin_dir: PathBuf,
    /// The flags that set what the file sets too.
    pub overrides: Overrides,
}

impl Default for Launch {
    fn default() -> Self {
        Self {
            ifaces: Vec::new(),
            xdp_mode: XdpMode::Auto,
            config: None,
            events: EventFormat::Text,
            events_file: None,
            history: None,
            keep_history: true,
            no_reattach: false,
            socket: PathBuf::from(crate::control::DEFAULT_SOCKET),
            socket_group: None,
            pin_dir: PathBuf::from(crate::kernel::pin::DEFAULT_PIN_DIR),
            overrides: Overrides::default(),
        }
    }
}
