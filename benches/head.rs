//! Request-head validator benchmarks (`src/proxy/head.rs`).
//!
//! `cargo bench --bench head`. The strict validator runs on every HTTP/1 request
//! before Pingora's parser; here it is measured on heads of a realistic shape
//! (a bare curl GET, an API POST with a bearer token, a browser-like GET, a head
//! of 100 fields), next to httparse (the parser Pingora runs on the same bytes
//! afterwards) for scale. Also the chunked-framing check on a 64 KiB body in
//! 4 KiB chunks.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tollgate::proxy::head::{validate, ChunkedBody, Progress};

fn heads() -> Vec<(&'static str, Vec<u8>)> {
    let curl = b"GET /v1/accounts/acc_123 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n".to_vec();
    let api = format!(
        "POST /v1/payments?expand=customer HTTP/1.1\r\nHost: api.example.com\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 512\r\n\
         Idempotency-Key: 5f1b7c1e-3a2d-4c8e-9b1a-0d6e2f4a8c3b\r\nX-Request-Id: req-8d1f\r\n\
         Accept: application/json\r\nUser-Agent: payments-sdk/4.2.1 (rust)\r\n\r\n",
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.".repeat(12)
    )
    .into_bytes();
    let browser = b"GET /dashboard/invoices?page=2&sort=-created HTTP/1.1\r\nHost: app.example.com\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
        Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
        Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n\
        Connection: keep-alive\r\nCookie: session=0f9c2b7e4d1a8c3f6b5e2d9a7c4f1e8b; theme=dark; tz=Europe%2FBerlin\r\n\
        Upgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n\
        Sec-Fetch-Site: same-origin\r\nPriority: u=0, i\r\n\r\n"
        .to_vec();
    let mut many = String::from("GET /many HTTP/1.1\r\nHost: api.example.com\r\n");
    for i in 1..100 {
        many.push_str(&format!("X-Field-{i}: value-{i}\r\n"));
    }
    many.push_str("\r\n");
    vec![
        ("curl", curl),
        ("api_post", api),
        ("browser", browser),
        ("100_fields", many.into_bytes()),
    ]
}

fn bench_heads(c: &mut Criterion) {
    let mut g = c.benchmark_group("head");
    for (name, head) in heads() {
        assert!(
            matches!(validate(&head, 100), Progress::Complete(_)),
            "{name}"
        );
        g.throughput(Throughput::Bytes(head.len() as u64));
        g.bench_with_input(BenchmarkId::new("validate", name), &head, |b, h| {
            b.iter(|| validate(black_box(h), 100))
        });
        g.bench_with_input(BenchmarkId::new("httparse", name), &head, |b, h| {
            b.iter(|| {
                let mut headers = [httparse::EMPTY_HEADER; 128];
                let mut req = httparse::Request::new(&mut headers);
                let _ = black_box(req.parse(black_box(h)));
            })
        });
    }
    g.finish();
}

fn bench_chunked(c: &mut Criterion) {
    let mut body = Vec::new();
    for _ in 0..16 {
        body.extend_from_slice(b"1000\r\n");
        body.extend_from_slice(&[b'x'; 4096]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut g = c.benchmark_group("chunked");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("64KiB_in_4KiB_chunks", |b| {
        b.iter(|| {
            let mut c = ChunkedBody::new();
            let n = c.feed(black_box(&body)).unwrap();
            assert!(c.is_done());
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench_heads, bench_chunked);
criterion_main!(benches);
