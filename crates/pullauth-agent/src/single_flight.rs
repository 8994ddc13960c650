//! Single flight: one run of a piece of work per key, however many callers
//! ask for it while it runs, with an optional gate that lets the first
//! caller decide (after it has done something slow, like a store write)
//! whether the work should start at all.
//!
//! The rules, each tested below:
//! - A caller [`join`](SingleFlight::join)s the flight for its key in
//!   progress, or starts one; every caller gets a [`Share`] that resolves to
//!   the same value.
//! - A flight leaves the map when its work ends: normally, by panic, or by
//!   being abandoned. A later caller then starts a new one; nothing can
//!   poison a key.
//! - A gated flight waits for its [`Gate`]. [`Gate::abandon_unless_joined`]
//!   decides and removes under the same lock that joining takes, so a caller
//!   can never join a flight that is being abandoned.
//! - Who joined is counted explicitly (a joiner's share counts from join to
//!   drop), not inferred from reference counts.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio::sync::oneshot;

type SharedValue<V> = Shared<BoxFuture<'static, V>>;

/// Flights in progress, by key.
pub struct SingleFlight<K, V: Clone> {
    inner: Arc<Inner<K, V>>,
}

struct Inner<K, V: Clone> {
    flights: Mutex<HashMap<K, Flight<V>>>,
    /// Tells flights apart when one key has had several.
    next_id: AtomicU64,
}

struct Flight<V: Clone> {
    id: u64,
    value: SharedValue<V>,
    /// Live [`Share`]s of this flight other than its starter's.
    holders: Arc<AtomicUsize>,
}

impl<K, V: Clone> std::fmt::Debug for SingleFlight<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let in_flight = lock(&self.inner.flights).len();
        f.debug_struct("SingleFlight")
            .field("in_flight", &in_flight)
            .finish()
    }
}

impl<K, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            inner: Arc::new(Inner {
                flights: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
            }),
        }
    }
}

/// One caller's claim on a flight's value.
pub struct Share<V: Clone> {
    value: SharedValue<V>,
    holders: Arc<AtomicUsize>,
    /// Whether this caller started the flight.
    pub started: bool,
}

impl<V: Clone> std::fmt::Debug for Share<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl<V: Clone> Share<V> {
    /// Waits for the flight's value.
    pub async fn value(&self) -> V {
        self.value.clone().await
    }
}

impl<V: Clone> Drop for Share<V> {
    fn drop(&mut self) {
        if !self.started {
            self.holders.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Held by the caller that started a gated flight: the work waits until
/// the gate is opened, abandoned, or dropped (which opens it).
pub struct Gate<K: Eq + Hash, V: Clone> {
    inner: Arc<Inner<K, V>>,
    key: K,
    id: u64,
    tx: Option<oneshot::Sender<bool>>,
}

impl<K: Eq + Hash, V: Clone> std::fmt::Debug for Gate<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("id", &self.id).finish()
    }
}

impl<K: Eq + Hash, V: Clone> Gate<K, V> {
    /// Lets the work start.
    pub fn open(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(true);
        }
    }

    /// Abandons the work unless a caller other than the starter holds a
    /// share; returns whether it starts. Decided under the map's lock, so
    /// no caller can join in between.
    pub fn abandon_unless_joined(mut self) -> bool {
        let mut flights = lock(&self.inner.flights);
        let joined = flights
            .get(&self.key)
            .filter(|flight| flight.id == self.id)
            .is_some_and(|flight| flight.holders.load(Ordering::Acquire) > 0);
        if !joined && flights.get(&self.key).is_some_and(|f| f.id == self.id) {
            flights.remove(&self.key);
        }
        drop(flights);
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(joined);
        }
        joined
    }
}

impl<K: Eq + Hash, V: Clone> Drop for Gate<K, V> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(true);
        }
    }
}

/// Removes its flight from the map when dropped: when the work ends,
/// normally or by panic, or when the task running it is cancelled.
struct Departure<K: Eq + Hash, V: Clone> {
    inner: Arc<Inner<K, V>>,
    key: Option<K>,
    id: u64,
}

