//! `cargo xtask setup`: what a task needs, installed idempotently, and no
//! more: the demo gets the build and nmap, the tests and the benchmarks
//! everything. Each check is quick, so every task runs it first.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::shell::status;

/// Debian packages every build needs: LLVM 22 for bpf-linker.
const BUILD: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];

/// What `cargo xtask demo` runs besides the build: nmap, and iproute2 for
/// the namespaces.
const DEMO: &[&str] = &["nmap", "iproute2"];

/// What the tests and `cargo xtask bench` run besides the demo's.
const TEST: &[&str] = &[
    // The scan tools, bpftool to inspect the program, setpriv (util-linux)
    // for the unprivileged-user test.
    "hping3",
    "masscan",
    // The fleet sweep tests: zmap (and masscan) across five servers, and
    // rsyslog as the collector that writes files for CrowdSec to read.
    "zmap",
    "rsyslog",
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
    // The fleet tests run a real CrowdSec Local API from a private
    // configuration directory (see `preseed_crowdsec`), over https with a
    // test CA made by openssl.
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

/// What a task needs installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Building and linting: LLVM, rust-src, bpf-linker.
    Build,
    /// `cargo xtask demo`: the build, and nmap.
    Demo,
    /// The tests, the benchmarks, packaging: everything.
    Everything,
}

impl Need {
    fn packages(self) -> Vec<&'static str> {
        let mut p = BUILD.to_vec();
        if self != Self::Build {
            p.extend_from_slice(DEMO);
        }
        if self == Self::Everything {
            p.extend_from_slice(TEST);
        }
        p
    }
}

pub(crate) fn setup(need: Need) -> anyhow::Result<()> {
    install_packages(&need.packages())?;
    install_rust_src()?;
    install_bpf_linker()?;
    if need == Need::Everything {
        crate::install::ensure_cargo_deb()?;
    }
    Ok(())
}

fn missing_packages(wanted: &[&'static str]) -> anyhow::Result<Vec<&'static str>> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Status}\n"])
        .args(wanted)
        .output()
        .context("running dpkg-query (is this Debian or Ubuntu?)")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    Ok(wanted
        .iter()
        .copied()
        .filter(|p| {
            !listing
                .lines()
                .any(|l| l.split_once(' ') == Some((p, "installed")))
        })
        .collect())
}

fn install_packages(wanted: &[&'static str]) -> anyhow::Result<()> {
    let missing = missing_packages(wanted)?;
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
    let credentials = if missing.contains(&"crowdsec") {
        Some(preseed_crowdsec()?)
    } else {
        None
    };
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
    if let Some(before) = credentials {
        before.restore()?;
    }
    installed
}

const CAPI_CREDENTIALS: &str = "/etc/crowdsec/online_api_credentials.yaml";

/// The Central API credentials file as it was before the install.
enum Credentials {
    Absent,
    Empty,
    /// The operator's own: never touched.
    Kept,
}

impl Credentials {
    /// Puts the file back as it was: the package's postinst leaves it empty
    /// when it cannot register, and a placeholder left behind would point a
    /// real CrowdSec installed later at nothing.
    fn restore(self) -> anyhow::Result<()> {
        self.restore_at(std::path::Path::new(CAPI_CREDENTIALS))
    }

    fn restore_at(self, path: &std::path::Path) -> anyhow::Result<()> {
        match self {
            Self::Kept => Ok(()),
            Self::Empty => std::fs::write(path, "")
                .with_context(|| format!("emptying {} again", path.display())),
            Self::Absent => std::fs::remove_file(path)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .with_context(|| format!("removing {} again", path.display())),
        }
    }
}

/// Debian's crowdsec postinst registers with CrowdSec's online service
/// unless its credentials file is non-empty, and there is no network here:
/// a placeholder file for the install only ([`Credentials::restore`] puts
/// back what was there). The tests run their own Local API, offline, from
/// a private configuration directory.
fn preseed_crowdsec() -> anyhow::Result<Credentials> {
    let credentials = std::path::Path::new(CAPI_CREDENTIALS);
    let before = match std::fs::metadata(credentials) {
        Err(_) => Credentials::Absent,
        Ok(m) if m.len() == 0 => Credentials::Empty,
        Ok(_) => return Ok(Credentials::Kept),
    };
    std::fs::create_dir_all("/etc/crowdsec").context("creating /etc/crowdsec")?;
    std::fs::write(
        credentials,
        "# placeholder while cargo xtask setup installs crowdsec offline; removed after\nurl: http://127.0.0.1:1/\nlogin: offline\npassword: offline\n",
    )
    .with_context(|| format!("writing {}", credentials.display()))?;
    Ok(before)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's "Two commands" lists say exactly what each installs.
    #[test]
    fn the_readme_lists_what_the_demo_and_the_tests_install() {
        let readme =
            std::fs::read_to_string(crate::shell::workspace_root().join("README.md")).unwrap();
        let bullet = |start: &str| -> String {
            let from = readme
                .find(start)
                .unwrap_or_else(|| panic!("no {start} in README"));
            readme[from..]
                .split("\n- ")
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        let demo = bullet("- `demo`");
        let test = bullet("- `test`");
        let named = |text: &str, p: &str| text.contains(&format!("`{p}`"));
        for p in Need::Demo.packages() {
            assert!(named(&demo, p), "the demo installs {p}: {demo}");
        }
        for p in TEST {
            assert!(!named(&demo, p), "the demo does not install {p}");
            assert!(named(&test, p), "the tests install {p}: {test}");
        }
        assert!(!Need::Demo.packages().contains(&"crowdsec"));
        assert!(!Need::Build.packages().contains(&"nmap"));
    }

    #[test]
    fn the_credentials_file_is_put_back_as_it_was() {
        let dir = std::env::temp_dir().join(format!("xtask-capi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("online_api_credentials.yaml");
        std::fs::write(&path, "placeholder").unwrap();
        Credentials::Empty.restore_at(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        std::fs::write(&path, "placeholder").unwrap();
        Credentials::Absent.restore_at(&path).unwrap();
        assert!(!path.exists());
        Credentials::Absent.restore_at(&path).unwrap();
        std::fs::write(&path, "the operator's").unwrap();
        Credentials::Kept.restore_at(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "the operator's");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
