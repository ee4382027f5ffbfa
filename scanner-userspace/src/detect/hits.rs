//! Probes per destination port over time: the kernel's PORT_HITS totals,
//! with snapshots kept so the daemon can say what the last hour added.
//! The daemon also keeps them in the history, and a restarted daemon takes
//! them back (`restore`): the last hour does not start again at a restart.

use std::{
    collections::{BTreeSet, VecDeque},
    time::{Duration, Instant},
};

use scanner_common::{PortHits, port_of_hits_index};
use serde::{Deserialize, Serialize};

/// Probes to one destination port, as the daemon reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PortHit {
    pub proto: u8,
    pub port: u16,
    /// Probes since the counts began (they survive daemon restarts).
    pub probes: u64,
    /// Distinct probing sources since the counts began.
    pub sources: u64,
    pub probes_last_hour: u64,
    pub sources_last_hour: u64,
    /// Seconds the two "last hour" counts cover: 3,600, or less while the
    /// counts are younger than an hour (a first start, no history kept).
    pub last_hour_s: u64,
    /// A listener takes this port on an exposed address.
    pub open: bool,
}

/// How often a snapshot is kept: "the last hour" is exact to this much.
pub(crate) const SNAPSHOT_EVERY: Duration = Duration::from_secs(300);
const HOUR: Duration = Duration::from_secs(3600);

/// Non-zero counts by PORT_HITS index, sorted by index.
pub(crate) type Snapshot = Vec<(u32, PortHits)>;

#[derive(Debug, Default)]
pub(crate) struct PortHistory {
    snapshots: VecDeque<(Instant, Snapshot)>,
}

impl PortHistory {
    /// Whether a snapshot is due (the last one is old enough, or none).
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.snapshots
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= SNAPSHOT_EVERY)
    }

    /// Keeps a snapshot of `current` when one is due, and drops those no
    /// longer needed for the hour; the snapshot kept, if one was.
    pub(crate) fn record(&mut self, now: Instant, current: &[PortHits]) -> Option<&Snapshot> {
        let due = self.due(now);
        if due {
            self.snapshots.push_back((now, sparse(current)));
        }
        self.drop_old(now);
        due.then(|| self.snapshots.back().map(|(_, s)| s)).flatten()
    }

    /// Takes back snapshots an earlier daemon kept, each `age` old, oldest
    /// first (before any of this daemon's own). Counts that went down since
    /// one was taken mean the counts were made anew after it: it is not a
    /// base for them, and neither is anything older.
    pub(crate) fn restore(
        &mut self,
        now: Instant,
        aged: Vec<(Duration, Snapshot)>,
        current: &[PortHits],
    ) {
        let mut kept: Vec<(Instant, Snapshot)> = aged
            .into_iter()
            .filter(|(age, _)| *age <= HOUR + SNAPSHOT_EVERY)
            .filter_map(|(age, s)| now.checked_sub(age).map(|t| (t, s)))
            .collect();
        kept.sort_by_key(|(t, _)| *t);
        if let Some(reset) = kept.iter().rposition(|(_, s)| !below(s, current)) {
            kept.drain(..=reset);
        }
        for (t, s) in kept.into_iter().rev() {
            if self.snapshots.front().is_none_or(|(first, _)| t < *first) {
                self.snapshots.push_front((t, s));
            }
        }
        self.drop_old(now);
    }

    fn drop_old(&mut self, now: Instant) {
        while self
            .snapshots
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > HOUR + SNAPSHOT_EVERY)
        {
            self.snapshots.pop_front();
        }
    }

    /// Every probed port: totals, what the last hour added (since the oldest
    /// snapshot at most an hour old), and whether it is open.
    pub(crate) fn report(
        &self,
        now: Instant,
        current: &[PortHits],
        open: &BTreeSet<(u8, u16)>,
    ) -> Vec<PortHit> {
        let (base, last_hour_s) = self
            .snapshots
            .iter()
            .find(|(t, _)| now.duration_since(*t) <= HOUR)
            .map_or((None, 0), |(t, s)| {
                (Some(s), now.duration_since(*t).as_secs())
            });
        sparse(current)
            .into_iter()
            .map(|(index, hits)| {
                let before = base
                    .and_then(|s| {
                        s.binary_search_by_key(&index, |(i, _)| *i)
                            .ok()
                            .map(|i| s[i].1)
                    })
                    .unwrap_or_default();
                let (proto, port) = port_of_hits_index(index);
                PortHit {
                    proto,
                    port,
                    probes: hits.probes,
                    sources: hits.sources,
                    probes_last_hour: hits.probes.saturating_sub(before.probes),
                    sources_last_hour: hits.sources.saturating_sub(before.sources),
                    last_hour_s,
                    open: open.contains(&(proto, port)),
                }
            })
            .collect()
    }
}

/// Whether every count of `snapshot` is at most what `current` holds:
/// counts only grow while the map lives.
fn below(snapshot: &Snapshot, current: &[PortHits]) -> bool {
    snapshot.iter().all(|(i, h)| {
        current
            .get(*i as usize)
            .is_some_and(|c| c.probes >= h.probes && c.sources >= h.sources)
    })
}

