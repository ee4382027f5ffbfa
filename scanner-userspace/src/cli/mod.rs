//! Command-line interface. Doc comments here are the `--help` text.

pub(crate) mod commands;
pub(crate) mod history;
pub(crate) mod manual;
pub(crate) mod top;

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

use crate::{
    config::launch::{Launch, Overrides},
    kernel::{load::LoadError, pin::PinError},
    named::Named,
};
pub(crate) use crate::{
    config::parse_duration,
    kernel::{load::XdpMode, policy::parse_net},
    sinks::{journal::LogTarget, stdout::EventFormat},
};

/// Host-based port-scan detector: an XDP program counts every inbound probe
/// per source, and this daemon reports the sources that scan.
#[derive(Debug, Parser)]
#[command(name = "scanner", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Load the XDP program, attach it to interfaces, and report scans until
    /// SIGINT or SIGTERM (which detach it cleanly).
    Run(Box<RunArgs>),
    /// Show or check the configuration file.
    Config(ConfigArgs),
    /// The running daemon: interfaces, packets, sources, detections, blocks.
    Status(ClientArgs),
    /// Current suspects and detections, and active blocks.
    List(ListArgs),
    /// Block an address or CIDR in the kernel (until --ttl, default: the
    /// daemon's block_ttl).
    Block(BlockArgs),
    /// Lift a block.
    Unblock(TargetArgs),
    /// Allowlist an address or CIDR: never blocked, never counted; or list
    /// the allowlist (--list).
    Allow(AllowArgs),
    /// Remove an address or CIDR from the allowlist.
    Disallow(TargetArgs),
    /// The ports this host exposes (listening TCP, UDP and SCTP sockets)
    /// with their service and risk, and, from the running daemon, how often
    /// scanners probe them.
    Ports(PortsArgs),
    /// A live dashboard of the running daemon: top sources, probed ports,
    /// packet rates, events and blocks.
    Top(TopArgs),
    /// What the history file holds: detections, blocks and port changes,
    /// filtered by source, port, kind and time (no daemon needed).
    History(history::HistoryArgs),
    /// A report of a period from the history: probes per port over time,
    /// scans per day, top sources, exposed ports, port changes; one
    /// self-contained HTML page (--html FILE) or JSON (--json).
    Report(history::ReportArgs),
    /// Print shell completions, e.g. `scanner completions bash >
    /// /usr/share/bash-completion/completions/scanner`.
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per command to a folder.
    Manpage(ManpageArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PortsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// List the most probed destination ports (open or closed) instead of
    /// the listening sockets; needs the daemon.
    #[arg(long)]
    pub probed: bool,
    /// How many ports `--probed` lists.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub limit: u32,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TopArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Refresh interval, e.g. 1s, 500ms.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ManpageArgs {
    /// Write scanner.1 and scanner-<command>.1 into this folder instead of
    /// printing scanner.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientArgs {
    /// The daemon's control socket.
    #[arg(long, default_value = crate::control::DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BlockArgs {
    /// Address or CIDR, e.g. 198.51.100.7 or 2001:db8::/64.
    #[arg(value_parser = crate::kernel::policy::parse_exact_net)]
    pub target: ipnet::IpNet,
    /// How long the block lasts, e.g. 2h; at most a year.
    #[arg(long, value_parser = crate::config::parse_ttl)]
    pub ttl: Option<Duration>,
    /// Block a protected gateway, resolver or established peer too: without
    /// it such an address is refused (and spared inside a CIDR).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TargetArgs {
    /// Address or CIDR, e.g. 198.51.100.7 or 2001:db8::/64.
    #[arg(value_parser = crate::kernel::policy::parse_exact_net)]
    pub target: ipnet::IpNet,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AllowArgs {
    /// Address or CIDR, e.g. 198.51.100.7 or 2001:db8::/64.
    #[arg(value_parser = parse_net, required_unless_present = "list", conflicts_with = "list")]
    pub target: Option<ipnet::IpNet>,
    /// List the allowlist and why each entry is on it.
    #[arg(long)]
    pub list: bool,
    /// With --list: print JSON instead of a table.
    #[arg(long, requires = "list")]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub(crate) struct ConfigArgs {
    /// Print a commented configuration file with every default.
    #[arg(long)]
    pub print_default: bool,
    /// Check a configuration file and print the settings it gives.
    #[arg(long, value_name = "FILE")]
    pub check: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    /// Interface to watch; repeat for several (e.g. --iface eth0 --iface eth1).
    #[arg(long = "iface", short = 'i', required = true, value_name = "IFACE")]
    pub ifaces: Vec<String>,

    /// XDP attach mode: native (in the driver), skb (generic, any interface),
    /// or auto (native, falling back to skb).
    #[arg(long, value_parser = one_of::<XdpMode>(), default_value_t = XdpMode::Auto)]
    pub xdp_mode: XdpMode,

    /// Configuration file (TOML; `scanner config --print-default` shows
    /// every key). Default: /etc/scanner/scanner.toml if it exists.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Event format on stdout: human text, or one JSON object per line.
    #[arg(long, value_parser = one_of::<EventFormat>(), default_value_t = EventFormat::Text)]
    pub events: EventFormat,

    /// Also append every event, as one JSON line, to this file (created with
    /// mode 0640; opened again on SIGHUP, after logrotate moved it).
    #[arg(long, value_name = "FILE")]
    pub events_file: Option<PathBuf>,

    /// Where logs and events go besides stdout: the systemd journal (native
    /// protocol, with SCANNER_* fields), stderr, or auto (the journal when
    /// its socket exists).
    #[arg(long, value_parser = one_of::<LogTarget>(), default_value_t = LogTarget::Auto)]
    pub log: LogTarget,

    /// How often the maps are read, e.g. 1s, 250ms [default: 1s]
    /// [config: report.poll_interval].
    #[arg(long, value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,

    /// Distinct ports within one window that decide on their own
    /// [default: 20] [config: detection.fanout_ports].
    #[arg(long, alias = "min-ports", value_parser = clap::value_parser!(u32).range(2..))]
    pub fanout_ports: Option<u32>,

    /// Fan-out window [default: 60s] [config: detection.fanout_window].
    #[arg(long, alias = "window", value_parser = parse_duration)]
    pub fanout_window: Option<Duration>,

    /// Report a detected scan as ended after this much quiet, at least 1s
    /// [default: 2m] [config: report.quiet_after].
    #[arg(long, value_parser = crate::config::parse_quiet)]
    pub quiet_after: Option<Duration>,

    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9464
    /// [config: report.metrics_listen].
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Keep the history (events, probes per port per hour, listening-port
    /// changes) in this SQLite file [default: /var/lib/scanner/history.db]
    /// [config: report.history].
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,

    /// Keep no history.
    #[arg(long, conflicts_with = "history")]
    pub no_history: bool,

    /// Block detected sources in the kernel (XDP_DROP) the moment they are
    /// decided. Off by default: report only [config: response.block].
    #[arg(long)]
    pub block: bool,

    /// How long a block lasts, e.g. 1h, 30m; at most a year [default: 1h]
    /// [config: response.block_ttl].
    #[arg(long, value_parser = crate::config::parse_ttl)]
    pub block_ttl: Option<Duration>,

    /// Most blocks at once; past it new blocks are refused, loudly
    /// [default: 65536, at most 1048576] [config: response.block_cap].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::config::MAX_BLOCK_CAP)))]
    pub block_cap: Option<u32>,

    /// Report what would be blocked, block nothing: not even blocks kept
    /// from an earlier run are enforced [config: response.dry_run].
    #[arg(long)]
    pub dry_run: bool,

    /// Never block or count this address or CIDR; repeatable
    /// [config: response.allowlist]. Loopback and this host's own addresses
    /// are always allowlisted.
    #[arg(long = "allow", value_name = "CIDR", value_parser = parse_net)]
    pub allow: Vec<ipnet::IpNet>,

    /// Do not attach again to a watched interface that was removed and comes
    /// back (by default it is watched again as soon as it reappears); the
    /// daemon exits once no watched interface is left.
    #[arg(long)]
    pub no_reattach: bool,

    /// Reattaching is the default now; accepted for older command lines.
    #[arg(long, hide = true, conflicts_with = "no_reattach")]
    pub reattach: bool,

    /// Sources tracked at once: first-probe slots, and one in 32 for
    /// sources that probed two ports (LRU beyond); ~50 bytes of kernel
    /// memory each [default: 1048576, 1024 to 67108864] [config:
    /// detection.max_sources].
    #[arg(long, value_parser = clap::value_parser!(u32).range(i64::from(crate::config::MIN_SOURCES)..=i64::from(crate::config::MAX_SOURCES)))]
    pub max_sources: Option<u32>,

    /// Control socket for `scanner status`, `list`, `block`... (mode 0660).
    #[arg(long, default_value = crate::control::DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,

    /// Group that owns the control socket with root (default: root's).
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// Where blocks and state are pinned (bpffs), to outlive restarts.
    #[arg(long, default_value = crate::kernel::pin::DEFAULT_PIN_DIR, value_name = "DIR")]
    pub pin_dir: PathBuf,
}

/// The exit code for an error: 2 for usage errors (bad configuration, pins,
/// no bpffs to pin to, an unknown interface, an events file that cannot be
/// opened, socket or an interface another daemon or program holds:
/// restarting changes nothing), 1 otherwise.
pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    let usage = err.chain().any(|cause| {
        cause.downcast_ref::<crate::config::ConfigError>().is_some()
            || cause
                .downcast_ref::<crate::sinks::output::OpenError>()
                .is_some()
            || cause
                .downcast_ref::<crate::kernel::iface::IfaceError>()
                .is_some()
            || matches!(
                cause.downcast_ref::<PinError>(),
                Some(PinError::InUse { .. } | PinError::NotBpffs(_) | PinError::Mount(_))
            )
            || matches!(
                cause.downcast_ref::<crate::control::server::SocketError>(),
                Some(crate::control::server::SocketError::InUse(_))
            )
            || matches!(
                cause.downcast_ref::<LoadError>(),
                Some(LoadError::Busy { .. })
            )
            || cause
                .downcast_ref::<crate::fleet::FleetError>()
                .is_some_and(crate::fleet::FleetError::is_usage)
    });
    if usage { 2 } else { 1 }
}

/// Whether `err` comes from writing to a closed pipe.
pub(crate) fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A value parser for a [`named!`](crate::named::named) enum: its names
/// are the possible values (and so in `--help`, completions and the man
/// page), without the enum knowing about clap.
fn one_of<T: Named>() -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(T::ALL.iter().map(|v| v.as_str()))
        .try_map(|name| T::from_name(&name).ok_or_else(|| format!("unknown value {name:?}")))
}

