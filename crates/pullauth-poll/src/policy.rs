//! How often a follower polls ECS, and how it backs off.
//!
//! The numbers are chosen for the whole fleet, not for one instance: every
//! container instance of an account polls the same per-account, per-Region
//! ECS token buckets, so what one instance may spend is the account's refill
//! rate divided by the number of instances.

use std::fmt;
use std::time::Duration;

use crate::plan::CallPlan;

/// The default time between two polls of one instance: 50 minutes.
///
/// Chosen so that the largest fleet we design for (10,000 instances following
/// 20 services, 3 service-read calls a poll, see [`CallPlan`]) spends
/// 10,000 × 3 / 3,000 s = 10 calls/s, half of the service-read refill rate
/// we assume ([`ASSUMED_SERVICE_READ_REFILL_PER_SEC`]); the other half stays
/// for everything else in the account that reads services (deployment tools,
/// the console, CloudFormation waiters). Smaller fleets should poll more
/// often: [`PollPolicy::for_fleet`] and the "Fleet size" table in the
/// operations guide give the interval for a fleet size.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(50 * 60);

/// The shortest interval [`PollPolicy::for_fleet`] recommends: below a minute
/// a poll costs more than the seconds it could save on a deployment.
pub const MIN_RECOMMENDED_INTERVAL: Duration = Duration::from_secs(60);

/// Each steady-state delay is the interval times a factor drawn uniformly
/// from `1 ± DEFAULT_JITTER`. Instances that happen to poll together drift
/// apart within a few polls instead of staying in lock step.
pub const DEFAULT_JITTER: f64 = 0.2;

/// Start-up spread: the first poll after start is drawn uniformly from
/// `[0, startup_spread]`. The default is the interval, so a fleet that
/// restarts at once (an AMI roll-out, an AZ coming back) polls at the
/// steady-state rate from its first minute, which is enough when the
/// instances are warm: `pullauth prefetch` at boot, or the store of the
/// previous run, already described the task definitions, so a first poll
/// costs what any poll costs. A fleet that may start cold needs longer:
/// see [`cold_start_spread`], which [`PollPolicy::for_fleet`] applies.
pub const DEFAULT_STARTUP_SPREAD: Duration = DEFAULT_INTERVAL;

/// Ceiling of the first delay after a poll was throttled
/// (`ThrottlingException`): half an interval, so the first retry comes
/// after a quarter to half an interval, the next after half to a whole one.
///
/// Proportional to the interval, because the interval is sized for the
/// fleet: a fixed 15 s had a throttled 10,000-instance fleet (50 minutes)
/// retry 200 times faster than it polls when healthy, and at 1,000 cold
/// instances (the fleet simulation, start-up spread left at one interval)
/// the retries of throttled polls were throttled again on the service
/// reads (1,880 calls), where half an interval throttles none of them and
/// warms the fleet as fast (24.0 against 23.7 minutes). What a throttled
/// poll read is cached, so the retry resumes with the rest: half an
/// interval still warms a cold cache within a few polls.
pub const DEFAULT_THROTTLE_BASE: Duration = Duration::from_secs(DEFAULT_INTERVAL.as_secs() / 2);

/// Longest delay after consecutive throttled polls. As long as the interval:
/// a throttled account is over budget, and an instance that retried sooner
/// than its healthy neighbours would only add to the load that caused it.
pub const DEFAULT_THROTTLE_MAX: Duration = DEFAULT_INTERVAL;

/// First delay after a poll failed for another reason (network, 5xx, a
/// stalled endpoint, access denied, a deleted cluster), before jitter: one
/// interval. A failed poll never brings the next one closer than a healthy
/// poll would: when a whole fleet fails together (an ECS brownout, an IAM
/// mistake rolled out to every instance, a deleted cluster), a shorter
/// delay would make the failing fleet call ECS more often than the healthy
/// one it was sized as ([`PollPolicy::validate`] refuses a shorter base).
/// A transient failure therefore costs one interval of staleness; the last
/// good view stays meanwhile.
pub const DEFAULT_ERROR_BASE: Duration = DEFAULT_INTERVAL;