fn sparse(current: &[PortHits]) -> Snapshot {
    current
        .iter()
        .enumerate()
        .filter(|(_, h)| h.probes != 0)
        .map(|(i, h)| (i as u32, *h))
        .collect()
}

/// The most probed ports first (then by protocol and port), at most `n`.
pub(crate) fn most_probed(mut hits: Vec<PortHit>, n: usize) -> Vec<PortHit> {
    hits.sort_by(|a, b| {
        b.probes
            .cmp(&a.probes)
            .then((a.proto, a.port).cmp(&(b.proto, b.port)))
    });
    hits.truncate(n);
    hits
}

#[cfg(test)]
mod tests {
    use scanner_common::port_hits_index;

    use super::*;

    fn table(entries: &[(u8, u16, u64, u64)]) -> Vec<PortHits> {
        let mut t = vec![PortHits::default(); 131_072];
        for &(proto, port, probes, sources) in entries {
            t[port_hits_index(proto, port) as usize] = PortHits { probes, sources };
        }
        t
    }

    #[test]
    fn the_last_hour_is_the_growth_since_an_hour_ago() {
        let t0 = Instant::now();
        let mut h = PortHistory::default();
        h.record(t0, &table(&[(6, 22, 10, 2)]));
        h.record(t0 + Duration::from_secs(60), &table(&[(6, 22, 11, 2)]));
        assert_eq!(h.snapshots.len(), 1, "not due yet");
        let later = t0 + Duration::from_secs(30 * 60);
        h.record(later, &table(&[(6, 22, 50, 5)]));
        let now = table(&[(6, 22, 70, 6), (17, 53, 4, 1)]);
        let open = BTreeSet::from([(6, 22)]);
        let r = h.report(t0 + Duration::from_secs(40 * 60), &now, &open);
        let ssh = r.iter().find(|x| x.port == 22).copied().unwrap_or_default();
        assert_eq!((ssh.probes, ssh.probes_last_hour), (70, 60));
        assert_eq!((ssh.sources, ssh.sources_last_hour), (6, 4));
        assert!(ssh.open);
        let dns = r.iter().find(|x| x.port == 53).copied().unwrap_or_default();
        assert_eq!((dns.proto, dns.probes_last_hour, dns.open), (17, 4, false));
        // 70 minutes on, the first snapshot is past the hour: the base is the
        // one taken at 30 minutes.
        let r = h.report(t0 + Duration::from_secs(70 * 60), &now, &open);
        let ssh = r.iter().find(|x| x.port == 22).copied().unwrap_or_default();
        assert_eq!(ssh.probes_last_hour, 20);
    }

    #[test]
    fn a_restart_takes_back_the_last_hour() {
        let now = Instant::now();
        let current = table(&[(6, 22, 100, 10)]);
        let kept = |age_min: u64, probes| {
            (
                Duration::from_secs(age_min * 60),
                sparse(&table(&[(6, 22, probes, 1)])),
            )
        };
        let mut h = PortHistory::default();
        // Kept by the last daemon 80, 55 and 35 minutes ago: the base is
        // the one 55 minutes old, the 80-minute one is past the hour.
        h.restore(
            now,
            vec![kept(35, 90), kept(80, 10), kept(55, 40)],
            &current,
        );
        assert!(h.record(now, &current).is_some(), "its own snapshot too");
        let ssh = h.report(now, &current, &BTreeSet::new())[0];
        assert_eq!((ssh.probes_last_hour, ssh.last_hour_s), (60, 55 * 60));
        // A snapshot with more probes than there are now is from counts
        // since made anew: it and everything older are no base.
        let mut h = PortHistory::default();
        h.restore(
            now,
            vec![kept(50, 20), kept(40, 500), kept(30, 95)],
            &current,
        );
        h.record(now, &current);
        let ssh = h.report(now, &current, &BTreeSet::new())[0];
        assert_eq!((ssh.probes_last_hour, ssh.last_hour_s), (5, 30 * 60));
        // Nothing kept: the hour covers what this daemon saw.
        let mut h = PortHistory::default();
        h.record(now, &current);
        let later = now + Duration::from_secs(600);
        let ssh = h.report(later, &current, &BTreeSet::new())[0];
        assert_eq!((ssh.probes_last_hour, ssh.last_hour_s), (0, 600));
    }

    #[test]
    fn old_snapshots_are_dropped() {
        let t0 = Instant::now();
        let mut h = PortHistory::default();
        for minute in (0..200).step_by(5) {
            h.record(
                t0 + Duration::from_secs(minute * 60),
                &table(&[(6, 80, minute, 1)]),
            );
        }
        assert!(h.snapshots.len() <= 14, "{}", h.snapshots.len());
    }

    #[test]
    fn most_probed_comes_first() {
        let hit = |port, probes| PortHit {
            proto: 6,
            port,
            probes,
            ..PortHit::default()
        };
        let top = most_probed(vec![hit(80, 3), hit(22, 9), hit(21, 3)], 2);
        assert_eq!(top.iter().map(|h| h.port).collect::<Vec<_>>(), [22, 21]);
    }
}
