//! A single-flight cache of values that expire: ECR tokens and assumed-role
//! credentials.
//!
//! The rules, each pinned by a test below with a fake fetch, no SDK:
//!
//! - A value is served from the cache until its *refresh point*
//!   ([`RefreshPolicy`]), then fetched again ahead of its expiry.
//! - A refresh while the cached value is still usable runs in the
//!   background: every caller, the one that started it included, gets the
//!   cached value at once. Nobody waits for a refresh that is not needed
//!   yet, however long the endpoint takes to answer.
//! - Callers without a usable value share one fetch: the first starts it,
//!   the others wait for the same one and get what it got, value or error.
//! - Fetches run as tasks of their own, so a caller that gives up (a pull
//!   cancelled, a client gone) never leaves the others waiting for nothing.
//! - A failed fetch is remembered with its time, and the next one waits for
//!   a back-off (doubling from [`RefreshPolicy::retry_first`] up to
//!   [`RefreshPolicy::retry_max`], each jittered between half and all of
//!   it). Meanwhile callers get the still usable value (flagged with the
//!   failure, so the caller can warn) or, without one, the failure itself:
//!   a failing endpoint sees one call per back-off, not one per pull.
//! - A value past its expiry, less [`RefreshPolicy::usable_margin`], is
//!   never served from the cache.
//! - A freshly fetched value whose expiry is already past (a skewed host
//!   clock, or moto, whose tokens expire at issue) is returned to the
//!   callers that waited for that fetch, flagged, and not cached: the
//!   service just issued it and is the judge of its validity.
//!
//! The fetch is a closure rather than a `TokenSource` trait object because
//! it needs what produced the key (the assumed credentials whose access key
//! id is part of it); a closure carries them without a second lookup that
//! could see newer credentials than the key names.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::AwsError;

/// Where the time comes from, so tests can move it.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current wall-clock time (expiries from AWS are wall-clock times).
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// When a cached value is fetched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Refresh when less than this remains before expiry...
    pub ahead: Duration,
    /// ...plus up to this much more, spread per key so that tokens fetched
    /// together are not refreshed together.
    pub jitter: Duration,
    /// A value is never served with less than this left (a pull needs some
    /// time to use it).
    pub usable_margin: Duration,
    /// The back-off after the first failed fetch of a key; it doubles with
    /// every further failure...
    pub retry_first: Duration,
    /// ...up to this.
    pub retry_max: Duration,
}

/// Default [`RefreshPolicy::retry_first`].
pub const RETRY_FIRST: Duration = Duration::from_secs(5);
/// Default [`RefreshPolicy::retry_max`].
pub const RETRY_MAX: Duration = Duration::from_secs(5 * 60);

impl RefreshPolicy {
    /// The refresh point of a value fetched at `fetched_at` that expires at
    /// `expires_at`: `ahead + jitter(key)` before expiry, but never earlier
    /// than half its lifetime, so short-lived values are still reused.
    fn refresh_at(
        &self,
        key_hash: u64,
        fetched_at: SystemTime,
        expires_at: SystemTime,
    ) -> SystemTime {
        let spread = self.jitter.mul_f64((key_hash % 1024) as f64 / 1024.0);
        let lifetime = expires_at.duration_since(fetched_at).unwrap_or_default();
        let ahead = (self.ahead + spread).min(lifetime / 2);
        expires_at.checked_sub(ahead).unwrap_or(fetched_at)
    }

    /// The wait after `failures` consecutive failed fetches (1 or more),
    /// before jitter: `retry_first`, doubled per further failure, at most
    /// `retry_max`.
    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.retry_first
            .saturating_mul(1 << doublings)
            .min(self.retry_max)
    }

    /// [`RefreshPolicy::backoff`] with jitter: between half and all of it.
    fn jittered_backoff(&self, failures: u32) -> Duration {
        let full = self.backoff(failures);
        full / 2 + (full / 2).mul_f64(fastrand::f64())
    }
}

