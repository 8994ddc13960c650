//! ECS's immutable answers (task definitions, service revisions, and which
//! revisions a service's rollouts run) kept in `ECS_DATADIR`'s store, so
//! that `pullauth prefetch` at boot, `serve` after it, and `serve` after a
//! restart describe each task definition once per instance, not once per
//! process: [`StoreRecords`], the store's side of
//! [`pullauth_aws::EcsRecords`].
//!
//! A cache: every failure (the file busy with another process's write for
//! longer than the store waits, a full disk) is a miss or an answer not
//! kept, said at debug level, never an error of the read it serves.

use std::collections::HashSet;
use std::path::Path;

use pullauth_aws::{EcsRecordKind, EcsRecords};
use pullauth_store::Store;

/// [`EcsRecords`] in a [`Store`]'s cache table.
#[derive(Debug, Clone)]
pub struct StoreRecords {
    store: Store,
}

impl StoreRecords {
    /// Records in `store` (the agent's, opened at start).
    pub fn new(store: Store) -> StoreRecords {
        StoreRecords { store }
    }

    /// Records in the store of `data_dir`, opened now, for a process that
    /// does not hold the store otherwise (`pullauth prefetch`, which may run
    /// beside a `serve` using the same directory). A store that cannot be
    /// opened means no records: the ECS answers are then read and not kept,
    /// and the reason is said at debug level.
    pub fn open(data_dir: &Path) -> Option<StoreRecords> {
        match Store::open(data_dir) {
            Ok(store) => Some(StoreRecords::new(store)),
            Err(error) => {
                tracing::debug!(%error, "ECS answers are not kept across runs: the store cannot be opened");
                None
            }
        }
    }
}

impl EcsRecords for StoreRecords {
    fn load(&self, kind: EcsRecordKind, key: &str) -> Option<String> {
        match self.store.cached(kind.name(), key) {
            Ok(record) => record,
            Err(error) => {
                tracing::debug!(kind = kind.name(), key, %error, "a kept ECS answer cannot be read; asking ECS");
                None
            }
        }
    }

    fn save(&self, kind: EcsRecordKind, key: &str, record: &str) {
        if let Err(error) = self.store.put_cached(kind.name(), key, record) {
            tracing::debug!(kind = kind.name(), key, %error, "an ECS answer is not kept");
        }
    }

    fn retain(&self, kind: EcsRecordKind, keep: &HashSet<String>) {
        match self.store.retain_cached(kind.name(), keep) {
            Ok(0) => {}
            Ok(dropped) => {
                tracing::debug!(
                    kind = kind.name(),
                    dropped,
                    "kept ECS answers no longer named"
                );
            }
            Err(error) => {
                tracing::debug!(kind = kind.name(), %error, "kept ECS answers no longer named stay for now");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_the_store_by_kind() {
        let records = StoreRecords::new(Store::in_memory());
        records.save(EcsRecordKind::TaskDefinition, "arn:td", "{\"a\":1}");
        records.save(EcsRecordKind::ServiceRevision, "arn:td", "{\"b\":2}");
        assert_eq!(
            records
                .load(EcsRecordKind::TaskDefinition, "arn:td")
                .as_deref(),
            Some("{\"a\":1}")
        );
        records.retain(EcsRecordKind::TaskDefinition, &HashSet::new());
        assert_eq!(records.load(EcsRecordKind::TaskDefinition, "arn:td"), None);
        assert!(
            records
                .load(EcsRecordKind::ServiceRevision, "arn:td")
                .is_some()
        );
    }

    /// A data directory that cannot hold a store (a file in its place)
    /// means no records, not an error.
    #[test]
    fn an_unusable_data_dir_means_no_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("file");
        assert!(StoreRecords::open(&file).is_none());
    }
}
