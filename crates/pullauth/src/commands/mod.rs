//! One file per command; shared loading of configuration lives here.

mod check;
mod completions;
mod config;
mod credential_helper;
mod env_file;
mod man;
mod prefetch;
mod pull;
mod resolve;
mod serve;
mod task;
mod verify;

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use pullauth_agent::credentials::Provider;
use pullauth_aws::RoleArn;
use pullauth_config::ecs_agent::WarnedOnce;
use pullauth_config::{AUTH_DATA, Config, LogFormat, LogLevel};
use pullauth_resolve::{ImageRef, RegistryTable};

pub use env_file::read as read_env_file;

use crate::cli::{Cli, Command, ConfigArgs};
use crate::logging;

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Resolve(args) => resolve::run(&args),
        Command::Pull(args) => pull::run(&args),
        Command::Prefetch(args) => prefetch::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Task(command) => task::run(&command),
        Command::Config(command) => config::run(&command),
        Command::CredentialHelper(args) => credential_helper::run(&args),
        Command::Completions(args) => completions::run(&args),
        Command::Man => man::run(),
    }
}

/// Reads and validates the configuration, starts logging as it asks, and
/// builds the registry table.
pub fn load(args: &ConfigArgs) -> anyhow::Result<(Config, RegistryTable)> {
    // An S3 env file is read before logging can start (it says how to
    // log): what the read logs is held back and logged right after.
    let held = logging::HeldBack::default();
    let config =
        held.during(|| -> anyhow::Result<Config> { Ok(Config::load_with(read_env_file(args)?)?) });
    match &config {
        Ok(config) => logging::init(config.log_level.value, config.log_format.value),
        // The error is printed anyway; what led to it is logged as the
        // defaults say.
        Err(_) => logging::init(LogLevel::Info, LogFormat::Logfmt),
    }
    held.replay();
    let config = config?;
    if let (Some(path), None) = (&args.env_file, args.env_file()) {
        tracing::info!(
            env_file = %path.display(),
            "--env-file is absent and optional: using the process environment only"
        );
    }
    let table = registry_table(&config)?;
    Ok((config, table))
}

/// Logs the warnings about the ECS agent's image settings (pull behavior,
/// image cleanup) that `given` has not logged yet, each naming the
/// variables, their origin and what to do. `prefetched` names the images
/// prefetch pulls as `docker images` lists them
/// ([`pullauth_config::ecs_agent::docker_repo_tag`]), when known. `check`
/// prints the same warnings itself; `prefetch` and the follower call this,
/// the follower with one `given` for its whole life so that a poll or a
/// reload repeats nothing.
pub fn warn_beside_ecs_agent(
    config: &Config,
    prefetched: Option<&[String]>,
    given: &mut WarnedOnce,
) {
    for warning in given.fresh(config.ecs_agent.warnings(prefetched)) {
        tracing::warn!(code = warning.code(), "{warning}");
    }
}

/// A flag's positive duration in Go's syntax, as every duration pullauth
/// reads; refused naming `flag`, the value and an `example`.
pub fn positive_duration(
    flag: &str,
    text: &str,
    example: &str,
) -> Result<std::time::Duration, crate::exit::UsageError> {
    match text.parse::<pullauth_config::GoDuration>() {
        Ok(pullauth_config::GoDuration(nanos)) if nanos > 0 => Ok(std::time::Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        )),
        _ => Err(crate::exit::UsageError(format!(
            "{flag} {text:?} is not a positive duration such as {example}"
        ))),
    }
}

