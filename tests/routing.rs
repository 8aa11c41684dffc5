//! Routing through a real gateway and real upstreams (SPEC §3): hosts, path
//! prefixes, `=/exact`, `{param}`, specificity, methods (405 + `Allow`), header
//! predicates, API versions (sources, default, deprecation, sunset), `strip_prefix`,
//! path normalisation and its 400 refusals, problem+json bodies, and the
//! `request_id` and `headers` plugins.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One upstream per name; `[upstreams.NAME]` tables pointing at them.
struct Ups {
    map: HashMap<String, TestUpstream>,
}

impl Ups {
    async fn start(names: &[&str]) -> Ups {
        let mut map = HashMap::new();
        for n in names {
            map.insert(n.to_string(), TestUpstream::start(n).await);
        }
        Ups { map }
    }

    fn get(&self, name: &str) -> &TestUpstream {
        &self.map[name]
    }

    /// `[upstreams.NAME] targets = ["addr"]` for every upstream.
    fn tables(&self) -> String {
        let mut names: Vec<&String> = self.map.keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                format!(
                    "[upstreams.{n}]\ntargets = [\"{}\"]\n\n",
                    self.map[n.as_str()].addr()
                )
            })
            .collect()
    }

    fn total_hits(&self) -> usize {
        self.map.values().map(TestUpstream::hits).sum()
    }
}

/// Sends one hand-written HTTP/1.1 request (so that the request target reaches the gateway
/// byte for byte, dot segments and escapes included) and reads the response.
async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    let mut req = format!("{method} {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("Host: gw.test\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut conn = RawConn::connect(addr).await;
    conn.send(req).await.expect("write request");
    conn.read_response().await
}

async fn get(addr: SocketAddr, target: &str) -> RawResponse {
    send(addr, "GET", target, &[]).await
}

/// The upstream that answered (every test upstream sets `x-upstream`), or `None` for a
/// response the gateway wrote itself.
fn served_by(r: &RawResponse) -> Option<String> {
    r.header("x-upstream").map(str::to_string)
}

#[track_caller]
fn assert_served(r: &RawResponse, upstream: &str) {
    assert_eq!(
        (r.status, served_by(r).as_deref()),
        (200, Some(upstream)),
        "expected upstream {upstream:?}; body: {}",
        r.body_str()
    );
}

/// The request target the upstream received, from the echo body.
fn echoed_path(r: &RawResponse) -> String {
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("echo body is not JSON ({e}): {}", r.body_str()));
    v["path"].as_str().expect("echo path").to_string()
}

/// Asserts an `application/problem+json` response with `status` and every RFC 9457 field
/// tollgate promises, whose `request_id` is the one echoed in `x-request-id`, and which no
/// upstream produced. Returns the body.
#[track_caller]
fn assert_problem(r: &RawResponse, status: u16) -> Value {
    assert_eq!(r.status, status, "body: {}", r.body_str());
    assert!(served_by(r).is_none(), "an upstream answered: {r:?}");
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/problem+json"),
        "content-type {ct:?} for {status}"
    );
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("problem body is not JSON ({e}): {}", r.body_str()));
    assert_eq!(v["status"], status, "{v}");
    for key in ["type", "title", "detail", "request_id"] {
        let s = v[key].as_str().unwrap_or_default();
        assert!(!s.is_empty(), "problem field {key:?} missing or empty: {v}");
    }
    assert_eq!(
        v["request_id"].as_str(),
        r.header("x-request-id"),
        "the body's request_id is the response's x-request-id"
    );
    v
}

// ---------------------------------------------------------------------------------------------
// Hosts, paths, params, specificity, methods, header predicates
// ---------------------------------------------------------------------------------------------

const ROUTES: &str = r#"
[server]
listen = "{LISTEN}"
admin_listen = "{ADMIN}"
plugins = ["request_id"]

[plugins.request_id]
type = "request_id"

[upstreams.users_hash]
targets = ["@users_a@", "@users_b@"]
balance = "consistent_hash"
hash_key = "param:id"

[[routes]]
name = "host_exact"
upstream = "host_exact"
hosts = ["api.example.com"]
path = "/h"

[[routes]]
name = "host_wild"
upstream = "host_wild"
hosts = ["*.example.com"]
path = "/h"

[[routes]]
name = "pay"
upstream = "pay"
path = "/v1/pay"

[[routes]]
name = "exact"
upstream = "exact"
path = "=/exact"

[[routes]]
name = "users_param"
upstream = "users_hash"
path = "/users/{id}"

[[routes]]
name = "users_me"
upstream = "users_me"
path = "/users/me"

