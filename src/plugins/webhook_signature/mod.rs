//! `webhook_signature`: verifies inbound webhooks (Stripe, GitHub, Standard
//! Webhooks, or a generic HMAC) over the raw request body, before the upstream
//! is contacted.
//!
//! The body is read whole in `request()` with Pingora's retry buffer enabled;
//! Pingora then replays that buffer to the upstream byte for byte (see
//! `proxy_handle_downstream` in pingora-proxy's `proxy_h1.rs`/`proxy_h2.rs`:
//! `get_retry_buffer()`). The buffer holds at most 64 KiB and is *dropped*, not
//! cut short, when more arrives, so a larger body would reach the upstream
//! without its bytes: such bodies are refused with 413 before anything is
//! forwarded. HTTP/1.x and HTTP/2 downstream sessions share this mechanism.
//!
//! Every configured secret is tried and every presented signature compared
//! with `subtle` (no early exit, a wrong length is a plain mismatch). A
//! verified webhook is remembered for the tolerance window (bounded memory)
//! so that the same webhook id, or the same signed content, is refused as a
//! replay.

mod config;
mod replay;
mod schemes;
#[cfg(test)]
mod tests;

pub use config::{Algorithm, Encoding, Scheme, Template, WebhookSignatureConfig};
pub use schemes::{Refusal, RESULT_INVALID, RESULT_REPLAY, RESULT_STALE, RESULT_VALID};

use super::auth;
use crate::config::OneOrMany;
use crate::metrics::METRICS;
use crate::pipeline::{
    BuildCtx, BuildError, BuildResult, Flow, KeyPath, Order, Plugin, PluginConfig, RequestCtx,
    Series,
};
use config::Part;
use http::{HeaderMap, HeaderName};
use parking_lot::Mutex;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use replay::{Seen, Verified};
use schemes::{Generic, Key, Verifier, BODY_TIMEOUT, BODY_TOO_LARGE, REPLAY};

impl PluginConfig for WebhookSignatureConfig {
    const TYPE: &'static str = "webhook_signature";
    const ORDER: Order = Order::Auth;
    type Plugin = WebhookSignature;

    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<WebhookSignature> {
        WebhookSignature::new(self, bx)
    }
}

/// The largest body this plugin accepts: the size of Pingora's retry buffer
/// (`BODY_BUF_LIMIT`), which is what replays the verified body upstream.
pub const MAX_BODY: usize = 64 * 1024;

/// How many verified webhooks one plugin instance remembers for replay
/// detection; past this, the entry closest to expiry is forgotten.
pub const REPLAY_CAPACITY: usize = 100_000;

pub struct WebhookSignature {
    name: String,
    verifier: Verifier,
    keys: Vec<Key>,
    /// Seconds.
    tolerance: i64,
    seen: Mutex<Seen>,
}

fn unix_now() -> i64 {
    i64::try_from(crate::util::unix_now()).unwrap_or(i64::MAX)
}

fn header_name(key: &str, v: &str, errs: &mut Vec<BuildError>) -> Option<HeaderName> {
    match HeaderName::try_from(v) {
        Ok(h) => Some(h),
        Err(_) => {
            errs.push(BuildError {
                path: KeyPath::default().key(key),
                message: format!("invalid header name {v:?}"),
            });
            None
        }
    }
}

impl WebhookSignature {
    pub fn new(c: &WebhookSignatureConfig, bx: &BuildCtx<'_>) -> BuildResult<Self> {
        Self::from_config(c, bx.name)
    }

