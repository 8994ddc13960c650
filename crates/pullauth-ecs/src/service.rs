//! Which task definitions a service runs, and how: every way ECS runs a
//! service counts.
//!
//! - The `ECS` deployment controller (rolling updates) keeps them in
//!   `deployments`: `PRIMARY` (the new one) and `ACTIVE` (still running
//!   while it drains) both run tasks.
//! - `CODE_DEPLOY` (blue/green) and `EXTERNAL` keep them in `taskSets`:
//!   `PRIMARY` and `ACTIVE` task sets both run tasks (the green one is
//!   `ACTIVE` until traffic shifts, which is when prefetch matters).
//! - The service's own `taskDefinition` (absent for `EXTERNAL`) is added
//!   last: moto's `UpdateService` changes only that one.
//!
//! Each run carries its own launch type or capacity provider strategy (a
//! deployment or task set inherits the service's when it has none), so
//! placement can be decided per run.

use crate::taskdef::PlacementConstraint;

/// A service's `status` (written as ECS writes it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ServiceStatus {
    Active,
    Draining,
    Inactive,
    /// A status this build does not know, as ECS wrote it.
    Other(String),
}

impl From<String> for ServiceStatus {
    fn from(status: String) -> ServiceStatus {
        ServiceStatus::parse(Some(&status))
    }
}

impl From<ServiceStatus> for String {
    fn from(status: ServiceStatus) -> String {
        status.as_str().to_owned()
    }
}

impl ServiceStatus {
    pub fn parse(status: Option<&str>) -> ServiceStatus {
        match status {
            // A service without a status (some emulators) is taken as
            // running: a missed service is the worse mistake.
            None | Some("ACTIVE") => ServiceStatus::Active,
            Some("DRAINING") => ServiceStatus::Draining,
            Some("INACTIVE") => ServiceStatus::Inactive,
            Some(other) => ServiceStatus::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ServiceStatus::Active => "ACTIVE",
            ServiceStatus::Draining => "DRAINING",
            ServiceStatus::Inactive => "INACTIVE",
            ServiceStatus::Other(other) => other,
        }
    }
}

/// How a service's tasks get capacity: a launch type, or a capacity
/// provider strategy (the provider names).
#[derive(
    Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "camelCase", default)]
pub struct Capacity {
    pub launch_type: Option<String>,
    pub capacity_providers: Vec<String>,
}

impl Capacity {
    /// This capacity, or `fallback` where this one says nothing.
    pub fn or(self, fallback: &Capacity) -> Capacity {
        if self.launch_type.is_none() && self.capacity_providers.is_empty() {
            fallback.clone()
        } else {
            self
        }
    }
}

/// One way a service runs one task definition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// As ECS names it (an ARN, or `family:revision`).
    pub task_definition: String,
    pub capacity: Capacity,
    /// The deployment's or task set's ID (`ecs-svc/...`, `ecs-svc/...`):
    /// a new one (a new deployment, a forced one, a new task set) means
    /// ECS starts tasks again, so a tag it names is pulled again.
    pub id: Option<String>,
    /// Where it was found: `deployment PRIMARY`, `task set ACTIVE`,
    /// `service`.
    pub origin: String,
}

/// A deployment or task set as ECS describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollout {
    pub id: Option<String>,
    pub status: Option<String>,
    pub task_definition: Option<String>,
    pub capacity: Capacity,
}

/// A service, as prefetch reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EcsService {
    pub name: String,
    pub status: ServiceStatus,
    /// `ECS`, `CODE_DEPLOY` or `EXTERNAL` (`ECS` when not given).
    pub deployment_controller: String,
    /// The service's own placement constraints.
    pub placement_constraints: Vec<PlacementConstraint>,
    /// Every task definition it runs, each with its capacity; empty when it
    /// names none at all (reported, never skipped silently).
    pub runs: Vec<Run>,
}

