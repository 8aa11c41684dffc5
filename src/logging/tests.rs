use super::*;

#[test]
fn timestamps_match_rfc3339() {
    use time::format_description::well_known::Rfc3339;
    // Around the epoch, leap days, century and 400-year rules, now-ish, far future.
    for secs in [
        0u64,
        951_782_400,   // 2000-02-29
        4_107_456_000, // 2100-02-28
        4_107_542_399, // 2100-03-01 minus a second
        1_795_615_009,
        253_402_300_799, // 9999-12-31T23:59:59
    ] {
        let t = UNIX_EPOCH + Duration::new(secs, 123_456_789);
        let mut ours = String::new();
        write_timestamp(&mut ours, t).unwrap();
        let theirs = time::OffsetDateTime::from(t).format(&Rfc3339).unwrap();
        // `time` prints nanoseconds; ours stops at microseconds.
        assert_eq!(ours, format!("{}Z", &theirs[..theirs.len() - 4]), "{secs}");
    }
}

/// Captures what the subscriber writes.
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<Mutex<Vec<u8>>>);
impl io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A subscriber writing `JsonLines` into the capture returned with it.
fn json_capture() -> (Capture, impl Subscriber + Send + Sync) {
    let out = Capture::default();
    let sink = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .event_format(JsonLines)
        .finish();
    (out, subscriber)
}

