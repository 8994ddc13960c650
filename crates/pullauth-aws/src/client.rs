//! [`Aws`]: the SDK clients, their limits, and the caches in front of them.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_sdk_ecr::config::Credentials;
use aws_sdk_ecr::config::http::HttpResponse;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;
use aws_types::service_config::ServiceConfigKey;
use pullauth_resolve::EcrRegistry;
use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;

use crate::cache::{
    Clock, Expiring, ExpiringCache, Outcome, RETRY_FIRST, RETRY_MAX, RefreshPolicy, SystemClock,
};
use crate::ecs::TaskDefinitionCache;
use crate::error::{self, Call, TimeLimits};
use crate::metrics::{Counters, CountersSnapshot};
use crate::parse::{self, SecretCredentials};
use crate::{AwsError, CaBundle, RoleArn};

/// Default [`AwsOptions::attempt_timeout`]: the ECS agent's ECR HTTP
/// round-trip timeout (`roundtripTimeout` in agent/ecr/factory.go).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`AwsOptions::operation_timeout`]: every attempt and back-off of
/// one call, credentials resolution included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Default [`AwsOptions::connect_timeout`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default [`AwsOptions::max_attempts`]: the SDK's standard mode. Throttling
/// and transient errors (5xx, timeouts, connection resets) are retried with
/// jittered back-off; access denied and other client errors are not.
pub const MAX_ATTEMPTS: u32 = 3;
/// ECR tokens are refreshed when less than this remains, plus a per-key
/// jitter of up to the same again: the ECS agent's `MinimumJitterDuration`
/// (30 min, jittered by up to 30 min) in agent/dockerclient/dockerauth/ecr.go.
pub const ECR_REFRESH_AHEAD: Duration = Duration::from_secs(30 * 60);
/// Assumed-role credentials are refreshed when less than this (plus up to
/// one minute of jitter) remains.
pub const ROLE_REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);
/// A cached token or credential is never handed out with less than this
/// left: the pull that uses it needs time.
pub const USABLE_MARGIN: Duration = Duration::from_secs(60);
/// Largest S3 object [`Aws::get_object`] reads (an env file, not a blob).
pub const MAX_OBJECT_BYTES: u64 = 1024 * 1024;
/// The one region that serves `ecr-public:GetAuthorizationToken`.
pub const ECR_PUBLIC_REGION: &str = "us-east-1";

/// How the SDK behaves; [`AwsOptions::default`] uses the constants above.
#[derive(Debug, Clone)]
pub struct AwsOptions {
    /// Whether [`Aws::ecr_credentials`] may fetch tokens. Off for hosts that
    /// must not talk to ECR on their own (the caller maps ECR hosts to
    /// anonymous or static credentials instead).
    pub ecr: bool,
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_attempts: u32,
    /// `RoleSessionName` of `sts:AssumeRole`, visible in CloudTrail.
    pub session_name: String,
    /// The clock of the caches (tests move it).
    pub clock: Arc<dyn Clock>,
    /// CAs trusted in addition to the system's roots (`AWS_CA_BUNDLE`,
    /// read by the caller with [`CaBundle::from_env`] so that a bad file is
    /// a startup error).
    pub ca_bundle: Option<CaBundle>,
    /// Whether ECS calls are paced by the client-side limiter (see
    /// [`Aws::ecs_call_rate`]): on for the long-running follower, whose polls a
    /// whole fleet makes, and then the ECS client makes a single attempt
    /// per call (the poll schedule retries; a throttled call ends the
    /// poll); off for a one-shot `prefetch`, which reads ECS as fast as one
    /// caller may, throttles and transient errors retried by the SDK with
    /// back-off (`max_attempts`).
    pub pace_ecs: bool,
    /// Where described task definitions and service revisions are kept
    /// across restarts (the agent gives `ECS_DATADIR`'s store); `None`:
    /// in memory only.
    pub ecs_records: Option<Arc<dyn crate::EcsRecords>>,
}

impl Default for AwsOptions {
    fn default() -> Self {
        AwsOptions {
            ecr: true,
            attempt_timeout: ATTEMPT_TIMEOUT,
            operation_timeout: OPERATION_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            max_attempts: MAX_ATTEMPTS,
            session_name: format!("pullauth-{}", std::process::id()),
            clock: Arc::new(SystemClock),
            ca_bundle: None,
            pace_ecs: true,
            ecs_records: None,
        }
    }
}

/// Credentials for one pull from an ECR registry.
#[derive(Clone)]
pub struct EcrCredentials {
    /// `AWS`, as decoded from the token.
    pub username: String,
    pub password: SecretString,
    pub expires_at: SystemTime,
    /// `https://<account>.dkr.ecr.<region>.amazonaws.com`, as ECR returned it.
    pub proxy_endpoint: String,
}

impl fmt::Debug for EcrCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcrCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("proxy_endpoint", &self.proxy_endpoint)
            .finish()
    }
}

