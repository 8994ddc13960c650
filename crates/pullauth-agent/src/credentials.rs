//! The provider: turns a [`Source`] (pure, from `pullauth-resolve`) into
//! the [`Entry`] a pull sends, just before the pull. AWS sources call AWS
//! through one [`Aws`] per process, built on first use so that pulls
//! without AWS sources never touch AWS or IMDS. Nothing provided is
//! persisted; the entry's key names the source (`secretsmanager <ARN>`,
//! `helper <name>`, `ecr account X region Y`), never a secret. Credential
//! helpers run as child processes, bounded by [`HELPER_TIMEOUT`].

use pullauth_aws::{Aws, AwsError, AwsOptions, RoleArn};
use pullauth_resolve::{Credentials, Entry, HostPattern, ImageRef, RegistryKey, Source};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use crate::helper::{self, HELPER_TIMEOUT, HelperError};

/// What went wrong in a source.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProvideCause {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Helper(#[from] HelperError),
}

/// Why a source gave no credentials: names the source and the problem,
/// never a value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("could not get registry credentials from {from}: {error}")]
pub struct ProvideError {
    /// The source's label, e.g. `secretsmanager my-secret`.
    pub from: String,
    pub error: ProvideCause,
}

/// Provides credentials; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Provider {
    aws: OnceCell<Aws>,
    options: AwsOptions,
}

impl Provider {
    /// A provider whose [`Aws`] is loaded from the environment the first
    /// time a source needs it. `options.ecr` says whether ECR hosts get
    /// automatic tokens.
    pub fn lazy(options: AwsOptions) -> Provider {
        Provider {
            aws: OnceCell::new(),
            options,
        }
    }

    /// A provider using `aws` (tests, or a caller that has one already).
    pub fn with_aws(aws: Aws, ecr: bool) -> Provider {
        Provider {
            aws: OnceCell::new_with(Some(aws)),
            options: AwsOptions {
                ecr,
                ..AwsOptions::default()
            },
        }
    }

    /// Whether ECR hosts get automatic tokens (`PULLAUTH_ECR`).
    pub fn ecr_enabled(&self) -> bool {
        self.options.ecr
    }

    /// The AWS client, if one was built (for the APIs: tokens in use,
    /// counters). `None` means no pull has needed AWS yet.
    pub fn aws_if_built(&self) -> Option<&Aws> {
        self.aws.get()
    }

    /// The AWS client, built now if no source has needed it yet (for the
    /// ECS reads of prefetch, which share its caches and counters).
    pub async fn aws(&self) -> &Aws {
        self.aws
            .get_or_init(|| Aws::from_env(self.options.clone()))
            .await
    }

    /// The entry `image`'s pull sends for `source`, fetched as `role` (or
    /// with the default chain): `None` for an anonymous pull.
    pub async fn provide(
        &self,
        image: &ImageRef,
        source: &Source<'_>,
        role: Option<&RoleArn>,
    ) -> Result<Option<Entry>, ProvideError> {
        let label = source.to_string();
        let fail = |error: AwsError| ProvideError {
            from: label.clone(),
            error: error.into(),
        };
        match source {
            Source::Anonymous => Ok(None),
            Source::Static(entry) => Ok(Some((*entry).clone())),
            Source::TaskSecret(secret) => {
                let found = self
                    .aws()
                    .await
                    .secret_credentials(secret, role)
                    .await
                    .map_err(fail)?;
                Ok(Some(labelled(
                    image,
                    label.clone(),
                    Credentials::basic(found.username, found.password.expose_secret()),
                )))
            }
            Source::Helper { helper, server } => {
                let credentials =
                    helper::get(helper, server, HELPER_TIMEOUT)
                        .await
                        .map_err(|error| ProvideError {
                            from: label.clone(),
                            error: error.into(),
                        })?;
                Ok(Some(labelled(image, label.clone(), credentials)))
            }
            Source::Ecr(registry) => {
                let token = self
                    .aws()
                    .await
                    .ecr_credentials(registry, role)
                    .await
                    .map_err(fail)?;
                Ok(Some(labelled(
                    image,
                    label.clone(),
                    Credentials::basic(token.username, token.password.expose_secret()),
                )))
            }
        }
    }
}

/// An entry for `image`'s registry whose key is the source's label.
pub fn labelled(image: &ImageRef, label: String, credentials: Credentials) -> Entry {
    Entry {
        key: RegistryKey {
            written: label,
            host: HostPattern::Exact(image.registry.clone()),
            namespace: String::new(),
        },
        credentials,
    }
}

#[cfg(test)]
mod tests {
    use pullauth_resolve::RegistryTable;

    use super::*;

    #[tokio::test]
    async fn static_and_anonymous_need_no_aws() {
        let provider = Provider::lazy(AwsOptions::default());
        let table = RegistryTable::empty();
        let image = ImageRef::parse("busybox").expect("valid");
        let source = table.source(&image, None, true);
        assert!(
            provider
                .provide(&image, &source, None)
                .await
                .expect("ok")
                .is_none()
        );
        assert!(
            provider.aws_if_built().is_none(),
            "AWS was loaded for an anonymous pull"
        );
    }

    #[test]
    fn labelled_entry_names_the_source() {
        let image = ImageRef::parse("registry.example.com/app").expect("valid");
        let entry = labelled(
            &image,
            "secretsmanager my-secret".into(),
            Credentials::basic("alice", "canary-pw"),
        );
        assert_eq!(entry.key.written, "secretsmanager my-secret");
        assert_eq!(entry.credentials.username.as_deref(), Some("alice"));
        assert!(!format!("{entry:?}").contains("canary-pw"));
    }
}
