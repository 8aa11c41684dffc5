//! The `jwt` plugin through a real gateway and real upstreams: the RFC 7515
//! A.1 vector, every accepted algorithm family, the hostile cases (alg `none`,
//! key confusion, expiry and leeway, `nbf`, `iss`, `aud`, malformed tokens,
//! path-like `kid`s, header injection through claims, spoofed identity
//! headers), JWKS over HTTP and HTTPS served by a counting test server
//! (rotation, a flood of unknown `kid`s, the server going down, the first
//! fetch failing), metrics and logs, and the example of `plugins/jwt.md`.
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------------------------
// Fixed test keys (throw-away, generated with openssl for these tests only)
// ---------------------------------------------------------------------------------------------

#[path = "fixtures/jwt_keys.rs"]
mod jwt_keys;
use jwt_keys::*;

/// RFC 7515 appendix A.1: an HS256 JWS and its key (a JWK `oct`), `exp` 1300819380 (2011).
const RFC7515_A1_TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const RFC7515_A1_KEY: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";

const SECRET: &str = "tollgate-test-secret-0123456789abcdef";
const WWW_BEARER: &str = "Bearer";
const INVALID_TOKEN: &str = "Bearer error=\"invalid_token\"";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(data: impl AsRef<[u8]>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn encoding_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(SECRET.as_bytes())
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
    }
}

/// A token signed with the test key of `alg`'s family.
fn token(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, &encoding_key(alg)).unwrap()
}

fn hs256(claims: &Value) -> String {
    token(Algorithm::HS256, None, claims)
}

/// A token with a hand-made header, signed with HS256 under `secret`.
fn hs256_raw(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let msg = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let sig = jsonwebtoken::crypto::sign(
        msg.as_bytes(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{msg}.{sig}")
}

/// The public JWK of the test key for `alg`, with `kid`.
fn jwk(alg: Algorithm, kid: &str) -> Value {
    let j = jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding_key(alg), alg).unwrap();
    let mut v = serde_json::to_value(j).unwrap();
    v["kid"] = json!(kid);
    v["use"] = json!("sig");
    v
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A 401 for a presented but refused token.
    #[track_caller]
    fn assert_invalid(&self) {
        assert_eq!(self.status, 401, "body: {}", self.body);
        let www = self.header("www-authenticate").unwrap_or("");
        assert!(www.starts_with(INVALID_TOKEN), "WWW-Authenticate: {www}");
        assert!(
            self.header("content-type")
                .unwrap_or("")
                .starts_with("application/problem+json"),
            "problem body expected"
        );
        let p: Value = serde_json::from_str(&self.body).expect("problem JSON");
        assert_eq!(p["status"], 401);
    }
}

async fn call(gw: &Gateway, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> Answer {
    let mut req = gw.client().get(gw.url(path));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request through the gateway");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap_or_default(),
    }
}

async fn failures(gw: &Gateway, route: &str, plugin: &str, reason: &str) -> f64 {
    gw.metric(&format!(
        r#"tollgate_auth_failures_total{{route="{route}",plugin="{plugin}",reason="{reason}"}}"#
    ))
    .await
    .unwrap_or(0.0)
}

#[track_caller]
fn assert_no_secrets_in_logs(gw: &Gateway, tokens: &[&str]) {
    let logs = gw.logs();
    for t in tokens {
        assert!(!logs.contains(t), "a token appears in the gateway logs");
        if let Some((_, sig)) = t.rsplit_once('.') {
            if sig.len() > 8 {
                assert!(!logs.contains(sig), "a token signature appears in the logs");
            }
        }
    }
    assert!(
        !logs.contains(SECRET),
        "the HMAC secret appears in the logs"
    );
}

fn base_config(up: &TestUpstream, routes_and_plugins: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[upstreams.up]
targets = ["{up}"]

{routes_and_plugins}
"#,
        up = up.addr()
    )
}

// ---------------------------------------------------------------------------------------------
// A JWKS server whose fetches are counted
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Serve,
    /// 500 with an empty body.
    Fail,
    /// Close the connection without answering.
    Close,
}

struct JwksState {
    body: Mutex<String>,
    mode: Mutex<Mode>,
    fetches: AtomicUsize,
}

