//! `pullauth serve`: run the agent until SIGTERM; SIGHUP or a change to a
//! configuration file reloads (see [`pullauth_agent::watch`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pullauth_agent::follow::{FollowConfig, FollowSource, Follower, PollPolicy};
use pullauth_agent::prefetch::Filters;
use pullauth_agent::watch::{self, Fingerprinter, Reload, Reloader, Trigger};
use pullauth_agent::{Agent, Identity, Settings, control_socket, server};
use pullauth_aws::S3Location;
use pullauth_config::{CONFIG_FILE_PATH, Config, DATA_DIR, EnvFile, ExposeSecret, Setting};
use pullauth_docker::{Engine, PullOptions, RetryPolicy};
use pullauth_resolve::RegistryTable;
use pullauth_store::Store;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{load, registry_table};
use crate::cli::{ConfigArgs, ServeArgs};
use crate::exit::UsageError;
use crate::facts::{VERSION, is_s3};

/// The control socket when neither `--control-socket` nor `ECS_DATADIR` says.
pub const DEFAULT_CONTROL_SOCKET: &str = "/var/run/pullauth.sock";
/// The control socket's name inside `ECS_DATADIR`.
pub const CONTROL_SOCKET_NAME: &str = "pullauth.sock";

/// `--control-socket`, else `$ECS_DATADIR/pullauth.sock`, else the default.
/// `serve` and `task run` both call this with [`pullauth_config::Sources::data_dir`] of the
/// same `--env-file` and environment, so they agree on the socket.
pub fn control_socket_path(flag: Option<&PathBuf>, data_dir: Option<&Setting<PathBuf>>) -> PathBuf {
    flag.cloned()
        .or_else(|| data_dir.map(|d| d.value.join(CONTROL_SOCKET_NAME)))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET))
}

/// What `serve`'s flags say about following (fixed for the process; a
/// reload re-reads the rest from the configuration).
#[derive(Debug, Clone, PartialEq)]
struct FollowFlags {
    /// `--follow-cluster` or `--follow-plan`.
    on: bool,
    source: FollowSource,
    /// `--plan-interval`, with `--follow-plan`.
    plan_interval: Option<Duration>,
}

impl FollowFlags {
    fn parse(args: &ServeArgs) -> anyhow::Result<FollowFlags> {
        let location = |flag: &str, url: &str| {
            S3Location::parse(url).map_err(|e| UsageError(format!("{flag}: {e}")))
        };
        let duration = |flag: &str, text: &str| super::positive_duration(flag, text, "30s or 15m");
        if let Some(url) = &args.follow_plan {
            return Ok(FollowFlags {
                on: true,
                source: FollowSource::Plan {
                    location: location("--follow-plan", url)?,
                    max_age: duration("--plan-max-age", &args.plan_max_age)?,
                    fallback: args.plan_fallback,
                },
                plan_interval: Some(duration("--plan-interval", &args.plan_interval)?),
            });
        }
        Ok(FollowFlags {
            on: args.follow_cluster,
            source: FollowSource::Cluster {
                publish: args
                    .publish
                    .as_deref()
                    .map(|url| location("--publish", url))
                    .transpose()?,
            },
            plan_interval: None,
        })
    }
}

/// What the cluster follower follows under `config`; `None` when off
/// (neither `--follow-cluster`, `--follow-plan` nor `PULLAUTH_PREFETCH=on`).
fn follow_config(config: &Config, flags: &FollowFlags) -> Option<FollowConfig> {
    (flags.on || config.prefetch.value).then(|| FollowConfig {
        cluster: config.cluster.value.clone(),
        filters: Filters {
            services: config.prefetch_services.value.clone(),
            task_definitions: config.prefetch_task_definitions.value.clone(),
        },
        // A plan follower's poll is one conditional GET: its spread is its
        // interval. The start-up spread setting is for reading ECS.
        policy: match flags.plan_interval {
            Some(interval) => PollPolicy::with_interval(interval),
            None => {
                let mut policy = config
                    .prefetch_interval
                    .as_ref()
                    .map_or_else(PollPolicy::default, |i| PollPolicy::with_interval(i.value));
                if let Some(spread) = &config.prefetch_startup_spread {
                    policy.startup_spread = spread.value;
                }
                policy
            }
        },
        remove_after: config
            .prefetch_remove
            .value
            .then_some(config.prefetch_remove_after.value),
        disk_budget: match config.prefetch_disk_budget_mib.value {
            0 => None,
            mib => Some(mib.saturating_mul(1024 * 1024)),
        },
        ecs_agent_uri: Some(config.ecs_agent_uri.value.clone()),
        ecs_agent: Some(config.ecs_agent.clone()),
        source: flags.source.clone(),
    })
}

