//! What one proxied request costs the gateway besides Pingora's own work,
//! piece by piece, to explain the load benchmark's figures (`benches/load/run`:
//! `full` vs `passthrough`, `passthrough` vs `floor`).
//!
//! `cargo bench --bench pipeline` (quicker: `cargo bench --bench pipeline -- --quick`).
//!
//! - `access_log_line/{json,json_serde,text,off}`: one `logging::access` call
//!   with the values of a load-benchmark request, through the subscriber
//!   `logging::init` installs (same filter; `json`: `TOLLGATE_LOG_FORMAT=json`,
//!   the gateway's own `JsonLines` format; `text`: the default format) but
//!   writing to `io::sink` instead of the buffered stderr writer. `json_serde`
//!   is tracing-subscriber's JSON format (`flatten_event`, no spans), which
//!   `JsonLines` replaced, for comparison. `off`: the JSON subscriber with the
//!   `tollgate::access` target disabled (`TOLLGATE_LOG=info,tollgate::access=off`).
//!   The subscriber is scoped to the bench (`with_default`), not global.
//! - `metrics_per_request/{requests_total,request_duration,upstream_duration,all}`:
//!   the Prometheus calls of `upstream_response_filter` and `logging` in
//!   `src/proxy/mod.rs`, on `metrics::METRICS`, with the same labels.
//! - `plugin_chain_full/{request,all_hooks,one/*}`: the route chain of
//!   `benches/load/tollgate-full.toml` (jwt HS256 with its verified-token cache
//!   warm, rate_limit keyed on the consumer that never triggers, circuit_breaker
//!   closed), built by `runtime::compile` from that very file, on a Pingora
//!   `Session` over an in-memory stream holding the request wrk sends.
//!   `request`: every plugin's `request` hook; `all_hooks`: also
//!   `upstream_request` (plus applying the headers the plugins asked for),
//!   `upstream_response` (the breaker's record), `response` (the
//!   `RateLimit-*` headers) and `finish`. `one/{jwt,rate_limit,circuit_breaker}`:
//!   one plugin's hooks alone (the plugins before it run untimed). The
//!   per-request context is built outside the timed part.
//! - `gateway_phases/{passthrough,full}`: `Gateway`'s `ProxyHttp` phases in the
//!   order Pingora calls them for a proxied request (`new_ctx`,
//!   `request_filter`, `proxy_upstream_filter`, `upstream_peer`,
//!   `upstream_request_filter` on a copy of the request header,
//!   `upstream_response_filter` and `response_filter` on a copy of a 200
//!   response header, `logging`), no I/O, no subscriber installed (so the
//!   access line costs nothing here: add `access_log_line/json`). Their
//!   difference is what the plugins add to a request in the gateway.

use std::future::Future;
use std::hint::black_box;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{ProxyHttp, Session};
use serde_json::json;
use tollgate::config::load_str;
use tollgate::logging::{access, Access, JsonLines, DEFAULT_FILTER};
use tollgate::metrics::{RouteMetrics, METRICS};
use tollgate::pipeline::{Flow, Instance, UpstreamOutcome};
use tollgate::proxy::{Gateway, ProxyCtx};
use tollgate::runtime::{compile, Reuse, Runtime};
use tracing_subscriber::EnvFilter;

/// The gateway's allocator (src/main.rs), so that allocations cost here what
/// they cost there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `benches/load/run`'s values.
const JWT_SECRET: &str = "tollgate-load-bench-hs256-secret-0123456789abcdef";
const JWT_ISSUER: &str = "https://id.bench.local";
const JWT_AUDIENCE: &str = "tollgate-bench";
const PATH: &str = "/api/items/42";
const UPSTREAM: &str = "127.0.0.1:18000";
const LISTEN_PORT: &str = "18004";

/// The gateway's futures on this path never wait: poll them once.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a request-path future waited"),
    }
}

// ---------------------------------------------------------------------------
// access_log_line

