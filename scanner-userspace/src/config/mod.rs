//! The configuration file (TOML). Every key is optional; unknown keys are
//! refused by name; errors carry the file and line.

pub(crate) mod crowdsec;
mod established;
pub(crate) mod launch;
pub(crate) mod reload;
pub(crate) mod settings;
pub(crate) mod signals;
pub(crate) mod slow;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

pub(crate) use established::Established;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::detect::trw::{Probabilities, TrwError};

/// Where `scanner run` looks when `--config` is not given (absent: defaults).
pub(crate) const DEFAULT_PATH: &str = "/etc/scanner/scanner.toml";

/// Limits of `max_sources` (`--max-sources`).
pub(crate) const MIN_SOURCES: u32 = 1024;
pub(crate) const MAX_SOURCES: u32 = 64 * scanner_common::names::SOURCES_CAPACITY;
/// Largest `block_cap` (`--block-cap`).
pub(crate) const MAX_BLOCK_CAP: u32 = 16 * scanner_common::names::BLOCK_CAPACITY;

/// The commented default file `scanner config --print-default` prints, and
/// the packages install as /etc/scanner/scanner.toml: `packaging/scanner.toml`.
/// A test checks it parses to exactly [`FileConfig::default`].
pub(crate) const DEFAULT_FILE: &str = include_str!("../../../packaging/scanner.toml");

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileConfig {
    pub detection: Detection,
    pub aggregation: Aggregation,
    pub response: ResponseConfig,
    pub report: Report,
    pub crowdsec: crowdsec::CrowdSecConfig,
    pub signals: signals::SignalsConfig,
    pub slow: slow::SlowConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ResponseConfig {
    pub block: bool,
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub block_ttl: Duration,
    pub block_cap: u32,
    pub dry_run: bool,
    #[serde(deserialize_with = "nets", serialize_with = "show_nets")]
    pub allowlist: Vec<ipnet::IpNet>,
    pub protect_gateways: bool,
    pub protect_resolvers: bool,
    pub protect_established: Established,
    /// Block (and ban through CrowdSec) the sources of slow scans too.
    pub block_slow: bool,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        Self {
            block: false,
            block_ttl: Duration::from_secs(3600),
            block_cap: scanner_common::names::BLOCK_CAPACITY,
            dry_run: false,
            allowlist: Vec::new(),
            protect_gateways: true,
            protect_resolvers: true,
            protect_established: Established::Flows,
            block_slow: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Detection {
    pub benign_open_probability: f64,
    pub scanner_open_probability: f64,
    pub detection_probability: f64,
    pub false_positive_probability: f64,
    pub stealth_probes: u32,
    pub fanout_ports: u32,
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub fanout_window: Duration,
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub idle_timeout: Duration,
    pub ignore_ports: Vec<u16>,
    pub max_sources: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Aggregation {
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub min_sources: u16,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Report {
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub poll_interval: Duration,
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub quiet_after: Duration,
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub open_ports_refresh: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The history file; empty: no history.
    pub history: PathBuf,
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub history_retention: Duration,
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
            max_sources: scanner_common::names::SOURCES_CAPACITY,
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
            history: PathBuf::from(crate::history::DEFAULT_PATH),
            history_retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Limits on settings that would silently weaken detection.
const MIN_CLOSED_TO_DECIDE: u32 = 3;
const MIN_IDLE: Duration = Duration::from_secs(60);
/// With the long memory on, a forgotten source's probes are still seen.
const MIN_IDLE_REMEMBERED: Duration = Duration::from_secs(2);
const MIN_QUIET: Duration = Duration::from_secs(1);
/// Ports are counted for fan-out within a window of at least this.
const MIN_FANOUT_WINDOW: Duration = Duration::from_secs(1);

/// Why a fan-out window is refused, if it is: the file's check and the
/// one after `--fanout-window` (see `Settings::kernel`).
pub(crate) fn fanout_window_refused(window: Duration) -> Option<String> {
    (window < MIN_FANOUT_WINDOW).then(|| {
        format!(
            "under {}: no scan's ports would fall in one window",
            show(MIN_FANOUT_WINDOW)
        )
    })
}
/// The longest block: a year (`scanner block --ttl` has the same limit).
pub(crate) const MAX_BLOCK_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The narrowest an allowlisted network must be: /8, or /16 for IPv6.
fn allow_floor(net: &ipnet::IpNet) -> u8 {
    match net {
        ipnet::IpNet::V4(_) => 8,
        ipnet::IpNet::V6(_) => 16,
    }
}

/// A duration in its largest unit that divides it exactly ("90d", not
/// "2months 29days 2h 52m 48s"), as an operator would have written it.
pub(crate) fn show(d: Duration) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    if d.subsec_nanos() != 0 || d.is_zero() {
        return humantime::format_duration(d).to_string();
    }
    let secs = d.as_secs();
    UNITS
        .iter()
        .find(|(unit, _)| secs.is_multiple_of(*unit))
        .map_or_else(
            || format!("{secs}s"),
            |(unit, name)| format!("{}{name}", secs / unit),
        )
}

fn show_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&show(*d))
}

fn show_nets<S: serde::Serializer>(nets: &[ipnet::IpNet], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(nets.iter().map(crate::kernel::policy::net_name))
}

/// Addresses or CIDRs, as `--allow` takes them.
fn nets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| crate::kernel::policy::parse_net(s).map_err(serde::de::Error::custom))
        .collect()
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

#[derive(Debug, Error)]
pub(crate) enum ConfigError {
    #[error("{path}: cannot read")]
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
    pub(crate) fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
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
    pub(crate) fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                message: describe(&e, text, line),
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

    pub(crate) fn probabilities(&self) -> Probabilities {
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
        let steps = match self.probabilities().steps() {
            Ok(steps) => steps,
            Err(e) => {
                let key = match e {
                    TrwError::OutOfRange(key, _) => key,
                    TrwError::NotSeparated { .. } => "scanner_open_probability",
                    TrwError::Inverted { .. } => "detection_probability",
                    TrwError::NoStealthProbes => "stealth_probes",
                };
                return Err((key, e.to_string()));
            }
        };
        // Fewer than three closed ports in a row would make a client's
        // failed connections (a service down, a typo) a scan, and with
        // --block cut it off.
        let closed = steps.closed_probes_to_decide();
        if closed < MIN_CLOSED_TO_DECIDE {
            return Err((
                "false_positive_probability",
                format!(
                    "decides after {closed} closed port{} in a row: a client's failed connections would be a scan; raise it to at least {MIN_CLOSED_TO_DECIDE} (lower false_positive_probability or detection_probability)",
                    if closed == 1 { "" } else { "s" }
                ),
            ));
        }
        // Forgetting a source within a minute of quiet lets a scanner that
        // waits between probes go undecided; ending scans within a second
        // reports one scan as many.
        // Unless the long memory sees it across the pauses.
        let min_idle = if self.slow.enabled {
            MIN_IDLE_REMEMBERED
        } else {
            MIN_IDLE
        };
        if self.detection.idle_timeout < min_idle {
            return Err((
                "idle_timeout",
                format!(
                    "under {}: a scan with pauses longer than that is never decided",
                    show(min_idle)
                ),
            ));
        }
        if let Some(why) = fanout_window_refused(self.detection.fanout_window) {
            return Err(("fanout_window", why));
        }
        if self.report.quiet_after < MIN_QUIET {
            return Err((
                "quiet_after",
                format!(
                    "under {}: one scan would be reported as many",
                    show(MIN_QUIET)
                ),
            ));
        }
        if self.response.block_ttl > MAX_BLOCK_TTL {
            return Err((
                "block_ttl",
                format!(
                    "over {}: blocks must expire; use `scanner block` for a long one",
                    show(MAX_BLOCK_TTL)
                ),
            ));
        }
        let d = &self.detection;
        if !(MIN_SOURCES..=MAX_SOURCES).contains(&d.max_sources) {
            return Err((
                "max_sources",
                format!("{} is not {MIN_SOURCES}-{MAX_SOURCES}", d.max_sources),
            ));
        }
        // One port decides nothing: a source's first probe waits to be
        // admitted by a second.
        if d.fanout_ports < 2 {
            return Err(("fanout_ports", "must be at least 2".into()));
        }
        let a = &self.aggregation;
        // A prefix wider than /16 (/32) would count unrelated networks as
        // one actor.
        if !(16..=32).contains(&a.ipv4_prefix) {
            return Err((
                "ipv4_prefix",
                format!(
                    "{} is not 16-32 (a wider prefix counts unrelated networks as one)",
                    a.ipv4_prefix
                ),
            ));
        }
        if !(32..=128).contains(&a.ipv6_prefix) {
            return Err((
                "ipv6_prefix",
                format!(
                    "{} is not 32-128 (a wider prefix counts unrelated networks as one)",
                    a.ipv6_prefix
                ),
            ));
        }
        let r = &self.response;
        if r.block_cap == 0 || r.block_cap > MAX_BLOCK_CAP {
            return Err((
                "block_cap",
                format!("{} is not 1-{MAX_BLOCK_CAP}", r.block_cap),
            ));
        }
        if let Some(wide) = r.allowlist.iter().find(|n| n.prefix_len() < allow_floor(n)) {
            return Err((
                "allowlist",
                format!(
                    "{wide} is wider than /{}: the detector would ignore that much of the Internet",
                    allow_floor(wide)
                ),
            ));
        }
        if r.allowlist.len() > scanner_common::names::ALLOW_CAPACITY as usize / 2 {
            return Err((
                "allowlist",
                format!(
                    "at most {} entries",
                    scanner_common::names::ALLOW_CAPACITY / 2
                ),
            ));
        }
        if a.min_sources < 2 {
            return Err((
                "min_sources",
                "must be at least 2 (one source is reported on its own)".into(),
            ));
        }
        self.crowdsec.validate()?;
        self.signals.validate()?;
        self.slow.validate(&self.probabilities())
    }
}

/// A TOML error as "section.key: `value`: what is wrong", naming the key
/// also when the value sits on a later line than it (a multi-line array).
fn describe(e: &toml::de::Error, text: &str, line: usize) -> String {
    let message = e.message().trim();
    // toml tells the key path only in its Display, and only without the
    // input: "message\nin `section.key`".
    let mut bare = e.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    let path = shown
        .lines()
        .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))
        .map(str::to_owned)
        .or_else(|| {
            // Errors before deserialising (syntax, duplicate keys): the key
            // assigned on that line, if any.
            text.lines()
                .nth(line.checked_sub(1)?)?
                .split_once('=')
                .map(|(k, _)| k.trim().to_owned())
                .filter(|k| !k.is_empty())
        });
    let value = e
        .span()
        .and_then(|s| text.get(s))
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 80 && !v.contains('\n'))
        .filter(|v| !message.contains(v.trim_matches('"')));
    match (path, value) {
        (Some(k), Some(v)) => format!("{k}: `{v}`: {message}"),
        (Some(k), None) => format!("{k}: {message}"),
        (None, Some(v)) => format!("`{v}`: {message}"),
        (None, None) => message.to_owned(),
    }
}