fn settings(config: &Config, table: RegistryTable) -> Settings {
    Settings {
        table,
        behavior: config.pull_behavior.value,
        options: PullOptions {
            timeout: config.pull_timeout.value,
            inactivity_timeout: config.pull_inactivity_timeout.value,
            retry: RetryPolicy::default(),
        },
    }
}

/// Whether a reload can see anything new: only files (and S3 objects) can change under a
/// running process; its environment was fixed when it started (with
/// `docker run --env-file`, when the container was created).
fn reloadable(args: &ConfigArgs) -> bool {
    args.env_file().is_some()
        || std::env::var_os(pullauth_config::CONFIG_FILE_PATH).is_some_and(|v| !v.is_empty())
}

/// The files a reload reads: `--env-file` (also while an optional one is
/// absent, so that its arrival is seen) and the `ECS_AGENT_CONFIG_FILE_PATH`
/// file, named by the env file or else the environment, as
/// [`pullauth_config::Sources::lookup`] finds it.
fn config_files(args: &ConfigArgs) -> Vec<PathBuf> {
    // An S3 env file is never watched (SIGHUP re-reads it), nor fetched
    // here: a file it names is found only through the environment.
    let local_env_file = args.env_file.as_deref().filter(|path| !is_s3(path));
    let named_by_env_file = local_env_file
        .and_then(|path| EnvFile::read(path).ok())
        .and_then(|file| {
            file.get(CONFIG_FILE_PATH)
                .map(|(value, _)| value.expose_secret().to_owned())
        })
        .filter(|value| !value.is_empty());
    let config_file = named_by_env_file
        .or_else(|| std::env::var(CONFIG_FILE_PATH).ok())
        .filter(|value| !value.is_empty());
    local_env_file
        .map(PathBuf::from)
        .into_iter()
        .chain(config_file.map(PathBuf::from))
        .collect()
}

/// Re-reads every configuration source; the agent keeps its settings if
/// anything is wrong with the new ones. Every trigger goes through here, so
/// they validate, log and count alike.
fn reload(
    agent: &Agent,
    args: &ConfigArgs,
    started: &Config,
    follow: (&Follower, &FollowFlags),
    trigger: Trigger,
) {
    if !reloadable(args) {
        match trigger {
            Trigger::Sighup => tracing::warn!(
                %trigger,
                "SIGHUP ignored: the configuration comes only from the process environment, \
                 which cannot change without a restart; pass the file with --env-file (mounted \
                 read-only into the container) to make reloads work"
            ),
            // Only an optional --env-file that went away gets here.
            Trigger::File => tracing::warn!(
                %trigger,
                "the optional --env-file is gone; keeping the previous configuration"
            ),
        }
        return;
    }
    match trigger {
        Trigger::Sighup => tracing::info!(%trigger, "SIGHUP: reloading configuration"),
        Trigger::File => tracing::info!(%trigger, "configuration file changed: reloading"),
    }
    let result = super::read_env_file(args)
        .and_then(|file| Ok(Config::load_with(file)?))
        .and_then(|config| {
            Ok((
                settings(&config, registry_table(&config)?),
                follow_config(&config, follow.1),
                config,
            ))
        });
    match result {
        Ok((new, following, config)) => {
            let mut restart = started.needs_restart(&config);
            if following.is_some() {
                // The cluster follower applies a new ECS_CLUSTER at once
                // (only /v1/metadata keeps reporting the one it started with).
                restart.retain(|var| *var != pullauth_config::CLUSTER);
            }
            if !restart.is_empty() {
                tracing::warn!(
                    %trigger,
                    variables = restart.join(", "),
                    "changed, but the running agent keeps the values it started with until it is \
                     restarted (a reload applies the credentials, the pull settings and what the \
                     cluster follower follows)"
                );
            }
            let keys = new.table.len();
            agent.replace_settings(new);
            follow.0.update(following);
            tracing::info!(%trigger, keys, "configuration reloaded");
            // Counted last: once the count shows, the reload is done and said.
            agent.metrics().config_reloads.inc();
        }
        Err(err) => {
            tracing::error!(
                %trigger,
                error = format!("{err:#}"),
                "configuration reload rejected; keeping the previous configuration"
            );
            agent.metrics().config_reload_failures.inc();
        }
    }
}

/// The running agent's configuration, for [`Reloader`].
#[derive(Debug)]
struct ServeConfig {
    agent: Agent,
    args: ConfigArgs,
    /// The configuration the agent started with, to name what a reload
    /// changed but cannot apply.
    started: Config,
    follower: Follower,
    /// `--follow-cluster`.
    follow_flags: FollowFlags,
}

impl Reload for ServeConfig {
    fn files(&self) -> Vec<PathBuf> {
        config_files(&self.args)
    }

