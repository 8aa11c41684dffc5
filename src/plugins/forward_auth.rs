//! `forward_auth`: before a request is forwarded, ask an external service
//! (fraud screening, KYC, an identity provider) whether it may pass.
//!
//! The call has Traefik's ForwardAuth shape: `GET <url>` carrying what the
//! service needs to decide (`X-Forwarded-Method`, `-Uri`, `-Host`, `-Proto`,
//! `-For`, `X-Request-Id`) plus the client headers named in `forward_headers`.
//! Its 2xx lets the request through with `copy_response_headers` copied onto
//! the upstream request; its 4xx (401, 403, but also 431 for a huge cookie)
//! goes back to the client; a connect error, timeout or 5xx fails closed (503)
//! unless `on_error = "allow"`. Only those failures count against the breaker,
//! so a client cannot open it with requests the service refuses.
//!
//! The request's consumer is the value of `consumer_header` in the 2xx answer;
//! else the consumer an earlier auth plugin of the route set (an `api_key`
//! before a screening service keeps its consumer); else a digest of the
//! request's credentials (the `forward_headers`, `Authorization` and `Cookie`
//! names and values, length-delimited), written `cred:sha256:<hex>`; a named
//! consumer cannot take that form. So caches and idempotency records of two
//! credentials are never shared, whatever the service is shown.
//!
//! A cookie split into several fields (HTTP/2 crumbs) is joined with `"; "`
//! for the call and the digest ([`joined_cookie`], RFC 9113 §8.2.3).
//!
//! Calls go through a pooled [`outbound::Client`] (one pool per plugin
//! instance, surviving reloads with it) and a small circuit breaker: after
//! [`BREAKER_FAILURES`] consecutive failures the service is left alone for
//! [`BREAKER_COOL_DOWN`], during which `on_error` applies at once; then one
//! probe call decides whether it closes again.

use super::auth;
use crate::breaker::{Breaker, Outcome, Policy};
use crate::config::Dur;
use crate::metrics::METRICS;
use crate::outbound::{self, joined_cookie, parse_url, Client, Limits, Response as Answer};
use crate::pipeline::{
    BuildCtx, BuildError, BuildResult, Flow, KeyPath, Order, Plugin, PluginConfig, Reply,
    RequestCtx,
};
use crate::telemetry::ClientEnd;
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, WWW_AUTHENTICATE,
};
use http::{HeaderName, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::fast_timeout::fast_timeout;
use pingora::proxy::Session;
use sha2::{Digest, Sha256};
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

// ---------------------------------------------------------------------------
// Config: `type = "forward_auth"`
// ---------------------------------------------------------------------------

fn default_forward_auth_timeout() -> Dur {
    Dur::millis(200)
}

/// `type = "forward_auth"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthConfig {
    pub url: String,
    #[serde(default = "default_forward_auth_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub forward_headers: Vec<String>,
    #[serde(default)]
    pub copy_response_headers: Vec<String>,
    /// `deny` (default: fail closed with 503) or `allow`.
    #[serde(default)]
    pub on_error: OnError,
    /// A header of the service's 2xx answer naming the request's consumer;
    /// without it the consumer is a digest of the forwarded credentials.
    #[serde(default)]
    pub consumer_header: Option<String>,
}

/// What `forward_auth` does when the service cannot answer (or its breaker is
/// open): refuse with 503 (`deny`, the default) or let the request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum OnError {
    #[default]
    Deny,
    Allow,
}

impl TryFrom<String> for OnError {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "deny" => Ok(OnError::Deny),
            "allow" => Ok(OnError::Allow),
            other => Err(format!(
                "on_error must be \"deny\" or \"allow\", not {other:?}"
            )),
        }
    }
}

impl PluginConfig for ForwardAuthConfig {
    const TYPE: &'static str = "forward_auth";
    const ORDER: Order = Order::Auth;
    type Plugin = ForwardAuth;

    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<ForwardAuth> {
        ForwardAuth::new(self, bx)
    }
}

