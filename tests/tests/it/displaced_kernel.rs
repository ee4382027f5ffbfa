//! The first-probe slot is read before SOURCES: a source the slot does not
//! show as admitted is not looked up. An admitted source whose slot another
//! source took is still counted into its entry (the slot is marked
//! displaced), and the daemon's walk clears the mark once no admitted
//! source hashes there.

use anyhow::Context as _;
use aya::maps::{Array, MapData};
use scanner_common::{
    Config, SourceKey,
    first::{DISPLACED, RETURNING, slot_of},
    names::CONFIG_MAP,
    scope,
};
use scanner_tests::packets::{SYN, ipv6_tcp_from};
use scanner_userspace::testing::EntryId;

use crate::{common::root_only, decisions_kernel::Kernel};

/// 2001:db8::<n>.
fn addr(n: u32) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    a[12..].copy_from_slice(&n.to_be_bytes());
    a
}

fn syn(src: [u8; 16], port: u16) -> Vec<u8> {
    ipv6_tcp_from(src, port, SYN)
}

fn ports(k: &Kernel, a: [u8; 16]) -> Option<u32> {
    k.maps
        .entry(EntryId {
            scope: scope::SOURCE,
            key: SourceKey::from_v6(a),
        })
        .map(|s| s.ports)
}

#[test]
fn an_admitted_source_displaced_from_its_slot_is_still_counted() -> anyhow::Result<()> {
    root_only!("an_admitted_source_displaced_from_its_slot_is_still_counted");
    let mut k = Kernel::new(&Config::default())?;
    let config: Array<&MapData, Config> =
        Array::try_from(k.ebpf.map(CONFIG_MAP).context("CONFIG")?)?;
    let c = config.get(&0, 0)?;
    let slot = |a: [u8; 16]| slot_of(&SourceKey::from_v6(a), c.hash_seed, c.first_probe_slots);
    let a = addr(1);
    // An address of the lab's prefix that shares a's slot (a million slots:
    // about a million tries).
    let b = (2..u32::MAX)
        .map(addr)
        .find(|&b| slot(b) == slot(a))
        .context("no address shares the slot")?;
    let key_a = SourceKey::from_v6(a);
    let held = |k: &Kernel| k.maps.first_probe_slot(&key_a).context("no slot");

    k.send(&syn(a, 1))?;
    k.send(&syn(a, 2))?;
    assert_eq!(ports(&k, a), Some(2), "admitted at its second port");
    assert_ne!(held(&k)?.ifindex & RETURNING, 0, "{:?}", held(&k)?);
    // b's first probe takes the slot: a is displaced from it.
    k.send(&syn(b, 3))?;
    let taken = held(&k)?;
    assert!(
        taken.source.same(&SourceKey::from_v6(b)) && taken.ifindex & DISPLACED != 0,
        "{taken:?}"
    );
    // a's next probe is counted into its entry at once (not held as the
    // first probe of a new source), and b keeps its slot.
    k.send(&syn(a, 4))?;
    assert_eq!(ports(&k, a), Some(3));
    assert!(held(&k)?.source.same(&SourceKey::from_v6(b)));
    // The daemon's walk keeps the mark while a's entry lives...
    k.maps.decided();
    assert_ne!(held(&k)?.ifindex & DISPLACED, 0);
    // ... and clears it once no admitted source hashes there, also when
    // it sweeps the slots a step at a time (as the daemon does, reporting
    // the decisions made meanwhile between steps).
    k.maps.forget(&key_a);
    let (snapshot, mut sweep) = k.maps.decided_then_sweep(|_, _| {});
    let (mut tracked, mut steps) = (snapshot.sources, 0);
    while let Some(live) = k.maps.sweep_step(&mut sweep, 4096) {
        tracked += live;
        steps += 1;
    }
    assert!(steps > 1, "{steps} steps");
    assert_eq!(held(&k)?.ifindex & DISPLACED, 0, "{:?}", held(&k)?);
    assert_eq!(
        tracked,
        k.maps.decided().sources,
        "the steps count what one sweep counts"
    );
    assert_eq!(tracked, 1, "b's first probe, waiting in its slot");
    // b was never looked up in SOURCES: still held, admitted at its second
    // port with both counted.
    assert_eq!(ports(&k, b), None);
    k.send(&syn(b, 5))?;
    assert_eq!(ports(&k, b), Some(2));
    Ok(())
}
