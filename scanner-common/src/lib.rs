//! Shared between the XDP program (`scanner-ebpf`, `no_std`) and the daemon
//! (`scanner-userspace`): map names and capacities, the types stored in the
//! maps, and the packet parser itself, so the code the kernel runs is the
//! code the host tests.
#![no_std]

pub mod classify;
pub mod maps;
pub mod parse;

pub use classify::*;
pub use maps::*;
pub use parse::*;