[[routes]]
name = "s_short"
upstream = "s_short"
path = "/s"

[[routes]]
name = "s_long"
upstream = "s_long"
path = "/s/a/b"

[[routes]]
name = "e_prefix"
upstream = "e_prefix"
path = "/e/a"

[[routes]]
name = "e_exact_param"
upstream = "e_exact_param"
path = "=/e/{x}"

[[routes]]
name = "e_exact"
upstream = "e_exact"
path = "=/e/a"

[[routes]]
name = "m_plain"
upstream = "m_plain"
path = "/m"

[[routes]]
name = "m_hdr"
upstream = "m_hdr"
path = "/m"
headers = { "x-tenant" = "acme" }

[[routes]]
name = "m2_any"
upstream = "m2_any"
path = "/m2"

[[routes]]
name = "m2_post"
upstream = "m2_post"
path = "/m2"
methods = ["POST"]

[[routes]]
name = "f_first"
upstream = "f_first"
path = "/f"

[[routes]]
name = "f_second"
upstream = "f_second"
path = "/f"

[[routes]]
name = "meth_read"
upstream = "meth_read"
path = "/meth"
methods = ["GET", "POST"]

[[routes]]
name = "meth_del"
upstream = "meth_del"
path = "/meth"
methods = ["DELETE"]

[[routes]]
name = "hdr"
upstream = "hdr"
path = "/hdr"
headers = { "x-tenant" = "acme", "x-env" = "prod" }
"#;

const ROUTE_UPSTREAMS: &[&str] = &[
    "host_exact",
    "host_wild",
    "pay",
    "exact",
    "users_me",
    "s_short",
    "s_long",
    "e_prefix",
    "e_exact_param",
    "e_exact",
    "m_plain",
    "m_hdr",
    "m2_any",
    "m2_post",
    "f_first",
    "f_second",
    "meth_read",
    "meth_del",
    "hdr",
];

/// The routing gateway with its upstreams (`users_a`/`users_b` are the two targets of the
/// consistent-hash upstream behind `users_param`).
async fn routing_gateway() -> (Gateway, Ups, TestUpstream, TestUpstream) {
    let ups = Ups::start(ROUTE_UPSTREAMS).await;
    let users_a = TestUpstream::start("users_a").await;
    let users_b = TestUpstream::start("users_b").await;
    let config = format!(
        "{}\n{}",
        ups.tables(),
        ROUTES
            .replace("@users_a@", &users_a.addr().to_string())
            .replace("@users_b@", &users_b.addr().to_string())
    );
    let gw = Gateway::start(&config).await;
    (gw, ups, users_a, users_b)
}

#[tokio::test]
async fn host_exact_wildcard_and_no_match() {
    let (gw, ups, _a, _b) = routing_gateway().await;
    let addr = gw.addr();
    let host = |h: &'static str| [("Host", h)];

    assert_served(
        &send(addr, "GET", "/h", &host("api.example.com")).await,
        "host_exact",
    );
    // Hosts are matched without the port and case-insensitively.
    assert_served(
        &send(addr, "GET", "/h/x", &host("API.Example.COM:8080")).await,
        "host_exact",
    );
    assert_served(
        &send(addr, "GET", "/h", &host("shop.example.com")).await,
        "host_wild",
    );
    assert_served(
        &send(addr, "GET", "/h", &host("a.b.example.com")).await,
        "host_wild",
    );

    // `*.example.com` is not `example.com` itself; other hosts match neither.
    let before = ups.total_hits();
    for h in [
        "example.com",
        "api.example.org",
        "notexample.com",
        "gw.test",
    ] {
        let r = send(addr, "GET", "/h", &[("Host", h)]).await;
        let v = assert_problem(&r, 404);
        assert_eq!(v["title"], "Not Found", "{v}");
    }
    assert_eq!(ups.total_hits(), before, "a 404 reached an upstream");
}