struct JwksServer {
    addr: SocketAddr,
    tls: bool,
    state: Arc<JwksState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(body: String, tls: Option<(String, String)>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(JwksState {
            body: Mutex::new(body),
            mode: Mutex::new(Mode::Serve),
            fetches: AtomicUsize::new(0),
        });
        let acceptor = tls.map(|(cert, key)| tls_acceptor(&cert, &key));
        let st = state.clone();
        let has_tls = acceptor.is_some();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(s) = a.accept(tcp).await {
                                serve_conn(s, st).await;
                            }
                        }
                        None => serve_conn(tcp, st).await,
                    }
                });
            }
        });
        JwksServer {
            addr,
            tls: has_tls,
            state,
            task,
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/.well-known/jwks.json", self.addr)
    }

    fn set_body(&self, body: String) {
        *self.state.body.lock().unwrap() = body;
    }

    fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }
}

fn tls_acceptor(cert_pem: &str, key_pem: &str) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// Keep-alive HTTP/1.1: every request head counts as one fetch.
async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, st: Arc<JwksState>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..end);
        st.fetches.fetch_add(1, Ordering::SeqCst);
        let mode = *st.mode.lock().unwrap();
        let resp = match mode {
            Mode::Close => return,
            Mode::Fail => {
                "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n".to_string()
            }
            Mode::Serve => {
                let body = st.body.lock().unwrap().clone();
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
        };
        if s.write_all(resp.as_bytes()).await.is_err() || s.flush().await.is_err() {
            return;
        }
    }
}

fn jwks_config(up: &TestUpstream, url: &str, extra: &str) -> String {
    base_config(
        up,
        &format!(
            r#"
[[routes]]
name = "r"
upstream = "up"
path = "/"
plugins = ["jwt"]

[plugins.jwt]
type = "jwt"
algorithms = ["RS256", "ES256"]
jwks_url = "{url}"
{extra}
"#
        ),
    )
}

fn claims() -> Value {
    json!({"sub": "alice", "exp": now() + 300})
}