impl<K: Eq + Hash, V: Clone> Drop for Departure<K, V> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut flights = lock(&self.inner.flights);
        if flights.get(&key).is_some_and(|flight| flight.id == self.id) {
            flights.remove(&key);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new() -> Self {
        Self::default()
    }

    /// How many flights are in progress.
    pub fn len(&self) -> usize {
        lock(&self.inner.flights).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joins the flight for `key`, or starts one that runs `work()` on the
    /// Tokio runtime (so it runs whether or not anyone awaits it). With
    /// `gated`, a started flight waits for the returned [`Gate`]; an
    /// abandoned flight resolves to `stopped("abandoned")` and a panicking
    /// one to `stopped(<panic message>)`.
    pub fn join<F>(
        &self,
        key: K,
        gated: bool,
        work: impl FnOnce() -> F,
        stopped: impl FnOnce(String) -> V + Send + 'static,
    ) -> (Share<V>, Option<Gate<K, V>>)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let mut flights = lock(&self.inner.flights);
        if let Some(flight) = flights.get(&key) {
            flight.holders.fetch_add(1, Ordering::AcqRel);
            return (
                Share {
                    value: flight.value.clone(),
                    holders: flight.holders.clone(),
                    started: false,
                },
                None,
            );
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = if gated {
            let (tx, rx) = oneshot::channel::<bool>();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let departure = Departure {
            inner: self.inner.clone(),
            key: Some(key.clone()),
            id,
        };
        let work = work();
        let handle = tokio::spawn(async move {
            let _departure = departure;
            if let Some(rx) = rx
                && rx.await == Ok(false)
            {
                return None;
            }
            Some(work.await)
        });
        let value = async move {
            match handle.await {
                Ok(Some(value)) => value,
                Ok(None) => stopped("abandoned".to_owned()),
                Err(join) => stopped(panic_message(join)),
            }
        }
        .boxed()
        .shared();
        let holders = Arc::new(AtomicUsize::new(0));
        flights.insert(
            key.clone(),
            Flight {
                id,
                value: value.clone(),
                holders: holders.clone(),
            },
        );
        let gate = tx.map(|tx| Gate {
            inner: self.inner.clone(),
            key,
            id,
            tx: Some(tx),
        });
        (
            Share {
                value,
                holders,
                started: true,
            },
            gate,
        )
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    if !join.is_panic() {
        return "cancelled".to_owned();
    }
    let panic = join.into_panic();
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .map_or_else(|| "panicked".to_owned(), |m| format!("panicked: {m}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    type Flights = SingleFlight<&'static str, Result<u32, String>>;

    fn stopped(why: String) -> Result<u32, String> {
        Err(why)
    }

    #[tokio::test]
    async fn callers_during_a_flight_share_one_run() {
        let flights = Flights::new();
        let runs = Arc::new(AtomicU32::new(0));
        let (release, released) = oneshot::channel::<()>();
        let released = released.shared();
        let mut shares = Vec::new();
        for _ in 0..100 {
            let (runs, released) = (runs.clone(), released.clone());
            let (share, gate) = flights.join(
                "img",
                false,
                move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let _ = released.await;
                    Ok(7)
                },
                stopped,
            );
            assert!(gate.is_none());
            shares.push(share);
        }
        assert_eq!(shares.iter().filter(|s| s.started).count(), 1);
        let _ = release.send(());
        for share in &shares {
            assert_eq!(share.value().await, Ok(7));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty(), "the flight left when it ended");
    }

    #[tokio::test]
    async fn a_panicking_flight_does_not_poison_its_key() {
        let flights = Flights::new();
        let (share, _) = flights.join("img", false, || async { panic!("boom") }, stopped);
        let value = share.value().await;
        assert!(matches!(&value, Err(m) if m.contains("boom")), "{value:?}");
        tokio::task::yield_now().await;
        assert!(flights.is_empty());
        let (again, _) = flights.join("img", false, || async { Ok(1) }, stopped);
        assert!(again.started, "a new flight, not the panicked one");
        assert_eq!(again.value().await, Ok(1));
    }

    #[tokio::test]
    async fn an_abandoned_gate_removes_the_flight_unless_someone_joined() {
        let flights = Flights::new();
        let (leader, gate) = flights.join("img", true, || async { Ok(1) }, stopped);
        let gate = gate.expect("a started gated flight has a gate");
        drop(leader);
        assert!(!gate.abandon_unless_joined());
        assert!(flights.is_empty(), "removed in the same critical section");
        let (next, next_gate) = flights.join("img", true, || async { Ok(2) }, stopped);
        assert!(next.started);
        next_gate.expect("gate").open();
        assert_eq!(next.value().await, Ok(2));
    }

    #[tokio::test]
    async fn a_joined_gate_starts_even_if_its_starter_gives_up() {
        let flights = Flights::new();
        let (leader, gate) = flights.join("img", true, || async { Ok(3) }, stopped);
        let (joiner, no_gate) = flights.join("img", true, || async { Ok(99) }, stopped);
        assert!(no_gate.is_none() && !joiner.started);
        drop(leader);
        assert!(gate.expect("gate").abandon_unless_joined());
        assert_eq!(joiner.value().await, Ok(3));
    }

    #[tokio::test]
    async fn a_dropped_share_no_longer_counts_as_joined() {
        let flights = Flights::new();
        let (_leader, gate) = flights.join("img", true, || async { Ok(3) }, stopped);
        let (joiner, _) = flights.join("img", true, || async { Ok(99) }, stopped);
        drop(joiner);
        assert!(!gate.expect("gate").abandon_unless_joined());
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn a_dropped_gate_opens() {
        let flights = Flights::new();
        let (share, gate) = flights.join("img", true, || async { Ok(4) }, stopped);
        drop(gate);
        assert_eq!(share.value().await, Ok(4));
    }

    #[tokio::test]
    async fn different_keys_fly_separately() {
        let flights = Flights::new();
        let (a, _) = flights.join("a", false, || async { Ok(1) }, stopped);
        let (b, _) = flights.join("b", false, || async { Ok(2) }, stopped);
        assert!(a.started && b.started);
        assert_eq!((a.value().await, b.value().await), (Ok(1), Ok(2)));
    }
}
