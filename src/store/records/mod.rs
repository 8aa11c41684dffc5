//! [`Records`]: idempotency records, in this process ([`LocalRecords`],
//! bounded by `max_size` bytes and [`MAX_KEYS`] records) or in Redis
//! ([`RedisRecords`], shared by every gateway with the same config).
//!
//! A key is begun ([`Begin::Proceed`] takes its in-flight marker), then
//! completed (its final response stored), aborted (released) or locked for a
//! while when its outcome is unknown. Completing, aborting and locking happen
//! in the proxy's synchronous hooks. On Redis, with `[server] work_stealing`
//! on (what it is, unset, for a config that keeps state on Redis), they run
//! to their end before the hook returns (`run_to_end`), so that a retry, on
//! any gateway, sees the record before the client has the answer. Set off
//! (each worker a single-threaded runtime, which cannot block), they are
//! started at once and land a Redis round trip later; a retry in between finds
//! the key still in flight (409, retry).

mod local;
mod redis;
#[cfg(test)]
mod tests;

pub use self::local::LocalRecords;
pub use self::redis::RedisRecords;
use super::{Backend, FailurePolicy, Unavailable};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::Duration;

/// Most records (stored, in flight or locked) one local store keeps.
pub const MAX_KEYS: usize = 100_000;

/// A stored final response.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Stored {
    /// Its memory, estimated from above: a header pair is ~72 bytes inline
    /// plus its text; the `Arc`, the struct and the vector head ~128.
    pub(super) fn size(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 80)
                .sum::<usize>()
            + 128
    }
}

/// What a request with a key may do.
#[derive(Debug)]
pub enum Begin {
    /// First of its key: forward it; `token` identifies its in-flight marker.
    Proceed(u64),
    InFlight,
    /// The first request's outcome is unknown for this much longer.
    Locked(Duration),
    Mismatch,
    Replay(Arc<Stored>),
    /// The store is full of in-flight and locked keys: nothing may be evicted.
    Full,
}

enum Kind {
    Local(LocalRecords),
    Redis(Arc<RedisRecords>),
}

/// Idempotency records on the backend a plugin chose, with its answer to a
/// backend failure.
pub struct Records {
    kind: Kind,
    on_error: FailurePolicy,
}

impl Records {
    /// `max_bytes` bounds local records; `inflight_ttl` is how long a Redis
    /// in-flight marker may outlive a gateway that died holding it.
    pub fn new(
        backend: Backend,
        on_error: FailurePolicy,
        max_bytes: usize,
        inflight_ttl: Duration,
    ) -> Self {
        let kind = match backend {
            Backend::Local => Kind::Local(LocalRecords::new(max_bytes)),
            Backend::Redis(remote) => {
                Kind::Redis(Arc::new(RedisRecords::new(remote, inflight_ttl)))
            }
        };
        Records { kind, on_error }
    }

    /// What a request with `key` and fingerprint `fp` may do; a local
    /// in-flight marker expires after `ttl`. A backend failure is reported
    /// here and comes back as the plugin's `on_backend_error`.
    pub async fn begin(
        &self,
        key: &str,
        fp: [u8; 32],
        ttl: Duration,
    ) -> Result<Begin, Unavailable> {
        match &self.kind {
            Kind::Local(l) => Ok(l.begin(key, fp, ttl)),
            Kind::Redis(r) => r.begin(key, fp).await.map_err(|e| self.on_error.fail(&e)),
        }
    }

    /// Store the response of the request holding `token` for `ttl`;
    /// `on_stored` runs once it is (not when the key is no longer this
    /// request's, nor when it does not fit: the key is then released).
    pub fn complete(
        &self,
        key: &str,
        fp: [u8; 32],
        token: u64,
        resp: Stored,
        ttl: Duration,
        on_stored: impl FnOnce() + Send + 'static,
    ) {
        match &self.kind {
            Kind::Local(l) => {
                if l.complete(key, token, resp, ttl) {
                    on_stored();
                }
            }
            Kind::Redis(r) => {
                let (r, key, on_error) = (r.clone(), key.to_string(), self.on_error.clone());
                run_to_end(async move {
                    match r.complete(&key, fp, token, &resp, ttl).await {
                        Ok(true) => on_stored(),
                        Ok(false) => {}
                        Err(e) => on_error.report(&e),
                    }
                });
            }
        }
    }

    /// Drop the in-flight marker of `token` (the response is not stored).
    pub fn abort(&self, key: &str, fp: [u8; 32], token: u64) {
        match &self.kind {
            Kind::Local(l) => l.abort(key, token),
            Kind::Redis(r) => {
                let (r, key, on_error) = (r.clone(), key.to_string(), self.on_error.clone());
                run_to_end(async move {
                    if let Err(e) = r.abort(&key, fp, token).await {
                        on_error.report(&e);
                    }
                });
            }
        }
    }

    /// The request holding `token` ended without a known outcome: keep its
    /// key locked for `lock`.
    pub fn lock_unknown(&self, key: &str, fp: [u8; 32], token: u64, lock: Duration) {
        match &self.kind {
            Kind::Local(l) => l.lock_unknown(key, token, lock),
            Kind::Redis(r) => {
                let (r, key, on_error) = (r.clone(), key.to_string(), self.on_error.clone());
                run_to_end(async move {
                    if let Err(e) = r.lock_unknown(&key, fp, token, lock).await {
                        on_error.report(&e);
                    }
                });
            }
        }
    }

    /// Forget expired local records (Redis expires its own).
    pub fn expire(&self) {
        if let Kind::Local(l) = &self.kind {
            l.expire();
        }
    }
}

/// Run `fut` to its end before returning, on a multi-threaded runtime (the
/// proxy's body filters are synchronous, and a record should be in Redis
/// before the response's last byte leaves). On a single-threaded runtime
/// (`work_stealing` off) blocking would stall every connection of the
/// worker, the Redis connection's own among them: it is spawned.
fn run_to_end<F>(fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(fut))
        }
        Ok(h) => {
            // Held up by a graceful shutdown like the request it finishes.
            let in_flight = crate::signals::InFlight::enter();
            h.spawn(async move {
                fut.await;
                drop(in_flight);
            });
        }
        Err(_) => {}
    }
}
