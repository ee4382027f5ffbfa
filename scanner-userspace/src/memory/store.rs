//! The long memory's tables in the history file: one row per (source,
//! protocol, port) with its first and latest probe, and the entries already
//! decided (by the kernel, or slow), so that nothing is reported twice.
//!
//! `memory_ports` is keyed by the source's address bytes (4 for IPv4, 16
//! for IPv6) and carries the source's prefix, indexed, so a prefix's record
//! is one index range. Everything here takes a `Connection`: the daemon's
//! memory thread writes through its own, `scanner history` reads through the
//! history's read-only one.

use std::net::IpAddr;

use ipnet::IpNet;
use rusqlite::{Connection, OptionalExtension as _, Transaction, params};

use crate::{
    detect::slow::PortRecord,
    history::record::{address, bytes},
};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS memory_ports (
    source BLOB NOT NULL,
    proto INTEGER NOT NULL,
    port INTEGER NOT NULL,
    open INTEGER NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    probes INTEGER NOT NULL,
    net BLOB NOT NULL,
    PRIMARY KEY (source, proto, port)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memory_ports_net ON memory_ports (net);
CREATE INDEX IF NOT EXISTS memory_ports_last ON memory_ports (last_ms);
CREATE TABLE IF NOT EXISTS memory_decided (
    scope INTEGER NOT NULL,
    entity BLOB NOT NULL,
    decided_by TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    PRIMARY KEY (scope, entity)
) WITHOUT ROWID;
";

/// `memory_decided.scope`.
pub(crate) const SOURCE: i64 = 0;
pub(crate) const PREFIX: i64 = 1;

/// One probe as the memory keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub source: IpAddr,
    /// The source's prefix (`[aggregation]` lengths).
    pub net: IpNet,
    pub proto: u8,
    pub port: u16,
    pub open: bool,
    /// Unix milliseconds.
    pub ms: i64,
}

/// Adds one probe to its row; true when the row is new.
pub(crate) fn add(tx: &Transaction<'_>, s: &Seen) -> rusqlite::Result<bool> {
    let source = bytes(s.source);
    let updated = tx
        .prepare_cached(
            "UPDATE memory_ports SET open = max(open, ?4), first_ms = min(first_ms, ?5),
             last_ms = max(last_ms, ?5), probes = probes + 1
             WHERE source = ?1 AND proto = ?2 AND port = ?3",
        )?
        .execute(params![source, s.proto, s.port, s.open, s.ms])?;
    if updated > 0 {
        return Ok(false);
    }
    tx.prepare_cached(
        "INSERT INTO memory_ports (source, proto, port, open, first_ms, last_ms, probes, net)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, 1, ?6)",
    )?
    .execute(params![
        source,
        s.proto,
        s.port,
        s.open,
        s.ms,
        bytes(s.net.network())
    ])?;
    Ok(true)
}

/// Marks an entry decided at `ms` (by "kernel" or "slow").
pub(crate) fn mark(
    conn: &Connection,
    scope: i64,
    entity: IpAddr,
    by: &str,
    ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO memory_decided (scope, entity, decided_by, ts_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (scope, entity) DO UPDATE SET decided_by = ?3, ts_ms = max(ts_ms, ?4)",
    )?
    .execute(params![scope, bytes(entity), by, ms])?;
    Ok(())
}

/// Whether the entry was decided at or after `since_ms`.
pub(crate) fn decided(
    conn: &Connection,
    scope: i64,
    entity: IpAddr,
    since_ms: i64,
) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT 1 FROM memory_decided WHERE scope = ?1 AND entity = ?2 AND ts_ms >= ?3",
    )?
    .query_row(params![scope, bytes(entity), since_ms], |_| Ok(()))
    .optional()
    .map(|r| r.is_some())
}

/// A source's ports probed at or after `since_ms`.
pub(crate) fn source_record(
    conn: &Connection,
    source: IpAddr,
    since_ms: i64,
) -> rusqlite::Result<Vec<PortRecord>> {
    conn.prepare_cached(
        "SELECT proto, port, open, first_ms, last_ms, probes, 1 FROM memory_ports
         WHERE source = ?1 AND last_ms >= ?2",
    )?
    .query_map(params![bytes(source), since_ms], port_record)?
    .collect()
}

