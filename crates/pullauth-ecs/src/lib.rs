//! ECS's own rules, as pullauth needs them to prefetch exactly what ECS
//! will start on this instance: the pure core of prefetch, as
//! `pullauth-resolve` is the pure core of credentials.
//!
//! - [`taskdef`] is the one task-definition model: the control socket
//!   parses its JSON into it, and the ECS client builds it from
//!   `DescribeTaskDefinition`, so a container's credential source is read
//!   the same way wherever the task came from.
//! - [`service`] says which task definitions a service runs, and how
//!   (deployments and task sets, each with its launch type or capacity
//!   provider strategy), for every deployment controller.
//! - [`query`] parses and evaluates ECS's cluster query language (the
//!   expressions of `memberOf` placement constraints), with a third answer,
//!   "unknown", for facts this instance cannot know.
//! - [`revision`] says which digest a service revision pinned for a
//!   container (ECS's "version consistency"), so prefetch warms the image
//!   the task will start.
//! - [`placement`] decides, per task definition and service, whether its
//!   tasks can be placed on this instance, and gives every "no" a stable
//!   reason code.
//!
//! Nothing here does I/O: the facts of the instance (the engine's
//! platform, IMDS, the container instance's attributes) are gathered by
//! the agent and handed in.

pub mod placement;
pub mod query;
pub mod revision;
pub mod service;
pub mod taskdef;
pub mod view;

pub use placement::{Decision, Host, SkipReason, decide};
pub use query::{Expr, Facts, QueryError, Truth};
pub use revision::{PinnedImage, ServiceRevision, pinned_digest};
pub use service::{Capacity, EcsService, Rollout, Run, ServiceStatus, runs};
pub use taskdef::{
    ContainerDefinition, PlacementConstraint, RuntimePlatform, TaskDefError, TaskDefinition,
};
pub use view::{
    ClusterView, MAX_PLAN_BYTES, PLAN_SCHEMA, PlanDocError, PlanDocument, ReadProblem, same_cluster,
};
