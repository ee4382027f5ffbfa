//! The bouncer's pull loop and the machine's push loop.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::mpsc;

use crate::fleet::{
    FleetStats, Pulled,
    alert::Alert,
    backoff,
    decision::Stream,
    lapi::{Lapi, LapiError, Login},
};

/// Alerts sent in one request at most.
const PUSH_BATCH: usize = 100;
/// A token this close to its expiry is renewed before it is used.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Logs the first failure of a streak (the recovery is logged where it
/// happens).
fn failed(failures: &mut u32, e: &LapiError, retry: Duration) {
    if *failures == 0 {
        let mut message = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            message.push_str(": ");
            message.push_str(&c.to_string());
            cause = c.source();
        }
        tracing::warn!(
            "{message}; retrying, every {} at most",
            humantime::format_duration(retry)
        );
    }
    *failures += 1;
}

/// Pulls the decision stream every `every` (startup first, then deltas)
/// and hands each pull to the main loop. `first`: the start-up pull the
/// daemon already made, if it got through.
pub(crate) async fn pull(
    lapi: Lapi,
    key: String,
    every: Duration,
    first: Option<Stream>,
    tx: mpsc::Sender<Pulled>,
    stats: Arc<FleetStats>,
) {
    let mut startup = true;
    if let Some(stream) = first {
        stats.last_sync_s.store(now_s(), Ordering::Relaxed);
        if tx.send(Pulled { startup, stream }).await.is_err() {
            return;
        }
        startup = false;
    }
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(if failures == 0 {
            every
        } else {
            backoff(every, failures)
        })
        .await;
        match lapi.stream(&key, startup).await {
            Ok(stream) => {
                if failures > 0 {
                    tracing::info!(url = %lapi.url(), "CrowdSec decisions pulled again");
                }
                failures = 0;
                stats.last_sync_s.store(now_s(), Ordering::Relaxed);
                if tx.send(Pulled { startup, stream }).await.is_err() {
                    return;
                }
                startup = false;
            }
            Err(e) => {
                stats.pull_errors.fetch_add(1, Ordering::Relaxed);
                failed(&mut failures, &e, backoff(every, 6));
                // The Local API may have moved this bouncer's "last pull"
                // on before the answer was lost: the changes of that pull
                // would never come again. The next pull asks for everything.
                startup = true;
            }
        }
    }
}

/// A token, and when to renew it (by this host's monotonic clock).
struct Token {
    token: String,
    renew_at: std::time::Instant,
}

/// A token lives an hour by default; used when `expire` cannot be read
/// (crowdsec writes it in the Local API's time zone).
const TOKEN_LIFE: Duration = Duration::from_secs(3600);

impl Token {
    fn of(login: Login) -> Self {
        let left = humantime::parse_rfc3339_weak(&login.expire)
            .ok()
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            .filter(|left| *left <= 24 * TOKEN_LIFE)
            .unwrap_or(TOKEN_LIFE);
        Self {
            token: login.token,
            renew_at: std::time::Instant::now() + left.saturating_sub(RENEW_BEFORE),
        }
    }

    fn expiring(&self) -> bool {
        std::time::Instant::now() >= self.renew_at
    }
}

/// Pushes queued alerts in batches, logging in (again) when the token is
/// missing, expiring or refused; a batch that fails is retried with backoff
/// while new alerts wait in the queue.
pub(crate) async fn push(
    lapi: Lapi,
    (machine_id, password): (String, String),
    login: Option<Login>,
    mut rx: mpsc::Receiver<Alert>,
    stats: Arc<FleetStats>,
) {
    let mut login = login.map(Token::of);
    let base = Duration::from_secs(1);
    let mut failures = 0u32;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < PUSH_BATCH {
            match rx.try_recv() {
                Ok(alert) => batch.push(alert),
                Err(_) => break,
            }
        }
        stats.in_flight.store(batch.len() as u64, Ordering::Relaxed);
        loop {
            if failures > 0 {
                tokio::time::sleep(backoff(base, failures)).await;
            }
            let token = match &login {
                Some(t) if !t.expiring() => t.token.clone(),
                _ => match lapi.login(&machine_id, &password).await {
                    Ok(l) => {
                        let t = Token::of(l);
                        let token = t.token.clone();
                        login = Some(t);
                        token
                    }
                    Err(e) => {
                        stats.push_errors.fetch_add(1, Ordering::Relaxed);
                        failed(&mut failures, &e, backoff(base, 6));
                        continue;
                    }
                },
            };
            match lapi.push(&token, &batch).await {
                Ok(_) => {
                    if failures > 0 {
                        tracing::info!(url = %lapi.url(), "CrowdSec alerts pushed again");
                    }
                    failures = 0;
                    stats
                        .pushed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    break;
                }
                Err(e) if e.is_rejected() => {
                    // The Local API will never take this batch: drop it,
                    // rather than hold every later alert behind it.
                    stats.push_errors.fetch_add(1, Ordering::Relaxed);
                    stats
                        .push_dropped
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    tracing::error!("{e}; {} alerts dropped", batch.len());
                    failures = 0;
                    break;
                }
                Err(e) => {
                    if e.is_refused() {
                        // An expired or revoked token: log in again.
                        login = None;
                    }
                    stats.push_errors.fetch_add(1, Ordering::Relaxed);
                    failed(&mut failures, &e, backoff(base, 6));
                }
            }
        }
        stats.in_flight.store(0, Ordering::Relaxed);
    }
}
