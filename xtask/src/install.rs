//! `cargo xtask install`, `cargo xtask uninstall` and `cargo xtask package`:
//! the binary, the systemd unit, the example configuration, logrotate and
//! sysusers files, shell completions and man pages, laid out the same way in
//! a file system or in a .deb (cargo-deb). An install writes a manifest of
//! what it wrote, which uninstall reads back.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::shell;

/// Files generated from the binary itself (clap definitions, defaults).
const ASSETS: &str = "target/assets";
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Generates completions, man pages and the example config into
/// target/assets from the built binary.
fn generate(bin: &Path) -> anyhow::Result<PathBuf> {
    let dir = shell::workspace_root().join(ASSETS);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("completions")).context("creating target/assets")?;
    let output = |args: &[&str], to: &Path| -> anyhow::Result<()> {
        let out = Command::new(bin)
            .args(args)
            .output()
            .with_context(|| format!("running scanner {args:?}"))?;
        if !out.status.success() {
            bail!(
                "scanner {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        fs::write(to, out.stdout).with_context(|| format!("writing {}", to.display()))
    };
    for (shell, file) in [
        ("bash", "scanner.bash"),
        ("zsh", "_scanner"),
        ("fish", "scanner.fish"),
    ] {
        output(&["completions", shell], &dir.join("completions").join(file))?;
    }
    output(&["config", "--print-default"], &dir.join("scanner.toml"))?;
    let man = dir.join("man");
    let man_str = man.to_str().context("non-UTF-8 path")?;
    shell::status(Command::new(bin).args(["manpage", "--dir", man_str]))?;
    Ok(dir)
}

/// (source, destination relative to the root, mode, keep an existing file).
type Item = (PathBuf, PathBuf, u32, bool);

/// packaging/crowdsec's files (the .deb's assets list the same).
const CROWDSEC: [(&str, &str); 5] = [
    ("parsers/s01-parse", "scanner-logs.yaml"),
    ("scenarios", "scanner-horizontal-scan.yaml"),
    ("scenarios", "scanner-port-sweep.yaml"),
    ("scenarios", "scanner-distributed-horizontal.yaml"),
    ("collections", "scanner.yaml"),
];

fn items(bin: &Path, assets: &Path, prefix: &Path) -> anyhow::Result<Vec<Item>> {
    let root = shell::workspace_root();
    let rel = |p: &Path| p.strip_prefix("/").unwrap_or(p).to_path_buf();
    let prefix = rel(prefix);
    // Units of the distribution's /usr go to /lib; a local install to /etc.
    let unit_dir = if prefix == Path::new("usr") {
        PathBuf::from("lib/systemd/system")
    } else {
        PathBuf::from("etc/systemd/system")
    };
    let share = prefix.join("share");
    let mut v: Vec<Item> = vec![
        (bin.to_path_buf(), prefix.join("bin/scanner"), 0o755, false),
        (
            root.join("packaging/scanner.service"),
            unit_dir.join("scanner.service"),
            0o644,
            false,
        ),
        (
            assets.join("scanner.toml"),
            "etc/scanner/scanner.toml".into(),
            0o644,
            true,
        ),
        (
            root.join("packaging/scanner.default"),
            "etc/default/scanner".into(),
            0o644,
            true,
        ),
        (
            root.join("packaging/scanner.logrotate"),
            "etc/logrotate.d/scanner".into(),
            0o644,
            true,
        ),
        (
            root.join("packaging/scanner.sysusers"),
            prefix.join("lib/sysusers.d/scanner.conf"),
            0o644,
            false,
        ),
        (
            assets.join("completions/scanner.bash"),
            share.join("bash-completion/completions/scanner"),
            0o644,
            false,
        ),
        (
            assets.join("completions/_scanner"),
            share.join("zsh/vendor-completions/_scanner"),
            0o644,
            false,
        ),
        (
            assets.join("completions/scanner.fish"),
            share.join("fish/vendor_completions.d/scanner.fish"),
            0o644,
            false,
        ),
        // Monitoring: a Grafana dashboard and Prometheus alert rules over
        // the daemon's metrics.
        (
            root.join("packaging/grafana-dashboard.json"),
            share.join("scanner/grafana-dashboard.json"),
            0o644,
            false,
        ),
        (
            root.join("packaging/prometheus-alerts.yml"),
            share.join("scanner/prometheus-alerts.yml"),
            0o644,
            false,
        ),
    ];
    // The CrowdSec collection for the probe signals, in the hub's layout:
    // copied into a CrowdSec config directory, it is installed.
    for (dir, name) in CROWDSEC {
        v.push((
            root.join("packaging/crowdsec").join(dir).join(name),
            share.join("scanner/crowdsec").join(dir).join(name),
            0o644,
            false,
        ));
    }
    for page in fs::read_dir(assets.join("man")).context("reading the man pages")? {
        let page = page?.path();
        let name = page.file_name().context("man page name")?.to_owned();
        v.push((page, share.join("man/man1").join(name), 0o644, false));
    }
    Ok(v)
}

/// The list of what an install wrote, relative to the root: its files, then
/// `dir PATH` for each directory it created, and `group scanner` when it
/// created that group. Uninstall removes exactly these.
const MANIFEST: &str = "share/scanner/install-manifest";
const GROUP: &str = "scanner";
const GROUP_LINE: &str = "group scanner";
const DIR: &str = "dir ";

/// Creates `dir` (under `root`) and its missing parents; the ones it
/// created go into `created`, relative to `root`.
fn create_dirs(root: &Path, dir: &Path, created: &mut Vec<String>) -> anyhow::Result<()> {
    let missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.exists())
        .map(Path::to_path_buf)
        .collect();
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for d in missing.iter().rev() {
        let rel = d
            .strip_prefix(root)
            .unwrap_or(d)
            .to_string_lossy()
            .into_owned();
        if !created.contains(&rel) {
            created.push(rel);
        }
    }
    Ok(())
}

