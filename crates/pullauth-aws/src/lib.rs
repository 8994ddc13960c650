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
//! - [`Aws::get_object`] with [`S3Location`]: env files in S3.
//! - [`AwsError`]: what failed, for whom, classified ([`ErrorClass`]);
//!   never a value.
//!
//! Nothing is persisted. Secrets are [`secrecy::SecretString`]s with
//! redacting `Debug`.
//!
//! # Logging
//!
//! The SDK logs at `trace` level, on the target `aws_smithy_runtime`, the
//! deserialized output of every call and, for operations not marked
//! sensitive, the raw response body. `ecr:GetAuthorizationToken` is not
//! marked sensitive (its `AuthorizationData` derives `Debug` over the
//! token), so a subscriber that enables `trace` for `aws_smithy_runtime`
//! prints ECR tokens. A binary must cap the SDK's targets below `trace`:
//! add [`SDK_LOG_CAPS`] to its filter after the user's directives.

pub mod cache;
mod client;
mod error;
mod metrics;
mod parse;
mod role;
mod s3;

pub use cache::{Clock, SystemClock};
pub use client::{
    ATTEMPT_TIMEOUT, Aws, AwsOptions, CONNECT_TIMEOUT, ECR_REFRESH_AHEAD, EcrCredentials,
    MAX_ATTEMPTS, MAX_OBJECT_BYTES, OPERATION_TIMEOUT, Principal, ROLE_REFRESH_AHEAD, TokenInUse,
    USABLE_MARGIN,
};
pub use error::{AwsError, Call, ErrorClass};
pub use metrics::CountersSnapshot;
pub use parse::SecretCredentials;
pub use pullauth_resolve::EcrRegistry;
pub use role::RoleArn;
pub use s3::S3Location;

/// `tracing-subscriber` `EnvFilter` directives that keep the SDK's own
/// logging at `debug` or below, whatever `RUST_LOG` says: at `trace` it
/// prints ECR tokens (see the crate docs). Append them after the user's
/// directives (the most specific directive for a target wins; equal ones,
/// the last).
pub const SDK_LOG_CAPS: &[&str] = &[
    "aws_smithy_runtime=debug",
    "aws_smithy_runtime_api=debug",
    "aws_smithy_http_client=debug",
    "aws_smithy_http=debug",
    "aws_sigv4=debug",
    "aws_runtime=debug",
    "aws_config=debug",
    "aws_sdk_ecr=debug",
    "aws_sdk_secretsmanager=debug",
    "aws_sdk_s3=debug",
    "aws_sdk_sts=debug",
];
