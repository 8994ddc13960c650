//! `pullauth prefetch`: pull the images the cluster's ECS services run,
//! once each, with the credentials ECS would use, through the same engine
//! session (pull behavior, limits, progress, store) as `pullauth pull`.

use std::process::ExitCode;

use anyhow::Context;
use futures_util::StreamExt;
use pullauth_agent::credentials::{Provider, TaskCredentials};
use pullauth_agent::prefetch::{self, Filters, Problem, Pull, Skipped};
use pullauth_agent::shared_plan::{self, PlanReader, Published};
use pullauth_aws::{ErrorClass, S3Location};
use pullauth_config::PullBehavior;
use pullauth_docker::{Engine, PullStatus};
use pullauth_resolve::ImageRef;
use pullauth_resolve::{Entry, RegistryTable, Source};
use pullauth_store::PulledWith;
use serde::Serialize;

use super::pull::Session;
use super::{aws_options, load, quoted, say};
use crate::cli::PrefetchArgs;
use crate::exit::{self, UsageError};
use crate::progress::{Mode, seconds};

/// One line of `--json` output: an image, or a problem that kept one (or a
/// whole task definition or service) from being prefetched. One pull serves
/// every task definition and service naming the same image with the same
/// source, so both are lists (empty when the problem concerns no task
/// definition, or a task definition no service runs).
#[derive(Serialize)]
struct Line<'a> {
    services: &'a [String],
    /// Every task definition (`family:revision`) this line concerns.
    task_definitions: &'a [String],
    image: Option<&'a str>,
    /// The `ECS_ENGINE_AUTH_DATA` key as written when the credentials are
    /// that key's; `null` for every other source.
    key: Option<&'a str>,
    /// The kind of source (`key`, `task_secret`, `helper`, `ecr`,
    /// `ecr_public`, `anonymous`): the one that was provided once pulled
    /// (an ECR Public image whose token was refused says `anonymous`), the
    /// planned one for `would-pull`.
    source: Option<&'a str>,
    /// The source as people name it (`key "r.io"`, `secretsmanager ARN`).
    from: Option<String>,
    username: Option<&'a str>,
    /// `pulled`, `cached`, `would-pull` (dry run), `skipped` or `failed`.
    status: &'a str,
    /// Why it is `skipped`: a stable code (`launch-type`,
    /// `capacity-provider`, `requires-compatibilities`, `cpu-architecture`,
    /// `os-family`, `member-of`, `service-not-active`); `null` otherwise.
    reason: Option<&'a str>,
    /// What placement could not decide and took as "can run here".
    notes: &'a [String],
    /// The manifest digest ECS pinned for the image (pulled by it, then
    /// tagged with the image's own reference); `null` when none is known.
    pinned_digest: Option<&'a str>,
    digest: Option<&'a str>,
    seconds: Option<f64>,
    error: Option<String>,
}

