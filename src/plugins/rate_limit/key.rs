//! What a request is counted under: the `key` of a rate limit, and the bucket
//! key it gives a request.

use crate::pipeline::RequestCtx;
use http::HeaderName;
use pingora::proxy::Session;
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

/// Key values longer than this (in bytes) are counted under their SHA-256.
pub const MAX_KEY_VALUE: usize = 128;

/// `<kind>:<value>` for a short value of visible ASCII only, else
/// `<kind>#<sha-256 hex>`: a key costs at most ~130 bytes whatever the client
/// sent, and the two forms never collide (`:` vs `#`). Any other value (long,
/// not UTF-8, or holding a space, a tab, a control character or any non-ASCII
/// character such as U+200B) is hashed: two different byte strings never share
/// a bucket, and a Redis key never holds an invisible character
/// (`redis-cli --scan` shows what is there).
pub(super) fn bucket_key(kind: char, value: &[u8]) -> String {
    let visible = value.iter().all(|b| (0x21..0x7f).contains(b));
    match std::str::from_utf8(value) {
        Ok(s) if s.len() <= MAX_KEY_VALUE && visible => {
            let mut k = String::with_capacity(2 + s.len());
            k.push(kind);
            k.push(':');
            k.push_str(s);
            k
        }
        _ => format!("{kind}#{}", hex::encode(Sha256::digest(value))),
    }
}

/// What a request is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Ip,
    Consumer,
    Header(HeaderName),
    Claim(String),
    Route,
    Global,
}

impl KeySource {
    pub fn parse(s: &str) -> Option<KeySource> {
        Some(match s {
            "ip" => KeySource::Ip,
            "consumer" => KeySource::Consumer,
            "route" => KeySource::Route,
            "global" => KeySource::Global,
            _ => {
                if let Some(h) = s.strip_prefix("header:") {
                    KeySource::Header(HeaderName::try_from(h).ok()?)
                } else {
                    KeySource::Claim(
                        s.strip_prefix("claim:")
                            .filter(|c| !c.is_empty())?
                            .to_string(),
                    )
                }
            }
        })
    }

    /// The bucket key of a request; a request without the key is counted under
    /// its IP (SPEC). Prefixes keep the key spaces apart; long values are
    /// hashed (`bucket_key`).
    pub fn key(&self, session: &Session, ctx: &RequestCtx) -> String {
        let found = match self {
            KeySource::Ip => None,
            KeySource::Global => return "g".to_string(),
            KeySource::Route => {
                return bucket_key(
                    'r',
                    ctx.route().map(|r| r.name.as_bytes()).unwrap_or_default(),
                )
            }
            KeySource::Consumer => ctx
                .identity
                .consumer
                .as_deref()
                .map(|c| bucket_key('c', c.as_bytes())),
            KeySource::Header(h) => session
                .req_header()
                .headers
                .get(h)
                .map(|v| bucket_key('h', v.as_bytes())),
            KeySource::Claim(c) => ctx
                .identity
                .claims
                .as_ref()
                .and_then(|m| m.get(c))
                .map(|v| match v {
                    serde_json::Value::String(s) => bucket_key('j', s.as_bytes()),
                    other => bucket_key('j', other.to_string().as_bytes()),
                }),
        };
        found.unwrap_or_else(|| match ctx.client.ip {
            Some(ip) => format!("i:{ip}"),
            None => "i:".to_string(),
        })
    }
}

/// The `key` of a rate limit as written (`"ip"`, `"header:X-Tenant"`), checked
/// when the file is read. It prints as the text written, so the digest of a
/// definition (its Redis keys, README "rate-limit key layout") is the same as
/// when `key` was a plain string.
#[derive(Clone, PartialEq, Eq)]
pub struct LimitKey {
    pub source: KeySource,
    text: String,
}

impl LimitKey {
    pub fn parse(s: &str) -> Result<LimitKey, String> {
        match KeySource::parse(s) {
            Some(source) => Ok(LimitKey {
                source,
                text: s.to_string(),
            }),
            None => Err(format!(
                "invalid key {s:?}: expected \"ip\", \"consumer\", \"header:NAME\", \"claim:NAME\", \"route\" or \"global\""
            )),
        }
    }

    /// The key as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Default for LimitKey {
    /// `ip`
    fn default() -> Self {
        LimitKey {
            source: KeySource::Ip,
            text: "ip".into(),
        }
    }
}

impl std::fmt::Debug for LimitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl<'de> Deserialize<'de> for LimitKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LimitKey::parse(&s).map_err(serde::de::Error::custom)
    }
}
