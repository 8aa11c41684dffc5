use super::storage::{header_size, Entry, PurgeTag, ENTRY_OVERHEAD};
use super::*;
use crate::config::load_str;
use bytes::Bytes;
use http::HeaderValue;
use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::cache::Storage;
use std::time::SystemTime;

fn build(extra: &str) -> Cache {
    let src = format!(
        "[plugins.c]\ntype = \"cache\"\n{extra}\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\"c\"]\n"
    );
    let cfg = load_str(&src, None, std::path::Path::new(".")).expect("valid config");
    let Some(c) = cfg.plugin_config::<CacheConfig>("c").cloned() else {
        panic!("cache plugin");
    };
    Cache::new(
        &c,
        &BuildCtx {
            name: "c",
            config: &cfg,
        },
    )
    .unwrap_or_else(|e| panic!("builds: {e:?}"))
}

fn build_err(extra: &str) -> Vec<BuildError> {
    let src = format!(
        "[plugins.c]\ntype = \"cache\"\n{extra}\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\"c\"]\n"
    );
    let cfg = load_str(&src, None, std::path::Path::new(".")).expect("valid config");
    let Some(c) = cfg.plugin_config::<CacheConfig>("c").cloned() else {
        panic!("cache plugin");
    };
    match Cache::new(
        &c,
        &BuildCtx {
            name: "c",
            config: &cfg,
        },
    ) {
        Ok(_) => panic!("should not build"),
        Err(e) => e,
    }
}

fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
    let mut r = ResponseHeader::build(status, None).unwrap();
    for (n, v) in headers {
        r.append_header(n.to_string(), *v).unwrap();
    }
    r
}

fn fresh_for(c: &Cache, r: &ResponseHeader) -> Option<Duration> {
    let now = SystemTime::now();
    match c.cacheable_at(r, now) {
        RespCacheable::Cacheable(m) => Some(m.fresh_until().duration_since(now).unwrap()),
        RespCacheable::Uncacheable(_) => None,
    }
}

fn parts<'a>(host: &'a str, path: &'a str, consumer: Option<&'a str>) -> KeyParts<'a> {
    KeyParts {
        route: "r",
        method: "GET",
        scheme: "http",
        host,
        path,
        query: None,
        consumer,
    }
}

#[test]
fn freshness_comes_from_s_maxage_then_max_age_then_ttl_capped_by_max_ttl() {
    let c = build("ttl = \"30s\"\nmax_ttl = \"1h\"");
    let s = |v: u64| Some(Duration::from_secs(v));
    assert_eq!(fresh_for(&c, &resp(200, &[])), s(30));
    assert_eq!(
        fresh_for(&c, &resp(200, &[("cache-control", "max-age=60")])),
        s(60)
    );
    assert_eq!(
        fresh_for(
            &c,
            &resp(200, &[("cache-control", "max-age=60, s-maxage=90")])
        ),
        s(90)
    );
    assert_eq!(
        fresh_for(&c, &resp(200, &[("cache-control", "max-age=99999")])),
        s(3600)
    );
    assert_eq!(
        fresh_for(
            &c,
            &resp(200, &[("cache-control", "max-age=60"), ("age", "20")])
        ),
        s(40)
    );
    assert_eq!(
        fresh_for(&c, &resp(200, &[("cache-control", "max-age=0")])),
        None
    );
}

#[test]
fn never_stored() {
    let c = build("");
    for r in [
        resp(200, &[("cache-control", "no-store")]),
        resp(200, &[("cache-control", "private, max-age=60")]),
        resp(200, &[("cache-control", "private=\"x-user\", max-age=60")]),
        resp(200, &[("cache-control", "no-cache")]),
        resp(200, &[("set-cookie", "a=b")]),
        resp(200, &[("vary", "*")]),
        resp(200, &[("vary", "accept-language")]),
        resp(206, &[]),
        resp(302, &[]),
        resp(304, &[]),
        resp(403, &[]),
        resp(500, &[("cache-control", "max-age=60")]),
        resp(503, &[]),
    ] {
        assert_eq!(fresh_for(&c, &r), None, "{r:?}");
    }
    for s in [200, 203, 204, 301, 404] {
        assert!(fresh_for(&c, &resp(s, &[])).is_some(), "{s}");
    }
}

