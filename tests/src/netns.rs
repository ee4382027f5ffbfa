//! Network namespaces with unique names, removed on drop.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};

/// Where test daemons put their control sockets, one per namespace.
pub const SOCKET_DIR: &str = "/run/scanner-tests";
/// A bpffs the fixtures mount, where each namespace's daemon pins its state
/// (`ip netns exec` hides /sys/fs/bpf behind the namespace's own /sys).
pub const BPFFS_DIR: &str = "/run/scanner-tests/bpf";

/// Where the daemon watching namespace `name` pins its state.
pub fn pin_path(name: &str) -> PathBuf {
    PathBuf::from(BPFFS_DIR).join(name)
}

/// Prefix of every namespace the fixtures create: `scn-<pid>-<n>-<role>`.
pub const PREFIX: &str = "scn-";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command to completion; a non-zero exit is an error with its stderr.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> anyhow::Result<Output> {
    run(Command::new("ip").args(args))
}

/// A network namespace, deleted (with its interfaces) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `scn-<pid>-<n>-<role>` with its loopback up.
    pub fn new(role: &str) -> anyhow::Result<Self> {
        reap_stale();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{role}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        // Interfaces made here later skip IPv6 duplicate address detection:
        // their link-local addresses (which neighbour discovery needs) are
        // usable at once, not seconds later.
        ns.enter(|| {
            for conf in ["all", "default"] {
                let path = format!("/proc/sys/net/ipv6/conf/{conf}/accept_dad");
                std::fs::write(&path, "0").with_context(|| format!("writing {path}"))?;
            }
            anyhow::Ok(())
        })??;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it opens
    /// live there), and returns its result.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: a valid namespace fd; setns affects only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(anyhow::Error::from(std::io::Error::last_os_error())
                        .context(format!("entering {path}")));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {path} panicked"))?
        })
    }
}

impl Netns {
    /// Spawns a thread that enters this namespace, then runs `f`: sockets
    /// it (and threads it spawns) opens live there. Fails, without running
    /// `f`, when the namespace cannot be entered.
    pub fn spawn_in(
        &self,
        f: impl FnOnce() + Send + 'static,
    ) -> anyhow::Result<std::thread::JoinHandle<()>> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            // SAFETY: a valid namespace fd; setns affects only this thread
            // (and the threads it creates).
            let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0;
            let error = (!entered).then(std::io::Error::last_os_error);
            let _ = tx.send(error);
            if entered {
                f();
            }
        });
        match rx.recv() {
            Ok(None) => Ok(handle),
            Ok(Some(e)) => Err(anyhow::Error::from(e).context(format!("entering {path}"))),
            Err(_) => anyhow::bail!("the thread entering {path} died"),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Pinned state of a daemon that watched this namespace.
        let pins = pin_path(&self.name);
        if pins.exists() {
            let _ = std::fs::remove_dir_all(&pins);
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: could not remove namespace {}: {e:#}", self.name);
        }
    }
}

/// The index of interface `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("no interface {name}");
    }
    Ok(index)
}

/// Removes namespaces left by fixture processes that no longer exist (a test
/// run killed with SIGKILL cannot run its destructors).
pub fn reap_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Two namespaces joined by a veth pair:
/// attacker `veth-atk` 198.18.0.1/24, 2001:db8::1/64;
/// server `veth-srv` 198.18.0.2/24, 2001:db8::2/64.
#[derive(Debug)]
pub struct Lab {
    pub attacker: Netns,
    pub server: Netns,
}

impl Lab {
    pub const ATTACKER_IF: &str = "veth-atk";
    pub const SERVER_IF: &str = "veth-srv";
    pub const ATTACKER_V4: &str = "198.18.0.1";
    pub const SERVER_V4: &str = "198.18.0.2";
    pub const ATTACKER_V6: &str = "2001:db8::1";
    pub const SERVER_V6: &str = "2001:db8::2";

    pub fn new() -> anyhow::Result<Self> {
        let attacker = Netns::new("atk")?;
        let server = Netns::new("srv")?;
        ip(&[
            "link",
            "add",
            "name",
            Self::ATTACKER_IF,
            "netns",
            attacker.name(),
            "type",
            "veth",
            "peer",
            "name",
            Self::SERVER_IF,
            "netns",
            server.name(),
        ])?;
        for (ns, ifname, v4, v6) in [
            (
                &attacker,
                Self::ATTACKER_IF,
                Self::ATTACKER_V4,
                Self::ATTACKER_V6,
            ),
            (&server, Self::SERVER_IF, Self::SERVER_V4, Self::SERVER_V6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname])?;
            // nodad: usable at once, no duplicate-address-detection wait.
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"])?;
            ns.ip(&["link", "set", ifname, "up"])?;
        }
        Ok(Self { attacker, server })
    }

    /// The XDP programs attached to the server's interface, by id.
    pub fn xdp_programs(&self) -> anyhow::Result<Vec<u64>> {
        let out = self
            .server
            .ip(&["-j", "-d", "link", "show", Self::SERVER_IF])?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let xdp = &json[0]["xdp"];
        let mut ids: Vec<u64> = xdp["attached"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["prog"]["id"].as_u64())
            .collect();
        ids.extend(xdp["prog"]["id"].as_u64());
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Adds another address on the attacker's side (a second client).
    pub fn add_attacker_address(&self, cidr: &str) -> anyhow::Result<()> {
        self.attacker
            .ip(&["addr", "add", cidr, "dev", Self::ATTACKER_IF, "nodad"])
            .map(drop)
    }
}
