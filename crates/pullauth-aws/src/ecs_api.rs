//! The raw ECS calls, behind [`EcsApi`]: one method per ECS operation the
//! prefetch reads, each answering the parsed `pullauth-ecs` model or a
//! classified [`AwsError`]. [`SdkEcs`] is the real one (the generated
//! client); [`crate::Aws`] keeps its caches, its persistence and its pacing
//! above the seam, so that a fake (the paused-time tests, the fleet
//! simulation) runs exactly the code the agent runs above it.
//!
//! No caching, pacing or counting happens here: every call of a method is
//! one ECS request (one attempt, or the SDK's retries; see [`crate::ecs`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;
use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_smithy_types::retry::RetryConfig;
use pullauth_ecs::{
    Capacity, ContainerDefinition, EcsService, PinnedImage, PlacementConstraint, Rollout,
    RuntimePlatform, ServiceRevision, ServiceStatus, TaskDefinition, runs,
};
use pullauth_poll::LIST_SERVICES_PAGE_SIZE;

use crate::client::Inner;
use crate::error::Call;
use crate::{Aws, AwsError, Principal};

/// What an [`EcsApi`] method answers: a boxed future, so that the trait
/// stays object-safe.
pub type EcsFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, AwsError>> + Send + 'a>>;

/// One page of `ecs:ListServices`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicesPage {
    pub service_arns: Vec<String>,
    /// The token of the next page; `None` on the last one.
    pub next_token: Option<String>,
}

/// A service `ecs:DescribeServices` could not describe (`MISSING`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsFailure {
    /// The service ARN or name ECS names.
    pub service: String,
    pub reason: String,
}

/// One service as `ecs:DescribeServices` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedService {
    /// `serviceArn`, when the answer gives it.
    pub arn: Option<String>,
    /// Named by `serviceName` (else its ARN).
    pub service: EcsService,
}

/// One `ecs:DescribeServices` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribedServices {
    pub services: Vec<DescribedService>,
    pub failures: Vec<EcsFailure>,
}

/// One entry of `ecs:ListServiceDeployments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDeployment {
    /// `PENDING`, `IN_PROGRESS`, `SUCCESSFUL`, `ROLLBACK_IN_PROGRESS`, ...
    pub status: Option<String>,
    pub target_service_revision_arn: Option<String>,
    pub created_at: Option<SystemTime>,
}

/// The ECS operations prefetch reads. Each method is one request; an error
/// is classified as [`crate::Aws`] classifies every AWS error (a throttle
/// is [`AwsError::Throttled`]).
pub trait EcsApi: Send + Sync + std::fmt::Debug {
    /// One page (up to [`LIST_SERVICES_PAGE_SIZE`] ARNs) of `cluster`'s
    /// services, from `next_token` (`None`: the first page).
    fn list_services<'a>(
        &'a self,
        cluster: &'a str,
        next_token: Option<&'a str>,
    ) -> EcsFuture<'a, ServicesPage>;

    /// `services` (ARNs or names, at most
    /// [`DESCRIBE_SERVICES_BATCH`](pullauth_poll::DESCRIBE_SERVICES_BATCH))
    /// of `cluster`.
    fn describe_services<'a>(
        &'a self,
        cluster: &'a str,
        services: &'a [String],
    ) -> EcsFuture<'a, DescribedServices>;

    /// The task definition `reference` names (ARN, `family:revision`, or a
    /// family for its latest revision); an answer without ARN or family is
    /// [`AwsError::BadResponse`].
    fn describe_task_definition<'a>(&'a self, reference: &'a str) -> EcsFuture<'a, TaskDefinition>;

    /// The newest deployments of `service` in `cluster` (up to
    /// [`SERVICE_DEPLOYMENTS_READ`](crate::ecs::SERVICE_DEPLOYMENTS_READ)).
    fn list_service_deployments<'a>(
        &'a self,
        cluster: &'a str,
        service: &'a str,
    ) -> EcsFuture<'a, Vec<ServiceDeployment>>;

    /// The service revisions `arns` name (at most
    /// [`DESCRIBE_SERVICE_REVISIONS_BATCH`](crate::ecs::DESCRIBE_SERVICE_REVISIONS_BATCH)),
    /// each with the digests ECS pinned; revisions without an ARN or task
    /// definition are left out.
    fn describe_service_revisions<'a>(
        &'a self,
        arns: &'a [String],
    ) -> EcsFuture<'a, Vec<ServiceRevision>>;

    /// The attributes of container instance `arn` in `cluster`; one ECS
    /// does not describe is [`AwsError::BadResponse`].
    fn describe_container_instance<'a>(
        &'a self,
        cluster: &'a str,
        arn: &'a str,
    ) -> EcsFuture<'a, BTreeMap<String, String>>;
}