/// `cargo xtask install`: everything under `destdir` (default `/`).
pub(crate) fn install(prefix: &Path, destdir: Option<&Path>) -> anyhow::Result<()> {
    let bin = shell::build_scanner(true)?;
    let assets = generate(&bin)?;
    let root = destdir.unwrap_or(Path::new("/"));
    let bin_path = prefix.join("bin/scanner");
    let manifest_path = root
        .join(prefix.strip_prefix("/").unwrap_or(prefix))
        .join(MANIFEST);
    let earlier = fs::read_to_string(&manifest_path).unwrap_or_default();
    // Directories an earlier install created are still its own.
    let mut created: Vec<String> = earlier
        .lines()
        .filter_map(|l| l.strip_prefix(DIR))
        .map(str::to_owned)
        .collect();
    let mut written = Vec::new();
    for (src, dest, mode, keep) in items(&bin, &assets, prefix)? {
        let to = root.join(&dest);
        written.push(dest.clone());
        if keep && to.exists() {
            println!("install: kept {} (already there)", to.display());
            continue;
        }
        if let Some(dir) = to.parent() {
            create_dirs(root, dir, &mut created)?;
        }
        if dest.extension().is_some_and(|e| e == "service") {
            // The unit names the binary where this install put it.
            let unit =
                fs::read_to_string(&src)?.replace("/usr/bin/scanner", &bin_path.to_string_lossy());
            fs::write(&to, unit)?;
        } else {
            fs::copy(&src, &to)
                .with_context(|| format!("copying {} to {}", src.display(), to.display()))?;
        }
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
        println!("install: {}", to.display());
    }
    if let Some(dir) = manifest_path.parent() {
        create_dirs(root, dir, &mut created)?;
    }
    let mut manifest: Vec<String> = written
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    manifest.extend(created.iter().map(|d| format!("{DIR}{d}")));
    // An earlier install that created the group still owns it.
    let created_before = earlier.lines().any(|l| l == GROUP_LINE);
    // The unit runs with group scanner; only a real install creates it.
    if destdir.is_none() && (ensure_group()? || created_before) {
        manifest.push(GROUP_LINE.to_owned());
    }
    fs::write(&manifest_path, manifest.join("\n") + "\n")
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    if destdir.is_none() && Path::new("/run/systemd/system").exists() {
        shell::status(Command::new("systemctl").arg("daemon-reload"))?;
        println!(
            "install: run `systemctl enable --now scanner` after setting SCANNER_ARGS in /etc/default/scanner"
        );
    }
    Ok(())
}

/// Creates group scanner when it is missing; true when it did.
fn ensure_group() -> anyhow::Result<bool> {
    let known = Command::new("getent")
        .args(["group", GROUP])
        .output()
        .context("running getent")?;
    if known.status.success() {
        return Ok(false);
    }
    shell::status(Command::new("groupadd").args(["--system", GROUP]))?;
    println!("install: created group {GROUP}");
    Ok(true)
}