/// Whose credentials a call uses. Part of the ECR cache key: for a role it
/// holds the assumed credentials' access key id too, so that credentials
/// of a recreated role (same ARN, new credentials) never get a token
/// fetched with the old ones (cf. amazon-ecs-agent#2137; the agent's cache
/// key has `roleARN` and `credentialsID`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    /// The default credential chain (environment, profile, web identity,
    /// ECS container credentials, IMDSv2).
    Default,
    Role {
        arn: RoleArn,
        access_key_id: String,
    },
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Default => f.write_str("the default credential chain"),
            Principal::Role { arn, .. } => write!(f, "role {arn}"),
        }
    }
}

/// A cached ECR token, as [`Aws::ecr_tokens_in_use`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInUse {
    pub registry: EcrRegistry,
    /// The endpoint override the token came from, if any.
    pub endpoint: Option<String>,
    pub principal: Principal,
    pub expires_at: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    account: String,
    region: String,
    fips: bool,
    endpoint: Option<String>,
    principal: Principal,
    /// The registry as parsed, to report (its host, partition, ...).
    registry: EcrRegistry,
}

#[derive(Clone)]
struct EcrToken {
    username: String,
    password: SecretString,
    proxy_endpoint: String,
}

impl From<Expiring<EcrToken>> for EcrCredentials {
    fn from(token: Expiring<EcrToken>) -> EcrCredentials {
        EcrCredentials {
            username: token.value.username,
            password: token.value.password,
            expires_at: token.expires_at,
            proxy_endpoint: token.value.proxy_endpoint,
        }
    }
}

/// The AWS credential sources: ECR tokens, Secrets Manager secrets, S3
/// objects, assumed roles. Cheap to clone (one `Arc`); clones share the
/// caches and counters.
#[derive(Debug, Clone)]
pub struct Aws {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: SdkConfig,
    pub(crate) options: AwsOptions,
    tokens: ExpiringCache<TokenKey, EcrToken>,
    /// ECR Public tokens, by principal and endpoint override.
    public_tokens: ExpiringCache<(Principal, Option<String>), EcrToken>,
    roles: ExpiringCache<RoleArn, Credentials>,
    /// Described task definitions (immutable), by ARN and `family:revision`.
    pub(crate) task_definitions: TaskDefinitionCache,
    /// Service revisions (the digests ECS pinned), by ARN.
    pub(crate) revisions: crate::ecs::RevisionCache,
    /// This instance's IMDS facts, read once.
    pub(crate) instance_facts: tokio::sync::OnceCell<Option<crate::ecs::InstanceFacts>>,
    /// Paces every ECS call of this process (see [`crate::ecs::EcsPacer`]).
    pub(crate) ecs_pacer: crate::ecs::EcsPacer,
    /// The raw ECS calls: the SDK's client, or what [`Aws::with_ecs_api`]
    /// was given.
    pub(crate) ecs: Arc<dyn crate::EcsApi>,
    pub(crate) counters: Counters,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aws")
            .field("region", &self.config.region())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Aws {
    /// Loads the SDK configuration the standard way: region and endpoints
    /// from the environment and profile (`AWS_REGION`, `AWS_ENDPOINT_URL`,
    /// `AWS_ENDPOINT_URL_ECR`, ...), credentials from the default chain.
    pub async fn from_env(options: AwsOptions) -> Aws {
        Aws::from_loader(aws_config::defaults(BehaviorVersion::latest()), options).await
    }

    /// Like [`Aws::from_env`], starting from `loader` (for explicit
    /// settings: a region, an endpoint, static credentials in tests). The
    /// HTTP client (trusting `options.ca_bundle` too), timeouts and retries
    /// of `options` are applied on top.
    pub async fn from_loader(loader: ConfigLoader, options: AwsOptions) -> Aws {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(options.connect_timeout)
            .operation_attempt_timeout(options.attempt_timeout)
            .operation_timeout(options.operation_timeout)
            .build();
        let config = loader
            .http_client(https_client(options.ca_bundle.as_ref()))
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(options.max_attempts))
            .load()
            .await;
        Aws::from_sdk_config(config, options)
    }

    /// Wraps an already loaded configuration as is (its HTTP client,
    /// timeouts and retries are the caller's; the ECS client makes one
    /// attempt per call when `options.pace_ecs`, see
    /// [`AwsOptions::pace_ecs`]).
    pub fn from_sdk_config(config: SdkConfig, options: AwsOptions) -> Aws {
        Aws::build(
            config,
            options,
            |config, options, aws| {
                Arc::new(crate::ecs_api::SdkEcs::new(
                    config,
                    options.pace_ecs,
                    options.max_attempts,
                    aws.clone(),
                ))
            },
            tokio::sync::OnceCell::new(),
        )
    }

