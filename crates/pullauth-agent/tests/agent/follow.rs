//! The cluster follower's loop (`follow::run`), driven in paused time: a
//! scripted cluster behind its `ClusterSource` seam and an instant fake
//! engine behind the agent's `Puller` seam. The agent between them is the
//! real one (store, single flight, credential provider, view). Nothing
//! sleeps for real: the clock jumps to the loop's next timer, so the time
//! between two reads of the cluster is exactly the delay the loop chose.
//! The wiring to ECS and a real engine is covered against moto in
//! `integration/tests/it/prefetch.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use pullauth_agent::credentials::Provider;
use pullauth_agent::follow;
use pullauth_agent::follow::{
    ClusterSource, FollowConfig, FollowSource, Follower, PollPolicy, Read,
};
use pullauth_agent::prefetch::{Filters, Plan, Problem, Wanted};
use pullauth_agent::shared_plan::{self, Condition, Fetched, PlanStore, Stored};
use pullauth_agent::{Agent, Identity, Puller, Settings};
use pullauth_aws::{
    Aws, AwsError, AwsOptions, Call, DescribedServices, EcsApi, EcsFuture, S3Location,
    ServiceDeployment, ServicesPage,
};
use pullauth_config::{AuthType, PullBehavior, SecretString};
use pullauth_docker::Removal;
use pullauth_docker::{
    Obtained, Platform, PullError, PullEvent, PullOptions, PullStatus, Verified,
};
use pullauth_ecs::{
    Capacity, ClusterView, ContainerDefinition, EcsService, Host, Run, ServiceRevision,
    ServiceStatus, TaskDefinition,
};
use pullauth_resolve::{Entry, ImageRef, RegistryTable};
use pullauth_store::Store;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

const INTERVAL: Duration = Duration::from_secs(60);
const SEED: u64 = 16;
const APP_1: &str = "registry.example.com/app:1";
const APP_2: &str = "registry.example.com/app:2";

/// One read of the cluster by the follower.
#[derive(Debug)]
struct PlanCall {
    at: Instant,
    cluster: String,
    filters: Filters,
}

/// A cluster whose answer the test sets; every read is reported.
struct ScriptedCluster {
    answer: Mutex<Result<Plan, AwsError>>,
    calls: mpsc::UnboundedSender<PlanCall>,
}

impl ScriptedCluster {
    fn answer(&self, answer: Result<Plan, AwsError>) {
        *self.answer.lock().expect("answer") = answer;
    }
}

impl ClusterSource for ScriptedCluster {
    fn read<'a>(
        &'a self,
        _agent: &'a Agent,
        config: &'a FollowConfig,
        _host: &'a Host,
        _acted_on: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Read, AwsError>> {
        let _ = self.calls.send(PlanCall {
            at: Instant::now(),
            cluster: config.cluster.clone(),
            filters: config.filters.clone(),
        });
        let answer = self.answer.lock().expect("answer").clone();
        async move { answer.map(Read::Plan) }.boxed()
    }

    fn host<'a>(
        &'a self,
        _agent: &'a Agent,
        _config: &'a FollowConfig,
    ) -> BoxFuture<'a, (Host, Vec<String>)> {
        async { (Host::from_engine("x86_64", "linux"), Vec::new()) }.boxed()
    }
}

/// An engine whose pulls succeed at once; it keeps what it pulled until
/// the test removes it, and counts pulls and inspects.
#[derive(Default)]
struct InstantEngine {
    /// Set: every inspect fails as a wedged engine's would.
    wedged: std::sync::atomic::AtomicBool,
    present: Mutex<BTreeSet<String>>,
    /// (reference, username) of each pull.
    pulls: Mutex<Vec<(String, Option<String>)>>,
    inspects: Mutex<Vec<String>>,
    /// (source, target) of each tag.
    tags: Mutex<Vec<(String, String)>>,
    /// References removed through the engine.
    removed: Mutex<Vec<String>>,
    /// References a container uses (the engine refuses to remove them).
    in_use: Mutex<BTreeSet<String>>,
}

/// The size every image of the instant engine has.
const IMAGE_SIZE: u64 = 1 << 30;

impl InstantEngine {
    fn pulls_of(&self, reference: &str) -> usize {
        let pulls = self.pulls.lock().expect("pulls");
        pulls.iter().filter(|(r, _)| r == reference).count()
    }

    fn pull_count(&self) -> usize {
        self.pulls.lock().expect("pulls").len()
    }

    fn inspect_count(&self) -> usize {
        self.inspects.lock().expect("inspects").len()
    }

    /// As `docker image rm` or a prune would.
    fn remove(&self, reference: &str) {
        self.present.lock().expect("present").remove(reference);
    }
}

impl Puller for InstantEngine {
    fn address(&self) -> &str {
        "fake://instant"
    }

