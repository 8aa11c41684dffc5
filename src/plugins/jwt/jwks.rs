//! `jwks_url`: the remote key set, fetched over the plugin's
//! [`outbound::Client`], refreshed in the background, fetched on demand for an
//! unknown `kid` at most once per `jwks_cooldown`, with a backoff after
//! failures; a failed fetch keeps the last good key set.

use super::keys::{parse_jwks, KeySet};
use crate::outbound::{Client, Limits, Target};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use jsonwebtoken::Algorithm;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A whole fetch (lookup, connect, request, answer).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect plus TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_JWKS_BYTES: usize = 1 << 20;

/// The bounds of a JWKS fetch. A pooled connection the server has closed
/// meanwhile fails at once: up to two more tries, on a fresh connection if
/// the pool is empty by then.
const LIMITS: Limits = Limits {
    connect: CONNECT_TIMEOUT,
    io: None,
    total: Some(FETCH_TIMEOUT),
    max_body: MAX_JWKS_BYTES,
    stale_retries: 2,
};

#[derive(Default)]
pub(super) struct FetchState {
    pub(super) in_flight: Option<watch::Receiver<bool>>,
    pub(super) last_on_demand: Option<Instant>,
    /// When the last failed fetch ended: the backoff counts from there.
    pub(super) last_failure: Option<Instant>,
    pub(super) last_success: Option<Instant>,
    pub(super) failures: u32,
}

pub(super) struct Remote {
    name: String,
    /// The pooled client for `jwks_url`, one per plugin instance.
    client: Client,
    algorithms: Vec<Algorithm>,
    refresh: Duration,
    cooldown: Duration,
    pub(super) keys: ArcSwapOption<KeySet>,
    state: Mutex<FetchState>,
    /// Fetches started (for tests and logs).
    pub(super) fetches: AtomicU64,
}

/// Clears `in_flight` when the fetch task ends, however it ends.
struct InFlight(Arc<Remote>, Option<watch::Sender<bool>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().in_flight = None;
        if let Some(tx) = self.1.take() {
            let _ = tx.send(true);
        }
    }
}

impl Remote {
    /// The remote key set at `target`; nothing is fetched yet.
    pub(super) fn new(
        name: &str,
        target: Target,
        algorithms: Vec<Algorithm>,
        refresh: Duration,
        cooldown: Duration,
    ) -> Result<Remote, String> {
        Ok(Remote {
            name: name.to_string(),
            client: Client::new(name, target, LIMITS)?,
            algorithms,
            refresh,
            cooldown,
            keys: ArcSwapOption::empty(),
            state: Mutex::new(FetchState::default()),
            fetches: AtomicU64::new(0),
        })
    }

