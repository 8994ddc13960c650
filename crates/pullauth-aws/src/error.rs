//! What can go wrong talking to AWS, in words a person can act on.
//!
//! Every error names the call ([`Call`]: operation, target, principal) and
//! never a value: no token, secret, object content or secret key appears in
//! any message, because errors end up in logs, task status and API answers.
//! Service messages are AWS's own text (e.g. "User: arn:... is not
//! authorized to perform: ecr:GetAuthorizationToken"), which names
//! principals and resources but no credentials.
//!
//! Errors are `Clone` (strings, no SDK sources) so that one failed fetch can
//! be handed to every caller that waited for it.

use std::fmt;
use std::time::Duration;

/// One call to AWS, as every error names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `service:Operation`, e.g. `ecr:GetAuthorizationToken`.
    pub operation: &'static str,
    /// What the call was about: `registry <host>`, `secret <id>`, `s3://b/k`.
    pub target: String,
    /// Whose credentials were used, e.g. `role arn:aws:iam::...:role/x` or
    /// `the default credential chain`.
    pub principal: String,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} for {} as {}",
            self.operation, self.target, self.principal
        )
    }
}

/// The time limits of a call, as a timeout reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLimits {
    /// The limit of each attempt, if the call is retried after timeouts.
    pub per_attempt: Option<Duration>,
    /// How many attempts at most.
    pub attempts: u32,
    /// The limit of the whole call, every attempt and back-off included.
    pub total: Duration,
}

impl TimeLimits {
    /// One limit for the whole call.
    pub fn total(total: Duration) -> TimeLimits {
        TimeLimits {
            per_attempt: None,
            attempts: 1,
            total,
        }
    }
}

impl fmt::Display for TimeLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.per_attempt {
            Some(each) if self.attempts > 1 && each < self.total => write!(
                f,
                "{} attempts of at most {each:?} each, {:?} in all at most",
                self.attempts, self.total
            ),
            Some(each) => write!(f, "within {:?}", each.min(self.total)),
            None => write!(f, "within {:?}", self.total),
        }
    }
}

/// An AWS call that failed, classified by what the operator should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    /// The principal may not do this (IAM policy, KMS key policy, SCP,
    /// expired or invalid credentials). Never retried.
    #[error("{call}: access denied ({code}: {message})")]
    AccessDenied {
        call: Call,
        code: String,
        message: String,
    },
    /// AWS throttled the call, and the bounded retries did not get through.
    #[error("{call}: throttled by AWS ({code}: {message})")]
    Throttled {
        call: Call,
        code: String,
        message: String,
    },
    /// The resource does not exist: `what` says which part (no such secret,
    /// no such bucket, no such key, no such role).
    #[error("{call}: {what}")]
    NotFound { call: Call, what: String },
    /// No answer within the time limits, which the message states as they
    /// are (which one fired is not always known: an attempt's limit, or
    /// all of them).
    #[error("{call}: no answer ({limits})")]
    Timeout { call: Call, limits: TimeLimits },
    /// The endpoint could not be reached (DNS, connection refused, TLS).
    #[error("{call}: endpoint unreachable: {detail}")]
    Unreachable { call: Call, detail: String },
    /// No credentials: the default chain found none, or loading them failed.
    #[error("{call}: no usable AWS credentials: {detail}")]
    NoCredentials { call: Call, detail: String },
    /// AWS answered, but not with what the call needs (a token that is not
    /// base64 of `user:password`, a missing field, an object too large).
    #[error("{call}: unexpected response: {problem}")]
    BadResponse { call: Call, problem: String },
    /// The secret exists but cannot serve as registry credentials; `problem`
    /// names the field or shape, never a value.
    #[error("secret {secret}: {problem}")]
    BadSecret { secret: String, problem: String },
    /// Input refused before any call (a malformed role ARN or S3 URL).
    #[error("{what} {value:?}: {problem}")]
    Invalid {
        what: &'static str,
        value: String,
        problem: &'static str,
    },
    /// ECR tokens are switched off ([`crate::AwsOptions::ecr`]).
    #[error("{host}: automatic ECR credentials are switched off")]
    EcrDisabled { host: String },
    /// A conditional write's condition did not hold: the object changed
    /// (or appeared) since the caller read it (S3's `412
    /// PreconditionFailed`, or `409 ConditionalRequestConflict` when a
    /// conflicting write was in flight). Not retried: read again, then
    /// decide ([`AwsError::is_precondition_failed`]).
    #[error("{call}: the condition did not hold ({code}: {message})")]
    PreconditionFailed {
        call: Call,
        code: String,
        message: String,
    },
    /// Any other service error (validation, internal failure after retries).
    #[error("{call}: {code}: {message}")]
    Service {
        call: Call,
        code: String,
        message: String,
    },
}

