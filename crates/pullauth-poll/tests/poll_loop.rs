//! A poll loop driven by the real Schedule on tokio's paused clock, against
//! a fake ECS whose token bucket refills on that same clock: the loop waits
//! exactly the delays the schedule computed, backs off while throttled and
//! returns to the interval once the bucket has refilled.

use std::time::Duration;

use pullauth_poll::{Backoff, CallPlan, PollOutcome, PollPolicy, Schedule};
use tokio::time::Instant;

/// The account's bucket, on tokio's clock.
struct FakeEcs {
    tokens: f64,
    capacity: f64,
    refill_per_sec: f64,
    last: Instant,
}

impl FakeEcs {
    fn call(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.refill_per_sec).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// One poll: the plan's calls in order, stopping at the first refusal.
    fn poll(&mut self, plan: &CallPlan) -> PollOutcome {
        for _ in 0..plan.total() {
            if !self.call() {
                return PollOutcome::Throttled;
            }
        }
        PollOutcome::Ok
    }
}

fn policy() -> PollPolicy {
    PollPolicy {
        interval: Duration::from_secs(600),
        jitter: 0.2,
        startup_spread: Duration::from_secs(120),
        throttled: Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(600),
        },
        failed: Backoff {
            base: Duration::from_secs(600),
            max: Duration::from_secs(2_400),
        },
    }
}

/// Runs `polls` polls and returns (time since start, outcome) of each.
async fn run_loop(seed: u64, polls: usize, ecs: &mut FakeEcs) -> Vec<(Duration, PollOutcome)> {
    let start = Instant::now();
    let plan = CallPlan::for_poll(20, 0);
    let mut schedule = Schedule::new(policy(), seed);
    let mut log = Vec::new();
    tokio::time::sleep(schedule.first_delay()).await;
    for _ in 0..polls {
        let outcome = ecs.poll(&plan);
        log.push((start.elapsed(), outcome));
        tokio::time::sleep(schedule.next_delay(outcome)).await;
    }
    log
}

#[tokio::test(start_paused = true)]
async fn loop_waits_the_computed_delays_and_backs_off_until_the_budget_refills() {
    const SEED: u64 = 42;
    // Empty bucket refilling one token every 100 s: a 3-call poll needs 300 s
    // of refill, so the first polls are throttled.
    let mut ecs = FakeEcs {
        tokens: 0.0,
        capacity: 3.0,
        refill_per_sec: 0.01,
        last: Instant::now(),
    };
    let log = run_loop(SEED, 12, &mut ecs).await;

    // The same schedule, replayed without a clock, predicts every gap.
    let mut twin = Schedule::new(policy(), SEED);
    let mut expected = twin.first_delay();
    let mut previous = Duration::ZERO;
    for (i, &(at, outcome)) in log.iter().enumerate() {
        // tokio's timer rounds each deadline up to the millisecond.
        let drift = at.saturating_sub(expected);
        assert!(
            at >= expected && drift <= Duration::from_millis(i as u64 + 1),
            "poll {i} at {at:?}, schedule said {expected:?}"
        );
        assert!(at > previous || i == 0);
        previous = at;
        expected = at + twin.next_delay(outcome);
    }

    let outcomes: Vec<PollOutcome> = log.iter().map(|&(_, o)| o).collect();
    let first_ok = outcomes
        .iter()
        .position(|&o| o == PollOutcome::Ok)
        .expect("the bucket refills, so some poll succeeds");
    assert!(
        first_ok > 0,
        "the first poll meets an empty bucket: {outcomes:?}"
    );
    assert!(
        outcomes[..first_ok]
            .iter()
            .all(|&o| o == PollOutcome::Throttled)
    );
    // The first success can only come after 300 s of refill.
    assert!(log[first_ok].0 >= Duration::from_secs(300), "{log:?}");
    // Throttled gaps grow (each at least half of a doubling ceiling).
    for w in log[..=first_ok].windows(3) {
        let (a, b) = (w[1].0 - w[0].0, w[2].0 - w[1].0);
        assert!(b.as_secs_f64() >= a.as_secs_f64() / 2.0, "{log:?}");
    }
    // After a success the gap is the interval ± 20%.
    for w in log.windows(2) {
        if w[0].1 == PollOutcome::Ok {
            let gap = (w[1].0 - w[0].0).as_secs_f64();
            assert!(
                (480.0..=721.0).contains(&gap),
                "gap {gap} after Ok: {log:?}"
            );
        }
    }
    // With 600 s between polls, 3 calls need 300 s of refill: once it got
    // through, every later poll gets through too.
    assert!(
        outcomes[first_ok..].iter().all(|&o| o == PollOutcome::Ok),
        "{outcomes:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn first_poll_waits_the_start_up_spread() {
    let mut ecs = FakeEcs {
        tokens: 3.0,
        capacity: 3.0,
        refill_per_sec: 1.0,
        last: Instant::now(),
    };
    let log = run_loop(7, 1, &mut ecs).await;
    let expected = Schedule::new(policy(), 7).first_delay();
    assert!(log[0].0 >= expected && log[0].0 <= expected + Duration::from_millis(1));
    assert!(log[0].0 <= Duration::from_secs(121));
    assert_eq!(log[0].1, PollOutcome::Ok);
}
