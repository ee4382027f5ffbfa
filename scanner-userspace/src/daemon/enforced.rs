//! What CrowdSec's bans stand on: which decisions are behind each network
//! this host blocks for the fleet (kept by `crowdsec`, held in the
//! responder's `Output`).

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;

/// The decisions behind a network's ban: id -> when it ends
/// (CLOCK_MONOTONIC ns).
#[derive(Debug, Default)]
pub(super) struct Behind {
    pub(super) ids: BTreeMap<i64, u64>,
}

impl Behind {
    /// When the longest of them ends.
    pub(super) fn until_ns(&self) -> u64 {
        self.ids.values().copied().max().unwrap_or(0)
    }
}

/// Which decisions stand behind each network CrowdSec bans.
#[derive(Debug, Default)]
pub(crate) struct Enforced {
    pub(super) ids: HashMap<IpNet, Behind>,
    /// Decisions of other types or scopes, counted (logged the first time).
    pub(super) ignored: HashMap<String, u64>,
    /// Bans refused in the current pull: (allowlist, cap), logged once.
    pub(super) refused: (usize, usize),
}
