//! Pull failures, classified so that callers can decide what to retry and
//! people can tell what to fix.

use std::time::Duration;

/// Who the pull presented itself as: filled in from the resolver's answer so
/// that an authentication failure can name the key and user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The `ECS_ENGINE_AUTH_DATA` key that applied, as written.
    pub key: Option<String>,
    pub username: Option<String>,
    /// How the credentials authenticate ("password", "identity token", ...).
    pub method: &'static str,
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
    #[error("cannot encode the credentials of key {key:?} into the X-Registry-Auth header")]
    AuthHeader { key: String },
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
    #[error("the Docker Engine refused to pull {image}: {detail}")]
    Rejected { image: String, detail: String },
    #[error("the Docker Engine failed to pull {image}: {detail}")]
    Engine { image: String, detail: String },
}

/// How to make a TCP engine safe, for every error that refuses plain TCP.
pub const TLS_HINT: &str = "enable TLS on the engine (dockerd --tlsverify, usually on port 2376) \
     and set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to a directory holding ca.pem, cert.pem \
     and key.pem, or use the engine's unix socket";

fn unauthorized_message(registry: &str, image: &str, identity: &Identity, detail: &str) -> String {
    match (&identity.key, &identity.username) {
        (Some(key), Some(user)) => format!(
            "registry {registry} rejected the credentials for {image} (key {key:?}, user {user:?}): \
             {detail}; check the {} of that entry in ECS_ENGINE_AUTH_DATA",
            identity.method
        ),
        (Some(key), None) => format!(
            "registry {registry} rejected the credentials for {image} (key {key:?}): {detail}; \
             check the {} of that entry in ECS_ENGINE_AUTH_DATA",
            identity.method
        ),
        _ => format!(
            "registry {registry} requires authentication for {image}, and no credentials are \
             configured for it: {detail}; add an entry for {registry:?} to ECS_ENGINE_AUTH_DATA"
        ),
    }
}

impl PullError {
    /// Every value [`PullError::class`] can return, so that metrics can
    /// export a zero for each class before the first failure.
    pub const CLASSES: [&'static str; 10] = [
        "auth",
        "not_found",
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
    /// requests the engine refuses (4xx) and timeouts are final: retrying
    /// only delays the answer.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PullError::RegistryUnavailable { .. } | PullError::Engine { .. }
        )
    }
}

/// What the engine said, sorted into a class. Matching is on the engine's
/// and the registry's error texts (distribution's error codes and Go's
/// network errors), which are stable across engine versions.
pub(crate) fn classify(
    registry: &str,
    image: &str,
    identity: &Identity,
    status: Option<u16>,
    message: &str,
) -> PullError {
    let lower = message.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    let (registry, image, detail) = (
        registry.to_owned(),
        image.to_owned(),
        message.trim().to_owned(),
    );
    if has(&[
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "incorrect username or password",
        "denied",
        "401 unauthorized",
    ]) {
        PullError::Unauthorized {
            registry,
            image,
            identity: Box::new(identity.clone()),
            detail,
        }
    } else if has(&[
        "manifest unknown",
        "not found",
        "name unknown",
        "repository does not exist",
    ]) || status == Some(404)
    {
        PullError::NotFound {
            registry,
            image,
            detail,
        }
    } else if has(&[
        "connection refused",
        "connection reset",
        "dial tcp",
        "i/o timeout",
        "no such host",
        "timeout",
        "eof",
        "tls handshake",
        "service unavailable",
        "bad gateway",
        "internal server error",
        "too many requests",
        "unexpected http status",
        "deadline exceeded",
    ]) {
        PullError::RegistryUnavailable {
            registry,
            image,
            detail,
        }
    } else if status.is_some_and(|s| (400..500).contains(&s)) {
        PullError::Rejected { image, detail }
    } else {
        PullError::Engine { image, detail }
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

    #[rstest]
    #[case::anonymous(
        "Head \"http://127.0.0.1:5000/v2/app/manifests/latest\": no basic auth credentials",
        None,
        "auth"
    )]
    #[case::wrong_password("unauthorized: authentication required", Some(500), "auth")]
    #[case::hub_denied(
        "pull access denied for x, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
        None,
        "auth"
    )]
    #[case::manifest_unknown(
        "manifest for 127.0.0.1:5000/app:nope not found: manifest unknown: manifest unknown",
        Some(404),
        "not_found"
    )]
    #[case::status_404("something", Some(404), "not_found")]
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
    #[case::bad_request(
        "invalid reference format: repository name must be lowercase",
        Some(400),
        "rejected"
    )]
    #[case::deadline(
        "Get \"http://127.0.0.1:9/v2/\": context deadline exceeded",
        Some(500),
        "registry_unavailable"
    )]
    #[case::other("something odd", Some(500), "engine")]
    fn classifies_engine_messages(
        #[case] message: &str,
        #[case] status: Option<u16>,
        #[case] class: &str,
    ) {
        let err = classify(
            "127.0.0.1:5000",
            "127.0.0.1:5000/app:latest",
            &Identity::default(),
            status,
            message,
        );
        assert_eq!(err.class(), class, "{err}");
    }

    #[test]
    fn only_registry_and_engine_failures_are_retried() {
        let e = |m: &str| classify("r", "r/i", &Identity::default(), None, m);
        assert!(e("connection refused").is_transient());
        assert!(!e("unauthorized").is_transient());
        assert!(!e("manifest unknown").is_transient());
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

    #[test]
    fn scrub_removes_secrets() {
        assert_eq!(
            scrub("a hunter2 b hunter2", &["hunter2"]),
            "a <redacted> b <redacted>"
        );
        assert_eq!(scrub("ab", &[""]), "ab");
    }
}
