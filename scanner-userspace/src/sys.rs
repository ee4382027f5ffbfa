//! Every raw system call the daemon makes itself, in one place (aya keeps
//! its own in `aya/src/sys/`): the bpf(2) commands aya 0.14 does not wrap,
//! named rather than numbered; the shared mmap of a `BPF_F_MMAPABLE` map;
//! a netlink socket with its send and receive; the host's name as the
//! kernel has it; the scheduler slice asked for; and the C allocator's
//! free memory handed back. Callers build and read
//! the attributes and messages; nothing here knows what they mean.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    ptr::NonNull,
};

/// The bpf(2) commands used here (`enum bpf_cmd` in linux/bpf.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum BpfCmd {
    ObjGetInfoByFd = 15,
    MapLookupBatch = 24,
    LinkGetFdById = 30,
    LinkGetNextId = 31,
}

/// bpf(2) with `attr`, the `union bpf_attr` member `cmd` reads (a
/// `#[repr(C)]` struct, fully initialised, zero where unused); the call's
/// non-negative return. The kernel may write into `attr` on failure too
/// (a batch's count).
pub(crate) fn bpf<A>(cmd: BpfCmd, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, fully initialised bpf_attr member of the
    // size passed; the kernel reads and writes within it only.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut A,
            std::mem::size_of::<A>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// [`bpf`] for a command that returns a new descriptor (`*_GET_FD_BY_ID`).
pub(crate) fn bpf_fd<A>(cmd: BpfCmd, attr: &mut A) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("descriptor out of range"))?;
    // SAFETY: the kernel returned a new descriptor, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A shared, read-write mapping of a map's values, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    base: NonNull<u8>,
    bytes: usize,
}

impl Mapping {
    /// Maps `bytes` of the `BPF_F_MMAPABLE` map behind `fd`, rounded up to a
    /// page (the kernel's own rule), at offset 0.
    pub(crate) fn shared(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<Self> {
        let page = page_size();
        let bytes = bytes.div_ceil(page).max(1) * page;
        // SAFETY: a shared mapping of a map descriptor at offset 0, no larger
        // than its value area rounded up to a page; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, bytes })
    }

    /// The first byte, valid while `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `shared`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096).max(1)
}

/// A netlink socket of `protocol` (NETLINK_ROUTE, NETLINK_SOCK_DIAG).
pub(crate) fn netlink_socket(protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: a plain socket(2) call; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends all of `buf` on `fd` as one datagram.
pub(crate) fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: sending our own buffer of its length.
    let sent = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
    if usize::try_from(sent).ok() != Some(buf.len()) {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One datagram from `fd`, of at most `most` bytes.
pub(crate) fn recv(fd: &OwnedFd, most: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; most];
    // SAFETY: receiving into our own buffer of its length.
    let got = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
    buf.truncate(got);
    Ok(buf)
}

/// This host's name, as the kernel has it; empty when it cannot be read.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// `struct sched_attr` as sched_setattr(2) first had it (`SCHED_ATTR_SIZE_VER0`).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

const _: () = assert!(std::mem::size_of::<SchedAttr>() == 48);

/// Asks the scheduler for a `slice` of CPU time per turn for the calling
/// thread and the threads it starts from now on (sched_setattr(2) with
/// `sched_runtime` under SCHED_OTHER, its niceness kept). From Linux 6.12
/// (EEVDF's custom slices) a thread with a shorter slice than the one
/// running gets the CPU when it wakes, where otherwise it may wait for
/// the next timer tick; older kernels take the call and ignore it. Left as
/// it is (Ok(false)) under another policy an operator chose.
pub(crate) fn request_slice(slice: std::time::Duration) -> io::Result<bool> {
    // SAFETY: no arguments but the calling thread (0).
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 {
        return Err(io::Error::last_os_error());
    }
    if policy != libc::SCHED_OTHER {
        return Ok(false);
    }
    // SAFETY: errno is this thread's; getpriority reads the calling
    // thread's niceness (-1 is a valid answer: errno tells the failure).
    let nice = unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        if nice == -1 && *libc::__errno_location() != 0 {
            return Err(io::Error::last_os_error());
        }
        nice
    };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice,
        priority: 0,
        runtime: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
        deadline: 0,
        period: 0,
    };
    // SAFETY: the kernel reads `size` bytes of a fully initialised
    // sched_attr; pid 0 is the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Hands the C allocator's free memory back to the system. glibc keeps
/// what a burst freed in the arena of the thread that freed it (the tokio
/// workers, the history and memory threads each have one) and returns only
/// the top of the main heap on its own: after five floods of 50,000
/// spoofed sources the daemon held 12.5 MB of free heap, all returned by
/// one `malloc_trim` (measured with gdb on a soak). It walks the arenas
/// once: call it now and then, not per event.
pub(crate) fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory the allocator holds free;
    // it is thread-safe and takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_gets_the_slice_it_asks_for() {
        let slice = std::time::Duration::from_micros(200);
        let (asked, sched) = std::thread::spawn(move || {
            let asked = request_slice(slice);
            (asked, std::fs::read_to_string("/proc/thread-self/sched"))
        })
        .join()
        .unwrap();
        assert!(asked.unwrap(), "SCHED_OTHER: asked");
        // Where the kernel shows it (CONFIG_SCHED_DEBUG) and has custom
        // slices (6.12 and later: the line reads the base slice before).
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut v = release.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let custom = (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 12);
        if let (Ok(sched), true) = (sched, custom) {
            let line = sched.lines().find(|l| l.starts_with("se.slice")).unwrap();
            assert!(line.trim_end().ends_with(" 200000"), "{line}");
        }
    }

    #[test]
    fn a_bad_descriptor_is_an_error_not_a_crash() {
        let mut attr = [0u32; 4];
        attr[0] = u32::MAX; // no such fd
        let e = bpf(BpfCmd::ObjGetInfoByFd, &mut attr).unwrap_err();
        assert!(e.raw_os_error().is_some(), "{e}");
    }
}
