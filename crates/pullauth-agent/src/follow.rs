//! `serve` following the cluster: polls ECS on the [`Schedule`] of
//! `pullauth-poll` (start-up spread, jitter, backoff on throttling and
//! failures), and pulls the images of every task definition the followed
//! services name, through the agent's pull queue
//! ([`Agent::prefetch_image`]). Task definitions are cached by ARN in
//! `pullauth-aws`, so a quiet cluster costs only the list and describe
//! calls of its services.
//!
//! While ECS cannot be read, the last good view stays (and is served by
//! `GET /v1/prefetch`) with the error beside it. A reload that changes the
//! cluster, the filters or the interval starts a new schedule, whose first
//! poll is spread as at start-up (a fleet reloads together); another
//! cluster's images are forgotten at once.
//!
//! An image marked warm is checked on every poll with one bounded inspect
//! per distinct reference ([`Agent::engine_has`]); one that was removed
//! from the engine (`docker image prune`, an operator) is pulled again.
//!
//! A follower of a published plan (`serve --follow-plan`) polls often (30 s
//! by default) and the plan seldom changes: when its conditional GET
//! answers that the plan it last acted on is unchanged, and that poll left
//! nothing to do (every image warm or being pulled), the poll ends there
//! ([`Read::Unchanged`]: the plan's age and staleness are still updated).
//! The full poll (deciding the plan again, checking the engine, retrying,
//! removing) still runs at least every [`ENGINE_CHECK_EVERY`], so an image
//! removed behind the agent's back is pulled again within that time.
//!
//! The loop reads the plan through [`ClusterSource`] ([`Ecs`], the real
//! one, by default) and pulls through the agent, whose engine is behind the
//! [`crate::Puller`] seam: tests drive the whole loop in paused time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use pullauth_aws::{AwsError, ErrorClass, S3Location};
pub use pullauth_poll::PollPolicy;
use pullauth_poll::{PollOutcome, Schedule};
use pullauth_store::model::now_rfc3339;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::Agent;
use crate::prefetch::{self, Filters, Plan};
use crate::shared_plan::{self, PlanOrigin, PlanReader, PlanStore, Published};
use pullauth_config::EcsAgentSettings;
use pullauth_config::ecs_agent::WarnedOnce;
use pullauth_docker::Removal;
use pullauth_ecs::{Host, SkipReason};
use pullauth_resolve::ImageRef;

/// How many engine inspects one poll runs at once to check that the images
/// it believes warm are still there.
pub const PRESENCE_CHECKS_AT_ONCE: usize = 4;

/// The longest a follower of an unchanged published plan goes without a
/// full poll: deciding the plan again and checking with the engine that
/// the images it believes warm are still there (one inspect each). Between
/// full polls, a poll whose plan did not change (`304`) and which has
/// nothing to pull ends after the GET. So an image removed from the engine
/// behind the agent's back is pulled again within this time (plus one
/// interval), instead of within one interval; a follower of the cluster
/// itself does the full poll every time. Five minutes: the publisher's
/// confirmation period ([`shared_plan::CONFIRM_EVERY`]), ten polls at the
/// default 30 s `--plan-interval`.
pub const ENGINE_CHECK_EVERY: Duration = Duration::from_secs(5 * 60);

/// What one read of a [`ClusterSource`] found.
#[derive(Debug)]
pub enum Read {
    /// The plan, decided now.
    Plan(Plan),
    /// The published plan the follower last acted on, unchanged (the same
    /// ETag): not decided again. Where it stands now (its age, whether it
    /// is stale).
    Unchanged(PlanOrigin),
}

/// Where the follower reads what a cluster needs.
pub trait ClusterSource: Send + Sync + 'static {
    /// What `config`'s cluster (its services narrowed and extended by its
    /// filters) needs on `host` now, read as `config.source` says; fails as
    /// [`prefetch::plan`] does. `acted_on` is the ETag of the published
    /// plan the follower last acted on in full, when it has nothing left
    /// to do with it: a source that finds that plan unchanged may answer
    /// [`Read::Unchanged`] instead of deciding it again.
    fn read<'a>(
        &'a self,
        agent: &'a Agent,
        config: &'a FollowConfig,
        host: &'a Host,
        acted_on: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Read, AwsError>>;

    /// What is known about this instance (the engine's platform, IMDS,
    /// the container instance's attributes when the ECS agent at
    /// `config.ecs_agent_uri` is registered); see [`prefetch::host_facts`].
    fn host<'a>(
        &'a self,
        agent: &'a Agent,
        config: &'a FollowConfig,
    ) -> BoxFuture<'a, (Host, Vec<String>)>;

    /// Told after each successful poll what the plan of `cluster` names
    /// (task-definition ARNs, services), so caches keep only that.
    fn retain(&self, _agent: &Agent, _cluster: &str, _plan: &Plan) {}
}

