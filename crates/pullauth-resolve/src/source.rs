//! Where an image's credentials come from: the pure half of credential
//! provision. [`RegistryTable::source`] answers *which* source applies; a
//! provider (pullauth-agent's `credentials` module) turns it into
//! credentials just before the pull.
//!
//! Precedence, top to bottom:
//!
//! 1. the container's `repositoryCredentials` (a Secrets Manager secret);
//! 2. the `ECS_ENGINE_AUTH_DATA` key that applies to the image;
//! 3. a Docker credential helper, when the data is a config.json (the
//!    `auths` wrapper) whose `credHelpers` names the image's registry, or
//!    whose `credsStore` is set;
//! 4. ECR, when the image's registry is an ECR host and ECR is enabled
//!    (ECR Public hosts included: their provider falls back to anonymous
//!    when no token can be had, as their images are public);
//! 5. anonymous.

use std::fmt;

use crate::ecr::{EcrRegistry, ecr_public_host};
use crate::image::ImageRef;
use crate::table::{Entry, RegistryTable};

/// The source of one pull's credentials. Its `Display` names the source,
/// never a secret: `secretsmanager <ARN>`, `key "<written>"`,
/// `helper pass`, `ecr account 123456789012 region us-east-1`, `anonymous`.
#[derive(Debug, Clone)]
pub enum Source<'t> {
    /// A Secrets Manager secret (ARN or name) holding `username`/`password`.
    TaskSecret(&'t str),
    /// A configured `ECS_ENGINE_AUTH_DATA` entry.
    Static(&'t Entry),
    /// `docker-credential-<helper> get` with `server` on stdin.
    Helper {
        helper: &'t str,
        /// The server URL Docker would ask the helper for: the registry
        /// host, or `https://index.docker.io/v1/` for Docker Hub.
        server: String,
    },
    /// An ECR token for this registry.
    Ecr(EcrRegistry),
    /// An ECR Public token (`ecr-public:GetAuthorizationToken`) for this
    /// host (`public.ecr.aws` or `ecr-public.aws.com`).
    EcrPublic(&'static str),
    Anonymous,
}

/// Every value `--json`'s `source` field takes: the kind of source a pull's
/// credentials came from ([`crate::Origin::code`], or `anonymous`).
pub const SOURCE_CODES: [&str; 6] = [
    "task_secret",
    "key",
    "helper",
    "ecr",
    "ecr_public",
    "anonymous",
];

/// The kind code of the source of a pull that sends `entry`: its origin's,
/// or `anonymous` when it sends none.
pub fn source_code(entry: Option<&Entry>) -> &'static str {
    entry.map_or("anonymous", |e| e.origin.code())
}

impl Source<'_> {
    /// The kind code of this source, as [`crate::Origin::code`] names the
    /// provided one (`anonymous` for none).
    pub fn code(&self) -> &'static str {
        match self {
            Source::TaskSecret(_) => "task_secret",
            Source::Static(_) => "key",
            Source::Helper { .. } => "helper",
            Source::Ecr(_) => "ecr",
            Source::EcrPublic(_) => "ecr_public",
            Source::Anonymous => "anonymous",
        }
    }

    /// Whether providing it calls AWS.
    pub fn needs_aws(&self) -> bool {
        matches!(
            self,
            Source::TaskSecret(_) | Source::Ecr(_) | Source::EcrPublic(_)
        )
    }
}

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::TaskSecret(secret) => write!(f, "secretsmanager {secret}"),
            Source::Static(entry) => write!(f, "key {:?}", entry.key.written),
            Source::Helper { helper, .. } => write!(f, "helper {helper}"),
            Source::Ecr(registry) => write!(f, "{}", ecr_label(registry)),
            Source::EcrPublic(host) => write!(f, "ecr-public {host}"),
            Source::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// `ecr account <account> region <region>` (with ` fips` for FIPS hosts).
pub fn ecr_label(registry: &EcrRegistry) -> String {
    let fips = if registry.fips { " fips" } else { "" };
    format!(
        "ecr account {} region {}{fips}",
        registry.account, registry.region
    )
}

