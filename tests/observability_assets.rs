//! The shipped observability assets (SPEC §11) against a real gateway: every
//! metric name used by `deploy/prometheus/alerts.yml` (and its promtool tests)
//! and by `deploy/grafana/tollgate.json` is one the gateway exports on
//! `/metrics`, once it runs a config with every plugin family and has served a
//! few requests. Plus light structural checks of the files themselves (the
//! dashboard is JSON with the expected variables; every alert has a severity,
//! a summary, a description and a promtool test).
//!
//! `promtool check rules` / `promtool test rules` run in `.ci/run`, not here.
//!
//! How names are found, kept deliberately simple (no YAML parser is a
//! dependency): every token of the asset files that starts at a word boundary
//! with `tollgate_` or `process_` and goes on with `[a-z0-9_]`, prose and
//! comments included (a name a description mentions must exist too). A token
//! is exported when `/metrics` has a sample of that name, or when it names a
//! histogram (or summary) family whose `_bucket`/`_sum`/`_count` samples are
//! there: `tollgate_request_duration_seconds` and
//! `tollgate_request_duration_seconds_bucket` both count, a `_bucket` of a
//! counter does not. A family with no series at all is not exported (the
//! Prometheus client leaves it out), which is what SPEC §11's
//! zero-from-startup rule prevents.
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use common::*;
use sha2::{Digest, Sha256};

const ALERTS: &str = "deploy/prometheus/alerts.yml";
const ALERT_TESTS: &str = "deploy/prometheus/alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/tollgate.json";

const API_KEY: &str = "obs-assets-key-1";
const JWT_SECRET: &str = "obs-assets-jwt-secret-0123456789abcdef";
const WEBHOOK_SECRET: &str = "obs-assets-webhook-secret";

fn read_asset(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `tollgate_…` / `process_…` token of `text` (see the module doc).
fn metric_tokens(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let is_name = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        // Bytes, not `str` slices: the files hold non-ASCII prose (`§`).
        let rest = &bytes[i..];
        let at_boundary = i == 0 || !is_word(bytes[i - 1]);
        if at_boundary && (rest.starts_with(b"tollgate_") || rest.starts_with(b"process_")) {
            let len = rest.iter().take_while(|&&b| is_name(b)).count();
            out.insert(String::from_utf8_lossy(&rest[..len]).into_owned());
            i += len;
        } else {
            i += 1;
        }
    }
    out
}

/// Every name a query may use against this exposition: each sample's name,
/// plus the family name of histograms and summaries (see the module doc).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut types: HashMap<&str, &str> = HashMap::new();
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let line = line.trim();
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut parts = decl.split_whitespace();
            if let (Some(name), Some(ty)) = (parts.next(), parts.next()) {
                types.insert(name, ty);
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or(line.len());
        names.insert(line[..end].to_string());
    }
    let families: Vec<String> = names
        .iter()
        .filter_map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .filter(|base| matches!(types.get(base), Some(&"histogram" | &"summary")))
                .map(str::to_string)
        })
        .collect();
    names.extend(families);
    names
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// One route per plugin family, a healthy upstream with active health checks,
/// a dead one behind a circuit breaker, a forward_auth service that is not
/// there and a Redis that is not there either.
fn config(up: SocketAddr, dead: SocketAddr, no_auth: SocketAddr, no_redis: SocketAddr) -> String {
    let key_sha256 = sha256_hex(API_KEY);
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
plugins = ["request_id"]

[redis]
url = "redis://{no_redis}"
timeout = "200ms"

[plugins.request_id]
type = "request_id"

[plugins.office]
type = "ip_filter"
allow = ["127.0.0.0/8"]

[plugins.browser]
type = "cors"
origins = ["https://app.example.com"]

[plugins.tidy]
type = "headers"
response_set = {{ "x-content-type-options" = "nosniff" }}

[plugins.partner_keys]
type = "api_key"
header = "x-api-key"
keys = [{{ consumer = "acme", key_sha256 = "{key_sha256}" }}]

[plugins.tokens]
type = "jwt"
algorithms = ["HS256"]
secret_env = "OBS_JWT_SECRET"

[plugins.per_client]
type = "rate_limit"
rate = "1/min"
burst = 1
key = "ip"

[plugins.fleet_limit]
type = "rate_limit"
rate = "100/s"
burst = 100
key = "global"
backend = "redis"

[plugins.catalog_cache]
type = "cache"
ttl = "30s"

[plugins.pay_idem]
type = "idempotency"
methods = ["POST"]

[plugins.pay_shape]
type = "json_limits"

[plugins.pay_graph]
type = "graphql"

[plugins.github_events]
type = "webhook_signature"
scheme = "github"
secrets = ["{WEBHOOK_SECRET}"]

[plugins.kyc]
type = "forward_auth"
url = "http://{no_auth}/check"
timeout = "200ms"

[plugins.dead_breaker]
type = "circuit_breaker"
consecutive_failures = 2
open_for = "30s"

[upstreams.main]
targets = ["{up}"]
[upstreams.main.health_check]
path = "/healthz"
interval = "1s"

[upstreams.dead]
targets = ["{dead}"]
connect_timeout = "500ms"

# A queue on a broker that is not there: its series exist at 0 from startup.
[queues.events]
kind = "redis_stream"
url = "redis://{no_redis}"
stream = "tollgate:obs-events"

[[routes]]
name = "events"
queue = "events"
path = "/events"
methods = ["POST"]

[[routes]]
name = "open"
upstream = "main"
path = "/open"
plugins = ["office", "browser", "tidy"]

[[routes]]
name = "keys"
upstream = "main"
path = "/keys"
plugins = ["partner_keys"]

[[routes]]
name = "tokens"
upstream = "main"
path = "/tokens"
plugins = ["tokens"]

[[routes]]
name = "limited"
upstream = "main"
path = "/limited"
plugins = ["per_client"]

[[routes]]
name = "fleet"
upstream = "main"
path = "/fleet"
plugins = ["fleet_limit"]

[[routes]]
name = "cached"
upstream = "main"
path = "/cached"
methods = ["GET", "HEAD"]
plugins = ["catalog_cache"]

[[routes]]
name = "pay"
upstream = "main"
path = "/pay"
methods = ["POST"]
plugins = ["pay_idem", "pay_shape"]

[[routes]]
name = "graph"
upstream = "main"
path = "/graphql"
plugins = ["pay_graph"]

[[routes]]
name = "hooks"
upstream = "main"
path = "=/hooks/github"
methods = ["POST"]
plugins = ["github_events"]

[[routes]]
name = "kyc"
upstream = "main"
path = "/kyc"
plugins = ["kyc"]

[[routes]]
name = "flaky"
upstream = "dead"
path = "/flaky"
plugins = ["dead_breaker"]
"#
    )
}

