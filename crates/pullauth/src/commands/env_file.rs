//! Reading `--env-file`: a local file, or an `s3://bucket/key` object
//! fetched with the default AWS credential chain (the instance's role).

use std::time::Duration;

use anyhow::Context;
use pullauth_aws::{Aws, AwsError, Call, S3Location, TimeLimits};
use pullauth_config::EnvFile;

use crate::cli::ConfigArgs;
use crate::exit::{S3EnvFileError, UsageError};
use crate::facts::is_s3;

/// The most fetching an S3 env file may take, credentials included (the
/// SDK's own per-attempt and per-operation limits apply inside it).
pub const S3_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads and parses `--env-file` as [`ConfigArgs::env_file`] selects it:
/// `None` when none is given (or an optional local one is absent).
pub fn read(args: &ConfigArgs) -> anyhow::Result<Option<EnvFile>> {
    let Some(path) = args.env_file() else {
        return Ok(None);
    };
    if !is_s3(path) {
        return Ok(Some(EnvFile::read(path)?));
    }
    let url = path
        .to_str()
        .ok_or_else(|| UsageError(format!("--env-file {}: not UTF-8", path.display())))?;
    let location = S3Location::parse(url).map_err(|e| UsageError(format!("--env-file: {e}")))?;
    let bytes = fetch(&location)?;
    // `bytes` is zeroized when dropped, after parsing.
    Ok(Some(EnvFile::from_bytes(&bytes, path)?))
}

/// `s3:GetObject` on a thread of its own (callers may be inside a runtime),
/// bounded by [`S3_FETCH_TIMEOUT`].
fn fetch(location: &S3Location) -> anyhow::Result<secrecy::zeroize::Zeroizing<Vec<u8>>> {
    let options = super::aws_options(false, pullauth_aws::OPERATION_TIMEOUT)?;
    // The fetch thread logs where this one does (HeldBack at start-up).
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let result = std::thread::scope(|scope| {
        scope
            .spawn(|| -> anyhow::Result<_> {
                let _logging = tracing::dispatcher::set_default(&dispatch);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the async runtime")?;
                Ok(runtime.block_on(async {
                    let fetch = async { Aws::from_env(options).await.get_object(location).await };
                    tokio::time::timeout(S3_FETCH_TIMEOUT, fetch)
                        .await
                        .unwrap_or_else(|_| {
                            Err(AwsError::Timeout {
                                call: Call {
                                    operation: "s3:GetObject",
                                    target: location.to_string(),
                                    principal: "the default credential chain".into(),
                                },
                                limits: TimeLimits::total(S3_FETCH_TIMEOUT),
                            })
                        })
                }))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the S3 fetch thread panicked"))
    })??;
    result.map_err(|source| {
        S3EnvFileError {
            location: location.to_string(),
            source,
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn call() -> Call {
        Call {
            operation: "s3:GetObject",
            target: "s3://b/k".into(),
            principal: "p".into(),
        }
    }

    #[test]
    fn missing_and_denied_are_configuration_unreachable_is_not() {
        let wrap = |source| {
            anyhow::Error::from(S3EnvFileError {
                location: "s3://b/k".into(),
                source,
            })
        };
        let missing = wrap(AwsError::NotFound {
            call: call(),
            what: "no such key".into(),
        });
        let denied = wrap(AwsError::AccessDenied {
            call: call(),
            code: "AccessDenied".into(),
            message: "no".into(),
        });
        let unreachable = wrap(AwsError::Unreachable {
            call: call(),
            detail: "refused".into(),
        });
        let code = |e| format!("{:?}", crate::exit::code_for(e));
        let usage = format!("{:?}", std::process::ExitCode::from(crate::exit::USAGE));
        let failed = format!("{:?}", std::process::ExitCode::from(crate::exit::FAILED));
        assert_eq!(code(&missing), usage);
        assert_eq!(code(&denied), usage);
        assert_eq!(code(&unreachable), failed);
    }

    #[test]
    fn an_optional_s3_env_file_is_still_read() {
        let args = ConfigArgs {
            env_file: Some(PathBuf::from("s3://bucket/key")),
            env_file_optional: true,
        };
        assert_eq!(args.env_file(), Some(Path::new("s3://bucket/key")));
    }
}
