//! What the kernel tells the daemon through the EVENTS ring buffer.

use crate::SourceKey;

/// A ring buffer record: the kernel decided this entry is scanning.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub key: SourceKey,
    /// `bpf_ktime_get_ns()` of the deciding probe.
    pub ts_ns: u64,
    /// `REASON_*`.
    pub reason: u32,
    /// Distinct ports probed when decided.
    pub ports: u32,
    /// `scope::SOURCE` or `scope::PREFIX`.
    pub scope: u8,
    pub _pad: [u8; 3],
    /// Interface the deciding probe came in on (for a report when the
    /// entry itself is evicted before the daemon reads it).
    pub ifindex: u32,
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, no implicit padding (size asserted below).
unsafe impl aya::Pod for Decision {}

const _: () = assert!(core::mem::size_of::<Decision>() == 40);
