//! The one task-definition model: what pullauth reads of an ECS task
//! definition, whether it was submitted on the control socket (as JSON,
//! [`TaskDefinition::from_json`]) or described by ECS (the ECS client in
//! `pullauth-aws` builds the same struct from `DescribeTaskDefinition`).
//!
//! The JSON is read by hand from `serde_json::Value` so that every error
//! names the field (`containerDefinitions[1].image`) and none quotes a
//! value: task definitions may carry environment variables with secrets.

use serde_json::{Map, Value};

/// Why a task definition was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct TaskDefError {
    pub field: String,
    pub problem: String,
}

fn err(field: impl Into<String>, problem: impl Into<String>) -> TaskDefError {
    TaskDefError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Most containers one task may define, as in ECS: every container costs a
/// pull and a store record, so one submission's cost stays bounded.
pub const MAX_CONTAINERS: usize = 10;

/// One container of a task definition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefinition {
    pub name: String,
    /// As written (validated by whoever pulls it).
    pub image: String,
    /// ECS treats a container as essential unless told otherwise.
    pub essential: bool,
    /// `repositoryCredentials.credentialsParameter`: a Secrets Manager ARN
    /// or name.
    pub credentials_parameter: Option<String>,
}

/// `runtimePlatform`: where the task's images can run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RuntimePlatform {
    /// `X86_64` or `ARM64`.
    pub cpu_architecture: Option<String>,
    /// `LINUX` or `WINDOWS_SERVER_<version>_<FULL|CORE>`.
    pub operating_system_family: Option<String>,
}

/// A placement constraint (`memberOf` with its expression, or
/// `distinctInstance`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementConstraint {
    pub kind: String,
    pub expression: Option<String>,
}

/// A task definition, as far as pulling its images and placing its tasks
/// go.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskDefinition {
    /// Set for a registered task definition (ECS); `None` for one
    /// submitted on the control socket.
    pub arn: Option<String>,
    pub family: String,
    /// Set for a registered task definition.
    pub revision: Option<i32>,
    /// As written (parsed by whoever assumes it).
    pub execution_role_arn: Option<String>,
    pub containers: Vec<ContainerDefinition>,
    /// `requiresCompatibilities` (`EC2`, `FARGATE`, `EXTERNAL`, ...); empty
    /// when not set.
    pub requires_compatibilities: Vec<String>,
    pub runtime_platform: Option<RuntimePlatform>,
    pub placement_constraints: Vec<PlacementConstraint>,
}

impl TaskDefinition {
    /// `family:revision`, or the family of an unregistered one.
    pub fn name(&self) -> String {
        match self.revision {
            Some(revision) => format!("{}:{revision}", self.family),
            None => self.family.clone(),
        }
    }

    /// Reads a task definition in ECS's JSON shape (`RegisterTaskDefinition`
    /// input, or `describe-task-definition`'s `taskDefinition`). Unknown
    /// fields are ignored, as ECS's own JSON has many more.
    pub fn from_json(body: &[u8]) -> Result<TaskDefinition, TaskDefError> {
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
        let mut containers: Vec<ContainerDefinition> = Vec::with_capacity(definitions.len());
        for (i, definition) in definitions.iter().enumerate() {
            let container = container(i, definition)?;
            if containers.iter().any(|c| c.name == container.name) {
                return Err(err(
                    format!("containerDefinitions[{i}].name"),
                    "is used by an earlier container; names must be unique",
                ));
            }
            containers.push(container);
        }
        let arn = optional_string(&def, "taskDefinitionArn", "a task definition ARN")?;
        let revision = match def.get("revision") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| err("revision", "must be a positive integer"))?,
            ),
            Some(_) => return Err(err("revision", "must be a positive integer")),
        };
        let execution_role_arn = optional_string(&def, "executionRoleArn", "an IAM role ARN")?;
        let requires_compatibilities = match def.get("requiresCompatibilities") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(err(
                        format!("requiresCompatibilities[{i}]"),
                        "must be a string (EC2, FARGATE, EXTERNAL, ...)",
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(err("requiresCompatibilities", "must be an array")),
        };
        let runtime_platform = match def.get("runtimePlatform") {
            None | Some(Value::Null) => None,
            Some(Value::Object(platform)) => Some(RuntimePlatform {
                cpu_architecture: optional_string(platform, "cpuArchitecture", "X86_64 or ARM64")
                    .map_err(|e| {
                    err(format!("runtimePlatform.{}", e.field), e.problem)
                })?,
                operating_system_family: optional_string(
                    platform,
                    "operatingSystemFamily",
                    "LINUX or WINDOWS_SERVER_...",
                )
                .map_err(|e| err(format!("runtimePlatform.{}", e.field), e.problem))?,
            }),
            Some(_) => return Err(err("runtimePlatform", "must be an object")),
        };
        let placement_constraints = match def.get("placementConstraints") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, v)| constraint(i, v))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(err("placementConstraints", "must be an array")),
        };
        Ok(TaskDefinition {
            arn,
            family,
            revision,
            execution_role_arn,
            containers,
            requires_compatibilities,
            runtime_platform,
            placement_constraints,
        })
    }
}

