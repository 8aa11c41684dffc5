//! The path normaliser and the router on arbitrary paths, hosts and methods.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tollgate::runtime::path::normalize_path;
use tollgate::runtime::router::{RequestInfo, RouteDef, Router};

fn router() -> &'static Router {
    static R: OnceLock<Router> = OnceLock::new();
    R.get_or_init(|| {
        let defs: Vec<RouteDef> = [
            ("/", vec![]),
            ("/v1/payments", vec!["api.example.com"]),
            ("/v1/accounts/{id}", vec!["*.example.com"]),
            ("=/health", vec![]),
            ("/v2/{tenant}/orders/{order}", vec![]),
        ]
        .into_iter()
        .map(|(p, hosts)| RouteDef {
            path: p.to_string(),
            hosts: hosts.into_iter().map(String::from).collect(),
            methods: vec![http::Method::GET],
            ..RouteDef::default()
        })
        .collect();
        Router::new(&defs).unwrap_or_else(|_| panic!("fixed routes are valid"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (host, rest) = text.split_once('\n').unwrap_or(("api.example.com", text));
    if let Ok(p) = normalize_path(rest) {
        // Normalising is idempotent.
        assert_eq!(normalize_path(&p).ok().as_deref(), Some(&*p));
        let headers = http::HeaderMap::new();
        for m in [http::Method::GET, http::Method::POST] {
            let _ = router().find(&RequestInfo { host, path: &p, method: &m, headers: &headers, version: None });
        }
    }
    let _ = tollgate::runtime::router::validate_pattern(text);
});
