//! `type = "webhook_signature"`: the config table and the closed sets it is
//! written in (`scheme`, `algorithm`, `encoding`, the `signed_string`
//! template), each parsed when the file is read, with its error at its key.

use crate::config::{Dur, OneOrMany};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http::HeaderName;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;

fn default_tolerance() -> Dur {
    Dur::secs(300)
}

/// `type = "webhook_signature"`
///
/// Deserialised by hand (below) only so that an inline secret of
/// `scheme = "standard_webhooks"` is checked as it is read, at its index, like
/// the other values of the table; the keys are those of a
/// `#[serde(deny_unknown_fields)]` struct with these defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSignatureConfig {
    pub scheme: Scheme,
    /// Default none.
    pub secrets: Vec<String>,
    /// Name(s) of environment variables, each holding one secret.
    pub secrets_env: Option<OneOrMany>,
    /// Default 5 minutes.
    pub tolerance: Dur,
    /// `hmac` only: the header carrying the signature.
    pub header: Option<String>,
    /// `hmac` only: `sha256` when not given.
    pub algorithm: Option<Algorithm>,
    /// `hmac` only: `hex` when not given.
    pub encoding: Option<Encoding>,
    /// `hmac` only: a header with the Unix timestamp that is signed too.
    pub timestamp_header: Option<String>,
    /// `hmac` only: the signed string, from `{body}`, `{timestamp}` and `{header:NAME}`;
    /// default `{body}`, or `{timestamp}.{body}` with `timestamp_header`.
    pub signed_string: Option<Template>,
    /// `hmac` only: a prefix before the signature value, e.g. `sha256=`.
    pub prefix: Option<String>,
}

/// `scheme`: whose signature format the webhooks carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Stripe,
    Github,
    StandardWebhooks,
    /// A generic HMAC, described by the table's `hmac`-only keys.
    Hmac,
}

impl Scheme {
    pub fn parse(s: &str) -> Result<Scheme, String> {
        match s {
            "stripe" => Ok(Scheme::Stripe),
            "github" => Ok(Scheme::Github),
            "standard_webhooks" => Ok(Scheme::StandardWebhooks),
            "hmac" => Ok(Scheme::Hmac),
            other => Err(format!(
                "unknown scheme {other:?}: use \"stripe\", \"github\", \"standard_webhooks\" or \"hmac\""
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Stripe => "stripe",
            Scheme::Github => "github",
            Scheme::StandardWebhooks => "standard_webhooks",
            Scheme::Hmac => "hmac",
        }
    }
}

/// `algorithm` (`hmac` only): the HMAC's hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn parse(s: &str) -> Result<Algorithm, String> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            a => Err(format!(
                "unknown algorithm {a:?}: use \"sha256\" or \"sha512\""
            )),
        }
    }
}

/// `encoding` (`hmac` only): how the signature header writes the MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

impl Encoding {
    pub fn parse(s: &str) -> Result<Encoding, String> {
        match s {
            "hex" => Ok(Encoding::Hex),
            "base64" => Ok(Encoding::Base64),
            e => Err(format!("unknown encoding {e:?}: use \"hex\" or \"base64\"")),
        }
    }
}

/// `signed_string` (`hmac` only), parsed into its pieces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(pub(super) Vec<Part>);

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        parse_template(s).map(Template)
    }
}

/// `Deserialize` from a string through `parse`, its message kept as written.
macro_rules! from_string {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).map_err(de::Error::custom)
            }
        }
    )*};
}
from_string!(Scheme, Algorithm, Encoding, Template);

/// One piece of the generic scheme's signed string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Part {
    Lit(Vec<u8>),
    Body,
    Timestamp,
    Header(HeaderName),
}

