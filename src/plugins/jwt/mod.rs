//! `jwt`: a bearer token (JWS compact serialization) from `Authorization`,
//! verified against one key source and checked against the configured claims.
//!
//! Fail-closed rules, all enforced here rather than left to a library default:
//! - `alg` must be one of `algorithms`; `none` can never be configured.
//! - A key is only used with the algorithm family it belongs to: HMAC secrets
//!   come only from `secret_env` or a JWKS `oct` key, asymmetric algorithms only
//!   ever meet public keys (no RSA-PEM-as-HMAC-secret confusion).
//! - The token's `jku`, `x5u`, `jwk` and `x5c` headers are never looked at; `kid`
//!   is only a lookup key into the key set; a `crit` header is refused.
//! - `jwks_url` fetches go through the instance's pooled
//!   [`outbound::Client`](crate::outbound::Client), in a detached task whose
//!   result every waiting request shares; a token with an unknown `kid`
//!   triggers at most one fetch per `jwks_cooldown`; a failed fetch keeps the
//!   last good key set.
//!
//! The parts: [`build`] (the config compiled: algorithms, the one key source,
//! claim rules), [`keys`] (PEM, HMAC and JWK keys, the key set), [`jwks`] (the
//! remote key set), [`token`] (a token taken apart, strict JSON),
//! [`token_cache`] (verified tokens), and here the config, the checks and the
//! plugin's hooks.
//!
//! Verified tokens are cached (bounded, keyed by the SHA-256 of the whole token,
//! tied to the key set they were verified with, never used past `exp + leeway`),
//! because an RSA or ECDSA verification costs tens of microseconds.

mod build;
mod jwks;
mod keys;
#[cfg(test)]
mod tests;
mod token;
mod token_cache;

use super::auth;
use crate::config::{Dur, OneOrMany};
use crate::pipeline::{
    BuildCtx, BuildResult, Flow, Order, Plugin, PluginConfig, RequestCtx, Series,
};
use http::{HeaderName, HeaderValue};
use jsonwebtoken::Algorithm;
use jwks::Remote;
use keys::KeySet;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use token::{bearer, strict_object};
use token_cache::{times_ok, Cache, Entry};

// ---------------------------------------------------------------------------
// Config: `type = "jwt"`
// ---------------------------------------------------------------------------

fn default_jwks_cooldown() -> Dur {
    Dur::secs(30)
}

fn default_jwks_refresh() -> Dur {
    Dur::secs(300)
}

fn default_leeway() -> Dur {
    Dur::secs(30)
}

/// `type = "jwt"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub algorithms: Vec<Alg>,
    /// Environment variable holding the HMAC secret (UTF-8).
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub public_key_file: Option<String>,
    #[serde(default)]
    pub jwks_file: Option<String>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Minimum time between two fetches triggered by an unknown `kid`.
    #[serde(default = "default_jwks_cooldown")]
    pub jwks_cooldown: Dur,
    /// How often `jwks_url` is refreshed in the background.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: Dur,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: Option<OneOrMany>,
    #[serde(default = "default_leeway")]
    pub leeway: Dur,
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Claim name → upstream header name.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    #[serde(default)]
    pub consumer_claim: Option<String>,
}

/// One entry of `algorithms`: a JWS algorithm as RFC 7518 names it
/// (`"RS256"`, case-sensitive). `"none"` (any case) is refused with its own
/// message: an unsigned token is never accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alg(pub Algorithm);

impl Alg {
    pub fn parse(s: &str) -> Result<Alg, String> {
        if s.trim().eq_ignore_ascii_case("none") {
            return Err("alg \"none\" (an unsigned token) is never accepted".into());
        }
        Algorithm::from_str(s).map(Alg).map_err(|_| {
            format!(
                "unknown algorithm {s:?}: use HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
            )
        })
    }
}

