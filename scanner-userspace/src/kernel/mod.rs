//! Everything that touches the kernel: loading and attaching the XDP
//! program, pinned state, the maps it shares with the daemon (sources,
//! counters, rules, port bitmaps), its ring buffer, raw bpf syscalls, and the
//! interfaces it is attached to.

pub mod batch;
pub mod decisions;
pub mod first;
pub mod iface;
pub mod load;
pub mod maps;
pub mod migrate;
pub mod pin;
pub mod policy;
pub mod port_bits;
pub mod protect;
pub mod reported;
pub mod xdp_owner;
