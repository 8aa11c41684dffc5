//! `kind = "nats"`: a JetStream publish on the subject, the body as payload
//! and the fields as NATS headers, awaiting the `PubAck`. The client is
//! connected on the first publish and reconnects by itself afterwards.

use super::{rfc3339, Message, PublishError, QueueConfig};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

pub const ID: &str = "Tollgate-Id";
pub const RECEIVED_AT: &str = "Tollgate-Received-At";
pub const ROUTE: &str = "Tollgate-Route";
pub const CONSUMER: &str = "Tollgate-Consumer";
pub const METHOD: &str = "Tollgate-Method";
pub const PATH: &str = "Tollgate-Path";
pub const QUERY: &str = "Tollgate-Query";
pub const MSG_ID: &str = "Nats-Msg-Id";

/// Why a copied header name cannot be used with NATS, if it cannot: it would
/// collide with the message's own fields or steer the broker.
pub(super) fn reserved_header(lowercase: &str) -> Option<&'static str> {
    if lowercase.starts_with("tollgate-") {
        Some("Tollgate-* headers carry the message fields")
    } else if lowercase.starts_with("nats-") {
        Some("Nats-* headers steer the broker and cannot be copied from a request")
    } else {
        None
    }
}

pub(super) struct Nats {
    url: String,
    subject: async_nats::Subject,
    timeout: Duration,
    max_in_flight: usize,
    /// Made by the first publish (see `store::redis`'s connection).
    ctx: tokio::sync::OnceCell<async_nats::jetstream::Context>,
}

impl Nats {
    /// Check the URL and subject; no connection is made here.
    pub(super) fn new(cfg: &QueueConfig) -> Result<Nats, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        let redacted = crate::store::redis::redact(&cfg.url);
        if !(cfg.url.starts_with("nats://") || cfg.url.starts_with("tls://")) {
            errors.push((
                "url",
                format!("{redacted:?} is not a nats:// or tls:// URL"),
            ));
        } else if let Err(e) = cfg.url.parse::<async_nats::ServerAddr>() {
            errors.push(("url", format!("{redacted:?}: {e}")));
        }
        if let Err(e) = check_subject(&cfg.stream) {
            errors.push(("stream", e));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Nats {
            url: cfg.url.clone(),
            subject: async_nats::Subject::from(cfg.stream.as_str()),
            timeout: cfg.timeout.0,
            max_in_flight: cfg.max_in_flight,
            ctx: tokio::sync::OnceCell::new(),
        })
    }

    async fn context(&self) -> Result<&async_nats::jetstream::Context, PublishError> {
        self.ctx
            .get_or_try_init(|| async {
                let client = async_nats::ConnectOptions::new()
                    .name("tollgate")
                    // Publishes wait in the client's channel while it
                    // reconnects: few of them (`publish` refuses at once when
                    // disconnected).
                    .client_capacity(self.max_in_flight.clamp(16, 2048))
                    .connection_timeout(self.timeout)
                    .request_timeout(Some(self.timeout))
                    .connect(self.url.as_str())
                    .await
                    .map_err(|e| PublishError::Error(format!("nats: connecting: {e}")))?;
                // The context's own bound on unacknowledged publishes only
                // matters for those given up on (their ack is awaited in the
                // background up to `timeout`): leave room for them besides
                // `max_in_flight`.
                Ok(async_nats::jetstream::context::ContextBuilder::new()
                    .timeout(self.timeout)
                    .ack_timeout(self.timeout)
                    .max_ack_inflight(self.max_in_flight.saturating_mul(2))
                    .backpressure_on_inflight(true)
                    .build(client))
            })
            .await
    }

    /// Publish and await the `PubAck`: `<stream>:<sequence>`.
    pub(super) async fn publish(
        &self,
        headers: HeaderMap,
        body: bytes::Bytes,
    ) -> Result<String, PublishError> {
        let ctx = self.context().await?;
        // While the client reconnects, a publish would wait in its channel,
        // holding its body, and go out after the sender was answered 503:
        // refused at once instead.
        if ctx.client().connection_state() != async_nats::connection::State::Connected {
            return Err(PublishError::Error(
                "nats: not connected (reconnecting)".into(),
            ));
        }
        let ack = ctx
            .publish_with_headers(self.subject.clone(), headers, body)
            .await
            .map_err(|e| self.error(e))?
            .await
            .map_err(|e| self.error(e))?;
        Ok(format!("{}:{}", ack.stream, ack.sequence))
    }

    fn error(&self, e: async_nats::jetstream::context::PublishError) -> PublishError {
        match e.kind() {
            PublishErrorKind::TimedOut => PublishError::Timeout,
            PublishErrorKind::MaxPayloadExceeded => PublishError::TooLarge,
            PublishErrorKind::StreamNotFound => PublishError::Error(format!(
                "no JetStream stream captures subject {:?}",
                self.subject.as_str()
            )),
            _ => PublishError::Error(format!("nats: {e}")),
        }
    }
}

/// A subject one can publish on: dot-separated non-empty tokens of printable
/// characters, no wildcard.
fn check_subject(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    for token in s.split('.') {
        if token.is_empty() {
            return Err(format!("{s:?} has an empty token"));
        }
        if token == "*" || token == ">" {
            return Err(format!("{s:?}: cannot publish on a wildcard subject"));
        }
        if token
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!("{s:?} holds whitespace or control characters"));
        }
    }
    Ok(())
}

fn value(s: &str) -> HeaderValue {
    // Request header values hold no CR or LF; a lossy conversion would
    // replace them anyway.
    HeaderValue::from_lossy(s)
}

/// The NATS headers of a message: the fields, the copied request headers
/// (the values of a repeated header joined with `", "`, as in the
/// `headers` JSON of `redis_stream`; not as repeated NATS headers, which not
/// every reader keeps) and `Nats-Msg-Id`.
/// `copied` pairs each request header name with its NATS form.
pub(super) fn headers(copied: &[(http::HeaderName, HeaderName)], msg: &Message<'_>) -> HeaderMap {
    // The constant names are valid (`insert` would panic on an invalid one).
    let mut h = HeaderMap::new();
    h.insert(ID, value(msg.id));
    h.insert(RECEIVED_AT, value(&rfc3339(msg.received_at)));
    h.insert(ROUTE, value(msg.route));
    h.insert(CONSUMER, value(msg.consumer));
    h.insert(METHOD, value(msg.method));
    h.insert(PATH, value(msg.path));
    h.insert(QUERY, value(msg.query));
    for (name, n) in copied {
        if let Some(joined) = super::joined_value(msg.headers, name) {
            h.insert(n.clone(), value(&joined));
        }
    }
    h.insert(MSG_ID, value(msg.dedup_id));
    h
}
