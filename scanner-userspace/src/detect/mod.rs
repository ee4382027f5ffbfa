//! Which entries are scanning, and when their scans end. Pure logic over map
//! snapshots: no I/O, no clock, so it is unit-tested without root.
//!
//! The kernel decides (Threshold Random Walk or fan-out) and stamps
//! `decided_ns`; a ring buffer record announces it at once, and every poll
//! sees it too, so a decision is never missed. This module reports each
//! decision once, then reports the scan as ended, with its totals, when its
//! source has been quiet for `quiet_ns`, is evicted, starts a new life, or
//! the daemon stops. A scan that resumes after ending is reported again.

pub(crate) mod decoy;
pub(crate) mod hits;
pub(crate) mod slow;
pub(crate) mod trw;

use std::collections::{HashMap, HashSet};

use scanner_common::{SourceKey, SourceStats, class, scope};

/// A tracked entry: a source address, or a prefix of sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId {
    /// `scope::SOURCE` or `scope::PREFIX`.
    pub scope: u8,
    pub key: SourceKey,
}

crate::named::named! {
    /// What kind of scan: the `kind` of events and `scanner list`.
    pub(crate) enum ScanKind {
        Syn = "syn",
        Connect = "connect",
        Fin = "fin",
        Null = "null",
        Xmas = "xmas",
        Maimon = "maimon",
        Ack = "ack",
        Udp = "udp",
        /// First fragments that split their transport header (nmap `-f`).
        Fragmented = "fragmented",
        /// SCTP INIT probes (nmap `-sY`).
        SctpInit = "sctp-init",
        /// SCTP COOKIE ECHO probes (nmap `-sZ`).
        SctpCookieEcho = "sctp-cookie-echo",
        /// Packets of many IP protocols (nmap `-sO`).
        IpProtocol = "ip-protocol",
        /// TCP flag sets no stack sends (nmap `--scanflags SYNFIN`, ...).
        InvalidFlags = "invalid-flags",
        Mixed = "mixed",
        Distributed = "distributed",
        /// Decided by the long memory over days (`memory`), not the kernel.
        Slow = "slow",
    }
}

/// The kind of scan: `Distributed` for a prefix; otherwise the class of at
/// least two thirds of the packets (SYNs split into raw-packet `Syn` and
/// operating-system `Connect`), else `Mixed`. "Other" TCP packets (RSTs,
/// SYN-ACKs, data) answer rather than probe, and do not count: scanners
/// reset the half-open connections they leave.
pub(crate) fn kind_of(scope: u8, s: &SourceStats) -> ScanKind {
    if scope == scope::PREFIX {
        return ScanKind::Distributed;
    }
    let total: u64 = s
        .classes
        .iter()
        .enumerate()
        .filter(|&(class, _)| class != class::OTHER_TCP)
        .map(|(_, &c)| u64::from(c))
        .sum();
    let named = [
        (class::SYN, ScanKind::Syn),
        (class::FIN, ScanKind::Fin),
        (class::NULL, ScanKind::Null),
        (class::XMAS, ScanKind::Xmas),
        (class::MAIMON, ScanKind::Maimon),
        (class::ACK, ScanKind::Ack),
        (class::UDP, ScanKind::Udp),
        (class::FRAGMENTED, ScanKind::Fragmented),
        (class::SCTP_INIT, ScanKind::SctpInit),
        (class::SCTP_COOKIE, ScanKind::SctpCookieEcho),
        (class::PROTOCOL, ScanKind::IpProtocol),
        (class::INVALID_FLAGS, ScanKind::InvalidFlags),
    ];
    let dominant = named
        .into_iter()
        .find(|&(class, _)| total > 0 && u64::from(s.classes[class]) * 3 >= total * 2)
        .map_or(ScanKind::Mixed, |(_, kind)| kind);
    if dominant == ScanKind::Syn && u64::from(s.stack_syns) * 2 > u64::from(s.classes[class::SYN]) {
        return ScanKind::Connect;
    }
    dominant
}

/// Something to report about an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finding {
    /// The kernel decided this entry is scanning (or it resumed after
    /// ending). `since_ns`: the probe this detection stands for, which its
    /// latency is measured from: the deciding probe, or for a resumed scan
    /// the latest probe, the one that showed it resumed.
    Detected {
        id: EntryId,
        stats: SourceStats,
        since_ns: u64,
    },
    /// A detected scan is over; `stats` are its final figures.
    Ended { id: EntryId, stats: SourceStats },
}

#[derive(Debug, Clone, Copy)]
struct Scan {
    decided_ns: u64,
    last: SourceStats,
    ended: bool,
}

/// Remembers detected scans between polls, so each is reported once.
#[derive(Debug)]
pub(crate) struct Detector {
    quiet_ns: u64,
    scans: HashMap<EntryId, Scan>,
}

