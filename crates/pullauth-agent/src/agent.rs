//! The agent's core: tasks in the store, pulls with single flight and a
//! concurrency bound, and the live settings that SIGHUP swaps.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use pullauth_aws::{AwsOptions, RoleArn};
use pullauth_config::PullBehavior;
use pullauth_docker::{Obtained, PullError, PullOptions, RegistryAuth, Removal, VerifyReport};
use pullauth_resolve::{Entry, ImageRef, RegistryTable};
use pullauth_store::model::now_rfc3339;
use pullauth_store::{PulledWith, Status, Store, StoreError, Task};
use tokio::sync::Semaphore;

use crate::credentials::{Provider, TaskCredentials};
use crate::metrics::Metrics;
use crate::puller::Puller;
use crate::single_flight::{Gate, Share, SingleFlight};
use crate::taskdef::{self, TaskDefError};

/// Everything a reload can change.
#[derive(Debug, Clone)]
pub struct Settings {
    pub table: RegistryTable,
    pub behavior: PullBehavior,
    pub options: PullOptions,
}

/// Fixed facts about this agent, reported by `/v1/metadata`.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cluster: String,
    pub container_instance_arn: Option<String>,
    /// `pullauth v<version> (<git hash>)`.
    pub version: String,
}

/// What makes two pulls the same pull: tasks share an engine pull only if
/// it sends the same reference with the same credentials, behavior and
/// limits. After a reload that changes a password, tasks admitted later
/// start their own pull instead of joining one with the old credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlightKey {
    /// Docker's normalized reference, as sent to the engine.
    reference: String,
    /// A per-process fingerprint of the `X-Registry-Auth` header; `None`
    /// for an anonymous pull.
    credentials: Option<u64>,
    behavior: &'static str,
    timeout: Duration,
    inactivity_timeout: Duration,
    retry: (u32, Duration, Duration, u64),
}

impl FlightKey {
    fn new(image: &ImageRef, entry: Option<&Entry>, settings: &Settings) -> FlightKey {
        let credentials = match RegistryAuth::for_entry(image, entry) {
            Ok(auth) => auth.map(|auth| auth.fingerprint()),
            // The pull will fail with this error; it must not join anyone.
            Err(_) => Some(fastrand::u64(..)),
        };
        let options = &settings.options;
        FlightKey {
            reference: image.pull_reference(),
            credentials,
            behavior: settings.behavior.as_str(),
            timeout: options.timeout,
            inactivity_timeout: options.inactivity_timeout,
            retry: (
                options.retry.attempts,
                options.retry.initial_delay,
                options.retry.max_delay,
                options.retry.jitter.to_bits(),
            ),
        }
    }
}

/// A pull's outcome together with the identity it used: what every task
/// that shared it records, whichever credentials it would have chosen.
#[derive(Debug, Clone)]
struct Pulled {
    with: PulledWith,
    result: Result<Obtained, PullError>,
}

/// A container's share of a pull: the image and the pull's outcome to come.
struct Ticket {
    image: ImageRef,
    share: Share<Pulled>,
}

/// What a container waits for: its share of a pull, or the reason it
/// cannot pull (its credentials could not be provided).
enum Prepared {
    Ticket(Ticket),
    Failed(Failed),
}

/// A container that cannot pull: the source it tried and why not.
#[derive(Debug, Clone)]
struct Failed {
    with: PulledWith,
    message: String,
}

/// A handle to the running agent; cheap to clone.
#[derive(Debug, Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    puller: Arc<dyn Puller>,
    provider: Arc<Provider>,
    settings: RwLock<Arc<Settings>>,
    metrics: Metrics,
    identity: Identity,
    /// Pulls in flight: later requests for the same pull join these.
    flights: SingleFlight<FlightKey, Pulled>,
    /// Bounds how many engine pulls run at once.
    permits: Semaphore,
    /// What the cluster follower sees ([`crate::follow`]), for the API.
    following: std::sync::Mutex<crate::follow::View>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("store", &self.store.path())
            .field("engine", &self.puller.address())
            .finish_non_exhaustive()
    }
}

/// How many images `POST /v1/verify` asks about at once.
pub const VERIFY_CONCURRENCY: usize = 4;

