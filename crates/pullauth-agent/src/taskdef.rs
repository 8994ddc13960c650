//! Task definitions as submitted on the control API, validated into a task.
//!
//! Parsed by hand from `serde_json::Value` so that every error names the
//! field (`containerDefinitions[1].image`) and none quotes a value: task
//! definitions may carry environment variables with secrets in them.

use pullauth_aws::RoleArn;
use pullauth_resolve::ImageRef;
use pullauth_store::{Container, Task};
use serde_json::Value;

/// Why a task definition was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct TaskDefError {
    pub field: String,
    pub problem: String,
}

/// Most containers one task may define, as in ECS: every container costs a
/// pull and a store record, so one submission's cost stays bounded.
pub const MAX_CONTAINERS: usize = 10;

fn err(field: impl Into<String>, problem: impl Into<String>) -> TaskDefError {
    TaskDefError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Builds a new task (all containers `NONE`) from a definition.
pub fn parse(body: &[u8], arn: String) -> Result<Task, TaskDefError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        err(
            "body",
            format!("not valid JSON (line {}, column {})", e.line(), e.column()),
        )
    })?;
    let Value::Object(def) = value else {
        return Err(err("body", "must be a JSON object"));
    };
    let family = match def.get("family") {
        Some(Value::String(f)) if !f.trim().is_empty() => f.clone(),
        Some(Value::String(_)) => return Err(err("family", "must not be empty")),
        Some(_) => return Err(err("family", "must be a string")),
        None => return Err(err("family", "is required")),
    };
    let definitions = match def.get("containerDefinitions") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => {
            return Err(err(
                "containerDefinitions",
                "must hold at least one container",
            ));
        }
        Some(_) => return Err(err("containerDefinitions", "must be an array")),
        None => return Err(err("containerDefinitions", "is required")),
    };
    if definitions.len() > MAX_CONTAINERS {
        return Err(err(
            "containerDefinitions",
            format!(
                "holds {} containers; a task may have at most {MAX_CONTAINERS}",
                definitions.len()
            ),
        ));
    }
    let mut containers: Vec<Container> = Vec::with_capacity(definitions.len());
    for (i, definition) in definitions.iter().enumerate() {
        let at = |name: &str| format!("containerDefinitions[{i}].{name}");
        let Value::Object(definition) = definition else {
            return Err(err(
                format!("containerDefinitions[{i}]"),
                "must be an object",
            ));
        };
        let name = match definition.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            Some(Value::String(_)) => return Err(err(at("name"), "must not be empty")),
            Some(_) => return Err(err(at("name"), "must be a string")),
            None => return Err(err(at("name"), "is required")),
        };
        if containers.iter().any(|c| c.name == name) {
            return Err(err(
                at("name"),
                "is used by an earlier container; names must be unique",
            ));
        }
        let image = match definition.get("image") {
            Some(Value::String(image)) => {
                ImageRef::parse(image).map_err(|e| err(at("image"), e.to_string()))?;
                image.clone()
            }
            Some(_) => return Err(err(at("image"), "must be a string")),
            None => return Err(err(at("image"), "is required")),
        };
        // ECS treats a container as essential unless told otherwise.
        let essential = match definition.get("essential") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(err(at("essential"), "must be true or false")),
        };
        let credentials_parameter = match definition.get("repositoryCredentials") {
            None | Some(Value::Null) => None,
            Some(Value::Object(credentials)) => match credentials.get("credentialsParameter") {
                Some(Value::String(p)) if !p.trim().is_empty() => Some(p.clone()),
                Some(Value::String(_)) => {
                    return Err(err(
                        at("repositoryCredentials.credentialsParameter"),
                        "must not be empty",
                    ));
                }
                Some(_) => {
                    return Err(err(
                        at("repositoryCredentials.credentialsParameter"),
                        "must be a string (the ARN or name of a Secrets Manager secret)",
                    ));
                }
                None => {
                    return Err(err(
                        at("repositoryCredentials.credentialsParameter"),
                        "is required when repositoryCredentials is given",
                    ));
                }
            },
            Some(_) => return Err(err(at("repositoryCredentials"), "must be an object")),
        };
        let mut container = Container::new(name, image, essential);
        container.credentials_parameter = credentials_parameter;
        containers.push(container);
    }
    let execution_role_arn = match def.get("executionRoleArn") {
        None | Some(Value::Null) => None,
        Some(Value::String(arn)) => {
            // The message quotes the ARN: a role ARN is not a secret.
            RoleArn::parse(arn).map_err(|e| err("executionRoleArn", e.to_string()))?;
            Some(arn.clone())
        }
        Some(_) => {
            return Err(err(
                "executionRoleArn",
                "must be a string (an IAM role ARN)",
            ));
        }
    };
    let mut task = Task::new(arn, family, containers);
    task.execution_role_arn = execution_role_arn;
    Ok(task)
}