impl Detector {
    /// Changes the quiet time that ends a scan (a configuration reload).
    pub(crate) fn set_quiet_ns(&mut self, quiet_ns: u64) {
        self.quiet_ns = quiet_ns;
    }

    pub(crate) fn new(quiet_ns: u64) -> Self {
        Self {
            quiet_ns,
            scans: HashMap::new(),
        }
    }

    /// Takes over the scans an earlier daemon reported: entries decided at
    /// or before `reported_ns` are remembered without a `Detected` finding
    /// (and as ended when they were already quiet then, or when a clean
    /// stop reported them ended: decided at or before `ended_ns`). Later
    /// decisions are left for the next poll to report. Returns how many
    /// were resumed.
    pub(crate) fn resume(
        &mut self,
        reported_ns: u64,
        ended_ns: u64,
        entries: &[(EntryId, SourceStats)],
    ) -> usize {
        let mut resumed = 0;
        for (id, stats) in entries {
            if stats.decided_ns == 0 || stats.decided_ns > reported_ns {
                continue;
            }
            let ended = stats.decided_ns <= ended_ns
                || stats.last_probe_ns.saturating_add(self.quiet_ns) <= reported_ns;
            self.scans.insert(
                *id,
                Scan {
                    decided_ns: stats.decided_ns,
                    last: *stats,
                    ended,
                },
            );
            resumed += 1;
        }
        resumed
    }

    /// Every entry with a scan remembered: what a poll between full scans
    /// looks up.
    pub(crate) fn ids(&self) -> Vec<EntryId> {
        self.scans.keys().copied().collect()
    }

    /// Whether the scan of `id` was detected and has ended (quiet since).
    pub(crate) fn has_ended(&self, id: &EntryId) -> bool {
        self.scans.get(id).is_some_and(|s| s.ended)
    }

    /// Scans detected and not yet ended.
    pub(crate) fn active(&self) -> usize {
        self.scans.values().filter(|s| !s.ended).count()
    }

    /// One entry, as read after a ring buffer decision.
    pub(crate) fn observe(
        &mut self,
        now_ns: u64,
        id: EntryId,
        stats: &SourceStats,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        self.observe_into(now_ns, id, stats, &mut out);
        out
    }

    /// A whole snapshot of the maps: entries missing from it were evicted.
    pub(crate) fn poll(&mut self, now_ns: u64, entries: &[(EntryId, SourceStats)]) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut present = HashSet::with_capacity(self.scans.len());
        for (id, stats) in entries {
            self.observe_into(now_ns, *id, stats, &mut out);
            if self.scans.contains_key(id) {
                present.insert(*id);
            }
        }
        self.scans.retain(|id, scan| {
            if present.contains(id) {
                return true;
            }
            if !scan.ended {
                out.push(Finding::Ended {
                    id: *id,
                    stats: scan.last,
                });
            }
            false
        });
        out
    }

    /// Ends every scan still running (the daemon is stopping).
    pub(crate) fn finish(&mut self) -> Vec<Finding> {
        let mut out: Vec<(EntryId, SourceStats)> = self
            .scans
            .drain()
            .filter(|(_, scan)| !scan.ended)
            .map(|(id, scan)| (id, scan.last))
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out.into_iter()
            .map(|(id, stats)| Finding::Ended { id, stats })
            .collect()
    }

    fn observe_into(
        &mut self,
        now_ns: u64,
        id: EntryId,
        stats: &SourceStats,
        out: &mut Vec<Finding>,
    ) {
        if let Some(scan) = self.scans.get(&id)
            && scan.decided_ns != stats.decided_ns
        {
            // A new life (idle timeout) or another decision: the old scan is over.
            if !scan.ended {
                out.push(Finding::Ended {
                    id,
                    stats: scan.last,
                });
            }
            self.scans.remove(&id);
        }
        if stats.decided_ns == 0 {
            return;
        }
        let scan = match self.scans.get_mut(&id) {
            Some(scan) => {
                // A source the kernel blocked that probes on once its
                // block lapsed is blocked again by the kernel: the same
                // scan, reported as a block, not as a new detection.
                if scan.ended && stats.last_probe_ns > scan.last.last_probe_ns && stats.blocked == 0
                {
                    scan.ended = false;
                    out.push(Finding::Detected {
                        id,
                        stats: *stats,
                        since_ns: stats.last_probe_ns,
                    });
                }
                scan.last = *stats;
                scan
            }
            None => {
                out.push(Finding::Detected {
                    id,
                    stats: *stats,
                    since_ns: stats.decided_ns,
                });
                self.scans.entry(id).or_insert(Scan {
                    decided_ns: stats.decided_ns,
                    last: *stats,
                    ended: false,
                })
            }
        };
        if !scan.ended && now_ns.saturating_sub(stats.last_probe_ns) >= self.quiet_ns {
            scan.ended = true;
            out.push(Finding::Ended { id, stats: *stats });
        }
    }
}

