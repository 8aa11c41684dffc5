use super::client::plain;
use super::{joined_cookie, parse_url};

#[test]
fn urls() {
    let t = parse_url("https://auth.internal:8443/check?x=1").unwrap();
    assert!(t.tls);
    assert_eq!((t.host.as_str(), t.port), ("auth.internal", 8443));
    assert_eq!(
        (t.path.as_str(), t.authority.as_str()),
        ("/check?x=1", "auth.internal:8443")
    );
    assert_eq!(t.display, "https://auth.internal:8443/check");
    let t = parse_url("http://127.0.0.1").unwrap();
    assert_eq!((t.port, t.path.as_str()), (80, "/"));
    let t = parse_url("http://[::1]:9000/a").unwrap();
    assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
    for bad in [
        "ftp://x/",
        "127.0.0.1:80/check",
        "http://user:pw@x/",
        "/relative",
        "http://",
        "not a url",
    ] {
        assert!(parse_url(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn cookie_crumbs_are_joined_with_semicolons() {
    let mut h = http::HeaderMap::new();
    assert_eq!(joined_cookie(&h), None);
    h.append("cookie", "a=1".parse().unwrap());
    assert_eq!(joined_cookie(&h), None, "one field is sent as it is");
    h.append("cookie", "b=2".parse().unwrap());
    h.append("cookie", "c=3".parse().unwrap());
    assert_eq!(joined_cookie(&h).unwrap(), "a=1; b=2; c=3");
}

#[test]
fn fetch_errors_are_plain_words() {
    let e = pingora::Error::explain(
        pingora::ErrorType::ConnectRefused,
        "Connection refused (os error 111)",
    );
    assert_eq!(plain(&e), "the connection was refused");
    // As Pingora 0.9's rustls connector builds it (seen in a real log).
    let inner =
        pingora::Error::explain(pingora::ErrorType::TLSHandshakeFailure, "tls connect error");
    let mut inner = *inner;
    inner.cause = Some("invalid peer certificate: NotValidForName".into());
    let root = pingora::Error::explain(
        pingora::ErrorType::TLSHandshakeFailure,
        format!("TLS connect() failed: {inner}, SNI: 127.0.0.1"),
    );
    let mut outer = pingora::Error::new(pingora::ErrorType::TLSHandshakeFailure);
    outer.cause = Some(root);
    assert_eq!(
        plain(&outer),
        "the TLS handshake failed (invalid peer certificate: NotValidForName)"
    );
    let bare = pingora::Error::explain(pingora::ErrorType::TLSHandshakeFailure, "odd");
    assert_eq!(plain(&bare), "the TLS handshake failed");
    for t in [
        pingora::ErrorType::ReadTimedout,
        pingora::ErrorType::ConnectionClosed,
    ] {
        let m = plain(&pingora::Error::new(t));
        assert!(
            !m.starts_with(' ') && !m.contains("context") && !m.contains("cause"),
            "{m}"
        );
    }
}

mod client {
    use super::super::{parse_url, Client, ErrorKind, Limits};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const LIMITS: Limits = Limits {
        connect: Duration::from_secs(2),
        io: Some(Duration::from_secs(2)),
        total: None,
        max_body: 16,
        stale_retries: 1,
    };

    /// A keep-alive HTTP/1.1 server answering `body` to every request (no
    /// answer at all when `body` is `None`); counts connections.
    async fn server(body: Option<&'static str>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let Some(body) = body else {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            return;
                        };
                        let resp = format!(
                            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}/x"), conns)
    }

    #[tokio::test]
    async fn calls_reuse_one_pooled_connection_and_cap_the_body() {
        let (url, conns) = server(Some("small")).await;
        let c = Client::new("t", parse_url(&url).unwrap(), LIMITS).unwrap();
        for _ in 0..3 {
            let r = c.send(&c.get_request(&[]).unwrap()).await.unwrap();
            assert_eq!(
                (r.status(), &r.body[..], r.complete),
                (200, &b"small"[..], true)
            );
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);

        let (url, _) = server(Some("more than sixteen bytes")).await;
        let c = Client::new("t", parse_url(&url).unwrap(), LIMITS).unwrap();
        let r = c.send(&c.get_request(&[]).unwrap()).await.unwrap();
        assert!(!r.complete && r.body.is_empty());
    }

    #[tokio::test]
    async fn errors_say_what_kind_they_are() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::new(
            "t",
            parse_url(&format!("http://127.0.0.1:{port}/")).unwrap(),
            LIMITS,
        )
        .unwrap();
        let e = c.send(&c.get_request(&[]).unwrap()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect);
        assert_eq!(e.to_string(), "the connection was refused");
        assert_eq!(e.code(), "ConnectRefused");

        let (url, _) = server(None).await;
        let total = Limits {
            total: Some(Duration::from_millis(300)),
            ..LIMITS
        };
        let c = Client::new("t", parse_url(&url).unwrap(), total).unwrap();
        let e = c.send(&c.get_request(&[]).unwrap()).await.unwrap_err();
        assert!(e.is_timeout());
        assert_eq!(e.to_string(), "no answer within 300ms");

        let io = Limits {
            io: Some(Duration::from_millis(200)),
            ..LIMITS
        };
        let c = Client::new("t", parse_url(&url).unwrap(), io).unwrap();
        let e = c.send(&c.get_request(&[]).unwrap()).await.unwrap_err();
        assert!(e.is_timeout(), "{e:?}");

        let c = Client::new(
            "t",
            parse_url("http://no-such-host.invalid/").unwrap(),
            LIMITS,
        )
        .unwrap();
        let e = c.send(&c.get_request(&[]).unwrap()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Resolve);
        assert!(
            e.to_string()
                .starts_with("cannot resolve no-such-host.invalid"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_fixed_address_is_used_instead_of_the_host() {
        let (url, conns) = server(Some("ok")).await;
        let addr = parse_url(&url).unwrap();
        let target = parse_url(&format!("http://no-such-host.invalid:{}/x", addr.port)).unwrap();
        let c = Client::new("t", target, LIMITS).unwrap();
        assert_eq!(c.address(), None);
        let fixed: std::net::SocketAddr = format!("127.0.0.1:{}", addr.port).parse().unwrap();
        c.set_address(fixed);
        assert_eq!(c.address(), Some(fixed));
        let r = c.send(&c.get_request(&[]).unwrap()).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }
}
