//! What the agent records, shaped as the ECS agent's introspection API
//! shows it. No record holds a secret: a pull names the registry key and
//! username it used, never a password.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Lifecycle of a task or container as far as image pulls go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Recorded, pull not started.
    None,
    /// Pull in progress (or to be resumed after a restart).
    Pulling,
    /// Image present.
    Pulled,
    /// Pull failed and the behavior does not allow a cached image.
    Stopped,
}

impl Status {
    /// Whether nothing more will happen to it.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Pulled | Status::Stopped)
    }
}

/// One container of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Container {
    pub name: String,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: Option<String>,
    pub known_status: Status,
    pub essential: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pull_error: Option<String>,
    /// The `ECS_ENGINE_AUTH_DATA` key used for the pull, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub registry_key: Option<String>,
    /// The username presented, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub username: Option<String>,
    /// `repositoryCredentials.credentialsParameter`: the ARN or name of the
    /// Secrets Manager secret the pull's credentials come from. Only the
    /// name is kept; the value is fetched again for every pull.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub credentials_parameter: Option<String>,
}

impl Container {
    /// A container whose pull has not started.
    pub fn new(name: String, image: String, essential: bool) -> Container {
        Container {
            name,
            image,
            image_id: None,
            known_status: Status::None,
            essential,
            pull_error: None,
            registry_key: None,
            username: None,
            credentials_parameter: None,
        }
    }
}

/// A task: a family and its containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    pub arn: String,
    pub family: String,
    pub known_status: Status,
    pub desired_status: Status,
    /// RFC 3339 time the first pull started.
    pub pull_started_at: Option<String>,
    /// RFC 3339 time the last pull ended.
    pub pull_stopped_at: Option<String>,
    pub containers: Vec<Container>,
    /// `executionRoleArn`: the role whose credentials fetch the task's
    /// secrets and ECR tokens (the agent's own credentials when absent).
    #[serde(
        rename = "ExecutionRoleArn",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub execution_role_arn: Option<String>,
}

impl Task {
    /// A newly submitted task: nothing pulled yet, desired state `PULLED`.
    pub fn new(arn: String, family: String, containers: Vec<Container>) -> Task {
        let mut task = Task {
            arn,
            family,
            known_status: Status::None,
            desired_status: Status::Pulled,
            pull_started_at: None,
            pull_stopped_at: None,
            containers,
            execution_role_arn: None,
        };
        task.recompute_status();
        task
    }

    /// Derives the task status from its containers: `STOPPED` when an
    /// essential container failed, `PULLED` when all are pulled, else
    /// `PULLING` once any pull started.
    pub fn recompute_status(&mut self) {
        let essential_failed = self
            .containers
            .iter()
            .any(|c| c.essential && c.known_status == Status::Stopped);
        let all_final = self.containers.iter().all(|c| c.known_status.is_final());
        self.known_status = if essential_failed {
            Status::Stopped
        } else if all_final {
            Status::Pulled
        } else if self
            .containers
            .iter()
            .any(|c| c.known_status != Status::None)
        {
            Status::Pulling
        } else {
            Status::None
        };
    }
}

/// What this host knows about an image it pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageRecord {
    #[serde(rename = "ImageID")]
    pub image_id: Option<String>,
    /// References this image was pulled as.
    pub names: Vec<String>,
    pub pulled_at: Option<String>,
    pub last_used_at: String,
    pub pull_succeeded: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub registry_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub username: Option<String>,
    /// Pulled by prefetch and not used by a task since: the follower may
    /// remove it once no followed service names it. An image pullauth did
    /// not download itself is never marked.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub prefetched: bool,
}

/// Now, as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    rfc3339_millis(SystemTime::now())
}

/// The last instant RFC 3339 (and humantime, which panics beyond it) can
/// write: 9999-12-31T23:59:59.999Z.
const LAST_FORMATTABLE: Duration = Duration::from_millis(253_402_300_799_999);

/// `at` within what RFC 3339 can write: 1970 to 9999 (humantime's
/// formatters panic outside; nothing reaching a view may panic, so times
/// are clamped here; values from outside are refused before, at the edge).
fn formattable(at: SystemTime) -> SystemTime {
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SystemTime::UNIX_EPOCH + since_epoch.min(LAST_FORMATTABLE)
}

/// `at` as RFC 3339 with whole seconds; total: clamped to 1970..9999.
pub fn rfc3339_seconds(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(formattable(at)).to_string()
}

/// `at` as RFC 3339 with milliseconds; total: clamped to 1970..9999.
pub fn rfc3339_millis(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(formattable(at)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_a_time_is_total() {
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(rfc3339_seconds(far), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_millis(far), "9999-12-31T23:59:59.999Z");
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(rfc3339_seconds(before), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_299_200_250);
        assert_eq!(rfc3339_millis(t), "2026-12-03T12:00:00.250Z");
    }

    fn container(essential: bool, status: Status) -> Container {
        Container {
            known_status: status,
            ..Container::new("c".into(), "i".into(), essential)
        }
    }

    fn task(containers: Vec<Container>) -> Task {
        Task::new("a".into(), "f".into(), containers)
    }

    #[test]
    fn task_status_follows_containers() {
        assert_eq!(
            task(vec![container(true, Status::None)]).known_status,
            Status::None
        );
        assert_eq!(
            task(vec![
                container(true, Status::Pulled),
                container(true, Status::Pulling)
            ])
            .known_status,
            Status::Pulling
        );
        assert_eq!(
            task(vec![
                container(true, Status::Pulled),
                container(false, Status::Stopped)
            ])
            .known_status,
            Status::Pulled
        );
        assert_eq!(
            task(vec![
                container(true, Status::Stopped),
                container(true, Status::Pulling)
            ])
            .known_status,
            Status::Stopped
        );
    }

    #[test]
    fn serializes_with_ecs_field_names() {
        let json = serde_json::to_value(task(vec![container(true, Status::Pulled)])).expect("json");
        assert_eq!(json["KnownStatus"], "PULLED");
        assert_eq!(json["Containers"][0]["ImageID"], serde_json::Value::Null);
        assert!(json["Containers"][0].get("PullError").is_none());
        assert!(json.get("PullStartedAt").is_some());
    }
}
