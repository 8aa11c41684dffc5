//! `circuit_breaker`: stops sending traffic to an upstream that keeps failing.
//! State is kept per upstream (by name) for each breaker definition:
//!
//! * **closed** — outcomes are counted in a sliding window of `window` (ten
//!   buckets, so memory is constant whatever the traffic); the breaker trips
//!   when `failure_rate` is reached with at least `min_requests`, or after
//!   `consecutive_failures` failures in a row;
//! * **open** — requests get a 503 problem with `Retry-After` and never reach
//!   the upstream, for `open_for`;
//! * **half-open** — exactly `half_open_requests` probes are let through; all
//!   succeed → closed, one fails → open again.
//!
//! A failure is a connect error, a timeout, a status in `failure_statuses`, or
//! (with `slow_call`) a response slower than that. 4xx never count. A request
//! that ends without reaching the upstream gives its probe slot back.

use crate::config::{Dur};
use crate::pipeline::{KeyPath, BuildCtx, BuildError, BuildResult, Flow, Order, Plugin, PluginConfig, Reply, RequestCtx, UpstreamOutcome};
use crate::metrics::METRICS;
use pingora::proxy::Session;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use serde::Deserialize;

// ---------------------------------------------------------------------------
// Config: `type = "circuit_breaker"`
// ---------------------------------------------------------------------------

fn default_window() -> Dur {
    Dur::secs(10)
}

fn default_min_requests() -> u32 {
    20
}

fn default_failure_statuses() -> Vec<u16> {
    vec![500, 502, 503, 504]
}

fn default_open_for() -> Dur {
    Dur::secs(30)
}

fn default_half_open() -> u32 {
    3
}

/// `type = "circuit_breaker"`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Trip when failures / requests over `window` reach this (0 < r ≤ 1).
    #[serde(default)]
    pub failure_rate: Option<f64>,
    #[serde(default = "default_window")]
    pub window: Dur,
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// Trip after this many failures in a row.
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    #[serde(default = "default_failure_statuses")]
    pub failure_statuses: Vec<u16>,
    #[serde(default)]
    pub slow_call: Option<Dur>,
    #[serde(default = "default_open_for")]
    pub open_for: Dur,
    #[serde(default = "default_half_open")]
    pub half_open_requests: u32,
}

impl PluginConfig for CircuitBreakerConfig {
    const TYPE: &'static str = "circuit_breaker";
    const ORDER: Order = Order::CircuitBreaker;
    type Plugin = CircuitBreaker;

    fn build(&self, bx: &BuildCtx<'_>) -> BuildResult<CircuitBreaker> {
        CircuitBreaker::new(self, bx)
    }
}


const BUCKETS: u32 = 10;

#[derive(Debug, Clone)]
pub struct Params {
    pub failure_rate: Option<f64>,
    pub window: Duration,
    pub min_requests: u32,
    pub consecutive_failures: Option<u32>,
    pub failure_statuses: Vec<u16>,
    pub slow_call: Option<Duration>,
    pub open_for: Duration,
    pub half_open_requests: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Index of the bucket-length interval this bucket counts.
    epoch: u64,
    total: u32,
    failures: u32,
}

#[derive(Debug)]
enum State {
    Closed {
        buckets: [Bucket; BUCKETS as usize],
        consecutive: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        admitted: u32,
        succeeded: u32,
    },
}

impl State {
    fn closed() -> State {
        State::Closed {
            buckets: [Bucket::default(); BUCKETS as usize],
            consecutive: 0,
        }
    }
    pub fn code(&self) -> i64 {
        match self {
            State::Closed { .. } => 0,
            State::HalfOpen { .. } => 1,
            State::Open { .. } => 2,
        }
    }
}

/// Whether a request was let through as a half-open probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    Normal,
    Probe,
}

/// What happened to an admitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Result_ {
    Success,
    Failure,
    /// Never reached the upstream (refused later, client gone): not counted.
    Cancelled,
}

/// The per-upstream state machines of one breaker definition.
pub struct Breaker {
    params: Params,
    /// Start of time for bucket epochs.
    origin: Instant,
    states: Mutex<HashMap<Arc<str>, State>>,
}

