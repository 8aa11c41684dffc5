//! The `cors` plugin through a real gateway and a real upstream: preflights answered by the
//! gateway (the upstream never sees them), allowed and refused origins, credentials, the
//! wildcard, `Vary` appended, expose headers on actual responses, and the documentation's
//! example (plugins/cors.md).

mod common;

use common::*;
use reqwest::Method;

const APP: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example";

/// The single ```toml block of a markdown file.
fn toml_block(md: &str) -> String {
    let start = md.find("```toml").expect("a ```toml block");
    let body = &md[start + "```toml".len()..];
    let end = body.find("```").expect("the ```toml block is closed");
    body[..end].to_string()
}

fn doc_example(up: &TestUpstream) -> String {
    let md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/cors.md"))
        .expect("plugins/cors.md");
    toml_block(&md).replace("{UP}", &up.addr().to_string())
}

/// One catch-all route `all` using the `cors` plugin `c` with the given keys; `plugins`
/// replaces the route's plugin list (`["c"]` when empty).
fn config(up: &TestUpstream, cors: &str, plugins: &str, tail: &str) -> String {
    let plugins = if plugins.is_empty() {
        r#"plugins = ["c"]"#
    } else {
        plugins
    };
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
threads = 1

[plugins.c]
type = "cors"
{cors}

[upstreams.backend]
targets = ["{addr}"]

[[routes]]
name = "all"
upstream = "backend"
path = "/"
{plugins}
{tail}
"#,
        addr = up.addr()
    )
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Resp {
    fn h(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ASCII header"))
            .collect()
    }
    fn has_no_cors_headers(&self) -> bool {
        self.headers
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-"))
    }
}

async fn send(gw: &Gateway, method: Method, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut rb = gw.client().request(method, gw.url(path));
    for (n, v) in headers {
        rb = rb.header(*n, *v);
    }
    let r = rb.send().await.expect("request through the gateway");
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap_or_default(),
    }
}

async fn preflight(gw: &Gateway, path: &str, origin: &str, method: &str) -> Resp {
    send(
        gw,
        Method::OPTIONS,
        path,
        &[
            ("origin", origin),
            ("access-control-request-method", method),
            ("access-control-request-headers", "content-type, x-custom"),
        ],
    )
    .await
}

fn assert_problem(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.h("content-type"), Some("application/problem+json"));
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("problem JSON");
    assert_eq!(v["status"], status);
}

