//! A systemd journal to test against: the running one, or a standalone
//! systemd-journald started for the test (PID 1 here is not systemd).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

pub const SOCKET: &str = "/run/systemd/journal/socket";
const JOURNALD: &str = "/lib/systemd/systemd-journald";

/// The journal; stops the journald it started when dropped.
pub struct Journald {
    child: Option<Child>,
}

impl Journald {
    /// Uses the running journald, or starts one and waits for its socket.
    pub fn ensure() -> anyhow::Result<Self> {
        if Path::new(SOCKET).exists() && probe().is_ok() {
            return Ok(Self { child: None });
        }
        std::fs::create_dir_all("/run/systemd/journal").context("creating /run/systemd/journal")?;
        let _ = std::fs::remove_file(SOCKET);
        let child = Command::new(JOURNALD)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {JOURNALD} (package systemd)"))?;
        let journal = Self { child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if Path::new(SOCKET).exists() && probe().is_ok() {
                return Ok(journal);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("systemd-journald did not open {SOCKET} within 20 s")
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
            // Leave no socket nobody listens on.
            let _ = std::fs::remove_file(SOCKET);
        }
    }
}

/// Writes a marker entry and reads it back: the journal is up.
fn probe() -> anyhow::Result<()> {
    let marker = format!(
        "scanner-tests-probe-{}-{:?}",
        std::process::id(),
        Instant::now()
    );
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    socket.send_to(
        format!("MESSAGE={marker}\nSYSLOG_IDENTIFIER=scanner-tests\n").as_bytes(),
        SOCKET,
    )?;
    let found = wait_entries(
        &["-t", "scanner-tests"],
        |e| e["MESSAGE"] == marker,
        Duration::from_secs(5),
    )?;
    anyhow::ensure!(!found.is_empty(), "probe entry not found");
    Ok(())
}

/// `journalctl -o json <filters>`: the entries, oldest first.
pub fn entries(filters: &[&str]) -> anyhow::Result<Vec<Value>> {
    let out = Command::new("journalctl")
        .args(["-o", "json", "--no-pager", "--output-fields="])
        .args(filters)
        .output()
        .context("running journalctl")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Polls `journalctl` until an entry matches `want` (journald writes
/// asynchronously); returns every entry matching the filters then.
pub fn wait_entries(
    filters: &[&str],
    want: impl Fn(&Value) -> bool,
    timeout: Duration,
) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = entries(filters)?;
        if found.iter().any(&want) || Instant::now() >= deadline {
            return Ok(found);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// When journald received `entry` (its `__REALTIME_TIMESTAMP`).
pub fn received_at(entry: &Value) -> Option<SystemTime> {
    let us: u64 = entry["__REALTIME_TIMESTAMP"].as_str()?.parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_micros(us))
}

/// [`wait_entries`], then the earliest receive time of the entries `want`
/// matches (None: none came within `timeout`).
pub fn first_received(
    filters: &[&str],
    want: impl Fn(&Value) -> bool,
    timeout: Duration,
) -> anyhow::Result<Option<SystemTime>> {
    Ok(wait_entries(filters, &want, timeout)?
        .iter()
        .filter(|e| want(e))
        .filter_map(received_at)
        .min())
}
