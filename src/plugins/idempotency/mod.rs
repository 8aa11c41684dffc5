//! `idempotency`: a retried request with the same `Idempotency-Key` gets the
//! first request's final response again instead of reaching the upstream twice.
//!
//! * Keys are scoped: by consumer (and the route's auth plugins) when an auth
//!   plugin named one; by the `Authorization` credential when the route
//!   authenticates without naming a consumer; by client IP on a route with no
//!   authenticating plugin. A record's fingerprint is the SHA-256 of
//!   the method, normalised path, query and body.
//! * First request → forwarded; its final response (status, headers, body up
//!   to `max_response`) is stored for `ttl` before the client receives its
//!   last byte (SPEC §9). A 5xx is the upstream's answer and releases the key;
//!   oversized responses are passed through and release it too.
//! * A first request that may have reached the upstream but ended without a
//!   whole answer (client gone, upstream timeout or reset) leaves its key
//!   locked for `unknown_outcome_lock`: retries get 409 with `Retry-After`.
//!   While the client goes away, the gateway keeps reading the upstream's
//!   answer (HTTP/1 clients), so a retry usually finds it stored.
//! * Same key, same fingerprint, stored → replayed with `Idempotent-Replayed:
//!   true`; still in flight or locked → 409; different fingerprint → 422.
//! * The local store is bounded by `max_size` bytes and
//!   [`MAX_KEYS`](crate::store::records::MAX_KEYS) records. When full, the
//!   oldest stored responses go first; in-flight and locked keys are never
//!   evicted: a new key then gets 503. Expired records are forgotten on every
//!   maintenance tick.
//! * The records live in a [`store::Records`](crate::store::Records), in this
//!   process or in Redis.

mod scope;
#[cfg(test)]
mod tests;

pub use self::scope::{fingerprint, scope_of, valid_key};
use crate::config::{Dur, Method, Size};
use crate::metrics::METRICS;
use crate::pipeline::{
    read_body, BodyError, BuildCtx, BuildError, BuildResult, Flow, Order, Plugin, PluginConfig,
    Reply, RequestCtx, Series,
};
use crate::store::records::{Begin, Stored};
use crate::store::{Backend, FailurePolicy, OnBackendError, Records, StateBackend, Unavailable};
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use serde::Deserialize;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Config: `type = "idempotency"`
// ---------------------------------------------------------------------------

fn default_cache_size() -> Size {
    Size(64 << 20)
}
fn default_cache_entry() -> Size {
    Size(1 << 20)
}

fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}

fn default_idempotency_methods() -> Vec<Method> {
    vec![Method(http::Method::POST), Method(http::Method::PATCH)]
}

fn default_idempotency_ttl() -> Dur {
    Dur::secs(86400)
}

fn default_unknown_outcome_lock() -> Dur {
    Dur::secs(60)
}

/// `type = "idempotency"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    #[serde(default = "default_idempotency_header")]
    pub header: String,
    /// Upper-case method tokens; default `POST`, `PATCH`.
    #[serde(default = "default_idempotency_methods")]
    pub methods: Vec<Method>,
    #[serde(default = "default_idempotency_ttl")]
    pub ttl: Dur,
    #[serde(default)]
    pub required: bool,
    /// Largest response body stored for replay.
    #[serde(default = "default_cache_entry")]
    pub max_response: Size,
    /// Memory bound of the local store.
    #[serde(default = "default_cache_size")]
    pub max_size: Size,
    #[serde(default)]
    pub backend: StateBackend,
    /// Default `deny` (fail closed with 503).
    #[serde(default)]
    pub on_backend_error: Option<OnBackendError>,
    /// How long a key whose first request ended without a known outcome (the
    /// client went away, the upstream timed out or reset) answers 409.
    #[serde(default = "default_unknown_outcome_lock")]
    pub unknown_outcome_lock: Dur,
}