/// The real [`EcsApi`]: the generated ECS client, one per [`Aws`].
///
/// With [`AwsOptions::pace_ecs`](crate::AwsOptions::pace_ecs) (the
/// follower) the client makes one attempt per call: the poll schedule is
/// the retry, and a throttled call ends the poll. Without it (a one-shot
/// `pullauth prefetch`) the SDK's standard retries, with back-off, apply.
#[derive(Debug)]
pub(crate) struct SdkEcs {
    config: SdkConfig,
    paced: bool,
    /// Built at the first call (a configuration without a behavior
    /// version, as some tests build, cannot make one).
    client: std::sync::OnceLock<aws_sdk_ecs::Client>,
    /// How many attempts the client makes, for the time limits an error
    /// names.
    attempts: u32,
    /// The [`Aws`] this client belongs to, for classifying its errors (its
    /// configuration and time limits); weak, as the `Aws` owns this.
    aws: Weak<Inner>,
}

impl SdkEcs {
    pub(crate) fn new(config: &SdkConfig, paced: bool, attempts: u32, aws: Weak<Inner>) -> SdkEcs {
        SdkEcs {
            config: config.clone(),
            paced,
            client: std::sync::OnceLock::new(),
            attempts: if paced { 1 } else { attempts },
            aws,
        }
    }

    fn client(&self) -> &aws_sdk_ecs::Client {
        self.client.get_or_init(|| {
            if self.paced {
                let single = aws_sdk_ecs::config::Builder::from(&self.config)
                    .retry_config(RetryConfig::standard().with_max_attempts(1))
                    .build();
                aws_sdk_ecs::Client::from_conf(single)
            } else {
                aws_sdk_ecs::Client::new(&self.config)
            }
        })
    }

    /// A call's result with its error classified, an unreachable endpoint
    /// named by host and port.
    async fn result<T, E>(
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
        let error = match result {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        let Some(inner) = self.aws.upgrade() else {
            // Unreachable in practice: calls are made through the `Aws`.
            return Err(AwsError::Unreachable {
                call,
                detail: "the AWS client was dropped during the call".to_owned(),
            });
        };
        let mut error = Aws { inner }
            .sdk_error_at("ECS", None, call, error, not_found)
            .await;
        if let AwsError::Timeout { limits, .. } = &mut error {
            limits.attempts = self.attempts;
        }
        Err(error)
    }
}

fn call(operation: &'static str, target: String) -> Call {
    Call {
        operation,
        target,
        principal: Principal::Default.to_string(),
    }
}

/// One attempt for the revision reads whatever the client's retries: the
/// digests are an improvement, a failure degrades to tags.
fn once() -> aws_sdk_ecs::config::Builder {
    aws_sdk_ecs::config::Builder::default()
        .retry_config(RetryConfig::standard().with_max_attempts(1))
}

fn no_such_cluster(cluster: &str) -> impl Fn(&str) -> Option<String> + '_ {
    move |code: &str| {
        (code == "ClusterNotFoundException")
            .then(|| format!("no such cluster {cluster:?} (ECS_CLUSTER or --cluster)"))
    }
}