    fn obtain<'a>(
        &'a self,
        image: &'a ImageRef,
        entry: Option<&'a Entry>,
        _behavior: PullBehavior,
        _pulled_before: bool,
        _options: &'a PullOptions,
        _progress: &'a mut (dyn FnMut(PullEvent) + Send),
    ) -> BoxFuture<'a, Result<Obtained, PullError>> {
        let reference = image.pull_reference();
        let username = entry.and_then(|e| e.credentials.username.clone());
        self.pulls
            .lock()
            .expect("pulls")
            .push((reference.clone(), username));
        self.present
            .lock()
            .expect("present")
            .insert(reference.clone());
        async move {
            Ok(Obtained {
                status: PullStatus::Pulled,
                image_id: format!("sha256:{}", reference.len()),
                digest: None,
                attempts: 1,
                retries: 0,
                fallback_from: None,
                elapsed: Duration::ZERO,
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
            detail: "the follower never verifies".to_owned(),
        };
        async move { Err(error) }.boxed()
    }

    fn image_size<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, PullError>> {
        let present = self.present.lock().expect("present").contains(reference);
        async move { Ok(present.then_some(IMAGE_SIZE)) }.boxed()
    }

    fn remove_image<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<Removal, PullError>> {
        let removal = if self.in_use.lock().expect("in use").contains(reference) {
            Removal::InUse
        } else if self.present.lock().expect("present").remove(reference) {
            self.removed
                .lock()
                .expect("removed")
                .push(reference.to_owned());
            Removal::Removed
        } else {
            Removal::Missing
        };
        async move { Ok(removal) }.boxed()
    }

    fn tag<'a>(
        &'a self,
        source: &'a str,
        target: &'a ImageRef,
    ) -> BoxFuture<'a, Result<(), PullError>> {
        self.tags
            .lock()
            .expect("tags")
            .push((source.to_owned(), target.pull_reference()));
        async { Ok(()) }.boxed()
    }

    fn platform(&self) -> BoxFuture<'_, Result<Platform, PullError>> {
        async {
            Ok(Platform {
                architecture: Some("x86_64".into()),
                os_type: Some("linux".into()),
            })
        }
        .boxed()
    }

    fn image_id<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, PullError>> {
        self.inspects
            .lock()
            .expect("inspects")
            .push(reference.to_owned());
        if self.wedged.load(std::sync::atomic::Ordering::Relaxed) {
            let error = PullError::EngineUnreachable {
                address: "fake://instant".to_owned(),
                detail: "it did not answer".to_owned(),
            };
            return async move { Err(error) }.boxed();
        }
        let present = self.present.lock().expect("present").contains(reference);
        async move { Ok(present.then(|| format!("sha256:{}", reference.len()))) }.boxed()
    }
}

/// Service `web` running the given revisions of task definition `web`,
/// revision N naming image `registry.example.com/app:N`.
fn web(revisions: &[u32]) -> Plan {
    let names: Vec<String> = revisions.iter().map(|r| format!("web:{r}")).collect();
    let wanted = revisions
        .iter()
        .map(|r| Wanted {
            image: ImageRef::parse(&format!("registry.example.com/app:{r}")).expect("valid"),
            task_definition: format!("web:{r}"),
            services: vec!["web".to_owned()],
            secret: None,
            execution_role: None,
            notes: Vec::new(),
            digest: None,
            deployments: BTreeSet::new(),
        })
        .collect();
    Plan {
        wanted,
        services: BTreeMap::from([("web".to_owned(), names)]),
        ..Plan::default()
    }
}

fn ecs_call(operation: &'static str, cluster: &str) -> Call {
    Call {
        operation,
        target: format!("cluster {cluster}"),
        principal: "the default credential chain".to_owned(),
    }
}

fn throttled(cluster: &str) -> AwsError {
    AwsError::Throttled {
        call: ecs_call("ecs:ListServices", cluster),
        code: "ThrottlingException".to_owned(),
        message: "Rate exceeded".to_owned(),
    }
}

fn unreachable(cluster: &str) -> AwsError {
    AwsError::Unreachable {
        call: ecs_call("ecs:ListServices", cluster),
        detail: "connection refused".to_owned(),
    }
}

fn config(cluster: &str, services: &[&str]) -> FollowConfig {
    FollowConfig {
        cluster: cluster.to_owned(),
        filters: Filters {
            services: services.iter().map(|s| (*s).to_owned()).collect(),
            task_definitions: Vec::new(),
        },
        policy: PollPolicy::with_interval(INTERVAL),
        remove_after: None,
        disk_budget: None,
        ecs_agent_uri: None,
        ecs_agent: None,
        source: FollowSource::default(),
    }
}

struct Harness {
    agent: Agent,
    engine: Arc<InstantEngine>,
    cluster: Arc<ScriptedCluster>,
    calls: mpsc::UnboundedReceiver<PlanCall>,
    follower: Follower,
    started: Instant,
}

impl Harness {
    /// How many images the follower keeps a state for.
    fn follower_images(&self) -> usize {
        self.agent.following(|view| view.images_tracked())
    }

    fn start(first: Plan) -> Harness {
        Harness::start_following(first, config("prod", &[]))
    }