/// How a value was obtained, for counters and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache (a refresh may have started in the background).
    Hit,
    /// Fetched now (and cached).
    Fetched,
    /// Fetched now, but its expiry is already past: returned, not cached.
    FetchedExpired,
    /// The last refresh failed and the old, still usable value was served;
    /// the error is that refresh's. `first`: this is the first answer since
    /// that refresh failed (callers warn once per failed refresh, not once
    /// per pull).
    Stale { error: AwsError, first: bool },
}

/// A fetched value and its expiry.
#[derive(Debug, Clone)]
pub struct Expiring<V> {
    pub value: V,
    pub expires_at: SystemTime,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    expires_at: SystemTime,
    refresh_at: SystemTime,
}

/// The end of one fetch, as its waiters see it: the value (and whether it
/// arrived already expired), or the error.
type Done<V> = Result<(Expiring<V>, bool), AwsError>;

/// Failed fetches of a key since its last successful one.
#[derive(Debug)]
struct Failure {
    error: AwsError,
    consecutive: u32,
    /// No fetch starts before this.
    retry_at: SystemTime,
    /// Whether a stale answer has reported this failure already.
    reported: bool,
}

#[derive(Debug)]
struct Slot<V> {
    current: Option<Entry<V>>,
    /// The fetch running now, if any; it publishes its end here.
    fetching: Option<watch::Receiver<Option<Done<V>>>>,
    failure: Option<Failure>,
}

impl<V> Slot<V> {
    fn may_fetch(&self, now: SystemTime) -> bool {
        self.fetching.is_none() && self.failure.as_ref().is_none_or(|f| now >= f.retry_at)
    }
}

/// One key's state. The lock is never held across an `await`.
#[derive(Debug)]
struct Cell<V> {
    slot: Mutex<Slot<V>>,
}

impl<V> Cell<V> {
    fn lock(&self) -> MutexGuard<'_, Slot<V>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The cache; see the module docs.
#[derive(Debug)]
pub struct ExpiringCache<K, V> {
    clock: Arc<dyn Clock>,
    policy: RefreshPolicy,
    cells: Mutex<HashMap<K, Arc<Cell<V>>>>,
}

impl<K, V> ExpiringCache<K, V>
where
    K: Clone + Eq + Hash,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(clock: Arc<dyn Clock>, policy: RefreshPolicy) -> Self {
        ExpiringCache {
            clock,
            policy,
            cells: Mutex::new(HashMap::new()),
        }
    }

    /// The value for `key`: cached, or from `fetch` (see the module docs).
    /// `fetch` is called only if a fetch starts; it runs as a task of its
    /// own. `call` names the fetch in the one error that is not its own: a
    /// fetch that ended without an answer (the runtime shutting down).
    pub async fn get<F, Fut>(
        &self,
        key: &K,
        call: &crate::Call,
        fetch: F,
    ) -> Result<(Expiring<V>, Outcome), AwsError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Expiring<V>, AwsError>> + Send + 'static,
    {
        let cell = self.cell(key);
        let (mut done, started) = {
            let mut slot = cell.lock();
            let now = self.clock.now();
            if let Some(entry) = slot.current.as_ref().filter(|e| self.usable(e, now)) {
                let cached = entry.to_expiring();
                if now >= entry.refresh_at && slot.may_fetch(now) {
                    self.start(&cell, &mut slot, key, fetch());
                }
                let outcome = match &mut slot.failure {
                    Some(failure) => Outcome::Stale {
                        error: failure.error.clone(),
                        first: !std::mem::replace(&mut failure.reported, true),
                    },
                    None => Outcome::Hit,
                };
                return Ok((cached, outcome));
            }
            match &slot.fetching {
                Some(running) => (running.clone(), false),
                None => {
                    if let Some(failure) = &slot.failure
                        && now < failure.retry_at
                    {
                        return Err(failure.error.clone());
                    }
                    (self.start(&cell, &mut slot, key, fetch()), true)
                }
            }
        };
        let interrupted = || AwsError::Unreachable {
            call: call.clone(),
            detail: "the call ended without an answer (pullauth is stopping)".into(),
        };
        let end = done
            .wait_for(Option::is_some)
            .await
            .map_err(|_| interrupted())?
            .clone()
            .ok_or_else(interrupted)?;
        match end {
            Ok((value, true)) => Ok((value, Outcome::FetchedExpired)),
            Ok((value, false)) if started => Ok((value, Outcome::Fetched)),
            Ok((value, false)) => Ok((value, Outcome::Hit)),
            Err(error) => Err(error),
        }
    }

