//! A client-side limiter in front of each ECS call, in the spirit of the AWS
//! SDK's "adaptive" retry mode: a token bucket the client consults before
//! every call, whose rate halves on each throttle and creeps back on success.
//!
//! The [`Schedule`](crate::Schedule) decides when a *poll* starts; this
//! decides how fast the *calls* inside it go. It matters when one poll has
//! many calls (a cluster with hundreds of services, or twenty new task
//! definitions after a deployment, or `pullauth prefetch` at boot): without
//! it they would leave back to back and land in the account's bucket as one
//! burst from every instance.
//!
//! Time is passed in as a [`Duration`] since any fixed start (the agent uses
//! `Instant::now() - started`), so the limiter stays pure and testable.

use std::time::Duration;

/// Calls a limiter lets through at once after a quiet period.
pub const DEFAULT_LIMITER_BURST: f64 = 5.0;
/// Highest steady rate of one instance, in calls per second.
pub const DEFAULT_LIMITER_MAX_RATE: f64 = 2.0;
/// Lowest rate after repeated throttles: one call a minute.
pub const DEFAULT_LIMITER_MIN_RATE: f64 = 1.0 / 60.0;
/// Factor applied to the rate on each throttle.
pub const LIMITER_THROTTLE_FACTOR: f64 = 0.5;
/// Share of the max rate won back by each successful call.
pub const LIMITER_RECOVERY_STEP: f64 = 0.1;

/// The token bucket. One per instance and ECS endpoint, shared by every
/// call the follower makes.
#[derive(Debug, Clone)]
pub struct CallLimiter {
    burst: f64,
    max_rate: f64,
    min_rate: f64,
    /// Current refill rate, calls per second.
    rate: f64,
    /// Tokens at `last`; negative when calls are already booked ahead.
    tokens: f64,
    /// Seconds since the caller's start at the last refill.
    last: f64,
}

impl Default for CallLimiter {
    fn default() -> Self {
        CallLimiter::new(
            DEFAULT_LIMITER_BURST,
            DEFAULT_LIMITER_MAX_RATE,
            DEFAULT_LIMITER_MIN_RATE,
        )
    }
}

impl CallLimiter {
    /// A full bucket of `burst` tokens refilling at `max_rate` calls per
    /// second, never slower than `min_rate`. Nonsense values are clamped:
    /// burst to at least 1, rates to at least 1e-6 and `min_rate <= max_rate`.
    pub fn new(burst: f64, max_rate: f64, min_rate: f64) -> Self {
        let burst = if burst.is_finite() {
            burst.max(1.0)
        } else {
            1.0
        };
        let max_rate = if max_rate.is_finite() {
            max_rate.max(1e-6)
        } else {
            1e-6
        };
        let min_rate = if min_rate.is_finite() {
            min_rate.clamp(1e-6, max_rate)
        } else {
            1e-6
        };
        CallLimiter {
            burst,
            max_rate,
            min_rate,
            rate: max_rate,
            tokens: burst,
            last: 0.0,
        }
    }

    /// The current rate, in calls per second (for metrics and tests).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn refill(&mut self, now: Duration) {
        let now = now.as_secs_f64();
        if now > self.last {
            self.tokens = (self.tokens + (now - self.last) * self.rate).min(self.burst);
            self.last = now;
        }
    }

    /// Books one call at `now` and returns how long the caller must wait
    /// before sending it (zero when a token is there). Every booking takes a
    /// token, so concurrent callers queue behind each other.
    pub fn acquire(&mut self, now: Duration) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// A call was throttled: halve the rate (down to the minimum) and give
    /// up any saved burst.
    pub fn on_throttle(&mut self, now: Duration) {
        self.refill(now);
        self.rate = (self.rate * LIMITER_THROTTLE_FACTOR).max(self.min_rate);
        self.tokens = self.tokens.min(0.0);
    }

    /// A call succeeded: win back a step of the rate (up to the maximum).
    pub fn on_success(&mut self, now: Duration) {
        self.refill(now);
        self.rate = (self.rate + LIMITER_RECOVERY_STEP * self.max_rate).min(self.max_rate);
    }
}
