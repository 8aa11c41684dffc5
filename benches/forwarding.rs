//! What the edge decides once per request (`src/proxy/forwarded.rs`): the
//! client IP behind a trusted proxy, and the request's normalised host.
//!
//! `cargo bench --bench forwarding`. The common cases allocate nothing: a
//! lowercase `Host` is reused as it is, and the `X-Forwarded-For` walk reads
//! bytes in place.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use tollgate::proxy::forwarded::{client_ip, Forwarding};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("forwarding");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    group.sample_size(30);

    let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let lb: IpAddr = "10.1.1.1".parse().unwrap();
    let mut xff = HeaderMap::new();
    xff.insert(
        "x-forwarded-for",
        HeaderValue::from_static("198.51.100.7, 203.0.113.9, 10.2.2.2"),
    );
    group.bench_function("client_ip/untrusted_peer", |b| {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        b.iter(|| client_ip(black_box(Some(peer)), black_box(&xff), &nets))
    });
    group.bench_function("client_ip/three_entries", |b| {
        b.iter(|| client_ip(black_box(Some(lb)), black_box(&xff), &nets))
    });

    let mut plain = HeaderMap::new();
    plain.insert("host", HeaderValue::from_static("api.example.com"));
    group.bench_function("host/normal", |b| {
        b.iter(|| Forwarding::from_request(false, false, black_box(&plain), None))
    });
    let mut dirty = HeaderMap::new();
    dirty.insert("host", HeaderValue::from_static("API.Example.com.:80"));
    group.bench_function("host/rewritten", |b| {
        b.iter(|| Forwarding::from_request(false, false, black_box(&dirty), None))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
