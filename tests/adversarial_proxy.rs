//! The proxy core under attack and under misbehaving upstreams (issue 12, items 5, 11,
//! 17, 20, 23, 29 and 37): stalled request bodies, stray bytes on pooled upstream
//! connections, unsolicited `101`, chunked bodies that break mid-stream,
//! `Expect: 100-continue`, cleartext HTTP/2 and upstreams that reset a reused connection.
//!
//! Upstreams that misbehave on purpose are tiny scripted TCP servers in this file
//! ([`raw_upstream`]); clients that an HTTP library would normalise are raw sockets.
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;
use futures_util::StreamExt;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

/// A scripted upstream: every accepted connection is handed to `serve`, with its index
/// (0 for the first connection).
async fn raw_upstream<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(serve(s, n));
            n += 1;
        }
    });
    addr
}

/// Reads one request (head, and a Content-Length body) from `s`, keeping what follows in
/// `buf`. Returns the head as text, or None when the connection closed first.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let len = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..end + 4 + len);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The request target of a request head.
fn target(head: &str) -> String {
    head.split(' ').nth(1).unwrap_or("").to_string()
}

fn ok_response(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
        body.len()
    )
}

fn config(up: SocketAddr, server_extra: &str, upstream_extra: &str, route_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
{server_extra}

[upstreams.up]
targets = ["{up}"]
{upstream_extra}

[[routes]]
name = "all"
upstream = "up"
path = "/"
{route_extra}
"#
    )
}

// ---------------------------------------------------------------------------------------
// Item 5: a stalled request body is the client's fault: 408, never an upstream failure.

