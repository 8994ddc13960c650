//! Image references, parsed with Docker's grammar (distribution/reference,
//! via the `container_image_dist_ref` crate).
//!
//! A reference has two forms. Docker's own normalization ([`ImageRef::domain`]
//! and [`ImageRef::path`]) is what pullauth sends to the engine and stores:
//! the engine files a pulled image under exactly that name, so a later
//! `docker create` with the task's string finds it only if pullauth asked for
//! the same name. The matching form ([`ImageRef::registry`] and
//! [`ImageRef::repository`]) folds every Docker Hub alias and the host's
//! case, and serves only to choose credentials.
//!
//! That crate parses without regular expressions. `oci-spec`'s parser, used
//! before, compiles a large Unicode regex on first use: about 50 ms and
//! 18 MB on every `pullauth` invocation, more than the pull itself when the
//! image is up to date (see BENCHMARKS.md).

use std::fmt;

use container_image_dist_ref::ImgRef;
use container_image_dist_ref::err::Kind;

use crate::key::{DOCKER_HUB, canonical_host};

/// The tag Docker pulls when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// The longest repository path distribution/reference accepts
/// (`RepositoryNameTotalLengthMax`). Since distribution/reference v0.6.0 it
/// bounds the path only, not the registry in front of it.
pub const NAME_MAX_LEN: usize = 255;

/// The one Hub alias Docker folds (distribution/reference's
/// `legacyDefaultDomain`); `registry-1.docker.io` and the others it keeps.
const LEGACY_HUB: &str = "index.docker.io";

/// Docker Hub's namespace for official images.
const OFFICIAL_PREFIX: &str = "library/";

/// Digest algorithms the Docker Engine can verify, with their hex lengths.
const DIGEST_ALGORITHMS: [(&str, usize); 3] = [("sha256", 64), ("sha384", 96), ("sha512", 128)];

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The reference exactly as given.
    pub original: String,
    /// The registry as Docker normalizes it, for the engine and the store:
    /// `docker.io` for Hub names and `index.docker.io`, any other host
    /// (other Hub aliases included) as written, in its own case.
    pub domain: String,
    /// The repository path as Docker normalizes it: `library/x` for
    /// single-component names on `docker.io`, else as written.
    pub path: String,
    /// For choosing credentials only: `domain` lower-cased, with every
    /// Docker Hub alias folded to `docker.io`.
    pub registry: String,
    /// For choosing credentials only: `path`, with `library/` added to a
    /// single component on any Docker Hub alias.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// An image reference Docker would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {image:?}: {reason}")]
pub struct ImageRefError {
    pub image: String,
    pub reason: String,
}

