//! The AWS credential sources of an image pull; the only crate that
//! depends on the AWS SDK (as pullauth-docker is the only one that depends
//! on bollard).
//!
//! - [`Aws`] holds the SDK configuration (default chain: environment,
//!   profile, web identity, ECS container credentials, IMDSv2; standard
//!   endpoint settings such as `AWS_ENDPOINT_URL_ECR`), with a time limit
//!   and bounded retries on every call ([`AwsOptions`]).
//! - [`Aws::ecr_credentials`]: ECR tokens for an [`EcrRegistry`] (parsed,
//!   purely, by `pullauth-resolve`), cached per account, region, endpoint
//!   and principal by the single-flight [`cache`].
//! - [`Aws::secret_credentials`]: `username`/`password` from Secrets
//!   Manager, never cached here.
//! - [`RoleArn`]: calls made for a role use credentials from
//!   `sts:AssumeRole`, cached until shortly before they expire.
//! - [`Aws::get_object`] with [`S3Location`]: env files in S3; and
//!   [`Aws::s3_get_if_changed`] / [`Aws::s3_put_if`]: reads that answer
//!   [`S3Fetch::NotModified`] for an unchanged ETag, and conditional writes
//!   ([`PutCondition`]) whose lost race is
//!   [`AwsError::is_precondition_failed`] (the generated S3 client).
//! - [`Aws::ecs_services`] and [`Aws::ecs_task_definition`]: which task
//!   definitions a cluster's services run and which images they name
//!   (task definitions cached by ARN: they are immutable), the raw calls
//!   behind the [`EcsApi`] seam ([`Aws::with_ecs_api`] takes a fake), the
//!   immutable answers optionally kept across restarts ([`EcsRecords`]).
//! - [`AwsError`]: what failed, for whom, classified ([`ErrorClass`]);
//!   never a value.
//! - [`CaBundle`]: the CAs of `AWS_CA_BUNDLE`, added to the system's roots
//!   for every call ([`AwsOptions::ca_bundle`]).
//!
//! Nothing is persisted here but, through [`EcsRecords`] when given, ECS's
//! immutable answers (task definitions, service revisions), which hold no
//! secret. Secrets are [`secrecy::SecretString`]s with
//! redacting `Debug`.
//!
//! # Logging
//!
//! The SDK logs at `trace` level, on the target `aws_smithy_runtime`, the
//! deserialized output of every call and, for operations not marked
//! sensitive, the raw response body. `ecr:GetAuthorizationToken` is not
//! marked sensitive (its `AuthorizationData` derives `Debug` over the
//! token), so a subscriber that enables `trace` for `aws_smithy_runtime`
//! prints ECR tokens. A binary must cap the SDK's targets
//! ([`SDK_LOG_TARGETS`]) at [`SDK_MAX_SAFE_LEVEL`].

mod ca_bundle;
pub mod cache;
mod client;
mod ecs;
mod ecs_api;
mod endpoint_env;
mod error;
mod metrics;
mod parse;
mod partitions;
mod role;
mod s3;

pub use ca_bundle::{CA_BUNDLE_VAR, CaBundle, CaBundleError, MAX_CA_BUNDLE_BYTES};
pub use cache::{Clock, SystemClock};
pub use client::{
    ATTEMPT_TIMEOUT, Aws, AwsOptions, CONNECT_TIMEOUT, ECR_PUBLIC_REGION, ECR_REFRESH_AHEAD,
    EcrCredentials, MAX_ATTEMPTS, MAX_OBJECT_BYTES, OPERATION_TIMEOUT, Principal,
    ROLE_REFRESH_AHEAD, TokenInUse, USABLE_MARGIN,
};
pub use ecs::{
    DESCRIBE_SERVICE_REVISIONS_BATCH, EcsRecordKind, EcsRecords, EcsServices, IMDS_TIMEOUT,
    InstanceFacts, Pins, REVISIONS_REST, SERVICE_DEPLOYMENTS_READ, names_one_revision,
};
pub use ecs_api::{
    DescribedService, DescribedServices, EcsApi, EcsFailure, EcsFuture, ServiceDeployment,
    ServicesPage,
};
pub use endpoint_env::{EndpointEnvError, check_endpoint_env};
pub use error::{AwsError, Call, ErrorClass, TimeLimits};
pub use metrics::CountersSnapshot;
pub use parse::SecretCredentials;
pub use pullauth_resolve::EcrRegistry;
pub use role::RoleArn;
pub use s3::{PutCondition, S3Fetch, S3Location};

/// The tracing targets (module-path prefixes) of the SDK. A subscriber
/// must never enable them above [`SDK_MAX_SAFE_LEVEL`]: at `trace` they
/// print ECR tokens (see the crate docs). pullauth's binary already caps
/// every library at `warn` (crates/pullauth/src/logging.rs); these are
/// for whoever raises library levels.
pub const SDK_LOG_TARGETS: &[&str] = &[
    "aws_config",
    "aws_credential_types",
    "aws_runtime",
    "aws_sdk_ecr",
    "aws_sdk_ecs",
    "aws_sdk_s3",
    "aws_sdk_secretsmanager",
    "aws_sdk_sts",
    "aws_sigv4",
    "aws_smithy_http",
    "aws_smithy_http_client",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_types",
];

/// The most the SDK's targets may log without revealing a credential.
pub const SDK_MAX_SAFE_LEVEL: tracing::Level = tracing::Level::DEBUG;
