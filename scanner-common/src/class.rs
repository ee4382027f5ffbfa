//! Traffic classes counted per source (indexes into
//! [`crate::SourceStats::classes`]).

pub const SYN: usize = 0;
pub const FIN: usize = 1;
pub const NULL: usize = 2;
pub const XMAS: usize = 3;
/// FIN|ACK (nmap's Maimon scan; also an ordinary close).
pub const MAIMON: usize = 4;
pub const ACK: usize = 5;
pub const OTHER_TCP: usize = 6;
pub const UDP: usize = 7;
pub const COUNT: usize = 8;

// The kernel indexes `classes` with `class & (COUNT - 1)`: a power of two.
const _: () = assert!(COUNT.is_power_of_two());