impl ImageRef {
    /// Parses `image` as `docker pull` would.
    pub fn parse(image: &str) -> Result<ImageRef, ImageRefError> {
        let fail = |reason: String| ImageRefError {
            image: image.to_owned(),
            reason,
        };
        // distribution/reference (since 2019) reads an uppercase first
        // component as a registry host; Docker 20.10 reads it as a Hub
        // namespace and rejects it. pullauth rejects it on every engine: it
        // is far more often a mistyped namespace than a single-label host,
        // and such a host can be named with its port instead.
        if let Some((first, _)) = image.split_once('/')
            && is_uppercase_single_label(first)
        {
            return Err(fail(format!(
                "{first:?} has no '.' or ':', so it is not a registry host for pullauth, and a \
                 Docker Hub namespace must be lowercase; for a registry host without a '.', \
                 add its port ({}:443/...)",
                first.to_ascii_lowercase()
            )));
        }
        // distribution/reference refuses what could be an image ID.
        if image.len() == 64
            && image
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(fail(
                "a 64-character hexadecimal string is an image ID, not a repository name"
                    .to_owned(),
            ));
        }
        let Parts { name, tag, digest } =
            grammar(image).map_err(|(kind, at)| fail(describe(image, kind, at)))?;
        if let Some(digest) = &digest {
            check_digest(digest).map_err(fail)?;
        }
        let (domain, path) = split_docker_domain(&name);
        // distribution/reference bounds the path as normalized, "library/"
        // included; the registry in front of it does not count.
        if path.len() > NAME_MAX_LEN {
            return Err(fail(format!(
                "repository name must not be more than {NAME_MAX_LEN} characters"
            )));
        }
        let (registry, repository) = matching_form(&domain, &path);
        Ok(ImageRef {
            original: image.to_owned(),
            domain,
            path,
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `domain/path`, Docker's name for the image: the name to pull, and
    /// the one the engine files the image under.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// What the engine's `tag` parameter takes: the digest when there is one
    /// (it pins the content), else the tag, else `latest`.
    pub fn tag_or_digest(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// The full reference to pull, inspect and store: `name:tag` or
    /// `name@digest`, in Docker's normalization.
    pub fn pull_reference(&self) -> String {
        match &self.digest {
            Some(digest) => format!("{}@{digest}", self.name()),
            None => format!("{}:{}", self.name(), self.tag_or_digest()),
        }
    }
}

impl fmt::Display for ImageRef {
    /// The reference as the task gave it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

/// A reference split by the grammar, before any normalization.
struct Parts {
    name: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Checks `image` against distribution/reference's grammar; on failure, the
/// kind of error and the byte offset it was found at.
///
/// `container_image_dist_ref` bounds registry and path together to 255
/// characters, as distribution/reference did before v0.6.0. When that is
/// the only complaint, the registry and the rest are checked apart, so that
/// only the path is bounded (by [`ImageRef::parse`], after normalization).
fn grammar(image: &str) -> Result<Parts, (Kind, usize)> {
    let whole = match ImgRef::new(image) {
        Ok(parsed) => return Ok(parts(&parsed)),
        Err(e) => (e.kind(), usize::from(e.index())),
    };
    let Some((first, rest)) = image.split_once('/') else {
        return Err(whole);
    };
    if whole.0 != Kind::NameTooLong || !(first.contains(['.', ':']) || first == "localhost") {
        return Err(whole);
    }
    // The registry on its own, in front of a one-letter path.
    ImgRef::new(&format!("{first}/x")).map_err(|e| (e.kind(), usize::from(e.index())))?;
    // The rest on its own: a path is valid wherever it starts, and now the
    // crate's bound is on the path alone.
    let offset = first.len() + 1;
    let rest = ImgRef::new(rest).map_err(|e| (e.kind(), offset + usize::from(e.index())))?;
    let Parts { name, tag, digest } = parts(&rest);
    Ok(Parts {
        name: format!("{first}/{name}"),
        tag,
        digest,
    })
}

fn parts(parsed: &ImgRef<'_>) -> Parts {
    Parts {
        name: parsed.name().to_str().to_owned(),
        tag: parsed.tag().map(str::to_owned),
        digest: parsed.digest().map(|d| d.to_str().to_owned()),
    }
}

/// A first component Docker reads as a registry host only because it has an
/// uppercase letter; pullauth rejects those (see [`ImageRef::parse`]).
fn is_uppercase_single_label(first: &str) -> bool {
    !first.contains(['.', ':'])
        && first != "localhost"
        && first.bytes().any(|b| b.is_ascii_uppercase())
}

/// distribution/reference's `splitDockerDomain`: the first component names a
/// registry if it has a `.` or `:` or is `localhost` (or has an uppercase
/// letter, which [`ImageRef::parse`] rejects before); otherwise the image is
/// on Docker Hub. Only `index.docker.io` folds to `docker.io`, the host keeps
/// its case, and a single component on `docker.io` gets `library/`.
fn split_docker_domain(name: &str) -> (String, String) {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || is_uppercase_single_label(first) =>
        {
            let domain = if first == LEGACY_HUB {
                DOCKER_HUB
            } else {
                first
            };
            (domain.to_owned(), rest.to_owned())
        }
        _ => (DOCKER_HUB.to_owned(), name.to_owned()),
    };
    if domain == DOCKER_HUB && !path.contains('/') {
        return (domain, format!("{OFFICIAL_PREFIX}{path}"));
    }
    (domain, path)
}

/// The form credentials are chosen by: the host lower-cased (DNS names are
/// case-insensitive), every Hub alias folded to `docker.io`, and `library/`
/// for a single component on any of them.
fn matching_form(domain: &str, path: &str) -> (String, String) {
    let registry = canonical_host(&domain.to_ascii_lowercase()).to_owned();
    if registry == DOCKER_HUB && !path.contains('/') {
        return (registry, format!("{OFFICIAL_PREFIX}{path}"));
    }
    (registry, path.to_owned())
}

/// Only digests the engine can verify: a known algorithm with the right length.
fn check_digest(digest: &str) -> Result<(), String> {
    let (algorithm, encoded) = digest.split_once(':').unwrap_or((digest, ""));
    match DIGEST_ALGORITHMS
        .iter()
        .find(|(name, _)| *name == algorithm)
    {
        None => Err(format!(
            "unsupported digest algorithm {algorithm:?}; use sha256, sha384 or sha512"
        )),
        Some((_, len)) if encoded.len() != *len => Err(format!(
            "invalid checksum digest length: {algorithm} takes {len} hex digits"
        )),
        Some(_) => Ok(()),
    }
}

/// A message for the person who wrote the reference; `at` is the byte
/// offset the parser stopped at.
fn describe(image: &str, kind: Kind, at: usize) -> String {
    let position = at + 1;
    match kind {
        Kind::RefMissing => "repository name must have at least one component".to_owned(),
        Kind::NameTooLong | Kind::PathTooLong | Kind::HostOrPathTooLong => {
            format!("repository name must not be more than {NAME_MAX_LEN} characters")
        }
        _ if repository_part(image)
            .chars()
            .any(|c| c.is_ascii_uppercase()) =>
        {
            "repository name must be lowercase".to_owned()
        }
        Kind::TagTooLong
        | Kind::TagInvalidChar
        | Kind::TagMissing
        | Kind::PortOrTagMissing
        | Kind::PortOrTagInvalidChar => format!(
            "invalid tag at position {position}: a tag is 1 to 128 letters, digits, '_', '.' \
             or '-', and does not start with '.' or '-'"
        ),
        Kind::AlgorithmMissing
        | Kind::InvalidOciAlgorithm
        | Kind::AlgorithmInvalidNumericPrefix
        | Kind::OciRegisteredAlgorithmWrongDigestLength
        | Kind::AlgorithmInvalidChar
        | Kind::AlgorithmTooLong
        | Kind::EncodedMissing
        | Kind::EncodedInvalidChar
        | Kind::EncodedNonLowerHex
        | Kind::OciRegisteredDigestInvalidChar
        | Kind::EncodingTooShort
        | Kind::EncodingTooLong => format!(
            "invalid digest at position {position}: expected sha256: and 64 lowercase hex digits"
        ),
        Kind::HostMissing
        | Kind::HostComponentInvalidEnd
        | Kind::HostInvalidChar
        | Kind::HostTooLong
        | Kind::Ipv6InvalidChar
        | Kind::Ipv6TooLong
        | Kind::Ipv6BadColon
        | Kind::Ipv6TooManyHexDigits
        | Kind::Ipv6TooManyGroups
        | Kind::Ipv6TooFewGroups
        | Kind::Ipv6MissingClosingBracket
        | Kind::Port
        | Kind::PortInvalidChar
        | Kind::PortTooLong
        | Kind::PortMissing => format!("invalid registry host or port at position {position}"),
        _ => format!(
            "unexpected character at position {position}; expected \
             [registry/]repository[:tag][@digest] with a lowercase repository"
        ),
    }
}

/// The repository part of a reference as written: without the registry
/// (when the first component is one), the tag and the digest.
fn repository_part(image: &str) -> &str {
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rfind(':') {
        Some(colon) if !name[colon..].contains('/') => &name[..colon],
        _ => name,
    };
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// Docker's form: what the engine is asked for and files the image under.
    #[rstest]
    #[case::hub_official("busybox", "docker.io", "library/busybox")]
    #[case::hub_user("acme/app", "docker.io", "acme/app")]
    #[case::hub_explicit("docker.io/library/busybox", "docker.io", "library/busybox")]
    #[case::hub_explicit_short("docker.io/busybox", "docker.io", "library/busybox")]
    #[case::hub_index_folds("index.docker.io/busybox", "docker.io", "library/busybox")]
    #[case::hub_index_library("index.docker.io/library/busybox", "docker.io", "library/busybox")]
    #[case::hub_registry_1_kept("registry-1.docker.io/busybox", "registry-1.docker.io", "busybox")]
    #[case::hub_registry_hub_kept(
        "registry.hub.docker.com/acme/app",
        "registry.hub.docker.com",
        "acme/app"
    )]
    #[case::hub_index_any_case_kept("Index.Docker.io/busybox", "Index.Docker.io", "busybox")]
    #[case::dotted_host("registry.example.com/team/app", "registry.example.com", "team/app")]
    #[case::host_case_kept("Registry.Example.com/app", "Registry.Example.com", "app")]
    #[case::host_case_kept_asdf("Asdf.com/foo", "Asdf.com", "foo")]
    #[case::uppercase_localhost_port("LOCALHOST:5000/app", "LOCALHOST:5000", "app")]
    #[case::port_is_host("localhost:5000/app", "localhost:5000", "app")]
    #[case::port_without_dot("myhost:5000/app", "myhost:5000", "app")]
    #[case::localhost("localhost/app", "localhost", "app")]
    #[case::no_dot_is_hub_namespace("myregistry/app", "docker.io", "myregistry/app")]
    #[case::ecr(
        "123456789012.dkr.ecr.us-west-2.amazonaws.com/my-app:1",
        "123456789012.dkr.ecr.us-west-2.amazonaws.com",
        "my-app"
    )]
    #[case::deep("r.io/a/b/c/d", "r.io", "a/b/c/d")]
    fn docker_form(#[case] image: &str, #[case] domain: &str, #[case] path: &str) {
        let parsed = ImageRef::parse(image).expect("valid");
        assert_eq!(parsed.domain, domain);
        assert_eq!(parsed.path, path);
        assert_eq!(parsed.name(), format!("{domain}/{path}"));
        assert_eq!(parsed.original, image);
        assert_eq!(parsed.to_string(), image);
    }

