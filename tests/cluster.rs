//! Several gateways sharing one Redis (SPEC §9): one limit and one idempotency
//! record for the whole fleet, and the configured behaviour when Redis fails.
//! Needs `redis-server` (`.ci/run` installs it).
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;
use common::brokers::RedisServer;
use common::*;

fn config(up: std::net::SocketAddr, redis: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[redis]
url = "{redis}"
timeout = "200ms"

[plugins.fleet_limit]
type = "rate_limit"
rate = "1/h"
burst = 10
key = "global"
backend = "redis"

[plugins.fleet_idem]
type = "idempotency"
backend = "redis"

[upstreams.up]
targets = ["{up}"]

[[routes]]
name = "limited"
upstream = "up"
path = "/limited"
plugins = ["fleet_limit"]

[[routes]]
name = "pay"
upstream = "up"
path = "/pay"
strip_prefix = "/pay"
plugins = ["fleet_idem"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_spread_over_three_gateways_admits_exactly_the_burst() {
    let redis = RedisServer::start().await;
    let up = TestUpstream::start("up").await;
    let cfg = config(up.addr(), &redis.url());
    let gws = [
        Gateway::start(&cfg).await,
        Gateway::start(&cfg).await,
        Gateway::start(&cfg).await,
    ];
    let mut tasks = Vec::new();
    for i in 0..60 {
        let gw = &gws[i % 3];
        let (c, u) = (gw.client(), gw.url("/limited"));
        tasks.push(tokio::spawn(async move { c.get(u).send().await.unwrap() }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.headers()["ratelimit-limit"], "10");
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                refused += 1;
                // 1/h, burst 10: one request back within the hour, the bucket full in 10 h.
                let secs =
                    |name: &str| -> u64 { r.headers()[name].to_str().unwrap().parse().unwrap() };
                let (retry, reset) = (secs("retry-after"), secs("ratelimit-reset"));
                assert!(retry > 3000 && retry <= 3600, "{retry}");
                assert!(reset > 9 * 3600 + 3000 && reset <= 10 * 3600, "{reset}");
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!((ok, refused), (10, 50), "one limit for the whole fleet");
    assert_eq!(up.hits(), 10);
}

#[tokio::test]
async fn an_idempotent_post_to_one_gateway_is_replayed_by_another() {
    let redis = RedisServer::start().await;
    let up = TestUpstream::start("up").await;
    let cfg = config(up.addr(), &redis.url());
    let (a, b) = (Gateway::start(&cfg).await, Gateway::start(&cfg).await);
    let post = |gw: &Gateway, body: &'static str| {
        gw.client()
            .post(gw.url("/pay/respond?status=201&body=pay_1"))
            .header("idempotency-key", "order-42")
            .body(body)
            .send()
    };
    let first = post(&a, "{\"amount\":5}").await.unwrap();
    assert_eq!(first.status(), 201);
    // The record lands in Redis as the response completes; until then the key is in flight.
    wait_until(Duration::from_secs(10), || async {
        let r = post(&b, "{\"amount\":5}").await.unwrap();
        match r.status().as_u16() {
            409 => false,
            201 => {
                assert_eq!(r.headers()["idempotent-replayed"], "true");
                assert_eq!(r.text().await.unwrap(), "pay_1");
                true
            }
            s => panic!("unexpected {s}"),
        }
    })
    .await;
    assert_eq!(up.hits(), 1, "the replay never reached the upstream");
    assert_eq!(post(&b, "{\"amount\":6}").await.unwrap().status(), 422);
}

#[tokio::test]
async fn redis_down_fails_open_for_limits_and_closed_for_idempotency_then_recovers() {
    let mut redis = RedisServer::start().await;
    let port = redis.port();
    let up = TestUpstream::start("up").await;
    let gw = Gateway::start(&config(up.addr(), &redis.url())).await;
    let c = gw.client();
    assert_eq!(
        c.get(gw.url("/limited")).send().await.unwrap().status(),
        200
    );

    redis.kill().await;
    let limited = c.get(gw.url("/limited")).send().await.unwrap();
    assert_eq!(limited.status(), 200, "rate_limit fails open by default");
    let pay = c
        .post(gw.url("/pay/x"))
        .header("idempotency-key", "k-down")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(pay.status(), 503, "idempotency fails closed by default");
    assert_eq!(pay.headers()["content-type"], "application/problem+json");
    assert!(
        gw.metric(r#"tollgate_backend_errors_total{plugin="fleet_limit",backend="redis"}"#)
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        gw.metric(r#"tollgate_backend_errors_total{plugin="fleet_idem",backend="redis"}"#)
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    let hits = up.hits();

    // Redis comes back on the same port: the gateway recovers without a restart.
    let _redis = RedisServer::start_on(port).await;
    wait_until(Duration::from_secs(15), || async {
        let r = c
            .post(gw.url("/pay/x"))
            .header("idempotency-key", "k-up")
            .body("{}")
            .send()
            .await
            .unwrap();
        r.status() == 200
    })
    .await;
    assert_eq!(up.hits(), hits + 1);
    let r = c.get(gw.url("/limited")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["ratelimit-remaining"],
        "9",
        "a fresh Redis has a fresh bucket"
    );
    // The log says what failed, once, without flooding.
    let logs = gw.logs();
    assert!(logs.contains("redis backend failed"), "{logs}");
}

#[test]
fn backend_redis_needs_a_redis_table() {
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let cfg = config(up, "redis://127.0.0.1:1").replace(
        "[redis]\nurl = \"redis://127.0.0.1:1\"\ntimeout = \"200ms\"\n",
        "",
    );
    let (ok, out) = check_config(&cfg, &[]);
    assert!(!ok);
    assert!(
        out.contains("plugins.fleet_limit.backend: backend = \"redis\" needs a [redis] table"),
        "{out}"
    );
    let bad_url = config(up, "http://127.0.0.1:1");
    let (ok, out) = check_config(&bad_url, &[]);
    assert!(!ok);
    assert!(out.contains("is not a redis:// or rediss:// URL"), "{out}");
}
