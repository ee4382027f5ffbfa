//! The daemon's history writer: a thread of its own, so the database never
//! costs the main loop more than a channel send. It commits at most once a
//! second (one transaction for everything that arrived), prunes what is
//! older than the retention once an hour, and flushes on drop.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::history::store::{Record, Store};

/// Records waiting for the writer at most; past it they are dropped and
/// counted (a disk that stalls must not grow the daemon without bound).
const QUEUE: usize = 100_000;
/// At most one transaction per this.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Write failures (and records dropped), for the metrics.
#[derive(Debug, Default)]
pub(crate) struct WriterStats {
    pub errors: AtomicU64,
    pub written: AtomicU64,
}

pub(crate) struct Writer {
    tx: Option<SyncSender<Record>>,
    stats: Arc<WriterStats>,
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread over an open store.
    pub(crate) fn spawn(store: Store, path: PathBuf, retention: Duration) -> Self {
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || run(store, rx, retention, &thread_stats, &shown))
            .ok();
        Self {
            tx: Some(tx),
            stats,
            path,
            thread,
        }
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub(crate) fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Queues a record; never blocks.
    pub(crate) fn send(&self, record: Record) {
        let Some(tx) = &self.tx else {
            return;
        };
        match tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.stats.errors.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::warn!(path = %self.path.display(), "history writer behind: record dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has written the rest.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn run(
    mut store: Store,
    rx: Receiver<Record>,
    retention: Duration,
    stats: &WriterStats,
    path: &str,
) {
    let mut last_prune: Option<Instant> = None;
    let mut failing = false;
    loop {
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            let before = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
            match store.prune(before) {
                Ok(n) if n > 0 => {
                    tracing::info!(path, rows = n, "history: pruned rows past the retention")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(path, "history: pruning failed: {e}"),
            }
            last_prune = Some(Instant::now());
        }
        let first = match rx.recv_timeout(PRUNE_EVERY) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let started = Instant::now();
        let mut batch = vec![first];
        let mut open = true;
        // Gather what arrives within the commit interval.
        while open {
            let left = COMMIT_EVERY.saturating_sub(started.elapsed());
            match rx.recv_timeout(left) {
                Ok(r) => batch.push(r),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        }
        match store.write(&batch) {
            Ok(()) => {
                stats
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if failing {
                    tracing::info!(path, "history: writing again");
                    failing = false;
                }
            }
            Err(e) => {
                stats
                    .errors
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if !failing {
                    tracing::error!(
                        path,
                        "history: writing failed, {} records lost (detection and blocking go on): {e}",
                        batch.len()
                    );
                    failing = true;
                }
            }
        }
        if !open {
            return;
        }
    }
}
