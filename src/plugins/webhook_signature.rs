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

use super::{auth};
use crate::config::{Dur};
use crate::pipeline::{BuildCtx, BuildError, BuildResult, Flow, KeyPath, Order, Plugin, PluginConfig, RequestCtx};
use crate::config::{OneOrMany};
use crate::metrics::METRICS;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use sha2::{Digest, Sha256, Sha512};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use subtle::{Choice, ConstantTimeEq};

use serde::Deserialize;

// ---------------------------------------------------------------------------
// Config: `type = "webhook_signature"`
// ---------------------------------------------------------------------------

fn default_tolerance() -> Dur {
    Dur::secs(300)
}

/// `type = "webhook_signature"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSignatureConfig {
    /// `stripe`, `github`, `standard_webhooks` or `hmac`.
    pub scheme: String,
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Name(s) of environment variables, each holding one secret.
    #[serde(default)]
    pub secrets_env: Option<OneOrMany>,
    #[serde(default = "default_tolerance")]
    pub tolerance: Dur,
    /// `hmac` only: the header carrying the signature.
    #[serde(default)]
    pub header: Option<String>,
    /// `hmac` only: `sha256` (default) or `sha512`.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// `hmac` only: `hex` (default) or `base64`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// `hmac` only: a header with the Unix timestamp that is signed too.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// `hmac` only: the signed string, from `{body}`, `{timestamp}` and `{header:NAME}`;
    /// default `{body}`, or `{timestamp}.{body}` with `timestamp_header`.
    #[serde(default)]
    pub signed_string: Option<String>,
    /// `hmac` only: a prefix before the signature value, e.g. `sha256=`.
    #[serde(default)]
    pub prefix: Option<String>,
}

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

/// Why a webhook was refused: the HTTP status and a short reason code (the
/// `reason` label of `tollgate_auth_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

const fn no(reason: &'static str) -> Refusal {
    Refusal {
        status: 401,
        reason,
    }
}

const MISSING_SIGNATURE: Refusal = no("missing_signature");
const MALFORMED_SIGNATURE: Refusal = no("malformed_signature");
const BAD_SIGNATURE: Refusal = no("bad_signature");
const MISSING_TIMESTAMP: Refusal = no("missing_timestamp");
const BAD_TIMESTAMP: Refusal = no("bad_timestamp");
const STALE_TIMESTAMP: Refusal = no("stale_timestamp");
const MISSING_ID: Refusal = no("missing_id");
const MISSING_HEADER: Refusal = no("missing_header");
const DUPLICATE_HEADER: Refusal = no("duplicate_header");
const REPLAY: Refusal = Refusal {
    status: 409,
    reason: "replay",
};
const BODY_TOO_LARGE: Refusal = Refusal {
    status: 413,
    reason: "body_too_large",
};
const BODY_TIMEOUT: Refusal = Refusal {
    status: 408,
    reason: "body_timeout",
};

