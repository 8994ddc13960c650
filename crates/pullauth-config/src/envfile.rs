//! The ecs.config reader: `KEY=VALUE` lines, as systemd's `EnvironmentFile=`
//! and `docker run --env-file` accept them.
//!
//! We read the file ourselves rather than through a dotenv crate: those
//! interpret `$`, `\` and quotes inside the value, which corrupts the
//! unquoted JSON that ecs.config carries in `ECS_ENGINE_AUTH_DATA`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use secrecy::SecretString;

/// One parsed environment file. Every value is kept as a secret: the file is
/// shared with the ECS agent and may hold anything, so nothing read from it is
/// printable until a caller decides a particular variable is not sensitive.
#[derive(Debug)]
pub struct EnvFile {
    /// Where the file was read from, for error messages and `pullauth check`.
    pub path: PathBuf,
    /// Variable name to (value, 1-based line number); a later line overrides
    /// an earlier one.
    entries: HashMap<String, (SecretString, usize)>,
}

/// Why an environment file could not be used. Messages name the file and the
/// line, never the line's content.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("cannot read environment file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}: expected KEY=VALUE (a variable name, '=', then the value); \
         comment lines start with '#'"
    )]
    Syntax { path: PathBuf, line: usize },
    #[error(
        "{path}:{line}: expected KEY=VALUE, found a line that starts with '{{': JSON \
         (such as ECS_ENGINE_AUTH_DATA's) must follow its KEY= on the same line"
    )]
    JsonLine { path: PathBuf, line: usize },
    #[error("{path}:{line}: the file is not valid UTF-8")]
    NotUtf8 { path: PathBuf, line: usize },
}

impl EnvFile {
    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<EnvFile, EnvFileError> {
        let bytes = std::fs::read(path).map_err(|source| EnvFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let bytes = secrecy::zeroize::Zeroizing::new(bytes);
        Self::from_bytes(&bytes, path)
    }

    /// Parses already fetched bytes (e.g. an `s3://bucket/key` object) as the
    /// file named `origin`, which messages and [`crate::Origin`] show as
    /// `origin:LINE`. The caller keeps (and zeroizes) `bytes`; the text made
    /// from them here is a [`SecretString`], zeroized when dropped.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<EnvFile, EnvFileError> {
        let path = origin;
        // Report the first line that is not UTF-8, rather than the whole file.
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            Err(err) => {
                let valid = err.valid_up_to();
                let line = 1 + bytes[..valid].iter().filter(|&&b| b == b'\n').count();
                return Err(EnvFileError::NotUtf8 {
                    path: path.to_owned(),
                    line,
                });
            }
        };
        let text = SecretString::from(text);
        Self::parse(secrecy::ExposeSecret::expose_secret(&text), path)
    }

    /// Parses `text` as the contents of the file at `path` (used for messages).
    pub fn parse(text: &str, path: &Path) -> Result<EnvFile, EnvFileError> {
        let mut entries = HashMap::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let Some((key, value)) = parse_line(raw).map_err(|()| {
                // Only the first character is looked at: it comes before any
                // '=', so it is never part of a value.
                if raw.trim_start().starts_with('{') {
                    EnvFileError::JsonLine {
                        path: path.to_owned(),
                        line,
                    }
                } else {
                    EnvFileError::Syntax {
                        path: path.to_owned(),
                        line,
                    }
                }
            })?
            else {
                continue;
            };
            entries.insert(key.to_owned(), (SecretString::from(value), line));
        }
        Ok(EnvFile {
            path: path.to_owned(),
            entries,
        })
    }

    /// The value of `key` and the line it was set on, if the file sets it.
    pub fn get(&self, key: &str) -> Option<(&SecretString, usize)> {
        self.entries.get(key).map(|(value, line)| (value, *line))
    }

    /// The names of every variable the file sets, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }
}

/// Parses one line: `Ok(None)` for blank and comment lines, `Err` for a line
/// that is not `KEY=VALUE`.
fn parse_line(raw: &str) -> Result<Option<(&str, &str)>, ()> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (key, value) = line.split_once('=').ok_or(())?;
    let key = key.trim();
    if !is_variable_name(key) {
        return Err(());
    }
    Ok(Some((key, unquote(value.trim()))))
}