/// `host:port` of an endpoint URL (the scheme's port when none is
/// written), for messages: never its user info, path or query.
pub(crate) fn host_port(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let has_port = host.rsplit_once(':').is_some_and(|(name, port)| {
        !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty()
    }) && !host.ends_with(']');
    if has_port {
        host.to_owned()
    } else {
        let port = if scheme.eq_ignore_ascii_case("http") {
            80
        } else {
            443
        };
        format!("{host}:{port}")
    }
}

impl AwsError {
    /// An unreachable endpoint names the host and port that were tried
    /// (DNS and connect errors do not): `endpoint` is the URL called.
    pub(crate) fn at_endpoint(self, endpoint: &str) -> AwsError {
        match self {
            AwsError::Unreachable { call, detail } => AwsError::Unreachable {
                call,
                detail: format!("{}: {detail}", host_port(endpoint)),
            },
            other => other,
        }
    }
}

/// Short stable class names, for metrics labels and log fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    AccessDenied,
    Throttled,
    NotFound,
    Timeout,
    Unreachable,
    NoCredentials,
    BadResponse,
    BadSecret,
    Invalid,
    Disabled,
    Service,
    PreconditionFailed,
}

impl ErrorClass {
    /// Every class, in the order of [`ErrorClass::index`].
    pub const ALL: [ErrorClass; 12] = [
        ErrorClass::AccessDenied,
        ErrorClass::Throttled,
        ErrorClass::NotFound,
        ErrorClass::Timeout,
        ErrorClass::Unreachable,
        ErrorClass::NoCredentials,
        ErrorClass::BadResponse,
        ErrorClass::BadSecret,
        ErrorClass::Invalid,
        ErrorClass::Disabled,
        ErrorClass::Service,
        ErrorClass::PreconditionFailed,
    ];

    /// The metrics label: lower case, stable across releases.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::AccessDenied => "access_denied",
            ErrorClass::Throttled => "throttled",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Unreachable => "unreachable",
            ErrorClass::NoCredentials => "no_credentials",
            ErrorClass::BadResponse => "bad_response",
            ErrorClass::BadSecret => "bad_secret",
            ErrorClass::Invalid => "invalid",
            ErrorClass::Disabled => "disabled",
            ErrorClass::Service => "service",
            ErrorClass::PreconditionFailed => "precondition_failed",
        }
    }

    /// Position in [`ErrorClass::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl AwsError {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            AwsError::AccessDenied { .. } => ErrorClass::AccessDenied,
            AwsError::Throttled { .. } => ErrorClass::Throttled,
            AwsError::NotFound { .. } => ErrorClass::NotFound,
            AwsError::Timeout { .. } => ErrorClass::Timeout,
            AwsError::Unreachable { .. } => ErrorClass::Unreachable,
            AwsError::NoCredentials { .. } => ErrorClass::NoCredentials,
            AwsError::BadResponse { .. } => ErrorClass::BadResponse,
            AwsError::BadSecret { .. } => ErrorClass::BadSecret,
            AwsError::Invalid { .. } => ErrorClass::Invalid,
            AwsError::EcrDisabled { .. } => ErrorClass::Disabled,
            AwsError::Service { .. } => ErrorClass::Service,
            AwsError::PreconditionFailed { .. } => ErrorClass::PreconditionFailed,
        }
    }

    /// Whether a conditional write lost to another writer
    /// ([`AwsError::PreconditionFailed`]).
    pub fn is_precondition_failed(&self) -> bool {
        self.class() == ErrorClass::PreconditionFailed
    }

    /// Whether trying again later may help (throttling, timeouts, network,
    /// AWS-side failures); the SDK has already retried within its budget.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.class(),
            ErrorClass::Throttled
                | ErrorClass::Timeout
                | ErrorClass::Unreachable
                | ErrorClass::Service
        )
    }
}

/// Error codes AWS services use for "not allowed" (IAM, KMS, STS, S3, and
/// credentials the service refuses).
const ACCESS_DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "KMSAccessDeniedException",
    "AllAccessDisabled",
];

/// Error codes for throttling.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "RequestThrottled",
    "RequestThrottledException",
];

