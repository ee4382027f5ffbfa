//! The SQLite file: schema, batched writes, retention, and the queries
//! `scanner history` and `scanner report` run.
//!
//! Tables: `events` (every event the daemon reports, as its JSON line, with
//! the fields queries filter on as columns), `port_hours` (probes and new
//! probing sources per port per hour, added up), `listening` (the host's
//! listening sockets as last seen, so a restart can tell what changed while
//! no daemon watched), `scan_ports` (the ports each ended scan probed, as
//! ranges), `port_snapshots` (see `snapshots`). WAL mode: readers never wait for the writer.

use std::{path::Path, time::Duration};

use rusqlite::{Connection, OpenFlags, params};
use thiserror::Error;

use super::snapshots::{self, KeptSnapshot};

#[derive(Debug, Error)]
pub enum HistoryError {
    #[error("creating the history directory {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the history database {path}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path} is not a scanner history database (damaged, or another file)")]
    NotHistory {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{path} was written by a newer scanner (history layout {found}; this one reads {SCHEMA_VERSION})"
    )]
    Newer { path: String, found: i64 },
    #[error(
        "there is no history database at {path} (the daemon writes it; --history names another)"
    )]
    Missing { path: String },
    #[error("reading the history database")]
    Query(#[from] rusqlite::Error),
}

/// Names a failure to read the file: damaged (or not SQLite at all), or
/// anything else (locked, unreadable) with its cause.
fn classify(path: &str, source: rusqlite::Error) -> HistoryError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match source.sqlite_error_code() {
        Some(NotADatabase | DatabaseCorrupt) => HistoryError::NotHistory {
            path: path.to_owned(),
            source,
        },
        _ => HistoryError::Open {
            path: path.to_owned(),
            source,
        },
    }
}

/// Layout version, in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    event TEXT NOT NULL,
    source TEXT,
    kind TEXT,
    proto TEXT,
    port INTEGER,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts_ms);
CREATE INDEX IF NOT EXISTS events_source ON events (source, ts_ms);
CREATE TABLE IF NOT EXISTS port_hours (
    hour_s INTEGER NOT NULL,
    proto INTEGER NOT NULL,
    port INTEGER NOT NULL,
    probes INTEGER NOT NULL,
    sources INTEGER NOT NULL,
    PRIMARY KEY (hour_s, proto, port)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scan_ports (
    event_id INTEGER NOT NULL,
    proto INTEGER NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS scan_ports_event ON scan_ports (event_id);
CREATE TABLE IF NOT EXISTS listening (
    proto TEXT NOT NULL,
    port INTEGER NOT NULL,
    address TEXT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (proto, port, address)
) WITHOUT ROWID;
";

/// One event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// The row's id when read back (0 in a row to write).
    pub id: i64,
    pub ts_ms: i64,
    pub event: String,
    pub source: Option<String>,
    pub kind: Option<String>,
    pub proto: Option<String>,
    pub port: Option<u16>,
    /// The event's JSON line.
    pub json: String,
    /// `scan_ended`: the ports the scan probed, as (protocol, first, last)
    /// ranges (the `scan_ports` table). Written, not read back with the row.
    pub probed: Vec<(u8, u16, u16)>,
}

/// Probes of one port in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortHour {
    /// Start of the hour, Unix seconds.
    pub hour_s: i64,
    pub proto: u8,
    pub port: u16,
    pub probes: u64,
    /// Sources whose first probe of the port (in their tracked life) it was.
    pub sources: u64,
}

/// A listening socket as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListeningRow {
    pub proto: String,
    pub port: u16,
    pub address: String,
    /// The audit row's JSON (service, risk, process).
    pub json: String,
}

/// What the daemon writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Event(EventRow),
    /// Added to their ports' hours (a minute's worth at once).
    Probes(Vec<PortHour>),
    /// The listening sockets now (replaces the stored set).
    Listening(Vec<ListeningRow>),
    /// Probes per port as they stand (see `history::snapshots`).
    Snapshot(KeptSnapshot),
}

pub struct Store {
    pub(super) conn: Connection,
}

impl Store {
    /// The connection, for the tables other components keep in the file
    /// (the long memory's: `crate::memory::store`).
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The snapshots of `counts` taken at or after `since_ms`, oldest first.
    pub fn snapshots(&self, counts: &str, since_ms: i64) -> rusqlite::Result<Vec<KeptSnapshot>> {
        snapshots::read(&self.conn, counts, since_ms)
    }

