//! The `[signals]` section: events sent to a syslog collector (a central
//! CrowdSec agent, rsyslog, a SIEM). Off while `syslog` is unset.

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
    /// Messages waiting to be sent at most; past it the newest are dropped
    /// and counted.
    pub queue: usize,
}

impl Default for SignalsConfig {
    fn default() -> Self {
        Self {
            syslog: None,
            queue: 10_000,
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
        if !(1..=MAX_QUEUE).contains(&self.queue) {
            return Err(("queue", format!("must be 1 to {MAX_QUEUE}")));
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
        let err = FileConfig::parse("[signals]\nqueue = 0\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue"), "{err}");
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
