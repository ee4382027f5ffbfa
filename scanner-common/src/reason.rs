//! [`crate::SourceStats::reason`]: why the kernel decided an entry is scanning.

pub const NONE: u32 = 0;
/// The sequential hypothesis test (TRW) crossed its upper threshold.
pub const TRW: u32 = 1;
/// Distinct ports within one window reached the fan-out threshold.
pub const FANOUT: u32 = 2;
