//! Verification keys: a PEM public key, an HMAC secret, a JWK set; the
//! [`KeySet`] a token's `kid` and `alg` pick candidates from.

use super::Reason;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Keys tried for a token without `kid` (bounds the work one token can cause).
const MAX_KEYS_WITHOUT_KID: usize = 4;
const RSA_MIN_BITS: usize = 2048;
/// The `rsa` crate refuses larger moduli when verifying.
const RSA_MAX_BITS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Curve {
    P256,
    P384,
}

pub(super) struct Key {
    pub(super) kid: Option<String>,
    pub(super) family: AlgorithmFamily,
    /// The JWK's `alg`, when it names one.
    pub(super) alg: Option<Algorithm>,
    pub(super) curve: Option<Curve>,
    /// HMAC secret length (RFC 7518 §3.2: at least the hash size).
    pub(super) secret_len: usize,
    pub(super) key: DecodingKey,
}

impl Key {
    pub(super) fn fits(&self, alg: Algorithm) -> bool {
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

pub(super) fn min_secret(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

pub(super) struct KeySet {
    pub(super) keys: Vec<Key>,
    by_kid: HashMap<String, Vec<usize>>,
    /// A single configured key (`secret_env`, `public_key_file`): `kid` is not needed.
    ignore_kid: bool,
    /// Identity of this set: cached verifications are only valid for it.
    pub(super) generation: u64,
}

impl KeySet {
    pub(super) fn new(keys: Vec<Key>, ignore_kid: bool) -> KeySet {
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

    pub(super) fn candidates(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<&Key>, Reason> {
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

pub(super) fn b64(s: &str) -> Result<Vec<u8>, String> {
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
pub(super) fn pem_key(text: &[u8]) -> Result<Key, String> {
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
pub(super) struct ParsedJwks {
    pub(super) keys: Vec<Key>,
    pub(super) problems: Vec<String>,
}

fn str_field<'a>(o: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{name}\" is not a string")),
    }
}

pub(super) fn parse_jwks(
    text: &[u8],
    algs: &[Algorithm],
    allow_oct: bool,
) -> Result<ParsedJwks, String> {
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