/// The runs of a service: `PRIMARY`/`ACTIVE` deployments, then
/// `PRIMARY`/`ACTIVE` task sets, then the service's own task definition;
/// each (task definition, capacity) once, in that order.
pub fn runs(
    own: Option<&str>,
    service_capacity: &Capacity,
    deployments: &[Rollout],
    task_sets: &[Rollout],
) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    let mut add =
        |task_definition: &str, capacity: Capacity, origin: String, id: Option<&String>| {
            if task_definition.is_empty()
                || out.iter().any(|r| {
                    r.task_definition == task_definition
                        && r.capacity == capacity
                        && (id.is_none() || r.id.as_ref() == id)
                })
            {
                return;
            }
            out.push(Run {
                task_definition: task_definition.to_owned(),
                capacity,
                origin,
                id: id.cloned(),
            });
        };
    for (kind, rollouts) in [("deployment", deployments), ("task set", task_sets)] {
        for rollout in rollouts {
            let Some(status) = rollout.status.as_deref() else {
                continue;
            };
            if !matches!(status, "PRIMARY" | "ACTIVE") {
                continue;
            }
            if let Some(task_definition) = &rollout.task_definition {
                add(
                    task_definition,
                    rollout.capacity.clone().or(service_capacity),
                    format!("{kind} {status}"),
                    rollout.id.as_ref(),
                );
            }
        }
    }
    if let Some(own) = own {
        add(own, service_capacity.clone(), "service".to_owned(), None);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(status: &str, td: &str, launch: Option<&str>) -> Rollout {
        Rollout {
            id: Some(format!("ecs-svc/{status}-{td}")),
            status: Some(status.into()),
            task_definition: Some(td.into()),
            capacity: Capacity {
                launch_type: launch.map(str::to_owned),
                capacity_providers: vec![],
            },
        }
    }

    fn ec2() -> Capacity {
        Capacity {
            launch_type: Some("EC2".into()),
            capacity_providers: vec![],
        }
    }

    fn tds(runs: &[Run]) -> Vec<&str> {
        runs.iter().map(|r| r.task_definition.as_str()).collect()
    }

    #[test]
    fn rolling_update_runs_primary_and_active_deployments() {
        let runs = runs(
            Some("web:2"),
            &ec2(),
            &[
                rollout("PRIMARY", "web:2", None),
                rollout("ACTIVE", "web:1", None),
                rollout("INACTIVE", "web:0", None),
            ],
            &[],
        );
        assert_eq!(tds(&runs), ["web:2", "web:1"]);
        assert_eq!(runs[0].origin, "deployment PRIMARY");
        assert_eq!(runs[1].capacity, ec2(), "inherits the service's");
    }

    #[test]
    fn blue_green_runs_both_task_sets() {
        let runs = runs(
            Some("web:1"),
            &Capacity::default(),
            &[],
            &[
                rollout("PRIMARY", "web:1", Some("EC2")),
                rollout("ACTIVE", "web:2", Some("EC2")),
                rollout("DRAINING", "web:0", Some("EC2")),
            ],
        );
        assert_eq!(tds(&runs), ["web:1", "web:2", "web:1"]);
        assert_eq!(runs[1].origin, "task set ACTIVE");
        assert_eq!(
            runs[2].origin, "service",
            "own, with the service's capacity"
        );
    }

    #[test]
    fn external_service_without_own_task_definition() {
        let runs = runs(
            None,
            &Capacity::default(),
            &[],
            &[rollout("ACTIVE", "batch:4", Some("FARGATE"))],
        );
        assert_eq!(tds(&runs), ["batch:4"]);
        assert_eq!(runs[0].capacity.launch_type.as_deref(), Some("FARGATE"));
    }

    #[test]
    fn names_nothing() {
        assert!(runs(None, &Capacity::default(), &[], &[]).is_empty());
    }

    #[test]
    fn statuses() {
        assert_eq!(ServiceStatus::parse(None), ServiceStatus::Active);
        assert_eq!(
            ServiceStatus::parse(Some("DRAINING")),
            ServiceStatus::Draining
        );
        assert_eq!(ServiceStatus::parse(Some("INACTIVE")).as_str(), "INACTIVE");
        assert_eq!(ServiceStatus::parse(Some("NEW")).as_str(), "NEW");
    }
}
