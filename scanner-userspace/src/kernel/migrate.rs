//! Pinned state of the previous layout version (see `STATE_VERSION`).
//!
//! A new layout lives in its own `v<N>` directory, so a daemon never opens
//! maps whose key, value or type changed. What an operator would miss is
//! carried over from `v3`: blocks (with their original expiry), runtime
//! allowlist entries, the "reported up to" mark (so nothing is reported
//! twice) and the per-port probe counts of the open-ports audit. Tracked
//! sources start fresh: their layout changed. The old directory is removed,
//! and one log line says what happened. A directory a running daemon of
//! the old version still holds is left alone, and said so.

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{Array, LpmTrie, Map, MapData, lpm_trie::Key},
};
use scanner_common::{
    PolicyEntry, PortHits, SourceKey,
    names::{ALLOWLIST_MAP, BLOCKLIST_MAP, PORT_HITS_ENTRIES, PORT_HITS_MAP, REPORTED_MAP},
};

use crate::kernel::{batch, pin::PinDir};

/// The layout this version migrates from.
pub const PREVIOUS_VERSION: u32 = 3;

/// What was carried over.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Migrated {
    pub from: PathBuf,
    pub blocks: usize,
    pub allows: usize,
    pub reported: bool,
    pub port_hits: usize,
}

/// Carries the previous layout's state into the freshly loaded maps of
/// `ebpf` (pinned in `pins`), then removes the old directory. Logs one line
/// either way; returns what was migrated.
pub(crate) fn migrate(pins: &PinDir, ebpf: &mut Ebpf) -> Option<Migrated> {
    let old = pins.sibling(PREVIOUS_VERSION)?;
    let Some(_lock) = PinDir::lock_other(&old) else {
        tracing::warn!(
            "a daemon of the previous version holds the pinned state in {}: left alone (not migrated)",
            old.display()
        );
        return None;
    };
    let mut m = Migrated {
        from: old.clone(),
        ..Migrated::default()
    };
    let mut failed = Vec::new();
    match copy_rules(&old, BLOCKLIST_MAP, ebpf) {
        Ok(n) => m.blocks = n,
        Err(e) => failed.push(format!("blocks: {e:#}")),
    }
    match copy_rules(&old, ALLOWLIST_MAP, ebpf) {
        Ok(n) => m.allows = n,
        Err(e) => failed.push(format!("allowlist: {e:#}")),
    }
    match copy_reported(&old, pins) {
        Ok(done) => m.reported = done,
        Err(e) => failed.push(format!("reported mark: {e:#}")),
    }
    match copy_port_hits(&old, ebpf) {
        Ok(n) => m.port_hits = n,
        Err(e) => failed.push(format!("port audit: {e:#}")),
    }
    // The old directory goes only when everything came over: what did not
    // stays there for the operator (the log line says what).
    let removed = if failed.is_empty() {
        std::fs::remove_dir_all(&old).map(|()| true)
    } else {
        Ok(false)
    };
    tracing::warn!(
        "pinned state of layout v{PREVIOUS_VERSION} in {} migrated: {} blocks, {} allowlist \
         entries, {} ports' probe counts{}; tracked sources start fresh (their layout changed){}{}",
        old.display(),
        m.blocks,
        m.allows,
        m.port_hits,
        if m.reported {
            ", the reported mark"
        } else {
            ""
        },
        if failed.is_empty() {
            String::new()
        } else {
            format!("; not carried over: {}", failed.join("; "))
        },
        match removed {
            Ok(true) => String::new(),
            Ok(false) => "; the old directory is kept".to_owned(),
            Err(e) => format!("; could not remove it: {e}"),
        }
    );
    Some(m)
}

fn open(dir: &Path, name: &str) -> anyhow::Result<Option<MapData>> {
    let path = dir.join(name);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(MapData::from_pin(&path)?))
}

/// Copies an LPM trie of rules (same key and value in both layouts).
fn copy_rules(old: &Path, name: &'static str, ebpf: &mut Ebpf) -> anyhow::Result<usize> {
    let Some(data) = open(old, name)? else {
        return Ok(0);
    };
    let from: LpmTrie<MapData, SourceKey, PolicyEntry> = LpmTrie::try_from(Map::LpmTrie(data))?;
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| anyhow::anyhow!("no map {name}"))?;
    let mut to: LpmTrie<&mut MapData, SourceKey, PolicyEntry> = LpmTrie::try_from(map)?;
    let entries: Vec<(Key<SourceKey>, PolicyEntry)> = from.iter().filter_map(Result::ok).collect();
    let mut n = 0;
    for (key, value) in entries {
        if to.get(&key, 0).is_err() {
            to.insert(&key, value, 0)
                .map_err(|e| anyhow::anyhow!("{n} copied, then: {e}"))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Pins the old "reported up to" mark as this layout's, unless it has one.
fn copy_reported(old: &Path, pins: &PinDir) -> anyhow::Result<bool> {
    let path = pins.map(REPORTED_MAP);
    let Some(data) = open(old, REPORTED_MAP)? else {
        return Ok(false);
    };
    if path.exists() {
        return Ok(false);
    }
    let from: Array<MapData, u64> = Array::try_from(Map::Array(data))?;
    let mark = from.get(&0, 0)?;
    let mut to = Array::<MapData, u64>::create(1, 0)?;
    to.set(0, mark, 0)?;
    to.pin(&path)?;
    Ok(true)
}

/// Copies the per-port probe counts (same layout in both).
fn copy_port_hits(old: &Path, ebpf: &mut Ebpf) -> anyhow::Result<usize> {
    let Some(data) = open(old, PORT_HITS_MAP)? else {
        return Ok(0);
    };
    let (keys, values) =
        batch::read_all::<u32, PortHits>(data.fd().as_fd(), 1, PORT_HITS_ENTRIES as usize)?;
    let map = ebpf
        .map_mut(PORT_HITS_MAP)
        .ok_or_else(|| anyhow::anyhow!("no map {PORT_HITS_MAP}"))?;
    let mut to: Array<&mut MapData, PortHits> = Array::try_from(map)?;
    let mut n = 0;
    for (k, v) in keys.into_iter().zip(values) {
        if v != PortHits::default() {
            to.set(k, v, 0)?;
            n += 1;
        }
    }
    Ok(n)
}
