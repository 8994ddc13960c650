//! Whether a service's tasks of one task definition can be placed on this
//! instance: the launch type or capacity provider strategy,
//! `requiresCompatibilities`, `runtimePlatform` against the engine's
//! platform, and `memberOf` constraints (the task definition's and the
//! service's) against the instance's attributes.
//!
//! Every "no" is a [`Decision::Skip`] with a stable [`SkipReason`] code.
//! Where a fact is unknown (an attribute not known yet, a launch type this
//! build does not know, an expression it cannot parse), the answer is to
//! pull, with a note that says why: a missed image costs a task its start
//! time, an extra one only disk.

use std::fmt;

use crate::query::{Expr, Facts, Truth};
use crate::service::Capacity;
use crate::taskdef::{PlacementConstraint, TaskDefinition};

/// The capacity providers that are never an EC2 instance.
pub const FARGATE_CAPACITY_PROVIDERS: [&str; 2] = ["FARGATE", "FARGATE_SPOT"];

/// What is known about this instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// The attributes ECS gives the instance: the built-in ones this
    /// instance can tell itself (`ecs.cpu-architecture`, `ecs.os-type`,
    /// `ecs.os-family`, `ecs.instance-type`, `ecs.availability-zone`,
    /// `ecs.ami-id`) and, once the container instance was described, all
    /// of them.
    pub facts: Facts,
}

impl Host {
    /// A host known by its engine's platform: Docker's `Architecture`
    /// (`x86_64`, `aarch64`) and `OSType` (`linux`, `windows`), set as the
    /// ECS agent sets the matching attributes.
    pub fn from_engine(architecture: &str, os_type: &str) -> Host {
        let mut host = Host::default();
        let architecture = match architecture {
            "aarch64" | "arm64" => "arm64",
            "x86_64" | "amd64" => "x86_64",
            other => other,
        };
        host.set("ecs.cpu-architecture", architecture);
        host.set("ecs.os-type", os_type);
        if os_type == "linux" {
            host.set("ecs.os-family", "LINUX");
        }
        host
    }

    /// Sets one attribute (IMDS facts, the container instance's own).
    pub fn set(&mut self, name: &str, value: &str) {
        if !value.is_empty() {
            self.facts
                .attributes
                .insert(name.to_owned(), value.to_owned());
        }
    }

    fn attribute(&self, name: &str) -> Option<&str> {
        self.facts.attributes.get(name).map(String::as_str)
    }
}

/// Why a task definition's images are not pulled for a service. The codes
/// are stable: scripts read them from `--json` and `GET /v1/prefetch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// The service is `DRAINING` or `INACTIVE`.
    ServiceNotActive,
    /// `FARGATE` or `EXTERNAL` launch type.
    LaunchType,
    /// A capacity provider strategy made only of Fargate providers.
    CapacityProvider,
    /// `requiresCompatibilities` is set and lacks `EC2`.
    RequiresCompatibilities,
    /// `runtimePlatform.cpuArchitecture` is not the engine's.
    CpuArchitecture,
    /// `runtimePlatform.operatingSystemFamily` is not the engine's.
    OsFamily,
    /// A `memberOf` constraint excludes this instance.
    MemberOf,
    /// Pulling it would take the engine's disk past pullauth's guard.
    DiskGuard,
}

