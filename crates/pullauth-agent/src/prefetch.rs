//! ECS as a source of work: which images a cluster's services need, each
//! with what ECS would pull it with (`repositoryCredentials` and the task
//! definition's execution role). Shared by `pullauth prefetch` (one shot)
//! and [`crate::follow`] (serve, on an interval).
//!
//! The plan only says *what* to pull; which credential source applies is
//! the resolver's answer ([`RegistryTable::source`]) at pull time, and the
//! [`crate::credentials::Provider`] provides it, as for a submitted task.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use pullauth_aws::{Aws, AwsError, ErrorClass, RoleArn};
use pullauth_docker::Platform;
use pullauth_ecs::service::Capacity;
use pullauth_ecs::{
    ClusterView, Decision, Host, PlacementConstraint, ReadProblem, ServiceRevision, ServiceStatus,
    SkipReason, TaskDefinition, decide, pinned_digest,
};
use pullauth_resolve::{ImageRef, RegistryTable, Source};

/// Which part of the cluster to prefetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Only these services (by name); empty: every service, unless
    /// `task_definitions` is set and this is empty.
    pub services: Vec<String>,
    /// Task definitions (`family`, `family:revision` or an ARN) to
    /// prefetch as well. Given alone, only these: the cluster's services
    /// are not listed.
    pub task_definitions: Vec<String>,
}

impl Filters {
    /// Whether the cluster's services are read at all.
    pub fn reads_services(&self) -> bool {
        !self.services.is_empty() || self.task_definitions.is_empty()
    }
}

/// One container image a task definition names, with what ECS would use
/// to pull it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub image: ImageRef,
    /// `family:revision`.
    pub task_definition: String,
    /// The services running this task definition in a way that can place
    /// its tasks here (empty for one named by a task-definition filter
    /// only).
    pub services: Vec<String>,
    /// `repositoryCredentials.credentialsParameter`.
    pub secret: Option<String>,
    /// The task definition's `executionRoleArn`, as written.
    pub execution_role: Option<String>,
    /// What placement could not decide (and took as "can run here").
    pub notes: Vec<String>,
    /// The manifest digest ECS pinned for this container in a current
    /// service revision, when the image names none itself.
    pub digest: Option<String>,
    /// The deployments and task sets (IDs) that run it here: a new one
    /// naming a tag already warm pulls it again (a manifest check when
    /// nothing changed), as ECS's new tasks would.
    pub deployments: BTreeSet<String>,
}

impl Wanted {
    /// What to pull: `name@digest` where ECS pinned a digest (the image
    /// the task will start, whatever the tag says now), else the image.
    pub fn pull_image(&self) -> ImageRef {
        self.digest
            .as_deref()
            .and_then(|digest| ImageRef::parse(&format!("{}@{digest}", self.image.name())).ok())
            .unwrap_or_else(|| self.image.clone())
    }

    /// The reference to tag a pinned pull with (the task's own), as the
    /// ECS agent does; `None` when the pull is by the image itself.
    pub fn tag_as(&self) -> Option<&ImageRef> {
        (self.digest.is_some() && self.image.digest.is_none()).then_some(&self.image)
    }

    /// The execution role, parsed; an unparsable ARN is a problem of the
    /// task definition, reported when its secret or token is fetched.
    pub fn role(&self) -> Result<Option<RoleArn>, AwsError> {
        self.execution_role
            .as_deref()
            .map(RoleArn::parse)
            .transpose()
    }

    /// The credential source the resolver picks for this image (the task's
    /// secret first, as for a submitted task).
    pub fn source<'t>(&'t self, table: &'t RegistryTable, ecr: bool) -> Source<'t> {
        table.source(&self.image, self.secret.as_deref(), ecr)
    }
}

/// An image (or a whole service) that is not pulled because ECS cannot
/// place its tasks on this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub services: Vec<String>,
    /// `family:revision`; `None` for a service skipped as a whole.
    pub task_definition: Option<String>,
    /// As written in the task definition.
    pub image: Option<String>,
    pub reason: SkipReason,
    /// For people: what excluded it (every service's reason, `; `-joined).
    pub detail: String,
}