/// How many intervals the delay after consecutive failed polls grows to:
/// doubling from one interval, it reaches this many after three failures,
/// so that a fleet that keeps failing calls ECS at a quarter of its
/// healthy rate.
pub const ERROR_MAX_INTERVALS: u32 = 4;

/// Longest delay after consecutive failed polls, before jitter:
/// [`ERROR_MAX_INTERVALS`] intervals.
pub const DEFAULT_ERROR_MAX: Duration =
    Duration::from_secs(DEFAULT_INTERVAL.as_secs() * ERROR_MAX_INTERVALS as u64);

/// The burst capacity of the ECS bucket that `ListServices` and
/// `DescribeServices` draw from: 100 tokens. Not read from AWS's page
/// ("Request throttling for the Amazon ECS API": no copy we could read kept
/// its per-action table) but from Prometheus's ECS service discovery
/// (`discovery/aws/ecs.go`), which cites that page for service reads as
/// burst 100, sustained 20/s (and for cluster reads as 50 and 20/s, which
/// matches the page's own worked example). Still named an assumption: see
/// BENCHMARKS.md.
pub const ASSUMED_SERVICE_READ_BUCKET: f64 = 100.0;

/// The refill rate, in calls per second, of the service-read bucket: 20,
/// from the same source as [`ASSUMED_SERVICE_READ_BUCKET`] (and the
/// cluster-read figure of the page's worked example).
pub const ASSUMED_SERVICE_READ_REFILL_PER_SEC: f64 = 20.0;

/// ASSUMPTION: `DescribeTaskDefinition` draws from a bucket of its own of
/// 50 tokens. No source we could read gives its figures; these are the
/// worked example's (cluster reads: 50 tokens, 20/s). See BENCHMARKS.md.
pub const ASSUMED_TASK_DEFINITION_READ_BUCKET: f64 = 50.0;

/// ASSUMPTION: the refill rate of the task-definition-read bucket, 20/s
/// (as [`ASSUMED_TASK_DEFINITION_READ_BUCKET`]).
pub const ASSUMED_TASK_DEFINITION_READ_REFILL_PER_SEC: f64 = 20.0;

/// ASSUMPTION: `ListServiceDeployments` and `DescribeServiceRevisions`
/// (the reads of the digests ECS pinned) share a bucket of their own of 50
/// tokens, with the worked example's figures: no source gives them.
pub const ASSUMED_REVISION_READ_BUCKET: f64 = 50.0;

/// ASSUMPTION: the refill rate of the revision-read bucket, 20/s.
pub const ASSUMED_REVISION_READ_REFILL_PER_SEC: f64 = 20.0;

/// ASSUMPTION: `DescribeContainerInstances` (read once per start for
/// `memberOf` attributes) draws from a bucket of its own of 50 tokens,
/// with the worked example's figures: no source gives them.
pub const ASSUMED_CONTAINER_INSTANCE_READ_BUCKET: f64 = 50.0;

/// ASSUMPTION: the refill rate of the container-instance-read bucket, 20/s.
pub const ASSUMED_CONTAINER_INSTANCE_READ_REFILL_PER_SEC: f64 = 20.0;

/// The share of the service-read refill rate that a whole pullauth fleet
/// should spend; the rest is left to the account's other readers.
pub const FLEET_SHARE_OF_REFILL: f64 = 0.5;

/// Capped exponential backoff: after the `k`-th consecutive bad poll the
/// ceiling is `min(max, base × 2^(k-1))`. How the delay is drawn from it
/// depends on why the polls were bad (see [`Schedule::next_delay`]).
///
/// [`Schedule::next_delay`]: crate::Schedule::next_delay
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Ceiling after the first bad poll.
    pub base: Duration,
    /// Largest ceiling, reached after enough consecutive bad polls.
    pub max: Duration,
}

