//! The long memory: which source probed which port, kept for days in the
//! history file, and the slow-scan decision over it (issue: crawlers that
//! walk a server's ports a few at a time, hours apart, from addresses that
//! rotate inside their network, are invisible to a detector that forgets a
//! source after an hour).
//!
//! It is fed what the daemon reads anyway (the kernel's first probes, and
//! the admitted sources' later ports: `daemon::probes`), never per packet.
//! A thread of its own owns a connection to the history file: it adds each
//! poll's probes in one transaction, then walks (`detect::slow`) the record
//! of every source and prefix the batch touched, over the window, and hands
//! what crosses the threshold back as a [`SlowScan`]. Entries the kernel
//! decided are marked, and so are slow scans once decided: each is reported
//! once a window. Input waits in a bounded queue; what does not fit is
//! dropped and counted, like every failure to write.

mod core;
pub(crate) mod store;
pub(crate) mod testing;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use ipnet::IpNet;
use rusqlite::Connection;
pub(crate) use store::Seen;

pub(crate) use self::core::Core;
use crate::{
    detect::slow::{Evidence, SlowRule},
    history::unix_ms,
};

/// Batches waiting for the thread at most (a poll's worth each).
const QUEUE: usize = 256;
/// Probes in one batch at most: past it they are dropped and counted.
const MAX_BATCH: usize = 200_000;
/// How often rows past the window and past the cap are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Addresses an event lists at most.
const ADDRESSES_SHOWN: usize = 32;

/// A slow scan: a source, or a prefix whose addresses probed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlowScan {
    /// The source (a /32 or /128), or the prefix.
    pub net: IpNet,
    pub prefix: bool,
    pub evidence: Evidence,
    /// The addresses behind it (up to [`ADDRESSES_SHOWN`]), and how many.
    pub addresses: Vec<IpAddr>,
    pub address_count: u32,
    /// The interface the probe that decided it came in on.
    pub ifindex: u32,
}

/// One probe, as the daemon hands it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    pub seen: Seen,
    pub ifindex: u32,
}

enum Input {
    Probes(Vec<Probe>),
    /// Entries the kernel decided: (address or prefix, is a prefix).
    Decided(Vec<(IpNet, bool)>),
}

/// The memory's settings, as the thread uses them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Settings {
    pub rule: SlowRule,
    pub window: Duration,
    pub max_rows: u64,
}

/// Counts for the metrics and `scanner status`.
#[derive(Debug, Default)]
pub(crate) struct MemoryStats {
    /// Probes added.
    pub probes: AtomicU64,
    /// Probes dropped (queue full, or a write that failed).
    pub dropped: AtomicU64,
    /// Rows forgotten before the window ended (the row cap).
    pub capped: AtomicU64,
    /// Rows held as of the last prune.
    pub rows: AtomicU64,
    /// Slow scans decided.
    pub decided: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum MemoryError {
    #[error("opening the long memory in {path}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
}

/// The daemon's handle on the memory thread.
pub(crate) struct Memory {
    tx: Option<SyncSender<Input>>,
    decisions: Receiver<SlowScan>,
    settings: Arc<std::sync::Mutex<Settings>>,
    stats: Arc<MemoryStats>,
    thread: Option<JoinHandle<()>>,
}

/// Opens the memory's tables in the history file at `path`.
pub(crate) fn open(path: &Path) -> Result<Connection, MemoryError> {
    let shown = path.display().to_string();
    let err = |source| MemoryError::Open {
        path: shown.clone(),
        source,
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    // A small page cache: the memory reads a few pages per walk.
    conn.pragma_update(None, "cache_size", -512).map_err(err)?;
    conn.execute_batch(store::SCHEMA).map_err(err)?;
    Ok(conn)
}

impl Memory {
    /// Starts the thread over the history file at `path`.
    pub(crate) fn start(path: &Path, settings: Settings) -> Result<Self, MemoryError> {
        let conn = open(path)?;
        let (tx, rx) = sync_channel(QUEUE);
        let (out, decisions) = std::sync::mpsc::channel();
        let stats = Arc::new(MemoryStats::default());
        let settings = Arc::new(std::sync::Mutex::new(settings));
        let worker = Worker {
            core: Core { conn },
            settings: Arc::clone(&settings),
            stats: Arc::clone(&stats),
            out,
            path: path.to_owned(),
        };
        let thread = std::thread::Builder::new()
            .name("memory".into())
            .spawn(move || worker.run(&rx))
            .ok();
        Ok(Self {
            tx: Some(tx),
            decisions,
            settings,
            stats,
            thread,
        })
    }

    pub(crate) fn stats(&self) -> &MemoryStats {
        &self.stats
    }

    /// New settings (a configuration reload).
    pub(crate) fn set(&self, settings: Settings) {
        if let Ok(mut s) = self.settings.lock() {
            *s = settings;
        }
    }

    /// Hands over a poll's probes (and counts `left_out` more as dropped);
    /// never blocks.
    pub(crate) fn observe(&self, (mut probes, left_out): (Vec<Probe>, u64)) {
        if left_out > 0 {
            self.dropped(left_out);
        }
        if probes.is_empty() {
            return;
        }
        if probes.len() > MAX_BATCH {
            self.dropped((probes.len() - MAX_BATCH) as u64);
            probes.truncate(MAX_BATCH);
        }
        let n = probes.len() as u64;
        if !self.send(Input::Probes(probes)) {
            self.dropped(n);
        }
    }

    /// Entries the kernel decided: not decided again as slow scans.
    pub(crate) fn decided(&self, entries: Vec<(IpNet, bool)>) {
        if !entries.is_empty() {
            self.send(Input::Decided(entries));
        }
    }

    /// The slow scans decided since the last call.
    pub(crate) fn take(&self) -> Vec<SlowScan> {
        self.decisions.try_iter().collect()
    }

    fn send(&self, input: Input) -> bool {
        self.tx.as_ref().is_some_and(|tx| {
            !matches!(
                tx.try_send(input),
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_))
            )
        })
    }