impl PluginConfig for IdempotencyConfig {
    const TYPE: &'static str = "idempotency";
    const ORDER: Order = Order::Idempotency;
    type Plugin = Idempotency;

    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<Idempotency> {
        Idempotency::new(self, bx)
    }

    fn uses_redis(&self) -> bool {
        self.backend == StateBackend::Redis
    }
}

/// The request's progress, kept in its context.
pub struct Pending {
    key: String,
    fp: [u8; 32],
    token: u64,
    /// The request was handed to an upstream connection at least once, so it
    /// may be executing there.
    sent: bool,
    status: Option<u16>,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: BytesMut,
    oversized: bool,
}

pub struct Idempotency {
    name: String,
    header: HeaderName,
    methods: Vec<http::Method>,
    ttl: Duration,
    unknown_outcome_lock: Duration,
    required: bool,
    max_response: usize,
    records: Records,
    /// Where its records are (for the series it declares).
    backend: StateBackend,
}

impl Idempotency {
    pub fn new(c: &IdempotencyConfig, bx: &BuildCtx<'_>) -> BuildResult<Self> {
        let mut errs = Vec::new();
        let header = HeaderName::try_from(c.header.as_str()).ok();
        if header.is_none() {
            errs.push(BuildError::at(
                "header",
                format!("invalid header name {:?}", c.header),
            ));
        }
        if c.ttl.0.is_zero() {
            errs.push(BuildError::at("ttl", "must be greater than zero"));
        }
        if c.unknown_outcome_lock.0.is_zero() {
            errs.push(BuildError::at(
                "unknown_outcome_lock",
                "must be greater than zero (a key whose outcome is unknown must not run again \
                 at once)",
            ));
        }
        let backend = Backend::select(bx, c.backend, "idem", c)
            .map_err(|e| errs.extend(e))
            .ok();
        match (header, backend) {
            (Some(header), Some(backend)) if errs.is_empty() => Ok(Idempotency {
                name: bx.name.to_string(),
                header,
                methods: c.methods.iter().map(|m| m.0.clone()).collect(),
                ttl: c.ttl.0,
                unknown_outcome_lock: c.unknown_outcome_lock.0,
                required: c.required,
                max_response: c.max_response.0 as usize,
                backend: c.backend,
                records: Records::new(
                    backend,
                    FailurePolicy::new(bx.name, c.on_backend_error, OnBackendError::Deny),
                    c.max_size.0 as usize,
                    bx.config.server.request_timeout.0 + Duration::from_secs(30),
                ),
            }),
            _ => Err(errs),
        }
    }

    fn count(ctx: &RequestCtx, result: &'static str) {
        let route = ctx.route_name();
        METRICS
            .idempotency
            .with_label_values(&[route, result])
            .inc();
    }

    /// The whole upstream response is known: store it (before the client gets
    /// its last byte), or release the key for a 5xx or an oversized response.
    fn finish_pending(&self, ctx: &mut RequestCtx, state: &mut Option<Pending>) {
        let Some(p) = state.take() else {
            return;
        };
        let store = match p.status {
            Some(status) if status < 500 && !p.oversized => Some(Stored {
                status,
                headers: p.headers,
                body: p.body.freeze(),
            }),
            _ => None,
        };
        match store {
            Some(resp) => {
                let route = ctx.route().map(|r| r.name.clone());
                self.records
                    .complete(&p.key, p.fp, p.token, resp, self.ttl, move || {
                        METRICS
                            .idempotency
                            .with_label_values(&[route.as_deref().unwrap_or(""), STORED])
                            .inc();
                    });
            }
            None => self.records.abort(&p.key, p.fp, p.token),
        }
    }