impl Backoff {
    /// The ceiling after `attempt` consecutive bad polls (1 for the first).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let factor = 2f64.powi(doublings as i32);
        let secs = self.base.as_secs_f64() * factor;
        if secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}

/// Everything that decides when a follower polls. Build it once from the
/// configuration, check it with [`PollPolicy::validate`], hand it to a
/// [`Schedule`](crate::Schedule).
///
/// The operator sets `interval` (`PULLAUTH_PREFETCH_INTERVAL`) and
/// `startup_spread` (`PULLAUTH_PREFETCH_STARTUP_SPREAD`); the jitter and
/// the backoffs follow from them ([`PollPolicy::with_interval`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PollPolicy {
    /// Time between two successful polls, before jitter.
    pub interval: Duration,
    /// Relative jitter of each steady-state delay, in `[0, 1)`.
    pub jitter: f64,
    /// The first poll after start is drawn from `[0, startup_spread]`.
    pub startup_spread: Duration,
    /// Backoff after `ThrottlingException`.
    pub throttled: Backoff,
    /// Backoff after any other failed poll; its base is at least the
    /// interval ([`DEFAULT_ERROR_BASE`] says why).
    pub failed: Backoff,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            interval: DEFAULT_INTERVAL,
            jitter: DEFAULT_JITTER,
            startup_spread: DEFAULT_STARTUP_SPREAD,
            throttled: Backoff {
                base: DEFAULT_THROTTLE_BASE,
                max: DEFAULT_THROTTLE_MAX,
            },
            failed: Backoff {
                base: DEFAULT_ERROR_BASE,
                max: DEFAULT_ERROR_MAX,
            },
        }
    }
}

/// Why a [`PollPolicy`] cannot be used. The agent maps each field to the
/// setting the operator wrote.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyError {
    /// The interval is zero.
    ZeroInterval,
    /// The jitter is not in `[0, 1)` (or is not a number).
    Jitter {
        /// The value given.
        found: f64,
    },
    /// A backoff has a zero base, or a base above its max.
    Backoff {
        /// `"throttled"` or `"failed"`.
        which: &'static str,
    },
    /// The backoff after a failed poll starts below the interval: a fleet
    /// failing together would poll more often than a healthy one.
    FailedBeforeInterval,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::ZeroInterval => f.write_str("the poll interval must be longer than zero"),
            PolicyError::Jitter { found } => write!(
                f,
                "the poll jitter must be a fraction in [0, 1), e.g. 0.2 for ±20%; found {found}"
            ),
            PolicyError::Backoff { which } => write!(
                f,
                "the {which} backoff needs a base above zero and not above its max"
            ),
            PolicyError::FailedBeforeInterval => f.write_str(
                "the backoff after a failed poll must start at the poll interval or later",
            ),
        }
    }
}

impl std::error::Error for PolicyError {}

impl PollPolicy {
    /// The default policy with another interval; the start-up spread, the
    /// throttle and failure backoffs follow the interval (see their defaults
    /// for why).
    pub fn with_interval(interval: Duration) -> Self {
        let mut policy = PollPolicy {
            interval,
            startup_spread: interval,
            ..PollPolicy::default()
        };
        policy.throttled = Backoff {
            base: (interval / 2).max(Duration::from_millis(1)),
            max: interval.max(Duration::from_millis(1)),
        };
        policy.failed = Backoff {
            base: interval,
            max: interval.saturating_mul(ERROR_MAX_INTERVALS),
        };
        policy
    }

