//! Assemble the Pingora server: the proxy listeners (plain and TLS), the admin
//! listener, the background services (`SIGHUP`, the config file watcher, health
//! checks, plugin ticks, trace export, the exit once drained), and — for `tollgate demo` —
//! the demo upstreams.

use crate::admin::Admin;
use crate::health::{HealthChecks, PluginTicks};
use crate::proxy::app::GatewayApp;
use crate::proxy::Gateway;
use crate::reload::Reloader;
use crate::runtime::{self, Reuse};
use crate::signals::{ExitWhenDrained, ShutdownSignals, SighupReload};
use crate::watch::ConfigWatcher;
use pingora::apps::http_app::HttpServer;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::path::Path;
use std::sync::Arc;

pub struct RunOptions {
    pub upgrade: bool,
    pub demo: bool,
}

/// Load the config and serve until told to stop. Config errors are printed and
/// the process exits with status 1.
pub fn run(config_path: &Path, opts: RunOptions) -> ! {
    let rt = match runtime::load(config_path, Reuse::default()) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let cfg = rt.config.clone();
    if !opts.upgrade {
        let mut addrs = cfg.server.listen.to_vec();
        addrs.extend(cfg.server.tls.iter().map(|t| t.listen.clone()));
        addrs.push(cfg.server.admin_listen.clone());
        if let Err(e) = addresses_free(&addrs) {
            eprintln!("{}: {e}", config_path.display());
            std::process::exit(1);
        }
    }
    let reloader = Reloader::new(rt, config_path.to_path_buf());
    let live = reloader.live.clone();

    // Pingora counts whole seconds: round the grace period up, never down to none.
    let grace = cfg.server.grace_period.0.as_secs_f64().ceil() as u64;
    let mut conf = ServerConf {
        threads: cfg.server.threads,
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(grace.max(1)),
        upgrade_sock: upgrade_sock(config_path),
        pid_file: format!(
            "{}.pid",
            upgrade_sock(config_path).trim_end_matches(".sock")
        ),
        // Idle upstream connections are kept per client connection (see
        // `share_connections`): room for as many as there are busy clients.
        upstream_keepalive_pool_size: 8192,
        ..ServerConf::default()
    };
    conf.work_stealing = cfg.work_stealing();
    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: false,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    // Listening for SIGHUP before any listener opens (they depend on it): a
    // gateway that answers requests can always be sent one.
    let sighup = server.add_service(background_service(
        "tollgate SIGHUP reload",
        SighupReload {
            reloader: reloader.clone(),
        },
    ));

    let proxy = pingora::proxy::http_proxy(&server.configuration, Gateway::new(live.clone()));
    let app = GatewayApp {
        proxy: Arc::new(proxy),
        live: live.clone(),
        admin: false,
    };
    let mut svc = Service::new("tollgate proxy".to_string(), app);
    let mut listen_addrs = Vec::new();
    for l in cfg.server.listen.to_vec() {
        // No L4 read buffer on plain listeners: `read_head` reads each request
        // head into its own buffer, so Pingora's 64 KiB buffer per connection
        // would only add a copy, and 64 KiB of memory to every idle
        // keep-alive connection. (TLS listeners keep it: rustls reads in
        // small records, and the buffer saves syscalls there.)
        svc.add_listener(ListenerConfig::tcp(&l).l4_buffer(L4BufferSettings::default().read(0)));
        if let Ok(a) = l.parse() {
            listen_addrs.push(a);
        }
    }
    match crate::tls::listeners(&cfg) {
        Ok(ls) => {
            for (addr, settings) in ls {
                svc.add_tls_with_settings(&addr, None, settings);
                if let Ok(a) = addr.parse() {
                    listen_addrs.push(a);
                }
            }
        }
        Err(e) => {
            eprintln!("{}: server.tls: {e}", config_path.display());
            std::process::exit(1);
        }
    }
    server.add_service(svc).add_dependency(&sighup);

    // The admin API behind the same edge as the proxy (SPEC §6): strict
    // HTTP/1 heads, header_timeout, max_header_size, max_headers.
    let admin_app = GatewayApp {
        proxy: Arc::new(HttpServer::new_app(Admin::new(
            reloader.clone(),
            listen_addrs,
        ))),
        live: live.clone(),
        admin: true,
    };
    let mut admin = Service::new("tollgate admin".to_string(), admin_app);
    admin.add_listener(
        ListenerConfig::tcp(&cfg.server.admin_listen)
            .l4_buffer(L4BufferSettings::default().read(0)),
    );
    server.add_service(admin).add_dependency(&sighup);

    server.add_service(background_service(
        "tollgate config watcher",
        ConfigWatcher { reloader },
    ));
    server.add_service(background_service(
        "tollgate health checks",
        HealthChecks { live: live.clone() },
    ));
    server.add_service(background_service(
        "tollgate plugin ticks",
        PluginTicks { live: live.clone() },
    ));
    server.add_service(background_service(
        "tollgate trace export",
        crate::telemetry::TraceExporter { live },
    ));
    server.add_service(background_service(
        "tollgate exit when drained",
        ExitWhenDrained,
    ));

    if opts.demo {
        for svc in crate::demo::services(&cfg) {
            server.add_service(svc);
        }
    }
    tracing::info!(
        config = %config_path.display(),
        hash = %cfg.hash,
        listen = ?cfg.server.listen.to_vec(),
        admin = %cfg.server.admin_listen,
        "tollgate starting"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(ShutdownSignals),
    });
    std::process::exit(0)
}