#[test]
fn vary_on_configured_headers_is_accepted() {
    let c = build("vary = [\"accept\"]");
    assert!(fresh_for(&c, &resp(200, &[("vary", "Accept")])).is_some());
    assert!(fresh_for(&c, &resp(200, &[("vary", "Accept, Cookie")])).is_none());
}

#[test]
fn stale_window_follows_config_unless_the_origin_forbids_it() {
    let c = build("stale_if_error = \"1m\"");
    let sie = |r: &ResponseHeader| match c.cacheable_at(r, SystemTime::now()) {
        RespCacheable::Cacheable(m) => m.stale_if_error_sec(),
        _ => panic!("cacheable"),
    };
    assert_eq!(sie(&resp(200, &[("cache-control", "max-age=5")])), 60);
    assert_eq!(
        sie(&resp(
            200,
            &[("cache-control", "max-age=5, must-revalidate")]
        )),
        0
    );
    assert_eq!(sie(&resp(200, &[("cache-control", "s-maxage=5")])), 0);
}

#[test]
fn keys_separate_hosts_consumers_queries_vary_and_instances() {
    let c = build("vary = [\"accept\"]");
    let h = http::HeaderMap::new();
    let k = |p: &KeyParts<'_>, h: &http::HeaderMap| c.cache_key(p, h).combined_bin();
    let base = k(&parts("a.example", "/x", None), &h);
    assert_eq!(base, k(&parts("a.example", "/x", None), &h));
    assert_ne!(base, k(&parts("b.example", "/x", None), &h));
    assert_ne!(base, k(&parts("a.example", "/x", Some("acme")), &h));
    assert_ne!(
        k(&parts("a.example", "/x", Some("acme")), &h),
        k(&parts("a.example", "/x", Some("globex")), &h)
    );
    let mut q = parts("a.example", "/x", None);
    q.query = Some("a=1");
    assert_ne!(base, k(&q, &h));
    let mut head = parts("a.example", "/x", None);
    head.method = "HEAD";
    assert_eq!(base, k(&head, &h), "HEAD is answered from the GET entry");
    let mut accept = http::HeaderMap::new();
    accept.insert("accept", HeaderValue::from_static("text/html"));
    assert_ne!(base, k(&parts("a.example", "/x", None), &accept));
    // Field boundaries are unambiguous.
    assert_ne!(
        k(&parts("ab", "/c", None), &h),
        k(&parts("a", "b/c", None), &h)
    );
    let other = build("vary = [\"accept\"]");
    assert_ne!(
        base,
        other
            .cache_key(&parts("a.example", "/x", None), &h)
            .combined_bin()
    );
}

#[test]
fn config_errors_are_located() {
    let e = build_err("methods = [\"GET\", \"POST\"]");
    assert_eq!(e[0].path.to_string(), "methods[1]");
    let e = build_err("vary = [\"bad header\"]");
    assert_eq!(e[0].path.to_string(), "vary[0]");
    let e = build_err("max_size = \"1MiB\"\nmax_entry = \"1MiB\"");
    assert_eq!(e[0].path.to_string(), "max_entry");
    let e = build_err("max_size = \"1KiB\"");
    assert_eq!(e[0].path.to_string(), "max_size");
}

fn entry(key: HashBinary, body: usize) -> Entry {
    let header = resp(200, &[]);
    Entry {
        key,
        generation: 0,
        fresh_until: SystemTime::now() + Duration::from_secs(60),
        created: SystemTime::now(),
        updated: SystemTime::now(),
        stale_if_error: 0,
        weight: body + header_size(&header) + ENTRY_OVERHEAD,
        header,
        body: Bytes::from(vec![b'a'; body]),
    }
}

fn key_n(i: u64) -> HashBinary {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k
}

#[test]
fn store_stays_within_max_size_and_keeps_its_index_in_step() {
    let max = 1 << 20;
    let s = Store::new(max, 64 * 1024);
    for i in 0..20_000u64 {
        s.insert(
            entry(key_n(i), (i as usize * 37) % 8000),
            Some(PurgeTag {
                route: Arc::from("r"),
                path: Box::from(format!("/p/{i}")),
            }),
        );
    }
    let (n, bytes) = s.usage();
    assert!(bytes <= max + 64 * 1024, "{bytes} bytes over budget");
    assert!(n > 50, "kept only {n} entries");
    // Every indexed key is still stored, and purge finds exactly those.
    let stored = (0..20_000u64)
        .filter(|i| s.get(&key_n(*i)).is_some())
        .count();
    assert_eq!(stored, n);
    assert_eq!(s.purge(|r, p| r == "r" && p.starts_with("/p/")), n);
    assert_eq!(s.usage(), (0, 0));
}

