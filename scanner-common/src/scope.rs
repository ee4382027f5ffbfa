//! [`crate::PortKey::scope`] and [`crate::Decision::scope`]: a single
//! source, a prefix, or a source's membership of its prefix.

pub const SOURCE: u8 = 0;
pub const PREFIX: u8 = 1;
/// A membership mark: `source` has been counted among its prefix's sources
/// in the prefix life stamped in `PortSeen::life_ns` (port and protocol 0).
/// Never a decision's scope.
pub const MEMBER: u8 = 2;
