use super::*;

// ---------------------------------------------------------------------------
// Per-upstream breakers (the `circuit_breaker` plugin's policy).
// ---------------------------------------------------------------------------

fn params() -> Policy {
    Policy {
        failure_rate: Some(FailureRate {
            ratio: 0.5,
            window: Duration::from_secs(10),
            min_requests: 4,
        }),
        consecutive_failures: None,
        open_for: Duration::from_secs(30),
        probes: 2,
    }
}

fn up() -> Arc<str> {
    Arc::from("payments")
}

fn run(b: &BreakerSet, r: Outcome, now: Instant) {
    b.admit(&up(), now).expect("admitted").finish(r, now);
}

/// `state_of("payments")` as the metric's code.
fn code(b: &BreakerSet, now: Instant) -> Option<i64> {
    b.state_of("payments", now).map(CircuitState::code)
}

#[test]
fn trips_on_failure_rate_with_minimum_then_recovers() {
    let t0 = Instant::now();
    let b = BreakerSet::new(params(), t0);
    run(&b, Outcome::Failure, t0);
    run(&b, Outcome::Failure, t0);
    run(&b, Outcome::Failure, t0);
    assert_eq!(code(&b, t0), Some(0), "below min_requests it stays closed");
    run(&b, Outcome::Success, t0);
    assert_eq!(code(&b, t0), Some(0), "a success never trips it");
    run(&b, Outcome::Failure, t0);
    assert_eq!(code(&b, t0), Some(2), "4 failures of 5 ≥ 0.5");
    let wait = b.admit(&up(), t0).unwrap_err();
    assert_eq!(wait, Duration::from_secs(30));

    assert!(b.admit(&up(), t0 + Duration::from_secs(29)).is_err());
    let t = t0 + Duration::from_secs(30);
    // Half-open: exactly two probes.
    let p1 = b.admit(&up(), t).unwrap();
    let p2 = b.admit(&up(), t).unwrap();
    assert_eq!((p1.is_probe(), p2.is_probe()), (true, true));
    assert!(
        b.admit(&up(), t).is_err(),
        "a third request waits for the probes"
    );
    p1.finish(Outcome::Success, t);
    assert_eq!(code(&b, t), Some(1));
    p2.finish(Outcome::Success, t);
    assert_eq!(code(&b, t), Some(0));
    assert_eq!(b.admit(&up(), t).map(|p| p.is_probe()), Ok(false));
}

#[test]
fn one_failed_probe_reopens() {
    let t0 = Instant::now();
    let b = BreakerSet::new(
        Policy {
            consecutive_failures: Some(2),
            failure_rate: None,
            ..params()
        },
        t0,
    );
    run(&b, Outcome::Failure, t0);
    run(&b, Outcome::Success, t0);
    run(&b, Outcome::Failure, t0);
    assert_eq!(code(&b, t0), Some(0), "the streak was broken");
    run(&b, Outcome::Failure, t0);
    assert_eq!(code(&b, t0), Some(2));
    let t = t0 + Duration::from_secs(30);
    let p = b.admit(&up(), t).unwrap();
    p.finish(Outcome::Failure, t);
    assert_eq!(code(&b, t), Some(2));
    assert_eq!(b.admit(&up(), t).unwrap_err(), Duration::from_secs(30));
}

#[test]
fn cancelled_probes_give_their_slot_back_and_old_failures_expire() {
    let t0 = Instant::now();
    let b = BreakerSet::new(params(), t0);
    for _ in 0..3 {
        run(&b, Outcome::Failure, t0);
    }
    // Those three fall out of the 10 s window.
    let t1 = t0 + Duration::from_secs(11);
    run(&b, Outcome::Failure, t1);
    run(&b, Outcome::Success, t1);
    run(&b, Outcome::Success, t1);
    run(&b, Outcome::Failure, t1);
    assert_eq!(code(&b, t1), Some(2), "2 of 4 in the window");
    let t2 = t1 + Duration::from_secs(30);
    let p1 = b.admit(&up(), t2).unwrap();
    let _p2 = b.admit(&up(), t2).unwrap();
    p1.finish(Outcome::Cancelled, t2);
    assert_eq!(
        b.admit(&up(), t2).map(|p| p.is_probe()),
        Ok(true),
        "the cancelled probe's slot is free again"
    );
}

