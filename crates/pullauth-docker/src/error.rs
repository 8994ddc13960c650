//! Pull failures, classified so that callers can decide what to retry and
//! people can tell what to fix.

use std::time::Duration;

use pullauth_resolve::Origin;

/// Who the pull presented itself as: filled in from the entry it sends so
/// that a failure can name the source and give that source's advice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The entry's key as written: the `ECS_ENGINE_AUTH_DATA` key, or the
    /// label of another source (`helper pass`).
    pub key: Option<String>,
    pub username: Option<String>,
    /// How the credentials authenticate ("password", "identity token", ...).
    pub method: &'static str,
    /// Where the credentials came from; `None`: the pull sent none.
    pub origin: Option<Origin>,
}

impl Identity {
    /// What the pull presented, for messages: `key "r.io"`, `Secrets
    /// Manager secret arn:...`, `an ECR token fetched as role arn:...`.
    pub fn presented(&self) -> String {
        match (&self.origin, &self.key) {
            (None, _) => "no credentials".to_owned(),
            (Some(Origin::Key), key) => format!("key {:?}", key.as_deref().unwrap_or_default()),
            (Some(Origin::TaskSecret { secret, .. }), _) => {
                format!("Secrets Manager secret {secret}")
            }
            (Some(Origin::Helper { helper, server }), _) => {
                format!("credential helper docker-credential-{helper} for {server}")
            }
            (Some(Origin::Ecr { principal, .. }), _) => {
                format!("an ECR token fetched as {principal}")
            }
            (Some(Origin::EcrPublic { principal, .. }), _) => {
                format!("an ECR Public token fetched as {principal}")
            }
        }
    }
}

/// Why a pull failed. No variant holds a secret: engine messages are
/// scrubbed of the credentials that were sent before they are kept.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PullError {
    #[error("{}", unauthorized_message(.registry, .image, .identity, .detail))]
    Unauthorized {
        registry: String,
        image: String,
        identity: Box<Identity>,
        detail: String,
    },
    #[error("image {image} was not found on {registry}: {detail}")]
    NotFound {
        registry: String,
        image: String,
        detail: String,
    },
    #[error("{}", rate_limited_message(.registry, .image, .identity, .detail))]
    RateLimited {
        registry: String,
        image: String,
        identity: Box<Identity>,
        detail: String,
    },
    #[error("registry {registry} is unreachable or failing while pulling {image}: {detail}")]
    RegistryUnavailable {
        registry: String,
        image: String,
        detail: String,
    },
    #[error(
        "cannot reach the Docker Engine at {address}: {detail}; is dockerd running and \
         responsive? Set DOCKER_HOST to point elsewhere (unix:///var/run/docker.sock, or \
         tcp://HOST:2376 with DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH)"
    )]
    EngineUnreachable { address: String, detail: String },
    #[error(
        "refusing to send the credentials for {image} to the Docker Engine at {address} over \
         plain TCP, where anyone on the network path can read them; {}",
        TLS_HINT
    )]
    InsecureEngine { image: String, address: String },
    /// `from` is [`Identity::presented`].
    #[error("cannot encode the credentials of {from} into the X-Registry-Auth header")]
    AuthHeader { from: String },
    #[error(
        "pull of {image} stalled: no progress for {}; cancelled \
         (ECS_IMAGE_PULL_INACTIVITY_TIMEOUT)", humantime::format_duration(*.after)
    )]
    Stalled { image: String, after: Duration },
    #[error(
        "pull of {image} did not finish within {} (ECS_IMAGE_PULL_TIMEOUT)",
        humantime::format_duration(*.after)
    )]
    TimedOut { image: String, after: Duration },
    #[error("the Docker Engine or the registry refused the request to pull {image}: {detail}")]
    Rejected { image: String, detail: String },
    #[error("the Docker Engine failed to pull {image}: {detail}")]
    Engine { image: String, detail: String },
}

