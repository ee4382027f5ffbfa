//! The sources admitted lately, read from the kernel's per-CPU rings of
//! admissions (see `scanner_common::admissions`) instead of a walk of
//! SOURCES: what the daemon reads between a decision and its report, to
//! know whether an undecided source may be one scan with it.
//!
//! The rings answer for the admissions made by this daemon's programs: for
//! every admission to a SOURCES this load made, and from the moment they
//! were attached to a SOURCES pinned by an earlier daemon, whose program
//! may still have been admitting into it, writing rings of its own
//! ([`Maps::admissions_from`]). Where
//! they cannot answer (earlier than that, a ring overrun or read while
//! written, too many sources to look up one by one) SOURCES is walked, so
//! the answer is the walk's either way.

use std::collections::HashSet;

use aya::maps::{MapData, PerCpuArray};
use scanner_common::{Admissions, SourceKey, SourceStats};

use super::Maps;

/// More admissions than this to look up, and one walk of SOURCES costs
/// less (a lookup is a system call of about a microsecond; the walk's cost
/// follows the map's size).
const MOST_LOOKUPS: usize = 128;

/// The per-CPU rings, and since when they hold every admission.
pub(crate) struct Admitted {
    rings: PerCpuArray<MapData, Admissions>,
    /// CLOCK_MONOTONIC from which every admission is in the rings
    /// (`u64::MAX` until the daemon says: the rings answer nothing).
    from_ns: u64,
}

impl Admitted {
    pub(super) fn new(rings: PerCpuArray<MapData, Admissions>) -> Self {
        Self {
            rings,
            from_ns: u64::MAX,
        }
    }

    /// The sources admitted at or after `from_ns`, less those `decided`
    /// says are decided since that admission, each once; `None` when the
    /// rings cannot tell, or there are more than [`MOST_LOOKUPS`].
    fn since(
        &self,
        from_ns: u64,
        decided: impl Fn(&SourceKey, u64) -> bool,
    ) -> Option<HashSet<SourceKey>> {
        if from_ns < self.from_ns {
            return None;
        }
        let rings = self.rings.get(&0, 0).ok()?;
        let mut out = HashSet::new();
        for ring in rings.iter() {
            for a in ring.since(from_ns)? {
                // A source admitted in two lives is looked up when either
                // may be undecided: the latest is the one SOURCES holds.
                if !decided(&a.key, a.at_ns) {
                    out.insert(a.key);
                }
            }
            if out.len() > MOST_LOOKUPS {
                return None;
            }
        }
        Some(out)
    }
}

impl Maps {
    /// Every admission to SOURCES from `ns` on is in the rings: from 0
    /// when this load made SOURCES, else from the moment this daemon's
    /// program is attached to every interface (a program an earlier daemon
    /// left attached admits into SOURCES until then). The earliest time
    /// said stands.
    pub fn admissions_from(&mut self, ns: u64) {
        self.admitted.from_ns = self.admitted.from_ns.min(ns);
    }

    /// The admitted sources `keep` selects among those that started at or
    /// after `from_ns` (first probe, on the probe clock), as
    /// [`Maps::sources_where`] would find them, looked up from the rings of
    /// admissions; `None` when the rings cannot tell, or a walk of SOURCES
    /// costs less. `decided`: a source admitted at that time is known
    /// decided since, so `keep` would not select it: it is not looked up.
    pub fn admitted_since(
        &self,
        from_ns: u64,
        decided: impl Fn(&SourceKey, u64) -> bool,
        keep: impl Fn(&SourceStats) -> bool,
    ) -> Option<Vec<(SourceKey, SourceStats)>> {
        let keys = self.admitted.since(from_ns, decided)?;
        Some(
            keys.into_iter()
                .filter_map(|key| Some((key, self.sources.get(&key, 0).ok()?)))
                .filter(|(_, s)| s.first_seen_ns >= from_ns && keep(s))
                .collect(),
        )
    }
}