fn bench_access_log(c: &mut Criterion) {
    let line = Access {
        request_id: "3f2a9c1e-7b4d-4e8f-a1c2-5d6e7f809a1b",
        trace_id: "",
        route: "full",
        method: "GET",
        path: PATH,
        status: 200,
        duration_ms: 0.412,
        upstream: UPSTREAM,
        bytes: 64,
        consumer: "bench-client",
        client_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        error: None,
    };
    let mut g = c.benchmark_group("access_log_line");
    let mut run = |name: &str, dispatch: tracing::Dispatch| {
        tracing::dispatcher::with_default(&dispatch, || {
            g.bench_function(name, |b| b.iter(|| access(black_box(&line))));
        });
    };
    let fmt = || tracing_subscriber::fmt().with_writer(std::io::sink);
    run(
        "json",
        fmt()
            .with_env_filter(EnvFilter::new(DEFAULT_FILTER))
            .event_format(JsonLines)
            .finish()
            .into(),
    );
    run(
        "json_serde",
        fmt()
            .with_env_filter(EnvFilter::new(DEFAULT_FILTER))
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .into(),
    );
    run(
        "text",
        fmt()
            .with_env_filter(EnvFilter::new(DEFAULT_FILTER))
            .finish()
            .into(),
    );
    run(
        "off",
        fmt()
            .with_env_filter(EnvFilter::new(format!(
                "{DEFAULT_FILTER},tollgate::access=off"
            )))
            .event_format(JsonLines)
            .finish()
            .into(),
    );
    g.finish();
}

// ---------------------------------------------------------------------------
// metrics_per_request