    fn start_following(first: Plan, following: FollowConfig) -> Harness {
        let engine = Arc::new(InstantEngine::default());
        let data = SecretString::from(
            json!({"registry.example.com": {"username": "bob", "password": "canary-pw"}})
                .to_string(),
        );
        let settings = Settings {
            table: RegistryTable::from_auth_data(AuthType::Docker, &data).expect("auth data"),
            behavior: PullBehavior::Default,
            options: PullOptions::default(),
        };
        let identity = Identity {
            cluster: "prod".to_owned(),
            container_instance_arn: None,
            version: "test".to_owned(),
        };
        let agent =
            Agent::start(Store::in_memory(), engine.clone(), settings, identity, 4).expect("agent");
        let (tx, calls) = mpsc::unbounded_channel();
        let cluster = Arc::new(ScriptedCluster {
            answer: Mutex::new(Ok(first)),
            calls: tx,
        });
        let started = Instant::now();
        let follower = Follower::start_with(agent.clone(), cluster.clone(), Some(following), SEED);
        Harness {
            agent,
            engine,
            cluster,
            calls,
            follower,
            started,
        }
    }

    /// The follower's next read of the cluster. By then everything the
    /// previous poll started (pulls, store records) has finished: the
    /// paused clock only moves when nothing else can run.
    async fn next_poll(&mut self) -> PlanCall {
        // Paused time: this bound stands for "never" and fails a stuck loop.
        tokio::time::timeout(Duration::from_secs(24 * 3600), self.calls.recv())
            .await
            .expect("the follower stopped polling")
            .expect("the follower is gone")
    }

    fn view(&self) -> Value {
        self.agent.following(|view| view.to_json(&self.agent))
    }
}

