//! State that outlives the daemon: maps and XDP links pinned under bpffs.
//!
//! Maps (blocks, allowlist, sources, counters) are pinned, so a restart,
//! planned or after `kill -9`, picks up where the last run stopped. Each
//! interface's XDP link is pinned while the daemon runs: if the daemon dies,
//! the program stays attached and blocks stay enforced; the next daemon
//! takes the link over and swaps its own program in, so nothing is attached
//! twice. A clean stop (SIGINT/SIGTERM) unpins and detaches the links but
//! keeps the maps, so blocks resume, on their original schedule, at the next
//! start.
//!
//! One daemon owns a pin directory at a time: it holds an exclusive flock
//! on the directory for its whole life, so a second daemon started on the
//! same pins is refused instead of taking over a live daemon's link.

use std::{
    os::fd::{AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{
        Xdp,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};
use scanner_common::names::STATE_VERSION;
use thiserror::Error;

use crate::kernel::load::{self, AttachedMode, LoadError};

/// Where state is pinned unless `--pin-dir` says otherwise.
pub(crate) const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/scanner";
const BPFFS_ROOT: &str = "/sys/fs/bpf";

#[derive(Debug, Error)]
pub(crate) enum PinError {
    #[error(
        "{0} is not on a BPF filesystem (mount one: `mount -t bpf bpf /sys/fs/bpf`, or choose --pin-dir)"
    )]
    NotBpffs(PathBuf),
    /// Under systemd, the unit's seccomp filter answers mount(2) with EPERM:
    /// a bpffs mounted inside the service's own mount namespace would vanish
    /// with it, so the host must provide one.
    #[error(
        "{BPFFS_ROOT} is not a BPF filesystem and this process may not mount one: mount it before starting (`mount -t bpf bpf {BPFFS_ROOT}`, as systemd does on a booted host; in a container, bind the host's in)"
    )]
    Mount(#[source] nix::Error),
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another scanner daemon{} is running on the pinned state in {path}: stop it first, or give this one its own --pin-dir",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse { path: PathBuf, holder: Option<u32> },
}

/// The directory of one layout version of pinned state, locked for this
/// daemon while the value lives.
#[derive(Debug)]
pub(crate) struct PinDir {
    dir: PathBuf,
    /// The directory, opened and flocked (the lock goes with the descriptor).
    _lock: OwnedFd,
    /// Whether this daemon mounted the bpffs it pins to.
    mounted: bool,
    /// The directories this daemon created, innermost first: removed on
    /// drop while still empty (a start refused before anything was pinned
    /// leaves nothing behind).
    created: Vec<PathBuf>,
}