pub fn run(args: &PrefetchArgs) -> anyhow::Result<ExitCode> {
    let (config, table) = load(&args.config)?;
    let cluster = args
        .cluster
        .clone()
        .unwrap_or_else(|| config.cluster.value.clone());
    if cluster.trim().is_empty() {
        return Err(UsageError("--cluster is empty".into()).into());
    }
    let filters = if args.services.is_empty() && args.task_definitions.is_empty() {
        Filters {
            services: config.prefetch_services.value.clone(),
            task_definitions: config.prefetch_task_definitions.value.clone(),
        }
    } else {
        Filters {
            services: args.services.clone(),
            task_definitions: args.task_definitions.clone(),
        }
    };
    // Task definitions and service revisions described here are kept in
    // ECS_DATADIR's store, for `serve` and the next boot: nothing is
    // described twice. Beside a running `serve` the store is shared (a
    // store that cannot be opened means nothing is kept, said at debug
    // level). A dry run leaves the data directory alone.
    let ecs_records = match &config.data_dir {
        Some(dir) if !args.dry_run => pullauth_agent::ecs_records::StoreRecords::open(&dir.value)
            .map(|records| {
                std::sync::Arc::new(records) as std::sync::Arc<dyn pullauth_aws::EcsRecords>
            }),
        _ => None,
    };
    let source = ClusterFrom::from_args(args)?;
    // One caller, once: ECS is read unpaced (the follower's client-side
    // limiter exists for a fleet's polls; throttles are retried by the SDK).
    let provider = Provider::lazy(pullauth_aws::AwsOptions {
        pace_ecs: false,
        ecs_records,
        ..aws_options(config.ecr.value, config.aws_timeout.value)?
    });
    let behavior = args
        .pull_behavior
        .map_or(config.pull_behavior.value, PullBehavior::from);
    let mode = Mode::detect(args.json || args.quiet);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Where this instance can run tasks: the engine's platform and
        // IMDS (each bounded; what cannot be read is not decided, and the
        // images are pulled).
        let platform = match Engine::connect(None).await {
            Ok(engine) => engine.platform().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (host, notes) = prefetch::host_facts(
            platform,
            Some(provider.aws().await),
            &config.ecs_agent.instance_attributes.value,
            Some((cluster.as_str(), config.ecs_agent_uri.value.as_str())),
        )
        .await;
        for note in &notes {
            tracing::warn!("placement: {note}");
        }
        let plan = match &source {
            ClusterFrom::Cluster => {
                match prefetch::plan(provider.aws().await, &cluster, &filters, &host).await {
                    Ok(plan) => plan,
                    // A cluster that does not exist is the input's fault.
                    Err(e) if e.class() == ErrorClass::NotFound => {
                        return Err(UsageError(e.to_string()).into());
                    }
                    Err(e) => {
                        return Err(anyhow::Error::new(e).context(format!("cluster {cluster}")));
                    }
                }
            }
            ClusterFrom::Publish(location) => {
                return publish(args, provider.aws().await, &cluster, location, &host).await;
            }
            ClusterFrom::Plan(location, max_age) => {
                let held = PlanReader::default()
                    .read(provider.aws().await, location, &cluster)
                    .await
                    .map_err(|e| anyhow::Error::new(e).context(format!("--plan {location}")))?;
                let document = &held.document;
                match shared_plan::age(document, std::time::SystemTime::now()) {
                    Some(age) if age <= *max_age => {}
                    age => tracing::warn!(
                        plan = %location,
                        age = %shared_plan::describe_age(age),
                        publisher = %document.publisher,
                        checked_at = %document.checked_at,
                        "the cluster plan is stale (its publisher has not confirmed it within --plan-max-age); pulling what it says anyway"
                    ),
                }
                prefetch::decide_plan(&document.view, &filters, &host)
            }
        };
        let mut failed = 0;
        for warning in &plan.warnings {
            tracing::warn!("{warning}");
        }
        for problem in &plan.problems {
            failed += 1;
            report_problem(args, problem)?;
        }
        for skipped in &plan.skipped {
            report_skipped(args, skipped)?;
        }
        let pulls = prefetch::pulls(&plan.wanted, &table, provider.ecr_enabled());
        // The ECS agent's settings from the same file: what would make this
        // prefetch useless, or loop with its cleanup (the ECS agent's own
        // variables, so `config`, not --pull-behavior).
        super::warn_beside_ecs_agent(
            &config,
            Some(&prefetch::listed_names(&pulls)),
            &mut pullauth_config::ecs_agent::WarnedOnce::default(),
        );
        if pulls.is_empty() && plan.problems.is_empty() && plan.skipped.is_empty() {
            tracing::warn!(cluster = %cluster, "nothing to prefetch: no service or task definition names an image");
        }
        if args.dry_run {
            for pull in &pulls {
                report(args, pull, None, "would-pull", None)?;
            }
            return Ok(exit_code(failed));
        }
        let with_credentials = pulls
            .iter()
            .filter(|p| !matches!(p.first.source(&table, provider.ecr_enabled()), Source::Anonymous))
            .count();
        let store_dir = config.data_dir.as_ref().map(|d| d.value.as_path());
        let session = Session::open(&config, behavior, store_dir, mode, with_credentials).await?;
        // The pulls run side by side, bounded as serve's are; bars on a
        // terminal would draw over each other, so they go one at a time.
        let at_once = match mode {
            Mode::Bars => 1,
            Mode::Plain | Mode::Quiet => usize::from(args.max_concurrent_pulls),
        };
        let outcomes: Vec<anyhow::Result<bool>> = futures_util::stream::iter(&pulls)
            .map(|pull| prefetch_one(args, pull, &provider, &table, &session))
            .buffer_unordered(at_once)
            .collect()
            .await;
        for outcome in outcomes {
            if !outcome? {
                failed += 1;
            }
        }
        Ok(exit_code(failed))
    })
}

