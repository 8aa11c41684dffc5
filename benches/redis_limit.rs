//! The cost of a Redis-backed rate limit against the local one, in one run:
//! wall-clock latency per decision and CPU time per decision of this process
//! (the gateway's side) and of the Redis server.
//!
//! `cargo bench --bench redis_limit` (needs `redis-server` on the PATH; it
//! starts its own on a free port).
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tollgate::config::load_str;
use tollgate::pipeline::BuildCtx;
use tollgate::plugins::rate_limit::RateLimit;
use tollgate::plugins::rate_limit::RateLimitConfig;

/// Decisions per measurement: enough for the CPU clock's 10 ms ticks to resolve.
const N_LOCAL: usize = 2_000_000;
const N_REDIS: usize = 20_000;

fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after ')'.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn ticks_per_sec() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn limiter(backend: &str, port: u16) -> RateLimit {
    let src = format!(
        "[redis]\nurl = \"redis://127.0.0.1:{port}\"\ntimeout = \"1s\"\n[plugins.rl]\ntype = \"rate_limit\"\nrate = \"1000000000/s\"\nburst = 1000000\nkey = \"global\"\nbackend = \"{backend}\"\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\"rl\"]\n"
    );
    let cfg = load_str(&src, None, std::path::Path::new(".")).expect("valid bench config");
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
    .unwrap_or_else(|e| panic!("{e:?}"))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let mut redis = match Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("redis_limit bench skipped: cannot start redis-server ({e})");
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let hz = ticks_per_sec();
    let me = "self".to_string();
    let redis_pid = redis.id().to_string();
    println!(
        "{:<8} {:>14} {:>20} {:>22}",
        "backend", "µs/decision", "gateway CPU µs/dec", "redis-server CPU µs/dec"
    );
    let mut rows = Vec::new();
    for round in 0..3 {
        for backend in ["local", "redis"] {
            let rl = limiter(backend, port);
            rt.block_on(async {
                // Warm up (and connect).
                for _ in 0..200 {
                    let _ = rl.decide("bench").await;
                }
                let n = if backend == "local" { N_LOCAL } else { N_REDIS };
                let (c0, r0, t0) = (cpu_ticks(&me), cpu_ticks(&redis_pid), Instant::now());
                for _ in 0..n {
                    assert!(rl.decide("bench").await.expect("backend").is_ok());
                }
                let wall = t0.elapsed().as_secs_f64() * 1e6 / n as f64;
                let cpu = (cpu_ticks(&me) - c0) as f64 / hz * 1e6 / n as f64;
                let rcpu = (cpu_ticks(&redis_pid) - r0) as f64 / hz * 1e6 / n as f64;
                println!(
                    "{backend:<8} {wall:>14.2} {cpu:>20.2} {rcpu:>22.2}   (round {})",
                    round + 1
                );
                rows.push((backend, wall, cpu));
            });
        }
    }
    let median = |b: &str, f: fn(&(&str, f64, f64)) -> f64| {
        let mut v: Vec<f64> = rows.iter().filter(|r| r.0 == b).map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (lw, rw) = (median("local", |r| r.1), median("redis", |r| r.1));
    let (lc, rc) = (median("local", |r| r.2), median("redis", |r| r.2));
    println!("median: redis/local latency {:.0}x ({rw:.2} vs {lw:.2} µs), gateway CPU {:.0}x ({rc:.2} vs {lc:.2} µs)", rw / lw, rc / lc.max(1e-6));
    let _ = redis.kill();
    let _ = redis.wait();
}
