//! Upstream behaviour through a real gateway and real upstream servers: load balancing
//! (round robin, weighted, random, consistent hash), keep-alive reuse, retries, active
//! health checks, failures and timeouts, the request body limit, and TLS / mTLS to upstreams.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);

/// The `[server]` table every gateway in this file starts with (no trailing settings).
const SERVER: &str = r#"
[server]
listen = "{LISTEN}"
admin_listen = "{ADMIN}"
"#;

/// A config with the default `[server]` table, then `rest`.
fn config(rest: &str) -> String {
    format!("{SERVER}{rest}")
}

/// A route `name` on path prefix `path` to upstream `upstream`.
fn route(name: &str, path: &str, upstream: &str) -> String {
    format!(
        r#"
[[routes]]
name = "{name}"
upstream = "{upstream}"
path = "{path}"
"#
    )
}

/// A route `name` on path prefix `path` to upstream `upstream`, with `path` stripped.
fn route_stripped(name: &str, path: &str, upstream: &str) -> String {
    format!(
        r#"
[[routes]]
name = "{name}"
upstream = "{upstream}"
path = "{path}"
strip_prefix = "{path}"
"#
    )
}

/// GET `path` on the gateway; returns (status, x-upstream header or "", body).
async fn get(client: &reqwest::Client, gw: &Gateway, path: &str) -> (u16, String, String) {
    let resp = client
        .get(gw.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let upstream = resp
        .headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.text().await.expect("response body");
    (status, upstream, body)
}

/// Asserts that `resp` is a gateway-written problem with `status`; returns (headers, body
/// text, parsed body).
async fn expect_problem(
    resp: reqwest::Response,
    status: u16,
) -> (reqwest::header::HeaderMap, String, serde_json::Value) {
    let headers = resp.headers().clone();
    let got = resp.status().as_u16();
    let text = resp.text().await.expect("problem body");
    assert_eq!(
        got, status,
        "expected a {status} problem, got {got}: {text}"
    );
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        ct.starts_with("application/problem+json"),
        "content-type {ct:?} for {status}: {text}"
    );
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("problem body is not JSON ({e}): {text}"));
    assert_eq!(v["status"], status, "{text}");
    assert!(v["type"].is_string(), "{text}");
    assert!(v["title"].is_string(), "{text}");
    assert!(v["detail"].is_string(), "{text}");
    assert!(
        v["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{text}"
    );
    assert!(
        headers.get("x-upstream").is_none(),
        "a gateway-written {status} must not look like an upstream answer: {headers:?}"
    );
    (headers, text, v)
}

/// `healthy` of `target` in upstream `upstream` according to admin `GET /upstreams`.
async fn admin_healthy(gw: &Gateway, upstream: &str, target: &str) -> Option<bool> {
    let resp = gw.admin_get("/upstreams").await;
    if !resp.status().is_success() {
        return None;
    }
    let v: serde_json::Value = resp.json().await.ok()?;
    v["upstreams"]
        .as_array()?
        .iter()
        .find(|u| u["name"] == upstream)?["targets"]
        .as_array()?
        .iter()
        .find(|t| t["target"] == target)?["healthy"]
        .as_bool()
}

async fn healthy_metric(gw: &Gateway, upstream: &str, target: &str) -> Option<f64> {
    gw.metric(&format!(
        r#"tollgate_upstream_healthy{{upstream="{upstream}",target="{target}"}}"#
    ))
    .await
}

async fn failures(gw: &Gateway, upstream: &str, kind: &str) -> f64 {
    gw.metric(&format!(
        r#"tollgate_upstream_failures_total{{upstream="{upstream}",kind="{kind}"}}"#
    ))
    .await
    .unwrap_or(0.0)
}

/// A tiny keep-alive HTTP/1.1 server that answers every (body-less) request with 503 and
/// `x-upstream: always503`. Returns its address and a request counter; it runs until the
/// test's runtime ends.
async fn always_503() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        counter.fetch_add(1, Ordering::SeqCst);
                        let body = br#"{"upstream":"always503"}"#;
                        let resp = format!(
                            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\nx-upstream: always503\r\nconnection: keep-alive\r\n\r\n",
                            body.len()
                        );
                        let mut out = resp.into_bytes();
                        out.extend_from_slice(body);
                        if stream.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, hits)
}

