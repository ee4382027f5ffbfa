//! Allow and block rules in the kernel, driven with BPF_PROG_TEST_RUN.

use std::time::Duration;

use aya::{
    Ebpf,
    maps::{Array, LpmTrie, MapData, PerCpuArray},
};
use scanner_common::{
    BLOCK_CACHE_BUDGET, CachedBlock, Config, SourceKey, block_cache_slot, block_reason,
    names::{
        ALLOWLIST_MAP, BLOCK_CACHE_MAP, BLOCKLIST_MAP, BLOCKS_EMPTY_MAP, RULES_GENERATION_MAP,
    },
};
use scanner_tests::packets::{SYN, XMAS, ipv4_tcp, v4};
use scanner_userspace::testing::{
    AllowOrigin, Change, Maps, Policy, PolicyError, load, monotonic_ns, take_map,
};

use crate::common::{XDP_DROP, XDP_PASS, lab_prefix, root_only};

struct Kernel {
    ebpf: Ebpf,
    maps: Maps,
    policy: Policy,
    /// The CPU the test stays on (BLOCK_CACHE's copy it sees).
    cpu: usize,
}

impl Kernel {
    /// Loads the program and keeps the test on one CPU: BLOCK_CACHE is
    /// per CPU, and a stale slot must show on the next packet.
    fn new(config: &Config, cap: u32) -> anyhow::Result<Self> {
        let cpu = crate::common::stay_on_one_cpu()?;
        let mut ebpf = load::load_with_cap(config, cap)?;
        let maps = Maps::take(&mut ebpf)?;
        let policy = Policy::new(
            take_map::<LpmTrie<_, _, _>>(&mut ebpf, ALLOWLIST_MAP)?,
            take_map::<LpmTrie<_, _, _>>(&mut ebpf, BLOCKLIST_MAP)?,
            take_map::<Array<_, u32>>(&mut ebpf, RULES_GENERATION_MAP)?,
            cap,
        )
        .with_empty_flag(take_map::<Array<_, u32>>(&mut ebpf, BLOCKS_EMPTY_MAP)?);
        Ok(Self {
            ebpf,
            maps,
            policy,
            cpu,
        })
    }

    /// BLOCKS_EMPTY, read through a second handle.
    fn blocks_empty(&self) -> anyhow::Result<u32> {
        // The policy holds the map: find it again by the program's map ids.
        let program = self
            .ebpf
            .program(load::PROGRAM)
            .ok_or_else(|| anyhow::anyhow!("program"))?;
        for id in program.info()?.map_ids()?.unwrap_or_default() {
            let map = MapData::from_id(id)?;
            if map.info()?.name_as_str() == Some(BLOCKS_EMPTY_MAP) {
                let array: Array<MapData, u32> = Array::try_from(aya::maps::Map::Array(map))?;
                return Ok(array.get(&0, 0)?);
            }
        }
        anyhow::bail!("no {BLOCKS_EMPTY_MAP} map")
    }

    fn send(&self, frame: &[u8]) -> anyhow::Result<u32> {
        crate::common::run(&self.ebpf, frame)
    }
}

#[test]
fn allowlisted_sources_pass_and_are_never_counted() -> anyhow::Result<()> {
    root_only!("allowlisted_sources_pass_and_are_never_counted");
    let mut k = Kernel::new(&Config::default(), 16)?;
    k.policy.allow(
        "198.18.0.0/28".parse()?,
        monotonic_ns(),
        AllowOrigin::Runtime,
    )?;
    for port in 1..=50 {
        assert_eq!(k.send(&ipv4_tcp(5, port, SYN))?, XDP_PASS);
    }
    assert!(k.maps.source(&SourceKey::from_v4(v4(5))).is_none());
    // Its first probe waited in a slot like anyone's (no rule is looked up
    // for a first probe); every later one was recognised as allowlisted.
    assert!(k.maps.decided().entries.is_empty());
    // Outside the /28: counted as usual.
    assert_eq!(k.send(&ipv4_tcp(20, 22, SYN))?, XDP_PASS);
    assert_eq!(k.send(&ipv4_tcp(20, 23, SYN))?, XDP_PASS);
    assert!(k.maps.source(&SourceKey::from_v4(v4(20))).is_some());
    let c = k.maps.counters()?;
    assert_eq!((c.allowed, c.dropped), (49, 0));
    // And an allowlisted network cannot be blocked.
    assert!(matches!(
        k.policy.block(
            "198.18.0.5/32".parse()?,
            None,
            monotonic_ns(),
            block_reason::MANUAL
        ),
        Err(PolicyError::Allowlisted(_))
    ));
    Ok(())
}

