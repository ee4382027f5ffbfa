//! FIRST_PROBES, read through an mmap: the daemon sees every slot without
//! a system call (the map is `BPF_F_MMAPABLE`), so counting a million
//! remembered first probes is a walk over 32 MiB of memory.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
    ptr::NonNull,
};

use aya::maps::MapData;
use scanner_common::FirstProbe;

/// FIRST_PROBES, mapped read-only into this process.
pub struct FirstProbes {
    base: NonNull<FirstProbe>,
    slots: usize,
    bytes: usize,
}

// SAFETY: the mapping is read-only here and lives until drop; the kernel
// writes it concurrently, which every read handles (volatile, whole slots,
// any bit pattern is a valid FirstProbe).
unsafe impl Send for FirstProbes {}
// SAFETY: as above: shared access only reads.
unsafe impl Sync for FirstProbes {}

impl FirstProbes {
    /// Maps the FIRST_PROBES array behind `fd`.
    pub fn map(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let data = MapData::from_fd(fd.try_clone_to_owned()?).map_err(io::Error::other)?;
        let slots = data.info().map_err(io::Error::other)?.max_entries() as usize;
        let page = page_size();
        let bytes = (slots * size_of::<FirstProbe>()).div_ceil(page) * page;
        // SAFETY: a shared read-only mapping of a BPF_F_MMAPABLE array map's
        // descriptor, at offset 0, no larger than the map's value area
        // rounded up to a page (the kernel's own rule).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<FirstProbe>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, slots, bytes })
    }

    /// How many slots there are.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Slot `i`, as it is at this moment.
    pub fn get(&self, i: usize) -> Option<FirstProbe> {
        // SAFETY: i is within the mapping, which lives as long as self;
        // a volatile read because the kernel writes concurrently.
        (i < self.slots).then(|| unsafe { self.base.as_ptr().add(i).read_volatile() })
    }

    /// Sources whose first probe is remembered: slots written within
    /// `idle_ns` before `now_ns`.
    pub fn live(&self, now_ns: u64, idle_ns: u64) -> usize {
        (0..self.slots)
            .filter_map(|i| self.get(i))
            .filter(|p| p.live(now_ns, idle_ns))
            .count()
    }
}

impl Drop for FirstProbes {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096).max(1)
}
