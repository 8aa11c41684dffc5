use super::*;
use rand::{Rng, SeedableRng};

const MAX: usize = 100;

fn check(head: &str) -> Progress {
    validate(head.as_bytes(), MAX)
}

fn ok(head: &str) -> Summary {
    match check(head) {
        Progress::Complete(s) => s,
        other => panic!("{head:?} should be valid, got {other:?}"),
    }
}

fn refused(head: &str, why: Invalid) {
    assert_eq!(check(head), Progress::Invalid(why), "{head:?}");
}

/// A head with `fields` (each `Name: value`) after a Host line.
fn with(fields: &[&str]) -> String {
    let mut s = String::from("POST /pay HTTP/1.1\r\nHost: api.test\r\n");
    for f in fields {
        s.push_str(f);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s
}

#[test]
fn valid_heads_pass() {
    let s = ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        s,
        Summary {
            end: 27,
            fields: 1,
            content_length: None,
            chunked: false,
            http10: false
        }
    );
    let s = ok(&with(&["Content-Length: 5"]));
    assert_eq!(s.content_length, Some(5));
    assert_eq!(s.fields, 2);
    assert!(ok(&with(&["Transfer-Encoding: chunked"])).chunked);
    assert!(ok(&with(&["transfer-encoding:  Chunked \t"])).chunked);
    assert_eq!(ok(&with(&["Content-Length: 007"])).content_length, Some(7));
    assert_eq!(
        ok(&with(&["Content-Length: 18446744073709551615"])).content_length,
        Some(u64::MAX)
    );
    // HTTP/1.0 needs no Host.
    assert!(ok("GET /x HTTP/1.0\r\n\r\n").http10);
    // Empty lines before the request line are ignored (RFC 9112 §2.2).
    assert_eq!(ok("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").end, 31);
    ok("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    ok("GET http://api.test:8080/x?y=1 HTTP/1.1\r\nHost: api.test:8080\r\n\r\n");
    ok("GET HTTPS://api.test HTTP/1.1\r\nHost: api.test\r\n\r\n");
    ok("GET /a/b%2F..;x=1?q=a+b&r=%20~!$'()*,:@[]{}|^`\\\" HTTP/1.1\r\nHost: a\r\n\r\n");
    ok("DELETE /x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n");
    ok("GET / HTTP/1.1\r\nHost:\r\n\r\n");
    ok("M-SEARCH / HTTP/1.1\r\nHost: a\r\n\r\n");
    ok(&with(&[
        "X-Empty:",
        "X-Tabs:\tv\t",
        "X-Obs-Text: caf\u{e9}",
        "X-All: !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        "!#$%&'*+-.^_`|~09azAZ: token name",
        "Upgrade: websocket",
        "Connection: Upgrade",
    ]));
    // Bytes after the head (a body, a pipelined request) are not looked at.
    let head = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
    let s = validate(format!("{head}abc\0\n\rGET").as_bytes(), MAX);
    assert_eq!(
        s,
        Progress::Complete(Summary {
            end: head.len(),
            fields: 2,
            content_length: Some(3),
            chunked: false,
            http10: false
        })
    );
}

#[test]
fn incomplete_heads_are_partial() {
    for head in [
        "",
        "\r\n",
        "GET / HTTP/1.1",
        "GET / HTTP/1.1\r",
        "GET / HTTP/1.1\r\nHost: a\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r",
    ] {
        assert_eq!(check(head), Progress::Partial, "{head:?}");
    }
}

#[test]
fn line_endings_must_be_crlf() {
    refused("GET / HTTP/1.1\nHost: a\n\n", Invalid::LineEnding);
    refused("GET / HTTP/1.1\r\nHost: a\n\r\n", Invalid::LineEnding);
    refused("GET / HTTP/1.1\r\nHost: a\r\n\n", Invalid::LineEnding);
    refused("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Invalid::LineEnding);
    // LF inside a value ends the line without CR.
    refused(&with(&["X-A: one\ntwo"]), Invalid::LineEnding);
    // A bare CR is a control character.
    refused(&with(&["X-A: one\rtwo"]), Invalid::FieldValue);
    refused("GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", Invalid::Version);
}

#[test]
fn request_line_shape() {
    refused("GET /\r\nHost: a\r\n\r\n", Invalid::RequestLine);
    refused("GET\r\nHost: a\r\n\r\n", Invalid::RequestLine);
    refused(" / HTTP/1.1\r\nHost: a\r\n\r\n", Invalid::Method);
    refused("G\0T / HTTP/1.1\r\nHost: a\r\n\r\n", Invalid::Method);
    refused("GE\tT / HTTP/1.1\r\nHost: a\r\n\r\n", Invalid::Method);
    refused("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", Invalid::Method);
    for v in [
        "HTTP/1.2",
        "HTTP/2.0",
        "http/1.1",
        "HTTP/1.1 ",
        "HTTP/1",
        "HTTP/1.10",
        "HTTP/0.9",
        "",
    ] {
        refused(&format!("GET / {v}\r\nHost: a\r\n\r\n"), Invalid::Version);
    }
    refused("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Invalid::Version);
    refused(
        "CONNECT api.test:443 HTTP/1.1\r\nHost: api.test\r\n\r\n",
        Invalid::Connect,
    );
    refused("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", Invalid::Connect);
}

#[test]
fn request_target() {
    for t in [
        "/a#frag",
        "#",
        "/a b",
        "/a\tb",
        "/a\0b",
        "/a\x7fb",
        "/a\x01",
        "/caf\u{e9}",
        "*",
        "a/b",
        "api.test:443",
        "ftp://a/b",
        "http://",
        "http:///x",
        "http://user@host/x",
        "http://a b/",
        "http://a/b#c",
    ] {
        refused(
            &format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n"),
            Invalid::Target,
        );
    }
    // Two spaces: an empty-looking target with a space in it.
    refused("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Invalid::Target);
}

#[test]
fn header_lines() {
    refused(&with(&["X-A: one", " folded"]), Invalid::ObsFold);
    refused(&with(&["X-A: one", "\tfolded"]), Invalid::ObsFold);
    refused("GET / HTTP/1.1\r\n Host: a\r\n\r\n", Invalid::ObsFold);
    for f in [
        "X-A : v",
        "X-A\t: v",
        ": v",
        "X A: v",
        "X\0A: v",
        "X-A",
        "X-A v",
        "X(A): v",
        "X\u{e9}: v",
        "X\x7f: v",
    ] {
        refused(&with(&[f]), Invalid::FieldName);
    }
    for f in [
        "X-A: a\0b",
        "X-A: \0",
        "X-A: a\x01",
        "X-A: a\x1b[0m",
        "X-A: \x7f",
    ] {
        refused(&with(&[f]), Invalid::FieldValue);
    }
}

#[test]
fn content_length() {
    for v in [
        "+5",
        "-5",
        "5,6",
        "5, 5",
        "5 5",
        "",
        " ",
        "0x5",
        "5a",
        "1e3",
        "18446744073709551616",
        "99999999999999999999999",
    ] {
        refused(
            &with(&[&format!("Content-Length: {v}")]),
            Invalid::ContentLength,
        );
    }
    refused(
        &with(&["Content-Length: 5", "Content-Length: 6"]),
        Invalid::ContentLengthRepeated,
    );
    refused(
        &with(&["Content-Length: 5", "content-length: 5"]),
        Invalid::ContentLengthRepeated,
    );
}

#[test]
fn transfer_encoding() {
    for v in [
        "chunked, chunked",
        "chunked,chunked",
        "xchunked",
        "chunkedx",
        "identity",
        "gzip",
        "gzip, chunked",
        "chunked, gzip",
        "",
        "chunked;q=1",
        "\"chunked\"",
    ] {
        refused(
            &with(&[&format!("Transfer-Encoding: {v}")]),
            Invalid::TransferEncoding,
        );
    }
    refused(
        &with(&["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"]),
        Invalid::TransferEncoding,
    );
    refused(
        &with(&["Transfer-Encoding: chunked", "Content-Length: 5"]),
        Invalid::ContentLengthAndTransferEncoding,
    );
    refused(
        &with(&["Content-Length: 5", "Transfer-Encoding: chunked"]),
        Invalid::ContentLengthAndTransferEncoding,
    );
    refused(
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        Invalid::TransferEncodingHttp10,
    );
}

#[test]
fn host() {
    refused("GET / HTTP/1.1\r\nX-A: b\r\n\r\n", Invalid::HostMissing);
    refused(
        "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
        Invalid::HostRepeated,
    );
    for h in [
        "a b",
        "a/b",
        "a@b",
        "a?b",
        "a#b",
        "a\\b",
        "caf\u{e9}",
        "a\"b",
        "<a>",
    ] {
        refused(
            &format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n"),
            Invalid::HostInvalid,
        );
    }
}

#[test]
fn too_many_fields_is_refused_as_soon_as_it_is_seen() {
    let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..MAX {
        head.push_str(&format!("X-{i}: v\r\n"));
    }
    // 101 fields, and the head is not even complete.
    assert_eq!(check(&head), Progress::Invalid(Invalid::TooManyFields));
    assert_eq!(Invalid::TooManyFields.status(), 431);
    let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..MAX - 1 {
        head.push_str(&format!("X-{i}: v\r\n"));
    }
    head.push_str("\r\n");
    assert_eq!(ok(&head).fields, MAX);
}

#[test]
fn every_refusal_is_a_400_with_a_detail() {
    use Invalid::*;
    for e in [
        LineEnding,
        RequestLine,
        Method,
        Connect,
        Target,
        Version,
        ObsFold,
        FieldName,
        FieldValue,
        ContentLength,
        ContentLengthRepeated,
        TransferEncoding,
        TransferEncodingHttp10,
        ContentLengthAndTransferEncoding,
        HostMissing,
        HostRepeated,
        HostInvalid,
    ] {
        assert_eq!(e.status(), 400);
        assert!(!e.detail().is_empty());
    }
}

/// Fed in pieces, the scanner reaches the same verdict as on the whole head.
fn in_pieces(head: &[u8], cuts: &[usize]) -> Progress {
    let mut s = HeadScanner::new(MAX);
    for &c in cuts {
        match s.feed(&head[..c]) {
            Progress::Partial => {}
            done => return done,
        }
    }
    s.feed(head)
}

#[test]
fn incremental_feeding_agrees_with_one_shot() {
    let heads = [
        with(&["Content-Length: 5", "X-A: b"]),
        with(&["Transfer-Encoding: chunked", "Content-Length: 5"]),
        "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nbody".to_string(),
        "GET / HTTP/1.1\r\nHost: a\n\r\n".to_string(),
        with(&["X-A: a\0b"]),
    ];
    for head in heads {
        let b = head.as_bytes();
        let whole = validate(b, MAX);
        let bytewise: Vec<usize> = (0..b.len()).collect();
        assert_eq!(in_pieces(b, &bytewise), whole, "{head:?} byte by byte");
        assert_eq!(in_pieces(b, &[b.len() / 3, b.len() / 2]), whole, "{head:?}");
    }
}

const SEEDS: &[&str] = &[
    "GET /a?b=c HTTP/1.1\r\nHost: api.test\r\nAccept: */*\r\n\r\n",
    "POST /pay HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nIdempotency-Key: k\r\n\r\nhello",
    "POST /pay HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "GET http://a:1/x HTTP/1.0\r\nX: y\r\n\r\n",
];

/// Random mutations of valid heads: the scanner never panics, its verdict does not
/// depend on how the bytes arrive, and whatever it accepts, httparse (Pingora's
/// parser) frames identically: same end of head, same number of fields.
#[test]
fn random_mutations_never_panic_and_agree_with_httparse() {
    const INTERESTING: &[u8] = b"\r\n\t :,;#/?@\0\x7f\x80\xff0123456789aAzZ-+\"\\";
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7011_6a7e);
    let mut accepted = 0;
    for round in 0..30_000 {
        let mut buf = SEEDS[round % SEEDS.len()].as_bytes().to_vec();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..=buf.len());
            let byte = if rng.gen_bool(0.7) {
                INTERESTING[rng.gen_range(0..INTERESTING.len())]
            } else {
                rng.gen()
            };
            match rng.gen_range(0..4) {
                0 if at < buf.len() => buf[at] = byte,
                1 if at < buf.len() => {
                    buf.remove(at);
                }
                2 => buf.insert(at, byte),
                _ => buf.truncate(at),
            }
        }
        let whole = validate(&buf, MAX);
        let cut = rng.gen_range(0..=buf.len());
        assert_eq!(
            in_pieces(&buf, &[cut]),
            whole,
            "{:?}",
            buf.escape_ascii().to_string()
        );
        let Progress::Complete(s) = whole else {
            continue;
        };
        accepted += 1;
        assert!(s.end <= buf.len());
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(end)) => {
                assert_eq!(end, s.end, "{:?}", buf.escape_ascii().to_string());
                assert_eq!(req.headers.len(), s.fields);
            }
            // httparse refuses some visible ASCII in targets that Pingora then
            // escapes and parses again (`escape_illegal_request_line`).
            Err(httparse::Error::Token) => {}
            other => panic!(
                "accepted by the scanner, httparse says {other:?}: {:?}",
                buf.escape_ascii().to_string()
            ),
        }
    }
    assert!(
        accepted > 1_000,
        "the mutations hardly ever produced a valid head: {accepted}"
    );
}