#[tokio::test]
async fn prefix_on_segment_boundary_exact_and_params() {
    let (gw, ups, users_a, users_b) = routing_gateway().await;
    let addr = gw.addr();

    // Prefix `/v1/pay`: the path itself, below it, with a trailing slash.
    for p in ["/v1/pay", "/v1/pay/", "/v1/pay/ments", "/v1/pay/1/2?x=y"] {
        assert_served(&get(addr, p).await, "pay");
    }
    // ... but never a longer segment.
    for p in ["/v1/payments", "/v1/pays/x", "/v1/pa", "/v1"] {
        assert_problem(&get(addr, p).await, 404);
    }

    // `=/exact`: that path only.
    let r = get(addr, "/exact?q=1").await;
    assert_served(&r, "exact");
    assert_eq!(echoed_path(&r), "/exact?q=1");
    for p in ["/exact/more", "/exactly", "/"] {
        assert_problem(&get(addr, p).await, 404);
    }

    // `{id}` is exactly one non-empty segment; the literal `/users/me` beats it although
    // listed later.
    assert_served(&get(addr, "/users/me").await, "users_me");
    assert_served(&get(addr, "/users/me/settings").await, "users_me");
    for p in ["/users", "/users/"] {
        assert_problem(&get(addr, p).await, 404);
    }
    assert_eq!(ups.get("users_me").hits(), 2);

    // The captured segment is what `hash_key = "param:id"` hashes: every request for one id
    // lands on one target whatever follows the id, and different ids spread over both.
    let mut used = BTreeSet::new();
    for id in 0..16 {
        let mut seen = BTreeSet::new();
        for tail in ["", "/orders", "/orders/9?x=1", "/a/b/c"] {
            let r = get(addr, &format!("/users/u{id}{tail}")).await;
            assert_eq!(r.status, 200, "{}", r.body_str());
            let by = served_by(&r).expect("x-upstream");
            assert_eq!(
                echoed_path(&r),
                format!("/users/u{id}{tail}"),
                "no strip_prefix: path forwarded as is"
            );
            seen.insert(by);
        }
        assert_eq!(seen.len(), 1, "id u{id} went to {seen:?}");
        used.extend(seen);
    }
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        vec!["users_a".to_string(), "users_b".to_string()],
        "16 different ids all hashed to one target: the {{id}} capture is not used"
    );
    assert_eq!(users_a.hits() + users_b.hits(), 64);
}

#[tokio::test]
async fn specificity_exact_segments_predicates_file_order() {
    let (gw, _ups, _a, _b) = routing_gateway().await;
    let addr = gw.addr();

    // More segments beat fewer, whatever the file order.
    assert_served(&get(addr, "/s/a/b").await, "s_long");
    assert_served(&get(addr, "/s/a/b/c").await, "s_long");
    assert_served(&get(addr, "/s/a").await, "s_short");
    assert_served(&get(addr, "/s/a/c").await, "s_short");
    assert_served(&get(addr, "/s").await, "s_short");

    // Exact beats a prefix of the same length listed earlier; among exact routes a
    // literal beats a param; exact (even with a param) is tried before prefix.
    assert_served(&get(addr, "/e/a").await, "e_exact");
    assert_served(&get(addr, "/e/a/b").await, "e_prefix");
    assert_served(&get(addr, "/e/zz").await, "e_exact_param");
    assert_problem(&get(addr, "/e/zz/b").await, 404);

    // Same path: more predicates win over file order.
    assert_served(
        &send(addr, "GET", "/m", &[("x-tenant", "acme")]).await,
        "m_hdr",
    );
    assert_served(&get(addr, "/m").await, "m_plain");
    assert_served(
        &send(addr, "GET", "/m", &[("x-tenant", "other")]).await,
        "m_plain",
    );
    assert_served(&send(addr, "POST", "/m2", &[]).await, "m2_post");
    assert_served(&get(addr, "/m2").await, "m2_any");

    // Same path, same predicates: file order.
    for _ in 0..3 {
        assert_served(&get(addr, "/f/x").await, "f_first");
    }
}

#[tokio::test]
async fn methods_405_with_allow_and_header_predicates() {
    let (gw, ups, _a, _b) = routing_gateway().await;
    let addr = gw.addr();

    assert_served(&get(addr, "/meth").await, "meth_read");
    assert_served(
        &send(addr, "POST", "/meth/x", &[("content-length", "0")]).await,
        "meth_read",
    );
    assert_served(&send(addr, "DELETE", "/meth", &[]).await, "meth_del");

    let before = ups.total_hits();
    for m in ["PUT", "PATCH", "OPTIONS"] {
        let r = send(addr, m, "/meth/1", &[("x-request-id", "req-405")]).await;
        let v = assert_problem(&r, 405);
        assert_eq!(r.header("allow"), Some("DELETE, GET, POST"), "{m}");
        assert_eq!(v["request_id"], "req-405");
        assert_eq!(v["title"], "Method Not Allowed");
    }
    assert_eq!(ups.total_hits(), before, "a 405 reached an upstream");

    // Header predicates: exact values, all of them.
    assert_served(
        &send(
            addr,
            "GET",
            "/hdr",
            &[("x-tenant", "acme"), ("x-env", "prod")],
        )
        .await,
        "hdr",
    );
    for headers in [
        vec![("x-tenant", "acme")],
        vec![("x-env", "prod")],
        vec![("x-tenant", "ACME"), ("x-env", "prod")],
        vec![("x-tenant", "acme"), ("x-env", "production")],
        vec![],
    ] {
        let r = send(addr, "GET", "/hdr", &headers).await;
        assert_problem(&r, 404);
    }
    assert_eq!(ups.get("hdr").hits(), 1);
}

