//! History: what the daemon reported, probes per port per hour, and the
//! host's listening ports, kept in an SQLite file (rusqlite with the
//! bundled library: nothing to install) so "which of my ports are exposed,
//! who probed them, and is that changing?" has an answer beyond the last
//! hour and across reboots. The daemon writes it off the hot path
//! (`writer`); `scanner history` and `scanner report` read it, with or
//! without a daemon running.

pub(crate) mod record;
pub(crate) mod report;
pub(crate) mod snapshots;
pub(crate) mod store;
pub(crate) mod writer;

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) use store::{EventRow, ListeningRow, PortHour, Record, Store};

/// Where the daemon keeps it unless told otherwise.
pub(crate) const DEFAULT_PATH: &str = "/var/lib/scanner/history.db";

/// Unix milliseconds of `t`.
pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The start of the hour `t` falls in, Unix seconds.
pub(crate) fn hour_of(t: SystemTime) -> i64 {
    let s = unix_ms(t) / 1000;
    s - s.rem_euclid(3600)
}
