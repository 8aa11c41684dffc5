use super::tree::FastHasher;
use super::*;
use http::HeaderValue;
use std::hash::BuildHasherDefault;

fn route(path: &str) -> RouteDef {
    RouteDef {
        path: path.into(),
        ..RouteDef::default()
    }
}

fn with_methods(path: &str, methods: &[Method]) -> RouteDef {
    RouteDef {
        methods: methods.to_vec(),
        ..route(path)
    }
}

fn with_hosts(path: &str, hosts: &[&str]) -> RouteDef {
    RouteDef {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        ..route(path)
    }
}

fn build(defs: &[RouteDef]) -> Router {
    match Router::new(defs) {
        Ok(r) => r,
        Err(e) => panic!("router build failed: {e:?}"),
    }
}

struct Req {
    host: String,
    path: String,
    method: Method,
    headers: HeaderMap,
    version: Option<String>,
}

fn req(path: &str) -> Req {
    Req {
        host: "api.example.com".into(),
        path: path.into(),
        method: Method::GET,
        headers: HeaderMap::new(),
        version: None,
    }
}

impl Req {
    fn host(mut self, h: &str) -> Req {
        self.host = h.into();
        self
    }
    fn method(mut self, m: Method) -> Req {
        self.method = m;
        self
    }
    fn header(mut self, n: &'static str, v: &'static str) -> Req {
        self.headers
            .append(HeaderName::from_static(n), HeaderValue::from_static(v));
        self
    }
    fn version(mut self, v: &str) -> Req {
        self.version = Some(v.into());
        self
    }
    fn info(&self) -> RequestInfo<'_> {
        RequestInfo {
            host: &self.host,
            path: &self.path,
            method: &self.method,
            headers: &self.headers,
            version: self.version.as_deref(),
        }
    }
}

/// The index of the chosen route, or None on 404/405.
fn find(r: &Router, q: &Req) -> Option<usize> {
    match r.find(&q.info()) {
        RouteMatch::Found { route, .. } => Some(route),
        _ => None,
    }
}

fn find_path(r: &Router, path: &str) -> Option<usize> {
    find(r, &req(path))
}