/// Gets one pull's credentials (the pull's own way to them, as `pull`,
/// `verify` and the agent get theirs), pulls, tags a pinned digest with
/// the task's reference, marks what it downloaded, and reports it.
/// `Ok(false)`: this pull failed (reported); `Err`: the store failed.
async fn prefetch_one(
    args: &PrefetchArgs,
    pull: &Pull,
    provider: &Provider,
    table: &RegistryTable,
    session: &Session,
) -> anyhow::Result<bool> {
    let provided = match pull.first.role() {
        Ok(role) => provider
            .credentials_for(
                table,
                &pull.first.image,
                TaskCredentials {
                    secret: pull.first.secret.as_deref(),
                    role: role.as_ref(),
                },
            )
            .await
            .map(|provided| provided.entry)
            .map_err(|e| e.to_string()),
        Err(e) => Err(format!("executionRoleArn: {e}")),
    };
    let entry = match provided {
        Ok(entry) => entry,
        Err(error) => {
            report(args, pull, None, "failed", Some(error))?;
            return Ok(false);
        }
    };
    let pull_image = &pull.image;
    let pulled = match session.pull(pull_image, entry.as_ref()).await? {
        // Pulled by the digest ECS pinned: tagged with the task's own
        // reference, as the ECS agent does after such a pull.
        Ok(obtained) => match pull.first.tag_as() {
            Some(target) => session
                .tag(&pull_image.pull_reference(), target)
                .await
                .map(|()| obtained),
            None => Ok(obtained),
        },
        Err(error) => Err(error),
    };
    match pulled {
        Ok(obtained) => {
            if let Some(error) = &obtained.fallback_from {
                eprintln!(
                    "pullauth: warning: {}: {error}; using the cached image",
                    pull.first.image.original
                );
            }
            if obtained.status == PullStatus::Pulled {
                let mut names = vec![pull_image.pull_reference()];
                names.extend(pull.first.tag_as().map(ImageRef::pull_reference));
                let with = PulledWith {
                    registry_key: entry.as_ref().map(|e| e.key.written.clone()),
                    username: entry.as_ref().and_then(|e| e.credentials.username.clone()),
                };
                session.mark_prefetched(&names, &obtained.image_id, with)?;
            }
            let outcome = Outcome {
                entry: entry.as_ref(),
                digest: obtained.digest.as_deref(),
                seconds: seconds(obtained.elapsed),
            };
            report(args, pull, Some(outcome), obtained.status.as_str(), None)?;
            Ok(true)
        }
        Err(error) => {
            let outcome = Outcome {
                entry: entry.as_ref(),
                digest: None,
                seconds: 0.0,
            };
            report(args, pull, Some(outcome), "failed", Some(error.to_string()))?;
            Ok(false)
        }
    }
}

/// Where this prefetch reads the cluster, or writes it.
enum ClusterFrom {
    Cluster,
    /// `--publish`: read ECS, write the plan, pull nothing.
    Publish(S3Location),
    /// `--plan`, with `--plan-max-age`.
    Plan(S3Location, std::time::Duration),
}

impl ClusterFrom {
    fn from_args(args: &PrefetchArgs) -> anyhow::Result<ClusterFrom> {
        let location = |flag: &str, url: &str| {
            S3Location::parse(url).map_err(|e| UsageError(format!("{flag}: {e}")))
        };
        if let Some(url) = &args.publish {
            return Ok(ClusterFrom::Publish(location("--publish", url)?));
        }
        if let Some(url) = &args.plan {
            let max_age = super::positive_duration("--plan-max-age", &args.plan_max_age, "15m")?;
            return Ok(ClusterFrom::Plan(location("--plan", url)?, max_age));
        }
        Ok(ClusterFrom::Cluster)
    }
}

