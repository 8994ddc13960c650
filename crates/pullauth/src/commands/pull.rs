//! `pullauth pull`: resolve credentials and pull through the engine.

use std::process::ExitCode;

use anyhow::Context;
use pullauth_agent::credentials::TaskCredentials;
use std::path::Path;

use pullauth_config::{Config, PullBehavior};
use pullauth_docker::{Engine, Obtained, PullError, PullOptions, RetryPolicy};
use pullauth_resolve::{Entry, ImageRef, source_code};
use pullauth_store::{PulledWith, Store};
use serde::Serialize;

use super::{PullRequest, quoted, say};
use crate::cli::{PullArgs, PullBehaviorArg};
use crate::exit;
use crate::progress::{Display, Mode, seconds};

/// One line of `--json` output.
#[derive(Serialize)]
struct Line<'a> {
    image: &'a str,
    digest: Option<&'a str>,
    /// The `ECS_ENGINE_AUTH_DATA` key as written; `null` for credentials
    /// from any other source, and for anonymous pulls.
    key: Option<&'a str>,
    /// The kind of source: `key`, `task_secret`, `helper`, `ecr`,
    /// `ecr_public` or `anonymous`.
    source: &'static str,
    /// The source as people name it (`anonymous`, `key "..."`,
    /// `secretsmanager <ARN>`, `helper <name>`, `ecr account X region Y`).
    from: &'a str,
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
    let PullRequest {
        config,
        table,
        images,
        role,
        provider,
    } = PullRequest::read(&args.config, &args.images, args.execution_role.as_deref())?;
    let task = TaskCredentials {
        secret: args.repository_credentials.as_deref(),
        role: role.as_ref(),
    };
    let behavior = args
        .pull_behavior
        .map_or(config.pull_behavior.value, PullBehavior::from);
    let store_dir = match (&config.data_dir, behavior) {
        (Some(dir), PullBehavior::Once) => Some(dir.value.as_path()),
        (None, PullBehavior::Once) => {
            tracing::warn!(
                "--pull-behavior once without ECS_DATADIR: nothing records earlier pulls, so every image is pulled"
            );
            None
        }
        _ => None,
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
        let with_credentials = images
            .iter()
            .filter(|i| {
                !matches!(
                    provider.source(&table, i, task),
                    pullauth_resolve::Source::Anonymous
                )
            })
            .count();
        let session = Session::open(&config, behavior, store_dir, mode, with_credentials).await?;
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
            match session.pull(image, entry).await? {
                Ok(obtained) => report(args, image, entry, &label, &obtained)?,
                Err(err) => {
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

/// The engine side of `pull` and `prefetch`: one engine connection, the
/// pull behavior and limits of the configuration, progress as `mode`
/// says, and the store that records pulls (for `once`).
pub(super) struct Session {
    engine: Engine,
    store: Option<Store>,
    behavior: PullBehavior,
    options: PullOptions,
    mode: Mode,
}

impl Session {
    /// Connects to the engine and checks it answers (a wedged engine fails
    /// here within seconds, not after the inactivity timeout of the first
    /// pull) and that `with_credentials` authenticated pulls may be sent
    /// to it; opens the store in `store_dir` when given.
    pub(super) async fn open(
        config: &Config,
        behavior: PullBehavior,
        store_dir: Option<&Path>,
        mode: Mode,
        with_credentials: usize,
    ) -> anyhow::Result<Session> {
        let store = store_dir.map(Store::open).transpose()?;
        let engine = Engine::connect(None).await?;
        engine.check_credentials_safe(with_credentials)?;
        engine.ping().await?;
        Ok(Session {
            engine,
            store,
            behavior,
            options: PullOptions {
                timeout: config.pull_timeout.value,
                inactivity_timeout: config.pull_inactivity_timeout.value,
                retry: RetryPolicy::default(),
            },
            mode,
        })
    }

    /// Obtains `image` with `entry` (progress on stderr) and records the
    /// pull in the store. The outer error is the store's; the inner one
    /// the pull's.
    /// Tags the image `source` names as `target` (one bounded call).
    pub(super) async fn tag(&self, source: &str, target: &ImageRef) -> Result<(), PullError> {
        self.engine.tag(source, target).await
    }

    /// Marks what prefetch downloaded (`references`, image `image_id`) in
    /// the store, if there is one, so that the follower may remove it once
    /// nothing names it; an image found in the engine is never marked.
    pub(super) fn mark_prefetched(
        &self,
        references: &[String],
        image_id: &str,
        pulled_with: PulledWith,
    ) -> anyhow::Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        for reference in references {
            store.record_image_use(reference, image_id, true, pulled_with.clone())?;
            store.set_prefetched(reference, true)?;
        }
        Ok(())
    }

    pub(super) async fn pull(
        &self,
        image: &ImageRef,
        entry: Option<&Entry>,
    ) -> anyhow::Result<Result<Obtained, PullError>> {
        let reference = image.pull_reference();
        let pulled_before = match &self.store {
            Some(store) => store.image(&reference)?.is_some_and(|r| r.pull_succeeded),
            None => false,
        };
        let mut display = Display::new(self.mode, &image.original);
        let result = self
            .engine
            .obtain(
                image,
                entry,
                self.behavior,
                pulled_before,
                &self.options,
                &mut |e| display.event(e),
            )
            .await;
        display.finish();
        match &result {
            Ok(obtained) => {
                if let Some(store) = &self.store {
                    record(store, &reference, obtained, entry)?;
                }
            }
            Err(err) => tracing::debug!(image = %image, class = err.class(), "pull failed"),
        }
        Ok(result)
    }
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
    let username = entry.and_then(|e| e.credentials.username.as_deref());
    if args.json {
        let line = Line {
            image: &image.original,
            digest: obtained.digest.as_deref(),
            key: entry.and_then(Entry::config_key),
            source: source_code(entry),
            from: source,
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
    let who = match entry {
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
