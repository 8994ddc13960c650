//! `pullauth pull`: resolve credentials and pull through the engine.

use std::process::ExitCode;

use anyhow::Context;
use pullauth_agent::credentials::{Provider, TaskCredentials};
use pullauth_aws::RoleArn;
use pullauth_config::PullBehavior;
use pullauth_docker::{Engine, Obtained, PullOptions, RetryPolicy};
use pullauth_resolve::{Entry, ImageRef};
use pullauth_store::{PulledWith, Store};
use serde::Serialize;

use super::{aws_options, image_args, load, quoted, say};
use crate::cli::{PullArgs, PullBehaviorArg};
use crate::exit;
use crate::progress::{Display, Mode, seconds};

/// One line of `--json` output.
#[derive(Serialize)]
struct Line<'a> {
    image: &'a str,
    digest: Option<&'a str>,
    key: Option<&'a str>,
    /// Where the credentials came from (`anonymous`, `key "..."`,
    /// `secretsmanager <ARN>`, `ecr account X region Y`).
    source: &'a str,
    username: Option<&'a str>,
    status: &'a str,
    seconds: f64,
}

impl From<PullBehaviorArg> for PullBehavior {
    fn from(arg: PullBehaviorArg) -> PullBehavior {
        match arg {
            PullBehaviorArg::Default => PullBehavior::Default,
            PullBehaviorArg::Always => PullBehavior::Always,
            PullBehaviorArg::Once => PullBehavior::Once,
            PullBehaviorArg::PreferCached => PullBehavior::PreferCached,
        }
    }
}

pub fn run(args: &PullArgs) -> anyhow::Result<ExitCode> {
    let (config, table) = load(&args.config)?;
    // Every reference is checked before anything is pulled.
    let images = image_args(&args.images)?
        .iter()
        .map(|i| ImageRef::parse(i))
        .collect::<Result<Vec<_>, _>>()?;
    let role = args
        .execution_role
        .as_deref()
        .map(RoleArn::parse)
        .transpose()
        .context("--execution-role")?;
    let task = TaskCredentials {
        secret: args.repository_credentials.as_deref(),
        role: role.as_ref(),
    };
    // AWS is loaded only if a pull needs it (AWS_CA_BUNDLE is read now).
    let provider = Provider::lazy(aws_options(config.ecr.value)?);
    let behavior = args
        .pull_behavior
        .map_or(config.pull_behavior.value, PullBehavior::from);
    let store = match (&config.data_dir, behavior) {
        (Some(dir), PullBehavior::Once) => Some(Store::open(&dir.value)?),
        (None, PullBehavior::Once) => {
            tracing::warn!(
                "--pull-behavior once without ECS_DATADIR: nothing records earlier pulls, so every image is pulled"
            );
            None
        }
        _ => None,
    };
    let options = PullOptions {
        timeout: config.pull_timeout.value,
        inactivity_timeout: config.pull_inactivity_timeout.value,
        retry: RetryPolicy::default(),
    };
    let mode = if args.json {
        Mode::detect(true)
    } else {
        Mode::detect(args.quiet)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let engine = Engine::connect(None).await?;
        let with_credentials = images
            .iter()
            .filter(|i| {
                !matches!(
                    provider.source(&table, i, task),
                    pullauth_resolve::Source::Anonymous
                )
            })
            .count();
        engine.check_credentials_safe(with_credentials)?;
        // A wedged engine fails here within seconds, not after the
        // inactivity timeout of the first pull.
        engine.ping().await?;
        let mut failed = 0;
        for image in &images {
            let (label, entry) = match provider.credentials_for(&table, image, task).await {
                Ok(provided) => (provided.source, provided.entry),
                Err(err) => {
                    eprintln!("pullauth: {}: {err}", image.original);
                    failed += 1;
                    continue;
                }
            };
            let entry = entry.as_ref();
            let reference = image.pull_reference();
            let pulled_before = match &store {
                Some(store) => store.image(&reference)?.is_some_and(|r| r.pull_succeeded),
                None => false,
            };
            let mut display = Display::new(mode, &image.original);
            let result = engine
                .obtain(image, entry, behavior, pulled_before, &options, &mut |e| {
                    display.event(e)
                })
                .await;
            display.finish();
            match result {
                Ok(obtained) => {
                    if let Some(store) = &store {
                        record(store, &reference, &obtained, entry)?;
                    }
                    report(args, image, entry, &label, &obtained)?;
                }
                Err(err) => {
                    tracing::debug!(image = %image, class = err.class(), "pull failed");
                    eprintln!("pullauth: {err}");
                    failed += 1;
                }
            }
        }
        Ok(if failed > 0 {
            ExitCode::from(exit::FAILED)
        } else {
            ExitCode::SUCCESS
        })
    })
}

fn record(
    store: &Store,
    reference: &str,
    obtained: &Obtained,
    entry: Option<&Entry>,
) -> anyhow::Result<()> {
    let pulled = obtained.attempts > 0 && obtained.fallback_from.is_none();
    let pulled_with = PulledWith {
        registry_key: entry.map(|e| e.key.written.clone()),
        username: entry.and_then(|e| e.credentials.username.clone()),
    };
    Ok(store.record_image_use(reference, &obtained.image_id, pulled, pulled_with)?)
}

fn report(
    args: &PullArgs,
    image: &ImageRef,
    entry: Option<&Entry>,
    source: &str,
    obtained: &Obtained,
) -> anyhow::Result<()> {
    let key = entry.map(|e| e.key.written.as_str());
    let username = entry.and_then(|e| e.credentials.username.as_deref());
    if args.json {
        let line = Line {
            image: &image.original,
            digest: obtained.digest.as_deref(),
            key,
            source,
            username,
            status: obtained.status.as_str(),
            seconds: seconds(obtained.elapsed),
        };
        return say(serde_json::to_string(&line)?);
    }
    if let Some(error) = &obtained.fallback_from {
        eprintln!("pullauth: warning: {error}; using the cached image");
    }
    if args.quiet {
        return Ok(());
    }
    let who = match key {
        Some(_) => format!("{source}, user {}", quoted(username)),
        None => "anonymous".to_owned(),
    };
    say(format!(
        "{} {} ({}) {} [{who}] in {:.2}s",
        obtained.status.as_str(),
        image.original,
        obtained.image_id,
        obtained.digest.as_deref().unwrap_or("-"),
        obtained.elapsed.as_secs_f64()
    ))
}