/// Waits until the gateway has fetched the JWKS at least `n` times (by its
/// background refresh), then until a token signed by `kid` is accepted.
async fn wait_keys_loaded(gw: &Gateway, server: &JwksServer, n: usize, kid: &str) {
    wait_until_msg(
        Duration::from_secs(20),
        "the background JWKS fetch",
        || async { server.fetches() >= n },
    )
    .await;
    let t = token(Algorithm::RS256, Some(kid), &claims());
    wait_until_msg(
        Duration::from_secs(10),
        "a token of the fetched key accepted",
        || async { call(gw, "/", Some(&t), &[]).await.status == 200 },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rfc7515_appendix_a1_is_expired() {
    let up = TestUpstream::start("up").await;
    let cfg = base_config(
        &up,
        r#"
[[routes]]
name = "r"
upstream = "up"
path = "/"
plugins = ["jwt"]

[plugins.jwt]
type = "jwt"
algorithms = ["HS256"]
jwks_file = "rfc.json"
"#,
    );
    let key = jwks(&[json!({"kty": "oct", "k": RFC7515_A1_KEY})]);
    let gw = Gateway::builder(&cfg).file("rfc.json", key).start().await;
    let a = call(&gw, "/", Some(RFC7515_A1_TOKEN), &[]).await;
    a.assert_invalid();
    assert!(a.header("www-authenticate").unwrap().contains("expired"));
    assert_eq!(failures(&gw, "r", "jwt", "expired").await, 1.0);
    // The signature itself is good: a tampered one is refused for that reason instead.
    let tampered = RFC7515_A1_TOKEN.replace("dBjftJeZ4CVP", "dBjftJeZ4CVQ");
    call(&gw, "/", Some(&tampered), &[]).await.assert_invalid();
    assert_eq!(failures(&gw, "r", "jwt", "bad_signature").await, 1.0);
    assert_eq!(up.hits(), 0);
    assert_no_secrets_in_logs(&gw, &[RFC7515_A1_TOKEN]);
}

#[tokio::test]
async fn hs256_claims_and_hostile_tokens() {
    let up = TestUpstream::start("up").await;
    let cfg = base_config(
        &up,
        r#"
[[routes]]
name = "r"
upstream = "up"
path = "/"
plugins = ["jwt"]

[plugins.jwt]
type = "jwt"
algorithms = ["HS256"]
secret_env = "JWT_TEST_SECRET"
issuer = "https://id.example.com"
audience = "payments-api"
leeway = "30s"
required_claims = ["scope"]
forward_claims = { sub = "x-user-id", scope = "x-scope", tier = "x-tier" }
"#,
    );
    let gw = Gateway::builder(&cfg)
        .env("JWT_TEST_SECRET", SECRET)
        .start()
        .await;
    let t0 = now();
    let good = json!({
        "sub": "alice", "iss": "https://id.example.com", "aud": "payments-api",
        "scope": "payments:read", "tier": 2, "exp": t0 + 300,
    });
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let mut used: Vec<String> = Vec::new();

    // Valid: forwarded with the consumer and the claim headers; spoofed copies dropped.
    let t = hs256(&good);
    used.push(t.clone());
    let a = call(
        &gw,
        "/orders",
        Some(&t),
        &[
            ("x-user-id", "mallory"),
            ("x-consumer", "mallory"),
            ("x-tier", "9"),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let r = up.last_request().unwrap();
    assert_eq!(r.header_all("x-consumer"), ["alice"]);
    assert_eq!(r.header_all("x-user-id"), ["alice"]);
    assert_eq!(r.header_all("x-scope"), ["payments:read"]);
    assert_eq!(r.header_all("x-tier"), ["2"]);
    // The Authorization header is forwarded (like most gateways do by default).
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {t}").as_str())
    );

    // An absent forwarded claim: the client's copy is still dropped.
    let t = hs256(&without("tier"));
    used.push(t.clone());
    let a = call(
        &gw,
        "/",
        Some(&t),
        &[("x-tier", "9"), ("x-user-id", "mallory")],
    )
    .await;
    assert_eq!(a.status, 200);
    let r = up.last_request().unwrap();
    assert!(
        r.header("x-tier").is_none(),
        "client-sent x-tier reached the upstream"
    );
    assert_eq!(r.header_all("x-user-id"), ["alice"]);

    // aud as an array containing ours.
    let t = hs256(&with("aud", json!(["other", "payments-api"])));
    assert_eq!(call(&gw, "/", Some(&t), &[]).await.status, 200);
    // Expired, but within the leeway.
    let t = hs256(&with("exp", json!(t0 - 10)));
    assert_eq!(call(&gw, "/", Some(&t), &[]).await.status, 200);
    let hits = up.hits();

    // Missing token: a bare challenge.
    let a = call(&gw, "/", None, &[]).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("www-authenticate"), Some(WWW_BEARER));
    let a = call(&gw, "/", None, &[("authorization", "Basic YTpi")]).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("www-authenticate"), Some(WWW_BEARER));

    let (h, rest) = used[0].split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let none_header = |alg: &str| b64(json!({"alg": alg, "typ": "JWT"}).to_string());
    let cases: Vec<(&str, String)> = vec![
        ("expired", hs256(&with("exp", json!(t0 - 60)))),
        ("not_yet_valid", hs256(&with("nbf", json!(t0 + 120)))),
        (
            "bad_issuer",
            hs256(&with("iss", json!("https://evil.example.com"))),
        ),
        ("bad_audience", hs256(&with("aud", json!("other-api")))),
        ("bad_audience", hs256(&with("aud", json!(["a", "b"])))),
        ("missing_claim", hs256(&without("exp"))),
        ("missing_claim", hs256(&without("scope"))),
        (
            "bad_claim_value",
            hs256(&with("sub", json!("alice\r\nx-admin: true"))),
        ),
        ("bad_claim_value", hs256(&with("exp", json!(1e300)))),
        ("malformed", format!("{h}.{p}")),
        ("malformed", format!("{h}.{p}.{s}.{s}")),
        ("malformed", format!("{h}.{p}!!.{s}")),
        ("malformed", format!("{h}.{p}.{s}xy")),
        ("malformed", "%%%.***.###".to_string()),
        ("alg_not_allowed", format!("{}.{p}.", none_header("none"))),
        ("alg_not_allowed", format!("{}.{p}.", none_header("None"))),
        (
            "alg_not_allowed",
            format!("{}.{p}.{s}", none_header("none")),
        ),
        ("alg_not_allowed", token(Algorithm::HS512, None, &good)),
        (
            "bad_signature",
            hs256_raw(
                &json!({"alg": "HS256"}),
                &good,
                b"another-secret-another-secret-00",
            ),
        ),
        // A claim changed under the original signature.
        (
            "bad_signature",
            format!("{h}.{}.{s}", b64(with("sub", json!("admin")).to_string())),
        ),
    ];
    for (reason, t) in &cases {
        let before = failures(&gw, "r", "jwt", reason).await;
        let a = call(&gw, "/", Some(t), &[]).await;
        a.assert_invalid();
        assert_eq!(
            failures(&gw, "r", "jwt", reason).await,
            before + 1.0,
            "reason {reason} for token {t}"
        );
        used.push(t.clone());
    }
    // An empty bearer token.
    call(&gw, "/", None, &[("authorization", "Bearer ")])
        .await
        .assert_invalid();
    assert_eq!(up.hits(), hits, "a refused request reached the upstream");
    assert!(failures(&gw, "r", "jwt", "missing_token").await >= 2.0);

    let refs: Vec<&str> = used.iter().map(String::as_str).collect();
    assert_no_secrets_in_logs(&gw, &refs);
}

#[tokio::test]
async fn asymmetric_algorithms_and_key_confusion() {
    let up = TestUpstream::start("up").await;
    let mut routes = String::new();
    for (name, algs, source) in [
        (
            "rs",
            r#"["RS256", "PS256"]"#,
            r#"public_key_file = "keys/rsa.pem""#,
        ),
        ("es", r#"["ES256"]"#, r#"public_key_file = "keys/ec.pem""#),
        ("ed", r#"["EdDSA"]"#, r#"public_key_file = "keys/ed.pem""#),
        (
            "set",
            r#"["RS256", "ES256", "EdDSA", "HS256"]"#,
            r#"jwks_file = "keys/jwks.json""#,
        ),
    ] {
        routes.push_str(&format!(
            r#"
[[routes]]
name = "{name}"
upstream = "up"
path = "/{name}"
plugins = ["jwt_{name}"]

[plugins.jwt_{name}]
type = "jwt"
algorithms = {algs}
{source}
forward_claims = {{ sub = "x-user-id" }}
"#
        ));
    }
    let set = jwks(&[
        jwk(Algorithm::RS256, "rsa-1"),
        jwk(Algorithm::ES256, "ec-1"),
        jwk(Algorithm::EdDSA, "ed-1"),
    ]);
    let gw = Gateway::builder(&base_config(&up, &routes))
        .file("keys/rsa.pem", RSA_PUBLIC)
        .file("keys/ec.pem", EC_PUBLIC)
        .file("keys/ed.pem", ED_PUBLIC)
        .file("keys/jwks.json", &set)
        .start()
        .await;

    for (path, alg, kid) in [
        ("/rs", Algorithm::RS256, None),
        ("/rs", Algorithm::PS256, None),
        ("/es", Algorithm::ES256, None),
        ("/ed", Algorithm::EdDSA, None),
        ("/set", Algorithm::RS256, Some("rsa-1")),
        ("/set", Algorithm::ES256, Some("ec-1")),
        ("/set", Algorithm::EdDSA, Some("ed-1")),
        ("/set", Algorithm::ES256, None),
    ] {
        let sub = format!("user-{path}-{alg:?}");
        let t = token(alg, kid, &json!({"sub": sub, "exp": now() + 60}));
        let a = call(&gw, path, Some(&t), &[("x-user-id", "mallory")]).await;
        assert_eq!(a.status, 200, "{path} {alg:?}: {}", a.body);
        let r = up.last_request().unwrap();
        assert_eq!(r.header_all("x-consumer"), [sub.as_str()]);
        assert_eq!(r.header_all("x-user-id"), [sub.as_str()]);
    }
    // The second time the cached verification answers the same.
    let t = token(
        Algorithm::ES256,
        None,
        &json!({"sub": "again", "exp": now() + 60}),
    );
    for _ in 0..2 {
        assert_eq!(call(&gw, "/es", Some(&t), &[]).await.status, 200);
    }

    // Key confusion: HS256 signed with the RSA public key's PEM as the secret.
    let confused = hs256_raw(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &json!({"sub": "admin", "exp": now() + 60}),
        RSA_PUBLIC.as_bytes(),
    );
    call(&gw, "/rs", Some(&confused), &[])
        .await
        .assert_invalid();
    assert_eq!(failures(&gw, "rs", "jwt_rs", "alg_not_allowed").await, 1.0);
    // …and where HS256 is allowed (a JWKS may hold oct keys), naming the RSA key's kid.
    let confused_kid = hs256_raw(
        &json!({"alg": "HS256", "kid": "rsa-1"}),
        &json!({"sub": "admin", "exp": now() + 60}),
        RSA_PUBLIC.as_bytes(),
    );
    call(&gw, "/set", Some(&confused_kid), &[])
        .await
        .assert_invalid();
    assert_eq!(failures(&gw, "set", "jwt_set", "key_mismatch").await, 1.0);
    // A token of one family against a key of another.
    let t = token(Algorithm::ES256, None, &claims());
    call(&gw, "/rs", Some(&t), &[]).await.assert_invalid();
    let t = token(Algorithm::RS256, Some("ec-1"), &claims());
    call(&gw, "/set", Some(&t), &[]).await.assert_invalid();

    // kid is only a lookup key.
    for kid in [
        "../../etc/passwd",
        "/etc/passwd",
        "rsa-1/../rsa-1",
        "file:///etc/passwd",
    ] {
        let t = token(Algorithm::RS256, Some(kid), &claims());
        call(&gw, "/set", Some(&t), &[]).await.assert_invalid();
    }
    assert_eq!(failures(&gw, "set", "jwt_set", "unknown_kid").await, 4.0);
    // jku / x5u / jwk headers are never used: a token signed by an attacker's
    // key that it embeds and points at (on a server that counts fetches) is refused.
    let attacker_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let attacker = EncodingKey::from_ec_pem(attacker_pair.serialize_pem().as_bytes()).unwrap();
    let mut attacker_jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&attacker, Algorithm::ES256).unwrap(),
    )
    .unwrap();
    attacker_jwk["kid"] = json!("attacker");
    let trap = JwksServer::start(jwks(&[attacker_jwk.clone()]), None).await;
    let mut h2 = Header::new(Algorithm::ES256);
    h2.kid = Some("attacker".into());
    h2.jku = Some(trap.url());
    h2.x5u = Some(trap.url());
    h2.jwk = Some(serde_json::from_value(attacker_jwk).unwrap());
    let forged = encode(&h2, &claims(), &attacker).unwrap();
    call(&gw, "/set", Some(&forged), &[]).await.assert_invalid();
    h2.kid = None;
    let forged = encode(&h2, &claims(), &attacker).unwrap();
    call(&gw, "/set", Some(&forged), &[]).await.assert_invalid();
    call(&gw, "/es", Some(&forged), &[]).await.assert_invalid();
    assert_eq!(
        trap.fetches(),
        0,
        "the gateway fetched a URL named by a token"
    );
    assert_eq!(failures(&gw, "es", "jwt_es", "bad_signature").await, 1.0);
    // The same headers on a token signed by a configured key change nothing.
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-1".into());
    h.jku = Some(trap.url());
    h.x5u = Some(trap.url());
    let t = encode(&h, &claims(), &encoding_key(Algorithm::RS256)).unwrap();
    assert_eq!(
        call(&gw, "/set", Some(&t), &[]).await.status,
        200,
        "jku/x5u are ignored, not refused"
    );
    assert_no_secrets_in_logs(&gw, &[&confused, &confused_kid]);
}

#[tokio::test]
async fn bad_configs_are_build_errors() {
    let cfg = |plugin: &str| {
        format!(
            r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[upstreams.up]
targets = ["127.0.0.1:9"]

[[routes]]
name = "r"
upstream = "up"
path = "/"
plugins = ["jwt"]

[plugins.jwt]
type = "jwt"
{plugin}
"#
        )
    };
    let files = [("rsa.pem", RSA_PUBLIC), ("rsa.key", RSA_PRIVATE)];
    for (plugin, needle) in [
        (
            r#"algorithms = ["RS256", "none"]
public_key_file = "rsa.pem""#,
            "plugins.jwt.algorithms[1]",
        ),
        (
            r#"algorithms = ["RS256", "HS256"]
public_key_file = "rsa.pem""#,
            "plugins.jwt.algorithms[1]",
        ),
        (
            r#"algorithms = ["HS256"]
secret_env = "TOLLGATE_JWT_TEST_SURELY_UNSET""#,
            "plugins.jwt.secret_env",
        ),
        (
            r#"algorithms = ["RS256"]
public_key_file = "rsa.key""#,
            "private key",
        ),
        (
            r#"algorithms = ["ES256"]
public_key_file = "rsa.pem""#,
            "plugins.jwt.algorithms[0]",
        ),
        (
            r#"algorithms = ["RS256"]
public_key_file = "rsa.pem"
jwks_url = "https://id.example.com/jwks""#,
            "exactly one key source",
        ),
        (
            r#"algorithms = ["RS256"]
jwks_url = "ftp://id.example.com/jwks""#,
            "plugins.jwt.jwks_url",
        ),
    ] {
        let (ok, out) = check_config(&cfg(plugin), &files);
        assert!(!ok, "accepted:\n{plugin}\n{out}");
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
    let (ok, out) = check_config(
        &cfg("algorithms = [\"RS256\", \"PS256\"]\npublic_key_file = \"rsa.pem\""),
        &files,
    );
    assert!(ok, "{out}");
}

#[tokio::test]
async fn jwks_rotation_fetches_once_for_a_new_kid() {
    let up = TestUpstream::start("up").await;
    let server = JwksServer::start(jwks(&[jwk(Algorithm::RS256, "k1")]), None).await;
    let gw = Gateway::start(&jwks_config(
        &up,
        &server.url(),
        "jwks_cooldown = \"1h\"\njwks_refresh = \"1h\"",
    ))
    .await;
    wait_keys_loaded(&gw, &server, 1, "k1").await;
    assert_eq!(server.fetches(), 1);

    // The IdP rotates: k2 appears; a token signed by it triggers exactly one fetch.
    server.set_body(jwks(&[
        jwk(Algorithm::RS256, "k1"),
        jwk(Algorithm::ES256, "k2"),
    ]));
    let t2 = token(Algorithm::ES256, Some("k2"), &claims());
    let a = call(&gw, "/", Some(&t2), &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(server.fetches(), 2);
    // Known from now on: no more fetches.
    for _ in 0..3 {
        assert_eq!(call(&gw, "/", Some(&t2), &[]).await.status, 200);
    }
    let t1 = token(Algorithm::RS256, Some("k1"), &claims());
    assert_eq!(call(&gw, "/", Some(&t1), &[]).await.status, 200);
    assert_eq!(server.fetches(), 2);

    // Another new kid inside the cooldown: refused without a fetch.
    server.set_body(jwks(&[jwk(Algorithm::RS256, "k3")]));
    let t3 = token(Algorithm::RS256, Some("k3"), &claims());
    call(&gw, "/", Some(&t3), &[]).await.assert_invalid();
    assert_eq!(server.fetches(), 2);
    assert_eq!(failures(&gw, "r", "jwt", "unknown_kid").await, 1.0);
    assert_no_secrets_in_logs(&gw, &[&t1, &t2, &t3]);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_makes_at_most_one_fetch() {
    let up = TestUpstream::start("up").await;
    let server = JwksServer::start(jwks(&[jwk(Algorithm::RS256, "k1")]), None).await;
    let gw = Gateway::start(&jwks_config(
        &up,
        &server.url(),
        "jwks_cooldown = \"1h\"\njwks_refresh = \"1h\"",
    ))
    .await;
    wait_keys_loaded(&gw, &server, 1, "k1").await;
    let before = server.fetches();

    let mut tasks = Vec::new();
    for i in 0..50 {
        let kid = format!("random-{i}-{}", uuid::Uuid::new_v4());
        let t = token(Algorithm::RS256, Some(&kid), &claims());
        let client = gw.client();
        let url = gw.url("/");
        tasks.push(tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(t)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 401);
    }
    // And one after the other, each after the previous fetch has finished.
    for i in 0..10 {
        let t = token(
            Algorithm::RS256,
            Some(&format!("sequential-{i}")),
            &claims(),
        );
        call(&gw, "/", Some(&t), &[]).await.assert_invalid();
    }
    let after = server.fetches();
    assert!(
        after - before <= 1,
        "{} fetches for 60 unknown kids",
        after - before
    );
    assert_eq!(failures(&gw, "r", "jwt", "unknown_kid").await, 60.0);
    // The known key still works.
    let t = token(Algorithm::RS256, Some("k1"), &claims());
    assert_eq!(call(&gw, "/", Some(&t), &[]).await.status, 200);
}

#[tokio::test]
async fn jwks_server_down_keeps_the_last_good_keys() {
    let up = TestUpstream::start("up").await;
    let server = JwksServer::start(jwks(&[jwk(Algorithm::RS256, "k1")]), None).await;
    let gw = Gateway::start(&jwks_config(
        &up,
        &server.url(),
        "jwks_cooldown = \"1h\"\njwks_refresh = \"1s\"",
    ))
    .await;
    wait_keys_loaded(&gw, &server, 1, "k1").await;
    let t = token(Algorithm::RS256, Some("k1"), &claims());

    for mode in [Mode::Fail, Mode::Close] {
        server.set_mode(mode);
        let seen = server.fetches();
        wait_until_msg(Duration::from_secs(20), "two failed refreshes", || async {
            server.fetches() >= seen + 2
        })
        .await;
        let a = call(&gw, "/", Some(&t), &[]).await;
        assert_eq!(a.status, 200, "{mode:?}: {}", a.body);
    }
    // A garbage key set is a failed fetch too.
    server.set_mode(Mode::Serve);
    server.set_body("{\"keys\": \"nope\"}".into());
    let seen = server.fetches();
    wait_until_msg(
        Duration::from_secs(20),
        "two refreshes with garbage",
        || async { server.fetches() >= seen + 2 },
    )
    .await;
    // A fresh token, so that no cached verification answers.
    let t = token(
        Algorithm::RS256,
        Some("k1"),
        &json!({"sub": "bob", "exp": now() + 300}),
    );
    assert_eq!(call(&gw, "/", Some(&t), &[]).await.status, 200);
    assert!(gw.logs().contains("JWKS fetch failed"));
}

#[tokio::test]
async fn first_fetch_failing_gives_503_until_keys_arrive() {
    let up = TestUpstream::start("up").await;
    let server = JwksServer::start(jwks(&[jwk(Algorithm::RS256, "k1")]), None).await;
    server.set_mode(Mode::Fail);
    let gw = Gateway::start(&jwks_config(
        &up,
        &server.url(),
        "jwks_cooldown = \"1h\"\njwks_refresh = \"2s\"",
    ))
    .await;
    let t = token(Algorithm::RS256, Some("k1"), &claims());
    let a = call(&gw, "/", Some(&t), &[]).await;
    assert_eq!(a.status, 503, "{}", a.body);
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert!(server.fetches() >= 1);
    assert_eq!(failures(&gw, "r", "jwt", "jwks_unavailable").await, 1.0);
    // No token is still a 401: nothing to verify; nor are tokens that no key could save.
    assert_eq!(call(&gw, "/", None, &[]).await.status, 401);
    let fetches = server.fetches();
    call(&gw, "/", Some("not.a-token"), &[])
        .await
        .assert_invalid();
    let (_, rest) = t.split_once('.').unwrap();
    let none = format!("{}.{rest}", b64(json!({"alg": "none"}).to_string()));
    call(&gw, "/", Some(&none), &[]).await.assert_invalid();
    assert_eq!(server.fetches(), fetches, "a hopeless token caused a fetch");
    assert_eq!(up.hits(), 0);

    server.set_mode(Mode::Serve);
    wait_until_msg(
        Duration::from_secs(30),
        "keys after the server recovers",
        || async { call(&gw, "/", Some(&t), &[]).await.status == 200 },
    )
    .await;
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn jwks_over_https_verifies_the_server() {
    let up = TestUpstream::start("up").await;
    let certs = TestCerts::generate(&["127.0.0.1"]);
    let good = JwksServer::start(
        jwks(&[jwk(Algorithm::RS256, "k1")]),
        Some((certs.cert_pem.clone(), certs.key_pem.clone())),
    )
    .await;
    let (wrong_cert, wrong_key) = certs.leaf(&["other.example"]);
    let wrong = JwksServer::start(
        jwks(&[jwk(Algorithm::RS256, "k1")]),
        Some((wrong_cert, wrong_key)),
    )
    .await;
    let cfg = base_config(
        &up,
        &format!(
            r#"
[[routes]]
name = "good"
upstream = "up"
path = "/good"
plugins = ["good"]

[[routes]]
name = "wrong"
upstream = "up"
path = "/wrong"
plugins = ["wrong"]

[plugins.good]
type = "jwt"
algorithms = ["RS256"]
jwks_url = "{}"

[plugins.wrong]
type = "jwt"
algorithms = ["RS256"]
jwks_url = "{}"
"#,
            good.url(),
            wrong.url()
        ),
    );
    let gw = Gateway::builder(&cfg)
        .file("ca.pem", &certs.ca_pem)
        .env("SSL_CERT_FILE", "ca.pem")
        .start()
        .await;
    let t = token(Algorithm::RS256, Some("k1"), &claims());
    wait_until_msg(Duration::from_secs(20), "keys over https", || async {
        call(&gw, "/good", Some(&t), &[]).await.status == 200
    })
    .await;
    // A certificate for another name: the handshake fails, no keys.
    let a = call(&gw, "/wrong", Some(&t), &[]).await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(
        wrong.fetches(),
        0,
        "a request was sent over an unverified connection"
    );
    // The log says why in plain words, without Pingora's error chain.
    gw.wait_for_log(
        "JWKS fetch failed: the TLS handshake failed (invalid peer certificate",
        Duration::from_secs(20),
    )
    .await;
    for l in gw
        .logs()
        .lines()
        .filter(|l| l.contains("JWKS fetch failed"))
    {
        assert!(!l.contains("context:") && !l.contains("cause:"), "{l}");
    }
}

#[tokio::test]
async fn doc_example() {
    let up = TestUpstream::start("payments").await;
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/jwt.md")).unwrap();
    let blocks: Vec<&str> = doc.split("```toml\n").skip(1).collect();
    assert_eq!(blocks.len(), 1, "exactly one toml block");
    let example = blocks[0].split("```").next().unwrap();
    let cfg = example.replace("{UP}", &up.addr().to_string());
    let keys = jwks(&[
        jwk(Algorithm::RS256, "2024-rsa"),
        jwk(Algorithm::ES256, "2024-ec"),
    ]);
    let gw = Gateway::builder(&cfg)
        .file("keys/jwks.json", keys)
        .start()
        .await;

    let c = json!({
        "sub": "acct_42", "iss": "https://id.example.com", "aud": ["payments-api"],
        "scope": "payments:write", "exp": now() + 300,
    });
    for (alg, kid) in [
        (Algorithm::RS256, "2024-rsa"),
        (Algorithm::ES256, "2024-ec"),
    ] {
        let t = token(alg, Some(kid), &c);
        let a = call(&gw, "/v1/payments", Some(&t), &[("x-user-id", "spoofed")]).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let r = up.last_request().unwrap();
        assert_eq!(r.header_all("x-consumer"), ["acct_42"]);
        assert_eq!(r.header_all("x-user-id"), ["acct_42"]);
        assert_eq!(r.header_all("x-scope"), ["payments:write"]);
    }
    let a = call(&gw, "/v1/payments", None, &[]).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("www-authenticate"), Some(WWW_BEARER));
    let mut other = c.clone();
    other["aud"] = json!("ledger-api");
    let t = token(Algorithm::RS256, Some("2024-rsa"), &other);
    call(&gw, "/v1/payments", Some(&t), &[])
        .await
        .assert_invalid();
    let mut noscope = c.clone();
    noscope.as_object_mut().unwrap().remove("scope");
    let t = token(Algorithm::RS256, Some("2024-rsa"), &noscope);
    call(&gw, "/v1/payments", Some(&t), &[])
        .await
        .assert_invalid();
    assert_eq!(
        failures(&gw, "payments", "jwt", "bad_audience").await
            + failures(&gw, "payments", "jwt", "missing_claim").await,
        2.0
    );
}
