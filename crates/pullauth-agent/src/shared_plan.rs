//! A cluster plan shared through S3: ECS read once per cluster, the result
//! fanned out to every instance.
//!
//! A publisher (`pullauth prefetch --publish`, `serve --follow-cluster
//! --publish`) reads the cluster ([`crate::prefetch::read`]) and writes the
//! [`ClusterView`] as a [`PlanDocument`] with [`publish`]; followers
//! (`prefetch --plan`, `serve --follow-plan`) read it with [`PlanReader`]
//! and decide locally what runs on their instance
//! ([`crate::prefetch::decide_plan`]).
//!
//! The rules that keep several publishers from undoing each other:
//! - a write happens only when the view changed, or to confirm an unchanged
//!   one every [`CONFIRM_EVERY`] (so followers can tell a dead publisher);
//! - every write is conditional on the object read just before (`If-Match`
//!   its ETag, or `If-None-Match: *` when there is none), so a plan written
//!   in between is re-read, never overwritten blindly;
//! - a plan whose ECS read started after this publisher's is never
//!   replaced: a publisher with an older view yields.
//!
//! Followers use conditional GETs (`If-None-Match` the ETag they hold): an
//! unchanged plan costs a bodiless `304`. A plan that cannot be used
//! (garbage, truncated, over [`MAX_PLAN_BYTES`], another schema, another
//! cluster's) is an error of the poll; the last good plan stays.
//!
//! [`MAX_PLAN_BYTES`]: pullauth_ecs::MAX_PLAN_BYTES

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use pullauth_aws::{Aws, AwsError, Call, PutCondition, S3Fetch, S3Location};
use pullauth_ecs::{ClusterView, PLAN_SCHEMA, PlanDocError, PlanDocument};
use pullauth_store::model::rfc3339_millis;

/// How often a publisher rewrites an unchanged plan to confirm it is
/// current (`checkedAt`): followers judge a publisher dead by this.
pub const CONFIRM_EVERY: Duration = Duration::from_secs(5 * 60);

/// How old a plan's confirmation may grow before followers call it stale
/// (three missed confirmations).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// How often `serve --follow-plan` asks S3 whether the plan changed (a
/// conditional GET; jittered by the schedule).
pub const DEFAULT_PLAN_INTERVAL: Duration = Duration::from_secs(30);

/// How many times [`publish`] re-reads the plan after losing a race to
/// another publisher's write.
const PUBLISH_ATTEMPTS: u32 = 3;

/// What a conditional GET found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The ETag asked with is still current (`304`).
    NotModified,
    /// No such key.
    Missing,
    Object {
        etag: String,
        body: Vec<u8>,
    },
}

/// The condition of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Only if the object is still this version (`If-Match`).
    IfMatch(String),
    /// Only if there is no object yet (`If-None-Match: *`).
    IfAbsent,
}

impl Fetched {
    /// What S3 answers a GET asked with `etag` when the object's current
    /// version is `current` (its ETag and body): the rule every stand-in
    /// for the plan's object (the simulation, the tests) answers by.
    pub fn from_current(current: Option<(&str, &[u8])>, etag: Option<&str>) -> Fetched {
        match current {
            None => Fetched::Missing,
            Some((now, _)) if Some(now) == etag => Fetched::NotModified,
            Some((now, body)) => Fetched::Object {
                etag: now.to_owned(),
                body: body.to_vec(),
            },
        }
    }
}

impl Condition {
    /// Whether S3 takes a write under this condition when the object's
    /// current ETag is `current` (`None`: no object).
    pub fn holds(&self, current: Option<&str>) -> bool {
        match (self, current) {
            (Condition::IfAbsent, None) => true,
            (Condition::IfMatch(want), Some(have)) => want == have,
            _ => false,
        }
    }
}

/// What a conditional write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Written {
        etag: String,
    },
    /// The condition failed: someone else wrote first.
    Conflict,
}

