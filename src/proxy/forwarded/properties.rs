use super::*;
use crate::runtime::router::{RequestInfo, RouteDef, RouteMatch, Router};
use http::header;
use ipnet::IpNet;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv6Addr};

fn nets() -> Vec<IpNet> {
    vec![
        "10.0.0.0/8".parse().unwrap(),
        "192.168.0.0/16".parse().unwrap(),
        "fd00::/8".parse().unwrap(),
    ]
}

/// Bytes a header value may hold (what Pingora's parser lets through:
/// no CR, LF, NUL or other controls but HTAB).
fn value_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        (0x20u8..=0x7e),
        (0x80u8..=0xff),
        Just(b'\t'),
        Just(b','),
        Just(b' '),
        Just(b'['),
        Just(b']'),
        Just(b':'),
        Just(b'.'),
    ]
}

/// One XFF element: an address (trusted or not, in any spelling the
/// parser accepts), or arbitrary bytes, or nothing.
fn xff_entry() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string().into_bytes()),
        (any::<u8>(), any::<u8>()).prop_map(|(a, b)| format!("10.{a}.{b}.1").into_bytes()),
        (any::<u8>(), any::<u16>()).prop_map(|(a, p)| format!("10.0.{a}.2:{p}").into_bytes()),
        any::<u16>().prop_map(|a| format!("::ffff:10.9.{}.{}", a >> 8, a & 0xff).into_bytes()),
        any::<u16>().prop_map(|a| format!("[fd00::{a:x}]:80").into_bytes()),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", Ipv6Addr::from(s)).into_bytes()),
        Just(b"10.1.1.1".to_vec()),
        Just(Vec::new()),
        proptest::collection::vec(value_byte(), 0..24),
    ]
}

/// A list of XFF header lines, each a list of entries with optional
/// whitespace.
fn xff_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(
        proptest::collection::vec((xff_entry(), 0u8..3), 0..6).prop_map(|entries| {
            let mut line = Vec::new();
            for (i, (e, ws)) in entries.into_iter().enumerate() {
                if i > 0 {
                    line.push(b',');
                }
                line.extend(std::iter::repeat_n(b' ', usize::from(ws)));
                line.extend(e);
            }
            line
        }),
        0..4,
    )
}

fn headers(lines: &[Vec<u8>]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for l in lines {
        if let Ok(v) = HeaderValue::from_bytes(l) {
            m.append("x-forwarded-for", v);
        }
    }
    m
}

