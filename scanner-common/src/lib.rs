//! Shared between the XDP program (`scanner-ebpf`, `no_std`) and the daemon
//! (`scanner-userspace`): map names and capacities, the types stored in the
//! maps, and the packet parser itself, so the code the kernel runs is the
//! code the host tests.
//!
//! One module per kind of thing: `names` (maps and capacities), `source`,
//! `policy`, `config`, `event`, `hits`; constant families each in their own
//! module (`counter::SEEN`, `class::SYN`, `bits::TCP_OPEN`, `reason::TRW`,
//! `scope::PREFIX`, `action::BLOCK`, `block_reason::SCAN`).
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

pub mod admissions;
pub mod bits;
pub mod class;
pub mod classify;
pub mod clock;
pub mod config;
pub mod counter;
pub mod event;
pub mod first;
pub mod frame;
pub mod gather;
pub mod hits;
pub mod names;
pub mod pair;
pub mod parse;
pub mod policy;
pub mod protect;
pub mod reason;
pub mod scope;
pub mod source;
pub mod step;

pub use admissions::{ADMISSION_SLOTS, Admission, Admissions};
pub use bits::port_bit;
pub use classify::*;
pub use config::{Config, DEFAULT_IDLE_NS, DEFAULT_WINDOW_NS};
pub use event::Decision;
pub use first::FirstProbe;
pub use frame::{Frame, Header};
pub use gather::PrefixSlot;
pub use hits::{PortHits, port_hits_index, port_of_hits_index};
pub use parse::*;
pub use policy::{
    BLOCK_CACHE_BUDGET, BLOCK_CACHE_SLOTS, CachedBlock, PolicyEntry, action, block_cache_slot,
    block_reason, policy_prefix_len,
};
pub use source::{
    PREFIX_TRIALS_PER_SOURCE, PortKey, PortSeen, SAMPLE_OPEN_PORTS, SAMPLE_PORTS, SourceKey,
    SourceStats,
};
