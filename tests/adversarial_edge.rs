//! Adversarial probes of the gateway's edge (issue 12: items 3, 6, 7, 8, 14, 15,
//! 16, 18, 19): who the client is behind trusted proxies, which host a request
//! names (Host, `:authority`, absolute-form), the forwarding headers, methods
//! in the wrong case, `;` and overlong escapes in paths, and `h2c` upgrades.
//! Raw sockets (and a raw HTTP/2 client) where an HTTP client would normalise
//! the attack away.
// .clippy.toml bans these for the gateway; a test harness may block and use std locks.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use proptest::prelude::*;

/// Routes: `admin` for host `admin.example.com` only (upstream `admin`), and
/// `ip_admin` for the IPv4 literal host `127.0.0.9` (upstream `admin`); `/deny`
/// with an `ip_filter` denying 6.6.6.0/24; `/allow` allowing only the load
/// balancer's subnet (loopback) and 203.0.113.0/24; `/cached` with a `cache`;
/// everything else to upstream `public`.
fn config(admin: &TestUpstream, public: &TestUpstream, server_extra: &str, tail: &str) -> String {
    format!(
        r#"
[server]
listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
threads = 1
{server_extra}

[plugins.deny_six]
type = "ip_filter"
deny = ["6.6.6.0/24"]

[plugins.lb_allow]
type = "ip_filter"
allow = ["127.0.0.0/8", "203.0.113.0/24"]

[plugins.c]
type = "cache"
ttl = "60s"

[upstreams.admin]
targets = ["{admin}"]
connect_timeout = "1s"
read_timeout = "5s"

[upstreams.public]
targets = ["{public}"]
connect_timeout = "1s"
read_timeout = "5s"

[[routes]]
name = "admin"
upstream = "admin"
hosts = ["admin.example.com"]
path = "/"

[[routes]]
name = "ip_admin"
upstream = "admin"
hosts = ["127.0.0.9"]
path = "/"

[[routes]]
name = "deny"
upstream = "public"
path = "/deny"
plugins = ["deny_six"]

[[routes]]
name = "allow"
upstream = "public"
path = "/allow"
plugins = ["lb_allow"]

[[routes]]
name = "cached"
upstream = "public"
path = "/cached"
plugins = ["c"]

[[routes]]
name = "public"
upstream = "public"
path = "/"
{tail}
"#,
        admin = admin.addr(),
        public = public.addr(),
    )
}

const TRUSTED: &str = r#"trusted_proxies = ["127.0.0.0/8", "10.0.0.0/8"]"#;

async fn setup(server_extra: &str) -> (TestUpstream, TestUpstream, Gateway) {
    let admin = TestUpstream::start("admin").await;
    let public = TestUpstream::start("public").await;
    let gw = Gateway::start(&config(&admin, &public, server_extra, "")).await;
    (admin, public, gw)
}

/// Sends `head` (bytes, sent as they are) on a fresh connection and reads one response.
async fn send(addr: SocketAddr, head: &[u8]) -> RawResponse {
    let mut conn = RawConn::connect(addr).await;
    conn.send(head).await.unwrap();
    conn.read_response().await
}

