//! Fuzzes `pullauth_config::EnvFile::parse`, the ecs.config reader.
//!
//! Asserts, for any text:
//! - parsing never panics;
//! - values never influence the outcome: the same text with every value
//!   removed (each line cut after its first '=') fails on the same line with
//!   the same message, or succeeds with the same keys on the same lines;
//! - an error's Display and Debug never contain a value (any piece of a value
//!   of 6+ characters with a lowercase letter that the message of the
//!   value-less text does not contain anyway);
//! - a parsed file's Debug never contains such a value either (values are
//!   `SecretString`s and print as `[REDACTED]`);
//! - every value read back with `get` comes from the line `get` names, which
//!   holds a '=' and the key before it.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pullauth_config::{EnvFile, EnvFileError, ExposeSecret};

/// Fixed, so that every character of a message that is not the line number
/// or this path is text pullauth wrote.
const PATH: &str = "/etc/ecs/ecs.config";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check(&text);
});

fn check(text: &str) {
    let path = Path::new(PATH);
    let result = EnvFile::parse(text, path);
    let blanked = blank_values(text);
    let reference = EnvFile::parse(&blanked, path);
    let line_count = text.split('\n').count();
    let secrets = secret_pieces(text);

    match (&result, &reference) {
        (Err(err), Err(reference_err)) => {
            let line = syntax_line(err);
            assert!(
                (1..=line_count).contains(&line),
                "line {line} of {line_count}: {err:?}"
            );
            assert_eq!(
                line,
                syntax_line(reference_err),
                "values changed the failing line"
            );
            let shown = format!("{err}\n{err:?}");
            let reference_shown = format!("{reference_err}\n{reference_err:?}");
            for secret in &secrets {
                assert!(
                    !shown.contains(secret.as_str()) || reference_shown.contains(secret.as_str()),
                    "error message leaks a value: {secret:?} in {shown:?}"
                );
            }
            assert_eq!(shown, reference_shown, "values changed the error message");
        }
        (Ok(file), Ok(reference_file)) => {
            assert_eq!(file.path, path);
            assert_eq!(
                file.keys(),
                reference_file.keys(),
                "values changed the keys"
            );
            let lines: Vec<&str> = text.split('\n').collect();
            for key in file.keys() {
                let (value, line) = file.get(key).expect("listed key is set");
                let (_, reference_line) = reference_file.get(key).expect("listed key is set");
                assert_eq!(line, reference_line, "values changed the line of {key}");
                let raw = lines[line - 1];
                let (before, after) = raw.split_once('=').expect("a set line holds '='");
                assert_eq!(before.trim(), key, "key is not the text before '='");
                assert!(
                    after.contains(value.expose_secret()),
                    "value is not from its line"
                );
            }
            // The HashMap's order differs between the two files, so compare
            // only pieces that cannot straddle two entries of the dump.
            let shown = format!("{file:?}\n{file:#?}");
            let reference_shown = format!("{reference_file:?}\n{reference_file:#?}");
            for secret in &secrets {
                for piece in secret.split(['"', ')', '\n']).filter(|p| checkable(p)) {
                    assert!(
                        !shown.contains(piece) || reference_shown.contains(piece),
                        "Debug of EnvFile leaks a value: {piece:?} in {shown:?}"
                    );
                }
            }
        }
        _ => panic!(
            "values changed whether the file parses: {:?} vs {:?}",
            result.as_ref().err(),
            reference.as_ref().err()
        ),
    }
}

fn syntax_line(err: &EnvFileError) -> usize {
    match err {
        EnvFileError::Syntax { path, line } | EnvFileError::JsonLine { path, line } => {
            assert_eq!(path, Path::new(PATH));
            *line
        }
        other => panic!("parse returned an error other than Syntax or JsonLine: {other:?}"),
    }
}

/// Every line cut just after its first '=': the file without its values.
fn blank_values(text: &str) -> String {
    text.split('\n')
        .map(|line| line.find('=').map_or(line, |i| &line[..=i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value part of each line with a '=', as written, trimmed, and without
/// its quotes, keeping those long enough not to be message text by chance.
fn secret_pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        let Some((_, value)) = line.split_once('=') else {
            continue;
        };
        let trimmed = value.trim();
        let unquoted = trimmed
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| {
                trimmed
                    .strip_prefix('\'')
                    .and_then(|v| v.strip_suffix('\''))
            })
            .unwrap_or(trimmed);
        for candidate in [value, trimmed, unquoted] {
            if checkable(candidate) {
                out.push(candidate.to_owned());
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn checkable(value: &str) -> bool {
    value.chars().count() >= 6 && value.bytes().any(|b| b.is_ascii_lowercase())
}
