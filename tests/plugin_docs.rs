//! Every registered plugin type is documented: `plugins/<type>.md` exists, its
//! one ```toml example declares a plugin of that type, and `tollgate check`
//! accepts the example. The list comes from the registry itself, so a plugin
//! added without its document fails here.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

#[path = "fixtures/jwt_keys.rs"]
mod jwt_keys;
use jwt_keys::*;

/// Files and environment the documented examples name (a JWKS file, webhook
/// secrets), so that `check` can build every plugin.
fn jwks() -> String {
    let key = |alg: Algorithm, kid: &str| {
        let enc = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
            _ => EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        };
        let mut v =
            serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, alg).unwrap())
                .unwrap();
        v["kid"] = json!(kid);
        v
    };
    json!({ "keys": [key(Algorithm::RS256, "2024-rsa"), key(Algorithm::ES256, "2024-ec")] })
        .to_string()
}

#[test]
fn every_registered_plugin_has_a_document_whose_example_checks() {
    // The examples read these when they are built (set before any `check` runs;
    // no other test of this file reads them).
    std::env::set_var("STRIPE_WEBHOOK_SECRET", "whsec_ZG9jLWV4YW1wbGUtc2VjcmV0");
    std::env::set_var("GITHUB_WEBHOOK_SECRET", "doc-example-secret");
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let types = tollgate::plugins::type_names();
    assert!(types.len() >= 12, "{types:?}");
    let jwks = jwks();
    for ty in types {
        let example = doc_example(&format!("{ty}.md"), up);
        assert!(
            example.contains(&format!("type = \"{ty}\"")),
            "plugins/{ty}.md: its example declares no plugin of type {ty:?}"
        );
        let (ok, out) = check_config(
            &example,
            &[
                ("keys/jwks.json", &jwks),
                (
                    "openapi/payments.yaml",
                    include_str!("../plugins/openapi/payments.yaml"),
                ),
                (
                    "openapi/common.yaml",
                    include_str!("../plugins/openapi/common.yaml"),
                ),
                (
                    "graphql/persisted-queries.json",
                    include_str!("../plugins/graphql/persisted-queries.json"),
                ),
            ],
        );
        assert!(
            ok,
            "plugins/{ty}.md: tollgate check refuses its example:\n{out}"
        );
    }
}

#[test]
fn the_registry_knows_each_type_once() {
    let mut types = tollgate::plugins::type_names();
    let n = types.len();
    types.sort();
    types.dedup();
    assert_eq!(types.len(), n, "a plugin type is registered twice");
}

/// The plugin API sits below the proxy: no plugin source names `crate::proxy`,
/// and the proxy names no plugin module.
#[test]
fn plugins_and_the_proxy_stay_apart() {
    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut plugins = Vec::new();
    sources(&root.join("plugins"), &mut plugins);
    assert!(plugins.len() >= 12);
    for f in plugins {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("crate::proxy"),
            "{} imports the proxy",
            f.display()
        );
    }
    let mut proxy = Vec::new();
    sources(&root.join("proxy"), &mut proxy);
    for f in proxy {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("crate::plugins"),
            "{} names a plugin module",
            f.display()
        );
    }
}
