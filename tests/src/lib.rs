//! Fixtures for the integration tests and `cargo xtask demo`: network
//! namespaces joined by veth (torn down on drop), the daemon running inside
//! one of them, and bounded traffic generators.
//!
//! Test traffic stays between namespaces these fixtures create, on
//! 198.18.0.0/15 and 2001:db8::/32 only.

pub mod capture;
pub mod crowdsec;
pub mod daemon;
pub mod journald;
pub mod netns;
pub mod packets;
pub mod privilege;
pub mod scenario;
pub mod traffic;

pub use daemon::Daemon;
pub use netns::{Lab, Netns};
pub use privilege::require_root;
