//! Which sources are scanning. Pure logic over map snapshots: no I/O, no
//! clock, so it is unit-tested without root.
//!
//! The initial rule: a source that probes at least `min_ports` distinct ports
//! within one fan-out window (the kernel restarts windows) is a scanner. A
//! detected scan is reported once when it crosses the rule, and once more,
//! with its totals, when its source has been quiet for `quiet_ns`, starts a
//! new window, or is evicted from the map.

use std::collections::HashMap;

use scanner_common::{
    CLASS_ACK, CLASS_COUNT, CLASS_FIN, CLASS_NULL, CLASS_SYN, CLASS_UDP, CLASS_XMAS, SourceKey,
    SourceStats,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Distinct ports within a window that make a source a scanner.
    pub min_ports: u32,
    /// Quiet time after which a detected scan is reported as ended.
    pub quiet_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanKind {
    Syn,
    Fin,
    Null,
    Xmas,
    Ack,
    Udp,
    Mixed,
}

impl ScanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syn => "syn",
            Self::Fin => "fin",
            Self::Null => "null",
            Self::Xmas => "xmas",
            Self::Ack => "ack",
            Self::Udp => "udp",
            Self::Mixed => "mixed",
        }
    }
}

/// The kind of scan: the class that makes up at least two thirds of the
/// window's packets, or `Mixed`.
pub fn kind_of(classes: &[u32; CLASS_COUNT]) -> ScanKind {
    let total: u64 = classes.iter().map(|&c| u64::from(c)).sum();
    let named = [
        (CLASS_SYN, ScanKind::Syn),
        (CLASS_FIN, ScanKind::Fin),
        (CLASS_NULL, ScanKind::Null),
        (CLASS_XMAS, ScanKind::Xmas),
        (CLASS_ACK, ScanKind::Ack),
        (CLASS_UDP, ScanKind::Udp),
    ];
    named
        .into_iter()
        .find(|&(class, _)| total > 0 && u64::from(classes[class]) * 3 >= total * 2)
        .map_or(ScanKind::Mixed, |(_, kind)| kind)
}

/// Something to report about a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// The source just crossed the rule.
    Detected {
        source: SourceKey,
        stats: SourceStats,
    },
    /// A detected scan is over; `stats` are its final figures.
    Ended {
        source: SourceKey,
        stats: SourceStats,
    },
}

#[derive(Debug, Clone, Copy)]
struct Scan {
    window_start_ns: u64,
    last: SourceStats,
    ended: bool,
}

/// Remembers detected scans between polls, so each is reported once.
#[derive(Debug)]
pub struct Detector {
    rule: Rule,
    scans: HashMap<SourceKey, Scan>,
}

impl Detector {
    pub fn new(rule: Rule) -> Self {
        Self {
            rule,
            scans: HashMap::new(),
        }
    }

    /// Number of scans currently remembered (detected and not yet forgotten).
    pub fn active(&self) -> usize {
        self.scans.values().filter(|s| !s.ended).count()
    }

