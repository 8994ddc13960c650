//! The ECS control plane as a source of work: which task definitions a
//! cluster's services run, and which images those task definitions name.
//!
//! Three read calls, each bounded like every other call of [`Aws`]:
//! `ecs:ListServices` (paginated, 100 a page), `ecs:DescribeServices` (10
//! services a call) and `ecs:DescribeTaskDefinition`. Task definitions are
//! immutable once registered, so they are cached by ARN (and by
//! `family:revision`, which names one revision for ever); a quiet cluster
//! then costs only the list and describe calls of its services.

use std::collections::{BTreeMap, HashMap, HashSet};

use pullauth_ecs::{
    Capacity, ContainerDefinition, EcsService, PinnedImage, PlacementConstraint, Rollout,
    RuntimePlatform, ServiceRevision, ServiceStatus, TaskDefinition, runs,
};
use std::sync::{Arc, Mutex};

use pullauth_poll::{
    CallLimiter, DEFAULT_LIMITER_BURST, DEFAULT_LIMITER_MAX_RATE, DEFAULT_LIMITER_MIN_RATE,
    DESCRIBE_SERVICES_BATCH, LIST_SERVICES_PAGE_SIZE,
};

use crate::error::{Call, ErrorClass};
use crate::{Aws, AwsError, Principal};

/// The client-side pacing of ECS calls: every `ecs:*` call of the process
/// first books a slot on one [`CallLimiter`] (a token bucket whose rate
/// halves on each throttle and recovers on success, as the SDK's adaptive
/// retry mode), so that a poll with many calls, or many instances booting
/// together, does not land in the account's bucket as one burst. The fleet
/// simulation (`cargo bench -p pullauth-poll --bench fleet`) assumes it.
#[derive(Debug)]
pub(crate) struct EcsPacer {
    limiter: Mutex<CallLimiter>,
    /// The limiter's time origin (tokio's clock, so paused-time tests work).
    epoch: tokio::time::Instant,
    /// Off: every call goes at once (the limiter still learns the rate).
    enabled: bool,
}

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
        }
    }
}

impl EcsPacer {
    fn limiter(&self) -> std::sync::MutexGuard<'_, CallLimiter> {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the limiter lets one more call go.
    pub(crate) async fn ready(&self) {
        if !self.enabled {
            return;
        }
        let wait = self.limiter().acquire(self.epoch.elapsed());
        if !wait.is_zero() {
            tracing::debug!(?wait, "pacing the next ECS call");
            tokio::time::sleep(wait).await;
        }
    }

    /// Tells the limiter how the call went: a throttle slows it down, a
    /// success lets it recover; other failures say nothing about the rate.
    pub(crate) fn record<T>(&self, result: &Result<T, AwsError>) {
        let now = self.epoch.elapsed();
        match result {
            Ok(_) => self.limiter().on_success(now),
            Err(e) if e.class() == ErrorClass::Throttled => self.limiter().on_throttle(now),
            Err(_) => {}
        }
    }

    /// The limiter's current rate, in calls per second.
    pub(crate) fn rate(&self) -> f64 {
        self.limiter().rate()
    }
}

/// A service `ecs:DescribeServices` could not describe (`MISSING`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsFailure {
    /// The service ARN or name ECS names.
    pub service: String,
    pub reason: String,
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