impl Breaker {
    pub fn new(params: Params) -> Self {
        Breaker {
            params,
            origin: Instant::now(),
            states: Mutex::new(HashMap::new()),
        }
    }

    fn bucket_len(&self) -> Duration {
        (self.params.window / BUCKETS).max(Duration::from_millis(1))
    }

    fn epoch(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_nanos() / self.bucket_len().as_nanos())
            as u64
    }

    fn publish(upstream: &str, s: &State) {
        METRICS
            .circuit_state
            .with_label_values(&[upstream])
            .set(s.code());
    }

    /// Let a request through, or say how long until the breaker may close.
    pub fn admit(&self, upstream: &Arc<str>) -> Result<Ticket, Duration> {
        let now = Instant::now();
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let state = states.entry(upstream.clone()).or_insert_with(State::closed);
        match state {
            State::Closed { .. } => Ok(Ticket::Normal),
            State::Open { until } => {
                if now >= *until {
                    *state = State::HalfOpen {
                        admitted: 1,
                        succeeded: 0,
                    };
                    Self::publish(upstream, state);
                    Ok(Ticket::Probe)
                } else {
                    Err(*until - now)
                }
            }
            State::HalfOpen { admitted, .. } => {
                if *admitted < self.params.half_open_requests {
                    *admitted += 1;
                    Ok(Ticket::Probe)
                } else {
                    // The probes are in flight; their outcome decides.
                    Err(Duration::from_secs(1))
                }
            }
        }
    }

    /// Record the outcome of a request `admit` let through.
    pub fn record(&self, upstream: &Arc<str>, ticket: Ticket, result: Result_) {
        let now = Instant::now();
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = states.get_mut(upstream) else {
            return;
        };
        let p = &self.params;
        match (ticket, &mut *state) {
            (
                Ticket::Probe,
                State::HalfOpen {
                    admitted,
                    succeeded,
                },
            ) => match result {
                Result_::Failure => {
                    *state = State::Open {
                        until: now + p.open_for,
                    }
                }
                Result_::Success => {
                    *succeeded += 1;
                    if *succeeded >= p.half_open_requests {
                        *state = State::closed();
                    }
                }
                Result_::Cancelled => *admitted = admitted.saturating_sub(1),
            },
            (
                Ticket::Normal,
                State::Closed {
                    buckets,
                    consecutive,
                },
            ) => {
                let failed = match result {
                    Result_::Cancelled => return,
                    Result_::Failure => true,
                    Result_::Success => false,
                };
                let epoch = self.epoch(now);
                let b = &mut buckets[(epoch % BUCKETS as u64) as usize];
                if b.epoch != epoch {
                    *b = Bucket {
                        epoch,
                        total: 0,
                        failures: 0,
                    };
                }
                b.total += 1;
                *consecutive = if failed { *consecutive + 1 } else { 0 };
                if failed {
                    b.failures += 1;
                }
                let live = buckets
                    .iter()
                    .filter(|b| b.epoch + (BUCKETS as u64) > epoch);
                let (total, failures) =
                    live.fold((0u32, 0u32), |(t, f), b| (t + b.total, f + b.failures));
                let by_rate = p.failure_rate.is_some_and(|r| {
                    failed
                        && total >= p.min_requests
                        && total > 0
                        && failures as f64 / total as f64 >= r
                });
                let by_streak = p
                    .consecutive_failures
                    .is_some_and(|n| failed && *consecutive >= n);
                if by_rate || by_streak {
                    *state = State::Open {
                        until: now + p.open_for,
                    };
                }
            }
            // Late outcomes from before a transition do not count.
            _ => return,
        }
        Self::publish(upstream, state);
    }

    /// 0 closed, 1 half-open, 2 open (an open breaker past `open_for` is reported
    /// half-open: the next request will probe).
    pub fn state_of(&self, upstream: &str) -> Option<i64> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.get(upstream).map(|s| match s {
            State::Open { until } if Instant::now() >= *until => 1,
            s => s.code(),
        })
    }

    pub fn classify(&self, o: &UpstreamOutcome) -> Result_ {
        let failed = o.error
            || o.status
                .is_some_and(|s| self.params.failure_statuses.contains(&s))
            || self.params.slow_call.is_some_and(|slow| o.elapsed >= slow);
        if failed {
            Result_::Failure
        } else {
            Result_::Success
        }
    }
}

