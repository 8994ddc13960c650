//! Keeps the store bounded: finished tasks are removed once their last pull
//! ended longer ago than `ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION`, as the ECS
//! agent forgets stopped tasks after that wait. Image records are kept:
//! `--pull-behavior once` needs them for as long as the image exists.

use std::time::{Duration, SystemTime};

use pullauth_store::Store;
use tokio::task::JoinHandle;

/// The longest time between two sweeps, however long the retention.
pub const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The shortest, so that a tiny retention does not make the sweeper spin.
pub const MIN_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How often to sweep for `retention`: a tenth of it (a task outlives its
/// retention by at most 10%), at most [`MAX_SWEEP_INTERVAL`], at least
/// [`MIN_SWEEP_INTERVAL`].
pub fn sweep_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(MIN_SWEEP_INTERVAL, MAX_SWEEP_INTERVAL)
}

/// Starts removing finished tasks older than `retention`: once now, then
/// every [`sweep_interval`]. Must run inside a Tokio runtime; the removal
/// itself (a transaction with an `fsync`) runs in the blocking pool. The
/// task runs until aborted or until the runtime shuts down.
pub fn spawn_sweeper(store: Store, retention: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(sweep_interval(retention));
        // After a stall (a suspended host), sweep once, not once per missed tick.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            sweep(&store, retention).await;
        }
    })
}

async fn sweep(store: &Store, retention: Duration) {
    let Some(cutoff) = SystemTime::now().checked_sub(retention) else {
        return;
    };
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.remove_finished_before(cutoff)).await {
        Ok(Ok(0)) => tracing::debug!("no finished task old enough to remove"),
        Ok(Ok(removed)) => {
            crate::memory::note_release();
            tracing::info!(
                removed,
                retention = %humantime::format_duration(retention),
                "removed finished tasks (ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION)"
            );
        }
        // Kept for the next sweep; a failing store also shows on /healthz.
        Ok(Err(error)) => tracing::warn!(%error, "could not remove finished tasks"),
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pullauth_store::{Container, Status, Task};

    fn task(arn: &str, status: Status, stopped: SystemTime) -> Task {
        let mut task = Task::new(
            arn.into(),
            "web".into(),
            vec![Container::new("app".into(), "r.io/app:1".into(), true)],
        );
        task.containers[0].known_status = status;
        task.recompute_status();
        task.pull_stopped_at = Some(pullauth_store::rfc3339_millis(stopped));
        task
    }

    fn arns(store: &Store) -> Vec<String> {
        store
            .tasks()
            .expect("list")
            .into_iter()
            .map(|t| t.arn)
            .collect()
    }

    #[test]
    fn interval_is_a_tenth_of_the_retention_within_bounds() {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        assert_eq!(sweep_interval(hours(3)), MAX_SWEEP_INTERVAL);
        assert_eq!(
            sweep_interval(Duration::from_secs(600)),
            Duration::from_secs(60)
        );
        assert_eq!(sweep_interval(Duration::from_millis(1)), MIN_SWEEP_INTERVAL);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sweeper_removes_old_finished_tasks_at_start_and_every_interval() {
        tokio::time::pause();
        let retention = Duration::from_secs(3600);
        let interval = sweep_interval(retention);
        assert_eq!(interval, MAX_SWEEP_INTERVAL);
        let long_ago = SystemTime::now() - 2 * retention;
        let store = Store::in_memory();
        store
            .put_task(&task("arn:old", Status::Pulled, long_ago))
            .expect("put");
        store
            .put_task(&task("arn:pulling", Status::Pulling, long_ago))
            .expect("put");
        store
            .put_task(&task("arn:recent", Status::Pulled, SystemTime::now()))
            .expect("put");

        let sweeper = spawn_sweeper(store.clone(), retention);
        // The first sweep runs at once. The clock only moves when every task
        // waits on a timer, and not while the removal runs in the blocking
        // pool, so each sleep below ends after the sweeps due before it.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(arns(&store), ["arn:pulling", "arn:recent"]);

        store
            .put_task(&task("arn:later", Status::Stopped, long_ago))
            .expect("put");
        tokio::time::sleep(interval - Duration::from_secs(2)).await;
        assert_eq!(
            arns(&store),
            ["arn:later", "arn:pulling", "arn:recent"],
            "swept before the interval was up"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(arns(&store), ["arn:pulling", "arn:recent"]);
        sweeper.abort();
    }
}
