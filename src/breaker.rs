//! The gateway's one circuit-breaker state machine. The `circuit_breaker`
//! plugin keeps one per upstream (a [`BreakerSet`]); `forward_auth` keeps one
//! for its authorization service (a [`Breaker`]). Each is set by a [`Policy`]:
//!
//! * **closed** — calls go through and their outcomes are counted. It trips
//!   after `consecutive_failures` failures in a row, or when the share of
//!   failures over a sliding window (ten buckets, so memory is constant
//!   whatever the traffic) reaches `failure_rate` with at least `min_requests`
//!   calls in the window;
//! * **open** — calls are refused for `open_for`; the refusal says how long is
//!   left;
//! * **half-open** — `probes` calls are let through, the others refused (for
//!   about a second: the probes decide). All probes succeed → closed; one
//!   fails → open again.
//!
//! A call is let through with a [`Permit`], which reports its [`Outcome`]. A
//! permit dropped unreported is [`Outcome::Cancelled`]: the call is not
//! counted, and a probe gives its slot back so that the next call probes. The
//! outcome of a call admitted in another state (let through while closed,
//! ended after the trip) changes nothing.
//!
//! Time is passed in, so tests drive the machine without sleeping.
//!
//! Hand-written rather than taken from a crate: `failsafe`, the maintained
//! one, lets every call through while half-open, reads its own clock, and has
//! no probe slots for a cancelled call to give back.

use crate::metrics::METRICS;
use parking_lot::{Mutex, MutexGuard, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Buckets of the sliding window.
const BUCKETS: u32 = 10;
/// What a refused call is told to wait while the half-open probes are out.
const PROBES_OUT: Duration = Duration::from_secs(1);

/// When a breaker trips, how long it stays open, how it closes again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Trip after this many failures in a row.
    pub consecutive_failures: Option<u32>,
    /// Trip at this share of failures over a sliding window.
    pub failure_rate: Option<FailureRate>,
    /// How long a tripped breaker refuses calls.
    pub open_for: Duration,
    /// Calls let through half-open; all must succeed to close (at least 1).
    pub probes: u32,
}

/// The windowed trip condition of a [`Policy`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureRate {
    /// Failures / calls that trips it (0 < ratio ≤ 1).
    pub ratio: f64,
    /// The sliding window the calls are counted over.
    pub window: Duration,
    /// Fewer calls in the window never trip it.
    pub min_requests: u32,
}

/// How an admitted call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// It never reached the service (refused later, client gone): not
    /// counted, and a probe's slot is given back.
    Cancelled,
}

/// What a breaker reports of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    HalfOpen,
    Open,
}

impl CircuitState {
    /// The `tollgate_circuit_state` value: 0 closed, 1 half-open, 2 open.
    pub fn code(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Index of the bucket-length interval this bucket counts.
    epoch: u64,
    total: u32,
    failures: u32,
}

#[derive(Debug)]
enum Phase {
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

impl Phase {
    fn closed() -> Phase {
        Phase::Closed {
            buckets: [Bucket::default(); BUCKETS as usize],
            consecutive: 0,
        }
    }