/// How to make a TCP engine safe, for every error that refuses plain TCP.
pub const TLS_HINT: &str = "enable TLS on the engine (dockerd --tlsverify, usually on port 2376) \
     and set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to a directory holding ca.pem, cert.pem \
     and key.pem, or use the engine's unix socket";

/// What the registry's refusal means for the source the credentials came
/// from, and what to do about it there.
fn unauthorized_message(registry: &str, image: &str, identity: &Identity, detail: &str) -> String {
    let user = match &identity.username {
        Some(user) => format!(", user {user:?}"),
        None => String::new(),
    };
    match (&identity.origin, &identity.key) {
        (Some(Origin::Key), Some(key)) => format!(
            "registry {registry} rejected the credentials for {image} (key {key:?}{user}): \
             {detail}; check the {} of that entry in ECS_ENGINE_AUTH_DATA",
            identity.method
        ),
        (Some(Origin::TaskSecret { secret, principal }), _) => format!(
            "registry {registry} rejected the credentials for {image} from Secrets Manager \
             secret {secret} (read as {principal}{user}): {detail}; correct the \"username\" \
             and \"password\" fields of secret {secret} (the container's \
             repositoryCredentials): they must be the registry's own login"
        ),
        (Some(Origin::Helper { helper, server }), _) => format!(
            "registry {registry} rejected the credentials for {image} from credential helper \
             docker-credential-{helper} for server URL {server}{}: {detail}; the login \
             docker-credential-{helper} holds for {server} is wrong or expired: store a new one \
             (docker login {server}, with {helper} as the credsStore or the credHelpers entry \
             of {server})",
            match &identity.username {
                Some(name) => format!(" (user {name:?})"),
                None => String::new(),
            }
        ),
        (
            Some(Origin::Ecr {
                registry: ecr,
                principal,
            }),
            _,
        ) => format!(
            "registry {registry} refused the ECR token for {image}, fetched as {principal}: \
             {detail}; {principal} needs ecr:BatchGetImage and ecr:GetDownloadUrlForLayer on \
             the repository (account {}, region {}), in its IAM policy and in the repository's \
             policy if it has one",
            ecr.account, ecr.region
        ),
        (Some(Origin::EcrPublic { host, principal }), _) => format!(
            "registry {registry} refused the ECR Public token for {image}, fetched as \
             {principal}: {detail}; check that the repository exists on {host} and is public, \
             and that {principal} may ecr-public:GetAuthorizationToken and \
             sts:GetServiceBearerToken"
        ),
        _ => format!(
            "registry {registry} requires authentication for {image}, and no credentials are \
             configured for it: {detail}; add an entry for {registry:?} to ECS_ENGINE_AUTH_DATA"
        ),
    }
}

/// A rate limit, with the way out for the source that was used: credentials
/// for an anonymous pull, else pulling less often.
fn rate_limited_message(registry: &str, image: &str, identity: &Identity, detail: &str) -> String {
    let advice = match &identity.origin {
        None => format!(
            "Pulls with credentials usually get a higher limit (add an entry for {registry:?} \
             to ECS_ENGINE_AUTH_DATA), or pull less often"
        ),
        Some(_) => format!(
            "The limit counts the pulls of {}; pull less often, or use credentials with a \
             higher limit",
            identity.presented()
        ),
    };
    format!(
        "registry {registry} is rate-limiting pulls (HTTP 429 Too Many Requests) of {image}: \
         {detail}; retrying with backoff. {advice}"
    )
}

impl PullError {
    /// Every value [`PullError::class`] can return, so that metrics can
    /// export a zero for each class before the first failure.
    pub const CLASSES: [&'static str; 11] = [
        "auth",
        "not_found",
        "rate_limited",
        "registry_unavailable",
        "engine_unreachable",
        "stalled",
        "timeout",
        "rejected",
        "engine",
        "insecure_engine",
        "auth_header",
    ];

