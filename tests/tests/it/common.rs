//! Helpers for the tests that drive the XDP program with BPF_PROG_TEST_RUN.
//! (Here, not in the fixtures library: that library must build before
//! `cargo xtask setup` has installed the eBPF toolchain.)

use aya::{Ebpf, TestRun as _, TestRunOptions, programs::Xdp};
use scanner_common::{SourceKey, SourceStats, scope};
use scanner_userspace::testing::{EntryId, Maps, load};

pub(crate) const XDP_DROP: u32 = 1;
pub(crate) const XDP_PASS: u32 = 2;

/// Runs the loaded program once on `frame`; returns its XDP action.
pub(crate) fn run(ebpf: &Ebpf, frame: &[u8]) -> anyhow::Result<u32> {
    let program: &Xdp = ebpf
        .program(load::PROGRAM)
        .ok_or_else(|| anyhow::anyhow!("no program {}", load::PROGRAM))?
        .try_into()?;
    let result = program.test_run(TestRunOptions {
        data_in: Some(frame),
        ..Default::default()
    })?;
    Ok(result.return_value)
}

/// Returns from the test (skipping it) unless running as root.
macro_rules! root_only {
    ($name:literal) => {
        if !scanner_tests::require_root($name) {
            return Ok(());
        }
    };
}

pub(crate) use root_only;

/// Keeps the calling thread (the test's) on the CPU it runs on now, so
/// every BPF_PROG_TEST_RUN it makes sees the same per-CPU map copies.
pub(crate) fn stay_on_one_cpu() -> anyhow::Result<usize> {
    // SAFETY: sched_getcpu takes nothing; the cpu_set_t is zeroed, then
    // set with the libc macros, and handed by pointer with its own size.
    unsafe {
        let cpu =
            usize::try_from(libc::sched_getcpu()).map_err(|_| std::io::Error::last_os_error())?;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(cpu)
    }
}

/// Returns once the timer has ticked: the XDP program's probe clock (see
/// `scanner_common::clock`) shows a later time from now on. It counts
/// jiffies, which the kernel advances before CLOCK_MONOTONIC_COARSE, so
/// a coarse clock that moved on means a tick went by.
pub(crate) fn next_tick() {
    let coarse = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid pointer to a timespec the call fills.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        (ts.tv_sec, ts.tv_nsec)
    };
    let start = coarse();
    while coarse() == start {
        // A tick is 1 to 10 ms: poll well within one.
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// The prefix entry of the lab's /24 (198.18.0.0/24: every `v4(n)`
/// source's), which must exist.
pub(crate) fn lab_prefix(maps: &Maps) -> anyhow::Result<SourceStats> {
    maps.entry(LAB_PREFIX)
        .ok_or_else(|| anyhow::anyhow!("prefix untracked"))
}

/// The lab's /24 as a prefix entry's id.
pub(crate) const LAB_PREFIX: EntryId = EntryId {
    scope: scope::PREFIX,
    key: SourceKey::from_v4([198, 18, 0, 0]),
};