/// The real source: ECS, read with the agent's AWS client (paced,
/// bounded, task definitions cached by ARN), or the cluster plan a
/// publisher keeps in S3 ([`crate::shared_plan`]).
#[derive(Default)]
pub struct Ecs {
    plans: PlanReader,
    /// Where plans are kept; `None`: S3 through the agent's AWS client.
    store: Option<Arc<dyn PlanStore>>,
    /// Whether the followed plan was stale at the last read (said once
    /// per change).
    stale: AtomicBool,
}

impl std::fmt::Debug for Ecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ecs")
            .field("plans", &self.plans)
            .field("store", &self.store.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl Ecs {
    /// Reads and writes cluster plans in `store` instead of S3.
    pub fn with_plan_store(store: Arc<dyn PlanStore>) -> Ecs {
        Ecs {
            store: Some(store),
            ..Ecs::default()
        }
    }

    /// Reads the cluster from ECS and decides; with `publish`, writes what
    /// was read (the whole cluster, whatever the filters) to S3 as well.
    async fn read_cluster(
        &self,
        agent: &Agent,
        store: &dyn PlanStore,
        config: &FollowConfig,
        host: &Host,
        publish: Option<&S3Location>,
    ) -> Result<Plan, AwsError> {
        let aws = agent.provider().aws().await;
        let read_at = SystemTime::now();
        let view = match publish {
            Some(_) => prefetch::read(aws, &config.cluster, &Filters::default()).await?,
            None => prefetch::read(aws, &config.cluster, &config.filters).await?,
        };
        let mut plan = prefetch::decide_plan(&view, &config.filters, host);
        if let Some(location) = publish {
            let publisher = shared_plan::publisher_name(host);
            let result = shared_plan::publish(
                store,
                location,
                &view,
                read_at,
                &publisher,
                SystemTime::now(),
            )
            .await;
            let mut origin = PlanOrigin::at(location);
            match result {
                Ok(published) => {
                    agent.metrics().plan_published(published.outcome());
                    tracing::debug!(%location, outcome = published.outcome(), "cluster plan published");
                    if let Published::Newer { read_at, publisher } = &published {
                        tracing::info!(%location, newer_read_at = %read_at, by = %publisher, "a newer cluster plan is there; not replaced");
                    }
                    origin.published = Some(published.outcome());
                }
                Err(error) => {
                    agent.metrics().plan_published("failed");
                    tracing::warn!(%location, error = %error, "cannot publish the cluster plan");
                    origin.publish_error = Some(error.to_string());
                }
            }
            plan.origin = Some(origin);
        }
        Ok(plan)
    }

    /// Reads the published plan at `location` and decides; a stale or
    /// missing plan reads ECS instead when `fallback` is set. The plan
    /// `acted_on` (its ETag), found unchanged and not stale-with-fallback,
    /// is not decided again.
    async fn read_plan(
        &self,
        agent: &Agent,
        store: &dyn PlanStore,
        config: &FollowConfig,
        host: &Host,
        (location, max_age, fallback): (&S3Location, Duration, bool),
        acted_on: Option<&str>,
    ) -> Result<Read, AwsError> {
        let held = match self.plans.read(store, location, &config.cluster).await {
            Ok(held) => held,
            Err(error) if fallback && error.class() == ErrorClass::NotFound => {
                tracing::warn!(%location, error = %error, "no cluster plan; reading ECS directly (plan fallback)");
                let mut plan = self.read_cluster(agent, store, config, host, None).await?;
                let mut origin = PlanOrigin::at(location);
                origin.fell_back = true;
                plan.origin = Some(origin);
                return Ok(Read::Plan(plan));
            }
            Err(error) => return Err(error),
        };
        let age = shared_plan::age(&held.document, SystemTime::now());
        agent
            .metrics()
            .prefetch_plan_age_seconds
            .set(age.map_or(i64::MAX, |a| i64::try_from(a.as_secs()).unwrap_or(i64::MAX)));
        let stale = age.is_none_or(|age| age > max_age);
        let document = &held.document;
        if stale != self.stale.swap(stale, Ordering::Relaxed) {
            if stale {
                tracing::warn!(
                    %location,
                    age = %shared_plan::describe_age(age),
                    publisher = %document.publisher,
                    checked_at = %document.checked_at,
                    max_age = ?max_age,
                    fallback,
                    "the cluster plan is stale: its publisher has not confirmed it for longer than the plan's maximum age (is it running?)"
                );
            } else {
                tracing::info!(%location, publisher = %document.publisher, "the cluster plan is current again");
            }
        }
        let mut origin = PlanOrigin::of(location, &held, age, stale);
        let mut plan = if stale && fallback {
            origin.fell_back = true;
            self.read_cluster(agent, store, config, host, None).await?
        } else if acted_on == Some(held.etag.as_str()) {
            return Ok(Read::Unchanged(origin));
        } else {
            prefetch::decide_plan(&document.view, &config.filters, host)
        };
        plan.origin = Some(origin);
        Ok(Read::Plan(plan))
    }
}

impl ClusterSource for Ecs {
    fn read<'a>(
        &'a self,
        agent: &'a Agent,
        config: &'a FollowConfig,
        host: &'a Host,
        acted_on: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Read, AwsError>> {
        async move {
            let store: &dyn PlanStore = match &self.store {
                Some(store) => store.as_ref(),
                None => agent.provider().aws().await,
            };
            match &config.source {
                FollowSource::Cluster { publish } => {
                    self.plans.clear();
                    self.read_cluster(agent, store, config, host, publish.as_ref())
                        .await
                        .map(Read::Plan)
                }
                FollowSource::Plan {
                    location,
                    max_age,
                    fallback,
                } => {
                    self.read_plan(
                        agent,
                        store,
                        config,
                        host,
                        (location, *max_age, *fallback),
                        acted_on,
                    )
                    .await
                }
            }
        }
        .boxed()
    }

    fn host<'a>(
        &'a self,
        agent: &'a Agent,
        config: &'a FollowConfig,
    ) -> BoxFuture<'a, (Host, Vec<String>)> {
        async move {
            let platform = agent.engine_platform().await.map_err(|e| e.to_string());
            let aws = agent.provider().aws().await;
            // A follower of a published plan makes no ECS call at all (its
            // cost must not grow with the fleet): its container instance is
            // not described. memberOf is decided on the custom attributes
            // of ECS_INSTANCE_ATTRIBUTES; on any other, it is not (the
            // images are pulled, with a note).
            let ecs_agent = config
                .ecs_agent_uri
                .as_deref()
                .filter(|_| matches!(config.source, FollowSource::Cluster { .. }))
                .map(|uri| (config.cluster.as_str(), uri));
            let none = BTreeMap::new();
            let custom = config
                .ecs_agent
                .as_ref()
                .map_or(&none, |settings| &settings.instance_attributes.value);
            prefetch::host_facts(platform, Some(aws), custom, ecs_agent).await
        }
        .boxed()
    }

    fn retain(&self, agent: &Agent, cluster: &str, plan: &Plan) {
        if let Some(aws) = agent.provider().aws_if_built() {
            let arns = &plan.task_definition_arns;
            aws.ecs_retain_revisions(arns, cluster, plan.services_read.iter());
            let kept = aws.ecs_retain_task_definitions(arns);
            tracing::debug!(kept, "task definitions cached after the poll");
        }
    }
}

