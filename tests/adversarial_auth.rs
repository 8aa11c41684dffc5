//! Hostile inputs against authentication and CORS (issue 12, items 21, 27, 30, 32),
//! through the spawned gateway: JWT claim edge cases (dates beyond year 9999,
//! duplicate member names in the claims or the JOSE header, claims that are not
//! visible ASCII forwarded as headers), the `Retry-After` of a 503 while no JWKS has
//! been fetched yet, the JWKS failure log line, and CORS preflights for methods a
//! route does not allow.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[path = "fixtures/jwt_keys.rs"]
mod jwt_keys;

const SECRET: &str = "tollgate-adversarial-secret-0123456789";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(data: impl AsRef<[u8]>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// An HS256 token over a header and a payload written as raw JSON text, so that
/// what a JSON serialiser would never produce (duplicate names, `1e300`) can be sent.
fn hs256_text(header: &str, payload: &str) -> String {
    let msg = format!("{}.{}", b64(header), b64(payload));
    let sig = jsonwebtoken::crypto::sign(
        msg.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{msg}.{sig}")
}

fn hs256_payload(payload: &str) -> String {
    hs256_text(r#"{"alg":"HS256","typ":"JWT"}"#, payload)
}

fn rs256(kid: &str, claims: &Value) -> String {
    let mut h = jsonwebtoken::Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    let key = EncodingKey::from_rsa_pem(jwt_keys::RSA_PRIVATE.as_bytes()).unwrap();
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

fn rs256_jwks(kid: &str) -> String {
    let key = EncodingKey::from_rsa_pem(jwt_keys::RSA_PRIVATE.as_bytes()).unwrap();
    let j = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    let mut v = serde_json::to_value(j).unwrap();
    v["kid"] = json!(kid);
    v["use"] = json!("sig");
    json!({ "keys": [v] }).to_string()
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
}

async fn get(gw: &Gateway, path: &str, token: &str) -> Answer {
    let resp = gw
        .client()
        .get(gw.url(path))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("request through the gateway");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap_or_default(),
    }
}

fn hs_config(up: &TestUpstream, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[upstreams.up]
targets = ["{up}"]

[[routes]]
name = "r"
upstream = "up"
path = "/"
plugins = ["jwt"]

[plugins.jwt]
type = "jwt"
algorithms = ["HS256"]
secret_env = "ADV_JWT_SECRET"
{extra}
"#,
        up = up.addr()
    )
}

async fn hs_gateway(up: &TestUpstream, extra: &str) -> Gateway {
    Gateway::builder(&hs_config(up, extra))
        .env("ADV_JWT_SECRET", SECRET)
        .start()
        .await
}

// ---------------------------------------------------------------------------------------------
// Item 21: JWT claim edge cases
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn jwt_dates_beyond_year_9999_are_refused_never_read_as_never_expiring() {
    let up = TestUpstream::start("up").await;
    let gw = hs_gateway(&up, "").await;
    let good = hs256_payload(&format!(r#"{{"sub":"alice","exp":{}}}"#, now() + 300));
    assert_eq!(get(&gw, "/", &good).await.status, 200);
    let hits = up.hits();

    let future = now() + 300;
    let mut tokens = Vec::new();
    for bad in [
        "1e300",
        "18446744073709551616", // 2^64
        "18446744073709551615", // u64::MAX
        "9223372036854775807",  // i64::MAX
        "253402300800",         // 10000-01-01T00:00:00Z
        "1.7976931348623157e308",
        "-1",
        "\"9999999999\"",
        "null",
        "{}",
    ] {
        tokens.push((
            format!("exp {bad}"),
            hs256_payload(&format!(r#"{{"sub":"alice","exp":{bad}}}"#)),
        ));
        tokens.push((
            format!("nbf {bad}"),
            hs256_payload(&format!(r#"{{"sub":"alice","exp":{future},"nbf":{bad}}}"#)),
        ));
    }
    for (what, t) in &tokens {
        let a = get(&gw, "/", t).await;
        assert_eq!(a.status, 401, "{what}: {}", a.body);
        assert!(
            a.header("www-authenticate")
                .unwrap_or("")
                .starts_with("Bearer error=\"invalid_token\""),
            "{what}"
        );
    }
    assert_eq!(
        up.hits(),
        hits,
        "a token with an impossible date reached the upstream"
    );
}

#[tokio::test]
async fn jwt_duplicate_names_in_claims_or_header_are_refused() {
    let up = TestUpstream::start("up").await;
    let gw = hs_gateway(&up, "forward_claims = { role = \"x-role\" }").await;
    let exp = now() + 300;
    let cases = [
        // serde_json alone keeps the last member: an expired token made valid.
        hs256_payload(&format!(r#"{{"exp":1,"exp":{exp}}}"#)),
        hs256_payload(&format!(r#"{{"exp":{exp},"exp":1}}"#)),
        hs256_payload(&format!(r#"{{"exp":{exp},"sub":"alice","sub":"admin"}}"#)),
        hs256_payload(&format!(
            r#"{{"exp":{exp},"role":"user","ro\u006ce":"admin"}}"#
        )),
        hs256_payload(&format!(
            r#"{{"exp":{exp},"role":{{"name":"user","name":"admin"}}}}"#
        )),
        // The same in the JOSE header.
        hs256_text(
            r#"{"alg":"none","alg":"HS256"}"#,
            &format!(r#"{{"exp":{exp}}}"#),
        ),
        hs256_text(
            r#"{"alg":"HS256","typ":"JWT","typ":"JWT"}"#,
            &format!(r#"{{"exp":{exp}}}"#),
        ),
    ];
    for t in &cases {
        let a = get(&gw, "/", t).await;
        assert_eq!(a.status, 401, "{}", a.body);
    }
    assert_eq!(up.hits(), 0);
    let fine = hs256_payload(&format!(r#"{{"exp":{exp},"role":"user"}}"#));
    assert_eq!(get(&gw, "/", &fine).await.status, 200);
    assert_eq!(
        gw.metric(r#"tollgate_auth_failures_total{route="r",plugin="jwt",reason="malformed"}"#)
            .await,
        Some(cases.len() as f64)
    );
}

#[tokio::test]
async fn jwt_forwarded_claims_that_are_not_visible_ascii_are_percent_encoded() {
    let up = TestUpstream::start("up").await;
    let gw = hs_gateway(
        &up,
        "forward_claims = { sub = \"x-user-id\", name = \"x-name\", org = \"x-org\", scope = \"x-scope\" }",
    )
    .await;
    let claims = json!({
        "sub": "José",
        "name": "eve\r\nx-admin: true",
        "org": "100% \u{7f}\u{0}ok ",
        "scope": "read write",
        "exp": now() + 300,
    });
    let t = hs256_payload(&claims.to_string());
    let a = get(&gw, "/", &t).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let r = up.last_request().unwrap();
    assert_eq!(r.header_all("x-user-id"), ["Jos%C3%A9"]);
    assert_eq!(r.header_all("x-name"), ["eve%0D%0Ax-admin: true"]);
    assert!(r.header("x-admin").is_none());
    assert_eq!(r.header_all("x-org"), ["100%25 %7F%00ok%20"]);
    assert_eq!(r.header_all("x-scope"), ["read write"]);
    // Decoding gives the exact claim back.
    let decoded = percent_encoding::percent_decode_str(r.header("x-org").unwrap())
        .decode_utf8()
        .unwrap();
    assert_eq!(decoded, "100% \u{7f}\u{0}ok ");
}

#[tokio::test]
async fn jwt_consumer_is_forwarded_with_the_same_encoding_as_forward_claims() {
    let up = TestUpstream::start("up").await;
    let gw = hs_gateway(&up, "forward_claims = { sub = \"x-user-id\" }").await;
    for (sub, sent) in [
        ("José", "Jos%C3%A9"),
        ("😀", "%F0%9F%98%80"),
        ("a\u{2028}b", "a%E2%80%A8b"),
        ("a\u{202e}b", "a%E2%80%AEb"),
        // An upstream that trims the value would read another consumer.
        (" a", "%20a"),
        ("a ", "a%20"),
        ("100%", "100%25"),
        ("acme corp", "acme corp"),
        ("acct_42", "acct_42"),
    ] {
        let t = hs256_payload(&json!({"sub": sub, "exp": now() + 300}).to_string());
        let a = get(&gw, "/", &t).await;
        assert_eq!(a.status, 200, "{sub:?}: {}", a.body);
        let r = up.last_request().unwrap();
        assert_eq!(r.header_all("x-consumer"), [sent], "{sub:?}");
        assert_eq!(r.header_all("x-user-id"), [sent], "{sub:?}");
        let decoded = percent_encoding::percent_decode_str(r.header("x-consumer").unwrap())
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, sub);
    }
    // A consumer with a control character is still refused.
    let hits = up.hits();
    for sub in ["a\r\nx-admin: 1", "a\tb", "a\u{0}b", "a\u{85}b"] {
        let t = hs256_payload(&json!({"sub": sub, "exp": now() + 300}).to_string());
        let a = get(&gw, "/", &t).await;
        assert_eq!(a.status, 401, "{sub:?}: {}", a.body);
    }
    assert_eq!(up.hits(), hits);
}

// ---------------------------------------------------------------------------------------------
// Items 30 and 32: JWKS fetch failures
// ---------------------------------------------------------------------------------------------

/// A JWKS endpoint that answers 500 until `serve` is set, counting requests.
struct Jwks {
    addr: SocketAddr,
    serve: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Jwks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Jwks {
    async fn start(body: String) -> Jwks {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = Arc::new(AtomicBool::new(false));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (s, f) = (serve.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (s, f, body) = (s.clone(), f.clone(), body.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..i + 4);
                            f.fetch_add(1, Ordering::SeqCst);
                            let resp = if s.load(Ordering::SeqCst) {
                                format!(
                                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                    body.len()
                                )
                            } else {
                                "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
                                    .to_string()
                            };
                            if tcp.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Jwks {
            addr,
            serve,
            fetches,
            task,
        }
    }
}

fn jwks_config(up: &TestUpstream, url: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[upstreams.up]
targets = ["{up}"]

[[routes]]
name = "r"
upstream = "up"
path = "/"
plugins = ["jwt"]

[plugins.jwt]
type = "jwt"
algorithms = ["RS256"]
jwks_url = "{url}"
{extra}
"#,
        up = up.addr()
    )
}

#[tokio::test]
async fn jwks_503_retry_after_is_when_the_next_fetch_happens() {
    let up = TestUpstream::start("up").await;
    let jwks = Jwks::start(rs256_jwks("k1")).await;
    // The default jwks_cooldown (30s): the 503 used to say 29 s while the
    // background retries came after 1, 2 and 4 s (capped here by jwks_refresh).
    let gw = Gateway::start(&jwks_config(
        &up,
        &format!("http://{}/jwks.json", jwks.addr),
        "jwks_refresh = \"4s\"",
    ))
    .await;
    let t = rs256("k1", &json!({"sub": "alice", "exp": now() + 300}));
    let a = get(&gw, "/", &t).await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(jwks.fetches.load(Ordering::SeqCst) >= 1);
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=4).contains(&retry),
        "Retry-After {retry}: the next fetch is at most jwks_refresh (4s) away"
    );

    // A client that honours Retry-After gets through once the key server is
    // back: by then a fetch is due, and the retry starts it if the background
    // refresh has not yet. (Waiting Retry-After is the behaviour under test.)
    jwks.serve.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let a = get(&gw, "/", &t).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn jwks_fetch_failure_is_logged_as_one_plain_line() {
    let up = TestUpstream::start("up").await;
    // Nothing listens there: the connection is refused.
    let refused = unused_addr();
    let failing = Jwks::start(String::new()).await;
    let cfg = format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[upstreams.up]
targets = ["{up}"]

[[routes]]
name = "a"
upstream = "up"
path = "/a"
plugins = ["refused"]

[[routes]]
name = "b"
upstream = "up"
path = "/b"
plugins = ["status"]

[plugins.refused]
type = "jwt"
algorithms = ["RS256"]
jwks_url = "http://{refused}/jwks.json?access_token=sekrit-in-query"

[plugins.status]
type = "jwt"
algorithms = ["RS256"]
jwks_url = "http://{failing}/keys"
"#,
        up = up.addr(),
        failing = failing.addr
    );
    let gw = Gateway::start(&cfg).await;
    gw.wait_for_log(
        "JWKS fetch failed: the connection was refused; next try in ",
        Duration::from_secs(20),
    )
    .await;
    gw.wait_for_log(
        "JWKS fetch failed: the server answered HTTP 500; next try in ",
        Duration::from_secs(20),
    )
    .await;
    let lines: Vec<Value> = gw
        .log_json()
        .into_iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("JWKS fetch failed"))
        })
        .collect();
    assert!(lines.len() >= 2, "{}", gw.logs());
    for l in &lines {
        let text = l.to_string();
        let message = l["message"].as_str().unwrap();
        assert!(message.starts_with("JWKS fetch failed: "), "{message}");
        assert!(
            !text.contains("sekrit-in-query"),
            "the URL's query was logged: {text}"
        );
        for internal in [
            "context:",
            "cause:",
            "ConnectRefused",
            "Upstream",
            "HTTPStatus",
        ] {
            assert!(
                !text.contains(internal),
                "Pingora's error chain in the log: {text}"
            );
        }
        assert!(l.get("error").is_none(), "{text}");
        let url = l["url"].as_str().unwrap();
        assert!(
            url == format!("http://{refused}/jwks.json")
                || url == format!("http://{}/keys", failing.addr),
            "{text}"
        );
        assert!(
            message.ends_with("; no keys yet, tokens get 503"),
            "{message}"
        );
    }
}

/// The JWKS failure lines of one plugin: (seconds since the epoch, the "next try" they state).
fn failure_lines(gw: &Gateway, plugin: &str) -> Vec<(f64, u64)> {
    let mut out: Vec<(f64, u64)> = gw
        .log_json()
        .into_iter()
        .filter(|l| l["plugin"] == plugin)
        .filter_map(|l| {
            let m = l["message"].as_str()?.to_string();
            let rest = m.strip_prefix("JWKS fetch failed: ")?;
            let next = rest.split("; next try in ").nth(1)?.split('s').next()?;
            let ts = time::OffsetDateTime::parse(
                l["timestamp"].as_str()?,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()?;
            Some((ts.unix_timestamp_nanos() as f64 / 1e9, next.parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

#[tokio::test]
async fn jwks_failure_log_states_when_the_next_try_happens() {
    let up = TestUpstream::start("up").await;
    // The issue: with no traffic every line said "next try in 1s" while the
    // attempts came after 1, 2, 4, 8… s.
    let cfg = format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[upstreams.up]
targets = ["{up}"]

[[routes]]
name = "quiet"
upstream = "up"
path = "/quiet"
plugins = ["quiet"]

[[routes]]
name = "busy"
upstream = "up"
path = "/busy"
plugins = ["busy"]

[plugins.quiet]
type = "jwt"
algorithms = ["RS256"]
jwks_url = "http://{a}/jwks.json"

[plugins.busy]
type = "jwt"
algorithms = ["RS256"]
jwks_url = "http://{b}/jwks.json"
jwks_cooldown = "1s"
"#,
        up = up.addr(),
        a = unused_addr(),
        b = unused_addr(),
    );
    let gw = Gateway::start(&cfg).await;
    // Traffic on one of them: a token every 200 ms, each of which may ask for a fetch.
    let t = rs256("k1", &json!({"sub": "alice", "exp": now() + 300}));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = get(&gw, "/busy", &t).await;
        assert_eq!(a.status, 503, "{}", a.body);
        let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=8).contains(&retry), "Retry-After {retry}");
        if failure_lines(&gw, "quiet").len() >= 4 && failure_lines(&gw, "busy").len() >= 4 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "four failures each not seen; logs:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for plugin in ["quiet", "busy"] {
        let lines = failure_lines(&gw, plugin);
        let stated: Vec<u64> = lines.iter().map(|l| l.1).collect();
        assert_eq!(stated[..3], [1, 2, 4], "{plugin}: {stated:?}");
        for w in lines.windows(2) {
            let ((t0, next), (t1, _)) = (w[0], w[1]);
            let gap = t1 - t0;
            assert!(
                gap > next as f64 - 0.05 && gap < next as f64 + 0.9,
                "{plugin}: a line said next try in {next}s, the next attempt failed {gap:.2}s later: {lines:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Item 27: CORS preflights for a method the route does not allow
// ---------------------------------------------------------------------------------------------

const APP: &str = "https://app.example.com";

async fn preflight(gw: &Gateway, path: &str, method: &str) -> Answer {
    let resp = gw
        .client()
        .request(reqwest::Method::OPTIONS, gw.url(path))
        .header("origin", APP)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("preflight through the gateway");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap_or_default(),
    }
}

#[tokio::test]
async fn cors_preflight_for_a_method_the_route_refuses_never_reaches_a_catch_all() {
    let api = TestUpstream::start("api").await;
    let admin = TestUpstream::start("admin").await;
    let other = TestUpstream::start("other").await;
    let cfg = format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[upstreams.api]
targets = ["{api}"]
[upstreams.admin]
targets = ["{admin}"]
[upstreams.other]
targets = ["{other}"]

[plugins.cors]
type = "cors"
origins = ["{APP}"]
methods = ["GET", "POST", "DELETE"]
headers = ["content-type"]

[plugins.cors_any]
type = "cors"
origins = ["{APP}"]
methods = ["*"]
headers = ["content-type"]

[[routes]]
name = "api"
upstream = "api"
path = "/api"
methods = ["GET", "POST"]
plugins = ["cors"]

[[routes]]
name = "wild"
upstream = "api"
path = "/wild"
methods = ["GET"]
plugins = ["cors_any"]

[[routes]]
name = "custom"
upstream = "api"
path = "/custom"
methods = ["PURGE"]
plugins = ["cors"]

# More specific, without cors, and it takes OPTIONS itself: its upstream does CORS.
[[routes]]
name = "admin"
upstream = "admin"
path = "/api/admin"
methods = ["DELETE", "OPTIONS"]

[[routes]]
name = "all"
upstream = "other"
path = "/"
"#,
        api = api.addr(),
        admin = admin.addr(),
        other = other.addr()
    );
    let gw = Gateway::start(&cfg).await;

    // Methods the cors route does not allow, whether the catch-all would take
    // them or not: refused by the route's cors plugin, no upstream involved.
    for (path, method) in [
        ("/api/x", "DELETE"),
        ("/api/x", "PUT"),
        ("/api", "PATCH"),
        ("/api/x", "HEAD"),
        ("/api/x", "FOO"),
        ("/wild/x", "DELETE"),
        ("/custom", "DELETE"),
    ] {
        let a = preflight(&gw, path, method).await;
        assert_eq!(a.status, 403, "{method} {path}: {}", a.body);
        assert!(
            a.header("content-type")
                .unwrap_or("")
                .starts_with("application/problem+json"),
            "{method} {path}"
        );
        assert!(
            a.header("access-control-allow-methods").is_none(),
            "{method} {path}: a refused method was granted"
        );
    }
    assert_eq!(
        other.hits(),
        0,
        "a preflight reached the catch-all's upstream"
    );
    assert_eq!(api.hits(), 0);
    assert_eq!(
        gw.metric(
            r#"tollgate_auth_failures_total{route="api",plugin="cors",reason="method_denied"}"#
        )
        .await,
        Some(5.0)
    );

    // An allowed method: granted, and the list is narrowed to what the route
    // accepts (a browser caches it: DELETE would go to the catch-all).
    let a = preflight(&gw, "/api/x", "POST").await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(a.header("access-control-allow-origin"), Some(APP));
    assert_eq!(a.header("access-control-allow-methods"), Some("GET, POST"));
    // `*` is narrowed too: it would grant every method.
    let a = preflight(&gw, "/wild/x", "GET").await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(a.header("access-control-allow-methods"), Some("GET"));
    let a = preflight(&gw, "/custom", "PURGE").await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(a.header("access-control-allow-methods"), None);
    assert_eq!(api.hits() + other.hits(), 0);

    // A path that a more specific route without cors owns is still routed as
    // OPTIONS to that route: its upstream answers CORS itself.
    let a = preflight(&gw, "/api/admin", "DELETE").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(admin.hits(), 1);
    // And a path no cors route claims goes to the catch-all as before.
    let a = preflight(&gw, "/elsewhere", "DELETE").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(other.hits(), 1);
    assert_eq!(api.hits(), 0);
}

async fn preflight_announcing(gw: &Gateway, path: &str, method: &str, headers: &str) -> Answer {
    let mut req = gw
        .client()
        .request(reqwest::Method::OPTIONS, gw.url(path))
        .header("origin", APP)
        .header("access-control-request-method", method);
    if !headers.is_empty() {
        req = req.header("access-control-request-headers", headers);
    }
    let resp = req.send().await.expect("preflight through the gateway");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap_or_default(),
    }
}

#[tokio::test]
async fn cors_preflight_reaches_a_route_whose_headers_predicate_it_cannot_carry() {
    let tenant = TestUpstream::start("tenant").await;
    let beta = TestUpstream::start("beta").await;
    let other = TestUpstream::start("other").await;
    let cfg = format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[upstreams.tenant]
targets = ["{tenant}"]
[upstreams.beta]
targets = ["{beta}"]
[upstreams.other]
targets = ["{other}"]

[plugins.cors]
type = "cors"
origins = ["{APP}"]
methods = ["GET", "POST"]
headers = ["content-type", "x-tenant", "x-beta"]

[plugins.cors_beta]
type = "cors"
origins = ["https://beta.example.com"]
methods = ["GET"]
headers = ["x-beta"]

[[routes]]
name = "h"
upstream = "tenant"
path = "/h"
methods = ["GET", "POST"]
headers = {{ "x-tenant" = "acme" }}
plugins = ["cors"]

# Two routes told apart by a header only: the one whose header the preflight
# announces answers it.
[[routes]]
name = "p_beta"
upstream = "beta"
path = "/p"
headers = {{ "x-beta" = "1" }}
plugins = ["cors_beta"]

[[routes]]
name = "p"
upstream = "tenant"
path = "/p"
plugins = ["cors"]

[[routes]]
name = "all"
upstream = "other"
path = "/"
"#,
        tenant = tenant.addr(),
        beta = beta.addr(),
        other = other.addr()
    );
    let gw = Gateway::start(&cfg).await;

    // Browsers never send x-tenant on the preflight: announced, or not even that.
    for (method, headers) in [
        ("POST", "x-tenant"),
        ("POST", "content-type, x-tenant"),
        ("GET", ""),
        ("POST", "content-type"),
    ] {
        let a = preflight_announcing(&gw, "/h/x", method, headers).await;
        assert_eq!(a.status, 204, "{method} [{headers}]: {}", a.body);
        assert_eq!(a.header("access-control-allow-origin"), Some(APP));
        assert_eq!(a.header("access-control-allow-methods"), Some("GET, POST"));
    }
    // A method the route refuses is refused by its cors plugin.
    let a = preflight_announcing(&gw, "/h/x", "DELETE", "x-tenant").await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(
        other.hits(),
        0,
        "a preflight reached the catch-all's upstream"
    );
    assert_eq!(tenant.hits(), 0);

    // Routing of actual requests is unchanged.
    let r = gw
        .client()
        .get(gw.url("/h/x"))
        .header("x-tenant", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(tenant.hits(), 1);
    let r = gw.client().get(gw.url("/h/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(other.hits(), 1);

    // Announcing x-beta picks the x-beta route (whose cors does not allow this
    // origin); not announcing it picks the route the actual request will reach.
    let a = preflight_announcing(&gw, "/p", "GET", "x-beta").await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.header("access-control-allow-origin").is_none());
    let a = preflight_announcing(&gw, "/p", "GET", "content-type").await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(a.header("access-control-allow-origin"), Some(APP));
    assert_eq!(beta.hits() + other.hits(), 1);
}
