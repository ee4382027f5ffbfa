//! The fleet: detections and blocks shared with other servers through a
//! CrowdSec Local API. As a bouncer the daemon pulls ban decisions and
//! hands them to the main loop, which enforces them in the XDP blocklist;
//! as a machine (signal source) it pushes each detection as an alert, with
//! a ban decision when it blocked the source.
//!
//! Both run as tasks beside the main loop: a Local API that is down or slow
//! never slows detection or local blocking. Alerts wait in a durable,
//! bounded outbox (overflow counted) until the Local API accepts them, also
//! across a stop, a crash or an upgrade; pulls retry with backoff, and
//! decisions already enforced stay until their own expiry.

pub(crate) mod alert;
pub(crate) mod decision;
pub(crate) mod lapi;
pub(crate) mod outbox;
pub(crate) mod tasks;

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use thiserror::Error;
use tokio::{
    sync::{Notify, mpsc},
    task::JoinHandle,
};

use crate::{
    config::crowdsec::CrowdSecConfig,
    fleet::{
        alert::Alert,
        decision::Stream,
        lapi::Lapi,
        outbox::{Outbox, OutboxError, Waiting},
    },
};

#[derive(Debug, Error)]
pub(crate) enum FleetError {
    #[error("reading {what} {path}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{what} {path} can be read by others (mode {mode:o}): it must be readable by its owner only (chmod 600)"
    )]
    Exposed {
        what: &'static str,
        path: String,
        mode: u32,
    },
    #[error("{what} {path} is empty")]
    Empty { what: &'static str, path: String },
    #[error(transparent)]
    Lapi(#[from] lapi::LapiError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

impl FleetError {
    /// A wrong setting or credential, not a passing fault: `scanner run`
    /// exits 2 for it.
    pub(crate) fn is_usage(&self) -> bool {
        match self {
            Self::Lapi(e) => e.is_usage(),
            _ => true,
        }
    }
}

/// The bouncer key, and the machine's id and password.
pub(crate) type Secrets = (Option<String>, Option<(String, String)>);

/// The bouncer key and the machine's (id, password) the section names,
/// read from their files: what `scanner config --check` checks too.
pub(crate) fn secrets(config: &CrowdSecConfig) -> Result<Secrets, FleetError> {
    let key = config
        .bouncer_key_file
        .as_deref()
        .map(|p| secret("the bouncer key file", p))
        .transpose()?;
    let machine = match (&config.machine_id, &config.password_file) {
        (Some(id), Some(p)) => Some((id.clone(), secret("the machine password file", p)?)),
        _ => None,
    };
    Ok((key, machine))
}

/// Reads a secret from a file only its owner can read; the value is never
/// logged.
fn secret(what: &'static str, path: &Path) -> Result<String, FleetError> {
    let shown = path.display().to_string();
    let read = |source| FleetError::Read {
        what,
        path: shown.clone(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(read)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(FleetError::Exposed {
            what,
            path: shown,
            mode: mode & 0o777,
        });
    }
    let value = std::fs::read_to_string(path)
        .map_err(read)?
        .trim()
        .to_owned();
    if value.is_empty() {
        return Err(FleetError::Empty { what, path: shown });
    }
    Ok(value)
}

/// What the tasks did, for the metrics (read by the main loop at each poll).
#[derive(Debug, Default)]
pub(crate) struct FleetStats {
    /// Unix time of the last successful pull, in seconds (0: none yet).
    pub(crate) last_sync_s: AtomicU64,
    pub(crate) pull_errors: AtomicU64,
    pub(crate) push_errors: AtomicU64,
    pub(crate) pushed: AtomicU64,
    /// Alerts dropped: the outbox full or failing, a batch the Local API
    /// refused for good, a damaged row.
    pub(crate) push_dropped: AtomicU64,
}

/// The alerts waiting for the Local API: the outbox, shared by the main
/// loop (which adds) and the push task (which takes), on one thread.
pub(crate) struct Queue {
    outbox: Mutex<Outbox>,
    /// Rung at each alert added, and at close.
    wake: Notify,
    closing: AtomicBool,
}

impl Queue {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // Nothing panics while holding it; a poisoned lock still guards
        // a consistent file (every change is one transaction).
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn oldest(&self, n: usize) -> Result<(Vec<Waiting>, usize), OutboxError> {
        self.outbox().oldest(n)
    }

    fn attempting(&self, rows: &[i64]) -> Result<(), OutboxError> {
        self.outbox().attempting(rows)
    }

    fn remove(&self, rows: &[i64]) -> Result<(), OutboxError> {
        self.outbox().remove(rows)
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Asks the push task to send what is left and end.
    fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

/// A pull of the decision stream, for the main loop to enforce.
#[derive(Debug)]
pub(crate) struct Pulled {
    /// The first pull after a start: `new` is every active decision, so a
    /// fleet block missing from it was lifted while nobody listened.
    pub(crate) startup: bool,
    pub(crate) stream: Stream,
}

/// The running fleet tasks.
pub(crate) struct Fleet {
    config: CrowdSecConfig,
    pulled: Option<mpsc::Receiver<Pulled>>,
    alerts: Option<Arc<Queue>>,
    /// The push task, stopped apart (see [`Fleet::stop`]).
    pusher: Option<JoinHandle<()>>,
    stats: Arc<FleetStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for t in self.tasks.iter().chain(&self.pusher) {
            t.abort();
        }
    }
}

/// How many pulls may wait for the main loop (each is a whole delta).
const PULLS_WAITING: usize = 16;

impl Fleet {
    /// Starts the tasks the section asks for, after one check of each
    /// credential: a Local API that refuses them is an error (exit 2), one
    /// that cannot be reached is a warning (the tasks keep trying).
    pub(crate) async fn start(config: &CrowdSecConfig) -> Result<Option<Self>, FleetError> {
        Self::start_with(config, true).await
    }

    /// [`Fleet::start`] without the checks against the Local API (a reload:
    /// the main loop must not wait on the network); the tasks say what is
    /// wrong, and keep trying.
    pub(crate) async fn start_unchecked(
        config: &CrowdSecConfig,
    ) -> Result<Option<Self>, FleetError> {
        Self::start_with(config, false).await
    }

    async fn start_with(config: &CrowdSecConfig, check: bool) -> Result<Option<Self>, FleetError> {
        let Some(url) = &config.url else {
            return Ok(None);
        };
        let lapi = Lapi::new(url, config.ca_file.as_deref())?;
        let (key, machine) = secrets(config)?;
        let stats = Arc::new(FleetStats::default());
        let mut fleet = Self {
            config: config.clone(),
            pulled: None,
            alerts: None,
            pusher: None,
            stats: stats.clone(),
            tasks: Vec::new(),
        };
        if let Some(key) = key {
            let first = match if check {
                lapi.stream(&key, true).await.map(Some)
            } else {
                Ok(None)
            } {
                Ok(stream) => stream,
                Err(e) if e.is_refused() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(
                        "{:#}; pulling again in the background",
                        anyhow::Error::from(e)
                    );
                    None
                }
            };
            let (tx, rx) = mpsc::channel(PULLS_WAITING);
            fleet.pulled = Some(rx);
            fleet.tasks.push(tokio::spawn(tasks::pull(
                lapi.clone(),
                key,
                config.pull_interval,
                first,
                tx,
                stats.clone(),
            )));
            tracing::info!(url = %lapi.url(), every = %humantime::format_duration(config.pull_interval), "pulling CrowdSec decisions");
        }
        if let Some((id, password)) = machine {
            let outbox = Outbox::open(&config.outbox, config.push_queue)?;
            if outbox.len() > 0 {
                tracing::info!(
                    alerts = outbox.len(),
                    outbox = %config.outbox.display(),
                    "alerts from before this start wait for the Local API"
                );
            }
            let login = match if check {
                lapi.login(&id, &password).await.map(Some)
            } else {
                Ok(None)
            } {
                Ok(login) => login,
                Err(e) if e.is_refused() => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(
                        "{:#}; logging in again in the background",
                        anyhow::Error::from(e)
                    );
                    None
                }
            };
            let queue = Arc::new(Queue {
                outbox: Mutex::new(outbox),
                wake: Notify::new(),
                closing: AtomicBool::new(false),
            });
            fleet.alerts = Some(queue.clone());
            fleet.pusher = Some(tokio::spawn(tasks::push(
                lapi.clone(),
                (id.clone(), password),
                login,
                queue,
                stats,
            )));
            tracing::info!(url = %lapi.url(), machine = %id, "pushing detections to CrowdSec");
        }
        Ok(Some(fleet))
    }

    /// The Local API's URL.
    pub(crate) fn url(&self) -> &str {
        self.config.url.as_deref().unwrap_or_default()
    }

    /// Whether decisions are pulled.
    pub(crate) fn pulling(&self) -> bool {
        self.pulled.is_some()
    }

    /// Whether detections are pushed.
    pub(crate) fn pushing(&self) -> bool {
        self.alerts.is_some()
    }

    /// Writes an alert to the outbox and wakes the push task; when the
    /// outbox is full (or cannot be written) the alert is dropped, counted
    /// and logged: detection never waits for the Local API.
    pub(crate) fn push(&self, alert: Alert) {
        let Some(queue) = &self.alerts else {
            return;
        };
        let why = match queue.outbox().add(alert) {
            Ok(true) => {
                queue.wake.notify_one();
                return;
            }
            Ok(false) => format!(
                "the outbox holds push_queue = {} alerts",
                self.config.push_queue
            ),
            Err(e) => format!("{:#}", anyhow::Error::from(e)),
        };
        let dropped = self.stats.push_dropped.fetch_add(1, Ordering::Relaxed);
        if dropped.is_power_of_two() || dropped == 0 {
            tracing::warn!(dropped = dropped + 1, "CrowdSec alert dropped: {why}");
        }
    }

    /// Stops the link: the push task sends what the outbox holds for at
    /// most `within` (a Local API that fails ends it at once); what is
    /// left stays in the outbox for the next start.
    pub(crate) async fn stop(mut self, within: Duration) {
        let Some(pusher) = self.pusher.take() else {
            return;
        };
        if let Some(q) = &self.alerts {
            q.close();
        }
        let abort = pusher.abort_handle();
        if tokio::time::timeout(within, pusher).await.is_err() {
            abort.abort();
        }
        let left = self.queued();
        if left > 0 {
            tracing::info!(
                alerts = left,
                outbox = %self.config.outbox.display(),
                "alerts kept for the Local API until the next start"
            );
        }
    }

    /// The outbox's file, when alerts are pushed.
    pub(crate) fn outbox_path(&self) -> Option<&Path> {
        self.alerts.as_ref().map(|_| self.config.outbox.as_path())
    }

    /// What the tasks did so far, read once for the metrics and for
    /// `scanner status`.
    pub(crate) fn figures(&self) -> crate::sinks::metrics::FleetFigures {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let s = &self.stats;
        crate::sinks::metrics::FleetFigures {
            last_sync_s: get(&s.last_sync_s),
            pull_errors: get(&s.pull_errors),
            push_errors: get(&s.push_errors),
            pushed: get(&s.pushed),
            push_dropped: get(&s.push_dropped),
            queued: self.queued(),
        }
    }

    /// Alerts waiting to be pushed: in the outbox, the batch being sent
    /// (or retried) included.
    pub(crate) fn queued(&self) -> usize {
        self.alerts.as_ref().map_or(0, |q| q.outbox().len())
    }

    /// The next pull to enforce; pending forever when not a bouncer.
    pub(crate) async fn next_pull(&mut self) -> Option<Pulled> {
        match &mut self.pulled {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }
}

/// The next pull of an optional fleet (pending forever without one).
pub(crate) async fn next_pull(fleet: &mut Option<Fleet>) -> Option<Pulled> {
    match fleet {
        Some(f) => f.next_pull().await,
        None => std::future::pending().await,
    }
}

/// Backoff after `failures` failures in a row: doubling from `base`, at
/// most a minute.
pub(crate) fn backoff(base: Duration, failures: u32) -> Duration {
    base.saturating_mul(1 << failures.min(6))
        .min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn secrets_must_be_private_and_non_empty() {
        let dir = std::env::temp_dir().join(format!("scanner-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"0123abcd\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = secret("the bouncer key file", &path).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        assert!(e.is_usage());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(secret("k", &path).unwrap(), "0123abcd");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(secret("k", &path), Err(FleetError::Empty { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let s = Duration::from_secs(2);
        assert_eq!(backoff(s, 0), s);
        assert_eq!(backoff(s, 2), Duration::from_secs(8));
        assert_eq!(backoff(s, 30), Duration::from_secs(60));
    }
}