// ---------------------------------------------------------------------------------------------
// API versions
// ---------------------------------------------------------------------------------------------

const VERSIONS: &str = r#"
[server]
listen = "{LISTEN}"
admin_listen = "{ADMIN}"
plugins = ["request_id"]

[plugins.request_id]
type = "request_id"

[api_versions]
sources = ["path", "header:api-version", "query:v"]
default = "v2"
[api_versions.v0]
deprecated = "2020-01-01"
sunset = "2021-01-01"
link = "https://docs.example.com/v0-is-gone"
[api_versions.v1]
deprecated = "2025-01-01"
sunset = "2099-12-31"
link = "https://docs.example.com/migrate-to-v2"
[api_versions.v2]

[[routes]]
name = "acc_v1"
upstream = "acc_v1"
path = "/v1/accounts/{id}"
version = "v1"

[[routes]]
name = "acc_v2"
upstream = "acc_v2"
path = "/v2/accounts/{id}"
version = "v2"

[[routes]]
name = "items_v1"
upstream = "items_v1"
path = "/items"
version = "v1"

[[routes]]
name = "items_v2"
upstream = "items_v2"
path = "/items"
version = "v2"

[[routes]]
name = "items_v3"
upstream = "items_v3"
path = "/items"
version = "v3"

[[routes]]
name = "dated"
upstream = "dated"
path = "/dated"
version = "2024-06-01"

[[routes]]
name = "old"
upstream = "old"
path = "/v0/old"
version = "v0"
"#;

async fn versions_gateway() -> (Gateway, Ups) {
    let ups = Ups::start(&[
        "acc_v1", "acc_v2", "items_v1", "items_v2", "items_v3", "dated", "old",
    ])
    .await;
    let gw = Gateway::start(&format!("{}\n{}", ups.tables(), VERSIONS)).await;
    (gw, ups)
}

#[track_caller]
fn assert_not_deprecated(r: &RawResponse) {
    for h in ["deprecation", "sunset", "link"] {
        assert!(r.header(h).is_none(), "unexpected {h}: {:?}", r.header(h));
    }
}

#[track_caller]
fn assert_v1_deprecation(r: &RawResponse) {
    // 2025-01-01T00:00:00Z, RFC 9745 structured-field date.
    assert_eq!(r.header("deprecation"), Some("@1735689600"));
    assert_eq!(r.header("sunset"), Some("Thu, 31 Dec 2099 00:00:00 GMT"));
    assert_eq!(
        r.header("link"),
        Some("<https://docs.example.com/migrate-to-v2>; rel=\"deprecation\"")
    );
}

#[tokio::test]
async fn version_sources_default_and_bare_numbers() {
    let (gw, _ups) = versions_gateway().await;
    let addr = gw.addr();
    let av = |v: &'static str| [("api-version", v)];

    // No version named: the default (v2), which is not deprecated.
    let r = get(addr, "/items").await;
    assert_served(&r, "items_v2");
    assert_not_deprecated(&r);

    // header:api-version, with a bare number read as `v<n>`.
    assert_served(&send(addr, "GET", "/items", &av("v1")).await, "items_v1");
    assert_served(&send(addr, "GET", "/items", &av("1")).await, "items_v1");
    assert_served(&send(addr, "GET", "/items", &av("2")).await, "items_v2");
    // A version only a route knows (no [api_versions.v3] table).
    assert_served(&send(addr, "GET", "/items", &av("3")).await, "items_v3");
    // Non-numeric versions are compared as written.
    assert_served(
        &send(addr, "GET", "/dated", &av("2024-06-01")).await,
        "dated",
    );

    // query:v
    assert_served(&get(addr, "/items?v=3").await, "items_v3");
    assert_served(&get(addr, "/items?a=b&v=v1").await, "items_v1");
    let r = get(addr, "/items?v=1&keep=me").await;
    assert_served(&r, "items_v1");
    assert_eq!(echoed_path(&r), "/items?v=1&keep=me");

    // Sources in order, first found wins: header before query ...
    assert_served(&send(addr, "GET", "/items?v=1", &av("3")).await, "items_v3");
    // ... and path before header.
    assert_served(
        &send(addr, "GET", "/v1/accounts/7", &av("2")).await,
        "acc_v1",
    );
    assert_served(
        &send(addr, "GET", "/v2/accounts/7", &av("1")).await,
        "acc_v2",
    );

    // A version that is known (a route names it) but whose routes do not match the path:
    // a plain no-route 404, not an unknown-version one.
    let r = get(addr, "/v3/accounts/7").await;
    let v = assert_problem(&r, 404);
    assert!(
        !v["detail"]
            .as_str()
            .unwrap()
            .contains("unknown API version"),
        "v3 is known (a route names it): {v}"
    );
}

