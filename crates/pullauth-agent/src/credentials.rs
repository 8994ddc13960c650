//! The provider: turns a [`Source`] (pure, from `pullauth-resolve`) into
//! the [`Entry`] a pull sends, just before the pull. AWS sources call AWS
//! through one [`Aws`] per process, built on first use so that pulls
//! without AWS sources never touch AWS or IMDS. Nothing provided is
//! persisted; the entry's key names the source (`secretsmanager <ARN>`,
//! `helper <name>`, `ecr account X region Y`), never a secret. Credential
//! helpers run as child processes, bounded by [`HELPER_TIMEOUT`], once per
//! (helper, server URL) however many containers ask at once, their answers
//! kept for [`crate::helper::HELPER_CACHE_TTL`].
//!
//! [`Provider::credentials_for`] is the one way from an image to the
//! credentials it is pulled with: `pullauth pull`, `pullauth verify`, the
//! agent's pulls and `POST /v1/verify` all call it, so that no view can
//! compute an answer of its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use pullauth_aws::{Aws, AwsError, AwsOptions, RoleArn};
use pullauth_resolve::{
    Credentials, Entry, HostPattern, ImageRef, Origin, RegistryKey, RegistryTable, Source,
};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use crate::helper::{self, HELPER_TIMEOUT, HelperCache, HelperError};

/// After an ECR Public token could not be had for a principal (the default
/// chain, or a task's execution role), that principal's pulls of ECR
/// Public images go out anonymously without asking again for this long: on
/// a host with no AWS credentials, the default chain's probes (IMDS among
/// them) would otherwise delay every such pull. Other principals still ask:
/// a role that may have a token gets one.
pub const ECR_PUBLIC_RETRY_AFTER: Duration = Duration::from_secs(5 * 60);

/// What a task says about one container's credentials: its
/// `repositoryCredentials` secret and the task's execution role. The
/// default (neither) is a pull outside any task.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskCredentials<'a> {
    /// The container's `repositoryCredentials.credentialsParameter`.
    pub secret: Option<&'a str>,
    /// The role AWS sources are fetched as (`executionRoleArn`).
    pub role: Option<&'a RoleArn>,
}

/// The credentials one pull sends, and where they came from.
#[derive(Debug, Clone)]
pub struct Provided {
    /// The source's label (`key "r.io"`, `helper pass`, `anonymous`, ...).
    pub source: String,
    /// `None`: the pull is anonymous.
    pub entry: Option<Entry>,
}

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
    /// The source's kind code ([`Source::code`]), e.g. `task_secret`.
    pub kind: &'static str,
    pub error: ProvideCause,
}

/// Provides credentials; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Provider {
    aws: OnceCell<Aws>,
    options: AwsOptions,
    /// Helper answers, shared by concurrent callers and kept briefly.
    helpers: HelperCache,
    /// Where `docker-credential-*` programs are looked for (`None`: PATH).
    helper_dir: Option<PathBuf>,
    helper_timeout: Duration,
    /// When an ECR Public token was last refused, by principal (`None`:
    /// the default chain); entries older than [`ECR_PUBLIC_RETRY_AFTER`]
    /// are dropped at the next refusal.
    ecr_public_failed: std::sync::Mutex<HashMap<Option<RoleArn>, tokio::time::Instant>>,
}

impl Provider {
    /// A provider whose [`Aws`] is loaded from the environment the first
    /// time a source needs it. `options.ecr` says whether ECR hosts get
    /// automatic tokens.
    pub fn lazy(options: AwsOptions) -> Provider {
        Provider {
            aws: OnceCell::new(),
            options,
            helpers: HelperCache::default(),
            helper_dir: None,
            helper_timeout: HELPER_TIMEOUT,
            ecr_public_failed: std::sync::Mutex::default(),
        }
    }

    /// Looks for credential helpers in `dir` instead of PATH, and keeps
    /// their answers in `cache` (tests).
    pub fn with_helpers(mut self, dir: PathBuf, cache: HelperCache) -> Provider {
        self.helper_dir = Some(dir);
        self.helpers = cache;
        self
    }