fn params(r: &Router, q: &Req) -> Vec<(String, String)> {
    match r.find(&q.info()) {
        RouteMatch::Found { params, .. } => params
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
        other => panic!("expected a match, got {other:?}"),
    }
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn prefix_on_segment_boundary() {
    let r = build(&[route("/v1/payments")]);
    assert_eq!(find_path(&r, "/v1/payments"), Some(0));
    assert_eq!(find_path(&r, "/v1/payments/"), Some(0));
    assert_eq!(find_path(&r, "/v1/payments/x/y"), Some(0));
    assert_eq!(find_path(&r, "/v1/paymentsx"), None);
    assert_eq!(find_path(&r, "/v1/pay"), None);
    assert_eq!(find_path(&r, "/v1"), None);
    assert_eq!(find_path(&r, "/"), None);
    assert_eq!(
        find_path(&r, "/V1/payments"),
        None,
        "paths are case-sensitive"
    );

    let r = build(&[route("/v1/pay")]);
    assert_eq!(find_path(&r, "/v1/payments"), None);
    assert_eq!(find_path(&r, "/v1/pay/ments"), Some(0));
}

#[test]
fn pattern_trailing_slash_is_ignored() {
    let r = build(&[route("/a/")]);
    assert_eq!(find_path(&r, "/a"), Some(0));
    assert_eq!(find_path(&r, "/a/"), Some(0));
    assert_eq!(find_path(&r, "/a/b"), Some(0));
    assert_eq!(find_path(&r, "/ab"), None);
    // `/a/` and `/a` are the same pattern: file order decides.
    let r = build(&[route("/a/"), route("/a")]);
    assert_eq!(find_path(&r, "/a/b"), Some(0));
    let r = build(&[route("/a"), route("/a/")]);
    assert_eq!(find_path(&r, "/a/b"), Some(0));
}

#[test]
fn root_route_matches_everything() {
    let r = build(&[route("/")]);
    for p in ["/", "/a", "/a/b/c/", "/v1/payments/123"] {
        assert_eq!(find_path(&r, p), Some(0), "{p}");
    }
    // ... but loses to anything more specific.
    let r = build(&[route("/"), route("/a")]);
    assert_eq!(find_path(&r, "/a/b"), Some(1));
    assert_eq!(find_path(&r, "/b"), Some(0));
}

#[test]
fn exact_routes() {
    let r = build(&[route("=/health"), route("=/"), route("/h")]);
    assert_eq!(find_path(&r, "/health"), Some(0));
    assert_eq!(find_path(&r, "/health/"), Some(0));
    assert_eq!(find_path(&r, "/health/x"), None);
    assert_eq!(find_path(&r, "/healthz"), None);
    assert_eq!(find_path(&r, "/"), Some(1));
    assert_eq!(find_path(&r, "/x"), None);
    assert_eq!(find_path(&r, "/h/x"), Some(2));

    // Exact beats a prefix of the same length, and beats params.
    let r = build(&[route("/a/b"), route("=/a/b"), route("=/a/{x}")]);
    assert_eq!(find_path(&r, "/a/b"), Some(1));
    assert_eq!(find_path(&r, "/a/c"), Some(2));
    assert_eq!(find_path(&r, "/a/b/c"), Some(0));

    let r = build(&[route("/{x}"), route("=/{x}")]);
    assert_eq!(find_path(&r, "/a"), Some(1));
    assert_eq!(find_path(&r, "/a/b"), Some(0));
}

#[test]
fn more_segments_win() {
    let r = build(&[
        route("/"),
        route("/v1"),
        route("/v1/payments"),
        route("/v1/payments/refunds"),
    ]);
    assert_eq!(find_path(&r, "/v1/payments/refunds/9"), Some(3));
    assert_eq!(find_path(&r, "/v1/payments/9"), Some(2));
    assert_eq!(find_path(&r, "/v1/x"), Some(1));
    assert_eq!(find_path(&r, "/v2"), Some(0));
    // More segments beat an earlier literal.
    let r = build(&[route("/a/b"), route("/{x}/b/c")]);
    assert_eq!(find_path(&r, "/a/b/c"), Some(1));
    assert_eq!(find_path(&r, "/a/b/d"), Some(0));
}

#[test]
fn literal_beats_param_at_same_position() {
    let r = build(&[route("/users/{id}"), route("/users/me")]);
    assert_eq!(find_path(&r, "/users/me"), Some(1));
    assert_eq!(find_path(&r, "/users/42"), Some(0));

    // The leftmost differing position decides.
    let r = build(&[route("/{a}/x"), route("/b/{c}")]);
    assert_eq!(find_path(&r, "/b/x"), Some(1));
    let r = build(&[route("/b/{c}"), route("/{a}/x")]);
    assert_eq!(find_path(&r, "/b/x"), Some(0));
    assert_eq!(find_path(&r, "/z/x"), Some(1));
    assert_eq!(find_path(&r, "/z/y"), None);

    // Backtracking: the literal branch dead-ends, the param branch matches.
    let r = build(&[route("/a/b/c"), route("/{x}/b/d")]);
    assert_eq!(find_path(&r, "/a/b/d"), Some(1));
}

#[test]
fn params_match_one_non_empty_segment() {
    let r = build(&[route("=/items/{id}")]);
    assert_eq!(find_path(&r, "/items/1"), Some(0));
    assert_eq!(find_path(&r, "/items/1/"), Some(0));
    assert_eq!(find_path(&r, "/items/"), None);
    assert_eq!(find_path(&r, "/items"), None);
    assert_eq!(find_path(&r, "/items/1/2"), None);
    let r = build(&[route("/items/{id}")]);
    assert_eq!(find_path(&r, "/items/1/2"), Some(0));
    assert_eq!(find_path(&r, "/items/"), None);
}

#[test]
fn captures_in_pattern_order() {
    let r = build(&[
        route("/v1/accounts/{account}/cards/{card_id}"),
        route("/v1/accounts/{id}"),
    ]);
    let q = req("/v1/accounts/acc_1/cards/c-9/extra");
    assert_eq!(
        params(&r, &q),
        pairs(&[("account", "acc_1"), ("card_id", "c-9")])
    );
    assert_eq!(
        params(&r, &req("/v1/accounts/acc_2")),
        pairs(&[("id", "acc_2")])
    );
    assert_eq!(
        params(&r, &req("/v1/accounts/acc_2/cards")),
        pairs(&[("id", "acc_2")])
    );
    // Routes sharing a param node report their own names.
    let r = build(&[route("=/x/{a}"), route("/x/{b}/y")]);
    assert_eq!(params(&r, &req("/x/1")), pairs(&[("a", "1")]));
    assert_eq!(params(&r, &req("/x/1/y")), pairs(&[("b", "1")]));
    // No params: empty (and no allocation).
    let r = build(&[route("/a")]);
    assert_eq!(params(&r, &req("/a/b")), vec![]);
    // Captured as normalised (escapes kept).
    let r = build(&[route("/f/{name}")]);
    assert_eq!(params(&r, &req("/f/a%20b")), pairs(&[("name", "a%20b")]));
}

#[test]
fn many_segments() {
    let pattern = "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/{p}/q/r/s/t";
    let r = build(&[route("/a/b/c"), route(pattern), route("/a/b/c/d/e/f")]);
    assert_eq!(
        find_path(&r, "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/P/q/r/s/t/u/v"),
        Some(1)
    );
    assert_eq!(
        find_path(&r, "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/P/q/r/s"),
        Some(2)
    );
    // A very long request path does not recurse past the trie's depth.
    let long = "/a/b/c".to_owned() + &"/x".repeat(100_000);
    assert_eq!(find_path(&r, &long), Some(0));
}

#[test]
fn methods_and_405() {
    let r = build(&[
        with_methods("/items", &[Method::GET, Method::POST]),
        with_methods("/items", &[Method::DELETE, Method::GET]),
        with_methods("/items/{id}", &[Method::PUT]),
        with_methods("/other", &[Method::PATCH]),
    ]);
    assert_eq!(find(&r, &req("/items")), Some(0));
    assert_eq!(find(&r, &req("/items").method(Method::POST)), Some(0));
    assert_eq!(find(&r, &req("/items").method(Method::DELETE)), Some(1));
    assert_eq!(find(&r, &req("/items/1").method(Method::PUT)), Some(2));
    // /items/1 with GET falls back to the /items prefix routes.
    assert_eq!(find(&r, &req("/items/1")), Some(0));
    assert_eq!(
        r.find(&req("/items/1").method(Method::PATCH).info()),
        RouteMatch::MethodNotAllowed {
            allow: "DELETE, GET, POST, PUT".into()
        }
    );
    assert_eq!(
        r.find(&req("/items").method(Method::PUT).info()),
        RouteMatch::MethodNotAllowed {
            allow: "DELETE, GET, POST".into()
        }
    );
    assert_eq!(r.find(&req("/nope").info()), RouteMatch::NotFound);
    // A method-less route matches every method.
    let r = build(&[with_methods("/a", &[Method::GET]), route("/a")]);
    assert_eq!(find(&r, &req("/a")), Some(0), "more predicates wins");
    assert_eq!(find(&r, &req("/a").method(Method::DELETE)), Some(1));
}

#[test]
fn extension_methods() {
    let purge = Method::from_bytes(b"PURGE").expect("valid method");
    let lower = Method::from_bytes(b"report").expect("valid method");
    let r = build(&[
        with_methods("/c", &[purge.clone(), Method::GET]),
        with_methods("/c", std::slice::from_ref(&lower)),
    ]);
    assert_eq!(find(&r, &req("/c").method(purge.clone())), Some(0));
    assert_eq!(find(&r, &req("/c").method(lower)), Some(1));
    assert_eq!(
        r.find(&req("/c").method(Method::POST).info()),
        RouteMatch::MethodNotAllowed {
            allow: "GET, PURGE, REPORT".into()
        }
    );
}

#[test]
fn no_405_when_other_predicates_fail() {
    let r = build(&[RouteDef {
        headers: vec![(HeaderName::from_static("x-tenant"), "acme".into())],
        ..with_methods("/a", &[Method::GET])
    }]);
    assert_eq!(
        r.find(&req("/a").method(Method::POST).info()),
        RouteMatch::NotFound
    );
    assert_eq!(
        r.find(
            &req("/a")
                .method(Method::POST)
                .header("x-tenant", "acme")
                .info()
        ),
        RouteMatch::MethodNotAllowed {
            allow: "GET".into()
        }
    );
    // Host mismatch is not a 405 either.
    let r = build(&[RouteDef {
        hosts: vec!["a.example.com".into()],
        ..with_methods("/a", &[Method::GET])
    }]);
    assert_eq!(
        r.find(&req("/a").host("b.example.com").method(Method::POST).info()),
        RouteMatch::NotFound
    );
}

#[test]
fn full_match_beats_405_even_if_less_specific() {
    let r = build(&[with_methods("/a/b", &[Method::POST]), route("/a")]);
    assert_eq!(find(&r, &req("/a/b")), Some(1));
}

#[test]
fn hosts_exact_and_case() {
    let r = build(&[
        with_hosts("/", &["API.Example.com"]),
        with_hosts("/", &["other.example.com", "third.example.com"]),
    ]);
    assert_eq!(find(&r, &req("/x").host("api.example.com")), Some(0));
    assert_eq!(find(&r, &req("/x").host("other.example.com")), Some(1));
    assert_eq!(find(&r, &req("/x").host("third.example.com")), Some(1));
    assert_eq!(find(&r, &req("/x").host("example.com")), None);
    assert_eq!(find(&r, &req("/x").host("x.api.example.com")), None);
    assert_eq!(find(&r, &req("/x").host("")), None);
}

#[test]
fn hosts_wildcard() {
    let r = build(&[with_hosts("/w", &["*.example.com"])]);
    assert_eq!(find(&r, &req("/w").host("a.example.com")), Some(0));
    assert_eq!(find(&r, &req("/w").host("a.b.c.example.com")), Some(0));
    assert_eq!(find(&r, &req("/w").host("example.com")), None);
    assert_eq!(find(&r, &req("/w").host("badexample.com")), None);
    assert_eq!(find(&r, &req("/w").host("a.example.com.evil.io")), None);
    assert_eq!(find(&r, &req("/w").host("a.example.co")), None);
    // "*" is any host.
    let r = build(&[with_hosts("/w", &["*"])]);
    assert_eq!(find(&r, &req("/w").host("whatever.io")), Some(0));
}

#[test]
fn host_buckets_combine_with_specificity() {
    let r = build(&[
        route("/"),
        with_hosts("/", &["*.example.com"]),
        with_hosts("/", &["api.example.com"]),
        with_hosts("/v1/x", &["*.example.com"]),
        route("/v1/x/y"),
    ]);
    // Same path: more predicates (a host) wins; wildcard and exact both
    // count as one, so file order decides between them.
    assert_eq!(find(&r, &req("/a").host("api.example.com")), Some(1));
    assert_eq!(find(&r, &req("/a").host("b.example.com")), Some(1));
    assert_eq!(find(&r, &req("/a").host("elsewhere.io")), Some(0));
    // Path specificity comes before predicates.
    assert_eq!(find(&r, &req("/v1/x/z").host("api.example.com")), Some(3));
    assert_eq!(find(&r, &req("/v1/x/y").host("api.example.com")), Some(4));
    assert_eq!(find(&r, &req("/v1/x/z").host("elsewhere.io")), Some(0));
}

#[test]
fn headers_predicate() {
    let tenant = HeaderName::from_static("x-tenant");
    let r = build(&[
        RouteDef {
            headers: vec![
                (tenant.clone(), "acme".into()),
                (HeaderName::from_static("x-env"), "prod".into()),
            ],
            ..route("/p")
        },
        RouteDef {
            headers: vec![(tenant.clone(), "acme".into())],
            ..route("/p")
        },
        route("/p"),
    ]);
    assert_eq!(
        find(
            &r,
            &req("/p").header("x-tenant", "acme").header("x-env", "prod")
        ),
        Some(0)
    );
    assert_eq!(find(&r, &req("/p").header("x-tenant", "acme")), Some(1));
    assert_eq!(
        find(&r, &req("/p").header("x-tenant", "ACME")),
        Some(2),
        "values are exact"
    );
    assert_eq!(find(&r, &req("/p").header("x-tenant", "acme ")), Some(2));
    assert_eq!(find(&r, &req("/p")), Some(2));
    // Any one value of a repeated header may match.
    assert_eq!(
        find(
            &r,
            &req("/p")
                .header("x-tenant", "other")
                .header("x-tenant", "acme")
        ),
        Some(1)
    );
}

#[test]
fn waived_headers_predicates_hold() {
    let tenant = HeaderName::from_static("x-tenant");
    let r = build(&[
        RouteDef {
            headers: vec![(tenant.clone(), "acme".into())],
            methods: vec![Method::GET, Method::POST],
            ..route("/h")
        },
        RouteDef {
            headers: vec![(HeaderName::from_static("x-env"), "prod".into())],
            ..route("/h")
        },
        route("/"),
    ]);
    let with = |q: &Req, w: Waive<'_>| match r.find_with(&q.info(), w) {
        RouteMatch::Found { route, .. } => Some(route),
        _ => None,
    };
    let q = req("/h/x").method(Method::POST);
    assert_eq!(with(&q, Waive::Nothing), Some(2));
    assert_eq!(with(&q, Waive::Named(&["X-Tenant"])), Some(0));
    assert_eq!(with(&q, Waive::Named(&["x-env"])), Some(1));
    assert_eq!(with(&q, Waive::Named(&["content-type"])), Some(2));
    assert_eq!(with(&q, Waive::All), Some(0));
    // A predicate that holds still holds; a waived one need not.
    let q = req("/h/x").method(Method::POST).header("x-env", "prod");
    assert_eq!(with(&q, Waive::Named(&["x-tenant"])), Some(0));
    assert_eq!(with(&q, Waive::Nothing), Some(1));
    // The method still counts.
    let q = req("/h/x").method(Method::DELETE);
    assert_eq!(with(&q, Waive::Named(&["x-tenant"])), Some(2));
}

