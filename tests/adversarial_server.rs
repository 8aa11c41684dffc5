//! The process and its edges (issue 12, items 12, 13, 24, 28, 35, 36): card numbers
//! in the access log, the admin listener's HTTP/1 hardening, colour codes in logs,
//! `strict_sni`, graceful shutdown that ends when nothing is in flight, and a second
//! gateway on an address in use.
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// One route `/api` to `up` (which receives the path without `/api`), plus
/// `server_extra` in `[server]`.
fn config(up: SocketAddr, server_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
{server_extra}

[upstreams.up]
targets = ["{up}"]

[[routes]]
name = "all"
upstream = "up"
path = "/api"
strip_prefix = "/api"
"#
    )
}

fn access_lines(gw: &Gateway) -> Vec<serde_json::Value> {
    gw.log_json()
        .into_iter()
        .filter(|l| l["target"] == "tollgate::access")
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Item 12: card numbers with separators
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn card_numbers_with_separators_never_reach_the_access_log() {
    let up = TestUpstream::start("pan").await;
    let gw = Gateway::start(&config(up.addr(), "")).await;
    // (request path, what the access log must show, the start of the card as the log
    // would show it unmasked)
    let cases = [
        // Proxied: the log shows the normalised path.
        (
            "/api/cards/4111-1111-1111-1111",
            "/api/cards/****-****-****-1111",
            "4111-1111",
        ),
        (
            "/api/cards/5500.0055.5555.5559/charges",
            "/api/cards/****.****.****.5559/charges",
            "5500.0055",
        ),
        // `%2D` is decoded to `-` by normalisation.
        (
            "/api/cards/3782%2D822463%2D10005",
            "/api/cards/****-******-*0005",
            "3782-822463",
        ),
        // No route: 404.
        (
            "/nowhere/6011-0009-9013-9424",
            "/nowhere/****-****-****-9424",
            "6011-0009",
        ),
        // `%20` in a path is refused (400) before normalisation: logged as it came.
        (
            "/api/cards/4111%201111%201111%201111",
            "/api/cards/****%20****%20****%201111",
            "4111%201111",
        ),
    ];
    for (path, _, _) in &cases {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
        let resp = raw_request(gw.addr(), raw.as_bytes()).await;
        assert!(resp.starts_with(b"HTTP/1.1 "), "{path}: no response");
    }
    // The upstream gets the real path: only the logs are masked.
    assert!(
        up.requests()
            .iter()
            .any(|r| r.path_only() == "/cards/4111-1111-1111-1111"),
        "{:?}",
        up.requests()
    );
    wait_until_msg(WAIT, "one access line per request", || async {
        access_lines(&gw).len() >= cases.len()
    })
    .await;
    let lines = access_lines(&gw);
    let paths: Vec<&str> = lines.iter().filter_map(|l| l["path"].as_str()).collect();
    let logs = gw.logs();
    for (path, masked, leak) in &cases {
        assert!(paths.contains(masked), "{path}: {masked} not in {paths:?}");
        assert!(
            !logs.contains(leak),
            "{path}: {leak} reached the logs:\n{logs}"
        );
    }
}

/// A card number sent as a request id or a method never reaches the logs either: such a
/// request id is replaced by a fresh one (it would otherwise be in every log line and
/// error body of the request), and a method is logged masked.
#[tokio::test]
async fn card_numbers_in_request_ids_and_methods_never_reach_the_logs() {
    let up = TestUpstream::start("pan").await;
    let cfg = config(up.addr(), "plugins = [\"rid\"]") + "\n[plugins.rid]\ntype = \"request_id\"\n";
    let gw = Gateway::start(&cfg).await;
    for raw in [
        "GET /api/a HTTP/1.1\r\nHost: gw.test\r\nx-request-id: 4111111111111111\r\nConnection: close\r\n\r\n",
        "GET /nowhere HTTP/1.1\r\nHost: gw.test\r\nx-request-id: 5500-0055-5555-5559\r\nConnection: close\r\n\r\n",
        "6011000990139424 /api/b HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
    ] {
        let resp = raw_request(gw.addr(), raw.as_bytes()).await;
        assert!(resp.starts_with(b"HTTP/1.1 "), "no response to {raw:?}");
        let text = String::from_utf8_lossy(&resp);
        assert!(!text.contains("4111111111111111") && !text.contains("5500-0055"), "{text}");
    }
    // A valid id is still kept.
    let r = gw
        .client()
        .get(gw.url("/api/c"))
        .header("x-request-id", "order-2024-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "order-2024-0001");
    wait_until_msg(WAIT, "one access line per request", || async {
        access_lines(&gw).len() >= 4
    })
    .await;
    let logs = gw.logs();
    for leak in [
        "4111111111111111",
        "5500-0055-5555-5559",
        "6011000990139424",
    ] {
        assert!(!logs.contains(leak), "{leak} reached the logs:\n{logs}");
    }
}

// ---------------------------------------------------------------------------------------------
// Item 24: colour escape codes
// ---------------------------------------------------------------------------------------------

/// Text-format logs (not JSON) with lines at several levels: info (startup, access), and a
/// warning/error from a refused reload.
async fn produce_text_logs(gw: &Gateway, up: &TestUpstream) {
    let resp = gw.client().get(gw.url("/api/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = up;
    gw.write_file("gateway.toml", "[server\nbroken");
    let resp = gw.admin_post("/reload", "").await;
    assert_eq!(resp.status(), 422);
}

#[tokio::test]
async fn logs_written_to_a_file_carry_no_colour_codes() {
    let up = TestUpstream::start("plain").await;
    let gw = Gateway::builder(&config(up.addr(), ""))
        .env("TOLLGATE_LOG_FORMAT", "text")
        .start()
        .await;
    produce_text_logs(&gw, &up).await;
    gw.wait_for_log("tollgate::access", WAIT).await;
    gw.wait_for_log("ERROR", WAIT).await;
    let logs = gw.logs();
    assert!(
        !logs.contains('\u{1b}'),
        "an escape code in a log file:\n{logs:?}"
    );
}

#[tokio::test]
async fn logs_written_to_a_pipe_carry_no_colour_codes() {
    use tokio::io::AsyncReadExt;
    let up = TestUpstream::start("pipe").await;
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (unused_addr(), unused_addr());
    let config_path = dir.path().join("gateway.toml");
    let toml = config(up.addr(), "")
        .replace("{LISTEN}", &listen.to_string())
        .replace("{ADMIN}", &admin.to_string());
    std::fs::write(&config_path, toml).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("run")
        .arg("-c")
        .arg(&config_path)
        .env("TOLLGATE_LOG_FORMAT", "text")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let client = http_client();
    let url = format!("http://{listen}/api/x");
    wait_until_msg(WAIT, "the gateway to serve", || async {
        client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    // SIGINT: exits at once, writing what is buffered; then the pipe reaches EOF.
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stderr.read_to_end(&mut out))
        .await
        .expect("stderr to reach EOF")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("tollgate::access"), "{text}");
    assert!(
        !out.contains(&0x1b),
        "an escape code in piped logs:\n{text:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 13: the admin listener's edge
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_admin_listener_refuses_ambiguous_and_malformed_heads() {
    let up = TestUpstream::start("admin-edge").await;
    let gw = Gateway::start(&config(up.addr(), r#"header_timeout = "1s""#)).await;
    let smuggled = "GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "CL then TE",
            format!(
                "POST /cache/purge HTTP/1.1\r\nHost: admin\r\nContent-Length: 5\r\n\
                 Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE then CL",
            format!(
                "POST /cache/purge HTTP/1.1\r\nHost: admin\r\nTransfer-Encoding: chunked\r\n\
                 Content-Length: 40\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "two Content-Lengths",
            "POST /reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello"
                .to_string(),
        ),
        (
            "bare LF line endings",
            "GET /healthz HTTP/1.1\nHost: admin\n\n".to_string(),
        ),
        (
            "mixed line endings",
            "GET /healthz HTTP/1.1\r\nHost: admin\n\r\n".to_string(),
        ),
        (
            "obs-fold",
            "GET /healthz HTTP/1.1\r\nHost: admin\r\nX-A: a\r\n b\r\n\r\n".to_string(),
        ),
        (
            "a space before the colon",
            "GET /healthz HTTP/1.1\r\nHost : admin\r\n\r\n".to_string(),
        ),
    ];
    for (what, bytes) in &cases {
        let mut conn = RawConn::connect(gw.admin()).await;
        let _ = conn.send(bytes).await;
        let resp = conn.read_response().await;
        assert_problem(&resp, 400, what);
        // Nothing smuggled behind it is answered: the connection is closed.
        let rest = conn.read_to_end().await;
        assert!(
            rest.is_empty(),
            "{what}: more after the refusal: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    // The same size limits as the proxy listeners: 431.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let mut conn = RawConn::connect(gw.admin()).await;
    let _ = conn.send(&big).await;
    assert_problem(&conn.read_response().await, 431, "a 70 KiB head");

    // Well-formed requests are served as before, on a keep-alive connection, chunked
    // bodies included.
    let mut conn = RawConn::connect(gw.admin()).await;
    for _ in 0..2 {
        conn.send("GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
            .await
            .unwrap();
        let resp = conn.read_response().await;
        assert_eq!(resp.status, 200, "{}", resp.body_str());
    }
    conn.send(
        "POST /cache/purge HTTP/1.1\r\nHost: admin\r\nTransfer-Encoding: chunked\r\n\r\n\
         2\r\n{}\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let resp = conn.read_response().await;
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    assert!(
        resp.body_str().contains("\"purged\": 0"),
        "{}",
        resp.body_str()
    );
    // A standard method in the wrong case: 400, as on the proxy listeners.
    for head in [
        "get /healthz HTTP/1.1\r\nHost: admin\r\n\r\n",
        "Post /reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n",
    ] {
        let mut conn = RawConn::connect(gw.admin()).await;
        conn.send(head).await.unwrap();
        assert_problem(&conn.read_response().await, 400, head);
    }
    // Refusals on the admin port are not proxy traffic.
    let metrics = gw.metrics().await;
    assert!(
        !metrics.contains("tollgate_requests_total{route=\"\""),
        "admin refusals counted as proxy requests:\n{metrics}"
    );
}

#[tokio::test]
async fn the_admin_listener_has_a_header_deadline() {
    let up = TestUpstream::start("admin-slow").await;
    let gw = Gateway::start(&config(up.addr(), r#"header_timeout = "1s""#)).await;
    // A head that never completes: 408 once header_timeout has passed, then the close.
    let mut conn = RawConn::connect(gw.admin()).await;
    conn.send("GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    let resp = conn.read_response().await;
    assert_problem(&resp, 408, "an incomplete head");
    assert!(conn.read_to_end().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Item 28: strict_sni
// ---------------------------------------------------------------------------------------------

/// Accepts any server certificate, and remembers the one presented.
#[derive(Debug, Default)]
struct Remember(std::sync::Mutex<Option<Vec<u8>>>);

impl rustls::client::danger::ServerCertVerifier for Remember {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS handshake with the gateway's TLS listener, sending `sni` as the server name
/// (`None`: no SNI at all, as a client connecting to an IP address does). `Ok` holds the
/// certificate the gateway presented.
async fn handshake(gw: &Gateway, sni: Option<&str>) -> Result<Vec<u8>, String> {
    let verifier = Arc::new(Remember::default());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(verifier.clone())
    .with_no_client_auth();
    let name = match sni {
        Some(n) => rustls::pki_types::ServerName::try_from(n.to_string()).unwrap(),
        // rustls sends no SNI for an IP address.
        None => rustls::pki_types::ServerName::IpAddress(gw.tls_addr().ip().into()),
    };
    let tcp = tokio::net::TcpStream::connect(gw.tls_addr()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(WAIT, connector.connect(name, tcp)).await {
        Ok(Ok(_)) => Ok(verifier.0.lock().unwrap().clone().expect("a certificate")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("handshake timed out".into()),
    }
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("certificate PEM")
        .to_vec()
}

fn two_cert_template(up: &TestUpstream, server_extra: &str) -> String {
    format!(
        r#"{}
[[server.tls]]
listen = "{{TLS_LISTEN}}"
cert = "a.pem"
key = "a.key"

[[server.tls]]
listen = "{{TLS_LISTEN}}"
cert = "b.pem"
key = "b.key"
"#,
        config(up.addr(), server_extra)
    )
}

async fn two_cert_gateway(up: &TestUpstream, server_extra: &str) -> (Gateway, TestCerts, String) {
    let certs = TestCerts::generate(&["a.test"]);
    let (b_cert, b_key) = certs.leaf(&["b.test"]);
    let gw = Gateway::builder(&two_cert_template(up, server_extra))
        .file("a.pem", &certs.cert_pem)
        .file("a.key", &certs.key_pem)
        .file("b.pem", &b_cert)
        .file("b.key", &b_key)
        .start()
        .await;
    (gw, certs, b_cert)
}

#[tokio::test]
async fn unknown_or_absent_sni_gets_the_first_certificate_by_default() {
    let up = TestUpstream::start("sni-default").await;
    let (gw, certs, b_cert) = two_cert_gateway(&up, "").await;
    let a = pem_to_der(&certs.cert_pem);
    assert_eq!(
        handshake(&gw, Some("b.test")).await,
        Ok(pem_to_der(&b_cert))
    );
    assert_eq!(handshake(&gw, Some("unknown.test")).await, Ok(a.clone()));
    assert_eq!(handshake(&gw, None).await, Ok(a));
}

#[tokio::test]
async fn strict_sni_refuses_unknown_and_absent_names() {
    let up = TestUpstream::start("sni-strict").await;
    let (gw, certs, b_cert) = two_cert_gateway(&up, "strict_sni = true").await;
    assert_eq!(
        handshake(&gw, Some("a.test")).await,
        Ok(pem_to_der(&certs.cert_pem))
    );
    assert_eq!(
        handshake(&gw, Some("b.test")).await,
        Ok(pem_to_der(&b_cert))
    );
    for sni in [Some("unknown.test"), Some("x.a.test"), None] {
        let r = handshake(&gw, sni).await;
        assert!(r.is_err(), "{sni:?}: the handshake succeeded");
    }
    // A real client on a known name is served.
    let client = gw.https_client(&certs.ca_pem, &["a.test", "unknown.test"]);
    let resp = client
        .get(gw.https_url("a.test", "/api/strict"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let err = client
        .get(gw.https_url("unknown.test", "/api/strict"))
        .send()
        .await
        .expect_err("unknown.test must be refused");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn strict_sni_follows_a_reload() {
    let up = TestUpstream::start("sni-reload").await;
    let (gw, _, _) = two_cert_gateway(&up, "").await;
    assert!(handshake(&gw, Some("unknown.test")).await.is_ok());
    for (extra, refused) in [("strict_sni = true", true), ("", false)] {
        gw.write_config(&two_cert_template(&up, extra));
        let resp = gw.admin_post("/reload", "").await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        for sni in [Some("unknown.test"), None] {
            let r = handshake(&gw, sni).await;
            assert_eq!(
                r.is_err(),
                refused,
                "{extra:?}, {sni:?}: {:?}",
                r.map(|_| ())
            );
        }
        assert!(handshake(&gw, Some("a.test")).await.is_ok(), "{extra:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Item 35: graceful shutdown ends when nothing is in flight
// ---------------------------------------------------------------------------------------------

/// A grace period far longer than any wait in these tests.
const LONG_GRACE: &str = r#"grace_period = "30s""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_nothing_in_flight_exits_without_waiting_the_grace_period() {
    let up = TestUpstream::start("idle").await;
    let mut gw = Gateway::start(&config(up.addr(), LONG_GRACE)).await;
    // An idle keep-alive connection does not hold the shutdown up (as in nginx).
    let mut conn = RawConn::connect(gw.addr()).await;
    conn.send("GET /api/first HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(conn.read_response().await.status, 200);

    gw.signal(SIGTERM);
    let status = gw.wait_exit(WAIT).await.unwrap_or_else(|| {
        panic!(
            "still running {WAIT:?} after SIGTERM with nothing in flight (grace_period 30s); logs:\n{}",
            gw.logs()
        )
    });
    assert!(status.success(), "{status}; logs:\n{}", gw.logs());
    // Every access line was written before the exit.
    assert!(gw.logs().contains("/api/first"), "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish_then_exits() {
    let up = TestUpstream::start("busy").await;
    let mut gw = Gateway::start(&config(up.addr(), LONG_GRACE)).await;
    let addr = gw.addr();

    // A response in flight: the upstream holds its second event until release().
    let mut resp = gw.client().get(gw.url("/api/sse")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    // And an idle keep-alive connection.
    let mut kept = RawConn::connect(addr).await;
    kept.send("GET /api/kept HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(kept.read_response().await.status, 200);

    gw.signal(SIGTERM);
    wait_until_msg(WAIT, "the listener to close after SIGTERM", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    // Still draining: a request on the open keep-alive connection is answered, with
    // `Connection: close`.
    kept.send("GET /api/second HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .unwrap();
    let second = kept.read_response().await;
    assert_eq!(second.status, 200);
    assert_eq!(
        second.header("connection").map(str::to_ascii_lowercase),
        Some("close".into())
    );
    assert!(gw.try_wait().is_none(), "exited with a response in flight");

    up.release();
    let mut rest = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .unwrap_or_else(|e| panic!("the response in flight was cut: {e:?}\n{}", gw.logs()))
    {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"data: second\n\n");
    let status = gw.wait_exit(WAIT).await.unwrap_or_else(|| {
        panic!(
            "still running {WAIT:?} after the last request ended (grace_period 30s); logs:\n{}",
            gw.logs()
        )
    });
    assert!(status.success(), "{status}; logs:\n{}", gw.logs());
}

// ---------------------------------------------------------------------------------------------
// Item 36: a second gateway on an address in use
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_second_gateway_on_a_taken_address_exits_with_a_clear_message() {
    let up = TestUpstream::start("taken").await;
    let gw = Gateway::start(&config(up.addr(), "")).await;
    // The same config (same addresses) in another directory, so that the second
    // process shares nothing else with the first (upgrade socket, pid file).
    let dir = tempfile::tempdir().unwrap();
    let second_config = dir.path().join("gateway.toml");
    std::fs::copy(gw.config_path(), &second_config).unwrap();
    let mut second = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("run")
        .arg("-c")
        .arg(&second_config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), second.wait())
        .await
        .expect("the second gateway is still running")
        .unwrap();
    let out = second.wait_with_output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!status.success(), "{status}: {text}");
    let listen = gw.addr().to_string();
    assert!(
        text.contains(&listen) && text.contains("already in use"),
        "the message names the address and the reason: {text}"
    );
    // The first gateway is untouched.
    let resp = gw.client().get(gw.url("/api/still")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// Two gateways started at the same moment on the same addresses: exactly one serves,
/// the other exits non-zero with the message (neither retries for ever).
#[tokio::test]
async fn two_gateways_started_together_on_one_address_leave_one_running() {
    let up = TestUpstream::start("race").await;
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(up.addr(), "")
        .replace("{LISTEN}", &listen)
        .replace("{ADMIN}", &admin);
    let spawn = |n: usize| {
        let path = dir.path().join(format!("gw{n}.toml"));
        std::fs::write(&path, &cfg).unwrap();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("run")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(0), spawn(1));
    // One of them exits (the loser), well before any test timeout.
    let (loser, mut winner) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            s = a.wait() => (s.unwrap(), b),
            s = b.wait() => (s.unwrap(), a),
        }
    })
    .await
    .expect("neither start gave up: one retries binding for ever");
    assert!(!loser.success(), "the second start must fail: {loser}");
    // The winner serves.
    let client = http_client();
    wait_until(WAIT, || {
        let client = client.clone();
        let url = format!("http://{listen}/api/ok");
        async move {
            client
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    assert!(
        winner.try_wait().unwrap().is_none(),
        "the winner keeps running"
    );
}
