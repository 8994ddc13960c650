//! `pullauth resolve`: which registry, repository, key and username apply.

use std::process::ExitCode;

use serde::Serialize;

use super::{image_args, load, quoted, say};
use crate::cli::ResolveArgs;
use crate::exit;

/// One line of `--json` output. `registry` and `repository` are as Docker
/// pulls the image (host case kept, only `index.docker.io` folded), not the
/// folded form the key was chosen by.
#[derive(Serialize)]
struct Line<'a> {
    image: &'a str,
    registry: &'a str,
    repository: &'a str,
    key: Option<&'a str>,
    username: Option<&'a str>,
}

pub fn run(args: &ResolveArgs) -> anyhow::Result<ExitCode> {
    let (_config, table) = load(&args.config)?;
    let images = image_args(&args.images)?;
    let mut bad = 0;
    for image in &images {
        let resolution = match table.resolve(image) {
            Ok(resolution) => resolution,
            Err(err) => {
                eprintln!("pullauth: {err}");
                bad += 1;
                continue;
            }
        };
        let key = resolution.entry.map(|e| e.key.written.as_str());
        let username = resolution
            .entry
            .and_then(|e| e.credentials.username.as_deref());
        if args.json {
            let line = Line {
                image,
                registry: &resolution.image.domain,
                repository: &resolution.image.path,
                key,
                username,
            };
            say(serde_json::to_string(&line)?)?;
        } else {
            let who = match key {
                Some(key) => format!("key {key:?}, user {}", quoted(username)),
                None => "no key applies: anonymous".to_owned(),
            };
            say(format!(
                "{image}: registry {}, repository {}, {who}",
                resolution.image.domain, resolution.image.path
            ))?;
        }
    }
    Ok(if bad > 0 {
        ExitCode::from(exit::USAGE)
    } else {
        ExitCode::SUCCESS
    })
}