#[test]
fn json_lines_parse_and_carry_every_field() {
    let (out, subscriber) = json_capture();
    tracing::subscriber::with_default(subscriber, || {
        let weird = "quote \" backslash \\ newline \n tab \t bell \u{7} é ✓";
        tracing::warn!(
            target: "tollgate::access",
            text = weird,
            shown = %weird,
            debugged = ?weird,
            n = 42u64,
            neg = -7i64,
            ok = true,
            ms = 1.5f64,
            nan = f64::NAN,
            "the message"
        );
    });
    let text = String::from_utf8(out.0.lock().clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    let weird = "quote \" backslash \\ newline \n tab \t bell \u{7} é ✓";
    assert_eq!(v["text"], weird);
    assert_eq!(v["shown"], weird);
    assert_eq!(v["debugged"], format!("{weird:?}"));
    assert_eq!(v["n"], 42);
    assert_eq!(v["neg"], -7);
    assert_eq!(v["ok"], true);
    assert_eq!(v["ms"], 1.5);
    assert!(v["nan"].is_null());
    assert_eq!(v["message"], "the message");
    assert_eq!(v["level"], "WARN");
    assert_eq!(v["target"], "tollgate::access");
    let ts = v["timestamp"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
        "{ts}"
    );
}

#[test]
fn pans_are_masked() {
    assert_eq!(
        mask_pans("/v1/cards/4111111111111111/charges"),
        "/v1/cards/************1111/charges"
    );
    assert_eq!(mask_pans("/a/5500005555555559"), "/a/************5559");
    // Not Luhn-valid, or too short/long: left alone.
    assert_eq!(
        mask_pans("/orders/4111111111111112"),
        "/orders/4111111111111112"
    );
    assert_eq!(mask_pans("/orders/123456789012"), "/orders/123456789012");
    assert_eq!(
        mask_pans("/t/12345678901234567890"),
        "/t/12345678901234567890"
    );
    assert!(matches!(
        mask_pans("/plain/path"),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn pans_with_separators_are_masked() {
    for (input, masked) in [
        ("/c/4111-1111-1111-1111", "/c/****-****-****-1111"),
        ("/c/4111 1111 1111 1111/x", "/c/**** **** **** 1111/x"),
        ("/c/4111.1111.1111.1111", "/c/****.****.****.1111"),
        (
            "/c/4111%201111%201111%201111",
            "/c/****%20****%20****%201111",
        ),
        (
            "/c/4111%2d1111%2E1111%2D1111",
            "/c/****%2d****%2E****%2D1111",
        ),
        (
            "/c%2D4111-1111-1111-1111%2Dx",
            "/c%2D****-****-****-1111%2Dx",
        ),
        ("/o/716-446655440006", "/o/***-********0006"),
        // Amex grouping (4-6-5), mixed separators, a 19-digit PAN.
        ("/c/3782-822463-10005", "/c/****-******-*0005"),
        ("/c/5500 0055.5555-5559", "/c/**** ****.****-5559"),
        ("/c/6011-0009-9013-9424-009", "/c/****-****-****-***4-009"),
        // Next to other numbers: the card's window is still found.
        ("/c/12 4111 1111 1111 1111", "/c/12 **** **** **** 1111"),
        ("/c/4111-1111-1111-1111-12", "/c/****-****-****-1111-12"),
        // Two cards in one path.
        (
            "/a/4111111111111111/b/5500-0055-5555-5559",
            "/a/************1111/b/****-****-****-5559",
        ),
    ] {
        assert_eq!(mask_pans(input), masked, "{input}");
    }
}

#[test]
fn masking_only_replaces_digits_on_any_input() {
    // Deterministic pseudo-random paths over the bytes that matter here.
    const ALPHABET: &[u8] = b"0123456789012345678901234567890123456789-. %2Dax/";
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut masked = 0;
    for _ in 0..20_000 {
        let len = (next() % 80) as usize;
        let input: String = (0..len)
            .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize] as char)
            .collect();
        let out = mask_pans(&input);
        assert_eq!(out.len(), input.len(), "{input}");
        for (a, b) in input.bytes().zip(out.bytes()) {
            assert!(
                a == b || (a.is_ascii_digit() && b == b'*'),
                "{input} -> {out}"
            );
        }
        masked += usize::from(matches!(out, std::borrow::Cow::Owned(_)));
    }
    assert!(
        masked > 0,
        "the inputs never held a card: the test tests nothing"
    );
}

#[test]
fn ordinary_numbers_are_left_alone() {
    for input in [
        // Not Luhn-valid with separators.
        "/c/4111-1111-1111-1112",
        // Dates, times, versions, addresses: too few digits.
        "/r/2026-12-05/10.20.30",
        "/r/2026-12-05T10:30:00Z",
        "/ip/192.168.100.200",
        // Separators that do not join groups: doubled, or other characters.
        "/c/4111--1111--1111--1111",
        "/c/4111/1111/1111/1111",
        "/c/4111_1111_1111_1111",
        "/c/4111%2F1111%2F1111%2F1111",
        "/c/4111%20%201111%201111%201111",
        // Digit runs of a UUID or another word are no card, even when they make a
        // Luhn-valid 15 digits together (716446655440006).
        "/o/550e8400-e29b-41d4-a716-446655440006",
        "/o/x716-446655440006",
        "/o/716-446655440006y",
        // More than 19 digits in one run is not a card.
        "/t/41111111111111111111-1111",
    ] {
        assert!(
            matches!(mask_pans(input), std::borrow::Cow::Borrowed(_)),
            "{input} -> {}",
            mask_pans(input)
        );
    }
}

/// The access line written directly is the line `JsonLines` writes for the
/// same event, field for field, escapes and masking included.
#[test]
fn the_direct_access_line_is_the_json_lines_event() {
    let lines = [
        Access {
            request_id: "01JD\"x",
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            route: "payments",
            method: "GET",
            path: "/cards/4111111111111111/charge\n",
            status: 201,
            duration_ms: 0.125,
            upstream: "127.0.0.1:9000",
            bytes: 18_446_744_073_709_551_615,
            consumer: "acme",
            client_ip: Some("::1".parse().unwrap()),
            error: Some("upstream \\ reset"),
        },
        Access {
            request_id: "",
            trace_id: "",
            route: "",
            method: "POST",
            path: "/",
            status: 0,
            duration_ms: f64::NAN,
            upstream: "",
            bytes: 0,
            consumer: "",
            client_ip: None,
            error: None,
        },
    ];
    for a in &lines {
        let (out, subscriber) = json_capture();
        tracing::subscriber::with_default(subscriber, || access_event(a));
        let theirs = String::from_utf8(out.0.lock().clone()).unwrap();
        let mut ours = String::new();
        access_json(&mut ours, a, SystemTime::now());
        // Timestamps differ by the time between the two.
        let strip = |l: &str| l[l.find("\"level\"").unwrap()..].to_string();
        assert_eq!(strip(&ours), strip(&theirs));
        let v: serde_json::Value = serde_json::from_str(ours.trim_end()).unwrap();
        assert!(!ours.contains("4111111111111111"), "{ours}");
        assert_eq!(v["status"], u64::from(a.status));
    }
}
