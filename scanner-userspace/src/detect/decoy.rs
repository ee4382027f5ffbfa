//! Decoy groups: one scan sent from several addresses at once.
//!
//! nmap `-D` sends every probe from each decoy address and from the real
//! one, back to back, so all of them probe the same ports in the same order
//! within the same second, and the kernel decides all of them at the same
//! probe. Reported one by one they look like N scans, and the operator
//! cannot tell that N-1 of the addresses were only borrowed. Sources that
//! probed the same ports, in the same order, starting within one second of
//! each other, are one group: each member's events list the whole group.
//!
//! A detection is held back while an undecided source in the kernel's maps
//! matches it (a member whose deciding probe is a few microseconds behind),
//! at most [`SETTLE_NS`]; a detection nothing matches is reported at once.
//! Pure logic over map snapshots, unit-tested without root.

use std::collections::HashMap;

use scanner_common::{SAMPLE_PORTS, SourceKey, SourceStats};

use crate::detect::EntryId;

/// Members start probing within this much of each other ("the same second").
pub(crate) const WINDOW_NS: u64 = 1_000_000_000;
/// The longest a detection waits for the rest of its group.
pub(crate) const SETTLE_NS: u64 = 1_000_000_000;
/// Ports that must match, in order, before two sources count as one scan:
/// the fewest a decision needs (two stealth probes).
pub(crate) const MIN_SHARED_PORTS: usize = 2;
/// Reported members remembered to join later ones, and groups remembered
/// for `scanner list` (oldest forgotten first).
const REMEMBERED: usize = 4096;

/// Whether `a` and `b` probed the same ports in the same order, starting
/// within [`WINDOW_NS`] of each other.
pub(crate) fn same_scan(a: &SourceStats, b: &SourceStats) -> bool {
    let n = (a.ports.min(b.ports) as usize).min(SAMPLE_PORTS);
    n >= MIN_SHARED_PORTS
        && a.first_seen_ns.abs_diff(b.first_seen_ns) <= WINDOW_NS
        && a.sample_ports[..n] == b.sample_ports[..n]
}

/// A detection ready to report, with its decoy group (every member, this
/// one included, sorted) when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Released {
    pub id: EntryId,
    pub stats: SourceStats,
    /// The probe the detection stands for (see `Finding::Detected`).
    pub detected_ns: u64,
    pub group: Option<Vec<SourceKey>>,
    /// Another member of its group was reported before: the group is one
    /// scan, counted once.
    pub joined: bool,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    id: EntryId,
    stats: SourceStats,
    detected_ns: u64,
    since_ns: u64,
}

/// Source detections held for their group, and the groups found.
#[derive(Debug, Default)]
pub(crate) struct Decoys {
    held: Vec<Held>,
    /// Sources reported lately, oldest first: later members join them.
    reported: Vec<(SourceKey, SourceStats)>,
    /// When each of `reported` was decided, by source.
    reported_ns: HashMap<SourceKey, u64>,
    groups: HashMap<SourceKey, Vec<SourceKey>>,
}

impl Decoys {
    /// Holds a source's detection until its group is known.
    pub(crate) fn hold(&mut self, id: EntryId, stats: SourceStats, detected_ns: u64, now_ns: u64) {
        self.held.retain(|h| h.id != id);
        self.held.push(Held {
            id,
            stats,
            detected_ns,
            since_ns: now_ns,
        });
    }

    /// Whether detections are held (the caller then reads the undecided
    /// sources and calls [`Self::release`]).
    pub(crate) fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// When each held detection's source started probing.
    pub(crate) fn held_starts(&self) -> Vec<u64> {
        self.held.iter().map(|h| h.stats.first_seen_ns).collect()
    }

    /// When the earliest held detection was decided: the daemon's
    /// "reported up to" mark must stay before it.
    pub(crate) fn earliest_held_ns(&self) -> Option<u64> {
        self.held.iter().map(|h| h.stats.decided_ns).min()
    }

