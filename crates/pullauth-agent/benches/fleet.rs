//! Fleet simulation: N container instances, each running the shipped
//! follower (`Agent` + `Follower`, the real poll loop, prefetch read and
//! plan, ECS caches and client-side pacing), against one account's ECS API
//! modelled as token buckets, in simulated time.
//!
//! `cargo bench -p pullauth-agent --bench fleet [-- --full] [-- --sizes 10,100] [-- --spread-one-interval] [-- --mode follow-plan]`
//!
//! The default run is 10 and 100 instances of each mode (well under a
//! minute); `--full` adds 1,000, 10,000 and 100,000 (a row that would not
//! fit in this machine's memory, estimated from the previous row, is said
//! and not run) and the follow-cluster rows with the start-up spread left at
//! one interval. Each row runs in a child process (`--row MODE POLICY N`),
//! so that its peak memory is its own; a follow-plan row of more than
//! [`PLAN_SHARD_SIZE`] instances runs as several (see [`Shard`]).
//!
//! Deterministic: a current-thread Tokio runtime with the clock paused
//! (it jumps to the next timer whenever every task waits), and every random
//! draw seeded, so two runs print the same table (but the run time and
//! memory columns). A measurement, not a test: nothing is asserted.
//!
//! What runs is the agent's own code down to three seams: the ECS calls
//! (`pullauth_aws::EcsApi`, faked by [`Account`]), the plan's S3 object
//! (`shared_plan::PlanStore`, faked by [`PlanBucket`]) and the engine
//! (`pullauth_agent::Puller`, faked by [`SimEngine`], every instance's
//! engine kept in one [`Engines`], keyed by instance). Above them every
//! instance has its own `Aws` (caches, pacer, single-attempt calls), its own
//! `Agent` (single flight, pull queue, metrics, view) and its own
//! `Follower` (schedule, plan, pulls). The agents share one in-memory
//! store (see [`World::store`]: here they only write to it).
//!
//! The model (every number is a named constant below):
//! - one account, four ECS buckets (service reads, task-definition reads,
//!   revision reads, container-instance reads), their sizes from
//!   pullauth-poll's `ASSUMED_*` constants; a call takes a token when it
//!   arrives, or is answered `ThrottlingException`; every answer takes
//!   [`CALL_LATENCY`]; the plan's S3 prefix serves [`S3_GETS_PER_SEC`]
//!   (then `SlowDown`);
//! - a cluster of [`SERVICES`] services, each running one task definition
//!   (one container, one image) through one deployment whose service
//!   revision pins the image's digest;
//! - cold start: at t = 0 every instance starts at once with an empty store
//!   and an empty engine (no boot prefetch, nothing kept from a previous
//!   run);
//! - [`DEPLOYMENTS`] deployments (a new task-definition revision of one
//!   service, each on its own service) at seeded random times; an instance
//!   is warm for one when its engine has pulled the new image (by the
//!   digest ECS pinned, as the agent pulls it), a pull taking [`PULL_TIME`].
//!
//! Modes ([`Mode`]: how an instance is started and which policy it gets):
//! - `follow-cluster`: every instance reads ECS (`serve --follow-cluster`),
//!   with `PollPolicy::for_fleet(N, 20)`; simulated for [`HORIZON`], or
//!   until [`AFTER_SPREAD`] after the start-up spread when that is longer;
//! - `follow-plan`: instance 0 reads ECS every 30 s and publishes the plan
//!   (`serve --follow-cluster --publish`), every other instance follows it
//!   with a conditional GET every 30 s (`serve --follow-plan`, its
//!   defaults); simulated for [`PLAN_HORIZON`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use pullauth_agent::credentials::Provider;
use pullauth_agent::follow::FollowSource;
use pullauth_agent::follow::{self, FollowConfig, Follower, PollPolicy};
use pullauth_agent::prefetch::Filters;
use pullauth_agent::shared_plan::{self, Condition, Fetched, PlanStore, Stored};
use pullauth_agent::{Agent, Identity, Puller, Settings};
use pullauth_aws::{
    Aws, AwsError, AwsOptions, Call, DescribedService, DescribedServices, EcsApi, EcsFuture,
    S3Location, ServiceDeployment, ServicesPage,
};
use pullauth_config::PullBehavior;
use pullauth_docker::{
    Obtained, Platform, PullError, PullEvent, PullOptions, PullStatus, Removal, Verified,
};
use pullauth_ecs::{
    Capacity, ContainerDefinition, EcsService, PinnedImage, Run, ServiceRevision, ServiceStatus,
    TaskDefinition,
};
use pullauth_poll::{
    ASSUMED_CONTAINER_INSTANCE_READ_BUCKET, ASSUMED_CONTAINER_INSTANCE_READ_REFILL_PER_SEC,
    ASSUMED_REVISION_READ_BUCKET, ASSUMED_REVISION_READ_REFILL_PER_SEC,
    ASSUMED_SERVICE_READ_BUCKET, ASSUMED_SERVICE_READ_REFILL_PER_SEC,
    ASSUMED_TASK_DEFINITION_READ_BUCKET, ASSUMED_TASK_DEFINITION_READ_REFILL_PER_SEC,
};
use pullauth_resolve::{Entry, ImageRef, RegistryTable};
use pullauth_store::Store;
use tokio::time::Instant;

