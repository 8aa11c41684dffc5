//! `rate_limit`: GCRA (as `governor`) per key. Every response of a limited
//! route carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
//! (the most restrictive limit when several apply); a refusal is a 429 problem
//! with `Retry-After`.
//!
//! Memory is bounded whatever clients send (SPEC §3): a key value longer than
//! [`MAX_KEY_VALUE`] bytes (or not UTF-8) is replaced by its SHA-256, and a
//! local limiter tracks at most `max_keys` keys ([`BoundedStore`]). Idle keys
//! are also evicted on every maintenance tick, so memory follows the number of
//! *active* keys, not of keys ever seen.

use crate::config::{Rate};
use crate::pipeline::{BuildCtx, BuildError, BuildResult, Flow, KeyPath, LimitState, Order, Plugin, PluginConfig, Reply, RequestCtx};
use crate::store::{OnBackendError, StateBackend};
use crate::metrics::METRICS;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use sha2::{Digest, Sha256};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;

// ---------------------------------------------------------------------------
// Config: `type = "rate_limit"`
// ---------------------------------------------------------------------------

fn default_rate_limit_key() -> String {
    "ip".into()
}

/// `type = "rate_limit"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub rate: Rate,
    /// Requests admitted at once; default: the rate's count.
    #[serde(default)]
    pub burst: Option<u32>,
    /// `ip`, `consumer`, `header:NAME`, `claim:NAME`, `route` or `global`.
    #[serde(default = "default_rate_limit_key")]
    pub key: String,
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
        self.backend == crate::store::StateBackend::Redis
    }
}

fn default_max_keys() -> usize {
    100_000
}


type Limiter<C> = RateLimiter<String, BoundedStore, C, StateInformationMiddleware>;

/// Key values longer than this (in bytes) are counted under their SHA-256.
pub const MAX_KEY_VALUE: usize = 128;

/// `<kind>:<value>` for a short value of visible ASCII only, else
/// `<kind>#<sha-256 hex>`: a key costs at most ~130 bytes whatever the client
/// sent, and the two forms never collide (`:` vs `#`). Any other value (long,
/// not UTF-8, or holding a space, a tab, a control character or any non-ASCII
/// character such as U+200B) is hashed: two different byte strings never share
/// a bucket, and a Redis key never holds an invisible character
/// (`redis-cli --scan` shows what is there).
fn bucket_key(kind: char, value: &[u8]) -> String {
    let visible = value.iter().all(|b| (0x21..0x7f).contains(b));
    match std::str::from_utf8(value) {
        Ok(s) if s.len() <= MAX_KEY_VALUE && visible => {
            let mut k = String::with_capacity(2 + s.len());
            k.push(kind);
            k.push(':');
            k.push_str(s);
            k
        }
        _ => format!("{kind}#{}", hex::encode(Sha256::digest(value))),
    }
}

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

/// What a request is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Ip,
    Consumer,
    Header(HeaderName),
    Claim(String),
    Route,
    Global,
}

impl KeySource {
    pub fn parse(s: &str) -> Option<KeySource> {
        Some(match s {
            "ip" => KeySource::Ip,
            "consumer" => KeySource::Consumer,
            "route" => KeySource::Route,
            "global" => KeySource::Global,
            _ => {
                if let Some(h) = s.strip_prefix("header:") {
                    KeySource::Header(HeaderName::try_from(h).ok()?)
                } else {
                    KeySource::Claim(
                        s.strip_prefix("claim:")
                            .filter(|c| !c.is_empty())?
                            .to_string(),
                    )
                }
            }
        })
    }

    /// The bucket key of a request; a request without the key is counted under
    /// its IP (SPEC). Prefixes keep the key spaces apart; long values are
    /// hashed ([`bucket_key`]).
    pub fn key(&self, session: &Session, ctx: &RequestCtx) -> String {
        let found = match self {
            KeySource::Ip => None,
            KeySource::Global => return "g".to_string(),
            KeySource::Route => {
                return bucket_key(
                    'r',
                    ctx.route().map(|r| r.name.as_bytes()).unwrap_or_default(),
                )
            }
            KeySource::Consumer => ctx
                .identity
                .consumer
                .as_deref()
                .map(|c| bucket_key('c', c.as_bytes())),
            KeySource::Header(h) => session
                .req_header()
                .headers
                .get(h)
                .map(|v| bucket_key('h', v.as_bytes())),
            KeySource::Claim(c) => ctx.identity.claims.as_ref().and_then(|m| m.get(c)).map(|v| match v {
                serde_json::Value::String(s) => bucket_key('j', s.as_bytes()),
                other => bucket_key('j', other.to_string().as_bytes()),
            }),
        };
        found.unwrap_or_else(|| match ctx.client.ip {
            Some(ip) => format!("i:{ip}"),
            None => "i:".to_string(),
        })
    }
}