#[test]
fn each_key_has_its_own_breaker_and_an_unused_one_has_no_state() {
    let t0 = Instant::now();
    let b = BreakerSet::new(
        Policy {
            consecutive_failures: Some(1),
            failure_rate: None,
            ..params()
        },
        t0,
    );
    assert_eq!(code(&b, t0), None);
    run(&b, Outcome::Failure, t0);
    let other: Arc<str> = Arc::from("ledger");
    assert!(b.admit(&other, t0).is_ok_and(|p| !p.is_probe()));
    assert_eq!(b.state_of("ledger", t0), Some(CircuitState::Closed));
    assert_eq!(code(&b, t0), Some(2));
    // Open past `open_for` reads half-open: the next call probes.
    assert_eq!(code(&b, t0 + Duration::from_secs(30)), Some(1));
}

#[test]
fn a_dropped_call_is_not_counted() {
    let t0 = Instant::now();
    let b = BreakerSet::new(
        Policy {
            consecutive_failures: Some(2),
            failure_rate: None,
            ..params()
        },
        t0,
    );
    run(&b, Outcome::Failure, t0);
    drop(b.admit(&up(), t0).unwrap());
    run(&b, Outcome::Failure, t0);
    assert_eq!(
        code(&b, t0),
        Some(2),
        "the streak went on past the dropped call"
    );
}

// ---------------------------------------------------------------------------
// One breaker (the `forward_auth` policy: a streak, one probe).
// ---------------------------------------------------------------------------

fn streak(threshold: u32, cool_down: Duration) -> Arc<Breaker> {
    Arc::new(Breaker::new(
        Policy {
            consecutive_failures: Some(threshold),
            failure_rate: None,
            open_for: cool_down,
            probes: 1,
        },
        Instant::now(),
    ))
}

#[test]
fn breaker_opens_after_consecutive_failures_and_probes_after_the_cool_down() {
    let b = streak(3, Duration::from_secs(10));
    let t0 = Instant::now();
    // Successes reset the count: failures must be consecutive.
    b.admit(t0).unwrap().finish(Outcome::Failure, t0);
    b.admit(t0).unwrap().finish(Outcome::Failure, t0);
    b.admit(t0).unwrap().finish(Outcome::Success, t0);
    b.admit(t0).unwrap().finish(Outcome::Failure, t0);
    b.admit(t0).unwrap().finish(Outcome::Failure, t0);
    assert!(!b.is_open(t0));
    b.admit(t0).unwrap().finish(Outcome::Failure, t0);
    assert!(b.is_open(t0));

    let t1 = t0 + Duration::from_secs(4);
    assert_eq!(b.admit(t1).err(), Some(Duration::from_secs(6)));

    // After the cool-down one probe goes through; others wait for it.
    let t2 = t0 + Duration::from_secs(10);
    let probe = b.admit(t2).unwrap();
    assert!(b.admit(t2).is_err());
    probe.finish(Outcome::Failure, t2);
    assert!(b.admit(t2 + Duration::from_secs(9)).is_err());

    let t3 = t2 + Duration::from_secs(10);
    let probe = b.admit(t3).unwrap();
    probe.finish(Outcome::Success, t3);
    assert!(!b.is_open(t3));
    assert!(b.admit(t3).is_ok());
    // Closed again: it takes `threshold` new failures to reopen.
    b.admit(t3).unwrap().finish(Outcome::Failure, t3);
    b.admit(t3).unwrap().finish(Outcome::Failure, t3);
    assert!(b.admit(t3).is_ok());
}

#[test]
fn an_abandoned_probe_lets_the_next_call_probe() {
    let b = streak(1, Duration::from_secs(10));
    let t0 = Instant::now();
    b.admit(t0).unwrap().finish(Outcome::Failure, t0);
    let t1 = t0 + Duration::from_secs(10);
    let probe = b.admit(t1).unwrap();
    assert!(b.admit(t1).is_err());
    drop(probe);
    let probe = b.admit(t1).unwrap();
    probe.finish(Outcome::Success, t1);
    assert!(!b.is_open(t1));
}

#[test]
fn late_results_of_calls_admitted_before_the_trip_change_nothing() {
    let b = streak(1, Duration::from_secs(10));
    let t0 = Instant::now();
    let early = b.admit(t0).unwrap();
    b.admit(t0).unwrap().finish(Outcome::Failure, t0);
    assert!(b.is_open(t0));
    early.finish(Outcome::Success, t0);
    assert!(b.is_open(t0));
}
