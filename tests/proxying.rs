//! Proxying through a real gateway: forwarding headers, hop-by-hop stripping, WebSocket
//! upgrades, unbuffered SSE, the header-reading front (header_timeout, 431), pipelining,
//! and the TLS listener (SNI, ALPN h2, mTLS).

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

/// A gateway config with one catch-all route `all` to upstream `backend` at `up`;
/// `server_extra` is appended to `[server]`, `tail` to the end of the file.
fn config(up: &TestUpstream, server_extra: &str, tail: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
threads = 1
{server_extra}

[upstreams.backend]
targets = ["{addr}"]
connect_timeout = "1s"
read_timeout = "5s"

[[routes]]
name = "all"
upstream = "backend"
path = "/"
{tail}
"#,
        addr = up.addr()
    )
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(bytes)))
}

fn assert_problem(resp: &RawResponse, status: u16) {
    assert_eq!(resp.status, status, "{resp:?}");
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json"),
        "{resp:?}"
    );
    let v = json(&resp.body);
    assert_eq!(v["status"], status, "{v}");
    for field in ["type", "title", "detail", "request_id"] {
        assert!(v[field].is_string(), "problem field {field} missing: {v}");
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Forwarding headers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_replace_client_values() {
    let up = TestUpstream::start("fwd").await;
    let gw = Gateway::start(&config(&up, "", "")).await;

    let resp = gw
        .client()
        .get(gw.url("/fwd/path?q=1"))
        .header("host", "api.example.test")
        .header("x-forwarded-for", "1.2.3.4")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let r = up.last_request().expect("upstream got the request");
    assert_eq!(r.path, "/fwd/path?q=1");
    assert_eq!(
        r.header_all("x-forwarded-for"),
        vec!["127.0.0.1"],
        "client-sent XFF from an untrusted peer must be replaced by the peer: {:?}",
        r.headers
    );
    assert_eq!(r.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(r.header_all("x-forwarded-host"), vec!["api.example.test"]);
    assert_eq!(
        r.header_all("forwarded"),
        vec![r#"for=127.0.0.1;proto=http;host="api.example.test""#]
    );
    assert_eq!(
        r.header_all("host"),
        vec!["api.example.test"],
        "Host passes unchanged"
    );
}

#[tokio::test]
async fn forwarding_headers_without_client_values() {
    let up = TestUpstream::start("fwd-plain").await;
    let gw = Gateway::start(&config(&up, "", "")).await;

    let resp = gw.client().get(gw.url("/plain")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let r = up.last_request().unwrap();
    let host = gw.addr().to_string();
    assert_eq!(r.header("host"), Some(host.as_str()));
    assert_eq!(r.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
    assert_eq!(r.header("x-forwarded-host"), Some(host.as_str()));
    assert_eq!(
        r.header("forwarded"),
        Some(format!(r#"for=127.0.0.1;proto=http;host="{host}""#).as_str())
    );
}

#[tokio::test]
async fn trusted_proxy_keeps_the_xff_chain_and_appends_the_peer() {
    let up = TestUpstream::start("fwd-trusted").await;
    let gw = Gateway::start(&config(&up, r#"trusted_proxies = ["127.0.0.0/8"]"#, "")).await;
    let client = gw.client();

    let resp = client
        .get(gw.url("/chain"))
        .header("x-forwarded-for", "203.0.113.7, 127.0.0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = up.last_request().unwrap();
    assert_eq!(
        r.header_all("x-forwarded-for"),
        vec!["203.0.113.7, 127.0.0.5, 127.0.0.1"],
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));

    // The client IP is the rightmost untrusted entry (SPEC §3 trusted_proxies): visible in the
    // access log.
    wait_until_msg(WAIT, "access log line for /chain", || async {
        gw.log_json()
            .iter()
            .any(|l| l["target"] == "tollgate::access" && l["path"] == "/chain")
    })
    .await;
    let line = gw
        .log_json()
        .into_iter()
        .find(|l| l["target"] == "tollgate::access" && l["path"] == "/chain")
        .unwrap();
    assert_eq!(line["client_ip"], "203.0.113.7", "{line}");

    // Without a previous chain, the peer alone.
    let resp = client.get(gw.url("/nochain")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let r = up.last_request().unwrap();
    assert_eq!(r.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
}

#[tokio::test]
async fn trusted_proxy_keeps_an_xff_chain_split_over_several_lines() {
    let up = TestUpstream::start("fwd-lines").await;
    let gw = Gateway::start(&config(&up, r#"trusted_proxies = ["127.0.0.0/8"]"#, "")).await;

    // RFC 9110 §5.3: several field lines of one list-valued field are one comma-joined list.
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send(
        "GET /lines HTTP/1.1\r\nHost: lines.test\r\n\
         X-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n",
    )
    .await
    .unwrap();
    let resp = conn.read_response().await;
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    let r = up.last_request().unwrap();
    let chain = r.header_all("x-forwarded-for").join(", ");
    assert_eq!(
        chain, "198.51.100.1, 203.0.113.9, 127.0.0.1",
        "the whole previous chain is kept: {:?}",
        r.headers
    );
}

// ---------------------------------------------------------------------------------------------
// Hop-by-hop headers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let up = TestUpstream::start("hop-in").await;
    let gw = Gateway::start(&config(&up, "", "")).await;

    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send(
        "GET /hop-in HTTP/1.1\r\n\
         Host: hop.test\r\n\
         Connection: X-Custom-Hop\r\n\
         X-Custom-Hop: secret-hop\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         Proxy-Connection: keep-alive\r\n\
         Upgrade: websocket\r\n\
         X-Normal: kept\r\n\
         \r\n",
    )
    .await
    .unwrap();
    let resp = conn.read_response().await;
    assert_eq!(resp.status, 200, "{}", resp.body_str());

    let r = up.last_request().expect("upstream got the request");
    assert_eq!(r.path, "/hop-in");
    for name in [
        "x-custom-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            r.header(name).is_none(),
            "hop-by-hop header {name} reached the upstream: {:?}",
            r.headers
        );
    }
    for v in r.header_all("connection") {
        assert!(
            !v.to_ascii_lowercase().contains("x-custom-hop") && !v.contains("upgrade"),
            "client Connection tokens reached the upstream: {v}"
        );
    }
    assert_eq!(r.header("x-normal"), Some("kept"));
    assert!(
        !String::from_utf8_lossy(&resp.body).contains("secret-hop"),
        "echo shows the stripped header"
    );
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_not_returned() {
    let up = TestUpstream::start("hop-out").await;
    let gw = Gateway::start(&config(&up, "", "")).await;

    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send("GET /hop HTTP/1.1\r\nHost: hop.test\r\n\r\n")
        .await
        .unwrap();
    let resp = conn.read_response().await;
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    assert_eq!(resp.header("x-upstream"), Some("hop-out"));
    assert_eq!(resp.header("x-kept"), Some("yes"), "{:?}", resp.headers);
    for name in ["close-me", "keep-alive", "proxy-authenticate", "trailer"] {
        assert!(
            resp.header(name).is_none(),
            "hop-by-hop response header {name} reached the client: {:?}",
            resp.headers
        );
    }
    for v in header_all(&resp.headers, "connection") {
        assert!(
            !v.to_ascii_lowercase().contains("close-me"),
            "upstream Connection tokens reached the client: {v}"
        );
    }
    assert_eq!(json(&resp.body)["path"], "/hop");

    // The client connection stays usable (the upstream's `Connection` did not leak into it).
    conn.send("GET /after-hop HTTP/1.1\r\nHost: hop.test\r\n\r\n")
        .await
        .unwrap();
    let again = conn.read_response().await;
    assert_eq!(again.status, 200);
    assert_eq!(json(&again.body)["path"], "/after-hop");
}

// ---------------------------------------------------------------------------------------------
// WebSocket and SSE
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn websocket_upgrade_passes_through_and_echoes_both_ways() {
    let up = TestUpstream::start("ws").await;
    let gw = Gateway::start(&config(&up, "", "")).await;

    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send(format!(
        "GET /ws HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ))
    .await
    .unwrap();
    let (status, headers) = conn.read_response_head().await;
    assert_eq!(status, 101, "{headers:?}");
    assert_eq!(
        header(&headers, "sec-websocket-accept"),
        Some(websocket_accept(key).as_str())
    );
    assert!(
        header(&headers, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{headers:?}"
    );
    assert!(
        header(&headers, "connection").is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
        "{headers:?}"
    );

    let r = up.last_request().unwrap();
    assert_eq!(r.path, "/ws");
    assert_eq!(r.header("upgrade"), Some("websocket"));
    assert!(r
        .header("connection")
        .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")));
    assert_eq!(r.header("sec-websocket-key"), Some(key));
    assert_eq!(r.header("sec-websocket-version"), Some("13"));

    // Bytes both ways, several rounds, including non-UTF-8.
    for msg in [
        b"hello over ws".to_vec(),
        vec![0u8, 1, 2, 0x81, 0xff, b'\r', b'\n'],
        vec![b'z'; 40_000],
    ] {
        conn.send(&msg).await.unwrap();
        let back = conn.read_exact(msg.len()).await;
        assert_eq!(back, msg);
    }

    // Closing our side ends the tunnel.
    conn.shutdown_write().await;
    assert!(
        conn.closed_within(WAIT).await,
        "tunnel not closed after FIN"
    );
}

#[tokio::test]
async fn sse_events_are_streamed_without_buffering() {
    let up = TestUpstream::start("sse").await;
    let gw = Gateway::start(&config(&up, "", "")).await;

    let resp = tokio::time::timeout(WAIT, gw.client().get(gw.url("/sse")).send())
        .await
        .expect("no response head while the upstream holds the stream open")
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut stream = resp.bytes_stream();

    // The upstream has sent the first event and now waits for release().
    wait_until(WAIT, || async { up.sse_waiting() == 1 }).await;

    let mut got = Vec::new();
    while !contains(&got, b"data: first\n\n") {
        let chunk = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("first event not delivered while the stream is open: buffered")
            .expect("stream ended before the first event")
            .expect("stream error");
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, b"data: first\n\n");
    assert_eq!(up.sse_waiting(), 1, "second event must not be released yet");

    up.release();
    while let Some(chunk) = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("stream did not finish after release")
    {
        got.extend_from_slice(&chunk.expect("stream error"));
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        "data: first\n\ndata: second\n\n"
    );
}

// ---------------------------------------------------------------------------------------------
// The header-reading front: header_timeout, 431
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn incomplete_request_head_gets_408_and_close() {
    let up = TestUpstream::start("slow-head").await;
    let gw = Gateway::start(&config(&up, r#"header_timeout = "500ms""#, "")).await;

    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send("GET /partial HTTP/1.1\r\nHost: slow.test\r\nX-Half: ")
        .await
        .unwrap();
    let resp = conn.read_response().await;
    assert_problem(&resp, 408);
    assert!(
        conn.closed_within(Duration::from_secs(5)).await,
        "connection left open after the 408"
    );
    assert_eq!(
        up.hits(),
        0,
        "a partial request must not reach the upstream"
    );
}

#[tokio::test]
async fn slowloris_is_cut_off() {
    let up = TestUpstream::start("slowloris").await;
    let gw = Gateway::start(&config(&up, r#"header_timeout = "500ms""#, "")).await;

    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send("GET /drip HTTP/1.1\r\nHost: drip.test\r\nX-Drip: ")
        .await
        .unwrap();
    // One byte every 100 ms (the read timeout paces the loop) for at most 10 s; a gateway
    // without a total header deadline would keep reading forever.
    let mut received = Vec::new();
    let mut cut_off = false;
    for _ in 0..100 {
        if let Ok(bytes) = tokio::time::timeout(Duration::from_millis(100), conn.read_some()).await
        {
            received = bytes;
            cut_off = true;
            break;
        }
        if conn.send(b"a").await.is_err() {
            cut_off = true;
            break;
        }
    }
    assert!(
        cut_off,
        "the gateway kept reading a dripping header for 10 s"
    );
    received.extend_from_slice(&conn.read_to_end().await);
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "expected a 408 before the close, got {text:?}"
    );
    assert!(text.contains("application/problem+json"), "{text}");
    assert_eq!(up.hits(), 0);
}

fn limits_config(up: &TestUpstream) -> String {
    config(up, "max_header_size = \"1KiB\"\nmax_headers = 10", "")
}

#[tokio::test]
async fn header_section_over_max_header_size_gets_431() {
    let up = TestUpstream::start("big-head").await;
    let gw = Gateway::start(&limits_config(&up)).await;

    // Under the limit: served.
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send(format!(
        "GET /ok HTTP/1.1\r\nHost: h.test\r\nX-Big: {}\r\n\r\n",
        "b".repeat(800)
    ))
    .await
    .unwrap();
    let resp = conn.read_response().await;
    assert_eq!(resp.status, 200, "{}", resp.body_str());

    // Over it: 431 problem, then the connection closes.
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send(format!(
        "GET /too-big HTTP/1.1\r\nHost: h.test\r\nX-Big: {}\r\n\r\n",
        "b".repeat(2000)
    ))
    .await
    .unwrap();
    let resp = conn.read_response().await;
    assert_problem(&resp, 431);
    assert!(conn.closed_within(Duration::from_secs(5)).await);

    // A head that never ends but keeps growing is refused too, not buffered.
    let mut conn = RawConn::connect(gw.addr()).await;
    let _ = conn
        .send(format!(
            "GET /endless HTTP/1.1\r\nHost: h.test\r\nX-Endless: {}",
            "e".repeat(4000)
        ))
        .await;
    let resp = conn.read_response().await;
    assert_problem(&resp, 431);

    let paths: Vec<String> = up.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/ok"]);
}

#[tokio::test]
async fn more_header_lines_than_max_headers_gets_431() {
    let up = TestUpstream::start("many-heads").await;
    let gw = Gateway::start(&limits_config(&up)).await;

    let head = |n: usize, path: &str| {
        let mut s = format!("GET {path} HTTP/1.1\r\nHost: h.test\r\n");
        for i in 1..n {
            s.push_str(&format!("X-H{i}: v\r\n"));
        }
        s.push_str("\r\n");
        s
    };

    // Exactly 10 header lines (Host + 9): served.
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send(head(10, "/ten")).await.unwrap();
    let resp = conn.read_response().await;
    assert_eq!(resp.status, 200, "{}", resp.body_str());

    // 11 header lines: 431.
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send(head(11, "/eleven")).await.unwrap();
    let resp = conn.read_response().await;
    assert_problem(&resp, 431);
    assert!(conn.closed_within(Duration::from_secs(5)).await);

    let paths: Vec<String> = up.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/ten"]);
}

// ---------------------------------------------------------------------------------------------
// Pipelining
// ---------------------------------------------------------------------------------------------

/// After the first response, the second pipelined request is either answered correctly or
/// the connection is closed without further bytes; anything else (garbage, a response to a
/// request nobody sent, silence on an open connection) fails.
async fn second_answer_or_clean_close(conn: &mut RawConn, path: &str) -> bool {
    match conn.try_read_response_head().await {
        Ok((status, headers)) => {
            assert_eq!(status, 200, "{headers:?}");
            let body = conn.read_body(&headers).await;
            assert_eq!(json(&body)["path"], path);
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            assert!(
                conn.buffered().is_empty(),
                "partial bytes before close: {e}"
            );
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            assert!(
                conn.buffered().is_empty(),
                "partial bytes before reset: {e}"
            );
            false
        }
        Err(e) => panic!("pipelined request neither answered nor the connection closed: {e}"),
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_or_closed_cleanly() {
    let up = TestUpstream::start("pipe").await;
    let gw = Gateway::start(&config(&up, "", "")).await;

    // GET then GET in one write.
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send(
        "GET /one HTTP/1.1\r\nHost: pipe.test\r\n\r\n\
         GET /two HTTP/1.1\r\nHost: pipe.test\r\n\r\n",
    )
    .await
    .unwrap();
    let first = conn.read_response().await;
    assert_eq!(first.status, 200);
    assert_eq!(json(&first.body)["path"], "/one");
    let answered = second_answer_or_clean_close(&mut conn, "/two").await;
    let paths: Vec<String> = up.requests().into_iter().map(|r| r.path).collect();
    if answered {
        assert_eq!(paths, vec!["/one", "/two"]);
    } else {
        assert_eq!(
            paths,
            vec!["/one"],
            "unanswered request reached the upstream"
        );
    }

    // POST with a body, then GET, in one write: the body must not be read as a request and
    // the GET must not be read as body.
    up.clear();
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send(
        "POST /p1 HTTP/1.1\r\nHost: pipe.test\r\nContent-Length: 5\r\n\r\nhello\
         GET /p2 HTTP/1.1\r\nHost: pipe.test\r\n\r\n",
    )
    .await
    .unwrap();
    let first = conn.read_response().await;
    assert_eq!(first.status, 200);
    let v = json(&first.body);
    assert_eq!(v["path"], "/p1");
    assert_eq!(v["body"], "hello");
    let answered = second_answer_or_clean_close(&mut conn, "/p2").await;
    let reqs = up.requests();
    assert_eq!(reqs[0].body, b"hello");
    let paths: Vec<String> = reqs.into_iter().map(|r| r.path).collect();
    if answered {
        assert_eq!(paths, vec!["/p1", "/p2"]);
    } else {
        assert_eq!(paths, vec!["/p1"]);
    }
}

#[tokio::test]
async fn error_response_on_a_keep_alive_connection_is_honest_about_closing() {
    let up = TestUpstream::start("keep").await;
    let dead = unused_addr();
    let tail = format!(
        r#"
[upstreams.gone]
targets = ["{dead}"]
connect_timeout = "1s"

[[routes]]
name = "dead"
upstream = "gone"
path = "/dead"
"#
    );
    let gw = Gateway::start(&config(&up, "", &tail)).await;

    // A 502 written by the gateway: if it says keep-alive, the connection must take the next
    // request; if the gateway means to close, it must say `Connection: close` (else a
    // keep-alive client's next request is reset).
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send("GET /dead/x HTTP/1.1\r\nHost: keep.test\r\n\r\n")
        .await
        .unwrap();
    let resp = conn.read_response().await;
    assert_problem(&resp, 502);
    let closing = header_all(&resp.headers, "connection")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("close"));
    if closing {
        assert!(conn.closed_within(Duration::from_secs(5)).await);
    } else {
        let _ = conn
            .send("GET /next HTTP/1.1\r\nHost: keep.test\r\n\r\n")
            .await;
        match conn.try_read_response_head().await {
            Ok((status, headers)) => {
                assert_eq!(status, 200, "{headers:?}");
                let body = conn.read_body(&headers).await;
                assert_eq!(json(&body)["path"], "/next");
            }
            Err(e) => panic!(
                "the 502 said {:?} but the next request on the connection failed: {e}",
                resp.header("connection")
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TLS listener
// ---------------------------------------------------------------------------------------------

fn pem_to_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("certificate PEM")
        .to_vec()
}

fn peer_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info with the peer certificate")
        .to_vec()
}

const TWO_CERTS: &str = r#"
[[server.tls]]
listen = "{TLS_LISTEN}"
cert = "a.pem"
key = "a.key"

[[server.tls]]
listen = "{TLS_LISTEN}"
cert = "b.pem"
key = "b.key"
"#;

#[tokio::test]
async fn tls_listener_picks_the_certificate_by_sni() {
    let up = TestUpstream::start("tls-sni").await;
    let certs = TestCerts::generate(&["a.test"]);
    let (b_cert, b_key) = certs.leaf(&["b.test"]);
    let gw = Gateway::builder(&config(&up, "", TWO_CERTS))
        .file("a.pem", &certs.cert_pem)
        .file("a.key", &certs.key_pem)
        .file("b.pem", &b_cert)
        .file("b.key", &b_key)
        .start()
        .await;

    let client = gw
        .https_client_builder(&certs.ca_pem, &["a.test", "b.test", "c.test"])
        .tls_info(true)
        .build()
        .unwrap();
    let port = gw.tls_addr().port();

    for (name, cert) in [("a.test", &certs.cert_pem), ("b.test", &b_cert)] {
        let resp = client
            .get(gw.https_url(name, "/sni"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("https://{name}: {e:?}"));
        assert_eq!(resp.status(), 200, "{name}");
        assert_eq!(peer_cert(&resp), pem_to_der(cert), "certificate for {name}");
        let r = up.last_request().unwrap();
        let host = format!("{name}:{port}");
        assert_eq!(r.header("host"), Some(host.as_str()));
        assert_eq!(r.header("x-forwarded-proto"), Some("https"));
        assert_eq!(r.header("x-forwarded-host"), Some(host.as_str()));
        assert_eq!(
            r.header("forwarded"),
            Some(format!(r#"for=127.0.0.1;proto=https;host="{host}""#).as_str())
        );
    }

    // A name no certificate covers gets a certificate that fails hostname verification.
    let err = client
        .get(gw.https_url("c.test", "/sni"))
        .send()
        .await
        .expect_err("c.test must not verify");
    assert!(err.is_connect() || err.is_request(), "{err:?}");

    // The plain listener still speaks plain HTTP.
    let resp = gw.client().get(gw.url("/plain")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        up.last_request().unwrap().header("x-forwarded-proto"),
        Some("http")
    );
}

#[tokio::test]
async fn tls_listener_negotiates_h2() {
    let up = TestUpstream::start("tls-h2").await;
    let certs = TestCerts::generate(&["a.test", "b.test"]);
    let tail = r#"
[[server.tls]]
listen = "{TLS_LISTEN}"
cert = "a.pem"
key = "a.key"
"#;
    let gw = Gateway::builder(&config(&up, "", tail))
        .file("a.pem", &certs.cert_pem)
        .file("a.key", &certs.key_pem)
        .start()
        .await;
    let port = gw.tls_addr().port();

    // ALPN offers h2 and http/1.1: the gateway picks h2.
    let alpn = gw.https_client(&certs.ca_pem, &["a.test", "b.test"]);
    let resp = alpn
        .get(gw.https_url("b.test", "/h2?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["path"], "/h2?x=1");

    // HTTP/2 only (prior knowledge, still ALPN h2 over TLS).
    let h2 = gw
        .https_client_builder(&certs.ca_pem, &["a.test"])
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(gw.https_url("a.test", "/h2-post"))
        .body("over h2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let r = up.last_request().unwrap();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/h2-post");
    assert_eq!(r.body, b"over h2");
    // The upstream speaks HTTP/1.1 and needs the request's authority as Host.
    let host = format!("a.test:{port}");
    assert_eq!(r.header("host"), Some(host.as_str()), "{:?}", r.headers);
    assert_eq!(r.header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        r.header("x-forwarded-host"),
        Some(host.as_str()),
        "over h2 the client's host is the :authority: {:?}",
        r.headers
    );
    assert_eq!(
        r.header("forwarded"),
        Some(format!(r#"for=127.0.0.1;proto=https;host="{host}""#).as_str())
    );
}

#[tokio::test]
async fn tls_listener_with_client_ca_requires_a_client_certificate() {
    let up = TestUpstream::start("mtls").await;
    let certs = TestCerts::generate(&["a.test"]);
    let tail = r#"
[[server.tls]]
listen = "{TLS_LISTEN}"
cert = "a.pem"
key = "a.key"
client_ca = "clients-ca.pem"
"#;
    let gw = Gateway::builder(&config(&up, "", tail))
        .file("a.pem", &certs.cert_pem)
        .file("a.key", &certs.key_pem)
        .file("clients-ca.pem", &certs.ca_pem)
        .start()
        .await;

    // No client certificate: refused.
    let bare = gw.https_client(&certs.ca_pem, &["a.test"]);
    let res = bare.get(gw.https_url("a.test", "/m")).send().await;
    assert!(
        res.is_err(),
        "request without a client certificate succeeded: {res:?}"
    );

    // A certificate from another CA: refused.
    let other = TestCerts::generate(&["other.test"]);
    let (oc, ok) = other.client_cert("intruder");
    let wrong = gw
        .https_client_builder(&certs.ca_pem, &["a.test"])
        .identity(identity(&oc, &ok))
        .build()
        .unwrap();
    let res = wrong.get(gw.https_url("a.test", "/m")).send().await;
    assert!(
        res.is_err(),
        "request with a foreign client certificate succeeded: {res:?}"
    );
    assert_eq!(up.hits(), 0);

    // A certificate from the configured CA: served.
    let (cc, ck) = certs.client_cert("partner-1");
    let good = gw
        .https_client_builder(&certs.ca_pem, &["a.test"])
        .identity(identity(&cc, &ck))
        .build()
        .unwrap();
    let resp = good.get(gw.https_url("a.test", "/m")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.hits(), 1);
    assert_eq!(up.last_request().unwrap().path, "/m");
}
