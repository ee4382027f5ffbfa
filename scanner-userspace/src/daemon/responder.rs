//! The Responder: what the daemon does about detections and decisions,
//! and the state that takes. It owns the allow and block rules (`Policy`),
//! the protected sources, the detections held for their decoy group, and
//! the CrowdSec decisions behind blocks; its methods change them and say
//! what they did as policy events, which the daemon writes in order
//! (`Output::flush`). It writes nothing itself.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use scanner_common::{SourceKey, SourceStats, block_reason};

use crate::{
    config::settings::Settings,
    daemon::enforced::Enforced,
    detect::{EntryId, decoy::Decoys},
    kernel::{
        maps::{Maps, monotonic_ns},
        policy::{self, Change, Origin, Policy, PolicyError, net_name},
        protect::{self, Protected, ProtectedBy},
    },
    sinks::event::{PolicyEvent, PolicyReason, ip_of},
};

/// Most protected detections remembered for `scanner list`.
const PROTECTED_SCANS: usize = 4096;

pub(crate) struct Responder {
    pub(crate) policy: Policy,
    /// Sources never blocked (gateways, resolvers, established peers).
    pub(crate) protected: Protected,
    /// Detected sources found protected at their latest detection, and why
    /// (for `scanner list`).
    protected_scans: HashMap<IpAddr, ProtectedBy>,
    /// Source detections held for their decoy group, and the groups found.
    pub(crate) decoys: Decoys,
    /// The latest read of the undecided sources that could join a held
    /// detection's group: when, how long it took, what it found.
    pub(crate) undecided: Option<(Instant, Duration, Vec<SourceStats>)>,
    /// The CrowdSec decisions behind blocks.
    pub(crate) enforced: Enforced,
    /// What the methods did, not yet written.
    said: Vec<PolicyEvent>,
}

impl Responder {
    pub(crate) fn new(policy: Policy, protected: Protected) -> Self {
        Self {
            policy,
            protected,
            protected_scans: HashMap::new(),
            decoys: Decoys::default(),
            undecided: None,
            enforced: Enforced::default(),
            said: Vec::new(),
        }
    }

    /// Records what a method did, for the daemon to write.
    pub(crate) fn say(&mut self, event: PolicyEvent) {
        self.said.push(event);
    }

    /// What was done since the last call, in order.
    pub(crate) fn take_said(&mut self) -> Vec<PolicyEvent> {
        std::mem::take(&mut self.said)
    }

    /// At a source's detection: whether it is protected now, and why
    /// (remembered for `scanner list` until its next detection).
    pub(crate) fn protection_at_detection(&mut self, ip: IpAddr) -> Option<ProtectedBy> {
        let why = self.protected.reason(ip).map(ProtectedBy::of);
        match why {
            Some(why) => {
                // A handful in practice; bounded all the same.
                if self.protected_scans.len() >= PROTECTED_SCANS {
                    self.protected_scans.clear();
                }
                self.protected_scans.insert(ip, why)
            }
            None => self.protected_scans.remove(&ip),
        };
        why
    }

    /// Why `ip` was protected at its latest detection, if it was.
    pub(crate) fn protection_of(&self, ip: IpAddr) -> Option<ProtectedBy> {
        self.protected_scans.get(&ip).copied()
    }

    /// A protected source was detected: it is not blocked. The kernel does not
    /// block gateways and resolvers; an established peer it may have blocked at
    /// the deciding probe, and that block is lifted here, before it is ever
    /// reported (or, if a sweep reported it already, with an `unblocked` event).
    pub(crate) fn spare(
        &mut self,
        maps: &mut Maps,
        ip: IpAddr,
        why: ProtectedBy,
    ) -> anyhow::Result<()> {
        tracing::warn!(source = %ip, protected = %why, "protected source detected: reported, not blocked");
        self.lift_protected(maps, ip)?;
        Ok(())
    }

    /// Addresses that became protected (a new gateway or resolver): a scan's
    /// block on one of them is lifted, since the kernel spares protected
    /// addresses only from other blocks (see `verdict::spares_protected`).
    pub(crate) fn spare_protected(
        &mut self,
        maps: &mut Maps,
        ips: &[IpAddr],
    ) -> anyhow::Result<()> {
        for ip in ips {
            if self.lift_protected(maps, *ip)? {
                tracing::warn!(source = %ip, "a blocked scanner's address is protected now (a gateway or resolver): block lifted");
            }
        }
        Ok(())
    }