/// Where plans are kept: S3 through the agent's AWS client, in the agent;
/// the fleet simulation puts a model of S3 here.
pub trait PlanStore: Send + Sync {
    /// GetObject, with `If-None-Match: etag` when given; the body bounded
    /// by [`pullauth_ecs::MAX_PLAN_BYTES`] (one byte more is read, so an
    /// oversized plan is told apart).
    fn get<'a>(
        &'a self,
        location: &'a S3Location,
        etag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, AwsError>>;

    /// PutObject under `condition`.
    fn put<'a>(
        &'a self,
        location: &'a S3Location,
        body: Vec<u8>,
        condition: Condition,
    ) -> BoxFuture<'a, Result<Stored, AwsError>>;
}

/// S3, through the agent's AWS client (`aws-sdk-s3`: bounded attempts,
/// bodies bounded by [`pullauth_ecs::MAX_PLAN_BYTES`]).
impl PlanStore for Aws {
    fn get<'a>(
        &'a self,
        location: &'a S3Location,
        etag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, AwsError>> {
        async move {
            match self
                .s3_get_if_changed(location, etag, pullauth_ecs::MAX_PLAN_BYTES)
                .await
            {
                Ok(S3Fetch::NotModified) => Ok(Fetched::NotModified),
                Ok(S3Fetch::Object { etag, body, .. }) => Ok(Fetched::Object { etag, body }),
                // No such key (a deleted plan, or none yet); no such
                // bucket stays an error.
                Err(AwsError::NotFound { what, .. }) if what.starts_with("no such key") => {
                    Ok(Fetched::Missing)
                }
                Err(error) => Err(error),
            }
        }
        .boxed()
    }

    fn put<'a>(
        &'a self,
        location: &'a S3Location,
        body: Vec<u8>,
        condition: Condition,
    ) -> BoxFuture<'a, Result<Stored, AwsError>> {
        async move {
            let condition = match condition {
                Condition::IfMatch(etag) => PutCondition::IfMatch(etag),
                Condition::IfAbsent => PutCondition::IfNoneMatch,
            };
            match self
                .s3_put_if(location, body, condition, Some("application/json"))
                .await
            {
                Ok(etag) => Ok(Stored::Written { etag }),
                Err(error) if error.is_precondition_failed() => Ok(Stored::Conflict),
                Err(error) => Err(error),
            }
        }
        .boxed()
    }
}

/// What [`publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// The view changed (or there was no plan): written.
    Written { etag: String },
    /// The same view, confirmed (`checkedAt` renewed).
    Confirmed { etag: String },
    /// The same view, confirmed recently: nothing written.
    Unchanged,
    /// The plan there was read from ECS after this view: left alone.
    Newer { read_at: String, publisher: String },
}

impl Published {
    /// For logs and the `prefetch --publish` line.
    pub fn outcome(&self) -> &'static str {
        match self {
            Published::Written { .. } => "written",
            Published::Confirmed { .. } => "confirmed",
            Published::Unchanged => "unchanged",
            Published::Newer { .. } => "newer-plan-kept",
        }
    }
}

/// Why [`publish`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(
        "{location} holds the plan of cluster {found:?}, not {cluster:?}: not overwritten (publish each cluster to its own key)"
    )]
    Foreign {
        location: String,
        found: String,
        cluster: String,
    },
    #[error(
        "{location} holds a plan of schema {found:?} (a newer pullauth publishes there?); this build writes {PLAN_SCHEMA:?} and does not overwrite it"
    )]
    Schema { location: String, found: String },
    #[error(
        "{location}: other publishers kept writing between this one's read and write ({PUBLISH_ATTEMPTS} attempts); the next publish tries again"
    )]
    Contended { location: String },
}

