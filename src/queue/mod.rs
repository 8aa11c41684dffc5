//! Broker publishers for routes with `queue = "NAME"` (SPEC §12): the
//! gateway answers `202` only once the broker has acknowledged the message.
//!
//! * `redis_stream`: one `XADD` per message on one multiplexed connection per
//!   queue (a `ConnectionManager`, which reconnects by itself).
//! * `nats`: a JetStream publish, awaiting the `PubAck`; `Nats-Msg-Id` lets
//!   the broker drop duplicates.
//!
//! [`Queue::build`] validates and never touches the network: the connection
//! is made on the first publish (within its deadline), and a failed attempt
//! is retried by the next publish, so a broker that is down at startup does
//! not fail the config. Every publish has one deadline (`timeout`) covering
//! connecting, sending and the acknowledgement, and at most `max_in_flight`
//! publishes wait at once: one more is refused at once ([`PublishError::Overloaded`]).
//!
//! The message encoding ([`Queue::redis_command`], [`Queue::nats_headers`])
//! is separate from the I/O so that it can be tested and benchmarked without
//! a broker.

mod nats;
mod redis_stream;
#[cfg(test)]
mod tests;

use crate::config::Dur;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

fn default_timeout() -> Dur {
    Dur::secs(2)
}

fn default_max_in_flight() -> usize {
    1000
}

/// The largest `max_in_flight` accepted: a bound on what waiting publishes
/// can hold.
pub const MAX_IN_FLIGHT_LIMIT: usize = 1_000_000;

#[derive(Debug, Clone, Copy, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    RedisStream,
    Nats,
}

/// A `[queues.NAME]` table.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub kind: QueueKind,
    /// `redis://…` / `rediss://…`; `nats://…` / `tls://…`.
    pub url: String,
    /// redis: the stream key; nats: the subject published on.
    pub stream: String,
    /// redis only: `XADD MAXLEN ~ n`.
    #[serde(default)]
    pub max_len: Option<u64>,
    /// The publish deadline, connecting and the acknowledgement included.
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::config::units::checked::positive"
    )]
    pub timeout: Dur,
    /// Publishes waiting for an acknowledgement; more are refused at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Request headers copied into the message.
    #[serde(default)]
    pub headers: Vec<String>,
}

/// What a queue route publishes.
pub struct Message<'a> {
    /// The request id.
    pub id: &'a str,
    pub received_at: SystemTime,
    pub route: &'a str,
    /// `""` when none.
    pub consumer: &'a str,
    pub method: &'a str,
    /// Normalised.
    pub path: &'a str,
    /// `""` when none.
    pub query: &'a str,
    /// The request's headers; the queue copies those named in its `headers`.
    pub headers: &'a http::HeaderMap,
    /// The raw body, sent byte for byte.
    pub body: &'a bytes::Bytes,
    /// `Nats-Msg-Id`: the webhook id when the route verified one, else the
    /// request id.
    pub dedup_id: &'a str,
}

/// Why a publish was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// `max_in_flight` publishes are already waiting.
    Overloaded,
    /// No acknowledgement within `timeout` (connecting included).
    Timeout,
    /// The broker is unreachable or refused the message.
    Error(String),
    /// The message is larger than the broker takes (NATS `max_payload`):
    /// sending it again cannot help (counted as `error`).
    TooLarge,
}

/// The `result` label of `tollgate_queue_publish_total`.
pub mod result {
    pub const OK: &str = "ok";
    pub const ERROR: &str = "error";
    pub const TIMEOUT: &str = "timeout";
    pub const OVERLOADED: &str = "overloaded";
}

/// Every `result` label value of `tollgate_queue_publish_total`, for priming
/// the series (SPEC §11).
pub const RESULTS: [&str; 4] = [
    result::OK,
    result::ERROR,
    result::TIMEOUT,
    result::OVERLOADED,
];

impl PublishError {
    /// The `result` label of `tollgate_queue_publish_total`.
    pub fn result_label(&self) -> &'static str {
        match self {
            PublishError::Overloaded => result::OVERLOADED,
            PublishError::Timeout => result::TIMEOUT,
            PublishError::Error(_) | PublishError::TooLarge => result::ERROR,
        }
    }
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Overloaded => f.write_str("max_in_flight publishes already waiting"),
            PublishError::Timeout => f.write_str("no acknowledgement within the timeout"),
            PublishError::Error(e) => f.write_str(e),
            PublishError::TooLarge => {
                f.write_str("the message is larger than the broker accepts (max_payload)")
            }
        }
    }
}

enum Backend {
    Redis(redis_stream::RedisStream),
    Nats(nats::Nats),
}