/// The state `GET /v1/prefetch` shows for `image` of service `web`.
fn state_of(view: &Value, image: &str) -> Option<String> {
    view["services"]
        .as_array()?
        .iter()
        .flat_map(|s| {
            s["task_definitions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|td| td["images"].as_array().cloned().unwrap_or_default())
        .find(|i| i["image"] == image)
        .and_then(|i| i["state"].as_str().map(str::to_owned))
}

#[tokio::test(start_paused = true)]
async fn polls_on_the_interval_with_jitter_and_pulls_a_new_revision_once() {
    let mut h = Harness::start(web(&[1]));
    let policy = PollPolicy::with_interval(INTERVAL);
    let (low, high) = (
        INTERVAL.mul_f64(1.0 - policy.jitter),
        INTERVAL.mul_f64(1.0 + policy.jitter),
    );

    let first = h.next_poll().await;
    assert!(
        first.at - h.started <= policy.startup_spread,
        "first poll after {:?}, spread {:?}",
        first.at - h.started,
        policy.startup_spread
    );
    assert_eq!(first.cluster, "prod");

    // A quiet cluster: one pull, then polls on the jittered interval that
    // only check that the image is still there.
    let mut at = first.at;
    let mut gaps = Vec::new();
    for _ in 0..6 {
        let call = h.next_poll().await;
        gaps.push(call.at - at);
        at = call.at;
    }
    for gap in &gaps {
        assert!(
            (low..=high).contains(gap),
            "gap {gap:?} outside {low:?}..={high:?}"
        );
    }
    let distinct: BTreeSet<u128> = gaps.iter().map(Duration::as_millis).collect();
    assert!(distinct.len() > 1, "no jitter: {gaps:?}");
    assert_eq!(h.engine.pulls_of(APP_1), 1);
    assert_eq!(
        h.engine.pulls.lock().expect("pulls")[0],
        (APP_1.to_owned(), Some("bob".to_owned())),
        "pulled with the key the resolver picks"
    );
    // One inspect for each of the six polls after the pull (the first poll
    // had nothing warm; a poll has checked by the time its read is seen).
    assert_eq!(h.engine.inspect_count(), 6);
    assert_eq!(state_of(&h.view(), APP_1).as_deref(), Some("warm"));

    // A deployment names revision 2 while revision 1 still runs.
    h.cluster.answer(Ok(web(&[2, 1])));
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(h.engine.pulls_of(APP_2), 1);
    assert_eq!(
        h.engine.pulls_of(APP_1),
        1,
        "the warm revision is not pulled again"
    );
    assert_eq!(state_of(&h.view(), APP_2).as_deref(), Some("warm"));

    // The deployment is done; the cluster is quiet again.
    h.cluster.answer(Ok(web(&[2])));
    for _ in 0..4 {
        h.next_poll().await;
    }
    assert_eq!(h.engine.pull_count(), 2, "{:?}", h.engine.pulls);
    assert_eq!(h.agent.metrics().prefetch_pulls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_throttled_poll_backs_off_and_recovers() {
    let mut h = Harness::start(web(&[1]));
    let policy = PollPolicy::with_interval(INTERVAL);
    let good = h.next_poll().await;

    h.cluster.answer(Err(throttled("prod")));
    let mut at = h.next_poll().await.at;
    assert!(at - good.at >= INTERVAL.mul_f64(1.0 - policy.jitter));
    // Three throttled polls: each delay is drawn from [ceiling/2, ceiling]
    // with the ceiling doubling from the throttle base, capped.
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let call = h.next_poll().await;
        gaps.push(call.at - at);
        at = call.at;
    }
    for (k, gap) in gaps.iter().enumerate() {
        let ceiling = policy.throttled.ceiling(k as u32 + 1);
        assert!(
            *gap >= ceiling / 2 && *gap <= ceiling,
            "throttled poll {}: waited {gap:?}, ceiling {ceiling:?}",
            k + 1
        );
    }
    assert!(
        gaps[2] > gaps[0],
        "the backoff does not grow: {gaps:?} (policy {:?})",
        policy.throttled
    );
    assert_eq!(h.agent.metrics().prefetch_throttles.get(), 4);
    let view = h.view();
    assert!(
        view["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("throttled") && e.contains("ecs:ListServices")),
        "{view}"
    );

    // ECS answers again: the next delay is the jittered interval.
    h.cluster.answer(Ok(web(&[1])));
    let recovered = h.next_poll().await;
    let after = h.next_poll().await;
    let gap = after.at - recovered.at;
    assert!(
        gap >= INTERVAL.mul_f64(1.0 - policy.jitter)
            && gap <= INTERVAL.mul_f64(1.0 + policy.jitter),
        "after recovering waited {gap:?}"
    );
    assert_eq!(h.view()["last_error"], Value::Null);
}

#[tokio::test(start_paused = true)]
async fn a_failed_poll_keeps_the_last_good_view() {
    let mut h = Harness::start(web(&[1]));
    let policy = PollPolicy::with_interval(INTERVAL);
    h.next_poll().await;
    h.cluster.answer(Err(unreachable("prod")));
    let failed = h.next_poll().await;
    let retried = h.next_poll().await;
    // Issue 24: never sooner than a healthy poll (at least one interval,
    // the jitter only adding), so a fleet failing together calls ECS no
    // more often than when healthy.
    let gap = retried.at - failed.at;
    assert!(
        gap >= policy.interval && gap <= policy.interval.mul_f64(1.0 + policy.jitter),
        "after a failure waited {gap:?}, interval {:?}",
        policy.interval
    );
    let view = h.view();
    assert_eq!(view["services"][0]["service"], "web", "{view}");
    assert_eq!(state_of(&view, APP_1).as_deref(), Some("warm"), "{view}");
    assert!(
        view["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable") && e.contains("cluster prod")),
        "{view}"
    );
    assert!(view["last_success"].is_string(), "{view}");
    assert_eq!(h.engine.pull_count(), 1);
    assert!(!view.to_string().contains("canary-pw"));
}

/// A reload reaches a whole fleet at once: its first poll is spread as
/// the start-up poll is (the schedule's first delay), never at once.
#[tokio::test(start_paused = true)]
async fn a_reload_with_another_cluster_or_filters_polls_after_a_spread_delay() {
    let mut h = Harness::start(web(&[1]));
    let policy = PollPolicy::with_interval(INTERVAL);
    let spread = pullauth_poll::Schedule::new(policy.clone(), SEED).first_delay();
    assert!(spread > Duration::ZERO, "seed {SEED} spreads by nothing");
    let first = h.next_poll().await;

    // The same configuration again changes nothing: the next poll comes on
    // the interval.
    tokio::time::sleep(Duration::from_secs(10)).await;
    h.follower.update(Some(config("prod", &[])));
    let next = h.next_poll().await;
    assert!(
        next.at - first.at >= INTERVAL.mul_f64(1.0 - policy.jitter),
        "polled {:?} after the first",
        next.at - first.at
    );

    tokio::time::sleep(Duration::from_secs(10)).await;
    let reloaded = Instant::now();
    h.follower.update(Some(config("staging", &["api"])));
    // The other cluster's images are forgotten at once.
    tokio::task::yield_now().await;
    let call = h.next_poll().await;
    // Tokio's timers have millisecond resolution.
    let tick = Duration::from_millis(1);
    assert!(
        (call.at - reloaded).abs_diff(spread) <= tick,
        "the reload's first poll came {:?} after it, not {spread:?}",
        call.at - reloaded
    );
    assert_eq!(call.cluster, "staging");
    assert_eq!(call.filters.services, ["api"]);
    assert_eq!(h.view()["cluster"], "staging");

    // Narrowing the filters on the same cluster starts a new schedule too.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let narrowed = Instant::now();
    h.follower.update(Some(config("staging", &["web"])));
    let call = h.next_poll().await;
    assert!((call.at - narrowed).abs_diff(spread) <= tick);
    assert_eq!(call.filters.services, ["web"]);
}

/// The follower stays small: through 10,000 revisions of a service (each
/// poll naming only the newest), the view holds one image, not every image
/// ever named.
#[tokio::test(start_paused = true)]
async fn the_view_forgets_images_no_revision_names_any_more() {
    let mut h = Harness::start(web(&[1]));
    h.next_poll().await;
    for revision in 2..=10_000u32 {
        h.cluster.answer(Ok(web(&[revision])));
        h.next_poll().await;
    }
    let view = h.view();
    let images: Vec<&Value> = view["services"][0]["task_definitions"]
        .as_array()
        .expect("task definitions")
        .iter()
        .flat_map(|td| td["images"].as_array().expect("images"))
        .collect();
    assert_eq!(images.len(), 1, "{view}");
    assert_eq!(h.follower_images(), 1, "images kept by the follower");
}

#[tokio::test(start_paused = true)]
async fn an_image_removed_from_the_engine_is_pulled_again() {
    let mut h = Harness::start(web(&[1]));
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(h.engine.pulls_of(APP_1), 1);

    h.engine.remove(APP_1);
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(
        h.engine.pulls_of(APP_1),
        2,
        "the removed image was not pulled again"
    );
    assert_eq!(state_of(&h.view(), APP_1).as_deref(), Some("warm"));

    // Back in the engine: later polls only check it.
    let inspects = h.engine.inspect_count();
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(h.engine.pulls_of(APP_1), 2);
    assert_eq!(
        h.engine.inspect_count(),
        inspects + 2,
        "one inspect per poll"
    );
}

/// An engine that cannot answer inspects: the warm images stay warm (no
/// pull), and the poll stops asking after the first failure instead of
/// waiting out one engine-call timeout per image.
#[tokio::test(start_paused = true)]
async fn an_engine_that_cannot_answer_stops_the_presence_checks_of_a_poll() {
    let revisions: Vec<u32> = (1..=12).collect();
    let mut h = Harness::start(web(&revisions));
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(h.engine.pull_count(), 12);

    h.engine
        .wedged
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let inspects = h.engine.inspect_count();
    h.next_poll().await;
    let asked = h.engine.inspect_count() - inspects;
    assert!(
        (1..=pullauth_agent::follow::PRESENCE_CHECKS_AT_ONCE).contains(&asked),
        "{asked} inspects of a failing engine in one poll"
    );
    assert_eq!(h.engine.pull_count(), 12, "nothing is pulled again");
    assert_eq!(state_of(&h.view(), APP_1).as_deref(), Some("warm"));
}

/// `web(&[1])`, run by the given deployments, pinned to `digest` if given.
fn web_deployed(ids: &[&str], digest: Option<&str>) -> Plan {
    let mut plan = web(&[1]);
    plan.wanted[0].deployments = ids.iter().map(|id| (*id).to_owned()).collect();
    plan.wanted[0].digest = digest.map(str::to_owned);
    plan
}

/// A warm tag is pulled again when a deployment it was not pulled for
/// names it (a forced new deployment after re-pushing the tag): ECS's new
/// tasks would pull it, so the follower does. A deployment that ends
/// changes nothing.
#[tokio::test(start_paused = true)]
async fn a_new_deployment_naming_a_warm_tag_pulls_it_again() {
    let mut h = Harness::start(web_deployed(&["ecs-svc/1"], None));
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(h.engine.pulls_of(APP_1), 1);

    h.cluster
        .answer(Ok(web_deployed(&["ecs-svc/1", "ecs-svc/2"], None)));
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(h.engine.pulls_of(APP_1), 2, "the new deployment pulled it");

    h.cluster.answer(Ok(web_deployed(&["ecs-svc/2"], None)));
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(
        h.engine.pulls_of(APP_1),
        2,
        "an ended deployment pulls nothing"
    );
}

/// A digest ECS pinned is pulled as `name@digest` and tagged with the
/// task's reference; a new deployment pinning the same digest pulls
/// nothing (the content cannot have changed).
#[tokio::test(start_paused = true)]
async fn a_pinned_digest_is_pulled_once_and_tagged_with_the_tasks_reference() {
    let digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let by_digest = format!("registry.example.com/app@{digest}");
    let mut h = Harness::start(web_deployed(&["ecs-svc/1"], Some(digest)));
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(h.engine.pulls_of(&by_digest), 1);
    assert_eq!(
        h.engine.pulls_of(APP_1),
        0,
        "the tag itself is never pulled"
    );
    assert_eq!(
        *h.engine.tags.lock().expect("tags"),
        [(by_digest.clone(), APP_1.to_owned())]
    );
    assert_eq!(state_of(&h.view(), APP_1).as_deref(), Some("warm"));

    h.cluster
        .answer(Ok(web_deployed(&["ecs-svc/1", "ecs-svc/2"], Some(digest))));
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(h.engine.pulls_of(&by_digest), 1);
}

/// An image that keeps disappearing after it was pulled (the ECS agent's
/// untracked cleanup, a prune) is pulled again once at once, then only
/// after a back-off that grows: the two never loop. The view names the
/// likely cause; `/metrics` counts every removal.
#[tokio::test(start_paused = true)]
async fn an_image_that_keeps_disappearing_is_pulled_again_with_backoff() {
    let mut h = Harness::start(web(&[1]));
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(h.engine.pulls_of(APP_1), 1);

    h.engine.remove(APP_1);
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(
        h.engine.pulls_of(APP_1),
        2,
        "the first removal: pulled again at once"
    );

    h.engine.remove(APP_1);
    h.next_poll().await;
    let removed_at = Instant::now();
    assert_eq!(h.engine.pulls_of(APP_1), 2, "the second removal backs off");
    let view = h.view();
    assert_eq!(state_of(&view, APP_1).as_deref(), Some("removed"), "{view}");
    assert!(
        view.to_string()
            .contains("ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP"),
        "the view names the likely cause: {view}"
    );
    while Instant::now() - removed_at < pullauth_agent::follow::REMOVED_BACKOFF_FIRST {
        h.next_poll().await;
        if Instant::now() - removed_at < pullauth_agent::follow::REMOVED_BACKOFF_FIRST {
            assert_eq!(
                h.engine.pulls_of(APP_1),
                2,
                "pulled again within the back-off"
            );
        }
    }
    h.next_poll().await;
    assert_eq!(
        h.engine.pulls_of(APP_1),
        3,
        "pulled again after the back-off"
    );
    let metrics = h.agent.metrics().render();
    assert!(
        metrics.contains("pullauth_prefetch_images_removed_total 2"),
        "{metrics}"
    );
}

/// `config("prod")` with removal after `after` and a disk budget.
fn config_with(after: Option<Duration>, budget: Option<u64>) -> FollowConfig {
    FollowConfig {
        remove_after: after,
        disk_budget: budget,
        ..config("prod", &[])
    }
}

/// What prefetch pulled and nothing names any more is removed after the
/// grace period, and only then; never an image a task used, and not while
/// a container uses it (kept, tried again on later polls).
#[tokio::test(start_paused = true)]
async fn images_nothing_names_are_removed_after_the_grace_period_and_only_prefetched_ones() {
    let grace = Duration::from_secs(30 * 60);
    let mut h = Harness::start_following(web(&[1, 2, 3]), config_with(Some(grace), None));
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(h.engine.pull_count(), 3);
    let app_3 = "registry.example.com/app:3";
    // A task used app:2 since; a container uses app:3.
    h.agent.store().set_prefetched(APP_2, false).expect("mark");
    h.engine
        .in_use
        .lock()
        .expect("in use")
        .insert(app_3.to_owned());

    // A plan with a problem (a task definition that could not be
    // described) removes nothing, however long it lasts.
    let mut partial = web(&[4]);
    partial.problems.push(Problem {
        services: vec!["web".to_owned()],
        task_definition: Some("web:1".to_owned()),
        image: None,
        error: "ecs:DescribeTaskDefinition: throttled".to_owned(),
    });
    h.cluster.answer(Ok(partial));
    for _ in 0..60 {
        h.next_poll().await;
    }
    assert!(
        h.engine.removed.lock().expect("removed").is_empty(),
        "removed on an incomplete plan"
    );

    h.cluster.answer(Ok(web(&[4])));
    h.next_poll().await;
    let unnamed_at = Instant::now();
    while Instant::now() - unnamed_at < grace {
        assert!(
            h.engine.removed.lock().expect("removed").is_empty(),
            "removed within the grace period"
        );
        h.next_poll().await;
    }
    h.next_poll().await;
    assert_eq!(*h.engine.removed.lock().expect("removed"), [APP_1]);
    assert!(
        h.agent.store().image(APP_1).expect("store").is_none(),
        "forgotten"
    );
    assert_eq!(
        h.agent.store().prefetched_images().expect("store"),
        [app_3, "registry.example.com/app:4"],
        "app:3 stays marked while a container uses it"
    );
    h.engine.in_use.lock().expect("in use").clear();
    // The poll in flight may have looked before the container went; the
    // next one starts after, and has finished when the one after starts.
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(*h.engine.removed.lock().expect("removed"), [APP_1, app_3]);
    let metrics = h.agent.metrics().render();
    assert!(
        metrics.contains("pullauth_prefetch_images_cleaned_total 2"),
        "{metrics}"
    );
}

/// The disk guard: once the images prefetch pulled take the budget, new
/// pulls are skipped and shown as skipped (`disk-guard`), never attempted.
#[tokio::test(start_paused = true)]
async fn the_disk_guard_skips_pulls_beyond_the_budget() {
    let budget = IMAGE_SIZE + IMAGE_SIZE / 2;
    let mut h = Harness::start_following(web(&[1]), config_with(None, Some(budget)));
    h.next_poll().await;
    h.cluster.answer(Ok(web(&[1, 2])));
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(h.engine.pull_count(), 2, "under the budget");
    h.cluster.answer(Ok(web(&[1, 2, 3])));
    h.next_poll().await;
    h.next_poll().await;
    assert_eq!(
        h.engine.pull_count(),
        2,
        "at the budget nothing more is pulled"
    );
    let view = h.view();
    assert_eq!(
        state_of(&view, "registry.example.com/app:3").as_deref(),
        Some("skipped"),
        "{view}"
    );
    assert!(view.to_string().contains("disk-guard"), "{view}");
    // What was pulled before the budget stays warm (and checked).
    assert_eq!(state_of(&view, APP_1).as_deref(), Some("warm"), "{view}");
    assert_eq!(state_of(&view, APP_2).as_deref(), Some("warm"), "{view}");
}

// --- A follower of a published plan (`serve --follow-plan`) ----------------

/// ECS, for an agent that must not read it: every call fails.
#[derive(Debug)]
struct NoEcs;

fn not_read<'a, T: Send + 'a>(operation: &'static str) -> EcsFuture<'a, T> {
    let error = AwsError::Unreachable {
        call: ecs_call(operation, "prod"),
        detail: "a plan follower does not read ECS".to_owned(),
    };
    Box::pin(async move { Err(error) })
}

impl EcsApi for NoEcs {
    fn list_services<'a>(&'a self, _: &'a str, _: Option<&'a str>) -> EcsFuture<'a, ServicesPage> {
        not_read("ecs:ListServices")
    }

    fn describe_services<'a>(
        &'a self,
        _: &'a str,
        _: &'a [String],
    ) -> EcsFuture<'a, DescribedServices> {
        not_read("ecs:DescribeServices")
    }

    fn describe_task_definition<'a>(&'a self, _: &'a str) -> EcsFuture<'a, TaskDefinition> {
        not_read("ecs:DescribeTaskDefinition")
    }

    fn list_service_deployments<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> EcsFuture<'a, Vec<ServiceDeployment>> {
        not_read("ecs:ListServiceDeployments")
    }

    fn describe_service_revisions<'a>(
        &'a self,
        _: &'a [String],
    ) -> EcsFuture<'a, Vec<ServiceRevision>> {
        not_read("ecs:DescribeServiceRevisions")
    }

    fn describe_container_instance<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> EcsFuture<'a, BTreeMap<String, String>> {
        not_read("ecs:DescribeContainerInstances")
    }
}