// ---------------------------------------------------------------------------------------------
// Load balancing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn round_robin_alternates_between_two_targets() {
    let a = TestUpstream::start("rr-a").await;
    let b = TestUpstream::start("rr-b").await;
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.rr]
targets = ["{}", "{}"]
balance = "round_robin"
{}"#,
        a.addr(),
        b.addr(),
        route("rr", "/", "rr")
    )))
    .await;
    let client = gw.client();
    let mut seen = Vec::new();
    for i in 0..10 {
        let (status, upstream, _) = get(&client, &gw, &format!("/rr/{i}")).await;
        assert_eq!(status, 200);
        seen.push(upstream);
    }
    assert_eq!(a.hits(), 5, "sequence: {seen:?}");
    assert_eq!(b.hits(), 5, "sequence: {seen:?}");
    // Strict alternation: no two consecutive requests on the same target.
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin must alternate: {seen:?}");
    }
    for name in &seen {
        assert!(name == "rr-a" || name == "rr-b", "x-upstream {name:?}");
    }
}

/// Pingora's weighted round robin (pingora-load-balancing 0.9.1, selection/weighted.rs) expands
/// each backend into `weight` slots and picks slot `counter % total` with an atomic counter,
/// so any 40 consecutive selections over weights 1 and 3 are exactly 10 and 30.
#[tokio::test]
async fn weighted_round_robin_splits_exactly_by_weight() {
    let light = TestUpstream::start("light").await;
    let heavy = TestUpstream::start("heavy").await;
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.w]
targets = [{{ addr = "{}", weight = 1 }}, {{ addr = "{}", weight = 3 }}]
{}"#,
        light.addr(),
        heavy.addr(),
        route("w", "/", "w")
    )))
    .await;
    let client = gw.client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..40 {
        let (status, upstream, _) = get(&client, &gw, &format!("/w/{i}")).await;
        assert_eq!(status, 200);
        *counts.entry(upstream).or_default() += 1;
    }
    assert_eq!(light.hits(), 10, "split: {counts:?}");
    assert_eq!(heavy.hits(), 30, "split: {counts:?}");
    assert_eq!(counts.get("light"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("heavy"), Some(&30), "{counts:?}");

    // The weights are visible on the admin API.
    let v: serde_json::Value = gw.admin_get("/upstreams").await.json().await.unwrap();
    let up = v["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "w")
        .expect("upstream w listed")
        .clone();
    let weight_of = |addr: SocketAddr| {
        up["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == addr.to_string())
            .map(|t| t["weight"].clone())
    };
    assert_eq!(weight_of(light.addr()), Some(serde_json::json!(1)), "{v}");
    assert_eq!(weight_of(heavy.addr()), Some(serde_json::json!(3)), "{v}");
}

#[tokio::test]
async fn random_balance_eventually_uses_both_targets() {
    let a = TestUpstream::start("rand-a").await;
    let b = TestUpstream::start("rand-b").await;
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.rnd]
targets = ["{}", "{}"]
balance = "random"
{}"#,
        a.addr(),
        b.addr(),
        route("rnd", "/", "rnd")
    )))
    .await;
    let client = gw.client();
    // Chance of 200 picks all landing on one target: 2^-199.
    let mut sent = 0;
    while (a.hits() == 0 || b.hits() == 0) && sent < 200 {
        let (status, _, _) = get(&client, &gw, "/r").await;
        assert_eq!(status, 200);
        sent += 1;
    }
    assert!(
        a.hits() > 0 && b.hits() > 0,
        "random never used both targets in {sent} requests: a={} b={}",
        a.hits(),
        b.hits()
    );
    assert_eq!(a.hits() + b.hits(), sent);
}