    /// The replayed response: the stored one, marked.
    fn replay(s: &Stored) -> Option<Reply> {
        let mut h = ResponseHeader::build(s.status, Some(s.headers.len() + 2)).ok()?;
        for (n, v) in &s.headers {
            let _ = h.append_header(n.clone(), v.clone());
        }
        h.remove_header(&http::header::TRANSFER_ENCODING);
        // A 204 has no Content-Length (RFC 9110 §8.6) and a 304's would describe
        // the representation, not this empty body: replay them as they came.
        if !matches!(s.status, 204 | 304) {
            let _ = h.insert_header(http::header::CONTENT_LENGTH, s.body.len().to_string());
        }
        let _ = h.insert_header("idempotent-replayed", "true");
        Some(Reply::Raw {
            header: Box::new(h),
            body: s.body.clone(),
        })
    }
}

/// `result` of `tollgate_idempotency_total`: a response stored for the key.
pub const STORED: &str = "stored";
/// `result`: a stored response replayed.
pub const REPLAYED: &str = "replayed";
/// `result`: the key is still in flight, or locked after an unknown outcome.
pub const CONFLICT: &str = "conflict";
/// `result`: the key was used for a different request.
pub const MISMATCH: &str = "mismatch";

impl Plugin for Idempotency {
    /// A request that holds its key, until its outcome is stored or released.
    type State = Option<Pending>;

