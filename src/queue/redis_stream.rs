//! `kind = "redis_stream"`: one `XADD` per message on one multiplexed
//! connection per queue (a `ConnectionManager`, reconnecting by itself),
//! made on the first publish like the `[redis]` backends of
//! [`crate::store::redis`], with the same connection settings.

use super::{rfc3339, Message, PublishError, QueueConfig};
use redis::aio::ConnectionManager;
use std::time::Duration;

pub(super) struct RedisStream {
    client: redis::Client,
    /// Made by the first publish (see `store::redis`'s connection).
    conn: tokio::sync::OnceCell<ConnectionManager>,
    timeout: Duration,
}

impl RedisStream {
    /// Parse the URL; no connection is made here.
    pub(super) fn new(cfg: &QueueConfig) -> Result<RedisStream, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        if !(cfg.url.starts_with("redis://") || cfg.url.starts_with("rediss://")) {
            errors.push((
                "url",
                format!(
                    "{:?} is not a redis:// or rediss:// URL",
                    crate::store::redis::redact(&cfg.url)
                ),
            ));
        }
        if cfg.stream.is_empty() {
            errors.push(("stream", "must not be empty".into()));
        }
        let client = match redis::Client::open(cfg.url.as_str()) {
            Ok(c) => Some(c),
            Err(e) if errors.is_empty() => {
                errors.push(("url", e.to_string()));
                None
            }
            Err(_) => None,
        };
        match client {
            Some(client) if errors.is_empty() => Ok(RedisStream {
                client,
                conn: tokio::sync::OnceCell::new(),
                timeout: cfg.timeout.0,
            }),
            _ => Err(errors),
        }
    }

    async fn conn(&self) -> Result<ConnectionManager, PublishError> {
        self.conn
            .get_or_try_init(|| async {
                // No retry with backoff inside the client (the `[redis]`
                // backends retry once, after up to a second): a refused
                // connection fails this publish at once, as `error`, and the
                // next publish tries again.
                let cfg =
                    crate::store::redis::manager_config(self.timeout).set_number_of_retries(0);
                self.client
                    .get_connection_manager_with_config(cfg)
                    .await
                    .map_err(error)
            })
            .await
            .cloned()
    }

    /// Send the `XADD`; its reply is the stream entry id.
    pub(super) async fn publish(&self, cmd: redis::Cmd) -> Result<String, PublishError> {
        let mut conn = self.conn().await?;
        cmd.query_async::<String>(&mut conn).await.map_err(error)
    }
}

fn error(e: redis::RedisError) -> PublishError {
    if e.is_timeout() {
        PublishError::Timeout
    } else {
        PublishError::Error(format!("redis: {e}"))
    }
}

/// `XADD <stream> [MAXLEN ~ n] * id … received_at … route … consumer …
/// method … path … query … headers <JSON> body <raw bytes>`.
pub(super) fn command(
    stream: &str,
    max_len: Option<u64>,
    copied: &[http::HeaderName],
    msg: &Message<'_>,
) -> redis::Cmd {
    let mut c = redis::cmd("XADD");
    c.arg(stream);
    if let Some(n) = max_len {
        c.arg("MAXLEN").arg("~").arg(n);
    }
    c.arg("*")
        .arg("id")
        .arg(msg.id)
        .arg("received_at")
        .arg(rfc3339(msg.received_at))
        .arg("route")
        .arg(msg.route)
        .arg("consumer")
        .arg(msg.consumer)
        .arg("method")
        .arg(msg.method)
        .arg("path")
        .arg(msg.path)
        .arg("query")
        .arg(msg.query)
        .arg("headers")
        .arg(super::headers_json(copied, msg.headers))
        .arg("body")
        .arg(&msg.body[..]);
    c
}