/// Services in the followed cluster.
const SERVICES: usize = 20;
/// Round trip of one ECS call (a throttle is answered as late).
const CALL_LATENCY: Duration = Duration::from_millis(100);
/// One engine pull of one image.
const PULL_TIME: Duration = Duration::from_secs(30);
/// Simulated time per run, at least: a run lasts until two hours after the
/// last first poll (the start-up spread), so that every deployment has time
/// to reach every instance (see [`horizon`]).
const HORIZON: Duration = Duration::from_secs(6 * 3600);
/// How long a run goes on after its start-up spread.
const AFTER_SPREAD: Duration = Duration::from_secs(2 * 3600);
/// Deployments happen at seeded random times in [DEPLOY_FROM, DEPLOY_TO],
/// so that each has time to reach every instance before the horizon.
const DEPLOY_FROM: f64 = 600.0;
const DEPLOY_TO: f64 = 4.0 * 3600.0;
const DEPLOYMENTS: usize = 10;
/// Engine pulls one agent runs at once (`serve`'s default).
const PULLS_AT_ONCE: usize = 4;
/// Window of the peak call rate, in seconds.
const WINDOW: usize = 60;
/// The fleet sizes of the default run and of `--full`.
const SIZES: &[usize] = &[10, 100];
/// Without `--bench` (the suite's `cargo test --all-targets`).
const SMOKE_SIZES: &[usize] = &[10];
const FULL_SIZES: &[usize] = &[10, 100, 1_000, 10_000, 100_000];
/// S3's request rate per partitioned prefix, from its documentation ("at
/// least 3,500 PUT/COPY/POST/DELETE or 5,500 GET/HEAD requests per second
/// per partitioned prefix"); above it S3 answers `503 SlowDown`.
const S3_GETS_PER_SEC: f64 = 5_500.0;
/// S3 Standard's list price per 1,000 GET requests (us-east-1); a `304`
/// is a GET.
const S3_GET_PRICE_PER_1000: f64 = 0.0004;
/// Seconds in the month the cost column prices (30 days).
const MONTH_S: f64 = 30.0 * 86_400.0;
/// follow-plan: simulated time, and the deployments' window (a plan
/// follower polls every 30 s, so hours would cost hours of CPU; what it
/// measures settles within minutes of each deployment).
const PLAN_HORIZON: Duration = Duration::from_secs(30 * 60);
const PLAN_DEPLOY_FROM: f64 = 180.0;
const PLAN_DEPLOY_TO: f64 = 1_500.0;
/// follow-plan: a fleet larger than this runs as shards of at most this
/// many instances, each in its own process (see [`Shard`]).
const PLAN_SHARD_SIZE: usize = 25_000;
/// Where the publisher writes the plan.
const PLAN_URL: &str = "s3://fleet-plans/plans/prod.json";
const CLUSTER: &str = "prod";
const ACCOUNT: &str = "123456789012";
const REGISTRY: &str = "registry.example.com";

// --- The account's ECS API --------------------------------------------------

/// The account's buckets, one per class of call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    /// `ListServices`, `DescribeServices`.
    Service,
    /// `DescribeTaskDefinition`.
    TaskDefinition,
    /// `ListServiceDeployments`, `DescribeServiceRevisions`.
    Revision,
    /// `DescribeContainerInstances`.
    ContainerInstance,
}

impl Bucket {
    const ALL: [Bucket; 4] = [
        Bucket::Service,
        Bucket::TaskDefinition,
        Bucket::Revision,
        Bucket::ContainerInstance,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn label(self) -> &'static str {
        match self {
            Bucket::Service => "service",
            Bucket::TaskDefinition => "task-definition",
            Bucket::Revision => "revision",
            Bucket::ContainerInstance => "container-instance",
        }
    }

    /// (capacity, refill per second), from pullauth-poll's assumptions.
    fn size(self) -> (f64, f64) {
        match self {
            Bucket::Service => (
                ASSUMED_SERVICE_READ_BUCKET,
                ASSUMED_SERVICE_READ_REFILL_PER_SEC,
            ),
            Bucket::TaskDefinition => (
                ASSUMED_TASK_DEFINITION_READ_BUCKET,
                ASSUMED_TASK_DEFINITION_READ_REFILL_PER_SEC,
            ),
            Bucket::Revision => (
                ASSUMED_REVISION_READ_BUCKET,
                ASSUMED_REVISION_READ_REFILL_PER_SEC,
            ),
            Bucket::ContainerInstance => (
                ASSUMED_CONTAINER_INSTANCE_READ_BUCKET,
                ASSUMED_CONTAINER_INSTANCE_READ_REFILL_PER_SEC,
            ),
        }
    }
}

/// A token bucket of the account.
#[derive(Debug)]
struct TokenBucket {
    capacity: f64,
    refill: f64,
    tokens: f64,
    /// Seconds since the epoch at the last refill.
    last: f64,
}

impl TokenBucket {
    fn new((capacity, refill): (f64, f64)) -> TokenBucket {
        TokenBucket {
            capacity,
            refill,
            tokens: capacity,
            last: 0.0,
        }
    }