    fn reload(&self, trigger: Trigger) {
        reload(
            &self.agent,
            &self.args,
            &self.started,
            (&self.follower, &self.follow_flags),
            trigger,
        );
    }
}

/// Watches the configuration files unless told not to; any failure leaves
/// SIGHUP as the only way to reload.
fn start_watching(args: &ServeArgs, reloader: &Arc<Reloader>) {
    if args.no_watch {
        tracing::info!("--no-watch: only SIGHUP reloads the configuration");
        return;
    }
    if reloader.files().is_empty() {
        return;
    }
    match watch::spawn(reloader.clone()) {
        Ok(watching) if watching.directories.is_empty() => tracing::warn!(
            "cannot watch any configuration directory; only SIGHUP reloads the configuration"
        ),
        Ok(watching) => {
            let dirs: Vec<_> = watching.directories.iter().map(|d| d.display()).collect();
            tracing::info!(
                directories = format!("{dirs:?}"),
                "watching the configuration files; a change reloads them"
            );
        }
        Err(e) => tracing::warn!(
            error = %e,
            "cannot watch the configuration files; only SIGHUP reloads the configuration"
        ),
    }
}

pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // First of all: SIGHUP's default action ends the process, and a
    // process manager may send it as soon as the agent runs. One that comes
    // while the agent starts is kept and reloads once it can.
    let hangup = {
        let _runtime = runtime.enter();
        signal(SignalKind::hangup()).context("installing the SIGHUP handler")?
    };
    // Taken before the files are read: a change made meanwhile then shows
    // as a change at the first check.
    let fingerprinter = Fingerprinter::new();
    let loaded = fingerprinter.take(&config_files(&args.config));
    let (config, table) = load(&args.config)?;
    let aws_options = super::aws_options(config.ecr.value, config.aws_timeout.value)?;
    let client_header_timeout = client_header_timeout(&args.client_header_timeout)?;
    let follow_flags = FollowFlags::parse(args)?;
    runtime.block_on(serve(
        args,
        config,
        table,
        aws_options,
        (fingerprinter, loaded, hangup),
        client_header_timeout,
        follow_flags,
    ))
}

/// `--client-header-timeout`: a positive duration in Go's syntax, as every
/// duration pullauth reads.
fn client_header_timeout(text: &str) -> anyhow::Result<std::time::Duration> {
    Ok(super::positive_duration(
        "--client-header-timeout",
        text,
        "10s or 1m",
    )?)
}