/// A string field that may be absent or null; empty counts as absent.
fn optional_string(
    object: &Map<String, Value>,
    field: &str,
    what: &str,
) -> Result<Option<String>, TaskDefError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(err(field, format!("must be a string ({what})"))),
    }
}

fn container(i: usize, definition: &Value) -> Result<ContainerDefinition, TaskDefError> {
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
    let image = match definition.get("image") {
        Some(Value::String(image)) => image.clone(),
        Some(_) => return Err(err(at("image"), "must be a string")),
        None => return Err(err(at("image"), "is required")),
    };
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
    Ok(ContainerDefinition {
        name,
        image,
        essential,
        credentials_parameter,
    })
}

fn constraint(i: usize, value: &Value) -> Result<PlacementConstraint, TaskDefError> {
    let field = format!("placementConstraints[{i}]");
    let Value::Object(object) = value else {
        return Err(err(field, "must be an object"));
    };
    let kind = optional_string(object, "type", "memberOf or distinctInstance")
        .map_err(|e| err(format!("{field}.{}", e.field), e.problem))?
        .ok_or_else(|| err(format!("{field}.type"), "is required"))?;
    let expression = optional_string(object, "expression", "a cluster query")
        .map_err(|e| err(format!("{field}.{}", e.field), e.problem))?;
    Ok(PlacementConstraint { kind, expression })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<TaskDefinition, TaskDefError> {
        TaskDefinition::from_json(body.as_bytes())
    }

    #[test]
    fn reads_describe_task_definitions_shape() {
        let td = parse(
            r#"{"taskDefinitionArn":"arn:aws:ecs:us-east-1:1:task-definition/web:3",
                "family":"web","revision":3,"executionRoleArn":"arn:aws:iam::1:role/exec",
                "requiresCompatibilities":["EC2","FARGATE"],
                "runtimePlatform":{"cpuArchitecture":"ARM64","operatingSystemFamily":"LINUX"},
                "placementConstraints":[{"type":"memberOf","expression":"attribute:stack == prod"}],
                "containerDefinitions":[
                  {"name":"app","image":"registry.example.com/app:1","essential":false,
                   "repositoryCredentials":{"credentialsParameter":"reg"},
                   "environment":[{"name":"X","value":"y"}]}]}"#,
        )
        .expect("valid");
        assert_eq!(td.name(), "web:3");
        assert_eq!(
            td.arn.as_deref(),
            Some("arn:aws:ecs:us-east-1:1:task-definition/web:3")
        );
        assert_eq!(td.requires_compatibilities, ["EC2", "FARGATE"]);
        assert_eq!(
            td.runtime_platform,
            Some(RuntimePlatform {
                cpu_architecture: Some("ARM64".into()),
                operating_system_family: Some("LINUX".into()),
            })
        );
        assert_eq!(
            td.placement_constraints,
            [PlacementConstraint {
                kind: "memberOf".into(),
                expression: Some("attribute:stack == prod".into()),
            }]
        );
        assert!(!td.containers[0].essential);
        assert_eq!(
            td.containers[0].credentials_parameter.as_deref(),
            Some("reg")
        );
    }

    #[test]
    fn an_unregistered_definition_is_named_by_its_family() {
        let td = parse(r#"{"family":"f","containerDefinitions":[{"name":"a","image":"busybox"}]}"#)
            .expect("valid");
        assert_eq!(td.name(), "f");
        assert!(td.containers[0].essential, "essential defaults to true");
    }

    #[test]
    fn errors_name_the_new_fields() {
        let cases = [
            (
                r#""requiresCompatibilities":"EC2""#,
                "requiresCompatibilities",
            ),
            (
                r#""requiresCompatibilities":[1]"#,
                "requiresCompatibilities[0]",
            ),
            (r#""runtimePlatform":[]"#, "runtimePlatform"),
            (
                r#""runtimePlatform":{"cpuArchitecture":64}"#,
                "runtimePlatform.cpuArchitecture",
            ),
            (
                r#""placementConstraints":[{}]"#,
                "placementConstraints[0].type",
            ),
            (
                r#""placementConstraints":[{"type":"memberOf","expression":1}]"#,
                "placementConstraints[0].expression",
            ),
            (r#""revision":0"#, "revision"),
        ];
        for (extra, field) in cases {
            let body = format!(
                r#"{{"family":"f",{extra},"containerDefinitions":[{{"name":"a","image":"busybox"}}]}}"#
            );
            let e = parse(&body).expect_err(&body);
            assert_eq!(e.field, field, "{body}: {e}");
        }
    }
}