#[tokio::test]
async fn unknown_version_is_404_listing_known_versions() {
    let (gw, ups) = versions_gateway().await;
    let addr = gw.addr();

    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("/v9/accounts/1", &[]),
        ("/items", &[("api-version", "9")]),
        ("/items", &[("api-version", "2023-01-01")]),
        ("/items?v=v42", &[]),
    ];
    for (target, headers) in cases {
        let mut hs = headers.to_vec();
        hs.push(("x-request-id", "ver-404"));
        let r = send(addr, "GET", target, &hs).await;
        let v = assert_problem(&r, 404);
        assert_eq!(v["request_id"], "ver-404");
        let detail = v["detail"].as_str().unwrap();
        for known in ["v0", "v1", "v2", "v3", "2024-06-01"] {
            assert!(
                detail.contains(known),
                "detail of {target} {headers:?} does not list {known}: {detail}"
            );
        }
    }
    assert_eq!(ups.total_hits(), 0);
}

#[tokio::test]
async fn deprecated_version_headers_and_sunset_410() {
    let (gw, ups) = versions_gateway().await;
    let addr = gw.addr();

    // v1: deprecated, sunset in the future: served, with Deprecation, Sunset and Link.
    let r = get(addr, "/v1/accounts/acc_1").await;
    assert_served(&r, "acc_v1");
    assert_v1_deprecation(&r);
    let r = send(addr, "GET", "/items", &[("api-version", "1")]).await;
    assert_served(&r, "items_v1");
    assert_v1_deprecation(&r);
    // The gateway's own answers for that version carry them too.
    let r = get(addr, "/v1/nothing-here").await;
    assert_problem(&r, 404);
    assert_v1_deprecation(&r);

    // v2: current.
    let r = get(addr, "/v2/accounts/acc_1").await;
    assert_served(&r, "acc_v2");
    assert_not_deprecated(&r);

    // v0: past its sunset: 410 Gone, never forwarded, whichever source names it.
    for (target, headers) in [
        ("/v0/old", vec![]),
        ("/v0/old/x", vec![("x-request-id", "gone-1")]),
        ("/items", vec![("api-version", "0")]),
        ("/items?v=v0", vec![]),
    ] {
        let r = send(addr, "GET", target, &headers).await;
        let v = assert_problem(&r, 410);
        assert_eq!(v["title"], "Gone", "{v}");
        if headers.iter().any(|(k, _)| *k == "x-request-id") {
            assert_eq!(v["request_id"], "gone-1");
        }
        assert_eq!(r.header("sunset"), Some("Fri, 01 Jan 2021 00:00:00 GMT"));
    }
    assert_eq!(ups.get("old").hits(), 0);
    assert_eq!(ups.get("items_v1").hits(), 1);
}

// ---------------------------------------------------------------------------------------------
// strip_prefix, normalisation, 400s, request_id and headers plugins
// ---------------------------------------------------------------------------------------------

const REWRITE: &str = r#"
[server]
listen = "{LISTEN}"
admin_listen = "{ADMIN}"
plugins = ["request_id"]

[plugins.request_id]
type = "request_id"

[plugins.rewrite]
type = "headers"
request_set = { "x-added" = "1", "x-overwrite" = "new" }
request_remove = ["x-secret"]
response_set = { "x-resp" = "yes", "cache-control" = "no-cache" }
response_remove = ["x-drop"]

[[routes]]
name = "api"
upstream = "strip"
path = "/api"
strip_prefix = "/api"

[[routes]]
name = "deep"
upstream = "deep"
path = "/svc/{tenant}/v1"
strip_prefix = "/svc"

[[routes]]
name = "norm"
upstream = "norm"
path = "/n"

[[routes]]
name = "hp"
upstream = "hp"
path = "/hp"
strip_prefix = "/hp"
plugins = ["rewrite"]
"#;

async fn rewrite_gateway() -> (Gateway, Ups) {
    let ups = Ups::start(&["strip", "deep", "norm", "hp"]).await;
    let gw = Gateway::start(&format!("{}\n{}", ups.tables(), REWRITE)).await;
    (gw, ups)
}