    /// Lifts the scan block on protected `ip` (an `unblocked` event when it had
    /// been reported) and unmarks its entry, or the kernel would block it again
    /// at its next probe, as it does a scanner whose block lapsed. Whether a
    /// block was lifted.
    fn lift_protected(&mut self, maps: &mut Maps, ip: IpAddr) -> anyhow::Result<bool> {
        let net = ipnet::IpNet::from(ip);
        maps.unmark_blocked(&protect::key_of(ip));
        let lifted = self
            .policy
            .lift_scan_block(net)
            .context("lifting a protected address's block")?;
        if lifted {
            self.say(PolicyEvent::unblocked(
                &net,
                PolicyReason::Protected,
                Origin::Scan,
            ));
        }
        Ok(lifted)
    }

    /// After a source's detection: the block the kernel made (or could not),
    /// or what a dry run would have done.
    pub(crate) fn respond(&mut self, settings: &Settings, id: EntryId) -> anyhow::Result<()> {
        let net = ipnet::IpNet::from(ip_of(&id.key));
        let ttl = settings.block_ttl();
        if settings.dry_run() {
            let event = PolicyEvent::blocked(&net, Origin::Scan, Some(ttl.as_secs()), true);
            self.say(event);
            return Ok(());
        }
        if !settings.blocks() {
            return Ok(());
        }
        // The kernel blocked at the deciding probe; the sweep reports it.
        self.sweep()?;
        if self.policy.is_blocked(&net) {
            return Ok(());
        }
        // Decided before blocking was on, or the kernel's insert failed: block
        // it here, unless the cap is what stopped it.
        match self
            .policy
            .block(net, Some(ttl), monotonic_ns(), block_reason::SCAN)
        {
            Ok(_) => self.say(PolicyEvent::blocked(
                &net,
                Origin::Scan,
                Some(ttl.as_secs()),
                false,
            )),
            Err(PolicyError::CapReached(cap, _)) => {
                tracing::error!(source = %net_name(&net), cap, "block refused: the block cap is reached; still reporting");
                self.say(PolicyEvent::refused(&net, PolicyReason::Cap, Origin::Scan));
            }
            Err(e) => return Err(e).context("blocking a detected source"),
        }
        Ok(())
    }

    /// Reports blocks the kernel made and blocks that expired (now removed);
    /// returns the networks unblocked, with their block's reason.
    pub(crate) fn sweep(&mut self) -> anyhow::Result<Vec<(ipnet::IpNet, u32)>> {
        let changes = self
            .policy
            .sweep(monotonic_ns())
            .context("reading the BLOCKLIST map")?;
        let mut lifted = Vec::new();
        for change in changes {
            if let Change::Unblocked { net, reason, .. } = &change {
                lifted.push((*net, *reason));
            }
            let event = match change {
                Change::Blocked { net, reason, ttl } => {
                    PolicyEvent::blocked(&net, Origin::of(reason), ttl.map(|t| t.as_secs()), false)
                }
                Change::Unblocked {
                    net,
                    expired,
                    reason,
                } => PolicyEvent::unblocked(
                    &net,
                    if expired {
                        PolicyReason::Expired
                    } else {
                        PolicyReason::Manual
                    },
                    Origin::of(reason),
                ),
            };
            self.say(event);
        }
        Ok(lifted)
    }
}

/// The source key of a host network (/32, /128).
pub(crate) fn host_key(net: &ipnet::IpNet) -> Option<SourceKey> {
    (net.prefix_len() == net.max_prefix_len()).then(|| policy::key_of(*net).data())
}

/// After blocks lapsed (`lifted`, from [`Responder::sweep`]): a source whose
/// block was not the kernel's own starts afresh, so if it scans on it is
/// decided, and blocked, again. A scanner the kernel blocked at its decision
/// keeps its entry: the kernel blocks it again at its next probe, the same
/// scan.
pub(crate) fn forget_lifted(maps: &mut Maps, lifted: &[(ipnet::IpNet, u32)]) {
    for (net, reason) in lifted {
        if *reason != block_reason::SCAN
            && let Some(key) = host_key(net)
        {
            maps.forget(&key);
        }
    }
}
