//! The endpoint overrides in the environment, checked when the
//! configuration is loaded.
//!
//! The AWS SDK reads `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>`
//! itself, and finds a malformed one only when a call is made: minutes or
//! hours after the agent started, as a failed call (exit 1). pullauth checks
//! them at start, where every other setting is checked, so that a typo is a
//! configuration error (exit 2) naming the variable. The value is never
//! quoted: a URL can carry a user and password.
//!
//! Only the variables of the services pullauth calls are checked (another
//! tool's `AWS_ENDPOINT_URL_DYNAMODB` is not ours to refuse), with the check
//! S3's endpoint resolution also applies ([`endpoint_problem`]): a value the
//! URI parser rejects, one without a host, one with user info (no SDK uses
//! it, and it may be a password), or a scheme other than http or https.
//! `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true` makes the SDK ignore them all,
//! and then so does this check. Not checked here: an endpoint in a profile
//! (`endpoint_url` in `~/.aws/config`; a malformed one still fails the first
//! call, with a message that says so), and a profile's
//! `ignore_configured_endpoint_urls`.

use std::ffi::OsString;

/// The variable every service's endpoint override falls back to.
const ENDPOINT_URL_VAR: &str = "AWS_ENDPOINT_URL";
/// Set to `true` (any case), the SDK ignores every configured endpoint.
const IGNORE_VAR: &str = "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS";
/// The `<SERVICE>` of `AWS_ENDPOINT_URL_<SERVICE>` for each service pullauth
/// calls: the SDK's service id, upper case, spaces as underscores. Checked
/// in this order.
const SERVICES: [&str; 6] = ["ECR", "ECR_PUBLIC", "ECS", "S3", "SECRETS_MANAGER", "STS"];

/// An endpoint override in the environment that the SDK could not use. A
/// configuration error.
#[derive(Debug, thiserror::Error)]
#[error("{var}: not a usable endpoint: {problem}")]
pub struct EndpointEnvError {
    var: String,
    problem: &'static str,
}

impl EndpointEnvError {
    /// The variable that holds the endpoint.
    pub fn var(&self) -> &str {
        &self.var
    }
}

/// Checks the process environment's endpoint overrides.
pub fn check_endpoint_env() -> Result<(), EndpointEnvError> {
    check_endpoints(|name| std::env::var_os(name))
}

/// Checks the endpoint overrides that `var` (a variable's value by name)
/// holds: `AWS_ENDPOINT_URL`, then each service's, in [`SERVICES`] order,
/// so that with several bad ones the error is always about the same one.
fn check_endpoints(var: impl Fn(&str) -> Option<OsString>) -> Result<(), EndpointEnvError> {
    if var(IGNORE_VAR)
        .as_deref()
        .and_then(|v| v.to_str())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Ok(());
    }
    let names = std::iter::once(ENDPOINT_URL_VAR.to_owned()).chain(
        SERVICES
            .iter()
            .map(|service| format!("{ENDPOINT_URL_VAR}_{service}")),
    );
    for name in names {
        let Some(value) = var(&name).filter(|value| !value.is_empty()) else {
            continue;
        };
        let problem = match value.to_str() {
            Some(url) => endpoint_problem(url),
            None => Some("not UTF-8"),
        };
        if let Some(problem) = problem {
            return Err(EndpointEnvError { var: name, problem });
        }
    }
    Ok(())
}

/// What makes `url` unusable as an endpoint override, if anything; never
/// quotes it. The one check of an override, whether from the environment
/// at start or as S3's endpoint rules resolve it (which also read
/// profiles).
pub(crate) fn endpoint_problem(url: &str) -> Option<&'static str> {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return Some("not a URL (expected http(s)://host[:port][/path])");
    };
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
        return Some("no host (expected http(s)://host[:port][/path])");
    };
    if authority.as_str().contains('@') {
        return Some("user info (user:password@) is not allowed in an endpoint URL");
    }
    let scheme = uri.scheme_str().unwrap_or_default();
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Some("the scheme must be http or https (expected http(s)://host[:port][/path])");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(vars: &[(&str, &str)]) -> Result<(), EndpointEnvError> {
        check_endpoints(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn usable_endpoints_and_other_variables_pass() {
        check(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            (
                "AWS_ENDPOINT_URL_ECS",
                "https://ecs.internal.example/prefix",
            ),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "HTTPS://[::1]:8443"),
            ("AWS_ENDPOINT_URL_S3", ""),
            ("AWS_ENDPOINT_URLS", "not an override"),
            ("AWS_ENDPOINT_URL_", "no service named"),
            (
                "AWS_ENDPOINT_URL_DYNAMODB",
                "another tool's, not ours to refuse",
            ),
            ("AWS_REGION", "us-east-1"),
        ])
        .expect("usable");
    }

    #[test]
    fn an_unusable_endpoint_names_its_variable_and_problem_never_its_value() {
        for (value, says) in [
            ("http://bad host:5000", "not a URL"),
            ("localhost:4566", "the scheme must be http or https"),
            ("ftp://example.com", "the scheme must be http or https"),
            ("https:///path", "not a URL"),
            ("s3.example.com", "the scheme must be http or https"),
            ("http://user:pw@example.com", "user info"),
        ] {
            let err = check(&[
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
                ("AWS_ENDPOINT_URL_ECR", value),
            ])
            .expect_err(value);
            let text = err.to_string();
            assert_eq!(err.var(), "AWS_ENDPOINT_URL_ECR", "{text}");
            assert!(
                text.starts_with("AWS_ENDPOINT_URL_ECR: not a usable endpoint: "),
                "{text}"
            );
            assert!(text.contains(says), "{value}: {text}");
            assert!(!text.contains(value), "{text}");
        }
    }

    #[test]
    fn a_password_in_a_malformed_endpoint_stays_out_of_the_error() {
        let err =
            check(&[("AWS_ENDPOINT_URL", "http://user:hunter2@bad host/")]).expect_err("malformed");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }

    #[test]
    fn with_several_bad_ones_the_error_is_always_about_the_same() {
        let err = check(&[
            ("AWS_ENDPOINT_URL_STS", "nope"),
            ("AWS_ENDPOINT_URL_ECS", "nope either"),
        ])
        .expect_err("both bad");
        assert_eq!(err.var(), "AWS_ENDPOINT_URL_ECS");
    }

    #[test]
    fn ignoring_configured_endpoints_ignores_them_here_too() {
        check(&[
            ("AWS_ENDPOINT_URL", "nope"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "TRUE"),
        ])
        .expect("ignored, as the SDK ignores it");
        assert!(
            check(&[
                ("AWS_ENDPOINT_URL", "nope"),
                ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "false"),
            ])
            .is_err()
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_value_that_is_not_utf8_is_refused() {
        use std::os::unix::ffi::OsStringExt;
        let err = check_endpoints(|name| {
            (name == "AWS_ENDPOINT_URL").then(|| OsString::from_vec(vec![b'h', 0xff]))
        })
        .expect_err("not UTF-8");
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }
}