#[tokio::test]
async fn strip_prefix_forwards_the_rest_and_keeps_the_query() {
    let (gw, ups) = rewrite_gateway().await;
    let addr = gw.addr();
    let strip = ups.get("strip");

    for (target, upstream_sees) in [
        ("/api/users/1", "/users/1"),
        ("/api/users/1?x=1&y=%2F&z", "/users/1?x=1&y=%2F&z"),
        ("/api", "/"),
        ("/api/", "/"),
        ("/api?q=1", "/?q=1"),
        ("/api//users/./2/../3", "/users/3"),
    ] {
        let r = get(addr, target).await;
        assert_served(&r, "strip");
        assert_eq!(echoed_path(&r), upstream_sees, "{target}");
        assert_eq!(strip.last_request().unwrap().path, upstream_sees);
    }
    // The route is a prefix on a segment boundary: /apix is no match.
    assert_problem(&get(addr, "/apix").await, 404);

    // strip_prefix removes only its own literal segments, not the param after them.
    let r = get(addr, "/svc/acme/v1/orders?limit=5").await;
    assert_served(&r, "deep");
    assert_eq!(echoed_path(&r), "/acme/v1/orders?limit=5");
}

#[tokio::test]
async fn path_normalisation_before_routing_and_upstream() {
    let (gw, ups) = rewrite_gateway().await;
    let addr = gw.addr();
    let norm = ups.get("norm");

    for (target, upstream_sees) in [
        ("/n//a///b", "/n/a/b"),
        ("//n/a", "/n/a"),
        ("/n/./a/./b", "/n/a/b"),
        ("/n/x/../a", "/n/a"),
        ("/n/x/y/../../a?k=%2F", "/n/a?k=%2F"),
        ("/x/../n/a", "/n/a"),
        ("/n/%7Euser", "/n/~user"),
        ("/n/%7euser", "/n/~user"),
        ("/n/%41%62c", "/n/Abc"),
        ("/%6E/a", "/n/a"),
        ("/n/%2e%2e/n/b", "/n/b"),
    ] {
        let r = get(addr, target).await;
        assert_served(&r, "norm");
        assert_eq!(echoed_path(&r), upstream_sees, "{target}");
        assert_eq!(norm.last_request().unwrap().path, upstream_sees, "{target}");
    }
    // Routing sees the normalised path: this climbs out of /n, so it is no match.
    assert_problem(&get(addr, "/n/../other").await, 404);
}

#[tokio::test]
async fn bad_paths_are_400_problems() {
    let (gw, ups) = rewrite_gateway().await;
    let addr = gw.addr();

    for target in [
        "/n/a%2Fb",
        "/n/a%2fb",
        "/n/%2F",
        "/n/a%5Cb",
        "/n/a%5cb",
        "/n/a\\b",
        "/..",
        "/../n/a",
        "/n/../../a",
        "/n/%2e%2e/%2E%2E/a",
        "/api/../../etc/passwd",
    ] {
        let r = send(addr, "GET", target, &[("x-request-id", "bad-path-1")]).await;
        let v = assert_problem(&r, 400);
        assert_eq!(v["request_id"], "bad-path-1", "{target}");
        assert_eq!(v["title"], "Bad Request", "{target}");
    }
    // Without an incoming id, the body still carries the (generated) one.
    let r = get(addr, "/n/a%2Fb").await;
    let v = assert_problem(&r, 400);
    assert_eq!(v["request_id"].as_str().unwrap().len(), 36, "{v}");
    assert_eq!(ups.total_hits(), 0);
}

#[tokio::test]
async fn request_id_kept_when_valid_replaced_when_not() {
    let (gw, ups) = rewrite_gateway().await;
    let addr = gw.addr();
    let norm = ups.get("norm");

    // A valid incoming id: kept, sent upstream, echoed to the client.
    let r = send(addr, "GET", "/n/1", &[("X-Request-Id", "abc-123_x.y:z")]).await;
    assert_served(&r, "norm");
    assert_eq!(r.header("x-request-id"), Some("abc-123_x.y:z"));
    let seen = norm.last_request().unwrap();
    assert_eq!(seen.header_all("x-request-id"), vec!["abc-123_x.y:z"]);

    // Invalid ones (space, quote, too long) are replaced by a fresh id, the same upstream
    // and back.
    let long = "a".repeat(129);
    let mut ids = BTreeSet::new();
    for bad in ["has space", "quote\"d", "semi;colon", long.as_str()] {
        let r = send(addr, "GET", "/n/2", &[("x-request-id", bad)]).await;
        assert_served(&r, "norm");
        let id = r.header("x-request-id").expect("x-request-id").to_string();
        assert_ne!(id, bad);
        assert!(
            !id.is_empty() && id.len() <= 128 && !id.contains([' ', '"', ';']),
            "{id:?}"
        );
        let seen = norm.last_request().unwrap();
        assert_eq!(seen.header_all("x-request-id"), vec![id.as_str()]);
        ids.insert(id);
    }
    assert_eq!(ids.len(), 4, "ids are not unique: {ids:?}");

    // None sent: one is made.
    let r = get(addr, "/n/3").await;
    let id = r.header("x-request-id").expect("x-request-id").to_string();
    assert!(!ids.contains(&id));
    assert_eq!(
        norm.last_request().unwrap().header("x-request-id"),
        Some(id.as_str())
    );

    // And on the gateway's own answers (404 here), body and header agree.
    let r = send(addr, "GET", "/nowhere", &[("x-request-id", "rid-404")]).await;
    let v = assert_problem(&r, 404);
    assert_eq!(v["request_id"], "rid-404");
}