/// Writes `view` (read from ECS starting at `read_at`) to `location`, if
/// it is new: see the module's rules. `now` stamps `checkedAt`.
pub async fn publish(
    store: &dyn PlanStore,
    location: &S3Location,
    view: &ClusterView,
    read_at: SystemTime,
    publisher: &str,
    now: SystemTime,
) -> Result<Published, PublishError> {
    let document = |read_at: SystemTime| PlanDocument {
        schema: PLAN_SCHEMA.to_owned(),
        cluster: view.cluster.clone(),
        read_at: rfc3339_millis(read_at),
        checked_at: rfc3339_millis(now),
        publisher: publisher.to_owned(),
        view: view.clone(),
    };
    for _ in 0..PUBLISH_ATTEMPTS {
        let condition = match store.get(location, None).await? {
            Fetched::Missing => Condition::IfAbsent,
            // Not asked with an ETag: a 304 cannot come; take it as gone.
            Fetched::NotModified => Condition::IfAbsent,
            Fetched::Object { etag, body } => match PlanDocument::parse(&body, &view.cluster) {
                Ok(current) => {
                    let current_read_at = parse_time(&current.read_at);
                    if current_read_at.is_some_and(|at| at > read_at) {
                        return Ok(Published::Newer {
                            read_at: current.read_at,
                            publisher: current.publisher,
                        });
                    }
                    if current.view == *view {
                        let confirmed = parse_time(&current.checked_at)
                            .and_then(|at| now.duration_since(at).ok());
                        if confirmed.is_some_and(|age| age < CONFIRM_EVERY) {
                            return Ok(Published::Unchanged);
                        }
                        // Confirm: the same view, the newer read time.
                        match store
                            .put(
                                location,
                                document(read_at).to_json(),
                                Condition::IfMatch(etag),
                            )
                            .await?
                        {
                            Stored::Written { etag } => return Ok(Published::Confirmed { etag }),
                            Stored::Conflict => continue,
                        }
                    }
                    Condition::IfMatch(etag)
                }
                Err(PlanDocError::Cluster { found, .. }) => {
                    return Err(PublishError::Foreign {
                        location: location.to_string(),
                        found,
                        cluster: view.cluster.clone(),
                    });
                }
                Err(PlanDocError::Schema { found }) if !found.is_empty() => {
                    return Err(PublishError::Schema {
                        location: location.to_string(),
                        found,
                    });
                }
                // Garbage, truncated, oversized: replaced, and said.
                Err(error) => {
                    tracing::warn!(%location, error = %error, "the plan there is unusable; replacing it");
                    Condition::IfMatch(etag)
                }
            },
        };
        match store
            .put(location, document(read_at).to_json(), condition)
            .await?
        {
            Stored::Written { etag } => return Ok(Published::Written { etag }),
            Stored::Conflict => continue,
        }
    }
    Err(PublishError::Contended {
        location: location.to_string(),
    })
}

/// Parses a plan's RFC 3339 time.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

/// A follower's copy of the plan: the last good document and its ETag.
#[derive(Debug, Default)]
pub struct PlanReader {
    last: Mutex<Option<(String, Arc<PlanDocument>)>>,
}

/// A plan as a follower holds it.
#[derive(Debug, Clone)]
pub struct Held {
    pub document: Arc<PlanDocument>,
    pub etag: String,
    /// Whether this read fetched a new version (else `304`).
    pub changed: bool,
}

