//! Memory stays bounded whatever clients send (issue 12, items 4 and 9; SPEC §3 `rate_limit`,
//! §7). 50,000 requests, each with values never seen before, against one gateway:
//!
//! - every 4th request has its own method, up to 30 KB long (a label of
//!   `tollgate_requests_total` before the fix: 1,000 of them added 126 MB);
//! - the others are signed Standard Webhooks deliveries, each with a new `webhook-id`, a new
//!   `x-tenant` value (up to ~2 KB, the key of a header-keyed `rate_limit`) and a new
//!   `Idempotency-Key`.
//!
//! The gateway's resident memory (`VmRSS` of the spawned binary), measured after a warm-up
//! with the same traffic and after each fifth of the requests, may grow by at most
//! [`BUDGET_MIB`], and `/metrics` stays small. The small bounds configured here (`max_keys =
//! 1000`, `max_size = "1MiB"`) are full long before the end, so eviction is what keeps the
//! memory level.
//!
//! The idempotency store's bound on the number of keys (not only on bytes) comes with the
//! idempotency hardening of the same issue.

mod common;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SW_KEY: &[u8] = b"memory-test-standard-webhooks-k!";

const REQUESTS: usize = 50_000;
const WARM_UP: usize = 10_000;
const CONNECTIONS: usize = 32;

/// What the gateway may add to its resident memory, measured after a warm-up of
/// [`WARM_UP`] requests of the same kind (so that buffers, thread pools, the allocator's
/// arenas and the bounded tables are already at their working size), in MiB:
///
/// - `rate_limit`, `max_keys = 1000`: 1,000 keys of at most ~130 bytes (longer values are
///   hashed): under 1 MiB, already full after the warm-up.
/// - `idempotency`, `max_size = "1MiB"`: 1 MiB of records plus their index: under 2 MiB.
/// - `webhook_signature` remembers each verified delivery for its window (`tolerance` 10 s,
///   either way): at ~1,000 deliveries/s at most ~20,000 digests of ~200 bytes, 4 MiB
///   (it never holds more than 100,000 per plugin, ~20 MiB, whatever the rate).
/// - `tollgate_requests_total`: one `_OTHER` series per status, nothing measurable.
/// - Allocator slack (freed pages kept, maps doubling as they grow): 16 MiB.
///
/// That is 23 MiB; measured: +5 MiB. The code before issue 12 kept every method as a label
/// and every `x-tenant` value for the hour its bucket takes to refill: +71 MiB over the same
/// 50,000 requests, growing by ~15 MiB per 10,000 requests without levelling off.
const BUDGET_MIB: u64 = 24;

fn sign(id: &str, ts: &str, body: &[u8]) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(SW_KEY).unwrap();
    for p in [id.as_bytes(), b".", ts.as_bytes(), b".", body] {
        m.update(p);
    }
    format!("v1,{}", B64.encode(m.finalize().into_bytes()))
}

fn config(up: SocketAddr) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[plugins.hooks]
type = "webhook_signature"
scheme = "standard_webhooks"
secrets = ["whsec_{secret}"]
tolerance = "10s"

[plugins.per_tenant]
type = "rate_limit"
rate = "1/h"
burst = 5
key = "header:x-tenant"
max_keys = 1000

[plugins.once]
type = "idempotency"
max_size = "1MiB"

[upstreams.up]
targets = ["{up}"]

[[routes]]
name = "hooks"
upstream = "up"
path = "/status"
methods = ["POST"]
plugins = ["hooks", "per_tenant", "once"]
"#,
        secret = B64.encode(SW_KEY),
    )
}