impl SkipReason {
    pub fn code(self) -> &'static str {
        match self {
            SkipReason::ServiceNotActive => "service-not-active",
            SkipReason::LaunchType => "launch-type",
            SkipReason::CapacityProvider => "capacity-provider",
            SkipReason::RequiresCompatibilities => "requires-compatibilities",
            SkipReason::CpuArchitecture => "cpu-architecture",
            SkipReason::OsFamily => "os-family",
            SkipReason::MemberOf => "member-of",
            SkipReason::DiskGuard => "disk-guard",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Whether tasks of one task definition, run one way, can be placed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Pull. `notes` say what could not be decided (and was therefore
    /// taken as "can run here"); empty when everything was decided.
    Run { notes: Vec<String> },
    /// Do not pull; `detail` says what excluded it, for people.
    Skip { reason: SkipReason, detail: String },
}

impl Decision {
    fn skip(reason: SkipReason, detail: impl Into<String>) -> Decision {
        Decision::Skip {
            reason,
            detail: detail.into(),
        }
    }
}

/// Decides whether tasks of `task_definition`, run with `capacity` by a
/// service with `service_constraints`, can be placed on `host`.
pub fn decide(
    host: &Host,
    capacity: &Capacity,
    service_constraints: &[PlacementConstraint],
    task_definition: &TaskDefinition,
) -> Decision {
    let mut notes = Vec::new();
    match capacity.launch_type.as_deref() {
        None | Some("EC2") => {}
        Some(launch @ ("FARGATE" | "EXTERNAL")) => {
            return Decision::skip(
                SkipReason::LaunchType,
                format!("launch type {launch}: not an EC2 container instance's"),
            );
        }
        Some(other) => notes.push(format!(
            "launch type {other:?} is unknown to pullauth; taken as possibly this instance's"
        )),
    }
    if capacity.launch_type.is_none()
        && !capacity.capacity_providers.is_empty()
        && capacity
            .capacity_providers
            .iter()
            .all(|p| FARGATE_CAPACITY_PROVIDERS.contains(&p.as_str()))
    {
        return Decision::skip(
            SkipReason::CapacityProvider,
            format!(
                "capacity provider strategy {} places tasks on Fargate only",
                capacity.capacity_providers.join(", ")
            ),
        );
    }
    let compatibilities = &task_definition.requires_compatibilities;
    if !compatibilities.is_empty() && !compatibilities.iter().any(|c| c == "EC2") {
        if let Some(unknown) = compatibilities
            .iter()
            .find(|c| !matches!(c.as_str(), "FARGATE" | "EXTERNAL"))
        {
            notes.push(format!(
                "requiresCompatibilities names {unknown:?}, unknown to pullauth; taken as possibly this instance's"
            ));
        } else {
            return Decision::skip(
                SkipReason::RequiresCompatibilities,
                format!(
                    "requiresCompatibilities is {} (no EC2)",
                    compatibilities.join(", ")
                ),
            );
        }
    }
    if let Some(platform) = &task_definition.runtime_platform {
        if let Some(wanted) = platform.cpu_architecture.as_deref() {
            let wanted_attr = match wanted {
                "X86_64" => Some("x86_64"),
                "ARM64" => Some("arm64"),
                _ => None,
            };
            match (wanted_attr, host.attribute("ecs.cpu-architecture")) {
                (None, _) => notes.push(format!(
                    "runtimePlatform.cpuArchitecture {wanted:?} is unknown to pullauth"
                )),
                (Some(_), None) => notes.push(
                    "the engine's CPU architecture is not known; runtimePlatform not checked"
                        .to_owned(),
                ),
                (Some(w), Some(have)) if w != have => {
                    return Decision::skip(
                        SkipReason::CpuArchitecture,
                        format!(
                            "runtimePlatform.cpuArchitecture is {wanted}; this engine is {have}"
                        ),
                    );
                }
                _ => {}
            }
        }
        if let Some(wanted) = platform.operating_system_family.as_deref() {
            let wanted_os = if wanted == "LINUX" {
                Some("linux")
            } else if wanted.starts_with("WINDOWS_SERVER_") {
                Some("windows")
            } else {
                None
            };
            match (wanted_os, host.attribute("ecs.os-type")) {
                (None, _) => notes.push(format!(
                    "runtimePlatform.operatingSystemFamily {wanted:?} is unknown to pullauth"
                )),
                (Some(_), None) => notes
                    .push("the engine's OS is not known; runtimePlatform not checked".to_owned()),
                (Some(w), Some(have)) if w != have => {
                    return Decision::skip(
                        SkipReason::OsFamily,
                        format!(
                            "runtimePlatform.operatingSystemFamily is {wanted}; this engine runs {have}"
                        ),
                    );
                }
                _ => {}
            }
        }
    }
    let constraints = task_definition
        .placement_constraints
        .iter()
        .map(|c| ("task definition", c))
        .chain(service_constraints.iter().map(|c| ("service", c)));
    for (whose, constraint) in constraints {
        match constraint.kind.as_str() {
            // Says how tasks spread over instances, not which may run them.
            "distinctInstance" => {}
            "memberOf" => {
                let Some(expression) = constraint.expression.as_deref() else {
                    notes.push(format!("{whose} memberOf constraint has no expression"));
                    continue;
                };
                match Expr::parse(expression) {
                    Err(e) => notes.push(format!(
                        "{whose} memberOf expression {expression:?} cannot be read: {e}"
                    )),
                    Ok(parsed) => match parsed.eval(&host.facts) {
                        Truth::True => {}
                        Truth::False => {
                            return Decision::skip(
                                SkipReason::MemberOf,
                                format!("{whose} memberOf {expression:?} excludes this instance"),
                            );
                        }
                        Truth::Unknown => notes.push(format!(
                            "{whose} memberOf {expression:?} depends on facts this instance does not know yet"
                        )),
                    },
                }
            }
            other => notes.push(format!(
                "{whose} placement constraint type {other:?} is unknown to pullauth"
            )),
        }
    }
    Decision::Run { notes }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::taskdef::RuntimePlatform;

    fn linux_x86() -> Host {
        let mut host = Host::from_engine("x86_64", "linux");
        host.set("ecs.instance-type", "t3.large");
        host.set("ecs.availability-zone", "us-east-1a");
        host
    }

    fn capacity(launch: Option<&str>, providers: &[&str]) -> Capacity {
        Capacity {
            launch_type: launch.map(str::to_owned),
            capacity_providers: providers.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn td(
        compat: &[&str],
        arch: Option<&str>,
        os: Option<&str>,
        member_of: Option<&str>,
    ) -> TaskDefinition {
        TaskDefinition {
            family: "f".into(),
            requires_compatibilities: compat.iter().map(|c| (*c).to_owned()).collect(),
            runtime_platform: (arch.is_some() || os.is_some()).then(|| RuntimePlatform {
                cpu_architecture: arch.map(str::to_owned),
                operating_system_family: os.map(str::to_owned),
            }),
            placement_constraints: member_of
                .map(|e| PlacementConstraint {
                    kind: "memberOf".into(),
                    expression: Some(e.into()),
                })
                .into_iter()
                .collect(),
            ..TaskDefinition::default()
        }
    }

    #[rstest]
    #[case::ec2(capacity(Some("EC2"), &[]), td(&[], None, None, None), None)]
    #[case::default_launch(capacity(None, &[]), td(&[], None, None, None), None)]
    #[case::fargate(capacity(Some("FARGATE"), &[]), td(&[], None, None, None), Some(SkipReason::LaunchType))]
    #[case::external(capacity(Some("EXTERNAL"), &[]), td(&[], None, None, None), Some(SkipReason::LaunchType))]
    #[case::fargate_providers(capacity(None, &["FARGATE", "FARGATE_SPOT"]), td(&[], None, None, None), Some(SkipReason::CapacityProvider))]
    #[case::mixed_providers(capacity(None, &["FARGATE", "my-asg"]), td(&[], None, None, None), None)]
    #[case::fargate_only_td(capacity(None, &[]), td(&["FARGATE"], None, None, None), Some(SkipReason::RequiresCompatibilities))]
    #[case::ec2_and_fargate_td(capacity(None, &[]), td(&["FARGATE", "EC2"], None, None, None), None)]
    #[case::arm_on_x86(capacity(None, &[]), td(&[], Some("ARM64"), None, None), Some(SkipReason::CpuArchitecture))]
    #[case::x86_on_x86(capacity(None, &[]), td(&[], Some("X86_64"), Some("LINUX"), None), None)]
    #[case::windows_on_linux(capacity(None, &[]), td(&[], None, Some("WINDOWS_SERVER_2022_CORE"), None), Some(SkipReason::OsFamily))]
    #[case::member_of_other_type(capacity(None, &[]), td(&[], None, None, Some("attribute:ecs.instance-type =~ g5.*")), Some(SkipReason::MemberOf))]
    #[case::member_of_this_zone(capacity(None, &[]), td(&[], None, None, Some("attribute:ecs.availability-zone in [us-east-1a, us-east-1b]")), None)]
    fn decides(
        #[case] capacity: Capacity,
        #[case] td: TaskDefinition,
        #[case] skip: Option<SkipReason>,
    ) {
        let decision = decide(&linux_x86(), &capacity, &[], &td);
        match (skip, &decision) {
            (None, Decision::Run { notes }) => assert!(notes.is_empty(), "{notes:?}"),
            (Some(expected), Decision::Skip { reason, .. }) => assert_eq!(*reason, expected),
            _ => panic!("expected {skip:?}, got {decision:?}"),
        }
    }

    #[rstest]
    #[case::unknown_launch_type(capacity(Some("MANAGED_INSTANCES"), &[]), td(&[], None, None, None), "launch type")]
    #[case::unknown_compatibility(capacity(None, &[]), td(&["MANAGED_INSTANCES"], None, None, None), "requiresCompatibilities")]
    #[case::unknown_arch(capacity(None, &[]), td(&[], Some("RISCV"), None, None), "cpuArchitecture")]
    #[case::unknown_os(capacity(None, &[]), td(&[], None, Some("BEOS"), None), "operatingSystemFamily")]
    #[case::bad_syntax(capacity(None, &[]), td(&[], None, None, Some("attribute:x <> y")), "cannot be read")]
    #[case::custom_attribute_not_known(capacity(None, &[]), td(&[], None, None, Some("attribute:stack == prod")), "does not know yet")]
    #[case::task_group(capacity(None, &[]), td(&[], None, None, Some("task:group == web")), "does not know yet")]
    fn undecidable_pulls_and_says_why(
        #[case] capacity: Capacity,
        #[case] td: TaskDefinition,
        #[case] note: &str,
    ) {
        match decide(&linux_x86(), &capacity, &[], &td) {
            Decision::Run { notes } => {
                assert!(notes.iter().any(|n| n.contains(note)), "{notes:?}");
            }
            skip => panic!("{skip:?}"),
        }
    }

    #[test]
    fn service_constraints_count_too() {
        let constraint = PlacementConstraint {
            kind: "memberOf".into(),
            expression: Some("attribute:ecs.availability-zone == us-east-1b".into()),
        };
        let decision = decide(
            &linux_x86(),
            &capacity(None, &[]),
            &[constraint],
            &td(&[], None, None, None),
        );
        match decision {
            Decision::Skip { reason, detail } => {
                assert_eq!(reason, SkipReason::MemberOf);
                assert!(detail.starts_with("service memberOf"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn described_attributes_decide_custom_constraints() {
        let mut host = linux_x86();
        host.set("stack", "prod");
        host.facts.complete = true;
        let wanted = td(&[], None, None, Some("attribute:stack == dev"));
        assert!(matches!(
            decide(&host, &capacity(None, &[]), &[], &wanted),
            Decision::Skip {
                reason: SkipReason::MemberOf,
                ..
            }
        ));
        let absent = td(&[], None, None, Some("attribute:gpu exists"));
        assert!(matches!(
            decide(&host, &capacity(None, &[]), &[], &absent),
            Decision::Skip {
                reason: SkipReason::MemberOf,
                ..
            }
        ));
    }

    #[test]
    fn an_unknown_engine_platform_pulls_with_a_note() {
        let decision = decide(
            &Host::default(),
            &capacity(None, &[]),
            &[],
            &td(&[], Some("ARM64"), Some("LINUX"), None),
        );
        match decision {
            Decision::Run { notes } => assert_eq!(notes.len(), 2, "{notes:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn engine_platform_names_become_ecs_attributes() {
        let arm = Host::from_engine("aarch64", "linux");
        assert_eq!(arm.attribute("ecs.cpu-architecture"), Some("arm64"));
        assert_eq!(arm.attribute("ecs.os-family"), Some("LINUX"));
        assert_eq!(
            Host::from_engine("x86_64", "windows").attribute("ecs.os-family"),
            None
        );
    }

    #[test]
    fn reason_codes_are_stable() {
        let codes: Vec<&str> = [
            SkipReason::ServiceNotActive,
            SkipReason::LaunchType,
            SkipReason::CapacityProvider,
            SkipReason::RequiresCompatibilities,
            SkipReason::CpuArchitecture,
            SkipReason::OsFamily,
            SkipReason::MemberOf,
            SkipReason::DiskGuard,
        ]
        .into_iter()
        .map(SkipReason::code)
        .collect();
        assert_eq!(
            codes,
            [
                "service-not-active",
                "launch-type",
                "capacity-provider",
                "requires-compatibilities",
                "cpu-architecture",
                "os-family",
                "member-of",
                "disk-guard"
            ]
        );
    }
}
