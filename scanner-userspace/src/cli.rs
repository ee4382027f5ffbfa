//! Command-line interface. Doc comments here are the `--help` text.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Host-based port-scan detector: an XDP program counts every inbound probe
/// per source, and this daemon reports the sources that scan.
#[derive(Debug, Parser)]
#[command(name = "scanner", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the XDP program, attach it to interfaces, and report scans until
    /// SIGINT or SIGTERM (which detach it cleanly).
    Run(RunArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Interface to watch; repeat for several (e.g. --iface eth0 --iface eth1).
    #[arg(long = "iface", short = 'i', required = true, value_name = "IFACE")]
    pub ifaces: Vec<String>,

    /// XDP attach mode: native (in the driver), skb (generic, any interface),
    /// or auto (native, falling back to skb).
    #[arg(long, value_enum, default_value_t = XdpModeArg::Auto)]
    pub xdp_mode: XdpModeArg,

    /// How often the maps are read, e.g. 1s, 250ms.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Event format on stdout: human text, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = EventFormat::Text)]
    pub events: EventFormat,

    /// A source is a scanner once it probes this many distinct ports within
    /// one window.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub min_ports: u32,

    /// Fan-out window: distinct ports are counted from a source's first probe
    /// for this long, then counting starts again.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub window: Duration,

    /// A detected scan is reported as ended, with its totals, once its source
    /// has sent no probe for this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub quiet_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum XdpModeArg {
    Auto,
    Native,
    Skb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventFormat {
    Text,
    Json,
}

/// Parses "1s", "250ms", "2m"; zero is refused (a zero interval would spin).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 1s, 250ms, 2m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
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
        assert_eq!(args.xdp_mode, XdpModeArg::Auto);
        assert_eq!(args.min_ports, 20);
        assert_eq!(args.window, Duration::from_secs(60));
    }

    #[test]
    fn min_ports_must_be_positive() {
        assert!(Cli::try_parse_from(["scanner", "run", "-i", "lo", "--min-ports", "0"]).is_err());
    }
}
