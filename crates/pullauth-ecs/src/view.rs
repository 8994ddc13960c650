//! What is read of a cluster, before any instance decides: the services
//! and their runs, the task definitions they name, the service revisions
//! that pinned digests, and what could not be read ([`ClusterView`]). The
//! same for every instance, so it can be read once and shared: the
//! [`PlanDocument`] wraps it with what a follower checks before trusting
//! it (schema, cluster, age) and is what `prefetch --publish` writes to S3.
//!
//! The document holds no secret: secret and role ARNs, image references,
//! task-definition and service names only. Credentials are obtained on each
//! instance, as when it reads ECS itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{EcsService, ServiceRevision, TaskDefinition};

/// The schema of a [`PlanDocument`] this build writes and reads. A change
/// that older followers would misread gets a new one; they then keep their
/// last good plan and say why.
pub const PLAN_SCHEMA: &str = "pullauth.cluster-plan/v1";

/// The largest plan document a follower reads (4 MiB: a cluster with a
/// thousand services of ten containers each is about 1.5 MiB).
pub const MAX_PLAN_BYTES: usize = 4 * 1024 * 1024;

/// Something read from ECS that could not be used: a service ECS would not
/// describe, a task definition it would not describe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadProblem {
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub task_definition: Option<String>,
    pub error: String,
}

/// A cluster's services as read from ECS, with everything placement and
/// pinning need. Instance-independent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterView {
    /// The cluster, as the reader named it.
    pub cluster: String,
    /// Whether the services were listed (not when only task definitions
    /// were asked for).
    pub services_read: bool,
    /// Every service read (narrowed by the reader's service filter).
    pub services: Vec<EcsService>,
    /// Each task definition a run or filter names, by that name, as
    /// described.
    pub task_definitions: BTreeMap<String, TaskDefinition>,
    /// The service revisions read, for pinned digests.
    pub revisions: Vec<ServiceRevision>,
    /// What could not be read.
    pub problems: Vec<ReadProblem>,
    /// Said once per cause (the service revisions cannot be read, ...).
    pub warnings: Vec<String>,
}

/// A [`ClusterView`] as published: the view and what a follower checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanDocument {
    /// [`PLAN_SCHEMA`].
    pub schema: String,
    /// The cluster the view is of, as the publisher names it (a name or an
    /// ARN).
    pub cluster: String,
    /// When the publisher started reading ECS for this view (RFC 3339,
    /// UTC): a publisher never replaces a plan read after its own.
    pub read_at: String,
    /// When a publisher last confirmed the view is current (RFC 3339, UTC):
    /// a plan not confirmed for long has lost its publisher.
    pub checked_at: String,
    /// Who published it (the instance ID, or the host name).
    pub publisher: String,
    pub view: ClusterView,
}

/// Why a plan document is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanDocError {
    #[error("the plan is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("the plan is not a pullauth cluster plan ({0})")]
    Unreadable(String),
    #[error(
        "the plan's schema is {found:?}; this build reads {PLAN_SCHEMA:?} (upgrade pullauth on the followers, or publish with the same version)"
    )]
    Schema { found: String },
    #[error(
        "the plan is of cluster {found:?}, not {expected:?} (another cluster's plan at this key)"
    )]
    Cluster { found: String, expected: String },
}

impl PlanDocument {
    /// Reads a published plan for `cluster`: within [`MAX_PLAN_BYTES`],
    /// valid JSON of [`PLAN_SCHEMA`], of that cluster (a name matches the
    /// last part of an ARN).
    pub fn parse(body: &[u8], cluster: &str) -> Result<PlanDocument, PlanDocError> {
        if body.len() > MAX_PLAN_BYTES {
            return Err(PlanDocError::TooLarge {
                size: body.len(),
                limit: MAX_PLAN_BYTES,
            });
        }
        // The schema first: a newer schema may not parse as this one.
        #[derive(Deserialize)]
        struct Head {
            schema: Option<String>,
        }
        let head: Head = serde_json::from_slice(body).map_err(|e| {
            PlanDocError::Unreadable(format!(
                "not valid JSON: line {}, column {}{}",
                e.line(),
                e.column(),
                if e.is_eof() { ", truncated" } else { "" }
            ))
        })?;
        match head.schema {
            Some(schema) if schema == PLAN_SCHEMA => {}
            found => {
                return Err(PlanDocError::Schema {
                    found: found.unwrap_or_default(),
                });
            }
        }
        let doc: PlanDocument = serde_json::from_slice(body).map_err(|e| {
            PlanDocError::Unreadable(format!("line {}, column {}: {e}", e.line(), e.column()))
        })?;
        if !same_cluster(&doc.cluster, cluster) {
            return Err(PlanDocError::Cluster {
                found: doc.cluster,
                expected: cluster.to_owned(),
            });
        }
        Ok(doc)
    }

