//! `rate_limit`: GCRA (as `governor`) per key. Every response of a limited
//! route carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
//! (the most restrictive limit when several apply); a refusal is a 429 problem
//! with `Retry-After`. Idle keys are evicted on every maintenance tick, so
//! memory follows the number of *active* keys, not of keys ever seen.

use super::{BuildCtx, BuildError, BuildResult, Flow, Phase, Plugin, Reply};
use crate::config::{OnBackendError, RateLimitConfig, StateBackend};
use crate::metrics::METRICS;
use crate::proxy::RequestCtx;
use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::num::NonZeroU32;
use std::time::Duration;

type Limiter<C> =
    RateLimiter<String, DefaultKeyedStateStore<String>, C, StateInformationMiddleware>;

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
    /// its IP (SPEC). Prefixes keep the key spaces apart.
    pub fn key(&self, session: &Session, ctx: &RequestCtx) -> String {
        let found = match self {
            KeySource::Ip => None,
            KeySource::Global => return "g".to_string(),
            KeySource::Route => {
                return format!("r:{}", ctx.route().map(|r| &*r.name).unwrap_or(""))
            }
            KeySource::Consumer => ctx.consumer.as_deref().map(|c| format!("c:{c}")),
            KeySource::Header(h) => session
                .req_header()
                .headers
                .get(h)
                .map(|v| format!("h:{}", String::from_utf8_lossy(v.as_bytes()))),
            KeySource::Claim(c) => ctx.claims.as_ref().and_then(|m| m.get(c)).map(|v| match v {
                serde_json::Value::String(s) => format!("j:{s}"),
                other => format!("j:{other}"),
            }),
        };
        found.unwrap_or_else(|| match ctx.client_ip {
            Some(ip) => format!("i:{ip}"),
            None => "i:".to_string(),
        })
    }
}

/// The state of the tightest limit a request met, for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again (or, refused, until a retry can pass).
    pub reset: u64,
}

impl LimitState {
    /// Keep the more restrictive of two states.
    pub fn merge(a: Option<LimitState>, b: LimitState) -> LimitState {
        match a {
            Some(a)
                if a.remaining < b.remaining
                    || (a.remaining == b.remaining && a.reset >= b.reset) =>
            {
                a
            }
            _ => b,
        }
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
    errors: crate::cluster::ErrorReporter,
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
    redis: std::sync::Arc<crate::cluster::Redis>,
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
    ) -> Result<Result<LimitState, LimitState>, crate::cluster::BackendError> {
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
        let secs = micros.div_ceil(1_000_000);
        let state = LimitState {
            limit: self.burst,
            remaining: remaining.clamp(0, self.burst as i64) as u32,
            reset: secs,
        };
        Ok(if admitted == 1 {
            Ok(state)
        } else {
            Err(LimitState {
                reset: secs.max(1),
                ..state
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
                key: "key".into(),
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
                key: "burst".into(),
                message: "must be at least 1".into(),
            });
        }
        let interval = c.rate.interval();
        let redis = match c.backend {
            StateBackend::Local => None,
            StateBackend::Redis => match bx.redis("backend") {
                Ok(r) => {
                    use sha2::Digest;
                    let digest =
                        hex::encode(&sha2::Sha256::digest(format!("{c:?}").as_bytes())[..6]);
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
                limiter: RateLimiter::<
                    String,
                    DefaultKeyedStateStore<String>,
                    C,
                    NoOpMiddleware<C::Instant>,
                >::new(
                    q.allow_burst(b),
                    DefaultKeyedStateStore::default(),
                    clock.clone(),
                )
                .with_middleware::<StateInformationMiddleware>(),
                clock,
                redis,
                fail_open: c.on_backend_error != Some(OnBackendError::Deny),
                errors: crate::cluster::ErrorReporter::new(bx.name),
            }),
            (_, _, None, true) => Err(super::build_error(
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
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(LimitState {
                    limit: self.burst,
                    remaining: 0,
                    reset: secs_ceil(wait).max(1),
                })
            }
        }
    }

    /// Check one request under `key` on the configured backend (local or Redis).
    pub async fn decide(
        &self,
        key: &str,
    ) -> Result<Result<LimitState, LimitState>, crate::cluster::BackendError> {
        match &self.redis {
            None => Ok(self.check(key)),
            Some(r) => r.check(key).await,
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
        h.push((http::header::RETRY_AFTER, hv(s.reset)));
    }
    h
}

#[async_trait]
impl<C> Plugin for RateLimit<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    fn phase(&self) -> Phase {
        Phase::RateLimit
    }

    async fn request(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<Flow> {
        let key = self.key.key(session, ctx);
        let decision = match self.decide(&key).await {
            Ok(d) => d,
            Err(e) => {
                self.errors.report(&e);
                if self.fail_open {
                    return Ok(Flow::Continue);
                }
                return Ok(Flow::Respond(Reply::Problem {
                    status: 503,
                    detail: "the rate limiter's backend is unavailable".into(),
                    headers: vec![(http::header::RETRY_AFTER, HeaderValue::from(1u64))],
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
                    detail: format!("rate limit exceeded; retry in {} s", state.reset),
                    headers: headers(&state, true),
                }))
            }
        }
    }

    fn response(&self, resp: &mut ResponseHeader, ctx: &RequestCtx) {
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
        assert!(refused.reset > 3000 && refused.reset <= 3600, "{refused:?}");
        // Another key has its own bucket.
        assert_eq!(rl.check("b").unwrap().remaining, 2);
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
        };
        let b = LimitState {
            limit: 100,
            remaining: 50,
            reset: 1,
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
