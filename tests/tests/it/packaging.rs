//! What operators install: completions and man pages generated from the
//! CLI, `cargo xtask install` and the .deb of `cargo xtask package`, and a
//! systemd unit that systemd accepts.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use scanner_tests::daemon::scanner_binary;

fn stdout(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn scanner(args: &[&str]) -> anyhow::Result<String> {
    stdout(Command::new(scanner_binary()?).args(args))
}

#[test]
fn completions_and_man_pages_come_from_the_cli() -> anyhow::Result<()> {
    let bash = scanner(&["completions", "bash"])?;
    assert!(
        bash.contains("complete -F") && bash.contains("--metrics-listen"),
        "{bash}"
    );
    assert!(scanner(&["completions", "zsh"])?.starts_with("#compdef scanner"));
    assert!(scanner(&["completions", "fish"])?.contains("complete -c scanner"));
    let man = scanner(&["manpage"])?;
    assert!(man.contains(".TH scanner 1"), "{man}");
    assert!(
        man.contains("port\\-scan detector") || man.contains("port-scan detector"),
        "{man}"
    );
    let dir = std::env::temp_dir().join(format!("scanner-man-{}", std::process::id()));
    scanner(&["manpage", "--dir", dir.to_str().context("path")?])?;
    let ports = std::fs::read_to_string(dir.join("scanner-ports.1"))?;
    assert!(ports.contains("probed"), "{ports}");
    // More than the --help text: what an operator looks up.
    let main = std::fs::read_to_string(dir.join("scanner.1"))?;
    for section in [
        ".SH SIGNALS",
        ".SH EXIT STATUS",
        ".SH FILES",
        ".SH CONFIGURATION",
        ".SH EVENTS",
    ] {
        assert!(main.contains(section), "scanner.1 lacks {section}");
        assert!(man.contains(section), "scanner manpage lacks {section}");
    }
    assert!(
        main.contains("SIGHUP") && main.contains("scan_detected") && main.contains("quiet_after")
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A build with nothing to rebuild prints none of the nested eBPF build's
/// lines: they are shown only when that build fails.
#[test]
fn a_build_with_nothing_to_do_is_quiet() -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The package this test was built with is up to date: cargo only checks.
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--package", "scanner-userspace"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let relayed: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("warning: scanner-userspace"))
        .collect();
    assert!(relayed.is_empty(), "nested build output shown:\n{err}");
    Ok(())
}

/// `cargo xtask` tasks here share target/assets: one at a time.
static XTASK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn xtask(args: &[&str]) -> anyhow::Result<String> {
    let _one = XTASK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    stdout(
        Command::new(cargo)
            .current_dir(root)
            .args(["run", "--quiet", "--package", "xtask", "--"])
            .args(args),
    )
}

/// `systemd-analyze verify` on the unit: only complaints about what this
/// test machine lacks (the binary at /usr/bin, the man pages) are allowed.
fn verify_unit(unit: &Path) -> anyhow::Result<()> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let unexpected: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("is not executable") && !l.contains("man scanner"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(unexpected.is_empty(), "systemd-analyze verify:\n{text}");
    Ok(())
}

#[test]
fn install_and_package_lay_out_the_same_files() -> anyhow::Result<()> {
    if !scanner_tests::require_root("install_and_package_lay_out_the_same_files") {
        return Ok(());
    }
    let stage = std::env::temp_dir().join(format!("scanner-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    xtask(&["install", "--destdir", stage.to_str().context("path")?])?;
    let files = [
        "usr/bin/scanner",
        "lib/systemd/system/scanner.service",
        "etc/scanner/scanner.toml",
        "etc/default/scanner",
        "etc/logrotate.d/scanner",
        "usr/lib/sysusers.d/scanner.conf",
        "usr/share/bash-completion/completions/scanner",
        "usr/share/zsh/vendor-completions/_scanner",
        "usr/share/fish/vendor_completions.d/scanner.fish",
        "usr/share/man/man1/scanner.1",
        "usr/share/man/man1/scanner-run.1",
        "usr/share/man/man1/scanner-history.1",
        "usr/share/man/man1/scanner-report.1",
        "usr/share/scanner/grafana-dashboard.json",
        "usr/share/scanner/prometheus-alerts.yml",
        "usr/share/scanner/crowdsec/parsers/s01-parse/scanner-logs.yaml",
        "usr/share/scanner/crowdsec/scenarios/scanner-horizontal-scan.yaml",
        "usr/share/scanner/crowdsec/scenarios/scanner-port-sweep.yaml",
        "usr/share/scanner/crowdsec/scenarios/scanner-distributed-horizontal.yaml",
        "usr/share/scanner/crowdsec/collections/scanner.yaml",
    ];
    for f in files {
        assert!(stage.join(f).exists(), "{f} not installed");
    }
    let version = stdout(Command::new(stage.join("usr/bin/scanner")).arg("--version"))?;
    assert!(version.starts_with("scanner "), "{version}");
    // The installed example config is valid and is the defaults.
    let checked = stdout(
        Command::new(stage.join("usr/bin/scanner"))
            .arg("config")
            .arg("--check")
            .arg(stage.join("etc/scanner/scanner.toml")),
    )?;
    assert!(checked.contains(": ok"), "{checked}");
    let unit = stage.join("lib/systemd/system/scanner.service");
    let text = std::fs::read_to_string(&unit)?;
    for want in [
        "Type=notify",
        "ExecStart=/usr/bin/scanner run",
        "ExecReload=/bin/sh -c \"kill -HUP ${MAINPID}\"",
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_PTRACE CAP_DAC_READ_SEARCH",
        "SystemCallErrorNumber=EPERM",
        "RestartPreventExitStatus=2",
        "--events-file /var/log/scanner/events.jsonl",
        "Group=scanner",
        "ProtectSystem=strict",
        "StateDirectory=scanner",
    ] {
        assert!(text.contains(want), "unit lacks {want}");
    }
    verify_unit(&unit)?;

    // A second install keeps the operator's edited config.
    std::fs::write(stage.join("etc/scanner/scanner.toml"), "# edited\n")?;
    xtask(&["install", "--destdir", stage.to_str().context("path")?])?;
    assert_eq!(
        std::fs::read_to_string(stage.join("etc/scanner/scanner.toml"))?,
        "# edited\n"
    );

    // The .deb holds the same files, the configs as conffiles.
    let deb = package()?;
    let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb))?;
    for f in files {
        let f = if f.contains("/man1/") {
            format!("{f}.gz")
        } else {
            f.to_owned()
        };
        assert!(
            listing.contains(&format!("./{f}")),
            "{f} not in the .deb:\n{listing}"
        );
    }
    let name = stdout(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Package"))?;
    assert_eq!(name.trim(), "scanner");
    // Debian's synopsis (the Description's first line) is under 80 characters.
    let description = stdout(
        Command::new("dpkg-deb")
            .arg("-f")
            .arg(&deb)
            .arg("Description"),
    )?;
    let synopsis = description.lines().next().unwrap_or_default();
    assert!(
        !synopsis.is_empty() && synopsis.chars().count() < 80,
        "synopsis of {} characters: {synopsis:?}",
        synopsis.chars().count()
    );
    assert!(
        listing.contains("./usr/share/doc/scanner/changelog.Debian.gz"),
        "no changelog in the .deb:\n{listing}"
    );
    let unpacked = stage.join("deb");
    stdout(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let control = stage.join("control");
    stdout(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control))?;
    // Removing or upgrading the package stops the daemon first.
    let prerm = std::fs::read_to_string(control.join("prerm")).context("the .deb has no prerm")?;
    assert!(
        prerm.contains("deb-systemd-invoke stop scanner.service")
            && prerm.contains("remove")
            && prerm.contains("upgrade"),
        "{prerm}"
    );
    let sh = Command::new("sh")
        .arg("-n")
        .arg(control.join("prerm"))
        .status()?;
    assert!(sh.success(), "prerm is not valid sh");
    let conf = std::fs::read_to_string(control.join("conffiles"))?;
    assert!(
        conf.contains("/etc/scanner/scanner.toml")
            && conf.contains("/etc/default/scanner")
            && conf.contains("/etc/logrotate.d/scanner"),
        "{conf}"
    );
    let version = stdout(Command::new(unpacked.join("usr/bin/scanner")).arg("--version"))?;
    assert!(version.starts_with("scanner "));
    verify_unit(&unpacked.join("lib/systemd/system/scanner.service"))?;
    let _ = std::fs::remove_dir_all(&stage);
    Ok(())
}

/// `cargo xtask package` once for every test that needs the .deb.
pub(crate) fn package() -> anyhow::Result<PathBuf> {
    static DEB: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut built = DEB
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(deb) = built.as_ref() {
        return Ok(deb.clone());
    }
    let out = xtask(&["package"])?;
    let deb = PathBuf::from(
        out.lines()
            .rev()
            .find_map(|l| l.strip_prefix("package: "))
            .context("no .deb named")?,
    );
    *built = Some(deb.clone());
    Ok(deb)
}

/// lintian, as Debian's archive runs it: no error, no warning (nothing is
/// overridden), pedantic tags included.
#[test]
fn lintian_accepts_the_deb() -> anyhow::Result<()> {
    if !scanner_tests::require_root("lintian_accepts_the_deb") {
        return Ok(());
    }
    let deb = package()?;
    let out = Command::new("lintian")
        .args(["--pedantic", "--display-info", "--fail-on", "error,warning"])
        .arg(&deb)
        .output()
        .context("running lintian (cargo xtask setup installs it)")?;
    let said = String::from_utf8_lossy(&out.stdout);
    let tags: Vec<&str> = said
        .lines()
        .filter(|l| ["E:", "W:", "I:", "P:"].iter().any(|p| l.starts_with(p)))
        .collect();
    assert!(
        out.status.success() && tags.is_empty(),
        "lintian on {}:\n{said}{}",
        deb.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `cargo xtask uninstall` removes what `cargo xtask install` wrote (the
/// configuration stays), and with --purge the configuration too: nothing
/// of the install is left.
#[test]
fn uninstall_undoes_install() -> anyhow::Result<()> {
    if !scanner_tests::require_root("uninstall_undoes_install") {
        return Ok(());
    }
    let stage = scanner_tests::TempDir::new("uninstall")?;
    let dest = stage.0.to_str().context("path")?;
    // Something of the operator's beside the install stays untouched.
    std::fs::create_dir_all(stage.0.join("usr/bin"))?;
    std::fs::write(stage.0.join("usr/bin/other"), "x")?;
    xtask(&["install", "--destdir", dest])?;
    let manifest = std::fs::read_to_string(stage.0.join("usr/share/scanner/install-manifest"))?;
    assert!(
        manifest.lines().any(|l| l == "usr/bin/scanner"),
        "{manifest}"
    );
    xtask(&["uninstall", "--destdir", dest])?;
    let left = files_under(&stage.0)?;
    assert_eq!(
        left,
        [
            "etc/default/scanner",
            "etc/logrotate.d/scanner",
            "etc/scanner/scanner.toml",
            "usr/bin/other"
        ],
        "after uninstall"
    );
    xtask(&["install", "--destdir", dest])?;
    xtask(&["uninstall", "--destdir", dest, "--purge"])?;
    assert_eq!(
        files_under(&stage.0)?,
        ["usr/bin/other"],
        "after uninstall --purge"
    );
    // Nothing installed: said, not a silent success.
    let again = xtask(&["uninstall", "--destdir", dest]);
    assert!(again.is_err(), "a second uninstall succeeded");
    Ok(())
}

/// Every file below `dir`, relative and sorted.
fn files_under(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path.strip_prefix(dir)?.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[test]
fn promtool_accepts_the_shipped_alert_rules() -> anyhow::Result<()> {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus-alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .context("running promtool (package prometheus: cargo xtask setup installs it)")?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("SUCCESS: 8 rules found"), "{said}");

    // ScannerCrowdSecStale fires for a Local API that was never reached
    // (no pull ever, pulls failing), and for one that stopped answering.
    let dir = scanner_tests::TempDir::new("promtool")?;
    let tests = dir.0.join("stale_test.yml");
    std::fs::write(
        &tests,
        format!(
            r#"rule_files: ["{}"]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'scanner_crowdsec_last_sync_timestamp_seconds{{instance="never"}}'
        values: '0x30'
      - series: 'scanner_crowdsec_pull_errors_total{{instance="never"}}'
        values: '0+2x30'
      - series: 'scanner_crowdsec_last_sync_timestamp_seconds{{instance="stopped"}}'
        values: '60x30'
      - series: 'scanner_crowdsec_pull_errors_total{{instance="stopped"}}'
        values: '0+2x30'
      - series: 'scanner_crowdsec_last_sync_timestamp_seconds{{instance="fine"}}'
        values: '0+60x30'
      - series: 'scanner_crowdsec_pull_errors_total{{instance="fine"}}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: ScannerCrowdSecStale
        exp_alerts:
          - exp_labels: {{severity: warning, instance: never}}
            exp_annotations:
              summary: "scanner on never has not pulled CrowdSec decisions for 5 minutes (or never)"
              description: "Blocks already enforced stay; new fleet decisions do not arrive. Is the Local API up?"
          - exp_labels: {{severity: warning, instance: stopped}}
            exp_annotations:
              summary: "scanner on stopped has not pulled CrowdSec decisions for 5 minutes (or never)"
              description: "Blocks already enforced stay; new fleet decisions do not arrive. Is the Local API up?"
"#,
            rules.display()
        ),
    )?;
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&tests)
        .output()?;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