#[test]
fn blocked_addresses_and_prefixes_are_dropped_until_they_expire() -> anyhow::Result<()> {
    root_only!("blocked_addresses_and_prefixes_are_dropped_until_they_expire");
    let mut k = Kernel::new(&Config::default(), 16)?;
    let now = monotonic_ns();
    k.policy
        .block("198.18.0.7/32".parse()?, None, now, block_reason::MANUAL)?;
    k.policy
        .block("198.18.1.0/24".parse()?, None, now, block_reason::MANUAL)?;
    // Expired a second ago: the kernel checks expiry against the coarse
    // clock, which may be a timer tick behind.
    k.policy.block(
        "198.18.0.8/32".parse()?,
        Some(Duration::from_nanos(1)),
        now - 1_000_000_000,
        block_reason::MANUAL,
    )?;
    assert_eq!(k.send(&ipv4_tcp(7, 80, SYN))?, XDP_DROP);
    let mut in_prefix = ipv4_tcp(7, 80, SYN);
    in_prefix[14 + 14] = 1; // 198.18.1.7
    assert_eq!(k.send(&in_prefix)?, XDP_DROP);
    // Expired already: passes, and is counted.
    assert_eq!(k.send(&ipv4_tcp(8, 80, SYN))?, XDP_PASS);
    assert!(k.maps.first_probe(&SourceKey::from_v4(v4(8))).is_some());
    // The sweep removes the expired block and says so.
    let changes = k.policy.sweep(monotonic_ns())?;
    assert!(changes.contains(&Change::Unblocked {
        net: "198.18.0.8/32".parse()?,
        expired: true,
        reason: block_reason::MANUAL,
    }));
    assert_eq!(k.policy.active_blocks(), 2);
    k.policy.unblock("198.18.0.7/32".parse()?)?;
    assert_eq!(k.send(&ipv4_tcp(7, 80, SYN))?, XDP_PASS);
    assert_eq!(k.maps.counters()?.dropped, 2);
    Ok(())
}

/// A blocked source's packets are answered from BLOCK_CACHE (per CPU) with
/// no trie lookup; every change the daemon makes to the rules still
/// reaches the very next packet, and with no daemon to lift it a block
/// lapses all the same, within the slot's budget of packets.
#[test]
fn cached_blocks_follow_every_rule_change() -> anyhow::Result<()> {
    root_only!("cached_blocks_follow_every_rule_change");
    let mut k = Kernel::new(&Config::default(), 16)?;
    let now = monotonic_ns();
    k.policy
        .block("198.18.0.0/24".parse()?, None, now, block_reason::MANUAL)?;
    for host in [10, 11, 12] {
        for _ in 0..3 {
            assert_eq!(k.send(&ipv4_tcp(host, 80, SYN))?, XDP_DROP, "{host}");
        }
    }
    // The drops after the first came from the slot.
    let cache: PerCpuArray<MapData, CachedBlock> = take_map(&mut k.ebpf, BLOCK_CACHE_MAP)?;
    let words = SourceKey::from_v4(v4(12)).words();
    let slot = cache.get(&block_cache_slot(words), 0)?[k.cpu];
    assert_eq!(
        (slot.words, slot.budget),
        ([words.0, words.1], BLOCK_CACHE_BUDGET - 2),
        "{slot:?}"
    );

    // An allow rule inside the block.
    k.policy.allow(
        "198.18.0.10/32".parse()?,
        monotonic_ns(),
        AllowOrigin::Runtime,
    )?;
    assert_eq!(k.send(&ipv4_tcp(10, 80, SYN))?, XDP_PASS, "allowlisted");
    // A gateway found inside it, once its owner tells the policy.
    let mut protected: aya::maps::HashMap<MapData, SourceKey, u32> =
        take_map(&mut k.ebpf, scanner_common::names::PROTECTED_MAP)?;
    protected.insert(
        SourceKey::from_v4(v4(11)),
        scanner_common::protect::GATEWAY,
        0,
    )?;
    k.policy.rules_changed()?;
    assert_eq!(k.send(&ipv4_tcp(11, 80, SYN))?, XDP_PASS, "protected");
    // The block lifted.
    k.policy.unblock("198.18.0.0/24".parse()?)?;
    assert_eq!(k.send(&ipv4_tcp(12, 80, SYN))?, XDP_PASS, "unblocked");

    // A block that expires with no daemon to sweep it.
    let ttl = Duration::from_millis(300);
    let made = monotonic_ns();
    k.policy.block(
        "198.18.0.20/32".parse()?,
        Some(ttl),
        made,
        block_reason::MANUAL,
    )?;
    assert_eq!(k.send(&ipv4_tcp(20, 80, SYN))?, XDP_DROP);
    // Past its expiry and a timer tick (the coarse clock's lag).
    let lapsed = made + ttl.as_nanos() as u64 + 20_000_000;
    std::thread::sleep(Duration::from_nanos(lapsed.saturating_sub(monotonic_ns())));
    let mut dropped = 0;
    while k.send(&ipv4_tcp(20, 80, SYN))? == XDP_DROP {
        dropped += 1;
        assert!(dropped <= BLOCK_CACHE_BUDGET, "the block never lapsed");
    }
    Ok(())
}

