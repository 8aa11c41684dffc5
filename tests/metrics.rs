//! `/metrics` of a real gateway (SPEC §7, §11): the process metrics and
//! `tollgate_build_info` are there, and every series the config makes known is
//! exported at 0 before the first request; a reload removes the series of the
//! route, upstream and plugin it removed and keeps the others (with their
//! counts).
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use common::*;

const JWT_SECRET: &str = "metrics-test-secret-0123456789-abcdefghij";

/// Routes of several plugin families on two upstreams; `gone` (route
/// `legacy` on upstream `old`, with plugin `office` only there) is what the
/// reload takes away.
fn config(up: std::net::SocketAddr, gone: bool) -> String {
    let mut c = format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
threads = 1

[plugins.keys]
type = "api_key"
header = "x-api-key"
keys = [{{ consumer = "acme", key_sha256 = "0c24ce40313b1ce2b6daefa9dea10a4d3290af661123f6d499a3567b80d5ed49" }}]

[plugins.per_client]
type = "rate_limit"
rate = "100/s"

[plugins.idem]
type = "idempotency"

[plugins.breaker]
type = "circuit_breaker"

[plugins.catalog_cache]
type = "cache"
ttl = "30s"

[plugins.hook]
type = "webhook_signature"
scheme = "github"
secrets = ["s3cret"]

[plugins.bearer]
type = "jwt"
algorithms = ["HS256"]
secret_env = "METRICS_TEST_JWT_SECRET"

[plugins.kyc]
type = "forward_auth"
url = "http://{up}/check"

[upstreams.main]
targets = ["{up}"]

[[routes]]
name = "pay"
upstream = "main"
path = "/pay"
plugins = ["keys", "per_client", "idem", "breaker"]

[[routes]]
name = "catalog"
upstream = "main"
path = "/catalog"
plugins = ["catalog_cache", "bearer"]

[[routes]]
name = "hooks"
upstream = "main"
path = "/hooks"
plugins = ["hook", "kyc"]
"#
    );
    if gone {
        c.push_str(&format!(
            r#"
[plugins.office]
type = "ip_filter"
allow = ["127.0.0.0/8"]

[upstreams.old]
targets = ["{up}"]

[[routes]]
name = "legacy"
upstream = "old"
path = "/legacy"
plugins = ["office", "per_client"]
"#
        ));
    }
    c
}

/// Asserts that `series` (exact label set) is in `text` with `value`.
fn assert_series(text: &str, series: &str, value: f64) {
    assert_eq!(
        find_metric(text, series),
        Some(value),
        "{series} in:\n{text}"
    );
}

