//! The kernel's decisions, read from the EVENTS ring buffer as they happen.

use std::io;

use aya::maps::{MapData, RingBuf};
use scanner_common::{Decision, SourceStats};
use tokio::io::{Interest, unix::AsyncFd};

pub(crate) struct Decisions {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl Decisions {
    pub(crate) fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd, which stays open and the same
        // for as long as the AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { ring })
    }

    /// Waits until the kernel has written, then returns every record there.
    pub(crate) async fn next_batch(&mut self) -> io::Result<Vec<Decision>> {
        let mut guard = self.ring.readable_mut().await?;
        let out = take_all(guard.get_inner_mut());
        guard.clear_ready();
        Ok(out)
    }

    /// Every record there now, without waiting: a poll reads the ring
    /// first, so every decision made before it started has been seen.
    pub(crate) fn drain(&mut self) -> Vec<Decision> {
        take_all(self.ring.get_mut())
    }
}

fn take_all(ring: &mut RingBuf<MapData>) -> Vec<Decision> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(d) = decode(&item) {
            out.push(d);
        }
    }
    out
}

/// What a record alone says about its entry, for when the entry itself is
/// gone (evicted) before the daemon reads it.
pub(crate) fn stats_of(d: &Decision) -> SourceStats {
    SourceStats {
        first_seen_ns: d.ts_ns,
        last_seen_ns: d.ts_ns,
        window_start_ns: d.ts_ns,
        last_probe_ns: d.ts_ns,
        decided_ns: d.ts_ns,
        ports: d.ports,
        probes: d.ports,
        decided_ports: d.ports,
        reason: d.reason,
        ifindex: d.ifindex,
        ..SourceStats::default()
    }
}

/// A record as the kernel wrote it; a short one (never expected) is skipped.
pub fn decode(bytes: &[u8]) -> Option<Decision> {
    if bytes.len() < size_of::<Decision>() {
        return None;
    }
    // SAFETY: length checked; Decision is plain data valid for any bytes.
    Some(unsafe { bytes.as_ptr().cast::<Decision>().read_unaligned() })
}

#[cfg(test)]
mod tests {
    use scanner_common::{SourceKey, reason};

    use super::*;

    #[test]
    fn records_decode_and_short_ones_are_skipped() {
        let d = Decision {
            key: SourceKey::from_v4([198, 18, 0, 1]),
            ts_ns: 42,
            reason: reason::TRW,
            ports: 4,
            scope: 0,
            _pad: [0; 3],
            ifindex: 3,
        };
        // SAFETY: viewing a plain-data struct as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const d).cast::<u8>(), size_of::<Decision>())
        };
        assert_eq!(decode(bytes), Some(d));
        assert_eq!(decode(&bytes[..10]), None);
        let s = stats_of(&d);
        assert_eq!((s.decided_ns, s.ports, s.reason), (42, 4, reason::TRW));
        assert_eq!(s.ifindex, 3, "the interface survives an evicted entry");
    }
}
