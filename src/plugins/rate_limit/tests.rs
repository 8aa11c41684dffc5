use super::key::bucket_key;
use super::*;
use crate::config::units::parse_rate;
use governor::clock::FakeRelativeClock;

fn limiter(rate: &str, burst: Option<u32>) -> RateLimit<FakeRelativeClock> {
    bounded(rate, burst, 100_000)
}

fn bounded(rate: &str, burst: Option<u32>, max_keys: usize) -> RateLimit<FakeRelativeClock> {
    let cfg = crate::config::load_str(
        "[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n",
        None,
        std::path::Path::new("."),
    )
    .unwrap();
    let bx = BuildCtx {
        name: "rl",
        config: &cfg,
    };
    RateLimit::with_clock(
        &RateLimitConfig {
            rate: parse_rate(rate).unwrap(),
            burst,
            key: LimitKey::default(),
            backend: StateBackend::Local,
            on_backend_error: None,
            max_keys,
        },
        &bx,
        FakeRelativeClock::default(),
    )
    .ok()
    .unwrap()
}

#[test]
fn long_and_binary_key_values_are_hashed_and_never_collide_with_short_ones() {
    let short = bucket_key('h', b"tenant-a");
    assert_eq!(short, "h:tenant-a");
    let long = vec![b'x'; 64 * 1024];
    let k = bucket_key('h', &long);
    assert_eq!(k.len(), 2 + 64, "{k}");
    assert!(k.starts_with("h#"));
    assert_ne!(k, bucket_key('h', &long[1..]));
    assert_eq!(
        bucket_key('h', &[b'a'; MAX_KEY_VALUE]).len(),
        2 + MAX_KEY_VALUE
    );
    assert!(bucket_key('h', &[b'a'; MAX_KEY_VALUE + 1]).starts_with("h#"));
    // Two different invalid byte strings are two buckets (no lossy U+FFFD).
    assert_ne!(bucket_key('h', b"\xff"), bucket_key('h', b"\xfe"));
    // Anything but visible ASCII is hashed, however short: no invisible
    // character reaches a Redis key.
    for odd in [
        &b"tab\there"[..],
        "\u{200b}zw".as_bytes(),
        b"a b",
        b"nul\0",
        b"del\x7f",
        "caf\u{e9}".as_bytes(),
    ] {
        let k = bucket_key('h', odd);
        assert!(k.starts_with("h#") && k.len() == 66, "{odd:?} -> {k:?}");
        assert!(k.bytes().all(|b| (0x21..0x7f).contains(&b)), "{k:?}");
    }
    assert_ne!(bucket_key('h', b"a b"), bucket_key('h', b"a\tb"));
    assert_eq!(bucket_key('h', b"Tenant_42.x~"), "h:Tenant_42.x~");
    // A short value that looks like a digest is still its own key.
    let hexed = k[2..].to_string();
    assert_ne!(bucket_key('h', hexed.as_bytes()), k);
}

#[test]
fn max_keys_must_be_positive() {
    let cfg = crate::config::load_str(
        "[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n",
        None,
        std::path::Path::new("."),
    )
    .unwrap();
    let bx = BuildCtx {
        name: "rl",
        config: &cfg,
    };
    let errs = RateLimit::new(
        &RateLimitConfig {
            rate: parse_rate("1/s").unwrap(),
            burst: None,
            key: LimitKey::default(),
            backend: StateBackend::Local,
            on_backend_error: None,
            max_keys: 0,
        },
        &bx,
    )
    .err()
    .unwrap();
    assert_eq!(errs[0].path.to_string(), "max_keys");
}

#[test]
fn default_burst_is_the_rate_count() {
    let rl = limiter("5/min", None);
    assert_eq!(rl.check("k").unwrap().limit, 5);
}

#[test]
fn merge_keeps_the_tightest() {
    let a = LimitState {
        limit: 10,
        remaining: 3,
        reset: 5,
        retry_after: 0,
    };
    let b = LimitState {
        limit: 100,
        remaining: 50,
        reset: 1,
        retry_after: 0,
    };
    assert_eq!(LimitState::merge(Some(a), b), a);
    assert_eq!(LimitState::merge(Some(b), a), a);
    assert_eq!(LimitState::merge(None, b), b);
}

#[test]
fn key_sources() {
    assert_eq!(KeySource::parse("ip"), Some(KeySource::Ip));
    assert_eq!(
        KeySource::parse("claim:tenant"),
        Some(KeySource::Claim("tenant".into()))
    );
    assert!(KeySource::parse("header:bad header").is_none());
    assert!(KeySource::parse("claim:").is_none());
    assert!(KeySource::parse("cookie").is_none());
}

/// `key` is a closed set: a bad one is refused when the file is read, at its key.
#[test]
fn a_bad_key_is_refused_at_its_key() {
    let errs = crate::config::load_str(
        "[plugins.rl]\ntype = \"rate_limit\"\nrate = \"1/s\"\nkey = \"header:bad header\"\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\"rl\"]\n",
        None,
        std::path::Path::new("."),
    )
    .err()
    .unwrap();
    let found: Vec<_> = errs
        .0
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str(), e.line_col.map(|l| l.0)))
        .collect();
    assert_eq!(
        found,
        [(
            "plugins.rl.key",
            "invalid key \"header:bad header\": expected \"ip\", \"consumer\", \"header:NAME\", \"claim:NAME\", \"route\" or \"global\"",
            Some(4)
        )]
    );
    let k = LimitKey::parse("header:X-Tenant").unwrap();
    assert_eq!(
        (k.source.clone(), k.as_str()),
        (
            KeySource::Header(HeaderName::from_static("x-tenant")),
            "header:X-Tenant"
        )
    );
    assert_eq!(LimitKey::default().source, KeySource::Ip);
}
