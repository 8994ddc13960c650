//! pullauth's integration tests: one test binary, one module per area.
//!
//! They were one binary per file, and each of those ~20 binaries linked the
//! whole workspace and the AWS SDK and started its own engine, registries
//! and moto. As one binary they link once and share one [`Harness`] (one
//! engine, two registries) and one moto per run. Run one area with a
//! filter: `cargo test -p pullauth-integration --test it -- aws_pull::`.
//!
//! The tests skip themselves unless `PULLAUTH_INTEGRATION=1` (see
//! `integration/src/opt_in.rs`); `integration/test` sets it.
//!
//! [`Harness`]: pullauth_integration::Harness

mod agent;
mod audit;
mod aws;
mod aws_provider;
mod aws_pull;
mod bounds;
mod container_aws;
mod cred_helpers;
mod credential_helper;
mod ecr_engine;
mod engine_safety;
mod faults;
mod from_docker;
mod harness;
mod hostile;
mod prefetch;
mod pull;
mod s3_config;
mod store;
mod verify;
mod watch;