async fn serve(
    args: &ServeArgs,
    config: Config,
    table: RegistryTable,
    mut aws_options: pullauth_aws::AwsOptions,
    (fingerprinter, loaded, mut hangup): (Fingerprinter, watch::Fingerprint, Signal),
    client_header_timeout: std::time::Duration,
    follow_flags: FollowFlags,
) -> anyhow::Result<ExitCode> {
    // The connection caps are fitted to this limit; the usual soft 1,024 is too low.
    match server::raise_fd_limit() {
        Ok(limit) => tracing::debug!(limit, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
    // Held until the process ends: one agent per data directory.
    let _data_dir_lock = match &config.data_dir {
        Some(dir) => Some(pullauth_agent::data_dir_lock::DataDirLock::acquire(
            &dir.value,
        )?),
        None => None,
    };
    let store = match &config.data_dir {
        Some(dir) => {
            let store = Store::open(&dir.value)?;
            tracing::info!(state = %dir.value.join(pullauth_store::STATE_FILE).display(), "state is kept in {DATA_DIR}");
            // The follower's task definitions and service revisions too,
            // shared with `pullauth prefetch` at boot and the next start.
            aws_options.ecs_records = Some(Arc::new(
                pullauth_agent::ecs_records::StoreRecords::new(store.clone()),
            ));
            store
        }
        None => {
            tracing::warn!(
                "{DATA_DIR} is not set: state lives in memory and is lost when the agent stops"
            );
            Store::in_memory()
        }
    };
    let _sweeper =
        pullauth_agent::cleanup::spawn_sweeper(store.clone(), config.task_cleanup_wait.value);
    // Returns what a burst of tasks or clients made malloc keep.
    let _trimmer = {
        let store = store.clone();
        pullauth_agent::memory::spawn_trimmer(move || store.release_memory())
    };
    let engine = Engine::connect(None).await?;
    engine.check_credentials_safe(table.len())?;
    // The agent runs for long: find out now whether the engine is there.
    engine.ping().await?;
    let tcp = match server::bind_introspection(&args.listen).await {
        Ok(tcp) => tcp,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(UsageError(format!(
                "cannot listen on {} (--listen): the address is already in use. The ECS \
                 agent listens on 127.0.0.1:51678; beside it, give pullauth another address, \
                 e.g. --listen 127.0.0.1:51680",
                args.listen
            ))
            .into());
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("cannot listen on {} (--listen)", args.listen)));
        }
    };
    let socket = control_socket_path(args.control_socket.as_ref(), config.data_dir.as_ref());
    let (unix, socket_guard) = control_socket::bind_control_socket(&socket).await?;
    let identity = Identity {
        cluster: config.cluster.value.clone(),
        container_instance_arn: None,
        version: VERSION.to_owned(),
    };
    // AWS (and IMDS) is touched only when a task's source needs it.
    let provider = pullauth_agent::credentials::Provider::lazy(aws_options);
    let agent = Agent::start_with_provider(
        store,
        std::sync::Arc::new(engine),
        settings(&config, table),
        identity,
        args.max_concurrent_pulls,
        Arc::new(provider),
    )?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let follower = Follower::start(agent.clone(), follow_config(&config, &follow_flags), seed);
    tracing::info!(
        listen = %args.listen,
        control_socket = %socket.display(),
        engine = agent.engine_address(),
        keys = agent.settings().table.len(),
        version = VERSION,
        "pullauth agent ready"
    );

    let reloader = Arc::new(Reloader::new(
        ServeConfig {
            agent: agent.clone(),
            args: ConfigArgs {
                env_file: args.config.env_file.clone(),
                env_file_optional: args.config.env_file_optional,
            },
            started: config.clone(),
            follower,
            follow_flags,
        },
        fingerprinter,
        loaded,
    ));
    start_watching(args, &reloader);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            reloader.reload(Trigger::Sighup).await;
        }
    });
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
    };
    let limits = server::ServerLimits {
        header_read_timeout: client_header_timeout,
        ..server::ServerLimits::default()
    };
    server::run(agent, tcp, unix, shutdown, limits)
        .await
        .context("serving the API")?;
    drop(socket_guard);
    tracing::info!("stopped; unfinished pulls resume at the next start");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    /// The flag's default is the agent's production header timeout (the
    /// integration tests set the flag, so this keeps the default honest).
    #[test]
    fn client_header_timeout_defaults_to_the_servers_limit() {
        let cli = Cli::try_parse_from(["pullauth", "serve"]).expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(
            client_header_timeout(&args.client_header_timeout).expect("valid"),
            server::HEADER_READ_TIMEOUT
        );
        assert_eq!(
            server::HEADER_READ_TIMEOUT,
            std::time::Duration::from_secs(10)
        );
    }

    #[test]
    fn client_header_timeout_must_be_positive() {
        for bad in ["0s", "soon", "", "-1s", "2days"] {
            assert!(client_header_timeout(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            client_header_timeout("250ms").expect("valid"),
            std::time::Duration::from_millis(250)
        );
    }

    fn config_of(vars: &[(&str, &str)]) -> Config {
        let sources = pullauth_config::Sources::from_parts(
            None,
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .expect("sources");
        Config::from_sources(&sources).expect("valid")
    }

    /// The follower's first poll is spread over one interval unless
    /// PULLAUTH_PREFETCH_STARTUP_SPREAD says otherwise (a fleet that may
    /// start cold); the interval and its backoffs are the interval's.
    #[test]
    fn the_start_up_spread_is_one_interval_unless_set() {
        let policy = |vars: &[(&str, &str)]| {
            let flags = FollowFlags {
                on: true,
                source: FollowSource::Cluster { publish: None },
                plan_interval: None,
            };
            follow_config(&config_of(vars), &flags)
                .expect("following")
                .policy
        };
        let five = std::time::Duration::from_secs(300);
        let interval_only = policy(&[("PULLAUTH_PREFETCH_INTERVAL", "5m")]);
        assert_eq!(interval_only, PollPolicy::with_interval(five));
        let spread = policy(&[
            ("PULLAUTH_PREFETCH_INTERVAL", "5m"),
            ("PULLAUTH_PREFETCH_STARTUP_SPREAD", "67m"),
        ]);
        assert_eq!(
            spread.startup_spread,
            std::time::Duration::from_secs(67 * 60)
        );
        assert_eq!(
            PollPolicy {
                startup_spread: five,
                ..spread
            },
            interval_only
        );
        assert_eq!(policy(&[]), PollPolicy::default());
    }

    #[test]
    fn an_s3_env_file_is_reloadable_but_never_watched() {
        let args = ConfigArgs {
            env_file: Some(PathBuf::from("s3://bucket/ecs.config")),
            env_file_optional: false,
        };
        assert!(reloadable(&args));
        assert!(
            config_files(&args).iter().all(|path| !is_s3(path)),
            "{:?}",
            config_files(&args)
        );
    }
}