impl EcsApi for SdkEcs {
    fn list_services<'a>(
        &'a self,
        cluster: &'a str,
        next_token: Option<&'a str>,
    ) -> EcsFuture<'a, ServicesPage> {
        Box::pin(async move {
            let page = self
                .client()
                .list_services()
                .cluster(cluster)
                .max_results(LIST_SERVICES_PAGE_SIZE as i32)
                .set_next_token(next_token.map(str::to_owned))
                .send()
                .await;
            let page = self
                .result(
                    page,
                    call("ecs:ListServices", format!("cluster {cluster}")),
                    no_such_cluster(cluster),
                )
                .await?;
            Ok(ServicesPage {
                service_arns: page.service_arns().to_vec(),
                next_token: page
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            })
        })
    }

    fn describe_services<'a>(
        &'a self,
        cluster: &'a str,
        services: &'a [String],
    ) -> EcsFuture<'a, DescribedServices> {
        Box::pin(async move {
            let described = self
                .client()
                .describe_services()
                .cluster(cluster)
                .set_services(Some(services.to_vec()))
                .send()
                .await;
            let described = self
                .result(
                    described,
                    call("ecs:DescribeServices", format!("cluster {cluster}")),
                    no_such_cluster(cluster),
                )
                .await?;
            Ok(DescribedServices {
                services: described
                    .services()
                    .iter()
                    .map(|service| DescribedService {
                        arn: service.service_arn().map(str::to_owned),
                        service: service_of(service),
                    })
                    .collect(),
                failures: described
                    .failures()
                    .iter()
                    .map(|failure| EcsFailure {
                        service: failure.arn().unwrap_or("?").to_owned(),
                        reason: failure.reason().unwrap_or("no reason given").to_owned(),
                    })
                    .collect(),
            })
        })
    }

    fn describe_task_definition<'a>(&'a self, reference: &'a str) -> EcsFuture<'a, TaskDefinition> {
        Box::pin(async move {
            let call = call(
                "ecs:DescribeTaskDefinition",
                format!("task definition {reference}"),
            );
            let output = self
                .client()
                .describe_task_definition()
                .task_definition(reference)
                .send()
                .await;
            // ECS answers ClientException for an unknown task definition.
            let output = self
                .result(output, call.clone(), |code| {
                    (code == "ClientException")
                        .then(|| "no such task definition (or not readable)".to_owned())
                })
                .await?;
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
            Ok(task_definition_of(found, arn, family))
        })
    }

    fn list_service_deployments<'a>(
        &'a self,
        cluster: &'a str,
        service: &'a str,
    ) -> EcsFuture<'a, Vec<ServiceDeployment>> {
        Box::pin(async move {
            let listed = self
                .client()
                .list_service_deployments()
                .cluster(cluster)
                .service(service)
                .max_results(crate::ecs::SERVICE_DEPLOYMENTS_READ)
                .customize()
                .config_override(once())
                .send()
                .await;
            let listed = self
                .result(
                    listed,
                    call(
                        "ecs:ListServiceDeployments",
                        format!("service {service} in cluster {cluster}"),
                    ),
                    |_| None,
                )
                .await?;
            Ok(listed
                .service_deployments()
                .iter()
                .map(|d| ServiceDeployment {
                    status: d.status().map(|s| s.as_str().to_owned()),
                    target_service_revision_arn: d.target_service_revision_arn().map(str::to_owned),
                    created_at: d.created_at().and_then(|at| SystemTime::try_from(*at).ok()),
                })
                .collect())
        })
    }

    fn describe_service_revisions<'a>(
        &'a self,
        arns: &'a [String],
    ) -> EcsFuture<'a, Vec<ServiceRevision>> {
        Box::pin(async move {
            let described = self
                .client()
                .describe_service_revisions()
                .set_service_revision_arns(Some(arns.to_vec()))
                .customize()
                .config_override(once())
                .send()
                .await;
            let target = match arns {
                [one] => format!("service revision {one}"),
                _ => format!("{} service revisions", arns.len()),
            };
            let described = self
                .result(
                    described,
                    call("ecs:DescribeServiceRevisions", target),
                    |_| None,
                )
                .await?;
            Ok(described
                .service_revisions()
                .iter()
                .filter_map(|revision| {
                    Some(ServiceRevision {
                        arn: revision.service_revision_arn()?.to_owned(),
                        task_definition: revision.task_definition()?.to_owned(),
                        images: revision
                            .container_images()
                            .iter()
                            .filter_map(|c| {
                                Some(PinnedImage {
                                    container_name: c.container_name()?.to_owned(),
                                    image: c.image()?.to_owned(),
                                    digest: c.image_digest()?.to_owned(),
                                })
                            })
                            .collect(),
                    })
                })
                .collect())
        })
    }

    fn describe_container_instance<'a>(
        &'a self,
        cluster: &'a str,
        arn: &'a str,
    ) -> EcsFuture<'a, BTreeMap<String, String>> {
        Box::pin(async move {
            let call = call(
                "ecs:DescribeContainerInstances",
                format!("container instance {arn} in cluster {cluster}"),
            );
            let output = self
                .client()
                .describe_container_instances()
                .cluster(cluster)
                .container_instances(arn)
                .send()
                .await;
            let output = self.result(output, call.clone(), |_| None).await?;
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
        })
    }
}

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
fn service_of(service: &aws_sdk_ecs::types::Service) -> EcsService {
    let name = service
        .service_name()
        .or(service.service_arn())
        .unwrap_or("?")
        .to_owned();
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