fn chunked(body: &[u8]) -> Result<(usize, bool), ChunkError> {
    let mut c = ChunkedBody::new();
    let n = c.feed(body)?;
    Ok((n, c.is_done()))
}

#[test]
fn valid_chunked_bodies() {
    for body in [
        &b"0\r\n\r\n"[..],
        b"5\r\nhello\r\n0\r\n\r\n",
        b"5;ext=1\r\nhello\r\n0\r\n\r\n",
        b"5 ;a=\"q \\\" x\"; b\r\nhello\r\n0;last\r\n\r\n",
        b"5\t;x\r\nhello\r\n000\r\n\r\n",
        b"A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
        b"000000000000000F\r\n0123456789abcde\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX-Trailer: t\r\nX-Empty:\r\n\r\n",
        // Data is not looked at: CRLF, NUL, anything.
        b"6\r\n\r\n0\r\n\0\r\n0\r\n\r\n",
    ] {
        assert_eq!(
            chunked(body),
            Ok((body.len(), true)),
            "{:?}",
            body.escape_ascii().to_string()
        );
    }
    // What follows the body is not consumed.
    let body = b"1\r\na\r\n0\r\n\r\n";
    let mut next = body.to_vec();
    next.extend_from_slice(b"GET / HTTP/1.1\r\n\0");
    assert_eq!(chunked(&next), Ok((body.len(), true)));
    // Incomplete but fine so far.
    for body in [
        &b""[..],
        b"5",
        b"5\r",
        b"5\r\nhel",
        b"5\r\nhello\r",
        b"5\r\nhello\r\n0\r\nX: y",
    ] {
        assert_eq!(
            chunked(body),
            Ok((body.len(), false)),
            "{:?}",
            body.escape_ascii().to_string()
        );
    }
    // A size up to u64::MAX is a size (the body limit refuses it later).
    assert_eq!(chunked(b"ffffffffffffffff\r\nab"), Ok((20, false)));
}