/// The series that stay through the reload, all at 0 before any traffic.
fn assert_kept_at_zero(t: &str) {
    for route in ["pay", "catalog", "hooks"] {
        assert_series(
            t,
            &format!(r#"tollgate_request_duration_seconds_count{{route="{route}"}}"#),
            0.0,
        );
    }
    assert_series(
        t,
        r#"tollgate_upstream_duration_seconds_count{upstream="main"}"#,
        0.0,
    );
    for kind in ["connect", "timeout", "status"] {
        assert_series(
            t,
            &format!(r#"tollgate_upstream_failures_total{{upstream="main",kind="{kind}"}}"#),
            0.0,
        );
    }
    for reason in ["missing_key", "invalid_key"] {
        assert_series(
            t,
            &format!(
                r#"tollgate_auth_failures_total{{route="pay",plugin="keys",reason="{reason}"}}"#
            ),
            0.0,
        );
    }
    assert_series(
        t,
        r#"tollgate_rate_limited_total{route="pay",plugin="per_client"}"#,
        0.0,
    );
    for result in ["stored", "replayed", "conflict", "mismatch"] {
        assert_series(
            t,
            &format!(r#"tollgate_idempotency_total{{route="pay",result="{result}"}}"#),
            0.0,
        );
    }
    assert_series(t, r#"tollgate_circuit_state{upstream="main"}"#, 0.0);
    for result in ["hit", "miss", "stale", "bypass"] {
        assert_series(
            t,
            &format!(r#"tollgate_cache_requests_total{{route="catalog",result="{result}"}}"#),
            0.0,
        );
    }
    for reason in [
        "missing_token",
        "bad_signature",
        "expired",
        "jwks_unavailable",
    ] {
        assert_series(
            t,
            &format!(
                r#"tollgate_auth_failures_total{{route="catalog",plugin="bearer",reason="{reason}"}}"#
            ),
            0.0,
        );
    }
    for result in ["valid", "invalid", "stale", "replay"] {
        assert_series(
            t,
            &format!(r#"tollgate_webhook_verifications_total{{route="hooks",result="{result}"}}"#),
            0.0,
        );
    }
    for reason in ["missing_signature", "bad_signature", "replay"] {
        assert_series(
            t,
            &format!(
                r#"tollgate_auth_failures_total{{route="hooks",plugin="hook",reason="{reason}"}}"#
            ),
            0.0,
        );
    }
    for reason in [
        "denied",
        "breaker_open",
        "auth_service_timeout",
        "auth_service_error",
    ] {
        assert_series(
            t,
            &format!(
                r#"tollgate_auth_failures_total{{route="hooks",plugin="kyc",reason="{reason}"}}"#
            ),
            0.0,
        );
    }
    for result in ["success", "failure"] {
        assert!(
            find_metric(
                t,
                &format!(r#"tollgate_config_reloads_total{{result="{result}"}}"#)
            )
            .is_some(),
            "reloads {result}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_are_at_zero_before_traffic_and_follow_a_reload() {
    let up = TestUpstream::start("main").await;
    let gw = Gateway::builder(&config(up.addr(), true))
        .env("METRICS_TEST_JWT_SECRET", JWT_SECRET)
        .start()
        .await;

    // Before any request.
    let t = gw.metrics().await;
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        let v = find_metric(&t, name).unwrap_or_else(|| panic!("{name} missing:\n{t}"));
        assert!(v >= 0.0, "{name} {v}");
    }
    assert!(find_metric(&t, "process_resident_memory_bytes").unwrap() > 0.0);
    assert!(find_metric(&t, "process_open_fds").unwrap() > 0.0);
    assert!(
        t.lines().any(|l| l
            == format!(
                r#"tollgate_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )),
        "build_info:\n{t}"
    );
    assert!(
        t.lines()
            .any(|l| l == "tollgate_telemetry_spans_dropped_total 0"),
        "spans dropped:\n{t}"
    );
    assert!(
        t.lines()
            .any(|l| l == r#"tollgate_rate_limited_total{plugin="per_client",route="pay"} 0"#),
        "the exact line as exported:\n{t}"
    );
    assert_kept_at_zero(&t);
    // What the reload takes away is there too.
    assert_series(
        &t,
        r#"tollgate_auth_failures_total{route="legacy",plugin="office",reason="ip_denied"}"#,
        0.0,
    );
    assert_series(
        &t,
        r#"tollgate_rate_limited_total{route="legacy",plugin="per_client"}"#,
        0.0,
    );
    assert_series(
        &t,
        r#"tollgate_request_duration_seconds_count{route="legacy"}"#,
        0.0,
    );
    assert_series(
        &t,
        r#"tollgate_upstream_failures_total{upstream="old",kind="connect"}"#,
        0.0,
    );
    // Only where the plugin is: no cache series on `pay`, no breaker of `old`.
    assert_eq!(
        find_metric(
            &t,
            r#"tollgate_cache_requests_total{route="pay",result="hit"}"#
        ),
        None
    );
    assert_eq!(
        find_metric(&t, r#"tollgate_circuit_state{upstream="old"}"#),
        None
    );
    // Nothing answered yet: no request series (its method and status come from traffic).
    assert_eq!(sum_metrics(&t, "tollgate_requests_total"), 0.0, "{t}");

    // Traffic on the route that goes and on one that stays.
    let client = http_client();
    for path in ["/legacy", "/catalog"] {
        let r = client.get(gw.url(path)).send().await.expect("request");
        assert!(r.status().as_u16() < 500, "{path}: {}", r.status());
    }
    let t = gw.metrics().await;
    assert_series(
        &t,
        r#"tollgate_requests_total{route="legacy",method="GET",status="200"}"#,
        1.0,
    );
    assert_series(
        &t,
        r#"tollgate_auth_failures_total{route="catalog",plugin="bearer",reason="missing_token"}"#,
        1.0,
    );

    // The reload removes route `legacy`, upstream `old` and plugin `office`.
    gw.write_config(&config(up.addr(), false));
    let resp = gw.admin_post("/reload", "").await;
    assert_eq!(resp.status(), 200);
    let t = gw.metrics().await;
    for gone in [
        r#"route="legacy""#,
        r#"upstream="old""#,
        r#"plugin="office""#,
    ] {
        let left: Vec<&str> = t.lines().filter(|l| l.contains(gone)).collect();
        assert!(left.is_empty(), "{gone} still exported: {left:#?}");
    }
    // The others stay, with what they counted.
    assert_series(
        &t,
        r#"tollgate_auth_failures_total{route="catalog",plugin="bearer",reason="missing_token"}"#,
        1.0,
    );
    assert_series(
        &t,
        r#"tollgate_request_duration_seconds_count{route="catalog"}"#,
        1.0,
    );
    for route in ["pay", "hooks"] {
        assert_series(
            &t,
            &format!(r#"tollgate_request_duration_seconds_count{{route="{route}"}}"#),
            0.0,
        );
    }
    assert_series(
        &t,
        r#"tollgate_rate_limited_total{route="pay",plugin="per_client"}"#,
        0.0,
    );
    assert_series(
        &t,
        r#"tollgate_upstream_failures_total{upstream="main",kind="connect"}"#,
        0.0,
    );
    assert_series(
        &t,
        r#"tollgate_auth_failures_total{route="hooks",plugin="kyc",reason="denied"}"#,
        0.0,
    );
    assert_series(
        &t,
        r#"tollgate_cache_requests_total{route="catalog",result="hit"}"#,
        0.0,
    );
    assert_series(
        &t,
        r#"tollgate_idempotency_total{route="pay",result="stored"}"#,
        0.0,
    );
    assert_series(&t, r#"tollgate_circuit_state{upstream="main"}"#, 0.0);
    assert_series(
        &t,
        r#"tollgate_config_reloads_total{result="success"}"#,
        1.0,
    );
}