pub struct RateLimit<C: Clock = DefaultClock> {
    name: String,
    key: KeySource,
    burst: u32,
    /// Emission interval: time for one request's worth of capacity to come back.
    interval: Duration,
    limiter: Limiter<C>,
    clock: C,
    /// With `backend = "redis"`: the shared limiter used instead of `limiter`.
    redis: Option<RedisGcra>,
    /// Fail open (`allow`, the default) or closed when Redis fails.
    fail_open: bool,
    errors: crate::store::ErrorReporter,
}

/// GCRA evaluated atomically in Redis: the same algorithm as `governor`, with
/// the theoretical arrival time stored under the key with a TTL, so idle keys
/// disappear by themselves. Redis's own clock is used, so gateways with skewed
/// clocks still agree.
const GCRA: &str = r#"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tau = interval * (burst - 1)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
if now < tat - tau then
  return {0, 0, string.format('%.0f', tat - tau - now)}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now + tau + interval - new_tat) / interval), string.format('%.0f', new_tat - now)}
"#;

struct RedisGcra {
    redis: std::sync::Arc<crate::store::Redis>,
    script: redis::Script,
    /// `tollgate:rl:<plugin>:<definition digest>:` — gateways with the same
    /// config share buckets; two plugin definitions never collide.
    prefix: String,
    interval_us: u64,
    burst: u32,
}

impl RedisGcra {
    async fn check(
        &self,
        key: &str,
    ) -> Result<Result<LimitState, LimitState>, crate::store::BackendError> {
        let k = format!("{}{key}", self.prefix);
        let (admitted, remaining, micros): (i64, i64, String) = self
            .redis
            .eval(
                &self.script,
                &[&k],
                &[
                    self.interval_us.to_string().as_bytes(),
                    self.burst.to_string().as_bytes(),
                ],
            )
            .await?;
        let micros: u64 = micros.parse().unwrap_or(0);
        let remaining = remaining.clamp(0, self.burst as i64) as u32;
        Ok(if admitted == 1 {
            // `micros` is the new TAT minus now: the bucket is full then.
            Ok(LimitState {
                limit: self.burst,
                remaining,
                reset: micros.div_ceil(1_000_000),
                retry_after: 0,
            })
        } else {
            // `micros` is the wait until the next request conforms; the bucket
            // is full one burst tolerance (`interval * (burst - 1)`) later.
            let tau = self.interval_us * u64::from(self.burst.saturating_sub(1));
            Err(LimitState {
                limit: self.burst,
                remaining: 0,
                reset: (micros + tau).div_ceil(1_000_000).max(1),
                retry_after: micros.div_ceil(1_000_000).max(1),
            })
        })
    }
}

fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
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
        let key = KeySource::parse(&c.key);
        if key.is_none() {
            errs.push(BuildError {
                path: KeyPath::default().key("key"),
                message: format!(
                    "invalid key {:?}: expected \"ip\", \"consumer\", \"header:NAME\", \"claim:NAME\", \"route\" or \"global\"",
                    c.key
                ),
            });
        }
        let burst = c.burst.unwrap_or(c.rate.count.min(u32::MAX as u64) as u32);
        let nz_burst = NonZeroU32::new(burst);
        if nz_burst.is_none() {
            errs.push(BuildError {
                path: KeyPath::default().key("burst"),
                message: "must be at least 1".into(),
            });
        }
        if c.max_keys == 0 {
            errs.push(BuildError {
                path: KeyPath::default().key("max_keys"),
                message: "must be at least 1".into(),
            });
        }
        let interval = c.rate.interval();
        let redis = match c.backend {
            StateBackend::Local => None,
            StateBackend::Redis => match bx.redis("backend") {
                Ok(r) => {
                    // `max_keys` bounds only local state: it does not split the shared buckets.
                    let shared = RateLimitConfig {
                        max_keys: 0,
                        ..c.clone()
                    };
                    let digest =
                        hex::encode(&Sha256::digest(format!("{shared:?}").as_bytes())[..6]);
                    Some(RedisGcra {
                        redis: r,
                        script: redis::Script::new(GCRA),
                        prefix: format!("tollgate:rl:{}:{digest}:", bx.name),
                        interval_us: (interval.as_micros() as u64).max(1),
                        burst,
                    })
                }
                Err(e) => {
                    errs.extend(e);
                    None
                }
            },
        };
        let quota = Quota::with_period(interval);
        match (key, nz_burst, quota, errs.is_empty()) {
            (Some(key), Some(b), Some(q), true) => Ok(RateLimit {
                name: bx.name.to_string(),
                key,
                burst,
                interval,
                limiter: RateLimiter::<String, BoundedStore, C, NoOpMiddleware<C::Instant>>::new(
                    q.allow_burst(b),
                    BoundedStore::new(c.max_keys, interval),
                    clock.clone(),
                )
                .with_middleware::<StateInformationMiddleware>(),
                clock,
                redis,
                fail_open: c.on_backend_error != Some(OnBackendError::Deny),
                errors: crate::store::ErrorReporter::new(bx.name),
            }),
            (_, _, None, true) => Err(crate::pipeline::build_error(
                "rate",
                "the rate is too high to measure",
            )),
            _ => Err(errs),
        }
    }

    /// Check one request under `key`: `Ok` with the state after admitting it, or
    /// `Err` with the state of a refusal.
    pub fn check(&self, key: &str) -> Result<LimitState, LimitState> {
        match self.limiter.check_key(&key.to_string()) {
            Ok(snap) => {
                let remaining = snap.remaining_burst_capacity();
                let used = self.burst.saturating_sub(remaining);
                Ok(LimitState {
                    limit: self.burst,
                    remaining,
                    reset: secs_ceil(self.interval * used),
                    retry_after: 0,
                })
            }
            Err(not_until) => {
                // GCRA: the next request conforms at TAT - tau, the bucket is
                // full at TAT, tau = interval * (burst - 1) later.
                let wait = not_until.wait_time_from(self.clock.now());
                let tau = self.interval * self.burst.saturating_sub(1);
                Err(LimitState {
                    limit: self.burst,
                    remaining: 0,
                    reset: secs_ceil(wait + tau).max(1),
                    retry_after: secs_ceil(wait).max(1),
                })
            }
        }
    }

    /// Check one request under `key` on the configured backend (local or Redis).
    pub async fn decide(
        &self,
        key: &str,
    ) -> Result<Result<LimitState, LimitState>, crate::store::BackendError> {
        match &self.redis {
            None => Ok(self.check(key)),
            Some(r) => r.check(key).await,
        }
    }

    /// The headers' state when the backend cannot say (fail open): the bucket
    /// of a key seen for the first time, after admitting this request.
    pub fn unknown_state(&self) -> LimitState {
        LimitState {
            limit: self.burst,
            remaining: self.burst.saturating_sub(1),
            reset: secs_ceil(self.interval),
            retry_after: 0,
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

    async fn request(&self, session: &mut Session, ctx: &mut RequestCtx, _state: &mut Self::State) -> pingora::Result<Flow> {
        let key = self.key.key(session, ctx);
        let decision = match self.decide(&key).await {
            Ok(d) => d,
            Err(e) => {
                self.errors.report(&e);
                if self.fail_open {
                    // The shared bucket is unknown: answer with what is known,
                    // the limit itself, as a bucket that just admitted this one
                    // request (plugins/rate_limit.md, "When Redis fails").
                    let state = self.unknown_state();
                    ctx.rate_limit = Some(LimitState::merge(ctx.rate_limit, state));
                    return Ok(Flow::Continue);
                }
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
                let route = ctx.route().map(|r| &*r.name).unwrap_or("");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::parse_rate;

    use governor::clock::FakeRelativeClock;

    fn limiter(rate: &str, burst: Option<u32>) -> RateLimit<FakeRelativeClock> {
        bounded(rate, burst, 100_000)
    }

    fn bounded(rate: &str, burst: Option<u32>, max_keys: usize) -> RateLimit<FakeRelativeClock> {
        let cfg = crate::config::load_str(
            "[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n",
            None,
            std::path::Path::new("."),
        )
        .unwrap();
        let bx = BuildCtx {
            name: "rl",
            config: &cfg,
        };
        RateLimit::with_clock(
            &RateLimitConfig {
                rate: parse_rate(rate).unwrap(),
                burst,
                key: "ip".into(),
                backend: StateBackend::Local,
                on_backend_error: None,
                max_keys,
            },
            &bx,
            FakeRelativeClock::default(),
        )
        .ok()
        .unwrap()
    }

    #[test]
    fn burst_then_refusal_with_headers() {
        let rl = limiter("1/h", Some(3));
        let states: Vec<_> = (0..3).map(|_| rl.check("a").unwrap()).collect();
        assert_eq!(
            states.iter().map(|s| s.remaining).collect::<Vec<_>>(),
            vec![2, 1, 0]
        );
        assert!(states.iter().all(|s| s.limit == 3));
        let refused = rl.check("a").unwrap_err();
        assert_eq!(refused.remaining, 0);
        assert!(
            refused.retry_after > 3000 && refused.retry_after <= 3600,
            "{refused:?}"
        );
        assert!(
            refused.reset > 3000 + 7200 && refused.reset <= 3 * 3600,
            "{refused:?}"
        );
        // Another key has its own bucket.
        assert_eq!(rl.check("b").unwrap().remaining, 2);
    }

    #[test]
    fn a_refusal_resets_when_the_bucket_is_full_and_retries_after_one_interval() {
        let rl = limiter("1/s", Some(3));
        for _ in 0..3 {
            rl.check("a").unwrap();
        }
        let refused = rl.check("a").unwrap_err();
        // One request's worth comes back in 1 s; all three in 3 s.
        assert_eq!((refused.retry_after, refused.reset), (1, 3));
        let h = headers(&refused, true);
        let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("retry-after"), Some(HeaderValue::from(1u64)));
        assert_eq!(get("ratelimit-reset"), Some(HeaderValue::from(3u64)));
        rl.clock.advance(Duration::from_millis(1500));
        assert!(rl.check("a").is_ok());
        assert!(rl.check("a").is_err(), "1.5 s gave back one request only");
    }

    #[test]
    fn long_and_binary_key_values_are_hashed_and_never_collide_with_short_ones() {
        let short = bucket_key('h', b"tenant-a");
        assert_eq!(short, "h:tenant-a");
        let long = vec![b'x'; 64 * 1024];
        let k = bucket_key('h', &long);
        assert_eq!(k.len(), 2 + 64, "{k}");
        assert!(k.starts_with("h#"));
        assert_ne!(k, bucket_key('h', &long[1..]));
        assert_eq!(
            bucket_key('h', &[b'a'; MAX_KEY_VALUE]).len(),
            2 + MAX_KEY_VALUE
        );
        assert!(bucket_key('h', &[b'a'; MAX_KEY_VALUE + 1]).starts_with("h#"));
        // Two different invalid byte strings are two buckets (no lossy U+FFFD).
        assert_ne!(bucket_key('h', b"\xff"), bucket_key('h', b"\xfe"));
        // Anything but visible ASCII is hashed, however short: no invisible
        // character reaches a Redis key.
        for odd in [
            &b"tab\there"[..],
            "\u{200b}zw".as_bytes(),
            b"a b",
            b"nul\0",
            b"del\x7f",
            "caf\u{e9}".as_bytes(),
        ] {
            let k = bucket_key('h', odd);
            assert!(k.starts_with("h#") && k.len() == 66, "{odd:?} -> {k:?}");
            assert!(k.bytes().all(|b| (0x21..0x7f).contains(&b)), "{k:?}");
        }
        assert_ne!(bucket_key('h', b"a b"), bucket_key('h', b"a\tb"));
        assert_eq!(bucket_key('h', b"Tenant_42.x~"), "h:Tenant_42.x~");
        // A short value that looks like a digest is still its own key.
        let hexed = k[2..].to_string();
        assert_ne!(bucket_key('h', hexed.as_bytes()), k);
    }

    #[test]
    fn distinct_keys_never_grow_the_store_past_max_keys() {
        let rl = bounded("1/h", Some(2), 1000);
        // Every key stays refilling for an hour: none is idle.
        for i in 0..50_000 {
            assert!(rl.check(&format!("k{i}")).is_ok());
            assert!(rl.keys() <= 1000, "{} keys after {i}", rl.keys());
        }
    }

    #[test]
    fn a_single_key_limiter_holds_one_key() {
        let rl = bounded("1/h", Some(1), 1);
        for i in 0..10 {
            assert!(rl.check(&format!("k{i}")).is_ok());
            assert_eq!(rl.keys(), 1);
        }
    }

    #[test]
    fn idle_keys_go_first_and_busy_keys_keep_their_count() {
        let rl = bounded("10/s", Some(5), 100);
        for i in 0..99 {
            rl.check(&format!("idle{i}")).unwrap();
        }
        // The idle keys' buckets are full again after 100 ms; "busy" spends 4 of 5.
        rl.clock.advance(Duration::from_millis(200));
        for _ in 0..4 {
            rl.check("busy").unwrap();
        }
        // A flood of new keys: the full map evicts idle keys, then the least-used.
        for i in 0..1000 {
            let _ = rl.check(&format!("new{i}"));
        }
        assert!(rl.keys() <= 100);
        assert_eq!(
            rl.check("busy").unwrap().remaining,
            0,
            "busy kept its count through the flood"
        );
        assert!(rl.check("busy").is_err());
    }

    #[test]
    fn max_keys_must_be_positive() {
        let cfg = crate::config::load_str(
            "[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n",
            None,
            std::path::Path::new("."),
        )
        .unwrap();
        let bx = BuildCtx {
            name: "rl",
            config: &cfg,
        };
        let errs = RateLimit::new(
            &RateLimitConfig {
                rate: parse_rate("1/s").unwrap(),
                burst: None,
                key: "ip".into(),
                backend: StateBackend::Local,
                on_backend_error: None,
                max_keys: 0,
            },
            &bx,
        )
        .err()
        .unwrap();
        assert_eq!(errs[0].path.to_string(), "max_keys");
    }

    #[test]
    fn default_burst_is_the_rate_count() {
        let rl = limiter("5/min", None);
        assert_eq!(rl.check("k").unwrap().limit, 5);
    }

    #[test]
    fn idle_keys_are_evicted() {
        let rl = limiter("10/s", Some(2));
        for i in 0..100_000 {
            let _ = rl.check(&format!("k{i}"));
        }
        // A key still refilling is kept...
        rl.evict_idle();
        assert_eq!(rl.keys(), 100_000);
        // ...and forgotten once its bucket is full again.
        rl.clock.advance(Duration::from_millis(250));
        let _ = rl.check("busy");
        rl.evict_idle();
        assert_eq!(rl.keys(), 1);
    }

    #[test]
    fn capacity_comes_back_at_the_rate() {
        let rl = limiter("10/s", Some(2));
        assert!(rl.check("a").is_ok() && rl.check("a").is_ok());
        let refused = rl.check("a").unwrap_err();
        assert_eq!(refused.reset, 1);
        rl.clock.advance(Duration::from_millis(100));
        assert_eq!(rl.check("a").unwrap().remaining, 0);
        assert!(rl.check("a").is_err());
    }

    #[test]
    fn merge_keeps_the_tightest() {
        let a = LimitState {
            limit: 10,
            remaining: 3,
            reset: 5,
            retry_after: 0,
        };
        let b = LimitState {
            limit: 100,
            remaining: 50,
            reset: 1,
            retry_after: 0,
        };
        assert_eq!(LimitState::merge(Some(a), b), a);
        assert_eq!(LimitState::merge(Some(b), a), a);
        assert_eq!(LimitState::merge(None, b), b);
    }

    #[test]
    fn key_sources() {
        assert_eq!(KeySource::parse("ip"), Some(KeySource::Ip));
        assert_eq!(
            KeySource::parse("claim:tenant"),
            Some(KeySource::Claim("tenant".into()))
        );
        assert!(KeySource::parse("header:bad header").is_none());
        assert!(KeySource::parse("claim:").is_none());
        assert!(KeySource::parse("cookie").is_none());
    }
}
