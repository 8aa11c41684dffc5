//! `api_key`: a key in a request header identifies a consumer. Only SHA-256
//! hashes of keys live in config (or in `keys_file`). The presented key is
//! hashed and looked up by its digest, then the digest is compared again in
//! constant time: timing can at most reveal something about a SHA-256 digest,
//! never about a key. The key header is not forwarded upstream.

use super::auth;
use crate::pipeline::{
    BuildCtx, BuildError, BuildResult, Flow, KeyPath, Order, Plugin, PluginConfig, RequestCtx,
    Series,
};
use http::HeaderName;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

use serde::Deserialize;

// ---------------------------------------------------------------------------
// Config: `type = "api_key"`
// ---------------------------------------------------------------------------

/// One entry of `keys = [...]` (config or `keys_file`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    pub consumer: String,
    /// Lowercase hex SHA-256 of the key.
    pub key_sha256: String,
}

/// The contents of an `api_key` `keys_file`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysFile {
    pub keys: Vec<ApiKeyEntry>,
}

fn default_api_key_header() -> String {
    "x-api-key".into()
}

/// `type = "api_key"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    #[serde(default = "default_api_key_header")]
    pub header: String,
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
    #[serde(default)]
    pub keys_file: Option<String>,
}

impl PluginConfig for ApiKeyConfig {
    const TYPE: &'static str = "api_key";
    const ORDER: Order = Order::Auth;
    type Plugin = ApiKey;

    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<ApiKey> {
        ApiKey::new(self, bx)
    }

    fn files(&self, config: &crate::config::Config) -> Vec<std::path::PathBuf> {
        self.keys_file.iter().map(|f| config.resolve(f)).collect()
    }
}

pub struct ApiKey {
    name: String,
    header: HeaderName,
    keys: HashMap<[u8; 32], String>,
}

fn parse_hash(h: &str) -> Result<[u8; 32], String> {
    if h.len() != 64
        || !h
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(
            "key_sha256 must be 64 lowercase hex characters (the SHA-256 of the key)".into(),
        );
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(h, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

impl ApiKey {
    pub fn new(c: &ApiKeyConfig, bx: &BuildCtx<'_>) -> BuildResult<Self> {
        let mut errs = Vec::new();
        let header = match HeaderName::try_from(c.header.as_str()) {
            Ok(h) => Some(h),
            Err(_) => {
                errs.push(BuildError {
                    path: KeyPath::default().key("header"),
                    message: format!("invalid header name {:?}", c.header),
                });
                None
            }
        };
        // (where an error is reported, how the message names the entry, entry):
        // an entry of keys_file is reported at `keys_file`.
        let mut entries: Vec<(KeyPath, String, &ApiKeyEntry)> = c
            .keys
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    KeyPath::default().key("keys").index(i),
                    format!("keys[{i}]"),
                    e,
                )
            })
            .collect();
        let file_keys: Vec<ApiKeyEntry>;
        if let Some(f) = &c.keys_file {
            let path = bx.path(f);
            match std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|s| {
                    toml::from_str::<ApiKeysFile>(&s)
                        .map_err(|e| format!("{}: {}", path.display(), e.message()))
                }) {
                Ok(kf) => file_keys = kf.keys,
                Err(e) => {
                    errs.push(BuildError {
                        path: KeyPath::default().key("keys_file"),
                        message: e,
                    });
                    file_keys = Vec::new();
                }
            }
            entries.extend(file_keys.iter().enumerate().map(|(i, e)| {
                let at = KeyPath::default().key("keys_file");
                (at, format!("keys_file: keys[{i}]"), e)
            }));
        }
        let mut keys = HashMap::new();
        for (key, place, e) in entries {
            match parse_hash(&e.key_sha256) {
                Ok(h) => {
                    if e.consumer.is_empty() || !auth::header_safe(&e.consumer) {
                        errs.push(BuildError {
                            path: key.clone(),
                            message: format!(
                                "{place}: consumer must be a non-empty printable name"
                            ),
                        });
                    } else if keys.insert(h, e.consumer.clone()).is_some() {
                        errs.push(BuildError {
                            path: key.clone(),
                            message: format!("{place}: the same key hash is listed twice"),
                        });
                    }
                }
                Err(m) => errs.push(BuildError {
                    path: key.clone(),
                    message: format!("{place}: {m}"),
                }),
            }
        }
        if keys.is_empty() && errs.is_empty() {
            errs.push(BuildError {
                path: KeyPath::default().key("keys"),
                message: "no keys: give keys = [...] or keys_file".into(),
            });
        }
        match header {
            Some(header) if errs.is_empty() => Ok(ApiKey {
                name: bx.name.to_string(),
                header,
                keys,
            }),
            _ => Err(errs),
        }
    }

    /// The consumer a presented key belongs to.
    pub fn consumer_for(&self, presented: &[u8]) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let (stored, consumer) = self.keys.get_key_value(&digest)?;
        bool::from(stored.ct_eq(&digest)).then_some(consumer.as_str())
    }
}

/// `reason` of `tollgate_auth_failures_total`: no key presented.
pub const MISSING_KEY: &str = "missing_key";
/// `reason` of `tollgate_auth_failures_total`: a key that is not listed.
pub const INVALID_KEY: &str = "invalid_key";

impl Plugin for ApiKey {
    type State = ();

    fn series(&self) -> Vec<Series> {
        [MISSING_KEY, INVALID_KEY]
            .map(|reason| Series::AuthFailures { reason })
            .to_vec()
    }

    async fn request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        _state: &mut Self::State,
    ) -> pingora::Result<Flow> {
        let presented = session
            .req_header()
            .headers
            .get(&self.header)
            .map(|v| v.as_bytes());
        let outcome = match presented {
            None | Some(b"") => Err((MISSING_KEY, "an API key is required")),
            Some(k) => self
                .consumer_for(k)
                .map(str::to_string)
                .ok_or((INVALID_KEY, "the API key is not valid")),
        };
        match outcome {
            Ok(consumer) => {
                auth::set_consumer(ctx, &consumer);
                Ok(Flow::Continue)
            }
            Err((reason, detail)) => {
                auth::count_failure(ctx, &self.name, reason);
                Ok(auth::refuse(401, detail, vec![]))
            }
        }
    }

    fn upstream_request(
        &self,
        req: &mut RequestHeader,
        _ctx: &RequestCtx,
        _state: &mut Self::State,
    ) -> pingora::Result<()> {
        req.remove_header(&self.header);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup() {
        let h = hex::encode(Sha256::digest(b"sk_live_acme"));
        let mut keys = HashMap::new();
        keys.insert(parse_hash(&h).unwrap(), "acme".to_string());
        let k = ApiKey {
            name: "k".into(),
            header: HeaderName::from_static("x-api-key"),
            keys,
        };
        assert_eq!(k.consumer_for(b"sk_live_acme"), Some("acme"));
        assert_eq!(k.consumer_for(b"sk_live_acmf"), None);
        assert_eq!(k.consumer_for(b""), None);
        assert!(parse_hash(&h.to_uppercase()).is_err());
        assert!(parse_hash("abc").is_err());
    }
}
