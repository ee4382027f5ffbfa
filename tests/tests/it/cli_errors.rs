//! Operator mistakes get clear errors and a non-zero exit, before anything
//! is loaded or attached.

use std::process::Command;

use scanner_tests::{daemon::scanner_binary, netns::Netns, require_root};

fn scanner(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = Command::new(scanner_binary()?).args(args).output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn unknown_interface_is_named_with_the_ones_that_exist() -> anyhow::Result<()> {
    let (ok, err) = scanner(&["run", "--iface", "no-such-if0"])?;
    assert!(!ok);
    assert!(err.contains("unknown interface \"no-such-if0\""), "{err}");
    assert!(err.contains("lo"), "lists the interfaces that exist: {err}");
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
