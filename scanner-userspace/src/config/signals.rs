//! The `[signals]` section: events, and probe records about sources this
//! host has not decided (`sinks::probes`), sent to a syslog collector (a
//! central CrowdSec agent, rsyslog, a SIEM). Off while `syslog` is unset.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sinks::syslog::Collector;

/// Largest `queue`.
/// (100,000 messages of ~500 bytes: 50 MB at most.)
pub(crate) const MAX_QUEUE: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SignalsConfig {
    /// The collector: `udp://HOST:PORT` or `tcp://HOST:PORT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syslog: Option<String>,
    /// The name this server gives in every message (the RFC 5424 HOSTNAME
    /// and a probe record's `host`): the hostname when unset. The central
    /// engine counts servers by it, so clones that share a hostname need
    /// one each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Messages waiting to be sent at most; past it the newest are dropped
    /// and counted.
    pub queue: usize,
    /// Probe records too, not only events.
    pub probes: bool,
    /// Probe records a second at most, from this host.
    pub probe_rate: u32,
    /// Probe records at once at most (the bucket's size).
    pub probe_burst: u32,
    /// One record per (source, destination, protocol, port) per window.
    #[serde(
        deserialize_with = "super::duration",
        serialize_with = "super::show_duration"
    )]
    pub probe_window: Duration,
}

/// Largest `probe_rate` and `probe_burst`.
pub(crate) const MAX_PROBE_RATE: u32 = 100_000;

impl Default for SignalsConfig {
    fn default() -> Self {
        Self {
            syslog: None,
            host: None,
            queue: 10_000,
            probes: true,
            // See docs/fleet.md, "Probe signals": a sweep needs one record
            // per server; 20 a second from each of 50 servers is 1,000 a
            // second at the collector under a flood, what one CrowdSec agent
            // takes over UDP here (BENCHMARKS.md).
            probe_rate: 20,
            probe_burst: 200,
            probe_window: Duration::from_secs(600),
        }
    }
}

impl SignalsConfig {
    /// The collector, when one is set.
    pub(crate) fn collector(&self) -> Option<Collector> {
        self.syslog
            .as_deref()
            .and_then(|u| Collector::parse(u).ok())
    }

    /// The checks a file can fail: (key, what is wrong).
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(url) = &self.syslog {
            Collector::parse(url).map_err(|e| ("syslog", e))?;
        }
        if let Some(host) = &self.host
            && (host.is_empty() || host.len() > 255 || !host.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err((
                "host",
                format!("{host:?}: 1 to 255 printable ASCII characters, no spaces"),
            ));
        }
        if !(1..=MAX_QUEUE).contains(&self.queue) {
            return Err(("queue", format!("must be 1 to {MAX_QUEUE}")));
        }
        if !(1..=MAX_PROBE_RATE).contains(&self.probe_rate) {
            return Err(("probe_rate", format!("must be 1 to {MAX_PROBE_RATE}")));
        }
        if !(1..=MAX_PROBE_RATE).contains(&self.probe_burst) {
            return Err(("probe_burst", format!("must be 1 to {MAX_PROBE_RATE}")));
        }
        if self.probe_window < Duration::from_secs(1)
            || self.probe_window > Duration::from_secs(86_400)
        {
            return Err(("probe_window", "must be 1s to 24h".to_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::FileConfig;

    #[test]
    fn a_bad_collector_is_refused_naming_the_key() {
        let err = FileConfig::parse("[signals]\nsyslog = \"http://198.18.0.1:514\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("syslog") && err.contains("udp://HOST:PORT"),
            "{err}"
        );
        for (bad, key) in [
            ("queue = 0", "queue"),
            ("host = \"web 1\"", "host"),
            ("probe_rate = 0", "probe_rate"),
            ("probe_burst = 1000000", "probe_burst"),
            ("probe_window = \"0s\"", "probe_window"),
        ] {
            let err = FileConfig::parse(&format!("[signals]\n{bad}\n"), "t")
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
        let ok = FileConfig::parse("[signals]\nsyslog = \"tcp://198.18.0.1:6514\"\n", "t").unwrap();
        assert_eq!(
            ok.signals.collector().map(|c| c.address),
            Some("198.18.0.1:6514".to_owned())
        );
        assert_eq!(
            FileConfig::default().signals.collector(),
            None,
            "off by default"
        );
    }
}
