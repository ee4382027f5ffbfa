//! Per-CPU counters per interface slot: no atomics needed, the daemon sums
//! the CPUs.

use scanner_common::counter;

use crate::maps::COUNTERS;

#[inline(always)]
pub(crate) fn bump(ifindex: u32, which: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter::index(ifindex, which)) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *c += 1 };
    }
}
