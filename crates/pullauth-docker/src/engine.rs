//! The wall around bollard: connect, pull with credentials, inspect.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bollard::query_parameters::CreateImageOptions;
use bollard::{ClientVersion, Docker};
use futures_util::StreamExt;
use pullauth_config::PullBehavior;
use pullauth_resolve::{Entry, ImageRef};
use secrecy::ExposeSecret;

use crate::auth::RegistryAuth;
use crate::error::{Identity, PullError, classify, scrub};
use crate::retry::RetryPolicy;

/// Where the engine is when `DOCKER_HOST` is unset.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// How long connecting to the engine and agreeing on an API version may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one `verify` may wait for the engine to ask the registry.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the registry answered a [`Engine::verify`]: the credentials may
/// read the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The manifest (or index) digest the registry serves for the reference.
    pub digest: Option<String>,
    pub media_type: Option<String>,
    /// `os/architecture[/variant]` for each platform the image offers.
    pub platforms: Vec<String>,
}

/// Limits for one image pull.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PullOptions {
    /// For the whole pull, retries included (`ECS_IMAGE_PULL_TIMEOUT`).
    pub timeout: Duration,
    /// For a pull whose progress stops (`ECS_IMAGE_PULL_INACTIVITY_TIMEOUT`).
    pub inactivity_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            timeout: pullauth_config::DEFAULT_PULL_TIMEOUT,
            inactivity_timeout: pullauth_config::DEFAULT_PULL_INACTIVITY_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }
}

/// Something that happened during a pull, for progress display.
#[derive(Debug, Clone, PartialEq)]
pub enum PullEvent {
    /// A status line from the engine; `id` names the layer it is about.
    Status {
        id: Option<String>,
        status: String,
        current: Option<u64>,
        total: Option<u64>,
    },
    /// An attempt failed with a transient error; the next starts after `delay`.
    Retrying {
        attempt: u32,
        delay: Duration,
        error: String,
    },
}

/// Whether the engine downloaded anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullStatus {
    /// New content was downloaded.
    Pulled,
    /// The registry had nothing newer than the local image.
    UpToDate,
    /// No pull: the local image was used as the pull behavior allows.
    Cached,
}

impl PullStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PullStatus::Pulled => "pulled",
            PullStatus::UpToDate => "up-to-date",
            PullStatus::Cached => "cached",
        }
    }
}

/// The result of getting an image onto the host.
#[derive(Debug, Clone)]
pub struct Obtained {
    pub status: PullStatus,
    /// The local image ID (`sha256:...`).
    pub image_id: String,
    /// The manifest digest the registry served, when a pull happened.
    pub digest: Option<String>,
    /// Attempts made (0 when the cache was used without pulling).
    pub attempts: u32,
    /// Retries among those attempts.
    pub retries: u32,
    /// Set when a failed pull fell back to the cached image.
    pub fallback_from: Option<PullError>,
    pub elapsed: Duration,
}

/// The API version pullauth speaks first: Docker Engine 20.10's. Engines
/// up to 28 accept it; newer ones answer "client version 1.41 is too old",
/// and pullauth then negotiates once. Not negotiating up front saves a
/// `GET /version`, which Engine 20.10 answers slowly (it asks containerd and
/// runc for their versions): ~8 ms on every `pullauth pull`.
pub const PINNED_API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Pulls stream for as long as they take; our own timeouts bound them.
const CLIENT_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

/// How long one non-streaming engine call (ping, version negotiation,
/// image inspect) may take. The engine answers these from local state in
/// milliseconds; an engine that takes longer is wedged, and waiting on it
/// would hold a pull slot (or the CLI) forever.
pub const ENGINE_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How the engine is reached, which decides whether credentials may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A unix socket: only local processes with access to it can listen.
    Unix,
    /// TCP with TLS (`DOCKER_TLS_VERIFY`).
    Tls,
    /// Plain TCP to a loopback address: the traffic stays on this host.
    PlainLoopback,
    /// Plain TCP to another host: credentials would cross the network in
    /// clear text, so pulls that carry them are refused.
    PlainRemote,
}