impl<'de> Deserialize<'de> for Alg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Alg::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl PluginConfig for JwtConfig {
    const TYPE: &'static str = "jwt";
    const ORDER: Order = Order::Auth;
    type Plugin = Jwt;

    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<Jwt> {
        Jwt::new(self, bx)
    }

    fn files(&self, config: &crate::config::Config) -> Vec<std::path::PathBuf> {
        self.public_key_file
            .iter()
            .chain(self.jwks_file.iter())
            .map(|f| config.resolve(f))
            .collect()
    }
}

/// The verified claims of a token.
pub type Claims = Arc<Map<String, Value>>;

/// Verified tokens kept at most (over all shards).
pub const CACHE_ENTRIES: usize = 10_000;
/// Longer tokens are verified on every request, never cached: with
/// [`CACHE_ENTRIES`] this bounds the cache's memory (SPEC §3: every per-key
/// table is bounded) even for an issuer that mints very large tokens.
pub const MAX_CACHED_TOKEN: usize = 4096;

/// Why a request was refused; [`Reason::code`] is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    MissingToken,
    Malformed,
    AlgNotAllowed,
    UnknownKid,
    KeyMismatch,
    BadSignature,
    Expired,
    NotYetValid,
    BadIssuer,
    BadAudience,
    MissingClaim,
    BadClaimValue,
    /// `jwks_url` has never delivered a usable key set.
    KeysUnavailable,
}

impl Reason {
    /// Every reason, for the series the plugin declares.
    pub const ALL: [Reason; 13] = [
        Reason::MissingToken,
        Reason::Malformed,
        Reason::AlgNotAllowed,
        Reason::UnknownKid,
        Reason::KeyMismatch,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::BadIssuer,
        Reason::BadAudience,
        Reason::MissingClaim,
        Reason::BadClaimValue,
        Reason::KeysUnavailable,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::Malformed => "malformed",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::UnknownKid => "unknown_kid",
            Reason::KeyMismatch => "key_mismatch",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::BadIssuer => "bad_issuer",
            Reason::BadAudience => "bad_audience",
            Reason::MissingClaim => "missing_claim",
            Reason::BadClaimValue => "bad_claim_value",
            Reason::KeysUnavailable => "jwks_unavailable",
        }
    }

    /// Fixed text for the problem body and `error_description`: never any part
    /// of the token or a key.
    pub fn detail(self) -> &'static str {
        match self {
            Reason::MissingToken => "a bearer token is required",
            Reason::Malformed => "the bearer token is not a well-formed JWT",
            Reason::AlgNotAllowed => "the token's signing algorithm is not accepted",
            Reason::UnknownKid => "the token's key id is not known",
            Reason::KeyMismatch => "no known key fits the token's algorithm",
            Reason::BadSignature => "the token's signature is not valid",
            Reason::Expired => "the token has expired",
            Reason::NotYetValid => "the token is not valid yet",
            Reason::BadIssuer => "the token's issuer is not accepted",
            Reason::BadAudience => "the token is not meant for this audience",
            Reason::MissingClaim => "the token lacks a required claim",
            Reason::BadClaimValue => "a claim of the token has a value that cannot be used",
            Reason::KeysUnavailable => {
                "the keys to verify tokens are not available yet; retry shortly"
            }
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Reason::KeysUnavailable => 503,
            _ => 401,
        }
    }
}

/// What a verified token gives the request.
#[derive(Debug)]
pub struct Verified {
    pub claims: Claims,
    pub consumer: Option<String>,
    /// `forward_claims` headers with their values.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

enum Keys {
    Static(Arc<KeySet>),
    Remote(Arc<Remote>),
}

pub struct Jwt {
    name: String,
    algorithms: Vec<Algorithm>,
    keys: Keys,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: u64,
    required: Vec<String>,
    forward: Vec<(String, HeaderName)>,
    consumer_claim: String,
    consumer_required: bool,
    cache: Cache,
}

impl Jwt {
    fn key_set(&self) -> Option<Arc<KeySet>> {
        match &self.keys {
            Keys::Static(s) => Some(s.clone()),
            Keys::Remote(r) => r.keys.load_full(),
        }
    }

