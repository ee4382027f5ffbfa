//! The probe clock's calibration (see `scanner_common::clock`): the tick's
//! length from `clock_getres`, and the origin from the loaded object's
//! `scanner_clock` program, test-run once at each CONFIG write.

use aya::{
    Ebpf, TestRun as _, TestRunOptions,
    programs::{ProgramError, Xdp},
};
use scanner_common::clock;
use thiserror::Error;

/// Name of the calibration program in scanner-ebpf (never attached).
pub(crate) const CLOCK_PROGRAM: &str = "scanner_clock";

/// Why the probe clock could not be set.
#[derive(Debug, Error)]
pub enum ClockError {
    #[error("clock_getres(CLOCK_MONOTONIC_COARSE) failed")]
    Resolution(#[source] std::io::Error),
    #[error(
        "the timer tick is {0} ns (CLOCK_MONOTONIC_COARSE's resolution); scanner needs {min} to {max} ns (CONFIG_HZ 100 to 2000)",
        min = clock::MIN_TICK_NS,
        max = clock::MAX_TICK_NS
    )]
    Tick(u64),
    #[error("program {CLOCK_PROGRAM} is missing from the embedded XDP object (stale build?)")]
    Missing,
    /// The test run of the clock program failed (the loader tells a
    /// missing permission apart).
    #[error("a test run of {CLOCK_PROGRAM} failed")]
    Run(#[source] ProgramError),
    #[error("the clock program read CLOCK_MONOTONIC_COARSE {coarse}, jiffies {jiffies}")]
    Reading { coarse: u64, jiffies: u64 },
}

/// The probe clock of this machine: (`Config::tick_ns`,
/// `Config::clock_origin_ns`).
pub(crate) fn calibrate(ebpf: &mut Ebpf) -> Result<(u64, u64), ClockError> {
    let tick_ns = tick_ns()?;
    let program: &mut Xdp = ebpf
        .program_mut(CLOCK_PROGRAM)
        .ok_or(ClockError::Missing)?
        .try_into()
        .map_err(ClockError::Run)?;
    // An Ethernet header's worth of zeros in; the program writes its two
    // readings over the first 16 bytes.
    let frame = [0u8; 64];
    let mut out = [0u8; 64];
    program
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .map_err(ClockError::Run)?;
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&out[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(b)
    };
    let (coarse, jiffies) = (word(0), word(1));
    if coarse == 0 || jiffies == 0 {
        return Err(ClockError::Reading { coarse, jiffies });
    }
    Ok((tick_ns, clock::origin(coarse, jiffies, tick_ns)))
}

/// The timer tick's length: CLOCK_MONOTONIC_COARSE's resolution, which
/// Linux gives as its `TICK_NSEC`.
fn tick_ns() -> Result<u64, ClockError> {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec the call fills.
    if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) } != 0 {
        return Err(ClockError::Resolution(std::io::Error::last_os_error()));
    }
    in_range(super::maps::nanos(&res))
}

/// `ns` if it is a tick the probe clock takes (CONFIG_HZ 100 to 2000):
/// a longer one would lag further than the daemon allows for.
fn in_range(ns: u64) -> Result<u64, ClockError> {
    if (clock::MIN_TICK_NS..=clock::MAX_TICK_NS).contains(&ns) {
        Ok(ns)
    } else {
        Err(ClockError::Tick(ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_a_tick_the_clock_takes() {
        let ns = tick_ns().expect("a usable tick");
        // Linux's TICK_NSEC for some CONFIG_HZ.
        let hz = (100..=2000u64).find(|hz| (1_000_000_000 + hz / 2) / hz == ns);
        assert!(hz.is_some(), "{ns} ns is no tick");
    }

    #[test]
    fn ticks_out_of_range_are_refused_with_the_figure() {
        assert_eq!(in_range(4_000_000).ok(), Some(4_000_000));
        let e = in_range(41_666_667).expect_err("HZ=24 lags too far");
        assert!(e.to_string().contains("41666667 ns"), "{e}");
        assert!(in_range(0).is_err());
    }
}