#[tokio::test]
async fn consistent_hash_by_header_is_sticky_and_spreads_keys() {
    let a = TestUpstream::start("ch-a").await;
    let b = TestUpstream::start("ch-b").await;
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.ch]
targets = ["{}", "{}"]
balance = "consistent_hash"
hash_key = "header:x-account-id"
{}"#,
        a.addr(),
        b.addr(),
        route("ch", "/", "ch")
    )))
    .await;
    let client = gw.client();
    let send = |key: String| {
        let client = client.clone();
        let url = gw.url("/accounts");
        async move {
            let resp = client
                .get(url)
                .header("x-account-id", key)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.headers()["x-upstream"].to_str().unwrap().to_string()
        }
    };

    // The same key always lands on the same target.
    for key in ["acct-1", "acct-2", "acct-3"] {
        let first = send(key.to_string()).await;
        for _ in 0..8 {
            assert_eq!(send(key.to_string()).await, first, "key {key} moved");
        }
    }

    // Many keys use both targets, and each stays where it was.
    let mut placement = HashMap::new();
    for i in 0..40 {
        let key = format!("account-{i}");
        placement.insert(key.clone(), send(key).await);
    }
    let used: std::collections::HashSet<&String> = placement.values().collect();
    assert_eq!(used.len(), 2, "40 keys all on one target: {placement:?}");
    for (key, target) in &placement {
        assert_eq!(&send(key.clone()).await, target, "key {key} moved");
    }
}

#[tokio::test]
async fn consistent_hash_by_path_param_is_sticky_and_spreads_keys() {
    let a = TestUpstream::start("chp-a").await;
    let b = TestUpstream::start("chp-b").await;
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.chp]
targets = ["{}", "{}"]
balance = "consistent_hash"
hash_key = "param:id"
{}"#,
        a.addr(),
        b.addr(),
        route("items", "/items/{id}", "chp")
    )))
    .await;
    let client = gw.client();

    let (_, first, _) = get(&client, &gw, "/items/alice").await;
    assert!(first == "chp-a" || first == "chp-b", "{first:?}");
    for _ in 0..8 {
        let (status, upstream, _) = get(&client, &gw, "/items/alice").await;
        assert_eq!(status, 200);
        assert_eq!(upstream, first, "/items/alice moved");
    }
    // A query string or a different header is not part of the key.
    let resp = client
        .get(gw.url("/items/alice?page=2"))
        .header("x-account-id", "something-else")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-upstream"], first.as_str());

    let mut placement = HashMap::new();
    for i in 0..40 {
        let path = format!("/items/id-{i}");
        let (status, upstream, _) = get(&client, &gw, &path).await;
        assert_eq!(status, 200);
        placement.insert(path, upstream);
    }
    let used: std::collections::HashSet<&String> = placement.values().collect();
    assert_eq!(used.len(), 2, "40 ids all on one target: {placement:?}");
    for (path, target) in &placement {
        let (_, upstream, _) = get(&client, &gw, path).await;
        assert_eq!(&upstream, target, "{path} moved");
    }
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let up = TestUpstream::start("ka").await;
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.ka]
targets = ["{}"]
{}"#,
        up.addr(),
        route("ka", "/", "ka")
    )))
    .await;
    let client = gw.client();
    for i in 0..30 {
        let (status, upstream, _) = get(&client, &gw, &format!("/ka/{i}")).await;
        assert_eq!(status, 200);
        assert_eq!(upstream, "ka");
    }
    assert_eq!(up.hits(), 30);
    assert!(
        up.connections() <= 3,
        "30 sequential requests opened {} upstream connections",
        up.connections()
    );
}