/// A block that covers a protected gateway or resolver (a CIDR, a ban, a
/// manual block) never drops it; only a forced block does.
#[test]
fn protected_addresses_are_dropped_only_by_a_forced_block() -> anyhow::Result<()> {
    root_only!("protected_addresses_are_dropped_only_by_a_forced_block");
    let mut k = Kernel::new(&Config::default(), 16)?;
    let mut protected: aya::maps::HashMap<MapData, SourceKey, u32> =
        take_map(&mut k.ebpf, scanner_common::names::PROTECTED_MAP)?;
    protected.insert(
        SourceKey::from_v4(v4(3)),
        scanner_common::protect::GATEWAY,
        0,
    )?;
    let now = monotonic_ns();
    k.policy
        .block("198.18.0.0/24".parse()?, None, now, block_reason::MANUAL)?;
    assert_eq!(
        k.send(&ipv4_tcp(3, 80, SYN))?,
        XDP_PASS,
        "the gateway was cut off"
    );
    assert_eq!(
        k.send(&ipv4_tcp(9, 80, SYN))?,
        XDP_DROP,
        "the rest of the /24 passed"
    );
    k.policy
        .block("198.18.0.3/32".parse()?, None, now, block_reason::CROWDSEC)?;
    assert_eq!(
        k.send(&ipv4_tcp(3, 80, SYN))?,
        XDP_PASS,
        "a ban cut the gateway off"
    );
    k.policy
        .block("198.18.0.3/32".parse()?, None, now, block_reason::FORCED)?;
    assert_eq!(
        k.send(&ipv4_tcp(3, 80, SYN))?,
        XDP_DROP,
        "--force did not block"
    );
    // Replaced by a ban (a block with another reason): the gateway's
    // packets pass again at once, though its slot was just filled.
    k.policy
        .block("198.18.0.3/32".parse()?, None, now, block_reason::CROWDSEC)?;
    assert_eq!(
        k.send(&ipv4_tcp(3, 80, SYN))?,
        XDP_PASS,
        "the ban replacing --force cut the gateway off"
    );
    Ok(())
}

#[test]
fn lifting_a_protected_sources_block_spares_manual_blocks() -> anyhow::Result<()> {
    root_only!("lifting_a_protected_sources_block_spares_manual_blocks");
    let mut k = Kernel::new(&Config::default(), 16)?;
    let now = monotonic_ns();
    // A detection's block, not yet seen by a sweep: lifted, nothing owed.
    let scanned = "198.18.0.30/32".parse()?;
    k.policy.block(scanned, None, now, block_reason::SCAN)?;
    assert_eq!(k.send(&ipv4_tcp(30, 22, SYN))?, XDP_DROP);
    assert!(k.policy.lift_scan_block(scanned)?);
    assert_eq!(k.send(&ipv4_tcp(30, 22, SYN))?, XDP_PASS);
    assert!(!k.policy.lift_scan_block(scanned)?, "nothing left to lift");
    // An operator's block, on the host or on its network, stays.
    let manual = "198.18.0.31/32".parse()?;
    k.policy.block(manual, None, now, block_reason::MANUAL)?;
    assert!(!k.policy.lift_scan_block(manual)?);
    assert_eq!(k.send(&ipv4_tcp(31, 22, SYN))?, XDP_DROP);
    k.policy
        .block("198.18.0.32/30".parse()?, None, now, block_reason::MANUAL)?;
    assert!(!k.policy.lift_scan_block("198.18.0.33/32".parse()?)?);
    assert_eq!(k.send(&ipv4_tcp(33, 22, SYN))?, XDP_DROP);
    Ok(())
}

