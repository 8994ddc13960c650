//! How a rejected value may appear in a message.
//!
//! Operators paste values into the wrong variable: the JSON of
//! `ECS_ENGINE_AUTH_DATA` into `ECS_ENGINE_AUTH_TYPE`, or a whole
//! `KEY=VALUE KEY=VALUE` line into one variable. Any value a message quotes
//! may therefore hold a password, so a value is quoted only when it looks
//! like the plain word the variable expects; anything else is described by
//! its length and shape, never shown.

use std::fmt;

/// The longest value that is still quoted (the longest expected word is
/// far shorter).
pub const MAX_QUOTED_CHARS: usize = 32;

/// A rejected value as a message may show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A short run of ASCII letters, digits, `-` and `_`: safe to quote.
    Token(String),
    /// Anything else: only its length, and whether it looks like JSON.
    Hidden { chars: usize, json: bool },
}

impl Found {
    /// Classifies `value` (already trimmed by the caller, or not: a value
    /// with surrounding space is not a token).
    pub fn new(value: &str) -> Found {
        if is_token(value) {
            Found::Token(value.to_owned())
        } else {
            Found::Hidden {
                chars: value.chars().count(),
                json: value.trim_start().starts_with('{'),
            }
        }
    }

    /// `="value"` for a token, to follow the variable's name; empty otherwise.
    pub fn assignment(&self) -> String {
        match self {
            Found::Token(value) => format!("={value:?}"),
            Found::Hidden { .. } => String::new(),
        }
    }

    /// ` (N characters, not shown)` for a hidden value; empty for a token.
    pub fn note(&self) -> String {
        match self {
            Found::Token(_) => String::new(),
            Found::Hidden { chars, .. } => format!(" ({chars} characters, not shown)"),
        }
    }

    /// A hint when the value looks like the JSON of `ECS_ENGINE_AUTH_DATA`.
    pub fn hint(&self) -> &'static str {
        match self {
            Found::Hidden { json: true, .. } => {
                "; the value looks like JSON, as ECS_ENGINE_AUTH_DATA holds: \
                 is it set on the wrong variable?"
            }
            _ => "",
        }
    }
}

impl fmt::Display for Found {
    /// `"value"` for a token, `N characters, not shown` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Token(value) => write!(f, "{value:?}"),
            Found::Hidden { chars, .. } => write!(f, "{chars} characters, not shown"),
        }
    }
}

/// Whether `value` is a short word of ASCII letters, digits, `-` and `_`.
pub fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_QUOTED_CHARS
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::word("basic")]
    #[case::dashes_underscores("prefer-cached_2")]
    #[case::duration("1h30m")]
    #[case::thirty_two_chars("abcdefghijklmnopqrstuvwxyz012345")]
    fn quotes_plain_words(#[case] value: &str) {
        assert_eq!(Found::new(value), Found::Token(value.to_owned()));
        assert_eq!(Found::new(value).assignment(), format!("={value:?}"));
        assert_eq!(Found::new(value).note(), "");
    }

    #[rstest]
    #[case::json(r#"{"r.io":{"password":"Canary7pw"}}"#, true)]
    #[case::json_after_space(r#"  {"a":"Canary7pw"}"#, true)]
    #[case::one_line_paste("dockercfg ECS_ENGINE_AUTH_DATA={Canary7pw}", false)]
    #[case::too_long("abcdefghijklmnopqrstuvwxyz0123456Canary7pw", false)]
    #[case::colon("user:Canary7pw", false)]
    #[case::dot("Canary7pw.x", false)]
    #[case::space("a Canary7pw", false)]
    #[case::quote("Canary7pw\"", false)]
    fn hides_anything_else(#[case] value: &str, #[case] json: bool) {
        let found = Found::new(value);
        assert_eq!(
            found,
            Found::Hidden {
                chars: value.chars().count(),
                json
            }
        );
        let shown = format!(
            "{found} {found:?} {}{}{}",
            found.assignment(),
            found.note(),
            found.hint()
        );
        assert!(!shown.contains("Canary7pw"), "{shown}");
        assert!(shown.contains("characters, not shown"), "{shown}");
    }
}
