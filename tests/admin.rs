//! The admin listener (SPEC §6), metrics (§7), reloads (§5) and the access log (§8), through a
//! real gateway process.
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(10);

/// `[server]` + upstream `backend` at `up` + route `one` (`/one`), then `extra` appended.
fn config(up: &TestUpstream, server_extra: &str, extra: &str) -> String {
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
name = "one"
upstream = "backend"
path = "/one"
{extra}
"#,
        addr = up.addr()
    )
}

const ROUTE_TWO: &str = r#"
[[routes]]
name = "two"
upstream = "backend"
path = "/two"
"#;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn file_hash(gw: &Gateway) -> String {
    sha256_hex(&std::fs::read(gw.config_path()).expect("read gateway.toml"))
}

fn rfc3339(s: &serde_json::Value) -> time::OffsetDateTime {
    let s = s.as_str().unwrap_or_else(|| panic!("not a string: {s}"));
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
}

async fn json_of(resp: reqwest::Response) -> serde_json::Value {
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

async fn assert_problem(resp: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(resp.status(), status);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let v = json_of(resp).await;
    assert_eq!(v["status"], status, "{v}");
    for field in ["type", "title", "detail", "request_id"] {
        assert!(v[field].is_string(), "problem field {field} missing: {v}");
    }
    v
}

async fn get_status(client: &reqwest::Client, url: &str) -> u16 {
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .status()
        .as_u16()
}

async fn config_status(gw: &Gateway) -> serde_json::Value {
    let resp = gw.admin_get("/config/status").await;
    assert_eq!(resp.status(), 200);
    json_of(resp).await
}

// ---------------------------------------------------------------------------------------------
// Health, readiness, metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn healthz_and_readyz_answer_200() {
    let up = TestUpstream::start("h").await;
    let gw = Gateway::start(&config(&up, "", "")).await;
    let client = http_client();
    assert_eq!(get_status(&client, &gw.admin_url("/healthz")).await, 200);
    assert_eq!(get_status(&client, &gw.admin_url("/readyz")).await, 200);
    // The admin API is its own listener: the proxy listener does not serve it.
    assert_eq!(get_status(&client, &gw.url("/readyz")).await, 404);
}