/// `GET <path>` with the given header lines (each without CRLF, as bytes).
async fn get(addr: SocketAddr, path: &str, lines: &[&[u8]]) -> RawResponse {
    let mut head = format!("GET {path} HTTP/1.1\r\n").into_bytes();
    for l in lines {
        head.extend_from_slice(l);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    send(addr, &head).await
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Item 3: X-Forwarded-For is read as bytes; a client entry that is not an IP is a 400
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn xff_garbage_never_makes_the_trusted_proxy_the_client() {
    let (_admin, public, gw) = setup(TRUSTED).await;
    let addr = gw.addr();

    // The client's entry is an address: ip_filter judges it, whatever precedes it.
    for xff in [
        &b"X-Forwarded-For: \xff, 6.6.6.6"[..],
        b"X-Forwarded-For: \xff\xfe\x80 junk \"x\", 6.6.6.6",
        b"X-Forwarded-For: 6.6.6.6:4711",
        b"X-Forwarded-For: 6.6.6.6 ,, ",
        b"X-Forwarded-For: [::ffff:6.6.6.6]:443",
        b"X-Forwarded-For: 6.6.6.6, 10.0.0.7, 127.0.0.9",
        b"X-Forwarded-For: \xff\r\nX-Forwarded-For: 6.6.6.6",
    ] {
        let r = get(addr, "/deny", &[b"Host: api.test", xff]).await;
        assert_problem(&r, 403, &lossy(xff));
    }
    // An allow-list that holds the load balancer's own subnet admits nobody by mistake.
    for xff in [
        &b"X-Forwarded-For: \xff, 6.6.6.6"[..],
        b"X-Forwarded-For: 127.0.0.1\xff, 6.6.6.6",
        b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 127.0.0.5",
    ] {
        let r = get(addr, "/allow", &[b"Host: api.test", xff]).await;
        assert_problem(&r, 403, &lossy(xff));
    }
    let hits = public.hits();

    // The client's entry is not an IP address: 400, never the proxy's address.
    for xff in [
        &b"X-Forwarded-For: \xff"[..],
        b"X-Forwarded-For: 6.6.6.6, \xff",
        b"X-Forwarded-For: 6.6.6.6\xff",
        b"X-Forwarded-For: junk",
        b"X-Forwarded-For: unknown",
        b"X-Forwarded-For: \"6.6.6.6\"",
        b"X-Forwarded-For: 6.6.6.6:abc",
        b"X-Forwarded-For: 6.6.6.6:80:80",
        b"X-Forwarded-For: [6.6.6.6]",
        b"X-Forwarded-For: 6.6.6.6 7.7.7.7",
        b"X-Forwarded-For: 0x7f.0.0.1",
        b"X-Forwarded-For: 127.0.0.1, \xc0\xaf",
        b"X-Forwarded-For: ,",
        b"X-Forwarded-For:",
        b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: junk",
    ] {
        for path in ["/allow", "/deny"] {
            let r = get(addr, path, &[b"Host: api.test", xff]).await;
            assert_problem(&r, 400, &lossy(xff));
        }
    }
    assert_eq!(
        public.hits(),
        hits,
        "no refused request reached the upstream"
    );

    // Legitimate chains still work.
    for xff in [
        &b"X-Forwarded-For: 203.0.113.5"[..],
        b"X-Forwarded-For: \xff, 203.0.113.5",
        b"X-Forwarded-For: 203.0.113.5, 10.1.1.1",
    ] {
        let r = get(addr, "/allow", &[b"Host: api.test", xff]).await;
        assert_eq!(r.status, 200, "{}: {r:?}", lossy(xff));
    }
    // No XFF from the trusted peer: the peer is the client.
    let r = get(addr, "/allow", &[b"Host: api.test"]).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn property_whatever_precedes_it_the_appended_address_is_the_client() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_admin, public, gw) = rt.block_on(setup(TRUSTED));
    let addr = gw.addr();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 150,
        ..ProptestConfig::default()
    });
    // Header-value bytes: no CR, LF, NUL or other controls but HTAB.
    let value_byte = prop_oneof![
        0x20u8..=0x7e,
        0x80u8..=0xff,
        Just(b'\t'),
        Just(b','),
        Just(b':'),
    ];
    let prefix = proptest::collection::vec(proptest::collection::vec(value_byte, 0..40), 0..3);
    runner
        .run(
            &(prefix, any::<u8>(), any::<bool>(), any::<bool>()),
            |(mut lines, last, allow, same_line)| {
                let mut head = format!(
                    "GET {} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n",
                    if allow { "/allow" } else { "/deny" }
                )
                .into_bytes();
                // What the trusted load balancer appends: the address it saw, on
                // the last line it received or on a line of its own.
                let appended = format!("6.6.6.{last}");
                match lines.last_mut() {
                    Some(l) if same_line => l.extend_from_slice(format!(", {appended}").as_bytes()),
                    _ => lines.push(appended.into_bytes()),
                }
                for l in &lines {
                    head.extend_from_slice(b"X-Forwarded-For: ");
                    head.extend_from_slice(l);
                    head.extend_from_slice(b"\r\n");
                }
                head.extend_from_slice(b"\r\n");
                let r = rt.block_on(send(addr, &head));
                // The client is 6.6.6.x, refused by both filters.
                prop_assert_eq!(
                    r.status,
                    403,
                    "{:?} -> {:?}",
                    lines.iter().map(|l| lossy(l)).collect::<Vec<_>>(),
                    r
                );
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(public.hits(), 0, "no request got through");
}

/// F1: a trusted peer that sends `Forwarded` and no `X-Forwarded-For` names the client
/// there (RFC 7239 `for=`), with the X-Forwarded-For rule: never its own address by
/// mistake.
#[tokio::test]
async fn a_trusted_peers_forwarded_header_names_the_client() {
    let (_admin, public, gw) = setup(TRUSTED).await;
    let addr = gw.addr();
    for fwd in [
        &b"Forwarded: for=6.6.6.6"[..],
        b"Forwarded: For=\"6.6.6.6:4711\";proto=https",
        b"Forwarded: for=\"\xff\", for=6.6.6.6",
        b"Forwarded: for=6.6.6.6, for=127.0.0.3",
        b"Forwarded: for=1.1.1.1\r\nForwarded: for=6.6.6.6;host=\"a,b\"",
    ] {
        let r = get(addr, "/deny", &[b"Host: api.test", fwd]).await;
        assert_problem(&r, 403, &lossy(fwd));
    }
    // An allow-list holding the load balancer's subnet admits nobody by mistake.
    for fwd in [
        &b"Forwarded: for=\"[2001:db8::1]\""[..],
        b"Forwarded: for=\"[2001:db8::1]:443\"",
        b"Forwarded: for=6.6.6.6;by=127.0.0.1",
    ] {
        let r = get(addr, "/allow", &[b"Host: api.test", fwd]).await;
        assert_problem(&r, 403, &lossy(fwd));
    }
    let hits = public.hits();
    // The client's node is no address: 400.
    for fwd in [
        &b"Forwarded: for=\"\xff\""[..],
        b"Forwarded: for=\xff",
        b"Forwarded: for=unknown",
        b"Forwarded: for=_hidden",
        b"Forwarded: for=\"_hidden:_port\"",
        b"Forwarded: for=6.6.6.6, for=unknown",
        b"Forwarded: for=junk",
        b"Forwarded: for=0x7f.0.0.1",
        b"Forwarded: for=\"6.6.6.6",
        b"Forwarded: for=6.6.6.6;for=127.0.0.1",
        b"Forwarded: for=6.6.6.6, garbage",
    ] {
        for path in ["/allow", "/deny"] {
            let r = get(addr, path, &[b"Host: api.test", fwd]).await;
            assert_problem(&r, 400, &lossy(fwd));
        }
    }
    assert_eq!(
        public.hits(),
        hits,
        "no refused request reached the upstream"
    );
    // Legitimate: an allowed client, a header naming no node (the peer is the client),
    // and X-Forwarded-For, which wins over Forwarded.
    for lines in [
        &[&b"Forwarded: for=203.0.113.5"[..]][..],
        &[b"Forwarded: for=\"\xff\", for=203.0.113.5, for=127.0.0.2"],
        &[b"Forwarded: proto=https"],
        &[b"X-Forwarded-For: 203.0.113.5", b"Forwarded: for=unknown"],
        &[b"X-Forwarded-For: 203.0.113.5", b"Forwarded: for=6.6.6.6"],
    ] {
        let mut all = vec![&b"Host: api.test"[..]];
        all.extend_from_slice(lines);
        let r = get(addr, "/allow", &all).await;
        assert_eq!(
            r.status,
            200,
            "{:?}: {r:?}",
            lines.iter().map(|l| lossy(l)).collect::<Vec<_>>()
        );
    }
    // From an untrusted peer, Forwarded names nobody, and is replaced.
    drop(gw);
    let gw = Gateway::start(&config(&_admin, &public, "", "")).await;
    let r = get(
        gw.addr(),
        "/allow",
        &[b"Host: api.test", b"Forwarded: for=6.6.6.6"],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        public.last_request().unwrap().header("forwarded"),
        Some(r#"for=127.0.0.1;proto=http;host="api.test""#)
    );
}

// ---------------------------------------------------------------------------------------------
// Items 7 and 6: one normalised host for routing, the cache key and the forwarded headers
// ---------------------------------------------------------------------------------------------

/// A request for admin.example.com in another spelling is refused (by the gateway, or by
/// Pingora's parser with its bare 400) or reaches the admin route: never the catch-all.
fn assert_not_public(r: &RawResponse, what: &str) {
    match r.status {
        400 => {}
        200 => assert_eq!(r.header("x-upstream"), Some("admin"), "{what}: {r:?}"),
        _ => panic!("{what}: {r:?}"),
    }
}

#[tokio::test]
async fn host_spellings_never_route_around_a_host_scoped_route() {
    let (admin, public, gw) = setup("").await;
    let addr = gw.addr();
    let port = addr.port();
    let refused = [
        "admin.example.com:abc".to_string(),
        "admin.example.com:80:80".into(),
        format!("admin.example.com:{port}:{port}"),
        "admin.example.com:+80".into(),
        "admin.example.com:99999".into(),
        "admin.example.com:0".into(),
        "admin%2eexample.com".into(),
        "admin.example%2Ecom".into(),
        "admin.example.com%2e".into(),
        "%61dmin.example.com".into(),
        "admin..example.com".into(),
        ".admin.example.com".into(),
        "admin.example.com..".into(),
        "admin.example.com.:abc".into(),
        "[admin.example.com]".into(),
        "admin.example.com@public.example.com".into(),
        "public.example.com@admin.example.com".into(),
        ":80".into(),
    ];
    for host in &refused {
        let r = get(addr, "/x", &[format!("Host: {host}").as_bytes()]).await;
        assert_problem(&r, 400, host);
    }
    let routed = [
        "admin.example.com".to_string(),
        "admin.example.com.".into(),
        "ADMIN.Example.COM.".into(),
        "admin.example.com.:80".into(),
        format!("admin.example.com.:{port}"),
        "admin.example.com:".into(),
        "admin.example.com:0080".into(),
    ];
    for host in &routed {
        let r = get(addr, "/x", &[format!("Host: {host}").as_bytes()]).await;
        assert_eq!(r.status, 200, "{host}: {r:?}");
        assert_eq!(r.header("x-upstream"), Some("admin"), "{host}: {r:?}");
    }
    assert_eq!(public.hits(), 0, "{:?}", public.requests());

    // The upstream gets the host that was routed: lowercased, trailing dot removed, the
    // default port dropped, in Host, X-Forwarded-Host and Forwarded alike.
    admin.clear();
    get(addr, "/x", &[b"Host: ADMIN.Example.COM."]).await;
    let seen = admin.last_request().unwrap();
    assert_eq!(seen.header_all("host"), vec!["admin.example.com"]);
    assert_eq!(seen.header("x-forwarded-host"), Some("admin.example.com"));
    assert_eq!(
        seen.header("forwarded"),
        Some(r#"for=127.0.0.1;proto=http;host="admin.example.com""#)
    );
    let r = get(addr, "/x", &[b"Host: Admin.example.com.:08080"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = admin.last_request().unwrap();
    assert_eq!(seen.header_all("host"), vec!["admin.example.com:8080"]);
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some("admin.example.com:8080")
    );
}

/// F3: a route scoped to an IPv4 literal host is not sidestepped by the other spellings
/// inet_aton accepts (octal, hex, fewer parts, leading zeros): a numeric host must be a
/// canonical dotted quad.
#[tokio::test]
async fn ipv4_host_spellings_never_route_around_an_ip_host_route() {
    let (admin, public, gw) = setup("").await;
    let addr = gw.addr();
    for host in ["127.0.0.9", "127.0.0.9.", "127.0.0.9:80"] {
        let r = get(addr, "/x", &[format!("Host: {host}").as_bytes()]).await;
        assert_eq!(r.header("x-upstream"), Some("admin"), "{host}: {r:?}");
    }
    for host in [
        "0x7f.0.0.9",
        "0X7F.0.0.9",
        "0177.0.0.9",
        "127.0.0.011",
        "127.0.9",
        "127.9",
        "0x7f000009",
        "2130706441",
        "017700000011",
        "127.000.000.009",
        "127.0.0.9.0",
        "[::ffff:127.0.0.9]",
        "[::ffff:7f00:9]",
        "0x7f.0.0.9:80",
    ] {
        let r = get(addr, "/x", &[format!("Host: {host}").as_bytes()]).await;
        assert_problem(&r, 400, host);
        let r = send(
            addr,
            format!("GET http://{host}/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(r.status, 400, "absolute-form {host}: {r:?}");
    }
    assert_eq!(public.hits(), 0, "{:?}", public.requests());
    assert!(admin.hits() >= 3);
}

#[tokio::test]
async fn absolute_form_targets_must_name_the_host_that_host_names() {
    let (admin, public, gw) = setup("").await;
    let addr = gw.addr();
    for (target, host) in [
        ("http://public.example.com/x", "admin.example.com"),
        ("http://admin.example.com/x", "public.example.com"),
        ("http://admin.example.com:8080/x", "admin.example.com"),
        ("http://admin.example.com/x", "admin.example.com:8080"),
        ("http://admin.example.com:abc/x", "admin.example.com"),
        ("http://admin%2eexample.com/x", "admin.example.com"),
    ] {
        let r = send(
            addr,
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(r.status, 400, "{target} / {host}: {r:?}");
    }
    for (target, host) in [
        ("http://admin.example.com/x", "admin.example.com"),
        ("http://ADMIN.example.com./x", "admin.example.com"),
        ("http://admin.example.com:80/x", "Admin.Example.Com."),
    ] {
        let r = send(
            addr,
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_not_public(&r, &format!("{target} / {host}"));
    }
    // HTTP/1.0 absolute-form without Host: the target names the host.
    let r = send(addr, b"GET http://Admin.example.com./x HTTP/1.0\r\n\r\n").await;
    assert_not_public(&r, "HTTP/1.0 absolute-form");
    if r.status == 200 {
        assert_eq!(
            admin.last_request().unwrap().header("host"),
            Some("admin.example.com")
        );
    }
    assert_eq!(public.hits(), 0, "{:?}", public.requests());
}

#[tokio::test]
async fn the_cache_key_is_the_host_the_upstream_receives() {
    let (_admin, public, gw) = setup("").await;
    let addr = gw.addr();
    let fetch = |host: &'static str| async move {
        let r = get(addr, "/cached/item", &[format!("Host: {host}").as_bytes()]).await;
        assert_eq!(r.status, 200, "{host}: {r:?}");
        r
    };
    let a = fetch("api.test:8001").await;
    assert_eq!(a.header("x-cache"), Some("MISS"));
    assert_eq!(
        public.last_request().unwrap().header("host"),
        Some("api.test:8001")
    );
    let hits = public.hits();

    // Another port is another host for the upstream: not served from the first entry.
    let b = fetch("api.test:8002").await;
    assert_ne!(b.header("x-cache"), Some("HIT"), "{b:?}");
    assert_eq!(public.hits(), hits + 1);
    let seen = public.last_request().unwrap();
    assert_eq!(seen.header("host"), Some("api.test:8002"));
    assert_eq!(seen.header("x-forwarded-host"), Some("api.test:8002"));
    assert!(
        b.body_str().contains("api.test:8002") && !b.body_str().contains("api.test:8001"),
        "{}",
        b.body_str()
    );

    // Spellings of one host are one entry: the upstream would get the same request.
    let c = fetch("API.test.:08001").await;
    assert_eq!(c.header("x-cache"), Some("HIT"), "{c:?}");
    assert_eq!(c.body, a.body);
    let d = fetch("api.test").await;
    assert_ne!(d.header("x-cache"), Some("HIT"), "{d:?}");
    let e = fetch("api.test:80").await;
    assert_eq!(e.header("x-cache"), Some("HIT"), "{e:?}");
    assert_eq!(e.body, d.body);
}

// ---------------------------------------------------------------------------------------------
// Item 7 over HTTP/2: `:authority`
// ---------------------------------------------------------------------------------------------

/// A raw HTTP/2 client over TLS (ALPN h2): the request's `:authority` and headers are
/// exactly what is given. `None` when the request could not be sent or the stream was
/// refused without a response.
async fn h2_request(
    addr: SocketAddr,
    ca_pem: &str,
    method: &str,
    authority: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, Option<String>)> {
    h2_request_to(addr, ca_pem, method, authority, "/x", headers).await
}

/// [`h2_request`] with a `:path` of one's own.
async fn h2_request_to(
    addr: SocketAddr,
    ca_pem: &str,
    method: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, Option<String>)> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("admin.example.com").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let uri = http::Uri::builder()
        .scheme("https")
        .authority(authority)
        .path_and_query(
            http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::copy_from_slice(
                path.as_bytes(),
            ))
            .ok()?,
        )
        .build()
        .ok()?;
    let mut req = http::Request::builder()
        .method(http::Method::from_bytes(method.as_bytes()).unwrap())
        .uri(uri);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let mut client = client.ready().await.ok()?;
    let (resp, _) = client.send_request(req.body(()).unwrap(), true).ok()?;
    let resp = resp.await.ok()?;
    let upstream = resp
        .headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Some((resp.status().as_u16(), upstream))
}

async fn tls_setup() -> (TestUpstream, TestUpstream, Gateway, TestCerts) {
    let admin = TestUpstream::start("admin").await;
    let public = TestUpstream::start("public").await;
    let certs = TestCerts::generate(&["admin.example.com", "public.example.com"]);
    let tail = r#"
[[server.tls]]
listen = "{TLS_LISTEN}"
cert = "c.pem"
key = "c.key"
"#;
    // `[[server.tls]]` belongs to `[server]`: put it before the other tables.
    let cfg = config(&admin, &public, "", "");
    let cfg = cfg.replacen(
        "\n[plugins.deny_six]",
        &format!("{tail}\n[plugins.deny_six]"),
        1,
    );
    let gw = Gateway::builder(&cfg)
        .file("c.pem", &certs.cert_pem)
        .file("c.key", &certs.key_pem)
        .start()
        .await;
    (admin, public, gw, certs)
}

#[tokio::test]
async fn http2_authority_spellings_never_route_around_a_host_scoped_route() {
    let (admin, public, gw, certs) = tls_setup().await;
    let addr = gw.tls_addr();
    let port = addr.port();
    let ok = h2_request(addr, &certs.ca_pem, "GET", "admin.example.com", &[]).await;
    assert_eq!(ok, Some((200, Some("admin".into()))));

    let mut sent = 0;
    for authority in [
        "admin.example.com.".to_string(),
        "ADMIN.EXAMPLE.COM.".into(),
        "admin.example.com.:443".into(),
        format!("admin.example.com.:{port}"),
        "admin.example.com:".into(),
        "admin..example.com".into(),
        ".admin.example.com".into(),
        "admin.example.com..".into(),
        "admin%2eexample.com".into(),
        "admin.example.com%2e".into(),
        "admin.example.com:0443".into(),
        "0x7f.0.0.9".into(),
        "0177.0.0.9".into(),
        "127.0.9".into(),
        "2130706441".into(),
        "127.000.000.009".into(),
    ] {
        if let Some((status, upstream)) =
            h2_request(addr, &certs.ca_pem, "GET", &authority, &[]).await
        {
            sent += 1;
            assert!(
                status == 400 || (status == 200 && upstream.as_deref() == Some("admin")),
                "{authority}: {status} {upstream:?}"
            );
        }
    }
    assert!(sent >= 12, "only {sent} authorities could be sent");

    // A Host header beside :authority: malformed, or naming another host.
    for (authority, host) in [
        ("public.example.com", "admin.example.com"),
        ("admin.example.com", "public.example.com"),
        ("public.example.com", "admin.example.com:abc"),
        ("public.example.com", "admin.example.com:80:80"),
        ("admin.example.com", "admin.example.com:80:80"),
    ] {
        let got = h2_request(addr, &certs.ca_pem, "GET", authority, &[("host", host)]).await;
        assert!(
            got.as_ref().is_none_or(|(s, _)| *s == 400),
            "{authority} / {host}: {got:?}"
        );
    }
    assert_eq!(public.hits(), 0, "{:?}", public.requests());
    // The routed host is the forwarded host, for every spelling that was answered.
    let seen = admin.requests();
    assert!(seen.len() >= 2, "{seen:?}");
    for r in &seen {
        let with_port = format!("admin.example.com:{port}");
        assert!(
            r.header_all("host") == vec!["admin.example.com"]
                || r.header_all("host") == vec![with_port.as_str()],
            "{r:?}"
        );
        assert_eq!(r.header("x-forwarded-host"), r.header("host"), "{r:?}");
        assert_eq!(r.path, "/x", "{r:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Item 8: standard methods in the wrong case
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn standard_methods_in_the_wrong_case_get_400_extension_methods_pass() {
    let (_admin, public, gw) = setup("").await;
    let addr = gw.addr();
    for m in [
        "post", "Post", "pOST", "get", "Get", "dElEtE", "put", "Patch", "options", "head", "Trace",
    ] {
        let r = send(
            addr,
            format!("{m} /x HTTP/1.1\r\nHost: api.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        if m.eq_ignore_ascii_case("head") {
            assert_eq!(r.status, 400, "{m}: {r:?}");
        } else {
            assert_problem(&r, 400, m);
        }
    }
    assert_eq!(public.hits(), 0, "{:?}", public.requests());
    for m in ["PROPFIND", "FOO", "M-SEARCH", "propfind", "GETS"] {
        let r = send(
            addr,
            format!("{m} /x HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{m}: {r:?}");
        assert_eq!(public.last_request().unwrap().method, m);
    }
}

#[tokio::test]
async fn http2_standard_methods_in_the_wrong_case_get_400() {
    let (admin, public, gw, certs) = tls_setup().await;
    let addr = gw.tls_addr();
    for m in ["post", "Get", "dElEtE"] {
        let got = h2_request(addr, &certs.ca_pem, m, "admin.example.com", &[]).await;
        assert_eq!(got.map(|g| g.0), Some(400), "{m}");
    }
    assert_eq!(admin.hits() + public.hits(), 0);
    let got = h2_request(addr, &certs.ca_pem, "PROPFIND", "admin.example.com", &[]).await;
    assert_eq!(got, Some((200, Some("admin".into()))));
}

/// An HTTP/2 `:path` may carry raw bytes outside ASCII (HTTP/1 heads cannot): they
/// would reach the upstream raw in an HTTP/1.1 request line. 400 instead.
#[tokio::test]
async fn http2_paths_with_raw_non_ascii_bytes_get_400() {
    let (admin, public, gw, certs) = tls_setup().await;
    let addr = gw.tls_addr();
    for path in ["/caf\u{e9}", "/a\u{a0}b", "/x?q=\u{e9}"] {
        let got = h2_request_to(addr, &certs.ca_pem, "GET", "admin.example.com", path, &[]).await;
        assert_eq!(got.map(|g| g.0), Some(400), "{path:?}");
    }
    assert_eq!(admin.hits() + public.hits(), 0);
    let got = h2_request_to(
        addr,
        &certs.ca_pem,
        "GET",
        "admin.example.com",
        "/caf%C3%A9",
        &[],
    )
    .await;
    assert_eq!(got.map(|g| g.0), Some(200));
}

// ---------------------------------------------------------------------------------------------
// Item 14: `;` in paths, overlong and invalid UTF-8 escapes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn semicolon_segments_and_overlong_escapes_get_400() {
    let (_admin, public, gw) = setup("").await;
    let addr = gw.addr();
    for path in [
        "/deny/..;/x",
        "/..;/deny",
        "/x;jsessionid=ABC/y",
        "/x;/y",
        "/x/;",
        "/x%3b/y",
        "/x/..%3B/deny",
        "/%c0%af",
        "/x/%c0%ae%c0%ae/deny",
        "/%e0%80%af",
        "/%f0%80%80%af",
        "/%c1%9c",
        "/%ff",
        "/%80",
        "/%c3",
        "/%ed%a0%80",
    ] {
        let r = get(addr, path, &[b"Host: api.test"]).await;
        assert_problem(&r, 400, path);
    }
    assert_eq!(public.hits(), 0, "{:?}", public.requests());
    for (path, seen) in [
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/x?a=1;b=2", "/x?a=1;b=2"),
        ("/%F0%9F%98%80", "/%F0%9F%98%80"),
    ] {
        let r = get(addr, path, &[b"Host: api.test"]).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(public.last_request().unwrap().path, seen);
    }
}

// ---------------------------------------------------------------------------------------------
// Items 15, 16: client-address headers and a trusted peer's X-Forwarded-Proto/-Host
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_ip_headers_and_forwarded_proto_host_depend_on_trust() {
    let sent: [&[u8]; 6] = [
        b"Host: api.test",
        b"X-Real-IP: 6.6.6.6",
        b"True-Client-IP: 6.6.6.6",
        b"X-Client-IP: 6.6.6.6",
        b"X-Forwarded-Proto: https",
        b"X-Forwarded-Host: shop.example.com",
    ];
    // Untrusted peer: the client-address headers are dropped, Proto/Host replaced.
    let (_admin, public, gw) = setup("").await;
    let r = get(gw.addr(), "/x", &sent).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = public.last_request().unwrap();
    for h in ["x-real-ip", "true-client-ip", "x-client-ip"] {
        assert_eq!(seen.header(h), None, "{h}: {:?}", seen.headers);
    }
    assert_eq!(seen.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(seen.header_all("x-forwarded-host"), vec!["api.test"]);
    drop(gw);

    // Trusted peer (a TLS-terminating load balancer): all kept.
    let gw = Gateway::start(&config(&_admin, &public, TRUSTED, "")).await;
    let r = get(gw.addr(), "/x", &sent).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = public.last_request().unwrap();
    for h in ["x-real-ip", "true-client-ip", "x-client-ip"] {
        assert_eq!(seen.header(h), Some("6.6.6.6"), "{h}: {:?}", seen.headers);
    }
    assert_eq!(seen.header_all("x-forwarded-proto"), vec!["https"]);
    assert_eq!(
        seen.header_all("x-forwarded-host"),
        vec!["shop.example.com"]
    );
    assert_eq!(seen.header("host"), Some("api.test"));
    // ...but garbage from it is replaced, not passed on.
    let r = get(
        gw.addr(),
        "/x",
        &[
            b"Host: api.test",
            b"X-Forwarded-Proto: javascript",
            b"X-Forwarded-Host: evil.example/../x",
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = public.last_request().unwrap();
    assert_eq!(seen.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(seen.header_all("x-forwarded-host"), vec!["api.test"]);
}

/// F2, F4: headers an upstream may read as the client's address, host, URL, scheme or
/// port, which the cache does not key, never come from an untrusted peer; names with `_`
/// (read as `-` by WSGI/CGI upstreams) and method overrides never come from anyone.
#[tokio::test]
async fn unkeyed_forwarding_and_override_headers_are_dropped() {
    let spoofed = [
        "X-Forwarded-Port: 1337",
        "X-Forwarded-Ssl: on",
        "X-Forwarded-Prefix: /evil",
        "X-Forwarded-Scheme: https",
        "X-Forwarded-Server: evil.example",
        "X-Forwarded-Uri: /evil",
        "X-Forwarded: for=6.6.6.6",
        "X-Host: evil.example",
        "X-Original-URL: /admin",
        "X-Rewrite-URL: /admin",
        "X-Original-Host: evil.example",
        "X-Url-Scheme: https",
        "Front-End-Https: on",
        "X-Cluster-Client-IP: 6.6.6.6",
        "Client-IP: 6.6.6.6",
        "CF-Connecting-IP: 6.6.6.6",
        "Fastly-Client-IP: 6.6.6.6",
        "X-Original-Forwarded-For: 6.6.6.6",
        "Forwarded-For: 6.6.6.6",
        "X-ProxyUser-Ip: 6.6.6.6",
    ];
    let everyone = [
        "X_Real_IP: 6.6.6.6",
        "X-Real_IP: 6.6.6.6",
        "True_Client_IP: 6.6.6.6",
        "X_Client_IP: 6.6.6.6",
        "X_Forwarded_For: 6.6.6.6",
        "X_Forwarded_Proto: https",
        "X_Forwarded_Host: evil.example",
        "X-HTTP-Method-Override: DELETE",
        "X-HTTP-Method: DELETE",
        "X-Method-Override: DELETE",
    ];
    let name = |l: &str| l.split(':').next().unwrap().to_ascii_lowercase();
    let lines = |extra: &[&str]| {
        let mut v: Vec<Vec<u8>> = vec![b"Host: api.test".to_vec()];
        v.extend(extra.iter().map(|l| l.as_bytes().to_vec()));
        v
    };
    let all: Vec<&str> = spoofed.iter().chain(everyone.iter()).copied().collect();
    let sent = lines(&all);
    let refs: Vec<&[u8]> = sent.iter().map(|l| l.as_slice()).collect();

    // Untrusted peer: all dropped; the cached answer is the one everyone gets.
    let (admin, public, gw) = setup("").await;
    let r = get(gw.addr(), "/cached/p", &refs).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-cache"), Some("MISS"));
    let seen = public.last_request().unwrap();
    for l in &all {
        assert_eq!(seen.header(&name(l)), None, "{l}: {:?}", seen.headers);
    }
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    let plain = get(gw.addr(), "/cached/p", &[b"Host: api.test"]).await;
    assert_eq!(plain.header("x-cache"), Some("HIT"), "{plain:?}");
    assert_eq!(plain.body, r.body);
    drop(gw);

    // Trusted peer: its forwarding headers are kept; `_` names and method overrides are not.
    let gw = Gateway::start(&config(&admin, &public, TRUSTED, "")).await;
    let r = get(gw.addr(), "/x", &refs).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = public.last_request().unwrap();
    for l in &spoofed {
        let value = l.split_once(": ").unwrap().1;
        assert_eq!(
            seen.header(&name(l)),
            Some(value),
            "{l}: {:?}",
            seen.headers
        );
    }
    for l in &everyone {
        assert_eq!(seen.header(&name(l)), None, "{l}: {:?}", seen.headers);
    }
    assert_eq!(seen.method, "GET");
}

/// F5: a trusted load balancer's scheme and host survive in the forms real proxies send:
/// lists (the leftmost element is the original), several lines, and `Forwarded`; the cache
/// keys the value forwarded.
#[tokio::test]
async fn a_trusted_peers_proto_and_host_lists_and_forwarded_are_kept() {
    let (_admin, public, gw) = setup(TRUSTED).await;
    let addr = gw.addr();
    for (lines, proto, host) in [
        (&[&b"X-Forwarded-Proto: https, https"[..]][..], "https", "api.test"),
        (&[b"X-Forwarded-Proto: https, http"], "https", "api.test"),
        (&[b"X-Forwarded-Proto: https", b"X-Forwarded-Proto: http"], "https", "api.test"),
        (&[b"X-Forwarded-Proto: https, javascript"], "http", "api.test"),
        (&[b"Forwarded: proto=https"], "https", "api.test"),
        (&[b"Forwarded: for=203.0.113.5;proto=https;host=shop.example.com, for=127.0.0.2;proto=http"], "https", "shop.example.com"),
        (&[b"X-Forwarded-Proto: http", b"Forwarded: proto=https"], "http", "api.test"),
        (&[b"X-Forwarded-Host: api.example.com, lb.internal"], "http", "api.example.com"),
        (&[b"X-Forwarded-Host: API.example.com.", b"X-Forwarded-Host: lb.internal:8080"], "http", "api.example.com"),
        (&[b"X-Forwarded-Host: api.example.com, lb/../x"], "http", "api.test"),
        (&[b"Forwarded: host=\"api.example.com:8443\""], "http", "api.example.com:8443"),
    ] {
        let mut all = vec![&b"Host: api.test"[..]];
        all.extend_from_slice(lines);
        let r = get(addr, "/x", &all).await;
        let what = lines.iter().map(|l| lossy(l)).collect::<Vec<_>>();
        assert_eq!(r.status, 200, "{what:?}: {r:?}");
        let seen = public.last_request().unwrap();
        assert_eq!(seen.header_all("x-forwarded-proto"), vec![proto], "{what:?}");
        assert_eq!(seen.header_all("x-forwarded-host"), vec![host], "{what:?}");
        assert_eq!(seen.header("host"), Some("api.test"), "{what:?}");
    }
    // The cache keys what is forwarded: one kept host, one entry.
    let fetch = |lines: &'static [&'static [u8]]| async move {
        let mut all = vec![&b"Host: api.test"[..]];
        all.extend_from_slice(lines);
        get(addr, "/cached/lb", &all).await
    };
    let a = fetch(&[b"X-Forwarded-Host: a.example, lb.internal"]).await;
    assert_eq!(a.header("x-cache"), Some("MISS"), "{a:?}");
    let b = fetch(&[b"X-Forwarded-Host: a.example"]).await;
    assert_eq!(b.header("x-cache"), Some("HIT"), "{b:?}");
    let c = fetch(&[b"X-Forwarded-Host: b.example, lb.internal"]).await;
    assert_ne!(c.header("x-cache"), Some("HIT"), "{c:?}");
    let d = fetch(&[
        b"X-Forwarded-Host: a.example",
        b"X-Forwarded-Proto: https, http",
    ])
    .await;
    assert_ne!(d.header("x-cache"), Some("HIT"), "{d:?}");
    let e = fetch(&[b"X-Forwarded-Host: a.example", b"Forwarded: proto=https"]).await;
    assert_eq!(
        e.header("x-cache"),
        Some("HIT"),
        "https, kept from Forwarded: {e:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 18: HTTP/1.0 without Host
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn http10_without_host_is_sent_to_the_target_with_its_address_as_host() {
    let (admin, public, gw) = setup("").await;
    let r = send(gw.addr(), b"GET /x HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-upstream"),
        Some("public"),
        "no host-scoped route matches"
    );
    assert_eq!(admin.hits(), 0);
    let seen = public.last_request().unwrap();
    let target = public.addr().to_string();
    assert_eq!(
        seen.header_all("host"),
        vec![target.as_str()],
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.header("x-forwarded-host"), None);
    assert_eq!(seen.header("forwarded"), Some("for=127.0.0.1;proto=http"));
    // An empty Host names no host either.
    let r = get(gw.addr(), "/x", &[b"Host:"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        public.last_request().unwrap().header("host"),
        Some(target.as_str())
    );
}

// ---------------------------------------------------------------------------------------------
// Item 19: `Upgrade: h2c` is not an upgrade the gateway performs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn h2c_upgrade_requests_are_forwarded_as_plain_http11() {
    let (_admin, public, gw) = setup("").await;
    for (connection, upgrade) in [
        ("Upgrade, HTTP2-Settings", "h2c"),
        ("upgrade", "h2c"),
        ("HTTP2-Settings, Upgrade", "H2C"),
        ("upgrade", "websocket, h2c"),
        ("upgrade", "foo/1"),
    ] {
        let head = format!(
            "GET /x HTTP/1.1\r\nHost: api.test\r\nConnection: {connection}\r\n\
             Upgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        );
        let mut conn = RawConn::connect(gw.addr()).await;
        conn.send(head.as_bytes()).await.unwrap();
        let r = conn.read_response().await;
        assert_eq!(r.status, 200, "{upgrade}: {r:?}");
        let seen = public.last_request().unwrap();
        assert_eq!(
            seen.header("upgrade"),
            None,
            "{upgrade}: {:?}",
            seen.headers
        );
        assert_eq!(seen.header("http2-settings"), None, "{:?}", seen.headers);
        for c in seen.header_all("connection") {
            assert!(
                !c.to_ascii_lowercase().contains("upgrade"),
                "{upgrade}: {:?}",
                seen.headers
            );
        }
        // The connection goes on as HTTP/1.1.
        conn.send(b"GET /after HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let r = conn.read_response().await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(public.last_request().unwrap().path, "/after");
    }
}

/// F6: an HTTP/1.0 request cannot upgrade (RFC 9110 §7.8): it is forwarded as a plain
/// request, without `Upgrade` and without `Connection: upgrade`.
#[tokio::test]
async fn http10_upgrade_requests_are_forwarded_as_plain_requests() {
    let (_admin, public, gw) = setup("").await;
    for (connection, upgrade) in [
        ("Upgrade", "websocket"),
        ("keep-alive, Upgrade", "WebSocket"),
        ("upgrade", "h2c"),
    ] {
        let head = format!(
            "GET /chat HTTP/1.0\r\nHost: api.test\r\nConnection: {connection}\r\nUpgrade: {upgrade}\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let r = send(gw.addr(), head.as_bytes()).await;
        assert_eq!(r.status, 200, "{connection}/{upgrade}: {r:?}");
        let seen = public.last_request().unwrap();
        assert_eq!(seen.header("upgrade"), None, "{:?}", seen.headers);
        for c in seen.header_all("connection") {
            assert!(
                !c.to_ascii_lowercase().contains("upgrade"),
                "{:?}",
                seen.headers
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Property, black box: spellings of a host-scoped host through the real gateway
// ---------------------------------------------------------------------------------------------

#[test]
fn property_no_host_spelling_reaches_the_catch_all() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (admin, public, gw) = rt.block_on(setup(""));
    let addr = gw.addr();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 150,
        ..ProptestConfig::default()
    });
    let strategy = (
        proptest::collection::vec(any::<bool>(), 17),
        0usize..3,
        prop_oneof![
            Just(String::new()),
            Just(":".to_string()),
            any::<u16>().prop_map(|p| format!(":{p}")),
            Just(":abc".to_string()),
            Just(":80:80".to_string()),
            Just(":0080".to_string()),
        ],
        prop_oneof![Just(""), Just("%2e"), Just("%2E"), Just("."), Just(".%2e")],
        any::<bool>(),
    );
    runner
        .run(&strategy, |(case, dots, port, tail, absolute)| {
            let mut host: String = "admin.example.com"
                .chars()
                .zip(case)
                .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                .collect();
            host.push_str(&".".repeat(dots));
            host.push_str(tail);
            host.push_str(&port);
            let head = if absolute {
                format!("GET http://{host}/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
            } else {
                format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
            };
            let r = rt.block_on(send(addr, head.as_bytes()));
            prop_assert!(
                r.status == 400 || (r.status == 200 && r.header("x-upstream") == Some("admin")),
                "{host}: {r:?}"
            );
            Ok(())
        })
        .unwrap();
    assert_eq!(public.hits(), 0, "{:?}", public.requests());
    assert!(admin.hits() > 0);
}

// ---------------------------------------------------------------------------------------------
// Cost: the common cases of the per-request edge decisions allocate nothing
// ---------------------------------------------------------------------------------------------

/// Counts the allocations of the current thread (the gateway runs in its own process:
/// only this test binary's own calls are counted).
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn black_box_vec(v: Vec<u8>) {
    std::hint::black_box(v);
}

fn allocations() -> usize {
    ALLOCATIONS.with(|c| c.get())
}

#[test]
fn host_and_client_ip_decisions_do_not_allocate_in_the_common_case() {
    use tollgate::proxy::forwarded::{client_ip, spoofable_headers, Forwarding};
    // Header values as Pingora makes them: slices of one shared request buffer.
    let buf = bytes::Bytes::copy_from_slice(
        b"api.example.com:8443 198.51.100.7, 203.0.113.9, 10.2.2.2 https",
    );
    let value =
        |r: std::ops::Range<usize>| http::HeaderValue::from_maybe_shared(buf.slice(r)).unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("host", value(0..20));
    headers.insert("x-forwarded-for", value(21..56));
    headers.insert("x-forwarded-proto", value(57..62));
    let nets: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let lb: std::net::IpAddr = "10.1.1.1".parse().unwrap();
    // The counter counts.
    let before = allocations();
    black_box_vec(vec![1u8; 16]);
    assert_eq!(allocations() - before, 1);
    // Warm up whatever is lazily initialised.
    let _ = Forwarding::from_request(true, false, &headers, None);

    let before = allocations();
    let ip = client_ip(Some(lb), &headers, &nets);
    let f = Forwarding::from_request(true, false, &headers, None).unwrap();
    let after = allocations();
    assert_eq!(ip, Ok(Some("203.0.113.9".parse().unwrap())));
    assert_eq!(f.host(), "api.example.com");
    assert_eq!(f.proto(), "https");
    assert_eq!(after - before, 0, "allocations on the common path");
    drop(f);

    // Nothing to drop from an ordinary request: nothing allocated. (Something to drop
    // costs the list and the names' copies.)
    headers.insert("accept", http::HeaderValue::from_static("*/*"));
    headers.insert("user-agent", http::HeaderValue::from_static("curl/8"));
    let before = allocations();
    let none = spoofable_headers(&headers, true).len();
    let after = allocations();
    assert_eq!((none, after - before), (0, 0));
    assert_eq!(
        spoofable_headers(&headers, false).len(),
        2,
        "x-forwarded-for and -proto from an untrusted peer"
    );

    // A trusted peer's Forwarded, read without X-Forwarded-For: nothing allocated.
    let mut fwd = http::HeaderMap::new();
    fwd.insert("host", value(0..20));
    fwd.insert(
        "forwarded",
        http::HeaderValue::from_static(
            "for=198.51.100.7, for=\"[2001:db8::1]:443\";proto=https;host=api.example.com",
        ),
    );
    let before = allocations();
    let ip = client_ip(Some(lb), &fwd, &nets);
    let f = Forwarding::from_request(true, false, &fwd, None).unwrap();
    let after = allocations();
    assert_eq!(ip, Ok(Some("2001:db8::1".parse().unwrap())));
    assert_eq!(f.proto(), "https");
    assert!(
        after - before <= 1,
        "{} allocations (the kept host)",
        after - before
    );
    drop(f);

    // A host that needs rewriting costs one allocation, whatever its length.
    headers.insert(
        "host",
        http::HeaderValue::from_static("API.Example.COM.:08443"),
    );
    let before = allocations();
    let f = Forwarding::from_request(false, false, &headers, None).unwrap();
    let after = allocations();
    assert_eq!(
        f.authority.as_ref().map(|a| a.as_str()),
        Some("api.example.com:8443")
    );
    assert!(
        (1..=2).contains(&(after - before)),
        "{} allocations",
        after - before
    );
}