/// What the follower follows; `None` in [`Follower::update`] stops it.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowConfig {
    pub cluster: String,
    pub filters: Filters,
    pub policy: PollPolicy,
    /// Removes an image prefetch pulled once no followed service,
    /// deployment or task set has named it for this long (and no container
    /// uses it); `None`: never.
    pub remove_after: Option<Duration>,
    /// While the images prefetch pulled take this many bytes or more,
    /// further prefetch pulls are skipped (reason `disk-guard`); `None`:
    /// no guard.
    pub disk_budget: Option<u64>,
    /// The local ECS agent's introspection API (`GET /v1/metadata` names
    /// the container instance); `None`: not asked.
    pub ecs_agent_uri: Option<String>,
    /// The ECS agent's image settings from the same configuration: each
    /// combination that makes prefetch useless or loop with its cleanup is
    /// warned about once, naming the images its exclusion list misses.
    pub ecs_agent: Option<EcsAgentSettings>,
    /// Where the cluster is read: ECS itself, or a published plan.
    pub source: FollowSource,
}

/// Where a follower reads its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowSource {
    /// ECS itself; with `publish`, what is read is also written there as
    /// the cluster plan (`serve --follow-cluster --publish`).
    Cluster { publish: Option<S3Location> },
    /// The plan a publisher keeps at `location` (`serve --follow-plan`),
    /// read with conditional GETs. A plan not confirmed for `max_age` is
    /// stale: still used, and said; with `fallback`, ECS is read instead
    /// while the plan is stale or missing.
    Plan {
        location: S3Location,
        max_age: Duration,
        fallback: bool,
    },
}

impl Default for FollowSource {
    fn default() -> FollowSource {
        FollowSource::Cluster { publish: None }
    }
}

/// One distinct pull: (reference sent to the engine, source label, role).
type PullKey = (String, String, Option<String>);

