//! The four schemes: reading the signatures a request presents (Stripe,
//! GitHub, Standard Webhooks, generic HMAC), computing the expected ones with
//! every secret and comparing them in constant time.

use super::config::{Algorithm, Encoding, Part};
use super::replay::{replay_key, Verified};
use super::WebhookSignature;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use sha2::{Sha256, Sha512};
use subtle::{Choice, ConstantTimeEq};

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

pub(super) const MISSING_SIGNATURE: Refusal = no("missing_signature");
pub(super) const MALFORMED_SIGNATURE: Refusal = no("malformed_signature");
pub(super) const BAD_SIGNATURE: Refusal = no("bad_signature");
pub(super) const MISSING_TIMESTAMP: Refusal = no("missing_timestamp");
pub(super) const BAD_TIMESTAMP: Refusal = no("bad_timestamp");
pub(super) const STALE_TIMESTAMP: Refusal = no("stale_timestamp");
pub(super) const MISSING_ID: Refusal = no("missing_id");
pub(super) const MISSING_HEADER: Refusal = no("missing_header");
pub(super) const DUPLICATE_HEADER: Refusal = no("duplicate_header");
pub(super) const REPLAY: Refusal = Refusal {
    status: 409,
    reason: "replay",
};
pub(super) const BODY_TOO_LARGE: Refusal = Refusal {
    status: 413,
    reason: "body_too_large",
};
pub(super) const BODY_TIMEOUT: Refusal = Refusal {
    status: 408,
    reason: "body_timeout",
};

/// Every refusal, for the series the plugin declares.
pub(super) const ALL: [Refusal; 12] = [
    MISSING_SIGNATURE,
    MALFORMED_SIGNATURE,
    BAD_SIGNATURE,
    MISSING_TIMESTAMP,
    BAD_TIMESTAMP,
    STALE_TIMESTAMP,
    MISSING_ID,
    MISSING_HEADER,
    DUPLICATE_HEADER,
    REPLAY,
    BODY_TOO_LARGE,
    BODY_TIMEOUT,
];

/// `result` of `tollgate_webhook_verifications_total`: verified.
pub const RESULT_VALID: &str = "valid";
/// `result`: refused, the timestamp is outside the tolerance.
pub const RESULT_STALE: &str = "stale";
/// `result`: refused, already received.
pub const RESULT_REPLAY: &str = "replay";
/// `result`: refused for any other reason.
pub const RESULT_INVALID: &str = "invalid";

impl Refusal {
    /// The `result` label of `tollgate_webhook_verifications_total`.
    pub fn result(&self) -> &'static str {
        if *self == STALE_TIMESTAMP {
            RESULT_STALE
        } else if *self == REPLAY {
            RESULT_REPLAY
        } else {
            RESULT_INVALID
        }
    }

    pub(super) fn detail(&self, limit: usize) -> String {
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

/// The `hmac` scheme as configured.
pub(super) struct Generic {
    pub(super) header: HeaderName,
    pub(super) encoding: Encoding,
    pub(super) prefix: String,
    pub(super) timestamp_header: Option<HeaderName>,
    pub(super) template: Vec<Part>,
}

/// What a request must present, per scheme.
pub(super) enum Verifier {
    Stripe,
    Github,
    StandardWebhooks,
    Hmac(Generic),
}

/// A secret as a keyed HMAC state, cloned for each verification (the key
/// schedule is done once).
#[derive(Clone)]
pub(super) enum Key {
    S256(Hmac<Sha256>),
    S512(Hmac<Sha512>),
}

impl Key {
    pub(super) fn new(alg: Algorithm, secret: &[u8]) -> Key {
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

    pub(super) fn sign(&self, parts: &[&[u8]]) -> Vec<u8> {
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
pub(super) struct Presented {
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

impl Presented {
    /// The webhook's own id when the scheme has one (`webhook-id`,
    /// `X-GitHub-Delivery`): a queue's de-duplication id (SPEC §12).
    pub(super) fn webhook_id(&self) -> Option<&str> {
        self.id.as_deref().or(self.delivery.as_deref())
    }
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

impl WebhookSignature {
    /// Reads and checks everything the headers carry: signatures, timestamp
    /// (against the tolerance), ids.
    pub(super) fn presented(&self, h: &HeaderMap, now: i64) -> Result<Presented, Refusal> {
        let mut p = Presented {
            timestamp: None,
            id: None,
            delivery: None,
            sigs: Vec::new(),
            signed_headers: Vec::new(),
        };
        match &self.verifier {
            Verifier::Stripe => {
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
            Verifier::Github => {
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
            Verifier::StandardWebhooks => {
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
            Verifier::Hmac(g) => {
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
    pub(super) fn check(&self, p: &Presented, body: &[u8], now: i64) -> Result<Verified, Refusal> {
        let ts = p.timestamp.as_deref().unwrap_or("").as_bytes();
        let mut msg: Vec<&[u8]> = Vec::with_capacity(8);
        match &self.verifier {
            Verifier::Stripe => msg.extend([ts, b".", body]),
            Verifier::Github => msg.push(body),
            Verifier::StandardWebhooks => {
                let id = p.id.as_deref().unwrap_or("").as_bytes();
                msg.extend([id, b".", ts, b".", body]);
            }
            Verifier::Hmac(g) => {
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
        let keys = match &self.verifier {
            Verifier::StandardWebhooks => {
                vec![replay_key(b"id", p.id.as_deref().unwrap_or("").as_bytes())]
            }
            // X-GitHub-Delivery is not signed: the content is remembered too.
            Verifier::Github => std::iter::once(content)
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
}