/// Something in the cluster that cannot be prefetched, and why: names the
/// service, task definition and container, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub services: Vec<String>,
    pub task_definition: Option<String>,
    pub image: Option<String>,
    pub error: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.services.is_empty() {
            write!(f, "service {}: ", self.services.join(", "))?;
        }
        if let Some(td) = &self.task_definition {
            write!(f, "task definition {td}: ")?;
        }
        if let Some(image) = &self.image {
            write!(f, "image {image:?}: ")?;
        }
        f.write_str(&self.error)
    }
}

/// What the cluster needs on this instance, as read now.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// One row per (task definition, container) with a valid image that
    /// can run here.
    pub wanted: Vec<Wanted>,
    /// What cannot run here, each with its reason.
    pub skipped: Vec<Skipped>,
    pub problems: Vec<Problem>,
    /// Each followed service and the task definitions (`family:revision`
    /// once described, else as ECS named them) it runs.
    pub services: BTreeMap<String, Vec<String>>,
    /// The ARNs of every task definition read for this plan (its view's,
    /// also those of services its filters leave out when the whole cluster
    /// was read to publish it): what the task-definition cache keeps.
    pub task_definition_arns: HashSet<String>,
    /// Every service read for this plan: whose cached revisions are kept.
    pub services_read: Vec<String>,
    /// Said once per cause (the service revisions cannot be read, ...).
    pub warnings: Vec<String>,
    /// The published plan it was decided from, or published to.
    pub origin: Option<crate::shared_plan::PlanOrigin>,
}

/// What is known about this instance: the engine's platform and IMDS's
/// facts. Each fact that cannot be read is left out (placement then pulls
/// what it would decide, and says so), with one note per cause.
///
/// `custom` is `ECS_INSTANCE_ATTRIBUTES`, the custom attributes the ECS
/// agent registers this instance with: `memberOf` is decided on them
/// without asking ECS (a plan follower asks nothing), while a custom
/// attribute not among them stays unknown (it may have been put later).
///
/// With `ecs_agent` (the cluster and the local ECS agent's introspection
/// URI), the container instance the ECS agent registered is described and
/// all its attributes (custom ones too) become known: `memberOf` is then
/// decided on every attribute.
pub async fn host_facts(
    platform: Result<Platform, String>,
    aws: Option<&Aws>,
    custom: &BTreeMap<String, String>,
    ecs_agent: Option<(&str, &str)>,
) -> (Host, Vec<String>) {
    let mut notes = Vec::new();
    let mut host = match platform {
        Ok(Platform {
            architecture: Some(architecture),
            os_type: Some(os_type),
        }) => Host::from_engine(&architecture, &os_type),
        Ok(_) => {
            notes.push("the engine does not say its architecture and OS".to_owned());
            Host::default()
        }
        Err(error) => {
            notes.push(format!(
                "cannot read the engine's platform ({error}); runtimePlatform is not checked"
            ));
            Host::default()
        }
    };
    for (name, value) in custom {
        host.set(name, value);
    }
    if let Some(aws) = aws {
        match aws.instance_facts().await {
            Some(facts) => {
                for (name, value) in &facts.attributes {
                    host.set(name, value);
                }
                host.facts.ec2_instance_id = facts.instance_id;
            }
            None => notes.push(
                "no instance metadata (IMDS): memberOf constraints on ecs.instance-type, ecs.availability-zone or ecs.ami-id are not decided".to_owned(),
            ),
        }
        if let Some((cluster, uri)) = ecs_agent {
            match crate::introspection::container_instance_arn(uri).await {
                Ok(arn) => match aws.ecs_container_instance_attributes(cluster, &arn).await {
                    Ok(attributes) => {
                        for (name, value) in &attributes {
                            host.set(name, value);
                        }
                        host.facts.complete = true;
                    }
                    Err(error) => notes.push(format!(
                        "memberOf constraints on custom attributes are not decided: {error}"
                    )),
                },
                Err(why) => notes.push(format!(
                    "memberOf constraints on custom attributes are not decided: {why}"
                )),
            }
        }
    }
    (host, notes)
}

/// One way a task definition is asked for: by a service run (its capacity
/// and constraints), or by a task-definition filter.
struct Use {
    service: Option<String>,
    /// The deployment or task set ID, when a service run names it.
    deployment: Option<String>,
    capacity: Capacity,
    constraints: Vec<PlacementConstraint>,
}

