//! `rate_limit`: GCRA (as `governor`) per key. Every response of a limited
//! route carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
//! (the most restrictive limit when several apply); a refusal is a 429 problem
//! with `Retry-After`.
//!
//! Memory is bounded whatever clients send (SPEC §3): a key value longer than
//! [`MAX_KEY_VALUE`] bytes (or not UTF-8) is replaced by its SHA-256, and a
//! local limiter tracks at most `max_keys` keys
//! ([`BoundedStore`](crate::store::limiter::BoundedStore)). The buckets live in
//! a [`store::Limiter`](crate::store::Limiter), in this process or in Redis.

mod key;
#[cfg(test)]
mod tests;

pub use self::key::{KeySource, LimitKey, MAX_KEY_VALUE};
use crate::config::Rate;
use crate::metrics::METRICS;
use crate::pipeline::{
    BuildCtx, BuildError, BuildResult, Flow, LimitState, Order, Plugin, PluginConfig, Reply,
    RequestCtx, Series,
};
use crate::store::limiter::{Decision, Gcra};
use crate::store::{Backend, FailurePolicy, Limiter, OnBackendError, StateBackend, Unavailable};
use governor::clock::{Clock, DefaultClock};
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde::Deserialize;
use std::num::NonZeroU32;

// ---------------------------------------------------------------------------
// Config: `type = "rate_limit"`
// ---------------------------------------------------------------------------

/// `type = "rate_limit"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub rate: Rate,
    /// Requests admitted at once; default: the rate's count.
    #[serde(default)]
    pub burst: Option<u32>,
    /// `ip` (the default), `consumer`, `header:NAME`, `claim:NAME`, `route` or `global`.
    #[serde(default)]
    pub key: LimitKey,
    #[serde(default)]
    pub backend: StateBackend,
    /// Default `allow` (fail open).
    #[serde(default)]
    pub on_backend_error: Option<OnBackendError>,
    /// Most keys a local limiter tracks (idle keys are evicted first).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

impl PluginConfig for RateLimitConfig {
    const TYPE: &'static str = "rate_limit";
    const ORDER: Order = Order::RateLimit;
    type Plugin = RateLimit;

    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<RateLimit> {
        RateLimit::new(self, bx)
    }

    fn uses_redis(&self) -> bool {
        self.backend == StateBackend::Redis
    }
}

fn default_max_keys() -> usize {
    100_000
}

pub struct RateLimit<C: Clock = DefaultClock> {
    name: String,
    key: KeySource,
    limiter: Limiter<C>,
    /// Where its buckets are (for the series it declares).
    backend: StateBackend,
}