/// The server URL Docker passes to a credential helper for `registry` (a
/// normalized host): Docker Hub's is its legacy index address.
pub fn helper_server(registry: &str) -> String {
    if registry == crate::key::DOCKER_HUB {
        "https://index.docker.io/v1/".to_owned()
    } else {
        registry.to_owned()
    }
}

/// The kinds of source, in precedence order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    TaskSecret,
    Key,
    Helper,
    Ecr,
    Anonymous,
}

impl SourceKind {
    /// Every kind, highest precedence first.
    pub const ALL: [SourceKind; 5] = [
        SourceKind::TaskSecret,
        SourceKind::Key,
        SourceKind::Helper,
        SourceKind::Ecr,
        SourceKind::Anonymous,
    ];

    /// The stable code scripts match on.
    pub fn code(self) -> &'static str {
        match self {
            SourceKind::TaskSecret => "task_secret",
            SourceKind::Key => "key",
            SourceKind::Helper => "helper",
            SourceKind::Ecr => "ecr",
            SourceKind::Anonymous => "anonymous",
        }
    }

    fn of(source: &Source<'_>) -> SourceKind {
        match source {
            Source::TaskSecret(_) => SourceKind::TaskSecret,
            Source::Static(_) => SourceKind::Key,
            Source::Helper { .. } => SourceKind::Helper,
            Source::Ecr(_) | Source::EcrPublic(_) => SourceKind::Ecr,
            Source::Anonymous => SourceKind::Anonymous,
        }
    }
}

/// One kind of source's verdict for one image, for `resolve --explain`.
#[derive(Debug, Clone)]
pub struct SourceVerdict<'t> {
    pub kind: SourceKind,
    /// What this kind would give the image, if anything.
    pub source: Option<Source<'t>>,
    /// Whether it is the source the pull uses.
    pub applies: bool,
    /// Stable code: `applies`, `outranked` (it would apply, but a source
    /// of higher precedence does), or why it does not apply: `no_secret`,
    /// `no_key`, `no_helper`, `not_ecr_host`, `ecr_disabled`.
    pub reason: &'static str,
    /// One sentence for people; names sources and hosts, never a secret.
    pub detail: String,
}

/// Which source an image's credentials come from, and why each other kind
/// lost or does not apply.
#[derive(Debug, Clone)]
pub struct SourceExplanation<'t> {
    /// The source a pull uses: always [`RegistryTable::source`]'s answer.
    pub winner: Source<'t>,
    /// One verdict per [`SourceKind`], in precedence order.
    pub verdicts: Vec<SourceVerdict<'t>>,
}

