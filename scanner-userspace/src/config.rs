//! The configuration file (TOML). Every key is optional; unknown keys are
//! refused by name; errors carry the file and line.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use thiserror::Error;

use crate::trw::{Probabilities, TrwError};

/// Where `scanner run` looks when `--config` is not given (absent: defaults).
pub const DEFAULT_PATH: &str = "/etc/scanner/scanner.toml";

/// The commented default file `scanner config --print-default` prints. A test
/// checks it parses to exactly [`FileConfig::default`].
pub const DEFAULT_FILE: &str = r#"# scanner configuration. Every key is optional; the values shown are the defaults.

[detection]
# Threshold Random Walk (Jung et al., IEEE S&P 2004). Each first probe of a
# port by a source is a trial: it finds the port open or closed.
# Probability that a benign client's first probe finds an open port:
benign_open_probability = 0.8
# Probability that a scanner's first probe finds an open port:
scanner_open_probability = 0.2
# Wanted probability of detecting a scanner, and tolerated probability of
# calling a benign client one. They set the walk's thresholds; with these
# defaults four closed ports in a row decide.
detection_probability = 0.99
false_positive_probability = 0.01
# FIN, NULL and Xmas probes to closed ports that decide on their own (no real
# TCP stack sends them).
stealth_probes = 2
# Second signal: this many distinct ports within one window decide, whatever
# the ports' state (hosts with many open ports, scans of open ports only).
fanout_ports = 20
fanout_window = "60s"
# A source unseen this long is forgotten and starts afresh. Slow scans are
# caught as long as probes come closer together than this.
idle_timeout = "1h"
# Destination ports never counted as probes (e.g. a port your monitoring
# sweeps), for TCP and UDP.
ignore_ports = []
# Sources tracked at once. When full, the least recently seen source is
# forgotten (LRU), so a flood of spoofed sources cannot exhaust memory.
max_sources = 1048576

[aggregation]
# Sources are also counted per prefix, to catch scans spread over many
# addresses that each probe one or two ports.
ipv4_prefix = 24
ipv6_prefix = 64
# A prefix is reported only once this many of its sources have probed.
min_sources = 3

[response]
# Block detected sources in the kernel (XDP_DROP) the moment they are
# decided. Off by default: report only. Scan sources can be spoofed; see the
# README's security notes before turning this on.
block = false
# How long a block lasts.
block_ttl = "1h"
# Most blocks at once. Past it, new blocks are refused and reported loudly;
# nothing is ever evicted, and detections are still reported.
block_cap = 65536
# Report what would be blocked without blocking anything.
dry_run = false
# Never blocked and never counted (addresses or CIDRs). Loopback and this
# host's own addresses are always included.
allowlist = []

[report]
# How often the daemon reads the maps (decisions arrive at once regardless).
poll_interval = "1s"
# A detected scan is reported as ended, with its totals, after this much quiet.
quiet_after = "2m"
# How often the host's listening ports are re-read.
open_ports_refresh = "2s"
# Serve Prometheus metrics on this address (GET /metrics); off when unset.
# metrics_listen = "127.0.0.1:9464"
"#;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub detection: Detection,
    pub aggregation: Aggregation,
    pub response: Response,
    pub report: Report,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Response {
    pub block: bool,
    #[serde(deserialize_with = "duration")]
    pub block_ttl: Duration,
    pub block_cap: u32,
    pub dry_run: bool,
    pub allowlist: Vec<ipnet::IpNet>,
}

