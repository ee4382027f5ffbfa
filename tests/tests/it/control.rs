//! Controlling the running daemon through its socket with the `scanner` CLI.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    process::Command,
    time::Duration,
};

use scanner_tests::{
    Lab,
    daemon::{cli, cli_ok as ok, scanner_binary},
    require_root,
    scenario::Scenario,
};
use scanner_userspace::testing::{Request, call};
use serde_json::Value;

fn entry(list: &Value, address: &str) -> Value {
    scanner_tests::daemon::listed(list, address)
}

#[test]
fn operators_list_block_unblock_and_allow_from_the_cli() -> anyhow::Result<()> {
    if !require_root("operators_list_block_unblock_and_allow_from_the_cli") {
        return Ok(());
    }
    let mut sc = Scenario::start(&[22, 80], &[], &[])?;
    let socket = sc.daemon.socket().to_path_buf();
    let src = Lab::ATTACKER_V4;

    let status = ok(&socket, &["status"])?;
    assert!(status.contains("veth-srv (native)"), "{status}");
    assert!(status.contains("blocking:          off"), "{status}");

    assert_eq!(
        sc.answered(None, "1-100")?,
        100,
        "report-only: nothing blocked"
    );
    sc.wait("scan_detected", src)?;
    let list: Value = serde_json::from_str(&ok(&socket, &["list", "--json"])?)?;
    let e = entry(&list, src);
    // Ended once quiet for 2 s (the scenario's --quiet-after).
    assert!(e["state"] == "detected" || e["state"] == "ended", "{list}");
    assert_eq!(e["kind"], "syn", "{e}");
    assert_eq!(e["ports"], 100, "{e}");
    assert!(
        e["first_seen"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{e}"
    );
    sc.wait("scan_ended", src)?;
    let table = ok(&socket, &["list"])?;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(src) && l.contains("ended")),
        "an ended scan is listed as ended: {table}"
    );

    let out = ok(&socket, &["block", src, "--ttl", "1h"])?;
    assert_eq!(out.trim(), format!("blocked {src} for 1h"));
    let blocked = sc.wait("blocked", src)?;
    assert_eq!(blocked["reason"], "manual", "{blocked}");
    assert_eq!(
        sc.answered(None, "22,80")?,
        0,
        "blocked: everything filtered"
    );
    let list: Value = serde_json::from_str(&ok(&socket, &["list", "--json"])?)?;
    let e = entry(&list, src);
    assert_eq!(e["state"], "blocked", "{list}");
    assert!(e["block_expires"].as_str().is_some(), "{e}");

    ok(&socket, &["unblock", src])?;
    sc.wait("unblocked", src)?;
    assert_eq!(sc.answered(None, "22,80")?, 2, "unblocked: answered again");
    let (success, _, err) = cli(&socket, &["unblock", src])?;
    assert!(!success && err.contains("no block for"), "{err}");

    ok(&socket, &["allow", "198.18.0.0/24"])?;
    let (success, _, err) = cli(&socket, &["block", src])?;
    assert!(!success && err.contains("allowlisted"), "{err}");
    ok(&socket, &["disallow", "198.18.0.0/24"])?;
    let (success, _, err) = cli(&socket, &["disallow", "198.18.0.0/24"])?;
    assert!(!success && err.contains("not on the allowlist"), "{err}");
    // A prefix that holds an allowlisted address (this host's own) is refused
    // too; one that does not is blocked.
    let (success, _, err) = cli(&socket, &["block", "198.18.0.0/24"])?;
    assert!(!success && err.contains("allowlisted"), "{err}");
    ok(&socket, &["block", "198.18.5.0/24"])?;
    sc.wait("blocked", "198.18.5.0/24")?;
    // Allowlisting lifts the blocks it covers, and says so.
    let out = ok(&socket, &["allow", "198.18.5.0/24"])?;
    assert_eq!(
        out.trim(),
        "allowlisted 198.18.5.0/24 (and lifted its block: 198.18.5.0/24)"
    );

    sc.stop()?;
    assert!(!socket.exists(), "the socket is removed on exit");
    Ok(())
}

