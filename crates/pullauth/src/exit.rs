//! Exit statuses: 0 success, 1 an operation failed, 2 invalid input,
//! configuration or usage.

use std::process::ExitCode;

/// An operation failed (a pull, the engine, a read or write of the store at
/// runtime: a full disk, another process holding the state file too long).
pub const FAILED: u8 = 1;
/// Invalid input, configuration or usage.
pub const USAGE: u8 = 2;

/// Marks an error as the user's input being wrong (exit 2) when its type
/// alone does not say so.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The S3 env file could not be read. Exit 2 (configuration) when the
/// bucket or key does not exist or access is denied, else 1. Never holds
/// the object's content.
#[derive(Debug, thiserror::Error)]
#[error("cannot read --env-file {location}")]
pub struct S3EnvFileError {
    pub location: String,
    #[source]
    pub source: pullauth_aws::AwsError,
}

impl S3EnvFileError {
    /// Whether fixing the configuration (the URL, the bucket, the key, the
    /// instance role's policy) is what it takes.
    pub fn is_config(&self) -> bool {
        matches!(
            self.source.class(),
            pullauth_aws::ErrorClass::NotFound
                | pullauth_aws::ErrorClass::AccessDenied
                | pullauth_aws::ErrorClass::Invalid
        )
    }
}

/// 2 when any error in the chain is about configuration or input (a state
/// file that cannot be opened, is damaged or is not ours counts), else 1.
pub fn code_for(err: &anyhow::Error) -> ExitCode {
    let usage = err.chain().any(|cause| {
        cause.is::<pullauth_config::ConfigError>()
            || cause.is::<pullauth_config::EnvFileError>()
            || cause.is::<pullauth_resolve::AuthDataError>()
            || cause.is::<pullauth_resolve::ImageRefError>()
            || cause
                .downcast_ref::<pullauth_store::StoreError>()
                .is_some_and(pullauth_store::StoreError::is_setup)
            || cause
                .downcast_ref::<pullauth_docker::EngineSetupError>()
                .is_some_and(pullauth_docker::EngineSetupError::is_config)
            || cause.is::<pullauth_agent::control_socket::SocketError>()
            || cause.is::<pullauth_agent::data_dir_lock::LockError>()
            || cause.is::<UsageError>()
            || cause.is::<pullauth_aws::CaBundleError>()
            || cause.is::<pullauth_aws::EndpointEnvError>()
            || cause
                .downcast_ref::<S3EnvFileError>()
                .is_some_and(S3EnvFileError::is_config)
    });
    ExitCode::from(if usage { USAGE } else { FAILED })
}

#[cfg(test)]
mod tests {
    use pullauth_agent::data_dir_lock::DataDirLock;

    use super::*;

    fn shown(code: ExitCode) -> String {
        format!("{code:?}")
    }

    /// Both ways of failing to lock `ECS_DATADIR` (another agent holds it;
    /// the path cannot hold a lock file) are the operator's to fix: exit 2,
    /// also when wrapped in context. A plain failed operation stays 1.
    #[test]
    fn data_dir_lock_errors_are_configuration_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _held = DataDirLock::acquire(dir.path()).expect("first");
        let held = DataDirLock::acquire(dir.path()).expect_err("held");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").expect("write");
        let unusable = DataDirLock::acquire(&file).expect_err("not a directory");
        for err in [held, unusable] {
            let err = anyhow::Error::from(err).context("starting the agent");
            assert_eq!(
                shown(code_for(&err)),
                shown(ExitCode::from(USAGE)),
                "{err:#}"
            );
        }
        let failed = anyhow::anyhow!("the pull failed");
        assert_eq!(shown(code_for(&failed)), shown(ExitCode::from(FAILED)));
    }

    #[test]
    fn a_bad_ca_bundle_is_a_configuration_error() {
        let path = std::path::Path::new("/etc/pki/none.pem");
        let err = anyhow::Error::from(
            pullauth_aws::CaBundle::from_pem(path, b"not pem").expect_err("not PEM"),
        )
        .context("loading the AWS settings");
        assert_eq!(
            format!("{:?}", code_for(&err)),
            format!("{:?}", ExitCode::from(USAGE))
        );
        let shown = format!("{err:#}");
        assert!(
            shown.contains("AWS_CA_BUNDLE=\"/etc/pki/none.pem\": not a PEM certificate bundle"),
            "{shown}"
        );
    }
}