    /// The policy we recommend for `instances` container instances that
    /// each follow `services` services (found with `ListServices`): the
    /// shortest whole-minute interval that keeps the fleet's service reads
    /// at [`FLEET_SHARE_OF_REFILL`] of the assumed refill rate, and at
    /// least [`MIN_RECOMMENDED_INTERVAL`]; and a start-up spread long enough
    /// for the whole fleet to start cold at once within the same share of
    /// every bucket ([`cold_start_spread`]), and at least the interval.
    pub fn for_fleet(instances: u32, services: u32) -> Self {
        let plan = CallPlan::for_poll(services, 0);
        let interval = fleet_interval(
            instances,
            &plan,
            ASSUMED_SERVICE_READ_REFILL_PER_SEC * FLEET_SHARE_OF_REFILL,
        );
        PollPolicy {
            startup_spread: cold_start_spread(instances, &CallPlan::for_cold_start(services))
                .max(interval),
            ..PollPolicy::with_interval(interval)
        }
    }

    /// Checks the invariants [`Schedule`](crate::Schedule) relies on.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.interval.is_zero() {
            return Err(PolicyError::ZeroInterval);
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(PolicyError::Jitter { found: self.jitter });
        }
        for (which, b) in [("throttled", &self.throttled), ("failed", &self.failed)] {
            if b.base.is_zero() || b.base > b.max {
                return Err(PolicyError::Backoff { which });
            }
        }
        if self.failed.base < self.interval {
            return Err(PolicyError::FailedBeforeInterval);
        }
        Ok(())
    }

    /// The fleet's mean service-read rate, in calls per second, when
    /// `instances` instances poll with this policy and `plan` each time.
    pub fn fleet_rate(&self, instances: u32, plan: &CallPlan) -> f64 {
        f64::from(instances) * f64::from(plan.service_reads()) / self.interval.as_secs_f64()
    }
}

/// The shortest interval, rounded up to a whole minute and at least
/// [`MIN_RECOMMENDED_INTERVAL`], at which `instances` instances making the
/// service reads of `plan` each poll spend at most `calls_per_sec` in all.
pub fn fleet_interval(instances: u32, plan: &CallPlan, calls_per_sec: f64) -> Duration {
    let calls = f64::from(instances) * f64::from(plan.service_reads());
    let secs = if calls_per_sec > 0.0 {
        calls / calls_per_sec
    } else {
        f64::INFINITY
    };
    let minutes = (secs / 60.0).ceil().clamp(1.0, 24.0 * 60.0);
    Duration::from_secs(minutes as u64 * 60).max(MIN_RECOMMENDED_INTERVAL)
}

/// How long `instances` instances that all start cold at once (each making
/// the calls of `cold`, see [`CallPlan::for_cold_start`]) must spread their
/// first polls so that every bucket they draw from (service reads, task
/// definition reads, revision reads) sees at most [`FLEET_SHARE_OF_REFILL`]
/// of its assumed refill rate; rounded up to a whole minute.
///
/// A cold first poll costs far more than a warm one (for 20 services, 3
/// service reads, 20 `DescribeTaskDefinition` and 40 revision reads,
/// against 3 service reads), and the describes are the same for every
/// instance: a fleet that starts cold at once cannot warm faster than the
/// account's buckets allow, and spreading it is what keeps it from
/// emptying them (and throttling every other reader of the account).
pub fn cold_start_spread(instances: u32, cold: &CallPlan) -> Duration {
    let buckets = [
        (cold.service_reads(), ASSUMED_SERVICE_READ_REFILL_PER_SEC),
        (
            cold.describe_task_definitions,
            ASSUMED_TASK_DEFINITION_READ_REFILL_PER_SEC,
        ),
        (cold.revision_reads, ASSUMED_REVISION_READ_REFILL_PER_SEC),
    ];
    let secs = buckets
        .iter()
        .map(|&(calls, refill)| {
            f64::from(instances) * f64::from(calls) / (refill * FLEET_SHARE_OF_REFILL)
        })
        .fold(0.0, f64::max);
    // `as` saturates: a fleet too large for any spread gets the longest.
    let minutes = (secs / 60.0).ceil().max(0.0) as u64;
    Duration::from_secs(minutes.saturating_mul(60))
}