/// Stalled uploads, whichever timer fires first (the gateway's `body_timeout`, or the
/// upstream's `read_timeout` while the upstream is still waiting for the body), get 408,
/// and neither a `consecutive_failures = 2` breaker nor
/// `tollgate_upstream_failures_total` counts them: the next request still reaches the
/// upstream.
/// A client that uploads slowly (above `min_body_rate`) is not a slow upstream: the
/// upstream's time for `slow_call` and the duration histogram starts once the body
/// arrived, so slow uploads never open a breaker.
#[tokio::test]
async fn slow_uploads_are_not_slow_upstream_calls() {
    let up = TestUpstream::start("up").await;
    let cfg = config(up.addr(), "min_body_rate = \"0B\"", "", "plugins = [\"breaker\"]")
        + "\n[plugins.breaker]\ntype = \"circuit_breaker\"\nconsecutive_failures = 2\nslow_call = \"300ms\"\nopen_for = \"1m\"\n";
    let gw = Gateway::start(&cfg).await;
    for i in 0..3 {
        let mut conn = RawConn::connect(gw.addr()).await;
        conn.send("POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 9\r\n\r\nabc")
            .await
            .unwrap();
        // The client's own pace: the rest of the body comes 500 ms later.
        tokio::time::sleep(Duration::from_millis(250)).await;
        conn.send("def").await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        conn.send("ghi").await.unwrap();
        let r = conn.read_response().await;
        assert_eq!(r.status, 200, "upload {i}: {}", r.body_str());
    }
    let r = gw.client().get(gw.url("/after")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the breaker stayed closed");
    assert_eq!(
        gw.metric(r#"tollgate_circuit_state{upstream="up"}"#).await,
        Some(0.0)
    );
}

#[tokio::test]
async fn stalled_uploads_get_408_and_never_open_the_breaker() {
    for (what, body_timeout, read_timeout) in [
        ("upstream read_timeout fires first", "2s", "500ms"),
        ("body_timeout fires first", "500ms", "5s"),
    ] {
        let up = TestUpstream::start("up").await;
        let cfg = config(
            up.addr(),
            &format!("body_timeout = \"{body_timeout}\"\nmin_body_rate = \"0B\""),
            &format!("read_timeout = \"{read_timeout}\""),
            "plugins = [\"breaker\"]",
        ) + "\n[plugins.breaker]\ntype = \"circuit_breaker\"\nconsecutive_failures = 2\nopen_for = \"1m\"\n";
        let gw = Gateway::start(&cfg).await;

        for (i, request) in [
            "POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\nonly-part",
            "POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            "PUT /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\n\r\n",
        ]
        .iter()
        .enumerate()
        {
            let mut conn = RawConn::connect(gw.addr()).await;
            conn.send(request).await.unwrap();
            let r = conn.read_response().await;
            assert_problem(&r, 408, &format!("{what}: stalled upload {i}"));
        }
        let r = gw.client().get(gw.url("/after")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{what}: the breaker stayed closed");
        assert_eq!(
            up.last_request().map(|r| r.path_only().to_string()),
            Some("/after".into()),
            "{what}"
        );
        assert_eq!(
            gw.metric_sum("tollgate_upstream_failures_total").await,
            0.0,
            "{what}: a stalled client is not an upstream failure"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Item 11: a pooled connection holding unread bytes is never reused.

/// The upstream answers, then (after the answer reached the client) sends stray bytes on
/// the idle keep-alive connection: a copy of the answer, or garbage. The next request,
/// from another client or from the same client on its keep-alive connection, must get
/// its own response, never the stray copy of the previous one: Pingora tests a pooled
/// connection for unread bytes while it is idle and again when it is taken.
/// The window no readiness check can close: the stray bytes arrive after the pooled
/// connection was taken for the next request, before that request's own response. The
/// upstream here plays it deterministically: on a connection that already answered
/// `/first`, it sends a stray response in front of its answer to the next request.
/// Another client's request must never land there: upstream connections are reused
/// only by the client connection that opened them (unless `share_connections = true`,
/// where the same upstream connection serves both clients).
#[tokio::test]
async fn stray_bytes_in_the_reuse_window_never_reach_another_client() {
    for share in [false, true] {
        // (upstream connection number, path) of every request the upstream read.
        let seen = Arc::new(std::sync::Mutex::new(Vec::<(usize, String)>::new()));
        let seen2 = seen.clone();
        let up = raw_upstream(move |mut s, n| {
            let seen = seen2.clone();
            async move {
                let mut buf = Vec::new();
                let mut answered_first = false;
                while let Some(head) = read_request(&mut s, &mut buf).await {
                    let path = target(&head);
                    seen.lock().unwrap().push((n, path.clone()));
                    if answered_first {
                        let stray = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nLEAKED";
                        if s.write_all(stray.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    if s.write_all(ok_response(&path).as_bytes()).await.is_err() {
                        return;
                    }
                    answered_first |= path == "/first";
                }
            }
        })
        .await;
        let extra = if share {
            "share_connections = true"
        } else {
            ""
        };
        let gw = Gateway::start(&config(up, "", extra, "")).await;

        let mut alice = RawConn::connect(gw.addr()).await;
        alice
            .send("GET /first HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .unwrap();
        let r = alice.read_response().await;
        assert_eq!(r.body_str(), "/first", "share={share}");

        let conn_of = |p: &str| {
            let seen = seen.lock().unwrap();
            seen.iter().find(|(_, q)| q == p).map(|(n, _)| *n)
        };
        let first = conn_of("/first");
        if share {
            // The shared pool hands an idle upstream connection opened for one
            // client to another client: Alice's, or one a previous Bob opened
            // (which one the pool hands out first depends on when Alice's went
            // back to it, and on which worker thread each request runs).
            let mut shared = false;
            let mut opened = vec![first];
            for i in 0..20 {
                let path = format!("/other-{i}");
                let mut bob = RawConn::connect(gw.addr()).await;
                bob.send(format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n"))
                    .await
                    .unwrap();
                let _ = bob.read_response().await;
                let conn = conn_of(&path);
                if opened.contains(&conn) {
                    shared = true;
                    break;
                }
                opened.push(conn);
            }
            assert!(
                shared,
                "share_connections = true never reused the connection"
            );
        } else {
            for i in 0..5 {
                let path = format!("/other-{i}");
                let mut bob = RawConn::connect(gw.addr()).await;
                bob.send(format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n"))
                    .await
                    .unwrap();
                let r = bob.read_response().await;
                assert_eq!(r.status, 200);
                assert_eq!(r.body_str(), path, "another client got its own response");
                assert_ne!(conn_of(&path), first);
            }
            // Alice's keep-alive connection still reuses its own upstream connection.
            alice
                .send("GET /third HTTP/1.1\r\nHost: a.test\r\n\r\n")
                .await
                .unwrap();
            let r = alice.read_response().await;
            assert_eq!(
                conn_of("/third"),
                first,
                "Alice's own connection was reused"
            );
            // (and the upstream's stray response reaches only Alice, who caused it)
            assert_eq!(r.body_str(), "LEAKED");
        }
    }
}

/// A client connection that closes after its response never reuses its upstream
/// connection, so the upstream is asked to close it too rather than leave it idle.
#[tokio::test]
async fn a_closing_client_connection_closes_its_upstream_connection() {
    let up = TestUpstream::start("up").await;
    let gw = Gateway::start(&config(up.addr(), "", "", "")).await;
    let r = raw_request(
        gw.addr(),
        b"GET /once HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(String::from_utf8_lossy(&r).starts_with("HTTP/1.1 200"));
    let seen = up.last_request().expect("forwarded");
    assert_eq!(seen.header("connection"), Some("close"));
    // A keep-alive client's request keeps its upstream connection open.
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send("GET /kept HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(conn.read_response().await.status, 200);
    let seen = up.last_request().expect("forwarded");
    assert_eq!(seen.path_only(), "/kept");
    assert_eq!(seen.header("connection"), None);
}

#[tokio::test]
async fn stray_bytes_after_a_response_never_reach_the_next_request() {
    for (what, stray) in [
        ("a copy of the response", None),
        (
            "another response",
            Some("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nLEAKED"),
        ),
        ("garbage", Some("\0\0garbage\r\n")),
    ] {
        let (stray_tx, mut stray_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let stray_tx = Arc::new(stray_tx);
        let up = raw_upstream(move |mut s, _| {
            let stray_tx = stray_tx.clone();
            async move {
                let mut buf = Vec::new();
                while let Some(head) = read_request(&mut s, &mut buf).await {
                    let answer = ok_response(&target(&head));
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    if target(&head).starts_with("/first") {
                        // Stray bytes shortly after the response.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = s.write_all(stray.unwrap_or(&answer).as_bytes()).await;
                        let _ = stray_tx.send(());
                    }
                }
            }
        })
        .await;
        let gw = Gateway::start(&config(up, "", "", "")).await;

        // Another client next.
        let r = raw_request(
            gw.addr(),
            b"GET /first HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        let text = String::from_utf8_lossy(&r);
        assert!(text.ends_with("\r\n\r\n/first"), "{what}: {text}");
        tokio::time::timeout(WAIT, stray_rx.recv())
            .await
            .expect("the upstream sent its stray bytes");
        for path in ["/second", "/third"] {
            let mut conn = RawConn::connect(gw.addr()).await;
            conn.send(format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n"))
                .await
                .unwrap();
            let r = conn.read_response().await;
            assert_eq!(r.status, 200, "{what}: {path}");
            assert_eq!(
                r.body_str(),
                path,
                "{what}: the client got its own response"
            );
        }

        // The same client, on its keep-alive connection.
        let mut conn = RawConn::connect(gw.addr()).await;
        conn.send("GET /first-again HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(conn.read_response().await.body_str(), "/first-again");
        tokio::time::timeout(WAIT, stray_rx.recv())
            .await
            .expect("the upstream sent its stray bytes");
        conn.send("GET /fourth HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .unwrap();
        let r = conn.read_response().await;
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(
            r.body_str(),
            "/fourth",
            "{what}: same client, its own response"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Item 17: an unsolicited 101 is a broken upstream.

#[tokio::test]
async fn unsolicited_101_gives_502() {
    let up = raw_upstream(|mut s, _| async move {
        let mut buf = Vec::new();
        if read_request(&mut s, &mut buf).await.is_some() {
            let _ = s
                .write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nRAW-TUNNEL-BYTES",
                )
                .await;
            // Keep the "tunnel" open for a while.
            let mut sink = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut sink)).await;
        }
    })
    .await;
    let gw = Gateway::start(&config(up, "h2c = true", "", "")).await;
    for request in [
        "GET /plain HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "POST /plain HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\n\r\nhi",
        // Connection: upgrade without Upgrade is not an upgrade request either.
        "GET /plain HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\n\r\n",
    ] {
        let mut conn = RawConn::connect(gw.addr()).await;
        conn.send(request).await.unwrap();
        let r = conn.read_response().await;
        assert_problem(&r, 502, request);
        assert!(!r.body_str().contains("RAW-TUNNEL"), "{}", r.body_str());
        assert!(
            conn.closed_within(WAIT).await,
            "no tunnel after a refused 101"
        );
    }
    // Over HTTP/2 too (no upgrade exists there).
    let r = h2c_client().get(gw.url("/plain")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

/// A WebSocket upgrade answered `101` to another protocol, or with no `Upgrade` at all,
/// is not the switch the client asked for: 502, no tunnel.
#[tokio::test]
async fn a_101_to_another_protocol_than_asked_gives_502() {
    for upgrade in ["Upgrade: h2c\r\n", ""] {
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\n{upgrade}Connection: upgrade\r\n\r\nRAW-TUNNEL-BYTES"
        );
        let up = raw_upstream(move |mut s, _| {
            let answer = answer.clone();
            async move {
                let mut buf = Vec::new();
                if read_request(&mut s, &mut buf).await.is_some() {
                    let _ = s.write_all(answer.as_bytes()).await;
                    let mut sink = [0u8; 1024];
                    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut sink)).await;
                }
            }
        })
        .await;
        let gw = Gateway::start(&config(up, "", "", "")).await;
        let mut conn = RawConn::connect(gw.addr()).await;
        conn.send(
            "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        let r = conn.read_response().await;
        assert_problem(&r, 502, upgrade);
        assert!(!r.body_str().contains("RAW-TUNNEL"), "{}", r.body_str());
    }
}

// ---------------------------------------------------------------------------------------
// Item 20: a chunked body that breaks mid-stream gets the promised 400.

#[tokio::test]
async fn chunked_body_broken_mid_stream_gets_400() {
    // The upstream waits for the whole request; it never answers a broken one.
    let up = TestUpstream::start("up").await;
    let gw = Gateway::start(&config(up.addr(), "", "", "")).await;
    for (what, rest) in [
        ("bad chunk size", "zz\r\nhello\r\n0\r\n\r\n"),
        (
            "missing CRLF after data",
            "5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n",
        ),
        ("bare LF after size", "3\nabc\r\n0\r\n\r\n"),
        ("chunk extension garbage", "3;\x01\r\nabc\r\n0\r\n\r\n"),
        ("oversized size", "fffffffffffffffffffff\r\n"),
    ] {
        let conns = up.connections();
        let mut conn = RawConn::connect(gw.addr()).await;
        // The head and a first good chunk, then (once the request is on its way) the break.
        conn.send("POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ngood\r\n")
            .await
            .unwrap();
        let hits = up.hits();
        wait_until(WAIT, || async { up.connections() > conns }).await;
        let _ = conn.send(rest).await;
        let r = conn.read_response().await;
        assert_problem(&r, 400, what);
        assert!(conn.closed_within(WAIT).await, "{what}: closed after");
        assert_eq!(up.hits(), hits, "{what}: no complete request upstream");
    }
}

/// A client that closes its sending side before the body it announced is complete (a
/// half-close) gets a 400 problem it can still read, and the upstream never gets the
/// request as complete.
#[tokio::test]
async fn a_body_cut_short_by_a_half_close_gets_400() {
    let up = TestUpstream::start("up").await;
    let gw = Gateway::start(&config(up.addr(), "", "", "")).await;
    for (what, request) in [
        (
            "content-length",
            "POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\n\r\nabc",
        ),
        (
            "chunked",
            "POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        ),
    ] {
        let mut conn = RawConn::connect(gw.addr()).await;
        conn.send(request).await.unwrap();
        conn.shutdown_write().await;
        let r = conn.read_response().await;
        assert_problem(&r, 400, what);
    }
    assert_eq!(up.hits(), 0, "no complete request upstream");
}

/// The plugins that read the whole body before the upstream is contacted
/// (`webhook_signature`, `idempotency`) answer a broken chunked body with the same
/// 400 problem, and nothing reaches the upstream.
#[tokio::test]
async fn chunked_body_broken_on_a_body_reading_route_gets_400() {
    let up = TestUpstream::start("up").await;
    let gw = Gateway::start(&expect_config(up.addr())).await;
    for (path, extra) in [
        ("/hooks", "X-Hub-Signature-256: sha256=00\r\n"),
        ("/pay", "Idempotency-Key: broken-1\r\n"),
    ] {
        let mut conn = RawConn::connect(gw.addr()).await;
        conn.send(&format!(
            "POST {path} HTTP/1.1\r\nHost: a.test\r\n{extra}Transfer-Encoding: chunked\r\n\r\n4\r\ngood\r\nzz\r\n"
        ))
        .await
        .unwrap();
        let r = conn.read_response().await;
        assert_problem(&r, 400, path);
        assert!(conn.closed_within(WAIT).await, "{path}: closed after");
    }
    assert_eq!(up.hits(), 0, "nothing reached the upstream");
}

// ---------------------------------------------------------------------------------------
// Item 23: Expect: 100-continue.

fn github_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

fn expect_config(up: SocketAddr) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
max_request_body = "1KiB"

[plugins.gh]
type = "webhook_signature"
scheme = "github"
secrets = ["gh-secret"]

[plugins.idem]
type = "idempotency"
ttl = "1h"

[plugins.keys]
type = "api_key"
keys = [{{ consumer = "acme", key_sha256 = "afacab3575137afa4e00d9cbcafcb14c9ae25f779d964eb0ea5b2c4eb5dfd163" }}]

[upstreams.up]
targets = ["{up}"]

[[routes]]
name = "hooks"
upstream = "up"
path = "/hooks"
plugins = ["gh"]

[[routes]]
name = "pay"
upstream = "up"
path = "/pay"
plugins = ["idem"]

[[routes]]
name = "private"
upstream = "up"
path = "/private"
plugins = ["keys"]

[[routes]]
name = "plain"
upstream = "up"
path = "/"
"#
    )
}

/// Sends `head` (with `Expect: 100-continue`), waits for the gateway's `100 Continue`,
/// then sends `body`; returns the final response.
async fn expect_continue(gw: &Gateway, head: &str, body: &[u8]) -> RawResponse {
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send(head).await.unwrap();
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), conn.read_response_head())
        .await
        .unwrap_or_else(|_| panic!("no 100 Continue within 5 s for {head:?}"));
    assert_eq!(status, 100, "{head:?}");
    conn.send(body).await.unwrap();
    conn.read_response().await
}

/// The gateway answers `Expect: 100-continue` itself once the plugins accepted the head
/// (also where a plugin reads the whole body in its request hook, and where the upstream
/// never sends 100); the upstream never sees `Expect` and the client gets one 100 only.
#[tokio::test]
async fn expect_100_continue_is_answered_by_the_gateway() {
    let up = TestUpstream::start("up").await;
    let gw = Gateway::start(&expect_config(up.addr())).await;

    let body = br#"{"event":"paid"}"#;
    let sig = github_signature("gh-secret", body);
    let cases = [
        (
            "webhook_signature",
            format!(
                "POST /hooks HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nX-Hub-Signature-256: {sig}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ),
        ),
        (
            "idempotency",
            format!(
                "POST /pay HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nIdempotency-Key: k-1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ),
        ),
        (
            "plain route",
            format!(
                "PUT /things/1 HTTP/1.1\r\nHost: a.test\r\nExpect: 100-Continue\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ),
        ),
        (
            "api_key accepted",
            format!(
                "POST /private HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nX-API-Key: acme-key\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ),
        ),
    ];
    for (what, head) in &cases {
        let r = expect_continue(&gw, head, body).await;
        assert_eq!(r.status, 200, "{what}: {}", r.body_str());
        let got = up.last_request().expect("the upstream got the request");
        assert_eq!(got.body, body.to_vec(), "{what}");
        assert_eq!(
            got.header("expect"),
            None,
            "{what}: Expect is not forwarded"
        );
    }
    // Chunked, too.
    let r = expect_continue(
        &gw,
        "POST /things HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last_request().unwrap().body, b"hello".to_vec());
}

/// An upstream that sends its own `100 Continue` anyway (it never sees `Expect`): the
/// client still gets exactly one 100, then the final response.
#[tokio::test]
async fn expect_100_continue_is_sent_once_even_when_the_upstream_sends_100() {
    let up = raw_upstream(|mut s, _| async move {
        let mut buf = Vec::new();
        while let Some(head) = read_request(&mut s, &mut buf).await {
            assert!(!head.to_ascii_lowercase().contains("expect:"), "{head}");
            let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
            let _ = s.write_all(ok_response("done").as_bytes()).await;
        }
    })
    .await;
    let gw = Gateway::start(&config(up, "", "", "")).await;
    let r = expect_continue(
        &gw,
        "POST /x HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        b"body",
    )
    .await;
    assert_eq!(r.status, 200, "one 100 only, then the final response");
    assert_eq!(r.body_str(), "done");
}

/// A request refused on its head gets the final status and no 100.
#[tokio::test]
async fn expect_100_continue_refused_head_gets_final_status_without_100() {
    let up = TestUpstream::start("up").await;
    let gw = Gateway::start(&expect_config(up.addr())).await;
    for (what, head, status) in [
        (
            "missing API key",
            "POST /private HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
            401,
        ),
        (
            "Content-Length over max_request_body",
            "POST /things HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
            413,
        ),
        (
            "no route method",
            "POST /private HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nX-API-Key: wrong\r\nContent-Length: 10\r\n\r\n",
            401,
        ),
    ] {
        let mut conn = RawConn::connect(gw.addr()).await;
        conn.send(head).await.unwrap();
        let r = conn.read_response().await;
        assert_problem(&r, status, what);
    }
    assert_eq!(up.hits(), 0);
}

// ---------------------------------------------------------------------------------------
// Item 29: cleartext HTTP/2 with prior knowledge.

fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .unwrap()
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served_when_enabled() {
    let up = TestUpstream::start("up").await;
    let gw = Gateway::start(&config(up.addr(), "h2c = true", "", "")).await;
    let c = h2c_client();
    for i in 0..3 {
        let r = c
            .post(gw.url(&format!("/over-h2c/{i}")))
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        let got = up.last_request().unwrap();
        assert_eq!(got.path_only(), format!("/over-h2c/{i}"));
        assert_eq!(got.body, b"payload".to_vec());
    }
    // HTTP/1.1 still works on the same listener.
    let r = gw.client().get(gw.url("/h1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    // A bad route over h2c gets the usual problem.
    let r = c.get(gw.url("/%zz")).send().await.unwrap();
    assert_eq!(r.status(), 400);
}

/// A webhook whose body stalls gets 408 even when its signature header is missing or
/// bad: the stall is what ended the request, and the client should resend, not re-sign.
#[tokio::test]
async fn a_stalled_webhook_body_gets_408_whatever_its_headers() {
    let up = TestUpstream::start("up").await;
    let cfg = config(
        up.addr(),
        "body_timeout = \"500ms\"\nmin_body_rate = \"0B\"",
        "",
        "plugins = [\"gh\"]",
    )
        + "\n[plugins.gh]\ntype = \"webhook_signature\"\nscheme = \"github\"\nsecrets = [\"s\"]\n";
    let gw = Gateway::start(&cfg).await;
    for extra in ["", "X-Hub-Signature-256: sha256=00\r\n"] {
        let mut conn = RawConn::connect(gw.addr()).await;
        conn.send(format!(
            "POST /hooks HTTP/1.1\r\nHost: a.test\r\n{extra}Content-Length: 10\r\n\r\nabc"
        ))
        .await
        .unwrap();
        let r = conn.read_response().await;
        assert_problem(&r, 408, extra);
    }
    assert_eq!(up.hits(), 0);
}

/// Over HTTP/2 (where Pingora applies no read timeout to a request body), a body that
/// stalls on a route whose plugin reads it (`idempotency`) gets 408 after
/// `body_timeout`, not after `request_timeout`.
#[tokio::test]
async fn a_stalled_http2_body_on_a_body_reading_route_gets_408() {
    let up = TestUpstream::start("up").await;
    let cfg = config(
        up.addr(),
        "h2c = true\nbody_timeout = \"500ms\"\nrequest_timeout = \"30s\"",
        "",
        "plugins = [\"idem\"]",
    ) + "\n[plugins.idem]\ntype = \"idempotency\"\n";
    let gw = Gateway::start(&cfg).await;
    let first =
        futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"abc"))]);
    let stalled = first.chain(futures_util::stream::pending());
    let started = Instant::now();
    let r = h2c_client()
        .post(gw.url("/pay"))
        .header("idempotency-key", "h2-stall-1")
        .header("content-length", "100")
        .body(reqwest::Body::wrap_stream(stalled))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 408);
    // Well before request_timeout (30 s): body_timeout ended it.
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(up.hits(), 0);
}

/// Cookie crumbs of an HTTP/2 client reach an HTTP/1.1 upstream as one `Cookie` line.
#[tokio::test]
async fn http2_cookie_crumbs_reach_the_upstream_as_one_line() {
    let up = TestUpstream::start("up").await;
    let gw = Gateway::start(&config(up.addr(), "h2c = true", "", "")).await;
    let r = h2c_client()
        .get(gw.url("/crumbs"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let got = up.last_request().unwrap();
    assert_eq!(got.header_all("cookie"), vec!["a=1; b=2"]);
}

/// Off by default: the HTTP/2 client gets a clear refusal (GOAWAY `HTTP_1_1_REQUIRED`, with
/// a reason naming h2c), not an HTTP/1 answer it cannot read, and nothing goes upstream.
#[tokio::test]
async fn h2c_prior_knowledge_is_refused_clearly_when_disabled() {
    let up = TestUpstream::start("up").await;
    let gw = Gateway::start(&config(up.addr(), "", "", "")).await;
    let err = h2c_client()
        .get(gw.url("/x"))
        .send()
        .await
        .expect_err("h2c is off");
    let text = format!("{err:?}");
    assert!(
        text.contains("HTTP_1_1_REQUIRED") || text.contains("HTTP/1.1 required"),
        "{text}"
    );

    // On the wire: a SETTINGS frame, then GOAWAY(HTTP_1_1_REQUIRED) whose debug data says why.
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let bytes = conn.read_to_end().await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.starts_with("HTTP/1"), "{text:?}");
    assert!(text.contains("h2c"), "{text:?}");
    let mut i = 0;
    let mut goaway = None;
    while i + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[i], bytes[i + 1], bytes[i + 2]]) as usize;
        let ty = bytes[i + 3];
        if ty == 7 && i + 9 + 8 <= bytes.len() {
            let p = &bytes[i + 9..];
            goaway = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        i += 9 + len;
    }
    assert_eq!(
        goaway,
        Some(0xd),
        "GOAWAY with HTTP_1_1_REQUIRED: {bytes:?}"
    );
    assert_eq!(up.hits(), 0);
}

// ---------------------------------------------------------------------------------------
// Item 37: an upstream that resets a reused pooled connection.

/// The upstream serves the first request of each connection, then resets the connection
/// when the next request arrives on it. A non-idempotent request gets a 502 problem (not a
/// silent close); an idempotent one is retried once on a fresh connection and succeeds.
#[tokio::test]
async fn reset_on_a_reused_pooled_connection_gets_502_or_a_retry() {
    let resets = Arc::new(AtomicUsize::new(0));
    let r2 = resets.clone();
    let up = raw_upstream(move |mut s, _| {
        let resets = r2.clone();
        async move {
            let mut buf = Vec::new();
            let Some(head) = read_request(&mut s, &mut buf).await else {
                return;
            };
            if s.write_all(ok_response(&target(&head)).as_bytes())
                .await
                .is_err()
            {
                return;
            }
            if read_request(&mut s, &mut buf).await.is_some() {
                resets.fetch_add(1, Ordering::SeqCst);
                // RST instead of FIN (a zero linger does not block on drop).
                #[allow(deprecated)]
                let _ = s.set_linger(Some(Duration::ZERO));
                drop(s);
            }
        }
    })
    .await;
    let gw = Gateway::start(&config(up, "", "", "")).await;

    for (method, idempotent) in [("POST", false), ("GET", true), ("DELETE", true)] {
        // Until the request lands on a pooled connection: a request served on a fresh
        // connection leaves that connection in the pool for the next request of the
        // same client connection (upstream connections are not shared between clients).
        let mut tries = 0;
        let mut conn = RawConn::connect(gw.addr()).await;
        let head = loop {
            tries += 1;
            assert!(tries < 50, "{method}: never sent on a pooled connection");
            let before = resets.load(Ordering::SeqCst);
            conn.send(format!(
                "{method} /target HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\n\r\nhi"
            ))
            .await
            .unwrap();
            let head = conn
                .try_read_response_head()
                .await
                .unwrap_or_else(|e| panic!("{method}: no response: {e}"));
            if resets.load(Ordering::SeqCst) > before {
                break head;
            }
            assert_eq!(head.0, 200, "{method}: served on a fresh connection");
            assert_eq!(conn.read_body(&head.1).await, b"/target".to_vec());
        };
        if idempotent {
            assert_eq!(head.0, 200, "{method}: retried once on a fresh connection");
            assert_eq!(conn.read_body(&head.1).await, b"/target".to_vec());
        } else {
            assert_eq!(head.0, 502, "{method}");
            assert_eq!(
                header(&head.1, "content-type"),
                Some("application/problem+json")
            );
        }
    }
}