/// Consecutive failures of the auth service that open the breaker.
pub const BREAKER_FAILURES: u32 = 5;
/// How long an open breaker keeps calls away from the auth service.
pub const BREAKER_COOL_DOWN: Duration = Duration::from_secs(10);
/// The auth service's breaker: [`BREAKER_FAILURES`] in a row open it for
/// [`BREAKER_COOL_DOWN`], then one probe decides.
pub const BREAKER: Policy = Policy {
    consecutive_failures: Some(BREAKER_FAILURES),
    failure_rate: None,
    open_for: BREAKER_COOL_DOWN,
    probes: 1,
};
/// Largest auth-service response body read (a 401/403 body passed to the
/// client, or a 2xx body drained so the connection can be reused).
const MAX_BODY: usize = 16 << 10;
/// Ticks (about a second each) between two DNS lookups of a named auth host.
const RESOLVE_EVERY_TICKS: u32 = 30;

/// Headers the gateway writes on the auth call itself: `forward_headers`
/// cannot name them (a client must not choose what the service is told).
fn call_reserved(name: &str) -> bool {
    crate::util::FRAMING_HEADERS.contains(&name)
        || matches!(
            name,
            "x-forwarded-method"
                | "x-forwarded-uri"
                | "x-forwarded-host"
                | "x-forwarded-proto"
                | "x-forwarded-for"
                | "x-request-id"
                | "expect"
        )
}

pub struct ForwardAuth {
    name: Arc<str>,
    /// The service's host, for its calls' spans (`server.address`).
    span_host: Arc<str>,
    /// The pooled client, at the address resolved when built (re-resolved
    /// every [`RESOLVE_EVERY_TICKS`] ticks for a named host).
    client: Client,
    /// The auth host when it is a name to re-resolve (not an IP literal).
    dns_name: Option<(String, u16)>,
    ticks: AtomicU32,
    host_header: HeaderValue,
    path: String,
    timeout: Duration,
    forward_headers: Vec<HeaderName>,
    copy_response_headers: Vec<HeaderName>,
    consumer_header: Option<HeaderName>,
    allow_on_error: bool,
    breaker: Arc<Breaker>,
}

/// How a consumer derived from credentials begins; a consumer named by the
/// service's `consumer_header` may not (it would be taken for a digest).
pub const DIGEST_PREFIX: &str = "cred:";
/// Longest consumer name taken from `consumer_header`.
const MAX_CONSUMER: usize = 256;

fn names(
    key: &str,
    list: &[String],
    reserved: impl Fn(&str) -> bool,
    errs: &mut Vec<BuildError>,
) -> Vec<HeaderName> {
    let mut out: Vec<HeaderName> = Vec::new();
    for (i, n) in list.iter().enumerate() {
        match HeaderName::try_from(n.as_str()) {
            Ok(h) if reserved(h.as_str()) => errs.push(BuildError {
                path: KeyPath::default().key(key).index(i),
                message: format!("{n:?} is set by the gateway and cannot be listed here"),
            }),
            Ok(h) => {
                if !out.contains(&h) {
                    out.push(h);
                }
            }
            Err(_) => errs.push(BuildError {
                path: KeyPath::default().key(key).index(i),
                message: format!("invalid header name {n:?}"),
            }),
        }
    }
    out
}

