//! The daemon's side of the CrowdSec link (see `fleet`): ban decisions
//! pulled from the Local API enforced in the blocklist, and detections
//! pushed as alerts.
//!
//! Blocks keep their origin: a decision never overwrites a block this host
//! made itself (scan or manual), the allowlist wins (refused, with a
//! `block_refused` event), and the block cap holds. A block from CrowdSec
//! is lifted when every decision behind it is deleted, or when a start-up
//! pull no longer lists it.

use std::{collections::HashSet, time::Duration};

use ipnet::IpNet;
use scanner_common::block_reason;

use crate::{
    control::reply::FleetStatus,
    daemon::responder::Responder,
    fleet::{Pulled, decision::Target},
    kernel::{
        maps::monotonic_ns,
        policy::{Change, Origin, PolicyError, net_name},
    },
    sinks::event::{PolicyEvent, PolicyReason},
};

/// The blocks CrowdSec's bans may fill at most: a quarter of the cap stays
/// for this host's own blocks, so a Local API carrying big blocklists never
/// keeps this host from blocking the scanner in front of it.
pub(crate) fn fleet_cap(cap: u32) -> usize {
    (cap - cap / 4).max(1) as usize
}

impl Responder {
    /// Enforces one pull of the decision stream.
    pub(crate) fn enforce(&mut self, pulled: Pulled) -> anyhow::Result<()> {
        let Pulled { startup, stream } = pulled;
        let new = stream.new.unwrap_or_default();
        if startup {
            // Every active decision is in `new`: a block from CrowdSec that is
            // not was deleted while no daemon pulled.
            let active: HashSet<IpNet> = new
                .iter()
                .filter_map(|d| match d.target() {
                    Target::Ban(net, _) => Some(net.trunc()),
                    _ => None,
                })
                .collect();
            let stale: Vec<IpNet> = self
                .policy
                .blocks()
                .filter(|(net, e)| e.reason == block_reason::CROWDSEC && !active.contains(net))
                .map(|(net, _)| *net)
                .collect();
            self.enforced.ids.clear();
            for net in stale {
                self.lift(net)?;
            }
        }
        self.enforced.refused = (0, 0);
        // Deletions first: a value deleted and decided again in one pull stays.
        for d in stream.deleted.unwrap_or_default() {
            if let Target::Ban(net, _) | Target::Expired(net) = d.target() {
                let net = net.trunc();
                let left = self.enforced.ids.get_mut(&net).map(|behind| {
                    behind.ids.remove(&d.id);
                    (behind.ids.len(), behind.until_ns())
                });
                match left {
                    Some((0, _)) => {
                        self.enforced.ids.remove(&net);
                        self.lift(net)?;
                    }
                    // The longest decision left ends sooner: so does the block.
                    Some((_, until)) => self.shorten(net, until)?,
                    None => {}
                }
            }
        }
        // The established peers, read once for every ban of this pull.
        let peers = self.protected.peers();
        for d in new {
            match d.target() {
                Target::Ban(net, ttl) => self.ban(net.trunc(), ttl, d.id, &peers)?,
                Target::Expired(_) => {}
                Target::Other => {
                    let what = format!("{} of scope {}", d.kind, d.scope);
                    let n = self.enforced.ignored.entry(what.clone()).or_default();
                    if *n == 0 {
                        tracing::info!(decision = %what, value = %d.value, "CrowdSec decision not enforced: only bans of an Ip or a Range are (counted, logged once)");
                    }
                    *n += 1;
                }
            }
        }
        let (allowlist, cap) = self.enforced.refused;
        if allowlist > 0 {
            tracing::warn!(
                refused = allowlist,
                "CrowdSec bans refused: they cover allowlisted addresses"
            );
        }
        if cap > 0 {
            tracing::error!(
                refused = cap,
                limit = fleet_cap(self.policy.cap()),
                "CrowdSec bans refused: their share of the block cap is full (a quarter stays for this host's own blocks)"
            );
        }
        Ok(())
    }

    /// A block from CrowdSec on `net` that outlasts every decision left behind
    /// it ends when the longest of them does.
    fn shorten(&mut self, net: IpNet, until_ns: u64) -> anyhow::Result<()> {
        let now = monotonic_ns();
        let Some(e) = self.policy.block_of(&net).copied() else {
            return Ok(());
        };
        if e.reason != block_reason::CROWDSEC || (e.expires_ns != 0 && e.expires_ns <= until_ns) {
            return Ok(());
        }
        if until_ns <= now {
            return self.lift(net);
        }
        self.policy.block(
            net,
            Some(Duration::from_nanos(until_ns - now)),
            now,
            block_reason::CROWDSEC,
        )?;
        Ok(())
    }

