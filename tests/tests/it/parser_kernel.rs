//! The XDP program in the kernel, driven with BPF_PROG_TEST_RUN: every parser
//! case passes and leaves exactly the expected map updates.

use scanner_common::{Config, IPPROTO_TCP, SourceKey, class, first};
use scanner_tests::packets::{ACK, Expect, SYN, cases, ipv4_tcp, v4};
use scanner_userspace::testing::{Maps, load};

use crate::common::{XDP_PASS, run};

#[test]
fn every_case_passes_with_the_expected_map_updates() -> anyhow::Result<()> {
    if !scanner_tests::require_root("every_case_passes_with_the_expected_map_updates") {
        return Ok(());
    }
    let mut ebpf = load::load(&Config::default())?;
    let cases = cases();
    for case in &cases {
        assert_eq!(run(&ebpf, &case.frame)?, XDP_PASS, "{}", case.name);
    }
    let maps = Maps::take(&mut ebpf)?;
    let mut expected_waiting = Vec::new();
    for case in &cases {
        let Expect::Tracked {
            source,
            class,
            proto,
            dport,
            probe,
        } = case.expect
        else {
            continue;
        };
        // One probe is remembered in the source's first-probe slot; a
        // reply leaves no trace at all.
        let first = maps.first_probe(&source);
        if !probe {
            assert_eq!(first, None, "{}: a reply is not a probe", case.name);
            continue;
        }
        expected_waiting.push(source);
        let first = first.ok_or_else(|| anyhow::anyhow!("{}: probe not remembered", case.name))?;
        assert_eq!(
            (
                first.port,
                first.proto,
                usize::from(first.traits & first::CLASS_MASK)
            ),
            (dport, proto, class),
            "{}",
            case.name
        );
        assert!(first.seen_ns > 0, "{}", case.name);
    }
    // One probe each: no source was admitted, and no other was remembered.
    assert!(maps.sources().is_empty(), "{:?}", maps.sources());
    expected_waiting.sort();
    expected_waiting.dedup();
    assert_eq!(maps.waiting(), expected_waiting.len());

    let c = maps.counters()?;
    let n = cases.len() as u64;
    let failures = cases
        .iter()
        .filter(|c| c.expect == Expect::ParseFailure)
        .count() as u64;
    assert_eq!((c.seen, c.passed, c.dropped), (n, n, 0));
    assert_eq!(c.parse_failures, failures);
    let fragments = cases
        .iter()
        .filter(|c| c.expect == Expect::Fragment)
        .count() as u64;
    assert_eq!(c.fragments, fragments, "later fragments are counted");
    Ok(())
}

#[test]
fn fan_out_counts_each_port_once_per_window() -> anyhow::Result<()> {
    if !scanner_tests::require_root("fan_out_counts_each_port_once_per_window") {
        return Ok(());
    }
    let mut ebpf = load::load(&Config::default())?;
    for frame in [
        ipv4_tcp(1, 22, SYN),
        ipv4_tcp(1, 22, SYN),
        ipv4_tcp(1, 80, SYN),
        ipv4_tcp(1, 80, ACK), // the handshake's ACK: same port, no new fan-out
        ipv4_tcp(1, 443, SYN),
    ] {
        assert_eq!(run(&ebpf, &frame)?, XDP_PASS);
    }
    let maps = Maps::take(&mut ebpf)?;
    let source = SourceKey::from_v4(v4(1));
    let s = maps
        .source(&source)
        .ok_or_else(|| anyhow::anyhow!("not tracked"))?;
    assert_eq!((s.ports, s.window_ports), (3, 3));
    // The repeated first probe waited with the first one: it admitted
    // nothing and is not counted again.
    assert_eq!(s.probes, 4);
    assert_eq!(s.classes[class::SYN], 3);
    assert_eq!(&s.sample_ports[..3], &[22, 80, 443]);
    assert_eq!(
        maps.port(source, IPPROTO_TCP, 22).map(|p| p.probes),
        Some(1)
    );
    assert_eq!(
        maps.port(source, IPPROTO_TCP, 80).map(|p| p.probes),
        Some(2)
    );
    Ok(())
}

#[test]
fn a_new_window_starts_the_count_again() -> anyhow::Result<()> {
    if !scanner_tests::require_root("a_new_window_starts_the_count_again") {
        return Ok(());
    }
    // A 1 ns window: every probe a tick later opens a new one (probes are
    // stamped by the timer tick).
    let config = Config {
        window_ns: 1,
        ..Config::default()
    };
    let mut ebpf = load::load(&config)?;
    for port in [22, 80, 443, 22] {
        crate::common::next_tick();
        assert_eq!(run(&ebpf, &ipv4_tcp(1, port, SYN))?, XDP_PASS);
    }
    let maps = Maps::take(&mut ebpf)?;
    let s = maps
        .source(&SourceKey::from_v4(v4(1)))
        .ok_or_else(|| anyhow::anyhow!("not tracked"))?;
    // The window holds one port; the life still counts three distinct ones.
    assert_eq!((s.window_ports, s.ports, s.probes), (1, 3, 4));
    assert_eq!(&s.sample_ports[..3], &[22, 80, 443]);
    assert!(s.window_start_ns > s.first_seen_ns);
    Ok(())
}

#[test]
fn every_truncation_of_every_case_passes_in_the_kernel() -> anyhow::Result<()> {
    if !scanner_tests::require_root("every_truncation_of_every_case_passes_in_the_kernel") {
        return Ok(());
    }
    let ebpf = scanner_userspace::testing::load::load(&Config::default())?;
    let mut runs = 0;
    for case in cases() {
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
        for len in scanner_common::ETH_HLEN..=case.frame.len() {
            let action = run(&ebpf, &case.frame[..len])?;
            assert_eq!(action, XDP_PASS, "{} cut at {len}", case.name);
            runs += 1;
        }
    }
    assert!(runs > 1000, "{runs}");
    Ok(())
}
