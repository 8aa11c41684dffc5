use super::*;
use http::header::{self, HeaderName};
use ipnet::IpNet;
use std::net::IpAddr;

#[test]
fn hop_by_hop_finds_every_listed_name_and_the_connection_list() {
    let mut m = HeaderMap::new();
    m.insert("host", "a".parse().unwrap());
    m.insert("x-custom", "1".parse().unwrap());
    assert!(hop_by_hop(&m, false).is_empty());
    for n in HOP_BY_HOP {
        m.insert(n, "x".parse().unwrap());
    }
    m.insert(header::CONNECTION, "X-Custom, te, close".parse().unwrap());
    let found = hop_by_hop(&m, false);
    for n in HOP_BY_HOP {
        assert_eq!(found.iter().filter(|f| f.as_str() == n).count(), 1, "{n}");
    }
    assert!(found.iter().any(|f| f == "x-custom"), "{found:?}");
    assert_eq!(found.len(), HOP_BY_HOP.len() + 1, "{found:?}");
    // A protocol switch keeps Connection and Upgrade.
    let kept = hop_by_hop(&m, true);
    assert!(!kept
        .iter()
        .any(|f| f == header::CONNECTION || f == header::UPGRADE));
    assert_eq!(kept.len(), HOP_BY_HOP.len() - 1, "{kept:?}");
}

fn xff(lines: &[&[u8]]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for l in lines {
        m.append("x-forwarded-for", HeaderValue::from_bytes(l).unwrap());
    }
    m
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn nets() -> Vec<IpNet> {
    vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]
}

const LB: &str = "10.1.1.1";

fn from_lb(lines: &[&[u8]]) -> Result<Option<IpAddr>, BadRequest> {
    client_ip(Some(ip(LB)), &xff(lines), &nets())
}

#[test]
fn client_ip_rules() {
    let ext = ip("203.0.113.9");
    // Untrusted peer: XFF ignored.
    assert_eq!(
        client_ip(Some(ext), &xff(&[b"1.2.3.4"]), &nets()),
        Ok(Some(ext))
    );
    // Trusted peer: rightmost untrusted entry.
    assert_eq!(
        from_lb(&[b"1.2.3.4, 198.51.100.7, 10.2.2.2"]),
        Ok(Some(ip("198.51.100.7")))
    );
    // All trusted: the leftmost trusted one.
    assert_eq!(from_lb(&[b"10.3.3.3, 10.4.4.4"]), Ok(Some(ip("10.3.3.3"))));
    // No XFF: the trusted peer is the client.
    assert_eq!(from_lb(&[]), Ok(Some(ip(LB))));
    assert_eq!(client_ip(None, &xff(&[b"1.2.3.4"]), &nets()), Ok(None));
}