/// Why no client for the engine could be set up. These are configuration
/// problems (exit status 2), found before anything is sent.
#[derive(Debug, thiserror::Error)]
pub enum EngineSetupError {
    #[error(
        "DOCKER_HOST={address:?} is not supported; use unix:///path/to/docker.sock or \
         tcp://HOST:PORT"
    )]
    UnsupportedScheme { address: String },
    #[error(
        "DOCKER_TLS_VERIFY is set, but {path} cannot be read; set DOCKER_CERT_PATH to a \
         directory holding ca.pem, cert.pem and key.pem (default ~/.docker)"
    )]
    TlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "DOCKER_TLS_VERIFY is set, but neither DOCKER_CERT_PATH nor HOME is, so there is no \
         directory to read ca.pem, cert.pem and key.pem from"
    )]
    NoCertPath,
    #[error(
        "the Docker Engine at {address} is reached over plain TCP and {keys} registry key(s) are \
         configured: their credentials would cross the network in clear text; {}",
        crate::error::TLS_HINT
    )]
    Insecure { address: String, keys: usize },
    #[error("cannot set up a client for the Docker Engine at {address}: {detail}")]
    Client { address: String, detail: String },
    /// Not a configuration problem: nothing listens where the engine should be.
    #[error(transparent)]
    Unreachable(PullError),
}

impl EngineSetupError {
    /// Whether the operator's configuration is at fault (exit status 2),
    /// rather than the engine being absent (exit status 1).
    pub fn is_config(&self) -> bool {
        !matches!(self, EngineSetupError::Unreachable(_))
    }
}

/// A connected Docker Engine.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Replaced once if the engine refuses [`PINNED_API_VERSION`].
    docker: Arc<RwLock<Docker>>,
    address: String,
    transport: Transport,
}

/// The certificate directory the Docker CLI uses: `DOCKER_CERT_PATH`, else
/// `~/.docker`.
fn cert_dir() -> Result<PathBuf, EngineSetupError> {
    let from_env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    from_env("DOCKER_CERT_PATH")
        .map(PathBuf::from)
        .or_else(|| from_env("HOME").map(|home| PathBuf::from(home).join(".docker")))
        .ok_or(EngineSetupError::NoCertPath)
}

/// Whether `address` (`tcp://HOST:PORT[/...]`) names this host.
fn is_loopback(address: &str) -> bool {
    let rest = address
        .strip_prefix("tcp://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What [`Engine::remove_image`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// The engine does not have it (any more).
    Missing,
    /// A container uses it; the engine kept it.
    InUse,
}

/// Where the engine runs images (see [`Engine::platform`]); `None` where
/// the engine did not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Platform {
    pub architecture: Option<String>,
    pub os_type: Option<String>,
}