/// The plan's S3 object, with S3's conditional GET (`304` for the ETag
/// asked with); every GET is reported with its time and answer.
#[derive(Default)]
struct PlanObject {
    current: Mutex<Option<(String, Vec<u8>)>>,
    versions: Mutex<u32>,
    gets: Mutex<Option<mpsc::UnboundedSender<(Instant, bool)>>>,
}

impl PlanStore for PlanObject {
    fn get<'a>(
        &'a self,
        _location: &'a S3Location,
        etag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, AwsError>> {
        let current = self.current.lock().expect("current").clone();
        let answer = Fetched::from_current(
            current
                .as_ref()
                .map(|(etag, body)| (etag.as_str(), body.as_slice())),
            etag,
        );
        if let Some(gets) = &*self.gets.lock().expect("gets") {
            let _ = gets.send((Instant::now(), answer == Fetched::NotModified));
        }
        async move { Ok(answer) }.boxed()
    }

    fn put<'a>(
        &'a self,
        _location: &'a S3Location,
        body: Vec<u8>,
        condition: Condition,
    ) -> BoxFuture<'a, Result<Stored, AwsError>> {
        let mut current = self.current.lock().expect("current");
        let allowed = condition.holds(current.as_ref().map(|(etag, _)| etag.as_str()));
        let answer = if allowed {
            let mut versions = self.versions.lock().expect("versions");
            *versions += 1;
            let etag = format!("\"v{versions}\"");
            *current = Some((etag.clone(), body));
            Stored::Written { etag }
        } else {
            Stored::Conflict
        };
        async move { Ok(answer) }.boxed()
    }
}

