//! Exponential backoff with jitter, as the ECS agent retries image pulls.

use std::time::Duration;

/// The ECS agent's pull retry: 5 attempts.
pub const DEFAULT_ATTEMPTS: u32 = 5;
/// The ECS agent's first delay between attempts.
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_millis(1100);
/// The ECS agent's cap on the delay between attempts.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(5);
/// Each delay is the nominal one times a factor in `1 ± DEFAULT_JITTER`.
pub const DEFAULT_JITTER: f64 = 0.2;

/// How transient pull failures are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, the first one included.
    pub attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// Fraction of random spread around each delay, 0 for none.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: DEFAULT_ATTEMPTS,
            initial_delay: DEFAULT_INITIAL_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            jitter: DEFAULT_JITTER,
        }
    }
}

impl RetryPolicy {
    /// The nominal delay after failed attempt `attempt` (1-based): the
    /// initial delay doubled per attempt, capped.
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }

    /// The delay to sleep after failed attempt `attempt`, with jitter,
    /// never above `max_delay`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let nominal = self.nominal_delay(attempt);
        if self.jitter <= 0.0 {
            return nominal;
        }
        let spread = (fastrand::f64() * 2.0 - 1.0) * self.jitter;
        nominal.mul_f64((1.0 + spread).max(0.0)).min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_initial_and_caps() {
        let policy = RetryPolicy::default();
        let delays: Vec<u128> = (1..=5)
            .map(|a| policy.nominal_delay(a).as_millis())
            .collect();
        assert_eq!(delays, [1100, 2200, 4400, 5000, 5000]);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let policy = RetryPolicy::default();
        for attempt in 1..=5 {
            let nominal = policy.nominal_delay(attempt).as_secs_f64();
            for _ in 0..200 {
                let d = policy.delay(attempt).as_secs_f64();
                assert!(
                    d >= nominal * 0.8 - 1e-9 && d <= nominal * 1.2 + 1e-9,
                    "{d} vs {nominal}"
                );
            }
        }
    }

    #[test]
    fn no_overflow_on_huge_attempt_numbers() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.nominal_delay(u32::MAX), DEFAULT_MAX_DELAY);
    }
}
