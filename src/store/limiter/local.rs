//! The local limiter: governor's GCRA over a keyed state bounded by
//! `max_keys` ([`BoundedStore`]). Idle keys are also evicted on every
//! maintenance tick, so memory follows the number of *active* keys, not of
//! keys ever seen.

use super::{secs_ceil, Decision, Gcra};
use crate::pipeline::LimitState;
use governor::clock::Clock;
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::RateLimiter;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// governor's keyed state with a bound on the number of keys.
///
/// Hand-written because governor's own keyed stores (`DashMapStateStore`,
/// `HashMapStateStore`) have no size limit: `retain_recent` only drops keys
/// whose bucket is full again, so every distinct key seen within one refill
/// period stays (issue 12, item 9: 2,000 requests with distinct 32 KiB
/// `header:` keys held 64 MB). This is governor's own `DashMap` store with a
/// cap in front; governor still runs the GCRA (`StateStore` is its public
/// extension point), and each key's state is governor's `InMemoryState`.
///
/// When a new key arrives and `max_keys` are tracked, one sweep makes room:
/// first every idle key goes (its bucket is full again, so forgetting it
/// changes no decision); if that is not enough, the keys closest to a full
/// bucket (smallest theoretical arrival time) go, down to 7/8 of the cap, so
/// the O(n) sweep runs at most once per `max_keys / 8` new keys. Only one
/// thread sweeps at a time; the others insert meanwhile, so the map may pass
/// the cap by the keys inserted during one sweep.
pub struct BoundedStore {
    map: DashMapStateStore<String>,
    max_keys: usize,
    /// The emission interval in nanoseconds (governor's `t`).
    t: u64,
    sweeping: AtomicBool,
}

/// The theoretical arrival time stored in a state, read through governor's
/// public API (a measurement that changes nothing).
fn tat(s: &InMemoryState) -> u64 {
    match s.measure_and_replace(&NotKeyed::NonKey, |prev| {
        Err::<((), Nanos), u64>(prev.map_or(0, Nanos::as_u64))
    }) {
        Ok(()) => 0,
        Err(t) => t,
    }
}

impl BoundedStore {
    pub fn new(max_keys: usize, interval: Duration) -> Self {
        BoundedStore {
            map: DashMapStateStore::default(),
            max_keys: max_keys.max(1),
            t: (interval.as_nanos().min(u64::MAX as u128) as u64).max(1),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Make room for one key at time `now` (nanoseconds on the limiter's clock).
    fn make_room(&self, now: u64) {
        if self
            .sweeping
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        self.map.retain(|_, s| tat(s) > now);
        let target = self.max_keys - (self.max_keys / 8).max(1);
        if self.map.len() > target {
            let mut tats: Vec<u64> = self.map.iter().map(|e| tat(e.value())).collect();
            let excess = tats.len().saturating_sub(target);
            if excess > 0 {
                let (_, cut, _) = tats.select_nth_unstable(excess - 1);
                let cut = *cut;
                self.map.retain(|_, s| tat(s) > cut);
            }
        }
        self.map.shrink_to_fit();
        self.sweeping.store(false, Ordering::Release);
    }
}

impl StateStore for BoundedStore {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(s) = self.map.get(key) {
            return s.measure_and_replace(&NotKeyed::NonKey, f);
        }
        if self.map.len() >= self.max_keys {
            // A new key's first admission is always `now + t`: that gives `now`
            // without a clock of our own.
            if let Ok((_, next)) = f(None) {
                self.make_room(next.as_u64().saturating_sub(self.t));
            }
        }
        let s = self.map.entry(key.clone()).or_default();
        s.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl ShrinkableKeyedStateStore<String> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let drop_below = drop_below.as_u64();
        self.map.retain(|_, s| tat(s) > drop_below);
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// GCRA buckets per key in this process, at most `max_keys` of them.
pub struct LocalLimiter<C: Clock> {
    gcra: Gcra,
    limiter: RateLimiter<String, BoundedStore, C, StateInformationMiddleware>,
    pub(crate) clock: C,
}

impl<C: Clock + Clone> LocalLimiter<C> {
    pub fn new(gcra: Gcra, max_keys: usize, clock: C) -> Self {
        LocalLimiter {
            gcra,
            limiter: RateLimiter::<String, BoundedStore, C, NoOpMiddleware<C::Instant>>::new(
                gcra.quota,
                BoundedStore::new(max_keys, gcra.interval),
                clock.clone(),
            )
            .with_middleware::<StateInformationMiddleware>(),
            clock,
        }
    }

    /// Check one request under `key`.
    pub fn check(&self, key: &str) -> Decision {
        let Gcra {
            burst, interval, ..
        } = self.gcra;
        match self.limiter.check_key(&key.to_string()) {
            Ok(snap) => {
                let remaining = snap.remaining_burst_capacity();
                let used = burst.saturating_sub(remaining);
                Ok(LimitState {
                    limit: burst,
                    remaining,
                    reset: secs_ceil(interval * used),
                    retry_after: 0,
                })
            }
            Err(not_until) => {
                // GCRA: the next request conforms at TAT - tau, the bucket is
                // full at TAT, tau = interval * (burst - 1) later.
                let wait = not_until.wait_time_from(self.clock.now());
                let tau = interval * burst.saturating_sub(1);
                Err(LimitState {
                    limit: burst,
                    remaining: 0,
                    reset: secs_ceil(wait + tau).max(1),
                    retry_after: secs_ceil(wait).max(1),
                })
            }
        }
    }

    /// Number of keys held (for tests and benches).
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }

    /// Forget keys whose buckets are full again: they are indistinguishable from new.
    pub fn evict_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