    /// A ban of `net` for `ttl`, by decision `id`.
    fn ban(
        &mut self,
        net: IpNet,
        ttl: Duration,
        id: i64,
        peers: &std::collections::BTreeSet<std::net::IpAddr>,
    ) -> anyhow::Result<()> {
        let now = monotonic_ns();
        let until = now.saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX));
        let behind = self.enforced.ids.entry(net).or_default();
        behind.ids.insert(id, until);
        match self.policy.block_of(&net) {
            // This host's own block stays as it is, with its origin.
            Some(e) if e.reason != block_reason::CROWDSEC => return Ok(()),
            // Already enforced at least this long.
            Some(e) if e.expires_ns == 0 || e.expires_ns >= until => return Ok(()),
            _ => {}
        }
        let known = self.policy.block_of(&net).is_some();
        // A dry run keeps blocks unenforced: it only says what it would do.
        if !self.policy.enforcing() {
            if !known {
                self.say(PolicyEvent::blocked(
                    &net,
                    Origin::Crowdsec,
                    Some(ttl.as_secs()),
                    true,
                ));
            }
            return Ok(());
        }
        // A protected gateway, resolver or established peer is never banned by
        // the fleet (its address is what a spoofed scan elsewhere would borrow);
        // inside a range the kernel spares it, and it is said here.
        let protected = self.protected.within(&net, peers);
        if !known && !protected.is_empty() {
            for (ip, why) in &protected {
                tracing::warn!(source = %ip, protected = %crate::kernel::protect::ProtectedBy::of(*why), decision = %net_name(&net), "CrowdSec ban refused for a protected address");
                self.say(PolicyEvent::refused(
                    &IpNet::from(*ip),
                    PolicyReason::Protected,
                    Origin::Crowdsec,
                ));
            }
            if net.prefix_len() == net.max_prefix_len() {
                return Ok(());
            }
        }
        // The allowlist is the first reason to refuse, the fleet's share of the
        // cap the second.
        let allowed = self
            .policy
            .allowlist()
            .iter()
            .any(|a| a.contains(&net) || net.contains(a));
        let full =
            !known && !allowed && self.policy.active_blocks() >= fleet_cap(self.policy.cap());
        let blocked = if full {
            Err(PolicyError::CapReached(self.policy.cap(), net))
        } else {
            self.policy
                .block(net, Some(ttl), now, block_reason::CROWDSEC)
        };
        match blocked {
            Ok(_) if known => {}
            Ok(_) => self.say(PolicyEvent::blocked(
                &net,
                Origin::Crowdsec,
                Some(ttl.as_secs()),
                false,
            )),
            Err(
                e @ (PolicyError::Allowlisted(_)
                | PolicyError::CoversAllowlisted { .. }
                | PolicyError::AlwaysAllowed { .. }),
            ) => {
                tracing::debug!("CrowdSec decision refused: {e}");
                self.enforced.refused.0 += 1;
                self.say(PolicyEvent::refused(
                    &net,
                    PolicyReason::Allowlist,
                    Origin::Crowdsec,
                ));
            }
            Err(e @ PolicyError::CapReached(..)) => {
                tracing::debug!("CrowdSec decision refused: {e}");
                self.enforced.refused.1 += 1;
                self.say(PolicyEvent::refused(
                    &net,
                    PolicyReason::Cap,
                    Origin::Crowdsec,
                ));
            }
            Err(e) => return Err(anyhow::Error::from(e).context("enforcing a CrowdSec decision")),
        }
        Ok(())
    }

    /// Blocks that were just lifted by their expiry (`lifted`) while a
    /// CrowdSec ban still covers them: this host's own shorter block ran out,
    /// the fleet's ban goes on for the time it has left.
    pub(crate) fn reinstate(&mut self, lifted: &[(IpNet, u32)]) -> anyhow::Result<()> {
        let now = monotonic_ns();
        for (net, _) in lifted {
            let Some(behind) = self.enforced.ids.get(net) else {
                continue;
            };
            let until = behind.until_ns();
            // Less than a second left: let it go.
            if until <= now.saturating_add(1_000_000_000) || self.policy.block_of(net).is_some() {
                continue;
            }
            let left = Duration::from_nanos(until - now);
            let (net, id) = (*net, behind.ids.keys().next().copied().unwrap_or_default());
            // Rare (a block of this host's expired under a longer ban): the
            // socket table is read for this one.
            let peers = self.protected.peers();
            self.ban(net, left, id, &peers)?;
        }
        Ok(())
    }

    /// Lifts every block from CrowdSec (the link stopped pulling).
    pub(crate) fn lift_all(&mut self) -> anyhow::Result<()> {
        self.enforced.ids.clear();
        let fleet: Vec<IpNet> = self
            .policy
            .blocks()
            .filter(|(_, e)| e.reason == block_reason::CROWDSEC)
            .map(|(net, _)| *net)
            .collect();
        for net in fleet {
            self.lift(net)?;
        }
        Ok(())
    }

    /// Lifts a block from CrowdSec on `net` (never a block of another origin).
    fn lift(&mut self, net: IpNet) -> anyhow::Result<()> {
        if self
            .policy
            .block_of(&net)
            .is_none_or(|e| e.reason != block_reason::CROWDSEC)
        {
            return Ok(());
        }
        if let Change::Unblocked { .. } = self.policy.unblock(net)? {
            self.say(PolicyEvent::unblocked(
                &net,
                PolicyReason::Crowdsec,
                Origin::Crowdsec,
            ));
        }
        Ok(())
    }
}

/// The link's state for `scanner status`.
pub(crate) fn status(fleet: &crate::fleet::Fleet) -> FleetStatus {
    let f = fleet.figures();
    FleetStatus {
        url: fleet.url().to_owned(),
        bouncer: fleet.pulling(),
        machine: fleet.pushing(),
        last_sync: (f.last_sync_s != 0).then(|| {
            crate::sinks::event::timestamp(
                std::time::UNIX_EPOCH + Duration::from_secs(f.last_sync_s),
            )
        }),
        pull_errors: f.pull_errors,
        push_errors: f.push_errors,
        alerts_pushed: f.pushed,
        alerts_dropped: f.push_dropped,
        push_queue: u64::try_from(f.queued).unwrap_or(u64::MAX),
    }
}
