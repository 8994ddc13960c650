//! `pullauth verify`: ask each registry, through the engine, whether the
//! credentials a pull would use may read the image, without pulling it.

use std::process::ExitCode;

use anyhow::Context;
use pullauth_agent::credentials::TaskCredentials;
use pullauth_docker::{Engine, EngineSetupError, PullError, VerifyOutcome, VerifyReport};
use pullauth_resolve::Source;

use super::{PullRequest, say};
use crate::cli::VerifyArgs;
use crate::exit;

pub fn run(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    // The pull's own provider: keys, helpers, ECR tokens (as PULLAUTH_ECR
    // says) and the --repository-credentials secret.
    let PullRequest {
        table,
        images,
        role,
        provider,
        ..
    } = PullRequest::read(&args.config, &args.images, args.execution_role.as_deref())?;
    let task = TaskCredentials {
        secret: args.repository_credentials.as_deref(),
        role: role.as_ref(),
    };
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
                    .filter(|i| !matches!(provider.source(&table, i, task), Source::Anonymous))
                    .count();
                engine.check_credentials_safe(with_credentials)?;
                engine.ping().await.map(|()| engine)
            }
            Err(EngineSetupError::Unreachable(error)) => Err(error),
            Err(error) => return Err(error.into()),
        };
        let mut failed = 0;
        for image in &images {
            // Credentials are provided just before the check, as for a pull.
            let report = match provider.credentials_for(&table, image, task).await {
                Ok(provided) => {
                    let entry = provided.entry.as_ref();
                    let result = match &engine {
                        Ok(engine) => engine.verify(image, entry).await,
                        Err(error) => Err::<_, PullError>(error.clone()),
                    };
                    VerifyReport::new(image, entry, &result)
                }
                Err(err) => VerifyReport::unprovided(image, err.kind, &err.from, &err.to_string()),
            };
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