/// The entries of the chain, rightmost first (a straightforward reading
/// to check the walk against).
fn entries_rev(m: &HeaderMap) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for v in m.get_all("x-forwarded-for") {
        for e in v.as_bytes().split(|&b| b == b',') {
            let t: Vec<u8> = trim_ows(e).to_vec();
            if !t.is_empty() {
                all.push(t);
            }
        }
    }
    all.reverse();
    all
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Whatever the client sent, a trusted proxy that appends the
    /// address it saw makes that address the client.
    #[test]
    fn the_address_a_trusted_proxy_appends_is_the_client(
        sent in xff_lines(),
        client in any::<[u8; 4]>().prop_filter("untrusted", |o| o[0] != 10 && !(o[0] == 192 && o[1] == 168)),
        lb_line in any::<bool>(),
    ) {
        let client = IpAddr::V4(client.into());
        let mut m = headers(&sent);
        if lb_line || m.is_empty() {
            m.append("x-forwarded-for", HeaderValue::from_str(&client.to_string()).unwrap());
        } else {
            // The proxy appends to the last line it received.
            let mut last: Vec<Vec<u8>> = m.get_all("x-forwarded-for").iter().map(|v| v.as_bytes().to_vec()).collect();
            let tail = last.pop().unwrap_or_default();
            m.remove("x-forwarded-for");
            for l in last {
                m.append("x-forwarded-for", HeaderValue::from_bytes(&l).unwrap());
            }
            let mut tail = tail;
            tail.extend_from_slice(format!(", {client}").as_bytes());
            m.append("x-forwarded-for", HeaderValue::from_bytes(&tail).unwrap());
        }
        // The load balancer in front may itself sit behind trusted hops.
        prop_assert_eq!(client_ip(Some("10.1.1.1".parse().unwrap()), &m, &nets()), Ok(Some(client)));
    }

    /// Arbitrary chains from a trusted peer: the answer is a 400, or the
    /// rightmost untrusted entry, or — only when every entry is a trusted
    /// address — the leftmost of them. Never the peer when a chain was sent.
    #[test]
    fn a_chain_never_yields_a_trusted_address_by_mistake(sent in xff_lines()) {
        let peer: IpAddr = "10.200.0.1".parse().unwrap();
        let m = headers(&sent);
        let got = client_ip(Some(peer), &m, &nets());
        let entries = entries_rev(&m);
        let parsed: Vec<Option<IpAddr>> = entries.iter().map(|e| parse_node(e)).collect();
        let first_untrusted = parsed.iter().position(|p| !p.is_some_and(|ip| is_trusted(ip, &nets())));
        match got {
            Ok(Some(ip)) if is_trusted(ip, &nets()) => {
                prop_assert!(first_untrusted.is_none(), "trusted {ip} from {entries:?}");
                if m.contains_key("x-forwarded-for") {
                    prop_assert_eq!(Some(Some(ip)), parsed.last().copied());
                } else {
                    prop_assert_eq!(ip, peer);
                }
            }
            Ok(Some(ip)) => {
                let i = first_untrusted.expect("an untrusted client");
                prop_assert_eq!(parsed[i], Some(ip));
            }
            Ok(None) => prop_assert!(false, "no client for a peer"),
            Err(_) => {
                prop_assert!(match first_untrusted {
                    Some(i) => parsed[i].is_none(),
                    None => entries.is_empty() && m.contains_key("x-forwarded-for"),
                }, "refused {entries:?}");
            }
        }
    }

    /// An untrusted peer is the client, whatever it sends.
    #[test]
    fn an_untrusted_peer_is_always_the_client(sent in xff_lines(), peer in any::<[u8; 4]>().prop_filter("untrusted", |o| o[0] != 10 && !(o[0] == 192 && o[1] == 168))) {
        let peer = IpAddr::V4(peer.into());
        prop_assert_eq!(client_ip(Some(peer), &headers(&sent), &nets()), Ok(Some(peer)));
    }
}

/// Pieces hosts are made of, chosen to hit the parser's edges.
fn host_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"admin".to_vec()),
        Just(b"ADMIN".to_vec()),
        Just(b"Admin".to_vec()),
        Just(b"example".to_vec()),
        Just(b"com".to_vec()),
        Just(b"public".to_vec()),
        Just(b".".to_vec()),
        Just(b".".to_vec()),
        Just(b":".to_vec()),
        Just(b"80".to_vec()),
        Just(b"443".to_vec()),
        Just(b"0".to_vec()),
        Just(b"abc".to_vec()),
        Just(b"%2e".to_vec()),
        Just(b"%2E".to_vec()),
        Just(b"%61".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b"::1".to_vec()),
        Just(b"@".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"\xff".to_vec()),
        Just("é".as_bytes().to_vec()),
        Just(b"_".to_vec()),
        Just(b"-".to_vec()),
        Just(b"*".to_vec()),
        proptest::collection::vec(value_byte(), 0..4),
    ]
}

/// Spellings of `admin.example.com` an upstream may read as that host.
fn admin_variant() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(any::<bool>(), 17),
        0usize..3,
        prop_oneof![
            Just(String::new()),
            Just(":".to_string()),
            any::<u16>().prop_map(|p| format!(":{p}")),
            Just(":abc".to_string()),
            Just(":80:80".to_string()),
            Just(":080".to_string()),
            Just(": 80".to_string()),
        ],
        prop_oneof![Just(""), Just("%2e"), Just(" "), Just("\t")],
    )
        .prop_map(|(case, dots, port, tail)| {
            let mut h: Vec<u8> = b"admin.example.com"
                .iter()
                .zip(case)
                .map(|(&b, up)| if up { b.to_ascii_uppercase() } else { b })
                .collect();
            h.extend(std::iter::repeat_n(b'.', dots));
            h.extend_from_slice(tail.as_bytes());
            h.extend_from_slice(port.as_bytes());
            h
        })
}

