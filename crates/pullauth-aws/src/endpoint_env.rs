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
//! Checked: `AWS_ENDPOINT_URL` and the overrides of the services pullauth
//! calls (another tool's `AWS_ENDPOINT_URL_DYNAMODB` is not ours to refuse),
//! also when no configured source needs AWS yet: a task may name an ECR
//! image or a secret at any time. Refused ([`endpoint_problem`], which S3's
//! endpoint resolution applies too, to a profile's `endpoint_url` as well):
//! - an empty value: the SDK takes it as the endpoint, and every call fails;
//! - not a URL, no host, or a port that is not a number up to 65535;
//! - a scheme other than http or https;
//! - user info, a query or a fragment: no SDK call uses them, and they may
//!   hold a secret (the SDK logs a dropped query at warn on every request);
//! - a value that is not UTF-8 (the SDK would silently use
//!   `AWS_ENDPOINT_URL` instead).
//!
//! `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true` does not turn the check off:
//! the aws-config this build links clears only the shared endpoint with it,
//! and every client still reads both variables (pinned by the integration
//! test `aws::the_linked_sdk_uses_endpoint_overrides_even_when_told_to_ignore_them`).

use std::ffi::OsString;

/// Every variable the SDK reads an endpoint override for pullauth's
/// services from, in the order they are checked: the shared one, then each
/// service's (the SDK's service id, upper case, spaces as underscores).
pub(crate) const ENDPOINT_VARS: [&str; 7] = [
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_ECR",
    "AWS_ENDPOINT_URL_ECR_PUBLIC",
    "AWS_ENDPOINT_URL_ECS",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_ENDPOINT_URL_STS",
];

/// An endpoint override in the environment that the SDK could not use, or
/// should not be given. A configuration error.
#[derive(Debug, thiserror::Error)]
#[error("{var}: not a usable endpoint: {problem}")]
pub struct EndpointEnvError {
    var: &'static str,
    problem: &'static str,
}

impl EndpointEnvError {
    /// The variable that holds the endpoint.
    pub fn var(&self) -> &'static str {
        self.var
    }
}

/// Checks the process environment's endpoint overrides.
pub fn check_endpoint_env() -> Result<(), EndpointEnvError> {
    check_endpoints(|name| std::env::var_os(name))
}

/// Checks the endpoint overrides that `var` (a variable's value by name)
/// holds, in [`ENDPOINT_VARS`] order, so that with several bad ones the
/// error is always about the same one.
fn check_endpoints(var: impl Fn(&str) -> Option<OsString>) -> Result<(), EndpointEnvError> {
    for name in ENDPOINT_VARS {
        let Some(value) = var(name) else { continue };
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
    if url.is_empty() {
        return Some("empty (unset it to use AWS's own endpoint)");
    }
    let Ok(uri) = url.parse::<http::Uri>() else {
        return Some("not a URL (expected http(s)://host[:port][/path])");
    };
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
        return Some("no host (expected http(s)://host[:port][/path])");
    };
    if authority.as_str().contains('@') {
        return Some("user info (user:password@) is not allowed in an endpoint URL");
    }
    // `Authority::port` is `None` for a port that does not fit a u16: look
    // at the text after the host (user info was refused above).
    let port = authority.as_str()[authority.host().len()..].strip_prefix(':');
    if port.is_some_and(|port| !port.is_empty() && port.parse::<u16>().is_err()) {
        return Some("the port is not a number up to 65535");
    }
    let scheme = uri.scheme_str().unwrap_or_default();
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Some("the scheme must be http or https (expected http(s)://host[:port][/path])");
    }
    if uri.query().is_some() || url.contains('#') {
        return Some("a query string or fragment is not allowed in an endpoint URL");
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
            ("AWS_ENDPOINT_URL_STS", "https://sts.internal:65535/"),
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
            ("", "empty"),
            ("http://bad host:5000", "not a URL"),
            ("localhost:4566", "the scheme must be http or https"),
            ("ftp://example.com", "the scheme must be http or https"),
            ("https:///path", "not a URL"),
            ("s3.example.com", "the scheme must be http or https"),
            ("http://user:pw@example.com", "user info"),
            (
                "http://example.com:99999/",
                "the port is not a number up to 65535",
            ),
            (
                "http://example.com/?token=t0k",
                "a query string or fragment",
            ),
            ("http://example.com/#t0k", "a query string or fragment"),
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
            assert!(text.contains(says), "{value:?}: {text}");
            if !value.is_empty() {
                assert!(!text.contains(value), "{text}");
            }
        }
    }

    #[test]
    fn a_password_in_a_malformed_endpoint_stays_out_of_the_error() {
        for value in [
            "http://user:hunter2@bad host/",
            "http://user:hunter2@example.com/",
            "http://example.com/?hunter2",
        ] {
            let err = check(&[("AWS_ENDPOINT_URL", value)]).expect_err(value);
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        }
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

    #[cfg(unix)]
    #[test]
    fn a_value_that_is_not_utf8_is_refused() {
        use std::os::unix::ffi::OsStringExt;
        let err = check_endpoints(|name| {
            (name == "AWS_ENDPOINT_URL_ECR").then(|| OsString::from_vec(vec![b'h', 0xff]))
        })
        .expect_err("not UTF-8");
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }
}