    /// Starts `fetch` as a task that stores its end in `cell` and
    /// publishes it to the waiters; returns where they wait.
    fn start<Fut>(
        &self,
        cell: &Arc<Cell<V>>,
        slot: &mut Slot<V>,
        key: &K,
        fetch: Fut,
    ) -> watch::Receiver<Option<Done<V>>>
    where
        Fut: Future<Output = Result<Expiring<V>, AwsError>> + Send + 'static,
    {
        let (publish, done) = watch::channel(None);
        slot.fetching = Some(done.clone());
        let cell = Arc::clone(cell);
        let clock = Arc::clone(&self.clock);
        let policy = self.policy;
        let key_hash = hash_of(key);
        // Clears `fetching` even if the task is dropped unfinished, so that
        // the next caller starts a new fetch instead of waiting forever.
        let guard = FetchingGuard(Arc::clone(&cell));
        tokio::spawn(async move {
            let result = fetch.await;
            let now = clock.now();
            let end = {
                let mut slot = cell.lock();
                match result {
                    Ok(fresh) => {
                        slot.failure = None;
                        let expired = fresh.expires_at <= now;
                        slot.current = (!expired).then(|| Entry {
                            value: fresh.value.clone(),
                            expires_at: fresh.expires_at,
                            refresh_at: policy.refresh_at(key_hash, now, fresh.expires_at),
                        });
                        Ok((fresh, expired))
                    }
                    Err(error) => {
                        let consecutive = slot.failure.as_ref().map_or(1, |f| f.consecutive + 1);
                        slot.failure = Some(Failure {
                            error: error.clone(),
                            consecutive,
                            retry_at: now + policy.jittered_backoff(consecutive),
                            reported: false,
                        });
                        if slot.current.as_ref().is_some_and(|e| e.expires_at <= now) {
                            slot.current = None;
                        }
                        Err(error)
                    }
                }
            };
            drop(guard);
            publish.send_replace(Some(end));
        });
        done
    }

    /// Keys with a usable cached value and its expiry.
    pub fn in_use(&self) -> Vec<(K, SystemTime)> {
        let now = self.clock.now();
        let cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<(K, SystemTime)> = cells
            .iter()
            .filter_map(|(key, cell)| {
                let slot = cell.lock();
                let entry = slot.current.as_ref()?;
                self.usable(entry, now)
                    .then(|| (key.clone(), entry.expires_at))
            })
            .collect();
        out.sort_by_key(|(_, expires)| *expires);
        out
    }

    fn usable(&self, entry: &Entry<V>, now: SystemTime) -> bool {
        now + self.policy.usable_margin < entry.expires_at
    }

    /// The cell of `key`, created if needed. Creating one also drops the
    /// cells nobody uses that hold nothing usable and fetch nothing: keys
    /// that name assumed credentials change with every rotation, so old
    /// ones must go.
    fn cell(&self, key: &K) -> Arc<Cell<V>> {
        let mut cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = cells.get(key) {
            return Arc::clone(cell);
        }
        let now = self.clock.now();
        cells.retain(|_, cell| {
            let slot = cell.lock();
            Arc::strong_count(cell) > 1
                || slot.fetching.is_some()
                || slot.current.as_ref().is_some_and(|e| self.usable(e, now))
        });
        let cell = Arc::new(Cell {
            slot: Mutex::new(Slot {
                current: None,
                fetching: None,
                failure: None,
            }),
        });
        cells.insert(key.clone(), Arc::clone(&cell));
        cell
    }
}