impl ForwardAuth {
    pub fn new(c: &ForwardAuthConfig, bx: &BuildCtx<'_>) -> BuildResult<Self> {
        let mut errs = Vec::new();
        let target = match parse_url(&c.url) {
            Ok(t) => Some(t),
            Err(message) => {
                errs.push(BuildError {
                    path: KeyPath::default().key("url"),
                    message,
                });
                None
            }
        };
        #[allow(clippy::disallowed_methods)]
        // at build, off the request path; ticks re-resolve with tokio
        let addr =
            target
                .as_ref()
                .and_then(|t| match (t.host.as_str(), t.port).to_socket_addrs() {
                    Ok(mut a) => a.next().or_else(|| {
                        errs.push(BuildError {
                            path: KeyPath::default().key("url"),
                            message: format!("{:?} resolves to no address", t.host),
                        });
                        None
                    }),
                    Err(e) => {
                        errs.push(BuildError {
                            path: KeyPath::default().key("url"),
                            message: format!("cannot resolve {:?}: {e}", t.host),
                        });
                        None
                    }
                });
        if c.timeout.0.is_zero() {
            errs.push(BuildError {
                path: KeyPath::default().key("timeout"),
                message: "timeout must be more than 0".into(),
            });
        }
        let allow_on_error = c.on_error == OnError::Allow;
        let forward_headers = names(
            "forward_headers",
            &c.forward_headers,
            call_reserved,
            &mut errs,
        );
        let copy_response_headers = names(
            "copy_response_headers",
            &c.copy_response_headers,
            crate::util::is_framing_or_forwarding,
            &mut errs,
        );
        let consumer_header = c.consumer_header.as_ref().and_then(|n| {
            names(
                "consumer_header",
                std::slice::from_ref(n),
                crate::util::is_framing_or_forwarding,
                &mut errs,
            )
            .pop()
        });
        let host_header = target
            .as_ref()
            .and_then(|t| HeaderValue::from_str(&t.authority).ok());
        let (Some(t), Some(addr), Some(host_header), true) =
            (target, addr, host_header, errs.is_empty())
        else {
            return Err(errs);
        };
        let dns_name = t
            .host
            .parse::<std::net::IpAddr>()
            .is_err()
            .then(|| (t.host.clone(), t.port));
        let path = t.path.clone();
        // Connecting takes at most `timeout`; the call as a whole is bounded
        // by `timeout` in `request`.
        let limits = Limits {
            connect: c.timeout.0,
            io: None,
            total: None,
            max_body: MAX_BODY,
            stale_retries: 1,
        };
        let client = Client::new(bx.name, t, limits).map_err(|m| vec![BuildError::at("url", m)])?;
        client.set_address(addr);
        Ok(ForwardAuth {
            name: Arc::from(bx.name),
            span_host: Arc::from(client.target().host.as_str()),
            client,
            dns_name,
            ticks: AtomicU32::new(0),
            host_header,
            path,
            timeout: c.timeout.0,
            forward_headers,
            copy_response_headers,
            consumer_header,
            allow_on_error,
            breaker: Arc::new(Breaker::new(BREAKER, Instant::now())),
        })
    }