    /// Builds from a config table alone (no files are read), under `name`.
    pub fn from_config(c: &WebhookSignatureConfig, name: &str) -> BuildResult<Self> {
        let mut errs = Vec::new();
        let err = |errs: &mut Vec<BuildError>, path: KeyPath, message: String| {
            errs.push(BuildError { path, message })
        };
        let at = |key: &str| KeyPath::default().key(key);

        let generic_keys = [
            ("header", c.header.is_some()),
            ("algorithm", c.algorithm.is_some()),
            ("encoding", c.encoding.is_some()),
            ("timestamp_header", c.timestamp_header.is_some()),
            ("signed_string", c.signed_string.is_some()),
            ("prefix", c.prefix.is_some()),
        ];
        let algorithm = c.algorithm.unwrap_or(Algorithm::Sha256);
        let verifier = match c.scheme {
            Scheme::Hmac => Self::generic(c, &mut errs),
            fixed => {
                for (k, set) in generic_keys {
                    if set {
                        err(
                            &mut errs,
                            at(k),
                            format!(
                                "{k} applies to scheme = \"hmac\" only (scheme {:?} fixes its format)",
                                fixed.as_str()
                            ),
                        );
                    }
                }
                Some(match fixed {
                    Scheme::Stripe => Verifier::Stripe,
                    Scheme::Github => Verifier::Github,
                    _ => Verifier::StandardWebhooks,
                })
            }
        };

        // Secrets: from the table, then from the environment. Messages name the
        // place or the variable, never the value.
        let mut secrets: Vec<(KeyPath, String)> = c
            .secrets
            .iter()
            .enumerate()
            .map(|(i, s)| (at("secrets").index(i), s.clone()))
            .collect();
        if let Some(env) = &c.secrets_env {
            let names: Vec<(KeyPath, String)> = match env {
                OneOrMany::One(n) => vec![(at("secrets_env"), n.clone())],
                OneOrMany::Many(v) => v
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (at("secrets_env").index(i), n.clone()))
                    .collect(),
            };
            for (key, var) in names {
                match std::env::var(&var) {
                    Ok(s) if !s.is_empty() => secrets.push((key, s)),
                    Ok(_) => err(
                        &mut errs,
                        key.clone(),
                        format!("environment variable {var} is empty"),
                    ),
                    Err(std::env::VarError::NotPresent) => err(
                        &mut errs,
                        key.clone(),
                        format!("environment variable {var} is not set"),
                    ),
                    Err(std::env::VarError::NotUnicode(_)) => err(
                        &mut errs,
                        key.clone(),
                        format!("environment variable {var} does not hold UTF-8 text"),
                    ),
                }
            }
        }
        if c.secrets.is_empty() && c.secrets_env.is_none() {
            err(
                &mut errs,
                at("secrets"),
                "no secrets: give secrets = [...] and/or secrets_env".into(),
            );
        }
        let mut keys = Vec::new();
        for (key, s) in secrets {
            match config::secret_key(c.scheme, &s) {
                Ok(bytes) => keys.push(Key::new(algorithm, &bytes)),
                Err(m) => err(&mut errs, key, m.into()),
            }
        }

        let tolerance = c.tolerance.0.as_secs();
        if tolerance == 0 {
            err(
                &mut errs,
                at("tolerance"),
                "tolerance must be at least 1s".into(),
            );
        }

        match verifier {
            Some(verifier) if errs.is_empty() => Ok(WebhookSignature {
                name: name.to_string(),
                verifier,
                keys,
                tolerance: tolerance.min(i64::MAX as u64 / 4) as i64,
                seen: Mutex::new(Seen::default()),
            }),
            _ => Err(errs),
        }
    }

    /// The `hmac` scheme's own keys, checked together.
    fn generic(c: &WebhookSignatureConfig, errs: &mut Vec<BuildError>) -> Option<Verifier> {
        let header = match &c.header {
            Some(h) => header_name("header", h, errs),
            None => {
                errs.push(BuildError {
                    path: KeyPath::default().key("header"),
                    message: "scheme = \"hmac\" needs header (the header carrying the signature)"
                        .into(),
                });
                None
            }
        };
        let timestamp_header = c
            .timestamp_header
            .as_deref()
            .and_then(|h| header_name("timestamp_header", h, errs));
        let template = match &c.signed_string {
            Some(Template(t)) => {
                let has = |p: &dyn Fn(&Part) -> bool| t.iter().any(p);
                if !has(&|p| *p == Part::Body) {
                    errs.push(BuildError::at(
                        "signed_string",
                        "signed_string must contain {body}",
                    ));
                }
                let ts = has(&|p| *p == Part::Timestamp);
                if ts && c.timestamp_header.is_none() {
                    errs.push(BuildError::at(
                        "signed_string",
                        "{timestamp} needs timestamp_header",
                    ));
                }
                if !ts && c.timestamp_header.is_some() {
                    errs.push(BuildError::at(
                        "signed_string",
                        "with timestamp_header, signed_string must contain {timestamp}: an unsigned timestamp proves nothing",
                    ));
                }
                t.clone()
            }
            // `{timestamp}.{body}` with a timestamp header, else `{body}`.
            None if c.timestamp_header.is_some() => {
                vec![Part::Timestamp, Part::Lit(b".".to_vec()), Part::Body]
            }
            None => vec![Part::Body],
        };
        if let Some(p) = &c.prefix {
            if p.is_empty() || !auth::header_safe(p) {
                errs.push(BuildError {
                    path: KeyPath::default().key("prefix"),
                    message: "prefix must be non-empty printable text, e.g. \"sha256=\"".into(),
                });
            }
        }
        Some(Verifier::Hmac(Generic {
            header: header?,
            encoding: c.encoding.unwrap_or(Encoding::Hex),
            prefix: c.prefix.clone().unwrap_or_default(),
            timestamp_header,
            template,
        }))
    }

    /// Checks a webhook's headers and body at `now` (Unix seconds), without
    /// replay detection.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), Refusal> {
        let p = self.presented(headers, now)?;
        self.check(&p, body, now).map(|_| ())
    }

    /// [`verify`](Self::verify), then replay detection: a webhook already
    /// verified inside its window is refused with 409.
    pub fn verify_once(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), Refusal> {
        let p = self.presented(headers, now)?;
        let v = self.check(&p, body, now)?;
        self.admit(&v, now)
    }

    fn admit(&self, v: &Verified, now: i64) -> Result<(), Refusal> {
        let mut seen = self.seen.lock();
        if seen.admit(&v.keys, v.expires, now, REPLAY_CAPACITY) {
            Ok(())
        } else {
            Err(REPLAY)
        }
    }

    fn refuse(&self, ctx: &RequestCtx, r: Refusal, limit: usize) -> Flow {
        auth::count_failure(ctx, &self.name, r.reason);
        count_result(ctx, r.result());
        auth::refuse(r.status, r.detail(limit), vec![])
    }

    /// How many verified webhooks are remembered now.
    pub fn remembered(&self) -> usize {
        self.seen.lock().len()
    }
}