    /// The matching form: Hub aliases folded, host lower-cased.
    #[rstest]
    #[case::hub_official("busybox", "docker.io", "library/busybox")]
    #[case::hub_user("acme/app", "docker.io", "acme/app")]
    #[case::hub_index("index.docker.io/busybox", "docker.io", "library/busybox")]
    #[case::hub_registry_1("registry-1.docker.io/busybox", "docker.io", "library/busybox")]
    #[case::hub_registry_hub("registry.hub.docker.com/acme/app", "docker.io", "acme/app")]
    #[case::hub_alias_any_case("Registry-1.Docker.IO/acme/app", "docker.io", "acme/app")]
    #[case::dotted_host("registry.example.com/team/app", "registry.example.com", "team/app")]
    #[case::uppercase_host("Registry.Example.com/app", "registry.example.com", "app")]
    #[case::uppercase_localhost_port("LOCALHOST:5000/app", "localhost:5000", "app")]
    #[case::port_is_host("localhost:5000/app", "localhost:5000", "app")]
    #[case::no_dot_is_hub_namespace("myregistry/app", "docker.io", "myregistry/app")]
    fn matching_form(#[case] image: &str, #[case] registry: &str, #[case] repository: &str) {
        let parsed = ImageRef::parse(image).expect("valid");
        assert_eq!(parsed.registry, registry);
        assert_eq!(parsed.repository, repository);
    }