/// A `PortRecord` from its seven columns, in its fields' order.
fn port_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<PortRecord> {
    Ok(PortRecord {
        proto: r.get(0)?,
        port: r.get(1)?,
        open: r.get(2)?,
        first_ms: r.get(3)?,
        last_ms: r.get(4)?,
        probes: r.get(5)?,
        addresses: r.get(6)?,
    })
}

/// A prefix's record at or after `since_ms`, its sources decided on their
/// own since then left out (their probes were reported): the distinct
/// ports any of its addresses probed, and those addresses.
pub(crate) fn prefix_record(
    conn: &Connection,
    net: IpNet,
    since_ms: i64,
) -> rusqlite::Result<(Vec<PortRecord>, Vec<IpAddr>)> {
    let net_bytes = bytes(net.network());
    let undecided = "net = ?1 AND last_ms >= ?2 AND NOT EXISTS (
        SELECT 1 FROM memory_decided d WHERE d.scope = 0 AND d.entity = memory_ports.source
        AND d.ts_ms >= ?2)";
    let ports = conn
        .prepare_cached(&format!(
            "SELECT proto, port, max(open), min(first_ms), max(last_ms), sum(probes),
             count(*) FROM memory_ports WHERE {undecided} GROUP BY proto, port"
        ))?
        .query_map(params![net_bytes, since_ms], port_record)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let addresses = conn
        .prepare_cached(&format!(
            "SELECT DISTINCT source FROM memory_ports WHERE {undecided}"
        ))?
        .query_map(params![net_bytes, since_ms], |r| r.get::<_, Vec<u8>>(0))?
        .filter_map(|b| b.ok().and_then(|b| address(&b)))
        .collect();
    Ok((ports, addresses))
}

/// Forgets rows and marks older than `before_ms`, then the oldest rows
/// past `max_rows`. Returns (rows past the window, rows past the cap).
pub(crate) fn prune(
    conn: &Connection,
    before_ms: i64,
    max_rows: u64,
) -> rusqlite::Result<(usize, usize)> {
    let aged = conn.execute("DELETE FROM memory_ports WHERE last_ms < ?1", [before_ms])?;
    conn.execute("DELETE FROM memory_decided WHERE ts_ms < ?1", [before_ms])?;
    let rows: i64 = conn.query_row("SELECT count(*) FROM memory_ports", [], |r| r.get(0))?;
    let over = u64::try_from(rows).unwrap_or(0).saturating_sub(max_rows);
    let capped = if over > 0 {
        conn.execute(
            "DELETE FROM memory_ports WHERE (source, proto, port) IN (
                SELECT source, proto, port FROM memory_ports ORDER BY last_ms LIMIT ?1)",
            [i64::try_from(over).unwrap_or(i64::MAX)],
        )?
    } else {
        0
    };
    Ok((aged, capped))
}