impl Engine {
    /// Prepares a client for `host`, else `DOCKER_HOST`, else the default
    /// socket. Sends nothing: the first request shows whether the engine is
    /// there (use [`Engine::ping`] to find out up front).
    ///
    /// `tcp://` follows the Docker CLI: with `DOCKER_TLS_VERIFY` set (to
    /// anything), TLS with the client certificate and CA from
    /// `DOCKER_CERT_PATH` (default `~/.docker`); otherwise plain HTTP, which
    /// [`Engine::pull`] refuses for credentials unless the address is
    /// loopback.
    pub async fn connect(host: Option<&str>) -> Result<Engine, EngineSetupError> {
        let address = host
            .map(str::to_owned)
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned());
        let client_error = |e: bollard::errors::Error| match e {
            bollard::errors::Error::SocketNotFoundError(_) => {
                EngineSetupError::Unreachable(PullError::EngineUnreachable {
                    address: address.clone(),
                    detail: e.to_string(),
                })
            }
            e => EngineSetupError::Client {
                address: address.clone(),
                detail: e.to_string(),
            },
        };
        let tls = std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty())
            || address.starts_with("https://");
        let (docker, transport) = if let Some(path) = address.strip_prefix("unix://") {
            let docker = Docker::connect_with_unix(path, CLIENT_TIMEOUT_SECS, &PINNED_API_VERSION)
                .map_err(client_error)?;
            (docker, Transport::Unix)
        } else if ["tcp://", "http://", "https://"]
            .iter()
            .any(|scheme| address.starts_with(scheme))
        {
            if tls {
                let dir = cert_dir()?;
                let [key, cert, ca] = ["key.pem", "cert.pem", "ca.pem"].map(|f| dir.join(f));
                for path in [&key, &cert, &ca] {
                    std::fs::File::open(path).map_err(|source| EngineSetupError::TlsFile {
                        path: path.clone(),
                        source,
                    })?;
                }
                let docker = Docker::connect_with_ssl(
                    &address,
                    &key,
                    &cert,
                    &ca,
                    CLIENT_TIMEOUT_SECS,
                    &PINNED_API_VERSION,
                )
                .map_err(client_error)?;
                (docker, Transport::Tls)
            } else {
                let docker =
                    Docker::connect_with_http(&address, CLIENT_TIMEOUT_SECS, &PINNED_API_VERSION)
                        .map_err(client_error)?;
                let transport = if is_loopback(&address) {
                    Transport::PlainLoopback
                } else {
                    Transport::PlainRemote
                };
                (docker, transport)
            }
        } else {
            return Err(EngineSetupError::UnsupportedScheme { address });
        };
        Ok(Engine {
            docker: Arc::new(RwLock::new(docker)),
            address,
            transport,
        })
    }

    /// How the engine is reached.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Refuses a configuration with `keys` registry keys when they would be
    /// sent over plain TCP to another host; for callers that can tell at
    /// startup (the agent) or before the first pull (the CLI).
    pub fn check_credentials_safe(&self, keys: usize) -> Result<(), EngineSetupError> {
        if keys > 0 && self.transport == Transport::PlainRemote {
            return Err(EngineSetupError::Insecure {
                address: self.address.clone(),
                keys,
            });
        }
        Ok(())
    }

    /// Runs one non-streaming engine call within [`ENGINE_CALL_TIMEOUT`].
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, PullError>>,
    ) -> Result<T, PullError> {
        within(ENGINE_CALL_TIMEOUT, call, || PullError::EngineUnreachable {
            address: self.address.clone(),
            detail: format!(
                "it accepted the connection but did not answer {what} within {}s",
                ENGINE_CALL_TIMEOUT.as_secs()
            ),
        })
        .await
    }

    /// Checks that the engine answers (and agrees on an API version),
    /// within [`ENGINE_CALL_TIMEOUT`] for each request.
    pub async fn ping(&self) -> Result<(), PullError> {
        let ping = || async {
            self.client()
                .ping()
                .await
                .map_err(|e| self.transport_error("-", e))
        };
        let result = match self.bounded("GET /_ping", ping()).await {
            Err(PullError::Engine { detail, .. }) if is_version_message(&detail) => {
                self.negotiate().await?;
                self.bounded("GET /_ping", ping()).await.map(|_| ())
            }
            other => other.map(|_| ()),
        };
        // An error answer to a ping is about the address, not an image:
        // plain HTTP to an engine's TLS port gets "400 Client sent an HTTP
        // request to an HTTPS server", and the fix is DOCKER_HOST or
        // DOCKER_TLS_VERIFY, which EngineUnreachable's message names.
        result.map_err(|e| match e {
            PullError::Engine { detail, .. } => PullError::EngineUnreachable {
                address: self.address.clone(),
                detail: format!(
                    "it answered GET /_ping with {}",
                    detail.trim_end().trim_end_matches('.')
                ),
            },
            other => other,
        })
    }

    fn client(&self) -> Docker {
        self.docker
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Agrees on an API version with an engine that refused the pinned one.
    async fn negotiate(&self) -> Result<(), PullError> {
        let negotiated = self
            .bounded("GET /version", async {
                self.client()
                    .negotiate_version()
                    .await
                    .map_err(|e| self.transport_error("-", e))
            })
            .await?;
        tracing::debug!(version = %negotiated.client_version(), "negotiated the engine API version");
        *self
            .docker
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = negotiated;
        Ok(())
    }

    /// The engine's platform: Docker's `Architecture` (`x86_64`,
    /// `aarch64`) and `OSType` (`linux`, `windows`), from one bounded
    /// `GET /info`. Prefetch matches task definitions' `runtimePlatform`
    /// against it.
    pub async fn platform(&self) -> Result<Platform, PullError> {
        let info = self
            .bounded("GET /info", async {
                self.client()
                    .info()
                    .await
                    .map_err(|e| self.transport_error("-", e))
            })
            .await?;
        Ok(Platform {
            architecture: info.architecture.filter(|a| !a.is_empty()),
            os_type: info.os_type.filter(|o| !o.is_empty()),
        })
    }

    /// Tags the image `source` names (say `name@sha256:...`) as `target`
    /// (`name:tag`), as the ECS agent tags an image it pulled by the digest
    /// ECS pinned, so that the task's own reference finds it. One bounded
    /// call.
    pub async fn tag(&self, source: &str, target: &ImageRef) -> Result<(), PullError> {
        let tag = target.tag.as_deref().unwrap_or("latest");
        let options = bollard::query_parameters::TagImageOptionsBuilder::new()
            .repo(&target.name())
            .tag(tag)
            .build();
        self.bounded("POST /images/{name}/tag", async {
            self.client()
                .tag_image(source, Some(options))
                .await
                .map_err(|e| self.transport_error(source, e))
        })
        .await
    }

    /// The address this engine was reached at.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The engine's inspection of `reference`, if it has the image (one
    /// bounded `GET /images/{name}/json`).
    async fn inspect(
        &self,
        reference: &str,
    ) -> Result<Option<bollard::models::ImageInspect>, PullError> {
        let inspect = || async { self.client().inspect_image(reference).await };
        let what = "GET /images/{name}/json";
        let mut result = self.bounded(what, async { Ok(inspect().await) }).await?;
        if matches!(&result, Err(e) if is_version_refused(e)) {
            self.negotiate().await?;
            result = self.bounded(what, async { Ok(inspect().await) }).await?;
        }
        match result {
            Ok(inspect) => Ok(Some(inspect)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.transport_error(reference, e)),
        }
    }

    /// The local image ID for `reference`, if the engine has it.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>, PullError> {
        Ok(self.inspect(reference).await?.and_then(|i| i.id))
    }

    /// The size on disk of the image `reference` names (all its layers),
    /// if the engine has it.
    pub async fn image_size(&self, reference: &str) -> Result<Option<u64>, PullError> {
        Ok(self
            .inspect(reference)
            .await?
            .map(|i| i.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0)))
    }

    /// Removes the name `reference` from the engine, as `docker rmi` without
    /// `--force` does (one bounded call): the image's layers go with its
    /// last name, and the engine refuses while any container, running or
    /// stopped, uses it.
    pub async fn remove_image(&self, reference: &str) -> Result<Removal, PullError> {
        let options = bollard::query_parameters::RemoveImageOptionsBuilder::new()
            .force(false)
            .noprune(false)
            .build();
        let result = self
            .bounded("DELETE /images/{name}", async {
                Ok(self
                    .client()
                    .remove_image(reference, Some(options), None)
                    .await)
            })
            .await?;
        match result {
            Ok(_) => Ok(Removal::Removed),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(Removal::Missing),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(Removal::InUse),
            Err(e) => Err(self.transport_error(reference, e)),
        }
    }

    /// Gets `image` onto the host as `behavior` asks. `pulled_before` says
    /// whether this host has pulled it successfully before (for `once`).
    pub async fn obtain(
        &self,
        image: &ImageRef,
        entry: Option<&Entry>,
        behavior: PullBehavior,
        pulled_before: bool,
        options: &PullOptions,
        progress: &mut (dyn FnMut(PullEvent) + Send),
    ) -> Result<Obtained, PullError> {
        let started = Instant::now();
        let reference = image.pull_reference();
        let use_cache_first = match behavior {
            PullBehavior::PreferCached => true,
            PullBehavior::Once => pulled_before,
            PullBehavior::Default | PullBehavior::Always => false,
        };
        if use_cache_first && let Some(image_id) = self.image_id(&reference).await? {
            return Ok(Obtained {
                status: PullStatus::Cached,
                image_id,
                digest: None,
                attempts: 0,
                retries: 0,
                fallback_from: None,
                elapsed: started.elapsed(),
            });
        }
        match self.pull(image, entry, options, progress).await {
            Ok(pulled) => Ok(pulled),
            Err(error)
                if behavior == PullBehavior::Default
                    && !matches!(error, PullError::EngineUnreachable { .. }) =>
            {
                match self.image_id(&reference).await? {
                    Some(image_id) => {
                        tracing::debug!(image = %image, error = %error, "pull failed; falling back to the cached image");
                        Ok(Obtained {
                            status: PullStatus::Cached,
                            image_id,
                            digest: None,
                            attempts: 0,
                            retries: 0,
                            fallback_from: Some(error),
                            elapsed: started.elapsed(),
                        })
                    }
                    None => Err(error),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Pulls `image` with `entry`'s credentials (anonymously for `None`),
    /// retrying transient failures, within `options`' timeouts.
    pub async fn pull(
        &self,
        image: &ImageRef,
        entry: Option<&Entry>,
        options: &PullOptions,
        progress: &mut (dyn FnMut(PullEvent) + Send),
    ) -> Result<Obtained, PullError> {
        let started = Instant::now();
        let (identity, auth, secrets) = self.credentials_for(image, entry)?;
        let attempts = async {
            let mut attempt = 1;
            let mut negotiated = false;
            loop {
                let result = self
                    .attempt(image, auth.as_ref(), &identity, &secrets, options, progress)
                    .await;
                match result {
                    Ok((digest, status)) => return Ok((digest, status, attempt)),
                    Err(PullError::Rejected { ref detail, .. })
                        if !negotiated && is_version_message(detail) =>
                    {
                        self.negotiate().await?;
                        negotiated = true;
                    }
                    Err(error) if error.is_transient() && attempt < options.retry.attempts => {
                        let delay = options.retry.delay(attempt);
                        tracing::info!(image = %image, attempt, delay_ms = delay.as_millis() as u64, error = %error, "pull failed; retrying");
                        progress(PullEvent::Retrying {
                            attempt,
                            delay,
                            error: error.to_string(),
                        });
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        let (digest, status, attempts) = tokio::time::timeout(options.timeout, attempts)
            .await
            .map_err(|_| PullError::TimedOut {
            image: image.to_string(),
            after: options.timeout,
        })??;
        let reference = image.pull_reference();
        let image_id = self
            .image_id(&reference)
            .await?
            .ok_or_else(|| PullError::Engine {
                image: image.to_string(),
                detail: "the engine reported success but has no such image".to_owned(),
            })?;
        Ok(Obtained {
            status,
            image_id,
            digest,
            attempts,
            retries: attempts - 1,
            fallback_from: None,
            elapsed: started.elapsed(),
        })
    }

    /// Who a request for `image` with `entry` presents itself as, the
    /// header that says so, and the secrets to scrub from the engine's
    /// answers; refuses to send credentials over plain TCP to another host.
    fn credentials_for<'e>(
        &self,
        image: &ImageRef,
        entry: Option<&'e Entry>,
    ) -> Result<(Identity, Option<RegistryAuth>, Vec<&'e str>), PullError> {
        let identity = Identity {
            key: entry.map(|e| e.key.written.clone()),
            username: entry.and_then(|e| e.credentials.username.clone()),
            method: entry.map_or("none", |e| e.credentials.kind()),
            origin: entry.map(|e| e.origin.clone()),
        };
        let auth = RegistryAuth::for_entry(image, entry).map_err(|_| PullError::AuthHeader {
            from: identity.presented(),
        })?;
        if auth.is_some() && self.transport == Transport::PlainRemote {
            return Err(PullError::InsecureEngine {
                image: image.to_string(),
                address: self.address.clone(),
            });
        }
        let secrets = entry
            .map(|e| {
                let c = &e.credentials;
                [&c.password, &c.identity_token, &c.registry_token]
                    .into_iter()
                    .flatten()
                    .map(|s| s.expose_secret())
                    .collect()
            })
            .unwrap_or_default();
        Ok((identity, auth, secrets))
    }

    /// A client that sends `auth` as `X-Registry-Auth` on every request.
    fn client_with(&self, auth: Option<&RegistryAuth>) -> Docker {
        match auth {
            Some(auth) => {
                let auth = auth.clone();
                self.client()
                    .with_request_modifier(move |req| auth.apply(req))
            }
            None => self.client(),
        }
    }

    /// Asks the registry, through the engine's distribution inspect
    /// (`GET /distribution/{name}/json`), whether `entry`'s credentials (an
    /// anonymous request for `None`) may read `image`, with the same
    /// `X-Registry-Auth` header a pull sends. Downloads nothing. Bounded by
    /// [`VERIFY_TIMEOUT`]; errors are classified as a pull's are.
    pub async fn verify(
        &self,
        image: &ImageRef,
        entry: Option<&Entry>,
    ) -> Result<Verified, PullError> {
        let (identity, auth, secrets) = self.credentials_for(image, entry)?;
        let reference = image.pull_reference();
        let inspect = || {
            let docker = self.client_with(auth.as_ref());
            let reference = reference.clone();
            async move { docker.inspect_registry_image(&reference, None).await }
        };
        let timed_out = || PullError::RegistryUnavailable {
            registry: image.domain.clone(),
            image: image.to_string(),
            detail: format!(
                "the engine got no answer from the registry within {}s",
                VERIFY_TIMEOUT.as_secs()
            ),
        };
        let mut result = within(VERIFY_TIMEOUT, async { Ok(inspect().await) }, timed_out).await;
        if matches!(&result, Ok(Err(e)) if is_version_refused(e)) {
            self.negotiate().await?;
            result = within(VERIFY_TIMEOUT, async { Ok(inspect().await) }, timed_out).await;
        }
        let result = match result {
            // Silence may be a wedged engine rather than a slow registry:
            // an engine that cannot answer a ping is the one to blame.
            Err(slow_registry) => {
                self.ping().await?;
                return Err(slow_registry);
            }
            Ok(result) => result,
        };
        match result {
            Ok(answer) => Ok(Verified {
                digest: answer.descriptor.digest,
                media_type: answer.descriptor.media_type,
                platforms: answer.platforms.iter().map(platform_name).collect(),
            }),
            Err(e) => Err(self.pull_error(image, &identity, &secrets, e)),
        }
    }

    /// One `POST /images/create`, read to the end.
    async fn attempt(
        &self,
        image: &ImageRef,
        auth: Option<&RegistryAuth>,
        identity: &Identity,
        secrets: &[&str],
        options: &PullOptions,
        progress: &mut (dyn FnMut(PullEvent) + Send),
    ) -> Result<(Option<String>, PullStatus), PullError> {
        let docker = self.client_with(auth);
        let create = CreateImageOptions {
            from_image: Some(image.name()),
            tag: Some(image.tag_or_digest().to_owned()),
            ..Default::default()
        };
        let mut stream = docker.create_image(Some(create), None, None);
        let mut digest = None;
        let mut status = PullStatus::Pulled;
        let mut answered = false;
        loop {
            let item = match tokio::time::timeout(options.inactivity_timeout, stream.next()).await {
                Err(_) => {
                    // Silence from the very start may be a wedged engine
                    // rather than a slow registry: tell the two apart.
                    if !answered {
                        self.ping().await?;
                    }
                    return Err(PullError::Stalled {
                        image: image.to_string(),
                        after: options.inactivity_timeout,
                    });
                }
                Ok(None) => break,
                Ok(Some(item)) => item,
            };
            answered = true;
            let info = match item {
                Ok(info) => info,
                Err(e) => return Err(self.pull_error(image, identity, secrets, e)),
            };
            // Progress is shown and logged like errors are: an engine (or a
            // registry it quotes) that echoes a credential must not print it.
            let text = scrub(&info.status.unwrap_or_default(), secrets);
            if let Some(d) = text.strip_prefix("Digest: ") {
                digest = Some(d.trim().to_owned());
            }
            if text.starts_with("Status: Image is up to date") {
                status = PullStatus::UpToDate;
            }
            let detail = info.progress_detail.unwrap_or_default();
            progress(PullEvent::Status {
                id: info.id.map(|id| scrub(&id, secrets)),
                status: text,
                current: detail.current.and_then(|c| u64::try_from(c).ok()),
                total: detail.total.and_then(|t| u64::try_from(t).ok()),
            });
        }
        Ok((digest, status))
    }

    fn pull_error(
        &self,
        image: &ImageRef,
        identity: &Identity,
        secrets: &[&str],
        error: bollard::errors::Error,
    ) -> PullError {
        use bollard::errors::Error as E;
        let (status, message) = match error {
            E::DockerResponseServerError {
                status_code,
                message,
            } => (Some(status_code), message),
            E::DockerStreamError { error } => (None, error),
            other => return self.transport_error(&image.to_string(), other),
        };
        classify(
            &image.domain,
            &image.to_string(),
            identity,
            status,
            &scrub(&message, secrets),
        )
    }

    /// An error talking to the engine itself (not a registry).
    fn transport_error(&self, image: &str, error: bollard::errors::Error) -> PullError {
        use bollard::errors::Error as E;
        match error {
            E::DockerResponseServerError {
                status_code,
                message,
            } => PullError::Engine {
                image: image.to_owned(),
                detail: format!("status {status_code}: {message}"),
            },
            E::IOError { .. }
            | E::HyperResponseError { .. }
            | E::HttpClientError { .. }
            | E::HyperLegacyError { .. }
            | E::SocketNotFoundError(_)
            | E::RequestTimeoutError => PullError::EngineUnreachable {
                address: self.address.clone(),
                detail: error.to_string(),
            },
            other => PullError::Engine {
                image: image.to_owned(),
                detail: other.to_string(),
            },
        }
    }
}

/// Runs `call` within `limit`, else fails with `on_timeout()`.
async fn within<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, PullError>>,
    on_timeout: impl FnOnce() -> PullError,
) -> Result<T, PullError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(on_timeout()))
}

/// `os/architecture[/variant]`, as `docker manifest inspect` and
/// `--platform` write it.
fn platform_name(platform: &bollard::models::OciPlatform) -> String {
    let part = |p: &Option<String>| p.as_deref().unwrap_or("unknown").to_owned();
    let mut name = format!("{}/{}", part(&platform.os), part(&platform.architecture));
    if let Some(variant) = platform.variant.as_deref().filter(|v| !v.is_empty()) {
        name.push('/');
        name.push_str(variant);
    }
    name
}

/// Whether the engine refused the client's API version.
fn is_version_message(message: &str) -> bool {
    message.contains("client version")
        && (message.contains("too old") || message.contains("too new"))
}

fn is_version_refused(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError { status_code: 400, message }
            if is_version_message(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_told_apart_from_remote_ones() {
        for local in [
            "tcp://127.0.0.1:2375",
            "tcp://127.3.4.5:2375/",
            "tcp://localhost:2375",
            "tcp://LOCALHOST:1",
            "tcp://[::1]:2375",
            "http://127.0.0.1:2375",
        ] {
            assert!(is_loopback(local), "{local}");
        }
        for remote in [
            "tcp://10.0.0.5:2375",
            "tcp://docker.example.com:2375",
            "tcp://[2001:db8::1]:2375",
            "tcp://localhost.example.com:2375",
            "tcp://0.0.0.0:2375",
        ] {
            assert!(!is_loopback(remote), "{remote}");
        }
    }

    #[tokio::test]
    async fn plain_tcp_to_another_host_refuses_credentials_but_not_anonymous_pulls() {
        let engine = Engine::connect(Some("tcp://10.255.255.1:2375"))
            .await
            .expect("a client is only prepared");
        assert_eq!(engine.transport(), Transport::PlainRemote);
        assert!(engine.check_credentials_safe(0).is_ok());
        let err = engine.check_credentials_safe(2).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("DOCKER_TLS_VERIFY=1"), "{text}");
        assert!(text.contains("tcp://10.255.255.1:2375"), "{text}");

        let local = Engine::connect(Some("tcp://127.0.0.1:2375"))
            .await
            .expect("a client is only prepared");
        assert_eq!(local.transport(), Transport::PlainLoopback);
        assert!(local.check_credentials_safe(2).is_ok());
    }

    #[tokio::test]
    async fn a_missing_socket_is_an_unreachable_engine_not_a_config_error() {
        let err = Engine::connect(Some("unix:///nonexistent/docker.sock"))
            .await
            .expect_err("no socket");
        assert!(!err.is_config(), "{err}");
        assert!(
            err.to_string()
                .contains("cannot reach the Docker Engine at unix:///nonexistent/docker.sock"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_ping_answered_with_an_error_names_the_engine_address() {
        use std::io::{Read, Write};
        // What an engine's TLS port answers to plain HTTP (Go's net/http).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = format!("tcp://{}", listener.local_addr().expect("address"));
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let _ = stream.read(&mut [0u8; 4096]);
                let _ = stream.write_all(
                    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
                );
            }
        });
        let engine = Engine::connect(Some(&address))
            .await
            .expect("a client is only prepared");
        let err = engine.ping().await.expect_err("answered 400");
        assert!(matches!(err, PullError::EngineUnreachable { .. }), "{err}");
        let text = err.to_string();
        for needle in [address.as_str(), "status 400", "DOCKER_TLS_VERIFY=1"] {
            assert!(text.contains(needle), "{needle:?} missing: {text}");
        }
        assert!(text.contains("HTTPS server; is dockerd"), "{text}");
    }

    /// An engine on loopback TCP that answers `POST /images/create` with
    /// `progress` (one JSON object a line) and every other request (the
    /// image inspect after the pull) with a local image.
    fn stub_engine(progress: &'static str) -> String {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = format!("tcp://{}", listener.local_addr().expect("address"));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let body = if first.contains("/images/create") {
                    progress
                } else {
                    r#"{"Id":"sha256:feedface"}"#
                };
                let _ = reader.get_mut().write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        address
    }

    // Regression (issue 25): an engine that echoed the password in a
    // progress message had it printed (the error path scrubbed it; the
    // progress path did not). Progress now goes through the same scrub.
    #[tokio::test]
    async fn progress_messages_are_scrubbed_of_the_credentials_sent() {
        let address = stub_engine(concat!(
            r#"{"status":"Pulling from app with hunter2-canary","id":"hunter2-canary"}"#,
            "\n",
            r#"{"status":"Digest: sha256:abc"}"#,
            "\n",
            r#"{"status":"Status: Downloaded newer image"}"#,
            "\n",
        ));
        let engine = Engine::connect(Some(&address)).await.expect("prepared");
        let table = pullauth_resolve::RegistryTable::from_auth_data(
            pullauth_config::AuthType::Docker,
            &secrecy::SecretString::from(
                r#"{"r.example.com":{"username":"u","password":"hunter2-canary"}}"#,
            ),
        )
        .expect("valid");
        let image = ImageRef::parse("r.example.com/app:1").expect("valid");
        let mut events = Vec::new();
        let obtained = engine
            .pull(
                &image,
                table.lookup(&image),
                &PullOptions::default(),
                &mut |event| events.push(event),
            )
            .await
            .expect("the stub pulls");
        assert_eq!(obtained.digest.as_deref(), Some("sha256:abc"));
        let shown = format!("{events:?}");
        assert!(!shown.contains("hunter2-canary"), "{shown}");
        assert!(
            shown.contains("Pulling from app with <redacted>"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn unknown_schemes_are_a_setup_error() {
        let err = Engine::connect(Some("ssh://host"))
            .await
            .expect_err("unsupported");
        assert!(
            matches!(err, EngineSetupError::UnsupportedScheme { .. }),
            "{err}"
        );
    }

    #[test]
    fn recognizes_version_refusals() {
        // Engine 29's and Engine 20.10's wording.
        assert!(is_version_message(
            "client version 1.41 is too old. Minimum supported API version is 1.44, please upgrade your client to a newer version"
        ));
        assert!(is_version_message(
            "client version 1.52 is too new. Maximum supported API version is 1.41"
        ));
        assert!(!is_version_message("invalid reference format"));
    }
}