impl Aws {
    /// An ECS call's result with its error classified, an unreachable
    /// endpoint named by host and port.
    async fn ecs_result<T, E>(
        &self,
        result: Result<
            T,
            aws_smithy_runtime_api::client::result::SdkError<
                E,
                aws_smithy_runtime_api::http::Response,
            >,
        >,
        call: Call,
        not_found: impl Fn(&str) -> Option<String>,
    ) -> Result<T, AwsError>
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    {
        match result {
            Ok(value) => Ok(value),
            Err(e) => Err(self.sdk_error_at("ECS", None, call, e, not_found).await),
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
        let client = aws_sdk_ecs::Client::new(&self.inner.config);
        let call = |operation| Call {
            operation,
            target: format!("cluster {cluster}"),
            principal: Principal::Default.to_string(),
        };
        let not_found = |code: &str| {
            (code == "ClusterNotFoundException")
                .then(|| format!("no such cluster {cluster:?} (ECS_CLUSTER or --cluster)"))
        };
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.inner.ecs_pacer.ready().await;
            self.inner.counters.add(&self.inner.counters.ecs_calls);
            let page = client
                .list_services()
                .cluster(cluster)
                .max_results(LIST_SERVICES_PAGE_SIZE as i32)
                .set_next_token(token.take())
                .send()
                .await;
            let page = self
                .ecs_result(page, call("ecs:ListServices"), not_found)
                .await;
            self.inner.ecs_pacer.record(&page);
            let page = page?;
            arns.extend(page.service_arns().iter().cloned());
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        let mut out = EcsServices::default();
        for batch in arns.chunks(DESCRIBE_SERVICES_BATCH as usize) {
            self.inner.ecs_pacer.ready().await;
            self.inner.counters.add(&self.inner.counters.ecs_calls);
            let described = client
                .describe_services()
                .cluster(cluster)
                .set_services(Some(batch.to_vec()))
                .send()
                .await;
            let described = self
                .ecs_result(described, call("ecs:DescribeServices"), not_found)
                .await;
            self.inner.ecs_pacer.record(&described);
            let described = described?;
            for service in described.services() {
                let name = service
                    .service_name()
                    .or(service.service_arn())
                    .unwrap_or("?")
                    .to_owned();
                out.services.push(service_of(service, name));
            }
            for failure in described.failures() {
                out.failures.push(EcsFailure {
                    service: failure.arn().unwrap_or("?").to_owned(),
                    reason: failure.reason().unwrap_or("no reason given").to_owned(),
                });
            }
            // An answer that names neither a service nor a failure for a
            // service asked about (an empty or wrongly shaped body that
            // still parses) must not make the service silently vanish.
            for asked in batch {
                let answered = described.services().iter().any(|s| {
                    s.service_arn() == Some(asked.as_str())
                        || s.service_name()
                            .is_some_and(|n| asked.rsplit('/').next() == Some(n))
                }) || described
                    .failures()
                    .iter()
                    .any(|f| f.arn() == Some(asked.as_str()));
                if !answered {
                    out.failures.push(EcsFailure {
                        service: asked.clone(),
                        reason: "the answer names neither this service nor a failure for it"
                            .to_owned(),
                    });
                }
            }
        }
        out.services.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The task definition `reference` names (ARN, `family:revision`, or a
    /// bare family for its latest revision), from the cache when it names
    /// one revision and was described before.
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
        let result = self.describe_task_definition(reference).await;
        match &result {
            Ok(found) if names_one_revision(reference) => {
                self.inner.task_definitions.put(found);
            }
            Ok(_) => {}
            Err(e) => self.inner.counters.failure(e.class()),
        }
        result
    }

    async fn describe_task_definition(
        &self,
        reference: &str,
    ) -> Result<Arc<TaskDefinition>, AwsError> {
        let call = Call {
            operation: "ecs:DescribeTaskDefinition",
            target: format!("task definition {reference}"),
            principal: Principal::Default.to_string(),
        };
        self.inner.ecs_pacer.ready().await;
        self.inner.counters.add(&self.inner.counters.ecs_calls);
        let output = aws_sdk_ecs::Client::new(&self.inner.config)
            .describe_task_definition()
            .task_definition(reference)
            .send()
            .await;
        // ECS answers ClientException for an unknown task definition.
        let output = self
            .ecs_result(output, call.clone(), |code| {
                (code == "ClientException")
                    .then(|| "no such task definition (or not readable)".to_owned())
            })
            .await;
        self.inner.ecs_pacer.record(&output);
        let output = output?;
        let bad = |problem: &str| AwsError::BadResponse {
            call: call.clone(),
            problem: problem.to_owned(),
        };
        let found = output
            .task_definition()
            .ok_or_else(|| bad("no taskDefinition"))?;
        let arn = found
            .task_definition_arn()
            .ok_or_else(|| bad("no taskDefinitionArn"))?
            .to_owned();
        let family = found.family().ok_or_else(|| bad("no family"))?.to_owned();
        Ok(Arc::new(task_definition_of(found, arn, family)))
    }

    /// Drops every cached task definition whose ARN is not in `arns` (the
    /// revisions the current plan names): the cache holds what is in use,
    /// not every revision ever seen. Returns how many entries remain.
    pub fn ecs_retain_task_definitions(&self, arns: &HashSet<String>) -> usize {
        self.inner.task_definitions.retain(arns);
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
        let call = Call {
            operation: "ecs:DescribeContainerInstances",
            target: format!("container instance {arn} in cluster {cluster}"),
            principal: Principal::Default.to_string(),
        };
        self.inner.ecs_pacer.ready().await;
        self.inner.counters.add(&self.inner.counters.ecs_calls);
        let output = aws_sdk_ecs::Client::new(&self.inner.config)
            .describe_container_instances()
            .cluster(cluster)
            .container_instances(arn)
            .send()
            .await;
        let output = self.ecs_result(output, call.clone(), |_| None).await;
        self.inner.ecs_pacer.record(&output);
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                self.inner.counters.failure(e.class());
                return Err(e);
            }
        };
        let Some(instance) = output.container_instances().first() else {
            let reason = output
                .failures()
                .first()
                .and_then(|f| f.reason())
                .unwrap_or("not in the answer")
                .to_owned();
            return Err(AwsError::BadResponse {
                call,
                problem: format!("the container instance is not described ({reason})"),
            });
        };
        Ok(instance
            .attributes()
            .iter()
            .filter_map(|a| Some((a.name().to_owned(), a.value()?.to_owned())))
            .collect())
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
}

/// How long the revision calls rest after a failure that is not a
/// throttle (denied, unsupported, unreachable): the digests degrade to
/// tags meanwhile, and ECS is not asked again on every poll.
pub const REVISIONS_REST: std::time::Duration = std::time::Duration::from_secs(3600);

/// How many of a service's newest deployments are read for their target
/// revisions: the in-progress ones and the last that completed.
pub const SERVICE_DEPLOYMENTS_READ: i32 = 10;

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
    /// (their IDs): while it is the same as at the last read, the same
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
                    warning: None,
                };
            }
            if let Some((until, _)) = &state.resting
                && tokio::time::Instant::now() < *until
            {
                return Pins::default();
            }
        }
        match self.read_service_revisions(cluster, service).await {
            Ok(revisions) => {
                cache
                    .lock()
                    .by_service
                    .insert(known, (rollouts.to_owned(), revisions.clone()));
                Pins {
                    revisions,
                    warning: None,
                }
            }
            Err(error) => {
                self.inner.counters.failure(error.class());
                let cause = format!(
                    "{}: the images are pulled by tag, not by the digest ECS pinned",
                    error
                );
                let mut state = cache.lock();
                if error.class() != ErrorClass::Throttled {
                    state.resting =
                        Some((tokio::time::Instant::now() + REVISIONS_REST, cause.clone()));
                }
                // One warning per kind of failure, not per service or poll.
                let kind = format!("{:?}", error.class());
                let warning = state.warned.insert(kind).then_some(cause);
                Pins {
                    revisions: Vec::new(),
                    warning,
                }
            }
        }
    }

    /// Drops cached revisions whose task definition is not in `arns`, and
    /// what is known of services other than `services` of `cluster`.
    pub fn ecs_retain_revisions<'s>(
        &self,
        arns: &HashSet<String>,
        cluster: &str,
        services: impl IntoIterator<Item = &'s String>,
    ) {
        let followed: HashSet<&String> = services.into_iter().collect();
        let mut state = self.inner.revisions.lock();
        state
            .by_arn
            .retain(|_, r| arns.contains(&r.task_definition));
        state
            .by_service
            .retain(|(c, service), _| c == cluster && followed.contains(service));
    }

    async fn read_service_revisions(
        &self,
        cluster: &str,
        service: &str,
    ) -> Result<Vec<Arc<ServiceRevision>>, AwsError> {
        let client = aws_sdk_ecs::Client::new(&self.inner.config);
        let once = || {
            aws_sdk_ecs::config::Builder::default()
                .retry_config(aws_smithy_types::retry::RetryConfig::standard().with_max_attempts(1))
        };
        let call = |operation| Call {
            operation,
            target: format!("service {service} in cluster {cluster}"),
            principal: Principal::Default.to_string(),
        };
        self.inner.ecs_pacer.ready().await;
        self.inner.counters.add(&self.inner.counters.ecs_calls);
        let listed = client
            .list_service_deployments()
            .cluster(cluster)
            .service(service)
            .max_results(SERVICE_DEPLOYMENTS_READ)
            .customize()
            .config_override(once())
            .send()
            .await;
        let listed = self
            .ecs_result(listed, call("ecs:ListServiceDeployments"), |_| None)
            .await;
        self.inner.ecs_pacer.record(&listed);
        let mut deployments = listed?.service_deployments().to_vec();
        deployments.sort_by(|a, b| b.created_at().cmp(&a.created_at()));
        use aws_sdk_ecs::types::ServiceDeploymentStatus as S;
        let mut wanted: Vec<String> = Vec::new();
        let mut completed = false;
        for d in &deployments {
            let running = match d.status() {
                Some(S::Pending | S::InProgress | S::RollbackInProgress) => true,
                Some(S::Successful | S::RollbackSuccessful) if !completed => {
                    completed = true;
                    true
                }
                _ => false,
            };
            if let (true, Some(arn)) = (running, d.target_service_revision_arn())
                && !wanted.iter().any(|w| w == arn)
            {
                wanted.push(arn.to_owned());
            }
        }
        let unknown: Vec<String> = {
            let state = self.inner.revisions.lock();
            wanted
                .iter()
                .filter(|arn| !state.by_arn.contains_key(*arn))
                .cloned()
                .collect()
        };
        for batch in unknown.chunks(DESCRIBE_SERVICE_REVISIONS_BATCH) {
            self.inner.ecs_pacer.ready().await;
            self.inner.counters.add(&self.inner.counters.ecs_calls);
            let described = client
                .describe_service_revisions()
                .set_service_revision_arns(Some(batch.to_vec()))
                .customize()
                .config_override(once())
                .send()
                .await;
            let described = self
                .ecs_result(described, call("ecs:DescribeServiceRevisions"), |_| None)
                .await;
            self.inner.ecs_pacer.record(&described);
            let mut state = self.inner.revisions.lock();
            for revision in described?.service_revisions() {
                let (Some(arn), Some(task_definition)) =
                    (revision.service_revision_arn(), revision.task_definition())
                else {
                    continue;
                };
                let images = revision
                    .container_images()
                    .iter()
                    .filter_map(|c| {
                        Some(PinnedImage {
                            container_name: c.container_name()?.to_owned(),
                            image: c.image()?.to_owned(),
                            digest: c.image_digest()?.to_owned(),
                        })
                    })
                    .collect();
                state.by_arn.insert(
                    arn.to_owned(),
                    Arc::new(ServiceRevision {
                        arn: arn.to_owned(),
                        task_definition: task_definition.to_owned(),
                        images,
                    }),
                );
            }
        }
        let state = self.inner.revisions.lock();
        Ok(wanted
            .iter()
            .filter_map(|arn| state.by_arn.get(arn).cloned())
            .collect())
    }
}