/// Reads what `cluster`'s services (narrowed and extended by `filters`)
/// need on `host`: [`read`], then [`decide_plan`].
pub async fn plan(
    aws: &Aws,
    cluster: &str,
    filters: &Filters,
    host: &Host,
) -> Result<Plan, AwsError> {
    let view = read(aws, cluster, filters).await?;
    Ok(decide_plan(&view, filters, host))
}

/// Reads `cluster` from ECS: its services (narrowed by `filters`), the
/// task definitions their runs and `filters` name, and the service
/// revisions that pinned digests. The same for every instance: this is what
/// a published plan holds.
///
/// Fails if the services cannot be listed (a missing cluster, access
/// denied, ECS unreachable) or if any read was throttled: a throttled
/// poll backs off, and the next one resumes where this one stopped (what
/// was described is cached by ARN). A task definition that cannot be
/// described otherwise is a [`ReadProblem`] and the rest goes on.
pub async fn read(aws: &Aws, cluster: &str, filters: &Filters) -> Result<ClusterView, AwsError> {
    let mut view = ClusterView {
        cluster: cluster.to_owned(),
        ..ClusterView::default()
    };
    // Task definition reference -> the services that name it.
    let mut references: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Services whose deployments may have pinned digests.
    let mut pinning: Vec<(String, String)> = Vec::new();
    if filters.reads_services() {
        view.services_read = true;
        let listed = aws.ecs_services(cluster).await?;
        for failure in listed.failures {
            view.problems.push(ReadProblem {
                services: vec![failure.service],
                task_definition: None,
                error: format!(
                    "ecs:DescribeServices in cluster {cluster}: {}",
                    failure.reason
                ),
            });
        }
        for service in listed.services {
            if !filters.services.is_empty() && !filters.services.contains(&service.name) {
                continue;
            }
            if service.status == ServiceStatus::Active {
                if service.deployment_controller == "ECS" && !service.runs.is_empty() {
                    // The rollouts the service's revisions are read for:
                    // the same IDs as last poll, the same revisions, no
                    // call.
                    let rollouts: Vec<&str> = service
                        .runs
                        .iter()
                        .map(|r| r.id.as_deref().unwrap_or(&r.task_definition))
                        .collect();
                    pinning.push((service.name.clone(), rollouts.join(",")));
                }
                for run in &service.runs {
                    references
                        .entry(run.task_definition.clone())
                        .or_default()
                        .insert(service.name.clone());
                }
            }
            view.services.push(service);
        }
    }
    for reference in &filters.task_definitions {
        references.entry(reference.clone()).or_default();
    }
    let (answers, pins) = futures_util::future::join(
        futures_util::future::join_all(
            references
                .keys()
                .map(|reference| aws.ecs_task_definition(reference)),
        ),
        // The first service's revisions alone, then the rest together: a
        // denied or unsupported call rests after its first failure, so a
        // client without the permission makes one such call, not one per
        // service.
        async {
            let Some(((service, rollouts), rest)) = pinning.split_first() else {
                return Vec::new();
            };
            let mut pins = vec![aws.ecs_service_revisions(cluster, service, rollouts).await];
            pins.extend(
                futures_util::future::join_all(rest.iter().map(|(service, rollouts)| {
                    aws.ecs_service_revisions(cluster, service, rollouts)
                }))
                .await,
            );
            pins
        },
    )
    .await;
    // A throttled read of the revisions is a throttled read, as a throttled
    // describe is: the poll backs off and the next one reads what is left.
    let mut throttled = None;
    for pin in pins {
        view.warnings.extend(pin.warning);
        if let Some(error) = pin.throttled {
            throttled.get_or_insert(error);
        }
        view.revisions
            .extend(pin.revisions.iter().map(|r| ServiceRevision::clone(r)));
    }
    for ((reference, services), answer) in references.into_iter().zip(answers) {
        match answer {
            Ok(found) => {
                view.task_definitions
                    .insert(reference, TaskDefinition::clone(&found));
            }
            Err(error) if error.class() == ErrorClass::Throttled => {
                throttled.get_or_insert(error);
            }
            Err(error) => view.problems.push(ReadProblem {
                services: services.into_iter().collect(),
                task_definition: Some(reference),
                error: error.to_string(),
            }),
        }
    }
    match throttled {
        Some(error) => Err(error),
        None => Ok(view),
    }
}

