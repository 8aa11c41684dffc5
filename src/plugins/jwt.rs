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
//! - `jwks_url` fetches go through one pooled Pingora connector, in a detached
//!   task whose result every waiting request shares; a token with an unknown
//!   `kid` triggers at most one fetch per `jwks_cooldown`; a failed fetch keeps
//!   the last good key set.
//!
//! Verified tokens are cached (bounded, keyed by the SHA-256 of the whole token,
//! tied to the key set they were verified with, never used past `exp + leeway`),
//! because an RSA or ECDSA verification costs tens of microseconds.

use super::outbound::{parse_url, Target};
use super::{auth};
use std::collections::BTreeMap;
use crate::config::{Dur, OneOrMany};
use crate::pipeline::{BuildCtx, BuildError, BuildResult, Flow, KeyPath, Order, Plugin, PluginConfig, RequestCtx};
use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use serde::Deserialize;

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
    pub algorithms: Vec<String>,
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

impl PluginConfig for JwtConfig {
    const TYPE: &'static str = "jwt";
    const ORDER: Order = Order::Auth;
    type Plugin = Jwt;

    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<Jwt> {
        Jwt::new(self, bx)
    }

    fn files(&self) -> Vec<&str> {
        self.public_key_file.iter().chain(self.jwks_file.iter()).map(String::as_str).collect()
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
const CACHE_SHARDS: usize = 16;
/// Keys tried for a token without `kid` (bounds the work one token can cause).
const MAX_KEYS_WITHOUT_KID: usize = 4;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_JWKS_BYTES: usize = 1 << 20;
const POOL_IDLE: Duration = Duration::from_secs(60);
const RSA_MIN_BITS: usize = 2048;
/// The `rsa` crate refuses larger moduli when verifying.
const RSA_MAX_BITS: usize = 4096;

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

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

struct Key {
    kid: Option<String>,
    family: AlgorithmFamily,
    /// The JWK's `alg`, when it names one.
    alg: Option<Algorithm>,
    curve: Option<Curve>,
    /// HMAC secret length (RFC 7518 §3.2: at least the hash size).
    secret_len: usize,
    key: DecodingKey,
}

impl Key {
    fn fits(&self, alg: Algorithm) -> bool {
        if alg.family() != self.family || self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        match alg {
            Algorithm::ES256 => self.curve == Some(Curve::P256),
            Algorithm::ES384 => self.curve == Some(Curve::P384),
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                self.secret_len >= min_secret(alg)
            }
            _ => true,
        }
    }
}

fn min_secret(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

struct KeySet {
    keys: Vec<Key>,
    by_kid: HashMap<String, Vec<usize>>,
    /// A single configured key (`secret_env`, `public_key_file`): `kid` is not needed.
    ignore_kid: bool,
    /// Identity of this set: cached verifications are only valid for it.
    generation: u64,
}

impl KeySet {
    fn new(keys: Vec<Key>, ignore_kid: bool) -> KeySet {
        let mut by_kid: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(kid) = &k.kid {
                by_kid.entry(kid.clone()).or_default().push(i);
            }
        }
        KeySet {
            keys,
            by_kid,
            ignore_kid,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<&Key>, Reason> {
        let found: Vec<&Key> = match kid {
            Some(kid) if !self.ignore_kid => {
                let ids = self.by_kid.get(kid).ok_or(Reason::UnknownKid)?;
                ids.iter()
                    .filter_map(|&i| self.keys.get(i))
                    .filter(|k| k.fits(alg))
                    .collect()
            }
            _ => self
                .keys
                .iter()
                .filter(|k| k.fits(alg))
                .take(MAX_KEYS_WITHOUT_KID)
                .collect(),
        };
        if found.is_empty() {
            return Err(Reason::KeyMismatch);
        }
        Ok(found)
    }
}

fn b64(s: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| "not base64url".to_string())
}

/// Rejects a key the verifier would fail on (an EC point off its curve, …).
fn probe(key: &DecodingKey, alg: Algorithm) -> Result<(), String> {
    jsonwebtoken::crypto::verify("AAAA", b"probe", key, alg)
        .map(|_| ())
        .map_err(|_| "the key is not a valid public key".to_string())
}

fn rsa_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    match n.first() {
        Some(&first) => (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

fn rsa_key(n: &[u8], e: &[u8]) -> Result<DecodingKey, String> {
    let bits = rsa_bits(n);
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(format!(
            "RSA keys must be {RSA_MIN_BITS} to {RSA_MAX_BITS} bits, this one has {bits}"
        ));
    }
    if e.is_empty() || e.len() > 8 || e.last().is_some_and(|b| b & 1 == 0) {
        return Err("the RSA public exponent is not valid".into());
    }
    Ok(DecodingKey::from_rsa_raw_components(n, e))
}

fn ec_key(point: &[u8]) -> Result<(DecodingKey, Curve), String> {
    let (curve, alg) = match point.len() {
        65 => (Curve::P256, Algorithm::ES256),
        97 => (Curve::P384, Algorithm::ES384),
        _ => return Err("EC keys must be on P-256 or P-384".into()),
    };
    if point.first() != Some(&4) {
        return Err("the EC public key is not an uncompressed point".into());
    }
    let key = DecodingKey::from_ec_der(point);
    probe(&key, alg)?;
    Ok((key, curve))
}

fn ed_key(x: &[u8]) -> Result<DecodingKey, String> {
    if x.len() != 32 {
        return Err("Ed25519 public keys are 32 bytes".into());
    }
    let key = DecodingKey::from_ed_der(x);
    probe(&key, Algorithm::EdDSA)?;
    Ok(key)
}

/// A public key from a PEM file: `PUBLIC KEY` (SPKI: RSA, EC P-256/P-384,
/// Ed25519) or `RSA PUBLIC KEY` (PKCS#1). Private keys and certificates are
/// refused.
fn pem_key(text: &[u8]) -> Result<Key, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not a PEM file".to_string())?;
    let labels: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .collect();
    match labels.as_slice() {
        ["PUBLIC KEY"] | ["RSA PUBLIC KEY"] => {}
        [] => {
            return Err("no PEM block found: give a public key (-----BEGIN PUBLIC KEY-----)".into())
        }
        [one] if one.contains("PRIVATE") => return Err(
            "this is a private key: the gateway only needs (and should only get) the public key"
                .into(),
        ),
        [one] => {
            return Err(format!(
            "a {one} PEM block is not supported: give the public key (-----BEGIN PUBLIC KEY-----)"
        ))
        }
        _ => return Err("the file holds several PEM blocks: give exactly one public key".into()),
    }
    let bytes = text.as_bytes();
    let mk = |family, curve, key| Key {
        kid: None,
        family,
        alg: None,
        curve,
        secret_len: 0,
        key,
    };
    if let Ok(k) = DecodingKey::from_rsa_pem(bytes) {
        let der = k.try_get_as_bytes().map_err(|e| e.to_string())?;
        let (n, e) = (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER
            .key_utils
            .rsa_pub_components_from_public_key)(der)
        .map_err(|_| "the RSA public key cannot be parsed".to_string())?;
        return Ok(mk(AlgorithmFamily::Rsa, None, rsa_key(&n, &e)?));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(bytes) {
        let point = k.try_get_as_bytes().map_err(|e| e.to_string())?;
        let (key, curve) = ec_key(point)?;
        return Ok(mk(AlgorithmFamily::Ec, Some(curve), key));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(bytes) {
        let x = k.try_get_as_bytes().map_err(|e| e.to_string())?;
        return Ok(mk(AlgorithmFamily::Ed, None, ed_key(x)?));
    }
    Err("not an RSA, EC (P-256/P-384) or Ed25519 public key".into())
}

/// What a JWKS document gave: its usable keys, and the problems of keys that
/// claim to be signature keys for a configured algorithm but cannot be used.
struct ParsedJwks {
    keys: Vec<Key>,
    problems: Vec<String>,
}

fn str_field<'a>(o: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{name}\" is not a string")),
    }
}

fn parse_jwks(text: &[u8], algs: &[Algorithm], allow_oct: bool) -> Result<ParsedJwks, String> {
    let doc: Value =
        serde_json::from_slice(text).map_err(|e| format!("the document is not JSON ({e})"))?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JWK set: no \"keys\" array")?;
    let families: Vec<AlgorithmFamily> = algs.iter().map(|a| a.family()).collect();
    let mut out = ParsedJwks {
        keys: Vec::new(),
        problems: Vec::new(),
    };
    for (i, jwk) in list.iter().enumerate() {
        match parse_jwk(jwk, algs, &families, allow_oct) {
            Ok(Some(k)) => out.keys.push(k),
            Ok(None) => {}
            Err(e) => out.problems.push(format!("keys[{i}]: {e}")),
        }
    }
    Ok(out)
}

/// `Ok(None)`: a key that is not for us (encryption key, other algorithm or type).
fn parse_jwk(
    jwk: &Value,
    algs: &[Algorithm],
    families: &[AlgorithmFamily],
    allow_oct: bool,
) -> Result<Option<Key>, String> {
    let o = jwk.as_object().ok_or("not a JSON object")?;
    if str_field(o, "use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = o.get("key_ops").and_then(Value::as_array) {
        if !ops.iter().any(|v| v == "verify") {
            return Ok(None);
        }
    }
    let kid = str_field(o, "kid")?.map(str::to_string);
    let alg = match str_field(o, "alg")? {
        None => None,
        Some(a) => match Algorithm::from_str(a) {
            Ok(a) if algs.contains(&a) => Some(a),
            _ => return Ok(None),
        },
    };
    let family = match str_field(o, "kty")? {
        Some("RSA") => AlgorithmFamily::Rsa,
        Some("EC") => AlgorithmFamily::Ec,
        Some("OKP") => AlgorithmFamily::Ed,
        Some("oct") if allow_oct => AlgorithmFamily::Hmac,
        _ => return Ok(None),
    };
    if !families.contains(&family) {
        return Ok(None);
    }
    if alg.is_some_and(|a| a.family() != family) {
        return Err("its \"alg\" does not fit its \"kty\"".into());
    }
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let s = str_field(o, name)?.ok_or_else(|| format!("\"{name}\" is missing"))?;
        b64(s).map_err(|e| format!("\"{name}\" is {e}"))
    };
    let mut key = Key {
        kid,
        family,
        alg,
        curve: None,
        secret_len: 0,
        key: DecodingKey::from_secret(b""),
    };
    match family {
        AlgorithmFamily::Rsa => key.key = rsa_key(&field("n")?, &field("e")?)?,
        AlgorithmFamily::Ec => {
            let len = match str_field(o, "crv")? {
                Some("P-256") => 32,
                Some("P-384") => 48,
                _ => return Ok(None),
            };
            let (x, y) = (field("x")?, field("y")?);
            if x.len() != len || y.len() != len {
                return Err("the EC coordinates do not fit the curve".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let (k, curve) = ec_key(&point)?;
            key.key = k;
            key.curve = Some(curve);
        }
        AlgorithmFamily::Ed => {
            if str_field(o, "crv")? != Some("Ed25519") {
                return Ok(None);
            }
            key.key = ed_key(&field("x")?)?;
        }
        AlgorithmFamily::Hmac => {
            let k = field("k")?;
            if k.len() < 32 {
                return Err("an HMAC key must be at least 32 bytes (RFC 7518 §3.2)".into());
            }
            key.secret_len = k.len();
            key.key = DecodingKey::from_secret(&k);
        }
    }
    Ok(Some(key))
}

// ---------------------------------------------------------------------------
// Verified-token cache
// ---------------------------------------------------------------------------

struct Entry {
    verified: Arc<Verified>,
    exp: f64,
    nbf: Option<f64>,
    generation: u64,
}

#[derive(Default)]
struct Shard {
    current: HashMap<[u8; 32], Entry>,
    previous: HashMap<[u8; 32], Entry>,
}

/// Two generations per shard: when `current` is full it becomes `previous`
/// (dropping the old `previous`), and a hit in `previous` moves back to
/// `current`. Bounded by `CACHE_ENTRIES`, evicts roughly least-recently-used.
struct Cache {
    shards: Vec<Mutex<Shard>>,
    per_generation: usize,
}

impl Cache {
    fn new(entries: usize) -> Cache {
        Cache {
            shards: (0..CACHE_SHARDS)
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            per_generation: (entries / CACHE_SHARDS / 2).max(1),
        }
    }

    fn shard(&self, key: &[u8; 32]) -> Option<std::sync::MutexGuard<'_, Shard>> {
        let s = self.shards.get(key[0] as usize % CACHE_SHARDS)?;
        Some(s.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn get(&self, key: &[u8; 32], generation: u64, now: f64, leeway: f64) -> Option<Arc<Verified>> {
        let mut s = self.shard(key)?;
        let usable =
            |e: &Entry| e.generation == generation && times_ok(e.exp, e.nbf, now, leeway).is_ok();
        if let Some(e) = s.current.get(key) {
            if usable(e) {
                return Some(e.verified.clone());
            }
            s.current.remove(key);
            return None;
        }
        let e = s.previous.remove(key)?;
        if !usable(&e) {
            return None;
        }
        let v = e.verified.clone();
        self.put(&mut s, *key, e);
        Some(v)
    }

    fn insert(&self, key: [u8; 32], e: Entry) {
        if let Some(mut s) = self.shard(&key) {
            self.put(&mut s, key, e);
        }
    }

    fn put(&self, s: &mut Shard, key: [u8; 32], e: Entry) {
        if s.current.len() >= self.per_generation && !s.current.contains_key(&key) {
            s.previous = std::mem::take(&mut s.current);
        }
        s.current.insert(key, e);
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|p| p.into_inner());
                s.current.len() + s.previous.len()
            })
            .sum()
    }
}