    /// What the engine is asked to pull (verified against dockerd 20.10 with
    /// `docker image tag` and `docker image inspect`: it keeps the host's
    /// case and every Hub alias but `index.docker.io`).
    #[rstest]
    #[case::hub_short("busybox", "docker.io/library/busybox:latest")]
    #[case::hub_index("index.docker.io/library/busybox", "docker.io/library/busybox:latest")]
    #[case::hub_registry_1("registry-1.docker.io/busybox", "registry-1.docker.io/busybox:latest")]
    #[case::host_case("Registry.Example.com/app:v1", "Registry.Example.com/app:v1")]
    #[case::asdf("Asdf.com/foo", "Asdf.com/foo:latest")]
    #[case::localhost_port("localhost:5000/app", "localhost:5000/app:latest")]
    #[case::digest(
        &format!("busybox@{DIGEST}"),
        &format!("docker.io/library/busybox@{DIGEST}")
    )]
    fn pull_reference(#[case] image: &str, #[case] reference: &str) {
        assert_eq!(
            ImageRef::parse(image).expect("valid").pull_reference(),
            reference
        );
    }

    #[rstest]
    #[case::none("busybox", None, None, "latest")]
    #[case::tag("busybox:1.36", Some("1.36"), None, "1.36")]
    #[case::port_and_tag("localhost:5000/app:v1", Some("v1"), None, "v1")]
    #[case::port_no_tag("localhost:5000/app", None, None, "latest")]
    #[case::digest(&format!("busybox@{DIGEST}"), None, Some(DIGEST), DIGEST)]
    #[case::tag_and_digest(&format!("busybox:1@{DIGEST}"), Some("1"), Some(DIGEST), DIGEST)]
    fn tags_and_digests(
        #[case] image: &str,
        #[case] tag: Option<&str>,
        #[case] digest: Option<&str>,
        #[case] sent: &str,
    ) {
        let parsed = ImageRef::parse(image).expect("valid");
        if tag.is_some() {
            assert_eq!(parsed.tag.as_deref(), tag);
        }
        assert_eq!(parsed.digest.as_deref(), digest);
        assert_eq!(parsed.tag_or_digest(), sent);
    }

    #[test]
    fn hub_alias_with_a_long_name_is_pulled_as_written() {
        // Fuzzing once found "registry-1.docker.io/" + 250 letters gaining
        // "library/" and producing a pull reference that did not parse; now
        // the alias is kept, so is the path, and the reference round-trips.
        let image = format!("registry-1.docker.io/{}", "a".repeat(250));
        let parsed = ImageRef::parse(&image).expect("valid");
        assert_eq!(parsed.pull_reference(), format!("{image}:latest"));
        assert!(ImageRef::parse(&parsed.pull_reference()).is_ok());
    }

    #[rstest]
    #[case::hub_short_at_limit(&"a".repeat(247))] // "library/" + 247 = 255
    #[case::hub_user_at_limit(&format!("acme/{}", "a".repeat(250)))]
    #[case::host_not_counted(&format!("r.io/{}", "a".repeat(255)))]
    #[case::long_host_not_counted(&format!("{}.io/{}", "h".repeat(60), "a".repeat(255)))]
    fn length_limit_is_on_the_path_only_accepts(#[case] image: &str) {
        let parsed = ImageRef::parse(image).expect("valid");
        assert_eq!(parsed.path.len(), NAME_MAX_LEN);
        assert!(ImageRef::parse(&parsed.pull_reference()).is_ok());
    }

    #[rstest]
    #[case::hub_short_over(&"a".repeat(248))]
    #[case::hub_user_over(&format!("acme/{}", "a".repeat(251)))]
    #[case::path_over(&format!("r.io/{}", "a".repeat(256)))]
    fn length_limit_is_on_the_path_only_rejects(#[case] image: &str) {
        let err = ImageRef::parse(image).expect_err("too long");
        assert!(
            err.to_string()
                .contains("must not be more than 255 characters"),
            "{err}"
        );
    }

    #[test]
    fn image_id_is_not_a_repository() {
        assert!(ImageRef::parse(&"0123456789abcdef".repeat(4)).is_err());
    }

    /// Fuzzing found "Acme/app" accepted as docker.io/Acme/app. Docker
    /// 20.10 rejects these ("repository name must be lowercase");
    /// distribution/reference since 2019 reads the first component as a
    /// registry host. pullauth rejects them on every engine.
    #[rstest]
    #[case::acme("Acme/app")]
    #[case::single_letter("A/b")]
    #[case::upper_with_tag("UPPER/case:v1")]
    #[case::foo_bar("Foo/bar")]
    #[case::localdomain("LOCALDOMAIN/debian")]
    fn uppercase_first_component_without_dot_or_port_is_rejected(#[case] image: &str) {
        let err = ImageRef::parse(image).expect_err("rejected");
        let message = err.to_string();
        assert!(
            message.contains("not a registry host for pullauth"),
            "{message}"
        );
        assert!(message.contains("must be lowercase"), "{message}");
        assert!(message.contains(":443/..."), "{message}");
    }

    proptest::proptest! {
        #[test]
        fn pull_reference_of_a_parsed_image_parses_to_the_same_place(image in "[a-zA-Z0-9./:@_-]{1,80}|[a-z]{200,260}|[a-z]{1,8}/[a-z]{200,260}|[A-Za-z]{1,20}\\.[a-z]{2,3}(:[0-9]{1,5})?/[a-z]{240,260}") {
            if let Ok(parsed) = ImageRef::parse(&image) {
                let again = ImageRef::parse(&parsed.pull_reference()).expect("pull reference parses");
                proptest::prop_assert_eq!(&again.domain, &parsed.domain);
                proptest::prop_assert_eq!(&again.path, &parsed.path);
                proptest::prop_assert_eq!(&again.registry, &parsed.registry);
                proptest::prop_assert_eq!(&again.repository, &parsed.repository);
                proptest::prop_assert_eq!(again.tag_or_digest(), parsed.tag_or_digest());
            }
        }
    }

    #[rstest]
    #[case::empty("", "at least one component")]
    #[case::uppercase_repo("Busybox", "must be lowercase")]
    #[case::uppercase_path("r.io/Team/app", "must be lowercase")]
    #[case::uppercase_first_component_is_not_hub("UPPER/case:v1", "not a registry host")]
    #[case::bad_digest("busybox@sha256:abc", "digest")]
    #[case::unknown_digest_algo(&format!("busybox@md5:{}", "a".repeat(32)), "unsupported digest")]
    #[case::short_sha256("busybox@sha256:0123456789abcdef0123456789abcdef", "digest")]
    #[case::bad_tag("busybox:-x", "invalid tag at position 9")]
    #[case::trailing_colon("busybox:", "tag")]
    #[case::space("busy box", "position 5")]
    #[case::double_slash("r.io//app", "position")]
    #[case::bad_port("r.io:x/app", "")]
    #[case::too_long(&format!("r.io/{}", "a".repeat(300)), "255")]
    #[case::uppercase_path_after_uppercase_host("Registry.Example.com/App", "must be lowercase")]
    fn rejects(#[case] image: &str, #[case] reason: &str) {
        let err = ImageRef::parse(image).expect_err("invalid");
        assert!(err.to_string().contains(reason), "{err}");
    }
}