    pub(super) fn lock(&self) -> parking_lot::MutexGuard<'_, FetchState> {
        self.state.lock()
    }

    /// Start a fetch in a detached task (a request that goes away does not
    /// cancel it); the receiver turns `true` when it has finished.
    fn start(self: &Arc<Self>, st: &mut FetchState) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        st.in_flight = Some(rx.clone());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(self.clone(), Some(tx));
        tokio::spawn(async move {
            let me = guard.0.clone();
            let result = me.fetch().await;
            let retry = me.finish(result);
            drop(guard);
            // The retry after a failure starts when the log line said, not at
            // the next once-a-second tick after it (the tick stays a fallback).
            // A weak reference: a plugin dropped by a reload is not kept alive.
            if let Some(at) = retry {
                let weak = Arc::downgrade(&me);
                drop(me);
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                if let Some(me) = weak.upgrade() {
                    me.tick();
                }
            }
        });
        rx
    }

    /// Records a fetch's outcome; after a failure, returns when the retry is
    /// due.
    fn finish(&self, result: Result<KeySet, String>) -> Option<Instant> {
        let mut st = self.lock();
        match result {
            Ok(set) => {
                st.failures = 0;
                st.last_success = Some(Instant::now());
                drop(st);
                tracing::info!(plugin = %self.name, url = %self.client.target().display, keys = set.keys.len(), "JWKS loaded");
                self.keys.store(Some(Arc::new(set)));
                None
            }
            Err(e) => {
                st.failures = st.failures.saturating_add(1);
                st.last_failure = Some(Instant::now());
                // After a failure nothing fetches before the backoff ends (on
                // demand neither): this is when the next attempt happens, and
                // what a 503's `Retry-After` says too.
                let next = self.seconds_until_next(&st);
                let at = self.next_scheduled(&st);
                drop(st);
                let keys = if self.keys.load().is_some() {
                    "keeping the last good keys"
                } else {
                    "no keys yet, tokens get 503"
                };
                // One line in plain words: where, why, what next (the URL has
                // no query and never credentials: `parse_url` refuses them).
                tracing::warn!(
                    plugin = %self.name,
                    url = %self.client.target().display,
                    "JWKS fetch failed: {e}; next try in {next}s; {keys}"
                );
                at
            }
        }
    }

    /// A fetch for a token whose key is not known: joins the fetch in flight,
    /// or starts one unless one was started on demand within `jwks_cooldown`
    /// or the last fetch failed (then the backoff decides, see
    /// [`next_scheduled`](Self::next_scheduled)).
    /// `true` when a fetch finished (look the key up again).
    /// A fetch the background schedule says is due is started at once too, so
    /// that a client honouring `Retry-After` finds one happening.
    pub(super) async fn on_demand(self: &Arc<Self>) -> bool {
        let mut rx = {
            let mut st = self.lock();
            let now = Instant::now();
            if let Some(rx) = &st.in_flight {
                rx.clone()
            } else if st.failures == 0
                && st
                    .last_on_demand
                    .is_none_or(|t| now.duration_since(t) >= self.cooldown)
            {
                st.last_on_demand = Some(now);
                self.start(&mut st)
            } else if self.next_scheduled(&st).is_none_or(|t| now >= t) {
                self.start(&mut st)
            } else {
                return false;
            }
        };
        let _ = rx.wait_for(|done| *done).await;
        true
    }

    /// When the background refresh starts its next fetch (`None`: at once):
    /// `jwks_refresh` after a success; after the n-th failure in a row,
    /// 2^(n-1) s after the failed attempt ended (1 s, 2 s, 4 s… at most 64 s
    /// and at most `jwks_refresh`).
    pub(super) fn next_scheduled(&self, st: &FetchState) -> Option<Instant> {
        if st.failures > 0 {
            let backoff = Duration::from_secs(1u64 << (st.failures - 1).min(6)).min(self.refresh);
            st.last_failure.map(|t| t + backoff)
        } else {
            st.last_success.map(|t| t + self.refresh)
        }
    }

    /// Whole seconds (rounded up, at least 1) until the next fetch attempt:
    /// after a failure the scheduled retry (nothing fetches before it);
    /// otherwise the scheduled refresh, or an on-demand fetch once
    /// `jwks_cooldown` has passed. The failure log's "next try" and a 503's
    /// `Retry-After` both say this.
    pub(super) fn seconds_until_next(&self, st: &FetchState) -> u64 {
        let now = Instant::now();
        let scheduled = self.next_scheduled(st).unwrap_or(now);
        let next = if st.failures > 0 {
            scheduled
        } else {
            scheduled.min(st.last_on_demand.map_or(now, |t| t + self.cooldown))
        };
        let left = next.saturating_duration_since(now);
        crate::util::ceil_secs(left).max(1)
    }

    /// `Retry-After` of a 503 while no keys are available: when the next fetch
    /// attempt happens (a request arriving then starts it if the background
    /// refresh has not yet).
    pub(super) fn retry_after(&self) -> u64 {
        self.seconds_until_next(&self.lock())
    }

    /// Background refresh, on the schedule of [`next_scheduled`](Self::next_scheduled).
    pub(super) fn tick(self: &Arc<Self>) {
        let mut st = self.lock();
        if st.in_flight.is_some() {
            return;
        }
        if self.next_scheduled(&st).is_none_or(|t| Instant::now() >= t) {
            let _ = self.start(&mut st);
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let body = self.get().await?;
        let parsed = parse_jwks(&body, &self.algorithms, false)?;
        for p in &parsed.problems {
            tracing::warn!(plugin = %self.name, url = %self.client.target().display, problem = %p, "JWKS key skipped");
        }
        if parsed.keys.is_empty() {
            return Err("the JWK set has no key usable with the configured algorithms".into());
        }
        Ok(KeySet::new(parsed.keys, false))
    }

    async fn get(&self) -> Result<Bytes, String> {
        let req = self
            .client
            .get_request(&[
                ("accept", "application/jwk-set+json, application/json"),
                ("user-agent", "tollgate"),
            ])
            .map_err(|e| e.to_string())?;
        let answer = self.client.send(&req).await.map_err(|e| e.to_string())?;
        if !answer.complete {
            return Err(format!("the JWK set is larger than {MAX_JWKS_BYTES} bytes"));
        }
        match answer.status() {
            200 => Ok(answer.body),
            status => Err(format!("the server answered HTTP {status}")),
        }
    }
}
