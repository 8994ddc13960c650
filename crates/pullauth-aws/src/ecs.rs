//! The ECS control plane as a source of work: which task definitions a
//! cluster's services run, and which images those task definitions name.
//!
//! Three read calls, each bounded like every other call of [`Aws`]:
//! `ecs:ListServices` (paginated, 100 a page), `ecs:DescribeServices` (10
//! services a call) and `ecs:DescribeTaskDefinition`. Task definitions are
//! immutable once registered, so they are cached by ARN (and by
//! `family:revision`, which names one revision for ever); a quiet cluster
//! then costs only the list and describe calls of its services.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pullauth_poll::{
    CallLimiter, DEFAULT_LIMITER_BURST, DEFAULT_LIMITER_MAX_RATE, DEFAULT_LIMITER_MIN_RATE,
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
}

impl Default for EcsPacer {
    fn default() -> Self {
        EcsPacer {
            limiter: Mutex::new(CallLimiter::new(
                DEFAULT_LIMITER_BURST,
                DEFAULT_LIMITER_MAX_RATE,
                DEFAULT_LIMITER_MIN_RATE,
            )),
            epoch: tokio::time::Instant::now(),
        }
    }
}

impl EcsPacer {
    fn limiter(&self) -> std::sync::MutexGuard<'_, CallLimiter> {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the limiter lets one more call go.
    pub(crate) async fn ready(&self) {
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

/// `ecs:DescribeServices` takes at most this many services a call.
pub const DESCRIBE_SERVICES_BATCH: usize = 10;
/// `ecs:ListServices` page size (the API's maximum).
pub const LIST_SERVICES_PAGE: i32 = 100;

/// A service as the prefetcher needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsService {
    pub name: String,
    /// `REPLICA` or `DAEMON` (both count), as ECS says it.
    pub scheduling: String,
    /// The task definitions to have images for, in the service's own form
    /// (an ARN, or `family:revision` as moto returns after an update):
    /// every `PRIMARY` or `ACTIVE` deployment's, then the service's own;
    /// without duplicates.
    pub task_definitions: Vec<String>,
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

/// One container of a task definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsContainer {
    pub name: String,
    /// As written in the task definition (not yet validated).
    pub image: String,
    /// `repositoryCredentials.credentialsParameter`: a Secrets Manager ARN
    /// or name.
    pub credentials_parameter: Option<String>,
}

/// A registered task definition (immutable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsTaskDefinition {
    pub arn: String,
    pub family: String,
    pub revision: i32,
    pub execution_role_arn: Option<String>,
    pub containers: Vec<EcsContainer>,
}

impl EcsTaskDefinition {
    /// `family:revision`.
    pub fn name(&self) -> String {
        format!("{}:{}", self.family, self.revision)
    }
}

/// The cache of described task definitions, by ARN and `family:revision`.
#[derive(Debug, Default)]
pub(crate) struct TaskDefinitionCache {
    by_reference: Mutex<HashMap<String, Arc<EcsTaskDefinition>>>,
}

impl TaskDefinitionCache {
    fn get(&self, reference: &str) -> Option<Arc<EcsTaskDefinition>> {
        self.lock().get(reference).cloned()
    }

