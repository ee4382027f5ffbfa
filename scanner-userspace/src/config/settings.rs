//! Effective settings: the configuration file, overridden by command-line
//! flags, and what the kernel gets of them.

use std::time::Duration;

use anyhow::Context as _;
use scanner_common::Config;

use crate::config::{
    Established, FileConfig,
    launch::{Launch, Overrides},
};

/// The daemon's one resolved configuration: the file with the flags on
/// top, and what only the flags say. Built at start and again at each
/// reload; everything reads it from here.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub file: FileConfig,
    pub launch: Launch,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Settings {
    /// Reads the configuration file `launch` names and puts its flags on top.
    pub(crate) fn load(launch: Launch) -> anyhow::Result<Self> {
        let file = FileConfig::load(launch.config.as_deref())?;
        let mut settings = Self::new(file, &launch.overrides);
        settings.launch = launch;
        Ok(settings)
    }

    /// The file read again (SIGHUP), with the same flags on top.
    pub(crate) fn reloaded(&self) -> anyhow::Result<Self> {
        Self::load(self.launch.clone())
    }

    /// Takes from `running` what a reload does not change (the maps' sizes,
    /// the block cap, prefix aggregation): the reload plan names them as
    /// needing a restart.
    pub(crate) fn keep_restart_only(&mut self, running: &Settings) {
        self.file.detection.max_sources = running.file.detection.max_sources;
        self.file.response.block_cap = running.file.response.block_cap;
        self.file.aggregation = running.file.aggregation.clone();
        self.file.signals = running.file.signals.clone();
    }

    /// The file's settings with the flags given on the command line on top.
    pub(crate) fn new(mut file: FileConfig, args: &Overrides) -> Self {
        if let Some(d) = args.poll_interval {
            file.report.poll_interval = d;
        }
        if let Some(d) = args.quiet_after {
            file.report.quiet_after = d;
        }
        if let Some(a) = args.metrics_listen {
            file.report.metrics_listen = Some(a);
        }
        if let Some(n) = args.fanout_ports {
            file.detection.fanout_ports = n;
        }
        if let Some(d) = args.fanout_window {
            file.detection.fanout_window = d;
        }
        if let Some(n) = args.max_sources {
            file.detection.max_sources = n;
        }
        let r = &mut file.response;
        r.block |= args.block;
        r.dry_run |= args.dry_run;
        if let Some(d) = args.block_ttl {
            r.block_ttl = d;
        }
        if let Some(n) = args.block_cap {
            r.block_cap = n;
        }
        r.allowlist.extend(args.allow.iter().copied());
        Self {
            file,
            launch: Launch::default(),
        }
    }

    /// Which sources are never blocked.
    pub(crate) fn protection(&self) -> crate::kernel::protect::Protection {
        let r = &self.file.response;
        crate::kernel::protect::Protection {
            gateways: r.protect_gateways,
            resolvers: r.protect_resolvers,
            // Protected by address only in the "address" mode; "flows"
            // blocks the peer and spares its connections in the kernel.
            established: r.protect_established == Established::Address,
        }
    }

    /// How established peers are spared (see [`Established`]).
    pub(crate) fn established(&self) -> Established {
        self.file.response.protect_established
    }

    /// Whether the kernel blocks decided sources.
    pub(crate) fn blocks(&self) -> bool {
        self.file.response.block && !self.file.response.dry_run
    }

    /// `--dry-run`: say what would be blocked, drop nothing.
    pub(crate) fn dry_run(&self) -> bool {
        self.file.response.dry_run
    }

    /// How long a block lasts.
    pub(crate) fn block_ttl(&self) -> Duration {
        self.file.response.block_ttl
    }

    /// Whether a block spares the connections open with its source
    /// (`protect_established = "flows"`).
    pub(crate) fn spares_flows(&self) -> bool {
        self.established() == Established::Flows
    }

    /// The history file, when one is kept.
    pub(crate) fn history_path(&self) -> Option<std::path::PathBuf> {
        if !self.launch.keep_history {
            return None;
        }
        let path = self
            .launch
            .history
            .clone()
            .unwrap_or_else(|| self.file.report.history.clone());
        (!path.as_os_str().is_empty()).then_some(path)
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.file.report.poll_interval
    }

    pub(crate) fn quiet_ns(&self) -> u64 {
        nanos(self.file.report.quiet_after)
    }

    pub(crate) fn prefix_lengths(&self) -> (u8, u8) {
        let a = &self.file.aggregation;
        (a.ipv4_prefix, a.ipv6_prefix)
    }

    /// The network an entry stands for: a source's address (a /32 or
    /// /128), or a prefix's network at the `[aggregation]` lengths.
    pub(crate) fn net_of(&self, id: crate::detect::EntryId) -> ipnet::IpNet {
        let ip = crate::sinks::event::ip_of(&id.key);
        if id.scope != scanner_common::scope::PREFIX {
            return ipnet::IpNet::from(ip);
        }
        let (v4, v6) = self.prefix_lengths();
        let len = if ip.is_ipv4() { v4 } else { v6 };
        ipnet::IpNet::new(ip, len).unwrap_or_else(|_| ipnet::IpNet::from(ip))
    }

    /// The CONFIG map value for a host with this ephemeral port range.
    pub(crate) fn kernel(&self, ephemeral: (u16, u16)) -> anyhow::Result<Config> {
        let steps = self
            .file
            .probabilities()
            .steps()
            .context("detection probabilities")?;
        let d = &self.file.detection;
        let a = &self.file.aggregation;
        // `--fanout-window` comes after the file's checks.
        if let Some(why) = super::fanout_window_refused(d.fanout_window) {
            anyhow::bail!("fanout_window {}: {why}", super::show(d.fanout_window));
        }
        Ok(Config {
            window_ns: nanos(d.fanout_window),
            idle_ns: nanos(d.idle_timeout),
            ephemeral_lo: ephemeral.0,
            ephemeral_hi: ephemeral.1,
            prefix_v4: a.ipv4_prefix,
            prefix_v6: a.ipv6_prefix,
            min_sources: a.min_sources,
            step_open: steps.open,
            step_closed: steps.closed,
            step_stealth: steps.stealth,
            upper: steps.upper,
            lower: steps.lower,
            fanout_ports: d.fanout_ports,
            // A dry run blocks nothing: the daemon only says what it would.
            block_on_decide: u32::from(self.blocks()),
            // The loader writes the loaded map's real size (a pinned map
            // keeps its own) and the slot hash's seed.
            first_probe_slots: scanner_common::names::first_probe_slots(d.max_sources),
            block_ttl_ns: nanos(self.file.response.block_ttl),
            hash_seed: 0,
            prefix_slots: scanner_common::names::prefix_slots(d.max_sources),
            spare_flows: u32::from(self.established() == Established::Flows),
            // The loader measures this machine's probe clock.
            tick_ns: 0,
            clock_origin_ns: 0,
        })
    }
}

