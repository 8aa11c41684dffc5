//! `idempotency` through a real gateway: replays never reach the upstream,
//! conflicts and mismatches are refused, failures are not stored.
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;
use common::*;
use std::time::Duration;

fn config(up: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[plugins.idem]
type = "idempotency"
ttl = "1h"
{extra}

[plugins.keys]
type = "api_key"
keys = [
  {{ consumer = "acme", key_sha256 = "{acme}" }},
  {{ consumer = "globex", key_sha256 = "{globex}" }},
]

[upstreams.pay]
targets = ["{up}"]
read_timeout = "300ms"

[[routes]]
name = "pay"
upstream = "pay"
path = "/"
plugins = ["idem"]

[[routes]]
name = "partner"
upstream = "pay"
path = "/partner"
plugins = ["keys", "idem"]
"#,
        acme = sha("key-acme"),
        globex = sha("key-globex"),
    )
}

fn sha(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

async fn post(
    gw: &Gateway,
    path: &str,
    key: Option<&str>,
    body: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = gw.client().post(gw.url(path)).body(body.to_string());
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    for (n, v) in extra {
        r = r.header(*n, *v);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn a_retry_is_replayed_without_reaching_the_upstream() {
    let up = TestUpstream::start("pay").await;
    let gw = Gateway::start(&config(up.addr(), "")).await;
    let first = post(
        &gw,
        "/respond?status=201&header=X-Payment:pay_1&body=created",
        Some("k-1"),
        "{\"amount\":1}",
        &[],
    )
    .await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    assert_eq!(first.text().await.unwrap(), "created");

    for _ in 0..3 {
        let again = post(
            &gw,
            "/respond?status=201&header=X-Payment:pay_1&body=created",
            Some("k-1"),
            "{\"amount\":1}",
            &[],
        )
        .await;
        assert_eq!(again.status(), 201);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.headers()["x-payment"], "pay_1");
        assert_eq!(again.text().await.unwrap(), "created");
    }
    assert_eq!(up.hits(), 1);

    // Same key, another body → 422; the upstream is not involved.
    let other = post(
        &gw,
        "/respond?status=201&header=X-Payment:pay_1&body=created",
        Some("k-1"),
        "{\"amount\":2}",
        &[],
    )
    .await;
    assert_eq!(other.status(), 422);
    assert_eq!(other.headers()["content-type"], "application/problem+json");
    // Another key is another request.
    assert_eq!(
        post(&gw, "/respond?status=201&body=x", Some("k-2"), "{}", &[])
            .await
            .status(),
        201
    );
    assert_eq!(up.hits(), 2);
    // Methods not covered (GET) and requests without a key pass through untouched.
    assert_eq!(post(&gw, "/plain", None, "{}", &[]).await.status(), 200);
    assert_eq!(post(&gw, "/plain", None, "{}", &[]).await.status(), 200);
    assert_eq!(up.hits(), 4);

    assert_eq!(
        gw.metric(r#"tollgate_idempotency_total{route="pay",result="stored"}"#)
            .await,
        Some(2.0)
    );
    assert_eq!(
        gw.metric(r#"tollgate_idempotency_total{route="pay",result="replayed"}"#)
            .await,
        Some(3.0)
    );
    assert_eq!(
        gw.metric(r#"tollgate_idempotency_total{route="pay",result="mismatch"}"#)
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn same_key_while_in_flight_is_a_conflict() {
    let up = TestUpstream::start("pay").await;
    let gw = Gateway::start(&config(up.addr(), "")).await;
    let c = gw.client();
    let url = gw.url("/sse");
    let first = tokio::spawn(async move {
        let r = c
            .post(url)
            .header("idempotency-key", "k-flight")
            .body("{}")
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    });
    wait_until(Duration::from_secs(10), || async { up.sse_waiting() == 1 }).await;
    let second = post(&gw, "/sse", Some("k-flight"), "{}", &[]).await;
    assert_eq!(second.status(), 409);
    assert_eq!(
        gw.metric(r#"tollgate_idempotency_total{route="pay",result="conflict"}"#)
            .await,
        Some(1.0)
    );
    up.release();
    let (status, body) = first.await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("data: second"), "{body}");
    // Now stored: the whole streamed body is replayed.
    let third = post(&gw, "/sse", Some("k-flight"), "{}", &[]).await;
    assert_eq!(third.headers()["idempotent-replayed"], "true");
    assert_eq!(third.text().await.unwrap(), body);
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn failures_are_not_stored_and_timeouts_lock_the_key() {
    let up = TestUpstream::start("pay").await;
    let gw = Gateway::start(&config(up.addr(), "")).await;
    for _ in 0..2 {
        assert_eq!(
            post(&gw, "/status/503", Some("k-5xx"), "{}", &[])
                .await
                .status(),
            503
        );
    }
    assert_eq!(
        up.hits(),
        2,
        "a 5xx is not stored: the retry reaches the upstream"
    );
    assert_eq!(
        post(&gw, "/hang", Some("k-hang"), "{}", &[]).await.status(),
        504
    );
    // The upstream may still be executing a timed-out request: the key stays
    // locked for `unknown_outcome_lock` (default 60s), and the retry never
    // reaches the upstream.
    let retry = post(&gw, "/hang", Some("k-hang"), "{}", &[]).await;
    assert_eq!(retry.status(), 409);
    let after: u64 = retry.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&after), "{after}");
    assert_eq!(up.hits(), 3, "a timed-out request is not sent twice");
    // A 4xx is a final answer and is stored.
    assert_eq!(
        post(&gw, "/status/400", Some("k-4xx"), "{}", &[])
            .await
            .status(),
        400
    );
    let again = post(&gw, "/status/400", Some("k-4xx"), "{}", &[]).await;
    assert_eq!(again.status(), 400);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(up.hits(), 4);
}

#[tokio::test]
async fn keys_are_scoped_per_consumer_and_can_be_required() {
    let up = TestUpstream::start("pay").await;
    let gw = Gateway::start(&config(up.addr(), "required = true")).await;
    let a = post(
        &gw,
        "/partner/pay",
        Some("shared"),
        "{}",
        &[("x-api-key", "key-acme")],
    )
    .await;
    let b = post(
        &gw,
        "/partner/pay",
        Some("shared"),
        "{}",
        &[("x-api-key", "key-globex")],
    )
    .await;
    assert_eq!(
        (a.status(), b.status()),
        (reqwest::StatusCode::OK, reqwest::StatusCode::OK)
    );
    assert!(
        b.headers().get("idempotent-replayed").is_none(),
        "another consumer's record is never replayed"
    );
    assert_eq!(up.hits(), 2);
    let a2 = post(
        &gw,
        "/partner/pay",
        Some("shared"),
        "{}",
        &[("x-api-key", "key-acme")],
    )
    .await;
    assert_eq!(a2.headers()["idempotent-replayed"], "true");
    assert_eq!(up.hits(), 2);

    let missing = post(
        &gw,
        "/partner/pay",
        None,
        "{}",
        &[("x-api-key", "key-acme")],
    )
    .await;
    assert_eq!(missing.status(), 400);
    let bad = post(
        &gw,
        "/partner/pay",
        Some("has space"),
        "{}",
        &[("x-api-key", "key-acme")],
    )
    .await;
    assert_eq!(bad.status(), 400);
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn idempotency_doc_example() {
    let up = TestUpstream::start("doc").await;
    let gw = Gateway::start(&doc_example("idempotency.md", up.addr())).await;
    let send = || {
        gw.client()
            .post(gw.url("/v1/payments"))
            .header("idempotency-key", "8e03978e-40d5-43e8-bc93-6894a57f9324")
            .body(r#"{"amount":"10.00"}"#)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let r = send().await.unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(up.hits(), 1);
    let no_key = gw
        .client()
        .post(gw.url("/v1/payments"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 400, "the example requires the header");
}

/// One raw HTTP/1.1 exchange on a fresh connection; returns the response head, lower-cased.
async fn raw_head(gw: &Gateway, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    text.split("\r\n\r\n").next().unwrap_or("").to_string()
}

#[tokio::test]
async fn a_replayed_204_or_304_gains_no_content_length() {
    // RFC 9110 §8.6: no Content-Length on a 204; a 304's would describe the representation.
    let up = TestUpstream::start("pay").await;
    let gw = Gateway::start(&config(up.addr(), "")).await;
    for status in [204, 304] {
        let req = format!(
            "POST /respond?status={status}&header=x-done:yes HTTP/1.1\r\nHost: a\r\n\
             Idempotency-Key: bodyless-{status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let first = raw_head(&gw, &req).await;
        assert!(first.starts_with(&format!("http/1.1 {status}")), "{first}");
        assert!(!first.contains("content-length"), "{first}");
        let replay = raw_head(&gw, &req).await;
        assert!(
            replay.starts_with(&format!("http/1.1 {status}")),
            "{replay}"
        );
        assert!(replay.contains("idempotent-replayed: true"), "{replay}");
        assert!(replay.contains("x-done: yes"), "{replay}");
        assert!(!replay.contains("content-length"), "{status}: {replay}");
        assert!(!replay.contains("transfer-encoding"), "{status}: {replay}");
    }
    assert_eq!(up.hits(), 2, "the retries were replays");
}
