//! `pullauth check`: validate everything and show what was understood.

use std::process::ExitCode;

use pullauth_config::ecs_agent::{
    DISABLE_IMAGE_CLEANUP, EXCLUDE_UNTRACKED_IMAGE, IMAGE_CLEANUP_INTERVAL,
    IMAGE_MINIMUM_CLEANUP_AGE, INSTANCE_ATTRIBUTES, NON_ECS_IMAGE_MINIMUM_CLEANUP_AGE,
    NUM_IMAGES_DELETE_PER_CYCLE, UNTRACKED_IMAGE_CLEANUP,
};
use pullauth_config::{AUTH_DATA, AUTH_TYPE, Config, Origin, Setting};

use super::{load, quoted, say};
use crate::cli::ConfigArgs;

pub fn run(args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let (config, table) = load(args)?;
    // What the SDK would refuse at the first AWS call, refused before
    // anything is shown.
    pullauth_aws::check_endpoint_env()?;
    match &config.engine_auth {
        None => {
            say(format!("{AUTH_TYPE:<38} (unset: pulls are anonymous)"))?;
        }
        Some(auth) => {
            say(format!(
                "{AUTH_TYPE:<38} {:<14} {}",
                auth.kind.value.as_str(),
                auth.kind.origin
            ))?;
            let wrapped = if table.unwrapped_auths() {
                ", unwrapped from {\"auths\": ...}"
            } else {
                ""
            };
            say(format!(
                "{AUTH_DATA:<38} {:<14} {}",
                format!("{} key(s){wrapped}", table.len()),
                auth.data_origin
            ))?;
        }
    }
    print_setting(
        "ECS_DATADIR",
        config.data_dir.as_ref().map(|d| Setting {
            value: d.value.display().to_string(),
            origin: d.origin.clone(),
        }),
    )?;
    print_others(&config)?;
    // Read as every AWS call will read it; shown only when set.
    if let Some(bundle) = pullauth_aws::CaBundle::from_env()? {
        say(format!(
            "{:<38} {:<14} {}",
            pullauth_aws::CA_BUNDLE_VAR,
            format!("{} cert(s)", bundle.len()),
            bundle.path().display()
        ))?;
    }
    if !table.is_empty() {
        say("")?;
        say(format!(
            "{:<40} {:<40} {:<20} {}",
            "KEY", "APPLIES TO", "USERNAME", "AUTHENTICATES WITH"
        ))?;
        for entry in table.entries() {
            say(format!(
                "{:<40} {:<40} {:<20} {}",
                entry.key.written,
                entry.key.to_string(),
                quoted(entry.credentials.username.as_deref()),
                entry.credentials.kind()
            ))?;
            if let Some(reason) = entry.key.unreachable_reason() {
                say(format!("  warning: {reason}"))?;
            }
        }
    }
    // The ECS agent's settings only warn: pullauth must not refuse what
    // the ECS agent accepts. Shown here, once; not logged as well.
    let warnings = config.ecs_agent.warnings(None);
    if !warnings.is_empty() {
        say("")?;
        for warning in &warnings {
            say(format!("warning: {warning}"))?;
        }
    }
    say("")?;
    say("configuration is valid")?;
    Ok(ExitCode::SUCCESS)
}

fn print_setting(name: &str, setting: Option<Setting<String>>) -> anyhow::Result<()> {
    match setting {
        Some(s) => say(format!("{name:<38} {:<14} {}", s.value, s.origin)),
        None => say(format!("{name:<38} {:<14} {}", "(unset)", Origin::Default)),
    }
}

fn print_others(config: &Config) -> anyhow::Result<()> {
    let dur = |d: &Setting<std::time::Duration>| Setting {
        value: humantime::format_duration(d.value).to_string(),
        origin: d.origin.clone(),
    };
    let rows = [
        ("ECS_CLUSTER", config.cluster.clone()),
        (
            "ECS_IMAGE_PULL_BEHAVIOR",
            Setting {
                value: config.pull_behavior.value.as_str().to_owned(),
                origin: config.pull_behavior.origin.clone(),
            },
        ),
        ("ECS_IMAGE_PULL_TIMEOUT", dur(&config.pull_timeout)),
        (
            "ECS_IMAGE_PULL_INACTIVITY_TIMEOUT",
            dur(&config.pull_inactivity_timeout),
        ),
        (
            "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION",
            dur(&config.task_cleanup_wait),
        ),
        (
            "PULLAUTH_ECR",
            Setting {
                value: if config.ecr.value { "on" } else { "off" }.to_owned(),
                origin: config.ecr.origin.clone(),
            },
        ),
        ("PULLAUTH_AWS_TIMEOUT", dur(&config.aws_timeout)),
    ];
    for (name, setting) in rows {
        print_setting(name, Some(setting))?;
    }
    // The ECS agent's image cleanup, as the ECS agent will use it.
    let agent = &config.ecs_agent;
    let flag = |s: &Setting<bool>| Setting {
        value: s.value.to_string(),
        origin: s.origin.clone(),
    };
    let list = &agent.untracked_exclusions;
    let rows = [
        (DISABLE_IMAGE_CLEANUP, flag(&agent.image_cleanup_disabled)),
        (
            UNTRACKED_IMAGE_CLEANUP,
            flag(&agent.untracked_image_cleanup),
        ),
        (
            EXCLUDE_UNTRACKED_IMAGE,
            Setting {
                // The items are never shown: a mistyped line could hold a secret.
                value: match list.value.len() {
                    0 => "(unset)".to_owned(),
                    1 => "1 image".to_owned(),
                    n => format!("{n} images"),
                },
                origin: list.origin.clone(),
            },
        ),
        (IMAGE_CLEANUP_INTERVAL, dur(&agent.image_cleanup_interval)),
        (
            IMAGE_MINIMUM_CLEANUP_AGE,
            dur(&agent.image_minimum_cleanup_age),
        ),
        (
            NON_ECS_IMAGE_MINIMUM_CLEANUP_AGE,
            dur(&agent.non_ecs_image_minimum_cleanup_age),
        ),
        (
            NUM_IMAGES_DELETE_PER_CYCLE,
            Setting {
                value: agent.images_deleted_per_cycle.value.to_string(),
                origin: agent.images_deleted_per_cycle.origin.clone(),
            },
        ),
        // Placement decides memberOf on these: their names are shown.
        (
            INSTANCE_ATTRIBUTES,
            Setting {
                value: if agent.instance_attributes.value.is_empty() {
                    "(none)".to_owned()
                } else {
                    agent
                        .instance_attributes
                        .value
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                },
                origin: agent.instance_attributes.origin.clone(),
            },
        ),
    ];
    for (name, setting) in rows {
        print_setting(name, Some(setting))?;
    }
    Ok(())
}
