//! The floor of the load benchmark (`benches/load/run`): a bare Pingora
//! `ProxyHttp` that forwards every request to one upstream peer over pooled
//! keep-alive connections and does nothing else: no routing, no plugins, no
//! metrics, no logging. What tollgate costs above this is what tollgate adds.
//!
//! Built with tollgate's own release profile and allocator (mimalloc):
//!
//! ```sh
//! cargo build --release --example bare_pingora
//! target/release/examples/bare_pingora 127.0.0.1:18081 18083 [threads]
//! ```
//!
//! Arguments: upstream `host:port`, listen port (bound on 127.0.0.1), and the
//! number of worker threads (default 1). Server options are Pingora's
//! defaults (`ServerConf::default()` with `threads`; `work_stealing = true`),
//! kept as they were when the floor was set: tollgate's own choices (its
//! single-threaded workers: `[server] work_stealing` unset, without Redis)
//! are measured against this unchanged reference.
//!
//! One optional knob, for exploring the floor itself, off by default:
//! `BARE_PINGORA_L4_READ_BUFFER=<bytes>` sets the downstream listener's L4 read
//! buffer (Pingora's default is 64 KiB per connection; `0` disables it).
//! `BARE_PINGORA_PEER_TIMEOUTS=1` gives the upstream peer tollgate's default
//! timeouts (connect, read, write), to measure what Pingora's timers cost.
//! `BARE_PINGORA_NO_STEAL=1` turns Pingora's work stealing off (one
//! single-threaded runtime per worker), to measure that lever on the floor.

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};
use std::net::SocketAddr;
use std::time::Duration;

/// The same allocator as tollgate (see src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    upstream: SocketAddr,
    peer_timeouts: bool,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();
    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        // The same idle limit tollgate gives its upstream connections.
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        if self.peer_timeouts {
            // tollgate's default upstream timeouts (connect 1 s, read and
            // write 10 s, a total connect deadline), for measuring what
            // Pingora's timers cost.
            let o = &mut peer.options;
            o.connection_timeout = Some(Duration::from_secs(1));
            o.total_connection_timeout = Some(Duration::from_secs(1));
            o.read_timeout = Some(Duration::from_secs(10));
            o.write_timeout = Some(Duration::from_secs(10));
        }
        Ok(Box::new(peer))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 || args.len() > 4 {
        eprintln!(
            "usage: {} UPSTREAM_HOST:PORT LISTEN_PORT [THREADS]",
            args[0]
        );
        std::process::exit(2);
    }
    let upstream: SocketAddr = args[1].parse().unwrap_or_else(|e| {
        eprintln!("bad upstream address {:?}: {e}", args[1]);
        std::process::exit(2)
    });
    let port: u16 = args[2].parse().unwrap_or_else(|e| {
        eprintln!("bad listen port {:?}: {e}", args[2]);
        std::process::exit(2)
    });
    let threads: usize = match args.get(3) {
        Some(t) => t.parse().unwrap_or_else(|e| {
            eprintln!("bad thread count {t:?}: {e}");
            std::process::exit(2)
        }),
        None => 1,
    };

    let conf = ServerConf {
        threads,
        work_stealing: std::env::var_os("BARE_PINGORA_NO_STEAL").is_none(),
        // Own pid file and upgrade socket, so it never meets another server's.
        pid_file: format!("/tmp/bare_pingora-{port}.pid"),
        upgrade_sock: format!("/tmp/bare_pingora-{port}.sock"),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: false,
        daemon: false,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Floor {
            upstream,
            peer_timeouts: std::env::var_os("BARE_PINGORA_PEER_TIMEOUTS").is_some(),
        },
    );
    let mut listener = ListenerConfig::tcp(format!("127.0.0.1:{port}"));
    if let Ok(v) = std::env::var("BARE_PINGORA_L4_READ_BUFFER") {
        let bytes: usize = v.parse().unwrap_or_else(|e| {
            eprintln!("bad BARE_PINGORA_L4_READ_BUFFER {v:?}: {e}");
            std::process::exit(2)
        });
        listener = listener.l4_buffer(L4BufferSettings::default().read(bytes));
    }
    proxy.add_listener(listener);
    server.add_service(proxy);
    server.run_forever()
}
