//! A source's long record as `scanner history --source` and `scanner
//! report` read it: the long memory's rows (`crate::memory`, table
//! `memory_ports`) of every source in a network, by first probe, and the
//! same day by day. Read-only; a file from before the memory reads as
//! empty.

use std::net::IpAddr;

use ipnet::IpNet;
use rusqlite::{Connection, OptionalExtension as _, params};

/// An address's bytes as stored: 4 for IPv4, 16 for IPv6.
pub(crate) fn bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Stored bytes back to an address (None for anything else).
pub(crate) fn address(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// One row of a long record, for `scanner history --source`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct RecordRow {
    pub source: String,
    pub proto: String,
    pub port: u16,
    pub state: &'static str,
    pub first_ms: i64,
    pub last_ms: i64,
    pub probes: u64,
}

/// Every row of the sources inside `filter` seen at or after `since_ms`,
/// by first probe. Tables missing (a file from before the memory) read as
/// empty.
pub(crate) fn record_of(
    conn: &Connection,
    filter: IpNet,
    since_ms: i64,
) -> rusqlite::Result<Vec<RecordRow>> {
    let exists: bool = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'memory_ports'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT source, proto, port, open, first_ms, last_ms, probes FROM memory_ports
         WHERE last_ms >= ?1 AND source >= ?2 AND source <= ?3 ORDER BY first_ms, source",
    )?;
    let (low, high) = (bytes(filter.network()), bytes(filter.broadcast()));
    let rows = stmt
        .query_map(params![since_ms, low, high], |r| {
            let source: Vec<u8> = r.get(0)?;
            let open: bool = r.get(3)?;
            Ok(RecordRow {
                source: address(&source).map_or_else(String::new, |a| a.to_string()),
                proto: crate::audit::proto_name(r.get(1)?).to_owned(),
                port: r.get(2)?,
                state: if open { "open" } else { "closed" },
                first_ms: r.get(4)?,
                last_ms: r.get(5)?,
                probes: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // Blobs compare bytewise: an IPv6 address may sort between IPv4
    // bounds only by length, never as one of them.
    Ok(rows
        .into_iter()
        .filter(|r| {
            r.source
                .parse::<IpAddr>()
                .is_ok_and(|a| filter.contains(&a))
        })
        .collect())
}

/// One day of a long record: the ports first probed that day.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct RecordDay {
    /// `2026-12-07` (UTC).
    pub day: String,
    /// `tcp/23`, with `(open)` after an open one; each once.
    pub ports: Vec<String>,
    /// Addresses that first probed a port that day.
    pub addresses: u32,
}

/// A record (by first probe, as [`record_of`] reads it) day by day.
pub(crate) fn by_day(record: &[RecordRow]) -> Vec<RecordDay> {
    let mut days: Vec<(RecordDay, std::collections::BTreeSet<&str>)> = Vec::new();
    for r in record {
        let day = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(r.first_ms.max(0).unsigned_abs()),
        )
        .to_string()
        .get(..10)
        .unwrap_or_default()
        .to_owned();
        let port = format!(
            "{}/{}{}",
            r.proto,
            r.port,
            if r.state == "open" { "(open)" } else { "" }
        );
        if days.last().is_none_or(|(d, _)| d.day != day) {
            days.push((
                RecordDay {
                    day,
                    ports: Vec::new(),
                    addresses: 0,
                },
                Default::default(),
            ));
        }
        if let Some((d, sources)) = days.last_mut() {
            if !d.ports.contains(&port) {
                d.ports.push(port);
            }
            sources.insert(r.source.as_str());
            d.addresses = u32::try_from(sources.len()).unwrap_or(u32::MAX);
        }
    }
    days.into_iter().map(|(d, _)| d).collect()
}