    /// The request sent to the auth service for this client request.
    fn auth_request(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<RequestHeader> {
        let request_id = ctx.request_id().to_string();
        let client = session.req_header();
        let mut req = RequestHeader::build(
            Method::GET,
            self.path.as_bytes(),
            Some(8 + self.forward_headers.len()),
        )?;
        req.insert_header(HOST, self.host_header.clone())?;
        req.insert_header("x-forwarded-method", client.method.as_str())?;
        let mut uri = ctx.matched.path.clone().unwrap_or_else(|| "/".into());
        if let Some(q) = client.uri.query() {
            uri.push('?');
            uri.push_str(q);
        }
        req.insert_header("x-forwarded-uri", uri)?;
        if let Some(h) = client.headers.get(HOST).cloned().or_else(|| {
            client
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        }) {
            req.insert_header("x-forwarded-host", h)?;
        }
        let tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        req.insert_header("x-forwarded-proto", if tls { "https" } else { "http" })?;
        if let Some(ip) = ctx.client.ip {
            req.insert_header("x-forwarded-for", ip.to_string())?;
        }
        req.insert_header("x-request-id", request_id)?;
        let cookie = joined_cookie(&client.headers);
        for n in &self.forward_headers {
            match &cookie {
                // Crumbs enter this HTTP/1.1 call as one field (RFC 9113 §8.2.3).
                Some(joined) if *n == COOKIE => {
                    req.append_header(n.clone(), joined.clone())?;
                }
                _ => {
                    for v in client.headers.get_all(n) {
                        req.append_header(n.clone(), v.clone())?;
                    }
                }
            }
        }
        Ok(req)
    }

    /// The consumer standing for the request's credentials: a SHA-256 of each
    /// `forward_headers`, `Authorization` and `Cookie` name and value,
    /// length-delimited, so that no two header sets give the same input. The
    /// credential headers count even when the service is not shown them (a
    /// screening service with no `forward_headers`): two credentials never
    /// share a scope. A cookie in crumbs counts as its joined value, the same
    /// as one `Cookie` line.
    fn credential_consumer(&self, session: &Session) -> String {
        credential_digest(&self.forward_headers, &session.req_header().headers)
    }

    /// The consumer when the service named none: the one an earlier auth
    /// plugin of the route set (an `api_key` before a screening service), else
    /// the credential digest.
    fn set_unnamed_consumer(&self, session: &Session, ctx: &mut RequestCtx) {
        if ctx.identity.consumer.is_none() {
            auth::set_consumer(ctx, &self.credential_consumer(session));
        }
    }

    /// The consumer the service named in its 2xx answer, if it is usable.
    fn named_consumer<'a>(&self, answer: &'a Answer) -> Option<&'a str> {
        let v = answer.header.headers.get(self.consumer_header.as_ref()?)?;
        let v = v.to_str().ok()?.trim();
        let usable =
            v.len() <= MAX_CONSUMER && auth::header_safe(v) && !v.starts_with(DIGEST_PREFIX);
        if !usable {
            tracing::warn!(
                target: "tollgate::auth",
                plugin = &*self.name,
                "the authorization service named an unusable consumer; the credential digest is used"
            );
        }
        usable.then_some(v)
    }

    /// One call: a pooled connection, the request, the response head and a
    /// bounded body. A pooled connection the service had already closed gets
    /// one more try on a fresh one.
    async fn call(&self, req: &RequestHeader) -> Result<Answer, outbound::Error> {
        self.client.send(req).await
    }

    /// The service failed (`reason`): 503, or on with the request when
    /// `on_error = "allow"`. Counted either way.
    fn failed(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        reason: &'static str,
        retry_after: Duration,
    ) -> Flow {
        if self.allow_on_error {
            // Unverified, but still never sharing a record with other credentials.
            self.set_unnamed_consumer(session, ctx);
            let route = ctx.route().map(|r| &*r.name).unwrap_or("");
            METRICS
                .auth_failures
                .with_label_values(&[route, &self.name, reason])
                .inc();
            tracing::warn!(
                target: "tollgate::auth",
                request_id = ctx.request_id.as_deref().unwrap_or(""),
                route,
                plugin = &*self.name,
                reason,
                "authorization service failed; request let through (on_error = \"allow\")"
            );
            return Flow::Continue;
        }
        auth::count_failure(ctx, &self.name, reason);
        let detail = match reason {
            SERVICE_TIMEOUT => "the authorization service did not answer in time",
            _ => "the authorization service is unavailable",
        };
        auth::refuse(
            503,
            detail,
            vec![(
                http::header::RETRY_AFTER,
                crate::util::retry_after(retry_after),
            )],
        )
    }

    /// The service's 4xx for the client: its status and challenge, and its
    /// body when it is small JSON (problem+json included); otherwise a problem.
    fn denied(&self, answer: Answer, head_only: bool) -> Flow {
        let status = answer.header.status.as_u16();
        let challenges: Vec<(HeaderName, HeaderValue)> = answer
            .header
            .headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .map(|v| (WWW_AUTHENTICATE, v.clone()))
            .collect();
        let content_type = answer
            .header
            .headers
            .get(CONTENT_TYPE)
            .filter(|ct| is_json(ct));
        if let (Some(ct), true, false, false) = (
            content_type,
            answer.complete,
            answer.body.is_empty(),
            head_only,
        ) {
            if let Ok(mut resp) = ResponseHeader::build(status, Some(4 + challenges.len())) {
                let _ = resp.insert_header(CONTENT_TYPE, ct.clone());
                let _ = resp.insert_header(CONTENT_LENGTH, answer.body.len());
                let _ = resp.insert_header(CACHE_CONTROL, "no-store");
                for (n, v) in challenges {
                    let _ = resp.append_header(n, v);
                }
                return Flow::Respond(Reply::Raw {
                    header: Box::new(resp),
                    body: answer.body,
                });
            }
        }
        let detail = match status {
            401 | 403 => "the authorization service denied the request",
            _ => "the authorization service refused the request",
        };
        auth::refuse(status, detail, challenges)
    }
}

