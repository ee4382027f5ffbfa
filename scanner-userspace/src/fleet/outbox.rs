//! The durable outbox of alerts for the Local API: every alert is written
//! here (a small SQLite file) before it is queued, and deleted only once
//! the Local API has accepted it. A daemon that stops, crashes or is
//! upgraded while the Local API is away sends what is left after its next
//! start, with the detection's own times.
//!
//! Exactly once: an alert is marked `attempted` before each request that
//! carries it. One still marked when its batch is taken up again (the
//! answer was lost, the daemon stopped or was killed mid-request) is first
//! looked up on the Local API by the id it carries (event meta
//! `scanner_alert_id`); one that is there already is not sent again.
//!
//! Bounded: at most `push_queue` alerts wait; past that the newest are
//! dropped, counted and logged (by the caller). Written with WAL and
//! `synchronous = NORMAL`: a committed alert survives the process's crash
//! or kill; a power loss may take the last ones.

use std::{
    hash::{BuildHasher as _, Hasher as _},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rusqlite::{Connection, params};
use thiserror::Error;

use crate::fleet::alert::Alert;

#[derive(Debug, Error)]
pub(crate) enum OutboxError {
    #[error("creating the alert outbox's directory {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the alert outbox {path}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{what} the alert outbox {path}")]
    Sql {
        what: &'static str,
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("encoding an alert for the outbox")]
    Encode(#[source] serde_json::Error),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    value TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attempted INTEGER NOT NULL DEFAULT 0
);
";

/// An alert waiting in the outbox.
#[derive(Debug, Clone)]
pub(crate) struct Waiting {
    /// The outbox's row.
    pub(crate) row: i64,
    /// The id it carries to the Local API (event meta `scanner_alert_id`).
    pub(crate) alert_id: String,
    /// The source's scope (`Ip`, `Range`) and value, to look it up.
    pub(crate) scope: String,
    pub(crate) value: String,
    /// The alert as the Local API takes it.
    pub(crate) body: serde_json::Value,
    /// A request carrying it was made, and its answer never came.
    pub(crate) attempted: bool,
}

/// The outbox file.
pub(crate) struct Outbox {
    conn: Connection,
    path: PathBuf,
    cap: usize,
    len: usize,
}

/// A fresh id for an alert: the time and a random number (the hasher's
/// keys are random per process).
fn fresh_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    format!("{nanos:x}-{:016x}", h.finish())
}

impl Outbox {
    /// Opens the outbox at `path` (creating it and its directory), holding
    /// at most `cap` alerts.
    pub(crate) fn open(path: &Path, cap: usize) -> Result<Self, OutboxError> {
        let shown = || path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OutboxError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| OutboxError::Open {
            path: shown(),
            source,
        })?;
        let open = |source| OutboxError::Open {
            path: shown(),
            source,
        };
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open)?;
        conn.busy_timeout(Duration::from_secs(2)).map_err(open)?;
        // A small page cache: alerts pass through, the file stays small.
        conn.pragma_update(None, "cache_size", -256).map_err(open)?;
        conn.execute_batch(SCHEMA).map_err(open)?;
        let len: i64 = conn
            .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))
            .map_err(open)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            cap,
            len: usize::try_from(len).unwrap_or(usize::MAX),
        })
    }

    /// The error of the statement `what` on this file.
    fn sql(&self, what: &'static str) -> impl Fn(rusqlite::Error) -> OutboxError + use<> {
        let path = self.path.display().to_string();
        move |source| OutboxError::Sql {
            what,
            path: path.clone(),
            source,
        }
    }

    /// Alerts waiting.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Writes `alert` with a fresh id. Ok(false): the outbox is full, the
    /// alert is not kept.
    pub(crate) fn add(&mut self, alert: Alert) -> Result<bool, OutboxError> {
        if self.len >= self.cap {
            return Ok(false);
        }
        let alert_id = fresh_id();
        let alert = alert.with_id(alert_id.clone());
        let body = serde_json::to_string(&alert).map_err(OutboxError::Encode)?;
        let created_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.conn
            .execute(
                "INSERT INTO alerts (alert_id, scope, value, body, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![alert_id, alert.source.scope, alert.source.value, body, created_ms],
            )
            .map_err(self.sql("writing to"))?;
        self.len += 1;
        Ok(true)
    }

    /// The oldest `n` alerts waiting. A row whose body no longer parses
    /// (a damaged file) is deleted and counted in the second value.
    pub(crate) fn oldest(&mut self, n: usize) -> Result<(Vec<Waiting>, usize), OutboxError> {
        let rows: Vec<(i64, String, String, String, String, bool)> = {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT id, alert_id, scope, value, body, attempted FROM alerts ORDER BY id LIMIT ?1",
                )
                .map_err(self.sql("reading"))?;
            let limit = i64::try_from(n).unwrap_or(i64::MAX);
            stmt.query_map([limit], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .and_then(Iterator::collect)
            .map_err(self.sql("reading"))?
        };
        let mut waiting = Vec::with_capacity(rows.len());
        let mut damaged = Vec::new();
        for (row, alert_id, scope, value, body, attempted) in rows {
            match serde_json::from_str(&body) {
                Ok(body) => waiting.push(Waiting {
                    row,
                    alert_id,
                    scope,
                    value,
                    body,
                    attempted,
                }),
                Err(_) => damaged.push(row),
            }
        }
        self.remove(&damaged)?;
        Ok((waiting, damaged.len()))
    }

    /// Marks `rows` as carried by a request whose answer has not come yet.
    pub(crate) fn attempting(&mut self, rows: &[i64]) -> Result<(), OutboxError> {
        self.each(rows, "UPDATE alerts SET attempted = 1 WHERE id = ?1")
            .map(drop)
    }

    /// Deletes `rows`: accepted by the Local API (or never to be).
    pub(crate) fn remove(&mut self, rows: &[i64]) -> Result<(), OutboxError> {
        let deleted = self.each(rows, "DELETE FROM alerts WHERE id = ?1")?;
        self.len = self.len.saturating_sub(deleted);
        Ok(())
    }

    /// Runs `statement` for each row, in one transaction; the rows it
    /// changed.
    fn each(&mut self, rows: &[i64], statement: &str) -> Result<usize, OutboxError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let sql = self.sql("updating");
        let tx = self.conn.transaction().map_err(&sql)?;
        let mut changed = 0;
        {
            let mut stmt = tx.prepare_cached(statement).map_err(&sql)?;
            for row in rows {
                changed += stmt.execute([row]).map_err(&sql)?;
            }
        }
        tx.commit().map_err(&sql)?;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::fleet::alert::Detection;

    fn alert(source: &str) -> Alert {
        Alert::of(&Detection {
            source: source.parse().unwrap(),
            kind: "syn",
            ports: 4,
            probes: 5,
            top_ports: vec![22],
            started: UNIX_EPOCH + Duration::from_secs(1_795_667_542),
            decided: UNIX_EPOCH + Duration::from_secs(1_795_667_572),
            ban: None,
        })
    }

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("scanner-outbox-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("sub").join("outbox.db")
    }

    #[test]
    fn alerts_outlive_the_process_until_removed() {
        let path = temp("outlive");
        let mut o = Outbox::open(&path, 10).unwrap();
        assert!(o.add(alert("198.18.0.1/32")).unwrap());
        assert!(o.add(alert("2001:db8::/64")).unwrap());
        drop(o);
        let mut o = Outbox::open(&path, 10).unwrap();
        assert_eq!(o.len(), 2);
        let (w, damaged) = o.oldest(10).unwrap();
        assert_eq!(damaged, 0);
        assert_eq!(
            w.iter()
                .map(|w| (w.scope.as_str(), w.value.as_str()))
                .collect::<Vec<_>>(),
            [("Ip", "198.18.0.1"), ("Range", "2001:db8::/64")]
        );
        // The id is in the body, as the Local API gets it.
        let meta = &w[0].body["events"][0]["meta"];
        let carried = meta
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["key"] == crate::fleet::alert::ALERT_ID_KEY)
            .unwrap();
        assert_eq!(carried["value"], w[0].alert_id.as_str());
        assert_ne!(w[0].alert_id, w[1].alert_id);
        // The detection's own times are kept.
        assert_eq!(w[0].body["start_at"], "2026-11-26T04:32:22Z");
        assert!(!w[0].attempted);
        o.attempting(&[w[0].row]).unwrap();
        o.remove(&[w[1].row]).unwrap();
        drop(o);
        let mut o = Outbox::open(&path, 10).unwrap();
        let (w, _) = o.oldest(10).unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].attempted);
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn a_full_outbox_keeps_nothing_more_and_damaged_rows_go() {
        let path = temp("full");
        let mut o = Outbox::open(&path, 2).unwrap();
        assert!(o.add(alert("198.18.0.1/32")).unwrap());
        assert!(o.add(alert("198.18.0.2/32")).unwrap());
        assert!(!o.add(alert("198.18.0.3/32")).unwrap());
        assert_eq!(o.len(), 2);
        o.conn
            .execute(
                "UPDATE alerts SET body = 'not json' WHERE value = '198.18.0.1'",
                [],
            )
            .unwrap();
        let (w, damaged) = o.oldest(10).unwrap();
        assert_eq!((w.len(), damaged, o.len()), (1, 1, 1));
        assert_eq!(w[0].value, "198.18.0.2");
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_an_error() {
        let path = temp("bad");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let e = Outbox::open(&path, 2).err().unwrap();
        assert!(e.to_string().contains("opening the alert outbox"), "{e}");
    }
}
