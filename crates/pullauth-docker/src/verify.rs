//! The answer to "may these credentials read this image?", shared by
//! `pullauth verify` and the agent's `POST /v1/verify`.

use pullauth_resolve::{Entry, ImageRef, source_code};

use crate::engine::Verified;
use crate::error::PullError;

/// What verifying one image found, in a few classes people act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The registry let the credentials read the image.
    Accepted,
    /// The registry refused the credentials (or wants some and none apply).
    Rejected,
    /// No such repository, tag or digest.
    NotFound,
    /// The engine could not reach the registry, or it failed or timed out.
    RegistryUnreachable,
    /// pullauth could not reach the engine.
    EngineUnreachable,
    /// Anything else (the engine refused the request, a rate limit, ...).
    Error,
    /// The credentials a pull would use could not be obtained (a helper
    /// failed, AWS refused a token or secret): the registry was not asked.
    CredentialsUnavailable,
}

impl VerifyOutcome {
    /// The class a failed verification falls into.
    pub fn of_error(error: &PullError) -> VerifyOutcome {
        match error {
            PullError::Unauthorized { .. } => VerifyOutcome::Rejected,
            PullError::NotFound { .. } => VerifyOutcome::NotFound,
            PullError::RegistryUnavailable { .. } => VerifyOutcome::RegistryUnreachable,
            PullError::EngineUnreachable { .. } => VerifyOutcome::EngineUnreachable,
            PullError::RateLimited { .. }
            | PullError::InsecureEngine { .. }
            | PullError::AuthHeader { .. }
            | PullError::Stalled { .. }
            | PullError::TimedOut { .. }
            | PullError::Rejected { .. }
            | PullError::Engine { .. } => VerifyOutcome::Error,
        }
    }

    /// The stable name used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyOutcome::Accepted => "accepted",
            VerifyOutcome::Rejected => "rejected",
            VerifyOutcome::NotFound => "not_found",
            VerifyOutcome::RegistryUnreachable => "registry_unreachable",
            VerifyOutcome::EngineUnreachable => "engine_unreachable",
            VerifyOutcome::Error => "error",
            VerifyOutcome::CredentialsUnavailable => "credentials_unavailable",
        }
    }
}

/// One image's verification, ready to print or serve. Holds no secret: the
/// detail is a [`PullError`]'s text, scrubbed of the credentials sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub image: String,
    pub registry: String,
    /// The `ECS_ENGINE_AUTH_DATA` key as written, when the credentials are
    /// that key's; `None` for every other source.
    pub key: Option<String>,
    /// The kind of source (`key`, `task_secret`, `helper`, `ecr`,
    /// `ecr_public`, `anonymous`).
    pub source: &'static str,
    /// The source as people name it (`helper pass`, `secretsmanager ARN`);
    /// `None` for an anonymous check.
    pub from: Option<String>,
    pub username: Option<String>,
    pub outcome: VerifyOutcome,
    pub digest: Option<String>,
    pub platforms: Vec<String>,
    pub detail: Option<String>,
}

impl VerifyReport {
    /// The report for `image` verified with `entry` (anonymously for `None`).
    pub fn new(
        image: &ImageRef,
        entry: Option<&Entry>,
        result: &Result<Verified, PullError>,
    ) -> VerifyReport {
        let (outcome, digest, platforms, detail) = match result {
            Ok(v) => (
                VerifyOutcome::Accepted,
                v.digest.clone(),
                v.platforms.clone(),
                None,
            ),
            Err(e) => (
                VerifyOutcome::of_error(e),
                None,
                Vec::new(),
                Some(e.to_string()),
            ),
        };
        VerifyReport {
            image: image.original.clone(),
            registry: image.registry.clone(),
            key: entry.and_then(Entry::config_key).map(str::to_owned),
            source: source_code(entry),
            from: entry.map(Entry::label),
            username: entry.and_then(|e| e.credentials.username.clone()),
            outcome,
            digest,
            platforms,
            detail,
        }
    }

    /// The report for `image` whose credentials could not be provided from
    /// the source of kind `source` labelled `from`; `detail` is the
    /// provider's error, which names the source and never a secret.
    pub fn unprovided(
        image: &ImageRef,
        source: &'static str,
        from: &str,
        detail: &str,
    ) -> VerifyReport {
        VerifyReport {
            image: image.original.clone(),
            registry: image.registry.clone(),
            key: None,
            source,
            from: Some(from.to_owned()),
            username: None,
            outcome: VerifyOutcome::CredentialsUnavailable,
            digest: None,
            platforms: Vec::new(),
            detail: Some(detail.to_owned()),
        }
    }