/// Sends one request and returns its status.
async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    headers: &[(&str, &str)],
    body: &'static str,
) -> u16 {
    let mut req = client.request(method, &url).body(body);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .status()
        .as_u16()
}

#[test]
fn token_scan_finds_names_and_histogram_families() {
    let text = r#"rate(tollgate_requests_total{x="tollgate_no"}[5m]) my_tollgate_x
        process_open_fds  histogram_quantile(0.9, tollgate_a_seconds_bucket)"#;
    let found: Vec<String> = metric_tokens(text).into_iter().collect();
    assert_eq!(
        found,
        [
            "process_open_fds",
            "tollgate_a_seconds_bucket",
            "tollgate_no",
            "tollgate_requests_total"
        ]
    );
    let exposition = "# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_sum 0\nh_count 0\n\
                      # TYPE c counter\nc_count 1\n";
    let names = exported_names(exposition);
    assert!(names.contains("h") && names.contains("h_bucket") && names.contains("c_count"));
    assert!(
        !names.contains("c"),
        "a counter named c_count is no family c"
    );
}

#[test]
fn dashboard_is_grafana_json_with_its_variables() {
    let dash: serde_json::Value =
        serde_json::from_str(&read_asset(DASHBOARD)).expect("tollgate.json is valid JSON");
    assert!(dash["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for want in ["DS_PROMETHEUS", "route", "upstream"] {
        assert!(vars.contains(&want), "no {want} variable in {vars:?}");
    }
    let mut ids = BTreeSet::new();
    let mut exprs = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "{title}: duplicate id"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{title}: data source"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no target");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(
                !metric_tokens(expr).is_empty(),
                "{title}: no metric in {expr:?}"
            );
            exprs += 1;
        }
    }
    assert!(exprs >= 20, "only {exprs} queries");
}

