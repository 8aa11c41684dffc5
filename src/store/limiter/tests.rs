use super::*;
use crate::config::units::parse_rate;
use crate::plugins::rate_limit::headers;
use governor::clock::FakeRelativeClock;
use http::HeaderValue;

fn limiter(rate: &str, burst: Option<u32>) -> LocalLimiter<FakeRelativeClock> {
    bounded(rate, burst, 100_000)
}

fn bounded(rate: &str, burst: Option<u32>, max_keys: usize) -> LocalLimiter<FakeRelativeClock> {
    let rate = parse_rate(rate).unwrap();
    let burst = NonZeroU32::new(burst.unwrap_or(rate.count as u32)).unwrap();
    let gcra = Gcra::new(burst, rate.interval()).unwrap();
    LocalLimiter::new(gcra, max_keys, FakeRelativeClock::default())
}

#[test]
fn burst_then_refusal_with_headers() {
    let rl = limiter("1/h", Some(3));
    let states: Vec<_> = (0..3).map(|_| rl.check("a").unwrap()).collect();
    assert_eq!(
        states.iter().map(|s| s.remaining).collect::<Vec<_>>(),
        vec![2, 1, 0]
    );
    assert!(states.iter().all(|s| s.limit == 3));
    let refused = rl.check("a").unwrap_err();
    assert_eq!(refused.remaining, 0);
    assert!(
        refused.retry_after > 3000 && refused.retry_after <= 3600,
        "{refused:?}"
    );
    assert!(
        refused.reset > 3000 + 7200 && refused.reset <= 3 * 3600,
        "{refused:?}"
    );
    // Another key has its own bucket.
    assert_eq!(rl.check("b").unwrap().remaining, 2);
}

#[test]
fn a_refusal_resets_when_the_bucket_is_full_and_retries_after_one_interval() {
    let rl = limiter("1/s", Some(3));
    for _ in 0..3 {
        rl.check("a").unwrap();
    }
    let refused = rl.check("a").unwrap_err();
    // One request's worth comes back in 1 s; all three in 3 s.
    assert_eq!((refused.retry_after, refused.reset), (1, 3));
    let h = headers(&refused, true);
    let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(get("retry-after"), Some(HeaderValue::from(1u64)));
    assert_eq!(get("ratelimit-reset"), Some(HeaderValue::from(3u64)));
    rl.clock.advance(Duration::from_millis(1500));
    assert!(rl.check("a").is_ok());
    assert!(rl.check("a").is_err(), "1.5 s gave back one request only");
}

#[test]
fn distinct_keys_never_grow_the_store_past_max_keys() {
    let rl = bounded("1/h", Some(2), 1000);
    // Every key stays refilling for an hour: none is idle.
    for i in 0..50_000 {
        assert!(rl.check(&format!("k{i}")).is_ok());
        assert!(rl.keys() <= 1000, "{} keys after {i}", rl.keys());
    }
}

#[test]
fn a_single_key_limiter_holds_one_key() {
    let rl = bounded("1/h", Some(1), 1);
    for i in 0..10 {
        assert!(rl.check(&format!("k{i}")).is_ok());
        assert_eq!(rl.keys(), 1);
    }
}

#[test]
fn idle_keys_go_first_and_busy_keys_keep_their_count() {
    let rl = bounded("10/s", Some(5), 100);
    for i in 0..99 {
        rl.check(&format!("idle{i}")).unwrap();
    }
    // The idle keys' buckets are full again after 100 ms; "busy" spends 4 of 5.
    rl.clock.advance(Duration::from_millis(200));
    for _ in 0..4 {
        rl.check("busy").unwrap();
    }
    // A flood of new keys: the full map evicts idle keys, then the least-used.
    for i in 0..1000 {
        let _ = rl.check(&format!("new{i}"));
    }
    assert!(rl.keys() <= 100);
    assert_eq!(
        rl.check("busy").unwrap().remaining,
        0,
        "busy kept its count through the flood"
    );
    assert!(rl.check("busy").is_err());
}

#[test]
fn idle_keys_are_evicted() {
    let rl = limiter("10/s", Some(2));
    for i in 0..100_000 {
        let _ = rl.check(&format!("k{i}"));
    }
    // A key still refilling is kept...
    rl.evict_idle();
    assert_eq!(rl.keys(), 100_000);
    // ...and forgotten once its bucket is full again.
    rl.clock.advance(Duration::from_millis(250));
    let _ = rl.check("busy");
    rl.evict_idle();
    assert_eq!(rl.keys(), 1);
}

#[test]
fn capacity_comes_back_at_the_rate() {
    let rl = limiter("10/s", Some(2));
    assert!(rl.check("a").is_ok() && rl.check("a").is_ok());
    let refused = rl.check("a").unwrap_err();
    assert_eq!(refused.reset, 1);
    rl.clock.advance(Duration::from_millis(100));
    assert_eq!(rl.check("a").unwrap().remaining, 0);
    assert!(rl.check("a").is_err());
}
