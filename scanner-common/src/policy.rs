//! Allow and block rules (ALLOWLIST and BLOCKLIST entries).

/// [`PolicyEntry::action`].
pub mod action {
    pub const ALLOW: u32 = 1;
    pub const BLOCK: u32 = 2;
}

/// [`PolicyEntry::reason`] of a block.
pub mod block_reason {
    /// The kernel blocked a source at its deciding probe (or the daemon did,
    /// on its detection).
    pub const SCAN: u32 = 1;
    /// `scanner block`.
    pub const MANUAL: u32 = 2;
    /// A ban decision pulled from a CrowdSec Local API.
    pub const CROWDSEC: u32 = 3;
    /// `scanner block --force`: may cover a protected gateway or resolver,
    /// and is left as it is when the protected addresses change.
    pub const FORCED: u32 = 4;
}

/// An allow or block rule. The key's prefix length gives its scope: /128 for one
/// address (IPv4 as /128 of the IPv4-mapped form), shorter for a CIDR.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyEntry {
    /// `action::ALLOW` or `action::BLOCK`.
    pub action: u32,
    /// `BLOCK_REASON_*` for blocks.
    pub reason: u32,
    /// CLOCK_MONOTONIC time the rule was made.
    pub created_ns: u64,
    /// CLOCK_MONOTONIC time a block stops applying; 0 means never.
    pub expires_ns: u64,
}

impl PolicyEntry {
    /// Whether this rule drops traffic at `now_ns`.
    #[inline(always)]
    pub fn blocks(&self, now_ns: u64) -> bool {
        self.action == action::BLOCK && (self.expires_ns == 0 || now_ns < self.expires_ns)
    }
}

/// Prefix length of a CIDR in the rule tries' key space (IPv4 sits under the
/// 96-bit IPv4-mapped prefix).
pub const fn policy_prefix_len(is_v4: bool, len: u8) -> u32 {
    if is_v4 { 96 + len as u32 } else { len as u32 }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, no implicit padding (size asserted below).
unsafe impl aya::Pod for PolicyEntry {}

const _: () = assert!(core::mem::size_of::<PolicyEntry>() == 24);
