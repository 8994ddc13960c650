//! A single-flight cache of values that expire: ECR tokens and assumed-role
//! credentials.
//!
//! The rules, each pinned by a test below with a fake fetch and a manual
//! [`Clock`], no SDK:
//!
//! - A value is served from the cache until its *refresh point*
//!   ([`RefreshPolicy`]), then fetched again ahead of its expiry.
//! - Concurrent callers for one key share one fetch: the first one fetches
//!   while holding the key's `tokio::sync::Mutex`; the others wait on it and
//!   then take what it stored, or the error it got (so a failing endpoint
//!   sees one call per refresh, not one per waiting pull).
//! - A failed refresh while the old value is still usable serves the old
//!   value (the caller logs a warning); a value past its expiry, less
//!   [`RefreshPolicy::usable_margin`], is never served from the cache.
//! - A freshly fetched value whose expiry is already past (a skewed host
//!   clock, or moto, whose tokens expire at issue) is returned to the one
//!   caller that fetched it, flagged, and not cached: the service just
//!   issued it and is the judge of its validity.
//!
//! The fetch is a closure rather than a `TokenSource` trait object because
//! it needs what produced the key (the assumed credentials whose access key
//! id is part of it); a closure carries them without a second lookup that
//! could see newer credentials than the key names.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

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
}

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
}

/// How a value was obtained, for counters and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache.
    Hit,
    /// Fetched now (and cached).
    Fetched,
    /// Fetched now, but its expiry is already past: returned, not cached.
    FetchedExpired,
    /// The refresh failed and the old, still usable value was served; the
    /// error is the refresh's.
    Stale(AwsError),
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

#[derive(Debug)]
struct Slot<V> {
    current: Option<Entry<V>>,
    /// The error of the most recent fetch, if it failed; served to callers
    /// that waited for that very fetch.
    last_failure: Option<AwsError>,
}