    fn state(&self) -> CircuitState {
        match self {
            Phase::Closed { .. } => CircuitState::Closed,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
            Phase::Open { .. } => CircuitState::Open,
        }
    }
}

/// One circuit. [`Breaker::admit`] takes it in an `Arc`, which its permits share.
#[derive(Debug)]
pub struct Breaker {
    policy: Policy,
    /// Start of time for the window's bucket epochs.
    origin: Instant,
    /// The `upstream` label this breaker publishes `tollgate_circuit_state`
    /// under (the breakers of a [`BreakerSet`]).
    gauge: Option<Arc<str>>,
    phase: Mutex<Phase>,
}

impl Breaker {
    /// A closed breaker; `now` starts its window's clock.
    pub fn new(policy: Policy, now: Instant) -> Self {
        Breaker {
            policy: Policy {
                probes: policy.probes.max(1),
                ..policy
            },
            origin: now,
            gauge: None,
            phase: Mutex::new(Phase::closed()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock()
    }

    fn publish(&self, phase: &Phase) {
        if let Some(label) = &self.gauge {
            METRICS
                .circuit_state
                .with_label_values(&[label])
                .set(phase.state().code());
        }
    }

    /// Let a call through, or say how long until calls are tried again.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Result<Permit, Duration> {
        let mut phase = self.lock();
        let probe = match &mut *phase {
            Phase::Closed { .. } => false,
            Phase::Open { until } if now < *until => return Err(*until - now),
            Phase::Open { .. } => {
                *phase = Phase::HalfOpen {
                    admitted: 1,
                    succeeded: 0,
                };
                self.publish(&phase);
                true
            }
            Phase::HalfOpen { admitted, .. } if *admitted < self.policy.probes => {
                *admitted += 1;
                true
            }
            // The probes are out; their outcome decides.
            Phase::HalfOpen { .. } => return Err(PROBES_OUT),
        };
        Ok(Permit {
            breaker: Arc::clone(self),
            probe,
            finished: false,
        })
    }

    /// The breaker's state; one open past `open_for` is half-open (the next
    /// call will probe).
    pub fn state(&self, now: Instant) -> CircuitState {
        match &*self.lock() {
            Phase::Open { until } if now >= *until => CircuitState::HalfOpen,
            p => p.state(),
        }
    }

    /// Whether a call now would be refused.
    pub fn is_open(&self, now: Instant) -> bool {
        match &*self.lock() {
            Phase::Closed { .. } => false,
            Phase::Open { until } => now < *until,
            Phase::HalfOpen { admitted, .. } => *admitted >= self.policy.probes,
        }
    }

    fn bucket_len(window: Duration) -> Duration {
        (window / BUCKETS).max(Duration::from_millis(1))
    }

    /// A cancelled call: a probe gives its slot back, nothing is counted.
    fn cancel(&self, probe: bool) {
        let mut phase = self.lock();
        if let (true, Phase::HalfOpen { admitted, .. }) = (probe, &mut *phase) {
            *admitted = admitted.saturating_sub(1);
            self.publish(&phase);
        }
    }

    /// A call that reached the service, and `failed` or not.
    fn record(&self, probe: bool, failed: bool, now: Instant) {
        let mut guard = self.lock();
        let phase = &mut *guard;
        let p = &self.policy;
        match (probe, &mut *phase) {
            (true, Phase::HalfOpen { succeeded, .. }) => {
                if failed {
                    *phase = Phase::Open {
                        until: now + p.open_for,
                    };
                } else {
                    *succeeded += 1;
                    if *succeeded >= p.probes {
                        *phase = Phase::closed();
                    }
                }
            }
            (
                false,
                Phase::Closed {
                    buckets,
                    consecutive,
                },
            ) => {
                *consecutive = if failed { *consecutive + 1 } else { 0 };
                let by_streak = p
                    .consecutive_failures
                    .is_some_and(|n| failed && *consecutive >= n);
                let by_rate = p
                    .failure_rate
                    .is_some_and(|r| self.count(buckets, r, failed, now));
                if by_rate || by_streak {
                    *phase = Phase::Open {
                        until: now + p.open_for,
                    };
                }
            }
            // Late outcomes from before a transition do not count.
            _ => return,
        }
        self.publish(phase);
    }

    /// Count one outcome in the window; whether the rate trips the breaker.
    fn count(
        &self,
        buckets: &mut [Bucket; BUCKETS as usize],
        r: FailureRate,
        failed: bool,
        now: Instant,
    ) -> bool {
        let len = Self::bucket_len(r.window).as_nanos();
        let epoch = (now.saturating_duration_since(self.origin).as_nanos() / len) as u64;
        let b = &mut buckets[(epoch % u64::from(BUCKETS)) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                total: 0,
                failures: 0,
            };
        }
        b.total += 1;
        if failed {
            b.failures += 1;
        }
        let (total, failures) = buckets
            .iter()
            .filter(|b| b.epoch + u64::from(BUCKETS) > epoch)
            .fold((0u32, 0u32), |(t, f), b| (t + b.total, f + b.failures));
        failed
            && total >= r.min_requests
            && total > 0
            && f64::from(failures) / f64::from(total) >= r.ratio
    }
}

/// Leave to make one call; report how it ended with [`Permit::finish`]. A
/// permit dropped unfinished is [`Outcome::Cancelled`].
#[must_use = "a permit dropped at once is a cancelled call"]
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<Breaker>,
    probe: bool,
    finished: bool,
}

impl Permit {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Report how the call ended.
    pub fn finish(mut self, outcome: Outcome, now: Instant) {
        self.finished = true;
        match outcome {
            Outcome::Success => self.breaker.record(self.probe, false, now),
            Outcome::Failure => self.breaker.record(self.probe, true, now),
            Outcome::Cancelled => self.breaker.cancel(self.probe),
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.finished {
            self.breaker.cancel(self.probe);
        }
    }
}

/// One breaker per key (upstream name), all on one policy, each publishing
/// `tollgate_circuit_state{upstream=<key>}` when an outcome is counted or it
/// turns half-open.
#[derive(Debug)]
pub struct BreakerSet {
    policy: Policy,
    origin: Instant,
    breakers: RwLock<HashMap<Arc<str>, Arc<Breaker>>>,
}

impl BreakerSet {
    /// No breakers yet; `now` starts the windows' clock.
    pub fn new(policy: Policy, now: Instant) -> Self {
        BreakerSet {
            policy,
            origin: now,
            breakers: RwLock::new(HashMap::new()),
        }
    }

    /// [`Breaker::admit`] on `key`'s breaker, made closed on first use.
    pub fn admit(&self, key: &Arc<str>, now: Instant) -> Result<Permit, Duration> {
        let found = self.breakers.read().get(key).cloned();
        let breaker = match found {
            Some(b) => b,
            None => {
                let mut all = self.breakers.write();
                Arc::clone(all.entry(Arc::clone(key)).or_insert_with(|| {
                    Arc::new(Breaker {
                        gauge: Some(Arc::clone(key)),
                        ..Breaker::new(self.policy, self.origin)
                    })
                }))
            }
        };
        breaker.admit(now)
    }

    /// The state of `key`'s breaker, if a call was ever admitted for it.
    pub fn state_of(&self, key: &str, now: Instant) -> Option<CircuitState> {
        let all = self.breakers.read();
        all.get(key).map(|b| b.state(now))
    }
}

#[cfg(test)]
mod tests;