/// Why a verification could not start.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Invalid(#[from] pullauth_resolve::ImageRefError),
    #[error("no task {arn} is known to this agent")]
    UnknownTask { arn: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `POST /v1/verify` checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyTarget {
    /// These images, with the credentials a pull outside any task uses.
    Images(Vec<String>),
    /// Every container of this known task, with its own credentials.
    Task(String),
    /// Every container of every known task, each with its own credentials.
    KnownTasks,
}

/// (image, `repositoryCredentials` secret, execution role) of each
/// container of `task`.
fn task_checks(task: Task) -> Vec<(String, Option<String>, Option<String>)> {
    let role = task.execution_role_arn;
    task.containers
        .into_iter()
        .map(|c| (c.image, c.credentials_parameter, role.clone()))
        .collect()
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Invalid(#[from] TaskDefError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Agent {
    /// Builds the agent and resumes every pull the store says was not
    /// finished (after a restart or a crash). Must run inside a Tokio runtime.
    /// AWS sources use the default chain, loaded on first use.
    pub fn start(
        store: Store,
        puller: Arc<dyn Puller>,
        settings: Settings,
        identity: Identity,
        max_concurrent_pulls: usize,
    ) -> Result<Agent, StoreError> {
        let provider = Arc::new(Provider::lazy(AwsOptions::default()));
        Agent::start_with_provider(
            store,
            puller,
            settings,
            identity,
            max_concurrent_pulls,
            provider,
        )
    }

    /// [`Agent::start`] with the credential `provider` to use.
    pub fn start_with_provider(
        store: Store,
        puller: Arc<dyn Puller>,
        settings: Settings,
        identity: Identity,
        max_concurrent_pulls: usize,
        provider: Arc<Provider>,
    ) -> Result<Agent, StoreError> {
        let metrics = Metrics::new();
        metrics.registry_keys.set(settings.table.len() as i64);
        let agent = Agent {
            inner: Arc::new(Inner {
                store,
                puller,
                provider,
                settings: RwLock::new(Arc::new(settings)),
                metrics,
                identity,
                flights: SingleFlight::new(),
                permits: Semaphore::new(max_concurrent_pulls.max(1)),
                following: std::sync::Mutex::default(),
            }),
        };
        let mut resumed = 0;
        for task in agent.inner.store.tasks()? {
            for (index, container) in task.containers.iter().enumerate() {
                if !container.known_status.is_final() {
                    resumed += 1;
                    // Every resumed container gets its credentials the one
                    // way all pulls do (the provider's `credentials_for`,
                    // fetched again: nothing fetched is stored), when it
                    // runs; containers of one image with the same
                    // credentials then join one pull in the single flight.
                    let ticket = None;
                    agent.spawn_container(task.arn.clone(), index, ticket, true);
                }
            }
        }
        if resumed > 0 {
            tracing::info!(containers = resumed, "resuming pulls that had not finished");
        }
        Ok(agent)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Where the engine was reached, for logs.
    pub fn engine_address(&self) -> &str {
        self.inner.puller.address()
    }

    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// The credential provider (its AWS client, once built, holds the ECR
    /// tokens in use and the AWS counters).
    pub fn provider(&self) -> &Provider {
        &self.inner.provider
    }

    /// The credentials `image` pulls with under `settings`: the source by
    /// precedence (task secret, key, helper, ECR, anonymous), provided now
    /// by the one function every view uses.
    async fn provide(
        &self,
        image: &ImageRef,
        secret: Option<&str>,
        role: Option<&RoleArn>,
        settings: &Settings,
    ) -> Result<Option<Entry>, Failed> {
        let task = TaskCredentials { secret, role };
        // Boxed: the provider's future (ECR tokens, Secrets Manager,
        // helpers) is about 10 KB, and inline it would make every pull that
        // waits for its turn that much larger for as long as it waits,
        // long after its credentials were provided (a prefetch pull queued
        // behind others: 11,048 -> 1,192 bytes).
        Box::pin(
            self.inner
                .provider
                .credentials_for(&settings.table, image, task),
        )
        .await
            .map(|provided| provided.entry)
            .map_err(|e| {
                self.inner.metrics.failed("credentials");
                tracing::warn!(image = %image, source = %e.from, error = %e.error, "could not provide credentials");
                Failed {
                    with: PulledWith {
                        registry_key: Some(e.from.clone()),
                        username: None,
                    },
                    message: e.to_string(),
                }
            })
    }

    /// [`Agent::provide`] for every container of `task`, all at once (each
    /// source is bounded in time, so a submission waits for the slowest,
    /// not for their sum), each distinct secret fetched once; `None` for a
    /// container whose image is invalid.
    async fn provide_task(
        &self,
        task: &Task,
        settings: &Settings,
    ) -> Vec<Option<(ImageRef, Result<Option<Entry>, Failed>)>> {
        let role = task
            .execution_role_arn
            .as_deref()
            .and_then(|arn| RoleArn::parse(arn).ok());
        let images: Vec<Option<ImageRef>> = task
            .containers
            .iter()
            .map(|c| ImageRef::parse(&c.image).ok())
            .collect();
        // Which container provides for each one: itself, or the first
        // container with a valid image naming the same secret.
        let mut first_naming: HashMap<&str, usize> = HashMap::new();
        let provider_of: Vec<usize> = task
            .containers
            .iter()
            .enumerate()
            .map(
                |(index, container)| match &container.credentials_parameter {
                    Some(secret) if images[index].is_some() => {
                        *first_naming.entry(secret.as_str()).or_insert(index)
                    }
                    _ => index,
                },
            )
            .collect();
        let jobs: Vec<usize> = (0..images.len())
            .filter(|&index| provider_of[index] == index && images[index].is_some())
            .collect();
        let answers = futures_util::future::join_all(jobs.iter().filter_map(|&index| {
            let image = images[index].as_ref()?;
            let secret = task.containers[index].credentials_parameter.as_deref();
            Some(self.provide(image, secret, role.as_ref(), settings))
        }))
        .await;
        let answers: HashMap<usize, Result<Option<Entry>, Failed>> =
            jobs.into_iter().zip(answers).collect();
        images
            .into_iter()
            .enumerate()
            .map(|(index, image)| {
                let image = image?;
                let provided = answers.get(&provider_of[index]).cloned()?;
                Some((image, provided))
            })
            .collect()
    }

    /// The cluster follower's view, to read or change under its lock.
    pub fn following<T>(&self, f: impl FnOnce(&mut crate::follow::View) -> T) -> T {
        let mut view = self
            .inner
            .following
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut view)
    }

    /// Pulls `image` for no task (prefetch): the same source selection and
    /// provider as a task's container with `secret` and `role`, the same
    /// pull queue (joining a pull in flight, within the concurrency bound)
    /// and an image record in the store, so that `once` knows the image.
    /// Returns the identity used and the outcome, or why it could not pull.
    pub async fn prefetch_image(
        &self,
        image: ImageRef,
        secret: Option<&str>,
        role: Option<&RoleArn>,
    ) -> (PulledWith, Result<Obtained, String>) {
        let settings = self.settings();
        let entry = match self.provide(&image, secret, role, &settings).await {
            Ok(entry) => entry,
            Err(failed) => return (failed.with, Err(failed.message)),
        };
        let reference = image.pull_reference();
        let (ticket, _) = self.ticket(image, entry, &settings, false);
        let pulled = ticket.share.value().await;
        let with = pulled.with.clone();
        match pulled.result {
            Ok(obtained) => {
                let pulled = obtained.attempts > 0 && obtained.fallback_from.is_none();
                let (image_id, record_with) = (obtained.image_id.clone(), with.clone());
                let recorded_reference = reference.clone();
                let recorded = self
                    .with_store(move |store| {
                        store.record_image_use(
                            &recorded_reference,
                            &image_id,
                            pulled,
                            record_with,
                        )?;
                        // Downloaded by prefetch: the follower may remove
                        // it once nothing names it. Found in the engine, it
                        // is someone else's.
                        if pulled {
                            store.set_prefetched(&recorded_reference, true)?;
                        }
                        Ok(())
                    })
                    .await;
                if let Err(e) = recorded {
                    tracing::error!(image = %reference, error = %e, "could not record the prefetched image");
                }
                (with, Ok(obtained))
            }
            Err(error) => (with, Err(error.to_string())),
        }
    }

    /// Whether the engine has the image `reference` names, asked with one
    /// bounded inspect; `Err` when the engine could not say.
    pub async fn engine_has(&self, reference: &str) -> Result<bool, PullError> {
        Ok(self.inner.puller.image_id(reference).await?.is_some())
    }

    /// Tags the image `source` names (`image_id`) as `target` (one bounded
    /// call): what the ECS agent does after pulling the digest ECS pinned.
    /// The tag is recorded as prefetched too, so that it goes with the
    /// image when nothing names either any more.
    pub async fn tag_image(
        &self,
        source: &str,
        target: &ImageRef,
        image_id: &str,
        with: PulledWith,
    ) -> Result<(), PullError> {
        self.inner.puller.tag(source, target).await?;
        let (reference, image_id) = (target.pull_reference(), image_id.to_owned());
        let recorded = self
            .with_store(move |store| {
                store.record_image_use(&reference, &image_id, true, with)?;
                store.set_prefetched(&reference, true)
            })
            .await;
        if let Err(e) = recorded {
            tracing::error!(image = %target, error = %e, "could not record the tag of a prefetched image");
        }
        Ok(())
    }

    /// The images prefetch downloaded and no task used since (the store's
    /// marks).
    pub async fn prefetched_images(&self) -> Result<Vec<String>, StoreError> {
        self.with_store(|store| store.prefetched_images()).await
    }

    /// The size on disk of the image `reference` names, if the engine has
    /// it (one bounded inspect).
    pub async fn image_size(&self, reference: &str) -> Result<Option<u64>, PullError> {
        self.inner.puller.image_size(reference).await
    }

    /// Removes a prefetched image that nothing names any more: the engine
    /// keeps it while a container uses it; a removed (or already gone)
    /// image is forgotten by the store.
    pub async fn remove_prefetched(&self, reference: &str) -> Result<Removal, String> {
        // A name that now points at another image (the ECS agent pulled the
        // tag again for a task, an operator re-tagged it) is not the image
        // prefetch pulled: forgotten, never removed.
        let recorded = {
            let asked = reference.to_owned();
            self.with_store(move |store| store.image(&asked))
                .await
                .map_err(|e| e.to_string())?
                .and_then(|record| record.image_id)
        };
        let current = self
            .inner
            .puller
            .image_id(reference)
            .await
            .map_err(|e| e.to_string())?;
        if current.is_some() && current != recorded {
            let forgotten = reference.to_owned();
            self.with_store(move |store| store.forget_image(&forgotten))
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Removal::Missing);
        }
        let removal = self
            .inner
            .puller
            .remove_image(reference)
            .await
            .map_err(|e| e.to_string())?;
        if removal != Removal::InUse {
            let forgotten = reference.to_owned();
            self.with_store(move |store| store.forget_image(&forgotten))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(removal)
    }

    /// The engine's platform (one bounded `GET /info`).
    pub async fn engine_platform(&self) -> Result<pullauth_docker::Platform, PullError> {
        self.inner.puller.platform().await
    }

    /// The settings pulls use now.
    pub fn settings(&self) -> Arc<Settings> {
        self.inner
            .settings
            .read()
            .map(|s| Arc::clone(&s))
            .unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    /// Swaps in new settings for the next pulls; pulls in flight finish
    /// with the settings they started with.
    pub fn replace_settings(&self, settings: Settings) {
        self.inner
            .metrics
            .registry_keys
            .set(settings.table.len() as i64);
        let mut slot = self
            .inner
            .settings
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Arc::new(settings);
    }

    /// Verifies, without pulling, that the credentials a pull would use may
    /// read each image of `target`, a few at a time; one report per
    /// distinct (image, credentials source), in order. The credentials are
    /// the pull's own ([`Provider::credentials_for`]): keys, helpers, ECR
    /// tokens, and for a known task its containers' `repositoryCredentials`
    /// fetched with its execution role.
    pub async fn verify(&self, target: VerifyTarget) -> Result<Vec<VerifyReport>, VerifyError> {
        // (image, secret, execution role) of each check.
        let wanted: Vec<(String, Option<String>, Option<String>)> = match target {
            VerifyTarget::Images(images) => images.into_iter().map(|i| (i, None, None)).collect(),
            VerifyTarget::Task(arn) => {
                let task = self
                    .inner
                    .store
                    .task(&arn)?
                    .ok_or(VerifyError::UnknownTask { arn })?;
                task_checks(task)
            }
            VerifyTarget::KnownTasks => {
                let mut all: Vec<_> = self
                    .inner
                    .store
                    .tasks()?
                    .into_iter()
                    .flat_map(task_checks)
                    .collect();
                all.sort();
                all
            }
        };
        let mut seen = std::collections::HashSet::new();
        let checks = wanted
            .into_iter()
            .filter(|check| seen.insert(check.clone()))
            .map(|(image, secret, role)| {
                let image = ImageRef::parse(&image)?;
                // An execution role that does not parse was refused when
                // the task was submitted; none is used then.
                let role = role.as_deref().and_then(|arn| RoleArn::parse(arn).ok());
                Ok((image, secret, role))
            })
            .collect::<Result<Vec<_>, VerifyError>>()?;
        let settings = self.settings();
        let puller = &self.inner.puller;
        let provider = &self.inner.provider;
        // Boxed first: a stream over a borrowing closure is not provably Send.
        let checks: Vec<futures_util::future::BoxFuture<'_, VerifyReport>> = checks
            .iter()
            .map(|(image, secret, role)| {
                let table = &settings.table;
                async move {
                    let task = TaskCredentials {
                        secret: secret.as_deref(),
                        role: role.as_ref(),
                    };
                    match provider.credentials_for(table, image, task).await {
                        Ok(provided) => {
                            let entry = provided.entry.as_ref();
                            let result = puller.verify(image, entry).await;
                            VerifyReport::new(image, entry, &result)
                        }
                        Err(e) => VerifyReport::unprovided(image, e.kind, &e.from, &e.to_string()),
                    }
                }
                .boxed()
            })
            .collect();
        let reports = futures_util::stream::iter(checks)
            .buffered(VERIFY_CONCURRENCY)
            .collect()
            .await;
        Ok(reports)
    }

    /// Validates a task definition, records the task, then lets its pulls
    /// start. The task is in the store before any pull it started begins.
    ///
    /// Each container joins the pull already in flight, or reserves a new
    /// one, *before* the task is written: the write (an fsync) is the slow
    /// part of a submission, and tasks that arrive together must all find
    /// the same pull. The task is written once, its containers already
    /// `PULLING`: one transaction per admission.
    pub async fn submit(&self, body: &[u8]) -> Result<Task, SubmitError> {
        let mut task = taskdef::parse(body, taskdef::new_arn(&self.inner.identity.cluster))?;
        let settings = self.settings();
        // Credentials first: the pull's identity (and so whom it may be
        // shared with) is what was provided.
        let provided = self.provide_task(&task, &settings).await;
        let mut gates = Vec::new();
        let tickets: Vec<Option<Prepared>> = provided
            .into_iter()
            // taskdef::parse has validated every image.
            .map(|provided| {
                let (image, entry) = provided?;
                Some(match entry {
                    Ok(entry) => {
                        let (ticket, gate) = self.ticket(image, entry, &settings, true);
                        gates.extend(gate);
                        Prepared::Ticket(ticket)
                    }
                    Err(failed) => Prepared::Failed(failed),
                })
            })
            .collect();
        for container in &mut task.containers {
            container.known_status = Status::Pulling;
        }
        task.pull_started_at = Some(now_rfc3339());
        task.recompute_status();
        let written = task.clone();
        let recorded = self.with_store(move |store| store.put_task(&written)).await;
        // A reserved pull starts if the task was recorded, or if another
        // task has joined it meanwhile; otherwise nobody wants it.
        for gate in gates {
            if recorded.is_ok() {
                gate.open();
            } else {
                gate.abandon_unless_joined();
            }
        }
        recorded?;
        self.inner.metrics.tasks_submitted.inc();
        tracing::info!(task = %task.arn, family = %task.family, containers = task.containers.len(), "task accepted");
        for (index, ticket) in tickets.into_iter().enumerate() {
            self.spawn_container(task.arn.clone(), index, ticket, false);
        }
        Ok(task)
    }

    fn spawn_container(&self, arn: String, index: usize, ticket: Option<Prepared>, resumed: bool) {
        let agent = self.clone();
        tokio::spawn(async move {
            if let Err(err) = agent.run_container(&arn, index, ticket, resumed).await {
                tracing::error!(task = %arn, container = index, error = %err, "could not record container state");
            }
        });
    }

    /// Takes one container to `PULLED` or `STOPPED`, with the pull `ticket`
    /// joined at submission, or, when `resumed` after a restart, the one
    /// joined then (marking the container `PULLING` first).
    async fn run_container(
        &self,
        arn: &str,
        index: usize,
        ticket: Option<Prepared>,
        resumed: bool,
    ) -> Result<(), StoreError> {
        let resumed_task = if resumed {
            let owned_arn = arn.to_owned();
            let started = self
                .with_store(move |store| {
                    store.update_task(&owned_arn, |task| {
                        task.containers[index].known_status = Status::Pulling;
                        task.pull_started_at.get_or_insert_with(now_rfc3339);
                        task.recompute_status();
                    })
                })
                .await?;
            let Some(task) = started else {
                return Ok(());
            };
            Some(task)
        } else {
            None
        };
        let ticket = match (ticket, resumed_task) {
            (Some(ticket), _) => ticket,
            (None, Some(task)) => {
                let container = &task.containers[index];
                match ImageRef::parse(&container.image) {
                    Ok(image) => {
                        let settings = self.settings();
                        let role = task
                            .execution_role_arn
                            .as_deref()
                            .and_then(|arn| RoleArn::parse(arn).ok());
                        let secret = container.credentials_parameter.as_deref();
                        match self.provide(&image, secret, role.as_ref(), &settings).await {
                            Ok(entry) => {
                                Prepared::Ticket(self.ticket(image, entry, &settings, false).0)
                            }
                            Err(failed) => Prepared::Failed(failed),
                        }
                    }
                    Err(e) => Prepared::Failed(Failed {
                        with: PulledWith::default(),
                        message: e.to_string(),
                    }),
                }
            }
            (None, None) => Prepared::Failed(Failed {
                with: PulledWith::default(),
                message: "the container's image is not valid".to_owned(),
            }),
        };
        let (with, outcome) = match ticket {
            Prepared::Ticket(ticket) => {
                let pulled = ticket.share.value().await;
                (pulled.with, Ok((ticket.image, pulled.result)))
            }
            Prepared::Failed(Failed { with, message }) => (with, Err(message)),
        };
        let now = now_rfc3339();
        let (status, image_id, pull_error, recorded_image) = match outcome {
            Ok((image, Ok(obtained))) => (
                Status::Pulled,
                Some(obtained.image_id.clone()),
                None,
                Some((image.pull_reference(), obtained)),
            ),
            Ok((_, Err(error))) => (Status::Stopped, None, Some(error.to_string()), None),
            Err(message) => (Status::Stopped, None, Some(message), None),
        };
        let owned_arn = arn.to_owned();
        self.with_store(move |store| {
            store.update_task(&owned_arn, |task| {
                let container = &mut task.containers[index];
                container.registry_key = with.registry_key.clone();
                container.username = with.username.clone();
                container.known_status = status;
                container.image_id = image_id;
                container.pull_error = pull_error;
                task.recompute_status();
                if task.containers.iter().all(|c| c.known_status.is_final()) {
                    task.pull_stopped_at = Some(now);
                }
            })?;
            if let Some((reference, obtained)) = recorded_image {
                let pulled = obtained.attempts > 0 && obtained.fallback_from.is_none();
                store.record_image_use(&reference, &obtained.image_id, pulled, with)?;
                // A task uses it: pullauth never removes it.
                store.set_prefetched(&reference, false)?;
            }
            Ok::<(), StoreError>(())
        })
        .await?;
        Ok(())
    }

    /// Runs `f` on the store in Tokio's blocking pool: writes wait for an
    /// fsync, and async workers must stay free to admit requests meanwhile.
    /// A write still queued when the runtime shuts down is cancelled; the
    /// store then holds the state before it, which the next start resumes.
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let agent = self.clone();
        match tokio::task::spawn_blocking(move || f(&agent.inner.store)).await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(StoreError::Io {
                path: self
                    .inner
                    .store
                    .path()
                    .map_or_else(|| "<memory>".into(), Path::to_path_buf),
                detail: "the agent is shutting down; the change was not written".to_owned(),
            }),
        }
    }

    /// Joins the pull of `image` with the provided `entry` under
    /// `settings`, or starts one. When `gated`, a started pull waits for
    /// the returned gate.
    fn ticket(
        &self,
        image: ImageRef,
        entry: Option<Entry>,
        settings: &Settings,
        gated: bool,
    ) -> (Ticket, Option<Gate<FlightKey, Pulled>>) {
        let with = PulledWith {
            registry_key: entry.as_ref().map(|e| e.key.written.clone()),
            username: entry.as_ref().and_then(|e| e.credentials.username.clone()),
        };
        let key = FlightKey::new(&image, entry.as_ref(), settings);
        let (behavior, options) = (settings.behavior, settings.options);
        let agent = self.clone();
        let pull_image = image.clone();
        let pull_with = with.clone();
        let stopped_image = image.to_string();
        let (share, gate) = self.inner.flights.join(
            key,
            gated,
            move || async move {
                let result = agent
                    .engine_pull(&pull_image, entry.as_ref(), behavior, &options)
                    .await;
                Pulled {
                    with: pull_with,
                    result,
                }
            },
            move |why| Pulled {
                with,
                result: Err(PullError::Engine {
                    image: stopped_image,
                    detail: if why == "abandoned" {
                        "not started: the task could not be recorded".to_owned()
                    } else {
                        format!("the pull ended abnormally ({why}); the next task pulls again")
                    },
                }),
            },
        );
        if !share.started {
            self.inner.metrics.pulls_shared.inc();
        }
        (Ticket { image, share }, gate)
    }

    /// One pull through the engine, within the concurrency bound.
    async fn engine_pull(
        &self,
        image: &ImageRef,
        entry: Option<&Entry>,
        behavior: PullBehavior,
        options: &PullOptions,
    ) -> Result<Obtained, PullError> {
        let _permit = self.inner.permits.acquire().await;
        let metrics = &self.inner.metrics;
        let reference = image.pull_reference();
        let pulled_before = self
            .inner
            .store
            .image(&reference)
            .ok()
            .flatten()
            .is_some_and(|r| r.pull_succeeded);
        metrics.pulls_started.inc();
        let started = Instant::now();
        tracing::info!(
            image = %image,
            key = entry.map(|e| e.key.written.as_str()).unwrap_or("-"),
            username = entry.and_then(|e| e.credentials.username.as_deref()).unwrap_or("-"),
            behavior = behavior.as_str(),
            "pulling"
        );
        let result = self
            .inner
            .puller
            .obtain(
                image,
                entry,
                behavior,
                pulled_before,
                options,
                &mut |event| {
                    if let pullauth_docker::PullEvent::Retrying { .. } = event {
                        metrics.pull_retries.inc();
                    }
                },
            )
            .await;
        metrics
            .pull_duration
            .observe(started.elapsed().as_secs_f64());
        // The pull's buffers (the engine's progress stream) are gone.
        crate::memory::note_release();
        match &result {
            Ok(obtained) => {
                match &obtained.fallback_from {
                    // A failed pull that fell back to the cache counts as failed.
                    Some(error) => {
                        metrics.failed(error.class());
                        tracing::warn!(image = %image, error = %error, "pull failed; using the cached image");
                    }
                    None => {
                        metrics.pulls_succeeded.inc();
                    }
                }
                tracing::info!(image = %image, status = obtained.status.as_str(), image_id = %obtained.image_id, "pull finished");
            }
            Err(error) => {
                metrics.failed(error.class());
                tracing::warn!(image = %image, class = error.class(), error = %error, "pull failed");
            }
        }
        result
    }
}