fn bench_metrics(c: &mut Criterion) {
    // What a snapshot resolves once per route (`Route::metrics`).
    let route = RouteMetrics::new("full");
    let upstream = "app";
    let code = http::StatusCode::OK;
    let elapsed = Duration::from_micros(412);
    let upstream_elapsed = Duration::from_micros(305);
    let mut g = c.benchmark_group("metrics_per_request");
    g.bench_function("requests_total", |b| {
        b.iter(|| {
            METRICS
                .requests_total
                .with_label_values(&[black_box("full"), black_box("GET"), code.as_str()])
                .inc()
        })
    });
    g.bench_function("request_duration", |b| {
        b.iter(|| route.duration.observe(black_box(elapsed).as_secs_f64()))
    });
    g.bench_function("upstream_duration", |b| {
        b.iter(|| {
            METRICS
                .upstream_duration
                .with_label_values(&[black_box(upstream)])
                .observe(black_box(upstream_elapsed).as_secs_f64())
        })
    });
    g.bench_function("all", |b| {
        b.iter(|| {
            METRICS
                .upstream_duration
                .with_label_values(&[black_box(upstream)])
                .observe(black_box(upstream_elapsed).as_secs_f64());
            METRICS
                .requests_total
                .with_label_values(&[black_box("full"), black_box("GET"), code.as_str()])
                .inc();
            route.duration.observe(black_box(elapsed).as_secs_f64());
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// The load benchmark's gateways, in process

/// A `benches/load/tollgate-*.toml` config, with its placeholders filled in as
/// `benches/load/run` fills them, compiled as the gateway compiles it.
fn load_runtime(template: &str) -> Runtime {
    // `tollgate-full.toml` reads the HS256 secret from here, as under `run`.
    // Set before any other thread reads the environment.
    std::env::set_var("TOLLGATE_BENCH_JWT_SECRET", JWT_SECRET);
    let text = template
        .replace("{{PORT}}", LISTEN_PORT)
        .replace("{{ADMIN_PORT}}", "18010")
        .replace("{{THREADS}}", "1")
        .replace("{{UPSTREAM}}", UPSTREAM)
        .replace("{{JWT_ISSUER}}", JWT_ISSUER)
        .replace("{{JWT_AUDIENCE}}", JWT_AUDIENCE)
        // The load benchmark's limit never triggers at wrk's rate; a tight
        // loop in one process runs faster than 1M requests/s, so it gets
        // a limit 1000 times higher (the same code path).
        .replace("rate = \"1000000/s\"", "rate = \"1000000000/s\"")
        .replace("burst = 1000000\n", "burst = 1000000000\n");
    let cfg = match load_str(
        &text,
        Some(Path::new("/bench/tollgate.toml")),
        Path::new("/bench"),
    ) {
        Ok(c) => c,
        Err(e) => panic!("bench config is valid: {:?}", e.messages()),
    };
    match compile(cfg, Reuse::default()) {
        Ok(rt) => rt,
        Err(e) => panic!("bench config compiles: {:?}", e.messages()),
    }
}

/// The token `benches/load/run` signs for the `full` case.
fn token() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = json!({
        "sub": "bench-client", "iss": JWT_ISSUER, "aud": JWT_AUDIENCE,
        "iat": now, "exp": now + 7 * 86_400,
    });
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("token signs")
}

/// A downstream session whose request (what wrk sends) has been read, over an
/// in-memory stream (Pingora implements its `IO` for `std::io::Cursor`).
fn session(rt: &tokio::runtime::Runtime, token: Option<&str>) -> Session {
    let mut head = format!("GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{LISTEN_PORT}\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    let mut s = Session::new_h1(Box::new(Cursor::new(head.into_bytes())));
    match rt.block_on(s.read_request()) {
        Ok(true) => s,
        other => panic!("the bench request is read: {other:?}"),
    }
}

/// The upstream's answer in the load benchmark (nginx, 64-byte JSON body).
fn upstream_response() -> ResponseHeader {
    let mut r = ResponseHeader::build(200, Some(4)).expect("status");
    r.insert_header("server", "nginx/1.22.1").expect("header");
    r.insert_header("date", "Wed, 25 Nov 2026 12:59:00 GMT")
        .expect("header");
    r.insert_header("content-type", "application/json")
        .expect("header");
    r.insert_header("content-length", "64").expect("header");
    r
}

// ---------------------------------------------------------------------------
// plugin_chain_full

fn bench_plugin_chain(c: &mut Criterion) {
    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = tokio_rt.enter();
    let gw = Gateway::new(Arc::new(ArcSwap::from_pointee(load_runtime(include_str!(
        "load/tollgate-full.toml"
    )))));
    let token = token();
    let mut s = session(&tokio_rt, Some(&token));
    let rt = gw.live.load_full();
    let route = rt
        .routes
        .iter()
        .position(|r| &*r.name == "full")
        .expect("route full");
    let chain = rt.routes[route].chain.clone();
    assert_eq!(
        chain.iter().map(|i| &*i.name).collect::<Vec<_>>(),
        ["bench_jwt", "bench_limit", "bench_breaker"],
        "the full case's chain, in phase order"
    );
    let new_ctx = || {
        let mut ctx = gw.new_ctx();
        ctx.req.matched.index = Some(route);
        ctx
    };
    let run_request = |s: &mut Session, ctx: &mut ProxyCtx, chain: &[Instance]| {
        for (n, i) in chain.iter().enumerate() {
            match now(i.plugin.request(s, &mut ctx.req, ctx.states.slot(n))) {
                Ok(Flow::Continue) => {}
                _ => panic!("{} did not let the request through", i.name),
            }
        }
    };
    // The first request verifies the signature and fills the token cache.
    {
        let mut ctx = new_ctx();
        run_request(&mut s, &mut ctx, &chain);
        assert_eq!(ctx.req.identity.consumer.as_deref(), Some("bench-client"));
        for (n, i) in chain.iter().enumerate() {
            i.plugin.finish(&mut ctx.req, ctx.states.slot(n));
        }
    }
    let mut g = c.benchmark_group("plugin_chain_full");
    g.bench_function("request", |b| {
        b.iter_batched(
            new_ctx,
            |mut ctx| {
                run_request(&mut s, &mut ctx, &chain);
                // The breaker's ticket must be given back, as the gateway does.
                for (n, i) in chain.iter().enumerate() {
                    i.plugin.finish(&mut ctx.req, ctx.states.slot(n));
                }
            },
            BatchSize::SmallInput,
        )
    });
    let mut up_req: RequestHeader = s.req_header().clone();
    let mut resp = upstream_response();
    g.bench_function("all_hooks", |b| {
        b.iter_batched(
            new_ctx,
            |mut ctx| {
                run_request(&mut s, &mut ctx, &chain);
                for (n, i) in chain.iter().enumerate() {
                    i.plugin
                        .upstream_request(&mut up_req, &ctx.req, ctx.states.slot(n))
                        .expect("upstream_request");
                }
                for (n, v) in &ctx.req.upstream.headers {
                    up_req.insert_header(n.clone(), v.clone()).expect("header");
                }
                ctx.req.upstream.outcome = Some(UpstreamOutcome {
                    status: Some(200),
                    error: false,
                    elapsed: Duration::from_micros(305),
                });
                for (n, i) in chain.iter().enumerate() {
                    i.plugin
                        .upstream_response(&resp, &mut ctx.req, ctx.states.slot(n));
                }
                for (n, i) in chain.iter().enumerate() {
                    i.plugin.response(&mut resp, &ctx.req, ctx.states.slot(n));
                }
                for (n, i) in chain.iter().enumerate() {
                    i.plugin.finish(&mut ctx.req, ctx.states.slot(n));
                }
            },
            BatchSize::SmallInput,
        )
    });
    // Each plugin alone, all its hooks; the plugins before it in the chain
    // run in the untimed setup (the rate limit is keyed on jwt's consumer).
    let mut s_setup = session(&tokio_rt, Some(&token));
    for (k, (name, inst)) in ["jwt", "rate_limit", "circuit_breaker"]
        .iter()
        .zip(chain.iter())
        .enumerate()
    {
        g.bench_function(format!("one/{name}"), |b| {
            b.iter_batched(
                || {
                    let mut ctx = new_ctx();
                    run_request(&mut s_setup, &mut ctx, &chain[..k]);
                    ctx.req.upstream.outcome = Some(UpstreamOutcome {
                        status: Some(200),
                        error: false,
                        elapsed: Duration::from_micros(305),
                    });
                    ctx
                },
                |mut ctx| {
                    let p = &inst.plugin;
                    let ProxyCtx { req, states, .. } = &mut ctx;
                    let slot = states.slot(k);
                    match now(p.request(&mut s, req, slot)) {
                        Ok(Flow::Continue) => {}
                        _ => panic!("{} did not let the request through", inst.name),
                    }
                    p.upstream_request(&mut up_req, req, slot)
                        .expect("upstream_request");
                    p.upstream_response(&resp, req, slot);
                    p.response(&mut resp, req, slot);
                    p.finish(req, slot);
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
    assert_eq!(
        chain.iter().find_map(|i| i.plugin.circuit_state("app")),
        Some(0),
        "the breaker stayed closed"
    );
}

// ---------------------------------------------------------------------------
// gateway_phases

fn bench_gateway(c: &mut Criterion) {
    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = tokio_rt.enter();
    let token = token();
    let cases = [
        (
            "passthrough",
            include_str!("load/tollgate-passthrough.toml"),
            None,
        ),
        (
            "full",
            include_str!("load/tollgate-full.toml"),
            Some(token.as_str()),
        ),
    ];
    let upstream_resp = upstream_response();
    let mut g = c.benchmark_group("gateway_phases");
    for (name, template, token) in cases {
        let gw = Gateway::new(Arc::new(ArcSwap::from_pointee(load_runtime(template))));
        let mut s = session(&tokio_rt, token);
        let one = |s: &mut Session| {
            let mut ctx = gw.new_ctx();
            assert!(
                !now(gw.request_filter(s, &mut ctx)).expect("request_filter"),
                "not answered by the gateway"
            );
            assert!(now(gw.proxy_upstream_filter(s, &mut ctx)).expect("proxy_upstream_filter"));
            let peer = now(gw.upstream_peer(s, &mut ctx)).expect("a peer");
            let mut up_req = s.req_header().clone();
            now(gw.upstream_request_filter(s, &mut up_req, &mut ctx))
                .expect("upstream_request_filter");
            let mut resp = upstream_resp.clone();
            now(gw.upstream_response_filter(s, &mut resp, &mut ctx))
                .expect("upstream_response_filter");
            now(gw.response_filter(s, &mut resp, &mut ctx)).expect("response_filter");
            now(gw.logging(s, None, &mut ctx));
            (peer, up_req, resp)
        };
        // Warm: the first request verifies the token and creates label sets.
        let (_, up_req, resp) = one(&mut s);
        if token.is_some() {
            assert!(up_req.headers.contains_key("x-consumer"), "jwt ran");
            assert!(
                resp.headers.contains_key("ratelimit-limit"),
                "rate_limit ran"
            );
        }
        g.bench_function(name, |b| b.iter(|| one(&mut s)));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench_access_log, bench_metrics, bench_plugin_chain, bench_gateway
}
criterion_main!(benches);
