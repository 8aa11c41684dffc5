use super::local::RECORD_OVERHEAD;
use super::redis::{decode, encode};
use super::*;

fn resp(body: &str) -> Stored {
    Stored {
        status: 201,
        headers: vec![],
        body: Bytes::from(body.to_string()),
    }
}

#[tokio::test(start_paused = true)]
async fn record_lifecycle() {
    let s = LocalRecords::new(1 << 20);
    let ttl = Duration::from_secs(60);
    let fp = [1u8; 32];
    let Begin::Proceed(t) = s.begin("k", fp, ttl) else {
        panic!()
    };
    assert!(matches!(s.begin("k", fp, ttl), Begin::InFlight));
    assert!(matches!(s.begin("k", [2u8; 32], ttl), Begin::Mismatch));
    assert!(s.complete("k", t, resp("ok"), ttl));
    match s.begin("k", fp, ttl) {
        Begin::Replay(r) => assert_eq!(r.body, "ok"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.begin("k", [2u8; 32], ttl), Begin::Mismatch));
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(
        matches!(s.begin("k", [2u8; 32], ttl), Begin::Proceed(_)),
        "expired records are forgotten"
    );
}

#[tokio::test(start_paused = true)]
async fn abort_releases_and_stale_tokens_do_nothing() {
    let s = LocalRecords::new(1 << 20);
    let ttl = Duration::from_secs(60);
    let Begin::Proceed(t1) = s.begin("k", [1; 32], ttl) else {
        panic!()
    };
    s.abort("k", t1);
    let Begin::Proceed(t2) = s.begin("k", [1; 32], ttl) else {
        panic!()
    };
    // The first request's late completion must not overwrite the second's marker.
    assert!(!s.complete("k", t1, resp("late"), ttl));
    s.abort("k", t1);
    assert!(matches!(s.begin("k", [1; 32], ttl), Begin::InFlight));
    assert!(s.complete("k", t2, resp("second"), ttl));
}

#[tokio::test(start_paused = true)]
async fn memory_is_bounded() {
    let s = LocalRecords::new(10_000);
    let ttl = Duration::from_secs(60);
    for i in 0..1000 {
        let k = format!("k{i}");
        let Begin::Proceed(t) = s.begin(&k, [0; 32], ttl) else {
            panic!()
        };
        s.complete(&k, t, resp(&"x".repeat(100)), ttl);
    }
    assert!(s.bytes() <= 10_000, "{}", s.bytes());
    assert!(s.len() < 100);
    // The newest survive.
    assert!(matches!(s.begin("k999", [0; 32], ttl), Begin::Replay(_)));
    tokio::time::advance(Duration::from_secs(61)).await;
    s.expire();
    assert_eq!((s.len(), s.bytes()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn an_unknown_outcome_locks_the_key_for_its_duration() {
    let s = LocalRecords::new(1 << 20);
    let ttl = Duration::from_secs(3600);
    let Begin::Proceed(t) = s.begin("k", [1; 32], ttl) else {
        panic!()
    };
    s.lock_unknown("k", t, Duration::from_secs(60));
    match s.begin("k", [1; 32], ttl) {
        Begin::Locked(left) => assert_eq!(left, Duration::from_secs(60)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.begin("k", [2; 32], ttl), Begin::Mismatch));
    // The late completion of the locked request changes nothing.
    assert!(!s.complete("k", t, resp("late"), ttl));
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(matches!(s.begin("k", [1; 32], ttl), Begin::Locked(_)));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(matches!(s.begin("k", [1; 32], ttl), Begin::Proceed(_)));
}

#[tokio::test(start_paused = true)]
async fn a_full_store_evicts_stored_responses_but_never_in_flight_or_locked_keys() {
    let s = LocalRecords::new(20 * (RECORD_OVERHEAD + 2 * 4));
    let ttl = Duration::from_secs(60);
    let mut tokens = Vec::new();
    let mut i = 0;
    loop {
        let k = format!("k{i:03}");
        match s.begin(&k, [0; 32], ttl) {
            Begin::Proceed(t) => tokens.push((k, t)),
            Begin::Full => break,
            other => panic!("{other:?}"),
        }
        i += 1;
    }
    assert!(s.bytes() <= 20 * (RECORD_OVERHEAD + 8), "{}", s.bytes());
    let held = tokens.len();
    assert!(held >= 10, "{held}");
    // Every marker is still there: refused, not forgotten.
    for (k, _) in &tokens {
        assert!(matches!(s.begin(k, [0; 32], ttl), Begin::InFlight), "{k}");
    }
    // Locks survive too; a released key makes room for a new one.
    let (k0, t0) = tokens[0].clone();
    s.lock_unknown(&k0, t0, Duration::from_secs(60));
    assert!(matches!(s.begin(&k0, [0; 32], ttl), Begin::Locked(_)));
    let (k1, t1) = tokens[1].clone();
    s.abort(&k1, t1);
    assert!(matches!(s.begin("new", [0; 32], ttl), Begin::Proceed(_)));
    assert!(matches!(s.begin(&k0, [0; 32], ttl), Begin::Locked(_)));
}

#[tokio::test(start_paused = true)]
async fn distinct_keys_never_grow_the_store_past_its_bound() {
    let max = 256 << 10;
    let s = LocalRecords::new(max);
    let ttl = Duration::from_secs(60);
    for i in 0..50_000 {
        let k = format!("{i:0>200}");
        if let Begin::Proceed(t) = s.begin(&k, [0; 32], ttl) {
            s.complete(&k, t, resp("{}"), ttl);
        }
        assert!(s.bytes() <= max);
    }
    assert!(s.len() <= max / (RECORD_OVERHEAD + 400));
}

#[test]
fn redis_encoding_round_trips() {
    let s = Stored {
        status: 201,
        headers: vec![
            (
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/json"),
            ),
            (
                HeaderName::from_static("x-id"),
                HeaderValue::from_static("a:b"),
            ),
        ],
        body: Bytes::from_static(b"{\"id\":1}\r\n\r\nbinary\x00"),
    };
    let fp = hex::encode([9u8; 32]);
    let d = decode(&encode(&fp, &s)).unwrap();
    assert_eq!(
        (d.status, d.headers.clone(), d.body.clone()),
        (s.status, s.headers, s.body)
    );
    assert!(decode(b"Dshort").is_none());
}