/// What `view` means on `host`, narrowed and extended by `filters`: which
/// images to pull, what is skipped and why, what cannot be prefetched. Pure:
/// a follower of a published plan decides here from the publisher's view.
pub fn decide_plan(view: &ClusterView, filters: &Filters, host: &Host) -> Plan {
    let cluster = &view.cluster;
    let mut plan = Plan {
        warnings: view.warnings.clone(),
        task_definition_arns: view
            .task_definitions
            .values()
            .map(|td| td.arn.clone().unwrap_or_else(|| td.name()))
            .collect(),
        services_read: view.services.iter().map(|s| s.name.clone()).collect(),
        ..Plan::default()
    };
    for problem in &view.problems {
        plan.problems.push(Problem {
            services: problem.services.clone(),
            task_definition: problem.task_definition.clone(),
            image: None,
            error: problem.error.clone(),
        });
    }
    let mut references: BTreeMap<&str, Vec<Use>> = BTreeMap::new();
    if filters.reads_services() {
        if !view.services_read {
            plan.problems.push(Problem {
                services: filters.services.clone(),
                task_definition: None,
                image: None,
                error: format!("the services of cluster {cluster} were not read"),
            });
        }
        for wanted in &filters.services {
            let described = view.services.iter().any(|s| &s.name == wanted);
            let failed = view.problems.iter().any(|p| p.services.contains(wanted));
            if view.services_read && !described && !failed {
                plan.problems.push(Problem {
                    services: vec![wanted.clone()],
                    task_definition: None,
                    image: None,
                    error: format!("no such service in cluster {cluster}"),
                });
            }
        }
        for service in &view.services {
            if !filters.services.is_empty() && !filters.services.contains(&service.name) {
                continue;
            }
            if service.status != ServiceStatus::Active {
                plan.skipped.push(Skipped {
                    services: vec![service.name.clone()],
                    task_definition: None,
                    image: None,
                    reason: SkipReason::ServiceNotActive,
                    detail: format!("the service is {}", service.status.as_str()),
                });
                continue;
            }
            if service.runs.is_empty() {
                plan.problems.push(Problem {
                    services: vec![service.name.clone()],
                    task_definition: None,
                    image: None,
                    error: format!(
                        "names no task definition (no PRIMARY or ACTIVE deployment or task set, no taskDefinition; deployment controller {})",
                        service.deployment_controller
                    ),
                });
                continue;
            }
            let mut names = Vec::new();
            for run in &service.runs {
                if !names.contains(&run.task_definition) {
                    names.push(run.task_definition.clone());
                }
                references
                    .entry(&run.task_definition)
                    .or_default()
                    .push(Use {
                        service: Some(service.name.clone()),
                        deployment: run.id.clone(),
                        capacity: run.capacity.clone(),
                        constraints: service.placement_constraints.clone(),
                    });
            }
            plan.services.insert(service.name.clone(), names);
        }
    }
    for reference in &filters.task_definitions {
        references.entry(reference).or_default().push(Use {
            service: None,
            deployment: None,
            capacity: Capacity::default(),
            constraints: Vec::new(),
        });
    }
    // Described task definitions by ARN: the same revision may be named as
    // an ARN by one service and as family:revision by another.
    let mut described: BTreeMap<String, (&TaskDefinition, Vec<Use>)> = BTreeMap::new();
    for (reference, uses) in references {
        let Some(found) = view.task_definitions.get(reference) else {
            let reported = view
                .problems
                .iter()
                .any(|p| p.task_definition.as_deref() == Some(reference));
            if !reported {
                plan.problems.push(Problem {
                    services: uses.into_iter().filter_map(|u| u.service).collect(),
                    task_definition: Some(reference.to_owned()),
                    image: None,
                    error: format!(
                        "not in the view of cluster {cluster} (a published plan holds the task definitions of the cluster's services only)"
                    ),
                });
            }
            continue;
        };
        for names in plan.services.values_mut() {
            for name in names.iter_mut() {
                if name == reference {
                    *name = found.name();
                }
            }
        }
        let arn = found.arn.clone().unwrap_or_else(|| found.name());
        described
            .entry(arn)
            .or_insert_with(|| (found, Vec::new()))
            .1
            .extend(uses);
    }
    for names in plan.services.values_mut() {
        let mut seen = BTreeSet::new();
        names.retain(|name| seen.insert(name.clone()));
    }
    for (task_definition, uses) in described.into_values() {
        place(&mut plan, host, task_definition, &uses, &view.revisions);
    }
    plan
}