// ---------------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn retry_on_connect_error_moves_to_the_other_target() {
    let alive = TestUpstream::start("alive").await;
    let dead = unused_addr();
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.u]
targets = ["{dead}", "{}"]
[upstreams.u.retry]
attempts = 1
on = ["connect_error"]
{}"#,
        alive.addr(),
        route("u", "/", "u")
    )))
    .await;
    // A fresh client (own connection) per request: see downstream_connection_after_a_gateway_error.

    // GET is idempotent: every request succeeds on the live target.
    for i in 0..6 {
        let (status, upstream, body) = get(&gw.client(), &gw, &format!("/g/{i}")).await;
        assert_eq!(status, 200, "GET /g/{i}: {body}");
        assert_eq!(upstream, "alive");
    }
    assert_eq!(alive.hits(), 6);
    assert!(
        failures(&gw, "u", "connect").await >= 1.0,
        "6 round-robin requests never tried the dead target"
    );

    // POST without Idempotency-Key: not retried. Round robin sends exactly every other one
    // to the dead target.
    alive.clear();
    let mut statuses = Vec::new();
    for i in 0..4 {
        let resp = gw
            .client()
            .post(gw.url("/p"))
            .body(format!("plain-{i}"))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        statuses.push(status);
        if status == 502 {
            let (_, text, _) = expect_problem(resp, 502).await;
            assert!(
                !text.contains(&dead.to_string()) && !text.contains("127.0.0.1"),
                "the problem leaks the upstream address: {text}"
            );
        } else {
            assert_eq!(status, 200, "POST plain-{i}");
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        2,
        "POSTs without Idempotency-Key must not be retried: {statuses:?}"
    );
    assert_eq!(alive.hits(), 2, "{statuses:?}");

    // POST with Idempotency-Key: retried, and the body arrives intact on the retry.
    alive.clear();
    let connect_before = failures(&gw, "u", "connect").await;
    for i in 0..4 {
        let resp = gw
            .client()
            .post(gw.url("/p"))
            .header("Idempotency-Key", format!("key-{i}"))
            .body(format!("keyed-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "keyed POST {i}");
        assert_eq!(resp.headers()["x-upstream"], "alive");
    }
    let bodies: Vec<String> = alive.requests().iter().map(|r| r.body_str()).collect();
    assert_eq!(
        bodies,
        vec!["keyed-0", "keyed-1", "keyed-2", "keyed-3"],
        "each keyed POST reaches the live target exactly once with its body"
    );
    // Round robin put at least 3 of the 4 keyed POSTs on the dead target first (a retried
    // request takes two picks), so those succeeded only through a retry.
    assert!(
        failures(&gw, "u", "connect").await - connect_before >= 3.0,
        "the keyed POSTs never met the dead target, so no retry was exercised"
    );
}

#[tokio::test]
async fn retry_on_status_503_moves_to_the_other_target() {
    let good = TestUpstream::start("good").await;
    let (bad, bad_hits) = always_503().await;
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.s]
targets = ["{bad}", "{}"]
[upstreams.s.retry]
attempts = 1
on = ["503"]
{}"#,
        good.addr(),
        route("s", "/", "s")
    )))
    .await;
    let client = gw.client();
    for i in 0..8 {
        let (status, upstream, body) = get(&client, &gw, &format!("/s/{i}")).await;
        assert_eq!(status, 200, "GET /s/{i}: {body}");
        assert_eq!(upstream, "good");
    }
    assert_eq!(good.hits(), 8);
    let bad_seen = bad_hits.load(Ordering::SeqCst);
    assert!(
        bad_seen >= 1,
        "8 round-robin requests never reached the 503 target"
    );
    assert_eq!(
        failures(&gw, "s", "status").await,
        bad_seen as f64,
        "every 503 answer counts as a status failure"
    );

    // Not retried: a POST without Idempotency-Key gets the 503 through as it is.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let resp = client
            .post(gw.url("/s/post"))
            .body(format!("b{i}"))
            .send()
            .await
            .unwrap();
        statuses.push((
            resp.status().as_u16(),
            resp.headers()
                .get("x-upstream")
                .map(|v| v.to_str().unwrap().to_string()),
        ));
    }
    let passed_503 = statuses
        .iter()
        .filter(|(s, u)| *s == 503 && u.as_deref() == Some("always503"))
        .count();
    assert_eq!(passed_503, 2, "{statuses:?}");
}

#[tokio::test]
async fn without_a_retry_table_nothing_is_retried() {
    let alive = TestUpstream::start("alive").await;
    let alive2 = TestUpstream::start("alive2").await;
    let dead = unused_addr();
    let (bad, bad_hits) = always_503().await;
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.conn]
targets = ["{dead}", "{}"]

[upstreams.stat]
targets = ["{bad}", "{}"]
{}{}"#,
        alive.addr(),
        alive2.addr(),
        route("conn", "/conn", "conn"),
        route("stat", "/stat", "stat"),
    )))
    .await;
    // A fresh client (own connection) per request: see downstream_connection_after_a_gateway_error.

    let mut statuses = Vec::new();
    for i in 0..4 {
        let resp = gw
            .client()
            .get(gw.url(&format!("/conn/{i}")))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        statuses.push(status);
        if status == 502 {
            expect_problem(resp, 502).await;
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        2,
        "GETs on a dead target must fail without a [retry] table: {statuses:?}"
    );
    assert_eq!(alive.hits(), 2);
    assert_eq!(failures(&gw, "conn", "connect").await, 2.0);

    let mut statuses = Vec::new();
    for i in 0..4 {
        let (status, upstream, _) = get(&gw.client(), &gw, &format!("/stat/{i}")).await;
        statuses.push((status, upstream));
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|(s, u)| *s == 503 && u == "always503")
            .count(),
        2,
        "503s must pass through without a [retry] table: {statuses:?}"
    );
    assert_eq!(bad_hits.load(Ordering::SeqCst), 2);
    assert_eq!(alive2.hits(), 2);
}