    /// A short stable name for metrics and JSON output.
    pub fn class(&self) -> &'static str {
        match self {
            PullError::Unauthorized { .. } => "auth",
            PullError::NotFound { .. } => "not_found",
            PullError::RateLimited { .. } => "rate_limited",
            PullError::RegistryUnavailable { .. } => "registry_unavailable",
            PullError::EngineUnreachable { .. } => "engine_unreachable",
            PullError::Stalled { .. } => "stalled",
            PullError::TimedOut { .. } => "timeout",
            PullError::Rejected { .. } => "rejected",
            PullError::Engine { .. } => "engine",
            PullError::InsecureEngine { .. } => "insecure_engine",
            PullError::AuthHeader { .. } => "auth_header",
        }
    }

    /// Whether trying again could help. Authentication, missing images,
    /// requests the engine or registry refuses (4xx) and timeouts are final:
    /// retrying only delays the answer. A rate limit is retried: the backoff
    /// gives the registry's window time to move.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PullError::RegistryUnavailable { .. }
                | PullError::RateLimited { .. }
                | PullError::Engine { .. }
        )
    }
}

/// Distribution's error codes (`registry/api/errcode` and
/// `registry/api/v2/errors.go`) as the engine relays them: the registry's
/// JSON `code` lowercased with `_` turned into a space, then `: message`
/// (`MANIFEST_UNKNOWN` arrives as `manifest unknown: manifest unknown`).
/// Each is matched as a whole `:`-separated segment, so `denied` matches
/// `...: denied: requested access to the resource is denied` but not a local
/// `open /var/lib/docker/tmp: permission denied`.
mod codes {
    /// The registry did not accept the credentials (401 and 403). Docker's
    /// token servers answer `insufficient_scope` the same way.
    pub const AUTH: &[&str] = &["unauthorized", "denied", "insufficient_scope"];
    /// The repository, tag or a blob it names does not exist. containerd's
    /// resolver says a plain `not found` (its `errdefs.ErrNotFound`).
    pub const NOT_FOUND: &[&str] = &[
        "manifest unknown",
        "name unknown",
        "blob unknown",
        "manifest blob unknown",
        "not found",
    ];
    /// Distribution's `TOOMANYREQUESTS` (HTTP 429), Docker Hub's pull limit.
    pub const RATE_LIMITED: &[&str] = &["toomanyrequests"];
    /// Distribution's `UNAVAILABLE` (HTTP 503), and a connection that ended
    /// before the answer.
    pub const UNAVAILABLE: &[&str] = &["unavailable", "eof", "unexpected eof"];
    /// Requests the registry refuses as malformed: asking again cannot help.
    pub const INVALID: &[&str] = &[
        "unsupported",
        "name invalid",
        "tag invalid",
        "manifest invalid",
        "manifest unverified",
        "digest invalid",
        "size invalid",
        "range invalid",
    ];
}

/// The engine's own words for "the registry wants credentials", from
/// moby's `distribution/errors.go` (Hub answers a missing repository the
/// same way, so it cannot be told apart from a private one).
const AUTH_PHRASES: &[&str] = &[
    "no basic auth credentials",
    "pull access denied for",
    "repository does not exist or may require 'docker login'",
];

/// Go's network errors on the way from the engine to the registry. They are
/// about the registry because errors reaching the engine itself never get
/// here: those are transport errors (`Engine::transport_error`).
const NETWORK_PHRASES: &[&str] = &[
    "dial tcp",
    "connection refused",
    "connection reset by peer",
    "i/o timeout",
    "no such host",
    "context deadline exceeded",
    "tls handshake",
    "timeout awaiting response headers",
    "server misbehaving",
];

/// Where the engine quotes the registry's HTTP status: docker's
/// `received unexpected HTTP status: 503 Service Unavailable`, its
/// `error parsing HTTP 429 response body`, and containerd's
/// `unexpected status from GET request to URL: 401 Unauthorized`.
const STATUS_PHRASES: &[&str] = &[
    "unexpected http status",
    "unexpected status",
    "error parsing http",
];

