//! The `[crowdsec]` section: a CrowdSec Local API to share detections and
//! blocks with (see `fleet`). Off while `url` is unset.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{duration, show_duration};

/// Where alerts wait for the Local API by default.
pub(crate) const DEFAULT_OUTBOX: &str = "/var/lib/scanner/outbox.db";

/// Largest `push_queue`.
pub(crate) const MAX_PUSH_QUEUE: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CrowdSecConfig {
    /// The Local API, e.g. `http://lapi:8080/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The bouncer's API key (`cscli bouncers add NAME -o raw`), in a file
    /// only its owner can read: decisions are pulled and enforced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bouncer_key_file: Option<PathBuf>,
    /// The machine (watcher) this daemon logs in as to push alerts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// Its password, in a file only its owner can read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(deserialize_with = "duration", serialize_with = "show_duration")]
    pub pull_interval: Duration,
    /// Alerts kept while the Local API cannot be reached; past it the
    /// newest are dropped and counted.
    pub push_queue: usize,
    /// The file alerts wait in until the Local API accepts them, across
    /// stops and crashes (a small SQLite file).
    pub outbox: PathBuf,
    /// A PEM file of CA certificates for an https `url` (the system's CAs
    /// otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Default for CrowdSecConfig {
    fn default() -> Self {
        Self {
            url: None,
            bouncer_key_file: None,
            machine_id: None,
            password_file: None,
            pull_interval: Duration::from_secs(2),
            push_queue: 10_000,
            outbox: PathBuf::from(DEFAULT_OUTBOX),
            ca_file: None,
        }
    }
}

impl CrowdSecConfig {
    /// The checks a file can fail: (key, what is wrong).
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.pull_interval < std::time::Duration::from_millis(500) {
            return Err((
                "pull_interval",
                "must be at least 500ms (every pull is a request to the Local API)".into(),
            ));
        }
        if self.push_queue == 0 || self.push_queue > MAX_PUSH_QUEUE {
            return Err((
                "push_queue",
                format!("{} is not 1-{MAX_PUSH_QUEUE}", self.push_queue),
            ));
        }
        let Some(url) = &self.url else {
            return Ok(());
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(("url", format!("{url:?} is not an http:// or https:// URL")));
        }
        if self.machine_id.is_some() != self.password_file.is_some() {
            return Err((
                "machine_id",
                "machine_id and password_file go together (pushing alerts needs both)".into(),
            ));
        }
        if self.machine_id.is_some() && self.outbox.as_os_str().is_empty() {
            return Err((
                "outbox",
                "must name a file (alerts wait there for the Local API)".into(),
            ));
        }
        if self.bouncer_key_file.is_none() && self.machine_id.is_none() {
            return Err((
                "url",
                "set bouncer_key_file (pull decisions), machine_id and password_file (push alerts), or both"
                    .into(),
            ));
        }
        Ok(())
    }
}