#[tokio::test]
async fn documentation_example() {
    let up = TestUpstream::start("accounts").await;
    let example = doc_example(&up);
    let (ok, out) = check_config(&example, &[]);
    assert!(
        ok && out.trim() == "ok",
        "the example fails `tollgate check`:\n{out}"
    );
    let gw = Gateway::start(&example).await;

    // A preflight for PUT (a method the route allows, OPTIONS is not listed) is answered by
    // the gateway itself.
    let r = preflight(&gw, "/v1/accounts/42", APP, "PUT").await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.h("access-control-allow-origin"), Some(APP));
    assert_eq!(
        r.h("access-control-allow-methods"),
        Some("GET, POST, PUT, DELETE")
    );
    assert_eq!(
        r.h("access-control-allow-headers"),
        Some("content-type, authorization, idempotency-key")
    );
    assert_eq!(r.h("access-control-max-age"), Some("600"));
    assert_eq!(r.h("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.h("vary"), Some("Origin"));
    assert_eq!(r.h("access-control-expose-headers"), None);
    assert!(r.body.is_empty());
    // The second listed origin, written with a port.
    let r = preflight(&gw, "/v1/accounts", "http://localhost:3000", "DELETE").await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.h("access-control-allow-origin"),
        Some("http://localhost:3000")
    );

    // A preflight from an origin not listed: 403, no CORS header at all.
    let r = preflight(&gw, "/v1/accounts/42", EVIL, "PUT").await;
    assert_problem(&r, 403);
    assert!(r.has_no_cors_headers(), "{:?}", r.headers);
    assert_eq!(r.h("vary"), Some("Origin"));
    assert_eq!(up.hits(), 0, "a preflight reached the upstream");

    // An actual request from the allowed origin is forwarded and gets the CORS headers.
    let r = send(&gw, Method::GET, "/v1/accounts/42", &[("origin", APP)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.h("access-control-allow-origin"), Some(APP));
    assert_eq!(r.h("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.h("access-control-expose-headers"),
        Some("x-request-id, ratelimit-remaining")
    );
    assert_eq!(r.h("vary"), Some("Origin"));
    assert_eq!(r.h("access-control-allow-methods"), None);
    assert_eq!(up.hits(), 1);
    assert_eq!(up.last_request().unwrap().header("origin"), Some(APP));

    // From another origin it is forwarded too, without any CORS header.
    let r = send(&gw, Method::POST, "/v1/accounts", &[("origin", EVIL)]).await;
    assert_eq!(r.status, 200);
    assert!(r.has_no_cors_headers(), "{:?}", r.headers);
    assert_eq!(r.h("vary"), Some("Origin"));
    assert_eq!(up.hits(), 2);

    let refused = gw
        .metric(r#"tollgate_auth_failures_total{route="accounts",plugin="browser_cors",reason="origin_denied"}"#)
        .await;
    assert_eq!(refused, Some(1.0));
}

#[tokio::test]
async fn wildcard_without_credentials() {
    let up = TestUpstream::start("wild").await;
    let gw = Gateway::start(&config(
        &up,
        r#"origins = ["*"]
methods = ["GET", "PATCH"]
headers = ["*"]
expose = ["x-upstream"]"#,
        "",
        "",
    ))
    .await;

    let r = preflight(&gw, "/things", "https://anyone.example", "PATCH").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.h("access-control-allow-origin"), Some("*"));
    assert_eq!(r.h("access-control-allow-methods"), Some("GET, PATCH"));
    assert_eq!(r.h("access-control-allow-headers"), Some("*"));
    assert_eq!(r.h("access-control-allow-credentials"), None);
    assert_eq!(
        r.h("vary"),
        None,
        "a wildcard answer does not depend on the origin"
    );
    // Even the opaque origin of a sandboxed frame.
    let r = preflight(&gw, "/things", "null", "GET").await;
    assert_eq!(r.status, 204);
    assert_eq!(up.hits(), 0);

    // Every response gets `*`, with or without an Origin.
    for origin in [Some("https://anyone.example"), None] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        let r = send(&gw, Method::GET, "/things", &headers).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.h("access-control-allow-origin"), Some("*"));
        assert_eq!(r.h("access-control-expose-headers"), Some("x-upstream"));
        assert_eq!(r.h("access-control-allow-credentials"), None);
    }
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn vary_is_appended_and_upstream_cors_headers_are_replaced() {
    let up = TestUpstream::start("vary").await;
    let gw = Gateway::start(&config(
        &up,
        &format!("origins = [\"{APP}\"]\nexpose = [\"x-total\"]"),
        "",
        "",
    ))
    .await;
    let path = "/respond?header=Vary:Accept-Encoding\
                &header=Access-Control-Allow-Origin:*\
                &header=Access-Control-Expose-Headers:x-internal\
                &header=Access-Control-Allow-Credentials:true";

    let r = send(&gw, Method::GET, path, &[("origin", APP)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.all("vary"), ["Accept-Encoding, Origin"]);
    assert_eq!(r.all("access-control-allow-origin"), [APP]);
    assert_eq!(r.all("access-control-expose-headers"), ["x-total"]);
    assert_eq!(r.h("access-control-allow-credentials"), None);

    // A refused origin loses even the upstream's own CORS headers.
    let r = send(&gw, Method::GET, path, &[("origin", EVIL)]).await;
    assert!(r.has_no_cors_headers(), "{:?}", r.headers);
    assert_eq!(r.all("vary"), ["Accept-Encoding, Origin"]);
    // So does a request without an Origin (not a CORS request); Vary still says why.
    let r = send(&gw, Method::GET, path, &[]).await;
    assert!(r.has_no_cors_headers(), "{:?}", r.headers);
    assert_eq!(r.all("vary"), ["Accept-Encoding, Origin"]);

    // An upstream Vary that already names Origin is left alone.
    let r = send(
        &gw,
        Method::GET,
        "/respond?header=Vary:origin,%20accept",
        &[("origin", APP)],
    )
    .await;
    assert_eq!(r.all("vary"), ["origin, accept"]);
}

#[tokio::test]
async fn credentials_and_errors_written_by_the_gateway() {
    let up = TestUpstream::start("creds").await;
    // sha256("k1")
    let gw = Gateway::start(&config(
        &up,
        &format!("origins = [\"{APP}\"]\ncredentials = true\nheaders = [\"x-api-key\"]"),
        r#"plugins = ["c", "key"]"#,
        r#"
[plugins.key]
type = "api_key"
keys = [{ consumer = "acme", key_sha256 = "6ab9f1eb8f7d3388f4f9d586f66e99fd54080df2c446f0e58668b09c08a16dd0" }]
"#,
    ))
    .await;

    // The preflight runs before authentication: a browser never sends credentials with it.
    let r = preflight(&gw, "/private", APP, "POST").await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.h("access-control-allow-origin"), Some(APP));
    assert_eq!(r.h("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.h("access-control-allow-headers"), Some("x-api-key"));
    assert_eq!(r.h("access-control-max-age"), None);

    // The 401 written by the gateway carries the CORS headers, so the page can read it.
    let r = send(&gw, Method::GET, "/private", &[("origin", APP)]).await;
    assert_problem(&r, 401);
    assert_eq!(r.h("access-control-allow-origin"), Some(APP));
    assert_eq!(r.h("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.h("vary"), Some("Origin"));
    let r = send(&gw, Method::GET, "/private", &[("origin", EVIL)]).await;
    assert_problem(&r, 401);
    assert!(r.has_no_cors_headers(), "{:?}", r.headers);

    // OPTIONS without Access-Control-Request-Method is not a preflight: it is forwarded
    // (and authenticated like any request).
    let r = send(&gw, Method::OPTIONS, "/private", &[("origin", APP)]).await;
    assert_problem(&r, 401);
    assert_eq!(up.hits(), 0);
}

#[test]
fn unsafe_configurations_are_refused_with_their_place() {
    let cases = [
        (
            r#"origins = ["*"]
credentials = true"#,
            "plugins.c.origins[0]",
        ),
        (
            r#"origins = ["https://app.example.com/"]"#,
            "plugins.c.origins[0]",
        ),
        (
            r#"origins = ["https://app.example.com", "https://*.example.com"]"#,
            "plugins.c.origins[1]",
        ),
        (r#"origins = ["null"]"#, "plugins.c.origins[0]"),
        (r#"origins = []"#, "plugins.c.origins"),
        (
            r#"origins = ["https://app.example.com"]
credentials = true
headers = ["*"]"#,
            "plugins.c.headers[0]",
        ),
        (
            r#"origins = ["https://app.example.com"]
methods = ["G E T"]"#,
            "plugins.c.methods[0]",
        ),
    ];
    assert_plugin_errors("cors", "c", &cases);
}