    /// A provider using `aws` (tests, or a caller that has one already).
    pub fn with_aws(aws: Aws, ecr: bool) -> Provider {
        Provider {
            aws: OnceCell::new_with(Some(aws)),
            options: AwsOptions {
                ecr,
                ..AwsOptions::default()
            },
            helpers: HelperCache::default(),
            helper_dir: None,
            helper_timeout: HELPER_TIMEOUT,
            ecr_public_failed: std::sync::Mutex::default(),
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

    /// The source `image`'s credentials come from under `table`, for a
    /// container with `task`'s credentials: the pull's own selection
    /// (`RegistryTable::source`, with this provider's ECR switch).
    pub fn source<'t>(
        &self,
        table: &'t RegistryTable,
        image: &ImageRef,
        task: TaskCredentials<'t>,
    ) -> Source<'t> {
        table.source(image, task.secret, self.ecr_enabled())
    }

    /// The credentials a pull of `image` sends: the source by precedence
    /// ([`Provider::source`]), provided now. Every command and API that
    /// pulls or says what a pull would send calls this.
    pub async fn credentials_for(
        &self,
        table: &RegistryTable,
        image: &ImageRef,
        task: TaskCredentials<'_>,
    ) -> Result<Provided, ProvideError> {
        let source = self.source(table, image, task);
        let entry = self.provide(image, &source, task.role).await?;
        Ok(Provided {
            // An ECR Public pull that fell back to anonymous says so.
            source: match entry {
                Some(_) => source.to_string(),
                None => Source::Anonymous.to_string(),
            },
            entry,
        })
    }

    /// The entry `image`'s pull sends for `source`, fetched as `role` (or
    /// with the default chain): `None` for an anonymous pull.
    async fn provide(
        &self,
        image: &ImageRef,
        source: &Source<'_>,
        role: Option<&RoleArn>,
    ) -> Result<Option<Entry>, ProvideError> {
        let label = source.to_string();
        let fail = |error: AwsError| ProvideError {
            from: label.clone(),
            kind: source.code(),
            error: error.into(),
        };
        let principal = principal_name(role);
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
                    Origin::TaskSecret {
                        secret: (*secret).to_owned(),
                        principal,
                    },
                    Credentials::basic(found.username, found.password.expose_secret()),
                )))
            }
            Source::Helper { helper, server } => {
                let credentials = self
                    .helpers
                    .get_or_run(helper, server, || {
                        helper::get_in(
                            self.helper_dir.as_deref(),
                            helper,
                            server,
                            self.helper_timeout,
                        )
                    })
                    .await
                    .map_err(|error| ProvideError {
                        from: label.clone(),
                        kind: source.code(),
                        error: error.into(),
                    })?;
                Ok(Some(labelled(
                    image,
                    label.clone(),
                    Origin::Helper {
                        helper: (*helper).to_owned(),
                        server: server.clone(),
                    },
                    credentials,
                )))
            }
            Source::EcrPublic(host) => {
                // Public images are public: without a token (no AWS
                // credentials here, or no permission) the pull goes out
                // anonymously, as it did before ECR Public tokens.
                let failed = || {
                    self.ecr_public_failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                };
                let who = role.cloned();
                if failed()
                    .get(&who)
                    .is_some_and(|at| at.elapsed() < ECR_PUBLIC_RETRY_AFTER)
                {
                    return Ok(None);
                }
                match self.aws().await.ecr_public_credentials(host, role).await {
                    Ok(token) => Ok(Some(labelled(
                        image,
                        label.clone(),
                        Origin::EcrPublic {
                            host: (*host).to_owned(),
                            principal,
                        },
                        Credentials::basic(token.username, token.password.expose_secret()),
                    ))),
                    Err(error) => {
                        let mut failed = failed();
                        failed.retain(|_, at| at.elapsed() < ECR_PUBLIC_RETRY_AFTER);
                        failed.insert(who, tokio::time::Instant::now());
                        drop(failed);
                        tracing::info!(
                            image = %image,
                            error = %error,
                            retry_after_seconds = ECR_PUBLIC_RETRY_AFTER.as_secs(),
                            "no ECR Public token; pulling anonymously"
                        );
                        Ok(None)
                    }
                }
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
                    Origin::Ecr {
                        registry: registry.clone(),
                        principal,
                    },
                    Credentials::basic(token.username, token.password.expose_secret()),
                )))
            }
        }
    }
}

