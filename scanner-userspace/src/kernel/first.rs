//! FIRST_PROBES, read through an mmap: the daemon sees every slot without
//! a system call (the map is `BPF_F_MMAPABLE`), so counting a million
//! remembered first probes is a walk over 32 MiB of memory. The same walk
//! clears the displaced marks (`scanner_common::first::DISPLACED`) of slots
//! no admitted source hashes to any more, so that sources there are not
//! looked up in SOURCES for nothing.

use std::{
    io,
    os::fd::{AsFd as _, BorrowedFd},
    sync::atomic::{AtomicU32, Ordering},
};

use aya::maps::MapData;
use scanner_common::{FirstProbe, first::DISPLACED};

use crate::sys::Mapping;

/// FIRST_PROBES, mapped into this process.
pub(crate) struct FirstProbes {
    mapping: Mapping,
    slots: usize,
}

// SAFETY: the mapping lives until drop; the kernel writes it concurrently,
// which every access handles (volatile reads of whole slots, any bit
// pattern being a valid FirstProbe; the one write is an atomic and-not of a
// mark bit).
unsafe impl Send for FirstProbes {}
// SAFETY: as above: shared access reads, or clears a bit atomically.
unsafe impl Sync for FirstProbes {}

impl FirstProbes {
    /// Maps the FIRST_PROBES array behind `fd`.
    pub(crate) fn map(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let data = MapData::from_fd(fd.try_clone_to_owned()?).map_err(io::Error::other)?;
        let slots = data.info().map_err(io::Error::other)?.max_entries() as usize;
        let mapping = Mapping::shared(data.fd().as_fd(), slots * size_of::<FirstProbe>())?;
        Ok(Self { mapping, slots })
    }

    /// Slot `i`'s address (`i` below `slots`: the caller checks).
    fn slot(&self, i: usize) -> *mut FirstProbe {
        // The mapping is page-aligned and holds `slots` whole slots.
        self.mapping.as_ptr().cast::<FirstProbe>().wrapping_add(i)
    }

    /// How many slots there are.
    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    /// The next `slots` slots from `next` on, moving `next` past them;
    /// `None` once past the last slot: a walk taken a step at a time.
    pub(crate) fn next_range(
        &self,
        next: &mut usize,
        slots: usize,
    ) -> Option<std::ops::Range<usize>> {
        let range = *next..next.saturating_add(slots).min(self.slots);
        *next = range.end;
        (!range.is_empty()).then_some(range)
    }

    /// Slot `i`, as it is at this moment.
    pub(crate) fn get(&self, i: usize) -> Option<FirstProbe> {
        // SAFETY: i is within the mapping, which lives as long as self;
        // a volatile read because the kernel writes concurrently.
        (i < self.slots).then(|| unsafe { self.slot(i).read_volatile() })
    }

    /// Sources whose first probe is remembered: slots written within
    /// `idle_ns` before `now_ns`.
    pub(crate) fn live(&self, now_ns: u64, idle_ns: u64) -> usize {
        self.sweep(0..self.slots, now_ns, idle_ns, |_| true)
    }

    /// Every slot of `range` written after `after_ns` and at or before `upto_ns` (a
    /// probe not yet seen by an earlier call with the same bounds moved
    /// on), to `f`: the first probes of sources new since then, whether
    /// still waiting or admitted since. Reads only each slot's time unless
    /// it is in range, so a walk costs a pass over the table's memory.
    pub(crate) fn written(
        &self,
        range: std::ops::Range<usize>,
        after_ns: u64,
        upto_ns: u64,
        mut f: impl FnMut(FirstProbe),
    ) {
        for i in range.start..range.end.min(self.slots) {
            // SAFETY: i is within the mapping; `seen_ns` is a naturally
            // aligned u64 (32-byte slots in a page-aligned mapping), read
            // volatile because the kernel writes it concurrently.
            let seen = unsafe { (&raw const (*self.slot(i)).seen_ns).read_volatile() };
            if seen > after_ns
                && seen <= upto_ns
                && let Some(p) = self.get(i)
                && p.seen_ns == seen
            {
                f(p);
            }
        }
    }

    /// [`Self::live`] among the slots `range`, clearing on the way the
    /// displaced mark of each slot `owned` says no admitted source hashes
    /// to. A source admitted and displaced since `owned` was read loses its
    /// mark too: it is found all the same when it next probes two ports
    /// (see `scanner_common::first`).
    pub(crate) fn sweep(
        &self,
        range: std::ops::Range<usize>,
        now_ns: u64,
        idle_ns: u64,
        owned: impl Fn(usize) -> bool,
    ) -> usize {
        let mut live = 0;
        for i in range {
            let Some(p) = self.get(i) else { break };
            live += usize::from(p.live(now_ns, idle_ns));
            if p.ifindex & DISPLACED != 0 && !owned(i) {
                // SAFETY: i is within the mapping (checked by `get`); the
                // field is a naturally aligned u32 (slots are 32 bytes, the
                // mapping page-aligned) that the kernel writes with plain
                // stores: an atomic and-not either clears the mark or, when
                // a store lands first or after, leaves that store's value.
                let ifindex = unsafe { AtomicU32::from_ptr(&raw mut (*self.slot(i)).ifindex) };
                ifindex.fetch_and(!DISPLACED, Ordering::Relaxed);
            }
        }
        live
    }
}
