//! The probe clock: the time the XDP program stamps on every probe (a
//! source's first and last probe, its window, a first-probe slot), read
//! without a helper call.
//!
//! `bpf_ktime_get_ns` is a helper call that reads the clock source: about
//! 37 ns a probe on the machines `cargo xtask bench` ran on, more than
//! the whole hash lookup of a known source. `bpf_jiffies64` is rewritten
//! by the verifier into one load (64-bit kernels), so the probe clock is
//! the timer tick scaled to nanoseconds and set on CLOCK_MONOTONIC:
//!
//! - **Scale.** The loader writes the tick's length into `Config::tick_ns`:
//!   `clock_getres(CLOCK_MONOTONIC_COARSE)`, which is the kernel's
//!   `TICK_NSEC`, the step by which jiffies advance.
//! - **Origin.** The loader writes [`origin`] into `Config::clock_origin_ns`,
//!   from `bpf_ktime_get_coarse_ns` and `bpf_jiffies64` read in that order
//!   by the object's `scanner_clock` program (a test run, never attached).
//!   The kernel advances jiffies before the coarse clock, so the pair never
//!   has jiffies behind the clock; one tick less allows for the timer
//!   interrupt's lateness. So the probe clock is never ahead of
//!   CLOCK_MONOTONIC and at most [`MAX_LAG_NS`] behind it, while the
//!   kernel keeps jiffies current: on a virtual machine whose CPU that
//!   keeps them is descheduled, jiffies stall for a few ticks (until
//!   another CPU takes the duty over) and the lag grows meanwhile: what
//!   allows for the lag (the decoy window, the daemon's walks of recent
//!   probes) may then miss a source or probe stamped in that moment.
//! - **Resolution.** Probes within one tick share a time. Lives and windows
//!   last seconds (`idle_timeout` is 2 s at least), so two lives of a
//!   source never start in one tick; the tests that need every probe to
//!   start a new window wait for the next tick, and a 0 idle timeout makes
//!   every probe a new source's (the bench's new-source case).
//!
//! Decisions keep the precise clock (`Decision::ts_ns`, the entry's
//! `decided_ns`): the daemon's `latency_us` is measured from it. What the
//! daemon compares with its own CLOCK_MONOTONIC allows for the lag.

/// How far behind CLOCK_MONOTONIC the probe clock may be: three ticks (one
/// for the tick in progress, one for the calibration's rounding, one for
/// the origin's margin) of the longest tick the loader takes
/// ([`MAX_TICK_NS`]).
pub const MAX_LAG_NS: u64 = 3 * MAX_TICK_NS;

/// The shortest and longest timer ticks the loader takes: CONFIG_HZ from
/// 2000 down to 100 (every distribution kernel has 100, 250, 300 or 1000).
pub const MIN_TICK_NS: u64 = 500_000;
pub const MAX_TICK_NS: u64 = 10_000_000;

/// CLOCK_MONOTONIC at jiffy 0 less one tick (wrapping arithmetic: jiffies
/// start far from 0), from `coarse_ns` (CLOCK_MONOTONIC_COARSE) and
/// `jiffies` read in that order, and the tick's length.
#[inline(always)]
pub fn origin(coarse_ns: u64, jiffies: u64, tick_ns: u64) -> u64 {
    coarse_ns
        .wrapping_sub(jiffies.wrapping_mul(tick_ns))
        .wrapping_sub(tick_ns)
}

/// The start of the tick `jiffies` on the probe clock.
#[inline(always)]
pub fn at(origin_ns: u64, jiffies: u64, tick_ns: u64) -> u64 {
    origin_ns.wrapping_add(jiffies.wrapping_mul(tick_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HZ=250, jiffies starting where Linux starts them (five minutes
    /// before wrapping a 32-bit counter).
    const TICK: u64 = 4_000_000;
    const J0: u64 = (1u64 << 32) - 300 * 250;

    /// What a CPU reads at monotonic time `mono` when ticks fall at
    /// `phase` past multiples of TICK and each tick's interrupt runs `late`
    /// after it: (CLOCK_MONOTONIC_COARSE, jiffies). Until the interrupt
    /// has run, both still show the tick before.
    fn read_at(mono: u64, phase: u64, late: u64) -> (u64, u64) {
        let mut n = (mono - phase) / TICK;
        if mono - (phase + n * TICK) < late {
            n -= 1;
        }
        (phase + n * TICK + late, J0 + n)
    }

    #[test]
    fn never_ahead_of_the_clock_and_at_most_the_lag_behind() {
        for phase in [0, 1, TICK / 2, TICK - 1] {
            for late in [0, 1_000, TICK / 3] {
                for at_ in [0, late, TICK / 2, TICK - 1] {
                    // Calibrated at some instant of a tick, with this
                    // lateness; later ticks come on time or as late.
                    let cal = 10 * TICK + phase + at_;
                    let (coarse, jiffies) = read_at(cal, phase, late);
                    let o = origin(coarse, jiffies, TICK);
                    for step in 1..5_000u64 {
                        let mono = cal + step * 3_333_331;
                        let (_, j) = read_at(mono, phase, if step % 2 == 0 { 0 } else { late });
                        let t = at(o, j, TICK);
                        assert!(
                            t <= mono,
                            "ahead: {t} > {mono} (phase {phase}, late {late})"
                        );
                        assert!(mono - t <= MAX_LAG_NS, "behind by {}", mono - t);
                    }
                }
            }
        }
    }

    #[test]
    fn a_tick_later_is_a_tick_later() {
        let o = origin(100 * TICK, J0 + 100, TICK);
        assert_eq!(at(o, J0 + 100, TICK), 99 * TICK);
        assert_eq!(at(o, J0 + 101, TICK) - at(o, J0 + 100, TICK), TICK);
    }

    #[test]
    fn jiffies_far_from_zero_wrap_to_the_right_time() {
        let mono = 7_000_000_000;
        let j = u64::MAX / TICK;
        let o = origin(mono, j, TICK);
        assert_eq!(at(o, j, TICK), mono - TICK);
        assert_eq!(at(o, j + 2, TICK), mono + TICK);
    }
}
