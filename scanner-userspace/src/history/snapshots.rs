//! Probes-per-port snapshots, kept so that a restarted daemon's "last hour"
//! (`scanner ports --probed`) still covers the hour: the daemon keeps one
//! every five minutes (see `detect::hits`) and reads back those of the last
//! 65 minutes at start. Each is tagged with the identity of the counts it
//! was taken from (this boot and the counter map's id): a snapshot of
//! counts since made anew is no base for the new ones.

use rusqlite::{Connection, Transaction, params};
use scanner_common::PortHits;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS port_snapshots (
    taken_ms INTEGER PRIMARY KEY,
    counts TEXT NOT NULL,
    data BLOB NOT NULL
);
";

/// How long a snapshot is kept: an hour, and one interval to find a base.
pub(crate) const KEEP_MS: i64 = 65 * 60 * 1000;

/// Bytes per port in the blob: index u32, probes u64, sources u64.
const ENTRY: usize = 20;

/// One snapshot as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSnapshot {
    pub taken_ms: i64,
    /// Whose counts: see `kernel::maps::Maps::counts_identity`.
    pub counts: String,
    /// Non-zero counts by PORT_HITS index.
    pub ports: Vec<(u32, PortHits)>,
}

/// Writes `s`, and drops the snapshots it makes useless: older than
/// [`KEEP_MS`] before it, or of other counts.
pub(super) fn write(tx: &Transaction<'_>, s: &KeptSnapshot) -> rusqlite::Result<()> {
    let mut data = Vec::with_capacity(s.ports.len() * ENTRY);
    for (index, hits) in &s.ports {
        data.extend_from_slice(&index.to_le_bytes());
        data.extend_from_slice(&hits.probes.to_le_bytes());
        data.extend_from_slice(&hits.sources.to_le_bytes());
    }
    tx.execute(
        "INSERT OR REPLACE INTO port_snapshots (taken_ms, counts, data) VALUES (?1, ?2, ?3)",
        params![s.taken_ms, s.counts, data],
    )?;
    tx.execute(
        "DELETE FROM port_snapshots WHERE taken_ms < ?1 OR counts != ?2",
        params![s.taken_ms - KEEP_MS, s.counts],
    )?;
    Ok(())
}

fn decode(data: &[u8]) -> Vec<(u32, PortHits)> {
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    data.chunks_exact(ENTRY)
        .map(|e| {
            let mut i = [0u8; 4];
            i.copy_from_slice(&e[..4]);
            (
                u32::from_le_bytes(i),
                PortHits {
                    probes: word(&e[4..12]),
                    sources: word(&e[12..20]),
                },
            )
        })
        .collect()
}

/// The snapshots of `counts` taken at or after `since_ms`, oldest first.
pub(super) fn read(
    conn: &Connection,
    counts: &str,
    since_ms: i64,
) -> rusqlite::Result<Vec<KeptSnapshot>> {
    let mut q = conn.prepare(
        "SELECT taken_ms, counts, data FROM port_snapshots WHERE counts = ?1 AND taken_ms >= ?2 ORDER BY taken_ms",
    )?;
    let rows = q.query_map(params![counts, since_ms], |r| {
        Ok(KeptSnapshot {
            taken_ms: r.get(0)?,
            counts: r.get(1)?,
            ports: decode(&r.get::<_, Vec<u8>>(2)?),
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Record, store::Store};

    #[test]
    fn snapshots_read_back_and_only_the_last_65_minutes_of_these_counts_stay() {
        let dir = std::env::temp_dir().join(format!("scanner-snapshots-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open(&dir.join("h.db")).unwrap();
        let snap = |taken_ms: i64, counts: &str, probes: u64| KeptSnapshot {
            taken_ms,
            counts: counts.into(),
            ports: vec![
                (22, PortHits { probes, sources: 2 }),
                (
                    131_072 + 47,
                    PortHits {
                        probes: u64::MAX,
                        sources: 1,
                    },
                ),
            ],
        };
        let minute = 60_000;
        for (t, counts) in [(0, "a/1"), (10, "a/1"), (50, "a/1"), (70, "a/1")] {
            store
                .write(&[Record::Snapshot(snap(t * minute, counts, 7))])
                .unwrap();
        }
        let kept = store.snapshots("a/1", 0).unwrap();
        let times: Vec<i64> = kept.iter().map(|s| s.taken_ms / minute).collect();
        assert_eq!(
            times,
            [10, 50, 70],
            "older than 65 minutes before the newest: gone"
        );
        assert_eq!(kept[0], snap(10 * minute, "a/1", 7), "read back whole");
        assert_eq!(store.snapshots("a/1", 60 * minute).unwrap().len(), 1);
        store
            .write(&[Record::Snapshot(snap(71 * minute, "b/9", 1))])
            .unwrap();
        assert!(
            store.snapshots("a/1", 0).unwrap().is_empty(),
            "other counts: gone"
        );
        assert_eq!(store.snapshots("b/9", 0).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
