//! Blocking in the kernel: a scanner is cut off within a few ports, sees
//! nothing while blocked, and is blocked again at its first probe when it
//! carries on after the block expired, the same scan;
//! allowlisted hosts are never blocked; a dry run blocks nothing.

use scanner_tests::{
    Lab, require_root,
    scenario::{Scenario, about, count},
};

const OPEN_TCP: &[u16] = &[22, 80];

#[test]
fn a_blocked_scanner_sees_little_then_nothing_even_after_the_block_expires() -> anyhow::Result<()> {
    if !require_root("a_blocked_scanner_sees_little_then_nothing_even_after_the_block_expires") {
        return Ok(());
    }
    let mut sc = Scenario::start(OPEN_TCP, &[], &["--block", "--block-ttl", "15s"])?;
    let src = Lab::ATTACKER_V4;
    let answered = sc.answered(None, "1-1000")?;
    eprintln!("nmap -sS -p1-1000 saw {answered} ports answered before the block");
    assert!(
        answered < 10,
        "the block came late: {answered} ports answered"
    );
    let blocked = sc.wait("blocked", src)?;
    assert_eq!(blocked["reason"], "scan", "{blocked}");
    assert_eq!(blocked["ttl_s"], 15, "{blocked}");
    assert_eq!(blocked["dry_run"], false, "{blocked}");

    // While blocked: every port filtered.
    assert_eq!(sc.answered(None, "1-50")?, 0);

    // The block lapses; the scanner carries on and is dropped again at its
    // first probe: the kernel decided it already.
    let unblocked = sc.wait("unblocked", src)?;
    assert_eq!(unblocked["reason"], "expired", "{unblocked}");
    assert_eq!(
        sc.answered(None, "22,80,100-150")?,
        0,
        "answered after the block lapsed"
    );
    let mut blocks = 0;
    let again = sc.daemon.wait_for_event(
        |e| {
            if e["event"] == "blocked" && e["source"] == src {
                blocks += 1;
            }
            blocks == 2
        },
        std::time::Duration::from_secs(30),
    )?;
    assert_eq!(again["reason"], "scan", "{again}");
    assert_eq!(again["ttl_s"], 15, "{again}");

    // One scan, blocked twice: not a second detection.
    let events = sc.stop()?;
    assert_eq!(count(&events, src, "scan_detected"), 1, "{events:?}");
    assert_eq!(count(&events, src, "blocked"), 2, "{events:?}");
    Ok(())
}

#[test]
fn allowlisted_hosts_are_never_blocked_nor_counted() -> anyhow::Result<()> {
    if !require_root("allowlisted_hosts_are_never_blocked_nor_counted") {
        return Ok(());
    }
    let monitor = Lab::ATTACKER_V4;
    let other = "198.18.0.9";
    let mut sc = Scenario::start(OPEN_TCP, &[], &["--block", "--allow", "198.18.0.1/32"])?;
    sc.lab.add_attacker_address(&format!("{other}/24"))?;
    // The monitoring host sweeps every port: all of them answer.
    assert_eq!(sc.answered(None, "1-300")?, 300);
    // Another host doing the same is blocked.
    assert!(sc.answered(Some(other), "1-300")? < 10);
    sc.wait("blocked", other)?;
    let events = sc.stop()?;
    let about_monitor = about(&events, monitor);
    assert!(
        about_monitor.is_empty(),
        "allowlisted host reported: {about_monitor:?}"
    );
    Ok(())
}

#[test]
fn a_dry_run_says_what_it_would_block_and_blocks_nothing() -> anyhow::Result<()> {
    if !require_root("a_dry_run_says_what_it_would_block_and_blocks_nothing") {
        return Ok(());
    }
    let mut sc = Scenario::start(OPEN_TCP, &[], &["--block", "--dry-run"])?;
    let src = Lab::ATTACKER_V4;
    assert_eq!(sc.answered(None, "1-300")?, 300);
    let would = sc.wait("blocked", src)?;
    assert_eq!(would["dry_run"], true, "{would}");
    assert_eq!(sc.answered(None, "22,80")?, 2, "still not blocked");
    sc.stop()?;
    Ok(())
}

#[test]
fn without_block_nothing_is_blocked() -> anyhow::Result<()> {
    if !require_root("without_block_nothing_is_blocked") {
        return Ok(());
    }
    let mut sc = Scenario::start(OPEN_TCP, &[], &[])?;
    let src = Lab::ATTACKER_V4;
    assert_eq!(sc.answered(None, "1-300")?, 300);
    sc.wait("scan_detected", src)?;
    let events = sc.stop()?;
    assert!(
        events.iter().all(|e| e["event"] != "blocked"),
        "report-only by default: {events:?}"
    );
    Ok(())
}
