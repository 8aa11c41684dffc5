//! The plugin pipeline. A plugin is a value built once per `[plugins.NAME]` when
//! a config is compiled; each route holds its chain sorted by [`Phase`], so the
//! order is fixed by type whatever order the config lists them in (SPEC §3).
//!
//! An expected refusal (401, 429, 503 from an open breaker) is a [`Flow::Respond`]
//! value; an `Err` means something broke and becomes a 5xx.

pub mod api_key;
pub mod auth;
pub mod cache;
pub mod circuit_breaker;
pub mod cors;
pub mod forward_auth;
pub mod headers;
pub mod idempotency;
pub mod ip_filter;
pub mod jwt;
pub mod outbound;
pub mod rate_limit;
pub mod request_id;
pub mod webhook;

use crate::config::{Config, PluginConfig};
use crate::proxy::RequestCtx;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use std::sync::Arc;

/// When a plugin runs relative to the others (SPEC §3's fixed order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    RequestId,
    IpFilter,
    Cors,
    Auth,
    RateLimit,
    Idempotency,
    Cache,
    CircuitBreaker,
    /// `headers` rewrites last, just before the upstream.
    Headers,
}

/// A response a plugin makes instead of forwarding the request.
pub enum Reply {
    /// A problem+json error (RFC 9457) with extra headers.
    Problem {
        status: u16,
        detail: String,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
    },
    /// A complete response of the plugin's own (preflight, cache hit, replay).
    Raw {
        header: Box<ResponseHeader>,
        body: Bytes,
    },
}

pub enum Flow {
    Continue,
    Respond(Reply),
}

impl Flow {
    pub fn problem(status: u16, detail: impl Into<String>) -> Flow {
        Flow::Respond(Reply::Problem {
            status,
            detail: detail.into(),
            headers: Vec::new(),
        })
    }
}

/// One phase hook per method; every default does nothing.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    fn phase(&self) -> Phase;

    /// Runs in `request_filter`, in phase order, after routing. `Respond` stops
    /// the chain and answers the client; the upstream is not contacted.
    async fn request(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora::Result<Flow> {
        Ok(Flow::Continue)
    }

    /// Runs on the request header about to go upstream (after the proxy has set
    /// the forwarding headers and `ctx.upstream_headers`).
    fn upstream_request(&self, _req: &mut RequestHeader, _ctx: &RequestCtx) -> pingora::Result<()> {
        Ok(())
    }

    /// Runs on the upstream's response header (after hop-by-hop headers are
    /// removed, before the response hooks); not for gateway-written responses.
    fn upstream_response(&self, _resp: &ResponseHeader, _ctx: &mut RequestCtx) {}

    /// Runs on each piece of the upstream's response body, as it streams
    /// (`end` on the last); the body is not buffered by the proxy.
    fn upstream_response_body(&self, _body: &Option<Bytes>, _end: bool, _ctx: &mut RequestCtx) {}

    /// Runs on every response to the client: proxied, cached, or written by the
    /// gateway itself (errors included).
    fn response(&self, _resp: &mut ResponseHeader, _ctx: &RequestCtx) {}

    /// Runs at the end of every request that reached this plugin's route: just
    /// before the gateway writes an answer of its own (so that what it releases
    /// is free before the client can retry), and again in the logging phase.
    /// Release per-request resources and record outcomes; must be idempotent.
    fn finish(&self, _ctx: &mut RequestCtx) {}

    /// For `/upstreams` and `tollgate_circuit_state`: 0 closed, 1 half-open,
    /// 2 open, if this plugin keeps a breaker for `upstream`.
    fn circuit_state(&self, _upstream: &str) -> Option<i64> {
        None
    }

    /// Called about once a second by the maintenance service, for every plugin
    /// of the live snapshot (background refreshes such as JWKS).
    async fn tick(&self) {}

    /// The `request_id` plugin, which the proxy also runs before routing.
    fn as_request_id(&self) -> Option<&request_id::RequestId> {
        None
    }

    /// The `cache` plugin, whose storage and policy the proxy's cache phases use.
    fn as_cache(&self) -> Option<&cache::Cache> {
        None
    }
}

/// A compiled plugin with the name it was declared under.
#[derive(Clone)]
pub struct Instance {
    pub name: Arc<str>,
    pub plugin: Arc<dyn Plugin>,
    pub phase: Phase,
    /// Identity of the definition: a reload keeps the instance (and its state)
    /// when this is unchanged.
    pub fingerprint: String,
}

/// An error found while building a plugin: `key` is relative to its table
/// (`"keys_file"`, `"secrets[1]"`), empty for the table itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    pub key: String,
    pub message: String,
}