    /// An `Aws` whose ECS calls go to `ecs` (a fake: the paused-time tests,
    /// the fleet simulation), with the caches, records and pacing of
    /// `options` above it, as the agent runs them. Nothing else is
    /// configured: no region, no credentials, and IMDS is never read (the
    /// instance's facts are unknown), so only the ECS reads are of use.
    pub fn with_ecs_api(ecs: Arc<dyn crate::EcsApi>, options: AwsOptions) -> Aws {
        let config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .build();
        Aws::build(
            config,
            options,
            |_, _, _| ecs,
            tokio::sync::OnceCell::new_with(Some(None)),
        )
    }

    fn build(
        config: SdkConfig,
        options: AwsOptions,
        ecs: impl FnOnce(&SdkConfig, &AwsOptions, &std::sync::Weak<Inner>) -> Arc<dyn crate::EcsApi>,
        instance_facts: tokio::sync::OnceCell<Option<crate::ecs::InstanceFacts>>,
    ) -> Aws {
        let clock = options.clock.clone();
        let ecs_pacer = crate::ecs::EcsPacer::new(options.pace_ecs);
        Aws {
            inner: Arc::new_cyclic(|aws| Inner {
                ecs: ecs(&config, &options, aws),
                config,
                tokens: ExpiringCache::new(
                    clock.clone(),
                    RefreshPolicy {
                        ahead: ECR_REFRESH_AHEAD,
                        jitter: ECR_REFRESH_AHEAD,
                        usable_margin: USABLE_MARGIN,
                        retry_first: RETRY_FIRST,
                        retry_max: RETRY_MAX,
                    },
                ),
                public_tokens: ExpiringCache::new(
                    clock.clone(),
                    RefreshPolicy {
                        ahead: ECR_REFRESH_AHEAD,
                        jitter: ECR_REFRESH_AHEAD,
                        usable_margin: USABLE_MARGIN,
                        retry_first: RETRY_FIRST,
                        retry_max: RETRY_MAX,
                    },
                ),
                roles: ExpiringCache::new(
                    clock,
                    RefreshPolicy {
                        ahead: ROLE_REFRESH_AHEAD,
                        jitter: Duration::from_secs(60),
                        usable_margin: USABLE_MARGIN,
                        retry_first: RETRY_FIRST,
                        retry_max: RETRY_MAX,
                    },
                ),
                options,
                task_definitions: TaskDefinitionCache::default(),
                revisions: crate::ecs::RevisionCache::default(),
                instance_facts,
                ecs_pacer,
                counters: Counters::default(),
            }),
        }
    }

    /// The region of the default chain, if one is configured.
    pub fn region(&self) -> Option<&str> {
        self.inner.config.region().map(Region::as_ref)
    }

    /// `result`, its failure counted by class in the AWS failure counters.
    pub(crate) fn counted<T>(&self, result: Result<T, AwsError>) -> Result<T, AwsError> {
        if let Err(e) = &result {
            self.inner.counters.failure(e.class());
        }
        result
    }

    /// Credentials for pulling from `registry`, as `role` or with the
    /// default chain: `ecr:GetAuthorizationToken` in the registry's region
    /// (FIPS endpoint for `dkr.ecr-fips` hosts, unless an endpoint override
    /// is configured), cached and refreshed ahead of expiry (see
    /// [`crate::cache`]).
    pub async fn ecr_credentials(
        &self,
        registry: &EcrRegistry,
        role: Option<&RoleArn>,
    ) -> Result<EcrCredentials, AwsError> {
        self.counted(self.ecr_credentials_inner(registry, role).await)
    }

    async fn ecr_credentials_inner(
        &self,
        registry: &EcrRegistry,
        role: Option<&RoleArn>,
    ) -> Result<EcrCredentials, AwsError> {
        if !self.inner.options.ecr {
            return Err(AwsError::EcrDisabled {
                host: registry.host.clone(),
            });
        }
        let (principal, credentials) = self.principal(role).await?;
        let endpoint = self.endpoint_override("ECR");
        let key = TokenKey {
            account: registry.account.clone(),
            region: registry.region.clone(),
            fips: registry.fips,
            endpoint: endpoint.clone(),
            principal: principal.clone(),
            registry: registry.clone(),
        };
        let call = Call {
            operation: "ecr:GetAuthorizationToken",
            target: format!("registry {}", registry.host),
            principal: principal.to_string(),
        };
        let (token, outcome) = self
            .inner
            .tokens
            .get(&key, &call, || {
                self.inner
                    .counters
                    .add(&self.inner.counters.ecr_token_fetches);
                // A task of its own (see crate::cache): owns what it uses.
                let (aws, registry, call) = (self.clone(), registry.clone(), call.clone());
                async move {
                    aws.fetch_ecr_token(&registry, endpoint.is_some(), credentials, call)
                        .await
                }
            })
            .await?;
        match &outcome {
            Outcome::Hit => self.inner.counters.add(&self.inner.counters.ecr_cache_hits),
            Outcome::Fetched => {}
            Outcome::FetchedExpired => tracing::warn!(
                registry = %registry,
                expires_at = ?token.expires_at,
                "ECR returned a token that has already expired by this host's clock; using it once, not caching it"
            ),
            Outcome::Stale { error, first } => {
                self.inner
                    .counters
                    .add(&self.inner.counters.ecr_stale_served);
                // Once per failed refresh, not once per pull that gets the
                // cached token meanwhile.
                if *first {
                    self.inner.counters.failure(error.class());
                    tracing::warn!(
                        registry = %registry,
                        expires_at = ?token.expires_at,
                        error = %error,
                        "refreshing the ECR token failed; using the cached one until it expires"
                    );
                }
            }
        }
        Ok(token.into())
    }