pub struct CircuitBreaker {
    name: String,
    breaker: Breaker,
}

impl CircuitBreaker {
    pub fn new(c: &CircuitBreakerConfig, bx: &BuildCtx<'_>) -> BuildResult<Self> {
        let mut errs = Vec::new();
        let mut e = |k: &str, m: &str| {
            errs.push(BuildError {
                path: KeyPath::default().key(k),
                message: m.into(),
            })
        };
        if let Some(r) = c.failure_rate {
            if !(r > 0.0 && r <= 1.0) {
                e("failure_rate", "must be greater than 0 and at most 1");
            }
        }
        if c.consecutive_failures == Some(0) {
            e("consecutive_failures", "must be at least 1");
        }
        if c.window.0.is_zero() {
            e("window", "must be greater than zero");
        }
        if c.open_for.0.is_zero() {
            e("open_for", "must be greater than zero");
        }
        if c.half_open_requests == 0 {
            e("half_open_requests", "must be at least 1");
        }
        if c.min_requests == 0 {
            e("min_requests", "must be at least 1");
        }
        for (i, s) in c.failure_statuses.iter().enumerate() {
            if !(100..600).contains(s) {
                e(&format!("failure_statuses[{i}]"), "must be an HTTP status");
            } else if (400..500).contains(s) {
                e(
                    &format!("failure_statuses[{i}]"),
                    "client errors (4xx) never count as upstream failures",
                );
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        // Neither trigger written: a failure rate of one half, as in the SPEC's example.
        let failure_rate = match (c.failure_rate, c.consecutive_failures) {
            (None, None) => Some(0.5),
            (r, _) => r,
        };
        Ok(CircuitBreaker {
            name: bx.name.to_string(),
            breaker: Breaker::new(Params {
                failure_rate,
                window: c.window.0,
                min_requests: c.min_requests,
                consecutive_failures: c.consecutive_failures,
                failure_statuses: c.failure_statuses.clone(),
                slow_call: c.slow_call.map(|d| d.0),
                open_for: c.open_for.0,
                half_open_requests: c.half_open_requests,
            }),
        })
    }

}

impl Plugin for CircuitBreaker {
    /// The upstream and ticket of an admitted request, until its outcome is recorded.
    type State = Option<(Arc<str>, Ticket)>;

    async fn request(&self, _session: &mut Session, ctx: &mut RequestCtx, state: &mut Self::State) -> pingora::Result<Flow> {
        let Some(upstream) = ctx.route().map(|r| r.upstream.name.clone()) else {
            return Ok(Flow::Continue);
        };
        match self.breaker.admit(&upstream) {
            Ok(ticket) => {
                *state = Some((upstream, ticket));
                Ok(Flow::Continue)
            }
            Err(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                tracing::debug!(plugin = %self.name, upstream = %upstream, "circuit open: request refused");
                Ok(Flow::Respond(Reply::Problem {
                    status: 503,
                    detail: "the upstream service is failing; the circuit breaker is open".into(),
                    headers: vec![(
                        http::header::RETRY_AFTER,
                        http::HeaderValue::from(secs.max(1)),
                    )],
                }))
            }
        }
    }

    fn upstream_response(&self, _resp: &pingora::http::ResponseHeader, ctx: &mut RequestCtx, state: &mut Self::State) {
        // Record as soon as the final response head is in (not at the end of
        // the request): the next request must already see the new state.
        self.finish(ctx, state);
    }

    fn finish(&self, ctx: &mut RequestCtx, state: &mut Self::State) {
        let Some((upstream, ticket)) = state.take() else {
            return;
        };
        let result = match &ctx.upstream.outcome {
            Some(o) => self.breaker.classify(o),
            None => Result_::Cancelled,
        };
        self.breaker.record(&upstream, ticket, result);
    }

    fn circuit_state(&self, upstream: &str) -> Option<i64> {
        self.breaker.state_of(upstream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            failure_rate: Some(0.5),
            window: Duration::from_secs(10),
            min_requests: 4,
            consecutive_failures: None,
            failure_statuses: vec![500, 502, 503, 504],
            slow_call: None,
            open_for: Duration::from_secs(30),
            half_open_requests: 2,
        }
    }

    fn up() -> Arc<str> {
        Arc::from("payments")
    }

    fn run(b: &Breaker, r: Result_) {
        let t = b.admit(&up()).expect("admitted");
        b.record(&up(), t, r);
    }

    #[tokio::test(start_paused = true)]
    async fn trips_on_failure_rate_with_minimum_then_recovers() {
        let b = Breaker::new(params());
        run(&b, Result_::Failure);
        run(&b, Result_::Failure);
        run(&b, Result_::Failure);
        assert_eq!(
            b.state_of("payments"),
            Some(0),
            "below min_requests it stays closed"
        );
        run(&b, Result_::Success);
        assert_eq!(b.state_of("payments"), Some(0), "a success never trips it");
        run(&b, Result_::Failure);
        assert_eq!(b.state_of("payments"), Some(2), "4 failures of 5 ≥ 0.5");
        let wait = b.admit(&up()).unwrap_err();
        assert_eq!(wait, Duration::from_secs(30));

        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(b.admit(&up()).is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        // Half-open: exactly two probes.
        let p1 = b.admit(&up()).unwrap();
        let p2 = b.admit(&up()).unwrap();
        assert_eq!((p1, p2), (Ticket::Probe, Ticket::Probe));
        assert!(
            b.admit(&up()).is_err(),
            "a third request waits for the probes"
        );
        b.record(&up(), p1, Result_::Success);
        assert_eq!(b.state_of("payments"), Some(1));
        b.record(&up(), p2, Result_::Success);
        assert_eq!(b.state_of("payments"), Some(0));
        assert_eq!(b.admit(&up()), Ok(Ticket::Normal));
    }

    #[tokio::test(start_paused = true)]
    async fn one_failed_probe_reopens() {
        let b = Breaker::new(Params {
            consecutive_failures: Some(2),
            failure_rate: None,
            ..params()
        });
        run(&b, Result_::Failure);
        run(&b, Result_::Success);
        run(&b, Result_::Failure);
        assert_eq!(b.state_of("payments"), Some(0), "the streak was broken");
        run(&b, Result_::Failure);
        assert_eq!(b.state_of("payments"), Some(2));
        tokio::time::advance(Duration::from_secs(30)).await;
        let p = b.admit(&up()).unwrap();
        b.record(&up(), p, Result_::Failure);
        assert_eq!(b.state_of("payments"), Some(2));
        assert_eq!(b.admit(&up()).unwrap_err(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_probes_give_their_slot_back_and_old_failures_expire() {
        let b = Breaker::new(params());
        for _ in 0..3 {
            run(&b, Result_::Failure);
        }
        // Those three fall out of the 10 s window.
        tokio::time::advance(Duration::from_secs(11)).await;
        run(&b, Result_::Failure);
        run(&b, Result_::Success);
        run(&b, Result_::Success);
        run(&b, Result_::Failure);
        assert_eq!(b.state_of("payments"), Some(2), "2 of 4 in the window");
        tokio::time::advance(Duration::from_secs(30)).await;
        let p1 = b.admit(&up()).unwrap();
        let _p2 = b.admit(&up()).unwrap();
        b.record(&up(), p1, Result_::Cancelled);
        assert_eq!(
            b.admit(&up()),
            Ok(Ticket::Probe),
            "the cancelled probe's slot is free again"
        );
    }

    #[test]
    fn classification() {
        let b = Breaker::new(Params {
            slow_call: Some(Duration::from_secs(2)),
            ..params()
        });
        let o = |status: Option<u16>, error: bool, ms: u64| UpstreamOutcome {
            status,
            error,
            elapsed: Duration::from_millis(ms),
        };
        assert_eq!(b.classify(&o(Some(200), false, 10)), Result_::Success);
        assert_eq!(b.classify(&o(Some(404), false, 10)), Result_::Success);
        assert_eq!(b.classify(&o(Some(503), false, 10)), Result_::Failure);
        assert_eq!(b.classify(&o(None, true, 10)), Result_::Failure);
        assert_eq!(b.classify(&o(Some(200), false, 2500)), Result_::Failure);
    }
}
