//! The poll timer as a state machine: the caller reports how each poll went
//! and sleeps for the delay it gets back.

use std::time::Duration;

use crate::policy::PollPolicy;

/// How one poll went, as far as its timing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// Every call answered: the view is current.
    Ok,
    /// A call was refused with `ThrottlingException` (ECS answers HTTP 400
    /// with that code and "Rate exceeded"): the account is over its budget,
    /// back off (fleet-wide, so jitter matters most here). What the poll
    /// described before is cached, so the retry resumes with the rest.
    Throttled,
    /// A call failed for another reason (network, 5xx, timeout, access
    /// denied, a deleted cluster). The follower keeps its last good view,
    /// and the next poll is no sooner than a healthy one would be.
    Failed,
}

/// When to poll next. Deterministic for a given policy and RNG seed, so the
/// tests and the fleet simulation replay exactly.
///
/// - [`Schedule::first_delay`] spreads the first poll over the start-up
///   window;
/// - [`Schedule::next_delay`] jitters the interval after a good poll, backs
///   off exponentially (capped, with jitter) after consecutive bad ones, and
///   forgets the backoff after the next good one. After a failed poll the
///   delay is never shorter than the interval.
#[derive(Debug, Clone)]
pub struct Schedule {
    policy: PollPolicy,
    rng: fastrand::Rng,
    /// Consecutive bad polls since the last good one.
    bad_streak: u32,
}

impl Schedule {
    /// A schedule with an RNG seeded by `seed`. In the agent, seed it with
    /// something that differs between instances (e.g. a hash of the
    /// container instance ARN and the start time); two instances with the
    /// same seed would poll in lock step.
    pub fn new(policy: PollPolicy, seed: u64) -> Self {
        Schedule::with_rng(policy, fastrand::Rng::with_seed(seed))
    }

    /// A schedule drawing from the given RNG.
    pub fn with_rng(policy: PollPolicy, rng: fastrand::Rng) -> Self {
        Schedule {
            policy,
            rng,
            bad_streak: 0,
        }
    }

    /// The policy this schedule follows.
    pub fn policy(&self) -> &PollPolicy {
        &self.policy
    }

    /// Consecutive throttled or failed polls since the last good one (for
    /// metrics and the introspection view).
    pub fn bad_streak(&self) -> u32 {
        self.bad_streak
    }

    /// The delay before the first poll after start: uniform in
    /// `[0, startup_spread]`.
    pub fn first_delay(&mut self) -> Duration {
        self.policy.startup_spread.mul_f64(self.rng.f64())
    }

    /// The delay before the next poll, given how the last one went:
    ///
    /// - [`PollOutcome::Ok`]: the interval times `1 ± jitter`;
    /// - [`PollOutcome::Throttled`], the `k`-th in a row: drawn uniformly
    ///   from `[c / 2, c]` for the throttle backoff's ceiling `c` ("equal
    ///   jitter": the lower half is a guaranteed wait, so backoff really
    ///   grows; the upper half spreads instances throttled together);
    /// - [`PollOutcome::Failed`], the `k`-th in a row: `c` is the failure
    ///   backoff's ceiling but never less than the interval, and the delay
    ///   is drawn from `[c, c × (1 + jitter)]`: never sooner than a healthy
    ///   poll, at most the failure backoff's max times `1 + jitter`.
    pub fn next_delay(&mut self, outcome: PollOutcome) -> Duration {
        match outcome {
            PollOutcome::Ok => {
                self.bad_streak = 0;
                let factor = 1.0 + self.policy.jitter * (2.0 * self.rng.f64() - 1.0);
                self.policy.interval.mul_f64(factor)
            }
            PollOutcome::Throttled => {
                self.bad_streak = self.bad_streak.saturating_add(1);
                let ceiling = self.policy.throttled.ceiling(self.bad_streak);
                ceiling.mul_f64(0.5 + 0.5 * self.rng.f64())
            }
            PollOutcome::Failed => {
                self.bad_streak = self.bad_streak.saturating_add(1);
                let floor = self
                    .policy
                    .failed
                    .ceiling(self.bad_streak)
                    .max(self.policy.interval);
                floor.mul_f64(1.0 + self.policy.jitter * self.rng.f64())
            }
        }
    }

    /// Forgets the backoff, e.g. after a reload changed the cluster: the
    /// next bad poll starts again at the base.
    pub fn reset(&mut self) {
        self.bad_streak = 0;
    }
}
