//! Building a [`Jwt`] from its config: the algorithms, the one key source,
//! the claim rules.

use super::jwks::Remote;
use super::keys::{min_secret, parse_jwks, pem_key, Key, KeySet};
use super::token_cache::Cache;
use super::{Alg, Jwt, JwtConfig, Keys, CACHE_ENTRIES};
use crate::outbound::parse_url;
use crate::pipeline::{BuildCtx, BuildError, BuildResult, KeyPath};
use http::HeaderName;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Headers a claim may not be written into: the gateway's own, and the
/// credentials and body description of the request.
fn reserved(name: &str) -> bool {
    crate::util::is_gateway_owned(name)
        || matches!(
            name,
            "authorization" | "proxy-authorization" | "cookie" | "content-type"
        )
}

/// The configured algorithms without repeats; an empty list is refused
/// (each entry was checked when the config was read, see [`Alg`]).
fn algorithms(list: &[Alg], errs: &mut Vec<BuildError>) -> Vec<Algorithm> {
    let mut out = Vec::new();
    for Alg(a) in list {
        if !out.contains(a) {
            out.push(*a);
        }
    }
    if list.is_empty() {
        errs.push(BuildError::at("algorithms", "list at least one algorithm"));
    }
    out
}

fn is_hmac(a: Algorithm) -> bool {
    a.family() == AlgorithmFamily::Hmac
}

impl Jwt {
    pub fn new(c: &JwtConfig, bx: &BuildCtx<'_>) -> BuildResult<Self> {
        let mut errs = Vec::new();
        let algorithms = algorithms(&c.algorithms, &mut errs);
        let alg_key = |a: Algorithm| {
            let i = c.algorithms.iter().position(|s| s.0 == a).unwrap_or(0);
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
                let remote = parse_url(url).and_then(|t| {
                    Remote::new(
                        bx.name,
                        t,
                        algorithms.clone(),
                        c.jwks_refresh.0,
                        c.jwks_cooldown.0,
                    )
                });
                match remote {
                    Ok(remote) => keys = Some(Keys::Remote(Arc::new(remote))),
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
                Ok(h) if reserved(h.as_str()) => errs.push(BuildError {
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
}
