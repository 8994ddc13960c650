//! `pullauth serve`: run the agent until SIGTERM; SIGHUP reloads.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pullauth_agent::{Agent, Identity, Settings, control_socket, server};
use pullauth_config::{Config, DATA_DIR};
use pullauth_docker::{Engine, PullOptions, RetryPolicy};
use pullauth_resolve::RegistryTable;
use pullauth_store::Store;
use tokio::signal::unix::{SignalKind, signal};

use super::{VERSION, load, registry_table};
use crate::cli::{ConfigArgs, ServeArgs};

/// The control socket when neither `--control-socket` nor `ECS_DATADIR` says.
pub const DEFAULT_CONTROL_SOCKET: &str = "/var/run/pullauth.sock";
/// The control socket's name inside `ECS_DATADIR`.
pub const CONTROL_SOCKET_NAME: &str = "pullauth.sock";

/// `--control-socket`, else `$ECS_DATADIR/pullauth.sock`, else the default.
pub fn control_socket_path(flag: Option<&PathBuf>, data_dir: Option<PathBuf>) -> PathBuf {
    flag.cloned()
        .or_else(|| data_dir.map(|d| d.join(CONTROL_SOCKET_NAME)))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET))
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

/// Whether a reload can see anything new: only files can change under a
/// running process; its environment was fixed when it started (with
/// `docker run --env-file`, when the container was created).
fn reloadable(args: &ConfigArgs) -> bool {
    args.env_file().is_some()
        || std::env::var_os(pullauth_config::CONFIG_FILE_PATH).is_some_and(|v| !v.is_empty())
}

/// Re-reads every configuration source; the agent keeps its settings if
/// anything is wrong with the new ones.
fn reload(agent: &Agent, args: &ConfigArgs) {
    if !reloadable(args) {
        tracing::warn!(
            "SIGHUP ignored: the configuration comes only from the process environment, which \
             cannot change without a restart; pass the file with --env-file (mounted read-only \
             into the container) to make reloads work"
        );
        return;
    }
    let result = Config::load(args.env_file())
        .map_err(anyhow::Error::from)
        .and_then(|config| Ok(settings(&config, registry_table(&config)?)));
    match result {
        Ok(new) => {
            let keys = new.table.len();
            agent.replace_settings(new);
            agent.metrics().config_reloads.inc();
            tracing::info!(keys, "configuration reloaded");
        }
        Err(err) => {
            agent.metrics().config_reload_failures.inc();
            tracing::error!(
                error = format!("{err:#}"),
                "configuration reload rejected; keeping the previous configuration"
            );
        }
    }
}

pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let (config, table) = load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args, config, table))
}

async fn serve(args: &ServeArgs, config: Config, table: RegistryTable) -> anyhow::Result<ExitCode> {
    let store = match &config.data_dir {
        Some(dir) => {
            let store = Store::open(&dir.value)?;
            tracing::info!(state = %dir.value.join(pullauth_store::STATE_FILE).display(), "state is kept in {DATA_DIR}");
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
    let engine = Engine::connect(None).await?;
    engine.check_credentials_safe(table.len())?;
    // The agent runs for long: find out now whether the engine is there.
    engine.ping().await?;
    let tcp = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let socket = control_socket_path(
        args.control_socket.as_ref(),
        config.data_dir.as_ref().map(|d| d.value.clone()),
    );
    let (unix, socket_guard) = control_socket::bind_control_socket(&socket).await?;
    let identity = Identity {
        cluster: config.cluster.value.clone(),
        container_instance_arn: None,
        version: VERSION.to_owned(),
    };
    let agent = Agent::start(
        store,
        engine,
        settings(&config, table),
        identity,
        args.max_concurrent_pulls,
    )?;
    tracing::info!(
        listen = %args.listen,
        control_socket = %socket.display(),
        engine = agent.engine_address(),
        keys = agent.settings().table.len(),
        version = VERSION,
        "pullauth agent ready"
    );

    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let reload_agent = agent.clone();
    let reload_args = ConfigArgs {
        env_file: args.config.env_file.clone(),
        env_file_optional: args.config.env_file_optional,
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading configuration");
            reload(&reload_agent, &reload_args);
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
    server::run(agent, tcp, unix, shutdown)
        .await
        .context("serving the API")?;
    drop(socket_guard);
    tracing::info!("stopped; unfinished pulls resume at the next start");
    Ok(ExitCode::SUCCESS)
}
