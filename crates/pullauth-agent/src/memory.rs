//! Giving memory back to the operating system after a burst.
//!
//! glibc's malloc keeps the memory a burst needed: 30,000 task submissions
//! or 5,000 slow clients leave the agent's heaps (one arena per thread that
//! allocated) full of free chunks between the few that stay live, and only
//! memory at the very top of a heap is returned on its own. The agent then
//! stays at its high-water mark (27.5 MiB after 30,000 tasks, against 8 MiB
//! idle; BENCHMARKS.md). `malloc_trim` returns the free pages inside the
//! heaps too, so the agent calls it once a burst is over, after the caller's
//! `before` hook has freed caches that would pin pages (the store's SQLite
//! page cache). glibc's per-thread caches of freed blocks pin pages too;
//! they can only be turned off at start (`GLIBC_TUNABLES`), which the
//! container image does.
//!
//! What counts as "a burst is over": the agent notes each release of a
//! batch of memory ([`note_release`]: a connection closed, finished tasks
//! removed, a pull ended). A sweep every [`TRIM_INTERVAL`] trims when there
//! were releases since the last trim and none in the last interval (the
//! burst ended), or when releases have gone on for [`MAX_TRIM_DELAY`]
//! without a pause (a long burst still gets trimmed now and then). An idle
//! agent never trims, and a busy one at most once per interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

/// How often the sweep looks whether to trim.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// The longest time releases may go on without a trim.
pub const MAX_TRIM_DELAY: Duration = Duration::from_secs(60);

/// Releases noted so far (see [`note_release`]).
static RELEASES: AtomicU64 = AtomicU64::new(0);

/// Notes that a batch of memory was freed (a connection closed, tasks
/// removed, a pull ended): worth returning once the burst is over.
pub fn note_release() {
    RELEASES.fetch_add(1, Ordering::Relaxed);
}

/// When to trim, from the release count seen at each sweep; pure, so that
/// its rules are tested without a clock.
#[derive(Debug, Clone)]
pub struct TrimPolicy {
    /// The count at the last sweep.
    seen: u64,
    /// The count at the last trim.
    trimmed: u64,
    /// Sweeps since the last trim (or since start).
    sweeps_since_trim: u32,
    /// Sweeps after which releases are trimmed even without a pause.
    max_sweeps: u32,
}

impl TrimPolicy {
    /// A policy starting from `releases` (nothing to trim yet), sweeping
    /// every `interval` and trimming at least every `max_delay` while
    /// releases go on.
    pub fn new(releases: u64, interval: Duration, max_delay: Duration) -> TrimPolicy {
        let max_sweeps = max_delay.as_millis() / interval.as_millis().max(1);
        TrimPolicy {
            seen: releases,
            trimmed: releases,
            sweeps_since_trim: 0,
            max_sweeps: u32::try_from(max_sweeps).unwrap_or(u32::MAX).max(1),
        }
    }

    /// One sweep that sees the count `releases`: true if it should trim.
    pub fn sweep(&mut self, releases: u64) -> bool {
        let quiet = releases == self.seen;
        self.seen = releases;
        self.sweeps_since_trim = self.sweeps_since_trim.saturating_add(1);
        let pending = releases != self.trimmed;
        if pending && (quiet || self.sweeps_since_trim >= self.max_sweeps) {
            self.trimmed = releases;
            self.sweeps_since_trim = 0;
            return true;
        }
        false
    }
}

/// Starts the sweep (see the module documentation). Must run inside a
/// Tokio runtime; the trim itself runs in the blocking pool, since on a
/// large heap it takes a few milliseconds. Runs until aborted or until the
/// runtime shuts down.
/// `before` runs first, in the blocking pool too: it frees caches that
/// would otherwise pin memory (the store's page cache).
pub fn spawn_trimmer(before: impl Fn() + Send + Sync + 'static) -> JoinHandle<()> {
    let before = std::sync::Arc::new(before);
    tokio::spawn(async move {
        let mut policy = TrimPolicy::new(
            RELEASES.load(Ordering::Relaxed),
            TRIM_INTERVAL,
            MAX_TRIM_DELAY,
        );
        let mut ticks = tokio::time::interval(TRIM_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; nothing to trim at start.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if policy.sweep(RELEASES.load(Ordering::Relaxed)) {
                let before = std::sync::Arc::clone(&before);
                let trim = move || {
                    before();
                    release_free_memory()
                };
                match tokio::task::spawn_blocking(trim).await {
                    Ok(released) => tracing::debug!(released, "returned free memory to the system"),
                    Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                    Err(_) => {}
                }
            }
        }
    })
}

/// Returns the free memory inside malloc's heaps to the operating system
/// (glibc's `malloc_trim(0)`); true if any was returned. A no-op
/// elsewhere (musl's malloc returns memory on its own).
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim has no preconditions. It takes each arena's
        // own lock and only hands pages of free chunks back to the kernel
        // (madvise MADV_DONTNEED, or shrinking the heap's top); no memory
        // the program holds is touched. Rust's global allocator is this
        // same malloc, so nothing else manages these heaps.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> TrimPolicy {
        // A trim at least every 4 sweeps while releases go on.
        TrimPolicy::new(10, Duration::from_secs(5), Duration::from_secs(20))
    }

    #[test]
    fn an_idle_agent_never_trims() {
        let mut policy = policy();
        for _ in 0..100 {
            assert!(!policy.sweep(10));
        }
    }

    #[test]
    fn trims_once_after_a_burst_ends() {
        let mut policy = policy();
        // The burst: releases at every sweep.
        assert!(!policy.sweep(50));
        assert!(!policy.sweep(90));
        // The first quiet sweep trims; later quiet ones do not.
        assert!(policy.sweep(90));
        assert!(!policy.sweep(90));
        assert!(!policy.sweep(90));
        // A single release, then quiet: one more trim.
        assert!(!policy.sweep(91));
        assert!(policy.sweep(91));
    }

    #[test]
    fn a_burst_without_a_pause_is_trimmed_every_max_delay() {
        let mut policy = policy();
        let trims: Vec<bool> = (1..=9).map(|i| policy.sweep(10 + i * 100)).collect();
        assert_eq!(
            trims,
            [false, false, false, true, false, false, false, true, false]
        );
    }
}
