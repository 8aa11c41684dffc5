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
use tollgate::config::{load_str, PluginConfig};
use tollgate::plugins::jwt::Jwt;
use tollgate::plugins::BuildCtx;

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "bench-secret-0123456789abcdef-0123456789";

const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQC9505QQgtKZsYa
e+/zwsvRURcsviAAL++tbauntPtpb28g38e/ka71emTDUHf+CW1XMQ8KvRK8zvP1
v3HnCfXrkKI4/IFVy0GtII9o3Kzy8DhKuJuaxenOnBF77JEFjXnRwo50eXyuXfEE
KTdZsCWSo4zY2lPx0z5z1yRwGmVZTpV4/0ugvTaja9j/YG9RrkIA7W6xtDVYvlTw
pNJuEoVo7c6N6LQZX2oko4MRJwmgtmfsQ72DFqkYlUf8yYp05/j7OGVpQcyd5ME/
F50pd+gx75VA23RJIPuJ6HRBf+OANRrjCW6TffMNc9xcJUJESoG2I+hOjBLa7Lq/
PBqWdkWXAgMBAAECggEAQ9Xk9SlqZBTrThmYoOAkM2y+lQaDYt28xZxH9ZviNQsP
zNPzQ/yz3U9vwA82FcJjUwKcx267y0M4BUByXSADPzcGo8mbH70ABGp9n+04QH3L
9fEU8IgjGWFJo5VhRnT/n4zam0OsZJL9HcnlUj3oZgXTMcFnvBoEFJg1FXBwZKJe
mcvG2czufOZKPyRy1gYOLmDQpz7oYIVrUrebJuoRXkZanMWmFnRJYgOlDOOhlZl+
dM76scvAelBRThZpk208WURWv8WZxX0MA70wN3YvV6ww7O6ZWyx1Vtu1lBqBPfMt
FmnY3W9OgPcaT2wGbv9NUmQbcs+3BaOoHoqLD2iGpQKBgQDgKZSGdW6fE+xs3mtv
5G0b5SYVoN/GkolrZQsq8sbnlbSFCaJVMs+IfnigyvXF3F4A04VzokTEQn9aKQt0
hxLBa6nODOeEmQU7o/m8w7isTz92YZ2boDKZ19Y+HKGCYowDgKIJSD2GJ6bhwtxa
ggWNk+0aNcHBhh11VJLgEamuBQKBgQDY4BeKUJJANiSFejgtxU5xo5xy0rYdBHw5
DHToXwquCGp7DrqXnBruOhEQpRH9emDa5dW7168fSj4FmJBf3TadSp/fz6Z3gomn
F5AxvN6MmEMfTXloVdjZlhvwaXFbQUtBZCd8qNbYmJofFufKcldHFLtPNdwjdwTH
sRZ8t0Ub6wKBgQCHm7/1g89TPztVNU0rmLYFHSBoDzWxLG8j4DHcXpjD+wYFQanJ
/v4b5d7V71K1yzW3LD9cj/sn+86NXa1HZnuLNbW5KIda6TOIPA/WCVWMMDkFRdKS
FlzmQvOiCbIPbcykRcpA8Un/AbfsdfTWcDgpySa0J3c6uwbRN0PPd//9fQKBgBF0
wBBO+eaXNQtVUg5FElJNQ/tuAGCHiuQgn4xQkhB99uwevGAVnYlNPTBkyPTpE8Cq
vTBYZO0U0bcrl3tP1+SDLCkckp6N8Dx1xhJqzFLusoBjgQEn38NrtKX+JrScpc0G
nbMH9/sJFWapNlDyMRo0jfsLL8PfAZB9LX0uVy6vAoGBANMXT2ATRX4RAFtzx+aV
EB+nKi61MRHnGAXnQf67zoleV/S9OhUAGpofxJuLsWeZaTe0k9PK03Lm3Z7baVOU
pw7/lWm4v+Rdis3bZiL7Hl9btajAfO3+sVDIHlnHI+F3udFfTuzj4miGKlrV4oft
43GO21yZeZAWj6dAWIekgU/K
-----END PRIVATE KEY-----
";
const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAvedOUEILSmbGGnvv88LL
0VEXLL4gAC/vrW2rp7T7aW9vIN/Hv5Gu9Xpkw1B3/gltVzEPCr0SvM7z9b9x5wn1
65CiOPyBVctBrSCPaNys8vA4SribmsXpzpwRe+yRBY150cKOdHl8rl3xBCk3WbAl
kqOM2NpT8dM+c9ckcBplWU6VeP9LoL02o2vY/2BvUa5CAO1usbQ1WL5U8KTSbhKF
aO3Ojei0GV9qJKODEScJoLZn7EO9gxapGJVH/MmKdOf4+zhlaUHMneTBPxedKXfo
Me+VQNt0SSD7ieh0QX/jgDUa4wluk33zDXPcXCVCREqBtiPoTowS2uy6vzwalnZF
lwIDAQAB
-----END PUBLIC KEY-----
";
const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgTEz/3hlTzBuzvR6h
xMh2lrlQJiyCIjgjGlFjETigHmChRANCAAR9JWUvQkf4H96U1O2exqGKNU0GhkaU
LwV4bUsA7rbkk7pbrKQi/3i63yUAzzrAf63YCxxZDMYbPXxIlV003ZJk
-----END PRIVATE KEY-----
";
const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEfSVlL0JH+B/elNTtnsahijVNBoZG
lC8FeG1LAO625JO6W6ykIv94ut8lAM86wH+t2AscWQzGGz18SJVdNN2SZA==
-----END PUBLIC KEY-----
";
const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIEg79l7duk5Y4vfUdoCMaSdhRAkCyyD4Q18F1JT6C94v
-----END PRIVATE KEY-----
";
const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEADGGr6r5L2uSK3HaIdbDoziY8XB7l08enmeqYUvNBW2k=
-----END PUBLIC KEY-----
";

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
    let PluginConfig::Jwt(jc) = &cfg.plugins["jwt"] else {
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
