//! Graceful upgrade and shutdown (SPEC §5, issue 5), with real processes: a second tollgate
//! takes the listening sockets over with `--upgrade` while clients keep calling, and
//! `SIGTERM` drains requests in flight.
//!
//! Pingora's protocol (pingora-core 0.9 `server/mod.rs`): the new process, started with
//! `--upgrade`, binds the upgrade socket and waits (about 5 s) for the listening sockets;
//! `SIGQUIT` to the old process makes it send them, keep accepting for 5 s more
//! (`CLOSE_TIMEOUT`), then stop accepting, wait `grace_period_seconds` for requests in
//! flight, and exit. `SIGTERM` stops accepting at once (the listeners are closed), waits the
//! grace period, and exits. tollgate ends that wait as soon as no request is in flight, as
//! nginx does (issue 12 #35; `tests/adversarial_server.rs`). While requests are still in
//! flight, a request arriving on a connection that is already open is still answered (with
//! `Connection: close`): closing an idle keep-alive connection under a client that is
//! sending on it fails that client's request.
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(15);

fn config(up: SocketAddr, grace: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
threads = 2
grace_period = "{grace}"

[upstreams.backend]
targets = ["{up}"]
connect_timeout = "1s"
read_timeout = "10s"

[[routes]]
name = "all"
upstream = "backend"
path = "/"
"#
    )
}

/// The upgrade socket of a config file: `/tmp/tollgate-<first 6 bytes of the SHA-256 of the
/// canonical config path, hex>.sock` (src/server.rs `upgrade_sock`).
fn upgrade_sock(config: &Path) -> PathBuf {
    let abs = std::fs::canonicalize(config).expect("canonical config path");
    let h = hex::encode(&Sha256::digest(abs.to_string_lossy().as_bytes())[..6]);
    PathBuf::from(format!("/tmp/tollgate-{h}.sock"))
}

/// A process started by the test; killed on drop.
struct Proc {
    child: Child,
    logs: tempfile::TempDir,
}

impl Proc {
    /// `tollgate run -c <config> --upgrade`, in the config's directory, logs to a temp dir.
    fn upgrade(config: &Path, cwd: &Path) -> Proc {
        let logs = tempfile::Builder::new()
            .prefix("tollgate-upgrade-")
            .tempdir()
            .expect("tempdir");
        let out = std::fs::File::create(logs.path().join("stdout.log")).unwrap();
        let err = std::fs::File::create(logs.path().join("stderr.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("run")
            .arg("-c")
            .arg(config)
            .arg("--upgrade")
            .current_dir(cwd)
            .env("TOLLGATE_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn tollgate --upgrade");
        Proc { child, logs }
    }

    fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.logs.path().join(f)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("stderr.log"))
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    refused: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        if what.contains("refused") {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut e = self.errors.lock().unwrap();
        if e.len() < 20 {
            e.push(what);
        }
    }
}

/// One request on a new connection (`Connection: close`): the status, or what went wrong.
async fn one_shot(addr: SocketAddr, n: usize) -> Result<u16, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e} ({:?})", e.kind()))?;
    let req =
        format!("GET /fresh?n={n} HTTP/1.1\r\nHost: upgrade.test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "no complete response within 20 s".to_string())?
        .map_err(|e| format!("read: {e} after {:?}", String::from_utf8_lossy(&buf)))?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not a response: {text:?}"))?;
    // The echo body is JSON and ends the response (Connection: close).
    if status == 200 && !text.trim_end().ends_with('}') {
        return Err(format!("truncated response: {text:?}"));
    }
    Ok(status)
}