    /// Credentials for pulling from ECR Public (`public.ecr.aws`, `host`),
    /// as `role` or with the default chain:
    /// `ecr-public:GetAuthorizationToken` in us-east-1 (the only region
    /// that serves it), cached and refreshed ahead of expiry like ECR
    /// tokens. The endpoint override is `AWS_ENDPOINT_URL_ECR_PUBLIC`,
    /// else `AWS_ENDPOINT_URL`.
    pub async fn ecr_public_credentials(
        &self,
        host: &str,
        role: Option<&RoleArn>,
    ) -> Result<EcrCredentials, AwsError> {
        self.counted(self.ecr_public_credentials_inner(host, role).await)
    }

    async fn ecr_public_credentials_inner(
        &self,
        host: &str,
        role: Option<&RoleArn>,
    ) -> Result<EcrCredentials, AwsError> {
        if !self.inner.options.ecr {
            return Err(AwsError::EcrDisabled {
                host: host.to_owned(),
            });
        }
        let (principal, credentials) = self.principal(role).await?;
        let endpoint = self.endpoint_override("ECR PUBLIC");
        let call = Call {
            operation: "ecr-public:GetAuthorizationToken",
            target: format!("registry {host}"),
            principal: principal.to_string(),
        };
        let (token, _) = self
            .inner
            .public_tokens
            .get(&(principal, endpoint), &call, || {
                self.inner
                    .counters
                    .add(&self.inner.counters.ecr_token_fetches);
                // A task of its own (see crate::cache): owns what it uses.
                let (aws, host, call) = (self.clone(), host.to_owned(), call.clone());
                async move { aws.fetch_ecr_public_token(&host, credentials, call).await }
            })
            .await?;
        Ok(token.into())
    }

    async fn fetch_ecr_public_token(
        &self,
        host: &str,
        credentials: Option<Credentials>,
        call: Call,
    ) -> Result<Expiring<EcrToken>, AwsError> {
        let mut builder = aws_sdk_ecrpublic::config::Builder::from(&self.inner.config)
            .region(Region::new(ECR_PUBLIC_REGION));
        if let Some(credentials) = credentials {
            builder = builder.credentials_provider(credentials);
        }
        let client = aws_sdk_ecrpublic::Client::from_conf(builder.build());
        let output = match client.get_authorization_token().send().await {
            Ok(output) => output,
            Err(e) => {
                return Err(self
                    .sdk_error_at(
                        "ECR PUBLIC",
                        Some(ECR_PUBLIC_REGION),
                        call.clone(),
                        e,
                        |_| None,
                    )
                    .await);
            }
        };
        let Some(data) = output.authorization_data() else {
            return Err(AwsError::BadResponse {
                call,
                problem: "no authorization data".into(),
            });
        };
        self.ecr_token(
            call,
            data.authorization_token(),
            data.expires_at(),
            format!("https://{host}"),
        )
    }

    async fn fetch_ecr_token(
        &self,
        registry: &EcrRegistry,
        endpoint_overridden: bool,
        credentials: Option<Credentials>,
        call: Call,
    ) -> Result<Expiring<EcrToken>, AwsError> {
        let mut builder = aws_sdk_ecr::config::Builder::from(&self.inner.config)
            .region(Region::new(registry.region.clone()));
        // The registry host's own API endpoint (its partition's, FIPS or
        // dual-stack as the host is, whatever AWS_USE_FIPS_ENDPOINT says;
        // the partitions tests hold it to the SDK's resolver). An endpoint override
        // (AWS_ENDPOINT_URL, tests, proxies) wins, as in the ECS agent's
        // agent/ecr/factory.go.
        if !endpoint_overridden {
            builder = builder.endpoint_url(registry.api_endpoint());
        }
        if let Some(credentials) = credentials {
            builder = builder.credentials_provider(credentials);
        }
        let client = aws_sdk_ecr::Client::from_conf(builder.build());
        // `registryIds` is deprecated (a token serves every registry the
        // principal may read) but still decides the proxy endpoint ECR
        // returns; the ECS agent sends it too (agent/ecr/client.go).
        #[allow(deprecated)]
        let request = client
            .get_authorization_token()
            .registry_ids(&registry.account);
        let endpoint = self
            .endpoint_override("ECR")
            .unwrap_or_else(|| registry.api_endpoint());
        let output = request.send().await.map_err(|e| {
            self.sdk_error(call.clone(), e, |_| None)
                .at_endpoint(&endpoint)
        })?;
        let [data] = output.authorization_data() else {
            return Err(AwsError::BadResponse {
                call,
                problem: format!(
                    "{} authorization data entries instead of 1",
                    output.authorization_data().len()
                ),
            });
        };
        self.ecr_token(
            call,
            data.authorization_token(),
            data.expires_at(),
            data.proxy_endpoint()
                .map_or_else(|| format!("https://{}", registry.host), str::to_string),
        )
    }