impl RunArgs {
    /// The settings these flags change on top of the configuration file.
    /// What the daemon gets of the command line.
    pub(crate) fn launch(self) -> Launch {
        let overrides = self.overrides();
        Launch {
            ifaces: self.ifaces,
            xdp_mode: self.xdp_mode,
            config: self.config,
            events: self.events,
            events_file: self.events_file,
            history: self.history,
            keep_history: !self.no_history,
            no_reattach: self.no_reattach,
            socket: self.socket,
            socket_group: self.socket_group,
            pin_dir: self.pin_dir,
            overrides,
        }
    }

    pub(crate) fn overrides(&self) -> Overrides {
        Overrides {
            poll_interval: self.poll_interval,
            quiet_after: self.quiet_after,
            metrics_listen: self.metrics_listen,
            fanout_ports: self.fanout_ports,
            fanout_window: self.fanout_window,
            max_sources: self.max_sources,
            block: self.block,
            dry_run: self.dry_run,
            block_ttl: self.block_ttl,
            block_cap: self.block_cap,
            allow: self.allow.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_zero_is_refused() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn run_needs_an_interface() {
        assert!(Cli::try_parse_from(["scanner", "run"]).is_err());
        let cli = Cli::try_parse_from(["scanner", "run", "-i", "eth0", "--iface", "eth1"]);
        let Ok(Cli {
            command: Command::Run(args),
        }) = cli
        else {
            panic!("run with two interfaces should parse");
        };
        assert_eq!(args.ifaces, ["eth0", "eth1"]);
        assert_eq!(args.xdp_mode, XdpMode::Auto);
        assert_eq!(args.fanout_ports, None, "unset: the config file decides");
        let cli = Cli::try_parse_from(["scanner", "run", "-i", "lo", "--min-ports", "7"]);
        assert!(matches!(cli, Ok(Cli { command: Command::Run(a) }) if a.fanout_ports == Some(7)));
    }

    #[test]
    fn networks_parse_as_addresses_or_cidrs() {
        assert_eq!(parse_net("198.18.0.1").map(|n| n.prefix_len()), Ok(32));
        assert_eq!(parse_net("2001:db8::/64").map(|n| n.prefix_len()), Ok(64));
        assert!(parse_net("198.18.0.1/33").is_err());
        assert!(parse_net("example.com").is_err());
    }

    #[test]
    fn cidrs_lose_their_host_bits() {
        assert_eq!(
            parse_net("10.1.2.3/8").map(|n| n.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            parse_net("2001:db8::77/64").map(|n| n.to_string()),
            Ok("2001:db8::/64".into())
        );
    }

    #[test]
    fn the_help_states_the_defaults_the_config_has() {
        use clap::CommandFactory as _;
        let defaults = crate::config::FileConfig::default();
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("run")
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        // The text after "[default: " in `flag`'s help, up to "]" or ",".
        let stated = |flag: &str| -> String {
            let at = help.find(flag).unwrap_or_else(|| panic!("{flag} in help"));
            let rest = &help[at + flag.len()..];
            let end = rest.find(" --").unwrap_or(rest.len());
            let own = &rest[..end];
            let from = own
                .find("[default: ")
                .unwrap_or_else(|| panic!("{flag}: {own}"))
                + 10;
            own[from..]
                .split([']', ','])
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        let duration = |flag: &str| parse_duration(&stated(flag));
        assert_eq!(
            duration("--poll-interval"),
            Ok(defaults.report.poll_interval)
        );
        assert_eq!(
            duration("--fanout-window"),
            Ok(defaults.detection.fanout_window)
        );
        assert_eq!(duration("--quiet-after"), Ok(defaults.report.quiet_after));
        assert_eq!(duration("--block-ttl"), Ok(defaults.response.block_ttl));
        let number = |flag: &str| stated(flag).parse::<u32>().ok();
        assert_eq!(
            number("--fanout-ports"),
            Some(defaults.detection.fanout_ports)
        );
        assert_eq!(number("--block-cap"), Some(defaults.response.block_cap));
        assert_eq!(
            number("--max-sources"),
            Some(defaults.detection.max_sources)
        );
    }

    #[test]
    fn max_sources_has_the_configs_limits() {
        let parse =
            |n: &str| Cli::try_parse_from(["scanner", "run", "-i", "lo", "--max-sources", n]);
        assert!(parse("1023").is_err());
        assert!(parse(&crate::config::MAX_SOURCES.to_string()).is_ok());
        assert!(parse(&(crate::config::MAX_SOURCES + 1).to_string()).is_err());
        assert!(parse("4294967295").is_err());
    }

    #[test]
    fn fanout_ports_must_be_positive() {
        assert!(
            Cli::try_parse_from(["scanner", "run", "-i", "lo", "--fanout-ports", "0"]).is_err()
        );
    }

    #[test]
    fn run_flags_become_overrides() {
        let cli = Cli::try_parse_from([
            "scanner",
            "run",
            "-i",
            "lo",
            "--fanout-ports",
            "50",
            "--block",
            "--dry-run",
            "--allow",
            "198.18.0.8",
            "--block-ttl",
            "2h",
        ]);
        let Ok(Cli {
            command: Command::Run(args),
        }) = cli
        else {
            panic!("run args");
        };
        let o = args.overrides();
        assert_eq!(o.fanout_ports, Some(50));
        assert!(o.block && o.dry_run);
        assert_eq!(o.block_ttl, Some(Duration::from_secs(7200)));
        assert_eq!(o.allow.len(), 1);
        assert_eq!(o.poll_interval, None, "unset: the file decides");
    }

    #[test]
    fn allow_takes_a_target_or_list() {
        assert!(Cli::try_parse_from(["scanner", "allow"]).is_err());
        assert!(Cli::try_parse_from(["scanner", "allow", "--list"]).is_ok());
        assert!(Cli::try_parse_from(["scanner", "allow", "--list", "--json"]).is_ok());
        assert!(Cli::try_parse_from(["scanner", "allow", "198.18.0.1"]).is_ok());
        assert!(Cli::try_parse_from(["scanner", "allow", "198.18.0.1", "--list"]).is_err());
    }

    #[test]
    fn config_needs_exactly_one_action() {
        assert!(Cli::try_parse_from(["scanner", "config"]).is_err());
        assert!(Cli::try_parse_from(["scanner", "config", "--print-default"]).is_ok());
        assert!(
            Cli::try_parse_from(["scanner", "config", "--print-default", "--check", "f"]).is_err()
        );
    }
}
