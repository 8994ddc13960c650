//! Pure decoding of what AWS returns: ECR authorization tokens and
//! registry-credential secrets. Errors name the field, never a value.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;

/// Username and password decoded from an ECR authorization token
/// (base64 of `user:password`; the user is `AWS`).
pub(crate) fn decode_ecr_token(token: &str) -> Result<(String, SecretString), &'static str> {
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .map_err(|_| "the authorization token is not base64")?,
    );
    let text = std::str::from_utf8(&bytes).map_err(|_| "the authorization token is not UTF-8")?;
    let (user, password) = text
        .split_once(':')
        .ok_or("the authorization token is not base64 of user:password")?;
    if user.is_empty() || password.is_empty() {
        return Err("the authorization token has an empty user or password");
    }
    Ok((user.to_string(), SecretString::from(password.to_string())))
}

/// How far from now an expiry from AWS may be before it is refused as
/// malformed: ECR tokens last 12 hours and assumed-role credentials at
/// most 12 hours; a year ahead is generous and still far from the times
/// that cannot be formatted (after 9999).
pub(crate) const PLAUSIBLE_EXPIRY: Duration = Duration::from_secs(366 * 24 * 3600);

/// An expiry AWS returned, checked against `now` at the edge: one before
/// 1970 or more than a year ahead is a malformed answer, never cached or
/// shown. A past expiry is kept (it is already expired: the cache uses such a
/// token once and never keeps it); moto's tokens, for one, expire in 2015.
pub(crate) fn plausible_expiry(
    expires_at: aws_sdk_ecr::primitives::DateTime,
    now: SystemTime,
) -> Result<SystemTime, &'static str> {
    let at = SystemTime::try_from(expires_at).map_err(|_| "an expiry out of range")?;
    if at < SystemTime::UNIX_EPOCH {
        return Err("an expiry before 1970");
    }
    if at
        .duration_since(now)
        .is_ok_and(|ahead| ahead > PLAUSIBLE_EXPIRY)
    {
        return Err("an expiry more than a year ahead");
    }
    Ok(at)
}

/// Registry credentials from a Secrets Manager secret.
pub struct SecretCredentials {
    pub username: String,
    pub password: SecretString,
}

impl std::fmt::Debug for SecretCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What the secret's value must be: a JSON object with string `username`
/// and `password` (the shape ECS documents for `repositoryCredentials`).
/// Other keys are ignored.
pub(crate) fn parse_secret_string(json: &str) -> Result<SecretCredentials, String> {
    #[derive(serde::Deserialize)]
    struct Fields {
        username: Option<serde_json::Value>,
        password: Option<serde_json::Value>,
    }
    if json.trim().is_empty() {
        return Err("the secret value is empty".into());
    }
    // serde_json's own messages quote the offending value: never show them.
    let fields: Fields = serde_json::from_str(json).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            "the secret value is not a JSON object with \"username\" and \"password\"".to_string()
        }
        _ => format!(
            "the secret value is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ),
    })?;
    let field =
        |name: &str, value: Option<serde_json::Value>| -> Result<Zeroizing<String>, String> {
            match value {
                None | Some(serde_json::Value::Null) => {
                    Err(format!("the secret has no {name:?} field"))
                }
                Some(serde_json::Value::String(s)) if s.is_empty() => {
                    Err(format!("the secret's {name:?} field is empty"))
                }
                Some(serde_json::Value::String(s)) => Ok(Zeroizing::new(s)),
                Some(_) => Err(format!("the secret's {name:?} field is not a string")),
            }
        };
    let username = field("username", fields.username)?;
    let password = field("password", fields.password)?;
    Ok(SecretCredentials {
        username: username.to_string(),
        password: SecretString::from(password.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use secrecy::ExposeSecret;

    use super::*;

    const CANARY: &str = "canary-Pa55w0rd";

    fn at(secs: i64) -> aws_sdk_ecr::primitives::DateTime {
        aws_sdk_ecr::primitives::DateTime::from_secs(secs)
    }

    /// 2026-12-03T12:00:00Z.
    const NOW: i64 = 1_796_299_200;

    /// The bug this pins: an `expiresAt` after 9999 was cached, and every
    /// `GET /v1/registries` then panicked formatting it.
    #[rstest]
    #[case::after_9999(253_402_300_800 + 3600, "a year ahead")]
    #[case::far_future(NOW + 400 * 24 * 3600, "a year ahead")]
    #[case::negative(-1_000_000, "before 1970")]
    #[case::out_of_any_range(i64::MAX, "")]
    fn absurd_expiries_are_refused(#[case] secs: i64, #[case] needle: &str) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW as u64);
        let problem = plausible_expiry(at(secs), now).expect_err("refused");
        assert!(problem.contains(needle), "{problem}");
    }

    #[rstest]
    #[case::twelve_hours(NOW + 12 * 3600)]
    #[case::expired_at_issue_like_moto(NOW)]
    #[case::a_skewed_clock(NOW - 3600)]
    #[case::years_ago_like_moto(1_420_070_400)] // 2015-01-01, moto's fixed expiry
    fn plausible_expiries_are_kept(#[case] secs: i64) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW as u64);
        let kept = plausible_expiry(at(secs), now).expect("kept");
        assert_eq!(
            kept,
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        );
    }

    #[test]
    fn decodes_an_ecr_token() {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{CANARY}:x"));
        let (user, password) = decode_ecr_token(&token).expect("valid");
        assert_eq!(user, "AWS");
        assert_eq!(password.expose_secret(), format!("{CANARY}:x"));
    }

    #[rstest]
    #[case::not_base64("%%%")]
    #[case::no_colon("QVdT")] // "AWS"
    #[case::empty_password("QVdTOg==")] // "AWS:"
    fn rejects_bad_ecr_tokens(#[case] token: &str) {
        decode_ecr_token(token).expect_err("invalid");
    }

    #[test]
    fn parses_a_secret_and_ignores_extra_keys() {
        let c = parse_secret_string(&format!(
            r#"{{"username":"bob","password":"{CANARY}","note":"x"}}"#
        ))
        .expect("valid");
        assert_eq!(c.username, "bob");
        assert_eq!(c.password.expose_secret(), CANARY);
        assert!(!format!("{c:?}").contains(CANARY));
    }

    #[rstest]
    #[case::empty("", "empty")]
    #[case::not_json(CANARY, "not valid JSON")]
    #[case::string_json(r#""canary-Pa55w0rd""#, "not a JSON object")]
    #[case::array(r#"["canary-Pa55w0rd"]"#, "not a JSON object")]
    #[case::no_password(r#"{"username":"bob"}"#, "no \"password\" field")]
    #[case::no_username(r#"{"password":"canary-Pa55w0rd"}"#, "no \"username\" field")]
    #[case::empty_password(r#"{"username":"bob","password":""}"#, "\"password\" field is empty")]
    #[case::password_not_string(r#"{"username":"bob","password":12345}"#, "not a string")]
    #[case::wrong_type_quotes_nothing(
        r#"{"username":["canary-Pa55w0rd"],"password":"x"}"#,
        "not a string"
    )]
    #[case::truncated(r#"{"username":"bob","password":"canary-Pa55w0rd"#, "not valid JSON")]
    fn rejects_bad_secrets_without_quoting_them(#[case] json: &str, #[case] problem: &str) {
        let e = parse_secret_string(json).expect_err("invalid");
        assert!(e.contains(problem), "{e}");
        assert!(!e.contains(CANARY), "{e}");
    }
}
