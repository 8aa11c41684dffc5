//! `webhook_signature` through a real gateway and a real upstream: every scheme,
//! the hostile cases (none of which may reach the upstream), replays, rotation,
//! the 64 KiB body limit, chunked and h2 bodies, metrics, logs, and the doc's
//! example.

mod common;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::SocketAddr;

const STRIPE_OLD: &str = "whsec_stripe_old_0f9a1c";
const STRIPE_NEW: &str = "whsec_stripe_new_7b2e44";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITHUB_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
const SW_KEY: &[u8] = b"standard-webhooks-test-key-32byt";

fn sw_secret() -> String {
    format!("whsec_{}", B64.encode(SW_KEY))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// The `v1=` hex a Stripe secret makes of `body` at `t`.
fn stripe_v1(secret: &str, t: i64, body: &[u8]) -> String {
    hex::encode(mac(
        secret.as_bytes(),
        &[t.to_string().as_bytes(), b".", body],
    ))
}

fn stripe_header(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", stripe_v1(secret, t, body))
}

fn sw_signature(id: &str, t: i64, body: &[u8]) -> String {
    let ts = t.to_string();
    format!(
        "v1,{}",
        B64.encode(mac(
            SW_KEY,
            &[id.as_bytes(), b".", ts.as_bytes(), b".", body]
        ))
    )
}

fn config(up: SocketAddr, server_extra: &str, tail: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
{server_extra}

[plugins.stripe]
type = "webhook_signature"
scheme = "stripe"
secrets = ["{STRIPE_OLD}", "{STRIPE_NEW}"]

[plugins.github]
type = "webhook_signature"
scheme = "github"
secrets = ["{GITHUB_SECRET}"]

[plugins.sw]
type = "webhook_signature"
scheme = "standard_webhooks"
secrets_env = "TEST_SW_SECRET"
tolerance = "2m"

[plugins.generic]
type = "webhook_signature"
scheme = "hmac"
secrets = ["generic-secret"]
header = "x-signature"
prefix = "sha256="
encoding = "base64"
timestamp_header = "x-timestamp"
signed_string = "{{timestamp}}:{{header:x-event}}:{{body}}"

[upstreams.up]
targets = ["{up}"]

[[routes]]
name = "stripe"
upstream = "up"
path = "/stripe"
plugins = ["stripe"]

[[routes]]
name = "github"
upstream = "up"
path = "/github"
plugins = ["github"]

[[routes]]
name = "sw"
upstream = "up"
path = "/sw"
plugins = ["sw"]

[[routes]]
name = "generic"
upstream = "up"
path = "/generic"
plugins = ["generic"]
{tail}
"#
    )
}

async fn start(up: &TestUpstream, server_extra: &str) -> Gateway {
    Gateway::builder(&config(up.addr(), server_extra, ""))
        .env("TEST_SW_SECRET", &sw_secret())
        .start()
        .await
}

struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Answer {
    let mut req = c.post(url).body(body);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e:?}"));
    Answer {
        status: r.status().as_u16(),
        content_type: r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
        body: r.text().await.unwrap(),
    }
}

