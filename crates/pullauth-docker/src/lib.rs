//! Pulls images through the Docker Engine with the credentials the resolver
//! chose. This is the only crate that talks to bollard.
//!
//! - [`auth`] builds the `X-Registry-Auth` header the engine decodes.
//! - [`engine`] connects, pulls with retries and timeouts, and applies the
//!   ECS pull behaviors.
//! - [`error`] classifies failures; [`retry`] holds the backoff policy.
//! - [`verify`] reports whether credentials may read an image, unpulled.

pub mod auth;
pub mod engine;
pub mod error;
pub mod retry;
pub mod verify;

pub use auth::{InvalidHeader, RegistryAuth};
pub use engine::{
    DEFAULT_DOCKER_HOST, ENGINE_CALL_TIMEOUT, Engine, EngineSetupError, Obtained, Platform,
    PullEvent, PullOptions, PullStatus, Removal, Transport, VERIFY_TIMEOUT, Verified,
};
pub use error::{Identity, PullError};
pub use retry::RetryPolicy;
pub use verify::{VerifyOutcome, VerifyReport};
