//! ECS as a source of work: which images a cluster's services need, each
//! with what ECS would pull it with (`repositoryCredentials` and the task
//! definition's execution role). Shared by `pullauth prefetch` (one shot)
//! and [`crate::follow`] (serve, on an interval).
//!
//! The plan only says *what* to pull; which credential source applies is
//! the resolver's answer ([`RegistryTable::source`]) at pull time, and the
//! [`crate::credentials::Provider`] provides it, as for a submitted task.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use pullauth_aws::{Aws, AwsError, EcsTaskDefinition, RoleArn};
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
    pub task_definition_arn: String,
    /// The services running this task definition (empty for one named by
    /// a task-definition filter only).
    pub services: Vec<String>,
    /// `repositoryCredentials.credentialsParameter`.
    pub secret: Option<String>,
    /// The task definition's `executionRoleArn`, as written.
    pub execution_role: Option<String>,
}

impl Wanted {
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

/// What the cluster needs, as read now.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// One row per (task definition, container) with a valid image.
    pub wanted: Vec<Wanted>,
    pub problems: Vec<Problem>,
    /// Each followed service and the task definitions (`family:revision`
    /// once described, else as ECS named them) it runs.
    pub services: BTreeMap<String, Vec<String>>,
}

/// Reads what `cluster`'s services (narrowed and extended by `filters`)
/// need. Fails only if the services cannot be listed (a missing cluster,
/// access denied, ECS unreachable); a task definition that cannot be
/// described or an invalid image is a [`Problem`] and the rest goes on.
pub async fn plan(aws: &Aws, cluster: &str, filters: &Filters) -> Result<Plan, AwsError> {
    let mut plan = Plan::default();
    // Task definition reference -> services naming it.
    let mut references: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    if filters.reads_services() {
        let listed = aws.ecs_services(cluster).await?;
        for failure in listed.failures {
            plan.problems.push(Problem {
                services: vec![failure.service],
                task_definition: None,
                image: None,
                error: format!(
                    "ecs:DescribeServices in cluster {cluster}: {}",
                    failure.reason
                ),
            });
        }
        for wanted in &filters.services {
            if !listed.services.iter().any(|s| &s.name == wanted) {
                plan.problems.push(Problem {
                    services: vec![wanted.clone()],
                    task_definition: None,
                    image: None,
                    error: format!("no such service in cluster {cluster}"),
                });
            }
        }
        for service in listed.services {
            if !filters.services.is_empty() && !filters.services.contains(&service.name) {
                continue;
            }
            plan.services
                .insert(service.name.clone(), service.task_definitions.clone());
            for reference in service.task_definitions {
                references
                    .entry(reference)
                    .or_default()
                    .insert(service.name.clone());
            }
        }
    }
    for reference in &filters.task_definitions {
        references.entry(reference.clone()).or_default();
    }
    // Described task definitions by ARN: the same revision may be named as
    // an ARN by one service and as family:revision by another.
    let mut described: BTreeMap<String, (Arc<EcsTaskDefinition>, BTreeSet<String>)> =
        BTreeMap::new();
    let answers = futures_util::future::join_all(
        references
            .keys()
            .map(|reference| aws.ecs_task_definition(reference)),
    )
    .await;
    for ((reference, services), answer) in references.into_iter().zip(answers) {
        match answer {
            Ok(found) => {
                for names in plan.services.values_mut() {
                    for name in names.iter_mut() {
                        if *name == reference {
                            *name = found.name();
                        }
                    }
                }
                described
                    .entry(found.arn.clone())
                    .or_insert_with(|| (found, BTreeSet::new()))
                    .1
                    .extend(services);
            }
            Err(error) => plan.problems.push(Problem {
                services: services.into_iter().collect(),
                task_definition: Some(reference),
                image: None,
                error: error.to_string(),
            }),
        }
    }
    for names in plan.services.values_mut() {
        let mut seen = BTreeSet::new();
        names.retain(|name| seen.insert(name.clone()));
    }
    for (task_definition, services) in described.into_values() {
        let services: Vec<String> = services.into_iter().collect();
        for container in &task_definition.containers {
            match ImageRef::parse(&container.image) {
                Ok(image) => plan.wanted.push(Wanted {
                    image,
                    task_definition: task_definition.name(),
                    task_definition_arn: task_definition.arn.clone(),
                    services: services.clone(),
                    secret: container.credentials_parameter.clone(),
                    execution_role: task_definition.execution_role_arn.clone(),
                }),
                Err(error) => plan.problems.push(Problem {
                    services: services.clone(),
                    task_definition: Some(task_definition.name()),
                    image: Some(container.image.clone()),
                    error: format!("container {:?}: {error}", container.name),
                }),
            }
        }
    }
    Ok(plan)
}

/// Rows of a plan that make one pull: the same reference with the same
/// credential source (and, for sources fetched from AWS, the same role).
#[derive(Debug, Clone)]
pub struct Pull {
    /// The first row; the others differ only in task definition/services.
    pub first: Wanted,
    /// The source's label (`key "..."`, `secretsmanager ...`, `anonymous`).
    pub source: String,
    pub task_definitions: Vec<String>,
    pub services: Vec<String>,
}

/// Groups `wanted` into distinct pulls: each (reference, source, role) once,
/// in the plan's order.
pub fn pulls(wanted: &[Wanted], table: &RegistryTable, ecr: bool) -> Vec<Pull> {
    let mut out: Vec<Pull> = Vec::new();
    let mut index: BTreeMap<(String, String, Option<String>), usize> = BTreeMap::new();
    for row in wanted {
        let source = row.source(table, ecr);
        let role = match source {
            Source::TaskSecret(_) | Source::Ecr(_) => row.execution_role.clone(),
            _ => None,
        };
        let label = source.to_string();
        let key = (row.image.pull_reference(), label.clone(), role);
        let at = *index.entry(key).or_insert_with(|| {
            out.push(Pull {
                first: row.clone(),
                source: label,
                task_definitions: Vec::new(),
                services: Vec::new(),
            });
            out.len() - 1
        });
        let pull = &mut out[at];
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
            task_definition_arn: format!("arn:aws:ecs:us-east-1:1:task-definition/{td}"),
            services: vec![service.into()],
            secret: secret.map(str::to_owned),
            execution_role: None,
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