#[tokio::test]
async fn headers_plugin_sets_and_removes_both_ways() {
    let (gw, ups) = rewrite_gateway().await;
    let addr = gw.addr();
    let hp = ups.get("hp");

    let r = send(
        addr,
        "GET",
        "/hp/respond?status=201&header=X-Drop:1&header=X-Keep:2&header=Cache-Control:max-age%3D60&body=hi",
        &[
            ("x-secret", "s3cr3t"),
            ("x-overwrite", "old"),
            ("x-other", "kept"),
        ],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body_str());
    assert_eq!(r.body_str(), "hi");
    // response_set / response_remove, seen by the client.
    assert_eq!(r.header("x-resp"), Some("yes"));
    assert_eq!(header_all(&r.headers, "cache-control"), vec!["no-cache"]);
    assert_eq!(r.header("x-drop"), None);
    assert_eq!(r.header("x-keep"), Some("2"));

    // request_set / request_remove, seen by the upstream.
    let seen = hp.last_request().unwrap();
    assert!(
        seen.path.starts_with("/respond?status=201"),
        "{}",
        seen.path
    );
    assert_eq!(seen.header_all("x-added"), vec!["1"]);
    assert_eq!(seen.header_all("x-overwrite"), vec!["new"]);
    assert_eq!(seen.header("x-secret"), None);
    assert_eq!(seen.header("x-other"), Some("kept"));

    // Routes without the plugin are untouched.
    let r = send(addr, "GET", "/n/x", &[("x-secret", "s")]).await;
    assert_served(&r, "norm");
    assert_eq!(r.header("x-resp"), None);
    let seen = ups.get("norm").last_request().unwrap();
    assert_eq!(seen.header("x-secret"), Some("s"));
    assert_eq!(seen.header("x-added"), None);
}

// ---------------------------------------------------------------------------------------------
// The documentation's examples (plugins/request_id.md, plugins/headers.md)
// ---------------------------------------------------------------------------------------------

/// The single ```toml block of a markdown file.
fn toml_block(md: &str) -> String {
    let start = md.find("```toml").expect("a ```toml block");
    let body = &md[start + "```toml".len()..];
    let end = body.find("```").expect("the ```toml block is closed");
    body[..end].to_string()
}