/// Parses "1s", "250ms", "2m"; zero is refused (a zero interval would spin).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 1s, 250ms, 2m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// A block's lifetime: [`parse_duration`], at most [`MAX_BLOCK_TTL`] (blocks
/// must expire).
pub(crate) fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > MAX_BLOCK_TTL {
        return Err(format!(
            "{s} is over {}: blocks must expire",
            show(MAX_BLOCK_TTL)
        ));
    }
    Ok(d)
}

/// `--quiet-after`: [`parse_duration`], at least what the configuration
/// file allows (under a second one scan would be reported as many).
pub(crate) fn parse_quiet(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < MIN_QUIET {
        return Err(format!(
            "{s} is under {}: one scan would be reported as many",
            show(MIN_QUIET)
        ));
    }
    Ok(d)
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
            ("[aggregation]\nipv4_prefix = 0\n", "ipv4_prefix"),
            ("[aggregation]\nipv6_prefix = 8\n", "ipv6_prefix"),
            (
                "[detection]\nfalse_positive_probability = 0.9\n",
                "false_positive_probability",
            ),
            ("[detection]\nidle_timeout = \"1s\"\n", "idle_timeout"),
            ("[detection]\nfanout_window = \"0s\"\n", "fanout_window"),
            ("[report]\nquiet_after = \"1ms\"\n", "quiet_after"),
            ("[response]\nallowlist = [\"0.0.0.0/0\"]\n", "allowlist"),
            ("[response]\nallowlist = [\"::/0\"]\n", "allowlist"),
            ("[response]\nblock_ttl = \"100y\"\n", "block_ttl"),
            ("[aggregation]\nmin_sources = 1\n", "min_sources"),
            ("[detection]\nstealth_probes = 0\n", "stealth_probes"),
            ("[response]\nblock_cap = 0\n", "block_cap"),
            ("[slow]\nwindow = \"1s\"\n", "window"),
            ("[slow]\nmin_addresses = 1\n", "min_addresses"),
            ("[slow]\nmax_rows = 10\n", "max_rows"),
            (
                "[slow]\nfalse_positive_probability = 0.05\n",
                "false_positive_probability",
            ),
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
    fn a_short_idle_timeout_needs_the_long_memory() {
        // Two seconds: the long memory sees a scan across the kernel's
        // pauses. Without it, a minute at least.
        assert!(FileConfig::parse("[detection]\nidle_timeout = \"2s\"\n", "f").is_ok());
        let e = FileConfig::parse(
            "[detection]\nidle_timeout = \"2s\"\n[slow]\nenabled = false\n",
            "f",
        )
        .unwrap_err();
        assert!(e.to_string().contains("idle_timeout"), "{e}");
        assert!(FileConfig::parse("[detection]\nidle_timeout = \"1s\"\n", "f").is_err());
    }

    #[test]
    fn allowlists_take_addresses_and_cidrs() {
        let c = FileConfig::parse(
            "[response]\nallowlist = [\"198.18.0.0/24\", \"2001:db8::1/128\", \"198.18.0.8\", \"2001:db8::9\"]\n",
            "f",
        )
        .unwrap();
        let shown: Vec<String> = c.response.allowlist.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            shown,
            [
                "198.18.0.0/24",
                "2001:db8::1/128",
                "198.18.0.8/32",
                "2001:db8::9/128"
            ]
        );
        let e = FileConfig::parse("[response]\nallowlist = [\"198.18.0.300/24\"]\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f:2: response.allowlist:"), "{e}");
        assert!(e.contains("198.18.0.300/24"), "quotes the bad value: {e}");
    }

    #[test]
    fn errors_name_the_key_and_quote_the_value() {
        for (text, line, wanted) in [
            (
                "[detection]\nignore_ports = [\n  22,\n  70000,\n]\n",
                4,
                "detection.ignore_ports",
            ),
            ("[detection]\nignore_ports = [70000]\n", 2, "70000"),
            (
                "[detection]\nfanout_ports = 3\nfanout_ports = 4\n",
                3,
                "fanout_ports",
            ),
            (
                "[report]\nmetrics_listen = \"nowhere\"\n",
                2,
                "`\"nowhere\"`",
            ),
            (
                "[report]\nmetrics_listen = \"nowhere\"\n",
                2,
                "report.metrics_listen",
            ),
            (
                "[response]\nallowlist = [\n \"198.18.0.0/24\",\n \"bad\"\n]\n",
                2,
                "\"bad\"",
            ),
            (
                "[response]\nallowlist = [\n \"198.18.0.0/24\",\n \"bad\"\n]\n",
                2,
                "response.allowlist",
            ),
        ] {
            let e = FileConfig::parse(text, "f").unwrap_err().to_string();
            assert!(e.starts_with(&format!("f:{line}:")), "{text:?}: {e}");
            assert!(e.contains(wanted), "{text:?} names {wanted}: {e}");
        }
    }

    #[test]
    fn effective_settings_print_as_toml_that_reads_back() {
        let c = FileConfig::parse(
            "[response]\nallowlist = [\"198.18.0.8\"]\nblock_ttl = \"90m\"\n[report]\nmetrics_listen = \"127.0.0.1:9464\"\n",
            "f",
        )
        .unwrap();
        let text = toml::to_string(&c).unwrap();
        // As written: the largest unit that divides it.
        assert!(text.contains("block_ttl = \"90m\""), "{text}");
        assert!(text.contains("history_retention = \"90d\""), "{text}");
        assert!(text.contains("allowlist = [\"198.18.0.8\"]"), "{text}");
        assert_eq!(FileConfig::parse(&text, "printed").unwrap(), c);
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        assert!(FileConfig::load(Some(Path::new("/nonexistent/scanner.toml"))).is_err());
    }
}
