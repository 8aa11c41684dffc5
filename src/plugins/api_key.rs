//! `api_key`: a key in a request header identifies a consumer. Only SHA-256
//! hashes of keys live in config (or in `keys_file`). The presented key is
//! hashed and looked up by its digest, then the digest is compared again in
//! constant time: timing can at most reveal something about a SHA-256 digest,
//! never about a key. The key header is not forwarded upstream.

use super::{auth, BuildCtx, BuildError, BuildResult, Flow, Phase, Plugin};
use crate::config::{ApiKeyConfig, ApiKeyEntry, ApiKeysFile};
use crate::proxy::RequestCtx;
use async_trait::async_trait;
use http::HeaderName;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

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
                    key: "header".into(),
                    message: format!("invalid header name {:?}", c.header),
                });
                None
            }
        };
        let mut entries: Vec<(String, &ApiKeyEntry)> = c
            .keys
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("keys[{i}]"), e))
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
                        key: "keys_file".into(),
                        message: e,
                    });
                    file_keys = Vec::new();
                }
            }
            entries.extend(
                file_keys
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (format!("keys_file: keys[{i}]"), e)),
            );
        }
        let mut keys = HashMap::new();
        for (place, e) in entries {
            let key = if place.starts_with("keys_file") {
                "keys_file".to_string()
            } else {
                place.clone()
            };
            match parse_hash(&e.key_sha256) {
                Ok(h) => {
                    if e.consumer.is_empty() || !auth::header_safe(&e.consumer) {
                        errs.push(BuildError {
                            key,
                            message: format!(
                                "{place}: consumer must be a non-empty printable name"
                            ),
                        });
                    } else if keys.insert(h, e.consumer.clone()).is_some() {
                        errs.push(BuildError {
                            key,
                            message: format!("{place}: the same key hash is listed twice"),
                        });
                    }
                }
                Err(m) => errs.push(BuildError {
                    key,
                    message: format!("{place}: {m}"),
                }),
            }
        }
        if keys.is_empty() && errs.is_empty() {
            errs.push(BuildError {
                key: "keys".into(),
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

#[async_trait]
impl Plugin for ApiKey {
    fn phase(&self) -> Phase {
        Phase::Auth
    }

    async fn request(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<Flow> {
        let presented = session
            .req_header()
            .headers
            .get(&self.header)
            .map(|v| v.as_bytes());
        let outcome = match presented {
            None | Some(b"") => Err(("missing_key", "an API key is required")),
            Some(k) => self
                .consumer_for(k)
                .map(str::to_string)
                .ok_or(("invalid_key", "the API key is not valid")),
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

    fn upstream_request(&self, req: &mut RequestHeader, _ctx: &RequestCtx) -> pingora::Result<()> {
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
