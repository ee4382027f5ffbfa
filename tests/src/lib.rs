//! Fixtures for the integration tests and `cargo xtask demo`: network
//! namespaces joined by veth (torn down on drop), the daemon running inside
//! one of them, a booted Debian container, and bounded traffic generators.
//!
//! Test traffic stays between namespaces these fixtures create, on
//! 198.18.0.0/15 and 2001:db8::/32 only.

pub mod agent;
pub mod capture;
pub mod container;
pub mod crowdsec;
pub mod daemon;
pub mod fleet;
pub mod journald;
pub mod netns;
pub mod packets;
pub mod privilege;
pub mod proxy;
pub mod scenario;
pub mod soak;
pub mod sweep;
pub mod traffic;

pub use daemon::Daemon;
pub use netns::{Lab, Netns};
pub use privilege::require_root;

/// A scratch directory under the system's temp dir, unique to this process
/// and this call, removed on drop (also when a test fails).
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A fresh directory: tests that run at once with the same `name`
    /// each get their own.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("scanner-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether the running kernel is `major.minor` or later (false when its
/// release cannot be read).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (have_major, have_minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (have_major, have_minor) >= (major, minor)
}