fn times_ok(exp: f64, nbf: Option<f64>, now: f64, leeway: f64) -> Result<(), Reason> {
    if now >= exp + leeway {
        return Err(Reason::Expired);
    }
    if nbf.is_some_and(|nbf| now + leeway < nbf) {
        return Err(Reason::NotYetValid);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// jwks_url
// ---------------------------------------------------------------------------

static CONNECTOR: OnceLock<Result<Connector, String>> = OnceLock::new();

/// One pooled HTTP(S) client for every `jwt` instance (TLS verified against the
/// platform roots, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
fn connector() -> Result<&'static Connector, String> {
    CONNECTOR
        .get_or_init(|| {
            std::panic::catch_unwind(|| Connector::new(None)).map_err(|_| {
                "cannot set up the HTTPS client (no CA certificates available?)".to_string()
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

#[derive(Default)]
struct FetchState {
    in_flight: Option<watch::Receiver<bool>>,
    last_on_demand: Option<Instant>,
    /// When the last failed fetch ended: the backoff counts from there.
    last_failure: Option<Instant>,
    last_success: Option<Instant>,
    failures: u32,
}

struct Remote {
    name: String,
    target: Target,
    algorithms: Vec<Algorithm>,
    refresh: Duration,
    cooldown: Duration,
    keys: ArcSwapOption<KeySet>,
    state: Mutex<FetchState>,
    /// Fetches started (for tests and logs).
    fetches: AtomicU64,
}

/// Clears `in_flight` when the fetch task ends, however it ends.
struct InFlight(Arc<Remote>, Option<watch::Sender<bool>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().in_flight = None;
        if let Some(tx) = self.1.take() {
            let _ = tx.send(true);
        }
    }
}

impl Remote {
    fn lock(&self) -> std::sync::MutexGuard<'_, FetchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a fetch in a detached task (a request that goes away does not
    /// cancel it); the receiver turns `true` when it has finished.
    fn start(self: &Arc<Self>, st: &mut FetchState) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        st.in_flight = Some(rx.clone());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(self.clone(), Some(tx));
        tokio::spawn(async move {
            let me = guard.0.clone();
            let result = match tokio::time::timeout(FETCH_TIMEOUT, me.fetch()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {FETCH_TIMEOUT:?}")),
            };
            let retry = me.finish(result);
            drop(guard);
            // The retry after a failure starts when the log line said, not at
            // the next once-a-second tick after it (the tick stays a fallback).
            // A weak reference: a plugin dropped by a reload is not kept alive.
            if let Some(at) = retry {
                let weak = Arc::downgrade(&me);
                drop(me);
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                if let Some(me) = weak.upgrade() {
                    me.tick();
                }
            }
        });
        rx
    }

    /// Records a fetch's outcome; after a failure, returns when the retry is
    /// due.
    fn finish(&self, result: Result<KeySet, String>) -> Option<Instant> {
        let mut st = self.lock();
        match result {
            Ok(set) => {
                st.failures = 0;
                st.last_success = Some(Instant::now());
                drop(st);
                tracing::info!(plugin = %self.name, url = %self.target.display, keys = set.keys.len(), "JWKS loaded");
                self.keys.store(Some(Arc::new(set)));
                None
            }
            Err(e) => {
                st.failures = st.failures.saturating_add(1);
                st.last_failure = Some(Instant::now());
                // After a failure nothing fetches before the backoff ends (on
                // demand neither): this is when the next attempt happens, and
                // what a 503's `Retry-After` says too.
                let next = self.seconds_until_next(&st);
                let at = self.next_scheduled(&st);
                drop(st);
                let keys = if self.keys.load().is_some() {
                    "keeping the last good keys"
                } else {
                    "no keys yet, tokens get 503"
                };
                // One line in plain words: where, why, what next (the URL has
                // no query and never credentials: `parse_url` refuses them).
                tracing::warn!(
                    plugin = %self.name,
                    url = %self.target.display,
                    "JWKS fetch failed: {e}; next try in {next}s; {keys}"
                );
                at
            }
        }
    }

    /// A fetch for a token whose key is not known: joins the fetch in flight,
    /// or starts one unless one was started on demand within `jwks_cooldown`
    /// or the last fetch failed (then the backoff decides, see
    /// [`next_scheduled`](Self::next_scheduled)).
    /// `true` when a fetch finished (look the key up again).
    /// A fetch the background schedule says is due is started at once too, so
    /// that a client honouring `Retry-After` finds one happening.
    async fn on_demand(self: &Arc<Self>) -> bool {
        let mut rx = {
            let mut st = self.lock();
            let now = Instant::now();
            if let Some(rx) = &st.in_flight {
                rx.clone()
            } else if st.failures == 0
                && st
                    .last_on_demand
                    .is_none_or(|t| now.duration_since(t) >= self.cooldown)
            {
                st.last_on_demand = Some(now);
                self.start(&mut st)
            } else if self.next_scheduled(&st).is_none_or(|t| now >= t) {
                self.start(&mut st)
            } else {
                return false;
            }
        };
        let _ = rx.wait_for(|done| *done).await;
        true
    }

    /// When the background refresh starts its next fetch (`None`: at once):
    /// `jwks_refresh` after a success; after the n-th failure in a row,
    /// 2^(n-1) s after the failed attempt ended (1 s, 2 s, 4 s… at most 64 s
    /// and at most `jwks_refresh`).
    fn next_scheduled(&self, st: &FetchState) -> Option<Instant> {
        if st.failures > 0 {
            let backoff = Duration::from_secs(1u64 << (st.failures - 1).min(6)).min(self.refresh);
            st.last_failure.map(|t| t + backoff)
        } else {
            st.last_success.map(|t| t + self.refresh)
        }
    }

    /// Whole seconds (rounded up, at least 1) until the next fetch attempt:
    /// after a failure the scheduled retry (nothing fetches before it);
    /// otherwise the scheduled refresh, or an on-demand fetch once
    /// `jwks_cooldown` has passed. The failure log's "next try" and a 503's
    /// `Retry-After` both say this.
    fn seconds_until_next(&self, st: &FetchState) -> u64 {
        let now = Instant::now();
        let scheduled = self.next_scheduled(st).unwrap_or(now);
        let next = if st.failures > 0 {
            scheduled
        } else {
            scheduled.min(st.last_on_demand.map_or(now, |t| t + self.cooldown))
        };
        let left = next.saturating_duration_since(now);
        (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)
    }

    /// `Retry-After` of a 503 while no keys are available: when the next fetch
    /// attempt happens (a request arriving then starts it if the background
    /// refresh has not yet).
    fn retry_after(&self) -> u64 {
        self.seconds_until_next(&self.lock())
    }

    /// Background refresh, on the schedule of [`next_scheduled`](Self::next_scheduled).
    fn tick(self: &Arc<Self>) {
        let mut st = self.lock();
        if st.in_flight.is_some() {
            return;
        }
        if self.next_scheduled(&st).is_none_or(|t| Instant::now() >= t) {
            let _ = self.start(&mut st);
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let body = self.get().await?;
        let parsed = parse_jwks(&body, &self.algorithms, false)?;
        for p in &parsed.problems {
            tracing::warn!(plugin = %self.name, url = %self.target.display, problem = %p, "JWKS key skipped");
        }
        if parsed.keys.is_empty() {
            return Err("the JWK set has no key usable with the configured algorithms".into());
        }
        Ok(KeySet::new(parsed.keys, false))
    }

    async fn get(&self) -> Result<Vec<u8>, String> {
        let conn = connector()?;
        let t = &self.target;
        let addr = tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", t.host))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", t.host))?;
        let mut peer = HttpPeer::new(addr, t.tls, t.host.clone());
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        peer.options.total_connection_timeout = Some(CONNECT_TIMEOUT);
        peer.options.read_timeout = Some(FETCH_TIMEOUT);
        peer.options.write_timeout = Some(FETCH_TIMEOUT);
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        // A pooled connection the server has closed meanwhile fails at once:
        // one more try, on a fresh connection if the pool is empty by then.
        let mut tries = 0;
        loop {
            tries += 1;
            let (mut session, reused) =
                conn.get_http_session(&peer).await.map_err(|e| plain(&e))?;
            match self.exchange(&mut session).await {
                Ok((status, body)) => {
                    conn.release_http_session(session, &peer, Some(POOL_IDLE))
                        .await;
                    if status != 200 {
                        return Err(format!("the server answered HTTP {status}"));
                    }
                    return Ok(body);
                }
                Err(e) if reused && tries < 3 => {
                    tracing::debug!(plugin = %self.name, error = %e, "pooled JWKS connection failed; retrying");
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn exchange(
        &self,
        s: &mut pingora::protocols::http::client::HttpSession,
    ) -> Result<(u16, Vec<u8>), String> {
        let t = &self.target;
        let mut req =
            RequestHeader::build("GET", t.path.as_bytes(), None).map_err(|e| plain(&e))?;
        for (n, v) in [
            ("host", t.authority.as_str()),
            ("accept", "application/jwk-set+json, application/json"),
            ("user-agent", "tollgate"),
        ] {
            req.insert_header(n, v).map_err(|e| plain(&e))?;
        }
        s.write_request_header(Box::new(req))
            .await
            .map_err(|e| plain(&e))?;
        s.finish_request_body().await.map_err(|e| plain(&e))?;
        s.read_response_header().await.map_err(|e| plain(&e))?;
        let status = s.response_header().map(|h| h.status.as_u16()).unwrap_or(0);
        let mut body = Vec::new();
        while let Some(chunk) = s.read_response_body().await.map_err(|e| plain(&e))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("the JWK set is larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

/// A Pingora error in plain words, for a log line: what went wrong, without
/// Pingora's internal chain of sources, types and contexts.
fn plain(e: &pingora::Error) -> String {
    use pingora::ErrorType::*;
    let what = match e.etype() {
        ConnectTimedout => "the connection timed out",
        ConnectRefused => "the connection was refused",
        ConnectNoRoute => "there is no route to the host",
        TLSHandshakeTimedout => "the TLS handshake timed out",
        InvalidCert => "the server's certificate cannot be verified",
        TLSHandshakeFailure | TLSWantX509Lookup | HandshakeError => {
            // rustls says why (an unknown issuer, another name) at the root.
            let mut root = e;
            while let Some(c) = root
                .cause
                .as_ref()
                .and_then(|c| c.downcast_ref::<pingora::Error>())
            {
                root = c;
            }
            // Its context embeds a Display of an inner error chain:
            // "TLS connect() failed:  TLSHandshakeFailure context: … cause: <why>, SNI: …".
            let why = root
                .context
                .as_ref()
                .map(|c| c.as_str())
                .and_then(|c| c.strip_prefix("TLS connect() failed:"))
                .map(|c| c.split(", SNI:").next().unwrap_or(c))
                .map(|c| c.rsplit("cause: ").next().unwrap_or(c).trim())
                .filter(|c| !c.is_empty() && !c.contains("context:"));
            return match why {
                Some(why) => format!("the TLS handshake failed ({why})"),
                None => "the TLS handshake failed".into(),
            };
        }
        ConnectError | BindError | AcceptError | SocketError | ConnectProxyFailure => {
            "the connection could not be made"
        }
        InvalidHTTPHeader | H1Error | H2Error | H2Downgrade | InvalidH2 => {
            "the server's answer is not valid HTTP"
        }
        ReadTimedout => "the server did not answer in time",
        WriteTimedout => "sending the request timed out",
        ReadError => "reading the answer failed",
        WriteError => "sending the request failed",
        ConnectionClosed => "the server closed the connection without an answer",
        _ => "the request failed",
    };
    what.to_string()
}

// ---------------------------------------------------------------------------
// The plugin
// ---------------------------------------------------------------------------

/// A token taken apart, before any key is involved.
struct Parsed<'t> {
    alg: Algorithm,
    kid: Option<String>,
    payload: Vec<u8>,
    signature: &'t str,
    /// `header.payload`, the signed bytes.
    message: &'t [u8],
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

/// Headers a claim may not be written into.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "expect",
    "forwarded",
    "host",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-consumer",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

fn parse_algorithms(list: &[String], errs: &mut Vec<BuildError>) -> Vec<Algorithm> {
    let mut out = Vec::new();
    for (i, a) in list.iter().enumerate() {
        let key = KeyPath::default().key("algorithms").index(i);
        if a.trim().eq_ignore_ascii_case("none") {
            errs.push(BuildError {
                path: key.clone(),
                message: "alg \"none\" (an unsigned token) is never accepted".into(),
            });
            continue;
        }
        match Algorithm::from_str(a) {
            Ok(alg) if !out.contains(&alg) => out.push(alg),
            Ok(_) => {}
            Err(_) => errs.push(BuildError {
                path: key.clone(),
                message: format!(
                    "unknown algorithm {a:?}: use HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
                ),
            }),
        }
    }
    if list.is_empty() {
        errs.push(BuildError {
            path: KeyPath::default().key("algorithms"),
            message: "list at least one algorithm".into(),
        });
    }
    out
}

fn is_hmac(a: Algorithm) -> bool {
    a.family() == AlgorithmFamily::Hmac
}

impl Jwt {
    pub fn new(c: &JwtConfig, bx: &BuildCtx<'_>) -> BuildResult<Self> {
        let mut errs = Vec::new();
        let algorithms = parse_algorithms(&c.algorithms, &mut errs);
        let alg_key = |a: Algorithm| {
            let i = c
                .algorithms
                .iter()
                .position(|s| Algorithm::from_str(s).ok() == Some(a))
                .unwrap_or(0);
            KeyPath::default().key("algorithms").index(i)
        };

        let sources: Vec<&str> = [
            ("secret_env", c.secret_env.is_some()),
            ("public_key_file", c.public_key_file.is_some()),
            ("jwks_file", c.jwks_file.is_some()),
            ("jwks_url", c.jwks_url.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| *n)
        .collect();
        if sources.len() != 1 {
            errs.push(BuildError {
                path: KeyPath::default(),
                message: if sources.is_empty() {
                    "give one key source: secret_env, public_key_file, jwks_file or jwks_url".into()
                } else {
                    format!("give exactly one key source, not {}", sources.join(" and "))
                },
            });
        }

        let mut keys = None;
        if sources.len() == 1 {
            if let Some(var) = &c.secret_env {
                for a in algorithms.iter().filter(|a| !is_hmac(**a)) {
                    errs.push(BuildError {
                        path: alg_key(*a),
                        message: format!(
                            "{a:?} needs a public key (public_key_file, jwks_file or jwks_url); secret_env holds an HMAC secret"
                        ),
                    });
                }
                match std::env::var(var) {
                    Ok(s) if !s.is_empty() => {
                        let need = algorithms.iter().filter(|a| is_hmac(**a)).map(|a| min_secret(*a)).max().unwrap_or(32);
                        if s.len() < need {
                            errs.push(BuildError {
                                path: KeyPath::default().key("secret_env"),
                                message: format!(
                                    "the secret in ${var} is {} bytes; the configured HMAC algorithms need at least {need} (RFC 7518 §3.2)",
                                    s.len()
                                ),
                            });
                        }
                        let key = Key {
                            kid: None,
                            family: AlgorithmFamily::Hmac,
                            alg: None,
                            curve: None,
                            secret_len: s.len(),
                            key: DecodingKey::from_secret(s.as_bytes()),
                        };
                        keys = Some(Keys::Static(Arc::new(KeySet::new(vec![key], true))));
                    }
                    Ok(_) => errs.push(BuildError { path: KeyPath::default().key("secret_env"), message: format!("the environment variable {var} is empty") }),
                    Err(std::env::VarError::NotPresent) => {
                        errs.push(BuildError { path: KeyPath::default().key("secret_env"), message: format!("the environment variable {var} is not set") })
                    }
                    Err(std::env::VarError::NotUnicode(_)) => errs.push(BuildError {
                        path: KeyPath::default().key("secret_env"),
                        message: format!("the environment variable {var} is not UTF-8 (put binary secrets in a JWKS oct key)"),
                    }),
                }
            } else if let Some(f) = &c.public_key_file {
                let path = bx.path(f);
                for a in algorithms.iter().filter(|a| is_hmac(**a)) {
                    errs.push(BuildError {
                        path: alg_key(*a),
                        message: format!(
                            "{a:?} needs an HMAC secret (secret_env or a JWKS oct key); a public key is never used as one"
                        ),
                    });
                }
                match std::fs::read(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
                    .and_then(|b| pem_key(&b).map_err(|e| format!("{}: {e}", path.display())))
                {
                    Ok(key) => {
                        for a in algorithms
                            .iter()
                            .filter(|a| !is_hmac(**a) && !key.fits(**a))
                        {
                            errs.push(BuildError {
                                path: alg_key(*a),
                                message: format!("{a:?} does not fit the key in public_key_file"),
                            });
                        }
                        keys = Some(Keys::Static(Arc::new(KeySet::new(vec![key], true))));
                    }
                    Err(m) => errs.push(BuildError {
                        path: KeyPath::default().key("public_key_file"),
                        message: m,
                    }),
                }
            } else if let Some(f) = &c.jwks_file {
                let path = bx.path(f);
                match std::fs::read(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
                    .and_then(|b| {
                        parse_jwks(&b, &algorithms, true)
                            .map_err(|e| format!("{}: {e}", path.display()))
                    }) {
                    Ok(parsed) => {
                        for p in parsed.problems {
                            errs.push(BuildError {
                                path: KeyPath::default().key("jwks_file"),
                                message: format!("{}: {p}", path.display()),
                            });
                        }
                        if parsed.keys.is_empty() {
                            errs.push(BuildError {
                                path: KeyPath::default().key("jwks_file"),
                                message: format!(
                                    "{}: no key usable with the configured algorithms",
                                    path.display()
                                ),
                            });
                        }
                        keys = Some(Keys::Static(Arc::new(KeySet::new(parsed.keys, false))));
                    }
                    Err(m) => errs.push(BuildError {
                        path: KeyPath::default().key("jwks_file"),
                        message: m,
                    }),
                }
            } else if let Some(url) = &c.jwks_url {
                for a in algorithms.iter().filter(|a| is_hmac(**a)) {
                    errs.push(BuildError {
                        path: alg_key(*a),
                        message: format!("{a:?} needs an HMAC secret (secret_env or jwks_file); jwks_url serves public keys only"),
                    });
                }
                for (k, d) in [
                    ("jwks_refresh", c.jwks_refresh.0),
                    ("jwks_cooldown", c.jwks_cooldown.0),
                ] {
                    if d < Duration::from_secs(1) {
                        errs.push(BuildError {
                            path: KeyPath::default().key(k),
                            message: "must be at least 1s".into(),
                        });
                    }
                }
                match parse_url(url).and_then(|t| connector().map(|_| t)) {
                    Ok(target) => {
                        keys = Some(Keys::Remote(Arc::new(Remote {
                            name: bx.name.to_string(),
                            target,
                            algorithms: algorithms.clone(),
                            refresh: c.jwks_refresh.0,
                            cooldown: c.jwks_cooldown.0,
                            keys: ArcSwapOption::empty(),
                            state: Mutex::new(FetchState::default()),
                            fetches: AtomicU64::new(0),
                        })))
                    }
                    Err(m) => errs.push(BuildError {
                        path: KeyPath::default().key("jwks_url"),
                        message: m,
                    }),
                }
            }
        }

        if c.issuer.as_deref().is_some_and(str::is_empty) {
            errs.push(BuildError {
                path: KeyPath::default().key("issuer"),
                message: "must not be empty".into(),
            });
        }
        let audience = c.audience.as_ref().map(|a| a.to_vec()).unwrap_or_default();
        if c.audience.is_some() && (audience.is_empty() || audience.iter().any(String::is_empty)) {
            errs.push(BuildError {
                path: KeyPath::default().key("audience"),
                message: "give one or more non-empty audiences".into(),
            });
        }
        for (i, r) in c.required_claims.iter().enumerate() {
            if r.is_empty() {
                errs.push(BuildError {
                    path: KeyPath::default().key("required_claims").index(i),
                    message: "must not be empty".into(),
                });
            }
        }
        let mut forward = Vec::new();
        let mut targets = HashSet::new();
        for (claim, header) in &c.forward_claims {
            let key = KeyPath::default().key("forward_claims").key(claim.as_str());
            if claim.is_empty() {
                errs.push(BuildError {
                    path: key.clone(),
                    message: "the claim name must not be empty".into(),
                });
                continue;
            }
            match HeaderName::try_from(header.as_str()) {
                Err(_) => errs.push(BuildError { path: key.clone(), message: format!("invalid header name {header:?}") }),
                Ok(h) if RESERVED_HEADERS.contains(&h.as_str()) => errs.push(BuildError {
                    path: key.clone(),
                    message: format!("{h} is set by the gateway or the client's connection; choose another header"),
                }),
                Ok(h) if !targets.insert(h.clone()) => {
                    errs.push(BuildError { path: key.clone(), message: format!("two claims are forwarded into {h}") })
                }
                Ok(h) => forward.push((claim.clone(), h)),
            }
        }
        if c.consumer_claim.as_deref().is_some_and(str::is_empty) {
            errs.push(BuildError {
                path: KeyPath::default().key("consumer_claim"),
                message: "must not be empty".into(),
            });
        }
        match keys {
            Some(keys) if errs.is_empty() => Ok(Jwt {
                name: bx.name.to_string(),
                algorithms,
                keys,
                issuer: c.issuer.clone(),
                audience,
                leeway: c.leeway.0.as_secs(),
                required: c.required_claims.clone(),
                forward,
                consumer_claim: c.consumer_claim.clone().unwrap_or_else(|| "sub".into()),
                consumer_required: c.consumer_claim.is_some(),
                cache: Cache::new(CACHE_ENTRIES),
            }),
            _ => Err(errs),
        }
    }

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

    /// Everything that can be checked without a key: the three parts, the
    /// header, the algorithm.
    fn parse<'t>(&self, token: &'t str) -> Result<Parsed<'t>, Reason> {
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(Reason::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Reason::Malformed);
        };
        if h.is_empty() || p.is_empty() {
            return Err(Reason::Malformed);
        }
        let header = b64(h)
            .ok()
            .and_then(|b| strict_object(&b))
            .ok_or(Reason::Malformed)?;
        let alg = match header.get("alg") {
            Some(Value::String(a)) => Algorithm::from_str(a)
                .ok()
                .filter(|a| self.algorithms.contains(a)),
            _ => return Err(Reason::Malformed),
        }
        .ok_or(Reason::AlgNotAllowed)?;
        // No extension is understood, so none can be critical (RFC 7515 §4.1.11).
        if header.contains_key("crit") {
            return Err(Reason::Malformed);
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(Reason::Malformed),
        };
        let payload = b64(p).map_err(|_| Reason::Malformed)?;
        if s.is_empty() || b64(s).is_err() {
            return Err(Reason::Malformed);
        }
        let message = token
            .as_bytes()
            .get(..h.len() + 1 + p.len())
            .ok_or(Reason::Malformed)?;
        Ok(Parsed {
            alg,
            kid,
            payload,
            signature: s,
            message,
        })
    }

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

/// A JWS header or claims set: a JSON object in which no member name appears
/// twice, at any depth. serde_json alone keeps the last of duplicates, so
/// `{"exp":1,"exp":9999999999}` would mean what a differently built verifier
/// reads differently (RFC 7515 §4, RFC 7519 §4 allow rejecting it; we do).
/// Builds the same map serde_json would, so it allocates no more than that
/// (and the token is bounded by `max_header_size`).
fn strict_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Strict>(bytes).ok()?.0 {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A JSON value read with [`strict_object`]'s rule.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value without duplicate member names")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                return Err(serde::de::Error::custom("a member name appears twice"));
            }
            let Strict(v) = map.next_value()?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// The token of `Authorization: Bearer <token>`; a request with another scheme
/// (or none) has no token.
fn bearer(req: &RequestHeader) -> Result<&str, Reason> {
    let mut all = req.headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(v) = all.next() else {
        return Err(Reason::MissingToken);
    };
    if all.next().is_some() {
        return Err(Reason::Malformed);
    }
    let v = v.to_str().map_err(|_| Reason::Malformed)?.trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Reason::MissingToken);
    }
    match rest.trim() {
        "" => Err(Reason::Malformed),
        t => Ok(t),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

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

    async fn request(&self, session: &mut Session, ctx: &mut RequestCtx, _state: &mut Self::State) -> pingora::Result<Flow> {
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
    fn upstream_request(&self, req: &mut RequestHeader, _ctx: &RequestCtx, _state: &mut Self::State) -> pingora::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
        use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const RFC7515_A1_TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC7515_A1_KEY: &str =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";

    const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgTEz/3hlTzBuzvR6h
xMh2lrlQJiyCIjgjGlFjETigHmChRANCAAR9JWUvQkf4H96U1O2exqGKNU0GhkaU
LwV4bUsA7rbkk7pbrKQi/3i63yUAzzrAf63YCxxZDMYbPXxIlV003ZJk
-----END PRIVATE KEY-----
";

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    /// A config with one plugin table `[plugins.t]` (plus `files` beside it).
    fn build(table: &str, files: &[(&str, &[u8])]) -> (BuildResult<Jwt>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let src = format!(
            "[server]\nlisten = \"127.0.0.1:1\"\n\n[upstreams.u]\ntargets = [\"127.0.0.1:2\"]\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\npath = \"/\"\nplugins = [\"t\"]\n\n[plugins.t]\ntype = \"jwt\"\n{table}\n"
        );
        let cfg: Config = crate::config::load_str(&src, None, dir.path())
            .unwrap_or_else(|e| panic!("{:?}", e.messages()));
        let Some(jc) = cfg.plugin_config::<JwtConfig>("t") else {
            panic!("not jwt")
        };
        let r = Jwt::new(
            jc,
            &BuildCtx {
                name: "t",
                config: &cfg,
            },
        );
        (r, dir)
    }

    fn ok(table: &str, files: &[(&str, &[u8])]) -> (Jwt, tempfile::TempDir) {
        let (r, d) = build(table, files);
        match r {
            Ok(j) => (j, d),
            Err(e) => panic!("{e:?}"),
        }
    }

    fn err(table: &str, files: &[(&str, &[u8])]) -> Vec<BuildError> {
        match build(table, files).0 {
            Ok(_) => panic!("built: {table}"),
            Err(e) => e,
        }
    }

    fn hs(claims: Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn raw(header: &Value, claims: &Value, sig: &str) -> String {
        format!(
            "{}.{}.{sig}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    fn secret_jwt(extra: &str) -> Jwt {
        std::env::set_var("TOLLGATE_UNIT_JWT_SECRET", SECRET);
        ok(
            &format!(
                "algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_SECRET\"\n{extra}"
            ),
            &[],
        )
        .0
    }

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn rfc7515_a1() {
        let jwks = json!({"keys": [{"kty": "oct", "k": RFC7515_A1_KEY}]}).to_string();
        let (j, _d) = ok(
            "algorithms = [\"HS256\"]\njwks_file = \"jwks.json\"\nleeway = \"0s\"",
            &[("jwks.json", jwks.as_bytes())],
        );
        // Valid signature: accepted while `exp` (1300819380) lies ahead…
        let v = j.verify(RFC7515_A1_TOKEN, 1_300_819_000).unwrap();
        assert_eq!(v.claims["iss"], "joe");
        assert_eq!(v.consumer, None);
        // …and expired afterwards, even from the cache.
        assert_eq!(
            j.verify(RFC7515_A1_TOKEN, 1_300_819_380).unwrap_err(),
            Reason::Expired
        );
        assert_eq!(
            j.verify_uncached(RFC7515_A1_TOKEN, NOW).unwrap_err(),
            Reason::Expired
        );
        // One flipped signature character.
        let bad = RFC7515_A1_TOKEN.replace("dBjftJeZ4CVP", "dBjftJeZ4CVQ");
        assert_eq!(
            j.verify(&bad, 1_300_819_000).unwrap_err(),
            Reason::BadSignature
        );
    }

    #[test]
    fn hmac_claims() {
        let j = secret_jwt("issuer = \"https://id\"\naudience = [\"api\", \"other\"]\nrequired_claims = [\"scope\"]\nforward_claims = { sub = \"x-user-id\", roles = \"x-roles\", n = \"x-n\" }");
        let good = json!({"sub": "alice", "exp": NOW + 60, "iss": "https://id", "aud": ["x", "api"], "scope": "read", "roles": ["a", "b"], "n": 7});
        let v = j.verify(&hs(good.clone(), SECRET.as_bytes()), NOW).unwrap();
        assert_eq!(v.consumer.as_deref(), Some("alice"));
        let h: Vec<(&str, &str)> = v
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            h,
            vec![
                ("x-n", "7"),
                ("x-roles", "[\"a\",\"b\"]"),
                ("x-user-id", "alice")
            ]
        );

        let with = |k: &str, val: Value| {
            let mut c = good.clone();
            c[k] = val;
            j.verify(&hs(c, SECRET.as_bytes()), NOW)
        };
        let without = |k: &str| {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove(k);
            j.verify(&hs(c, SECRET.as_bytes()), NOW)
        };
        assert_eq!(
            with("iss", json!("https://evil")).unwrap_err(),
            Reason::BadIssuer
        );
        assert_eq!(without("iss").unwrap_err(), Reason::BadIssuer);
        assert_eq!(with("aud", json!("nope")).unwrap_err(), Reason::BadAudience);
        assert!(with("aud", json!("other")).is_ok());
        assert_eq!(without("aud").unwrap_err(), Reason::BadAudience);
        assert_eq!(without("scope").unwrap_err(), Reason::MissingClaim);
        assert_eq!(
            with("scope", Value::Null).unwrap_err(),
            Reason::MissingClaim
        );
        assert_eq!(without("exp").unwrap_err(), Reason::MissingClaim);
        assert_eq!(
            with("exp", json!("tomorrow")).unwrap_err(),
            Reason::BadClaimValue
        );
        assert_eq!(with("exp", json!(NOW - 31)).unwrap_err(), Reason::Expired);
        assert!(
            with("exp", json!(NOW - 29)).is_ok(),
            "within the 30s leeway"
        );
        assert_eq!(
            with("nbf", json!(NOW + 31)).unwrap_err(),
            Reason::NotYetValid
        );
        assert!(with("nbf", json!(NOW + 29)).is_ok());
        assert_eq!(
            with("sub", json!("a\r\nx-admin: 1")).unwrap_err(),
            Reason::BadClaimValue
        );
        // Forwarded claims that are not visible ASCII are percent-encoded (SPEC §3).
        let forwarded = |k: &str, val: Value, header: &str| {
            let v = with(k, val).unwrap();
            let (_, h) = v.headers.iter().find(|(n, _)| n == header).unwrap();
            h.to_str().unwrap().to_string()
        };
        assert_eq!(forwarded("n", json!("tab\there"), "x-n"), "tab%09here");
        assert_eq!(forwarded("n", json!("a\r\nx: 1"), "x-n"), "a%0D%0Ax: 1");
        assert_eq!(
            forwarded("n", json!("José 100%"), "x-n"),
            "Jos%C3%A9 100%25"
        );
        assert_eq!(forwarded("n", json!(" pad "), "x-n"), "%20pad%20");
        assert_eq!(forwarded("n", json!("\u{7f}\u{85}"), "x-n"), "%7F%C2%85");
        assert_eq!(forwarded("n", json!("read write"), "x-n"), "read write");
        assert_eq!(forwarded("n", json!(""), "x-n"), "");
        assert_eq!(
            forwarded("roles", json!(["ok", "bad\n", "é"]), "x-roles"),
            "[\"ok\",\"bad\\n\",\"%C3%A9\"]"
        );
        // A consumer must be a string without control characters, or a number.
        assert_eq!(
            with("sub", json!({"o": 1})).unwrap_err(),
            Reason::BadClaimValue
        );
        let v = with("sub", json!(42)).unwrap();
        assert_eq!(v.consumer.as_deref(), Some("42"));
        // An absent forwarded claim is simply not forwarded; an absent sub means no consumer.
        let v = without("roles").unwrap();
        assert!(v.headers.iter().all(|(n, _)| n != "x-roles"));
        assert_eq!(without("sub").unwrap().consumer, None);
        // Another secret.
        assert_eq!(
            j.verify(&hs(good.clone(), b"another-secret-another-secret-xx"), NOW)
                .unwrap_err(),
            Reason::BadSignature
        );
    }

    #[test]
    fn dates_beyond_year_9999_and_duplicate_names_are_refused() {
        let j = secret_jwt("");
        let ok = |payload: &str| {
            let msg = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
                URL_SAFE_NO_PAD.encode(payload)
            );
            let sig = jsonwebtoken::crypto::sign(
                msg.as_bytes(),
                &EncodingKey::from_secret(SECRET.as_bytes()),
                Algorithm::HS256,
            )
            .unwrap();
            j.verify_uncached(&format!("{msg}.{sig}"), NOW)
        };
        assert!(ok(&format!(r#"{{"sub":"a","exp":{}}}"#, NOW + 60)).is_ok());
        // The last second of year 9999 is a date; anything later is not.
        assert!(ok(r#"{"sub":"a","exp":253402300799}"#).is_ok());
        for exp in [
            "253402300800",
            "1e300",
            "18446744073709551616",
            "18446744073709551615",
            "9223372036854775807",
            "1.7976931348623157e308",
            "-1",
            "\"9999999999\"",
            "null",
            "true",
            "[1]",
        ] {
            assert_eq!(
                ok(&format!(r#"{{"sub":"a","exp":{exp}}}"#)).unwrap_err(),
                Reason::BadClaimValue,
                "exp {exp}"
            );
            let nbf = format!(r#"{{"sub":"a","exp":{},"nbf":{exp}}}"#, NOW + 60);
            assert_eq!(ok(&nbf).unwrap_err(), Reason::BadClaimValue, "nbf {exp}");
            let iat = format!(r#"{{"sub":"a","exp":{},"iat":{exp}}}"#, NOW + 60);
            assert_eq!(ok(&iat).unwrap_err(), Reason::BadClaimValue, "iat {exp}");
        }
        // Beyond what a double holds: not JSON serde can read, so not a token.
        assert_eq!(ok(r#"{"exp":1e400}"#).unwrap_err(), Reason::Malformed);
        // Duplicate names, in either order, at any depth.
        let exp = NOW + 60;
        for p in [
            format!(r#"{{"exp":1,"exp":{exp}}}"#),
            format!(r#"{{"exp":{exp},"sub":"a","exp":{exp}}}"#),
            format!(r#"{{"exp":{exp},"sub":"a","sub":"admin"}}"#),
            format!(r#"{{"exp":{exp},"ctx":{{"role":"u","role":"admin"}}}}"#),
            format!(r#"{{"exp":{exp},"l":[{{"a":1,"a":2}}]}}"#),
            format!(r#"{{"exp":{exp},"e\u0078p":1,"exp":{exp}}}"#),
        ] {
            assert_eq!(ok(&p).unwrap_err(), Reason::Malformed, "{p}");
        }
        // The same in the JOSE header.
        let claims = json!({"sub": "a", "exp": exp});
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        for h in [
            r#"{"alg":"none","alg":"HS256"}"#,
            r#"{"alg":"HS256","kid":"a","kid":"b"}"#,
        ] {
            let msg = format!("{}.{body}", URL_SAFE_NO_PAD.encode(h));
            let sig = jsonwebtoken::crypto::sign(
                msg.as_bytes(),
                &EncodingKey::from_secret(SECRET.as_bytes()),
                Algorithm::HS256,
            )
            .unwrap();
            assert_eq!(
                j.verify_uncached(&format!("{msg}.{sig}"), NOW).unwrap_err(),
                Reason::Malformed,
                "{h}"
            );
        }
        assert_eq!(
            strict_object(br#"{"a":{"b":1},"c":{"b":2}}"#)
                .unwrap()
                .len(),
            2
        );
        assert!(strict_object(b"[1]").is_none());
    }

    #[test]
    fn consumer_claim_required_when_configured() {
        let j = secret_jwt("consumer_claim = \"client_id\"");
        let t = hs(
            json!({"sub": "alice", "client_id": "acme", "exp": NOW + 60}),
            SECRET.as_bytes(),
        );
        assert_eq!(j.verify(&t, NOW).unwrap().consumer.as_deref(), Some("acme"));
        let t = hs(json!({"sub": "alice", "exp": NOW + 60}), SECRET.as_bytes());
        assert_eq!(j.verify(&t, NOW).unwrap_err(), Reason::MissingClaim);
    }

    #[test]
    fn hostile_tokens() {
        let j = secret_jwt("");
        let claims = json!({"sub": "alice", "exp": NOW + 60});
        let good = hs(claims.clone(), SECRET.as_bytes());
        assert!(j.verify(&good, NOW).is_ok());
        let (h, rest) = good.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        for t in [
            "",
            ".",
            "..",
            "abc",
            &format!("{h}.{p}"),
            &format!("{h}.{p}.{s}.{s}"),
            &format!("{h}.{p}."),
            &format!("{h}..{s}"),
            &format!("{h}.{p}.{s}="),
            &format!("{h}.{p}!.{s}"),
            &format!("{h}.{p}.{s}xy"),
            &format!("e30.{p}.{s}"),
            &format!("bm90IGpzb24.{p}.{s}"),
        ] {
            assert_eq!(j.verify(t, NOW).unwrap_err(), Reason::Malformed, "{t:?}");
        }
        for alg in ["none", "None", "NONE", "nOnE", "HS257", "RS256"] {
            let t = raw(&json!({"alg": alg, "typ": "JWT"}), &claims, "");
            assert_eq!(
                j.verify(&t, NOW).unwrap_err(),
                Reason::AlgNotAllowed,
                "{alg}"
            );
            let t = raw(&json!({"alg": alg}), &claims, s);
            assert_eq!(
                j.verify(&t, NOW).unwrap_err(),
                Reason::AlgNotAllowed,
                "{alg}"
            );
        }
        // A header HS256 signature moved onto another payload.
        let forged = raw(
            &json!({"alg": "HS256", "typ": "JWT"}),
            &json!({"sub": "admin", "exp": NOW + 60}),
            s,
        );
        assert_eq!(j.verify(&forged, NOW).unwrap_err(), Reason::BadSignature);
        // `crit` is refused; `jku`/`x5u`/`jwk` are ignored (the configured secret still decides).
        let hdr = json!({"alg": "HS256", "crit": ["exp"]});
        let t = encode_with(&hdr, &claims, SECRET.as_bytes());
        assert_eq!(j.verify(&t, NOW).unwrap_err(), Reason::Malformed);
        let hdr = json!({"alg": "HS256", "jku": "http://127.0.0.1:1/jwks", "x5u": "http://127.0.0.1:1/x", "jwk": {"kty": "oct", "k": "AAAA"}, "kid": "../../etc/passwd"});
        assert!(j
            .verify(&encode_with(&hdr, &claims, SECRET.as_bytes()), NOW)
            .is_ok());
        let t = encode_with(&hdr, &claims, b"AAAA-not-the-secret-AAAA-AAAA-AAAA");
        assert_eq!(j.verify(&t, NOW).unwrap_err(), Reason::BadSignature);
    }

    /// A token with an arbitrary header, HS256-signed.
    fn encode_with(header: &Value, claims: &Value, secret: &[u8]) -> String {
        let msg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = jsonwebtoken::crypto::sign(
            msg.as_bytes(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{msg}.{sig}")
    }

    #[test]
    fn jwks_key_families_and_kids() {
        let oct = URL_SAFE_NO_PAD.encode(SECRET);
        let jwks = json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": oct},
            {"kty": "oct", "kid": "enc", "use": "enc", "k": oct},
            {"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": URL_SAFE_NO_PAD.encode([0xc5u8; 256]), "e": "AQAB"},
        ]})
        .to_string();
        let (j, _d) = ok(
            "algorithms = [\"HS256\", \"RS256\"]\njwks_file = \"k.json\"",
            &[("k.json", jwks.as_bytes())],
        );
        let claims = json!({"sub": "a", "exp": NOW + 60});
        let t = encode_with(
            &json!({"alg": "HS256", "kid": "hmac"}),
            &claims,
            SECRET.as_bytes(),
        );
        assert!(j.verify(&t, NOW).is_ok());
        // No kid: tried against every HMAC key.
        let t = encode_with(&json!({"alg": "HS256"}), &claims, SECRET.as_bytes());
        assert!(j.verify(&t, NOW).is_ok());
        // An encryption key is not a signing key.
        let t = encode_with(
            &json!({"alg": "HS256", "kid": "enc"}),
            &claims,
            SECRET.as_bytes(),
        );
        assert_eq!(j.verify(&t, NOW).unwrap_err(), Reason::UnknownKid);
        // HS256 naming the RSA key: the RSA key is never an HMAC secret.
        let t = encode_with(
            &json!({"alg": "HS256", "kid": "rsa"}),
            &claims,
            SECRET.as_bytes(),
        );
        assert_eq!(j.verify(&t, NOW).unwrap_err(), Reason::KeyMismatch);
        let t = encode_with(
            &json!({"alg": "HS256", "kid": "../../etc/passwd"}),
            &claims,
            SECRET.as_bytes(),
        );
        assert_eq!(j.verify(&t, NOW).unwrap_err(), Reason::UnknownKid);
    }

    #[test]
    fn build_errors() {
        std::env::set_var("TOLLGATE_UNIT_JWT_SHORT", "short");
        std::env::set_var("TOLLGATE_UNIT_JWT_OK", SECRET);
        std::env::set_var("TOLLGATE_UNIT_JWT_EMPTY", "");
        let keys = |e: Vec<BuildError>| e.into_iter().map(|e| e.path.to_string()).collect::<Vec<_>>();
        assert_eq!(
            keys(err(
                "algorithms = [\"none\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"",
                &[]
            )),
            ["algorithms[0]"]
        );
        assert_eq!(
            keys(err(
                "algorithms = [\"HS256\", \"None\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"",
                &[]
            )),
            ["algorithms[1]"]
        );
        assert_eq!(
            keys(err(
                "algorithms = [\"hs256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"",
                &[]
            )),
            ["algorithms[0]"]
        );
        assert_eq!(
            keys(err(
                "algorithms = []\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"",
                &[]
            )),
            ["algorithms"]
        );
        assert_eq!(keys(err("algorithms = [\"HS256\"]", &[])), [""]);
        assert_eq!(
            keys(err("algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"\njwks_url = \"http://127.0.0.1:1/\"", &[])),
            [""]
        );
        assert_eq!(
            keys(err(
                "algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_UNSET_XYZ\"",
                &[]
            )),
            ["secret_env"]
        );
        assert_eq!(
            keys(err(
                "algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_EMPTY\"",
                &[]
            )),
            ["secret_env"]
        );
        assert_eq!(
            keys(err(
                "algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_SHORT\"",
                &[]
            )),
            ["secret_env"]
        );
        assert_eq!(
            keys(err(
                "algorithms = [\"HS512\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"",
                &[]
            )),
            ["secret_env"]
        );
        assert_eq!(
            keys(err(
                "algorithms = [\"HS256\", \"RS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"",
                &[]
            )),
            ["algorithms[1]"]
        );
        assert_eq!(
            keys(err(
                "algorithms = [\"RS256\", \"HS384\"]\njwks_url = \"https://id.example/jwks\"",
                &[]
            )),
            ["algorithms[1]"]
        );
        assert_eq!(
            keys(err(
                "algorithms = [\"RS256\"]\njwks_url = \"ftp://id.example/jwks\"",
                &[]
            )),
            ["jwks_url"]
        );
        assert_eq!(keys(err("algorithms = [\"RS256\"]\njwks_url = \"https://id.example/\"\njwks_cooldown = \"0s\"", &[])), ["jwks_cooldown"]);
        assert_eq!(
            keys(err(
                "algorithms = [\"RS256\"]\npublic_key_file = \"missing.pem\"",
                &[]
            )),
            ["public_key_file"]
        );
        assert_eq!(
            keys(err(
                "algorithms = [\"ES256\"]\npublic_key_file = \"k.pem\"",
                &[("k.pem", EC_PRIVATE.as_bytes())]
            )),
            ["public_key_file"]
        );
        assert_eq!(
            keys(err(
                "algorithms = [\"RS256\"]\njwks_file = \"k.json\"",
                &[("k.json", b"{\"keys\": []}")]
            )),
            ["jwks_file"]
        );
        let short_rsa = json!({"keys": [{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xc5u8; 128]), "e": "AQAB"}]}).to_string();
        assert_eq!(
            keys(err(
                "algorithms = [\"RS256\"]\njwks_file = \"k.json\"",
                &[("k.json", short_rsa.as_bytes())]
            )),
            ["jwks_file", "jwks_file"]
        );
        let short_oct = json!({"keys": [{"kty": "oct", "k": "c2hvcnQ"}]}).to_string();
        assert_eq!(
            keys(err(
                "algorithms = [\"HS256\"]\njwks_file = \"k.json\"",
                &[("k.json", short_oct.as_bytes())]
            )),
            ["jwks_file", "jwks_file"]
        );
        assert_eq!(
            keys(err("algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"\nforward_claims = { sub = \"x-consumer\", a = \"host\", b = \"bad header\" }", &[])),
            ["forward_claims.a", "forward_claims.b", "forward_claims.sub"]
        );
        assert_eq!(
            keys(err("algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"\nforward_claims = { a = \"x-a\", b = \"X-A\" }", &[])),
            ["forward_claims.b"]
        );
        assert_eq!(keys(err("algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_UNIT_JWT_OK\"\nissuer = \"\"\naudience = []", &[])), ["issuer", "audience"]);
    }

    #[test]
    fn tokens_over_the_size_bound_are_verified_but_never_cached() {
        let j = secret_jwt("leeway = \"0s\"");
        let big = "x".repeat(MAX_CACHED_TOKEN);
        let t = hs(
            json!({"sub": "a", "pad": big, "exp": NOW + 60}),
            SECRET.as_bytes(),
        );
        assert!(t.len() > MAX_CACHED_TOKEN);
        assert!(j.verify(&t, NOW).is_ok());
        assert!(j.verify(&t, NOW).is_ok());
        assert_eq!(j.cached_tokens(), 0);
        let small = hs(json!({"sub": "a", "exp": NOW + 60}), SECRET.as_bytes());
        assert!(j.verify(&small, NOW).is_ok());
        assert_eq!(j.cached_tokens(), 1);
    }

    #[test]
    fn cache_is_bounded_and_honours_exp_and_key_changes() {
        let j = secret_jwt("leeway = \"0s\"");
        for i in 0..(CACHE_ENTRIES + 3000) {
            let t = hs(
                json!({"sub": "a", "i": i, "exp": NOW + 60}),
                SECRET.as_bytes(),
            );
            j.verify(&t, NOW).unwrap();
        }
        assert!(j.cached_tokens() <= CACHE_ENTRIES, "{}", j.cached_tokens());
        assert!(j.cached_tokens() >= CACHE_ENTRIES / 4);
        let t = hs(json!({"sub": "a", "exp": NOW + 60}), SECRET.as_bytes());
        assert!(j.verify(&t, NOW).is_ok());
        assert!(j.verify(&t, NOW + 59).is_ok());
        assert_eq!(j.verify(&t, NOW + 60).unwrap_err(), Reason::Expired);

        // An entry verified under one key set is not used under another.
        let cache = Cache::new(100);
        let v = Arc::new(Verified {
            claims: Arc::new(Map::new()),
            consumer: None,
            headers: vec![],
        });
        cache.insert(
            [7; 32],
            Entry {
                verified: v,
                exp: 100.0,
                nbf: Some(50.0),
                generation: 1,
            },
        );
        assert!(cache.get(&[7; 32], 1, 60.0, 0.0).is_some());
        assert!(cache.get(&[7; 32], 1, 40.0, 0.0).is_none(), "before nbf");
        assert!(cache.get(&[7; 32], 2, 60.0, 0.0).is_none(), "other key set");
    }

    #[test]
    fn bearer_parsing() {
        let req = |v: &[&str]| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            for v in v {
                r.append_header("authorization", *v).unwrap();
            }
            r
        };
        assert_eq!(bearer(&req(&[])), Err(Reason::MissingToken));
        assert_eq!(bearer(&req(&["Basic YTpi"])), Err(Reason::MissingToken));
        assert_eq!(bearer(&req(&["Bearer"])), Err(Reason::Malformed));
        assert_eq!(bearer(&req(&["Bearer   "])), Err(Reason::Malformed));
        assert_eq!(
            bearer(&req(&["Bearer a.b.c", "Bearer d.e.f"])),
            Err(Reason::Malformed)
        );
        assert_eq!(bearer(&req(&["bearer a.b.c"])), Ok("a.b.c"));
        assert_eq!(bearer(&req(&["Bearer  a.b.c "])), Ok("a.b.c"));
    }

    #[test]
    fn challenge_headers_carry_no_token() {
        let h = challenge(Reason::MissingToken);
        assert_eq!(h[0].1, "Bearer");
        let h = challenge(Reason::Expired);
        assert_eq!(
            h[0].1,
            "Bearer error=\"invalid_token\", error_description=\"the token has expired\""
        );
    }

    #[test]
    fn retry_after_is_the_time_until_the_next_fetch() {
        // Default jwks_cooldown (30s): the issue's 503 said 29 s while the
        // background retries came after 1, 2 and 4 s.
        let (j, _d) = ok(
            "algorithms = [\"RS256\"]\njwks_url = \"http://127.0.0.1:9/jwks\"\njwks_refresh = \"10m\"",
            &[],
        );
        let Keys::Remote(r) = &j.keys else { panic!() };
        let now = Instant::now();
        let after_failures = |failures: u32| {
            let mut st = r.lock();
            st.failures = failures;
            st.last_failure = Some(now);
            st.last_on_demand = Some(now);
            drop(st);
            r.retry_after()
        };
        assert_eq!(after_failures(1), 1);
        assert_eq!(after_failures(2), 2);
        assert_eq!(after_failures(3), 4);
        assert_eq!(after_failures(4), 8);
        // At most 64 s. After a failure no fetch starts before the backoff
        // ends, on demand neither (the issue's log said "next try in 1s" while
        // the next attempt came 2, 4, 8 s later): the cooldown does not count.
        assert_eq!(after_failures(20), 64);
        {
            let mut st = r.lock();
            st.last_on_demand = None;
        }
        assert_eq!(r.retry_after(), 64);
        // Without failures, an on-demand fetch may start at once.
        r.lock().failures = 0;
        assert_eq!(r.retry_after(), 1, "an on-demand fetch may start at once");
        // Keys loaded, refreshed every 10 minutes: the refresh is the next fetch
        // unless the cooldown ends first.
        let mut st = r.lock();
        st.failures = 0;
        st.last_success = Some(now);
        st.last_on_demand = Some(now);
        assert_eq!(r.seconds_until_next(&st), 30);
        st.last_on_demand = Some(now - Duration::from_secs(3600));
        assert_eq!(r.seconds_until_next(&st), 1);
    }

    #[test]
    fn fetch_errors_are_plain_words() {
        let e = pingora::Error::explain(
            pingora::ErrorType::ConnectRefused,
            "Connection refused (os error 111)",
        );
        assert_eq!(plain(&e), "the connection was refused");
        // As Pingora 0.9's rustls connector builds it (seen in a real log).
        let inner =
            pingora::Error::explain(pingora::ErrorType::TLSHandshakeFailure, "tls connect error");
        let mut inner = *inner;
        inner.cause = Some("invalid peer certificate: NotValidForName".into());
        let root = pingora::Error::explain(
            pingora::ErrorType::TLSHandshakeFailure,
            format!("TLS connect() failed: {inner}, SNI: 127.0.0.1"),
        );
        let mut outer = pingora::Error::new(pingora::ErrorType::TLSHandshakeFailure);
        outer.cause = Some(root);
        assert_eq!(
            plain(&outer),
            "the TLS handshake failed (invalid peer certificate: NotValidForName)"
        );
        let bare = pingora::Error::explain(pingora::ErrorType::TLSHandshakeFailure, "odd");
        assert_eq!(plain(&bare), "the TLS handshake failed");
        for t in [
            pingora::ErrorType::ReadTimedout,
            pingora::ErrorType::ConnectionClosed,
        ] {
            let m = plain(&pingora::Error::new(t));
            assert!(
                !m.starts_with(' ') && !m.contains("context") && !m.contains("cause"),
                "{m}"
            );
        }
    }

    #[tokio::test]
    async fn unknown_kids_fetch_at_most_once_per_cooldown() {
        // Nothing listens: every fetch fails fast.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (j, _d) = ok(
            &format!("algorithms = [\"RS256\"]\njwks_url = \"http://127.0.0.1:{port}/jwks\"\njwks_cooldown = \"1h\"\njwks_refresh = \"1h\""),
            &[],
        );
        let Keys::Remote(r) = &j.keys else { panic!() };
        let mut waits = Vec::new();
        for _ in 0..20 {
            let r = r.clone();
            waits.push(tokio::spawn(async move { r.on_demand().await }));
        }
        let mut finished = 0;
        for w in waits {
            finished += w.await.unwrap() as usize;
        }
        assert!(finished >= 1);
        assert_eq!(j.jwks_fetches(), 1);
        assert!(!r.on_demand().await, "within the cooldown: no fetch");
        assert_eq!(j.jwks_fetches(), 1);
        assert!(j.key_set().is_none());
        assert_eq!(j.verify("a.b", NOW).unwrap_err(), Reason::Malformed);
        let none = raw(&json!({"alg": "none"}), &json!({"exp": NOW + 9}), "");
        assert_eq!(j.verify(&none, NOW).unwrap_err(), Reason::AlgNotAllowed);
        let rs = raw(
            &json!({"alg": "RS256", "kid": "k"}),
            &json!({"exp": NOW + 9}),
            "AAAA",
        );
        assert_eq!(j.verify(&rs, NOW).unwrap_err(), Reason::KeysUnavailable);
        assert!(r.retry_after() >= 1);
        // The background refresh retries after a failure, but never two at once.
        r.tick();
        r.tick();
        assert!(j.jwks_fetches() <= 2);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_retried_when_its_log_line_says() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (j, _d) = ok(
            &format!("algorithms = [\"RS256\"]\njwks_url = \"http://127.0.0.1:{port}/jwks\"\njwks_cooldown = \"1s\"\njwks_refresh = \"1h\""),
            &[],
        );
        let Keys::Remote(r) = &j.keys else { panic!() };
        let next = || r.seconds_until_next(&r.lock());
        assert!(r.on_demand().await);
        assert_eq!(j.jwks_fetches(), 1);
        assert_eq!(next(), 1);
        // Within the backoff a request starts no fetch, even past the cooldown.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!r.on_demand().await);
        assert_eq!(j.jwks_fetches(), 1);
        // Nothing calls `tick` here: the retry starts on time by itself.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(j.jwks_fetches(), 2);
        assert_eq!(next(), 2);
        assert!(!r.on_demand().await);
        tokio::time::sleep(Duration::from_millis(2300)).await;
        assert_eq!(j.jwks_fetches(), 3);
        assert_eq!(next(), 4);
    }
}