#[test]
fn version_predicate() {
    let r = build(&[
        RouteDef {
            version: Some("v1".into()),
            ..route("/pay")
        },
        RouteDef {
            version: Some("v2".into()),
            ..route("/pay")
        },
    ]);
    assert_eq!(find(&r, &req("/pay").version("v1")), Some(0));
    assert_eq!(find(&r, &req("/pay").version("v2")), Some(1));
    assert_eq!(find(&r, &req("/pay").version("v3")), None);
    assert_eq!(find(&r, &req("/pay")), None);
    let r = build(&[
        route("/pay"),
        RouteDef {
            version: Some("2024-06-01".into()),
            ..route("/pay")
        },
    ]);
    assert_eq!(find(&r, &req("/pay").version("2024-06-01")), Some(1));
    assert_eq!(find(&r, &req("/pay").version("v1")), Some(0));
}

#[test]
fn predicate_count_then_file_order() {
    let tenant = || vec![(HeaderName::from_static("x-tenant"), "acme".to_string())];
    let r = build(&[
        route("/a"),
        with_methods("/a", &[Method::GET]),
        RouteDef {
            methods: vec![Method::GET],
            headers: tenant(),
            ..route("/a")
        },
        RouteDef {
            hosts: vec!["api.example.com".into()],
            methods: vec![Method::GET],
            ..route("/a")
        },
    ]);
    // Routes 2 and 3 both have two predicates: file order.
    assert_eq!(find(&r, &req("/a").header("x-tenant", "acme")), Some(2));
    assert_eq!(find(&r, &req("/a")), Some(3));
    assert_eq!(find(&r, &req("/a").host("x.io")), Some(1));
    assert_eq!(
        find(&r, &req("/a").host("x.io").method(Method::POST)),
        Some(0)
    );
    // Identical routes: the first one.
    let r = build(&[route("/a"), route("/a"), route("/a")]);
    assert_eq!(find_path(&r, "/a"), Some(0));
}

