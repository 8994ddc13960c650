//! Counters the agent can export: plain atomics, no labels beyond the
//! error class, nothing that could hold a value.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ErrorClass;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) ecr_token_fetches: AtomicU64,
    pub(crate) ecr_cache_hits: AtomicU64,
    pub(crate) ecr_stale_served: AtomicU64,
    pub(crate) role_assumptions: AtomicU64,
    pub(crate) secret_fetches: AtomicU64,
    pub(crate) object_fetches: AtomicU64,
    pub(crate) ecs_calls: AtomicU64,
    pub(crate) task_definition_cache_hits: AtomicU64,
    failures: [AtomicU64; ErrorClass::ALL.len()],
}

impl Counters {
    pub(crate) fn add(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failure(&self, class: ErrorClass) {
        self.add(&self.failures[class.index()]);
    }

    pub(crate) fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            ecr_token_fetches: get(&self.ecr_token_fetches),
            ecr_cache_hits: get(&self.ecr_cache_hits),
            ecr_stale_served: get(&self.ecr_stale_served),
            role_assumptions: get(&self.role_assumptions),
            secret_fetches: get(&self.secret_fetches),
            object_fetches: get(&self.object_fetches),
            ecs_calls: get(&self.ecs_calls),
            task_definition_cache_hits: get(&self.task_definition_cache_hits),
            failures: ErrorClass::ALL
                .iter()
                .map(|class| (*class, get(&self.failures[class.index()])))
                .collect(),
        }
    }
}

/// The counters at one moment, since the [`crate::Aws`] was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// `ecr:GetAuthorizationToken` calls started (cache misses and refreshes).
    pub ecr_token_fetches: u64,
    /// ECR credentials served from the cache.
    pub ecr_cache_hits: u64,
    /// Cached tokens served because their refresh failed.
    pub ecr_stale_served: u64,
    /// `sts:AssumeRole` calls started.
    pub role_assumptions: u64,
    /// `secretsmanager:GetSecretValue` calls started.
    pub secret_fetches: u64,
    /// `s3:GetObject` calls started.
    pub object_fetches: u64,
    /// ECS read calls started (`ListServices` pages, `DescribeServices`
    /// batches, `DescribeTaskDefinition`).
    pub ecs_calls: u64,
    /// Task definitions served from the cache instead of described again.
    pub task_definition_cache_hits: u64,
    /// Failed calls (including refreshes whose old value was still served),
    /// per class, every class listed.
    pub failures: Vec<(ErrorClass, u64)>,
}

impl CountersSnapshot {
    /// Failures of one class.
    pub fn failures_of(&self, class: ErrorClass) -> u64 {
        self.failures
            .iter()
            .find(|(c, _)| *c == class)
            .map_or(0, |(_, n)| *n)
    }
}
