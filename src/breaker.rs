//! A circuit breaker: after `failure_threshold` consecutive failures a dependency is skipped
//! for `open_for`, then one trial call is let through (half-open); its outcome closes or
//! re-opens the breaker. Used around rate providers and the Lightning backend.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Breaker thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before a trial call.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// One trial call is in flight or allowed.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

/// A thread-safe circuit breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker named `name` (the name appears in logs and health reports).
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        Self {
            name: name.into(),
            config,
            inner: Mutex::new(Inner {
                failures: 0,
                opened_at: None,
                trial_in_flight: false,
            }),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go through now. When the open period has passed this lets exactly one
    /// trial call through until its outcome is recorded.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    /// [`CircuitBreaker::allow`] at a given instant (for tests).
    pub fn allow_at(&self, now: Instant) -> bool {
        let mut i = self.lock();
        match i.opened_at {
            None => true,
            Some(at) if now.duration_since(at) >= self.config.open_for && !i.trial_in_flight => {
                i.trial_in_flight = true;
                true
            }
            Some(_) => false,
        }
    }

    /// Records a successful call: the breaker closes.
    pub fn record_success(&self) {
        let mut i = self.lock();
        if i.opened_at.is_some() {
            log::info!("circuit breaker {} closed", self.name);
        }
        *i = Inner {
            failures: 0,
            opened_at: None,
            trial_in_flight: false,
        };
    }

    /// Records a failed call: opens the breaker at the threshold, or re-opens it after a
    /// failed trial.
    pub fn record_failure(&self) {
        self.record_failure_at(Instant::now())
    }

    /// [`CircuitBreaker::record_failure`] at a given instant (for tests).
    pub fn record_failure_at(&self, now: Instant) {
        let mut i = self.lock();
        i.failures = i.failures.saturating_add(1);
        if i.trial_in_flight
            || (i.opened_at.is_none() && i.failures >= self.config.failure_threshold)
        {
            log::warn!(
                "circuit breaker {} open after {} failures",
                self.name,
                i.failures
            );
            i.opened_at = Some(now);
            i.trial_in_flight = false;
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    /// [`CircuitBreaker::state`] at a given instant (for tests).
    pub fn state_at(&self, now: Instant) -> BreakerState {
        let i = self.lock();
        match i.opened_at {
            None => BreakerState::Closed,
            Some(_) if i.trial_in_flight => BreakerState::HalfOpen,
            Some(at) if now.duration_since(at) >= self.config.open_for => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_half_opens_once() {
        let b = CircuitBreaker::new(
            "t",
            BreakerConfig {
                failure_threshold: 3,
                open_for: Duration::from_secs(10),
            },
        );
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(b.allow_at(t0));
            b.record_failure_at(t0);
        }
        assert_eq!(b.state_at(t0), BreakerState::Closed);
        b.record_failure_at(t0);
        assert_eq!(b.state_at(t0), BreakerState::Open);
        assert!(!b.allow_at(t0 + Duration::from_secs(5)));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.state_at(t1), BreakerState::HalfOpen);
        assert!(b.allow_at(t1), "one trial");
        assert!(!b.allow_at(t1), "only one trial");
        b.record_failure_at(t1);
        assert_eq!(b.state_at(t1), BreakerState::Open, "failed trial re-opens");
        let t2 = t1 + Duration::from_secs(10);
        assert!(b.allow_at(t2));
        b.record_success();
        assert_eq!(b.state_at(t2), BreakerState::Closed);
        assert!(b.allow_at(t2));
    }
}
