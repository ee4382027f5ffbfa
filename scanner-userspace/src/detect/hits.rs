//! Probes per destination port over time: the kernel's PORT_HITS totals,
//! with snapshots kept so the daemon can say what the last hour added.

use std::{
    collections::{BTreeSet, VecDeque},
    time::{Duration, Instant},
};

use scanner_common::{PortHits, port_of_hits_index};
use serde::{Deserialize, Serialize};

/// Probes to one destination port, as the daemon reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortHit {
    pub proto: u8,
    pub port: u16,
    /// Probes since the counts began (they survive daemon restarts).
    pub probes: u64,
    /// Distinct probing sources since the counts began.
    pub sources: u64,
    pub probes_last_hour: u64,
    pub sources_last_hour: u64,
    /// A listener takes this port on an exposed address.
    pub open: bool,
}

/// How often a snapshot is kept: "the last hour" is exact to this much.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(300);
const HOUR: Duration = Duration::from_secs(3600);

/// Non-zero counts by PORT_HITS index, sorted by index.
type Snapshot = Vec<(u32, PortHits)>;

#[derive(Debug, Default)]
pub struct PortHistory {
    snapshots: VecDeque<(Instant, Snapshot)>,
}

impl PortHistory {
    /// Whether a snapshot is due (the last one is old enough, or none).
    pub fn due(&self, now: Instant) -> bool {
        self.snapshots
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= SNAPSHOT_EVERY)
    }

    /// Keeps a snapshot of `current` when one is due, and drops those no
    /// longer needed for the hour.
    pub fn record(&mut self, now: Instant, current: &[PortHits]) {
        if self.due(now) {
            self.snapshots.push_back((now, sparse(current)));
        }
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
    pub fn report(
        &self,
        now: Instant,
        current: &[PortHits],
        open: &BTreeSet<(u8, u16)>,
    ) -> Vec<PortHit> {
        let base = self
            .snapshots
            .iter()
            .find(|(t, _)| now.duration_since(*t) <= HOUR)
            .map(|(_, s)| s);
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
                    open: open.contains(&(proto, port)),
                }
            })
            .collect()
    }
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
pub fn most_probed(mut hits: Vec<PortHit>, n: usize) -> Vec<PortHit> {
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