#[tokio::test]
async fn metrics_have_the_spec_names_after_traffic() {
    let up = TestUpstream::start("m").await;
    let extra = r#"
[[routes]]
name = "api"
upstream = "backend"
path = "/api"
strip_prefix = "/api"
"#;
    let gw = Gateway::start(&config(&up, "", extra)).await;
    let client = gw.client();

    let r = client.get(gw.url("/api/a")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(gw.url("/api/b"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(gw.url("/api/status/503")).send().await.unwrap();
    assert_eq!(r.status(), 503);

    wait_until_msg(WAIT, "3 requests counted on route api", || async {
        gw.metric_sum(r#"tollgate_requests_total{route="api"}"#)
            .await
            == 3.0
    })
    .await;
    let text = gw.metrics().await;
    let m = |q: &str| find_metric(&text, q);
    assert_eq!(
        m(r#"tollgate_requests_total{route="api",method="GET",status="200"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        m(r#"tollgate_requests_total{route="api",method="POST",status="200"}"#),
        Some(1.0)
    );
    assert_eq!(
        m(r#"tollgate_requests_total{route="api",method="GET",status="503"}"#),
        Some(1.0)
    );

    assert!(
        text.contains("# TYPE tollgate_request_duration_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        m(r#"tollgate_request_duration_seconds_count{route="api"}"#),
        Some(3.0)
    );
    assert_eq!(
        m(r#"tollgate_request_duration_seconds_bucket{route="api",le="+Inf"}"#),
        Some(3.0)
    );
    assert!(m(r#"tollgate_request_duration_seconds_sum{route="api"}"#).is_some());

    assert!(
        text.contains("# TYPE tollgate_upstream_duration_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        m(r#"tollgate_upstream_duration_seconds_count{upstream="backend"}"#),
        Some(3.0)
    );
    assert_eq!(
        m(r#"tollgate_upstream_failures_total{upstream="backend",kind="status"}"#),
        Some(1.0)
    );
    let target = up.addr().to_string();
    assert_eq!(
        m(&format!(
            r#"tollgate_upstream_healthy{{upstream="backend",target="{target}"}}"#
        )),
        Some(1.0),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Config status and reloads
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn config_status_before_any_reload() {
    let up = TestUpstream::start("cs").await;
    let gw = Gateway::start(&config(&up, "", "")).await;

    let resp = gw.admin_get("/config/status").await;
    assert_eq!(resp.status(), 200);
    assert!(resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json")));
    let v = json_of(resp).await;
    assert_eq!(v["hash"], file_hash(&gw), "{v}");
    assert_eq!(v["hash"].as_str().unwrap().len(), 64);
    let loaded = rfc3339(&v["loaded_at"]);
    let now = time::OffsetDateTime::now_utc();
    assert!(
        (now - loaded).abs() < time::Duration::minutes(10),
        "loaded_at {loaded} is not about now ({now})"
    );
    assert!(v["last_reload"].is_null(), "{v}");
}

#[tokio::test]
async fn reload_via_admin_applies_a_valid_config() {
    let up = TestUpstream::start("rl").await;
    let gw = Gateway::start(&config(&up, "", "")).await;
    let client = gw.client();
    let before = config_status(&gw).await;
    assert_eq!(get_status(&client, &gw.url("/two")).await, 404);

    gw.write_config(&config(&up, "", ROUTE_TWO));
    let new_hash = file_hash(&gw);
    assert_ne!(before["hash"], new_hash);

    let resp = gw.admin_post("/reload", "").await;
    assert_eq!(resp.status(), 200);
    let v = json_of(resp).await;
    assert_eq!(v["result"], "success", "{v}");
    assert_eq!(v["hash"], new_hash);

    assert_eq!(get_status(&client, &gw.url("/two")).await, 200);
    assert_eq!(up.last_request().unwrap().path, "/two");
    assert_eq!(get_status(&client, &gw.url("/one")).await, 200);

    let st = config_status(&gw).await;
    assert_eq!(st["hash"], new_hash);
    assert!(rfc3339(&st["loaded_at"]) >= rfc3339(&before["loaded_at"]));
    assert_eq!(st["last_reload"]["result"], "success", "{st}");
    rfc3339(&st["last_reload"]["at"]);
    assert_eq!(st["last_reload"]["errors"], serde_json::json!([]), "{st}");
    // The POST is one reload; the file watcher, if it saw the edit first, is another.
    let n = gw
        .metric(r#"tollgate_config_reloads_total{result="success"}"#)
        .await;
    assert!(matches!(n, Some(1.0) | Some(2.0)), "{n:?}");
    assert_eq!(
        gw.metric(r#"tollgate_config_reloads_total{result="failure"}"#)
            .await,
        Some(0.0)
    );
}

#[tokio::test]
async fn reload_of_an_invalid_config_is_refused_and_the_old_one_keeps_serving() {
    let up = TestUpstream::start("bad").await;
    let gw = Gateway::start(&config(&up, "", "")).await;
    let client = gw.client();
    let old_hash = file_hash(&gw);

    let invalid = r#"
[[routes]]
name = "two"
upstream = "nope"
path = "two"
"#;
    gw.write_config(&config(&up, "", invalid));
    let resp = gw.admin_post("/reload", "").await;
    assert_eq!(resp.status(), 422);
    let v = json_of(resp).await;
    assert_eq!(v["result"], "failure", "{v}");
    let errors: Vec<String> = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors is not a list: {v}"))
        .iter()
        .map(|e| e.as_str().expect("error strings").to_string())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("routes[1].upstream")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("routes[1].path")),
        "{errors:?}"
    );

    // The old config keeps serving.
    assert_eq!(get_status(&client, &gw.url("/one")).await, 200);
    assert_eq!(get_status(&client, &gw.url("/two")).await, 404);

    let st = config_status(&gw).await;
    assert_eq!(st["hash"], old_hash, "{st}");
    assert_eq!(st["last_reload"]["result"], "failure", "{st}");
    rfc3339(&st["last_reload"]["at"]);
    let shown = st["last_reload"]["errors"].to_string();
    assert!(shown.contains("routes[1].upstream"), "{st}");
    // The POST is one refused reload; the file watcher, if it saw the edit first, another.
    let n = gw
        .metric(r#"tollgate_config_reloads_total{result="failure"}"#)
        .await;
    assert!(matches!(n, Some(1.0) | Some(2.0)), "{n:?}");
    assert_eq!(
        gw.metric(r#"tollgate_config_reloads_total{result="success"}"#)
            .await,
        Some(0.0)
    );
    // The refusal is logged with its place.
    gw.wait_for_log("routes[1].upstream", WAIT).await;
}

#[tokio::test]
async fn sighup_reloads_the_config() {
    let up = TestUpstream::start("hup").await;
    let mut gw = Gateway::start(&config(&up, "", "")).await;
    let client = gw.client();
    assert_eq!(get_status(&client, &gw.url("/two")).await, 404);

    gw.write_config(&config(&up, "", ROUTE_TWO));
    let new_hash = file_hash(&gw);
    gw.signal(SIGHUP);
    wait_until_msg(WAIT, "route two to answer after SIGHUP", || async {
        get_status(&client, &gw.url("/two")).await == 200
    })
    .await;
    let st = config_status(&gw).await;
    assert_eq!(st["hash"], new_hash);
    assert_eq!(st["last_reload"]["result"], "success");
    assert!(gw.try_wait().is_none(), "SIGHUP must not stop the gateway");
}

#[tokio::test]
async fn reload_that_changes_listen_is_refused() {
    let up = TestUpstream::start("lst").await;
    let template = config(&up, "", "");
    let gw = Gateway::start(&template).await;
    let client = gw.client();
    let old_hash = file_hash(&gw);

    let other = unused_addr();
    gw.write_config(&template.replace("\"{LISTEN}\"", &format!("\"{other}\"")));
    let resp = gw.admin_post("/reload", "").await;
    assert_eq!(resp.status(), 422);
    let v = json_of(resp).await;
    assert_eq!(v["result"], "failure");
    let errors = v["errors"].to_string();
    assert!(errors.contains("listen"), "{v}");
    assert!(errors.contains("restart"), "{v}");

    assert_eq!(get_status(&client, &gw.url("/one")).await, 200);
    assert_eq!(config_status(&gw).await["hash"], old_hash);
    assert!(
        tokio::net::TcpStream::connect(other).await.is_err(),
        "a listener was opened on the new address"
    );
}

// ---------------------------------------------------------------------------------------------
// /upstreams, unknown paths
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn upstreams_lists_targets_with_weight_and_health() {
    let good = TestUpstream::start("good").await;
    let sick = TestUpstream::start("sick").await;
    sick.set_healthy(false);
    let template = format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
threads = 1

[upstreams.pool]
targets = ["{good}", {{ addr = "{sick}", weight = 3 }}]
[upstreams.pool.health_check]
path = "/healthz"
interval = "100ms"
healthy = 1
unhealthy = 1
timeout = "1s"

[[routes]]
name = "p"
upstream = "pool"
path = "/p"
"#,
        good = good.addr(),
        sick = sick.addr()
    );
    let gw = Gateway::start(&template).await;

    let target_healthy = |v: &serde_json::Value, addr: String| {
        v["upstreams"][0]["targets"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["target"] == addr.as_str()))
            .map(|t| t["healthy"].clone())
    };
    let sick_addr = sick.addr().to_string();
    wait_until_msg(WAIT, "the sick target to be marked unhealthy", || async {
        let v = json_of(gw.admin_get("/upstreams").await).await;
        target_healthy(&v, sick_addr.clone()) == Some(serde_json::json!(false))
    })
    .await;

    let resp = gw.admin_get("/upstreams").await;
    assert_eq!(resp.status(), 200);
    let v = json_of(resp).await;
    let ups = v["upstreams"].as_array().expect("upstreams list");
    assert_eq!(ups.len(), 1, "{v}");
    assert_eq!(ups[0]["name"], "pool");
    assert!(ups[0]["circuit"].is_string(), "{v}");
    let targets = ups[0]["targets"].as_array().expect("targets list");
    assert_eq!(targets.len(), 2, "{v}");
    assert_eq!(targets[0]["target"], good.addr().to_string());
    assert_eq!(targets[0]["weight"], 1);
    assert_eq!(targets[0]["healthy"], true);
    assert_eq!(targets[1]["target"], sick.addr().to_string());
    assert_eq!(targets[1]["weight"], 3);
    assert_eq!(targets[1]["healthy"], false);
    assert_eq!(
        gw.metric(&format!(
            r#"tollgate_upstream_healthy{{upstream="pool",target="{}"}}"#,
            sick.addr()
        ))
        .await,
        Some(0.0)
    );

    // Back to healthy.
    sick.set_healthy(true);
    wait_until_msg(WAIT, "the sick target to recover", || async {
        let v = json_of(gw.admin_get("/upstreams").await).await;
        target_healthy(&v, sick_addr.clone()) == Some(serde_json::json!(true))
    })
    .await;
}

#[tokio::test]
async fn unknown_admin_path_is_a_404_problem() {
    let up = TestUpstream::start("u").await;
    let gw = Gateway::start(&config(&up, "", "")).await;
    assert_problem(gw.admin_get("/no/such/thing").await, 404).await;
    assert_problem(gw.admin_get("/metricsx").await, 404).await;
    // A known path with the wrong method is not a 200 either.
    let resp = gw.admin_get("/reload").await;
    assert_problem(resp, 405).await;
    assert!(config_status(&gw).await["last_reload"].is_null());
}

// ---------------------------------------------------------------------------------------------
// Admin token
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn admin_token_is_required_when_configured() {
    const VAR: &str = "TOLLGATE_TEST_ADMIN_TOKEN";
    const TOKEN: &str = "adm1n-t0ken-for-tests";
    let up = TestUpstream::start("tok").await;
    let gw = Gateway::builder(&config(&up, &format!("admin_token_env = \"{VAR}\""), ""))
        .env(VAR, TOKEN)
        .admin_token(TOKEN)
        .start()
        .await;
    let client = http_client();

    let paths = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/config/status",
        "/upstreams",
    ];
    for path in paths {
        let url = gw.admin_url(path);
        let none = client.get(&url).send().await.unwrap();
        assert_problem(none, 401).await;
        let wrong = client
            .get(&url)
            .bearer_auth("not-the-token")
            .send()
            .await
            .unwrap();
        assert_problem(wrong, 401).await;
        let prefix = client
            .get(&url)
            .bearer_auth(&TOKEN[..TOKEN.len() - 1])
            .send()
            .await
            .unwrap();
        assert_eq!(prefix.status(), 401, "{path} with a token prefix");
        let basic = client
            .get(&url)
            .header("authorization", format!("Basic {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), 401, "{path} with another scheme");
        let right = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(right.status(), 200, "{path} with the token");
    }

    // An unauthenticated reload does nothing.
    gw.write_config(&config(
        &up,
        &format!("admin_token_env = \"{VAR}\""),
        ROUTE_TWO,
    ));
    let resp = client
        .post(gw.admin_url("/reload"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_problem(resp, 401).await;
    assert!(config_status(&gw).await["last_reload"].is_null());
    assert_eq!(get_status(&client, &gw.url("/two")).await, 404);

    let resp = client
        .post(gw.admin_url("/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(get_status(&client, &gw.url("/two")).await, 200);
    // The proxy listener does not need (or see) the admin token.
    assert_eq!(get_status(&client, &gw.url("/one")).await, 200);
}

// ---------------------------------------------------------------------------------------------
// Access log
// ---------------------------------------------------------------------------------------------

const ACCESS_EXTRA_SERVER: &str = r#"plugins = ["request_id"]"#;

fn access_config(up: &TestUpstream, dead: std::net::SocketAddr) -> String {
    let extra = format!(
        r#"
[plugins.request_id]
type = "request_id"

[upstreams.gone]
targets = ["{dead}"]
connect_timeout = "1s"

[[routes]]
name = "api"
upstream = "backend"
path = "/api"

[[routes]]
name = "dead"
upstream = "gone"
path = "/dead"
"#
    );
    config(up, ACCESS_EXTRA_SERVER, &extra)
}

fn access_lines(gw: &Gateway) -> Vec<serde_json::Value> {
    gw.log_json()
        .into_iter()
        .filter(|l| l["target"] == "tollgate::access")
        .collect()
}

async fn wait_access_lines(gw: &Gateway, n: usize) -> Vec<serde_json::Value> {
    wait_until_msg(WAIT, &format!("{n} access log lines"), || async {
        access_lines(gw).len() >= n
    })
    .await;
    access_lines(gw)
}

#[tokio::test]
async fn access_log_has_one_json_line_per_request_with_the_fields() {
    let up = TestUpstream::start("log").await;
    let dead = unused_addr();
    let gw = Gateway::start(&access_config(&up, dead)).await;
    let client = gw.client();

    let resp = client
        .get(gw.url("/api/items?page=2&sort=name"))
        .header("x-request-id", "access-log-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "access-log-1");
    let body_len = resp.bytes().await.unwrap().len();

    let resp = client.get(gw.url("/missing?x=1")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let missing_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();

    let resp = client.post(gw.url("/dead/x")).send().await.unwrap();
    assert_eq!(resp.status(), 502);

    let lines = wait_access_lines(&gw, 3).await;
    assert_eq!(lines.len(), 3, "{lines:#?}");

    let ok = lines
        .iter()
        .find(|l| l["request_id"] == "access-log-1")
        .unwrap_or_else(|| panic!("no line for access-log-1: {lines:#?}"));
    assert!(
        ok.get("timestamp").or_else(|| ok.get("time")).is_some(),
        "{ok}"
    );
    assert_eq!(ok["route"], "api", "{ok}");
    assert_eq!(ok["method"], "GET");
    assert_eq!(
        ok["path"], "/api/items",
        "no query string in the path: {ok}"
    );
    assert_eq!(ok["status"], 200);
    assert!(ok["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{ok}");
    assert_eq!(ok["upstream"], up.addr().to_string());
    assert_eq!(ok["bytes"].as_u64(), Some(body_len as u64), "{ok}");
    assert!(ok.get("consumer").is_some(), "{ok}");
    assert!(ok["consumer"].is_string() || ok["consumer"].is_null());
    assert_eq!(ok["client_ip"], "127.0.0.1");

    let nf = lines
        .iter()
        .find(|l| l["status"] == 404)
        .unwrap_or_else(|| panic!("no 404 line: {lines:#?}"));
    assert_eq!(nf["request_id"], missing_id.as_str(), "{nf}");
    assert_eq!(nf["path"], "/missing");
    assert_eq!(nf["method"], "GET");

    let bad = lines
        .iter()
        .find(|l| l["status"] == 502)
        .unwrap_or_else(|| panic!("no 502 line: {lines:#?}"));
    assert_eq!(bad["route"], "dead", "{bad}");
    assert_eq!(bad["method"], "POST");
    assert_eq!(bad["path"], "/dead/x");
    assert_eq!(bad["upstream"], dead.to_string());

    // Exactly one line per request: a fourth request adds exactly one more. (A new
    // connection: the gateway closes the one that got the 502.)
    let resp = http_client()
        .get(gw.url("/one"))
        .header("x-request-id", "access-log-4")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let lines = wait_access_lines(&gw, 4).await;
    assert_eq!(lines.len(), 4, "{lines:#?}");
    for id in ["access-log-1", "access-log-4"] {
        assert_eq!(
            lines.iter().filter(|l| l["request_id"] == id).count(),
            1,
            "{id}: {lines:#?}"
        );
    }
}

#[tokio::test]
async fn buffered_access_lines_are_all_written_by_exit() {
    // Access lines are buffered (README, Logs): a burst followed at once by
    // SIGINT (fast shutdown: the process exits within milliseconds,
    // before the 100 ms flush) still leaves one line per request when the
    // process has exited: the buffer is written at exit.
    let up = TestUpstream::start("burst").await;
    let dead = unused_addr();
    let mut gw = Gateway::start(&access_config(&up, dead)).await;
    let client = gw.client();
    const N: usize = 300;
    for i in 0..N {
        let resp = client
            .get(gw.url("/api/burst"))
            .header("x-request-id", format!("burst-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    gw.signal(SIGINT);
    assert!(
        gw.wait_exit(WAIT).await.is_some(),
        "no exit after SIGINT; logs:\n{}",
        gw.logs()
    );
    let ids: Vec<String> = access_lines(&gw)
        .iter()
        .filter_map(|l| l["request_id"].as_str().map(str::to_string))
        .filter(|id| id.starts_with("burst-"))
        .collect();
    let want: Vec<String> = (0..N).map(|i| format!("burst-{i}")).collect();
    assert_eq!(ids, want, "every line, once, in order");
}

#[tokio::test]
async fn secrets_never_appear_in_the_logs() {
    const TOKEN: &str = "s3cr3t-token-value";
    const KEY: &str = "topsecret";
    let up = TestUpstream::start("sec").await;
    let dead = unused_addr();
    let gw = Gateway::start(&access_config(&up, dead)).await;
    // A new connection per request, so that no request depends on the previous one's
    // connection handling.
    let client = http_client;

    // A success, a 404, a 502 (Pingora logs proxy errors), and a malformed path (400).
    let ok = client()
        .get(gw.url(&format!("/api/items?api_key={KEY}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // The upstream did get them (the gateway is not expected to drop them, only not log them).
    let r = up.last_request().unwrap();
    assert_eq!(r.path, format!("/api/items?api_key={KEY}"));

    let nf = client()
        .get(gw.url(&format!("/nowhere?api_key={KEY}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(nf.status(), 404);
    let failed = client()
        .get(gw.url(&format!("/dead/x?api_key={KEY}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 502);
    let bad = client()
        .get(gw.url(&format!("/api/%2F?api_key={KEY}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    wait_access_lines(&gw, 4).await;
    let logs = gw.logs();
    assert!(!logs.contains(TOKEN), "bearer token in the logs:\n{logs}");
    assert!(!logs.contains(KEY), "query secret in the logs:\n{logs}");
    assert!(
        !logs.contains("api_key"),
        "query string in the logs:\n{logs}"
    );
}

#[tokio::test]
async fn card_numbers_in_paths_are_masked_in_the_logs() {
    let up = TestUpstream::start("pan").await;
    let dead = unused_addr();
    let gw = Gateway::start(&access_config(&up, dead)).await;
    for path in [
        "/api/cards/4111111111111111",
        "/nowhere/5500005555555559",
        "/dead/4111111111111111",
    ] {
        let _ = http_client().get(gw.url(path)).send().await.unwrap();
    }
    // The upstream still gets the real path: only logs are masked.
    assert_eq!(
        up.last_request().unwrap().path,
        "/api/cards/4111111111111111"
    );
    let access = wait_access_lines(&gw, 3).await;
    let paths: Vec<&str> = access.iter().filter_map(|l| l["path"].as_str()).collect();
    assert!(paths.contains(&"/api/cards/************1111"), "{paths:?}");
    assert!(paths.contains(&"/nowhere/************5559"), "{paths:?}");
    let logs = gw.logs();
    for pan in ["4111111111111111", "5500005555555559"] {
        assert!(
            !logs.contains(pan),
            "a card number reached the logs:\n{logs}"
        );
    }
}