    fn series(&self) -> Vec<Series> {
        let mut out: Vec<Series> = [STORED, REPLAYED, CONFLICT, MISMATCH]
            .map(|result| Series::Idempotency { result })
            .to_vec();
        out.extend(
            self.backend
                .error_label()
                .map(|backend| Series::BackendErrors { backend }),
        );
        out
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        state: &mut Self::State,
    ) -> pingora::Result<Flow> {
        let req = session.req_header();
        if !self.methods.contains(&req.method) {
            return Ok(Flow::Continue);
        }
        let key = match req.headers.get(&self.header) {
            None if self.required => {
                return Ok(Flow::problem(
                    400,
                    format!("this request needs an {} header", self.header),
                ));
            }
            None => return Ok(Flow::Continue),
            Some(v) if !valid_key(v.as_bytes()) => {
                return Ok(Flow::problem(
                    400,
                    format!(
                        "invalid {} header: 1-255 visible ASCII characters",
                        self.header
                    ),
                ));
            }
            Some(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        };
        let scoped = format!("{}:{key}", scope_of(req, ctx));
        let method = req.method.clone();
        let query = req.uri.query().map(str::to_string);
        let body = match read_body(session, ctx).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                return Ok(Flow::problem(
                    413,
                    format!(
                        "requests with an idempotency key are limited to {} bytes",
                        crate::pipeline::MAX_BUFFERED_BODY.min(ctx.rt.limits.max_request_body)
                    ),
                ))
            }
            Err(BodyError::Timeout) => {
                return Ok(Flow::problem(
                    408,
                    "the request body was not received in time",
                ))
            }
            Err(BodyError::Broken) => {
                return Ok(Flow::problem(400, "the request body could not be read"))
            }
        };
        let fp = fingerprint(
            &method,
            ctx.matched.path.as_deref().unwrap_or(""),
            query.as_deref().unwrap_or(""),
            &body,
        );
        let begun = match self.records.begin(&scoped, fp, self.ttl).await {
            Ok(b) => b,
            Err(Unavailable(OnBackendError::Deny)) => {
                return Ok(Flow::Respond(Reply::Problem {
                    status: 503,
                    detail: "idempotency records are unavailable; retry later".into(),
                    headers: vec![(http::header::RETRY_AFTER, HeaderValue::from(1u64))],
                }));
            }
            Err(Unavailable(OnBackendError::Allow)) => return Ok(Flow::Continue),
        };
        match begun {
            Begin::Proceed(token) => {
                // A client that goes away does not end the exchange: the
                // upstream's answer is still read and stored for its retry.
                session.as_mut().set_abort_on_close(false);
                *state = Some(Pending {
                    key: scoped,
                    fp,
                    token,
                    sent: false,
                    status: None,
                    headers: Vec::new(),
                    body: BytesMut::new(),
                    oversized: false,
                });
                Ok(Flow::Continue)
            }
            Begin::InFlight => {
                Self::count(ctx, CONFLICT);
                Ok(Flow::problem(
                    409,
                    "a request with this idempotency key is still being processed",
                ))
            }
            Begin::Locked(left) => {
                Self::count(ctx, CONFLICT);
                Ok(Flow::Respond(Reply::Problem {
                    status: 409,
                    detail: "the first request with this idempotency key ended without a known \
                             outcome and may still be executing; retry later"
                        .into(),
                    headers: vec![(http::header::RETRY_AFTER, crate::util::retry_after(left))],
                }))
            }
            Begin::Full => Ok(Flow::Respond(Reply::Problem {
                status: 503,
                detail: "too many idempotency keys are in flight; retry later".into(),
                headers: vec![(http::header::RETRY_AFTER, HeaderValue::from(1u64))],
            })),
            Begin::Mismatch => {
                Self::count(ctx, MISMATCH);
                Ok(Flow::problem(
                    422,
                    "this idempotency key was used for a different request",
                ))
            }
            Begin::Replay(stored) => {
                Self::count(ctx, REPLAYED);
                tracing::debug!(plugin = %self.name, "idempotent replay");
                Ok(match Self::replay(&stored) {
                    Some(r) => Flow::Respond(r),
                    None => Flow::problem(500, "the stored response could not be replayed"),
                })
            }
        }
    }

    fn upstream_request(
        &self,
        _req: &mut RequestHeader,
        _ctx: &RequestCtx,
        state: &mut Self::State,
    ) -> pingora::Result<()> {
        if let Some(p) = state {
            p.sent = true;
        }
        Ok(())
    }

    fn upstream_response(
        &self,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
        state: &mut Self::State,
    ) {
        let max = self.max_response;
        let status = resp.status.as_u16();
        let declared = resp
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let Some(p) = state else {
            return;
        };
        p.status = Some(status);
        p.headers = resp
            .headers
            .iter()
            .filter(|(n, _)| *n != http::header::DATE && *n != http::header::CONTENT_LENGTH)
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        p.body = BytesMut::new();
        p.oversized = declared.is_some_and(|n| n > max);
        // A response without a body gets no body callback: it is complete now.
        if declared == Some(0) || matches!(status, 204 | 304) {
            self.finish_pending(ctx, state);
        }
    }

    fn upstream_response_body(
        &self,
        body: &Option<Bytes>,
        end: bool,
        ctx: &mut RequestCtx,
        state: &mut Self::State,
    ) {
        let max = self.max_response;
        if let Some(p) = state {
            if let Some(b) = body {
                if p.body.len() + b.len() > max {
                    p.oversized = true;
                    p.body = BytesMut::new();
                } else if !p.oversized {
                    p.body.extend_from_slice(b);
                }
            }
        }
        if end {
            self.finish_pending(ctx, state);
        }
    }

    fn finish(&self, ctx: &mut RequestCtx, state: &mut Self::State) {
        // Still pending here: no whole answer was read. A request that never
        // reached an upstream, or whose upstream answered 5xx, releases its
        // key; any other may be executing (client gone, timeout, reset, a
        // broken body): its key stays locked for `unknown_outcome_lock`.
        let Some(p) = state.take() else {
            return;
        };
        // (A retried 5xx that ran out of attempts never reached `upstream_response`.)
        let status = p.status.or(ctx.upstream.outcome.and_then(|o| o.status));
        let release = !p.sent || status.is_some_and(|s| s >= 500);
        let lock = self.unknown_outcome_lock;
        if release {
            self.records.abort(&p.key, p.fp, p.token);
        } else {
            self.records.lock_unknown(&p.key, p.fp, p.token, lock);
        }
    }

    async fn tick(&self) {
        self.records.expire();
    }
}