/// Where a prefetched image stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageState {
    Pulling,
    /// In the engine's cache (pulled, or found there).
    Warm {
        username: Option<String>,
        image_id: String,
        /// The deployments and task sets that named it when it was pulled.
        deployments: BTreeSet<String>,
    },
    Failed {
        error: String,
    },
    /// Removed from the engine again and again after it was pulled: pulled
    /// again only at `retry_at` (backing off), so that pullauth and
    /// whatever removes it do not loop.
    Removed {
        times: u32,
        retry_at: tokio::time::Instant,
    },
    /// Not pulled: the images prefetch pulled already take `used` bytes of
    /// the `budget` (the disk guard).
    Guarded {
        used: u64,
        budget: u64,
    },
}

/// The first pause before pulling again an image that keeps disappearing
/// (the second removal); it doubles with every further removal.
pub const REMOVED_BACKOFF_FIRST: Duration = Duration::from_secs(15 * 60);
/// The longest such pause.
pub const REMOVED_BACKOFF_MAX: Duration = Duration::from_secs(24 * 3600);

/// Why a prefetched image keeps disappearing, most likely; said in the log
/// and in `GET /v1/prefetch`.
pub const REMOVED_CAUSE: &str = "something removes this image from the engine after pullauth pulls it: most likely the ECS agent's untracked image cleanup (ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true without the image in ECS_EXCLUDE_UNTRACKED_IMAGE), or a scheduled prune; pulling it again is backed off";

/// The pause before pulling again an image removed `times` times.
fn removed_backoff(times: u32) -> Duration {
    let doublings = times.saturating_sub(2).min(16);
    REMOVED_BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(REMOVED_BACKOFF_MAX)
}

/// What the follower knows, as `GET /v1/prefetch` shows it.
#[derive(Debug, Default)]
pub struct View {
    config: Option<FollowConfig>,
    polls: u64,
    last_poll: Option<String>,
    last_success: Option<String>,
    /// The error of the last poll, if it failed (the plan is then older).
    last_error: Option<String>,
    /// The last plan read successfully.
    plan: Option<Plan>,
    images: HashMap<PullKey, ImageState>,
    /// How often each reference was found removed after a pull (kept while
    /// the plan names it).
    removals: HashMap<String, u32>,
    /// Prefetched references the plan stopped naming, and since when.
    unnamed: HashMap<String, tokio::time::Instant>,
}

/// The published plan the follower last acted on in full (one schedule's
/// state: a new configuration starts without it).
#[derive(Debug)]
struct ActedOn {
    /// The plan's ETag.
    etag: String,
    /// When that full poll checked the engine.
    at: tokio::time::Instant,
}

/// The handle of the running follower.
#[derive(Debug)]
pub struct Follower {
    config: watch::Sender<Option<FollowConfig>>,
}

impl Follower {
    /// Starts following with `config` (or idles until one is given);
    /// `seed` seeds the schedule's jitter (tests fix it).
    pub fn start(agent: Agent, config: Option<FollowConfig>, seed: u64) -> Follower {
        Follower::start_with(agent, Arc::new(Ecs::default()), config, seed)
    }

    /// [`Follower::start`] reading the cluster from `source`.
    pub fn start_with(
        agent: Agent,
        source: Arc<dyn ClusterSource>,
        config: Option<FollowConfig>,
        seed: u64,
    ) -> Follower {
        let (tx, rx) = watch::channel(config);
        tokio::spawn(run(agent, source, rx, seed));
        Follower { config: tx }
    }

    /// Applies a reloaded configuration: a change polls at once with it;
    /// the same configuration changes nothing.
    pub fn update(&self, config: Option<FollowConfig>) {
        self.config.send_if_modified(|current| {
            if *current == config {
                return false;
            }
            *current = config;
            true
        });
    }
}

