//! The ECS control plane as a source of work: which task definitions a
//! cluster's services run, and which images those task definitions name.
//!
//! The raw calls sit behind [`EcsApi`] (the SDK's client, or a fake in
//! tests and the fleet simulation); this module is what [`Aws`] keeps above
//! them: the caches, their persistence and the pacing. Every call is bounded
//! like every other call of [`Aws`]: `ecs:ListServices` (paginated, 100 a
//! page), `ecs:DescribeServices` (10 services a call),
//! `ecs:DescribeTaskDefinition`, and for the digests ECS pinned
//! `ecs:ListServiceDeployments` and `ecs:DescribeServiceRevisions`.
//!
//! # Caches
//!
//! Task definitions and service revisions are immutable once registered,
//! so they are cached by ARN (task definitions also by `family:revision`,
//! which names one revision for ever); a quiet cluster then costs only the
//! list and describe calls of its services. With
//! [`AwsOptions::ecs_records`](crate::AwsOptions::ecs_records) (the agent
//! gives it `ECS_DATADIR`'s store) they are also kept across restarts, with
//! the revisions each service's current rollouts run: a restart, and a
//! `serve` after the boot's `pullauth prefetch`, describe nothing again.
//! What the follower's current plan no longer names is dropped from both
//! ([`Aws::ecs_retain_task_definitions`], [`Aws::ecs_retain_revisions`]).
//!
//! # Pacing and retries
//!
//! With [`AwsOptions::pace_ecs`](crate::AwsOptions::pace_ecs) (the
//! long-running follower), every call first books a slot on one
//! client-side limiter ([`EcsPacer`]), and the ECS client makes a single
//! attempt per call: the follower's poll schedule is the retry, so a
//! throttled call ends the poll and the schedule backs off, instead of the
//! SDK's up-to-three attempts each landing in the account's bucket again
//! unpaced. Without it (the one-shot `pullauth prefetch`) calls go at once
//! and the SDK's standard retries, with back-off, apply.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use pullauth_ecs::{EcsService, ServiceRevision, TaskDefinition};
use pullauth_poll::{
    CallLimiter, DEFAULT_LIMITER_BURST, DEFAULT_LIMITER_MAX_RATE, DEFAULT_LIMITER_MIN_RATE,
    DESCRIBE_SERVICES_BATCH,
};
use serde::de::DeserializeOwned;

use crate::ecs_api::{EcsApi, EcsFailure, EcsFuture};
use crate::error::{Call, ErrorClass};
use crate::{Aws, AwsError, Principal};

/// The client-side pacing of ECS calls: every `ecs:*` call of the process
/// first books a slot on one [`CallLimiter`] (a token bucket whose rate
/// halves on each throttle and recovers on success, as the SDK's adaptive
/// retry mode), so that a poll with many calls, or many instances booting
/// together, does not land in the account's bucket as one burst. The fleet
/// simulation (`cargo bench -p pullauth-agent --bench fleet`) runs it.
///
/// A throttle also ends the burst it belongs to: a call that waited for its
/// slot while another call was throttled is not sent (it fails as
/// throttled, [`NOT_SENT`]), so that a poll's queued describes do not all
/// land in an account that just said it is over its budget; the poll ends
/// as throttled and its schedule backs off.
#[derive(Debug)]
pub(crate) struct EcsPacer {
    limiter: Mutex<CallLimiter>,
    /// The limiter's time origin (tokio's clock, so paused-time tests work).
    epoch: tokio::time::Instant,
    /// Off: every call goes at once (the limiter still learns the rate).
    enabled: bool,
    /// Throttles answered so far.
    throttles: std::sync::atomic::AtomicU64,
}

/// The message of a call the pacer did not send because another was
/// throttled while it waited for its slot.
pub const NOT_SENT: &str =
    "not sent: another ECS call of this process was throttled while it waited";

impl Default for EcsPacer {
    fn default() -> Self {
        EcsPacer::new(true)
    }
}