/// The `--publish` line (`--json`: one object).
#[derive(Serialize)]
struct PublishLine<'a> {
    cluster: &'a str,
    plan: String,
    /// `written`, `confirmed`, `unchanged`, `newer-plan-kept`.
    outcome: &'static str,
    etag: Option<&'a str>,
    services: usize,
    task_definitions: usize,
    problems: usize,
}

/// `prefetch --publish`: reads the whole cluster once and writes it as the
/// cluster plan (when it changed); problems reading part of it are
/// reported, published with the plan, and make the exit 1.
async fn publish(
    args: &PrefetchArgs,
    aws: &pullauth_aws::Aws,
    cluster: &str,
    location: &S3Location,
    host: &pullauth_ecs::Host,
) -> anyhow::Result<ExitCode> {
    let read_at = std::time::SystemTime::now();
    let view = match prefetch::read(aws, cluster, &Filters::default()).await {
        Ok(view) => view,
        Err(e) if e.class() == ErrorClass::NotFound => {
            return Err(UsageError(e.to_string()).into());
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cluster {cluster}"))),
    };
    for warning in &view.warnings {
        tracing::warn!("{warning}");
    }
    for problem in &view.problems {
        let problem = Problem {
            services: problem.services.clone(),
            task_definition: problem.task_definition.clone(),
            image: None,
            error: problem.error.clone(),
        };
        report_problem(args, &problem)?;
    }
    let publisher = shared_plan::publisher_name(host);
    let published = shared_plan::publish(
        aws,
        location,
        &view,
        read_at,
        &publisher,
        std::time::SystemTime::now(),
    )
    .await
    .with_context(|| format!("publishing the plan of cluster {cluster} to {location}"))?;
    let etag = match &published {
        Published::Written { etag } | Published::Confirmed { etag } => Some(etag.as_str()),
        Published::Unchanged | Published::Newer { .. } => None,
    };
    let line = PublishLine {
        cluster,
        plan: location.to_string(),
        outcome: published.outcome(),
        etag,
        services: view.services.len(),
        task_definitions: view.task_definitions.len(),
        problems: view.problems.len(),
    };
    if args.json {
        say(&serde_json::to_string(&line)?)?;
    } else if !args.quiet {
        let detail = match &published {
            Published::Newer { read_at, publisher } => {
                format!(" (a plan read at {read_at} by {publisher} is there; left alone)")
            }
            _ => String::new(),
        };
        say(format!(
            "{location}: {}{detail}: {} services, {} task definitions, {} problems",
            line.outcome, line.services, line.task_definitions, line.problems
        ))?;
    }
    Ok(exit_code(view.problems.len()))
}

fn exit_code(failed: usize) -> ExitCode {
    if failed > 0 {
        ExitCode::from(exit::FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// What a pull used and gave.
struct Outcome<'a> {
    entry: Option<&'a Entry>,
    digest: Option<&'a str>,
    seconds: f64,
}

fn report(
    args: &PrefetchArgs,
    pull: &Pull,
    outcome: Option<Outcome<'_>>,
    status: &str,
    error: Option<String>,
) -> anyhow::Result<()> {
    let username = outcome
        .as_ref()
        .and_then(|o| o.entry)
        .and_then(|e| e.credentials.username.as_deref());
    let image = &pull.first.image.original;
    let services = if pull.services.is_empty() {
        "-".to_owned()
    } else {
        pull.services.join(",")
    };
    let whom = format!(
        "task definition {}, service {services}",
        pull.task_definitions.join(",")
    );
    if let Some(error) = &error {
        eprintln!("pullauth: {whom}: {image}: {error}");
    }
    // The provided source once credentials were obtained, else the plan's.
    let provided = outcome.as_ref().map(|o| o.entry);
    let (key, kind, from) = match provided {
        Some(entry) => (
            entry.and_then(Entry::config_key),
            pullauth_resolve::source_code(entry),
            entry.map_or_else(|| "anonymous".to_owned(), Entry::label),
        ),
        None => (pull.key.as_deref(), pull.kind, pull.source.clone()),
    };
    if args.json {
        return say(serde_json::to_string(&Line {
            services: &pull.services,
            task_definitions: &pull.task_definitions,
            image: Some(image),
            key,
            source: Some(kind),
            from: Some(from),
            username,
            status,
            reason: None,
            notes: &pull.first.notes,
            pinned_digest: pull.first.digest.as_deref(),
            digest: outcome.as_ref().and_then(|o| o.digest),
            seconds: outcome.as_ref().map(|o| o.seconds),
            error,
        })?);
    }
    if error.is_some() || args.quiet {
        return Ok(());
    }
    let who = match outcome.as_ref().and_then(|o| o.entry) {
        Some(_) => format!("{from}, user {}", quoted(username)),
        None => from,
    };
    match outcome {
        Some(o) => say(format!(
            "{status} {image} {} [{who}] in {:.2}s ({whom})",
            o.digest.unwrap_or("-"),
            o.seconds
        )),
        None => say(format!("{status} {image} [{who}] ({whom})")),
    }
}

fn report_problem(args: &PrefetchArgs, problem: &Problem) -> anyhow::Result<()> {
    eprintln!("pullauth: {problem}");
    if args.json {
        let task_definitions: Vec<String> = problem.task_definition.iter().cloned().collect();
        return say(serde_json::to_string(&Line {
            services: &problem.services,
            task_definitions: &task_definitions,
            image: problem.image.as_deref(),
            key: None,
            source: None,
            from: None,
            username: None,
            status: "failed",
            reason: None,
            notes: &[],
            pinned_digest: None,
            digest: None,
            seconds: None,
            error: Some(problem.error.clone()),
        })?);
    }
    Ok(())
}

/// An image (or service) ECS cannot place here: one line, never an error.
fn report_skipped(args: &PrefetchArgs, skipped: &Skipped) -> anyhow::Result<()> {
    let task_definitions: Vec<String> = skipped.task_definition.iter().cloned().collect();
    if args.json {
        return say(serde_json::to_string(&Line {
            services: &skipped.services,
            task_definitions: &task_definitions,
            image: skipped.image.as_deref(),
            key: None,
            source: None,
            from: None,
            username: None,
            status: "skipped",
            reason: Some(skipped.reason.code()),
            notes: &[],
            pinned_digest: None,
            digest: None,
            seconds: None,
            error: Some(skipped.detail.clone()),
        })?);
    }
    if args.quiet {
        return Ok(());
    }
    let services = if skipped.services.is_empty() {
        "-".to_owned()
    } else {
        skipped.services.join(",")
    };
    say(format!(
        "skipped {} [{}] (task definition {}, service {services}): {}",
        skipped.image.as_deref().unwrap_or("-"),
        skipped.reason,
        if task_definitions.is_empty() {
            "-".to_owned()
        } else {
            task_definitions.join(",")
        },
        skipped.detail
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_names_services_and_task_definitions_as_lists_only() {
        let services = ["agentd".to_owned(), "web".to_owned()];
        let tds = ["web:1".to_owned(), "web:2".to_owned()];
        let line = Line {
            services: &services,
            task_definitions: &tds,
            image: Some("registry.example.com/app:1"),
            key: Some("registry.example.com"),
            source: Some("key"),
            from: Some("key \"registry.example.com\"".to_owned()),
            username: Some("bob"),
            status: "pulled",
            reason: None,
            notes: &[],
            pinned_digest: None,
            digest: Some("sha256:feedface"),
            seconds: Some(1.5),
            error: None,
        };
        let value = serde_json::to_value(&line).expect("serializes");
        let keys: std::collections::BTreeSet<&str> = value
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            std::collections::BTreeSet::from([
                "digest",
                "error",
                "from",
                "image",
                "key",
                "notes",
                "pinned_digest",
                "reason",
                "seconds",
                "services",
                "source",
                "status",
                "task_definitions",
                "username"
            ])
        );
        assert_eq!(
            value["task_definitions"],
            serde_json::json!(["web:1", "web:2"])
        );
    }
}