/// `application/json`, `application/problem+json` or another `+json` type.
fn is_json(ct: &HeaderValue) -> bool {
    let Ok(ct) = ct.to_str() else { return false };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// `cred:sha256:<hex>` over `forward_headers`, then `Authorization` and
/// `Cookie` when not among them: each name and value length-prefixed.
fn credential_digest(forward_headers: &[HeaderName], headers: &http::HeaderMap) -> String {
    let cookie = joined_cookie(headers);
    let credentials = [AUTHORIZATION, COOKIE];
    let extra = credentials.iter().filter(|n| !forward_headers.contains(n));
    let mut h = Sha256::new();
    let mut put = |n: &HeaderName, v: &[u8]| {
        for part in [n.as_str().as_bytes(), v] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    };
    for n in forward_headers.iter().chain(extra) {
        match &cookie {
            Some(joined) if *n == COOKIE => put(n, joined.as_bytes()),
            _ => {
                for v in headers.get_all(n) {
                    put(n, v.as_bytes());
                }
            }
        }
    }
    format!("{DIGEST_PREFIX}sha256:{}", hex::encode(h.finalize()))
}

/// The `reason`s of `tollgate_auth_failures_total` this plugin counts: the
/// service refused (`denied`), its breaker is open, it timed out, it failed.
const REASONS: [&str; 4] = [DENIED, BREAKER_OPEN, SERVICE_TIMEOUT, SERVICE_ERROR];
const DENIED: &str = "denied";
const BREAKER_OPEN: &str = "breaker_open";
const SERVICE_TIMEOUT: &str = "auth_service_timeout";
const SERVICE_ERROR: &str = "auth_service_error";

impl Plugin for ForwardAuth {
    type State = ();

    fn series(&self) -> Vec<crate::pipeline::Series> {
        REASONS
            .map(|reason| crate::pipeline::Series::AuthFailures { reason })
            .to_vec()
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        _state: &mut Self::State,
    ) -> pingora::Result<Flow> {
        let permit = match self.breaker.admit(Instant::now()) {
            Ok(p) => p,
            Err(wait) => return Ok(self.failed(session, ctx, BREAKER_OPEN, wait)),
        };
        let mut req = self.auth_request(session, ctx)?;
        // A CLIENT span for the call, named in its `traceparent` (SPEC §10).
        let span = ctx.trace.begin_client();
        if let Some(tp) = span.as_ref().and_then(|s| ctx.trace.traceparent(s)) {
            req.insert_header("traceparent", tp)?;
        }
        let result = fast_timeout(self.timeout, self.call(&req)).await;
        if let Some(span) = span {
            let (status, error) = match &result {
                Ok(Ok(a)) => (Some(a.header.status.as_u16()), None),
                Ok(Err(e)) if !e.is_timeout() => (None, Some("error")),
                _ => (None, Some("timeout")),
            };
            ctx.trace.end_client(
                span,
                ClientEnd {
                    method: "GET",
                    peer: self.name.clone(),
                    peer_key: "tollgate.plugin",
                    address: self.client.address(),
                    host: Some(self.span_host.clone()),
                    port: Some(self.client.target().port),
                    status,
                    error,
                    messaging: None,
                },
            );
        }
        let answer = match result {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                permit.finish(Outcome::Failure, Instant::now());
                let reason = if e.is_timeout() {
                    SERVICE_TIMEOUT
                } else {
                    SERVICE_ERROR
                };
                tracing::warn!(
                    target: "tollgate::auth",
                    request_id = ctx.request_id.as_deref().unwrap_or(""),
                    plugin = &*self.name,
                    error = e.code(),
                    "authorization service call failed"
                );
                return Ok(self.failed(session, ctx, reason, Duration::from_secs(1)));
            }
            Err(_) => {
                permit.finish(Outcome::Failure, Instant::now());
                return Ok(self.failed(session, ctx, SERVICE_TIMEOUT, Duration::from_secs(1)));
            }
        };
        let status = answer.header.status.as_u16();
        match status {
            200..=299 => {
                permit.finish(Outcome::Success, Instant::now());
                for n in &self.copy_response_headers {
                    let values: Vec<&[u8]> = answer
                        .header
                        .headers
                        .get_all(n)
                        .iter()
                        .map(|v| v.as_bytes())
                        .collect();
                    if values.is_empty() {
                        continue;
                    }
                    if let Ok(v) = HeaderValue::from_bytes(&values.join(&b", "[..])) {
                        ctx.upstream.headers.push((n.clone(), v));
                    }
                }
                match self.named_consumer(&answer) {
                    Some(named) => auth::set_consumer(ctx, named),
                    None => self.set_unnamed_consumer(session, ctx),
                }
                Ok(Flow::Continue)
            }
            // Refusals, whatever the reason (401, 403, 431 for a huge cookie):
            // the client's answer, and the service did its job.
            400..=499 => {
                permit.finish(Outcome::Success, Instant::now());
                auth::count_failure(ctx, &self.name, DENIED);
                let head_only = session.req_header().method == Method::HEAD;
                Ok(self.denied(answer, head_only))
            }
            500..=599 => {
                permit.finish(Outcome::Failure, Instant::now());
                Ok(self.failed(session, ctx, SERVICE_ERROR, Duration::from_secs(1)))
            }
            // A redirect or another unusable answer: not a decision, but not
            // an outage either (SPEC §3: only connect errors, timeouts and 5xx count).
            _ => {
                permit.finish(Outcome::Success, Instant::now());
                Ok(self.failed(session, ctx, SERVICE_ERROR, Duration::from_secs(1)))
            }
        }
    }

    fn upstream_request(
        &self,
        req: &mut RequestHeader,
        _ctx: &RequestCtx,
        _state: &mut Self::State,
    ) -> pingora::Result<()> {
        // Only the auth service speaks for these headers; what it sent is put
        // back from `ctx.upstream.headers` after every plugin has run.
        for n in &self.copy_response_headers {
            req.remove_header(n);
        }
        Ok(())
    }

    async fn tick(&self) {
        let Some((host, port)) = &self.dns_name else {
            return;
        };
        if self.ticks.fetch_add(1, Ordering::Relaxed) % RESOLVE_EVERY_TICKS
            != RESOLVE_EVERY_TICKS - 1
        {
            return;
        }
        // The last good address is kept when a lookup fails.
        let Ok(mut addrs) = tokio::net::lookup_host((host.as_str(), *port)).await else {
            return;
        };
        let Some(addr) = addrs.next() else { return };
        self.client.set_address(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn build(c: &ForwardAuthConfig) -> BuildResult<ForwardAuth> {
        let config = crate::config::load_str(
            "[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n",
            None,
            std::path::Path::new("."),
        )
        .expect("minimal config");
        ForwardAuth::new(
            c,
            &BuildCtx {
                name: "fa",
                config: &config,
            },
        )
    }

    fn cfg(url: &str) -> ForwardAuthConfig {
        ForwardAuthConfig {
            url: url.into(),
            timeout: Dur::millis(200),
            forward_headers: vec![],
            copy_response_headers: vec![],
            on_error: OnError::Deny,
            consumer_header: None,
        }
    }

    fn keys(r: BuildResult<ForwardAuth>) -> Vec<String> {
        match r {
            Ok(_) => panic!("expected build errors"),
            Err(e) => e.into_iter().map(|e| e.path.to_string()).collect(),
        }
    }

    #[test]
    fn on_error_is_deny_or_allow() {
        assert_eq!(OnError::try_from("allow".to_string()), Ok(OnError::Allow));
        assert_eq!(OnError::try_from("deny".to_string()), Ok(OnError::Deny));
        assert_eq!(
            OnError::try_from("maybe".to_string()),
            Err("on_error must be \"deny\" or \"allow\", not \"maybe\"".to_string())
        );
    }

    #[test]
    fn build_errors_name_their_key() {
        let mut c = cfg("gopher://x");
        c.timeout = Dur::millis(0);
        c.forward_headers = vec![
            "authorization".into(),
            "x-forwarded-for".into(),
            "bad name".into(),
        ];
        c.copy_response_headers = vec!["x-user".into(), "content-length".into()];
        assert_eq!(
            keys(build(&c)),
            [
                "url",
                "timeout",
                "forward_headers[1]",
                "forward_headers[2]",
                "copy_response_headers[1]"
            ]
        );
        let mut ok = cfg("http://127.0.0.1:9/auth");
        ok.on_error = OnError::Allow;
        ok.forward_headers = vec!["Authorization".into(), "authorization".into()];
        let fa = build(&ok).unwrap_or_else(|_| panic!("valid config refused"));
        assert!(fa.allow_on_error);
        assert_eq!(fa.forward_headers.len(), 1);
        assert!(fa.dns_name.is_none());
        ok.on_error = OnError::Deny;
        assert!(
            !build(&ok)
                .unwrap_or_else(|_| panic!("deny refused"))
                .allow_on_error
        );
    }

    #[test]
    fn credential_digests_cover_credentials_the_service_is_not_shown() {
        let map = |pairs: &[(&str, &str)]| {
            let mut h = http::HeaderMap::new();
            for (n, v) in pairs {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            h
        };
        let none: Vec<HeaderName> = vec![];
        let d = |fh: &[HeaderName], pairs: &[(&str, &str)]| credential_digest(fh, &map(pairs));
        // No forward_headers: Authorization and Cookie still tell credentials apart.
        assert_ne!(
            d(&none, &[("authorization", "Bearer a")]),
            d(&none, &[("authorization", "Bearer b")])
        );
        assert_ne!(
            d(&none, &[("cookie", "sid=a")]),
            d(&none, &[("cookie", "sid=b")])
        );
        assert_ne!(
            d(&none, &[("cookie", "sid=a")]),
            d(&none, &[("authorization", "sid=a")])
        );
        assert_ne!(d(&none, &[]), d(&none, &[("cookie", "sid=a")]));
        // Other headers are not credentials unless forwarded.
        assert_eq!(d(&none, &[("x-trace", "1")]), d(&none, &[]));
        let xs = vec![HeaderName::from_static("x-session")];
        assert_ne!(d(&xs, &[("x-session", "1")]), d(&xs, &[]));
        // Listing cookie in forward_headers does not count it twice.
        let ck = vec![COOKIE];
        assert_eq!(
            d(&ck, &[("cookie", "sid=a")]),
            d(&none, &[("cookie", "sid=a")])
        );
        // Crumbs are the same credential as one joined line.
        assert_eq!(
            d(&ck, &[("cookie", "a=1"), ("cookie", "b=2")]),
            d(&ck, &[("cookie", "a=1; b=2")])
        );
        assert_ne!(
            d(&ck, &[("cookie", "a=1"), ("cookie", "b=2")]),
            d(&ck, &[("cookie", "a=1, b=2")])
        );
    }

    #[test]
    fn json_content_types() {
        for (ct, json) in [
            ("application/json", true),
            ("application/problem+json; charset=utf-8", true),
            ("Application/JSON", true),
            ("text/html", false),
            ("application/jsonx", false),
            ("text/plain+json", false),
        ] {
            assert_eq!(is_json(&HeaderValue::from_static(ct)), json, "{ct}");
        }
    }
}
