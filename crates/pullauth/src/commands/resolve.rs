//! `pullauth resolve`: which registry, repository, key and username apply,
//! and with `--explain` why each configured key applies or not.

use std::process::ExitCode;

use pullauth_config::Config;
use pullauth_resolve::{Explanation, Source, SourceExplanation};
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
    /// The kind of source the credentials come from: `key`, `helper`,
    /// `ecr`, `ecr_public` or `anonymous` (`task_secret` needs a task).
    source: &'static str,
    /// That source as people name it: `key "<written>"`, `helper <name>`,
    /// `ecr account <id> region <region>` or `anonymous`.
    from: String,
}

/// One line of `--explain --json` output: an image and every key's verdict.
#[derive(Serialize)]
struct ExplainLine<'a> {
    image: &'a str,
    registry: &'a str,
    repository: &'a str,
    /// The key (as written) whose credentials are used; `null`: anonymous.
    winner: Option<&'a str>,
    keys: Vec<KeyLine<'a>>,
    /// Where `ECS_ENGINE_AUTH_DATA` was written; `null` when it is unset.
    origin: Option<String>,
    /// The kind of source the pull uses, as `resolve --json` names it.
    source: &'static str,
    /// That source as people name it (`key "..."`, `helper <name>`,
    /// `ecr account <id> region <region>`, `anonymous`).
    from: String,
    /// Every kind of source in precedence order, and why it applies, lost
    /// or does not apply.
    sources: Vec<SourceLine<'a>>,
}

#[derive(Serialize)]
struct SourceLine<'a> {
    /// `task_secret`, `key`, `helper`, `ecr` or `anonymous`.
    kind: &'static str,
    /// What this kind would give the image; `null` when nothing.
    source: Option<String>,
    applies: bool,
    /// `applies`, `outranked`, `no_secret`, `no_key`, `no_helper`,
    /// `not_ecr_host`, `ecr_disabled`.
    reason: &'static str,
    detail: &'a str,
}

#[derive(Serialize)]
struct KeyLine<'a> {
    /// As written, user info masked.
    key: &'a str,
    normalized: String,
    username: Option<&'a str>,
    applies: bool,
    reason: &'static str,
    detail: &'a str,
}

pub fn run(args: &ResolveArgs) -> anyhow::Result<ExitCode> {
    let (config, table) = load(&args.config)?;
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
        if args.explain {
            let sources = table.explain_source(&resolution.image, None, config.ecr.value);
            explain(
                &config,
                &table.explain(&resolution.image),
                &sources,
                args.json,
            )?;
            continue;
        }
        let source = table.source(&resolution.image, None, config.ecr.value);
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
                source: source.code(),
                from: source.to_string(),
            };
            say(serde_json::to_string(&line)?)?;
        } else {
            let who = match key {
                Some(key) => format!("key {key:?}, user {}", quoted(username)),
                None => format!("no key applies: {source}"),
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

/// Prints one image's explanation: a JSON line, or a header and a table.
fn explain(
    config: &Config,
    explanation: &Explanation<'_>,
    sources: &SourceExplanation<'_>,
    json: bool,
) -> anyhow::Result<()> {
    let image = &explanation.image;
    let origin = config
        .engine_auth
        .as_ref()
        .map(|a| a.data_origin.to_string());
    let winner = explanation.winner.map(|e| e.key.written.as_str());
    if json {
        let keys = explanation
            .keys
            .iter()
            .map(|v| KeyLine {
                key: &v.entry.key.written,
                normalized: v.entry.key.to_string(),
                username: v.entry.credentials.username.as_deref(),
                applies: v.applies(),
                reason: v.reason.code(),
                detail: &v.detail,
            })
            .collect();
        let line = ExplainLine {
            image: &image.original,
            registry: &image.domain,
            repository: &image.path,
            winner,
            keys,
            origin,
            source: sources.winner.code(),
            from: sources.winner.to_string(),
            sources: sources
                .verdicts
                .iter()
                .map(|v| SourceLine {
                    kind: v.kind.code(),
                    source: v.source.as_ref().map(ToString::to_string),
                    applies: v.applies,
                    reason: v.reason,
                    detail: &v.detail,
                })
                .collect(),
        };
        return say(serde_json::to_string(&line)?);
    }
    let who = match (&sources.winner, explanation.winner) {
        (Source::Static(_), Some(entry)) => format!(
            "key {:?}, user {}",
            entry.key.written,
            quoted(entry.credentials.username.as_deref())
        ),
        (source, _) => format!("source {source}"),
    };
    say(format!(
        "{}: registry {}, repository {}, {who}",
        image.original, image.domain, image.path
    ))?;
    say("  sources, in precedence order:")?;
    for verdict in &sources.verdicts {
        let mark = if verdict.applies { "*" } else { " " };
        say(format!(
            "  {mark} {:<11}  {}: {}",
            verdict.kind.code(),
            verdict.reason,
            verdict.detail
        ))?;
    }
    let Some(origin) = origin else {
        return say(format!(
            "  no keys: {} is unset",
            pullauth_config::AUTH_DATA
        ));
    };
    let rows: Vec<[String; 4]> = explanation
        .keys
        .iter()
        .map(|v| {
            [
                v.entry.key.written.clone(),
                v.entry.key.to_string(),
                quoted(v.entry.credentials.username.as_deref()),
                format!("{}: {}", v.reason, v.detail),
            ]
        })
        .collect();
    let width = |i: usize, title: &str| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([title.len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (
        width(0, "KEY"),
        width(1, "APPLIES TO"),
        width(2, "USERNAME"),
    );
    say(format!(
        "    {:<w0$}  {:<w1$}  {:<w2$}  VERDICT",
        "KEY", "APPLIES TO", "USERNAME"
    ))?;
    for (row, verdict) in rows.iter().zip(&explanation.keys) {
        let mark = if verdict.applies() { "*" } else { " " };
        say(format!(
            "  {mark} {:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0], row[1], row[2], row[3]
        ))?;
    }
    let count = explanation.keys.len();
    say(format!(
        "  {count} key(s) from {} ({origin})",
        pullauth_config::AUTH_DATA
    ))
}