/// Decides where `task_definition`'s tasks can run and adds its images to
/// `plan`: wanted when any use can place them here, else skipped with
/// every use's reason.
fn place(
    plan: &mut Plan,
    host: &Host,
    task_definition: &TaskDefinition,
    uses: &[Use],
    revisions: &[ServiceRevision],
) {
    let mut running: BTreeSet<String> = BTreeSet::new();
    let mut deployments: BTreeSet<String> = BTreeSet::new();
    let mut runs_here = false;
    let mut notes: Vec<String> = Vec::new();
    let mut skips: Vec<(SkipReason, String, Option<String>)> = Vec::new();
    for u in uses {
        match decide(host, &u.capacity, &u.constraints, task_definition) {
            Decision::Run { notes: more } => {
                runs_here = true;
                running.extend(u.service.clone());
                deployments.extend(u.deployment.clone());
                for note in more {
                    if !notes.contains(&note) {
                        notes.push(note);
                    }
                }
            }
            Decision::Skip { reason, detail } => skips.push((reason, detail, u.service.clone())),
        }
    }
    let name = task_definition.name();
    if !runs_here {
        let services: BTreeSet<String> = skips.iter().filter_map(|s| s.2.clone()).collect();
        let Some(reason) = skips.first().map(|s| s.0) else {
            return;
        };
        let mut details: Vec<String> = Vec::new();
        for (_, detail, service) in &skips {
            let detail = match service {
                Some(service) => format!("service {service}: {detail}"),
                None => detail.clone(),
            };
            if !details.contains(&detail) {
                details.push(detail);
            }
        }
        for container in &task_definition.containers {
            plan.skipped.push(Skipped {
                services: services.iter().cloned().collect(),
                task_definition: Some(name.clone()),
                image: Some(container.image.clone()),
                reason,
                detail: details.join("; "),
            });
        }
        return;
    }
    let services: Vec<String> = running.into_iter().collect();
    for container in &task_definition.containers {
        match ImageRef::parse(&container.image) {
            Ok(image) => {
                let digest = match (&task_definition.arn, &image.digest) {
                    (Some(arn), None) => {
                        pinned_digest(revisions.iter(), arn, &container.name, &container.image)
                            .map(str::to_owned)
                    }
                    _ => None,
                };
                plan.wanted.push(Wanted {
                    image,
                    task_definition: name.clone(),
                    services: services.clone(),
                    secret: container.credentials_parameter.clone(),
                    execution_role: task_definition.execution_role_arn.clone(),
                    notes: notes.clone(),
                    digest,
                    deployments: deployments.clone(),
                });
            }
            Err(error) => plan.problems.push(Problem {
                services: services.clone(),
                task_definition: Some(name.clone()),
                image: Some(container.image.clone()),
                error: format!("container {:?}: {error}", container.name),
            }),
        }
    }
}

/// Rows of a plan that make one pull: the same reference with the same
/// credential source (and, for sources fetched from AWS, the same role).
#[derive(Debug, Clone)]
pub struct Pull {
    /// The first row; the others differ only in task definition/services.
    pub first: Wanted,
    /// What to pull ([`Wanted::pull_image`] of the first row), worked out
    /// once: `name@digest` where ECS pinned one.
    pub image: ImageRef,
    /// The source's label (`key "..."`, `secretsmanager ...`, `anonymous`).
    pub source: String,
    /// The planned source's kind code (`key`, `task_secret`, `helper`,
    /// `ecr`, `ecr_public`, `anonymous`), as `--json`'s `source` names it.
    pub kind: &'static str,
    /// The `ECS_ENGINE_AUTH_DATA` key as written, when the planned source is
    /// that key.
    pub key: Option<String>,
    /// The execution role the source is provided as, when it is provided
    /// by calling AWS (a secret, an ECR or ECR Public token): two roles
    /// make two pulls.
    pub role: Option<String>,
    /// Every deployment and task set naming it (see [`Wanted::deployments`]).
    pub deployments: BTreeSet<String>,
    pub task_definitions: Vec<String>,
    pub services: Vec<String>,
}