#[test]
fn the_allowlist_protects_this_host_and_blocks_are_never_shortened() -> anyhow::Result<()> {
    if !require_root("the_allowlist_protects_this_host_and_blocks_are_never_shortened") {
        return Ok(());
    }
    let mut sc = Scenario::start(&[22], &[], &[])?;
    let socket = sc.daemon.socket().to_path_buf();
    let own = Lab::SERVER_V4;

    // This host's own addresses and loopback stay allowlisted.
    let (success, _, err) = cli(&socket, &["disallow", own])?;
    assert!(!success && err.contains("always allowlisted"), "{err}");
    let (success, _, err) = cli(&socket, &["disallow", "127.0.0.0/8"])?;
    assert!(
        !success && err.contains("always allowlisted: loopback"),
        "{err}"
    );
    let (success, _, err) = cli(&socket, &["block", own])?;
    assert!(
        !success && err.contains(&format!("{own} is allowlisted")),
        "{err}"
    );
    let (success, _, err) = cli(&socket, &["block", "0.0.0.0/0"])?;
    assert!(
        !success && err.contains("0.0.0.0/0 covers allowlisted"),
        "says which allowlisted network it covers: {err}"
    );
    sc.daemon.signal(libc::SIGHUP)?;
    sc.daemon
        .wait_for_event(|e| e["event"] == "config_reloaded", Duration::from_secs(30))?;
    let list: Value = serde_json::from_str(&ok(&socket, &["allow", "--list", "--json"])?)?;
    let host = entry(&list, own);
    assert_eq!(host["origin"], "host", "{list}");
    assert_eq!(entry(&list, "127.0.0.0/8")["origin"], "host", "{list}");
    let table = ok(&socket, &["allow", "--list"])?;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(own) && l.contains("always")),
        "{table}"
    );

    // Allowlist changes are events.
    ok(&socket, &["allow", "198.18.9.0/24"])?;
    sc.wait("allowlisted", "198.18.9.0/24")?;
    let list: Value = serde_json::from_str(&ok(&socket, &["allow", "--list", "--json"])?)?;
    assert_eq!(entry(&list, "198.18.9.0/24")["origin"], "runtime", "{list}");
    ok(&socket, &["disallow", "198.18.9.0/24"])?;
    sc.wait("disallowed", "198.18.9.0/24")?;

    // A prefix with host bits set is refused, not widened behind the
    // operator's back; a longer block is kept unless a TTL is asked for.
    let (refused, _, err) = scanner_tests::daemon::cli(&socket, &["block", "10.1.2.3/8"])?;
    assert!(!refused && err.contains("10.0.0.0/8"), "{err}");
    let out = ok(&socket, &["block", "10.0.0.0/8", "--ttl", "2h"])?;
    assert_eq!(out.trim(), "blocked 10.0.0.0/8 for 2h");
    let out = ok(&socket, &["block", "10.0.0.0/8"])?;
    assert!(
        out.starts_with("10.0.0.0/8 is already blocked for 1h 59m") && out.contains("kept"),
        "{out}"
    );
    let status = call(&socket, &Request::Status {})?;
    assert_eq!(status["blocks"], 1, "{status}");
    let out = ok(&socket, &["block", "10.0.0.0/8", "--ttl", "5m"])?;
    assert_eq!(
        out.trim(),
        "blocked 10.0.0.0/8 for 5m",
        "asked for: shortened"
    );

    // The table lines up, and a block without a scan shows dashes.
    assert!(sc.answered(None, "1-100")? > 0);
    sc.wait("scan_detected", Lab::ATTACKER_V4)?;
    let table = ok(&socket, &["list"])?;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines.len() >= 3, "{table}");
    for column in ["state", "kind", "first seen", "block expires"] {
        let at = lines[0].find(column).unwrap_or(usize::MAX);
        for line in &lines[1..] {
            assert!(
                line.len() > at
                    && line.as_bytes()[at - 2..at] == *b"  "
                    && line.as_bytes()[at] != b' ',
                "column {column:?} at {at} in:\n{table}"
            );
        }
    }
    let row = lines
        .iter()
        .find(|l| l.starts_with("10.0.0.0/8"))
        .copied()
        .unwrap_or_default();
    assert!(!row.contains("null") && row.contains(" - "), "{row}");
    sc.stop()?;
    Ok(())
}