// ---------------------------------------------------------------------------------------------
// Health checks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unhealthy_target_gets_no_traffic_and_comes_back() {
    let a = TestUpstream::start("hc-a").await;
    let b = TestUpstream::start("hc-b").await;
    let (ta, tb) = (a.addr().to_string(), b.addr().to_string());
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.hc]
targets = ["{ta}", "{tb}"]
[upstreams.hc.health_check]
path = "/healthz"
interval = "100ms"
healthy = 2
unhealthy = 2
{}"#,
        route("hc", "/", "hc")
    )))
    .await;
    let client = gw.client();

    // Both are checked and reported healthy.
    wait_until_msg(WAIT, "both targets checked and healthy", || async {
        a.health_checks() >= 1
            && b.health_checks() >= 1
            && healthy_metric(&gw, "hc", &ta).await == Some(1.0)
            && healthy_metric(&gw, "hc", &tb).await == Some(1.0)
    })
    .await;
    assert_eq!(admin_healthy(&gw, "hc", &ta).await, Some(true));
    assert_eq!(admin_healthy(&gw, "hc", &tb).await, Some(true));

    // A starts failing its checks: it leaves the pool.
    a.set_healthy(false);
    wait_until_msg(WAIT, "hc-a reported unhealthy", || async {
        admin_healthy(&gw, "hc", &ta).await == Some(false)
            && healthy_metric(&gw, "hc", &ta).await == Some(0.0)
    })
    .await;
    assert_eq!(admin_healthy(&gw, "hc", &tb).await, Some(true));
    assert_eq!(healthy_metric(&gw, "hc", &tb).await, Some(1.0));
    a.clear();
    b.clear();
    for i in 0..20 {
        let (status, upstream, _) = get(&client, &gw, &format!("/hc/{i}")).await;
        assert_eq!(status, 200);
        assert_eq!(upstream, "hc-b", "request {i} went to the unhealthy target");
    }
    assert_eq!(a.hits(), 0);
    assert_eq!(b.hits(), 20);

    // A recovers: it is reported healthy and gets traffic again.
    a.set_healthy(true);
    wait_until_msg(WAIT, "hc-a reported healthy again", || async {
        admin_healthy(&gw, "hc", &ta).await == Some(true)
            && healthy_metric(&gw, "hc", &ta).await == Some(1.0)
    })
    .await;
    for i in 0..10 {
        let (status, _, _) = get(&client, &gw, &format!("/back/{i}")).await;
        assert_eq!(status, 200);
    }
    assert!(a.hits() > 0, "the recovered target got none of 10 requests");
    assert!(b.hits() > 20, "the other target got none of 10 requests");
}

#[tokio::test]
async fn all_targets_unhealthy_gives_503_with_retry_after() {
    let a = TestUpstream::start("down-a").await;
    let b = TestUpstream::start("down-b").await;
    let (ta, tb) = (a.addr().to_string(), b.addr().to_string());
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.down]
targets = ["{ta}", "{tb}"]
[upstreams.down.health_check]
path = "/healthz"
interval = "100ms"
healthy = 2
unhealthy = 2
{}"#,
        route("down", "/", "down")
    )))
    .await;
    // A fresh client (own connection) per request: see downstream_connection_after_a_gateway_error.
    let (status, _, _) = get(&gw.client(), &gw, "/before").await;
    assert_eq!(status, 200);

    a.set_healthy(false);
    b.set_healthy(false);
    wait_until_msg(WAIT, "both targets reported unhealthy", || async {
        admin_healthy(&gw, "down", &ta).await == Some(false)
            && admin_healthy(&gw, "down", &tb).await == Some(false)
    })
    .await;
    a.clear();
    b.clear();
    let resp = gw.client().get(gw.url("/x")).send().await.unwrap();
    let (headers, text, _) = expect_problem(resp, 503).await;
    let retry_after = headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("503 without Retry-After: {headers:?}"))
        .to_str()
        .unwrap();
    assert!(
        retry_after.trim().parse::<u64>().is_ok() || httpdate_like(retry_after),
        "Retry-After {retry_after:?}"
    );
    assert!(!text.contains(&ta) && !text.contains(&tb), "{text}");
    assert_eq!(
        a.hits() + b.hits(),
        0,
        "no request may reach an unhealthy target"
    );

    // Recovery brings traffic back.
    b.set_healthy(true);
    wait_until_msg(WAIT, "down-b healthy again", || async {
        admin_healthy(&gw, "down", &tb).await == Some(true)
    })
    .await;
    let (status, upstream, _) = get(&gw.client(), &gw, "/after").await;
    assert_eq!(status, 200);
    assert_eq!(upstream, "down-b");
}