/// A refusal: the status, a problem+json body saying the same, and the upstream
/// untouched.
#[track_caller]
fn refused(a: &Answer, status: u16, up: &TestUpstream, hits_before: usize, what: &str) {
    assert_eq!(a.status, status, "{what}: {}", a.body);
    assert_eq!(a.content_type, "application/problem+json", "{what}");
    let v: serde_json::Value =
        serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{what}: {e}: {}", a.body));
    assert_eq!(v["status"], status, "{what}: {v}");
    assert!(
        v["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{what}: {v}"
    );
    assert_eq!(
        up.hits(),
        hits_before,
        "{what}: the upstream must not see a refused webhook"
    );
}

#[tokio::test]
async fn stripe_webhooks_are_verified_over_the_raw_body() {
    let up = TestUpstream::start("stripe-up").await;
    let gw = start(&up, "").await;
    let c = gw.client();
    let url = gw.url("/stripe");

    // Bytes a JSON re-serialiser would change: spacing, key order, escapes, CRLF, UTF-8.
    let body: &[u8] =
        b"{\"id\": \"evt_1\",  \"amount\":1000,\r\n \"note\":\"caf\xc3\xa9 \\u00e9\"}\n";
    let t = now();
    let sig = stripe_header(STRIPE_NEW, t, body);
    let a = post(
        &c,
        &url,
        &[
            ("stripe-signature", &sig),
            ("content-type", "application/json"),
        ],
        body.to_vec(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.body, body, "the upstream must receive the exact bytes");
    assert_eq!(seen.header("stripe-signature"), Some(sig.as_str()));
    assert_eq!(
        seen.header("content-length"),
        Some(body.len().to_string().as_str())
    );

    // The same webhook again: a replay.
    let hits = up.hits();
    let a = post(&c, &url, &[("stripe-signature", &sig)], body.to_vec()).await;
    refused(&a, 409, &up, hits, "replay");

    // Rotation: the old secret is still accepted, and a header carrying several v1
    // (one valid) plus an unknown v0 scheme passes.
    let b2 = br#"{"id":"evt_2"}"#;
    let a = post(
        &c,
        &url,
        &[("stripe-signature", &stripe_header(STRIPE_OLD, t, b2))],
        b2.to_vec(),
    )
    .await;
    assert_eq!(a.status, 200, "old secret: {}", a.body);
    let b3 = br#"{"id":"evt_3"}"#;
    let several = format!(
        "t={t},v0={},v1={},v1={},v1={}",
        stripe_v1(STRIPE_NEW, t, b3),
        "0".repeat(64),
        stripe_v1("whsec_someone_else", t, b3),
        stripe_v1(STRIPE_NEW, t, b3)
    );
    let a = post(&c, &url, &[("stripe-signature", &several)], b3.to_vec()).await;
    assert_eq!(a.status, 200, "one valid among several: {}", a.body);
    assert_eq!(up.last_request().unwrap().body, b3);

    // Hostile cases: each 401 (or 409), none reaches the upstream.
    let body4: &[u8] = br#"{"id": "evt_4", "amount": 1000}"#;
    let good = stripe_header(STRIPE_NEW, t, body4);
    let v1 = stripe_v1(STRIPE_NEW, t, body4);
    let mut wrong_hex = v1.clone().into_bytes();
    wrong_hex[10] = if wrong_hex[10] == b'a' { b'b' } else { b'a' };
    let wrong_hex = String::from_utf8(wrong_hex).unwrap();
    let cases: Vec<(&str, Option<String>, Vec<u8>)> = vec![
        (
            "tampered body",
            Some(good.clone()),
            br#"{"id": "evt_4", "amount": 9000}"#.to_vec(),
        ),
        (
            "re-serialised JSON",
            Some(good.clone()),
            br#"{"amount":1000,"id":"evt_4"}"#.to_vec(),
        ),
        (
            "old timestamp",
            Some(stripe_header(STRIPE_NEW, t - 600, body4)),
            body4.to_vec(),
        ),
        (
            "future timestamp",
            Some(stripe_header(STRIPE_NEW, t + 600, body4)),
            body4.to_vec(),
        ),
        (
            "right prefix, wrong hex",
            Some(format!("t={t},v1={wrong_hex}")),
            body4.to_vec(),
        ),
        (
            "wrong length",
            Some(format!("t={t},v1={}", &v1[..40])),
            body4.to_vec(),
        ),
        ("too long", Some(format!("t={t},v1={v1}00")), body4.to_vec()),
        (
            "not hex",
            Some(format!("t={t},v1={}", "zz".repeat(32))),
            body4.to_vec(),
        ),
        ("empty v1", Some(format!("t={t},v1=")), body4.to_vec()),
        ("empty header", Some(String::new()), body4.to_vec()),
        ("only v0", Some(format!("t={t},v0={v1}")), body4.to_vec()),
        ("no timestamp", Some(format!("v1={v1}")), body4.to_vec()),
        (
            "timestamp changed",
            Some(format!("t={},v1={v1}", t + 1)),
            body4.to_vec(),
        ),
        (
            "unknown secret",
            Some(stripe_header("whsec_guess", t, body4)),
            body4.to_vec(),
        ),
        ("missing header", None, body4.to_vec()),
    ];
    let n_cases = cases.len();
    for (what, header, b) in cases {
        let hits = up.hits();
        let mut h = vec![];
        if let Some(v) = &header {
            h.push(("stripe-signature", v.as_str()));
        }
        let a = post(&c, &url, &h, b).await;
        refused(&a, 401, &up, hits, what);
    }
    // The genuine one still passes after all that (refusals are not remembered).
    let a = post(&c, &url, &[("stripe-signature", &good)], body4.to_vec()).await;
    assert_eq!(a.status, 200, "{}", a.body);

    // Metrics: 4 valid, 1 replay, 2 stale, the rest invalid.
    let m = gw.metrics().await;
    let get = |result: &str| {
        find_metric(
            &m,
            &format!(r#"tollgate_webhook_verifications_total{{route="stripe",result="{result}"}}"#),
        )
    };
    assert_eq!(get("valid"), Some(4.0), "{m}");
    assert_eq!(get("replay"), Some(1.0));
    assert_eq!(get("stale"), Some(2.0));
    assert_eq!(get("invalid"), Some((n_cases - 2) as f64));
    let reason = |r: &str| {
        find_metric(
            &m,
            &format!(
                r#"tollgate_auth_failures_total{{route="stripe",plugin="stripe",reason="{r}"}}"#
            ),
        )
    };
    assert_eq!(reason("bad_signature"), Some(9.0));
    assert_eq!(reason("missing_signature"), Some(3.0));
    assert_eq!(reason("missing_timestamp"), Some(1.0));
    assert_eq!(reason("stale_timestamp"), Some(2.0));
    assert_eq!(reason("replay"), Some(1.0));

    // Refusals are logged with their reason (buffered per-request lines:
    // waited for); neither secrets nor signatures ever reach the logs.
    gw.wait_for_log("bad_signature", Duration::from_secs(10))
        .await;
    let logs = gw.logs();
    for secret in [
        STRIPE_OLD,
        STRIPE_NEW,
        &v1,
        &wrong_hex,
        GITHUB_SECRET,
        &sw_secret(),
    ] {
        assert!(
            !logs.contains(secret),
            "{secret:?} leaked into the logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn github_and_standard_webhooks_end_to_end() {
    let up = TestUpstream::start("gh-up").await;
    let gw = start(&up, "").await;
    let c = gw.client();

    // GitHub's documented example.
    let gh = gw.url("/github");
    let a = post(
        &c,
        &gh,
        &[
            ("x-hub-signature-256", GITHUB_SIG),
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ],
        "Hello, World!",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(up.last_request().unwrap().body, b"Hello, World!");
    // Again with the same delivery id, or with a fresh (unsigned) one: replays.
    for delivery in [
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "00000000-0000-0000-0000-000000000000",
    ] {
        let hits = up.hits();
        let a = post(
            &c,
            &gh,
            &[
                ("x-hub-signature-256", GITHUB_SIG),
                ("x-github-delivery", delivery),
            ],
            "Hello, World!",
        )
        .await;
        refused(&a, 409, &up, hits, "github replay");
    }
    for (what, sig, body) in [
        ("tampered", GITHUB_SIG, "Hello, World?"),
        ("no prefix", &GITHUB_SIG[7..], "Hello, World!"),
        (
            "sha1 prefix",
            &GITHUB_SIG.replace("sha256=", "sha1=")[..],
            "Hello, World!",
        ),
        ("empty", "sha256=", "Hello, World!"),
    ] {
        let hits = up.hits();
        let a = post(&c, &gh, &[("x-hub-signature-256", sig)], body).await;
        refused(&a, 401, &up, hits, what);
    }

    // Standard Webhooks, secret from the environment.
    let sw = gw.url("/sw");
    let t = now();
    let body = br#"{"type":"invoice.paid","data":{"id":"in_1"}}"#;
    let h = |id: &'static str, t: i64, sig: String| {
        vec![
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", t.to_string()),
            ("webhook-signature", sig),
        ]
    };
    let send = |hs: Vec<(&'static str, String)>, b: Vec<u8>| {
        let c = c.clone();
        let sw = sw.clone();
        async move {
            let hs: Vec<(&str, &str)> = hs.iter().map(|(n, v)| (*n, v.as_str())).collect();
            post(&c, &sw, &hs, b).await
        }
    };
    let several = format!(
        "v1,{} v1a,c29tZXRoaW5n {}",
        B64.encode([7u8; 32]),
        sw_signature("msg_1", t, body)
    );
    let a = send(h("msg_1", t, several), body.to_vec()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(up.last_request().unwrap().body, body);
    // The same id again, even freshly signed with a new timestamp: a replay.
    let hits = up.hits();
    let a = send(
        h("msg_1", t + 1, sw_signature("msg_1", t + 1, body)),
        body.to_vec(),
    )
    .await;
    refused(&a, 409, &up, hits, "same webhook-id");
    for (what, hs) in [
        (
            "old",
            h("msg_2", t - 300, sw_signature("msg_2", t - 300, body)),
        ),
        (
            "future",
            h("msg_3", t + 300, sw_signature("msg_3", t + 300, body)),
        ),
        ("id swapped", h("msg_4", t, sw_signature("msg_5", t, body))),
        ("empty", h("msg_6", t, String::new())),
        ("bad base64", h("msg_7", t, "v1,!!!!".into())),
    ] {
        let hits = up.hits();
        let a = send(hs, body.to_vec()).await;
        refused(&a, 401, &up, hits, what);
    }
    // Generic HMAC: sha256, base64, prefix, timestamp and a signed header.
    let g = gw.url("/generic");
    let ts = t.to_string();
    let sig = format!(
        "sha256={}",
        B64.encode(mac(
            b"generic-secret",
            &[ts.as_bytes(), b":", b"payment.settled", b":", body]
        ))
    );
    let hs = [
        ("x-signature", sig.as_str()),
        ("x-timestamp", ts.as_str()),
        ("x-event", "payment.settled"),
    ];
    let a = post(&c, &g, &hs, body.to_vec()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let hits = up.hits();
    let a = post(
        &c,
        &g,
        &[
            ("x-signature", sig.as_str()),
            ("x-timestamp", ts.as_str()),
            ("x-event", "payment.failed"),
        ],
        body.to_vec(),
    )
    .await;
    refused(&a, 401, &up, hits, "signed header changed");

    let m = gw.metrics().await;
    for (route, result, n) in [
        ("github", "valid", 1.0),
        ("github", "replay", 2.0),
        ("github", "invalid", 4.0),
        ("sw", "valid", 1.0),
        ("sw", "replay", 1.0),
        ("sw", "stale", 2.0),
        ("sw", "invalid", 3.0),
        ("generic", "valid", 1.0),
        ("generic", "invalid", 1.0),
    ] {
        assert_eq!(
            find_metric(
                &m,
                &format!(
                    r#"tollgate_webhook_verifications_total{{route="{route}",result="{result}"}}"#
                )
            ),
            Some(n),
            "{route} {result}"
        );
    }
    let logs = gw.logs();
    for secret in [GITHUB_SECRET, &sw_secret(), "generic-secret"] {
        assert!(!logs.contains(secret), "{secret:?} leaked into the logs");
    }
}

#[tokio::test]
async fn bodies_over_64_kib_are_refused_and_chunked_bodies_pass_whole() {
    let up = TestUpstream::start("body-up").await;
    let gw = start(&up, "").await;
    let c = gw.client();
    let url = gw.url("/stripe");
    let t = now();

    // Exactly 64 KiB: verified and forwarded byte for byte.
    let body: Vec<u8> = (0..64 * 1024)
        .map(|i| b"0123456789abcdef{}\",\n"[i % 21])
        .collect();
    let a = post(
        &c,
        &url,
        &[("stripe-signature", &stripe_header(STRIPE_NEW, t, &body))],
        body.clone(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(up.last_request().unwrap().body, body);

    // 70 KiB, correctly signed: 413 before anything is forwarded (declared length).
    let big: Vec<u8> = (0..70 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let big_sig = stripe_header(STRIPE_NEW, t, &big);
    let hits = up.hits();
    let a = post(&c, &url, &[("stripe-signature", &big_sig)], big.clone()).await;
    refused(&a, 413, &up, hits, "70 KiB with Content-Length");

    // The same 70 KiB, chunked: refused once past the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(7000).map(|c| Ok(c.to_vec())).collect();
    let a = post(
        &c,
        &url,
        &[("stripe-signature", &big_sig)],
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    refused(&a, 413, &up, hits, "70 KiB chunked");

    // A chunked body under the limit arrives whole and unchanged.
    let small: Vec<u8> = (0..15_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        small.chunks(3333).map(|c| Ok(c.to_vec())).collect();
    let a = post(
        &c,
        &url,
        &[("stripe-signature", &stripe_header(STRIPE_NEW, t, &small))],
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen.body, small);

    assert_eq!(
        gw.metric(r#"tollgate_auth_failures_total{route="stripe",plugin="stripe",reason="body_too_large"}"#).await,
        Some(2.0)
    );

    // The connection that carried a 413 still works (the rest of the body was drained).
    let mut conn = RawConn::connect(gw.addr()).await;
    let head = format!(
        "POST /stripe HTTP/1.1\r\nhost: x\r\nstripe-signature: {big_sig}\r\ncontent-length: {}\r\n\r\n",
        big.len()
    );
    conn.send(head.as_bytes()).await.unwrap();
    conn.send(&big).await.unwrap();
    let r = conn.read_response().await;
    assert_eq!(r.status, 413);
    let tiny = b"{}";
    let head = format!(
        "POST /stripe HTTP/1.1\r\nhost: x\r\nstripe-signature: {}\r\ncontent-length: 2\r\n\r\n",
        stripe_header(STRIPE_NEW, t, tiny)
    );
    conn.send(head.as_bytes()).await.unwrap();
    conn.send(tiny).await.unwrap();
    let r = conn.read_response().await;
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(up.last_request().unwrap().body, tiny);
}

#[tokio::test]
async fn a_smaller_max_request_body_is_the_limit() {
    let up = TestUpstream::start("max-up").await;
    let gw = start(&up, "max_request_body = \"1KiB\"").await;
    let c = gw.client();
    let t = now();
    let body = vec![b'x'; 2000];
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(500).map(|c| Ok(c.to_vec())).collect();
    let a = post(
        &c,
        &gw.url("/stripe"),
        &[("stripe-signature", &stripe_header(STRIPE_NEW, t, &body))],
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    refused(&a, 413, &up, 0, "chunked body over max_request_body");
    let body = vec![b'y'; 1024];
    let a = post(
        &c,
        &gw.url("/stripe"),
        &[("stripe-signature", &stripe_header(STRIPE_NEW, t, &body))],
        body.clone(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(up.last_request().unwrap().body, body);
}

#[tokio::test]
async fn webhooks_over_h2() {
    let up = TestUpstream::start("h2-up").await;
    let certs = TestCerts::generate(&["hooks.test"]);
    let tail = "\n[[server.tls]]\nlisten = \"{TLS_LISTEN}\"\ncert = \"a.pem\"\nkey = \"a.key\"\n";
    let tpl = config(up.addr(), "", "").replacen(
        "\n[plugins.stripe]",
        &format!("{tail}\n[plugins.stripe]"),
        1,
    );
    let gw = Gateway::builder(&tpl)
        .env("TEST_SW_SECRET", &sw_secret())
        .file("a.pem", &certs.cert_pem)
        .file("a.key", &certs.key_pem)
        .start()
        .await;
    let c = gw
        .https_client_builder(&certs.ca_pem, &["hooks.test"])
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let url = gw.https_url("hooks.test", "/stripe");
    let t = now();

    let body: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(5000).map(|c| Ok(c.to_vec())).collect();
    let r = c
        .post(&url)
        .header("stripe-signature", stripe_header(STRIPE_NEW, t, &body))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(
        up.last_request().unwrap().body,
        body,
        "h2 body forwarded whole"
    );

    let hits = up.hits();
    let big = vec![b'z'; 70 * 1024];
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    let a = post(
        &c,
        &url,
        &[("stripe-signature", &stripe_header(STRIPE_NEW, t, &big))],
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    refused(&a, 413, &up, hits, "70 KiB over h2");
    let a = post(
        &c,
        &url,
        &[("stripe-signature", &stripe_header(STRIPE_NEW, t, b"a"))],
        "b",
    )
    .await;
    refused(&a, 401, &up, hits, "bad signature over h2");
    // The h2 connection keeps working.
    let a = post(
        &c,
        &url,
        &[("stripe-signature", &stripe_header(STRIPE_NEW, t, b"ok"))],
        "ok",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(up.last_request().unwrap().body, b"ok");
}

#[test]
fn configuration_errors_are_located_and_keep_secrets_out() {
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let bad = config(up, "", "")
        .replace(
            "secrets_env = \"TEST_SW_SECRET\"",
            "secrets = [\"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]",
        )
        .replace(
            "scheme = \"hmac\"",
            "scheme = \"hmac\"\nalgorithm = \"md5\"",
        )
        .replace("{header:x-event}", "{nonce}");
    let (ok, out) = check_config(&bad, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("plugins.sw.secrets[0]"), "{out}");
    assert!(out.contains("whsec_"), "{out}");
    assert!(
        !out.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "a secret leaked into the check output: {out}"
    );
    assert!(out.contains("plugins.generic.algorithm"), "{out}");
    assert!(out.contains("plugins.generic.signed_string"), "{out}");
    assert!(out.contains("{nonce}"), "{out}");

    let unknown = config(up, "", "")
        .replace("scheme = \"github\"", "scheme = \"gitlab\"")
        .replace(
            "secrets_env = \"TEST_SW_SECRET\"",
            "secrets = [\"whsec_AAAA\"]",
        );
    let (ok, out) = check_config(&unknown, &[]);
    assert!(!ok);
    assert!(out.contains("plugins.github.scheme"), "{out}");
    // The environment variable is not set for `check` here: named, not guessed.
    let (ok, out) = check_config(&config(up, "", ""), &[]);
    assert!(!ok);
    assert!(
        out.contains("plugins.sw.secrets_env") && out.contains("TEST_SW_SECRET"),
        "{out}"
    );
}

#[tokio::test]
async fn doc_example_runs() {
    let up = TestUpstream::start("billing").await;
    let stripe_secret = "whsec_doc_example_secret";
    let gw = Gateway::builder(&doc_example("webhook_signature.md", up.addr()))
        .env("STRIPE_WEBHOOK_SECRET", stripe_secret)
        .env("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET)
        .start()
        .await;
    let c = gw.client();
    let t = now();
    let body = br#"{"id":"evt_doc","type":"charge.succeeded"}"#;
    let sig = stripe_header(stripe_secret, t, body);
    let a = post(
        &c,
        &gw.url("/webhooks/stripe"),
        &[("stripe-signature", &sig)],
        body.to_vec(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(up.last_request().unwrap().body, body);
    let hits = up.hits();
    let a = post(
        &c,
        &gw.url("/webhooks/stripe"),
        &[("stripe-signature", &sig)],
        body.to_vec(),
    )
    .await;
    refused(&a, 409, &up, hits, "doc: replay");
    let a = post(
        &c,
        &gw.url("/webhooks/stripe"),
        &[("stripe-signature", &sig)],
        br#"{"id":"evt_doc","type":"charge.refunded"}"#.to_vec(),
    )
    .await;
    refused(&a, 401, &up, hits, "doc: tampered");
    let a = post(&c, &gw.url("/webhooks/stripe"), &[], body.to_vec()).await;
    refused(&a, 401, &up, hits, "doc: unsigned");
    let a = post(
        &c,
        &gw.url("/webhooks/stripe"),
        &[(
            "stripe-signature",
            &stripe_header(stripe_secret, t - 301, body),
        )],
        body.to_vec(),
    )
    .await;
    refused(&a, 401, &up, hits, "doc: five minutes and one second old");

    let a = post(
        &c,
        &gw.url("/webhooks/github"),
        &[("x-hub-signature-256", GITHUB_SIG)],
        "Hello, World!",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(up.last_request().unwrap().body, b"Hello, World!");
    let hits = up.hits();
    let a = post(
        &c,
        &gw.url("/webhooks/github"),
        &[("x-hub-signature-256", GITHUB_SIG)],
        "Hello, World!",
    )
    .await;
    refused(&a, 409, &up, hits, "doc: github passes once");
    assert!(!gw.logs().contains(stripe_secret));
}

#[tokio::test]
async fn a_webhook_the_upstream_failed_is_not_a_replay_when_retried() {
    let up = TestUpstream::start("up").await;
    let tail = "[[routes]]\nname = \"stripe-bare\"\nupstream = \"up\"\npath = \"/bare\"\nstrip_prefix = \"/bare\"\nplugins = [\"stripe\"]\n";
    let gw = Gateway::builder(&config(up.addr(), "", tail))
        .env("TEST_SW_SECRET", &sw_secret())
        .start()
        .await;
    let c = gw.client();
    let body = br#"{"id":"evt_retry","type":"payment_intent.succeeded"}"#;
    let sig = stripe_header(STRIPE_NEW, now(), body);
    let headers = [("stripe-signature", sig.as_str())];

    // The upstream fails the first delivery: the sender will retry it.
    let first = post(&c, &gw.url("/bare/status/503"), &headers, body.to_vec()).await;
    assert_eq!(first.status, 503);
    let retry = post(&c, &gw.url("/bare/status/503"), &headers, body.to_vec()).await;
    assert_eq!(
        retry.status, 503,
        "a retry of an undelivered webhook is forwarded, not a 409"
    );
    assert_eq!(up.hits(), 2);

    // Delivered once (2xx): now the same webhook is a replay.
    let sig = stripe_header(STRIPE_NEW, now(), b"{\"id\":\"evt_ok\"}");
    let headers = [("stripe-signature", sig.as_str())];
    assert_eq!(
        post(
            &c,
            &gw.url("/bare/ok"),
            &headers,
            &b"{\"id\":\"evt_ok\"}"[..]
        )
        .await
        .status,
        200
    );
    let replay = post(
        &c,
        &gw.url("/bare/ok"),
        &headers,
        &b"{\"id\":\"evt_ok\"}"[..],
    )
    .await;
    refused(&replay, 409, &up, 3, "a delivered webhook sent again");
}