    fn put(&self, found: &Arc<EcsTaskDefinition>) {
        let mut map = self.lock();
        map.insert(found.arn.clone(), Arc::clone(found));
        map.insert(found.name(), Arc::clone(found));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<EcsTaskDefinition>>> {
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

/// The task definitions a service needs images for: every deployment that
/// is `PRIMARY` or `ACTIVE` (a rolling update runs both), then the
/// service's own `taskDefinition` (moto's update changes only that one),
/// each once, in that order.
pub fn service_task_definitions<'a>(
    own: Option<&'a str>,
    deployments: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |reference: &str| {
        if !reference.is_empty() && !out.iter().any(|r| r == reference) {
            out.push(reference.to_owned());
        }
    };
    for (status, task_definition) in deployments {
        if matches!(status, Some("PRIMARY" | "ACTIVE"))
            && let Some(reference) = task_definition
        {
            add(reference);
        }
    }
    if let Some(reference) = own {
        add(reference);
    }
    out
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
                .max_results(LIST_SERVICES_PAGE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| self.sdk_error(call("ecs:ListServices"), e, not_found));
            self.inner.ecs_pacer.record(&page);
            let page = page?;
            arns.extend(page.service_arns().iter().cloned());
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        let mut out = EcsServices::default();
        for batch in arns.chunks(DESCRIBE_SERVICES_BATCH) {
            self.inner.ecs_pacer.ready().await;
            self.inner.counters.add(&self.inner.counters.ecs_calls);
            let described = client
                .describe_services()
                .cluster(cluster)
                .set_services(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| self.sdk_error(call("ecs:DescribeServices"), e, not_found));
            self.inner.ecs_pacer.record(&described);
            let described = described?;
            for service in described.services() {
                let name = service
                    .service_name()
                    .or(service.service_arn())
                    .unwrap_or("?")
                    .to_owned();
                out.services.push(EcsService {
                    name,
                    scheduling: service
                        .scheduling_strategy()
                        .map_or_else(|| "REPLICA".to_owned(), |s| s.as_str().to_owned()),
                    task_definitions: service_task_definitions(
                        service.task_definition(),
                        service
                            .deployments()
                            .iter()
                            .map(|d| (d.status(), d.task_definition())),
                    ),
                });
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
    ) -> Result<Arc<EcsTaskDefinition>, AwsError> {
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
    ) -> Result<Arc<EcsTaskDefinition>, AwsError> {
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
            .await
            .map_err(|e| {
                // ECS answers ClientException for an unknown task definition.
                self.sdk_error(call.clone(), e, |code| {
                    (code == "ClientException")
                        .then(|| "no such task definition (or not readable)".to_owned())
                })
            });
        self.inner.ecs_pacer.record(&output);
        let output = output?;
        let bad = |problem: &str| AwsError::BadResponse {
            call: call.clone(),
            problem: problem.to_owned(),
        };
        let found = output
            .task_definition()
            .ok_or_else(|| bad("no taskDefinition"))?;
        Ok(Arc::new(EcsTaskDefinition {
            arn: found
                .task_definition_arn()
                .ok_or_else(|| bad("no taskDefinitionArn"))?
                .to_owned(),
            family: found.family().ok_or_else(|| bad("no family"))?.to_owned(),
            revision: found.revision(),
            execution_role_arn: found
                .execution_role_arn()
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
            containers: found
                .container_definitions()
                .iter()
                .map(|c| EcsContainer {
                    name: c.name().unwrap_or("?").to_owned(),
                    image: c.image().unwrap_or_default().to_owned(),
                    credentials_parameter: c
                        .repository_credentials()
                        .map(|r| r.credentials_parameter().to_owned())
                        .filter(|p| !p.is_empty()),
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    /// The pacer in front of every ECS call: a burst goes at once, then
    /// calls are spaced at the limiter's rate, a throttle halves it and
    /// successes win it back; other failures leave it alone.
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

    #[rstest]
    #[case::own_only(Some("web:1"), vec![], vec!["web:1"])]
    #[case::rolling_update(
        Some("web:2"),
        vec![(Some("PRIMARY"), Some("web:2")), (Some("ACTIVE"), Some("web:1"))],
        vec!["web:2", "web:1"]
    )]
    #[case::inactive_left_out(
        Some("web:2"),
        vec![(Some("PRIMARY"), Some("web:2")), (Some("INACTIVE"), Some("web:1"))],
        vec!["web:2"]
    )]
    #[case::moto_update_changes_only_the_service(
        Some("web:2"),
        vec![(Some("PRIMARY"), Some("arn:aws:ecs:us-east-1:1:task-definition/web:1"))],
        vec!["arn:aws:ecs:us-east-1:1:task-definition/web:1", "web:2"]
    )]
    #[case::nothing(None, vec![(None, Some("web:1"))], vec![])]
    fn service_task_definitions_are_deployments_then_own(
        #[case] own: Option<&str>,
        #[case] deployments: Vec<(Option<&str>, Option<&str>)>,
        #[case] expected: Vec<&str>,
    ) {
        assert_eq!(service_task_definitions(own, deployments), expected);
    }
}
