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
/// A first IP fragment that ends inside its TCP, UDP or SCTP header (nmap
/// `-f`, `-ff`, `--mtu 8`): no real stack splits a transport header (RFC
/// 1858's tiny-fragment attack), so it is a probe and evidence by itself.
pub const FRAGMENTED: usize = 8;
/// SCTP INIT (nmap `-sY`): opens an association, like a SYN.
pub const SCTP_INIT: usize = 9;
/// SCTP COOKIE ECHO (nmap `-sZ`): only a client that got an INIT ACK sends
/// one, so one aimed at a closed port is a probe, like FIN.
pub const SCTP_COOKIE: usize = 10;
/// A packet of an IP protocol without a transport parser here (nmap `-sO`,
/// the IP protocol scan): its "port" is the protocol number.
pub const PROTOCOL: usize = 11;
/// TCP flags no stack sends together (SYN with FIN or RST, FIN with RST):
/// nmap `--scanflags`, hping3 probes.
pub const INVALID_FLAGS: usize = 12;
/// Size of the per-class counters (room for three more classes).
pub const COUNT: usize = 16;

// The kernel indexes `classes` with `class & (COUNT - 1)`: a power of two.
const _: () = assert!(COUNT.is_power_of_two());