/// Whether `code` is one whole `:`-separated segment of `lower`.
fn has_code(lower: &str, codes: &[&str]) -> bool {
    lower
        .split([':', '\n'])
        .map(str::trim)
        .any(|segment| codes.contains(&segment))
}

/// The registry's HTTP status as the engine quotes it: a `:`-separated
/// segment after one of [`STATUS_PHRASES`] that starts with a three-digit
/// word (`503 Service Unavailable`; not the `5000/v2/` of a URL's port).
fn quoted_status(lower: &str) -> Option<u16> {
    STATUS_PHRASES.iter().find_map(|phrase| {
        let rest = &lower[lower.find(phrase)? + phrase.len()..];
        rest.split(':').find_map(|segment| {
            let word = segment.trim_start().split(' ').next()?;
            let status: u16 = (word.len() == 3 && word.bytes().all(|b| b.is_ascii_digit()))
                .then(|| word.parse().ok())??;
            (100..600).contains(&status).then_some(status)
        })
    })
}

/// The classes a message can fall into, before the fields are filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Auth,
    NotFound,
    RateLimited,
    Unavailable,
    Rejected,
    Engine,
}

/// Sorts what the engine said. First what the registry said (its error code,
/// or the status the engine quotes), then the engine's phrases for registry
/// access, then the status of the engine's own answer.
fn kind(status: Option<u16>, message: &str) -> Kind {
    let lower = message.to_ascii_lowercase();
    let phrase = |phrases: &[&str]| phrases.iter().any(|p| lower.contains(p));
    let registry_status = quoted_status(&lower);
    if has_code(&lower, codes::RATE_LIMITED) || registry_status == Some(429) {
        Kind::RateLimited
    } else if has_code(&lower, codes::AUTH)
        || phrase(AUTH_PHRASES)
        || matches!(registry_status, Some(401 | 403))
    {
        Kind::Auth
    } else if has_code(&lower, codes::NOT_FOUND) || registry_status == Some(404) {
        Kind::NotFound
    } else if has_code(&lower, codes::UNAVAILABLE)
        || phrase(NETWORK_PHRASES)
        || registry_status.is_some_and(|s| s >= 500)
    {
        Kind::Unavailable
    } else if has_code(&lower, codes::INVALID) {
        Kind::Rejected
    } else {
        match status {
            Some(429) => Kind::RateLimited,
            Some(404) => Kind::NotFound,
            // Not Auth for 401/403: the engine answers those for its own
            // reasons too (an authorization plugin saying no).
            Some(400..=499) => Kind::Rejected,
            _ if registry_status.is_some_and(|s| (400..500).contains(&s)) => Kind::Rejected,
            _ => Kind::Engine,
        }
    }
}

/// What the engine said, sorted into a class by what the registry and the
/// engine say rather than by English words that local errors share (see
/// [`codes`]). `status` is the HTTP status of the engine's answer, when the
/// error came as one rather than in the progress stream.
pub(crate) fn classify(
    registry: &str,
    image: &str,
    identity: &Identity,
    status: Option<u16>,
    message: &str,
) -> PullError {
    let (registry, image, detail) = (
        registry.to_owned(),
        image.to_owned(),
        message.trim().to_owned(),
    );
    match kind(status, message) {
        Kind::Auth => PullError::Unauthorized {
            registry,
            image,
            identity: Box::new(identity.clone()),
            detail,
        },
        Kind::NotFound => PullError::NotFound {
            registry,
            image,
            detail,
        },
        Kind::RateLimited => PullError::RateLimited {
            registry,
            image,
            identity: Box::new(identity.clone()),
            detail,
        },
        Kind::Unavailable => PullError::RegistryUnavailable {
            registry,
            image,
            detail,
        },
        Kind::Rejected => PullError::Rejected { image, detail },
        Kind::Engine => PullError::Engine { image, detail },
    }
}