#[test]
fn the_kernel_blocks_at_the_deciding_probe() -> anyhow::Result<()> {
    root_only!("the_kernel_blocks_at_the_deciding_probe");
    let config = Config {
        block_on_decide: 1,
        block_ttl_ns: 3_600_000_000_000,
        ..Config::default()
    };
    let mut k = Kernel::new(&config, 16)?;
    let verdicts: Vec<u32> = (1..=8)
        .map(|port| k.send(&ipv4_tcp(9, port, SYN)))
        .collect::<Result<_, _>>()?;
    // Three probes pass; the fourth decides, blocks and is dropped itself,
    // like the rest: the scanner learns three ports.
    assert_eq!(verdicts, [2, 2, 2, 1, 1, 1, 1, 1]);
    let changes = k.policy.sweep(monotonic_ns())?;
    assert!(
        matches!(&changes[..], [Change::Blocked { reason: 1, ttl: Some(t), .. }] if t.as_secs() == 3600),
        "{changes:?}"
    );
    Ok(())
}

/// Two stealth probes decide a source at its admission: the second is one
/// of the first trials its prefix is owed, counted there by another
/// program (`scanner_prefix`, a tail call), which drops it like any probe
/// that blocked its source.
#[test]
fn a_deciding_probe_counted_for_the_prefix_too_is_dropped() -> anyhow::Result<()> {
    root_only!("a_deciding_probe_counted_for_the_prefix_too_is_dropped");
    let config = Config {
        block_on_decide: 1,
        ..Config::default()
    };
    let k = Kernel::new(&config, 16)?;
    assert_eq!(k.send(&ipv4_tcp(15, 21, XMAS))?, XDP_PASS);
    assert_eq!(
        k.send(&ipv4_tcp(15, 23, XMAS))?,
        XDP_DROP,
        "the deciding probe"
    );
    let s = k
        .maps
        .source(&SourceKey::from_v4(v4(15)))
        .ok_or_else(|| anyhow::anyhow!("untracked"))?;
    assert!(s.decided_ns > 0 && s.blocked != 0, "{s:?}");
    let p = lab_prefix(&k.maps)?;
    assert_eq!((p.sources, p.ports, s.prefix_trials), (1, 2, 2), "{p:?}");
    assert_eq!(k.send(&ipv4_tcp(15, 25, XMAS))?, XDP_DROP);
    Ok(())
}

/// A scanner whose block lapsed, still probing, is dropped again at its
/// first probe: the kernel decided it, and blocks it again with the same
/// lifetime, without a new decision. One the daemon spared (a protected
/// source whose block it lifted) is not.
#[test]
fn a_scanner_whose_block_lapsed_is_blocked_again_at_its_next_probe() -> anyhow::Result<()> {
    root_only!("a_scanner_whose_block_lapsed_is_blocked_again_at_its_next_probe");
    let ttl = Duration::from_millis(300);
    let config = Config {
        block_on_decide: 1,
        block_ttl_ns: ttl.as_nanos() as u64,
        ..Config::default()
    };
    let mut k = Kernel::new(&config, 16)?;
    for port in 1..=4 {
        k.send(&ipv4_tcp(9, port, SYN))?;
    }
    let decided = k
        .maps
        .source(&SourceKey::from_v4(v4(9)))
        .map(|s| s.decided_ns);
    assert!(decided.is_some_and(|t| t != 0), "not decided");
    assert_eq!(k.send(&ipv4_tcp(9, 5, SYN))?, XDP_DROP, "blocked");
    k.policy.sweep(monotonic_ns())?;
    std::thread::sleep(ttl + Duration::from_millis(50));
    // The lapsed block is swept away, as the daemon's poll does.
    let changes = k.policy.sweep(monotonic_ns())?;
    assert!(
        matches!(&changes[..], [Change::Unblocked { expired: true, .. }]),
        "{changes:?}"
    );
    assert_eq!(
        k.send(&ipv4_tcp(9, 6, SYN))?,
        XDP_DROP,
        "the first probe after the block lapsed passed"
    );
    let changes = k.policy.sweep(monotonic_ns())?;
    assert!(
        matches!(&changes[..], [Change::Blocked { reason: 1, ttl: Some(t), .. }] if *t == ttl),
        "blocked again for its TTL: {changes:?}"
    );
    assert_eq!(
        k.maps
            .source(&SourceKey::from_v4(v4(9)))
            .map(|s| s.decided_ns),
        decided,
        "the same decision"
    );
    assert_eq!(k.send(&ipv4_tcp(9, 7, SYN))?, XDP_DROP);

    // Spared: its block lifted on purpose, it is not blocked again.
    for port in 1..=4 {
        k.send(&ipv4_tcp(10, port, SYN))?;
    }
    k.policy.sweep(monotonic_ns())?;
    assert!(
        k.policy
            .lift_scan_block(ipnet::IpNet::from(std::net::IpAddr::from([198, 18, 0, 10])))?
    );
    k.maps.unmark_blocked(&SourceKey::from_v4(v4(10)));
    for port in 5..=8 {
        assert_eq!(
            k.send(&ipv4_tcp(10, port, SYN))?,
            XDP_PASS,
            "spared source blocked again"
        );
    }
    Ok(())
}