/// The AWS options of a command that may call AWS: automatic ECR tokens as
/// `ecr` says, each call bounded by `timeout` (`PULLAUTH_AWS_TIMEOUT`; an
/// attempt by the shorter of it and the SDK attempt bound), and the CAs of
/// `AWS_CA_BUNDLE`, read now so that a missing or malformed bundle stops the
/// command before it starts (exit 2).
pub fn aws_options(
    ecr: bool,
    timeout: std::time::Duration,
) -> anyhow::Result<pullauth_aws::AwsOptions> {
    pullauth_aws::check_endpoint_env()?;
    let ca_bundle = pullauth_aws::CaBundle::from_env()?;
    if let Some(bundle) = &ca_bundle {
        tracing::debug!(
            path = %bundle.path().display(),
            certificates = bundle.len(),
            "AWS calls also trust the CAs of {}",
            pullauth_aws::CA_BUNDLE_VAR
        );
    }
    Ok(pullauth_aws::AwsOptions {
        ecr,
        ca_bundle,
        operation_timeout: timeout,
        attempt_timeout: pullauth_aws::ATTEMPT_TIMEOUT.min(timeout),
        ..pullauth_aws::AwsOptions::default()
    })
}

/// The registry table for `config`'s engine auth (empty when unset).
pub fn registry_table(config: &Config) -> anyhow::Result<RegistryTable> {
    let Some(auth) = &config.engine_auth else {
        return Ok(RegistryTable::empty());
    };
    let table = RegistryTable::from_auth_data(auth.kind.value, &auth.data)
        .with_context(|| auth.data_origin.to_string())?;
    for entry in table.entries() {
        if let Some(reason) = entry.key.unreachable_reason() {
            tracing::warn!(key = %entry.key.written, "{AUTH_DATA} key can never match: {reason}");
        }
    }
    Ok(table)
}

/// What `pull` and `verify` both start from: the configuration, the
/// images (every reference checked before anything is asked), the
/// `--execution-role`, and the provider a pull uses (AWS loaded only if an
/// image needs it; `AWS_CA_BUNDLE` is read now).
pub struct PullRequest {
    pub config: Config,
    pub table: RegistryTable,
    pub images: Vec<ImageRef>,
    pub role: Option<RoleArn>,
    pub provider: Provider,
}

impl PullRequest {
    pub fn read(
        config: &ConfigArgs,
        images: &[String],
        execution_role: Option<&str>,
    ) -> anyhow::Result<PullRequest> {
        let (config, table) = load(config)?;
        let images = image_args(images)?
            .iter()
            .map(|i| ImageRef::parse(i))
            .collect::<Result<Vec<_>, _>>()?;
        let role = execution_role
            .map(RoleArn::parse)
            .transpose()
            .context("--execution-role")?;
        let provider = Provider::lazy(aws_options(config.ecr.value, config.aws_timeout.value)?);
        Ok(PullRequest {
            config,
            table,
            images,
            role,
            provider,
        })
    }
}

/// The image arguments, with `-` replaced by the lines of stdin (blank lines
/// and `#` comments skipped).
pub fn image_args(images: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for image in images {
        if image == "-" {
            for line in std::io::stdin().lock().lines() {
                let line = line.context("reading image references from stdin")?;
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    out.push(line.to_owned());
                }
            }
        } else {
            out.push(image.clone());
        }
    }
    Ok(out)
}

/// Writes a line to stdout; a closed pipe (e.g. `| head`) ends output quietly.
pub fn say(line: impl std::fmt::Display) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// Writes bytes to stdout as they are; a closed pipe ends output quietly.
pub fn say_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// `"text"` or `null`, for human-readable listings.
pub fn quoted(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:?}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// The real default stays honest: the configuration's default is the
    /// SDK layer's, and it reaches the options every command uses; a short
    /// bound (what the tests set) also shortens each attempt.
    #[test]
    fn aws_timeout_reaches_the_options() {
        assert_eq!(
            pullauth_config::DEFAULT_AWS_TIMEOUT,
            pullauth_aws::OPERATION_TIMEOUT
        );
        let options = super::aws_options(true, pullauth_config::DEFAULT_AWS_TIMEOUT).expect("ok");
        assert_eq!(options.operation_timeout, pullauth_aws::OPERATION_TIMEOUT);
        assert_eq!(options.attempt_timeout, pullauth_aws::ATTEMPT_TIMEOUT);
        let options = super::aws_options(false, Duration::from_secs(2)).expect("ok");
        assert_eq!(options.operation_timeout, Duration::from_secs(2));
        assert_eq!(options.attempt_timeout, Duration::from_secs(2));
        assert!(!options.ecr);
    }
}