/// One `[queues.NAME]` table, built: its connection (made on first use) and
/// the in-flight bound.
pub struct Queue {
    name: Arc<str>,
    /// `queue:<name>`, the access log's `upstream` for its requests.
    target: Arc<str>,
    config: QueueConfig,
    /// The copied header names, lowercase, in config order.
    headers: Vec<http::HeaderName>,
    /// The same with their NATS form.
    nats_headers: Vec<(http::HeaderName, async_nats::HeaderName)>,
    backend: Backend,
    in_flight: tokio::sync::Semaphore,
    /// Failures logged per kind (overloaded, timeout, error): one kind never
    /// hides another.
    log: [crate::util::LogGate; 3],
}

/// A slot of `max_in_flight`, taken before the body is read
/// ([`Queue::reserve`]), so that a stalled broker refuses new requests
/// before they upload a body.
pub struct Slot<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl std::fmt::Debug for Queue {
    /// Name, kind, stream and the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name)
            .field("kind", &self.config.kind)
            .field("url", &crate::store::redis::redact(&self.config.url))
            .field("stream", &self.config.stream)
            .finish_non_exhaustive()
    }
}

/// Failures are logged at most once per this interval per queue.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Queue {
    /// Validate and build; never touches the network (the connection is made
    /// on the first publish and remade by itself). Errors are `(key, message)`
    /// pairs, the key being the field of the table.
    pub fn build(name: &str, cfg: &QueueConfig) -> Result<Queue, Vec<(&'static str, String)>> {
        let mut errors: Vec<(&'static str, String)> = Vec::new();
        if cfg.timeout.0.is_zero() {
            errors.push(("timeout", "must be greater than zero".into()));
        }
        if cfg.max_in_flight == 0 {
            errors.push(("max_in_flight", "must be at least 1".into()));
        } else if cfg.max_in_flight > MAX_IN_FLIGHT_LIMIT {
            errors.push((
                "max_in_flight",
                format!("must be at most {MAX_IN_FLIGHT_LIMIT}"),
            ));
        }
        let mut headers: Vec<http::HeaderName> = Vec::with_capacity(cfg.headers.len());
        let mut nats_headers = Vec::with_capacity(cfg.headers.len());
        for h in &cfg.headers {
            match http::HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) if headers.contains(&n) => {
                    errors.push(("headers", format!("{h:?} is listed twice")))
                }
                Ok(n) => {
                    if cfg.kind == QueueKind::Nats {
                        if let Some(reason) = nats::reserved_header(n.as_str()) {
                            errors.push(("headers", format!("{h:?}: {reason}")));
                        }
                    }
                    // A token, which `http` checked, is a valid NATS header name.
                    match n.as_str().parse::<async_nats::HeaderName>() {
                        Ok(nn) => nats_headers.push((n.clone(), nn)),
                        Err(_) => {
                            errors.push(("headers", format!("{h:?} is not a valid header name")))
                        }
                    }
                    headers.push(n)
                }
                Err(_) => errors.push(("headers", format!("{h:?} is not a valid header name"))),
            }
        }
        let backend = match cfg.kind {
            QueueKind::RedisStream => {
                if cfg.max_len == Some(0) {
                    errors.push(("max_len", "must be at least 1".into()));
                }
                match redis_stream::RedisStream::new(cfg) {
                    Ok(b) => Some(Backend::Redis(b)),
                    Err(e) => {
                        errors.extend(e);
                        None
                    }
                }
            }
            QueueKind::Nats => {
                if cfg.max_len.is_some() {
                    errors.push((
                        "max_len",
                        "only for kind = \"redis_stream\" (bound a JetStream stream in its own config)"
                            .into(),
                    ));
                }
                match nats::Nats::new(cfg) {
                    Ok(b) => Some(Backend::Nats(b)),
                    Err(e) => {
                        errors.extend(e);
                        None
                    }
                }
            }
        };
        match backend {
            Some(backend) if errors.is_empty() => Ok(Queue {
                name: Arc::from(name),
                target: Arc::from(format!("queue:{name}")),
                config: cfg.clone(),
                headers,
                nats_headers,
                backend,
                in_flight: tokio::sync::Semaphore::new(cfg.max_in_flight),
                log: Default::default(),
            }),
            _ => Err(errors),
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared (a span's attribute), without a copy per request.
    pub fn name_shared(&self) -> Arc<str> {
        self.name.clone()
    }

    /// `queue:<name>`, shared: what the access log names as the target.
    pub fn target(&self) -> Arc<str> {
        self.target.clone()
    }

    /// Publish and wait for the broker's acknowledgement, within `timeout`;
    /// at most `max_in_flight` at once (one more: [`PublishError::Overloaded`]
    /// at once). `Ok`: the message id (redis: the stream entry id; nats:
    /// `<stream>:<sequence>` from the JetStream ack). Every call is counted
    /// in `tollgate_queue_publish_total{queue, result}`; those that got a
    /// slot are timed in `tollgate_queue_publish_duration_seconds{queue}`.
    pub async fn publish(&self, msg: &Message<'_>) -> Result<String, PublishError> {
        let slot = self.reserve()?;
        self.publish_reserved(slot, msg).await
    }

    /// A slot of `max_in_flight`, or [`PublishError::Overloaded`] (counted
    /// and logged) when all are taken.
    pub fn reserve(&self) -> Result<Slot<'_>, PublishError> {
        match self.in_flight.try_acquire() {
            Ok(p) => Ok(Slot { _permit: p }),
            Err(_) => {
                crate::metrics::METRICS
                    .queue_publish
                    .with_label_values(&[&self.name, result::OVERLOADED])
                    .inc();
                self.log_failure(&PublishError::Overloaded);
                Err(PublishError::Overloaded)
            }
        }
    }

    /// [`publish`](Self::publish) in a slot taken by [`reserve`](Self::reserve).
    pub async fn publish_reserved(
        &self,
        slot: Slot<'_>,
        msg: &Message<'_>,
    ) -> Result<String, PublishError> {
        let _slot = slot;
        let m = &crate::metrics::METRICS;
        let start = Instant::now();
        let call = async {
            match &self.backend {
                Backend::Redis(r) => r.publish(self.redis_command(msg)).await,
                Backend::Nats(n) => n.publish(self.nats_headers(msg), msg.body.clone()).await,
            }
        };
        let r = match tokio::time::timeout(self.config.timeout.0, call).await {
            Ok(r) => r,
            Err(_) => Err(PublishError::Timeout),
        };
        m.queue_publish_duration
            .with_label_values(&[&self.name])
            .observe(start.elapsed().as_secs_f64());
        let label = match &r {
            Ok(_) => result::OK,
            Err(e) => e.result_label(),
        };
        m.queue_publish
            .with_label_values(&[&self.name, label])
            .inc();
        if let Err(e) = &r {
            self.log_failure(e);
        }
        r
    }

    /// Logs a failed publish, at most once per 10 s for this queue and kind
    /// of failure (the others are only counted). Never the body or a header
    /// value.
    fn log_failure(&self, e: &PublishError) {
        let kind = match e {
            PublishError::Overloaded => 0,
            PublishError::Timeout => 1,
            PublishError::Error(_) | PublishError::TooLarge => 2,
        };
        if self.log[kind].allow(LOG_EVERY) {
            tracing::warn!(
                queue = %self.name,
                result = e.result_label(),
                error = %e,
                "queue publish failed (further failures in the next 10 s are only counted)"
            );
        }
    }

    /// The `XADD` this queue sends for `msg` (kind `redis_stream`; for the
    /// other kinds too, unused there).
    pub fn redis_command(&self, msg: &Message<'_>) -> redis::Cmd {
        redis_stream::command(&self.config.stream, self.config.max_len, &self.headers, msg)
    }

    /// The NATS headers this queue sends with `msg` (kind `nats`; for the
    /// other kinds too, unused there). The body is the payload, as is.
    pub fn nats_headers(&self, msg: &Message<'_>) -> async_nats::HeaderMap {
        nats::headers(&self.nats_headers, msg)
    }
}