    /// The token of an ECR or ECR Public `GetAuthorizationToken` answer:
    /// base64 of `user:password`, with a plausible expiry.
    fn ecr_token(
        &self,
        call: Call,
        token: Option<&str>,
        expires_at: Option<&aws_smithy_types::DateTime>,
        proxy_endpoint: String,
    ) -> Result<Expiring<EcrToken>, AwsError> {
        let bad = |problem: String| AwsError::BadResponse {
            call: call.clone(),
            problem,
        };
        let token = token.ok_or_else(|| bad("no authorization token".into()))?;
        let (username, password) =
            parse::decode_ecr_token(token).map_err(|problem| bad(problem.to_string()))?;
        let expires_at = expires_at.ok_or_else(|| bad("no expiry".into()))?;
        let expires_at = parse::plausible_expiry(*expires_at, self.inner.options.clock.now())
            .map_err(|problem| bad(problem.into()))?;
        Ok(Expiring {
            value: EcrToken {
                username,
                password,
                proxy_endpoint,
            },
            expires_at,
        })
    }

    /// The ECR tokens in the cache (usable ones only), soonest expiry first.
    /// Shows what is held and until when, never a token.
    pub fn ecr_tokens_in_use(&self) -> Vec<TokenInUse> {
        self.inner
            .tokens
            .in_use()
            .into_iter()
            .map(|(key, expires_at)| TokenInUse {
                registry: key.registry,
                endpoint: key.endpoint,
                principal: key.principal,
                expires_at,
            })
            .collect()
    }

    /// `username` and `password` from a Secrets Manager secret (ARN or
    /// name), read as `role` or with the default chain. The secret's region
    /// is the one in its ARN, else the default region. Not cached: the
    /// caller fetches once per task and secret, and keeps the value in
    /// memory only.
    pub async fn secret_credentials(
        &self,
        secret: &str,
        role: Option<&RoleArn>,
    ) -> Result<SecretCredentials, AwsError> {
        self.counted(self.secret_credentials_inner(secret, role).await)
    }

    async fn secret_credentials_inner(
        &self,
        secret: &str,
        role: Option<&RoleArn>,
    ) -> Result<SecretCredentials, AwsError> {
        let (principal, credentials) = self.principal(role).await?;
        let call = Call {
            operation: "secretsmanager:GetSecretValue",
            target: format!("secret {secret}"),
            principal: principal.to_string(),
        };
        let mut builder = aws_sdk_secretsmanager::config::Builder::from(&self.inner.config);
        if let Some(region) = arn_region(secret) {
            builder = builder.region(Region::new(region.to_string()));
        }
        if let Some(credentials) = credentials {
            builder = builder.credentials_provider(credentials);
        }
        let client = aws_sdk_secretsmanager::Client::from_conf(builder.build());
        self.inner.counters.add(&self.inner.counters.secret_fetches);
        let output = match client.get_secret_value().secret_id(secret).send().await {
            Ok(output) => output,
            Err(e) => {
                let not_found = |code: &str| {
                    (code == "ResourceNotFoundException").then(|| "no such secret".to_string())
                };
                return Err(self
                    .sdk_error_at("Secrets Manager", arn_region(secret), call, e, not_found)
                    .await);
            }
        };
        let bad = |problem: String| AwsError::BadSecret {
            secret: secret.to_string(),
            problem,
        };
        if output.secret_binary().is_some() {
            return Err(bad(
                "the secret is binary (SecretBinary); store {\"username\",\"password\"} JSON as SecretString".into(),
            ));
        }
        let Some(text) = output.secret_string.map(Zeroizing::new) else {
            return Err(bad("the secret has no value (no SecretString)".into()));
        };
        parse::parse_secret_string(&text).map_err(bad)
    }

    /// The counters so far.
    pub fn counters(&self) -> CountersSnapshot {
        self.inner.counters.snapshot()
    }

    /// The principal for `role` and, for a role, its assumed credentials
    /// (cached until shortly before they expire).
    async fn principal(
        &self,
        role: Option<&RoleArn>,
    ) -> Result<(Principal, Option<Credentials>), AwsError> {
        let Some(role) = role else {
            return Ok((Principal::Default, None));
        };
        let call = Call {
            operation: "sts:AssumeRole",
            target: format!("role {role}"),
            principal: Principal::Default.to_string(),
        };
        let (credentials, _) = self
            .inner
            .roles
            .get(role, &call, || {
                let (aws, role, call) = (self.clone(), role.clone(), call.clone());
                async move { aws.assume_role(&role, call).await }
            })
            .await?;
        let principal = Principal::Role {
            arn: role.clone(),
            access_key_id: credentials.value.access_key_id().to_string(),
        };
        Ok((principal, Some(credentials.value)))
    }

