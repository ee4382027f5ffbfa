//! The scanner daemon and CLI, in layers: kernel access (`kernel`), the pure
//! detection logic (`detect`), where events go (`sinks`), the control
//! protocol (`control`), the open-ports audit (`audit`), the configuration
//! (`config`), the CrowdSec fleet link (`fleet`), the daemon's loop (`daemon`: load -> poll -> detect -> report
//! / respond) and the command line (`cli`). Lower layers never import the
//! CLI. Every name on the wire is a [`named`] enum.
//!
//! The binary (`scanner`) is [`main`]. Everything else is private to the
//! crate but for [`fuzzing`] (the fuzz targets' entry points) and
//! [`testing`]: what the integration tests and benchmarks
//! reach (they drive the XDP program through BPF_PROG_TEST_RUN, read its
//! maps and decisions, and talk to a daemon through its control socket).

mod audit;
mod cli;
mod config;
mod control;
mod daemon;
mod detect;
mod entry;
mod fleet;
mod history;
mod kernel;
mod memory;
mod named;
mod netlink;
mod sinks;
mod sys;

pub use entry::main;

pub mod fuzzing;

/// What the integration tests and benchmarks use, and nothing more: the
/// program's loader and maps, the rule map, decisions as the detector
/// names them, the history store, and the control socket.
pub mod testing {
    pub use crate::{
        control::{Request, client::call},
        detect::EntryId,
        history::store::{EventRow, PortHour, Record, Store},
        kernel::{
            decisions::decode,
            maps::{Maps, monotonic_ns, take_map},
            migrate::PREVIOUS_VERSION,
            policy::{AllowOrigin, Change, Policy, PolicyError},
        },
        memory::testing::{LongMemory, Probed},
    };

    /// Loading the XDP program.
    pub mod load {
        pub use crate::kernel::load::{
            PROGRAM, load, load_build, load_variant, load_with_cap, map_memory, write_config,
        };
    }
}