impl RateLimit<DefaultClock> {
    pub fn new(c: &RateLimitConfig, bx: &BuildCtx<'_>) -> BuildResult<Self> {
        Self::with_clock(c, bx, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimit<C> {
    /// The limiter on a clock of the caller's (tests advance a fake one).
    pub fn with_clock(c: &RateLimitConfig, bx: &BuildCtx<'_>, clock: C) -> BuildResult<Self> {
        let mut errs = Vec::new();
        let burst = c.burst.unwrap_or(c.rate.count.min(u32::MAX as u64) as u32);
        let nz_burst = NonZeroU32::new(burst);
        if nz_burst.is_none() {
            errs.push(BuildError::at("burst", "must be at least 1"));
        }
        if c.max_keys == 0 {
            errs.push(BuildError::at("max_keys", "must be at least 1"));
        }
        // `max_keys` bounds only local state: it does not split the shared buckets.
        let shared = RateLimitConfig {
            max_keys: 0,
            ..c.clone()
        };
        let backend = Backend::select(bx, c.backend, "rl", &shared)
            .map_err(|e| errs.extend(e))
            .ok();
        let gcra = nz_burst.and_then(|b| Gcra::new(b, c.rate.interval()));
        match (gcra, backend) {
            (Some(gcra), Some(backend)) if errs.is_empty() => Ok(RateLimit {
                name: bx.name.to_string(),
                key: c.key.source.clone(),
                backend: c.backend,
                limiter: Limiter::new(
                    backend,
                    FailurePolicy::new(bx.name, c.on_backend_error, OnBackendError::Allow),
                    gcra,
                    c.max_keys,
                    clock,
                ),
            }),
            (None, _) if errs.is_empty() => Err(crate::pipeline::build_error(
                "rate",
                "the rate is too high to measure",
            )),
            _ => Err(errs),
        }
    }

    /// Check one request under `key` on a local limiter, synchronously (tests
    /// and benches). A Redis-backed limiter has no answer without I/O: it
    /// answers as when its backend fails open.
    pub fn check(&self, key: &str) -> Decision {
        self.limiter
            .check_now(key)
            .unwrap_or_else(|| Ok(self.limiter.unknown_state()))
    }

    /// Check one request under `key` on the configured backend (local or Redis).
    pub async fn decide(&self, key: &str) -> Result<Decision, Unavailable> {
        self.limiter.check(key).await
    }

    /// The headers' state when the backend cannot say (fail open): the bucket
    /// of a key seen for the first time, after admitting this request.
    pub fn unknown_state(&self) -> LimitState {
        self.limiter.unknown_state()
    }

    /// Number of keys held (for tests and benches).
    pub fn keys(&self) -> usize {
        self.limiter.keys()
    }

    /// Forget keys whose buckets are full again: they are indistinguishable from new.
    pub fn evict_idle(&self) {
        self.limiter.evict_idle();
    }
}

fn hv(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

/// The `RateLimit-*` headers of a decision, under static names (Pingora keeps
/// a `&'static str` name as it is, where a `HeaderName` is copied into a new
/// buffer on every insert: `benches/pipeline.rs`,
/// `plugin_chain_full/one/rate_limit`, 750 -> 619 ns).
fn ratelimit_headers(s: &LimitState) -> [(&'static str, HeaderValue); 3] {
    [
        ("ratelimit-limit", hv(s.limit as u64)),
        ("ratelimit-remaining", hv(s.remaining as u64)),
        ("ratelimit-reset", hv(s.reset)),
    ]
}

/// The `RateLimit-*` headers (and `Retry-After` on a refusal).
pub fn headers(s: &LimitState, refused: bool) -> Vec<(HeaderName, HeaderValue)> {
    let mut h: Vec<_> = ratelimit_headers(s)
        .into_iter()
        .map(|(n, v)| (HeaderName::from_static(n), v))
        .collect();
    if refused {
        h.push((http::header::RETRY_AFTER, hv(s.retry_after.max(1))));
    }
    h
}

impl<C> Plugin for RateLimit<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    type State = ();

    fn series(&self) -> Vec<Series> {
        let mut out = vec![Series::RateLimited];
        out.extend(
            self.backend
                .error_label()
                .map(|backend| Series::BackendErrors { backend }),
        );
        out
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        _state: &mut Self::State,
    ) -> pingora::Result<Flow> {
        let key = self.key.key(session, ctx);
        let decision = match self.decide(&key).await {
            Ok(d) => d,
            Err(Unavailable(OnBackendError::Allow)) => {
                // The shared bucket is unknown: answer with what is known,
                // the limit itself, as a bucket that just admitted this one
                // request (plugins/rate_limit.md, "When Redis fails").
                let state = self.unknown_state();
                ctx.rate_limit = Some(LimitState::merge(ctx.rate_limit, state));
                return Ok(Flow::Continue);
            }
            Err(Unavailable(OnBackendError::Deny)) => {
                // Fail closed, still with the `RateLimit-*` headers every
                // response of a limited route carries (SPEC §3): the limit
                // itself, as on the fail-open path, plus `Retry-After: 1`. An
                // earlier limit's state must not overwrite them.
                ctx.rate_limit = None;
                let mut headers = headers(&self.unknown_state(), false);
                headers.push((http::header::RETRY_AFTER, HeaderValue::from(1u64)));
                return Ok(Flow::Respond(Reply::Problem {
                    status: 503,
                    detail: "the rate limiter's backend is unavailable".into(),
                    headers,
                }));
            }
        };
        match decision {
            Ok(state) => {
                ctx.rate_limit = Some(LimitState::merge(ctx.rate_limit, state));
                Ok(Flow::Continue)
            }
            Err(state) => {
                // The refusal's own headers are written with the problem; the
                // response hook must not overwrite them with an earlier limit's.
                ctx.rate_limit = None;
                let route = ctx.route_name();
                METRICS
                    .rate_limited
                    .with_label_values(&[route, &self.name])
                    .inc();
                Ok(Flow::Respond(Reply::Problem {
                    status: 429,
                    detail: format!("rate limit exceeded; retry in {} s", state.retry_after),
                    headers: headers(&state, true),
                }))
            }
        }
    }

    fn response(&self, resp: &mut ResponseHeader, ctx: &RequestCtx, _state: &mut Self::State) {
        if let Some(s) = &ctx.rate_limit {
            for (n, v) in ratelimit_headers(s) {
                let _ = resp.insert_header(n, v);
            }
        }
    }

    async fn tick(&self) {
        self.evict_idle();
    }
}