impl PlanReader {
    /// The current plan of `cluster` at `location`: the held one when S3
    /// says it did not change, else the new one once it is found usable.
    /// An unusable plan fails, naming the bucket and key, and the held one
    /// stays for the next read.
    pub async fn read(
        &self,
        store: &dyn PlanStore,
        location: &S3Location,
        cluster: &str,
    ) -> Result<Held, AwsError> {
        let held = self.held();
        let etag = held.as_ref().map(|(etag, _)| etag.as_str());
        match store.get(location, etag).await? {
            Fetched::NotModified => match held {
                Some((etag, document)) => Ok(Held {
                    document,
                    etag,
                    changed: false,
                }),
                None => Err(bad(
                    location,
                    "answered 304 Not Modified to a read without an ETag".to_owned(),
                )),
            },
            Fetched::Missing => Err(AwsError::NotFound {
                call: get_call(location),
                what: format!(
                    "no plan at {location}: is its publisher running (pullauth prefetch --publish, serve --follow-cluster --publish)?"
                ),
            }),
            Fetched::Object { etag, body } => match PlanDocument::parse(&body, cluster) {
                Ok(document) => {
                    let document = Arc::new(document);
                    *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((etag.clone(), Arc::clone(&document)));
                    Ok(Held {
                        document,
                        etag,
                        changed: true,
                    })
                }
                Err(error) => Err(bad(
                    location,
                    format!("{error}; the last good plan is kept"),
                )),
            },
        }
    }

    /// Forgets the held plan (another cluster or location followed).
    pub fn clear(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn held(&self) -> Option<(String, Arc<PlanDocument>)> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn get_call(location: &S3Location) -> Call {
    Call {
        operation: "s3:GetObject",
        target: location.to_string(),
        principal: "the agent's credentials".to_owned(),
    }
}

fn bad(location: &S3Location, problem: String) -> AwsError {
    AwsError::BadResponse {
        call: get_call(location),
        problem,
    }
}

/// How long ago `document` was last confirmed by a publisher at `now`
/// (zero for a time in the future; `None` if unreadable).
pub fn age(document: &PlanDocument, now: SystemTime) -> Option<Duration> {
    parse_time(&document.checked_at).map(|at| now.duration_since(at).unwrap_or_default())
}

/// A plan's [`age`] for people: `2h 13m 5s` (whole seconds), or
/// `unknown` when its confirmation time cannot be read.
pub fn describe_age(age: Option<Duration>) -> String {
    age.map_or_else(
        || "unknown".to_owned(),
        |a| humantime::format_duration(Duration::from_secs(a.as_secs())).to_string(),
    )
}

/// Who publishes: the EC2 instance ID when IMDS gave it, else the host
/// name.
pub fn publisher_name(host: &pullauth_ecs::Host) -> String {
    host.facts.ec2_instance_id.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    })
}

/// Where a plan came from, as `GET /v1/prefetch` shows it
/// (`plan_source`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlanOrigin {
    /// `s3://bucket/key`.
    pub location: String,
    /// The followed plan's version.
    pub etag: Option<String>,
    pub publisher: Option<String>,
    pub read_at: Option<String>,
    pub checked_at: Option<String>,
    /// Seconds since the publisher last confirmed the plan.
    pub age_seconds: Option<u64>,
    /// Not confirmed for longer than the maximum age.
    pub stale: bool,
    /// ECS was read directly instead (the plan stale or missing, and the
    /// fallback configured).
    pub fell_back: bool,
    /// A publisher's outcome (`written`, `confirmed`, `unchanged`,
    /// `newer-plan-kept`).
    pub published: Option<&'static str>,
    pub publish_error: Option<String>,
}

impl PlanOrigin {
    /// A plan at `location`, nothing else known yet.
    pub fn at(location: &S3Location) -> PlanOrigin {
        PlanOrigin {
            location: location.to_string(),
            ..PlanOrigin::default()
        }
    }

    /// The plan `held` at `location`, `age` old.
    pub fn of(
        location: &S3Location,
        held: &Held,
        age: Option<Duration>,
        stale: bool,
    ) -> PlanOrigin {
        PlanOrigin {
            location: location.to_string(),
            etag: Some(held.etag.clone()),
            publisher: Some(held.document.publisher.clone()),
            read_at: Some(held.document.read_at.clone()),
            checked_at: Some(held.document.checked_at.clone()),
            age_seconds: age.map(|a| a.as_secs()),
            stale,
            ..PlanOrigin::default()
        }
    }
}

#[cfg(test)]
mod tests;
