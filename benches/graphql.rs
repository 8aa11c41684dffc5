//! GraphQL query analysis (SPEC §14): `cargo bench --bench graphql`.
//!
//! - `typical_2KiB`: an account view (about 1.9 KiB) with `first: 20`
//!   pagination, four named fragments (one used at four levels) and two
//!   inline fragments, accepted under the SPEC limits. Target: ≤ 20 µs.
//! - `hostile_1MiB_nested` (`{a{a{a…` to the end) and `hostile_1MiB_aliases`
//!   (`{ a0: f a1: f … }`): refused, TOKEN_LIMIT after 5 000 tokens.
//!   Target: ≤ 5 ms.
//! - `hostile_1MiB_nested_no_token_limit`: the nested one with `max_tokens`
//!   unbounded, so the whole megabyte is lexed before DEPTH_LIMIT (no parse).
//! - `fragment_bomb`: 40 fragments each spreading the one before twice
//!   (2^40 fields), measured once each and refused, ALIAS_LIMIT.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tollgate::plugins::graphql::analyze::{analyze, Limits};

const SPEC: Limits = Limits::SPEC;

const ACCOUNT_VIEW: &str = include_str!("fixtures/account_view.graphql");

/// `piece` repeated until the text is 1 MiB, then `end`.
fn mebibyte(start: &str, piece: impl Fn(usize) -> String, end: &str) -> String {
    let mut q = String::from(start);
    let mut i = 0;
    while q.len() < 1 << 20 {
        q.push_str(&piece(i));
        i += 1;
    }
    q.push_str(end);
    q
}

fn bench(c: &mut Criterion) {
    let vars = serde_json::json!({"accountId": "acc_1", "after": null});
    let m = analyze(ACCOUNT_VIEW, Some("AccountView"), Some(&vars), &SPEC).expect("accepted");
    assert_eq!((m.depth, m.complexity), (6, 751));
    let mut g = c.benchmark_group("graphql");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(ACCOUNT_VIEW.len() as u64));
    g.bench_function("typical_2KiB", |b| {
        b.iter(|| {
            analyze(
                black_box(ACCOUNT_VIEW),
                Some("AccountView"),
                Some(&vars),
                &SPEC,
            )
        })
    });

    let nested = mebibyte("", |_| "{a".to_owned(), "");
    let aliases = mebibyte("{", |i| format!(" a{i}: f"), " }");
    let mut open = SPEC;
    open.max_tokens = usize::MAX;
    let cases = [
        ("hostile_1MiB_nested", &nested, SPEC, "TOKEN_LIMIT"),
        ("hostile_1MiB_aliases", &aliases, SPEC, "TOKEN_LIMIT"),
        (
            "hostile_1MiB_nested_no_token_limit",
            &nested,
            open,
            "DEPTH_LIMIT",
        ),
    ];
    for (name, q, limits, code) in cases {
        let r = analyze(q, None, None, &limits).expect_err("refused");
        assert_eq!(r.code.as_str(), code, "{name}");
        g.throughput(Throughput::Bytes(q.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| analyze(black_box(q), None, None, &limits))
        });
    }

    let mut bomb = String::from("{ ...F40 } fragment F0 on Q { x: a(first: 1000) }");
    for i in 1..=40 {
        bomb.push_str(&format!(
            " fragment F{i} on Q {{ ...F{} ...F{} }}",
            i - 1,
            i - 1
        ));
    }
    let r = analyze(&bomb, None, None, &SPEC).expect_err("refused");
    assert_eq!(r.code.as_str(), "ALIAS_LIMIT");
    g.throughput(Throughput::Bytes(bomb.len() as u64));
    g.bench_function("fragment_bomb", |b| {
        b.iter(|| analyze(black_box(&bomb), None, None, &SPEC))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