#[cfg(test)]
mod tests {
    use scanner_common::scope;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn id(last: u8) -> EntryId {
        EntryId {
            scope: scope::SOURCE,
            key: SourceKey::from_v4([198, 18, 0, last]),
        }
    }

    /// A source decided at `decided` (0: undecided) that probed `ports` ports.
    fn stats(decided: u64, ports: u32, last_probe: u64) -> SourceStats {
        let mut s = SourceStats::new(1, 1);
        s.decided_ns = decided;
        s.ports = ports;
        s.probes = ports;
        s.classes[class::SYN] = ports;
        s.last_probe_ns = last_probe;
        s
    }

    #[test]
    fn undecided_entries_are_not_reported() {
        let mut d = Detector::new(10 * S);
        assert!(d.poll(S, &[(id(1), stats(0, 3, S))]).is_empty());
        assert_eq!(d.active(), 0);
    }

    #[test]
    fn a_decision_is_reported_once_then_ends_when_quiet() {
        let mut d = Detector::new(10 * S);
        let f = d.observe(S, id(1), &stats(S, 4, S));
        assert!(matches!(f[..], [Finding::Detected { stats, .. }] if stats.ports == 4));
        // The poll that follows sees the same decision: nothing new.
        assert!(d.poll(2 * S, &[(id(1), stats(S, 500, 2 * S))]).is_empty());
        assert_eq!(d.active(), 1);
        let f = d.poll(13 * S, &[(id(1), stats(S, 1000, 3 * S))]);
        assert!(matches!(f[..], [Finding::Ended { stats, .. }] if stats.ports == 1000));
        assert!(d.poll(30 * S, &[(id(1), stats(S, 1000, 3 * S))]).is_empty());
        assert_eq!(d.active(), 0);
    }

    #[test]
    fn a_poll_catches_a_decision_the_ring_buffer_lost() {
        let mut d = Detector::new(10 * S);
        let f = d.poll(
            2 * S,
            &[(id(1), stats(S, 40, 2 * S)), (id(2), stats(0, 2, S))],
        );
        assert!(matches!(f[..], [Finding::Detected { id: i, .. }] if i == id(1)));
    }

    #[test]
    fn a_fast_scan_can_start_and_end_in_one_poll() {
        let mut d = Detector::new(10 * S);
        let f = d.poll(20 * S, &[(id(1), stats(S, 1000, 5 * S))]);
        assert!(matches!(
            f[..],
            [Finding::Detected { .. }, Finding::Ended { .. }]
        ));
    }

    #[test]
    fn a_resumed_scan_is_reported_again() {
        let mut d = Detector::new(10 * S);
        d.poll(20 * S, &[(id(1), stats(S, 10, 5 * S))]);
        let f = d.poll(40 * S, &[(id(1), stats(S, 12, 39 * S))]);
        // Its latency runs from the probe that showed it resumed, not from
        // the decision half a minute before.
        assert!(
            matches!(f[..], [Finding::Detected { stats, since_ns, .. }] if stats.ports == 12 && since_ns == 39 * S),
            "{f:?}"
        );
    }

    #[test]
    fn a_decision_is_measured_from_its_deciding_probe() {
        let mut d = Detector::new(10 * S);
        let f = d.observe(3 * S, id(1), &stats(2 * S, 4, 3 * S));
        assert!(matches!(f[..], [Finding::Detected { since_ns, .. }] if since_ns == 2 * S));
    }

    #[test]
    fn a_blocked_scan_that_carries_on_past_its_block_is_one_scan() {
        let mut d = Detector::new(10 * S);
        let mut blocked = stats(S, 4, S);
        blocked.blocked = 1;
        assert_eq!(d.observe(S, id(1), &blocked).len(), 1);
        // Quiet while blocked (its probes are dropped before they count).
        let f = d.poll(20 * S, &[(id(1), blocked)]);
        assert!(matches!(f[..], [Finding::Ended { .. }]), "{f:?}");
        // The block lapsed, it probed on and the kernel blocked it again:
        // no second detection.
        let mut carried_on = stats(S, 9, 45 * S);
        carried_on.blocked = 1;
        assert!(d.poll(46 * S, &[(id(1), carried_on)]).is_empty());
        assert_eq!(d.active(), 0);
    }

    #[test]
    fn a_new_life_ends_the_old_scan() {
        let mut d = Detector::new(100 * S);
        d.poll(S, &[(id(1), stats(S, 30, S))]);
        let f = d.poll(5000 * S, &[(id(1), stats(0, 1, 5000 * S))]);
        assert!(matches!(f[..], [Finding::Ended { stats, .. }] if stats.ports == 30));
        assert_eq!(d.active(), 0);
    }