/// One upgrade socket per config file, so that several gateways on one host do
/// not hand their sockets to each other.
fn upgrade_sock(config_path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let abs = std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let h = hex::encode(&Sha256::digest(abs.to_string_lossy().as_bytes())[..6]);
    format!("/tmp/tollgate-{h}.sock")
}

/// How long a taken listen address is retried before giving up (a restarting
/// service manager may start the new process while the old one still exits).
const BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Two `tollgate run` started at the same moment would both find an address
/// free, and the one whose bind comes second would retry for ever. So each
/// listen address is also claimed with an exclusive lock on a file named after
/// it (in the temporary directory), held for the life of the process: the
/// second start fails like one that finds the address taken. (`--upgrade`
/// takes sockets over and claims nothing.)
fn claim(addr: &str, deadline: std::time::Instant) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let name: String = addr
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = std::env::temp_dir().join(format!("tollgate-listen-{name}.lock"));
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
    else {
        // No lock file (a read-only temporary directory): the bind check alone.
        return Ok(());
    };
    loop {
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            // Held until the process exits.
            std::mem::forget(file);
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "cannot listen on {addr}: address already in use (another tollgate is \
                 starting or running there; to take over from it, use `tollgate run --upgrade`)"
            ));
        }
        #[allow(clippy::disallowed_methods)] // start-up, before any runtime serves requests
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Pingora retries a listen address in use for 30 s, one warning a second, and
/// then fails only the thread of that service: the process stays up without
/// the listener. Without `--upgrade`, an address that stays in use is an error
/// at once, naming the address.
fn addresses_free(addrs: &[String]) -> Result<(), String> {
    let deadline = std::time::Instant::now() + BIND_RETRY;
    for (i, addr) in addrs.iter().enumerate() {
        // Several `[[server.tls]]` blocks may share one address: claimed once.
        if addrs[..i].contains(addr) {
            continue;
        }
        claim(addr, deadline)?;
        loop {
            // Bound as Pingora binds (SO_REUSEADDR, listen), then closed again.
            match std::net::TcpListener::bind(addr.as_str()) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    if std::time::Instant::now() >= deadline {
                        return Err(format!(
                            "cannot listen on {addr}: address already in use (another process \
                             listens there; to take over from a running tollgate, use \
                             `tollgate run --upgrade`)"
                        ));
                    }
                    #[allow(clippy::disallowed_methods)]
                    // start-up, before any runtime serves requests
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                // Other errors (a bad address, no permission) are Pingora's to report.
                _ => break,
            }
        }
    }
    Ok(())
}