#[test]
fn every_alert_is_labelled_annotated_and_tested() {
    let rules = read_asset(ALERTS);
    let tests = read_asset(ALERT_TESTS);
    let alerts: Vec<&str> = rules
        .split("- alert: ")
        .skip(1)
        .map(|s| s.lines().next().unwrap_or("").trim())
        .collect();
    assert!(alerts.len() >= 12, "alerts: {alerts:?}");
    for chunk in rules.split("- alert: ").skip(1) {
        let name = chunk.lines().next().unwrap_or("").trim();
        for key in ["expr:", "severity:", "summary:", "description:"] {
            assert!(chunk.contains(key), "{name}: no {key}");
        }
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "{name} has no promtool test in {ALERT_TESTS}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_assets_use_is_exported() {
    let up = TestUpstream::start("main").await;
    let (dead, no_auth, no_redis) = (unused_addr(), unused_addr(), unused_addr());
    let gw = Gateway::builder(&config(up.addr(), dead, no_auth, no_redis))
        .env("OBS_JWT_SECRET", JWT_SECRET)
        .start()
        .await;
    let c = gw.client();
    use reqwest::Method;

    // One request through each plugin family, so that the series exist even
    // where SPEC §11's zero-from-startup export does not reach.
    let get = |path: &str| gw.url(path);
    assert_eq!(send(&c, Method::GET, get("/open/a"), &[], "").await, 200);
    assert_eq!(
        send(&c, Method::GET, get("/keys"), &[("x-api-key", API_KEY)], "").await,
        200
    );
    assert_eq!(send(&c, Method::GET, get("/keys"), &[], "").await, 401);
    assert_eq!(send(&c, Method::GET, get("/tokens"), &[], "").await, 401);
    let mut limited = Vec::new();
    for _ in 0..3 {
        limited.push(send(&c, Method::GET, get("/limited"), &[], "").await);
    }
    assert!(limited.contains(&429), "rate limit statuses {limited:?}");
    // Redis is not there: the limit fails open, and the error is counted.
    assert_eq!(send(&c, Method::GET, get("/fleet"), &[], "").await, 200);
    for _ in 0..2 {
        assert_eq!(send(&c, Method::GET, get("/cached/a"), &[], "").await, 200);
    }
    let idem = [("idempotency-key", "obs-1")];
    for _ in 0..2 {
        assert_eq!(send(&c, Method::POST, get("/pay"), &idem, "{}").await, 200);
    }
    let bad_sig = [
        ("x-hub-signature-256", "sha256=00"),
        ("x-github-delivery", "d1"),
    ];
    let hooks = get("/hooks/github");
    assert_eq!(send(&c, Method::POST, hooks, &bad_sig, "{}").await, 401);
    // The authorization service is not there: 503, counted as a failure.
    assert_eq!(send(&c, Method::GET, get("/kyc"), &[], "").await, 503);
    // Two connect failures trip the breaker; the third never reaches the upstream.
    for _ in 0..3 {
        let s = send(&c, Method::GET, get("/flaky"), &[], "").await;
        assert!(s == 502 || s == 503, "flaky: {s}");
    }
    let reload = gw.admin_post("/reload", "").await;
    assert!(reload.status().is_success(), "reload: {}", reload.status());

    // The label values the alerts select on are the ones the gateway uses.
    let text = gw.metrics().await;
    for (sample, what) in [
        (
            r#"tollgate_auth_failures_total{route="kyc",plugin="kyc",reason="auth_service_error"}"#,
            "TollgateForwardAuthFailing's reasons",
        ),
        (
            r#"tollgate_webhook_verifications_total{route="hooks",result="invalid"}"#,
            "TollgateWebhookVerificationFailures' results",
        ),
        (
            r#"tollgate_requests_total{route="kyc",method="GET",status="503"}"#,
            "the status label",
        ),
        (
            r#"tollgate_upstream_failures_total{upstream="dead",kind="connect"}"#,
            "TollgateUpstreamFailures' kinds",
        ),
        (
            r#"tollgate_backend_errors_total{plugin="fleet_limit",backend="redis"}"#,
            "TollgateBackendErrors",
        ),
        (
            r#"tollgate_circuit_state{upstream="dead"}"#,
            "TollgateCircuitOpen (2 = open)",
        ),
    ] {
        let v = find_metric(&text, sample);
        let want = if sample.starts_with("tollgate_circuit_state") {
            2.0
        } else {
            1.0
        };
        assert!(
            v.is_some_and(|v| v >= want),
            "{what}: {sample} is {v:?}, expected >= {want}"
        );
    }

    let mut used: BTreeSet<String> = BTreeSet::new();
    for file in [ALERTS, ALERT_TESTS, DASHBOARD] {
        used.extend(metric_tokens(&read_asset(file)));
    }
    assert!(used.len() >= 20, "too few names found: {used:?}");

    // Health checks publish asynchronously: give the gateway a few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let missing = loop {
        let exported = exported_names(&gw.metrics().await);
        let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break missing.into_iter().cloned().collect::<Vec<String>>();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        missing.is_empty(),
        "metric names used by {ALERTS} / {DASHBOARD} that /metrics does not carry: {missing:?}\n\
         /metrics:\n{}",
        gw.metrics().await
    );
}
