//! The shared limiter: GCRA evaluated atomically in Redis.

use super::{Decision, Gcra};
use crate::pipeline::LimitState;
use crate::store::{BackendError, Remote};

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

/// GCRA buckets per key in Redis. Keys: `tollgate:rl:<plugin>:<definition
/// digest>:<bucket key>` (the prefix is the [`Remote`]'s), so gateways with the
/// same config share buckets and two plugin definitions never collide.
pub struct RedisLimiter {
    remote: Remote,
    script: ::redis::Script,
    interval_us: u64,
    burst: u32,
}

impl RedisLimiter {
    pub fn new(remote: Remote, gcra: Gcra) -> Self {
        RedisLimiter {
            remote,
            script: ::redis::Script::new(GCRA),
            interval_us: (gcra.interval.as_micros() as u64).max(1),
            burst: gcra.burst,
        }
    }

    /// Check one request under `key`.
    pub async fn check(&self, key: &str) -> Result<Decision, BackendError> {
        let (admitted, remaining, micros): (i64, i64, String) = self
            .remote
            .eval(
                &self.script,
                key,
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