fn httpdate_like(v: &str) -> bool {
    v.ends_with(" GMT") && v.contains(',')
}

// ---------------------------------------------------------------------------------------------
// Upstream failures and timeouts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn reset_and_garbage_give_502_problems() {
    let up = TestUpstream::start("broken").await;
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.broken]
targets = ["{}"]
read_timeout = "2s"
{}"#,
        up.addr(),
        route("broken", "/", "broken")
    )))
    .await;
    // A fresh client (own connection) per request: see downstream_connection_after_a_gateway_error.
    let addr = up.addr().to_string();

    for path in ["/reset", "/garbage"] {
        let resp = gw.client().get(gw.url(path)).send().await.unwrap();
        let (_, text, _) = expect_problem(resp, 502).await;
        assert!(
            !text.contains(&addr) && !text.contains("127.0.0.1"),
            "{path}: the problem leaks the upstream address: {text}"
        );
    }
    assert_eq!(up.hits(), 2);

    // The gateway still serves normally afterwards.
    let (status, upstream, _) = get(&gw.client(), &gw, "/fine").await;
    assert_eq!(status, 200);
    assert_eq!(upstream, "broken");
}

/// After a gateway-written 502 on a keep-alive connection, the client must either be told
/// `Connection: close` (and see the close), or be able to send its next request on that
/// connection. Closing a connection announced as `keep-alive` makes the client's next
/// request fail (reqwest: `IncompleteMessage` / connection reset).
#[tokio::test]
async fn downstream_connection_after_a_gateway_error() {
    let up = TestUpstream::start("after-error").await;
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.ae]
targets = ["{}"]
{}"#,
        up.addr(),
        route("ae", "/", "ae")
    )))
    .await;
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send("GET /reset HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .unwrap();
    let resp = conn.read_response().await;
    assert_eq!(resp.status, 502, "{}", resp.body_str());
    let connection = resp.header("connection").unwrap_or("").to_ascii_lowercase();
    if connection.contains("close") {
        assert!(
            conn.closed_within(WAIT).await,
            "Connection: close announced but the connection stayed open"
        );
        return;
    }
    let sent = conn
        .send("GET /next HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await;
    let next = match sent {
        Ok(()) => conn.try_read_response_head().await,
        Err(e) => Err(e),
    };
    match next {
        Ok((status, _)) => assert_eq!(status, 200, "second request on the connection"),
        Err(e) => panic!(
            "the 502 said `Connection: {connection}` but the gateway closed the connection; \
             the next request on it failed: {e}"
        ),
    }
}

#[tokio::test]
async fn read_timeout_and_request_timeout_give_504() {
    let up = TestUpstream::start("slowpoke").await;
    let gw = Gateway::start(&format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
request_timeout = "400ms"

[upstreams.hang_up]
targets = ["{addr}"]
read_timeout = "300ms"

[upstreams.slow_up]
targets = ["{addr}"]
read_timeout = "200ms"

[upstreams.long_up]
targets = ["{addr}"]
read_timeout = "10s"

[[routes]]
name = "hang"
upstream = "hang_up"
path = "/h"
strip_prefix = "/h"

[[routes]]
name = "slow"
upstream = "slow_up"
path = "/s"
strip_prefix = "/s"

[[routes]]
name = "long"
upstream = "long_up"
path = "/l"
strip_prefix = "/l"
"#,
        addr = up.addr()
    ))
    .await;
    // A fresh client (own connection) per request: see downstream_connection_after_a_gateway_error.

    // /hang never answers: read_timeout (300ms) fires.
    let resp = gw.client().get(gw.url("/h/hang")).send().await.unwrap();
    expect_problem(resp, 504).await;
    // /slow answers after 1s: read_timeout (200ms) fires first.
    let resp = gw
        .client()
        .get(gw.url("/s/slow?ms=1000"))
        .send()
        .await
        .unwrap();
    expect_problem(resp, 504).await;
    // read_timeout 10s, but the request's total deadline (request_timeout 400ms) ends it.
    let resp = gw.client().get(gw.url("/l/hang")).send().await.unwrap();
    expect_problem(resp, 504).await;
    let resp = gw
        .client()
        .get(gw.url("/l/slow?ms=2000"))
        .send()
        .await
        .unwrap();
    expect_problem(resp, 504).await;

    for name in ["hang_up", "slow_up", "long_up"] {
        assert!(
            failures(&gw, name, "timeout").await >= 1.0,
            "no timeout failure counted for {name}"
        );
    }
    let paths: Vec<String> = up.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        vec!["/hang", "/slow?ms=1000", "/hang", "/slow?ms=2000"],
        "each timed-out request was sent once (no retry table)"
    );

    // A fast answer through the same upstream config still works.
    let (status, _, _) = get(&gw.client(), &gw, "/s/quick").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn upstream_failures_are_counted_by_kind() {
    let up = TestUpstream::start("counted").await;
    let dead = unused_addr();
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.deadup]
targets = ["{dead}"]
connect_timeout = "1s"