/// `cargo xtask uninstall`: stops and disables the service, then removes
/// every file the install under `destdir` wrote (read from its manifest).
/// The configuration files stay unless `purge`, which also removes them,
/// the history, the events files, the pinned state, and the group scanner
/// if the install created it.
pub(crate) fn uninstall(prefix: &Path, destdir: Option<&Path>, purge: bool) -> anyhow::Result<()> {
    let root = destdir.unwrap_or(Path::new("/"));
    let manifest_path = root
        .join(prefix.strip_prefix("/").unwrap_or(prefix))
        .join(MANIFEST);
    let manifest = fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "reading {} (nothing installed there by `cargo xtask install`?)",
            manifest_path.display()
        )
    })?;
    let live = destdir.is_none() && Path::new("/run/systemd/system").exists();
    if live {
        // Stopping detaches the XDP program; a unit that is not loaded is fine.
        let _ = Command::new("systemctl")
            .args(["disable", "--now", "scanner.service"])
            .status();
    }
    let kept = |p: &Path| !purge && p.starts_with("etc");
    for line in manifest
        .lines()
        .filter(|l| !l.is_empty() && *l != GROUP_LINE && !l.starts_with(DIR))
    {
        let rel = PathBuf::from(line);
        let path = root.join(&rel);
        if kept(&rel) {
            println!(
                "uninstall: kept {} (configuration; --purge removes it)",
                path.display()
            );
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => println!("uninstall: {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    if purge {
        for dir in ["var/lib/scanner", "var/log/scanner", "sys/fs/bpf/scanner"] {
            let path = root.join(dir);
            if path.exists() {
                fs::remove_dir_all(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
                println!("uninstall: {}", path.display());
            }
        }
    }
    fs::remove_file(&manifest_path)
        .with_context(|| format!("removing {}", manifest_path.display()))?;
    // The directories the install created, deepest first, once empty (a
    // kept configuration keeps its own).
    let mut dirs: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix(DIR))
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(Path::new(d).components().count()));
    for d in dirs {
        let _ = fs::remove_dir(root.join(d));
    }
    if purge && manifest.lines().any(|l| l == GROUP_LINE) && destdir.is_none() {
        shell::status(Command::new("groupdel").arg(GROUP))?;
        println!("uninstall: removed group {GROUP}");
    }
    if live {
        shell::status(Command::new("systemctl").arg("daemon-reload"))?;
    }
    Ok(())
}

/// `cargo xtask package`: a .deb with the same files, via cargo-deb.
pub(crate) fn package() -> anyhow::Result<PathBuf> {
    ensure_cargo_deb()?;
    let bin = shell::build_scanner(true)?;
    generate(&bin)?;
    let out = shell::cargo()
        .args([
            "deb",
            "--package",
            "scanner-userspace",
            "--no-build",
            "--output",
            "target/debian",
        ])
        .output()
        .context("running cargo deb")?;
    if !out.status.success() {
        bail!("cargo deb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let deb = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let deb = if deb.is_absolute() {
        deb
    } else {
        shell::workspace_root().join(deb)
    };
    println!("package: {}", deb.display());
    Ok(deb)
}

/// cargo-deb for `cargo xtask package` (setup installs it once).
pub(crate) fn ensure_cargo_deb() -> anyhow::Result<()> {
    shell::ensure_cargo_tool("package", "deb", "cargo-deb", CARGO_DEB_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of packaging/crowdsec is installed, and only those.
    #[test]
    fn the_crowdsec_list_is_the_folder() {
        let base = shell::workspace_root().join("packaging/crowdsec");
        let mut found = Vec::new();
        for dir in ["parsers/s01-parse", "scenarios", "collections"] {
            for f in fs::read_dir(base.join(dir)).unwrap() {
                let name = f.unwrap().file_name().into_string().unwrap();
                found.push(format!("{dir}/{name}"));
            }
        }
        let mut listed: Vec<String> = CROWDSEC.iter().map(|(d, n)| format!("{d}/{n}")).collect();
        found.sort();
        listed.sort();
        assert_eq!(found, listed);
        let top: Vec<String> = fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            top.iter()
                .all(|d| ["parsers", "scenarios", "collections"].contains(&d.as_str())),
            "{top:?}"
        );
    }
}
