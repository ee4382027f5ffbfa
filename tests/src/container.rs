//! A booted Debian 12: its own systemd as PID 1 (systemd-nspawn), inside a
//! network namespace a test made, so packages and units are tried where
//! they run. The root comes from debootstrap once and is cached under
//! target/; every boot lays a throwaway overlay over it (`--volatile=
//! overlay`), so each test starts from the same clean system.
//!
//! What the container gets beyond nspawn's defaults is what any container
//! running scanner needs: CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, bpf(2)
//! through the system call filter, and a bpffs at /sys/fs/bpf (here a fresh
//! one mounted outside and bound in, as a booted host has).

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{Netns, TempDir};

/// Packages on top of debootstrap's minbase: the init system, and what the
/// tests run inside (ip, logrotate).
const INCLUDE: &str = "systemd,systemd-sysv,dbus,iproute2,logrotate";
/// Bumped whenever INCLUDE changes: a cached root of another version is
/// not reused.
const ROOT_VERSION: u32 = 1;
/// Where the .deb files given to [`Container::boot`] appear inside.
pub const DEBS: &str = "/srv/debs";
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The cached Debian 12 root, made with debootstrap on first use (about a
/// minute; Debian's default mirror, as this machine's apt uses). Several
/// tests asking at once wait for one debootstrap (a lock file).
pub fn debian_root() -> anyhow::Result<PathBuf> {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nspawn");
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let root = cache.join(format!("bookworm-v{ROOT_VERSION}"));
    let lock = File::create(cache.join("lock")).context("creating the root's lock file")?;
    // SAFETY: a valid descriptor; the lock goes with it when `lock` drops.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error()).context("locking the cached root");
    }
    if root.join("etc/os-release").exists() {
        return Ok(root);
    }
    let partial = cache.join(format!("bookworm-v{ROOT_VERSION}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    eprintln!(
        "container: debootstrap of Debian 12 into {} (once)",
        root.display()
    );
    let out = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={INCLUDE}"),
            "bookworm",
        ])
        .arg(&partial)
        .output()
        .context("running debootstrap (package debootstrap: cargo xtask setup installs it)")?;
    if !out.status.success() {
        bail!(
            "debootstrap failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    std::fs::rename(&partial, &root).context("moving the new root into place")?;
    Ok(root)
}

/// A running container, powered off and waited for on drop; its bpffs is
/// unmounted then.
pub struct Container {
    nspawn: Child,
    pid1: u32,
    name: String,
    bpffs: PathBuf,
    console: PathBuf,
    _scratch: TempDir,
}

impl Container {
    /// Boots the cached root in `ns`, with the files of `debs` under
    /// [`DEBS`], and waits until systemd says the boot is done.
    pub fn boot(ns: &Netns, debs: &Path) -> anyhow::Result<Self> {
        let root = debian_root()?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("scn-{}-{n}", std::process::id());
        let scratch = TempDir::new(&format!("container-{n}"))?;
        let bpffs = scratch.0.join("bpffs");
        std::fs::create_dir_all(&bpffs)?;
        crate::netns::run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs))?;
        let console = scratch.0.join("console.log");
        let log = File::create(&console)?;
        let spawned = Command::new("systemd-nspawn")
            .arg("--directory")
            .arg(&root)
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--volatile=overlay",
                "--console=read-only",
                "--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN",
                "--system-call-filter=bpf",
            ])
            .arg(format!("--machine={name}"))
            .arg(format!("--network-namespace-path=/run/netns/{}", ns.name()))
            .arg(format!("--bind={}:/sys/fs/bpf", bpffs.display()))
            .arg(format!("--bind-ro={}:{DEBS}", debs.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn();
        let nspawn = match spawned {
            Ok(child) => child,
            Err(e) => {
                unmount(&bpffs);
                return Err(e).context("running systemd-nspawn (package systemd-container)");
            }
        };
        let mut container = Self {
            nspawn,
            pid1: 0,
            name,
            bpffs,
            console,
            _scratch: scratch,
        };
        container.pid1 = container.wait_for_init()?;
        let state = container.wait_for_boot()?;
        if state != "running" {
            let failed = container.sh("systemctl --failed --no-legend")?;
            bail!("the container booted {state:?}, failed units:\n{failed}");
        }
        Ok(container)
    }

    /// The container's systemd: nspawn's child, once it runs systemd.
    fn wait_for_init(&mut self) -> anyhow::Result<u32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let parent = self.nspawn.id();
        loop {
            if let Some(status) = self.nspawn.try_wait()? {
                bail!("systemd-nspawn exited ({status}):\n{}", self.console_tail());
            }
            let children =
                std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
                    .unwrap_or_default();
            for pid in children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "systemd" {
                    return Ok(pid);
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "the container's systemd did not start:\n{}",
                    self.console_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `systemctl is-system-running --wait`, once systemd answers on its
    /// socket at all (until then systemctl says "offline"): the state the
    /// boot ended in.
    fn wait_for_boot(&self) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = self.run(&["systemctl", "is-system-running", "--wait"])?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !["", "offline", "initializing", "starting"].contains(&state.as_str()) {
                return Ok(state);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the container did not finish booting ({state:?}, {}):\n{}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    self.console_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The bpffs bound at the container's /sys/fs/bpf, as seen from here.
    pub fn bpffs(&self) -> &Path {
        &self.bpffs
    }

    /// The last lines nspawn and the container's console printed.
    pub fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs `argv` inside (every namespace of the container's systemd, a
    /// clean environment), to completion, whatever its exit status.
    pub fn run(&self, argv: &[&str]) -> anyhow::Result<Output> {
        let mut cmd = Command::new("nsenter");
        cmd.arg("--target")
            .arg(self.pid1.to_string())
            .args(["--all", "--", "env", "-i"])
            .arg(format!("PATH={PATH}"))
            .arg("LANG=C.UTF-8")
            .args(argv)
            .stdin(Stdio::null());
        cmd.output()
            .with_context(|| format!("running {argv:?} in container {}", self.name))
    }

    /// `sh -c script` inside, which must succeed; its stdout.
    pub fn sh(&self, script: &str) -> anyhow::Result<String> {
        let out = self.run(&["sh", "-c", script])?;
        if !out.status.success() {
            bail!(
                "in container {}: `{script}` failed ({}):\n{}{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `journalctl -o json <filters>` inside: the entries, oldest first.
    pub fn journal(&self, filters: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut argv = vec!["journalctl", "-o", "json", "--no-pager"];
        argv.extend_from_slice(filters);
        let out = self.run(&argv)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Polls the journal until `want` holds for the entries matching
    /// `filters` (journald writes asynchronously); those entries.
    pub fn wait_journal(
        &self,
        filters: &[&str],
        what: &str,
        want: impl Fn(&[serde_json::Value]) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let entries = self.journal(filters)?;
            if want(&entries) {
                return Ok(entries);
            }
            if Instant::now() >= deadline {
                let tail = self
                    .sh("journalctl -u scanner --no-pager -n 30")
                    .unwrap_or_default();
                bail!("timed out waiting for {what} in the journal; its last lines:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `check` (a shell condition inside) until it succeeds.
    pub fn wait_until(&self, check: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.run(&["sh", "-c", check])?.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let tail = self.sh("journalctl --no-pager -n 30").unwrap_or_default();
                bail!("timed out waiting for `{check}`; the journal's last lines:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM asks nspawn for an orderly power-off of the container.
        // SAFETY: a child process of ours, not yet reaped.
        unsafe { libc::kill(self.nspawn.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.nspawn.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(self.nspawn.try_wait(), Ok(None)) {
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
        unmount(&self.bpffs);
    }
}

fn unmount(path: &Path) {
    // Lazy: the pins go with the last reference to this bpffs.
    let _ = Command::new("umount").arg("--lazy").arg(path).status();
}
