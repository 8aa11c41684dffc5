//! `jwt` verification benchmarks.
//!
//! `cargo bench --bench jwt`. One verification of a bearer token as the `jwt`
//! plugin does it per request (split, header and alg check, key lookup,
//! signature, claims, consumer and forwarded headers), for HS256, RS256
//! (2048-bit key), ES256 (P-256) and EdDSA, each `uncached` (every call
//! verifies the signature) and `cached` (the same token again: the
//! verified-token cache answers).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use tollgate::config::load_str;
use tollgate::pipeline::BuildCtx;
use tollgate::plugins::jwt::Jwt;
use tollgate::plugins::jwt::JwtConfig;

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "bench-secret-0123456789abcdef-0123456789";

#[path = "../tests/fixtures/jwt_keys.rs"]
mod jwt_keys;
use jwt_keys::*;

/// A `jwt` plugin built from `table` as the gateway builds it, with files beside the config.
fn plugin(dir: &std::path::Path, table: &str) -> Jwt {
    let src = format!(
        "[server]\nlisten = \"127.0.0.1:1\"\n\n[upstreams.u]\ntargets = [\"127.0.0.1:2\"]\n\n\
         [[routes]]\nname = \"r\"\nupstream = \"u\"\npath = \"/\"\nplugins = [\"jwt\"]\n\n\
         [plugins.jwt]\ntype = \"jwt\"\nissuer = \"https://id.example.com\"\naudience = \"payments-api\"\n\
         required_claims = [\"scope\"]\nforward_claims = {{ sub = \"x-user-id\" }}\n{table}\n"
    );
    let cfg = match load_str(&src, None, dir) {
        Ok(c) => c,
        Err(e) => panic!("{:?}", e.messages()),
    };
    let Some(jc) = cfg.plugin_config::<JwtConfig>("jwt") else {
        panic!("not a jwt table")
    };
    match Jwt::new(
        jc,
        &BuildCtx {
            name: "jwt",
            config: &cfg,
        },
    ) {
        Ok(j) => j,
        Err(e) => panic!("{e:?}"),
    }
}

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let claims = json!({
        "sub": "acct_42", "iss": "https://id.example.com", "aud": "payments-api",
        "scope": "payments:write", "iat": NOW, "exp": NOW + 3600,
    });
    encode(&Header::new(alg), &claims, key).unwrap()
}

fn bench_verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rsa.pem"), RSA_PUBLIC).unwrap();
    std::fs::write(dir.path().join("ec.pem"), EC_PUBLIC).unwrap();
    std::fs::write(dir.path().join("ed.pem"), ED_PUBLIC).unwrap();
    // Single-threaded here: nothing else reads the environment yet.
    std::env::set_var("TOLLGATE_BENCH_JWT_SECRET", SECRET);
    let cases = [
        (
            "HS256",
            plugin(
                dir.path(),
                "algorithms = [\"HS256\"]\nsecret_env = \"TOLLGATE_BENCH_JWT_SECRET\"",
            ),
            token(
                Algorithm::HS256,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            ),
        ),
        (
            "RS256",
            plugin(
                dir.path(),
                "algorithms = [\"RS256\"]\npublic_key_file = \"rsa.pem\"",
            ),
            token(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
            ),
        ),
        (
            "ES256",
            plugin(
                dir.path(),
                "algorithms = [\"ES256\"]\npublic_key_file = \"ec.pem\"",
            ),
            token(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
            ),
        ),
        (
            "EdDSA",
            plugin(
                dir.path(),
                "algorithms = [\"EdDSA\"]\npublic_key_file = \"ed.pem\"",
            ),
            token(
                Algorithm::EdDSA,
                &EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
            ),
        ),
    ];
    let mut g = c.benchmark_group("jwt_verify");
    for (name, jwt, t) in &cases {
        assert!(
            jwt.verify_uncached(t, NOW).is_ok(),
            "{name}: the bench token must verify"
        );
        g.bench_function(format!("{name}/uncached"), |b| {
            b.iter(|| jwt.verify_uncached(black_box(t), black_box(NOW)).is_ok())
        });
        jwt.verify(t, NOW).unwrap();
        g.bench_function(format!("{name}/cached"), |b| {
            b.iter(|| jwt.verify(black_box(t), black_box(NOW)).is_ok())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench_verify
}
criterion_main!(benches);