fn host_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        admin_variant(),
        proptest::collection::vec(host_piece(), 0..8).prop_map(|p| p.concat()),
        proptest::collection::vec(any::<u8>(), 0..16),
    ]
}

/// How a lenient upstream (or a human) reads a Host value: lowercased,
/// `%`-escapes decoded, whitespace trimmed, port and trailing dots dropped.
fn lenient_host(raw: &[u8]) -> Vec<u8> {
    let decoded: Vec<u8> = percent_encoding::percent_decode(raw).collect();
    let mut s = trim_ows(&decoded).to_ascii_lowercase();
    if let Some(colon) = s.iter().position(|&b| b == b':') {
        s.truncate(colon);
    }
    let mut s = trim_ows(&s).to_vec();
    while s.last() == Some(&b'.') {
        s.pop();
    }
    s
}

fn router() -> Router {
    Router::new(&[
        RouteDef {
            hosts: vec!["admin.example.com".into()],
            path: "/".into(),
            ..RouteDef::default()
        },
        RouteDef {
            hosts: vec!["*.example.com".into()],
            path: "/".into(),
            ..RouteDef::default()
        },
        RouteDef {
            path: "/".into(),
            ..RouteDef::default()
        },
    ])
    .unwrap()
}

fn route_of(router: &Router, host: &str) -> usize {
    let m = HeaderMap::new();
    match router.find(&RequestInfo {
        host,
        path: "/",
        method: &http::Method::GET,
        headers: &m,
        version: None,
    }) {
        RouteMatch::Found { route, .. } => route,
        other => panic!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// Any bytes as `Host` (or `:authority`): refused, or normalised to a
    /// form that parses to itself; and a value a lenient reader takes for
    /// `admin.example.com` is refused or routed to its route, never to
    /// the catch-all.
    #[test]
    fn no_spelling_of_a_host_routes_around_its_route(raw in host_bytes(), https in any::<bool>()) {
        let router = router();
        let shared = HeaderValue::from_bytes(&raw).ok();
        match parse_authority(&raw, shared.as_ref(), https) {
            Err(_) => {}
            Ok(None) => prop_assert!(raw.is_empty()),
            Ok(Some(a)) => {
                let host = a.host();
                prop_assert!(!host.is_empty());
                prop_assert!(!host.ends_with('.'), "{host}");
                prop_assert!(!host.bytes().any(|b| b.is_ascii_uppercase()), "{host}");
                prop_assert!(host.starts_with('[') || !host.contains(':'), "{host}");
                // Idempotent: the normal form is its own normal form.
                let again = parse_authority(a.as_str().as_bytes(), None, https).unwrap().unwrap();
                prop_assert_eq!(&again, &a);
                let route = route_of(&router, host);
                if lenient_host(&raw) == b"admin.example.com" {
                    prop_assert_eq!(route, 0, "{:?} -> {}", String::from_utf8_lossy(&raw), host);
                }
                if lenient_host(&raw).ends_with(b".example.com") {
                    prop_assert!(route <= 1, "{:?} -> {}", String::from_utf8_lossy(&raw), host);
                }
            }
        }
    }

    /// Host and the request target must name one host: a request never
    /// routes by one and forwards the other.
    #[test]
    fn host_and_target_authority_never_disagree(host in host_bytes(), target in host_bytes()) {
        let Ok(target_s) = std::str::from_utf8(&target) else { return Ok(()) };
        let Ok(uri) = format!("http://{target_s}/x").parse::<http::Uri>() else { return Ok(()) };
        let Ok(hv) = HeaderValue::from_bytes(&host) else { return Ok(()) };
        let mut m = HeaderMap::new();
        m.insert(header::HOST, hv);
        if let Ok(f) = Forwarding::from_request(false, false, &m, uri.authority().map(|a| a.as_str().as_bytes())) {
            let from_host = parse_authority(&host, None, false).unwrap();
            prop_assert_eq!(f.authority.as_ref(), from_host.as_ref());
            let from_target = parse_authority(uri.authority().unwrap().as_str().as_bytes(), None, false).unwrap();
            prop_assert_eq!(f.authority, from_target);
        }
    }
}

/// Beside an `X-Forwarded-For`, arbitrary `Forwarded` bytes play no part
/// in choosing the client (SPEC §3 names `X-Forwarded-For`).
#[test]
fn beside_xff_forwarded_bytes_do_not_pick_the_client() {
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&proptest::collection::vec(value_byte(), 0..64), |fwd| {
            let mut m = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&fwd) {
                m.insert("forwarded", v);
            }
            let lb: IpAddr = "10.1.1.1".parse().unwrap();
            m.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
            prop_assert_eq!(
                client_ip(Some(lb), &m, &nets()),
                Ok(Some("6.6.6.6".parse().unwrap()))
            );
            Ok(())
        })
        .unwrap();
}

