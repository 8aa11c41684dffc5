//! Input validation (SPEC §13): `cargo bench --bench validation`.
//!
//! - `openapi`: a typical 1 KiB payment body checked as the plugin does per
//!   request (parse with duplicate-member refusal, then the compiled schema
//!   of `plugins/openapi/payments.yaml`, its `$ref`s across two files), valid
//!   and with three mistakes. Target: ≤ 10 µs.
//! - `json_limits`: the streaming scanner over a 1 MiB JSON document fed in
//!   16 KiB pieces, as a body arrives. Target: ≥ 500 MiB/s. Beside it, in the
//!   same run, `serde_json` skipping the same document (`IgnoredAny`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tollgate::plugins::json_limits::scan::{Limits, Scanner};
use tollgate::plugins::openapi::{OpenApi, Responses};

/// A payment of about 1 KiB: nested creditor and debtor, metadata.
fn payment() -> String {
    let mut meta = serde_json::Map::new();
    for i in 0..19 {
        meta.insert(
            format!("order_line_{i}"),
            format!("SKU-{i:04}-blue-widget-x{i}").into(),
        );
    }
    let v = serde_json::json!({
        "amount": "1250.50",
        "currency": "EUR",
        "creditor": {"name": "ACME Widgets GmbH", "iban": "DE89370400440532013000", "email": "billing@acme.example"},
        "reference": "INV-2026-000042",
        "execute_on": "2026-12-31",
        "metadata": meta,
    });
    v.to_string()
}

fn openapi(c: &mut Criterion) {
    let spec =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/openapi/payments.yaml");
    let api = OpenApi::from_file("bench", &spec, Responses::Off).expect("spec");
    let body = payment();
    assert!((900..1300).contains(&body.len()), "{}", body.len());
    let bad = body
        .replace("\"EUR\"", "\"XXX\"")
        .replace("1250.50", "1250.505")
        .replace("2026-12-31", "2026-02-30");
    let post = http::Method::POST;
    assert!(api
        .body_errors(&post, "/payments", b"application/json", body.as_bytes())
        .is_ok());
    assert_eq!(
        api.body_errors(&post, "/payments", b"application/json", bad.as_bytes())
            .unwrap_err()
            .len(),
        3
    );
    let mut g = c.benchmark_group("openapi");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("payment_1KiB_valid", |b| {
        b.iter(|| {
            api.body_errors(
                &post,
                black_box("/payments"),
                b"application/json",
                black_box(body.as_bytes()),
            )
        })
    });
    g.bench_function("payment_1KiB_3_errors", |b| {
        b.iter(|| {
            api.body_errors(
                &post,
                black_box("/payments"),
                b"application/json",
                black_box(bad.as_bytes()),
            )
        })
    });
    g.finish();
}

/// About 1 MiB of payments: objects with strings, numbers, booleans, nesting.
fn document() -> Vec<u8> {
    let item = r#"{"id":"pay_0001","amount":"10.00","currency":"EUR","settled":true,"fee":0.35,"creditor":{"name":"ACME GmbH","iban":"DE89370400440532013000"},"tags":["a","b"]}"#;
    let mut s = String::from("{\"data\":[");
    while s.len() < (1 << 20) {
        s.push_str(item);
        s.push(',');
    }
    s.pop();
    s.push_str("]}");
    s.into_bytes()
}

fn json_limits(c: &mut Criterion) {
    let doc = document();
    let limits = Limits {
        max_depth: 32,
        max_keys: 1000,
        max_array: 1_000_000,
        max_string: 64 * 1024,
    };
    let scan = |doc: &[u8]| {
        let mut s = Scanner::new(limits);
        for piece in doc.chunks(16 * 1024) {
            s.feed(piece).expect("valid");
        }
        s.finish().expect("valid");
    };
    scan(&doc);
    let mut g = c.benchmark_group("json_limits");
    g.throughput(Throughput::Bytes(doc.len() as u64));
    g.bench_function("scan_1MiB_16KiB_pieces", |b| {
        b.iter(|| scan(black_box(&doc)))
    });
    g.bench_function("serde_json_ignored_any_1MiB", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&doc)).expect("valid"))
    });
    g.finish();
}

criterion_group!(benches, openapi, json_limits);
criterion_main!(benches);