/// `received_at` as RFC 3339 in UTC, to the microsecond:
/// `2026-12-05T23:05:20.123456Z`.
pub fn rfc3339(t: SystemTime) -> String {
    use time::macros::format_description;
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let at = time::Duration::try_from(d)
        .ok()
        .and_then(|d| time::OffsetDateTime::UNIX_EPOCH.checked_add(d))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    ))
    .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".to_string())
}

/// The copied headers as a JSON object: lowercase name -> value, the values
/// of a repeated header joined with `", "`; headers the request lacks are
/// left out. A value that is not UTF-8 has its invalid bytes replaced.
pub fn headers_json(names: &[http::HeaderName], headers: &http::HeaderMap) -> String {
    let mut out = String::with_capacity(2 + names.len() * 32);
    out.push('{');
    let mut first = true;
    for name in names {
        let Some(joined) = joined_value(headers, name) else {
            continue;
        };
        if !first {
            out.push(',');
        }
        first = false;
        push_json_str(&mut out, name.as_str());
        out.push(':');
        push_json_str(&mut out, &joined);
    }
    out.push('}');
    out
}

/// The value of a copied header: the values of a repeated header joined with
/// `", "`, invalid UTF-8 bytes replaced; `None` when the request lacks it.
fn joined_value(headers: &http::HeaderMap, name: &http::HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let mut joined = String::from_utf8_lossy(values.next()?.as_bytes()).into_owned();
    for v in values {
        joined.push_str(", ");
        joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(joined)
}

fn push_json_str(out: &mut String, s: &str) {
    // Serialising a &str into JSON cannot fail.
    if let Ok(q) = serde_json::to_string(s) {
        out.push_str(&q);
    }
}