async fn run(
    agent: Agent,
    source: Arc<dyn ClusterSource>,
    mut config: watch::Receiver<Option<FollowConfig>>,
    seed: u64,
) {
    // Set when the configuration changed (logged; the new schedule starts
    // with its spread first poll).
    let mut changed = false;
    // The ECS agent's settings are warned about once for the process.
    let mut warned = WarnedOnce::default();
    loop {
        let current = config.borrow_and_update().clone();
        agent.following(|view| {
            if view.config.as_ref().map(|c| &c.cluster) != current.as_ref().map(|c| &c.cluster) {
                view.plan = None;
                view.last_error = None;
                view.images.clear();
            }
            view.config = current.clone();
        });
        let Some(current) = current else {
            tracing::info!("not following the cluster's services");
            if config.changed().await.is_err() {
                return;
            }
            changed = true;
            continue;
        };
        let mut schedule = Schedule::new(current.policy.clone(), seed);
        // A reload reaches every instance of a fleet at once (a config
        // management run, a new AMI): its first poll is spread like the
        // start-up poll, never at once on all of them.
        let mut delay = schedule.first_delay();
        let (mut host, notes) = source.host(&agent, &current).await;
        for note in &notes {
            tracing::warn!(cluster = %current.cluster, "placement: {note}");
        }
        tracing::info!(
            cluster = %current.cluster,
            services = ?current.filters.services,
            task_definitions = ?current.filters.task_definitions,
            interval = ?current.policy.interval,
            first_poll_in = ?delay,
            reload = changed,
            "following the cluster's services"
        );
        let mut acted_on = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                result = config.changed() => {
                    if result.is_err() {
                        return;
                    }
                    changed = true;
                    break;
                }
            }
            // Until the container instance is known (the ECS agent
            // registers after a boot prefetch), the facts are read again
            // before each poll; the notes were said once.
            if !host.facts.complete
                && current.ecs_agent_uri.is_some()
                && matches!(current.source, FollowSource::Cluster { .. })
            {
                host = source.host(&agent, &current).await.0;
            }
            let outcome = poll(
                &agent,
                source.as_ref(),
                &current,
                &host,
                &mut warned,
                &mut acted_on,
            )
            .await;
            delay = schedule.next_delay(outcome);
            tracing::debug!(next_poll_in = ?delay, "next poll of the cluster");
        }
    }
}

