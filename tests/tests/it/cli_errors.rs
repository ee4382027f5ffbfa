//! Operator mistakes get clear errors and a non-zero exit, before anything
//! is loaded or attached.

use std::process::Command;

use scanner_tests::{daemon::scanner_binary, netns::Netns, require_root};

fn scanner(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let (code, err) = exit(args)?;
    Ok((code == Some(0), err))
}

/// The exit code and stderr of `scanner <args>`.
fn exit(args: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
    let out = Command::new(scanner_binary()?).args(args).output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn unknown_interface_is_named_with_the_ones_that_exist() -> anyhow::Result<()> {
    let (code, err) = exit(&["run", "--iface", "no-such-if0"])?;
    assert_eq!(code, Some(2), "a usage error: {err}");
    assert!(err.contains("unknown interface \"no-such-if0\""), "{err}");
    assert!(err.contains("lo"), "lists the interfaces that exist: {err}");
    Ok(())
}

#[test]
fn an_unknown_scan_kind_is_refused_with_the_known_ones() -> anyhow::Result<()> {
    let (code, err) = exit(&["history", "--kind", "bogus"])?;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("syn") && err.contains("distributed"), "{err}");
    Ok(())
}

/// A start refused after the pin directory was prepared (here: the metrics
/// port is taken) leaves no empty directories behind.
#[test]
fn a_refused_start_leaves_no_pin_directories() -> anyhow::Result<()> {
    if !require_root("a_refused_start_leaves_no_pin_directories") {
        return Ok(());
    }
    let ns = Netns::new("refused")?;
    let pins = scanner_tests::daemon::pin_dir(&ns)?.join("fresh");
    let taken = ns.enter(|| std::net::TcpListener::bind("127.0.0.1:0"))??;
    let port = taken.local_addr()?.to_string();
    let socket = std::env::temp_dir().join(format!("scanner-refused-{}.sock", std::process::id()));
    let out = ns
        .command(scanner_binary()?.to_str().unwrap_or("scanner"))
        .args([
            "run",
            "--iface",
            "lo",
            "--no-history",
            "--metrics-listen",
            &port,
        ])
        .arg("--pin-dir")
        .arg(&pins)
        .arg("--socket")
        .arg(&socket)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("metrics"), "{err}");
    assert!(!pins.exists(), "{} left behind", pins.display());
    Ok(())
}

#[test]
fn bad_arguments_are_refused_with_help() -> anyhow::Result<()> {
    for args in [
        &["run"][..],
        &["run", "-i", "lo", "--poll-interval", "0s"],
        &["run", "-i", "lo", "--poll-interval", "soon"],
        &["run", "-i", "lo", "--xdp-mode", "turbo"],
        &["run", "-i", "lo", "--events", "xml"],
        &["run", "-i", "lo", "--quiet-after", "1ms"],
        &["run", "-i", "lo", "--block-ttl", "100y"],
        &["frobnicate"],
    ] {
        let (ok, err) = scanner(args)?;
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
    let out = Command::new(scanner_binary()?)
        .args(["run", "--help"])
        .output()?;
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && help.contains("--xdp-mode"),
        "{help}"
    );
    Ok(())
}

#[test]
fn without_privileges_the_error_says_which_capabilities() -> anyhow::Result<()> {
    if !require_root("without_privileges_the_error_says_which_capabilities") {
        return Ok(());
    }
    // Drop to nobody with no capabilities, inside a namespace of our own.
    let ns = Netns::new("unpriv")?;
    let bin = scanner_binary()?;
    let out = ns
        .command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(bin)
        .args(["run", "--iface", "lo"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("permission denied") && err.contains("CAP_BPF"),
        "{err}"
    );
    Ok(())
}

#[test]
fn bad_configuration_exits_2_naming_file_line_and_key() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("scanner-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for (text, expect) in [
        ("[detection]\nfanout_port = 5\n", ":2:"),
        ("[detection]\nfanout_ports = \"many\"\n", ":2:"),
        ("[aggregation]\n\nipv4_prefix = 40\n", ":3: ipv4_prefix"),
        ("[report\n", ":1:"),
    ] {
        let file = dir.join("scanner.toml");
        std::fs::write(&file, text)?;
        let out = Command::new(scanner_binary()?)
            .args(["run", "--iface", "lo", "--config"])
            .arg(&file)
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {err}");
        assert!(
            err.contains(&format!("{}{expect}", file.display())),
            "{text:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "nothing attached: {:?}", out.stdout);
    }
    let out = Command::new(scanner_binary()?)
        .args([
            "run",
            "--iface",
            "lo",
            "--config",
            "/nonexistent/scanner.toml",
        ])
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/scanner.toml"));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `scanner ... | head -1`: a reader that goes away early is a normal end,
/// never a panic.
#[test]
fn a_closed_pipe_is_a_normal_end() -> anyhow::Result<()> {
    for args in [
        &["completions", "bash"][..],
        &["manpage"],
        &["config", "--print-default"],
        &["ports", "--socket", "/nonexistent/scanner.sock"],
        &["--help"],
    ] {
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let out = Command::new(scanner_binary()?)
            .args(args)
            .stdout(std::process::Stdio::from(writer))
            .stderr(std::process::Stdio::piped())
            .spawn()?
            .wait_with_output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?}: {err}", out.status);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    Ok(())
}

#[test]
fn errors_say_their_cause_once() -> anyhow::Result<()> {
    let (ok, err) = scanner(&["status", "--socket", "/nonexistent/scanner.sock"])?;
    assert!(!ok);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("is `scanner run` running?"), "{err}");
    Ok(())
}

/// `scanner config --check` reads the CrowdSec secret files as `run` does:
/// a file others can read, or one that is missing, is an error (exit 2),
/// not "ok" followed by a refused start.
#[test]
fn config_check_checks_the_crowdsec_secret_files() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = scanner_tests::TempDir::new("check-secrets")?;
    let password = dir.0.join("password");
    std::fs::write(&password, "s3cret\n")?;
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644))?;
    let config = dir.0.join("scanner.toml");
    std::fs::write(
        &config,
        format!(
            "[crowdsec]\nurl = \"http://198.18.0.9:8080\"\nmachine_id = \"server-a\"\npassword_file = \"{}\"\n",
            password.display()
        ),
    )?;
    let path = config.to_str().unwrap_or_default();
    let (code, err) = exit(&["config", "--check", path])?;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600))?;
    let (code, err) = exit(&["config", "--check", path])?;
    assert_eq!(code, Some(0), "{err}");
    std::fs::remove_file(&password)?;
    let (code, err) = exit(&["config", "--check", path])?;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("password"), "{err}");
    Ok(())
}