pub type BuildResult<T> = Result<T, Vec<BuildError>>;

pub fn build_error(key: impl Into<String>, message: impl Into<String>) -> Vec<BuildError> {
    vec![BuildError {
        key: key.into(),
        message: message.into(),
    }]
}

/// What a plugin constructor may read besides its own table.
pub struct BuildCtx<'a> {
    pub name: &'a str,
    pub config: &'a Config,
}

impl BuildCtx<'_> {
    /// The shared Redis connection of `[redis]`, for `backend = "redis"`.
    pub fn redis(&self, key: &str) -> BuildResult<std::sync::Arc<crate::cluster::Redis>> {
        let Some(cfg) = &self.config.redis else {
            return Err(build_error(
                key,
                "backend = \"redis\" needs a [redis] table with its url",
            ));
        };
        crate::cluster::shared(cfg).map_err(|e| build_error(key, format!("[redis] {e}")))
    }

    /// A path from the config, resolved against the config file's directory.
    pub fn path(&self, p: &str) -> std::path::PathBuf {
        self.config.resolve(p)
    }
}

fn one<T: Plugin>(r: Result<T, String>) -> BuildResult<Arc<dyn Plugin>> {
    r.map(|p| Arc::new(p) as Arc<dyn Plugin>)
        .map_err(|m| build_error("", m))
}

fn many<T: Plugin>(r: BuildResult<T>) -> BuildResult<Arc<dyn Plugin>> {
    r.map(|p| Arc::new(p) as Arc<dyn Plugin>)
}

/// Build the runtime plugin for one validated `[plugins.NAME]` table.
pub fn build(name: &str, cfg: &PluginConfig, config: &Config) -> BuildResult<Instance> {
    let bx = BuildCtx { name, config };
    let plugin: Arc<dyn Plugin> = match cfg {
        PluginConfig::RequestId(c) => one(request_id::RequestId::new(c))?,
        PluginConfig::Headers(c) => one(headers::Headers::new(c))?,
        PluginConfig::IpFilter(c) => many(ip_filter::IpFilter::new(c, &bx))?,
        PluginConfig::Cors(c) => many(cors::Cors::new(c, &bx))?,
        PluginConfig::ApiKey(c) => many(api_key::ApiKey::new(c, &bx))?,
        PluginConfig::Jwt(c) => many(jwt::Jwt::new(c, &bx))?,
        PluginConfig::WebhookSignature(c) => many(webhook::WebhookSignature::new(c, &bx))?,
        PluginConfig::ForwardAuth(c) => many(forward_auth::ForwardAuth::new(c, &bx))?,
        PluginConfig::RateLimit(c) => many(rate_limit::RateLimit::new(c, &bx))?,
        PluginConfig::CircuitBreaker(c) => many(circuit_breaker::CircuitBreaker::new(c, &bx))?,
        PluginConfig::Cache(c) => many(cache::Cache::new(c, &bx))?,
        PluginConfig::Idempotency(c) => many(idempotency::Idempotency::new(c, &bx))?,
    };
    Ok(Instance {
        name: Arc::from(name),
        phase: plugin.phase(),
        plugin,
        fingerprint: fingerprint(cfg, config),
    })
}

/// A plugin's identity across reloads: its definition, plus the contents of the
/// files it reads (so an edited keys file or JWKS makes a fresh instance).
pub fn fingerprint(cfg: &PluginConfig, config: &Config) -> String {
    use sha2::{Digest, Sha256};
    let files: Vec<&String> = match cfg {
        PluginConfig::ApiKey(c) => c.keys_file.iter().collect(),
        PluginConfig::Jwt(c) => c.public_key_file.iter().chain(c.jwks_file.iter()).collect(),
        _ => Vec::new(),
    };
    let mut h = Sha256::new();
    h.update(format!("{cfg:?}"));
    let redis_backed = matches!(cfg, PluginConfig::RateLimit(c) if c.backend == crate::config::StateBackend::Redis)
        || matches!(cfg, PluginConfig::Idempotency(c) if c.backend == crate::config::StateBackend::Redis);
    if redis_backed {
        h.update(format!("{:?}", config.redis));
    }
    for f in files {
        h.update(std::fs::read(config.resolve(f)).unwrap_or_default());
    }
    hex::encode(h.finalize())
}

/// Sort a chain into phase order; within a phase, declaration order is kept.
pub fn order(chain: &mut [Instance]) {
    chain.sort_by_key(|i| i.phase);
}

