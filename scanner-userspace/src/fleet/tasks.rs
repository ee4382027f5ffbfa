//! The bouncer's pull loop and the machine's push loop.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::mpsc;

use crate::fleet::{
    FleetStats, Pulled, Queue,
    alert::ALERT_ID_KEY,
    backoff,
    decision::Stream,
    lapi::{Lapi, LapiError, Login},
    outbox::{OutboxError, Waiting},
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
fn failed(failures: &mut u32, e: &dyn std::error::Error, retry: Duration) {
    if *failures == 0 {
        let mut message = e.to_string();
        let mut cause = e.source();
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

/// Takes the outbox's oldest alerts in batches and pushes them, logging in
/// (again) when the token is missing, expiring or refused; a batch that
/// fails stays in the outbox and is tried again with backoff. Ends once
/// the outbox is empty after [`Queue::close`], or at its first failure
/// then.
pub(crate) async fn push(
    lapi: Lapi,
    credentials: (String, String),
    login: Option<Login>,
    queue: Arc<Queue>,
    stats: Arc<FleetStats>,
) {
    let mut pusher = Pusher {
        lapi,
        credentials,
        login: login.map(Token::of),
        queue,
        stats,
    };
    let base = Duration::from_secs(1);
    let mut failures = 0u32;
    loop {
        let batch = match pusher.queue.oldest(PUSH_BATCH) {
            Ok((batch, damaged)) => {
                if damaged > 0 {
                    pusher
                        .stats
                        .push_dropped
                        .fetch_add(damaged as u64, Ordering::Relaxed);
                    tracing::error!(damaged, "damaged alerts in the outbox dropped");
                }
                batch
            }
            Err(e) => {
                tracing::error!("{:#}", anyhow::Error::from(e));
                if pusher.queue.closing() {
                    return;
                }
                tokio::time::sleep(backoff(base, 6)).await;
                continue;
            }
        };
        if batch.is_empty() {
            if pusher.queue.closing() {
                return;
            }
            pusher.queue.wake.notified().await;
            continue;
        }
        match pusher.attempt(&batch).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(url = %pusher.lapi.url(), "CrowdSec alerts pushed again");
                }
                failures = 0;
            }
            Err(e) if e.is_rejected() => {
                // The Local API will never take this batch: drop it,
                // rather than hold every later alert behind it.
                pusher.stats.push_errors.fetch_add(1, Ordering::Relaxed);
                pusher
                    .stats
                    .push_dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::error!("{e}; {} alerts dropped", batch.len());
                let rows: Vec<i64> = batch.iter().map(|w| w.row).collect();
                if let Err(e) = pusher.queue.remove(&rows) {
                    tracing::error!("{:#}", anyhow::Error::from(e));
                }
                failures = 0;
            }
            Err(e) => {
                if e.is_refused() {
                    // An expired or revoked token: log in again.
                    pusher.login = None;
                }
                pusher.stats.push_errors.fetch_add(1, Ordering::Relaxed);
                failed(&mut failures, &e, backoff(base, 6));
                if pusher.queue.closing() {
                    return;
                }
                tokio::time::sleep(backoff(base, failures)).await;
            }
        }
    }
}

/// A failure of one attempt: the Local API's own, or the outbox's.
#[derive(Debug, thiserror::Error)]
enum PushError {
    #[error(transparent)]
    Lapi(#[from] LapiError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

impl PushError {
    fn is_rejected(&self) -> bool {
        matches!(self, Self::Lapi(e) if e.is_rejected())
    }

    fn is_refused(&self) -> bool {
        matches!(self, Self::Lapi(e) if e.is_refused())
    }
}

/// The push task's state.
struct Pusher {
    lapi: Lapi,
    credentials: (String, String),
    login: Option<Token>,
    queue: Arc<Queue>,
    stats: Arc<FleetStats>,
}

impl Pusher {
    /// A token that is not about to expire, logging in for one if needed.
    async fn token(&mut self) -> Result<String, LapiError> {
        if let Some(t) = self.login.as_ref().filter(|t| !t.expiring()) {
            return Ok(t.token.clone());
        }
        let (id, password) = &self.credentials;
        let t = Token::of(self.lapi.login(id, password).await?);
        let token = t.token.clone();
        self.login = Some(t);
        Ok(token)
    }

    /// One try at `batch`: those of its alerts an earlier request may have
    /// delivered are looked up first and not sent again; the rest are
    /// marked attempted, sent, and removed once accepted.
    async fn attempt(&mut self, batch: &[Waiting]) -> Result<(), PushError> {
        let token = self.token().await?;
        let delivered = self.delivered(&token, batch).await?;
        if !delivered.is_empty() {
            tracing::info!(
                alerts = delivered.len(),
                "alerts the Local API took before their answer was lost: not sent again"
            );
            self.queue.remove(&delivered)?;
            self.stats
                .pushed
                .fetch_add(delivered.len() as u64, Ordering::Relaxed);
        }
        let rest: Vec<&Waiting> = batch
            .iter()
            .filter(|w| !delivered.contains(&w.row))
            .collect();
        if rest.is_empty() {
            return Ok(());
        }
        let rows: Vec<i64> = rest.iter().map(|w| w.row).collect();
        self.queue.attempting(&rows)?;
        let bodies: Vec<&serde_json::Value> = rest.iter().map(|w| &w.body).collect();
        self.lapi.push(&token, &bodies).await?;
        self.queue.remove(&rows)?;
        self.stats
            .pushed
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The rows of `batch`, among those marked attempted, whose alert the
    /// Local API holds already (found by the id each carries).
    async fn delivered(&self, token: &str, batch: &[Waiting]) -> Result<Vec<i64>, LapiError> {
        let attempted: Vec<&Waiting> = batch.iter().filter(|w| w.attempted).collect();
        let mut sources: Vec<(&str, &str)> = attempted
            .iter()
            .map(|w| (w.scope.as_str(), w.value.as_str()))
            .collect();
        sources.sort_unstable();
        sources.dedup();
        let mut held = std::collections::HashSet::new();
        for (scope, value) in sources {
            match self.lapi.alerts_about(token, scope, value).await {
                Ok(alerts) => held.extend(alerts.iter().flat_map(carried_ids)),
                // A Local API (or a proxy before it) that will never answer
                // the look-up: send again rather than hold the outbox, at
                // the risk of a duplicate.
                Err(e) if e.is_rejected() => {
                    tracing::warn!("{e}; alerts whose answer was lost are sent again");
                    return Ok(Vec::new());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(attempted
            .iter()
            .filter(|w| held.contains(&w.alert_id))
            .map(|w| w.row)
            .collect())
    }
}

/// The outbox ids an alert from the Local API carries in its events' meta.
pub(crate) fn carried_ids(alert: &serde_json::Value) -> Vec<String> {
    alert["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["meta"].as_array())
        .flatten()
        .filter(|m| m["key"] == ALERT_ID_KEY)
        .filter_map(|m| m["value"].as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_every_event() {
        let alert = serde_json::json!({
            "events": [
                {"meta": [{"key": "kind", "value": "syn"}, {"key": ALERT_ID_KEY, "value": "a1"}]},
                {"meta": [{"key": ALERT_ID_KEY, "value": "b2"}]},
                {"timestamp": "x"}
            ]
        });
        assert_eq!(carried_ids(&alert), ["a1", "b2"]);
        assert!(carried_ids(&serde_json::json!({"events": null})).is_empty());
    }
}