    /// The document as written to S3.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, maps and vectors: cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Whether two names of a cluster are the same cluster: equal, or one an
/// ARN (`arn:...:cluster/NAME`) whose name is the other. Two ARNs must be
/// equal (another account or Region is another cluster).
pub fn same_cluster(a: &str, b: &str) -> bool {
    fn name(cluster: &str) -> Option<&str> {
        cluster
            .strip_prefix("arn:")
            .and_then(|rest| rest.rsplit_once(":cluster/"))
            .map(|(_, name)| name)
    }
    match (name(a), name(b)) {
        (Some(_), Some(_)) | (None, None) => a == b,
        (Some(name), None) => name == b,
        (None, Some(name)) => a == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Capacity, ContainerDefinition, Run, ServiceStatus};

    fn doc() -> PlanDocument {
        let mut view = ClusterView {
            cluster: "prod".into(),
            services_read: true,
            ..ClusterView::default()
        };
        view.services.push(EcsService {
            name: "web".into(),
            status: ServiceStatus::Active,
            deployment_controller: "ECS".into(),
            placement_constraints: vec![],
            runs: vec![Run {
                task_definition: "web:3".into(),
                capacity: Capacity {
                    launch_type: Some("EC2".into()),
                    capacity_providers: vec![],
                },
                id: Some("ecs-svc/1".into()),
                origin: "deployment PRIMARY".into(),
            }],
        });
        view.task_definitions.insert(
            "web:3".into(),
            TaskDefinition {
                arn: Some("arn:aws:ecs:eu-west-1:123456789012:task-definition/web:3".into()),
                family: "web".into(),
                revision: Some(3),
                containers: vec![ContainerDefinition {
                    name: "app".into(),
                    image: "registry.example.com/web:3".into(),
                    essential: true,
                    credentials_parameter: Some(
                        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:reg".into(),
                    ),
                }],
                ..TaskDefinition::default()
            },
        );
        PlanDocument {
            schema: PLAN_SCHEMA.into(),
            cluster: "prod".into(),
            read_at: "2026-12-07T10:00:00.000Z".into(),
            checked_at: "2026-12-07T10:00:01.000Z".into(),
            publisher: "i-0123".into(),
            view,
        }
    }

    #[test]
    fn a_document_reads_back_as_written() {
        let doc = doc();
        let back = PlanDocument::parse(&doc.to_json(), "prod").expect("valid");
        assert_eq!(back, doc);
        // An ARN of the same cluster is the same cluster.
        PlanDocument::parse(
            &doc.to_json(),
            "arn:aws:ecs:eu-west-1:123456789012:cluster/prod",
        )
        .expect("same cluster");
    }

    #[test]
    fn foreign_truncated_garbage_and_oversized_plans_are_refused() {
        let json = doc().to_json();
        assert!(matches!(
            PlanDocument::parse(&json, "staging"),
            Err(PlanDocError::Cluster { .. })
        ));
        let truncated =
            PlanDocument::parse(&json[..json.len() / 2], "prod").expect_err("truncated");
        assert!(truncated.to_string().contains("truncated"), "{truncated}");
        assert!(matches!(
            PlanDocument::parse(b"<html>502</html>", "prod"),
            Err(PlanDocError::Unreadable(_))
        ));
        let big = vec![b' '; MAX_PLAN_BYTES + 1];
        assert!(matches!(
            PlanDocument::parse(&big, "prod"),
            Err(PlanDocError::TooLarge { .. })
        ));
        let newer = String::from_utf8(json)
            .expect("utf-8")
            .replace(PLAN_SCHEMA, "pullauth.cluster-plan/v2");
        let err = PlanDocument::parse(newer.as_bytes(), "prod").expect_err("a newer schema");
        assert!(matches!(err, PlanDocError::Schema { .. }), "{err}");
        assert!(matches!(
            PlanDocument::parse(br#"{"cluster":"prod"}"#, "prod"),
            Err(PlanDocError::Schema { .. })
        ));
    }

    #[test]
    fn unknown_fields_are_ignored_within_a_schema() {
        let mut value: serde_json::Value = serde_json::from_slice(&doc().to_json()).expect("json");
        value["view"]["futureField"] = serde_json::json!([1, 2]);
        let body = serde_json::to_vec(&value).expect("json");
        assert_eq!(PlanDocument::parse(&body, "prod").expect("valid"), doc());
    }

    #[test]
    fn cluster_names_and_arns() {
        assert!(same_cluster("prod", "prod"));
        assert!(same_cluster(
            "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
            "prod"
        ));
        assert!(!same_cluster("prod", "production"));
        assert!(!same_cluster(
            "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
            "arn:aws:ecs:us-east-1:210987654321:cluster/prod"
        ));
        assert!(!same_cluster(
            "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
            "staging"
        ));
    }
}
