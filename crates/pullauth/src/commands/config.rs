//! `pullauth config from-docker`: ecs.config lines from a Docker config.json.
//!
//! The one command whose output holds credentials, on purpose: they go to
//! stdout only, in one write, never to stderr or the logs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pullauth_config::{AUTH_DATA, AUTH_TYPE, AuthType};
use pullauth_resolve::RegistryTable;
use pullauth_resolve::docker_config::{self, ElsewhereNote};
use secrecy::{ExposeSecret, SecretString};

use super::say;
use crate::cli::{ConfigCommand, FromDockerArgs};
use crate::exit::UsageError;

pub fn run(command: &ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::FromDocker(args) => from_docker(args),
    }
}

fn from_docker(args: &FromDockerArgs) -> anyhow::Result<ExitCode> {
    let path = match &args.file {
        Some(path) => path.clone(),
        None => default_path()?,
    };
    let shown = path.display();
    // The error names the file and the OS's reason; it never quotes content.
    let text = std::fs::read_to_string(&path)
        .map(SecretString::from)
        .map_err(|e| UsageError(format!("cannot read {shown}: {e}")))?;
    let converted =
        docker_config::convert(&text).map_err(|e| UsageError(format!("{shown}: {e}")))?;
    for note in &converted.elsewhere {
        eprintln!("pullauth: {}", elsewhere_message(note));
    }
    if args.check {
        let table = RegistryTable::from_auth_data(AuthType::Dockercfg, &converted.auth_data)
            .with_context(|| format!("{AUTH_DATA} converted from {shown}"))?;
        eprintln!(
            "pullauth: {} key(s) converted from {shown}; {AUTH_DATA} is valid",
            table.len()
        );
    }
    say(format!(
        "{AUTH_TYPE}={}\n{AUTH_DATA}={}",
        AuthType::Dockercfg.as_str(),
        converted.auth_data.expose_secret()
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, as the
/// Docker CLI looks.
fn default_path() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            UsageError(
                "neither DOCKER_CONFIG nor HOME is set: name the config.json to convert".into(),
            )
        })?;
    Ok(PathBuf::from(home).join(".docker").join("config.json"))
}

fn elsewhere_message(note: &ElsewhereNote) -> String {
    let registries = note.registries.join(", ");
    match &note.holder {
        Some(holder) => format!(
            "{holder} holds the credentials of: {registries}; pullauth cannot read them inline, \
             so they are left out"
        ),
        None => format!("no inline credentials for: {registries}; left out"),
    }
}