/// One poll: read the plan, keep it (or the error beside the last good
/// one), and start the pulls that are neither warm nor in flight, and
/// again those of warm images that the engine no longer has. A published
/// plan found unchanged since the full poll `acted_on` (which left nothing
/// to do) ends the poll after the read, until [`ENGINE_CHECK_EVERY`] has
/// passed since that full poll.
async fn poll(
    agent: &Agent,
    source: &dyn ClusterSource,
    config: &FollowConfig,
    host: &Host,
    warned: &mut WarnedOnce,
    acted_on: &mut Option<ActedOn>,
) -> PollOutcome {
    let metrics = agent.metrics();
    metrics.prefetch_polls.inc();
    let started = tokio::time::Instant::now();
    let unchanged_is_enough = acted_on
        .as_ref()
        .filter(|acted| started.duration_since(acted.at) < ENGINE_CHECK_EVERY)
        .filter(|_| agent.following(|view| view.settled(started)))
        .map(|acted| acted.etag.as_str());
    let result = source.read(agent, config, host, unchanged_is_enough).await;
    let now = now_rfc3339();
    let plan = match result {
        Ok(Read::Plan(plan)) => plan,
        Ok(Read::Unchanged(origin)) => {
            tracing::debug!(cluster = %config.cluster, etag = ?origin.etag, "the cluster plan is unchanged and every image it names is warm or being pulled");
            agent.following(|view| {
                view.polls += 1;
                view.last_poll = Some(now.clone());
                view.last_success = Some(now);
                view.last_error = None;
                if let Some(plan) = &mut view.plan {
                    plan.origin = Some(origin);
                }
            });
            return PollOutcome::Ok;
        }
        Err(error) => {
            let class = error.class();
            metrics.prefetch_poll_failed(class.name());
            tracing::warn!(cluster = %config.cluster, class = class.name(), error = %error, "cannot read the cluster's services; keeping the last good view");
            agent.following(|view| {
                view.polls += 1;
                view.last_poll = Some(now);
                view.last_error = Some(error.to_string());
            });
            return if class == ErrorClass::Throttled {
                metrics.prefetch_throttles.inc();
                PollOutcome::Throttled
            } else {
                PollOutcome::Failed
            };
        }
    };
    for problem in &plan.problems {
        tracing::warn!(cluster = %config.cluster, "cannot prefetch: {problem}");
    }
    for warning in &plan.warnings {
        tracing::warn!(cluster = %config.cluster, "{warning}");
    }
    let settings = agent.settings();
    let ecr = agent.provider().ecr_enabled();
    let pulls = prefetch::pulls(&plan.wanted, &settings.table, ecr);
    if let Some(settings) = &config.ecs_agent {
        let names = prefetch::listed_names(&pulls);
        for warning in warned.fresh(settings.warnings(Some(&names))) {
            tracing::warn!(code = warning.code(), "{warning}");
        }
    }
    let complete = plan.problems.is_empty();
    // The published plan this poll acts on, if it was read from one (not
    // fallen back to ECS).
    let decided_from = plan
        .origin
        .as_ref()
        .filter(|origin| !origin.fell_back)
        .and_then(|origin| origin.etag.clone());
    let (gone, engine_answered) = removed_from_engine(agent, &pulls).await;
    // An engine that could not say is asked again at the next poll.
    *acted_on = decided_from
        .filter(|_| engine_answered)
        .map(|etag| ActedOn { etag, at: started });
    source.retain(agent, &config.cluster, &plan);
    // Every name a pull leaves in the engine: the pulled reference and the
    // task's own when pinned by digest.
    let named: HashSet<String> = pulls
        .iter()
        .flat_map(|p| {
            std::iter::once(p.image.pull_reference())
                .chain(p.first.tag_as().map(ImageRef::pull_reference))
        })
        .collect();
    // The guard sizes the prefetched images (one inspect each) only when
    // this poll may start a pull: something not warm, or gone.
    let may_pull = !gone.is_empty()
        || agent.following(|view| {
            pulls.iter().any(|p| {
                !matches!(
                    view.images.get(&key_of(p)),
                    Some(ImageState::Warm { .. } | ImageState::Pulling)
                )
            })
        });
    let guard = match config.disk_budget {
        Some(budget) if may_pull => {
            let used = prefetched_bytes(agent).await;
            (used >= budget).then_some((used, budget))
        }
        _ => None,
    };
    if let Some((used, budget)) = guard {
        tracing::warn!(
            used,
            budget,
            "the images prefetch pulled reach the disk budget (PULLAUTH_PREFETCH_DISK_BUDGET_MIB); new prefetch pulls are skipped"
        );
    }
    let mut start = Vec::new();
    agent.following(|view| {
        view.polls += 1;
        view.last_poll = Some(now.clone());
        view.last_success = Some(now);
        view.last_error = None;
        // The view keeps what the plan names: an image no longer named
        // (an old revision, another cluster's) is forgotten.
        let named: HashSet<PullKey> = pulls.iter().map(key_of).collect();
        view.images.retain(|key, _| named.contains(key));
        view.removals
            .retain(|reference, _| named.iter().any(|key| &key.0 == reference));
        let now = tokio::time::Instant::now();
        for pull in pulls {
            let key = key_of(&pull);
            if gone.contains(&key.0)
                && matches!(view.images.get(&key), Some(ImageState::Warm { .. }))
            {
                agent.metrics().prefetch_images_removed.inc();
                let times = view.removals.entry(key.0.clone()).or_default();
                *times += 1;
                let times = *times;
                if times >= 2 {
                    let pause = removed_backoff(times);
                    tracing::warn!(image = %key.0, times, next_pull_in = ?pause, "{REMOVED_CAUSE}");
                    view.images.insert(
                        key.clone(),
                        ImageState::Removed {
                            times,
                            retry_at: now + pause,
                        },
                    );
                }
            }
            match view.images.get(&key) {
                Some(ImageState::Pulling) => {}
                Some(ImageState::Removed { retry_at, .. }) if now < *retry_at => {}
                // A tag stays warm until a deployment or task set it was
                // not pulled for names it: ECS's new tasks would pull it
                // again, so the follower does (a manifest check when the
                // tag did not move). A digest names its content for ever.
                Some(ImageState::Warm { deployments, .. })
                    if !gone.contains(&key.0)
                        && (pull.image.digest.is_some()
                            || pull.deployments.is_subset(deployments)) => {}
                // Over the disk budget, what is not warm is not pulled.
                _ if guard.is_some() => {
                    if let Some((used, budget)) = guard {
                        view.images
                            .insert(key, ImageState::Guarded { used, budget });
                    }
                }
                _ => {
                    view.images.insert(key.clone(), ImageState::Pulling);
                    start.push((key, pull));
                }
            }
        }
        view.plan = Some(plan);
    });
    for (key, pull) in start {
        let agent = agent.clone();
        tokio::spawn(async move {
            agent.metrics().prefetch_pulls.inc();
            tracing::info!(image = %pull.first.image, digest = ?pull.first.digest, source = %pull.source, task_definitions = ?pull.task_definitions, "prefetching");
            let state = match pull.first.role() {
                Err(e) => ImageState::Failed {
                    error: format!("executionRoleArn: {e}"),
                },
                Ok(role) => {
                    let pull_image = pull.image.clone();
                    let (with, result) = agent
                        .prefetch_image(
                            pull_image.clone(),
                            pull.first.secret.as_deref(),
                            role.as_ref(),
                        )
                        .await;
                    match result {
                        Ok(obtained) => match pull.first.tag_as() {
                            // Pulled by the digest ECS pinned: tagged with
                            // the task's reference, as the ECS agent does.
                            Some(target) => {
                                match agent
                                    .tag_image(
                                        &pull_image.pull_reference(),
                                        target,
                                        &obtained.image_id,
                                        with.clone(),
                                    )
                                    .await
                                {
                                    Ok(()) => ImageState::Warm {
                                        username: with.username,
                                        image_id: obtained.image_id,
                                        deployments: pull.deployments.clone(),
                                    },
                                    Err(e) => ImageState::Failed {
                                        error: format!("pulled, but tagging it {target}: {e}"),
                                    },
                                }
                            }
                            None => ImageState::Warm {
                                username: with.username,
                                image_id: obtained.image_id,
                                deployments: pull.deployments.clone(),
                            },
                        },
                        Err(error) => ImageState::Failed { error },
                    }
                }
            };
            if let ImageState::Failed { error } = &state {
                agent.metrics().prefetch_pull_failures.inc();
                tracing::warn!(image = %pull.first.image, error = %error, "prefetch failed; the next poll tries again");
            }
            agent.following(|view| view.images.insert(key, state));
        });
    }
    // Only a complete plan says what is no longer named: a task definition
    // that could not be described this poll (throttled, denied) names its
    // images still, for all this poll can tell.
    match config.remove_after {
        Some(after) if complete => remove_unnamed(agent, &named, after).await,
        Some(_) => {
            tracing::debug!("the plan has problems; no prefetched image is removed this poll");
        }
        None => {}
    }
    PollOutcome::Ok
}

