//! `SIGHUP` reloads the config (SPEC §5). Pingora handles `SIGTERM` and
//! `SIGQUIT` itself (graceful shutdown and upgrade); a graceful shutdown ends
//! as soon as no request is in flight ([`ExitWhenDrained`]). Both are
//! background services of the server (`server.rs`). `SIGINT` exits at once
//! ([`ShutdownSignals`]).

use crate::reload::Reloader;
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Reloads the config on each `SIGHUP` ([`Reloader::sync`]), until the server
/// shuts down. It is ready once it listens: the listeners wait for it
/// (`server.rs`), so that a `SIGHUP` sent to a gateway that answers requests
/// never ends the process (the signal's default action).
pub struct SighupReload {
    pub reloader: Arc<Reloader>,
}

#[async_trait]
impl BackgroundService for SighupReload {
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        ready.notify_ready();
        let Ok(mut hup) = hup else {
            tracing::error!("cannot listen for SIGHUP");
            return;
        };
        loop {
            tokio::select! {
                received = hup.recv() => if received.is_none() { return },
                _ = shutdown.changed() => return,
            }
            tracing::info!("SIGHUP: reloading the config");
            let reloader = self.reloader.clone();
            let _ = tokio::task::spawn_blocking(move || reloader.sync()).await;
        }
    }
}

// ---------------------------------------------------------------------------
// Shutdown signals

/// Pingora's signals, but `SIGINT` ends the process here and now (the access
/// lines still buffered are written by the exit handler, `logging`).
///
/// Pingora's own fast shutdown stops each runtime without first telling the
/// listeners to stop accepting. With a no-steal runtime a listener's accept
/// loop can outlive the thread whose reactor owns its socket: `accept()` then
/// fails at once, forever, and the loop logs the failure without yielding, so
/// its thread never takes its own shutdown and the process never exits (seen
/// in about one `SIGINT` in six: hundreds of MB of `Accept() failed` lines,
/// or, on a pipe, a writer blocked once the pipe is full).
pub struct ShutdownSignals;

#[async_trait]
impl ShutdownSignalWatch for ShutdownSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot listen for SIGQUIT, SIGTERM and SIGINT");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => {
                tracing::info!("SIGINT: exiting at once");
                std::process::exit(0)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Graceful shutdown: exit once no request is in flight

/// Requests being served by the proxy listeners (HTTP/1 requests and HTTP/2
/// streams), from a complete request head to the end of the response.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Requests started by the proxy listeners since the process began: a drain that
/// sees it unchanged for [`QUIET`] knows that no client is using its open
/// connections.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// Open HTTP/1 connections on the gateway's listeners (idle keep-alive ones too).
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Held by an HTTP/1 connection for its lifetime (see [`ExitWhenDrained`]).
pub struct OpenConnection;

impl OpenConnection {
    #[must_use = "the connection counts only while it is held"]
    pub fn enter() -> OpenConnection {
        OPEN.fetch_add(1, Ordering::AcqRel);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds a graceful shutdown up while alive (up to the grace period). Every
/// proxied request holds one from the moment Pingora has read its head (the
/// few answers Pingora writes itself before that, a bare 400 or 405, hold
/// none); work that outlives its request and must not be cut by the exit (a
/// detached task storing a response) can hold one too.
pub struct InFlight;

impl InFlight {
    #[must_use = "the shutdown waits only while it is held"]
    pub fn enter() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        InFlight
    }

    /// A proxied request starts (held by its context, see
    /// [`ExitWhenDrained`]). Counted in the request's context rather than by
    /// wrapping the proxy app: a wrapper's own boxed future cost a copy of
    /// Pingora's request future per request (callgrind, `benches/load`).
    #[must_use = "the shutdown waits only while it is held"]
    pub fn request() -> InFlight {
        STARTED.fetch_add(1, Ordering::Relaxed);
        InFlight::enter()
    }
}

impl Drop for InFlight {
    // Also when the request's task is dropped mid-way.
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How often a draining gateway looks at its requests in flight.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// With no request in flight, open keep-alive connections that carried no new
/// request for this long are idle, and the exit closes them.
const QUIET: Duration = Duration::from_secs(1);

/// After `SIGTERM` (or `SIGQUIT` once the sockets are handed over), Pingora
/// stops accepting and then waits the whole grace period before it exits,
/// whether or not anything is still running (pingora-core
/// `Server::run`: `thread::sleep(grace_period_seconds)`). Like nginx, tollgate
/// exits as soon as no request is in flight; a request still running keeps it
/// up until it ends or the grace period does (Pingora's own exit).
///
/// Keep-alive connections: while draining, a request on an open connection is
/// answered with `Connection: close`, so busy clients move to the new process
/// (an upgrade) or reconnect. The exit waits until every connection has closed
/// that way, or until no new request has started for [`QUIET`]: closing a
/// connection a client is about to reuse would fail that client's request,
/// while a connection idle that long is closed by the exit (as nginx does).
///
/// A background service that waits for the graceful shutdown (`SIGINT`
/// exits at once, without one: [`ShutdownSignals`]).
pub struct ExitWhenDrained;

#[async_trait]
impl BackgroundService for ExitWhenDrained {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.wait_for(|&down| down).await.is_err() {
            return;
        }
        let mut started = STARTED.load(Ordering::Acquire);
        let mut quiet_since = std::time::Instant::now();
        loop {
            let now_started = STARTED.load(Ordering::Acquire);
            if now_started != started {
                started = now_started;
                quiet_since = std::time::Instant::now();
            }
            if IN_FLIGHT.load(Ordering::Acquire) == 0
                && (OPEN.load(Ordering::Acquire) == 0 || quiet_since.elapsed() >= QUIET)
            {
                break;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
        tracing::info!("graceful shutdown: no request in flight, exiting");
        // The last requests' spans, if the collector takes them at once.
        crate::telemetry::flush(std::time::Duration::from_secs(2)).await;
        // The access log is written by the exit handler (`logging`).
        std::process::exit(0);
    }
}