#[test]
fn literals_are_normalised() {
    let r = build(&[route("/caf%c3%a9"), route("/%7Euser"), route("/ünï")]);
    assert_eq!(find_path(&r, "/caf%C3%A9/x"), Some(0));
    assert_eq!(find_path(&r, "/~user"), Some(1));
    assert_eq!(find_path(&r, "/%C3%BCn%C3%AF"), Some(2));
}

#[test]
fn many_siblings_use_the_map() {
    let defs: Vec<RouteDef> = (0..100)
        .map(|i| route(&format!("/svc{i}/items/{{id}}")))
        .collect();
    let r = build(&defs);
    for i in [0, 7, 8, 9, 50, 99] {
        let q = req(&format!("/svc{i}/items/x{i}"));
        assert_eq!(find(&r, &q), Some(i));
        assert_eq!(params(&r, &q), pairs(&[("id", &format!("x{i}"))]));
    }
    assert_eq!(find_path(&r, "/svc100/items/1"), None);
    assert_eq!(find_path(&r, "/svc1/items"), None);
    assert_eq!(r.len(), 100);
    assert!(!r.is_empty());
}

#[test]
fn empty_router() {
    let r = build(&[]);
    assert!(r.is_empty());
    assert_eq!(r.len(), 0);
    assert_eq!(r.find(&req("/").info()), RouteMatch::NotFound);
}