[upstreams.live]
targets = ["{}"]
read_timeout = "300ms"
{}{}"#,
        up.addr(),
        route_stripped("dead", "/dead", "deadup"),
        route_stripped("live", "/live", "live"),
    )))
    .await;
    // A fresh client (own connection) per request: see downstream_connection_after_a_gateway_error.
    for kind in ["connect", "timeout", "status"] {
        for upstream in ["deadup", "live"] {
            assert_eq!(
                failures(&gw, upstream, kind).await,
                0.0,
                "{upstream}/{kind}"
            );
        }
    }

    // connect: nothing listens on the dead target.
    let resp = gw.client().get(gw.url("/dead/x")).send().await.unwrap();
    expect_problem(resp, 502).await;
    assert_eq!(failures(&gw, "deadup", "connect").await, 1.0);

    // timeout: /hang never answers within read_timeout.
    let resp = gw.client().get(gw.url("/live/hang")).send().await.unwrap();
    expect_problem(resp, 504).await;
    assert_eq!(failures(&gw, "live", "timeout").await, 1.0);

    // status: a 5xx answer is passed through and counted.
    let (status, upstream, _) = get(&gw.client(), &gw, "/live/status/500").await;
    assert_eq!(status, 500);
    assert_eq!(
        upstream, "counted",
        "the upstream's own 500 is passed through"
    );
    assert_eq!(failures(&gw, "live", "status").await, 1.0);

    // A 4xx is not an upstream failure.
    let (status, _, _) = get(&gw.client(), &gw, "/live/status/404").await;
    assert_eq!(status, 404);
    assert_eq!(failures(&gw, "live", "status").await, 1.0);

    // The kinds did not bleed into each other.
    assert_eq!(failures(&gw, "deadup", "timeout").await, 0.0);
    assert_eq!(failures(&gw, "deadup", "status").await, 0.0);
    assert_eq!(failures(&gw, "live", "connect").await, 0.0);
}

