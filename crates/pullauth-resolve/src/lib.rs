//! Which credentials apply to an image: the pure core of pullauth.
//!
//! - [`authdata`] parses `ECS_ENGINE_AUTH_DATA` in the `docker` and
//!   `dockercfg` shapes (and the `{"auths": ...}` wrapper of config.json).
//! - [`key`] normalizes the keys of that map into a host and a namespace.
//! - [`image`] parses image references with Docker's grammar.
//! - [`ecr`] recognizes Amazon ECR registry hosts (account, region, FIPS).
//! - [`source`] picks where an image's credentials come from (task secret,
//!   key, credential helper, ECR, anonymous), by a documented precedence.
//! - [`table`] indexes the keys by host and answers lookups in time that does
//!   not depend on how many keys are configured.
//! - [`docker_config`] turns a Docker `config.json` into `ECS_ENGINE_AUTH_DATA`.
//! - [`explain`] says, key by key, why each applies to an image or not; it
//!   agrees with the table's lookup on the winner.
//!
//! Nothing here does I/O; secrets stay inside [`secrecy::SecretString`].

pub mod authdata;
pub mod credentials;
pub mod docker_config;
pub mod ecr;
pub mod explain;
pub mod image;
pub mod key;
pub mod source;
pub mod table;

pub use authdata::{AuthDataError, AuthEntry};
pub use credentials::Credentials;
pub use ecr::{ECR_PUBLIC_HOSTS, EcrRegistry, NotEcr, ecr_public_host, partition_dns_suffix};
pub use explain::{Explanation, KeyVerdict, Reason};
pub use image::{ImageRef, ImageRefError};
pub use key::{DOCKER_HUB, HostPattern, KeyError, RegistryKey, USERINFO_REDACTED, masked};
pub use source::{
    SOURCE_CODES, Source, SourceExplanation, SourceKind, SourceVerdict, ecr_label, helper_server,
    source_code,
};
pub use table::{Entry, Origin, RegistryTable, Resolution, ServerLookup};

#[cfg(test)]
mod tests;