/// Clears a cell's running fetch when the fetch task ends, however it ends.
struct FetchingGuard<V>(Arc<Cell<V>>);

impl<V> Drop for FetchingGuard<V> {
    fn drop(&mut self) {
        self.0.lock().fetching = None;
    }
}

impl<V: Clone> Entry<V> {
    fn to_expiring(&self) -> Expiring<V> {
        Expiring {
            value: self.value.clone(),
            expires_at: self.expires_at,
        }
    }
}

/// A hash that is the same in every process (std's `DefaultHasher::new()`
/// has fixed keys), so a key's jitter does not change across restarts.
fn hash_of<K: Hash>(key: &K) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::time::Instant;

    use super::*;
    use crate::Call;

    const HOUR: Duration = Duration::from_secs(3600);
    const MINUTE: Duration = Duration::from_secs(60);
    const SECOND: Duration = Duration::from_secs(1);

    /// A wall clock that follows Tokio's clock, so that with
    /// `tokio::time::pause()` one `advance` moves expiries, back-offs and
    /// the sleeps of a fetch alike.
    #[derive(Debug)]
    struct TokioClock {
        start: Instant,
        wall: SystemTime,
    }

    impl TokioClock {
        fn new() -> Arc<TokioClock> {
            Arc::new(TokioClock {
                start: Instant::now(),
                wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            })
        }
    }

    impl Clock for TokioClock {
        fn now(&self) -> SystemTime {
            self.wall + self.start.elapsed()
        }
    }

    /// The ECR policy without jitter, so refresh points are exact.
    const POLICY: RefreshPolicy = RefreshPolicy {
        ahead: Duration::from_secs(30 * 60),
        jitter: Duration::ZERO,
        usable_margin: Duration::from_secs(60),
        retry_first: RETRY_FIRST,
        retry_max: RETRY_MAX,
    };

    fn cache(clock: &Arc<TokioClock>) -> Arc<ExpiringCache<String, String>> {
        Arc::new(ExpiringCache::new(clock.clone(), POLICY))
    }

    fn call() -> Call {
        Call {
            operation: "ecr:GetAuthorizationToken",
            target: "registry r".into(),
            principal: "p".into(),
        }
    }

    fn failure() -> AwsError {
        AwsError::Unreachable {
            call: call(),
            detail: "connection refused".into(),
        }
    }

    type Fetched = std::future::Ready<Result<Expiring<String>, AwsError>>;

    /// A fetch that counts its calls and returns `value` valid for `ttl`.
    fn fetch<'a>(
        clock: &'a TokioClock,
        calls: &'a AtomicUsize,
        value: &'a str,
        ttl: Duration,
    ) -> impl FnOnce() -> Fetched + 'a {
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Expiring {
                value: value.to_string(),
                expires_at: clock.now() + ttl,
            }))
        }
    }

    fn failing(calls: &AtomicUsize) -> impl FnOnce() -> Fetched + '_ {
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Err(failure()))
        }
    }

    fn key(s: &str) -> String {
        s.to_string()
    }

    /// Lets every spawned task run until it blocks (current-thread runtime:
    /// deterministic).
    async fn let_others_run() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn serves_from_cache_until_the_refresh_point_then_refreshes_in_the_background() {
        let clock = TokioClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        let k = key("k");
        let (v, o) = c
            .get(&k, &call(), fetch(&clock, &calls, "t1", 12 * HOUR))
            .await
            .expect("fetch");
        assert_eq!((v.value.as_str(), o), ("t1", Outcome::Fetched));
        tokio::time::advance(11 * HOUR + 29 * MINUTE).await; // 31 min left
        let (v, o) = c
            .get(&k, &call(), fetch(&clock, &calls, "t2", 12 * HOUR))
            .await
            .expect("hit");
        assert_eq!((v.value.as_str(), o), ("t1", Outcome::Hit));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(2 * MINUTE).await; // 29 min left: refresh ahead
        let (v, o) = c
            .get(&k, &call(), fetch(&clock, &calls, "t2", 12 * HOUR))
            .await
            .expect("refresh started, cached value served");
        assert_eq!((v.value.as_str(), o), ("t1", Outcome::Hit));
        let_others_run().await;
        let (v, o) = c
            .get(&k, &call(), fetch(&clock, &calls, "t3", 12 * HOUR))
            .await
            .expect("refreshed");
        assert_eq!((v.value.as_str(), o), ("t2", Outcome::Hit));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn short_lived_values_are_reused_for_half_their_lifetime() {
        let clock = TokioClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        let k = key("k");
        c.get(&k, &call(), fetch(&clock, &calls, "t1", 20 * MINUTE))
            .await
            .expect("fetch");
        tokio::time::advance(9 * MINUTE).await;
        c.get(&k, &call(), fetch(&clock, &calls, "t2", 20 * MINUTE))
            .await
            .expect("hit");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(2 * MINUTE).await;
        c.get(&k, &call(), fetch(&clock, &calls, "t2", 20 * MINUTE))
            .await
            .expect("refresh");
        let_others_run().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn jitter_moves_the_refresh_point_by_at_most_the_jitter() {
        let policy = RefreshPolicy {
            jitter: Duration::from_secs(30 * 60),
            ..POLICY
        };
        let t0 = SystemTime::UNIX_EPOCH;
        let expires = t0 + 12 * HOUR;
        for k in 0..64u64 {
            let at = policy.refresh_at(hash_of(&k), t0, expires);
            let ahead = expires.duration_since(at).expect("before expiry");
            assert!(ahead >= 30 * MINUTE && ahead <= HOUR, "{ahead:?}");
        }
    }

    #[test]
    fn the_back_off_doubles_up_to_its_maximum_and_is_jittered_by_at_most_half() {
        assert_eq!(POLICY.backoff(1), RETRY_FIRST);
        assert_eq!(POLICY.backoff(2), 2 * RETRY_FIRST);
        assert_eq!(POLICY.backoff(3), 4 * RETRY_FIRST);
        assert_eq!(POLICY.backoff(60), RETRY_MAX);
        assert_eq!(POLICY.backoff(u32::MAX), RETRY_MAX);
        for failures in 1..12 {
            let full = POLICY.backoff(failures);
            let jittered = POLICY.jittered_backoff(failures);
            assert!(jittered >= full / 2 && jittered <= full, "{jittered:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch() {
        let clock = TokioClock::new();
        let c = cache(&clock);
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (c, calls, gate, clock) = (c.clone(), calls.clone(), gate.clone(), clock.clone());
            tasks.push(tokio::spawn(async move {
                c.get(&key("k"), &call(), || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok(Expiring {
                        value: "t1".to_string(),
                        expires_at: clock.now() + 12 * HOUR,
                    })
                })
                .await
            }));
        }
        // Let every task reach the cell, then release the one fetch.
        let_others_run().await;
        gate.notify_one();
        for t in tasks {
            let (v, _) = t.await.expect("task").expect("value");
            assert_eq!(v.value, "t1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_failure_and_the_next_fetch_waits_for_the_back_off() {
        let clock = TokioClock::new();
        let c = cache(&clock);
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (c, calls, gate) = (c.clone(), calls.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                c.get(&key("k"), &call(), || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Err::<Expiring<String>, _>(failure())
                })
                .await
            }));
        }
        let_others_run().await;
        gate.notify_one();
        for t in tasks {
            let e = t.await.expect("task").expect_err("shared failure");
            assert_eq!(e.class(), crate::ErrorClass::Unreachable);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Within the back-off, callers get the failure without a fetch...
        let calls2 = AtomicUsize::new(0);
        let started = Instant::now();
        c.get(&key("k"), &call(), failing(&calls2))
            .await
            .expect_err("still failing");
        assert_eq!(calls2.load(Ordering::SeqCst), 0);
        assert_eq!(Instant::now(), started, "answered without waiting");
        // ...and after it, one caller tries again.
        tokio::time::advance(RETRY_FIRST).await;
        c.get(&key("k"), &call(), failing(&calls2))
            .await
            .expect_err("fails again");
        assert_eq!(calls2.load(Ordering::SeqCst), 1);
    }

    /// The bug this pins: an ECR endpoint that hangs made every pull wait
    /// for its own refresh attempt (about 16 s each), although the cached
    /// token was still valid, and nothing remembered the failure.
    #[tokio::test(start_paused = true)]
    async fn a_hung_refresh_never_delays_callers_and_failed_refreshes_back_off() {
        let clock = TokioClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        let k = key("k");
        c.get(&k, &call(), fetch(&clock, &calls, "t1", 12 * HOUR))
            .await
            .expect("first fetch");
        tokio::time::advance(11 * HOUR + 45 * MINUTE).await; // refresh due
        // The seam: every refresh hangs for 20 s (the SDK's bound), then fails.
        const HANG: Duration = Duration::from_secs(20);
        let starts = Arc::new(Mutex::new(Vec::<Instant>::new()));
        let hung = || {
            let starts = starts.clone();
            move || {
                starts.lock().expect("starts").push(Instant::now());
                async move {
                    tokio::time::sleep(HANG).await;
                    Err::<Expiring<String>, _>(failure())
                }
            }
        };
        let began = Instant::now();
        for _ in 0..100 {
            let (v, o) = c.get(&k, &call(), hung()).await.expect("cached token");
            assert_eq!(v.value, "t1");
            assert_eq!(o, Outcome::Hit, "no failure known yet");
        }
        assert_eq!(Instant::now(), began, "no caller waited for the refresh");
        assert_eq!(
            starts.lock().expect("starts").len(),
            1,
            "one refresh at a time"
        );

        // Ten minutes of one pull a second: each gets the cached token at
        // once, flagged stale once the first refresh has failed.
        let (mut stale, mut firsts) = (0, 0);
        for _ in 0..600 {
            tokio::time::sleep(SECOND).await;
            let before = Instant::now();
            let (v, o) = c.get(&k, &call(), hung()).await.expect("cached token");
            assert_eq!(Instant::now(), before, "answered without waiting");
            assert_eq!(v.value, "t1");
            if let Outcome::Stale {
                error: AwsError::Unreachable { .. },
                first,
            } = o
            {
                stale += 1;
                firsts += usize::from(first);
            }
        }
        assert!(stale >= 570, "{stale} stale answers");
        let starts = starts.lock().expect("starts").clone();
        // One first stale answer per failed refresh (the last refresh may
        // still hang at the end): what callers warn about.
        assert!(
            firsts + 1 >= starts.len() && firsts <= starts.len(),
            "{firsts} first stale answers for {} refreshes",
            starts.len()
        );
        // 600 s of 20 s hangs and back-offs from 5 s doubling: a handful.
        assert!(
            starts.len() >= 4 && starts.len() <= 10,
            "{} fetches",
            starts.len()
        );
        for (failures, pair) in (1u32..).zip(starts.windows(2)) {
            let gap = pair[1] - pair[0];
            let least = HANG + POLICY.backoff(failures) / 2;
            assert!(gap >= least, "fetch {failures}: {gap:?} < {least:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_serving_the_still_valid_value_until_one_succeeds() {
        let clock = TokioClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        let k = key("k");
        c.get(&k, &call(), fetch(&clock, &calls, "t1", 12 * HOUR))
            .await
            .expect("fetch");
        tokio::time::advance(11 * HOUR + 45 * MINUTE).await; // 15 min left: refresh due
        let (v, o) = c.get(&k, &call(), failing(&calls)).await.expect("cached");
        assert_eq!((v.value.as_str(), o), ("t1", Outcome::Hit));
        let_others_run().await;
        let (v, o) = c
            .get(&k, &call(), failing(&calls))
            .await
            .expect("stale but valid");
        assert_eq!(v.value, "t1");
        assert!(
            matches!(
                o,
                Outcome::Stale {
                    error: AwsError::Unreachable { .. },
                    first: true
                }
            ),
            "{o:?}"
        );
        let (_, o) = c.get(&k, &call(), failing(&calls)).await.expect("cached");
        assert!(
            matches!(o, Outcome::Stale { first: false, .. }),
            "the same failure is first only once: {o:?}"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "no retry within the back-off"
        );
        tokio::time::advance(RETRY_FIRST).await;
        let (v, _) = c
            .get(&k, &call(), fetch(&clock, &calls, "t2", 12 * HOUR))
            .await
            .expect("stale while refreshing");
        assert_eq!(v.value, "t1");
        let_others_run().await;
        let (v, o) = c
            .get(&k, &call(), failing(&calls))
            .await
            .expect("refreshed");
        assert_eq!((v.value.as_str(), o), ("t2", Outcome::Hit));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_value_is_never_served() {
        let clock = TokioClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        c.get(&key("k"), &call(), fetch(&clock, &calls, "t1", 12 * HOUR))
            .await
            .expect("fetch");
        tokio::time::advance(12 * HOUR).await;
        c.get(&key("k"), &call(), failing(&calls))
            .await
            .expect_err("expired, refresh failed");
        assert!(c.in_use().is_empty());
        // Inside the usable margin counts as expired too.
        c.get(&key("m"), &call(), fetch(&clock, &calls, "t1", 12 * HOUR))
            .await
            .expect("fetch");
        tokio::time::advance(12 * HOUR - 30 * SECOND).await;
        c.get(&key("m"), &call(), failing(&calls))
            .await
            .expect_err("30 s left is too little");
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_that_arrives_expired_is_returned_and_not_cached() {
        let clock = TokioClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        let past = || {
            std::future::ready(Ok(Expiring {
                value: "moto".to_string(),
                expires_at: SystemTime::UNIX_EPOCH,
            }))
        };
        let (v, o) = c.get(&key("k"), &call(), past).await.expect("fresh");
        assert_eq!((v.value.as_str(), o), ("moto", Outcome::FetchedExpired));
        assert!(c.in_use().is_empty());
        let (_, o) = c
            .get(&key("k"), &call(), fetch(&clock, &calls, "t", HOUR))
            .await
            .expect("fetch");
        assert_eq!(o, Outcome::Fetched, "nothing was cached");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_does_not_strand_the_others() {
        let clock = TokioClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        let slow = || async {
            tokio::time::sleep(10 * SECOND).await;
            Ok(Expiring {
                value: "t".to_string(),
                expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            })
        };
        let given_up = tokio::time::timeout(SECOND, c.get(&key("k"), &call(), slow)).await;
        assert!(given_up.is_err(), "the first caller gave up");
        let (v, o) = c
            .get(&key("k"), &call(), fetch(&clock, &calls, "other", HOUR))
            .await
            .expect("the fetch went on");
        assert_eq!((v.value.as_str(), o), ("t", Outcome::Hit));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_separate() {
        let clock = TokioClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        c.get(&key("a"), &call(), fetch(&clock, &calls, "ta", HOUR))
            .await
            .expect("a");
        let (v, o) = c
            .get(&key("b"), &call(), fetch(&clock, &calls, "tb", HOUR))
            .await
            .expect("b");
        assert_eq!((v.value.as_str(), o), ("tb", Outcome::Fetched));
        let (v, _) = c
            .get(&key("a"), &call(), fetch(&clock, &calls, "x", HOUR))
            .await
            .expect("a");
        assert_eq!(v.value, "ta");
        assert_eq!(c.in_use().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn unused_cells_without_a_usable_value_are_dropped() {
        let clock = TokioClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        c.get(&key("old"), &call(), fetch(&clock, &calls, "t", HOUR))
            .await
            .expect("old");
        tokio::time::advance(2 * HOUR).await;
        c.get(&key("new"), &call(), fetch(&clock, &calls, "t", HOUR))
            .await
            .expect("new");
        let cells = c.cells.lock().expect("cells");
        assert!(!cells.contains_key("old"));
        assert!(cells.contains_key("new"));
    }
}