/// Makes a documentation example runnable: our listeners, every upstream pointing at `up`,
/// and when the example has no route, one route on `/` using every plugin it declares.
/// Returns the config and a request (method, target, headers) its first route matches.
fn runnable(example: &str, up: SocketAddr) -> (String, String, String, Vec<(String, String)>) {
    let mut t: toml::Table = example
        .parse()
        .unwrap_or_else(|e| panic!("example is not valid TOML: {e}\n{example}"));
    let server = t
        .entry("server")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("[server] is a table");
    server.insert("listen".into(), "{LISTEN}".into());
    server.insert("admin_listen".into(), "{ADMIN}".into());
    server.remove("tls");
    server.remove("admin_token_env");
    let target = toml::Value::Array(vec![up.to_string().into()]);
    let upstreams = t
        .entry("upstreams")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("[upstreams] is a table");
    if upstreams.is_empty() {
        let mut u = toml::Table::new();
        u.insert("targets".into(), target.clone());
        upstreams.insert("doc".into(), toml::Value::Table(u));
    }
    let first_upstream = upstreams.keys().next().cloned().unwrap_or_default();
    for (_, u) in upstreams.iter_mut() {
        let u = u.as_table_mut().expect("upstream table");
        u.insert("targets".into(), target.clone());
        u.remove("health_check");
    }
    if !t.contains_key("routes") {
        let global: Vec<String> = t["server"]
            .get("plugins")
            .and_then(|p| p.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let plugins: Vec<toml::Value> = t
            .get("plugins")
            .and_then(|p| p.as_table())
            .map(|p| {
                p.keys()
                    .filter(|k| !global.contains(k))
                    .map(|k| k.clone().into())
                    .collect()
            })
            .unwrap_or_default();
        let mut r = toml::Table::new();
        r.insert("name".into(), "doc".into());
        r.insert("upstream".into(), first_upstream.into());
        r.insert("path".into(), "/".into());
        r.insert("plugins".into(), toml::Value::Array(plugins));
        t.insert(
            "routes".into(),
            toml::Value::Array(vec![toml::Value::Table(r)]),
        );
    }

    // A request the first route matches.
    let route = t["routes"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|r| r.as_table())
        .cloned()
        .unwrap_or_default();
    let path = route.get("path").and_then(|p| p.as_str()).unwrap_or("/");
    let path: Vec<String> = path
        .trim_start_matches('=')
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "x".to_string()
            } else {
                seg.to_string()
            }
        })
        .collect();
    let path = match path.join("/") {
        p if p.is_empty() => "/".to_string(),
        p => p,
    };
    let method = route
        .get("methods")
        .and_then(|m| m.as_array())
        .and_then(|m| m.first())
        .and_then(|m| m.as_str())
        .unwrap_or("GET")
        .to_string();
    let mut headers: Vec<(String, String)> = route
        .get("headers")
        .and_then(|h| h.as_table())
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(host) = route
        .get("hosts")
        .and_then(|h| h.as_array())
        .and_then(|h| h.first())
        .and_then(|h| h.as_str())
    {
        headers.push(("Host".into(), host.replace("*.", "a.")));
    }
    if method != "GET" && method != "HEAD" {
        headers.push(("Content-Length".into(), "0".into()));
    }
    (
        toml::to_string(&t).expect("serialise the example"),
        method,
        path,
        headers,
    )
}

#[tokio::test]
async fn plugin_documentation_examples_load_and_serve() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let mut checked = 0;
    for file in ["request_id.md", "headers.md"] {
        let path = dir.join(file);
        let Ok(md) = std::fs::read_to_string(&path) else {
            eprintln!("skipping {}: the file does not exist yet", path.display());
            continue;
        };
        let example = toml_block(&md);
        let up = TestUpstream::start("doc").await;
        let (config, method, target, headers) = runnable(&example, up.addr());
        let (ok, out) = check_config(&config, &[]);
        assert!(
            ok && out.trim() == "ok",
            "the example of {file} does not pass `tollgate check`:\n{out}\n--- example as run:\n{config}"
        );
        let gw = Gateway::start(&config).await;
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = send(gw.addr(), &method, &target, &headers).await;
        assert!(
            r.status < 400 && served_by(&r).as_deref() == Some("doc"),
            "the example of {file} does not serve {method} {target}: {r:?}\n--- config:\n{config}"
        );
        // What each page promises, on its own example.
        if file == "request_id.md" {
            let r = send(
                gw.addr(),
                "GET",
                "/anything",
                &[("x-request-id", "trace-1")],
            )
            .await;
            assert_eq!(r.header("x-request-id"), Some("trace-1"), "{file}: {r:?}");
            let seen = up.last_request().unwrap();
            assert_eq!(seen.header_all("x-request-id"), vec!["trace-1"], "{file}");
            let r = send(gw.addr(), "GET", "/anything", &[]).await;
            let id = r.header("x-request-id").expect("a fresh id").to_string();
            assert_eq!(id.len(), 36, "a UUID: {id}");
            assert_eq!(
                up.last_request().unwrap().header("x-request-id"),
                Some(id.as_str())
            );
        } else {
            let r = send(
                gw.addr(),
                "GET",
                "/respond?header=Server:upstream-srv&header=X-Kept:1",
                &[("x-debug", "1")],
            )
            .await;
            assert_eq!(r.status, 200, "{file}: {r:?}");
            assert_eq!(
                r.header("x-content-type-options"),
                Some("nosniff"),
                "{file}"
            );
            assert_eq!(r.header("server"), None, "{file}: {r:?}");
            assert_eq!(r.header("x-kept"), Some("1"), "{file}");
            let seen = up.last_request().unwrap();
            assert_eq!(seen.header("x-gateway"), Some("tollgate"), "{file}");
            assert_eq!(seen.header("x-debug"), None, "{file}");
        }
        checked += 1;
    }
    eprintln!("plugin documentation examples checked: {checked} of 2");
}