/// A `for=` value: addresses (trusted or not, in the spellings RFC 7239
/// allows), and nodes that name no address.
fn for_value() -> impl Strategy<Value = (Vec<u8>, Option<IpAddr>)> {
    let addr = |s: &str, ip: &str| (s.as_bytes().to_vec(), Some(ip.parse::<IpAddr>().unwrap()));
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| {
            let ip = std::net::Ipv4Addr::from(o);
            (ip.to_string().into_bytes(), Some(IpAddr::V4(ip)))
        }),
        any::<[u16; 8]>().prop_map(|s| {
            let ip = Ipv6Addr::from(s);
            (
                format!("\"[{ip}]:443\"").into_bytes(),
                Some(IpAddr::V6(ip).to_canonical()),
            )
        }),
        Just(addr("10.1.2.3", "10.1.2.3")),
        Just(addr("\"10.9.9.9:80\"", "10.9.9.9")),
        Just(addr("\"[fd00::1]\"", "fd00::1")),
        Just(addr("6.6.6.6", "6.6.6.6")),
        Just((b"unknown".to_vec(), None)),
        Just((b"_hidden".to_vec(), None)),
        Just((b"\"\xff\"".to_vec(), None)),
        Just((b"\"_x:_y\"".to_vec(), None)),
        Just((b"junk".to_vec(), None)),
        Just((b"0x7f.1".to_vec(), None)),
    ]
}

/// Well-formed `Forwarded` lines, with what each element's `for=` names
/// (`None`: no `for=`; `Some(None)`: a node that is no address).
#[allow(clippy::type_complexity)]
fn forwarded_lines() -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<Option<Option<IpAddr>>>)> {
    let element = (
        proptest::option::of((
            for_value(),
            prop_oneof![Just("for"), Just("For"), Just("FOR")],
        )),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(node, proto, host)| {
            let mut pairs: Vec<Vec<u8>> = Vec::new();
            if proto {
                pairs.push(b"proto=https".to_vec());
            }
            let named = node.map(|((v, ip), name)| {
                let mut p = format!("{name}=").into_bytes();
                p.extend(v);
                pairs.push(p);
                ip
            });
            if host {
                pairs.push(b"host=\"a.example,;x\"".to_vec());
            }
            (pairs.join(&b";"[..]), named)
        });
    proptest::collection::vec(proptest::collection::vec(element, 1..4), 0..4).prop_map(|lines| {
        let mut out = Vec::new();
        let mut named = Vec::new();
        for l in lines {
            let mut line = Vec::new();
            for (i, (e, n)) in l.into_iter().enumerate() {
                if i > 0 {
                    line.extend_from_slice(b", ");
                }
                if !e.is_empty() {
                    named.push(n);
                }
                line.extend(e);
            }
            out.push(line);
        }
        (out, named)
    })
}

