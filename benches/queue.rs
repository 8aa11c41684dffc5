//! Queue message encoding benchmarks (SPEC §12).
//!
//! `cargo bench --bench queue`. What a queue route does per request before
//! the network: a Stripe-like webhook (4 KiB body, three copied headers)
//! encoded as the `XADD` of a `redis_stream` queue (down to the RESP bytes
//! the client writes) and as the NATS headers of a `nats` queue (the body is
//! the payload as is, a reference-counted clone).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use tollgate::queue::{Message, Queue, QueueConfig};

fn queue(kind: &str, url: &str, extra: &str) -> Queue {
    let cfg: QueueConfig = toml::from_str(&format!(
        "kind = \"{kind}\"\nurl = \"{url}\"\nstream = \"payments.events\"\n\
         headers = [\"content-type\", \"stripe-signature\", \"webhook-id\"]\n{extra}"
    ))
    .expect("config");
    match Queue::build("bench", &cfg) {
        Ok(q) => q,
        Err(e) => panic!("{e:?}"),
    }
}

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert(
        "stripe-signature",
        "t=1700000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
            .parse()
            .unwrap(),
    );
    h.insert(
        "user-agent",
        "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
            .parse()
            .unwrap(),
    );
    h.insert("accept", "*/*".parse().unwrap());
    h.insert(
        "x-request-id",
        "7b0e8c1e-6f3e-4d8e-9a55-0e0c4f3b9a21".parse().unwrap(),
    );
    h
}

fn bench_encode(c: &mut Criterion) {
    let headers = request_headers();
    let body = Bytes::from(vec![b'x'; 4096]);
    let msg = Message {
        id: "7b0e8c1e-6f3e-4d8e-9a55-0e0c4f3b9a21",
        received_at: SystemTime::now(),
        route: "stripe-webhooks",
        consumer: "",
        method: "POST",
        path: "/webhooks/stripe",
        query: "",
        headers: &headers,
        body: &body,
        dedup_id: "evt_1NG8Du2eZvKYlo2CUI79vXWy",
    };
    let redis = queue(
        "redis_stream",
        "redis://127.0.0.1:6379",
        "max_len = 1000000\n",
    );
    let nats = queue("nats", "nats://127.0.0.1:4222", "");

    let mut group = c.benchmark_group("queue_encode");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    group.sample_size(30);
    group.bench_function("redis_stream_xadd_4k", |b| {
        b.iter(|| {
            let cmd = redis.redis_command(black_box(&msg));
            black_box(cmd.get_packed_command())
        })
    });
    group.bench_function("nats_headers_4k", |b| {
        b.iter(|| {
            let h = nats.nats_headers(black_box(&msg));
            black_box((h, msg.body.clone()))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
