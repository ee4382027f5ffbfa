//! `cargo xtask setup`: everything the build and the tests need, installed
//! idempotently. Each check is quick, so every other task can run it first.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::shell::status;

/// Debian packages: LLVM 22 for bpf-linker, the scan tools the tests run,
/// iproute2 for namespaces, bpftool to inspect the program, setpriv
/// (util-linux) for the unprivileged-user test.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "nmap",
    "hping3",
    "masscan",
    "iproute2",
    "bpftool",
    "curl",
    "util-linux",
    "xdp-tools",
    // The journal tests run a standalone systemd-journald (and verify the
    // unit with systemd-analyze); the dashboard test drives `scanner top`
    // in tmux.
    "systemd",
    "tmux",
    // `cargo xtask bench`: trafgen for veth throughput, scanlogd to compare.
    "netsniff-ng",
    "scanlogd",
    // The fleet tests run a real CrowdSec Local API (see `preseed_crowdsec`),
    // over https with a test CA made by openssl.
    "crowdsec",
    "openssl",
    // The history report is rendered by a real browser in the tests, and
    // the alert rules checked by promtool.
    "chromium",
    "prometheus",
    // The service test boots Debian 12 under its own systemd
    // (debootstrap, systemd-nspawn), installs the .deb there, and checks it
    // with lintian.
    "debootstrap",
    "systemd-container",
    "lintian",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn setup() -> anyhow::Result<()> {
    install_packages()?;
    install_rust_src()?;
    install_bpf_linker()?;
    crate::install::ensure_cargo_deb()?;
    Ok(())
}

fn missing_packages() -> anyhow::Result<Vec<&'static str>> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Status}\n"])
        .args(PACKAGES)
        .output()
        .context("running dpkg-query (is this Debian or Ubuntu?)")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    Ok(PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !listing
                .lines()
                .any(|l| l.split_once(' ') == Some((p, "installed")))
        })
        .collect())
}

fn install_packages() -> anyhow::Result<()> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        return Ok(());
    }
    if !scanner_tests::privilege::is_root() {
        bail!(
            "missing packages {}; run `cargo xtask setup` as root to install them",
            missing.join(" ")
        );
    }
    println!("setup: installing Debian packages: {}", missing.join(" "));
    if missing.contains(&"crowdsec") {
        preseed_crowdsec()?;
    }
    // Nothing an install brings is started (crowdsec, prometheus): the
    // tests run their own.
    let policy = forbid_service_starts()?;
    let installed = status(Command::new("apt-get").arg("update").arg("-q")).and_then(|()| {
        status(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    });
    if let Some(path) = policy {
        let _ = std::fs::remove_file(path);
    }
    installed
}

/// Debian's crowdsec postinst registers with CrowdSec's online service
/// unless its credentials file is non-empty, and there is no network here:
/// a placeholder file first. The tests run their own Local API, offline.
fn preseed_crowdsec() -> anyhow::Result<()> {
    let credentials = std::path::Path::new("/etc/crowdsec/online_api_credentials.yaml");
    let empty = std::fs::metadata(credentials).map_or(true, |m| m.len() == 0);
    if empty {
        std::fs::create_dir_all("/etc/crowdsec").context("creating /etc/crowdsec")?;
        std::fs::write(
            credentials,
            "# offline: no Central API (written by cargo xtask setup)\nurl: http://127.0.0.1:1/\nlogin: offline\npassword: offline\n",
        )
        .with_context(|| format!("writing {}", credentials.display()))?;
    }
    Ok(())
}

/// A policy-rc.d that forbids service starts during the install, when none
/// exists; returned, to be removed after.
fn forbid_service_starts() -> anyhow::Result<Option<&'static str>> {
    let policy = "/usr/sbin/policy-rc.d";
    if std::path::Path::new(policy).exists() {
        return Ok(None);
    }
    std::fs::write(policy, "#!/bin/sh\nexit 101\n").with_context(|| format!("writing {policy}"))?;
    std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .with_context(|| format!("making {policy} executable"))?;
    Ok(Some(policy))
}

fn install_rust_src() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup")?;
    let listing = String::from_utf8_lossy(&installed.stdout);
    if installed.status.success() && listing.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    if installed.status.success() {
        println!("setup: adding rust-src to the nightly toolchain (the BPF target builds core)");
        status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
    } else {
        println!("setup: installing the nightly toolchain with rust-src");
        status(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
    }
}

fn install_bpf_linker() -> anyhow::Result<()> {
    let version = Command::new("bpf-linker").arg("--version").output();
    if let Ok(out) = &version
        && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    let prefix = Command::new("llvm-config-22")
        .arg("--prefix")
        .output()
        .context("running llvm-config-22 (package llvm-22-dev)")?;
    let prefix = String::from_utf8_lossy(&prefix.stdout).trim().to_owned();
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 at {prefix} (a few minutes, once)"
    );
    status(
        Command::new("cargo")
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", prefix),
    )
}