fn forwarded_map(lines: &[Vec<u8>]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for l in lines {
        m.append("forwarded", HeaderValue::from_bytes(l).unwrap());
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Well-formed `Forwarded` from a trusted peer (without
    /// X-Forwarded-For): the same rule as for X-Forwarded-For — the
    /// rightmost node that is not trusted, a 400 when that node is no
    /// address, the leftmost trusted one only when all are trusted.
    #[test]
    fn forwarded_for_follows_the_xff_rule((lines, named) in forwarded_lines()) {
        let peer: IpAddr = "10.200.0.1".parse().unwrap();
        let got = client_ip(Some(peer), &forwarded_map(&lines), &nets());
        let nodes: Vec<Option<IpAddr>> = named.into_iter().flatten().collect();
        let trusted = |n: &Option<IpAddr>| n.is_some_and(|ip| is_trusted(ip, &nets()));
        let want = match nodes.iter().rev().find(|n| !trusted(n)) {
            Some(Some(ip)) => Ok(Some(*ip)),
            Some(None) => Err(()),
            None => Ok(Some(nodes.first().copied().flatten().unwrap_or(peer))),
        };
        prop_assert_eq!(got.map_err(|_| ()), want, "{:?}", lines.iter().map(|l| String::from_utf8_lossy(l)).collect::<Vec<_>>());
    }

    /// Whatever bytes precede it, the node a trusted proxy appends on a
    /// line of its own is the client; appended to the last line, it is
    /// the client or a 400 (the bytes before it left a quoted string
    /// open), never another address.
    #[test]
    fn the_node_a_trusted_proxy_appends_to_forwarded_is_the_client(
        sent in proptest::collection::vec(proptest::collection::vec(value_byte(), 0..32), 0..3),
        client in any::<[u8; 4]>().prop_filter("untrusted", |o| o[0] != 10 && !(o[0] == 192 && o[1] == 168)),
        own_line in any::<bool>(),
    ) {
        let client = IpAddr::V4(client.into());
        let mut lines = sent;
        let appended = format!("for={client};proto=https").into_bytes();
        match lines.last_mut() {
            Some(l) if !own_line => {
                l.extend_from_slice(b", ");
                l.extend_from_slice(&appended);
            }
            _ => lines.push(appended),
        }
        let got = client_ip(Some("10.1.1.1".parse().unwrap()), &forwarded_map(&lines), &nets());
        if own_line {
            prop_assert_eq!(got, Ok(Some(client)));
        } else {
            prop_assert!(got.is_err() || got == Ok(Some(client)), "{got:?}");
        }
    }

    /// Arbitrary bytes as `Forwarded`: a trusted address is the client
    /// only when one was named (the peer only when no `for=` was sent),
    /// and any address found is one the bytes spell.
    #[test]
    fn forwarded_bytes_never_yield_a_trusted_address_by_mistake(
        sent in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![
                4 => value_byte().prop_map(|b| vec![b]),
                1 => Just(b"for=".to_vec()),
                1 => Just(b"For=\"".to_vec()),
                1 => Just(b"10.1.2.3".to_vec()),
                1 => Just(b"6.6.6.6".to_vec()),
                1 => Just(b"[fd00::1]".to_vec()),
                1 => Just(b"\"".to_vec()),
                1 => Just(b";".to_vec()),
                1 => Just(b", ".to_vec()),
            ], 0..16).prop_map(|p| p.concat()),
            1..3,
        ),
    ) {
        let peer: IpAddr = "10.200.0.1".parse().unwrap();
        let got = client_ip(Some(peer), &forwarded_map(&sent), &nets());
        let all: Vec<u8> = sent.concat().to_ascii_lowercase();
        let has = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
        match got {
            Ok(Some(ip)) if ip == peer => {
                // No pair named `for` (outside a quoted string).
                let pair_start = |i: usize| i == 0 || matches!(all[i - 1], b';' | b',' | b' ' | b'\t');
                let named = all.windows(4).enumerate().any(|(i, w)| w == b"for=" && pair_start(i));
                prop_assert!(!named || all.contains(&b'"'), "{:?}", String::from_utf8_lossy(&all));
            }
            Ok(Some(ip)) => {
                let spelled = match ip {
                    IpAddr::V4(v4) => v4.to_string(),
                    IpAddr::V6(v6) => v6.to_string(),
                };
                // Sent as written, or in another spelling of the same address
                // (`::10.1.2.3` is `::a01:203`).
                let sent_as = |w: &[u8]| {
                    std::str::from_utf8(w)
                        .ok()
                        .and_then(|t| t.parse::<IpAddr>().ok())
                        .is_some_and(|a| a.to_canonical() == ip)
                };
                let respelled = all
                    .split(|b| !(b.is_ascii_hexdigit() || matches!(b, b':' | b'.')))
                    .any(sent_as);
                prop_assert!(
                    has(spelled.as_bytes()) || respelled,
                    "{ip} from {:?}",
                    String::from_utf8_lossy(&all)
                );
            }
            Ok(None) => prop_assert!(false, "no client"),
            Err(_) => {}
        }
    }
}
