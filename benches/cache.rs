//! Per-request cost of the cache's own work on a hit: build the key, look it
//! up in the store (10 000 entries), read the body; and the cost of storing a
//! miss. `cargo bench --bench cache`.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use pingora::cache::key::CacheHashKey;
use pingora::cache::trace::Span;
use pingora::cache::{RespCacheable, Storage};
use pingora::http::ResponseHeader;
use tollgate::config::load_str;
use tollgate::pipeline::BuildCtx;
use tollgate::pipeline::KeyParts;
use tollgate::plugins::cache::Cache;
use tollgate::plugins::cache::CacheConfig;

/// The store's futures never wait: poll them once.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the in-memory store does not wait"),
    }
}

fn cache() -> Cache {
    let cfg = load_str(
        "[plugins.c]\ntype = \"cache\"\nvary = [\"accept\"]\nmax_size = \"256MiB\"\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\"c\"]\n",
        None,
        std::path::Path::new("."),
    )
    .expect("valid bench config");
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
    .unwrap_or_else(|_| panic!("builds"))
}

fn parts(path: &str) -> KeyParts<'_> {
    KeyParts {
        route: "catalog",
        method: "GET",
        scheme: "https",
        host: "api.example.com",
        path,
        query: Some("page=1"),
        consumer: Some("acme"),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("cache");
    g.measurement_time(Duration::from_secs(2)).sample_size(30);

    let cache = cache();
    let slot = cache.storage();
    let span = Span::inactive().handle();
    let mut headers = http::HeaderMap::new();
    headers.insert("accept", http::HeaderValue::from_static("application/json"));
    let mut resp = ResponseHeader::build(200, None).unwrap();
    resp.append_header("content-type", "application/json")
        .unwrap();
    resp.append_header("cache-control", "max-age=3600").unwrap();
    let body = Bytes::from(vec![b'x'; 2048]);
    let paths: Vec<String> = (0..10_000).map(|i| format!("/products/{i}")).collect();
    for p in &paths {
        let key = cache.cache_key(&parts(p), &headers);
        let RespCacheable::Cacheable(meta) = cache.response_cacheable(&resp) else {
            panic!("cacheable");
        };
        let mut miss = now(slot.get_miss_handler(&key, &meta, &span)).unwrap();
        now(miss.write_body(body.clone(), true)).unwrap();
        now(miss.finish()).unwrap();
    }

    let mut i = 0;
    g.bench_function("key_lookup_read_hit_10k_entries", |b| {
        b.iter(|| {
            i = (i + 1) % paths.len();
            let key = cache.cache_key(&parts(&paths[i]), &headers);
            let (meta, mut hit) = now(slot.lookup(&key, &span)).unwrap().expect("hit");
            let body = now(hit.read_body()).unwrap();
            black_box((meta.age(), body))
        })
    });

    g.bench_function("key_only", |b| {
        b.iter(|| {
            i = (i + 1) % paths.len();
            black_box(cache.cache_key(&parts(&paths[i]), &headers).combined_bin())
        })
    });

    let mut n = 0u64;
    g.bench_function("store_miss_2KiB", |b| {
        b.iter(|| {
            n += 1;
            let p = format!("/new/{n}");
            let key = cache.cache_key(&parts(&p), &headers);
            let RespCacheable::Cacheable(meta) = cache.response_cacheable(&resp) else {
                panic!("cacheable");
            };
            let mut miss = now(slot.get_miss_handler(&key, &meta, &span)).unwrap();
            now(miss.write_body(body.clone(), true)).unwrap();
            black_box(now(miss.finish()).is_ok())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