/// The bytes the images prefetch pulled take in the engine (one bounded
/// inspect each, a few at once); an image the engine cannot size counts 0.
async fn prefetched_bytes(agent: &Agent) -> u64 {
    let references = match agent.prefetched_images().await {
        Ok(references) => references,
        Err(error) => {
            tracing::warn!(error = %error, "cannot read which images prefetch pulled; the disk guard counts none");
            return 0;
        }
    };
    futures_util::stream::iter(references)
        .map(|reference| async move {
            agent
                .image_size(&reference)
                .await
                .ok()
                .flatten()
                .unwrap_or(0)
        })
        .buffer_unordered(PRESENCE_CHECKS_AT_ONCE)
        .fold(0u64, |sum, size| async move { sum.saturating_add(size) })
        .await
}

/// Removes the images prefetch pulled that no pull of the plan has named
/// for `after`: never one a task used (the store's mark is cleared then),
/// never a name that points at another image now, never one a container
/// uses (the engine refuses).
async fn remove_unnamed(agent: &Agent, named: &HashSet<String>, after: Duration) {
    let prefetched = match agent.prefetched_images().await {
        Ok(references) => references,
        Err(error) => {
            tracing::warn!(error = %error, "cannot read which images prefetch pulled; none is removed this poll");
            return;
        }
    };
    let now = tokio::time::Instant::now();
    let due: Vec<String> = agent.following(|view| {
        view.unnamed
            .retain(|reference, _| prefetched.contains(reference) && !named.contains(reference));
        prefetched
            .iter()
            .filter(|reference| !named.contains(*reference))
            .filter(|reference| {
                let since = *view.unnamed.entry((*reference).clone()).or_insert(now);
                now.duration_since(since) >= after
            })
            .cloned()
            .collect()
    });
    for reference in due {
        match agent.remove_prefetched(&reference).await {
            Ok(Removal::InUse) => {
                tracing::debug!(image = %reference, "a prefetched image nothing names is used by a container; kept");
            }
            Ok(removal) => {
                agent.metrics().prefetch_images_cleaned.inc();
                tracing::info!(image = %reference, ?removal, "removed a prefetched image no followed service names any more");
                agent.following(|view| view.unnamed.remove(&reference));
            }
            Err(error) => {
                tracing::warn!(image = %reference, error = %error, "cannot remove a prefetched image nothing names; the next poll tries again");
            }
        }
    }
}

/// The references of `pulls` believed warm that the engine no longer has:
/// one bounded inspect per distinct reference, a few at once; and whether
/// the engine answered every inspect. An engine that cannot answer leaves
/// the images warm (a pull would fail as well): after its first failed
/// inspect no more are started this poll (a wedged engine would otherwise
/// cost the engine-call timeout per image), and one warning says so.
async fn removed_from_engine(agent: &Agent, pulls: &[prefetch::Pull]) -> (BTreeSet<String>, bool) {
    let warm: BTreeSet<String> = agent.following(|view| {
        pulls
            .iter()
            .map(key_of)
            .filter(|key| matches!(view.images.get(key), Some(ImageState::Warm { .. })))
            .map(|key| key.0)
            .collect()
    });
    let engine_failed = AtomicBool::new(false);
    let failed = &engine_failed;
    let gone = futures_util::stream::iter(warm)
        .map(|reference| async move {
            if failed.load(Ordering::Relaxed) {
                return None;
            }
            match agent.engine_has(&reference).await {
                Ok(true) => None,
                Ok(false) => {
                    tracing::info!(image = %reference, "a prefetched image is no longer in the engine");
                    Some(reference)
                }
                Err(error) => {
                    if !failed.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %error, "cannot tell whether the prefetched images are still in the engine; they stay warm until the next poll checks again");
                    }
                    None
                }
            }
        })
        .buffer_unordered(PRESENCE_CHECKS_AT_ONCE)
        .filter_map(std::future::ready)
        .collect()
        .await;
    (gone, !engine_failed.load(Ordering::Relaxed))
}

