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
//!
//! The state machine is [`crate::breaker`] (a [`BreakerSet`] keyed by upstream
//! name, publishing `tollgate_circuit_state`); this plugin says what a failure
//! is ([`Failures`]) and answers for an open breaker.

use crate::breaker::{BreakerSet, CircuitState, FailureRate, Outcome, Permit, Policy};
use crate::config::Dur;
use crate::pipeline::{
    BuildCtx, BuildError, BuildResult, Flow, Order, Plugin, PluginConfig, Reply, RequestCtx,
    Series, UpstreamOutcome,
};
use crate::util::retry_after;
use pingora::proxy::Session;
use std::time::{Duration, Instant};

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

/// What counts as a failed request: `failure_statuses`, `slow_call`, and
/// connect errors and timeouts.
#[derive(Debug, Clone)]
pub struct Failures {
    pub statuses: Vec<u16>,
    pub slow_call: Option<Duration>,
}

impl Failures {
    pub fn classify(&self, o: &UpstreamOutcome) -> Outcome {
        let failed = o.error
            || o.status.is_some_and(|s| self.statuses.contains(&s))
            || self.slow_call.is_some_and(|slow| o.elapsed >= slow);
        if failed {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }
}

pub struct CircuitBreaker {
    name: String,
    /// One breaker per upstream name.
    breakers: BreakerSet,
    failures: Failures,
}

impl CircuitBreaker {
    pub fn new(c: &CircuitBreakerConfig, bx: &BuildCtx<'_>) -> BuildResult<Self> {
        let mut errs = Vec::new();
        let mut e = |k: &str, m: &str| errs.push(BuildError::at(k, m));
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
            let message = if !(100..600).contains(s) {
                "must be an HTTP status"
            } else if (400..500).contains(s) {
                "client errors (4xx) never count as upstream failures"
            } else {
                continue;
            };
            errs.push(BuildError::at_index("failure_statuses", i, message));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        // Neither trigger written: a failure rate of one half, as in the SPEC's example.
        let failure_rate = match (c.failure_rate, c.consecutive_failures) {
            (None, None) => Some(0.5),
            (r, _) => r,
        };
        let policy = Policy {
            consecutive_failures: c.consecutive_failures,
            failure_rate: failure_rate.map(|ratio| FailureRate {
                ratio,
                window: c.window.0,
                min_requests: c.min_requests,
            }),
            open_for: c.open_for.0,
            probes: c.half_open_requests,
        };
        Ok(CircuitBreaker {
            name: bx.name.to_string(),
            breakers: BreakerSet::new(policy, Instant::now()),
            failures: Failures {
                statuses: c.failure_statuses.clone(),
                slow_call: c.slow_call.map(|d| d.0),
            },
        })
    }
}

impl Plugin for CircuitBreaker {
    /// The permit of an admitted request, until its outcome is recorded (a
    /// request state dropped with it unrecorded cancels it).
    type State = Option<Permit>;

    async fn request(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        state: &mut Self::State,
    ) -> pingora::Result<Flow> {
        let Some(upstream) = ctx
            .route()
            .and_then(|r| r.upstream.as_ref())
            .map(|u| u.name.clone())
        else {
            return Ok(Flow::Continue);
        };
        match self.breakers.admit(&upstream, Instant::now()) {
            Ok(permit) => {
                *state = Some(permit);
                Ok(Flow::Continue)
            }
            Err(wait) => {
                tracing::debug!(plugin = %self.name, upstream = %upstream, "circuit open: request refused");
                Ok(Flow::Respond(Reply::Problem {
                    status: 503,
                    detail: "the upstream service is failing; the circuit breaker is open".into(),
                    headers: vec![(http::header::RETRY_AFTER, retry_after(wait))],
                }))
            }
        }
    }

    fn upstream_response(
        &self,
        _resp: &pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
        state: &mut Self::State,
    ) {
        // Record as soon as the final response head is in (not at the end of
        // the request): the next request must already see the new state.
        self.finish(ctx, state);
    }

    fn finish(&self, ctx: &mut RequestCtx, state: &mut Self::State) {
        let Some(permit) = state.take() else {
            return;
        };
        let outcome = match &ctx.upstream.outcome {
            Some(o) => self.failures.classify(o),
            None => Outcome::Cancelled,
        };
        permit.finish(outcome, Instant::now());
    }

    fn series(&self) -> Vec<Series> {
        vec![Series::CircuitState]
    }

    fn circuit_state(&self, upstream: &str) -> Option<i64> {
        self.breakers
            .state_of(upstream, Instant::now())
            .map(CircuitState::code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(toml: &str) -> BuildResult<CircuitBreaker> {
        let c: CircuitBreakerConfig = toml::from_str(toml).expect("parses");
        let config = crate::config::load_str(
            "[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n",
            None,
            std::path::Path::new("."),
        )
        .expect("minimal config");
        CircuitBreaker::new(
            &c,
            &BuildCtx {
                name: "cb",
                config: &config,
            },
        )
    }

    #[test]
    fn build_errors_name_their_key() {
        let Err(errs) = build(
            "failure_rate = 1.5\nconsecutive_failures = 0\nwindow = \"0s\"\nopen_for = \"0s\"\n\
             half_open_requests = 0\nmin_requests = 0\nfailure_statuses = [500, 404, 600]\n",
        ) else {
            panic!("expected build errors");
        };
        let paths: Vec<String> = errs.iter().map(|e| e.path.to_string()).collect();
        assert_eq!(
            paths,
            [
                "failure_rate",
                "consecutive_failures",
                "window",
                "open_for",
                "half_open_requests",
                "min_requests",
                "failure_statuses[1]",
                "failure_statuses[2]",
            ]
        );
        assert!(build("").is_ok());
        assert!(build("consecutive_failures = 3\nfailure_statuses = [502]\n").is_ok());
    }

    #[test]
    fn classification() {
        let b = Failures {
            statuses: vec![500, 502, 503, 504],
            slow_call: Some(Duration::from_secs(2)),
        };
        let o = |status: Option<u16>, error: bool, ms: u64| UpstreamOutcome {
            status,
            error,
            elapsed: Duration::from_millis(ms),
        };
        assert_eq!(b.classify(&o(Some(200), false, 10)), Outcome::Success);
        assert_eq!(b.classify(&o(Some(404), false, 10)), Outcome::Success);
        assert_eq!(b.classify(&o(Some(503), false, 10)), Outcome::Failure);
        assert_eq!(b.classify(&o(None, true, 10)), Outcome::Failure);
        assert_eq!(b.classify(&o(Some(200), false, 2500)), Outcome::Failure);
    }
}
