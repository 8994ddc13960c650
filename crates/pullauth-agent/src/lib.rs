//! `pullauth serve`: the long-running agent.
//!
//! - [`agent`]: tasks recorded in the store before their pulls start, one
//!   engine pull per image however many tasks ask for it, a bound on
//!   concurrent pulls, and settings that a reload swaps atomically.
//! - [`api`]: the introspection router (read-only, TCP) and the control
//!   router (Unix socket, 0600).
//! - [`server`]: serving both until shutdown; [`control_socket`]: creating
//!   the control socket without ever replacing anything but a dead socket.
//! - [`puller`]: the seam in front of the engine; [`single_flight`]: one
//!   engine pull however many tasks ask for it.
//! - [`cleanup`]: removes finished tasks after
//!   `ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION`, so that the state stays bounded.
//! - [`credentials`]: the provider that turns a credential source (task
//!   secret, key, credential helper, ECR, anonymous) into what a pull
//!   sends, just before it; [`helper`]: running `docker-credential-<name>`.
//! - [`data_dir_lock`]: one agent per `ECS_DATADIR`; [`ecs_records`]:
//!   ECS's immutable answers kept in its store across runs.
//! - [`follow`]: serve following the cluster's services on the poll
//!   schedule of `pullauth-poll`, pulling what they need.
//! - [`prefetch`]: which images a cluster's ECS services need, and with
//!   which credentials ECS would pull them.
//! - [`taskdef`]: task definition validation; [`metrics`]: Prometheus.
//! - [`memory`]: returning the memory of a burst to the system once it
//!   is over.
//! - [`watch`]: reloads serialized with SIGHUP, triggered by changes to the
//!   configuration files (watched by directory, debounced, by content).

pub mod agent;
pub mod api;
pub mod cleanup;
pub mod control_socket;
pub mod credentials;
pub mod data_dir_lock;
pub mod ecs_records;
pub mod follow;
pub mod helper;
pub mod introspection;
pub mod memory;
pub mod metrics;
pub mod prefetch;
pub mod puller;
pub mod server;
pub mod shared_plan;
pub mod single_flight;
pub mod taskdef;
pub mod watch;

pub use agent::{Agent, Identity, Settings};
pub use puller::Puller;