/// Removes every occurrence of `secrets` from `text`.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 3) {
        text = text.replace(secret, "<redacted>");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn class_of(message: &str, status: Option<u16>) -> &'static str {
        classify(
            "127.0.0.1:5000",
            "127.0.0.1:5000/app:latest",
            &Identity::default(),
            status,
            message,
        )
        .class()
    }

    /// What the registry says, as engines relay it (docker's distribution
    /// errors and containerd's resolver), one class per row.
    #[rstest]
    #[case::anonymous(
        "Head \"http://127.0.0.1:5000/v2/app/manifests/latest\": no basic auth credentials",
        None,
        "auth"
    )]
    #[case::wrong_password("unauthorized: authentication required", Some(500), "auth")]
    #[case::hub_wrong_password(
        "Get \"https://registry-1.docker.io/v2/\": unauthorized: incorrect username or password",
        Some(500),
        "auth"
    )]
    #[case::hub_denied(
        "pull access denied for x, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
        None,
        "auth"
    )]
    #[case::hub_denied_with_engine_404(
        "pull access denied for nosuchorg/app, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
        Some(404),
        "auth"
    )]
    #[case::registry_denied(
        "Head \"http://127.0.0.1:5000/v2/team/app/manifests/v1\": denied: requested access to the resource is denied",
        Some(500),
        "auth"
    )]
    #[case::containerd_401(
        "failed to resolve reference \"127.0.0.1:5000/app:v1\": failed to authorize: failed to fetch oauth token: unexpected status from GET request to http://127.0.0.1:5000/token: 401 Unauthorized",
        Some(500),
        "auth"
    )]
    #[case::insufficient_scope(
        "failed to resolve reference \"docker.io/org/app:1\": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed",
        Some(500),
        "auth"
    )]
    #[case::manifest_unknown(
        "manifest for 127.0.0.1:5000/app:nope not found: manifest unknown: manifest unknown",
        Some(404),
        "not_found"
    )]
    #[case::name_unknown(
        "Head \"http://127.0.0.1:5000/v2/nope/manifests/v1\": name unknown: repository name not known to registry",
        Some(500),
        "not_found"
    )]
    #[case::blob_unknown(
        "error pulling image configuration: download failed after attempts=1: blob unknown: blob unknown to registry",
        Some(500),
        "not_found"
    )]
    #[case::containerd_not_found(
        "failed to resolve reference \"127.0.0.1:5000/app:nope\": 127.0.0.1:5000/app:nope: not found",
        Some(500),
        "not_found"
    )]
    #[case::status_404("something", Some(404), "not_found")]
    #[case::hub_rate_limit(
        "toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit",
        Some(500),
        "rate_limited"
    )]
    #[case::quoted_429(
        "received unexpected HTTP status: 429 Too Many Requests",
        None,
        "rate_limited"
    )]
    #[case::containerd_429(
        "failed to copy: httpReadSeeker: failed open: unexpected status code https://registry-1.docker.io/v2/library/busybox/blobs/sha256:abc: 429 Too Many Requests - Server message: toomanyrequests: You have reached your pull rate limit.",
        Some(500),
        "rate_limited"
    )]
    #[case::engine_429("something", Some(429), "rate_limited")]
    #[case::refused(
        "Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused",
        Some(500),
        "registry_unavailable"
    )]
    #[case::server_error(
        "received unexpected HTTP status: 503 Service Unavailable",
        None,
        "registry_unavailable"
    )]
    #[case::containerd_502(
        "failed to resolve reference \"r.io:5000/app:v1\": unexpected status from HEAD request to https://r.io:5000/v2/app/manifests/v1: 502 Bad Gateway",
        Some(500),
        "registry_unavailable"
    )]
    #[case::deadline(
        "Get \"http://127.0.0.1:9/v2/\": context deadline exceeded",
        Some(500),
        "registry_unavailable"
    )]
    #[case::io_timeout(
        "Get \"https://r.io/v2/\": dial tcp 10.0.0.1:443: i/o timeout",
        Some(500),
        "registry_unavailable"
    )]
    #[case::tls_handshake(
        "Get \"https://127.0.0.1:5000/v2/\": net/http: TLS handshake timeout",
        Some(500),
        "registry_unavailable"
    )]
    #[case::no_such_host(
        "Get \"https://nope.invalid/v2/\": dial tcp: lookup nope.invalid on 127.0.0.53:53: no such host",
        Some(500),
        "registry_unavailable"
    )]
    #[case::eof(
        "Get \"http://127.0.0.1:5000/v2/\": EOF",
        Some(500),
        "registry_unavailable"
    )]
    #[case::code_unavailable("unavailable: service unavailable", Some(500), "registry_unavailable")]
    #[case::bad_request(
        "invalid reference format: repository name must be lowercase",
        Some(400),
        "rejected"
    )]
    #[case::name_invalid(
        "Head \"http://127.0.0.1:5000/v2/a/manifests/v1\": name invalid: invalid repository name",
        Some(500),
        "rejected"
    )]
    #[case::unsupported("unsupported: The operation is unsupported.", Some(500), "rejected")]
    #[case::version_too_new(
        "client version 1.52 is too new. Maximum supported API version is 1.43",
        Some(400),
        "rejected"
    )]
    #[case::other("something odd", Some(500), "engine")]
    fn classifies_registry_answers(
        #[case] message: &str,
        #[case] status: Option<u16>,
        #[case] class: &str,
    ) {
        assert_eq!(class_of(message, status), class, "{message}");
    }

    /// Local engine failures that share words with registry answers ("denied",
    /// "not found", "timeout"): none of them is about the registry.
    #[rstest]
    #[case::permission_denied(
        "failed to register layer: open /var/lib/docker/tmp/GetImageBlob1234: permission denied",
        Some(500),
        "engine"
    )]
    #[case::socket_permission_denied(
        "mkdir /var/lib/docker/image/overlay2/layerdb/tmp: permission denied",
        None,
        "engine"
    )]
    #[case::credential_helper_missing(
        "error getting credentials - err: exec: \"docker-credential-x\": executable file not found in $PATH, out: ``",
        Some(500),
        "engine"
    )]
    #[case::xz_missing(
        "failed to register layer: exec: \"xz\": executable file not found in $PATH",
        Some(500),
        "engine"
    )]
    #[case::no_such_file(
        "failed to register layer: stat /var/lib/docker/overlay2/abc: no such file or directory",
        Some(500),
        "engine"
    )]
    #[case::disk_full(
        "failed to register layer: write /var/lib/docker/tmp/x: no space left on device",
        Some(500),
        "engine"
    )]
    #[case::authz_plugin(
        "authorization denied by plugin opa-docker-authz: request rejected by administrative policy",
        Some(403),
        "rejected"
    )]
    #[case::timeout_word("ECS_IMAGE_PULL_TIMEOUT handling failed", Some(500), "engine")]
    #[case::port_is_not_a_status(
        "unexpected status from HEAD request to http://127.0.0.1:5000/v2/app: weird answer",
        Some(500),
        "engine"
    )]
    fn local_failures_are_not_registry_answers(
        #[case] message: &str,
        #[case] status: Option<u16>,
        #[case] class: &str,
    ) {
        assert_eq!(class_of(message, status), class, "{message}");
    }

    #[test]
    fn rate_limit_is_retried_and_names_the_registry() {
        let err = classify(
            "docker.io",
            "docker.io/library/busybox:latest",
            &Identity::default(),
            Some(500),
            "toomanyrequests: You have reached your pull rate limit.",
        );
        assert!(err.is_transient(), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("registry docker.io is rate-limiting pulls"),
            "{text}"
        );
        assert!(text.contains("retrying with backoff"), "{text}");
    }

    #[test]
    fn every_class_is_listed() {
        let image = || "r/i".to_owned();
        let all = [
            classify("r", "r/i", &Identity::default(), None, "unauthorized"),
            classify("r", "r/i", &Identity::default(), None, "manifest unknown"),
            classify("r", "r/i", &Identity::default(), None, "toomanyrequests"),
            classify("r", "r/i", &Identity::default(), None, "connection refused"),
            classify("r", "r/i", &Identity::default(), Some(400), "bad"),
            classify("r", "r/i", &Identity::default(), None, "odd"),
            PullError::EngineUnreachable {
                address: "a".into(),
                detail: "d".into(),
            },
            PullError::InsecureEngine {
                image: image(),
                address: "a".into(),
            },
            PullError::AuthHeader { from: "k".into() },
            PullError::Stalled {
                image: image(),
                after: Duration::from_secs(1),
            },
            PullError::TimedOut {
                image: image(),
                after: Duration::from_secs(1),
            },
        ];
        let classes: Vec<&str> = all.iter().map(PullError::class).collect();
        assert_eq!(classes.len(), PullError::CLASSES.len());
        for class in PullError::CLASSES {
            assert!(classes.contains(&class), "{class} never produced");
        }
    }

    #[test]
    fn only_registry_and_engine_failures_are_retried() {
        let e = |m: &str| classify("r", "r/i", &Identity::default(), None, m);
        assert!(e("connection refused").is_transient());
        assert!(!e("unauthorized").is_transient());
        assert!(!e("manifest unknown").is_transient());
        assert!(e("toomanyrequests: slow down").is_transient());
        assert!(!e("name invalid: invalid repository name").is_transient());
        let rejected = classify(
            "r",
            "r/i",
            &Identity::default(),
            Some(400),
            "invalid reference format",
        );
        assert!(!rejected.is_transient());
    }

    #[test]
    fn unauthorized_names_key_and_user_or_says_none_configured() {
        let identity = Identity {
            key: Some("r.io/team".into()),
            username: Some("alice".into()),
            method: "identity token",
            origin: Some(Origin::Key),
        };
        let err = classify("r.io", "r.io/team/app:1", &identity, None, "unauthorized");
        let text = err.to_string();
        assert!(text.contains("check the identity token"), "{text}");
        assert!(
            text.contains("\"r.io/team\"") && text.contains("\"alice\""),
            "{text}"
        );
        let anon = classify(
            "r.io",
            "r.io/app:1",
            &Identity::default(),
            None,
            "no basic auth credentials",
        );
        assert!(
            anon.to_string().contains("no credentials are configured"),
            "{anon}"
        );
    }

    const ROLE: &str = "role arn:aws:iam::123456789012:role/pull";

    /// One identity per kind of source, as the provider labels them.
    fn identity_of(kind: &str) -> Identity {
        let (key, username, origin) = match kind {
            "key" => ("r.io", Some("alice"), Origin::Key),
            "task_secret" => (
                "secretsmanager arn:aws:secretsmanager:us-east-1:123456789012:secret:reg",
                Some("alice"),
                Origin::TaskSecret {
                    secret: "arn:aws:secretsmanager:us-east-1:123456789012:secret:reg".into(),
                    principal: ROLE.into(),
                },
            ),
            "helper" => (
                "helper pass",
                Some("alice"),
                Origin::Helper {
                    helper: "pass".into(),
                    server: "r.io".into(),
                },
            ),
            "ecr" => (
                "ecr account 123456789012 region eu-west-1",
                Some("AWS"),
                Origin::Ecr {
                    registry: pullauth_resolve::EcrRegistry::parse(
                        "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                    )
                    .expect("ECR host"),
                    principal: ROLE.into(),
                },
            ),
            "ecr_public" => (
                "ecr-public public.ecr.aws",
                Some("AWS"),
                Origin::EcrPublic {
                    host: "public.ecr.aws".into(),
                    principal: "the default credential chain".into(),
                },
            ),
            other => panic!("no such kind {other}"),
        };
        Identity {
            key: Some(key.into()),
            username: username.map(str::to_owned),
            method: "password",
            origin: Some(origin),
        }
    }

    /// A refused pull gives the fix of the source the credentials came
    /// from, and no other source's: IAM actions and the principal for ECR
    /// and ECR Public, the secret and its fields for Secrets Manager, the
    /// helper and server URL for a helper, the key for ecs.config.
    #[rstest]
    #[case::key("key", &["key \"r.io\"", "user \"alice\"", "check the password of that entry in ECS_ENGINE_AUTH_DATA"])]
    #[case::task_secret("task_secret", &["Secrets Manager secret arn:aws:secretsmanager:us-east-1:123456789012:secret:reg", "read as role arn:aws:iam::123456789012:role/pull", "\"password\" fields of secret arn:aws:secretsmanager:us-east-1:123456789012:secret:reg"])]
    #[case::helper("helper", &["credential helper docker-credential-pass for server URL r.io", "(user \"alice\")", "docker login r.io"])]
    #[case::ecr("ecr", &["ECR token", "fetched as role arn:aws:iam::123456789012:role/pull", "ecr:BatchGetImage and ecr:GetDownloadUrlForLayer", "account 123456789012, region eu-west-1"])]
    #[case::ecr_public("ecr_public", &["ECR Public token", "fetched as the default credential chain", "ecr-public:GetAuthorizationToken"])]
    fn unauthorized_gives_the_advice_of_its_source(#[case] kind: &str, #[case] says: &[&str]) {
        let text = classify(
            "r.io",
            "r.io/app:1",
            &identity_of(kind),
            None,
            "unauthorized: authentication required",
        )
        .to_string();
        for phrase in says {
            assert!(
                text.contains(phrase),
                "{kind}: {phrase:?} missing from {text}"
            );
        }
        // Advice for ecs.config only where the credentials came from it.
        assert_eq!(
            text.contains("ECS_ENGINE_AUTH_DATA"),
            kind == "key",
            "{text}"
        );
        assert_eq!(text.contains("ecr:BatchGetImage"), kind == "ecr", "{text}");
        assert_eq!(text.contains("docker login"), kind == "helper", "{text}");
    }

    /// A rate limit tells an anonymous pull to add credentials, and a pull
    /// with credentials whose they were.
    #[rstest]
    #[case::anonymous(None, "add an entry for \"r.io\" to ECS_ENGINE_AUTH_DATA")]
    #[case::key(Some("key"), "The limit counts the pulls of key \"r.io\"")]
    #[case::helper(
        Some("helper"),
        "pulls of credential helper docker-credential-pass for r.io"
    )]
    #[case::ecr(
        Some("ecr"),
        "pulls of an ECR token fetched as role arn:aws:iam::123456789012:role/pull"
    )]
    fn rate_limit_advice_follows_the_source(#[case] kind: Option<&str>, #[case] says: &str) {
        let identity = kind.map(identity_of).unwrap_or_default();
        let text = classify(
            "r.io",
            "r.io/app:1",
            &identity,
            None,
            "toomanyrequests: slow down",
        )
        .to_string();
        assert!(text.contains(says), "{text}");
        assert_eq!(
            text.contains("ECS_ENGINE_AUTH_DATA"),
            kind.is_none(),
            "{text}"
        );
    }

    #[test]
    fn scrub_removes_secrets() {
        assert_eq!(
            scrub("a hunter2 b hunter2", &["hunter2"]),
            "a <redacted> b <redacted>"
        );
        assert_eq!(scrub("ab", &[""]), "ab");
    }
}