/// Classifies a service error by its code; `not_found` decides which codes
/// mean "does not exist" for this call and how to say so.
pub(crate) fn from_service(
    call: Call,
    code: Option<&str>,
    message: Option<&str>,
    not_found: impl Fn(&str) -> Option<String>,
) -> AwsError {
    let code = code.unwrap_or("Unknown").to_string();
    let message = message.unwrap_or("no message").to_string();
    if let Some(what) = not_found(&code) {
        return AwsError::NotFound { call, what };
    }
    if ACCESS_DENIED_CODES.contains(&code.as_str()) {
        AwsError::AccessDenied {
            call,
            code,
            message,
        }
    } else if THROTTLING_CODES.contains(&code.as_str()) {
        AwsError::Throttled {
            call,
            code,
            message,
        }
    } else {
        AwsError::Service {
            call,
            code,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case::https_default(
        "https://api.ecr.us-east-1.amazonaws.com",
        "api.ecr.us-east-1.amazonaws.com:443"
    )]
    #[case::http_default("http://10.0.0.5/base", "10.0.0.5:80")]
    #[case::port("http://127.0.0.1:5000/?X-Amz-Security-Token=t", "127.0.0.1:5000")]
    #[case::user_info("https://a:hunter2@minio.internal:9000/b", "minio.internal:9000")]
    #[case::ipv6("http://[::1]:4566", "[::1]:4566")]
    #[case::ipv6_no_port("https://[::1]/x", "[::1]:443")]
    fn host_port_names_host_and_port_only(#[case] url: &str, #[case] shown: &str) {
        assert_eq!(host_port(url), shown);
    }

    // Regression (issue 25): a DNS failure said "failed to lookup address
    // information" without the host. An unreachable endpoint now names it.
    #[test]
    fn an_unreachable_endpoint_names_host_and_port() {
        let call = Call {
            operation: "s3:GetObject",
            target: "s3://b/k".into(),
            principal: "the default credential chain".into(),
        };
        let e = AwsError::Unreachable {
            call: call.clone(),
            detail: "dns error: failed to lookup address information".into(),
        }
        .at_endpoint("https://b.s3.nowhere.invalid/?X-Amz-Security-Token=t0k3n");
        let text = e.to_string();
        assert!(
            text.contains("b.s3.nowhere.invalid:443: dns error"),
            "{text}"
        );
        assert!(!text.contains("t0k3n"), "{text}");
        let other = AwsError::NotFound {
            call,
            what: "no such key".into(),
        };
        assert_eq!(other.clone().at_endpoint("https://h"), other);
    }

    fn call() -> Call {
        Call {
            operation: "ecr:GetAuthorizationToken",
            target: "registry 123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
            principal: "the default credential chain".into(),
        }
    }

    #[test]
    fn classifies_by_code() {
        let none = |_: &str| None;
        let e = from_service(call(), Some("AccessDeniedException"), Some("no"), none);
        assert_eq!(e.class(), ErrorClass::AccessDenied);
        assert!(!e.is_transient());
        let e = from_service(call(), Some("ThrottlingException"), None, none);
        assert_eq!(e.class(), ErrorClass::Throttled);
        assert!(e.is_transient());
        let e = from_service(call(), Some("ServerException"), None, none);
        assert_eq!(e.class(), ErrorClass::Service);
        let e = from_service(call(), Some("NoSuchKey"), None, |c| {
            (c == "NoSuchKey").then(|| "no such key".to_string())
        });
        assert_eq!(e.class(), ErrorClass::NotFound);
    }

    #[test]
    fn messages_name_the_call() {
        let e = from_service(
            call(),
            Some("AccessDeniedException"),
            Some("denied"),
            |_| None,
        );
        assert_eq!(
            e.to_string(),
            "ecr:GetAuthorizationToken for registry 123456789012.dkr.ecr.eu-west-1.amazonaws.com \
             as the default credential chain: access denied (AccessDeniedException: denied)"
        );
    }

    /// The bug this pins: after three 5 s attempts (about 16 s), the
    /// message said "no answer within 20s", the limit that had not fired.
    #[test]
    fn a_timeout_states_every_limit_it_was_under() {
        let e = AwsError::Timeout {
            call: call(),
            limits: TimeLimits {
                per_attempt: Some(Duration::from_secs(5)),
                attempts: 3,
                total: Duration::from_secs(20),
            },
        };
        let text = e.to_string();
        assert!(
            text.ends_with(": no answer (3 attempts of at most 5s each, 20s in all at most)"),
            "{text}"
        );
        let e = AwsError::Timeout {
            call: call(),
            limits: TimeLimits::total(Duration::from_secs(30)),
        };
        assert!(e.to_string().ends_with(": no answer (within 30s)"), "{e}");
        // PULLAUTH_AWS_TIMEOUT below the attempt bound: one attempt fills
        // the whole call, and the message says so.
        let e = AwsError::Timeout {
            call: call(),
            limits: TimeLimits {
                per_attempt: Some(Duration::from_secs(2)),
                attempts: 3,
                total: Duration::from_secs(2),
            },
        };
        assert!(e.to_string().ends_with(": no answer (within 2s)"), "{e}");
    }

    #[test]
    fn class_names_are_unique_and_indexed() {
        for (i, class) in ErrorClass::ALL.iter().enumerate() {
            assert_eq!(class.index(), i);
        }
        let mut names: Vec<_> = ErrorClass::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorClass::ALL.len());
    }
}