    /// Opens (creating it and its directory if needed) for the daemon.
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| HistoryError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| HistoryError::Open {
            path: shown.clone(),
            source,
        })?;
        let not_history = |source| classify(&shown, source);
        // The first statements read the header: a file that is not SQLite
        // fails here, before anything is written.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(not_history)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(not_history)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(not_history)?;
        // A small page cache (SQLite's default is 2 MB a connection): the
        // writer appends, and a daemon's memory should not grow with the file.
        conn.pragma_update(None, "cache_size", -512)
            .map_err(not_history)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(not_history)?;
        if version > SCHEMA_VERSION {
            return Err(HistoryError::Newer {
                path: shown,
                found: version,
            });
        }
        conn.execute_batch(SCHEMA).map_err(not_history)?;
        conn.execute_batch(snapshots::SCHEMA).map_err(not_history)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(not_history)?;
        Ok(Self { conn })
    }

    /// Opens an existing file for reading only (the CLI).
    pub fn open_read_only(path: &Path) -> Result<Self, HistoryError> {
        let shown = path.display().to_string();
        if !path.exists() {
            return Err(HistoryError::Missing { path: shown });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| HistoryError::Open {
            path: shown.clone(),
            source,
        })?;
        conn.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
            .map_err(|source| match source {
                // A file without our tables: another SQLite database.
                rusqlite::Error::SqliteFailure(_, Some(ref m)) if m.contains("no such table") => {
                    HistoryError::NotHistory {
                        path: shown.clone(),
                        source,
                    }
                }
                other => classify(&shown, other),
            })?;
        Ok(Self { conn })
    }

    /// Writes a batch in one transaction.
    pub fn write(&mut self, batch: &[Record]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut event = tx.prepare_cached(
                "INSERT INTO events (ts_ms, event, source, kind, proto, port, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut ranges = tx.prepare_cached(
                "INSERT INTO scan_ports (event_id, proto, first, last) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut probes = tx.prepare_cached(
                "INSERT INTO port_hours (hour_s, proto, port, probes, sources) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (hour_s, proto, port) DO UPDATE SET probes = probes + excluded.probes, sources = sources + excluded.sources",
            )?;
            for record in batch {
                match record {
                    Record::Event(e) => {
                        event.execute(params![
                            e.ts_ms, e.event, e.source, e.kind, e.proto, e.port, e.json
                        ])?;
                        let id = tx.last_insert_rowid();
                        for (proto, first, last) in &e.probed {
                            ranges.execute(params![id, proto, first, last])?;
                        }
                    }
                    Record::Probes(hours) => {
                        for p in hours {
                            probes.execute(params![
                                p.hour_s,
                                p.proto,
                                p.port,
                                i64::try_from(p.probes).unwrap_or(i64::MAX),
                                i64::try_from(p.sources).unwrap_or(i64::MAX)
                            ])?;
                        }
                    }
                    Record::Snapshot(s) => snapshots::write(&tx, s)?,
                    Record::Listening(rows) => {
                        tx.execute("DELETE FROM listening", [])?;
                        let mut insert = tx.prepare_cached(
                            "INSERT OR REPLACE INTO listening (proto, port, address, json) VALUES (?1, ?2, ?3, ?4)",
                        )?;
                        for r in rows {
                            insert.execute(params![r.proto, r.port, r.address, r.json])?;
                        }
                    }
                }
            }
        }
        tx.commit()
    }

    /// Deletes what is older than `before_ms` (Unix ms); returns the rows.
    pub fn prune(&mut self, before_ms: i64) -> rusqlite::Result<usize> {
        self.conn.execute(
            "DELETE FROM scan_ports WHERE event_id IN (SELECT id FROM events WHERE ts_ms < ?1)",
            [before_ms],
        )?;
        let events = self
            .conn
            .execute("DELETE FROM events WHERE ts_ms < ?1", [before_ms])?;
        let hours = self.conn.execute(
            "DELETE FROM port_hours WHERE hour_s < ?1",
            [before_ms / 1000],
        )?;
        Ok(events + hours)
    }

    /// Events at or after `since_ms`, oldest first.
    pub fn events(&self, since_ms: i64) -> rusqlite::Result<Vec<EventRow>> {
        let mut q = self.conn.prepare(
            "SELECT ts_ms, event, source, kind, proto, port, json, id FROM events WHERE ts_ms >= ?1 ORDER BY ts_ms, id",
        )?;
        let rows = q.query_map([since_ms], |r| {
            Ok(EventRow {
                ts_ms: r.get(0)?,
                event: r.get(1)?,
                source: r.get(2)?,
                kind: r.get(3)?,
                proto: r.get(4)?,
                port: r.get(5)?,
                json: r.get(6)?,
                id: r.get(7)?,
                probed: Vec::new(),
            })
        })?;
        rows.collect()
    }

    /// The ids of the events at or after `since_ms` whose scan probed
    /// `port` (any protocol).
    pub fn scans_probing(&self, since_ms: i64, port: u16) -> rusqlite::Result<Vec<i64>> {
        let mut q = self.conn.prepare(
            "SELECT DISTINCT p.event_id FROM scan_ports p JOIN events e ON e.id = p.event_id
             WHERE e.ts_ms >= ?1 AND p.first <= ?2 AND ?2 <= p.last ORDER BY p.event_id",
        )?;
        let rows = q.query_map(params![since_ms, port], |r| r.get(0))?;
        rows.collect()
    }

    /// Port hours at or after `since_s`, oldest first.
    pub fn port_hours(&self, since_s: i64) -> rusqlite::Result<Vec<PortHour>> {
        let mut q = self.conn.prepare(
            "SELECT hour_s, proto, port, probes, sources FROM port_hours WHERE hour_s >= ?1 ORDER BY hour_s, proto, port",
        )?;
        let rows = q.query_map([since_s], |r| {
            Ok(PortHour {
                hour_s: r.get(0)?,
                proto: r.get(1)?,
                port: r.get(2)?,
                probes: r.get::<_, i64>(3)?.max(0) as u64,
                sources: r.get::<_, i64>(4)?.max(0) as u64,
            })
        })?;
        rows.collect()
    }

    /// The listening sockets as last seen.
    pub fn listening(&self) -> rusqlite::Result<Vec<ListeningRow>> {
        let mut q = self.conn.prepare(
            "SELECT proto, port, address, json FROM listening ORDER BY proto, port, address",
        )?;
        let rows = q.query_map([], |r| {
            Ok(ListeningRow {
                proto: r.get(0)?,
                port: r.get(1)?,
                address: r.get(2)?,
                json: r.get(3)?,
            })
        })?;
        rows.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("scanner-history-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("sub").join("history.db")
    }

    fn event(ts_ms: i64, source: &str) -> Record {
        Record::Event(EventRow {
            ts_ms,
            event: "scan_detected".into(),
            source: Some(source.into()),
            kind: Some("syn".into()),
            proto: None,
            port: None,
            json: format!("{{\"source\":\"{source}\"}}"),
            id: 0,
            probed: vec![(6, 1, 1000), (17, 53, 53)],
        })
    }

    #[test]
    fn writes_add_up_and_read_back_and_old_rows_are_pruned() {
        let path = temp("roundtrip");
        let mut s = Store::open(&path).unwrap();
        let hour = |h: i64, probes| {
            Record::Probes(vec![PortHour {
                hour_s: h * 3600,
                proto: 6,
                port: 22,
                probes,
                sources: 1,
            }])
        };
        s.write(&[event(1_000, "198.18.0.1"), hour(1, 5), hour(1, 7)])
            .unwrap();
        s.write(&[event(9_000_000, "198.18.0.5"), hour(3, 2)])
            .unwrap();
        s.write(&[Record::Listening(vec![ListeningRow {
            proto: "tcp".into(),
            port: 22,
            address: "0.0.0.0".into(),
            json: "{}".into(),
        }])])
        .unwrap();
        let hours = s.port_hours(0).unwrap();
        assert_eq!((hours[0].probes, hours[0].sources), (12, 2), "added up");
        assert_eq!(s.events(0).unwrap().len(), 2);
        assert_eq!(
            s.events(2_000).unwrap()[0].source.as_deref(),
            Some("198.18.0.5")
        );
        assert_eq!(s.listening().unwrap()[0].port, 22);
        let first = s.events(0).unwrap()[0].id;
        assert_eq!(s.scans_probing(0, 500).unwrap(), [first, first + 1]);
        assert_eq!(s.scans_probing(0, 53).unwrap(), [first, first + 1]);
        assert_eq!(s.scans_probing(2_000, 1000).unwrap(), [first + 1]);
        assert!(s.scans_probing(0, 1001).unwrap().is_empty());
        assert_eq!(s.prune(5_000_000).unwrap(), 2, "one event, one hour");
        assert_eq!(
            s.scans_probing(0, 500).unwrap(),
            [first + 1],
            "an event's ports go with it"
        );
        drop(s);
        let r = Store::open_read_only(&path).unwrap();
        assert_eq!(r.events(0).unwrap().len(), 1);
        assert_eq!(r.port_hours(0).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn a_file_that_is_not_a_history_is_named() {
        let path = temp("garbage");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let e = Store::open(&path).err().unwrap();
        assert!(e.to_string().contains("is not a scanner history"), "{e}");
        let e = Store::open_read_only(&path).err().unwrap();
        assert!(matches!(e, HistoryError::NotHistory { .. }), "{e}");
        let missing = Store::open_read_only(&path.with_extension("nope"))
            .err()
            .unwrap();
        assert!(
            missing.to_string().contains("no history database"),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }
}
