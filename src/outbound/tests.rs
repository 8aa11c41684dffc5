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