// ---------------------------------------------------------------------------------------------
// Request body limit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn request_body_over_the_limit_is_refused_and_never_reaches_the_upstream() {
    let up = TestUpstream::start("bodies").await;
    let gw = Gateway::start(&format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
max_request_body = "1KiB"

[upstreams.bodies]
targets = ["{}"]
{}"#,
        up.addr(),
        route("bodies", "/", "bodies")
    ))
    .await;

    // Declared too large (Content-Length: 2048): 413 before anything is forwarded.
    let resp = gw
        .client()
        .post(gw.url("/upload"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    let (_, _, v) = expect_problem(resp, 413).await;
    assert_eq!(v["status"], 413);
    assert_eq!(up.hits(), 0, "the upstream saw an over-limit body");

    // Chunked, 2 KiB in 8 chunks: refused while streaming (413), or the connection is cut.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'c'; 256])).collect();
    let result = gw
        .client()
        .post(gw.url("/upload-chunked"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    match result {
        Ok(resp) => {
            expect_problem(resp, 413).await;
        }
        Err(e) => eprintln!("chunked over-limit upload ended with a connection error: {e}"),
    }

    // Within the limit: 512 bytes arrive intact, and so does exactly 1 KiB.
    let small: Vec<u8> = (0..512u32).map(|i| b'a' + (i % 26) as u8).collect();
    let resp = gw
        .client()
        .post(gw.url("/upload-small"))
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let exact: Vec<u8> = (0..1024u32).map(|i| b'A' + (i % 26) as u8).collect();
    let resp = gw
        .client()
        .post(gw.url("/upload-exact"))
        .body(exact.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "a body of exactly max_request_body is allowed"
    );

    // Neither over-limit body ever arrived as a complete request.
    let reqs = up.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["/upload-small", "/upload-exact"],
        "only the in-limit bodies may reach the upstream"
    );
    assert_eq!(reqs[0].body, small);
    assert_eq!(reqs[1].body, exact);
}

// ---------------------------------------------------------------------------------------------
// TLS to upstreams
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tls_upstream_verification_follows_ca_file_and_verify() {
    let certs = TestCerts::generate(&["localhost"]);
    let trusted = TestUpstream::start_tls("tls-trusted", &certs.cert_pem, &certs.key_pem).await;
    let unknown = TestUpstream::start_tls("tls-unknown", &certs.cert_pem, &certs.key_pem).await;
    let lax = TestUpstream::start_tls("tls-lax", &certs.cert_pem, &certs.key_pem).await;
    let gw = Gateway::builder(&config(&format!(
        r#"
[upstreams.trusted]
targets = ["{}"]
tls = true
sni = "localhost"
ca_file = "ca.pem"

[upstreams.unknown_ca]
targets = ["{}"]
tls = true
sni = "localhost"

[upstreams.no_verify]
targets = ["{}"]
tls = true
sni = "localhost"
verify = false
{}{}{}"#,
        trusted.addr(),
        unknown.addr(),
        lax.addr(),
        route("trusted", "/trusted", "trusted"),
        route("unknown", "/unknown", "unknown_ca"),
        route("lax", "/lax", "no_verify"),
    )))
    .file("ca.pem", &certs.ca_pem)
    .start()
    .await;
    // A fresh client (own connection) per request: see downstream_connection_after_a_gateway_error.

    let (status, upstream, body) = get(&gw.client(), &gw, "/trusted/x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream, "tls-trusted");
    assert_eq!(trusted.hits(), 1);

    // verify on (the default) and a CA the gateway does not know: the handshake fails.
    let resp = gw.client().get(gw.url("/unknown/x")).send().await.unwrap();
    expect_problem(resp, 502).await;
    assert_eq!(
        unknown.hits(),
        0,
        "a request went over an unverified connection"
    );

    let (status, upstream, body) = get(&gw.client(), &gw, "/lax/x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream, "tls-lax");
    assert_eq!(lax.hits(), 1);
}

#[tokio::test]
async fn mtls_upstream_needs_the_client_certificate() {
    let certs = TestCerts::generate(&["localhost"]);
    let (client_cert, client_key) = certs.client_cert("tollgate-gateway");
    let with_cert =
        TestUpstream::start_mtls("mtls-a", &certs.cert_pem, &certs.key_pem, &certs.ca_pem).await;
    let without_cert =
        TestUpstream::start_mtls("mtls-b", &certs.cert_pem, &certs.key_pem, &certs.ca_pem).await;
    let gw = Gateway::builder(&config(&format!(
        r#"
[upstreams.with_cert]
targets = ["{}"]
tls = true
sni = "localhost"
ca_file = "ca.pem"
client_cert = "client.pem"
client_key = "client.key"

[upstreams.without_cert]
targets = ["{}"]
tls = true
sni = "localhost"
ca_file = "ca.pem"
{}{}"#,
        with_cert.addr(),
        without_cert.addr(),
        route("with", "/with", "with_cert"),
        route("without", "/without", "without_cert"),
    )))
    .file("ca.pem", &certs.ca_pem)
    .file("client.pem", &client_cert)
    .file("client.key", &client_key)
    .start()
    .await;
    // A fresh client (own connection) per request: see downstream_connection_after_a_gateway_error.

    let (status, upstream, body) = get(&gw.client(), &gw, "/with/x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream, "mtls-a");
    assert_eq!(with_cert.hits(), 1);

    let resp = gw.client().get(gw.url("/without/x")).send().await.unwrap();
    expect_problem(resp, 502).await;
    assert_eq!(without_cert.hits(), 0);
}
