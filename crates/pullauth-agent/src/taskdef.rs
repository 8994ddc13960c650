//! Task definitions as submitted on the control API, validated into a task.
//!
//! The JSON is read into the one task-definition model of `pullauth-ecs`
//! ([`TaskDefinition::from_json`], which the ECS client's answers also
//! become), so a container's credential source is read the same way
//! whether the task came from the control socket or from ECS. What a task
//! needs beyond the model is checked here: every image parses, the
//! execution role is an IAM role ARN. Errors name the field and never
//! quote a value: task definitions may carry secrets in their environment.

use pullauth_aws::RoleArn;
use pullauth_ecs::TaskDefinition;
pub use pullauth_ecs::taskdef::{MAX_CONTAINERS, TaskDefError};
use pullauth_resolve::ImageRef;
use pullauth_store::{Container, Task};

fn err(field: impl Into<String>, problem: impl Into<String>) -> TaskDefError {
    TaskDefError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Builds a new task (all containers `NONE`) from a definition.
pub fn parse(body: &[u8], arn: String) -> Result<Task, TaskDefError> {
    let definition = TaskDefinition::from_json(body)?;
    let mut containers: Vec<Container> = Vec::with_capacity(definition.containers.len());
    for (i, c) in definition.containers.into_iter().enumerate() {
        ImageRef::parse(&c.image)
            .map_err(|e| err(format!("containerDefinitions[{i}].image"), e.to_string()))?;
        let mut container = Container::new(c.name, c.image, c.essential);
        container.credentials_parameter = c.credentials_parameter;
        containers.push(container);
    }
    if let Some(arn) = &definition.execution_role_arn {
        // The message quotes the ARN: a role ARN is not a secret.
        RoleArn::parse(arn).map_err(|e| err("executionRoleArn", e.to_string()))?;
    }
    let mut task = Task::new(arn, definition.family, containers);
    task.execution_role_arn = definition.execution_role_arn;
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
