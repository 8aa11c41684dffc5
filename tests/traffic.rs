//! rate_limit and circuit_breaker through a real gateway and upstreams.

mod common;
use common::*;
use std::time::Duration;

fn limited(up: std::net::SocketAddr, plugins: &str, defs: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

{defs}

[upstreams.up]
targets = ["{up}"]

[[routes]]
name = "limited"
upstream = "up"
path = "/"
plugins = [{plugins}]
"#
    )
}

async fn status_of(
    c: &reqwest::Client,
    url: String,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = c.get(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_against_a_burst_admit_exactly_the_burst() {
    let up = TestUpstream::start("up").await;
    let cfg = limited(
        up.addr(),
        "\"per_ip\"",
        "[plugins.per_ip]\ntype = \"rate_limit\"\nrate = \"1/h\"\nburst = 10\nkey = \"ip\"",
    );
    let gw = Gateway::start(&cfg).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = gw.client();
        let u = gw.url(&format!("/r{i}"));
        tasks.push(tokio::spawn(async move { c.get(u).send().await.unwrap() }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let r = t.await.unwrap();
        let h = r.headers().clone();
        assert_eq!(h["ratelimit-limit"], "10");
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                refused += 1;
                assert_eq!(h["ratelimit-remaining"], "0");
                let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(retry > 0 && retry <= 3600, "{retry}");
                assert_eq!(h["content-type"], "application/problem+json");
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!((ok, refused), (10, 30));
    assert_eq!(up.hits(), 10, "refused requests never reach the upstream");
    assert_eq!(
        gw.metric(r#"tollgate_rate_limited_total{route="limited",plugin="per_ip"}"#)
            .await,
        Some(30.0)
    );
}

#[tokio::test]
async fn headers_count_down_and_spoofed_forwarding_makes_no_new_buckets() {
    let up = TestUpstream::start("up").await;
    let cfg = limited(
        up.addr(),
        "\"per_ip\"",
        "[plugins.per_ip]\ntype = \"rate_limit\"\nrate = \"1/h\"\nburst = 3",
    );
    let gw = Gateway::start(&cfg).await;
    let c = gw.client();
    for (i, xff) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .iter()
        .enumerate()
    {
        let r = status_of(&c, gw.url("/"), &[("x-forwarded-for", xff)]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["ratelimit-remaining"],
            (2 - i).to_string().as_str()
        );
        // Each admitted request's capacity comes back one emission interval (1 h) later.
        let reset: u64 = r.headers()["ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(reset, 3600 * (i as u64 + 1));
    }
    // The peer is not a trusted proxy: a new X-Forwarded-For is still the same client.
    let r = status_of(&c, gw.url("/"), &[("x-forwarded-for", "203.0.113.77")]).await;
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn keys_by_header_and_several_limits_on_one_route() {
    let up = TestUpstream::start("up").await;
    let defs = "[plugins.per_tenant]\ntype = \"rate_limit\"\nrate = \"1/h\"\nburst = 2\nkey = \"header:x-tenant\"\n\n[plugins.everyone]\ntype = \"rate_limit\"\nrate = \"1/h\"\nburst = 5\nkey = \"global\"";
    let gw = Gateway::start(&limited(up.addr(), "\"everyone\", \"per_tenant\"", defs)).await;
    let c = gw.client();
    let get = |t: &'static str| {
        let c = c.clone();
        let u = gw.url("/");
        async move { status_of(&c, u, &[("x-tenant", t)]).await }
    };
    let a1 = get("a").await;
    assert_eq!(a1.status(), 200);
    // The tighter of the two limits is the one shown.
    assert_eq!(a1.headers()["ratelimit-limit"], "2");
    assert_eq!(a1.headers()["ratelimit-remaining"], "1");
    let a2 = get("a").await;
    assert_eq!(a2.status(), 200, "{:?}", a2.headers());
    assert_eq!(get("a").await.status(), 429, "tenant a used its burst");
    assert_eq!(get("b").await.status(), 200, "tenant b has its own bucket");
    let b2 = get("b").await;
    assert_eq!(b2.status(), 200);
    // The global limit counted a, a, a (refused later by per_tenant), b, b: it is spent.
    assert_eq!(b2.headers()["ratelimit-remaining"], "0");
    let r = get("c").await;
    assert_eq!(r.status(), 429, "the global limit applies too");
    assert_eq!(r.headers()["ratelimit-limit"], "5");
    assert_eq!(up.hits(), 4);
}

#[tokio::test]
async fn a_429_says_when_to_retry_and_when_the_bucket_is_full() {
    let up = TestUpstream::start("up").await;
    // 3/min: one request comes back every 20 s, the whole burst of 3 in 60 s.
    let cfg = limited(
        up.addr(),
        "\"per_ip\"",
        "[plugins.per_ip]\ntype = \"rate_limit\"\nrate = \"3/min\"\nburst = 3",
    );
    let gw = Gateway::start(&cfg).await;
    let c = gw.client();
    for _ in 0..3 {
        assert_eq!(status_of(&c, gw.url("/"), &[]).await.status(), 200);
    }
    let r = status_of(&c, gw.url("/"), &[]).await;
    assert_eq!(r.status(), 429);
    let h = r.headers();
    assert_eq!(h["retry-after"], "20", "{h:?}");
    assert_eq!(
        h["ratelimit-reset"], "60",
        "seconds until the bucket is full: {h:?}"
    );
    assert_eq!(h["ratelimit-remaining"], "0");
    assert_eq!(h["ratelimit-limit"], "3");
}

#[tokio::test]
async fn failing_open_on_an_unreachable_redis_keeps_the_ratelimit_headers() {
    let up = TestUpstream::start("up").await;
    let defs = format!(
        "[redis]\nurl = \"redis://{}\"\ntimeout = \"200ms\"\n\n[plugins.fleet]\ntype = \"rate_limit\"\nrate = \"10/min\"\nburst = 5\nkey = \"global\"\nbackend = \"redis\"",
        unused_addr()
    );
    let gw = Gateway::start(&limited(up.addr(), "\"fleet\"", &defs)).await;
    let c = gw.client();
    for _ in 0..3 {
        let r = status_of(&c, gw.url("/"), &[]).await;
        assert_eq!(r.status(), 200, "fails open");
        let h = r.headers();
        // The shared bucket is unknown: the headers describe the limit itself, as a bucket
        // that has just admitted this request (one request comes back in 6 s).
        assert_eq!(h["ratelimit-limit"], "5", "{h:?}");
        assert_eq!(h["ratelimit-remaining"], "4", "{h:?}");
        assert_eq!(h["ratelimit-reset"], "6", "{h:?}");
    }
    assert_eq!(up.hits(), 3);
    assert!(
        gw.metric(r#"tollgate_backend_errors_total{plugin="fleet",backend="redis"}"#)
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
}

#[tokio::test]
async fn failing_closed_on_an_unreachable_redis_still_carries_the_ratelimit_headers() {
    let up = TestUpstream::start("up").await;
    let defs = format!(
        "[redis]\nurl = \"redis://{}\"\ntimeout = \"200ms\"\n\n[plugins.loose]\ntype = \"rate_limit\"\nrate = \"100/min\"\nburst = 50\n\n[plugins.fleet]\ntype = \"rate_limit\"\nrate = \"10/min\"\nburst = 5\nkey = \"global\"\nbackend = \"redis\"\non_backend_error = \"deny\"",
        unused_addr()
    );
    let gw = Gateway::start(&limited(up.addr(), "\"loose\", \"fleet\"", &defs)).await;
    let c = gw.client();
    for _ in 0..2 {
        let r = status_of(&c, gw.url("/"), &[]).await;
        assert_eq!(r.status(), 503, "fails closed");
        let h = r.headers();
        assert_eq!(h["retry-after"], "1", "{h:?}");
        // SPEC §3: every response on a limited route carries them; here the failed limit's
        // own, describing the limit itself (as failing open does), not the earlier limit's.
        assert_eq!(h["ratelimit-limit"], "5", "{h:?}");
        assert_eq!(h["ratelimit-remaining"], "4", "{h:?}");
        assert_eq!(h["ratelimit-reset"], "6", "{h:?}");
        assert_eq!(h.get_all("ratelimit-limit").iter().count(), 1, "{h:?}");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn long_header_keys_are_still_one_bucket_per_value() {
    let up = TestUpstream::start("up").await;
    let defs = "[plugins.per_tenant]\ntype = \"rate_limit\"\nrate = \"1/h\"\nburst = 1\nkey = \"header:x-tenant\"\nmax_keys = 10";
    let gw = Gateway::start(&limited(up.addr(), "\"per_tenant\"", defs)).await;
    let c = gw.client();
    let long_a = "a".repeat(8000);
    let long_b = format!("{}b", "a".repeat(7999));
    let mut statuses = Vec::new();
    for v in [&long_a, &long_a, &long_b, &long_b] {
        let r = status_of(&c, gw.url("/"), &[("x-tenant", v.as_str())]).await;
        statuses.push(r.status().as_u16());
    }
    // The same long value is one bucket; a value differing in its last byte has its own.
    assert_eq!(statuses, [200, 429, 200, 429]);
}

fn breaker_config(targets: &str, breaker: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"

[plugins.breaker]
type = "circuit_breaker"
{breaker}

[upstreams.pay]
targets = [{targets}]
connect_timeout = "500ms"

[[routes]]
name = "pay"
upstream = "pay"
path = "/"
plugins = ["breaker"]
"#
    )
}

#[tokio::test]
async fn open_breaker_protects_the_upstream_and_recovers_by_itself() {
    let up = TestUpstream::start("pay").await;
    let cfg = breaker_config(
        &format!("\"{}\"", up.addr()),
        "consecutive_failures = 3\nopen_for = \"1s\"\nhalf_open_requests = 2",
    );
    let gw = Gateway::start(&cfg).await;
    let c = gw.client();

    // Client errors never count.
    for _ in 0..5 {
        assert_eq!(
            c.get(gw.url("/status/404")).send().await.unwrap().status(),
            404
        );
    }
    for _ in 0..3 {
        assert_eq!(
            c.get(gw.url("/status/503")).send().await.unwrap().status(),
            503
        );
    }
    let hits = up.hits();
    let r = c.get(gw.url("/ok")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(
        up.hits(),
        hits,
        "an open breaker does not touch the upstream"
    );
    assert_eq!(
        gw.metric(r#"tollgate_circuit_state{upstream="pay"}"#).await,
        Some(2.0)
    );
    let ups: serde_json::Value = gw.admin_get("/upstreams").await.json().await.unwrap();
    assert_eq!(ups["upstreams"][0]["circuit"], "open");

    // After open_for the probes go through; two successes close it again.
    wait_until(Duration::from_secs(10), || {
        let c = c.clone();
        let u = gw.url("/ok");
        async move { c.get(u).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    assert_eq!(c.get(gw.url("/ok")).send().await.unwrap().status(), 200);
    assert_eq!(
        gw.metric(r#"tollgate_circuit_state{upstream="pay"}"#).await,
        Some(0.0)
    );
    for _ in 0..5 {
        assert_eq!(c.get(gw.url("/ok")).send().await.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn connect_failures_trip_the_breaker_by_failure_rate() {
    let dead = unused_addr();
    let cfg = breaker_config(
        &format!("\"{dead}\""),
        "failure_rate = 0.5\nmin_requests = 4\nwindow = \"10s\"\nopen_for = \"30s\"",
    );
    let gw = Gateway::start(&cfg).await;
    let c = gw.client();
    for _ in 0..4 {
        let r = c.get(gw.url("/x")).send().await.unwrap();
        assert_eq!(r.status(), 502);
    }
    let r = c.get(gw.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(
        gw.metric(r#"tollgate_upstream_failures_total{upstream="pay",kind="connect"}"#)
            .await,
        Some(4.0),
        "the refused request made no connection attempt"
    );
}

#[tokio::test]
async fn rate_limit_doc_example() {
    let up = TestUpstream::start("doc").await;
    let gw = Gateway::start(&doc_example("rate_limit.md", up.addr())).await;
    let c = gw.client();
    for left in ["2", "1", "0"] {
        let r = c.get(gw.url("/v1/accounts/a")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-remaining"], left);
    }
    let r = c.get(gw.url("/v1/accounts/a")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(up.hits(), 3);
}

#[tokio::test]
async fn circuit_breaker_doc_example() {
    let up = TestUpstream::start("doc").await;
    let gw = Gateway::start(&doc_example("circuit_breaker.md", up.addr())).await;
    let c = gw.client();
    for _ in 0..4 {
        assert_eq!(
            c.get(gw.url("/status/503")).send().await.unwrap().status(),
            503
        );
    }
    let r = c.get(gw.url("/ok")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "30");
    assert_eq!(up.hits(), 4);
}

#[test]
fn max_keys_is_validated_with_its_place() {
    assert_plugin_errors(
        "rate_limit",
        "rl",
        &[
            ("rate = \"1/s\"\nmax_keys = 0", "plugins.rl.max_keys"),
            // A wrong type is refused too (serde places it on the plugin's table).
            ("rate = \"1/s\"\nmax_keys = -1", "plugins.rl"),
        ],
    );
}