impl RegistryTable {
    /// What each kind of source would give `image`, in precedence order
    /// (anonymous, always available, is left out). The one place sources
    /// are selected: [`RegistryTable::source`] takes the first, and
    /// [`RegistryTable::explain_source`] says why the others lost.
    fn candidates<'t>(
        &'t self,
        image: &ImageRef,
        task_secret: Option<&'t str>,
        ecr_enabled: bool,
    ) -> [Option<Source<'t>>; 4] {
        [
            task_secret.map(Source::TaskSecret),
            self.lookup(image).map(Source::Static),
            self.helper_for(&image.registry)
                .map(|helper| Source::Helper {
                    helper,
                    server: helper_server(&image.registry),
                }),
            match EcrRegistry::parse(&image.registry) {
                _ if !ecr_enabled => None,
                Ok(registry) => Some(Source::Ecr(registry)),
                Err(_) => ecr_public_host(&image.registry).map(Source::EcrPublic),
            },
        ]
    }

    /// The source of `image`'s credentials, by the precedence in the module
    /// docs: `task_secret` (a container's `repositoryCredentials`) first,
    /// then a matching key, then a credential helper, then ECR for ECR
    /// hosts when `ecr_enabled`.
    pub fn source<'t>(
        &'t self,
        image: &ImageRef,
        task_secret: Option<&'t str>,
        ecr_enabled: bool,
    ) -> Source<'t> {
        self.candidates(image, task_secret, ecr_enabled)
            .into_iter()
            .flatten()
            .next()
            .unwrap_or(Source::Anonymous)
    }

    /// [`RegistryTable::source`] with every kind's verdict: the winner,
    /// what each outranked kind would have given, and why the others do
    /// not apply.
    pub fn explain_source<'t>(
        &'t self,
        image: &ImageRef,
        task_secret: Option<&'t str>,
        ecr_enabled: bool,
    ) -> SourceExplanation<'t> {
        let winner = self.source(image, task_secret, ecr_enabled);
        let winner_kind = SourceKind::of(&winner);
        let [secret, key, helper, ecr] = self.candidates(image, task_secret, ecr_enabled);
        let host = &image.registry;
        let absent = |kind: SourceKind| -> (&'static str, String) {
            match kind {
                SourceKind::TaskSecret => (
                    "no_secret",
                    "no repositoryCredentials secret: only a task's container names one \
                     (`pullauth pull` and `pullauth verify` take it as an option)"
                        .to_owned(),
                ),
                SourceKind::Key => (
                    "no_key",
                    "no ECS_ENGINE_AUTH_DATA key applies to the image".to_owned(),
                ),
                SourceKind::Helper => (
                    "no_helper",
                    format!("no credHelpers entry for {host} and no credsStore"),
                ),
                SourceKind::Ecr => match EcrRegistry::parse(host) {
                    _ if ecr_public_host(host).is_some() => (
                        "ecr_disabled",
                        format!("{host} is ECR Public, but ECR tokens are off (PULLAUTH_ECR)"),
                    ),
                    Ok(_) => (
                        "ecr_disabled",
                        format!("{host} is an ECR registry, but ECR tokens are off (PULLAUTH_ECR)"),
                    ),
                    Err(not) => ("not_ecr_host", not.to_string()),
                },
                SourceKind::Anonymous => ("outranked", String::new()),
            }
        };
        let verdicts = [secret, key, helper, ecr, Some(Source::Anonymous)]
            .into_iter()
            .zip(SourceKind::ALL)
            .map(|(source, kind)| {
                let (applies, reason, detail) = match &source {
                    Some(_) if kind == winner_kind => {
                        (true, "applies", format!("{winner} is used"))
                    }
                    Some(candidate) => (
                        false,
                        "outranked",
                        format!(
                            "{candidate} would apply, but {winner} comes first ({} beats {})",
                            winner_kind.code(),
                            kind.code()
                        ),
                    ),
                    None => {
                        let (reason, detail) = absent(kind);
                        (false, reason, detail)
                    }
                };
                SourceVerdict {
                    kind,
                    source,
                    applies,
                    reason,
                    detail,
                }
            })
            .collect();
        SourceExplanation { winner, verdicts }
    }
}

#[cfg(test)]
mod tests {
    use pullauth_config::AuthType;
    use rstest::rstest;
    use secrecy::SecretString;

    use super::*;

    const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