#[test]
fn odd_request_paths_do_not_panic() {
    let r = build(&[route("/a/{b}"), route("=/"), route("/é")]);
    for p in ["", "*", "a", "//", "/a//b", "/%", "/é/x", "/a/\u{0}"] {
        let _ = r.find(&req(p).info());
    }
    assert_eq!(find_path(&r, "/a//b"), Some(0));
}

#[test]
fn pattern_validation() {
    for ok in [
        "/",
        "=/",
        "/a",
        "/a/",
        "//a//b",
        "=/a/{id}",
        "/a/{id}/b/{other_id}",
        "/a/{id-2}",
        "/a.b/~c/d%20e",
        "/...",
    ] {
        assert_eq!(validate_pattern(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "=",
        "a",
        "=a",
        "v1/payments",
        "/a/{}",
        "/a/{",
        "/a/{id",
        "/a/id}",
        "/a/}",
        "/a{b}",
        "/{a}b",
        "/a/{b}{c}",
        "/{a}/{a}",
        "/{a b}",
        "/{a.b}",
        "/{*rest}",
        "/a/*",
        "/a/./b",
        "/a/..",
        "/a/%2e%2e",
        "/a/%2e",
        "/a%2Fb",
        "/a\\b",
        "/a b",
        "/%zz",
        "/a?x=1",
        "/a#f",
    ] {
        assert!(validate_pattern(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn build_collects_all_errors() {
    let defs = [
        route("/ok"),
        route(""),
        route("/a{b}"),
        with_hosts("/ok", &["api.example.com:8443", "a.*.com", ""]),
        route("/{x}/{x}"),
        with_hosts("/fine", &["*.example.com", "*", "API.example.com", "[::1]"]),
    ];
    let errs = match Router::new(&defs) {
        Ok(_) => panic!("should fail"),
        Err(e) => e,
    };
    let idx: Vec<usize> = errs.iter().map(|(i, _)| *i).collect();
    assert_eq!(idx, vec![1, 2, 3, 3, 3, 4], "{errs:?}");
    assert_eq!(errs[0].1, "path is empty");
    assert_eq!(Err(errs[1].1.clone()), validate_pattern("/a{b}"));
    assert!(errs[2].1.starts_with("hosts[0]: "), "{errs:?}");
    assert!(errs[3].1.starts_with("hosts[1]: "), "{errs:?}");
    assert!(errs[4].1.starts_with("hosts[2]: "), "{errs:?}");
    assert!(errs[5].1.contains("duplicate"), "{errs:?}");
}

#[test]
fn hasher_spreads_similar_keys() {
    use std::collections::HashSet;
    use std::hash::BuildHasher;
    let build = BuildHasherDefault::<FastHasher>::default();
    let buckets: HashSet<u64> = (0..1000)
        .map(|i| build.hash_one(format!("service{i}").as_str()) & 1023)
        .collect();
    assert!(buckets.len() > 550, "only {} buckets", buckets.len());
}

#[test]
fn router_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Router>();
}

/// A deliberately naive reference: check every route, keep the best by
/// an explicitly written sort key.
fn reference(defs: &[RouteDef], q: &Req) -> RouteMatch {
    type Key = (
        bool,
        std::cmp::Reverse<usize>,
        Vec<bool>,
        std::cmp::Reverse<usize>,
        usize,
    );
    let segs: Vec<&str> = q.path.split('/').filter(|s| !s.is_empty()).collect();
    let mut best: Option<(Key, usize, Params)> = None;
    let mut allow: Vec<String> = Vec::new();
    for (i, d) in defs.iter().enumerate() {
        let exact = d.path.starts_with('=');
        let pat: Vec<&str> = d
            .path
            .trim_start_matches('=')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let path_ok = if exact {
            pat.len() == segs.len()
        } else {
            pat.len() <= segs.len()
        } && pat
            .iter()
            .zip(&segs)
            .all(|(p, s)| p.starts_with('{') || p == s);
        let host_ok = d.hosts.is_empty()
            || d.hosts.iter().any(|h| {
                let h = h.to_ascii_lowercase();
                h == "*"
                    || h == q.host
                    || h.strip_prefix('*')
                        .is_some_and(|suffix| q.host.ends_with(suffix))
            });
        let headers_ok = d.headers.iter().all(|(n, v)| {
            q.headers
                .get_all(n)
                .iter()
                .any(|have| have.as_bytes() == v.as_bytes())
        });
        let version_ok = d.version.is_none() || d.version.as_deref() == q.version.as_deref();
        if !(path_ok && host_ok && headers_ok && version_ok) {
            continue;
        }
        if !d.methods.is_empty() && !d.methods.contains(&q.method) {
            allow.extend(d.methods.iter().map(|m| m.as_str().to_ascii_uppercase()));
            continue;
        }
        let preds = usize::from(!d.hosts.is_empty())
            + usize::from(!d.methods.is_empty())
            + d.headers.len()
            + usize::from(d.version.is_some());
        let key: Key = (
            !exact,
            std::cmp::Reverse(pat.len()),
            pat.iter().map(|p| p.starts_with('{')).collect(),
            std::cmp::Reverse(preds),
            i,
        );
        if best.as_ref().is_none_or(|(k, _, _)| key < *k) {
            let params = pat
                .iter()
                .zip(&segs)
                .filter(|(p, _)| p.starts_with('{'))
                .map(|(p, s)| (Arc::from(p.trim_matches(['{', '}'])), s.to_string()))
                .collect();
            best = Some((key, i, params));
        }
    }
    match best {
        Some((_, route, params)) => RouteMatch::Found { route, params },
        None if !allow.is_empty() => {
            allow.sort();
            allow.dedup();
            RouteMatch::MethodNotAllowed {
                allow: allow.join(", "),
            }
        }
        None => RouteMatch::NotFound,
    }
}

#[test]
fn agrees_with_a_naive_reference() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let tenant = HeaderName::from_static("x-t");
    let mut disagreements = 0;
    // Found with params, found without, 405, 404.
    let mut outcomes = [0usize; 4];
    for _round in 0..300 {
        let n = 1 + next(25);
        let defs: Vec<RouteDef> = (0..n)
            .map(|_| {
                let mut path = String::from(if next(4) == 0 { "=" } else { "" });
                let len = next(4);
                if len == 0 {
                    path.push('/');
                }
                for pos in 0..len {
                    path.push('/');
                    match next(5) {
                        0 => path.push_str(&format!("{{p{pos}}}")),
                        1 => path.push_str(&format!("{{q{pos}}}")),
                        k => path.push_str(["a", "b", "c"][k - 2]),
                    }
                }
                let hosts: Vec<String> = match next(5) {
                    0 => vec!["x.com".into()],
                    1 => vec!["*.x.com".into()],
                    2 => vec!["Y.x.com".into(), "*".into()],
                    _ => vec![],
                };
                let methods = match next(5) {
                    0 => vec![Method::GET],
                    1 => vec![Method::POST, Method::GET],
                    2 => vec![Method::PUT],
                    _ => vec![],
                };
                let headers = match next(4) {
                    0 => vec![(tenant.clone(), "1".to_string())],
                    _ => vec![],
                };
                let version = match next(4) {
                    0 => Some("v1".to_string()),
                    _ => None,
                };
                RouteDef {
                    hosts,
                    path,
                    methods,
                    headers,
                    version,
                }
            })
            .collect();
        let router = build(&defs);
        for _ in 0..60 {
            let mut path = String::new();
            for _ in 0..next(5) {
                path.push('/');
                path.push_str(["a", "b", "c", "d"][next(4)]);
            }
            if path.is_empty() || next(4) == 0 {
                path.push('/');
            }
            let mut q = req(&path)
                .host(["x.com", "y.x.com", "z.y.x.com", "other.io"][next(4)])
                .method([Method::GET, Method::POST, Method::PUT, Method::DELETE][next(4)].clone());
            if next(2) == 0 {
                q = q.header("x-t", "1");
            }
            match next(3) {
                0 => q = q.version("v1"),
                1 => q = q.version("v2"),
                _ => {}
            }
            let got = router.find(&q.info());
            let want = reference(&defs, &q);
            outcomes[match &want {
                RouteMatch::Found { params, .. } if !params.is_empty() => 0,
                RouteMatch::Found { .. } => 1,
                RouteMatch::MethodNotAllowed { .. } => 2,
                RouteMatch::NotFound => 3,
            }] += 1;
            if got != want {
                disagreements += 1;
                eprintln!(
                    "routes {:?}\nrequest {} {} {} {:?}: got {got:?}, want {want:?}",
                    defs.iter()
                        .map(|d| (&d.path, &d.hosts, &d.methods))
                        .collect::<Vec<_>>(),
                    q.method,
                    q.host,
                    q.path,
                    q.version
                );
            }
        }
    }
    assert_eq!(disagreements, 0);
    assert!(outcomes.iter().all(|&n| n > 500), "{outcomes:?}");
}