#[derive(Debug)]
struct Cell<V> {
    /// Count of completed fetches, read before waiting for `slot` to tell
    /// whether someone else fetched meanwhile.
    generation: AtomicU64,
    slot: tokio::sync::Mutex<Slot<V>>,
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
    V: Clone,
{
    pub fn new(clock: Arc<dyn Clock>, policy: RefreshPolicy) -> Self {
        ExpiringCache {
            clock,
            policy,
            cells: Mutex::new(HashMap::new()),
        }
    }

    /// The value for `key`: cached, or from `fetch` (see the module docs).
    pub async fn get<F, Fut>(&self, key: &K, fetch: F) -> Result<(Expiring<V>, Outcome), AwsError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Expiring<V>, AwsError>>,
    {
        let cell = self.cell(key);
        let seen = cell.generation.load(Ordering::Acquire);
        let mut slot = cell.slot.lock().await;
        let now = self.clock.now();
        if let Some(entry) = &slot.current
            && now < entry.refresh_at
            && self.usable(entry, now)
        {
            return Ok((entry.to_expiring(), Outcome::Hit));
        }
        if cell.generation.load(Ordering::Acquire) != seen
            && let Some(error) = &slot.last_failure
        {
            // We waited for a fetch that failed: share its answer.
            return match &slot.current {
                Some(entry) if self.usable(entry, now) => {
                    Ok((entry.to_expiring(), Outcome::Stale(error.clone())))
                }
                _ => Err(error.clone()),
            };
        }
        let result = fetch().await;
        cell.generation.fetch_add(1, Ordering::AcqRel);
        let now = self.clock.now();
        match result {
            Ok(fresh) => {
                slot.last_failure = None;
                if fresh.expires_at <= now {
                    slot.current = None;
                    return Ok((fresh, Outcome::FetchedExpired));
                }
                slot.current = Some(Entry {
                    value: fresh.value.clone(),
                    expires_at: fresh.expires_at,
                    refresh_at: self.policy.refresh_at(hash_of(key), now, fresh.expires_at),
                });
                Ok((fresh, Outcome::Fetched))
            }
            Err(error) => {
                slot.last_failure = Some(error.clone());
                match &slot.current {
                    Some(entry) if self.usable(entry, now) => {
                        Ok((entry.to_expiring(), Outcome::Stale(error)))
                    }
                    _ => {
                        slot.current = None;
                        Err(error)
                    }
                }
            }
        }
    }

    /// Keys with a usable cached value and its expiry. Keys being fetched
    /// right now are skipped rather than waited for.
    pub fn in_use(&self) -> Vec<(K, SystemTime)> {
        let now = self.clock.now();
        let cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<(K, SystemTime)> = cells
            .iter()
            .filter_map(|(key, cell)| {
                let slot = cell.slot.try_lock().ok()?;
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
    /// cells nobody uses that hold nothing usable: keys that name assumed
    /// credentials change with every rotation, so old ones must go.
    fn cell(&self, key: &K) -> Arc<Cell<V>> {
        let mut cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = cells.get(key) {
            return Arc::clone(cell);
        }
        let now = self.clock.now();
        cells.retain(|_, cell| {
            Arc::strong_count(cell) > 1
                || cell.slot.try_lock().map_or(true, |slot| {
                    slot.current.as_ref().is_some_and(|e| self.usable(e, now))
                })
        });
        let cell = Arc::new(Cell {
            generation: AtomicU64::new(0),
            slot: tokio::sync::Mutex::new(Slot {
                current: None,
                last_failure: None,
            }),
        });
        cells.insert(key.clone(), Arc::clone(&cell));
        cell
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
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::error::Call;

    const HOUR: Duration = Duration::from_secs(3600);
    const MINUTE: Duration = Duration::from_secs(60);

    #[derive(Debug)]
    struct ManualClock(Mutex<SystemTime>);

    impl ManualClock {
        fn new() -> Arc<ManualClock> {
            Arc::new(ManualClock(Mutex::new(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            )))
        }
        fn advance(&self, by: Duration) {
            *self.0.lock().expect("clock") += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> SystemTime {
            *self.0.lock().expect("clock")
        }
    }

    /// The ECR policy without jitter, so refresh points are exact.
    const POLICY: RefreshPolicy = RefreshPolicy {
        ahead: Duration::from_secs(30 * 60),
        jitter: Duration::ZERO,
        usable_margin: Duration::from_secs(60),
    };

    fn cache(clock: &Arc<ManualClock>) -> ExpiringCache<String, String> {
        ExpiringCache::new(clock.clone(), POLICY)
    }

    fn failure() -> AwsError {
        AwsError::Unreachable {
            call: Call {
                operation: "ecr:GetAuthorizationToken",
                target: "registry r".into(),
                principal: "p".into(),
            },
            detail: "connection refused".into(),
        }
    }

    /// A fetch that counts its calls and returns `value` valid for `ttl`.
    fn fetch<'a>(
        clock: &'a ManualClock,
        calls: &'a AtomicUsize,
        value: &'a str,
        ttl: Duration,
    ) -> impl FnOnce() -> std::future::Ready<Result<Expiring<String>, AwsError>> + 'a {
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Expiring {
                value: value.to_string(),
                expires_at: clock.now() + ttl,
            }))
        }
    }

    fn failing<'a>(
        calls: &'a AtomicUsize,
    ) -> impl FnOnce() -> std::future::Ready<Result<Expiring<String>, AwsError>> + 'a {
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Err(failure()))
        }
    }

    fn key(s: &str) -> String {
        s.to_string()
    }

    #[tokio::test]
    async fn serves_from_cache_until_the_refresh_point_then_refreshes_ahead_of_expiry() {
        let clock = ManualClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        let (v, o) = c
            .get(&key("k"), fetch(&clock, &calls, "t1", 12 * HOUR))
            .await
            .expect("fetch");
        assert_eq!((v.value.as_str(), o), ("t1", Outcome::Fetched));
        clock.advance(11 * HOUR + 29 * MINUTE); // 31 min left
        let (v, o) = c
            .get(&key("k"), fetch(&clock, &calls, "t2", 12 * HOUR))
            .await
            .expect("hit");
        assert_eq!((v.value.as_str(), o), ("t1", Outcome::Hit));
        clock.advance(2 * MINUTE); // 29 min left: refresh ahead
        let (v, o) = c
            .get(&key("k"), fetch(&clock, &calls, "t2", 12 * HOUR))
            .await
            .expect("refresh");
        assert_eq!((v.value.as_str(), o), ("t2", Outcome::Fetched));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn short_lived_values_are_reused_for_half_their_lifetime() {
        let clock = ManualClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        c.get(&key("k"), fetch(&clock, &calls, "t1", 20 * MINUTE))
            .await
            .expect("fetch");
        clock.advance(9 * MINUTE);
        let (_, o) = c
            .get(&key("k"), fetch(&clock, &calls, "t2", 20 * MINUTE))
            .await
            .expect("hit");
        assert_eq!(o, Outcome::Hit);
        clock.advance(2 * MINUTE);
        let (_, o) = c
            .get(&key("k"), fetch(&clock, &calls, "t2", 20 * MINUTE))
            .await
            .expect("refetch");
        assert_eq!(o, Outcome::Fetched);
    }

    #[tokio::test]
    async fn jitter_moves_the_refresh_point_by_at_most_the_jitter() {
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

    /// Lets every spawned task run until it blocks (current-thread runtime:
    /// deterministic).
    async fn let_others_run() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let clock = ManualClock::new();
        let c = Arc::new(cache(&clock));
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (c, calls, gate, clock) = (c.clone(), calls.clone(), gate.clone(), clock.clone());
            tasks.push(tokio::spawn(async move {
                c.get(&key("k"), || async move {
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

    #[tokio::test]
    async fn concurrent_callers_share_one_failure() {
        let clock = ManualClock::new();
        let c = Arc::new(cache(&clock));
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (c, calls, gate) = (c.clone(), calls.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                c.get(&key("k"), || async move {
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
        // A later caller (not waiting on that fetch) tries again.
        let calls2 = AtomicUsize::new(0);
        c.get(&key("k"), failing(&calls2))
            .await
            .expect_err("fails again");
        assert_eq!(calls2.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failed_refresh_keeps_serving_the_still_valid_value() {
        let clock = ManualClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        c.get(&key("k"), fetch(&clock, &calls, "t1", 12 * HOUR))
            .await
            .expect("fetch");
        clock.advance(11 * HOUR + 45 * MINUTE); // 15 min left: refresh due
        let (v, o) = c
            .get(&key("k"), failing(&calls))
            .await
            .expect("stale but valid");
        assert_eq!(v.value, "t1");
        assert!(
            matches!(o, Outcome::Stale(AwsError::Unreachable { .. })),
            "{o:?}"
        );
        // The next caller tries again (no negative caching across calls).
        let (v, o) = c
            .get(&key("k"), fetch(&clock, &calls, "t2", 12 * HOUR))
            .await
            .expect("refresh");
        assert_eq!((v.value.as_str(), o), ("t2", Outcome::Fetched));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_expired_value_is_never_served() {
        let clock = ManualClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        c.get(&key("k"), fetch(&clock, &calls, "t1", 12 * HOUR))
            .await
            .expect("fetch");
        clock.advance(12 * HOUR);
        c.get(&key("k"), failing(&calls))
            .await
            .expect_err("expired, refresh failed");
        assert!(c.in_use().is_empty());
        // Inside the usable margin counts as expired too.
        c.get(&key("m"), fetch(&clock, &calls, "t1", 12 * HOUR))
            .await
            .expect("fetch");
        clock.advance(12 * HOUR - 30 * Duration::from_secs(1));
        c.get(&key("m"), failing(&calls))
            .await
            .expect_err("30 s left is too little");
    }

    #[tokio::test]
    async fn a_value_that_arrives_expired_is_returned_once_and_not_cached() {
        let clock = ManualClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        let past = || {
            std::future::ready(Ok(Expiring {
                value: "moto".to_string(),
                expires_at: SystemTime::UNIX_EPOCH,
            }))
        };
        let (v, o) = c.get(&key("k"), past).await.expect("fresh");
        assert_eq!((v.value.as_str(), o), ("moto", Outcome::FetchedExpired));
        assert!(c.in_use().is_empty());
        let (_, o) = c
            .get(&key("k"), fetch(&clock, &calls, "t", HOUR))
            .await
            .expect("fetch");
        assert_eq!(o, Outcome::Fetched, "nothing was cached");
    }

    #[tokio::test]
    async fn keys_are_separate() {
        let clock = ManualClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        c.get(&key("a"), fetch(&clock, &calls, "ta", HOUR))
            .await
            .expect("a");
        let (v, o) = c
            .get(&key("b"), fetch(&clock, &calls, "tb", HOUR))
            .await
            .expect("b");
        assert_eq!((v.value.as_str(), o), ("tb", Outcome::Fetched));
        let (v, _) = c
            .get(&key("a"), fetch(&clock, &calls, "x", HOUR))
            .await
            .expect("a");
        assert_eq!(v.value, "ta");
        assert_eq!(c.in_use().len(), 2);
    }

    #[tokio::test]
    async fn unused_cells_without_a_usable_value_are_dropped() {
        let clock = ManualClock::new();
        let c = cache(&clock);
        let calls = AtomicUsize::new(0);
        c.get(&key("old"), fetch(&clock, &calls, "t", HOUR))
            .await
            .expect("old");
        clock.advance(2 * HOUR);
        c.get(&key("new"), fetch(&clock, &calls, "t", HOUR))
            .await
            .expect("new");
        let cells = c.cells.lock().expect("cells");
        assert!(!cells.contains_key("old"));
        assert!(cells.contains_key("new"));
    }
}
