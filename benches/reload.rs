//! Reload benchmark: what a hot reload of a 1,000-route config costs off the request path.
//!
//! `cargo bench --bench reload`. The config has 1,000 routes in four shapes (like
//! `benches/router.rs`), 20 upstreams and a handful of plugins (a global `request_id`,
//! `headers` on every route, `rate_limit` on every other one, `circuit_breaker` and
//! `idempotency` on some). Measured:
//!
//! - `reload/compile_and_swap/1000`: parse + validate (`config::load_str`), compile against the
//!   running snapshot (`runtime::compile` with `Reuse`, so unchanged upstreams and plugins are
//!   carried over, as a reload does), and one `ArcSwap::store` (which also drops the old
//!   snapshot) — the whole reload minus reading the file;
//! - `reload/parse/1000`: parse + validate alone;
//! - `reload/parse_and_compile_fresh/1000`: parse + validate + compile with no previous
//!   snapshot (every upstream and plugin built anew, as at start-up).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tollgate::config::load_str;
use tollgate::runtime::{compile, Reuse, Runtime};

const UPSTREAMS: usize = 20;

fn config_text(routes: usize) -> String {
    let mut s = String::from(
        r#"
[server]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:19901"
threads = 2
plugins = ["request_id"]

[plugins.request_id]
type = "request_id"

[plugins.tidy]
type = "headers"
response_set = { "x-content-type-options" = "nosniff" }
response_remove = ["server"]

[plugins.per_client]
type = "rate_limit"
rate = "600/min"
burst = 50
key = "ip"

[plugins.breaker]
type = "circuit_breaker"
failure_rate = 0.5
min_requests = 20

[plugins.idem]
type = "idempotency"
methods = ["POST"]
"#,
    );
    for u in 0..UPSTREAMS {
        s.push_str(&format!(
            r#"
[upstreams.svc{u}]
targets = ["127.0.0.1:{}", {{ addr = "127.0.0.1:{}", weight = 2 }}]
connect_timeout = "1s"
read_timeout = "10s"
[upstreams.svc{u}.retry]
attempts = 1
on = ["connect_error", "502"]
"#,
            20000 + 2 * u,
            20001 + 2 * u
        ));
    }
    for i in 0..routes {
        let up = i % UPSTREAMS;
        let mut plugins = vec!["\"tidy\""];
        if i.is_multiple_of(2) {
            plugins.push("\"per_client\"");
        }
        let extra = match i % 4 {
            0 => format!(r#"path = "/v{}/service{i}/resources""#, 1 + i % 3),
            1 => format!("path = \"/v1/service{i}/items/{{id}}\"\nmethods = [\"GET\"]"),
            2 => {
                plugins.push("\"idem\"");
                plugins.push("\"breaker\"");
                format!(
                    "path = \"/v2/service{i}/orders\"\nhosts = [\"api{}.example.com\"]\nmethods = [\"GET\", \"POST\"]",
                    i % 7
                )
            }
            _ => format!(
                "path = \"/v3/service{i}/users/{{user}}/profile\"\nhosts = [\"*.example.com\"]\nheaders = {{ \"x-tenant\" = \"acme\" }}\nstrip_prefix = \"/v3\""
            ),
        };
        s.push_str(&format!(
            "\n[[routes]]\nname = \"r{i}\"\nupstream = \"svc{up}\"\n{extra}\nplugins = [{}]\n",
            plugins.join(", ")
        ));
    }
    s
}

fn load(text: &str, previous: Option<&Runtime>) -> Runtime {
    let file = Path::new("/bench/gateway.toml");
    let cfg = match load_str(text, Some(file), Path::new("/bench")) {
        Ok(c) => c,
        Err(e) => panic!("bench config is valid: {:?}", e.messages()),
    };
    match compile(cfg, Reuse { previous }) {
        Ok(rt) => rt,
        Err(e) => panic!("bench config compiles: {:?}", e.messages()),
    }
}

fn bench_reload(c: &mut Criterion) {
    let mut group = c.benchmark_group("reload");
    group.measurement_time(Duration::from_secs(5));
    group.warm_up_time(Duration::from_secs(1));
    group.sample_size(20);
    let n = 1000;
    let text = config_text(n);
    let first = load(&text, None);
    assert_eq!(first.routes.len(), n);
    let live = ArcSwap::from_pointee(first);

    group.bench_with_input(BenchmarkId::new("compile_and_swap", n), &text, |b, text| {
        b.iter(|| {
            let current = live.load_full();
            let next = load(black_box(text), Some(&current));
            drop(current);
            live.store(Arc::new(next));
        })
    });
    group.bench_with_input(BenchmarkId::new("parse", n), &text, |b, text| {
        b.iter(|| load_str(black_box(text), None, Path::new("/bench")).is_ok())
    });
    group.bench_with_input(
        BenchmarkId::new("parse_and_compile_fresh", n),
        &text,
        |b, text| b.iter(|| load(black_box(text), None)),
    );
    group.finish();
}

criterion_group!(benches, bench_reload);
criterion_main!(benches);