/// `ecs:DescribeServiceRevisions` takes at most this many ARNs a call.
pub const DESCRIBE_SERVICE_REVISIONS_BATCH: usize = 20;

fn capacity_of(
    launch_type: Option<&aws_sdk_ecs::types::LaunchType>,
    strategy: &[aws_sdk_ecs::types::CapacityProviderStrategyItem],
) -> Capacity {
    Capacity {
        launch_type: launch_type.map(|l| l.as_str().to_owned()),
        capacity_providers: strategy
            .iter()
            .map(|item| item.capacity_provider().to_owned())
            .collect(),
    }
}

fn constraints_of(
    constraints: impl IntoIterator<Item = (Option<String>, Option<String>)>,
) -> Vec<PlacementConstraint> {
    constraints
        .into_iter()
        .filter_map(|(kind, expression)| {
            Some(PlacementConstraint {
                kind: kind?,
                expression: expression.filter(|e| !e.is_empty()),
            })
        })
        .collect()
}

/// A described service, as prefetch reads it: every way it runs a task
/// definition (deployments, task sets, its own), with their capacity.
fn service_of(service: &aws_sdk_ecs::types::Service, name: String) -> EcsService {
    let own_capacity = capacity_of(service.launch_type(), service.capacity_provider_strategy());
    let deployments: Vec<Rollout> = service
        .deployments()
        .iter()
        .map(|d| Rollout {
            id: d.id().map(str::to_owned),
            status: d.status().map(str::to_owned),
            task_definition: d.task_definition().map(str::to_owned),
            capacity: capacity_of(d.launch_type(), d.capacity_provider_strategy()),
        })
        .collect();
    let task_sets: Vec<Rollout> = service
        .task_sets()
        .iter()
        .map(|t| Rollout {
            id: t.id().map(str::to_owned),
            status: t.status().map(str::to_owned),
            task_definition: t.task_definition().map(str::to_owned),
            capacity: capacity_of(t.launch_type(), t.capacity_provider_strategy()),
        })
        .collect();
    EcsService {
        name,
        status: ServiceStatus::parse(service.status()),
        deployment_controller: service
            .deployment_controller()
            .map_or_else(|| "ECS".to_owned(), |c| c.r#type().as_str().to_owned()),
        placement_constraints: constraints_of(service.placement_constraints().iter().map(|c| {
            (
                c.r#type().map(|t| t.as_str().to_owned()),
                c.expression().map(str::to_owned),
            )
        })),
        runs: runs(
            service.task_definition(),
            &own_capacity,
            &deployments,
            &task_sets,
        ),
    }
}

/// The one task-definition model, from `DescribeTaskDefinition`.
fn task_definition_of(
    found: &aws_sdk_ecs::types::TaskDefinition,
    arn: String,
    family: String,
) -> TaskDefinition {
    TaskDefinition {
        arn: Some(arn),
        family,
        revision: Some(found.revision()),
        execution_role_arn: found
            .execution_role_arn()
            .filter(|r| !r.is_empty())
            .map(str::to_owned),
        containers: found
            .container_definitions()
            .iter()
            .map(|c| ContainerDefinition {
                name: c.name().unwrap_or("?").to_owned(),
                image: c.image().unwrap_or_default().to_owned(),
                essential: c.essential().unwrap_or(true),
                credentials_parameter: c
                    .repository_credentials()
                    .map(|r| r.credentials_parameter().to_owned())
                    .filter(|p| !p.is_empty()),
            })
            .collect(),
        requires_compatibilities: found
            .requires_compatibilities()
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
        runtime_platform: found.runtime_platform().map(|p| RuntimePlatform {
            cpu_architecture: p.cpu_architecture().map(|a| a.as_str().to_owned()),
            operating_system_family: p.operating_system_family().map(|o| o.as_str().to_owned()),
        }),
        placement_constraints: constraints_of(found.placement_constraints().iter().map(|c| {
            (
                c.r#type().map(|t| t.as_str().to_owned()),
                c.expression().map(str::to_owned),
            )
        })),
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
