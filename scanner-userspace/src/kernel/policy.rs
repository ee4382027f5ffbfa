//! Allow and block rules in the kernel's ALLOWLIST and BLOCKLIST maps (LPM
//! tries): the allowlist, blocks with expiry, and the events they produce.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use aya::maps::{Array, LpmTrie, MapData, MapError, lpm_trie::Key};
use ipnet::IpNet;
use scanner_common::{PolicyEntry, SourceKey, action, block_reason, policy_prefix_len};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("{} is allowlisted: it is never blocked", net_name(.0))]
    Allowlisted(IpNet),
    #[error(
        "{} covers allowlisted {}: a block never touches an allowlisted host",
        net_name(.net),
        net_name(.allowed)
    )]
    CoversAllowlisted { net: IpNet, allowed: IpNet },
    #[error(
        "{} is always allowlisted: {}",
        net_name(.net),
        if net.addr().is_loopback() { "loopback" } else { "it is this host's own address" }
    )]
    AlwaysAllowed { net: IpNet },
    #[error("the block cap ({} entries) is reached: {} was not blocked", .0, net_name(.1))]
    CapReached(u32, IpNet),
    #[error("no block for {}", net_name(.0))]
    NotBlocked(IpNet),
    #[error("{} is not on the allowlist", net_name(.0))]
    NotAllowlisted(IpNet),
    #[error("updating the rule maps")]
    Map(#[from] MapError),
}

/// An address (a /32 or /128) or a CIDR prefix, with any host bits cleared
/// (`10.1.2.3/8` is `10.0.0.0/8`).
pub(crate) fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| {
            format!("{s:?} is not an IP address or CIDR (e.g. 198.51.100.7, 2001:db8::/64)")
        })
}

/// [`parse_net`] for what an operator names on the command line: a CIDR
/// with host bits set (10.1.2.3/8) is refused rather than widened to its
/// network (10.0.0.0/8) behind the operator's back.
pub(crate) fn parse_exact_net(s: &str) -> Result<ipnet::IpNet, String> {
    let net = parse_net(s)?;
    match s.parse::<ipnet::IpNet>() {
        Ok(given) if given != net => Err(format!(
            "{s} has host bits set: name the address ({}) or the network ({net})",
            given.addr()
        )),
        _ => Ok(net),
    }
}

/// An address for a host network (`/32`, `/128`), else the CIDR.
pub(crate) fn net_name(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

crate::named::named! {
    /// Why an entry is on the allowlist (`scanner allow --list`).
    pub enum AllowOrigin {
        /// Loopback or one of this host's addresses: always there.
        Host = "host",
        /// The configuration file or `--allow`.
        Config = "config",
        /// `scanner allow`.
        Runtime = "runtime",
    }
}

/// The trie key of a network (host bits cleared).
pub(crate) fn key_of(net: IpNet) -> Key<SourceKey> {
    let net = net.trunc();
    match net {
        IpNet::V4(n) => Key::new(
            policy_prefix_len(true, n.prefix_len()),
            SourceKey::from_v4(n.addr().octets()),
        ),
        IpNet::V6(n) => Key::new(
            policy_prefix_len(false, n.prefix_len()),
            SourceKey::from_v6(n.addr().octets()),
        ),
    }
}

/// The network a trie key stands for.
pub(crate) fn net_of(key: &Key<SourceKey>) -> Option<IpNet> {
    let data = key.data();
    let len = key.prefix_len();
    match data.as_v4() {
        Some(v4) if len >= 96 => IpNet::new(IpAddr::V4(Ipv4Addr::from(v4)), (len - 96) as u8).ok(),
        _ => IpNet::new(IpAddr::V6(Ipv6Addr::from(data.addr)), len as u8).ok(),
    }
}

/// A change to the rules, for the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Blocked {
        net: IpNet,
        reason: u32,
        ttl: Option<Duration>,
    },
    Unblocked {
        net: IpNet,
        expired: bool,
        /// `block_reason::*` of the lifted block: whose block it was.
        reason: u32,
    },
}

/// One of the rule tries.
pub(crate) type RuleMap = LpmTrie<MapData, SourceKey, PolicyEntry>;

pub struct Policy {
    allow_map: RuleMap,
    map: RuleMap,
    allow: Vec<(IpNet, AllowOrigin)>,
    /// Blocks as last seen, to notice the ones the kernel adds itself.
    blocks: HashMap<IpNet, PolicyEntry>,
    cap: u32,
    /// BLOCKS_EMPTY: lets packets skip the blocklist while it is empty.
    empty_flag: Option<Array<MapData, u32>>,
    /// Whether blocks are enforced; a dry run keeps them, unenforced.
    enforce: bool,
    /// RULES_GENERATION and its value: bumped after every change to the
    /// rules, so the kernel's BLOCK_CACHE drops what it holds.
    generation: (Array<MapData, u32>, u32),
}

