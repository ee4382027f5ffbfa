//! The latest admissions to SOURCES, per CPU: where the daemon finds the
//! undecided sources near a detection without walking SOURCES.
//!
//! A detection is held while an undecided source may belong to its decoy
//! group (see the daemon's `detect::decoy`): one that started probing
//! within a second of it. Finding those by walking SOURCES costs a pass
//! over every bucket of the map, whatever it holds (about 250 µs at the
//! default 32,768 entries, more for a larger `--max-sources`), on the way
//! from the kernel's decision to the report. Every such source was
//! admitted after its first probe, so after the window's start: the
//! program writes each admission (a new life in SOURCES, made by
//! `scanner_replay`, never per packet) into a ring of [`ADMISSION_SLOTS`]
//! per CPU, and the daemon reads the admissions since a time in one system
//! call and looks those sources up. Where a ring does not reach back that
//! far (more admissions than slots since), or a slot is being written as
//! it is read, [`Admissions::since`] says so and the daemon walks SOURCES
//! as before: the ring only saves the walk, it never changes what is found.
//!
//! One writer per CPU (an XDP program does not run twice at once on one
//! CPU), so no atomics: a slot's key and time are stored before its
//! sequence number, and the ring's count after the slot.

use crate::SourceKey;

/// Slots per CPU: at the default capacity a second of admissions on a
/// busy server fits many times over; a flood of admissions (two ports from
/// each of many addresses) overruns it and the daemon walks SOURCES.
pub const ADMISSION_SLOTS: usize = 64;

/// One admission.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Admission {
    pub key: SourceKey,
    /// When (the probe clock, as a source's `first_seen_ns`).
    pub at_ns: u64,
    /// The admission's number on its CPU, from 1; 0: never written.
    pub seq: u64,
}

/// A CPU's ring (the one value of the per-CPU ADMISSIONS array).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Admissions {
    /// Admissions written on this CPU so far: the newest is number `count`,
    /// in slot `(count - 1) % ADMISSION_SLOTS`.
    pub count: u64,
    pub slots: [Admission; ADMISSION_SLOTS],
}

impl Default for Admissions {
    fn default() -> Self {
        Self {
            count: 0,
            slots: [Admission::default(); ADMISSION_SLOTS],
        }
    }
}

impl Admissions {
    /// Writes the admission of `key` at `at_ns` (the kernel's side).
    #[inline(always)]
    pub fn record(&mut self, key: &SourceKey, at_ns: u64) {
        let seq = self.count.wrapping_add(1);
        // A power of two: the mask keeps the index in bounds for the
        // verifier, with no check.
        let i = (self.count as usize) & (ADMISSION_SLOTS - 1);
        if let Some(slot) = self.slots.get_mut(i) {
            slot.key = *key;
            slot.at_ns = at_ns;
            slot.seq = seq;
        }
        self.count = seq;
    }

    /// Every admission at or after `from_ns`, newest first, or `None`
    /// when the ring cannot tell: it was overrun since (its oldest slot is
    /// no older than `from_ns`), or a slot does not hold the admission its
    /// place says (written while it was read).
    pub fn since(&self, from_ns: u64) -> Option<impl Iterator<Item = &Admission>> {
        let kept = self.count.min(ADMISSION_SLOTS as u64);
        let mut n = 0;
        for back in 0..kept {
            let seq = self.count - back;
            let slot = &self.slots[((seq - 1) as usize) & (ADMISSION_SLOTS - 1)];
            if slot.seq != seq {
                return None;
            }
            if slot.at_ns < from_ns {
                return Some(self.newest(n));
            }
            n += 1;
        }
        // Every admission since the ring began is here; when it has been
        // overrun, those before its oldest slot may be later than `from_ns`.
        (self.count <= ADMISSION_SLOTS as u64).then(|| self.newest(n))
    }

    /// The newest `n` admissions, newest first.
    fn newest(&self, n: u64) -> impl Iterator<Item = &Admission> {
        (0..n).map(move |back| {
            let seq = self.count - back;
            &self.slots[((seq - 1) as usize) & (ADMISSION_SLOTS - 1)]
        })
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, no implicit padding (sizes asserted below).
unsafe impl aya::Pod for Admissions {}

const _: () = assert!(ADMISSION_SLOTS.is_power_of_two());
const _: () = assert!(core::mem::size_of::<Admission>() == 32);
const _: () = assert!(core::mem::size_of::<Admissions>() == 8 + 32 * ADMISSION_SLOTS);

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{vec, vec::Vec};

    use super::*;

    fn key(i: u32) -> SourceKey {
        let b = i.to_be_bytes();
        SourceKey::from_v4([198, 18 + (b[1] & 1), b[2], b[3]])
    }

    fn ring(times: &[u64]) -> Admissions {
        let mut r = Admissions::default();
        for (i, &t) in times.iter().enumerate() {
            r.record(&key(i as u32), t);
        }
        r
    }

    fn keys(r: &Admissions, from: u64) -> Option<Vec<SourceKey>> {
        r.since(from).map(|it| it.map(|a| a.key).collect())
    }

    #[test]
    fn an_empty_ring_covers_everything_since_it_began() {
        assert_eq!(keys(&Admissions::default(), 0), Some(vec![]));
    }

    #[test]
    fn admissions_since_a_time_newest_first() {
        let r = ring(&[10, 20, 30, 40]);
        assert_eq!(keys(&r, 25), Some(vec![key(3), key(2)]));
        assert_eq!(keys(&r, 0), Some(vec![key(3), key(2), key(1), key(0)]));
        assert_eq!(keys(&r, 41), Some(vec![]));
    }

    #[test]
    fn a_ring_that_wrapped_still_answers_for_its_span() {
        let times: Vec<u64> = (1..=200).collect();
        let r = ring(&times);
        // The oldest kept admission is number 137, at 137: from 138 on
        // every admission is in the ring.
        let got = keys(&r, 150).expect("within the ring's span");
        assert_eq!(got.len(), 51);
        assert_eq!(got[0], key(199));
        assert_eq!(keys(&r, 138).map(|k| k.len()), Some(63));
    }

    #[test]
    fn an_overrun_ring_cannot_tell() {
        let times: Vec<u64> = (1..=200).collect();
        let r = ring(&times);
        // Admission 136 (overwritten) may be at or after 100.
        assert_eq!(keys(&r, 100), None);
        assert_eq!(keys(&r, 137), None);
    }

    #[test]
    fn a_slot_written_while_read_cannot_tell() {
        let mut r = ring(&[10, 20, 30]);
        // The next admission's slot written, its count not yet.
        r.slots[3] = Admission {
            key: key(9),
            at_ns: 40,
            seq: 4,
        };
        assert_eq!(keys(&r, 15), Some(vec![key(2), key(1)]));
        // A full ring whose newest slot is half written.
        let times: Vec<u64> = (1..=64).collect();
        let mut r = ring(&times);
        r.slots[63].seq = 0;
        assert_eq!(keys(&r, 60), None);
        // The oldest slot overwritten by the next admission, count behind.
        let mut r = ring(&times);
        r.slots[0].seq = 65;
        assert_eq!(keys(&r, 0), None);
    }
}