fn key_of(pull: &prefetch::Pull) -> PullKey {
    (
        pull.image.pull_reference(),
        pull.source.clone(),
        pull.role.clone(),
    )
}

impl View {
    /// How many images the view keeps a state for (bounded by what the
    /// current plan names).
    pub fn images_tracked(&self) -> usize {
        self.images.len()
    }

    /// Whether the last full poll left nothing to do at `now`: a plan is
    /// held and every image it names is warm, being pulled, or removed
    /// and backing off (so the same plan would start no pull).
    fn settled(&self, now: tokio::time::Instant) -> bool {
        self.plan.is_some()
            && self.images.values().all(|state| match state {
                ImageState::Warm { .. } | ImageState::Pulling => true,
                ImageState::Removed { retry_at, .. } => now < *retry_at,
                ImageState::Failed { .. } | ImageState::Guarded { .. } => false,
            })
    }

    /// The view as JSON: service -> task definition -> images with their
    /// source, state and last error. No secret: sources are labels,
    /// usernames are not secret, errors never quote a value.
    pub fn to_json(&self, agent: &Agent) -> Value {
        let Some(config) = &self.config else {
            return json!({"following": false});
        };
        let settings = agent.settings();
        let ecr = agent.provider().ecr_enabled();
        let mut by_td: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        let plan = self.plan.as_ref();
        for wanted in plan.map(|p| p.wanted.as_slice()).unwrap_or_default() {
            let pulls = prefetch::pulls(std::slice::from_ref(wanted), &settings.table, ecr);
            let Some(pull) = pulls.first() else { continue };
            let (state, username, error) = match self.images.get(&key_of(pull)) {
                Some(ImageState::Pulling) => ("pulling", None, None),
                Some(ImageState::Warm { username, .. }) => ("warm", username.clone(), None),
                Some(ImageState::Failed { error }) => ("failed", None, Some(error.clone())),
                Some(ImageState::Removed { times, .. }) => (
                    "removed",
                    None,
                    Some(format!(
                        "removed from the engine {times} times: {REMOVED_CAUSE}"
                    )),
                ),
                Some(ImageState::Guarded { used, budget }) => (
                    "skipped",
                    None,
                    Some(format!(
                        "disk-guard: the images prefetch pulled take {used} bytes of a budget of {budget} (PULLAUTH_PREFETCH_DISK_BUDGET_MIB)"
                    )),
                ),
                None => ("pending", None, None),
            };
            by_td
                .entry(&wanted.task_definition)
                .or_default()
                .push(json!({
                    "image": wanted.image.original,
                    "key": pull.key,
                    "source": pull.kind,
                    "from": pull.source,
                    "state": state,
                    "username": username,
                    "error": error,
                    "notes": wanted.notes,
                    "digest": wanted.digest,
                    "reason": matches!(
                        self.images.get(&key_of(pull)),
                        Some(ImageState::Guarded { .. })
                    )
                    .then_some(SkipReason::DiskGuard.code()),
                }));
        }
        let td_json = |name: &str| json!({"task_definition": name, "images": by_td.get(name).cloned().unwrap_or_default()});
        let services: Vec<Value> = plan
            .map(|p| {
                p.services
                    .iter()
                    .map(|(service, tds)| {
                        json!({
                            "service": service,
                            "task_definitions": tds.iter().map(|td| td_json(td)).collect::<Vec<_>>(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let extra: Vec<Value> = by_td
            .keys()
            .filter(|td| {
                !plan.is_some_and(|p| p.services.values().any(|tds| tds.iter().any(|t| t == *td)))
            })
            .map(|td| td_json(td))
            .collect();
        let problems: Vec<Value> = plan
            .map(|p| {
                p.problems
                    .iter()
                    .map(|problem| {
                        json!({
                            "services": problem.services,
                            "task_definition": problem.task_definition,
                            "image": problem.image,
                            "error": problem.error,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let skipped: Vec<Value> = plan
            .map(|p| {
                p.skipped
                    .iter()
                    .map(|skip| {
                        json!({
                            "services": skip.services,
                            "task_definition": skip.task_definition,
                            "image": skip.image,
                            "status": "skipped",
                            "reason": skip.reason.code(),
                            "detail": skip.detail,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "following": true,
            "cluster": config.cluster,
            "services_filter": config.filters.services,
            "task_definitions_filter": config.filters.task_definitions,
            "interval_seconds": config.policy.interval.as_secs_f64(),
            "polls": self.polls,
            "last_poll": self.last_poll,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "services": services,
            "task_definitions": extra,
            "skipped": skipped,
            "problems": problems,
            "plan_source": plan.and_then(|p| p.origin.as_ref()),
        })
    }
}
