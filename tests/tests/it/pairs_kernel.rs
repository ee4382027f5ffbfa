//! A source's repeats of its last (protocol, port) pair, held in its entry
//! instead of looked up in PORTS (see `scanner_common::pair`), driven with
//! BPF_PROG_TEST_RUN: the pair's count is the same as if every probe had
//! looked it up, a new window counts the pair again, and repeats past the
//! cap look the pair up.

use scanner_common::{Config, IPPROTO_TCP, SourceStats, pair};

use crate::{
    common::{next_tick, root_only},
    decisions_kernel::{Kernel, source},
};

/// Source `n` admitted at its second port, 2000, then three repeats of
/// 2000 held in its entry: the kernel, `n` and the entry then.
fn three_held(n: u8) -> anyhow::Result<(Kernel, u8, SourceStats)> {
    let k = Kernel::new(&Config::default())?;
    k.syns(n, [1000, 2000, 2000, 2000, 2000])?;
    let s = k.source(n)?;
    assert_eq!(pair::pending(s.last_pair), 3, "held in the entry: {s:?}");
    Ok((k, n, s))
}

#[test]
fn repeats_of_the_last_port_are_counted_without_a_lookup() -> anyhow::Result<()> {
    root_only!("repeats_of_the_last_port_are_counted_without_a_lookup");
    let (k, n, s) = three_held(9)?;
    let key = source(n);
    assert_eq!((s.probes, s.ports, s.window_ports), (5, 2, 2), "{s:?}");
    let raw = |port| k.maps.pair(key, IPPROTO_TCP, port).map(|p| p.probes);
    assert_eq!(
        raw(2000),
        Some(1),
        "PORTS was not looked up for the repeats"
    );
    // Read as the daemon reads it, the pair has all four.
    let counted = |port| k.maps.port(key.key, IPPROTO_TCP, port).map(|p| p.probes);
    assert_eq!((counted(1000), counted(2000)), (Some(1), Some(4)));
    assert_eq!(k.maps.top_ports(key, &s, 1), vec![(IPPROTO_TCP, 2000)]);
    // Another port: the repeats go into the pair's own count.
    k.syns(n, [3000])?;
    let s = k.source(n)?;
    assert_eq!((raw(2000), counted(2000)), (Some(4), Some(4)));
    assert_eq!((s.probes, s.ports, pair::pending(s.last_pair)), (6, 3, 0));
    Ok(())
}

#[test]
fn a_repeat_in_a_new_window_is_new_to_it() -> anyhow::Result<()> {
    root_only!("a_repeat_in_a_new_window_is_new_to_it");
    // A 1 ns window: a probe a tick later opens a new one.
    let k = Kernel::new(&Config {
        window_ns: 1,
        ..Config::default()
    })?;
    let (n, key) = (10, source(10));
    k.syns(n, [1000, 2000])?;
    next_tick();
    k.syns(n, [2000])?;
    let s = k.source(n)?;
    assert_eq!(
        (s.window_ports, s.ports, s.probes),
        (1, 2, 3),
        "the repeat opened a window and counts in it: {s:?}"
    );
    let counted = k.maps.port(key.key, IPPROTO_TCP, 2000).map(|p| p.probes);
    assert_eq!(counted, Some(2));
    Ok(())
}

#[test]
fn repeats_past_the_cap_look_the_pair_up() -> anyhow::Result<()> {
    root_only!("repeats_past_the_cap_look_the_pair_up");
    let k = Kernel::new(&Config::default())?;
    let (n, key) = (11, source(11));
    k.syns(n, [1000])?;
    let repeats = pair::PENDING_MAX + 5;
    k.syns(n, std::iter::repeat_n(2000, repeats as usize + 1))?;
    let s = k.source(n)?;
    let counted = k.maps.port(key.key, IPPROTO_TCP, 2000).map(|p| p.probes);
    assert_eq!(counted, Some(1 + repeats), "{s:?}");
    assert_eq!(s.probes, 2 + repeats);
    Ok(())
}

#[test]
fn an_older_copy_of_the_entry_counts_its_held_repeats_once() -> anyhow::Result<()> {
    root_only!("an_older_copy_of_the_entry_counts_its_held_repeats_once");
    // A copy taken while three repeats of 2000 are held (a decision's, or
    // an ended scan's, read later).
    let (k, n, copy) = three_held(12)?;
    let key = source(n);
    // Port 1000 again: the three go into 2000's own count; then five
    // repeats of 1000 are held.
    k.syns(n, [1000; 6])?;
    let counted = |port| k.maps.port(key.key, IPPROTO_TCP, port).map(|p| p.probes);
    assert_eq!((counted(1000), counted(2000)), (Some(7), Some(4)));
    // Read from the copy, the live entry's held repeats count, not the
    // copy's (already added): 1000 is the most probed.
    assert_eq!(
        k.maps.top_ports(key, &copy, 2),
        vec![(IPPROTO_TCP, 1000), (IPPROTO_TCP, 2000)]
    );
    Ok(())
}
