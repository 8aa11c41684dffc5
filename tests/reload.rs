//! Hot reload (SPEC §5, issue 5) through real gateway processes and real upstreams: edits seen
//! by the file watcher, refused edits, one edit seen by three triggers, zero failed requests
//! under load across many reloads, plugin state carried over, in-flight requests finishing on
//! their snapshot, certificate files replaced in place, listener changes refused.
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(15);

const SERVER: &str = r#"
[server]
listen = "{LISTEN}"
admin_listen = "{ADMIN}"
threads = 2
"#;

fn upstream(name: &str, addr: SocketAddr) -> String {
    format!(
        r#"
[upstreams.{name}]
targets = ["{addr}"]
connect_timeout = "1s"
read_timeout = "5s"
"#
    )
}

fn route(name: &str, upstream: &str, path: &str, plugins: &[&str]) -> String {
    let plugins: Vec<String> = plugins.iter().map(|p| format!("{p:?}")).collect();
    format!(
        r#"
[[routes]]
name = "{name}"
upstream = "{upstream}"
path = "{path}"
plugins = [{}]
"#,
        plugins.join(", ")
    )
}

/// A `headers` plugin that sets response header `name: value`.
fn stamp(plugin: &str, name: &str, value: &str) -> String {
    format!(
        r#"
[plugins.{plugin}]
type = "headers"
response_set = {{ "{name}" = "{value}" }}
"#
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The config hash the gateway reports for the file as it is on disk now.
fn file_hash(gw: &Gateway) -> String {
    sha256_hex(&std::fs::read(gw.config_path()).expect("read gateway.toml"))
}

/// 1-based number of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
        + 1
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Resp {
    let resp = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("body of {url}: {e}")),
    }
}

async fn status_of(client: &reqwest::Client, url: &str) -> u16 {
    get(client, url).await.status
}

async fn config_status(gw: &Gateway) -> serde_json::Value {
    let resp = gw.admin_get("/config/status").await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("status body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("/config/status not JSON ({e}): {text}"))
}

async fn reloads(gw: &Gateway, result: &str) -> f64 {
    gw.metric(&format!(
        r#"tollgate_config_reloads_total{{result="{result}"}}"#
    ))
    .await
    .unwrap_or(0.0)
}

/// Waits until `/config/status` reports the file on disk as the running config.
async fn wait_applied(gw: &Gateway, what: &str) {
    let want = file_hash(gw);
    wait_until_msg(WAIT, what, || {
        let want = want.clone();
        async move { config_status(gw).await["hash"] == want.as_str() }
    })
    .await;
    let st = config_status(gw).await;
    assert_eq!(st["last_reload"]["result"], "success", "{st}");
}

// ---------------------------------------------------------------------------------------------
// Edits through the file watcher
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_applies_edits_that_add_change_and_remove_routes_upstreams_and_plugins() {
    let one = TestUpstream::start("one").await;
    let two = TestUpstream::start("two").await;
    let three = TestUpstream::start("three").await;
    let v0 = [
        SERVER,
        &upstream("one", one.addr()),
        &route("a", "one", "/a", &[]),
    ]
    .concat();
    let gw = Gateway::start(&v0).await;
    let c = gw.client();

    let r = get(&c, &gw.url("/a")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-upstream"), Some("one"));
    assert_eq!(r.header("x-tag"), None);
    assert_eq!(status_of(&c, &gw.url("/b")).await, 404);

    // Add an upstream, a route to it and a plugin on the existing route.
    let v1 = [
        SERVER,
        &upstream("one", one.addr()),
        &upstream("two", two.addr()),
        &stamp("tag", "x-tag", "v1"),
        &route("a", "one", "/a", &["tag"]),
        &route("b", "two", "/b", &[]),
    ]
    .concat();
    gw.write_config(&v1);
    wait_until_msg(WAIT, "the added route /b to answer", || async {
        status_of(&c, &gw.url("/b")).await == 200
    })
    .await;
    let r = get(&c, &gw.url("/b")).await;
    assert_eq!(r.header("x-upstream"), Some("two"));
    // All of the edit is in force as soon as any of it is.
    let r = get(&c, &gw.url("/a")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), Some("one"));
    assert_eq!(r.header("x-tag"), Some("v1"), "the added plugin runs");
    wait_applied(&gw, "the first edit in /config/status").await;

    // Change: upstream `two` gets another target, route b another path, route a another
    // upstream, the plugin another value.
    let v2 = [
        SERVER,
        &upstream("one", one.addr()),
        &upstream("two", three.addr()),
        &stamp("tag", "x-tag", "v2"),
        &route("a", "two", "/a", &["tag"]),
        &route("b", "two", "/bee", &[]),
    ]
    .concat();
    gw.write_config(&v2);
    wait_until_msg(WAIT, "the changed route /bee to answer", || async {
        status_of(&c, &gw.url("/bee")).await == 200
    })
    .await;
    assert_eq!(
        get(&c, &gw.url("/bee")).await.header("x-upstream"),
        Some("three"),
        "the changed upstream target is used"
    );
    assert_eq!(
        status_of(&c, &gw.url("/b")).await,
        404,
        "the old path is gone"
    );
    let r = get(&c, &gw.url("/a")).await;
    assert_eq!(
        r.header("x-upstream"),
        Some("three"),
        "route a follows its new upstream"
    );
    assert_eq!(r.header("x-tag"), Some("v2"), "the changed plugin runs");
    wait_applied(&gw, "the second edit in /config/status").await;

    // Remove the route, the upstream and the plugin again.
    let v3 = [
        SERVER,
        &upstream("one", one.addr()),
        &route("a", "one", "/a", &[]),
    ]
    .concat();
    gw.write_config(&v3);
    wait_until_msg(WAIT, "the removed route /bee to answer 404", || async {
        status_of(&c, &gw.url("/bee")).await == 404
    })
    .await;
    let r = get(&c, &gw.url("/a")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), Some("one"));
    assert_eq!(r.header("x-tag"), None, "the removed plugin no longer runs");
    wait_applied(&gw, "the third edit in /config/status").await;

    assert_eq!(reloads(&gw, "success").await, 3.0, "one reload per edit");
    assert_eq!(reloads(&gw, "failure").await, 0.0);
    assert!(gw.logs().contains("config reloaded"), "{}", gw.logs());
}