/// Rows held.
pub(crate) fn rows(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM memory_ports", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| u64::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c
    }

    fn seen(source: &str, port: u16, open: bool, ms: i64) -> Seen {
        let source: IpAddr = source.parse().unwrap();
        Seen {
            source,
            net: IpNet::new(source, 24).unwrap().trunc(),
            proto: 6,
            port,
            open,
            ms,
        }
    }

    #[test]
    fn a_row_per_port_keeps_its_first_and_latest_probe() {
        let mut c = conn();
        let tx = c.transaction().unwrap();
        assert!(add(&tx, &seen("198.18.0.5", 23, false, 1000)).unwrap());
        assert!(!add(&tx, &seen("198.18.0.5", 23, false, 500)).unwrap());
        assert!(!add(&tx, &seen("198.18.0.5", 23, true, 3000)).unwrap());
        assert!(add(&tx, &seen("198.18.0.5", 25, false, 2000)).unwrap());
        tx.commit().unwrap();
        let mut r = source_record(&c, "198.18.0.5".parse().unwrap(), 0).unwrap();
        r.sort_by_key(|r| r.port);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].first_ms, r[0].last_ms, r[0].probes, r[0].open),
            (500, 3000, 3, true)
        );
        // Only what was seen since: port 23's latest probe is at 3000.
        assert_eq!(
            source_record(&c, "198.18.0.5".parse().unwrap(), 2500)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_prefix_record_leaves_out_sources_decided_on_their_own() {
        let mut c = conn();
        let tx = c.transaction().unwrap();
        for (i, a) in ["198.18.7.1", "198.18.7.2", "198.18.7.3"]
            .iter()
            .enumerate()
        {
            add(&tx, &seen(a, 100 + i as u16, false, 10)).unwrap();
            add(&tx, &seen(a, 7, false, 10)).unwrap();
        }
        add(&tx, &seen("198.18.8.1", 1, false, 10)).unwrap();
        tx.commit().unwrap();
        let net: IpNet = "198.18.7.0/24".parse().unwrap();
        let (ports, addresses) = prefix_record(&c, net, 0).unwrap();
        assert_eq!((ports.len(), addresses.len()), (4, 3));
        let seven = ports.iter().find(|p| p.port == 7).unwrap();
        assert_eq!((seven.addresses, seven.probes), (3, 3));
        mark(&c, SOURCE, "198.18.7.1".parse().unwrap(), "kernel", 5).unwrap();
        let (ports, addresses) = prefix_record(&c, net, 0).unwrap();
        assert_eq!((ports.len(), addresses.len()), (3, 2));
        // A mark from before the window counts for nothing.
        let (_, addresses) = prefix_record(&c, net, 6).unwrap();
        assert_eq!(addresses.len(), 3);
        assert!(decided(&c, SOURCE, "198.18.7.1".parse().unwrap(), 5).unwrap());
        assert!(!decided(&c, SOURCE, "198.18.7.1".parse().unwrap(), 6).unwrap());
    }

    #[test]
    fn pruning_forgets_the_window_then_the_oldest_past_the_cap() {
        let mut c = conn();
        let tx = c.transaction().unwrap();
        for p in 0..10 {
            add(&tx, &seen("2001:db8::1", p, false, i64::from(p))).unwrap();
        }
        tx.commit().unwrap();
        assert_eq!(prune(&c, 2, 5).unwrap(), (2, 3));
        let left: Vec<u16> = source_record(&c, "2001:db8::1".parse().unwrap(), 0)
            .unwrap()
            .iter()
            .map(|r| r.port)
            .collect();
        assert_eq!(left.len(), 5);
        assert!(left.iter().all(|&p| p >= 5), "{left:?}");
        assert_eq!(rows(&c).unwrap(), 5);
    }

    #[test]
    fn the_history_reads_a_record_as_the_memory_writes_it() {
        use crate::history::record::{by_day, record_of};
        let mut c = conn();
        let tx = c.transaction().unwrap();
        add(&tx, &seen("198.18.9.2", 80, true, 20)).unwrap();
        add(&tx, &seen("198.18.9.1", 23, false, 10)).unwrap();
        add(&tx, &seen("2001:db8::9", 22, false, 5)).unwrap();
        tx.commit().unwrap();
        let all = record_of(&c, "198.18.9.0/24".parse().unwrap(), 0).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].port, all[0].state), (23, "closed"));
        assert_eq!(
            (all[1].source.as_str(), all[1].state),
            ("198.18.9.2", "open")
        );
        let one = record_of(&c, "2001:db8::9/128".parse().unwrap(), 0).unwrap();
        assert_eq!(one.len(), 1);
        let days = by_day(&all);
        assert_eq!(days.len(), 1);
        assert_eq!(days[0].ports, ["tcp/23", "tcp/80(open)"]);
        assert_eq!((days[0].day.as_str(), days[0].addresses), ("1970-01-01", 2));
        let none = Connection::open_in_memory().unwrap();
        assert!(
            record_of(&none, "198.18.9.0/24".parse().unwrap(), 0)
                .unwrap()
                .is_empty()
        );
    }
}