impl EcsPacer {
    pub(crate) fn new(enabled: bool) -> EcsPacer {
        EcsPacer {
            limiter: Mutex::new(CallLimiter::new(
                DEFAULT_LIMITER_BURST,
                DEFAULT_LIMITER_MAX_RATE,
                DEFAULT_LIMITER_MIN_RATE,
            )),
            epoch: tokio::time::Instant::now(),
            enabled,
            throttles: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl EcsPacer {
    fn limiter(&self) -> std::sync::MutexGuard<'_, CallLimiter> {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the limiter lets one more call go: `true` when it may
    /// be sent, `false` when another call was throttled while it waited.
    pub(crate) async fn ready(&self) -> bool {
        if !self.enabled {
            return true;
        }
        let throttles = self.throttles();
        let wait = self.limiter().acquire(self.epoch.elapsed());
        if !wait.is_zero() {
            tracing::debug!(?wait, "pacing the next ECS call");
            tokio::time::sleep(wait).await;
        }
        self.throttles() == throttles
    }

    fn throttles(&self) -> u64 {
        self.throttles.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Tells the limiter how the call went: a throttle slows it down, a
    /// success lets it recover; other failures say nothing about the rate.
    pub(crate) fn record<T>(&self, result: &Result<T, AwsError>) {
        let now = self.epoch.elapsed();
        match result {
            Ok(_) => self.limiter().on_success(now),
            Err(e) if e.class() == ErrorClass::Throttled => {
                self.throttles
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.limiter().on_throttle(now);
            }
            Err(_) => {}
        }
    }

    /// The limiter's current rate, in calls per second.
    pub(crate) fn rate(&self) -> f64 {
        self.limiter().rate()
    }
}

/// The services of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EcsServices {
    pub services: Vec<EcsService>,
    pub failures: Vec<EcsFailure>,
}

/// The cache of described task definitions, by ARN and `family:revision`.
/// Bounded by what the callers still name: [`Aws::ecs_retain_task_definitions`]
/// drops every revision the current plan no longer names.
#[derive(Debug, Default)]
pub(crate) struct TaskDefinitionCache {
    by_reference: Mutex<HashMap<String, Arc<TaskDefinition>>>,
}

impl TaskDefinitionCache {
    fn get(&self, reference: &str) -> Option<Arc<TaskDefinition>> {
        self.lock().get(reference).cloned()
    }

    fn put(&self, found: &Arc<TaskDefinition>) {
        let mut map = self.lock();
        if let Some(arn) = &found.arn {
            map.insert(arn.clone(), Arc::clone(found));
        }
        map.insert(found.name(), Arc::clone(found));
    }

    /// Keeps only the task definitions whose ARN is in `arns`.
    fn retain(&self, arns: &HashSet<String>) {
        self.lock()
            .retain(|_, td| td.arn.as_ref().is_some_and(|arn| arns.contains(arn)));
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<TaskDefinition>>> {
        self.by_reference
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether `reference` names one revision for ever (an ARN or
/// `family:revision`), so that its description may be cached. A bare
/// family means "the latest ACTIVE revision", which changes.
pub fn names_one_revision(reference: &str) -> bool {
    if reference.starts_with("arn:") {
        return true;
    }
    reference
        .rsplit_once(':')
        .is_some_and(|(family, revision)| {
            !family.is_empty()
                && !revision.is_empty()
                && revision.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Which kind of ECS answer an [`EcsRecords`] record holds. Each is
/// immutable for its key, and none holds a secret (a task definition names
/// its `repositoryCredentials` secret and execution role by ARN only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcsRecordKind {
    /// A [`TaskDefinition`] (JSON), by task definition ARN.
    TaskDefinition,
    /// A [`ServiceRevision`] (JSON), by service revision ARN.
    ServiceRevision,
    /// The service revision ARNs a service's rollouts (deployment and task
    /// set IDs) run, by `<cluster> <service>`: while the rollouts are the
    /// same, so are the revisions.
    ServicePins,
}

impl EcsRecordKind {
    /// A stable name, for the store's rows.
    pub fn name(self) -> &'static str {
        match self {
            EcsRecordKind::TaskDefinition => "ecs-task-definition",
            EcsRecordKind::ServiceRevision => "ecs-service-revision",
            EcsRecordKind::ServicePins => "ecs-service-pins",
        }
    }
}

/// Where the immutable ECS answers outlive the process (the agent gives
/// `ECS_DATADIR`'s store; pullauth-aws does not depend on it). Records are
/// JSON; a record that cannot be read back is described again.
///
/// A cache, never authoritative: every method may fail quietly (a store
/// locked by another process, a full disk), and then the answer is simply
/// not kept. The methods may block (a file read or an `fsync`): [`Aws`]
/// calls them on Tokio's blocking pool.
pub trait EcsRecords: Send + Sync + std::fmt::Debug {
    /// The record `key` of `kind`, if kept.
    fn load(&self, kind: EcsRecordKind, key: &str) -> Option<String>;
    /// Keeps `record` as `key` of `kind` (replacing one kept before).
    fn save(&self, kind: EcsRecordKind, key: &str, record: &str);
    /// Drops every record of `kind` whose key is not in `keep`.
    fn retain(&self, kind: EcsRecordKind, keep: &HashSet<String>);
}

/// What [`EcsRecordKind::ServicePins`] keeps.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePins {
    rollouts: String,
    revisions: Vec<String>,
}

fn pins_key(cluster: &str, service: &str) -> String {
    format!("{cluster} {service}")
}

impl Aws {
    /// One ECS call (`operation` on `target`) through the pacer: booked on
    /// the limiter, counted, and its outcome told back to the limiter; not
    /// sent when another call was throttled while it waited.
    async fn ecs_call<T>(
        &self,
        operation: &'static str,
        target: impl FnOnce() -> String,
        call: EcsFuture<'_, T>,
    ) -> Result<T, AwsError> {
        if !self.inner.ecs_pacer.ready().await {
            return Err(AwsError::Throttled {
                call: Call {
                    operation,
                    target: target(),
                    principal: Principal::Default.to_string(),
                },
                code: "ThrottlingException".to_owned(),
                message: NOT_SENT.to_owned(),
            });
        }
        self.inner.counters.add(&self.inner.counters.ecs_calls);
        let result = call.await;
        self.inner.ecs_pacer.record(&result);
        result
    }

    fn ecs(&self) -> &dyn EcsApi {
        self.inner.ecs.as_ref()
    }

    /// The record `key` of `kind` from [`AwsOptions::ecs_records`], read
    /// back; `None` when there is no such record, no records, or it does
    /// not read back.
    ///
    /// [`AwsOptions::ecs_records`]: crate::AwsOptions::ecs_records
    async fn load_record<T: DeserializeOwned>(&self, kind: EcsRecordKind, key: &str) -> Option<T> {
        let records = self.inner.options.ecs_records.clone()?;
        let owned = key.to_owned();
        let text = tokio::task::spawn_blocking(move || records.load(kind, &owned))
            .await
            .ok()??;
        match serde_json::from_str(&text) {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::debug!(kind = kind.name(), key, %error, "a kept ECS record does not read back; describing it again");
                None
            }
        }
    }

    /// Keeps `value` as `key` of `kind`, when there are records.
    async fn save_record<T: serde::Serialize>(&self, kind: EcsRecordKind, key: &str, value: &T) {
        let Some(records) = self.inner.options.ecs_records.clone() else {
            return;
        };
        let Ok(text) = serde_json::to_string(value) else {
            return;
        };
        let key = key.to_owned();
        let _ = tokio::task::spawn_blocking(move || records.save(kind, &key, &text)).await;
    }

    /// Drops the records of `kind` not in `keep`, in the background (a
    /// write the caller need not wait for).
    fn retain_records(&self, kind: EcsRecordKind, keep: HashSet<String>) {
        let Some(records) = self.inner.options.ecs_records.clone() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || records.retain(kind, &keep));
            }
            Err(_) => records.retain(kind, &keep),
        }
    }
}

impl Aws {
    /// How fast this process may call ECS now, in calls per second: the
    /// client-side limiter's rate (lower after throttles).
    pub fn ecs_call_rate(&self) -> f64 {
        self.inner.ecs_pacer.rate()
    }

    /// The services of `cluster` (name or ARN), each with the task
    /// definitions it runs: `ecs:ListServices` page by page, then
    /// `ecs:DescribeServices` ten at a time. Services ECS cannot describe
    /// are listed in [`EcsServices::failures`]; a failed call fails the
    /// whole answer (the caller keeps its last good view).
    pub async fn ecs_services(&self, cluster: &str) -> Result<EcsServices, AwsError> {
        self.counted(self.ecs_services_inner(cluster).await)
    }

    async fn ecs_services_inner(&self, cluster: &str) -> Result<EcsServices, AwsError> {
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .ecs_call(
                    "ecs:ListServices",
                    || format!("cluster {cluster}"),
                    self.ecs().list_services(cluster, token.as_deref()),
                )
                .await?;
            arns.extend(page.service_arns);
            match page.next_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        let mut out = EcsServices::default();
        for batch in arns.chunks(DESCRIBE_SERVICES_BATCH as usize) {
            let described = self
                .ecs_call(
                    "ecs:DescribeServices",
                    || format!("cluster {cluster}"),
                    self.ecs().describe_services(cluster, batch),
                )
                .await?;
            // An answer that names neither a service nor a failure for a
            // service asked about (an empty or wrongly shaped body that
            // still parses) must not make the service silently vanish.
            for asked in batch {
                let answered = described.services.iter().any(|s| {
                    s.arn.as_deref() == Some(asked.as_str())
                        || asked.rsplit('/').next() == Some(s.service.name.as_str())
                }) || described.failures.iter().any(|f| f.service == *asked);
                if !answered {
                    out.failures.push(EcsFailure {
                        service: asked.clone(),
                        reason: "the answer names neither this service nor a failure for it"
                            .to_owned(),
                    });
                }
            }
            out.services
                .extend(described.services.into_iter().map(|s| s.service));
            out.failures.extend(described.failures);
        }
        out.services.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The task definition `reference` names (ARN, `family:revision`, or a
    /// bare family for its latest revision), from the cache when it names
    /// one revision and was described before (by this process, or, by ARN,
    /// by any process keeping [`EcsRecords`] in the same place).
    pub async fn ecs_task_definition(
        &self,
        reference: &str,
    ) -> Result<Arc<TaskDefinition>, AwsError> {
        if let Some(found) = self.inner.task_definitions.get(reference) {
            self.inner
                .counters
                .add(&self.inner.counters.task_definition_cache_hits);
            return Ok(found);
        }
        if reference.starts_with("arn:")
            && let Some(kept) = self
                .load_record::<TaskDefinition>(EcsRecordKind::TaskDefinition, reference)
                .await
                .filter(|kept| kept.arn.as_deref() == Some(reference))
        {
            let found = Arc::new(kept);
            self.inner.task_definitions.put(&found);
            self.inner
                .counters
                .add(&self.inner.counters.task_definition_cache_hits);
            return Ok(found);
        }
        let result = self
            .ecs_call(
                "ecs:DescribeTaskDefinition",
                || format!("task definition {reference}"),
                self.ecs().describe_task_definition(reference),
            )
            .await
            .map(Arc::new);
        match &result {
            Ok(found) if names_one_revision(reference) => {
                self.inner.task_definitions.put(found);
                if let Some(arn) = &found.arn {
                    self.save_record(EcsRecordKind::TaskDefinition, arn, found.as_ref())
                        .await;
                }
            }
            Ok(_) => {}
            Err(e) => self.inner.counters.failure(e.class()),
        }
        result
    }

    /// Drops every cached task definition whose ARN is not in `arns` (the
    /// revisions the current plan names), in memory and in the kept
    /// records: the cache holds what is in use, not every revision ever
    /// seen. Returns how many entries remain in memory.
    pub fn ecs_retain_task_definitions(&self, arns: &HashSet<String>) -> usize {
        self.inner.task_definitions.retain(arns);
        self.retain_records(EcsRecordKind::TaskDefinition, arns.clone());
        self.inner.task_definitions.len()
    }

    /// The attributes ECS holds for the container instance `arn` in
    /// `cluster` (built-in and custom), from
    /// `ecs:DescribeContainerInstances`: what `memberOf` constraints are
    /// evaluated against.
    pub async fn ecs_container_instance_attributes(
        &self,
        cluster: &str,
        arn: &str,
    ) -> Result<BTreeMap<String, String>, AwsError> {
        self.counted(
            self.ecs_call(
                "ecs:DescribeContainerInstances",
                || format!("container instance {arn} in cluster {cluster}"),
                self.ecs().describe_container_instance(cluster, arn),
            )
            .await,
        )
    }
}

/// What the instance metadata service says about this instance, as the
/// ECS attributes built from it (`ecs.instance-type`,
/// `ecs.availability-zone`, `ecs.ami-id`) and the EC2 instance ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFacts {
    pub attributes: BTreeMap<String, String>,
    pub instance_id: Option<String>,
}

/// How long one IMDS request may take (connect and read each): IMDS
/// answers in milliseconds on an instance, and off one nothing listens.
pub const IMDS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

impl Aws {
    /// This instance's facts from IMDS (v2 sessions, the SDK's client), read
    /// once for the life of this client: `None` off EC2, with
    /// `AWS_EC2_METADATA_DISABLED=true`, or when IMDS does not answer within
    /// its bounds (two attempts of [`IMDS_TIMEOUT`]); each path that fails
    /// is left out.
    pub async fn instance_facts(&self) -> Option<InstanceFacts> {
        // An instance's type, zone and AMI never change: read once.
        self.inner
            .instance_facts
            .get_or_init(|| self.read_instance_facts())
            .await
            .clone()
    }

    async fn read_instance_facts(&self) -> Option<InstanceFacts> {
        if std::env::var("AWS_EC2_METADATA_DISABLED")
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
        {
            return None;
        }
        let provider = aws_config::provider_config::ProviderConfig::default()
            .with_http_client(crate::client::https_client(None));
        let client = aws_config::imds::Client::builder()
            .configure(&provider)
            .connect_timeout(IMDS_TIMEOUT)
            .read_timeout(IMDS_TIMEOUT)
            .max_attempts(2)
            .build();
        let get = |path: &'static str| {
            let client = client.clone();
            async move {
                match client.get(format!("/latest/meta-data/{path}")).await {
                    Ok(value) => Some(String::from(value)),
                    Err(error) => {
                        tracing::debug!(path, %error, "IMDS did not answer");
                        None
                    }
                }
            }
        };
        // The first answer tells whether IMDS is there at all.
        let instance_id = get("instance-id").await?;
        let mut facts = InstanceFacts {
            attributes: BTreeMap::new(),
            instance_id: Some(instance_id),
        };
        for (attribute, path) in [
            ("ecs.instance-type", "instance-type"),
            ("ecs.availability-zone", "placement/availability-zone"),
            ("ecs.ami-id", "ami-id"),
        ] {
            if let Some(value) = get(path).await {
                facts.attributes.insert(attribute.to_owned(), value);
            }
        }
        Some(facts)
    }
}

/// The service revisions ECS pinned digests in for one service, and a
/// warning the first time a cause keeps them from being read.
#[derive(Debug, Clone, Default)]
pub struct Pins {
    /// Newest first.
    pub revisions: Vec<Arc<ServiceRevision>>,
    /// Set once per cause for the life of this client (a denied or
    /// unsupported call): the caller logs it; later polls stay quiet.
    pub warning: Option<String>,
    /// The throttle that kept the revisions from being read: the caller's
    /// read is throttled (it backs off, and the next one reads them; what
    /// was read is cached), not a read without digests.
    pub throttled: Option<AwsError>,
}

/// How long the revision calls rest after a failure that is not a
/// throttle (denied, unsupported, unreachable): the digests degrade to
/// tags meanwhile, and ECS is not asked again on every poll.
pub const REVISIONS_REST: std::time::Duration = std::time::Duration::from_secs(3600);

/// How many of a service's newest deployments are read for their target
/// revisions: the in-progress ones and the last that completed.
pub const SERVICE_DEPLOYMENTS_READ: i32 = 10;

/// `ecs:DescribeServiceRevisions` takes at most this many ARNs a call.
pub const DESCRIBE_SERVICE_REVISIONS_BATCH: usize = 20;

/// Service revisions (immutable by ARN) and what keeps them from being
/// read.
#[derive(Debug, Default)]
pub(crate) struct RevisionCache {
    inner: Mutex<RevisionState>,
}

/// The rollouts (deployment and task set IDs) a service's revisions were
/// read for, and those revisions.
type ServiceRevisions = (String, Vec<Arc<ServiceRevision>>);

#[derive(Debug, Default)]
struct RevisionState {
    by_arn: HashMap<String, Arc<ServiceRevision>>,
    /// Per (cluster, service): the rollouts read for, and their revisions.
    by_service: HashMap<(String, String), ServiceRevisions>,
    /// Until when the calls rest, and why.
    resting: Option<(tokio::time::Instant, String)>,
    warned: HashSet<String>,
}

impl RevisionCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, RevisionState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Aws {
    /// The revisions of `service`'s current deployments, with the digests
    /// ECS resolved for their containers: `ecs:ListServiceDeployments`
    /// (one call, one attempt: the digests are an improvement, a failure
    /// degrades to tags) and `ecs:DescribeServiceRevisions` for revisions
    /// not seen before. A failure other than a throttle rests the calls for
    /// [`REVISIONS_REST`]; each cause is warned about once.
    ///
    /// `rollouts` names the service's current deployments and task sets
    /// (their IDs): while it is the same as at the last read (by this
    /// process, or one keeping [`EcsRecords`] in the same place), the same
    /// revisions are answered without a call, so a quiet cluster costs no
    /// call per service and poll; a new deployment is read once.
    pub async fn ecs_service_revisions(
        &self,
        cluster: &str,
        service: &str,
        rollouts: &str,
    ) -> Pins {
        let cache = &self.inner.revisions;
        let known = (cluster.to_owned(), service.to_owned());
        {
            let state = cache.lock();
            if let Some((seen, revisions)) = state.by_service.get(&known)
                && seen == rollouts
            {
                return Pins {
                    revisions: revisions.clone(),
                    ..Pins::default()
                };
            }
        }
        if let Some(revisions) = self.kept_pins(cluster, service, rollouts).await {
            cache
                .lock()
                .by_service
                .insert(known, (rollouts.to_owned(), revisions.clone()));
            return Pins {
                revisions,
                ..Pins::default()
            };
        }
        {
            let state = cache.lock();
            if let Some((until, _)) = &state.resting
                && tokio::time::Instant::now() < *until
            {
                return Pins::default();
            }
        }
        match self.read_service_revisions(cluster, service).await {
            Ok(revisions) => {
                let kept = ServicePins {
                    rollouts: rollouts.to_owned(),
                    revisions: revisions.iter().map(|r| r.arn.clone()).collect(),
                };
                self.save_record(
                    EcsRecordKind::ServicePins,
                    &pins_key(cluster, service),
                    &kept,
                )
                .await;
                cache
                    .lock()
                    .by_service
                    .insert(known, (rollouts.to_owned(), revisions.clone()));
                Pins {
                    revisions,
                    ..Pins::default()
                }
            }
            Err(error) if error.class() == ErrorClass::Throttled => {
                self.inner.counters.failure(error.class());
                Pins {
                    throttled: Some(error),
                    ..Pins::default()
                }
            }
            Err(error) => {
                self.inner.counters.failure(error.class());
                let cause = format!(
                    "{}: the images are pulled by tag, not by the digest ECS pinned",
                    error
                );
                let mut state = cache.lock();
                state.resting = Some((tokio::time::Instant::now() + REVISIONS_REST, cause.clone()));
                // One warning per kind of failure, not per service or poll.
                let kind = format!("{:?}", error.class());
                let warning = state.warned.insert(kind).then_some(cause);
                Pins {
                    revisions: Vec::new(),
                    warning,
                    throttled: None,
                }
            }
        }
    }

    /// The revisions a kept record says `service`'s `rollouts` run, when
    /// there is one for these rollouts and every revision it names is
    /// known (in memory or kept).
    async fn kept_pins(
        &self,
        cluster: &str,
        service: &str,
        rollouts: &str,
    ) -> Option<Vec<Arc<ServiceRevision>>> {
        let kept: ServicePins = self
            .load_record(EcsRecordKind::ServicePins, &pins_key(cluster, service))
            .await?;
        if kept.rollouts != rollouts {
            return None;
        }
        let mut revisions = Vec::with_capacity(kept.revisions.len());
        for arn in &kept.revisions {
            revisions.push(self.known_revision(arn).await?);
        }
        Some(revisions)
    }

    /// The service revision `arn` from memory, else from the kept records
    /// (then remembered in memory).
    async fn known_revision(&self, arn: &str) -> Option<Arc<ServiceRevision>> {
        if let Some(found) = self.inner.revisions.lock().by_arn.get(arn) {
            return Some(Arc::clone(found));
        }
        let kept: ServiceRevision = self
            .load_record(EcsRecordKind::ServiceRevision, arn)
            .await
            .filter(|kept: &ServiceRevision| kept.arn == arn)?;
        let kept = Arc::new(kept);
        self.inner
            .revisions
            .lock()
            .by_arn
            .insert(arn.to_owned(), Arc::clone(&kept));
        Some(kept)
    }

    /// Drops cached revisions whose task definition is not in `arns`, and
    /// what is known of services other than `services` of `cluster`, in
    /// memory and in the kept records.
    pub fn ecs_retain_revisions<'s>(
        &self,
        arns: &HashSet<String>,
        cluster: &str,
        services: impl IntoIterator<Item = &'s String>,
    ) {
        let followed: HashSet<&String> = services.into_iter().collect();
        let (revisions, pins) = {
            let mut state = self.inner.revisions.lock();
            state
                .by_arn
                .retain(|_, r| arns.contains(&r.task_definition));
            state
                .by_service
                .retain(|(c, service), _| c == cluster && followed.contains(service));
            (
                state.by_arn.keys().cloned().collect(),
                state
                    .by_service
                    .keys()
                    .map(|(c, service)| pins_key(c, service))
                    .collect(),
            )
        };
        self.retain_records(EcsRecordKind::ServiceRevision, revisions);
        self.retain_records(EcsRecordKind::ServicePins, pins);
    }

    async fn read_service_revisions(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<Vec<Arc<ServiceRevision>>, AwsError> {
        let mut deployments = self
            .ecs_call(
                "ecs:ListServiceDeployments",
                || format!("service {service} in cluster {cluster}"),
                self.ecs().list_service_deployments(cluster, service),
            )
            .await?;
        deployments.sort_by_key(|d| std::cmp::Reverse(d.created_at));
        let mut wanted: Vec<String> = Vec::new();
        let mut completed = false;
        for d in &deployments {
            let running = match d.status.as_deref() {
                Some("PENDING" | "IN_PROGRESS" | "ROLLBACK_IN_PROGRESS") => true,
                Some("SUCCESSFUL" | "ROLLBACK_SUCCESSFUL") if !completed => {
                    completed = true;
                    true
                }
                _ => false,
            };
            if let (true, Some(arn)) = (running, &d.target_service_revision_arn)
                && !wanted.iter().any(|w| w == arn)
            {
                wanted.push(arn.clone());
            }
        }
        let mut unknown: Vec<String> = Vec::new();
        for arn in &wanted {
            if self.known_revision(arn).await.is_none() {
                unknown.push(arn.clone());
            }
        }
        for batch in unknown.chunks(DESCRIBE_SERVICE_REVISIONS_BATCH) {
            let described = self
                .ecs_call(
                    "ecs:DescribeServiceRevisions",
                    || format!("service {service} in cluster {cluster}"),
                    self.ecs().describe_service_revisions(batch),
                )
                .await?;
            for revision in described {
                let revision = Arc::new(revision);
                self.save_record(
                    EcsRecordKind::ServiceRevision,
                    &revision.arn,
                    revision.as_ref(),
                )
                .await;
                self.inner
                    .revisions
                    .lock()
                    .by_arn
                    .insert(revision.arn.clone(), revision);
            }
        }
        let state = self.inner.revisions.lock();
        Ok(wanted
            .iter()
            .filter_map(|arn| state.by_arn.get(arn).cloned())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    /// The pacer in front of every ECS call: a burst goes at once, then
    /// calls are spaced at the limiter's rate, a throttle halves it and
    /// successes win it back; other failures leave it alone.
    /// The cache holds what the plan names: through 10,000 revisions of a
    /// family, each poll naming only the newest, it never holds more than
    /// one revision (by ARN and by family:revision).
    #[test]
    fn the_task_definition_cache_keeps_only_what_the_plan_names() {
        let cache = TaskDefinitionCache::default();
        for revision in 1..=10_000 {
            let arn = format!("arn:aws:ecs:us-east-1:1:task-definition/web:{revision}");
            cache.put(&Arc::new(TaskDefinition {
                arn: Some(arn.clone()),
                family: "web".into(),
                revision: Some(revision),
                ..TaskDefinition::default()
            }));
            cache.retain(&HashSet::from([arn]));
            assert_eq!(cache.len(), 2, "revision {revision}");
        }
        assert!(cache.get("web:10000").is_some());
        assert!(cache.get("web:9999").is_none());
    }

    /// A one-shot prefetch reads ECS unpaced: ten calls go at once.
    #[tokio::test(start_paused = true)]
    async fn an_unpaced_client_never_waits() {
        let pacer = EcsPacer::new(false);
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            pacer.ready().await;
        }
        assert_eq!(start.elapsed(), std::time::Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn ecs_calls_are_paced_and_throttles_slow_them_down() {
        let pacer = EcsPacer::default();
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            pacer.ready().await;
        }
        assert_eq!(
            start.elapsed(),
            std::time::Duration::ZERO,
            "the burst waits"
        );
        pacer.ready().await;
        let spaced = start.elapsed();
        assert!(
            spaced > std::time::Duration::ZERO
                && spaced <= std::time::Duration::from_secs_f64(1.0 / DEFAULT_LIMITER_MAX_RATE),
            "{spaced:?}"
        );
        let throttled: Result<(), AwsError> = Err(AwsError::Throttled {
            call: Call {
                operation: "ecs:ListServices",
                target: "cluster c".into(),
                principal: "default".into(),
            },
            code: "ThrottlingException".into(),
            message: "Rate exceeded".into(),
        });
        let before = pacer.rate();
        pacer.record(&throttled);
        assert!(pacer.rate() < before, "{} !< {before}", pacer.rate());
        let slowed = pacer.rate();
        pacer.record(&Ok::<(), AwsError>(()));
        assert!(pacer.rate() > slowed);
    }

    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case::arn("arn:aws:ecs:eu-west-1:123456789012:task-definition/web:3", true)]
    #[case::family_revision("web:3", true)]
    #[case::bare_family("web", false)]
    #[case::empty_revision("web:", false)]
    #[case::non_numeric_revision("web:latest", false)]
    fn which_references_name_one_revision(#[case] reference: &str, #[case] fixed: bool) {
        assert_eq!(names_one_revision(reference), fixed);
    }
}

/// `Aws` above a fake [`EcsApi`]: what the caches, the kept records and the
/// pacer do with the calls, counted per operation.
#[cfg(test)]
mod seam_tests {
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::sync::{Arc, Mutex};

    use pullauth_ecs::{
        Capacity, ContainerDefinition, EcsService, PinnedImage, Run, ServiceRevision,
        ServiceStatus, TaskDefinition,
    };

    use super::{EcsRecordKind, EcsRecords};
    use crate::ecs_api::{
        DescribedService, DescribedServices, EcsApi, EcsFuture, ServiceDeployment, ServicesPage,
    };
    use crate::error::Call;
    use crate::{Aws, AwsError, AwsOptions};

    const CLUSTER: &str = "prod";

    fn td_arn(family: &str, revision: i32) -> String {
        format!("arn:aws:ecs:eu-west-1:123456789012:task-definition/{family}:{revision}")
    }

    fn revision_arn(service: &str, revision: i32) -> String {
        format!(
            "arn:aws:ecs:eu-west-1:123456789012:service-revision/{CLUSTER}/{service}/{revision}"
        )
    }

    /// A cluster of services `svc-0..n`, service `svc-i` running revision
    /// `revisions[i]` of family `svc-i` through one deployment (ID
    /// `ecs-svc/i-<revision>`) whose service revision pins one digest. Every
    /// call is counted by operation; `throttle` answers every call with a
    /// throttle.
    #[derive(Debug, Default)]
    struct FakeEcs {
        revisions: Mutex<Vec<i32>>,
        calls: Mutex<HashMap<&'static str, usize>>,
        throttle: std::sync::atomic::AtomicBool,
        /// How long each answer takes (zero: at once).
        latency: std::time::Duration,
    }

    impl FakeEcs {
        fn with_services(n: usize) -> Arc<FakeEcs> {
            Arc::new(FakeEcs {
                revisions: Mutex::new(vec![1; n]),
                ..FakeEcs::default()
            })
        }

        /// Counts one call of `operation` and answers it after the latency.
        async fn count(&self, operation: &'static str) -> Result<(), AwsError> {
            *self
                .calls
                .lock()
                .expect("calls")
                .entry(operation)
                .or_default() += 1;
            tokio::time::sleep(self.latency).await;
            if self.throttle.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(AwsError::Throttled {
                    call: Call {
                        operation,
                        target: format!("cluster {CLUSTER}"),
                        principal: "the default credential chain".into(),
                    },
                    code: "ThrottlingException".into(),
                    message: "Rate exceeded".into(),
                });
            }
            Ok(())
        }

        fn calls(&self, operation: &str) -> usize {
            self.calls
                .lock()
                .expect("calls")
                .get(operation)
                .copied()
                .unwrap_or(0)
        }

        fn total(&self) -> usize {
            self.calls.lock().expect("calls").values().sum()
        }

        fn deploy(&self, service: usize) -> i32 {
            let mut revisions = self.revisions.lock().expect("revisions");
            revisions[service] += 1;
            revisions[service]
        }

        fn revision_of(&self, service: &str) -> (usize, i32) {
            let index: usize = service
                .trim_start_matches("svc-")
                .parse()
                .expect("a fake service");
            (index, self.revisions.lock().expect("revisions")[index])
        }
    }

    impl EcsApi for FakeEcs {
        fn list_services<'a>(
            &'a self,
            _cluster: &'a str,
            _next_token: Option<&'a str>,
        ) -> EcsFuture<'a, ServicesPage> {
            Box::pin(async move {
                self.count("ListServices").await?;
                let n = self.revisions.lock().expect("revisions").len();
                Ok(ServicesPage {
                    service_arns: (0..n)
                        .map(|i| {
                            format!("arn:aws:ecs:eu-west-1:123456789012:service/{CLUSTER}/svc-{i}")
                        })
                        .collect(),
                    next_token: None,
                })
            })
        }

        fn describe_services<'a>(
            &'a self,
            _cluster: &'a str,
            services: &'a [String],
        ) -> EcsFuture<'a, DescribedServices> {
            Box::pin(async move {
                self.count("DescribeServices").await?;
                let services = services
                    .iter()
                    .map(|arn| {
                        let name = arn.rsplit('/').next().unwrap_or_default().to_owned();
                        let (i, revision) = self.revision_of(&name);
                        DescribedService {
                            arn: Some(arn.clone()),
                            service: EcsService {
                                name,
                                status: ServiceStatus::Active,
                                deployment_controller: "ECS".into(),
                                placement_constraints: Vec::new(),
                                runs: vec![Run {
                                    task_definition: td_arn(&format!("svc-{i}"), revision),
                                    capacity: Capacity::default(),
                                    id: Some(format!("ecs-svc/{i}-{revision}")),
                                    origin: "deployment PRIMARY".into(),
                                }],
                            },
                        }
                    })
                    .collect();
                Ok(DescribedServices {
                    services,
                    failures: Vec::new(),
                })
            })
        }

