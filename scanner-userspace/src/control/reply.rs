//! The control socket's replies: one type per request, written by the
//! daemon (`daemon::requests`) and read by the CLI (`scanner status`,
//! `list`, `top`, ...). On the wire each is the `result` of a
//! [`Response`](super::Response), its keys sorted; the tests pin every
//! reply against one recorded from a running daemon.

use serde::{Deserialize, Deserializer, Serialize};

use crate::{
    detect::ScanKind,
    kernel::{
        load::AttachedMode,
        policy::{AllowOrigin, Origin},
        protect::ProtectedBy,
    },
    named::named,
};

/// `status`: what the daemon watches and what it has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StatusReply {
    pub interfaces: Vec<InterfaceStatus>,
    pub uptime_s: u64,
    /// When the pinned counters were created: packet counts run from
    /// then, across restarts.
    pub counting_since: Option<String>,
    /// Detections and blocks taken over from an earlier daemon.
    pub resumed: Resumed,
    /// Packets of the watched interfaces.
    pub packets: Packets,
    /// Ring-buffer records lost (the program's own, whatever the interface).
    pub events_dropped: u64,
    /// Blocks the kernel could not insert (the cap was reached).
    pub blocks_refused: u64,
    /// Sources tracked at the last full scan of the maps.
    pub sources_tracked: u64,
    pub kernel_memory_bytes: u64,
    /// Decisions and blocks up to here are reported: a restart does not
    /// report them again. Null before the first poll.
    pub reported_until: Option<String>,
    pub active_detections: u64,
    pub blocks: u64,
    pub block_cap: u32,
    pub blocking: bool,
    pub dry_run: bool,
    pub allowlist: Vec<String>,
    /// The CrowdSec link; null when none is configured.
    pub crowdsec: Option<FleetStatus>,
    /// The history file; null when no history is kept.
    pub history: Option<String>,
    /// The long memory (`[slow]`); absent when it is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_memory: Option<MemoryStatus>,
}

/// The long memory in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemoryStatus {
    /// How far back it remembers, e.g. `7d`.
    pub window: String,
    /// Rows held (one per source, protocol and port), as of its last prune.
    pub rows: u64,
    /// Probes it took, dropped, and slow scans it decided, since the start.
    pub probes: u64,
    pub dropped: u64,
    pub slow_scans: u64,
}

/// An interface the daemon watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InterfaceStatus {
    pub iface: String,
    pub mode: IfaceMode,
}

named! {
    /// How an interface is watched: the mode it is attached in, or
    /// `removed` (gone; watched again when it is back).
    pub(crate) enum IfaceMode {
        Native = "native",
        Skb = "skb",
        Removed = "removed",
    }
}

