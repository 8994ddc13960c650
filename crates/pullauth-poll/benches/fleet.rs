//! Fleet simulation: N container instances following 20 services of one
//! cluster, each driven by the crate's real `Schedule` and `CallLimiter`,
//! against token-bucket models of the account's ECS API.
//!
//! `cargo bench -p pullauth-poll --bench fleet [-- --quick]`
//!
//! Deterministic: every random draw comes from seeded RNGs, so two runs
//! print the same table. A measurement, not a test: nothing is asserted.
//!
//! The model (every number is a named constant below):
//! - two account-wide buckets: service reads (`ListServices`,
//!   `DescribeServices`) and task-definition reads (`DescribeTaskDefinition`),
//!   each with the capacity and refill rate in BENCHMARKS.md;
//! - one poll = 1 `ListServices` page + 2 `DescribeServices`, then one
//!   `DescribeTaskDefinition` per service whose revision is new to the
//!   instance (cached by ARN afterwards); calls are sequential, each takes
//!   `CALL_LATENCY`, and pullauth consults its `CallLimiter` before each;
//!   a throttled call ends the poll as `Throttled`. A throttled service
//!   read starts the next attempt from `ListServices`; a throttled
//!   `DescribeTaskDefinition` keeps the queue of new revisions, so the retry
//!   resumes with them (`FLEET_RESTART_POLLS=1` starts over instead);
//! - calls that arrive at the same instant are served in random order;
//! - at t = 0 every instance starts at once (a fleet-wide restart) with a
//!   current view (prefetch at boot covered the images);
//! - `DEPLOYMENTS` deployments at random times, each on its own service; an
//!   instance is warm for one once it has described the new revision and a
//!   fixed `PULL_TIME` has passed.
//!
//! Pollers compared: the naive baseline (fixed 60 s, no jitter, no backoff,
//! no limiter, every instance polling at t = 0, 60, 120 ...), the same with
//! random start times, `PollPolicy::for_fleet(N, 20)`, the default policy,
//! and `for_fleet` without start-up spread (every instance polls at t = 0,
//! then jitter and backoff take over).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use pullauth_poll::{
    ASSUMED_SERVICE_READ_BUCKET, ASSUMED_SERVICE_READ_REFILL_PER_SEC, CallLimiter, CallPlan,
    PollOutcome, PollPolicy, Schedule,
};

/// ASSUMPTION: task-definition reads get a bucket of their own. No source
/// we could read gives its figures; we take those of the page's worked
/// example (cluster reads: 50 tokens, 20/s). See BENCHMARKS.md.
const TASK_DEF_READ_BUCKET: f64 = 50.0;
const TASK_DEF_READ_REFILL_PER_SEC: f64 = 20.0;
const SERVICES: u32 = 20;
/// Round trip of one ECS call.
const CALL_LATENCY: f64 = 0.1;
/// Time from "the instance knows the new revision" to "its image is
/// present": a fixed pull of a mid-sized image.
const PULL_TIME: f64 = 30.0;
/// Simulated time per run.
const HORIZON: f64 = 6.0 * 3600.0;
/// Deployments happen uniformly in [DEPLOY_FROM, DEPLOY_TO].
const DEPLOY_FROM: f64 = 600.0;
const DEPLOY_TO: f64 = 4.0 * 3600.0;
const DEPLOYMENTS: usize = 10;
/// A throttled `DescribeTaskDefinition` keeps the poll's queue of new
/// revisions for the retry (`FLEET_RESTART_POLLS=1` turns this off).
static RESUME_TASK_DEFINITIONS: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("FLEET_RESTART_POLLS").is_none());
/// Window for the peak call rate.
const WINDOW: usize = 60;

/// The account's bucket for one class of calls.
struct Bucket {
    capacity: f64,
    refill: f64,
    tokens: f64,
    last: f64,
}

impl Bucket {
    fn new(capacity: f64, refill: f64) -> Self {
        Bucket {
            capacity,
            refill,
            tokens: capacity,
            last: 0.0,
        }
    }