        fn describe_task_definition<'a>(
            &'a self,
            reference: &'a str,
        ) -> EcsFuture<'a, TaskDefinition> {
            Box::pin(async move {
                self.count("DescribeTaskDefinition").await?;
                let (family, revision) = reference
                    .rsplit('/')
                    .next()
                    .and_then(|name| name.split_once(':'))
                    .expect("an ARN");
                let revision: i32 = revision.parse().expect("a revision");
                Ok(TaskDefinition {
                    arn: Some(td_arn(family, revision)),
                    family: family.to_owned(),
                    revision: Some(revision),
                    containers: vec![ContainerDefinition {
                        name: "app".into(),
                        image: format!("registry.example.com/{family}:{revision}"),
                        essential: true,
                        credentials_parameter: None,
                    }],
                    ..TaskDefinition::default()
                })
            })
        }

        fn list_service_deployments<'a>(
            &'a self,
            _cluster: &'a str,
            service: &'a str,
        ) -> EcsFuture<'a, Vec<ServiceDeployment>> {
            Box::pin(async move {
                self.count("ListServiceDeployments").await?;
                let (_, revision) = self.revision_of(service);
                Ok(vec![ServiceDeployment {
                    status: Some("SUCCESSFUL".into()),
                    target_service_revision_arn: Some(revision_arn(service, revision)),
                    created_at: None,
                }])
            })
        }

        fn describe_service_revisions<'a>(
            &'a self,
            arns: &'a [String],
        ) -> EcsFuture<'a, Vec<ServiceRevision>> {
            Box::pin(async move {
                self.count("DescribeServiceRevisions").await?;
                Ok(arns
                    .iter()
                    .map(|arn| {
                        let mut parts = arn.rsplit('/');
                        let revision: i32 = parts.next().and_then(|r| r.parse().ok()).expect("rev");
                        let service = parts.next().expect("service");
                        ServiceRevision {
                            arn: arn.clone(),
                            task_definition: td_arn(service, revision),
                            images: vec![PinnedImage {
                                container_name: "app".into(),
                                image: format!("registry.example.com/{service}:{revision}"),
                                digest: format!("sha256:{:064x}", revision),
                            }],
                        }
                    })
                    .collect())
            })
        }

        fn describe_container_instance<'a>(
            &'a self,
            _cluster: &'a str,
            _arn: &'a str,
        ) -> EcsFuture<'a, BTreeMap<String, String>> {
            Box::pin(async move {
                self.count("DescribeContainerInstances").await?;
                Ok(BTreeMap::new())
            })
        }
    }

    /// Records in memory, shared by the `Aws` clients of one test as a data
    /// directory is by the processes of one instance.
    #[derive(Debug, Default)]
    struct MemoryRecords {
        rows: Mutex<HashMap<(EcsRecordKind, String), String>>,
    }

    impl MemoryRecords {
        fn keys(&self, kind: EcsRecordKind) -> HashSet<String> {
            self.rows
                .lock()
                .expect("rows")
                .keys()
                .filter(|(k, _)| *k == kind)
                .map(|(_, key)| key.clone())
                .collect()
        }
    }

    impl EcsRecords for MemoryRecords {
        fn load(&self, kind: EcsRecordKind, key: &str) -> Option<String> {
            self.rows
                .lock()
                .expect("rows")
                .get(&(kind, key.to_owned()))
                .cloned()
        }

        fn save(&self, kind: EcsRecordKind, key: &str, record: &str) {
            self.rows
                .lock()
                .expect("rows")
                .insert((kind, key.to_owned()), record.to_owned());
        }

        fn retain(&self, kind: EcsRecordKind, keep: &HashSet<String>) {
            self.rows
                .lock()
                .expect("rows")
                .retain(|(k, key), _| *k != kind || keep.contains(key));
        }
    }

    fn aws(ecs: &Arc<FakeEcs>, records: Option<&Arc<MemoryRecords>>) -> Aws {
        Aws::with_ecs_api(
            ecs.clone(),
            AwsOptions {
                ecs_records: records.map(|r| r.clone() as Arc<dyn EcsRecords>),
                ..AwsOptions::default()
            },
        )
    }

    /// What a follower's poll reads: the services, each one's task
    /// definitions and pinned revisions; then what it keeps. Returns the
    /// images with their digests.
    async fn poll(aws: &Aws) -> Vec<(String, Option<String>)> {
        let listed = aws.ecs_services(CLUSTER).await.expect("services");
        let mut arns = HashSet::new();
        let mut images = Vec::new();
        for service in &listed.services {
            let run = &service.runs[0];
            let td = aws
                .ecs_task_definition(&run.task_definition)
                .await
                .expect("task definition");
            let pins = aws
                .ecs_service_revisions(CLUSTER, &service.name, run.id.as_deref().unwrap_or(""))
                .await;
            let digest = pins
                .revisions
                .iter()
                .flat_map(|r| r.images.iter())
                .map(|p| p.digest.clone())
                .next();
            images.push((td.containers[0].image.clone(), digest));
            arns.insert(td.arn.clone().expect("arn"));
        }
        aws.ecs_retain_revisions(&arns, CLUSTER, listed.services.iter().map(|s| &s.name));
        aws.ecs_retain_task_definitions(&arns);
        images
    }

    /// Issue 24: with the data directory's records, a restart (a new
    /// client, as a new process) describes nothing again: a poll costs the
    /// list and describe calls of the services only, and reads the same
    /// images and digests as the first run.
    #[tokio::test(start_paused = true)]
    async fn a_restart_with_the_same_records_describes_nothing_again() {
        let ecs = FakeEcs::with_services(12);
        let records = Arc::new(MemoryRecords::default());
        let first = poll(&aws(&ecs, Some(&records))).await;
        assert_eq!(ecs.calls("DescribeTaskDefinition"), 12);
        assert_eq!(ecs.calls("ListServiceDeployments"), 12);
        assert_eq!(ecs.calls("DescribeServiceRevisions"), 12);
        assert!(
            first.iter().all(|(_, digest)| digest.is_some()),
            "{first:?}"
        );
        tokio::task::yield_now().await;

        let before = ecs.total();
        let restarted = aws(&ecs, Some(&records));
        let again = poll(&restarted).await;
        assert_eq!(again, first);
        assert_eq!(
            ecs.total() - before,
            3,
            "1 ListServices + 2 DescribeServices, nothing described: {:?}",
            ecs.calls.lock().expect("calls")
        );
        assert_eq!(ecs.calls("DescribeTaskDefinition"), 12);
        assert_eq!(ecs.calls("ListServiceDeployments"), 12);
    }

    /// Without records, the same restart describes everything again (what
    /// the records save).
    #[tokio::test(start_paused = true)]
    async fn without_records_a_restart_describes_everything_again() {
        let ecs = FakeEcs::with_services(3);
        poll(&aws(&ecs, None)).await;
        poll(&aws(&ecs, None)).await;
        assert_eq!(ecs.calls("DescribeTaskDefinition"), 6);
        assert_eq!(ecs.calls("DescribeServiceRevisions"), 6);
    }

    /// A deployment costs one describe of its task definition and revision,
    /// and the records then keep only what the plan names: the old
    /// revision's task definition, service revision and pins are gone.
    #[tokio::test(start_paused = true)]
    async fn records_keep_only_what_the_plan_names() {
        let ecs = FakeEcs::with_services(2);
        let records = Arc::new(MemoryRecords::default());
        let aws = aws(&ecs, Some(&records));
        poll(&aws).await;
        let revision = ecs.deploy(1);
        let images = poll(&aws).await;
        assert_eq!(
            images[1].0,
            format!("registry.example.com/svc-1:{revision}")
        );
        assert_eq!(ecs.calls("DescribeTaskDefinition"), 3);
        assert_eq!(ecs.calls("DescribeServiceRevisions"), 3);
        // The evictions run on the blocking pool; let them finish.
        for _ in 0..100 {
            if records.keys(EcsRecordKind::TaskDefinition).len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(
            records.keys(EcsRecordKind::TaskDefinition),
            HashSet::from([td_arn("svc-0", 1), td_arn("svc-1", revision)])
        );
        assert_eq!(
            records.keys(EcsRecordKind::ServiceRevision),
            HashSet::from([revision_arn("svc-0", 1), revision_arn("svc-1", revision)])
        );
        assert_eq!(records.keys(EcsRecordKind::ServicePins).len(), 2);
    }

    /// A record that does not read back (another build's, damaged) is
    /// described again, never an error.
    #[tokio::test(start_paused = true)]
    async fn an_unreadable_record_is_described_again() {
        let ecs = FakeEcs::with_services(1);
        let records = Arc::new(MemoryRecords::default());
        records.save(
            EcsRecordKind::TaskDefinition,
            &td_arn("svc-0", 1),
            "{\"not\": 1}",
        );
        let aws = aws(&ecs, Some(&records));
        let td = aws
            .ecs_task_definition(&td_arn("svc-0", 1))
            .await
            .expect("described");
        assert_eq!(td.family, "svc-0");
        assert_eq!(ecs.calls("DescribeTaskDefinition"), 1);
    }

    /// Every call goes through the pacer: a throttle answered by ECS
    /// slows the client down and is counted by class; the next call is
    /// still made (the caller's schedule decides when).
    #[tokio::test(start_paused = true)]
    async fn throttles_behind_the_seam_slow_the_pacer() {
        let ecs = FakeEcs::with_services(1);
        let aws = aws(&ecs, None);
        let before = aws.ecs_call_rate();
        ecs.throttle
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let error = aws.ecs_services(CLUSTER).await.expect_err("throttled");
        assert_eq!(error.class(), crate::ErrorClass::Throttled);
        assert!(aws.ecs_call_rate() < before);
        assert_eq!(ecs.calls("ListServices"), 1);
        let counters = aws.counters();
        assert_eq!(counters.ecs_calls, 1);
        assert!(
            counters
                .failures
                .iter()
                .any(|(class, n)| *class == crate::ErrorClass::Throttled && *n == 1),
            "{counters:?}"
        );
    }

    /// Issue 24: a throttle ends the burst. Ten describes asked at once
    /// (a cold poll): the limiter's burst of five is sent and throttled;
    /// the five waiting for a slot are not sent at all, and every answer is
    /// a throttle, so the poll ends as throttled.
    #[tokio::test(start_paused = true)]
    async fn calls_waiting_when_another_is_throttled_are_not_sent() {
        let ecs = Arc::new(FakeEcs {
            revisions: Mutex::new(vec![1; 10]),
            latency: std::time::Duration::from_millis(100),
            ..FakeEcs::default()
        });
        ecs.throttle
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let aws = aws(&ecs, None);
        let arns: Vec<String> = (0..10).map(|i| td_arn(&format!("svc-{i}"), 1)).collect();
        let answers =
            futures_util::future::join_all(arns.iter().map(|arn| aws.ecs_task_definition(arn)))
                .await;
        assert_eq!(ecs.calls("DescribeTaskDefinition"), 5);
        assert_eq!(aws.counters().ecs_calls, 5);
        let not_sent = answers
            .iter()
            .filter(|a| {
                matches!(a, Err(AwsError::Throttled { message, .. }) if message == super::NOT_SENT)
            })
            .count();
        assert_eq!(not_sent, 5, "{answers:?}");
        assert!(answers.iter().all(|a| {
            a.as_ref()
                .is_err_and(|e| e.class() == crate::ErrorClass::Throttled)
        }));
    }

    /// Without pacing (the one-shot prefetch) nothing waits, so everything
    /// is sent.
    #[tokio::test(start_paused = true)]
    async fn an_unpaced_client_sends_every_call() {
        let ecs = FakeEcs::with_services(10);
        ecs.throttle
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let aws = Aws::with_ecs_api(
            ecs.clone(),
            AwsOptions {
                pace_ecs: false,
                ..AwsOptions::default()
            },
        );
        let arns: Vec<String> = (0..10).map(|i| td_arn(&format!("svc-{i}"), 1)).collect();
        futures_util::future::join_all(arns.iter().map(|arn| aws.ecs_task_definition(arn))).await;
        assert_eq!(ecs.calls("DescribeTaskDefinition"), 10);
    }

    /// An `Aws` on a fake never reads IMDS: its facts are unknown at once.
    #[tokio::test(start_paused = true)]
    async fn a_fake_backed_client_has_no_instance_facts() {
        let ecs = FakeEcs::with_services(0);
        assert_eq!(aws(&ecs, None).instance_facts().await, None);
    }
}
