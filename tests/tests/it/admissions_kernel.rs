//! The rings of the latest admissions (`scanner_common::admissions`),
//! driven with BPF_PROG_TEST_RUN: every admission to SOURCES is there, and
//! what the daemon reads from them is what a walk of SOURCES finds, or
//! nothing where they cannot tell.
//!
//! Times asked for are read back from the entries' own stamps (the probe
//! clock) rather than from CLOCK_MONOTONIC less the clock's allowed lag:
//! on a loaded virtual machine jiffies stall for a few ticks while the CPU
//! that keeps them is descheduled, and a test must not depend on that.

use scanner_common::{IPPROTO_TCP, SourceKey, SourceStats, config::Config};
use scanner_tests::packets::{SYN, eth, ipv4, tcp};
use scanner_userspace::testing::monotonic_ns;

use crate::{common::root_only, decisions_kernel::Kernel};

/// 198.18.x.y for source `i`.
fn address(i: u32) -> [u8; 4] {
    let [_, _, hi, lo] = i.to_be_bytes();
    [198, 18, hi, lo]
}

/// SYNs from source `i` to `ports`, none open.
fn probe(k: &Kernel, i: u32, ports: &[u16]) -> anyhow::Result<()> {
    ports.iter().try_for_each(|&p| {
        k.send(&eth(
            0x0800,
            &[],
            &ipv4(address(i), IPPROTO_TCP, 5, 0, &tcp(p, SYN, 5)),
        ))
    })
}

fn keys(found: &[(SourceKey, SourceStats)]) -> Vec<SourceKey> {
    let mut keys: Vec<SourceKey> = found.iter().map(|(k, _)| *k).collect();
    keys.sort_unstable();
    keys
}

fn undecided(s: &SourceStats) -> bool {
    s.decided_ns == 0
}

/// When source `i` started (its first probe, on the probe clock): every
/// admission after its own is stamped no earlier.
fn started(k: &Kernel, i: u32) -> anyhow::Result<u64> {
    let key = SourceKey::from_v4(address(i));
    k.maps
        .sources_where(|_| true)
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, s)| s.first_seen_ns)
        .ok_or_else(|| anyhow::anyhow!("source {i} was not admitted"))
}

#[test]
fn admissions_are_found_as_a_walk_of_sources_finds_them() -> anyhow::Result<()> {
    root_only!("admissions_are_found_as_a_walk_of_sources_finds_them");
    let mut k = Kernel::new(&Config::default())?;
    assert_eq!(
        k.maps.admitted_since(0, |_, _| false, |_| true),
        None,
        "until the program is attached the rings answer nothing"
    );
    // Every admission is this program's: it was never attached, nor any
    // other program writing SOURCES.
    k.maps.admissions_from(0);
    assert_eq!(
        k.maps.admitted_since(0, |_, _| false, |_| true),
        Some(vec![])
    );
    // Two admitted and undecided, one that probed a single port (never
    // admitted), one decided.
    probe(&k, 1, &[1001, 1002])?;
    probe(&k, 2, &[1001])?;
    probe(&k, 3, &[2001, 2002, 2003])?;
    probe(&k, 4, &[3001, 3002, 3003, 3004, 3005, 3006])?;
    let before = started(&k, 1)?;
    let walked = k.maps.sources_where(undecided);
    let found = k
        .maps
        .admitted_since(before, |_, _| false, undecided)
        .expect("the rings reach back to the start");
    assert_eq!(keys(&found), keys(&walked));
    assert_eq!(
        keys(&found),
        vec![
            SourceKey::from_v4(address(1)),
            SourceKey::from_v4(address(3))
        ]
    );
    assert!(
        k.maps.sources_where(|s| s.decided_ns != 0).len() == 1,
        "source 4 is decided"
    );
    // A source known decided since its admission is not looked up.
    let three = SourceKey::from_v4(address(3));
    let found = k
        .maps
        .admitted_since(before, |key, _| *key == three, |_| true)
        .expect("the rings reach back to the start");
    assert!(!keys(&found).contains(&three));
    assert_eq!(found.len(), 2, "sources 1 and 4");
    // From a later start: what the walk finds started then or after (the
    // probes may share a tick, so all of them or only the later ones).
    let three_on = started(&k, 3)?;
    let found = k
        .maps
        .admitted_since(three_on, |_, _| false, |_| true)
        .expect("the rings reach back to source 3");
    let walked = k.maps.sources_where(|s| s.first_seen_ns >= three_on);
    assert_eq!(keys(&found), keys(&walked));
    assert!(keys(&found).contains(&three));
    // Nothing started later than now.
    let later = monotonic_ns() + 1_000_000_000;
    assert_eq!(
        k.maps.admitted_since(later, |_, _| false, |_| true),
        Some(vec![])
    );
    Ok(())
}

#[test]
fn overrun_rings_cannot_tell() -> anyhow::Result<()> {
    root_only!("overrun_rings_cannot_tell");
    let mut k = Kernel::new(&Config::default())?;
    k.maps.admissions_from(0);
    // More admissions than every CPU's ring holds: one ring at least has
    // lost some since `before`.
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)? as u32;
    let admitted = cpus * scanner_common::ADMISSION_SLOTS as u32 + 1;
    for i in 0..admitted {
        probe(&k, 1000 + i, &[1001, 1002])?;
    }
    let before = started(&k, 1000)?;
    // Even with none of them to look up, the rings cannot say so.
    assert_eq!(k.maps.admitted_since(before, |_, _| true, |_| true), None);
    Ok(())
}
