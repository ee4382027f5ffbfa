//! The scanner daemon and CLI, in layers: kernel access (`kernel`), the pure
//! detection logic (`detect`), where events go (`sinks`), the control
//! protocol (`control`), the open-ports audit (`audit`), the configuration
//! (`config`), the CrowdSec fleet link (`fleet`), the daemon's loop (`daemon`: load -> poll -> detect -> report
//! / respond) and the command line (`cli`). Lower layers never import the
//! CLI. Every name on the wire is a [`named`] enum.
//!
//! The binary (`scanner`) is [`main`]. The integration tests drive the XDP
//! program through [`kernel`] (BPF_PROG_TEST_RUN), read decisions as
//! [`detect`] names them, and talk to a daemon through [`control`]; the rest
//! is private to the crate.
#![warn(unreachable_pub)]

mod audit;
mod cli;
mod config;
pub mod control;
mod daemon;
pub mod detect;
mod entry;
mod fleet;
pub mod history;
pub mod kernel;
mod named;
mod netlink;
mod sinks;
mod sys;

pub use entry::main;