// ---------------------------------------------------------------------------------------------
// Invalid edits
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_invalid_edit_is_refused_and_the_old_config_keeps_serving() {
    let up = TestUpstream::start("bad").await;
    let base = [SERVER, &upstream("backend", up.addr())].concat();
    let good = [base.as_str(), &route("one", "backend", "/one", &[])].concat();
    let gw = Gateway::start(&good).await;
    let c = gw.client();
    let old_hash = file_hash(&gw);
    let old_loaded_at = config_status(&gw).await["loaded_at"].clone();
    assert!(old_loaded_at.is_string());
    let route_two_ok = route("two", "backend", "/two", &[]);

    // (name, template, text every error list must contain somewhere)
    let mut cases: Vec<(&str, String, Vec<String>)> = Vec::new();

    let syntax = format!("{good}\n[[routes]\nname = \"two\"\n");
    // The broken table header is the last line reading `[[routes]`.
    let line = syntax
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[routes]")
        .map(|(i, _)| i + 1)
        .last()
        .expect("broken header");
    cases.push((
        "syntax error",
        syntax,
        vec![format!("gateway.toml:{line}:")],
    ));

    let unknown = format!("{good}{}colour = \"blue\"\n", route_two_ok);
    let line = line_of(&unknown, "colour");
    cases.push((
        "unknown key",
        unknown,
        vec![
            "routes[1].colour".to_string(),
            format!("gateway.toml:{line}:"),
        ],
    ));

    let dangling = format!("{good}{}", route("two", "nowhere", "/two", &["ghost"]));
    let line = line_of(&dangling, "\"nowhere\"");
    cases.push((
        "dangling references",
        dangling,
        vec![
            "routes[1].upstream".to_string(),
            format!("gateway.toml:{line}:"),
            "routes[1].plugins[0]".to_string(),
        ],
    ));

    // A half-written file: the new config cut off in the middle of a string.
    let full = format!("{good}{route_two_ok}");
    let cut = full.rfind("/two").expect("route two path") + 2;
    let truncated = full[..cut].to_string();
    let line = truncated.lines().count();
    cases.push((
        "truncated file",
        truncated,
        vec![format!("gateway.toml:{line}:")],
    ));

    // Truncated to nothing (a writer that opened with O_TRUNC and has not written yet).
    cases.push(("empty file", String::new(), vec![]));

    for (i, (kind, template, wanted)) in cases.iter().enumerate() {
        let failures = i as f64 + 1.0;
        gw.write_config(template);
        wait_until_msg(WAIT, &format!("the {kind} to be refused"), || async {
            reloads(&gw, "failure").await >= failures
        })
        .await;

        let st = config_status(&gw).await;
        assert_eq!(st["last_reload"]["result"], "failure", "{kind}: {st}");
        assert!(st["last_reload"]["at"].is_string(), "{kind}: {st}");
        let errors: Vec<String> = st["last_reload"]["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{kind}: errors is not a list: {st}"))
            .iter()
            .map(|e| e.as_str().expect("error strings").to_string())
            .collect();
        assert!(!errors.is_empty(), "{kind}: no error shown: {st}");
        for w in wanted {
            assert!(
                errors.iter().any(|e| e.contains(w.as_str())),
                "{kind}: no error mentions {w:?}: {errors:#?}"
            );
            // ... and the refusal is logged with its place.
            gw.wait_for_log(w, WAIT).await;
        }
        // The config still in force is the old one, with its hash and load time.
        assert_eq!(st["hash"], old_hash.as_str(), "{kind}: {st}");
        assert_eq!(st["loaded_at"], old_loaded_at, "{kind}: {st}");
        assert_eq!(
            reloads(&gw, "failure").await,
            failures,
            "{kind}: counted once"
        );
        assert_eq!(reloads(&gw, "success").await, 0.0, "{kind}");

        // The old config keeps serving, untouched.
        let r = get(&c, &gw.url("/one")).await;
        assert_eq!(r.status, 200, "{kind}: {}", r.body);
        assert_eq!(r.header("x-upstream"), Some("bad"));
        assert_eq!(status_of(&c, &gw.url("/two")).await, 404, "{kind}");
    }

    // A valid edit afterwards is applied.
    gw.write_config(&format!("{good}{route_two_ok}"));
    wait_until_msg(WAIT, "the fixed config to serve /two", || async {
        status_of(&c, &gw.url("/two")).await == 200
    })
    .await;
    wait_applied(&gw, "the fixed config in /config/status").await;
    let st = config_status(&gw).await;
    assert_eq!(st["last_reload"]["errors"], serde_json::json!([]), "{st}");
    assert_eq!(reloads(&gw, "success").await, 1.0);
    assert_eq!(reloads(&gw, "failure").await, cases.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_listen_is_refused_and_says_a_restart_or_upgrade_is_needed() {
    let up = TestUpstream::start("lst").await;
    let template = [
        SERVER,
        &upstream("backend", up.addr()),
        &route("one", "backend", "/one", &[]),
    ]
    .concat();
    let gw = Gateway::start(&template).await;
    let c = gw.client();
    let old_hash = file_hash(&gw);

    let other = unused_addr();
    // Also add a route: nothing of a refused config may be applied.
    let changed = format!(
        "{}{}",
        template.replace("listen = \"{LISTEN}\"", &format!("listen = \"{other}\"")),
        route("two", "backend", "/two", &[])
    );
    assert_ne!(changed, template);
    gw.write_config(&changed);
    wait_until_msg(WAIT, "the listen change to be refused", || async {
        reloads(&gw, "failure").await >= 1.0
    })
    .await;

    let st = config_status(&gw).await;
    assert_eq!(st["last_reload"]["result"], "failure", "{st}");
    assert_eq!(st["hash"], old_hash.as_str(), "{st}");
    let errors = st["last_reload"]["errors"].to_string();
    assert!(errors.contains("listen"), "{st}");
    assert!(
        errors.contains("restart") || errors.contains("upgrade"),
        "the refusal must say a restart/upgrade is needed: {st}"
    );
    gw.wait_for_log("server.listen", WAIT).await;

    assert_eq!(status_of(&c, &gw.url("/one")).await, 200);
    assert_eq!(status_of(&c, &gw.url("/two")).await, 404, "nothing applied");
    assert!(
        tokio::net::TcpStream::connect(other).await.is_err(),
        "a listener was opened on the new address"
    );
    assert_eq!(reloads(&gw, "success").await, 0.0);
}

// ---------------------------------------------------------------------------------------------
// One edit, three triggers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_edit_seen_by_the_watcher_sighup_and_post_reload_is_applied_once() {
    let up = TestUpstream::start("tri").await;
    let base = [
        SERVER,
        &upstream("backend", up.addr()),
        &route("one", "backend", "/one", &[]),
    ]
    .concat();
    let mut gw = Gateway::start(&base).await;
    let c = gw.client();
    assert_eq!(reloads(&gw, "success").await, 0.0);

    // The watcher alone: an edit is one reload, and the events that follow it (the file was
    // written, then closed) change nothing and count nothing.
    let edit = format!("{base}{}", route("two", "backend", "/two", &[]));
    gw.write_config(&edit);
    wait_until_msg(WAIT, "the watcher to apply the edit", || async {
        status_of(&c, &gw.url("/two")).await == 200
    })
    .await;
    wait_applied(&gw, "the edit in /config/status").await;
    assert_eq!(reloads(&gw, "success").await, 1.0, "one edit, one reload");

    // One edit seen by the watcher, SIGHUP and POST /reload: whichever comes first applies it,
    // the others find it applied. The config is swapped once (one `loaded_at`), and each
    // request for a reload is answered with the running hash.
    let edit2 = format!("{edit}{}", route("three", "backend", "/three", &[]));
    gw.write_config(&edit2);
    let hash = file_hash(&gw);
    gw.signal(SIGHUP);
    let resp = gw.admin_post("/reload", "").await;
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.expect("reload JSON");
    assert_eq!(v["result"], "success", "{v}");
    assert_eq!(v["hash"], hash.as_str(), "{v}");
    assert_eq!(status_of(&c, &gw.url("/three")).await, 200);
    let loaded_at = config_status(&gw).await["loaded_at"].clone();
    gw.wait_for_log("SIGHUP", WAIT).await;
    let v: serde_json::Value = gw.admin_post("/reload", "").await.json().await.unwrap();
    assert_eq!(v["hash"], hash.as_str(), "{v}");
    // SIGHUP and both POSTs were requested reloads, each successful (the watcher may have
    // applied the edit first: it counts only if it did).
    wait_until_msg(WAIT, "the SIGHUP reload to be counted", || async {
        reloads(&gw, "success").await >= 4.0
    })
    .await;
    assert!(reloads(&gw, "success").await <= 5.0);
    let st = config_status(&gw).await;
    assert_eq!(st["loaded_at"], loaded_at, "swapped once: {st}");
    assert_eq!(st["hash"], hash.as_str(), "{st}");
    assert_eq!(reloads(&gw, "failure").await, 0.0);
    assert!(gw.try_wait().is_none(), "SIGHUP must not stop the gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_reload_that_finds_no_change_is_recorded_and_counted() {
    let up = TestUpstream::start("same").await;
    let base = [
        SERVER,
        &upstream("backend", up.addr()),
        &route("one", "backend", "/one", &[]),
    ]
    .concat();
    let gw = Gateway::start(&base).await;
    // Both outcomes are exported from startup, at 0.
    let text = gw.metrics().await;
    for result in ["success", "failure"] {
        let series = format!(r#"tollgate_config_reloads_total{{result="{result}"}}"#);
        assert_eq!(
            find_metric(&text, &series),
            Some(0.0),
            "{series} in:\n{text}"
        );
    }
    let st = config_status(&gw).await;
    assert!(st["last_reload"].is_null(), "{st}");
    let (hash, loaded_at) = (st["hash"].clone(), st["loaded_at"].clone());

    for n in 1..=2 {
        let resp = gw.admin_post("/reload", "").await;
        assert_eq!(resp.status(), 200);
        let v: serde_json::Value = resp.json().await.expect("reload JSON");
        assert_eq!(v["hash"], hash, "{v}");
        let st = config_status(&gw).await;
        assert_eq!(st["last_reload"]["result"], "success", "{st}");
        assert!(st["last_reload"]["at"].is_string(), "{st}");
        assert_eq!(st["last_reload"]["errors"], serde_json::json!([]), "{st}");
        assert_eq!(st["loaded_at"], loaded_at, "nothing was swapped: {st}");
        assert_eq!(reloads(&gw, "success").await, n as f64);
    }
    // SIGHUP is a request for a reload as well.
    gw.signal(SIGHUP);
    wait_until_msg(WAIT, "the SIGHUP reload to be counted", || async {
        reloads(&gw, "success").await == 3.0
    })
    .await;

    // A broken file is refused by the watcher once; asking again refuses it again, with the
    // same errors, recorded and counted.
    gw.write_config(&format!("{base}\n[[routes]]\nname = \"bad\"\n"));
    wait_until_msg(WAIT, "the watcher to refuse the broken file", || async {
        reloads(&gw, "failure").await == 1.0
    })
    .await;
    let first = config_status(&gw).await["last_reload"].clone();
    let resp = gw.admin_post("/reload", "").await;
    assert_eq!(resp.status(), 422);
    let v: serde_json::Value = resp.json().await.expect("reload JSON");
    assert_eq!(v["errors"], first["errors"], "{v}");
    assert_eq!(reloads(&gw, "failure").await, 2.0);
    let st = config_status(&gw).await;
    assert_eq!(st["last_reload"]["result"], "failure", "{st}");
    assert_eq!(st["hash"], hash, "the old config stays: {st}");
    assert_eq!(reloads(&gw, "success").await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_the_running_config_after_a_refused_edit_is_recorded_as_a_success() {
    let up = TestUpstream::start("same").await;
    let base = [
        SERVER,
        &upstream("backend", up.addr()),
        &route("one", "backend", "/one", &[]),
    ]
    .concat();
    let gw = Gateway::start(&base).await;
    let hash = config_status(&gw).await["hash"].clone();
    gw.write_config(&format!("{base}\n[[routes]]\nname = \"bad\"\n"));
    wait_until_msg(WAIT, "the watcher to refuse the broken file", || async {
        reloads(&gw, "failure").await == 1.0
    })
    .await;
    assert_eq!(config_status(&gw).await["last_reload"]["result"], "failure");

    // The operator puts the file back as it was: the watcher finds the running config.
    gw.write_config(&base);
    wait_until_msg(
        WAIT,
        "the restored file to be recorded as a success",
        || async { config_status(&gw).await["last_reload"]["result"] == "success" },
    )
    .await;
    let st = config_status(&gw).await;
    assert_eq!(st["last_reload"]["errors"], serde_json::json!([]), "{st}");
    assert_eq!(st["hash"], hash, "nothing was swapped: {st}");
    assert_eq!(reloads(&gw, "success").await, 1.0);
    assert_eq!(reloads(&gw, "failure").await, 1.0);
    // Touching the file again is no reload: counted once.
    gw.write_config(&base);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(reloads(&gw, "success").await, 1.0);
    assert_eq!(status_of(&gw.client(), &gw.url("/one")).await, 200);
}

// ---------------------------------------------------------------------------------------------
// Zero failed requests under load
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    total: AtomicUsize,
    ok_a: AtomicUsize,
    ok_b: AtomicUsize,
    failed: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut e = self.errors.lock().unwrap();
        if e.len() < 20 {
            e.push(what);
        }
    }

    fn done(&self) -> usize {
        self.ok_a.load(Ordering::SeqCst)
            + self.ok_b.load(Ordering::SeqCst)
            + self.failed.load(Ordering::SeqCst)
    }
}

async fn load_client(
    client: reqwest::Client,
    url: String,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) {
    const MAX_REQUESTS: usize = 200_000;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) && n < MAX_REQUESTS && Instant::now() < deadline {
        n += 1;
        tally.total.fetch_add(1, Ordering::SeqCst);
        let res = client.get(format!("{url}?n={n}")).send().await;
        match res {
            Err(e) => tally.fail(format!("request error: {e:?}")),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let tag = resp
                    .headers()
                    .get("x-config")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match resp.bytes().await {
                    Err(e) => tally.fail(format!("body error: {e:?}")),
                    Ok(_) if status != 200 => tally.fail(format!("status {status}")),
                    Ok(_) => match tag.as_deref() {
                        Some("a") => {
                            tally.ok_a.fetch_add(1, Ordering::SeqCst);
                        }
                        Some("b") => {
                            tally.ok_b.fetch_add(1, Ordering::SeqCst);
                        }
                        other => tally.fail(format!("x-config {other:?}")),
                    },
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_fails_under_load_across_many_reloads() {
    const CLIENTS: usize = 6;
    const RELOADS: usize = 24;
    const MIN_DURATION: Duration = Duration::from_secs(10);

    let up = TestUpstream::start("load").await;
    // Two configs that differ only in a response header set by a plugin.
    let config = |tag: &str| {
        [
            SERVER,
            &upstream("backend", up.addr()),
            &stamp("stamp", "x-config", tag),
            &route("load", "backend", "/load", &["stamp"]),
        ]
        .concat()
    };
    let gw = Gateway::start(&config("a")).await;
    let url = gw.url("/load");

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let hard_deadline = Instant::now() + Duration::from_secs(60);
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        // Half keep connections alive, half open a new connection for every request.
        let client = if i.is_multiple_of(2) {
            gw.client()
        } else {
            reqwest::Client::builder()
                .no_proxy()
                .http1_only()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client")
        };
        clients.push(tokio::spawn(load_client(
            client,
            url.clone(),
            tally.clone(),
            stop.clone(),
            hard_deadline,
        )));
    }
    wait_until_msg(WAIT, "the clients to get going", || async {
        tally.done() >= 50
    })
    .await;

    let started = Instant::now();
    let probe = gw.client();
    for i in 0..RELOADS {
        let tag = if i.is_multiple_of(2) { "b" } else { "a" };
        gw.write_config(&config(tag));
        let want = file_hash(&gw);
        let resp = gw.admin_post("/reload", "").await;
        assert_eq!(resp.status(), 200, "reload {i}");
        let v: serde_json::Value = resp.json().await.expect("reload JSON");
        assert_eq!(v["hash"], want.as_str(), "reload {i}: {v}");
        // New requests see the new snapshot at once.
        let r = get(&probe, &url).await;
        assert_eq!(r.status, 200, "reload {i}: {}", r.body);
        assert_eq!(r.header("x-config"), Some(tag), "reload {i}");
        // Let the load run on this config for a while (pacing, not synchronisation), and
        // make sure the clients made progress on it.
        let before = tally.done();
        tokio::time::sleep_until(
            (started + MIN_DURATION.mul_f64((i + 1) as f64 / RELOADS as f64)).into(),
        )
        .await;
        wait_until_msg(WAIT, "the clients to make progress", || async {
            tally.done() > before
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client task");
    }
    let elapsed = started.elapsed();

    let total = tally.total.load(Ordering::SeqCst);
    let (a, b) = (
        tally.ok_a.load(Ordering::SeqCst),
        tally.ok_b.load(Ordering::SeqCst),
    );
    let failed = tally.failed.load(Ordering::SeqCst);
    let errors = tally.errors.lock().unwrap().clone();
    eprintln!(
        "load: {total} requests ({a} config a, {b} config b, {failed} failed) in {elapsed:?}"
    );
    assert_eq!(failed, 0, "failed requests: {errors:#?}");
    assert_eq!(a + b, total, "every request counted");
    assert!(elapsed >= MIN_DURATION, "{elapsed:?}");
    assert!(total >= 500, "too little load to mean anything: {total}");
    assert!(a > 0 && b > 0, "both configs answered: a={a} b={b}");
    assert_eq!(reloads(&gw, "success").await, RELOADS as f64);
    assert_eq!(reloads(&gw, "failure").await, 0.0);
}

// ---------------------------------------------------------------------------------------------
// Plugin state carried over
// ---------------------------------------------------------------------------------------------

fn stateful_config(limit_rate: &str, open_for: &str, api: SocketAddr, flaky: SocketAddr) -> String {
    format!(
        r#"{SERVER}
[plugins.limit]
type = "rate_limit"
rate = "{limit_rate}"
burst = 5
key = "ip"

[plugins.breaker]
type = "circuit_breaker"
consecutive_failures = 2
open_for = "{open_for}"
half_open_requests = 1

[plugins.idem]
type = "idempotency"
methods = ["POST"]
{api_up}{flaky_up}{limited}{fragile}{pay}"#,
        api_up = upstream("api", api),
        flaky_up = upstream("flaky", flaky),
        limited = route("limited", "api", "/limited", &["limit"]),
        fragile = route("fragile", "flaky", "/status", &["breaker"]),
        pay = route("pay", "api", "/pay", &["idem"]),
    )
}

fn remaining(r: &Resp) -> Option<u32> {
    r.header("ratelimit-remaining")
        .and_then(|v| v.trim().parse().ok())
}

async fn circuit(gw: &Gateway, upstream: &str) -> String {
    let v: serde_json::Value = gw.admin_get("/upstreams").await.json().await.unwrap();
    v["upstreams"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == upstream))
        .map(|u| u["circuit"].as_str().unwrap_or("?").to_string())
        .unwrap_or_else(|| panic!("no upstream {upstream} in {v}"))
}

async fn pay(client: &reqwest::Client, gw: &Gateway, key: &str) -> Resp {
    let resp = client
        .post(gw.url("/pay"))
        .header("idempotency-key", key)
        .body(r#"{"amount":"10.00"}"#)
        .send()
        .await
        .expect("POST /pay");
    Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.expect("body"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_state_survives_an_unrelated_reload_and_a_changed_definition_starts_fresh() {
    let api = TestUpstream::start("api").await;
    let flaky = TestUpstream::start("flaky").await;
    let v0 = stateful_config("5/h", "1h", api.addr(), flaky.addr());
    let gw = Gateway::start(&v0).await;
    let c = gw.client();

    // Half-use the limit: 3 of a burst of 5.
    for want in [4, 3, 2] {
        let r = get(&c, &gw.url("/limited")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(remaining(&r), Some(want), "{:?}", r.headers);
    }
    // Open the breaker: two upstream 503s in a row.
    for _ in 0..2 {
        let r = get(&c, &gw.url("/status/503")).await;
        assert_eq!(r.status, 503);
        assert_eq!(
            r.header("x-upstream"),
            Some("flaky"),
            "the upstream's own 503"
        );
    }
    let r = get(&c, &gw.url("/status/200")).await;
    assert_eq!(r.status, 503, "the open breaker answers: {}", r.body);
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    assert_eq!(r.header("x-upstream"), None);
    assert_eq!(flaky.hits(), 2);
    assert_eq!(circuit(&gw, "flaky").await, "open");
    // Store an idempotency record.
    let first = pay(&c, &gw, "order-1").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let api_hits = api.hits();

    // An unrelated reload: one more route.
    let v1 = format!("{v0}{}", route("other", "api", "/other", &[]));
    gw.write_config(&v1);
    wait_applied(&gw, "the unrelated edit").await;
    assert_eq!(status_of(&c, &gw.url("/other")).await, 200);

    let r = get(&c, &gw.url("/limited")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        remaining(&r),
        Some(1),
        "the half-used limit kept its state: {:?}",
        r.headers
    );
    assert_eq!(
        circuit(&gw, "flaky").await,
        "open",
        "the breaker stayed open"
    );
    let r = get(&c, &gw.url("/status/200")).await;
    assert_eq!(r.status, 503, "the breaker stayed open: {}", r.body);
    assert_eq!(flaky.hits(), 2, "the open breaker kept traffic away");
    let again = pay(&c, &gw, "order-1").await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.header("idempotent-replayed"),
        Some("true"),
        "{:?}",
        again.headers
    );
    assert_eq!(again.body, first.body);
    assert_eq!(
        api.hits(),
        api_hits + 2,
        "only /other and /limited reached the api"
    );

    // A changed limit definition starts fresh: the full burst again.
    let v2 = format!(
        "{}{}",
        stateful_config("6/h", "1h", api.addr(), flaky.addr()),
        route("other", "api", "/other", &[])
    );
    gw.write_config(&v2);
    wait_applied(&gw, "the changed limit").await;
    let r = get(&c, &gw.url("/limited")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        remaining(&r),
        Some(4),
        "a changed limit starts with a full burst: {:?}",
        r.headers
    );
    assert_eq!(
        circuit(&gw, "flaky").await,
        "open",
        "the unchanged breaker stayed open"
    );

    // A changed breaker definition starts closed.
    let v3 = format!(
        "{}{}",
        stateful_config("6/h", "2h", api.addr(), flaky.addr()),
        route("other", "api", "/other", &[])
    );
    gw.write_config(&v3);
    wait_applied(&gw, "the changed breaker").await;
    assert_eq!(circuit(&gw, "flaky").await, "closed");
    let r = get(&c, &gw.url("/status/200")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(flaky.hits(), 3);
    let r = get(&c, &gw.url("/limited")).await;
    assert_eq!(
        remaining(&r),
        Some(3),
        "the unchanged (new) limit kept its state"
    );
}

// ---------------------------------------------------------------------------------------------
// In flight
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_finishes_on_the_route_a_reload_removed() {
    let up = TestUpstream::start("slowup").await;
    let keep = route("keep", "backend", "/keep", &[]);
    let slow = route("slow", "backend", "/slow", &[]);
    let v0 = [SERVER, &upstream("backend", up.addr()), &keep, &slow].concat();
    let gw = Gateway::start(&v0).await;

    let client = gw.client();
    let url = gw.url("/slow?ms=1500");
    let in_flight = tokio::spawn(async move {
        let resp = client.get(&url).send().await.expect("slow request");
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("slow body"))
    });
    wait_until_msg(WAIT, "the slow request to reach the upstream", || async {
        up.requests().iter().any(|r| r.path_only() == "/slow")
    })
    .await;

    gw.write_config(&[SERVER, &upstream("backend", up.addr()), &keep].concat());
    let resp = gw.admin_post("/reload", "").await;
    assert_eq!(resp.status(), 200);
    assert!(
        !in_flight.is_finished(),
        "premise: the slow request must still be in flight when the reload is done"
    );
    let c = gw.client();
    let r = get(&c, &gw.url("/slow?ms=1")).await;
    assert_eq!(
        r.status, 404,
        "a new request sees the new config: {}",
        r.body
    );
    assert_eq!(status_of(&c, &gw.url("/keep")).await, 200);

    let (status, body) = in_flight.await.expect("slow task");
    assert_eq!(
        status, 200,
        "the request in flight finished on its old route: {body}"
    );
    assert!(body.contains("/slow?ms=1500"), "{body}");
    assert_eq!(
        up.requests()
            .iter()
            .filter(|r| r.path_only() == "/slow")
            .count(),
        1,
        "the 404 never reached the upstream"
    );
}

// ---------------------------------------------------------------------------------------------
// Certificate files replaced in place
// ---------------------------------------------------------------------------------------------

fn tls_template(up: SocketAddr) -> String {
    format!(
        r#"{SERVER}
[[server.tls]]
listen = "{{TLS_LISTEN}}"
cert = "cert.pem"
key = "key.pem"
{}{}"#,
        upstream("backend", up),
        route("tls", "backend", "/tls", &[])
    )
}

/// A raw TLS client connection trusting only `ca_pem`, for host `host`.
async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    host: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).expect("server name");
    connector.connect(name, tcp).await
}

/// Reads one response with a Content-Length body: (status, body).
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> (u16, String) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("response timed out")
            .expect("read response");
        assert!(
            n > 0,
            "EOF before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad head {head:?}"));
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length in {head:?}"));
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("body timed out")
            .expect("read body");
        assert!(n > 0, "EOF in the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (
        status,
        String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_is_served_to_new_handshakes() {
    let up = TestUpstream::start("tlsup").await;
    let first = TestCerts::generate(&["api.test"]);
    let gw = Gateway::builder(&tls_template(up.addr()))
        .file("cert.pem", &first.cert_pem)
        .file("key.pem", &first.key_pem)
        .start()
        .await;
    let tls = gw.tls_addr();
    let r = get(
        &gw.https_client(&first.ca_pem, &["api.test"]),
        &gw.https_url("api.test", "/tls"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A connection made before the swap.
    let mut before = tls_connect(tls, &first.ca_pem, "api.test")
        .await
        .expect("TLS with the first certificate");
    before
        .write_all(b"GET /tls HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut before).await.0, 200);

    // Same paths, a certificate from another CA.
    let second = TestCerts::generate(&["api.test"]);
    gw.write_file("key.pem", &second.key_pem);
    gw.write_file("cert.pem", &second.cert_pem);
    wait_until_msg(
        WAIT,
        "new handshakes to get the new certificate",
        || async { tls_connect(tls, &second.ca_pem, "api.test").await.is_ok() },
    )
    .await;
    let r = get(
        &gw.https_client(&second.ca_pem, &["api.test"]),
        &gw.https_url("api.test", "/tls"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        tls_connect(tls, &first.ca_pem, "api.test").await.is_err(),
        "a new handshake still got the old certificate"
    );
    wait_applied(&gw, "the certificate reload").await;
    assert_eq!(reloads(&gw, "failure").await, 0.0);

    // The listener kept running: the connection made before the swap still serves.
    before
        .write_all(b"GET /tls HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut before).await.0, 200);
    assert!(gw.logs().contains("config reloaded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_does_not_match_its_key_is_refused() {
    let up = TestUpstream::start("tlsmis").await;
    let first = TestCerts::generate(&["api.test"]);
    let gw = Gateway::builder(&tls_template(up.addr()))
        .file("cert.pem", &first.cert_pem)
        .file("key.pem", &first.key_pem)
        .start()
        .await;
    let tls = gw.tls_addr();
    let old_hash = file_hash(&gw);

    // Only the certificate is replaced (a copy in progress): it does not match key.pem.
    let other = TestCerts::generate(&["api.test"]);
    gw.write_file("cert.pem", &other.cert_pem);
    wait_until_msg(WAIT, "the certificate change to be processed", || async {
        reloads(&gw, "failure").await + reloads(&gw, "success").await >= 1.0
    })
    .await;
    let st = config_status(&gw).await;
    assert_eq!(st["last_reload"]["result"], "failure", "{st}");
    assert_eq!(st["hash"], old_hash.as_str());
    assert!(
        st["last_reload"]["errors"]
            .to_string()
            .contains("server.tls"),
        "{st}"
    );
    // The old certificate keeps serving.
    let mut conn = tls_connect(tls, &first.ca_pem, "api.test")
        .await
        .expect("the old certificate is still served");
    conn.write_all(b"GET /tls HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut conn).await.0, 200);
    assert_eq!(reloads(&gw, "success").await, 0.0);
}

/// `[server] work_stealing` is fixed when the workers start: a reload that
/// sets another value is refused and says a restart is needed; one that
/// spells out the value the workers run with is applied.
#[tokio::test]
async fn a_reload_that_changes_work_stealing_is_refused_and_says_a_restart_is_needed() {
    let up = TestUpstream::start("ws").await;
    let body = [
        &upstream("backend", up.addr())[..],
        &route("one", "backend", "/one", &[]),
    ]
    .concat();
    // Unset and no plugin state on Redis: the workers run without it.
    let template = [SERVER, &body].concat();
    let gw = Gateway::start(&template).await;
    let c = gw.client();
    let old_hash = file_hash(&gw);

    let on = [SERVER, "work_stealing = true\n", &body].concat();
    gw.write_config(&on);
    wait_until_msg(WAIT, "the work_stealing change to be refused", || async {
        reloads(&gw, "failure").await >= 1.0
    })
    .await;
    let st = config_status(&gw).await;
    assert_eq!(st["hash"], old_hash.as_str(), "{st}");
    let errors = st["last_reload"]["errors"].to_string();
    assert!(
        errors.contains("work_stealing") && errors.contains("restart"),
        "{st}"
    );

    let off = [SERVER, "work_stealing = false\n", &body].concat();
    gw.write_config(&off);
    wait_applied(&gw, "work_stealing = false, as the workers run").await;
    assert_eq!(status_of(&c, &gw.url("/one")).await, 200);
}