const LOCAL_PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The host's ephemeral port range (it applies to IPv6 too).
pub(crate) fn ephemeral_range() -> anyhow::Result<(u16, u16)> {
    let text = std::fs::read_to_string(LOCAL_PORT_RANGE)
        .with_context(|| format!("reading {LOCAL_PORT_RANGE}"))?;
    parse_port_range(&text).with_context(|| format!("parsing {LOCAL_PORT_RANGE}: {text:?}"))
}

fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi)), None) if lo <= hi => Some((lo, hi)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_the_kernel_defaults() {
        let s = Settings::new(FileConfig::default(), &Overrides::default());
        assert_eq!(s.kernel((32768, 60999)).unwrap(), Config::default());
    }

    #[test]
    fn flags_override_the_file() {
        let flags = Overrides {
            fanout_ports: Some(50),
            quiet_after: Some(Duration::from_secs(3)),
            ..Overrides::default()
        };
        let s = Settings::new(FileConfig::default(), &flags);
        assert_eq!(s.file.detection.fanout_ports, 50);
        assert_eq!(s.quiet_ns(), 3_000_000_000);
        let k = s.kernel((1024, 2048)).unwrap();
        assert_eq!(
            (k.fanout_ports, k.ephemeral_lo, k.ephemeral_hi),
            (50, 1024, 2048)
        );
        assert_eq!(k.block_on_decide, 0, "report-only by default");
        let flags = Overrides {
            block: true,
            block_ttl: Some(Duration::from_secs(7200)),
            ..Overrides::default()
        };
        let s = Settings::new(FileConfig::default(), &flags);
        let k = s.kernel((1024, 2048)).unwrap();
        assert_eq!((k.block_on_decide, k.block_ttl_ns), (1, 7_200_000_000_000));
        let flags = Overrides {
            block: true,
            dry_run: true,
            ..Overrides::default()
        };
        let s = Settings::new(FileConfig::default(), &flags);
        assert_eq!(
            s.kernel((1, 2)).unwrap().block_on_decide,
            0,
            "a dry run blocks nothing"
        );
    }

    #[test]
    fn a_fanout_window_under_a_second_from_the_flag_is_refused() {
        let flags = Overrides {
            fanout_window: Some(Duration::ZERO),
            ..Overrides::default()
        };
        let s = Settings::new(FileConfig::default(), &flags);
        let e = s
            .kernel((1024, 2048))
            .expect_err("a 0 s window counts no scan");
        assert!(e.to_string().contains("fanout_window 0s"), "{e}");
    }

    #[test]
    fn port_ranges_parse() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("1024 1024"), Some((1024, 1024)));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range("32768"), None);
        assert_eq!(parse_port_range("a b"), None);
    }

    #[test]
    fn a_reload_keeps_what_only_a_restart_changes() {
        let running = Settings::new(FileConfig::default(), &Overrides::default());
        let mut file = FileConfig::default();
        file.aggregation.ipv4_prefix = 16;
        file.detection.max_sources = 4096;
        file.response.block_cap = 7;
        file.response.block_ttl = Duration::from_secs(60);
        let mut new = Settings::new(file, &Overrides::default());
        new.keep_restart_only(&running);
        assert_eq!(new.prefix_lengths(), running.prefix_lengths());
        assert_eq!(
            new.file.detection.max_sources,
            running.file.detection.max_sources
        );
        assert_eq!(new.file.response.block_cap, running.file.response.block_cap);
        assert_eq!(
            new.block_ttl(),
            Duration::from_secs(60),
            "the TTL does change"
        );
    }
}