    /// Fetches of `jwks_url` started so far (0 for other key sources).
    pub fn jwks_fetches(&self) -> u64 {
        match &self.keys {
            Keys::Static(_) => 0,
            Keys::Remote(r) => r.fetches.load(Ordering::Relaxed),
        }
    }

    /// Verified tokens currently cached.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Verify a token (the part after `Bearer `) at unix time `now` with the
    /// keys at hand (never fetches), using the verified-token cache.
    pub fn verify(&self, token: &str, now: u64) -> Result<Arc<Verified>, Reason> {
        let set = self.keys_for(token)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(v) = self
            .cache
            .get(&digest, set.generation, now as f64, self.leeway as f64)
        {
            return Ok(v);
        }
        let (verified, exp, nbf) = self.check(&set, token, now)?;
        let verified = Arc::new(verified);
        if token.len() > MAX_CACHED_TOKEN {
            return Ok(verified);
        }
        self.cache.insert(
            digest,
            Entry {
                verified: verified.clone(),
                exp,
                nbf,
                generation: set.generation,
            },
        );
        Ok(verified)
    }

    /// [`verify`](Self::verify) without the cache (for benchmarks and tests).
    pub fn verify_uncached(&self, token: &str, now: u64) -> Result<Arc<Verified>, Reason> {
        let set = self.keys_for(token)?;
        self.check(&set, token, now).map(|(v, _, _)| Arc::new(v))
    }

    /// The key set; without one, a token that could never pass anyway is
    /// refused for what it is (401) rather than for the missing keys (503).
    fn keys_for(&self, token: &str) -> Result<Arc<KeySet>, Reason> {
        match self.key_set() {
            Some(set) => Ok(set),
            None => {
                self.parse(token)?;
                Err(Reason::KeysUnavailable)
            }
        }
    }

    /// The token verified with `set` and its claims checked; with its `exp`
    /// and `nbf` for the cache.
    fn check(
        &self,
        set: &KeySet,
        token: &str,
        now: u64,
    ) -> Result<(Verified, f64, Option<f64>), Reason> {
        let t = self.parse(token)?;
        let keys = set.candidates(t.kid.as_deref(), t.alg)?;
        let good = keys.iter().any(|k| {
            jsonwebtoken::crypto::verify(t.signature, t.message, &k.key, t.alg).unwrap_or(false)
        });
        if !good {
            return Err(Reason::BadSignature);
        }
        let claims = strict_object(&t.payload).ok_or(Reason::Malformed)?;
        let (exp, nbf) = self.check_claims(&claims, now)?;
        let (consumer, headers) = self.identity(&claims)?;
        Ok((
            Verified {
                claims: Arc::new(claims),
                consumer,
                headers,
            },
            exp,
            nbf,
        ))
    }

    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now: u64,
    ) -> Result<(f64, Option<f64>), Reason> {
        // A NumericDate (RFC 7519 §2) between 1970 and the end of year 9999: an
        // `exp` of 1e300 or 2^64 is refused, never read as "does not expire".
        let date = |name: &str| -> Result<Option<f64>, Reason> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|f| (0.0..=MAX_NUMERIC_DATE).contains(f))
                    .map(Some)
                    .ok_or(Reason::BadClaimValue),
            }
        };
        let exp = date("exp")?.ok_or(Reason::MissingClaim)?;
        let nbf = date("nbf")?;
        date("iat")?;
        times_ok(exp, nbf, now as f64, self.leeway as f64)?;
        if let Some(iss) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(iss.as_str()) {
                return Err(Reason::BadIssuer);
            }
        }
        if !self.audience.is_empty() {
            let ours = |v: &Value| {
                v.as_str()
                    .is_some_and(|a| self.audience.iter().any(|o| o == a))
            };
            let ok = match claims.get("aud") {
                Some(Value::Array(list)) => list.iter().any(ours),
                Some(v) => ours(v),
                None => false,
            };
            if !ok {
                return Err(Reason::BadAudience);
            }
        }
        for r in &self.required {
            if claims.get(r).is_none_or(Value::is_null) {
                return Err(Reason::MissingClaim);
            }
        }
        Ok((exp, nbf))
    }

    /// The consumer and the `forward_claims` headers. A consumer with a control
    /// character is refused; claim values are written percent-encoded where
    /// they are not visible ASCII ([`auth::header_text`]).
    #[allow(clippy::type_complexity)]
    fn identity(
        &self,
        claims: &Map<String, Value>,
    ) -> Result<(Option<String>, Vec<(HeaderName, HeaderValue)>), Reason> {
        let consumer = match claims.get(&self.consumer_claim) {
            None | Some(Value::Null) if self.consumer_required => return Err(Reason::MissingClaim),
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() && clean(s) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => return Err(Reason::BadClaimValue),
        };
        let mut headers = Vec::with_capacity(self.forward.len());
        for (claim, header) in &self.forward {
            let value = match claims.get(claim) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => auth::header_text(s),
                Some(v) => auth::header_text(&v.to_string()),
            };
            headers.push((header.clone(), value));
        }
        Ok((consumer, headers))
    }
}