    fn take(&mut self, now: f64) -> bool {
        if now > self.last {
            self.tokens = (self.tokens + (now - self.last) * self.refill).min(self.capacity);
            self.last = now;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What decides an instance's next poll.
enum Timer {
    /// pullauth: the crate's Schedule (and CallLimiter before each call).
    Real(Schedule, Option<CallLimiter>),
    /// The naive baseline: a fixed interval, no jitter, no backoff, no
    /// limiter; the first poll after `first` seconds.
    Fixed { interval: f64, first: f64 },
}

impl Timer {
    fn first(&mut self) -> f64 {
        match self {
            Timer::Real(s, _) => s.first_delay().as_secs_f64(),
            Timer::Fixed { first, .. } => *first,
        }
    }
    fn next(&mut self, outcome: PollOutcome) -> f64 {
        match self {
            Timer::Real(s, _) => s.next_delay(outcome).as_secs_f64(),
            Timer::Fixed { interval, .. } => *interval,
        }
    }
    fn limiter(&mut self) -> Option<&mut CallLimiter> {
        match self {
            Timer::Real(_, l) => l.as_mut(),
            Timer::Fixed { .. } => None,
        }
    }
}

struct Instance {
    timer: Timer,
    /// Revision of each service whose images this instance has (or pulls).
    view: Vec<u32>,
    /// Service reads done in the current poll.
    step: u32,
    /// (service, revision) still to describe in the current poll.
    pending: Vec<(usize, u32)>,
    /// The limiter already granted the call this event makes.
    granted: bool,
}

#[derive(Clone, Copy)]
enum PolicyKind {
    Naive,
    NaiveRandomStart,
    Recommended,
    Default,
    NoSpread,
}

impl PolicyKind {
    fn label(self) -> &'static str {
        match self {
            PolicyKind::Naive => "naive: 60 s fixed, no jitter/backoff",
            PolicyKind::NaiveRandomStart => "naive, but started at random times",
            PolicyKind::Recommended => "pullauth, `for_fleet(N, 20)`",
            PolicyKind::Default => "pullauth, default",
            PolicyKind::NoSpread => "pullauth, `for_fleet`, no start-up spread",
        }
    }
    fn policy(self, n: u32) -> Option<PollPolicy> {
        match self {
            PolicyKind::Naive | PolicyKind::NaiveRandomStart => None,
            PolicyKind::Recommended => Some(PollPolicy::for_fleet(n, SERVICES)),
            PolicyKind::Default => Some(PollPolicy::default()),
            PolicyKind::NoSpread => Some(PollPolicy {
                startup_spread: Duration::ZERO,
                ..PollPolicy::for_fleet(n, SERVICES)
            }),
        }
    }
}

struct Report {
    interval: f64,
    mean_rate: f64,
    peak_rate: f64,
    peak_first_window: f64,
    throttled: f64,
    all_warm: Vec<Option<f64>>,
    per_instance: Vec<f64>,
    never_warm: usize,
    pairs: usize,
    /// Throttled calls: service reads, task-definition reads.
    throttled_by_bucket: [u64; 2],
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn us(t: f64) -> u64 {
    (t * 1e6).round() as u64
}

fn simulate(n: u32, kind: PolicyKind, seed: u64) -> Report {
    let plan = CallPlan::for_poll(SERVICES, 0);
    let reads = plan.service_reads();
    let policy = kind.policy(n);
    let interval = policy.as_ref().map_or(60.0, |p| p.interval.as_secs_f64());

    // Deployments: same times for every policy of a given seed.
    let mut drng = fastrand::Rng::with_seed(splitmix(seed));
    let mut deploys: Vec<(f64, usize)> = (0..DEPLOYMENTS)
        .map(|d| {
            (
                DEPLOY_FROM + drng.f64() * (DEPLOY_TO - DEPLOY_FROM),
                d % SERVICES as usize,
            )
        })
        .collect();
    deploys.sort_by(|a, b| a.0.total_cmp(&b.0));
    let first_new_rev = SERVICES + 1;

    let mut cluster: Vec<u32> = (1..=SERVICES).collect();
    let mut service_bucket = Bucket::new(
        ASSUMED_SERVICE_READ_BUCKET,
        ASSUMED_SERVICE_READ_REFILL_PER_SEC,
    );
    let mut taskdef_bucket = Bucket::new(TASK_DEF_READ_BUCKET, TASK_DEF_READ_REFILL_PER_SEC);

    let secs = HORIZON as usize + 1;
    let mut calls = vec![0u32; secs];
    let mut throttled_calls = 0u64;
    let mut total_calls = 0u64;
    let mut throttled_by_bucket = [0u64; 2];
    let mut warm_at = vec![vec![f64::NAN; n as usize]; DEPLOYMENTS];

    let mut heap = BinaryHeap::new();
    // Calls that arrive in the same microsecond are served in random order
    // (not by instance number, which would starve the same instances).
    let mut tie = fastrand::Rng::with_seed(splitmix(seed ^ 0x71e));
    let mut instances: Vec<Instance> = (0..n)
        .map(|i| {
            let s = splitmix(seed ^ splitmix(u64::from(i) + 1));
            let timer = match &policy {
                Some(p) => Timer::Real(Schedule::new(p.clone(), s), Some(CallLimiter::default())),
                None => Timer::Fixed {
                    interval: 60.0,
                    first: match kind {
                        PolicyKind::NaiveRandomStart => 60.0 * fastrand::Rng::with_seed(s).f64(),
                        _ => 0.0,
                    },
                },
            };
            Instance {
                timer,
                view: cluster.clone(),
                step: 0,
                pending: Vec::new(),
                granted: false,
            }
        })
        .collect();
    for (i, inst) in instances.iter_mut().enumerate() {
        heap.push(Reverse((us(inst.timer.first()), tie.u64(..), i)));
    }

    let mut next_deploy = 0;
    while let Some(Reverse((t_us, _, i))) = heap.pop() {
        let t = t_us as f64 / 1e6;
        if t >= HORIZON {
            break;
        }
        while next_deploy < deploys.len() && deploys[next_deploy].0 <= t {
            let (_, s) = deploys[next_deploy];
            cluster[s] = first_new_rev + next_deploy as u32;
            next_deploy += 1;
        }
        let inst = &mut instances[i];
        let now = Duration::from_secs_f64(t);
        if !inst.granted
            && let Some(l) = inst.timer.limiter()
        {
            let wait = l.acquire(now);
            if !wait.is_zero() {
                inst.granted = true;
                heap.push(Reverse((us(t + wait.as_secs_f64()), tie.u64(..), i)));
                continue;
            }
        }
        inst.granted = false;

        let service_read = inst.step < reads;
        let ok = if service_read {
            service_bucket.take(t)
        } else {
            taskdef_bucket.take(t)
        };
        total_calls += 1;
        if !ok {
            throttled_by_bucket[usize::from(!service_read)] += 1;
        }
        calls[t as usize] += 1;
        if !ok {
            throttled_calls += 1;
            if let Some(l) = inst.timer.limiter() {
                l.on_throttle(now);
            }
            // Service reads start over; task definitions still to describe
            // stay queued (their ARNs are immutable), so the retry resumes
            // with them instead of listing again.
            if service_read || !*RESUME_TASK_DEFINITIONS {
                inst.step = 0;
                inst.pending.clear();
            }
            let delay = inst.timer.next(PollOutcome::Throttled);
            heap.push(Reverse((us(t + CALL_LATENCY + delay), tie.u64(..), i)));
            continue;
        }
        if let Some(l) = inst.timer.limiter() {
            l.on_success(now);
        }
        let done = t + CALL_LATENCY;
        if service_read {
            inst.step += 1;
            if inst.step == reads {
                inst.pending = (0..SERVICES as usize)
                    .filter(|&s| cluster[s] != inst.view[s])
                    .map(|s| (s, cluster[s]))
                    .collect();
            }
        } else if let Some((s, rev)) = inst.pending.pop() {
            inst.view[s] = rev;
            if rev >= first_new_rev {
                let d = (rev - first_new_rev) as usize;
                warm_at[d][i] = done + PULL_TIME;
            }
        }
        if inst.step < reads || !inst.pending.is_empty() {
            heap.push(Reverse((us(done), tie.u64(..), i)));
        } else {
            inst.step = 0;
            let delay = inst.timer.next(PollOutcome::Ok);
            heap.push(Reverse((us(done + delay), tie.u64(..), i)));
        }
    }

    let windows: Vec<f64> = calls
        .chunks(WINDOW)
        .map(|w| f64::from(w.iter().sum::<u32>()) / w.len() as f64)
        .collect();
    let peak_rate = windows.iter().copied().fold(0.0, f64::max);
    let first_window_len = (interval as usize).clamp(WINDOW, secs);
    let peak_first_window = calls[..first_window_len]
        .chunks(WINDOW)
        .map(|w| f64::from(w.iter().sum::<u32>()) / w.len() as f64)
        .fold(0.0, f64::max);

    let mut all_warm = Vec::new();
    let mut per_instance = Vec::new();
    let mut never_warm = 0;
    for (d, &(td, _)) in deploys.iter().enumerate() {
        let mut worst: Option<f64> = Some(0.0);
        for &w in &warm_at[d] {
            if w.is_nan() {
                never_warm += 1;
                worst = None;
            } else {
                per_instance.push(w - td);
                worst = worst.map(|x| x.max(w - td));
            }
        }
        all_warm.push(worst);
    }
    Report {
        interval,
        mean_rate: total_calls as f64 / HORIZON,
        peak_rate,
        peak_first_window,
        throttled: if total_calls == 0 {
            0.0
        } else {
            throttled_calls as f64 / total_calls as f64
        },
        all_warm,
        per_instance,
        never_warm,
        pairs: DEPLOYMENTS * n as usize,
        throttled_by_bucket,
    }
}

/// Nearest-rank percentile; `None` (not warm within the horizon) sorts last.
fn percentile(values: &[Option<f64>], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().map(|x| x.unwrap_or(f64::INFINITY)).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    let x = v[rank - 1];
    x.is_finite().then_some(x)
}

fn fmt_time(t: Option<f64>) -> String {
    match t {
        None => "not within 6 h".to_string(),
        Some(s) if s < 120.0 => format!("{s:.0} s"),
        Some(s) => format!("{:.1} min", s / 60.0),
    }
}

fn fmt_interval(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.0} min", s / 60.0)
    }
}

#[allow(clippy::print_stdout)] // a benchmark's table is its output
fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[u32] = if quick {
        &[10, 100, 1_000]
    } else {
        &[10, 100, 1_000, 10_000]
    };
    println!(
        "Model: service-read bucket {ASSUMED_SERVICE_READ_BUCKET} tokens, refill {ASSUMED_SERVICE_READ_REFILL_PER_SEC}/s; \
         task-definition-read bucket {TASK_DEF_READ_BUCKET} tokens, refill {TASK_DEF_READ_REFILL_PER_SEC}/s; \
         {SERVICES} services (3 service reads a poll); call latency {CALL_LATENCY} s; pull {PULL_TIME} s; \
         all instances start at t = 0; {DEPLOYMENTS} deployments at random times in [{DEPLOY_FROM} s, {DEPLOY_TO} s]; \
         {} h simulated; peak over {WINDOW} s windows.",
        HORIZON / 3600.0
    );
    println!();
    println!(
        "| instances | poller | interval | ECS calls/s mean | peak (1 min) | peak in first interval | throttled (calls: service reads / task-definition reads) | warm on every instance p50 | p95 | one instance p50 | p95 |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &n in sizes {
        let mut kinds = vec![PolicyKind::Naive, PolicyKind::Recommended];
        if PollPolicy::for_fleet(n, SERVICES) != PollPolicy::default() {
            kinds.push(PolicyKind::Default);
        }
        if n == 100 || n == 1_000 {
            kinds.insert(1, PolicyKind::NaiveRandomStart);
        }
        if n >= 1_000 {
            kinds.push(PolicyKind::NoSpread);
        }
        for kind in kinds {
            let r = simulate(n, kind, 0x5eed_0000 + u64::from(n));
            let inst: Vec<Option<f64>> = r.per_instance.iter().map(|&x| Some(x)).collect();
            let mut inst = inst;
            inst.extend(std::iter::repeat_n(None, r.never_warm));
            let never = if r.never_warm > 0 {
                format!(
                    " ({:.1}% of instance-deployments never warm)",
                    100.0 * r.never_warm as f64 / r.pairs as f64
                )
            } else {
                String::new()
            };
            println!(
                "| {n} | {}{never} | {} | {:.2} | {:.2} | {:.2} | {:.1}% ({} / {}) | {} | {} | {} | {} |",
                kind.label(),
                fmt_interval(r.interval),
                r.mean_rate,
                r.peak_rate,
                r.peak_first_window,
                100.0 * r.throttled,
                r.throttled_by_bucket[0],
                r.throttled_by_bucket[1],
                fmt_time(percentile(&r.all_warm, 0.5)),
                fmt_time(percentile(&r.all_warm, 0.95)),
                fmt_time(percentile(&inst, 0.5)),
                fmt_time(percentile(&inst, 0.95)),
            );
        }
    }
}
