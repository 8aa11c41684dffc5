//! Tests of the integration-test harness itself (tests/common): the upstream server, TLS
//! material and helpers. No gateway involved.
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(5);

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("JSON body")
}

#[tokio::test]
async fn echo_reports_request_and_records_it() {
    let up = TestUpstream::start("alpha").await;
    let client = http_client();
    let resp = client
        .post(up.url("/some/path?x=1&y=2"))
        .header("X-Custom", "one")
        .header("X-Custom", "two")
        .body("hello body")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "alpha");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["upstream"], "alpha");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/some/path?x=1&y=2");
    assert_eq!(v["headers"]["x-custom"], "two", "last value wins");
    assert_eq!(v["body"], "hello body");

    assert_eq!(up.hits(), 1);
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/some/path?x=1&y=2");
    assert_eq!(r.path_only(), "/some/path");
    assert_eq!(r.query(), Some("x=1&y=2"));
    assert_eq!(r.body, b"hello body");
    assert_eq!(r.header_all("x-custom"), vec!["one", "two"]);
    assert_eq!(r.header("X-CUSTOM"), Some("two"));
    // Order as received, names lowercased.
    let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
    let first = names.iter().position(|n| *n == "x-custom").unwrap();
    assert_eq!(names[first + 1], "x-custom");
    assert!(names.iter().all(|n| *n == n.to_ascii_lowercase()));
    assert_eq!(up.last_request().unwrap(), *r);
    up.clear();
    assert_eq!(up.hits(), 0);
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn chunked_request_body_and_head() {
    let up = TestUpstream::start("chunky").await;
    let raw = raw_request(
        up.addr(),
        b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let body = &raw[raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert_eq!(json(body)["body"], "hello world");
    assert_eq!(up.requests()[0].body, b"hello world");

    // HEAD: a head with content-length, and no body.
    let mut conn = RawConn::connect(up.addr()).await;
    conn.send("HEAD /big?bytes=300 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, headers) = conn.read_response_head().await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-length"), Some("300"));
    // Same connection still usable: the next response starts right away.
    conn.send("GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let resp = conn.read_response().await;
    assert_eq!(resp.status, 201);
    assert_eq!(json(&resp.body)["upstream"], "chunky");
}

#[tokio::test]
async fn expect_100_continue() {
    let up = TestUpstream::start("cont").await;
    let mut conn = RawConn::connect(up.addr()).await;
    conn.send("POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let (status, _) = conn.read_response_head().await;
    assert_eq!(status, 100);
    conn.send("abc").await.unwrap();
    let resp = conn.read_response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(json(&resp.body)["body"], "abc");
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let up = TestUpstream::start("ka").await;
    let client = http_client();
    for i in 0..5 {
        let resp = client.get(up.url(&format!("/n/{i}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    assert_eq!(up.hits(), 5);
    assert_eq!(up.connections(), 1);

    // Connection: close is honoured: the server closes after answering.
    let mut conn = RawConn::connect(up.addr()).await;
    conn.send("GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let resp = conn.read_response().await;
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(conn.closed_within(WAIT).await);
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn healthz_toggles_and_is_not_recorded() {
    let up = TestUpstream::start("h").await;
    let client = http_client();
    let resp = client.get(up.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");
    up.set_healthy(false);
    let resp = client.get(up.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-upstream"], "h");
    up.set_healthy(true);
    assert_eq!(
        client
            .get(up.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(up.health_checks(), 3);
    assert_eq!(up.hits(), 0);
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn status_slow_big_hop_respond() {
    let up = TestUpstream::start("misc").await;
    let client = http_client();

    let resp = client.get(up.url("/status/503")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-upstream"], "misc");
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"upstream": "misc"})
    );
    let resp = client.get(up.url("/status/204")).send().await.unwrap();
    assert_eq!(resp.status(), 204);

    let started = std::time::Instant::now();
    let resp = client.get(up.url("/slow?ms=100")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(100));

    let resp = client
        .get(up.url("/big?bytes=200000"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-upstream"], "misc");
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), 200_000);
    assert!(body.iter().all(|b| *b == b'a'));

    let resp = client.get(up.url("/hop")).send().await.unwrap();
    let h = resp.headers();
    assert_eq!(h["x-kept"], "yes");
    assert_eq!(h["close-me"], "secret");
    assert_eq!(h["keep-alive"], "timeout=5");
    assert_eq!(h["proxy-authenticate"], "Basic");
    assert_eq!(h["trailer"], "x");
    assert_eq!(h["connection"], "close-me, keep-alive");
    assert_eq!(h["x-upstream"], "misc");

    let resp = client
        .get(up.url(
            "/respond?status=201&header=Cache-Control:max-age%3D60&header=X-A:%20b&body=hi+there",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["cache-control"], "max-age=60");
    assert_eq!(resp.headers()["x-a"], "b");
    assert_eq!(resp.text().await.unwrap(), "hi there");

    assert_eq!(up.hits(), 6);
}

#[tokio::test]
async fn misbehaving_paths() {
    let up = TestUpstream::start("bad").await;
    let client = http_client();

    // /reset: the client sees an error, not a response.
    assert!(client.get(up.url("/reset")).send().await.is_err());

    // /reset-mid-body: a head, 10 bytes, then the body fails.
    let resp = client.get(up.url("/reset-mid-body")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "1000");
    assert!(resp.bytes().await.is_err());
    let raw = raw_request(
        up.addr(),
        b"GET /reset-mid-body HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(raw.ends_with(b"\r\n\r\n0123456789"), "{raw:?}");

    // /garbage: not HTTP.
    assert!(client.get(up.url("/garbage")).send().await.is_err());
    let raw = raw_request(up.addr(), b"GET /garbage HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(raw, b"HTTP/1.1 abc\r\nnonsense\r\n\r\n");

    // /hang: the request is read (and recorded) but never answered.
    let mut conn = RawConn::connect(up.addr()).await;
    conn.send("GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    wait_until(WAIT, || async {
        up.requests().iter().any(|r| r.path == "/hang")
    })
    .await;
    assert!(!conn.closed_within(Duration::from_millis(100)).await);
    assert!(conn.buffered().is_empty());

    // Dropping the upstream closes the hanging connection too.
    drop(up);
    assert!(conn.closed_within(WAIT).await);
}

#[tokio::test]
async fn sse_second_event_only_after_release() {
    let up = TestUpstream::start("sse").await;
    let client = http_client();
    let mut resp = client.get(up.url("/sse")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-upstream"], "sse");
    let first = resp.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    wait_until(WAIT, || async { up.sse_waiting() == 1 }).await;
    // Still blocked: nothing more arrives until release().
    let pending = tokio::time::timeout(Duration::from_millis(100), resp.chunk()).await;
    assert!(pending.is_err(), "second event arrived before release()");
    up.release();
    let mut rest = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"data: second\n\n");
    assert_eq!(up.sse_waiting(), 0);

    // release() before the stream waits: it passes straight through.
    up.release();
    let body = client
        .get(up.url("/sse"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "data: first\n\ndata: second\n\n");

    // Two streams waiting at once are both released by one call.
    let a = client.get(up.url("/sse")).send().await.unwrap();
    let b = client.get(up.url("/sse")).send().await.unwrap();
    wait_until(WAIT, || async { up.sse_waiting() == 2 }).await;
    up.release();
    assert_eq!(a.text().await.unwrap(), "data: first\n\ndata: second\n\n");
    assert_eq!(b.text().await.unwrap(), "data: first\n\ndata: second\n\n");
}

#[tokio::test]
async fn websocket_upgrade_echoes_bytes() {
    let up = TestUpstream::start("ws").await;
    let mut conn = RawConn::connect(up.addr()).await;
    conn.send(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let (status, headers) = conn.read_response_head().await;
    assert_eq!(status, 101);
    assert_eq!(
        header(&headers, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(header(&headers, "upgrade"), Some("websocket"));
    assert_eq!(header(&headers, "x-upstream"), Some("ws"));
    conn.send(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")
        .await
        .unwrap();
    assert_eq!(
        conn.read_exact(11).await,
        b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    );
    conn.send("more bytes").await.unwrap();
    assert_eq!(conn.read_exact(10).await, b"more bytes");
    conn.shutdown_write().await;
    assert!(conn.closed_within(WAIT).await);

    // Without Upgrade: 400.
    let resp = http_client().get(up.url("/ws")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn tls_upstream_with_generated_ca() {
    let certs = TestCerts::generate(&["upstream.test", "127.0.0.1"]);
    let up = TestUpstream::start_tls("secure", &certs.cert_pem, &certs.key_pem).await;
    let client = certs.client();
    let resp = client
        .get(format!("https://127.0.0.1:{}/hello", up.addr().port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "secure");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["path"], "/hello");

    // By DNS name too.
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(certs.ca_certificate())
        .resolve("upstream.test", up.addr())
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://upstream.test:{}/x", up.addr().port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // A client that does not trust the CA fails.
    let other = TestCerts::generate(&["127.0.0.1"]);
    let err = other
        .client()
        .get(format!("https://127.0.0.1:{}/x", up.addr().port()))
        .send()
        .await;
    assert!(err.is_err());
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn mtls_upstream_requires_client_cert() {
    let server = TestCerts::generate(&["127.0.0.1"]);
    let clients = TestCerts::generate(&["unused"]);
    let up =
        TestUpstream::start_mtls("m", &server.cert_pem, &server.key_pem, &clients.ca_pem).await;
    let url = format!("https://127.0.0.1:{}/x", up.addr().port());

    assert!(server.client().get(&url).send().await.is_err());

    let (cert, key) = clients.client_cert("partner-1");
    let client = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(server.ca_certificate())
        .identity(identity(&cert, &key))
        .build()
        .unwrap();
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn stop_refuses_new_connections_and_start_at_reuses_address() {
    let up = TestUpstream::start("gone").await;
    let addr = up.addr();
    up.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let back = TestUpstream::start_at("back", addr).await;
    let resp = http_client().get(back.url("/")).send().await.unwrap();
    assert_eq!(resp.headers()["x-upstream"], "back");
    assert!(tokio::net::TcpStream::connect(unused_addr()).await.is_err());
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = TestUpstream::start("pipe").await;
    let mut conn = RawConn::connect(up.addr()).await;
    conn.send(
        "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /status/404 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(json(&conn.read_response().await.body)["path"], "/a");
    let b = conn.read_response().await;
    assert_eq!(json(&b.body)["body"], "hi");
    assert_eq!(conn.read_response().await.status, 404);
    assert_eq!(up.connections(), 1);
    assert_eq!(up.hits(), 3);
}

#[test]
fn metric_lookup() {
    let text = "# HELP tollgate_requests_total Requests.\n\
                # TYPE tollgate_requests_total counter\n\
                tollgate_requests_total{route=\"a\",method=\"GET\",status=\"200\"} 3\n\
                tollgate_requests_total{route=\"a\",method=\"POST\",status=\"201\"} 2\n\
                tollgate_requests_total{route=\"b, c\",method=\"GET\",status=\"200\"} 7\n\
                tollgate_config_reloads_total{result=\"success\"} 1 1700000000000\n\
                tollgate_request_duration_seconds_bucket{route=\"a\",le=\"+Inf\"} 5\n\
                process_open_fds 12\n";
    assert_eq!(
        find_metric(
            text,
            r#"tollgate_requests_total{status="200",route="a",method="GET"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        find_metric(
            text,
            r#"tollgate_requests_total{route="b, c", method="GET", status="200"}"#
        ),
        Some(7.0)
    );
    // Label sets must be equal, not merely overlapping.
    assert_eq!(
        find_metric(text, r#"tollgate_requests_total{route="a"}"#),
        None
    );
    assert_eq!(find_metric(text, "process_open_fds"), Some(12.0));
    assert_eq!(
        find_metric(text, r#"tollgate_config_reloads_total{result="success"}"#),
        Some(1.0)
    );
    assert_eq!(
        find_metric(
            text,
            r#"tollgate_request_duration_seconds_bucket{le="+Inf",route="a"}"#
        ),
        Some(5.0)
    );
    assert_eq!(find_metric(text, "tollgate_requests"), None);
    assert_eq!(
        sum_metrics(text, r#"tollgate_requests_total{route="a"}"#),
        5.0
    );
    assert_eq!(sum_metrics(text, "tollgate_requests_total"), 12.0);
    assert_eq!(
        sum_metrics(text, r#"tollgate_requests_total{route="z"}"#),
        0.0
    );
}

#[test]
fn sha1_and_base64() {
    assert_eq!(base64_encode(b""), "");
    assert_eq!(base64_encode(b"f"), "Zg==");
    assert_eq!(base64_encode(b"fo"), "Zm8=");
    assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    let hex: String = sha1(b"abc").iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    let long = vec![b'a'; 1000];
    let hex: String = sha1(&long).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "291e9a6c66994949b57ba5e650361e98fc36b1ba");
    assert_eq!(
        websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[tokio::test]
async fn wait_until_and_certs_on_disk() {
    let up = TestUpstream::start("w").await;
    let u = &up;
    let client = http_client();
    tokio::spawn({
        let url = up.url("/later");
        async move { client.get(url).send().await.unwrap() }
    });
    wait_until(WAIT, || async { u.hits() == 1 }).await;
    let path = wait_for(WAIT, || async { u.last_request().map(|r| r.path) }).await;
    assert_eq!(path, "/later");

    let certs = TestCerts::generate(&["a.test"]);
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certs.write_to(dir.path());
    assert_eq!(std::fs::read_to_string(ca).unwrap(), certs.ca_pem);
    assert!(std::fs::read_to_string(cert)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(std::fs::read_to_string(key)
        .unwrap()
        .contains("PRIVATE KEY-----"));
}

#[tokio::test]
#[should_panic(expected = "condition still false")]
async fn wait_until_panics_on_timeout() {
    wait_until(Duration::from_millis(50), || async { false }).await;
}