#[test]
fn invalid_chunked_bodies() {
    use ChunkError::*;
    for (body, why) in [
        (&b"\r\nhello\r\n0\r\n\r\n"[..], Size),
        (b";x\r\n", Size),
        (b"-5\r\n", Size),
        (b"+5\r\n", Size),
        (b"0x5\r\n", Size),
        (b"5 5\r\n", Size),
        (b"5 \r\n", Size),
        (b" 5\r\n", Size),
        (b"g\r\n", Size),
        (b"5\0\r\n", Size),
        (b"5\nhello", Size),
        (b"10000000000000000\r\n", Size),
        (b"00000000000000005\r\n", Size),
        (b"5;a\0\r\n", Extension),
        (b"5;a\nb\r\n", Extension),
        (b"5;a\rb\r\n", LineEnding),
        (b"5\r\r\n", LineEnding),
        (b"3\r\nhello\r\n", LineEnding),
        (b"5\r\nhello\n0\r\n\r\n", LineEnding),
        (b"5\r\nhello\r\n0\r\n\n", Trailer),
        (b"0\r\nnot a field\r\n\r\n", Trailer),
        (b"0\r\n folded: x\r\n\r\n", Trailer),
        (b"0\r\nX : y\r\n\r\n", Trailer),
        (b"0\r\nX: a\0b\r\n\r\n", Trailer),
        (b"0\r\nX: a\nb\r\n\r\n", Trailer),
        (b"0\r\nX: y\n\r\n", Trailer),
    ] {
        assert_eq!(
            chunked(body),
            Err(why),
            "{:?}",
            body.escape_ascii().to_string()
        );
    }
    let long = format!("5;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
    assert_eq!(chunked(long.as_bytes()), Err(Extension));
    let big = format!("0\r\n{}", "X: y\r\n".repeat(MAX_TRAILERS / 6 + 1));
    assert_eq!(chunked(big.as_bytes()), Err(TrailersTooLarge));
}

/// Random mutations of chunked bodies: no panic, the verdict does not depend on how
/// the bytes are split, and every size line accepted is one httparse reads the same.
#[test]
fn chunked_mutations_never_panic_and_do_not_depend_on_reads() {
    const SEEDS: &[&[u8]] = &[
        b"5\r\nhello\r\n0\r\n\r\n",
        b"3;a=b\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n",
    ];
    const INTERESTING: &[u8] = b"\r\n\t ;:=\"0159afAFxX-+\0\x7f\x80";
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xc4_0000_0b0d);
    for round in 0..30_000 {
        let mut buf = SEEDS[round % SEEDS.len()].to_vec();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..=buf.len());
            let byte = if rng.gen_bool(0.7) {
                INTERESTING[rng.gen_range(0..INTERESTING.len())]
            } else {
                rng.gen()
            };
            match rng.gen_range(0..3) {
                0 if at < buf.len() => buf[at] = byte,
                1 if at < buf.len() => {
                    buf.remove(at);
                }
                _ => buf.insert(at, byte),
            }
        }
        let whole = chunked(&buf);
        let cut = rng.gen_range(0..=buf.len());
        let mut c = ChunkedBody::new();
        let split = c.feed(&buf[..cut]).and_then(|n| {
            if c.is_done() {
                return Ok((n, true));
            }
            let m = c.feed(&buf[cut..])?;
            Ok((n + m, c.is_done()))
        });
        assert_eq!(
            split,
            whole,
            "{:?} cut at {cut}",
            buf.escape_ascii().to_string()
        );
        // A first size line we accept, httparse accepts with the same size.
        let mut c = ChunkedBody::new();
        if let Some(lf) = buf.iter().position(|&b| b == b'\n') {
            if c.feed(&buf[..=lf]).is_ok() {
                match httparse::parse_chunk_size(&buf) {
                    Ok(httparse::Status::Complete((end, size))) => {
                        assert_eq!(end, lf + 1);
                        assert_eq!(size, c.size);
                    }
                    other => panic!(
                        "accepted, httparse says {other:?}: {:?}",
                        buf.escape_ascii().to_string()
                    ),
                }
            }
        }
    }
}