    fn take(&mut self, now: f64) -> bool {
        if now > self.last {
            self.tokens = (self.tokens + (now - self.last) * self.refill).min(self.capacity);
            self.last = now;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the account saw.
#[derive(Debug)]
struct Traffic {
    buckets: Vec<TokenBucket>,
    /// Calls that arrived in each simulated second.
    per_second: Vec<u32>,
    calls: [u64; 4],
    throttled: [u64; 4],
}

/// One account and Region's ECS API, with one cluster in it: every
/// instance's `Aws` calls this one (through its own pacer and caches).
#[derive(Debug)]
struct Account {
    epoch: Instant,
    traffic: Mutex<Traffic>,
    /// The current task-definition revision of each service.
    revisions: Mutex<Vec<u32>>,
}

fn td_arn(service: usize, revision: u32) -> String {
    format!("arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/svc-{service:02}:{revision}")
}

fn service_arn(service: usize) -> String {
    format!("arn:aws:ecs:us-east-1:{ACCOUNT}:service/{CLUSTER}/svc-{service:02}")
}

fn revision_arn(service: usize, revision: u32) -> String {
    format!(
        "arn:aws:ecs:us-east-1:{ACCOUNT}:service-revision/{CLUSTER}/svc-{service:02}/{revision}"
    )
}

fn image_of(service: usize, revision: u32) -> String {
    format!("{REGISTRY}/svc-{service:02}:{revision}")
}

fn digest_of(service: usize, revision: u32) -> String {
    format!("sha256:{service:032x}{revision:032x}")
}

/// The service index of `svc-NN` (the last path segment of `name`).
fn service_index(name: &str) -> usize {
    name.rsplit('/')
        .next()
        .and_then(|n| n.strip_prefix("svc-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// (service, revision) of a task definition or service revision ARN.
fn service_and_revision(arn: &str) -> (usize, u32) {
    let tail = arn.rsplit('/').next().unwrap_or_default();
    match tail.split_once(':') {
        // task-definition/svc-NN:R
        Some((family, revision)) => (service_index(family), revision.parse().unwrap_or(0)),
        // service-revision/cluster/svc-NN/R
        None => {
            let mut parts = arn.rsplit('/');
            let revision = parts.next().and_then(|r| r.parse().ok()).unwrap_or(0);
            (service_index(parts.next().unwrap_or_default()), revision)
        }
    }
}

impl Account {
    fn new(epoch: Instant, horizon: Duration) -> Account {
        let seconds = horizon.as_secs() as usize + 1;
        Account {
            epoch,
            traffic: Mutex::new(Traffic {
                buckets: Bucket::ALL
                    .iter()
                    .map(|b| TokenBucket::new(b.size()))
                    .collect(),
                per_second: vec![0; seconds],
                calls: [0; 4],
                throttled: [0; 4],
            }),
            revisions: Mutex::new(vec![1; SERVICES]),
        }
    }

    fn revision(&self, service: usize) -> u32 {
        self.revisions.lock().expect("revisions")[service]
    }

    /// One call arriving now: a token of `bucket`, or a throttle; answered
    /// after the call latency.
    async fn arrive(&self, bucket: Bucket, operation: &'static str) -> Result<(), AwsError> {
        let now = self.epoch.elapsed().as_secs_f64();
        let allowed = {
            let mut traffic = self.traffic.lock().expect("traffic");
            let allowed = traffic.buckets[bucket.index()].take(now);
            traffic.calls[bucket.index()] += 1;
            if !allowed {
                traffic.throttled[bucket.index()] += 1;
            }
            if let Some(second) = traffic.per_second.get_mut(now as usize) {
                *second += 1;
            }
            allowed
        };
        tokio::time::sleep(CALL_LATENCY).await;
        if allowed {
            Ok(())
        } else {
            Err(AwsError::Throttled {
                call: Call {
                    operation,
                    target: format!("cluster {CLUSTER}"),
                    principal: "the default credential chain".to_owned(),
                },
                code: "ThrottlingException".to_owned(),
                message: "Rate exceeded".to_owned(),
            })
        }
    }
}

impl EcsApi for Account {
    fn list_services<'a>(
        &'a self,
        _cluster: &'a str,
        _next_token: Option<&'a str>,
    ) -> EcsFuture<'a, ServicesPage> {
        Box::pin(async move {
            self.arrive(Bucket::Service, "ecs:ListServices").await?;
            Ok(ServicesPage {
                service_arns: (0..SERVICES).map(service_arn).collect(),
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
            self.arrive(Bucket::Service, "ecs:DescribeServices").await?;
            let services = services
                .iter()
                .map(|arn| {
                    let service = service_index(arn);
                    let revision = self.revision(service);
                    DescribedService {
                        arn: Some(arn.clone()),
                        service: EcsService {
                            name: format!("svc-{service:02}"),
                            status: ServiceStatus::Active,
                            deployment_controller: "ECS".to_owned(),
                            placement_constraints: Vec::new(),
                            runs: vec![Run {
                                task_definition: td_arn(service, revision),
                                capacity: Capacity::default(),
                                id: Some(format!("ecs-svc/{service:02}{revision:08}")),
                                origin: "deployment PRIMARY".to_owned(),
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

    fn describe_task_definition<'a>(&'a self, reference: &'a str) -> EcsFuture<'a, TaskDefinition> {
        Box::pin(async move {
            self.arrive(Bucket::TaskDefinition, "ecs:DescribeTaskDefinition")
                .await?;
            let (service, revision) = service_and_revision(reference);
            Ok(TaskDefinition {
                arn: Some(td_arn(service, revision)),
                family: format!("svc-{service:02}"),
                revision: Some(revision as i32),
                containers: vec![ContainerDefinition {
                    name: "app".to_owned(),
                    image: image_of(service, revision),
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
            self.arrive(Bucket::Revision, "ecs:ListServiceDeployments")
                .await?;
            let service = service_index(service);
            Ok(vec![ServiceDeployment {
                status: Some("SUCCESSFUL".to_owned()),
                target_service_revision_arn: Some(revision_arn(service, self.revision(service))),
                created_at: None,
            }])
        })
    }

    fn describe_service_revisions<'a>(
        &'a self,
        arns: &'a [String],
    ) -> EcsFuture<'a, Vec<ServiceRevision>> {
        Box::pin(async move {
            self.arrive(Bucket::Revision, "ecs:DescribeServiceRevisions")
                .await?;
            Ok(arns
                .iter()
                .map(|arn| {
                    let (service, revision) = service_and_revision(arn);
                    ServiceRevision {
                        arn: arn.clone(),
                        task_definition: td_arn(service, revision),
                        images: vec![PinnedImage {
                            container_name: "app".to_owned(),
                            image: image_of(service, revision),
                            digest: digest_of(service, revision),
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
    ) -> EcsFuture<'a, std::collections::BTreeMap<String, String>> {
        Box::pin(async move {
            self.arrive(Bucket::ContainerInstance, "ecs:DescribeContainerInstances")
                .await?;
            Ok(std::collections::BTreeMap::new())
        })
    }
}

// --- The plan's bucket ---------------------------------------------------------

/// The S3 object of the cluster plan, with S3's conditional semantics
/// (`If-None-Match` on GET; `If-Match` / `If-None-Match: *` on PUT), its
/// per-prefix GET rate, and every request counted.
#[derive(Debug)]
struct PlanBucket {
    epoch: Instant,
    state: Mutex<PlanObject>,
}

#[derive(Debug)]
struct PlanObject {
    /// (ETag, body) of the current version.
    current: Option<(String, Vec<u8>)>,
    versions: u64,
    gets: TokenBucket,
    get_requests: u64,
    get_throttled: u64,
    /// Of `get_requests`, the publisher's (its read before each write).
    publisher_gets: u64,
    puts: u64,
}

impl PlanBucket {
    /// `share` of S3's per-prefix GET rate (a shard's followers' share).
    fn new(epoch: Instant, share: f64) -> PlanBucket {
        let rate = S3_GETS_PER_SEC * share;
        PlanBucket {
            epoch,
            state: Mutex::new(PlanObject {
                current: None,
                versions: 0,
                gets: TokenBucket::new((rate, rate)),
                get_requests: 0,
                get_throttled: 0,
                publisher_gets: 0,
                puts: 0,
            }),
        }
    }
}

/// The publisher's handle on the plan's object: its GETs are counted apart
/// (a sharded row counts them once).
#[derive(Debug)]
struct Publisher(Arc<PlanBucket>);

impl PlanStore for Publisher {
    fn get<'a>(
        &'a self,
        location: &'a S3Location,
        etag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, AwsError>> {
        self.0.state.lock().expect("plan").publisher_gets += 1;
        self.0.get(location, etag)
    }

    fn put<'a>(
        &'a self,
        location: &'a S3Location,
        body: Vec<u8>,
        condition: Condition,
    ) -> BoxFuture<'a, Result<Stored, AwsError>> {
        self.0.put(location, body, condition)
    }
}

impl PlanStore for PlanBucket {
    fn get<'a>(
        &'a self,
        _location: &'a S3Location,
        etag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, AwsError>> {
        async move {
            let now = self.epoch.elapsed().as_secs_f64();
            let answer = {
                let mut state = self.state.lock().expect("plan");
                state.get_requests += 1;
                if state.gets.take(now) {
                    let current = state.current.as_ref();
                    Some(Fetched::from_current(
                        current.map(|(etag, body)| (etag.as_str(), body.as_slice())),
                        etag,
                    ))
                } else {
                    state.get_throttled += 1;
                    None
                }
            };
            tokio::time::sleep(CALL_LATENCY).await;
            answer.ok_or_else(|| AwsError::Throttled {
                call: Call {
                    operation: "s3:GetObject",
                    target: PLAN_URL.to_owned(),
                    principal: "the default credential chain".to_owned(),
                },
                code: "SlowDown".to_owned(),
                message: "Please reduce your request rate.".to_owned(),
            })
        }
        .boxed()
    }

    fn put<'a>(
        &'a self,
        _location: &'a S3Location,
        body: Vec<u8>,
        condition: Condition,
    ) -> BoxFuture<'a, Result<Stored, AwsError>> {
        async move {
            let stored = {
                let mut state = self.state.lock().expect("plan");
                state.puts += 1;
                let allowed =
                    condition.holds(state.current.as_ref().map(|(etag, _)| etag.as_str()));
                if allowed {
                    state.versions += 1;
                    let etag = format!("\"{:032x}\"", state.versions);
                    state.current = Some((etag.clone(), body));
                    Stored::Written { etag }
                } else {
                    Stored::Conflict
                }
            };
            tokio::time::sleep(CALL_LATENCY).await;
            Ok(stored)
        }
        .boxed()
    }
}

// --- When each image became warm on each instance ---------------------------

/// Which image each target is, and when each instance's engine pulled it.
/// Targets `0..SERVICES` are the images running at t = 0 (the cold start),
/// then one per deployment.
#[derive(Debug)]
struct WarmLog {
    epoch: Instant,
    /// Pull reference (by digest, as the agent pulls a pinned image; by
    /// tag, should it pull one unpinned) -> target.
    targets: Mutex<HashMap<String, usize>>,
    /// When each target happened, seconds since the epoch.
    since: Mutex<Vec<f64>>,
    /// [target][instance]: seconds from the target to the pulled image;
    /// NaN while not warm.
    warm: Mutex<Vec<Vec<f64>>>,
    instances: usize,
}

impl WarmLog {
    fn new(epoch: Instant, instances: usize) -> WarmLog {
        let log = WarmLog {
            epoch,
            targets: Mutex::new(HashMap::new()),
            since: Mutex::new(Vec::new()),
            warm: Mutex::new(Vec::new()),
            instances,
        };
        for service in 0..SERVICES {
            log.target(service, 1);
        }
        log
    }

    /// From now, the image of `revision` of `service` is a target.
    fn target(&self, service: usize, revision: u32) {
        let index = {
            let mut since = self.since.lock().expect("since");
            since.push(self.epoch.elapsed().as_secs_f64());
            since.len() - 1
        };
        self.warm
            .lock()
            .expect("warm")
            .push(vec![f64::NAN; self.instances]);
        let name = format!("{REGISTRY}/svc-{service:02}");
        let mut targets = self.targets.lock().expect("targets");
        for reference in [
            format!("{name}@{}", digest_of(service, revision)),
            image_of(service, revision),
        ] {
            let reference = ImageRef::parse(&reference)
                .expect("a valid reference")
                .pull_reference();
            targets.insert(reference, index);
        }
    }

    fn pulled(&self, instance: usize, reference: &str) {
        let Some(&target) = self.targets.lock().expect("targets").get(reference) else {
            return;
        };
        let since = self.since.lock().expect("since")[target];
        let at = self.epoch.elapsed().as_secs_f64() - since;
        let mut warm = self.warm.lock().expect("warm");
        let slot = &mut warm[target][instance];
        if slot.is_nan() {
            *slot = at;
        }
    }
}

// --- The engine ---------------------------------------------------------------

/// Every instance's engine in one object, keyed by instance (the fleet's
/// engines hold the same few images: each name is kept once): a pull takes
/// [`PULL_TIME`] and always succeeds; an engine keeps what it pulled.
#[derive(Debug, Default)]
struct Engines {
    /// Every reference pulled or tagged on any instance, numbered.
    names: Mutex<HashMap<String, u32>>,
    /// (instance, reference) of every image an instance's engine holds.
    present: Mutex<HashSet<(u32, u32)>>,
}

impl Engines {
    fn insert(&self, instance: u32, reference: String) {
        let name = {
            let mut names = self.names.lock().expect("names");
            let next = u32::try_from(names.len()).expect("fewer names");
            *names.entry(reference).or_insert(next)
        };
        self.present
            .lock()
            .expect("present")
            .insert((instance, name));
    }

    fn has(&self, instance: u32, reference: &str) -> bool {
        let name = self.names.lock().expect("names").get(reference).copied();
        name.is_some_and(|name| {
            self.present
                .lock()
                .expect("present")
                .contains(&(instance, name))
        })
    }
}

/// One instance's engine, as its agent sees it (the `Puller` seam).
#[derive(Debug)]
struct SimEngine {
    instance: u32,
    engines: Arc<Engines>,
    log: Arc<WarmLog>,
}

impl Puller for SimEngine {
    fn address(&self) -> &str {
        "sim://engine"
    }

    fn obtain<'a>(
        &'a self,
        image: &'a ImageRef,
        _entry: Option<&'a Entry>,
        _behavior: PullBehavior,
        _pulled_before: bool,
        _options: &'a PullOptions,
        _progress: &'a mut (dyn FnMut(PullEvent) + Send),
    ) -> BoxFuture<'a, Result<Obtained, PullError>> {
        let reference = image.pull_reference();
        async move {
            tokio::time::sleep(PULL_TIME).await;
            self.log.pulled(self.instance as usize, &reference);
            let image_id = format!("sha256:{:064x}", reference.len());
            self.engines.insert(self.instance, reference);
            Ok(Obtained {
                status: PullStatus::Pulled,
                image_id,
                digest: None,
                attempts: 1,
                retries: 0,
                fallback_from: None,
                elapsed: PULL_TIME,
            })
        }
        .boxed()
    }

    fn verify<'a>(
        &'a self,
        image: &'a ImageRef,
        _entry: Option<&'a Entry>,
    ) -> BoxFuture<'a, Result<Verified, PullError>> {
        let error = PullError::NotFound {
            registry: image.registry.clone(),
            image: image.to_string(),
            detail: "the simulation never verifies".to_owned(),
        };
        async move { Err(error) }.boxed()
    }

    fn image_id<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, PullError>> {
        let present = self.engines.has(self.instance, reference);
        async move { Ok(present.then(|| format!("sha256:{:064x}", reference.len()))) }.boxed()
    }

    fn platform(&self) -> BoxFuture<'_, Result<Platform, PullError>> {
        async {
            Ok(Platform {
                architecture: Some("x86_64".to_owned()),
                os_type: Some("linux".to_owned()),
            })
        }
        .boxed()
    }

    fn tag<'a>(
        &'a self,
        _source: &'a str,
        target: &'a ImageRef,
    ) -> BoxFuture<'a, Result<(), PullError>> {
        self.engines.insert(self.instance, target.pull_reference());
        async { Ok(()) }.boxed()
    }

    fn image_size<'a>(
        &'a self,
        _reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, PullError>> {
        async { Ok(Some(1 << 20)) }.boxed()
    }

    fn remove_image<'a>(
        &'a self,
        _reference: &'a str,
    ) -> BoxFuture<'a, Result<Removal, PullError>> {
        async { Ok(Removal::Missing) }.boxed()
    }
}

// --- Modes ----------------------------------------------------------------------

/// How the instances learn what the cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every instance reads ECS itself (`serve --follow-cluster`).
    FollowCluster,
    /// Instance 0 reads ECS and publishes the plan (`serve --follow-cluster
    /// --publish`); every other instance follows the plan with conditional
    /// GETs (`serve --follow-plan`, its default `--plan-interval`).
    FollowPlan,
}

impl Mode {
    const ALL: [Mode; 2] = [Mode::FollowCluster, Mode::FollowPlan];

    fn name(self) -> &'static str {
        match self {
            Mode::FollowCluster => "follow-cluster",
            Mode::FollowPlan => "follow-plan",
        }
    }

    /// The policy the agent recommends for `instances` instances (for
    /// follow-plan: the followers', `serve --follow-plan`'s default).
    fn policy(self, instances: usize) -> PollPolicy {
        match self {
            Mode::FollowCluster => PollPolicy::for_fleet(instances as u32, SERVICES as u32),
            Mode::FollowPlan => PollPolicy::with_interval(shared_plan::DEFAULT_PLAN_INTERVAL),
        }
    }

    /// The simulated time and the window of the deployments.
    fn scenario(self, policy: &PollPolicy) -> (Duration, f64, f64) {
        match self {
            Mode::FollowCluster => (
                HORIZON.max(policy.startup_spread + AFTER_SPREAD),
                DEPLOY_FROM,
                DEPLOY_TO,
            ),
            Mode::FollowPlan => (PLAN_HORIZON, PLAN_DEPLOY_FROM, PLAN_DEPLOY_TO),
        }
    }

    /// Starts instance `index` of the fleet: its agent and follower; `slot`
    /// is its place among this process's (shard's) instances.
    fn start(self, world: &World, index: usize, slot: usize) -> (Agent, Follower) {
        let aws = Aws::with_ecs_api(
            world.account.clone(),
            AwsOptions {
                ecr: false,
                pace_ecs: true,
                ..AwsOptions::default()
            },
        );
        let agent = world.agent(slot, aws);
        let location = S3Location::parse(PLAN_URL).expect("a valid location");
        let (source, policy) = match self {
            Mode::FollowCluster => (
                FollowSource::Cluster { publish: None },
                world.policy.clone(),
            ),
            // The publisher: one instance reading ECS as often as the
            // followers read the plan (PULLAUTH_PREFETCH_INTERVAL=30s on
            // it): 3 calls every 30 s, whatever the fleet.
            Mode::FollowPlan if index == 0 => (
                FollowSource::Cluster {
                    publish: Some(location),
                },
                PollPolicy::with_interval(shared_plan::DEFAULT_PLAN_INTERVAL),
            ),
            Mode::FollowPlan => (
                FollowSource::Plan {
                    location,
                    max_age: shared_plan::DEFAULT_MAX_AGE,
                    fallback: false,
                },
                world.policy.clone(),
            ),
        };
        let plans: Arc<dyn PlanStore> = if self == Mode::FollowPlan && index == 0 {
            Arc::new(Publisher(world.plans.clone()))
        } else {
            world.plans.clone()
        };
        let follower = Follower::start_with(
            agent.clone(),
            Arc::new(follow::Ecs::with_plan_store(plans)),
            Some(world.follow_config(policy, source)),
            splitmix(world.seed ^ splitmix(index as u64 + 1)),
        );
        (agent, follower)
    }
}

/// Which policy a row runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// What the agent recommends for the fleet size (`PollPolicy::for_fleet`).
    Recommended,
    /// The recommended interval with the start-up spread left at one
    /// interval: what `serve` runs with only `PULLAUTH_PREFETCH_INTERVAL`
    /// set.
    SpreadOneInterval,
}

impl Variant {
    const ALL: [Variant; 2] = [Variant::Recommended, Variant::SpreadOneInterval];

    fn name(self) -> &'static str {
        match self {
            Variant::Recommended => "recommended",
            Variant::SpreadOneInterval => "spread-one-interval",
        }
    }

    fn policy(self, mode: Mode, instances: usize) -> PollPolicy {
        let recommended = mode.policy(instances);
        let mut policy = match self {
            Variant::Recommended => recommended,
            Variant::SpreadOneInterval => PollPolicy {
                startup_spread: recommended.interval,
                ..recommended
            },
        };
        // Experiments only: another first throttle backoff.
        if let Some(base) = std::env::var("FLEET_THROTTLE_BASE_S")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
        {
            policy.throttled.base = Duration::from_secs_f64(base);
            policy.throttled.max = policy.throttled.max.max(policy.throttled.base);
        }
        policy
    }
}

/// What every instance of one run shares.
struct World {
    seed: u64,
    /// The policy of the row (for follow-plan: the followers').
    policy: PollPolicy,
    account: Arc<Account>,
    plans: Arc<PlanBucket>,
    engines: Arc<Engines>,
    /// The agents' store: one in-memory database for the fleet (an empty
    /// one takes about 90 KB, 9 GB for 100,000 agents). Here an agent only
    /// writes to it (the images it pulled and tagged) and reads nothing a
    /// figure depends on: no task runs, the follower's removal and disk
    /// guard (which read it) are off, and whether an image was pulled
    /// before goes to the engine, which ignores it.
    store: Store,
    log: Arc<WarmLog>,
}

impl World {
    fn new(
        seed: u64,
        policy: PollPolicy,
        epoch: Instant,
        horizon: Duration,
        instances: usize,
        shard: Shard,
    ) -> World {
        World {
            seed,
            policy,
            account: Arc::new(Account::new(epoch, horizon)),
            plans: Arc::new(PlanBucket::new(epoch, 1.0 / shard.of as f64)),
            engines: Arc::new(Engines::default()),
            store: Store::in_memory(),
            log: Arc::new(WarmLog::new(epoch, instances)),
        }
    }

    /// The agent of the instance in `slot`: the fleet's store, its own
    /// engine, no registry keys (the images are public), AWS through `aws`.
    fn agent(&self, slot: usize, aws: Aws) -> Agent {
        let engine = Arc::new(SimEngine {
            instance: u32::try_from(slot).expect("fewer instances"),
            engines: self.engines.clone(),
            log: self.log.clone(),
        });
        let settings = Settings {
            table: RegistryTable::empty(),
            behavior: PullBehavior::Default,
            options: PullOptions::default(),
        };
        let identity = Identity {
            cluster: CLUSTER.to_owned(),
            container_instance_arn: None,
            version: "fleet-simulation".to_owned(),
        };
        Agent::start_with_provider(
            self.store.clone(),
            engine,
            settings,
            identity,
            PULLS_AT_ONCE,
            Arc::new(Provider::with_aws(aws, false)),
        )
        .expect("an empty store")
    }

    fn follow_config(&self, policy: PollPolicy, source: FollowSource) -> FollowConfig {
        FollowConfig {
            cluster: CLUSTER.to_owned(),
            filters: Filters::default(),
            policy,
            source,
            remove_after: None,
            disk_budget: None,
            ecs_agent_uri: None,
            ecs_agent: None,
        }
    }
}

// --- One run --------------------------------------------------------------------

/// What one run measured (a child process prints it as JSON).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Row {
    mode: String,
    variant: String,
    instances: usize,
    /// Simulated seconds.
    horizon_s: f64,
    interval_s: f64,
    spread_s: f64,
    calls_per_s: f64,
    peak_per_s: f64,
    calls: [u64; 4],
    throttled: [u64; 4],
    /// S3 GETs of the plan (a `304` is one), and how many were throttled.
    s3_gets: u64,
    s3_gets_throttled: u64,
    /// Of `s3_gets`, the publisher's.
    s3_publisher_gets: u64,
    s3_puts: u64,
    /// The processes the row ran as ([`Shard`]).
    shards: usize,
    /// Seconds until every instance had every image of t = 0 (of the
    /// services no deployment changed).
    cold_all_warm: Option<f64>,
    /// Per deployment: seconds until it was warm on every instance.
    all_warm: Vec<Option<f64>>,
    /// Per (deployment, instance): seconds until warm.
    one_warm: Vec<Option<f64>>,
    /// Wall-clock seconds of the run.
    wall_s: f64,
    /// The peak resident set of the run's process above what it held
    /// before starting the fleet, per instance, in bytes.
    peak_bytes_per_instance: f64,
}

impl Row {
    /// Throttled requests (ECS, and the plan's S3 GETs) of every request.
    fn throttled_pct(&self) -> f64 {
        let requests = self.calls.iter().sum::<u64>() + self.s3_gets;
        let throttled = self.throttled.iter().sum::<u64>() + self.s3_gets_throttled;
        if requests == 0 {
            0.0
        } else {
            100.0 * throttled as f64 / requests as f64
        }
    }

    fn s3_gets_per_s(&self) -> f64 {
        self.s3_gets as f64 / self.horizon_s
    }

    /// The GETs' list price for a month at this rate.
    fn s3_cost_per_month(&self) -> f64 {
        self.s3_gets_per_s() * MONTH_S * S3_GET_PRICE_PER_1000 / 1000.0
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A field of /proc/self/status, in bytes (Linux; 0 elsewhere).
fn status_bytes(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib * 1024.0)
}

/// The memory this machine can still give, in bytes (Linux).
fn available_bytes() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::INFINITY, |kib| kib * 1024.0)
}

/// Part `index` of `of` of a follow-plan row. Plan followers meet only at
/// the plan's object, so a large fleet runs as shards, each in its own
/// process: every shard runs the same publisher (instance 0, the same
/// seed: the same ECS reads, plans and deployments) and the followers whose
/// index is `index` modulo `of` (each with its own seed, as in one
/// process), against a plan object serving `1 / of` of S3's GET rate. The
/// rows are merged ([`merge`]); their ECS figures must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shard {
    index: usize,
    of: usize,
}

impl Shard {
    const WHOLE: Shard = Shard { index: 0, of: 1 };

    /// The shards a row of `instances` runs as.
    fn count(mode: Mode, instances: usize) -> usize {
        match mode {
            Mode::FollowPlan => instances.div_ceil(PLAN_SHARD_SIZE).max(1),
            Mode::FollowCluster => 1,
        }
    }

    /// The instances of the fleet this shard runs: the publisher, and its
    /// share of the followers.
    fn members(self, instances: usize) -> Vec<usize> {
        (0..instances)
            .filter(|&index| index == 0 || index % self.of == self.index)
            .collect()
    }
}

fn simulate(mode: Mode, variant: Variant, instances: usize, seed: u64, shard: Shard) -> Row {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let wall = std::time::Instant::now();
    let before = status_bytes("VmRSS:");
    let policy = variant.policy(mode, instances);
    let (horizon, deploy_from, deploy_to) = mode.scenario(&policy);
    let mut row = runtime.block_on(async {
        let epoch = Instant::now();
        let members = shard.members(instances);
        let world = World::new(seed, policy.clone(), epoch, horizon, members.len(), shard);
        let mut rng = fastrand::Rng::with_seed(splitmix(seed));
        let mut deployments: Vec<(f64, usize)> = (0..DEPLOYMENTS)
            .map(|d| {
                (
                    deploy_from + rng.f64() * (deploy_to - deploy_from),
                    d % SERVICES,
                )
            })
            .collect();
        deployments.sort_by(|a, b| a.0.total_cmp(&b.0));
        let deployed: HashSet<usize> = deployments.iter().map(|&(_, service)| service).collect();
        let fleet: Vec<(Agent, Follower)> = members
            .iter()
            .enumerate()
            .map(|(slot, &index)| mode.start(&world, index, slot))
            .collect();
        let deployer = {
            let account = world.account.clone();
            let log = world.log.clone();
            tokio::spawn(async move {
                for (at, service) in deployments {
                    tokio::time::sleep_until(epoch + Duration::from_secs_f64(at)).await;
                    let revision = {
                        let mut revisions = account.revisions.lock().expect("revisions");
                        revisions[service] += 1;
                        revisions[service]
                    };
                    log.target(service, revision);
                }
            })
        };
        tokio::time::sleep_until(epoch + horizon).await;
        deployer.abort();
        let traffic = world.account.traffic.lock().expect("traffic");
        let plans = world.plans.state.lock().expect("plan");
        let mut warm = world.log.warm.lock().expect("warm").clone();
        // The publisher is in every shard; its times count in the first.
        if shard.index != 0 {
            for target in &mut warm {
                target.remove(0);
            }
        }
        let finite = |x: f64| (!x.is_nan()).then_some(x);
        let latest = |target: &[f64]| -> Option<f64> {
            target
                .iter()
                .try_fold(0.0f64, |worst, &x| finite(x).map(|x| worst.max(x)))
        };
        // The images of t = 0 of the services no deployment changed: an
        // instance whose first poll comes after a deployment never pulls
        // the image it replaced.
        let cold_all_warm = warm[..SERVICES]
            .iter()
            .enumerate()
            .filter(|(service, _)| !deployed.contains(service))
            .map(|(_, t)| latest(t))
            .try_fold(0.0f64, |worst, x| x.map(|x| worst.max(x)));
        let windows = traffic
            .per_second
            .chunks(WINDOW)
            .map(|w| f64::from(w.iter().sum::<u32>()) / w.len() as f64);
        let row = Row {
            mode: mode.name().to_owned(),
            variant: variant.name().to_owned(),
            instances,
            horizon_s: horizon.as_secs_f64(),
            interval_s: policy.interval.as_secs_f64(),
            spread_s: policy.startup_spread.as_secs_f64(),
            calls_per_s: traffic.calls.iter().sum::<u64>() as f64 / horizon.as_secs_f64(),
            peak_per_s: windows.fold(0.0, f64::max),
            calls: traffic.calls,
            throttled: traffic.throttled,
            s3_gets: plans.get_requests,
            s3_gets_throttled: plans.get_throttled,
            s3_publisher_gets: plans.publisher_gets,
            shards: shard.of,
            s3_puts: plans.puts,
            cold_all_warm,
            all_warm: warm[SERVICES..].iter().map(|t| latest(t)).collect(),
            one_warm: warm[SERVICES..]
                .iter()
                .flat_map(|t| t.iter().map(|&x| finite(x)))
                .collect(),
            wall_s: 0.0,
            peak_bytes_per_instance: 0.0,
        };
        drop(fleet);
        row
    });
    row.peak_bytes_per_instance =
        (status_bytes("VmHWM:") - before).max(0.0) / shard.members(instances).len() as f64;
    drop(runtime);
    row.wall_s = wall.elapsed().as_secs_f64();
    row
}

/// Runs one row in a child process (this benchmark, `--row MODE N`), so
/// that its peak memory is its own, and reads its answer back.
fn run_row(mode: Mode, variant: Variant, instances: usize) -> Row {
    let of = Shard::count(mode, instances);
    let exe = std::env::current_exe().expect("the benchmark's path");
    let rows = (0..of)
        .map(|index| {
            let output = std::process::Command::new(&exe)
                .args(["--row", mode.name(), variant.name(), &instances.to_string()])
                .args(["--shard", &index.to_string(), &of.to_string()])
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("the row's process");
            assert!(output.status.success(), "the row {instances} failed");
            serde_json::from_slice(&output.stdout).expect("the row's answer")
        })
        .collect();
    merge(rows)
}

/// One row from its shards' rows: the publisher's figures (ECS, the
/// deployments) from the first, which every shard must match; the
/// followers' GETs and warm times from all.
fn merge(mut shards: Vec<Row>) -> Row {
    let mut row = shards.remove(0);
    for shard in shards {
        assert_eq!(
            (
                shard.calls,
                shard.throttled,
                shard.s3_puts,
                shard.s3_publisher_gets
            ),
            (row.calls, row.throttled, row.s3_puts, row.s3_publisher_gets),
            "the shards' publishers differ"
        );
        row.s3_gets += shard.s3_gets - shard.s3_publisher_gets;
        row.s3_gets_throttled += shard.s3_gets_throttled;
        let later = |a: Option<f64>, b: Option<f64>| Some(a?.max(b?));
        row.cold_all_warm = later(row.cold_all_warm, shard.cold_all_warm);
        row.all_warm = row
            .all_warm
            .iter()
            .zip(&shard.all_warm)
            .map(|(&a, &b)| later(a, b))
            .collect();
        // Percentiles over every (deployment, instance): order is no matter.
        row.one_warm.extend(shard.one_warm);
        row.wall_s += shard.wall_s;
        row.peak_bytes_per_instance = row
            .peak_bytes_per_instance
            .max(shard.peak_bytes_per_instance);
    }
    row
}

// --- Output -----------------------------------------------------------------------

/// Nearest-rank percentile; `None` (never warm in the run) sorts last.
fn percentile(values: &[Option<f64>], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.iter().map(|x| x.unwrap_or(f64::INFINITY)).collect();
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    let x = v[rank - 1];
    x.is_finite().then_some(x)
}

fn fmt_time(t: Option<f64>) -> String {
    match t {
        None => "not within the run".to_owned(),
        Some(s) if s < 120.0 => format!("{s:.0} s"),
        Some(s) => format!("{:.1} min", s / 60.0),
    }
}

fn fmt_seconds(s: f64) -> String {
    fmt_time(Some(s))
}

#[allow(clippy::print_stdout)] // a benchmark's table is its output
fn main() {
    let args: Vec<String> = std::env::args().collect();
    // A child process: one row, answered as JSON.
    if let Some(i) = args.iter().position(|a| a == "--row") {
        let mode = Mode::ALL
            .into_iter()
            .find(|m| Some(m.name()) == args.get(i + 1).map(String::as_str))
            .expect("a mode");
        let variant = Variant::ALL
            .into_iter()
            .find(|v| Some(v.name()) == args.get(i + 2).map(String::as_str))
            .expect("a variant");
        let instances: usize = args
            .get(i + 3)
            .and_then(|n| n.parse().ok())
            .expect("a fleet size");
        let shard = args
            .iter()
            .position(|a| a == "--shard")
            .map_or(Shard::WHOLE, |s| {
                let number = |k: usize| {
                    args.get(s + k)
                        .and_then(|n| n.parse().ok())
                        .expect("--shard INDEX OF")
                };
                Shard {
                    index: number(1),
                    of: number(2),
                }
            });
        let row = simulate(
            mode,
            variant,
            instances,
            0x5eed_0000 + instances as u64,
            shard,
        );
        println!("{}", serde_json::to_string(&row).expect("a row"));
        return;
    }
    let full = args.iter().any(|a| a == "--full");
    // `cargo bench` passes --bench; `cargo test --all-targets` (the suite)
    // runs this without it: then one smoke row per mode, 10 instances, in
    // the test profile's unoptimized code.
    let smoke = !args.iter().any(|a| a == "--bench");
    let sizes: Vec<usize> = match args.iter().position(|a| a == "--sizes") {
        Some(i) => args
            .get(i + 1)
            .map(|list| list.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default(),
        None if full => FULL_SIZES.to_vec(),
        None if smoke => SMOKE_SIZES.to_vec(),
        None => SIZES.to_vec(),
    };
    let variants: &[Variant] = if full || args.iter().any(|a| a == "--spread-one-interval") {
        &Variant::ALL
    } else {
        &[Variant::Recommended]
    };
    println!(
        "Model: {SERVICES} services, one image each, pinned by digest; buckets (tokens, refill/s): {}; \
         call latency {:?}; pull {:?}, {PULLS_AT_ONCE} at once; cold start (every instance at t = 0, empty store and engine); \
         {DEPLOYMENTS} deployments at seeded times in [{DEPLOY_FROM} s, {DEPLOY_TO} s]; simulated for {} h, or until {} h after the start-up spread; \
         peak over {WINDOW} s windows; policy PollPolicy::for_fleet(N, {SERVICES}) (recommended), or the same with the start-up spread at one interval.",
        Bucket::ALL
            .iter()
            .map(|b| {
                let (capacity, refill) = b.size();
                format!("{} reads {capacity}/{refill}", b.label())
            })
            .collect::<Vec<_>>()
            .join(", "),
        CALL_LATENCY,
        PULL_TIME,
        HORIZON.as_secs() / 3600,
        AFTER_SPREAD.as_secs() / 3600,
    );
    println!();
    println!(
        "| mode | policy | instances | interval | start-up spread | simulated | ECS calls/s mean | peak (1 min) | S3 GETs/s (cost a month) | throttled (ECS service / task-definition / revision reads; S3) | cold start: all warm | deployment warm on every instance p50 | p95 | one instance p50 | p95 | run time | peak memory per instance |"
    );
    println!(
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    // `--mode NAME`: that mode's rows only.
    let only = args
        .iter()
        .position(|a| a == "--mode")
        .and_then(|i| args.get(i + 1));
    let mut rows: Vec<Row> = Vec::new();
    for mode in Mode::ALL
        .into_iter()
        .filter(|m| only.is_none_or(|name| name == m.name()))
    {
        for &variant in variants {
            // A plan follower's spread is its interval already.
            if mode == Mode::FollowPlan && variant != Variant::Recommended {
                continue;
            }
            for &instances in &sizes {
                // A row that would not fit in memory (estimated from the
                // last row of this mode) is said, not run.
                // (From the largest fleet of the mode run so far, the
                // largest figure of its rows: an instance that is warm
                // holds more than one backing off.)
                if let Some(last) = rows
                    .iter()
                    .filter(|r| r.mode == mode.name())
                    .max_by(|a, b| {
                        a.instances.cmp(&b.instances).then(
                            a.peak_bytes_per_instance
                                .total_cmp(&b.peak_bytes_per_instance),
                        )
                    })
                {
                    let per_process = instances.div_ceil(Shard::count(mode, instances));
                    let needed = last.peak_bytes_per_instance * per_process as f64 * 1.25;
                    let available = available_bytes();
                    if needed > available {
                        println!(
                            "| {} | {} | {instances} | not run: about {:.1} GiB needed ({:.0} KiB per instance measured at {} instances), {:.1} GiB available | | | | | | | | | | | | | |",
                            mode.name(),
                            variant.name(),
                            needed / f64::from(1u32 << 30),
                            last.peak_bytes_per_instance / 1024.0,
                            last.instances,
                            available / f64::from(1u32 << 30),
                        );
                        continue;
                    }
                }
                let row = run_row(mode, variant, instances);
                println!(
                    "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {:.2} % ({} / {} / {}; {}) | {} | {} | {} | {} | {} | {:.1} s{} | {:.0} KiB |",
                    row.mode,
                    row.variant,
                    row.instances,
                    fmt_seconds(row.interval_s),
                    fmt_seconds(row.spread_s),
                    fmt_seconds(row.horizon_s),
                    row.calls_per_s,
                    row.peak_per_s,
                    if row.s3_gets == 0 {
                        "-".to_owned()
                    } else {
                        format!(
                            "{:.1} (${:.2})",
                            row.s3_gets_per_s(),
                            row.s3_cost_per_month()
                        )
                    },
                    row.throttled_pct(),
                    row.throttled[0],
                    row.throttled[1],
                    row.throttled[2],
                    row.s3_gets_throttled,
                    fmt_time(row.cold_all_warm),
                    fmt_time(percentile(&row.all_warm, 0.5)),
                    fmt_time(percentile(&row.all_warm, 0.95)),
                    fmt_time(percentile(&row.one_warm, 0.5)),
                    fmt_time(percentile(&row.one_warm, 0.95)),
                    row.wall_s,
                    if row.shards > 1 {
                        format!(" ({} shards)", row.shards)
                    } else {
                        String::new()
                    },
                    row.peak_bytes_per_instance / 1024.0,
                );
                rows.push(row);
            }
        }
    }
    println!();
    // One line per row of the recommended policy, for scripts.
    for row in rows
        .iter()
        .filter(|r| r.variant == Variant::Recommended.name())
    {
        println!(
            "fleet-row mode={} instances={} ecs_calls_per_s={:.2} throttled_pct={:.2} warm_all_p95_s={}",
            row.mode,
            row.instances,
            row.calls_per_s,
            row.throttled_pct(),
            percentile(&row.all_warm, 0.95).map_or_else(|| "inf".to_owned(), |s| format!("{s:.0}")),
        );
    }
}