#[test]
fn purge_matches_route_and_prefix() {
    let s = Store::new(1 << 20, 64 * 1024);
    let tag = |r: &str, p: &str| {
        Some(PurgeTag {
            route: Arc::from(r),
            path: Box::from(p),
        })
    };
    s.insert(entry(key_n(1), 10), tag("a", "/v1/items/1"));
    s.insert(entry(key_n(2), 10), tag("a", "/v1/items/2"));
    s.insert(entry(key_n(3), 10), tag("a", "/v1/other"));
    s.insert(entry(key_n(4), 10), tag("b", "/v1/items/1"));
    assert_eq!(s.purge(|r, p| r == "a" && p.starts_with("/v1/items")), 2);
    assert!(s.get(&key_n(1)).is_none());
    assert!(s.get(&key_n(3)).is_some());
    assert!(s.get(&key_n(4)).is_some());
}

#[test]
fn dropping_the_instance_frees_its_entries() {
    let c = build("");
    let slot = c.storage();
    slot.store().unwrap().insert(entry(key_n(1), 100), None);
    assert_eq!(c.usage().0, 1);
    drop(c);
    assert!(slot.store().is_none());
}

#[tokio::test]
async fn miss_then_lookup_round_trip_through_pingoras_traits() {
    let c = build("");
    let slot = c.storage();
    let key = c.cache_key(&parts("h", "/x", None), &http::HeaderMap::new());
    let meta = match c.response_cacheable(&resp(200, &[("cache-control", "max-age=60")])) {
        RespCacheable::Cacheable(m) => m,
        _ => panic!("cacheable"),
    };
    let span = pingora::cache::trace::Span::inactive().handle();
    let mut miss = slot.get_miss_handler(&key, &meta, &span).await.unwrap();
    miss.write_body(Bytes::from_static(b"hello "), false)
        .await
        .unwrap();
    miss.write_body(Bytes::from_static(b"world"), true)
        .await
        .unwrap();
    miss.finish().await.unwrap();
    let (meta, mut hit) = slot.lookup(&key, &span).await.unwrap().expect("stored");
    assert!(meta.is_fresh(SystemTime::now()));
    assert_eq!(hit.read_body().await.unwrap().unwrap(), "hello world");
    assert!(hit.read_body().await.unwrap().is_none());
    hit.seek(6, None).unwrap();
    assert_eq!(hit.read_body().await.unwrap().unwrap(), "world");
    assert_eq!(c.purge("r", "/"), 1);
    assert!(slot.lookup(&key, &span).await.unwrap().is_none());
}

#[tokio::test]
async fn an_abandoned_miss_stores_nothing() {
    let c = build("");
    let slot = c.storage();
    let key = c.cache_key(&parts("h", "/x", None), &http::HeaderMap::new());
    let meta = match c.response_cacheable(&resp(200, &[])) {
        RespCacheable::Cacheable(m) => m,
        _ => panic!("cacheable"),
    };
    let span = pingora::cache::trace::Span::inactive().handle();
    let mut miss = slot.get_miss_handler(&key, &meta, &span).await.unwrap();
    miss.write_body(Bytes::from_static(b"partial"), false)
        .await
        .unwrap();
    drop(miss);
    assert!(slot.lookup(&key, &span).await.unwrap().is_none());
}

#[test]
fn methods_are_upper_case_method_tokens_read_with_the_file() {
    let c = build("");
    assert!(c.get && c.head, "GET and HEAD by default");
    let c = build("methods = [\"HEAD\"]");
    assert!(!c.get && c.head);
    let src = "[plugins.c]\ntype = \"cache\"\nmethods = [\"GET\", \"get\"]\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\"c\"]\n";
    let Err(e) = load_str(src, None, std::path::Path::new(".")) else {
        panic!("\"get\" is not a method a request has");
    };
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].path, "plugins.c.methods[1]");
    assert_eq!(
        e.0[0].message,
        "invalid method \"get\" (write it in upper case)"
    );
    // A valid method that is not GET or HEAD is refused when the plugin is built.
    let e = build_err("methods = [\"PURGE\"]");
    assert_eq!(e[0].path.to_string(), "methods[0]");
    assert_eq!(
        e[0].message,
        "only GET and HEAD responses can be cached, not \"PURGE\""
    );
}