/// Whose credentials an AWS source is fetched with, for messages: the
/// task's role, or the default chain (as `pullauth_aws::Principal` shows
/// them).
fn principal_name(role: Option<&RoleArn>) -> String {
    match role {
        Some(role) => format!("role {role}"),
        None => "the default credential chain".to_owned(),
    }
}

/// An entry for `image`'s registry whose key is the source's label and
/// whose origin says which source it is.
pub fn labelled(
    image: &ImageRef,
    label: String,
    origin: Origin,
    credentials: Credentials,
) -> Entry {
    Entry {
        key: RegistryKey {
            written: label,
            host: HostPattern::Exact(image.registry.clone()),
            namespace: String::new(),
        },
        credentials,
        origin,
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
        let provided = provider
            .credentials_for(&table, &image, TaskCredentials::default())
            .await
            .expect("ok");
        assert!(provided.entry.is_none());
        assert_eq!(provided.source, "anonymous");
        assert!(
            provider.aws_if_built().is_none(),
            "AWS was loaded for an anonymous pull"
        );
    }

    /// Writes `docker-credential-<name>` that logs each run to `log` and
    /// answers `user`/`secret` after a short pause (so that concurrent
    /// callers overlap).
    fn counting_helper(dir: &std::path::Path, name: &str, log: &std::path::Path) {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("docker-credential-{name}"));
        let script = format!(
            "#!/bin/sh\nserver=$(cat)\necho \"$server\" >> '{}'\nsleep 0.2\n\
             echo '{{\"Username\":\"helped-user\",\"Secret\":\"canary-helper-pw\"}}'\n",
            log.display()
        );
        std::fs::write(&path, script).expect("write helper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn runs(log: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    // Regression (issue 17, finding 4): 100 containers of one image behind a
    // credsStore helper ran the helper 100 times. Now concurrent callers
    // share one run, and a later caller within the TTL reuses its answer;
    // another server URL is another run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_helper_run_serves_many_containers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("runs.log");
        counting_helper(dir.path(), "count", &log);
        let provider = Provider::lazy(AwsOptions::default())
            .with_helpers(dir.path().to_path_buf(), HelperCache::default());
        let data = r#"{"auths":{},"credsStore":"count"}"#;
        let table = RegistryTable::from_auth_data(
            pullauth_config::AuthType::Docker,
            &secrecy::SecretString::from(data),
        )
        .expect("valid");
        let image = ImageRef::parse("registry.example.com/app:1").expect("valid");
        let asks =
            (0..100).map(|_| provider.credentials_for(&table, &image, TaskCredentials::default()));
        let answers = futures_util::future::join_all(asks).await;
        for answer in &answers {
            let provided = answer.as_ref().expect("helper answered");
            assert_eq!(provided.source, "helper count");
            let entry = provided.entry.as_ref().expect("credentials");
            assert_eq!(entry.credentials.username.as_deref(), Some("helped-user"));
        }
        assert_eq!(runs(&log), ["registry.example.com"]);

        // Later, within the TTL: the cached answer.
        provider
            .credentials_for(&table, &image, TaskCredentials::default())
            .await
            .expect("cached");
        assert_eq!(runs(&log).len(), 1);

        // Another registry is another server URL: its own run.
        let other = ImageRef::parse("other.example.com/app").expect("valid");
        provider
            .credentials_for(&table, &other, TaskCredentials::default())
            .await
            .expect("answered");
        assert_eq!(runs(&log), ["registry.example.com", "other.example.com"]);
    }

    #[test]
    fn labelled_entry_names_the_source() {
        let image = ImageRef::parse("registry.example.com/app").expect("valid");
        let entry = labelled(
            &image,
            "secretsmanager my-secret".into(),
            Origin::TaskSecret {
                secret: "my-secret".into(),
                principal: "the default credential chain".into(),
            },
            Credentials::basic("alice", "canary-pw"),
        );
        assert_eq!(entry.key.written, "secretsmanager my-secret");
        assert_eq!(entry.config_key(), None);
        assert_eq!(pullauth_resolve::source_code(Some(&entry)), "task_secret");
        assert_eq!(entry.credentials.username.as_deref(), Some("alice"));
        assert!(!format!("{entry:?}").contains("canary-pw"));
    }
}
