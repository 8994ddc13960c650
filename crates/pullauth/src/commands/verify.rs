//! `pullauth verify`: ask each registry, through the engine, whether the
//! credentials a pull would use may read the image, without pulling it.

use std::process::ExitCode;

use anyhow::Context;
use pullauth_agent::credentials::Provider;
use pullauth_aws::AwsOptions;
use pullauth_docker::{Engine, EngineSetupError, PullError, VerifyOutcome, VerifyReport};
use pullauth_resolve::{ImageRef, Source};

use super::{image_args, load, say};
use crate::cli::VerifyArgs;
use crate::exit;

pub fn run(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let (_config, table) = load(&args.config)?;
    // Every reference is checked before anything is asked.
    let images = image_args(&args.images)?
        .iter()
        .map(|i| ImageRef::parse(i))
        .collect::<Result<Vec<_>, _>>()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // An absent or wedged engine is an answer for every image, not a
        // reason to print nothing.
        let engine = match Engine::connect(None).await {
            Ok(engine) => {
                let with_credentials = images
                    .iter()
                    .filter(|i| !matches!(table.source(i, None, false), Source::Anonymous))
                    .count();
                engine.check_credentials_safe(with_credentials)?;
                engine.ping().await.map(|()| engine)
            }
            Err(EngineSetupError::Unreachable(error)) => Err(error),
            Err(error) => return Err(error.into()),
        };
        let mut failed = 0;
        // Credential helpers run just before the check, as for a pull;
        // verify never calls AWS.
        let provider = Provider::lazy(AwsOptions {
            ecr: false,
            ..AwsOptions::default()
        });
        for image in &images {
            let source = table.source(image, None, false);
            let provided = match &source {
                Source::Helper { .. } => match provider.provide(image, &source, None).await {
                    Ok(entry) => entry,
                    Err(err) => {
                        eprintln!("pullauth: {}: {err}", image.original);
                        failed += 1;
                        continue;
                    }
                },
                _ => None,
            };
            let entry = provided.as_ref().or_else(|| table.lookup(image));
            let result = match &engine {
                Ok(engine) => engine.verify(image, entry).await,
                Err(error) => Err::<_, PullError>(error.clone()),
            };
            let report = VerifyReport::new(image, entry, &result);
            if report.outcome != VerifyOutcome::Accepted {
                tracing::debug!(image = %image, result = report.outcome.as_str(), "verification failed");
                failed += 1;
            }
            if args.json {
                say(report.to_json())?;
            } else {
                say(report.line())?;
            }
        }
        Ok(if failed > 0 {
            ExitCode::from(exit::FAILED)
        } else {
            ExitCode::SUCCESS
        })
    })
}