    /// Takes one snapshot of the sources map (all of it: sources missing from
    /// it were evicted) at monotonic time `now_ns`.
    pub fn poll(&mut self, now_ns: u64, sources: &[(SourceKey, SourceStats)]) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut present = std::collections::HashSet::with_capacity(self.scans.len());
        for (source, stats) in sources {
            self.observe(now_ns, *source, stats, &mut out);
            if self.scans.contains_key(source) {
                present.insert(*source);
            }
        }
        // Evicted sources: their last figures are all there is.
        self.scans.retain(|source, scan| {
            if present.contains(source) {
                return true;
            }
            if !scan.ended {
                out.push(Finding::Ended {
                    source: *source,
                    stats: scan.last,
                });
            }
            false
        });
        out
    }

    /// Ends every scan still running (the daemon is stopping).
    pub fn finish(&mut self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self
            .scans
            .drain()
            .filter(|(_, scan)| !scan.ended)
            .map(|(source, scan)| Finding::Ended {
                source,
                stats: scan.last,
            })
            .collect();
        out.sort_by_key(|f| match f {
            Finding::Detected { source, .. } | Finding::Ended { source, .. } => *source,
        });
        out
    }

    fn observe(
        &mut self,
        now_ns: u64,
        source: SourceKey,
        stats: &SourceStats,
        out: &mut Vec<Finding>,
    ) {
        if let Some(scan) = self.scans.get(&source)
            && scan.window_start_ns != stats.window_start_ns
        {
            // A new window: the previous scan is over.
            if !scan.ended {
                out.push(Finding::Ended {
                    source,
                    stats: scan.last,
                });
            }
            self.scans.remove(&source);
        }
        let scan = match self.scans.get_mut(&source) {
            Some(scan) => {
                scan.last = *stats;
                scan
            }
            None if stats.distinct_ports >= self.rule.min_ports => {
                out.push(Finding::Detected {
                    source,
                    stats: *stats,
                });
                self.scans.entry(source).or_insert(Scan {
                    window_start_ns: stats.window_start_ns,
                    last: *stats,
                    ended: false,
                })
            }
            None => return,
        };
        if !scan.ended && now_ns.saturating_sub(stats.last_probe_ns) >= self.rule.quiet_ns {
            scan.ended = true;
            out.push(Finding::Ended {
                source,
                stats: *stats,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use scanner_common::CLASS_OTHER_TCP;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn rule() -> Rule {
        Rule {
            min_ports: 20,
            quiet_ns: 10 * S,
        }
    }

    fn src(last: u8) -> SourceKey {
        SourceKey::from_v4([198, 18, 0, last])
    }

    fn stats(window: u64, ports: u32, last_probe: u64) -> SourceStats {
        let mut s = SourceStats::new(window, 1);
        s.distinct_ports = ports;
        s.probes = ports;
        s.classes[CLASS_SYN] = ports;
        s.last_probe_ns = last_probe;
        s
    }

    #[test]
    fn below_the_rule_nothing_is_reported() {
        let mut d = Detector::new(rule());
        assert!(d.poll(S, &[(src(1), stats(0, 19, S))]).is_empty());
        assert_eq!(d.active(), 0);
    }

    #[test]
    fn a_scan_is_detected_once_then_ends_when_quiet() {
        let mut d = Detector::new(rule());
        let f = d.poll(S, &[(src(1), stats(0, 20, S))]);
        assert!(matches!(f[..], [Finding::Detected { stats, .. }] if stats.distinct_ports == 20));
        // Still growing: no second detection.
        assert!(d.poll(2 * S, &[(src(1), stats(0, 500, 2 * S))]).is_empty());
        assert_eq!(d.active(), 1);
        // Quiet long enough: ended, with the final figures.
        let f = d.poll(13 * S, &[(src(1), stats(0, 1000, 3 * S))]);
        assert!(matches!(f[..], [Finding::Ended { stats, .. }] if stats.distinct_ports == 1000));
        // And never again for the same window.
        assert!(
            d.poll(30 * S, &[(src(1), stats(0, 1000, 3 * S))])
                .is_empty()
        );
        assert_eq!(d.active(), 0);
    }

    #[test]
    fn a_fast_scan_can_start_and_end_in_one_poll() {
        let mut d = Detector::new(rule());
        let f = d.poll(20 * S, &[(src(1), stats(0, 1000, 5 * S))]);
        assert!(matches!(
            f[..],
            [Finding::Detected { .. }, Finding::Ended { .. }]
        ));
    }

    #[test]
    fn a_new_window_ends_the_old_scan_and_can_detect_again() {
        let mut d = Detector::new(rule());
        d.poll(S, &[(src(1), stats(0, 30, S))]);
        let f = d.poll(61 * S, &[(src(1), stats(61 * S, 25, 61 * S))]);
        assert!(matches!(
            f[..],
            [Finding::Ended { stats: a, .. }, Finding::Detected { stats: b, .. }]
                if a.distinct_ports == 30 && b.distinct_ports == 25
        ));
    }

    #[test]
    fn an_evicted_scan_ends_with_its_last_figures() {
        let mut d = Detector::new(rule());
        d.poll(S, &[(src(1), stats(0, 40, S)), (src(2), stats(0, 3, S))]);
        let f = d.poll(2 * S, &[(src(2), stats(0, 3, S))]);
        assert!(matches!(
            f[..],
            [Finding::Ended { source, stats }] if source == src(1) && stats.distinct_ports == 40
        ));
        assert_eq!(d.active(), 0);
    }

    #[test]
    fn finish_ends_running_scans() {
        let mut d = Detector::new(rule());
        d.poll(S, &[(src(2), stats(0, 40, S)), (src(1), stats(0, 50, S))]);
        let f = d.finish();
        assert_eq!(f.len(), 2);
        assert!(matches!(f[0], Finding::Ended { source, .. } if source == src(1)));
        assert!(d.finish().is_empty());
    }

    #[test]
    fn kinds_follow_the_dominant_class() {
        let mut c = [0u32; CLASS_COUNT];
        assert_eq!(kind_of(&c), ScanKind::Mixed);
        c[CLASS_SYN] = 1000;
        c[CLASS_OTHER_TCP] = 20; // RSTs to the open ports of a SYN scan
        assert_eq!(kind_of(&c), ScanKind::Syn);
        let mut c = [0u32; CLASS_COUNT];
        c[CLASS_UDP] = 10;
        assert_eq!(kind_of(&c), ScanKind::Udp);
        c[CLASS_FIN] = 10;
        assert_eq!(kind_of(&c), ScanKind::Mixed);
        for (class, kind) in [
            (CLASS_FIN, ScanKind::Fin),
            (CLASS_NULL, ScanKind::Null),
            (CLASS_XMAS, ScanKind::Xmas),
            (CLASS_ACK, ScanKind::Ack),
        ] {
            let mut c = [0u32; CLASS_COUNT];
            c[class] = 7;
            assert_eq!(kind_of(&c), kind);
        }
    }
}
