//! Records in Redis, shared by every gateway with the same config.

use super::{Begin, Stored};
use crate::store::{BackendError, Remote};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::Duration;

/// Records in Redis, shared by every gateway with the same config.
///
/// Key: `tollgate:idem:<plugin>:<config digest>:<scope>:<idempotency key>`
/// (the prefix is the [`Remote`]'s), `<scope>` being 32 hex digits (see
/// `plugins::idempotency::scope_of`); printable throughout.
/// Value: `F<fingerprint hex><token>` while in flight, `L<fingerprint hex>`
/// while locked after an unknown outcome, `D<fingerprint hex><response>` once
/// stored. The in-flight marker is taken with `SET NX` with an expiry inside a
/// script, so two gateways can never both proceed with one key.
pub struct RedisRecords {
    remote: Remote,
    begin: ::redis::Script,
    complete: ::redis::Script,
    abort: ::redis::Script,
    /// How long an in-flight marker may outlive a gateway that died holding it.
    inflight_ttl: Duration,
}

const BEGIN: &str = r#"
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return {'proceed', ''}
end
local v = redis.call('GET', KEYS[1])
if not v then return {'inflight', ''} end
if string.sub(v, 2, 65) ~= ARGV[1] then return {'mismatch', ''} end
local kind = string.sub(v, 1, 1)
if kind == 'F' then return {'inflight', ''} end
if kind == 'L' then return {'locked', tostring(redis.call('PTTL', KEYS[1]))} end
return {'replay', v}
"#;

/// Replace the in-flight marker `ARGV[1]` with `ARGV[2]` for `ARGV[3]` ms
/// (a stored response, or a lock).
const COMPLETE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"#;

const ABORT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

fn marker(fp_hex: &str, token: u64) -> String {
    format!("F{fp_hex}{token}")
}

/// `D<fp hex><status:3>` + `name:value\r\n`… + `\r\n` + body.
pub(super) fn encode(fp_hex: &str, s: &Stored) -> Vec<u8> {
    let mut out = format!("D{fp_hex}{:03}", s.status).into_bytes();
    for (n, v) in &s.headers {
        out.extend_from_slice(n.as_str().as_bytes());
        out.push(b':');
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&s.body);
    out
}

pub(super) fn decode(v: &[u8]) -> Option<Stored> {
    let status: u16 = std::str::from_utf8(v.get(65..68)?).ok()?.parse().ok()?;
    let mut rest = v.get(68..)?;
    let mut headers = Vec::new();
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = &rest[..end];
        rest = &rest[end + 2..];
        if line.is_empty() {
            break;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        headers.push((
            HeaderName::from_bytes(&line[..colon]).ok()?,
            HeaderValue::from_bytes(&line[colon + 1..]).ok()?,
        ));
    }
    Some(Stored {
        status,
        headers,
        body: Bytes::copy_from_slice(rest),
    })
}

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

impl RedisRecords {
    pub fn new(remote: Remote, inflight_ttl: Duration) -> Self {
        RedisRecords {
            remote,
            begin: ::redis::Script::new(BEGIN),
            complete: ::redis::Script::new(COMPLETE),
            abort: ::redis::Script::new(ABORT),
            inflight_ttl,
        }
    }

    /// Take the in-flight marker of `key`, or say what holds it.
    pub async fn begin(&self, key: &str, fp: [u8; 32]) -> Result<Begin, BackendError> {
        let fp_hex = hex::encode(fp);
        let token: u64 = rand::random();
        let ttl = millis(self.inflight_ttl);
        let (what, value): (String, Vec<u8>) = self
            .remote
            .eval(
                &self.begin,
                key,
                &[
                    fp_hex.as_bytes(),
                    marker(&fp_hex, token).as_bytes(),
                    ttl.as_bytes(),
                ],
            )
            .await?;
        Ok(match what.as_str() {
            "proceed" => Begin::Proceed(token),
            "inflight" => Begin::InFlight,
            "locked" => {
                let ms = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1000);
                Begin::Locked(Duration::from_millis(ms))
            }
            "replay" => match decode(&value) {
                Some(s) => Begin::Replay(Arc::new(s)),
                None => Begin::Mismatch,
            },
            _ => Begin::Mismatch,
        })
    }

    /// Store the response of the request holding `token`: true when stored
    /// (false when the marker is no longer its own).
    pub async fn complete(
        &self,
        key: &str,
        fp: [u8; 32],
        token: u64,
        resp: &Stored,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let value = encode(&hex::encode(fp), resp);
        self.settle(key, fp, token, &value, ttl).await
    }

    /// The request holding `token` ended without a known outcome: keep its
    /// key locked for `lock`.
    pub async fn lock_unknown(
        &self,
        key: &str,
        fp: [u8; 32],
        token: u64,
        lock: Duration,
    ) -> Result<(), BackendError> {
        let value = format!("L{}", hex::encode(fp));
        self.settle(key, fp, token, value.as_bytes(), lock)
            .await
            .map(|_| ())
    }

    /// Replace the marker of `token` with `value` for `ttl`.
    async fn settle(
        &self,
        key: &str,
        fp: [u8; 32],
        token: u64,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let n: i64 = self
            .remote
            .eval(
                &self.complete,
                key,
                &[
                    marker(&hex::encode(fp), token).as_bytes(),
                    value,
                    millis(ttl).as_bytes(),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// Drop the in-flight marker of `token` (the response is not stored).
    pub async fn abort(&self, key: &str, fp: [u8; 32], token: u64) -> Result<(), BackendError> {
        let _: i64 = self
            .remote
            .eval(
                &self.abort,
                key,
                &[marker(&hex::encode(fp), token).as_bytes()],
            )
            .await?;
        Ok(())
    }
}