fn plan_location() -> S3Location {
    S3Location::parse("s3://plans/prod.json").expect("valid")
}

/// Cluster `prod` as a publisher reads it: service `web` running task
/// definition `web:REVISION`, whose one container runs `app:REVISION`.
fn published_view(revision: u32) -> ClusterView {
    let task_definition = format!("web:{revision}");
    ClusterView {
        cluster: "prod".to_owned(),
        services_read: true,
        services: vec![EcsService {
            name: "web".to_owned(),
            status: ServiceStatus::Active,
            deployment_controller: "ECS".to_owned(),
            placement_constraints: Vec::new(),
            runs: vec![Run {
                task_definition: task_definition.clone(),
                capacity: Capacity::default(),
                id: None,
                origin: "service".to_owned(),
            }],
        }],
        task_definitions: BTreeMap::from([(
            task_definition,
            TaskDefinition {
                arn: Some(format!(
                    "arn:aws:ecs:eu-west-1:123456789012:task-definition/web:{revision}"
                )),
                family: "web".to_owned(),
                revision: Some(revision as i32),
                containers: vec![ContainerDefinition {
                    name: "app".to_owned(),
                    image: format!("registry.example.com/app:{revision}"),
                    essential: true,
                    credentials_parameter: None,
                }],
                ..TaskDefinition::default()
            },
        )]),
        ..ClusterView::default()
    }
}

