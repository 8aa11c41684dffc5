//! Per-request costs of the traffic plugins' state: a rate-limit check, a
//! breaker admit + record, an idempotency-record lookup.
//!
//! `cargo bench --bench traffic`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::breaker::{BreakerSet, FailureRate, Outcome, Policy};
use tollgate::config::load_str;
use tollgate::pipeline::BuildCtx;
use tollgate::plugins::rate_limit::RateLimit;
use tollgate::plugins::rate_limit::RateLimitConfig;
use tollgate::store::records::{Begin, LocalRecords, Stored};

fn rate_limiter() -> RateLimit {
    let cfg = load_str(
        "[plugins.rl]\ntype = \"rate_limit\"\nrate = \"1000000000/s\"\nburst = 1000000\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\"rl\"]\n",
        None,
        std::path::Path::new("."),
    )
    .expect("valid bench config");
    let Some(c) = cfg.plugin_config::<RateLimitConfig>("rl").cloned() else {
        panic!("rate_limit plugin");
    };
    RateLimit::new(
        &c,
        &BuildCtx {
            name: "rl",
            config: &cfg,
        },
    )
    .unwrap_or_else(|_| panic!("builds"))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("traffic");
    g.measurement_time(Duration::from_secs(2)).sample_size(30);

    let rl = rate_limiter();
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("i:10.0.{}.{}", i / 256, i % 256))
        .collect();
    let mut i = 0;
    g.bench_function("rate_limit_check_10k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(rl.check(&keys[i]).is_ok())
        })
    });

    // The `circuit_breaker` plugin's defaults.
    let breakers = BreakerSet::new(
        Policy {
            consecutive_failures: None,
            failure_rate: Some(FailureRate {
                ratio: 0.5,
                window: Duration::from_secs(10),
                min_requests: 20,
            }),
            open_for: Duration::from_secs(30),
            probes: 3,
        },
        Instant::now(),
    );
    let up: Arc<str> = Arc::from("payments");
    g.bench_function("breaker_admit_record", |b| {
        b.iter(|| {
            let permit = breakers.admit(&up, Instant::now()).expect("closed");
            permit.finish(Outcome::Success, Instant::now());
        })
    });

    let store = LocalRecords::new(64 << 20);
    let ttl = Duration::from_secs(3600);
    for k in 0..10_000 {
        let key = format!("acme\0key-{k}");
        if let Begin::Proceed(t) = store.begin(&key, [7; 32], ttl) {
            store.complete(
                &key,
                t,
                Stored {
                    status: 201,
                    headers: vec![],
                    body: "{\"id\":\"pay_1\"}".into(),
                },
                ttl,
            );
        }
    }
    let mut k = 0;
    g.bench_function("idempotency_replay_lookup_10k", |b| {
        b.iter(|| {
            k = (k + 1) % 10_000;
            black_box(matches!(
                store.begin(&format!("acme\0key-{k}"), [7; 32], ttl),
                Begin::Replay(_)
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
