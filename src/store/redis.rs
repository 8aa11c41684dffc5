//! Shared state across gateway instances through Redis (SPEC §9), with the
//! `redis` crate: one multiplexed connection (a `ConnectionManager`, which
//! reconnects by itself) or a Redis Cluster connection, created on first use
//! so that a Redis that is down at start-up delays nothing. Every call has a
//! deadline (`[redis] timeout`). The operations are Lua scripts: one round
//! trip, atomic, no read-modify-write race between gateways.

use crate::config::RedisConfig;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

enum Client {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// A failed Redis call (unreachable, timed out, or an error reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError(pub String);

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Redis {
    client: Client,
    /// Made by the first call (one attempt at a time: the others wait for
    /// it within their deadline; a failed attempt leaves it for the next call).
    conn: tokio::sync::OnceCell<Conn>,
    timeout: Duration,
    /// The config this was built from: a reload keeps the connection when equal.
    pub fingerprint: String,
}

impl Redis {
    /// Parse the URLs; no connection is made here.
    pub fn new(cfg: &RedisConfig) -> Result<Redis, String> {
        let urls = cfg.url.to_vec();
        if urls.is_empty() {
            return Err("url: at least one URL is needed".into());
        }
        let cluster = cfg.cluster.unwrap_or(urls.len() > 1);
        if !cluster && urls.len() > 1 {
            return Err("url: several URLs need cluster = true".into());
        }
        for u in &urls {
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                return Err(format!(
                    "url: {:?} is not a redis:// or rediss:// URL",
                    redact(u)
                ));
            }
        }
        let client = if cluster {
            Client::Cluster(
                redis::cluster::ClusterClient::builder(urls.iter().map(String::as_str))
                    .connection_timeout(cfg.timeout.0)
                    .response_timeout(cfg.timeout.0)
                    .build()
                    .map_err(|e| format!("url: {e}"))?,
            )
        } else {
            Client::Single(redis::Client::open(urls[0].as_str()).map_err(|e| format!("url: {e}"))?)
        };
        if cfg.timeout.0.is_zero() {
            return Err("timeout: must be greater than zero".into());
        }
        Ok(Redis {
            client,
            conn: tokio::sync::OnceCell::new(),
            timeout: cfg.timeout.0,
            fingerprint: format!("{cfg:?}"),
        })
    }

    async fn conn(&self) -> Result<Conn, BackendError> {
        self.conn
            .get_or_try_init(|| async {
                Ok(match &self.client {
                    Client::Single(c) => {
                        let cfg = manager_config(self.timeout);
                        Conn::Single(
                            c.get_connection_manager_with_config(cfg)
                                .await
                                .map_err(|e| BackendError(e.to_string()))?,
                        )
                    }
                    Client::Cluster(c) => Conn::Cluster(
                        c.get_async_connection()
                            .await
                            .map_err(|e| BackendError(e.to_string()))?,
                    ),
                })
            })
            .await
            .cloned()
    }

    /// Run a script with a deadline.
    pub async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, BackendError> {
        let call = async {
            let conn = self.conn().await?;
            let mut inv = script.prepare_invoke();
            for k in keys {
                inv.key(*k);
            }
            for a in args {
                inv.arg(*a);
            }
            let r = match conn {
                Conn::Single(mut c) => inv.invoke_async(&mut c).await,
                Conn::Cluster(mut c) => inv.invoke_async(&mut c).await,
            };
            r.map_err(|e| BackendError(e.to_string()))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(BackendError(format!(
                "redis call timed out after {:?}",
                self.timeout
            ))),
        }
    }
}

/// The settings of a `ConnectionManager` whose calls have `timeout` as
/// deadline (also used by the `redis_stream` queues).
pub fn manager_config(timeout: Duration) -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        .set_number_of_retries(1)
        .set_max_delay(1000)
}

/// The connection for a `[redis]` table: one per distinct table in the
/// process, shared by every plugin and kept across reloads while it is used.
pub fn shared(cfg: &RedisConfig) -> Result<Arc<Redis>, String> {
    static ALL: once_cell::sync::Lazy<parking_lot::Mutex<Vec<std::sync::Weak<Redis>>>> =
        once_cell::sync::Lazy::new(Default::default);
    let fp = format!("{cfg:?}");
    let mut all = ALL.lock();
    all.retain(|w| w.strong_count() > 0);
    if let Some(r) = all
        .iter()
        .filter_map(std::sync::Weak::upgrade)
        .find(|r| r.fingerprint == fp)
    {
        return Ok(r);
    }
    let r = Arc::new(Redis::new(cfg)?);
    all.push(Arc::downgrade(&r));
    Ok(r)
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// The `backend` label of `tollgate_backend_errors_total` for Redis.
pub const BACKEND_LABEL: &str = "redis";

/// Counts backend failures and logs them at most once per 10 s per plugin, so
/// a Redis outage does not flood the log.
pub struct ErrorReporter {
    plugin: String,
    log: crate::util::LogGate,
}

impl ErrorReporter {
    pub fn new(plugin: &str) -> Self {
        ErrorReporter {
            plugin: plugin.to_string(),
            log: crate::util::LogGate::new(),
        }
    }

    pub fn report(&self, e: &BackendError) {
        crate::metrics::METRICS
            .backend_errors
            .with_label_values(&[&self.plugin, BACKEND_LABEL])
            .inc();
        if self.log.allow(Duration::from_secs(10)) {
            tracing::warn!(plugin = %self.plugin, error = %e, "redis backend failed (further errors in the next 10 s are only counted)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:hunter2@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
