//! Everything that touches the kernel: loading and attaching the XDP
//! program, pinned state, the maps it shares with the daemon (sources,
//! counters, rules, port bitmaps), its ring buffer, raw bpf syscalls, and the
//! interfaces it is attached to.

pub(crate) mod batch;
pub(crate) mod clock;
pub(crate) mod decisions;
pub(crate) mod first;
pub(crate) mod iface;
pub(crate) mod load;
pub(crate) mod maps;
pub(crate) mod migrate;
pub(crate) mod pin;
pub(crate) mod policy;
pub(crate) mod port_bits;
pub(crate) mod protect;
pub(crate) mod reported;
pub(crate) mod xdp_owner;