/// Loops until `stop` (or the deadline, or `max` requests): new connection per request when
/// `client` is `None`, else the keep-alive `client`.
async fn client_loop(
    addr: SocketAddr,
    client: Option<reqwest::Client>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) {
    const MAX: usize = 100_000;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && n < MAX {
        n += 1;
        let res = match &client {
            None => one_shot(addr, n).await,
            Some(c) => match c.get(format!("http://{addr}/kept?n={n}")).send().await {
                Err(e) => Err(format!("keep-alive request: {e:?}")),
                Ok(r) => {
                    let status = r.status().as_u16();
                    r.bytes()
                        .await
                        .map(|_| status)
                        .map_err(|e| format!("keep-alive body: {e:?}"))
                }
            },
        };
        match res {
            Ok(200) => {
                tally.ok.fetch_add(1, Ordering::SeqCst);
            }
            Ok(s) => tally.fail(format!("status {s}")),
            Err(e) => tally.fail(e),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_upgrade_hands_the_sockets_over_without_refusing_a_connection() {
    let up = TestUpstream::start("up").await;
    let mut a = Gateway::start(&config(up.addr(), "1s")).await;
    let addr = a.addr();
    let sock = upgrade_sock(a.config_path());

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut loops = Vec::new();
    for client in [None, None, Some(http_client()), Some(http_client())] {
        loops.push(tokio::spawn(client_loop(
            addr,
            client,
            tally.clone(),
            stop.clone(),
            deadline,
        )));
    }
    wait_until_msg(WAIT, "the client loops to run against A", || async {
        tally.ok.load(Ordering::SeqCst) >= 50
    })
    .await;

    // B: same binary, same config file (same ports), --upgrade. It waits on the upgrade
    // socket; then A is told to hand over.
    let mut b = Proc::upgrade(a.config_path(), a.dir());
    wait_until_msg(WAIT, "B to listen on the upgrade socket", || async {
        sock.exists()
    })
    .await;
    a.signal(SIGQUIT);
    let quit_at = Instant::now();

    // A keeps accepting for Pingora's 5 s close timeout, then drains for grace_period (1 s)
    // and exits by itself.
    let status = a.wait_exit(Duration::from_secs(5 + 1 + 10)).await;
    let status = status.unwrap_or_else(|| {
        panic!(
            "A did not exit within close timeout + grace period + margin\n--- A ---\n{}\n--- B ---\n{}",
            a.logs(),
            b.logs()
        )
    });
    assert!(
        status.success(),
        "A exited with {status}; logs:\n{}",
        a.logs()
    );
    eprintln!("A exited {:?} after SIGQUIT", quit_at.elapsed());
    assert!(b.alive(), "B died; logs:\n{}", b.logs());

    // B alone keeps serving on the same ports.
    let after = tally.ok.load(Ordering::SeqCst);
    wait_until_msg(WAIT, "the client loops to be served by B", || async {
        tally.ok.load(Ordering::SeqCst) >= after + 200
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.await.expect("client loop");
    }

    let ok = tally.ok.load(Ordering::SeqCst);
    let failed = tally.failed.load(Ordering::SeqCst);
    let refused = tally.refused.load(Ordering::SeqCst);
    let errors = tally.errors.lock().unwrap().clone();
    eprintln!("upgrade: {ok} ok, {failed} failed ({refused} refused)");
    assert_eq!(refused, 0, "refused connections: {errors:#?}");
    assert_eq!(
        failed,
        0,
        "failed requests: {errors:#?}\n--- A ---\n{}\n--- B ---\n{}",
        a.logs(),
        b.logs()
    );

    assert!(b.alive(), "B died; logs:\n{}", b.logs());
    let readyz = http_client()
        .get(a.admin_url("/readyz"))
        .send()
        .await
        .expect("B's admin listener (taken over from A)");
    assert_eq!(readyz.status(), 200);
    let hits = up.hits();
    let r = http_client()
        .get(format!("http://{addr}/after"))
        .send()
        .await
        .expect("B serves");
    assert_eq!(r.status(), 200);
    assert_eq!(up.hits(), hits + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_request_in_flight_and_accepts_no_new_connection() {
    const GRACE: u64 = 3;
    let up = TestUpstream::start("drain").await;
    let mut gw = Gateway::start(&config(up.addr(), &format!("{GRACE}s"))).await;
    let addr = gw.addr();

    // A slow request in flight.
    let client = gw.client();
    let url = gw.url("/slow?ms=1500");
    let in_flight = tokio::spawn(async move {
        let resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| format!("{e:?}"))?;
        Ok::<_, String>((status, body))
    });
    wait_until_msg(WAIT, "the slow request to reach the upstream", || async {
        up.requests().iter().any(|r| r.path_only() == "/slow")
    })
    .await;

    gw.signal(SIGTERM);
    let term_at = Instant::now();

    // Pingora closes the listeners at once: new connections are refused, not queued.
    wait_until_msg(
        WAIT,
        "new connections to be refused after SIGTERM",
        || async {
            matches!(
                tokio::net::TcpStream::connect(addr).await,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
            )
        },
    )
    .await;

    let (status, body) = in_flight
        .await
        .expect("slow task")
        .unwrap_or_else(|e| panic!("the request in flight failed: {e}\nlogs:\n{}", gw.logs()));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("/slow?ms=1500"), "{body}");

    let exited = gw.wait_exit(Duration::from_secs(GRACE + 10)).await;
    let exited = exited.unwrap_or_else(|| {
        panic!(
            "the gateway did not exit within the grace period + margin; logs:\n{}",
            gw.logs()
        )
    });
    assert!(
        exited.success(),
        "exit status {exited}; logs:\n{}",
        gw.logs()
    );
    eprintln!("exited {:?} after SIGTERM", term_at.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_a_request_on_an_open_keep_alive_connection_with_connection_close() {
    const GRACE: u64 = 3;
    let up = TestUpstream::start("kept").await;
    let mut gw = Gateway::start(&config(up.addr(), &format!("{GRACE}s"))).await;
    let addr = gw.addr();

    // A response in flight keeps the gateway draining (the upstream holds `/sse` until
    // `release()`); with nothing in flight it would exit at once.
    let mut streaming = gw.client().get(gw.url("/sse")).send().await.unwrap();
    assert_eq!(streaming.status(), 200);
    assert!(streaming.chunk().await.unwrap().is_some());

    // A keep-alive connection, idle between two requests when SIGTERM arrives.
    let mut conn = RawConn::connect(addr).await;
    conn.send("GET /first HTTP/1.1\r\nHost: drain.test\r\n\r\n")
        .await
        .unwrap();
    let first = conn.read_response().await;
    assert_eq!(first.status, 200);
    assert_ne!(first.header("connection"), Some("close"));

    gw.signal(SIGTERM);
    wait_until_msg(WAIT, "the listener to close after SIGTERM", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;

    // The client did not know yet: its next request on the open connection is still
    // answered, with `Connection: close`, so that it reconnects elsewhere (a connection
    // closed under a request it is sending makes that request fail; see HAProxy's
    // `idle-close-on-response` for the same race).
    conn.send("GET /second HTTP/1.1\r\nHost: drain.test\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("the open connection was closed under the client: {e}"));
    let second = conn.try_read_response_head().await.unwrap_or_else(|e| {
        panic!("no answer on the open keep-alive connection after SIGTERM: {e}")
    });
    assert_eq!(second.0, 200, "{:?}", second.1);
    assert_eq!(
        header(&second.1, "connection").map(str::to_ascii_lowercase),
        Some("close".to_string()),
        "{:?}",
        second.1
    );
    assert!(
        up.requests().iter().any(|r| r.path_only() == "/second"),
        "the request was proxied"
    );

    up.release();
    while streaming.chunk().await.unwrap().is_some() {}
    let exited = gw.wait_exit(Duration::from_secs(GRACE + 10)).await;
    assert!(
        exited.is_some(),
        "the gateway did not exit; logs:\n{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_applies_a_listen_change_that_a_reload_refuses() {
    let up = TestUpstream::start("relisten").await;
    let template = config(up.addr(), "1s");
    let mut a = Gateway::start(&template).await;
    let first = a.addr();
    let second = unused_addr();

    // A second listener: a reload cannot open it ...
    let changed = template.replace(
        "listen = \"{LISTEN}\"",
        &format!("listen = [\"{{LISTEN}}\", \"{second}\"]"),
    );
    assert_ne!(changed, template);
    a.write_config(&changed);
    let resp = a.admin_post("/reload", "").await;
    assert_eq!(resp.status(), 422);
    let text = resp.text().await.unwrap();
    assert!(text.contains("listen"), "{text}");

    // ... an upgrade does: B reads the edited file and takes A's sockets over.
    let mut b = Proc::upgrade(a.config_path(), a.dir());
    let sock = upgrade_sock(a.config_path());
    wait_until_msg(WAIT, "B to listen on the upgrade socket", || async {
        sock.exists()
    })
    .await;
    a.signal(SIGQUIT);
    let exited = a.wait_exit(Duration::from_secs(5 + 1 + 10)).await;
    assert!(exited.is_some(), "A did not exit; logs:\n{}", a.logs());
    assert!(b.alive(), "B died; logs:\n{}", b.logs());

    let client = http_client();
    for addr in [first, second] {
        let r = client
            .get(format!("http://{addr}/relisten"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{addr}: {e}\nB logs:\n{}", b.logs()));
        assert_eq!(r.status(), 200, "{addr}");
    }
    let st: serde_json::Value = a.admin_get("/config/status").await.json().await.unwrap();
    let want = hex::encode(Sha256::digest(std::fs::read(a.config_path()).unwrap()));
    assert_eq!(st["hash"], want.as_str(), "B runs the edited config: {st}");
}