/// The names the pulls leave in the engine as `docker images` lists them
/// (`repository:tag`, Docker Hub's short form): what the ECS agent's
/// `ECS_EXCLUDE_UNTRACKED_IMAGE` must name to spare them. A reference by
/// digest alone has no such name.
pub fn listed_names(pulls: &[Pull]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for pull in pulls {
        let image = &pull.first.image;
        if image.digest.is_some() && image.tag.is_none() {
            continue;
        }
        let name = pullauth_config::ecs_agent::docker_repo_tag(
            &image.domain,
            &image.path,
            image
                .tag
                .as_deref()
                .unwrap_or(pullauth_resolve::image::DEFAULT_TAG),
        );
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Groups `wanted` into distinct pulls: each (reference, source, role) once,
/// in the plan's order.
pub fn pulls(wanted: &[Wanted], table: &RegistryTable, ecr: bool) -> Vec<Pull> {
    let mut out: Vec<Pull> = Vec::new();
    let mut index: BTreeMap<(String, String, Option<String>), usize> = BTreeMap::new();
    for row in wanted {
        let source = row.source(table, ecr);
        // The one rule for role-bound sources: whatever is provided by
        // calling AWS is provided as the task's execution role.
        let role = if source.needs_aws() {
            row.execution_role.clone()
        } else {
            None
        };
        let label = source.to_string();
        let kind = source.code();
        let config_key = match &source {
            Source::Static(entry) => Some(entry.key.written.clone()),
            _ => None,
        };
        let image = row.pull_image();
        let key = (image.pull_reference(), label.clone(), role.clone());
        let at = *index.entry(key).or_insert_with(|| {
            out.push(Pull {
                first: row.clone(),
                image,
                source: label,
                kind,
                key: config_key,
                role,
                deployments: BTreeSet::new(),
                task_definitions: Vec::new(),
                services: Vec::new(),
            });
            out.len() - 1
        });
        let pull = &mut out[at];
        pull.deployments.extend(row.deployments.iter().cloned());
        if !pull.task_definitions.contains(&row.task_definition) {
            pull.task_definitions.push(row.task_definition.clone());
        }
        for service in &row.services {
            if !pull.services.contains(service) {
                pull.services.push(service.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use pullauth_config::AuthType;
    use secrecy::SecretString;

    use super::*;

    fn row(image: &str, td: &str, service: &str, secret: Option<&str>) -> Wanted {
        Wanted {
            image: ImageRef::parse(image).expect("valid"),
            task_definition: td.into(),
            services: vec![service.into()],
            secret: secret.map(str::to_owned),
            execution_role: None,
            notes: vec![],
            digest: None,
            deployments: BTreeSet::new(),
        }
    }

    /// Task definition `family:1`: one essential container running
    /// `registry.example.com/<family>:1`.
    fn one_image_td(family: &str) -> TaskDefinition {
        TaskDefinition {
            arn: Some(format!(
                "arn:aws:ecs:eu-west-1:123456789012:task-definition/{family}:1"
            )),
            family: family.into(),
            revision: Some(1),
            containers: vec![pullauth_ecs::ContainerDefinition {
                name: "app".into(),
                image: format!("registry.example.com/{family}:1"),
                essential: true,
                credentials_parameter: None,
            }],
            ..TaskDefinition::default()
        }
    }

    /// An active service `name` running `name:1` the default way.
    fn one_run_service(name: &str) -> pullauth_ecs::EcsService {
        pullauth_ecs::EcsService {
            name: name.into(),
            status: ServiceStatus::Active,
            deployment_controller: "ECS".into(),
            placement_constraints: vec![],
            runs: vec![pullauth_ecs::Run {
                task_definition: format!("{name}:1"),
                capacity: Capacity::default(),
                id: None,
                origin: "service".into(),
            }],
        }
    }

    #[test]
    fn one_pull_per_reference_and_source() {
        let table = RegistryTable::from_auth_data(
            AuthType::Docker,
            &SecretString::from(
                r#"{"registry.example.com":{"username":"alice","password":"canary-pw"}}"#,
            ),
        )
        .expect("valid");
        let wanted = [
            row("registry.example.com/app:1", "web:1", "web", None),
            row("registry.example.com/app:1", "web:2", "web", None),
            row("registry.example.com/app:1", "api:1", "api", None),
            row("registry.example.com/app:1", "api:2", "api", Some("sec")),
            row("busybox", "api:2", "api", None),
        ];
        let pulls = pulls(&wanted, &table, true);
        assert_eq!(pulls.len(), 3, "{pulls:?}");
        assert_eq!(pulls[0].task_definitions, ["web:1", "web:2", "api:1"]);
        assert_eq!(pulls[0].services, ["web", "api"]);
        assert_eq!(pulls[0].source, "key \"registry.example.com\"");
        assert_eq!(pulls[1].source, "secretsmanager sec");
        assert_eq!(pulls[2].source, "anonymous");
        assert!(!format!("{pulls:?}").contains("canary-pw"));
    }

    /// Issue 25: ECR Public tokens are fetched as the task's execution
    /// role, so two task definitions with two roles make two pulls of the
    /// same image (one per role), as for secrets and ECR; a key's pull is
    /// shared whatever the role.
    #[test]
    fn role_bound_sources_make_one_pull_per_role() {
        let table = RegistryTable::from_auth_data(
            AuthType::Docker,
            &SecretString::from(r#"{"registry.example.com":{"username":"a","password":"p"}}"#),
        )
        .expect("valid");
        let with_role = |image: &str, td: &str, role: &str| Wanted {
            execution_role: Some(format!("arn:aws:iam::123456789012:role/{role}")),
            ..row(image, td, "svc", None)
        };
        let wanted = [
            with_role("public.ecr.aws/team/app:1", "a:1", "alpha"),
            with_role("public.ecr.aws/team/app:1", "b:1", "beta"),
            with_role("registry.example.com/app:1", "a:1", "alpha"),
            with_role("registry.example.com/app:1", "b:1", "beta"),
        ];
        let pulls = pulls(&wanted, &table, true);
        let public: Vec<_> = pulls.iter().filter(|p| p.kind == "ecr_public").collect();
        assert_eq!(public.len(), 2, "{pulls:?}");
        assert_ne!(public[0].role, public[1].role);
        let keyed: Vec<_> = pulls.iter().filter(|p| p.kind == "key").collect();
        assert_eq!(keyed.len(), 1, "{pulls:?}");
        assert_eq!(keyed[0].role, None);
        assert_eq!(keyed[0].key.as_deref(), Some("registry.example.com"));
    }

    /// A follower of a published plan decides from the publisher's view:
    /// the same view gives each host its own plan, a filter narrows it, and
    /// a task definition the view does not hold is a problem naming it.
    #[test]
    fn a_view_decides_per_host_and_filter() {
        use pullauth_ecs::RuntimePlatform;
        let td = |family: &str, arch: &str| TaskDefinition {
            runtime_platform: Some(RuntimePlatform {
                cpu_architecture: Some(arch.into()),
                operating_system_family: None,
            }),
            ..one_image_td(family)
        };
        let mut view = ClusterView {
            cluster: "prod".into(),
            services_read: true,
            services: vec![one_run_service("web"), one_run_service("arm")],
            ..ClusterView::default()
        };
        view.task_definitions
            .insert("web:1".into(), td("web", "X86_64"));
        view.task_definitions
            .insert("arm:1".into(), td("arm", "ARM64"));
        let images = |plan: &Plan| -> Vec<String> {
            plan.wanted
                .iter()
                .map(|w| w.image.original.clone())
                .collect()
        };

        let x86 = decide_plan(
            &view,
            &Filters::default(),
            &Host::from_engine("x86_64", "linux"),
        );
        assert_eq!(images(&x86), ["registry.example.com/web:1"]);
        assert_eq!(x86.skipped.len(), 1, "{x86:?}");
        let arm = decide_plan(
            &view,
            &Filters::default(),
            &Host::from_engine("aarch64", "linux"),
        );
        assert_eq!(images(&arm), ["registry.example.com/arm:1"]);

        let only_web = Filters {
            services: vec!["web".into()],
            task_definitions: vec!["batch:7".into()],
        };
        let plan = decide_plan(&view, &only_web, &Host::from_engine("x86_64", "linux"));
        assert_eq!(images(&plan), ["registry.example.com/web:1"]);
        assert!(plan.skipped.is_empty(), "{plan:?}");
        assert_eq!(plan.problems.len(), 1, "{plan:?}");
        let problem = plan.problems[0].to_string();
        assert!(
            problem.starts_with("task definition batch:7: not in the view of cluster prod"),
            "{problem}"
        );
    }

    /// `ECS_INSTANCE_ATTRIBUTES` decides `memberOf` on its attributes
    /// without asking ECS (a plan follower asks nothing): a service for
    /// another stack is skipped, this stack's is pulled, and a constraint
    /// on an attribute it does not set is pulled with a note, as before.
    #[tokio::test]
    async fn instance_attributes_from_the_ecs_config_decide_member_of() {
        use pullauth_ecs::PlacementConstraint;
        let constrained = |family: &str, expression: &str| TaskDefinition {
            placement_constraints: vec![PlacementConstraint {
                kind: "memberOf".into(),
                expression: Some(expression.into()),
            }],
            ..one_image_td(family)
        };
        let mut view = ClusterView {
            cluster: "prod".into(),
            services_read: true,
            services: vec![
                one_run_service("prod"),
                one_run_service("dev"),
                one_run_service("team"),
            ],
            ..ClusterView::default()
        };
        for (family, expression) in [
            ("prod", "attribute:stack == prod"),
            ("dev", "attribute:stack == dev"),
            ("team", "attribute:team == payments"),
        ] {
            view.task_definitions
                .insert(format!("{family}:1"), constrained(family, expression));
        }
        let custom = BTreeMap::from([("stack".to_owned(), "prod".to_owned())]);
        let linux_x86 = || {
            Ok(Platform {
                architecture: Some("x86_64".into()),
                os_type: Some("linux".into()),
            })
        };
        let (host, notes) = host_facts(linux_x86(), None, &custom, None).await;
        assert!(notes.is_empty(), "{notes:?}");
        assert!(!host.facts.complete, "other custom attributes stay unknown");

        let plan = decide_plan(&view, &Filters::default(), &host);
        let pulled: Vec<(&str, usize)> = plan
            .wanted
            .iter()
            .map(|w| (w.image.original.as_str(), w.notes.len()))
            .collect();
        assert_eq!(
            pulled,
            [
                ("registry.example.com/prod:1", 0),
                ("registry.example.com/team:1", 1),
            ],
            "{plan:?}"
        );
        let [skipped] = plan.skipped.as_slice() else {
            panic!("one skipped: {plan:?}");
        };
        assert_eq!(skipped.image.as_deref(), Some("registry.example.com/dev:1"));
        assert_eq!(skipped.reason, SkipReason::MemberOf);

        // Without the attributes, nothing is decided: all three are pulled.
        let (bare, _) = host_facts(linux_x86(), None, &BTreeMap::new(), None).await;
        let plan = decide_plan(&view, &Filters::default(), &bare);
        assert_eq!(plan.wanted.len(), 3, "{plan:?}");
        assert!(plan.skipped.is_empty(), "{plan:?}");
    }

    #[test]
    fn filters_read_services_unless_only_task_definitions_are_named() {
        assert!(Filters::default().reads_services());
        let only_td = Filters {
            services: vec![],
            task_definitions: vec!["batch:3".into()],
        };
        assert!(!only_td.reads_services());
        let both = Filters {
            services: vec!["web".into()],
            task_definitions: vec!["batch:3".into()],
        };
        assert!(both.reads_services());
    }

    #[test]
    fn problems_name_service_task_definition_and_image() {
        let p = Problem {
            services: vec!["web".into()],
            task_definition: Some("web:3".into()),
            image: Some("Bad//Ref".into()),
            error: "container \"app\": invalid".into(),
        };
        assert_eq!(
            p.to_string(),
            "service web: task definition web:3: image \"Bad//Ref\": container \"app\": invalid"
        );
    }
}
