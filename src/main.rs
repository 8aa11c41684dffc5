use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// mimalloc: glibc's malloc and free were 11% of tollgate's CPU per request
/// under `benches/load/run` (perf); with mimalloc, passthrough went from
/// 29.0 to 25.8 µs per request (the floor, which uses it too: 22.6 to 18.9).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// tollgate: an API gateway on Pingora.
#[derive(Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the config.
    Run {
        #[arg(short = 'c', long = "config", default_value = "gateway.toml")]
        config: PathBuf,
        /// Take the listening sockets over from a running tollgate (graceful upgrade).
        #[arg(long)]
        upgrade: bool,
    },
    /// Parse, validate and compile the config; print `ok` or every error.
    Check {
        #[arg(short = 'c', long = "config", default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Serve the config and the demo upstreams it points at.
    Demo {
        #[arg(short = 'c', long = "config", default_value = "gateway.toml")]
        config: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { config } => match tollgate::runtime::load(&config, Default::default()) {
            Ok(_) => {
                println!("ok");
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        Cmd::Run { config, upgrade } => {
            tollgate::logging::init();
            tollgate::server::run(
                &config,
                tollgate::server::RunOptions {
                    upgrade,
                    demo: false,
                },
            )
        }
        Cmd::Demo { config } => {
            tollgate::logging::init();
            if let Ok(cfg) = tollgate::config::load_file(&config) {
                let listen = cfg
                    .server
                    .listen
                    .to_vec()
                    .first()
                    .cloned()
                    .unwrap_or_default();
                let base = format!("http://{}", listen.replace("0.0.0.0", "127.0.0.1"));
                println!(
                    "tollgate demo: gateway on {base}, admin on http://{}",
                    cfg.server.admin_listen
                );
                println!("try:");
                println!("  curl -s {base}/v1/accounts/acc_42");
                println!("  curl -s {base}/v2/accounts/acc_42 -i     # the current API version");
                println!("  curl -s {base}/v1/accounts/acc_42 -i     # deprecated: see the Deprecation and Sunset headers");
                println!("  curl -si -X POST {base}/v1/payments -H 'Idempotency-Key: order-1' -d '{{\"amount\":\"10.00\",\"currency\":\"EUR\"}}'   # twice: replayed");
                println!("  curl -s {base}/v9/accounts/acc_42        # unknown version: a problem+json 404");
                println!(
                    "  curl -s http://{}/metrics | grep tollgate_",
                    cfg.server.admin_listen
                );
            }
            tollgate::server::run(
                &config,
                tollgate::server::RunOptions {
                    upgrade: false,
                    demo: true,
                },
            )
        }
    }
}