#[test]
fn bad_requests_get_errors_and_change_nothing() -> anyhow::Result<()> {
    if !require_root("bad_requests_get_errors_and_change_nothing") {
        return Ok(());
    }
    let mut sc = Scenario::start(&[], &[], &[])?;
    let socket = sc.daemon.socket().to_path_buf();
    let raw = |bytes: &[u8]| -> anyhow::Result<Value> {
        let mut s = UnixStream::connect(&socket)?;
        // The daemon may answer before reading all of an oversized request.
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(serde_json::from_str(&answer)?)
    };
    for bad in [
        &b"garbage\n"[..],
        b"{\"cmd\":\"rm -rf\"}\n",
        b"{\"cmd\":\"block\",\"target\":\"999.1.1.1\"}\n",
        b"{\"cmd\":\"block\",\"target\":\"198.18.0.1\",\"ttl\":\"soon\"}\n",
    ] {
        let answer = raw(bad)?;
        assert_eq!(answer["ok"], false, "{answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }
    let answer = raw(&vec![b'{'; 10_000])?;
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("too large")),
        "{answer}"
    );
    // Still serving, and nothing was blocked.
    let status = ok(&socket, &["status"])?;
    assert!(status.contains("blocks:            0"), "{status}");

    // Bad input on the CLI side, and a daemon that is not there.
    let (success, _, err) = cli(&socket, &["block", "not-an-ip"])?;
    assert!(
        !success && err.contains("not an IP address or CIDR"),
        "{err}"
    );
    let (success, _, err) = cli(Path::new("/nonexistent/scanner.sock"), &["status"])?;
    assert!(!success && err.contains("cannot reach the daemon"), "{err}");
    sc.stop()?;
    Ok(())
}

#[test]
fn only_root_and_the_socket_group_may_connect() -> anyhow::Result<()> {
    if !require_root("only_root_and_the_socket_group_may_connect") {
        return Ok(());
    }
    let mut sc = Scenario::start(&[], &[], &[])?;
    let socket = sc.daemon.socket().to_path_buf();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(scanner_binary()?)
        .args(["status", "--socket"])
        .arg(&socket)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("permission denied"), "{err}");
    sc.stop()?;
    Ok(())
}

#[test]
fn a_second_daemon_on_the_same_socket_attaches_nothing() -> anyhow::Result<()> {
    if !require_root("a_second_daemon_on_the_same_socket_attaches_nothing") {
        return Ok(());
    }
    let mut sc = Scenario::start(&[], &[], &[])?;
    let socket = sc.daemon.socket().to_path_buf();
    let socket_str = socket.to_str().unwrap_or_default();
    // Another interface (the first daemon's is refused before the socket
    // is even tried), the same socket.
    let out = sc
        .lab
        .server
        .command(scanner_binary()?.to_str().unwrap_or_default())
        .args(["run", "--iface", "lo", "--socket", socket_str])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("already listening"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("attached"));
    // The first one still answers.
    ok(&socket, &["status"])?;
    sc.stop()?;
    Ok(())
}

/// `scanner status` counts the packets of the interfaces it watches only:
/// a BPF_PROG_TEST_RUN of the attached program (as `bpftool prog run` or a
/// benchmark does, on ifindex 1) is not traffic of this host's interfaces.
#[test]
fn status_counts_only_the_watched_interfaces() -> anyhow::Result<()> {
    if !require_root("status_counts_only_the_watched_interfaces") {
        return Ok(());
    }
    let sc = Scenario::start(&[22], &[], &[])?;
    let socket = sc.daemon.socket().to_path_buf();
    let seen = || -> anyhow::Result<u64> {
        let status = scanner_userspace::testing::call(
            &socket,
            &scanner_userspace::testing::Request::Status {},
        )?;
        status["packets"]["seen"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no packets.seen: {status}"))
    };
    let program = *sc
        .xdp_programs()?
        .first()
        .ok_or_else(|| anyhow::anyhow!("not attached"))?;
    let dir = scanner_tests::TempDir::new("test-run")?;
    let frame = dir.0.join("frame");
    std::fs::write(&frame, scanner_tests::packets::eth(0x0806, &[], &[0; 28]))?;
    // Counters are kept per ifindex modulo 64: a watched interface in slot
    // 1 shares it with the test runs (1 run in 64; then nothing tells them
    // apart, and the test says so).
    let watched = sc
        .lab
        .server
        .enter(|| scanner_tests::netns::ifindex(Lab::SERVER_IF))??;
    if watched % 64 == 1 {
        eprintln!(
            "SKIPPED: {} has ifindex {watched}, the test runs' slot",
            Lab::SERVER_IF
        );
        return Ok(());
    }
    let before = seen()?;
    let out = std::process::Command::new("bpftool")
        .args(["prog", "run", "id", &program.to_string(), "data_in"])
        .arg(&frame)
        .args(["repeat", "100000"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = seen()?;
    // The watched veth is quiet here (a neighbour packet or two at most).
    assert!(
        after - before < 100,
        "test runs counted: {before} -> {after}"
    );
    Ok(())
}