impl Drop for PinDir {
    fn drop(&mut self) {
        for dir in &self.created {
            // Fails, harmlessly, once anything is pinned inside.
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

impl PinDir {
    /// Prepares and locks `base/v<STATE_VERSION>`. `base` must be on bpffs;
    /// for the default location a missing bpffs is mounted at /sys/fs/bpf.
    /// Another live daemon on the same directory is [`PinError::InUse`].
    pub(crate) fn prepare(base: &Path) -> Result<Self, PinError> {
        // The nearest existing ancestor tells the filesystem.
        let mut probe = base.to_path_buf();
        while !probe.exists() {
            if !probe.pop() {
                break;
            }
        }
        let mut mounted = false;
        if !is_bpffs(&probe) {
            if base.starts_with(BPFFS_ROOT) && Path::new(BPFFS_ROOT).is_dir() {
                nix::mount::mount(
                    Some("bpf"),
                    BPFFS_ROOT,
                    Some("bpf"),
                    nix::mount::MsFlags::empty(),
                    None::<&str>,
                )
                .map_err(PinError::Mount)?;
                mounted = true;
            } else {
                return Err(PinError::NotBpffs(base.to_path_buf()));
            }
        }
        let dir = base.join(format!("v{STATE_VERSION}"));
        let created: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.exists())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(&dir).map_err(|source| PinError::Create {
            path: dir.clone(),
            source,
        })?;
        let lock = lock(&dir)?;
        Ok(Self {
            dir,
            _lock: lock,
            mounted,
            created,
        })
    }

    /// Whether this daemon mounted bpffs itself (none was mounted).
    pub(crate) fn mounted_bpffs(&self) -> bool {
        self.mounted
    }

    /// The directory itself (maps are pinned in it by name).
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directory of layout `version` beside this one, when it exists.
    pub(crate) fn sibling(&self, version: u32) -> Option<PathBuf> {
        let dir = self.dir.parent()?.join(format!("v{version}"));
        dir.is_dir().then_some(dir)
    }

    /// Locks `dir` like a daemon's own pin directory: None while a daemon
    /// holds it.
    pub(crate) fn lock_other(dir: &Path) -> Option<OwnedFd> {
        lock(dir).ok()
    }

    /// bpffs holds only BPF objects, so the attach mode is in the name.
    fn link(&self, iface: &str, mode: AttachedMode) -> PathBuf {
        self.dir.join(format!("link-{iface}-{}", mode.as_str()))
    }

    /// The link a previous daemon pinned for `iface`, and its mode.
    fn pinned_link(&self, iface: &str) -> Option<(PathBuf, AttachedMode)> {
        [AttachedMode::Native, AttachedMode::Skb]
            .into_iter()
            .map(|m| (self.link(iface, m), m))
            .find(|(path, _)| path.exists())
    }

    /// Fails with [`LoadError::Busy`] when an XDP program that is not ours
    /// (no link of it pinned here) holds `iface`: checked before anything
    /// is loaded, and again before attaching.
    pub(crate) fn check_free(&self, iface: &str) -> Result<(), LoadError> {
        if self.pinned_link(iface).is_some() {
            return Ok(());
        }
        if let Some(ifindex) = crate::kernel::iface::lookup(iface)
            && let Some(other) = crate::kernel::xdp_owner::xdp_owner(ifindex)
        {
            return Err(LoadError::Busy {
                iface: iface.to_owned(),
                other: other.to_string(),
            });
        }
        Ok(())
    }

    /// Attaches to `iface`: takes over a link a previous daemon left pinned
    /// (swapping this program in), or attaches anew and pins the link.
    /// Returns the mode and whether an existing link was taken over.
    pub(crate) fn attach(
        &self,
        ebpf: &mut Ebpf,
        iface: &str,
        mode: load::XdpMode,
    ) -> Result<(AttachedMode, bool), LoadError> {
        if let Some((path, pinned_mode)) = self.pinned_link(iface) {
            match self.take_over(ebpf, &path) {
                Ok(()) => return Ok((pinned_mode, true)),
                Err(e) => {
                    tracing::warn!(iface, "stale pinned link ({e:#}); attaching anew");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        self.check_free(iface)?;
        let (attached, link_id) = load::attach_link(ebpf, iface, mode)?;
        let path = self.link(iface, attached);
        let program = load::program(ebpf)?;
        let link = program
            .take_link(link_id)
            .map_err(|e| pin_err(iface, &path, e))?;
        match FdLink::try_from(link) {
            Ok(fd) => {
                fd.pin(&path).map_err(|e| pin_err(iface, &path, e))?;
            }
            // Kernels without bpf_link attach through netlink; such an
            // attachment cannot be pinned, so a crash will detach it.
            Err(_) => tracing::warn!(
                iface,
                "XDP attached via netlink: it will not survive a crash"
            ),
        }
        Ok((attached, false))
    }

    fn take_over(&self, ebpf: &mut Ebpf, path: &Path) -> anyhow::Result<()> {
        let pinned = PinnedLink::from_pin(path)?;
        let fd: FdLink = pinned.into();
        let link = XdpLink::try_from(fd)?;
        let program: &mut Xdp = load::program(ebpf)?;
        program.attach_to_link(link)?;
        Ok(())
    }

    /// A clean stop: unpin `iface`'s link so it detaches with the program.
    pub(crate) fn release(&self, iface: &str) {
        while let Some((path, _)) = self.pinned_link(iface) {
            if std::fs::remove_file(&path).is_err() {
                break;
            }
        }
    }
}

fn pin_err(
    iface: &str,
    path: &Path,
    e: impl std::error::Error + Send + Sync + 'static,
) -> LoadError {
    LoadError::PinLink {
        iface: iface.to_owned(),
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// Opens `dir` and takes an exclusive, non-blocking flock on it.
fn lock(dir: &Path) -> Result<OwnedFd, PinError> {
    let fd: OwnedFd = std::fs::File::open(dir)
        .map_err(|source| PinError::Lock {
            path: dir.to_path_buf(),
            source,
        })?
        .into();
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(fd);
    }
    let source = std::io::Error::last_os_error();
    if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(PinError::InUse {
            path: dir.to_path_buf(),
            holder: lock_holder(dir),
        });
    }
    Err(PinError::Lock {
        path: dir.to_path_buf(),
        source,
    })
}

/// The pid holding a flock on `path`, from /proc/locks
/// (`1: FLOCK  ADVISORY  WRITE 1234 00:27:18292 0 EOF`).
fn lock_holder(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    let dev = meta.dev();
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    parse_lock_holder(&std::fs::read_to_string("/proc/locks").ok()?, &id)
}

fn parse_lock_holder(locks: &str, id: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&id))
            .then(|| f.get(4).and_then(|pid| pid.parse().ok()))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_holders_are_read_from_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 99 00:27:18292 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 12893 00:27:18292 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 7 00:28:1 0 EOF\n";
        assert_eq!(parse_lock_holder(locks, "00:27:18292"), Some(12893));
        assert_eq!(parse_lock_holder(locks, "00:28:1"), Some(7));
        assert_eq!(parse_lock_holder(locks, "00:29:1"), None);
    }
}
