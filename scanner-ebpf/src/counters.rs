//! Global per-CPU counters: no atomics needed, the daemon sums the CPUs.

use crate::maps::COUNTERS;

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *c += 1 };
    }
}