impl Policy {
    /// `allow_map` is ALLOWLIST, `block_map` BLOCKLIST (sized to `cap`),
    /// `generation` RULES_GENERATION.
    pub fn new(
        allow_map: RuleMap,
        block_map: RuleMap,
        generation: Array<MapData, u32>,
        cap: u32,
    ) -> Self {
        let now = generation.get(&0, 0).unwrap_or(0);
        Self {
            allow_map,
            map: block_map,
            allow: Vec::new(),
            blocks: HashMap::new(),
            cap,
            empty_flag: None,
            enforce: true,
            generation: (generation, now),
        }
    }

    /// Tells the kernel the rules changed: a blocked source's next packet
    /// is judged by the tries again, not by BLOCK_CACHE. Called after every
    /// change to ALLOWLIST, BLOCKLIST (here) and PROTECTED (by its owner).
    pub fn rules_changed(&mut self) -> Result<(), MapError> {
        let (map, now) = &mut self.generation;
        *now = now.wrapping_add(1);
        map.set(0, *now, 0)
    }

    /// Runs `change` on the rule maps, then [`Self::rules_changed`],
    /// whether or not the change went through whole.
    fn changing<T>(
        &mut self,
        change: impl FnOnce(&mut Self) -> Result<T, PolicyError>,
    ) -> Result<T, PolicyError> {
        let result = change(self);
        let bumped = self.rules_changed();
        let value = result?;
        bumped?;
        Ok(value)
    }

    /// Enforces blocks, or (a dry run) keeps them in the map but has the
    /// kernel skip the blocklist, so nothing is dropped.
    pub fn set_enforcing(&mut self, enforce: bool) -> Result<(), MapError> {
        self.enforce = enforce;
        // Enforcing: look the blocklist up until a sweep finds it empty.
        self.set_empty(false)
    }

    /// Takes over the blocks an earlier daemon left in the map without
    /// reporting them again: those made at or before `reported_ns` were
    /// reported then. Newer ones and expired ones are for the next sweep to
    /// report. Returns the blocks taken over.
    pub fn restore(&mut self, reported_ns: u64, now_ns: u64) -> usize {
        let entries: Vec<(Key<SourceKey>, PolicyEntry)> =
            self.map.iter().filter_map(Result::ok).collect();
        let mut restored = 0;
        for (key, entry) in entries {
            if entry.created_ns <= reported_ns
                && entry.blocks(now_ns)
                && let Some(net) = net_of(&key)
            {
                self.blocks.insert(net, entry);
                restored += 1;
            }
        }
        restored
    }

    /// The block on exactly `net`, if any.
    pub fn block_of(&self, net: &IpNet) -> Option<&PolicyEntry> {
        self.blocks.get(&net.trunc())
    }

    /// Manages BLOCKS_EMPTY: set while a sweep finds no block, so packets
    /// skip the blocklist lookup; cleared before every block.
    pub fn with_empty_flag(mut self, map: Array<MapData, u32>) -> Self {
        self.empty_flag = Some(map);
        self
    }

    /// Sets BLOCKS_EMPTY: 1 (skip the blocklist) while it is empty, and
    /// always while blocks are not enforced.
    fn set_empty(&mut self, empty: bool) -> Result<(), MapError> {
        let skip = empty || !self.enforce;
        match &mut self.empty_flag {
            Some(m) => m.set(0, u32::from(skip), 0),
            None => Ok(()),
        }
    }

    /// Every allowlisted network.
    pub fn allowlist(&self) -> Vec<IpNet> {
        self.allow.iter().map(|(n, _)| *n).collect()
    }

    /// Every allowlisted network and why it is there.
    pub fn allow_entries(&self) -> &[(IpNet, AllowOrigin)] {
        &self.allow
    }

    pub fn enforcing(&self) -> bool {
        self.enforce
    }

    pub fn active_blocks(&self) -> usize {
        self.blocks.len()
    }

    pub fn cap(&self) -> u32 {
        self.cap
    }

    /// Whether `net` itself is blocked, as of the last sweep or change.
    pub fn is_blocked(&self, net: &IpNet) -> bool {
        self.blocks.contains_key(&net.trunc())
    }

    /// Allowlists `net`, lifting any block inside it. An entry already there
    /// keeps its origin, except that the host's own addresses stay `Host`.
    pub fn allow(
        &mut self,
        net: IpNet,
        now_ns: u64,
        origin: AllowOrigin,
    ) -> Result<Vec<Change>, PolicyError> {
        self.changing(|p| p.allow_and_lift(net, now_ns, origin))
    }