/// Publishes revision `revision` of `web` to `object` (its GET is not
/// reported: no follower's).
async fn publish(object: &PlanObject, revision: u32) {
    let gets = object.gets.lock().expect("gets").take();
    let now = std::time::SystemTime::now();
    shared_plan::publish(
        object,
        &plan_location(),
        &published_view(revision),
        now,
        "publisher-1",
        now,
    )
    .await
    .expect("published");
    *object.gets.lock().expect("gets") = gets;
}

/// The follower's next GET of the plan (the time, and whether it was
/// answered `304`): the next poll starting. By then the previous poll and
/// what it started (pulls, store records) have finished.
async fn next_get(gets: &mut mpsc::UnboundedReceiver<(Instant, bool)>) -> (Instant, bool) {
    // Paused time: this bound stands for "never" and fails a stuck loop.
    tokio::time::timeout(Duration::from_secs(24 * 3600), gets.recv())
        .await
        .expect("the follower stopped polling")
        .expect("the follower is gone")
}

/// `serve --follow-plan`: the shipped source (`follow::Ecs`) reading the
/// plan from `object` every `INTERVAL`, ECS never read.
fn start_plan_follower(object: Arc<PlanObject>) -> (Agent, Arc<InstantEngine>, Follower) {
    let engine = Arc::new(InstantEngine::default());
    let settings = Settings {
        table: RegistryTable::empty(),
        behavior: PullBehavior::Default,
        options: PullOptions::default(),
    };
    let identity = Identity {
        cluster: "prod".to_owned(),
        container_instance_arn: None,
        version: "test".to_owned(),
    };
    let aws = Aws::with_ecs_api(
        Arc::new(NoEcs),
        AwsOptions {
            ecr: false,
            ..AwsOptions::default()
        },
    );
    let agent = Agent::start_with_provider(
        Store::in_memory(),
        engine.clone(),
        settings,
        identity,
        4,
        Arc::new(Provider::with_aws(aws, false)),
    )
    .expect("agent");
    let following = FollowConfig {
        source: FollowSource::Plan {
            location: plan_location(),
            max_age: shared_plan::DEFAULT_MAX_AGE,
            fallback: false,
        },
        ..config("prod", &[])
    };
    let follower = Follower::start_with(
        agent.clone(),
        Arc::new(follow::Ecs::with_plan_store(object)),
        Some(following),
        SEED,
    );
    (agent, engine, follower)
}