    fn table() -> RegistryTable {
        let data = format!(
            r#"{{"registry.example.com":{{"username":"u","password":"s3cr3t-pw"}},
                "{ECR}/team":{{"username":"ecr-static","password":"p"}}}}"#
        );
        RegistryTable::from_auth_data(AuthType::Docker, &SecretString::from(data)).expect("valid")
    }

    #[rstest]
    #[case::secret_beats_key(
        "registry.example.com/app",
        Some("arn:s"),
        true,
        "secretsmanager arn:s"
    )]
    #[case::secret_beats_ecr(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/app",
        Some("name"),
        true,
        "secretsmanager name"
    )]
    #[case::secret_on_unknown_host("other.example/app", Some("s"), false, "secretsmanager s")]
    #[case::key("registry.example.com/app", None, true, "key \"registry.example.com\"")]
    #[case::key_beats_ecr(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app",
        None,
        true,
        "key \"123456789012.dkr.ecr.us-east-1.amazonaws.com/team\""
    )]
    #[case::ecr(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/app",
        None,
        true,
        "ecr account 123456789012 region us-east-1"
    )]
    #[case::ecr_fips(
        "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com/app",
        None,
        true,
        "ecr account 123456789012 region us-east-1 fips"
    )]
    #[case::ecr_off(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/app",
        None,
        false,
        "anonymous"
    )]
    #[case::anonymous("busybox", None, true, "anonymous")]
    #[case::ecr_public(
        "public.ecr.aws/docker/library/busybox",
        None,
        true,
        "ecr-public public.ecr.aws"
    )]
    #[case::ecr_public_dual_stack(
        "ecr-public.aws.com/x/y",
        None,
        true,
        "ecr-public ecr-public.aws.com"
    )]
    #[case::ecr_public_off("public.ecr.aws/x/y", None, false, "anonymous")]
    #[case::lookalike(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example/app",
        None,
        true,
        "anonymous"
    )]
    fn precedence(
        #[case] image: &str,
        #[case] secret: Option<&str>,
        #[case] ecr: bool,
        #[case] shown: &str,
    ) {
        let table = table();
        let image = ImageRef::parse(image).expect("valid image");
        let source = table.source(&image, secret, ecr);
        assert_eq!(source.to_string(), shown);
        assert_eq!(
            source.needs_aws(),
            shown.starts_with("secretsmanager") || shown.starts_with("ecr")
        );
    }

    fn helper_table() -> RegistryTable {
        let data = format!(
            r#"{{"auths":{{"registry.example.com":{{"auth":"dTpw"}}}},
                "credHelpers":{{"helped.example.com:5000":"pass","{ECR}":"ecr-login"}},
                "credsStore":"desktop"}}"#
        );
        RegistryTable::from_auth_data(AuthType::Docker, &SecretString::from(data)).expect("valid")
    }

    #[rstest]
    #[case::secret_beats_helper("helped.example.com:5000/app", Some("s"), "secretsmanager s", None)]
    #[case::inline_beats_store(
        "registry.example.com/app",
        None,
        "key \"registry.example.com\"",
        None
    )]
    #[case::cred_helper(
        "helped.example.com:5000/app",
        None,
        "helper pass",
        Some("helped.example.com:5000")
    )]
    #[case::helper_beats_ecr(&format!("{ECR}/app"), None, "helper ecr-login", Some(ECR))]
    #[case::store_default("other.example/app", None, "helper desktop", Some("other.example"))]
    #[case::store_hub("busybox", None, "helper desktop", Some("https://index.docker.io/v1/"))]
    fn helper_precedence(
        #[case] image: &str,
        #[case] secret: Option<&str>,
        #[case] shown: &str,
        #[case] server_url: Option<&str>,
    ) {
        let table = helper_table();
        let image = ImageRef::parse(image).expect("valid image");
        let source = table.source(&image, secret, true);
        assert_eq!(source.to_string(), shown);
        assert!(!source.needs_aws() || secret.is_some());
        match (&source, server_url) {
            (Source::Helper { server, .. }, Some(want)) => assert_eq!(server, want),
            (Source::Helper { .. }, None) => panic!("unexpected helper"),
            (_, Some(_)) => panic!("expected a helper, got {source}"),
            _ => {}
        }
    }

    #[rstest]
    #[case::path(r#"{"auths":{},"credsStore":"../evil"}"#)]
    #[case::space(r#"{"auths":{},"credHelpers":{"h.example":"a b"}}"#)]
    #[case::not_object(r#"{"auths":{},"credHelpers":"pass"}"#)]
    #[case::store_not_string(r#"{"auths":{},"credsStore":{}}"#)]
    #[case::wildcard(r#"{"auths":{},"credHelpers":{"*.example.com":"pass"}}"#)]
    fn bad_helpers_are_rejected(#[case] data: &str) {
        assert!(
            RegistryTable::from_auth_data(AuthType::Docker, &SecretString::from(data)).is_err()
        );
    }

    /// Regression (issue 17, finding 3): credHelpers keys that fold to one
    /// host were accepted and the last one in the JSON won; a key with a
    /// path was folded to its host. Both are errors naming the keys.
    #[rstest]
    #[case::path(
        r#"{"helped.example.com/team":"pass"}"#,
        &["\"helped.example.com/team\"", "has a path", "\"team\""]
    )]
    #[case::case_folds(
        r#"{"helped.example.com":"pass","HELPED.example.com":"desktop"}"#,
        &["\"helped.example.com\"", "\"HELPED.example.com\"", "same registry host (helped.example.com)"]
    )]
    #[case::scheme_folds(
        r#"{"https://helped.example.com":"pass","helped.example.com":"pass"}"#,
        &["\"https://helped.example.com\"", "\"helped.example.com\""]
    )]
    #[case::api_version_folds(
        r#"{"helped.example.com":"pass","https://helped.example.com/v1/":"pass"}"#,
        &["\"https://helped.example.com/v1/\"", "same registry host"]
    )]
    #[case::hub_aliases_fold(
        r#"{"https://index.docker.io/v1/":"pass","docker.io":"desktop"}"#,
        &["\"https://index.docker.io/v1/\"", "\"docker.io\"", "(docker.io)"]
    )]
    #[case::user_info_masked(
        r#"{"bob:canary-pw@helped.example.com":"pass"}"#,
        &["user info"]
    )]
    fn colliding_or_path_helper_keys_are_errors(#[case] helpers: &str, #[case] wanted: &[&str]) {
        let data = format!(r#"{{"auths":{{}},"credHelpers":{helpers}}}"#);
        let err = RegistryTable::from_auth_data(AuthType::Docker, &SecretString::from(data))
            .expect_err("refused")
            .to_string();
        for want in wanted {
            assert!(err.contains(want), "{want} not in: {err}");
        }
        assert!(!err.contains("canary-pw"), "{err}");
    }

    #[rstest]
    #[case::distinct_hosts(r#"{"a.example.com":"pass","b.example.com":"pass"}"#)]
    #[case::distinct_ports(r#"{"a.example.com":"pass","a.example.com:5000":"pass"}"#)]
    #[case::hub_legacy_url(r#"{"https://index.docker.io/v1/":"pass"}"#)]
    #[case::trailing_slash(r#"{"https://a.example.com/":"pass"}"#)]
    fn distinct_helper_keys_are_accepted(#[case] helpers: &str) {
        let data = format!(r#"{{"auths":{{}},"credHelpers":{helpers}}}"#);
        RegistryTable::from_auth_data(AuthType::Docker, &SecretString::from(data))
            .expect("accepted");
    }

    /// Regression (issue 17, finding 2): explain said "no key applies:
    /// anonymous" for an ECR image. Its winner is the source a pull uses,
    /// and every other kind says why it lost.
    #[rstest]
    #[case::ecr(&format!("{ECR}/app"), None, true, "ecr", &[("key", "no_key"), ("helper", "no_helper"), ("anonymous", "outranked")])]
    #[case::ecr_lost_to_key(&format!("{ECR}/team/app"), None, true, "key", &[("ecr", "outranked"), ("helper", "no_helper")])]
    #[case::helper_lost_to_inline("registry.example.com/app", None, true, "key", &[("helper", "outranked"), ("ecr", "not_ecr_host")])]
    #[case::helper("other.example/app", None, true, "helper", &[("key", "no_key"), ("ecr", "not_ecr_host")])]
    #[case::secret_first("registry.example.com/app", Some("arn:s"), true, "task_secret", &[("key", "outranked"), ("helper", "outranked")])]
    #[case::ecr_off(&format!("{ECR}/app"), None, false, "anonymous", &[("ecr", "ecr_disabled"), ("secret", "no_secret")])]
    fn explained_winner_is_the_source(
        #[case] image: &str,
        #[case] secret: Option<&str>,
        #[case] ecr: bool,
        #[case] winner: &str,
        #[case] others: &[(&str, &str)],
    ) {
        let data = format!(
            r#"{{"auths":{{"registry.example.com":{{"auth":"dTpw"}},"{ECR}/team":{{"auth":"dTpw"}}}},
                "credHelpers":{{"registry.example.com":"pass","other.example":"pass"}}}}"#
        );
        let table = RegistryTable::from_auth_data(AuthType::Docker, &SecretString::from(data))
            .expect("valid");
        let image = ImageRef::parse(image).expect("valid image");
        let explained = table.explain_source(&image, secret, ecr);
        assert_eq!(
            explained.winner.to_string(),
            table.source(&image, secret, ecr).to_string()
        );
        let applying: Vec<_> = explained.verdicts.iter().filter(|v| v.applies).collect();
        assert_eq!(applying.len(), 1);
        assert_eq!(applying[0].kind.code(), winner);
        for (kind, reason) in others {
            let kind = if *kind == "secret" {
                "task_secret"
            } else {
                kind
            };
            let verdict = explained
                .verdicts
                .iter()
                .find(|v| v.kind.code() == kind)
                .expect("a verdict per kind");
            assert_eq!(verdict.reason, *reason, "{kind}: {}", verdict.detail);
        }
    }

    proptest::proptest! {
        /// For any image, table and switches, the pull's source and
        /// explain's winner are the kind the precedence in the module docs
        /// gives (worked out here from the inputs, not by asking the
        /// table), exactly one kind applies, and every outranked kind comes
        /// later in precedence than the winner.
        #[test]
        fn explain_winner_is_always_the_pulls_source(
            host in proptest::sample::select(vec![
                "registry.example.com", "other.example", "helped.example.com:5000",
                ECR, "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com", "docker.io",
            ]),
            repo in proptest::sample::select(vec!["app", "team/app", "library/busybox"]),
            secret in proptest::option::of(proptest::sample::select(vec!["arn:s", "name"])),
            ecr in proptest::bool::ANY,
            store in proptest::bool::ANY,
        ) {
            let store = if store { r#","credsStore":"desktop""# } else { "" };
            let data = format!(
                r#"{{"auths":{{"registry.example.com":{{"auth":"dTpw"}},"{ECR}/team":{{"auth":"dTpw"}}}},
                    "credHelpers":{{"helped.example.com:5000":"pass"}}{store}}}"#
            );
            let table = RegistryTable::from_auth_data(AuthType::Docker, &SecretString::from(data))
                .expect("valid");
            let image = ImageRef::parse(&format!("{host}/{repo}")).expect("valid image");
            let explained = table.explain_source(&image, secret, ecr);
            let source = table.source(&image, secret, ecr);
            // The table above, by hand: a key for all of
            // registry.example.com and for ECR's team/ namespace; a helper
            // for helped.example.com:5000, and for every host with
            // credsStore; ECR tokens for the two ECR hosts when switched on.
            let keyed = host == "registry.example.com" || (host == ECR && repo.starts_with("team/"));
            let helped = host == "helped.example.com:5000" || !store.is_empty();
            let expected = if secret.is_some() {
                SourceKind::TaskSecret
            } else if keyed {
                SourceKind::Key
            } else if helped {
                SourceKind::Helper
            } else if ecr && host.contains(".dkr.ecr") {
                SourceKind::Ecr
            } else {
                SourceKind::Anonymous
            };
            proptest::prop_assert_eq!(SourceKind::of(&source), expected);
            proptest::prop_assert_eq!(explained.winner.to_string(), source.to_string());
            let position = |kind| SourceKind::ALL.iter().position(|k| *k == kind);
            let applying: Vec<_> = explained.verdicts.iter().filter(|v| v.applies).collect();
            proptest::prop_assert_eq!(applying.len(), 1);
            proptest::prop_assert_eq!(applying[0].kind, SourceKind::of(&source));
            for v in &explained.verdicts {
                if v.reason == "outranked" {
                    proptest::prop_assert!(position(v.kind) > position(applying[0].kind));
                }
            }
        }
    }

    #[test]
    fn display_never_shows_a_password() {
        let table = table();
        let image = ImageRef::parse("registry.example.com/app").expect("valid");
        let shown = table.source(&image, None, true).to_string();
        assert_eq!(shown, "key \"registry.example.com\"");
        assert!(
            !shown.contains("s3cr3t-pw") && !shown.contains('u'),
            "{shown}"
        );
    }
}
