//! Webhook signature verification benchmarks.
//!
//! `cargo bench --bench webhook`. One verification of a 1 KiB body as the
//! `webhook_signature` plugin does it per request (header parsing, timestamp
//! check, HMAC-SHA256 with every secret, constant-time comparison with every
//! presented signature): Stripe with one secret and during a rotation (two
//! secrets, two `v1`), and Standard Webhooks.

use std::hint::black_box;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;
use tollgate::plugins::webhook_signature::WebhookSignature;
use tollgate::plugins::webhook_signature::WebhookSignatureConfig;

const NOW: i64 = 1_700_000_000;

fn plugin(toml_src: &str) -> WebhookSignature {
    let cfg: WebhookSignatureConfig = toml::from_str(toml_src).expect("config");
    match WebhookSignature::from_config(&cfg, "bench") {
        Ok(p) => p,
        Err(e) => panic!("{e:?}"),
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// A 1 KiB JSON-ish body.
fn body() -> Vec<u8> {
    let mut b =
        br#"{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"note":""#.to_vec();
    while b.len() < 1024 - 4 {
        b.push(b'a' + (b.len() % 26) as u8);
    }
    b.extend_from_slice(br#""}}}"#);
    assert_eq!(b.len(), 1024);
    b
}

fn bench_verify(c: &mut Criterion) {
    let body = body();
    let ts = NOW.to_string();
    let mut group = c.benchmark_group("webhook_verify_1KiB");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    group.sample_size(30);

    let stripe = plugin("scheme = \"stripe\"\nsecrets = [\"whsec_bench_new\"]");
    let v1 = hex::encode(mac(b"whsec_bench_new", &[ts.as_bytes(), b".", &body]));
    let mut h = HeaderMap::new();
    h.insert(
        "stripe-signature",
        HeaderValue::from_str(&format!("t={ts},v1={v1}")).unwrap(),
    );
    assert!(stripe.verify(&h, &body, NOW).is_ok());
    group.bench_function("stripe", |b| {
        b.iter(|| black_box(stripe.verify(black_box(&h), black_box(&body), NOW)))
    });

    // Rotation: two secrets; the sender signs with both, the new one listed first.
    let rotating =
        plugin("scheme = \"stripe\"\nsecrets = [\"whsec_bench_old\", \"whsec_bench_new\"]");
    let v1_old = hex::encode(mac(b"whsec_bench_old", &[ts.as_bytes(), b".", &body]));
    let mut h2 = HeaderMap::new();
    h2.insert(
        "stripe-signature",
        HeaderValue::from_str(&format!("t={ts},v1={v1},v1={v1_old}")).unwrap(),
    );
    assert!(rotating.verify(&h2, &body, NOW).is_ok());
    group.bench_function("stripe_two_secrets", |b| {
        b.iter(|| black_box(rotating.verify(black_box(&h2), black_box(&body), NOW)))
    });

    let key = b"standard-webhooks-bench-key-32b!";
    let sw = plugin(&format!(
        "scheme = \"standard_webhooks\"\nsecrets = [\"whsec_{}\"]",
        B64.encode(key)
    ));
    let id = "msg_2Lh9KRb0pzN4LXRlXJ0jOdHs5j8";
    let sig = B64.encode(mac(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", &body]));
    let mut h3 = HeaderMap::new();
    h3.insert("webhook-id", HeaderValue::from_static(id));
    h3.insert("webhook-timestamp", HeaderValue::from_str(&ts).unwrap());
    h3.insert(
        "webhook-signature",
        HeaderValue::from_str(&format!("v1,{sig}")).unwrap(),
    );
    assert!(sw.verify(&h3, &body, NOW).is_ok());
    group.bench_function("standard_webhooks", |b| {
        b.iter(|| black_box(sw.verify(black_box(&h3), black_box(&body), NOW)))
    });

    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
