//! Sources that send a single probe, gathered by prefix in the kernel
//! (PREFIX_SLOTS, see `scanner_common::gather`), driven with
//! BPF_PROG_TEST_RUN: one probe from each of many addresses of a /64 or a
//! /24 decides the prefix; one real connection each to an open port from a
//! NAT pool, or a flood from random addresses, decides nothing.

use scanner_common::{Config, IPPROTO_TCP, SourceKey, scope};
use scanner_tests::packets::{SYN, eth, ipv4, ipv6_tcp_from, stack_syn_v4, stack_syn_v6, tcp};
use scanner_userspace::testing::EntryId;

use crate::{common::root_only, decisions_kernel::Kernel};

fn prefix(key: SourceKey) -> EntryId {
    EntryId {
        scope: scope::PREFIX,
        key,
    }
}

/// 2001:db8:0:7::`n` (one /64).
fn in_64(n: u16) -> [u8; 16] {
    let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0];
    a[14..].copy_from_slice(&n.to_be_bytes());
    a
}

fn syn_v6(src: [u8; 16], port: u16) -> Vec<u8> {
    ipv6_tcp_from(src, port, SYN)
}

fn syn_v4(src: [u8; 4], port: u16) -> Vec<u8> {
    eth(
        0x0800,
        &[],
        &ipv4(src, IPPROTO_TCP, 5, 0, &tcp(port, SYN, 5)),
    )
}

#[test]
fn one_probe_from_each_of_40_addresses_of_a_64_decides_the_64() -> anyhow::Result<()> {
    root_only!("one_probe_from_each_of_40_addresses_of_a_64_decides_the_64");
    let mut k = Kernel::new(&Config::default())?;
    for n in 1..=40u16 {
        k.send(&syn_v6(in_64(n), 1000 + n))?;
    }
    let net = SourceKey::from_v6(in_64(0));
    let p = k
        .maps
        .entry(prefix(net))
        .ok_or_else(|| anyhow::anyhow!("2001:db8:0:7::/64 untracked"))?;
    assert!(p.decided_ns > 0, "decided: {p:?}");
    assert_eq!(p.sources, 40, "every address, once");
    // Counted by the sketch until the prefix was admitted, exactly since.
    assert!((36..=40).contains(&p.ports), "{}", p.ports);
    assert!(
        p.decided_ports <= 6,
        "decided within a few probes: {}",
        p.decided_ports
    );
    let d = k.decisions();
    assert_eq!(d.len(), 1, "one decision: {d:?}");
    assert_eq!((d[0].scope, d[0].key), (scope::PREFIX, net));
    for n in 1..=40u16 {
        let source = EntryId {
            scope: scope::SOURCE,
            key: SourceKey::from_v6(in_64(n)),
        };
        assert_eq!(k.maps.entry(source), None, "no address is admitted alone");
    }
    Ok(())
}

#[test]
fn one_probe_from_each_of_40_addresses_of_a_24_decides_the_24() -> anyhow::Result<()> {
    root_only!("one_probe_from_each_of_40_addresses_of_a_24_decides_the_24");
    let mut k = Kernel::new(&Config::default())?;
    for n in 1..=40u8 {
        k.send(&syn_v4([198, 18, 5, n], 2000 + u16::from(n)))?;
    }
    let net = SourceKey::from_v4([198, 18, 5, 0]);
    let p = k
        .maps
        .entry(prefix(net))
        .ok_or_else(|| anyhow::anyhow!("198.18.5.0/24 untracked"))?;
    assert!(p.decided_ns > 0);
    assert_eq!(p.sources, 40);
    assert_eq!(k.decisions().len(), 1);
    Ok(())
}

#[test]
fn a_nat_pool_of_clients_of_one_open_port_is_not_a_scan() -> anyhow::Result<()> {
    root_only!("a_nat_pool_of_clients_of_one_open_port_is_not_a_scan");
    let mut k = Kernel::new(&Config::default())?;
    k.open_tcp(&[443])?;
    // 200 addresses of one /24, each an operating system's connection to
    // the open port (a CDN's health checkers, a NAT pool), and a few of
    // them trying a closed port too.
    for n in 1..=200u8 {
        k.send(&stack_syn_v4([198, 18, 6, n], 443))?;
    }
    for n in 1..=3u8 {
        k.send(&stack_syn_v4([198, 18, 6, n], 8443))?;
    }
    let d = k.decisions();
    assert!(d.is_empty(), "{d:?}");
    // The same over IPv6, from one /64.
    for n in 1..=200u16 {
        k.send(&stack_syn_v6(in_64(n), 443))?;
    }
    assert!(k.decisions().is_empty());
    Ok(())
}

#[test]
fn a_flood_from_random_addresses_decides_nothing() -> anyhow::Result<()> {
    root_only!("a_flood_from_random_addresses_decides_nothing");
    let mut k = Kernel::new(&Config::default())?;
    // 20,000 addresses spread over 2001:db8::/32, one SYN each to a port
    // of its own: each /64 sees one source.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..20_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        a[4..12].copy_from_slice(&x.to_be_bytes());
        a[12..].copy_from_slice(&i.to_be_bytes());
        k.send(&syn_v6(a, (i % 60_000) as u16 + 1))?;
    }
    let d = k.decisions();
    assert!(d.is_empty(), "{} decisions: {:?}", d.len(), d.first());
    Ok(())
}