impl Refusal {
    /// The `result` label of `tollgate_webhook_verifications_total`.
    pub fn result(&self) -> &'static str {
        match self.reason {
            "stale_timestamp" => "stale",
            "replay" => "replay",
            _ => "invalid",
        }
    }

    fn detail(&self, limit: usize) -> String {
        match self.reason {
            "missing_signature" => "the webhook carries no signature of the expected scheme".into(),
            "malformed_signature" => "the webhook signature header is malformed".into(),
            "bad_signature" => "the webhook signature does not match".into(),
            "missing_timestamp" => "the webhook timestamp is missing".into(),
            "bad_timestamp" => "the webhook timestamp is not a Unix time in seconds".into(),
            "stale_timestamp" => "the webhook timestamp is outside the accepted tolerance".into(),
            "missing_id" => "the webhook id is missing".into(),
            "missing_header" => "a header covered by the webhook signature is missing".into(),
            "duplicate_header" => "a webhook signature header appears more than once".into(),
            "replay" => "this webhook was already received".into(),
            "body_too_large" => {
                format!("the webhook body is larger than {limit} bytes, the most that is verified")
            }
            "body_timeout" => "the webhook body was not received in time".into(),
            _ => "the webhook was refused".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Algorithm {
    Sha256,
    Sha512,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Hex,
    Base64,
}

/// One piece of the generic scheme's signed string.
#[derive(Debug, PartialEq, Eq)]
enum Part {
    Lit(Vec<u8>),
    Body,
    Timestamp,
    Header(HeaderName),
}

struct Generic {
    header: HeaderName,
    encoding: Encoding,
    prefix: String,
    timestamp_header: Option<HeaderName>,
    template: Vec<Part>,
}

enum Scheme {
    Stripe,
    Github,
    StandardWebhooks,
    Hmac(Generic),
}

/// A secret as a keyed HMAC state, cloned for each verification (the key
/// schedule is done once).
#[derive(Clone)]
enum Key {
    S256(Hmac<Sha256>),
    S512(Hmac<Sha512>),
}

impl Key {
    fn new(alg: Algorithm, secret: &[u8]) -> Key {
        // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        match alg {
            Algorithm::Sha256 => Key::S256(
                <Hmac<Sha256> as Mac>::new_from_slice(secret)
                    .unwrap_or_else(|_| unreachable!("HMAC accepts any key length")),
            ),
            Algorithm::Sha512 => Key::S512(
                <Hmac<Sha512> as Mac>::new_from_slice(secret)
                    .unwrap_or_else(|_| unreachable!("HMAC accepts any key length")),
            ),
        }
    }

    fn sign(&self, parts: &[&[u8]]) -> Vec<u8> {
        match self {
            Key::S256(k) => {
                let mut m = k.clone();
                for p in parts {
                    m.update(p);
                }
                m.finalize().into_bytes().to_vec()
            }
            Key::S512(k) => {
                let mut m = k.clone();
                for p in parts {
                    m.update(p);
                }
                m.finalize().into_bytes().to_vec()
            }
        }
    }
}

/// What a request's headers present, read before the body.
struct Presented {
    /// The timestamp exactly as sent (it is signed as text).
    timestamp: Option<String>,
    /// The signed webhook id (standard_webhooks).
    id: Option<String>,
    /// The unsigned delivery id (github).
    delivery: Option<String>,
    /// Decoded candidate signatures; any one matching is enough.
    sigs: Vec<Vec<u8>>,
    /// Values of `{header:NAME}` parts, in template order.
    signed_headers: Vec<Vec<u8>>,
}

/// A verified webhook: the keys that identify it for replay detection, and
/// until when (Unix seconds, inclusive) it must be remembered.
struct Verified {
    keys: Vec<[u8; 32]>,
    expires: i64,
}

/// Verified webhooks remembered until their window closes, at most `cap`.
#[derive(Default)]
struct Seen {
    by_key: HashMap<[u8; 32], (i64, u64)>,
    by_expiry: BTreeSet<(i64, u64, [u8; 32])>,
    seq: u64,
}

impl Seen {
    fn purge(&mut self, now: i64) {
        while let Some(&(exp, seq, key)) = self.by_expiry.first() {
            if exp >= now {
                break;
            }
            self.by_expiry.remove(&(exp, seq, key));
            self.by_key.remove(&key);
        }
    }

    /// Remembers `keys` unless one of them is already remembered (a replay).
    /// Check and insert happen under one lock, so of two simultaneous copies
    /// exactly one is admitted.
    fn admit(&mut self, keys: &[[u8; 32]], expires: i64, now: i64, cap: usize) -> bool {
        self.purge(now);
        if keys.iter().any(|k| self.by_key.contains_key(k)) {
            return false;
        }
        for k in keys {
            while self.by_key.len() >= cap.max(1) {
                let Some(&(exp, seq, old)) = self.by_expiry.first() else {
                    break;
                };
                self.by_expiry.remove(&(exp, seq, old));
                self.by_key.remove(&old);
            }
            self.seq += 1;
            self.by_key.insert(*k, (expires, self.seq));
            self.by_expiry.insert((expires, self.seq, *k));
        }
        true
    }

    /// Forget `keys`, so that the sender may deliver the webhook again.
    fn forget(&mut self, keys: &[[u8; 32]]) {
        for k in keys {
            if let Some((exp, seq)) = self.by_key.remove(k) {
                self.by_expiry.remove(&(exp, seq, *k));
            }
        }
    }

    fn len(&self) -> usize {
        self.by_key.len()
    }
}

pub struct WebhookSignature {
    name: String,
    scheme: Scheme,
    keys: Vec<Key>,
    /// Seconds.
    tolerance: i64,
    seen: Mutex<Seen>,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn replay_key(kind: &[u8], value: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(kind);
    h.update([0u8]);
    h.update(value);
    h.finalize().into()
}

/// The only value of header `name`, if any; a repeated header is ambiguous.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h [u8]>, Refusal> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(DUPLICATE_HEADER);
    }
    Ok(first.map(|v| v.as_bytes()))
}

fn text(v: &[u8]) -> Result<&str, Refusal> {
    std::str::from_utf8(v).map_err(|_| MALFORMED_SIGNATURE)
}