    fn dropped(&self, n: u64) {
        let before = self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        if before == 0 || (before + n).ilog2() != before.max(1).ilog2() {
            tracing::warn!(dropped = before + n, "long memory behind: probes dropped");
        }
    }

    /// Stops the thread once it has written what it was given; the slow
    /// scans it decided meanwhile are returned.
    pub(crate) fn finish(mut self) -> Vec<SlowScan> {
        self.stop();
        self.take()
    }

    /// Closes the queue: the thread ends once it has taken what is in it.
    fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Worker {
    core: Core,
    settings: Arc<std::sync::Mutex<Settings>>,
    stats: Arc<MemoryStats>,
    out: std::sync::mpsc::Sender<SlowScan>,
    path: PathBuf,
}

impl Worker {
    fn settings(&self) -> Option<Settings> {
        self.settings.lock().ok().map(|s| *s)
    }

    fn run(mut self, rx: &Receiver<Input>) {
        let mut pruned: Option<Instant> = None;
        loop {
            if pruned.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                self.prune();
                pruned = Some(Instant::now());
            }
            match rx.recv_timeout(PRUNE_EVERY) {
                Ok(input) => {
                    // What queued meanwhile goes in the same transaction.
                    let mut inputs = vec![input];
                    inputs.extend(rx.try_iter());
                    self.handle(inputs);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn prune(&self) {
        let Some(s) = self.settings() else { return };
        match self.core.prune(&s, now_ms()) {
            Ok(capped) => {
                if capped > 0 {
                    self.stats
                        .capped
                        .fetch_add(capped as u64, Ordering::Relaxed);
                    tracing::warn!(
                        rows = capped,
                        max_rows = s.max_rows,
                        "long memory full: the oldest rows forgotten before the window ended"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "long memory: pruning failed: {e}")
            }
        }
        if let Ok(n) = store::rows(&self.core.conn) {
            self.stats.rows.store(n, Ordering::Relaxed);
        }
    }

    fn handle(&mut self, inputs: Vec<Input>) {
        let Some(s) = self.settings() else { return };
        let now = now_ms();
        let mut probes = Vec::new();
        for input in inputs {
            match input {
                Input::Probes(p) => probes.extend(p),
                Input::Decided(entries) => {
                    if let Err(e) = self.core.decided(&entries, now) {
                        tracing::warn!("long memory: marking the kernel's decisions failed: {e}");
                    }
                }
            }
        }
        if probes.is_empty() {
            return;
        }
        let n = probes.len() as u64;
        match self.core.handle(&probes, &s, now) {
            Ok(scans) => {
                self.stats.probes.fetch_add(n, Ordering::Relaxed);
                for scan in scans {
                    self.stats.decided.fetch_add(1, Ordering::Relaxed);
                    let _ = self.out.send(scan);
                }
            }
            Err(e) => {
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(path = %self.path.display(), "long memory: taking {n} probes failed: {e}");
            }
        }
    }
}

fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::slow::SlowConfig, detect::trw::Probabilities};

    fn settings() -> Settings {
        let c = SlowConfig::default();
        Settings {
            rule: c.rule(&Probabilities::default()).unwrap(),
            window: c.window,
            max_rows: c.max_rows,
        }
    }

    fn probe(source: &str, port: u16, ms: i64) -> Probe {
        let source: IpAddr = source.parse().unwrap();
        let len = if source.is_ipv4() { 24 } else { 64 };
        Probe {
            seen: Seen {
                source,
                net: IpNet::new(source, len).unwrap().trunc(),
                proto: 6,
                port,
                open: false,
                ms,
            },
            ifindex: 3,
        }
    }

    fn file(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("scanner-memory-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("history.db")
    }

    #[test]
    fn ten_closed_ports_over_many_polls_are_one_slow_scan_and_a_restart_keeps_them() {
        let path = file("restart");
        let now = now_ms();
        let m = Memory::start(&path, settings()).unwrap();
        // Six polls of one probe each, hours apart (as the kernel forgot
        // each): nothing yet.
        for k in 0..6u16 {
            let at = now - 3_600_000 * i64::from(10 - k);
            m.observe((vec![probe("198.18.5.5", 100 + k, at)], 0));
        }
        assert!(m.finish().is_empty());
        // A new daemon: the record is in the file.
        let m = Memory::start(&path, settings()).unwrap();
        for k in 6..12u16 {
            m.observe((
                vec![probe("198.18.5.5", 100 + k, now - 1000 + i64::from(k))],
                0,
            ));
        }
        let scans = m.finish();
        assert_eq!(scans.len(), 1, "{scans:?}");
        let s = &scans[0];
        assert_eq!(
            (s.prefix, s.evidence.decided_after, s.ifindex),
            (false, 10, 3)
        );
        assert_eq!(s.net, "198.18.5.5/32".parse::<IpNet>().unwrap());
        // Decided once a window: more closed ports decide nothing again.
        let m = Memory::start(&path, settings()).unwrap();
        m.observe((vec![probe("198.18.5.5", 200, now)], 0));
        assert!(m.finish().is_empty());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn what_the_kernel_decided_is_never_a_slow_scan() {
        let path = file("kernel");
        let now = now_ms();
        let m = Memory::start(&path, settings()).unwrap();
        m.decided(vec![
            ("198.18.6.6/32".parse().unwrap(), false),
            ("198.18.7.0/24".parse().unwrap(), true),
        ]);
        let mut probes: Vec<Probe> = (0..12).map(|k| probe("198.18.6.6", 100 + k, now)).collect();
        // A /24 the kernel decided as a distributed scan, four addresses.
        probes.extend((0..12).map(|k| probe(&format!("198.18.7.{}", k % 4 + 1), 300 + k, now)));
        m.observe((probes, 0));
        assert!(m.finish().is_empty());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn an_address_of_a_decided_network_is_not_reported_again_alone() {
        let path = file("network");
        let now = now_ms();
        let m = Memory::start(&path, settings()).unwrap();
        // The kernel decided 198.18.8.0/24 as a distributed scan; one of
        // its addresses goes on probing, slowly, on its own.
        m.decided(vec![("198.18.8.0/24".parse().unwrap(), true)]);
        m.observe((
            (0..12).map(|k| probe("198.18.8.8", 100 + k, now)).collect(),
            0,
        ));
        assert!(m.finish().is_empty());
        // The same from a network nobody decided: a slow scan.
        let m = Memory::start(&path, settings()).unwrap();
        m.observe((
            (0..12).map(|k| probe("198.18.9.9", 100 + k, now)).collect(),
            0,
        ));
        assert_eq!(m.finish().len(), 1);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_64_whose_addresses_take_turns_is_one_actor() {
        let path = file("v6");
        let now = now_ms();
        let m = Memory::start(&path, settings()).unwrap();
        // Twelve addresses of one /64, a closed port each, polls apart.
        for k in 0..12u16 {
            m.observe((
                vec![probe(&format!("2001:db8:7::{:x}", k + 1), 400 + k, now)],
                0,
            ));
        }
        let scans = m.finish();
        assert_eq!(scans.len(), 1, "{scans:?}");
        let s = &scans[0];
        assert!(s.prefix);
        assert_eq!(s.net, "2001:db8:7::/64".parse::<IpNet>().unwrap());
        // At its tenth address, or later when polls queued together.
        assert!(s.address_count >= 10, "{s:?}");
        assert_eq!(s.evidence.decided_after, 10);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn probes_left_out_or_refused_are_counted() {
        let path = file("dropped");
        let m = Memory::start(&path, settings()).unwrap();
        m.observe((Vec::new(), 7));
        assert_eq!(m.stats().dropped.load(Ordering::Relaxed), 7);
        let _ = m.finish();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