    async fn assume_role(
        &self,
        role: &RoleArn,
        call: Call,
    ) -> Result<Expiring<Credentials>, AwsError> {
        self.inner
            .counters
            .add(&self.inner.counters.role_assumptions);
        let sent = aws_sdk_sts::Client::new(&self.inner.config)
            .assume_role()
            .role_arn(role.as_str())
            .role_session_name(&self.inner.options.session_name)
            .send()
            .await;
        let output = match sent {
            Ok(output) => output,
            Err(e) => {
                let not_found =
                    |code: &str| (code == "NoSuchEntity").then(|| "no such role".to_string());
                return Err(self
                    .sdk_error_at("STS", None, call.clone(), e, not_found)
                    .await);
            }
        };
        let bad = |problem: &str| AwsError::BadResponse {
            call: call.clone(),
            problem: problem.to_string(),
        };
        let c = output.credentials().ok_or_else(|| bad("no credentials"))?;
        let expires_at = parse::plausible_expiry(*c.expiration(), self.inner.options.clock.now())
            .map_err(bad)?;
        Ok(Expiring {
            value: Credentials::new(
                c.access_key_id(),
                c.secret_access_key(),
                Some(c.session_token().to_string()),
                Some(expires_at),
                "pullauth-assume-role",
            ),
            expires_at,
        })
    }

    /// The endpoint the SDK will use for `service_id` instead of AWS's,
    /// resolved as the generated clients resolve it
    /// (`AWS_ENDPOINT_URL_<SERVICE>`, the profile, then `AWS_ENDPOINT_URL`).
    pub(crate) fn endpoint_override(&self, service_id: &str) -> Option<String> {
        let config = &self.inner.config;
        if config.get_origin("endpoint_url").is_client_config() {
            return config.endpoint_url().map(str::to_string);
        }
        ServiceConfigKey::builder()
            .service_id(service_id)
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .ok()
            .and_then(|key| config.service_config()?.load_config(key))
            .or_else(|| config.endpoint_url().map(str::to_string))
    }

    /// Where a generated client's call of `service_id` (`Secrets Manager`,
    /// `STS`, `ECR PUBLIC`, `ECS`) went, for an unreachable endpoint's message:
    /// the endpoint override, else what the linked SDK's endpoint rules
    /// give for `region` (else the configured one) and the configured FIPS
    /// and dual-stack settings. `None` when neither says.
    pub(crate) async fn called_endpoint(
        &self,
        service_id: &str,
        region: Option<&str>,
    ) -> Option<String> {
        if let Some(url) = self.endpoint_override(service_id) {
            return Some(url);
        }
        let config = &self.inner.config;
        let region = match region {
            Some(region) => region.to_owned(),
            None => config.region()?.to_string(),
        };
        let (fips, dual_stack) = (
            config.use_fips().unwrap_or(false),
            config.use_dual_stack().unwrap_or(false),
        );
        macro_rules! resolve {
            ($sdk:ident) => {{
                use $sdk::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
                let params = Params::builder()
                    .region(region)
                    .use_fips(fips)
                    .use_dual_stack(dual_stack)
                    .build()
                    .ok()?;
                DefaultResolver::new()
                    .resolve_endpoint(&params)
                    .await
                    .ok()?
                    .url()
                    .to_owned()
            }};
        }
        Some(match service_id {
            "Secrets Manager" => resolve!(aws_sdk_secretsmanager),
            "STS" => resolve!(aws_sdk_sts),
            "ECR PUBLIC" => resolve!(aws_sdk_ecrpublic),
            "ECS" => resolve!(aws_sdk_ecs),
            _ => return None,
        })
    }

