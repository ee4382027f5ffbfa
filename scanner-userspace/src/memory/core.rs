//! The memory's work on its connection, apart from the thread that feeds
//! it: probes added, the kernel's decisions marked, the records walked, the
//! window and the cap kept. Time is a parameter, so a bench can run a week
//! of probes through the same code in seconds.

use std::net::IpAddr;

use ipnet::IpNet;
use rusqlite::Connection;

use super::{ADDRESSES_SHOWN, Probe, Settings, SlowScan, store};

/// The long memory's connection and what it does with it.
pub(crate) struct Core {
    pub(crate) conn: Connection,
}

/// The window's start as of `now_ms`.
fn since(s: &Settings, now_ms: i64) -> i64 {
    now_ms.saturating_sub(i64::try_from(s.window.as_millis()).unwrap_or(i64::MAX))
}

impl Core {
    /// Marks entries the kernel decided at `now_ms`.
    pub(crate) fn decided(&self, entries: &[(IpNet, bool)], now_ms: i64) -> rusqlite::Result<()> {
        for (net, prefix) in entries {
            let scope = if *prefix {
                store::PREFIX
            } else {
                store::SOURCE
            };
            store::mark(&self.conn, scope, net.addr(), "kernel", now_ms)?;
        }
        Ok(())
    }

    /// Adds `probes` in one transaction, then walks every source and prefix
    /// they touched: the slow scans decided.
    pub(crate) fn handle(
        &mut self,
        probes: &[Probe],
        s: &Settings,
        now_ms: i64,
    ) -> rusqlite::Result<Vec<SlowScan>> {
        let tx = self.conn.transaction()?;
        for p in probes {
            store::add(&tx, &p.seen)?;
        }
        tx.commit()?;
        Ok(self.evaluate(probes, s, now_ms))
    }

    /// Forgets what is past the window and the cap; the rows capped.
    pub(crate) fn prune(&self, s: &Settings, now_ms: i64) -> rusqlite::Result<usize> {
        store::prune(&self.conn, since(s, now_ms), s.max_rows).map(|(_, capped)| capped)
    }

    fn evaluate(&self, probes: &[Probe], s: &Settings, now_ms: i64) -> Vec<SlowScan> {
        let since = since(s, now_ms);
        let mut sources: Vec<(IpAddr, IpNet, u32)> = probes
            .iter()
            .map(|p| (p.seen.source, p.seen.net, p.ifindex))
            .collect();
        sources.sort_by_key(|&(a, ..)| a);
        sources.dedup_by_key(|&mut (a, ..)| a);
        let mut nets: Vec<(IpNet, u32)> = probes.iter().map(|p| (p.seen.net, p.ifindex)).collect();
        nets.sort_by_key(|&(n, _)| n);
        nets.dedup_by_key(|&mut (n, _)| n);
        let mut found = Vec::new();
        let mut keep = |walked: rusqlite::Result<Option<SlowScan>>,
                        what: &dyn std::fmt::Display| match walked {
            Ok(scan) => found.extend(scan),
            Err(e) => tracing::warn!("long memory: reading {what}'s record failed: {e}"),
        };
        // Prefixes first: an address whose network is decided (here, or by
        // the kernel as a distributed scan) was reported with it, and is not
        // reported again on its own.
        for (net, ifindex) in nets {
            keep(self.walk_prefix(net, ifindex, s, since, now_ms), &net);
        }
        for (source, net, ifindex) in sources {
            keep(
                self.walk_source(source, net, ifindex, s, (since, now_ms)),
                &source,
            );
        }
        found
    }

    /// One source's record walked, unless it, or its network `net`, was
    /// decided in the window.
    pub(crate) fn walk_source(
        &self,
        source: IpAddr,
        net: IpNet,
        ifindex: u32,
        s: &Settings,
        (since, now_ms): (i64, i64),
    ) -> rusqlite::Result<Option<SlowScan>> {
        if store::decided(&self.conn, store::PREFIX, net.network(), since)? {
            return Ok(None);
        }
        self.walk(IpNet::from(source), false, ifindex, s, (since, now_ms))
    }

    /// One prefix's record walked (unless it was decided in the window).
    pub(crate) fn walk_prefix(
        &self,
        net: IpNet,
        ifindex: u32,
        s: &Settings,
        since: i64,
        now_ms: i64,
    ) -> rusqlite::Result<Option<SlowScan>> {
        self.walk(net, true, ifindex, s, (since, now_ms))
    }

    /// The walk over `net`'s record (an address's, or a prefix's whole),
    /// from `since` as of `now_ms`.
    fn walk(
        &self,
        net: IpNet,
        prefix: bool,
        ifindex: u32,
        s: &Settings,
        (since, now_ms): (i64, i64),
    ) -> rusqlite::Result<Option<SlowScan>> {
        let (scope, entity) = if prefix {
            (store::PREFIX, net.network())
        } else {
            (store::SOURCE, net.addr())
        };
        if store::decided(&self.conn, scope, entity, since)? {
            return Ok(None);
        }
        let (record, mut addresses) = if prefix {
            store::prefix_record(&self.conn, net, since)?
        } else {
            (
                store::source_record(&self.conn, entity, since)?,
                vec![entity],
            )
        };
        let count = u32::try_from(addresses.len()).unwrap_or(u32::MAX);
        let decided = if prefix {
            s.rule.decide_prefix(&record, count)
        } else {
            s.rule.decide(&record)
        };
        let Some(evidence) = decided else {
            return Ok(None);
        };
        store::mark(&self.conn, scope, entity, "slow", now_ms)?;
        addresses.sort_unstable();
        addresses.truncate(ADDRESSES_SHOWN);
        let scan = SlowScan {
            net,
            prefix,
            evidence,
            addresses,
            address_count: count,
            ifindex,
        };
        Ok(Some(scan))
    }
}
