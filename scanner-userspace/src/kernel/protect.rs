//! Sources that are never blocked, whatever they do: a SYN scan needs no
//! handshake, so its source address can be anyone's, and with blocking on a
//! spoofed scan could make this host cut off its own default gateway, its
//! DNS resolver or a peer it is talking to. Those are detected and
//! reported as usual, with `action: "protected"`, and never blocked.
//!
//! Gateways and resolvers go into the kernel's PROTECTED map, which the XDP
//! program reads at a decision (never per packet) before blocking; they are
//! re-read with the open ports. Established peers change too fast for a map:
//! the daemon reads the socket table when a source is decided, and lifts the
//! block the kernel made at the deciding probe.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{HashMap, MapData, MapError};
use scanner_common::{SourceKey, names::PROTECTED_CAPACITY, protect};

use crate::audit::listeners;

/// Which kinds of source are protected (`response.protect_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Protection {
    pub gateways: bool,
    pub resolvers: bool,
    pub established: bool,
}

crate::named::named! {
    /// Why a source is never blocked: the `protected` of events and
    /// `scanner list`.
    pub(crate) enum ProtectedBy {
        /// A default gateway of this host.
        Gateway = "gateway",
        /// A DNS resolver of this host.
        Resolver = "resolver",
        /// A peer this host has a connection with.
        Established = "established",
    }
}

impl ProtectedBy {
    /// The meaning of a `protect::*` reason.
    pub(crate) fn of(reason: u32) -> Self {
        match reason {
            protect::GATEWAY => Self::Gateway,
            protect::RESOLVER => Self::Resolver,
            _ => Self::Established,
        }
    }
}

/// The key of an address in the kernel's maps.
pub(crate) fn key_of(ip: IpAddr) -> SourceKey {
    match ip.to_canonical() {
        IpAddr::V4(v4) => SourceKey::from_v4(v4.octets()),
        IpAddr::V6(v6) => SourceKey::from_v6(v6.octets()),
    }
}

/// The PROTECTED map and what is in it.
pub(crate) struct Protected {
    map: HashMap<MapData, SourceKey, u32>,
    kinds: Protection,
    /// The gateways and resolvers now in the map.
    current: BTreeMap<IpAddr, u32>,
}

impl Protected {
    pub(crate) fn new(map: HashMap<MapData, SourceKey, u32>, kinds: Protection) -> Self {
        Self {
            map,
            kinds,
            current: BTreeMap::new(),
        }
    }

    /// Which kinds are protected (a configuration reload changes them).
    pub(crate) fn set_kinds(&mut self, kinds: Protection) {
        self.kinds = kinds;
    }

    /// Re-reads the host's gateways and resolvers into the map; returns
    /// them when they changed.
    pub(crate) fn refresh(&mut self) -> Result<Option<&BTreeMap<IpAddr, u32>>, MapError> {
        let mut wanted = BTreeMap::new();
        if self.kinds.resolvers {
            for ip in resolvers() {
                wanted.insert(ip, protect::RESOLVER);
            }
        }
        if self.kinds.gateways {
            // A gateway that is also the resolver is named a gateway.
            for ip in gateways() {
                wanted.insert(ip, protect::GATEWAY);
            }
        }
        if wanted == self.current {
            return Ok(None);
        }
        for ip in self.current.keys().filter(|ip| !wanted.contains_key(ip)) {
            let _ = self.map.remove(&key_of(*ip));
        }
        for (ip, reason) in wanted.iter().take(PROTECTED_CAPACITY as usize) {
            self.map.insert(key_of(*ip), reason, 0)?;
        }
        self.current = wanted;
        Ok(Some(&self.current))
    }

    /// The peers of established TCP connections, when they are protected
    /// (one read of the socket table: take it once for many addresses).
    pub(crate) fn peers(&self) -> BTreeSet<IpAddr> {
        if self.kinds.established {
            listeners::established_peers()
        } else {
            BTreeSet::new()
        }
    }

    /// The protected addresses `net` covers, with why: for one address, a
    /// gateway, resolver or one of `peers` (from [`Self::peers`]); for a
    /// CIDR, the gateways and resolvers inside it (peers of established
    /// connections are not enumerated).
    pub(crate) fn within(
        &self,
        net: &ipnet::IpNet,
        peers: &BTreeSet<IpAddr>,
    ) -> Vec<(IpAddr, u32)> {
        if net.prefix_len() == net.max_prefix_len() {
            return self
                .reason_among(net.addr(), peers)
                .map(|r| (net.addr(), r))
                .into_iter()
                .collect();
        }
        self.current
            .iter()
            .filter(|(ip, _)| net.contains(*ip))
            .map(|(ip, r)| (*ip, *r))
            .collect()
    }