    /// `{"image","registry","key","source","from","username","result","digest","platforms","detail"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "image": self.image,
            "registry": self.registry,
            "key": self.key,
            "source": self.source,
            "from": self.from,
            "username": self.username,
            "result": self.outcome.as_str(),
            "digest": self.digest,
            "platforms": self.platforms,
            "detail": self.detail,
        })
    }

    /// One line for people: the result, the image, what was presented, and
    /// the digest and platforms or why not.
    pub fn line(&self) -> String {
        let who = match (&self.from, &self.username) {
            (Some(from), Some(user)) => format!("{from}, user {user:?}"),
            (Some(from), None) => from.clone(),
            (None, _) => "anonymous".to_owned(),
        };
        match self.outcome {
            VerifyOutcome::Accepted => format!(
                "accepted {} [{who}] {} {}",
                self.image,
                self.digest.as_deref().unwrap_or("-"),
                if self.platforms.is_empty() {
                    "-".to_owned()
                } else {
                    self.platforms.join(",")
                }
            ),
            outcome => format!(
                "{} {} [{who}]: {}",
                outcome.as_str(),
                self.image,
                self.detail.as_deref().unwrap_or("-")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Identity, classify};
    use pullauth_resolve::{Origin, RegistryTable};

    fn image() -> ImageRef {
        ImageRef::parse("127.0.0.1:5000/team/app:v1").expect("valid")
    }

    fn table() -> RegistryTable {
        RegistryTable::from_auth_data(
            pullauth_config::AuthType::Docker,
            &secrecy::SecretString::from(
                r#"{"127.0.0.1:5000": {"username": "alice", "password": "s3cret-pw", "email": ""}}"#,
            ),
        )
        .expect("valid auth data")
    }

    #[test]
    fn errors_map_to_outcomes() {
        let c = |status, m: &str| classify("r", "r/i", &Identity::default(), status, m);
        let cases = [
            (c(None, "unauthorized: authentication required"), "rejected"),
            (
                c(Some(404), "manifest unknown: manifest unknown"),
                "not_found",
            ),
            (
                c(None, "dial tcp 127.0.0.1:1: connect: connection refused"),
                "registry_unreachable",
            ),
            (c(None, "toomanyrequests: slow down"), "error"),
            (c(Some(400), "invalid reference format"), "error"),
            (c(None, "odd"), "error"),
            (
                PullError::EngineUnreachable {
                    address: "unix:///x".into(),
                    detail: "gone".into(),
                },
                "engine_unreachable",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(
                VerifyOutcome::of_error(&error).as_str(),
                expected,
                "{error}"
            );
        }
    }

    #[test]
    fn accepted_json_line_has_every_field() {
        let table = table();
        let image = image();
        let verified = Verified {
            digest: Some("sha256:abc".into()),
            media_type: None,
            platforms: vec!["linux/amd64".into(), "linux/arm64/v8".into()],
        };
        let report = VerifyReport::new(&image, table.lookup(&image), &Ok(verified));
        assert_eq!(
            report.to_json().to_string(),
            r#"{"detail":null,"digest":"sha256:abc","from":"key \"127.0.0.1:5000\"","image":"127.0.0.1:5000/team/app:v1","key":"127.0.0.1:5000","platforms":["linux/amd64","linux/arm64/v8"],"registry":"127.0.0.1:5000","result":"accepted","source":"key","username":"alice"}"#
        );
        assert_eq!(
            report.line(),
            r#"accepted 127.0.0.1:5000/team/app:v1 [key "127.0.0.1:5000", user "alice"] sha256:abc linux/amd64,linux/arm64/v8"#
        );
    }

    /// An entry as the provider hands one to a pull, for each kind of
    /// source: a key's as configured, any other labelled with its source.
    fn entry_of(kind: &str, table: &RegistryTable, image: &ImageRef) -> Entry {
        let role = "role arn:aws:iam::123456789012:role/pull".to_owned();
        let (label, origin) = match kind {
            "key" => return table.lookup(image).expect("a key applies").clone(),
            "task_secret" => (
                "secretsmanager reg-login",
                Origin::TaskSecret {
                    secret: "reg-login".into(),
                    principal: role,
                },
            ),
            "helper" => (
                "helper pass",
                Origin::Helper {
                    helper: "pass".into(),
                    server: "127.0.0.1:5000".into(),
                },
            ),
            "ecr" => (
                "ecr account 123456789012 region us-east-1",
                Origin::Ecr {
                    registry: pullauth_resolve::EcrRegistry::parse(
                        "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                    )
                    .expect("ECR host"),
                    principal: role,
                },
            ),
            "ecr_public" => (
                "ecr-public public.ecr.aws",
                Origin::EcrPublic {
                    host: "public.ecr.aws".into(),
                    principal: role,
                },
            ),
            other => panic!("no such kind {other}"),
        };
        Entry {
            key: pullauth_resolve::RegistryKey {
                written: label.to_owned(),
                host: pullauth_resolve::HostPattern::Exact(image.registry.clone()),
                namespace: String::new(),
            },
            credentials: pullauth_resolve::Credentials::basic("alice", "s3cret-pw"),
            origin,
        }
    }

    /// `--json` and `POST /v1/verify`: `key` is the ecs.config key or
    /// `null`, `source` the kind, `from` the source's label, and the detail
    /// gives that source's fix; the text line names the source too. No
    /// secret in either.
    #[rstest::rstest]
    #[case::key(
        "key",
        Some("127.0.0.1:5000"),
        "key \"127.0.0.1:5000\"",
        "ECS_ENGINE_AUTH_DATA"
    )]
    #[case::task_secret(
        "task_secret",
        None,
        "secretsmanager reg-login",
        "fields of secret reg-login"
    )]
    #[case::helper("helper", None, "helper pass", "docker-credential-pass")]
    #[case::ecr(
        "ecr",
        None,
        "ecr account 123456789012 region us-east-1",
        "ecr:BatchGetImage"
    )]
    #[case::ecr_public(
        "ecr_public",
        None,
        "ecr-public public.ecr.aws",
        "ecr-public:GetAuthorizationToken"
    )]
    fn rejected_report_names_the_source_kind_and_its_fix(
        #[case] kind: &str,
        #[case] key: Option<&str>,
        #[case] from: &str,
        #[case] fix: &str,
    ) {
        let table = table();
        let image = image();
        let entry = entry_of(kind, &table, &image);
        let identity = Identity {
            key: Some(entry.key.written.clone()),
            username: entry.credentials.username.clone(),
            method: entry.credentials.kind(),
            origin: Some(entry.origin.clone()),
        };
        let error = classify(
            &image.domain,
            &image.to_string(),
            &identity,
            None,
            &crate::error::scrub("unauthorized: s3cret-pw is wrong", &["s3cret-pw"]),
        );
        let report = VerifyReport::new(&image, Some(&entry), &Err(error));
        let json = report.to_json();
        assert_eq!(json["key"], serde_json::json!(key), "{json}");
        assert_eq!(json["source"], kind, "{json}");
        assert_eq!(json["from"], from, "{json}");
        assert_eq!(json["result"], "rejected", "{json}");
        let detail = json["detail"].as_str().expect("a detail");
        assert!(detail.contains(fix), "{detail}");
        let line = report.line();
        assert!(
            line.contains(&format!("[{from}, user \"alice\"]")),
            "{line}"
        );
        assert!(
            !format!("{json} {line}").contains("s3cret-pw"),
            "{json} {line}"
        );
        assert!(pullauth_resolve::SOURCE_CODES.contains(&kind));
    }

    #[test]
    fn unprovided_report_has_no_key_and_names_the_source() {
        let report = VerifyReport::unprovided(
            &image(),
            "helper",
            "helper pass",
            "could not get registry credentials from helper pass: not installed",
        );
        let json = report.to_json();
        assert_eq!(json["key"], serde_json::Value::Null);
        assert_eq!(json["source"], "helper");
        assert_eq!(json["from"], "helper pass");
        assert_eq!(json["result"], "credentials_unavailable");
    }

    #[test]
    fn rejected_line_names_key_and_user_and_no_secret() {
        let table = table();
        let image = image();
        let entry = table.lookup(&image);
        let identity = Identity {
            key: Some("127.0.0.1:5000".into()),
            username: Some("alice".into()),
            method: "password",
            origin: Some(Origin::Key),
        };
        let error = classify(
            &image.domain,
            &image.to_string(),
            &identity,
            Some(401),
            &crate::error::scrub("unauthorized: bad password s3cret-pw", &["s3cret-pw"]),
        );
        let report = VerifyReport::new(&image, entry, &Err(error));
        let json = report.to_json();
        assert_eq!(json["result"], "rejected");
        assert_eq!(json["digest"], serde_json::Value::Null);
        assert_eq!(json["platforms"], serde_json::json!([]));
        let text = format!("{json} {}", report.line());
        assert!(!text.contains("s3cret-pw"), "{text}");
        assert!(
            text.contains("\"alice\"") && text.contains("127.0.0.1:5000"),
            "{text}"
        );

        let anonymous = VerifyReport::new(
            &ImageRef::parse("docker.io/library/busybox").expect("valid"),
            None,
            &Err(classify(
                "docker.io",
                "b",
                &Identity::default(),
                None,
                "manifest unknown",
            )),
        );
        assert_eq!(anonymous.to_json()["key"], serde_json::Value::Null);
        assert!(
            anonymous
                .line()
                .starts_with("not_found docker.io/library/busybox [anonymous]: ")
        );
    }
}