    /// [`Self::allow`], without telling the kernel.
    fn allow_and_lift(
        &mut self,
        net: IpNet,
        now_ns: u64,
        origin: AllowOrigin,
    ) -> Result<Vec<Change>, PolicyError> {
        let net = net.trunc();
        let entry = PolicyEntry {
            action: action::ALLOW,
            reason: 0,
            created_ns: now_ns,
            expires_ns: 0,
        };
        self.allow_map.insert(&key_of(net), entry, 0)?;
        match self.allow.iter_mut().find(|(n, _)| *n == net) {
            Some((_, o)) if origin == AllowOrigin::Host => *o = AllowOrigin::Host,
            Some(_) => {}
            None => self.allow.push((net, origin)),
        }
        let inside: Vec<IpNet> = self
            .blocks
            .keys()
            .filter(|b| net.contains(*b))
            .copied()
            .collect();
        let mut changes = Vec::new();
        for b in inside {
            self.map.remove(&key_of(b))?;
            let reason = self.blocks.remove(&b).map_or(0, |e| e.reason);
            changes.push(Change::Unblocked {
                net: b,
                expired: false,
                reason,
            });
        }
        Ok(changes)
    }

    /// Removes `net` from the allowlist. Loopback and the host's own
    /// addresses stay: they are refused.
    pub fn disallow(&mut self, net: IpNet) -> Result<(), PolicyError> {
        let net = net.trunc();
        let Some(i) = self.allow.iter().position(|(n, _)| *n == net) else {
            return Err(PolicyError::NotAllowlisted(net));
        };
        if self.allow[i].1 == AllowOrigin::Host {
            return Err(PolicyError::AlwaysAllowed { net });
        }
        self.changing(|p| Ok(p.allow_map.remove(&key_of(net))?))?;
        self.allow.remove(i);
        Ok(())
    }

    /// Blocks in force: network and rule.
    pub fn blocks(&self) -> impl Iterator<Item = (&IpNet, &PolicyEntry)> {
        self.blocks.iter()
    }

    /// Blocks `net` for `ttl` (None: until unblocked), for `reason`
    /// (`BLOCK_REASON_*`). Refused for allowlisted networks, networks that
    /// cover an allowlisted one, and past the cap.
    pub fn block(
        &mut self,
        net: IpNet,
        ttl: Option<Duration>,
        now_ns: u64,
        reason: u32,
    ) -> Result<Change, PolicyError> {
        let net = net.trunc();
        if self.allow.iter().any(|(a, _)| a.contains(&net)) {
            return Err(PolicyError::Allowlisted(net));
        }
        if let Some((allowed, _)) = self.allow.iter().find(|(a, _)| net.contains(a)) {
            return Err(PolicyError::CoversAllowlisted {
                net,
                allowed: *allowed,
            });
        }
        if !self.blocks.contains_key(&net) && self.blocks.len() >= self.cap as usize {
            return Err(PolicyError::CapReached(self.cap, net));
        }
        let expires_ns = ttl.map_or(0, |t| {
            now_ns.saturating_add(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX))
        });
        let entry = PolicyEntry {
            action: action::BLOCK,
            reason,
            created_ns: now_ns,
            expires_ns,
        };
        // Clear the flag first: the rule must be looked up once it exists.
        self.set_empty(false)?;
        // A block replaced (another reason, a shorter time) changes what
        // the kernel may have cached.
        self.changing(|p| Ok(p.map.insert(&key_of(net), entry, 0)?))?;
        self.blocks.insert(net, entry);
        Ok(Change::Blocked { net, reason, ttl })
    }

    /// Lifts the block a detection made on exactly `net` (reason `scan`),
    /// whether or not a sweep has seen it yet; any other block, a manual one
    /// above all, stays. Returns whether the lifted block had been reported
    /// (then an `unblocked` event is owed).
    pub fn lift_scan_block(&mut self, net: IpNet) -> Result<bool, PolicyError> {
        let net = net.trunc();
        let key = key_of(net);
        // The longest match: a scan block is a host entry, so a covering
        // prefix found here means there is none.
        match self.map.get(&key, 0) {
            Ok(entry) if entry.reason == block_reason::SCAN => {}
            _ => return Ok(false),
        }
        let reported = self.blocks.remove(&net).is_some();
        self.changing(|p| Ok(p.map.remove(&key)?))?;
        Ok(reported)
    }

    /// Lifts the block on `net`.
    pub fn unblock(&mut self, net: IpNet) -> Result<Change, PolicyError> {
        let net = net.trunc();
        let Some(entry) = self.blocks.remove(&net) else {
            return Err(PolicyError::NotBlocked(net));
        };
        self.changing(|p| Ok(p.map.remove(&key_of(net))?))?;
        Ok(Change::Unblocked {
            net,
            expired: false,
            reason: entry.reason,
        })
    }

    /// Reads the map: blocks the kernel added since the last sweep, and
    /// blocks that expired (removed here).
    pub fn sweep(&mut self, now_ns: u64) -> Result<Vec<Change>, PolicyError> {
        let mut lifted = false;
        let result = self.sweep_expired(now_ns, &mut lifted);
        if lifted {
            self.rules_changed()?;
        }
        result
    }

    /// [`Self::sweep`]; `lifted` is set once an expired block is removed.
    fn sweep_expired(
        &mut self,
        now_ns: u64,
        lifted: &mut bool,
    ) -> Result<Vec<Change>, PolicyError> {
        let mut changes = Vec::new();
        let entries: Vec<(Key<SourceKey>, PolicyEntry)> =
            self.map.iter().filter_map(Result::ok).collect();
        for (key, entry) in entries {
            let Some(net) = net_of(&key) else { continue };
            if !entry.blocks(now_ns) {
                *lifted = true;
                self.map.remove(&key)?;
                self.blocks.remove(&net);
                changes.push(Change::Unblocked {
                    net,
                    expired: true,
                    reason: entry.reason,
                });
                continue;
            }
            if self.blocks.insert(net, entry).is_none() {
                let ttl = (entry.expires_ns != 0).then(|| {
                    Duration::from_nanos(entry.expires_ns.saturating_sub(entry.created_ns))
                });
                changes.push(Change::Blocked {
                    net,
                    reason: entry.reason,
                    ttl,
                });
            }
        }
        if !self.enforce {
            self.set_empty(true)?;
        } else if self.blocks.is_empty() && self.empty_flag.is_some() {
            // Set, then look again: a block the kernel added in between
            // either is seen here (and the flag cleared) or cleared the
            // flag itself after we set it.
            self.set_empty(true)?;
            if self.map.iter().next().is_some() {
                self.set_empty(false)?;
            }
        }
        Ok(changes)
    }
}

