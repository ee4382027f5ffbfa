//! The slow-scan decision: the Threshold Random Walk of [`super::trw`], run
//! over a source's (or a prefix's) long record instead of the kernel's short
//! one. Pure logic over plain rows: the long memory (`crate::memory`) reads
//! the rows and calls this as new probes arrive.
//!
//! Each distinct (protocol, port) in the window is one trial, in the order
//! the ports were first probed: a closed port steps towards "scanner", an
//! open one towards "benign", the walk floors where H0 would be accepted and
//! decides at the upper threshold. The steps come from the same θ0 and θ1
//! as the kernel's, with a far smaller false-positive rate (the test runs
//! over a week, once per source the host sees): by default ten closed ports
//! net of open ones.
//!
//! A prefix is one actor when at least `min_addresses` of its addresses
//! probed: its trials are the distinct ports any of them probed (a port is
//! open when it was open to any), so a crawler that rotates addresses inside
//! its network walks the same way a single address would.

use super::trw::Steps;

/// One remembered (protocol, port) of a source or prefix, within the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortRecord {
    pub proto: u8,
    pub port: u16,
    /// The port was open when (any of) its probes came.
    pub open: bool,
    /// Unix milliseconds of its first and latest probe.
    pub first_ms: i64,
    pub last_ms: i64,
    /// Probes of it (the kernel's first-probe writes and sampled ports).
    pub probes: u64,
    /// Addresses that probed it (1 for a source).
    pub addresses: u32,
}

/// What decided a slow scan: the walk's crossing and the record behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Evidence {
    /// Distinct (protocol, port)s in the window, by first probe.
    pub ports: Vec<(u8, u16)>,
    pub closed: u32,
    pub open: u32,
    pub probes: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Distinct ports when the walk crossed the threshold.
    pub decided_after: u32,
}

/// The walk's parameters for the long window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlowRule {
    pub steps: Steps,
    /// Addresses a prefix needs before it is judged as one actor.
    pub min_addresses: u32,
}

impl SlowRule {
    /// Walks `records` (any order); Some when they decide a scan.
    pub(crate) fn decide(&self, records: &[PortRecord]) -> Option<Evidence> {
        let mut ordered: Vec<&PortRecord> = records.iter().collect();
        ordered.sort_by_key(|r| (r.first_ms, r.proto, r.port));
        let mut score: i64 = 0;
        let mut decided_after = None;
        for (n, r) in ordered.iter().enumerate() {
            let step = if r.open {
                self.steps.open
            } else {
                self.steps.closed
            };
            score = (score + i64::from(step)).max(i64::from(self.steps.lower));
            if score >= i64::from(self.steps.upper) {
                decided_after = Some(n as u32 + 1);
                break;
            }
        }
        let decided_after = decided_after?;
        let open = records.iter().filter(|r| r.open).count() as u32;
        Some(Evidence {
            ports: ordered.iter().map(|r| (r.proto, r.port)).collect(),
            closed: records.len() as u32 - open,
            open,
            probes: records.iter().map(|r| r.probes).sum(),
            first_ms: records.iter().map(|r| r.first_ms).min().unwrap_or(0),
            last_ms: records.iter().map(|r| r.last_ms).max().unwrap_or(0),
            decided_after,
        })
    }

    /// A prefix's record, `addresses` of its addresses behind it.
    pub(crate) fn decide_prefix(&self, records: &[PortRecord], addresses: u32) -> Option<Evidence> {
        if addresses < self.min_addresses {
            return None;
        }
        self.decide(records)
    }

    /// Closed ports that decide from a fresh start.
    pub(crate) fn closed_ports_to_decide(&self) -> u32 {
        self.steps.closed_probes_to_decide()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::trw::Probabilities;

    fn rule() -> SlowRule {
        SlowRule {
            steps: Probabilities {
                false_positive: DEFAULT_FALSE_POSITIVE,
                ..Probabilities::default()
            }
            .steps()
            .unwrap(),
            min_addresses: 3,
        }
    }

    const DEFAULT_FALSE_POSITIVE: f64 = 1e-6;
    const DAY_MS: i64 = 86_400_000;

    fn port(port: u16, open: bool, day: i64) -> PortRecord {
        PortRecord {
            proto: 6,
            port,
            open,
            first_ms: day * DAY_MS + i64::from(port),
            last_ms: day * DAY_MS + i64::from(port),
            probes: 1,
            addresses: 1,
        }
    }

    #[test]
    fn ten_closed_ports_over_days_decide_and_nine_do_not() {
        let r = rule();
        assert_eq!(r.closed_ports_to_decide(), 10);
        let nine: Vec<PortRecord> = (0..9)
            .map(|i| port(1000 + i, false, i64::from(i)))
            .collect();
        assert_eq!(r.decide(&nine), None);
        let mut ten = nine.clone();
        ten.push(port(2000, false, 6));
        let e = r.decide(&ten).expect("decided");
        assert_eq!((e.closed, e.open, e.decided_after), (10, 0, 10));
        assert_eq!(e.first_ms, 1000);
        assert_eq!(e.last_ms, 8 * DAY_MS + 1008);
        assert_eq!(e.ports.first(), Some(&(6, 1000)));
    }

    #[test]
    fn open_ports_weigh_against_and_clients_never_decide() {
        let r = rule();
        // A client of many services, however often: open ports only.
        let client: Vec<PortRecord> = (0..50).map(|i| port(i, true, 0)).collect();
        assert_eq!(r.decide(&client), None);
        // A few closed ports among open ones (a typo, a service down).
        let mut mixed: Vec<PortRecord> = (0..5).map(|i| port(i, true, 0)).collect();
        mixed.extend((0..6).map(|i| port(100 + i, false, 1)));
        assert_eq!(r.decide(&mixed), None);
        // Open hits before the closed ones bank credit only down to the
        // floor: a long client history is no licence to scan, fourteen
        // closed ports decide all the same.
        let mut banked: Vec<PortRecord> = (0..50).map(|i| port(i, true, 0)).collect();
        banked.extend((0..13).map(|i| port(100 + i, false, 1)));
        assert_eq!(r.decide(&banked), None);
        banked.push(port(200, false, 2));
        assert_eq!(r.decide(&banked).map(|e| e.decided_after), Some(64));
    }

    #[test]
    fn a_prefix_needs_enough_addresses() {
        let r = rule();
        let ports: Vec<PortRecord> = (0..40).map(|i| port(i, false, 0)).collect();
        assert_eq!(r.decide_prefix(&ports, 2), None);
        let e = r.decide_prefix(&ports, 25).expect("decided");
        assert_eq!(e.closed, 40);
    }
}