/// A new task ARN in the ECS format.
pub fn new_arn(cluster: &str) -> String {
    let id: String = (0..32)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
        .collect();
    format!("arn:aws:ecs:local:000000000000:task/{cluster}/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(body: &str) -> Result<Task, TaskDefError> {
        parse(body.as_bytes(), "arn:test".into())
    }

    #[test]
    fn accepts_ecs_shaped_definitions() {
        let task = parse_str(
            r#"{"family":"web","cpu":"256","containerDefinitions":[
                {"name":"app","image":"registry.example.com/team/app:1","essential":true,
                 "environment":[{"name":"X","value":"y"}]},
                {"name":"sidecar","image":"busybox","essential":false}]}"#,
        )
        .expect("valid");
        assert_eq!(task.family, "web");
        assert_eq!(task.containers.len(), 2);
        assert!(task.containers[0].essential);
        assert!(!task.containers[1].essential);
        assert_eq!(task.known_status, pullauth_store::Status::None);
    }

    #[test]
    fn repository_credentials_and_execution_role() {
        let task = parse_str(
            r#"{"family":"f","executionRoleArn":"arn:aws:iam::123456789012:role/exec",
                "containerDefinitions":[
                {"name":"a","image":"busybox","repositoryCredentials":
                    {"credentialsParameter":"arn:aws:secretsmanager:us-east-1:123456789012:secret:reg-AbCdEf"}},
                {"name":"b","image":"busybox"}]}"#,
        )
        .expect("valid");
        assert_eq!(
            task.execution_role_arn.as_deref(),
            Some("arn:aws:iam::123456789012:role/exec")
        );
        assert_eq!(
            task.containers[0].credentials_parameter.as_deref(),
            Some("arn:aws:secretsmanager:us-east-1:123456789012:secret:reg-AbCdEf")
        );
        assert_eq!(task.containers[1].credentials_parameter, None);
    }

    #[test]
    fn essential_defaults_to_true() {
        let task =
            parse_str(r#"{"family":"f","containerDefinitions":[{"name":"a","image":"busybox"}]}"#)
                .expect("valid");
        assert!(task.containers[0].essential);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("not json", "body"),
            ("[]", "body"),
            (r#"{"containerDefinitions":[]}"#, "family"),
            (r#"{"family":"f"}"#, "containerDefinitions"),
            (
                r#"{"family":"f","containerDefinitions":[]}"#,
                "containerDefinitions",
            ),
            (
                r#"{"family":"f","containerDefinitions":[{"image":"busybox"}]}"#,
                "containerDefinitions[0].name",
            ),
            (
                r#"{"family":"f","containerDefinitions":[{"name":"a"}]}"#,
                "containerDefinitions[0].image",
            ),
            (
                r#"{"family":"f","containerDefinitions":[{"name":"a","image":"busybox"},{"name":"b","image":"Bad"}]}"#,
                "containerDefinitions[1].image",
            ),
            (
                r#"{"family":"f","containerDefinitions":[{"name":"a","image":"busybox"},{"name":"a","image":"busybox"}]}"#,
                "containerDefinitions[1].name",
            ),
            (
                r#"{"family":"f","containerDefinitions":[{"name":"a","image":"busybox","essential":"yes"}]}"#,
                "containerDefinitions[0].essential",
            ),
            (
                r#"{"family":"f","containerDefinitions":[{"name":"a","image":"busybox","repositoryCredentials":"x"}]}"#,
                "containerDefinitions[0].repositoryCredentials",
            ),
            (
                r#"{"family":"f","containerDefinitions":[{"name":"a","image":"busybox","repositoryCredentials":{}}]}"#,
                "containerDefinitions[0].repositoryCredentials.credentialsParameter",
            ),
            (
                r#"{"family":"f","containerDefinitions":[{"name":"a","image":"busybox"},{"name":"b","image":"busybox","repositoryCredentials":{"credentialsParameter":7}}]}"#,
                "containerDefinitions[1].repositoryCredentials.credentialsParameter",
            ),
            (
                r#"{"family":"f","containerDefinitions":[{"name":"a","image":"busybox","repositoryCredentials":{"credentialsParameter":" "}}]}"#,
                "containerDefinitions[0].repositoryCredentials.credentialsParameter",
            ),
            (
                r#"{"family":"f","executionRoleArn":"arn:aws:iam::123:role/x","containerDefinitions":[{"name":"a","image":"busybox"}]}"#,
                "executionRoleArn",
            ),
            (
                r#"{"family":"f","executionRoleArn":5,"containerDefinitions":[{"name":"a","image":"busybox"}]}"#,
                "executionRoleArn",
            ),
        ];
        for (body, field) in cases {
            let e = parse_str(body).expect_err(body);
            assert_eq!(e.field, field, "{body}: {e}");
        }
    }

    #[test]
    fn at_most_ten_containers() {
        let body = |n: usize| {
            let containers: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"name":"c{i}","image":"busybox"}}"#))
                .collect();
            format!(
                r#"{{"family":"f","containerDefinitions":[{}]}}"#,
                containers.join(",")
            )
        };
        assert_eq!(
            parse_str(&body(MAX_CONTAINERS))
                .expect("ten")
                .containers
                .len(),
            10
        );
        let e = parse_str(&body(MAX_CONTAINERS + 1)).expect_err("eleven");
        assert_eq!(e.field, "containerDefinitions");
        assert!(e.problem.contains("at most 10"), "{e}");
    }

    #[test]
    fn errors_do_not_quote_other_values() {
        let e = parse_str(r#"{"family":"f","containerDefinitions":[{"name":7,"environment":[{"value":"hunter2"}]}]}"#)
            .expect_err("invalid");
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn arns_are_unique_and_ecs_shaped() {
        let a = new_arn("default");
        assert!(a.starts_with("arn:aws:ecs:local:000000000000:task/default/"));
        assert_ne!(a, new_arn("default"));
    }
}
