//! Why a source is protected from blocking ([`crate::names::PROTECTED_MAP`]
//! values, and the daemon's reports): spoofing its address must not make
//! this host cut itself off.

/// A default gateway of this host (IPv4 or IPv6).
pub const GATEWAY: u32 = 1;
/// A DNS resolver this host uses.
pub const RESOLVER: u32 = 2;
/// A peer with an established TCP connection to this host (found by the
/// daemon at decision time; never in the map).
pub const ESTABLISHED: u32 = 3;