impl From<Option<AttachedMode>> for IfaceMode {
    fn from(mode: Option<AttachedMode>) -> Self {
        match mode {
            Some(AttachedMode::Native) => Self::Native,
            Some(AttachedMode::Skb) => Self::Skb,
            None => Self::Removed,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Resumed {
    pub detections: u64,
    pub blocks: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Packets {
    pub seen: u64,
    pub passed: u64,
    pub dropped: u64,
    pub parse_failures: u64,
    pub allowed: u64,
    pub fragments: u64,
}

/// The CrowdSec link in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FleetStatus {
    pub url: String,
    /// Pulling decisions (a bouncer key is set).
    pub bouncer: bool,
    /// Pushing alerts (machine credentials are set).
    pub machine: bool,
    pub last_sync: Option<String>,
    pub pull_errors: u64,
    pub push_errors: u64,
    pub alerts_pushed: u64,
    pub alerts_dropped: u64,
    pub push_queue: u64,
}

/// One row of `list`: a suspect source, a distributed scan's prefix, or a
/// block. Fields a kind of row does not have are absent (`None`); a row
/// that has one may hold null (`Some(None)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ListRow {
    pub address: String,
    pub state: ListState,
    pub kind: Option<ScanKind>,
    pub ports: Option<u32>,
    pub probes: Option<u32>,
    pub score: Option<i32>,
    pub sources: Option<u32>,
    /// Sources: why it is never blocked, or null.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub protected: Option<Option<ProtectedBy>>,
    /// Sources: the decoy group it belongs to, or null.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub decoy_group: Option<Option<Vec<String>>>,
    /// Sources: fragments other than the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragments: Option<u32>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub block_expires: Option<String>,
    /// Sources and blocks: whose block it is, or null.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub block_origin: Option<Option<Origin>>,
}

impl ListRow {
    /// A row with nothing but its address and state.
    pub(crate) fn bare(address: String, state: ListState) -> Self {
        Self {
            address,
            state,
            kind: None,
            ports: None,
            probes: None,
            score: None,
            sources: None,
            protected: None,
            decoy_group: None,
            fragments: None,
            first_seen: None,
            last_seen: None,
            block_expires: None,
            block_origin: None,
        }
    }
}

named! {
    /// Where a `list` row stands.
    pub(crate) enum ListState {
        /// Evidence against it, not decided.
        Watching = "watching",
        Detected = "detected",
        /// Detected, and its scan went quiet.
        Ended = "ended",
        /// Detected, and never blocked.
        Protected = "protected",
        Blocked = "blocked",
        /// Blocked in a dry run: recorded, not enforced.
        Unenforced = "unenforced",
    }
}

/// A field that is there, null or not: `Some(None)` for null, where a
/// plain `Option` would read null as absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `block`: the block made, or the longer one kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BlockReply {
    pub blocked: String,
    /// Seconds it lasts; null for a block without expiry.
    pub ttl_s: Option<u64>,
    /// A block already there lasts longer, and stays.
    pub kept: bool,
    pub dry_run: bool,
    /// Protected addresses inside the blocked network: the kernel spares
    /// them.
    pub protected: Vec<ProtectedAddress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProtectedAddress {
    pub address: String,
    pub why: ProtectedBy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UnblockReply {
    pub unblocked: String,
}

/// `allow`: the entry added, and the blocks it lifted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AllowReply {
    pub allowed: String,
    pub unblocked: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DisallowReply {
    pub disallowed: String,
}

/// One entry of `allowlist`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AllowEntry {
    pub address: String,
    pub origin: AllowOrigin,
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;

    use super::*;
    use crate::{control::Response, detect::hits::PortHit, sinks::event::Event};

    /// Replies as a daemon sent them (name, tab, the line): a real run's
    /// answers to every request, then rows and fields that run could not
    /// show (a CrowdSec link, a prefix, a protected source), written as
    /// the daemon wrote them before its replies were typed.
    const RECORDED: &str = include_str!("../../testdata/replies.tsv");

    /// Reads `line`'s result as `R` and writes it again.
    fn again<R: Serialize + DeserializeOwned>(line: &str) -> String {
        let response: Response = serde_json::from_str(line).unwrap();
        let typed: R =
            serde_json::from_value(response.result).unwrap_or_else(|e| panic!("{e}: {line}"));
        serde_json::to_string(&Response::ok(&typed)).unwrap()
    }

    #[test]
    fn recorded_replies_are_written_byte_for_byte() {
        let mut names = Vec::new();
        for row in RECORDED.lines() {
            let (name, line) = row.split_once('\t').unwrap();
            let written = match name.split('_').next().unwrap() {
                "status" => again::<StatusReply>(line),
                "list" => again::<Vec<ListRow>>(line),
                "block" => again::<BlockReply>(line),
                "unblock" => again::<UnblockReply>(line),
                "allowlist" => again::<Vec<AllowEntry>>(line),
                "allow" => again::<AllowReply>(line),
                "disallow" => again::<DisallowReply>(line),
                "port" => again::<Vec<PortHit>>(line),
                "events" => again::<Vec<Event>>(line),
                "error" => {
                    let r: Response = serde_json::from_str(line).unwrap();
                    serde_json::to_string(&Response::error(r.error.unwrap())).unwrap()
                }
                other => panic!("no reply type for {other}"),
            };
            assert_eq!(written, line, "{name}");
            names.push(name);
        }
        for every in [
            "status",
            "list",
            "block",
            "unblock",
            "allow",
            "allowlist",
            "disallow",
            "port_hits",
            "events",
            "error",
        ] {
            assert!(names.contains(&every), "no recorded {every} reply");
        }
    }
}