    /// `error` as [`Aws::sdk_error`] classifies it, an unreachable
    /// endpoint named by host and port ([`Aws::called_endpoint`]).
    pub(crate) async fn sdk_error_at<E>(
        &self,
        service_id: &str,
        region: Option<&str>,
        call: Call,
        err: SdkError<E, HttpResponse>,
        not_found: impl Fn(&str) -> Option<String>,
    ) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let error = self.sdk_error(call, err, not_found);
        if !matches!(error, AwsError::Unreachable { .. }) {
            return error;
        }
        match self.called_endpoint(service_id, region).await {
            Some(endpoint) => error.at_endpoint(&endpoint),
            None => error,
        }
    }

    /// The limits every SDK call runs under: an attempt that times out is
    /// retried like any transient failure, so the real bound is the
    /// attempts' (often well before the total's).
    pub(crate) fn time_limits(&self) -> TimeLimits {
        let options = &self.inner.options;
        TimeLimits {
            per_attempt: Some(options.attempt_timeout),
            attempts: options.max_attempts,
            total: options.operation_timeout,
        }
    }

    pub(crate) fn sdk_error<E>(
        &self,
        call: Call,
        err: SdkError<E, HttpResponse>,
        not_found: impl Fn(&str) -> Option<String>,
    ) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        if let Some(detail) = credentials_problem(&err) {
            return AwsError::NoCredentials { call, detail };
        }
        match &err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                // Without a code (an error body the SDK cannot parse, as
                // moto's XML denials on JSON APIs), the status decides.
                let status = service.raw().status().as_u16();
                // A success status with an error means the body could not
                // be read as this call's answer (not JSON, or JSON of
                // another shape). Its text is not quoted: it could be a
                // secret's answer.
                if (200..300).contains(&status) && e.code().is_none() {
                    let problem = format!(
                        "HTTP {status}, but the body is not an answer to {} (not JSON, or JSON of another shape); is the endpoint really AWS?",
                        call.operation
                    );
                    return AwsError::BadResponse { call, problem };
                }
                let code = e.code().or(match status {
                    401 | 403 => Some("AccessDenied"),
                    429 => Some("Throttling"),
                    _ => None,
                });
                error::from_service(call, code, e.message(), not_found)
            }
            SdkError::TimeoutError(_) => AwsError::Timeout {
                call,
                limits: self.time_limits(),
            },
            SdkError::DispatchFailure(failure) if failure.is_timeout() => AwsError::Timeout {
                call,
                limits: self.time_limits(),
            },
            SdkError::DispatchFailure(failure) if failure.is_io() => AwsError::Unreachable {
                call,
                detail: unreachable_detail(&err),
            },
            SdkError::ResponseError(_) => AwsError::BadResponse {
                call,
                problem: format!("the response could not be read: {}", chain(&err)),
            },
            _ => AwsError::Unreachable {
                call,
                detail: unreachable_detail(&err),
            },
        }
    }
}

/// The HTTPS client of every SDK call: rustls over ring (see Cargo.toml for
/// why not the SDK's default aws-lc). It trusts the system's roots
/// (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else the usual files such as
/// /etc/ssl/certs/ca-certificates.crt, which the container image carries)
/// and the certificates of `bundle`. Host names are resolved by the C
/// library's getaddrinfo (on a thread): a static glibc resolves through
/// /etc/hosts and /etc/resolv.conf without NSS modules.
pub(crate) fn https_client(bundle: Option<&CaBundle>) -> aws_sdk_ecr::config::SharedHttpClient {
    let mut trust = tls::TrustStore::default();
    if let Some(bundle) = bundle {
        // Checked by CaBundle (the client would panic on a bad one).
        trust = trust.with_pem_certificate(bundle.pem());
    }
    let context = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .expect("TlsContextBuilder::build only stores the trust store");
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .tls_context(context)
        .build_https()
}

/// The detail of an unreachable endpoint: the error chain, plus what to do
/// when rustls refused the endpoint's certificate. The refusal is found by
/// rustls's own wording ("invalid peer certificate: ..."): by the time it
/// reaches here it sits in boxed connector errors and an `io::Error` that
/// hide its type from `source()` and `downcast_ref`.
fn unreachable_detail(err: &(dyn std::error::Error + 'static)) -> String {
    let detail = chain(err);
    // A malformed endpoint override never leaves the SDK: it reports "failed
    // to apply endpoint `...` to request `Request { ... }`", the whole
    // request's Debug, and below it what the URI parser said. Only that is
    // worth reading.
    if detail.contains("failed to apply endpoint") {
        let mut deepest = err;
        while let Some(source) = deepest.source() {
            deepest = source;
        }
        return format!(
            "the endpoint is not a valid URI ({deepest}): AWS_ENDPOINT_URL, \
             AWS_ENDPOINT_URL_<SERVICE> or the profile's endpoint_url must be a URL such as \
             https://host:port"
        );
    }
    if detail.contains("invalid peer certificate") {
        format!(
            "{detail} (the endpoint's TLS certificate is not trusted: if a private CA signed \
             it, name that CA's PEM file in {})",
            crate::CA_BUNDLE_VAR
        )
    } else {
        detail
    }
}

/// The region of a Secrets Manager ARN (`arn:aws:secretsmanager:<region>:...`).
fn arn_region(secret: &str) -> Option<&str> {
    let mut parts = secret.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("secretsmanager"), Some(region)) if !region.is_empty() => {
            Some(region)
        }
        _ => None,
    }
}