fn count_result(ctx: &RequestCtx, result: &'static str) {
    let route = ctx.route_name();
    METRICS
        .webhook_verifications
        .with_label_values(&[route, result])
        .inc();
}

impl Plugin for WebhookSignature {
    /// The replay keys of a verified delivery, until the upstream took it.
    type State = Vec<[u8; 32]>;

    fn series(&self) -> Vec<Series> {
        let results = [RESULT_VALID, RESULT_INVALID, RESULT_STALE, RESULT_REPLAY]
            .map(|result| Series::WebhookVerifications { result });
        let reasons = schemes::ALL.map(|r| Series::AuthFailures { reason: r.reason });
        results.into_iter().chain(reasons).collect()
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        state: &mut Self::State,
    ) -> pingora::Result<Flow> {
        let max_total = ctx.rt.limits.max_request_body;
        let limit = (MAX_BODY as u64).min(max_total) as usize;
        let now = unix_now();
        let verdict = self.presented(&session.req_header().headers, now);

        // The body is read even when the headers already decided a refusal:
        // answering before the body is consumed makes Pingora close the
        // connection on unread data, and the client may then see a reset
        // instead of the answer.
        let body = match crate::pipeline::read_body(session, ctx).await {
            Ok(b) => b,
            Err(e) => {
                let r = match (verdict, e) {
                    // A body whose framing broke (or a client that left): 400 when
                    // nothing was answered yet; the connection is closed after it.
                    (_, crate::pipeline::BodyError::Broken) => {
                        return Ok(Flow::problem(400, "the request body could not be read"))
                    }
                    // A stalled body is a 408 whatever the headers said.
                    (_, crate::pipeline::BodyError::Timeout) => BODY_TIMEOUT,
                    (Err(r), _) => r,
                    (Ok(_), crate::pipeline::BodyError::TooLarge) => BODY_TOO_LARGE,
                };
                return Ok(self.refuse(ctx, r, limit));
            }
        };
        let presented = match verdict {
            Ok(p) => p,
            Err(r) => return Ok(self.refuse(ctx, r, limit)),
        };

        let verified = self
            .check(&presented, &body, now)
            .and_then(|v| self.admit(&v, now).map(|()| v));
        match verified {
            Ok(v) => {
                count_result(ctx, RESULT_VALID);
                ctx.webhook_id = presented.webhook_id().map(str::to_string);
                // Remembered for good only once the upstream has taken it (see `finish`).
                *state = v.keys;
                Ok(Flow::Continue)
            }
            Err(r) => Ok(self.refuse(ctx, r, limit)),
        }
    }

    fn upstream_request(
        &self,
        req: &mut RequestHeader,
        _ctx: &RequestCtx,
        _state: &mut Self::State,
    ) -> pingora::Result<()> {
        // The body is already here: the upstream has nothing to "continue".
        req.remove_header(&http::header::EXPECT);
        Ok(())
    }

    fn upstream_response(
        &self,
        _resp: &pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
        state: &mut Self::State,
    ) {
        // Decide as soon as the upstream's answer is known, before the client
        // has it (and may retry).
        self.finish(ctx, state);
    }

    fn finish(&self, ctx: &mut RequestCtx, state: &mut Self::State) {
        let keys = std::mem::take(state);
        if keys.is_empty() {
            return;
        }
        // Not delivered (refused later on the route, upstream failure or 5xx,
        // client gone): forget it, so that the sender's retry is not a "replay".
        let delivered = ctx
            .upstream
            .outcome
            .is_some_and(|o| o.status.is_some_and(|s| s < 500));
        if !delivered {
            self.seen.lock().forget(&keys);
        }
    }

    async fn tick(&self) {
        let now = unix_now();
        self.seen.lock().purge(now);
    }
}