    pub(crate) fn is_held(&self, id: &EntryId) -> bool {
        self.held.iter().any(|h| h.id == *id)
    }

    /// The detections that are ready: no undecided source matches them, or
    /// they waited [`SETTLE_NS`], or `force` (the daemon is stopping, or
    /// the scan ended). `undecided`: the sources the kernel has not decided.
    pub(crate) fn release(
        &mut self,
        now_ns: u64,
        undecided: &[SourceStats],
        force: bool,
    ) -> Vec<Released> {
        let (ready, waiting): (Vec<Held>, Vec<Held>) = self.held.iter().partition(|h| {
            force
                || now_ns.saturating_sub(h.since_ns) >= SETTLE_NS
                || !undecided.iter().any(|u| same_scan(&h.stats, u))
        });
        self.held = waiting;
        let mut out = Vec::with_capacity(ready.len());
        for h in &ready {
            let mut members: Vec<SourceKey> = ready
                .iter()
                .chain(&self.held)
                .filter(|o| o.id != h.id && same_scan(&h.stats, &o.stats))
                .map(|o| o.id.key)
                .collect();
            let before: Vec<SourceKey> = self
                .reported
                .iter()
                .filter(|(k, s)| *k != h.id.key && same_scan(&h.stats, s))
                .map(|(k, _)| *k)
                .collect();
            let joined = !before.is_empty()
                || out
                    .iter()
                    .any(|r: &Released| r.group.as_ref().is_some_and(|g| g.contains(&h.id.key)));
            members.extend(before);
            let group = (!members.is_empty()).then(|| {
                members.push(h.id.key);
                members.sort_unstable();
                members.dedup();
                members
            });
            if let Some(g) = &group {
                self.remember_group(g);
            }
            out.push(Released {
                id: h.id,
                stats: h.stats,
                detected_ns: h.detected_ns,
                group,
                joined,
            });
        }
        for h in ready {
            self.reported.retain(|(k, _)| *k != h.id.key);
            if self.reported.len() >= REMEMBERED {
                let (oldest, _) = self.reported.remove(0);
                self.reported_ns.remove(&oldest);
            }
            self.reported.push((h.id.key, h.stats));
            self.reported_ns.insert(h.id.key, h.stats.decided_ns);
        }
        out
    }

    /// Whether `key`, admitted at `admitted_ns`, is known decided in that
    /// life: its detection is held, or was reported lately, and was
    /// decided since (a later life is admitted again, after the decision).
    pub(crate) fn decided_since(&self, key: &SourceKey, admitted_ns: u64) -> bool {
        let decided = self
            .held
            .iter()
            .find(|h| h.id.key == *key)
            .map(|h| h.stats.decided_ns)
            .or_else(|| self.reported_ns.get(key).copied());
        decided.is_some_and(|d| d >= admitted_ns)
    }

    /// The decoy group `key` was last reported in.
    pub(crate) fn group_of(&self, key: &SourceKey) -> Option<&[SourceKey]> {
        self.groups.get(key).map(Vec::as_slice)
    }