impl Default for Response {
    fn default() -> Self {
        Self {
            block: false,
            block_ttl: Duration::from_secs(3600),
            block_cap: scanner_common::BLOCK_CAPACITY,
            dry_run: false,
            allowlist: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Detection {
    pub benign_open_probability: f64,
    pub scanner_open_probability: f64,
    pub detection_probability: f64,
    pub false_positive_probability: f64,
    pub stealth_probes: u32,
    pub fanout_ports: u32,
    #[serde(deserialize_with = "duration")]
    pub fanout_window: Duration,
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    pub ignore_ports: Vec<u16>,
    pub max_sources: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Aggregation {
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub min_sources: u16,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Report {
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub quiet_after: Duration,
    #[serde(deserialize_with = "duration")]
    pub open_ports_refresh: Duration,
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for Detection {
    fn default() -> Self {
        let p = Probabilities::default();
        Self {
            benign_open_probability: p.benign_open,
            scanner_open_probability: p.scanner_open,
            detection_probability: p.detection,
            false_positive_probability: p.false_positive,
            stealth_probes: p.stealth_probes,
            fanout_ports: 20,
            fanout_window: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(3600),
            ignore_ports: Vec::new(),
            max_sources: scanner_common::SOURCES_CAPACITY,
        }
    }
}

impl Default for Aggregation {
    fn default() -> Self {
        Self {
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            min_sources: 3,
        }
    }
}

impl Default for Report {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            quiet_after: Duration::from_secs(120),
            open_ports_refresh: Duration::from_secs(2),
            metrics_listen: None,
        }
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    crate::cli::parse_duration(&s).map_err(serde::de::Error::custom)
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        path: String,
        line: usize,
        key: &'static str,
        message: String,
    },
}

impl FileConfig {
    /// Reads `path`, or the default path if it exists, or the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        if !required && !path.exists() {
            return Ok(Self::default());
        }
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses and validates TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            // Name the key on that line: "block_ttl: expected ...".
            let key = text
                .lines()
                .nth(line.saturating_sub(1))
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && line > 0);
            let message = e.message().trim();
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                message: match key {
                    Some(k) => format!("{k}: {message}"),
                    None => message.to_owned(),
                },
            }
        })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_owned(),
                line: line_of_key(text, key),
                key,
                message,
            })?;
        Ok(config)
    }

    pub fn probabilities(&self) -> Probabilities {
        let d = &self.detection;
        Probabilities {
            benign_open: d.benign_open_probability,
            scanner_open: d.scanner_open_probability,
            detection: d.detection_probability,
            false_positive: d.false_positive_probability,
            stealth_probes: d.stealth_probes,
        }
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Err(e) = self.probabilities().steps() {
            let key = match e {
                TrwError::OutOfRange(key, _) => key,
                TrwError::NotSeparated { .. } => "scanner_open_probability",
                TrwError::Inverted { .. } => "detection_probability",
                TrwError::NoStealthProbes => "stealth_probes",
            };
            return Err((key, e.to_string()));
        }
        let d = &self.detection;
        if d.max_sources < 1024 || d.max_sources > 64 * scanner_common::SOURCES_CAPACITY {
            return Err((
                "max_sources",
                format!(
                    "{} is not 1024-{}",
                    d.max_sources,
                    64 * scanner_common::SOURCES_CAPACITY
                ),
            ));
        }
        if d.fanout_ports == 0 {
            return Err(("fanout_ports", "must be at least 1".into()));
        }
        let a = &self.aggregation;
        if a.ipv4_prefix > 32 {
            return Err(("ipv4_prefix", format!("{} is not 0-32", a.ipv4_prefix)));
        }
        if a.ipv6_prefix > 128 {
            return Err(("ipv6_prefix", format!("{} is not 0-128", a.ipv6_prefix)));
        }
        let r = &self.response;
        if r.block_cap == 0 || r.block_cap > 16 * scanner_common::BLOCK_CAPACITY {
            return Err((
                "block_cap",
                format!(
                    "{} is not 1-{}",
                    r.block_cap,
                    16 * scanner_common::BLOCK_CAPACITY
                ),
            ));
        }
        if r.allowlist.len() > scanner_common::ALLOW_CAPACITY as usize / 2 {
            return Err((
                "allowlist",
                format!("at most {} entries", scanner_common::ALLOW_CAPACITY / 2),
            ));
        }
        if a.min_sources < 2 {
            return Err((
                "min_sources",
                "must be at least 2 (one source is reported on its own)".into(),
            ));
        }
        Ok(())
    }
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// 1-based line where `key` is assigned, or 0 if it is not in the text.
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_default_file_is_the_default() {
        assert_eq!(
            FileConfig::parse(DEFAULT_FILE, "default").unwrap(),
            FileConfig::default()
        );
        assert_eq!(
            FileConfig::parse("", "empty").unwrap(),
            FileConfig::default()
        );
    }

    #[test]
    fn keys_override_one_at_a_time() {
        let c = FileConfig::parse(
            "[detection]\nfanout_ports = 50\nignore_ports = [9100]\n[report]\nquiet_after = \"5s\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.detection.fanout_ports, 50);
        assert_eq!(c.detection.ignore_ports, [9100]);
        assert_eq!(c.report.quiet_after, Duration::from_secs(5));
        assert_eq!(c.aggregation, Aggregation::default());
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let e = FileConfig::parse("[detection]\nfanout_port = 5\n", "/etc/s.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/etc/s.toml:2:"), "{msg}");
        assert!(msg.contains("fanout_port"), "{msg}");
        let e = FileConfig::parse("[detektion]\n", "f").unwrap_err();
        assert!(e.to_string().contains("detektion"), "{e}");
    }

    #[test]
    fn wrong_types_and_syntax_errors_have_lines() {
        let e = FileConfig::parse("[report]\n\npoll_interval = 5\n", "f").unwrap_err();
        assert!(e.to_string().starts_with("f:3:"), "{e}");
        assert!(
            e.to_string().contains("poll_interval"),
            "names the key: {e}"
        );
        let e = FileConfig::parse("[report\n", "f").unwrap_err();
        assert!(e.to_string().starts_with("f:1:"), "{e}");
        let e = FileConfig::parse("[report]\nquiet_after = \"0s\"\n", "f").unwrap_err();
        assert!(e.to_string().contains("greater than zero"), "{e}");
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        for (text, key) in [
            (
                "[detection]\nfalse_positive_probability = 1.5\n",
                "false_positive_probability",
            ),
            (
                "[detection]\nscanner_open_probability = 0.9\n",
                "scanner_open_probability",
            ),
            ("[detection]\nfanout_ports = 0\n", "fanout_ports"),
            ("[aggregation]\nipv4_prefix = 33\n", "ipv4_prefix"),
            ("[aggregation]\nmin_sources = 1\n", "min_sources"),
            ("[detection]\nstealth_probes = 0\n", "stealth_probes"),
            ("[response]\nblock_cap = 0\n", "block_cap"),
        ] {
            let e = FileConfig::parse(text, "f").unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.starts_with("f:2:") && msg.contains(key),
                "{text}: {msg}"
            );
        }
    }

    #[test]
    fn allowlists_parse_as_cidrs() {
        let c = FileConfig::parse(
            "[response]\nallowlist = [\"198.18.0.0/24\", \"2001:db8::1/128\"]\n",
            "f",
        )
        .unwrap();
        assert_eq!(c.response.allowlist.len(), 2);
        let e = FileConfig::parse("[response]\nallowlist = [\"198.18.0.300/24\"]\n", "f");
        assert!(e.is_err_and(|e| e.to_string().starts_with("f:2:")));
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        assert!(FileConfig::load(Some(Path::new("/nonexistent/scanner.toml"))).is_err());
    }
}