/// Request `i`: a new method (every 4th), or a signed delivery with a new webhook id, tenant
/// and idempotency key. Returns the bytes and whether it is a delivery.
fn request(i: usize, ts: &str) -> (Vec<u8>, bool) {
    if i.is_multiple_of(4) {
        // Mostly a few KB, every 100th 30 KB.
        let len = if i.is_multiple_of(100) {
            30_000
        } else {
            (i % 7) * 1000
        };
        let method = format!("X{i}{}", "M".repeat(len));
        let req = format!("{method} /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        return (req.into_bytes(), false);
    }
    let id = format!("msg_{i}_{}", "w".repeat((i % 3) * 100));
    let tenant = format!("tenant-{i}-{}", "k".repeat((i % 7) * 300));
    let body = format!(r#"{{"type":"invoice.paid","n":{i}}}"#);
    let sig = sign(&id, ts, body.as_bytes());
    let req = format!(
        "POST /status/200 HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         webhook-id: {id}\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {sig}\r\n\
         x-tenant: {tenant}\r\nIdempotency-Key: key-{i}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    (req.into_bytes(), true)
}

#[derive(Default)]
struct Tally {
    delivered: AtomicUsize,
    refused_methods: AtomicUsize,
}

/// Sends requests `from..to` over [`CONNECTIONS`] keep-alive connections.
async fn run(addr: SocketAddr, from: usize, to: usize) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicUsize::new(from));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (tally, next) = (tally.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = RawConn::connect(addr).await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    return;
                }
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    .to_string();
                let (bytes, delivery) = request(i, &ts);
                conn.send(&bytes)
                    .await
                    .unwrap_or_else(|e| panic!("request {i}: {e}"));
                let r = conn.read_response().await;
                if delivery {
                    assert_eq!(r.status, 200, "delivery {i}: {}", r.body_str());
                    tally.delivered.fetch_add(1, Ordering::Relaxed);
                } else {
                    // No route has this method: 404 (or a refusal of the method itself).
                    assert!(
                        (400..=501).contains(&r.status),
                        "method {i}: {} {}",
                        r.status,
                        r.body_str()
                    );
                    tally.refused_methods.fetch_add(1, Ordering::Relaxed);
                }
                if r.header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    conn = RawConn::connect(addr).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_thousand_requests_of_new_methods_keys_and_ids_leave_memory_bounded() {
    let up = TestUpstream::start("up").await;
    let gw = Gateway::start(&config(up.addr())).await;

    // Warm-up: the same traffic, so that connection buffers, thread pools and the allocator's
    // arenas are in place before the baseline.
    let t = run(gw.addr(), 0, WARM_UP).await;
    assert_eq!(t.delivered.load(Ordering::Relaxed), WARM_UP * 3 / 4);
    let metrics_before = gw.metrics().await;
    up.clear();
    let baseline = rss_kib(gw.pid());

    // The requests in five rounds, with the RSS after each: memory must level off, not
    // follow the number of values sent.
    let started = std::time::Instant::now();
    let mut samples = Vec::new();
    let (mut delivered, mut refused) = (0, 0);
    for round in 0..5 {
        let from = WARM_UP + round * REQUESTS / 5;
        let t = run(gw.addr(), from, from + REQUESTS / 5).await;
        delivered += t.delivered.load(Ordering::Relaxed);
        refused += t.refused_methods.load(Ordering::Relaxed);
        up.clear();
        samples.push(rss_kib(gw.pid()));
    }
    let elapsed = started.elapsed();
    assert_eq!(delivered, REQUESTS * 3 / 4);
    assert_eq!(refused, REQUESTS / 4);
    let mib = |kib: u64| kib / 1024;
    eprintln!(
        "{REQUESTS} requests in {elapsed:?}: RSS {} MiB, then {:?} MiB (budget +{BUDGET_MIB} MiB)",
        mib(baseline),
        samples.iter().map(|&k| mib(k)).collect::<Vec<_>>()
    );
    for (round, &kib) in samples.iter().enumerate() {
        assert!(
            kib <= baseline + BUDGET_MIB * 1024,
            "RSS grew from {baseline} KiB to {kib} KiB after {} requests (budget {BUDGET_MIB} MiB)",
            (round + 1) * REQUESTS / 5
        );
    }

    // /metrics: the methods are one `_OTHER` series; nothing a client sent is a label. A
    // request is counted once its response is written: wait for the last ones.
    wait_until_msg(Duration::from_secs(10), "every request counted", || async {
        gw.metric_sum("tollgate_requests_total").await == (WARM_UP + REQUESTS) as f64
    })
    .await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.len() < metrics_before.len() + 4096,
        "/metrics grew from {} to {} bytes",
        metrics_before.len(),
        metrics.len()
    );
    assert!(
        metrics.lines().all(|l| l.len() < 512),
        "a long line in /metrics"
    );
    let other = sum_metrics(
        &metrics,
        r#"tollgate_requests_total{route="",method="_OTHER"}"#,
    );
    assert_eq!(other as usize, (WARM_UP + REQUESTS) / 4);
    assert_eq!(
        sum_metrics(
            &metrics,
            r#"tollgate_requests_total{route="hooks",method="POST"}"#
        ) as usize,
        (WARM_UP + REQUESTS) * 3 / 4
    );
    assert!(
        !metrics.contains("MMMM"),
        "a client's method became a label"
    );
}

#[tokio::test]
async fn a_method_label_is_a_standard_method_or_other() {
    let up = TestUpstream::start("up").await;
    let gw = Gateway::start(&config(up.addr())).await;
    let long = format!("X{}", "M".repeat(30_000));
    let methods = ["GET", "PROPFIND", "post", "Get", "M-SEARCH", long.as_str()];
    for m in methods {
        let mut conn = RawConn::connect(gw.addr()).await;
        conn.send(format!("{m} /nowhere HTTP/1.1\r\nHost: t\r\n\r\n"))
            .await
            .unwrap();
        let r = conn.read_response().await;
        assert!((400..500).contains(&r.status), "{m:.20}: {}", r.status);
    }
    // A request is counted once its response is written: wait for the last one.
    wait_until_msg(Duration::from_secs(10), "six requests counted", || async {
        gw.metric_sum("tollgate_requests_total").await == 6.0
    })
    .await;
    let metrics = gw.metrics().await;
    let standard = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
    ];
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("tollgate_requests_total{"))
    {
        let label = line
            .split("method=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no method label: {line:.200}"));
        assert!(standard.contains(&label), "method label {label:.40}");
    }
    assert_eq!(
        sum_metrics(&metrics, r#"tollgate_requests_total{method="GET"}"#),
        1.0
    );
    assert_eq!(
        sum_metrics(&metrics, r#"tollgate_requests_total{method="_OTHER"}"#),
        5.0
    );
}
