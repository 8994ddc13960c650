//! When a pullauth follower polls ECS, and how hard it may hit it.
//!
//! Every container instance of a cluster runs its own pullauth, and every one
//! of them reads the same account's ECS API, which throttles per account and
//! Region with token buckets. This crate is the pure part of the poller that
//! keeps a whole fleet inside that budget; it does no I/O and needs no
//! runtime. The fleet simulation (`cargo bench -p pullauth-agent --bench
//! fleet`) runs it inside the shipped follower.
//!
//! - [`PollPolicy`]: interval, jitter, start-up spread and backoff bounds,
//!   with defaults sized for 10,000 instances ([`DEFAULT_INTERVAL`] says why)
//!   and [`PollPolicy::for_fleet`] for smaller fleets.
//! - [`Schedule`]: the timer state machine. [`Schedule::first_delay`] spreads
//!   a fleet that restarts at once; [`Schedule::next_delay`] jitters the
//!   interval and backs off on [`PollOutcome::Throttled`] and
//!   [`PollOutcome::Failed`] (a failed poll is never followed sooner than a
//!   healthy one).
//! - [`CallLimiter`]: a client-side token bucket consulted before each call,
//!   slowing down on throttles like the AWS SDK's adaptive retry mode.
//! - [`CallPlan`]: the calls one poll makes (`ListServices`,
//!   `DescribeServices`, `DescribeTaskDefinition`, and the revision reads),
//!   warm or cold; [`cold_start_spread`] spreads a fleet that starts cold.
//!
//! # A poll loop
//! ```no_run
//! use std::time::{Duration, Instant};
//! use pullauth_poll::{CallLimiter, PollOutcome, PollPolicy, Schedule};
//!
//! # enum CallError { Throttled, Other }
//! # async fn list_and_describe(_limiter: &mut CallLimiter, _started: Instant) -> Result<(), CallError> { Ok(()) }
//! async fn follow(policy: PollPolicy, seed: u64) {
//!     let started = Instant::now();
//!     let mut schedule = Schedule::new(policy, seed);
//!     let mut limiter = CallLimiter::default();
//!     tokio::time::sleep(schedule.first_delay()).await;
//!     loop {
//!         // Before each ECS call inside the poll:
//!         //   tokio::time::sleep(limiter.acquire(started.elapsed())).await;
//!         // and after it, limiter.on_success / limiter.on_throttle.
//!         let outcome = match list_and_describe(&mut limiter, started).await {
//!             Ok(()) => PollOutcome::Ok,
//!             Err(CallError::Throttled) => PollOutcome::Throttled,
//!             Err(CallError::Other) => PollOutcome::Failed,
//!         };
//!         tokio::time::sleep(schedule.next_delay(outcome)).await;
//!     }
//! }
//! ```

mod limiter;
mod plan;
mod policy;
mod schedule;

pub use limiter::{
    CallLimiter, DEFAULT_LIMITER_BURST, DEFAULT_LIMITER_MAX_RATE, DEFAULT_LIMITER_MIN_RATE,
    LIMITER_RECOVERY_STEP, LIMITER_THROTTLE_FACTOR,
};
pub use plan::{CallPlan, DESCRIBE_SERVICES_BATCH, LIST_SERVICES_PAGE_SIZE};
pub use policy::{
    ASSUMED_CONTAINER_INSTANCE_READ_BUCKET, ASSUMED_CONTAINER_INSTANCE_READ_REFILL_PER_SEC,
    ASSUMED_REVISION_READ_BUCKET, ASSUMED_REVISION_READ_REFILL_PER_SEC,
    ASSUMED_SERVICE_READ_BUCKET, ASSUMED_SERVICE_READ_REFILL_PER_SEC,
    ASSUMED_TASK_DEFINITION_READ_BUCKET, ASSUMED_TASK_DEFINITION_READ_REFILL_PER_SEC, Backoff,
    DEFAULT_ERROR_BASE, DEFAULT_ERROR_MAX, DEFAULT_INTERVAL, DEFAULT_JITTER,
    DEFAULT_STARTUP_SPREAD, DEFAULT_THROTTLE_BASE, DEFAULT_THROTTLE_MAX, ERROR_MAX_INTERVALS,
    FLEET_SHARE_OF_REFILL, MIN_RECOMMENDED_INTERVAL, PolicyError, PollPolicy, cold_start_spread,
    fleet_interval,
};
pub use schedule::{PollOutcome, Schedule};