/// A Unix time in seconds: 1 to 15 ASCII digits.
fn parse_timestamp(s: &str) -> Option<i64> {
    (!s.is_empty() && s.len() <= 15 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Parses a `signed_string` template.
fn parse_template(t: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut lit = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("unmatched '}}' in signed_string {t:?}"));
        }
        lit.extend_from_slice(&rest.as_bytes()[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("unterminated placeholder in signed_string {t:?}"));
        };
        let name = &after[..close];
        let part = match name {
            "body" => Part::Body,
            "timestamp" => Part::Timestamp,
            _ => match name.strip_prefix("header:") {
                Some(h) => Part::Header(HeaderName::try_from(h.trim()).map_err(|_| {
                    format!("invalid header name {h:?} in signed_string placeholder")
                })?),
                None => {
                    return Err(format!(
                        "unknown placeholder {{{name}}} in signed_string: use {{body}}, {{timestamp}} or {{header:NAME}}"
                    ))
                }
            },
        };
        if !lit.is_empty() {
            parts.push(Part::Lit(std::mem::take(&mut lit)));
        }
        parts.push(part);
        rest = &after[close + 1..];
    }
    lit.extend_from_slice(rest.as_bytes());
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    Ok(parts)
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
        let mut algorithm = Algorithm::Sha256;
        let scheme = match c.scheme.as_str() {
            "stripe" | "github" | "standard_webhooks" => {
                for (k, set) in generic_keys {
                    if set {
                        err(
                            &mut errs,
                            at(k),
                            format!("{k} applies to scheme = \"hmac\" only (scheme {:?} fixes its format)", c.scheme),
                        );
                    }
                }
                match c.scheme.as_str() {
                    "stripe" => Some(Scheme::Stripe),
                    "github" => Some(Scheme::Github),
                    _ => Some(Scheme::StandardWebhooks),
                }
            }
            "hmac" => Self::generic(c, &mut errs, &mut algorithm),
            other => {
                err(
                    &mut errs,
                    at("scheme"),
                    format!("unknown scheme {other:?}: use \"stripe\", \"github\", \"standard_webhooks\" or \"hmac\""),
                );
                None
            }
        };

        // Secrets: from the table, then from the environment. Messages name the
        // place or the variable, never the value.
        let mut secrets: Vec<(KeyPath, String)> = Vec::new();
        for (i, s) in c.secrets.iter().enumerate() {
            let key = KeyPath::default().key("secrets").index(i);
            if s.is_empty() {
                err(&mut errs, key, "a secret must not be empty".into());
            } else {
                secrets.push((key, s.clone()));
            }
        }
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
        for (key, s) in &secrets {
            let bytes = if matches!(scheme, Some(Scheme::StandardWebhooks)) {
                match s.strip_prefix("whsec_").map(|b| B64.decode(b)) {
                    Some(Ok(k)) if !k.is_empty() => k,
                    _ => {
                        err(
                            &mut errs,
                            key.clone(),
                            "a standard_webhooks secret is \"whsec_\" followed by the base64 of the key".into(),
                        );
                        continue;
                    }
                }
            } else {
                s.as_bytes().to_vec()
            };
            keys.push(Key::new(algorithm, &bytes));
        }

        let tolerance = c.tolerance.0.as_secs();
        if tolerance == 0 {
            err(
                &mut errs,
                at("tolerance"),
                "tolerance must be at least 1s".into(),
            );
        }

        match scheme {
            Some(scheme) if errs.is_empty() => Ok(WebhookSignature {
                name: name.to_string(),
                scheme,
                keys,
                tolerance: tolerance.min(i64::MAX as u64 / 4) as i64,
                seen: Mutex::new(Seen::default()),
            }),
            _ => Err(errs),
        }
    }

    fn generic(
        c: &WebhookSignatureConfig,
        errs: &mut Vec<BuildError>,
        algorithm: &mut Algorithm,
    ) -> Option<Scheme> {
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
        match c.algorithm.as_deref() {
            None | Some("sha256") => *algorithm = Algorithm::Sha256,
            Some("sha512") => *algorithm = Algorithm::Sha512,
            Some(a) => errs.push(BuildError {
                path: KeyPath::default().key("algorithm"),
                message: format!("unknown algorithm {a:?}: use \"sha256\" or \"sha512\""),
            }),
        }
        let encoding = match c.encoding.as_deref() {
            None | Some("hex") => Encoding::Hex,
            Some("base64") => Encoding::Base64,
            Some(e) => {
                errs.push(BuildError {
                    path: KeyPath::default().key("encoding"),
                    message: format!("unknown encoding {e:?}: use \"hex\" or \"base64\""),
                });
                Encoding::Hex
            }
        };
        let timestamp_header = c
            .timestamp_header
            .as_deref()
            .and_then(|h| header_name("timestamp_header", h, errs));
        let default_template = if c.timestamp_header.is_some() {
            "{timestamp}.{body}"
        } else {
            "{body}"
        };
        let tpl = c.signed_string.as_deref().unwrap_or(default_template);
        let template = match parse_template(tpl) {
            Ok(t) => {
                let has = |p: &dyn Fn(&Part) -> bool| t.iter().any(p);
                if !has(&|p| *p == Part::Body) {
                    errs.push(BuildError {
                        path: KeyPath::default().key("signed_string"),
                        message: "signed_string must contain {body}".into(),
                    });
                }
                let ts = has(&|p| *p == Part::Timestamp);
                if ts && c.timestamp_header.is_none() {
                    errs.push(BuildError {
                        path: KeyPath::default().key("signed_string"),
                        message: "{timestamp} needs timestamp_header".into(),
                    });
                }
                if !ts && c.timestamp_header.is_some() {
                    errs.push(BuildError {
                        path: KeyPath::default().key("signed_string"),
                        message: "with timestamp_header, signed_string must contain {timestamp}: an unsigned timestamp proves nothing".into(),
                    });
                }
                t
            }
            Err(m) => {
                errs.push(BuildError {
                    path: KeyPath::default().key("signed_string"),
                    message: m,
                });
                Vec::new()
            }
        };
        if let Some(p) = &c.prefix {
            if p.is_empty() || !auth::header_safe(p) {
                errs.push(BuildError {
                    path: KeyPath::default().key("prefix"),
                    message: "prefix must be non-empty printable text, e.g. \"sha256=\"".into(),
                });
            }
        }
        Some(Scheme::Hmac(Generic {
            header: header?,
            encoding,
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
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.admit(&v.keys, v.expires, now, REPLAY_CAPACITY) {
            Ok(())
        } else {
            Err(REPLAY)
        }
    }


    /// Reads and checks everything the headers carry: signatures, timestamp
    /// (against the tolerance), ids.
    fn presented(&self, h: &HeaderMap, now: i64) -> Result<Presented, Refusal> {
        let mut p = Presented {
            timestamp: None,
            id: None,
            delivery: None,
            sigs: Vec::new(),
            signed_headers: Vec::new(),
        };
        match &self.scheme {
            Scheme::Stripe => {
                let v = single(h, &HeaderName::from_static("stripe-signature"))?
                    .ok_or(MISSING_SIGNATURE)?;
                let mut any = false;
                for item in text(v)?.split(',') {
                    let Some((k, val)) = item.split_once('=') else {
                        continue;
                    };
                    match k.trim() {
                        "t" if p.timestamp.is_some() => return Err(MALFORMED_SIGNATURE),
                        "t" => p.timestamp = Some(val.trim().to_string()),
                        "v1" => {
                            any = true;
                            if let Ok(s) = hex::decode(val.trim()) {
                                p.sigs.push(s);
                            }
                        }
                        _ => {} // v0 and other schemes: ignored
                    }
                }
                if !any {
                    return Err(MISSING_SIGNATURE);
                }
                if p.timestamp.is_none() {
                    return Err(MISSING_TIMESTAMP);
                }
            }
            Scheme::Github => {
                let v = single(h, &HeaderName::from_static("x-hub-signature-256"))?
                    .ok_or(MISSING_SIGNATURE)?;
                let v = text(v)?.trim();
                if v.is_empty() {
                    return Err(MISSING_SIGNATURE);
                }
                let hexsig = v.strip_prefix("sha256=").ok_or(MALFORMED_SIGNATURE)?;
                if let Ok(s) = hex::decode(hexsig) {
                    p.sigs.push(s);
                }
                p.delivery = single(h, &HeaderName::from_static("x-github-delivery"))?
                    .map(|d| String::from_utf8_lossy(d).into_owned())
                    .filter(|d| !d.is_empty());
            }
            Scheme::StandardWebhooks => {
                let v = single(h, &HeaderName::from_static("webhook-signature"))?
                    .ok_or(MISSING_SIGNATURE)?;
                let mut any = false;
                for entry in text(v)?.split_ascii_whitespace() {
                    if let Some(("v1", b64)) = entry.split_once(',') {
                        any = true;
                        if let Ok(s) = B64.decode(b64) {
                            p.sigs.push(s);
                        }
                    }
                }
                if !any {
                    return Err(MISSING_SIGNATURE);
                }
                let id = single(h, &HeaderName::from_static("webhook-id"))?.ok_or(MISSING_ID)?;
                if id.is_empty() {
                    return Err(MISSING_ID);
                }
                p.id = Some(String::from_utf8_lossy(id).into_owned());
                let ts = single(h, &HeaderName::from_static("webhook-timestamp"))?
                    .ok_or(MISSING_TIMESTAMP)?;
                p.timestamp = Some(String::from_utf8_lossy(ts).into_owned());
            }
            Scheme::Hmac(g) => {
                let v = single(h, &g.header)?.ok_or(MISSING_SIGNATURE)?;
                let v = text(v)?.trim();
                if v.is_empty() {
                    return Err(MISSING_SIGNATURE);
                }
                let enc = v
                    .strip_prefix(g.prefix.as_str())
                    .ok_or(MALFORMED_SIGNATURE)?
                    .trim();
                let decoded = match g.encoding {
                    Encoding::Hex => hex::decode(enc).ok(),
                    Encoding::Base64 => B64.decode(enc).ok(),
                };
                p.sigs.extend(decoded);
                if let Some(th) = &g.timestamp_header {
                    let ts = single(h, th)?.ok_or(MISSING_TIMESTAMP)?;
                    p.timestamp = Some(String::from_utf8_lossy(ts).into_owned());
                }
                for part in &g.template {
                    if let Part::Header(n) = part {
                        let v = single(h, n)?.ok_or(MISSING_HEADER)?;
                        p.signed_headers.push(v.to_vec());
                    }
                }
            }
        }
        if let Some(ts) = &p.timestamp {
            let t = parse_timestamp(ts.trim()).ok_or(BAD_TIMESTAMP)?;
            if (now - t).abs() > self.tolerance {
                return Err(STALE_TIMESTAMP);
            }
        }
        Ok(p)
    }

    /// Compares every presented signature with the one every secret makes.
    fn check(&self, p: &Presented, body: &[u8], now: i64) -> Result<Verified, Refusal> {
        let ts = p.timestamp.as_deref().unwrap_or("").as_bytes();
        let mut msg: Vec<&[u8]> = Vec::with_capacity(8);
        match &self.scheme {
            Scheme::Stripe => msg.extend([ts, b".", body]),
            Scheme::Github => msg.push(body),
            Scheme::StandardWebhooks => {
                let id = p.id.as_deref().unwrap_or("").as_bytes();
                msg.extend([id, b".", ts, b".", body]);
            }
            Scheme::Hmac(g) => {
                let mut headers = p.signed_headers.iter();
                for part in &g.template {
                    msg.push(match part {
                        Part::Lit(l) => l,
                        Part::Body => body,
                        Part::Timestamp => ts,
                        Part::Header(_) => headers.next().map(Vec::as_slice).unwrap_or(b""),
                    });
                }
            }
        }
        let mut ok = Choice::from(0);
        let mut primary = None;
        for key in &self.keys {
            let mac = key.sign(&msg);
            for s in &p.sigs {
                // Slices of different lengths compare unequal (no panic).
                ok |= mac.as_slice().ct_eq(s.as_slice());
            }
            primary.get_or_insert(mac);
        }
        if !bool::from(ok) {
            return Err(BAD_SIGNATURE);
        }
        // The signed content, as the signature the first secret makes of it:
        // the same whichever presented signature or secret matched.
        let content = replay_key(b"content", primary.as_deref().unwrap_or(b""));
        let keys = match &self.scheme {
            Scheme::StandardWebhooks => {
                vec![replay_key(b"id", p.id.as_deref().unwrap_or("").as_bytes())]
            }
            // X-GitHub-Delivery is not signed: the content is remembered too.
            Scheme::Github => std::iter::once(content)
                .chain(
                    p.delivery
                        .as_deref()
                        .map(|d| replay_key(b"delivery", d.as_bytes())),
                )
                .collect(),
            _ => vec![content],
        };
        let t = p
            .timestamp
            .as_deref()
            .and_then(|t| parse_timestamp(t.trim()))
            .unwrap_or(now);
        Ok(Verified {
            keys,
            // A timestamped webhook stays acceptable until t + tolerance.
            expires: t.max(now).saturating_add(self.tolerance),
        })
    }

    fn refuse(&self, ctx: &RequestCtx, r: Refusal, limit: usize) -> Flow {
        auth::count_failure(ctx, &self.name, r.reason);
        count_result(ctx, r.result());
        auth::refuse(r.status, r.detail(limit), vec![])
    }

    /// How many verified webhooks are remembered now.
    pub fn remembered(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

fn count_result(ctx: &RequestCtx, result: &str) {
    let route = ctx.route().map(|r| &*r.name).unwrap_or("");
    METRICS
        .webhook_verifications
        .with_label_values(&[route, result])
        .inc();
}

impl Plugin for WebhookSignature {
    /// The replay keys of a verified delivery, until the upstream took it.
    type State = Vec<[u8; 32]>;

    async fn request(&self, session: &mut Session, ctx: &mut RequestCtx, state: &mut Self::State) -> pingora::Result<Flow> {
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
                count_result(ctx, "valid");
                // Remembered for good only once the upstream has taken it (see `finish`).
                *state = v.keys;
                Ok(Flow::Continue)
            }
            Err(r) => Ok(self.refuse(ctx, r, limit)),
        }
    }

    fn upstream_request(&self, req: &mut RequestHeader, _ctx: &RequestCtx, _state: &mut Self::State) -> pingora::Result<()> {
        // The body is already here: the upstream has nothing to "continue".
        req.remove_header(&http::header::EXPECT);
        Ok(())
    }

    fn upstream_response(&self, _resp: &pingora::http::ResponseHeader, ctx: &mut RequestCtx, state: &mut Self::State) {
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
            .upstream.outcome
            .is_some_and(|o| o.status.is_some_and(|s| s < 500));
        if !delivered {
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget(&keys);
        }
    }

    async fn tick(&self) {
        let now = unix_now();
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .purge(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cfg(toml_src: &str) -> WebhookSignatureConfig {
        toml::from_str(toml_src).expect("config")
    }

    fn build(toml_src: &str) -> WebhookSignature {
        match WebhookSignature::from_config(&cfg(toml_src), "wh") {
            Ok(w) => w,
            Err(e) => panic!("{e:?}"),
        }
    }

    fn errors(toml_src: &str) -> Vec<BuildError> {
        match WebhookSignature::from_config(&cfg(toml_src), "wh") {
            Ok(_) => panic!("built: {toml_src}"),
            Err(e) => e,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::try_from(*n).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        Key::new(Algorithm::Sha256, key).sign(parts)
    }

    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TS: i64 = 1614265330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn sw_headers(sig: &str, ts: i64) -> HeaderMap {
        headers(&[
            ("webhook-id", SW_ID),
            ("webhook-timestamp", &ts.to_string()),
            ("webhook-signature", sig),
        ])
    }

    #[test]
    fn standard_webhooks_reference_vector() {
        let w = build(&format!(
            "scheme = \"standard_webhooks\"\nsecrets = [\"{SW_SECRET}\"]"
        ));
        // Our signer makes the reference signature...
        let key = B64.decode(SW_SECRET.trim_start_matches("whsec_")).unwrap();
        let ts = SW_TS.to_string();
        let mac = hmac256(
            &key,
            &[SW_ID.as_bytes(), b".", ts.as_bytes(), b".", SW_BODY],
        );
        assert_eq!(format!("v1,{}", B64.encode(mac)), SW_SIG);
        // ...and the verifier accepts it with the clock at the vector's time.
        assert_eq!(w.verify(&sw_headers(SW_SIG, SW_TS), SW_BODY, SW_TS), Ok(()));
        assert_eq!(
            w.verify(&sw_headers(SW_SIG, SW_TS), SW_BODY, SW_TS + 300),
            Ok(())
        );
        assert_eq!(
            w.verify(&sw_headers(SW_SIG, SW_TS), SW_BODY, SW_TS - 300),
            Ok(())
        );
        // One valid among several; unknown versions ignored.
        let several = format!("v1,AAAA v1a,bm90IGEgc2ln {SW_SIG} v2,Zm9v");
        assert_eq!(
            w.verify(&sw_headers(&several, SW_TS), SW_BODY, SW_TS),
            Ok(())
        );
        // Outside the tolerance in either direction.
        for now in [SW_TS + 301, SW_TS - 301] {
            assert_eq!(
                w.verify(&sw_headers(SW_SIG, SW_TS), SW_BODY, now),
                Err(STALE_TIMESTAMP)
            );
        }
        // Tampered body, re-serialised JSON, other timestamp, other id.
        assert_eq!(
            w.verify(
                &sw_headers(SW_SIG, SW_TS),
                br#"{"test": 2432232315}"#,
                SW_TS
            ),
            Err(BAD_SIGNATURE)
        );
        assert_eq!(
            w.verify(&sw_headers(SW_SIG, SW_TS), br#"{"test":2432232314}"#, SW_TS),
            Err(BAD_SIGNATURE)
        );
        assert_eq!(
            w.verify(&sw_headers(SW_SIG, SW_TS + 1), SW_BODY, SW_TS),
            Err(BAD_SIGNATURE)
        );
        let mut h = sw_headers(SW_SIG, SW_TS);
        h.insert("webhook-id", HeaderValue::from_static("msg_other"));
        assert_eq!(w.verify(&h, SW_BODY, SW_TS), Err(BAD_SIGNATURE));
        // Only unknown versions, nothing, missing id or timestamp.
        assert_eq!(
            w.verify(&sw_headers("v1a,Zm9v", SW_TS), SW_BODY, SW_TS),
            Err(MISSING_SIGNATURE)
        );
        assert_eq!(
            w.verify(&sw_headers("", SW_TS), SW_BODY, SW_TS),
            Err(MISSING_SIGNATURE)
        );
        assert_eq!(
            w.verify(&sw_headers("v1,", SW_TS), SW_BODY, SW_TS),
            Err(BAD_SIGNATURE)
        );
        assert_eq!(
            w.verify(&sw_headers("v1,!!!", SW_TS), SW_BODY, SW_TS),
            Err(BAD_SIGNATURE)
        );
        let mut h = sw_headers(SW_SIG, SW_TS);
        h.remove("webhook-id");
        assert_eq!(w.verify(&h, SW_BODY, SW_TS), Err(MISSING_ID));
        let mut h = sw_headers(SW_SIG, SW_TS);
        h.remove("webhook-timestamp");
        assert_eq!(w.verify(&h, SW_BODY, SW_TS), Err(MISSING_TIMESTAMP));
        let mut h = sw_headers(SW_SIG, SW_TS);
        h.insert("webhook-timestamp", HeaderValue::from_static("-5"));
        assert_eq!(w.verify(&h, SW_BODY, SW_TS), Err(BAD_TIMESTAMP));
        let mut h = sw_headers(SW_SIG, SW_TS);
        h.append("webhook-signature", HeaderValue::from_static("v1,AAAA"));
        assert_eq!(w.verify(&h, SW_BODY, SW_TS), Err(DUPLICATE_HEADER));
    }

    #[test]
    fn standard_webhooks_replay_is_the_same_id() {
        let w = build(&format!(
            "scheme = \"standard_webhooks\"\nsecrets = [\"{SW_SECRET}\"]"
        ));
        let h = sw_headers(SW_SIG, SW_TS);
        assert_eq!(w.verify_once(&h, SW_BODY, SW_TS), Ok(()));
        assert_eq!(w.verify_once(&h, SW_BODY, SW_TS + 10), Err(REPLAY));
        // A refused (forged) copy is not remembered and changes nothing.
        assert_eq!(
            w.verify_once(&sw_headers("v1,AAAA", SW_TS), SW_BODY, SW_TS),
            Err(BAD_SIGNATURE)
        );
        assert_eq!(w.remembered(), 1);
        // Past the window the timestamp is stale anyway and the entry expires.
        assert_eq!(
            w.verify_once(&h, SW_BODY, SW_TS + 301),
            Err(STALE_TIMESTAMP)
        );
        w.seen.lock().unwrap().purge(SW_TS + 301);
        assert_eq!(w.remembered(), 0);
    }

    #[test]
    fn github_documented_example() {
        let w = build("scheme = \"github\"\nsecrets = [\"It's a Secret to Everybody\"]");
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let h = |s: &str, d: &str| headers(&[("x-hub-signature-256", s), ("x-github-delivery", d)]);
        // No timestamp: any clock will do.
        assert_eq!(w.verify(&h(sig, "d1"), b"Hello, World!", 0), Ok(()));
        assert_eq!(
            w.verify(
                &h(&sig.to_uppercase().replace("SHA256=", "sha256="), "d1"),
                b"Hello, World!",
                0
            ),
            Ok(())
        );
        assert_eq!(
            w.verify(&h(sig, "d1"), b"Hello, World?", 0),
            Err(BAD_SIGNATURE)
        );
        assert_eq!(
            w.verify(&h(&sig[..sig.len() - 2], "d1"), b"Hello, World!", 0),
            Err(BAD_SIGNATURE)
        );
        assert_eq!(
            w.verify(&h(&format!("{sig}00"), "d1"), b"Hello, World!", 0),
            Err(BAD_SIGNATURE)
        );
        assert_eq!(
            w.verify(&h("sha256=", "d1"), b"Hello, World!", 0),
            Err(BAD_SIGNATURE)
        );
        assert_eq!(
            w.verify(&h("sha256=zz", "d1"), b"Hello, World!", 0),
            Err(BAD_SIGNATURE)
        );
        assert_eq!(
            w.verify(&h("", "d1"), b"Hello, World!", 0),
            Err(MISSING_SIGNATURE)
        );
        assert_eq!(
            w.verify(
                &h(&sig.replace("sha256=", "sha1="), "d1"),
                b"Hello, World!",
                0
            ),
            Err(MALFORMED_SIGNATURE)
        );
        assert_eq!(
            w.verify(&headers(&[]), b"Hello, World!", 0),
            Err(MISSING_SIGNATURE)
        );
        // Replay: the same delivery, or the same signed content under a new
        // (unsigned) delivery id.
        assert_eq!(w.verify_once(&h(sig, "d1"), b"Hello, World!", 1000), Ok(()));
        assert_eq!(
            w.verify_once(&h(sig, "d1"), b"Hello, World!", 1001),
            Err(REPLAY)
        );
        assert_eq!(
            w.verify_once(&h(sig, "d2"), b"Hello, World!", 1001),
            Err(REPLAY)
        );
        // The window is the tolerance.
        assert_eq!(w.verify_once(&h(sig, "d1"), b"Hello, World!", 1301), Ok(()));
    }

    fn stripe_header(secret: &str, t: i64, body: &[u8]) -> String {
        let ts = t.to_string();
        format!(
            "t={ts},v1={}",
            hex::encode(hmac256(secret.as_bytes(), &[ts.as_bytes(), b".", body]))
        )
    }

    #[test]
    fn stripe_format() {
        let w = build(
            "scheme = \"stripe\"\nsecrets = [\"whsec_old\", \"whsec_new\"]\ntolerance = \"2m\"",
        );
        let now = 1_700_000_000;
        let body = br#"{"id":"evt_1","object":"event"}"#;
        let h = |v: &str| headers(&[("stripe-signature", v)]);
        let good = stripe_header("whsec_new", now, body);
        assert_eq!(w.verify(&h(&good), body, now), Ok(()));
        assert_eq!(
            w.verify(&h(&stripe_header("whsec_old", now, body)), body, now),
            Ok(())
        );
        assert_eq!(
            w.verify(&h(&stripe_header("whsec_other", now, body)), body, now),
            Err(BAD_SIGNATURE)
        );
        // Several v1, v0 ignored, spaces tolerated.
        let v1 = good.split_once(",v1=").unwrap().1;
        let mixed = format!("t={now}, v0={v1}, v1={}, v1={v1}", "ab".repeat(32));
        assert_eq!(w.verify(&h(&mixed), body, now), Ok(()));
        assert_eq!(
            w.verify(&h(&format!("t={now},v0={v1}")), body, now),
            Err(MISSING_SIGNATURE)
        );
        assert_eq!(
            w.verify(&h(&format!("v1={v1}")), body, now),
            Err(MISSING_TIMESTAMP)
        );
        assert_eq!(
            w.verify(&h(&format!("t={now},t={now},v1={v1}")), body, now),
            Err(MALFORMED_SIGNATURE)
        );
        assert_eq!(
            w.verify(&h(&format!("t=soon,v1={v1}")), body, now),
            Err(BAD_TIMESTAMP)
        );
        assert_eq!(
            w.verify(&h(&format!("t={now},v1=")), body, now),
            Err(BAD_SIGNATURE)
        );
        assert_eq!(w.verify(&h(&good), body, now + 121), Err(STALE_TIMESTAMP));
        assert_eq!(w.verify(&h(&good), body, now - 121), Err(STALE_TIMESTAMP));
        assert_eq!(w.verify(&h(&good), body, now + 120), Ok(()));
        // The timestamp is signed.
        assert_eq!(
            w.verify(
                &h(&good.replace(&format!("t={now}"), &format!("t={}", now + 1))),
                body,
                now
            ),
            Err(BAD_SIGNATURE)
        );

        // Replay of the same content, whichever signature or secret matched.
        let both = format!(
            "{},v1={}",
            stripe_header("whsec_old", now, body),
            stripe_header("whsec_new", now, body)
                .split_once(",v1=")
                .unwrap()
                .1
        );
        assert_eq!(w.verify_once(&h(&both), body, now), Ok(()));
        assert_eq!(w.verify_once(&h(&good), body, now), Err(REPLAY));
        assert_eq!(
            w.verify_once(&h(&stripe_header("whsec_old", now, body)), body, now),
            Err(REPLAY)
        );
        // A future-dated webhook is remembered until its own window closes.
        let later = now + 100;
        let f = stripe_header("whsec_new", later, body);
        assert_eq!(w.verify_once(&h(&f), body, now), Ok(()));
        assert_eq!(w.verify_once(&h(&f), body, now + 200), Err(REPLAY));
    }

    #[test]
    fn generic_hmac() {
        let w = build(
            r#"
scheme = "hmac"
secrets = ["k1"]
header = "x-signature"
algorithm = "sha512"
encoding = "base64"
prefix = "v1="
timestamp_header = "x-timestamp"
signed_string = "{timestamp}:{header:x-event}:{body}"
"#,
        );
        let now = 1_700_000_000;
        let body = b"payload";
        let mac = Key::new(Algorithm::Sha512, b"k1").sign(&[
            now.to_string().as_bytes(),
            b":",
            b"paid",
            b":",
            body,
        ]);
        assert_eq!(mac.len(), 64);
        let sig = format!("v1={}", B64.encode(&mac));
        let ts = now.to_string();
        let h = |s: &str, ev: &str| {
            headers(&[("x-signature", s), ("x-timestamp", &ts), ("x-event", ev)])
        };
        assert_eq!(w.verify(&h(&sig, "paid"), body, now), Ok(()));
        assert_eq!(
            w.verify(&h(&sig, "refunded"), body, now),
            Err(BAD_SIGNATURE)
        );
        assert_eq!(
            w.verify(&h(&sig[3..], "paid"), body, now),
            Err(MALFORMED_SIGNATURE)
        );
        assert_eq!(
            w.verify(&h(&sig, "paid"), body, now + 301),
            Err(STALE_TIMESTAMP)
        );
        let no_event = headers(&[("x-signature", &sig), ("x-timestamp", &ts)]);
        assert_eq!(w.verify(&no_event, body, now), Err(MISSING_HEADER));
        let no_ts = headers(&[("x-signature", &sig), ("x-event", "paid")]);
        assert_eq!(w.verify(&no_ts, body, now), Err(MISSING_TIMESTAMP));

        // Defaults: sha256, hex, `{body}`; no timestamp, so signature-keyed replay.
        let w = build("scheme = \"hmac\"\nsecrets = [\"k\"]\nheader = \"x-sig\"");
        let sig = hex::encode(hmac256(b"k", &[b"abc"]));
        let h = headers(&[("x-sig", &sig)]);
        assert_eq!(w.verify_once(&h, b"abc", 5), Ok(()));
        assert_eq!(w.verify_once(&h, b"abc", 6), Err(REPLAY));
        // Default template with a timestamp header: `{timestamp}.{body}`.
        let w = build(
            "scheme = \"hmac\"\nsecrets = [\"k\"]\nheader = \"x-sig\"\ntimestamp_header = \"x-ts\"",
        );
        let sig = hex::encode(hmac256(b"k", &[b"100", b".", b"abc"]));
        assert_eq!(
            w.verify(&headers(&[("x-sig", &sig), ("x-ts", "100")]), b"abc", 100),
            Ok(())
        );
    }

    #[test]
    fn templates() {
        assert_eq!(
            parse_template("a{body}b{header:X-Id}{timestamp}").unwrap(),
            vec![
                Part::Lit(b"a".to_vec()),
                Part::Body,
                Part::Lit(b"b".to_vec()),
                Part::Header(HeaderName::from_static("x-id")),
                Part::Timestamp
            ]
        );
        assert!(parse_template("{nope}")
            .unwrap_err()
            .contains("unknown placeholder {nope}"));
        assert!(parse_template("{body").is_err());
        assert!(parse_template("body}").is_err());
        assert!(parse_template("{header:bad name}").is_err());
    }

    #[test]
    fn build_errors_are_located() {
        let keys = |e: Vec<BuildError>| e.into_iter().map(|e| e.path.to_string()).collect::<Vec<_>>();
        assert_eq!(
            keys(errors("scheme = \"svix\"\nsecrets = [\"x\"]")),
            ["scheme"]
        );
        assert_eq!(keys(errors("scheme = \"stripe\"")), ["secrets"]);
        assert_eq!(
            keys(errors("scheme = \"stripe\"\nsecrets = [\"a\", \"\"]")),
            ["secrets[1]"]
        );
        let e = errors("scheme = \"standard_webhooks\"\nsecrets = [\"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"whsec_!!notbase64\"]");
        assert_eq!(keys(e.clone()), ["secrets[0]", "secrets[1]"]);
        assert!(
            e.iter()
                .all(|e| !e.message.contains("MfKQ") && !e.message.contains("notbase64")),
            "{e:?}"
        );
        assert_eq!(
            keys(errors("scheme = \"hmac\"\nsecrets = [\"x\"]")),
            ["header"]
        );
        assert_eq!(keys(errors("scheme = \"hmac\"\nsecrets = [\"x\"]\nheader = \"x-s\"\nalgorithm = \"md5\"\nencoding = \"base32\"")), ["algorithm", "encoding"]);
        assert_eq!(keys(errors("scheme = \"hmac\"\nsecrets = [\"x\"]\nheader = \"x-s\"\nsigned_string = \"{body}.{nonce}\"")), ["signed_string"]);
        assert_eq!(keys(errors("scheme = \"hmac\"\nsecrets = [\"x\"]\nheader = \"x-s\"\nsigned_string = \"{timestamp}.{body}\"")), ["signed_string"]);
        assert_eq!(keys(errors("scheme = \"hmac\"\nsecrets = [\"x\"]\nheader = \"x-s\"\ntimestamp_header = \"x-t\"\nsigned_string = \"{body}\"")), ["signed_string"]);
        assert_eq!(keys(errors("scheme = \"hmac\"\nsecrets = [\"x\"]\nheader = \"x-s\"\nsigned_string = \"static\"")), ["signed_string"]);
        assert_eq!(
            keys(errors(
                "scheme = \"github\"\nsecrets = [\"x\"]\nheader = \"x-s\""
            )),
            ["header"]
        );
        assert_eq!(
            keys(errors(
                "scheme = \"github\"\nsecrets = [\"x\"]\ntolerance = \"10ms\""
            )),
            ["tolerance"]
        );
        assert_eq!(
            keys(errors("scheme = \"github\"\nsecrets_env = [\"TOLLGATE_WH_TEST_UNSET_1\", \"TOLLGATE_WH_TEST_UNSET_2\"]")),
            ["secrets_env[0]", "secrets_env[1]"]
        );
        assert_eq!(
            keys(errors(
                "scheme = \"github\"\nsecrets_env = \"TOLLGATE_WH_TEST_UNSET_3\""
            )),
            ["secrets_env"]
        );
    }

    #[test]
    fn secrets_from_env_rotate() {
        std::env::set_var("TOLLGATE_WH_TEST_OLD", "old-secret");
        std::env::set_var("TOLLGATE_WH_TEST_NEW", "new-secret");
        let w = build("scheme = \"github\"\nsecrets = [\"inline\"]\nsecrets_env = [\"TOLLGATE_WH_TEST_OLD\", \"TOLLGATE_WH_TEST_NEW\"]");
        for secret in ["inline", "old-secret", "new-secret"] {
            let sig = format!(
                "sha256={}",
                hex::encode(hmac256(secret.as_bytes(), &[secret.as_bytes()]))
            );
            assert_eq!(
                w.verify(
                    &headers(&[("x-hub-signature-256", &sig)]),
                    secret.as_bytes(),
                    0
                ),
                Ok(()),
                "{secret}"
            );
        }
        let sig = format!("sha256={}", hex::encode(hmac256(b"retired", &[b"x"])));
        assert_eq!(
            w.verify(&headers(&[("x-hub-signature-256", &sig)]), b"x", 0),
            Err(BAD_SIGNATURE)
        );
    }

    #[test]
    fn replay_memory_is_bounded() {
        let mut s = Seen::default();
        let k = |i: u8| [i; 32];
        assert!(s.admit(&[k(1)], 100, 0, 3));
        assert!(s.admit(&[k(2)], 50, 0, 3));
        assert!(s.admit(&[k(3)], 200, 0, 3));
        assert!(!s.admit(&[k(2)], 300, 0, 3));
        // Full: the entry closest to expiry (2) makes room.
        assert!(s.admit(&[k(4)], 300, 0, 3));
        assert_eq!(s.len(), 3);
        assert!(!s.admit(&[k(1)], 300, 0, 3));
        assert!(
            !s.admit(&[k(9), k(4)], 300, 0, 3),
            "any known key is a replay"
        );
        assert!(
            !s.by_key.contains_key(&k(9)),
            "a refused replay is not remembered"
        );
        // Expiry is inclusive, then the entry goes.
        assert!(!s.admit(&[k(1)], 300, 100, 3));
        assert!(s.admit(&[k(1)], 300, 101, 3));
        s.purge(1000);
        assert_eq!(s.len(), 0);
        assert!(s.by_expiry.is_empty());
    }

    #[test]
    fn refusal_labels() {
        assert_eq!(STALE_TIMESTAMP.result(), "stale");
        assert_eq!(REPLAY.result(), "replay");
        assert_eq!(BAD_SIGNATURE.result(), "invalid");
        assert_eq!(BODY_TOO_LARGE.status, 413);
        assert!(BODY_TOO_LARGE.detail(65536).contains("65536"));
    }
}