/// The error and its sources on one line (connection errors name the
/// endpoint, never a credential).
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// Why credentials could not be resolved, if that is what failed.
fn credentials_problem(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return Some(chain(c));
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With no override, an unreachable endpoint is named as the linked
    /// SDK resolves it; an override names itself.
    #[tokio::test]
    async fn called_endpoints_are_the_sdks_or_the_override() {
        let aws = Aws::from_sdk_config(
            SdkConfig::builder()
                .region(Region::new("eu-west-1"))
                .build(),
            AwsOptions::default(),
        );
        let called = |service, region| {
            let aws = aws.clone();
            async move { aws.called_endpoint(service, region).await }
        };
        assert_eq!(
            called("Secrets Manager", None).await.as_deref(),
            Some("https://secretsmanager.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            called("Secrets Manager", Some("cn-north-1"))
                .await
                .as_deref(),
            Some("https://secretsmanager.cn-north-1.amazonaws.com.cn")
        );
        assert_eq!(
            called("STS", None).await.as_deref(),
            Some("https://sts.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            called("ECR PUBLIC", Some(ECR_PUBLIC_REGION))
                .await
                .as_deref(),
            Some("https://api.ecr-public.us-east-1.amazonaws.com")
        );
        assert_eq!(called("Nothing", None).await, None);
        let overridden = Aws::from_sdk_config(
            SdkConfig::builder()
                .region(Region::new("eu-west-1"))
                .endpoint_url("http://127.0.0.1:4566")
                .build(),
            AwsOptions::default(),
        );
        assert_eq!(
            overridden.called_endpoint("STS", None).await.as_deref(),
            Some("http://127.0.0.1:4566")
        );
    }

    #[test]
    fn secret_arns_name_their_region() {
        assert_eq!(
            arn_region("arn:aws:secretsmanager:eu-west-1:123456789012:secret:reg-AbCdEf"),
            Some("eu-west-1")
        );
        assert_eq!(arn_region("my/secret"), None);
        assert_eq!(arn_region("arn:aws:ssm:eu-west-1:1:parameter/x"), None);
    }

    #[tokio::test]
    async fn the_ecr_off_switch_refuses_before_any_call() {
        let aws = Aws::from_sdk_config(
            SdkConfig::builder().build(),
            AwsOptions {
                ecr: false,
                ..AwsOptions::default()
            },
        );
        let registry =
            EcrRegistry::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com").expect("host");
        let e = aws.ecr_credentials(&registry, None).await.expect_err("off");
        assert_eq!(e.class(), crate::ErrorClass::Disabled);
        assert!(e.to_string().contains("switched off"), "{e}");
        let counters = aws.counters();
        assert_eq!(counters.ecr_token_fetches, 0);
        assert_eq!(counters.failures_of(crate::ErrorClass::Disabled), 1);
        assert!(aws.ecr_tokens_in_use().is_empty());
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let c = EcrCredentials {
            username: "AWS".into(),
            password: SecretString::from("canary-token".to_string()),
            expires_at: SystemTime::UNIX_EPOCH,
            proxy_endpoint: "https://x".into(),
        };
        assert!(!format!("{c:?}").contains("canary"));
    }

    #[test]
    fn untrusted_certificates_get_a_hint_naming_the_variable() {
        #[derive(Debug, thiserror::Error)]
        #[error("error trying to connect")]
        struct Connect(#[source] std::io::Error);
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let err = Connect(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        let detail = unreachable_detail(&err);
        assert!(
            detail.starts_with(
                "error trying to connect: invalid peer certificate: UnknownIssuer (the endpoint's TLS certificate is not trusted"
            ),
            "{detail}"
        );
        assert!(detail.contains("AWS_CA_BUNDLE"), "{detail}");
        let refused = Connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(!unreachable_detail(&refused).contains("AWS_CA_BUNDLE"));
    }

    // Regression: an AWS_ENDPOINT_URL the URI parser refuses ("http://bad
    // host:80") printed the SDK's whole request Debug (its body, its
    // headers) as the reason.
    #[test]
    fn a_malformed_endpoint_override_is_named_without_the_request() {
        #[derive(Debug, thiserror::Error)]
        #[error(
            "failed to apply endpoint `http://bad host:80` to request `Request {{ body: SdkBody {{ .. }} }}`"
        )]
        struct Apply(#[source] Invalid);
        #[derive(Debug, thiserror::Error)]
        #[error("endpoint is not a valid URI")]
        struct Invalid(#[source] http::uri::InvalidUri);
        let parse = "http://bad host:80"
            .parse::<http::Uri>()
            .expect_err("a space is not a URI character");
        let detail = unreachable_detail(&Apply(Invalid(parse)));
        assert_eq!(
            detail,
            "the endpoint is not a valid URI (invalid uri character): AWS_ENDPOINT_URL, \
             AWS_ENDPOINT_URL_<SERVICE> or the profile's endpoint_url must be a URL such as \
             https://host:port"
        );
    }

    #[test]
    fn principals_display_without_keys() {
        let role = RoleArn::parse("arn:aws:iam::123456789012:role/pull").expect("arn");
        let p = Principal::Role {
            arn: role,
            access_key_id: "ASIAEXAMPLE".into(),
        };
        assert_eq!(p.to_string(), "role arn:aws:iam::123456789012:role/pull");
    }
}