#[test]
fn a_full_blocklist_refuses_new_blocks_and_counts_them() -> anyhow::Result<()> {
    root_only!("a_full_blocklist_refuses_new_blocks_and_counts_them");
    let config = Config {
        block_on_decide: 1,
        ..Config::default()
    };
    // Room for 2 blocks.
    let mut k = Kernel::new(&config, 2)?;
    let now = monotonic_ns();
    for src in [10, 11, 12] {
        for port in 1..=4 {
            k.send(&ipv4_tcp(src, port, SYN))?;
        }
    }
    assert_eq!(k.maps.counters()?.blocks_refused, 1);
    // The third scanner was still decided: refusing a block loses no report.
    let third = k
        .maps
        .source(&SourceKey::from_v4(v4(12)))
        .ok_or_else(|| anyhow::anyhow!("untracked"))?;
    assert!(third.decided_ns > 0);
    assert_eq!(k.send(&ipv4_tcp(12, 5, SYN))?, XDP_PASS);
    assert_eq!(k.send(&ipv4_tcp(10, 5, SYN))?, XDP_DROP);
    // The userspace cap agrees.
    k.policy.sweep(now)?;
    assert!(matches!(
        k.policy
            .block("198.18.0.99/32".parse()?, None, now, block_reason::MANUAL),
        Err(PolicyError::CapReached(2, _))
    ));
    Ok(())
}

#[test]
fn an_empty_blocklist_is_skipped_until_a_block_appears() -> anyhow::Result<()> {
    root_only!("an_empty_blocklist_is_skipped_until_a_block_appears");
    let config = Config {
        block_on_decide: 1,
        ..Config::default()
    };
    let mut k = Kernel::new(&config, 16)?;
    assert_eq!(k.blocks_empty()?, 0, "looked up until a sweep knows better");
    k.policy.sweep(monotonic_ns())?;
    assert_eq!(
        k.blocks_empty()?,
        1,
        "nothing blocked: packets skip the trie"
    );
    // A block the kernel makes clears the flag and drops at once.
    for port in 1..=4 {
        k.send(&ipv4_tcp(13, port, SYN))?;
    }
    assert_eq!(k.blocks_empty()?, 0);
    assert_eq!(k.send(&ipv4_tcp(13, 5, SYN))?, XDP_DROP);
    k.policy.sweep(monotonic_ns())?;
    k.policy.unblock("198.18.0.13/32".parse()?)?;
    k.policy.sweep(monotonic_ns())?;
    assert_eq!(k.blocks_empty()?, 1);
    // So does a block the daemon makes.
    k.policy.block(
        "198.18.0.14/32".parse()?,
        None,
        monotonic_ns(),
        block_reason::MANUAL,
    )?;
    assert_eq!(k.blocks_empty()?, 0);
    assert_eq!(k.send(&ipv4_tcp(14, 80, SYN))?, XDP_DROP);
    Ok(())
}