/// No control characters (CR, LF, NUL, tab, DEL, C1).
fn clean(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// The end of year 9999 (9999-12-31T23:59:59Z) as a NumericDate.
const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;
use crate::util::unix_now;

fn challenge(reason: Reason) -> Vec<(HeaderName, HeaderValue)> {
    let v = match reason {
        Reason::MissingToken => HeaderValue::from_static("Bearer"),
        Reason::KeysUnavailable => return Vec::new(),
        r => HeaderValue::from_str(&format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\"",
            r.detail()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\"")),
    };
    vec![(http::header::WWW_AUTHENTICATE, v)]
}

impl Plugin for Jwt {
    type State = ();

    fn series(&self) -> Vec<Series> {
        Reason::ALL
            .map(|r| Series::AuthFailures { reason: r.code() })
            .to_vec()
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        _state: &mut Self::State,
    ) -> pingora::Result<Flow> {
        let outcome = match bearer(session.req_header()) {
            Err(r) => Err(r),
            Ok(token) => {
                let mut res = self.verify(token, unix_now());
                if let (Err(Reason::UnknownKid | Reason::KeysUnavailable), Keys::Remote(remote)) =
                    (&res, &self.keys)
                {
                    if remote.on_demand().await {
                        res = self.verify(token, unix_now());
                    }
                }
                res
            }
        };
        match outcome {
            Ok(v) => {
                ctx.identity.claims = Some(v.claims.clone());
                if let Some(c) = &v.consumer {
                    auth::set_consumer(ctx, c);
                }
                ctx.upstream.headers.extend(v.headers.iter().cloned());
                Ok(Flow::Continue)
            }
            Err(reason) => {
                auth::count_failure(ctx, &self.name, reason.code());
                let mut headers = challenge(reason);
                if let (Reason::KeysUnavailable, Keys::Remote(r)) = (reason, &self.keys) {
                    headers.push((
                        http::header::RETRY_AFTER,
                        HeaderValue::from(r.retry_after()),
                    ));
                }
                Ok(auth::refuse(reason.status(), reason.detail(), headers))
            }
        }
    }

    /// Claim headers come only from verified tokens: drop client-sent copies
    /// (the verified values are set after this hook).
    fn upstream_request(
        &self,
        req: &mut RequestHeader,
        _ctx: &RequestCtx,
        _state: &mut Self::State,
    ) -> pingora::Result<()> {
        for (_, h) in &self.forward {
            req.remove_header(h);
        }
        Ok(())
    }

    async fn tick(&self) {
        if let Keys::Remote(r) = &self.keys {
            r.tick();
        }
    }
}