/// A plan follower whose GET answers `304` for the plan it acted on, with
/// every image warm, ends the poll there: no engine inspect, no new
/// decision; but the poll counts, and at least every
/// `ENGINE_CHECK_EVERY` a full poll checks the engine, so an image removed
/// behind the agent's back is pulled again within that time. A new
/// version of the plan is acted on at the next poll.
#[tokio::test(start_paused = true)]
async fn a_plan_follower_skips_an_unchanged_plan_and_checks_the_engine_periodically() {
    let object = Arc::new(PlanObject::default());
    publish(&object, 1).await;
    let (tx, mut gets) = mpsc::unbounded_channel();
    *object.gets.lock().expect("gets") = Some(tx);
    let (agent, engine, _follower) = start_plan_follower(object.clone());
    let check_every = pullauth_agent::follow::ENGINE_CHECK_EVERY;
    let longest_gap = INTERVAL.mul_f64(1.0 + PollPolicy::with_interval(INTERVAL).jitter);

    // The first poll fetches the plan, decides and pulls.
    let (first, not_modified) = next_get(&mut gets).await;
    assert!(!not_modified);
    let (_, not_modified) = next_get(&mut gets).await;
    assert!(not_modified, "the second GET is conditional");
    assert_eq!(engine.pulls_of(APP_1), 1);
    assert_eq!(
        engine.inspect_count(),
        0,
        "nothing was warm at the first poll"
    );

    // Unchanged and warm: the polls end after the GET.
    let (removed_at, _) = next_get(&mut gets).await;
    assert_eq!(
        engine.inspect_count(),
        0,
        "the poll of an unchanged plan inspected the engine"
    );
    engine.remove(APP_1);
    let mut polls: u64 = 3;
    // A poll may have run on by the time its GET is seen: what is checked
    // at a GET covers that poll too.
    loop {
        let (at, not_modified) = next_get(&mut gets).await;
        polls += 1;
        assert!(not_modified);
        if at - first < check_every {
            // Within the check period of the first poll: only the plan
            // was read.
            assert_eq!(
                engine.inspect_count(),
                0,
                "inspected {:?} after the full poll",
                at - first
            );
            assert_eq!(engine.pulls_of(APP_1), 1);
        } else {
            // The first poll due to check the engine: by the next GET it
            // has found the image gone and pulled it again.
            next_get(&mut gets).await;
            polls += 1;
            assert_eq!(engine.inspect_count(), 1);
            assert_eq!(
                engine.pulls_of(APP_1),
                2,
                "the removed image was not pulled again by the periodic check"
            );
            assert!(
                at - removed_at <= check_every + longest_gap,
                "pulled again {:?} after the removal",
                at - removed_at
            );
            break;
        }
    }
    let view = agent.following(|view| view.to_json(&agent));
    assert!(
        view["polls"]
            .as_u64()
            .is_some_and(|counted| counted >= polls - 1),
        "every poll counts ({polls} started): {view}"
    );
    assert_eq!(view["last_error"], Value::Null, "{view}");
    assert_eq!(view["plan_source"]["etag"], "\"v1\"", "{view}");
    assert_eq!(state_of(&view, APP_1).as_deref(), Some("warm"), "{view}");

    // A new version is acted on at once, in the check period.
    publish(&object, 2).await;
    let (_, not_modified) = next_get(&mut gets).await;
    assert!(!not_modified, "the new version is fetched");
    next_get(&mut gets).await;
    assert_eq!(engine.pulls_of(APP_2), 1, "the new plan's image is pulled");
    let view = agent.following(|view| view.to_json(&agent));
    assert_eq!(view["plan_source"]["etag"], "\"v2\"", "{view}");
    assert_eq!(state_of(&view, APP_2).as_deref(), Some("warm"), "{view}");
}