#[test]
fn xff_is_read_as_bytes_and_garbage_is_refused_not_skipped() {
    // Non-UTF-8 left of the client's entry: never looked at.
    assert_eq!(from_lb(&[b"\xff, 6.6.6.6"]), Ok(Some(ip("6.6.6.6"))));
    assert_eq!(
        from_lb(&[b"\xff\xfe junk, 6.6.6.6, 10.0.0.7"]),
        Ok(Some(ip("6.6.6.6")))
    );
    // The client's entry is not an IP: 400, never the proxy.
    for bad in [
        &b"6.6.6.6, \xff"[..],
        b"junk",
        b"6.6.6.6, 10.0.0.2, unknown",
        b"\"6.6.6.6\"",
        b"6.6.6.6 7.7.7.7",
        b"6.6.6.6:abc",
        b"6.6.6.6:80:80",
        b"[6.6.6.6]",
        b"[::1",
        b"fe80::1%eth0",
        b"010.0.0.1",
        b"1.2.3",
        b"0x0a.0.0.1",
        b"_hidden",
        b"for=6.6.6.6",
    ] {
        assert!(
            from_lb(&[bad]).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // A chain that is there but holds nothing.
    assert!(from_lb(&[b""]).is_err());
    assert!(from_lb(&[b" , ,"]).is_err());
}

#[test]
fn xff_entries_with_ports_brackets_and_empty_elements() {
    assert_eq!(from_lb(&[b"6.6.6.6:4711"]), Ok(Some(ip("6.6.6.6"))));
    assert_eq!(
        from_lb(&[b"[2001:db8::1]:443"]),
        Ok(Some(ip("2001:db8::1")))
    );
    assert_eq!(from_lb(&[b"[2001:db8::1]"]), Ok(Some(ip("2001:db8::1"))));
    assert_eq!(from_lb(&[b"2001:db8::1"]), Ok(Some(ip("2001:db8::1"))));
    assert_eq!(from_lb(&[b" 6.6.6.6 ,, \t,"]), Ok(Some(ip("6.6.6.6"))));
    // Trusted entries written with ports or mapped into IPv6 are still trusted.
    assert_eq!(
        from_lb(&[b"6.6.6.6, 10.0.0.9:80, ::ffff:10.0.0.8, [::ffff:10.0.0.7]:1"]),
        Ok(Some(ip("6.6.6.6")))
    );
    // A mapped untrusted address is its IPv4 address.
    assert_eq!(from_lb(&[b"::ffff:6.6.6.6"]), Ok(Some(ip("6.6.6.6"))));
    // A mapped trusted peer is trusted.
    assert_eq!(
        client_ip(Some(ip("::ffff:10.1.1.1")), &xff(&[b"6.6.6.6"]), &nets()),
        Ok(Some(ip("6.6.6.6")))
    );
}

#[test]
fn several_xff_lines_are_one_list_in_order() {
    assert_eq!(
        from_lb(&[b"1.1.1.1", b"6.6.6.6, 10.0.0.3", b"10.0.0.4"]),
        Ok(Some(ip("6.6.6.6")))
    );
    assert_eq!(from_lb(&[b"6.6.6.6", b"\xff"]).ok(), None);
    assert_eq!(from_lb(&[b"\xff", b"6.6.6.6"]), Ok(Some(ip("6.6.6.6"))));
    assert_eq!(from_lb(&[b"5.5.5.5", b""]), Ok(Some(ip("5.5.5.5"))));
}

fn auth(raw: &str, https: bool) -> Result<Option<String>, BadRequest> {
    parse_authority(raw.as_bytes(), None, https)
        .map(|a| a.map(|a| format!("{}|{}", a.host(), a.as_str())))
}

#[test]
fn hosts_are_normalised() {
    let ok = |raw: &str, host: &str, full: &str| {
        assert_eq!(
            auth(raw, false),
            Ok(Some(format!("{host}|{full}"))),
            "{raw:?}"
        );
    };
    ok("api.example.com", "api.example.com", "api.example.com");
    ok("API.Example.COM", "api.example.com", "api.example.com");
    ok(
        "admin.example.com.",
        "admin.example.com",
        "admin.example.com",
    );
    ok(
        "Admin.Example.com.:8080",
        "admin.example.com",
        "admin.example.com:8080",
    );
    ok("a:8080", "a", "a:8080");
    ok("a:08080", "a", "a:8080");
    ok("a:80", "a", "a");
    ok("a:", "a", "a");
    ok("a:443", "a", "a:443");
    ok("127.0.0.1:9000", "127.0.0.1", "127.0.0.1:9000");
    ok("[::1]", "[::1]", "[::1]");
    ok("[0:0::1]:8443", "[::1]", "[::1]:8443");
    ok("[2001:DB8::A]", "[2001:db8::a]", "[2001:db8::a]");
    ok(
        "under_score.example",
        "under_score.example",
        "under_score.example",
    );
    assert_eq!(
        auth("a:443", true),
        Ok(Some("a|a".into())),
        "default https port"
    );
    assert_eq!(auth("", false), Ok(None));
    // Already normal: the shared value is reused.
    let v = HeaderValue::from_static("api.example.com:8443");
    let a = parse_authority(v.as_bytes(), Some(&v), false)
        .unwrap()
        .unwrap();
    assert_eq!(a.host(), "api.example.com");
    assert_eq!(a.header_value(), &v);
}

#[test]
fn malformed_hosts_are_refused() {
    let long_label = format!("{}.example", "a".repeat(64));
    let long_name = format!("{}a", "abcdefghi.".repeat(26));
    for raw in [
        "admin.example.com:abc",
        "admin.example.com:80:80",
        "admin.example.com:-1",
        "admin.example.com:+80",
        "admin.example.com: 80",
        "admin.example.com:65536",
        "admin.example.com:0",
        "admin.example.com:123456",
        "admin%2eexample.com",
        "admin.example.com%2e",
        "%61dmin.example.com",
        "admin..example.com",
        ".admin.example.com",
        "admin.example.com..",
        ".",
        "..",
        ":80",
        "admin.example.com ",
        " admin.example.com",
        "admin.example.com\t",
        "user@admin.example.com",
        "admin.example.com/x",
        "admin.example.com\\",
        "admin.exämple.com",
        "admin.example.com#",
        "admin.example.com?",
        "*.example.com",
        "[::1",
        "[::1]x",
        "[::1]:abc",
        "[fe80::1%25eth0]",
        "[v1.abc]",
        "[1.2.3.4]",
        "::1",
        long_label.as_str(),
        long_name.as_str(),
    ] {
        assert!(
            auth(raw, false).is_err(),
            "{raw:?} -> {:?}",
            auth(raw, false)
        );
    }
    assert!(parse_authority(b"admin.example.com\xff", None, false).is_err());
    assert!(parse_authority(b"\xc3\xa9", None, false).is_err());
}

fn request(host: &[&str], uri: &str) -> (HeaderMap, http::Uri) {
    let mut m = HeaderMap::new();
    for h in host {
        m.append(header::HOST, HeaderValue::from_str(h).unwrap());
    }
    (m, uri.parse().unwrap())
}

fn target(u: &http::Uri) -> Option<&[u8]> {
    u.authority().map(|a| a.as_str().as_bytes())
}

#[test]
fn the_target_authority_comes_from_the_uri_or_the_raw_absolute_form() {
    let origin: http::Uri = "/x".parse().unwrap();
    assert_eq!(target_authority(&origin, b"/x"), Ok(None));
    assert_eq!(
        target_authority(&origin, b"http://Admin.example.com./x"),
        Ok(Some(&b"Admin.example.com."[..]))
    );
    assert!(target_authority(&origin, b"http:admin.example.com/x").is_err());
    assert!(target_authority(&origin, b"http://admin.example.com\\@x/").is_err());
    let h2: http::Uri = "https://a.example/x".parse().unwrap();
    assert_eq!(target_authority(&h2, b"/x"), Ok(Some(&b"a.example"[..])));
}

#[test]
fn the_target_authority_and_host_must_agree() {
    let f = |host: &[&str], uri: &str| {
        let (m, u) = request(host, uri);
        Forwarding::from_request(false, false, &m, target(&u)).map(|f| f.host().to_string())
    };
    assert_eq!(
        f(&["Admin.example.com."], "/x"),
        Ok("admin.example.com".into())
    );
    assert_eq!(f(&[], "/x"), Ok(String::new()));
    assert_eq!(f(&[""], "/x"), Ok(String::new()));
    // HTTP/2 :authority (or an absolute-form target) without Host.
    assert_eq!(
        f(&[], "http://API.example.com./x"),
        Ok("api.example.com".into())
    );
    // Both, naming the same host once normalised.
    assert_eq!(
        f(&["api.example.com:80"], "http://api.example.com/x"),
        Ok("api.example.com".into())
    );
    assert!(f(&["public.example.com"], "http://admin.example.com/x").is_err());
    assert!(f(&["admin.example.com:8080"], "http://admin.example.com/x").is_err());
    assert!(f(&[""], "http://admin.example.com/x").is_err());
    assert!(f(&["a", "b"], "/x").is_err());
    assert!(f(&["a", "a"], "/x").is_err());
    assert!(f(&["a"], "http://user@a/x").is_err());
}

#[test]
fn a_trusted_peers_proto_and_host_are_kept() {
    let mut m = HeaderMap::new();
    m.insert(header::HOST, HeaderValue::from_static("internal:8080"));
    m.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
    m.insert(
        "x-forwarded-host",
        HeaderValue::from_static("Shop.example.com"),
    );
    let u = None;
    let f = Forwarding::from_request(true, false, &m, u).unwrap();
    assert_eq!(f.proto(), "https");
    assert_eq!(f.forwarded_host().unwrap(), "shop.example.com");
    assert_eq!(f.host(), "internal");
    let f = Forwarding::from_request(false, false, &m, u).unwrap();
    assert_eq!(f.proto(), "http");
    assert_eq!(f.forwarded_host().unwrap(), "internal:8080");
    // Garbage from a trusted peer is replaced, not kept.
    m.insert("x-forwarded-proto", HeaderValue::from_static("javascript"));
    m.insert("x-forwarded-host", HeaderValue::from_static("a b"));
    let f = Forwarding::from_request(true, true, &m, u).unwrap();
    assert_eq!(f.proto(), "https");
    assert_eq!(f.forwarded_host().unwrap(), "internal:8080");
}

fn fwd(lines: &[&[u8]]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for l in lines {
        m.append("forwarded", HeaderValue::from_bytes(l).unwrap());
    }
    m
}

fn fwd_from_lb(lines: &[&[u8]]) -> Result<Option<IpAddr>, BadRequest> {
    client_ip(Some(ip(LB)), &fwd(lines), &nets())
}

#[test]
fn a_trusted_peers_forwarded_names_the_client_when_it_sends_no_xff() {
    for (sent, client) in [
        (&[&b"for=6.6.6.6"[..]][..], "6.6.6.6"),
        (&[b"For=6.6.6.6;proto=https"], "6.6.6.6"),
        (&[b"FOR=\"6.6.6.6:4711\""], "6.6.6.6"),
        (&[b"for=\"[2001:db8::1]\""], "2001:db8::1"),
        (&[b"for=\"[2001:db8::1]:443\";by=10.0.0.1"], "2001:db8::1"),
        (&[b"for=\"[2001:db8::1]:_p1\""], "2001:db8::1"),
        (&[b"for=\"\\6.6.6.6\""], "6.6.6.6"),
        (
            &[b"for=1.1.1.1, for=6.6.6.6;host=\"a,b;c\", for=10.0.0.5"],
            "6.6.6.6",
        ),
        (
            &[b"for=1.1.1.1", b"for=6.6.6.6", b"for=10.0.0.5"],
            "6.6.6.6",
        ),
        (&[b"proto=https;for=6.6.6.6 , , for=10.2.2.2"], "6.6.6.6"),
        // Garbage left of the client's element is never looked at.
        (&[b"for=\"\xff\", for=6.6.6.6"], "6.6.6.6"),
        (&[b"\xff junk;;=, for=6.6.6.6"], "6.6.6.6"),
        // Only trusted nodes: the leftmost.
        (&[b"for=10.3.3.3, for=10.4.4.4"], "10.3.3.3"),
        // No node named: the peer is the client.
        (&[b"proto=https"], LB),
        (&[b""], LB),
        (&[b"for=6.6.6.6, proto=https"], "6.6.6.6"),
    ] {
        assert_eq!(
            fwd_from_lb(sent),
            Ok(Some(ip(client))),
            "{:?}",
            sent.iter()
                .map(|l| String::from_utf8_lossy(l))
                .collect::<Vec<_>>()
        );
    }
    // Never from an untrusted peer.
    assert_eq!(
        client_ip(Some(ip("203.0.113.9")), &fwd(&[b"for=6.6.6.6"]), &nets()),
        Ok(Some(ip("203.0.113.9")))
    );
}

#[test]
fn a_forwarded_client_node_that_is_no_address_is_refused() {
    for bad in [
        &b"for=\"\xff\""[..],
        b"for=\xff",
        b"for=unknown",
        b"for=UNKNOWN",
        b"for=\"unknown\"",
        b"for=_hidden",
        b"for=\"_hidden:80\"",
        b"for=6.6.6.6, for=unknown",
        b"for=6.6.6.6, for=_x, for=10.0.0.2",
        b"for=junk",
        b"for=\"6.6.6.6 7.7.7.7\"",
        b"for=6.6.6.6 7.7.7.7",
        b"for=0x7f.0.0.1",
        b"for=127.1",
        b"for=\"[6.6.6.6]\"",
        b"for=",
        b"for=\"\"",
        b"for=6.6.6.6;for=7.7.7.7",
        b"for=\"6.6.6.6",
        b"for=6.6.6.6, \"",
        b"for=6.6.6.6, junk",
        b"for=6.6.6.6, =x",
        b"for=6.6.6.6, for=10.0.0.9;x",
    ] {
        assert!(
            fwd_from_lb(&[bad]).is_err(),
            "{:?} -> {:?}",
            String::from_utf8_lossy(bad),
            fwd_from_lb(&[bad])
        );
    }
}

#[test]
fn xff_wins_over_forwarded() {
    let mut m = xff(&[b"7.7.7.7"]);
    m.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
    assert_eq!(
        client_ip(Some(ip(LB)), &m, &nets()),
        Ok(Some(ip("7.7.7.7")))
    );
    m.insert("forwarded", HeaderValue::from_static("for=unknown"));
    assert_eq!(
        client_ip(Some(ip(LB)), &m, &nets()),
        Ok(Some(ip("7.7.7.7")))
    );
}

#[test]
fn numeric_hosts_must_be_canonical_dotted_quads() {
    for ok in [
        "127.0.0.9",
        "0.0.0.0",
        "255.255.255.255",
        "10.0.0.1:8080",
        "127.0.0.9.",
    ] {
        assert!(auth(ok, false).is_ok(), "{ok}");
    }
    for bad in [
        "0x7f.0.0.9",
        "0X7F.0.0.9",
        "0177.0.0.9",
        "127.0.0.011",
        "127.0.9",
        "127.9",
        "0x7f000009",
        "2130706441",
        "2130706441:80",
        "127.000.000.009",
        "127.0.0.256",
        "127.0.0.9.9",
        "1.2.3.4.5",
        "a.b.0x1",
        "example.123",
        "127.0.0.0x9",
        "[::ffff:127.0.0.9]",
        "[::ffff:7f00:9]",
    ] {
        assert!(auth(bad, false).is_err(), "{bad} -> {:?}", auth(bad, false));
    }
    // A digit-led label elsewhere is a DNS name like any other.
    assert!(auth("123.example.com", false).is_ok());
    assert!(auth("0x.example.com", false).is_ok());
}

#[test]
fn a_trusted_peers_proto_and_host_lists_keep_the_original() {
    fn host(lines: &[(&'static str, &[u8])]) -> (&'static str, String) {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_static("internal"));
        for (n, v) in lines {
            m.append(*n, HeaderValue::from_bytes(v).unwrap());
        }
        let f = Forwarding::from_request(true, false, &m, None).unwrap();
        (
            f.proto(),
            f.forwarded_host().unwrap().to_str().unwrap().to_string(),
        )
    }
    let p = |v: &[u8]| host(&[("x-forwarded-proto", v)]).0;
    assert_eq!(p(b"https, https"), "https");
    assert_eq!(p(b"https, http"), "https");
    assert_eq!(p(b"http, https"), "http");
    assert_eq!(p(b" HTTPS ,, http"), "https");
    assert_eq!(
        host(&[
            ("x-forwarded-proto", b"https"),
            ("x-forwarded-proto", b"http")
        ])
        .0,
        "https"
    );
    // Any invalid element: the connection's scheme.
    assert_eq!(p(b"https, javascript"), "http");
    assert_eq!(p(b"https \xff"), "http");
    assert_eq!(p(b","), "http");
    // From Forwarded when there is no X-Forwarded-Proto.
    let f = |v: &[u8]| host(&[("forwarded", v)]);
    assert_eq!(f(b"proto=https").0, "https");
    assert_eq!(
        f(b"for=6.6.6.6;Proto=\"HTTPS\", for=10.0.0.1;proto=http").0,
        "https"
    );
    assert_eq!(f(b"proto=https, proto=gopher").0, "http");
    assert_eq!(f(b"proto=https, \"").0, "http");
    assert_eq!(
        host(&[
            ("x-forwarded-proto", b"http"),
            ("forwarded", b"proto=https")
        ])
        .0,
        "http"
    );
    // Hosts.
    let h = |v: &[u8]| host(&[("x-forwarded-host", v)]).1;
    assert_eq!(h(b"api.example.com, lb.internal"), "api.example.com");
    assert_eq!(
        h(b"API.example.com.:80 , lb.internal:8080"),
        "api.example.com"
    );
    assert_eq!(h(b"api.example.com, lb/../x"), "internal");
    assert_eq!(h(b"api.example.com, 0x7f.1"), "internal");
    assert_eq!(
        host(&[
            ("x-forwarded-host", b"a.example"),
            ("x-forwarded-host", b"b.example")
        ])
        .1,
        "a.example"
    );
    assert_eq!(f(b"host=api.example.com").1, "api.example.com");
    assert_eq!(
        f(b"for=1.2.3.4;host=\"API.example.com:8443\", host=lb.internal").1,
        "api.example.com:8443"
    );
    assert_eq!(f(b"host=\"a b\"").1, "internal");
    assert_eq!(
        host(&[
            ("x-forwarded-host", b"x.example"),
            ("forwarded", b"host=y.example")
        ])
        .1,
        "x.example"
    );
    // The default port follows the kept scheme.
    assert_eq!(
        host(&[("forwarded", b"proto=https;host=\"api.example.com:443\"")]).1,
        "api.example.com"
    );
}

#[test]
fn spoofable_headers_by_trust() {
    let mut m = HeaderMap::new();
    for n in [
        "host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-for",
        "x-forwarded",
        "x-original-url",
        "x-host",
        "cf-connecting-ip",
        "x-real_ip",
        "x_forwarded_for",
        "x-http-method-override",
        "x-method-override",
        "x-custom",
        "accept",
    ] {
        m.insert(HeaderName::from_static(n), HeaderValue::from_static("1"));
    }
    let names = |trusted| {
        let mut v: Vec<String> = spoofable_headers(&m, trusted)
            .iter()
            .map(|n| n.as_str().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(true),
        [
            "x-http-method-override",
            "x-method-override",
            "x-real_ip",
            "x_forwarded_for"
        ]
    );
    let untrusted = names(false);
    for n in ["host", "x-custom", "accept"] {
        assert!(!untrusted.iter().any(|u| u == n), "{n}");
    }
    assert_eq!(untrusted.len(), 11, "{untrusted:?}");
    m.clear();
    m.insert("accept", HeaderValue::from_static("1"));
    assert!(spoofable_headers(&m, false).is_empty());
}

#[test]
fn miscased_standard_methods() {
    for m in [
        "post", "Post", "pOST", "get", "Get", "dElEtE", "patch", "options", "head", "Trace",
        "connect", "put",
    ] {
        let m = http::Method::from_bytes(m.as_bytes()).unwrap();
        assert!(is_miscased_method(&m), "{m}");
    }
    for m in [
        "GET", "POST", "DELETE", "PATCH", "PROPFIND", "FOO", "M-SEARCH", "propfind", "posts",
        "GETS",
    ] {
        let m = http::Method::from_bytes(m.as_bytes()).unwrap();
        assert!(!is_miscased_method(&m), "{m}");
    }
}

#[test]
fn only_websocket_upgrades_are_tunnelled() {
    let mut m = HeaderMap::new();
    m.insert("connection", "Upgrade, HTTP2-Settings".parse().unwrap());
    m.insert("upgrade", "h2c".parse().unwrap());
    m.insert(
        "http2-settings",
        "AAMAAABkAARAAAAAAAIAAAAA".parse().unwrap(),
    );
    assert!(!is_upgrade(&m, http::Version::HTTP_11));
    let stripped = hop_by_hop(&m, is_upgrade(&m, http::Version::HTTP_11));
    for n in ["connection", "upgrade", "http2-settings"] {
        assert!(stripped.iter().any(|s| s == n), "{n}: {stripped:?}");
    }
    // HTTP2-Settings is hop-by-hop even when Connection does not list it.
    m.insert("connection", "upgrade".parse().unwrap());
    assert!(hop_by_hop(&m, false).iter().any(|s| s == "http2-settings"));
    m.insert("upgrade", "websocket, h2c".parse().unwrap());
    assert!(!is_upgrade(&m, http::Version::HTTP_11));
    m.insert("upgrade", "WebSocket".parse().unwrap());
    assert!(is_upgrade(&m, http::Version::HTTP_11));
    m.insert("connection", "keep-alive, Upgrade".parse().unwrap());
    assert!(is_upgrade(&m, http::Version::HTTP_11));
    m.remove("connection");
    assert!(!is_upgrade(&m, http::Version::HTTP_11));
    // HTTP/1.0 has no upgrade (RFC 9110 §7.8): both headers are stripped.
    m.insert("connection", "Upgrade".parse().unwrap());
    assert!(is_upgrade(&m, http::Version::HTTP_11));
    assert!(!is_upgrade(&m, http::Version::HTTP_10));
    assert!(!is_upgrade(&m, http::Version::HTTP_2));
    let stripped = hop_by_hop(&m, is_upgrade(&m, http::Version::HTTP_10));
    for n in ["connection", "upgrade"] {
        assert!(stripped.iter().any(|s| s == n), "{n}: {stripped:?}");
    }
}

#[test]
fn forwarded_values() {
    let mut out = Vec::new();
    push_node(&mut out, &crate::util::IpText::new("::1".parse().unwrap()));
    out.push(b' ');
    push_node(
        &mut out,
        &crate::util::IpText::new("192.0.2.1".parse().unwrap()),
    );
    out.push(b' ');
    push_quoted(&mut out, br#"api "x" \ y"#);
    assert_eq!(out, br#""[::1]" 192.0.2.1 "api \"x\" \\ y""#);
}

#[test]
fn forwarding_chains_keep_bytes_from_trusted_peers_only() {
    let m = xff(&[b"\xff", b"1.2.3.4"]);
    assert_eq!(chain_start(&m, "x-forwarded-for", true), b"\xff, 1.2.3.4, ");
    assert!(chain_start(&m, "x-forwarded-for", false).is_empty());
}

#[test]
fn connection_tokens() {
    let mut m = HeaderMap::new();
    m.insert(
        "connection",
        "close-me, keep-alive, Upgrade".parse().unwrap(),
    );
    m.insert("upgrade", "websocket".parse().unwrap());
    assert_eq!(
        connection_listed(&m),
        vec![HeaderName::from_static("close-me")]
    );
    assert!(is_upgrade(&m, http::Version::HTTP_11));
}
