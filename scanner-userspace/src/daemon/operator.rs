//! What operators ask of the [`Responder`]: `scanner block`, `unblock`,
//! `allow` and `disallow`, and the allowlist a reloaded file brings. Each
//! changes the rules and says so in policy events.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;
use scanner_common::block_reason;

use crate::{
    config::settings::Settings,
    daemon::responder::{Responder, host_key},
    kernel::{
        maps::{Maps, monotonic_ns},
        policy::{AllowOrigin, Change, Origin},
        protect::ProtectedBy,
    },
    sinks::event::{PolicyEvent, PolicyName, PolicyReason, ip_of},
};

/// What `scanner block` did.
pub(crate) struct ManualBlock {
    /// Seconds the block lasts; None for one without expiry.
    pub(crate) ttl_s: Option<u64>,
    /// A block already there lasts longer, and stays.
    pub(crate) kept: bool,
    /// Protected addresses inside the network: spared by the kernel, or,
    /// with `force`, blocked with it.
    pub(crate) protected: Vec<(IpAddr, ProtectedBy)>,
}

impl Responder {
    /// Blocks `net` for `asked`, or the default TTL. A block already there
    /// that lasts longer is kept unless a TTL was asked for. A protected
    /// address named on its own needs `force`; inside a network the kernel
    /// spares it, and each is said as refused. In a dry run the block is
    /// recorded but not enforced.
    pub(crate) fn block_manual(
        &mut self,
        net: IpNet,
        asked: Option<Duration>,
        force: bool,
        settings: &Settings,
    ) -> anyhow::Result<ManualBlock> {
        let protected: Vec<(IpAddr, ProtectedBy)> = self
            .protected
            .within(&net, &self.protected.peers())
            .into_iter()
            .map(|(ip, why)| (ip, ProtectedBy::of(why)))
            .collect();
        let is_host = net.prefix_len() == net.max_prefix_len();
        if !force
            && is_host
            && let Some((ip, why)) = protected.first()
        {
            anyhow::bail!(
                "{ip} is protected ({why}): blocking it would cut this host off from its {}; `scanner block --force {ip}` blocks it anyway",
                match why {
                    ProtectedBy::Gateway => "default gateway",
                    ProtectedBy::Resolver => "DNS resolver",
                    ProtectedBy::Established => "established connection with it",
                }
            );
        }
        let ttl = asked.unwrap_or(settings.block_ttl());
        let now = monotonic_ns();
        let wanted_until = now.saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX));
        if asked.is_none()
            && let Some(existing) = self.policy.block_of(&net)
            && (existing.expires_ns == 0 || existing.expires_ns >= wanted_until)
        {
            let left = (existing.expires_ns != 0)
                .then(|| Duration::from_nanos(existing.expires_ns.saturating_sub(now)).as_secs());
            return Ok(ManualBlock {
                ttl_s: left,
                kept: true,
                protected,
            });
        }
        let reason = if force {
            block_reason::FORCED
        } else {
            block_reason::MANUAL
        };
        self.policy.block(net, Some(ttl), now, reason)?;
        self.say(PolicyEvent::blocked(
            &net,
            Origin::Manual,
            Some(ttl.as_secs()),
            settings.dry_run(),
        ));
        if !force {
            for (ip, _) in &protected {
                self.say(PolicyEvent::refused(
                    &IpNet::from(*ip),
                    PolicyReason::Protected,
                    Origin::Manual,
                ));
            }
        }
        Ok(ManualBlock {
            ttl_s: Some(ttl.as_secs()),
            kept: false,
            protected,
        })
    }

    /// `scanner unblock`: lifts the block on `net`; a source it covered
    /// starts afresh.
    pub(crate) fn unblock_manual(&mut self, maps: &mut Maps, net: IpNet) -> anyhow::Result<()> {
        let origin = match self.policy.unblock(net)? {
            Change::Unblocked { reason, .. } => Origin::of(reason),
            Change::Blocked { .. } => Origin::Manual,
        };
        if let Some(key) = host_key(&net) {
            maps.forget(&key);
        }
        self.say(PolicyEvent::unblocked(&net, PolicyReason::Manual, origin));
        Ok(())
    }

    /// `scanner allow`: allowlists `net`, lifting the blocks it covers
    /// (returned) and forgetting the sources inside it.
    pub(crate) fn allow_runtime(
        &mut self,
        maps: &mut Maps,
        net: IpNet,
    ) -> anyhow::Result<Vec<IpNet>> {
        let lifted = self.allow(net, AllowOrigin::Runtime)?;
        maps.forget_where(|k| net.contains(&ip_of(k)));
        self.say(PolicyEvent::allowlist(PolicyName::Allowlisted, &net));
        Ok(lifted)
    }

    /// `scanner disallow`: takes `net` off the allowlist.
    pub(crate) fn disallow(&mut self, net: IpNet) -> anyhow::Result<()> {
        self.policy.disallow(net)?;
        self.say(PolicyEvent::allowlist(PolicyName::Disallowed, &net));
        Ok(())
    }

    /// Allowlists `net` for `origin`; the blocks it lifts are said and
    /// returned.
    pub(crate) fn allow(&mut self, net: IpNet, origin: AllowOrigin) -> anyhow::Result<Vec<IpNet>> {
        let mut lifted = Vec::new();
        for change in self.policy.allow(net, monotonic_ns(), origin)? {
            if let Change::Unblocked {
                net: gone, reason, ..
            } = change
            {
                self.say(PolicyEvent::unblocked(
                    &gone,
                    PolicyReason::Manual,
                    Origin::of(reason),
                ));
                lifted.push(gone);
            }
        }
        Ok(lifted)
    }
}
