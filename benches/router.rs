//! Router and path-normaliser benchmarks.
//!
//! `cargo bench --bench router`. Routers of 10, 100 and 1,000 routes of a
//! realistic shape; `find` for a hit on one of the last routes, a hit that
//! captures a parameter, and a miss (404); `normalize_path` on a clean and a
//! dirty path.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tollgate::runtime::path::normalize_path;
use tollgate::runtime::router::{RequestInfo, RouteDef, RouteMatch, Router};

/// `n` routes, four shapes in turn:
/// - `/v{1..3}/service{i}/resources` (any host, any method)
/// - `/v1/service{i}/items/{id}` (GET only)
/// - `/v2/service{i}/orders` on `api{i % 7}.example.com`, GET/POST
/// - `/v3/service{i}/users/{user}/profile` on `*.example.com`, with an
///   `x-tenant` header
fn defs(n: usize) -> Vec<RouteDef> {
    (0..n)
        .map(|i| match i % 4 {
            0 => RouteDef {
                path: format!("/v{}/service{i}/resources", 1 + i % 3),
                ..RouteDef::default()
            },
            1 => RouteDef {
                path: format!("/v1/service{i}/items/{{id}}"),
                methods: vec![Method::GET],
                ..RouteDef::default()
            },
            2 => RouteDef {
                path: format!("/v2/service{i}/orders"),
                hosts: vec![format!("api{}.example.com", i % 7)],
                methods: vec![Method::GET, Method::POST],
                ..RouteDef::default()
            },
            _ => RouteDef {
                path: format!("/v3/service{i}/users/{{user}}/profile"),
                hosts: vec!["*.example.com".into()],
                headers: vec![(HeaderName::from_static("x-tenant"), "acme".into())],
                ..RouteDef::default()
            },
        })
        .collect()
}

fn bench_find(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", HeaderValue::from_static("acme"));
    headers.insert("accept", HeaderValue::from_static("application/json"));
    headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    let get = Method::GET;

    let mut group = c.benchmark_group("router_find");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    group.sample_size(30);
    for n in [10usize, 100, 1000] {
        let router = match Router::new(&defs(n)) {
            Ok(r) => r,
            Err(e) => panic!("bench routes are valid: {e:?}"),
        };
        // Last route of shape 0 and of shape 1.
        let last0 = (n - 1) / 4 * 4;
        let last1 = last0 - 3;
        let hit_path = format!("/v{}/service{last0}/resources/123", 1 + last0 % 3);
        let param_path = format!("/v1/service{last1}/items/item_8f3a2b");
        let cases = [
            ("hit", hit_path, Some(last0)),
            ("hit_param", param_path, Some(last1)),
            ("miss", "/v1/unknown-service/items/42".to_owned(), None),
        ];
        for (name, path, want) in &cases {
            let req = RequestInfo {
                host: "api3.example.com",
                path,
                method: &get,
                headers: &headers,
                version: None,
            };
            match (router.find(&req), want) {
                (RouteMatch::Found { route, .. }, Some(w)) if route == *w => {}
                (RouteMatch::NotFound, None) => {}
                (got, _) => panic!("{name} {path}: unexpected {got:?}"),
            }
            group.bench_with_input(BenchmarkId::new(*name, n), &req, |b, req| {
                b.iter(|| router.find(black_box(req)))
            });
        }
    }
    group.finish();
}

fn bench_normalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize_path");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    group.sample_size(30);
    let clean = "/v1/service42/items/item_8f3a2b/details";
    let dirty = "/v1//service42/./items/%7Euser/../item_8f3a2b/%3a/details/";
    group.bench_function("clean", |b| b.iter(|| normalize_path(black_box(clean))));
    group.bench_function("dirty", |b| b.iter(|| normalize_path(black_box(dirty))));
    group.finish();
}

criterion_group!(benches, bench_find, bench_normalize);
criterion_main!(benches);