    #[test]
    fn an_evicted_scan_ends_with_its_last_figures() {
        let mut d = Detector::new(10 * S);
        d.poll(S, &[(id(1), stats(S, 40, S)), (id(2), stats(0, 3, S))]);
        let f = d.poll(2 * S, &[(id(2), stats(0, 3, S))]);
        assert!(matches!(
            f[..],
            [Finding::Ended { id: i, stats }] if i == id(1) && stats.ports == 40
        ));
    }

    #[test]
    fn finish_ends_running_scans_in_order() {
        let mut d = Detector::new(10 * S);
        d.poll(S, &[(id(2), stats(S, 40, S)), (id(1), stats(S, 50, S))]);
        let f = d.finish();
        assert_eq!(f.len(), 2);
        assert!(matches!(f[0], Finding::Ended { id: i, .. } if i == id(1)));
        assert!(d.finish().is_empty());
    }

    #[test]
    fn a_restart_resumes_what_was_reported_and_reports_what_was_not() {
        let mut d = Detector::new(10 * S);
        // Reported up to 100 s: id(1) decided before (still probing),
        // id(2) decided and quiet before, id(3) decided after (while no
        // daemon was reading).
        let entries = [
            (id(1), stats(50 * S, 30, 115 * S)),
            (id(2), stats(20 * S, 8, 21 * S)),
            (id(3), stats(120 * S, 5, 121 * S)),
        ];
        assert_eq!(d.resume(100 * S, 0, &entries), 2);
        assert_eq!(d.active(), 1, "id(2) had ended already");
        let f = d.poll(122 * S, &entries);
        assert!(
            matches!(f[..], [Finding::Detected { id: i, .. }] if i == id(3)),
            "only the unreported decision: {f:?}"
        );
        // The resumed running scan still ends, once.
        let f = d.poll(130 * S, &entries);
        let ended: Vec<EntryId> = f
            .iter()
            .filter_map(|f| match f {
                Finding::Ended { id, .. } => Some(*id),
                Finding::Detected { .. } => None,
            })
            .collect();
        assert_eq!(ended, [id(1)], "{f:?}");
    }

    #[test]
    fn a_scan_a_clean_stop_ended_is_not_ended_again() {
        let mut d = Detector::new(10 * S);
        // Still probing at 95 s when the daemon stopped cleanly at 100 s
        // (reporting it ended); the next daemon starts at 101 s.
        let entries = [(id(1), stats(50 * S, 30, 95 * S))];
        assert_eq!(d.resume(100 * S, 100 * S, &entries), 1);
        assert_eq!(d.active(), 0);
        assert!(d.poll(130 * S, &entries).is_empty(), "ended twice");
        // A scan decided after that stop is not affected.
        let mut d = Detector::new(10 * S);
        d.resume(100 * S, 40 * S, &entries);
        assert!(matches!(
            d.poll(130 * S, &entries)[..],
            [Finding::Ended { .. }]
        ));
    }

    #[test]
    fn kinds_follow_the_dominant_class() {
        let with = |class: usize, n: u32| {
            let mut s = SourceStats::default();
            s.classes[class] = n;
            s
        };
        assert_eq!(
            kind_of(scope::SOURCE, &SourceStats::default()),
            ScanKind::Mixed
        );
        let mut syn = with(class::SYN, 1000);
        syn.classes[class::OTHER_TCP] = 900; // RSTs (masscan resets a lot)
        assert_eq!(kind_of(scope::SOURCE, &syn), ScanKind::Syn);
        syn.stack_syns = 1000;
        assert_eq!(kind_of(scope::SOURCE, &syn), ScanKind::Connect);
        let mut mixed = with(class::UDP, 10);
        mixed.classes[class::FIN] = 10;
        assert_eq!(kind_of(scope::SOURCE, &mixed), ScanKind::Mixed);
        for (class, kind) in [
            (class::FIN, ScanKind::Fin),
            (class::NULL, ScanKind::Null),
            (class::XMAS, ScanKind::Xmas),
            (class::MAIMON, ScanKind::Maimon),
            (class::ACK, ScanKind::Ack),
            (class::UDP, ScanKind::Udp),
            (class::FRAGMENTED, ScanKind::Fragmented),
            (class::SCTP_INIT, ScanKind::SctpInit),
            (class::SCTP_COOKIE, ScanKind::SctpCookieEcho),
            (class::PROTOCOL, ScanKind::IpProtocol),
            (class::INVALID_FLAGS, ScanKind::InvalidFlags),
        ] {
            assert_eq!(kind_of(scope::SOURCE, &with(class, 7)), kind);
        }
        assert_eq!(
            kind_of(scope::PREFIX, &with(class::SYN, 7)),
            ScanKind::Distributed
        );
    }
}