/// A secret as the HMAC key it stands for. Messages name the rule, never the
/// value.
pub(super) fn secret_key(scheme: Scheme, s: &str) -> Result<Vec<u8>, &'static str> {
    if s.is_empty() {
        return Err("a secret must not be empty");
    }
    if scheme != Scheme::StandardWebhooks {
        return Ok(s.as_bytes().to_vec());
    }
    match s.strip_prefix("whsec_").map(|b| B64.decode(b)) {
        Some(Ok(k)) if !k.is_empty() => Ok(k),
        _ => Err("a standard_webhooks secret is \"whsec_\" followed by the base64 of the key"),
    }
}

const FIELDS: &[&str] = &[
    "scheme",
    "secrets",
    "secrets_env",
    "tolerance",
    "header",
    "algorithm",
    "encoding",
    "timestamp_header",
    "signed_string",
    "prefix",
];

impl<'de> Deserialize<'de> for WebhookSignatureConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct("WebhookSignatureConfig", FIELDS, Table)
    }
}

/// Reads the table key by key. `secrets` is checked against `scheme` when the
/// scheme came first (a TOML table reaches serde in key order, and "scheme" <
/// "secrets"); otherwise the build checks it, as it checks `secrets_env`.
struct Table;

impl<'de> Visitor<'de> for Table {
    type Value = WebhookSignatureConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct WebhookSignatureConfig")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        fn once<T, E: de::Error>(slot: &mut Option<T>, key: &'static str, v: T) -> Result<(), E> {
            if slot.is_some() {
                return Err(E::duplicate_field(key));
            }
            *slot = Some(v);
            Ok(())
        }
        let mut scheme = None;
        let mut secrets = None;
        let mut secrets_env = None;
        let mut tolerance = None;
        let mut header = None;
        let mut algorithm = None;
        let mut encoding = None;
        let mut timestamp_header = None;
        let mut signed_string = None;
        let mut prefix = None;
        while let Some(key) = m.next_key::<String>()? {
            match key.as_str() {
                "scheme" => once(&mut scheme, "scheme", m.next_value()?)?,
                "secrets" => {
                    let v = m.next_value_seed(Secrets(scheme))?;
                    once(&mut secrets, "secrets", v)?
                }
                "secrets_env" => once(&mut secrets_env, "secrets_env", m.next_value()?)?,
                "tolerance" => once(&mut tolerance, "tolerance", m.next_value()?)?,
                "header" => once(&mut header, "header", m.next_value()?)?,
                "algorithm" => once(&mut algorithm, "algorithm", m.next_value()?)?,
                "encoding" => once(&mut encoding, "encoding", m.next_value()?)?,
                "timestamp_header" => {
                    once(&mut timestamp_header, "timestamp_header", m.next_value()?)?
                }
                "signed_string" => once(&mut signed_string, "signed_string", m.next_value()?)?,
                "prefix" => once(&mut prefix, "prefix", m.next_value()?)?,
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        Ok(WebhookSignatureConfig {
            scheme: scheme.ok_or_else(|| de::Error::missing_field("scheme"))?,
            secrets: secrets.unwrap_or_default(),
            secrets_env: secrets_env.flatten(),
            tolerance: tolerance.unwrap_or_else(default_tolerance),
            header: header.flatten(),
            algorithm: algorithm.flatten(),
            encoding: encoding.flatten(),
            timestamp_header: timestamp_header.flatten(),
            signed_string: signed_string.flatten(),
            prefix: prefix.flatten(),
        })
    }
}

/// `secrets`, each checked as a key of `scheme` when it is known.
struct Secrets(Option<Scheme>);

impl<'de> DeserializeSeed<'de> for Secrets {
    type Value = Vec<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Secrets {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        let mut out = Vec::new();
        while let Some(s) = seq.next_element_seed(Secret(self.0))? {
            out.push(s);
        }
        Ok(out)
    }
}

struct Secret(Option<Scheme>);

impl<'de> DeserializeSeed<'de> for Secret {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let s = String::deserialize(d)?;
        if let Some(scheme) = self.0 {
            secret_key(scheme, &s).map_err(de::Error::custom)?;
        }
        Ok(s)
    }
}

/// Parses a `signed_string` template.
pub(super) fn parse_template(t: &str) -> Result<Vec<Part>, String> {
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
