//! Which ECS calls one poll makes, so the budget can be counted before a
//! single call is sent.

/// `ListServices` returns at most this many service ARNs a page (its
/// `maxResults` is 1..=100; without it ECS returns 10, so always ask for 100).
pub const LIST_SERVICES_PAGE_SIZE: u32 = 100;

/// `DescribeServices` takes at most this many services a call.
pub const DESCRIBE_SERVICES_BATCH: u32 = 10;

/// The calls of one poll of one cluster.
///
/// Task definitions are immutable, so the follower caches them by ARN and
/// calls `DescribeTaskDefinition` only for ARNs it has not seen: a quiet
/// cluster costs only the list and describe calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallPlan {
    /// `ListServices` pages (service-read bucket).
    pub list_pages: u32,
    /// `DescribeServices` calls (service-read bucket).
    pub describe_services: u32,
    /// `DescribeTaskDefinition` calls (task-definition-read bucket).
    pub describe_task_definitions: u32,
    /// `ListServiceDeployments` and `DescribeServiceRevisions` calls
    /// (revision-read bucket): the digests ECS pinned, read for each
    /// service whose deployments changed.
    pub revision_reads: u32,
}

impl CallPlan {
    /// A poll that lists the cluster's `services` services and describes
    /// them, plus one `DescribeTaskDefinition` for each of the
    /// `uncached_task_definitions` ARNs not yet in the cache, and for the
    /// service running each, one `ListServiceDeployments` and one
    /// `DescribeServiceRevisions`. An empty cluster still costs the one
    /// `ListServices` call that finds it empty.
    pub fn for_poll(services: u32, uncached_task_definitions: u32) -> Self {
        CallPlan {
            list_pages: services.div_ceil(LIST_SERVICES_PAGE_SIZE).max(1),
            describe_services: services.div_ceil(DESCRIBE_SERVICES_BATCH),
            describe_task_definitions: uncached_task_definitions,
            revision_reads: uncached_task_definitions.saturating_mul(2),
        }
    }

    /// The first poll of an instance that knows nothing yet (an empty
    /// store, no boot prefetch): every service's task definition and
    /// revisions are read.
    pub fn for_cold_start(services: u32) -> Self {
        CallPlan::for_poll(services, services)
    }

    /// Calls drawn from the service-read bucket.
    pub fn service_reads(&self) -> u32 {
        self.list_pages + self.describe_services
    }

    /// Every call of the poll.
    pub fn total(&self) -> u32 {
        self.service_reads() + self.describe_task_definitions + self.revision_reads
    }
}