/// A shell-style variable name: a letter or `_`, then letters, digits, `_`.
fn is_variable_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Removes one pair of matching quotes around the whole value.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use secrecy::ExposeSecret;

    fn parse(text: &str) -> Result<EnvFile, EnvFileError> {
        EnvFile::parse(text, Path::new("/etc/ecs/ecs.config"))
    }

    fn value(text: &str, key: &str) -> Option<String> {
        parse(text)
            .expect("parses")
            .get(key)
            .map(|(v, _)| v.expose_secret().to_owned())
    }

    #[rstest]
    #[case::plain("A=b", "b")]
    #[case::json_kept_literally(r#"A={"r.io":{"auth":"dTpw=="}}"#, r#"{"r.io":{"auth":"dTpw=="}}"#)]
    #[case::split_at_first_equals("A=x=y=z", "x=y=z")]
    #[case::crlf_trimmed("A=docker\r", "docker")]
    #[case::surrounding_space_trimmed("  A = docker  ", "docker")]
    #[case::double_quotes_removed(r#"A="docker""#, "docker")]
    #[case::single_quotes_removed("A='docker'", "docker")]
    #[case::quoted_json(r#"A='{"a":"b"}'"#, r#"{"a":"b"}"#)]
    #[case::only_one_pair_removed(r#"A=""x"""#, r#""x""#)]
    #[case::mismatched_quotes_kept(r#"A="x'"#, r#""x'"#)]
    #[case::lone_quote_kept(r#"A=""#, r#"""#)]
    #[case::empty_value("A=", "")]
    #[case::hash_inside_value("A=x#y", "x#y")]
    #[case::dollar_not_expanded("A=$HOME", "$HOME")]
    #[case::backslash_literal(r"A=a\nb", r"a\nb")]
    fn reads_values(#[case] text: &str, #[case] expected: &str) {
        assert_eq!(value(text, "A").as_deref(), Some(expected));
    }

    #[test]
    fn later_line_overrides_earlier() {
        let file = parse("A=1\nB=2\nA=3\n").expect("parses");
        let (value, line) = file.get("A").expect("A is set");
        assert_eq!(value.expose_secret(), "3");
        assert_eq!(line, 3);
    }

    #[test]
    fn skips_blank_and_comment_lines() {
        let file = parse("\n# comment\n   # indented comment\n\r\nA=1\n").expect("parses");
        assert_eq!(file.keys(), vec!["A"]);
        assert_eq!(file.get("A").map(|(_, l)| l), Some(5));
    }

    #[rstest]
    #[case::no_equals("A=1\njust some words\n", 2)]
    #[case::empty_key("=value", 1)]
    #[case::key_with_space("MY KEY=1", 1)]
    #[case::key_starting_with_digit("1A=1", 1)]
    #[case::export_prefix("export A=1", 1)]
    fn rejects_lines_that_are_not_assignments(#[case] text: &str, #[case] line: usize) {
        let err = parse(text).expect_err("must fail");
        assert!(
            matches!(err, EnvFileError::Syntax { line: l, .. } if l == line),
            "{err:?}"
        );
        assert!(err.to_string().contains("expected KEY=VALUE"), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("/etc/ecs/ecs.config:{line}:"))
        );
    }

    /// Lines an operator pastes by mistake, each holding the canary: the
    /// message names the file and line and never quotes the line.
    #[rstest]
    #[case::json_on_its_own_line(
        "ECS_ENGINE_AUTH_TYPE=docker\n{\"r.io\":{\"password\":\"Canary7pw\"}}",
        2,
        "starts with '{'"
    )]
    #[case::json_continuation_with_equals(
        "ECS_ENGINE_AUTH_DATA={\"r.io\":\n  {\"auth\":\"Canary7pw==\"}}",
        2,
        "must follow its KEY= on the same line"
    )]
    #[case::key_with_spaces(
        "ECS ENGINE AUTH DATA={\"password\":\"Canary7pw\"}",
        1,
        "expected KEY=VALUE"
    )]
    #[case::key_is_json("{\"password\":\"Canary7pw\"}=x", 1, "starts with '{'")]
    #[case::no_equals("password Canary7pw", 1, "expected KEY=VALUE")]
    #[case::export_prefix("export ECS_ENGINE_AUTH_DATA=Canary7pw", 1, "expected KEY=VALUE")]
    fn mistaken_lines_are_reported_without_their_text(
        #[case] text: &str,
        #[case] line: usize,
        #[case] message: &str,
    ) {
        let err = parse(text).expect_err("must fail");
        let shown = format!("{err} {err:?}");
        assert!(shown.contains(message), "{shown}");
        assert!(
            shown.contains(&format!("/etc/ecs/ecs.config:{line}:")),
            "{shown}"
        );
        assert!(!shown.contains("Canary7pw"), "{shown}");
    }

    #[test]
    fn syntax_error_does_not_quote_the_line() {
        let err = parse("ECS_ENGINE_AUTH_DATA {\"password\":\"hunter2\"}").expect_err("must fail");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn read_reports_missing_file_with_path() {
        let err = EnvFile::read(Path::new("/nonexistent/ecs.config")).expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent/ecs.config"), "{err}");
    }

    #[test]
    fn read_reports_invalid_utf8_line() {
        let dir = std::env::temp_dir().join(format!("pullauth-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("bad.config");
        std::fs::write(&path, b"A=1\nB=\xff\xfe\n").expect("write");
        let err = EnvFile::read(&path).expect_err("must fail");
        assert!(
            matches!(err, EnvFileError::NotUtf8 { line: 2, .. }),
            "{err:?}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn from_bytes_names_the_given_origin() {
        let origin = Path::new("s3://bucket/dir/ecs.config");
        let file = EnvFile::from_bytes(b"A=1\nB=2\n", origin).expect("parses");
        assert_eq!(file.get("B").map(|(_, line)| line), Some(2));
        let err = EnvFile::from_bytes(b"A=1\nnot a line hunter2\n", origin).expect_err("bad");
        assert!(
            err.to_string().starts_with("s3://bucket/dir/ecs.config:2:"),
            "{err}"
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = EnvFile::from_bytes(b"A=1\nB=\xff\n", origin).expect_err("bad");
        assert!(
            matches!(err, EnvFileError::NotUtf8 { line: 2, .. }),
            "{err:?}"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in ".*") {
            let _ = parse(&text);
        }

        #[test]
        fn errors_never_contain_the_line(key in "[A-Z_]{1,8}", secret in "[a-z0-9]{12,20}") {
            // A line missing its '=' is an error; the message must not echo it.
            let text = format!("{key} {secret}\n");
            if let Err(err) = parse(&text) {
                proptest::prop_assert!(!err.to_string().contains(&secret));
            }
        }
    }
}