/// The largest request body a plugin can read before the upstream is contacted:
/// Pingora replays what was read from its retry buffer, which holds 64 KiB.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// Why a whole request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than what can be replayed to the upstream (or `max_request_body`).
    TooLarge,
    /// Not received within the request's deadline.
    Timeout,
    /// The client went away or sent a broken body.
    Broken,
}

enum BodyRead {
    Complete(bytes::BytesMut),
    /// Over the limit; `drained` when the rest was read (and dropped) to its
    /// end, so that the connection can carry the refusal cleanly.
    TooLarge {
        drained: bool,
    },
}

/// One read of the request body. Pingora applies the session's read timeout
/// (`body_timeout`) to HTTP/1 only; an HTTP/2 stream's read is bounded here.
async fn next_chunk(
    session: &mut Session,
    body_timeout: std::time::Duration,
) -> pingora::Result<Option<bytes::Bytes>> {
    if !session.is_http2() {
        return session.read_request_body().await;
    }
    match tokio::time::timeout(body_timeout, session.read_request_body()).await {
        Ok(r) => r,
        Err(_) => pingora::Error::e_explain(
            pingora::ErrorType::ReadTimedout,
            "request body slower than body_timeout",
        ),
    }
}

async fn read_to_limit(
    session: &mut Session,
    limit: u64,
    max_total: u64,
    body_timeout: std::time::Duration,
) -> pingora::Result<BodyRead> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = next_chunk(session, body_timeout).await? {
        if (body.len() + chunk.len()) as u64 > limit {
            let mut total = (body.len() + chunk.len()) as u64;
            drop(body);
            while total <= max_total {
                match next_chunk(session, body_timeout).await {
                    Ok(Some(c)) => total += c.len() as u64,
                    Ok(None) => return Ok(BodyRead::TooLarge { drained: true }),
                    Err(_) => break,
                }
            }
            return Ok(BodyRead::TooLarge { drained: false });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(BodyRead::Complete(body))
}

/// Send `100 Continue` now, when the client asked for it and nothing was answered
/// yet: called once the plugins accepted the request head, before the body is read
/// (by a plugin, or by Pingora while proxying). Any `1xx` the upstream sends after
/// it is not relayed: the client gets one `100`.
pub async fn send_continue(session: &mut Session, ctx: &RequestCtx) {
    if !ctx.expect_continue || session.response_written().is_some() {
        return;
    }
    if session.write_continue_response().await.is_ok() {
        session.set_ignore_info_resp(true);
    }
}

/// Read the whole request body before the upstream is contacted; Pingora then
/// sends exactly these bytes upstream (from its retry buffer, on HTTP/1 and
/// HTTP/2 alike). A body larger than `min(max_request_body, MAX_BUFFERED_BODY)`
/// is refused before anything is forwarded; its rest is read and dropped (up to
/// `max_request_body`, within the request's deadline) so that the refusal
/// reaches a client that is still sending, or the connection is closed after it.
/// A client that sent `Expect: 100-continue` gets its `100 Continue` first.
pub async fn read_body(session: &mut Session, ctx: &RequestCtx) -> Result<Bytes, BodyError> {
    // A client waiting for `100 Continue` sends nothing before it: the plugins up to
    // this one accepted the head, so the body may come.
    send_continue(session, ctx).await;
    let max_total = ctx.rt.limits.max_request_body;
    let limit = MAX_BUFFERED_BODY.min(max_total);
    session.as_mut().enable_retry_buffering();
    let remaining = ctx
        .rt
        .limits
        .request_timeout
        .saturating_sub(ctx.start.elapsed());
    match tokio::time::timeout(
        remaining,
        read_to_limit(session, limit, max_total, ctx.rt.limits.body_timeout),
    )
    .await
    {
        Ok(Ok(BodyRead::Complete(b))) => {
            // The retry buffer must hold the body whole, or the upstream would
            // get a request without it.
            if session.as_ref().retry_buffer_truncated() {
                session.set_keepalive(None);
                Err(BodyError::TooLarge)
            } else {
                Ok(b.freeze())
            }
        }
        Ok(Ok(BodyRead::TooLarge { drained })) => {
            if !drained {
                session.set_keepalive(None);
            }
            Err(BodyError::TooLarge)
        }
        // A read that waited past `body_timeout` (or the rate floor) is slow, not broken.
        Ok(Err(e)) if matches!(e.etype(), pingora::ErrorType::ReadTimedout) => {
            session.set_keepalive(None);
            Err(BodyError::Timeout)
        }
        Ok(Err(_)) => {
            session.set_keepalive(None);
            Err(BodyError::Broken)
        }
        Err(_) => {
            session.set_keepalive(None);
            Err(BodyError::Timeout)
        }
    }
}
