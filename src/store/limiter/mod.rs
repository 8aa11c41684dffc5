//! [`Limiter`]: GCRA buckets per key (the algorithm of `governor`), in this
//! process ([`LocalLimiter`], bounded by `max_keys`) or in Redis
//! ([`RedisLimiter`], shared by every gateway with the same definition).

mod local;
mod redis;
#[cfg(test)]
mod tests;

pub use self::local::{BoundedStore, LocalLimiter};
pub use self::redis::RedisLimiter;
use super::{Backend, FailurePolicy, Unavailable};
use crate::pipeline::LimitState;
use governor::clock::{Clock, DefaultClock};
use governor::Quota;
use std::num::NonZeroU32;
use std::time::Duration;

/// `Ok` with the state after admitting a request, or `Err` with the state of
/// its refusal.
pub type Decision = Result<LimitState, LimitState>;

/// A limit: `burst` requests at once, then one every `interval`.
#[derive(Debug, Clone, Copy)]
pub struct Gcra {
    burst: u32,
    /// Emission interval: time for one request's worth of capacity to come back.
    interval: Duration,
    quota: Quota,
}

impl Gcra {
    /// None when the interval is too short to measure.
    pub fn new(burst: NonZeroU32, interval: Duration) -> Option<Gcra> {
        Some(Gcra {
            burst: burst.get(),
            interval,
            quota: Quota::with_period(interval)?.allow_burst(burst),
        })
    }

    /// The state when the backend cannot say (fail open): the bucket of a key
    /// seen for the first time, after admitting this request.
    pub fn unknown_state(&self) -> LimitState {
        LimitState {
            limit: self.burst,
            remaining: self.burst.saturating_sub(1),
            reset: secs_ceil(self.interval),
            retry_after: 0,
        }
    }
}

pub(crate) use crate::util::ceil_secs as secs_ceil; // RateLimit-Reset and Retry-After round up

enum Kind<C: Clock> {
    Local(LocalLimiter<C>),
    Redis(RedisLimiter),
}

/// GCRA buckets per key on the backend a plugin chose, with its answer to a
/// backend failure.
pub struct Limiter<C: Clock = DefaultClock> {
    gcra: Gcra,
    kind: Kind<C>,
    on_error: FailurePolicy,
}

impl<C: Clock + Clone> Limiter<C> {
    /// `max_keys` bounds a local limiter; `clock` is a local limiter's (tests
    /// advance a fake one).
    pub fn new(
        backend: Backend,
        on_error: FailurePolicy,
        gcra: Gcra,
        max_keys: usize,
        clock: C,
    ) -> Self {
        let kind = match backend {
            Backend::Local => Kind::Local(LocalLimiter::new(gcra, max_keys, clock)),
            Backend::Redis(remote) => Kind::Redis(RedisLimiter::new(remote, gcra)),
        };
        Limiter {
            gcra,
            kind,
            on_error,
        }
    }

    /// Check one request under `key`. A backend failure is reported here and
    /// comes back as the plugin's `on_backend_error`.
    pub async fn check(&self, key: &str) -> Result<Decision, Unavailable> {
        match &self.kind {
            Kind::Local(l) => Ok(l.check(key)),
            Kind::Redis(r) => r.check(key).await.map_err(|e| self.on_error.fail(&e)),
        }
    }

    /// The decision when it needs no I/O: a local limiter's; None for Redis.
    pub fn check_now(&self, key: &str) -> Option<Decision> {
        match &self.kind {
            Kind::Local(l) => Some(l.check(key)),
            Kind::Redis(_) => None,
        }
    }

    /// See [`Gcra::unknown_state`].
    pub fn unknown_state(&self) -> LimitState {
        self.gcra.unknown_state()
    }

    /// Number of keys held in this process (for tests and benches).
    pub fn keys(&self) -> usize {
        match &self.kind {
            Kind::Local(l) => l.keys(),
            Kind::Redis(_) => 0,
        }
    }

    /// Forget local keys whose buckets are full again (Redis keys expire by
    /// themselves).
    pub fn evict_idle(&self) {
        if let Kind::Local(l) = &self.kind {
            l.evict_idle();
        }
    }
}