    /// Why `ip` is protected now, if it is: a gateway or resolver of the
    /// map, or (reading the socket table) a peer of an established TCP
    /// connection.
    pub(crate) fn reason(&self, ip: IpAddr) -> Option<u32> {
        let ip = ip.to_canonical();
        if let Some(reason) = self.current.get(&ip) {
            return Some(*reason);
        }
        // The connections with this one address, picked in the kernel.
        (self.kinds.established && listeners::established_with(ip) > 0)
            .then_some(protect::ESTABLISHED)
    }

    /// [`Self::reason`] with the established peers already read.
    fn reason_among(&self, ip: IpAddr, peers: &BTreeSet<IpAddr>) -> Option<u32> {
        let ip = ip.to_canonical();
        if let Some(reason) = self.current.get(&ip) {
            return Some(*reason);
        }
        peers.contains(&ip).then_some(protect::ESTABLISHED)
    }
}

/// The default gateways, from /proc/net/route and /proc/net/ipv6_route.
pub(crate) fn gateways() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/route") {
        out.extend(parse_route(&text));
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/ipv6_route") {
        out.extend(parse_ipv6_route(&text));
    }
    out
}

/// The DNS resolvers: /etc/resolv.conf, and systemd-resolved's upstream
/// servers when its state is readable (resolv.conf then names its stub).
pub(crate) fn resolvers() -> Vec<IpAddr> {
    let mut out = Vec::new();
    for file in ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            for ip in parse_resolv_conf(&text) {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// IPv4 default routes' gateways: destination 0, a non-zero gateway (both
/// printed as hex words in host byte order).
pub(crate) fn parse_route(text: &str) -> Vec<IpAddr> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, gw) = (f.get(1)?, f.get(2)?);
            let gw = u32::from_str_radix(gw, 16).ok()?;
            (*dest == "00000000" && gw != 0).then(|| IpAddr::V4(Ipv4Addr::from(gw.to_ne_bytes())))
        })
        .collect()
}

/// IPv6 default routes' next hops: destination ::/0, a non-zero next hop
/// (32 hex digits in network order).
pub(crate) fn parse_ipv6_route(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, len, hop) = (f.first()?, f.get(1)?, f.get(4)?);
            if dest.chars().any(|c| c != '0') || *len != "00" {
                return None;
            }
            let hop = u128::from_str_radix(hop, 16).ok()?;
            (hop != 0).then(|| IpAddr::V6(Ipv6Addr::from(hop)))
        })
        .collect()
}

/// `nameserver` lines; loopback stubs are left out (loopback is allowlisted).
pub(crate) fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("nameserver")?;
            // A scoped IPv6 address (fe80::1%eth0) names its interface.
            let addr = rest.trim().split('%').next()?;
            addr.parse::<IpAddr>().ok()
        })
        .filter(|ip| !ip.is_loopback())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_name_their_gateways() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
        assert_eq!(parse_route(v4), ["198.18.0.1".parse::<IpAddr>().unwrap()]);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000000000000000000000001 00000400 00000001 00000000 00000003 eth0
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0
";
        assert_eq!(
            parse_ipv6_route(v6),
            ["2001:db8::1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn resolvers_come_from_nameserver_lines() {
        let text = "# comment\nnameserver 198.18.0.53\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nsearch lab\n";
        let found: Vec<String> = parse_resolv_conf(text)
            .iter()
            .map(IpAddr::to_string)
            .collect();
        assert_eq!(found, ["198.18.0.53", "fe80::1"]);
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let mapped: IpAddr = "::ffff:198.18.0.9".parse().unwrap();
        assert_eq!(
            mapped.to_canonical(),
            "198.18.0.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(key_of(mapped), SourceKey::from_v4([198, 18, 0, 9]));
        assert_eq!(ProtectedBy::of(protect::GATEWAY).as_str(), "gateway");
        assert_eq!(
            ProtectedBy::of(protect::ESTABLISHED).as_str(),
            "established"
        );
    }
}