    fn remember_group(&mut self, group: &[SourceKey]) {
        if self.groups.len() >= REMEMBERED {
            self.groups.clear();
        }
        for key in group {
            self.groups.insert(*key, group.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use scanner_common::scope;

    use super::*;

    const MS: u64 = 1_000_000;

    fn id(last: u8) -> EntryId {
        EntryId {
            scope: scope::SOURCE,
            key: SourceKey::from_v4([198, 18, 0, last]),
        }
    }

    /// A source that started at `start` and probed `ports` in order.
    fn probed(start: u64, ports: &[u16], decided: bool) -> SourceStats {
        let mut s = SourceStats::new(start, 1);
        s.ports = ports.len() as u32;
        s.sample_ports[..ports.len()].copy_from_slice(ports);
        s.decided_ns = if decided { start + 10 * MS } else { 0 };
        s
    }

    const ORDER: [u16; 4] = [445, 23, 8080, 21];

    #[test]
    fn same_ports_same_order_same_second_is_one_scan() {
        let a = probed(100 * MS, &ORDER, true);
        assert!(same_scan(&a, &probed(100 * MS + 300, &ORDER, true)));
        // A member the kernel has not decided yet: one port behind.
        assert!(same_scan(&a, &probed(100 * MS, &ORDER[..3], false)));
        assert!(!same_scan(
            &a,
            &probed(100 * MS + 2 * WINDOW_NS, &ORDER, true)
        ));
        assert!(!same_scan(
            &a,
            &probed(100 * MS, &[445, 8080, 23, 21], true)
        ));
        assert!(
            !same_scan(&a, &probed(100 * MS, &ORDER[..1], false)),
            "one shared port is any two clients of one service"
        );
    }

    #[test]
    fn a_lone_scan_is_reported_at_once_without_a_group() {
        let mut d = Decoys::default();
        d.hold(id(1), probed(0, &ORDER, true), 0, MS);
        let unrelated = probed(0, &[22, 80], false);
        let r = d.release(MS, &[unrelated], false);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].id, &r[0].group, r[0].joined), (id(1), &None, false));
        assert!(!d.holding());
    }

    #[test]
    fn a_detection_waits_for_its_undecided_members_then_all_list_the_group() {
        let mut d = Decoys::default();
        // The first decoy is decided; the others are one probe behind.
        d.hold(id(6), probed(0, &ORDER, true), 0, MS);
        let behind = [probed(0, &ORDER[..3], false), probed(0, &ORDER[..3], false)];
        assert!(d.release(MS, &behind, false).is_empty(), "held");
        assert!(d.holding());
        // Both are decided now.
        d.hold(id(1), probed(0, &ORDER, true), 0, 2 * MS);
        d.hold(id(7), probed(0, &ORDER, true), 0, 2 * MS);
        let r = d.release(2 * MS, &[], false);
        let all = vec![id(1).key, id(6).key, id(7).key];
        assert_eq!(r.len(), 3);
        for released in &r {
            assert_eq!(released.group.as_ref(), Some(&all), "{released:?}");
        }
        assert_eq!(r.iter().filter(|r| !r.joined).count(), 1, "counted once");
        assert_eq!(d.group_of(&id(7).key), Some(&all[..]));
    }

    #[test]
    fn a_held_detection_is_reported_after_the_settle_time_anyway() {
        let mut d = Decoys::default();
        d.hold(id(1), probed(0, &ORDER, true), 0, MS);
        let stuck = [probed(0, &ORDER[..3], false)];
        assert!(d.release(MS + SETTLE_NS / 2, &stuck, false).is_empty());
        let r = d.release(MS + SETTLE_NS, &stuck, false);
        assert_eq!((r.len(), &r[0].group), (1, &None));
    }

    #[test]
    fn a_late_member_joins_the_group_reported_before() {
        let mut d = Decoys::default();
        d.hold(id(1), probed(0, &ORDER, true), 0, MS);
        d.hold(id(6), probed(0, &ORDER, true), 0, MS);
        assert_eq!(d.release(MS, &[], false).len(), 2);
        d.hold(id(7), probed(5 * MS, &ORDER, true), 0, 10 * MS);
        let r = d.release(10 * MS, &[], false);
        let all = vec![id(1).key, id(6).key, id(7).key];
        assert_eq!((r[0].group.as_ref(), r[0].joined), (Some(&all), true));
        assert_eq!(d.group_of(&id(1).key), Some(&all[..]));
    }

    #[test]
    fn forcing_releases_everything() {
        let mut d = Decoys::default();
        d.hold(id(1), probed(0, &ORDER, true), 0, MS);
        let stuck = [probed(0, &ORDER[..3], false)];
        assert_eq!(d.release(MS, &stuck, true).len(), 1);
        assert!(!d.holding());
    }
}