crate::named::named! {
    /// Whose block it is: the `origin` of policy events, `block_origin` of
    /// `scanner list`, and the metrics' `origin` label.
    pub(crate) enum Origin {
        /// The kernel's (or the daemon's) response to a detected scan.
        Scan = "scan",
        /// `scanner block`, with or without --force.
        Manual = "manual",
        /// A CrowdSec decision.
        Crowdsec = "crowdsec",
    }
}

impl Origin {
    /// The origin of a block with `block_reason::*` `reason`.
    pub(crate) fn of(reason: u32) -> Self {
        match reason {
            block_reason::SCAN => Self::Scan,
            block_reason::CROWDSEC => Self::Crowdsec,
            _ => Self::Manual,
        }
    }
}

/// Networks always allowlisted: loopback and this host's own addresses.
pub(crate) fn default_allowlist() -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = vec![
        IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::LOCALHOST, 8).unwrap_or_default()),
        IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            let Some(addr) = ifa.address else { continue };
            let ip = if let Some(v4) = addr.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            let net = IpNet::from(ip);
            if !nets.iter().any(|n| n.contains(&ip)) {
                nets.push(net);
            }
        }
    }
    nets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn command_line_cidrs_with_host_bits_are_refused() {
        assert_eq!(parse_exact_net("10.0.0.0/8"), Ok(net("10.0.0.0/8")));
        assert_eq!(parse_exact_net("10.1.2.3"), Ok(net("10.1.2.3/32")));
        let err = parse_exact_net("10.1.2.3/8").unwrap_err();
        assert!(
            err.contains("10.1.2.3") && err.contains("10.0.0.0/8"),
            "{err}"
        );
    }

    #[test]
    fn keys_round_trip_for_both_families() {
        for s in [
            "198.18.0.1/32",
            "198.18.0.0/24",
            "0.0.0.0/0",
            "2001:db8::/64",
            "2001:db8::1/128",
        ] {
            let k = key_of(net(s));
            assert_eq!(net_of(&k), Some(net(s)), "{s}");
        }
        assert_eq!(key_of(net("198.18.0.0/24")).prefix_len(), 120);
        assert_eq!(key_of(net("2001:db8::/64")).prefix_len(), 64);
        // Host bits are cleared.
        assert_eq!(
            key_of(net("198.18.0.77/24")).data(),
            key_of(net("198.18.0.0/24")).data()
        );
    }

    #[test]
    fn reasons_have_names() {
        assert_eq!(Origin::of(block_reason::SCAN).as_str(), "scan");
        assert_eq!(
            Origin::of(scanner_common::block_reason::MANUAL).as_str(),
            "manual"
        );
    }

    #[test]
    fn the_default_allowlist_covers_loopback() {
        let nets = default_allowlist();
        assert!(
            nets.iter()
                .any(|n| n.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)))
        );
        assert!(
            nets.iter()
                .any(|n| n.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)))
        );
    }
}
