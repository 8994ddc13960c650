//! Image references, parsed with Docker's grammar (distribution/reference,
//! via the `container_image_dist_ref` crate) and normalized for matching
//! against registry keys.
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

/// The longest repository name distribution/reference accepts.
pub const NAME_MAX_LEN: usize = 255;

/// Digest algorithms the Docker Engine can verify, with their hex lengths.
const DIGEST_ALGORITHMS: [(&str, usize); 3] = [("sha256", 64), ("sha384", 96), ("sha512", 128)];

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The reference exactly as given.
    pub original: String,
    /// Lower-cased `host[:port]`; `docker.io` for every Docker Hub alias.
    pub registry: String,
    /// The repository path on that registry; `library/x` for Hub's official images.
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
        // Docker reads an uppercase first component as a registry host (and
        // engines then reject it); it is never a Docker Hub namespace.
        if let Some((first, _)) = image.split_once('/')
            && !first.contains(['.', ':'])
            && first != "localhost"
            && first.chars().any(|c| c.is_ascii_uppercase())
        {
            return Err(fail(format!(
                "{first:?} is neither a registry host (it has no '.' or ':') nor a repository \
                 name (those must be lowercase)"
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
        let parsed =
            ImgRef::new(image).map_err(|e| fail(describe(image, e.kind(), e.index().into())))?;
        let digest = parsed.digest().map(|d| d.to_str().to_owned());
        if let Some(digest) = &digest {
            check_digest(digest).map_err(fail)?;
        }
        let tag = parsed.tag().map(str::to_owned);
        let (registry, repository) = split_registry(parsed.name().to_str());
        // Docker counts the normalized name, "docker.io/library/" included
        // (found by fuzzing: 238 letters parsed, their pull reference did not).
        if registry.len() + 1 + repository.len() > NAME_MAX_LEN {
            return Err(fail(format!(
                "repository name must not be more than {NAME_MAX_LEN} characters"
            )));
        }
        Ok(ImageRef {
            original: image.to_owned(),
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, the name to pull and tag locally.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What the engine's `tag` parameter takes: the digest when there is one
    /// (it pins the content), else the tag, else `latest`.
    pub fn tag_or_digest(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// The full reference to pull: `name:tag` or `name@digest`.
    pub fn pull_reference(&self) -> String {
        match &self.digest {
            Some(digest) => format!("{}@{digest}", self.name()),
            None => format!("{}:{}", self.name(), self.tag_or_digest()),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

/// Docker's rule (distribution/reference's `splitDockerDomain`): the first
/// component names a registry only if it has a `.` or `:` or is
/// `localhost`; otherwise the image is on Docker Hub, where a single
/// component gets `library/`. Hub aliases fold to `docker.io`.
fn split_registry(name: &str) -> (String, String) {
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (
            canonical_host(&first.to_ascii_lowercase()).to_owned(),
            rest.to_owned(),
        ),
        _ => (DOCKER_HUB.to_owned(), name.to_owned()),
    };
    if registry == DOCKER_HUB && !repository.contains('/') {
        return (registry, format!("library/{repository}"));
    }
    (registry, repository)
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

    #[rstest]
    #[case::hub_official("busybox", "docker.io", "library/busybox")]
    #[case::hub_user("acme/app", "docker.io", "acme/app")]
    #[case::hub_explicit("docker.io/library/busybox", "docker.io", "library/busybox")]
    #[case::hub_index("index.docker.io/busybox", "docker.io", "library/busybox")]
    #[case::hub_registry_1("registry-1.docker.io/busybox", "docker.io", "library/busybox")]
    #[case::hub_registry_hub("registry.hub.docker.com/acme/app", "docker.io", "acme/app")]
    #[case::dotted_host("registry.example.com/team/app", "registry.example.com", "team/app")]
    #[case::port_is_host("localhost:5000/app", "localhost:5000", "app")]
    #[case::port_without_dot("myhost:5000/app", "myhost:5000", "app")]
    #[case::localhost("localhost/app", "localhost", "app")]
    #[case::no_dot_is_hub_namespace("myregistry/app", "docker.io", "myregistry/app")]
    #[case::uppercase_host("Registry.Example.com/app", "registry.example.com", "app")]
    #[case::ecr(
        "123456789012.dkr.ecr.us-west-2.amazonaws.com/my-app:1",
        "123456789012.dkr.ecr.us-west-2.amazonaws.com",
        "my-app"
    )]
    #[case::deep("r.io/a/b/c/d", "r.io", "a/b/c/d")]
    fn splits(#[case] image: &str, #[case] registry: &str, #[case] repository: &str) {
        let parsed = ImageRef::parse(image).expect("valid");
        assert_eq!(parsed.registry, registry);
        assert_eq!(parsed.repository, repository);
        assert_eq!(parsed.original, image);
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
    fn pull_reference_spells_the_default_tag() {
        let parsed = ImageRef::parse("localhost:5000/app").expect("valid");
        assert_eq!(parsed.pull_reference(), "localhost:5000/app:latest");
        let parsed = ImageRef::parse(&format!("busybox@{DIGEST}")).expect("valid");
        assert_eq!(
            parsed.pull_reference(),
            format!("docker.io/library/busybox@{DIGEST}")
        );
    }

    #[test]
    fn hub_alias_with_a_long_name_is_rejected_not_mangled() {
        // Fuzzing found that "registry-1.docker.io/" + 250 letters parsed,
        // gained "library/" and produced a pull reference that did not parse.
        let image = format!("registry-1.docker.io/{}", "a".repeat(250));
        assert!(ImageRef::parse(&image).is_err());
    }

    #[test]
    fn long_hub_name_is_measured_after_normalization() {
        // Fuzzing found 238 letters accepted although "docker.io/library/"
        // plus them exceeds 255, so the pull reference did not parse.
        assert!(ImageRef::parse(&"a".repeat(238)).is_err());
        assert!(ImageRef::parse(&format!("acme/{}", "a".repeat(241))).is_err());
        assert!(ImageRef::parse(&"a".repeat(237)).is_ok());
    }

    #[test]
    fn image_id_is_not_a_repository() {
        assert!(ImageRef::parse(&"0123456789abcdef".repeat(4)).is_err());
    }

    #[test]
    fn uppercase_first_component_is_not_a_hub_namespace() {
        // Fuzzing found "Acme/app" accepted as docker.io/Acme/app.
        for image in ["Acme/app", "A/b", "UPPER/case:v1"] {
            assert!(ImageRef::parse(image).is_err(), "{image}");
        }
    }

    proptest::proptest! {
        #[test]
        fn pull_reference_of_a_parsed_image_parses_to_the_same_place(image in "[a-zA-Z0-9./:@_-]{1,80}|[a-z]{200,260}|[a-z]{1,8}/[a-z]{200,250}") {
            if let Ok(parsed) = ImageRef::parse(&image) {
                let again = ImageRef::parse(&parsed.pull_reference()).expect("pull reference parses");
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
    #[case::uppercase_first_component_is_not_hub("UPPER/case:v1", "neither a registry host")]
    #[case::bad_digest("busybox@sha256:abc", "digest")]
    #[case::unknown_digest_algo(&format!("busybox@md5:{}", "a".repeat(32)), "unsupported digest")]
    #[case::short_sha256("busybox@sha256:0123456789abcdef0123456789abcdef", "digest")]
    #[case::bad_tag("busybox:-x", "invalid tag at position 9")]
    #[case::trailing_colon("busybox:", "tag")]
    #[case::space("busy box", "position 5")]
    #[case::double_slash("r.io//app", "position")]
    #[case::bad_port("r.io:x/app", "")]
    #[case::too_long(&format!("r.io/{}", "a".repeat(300)), "255")]
    fn rejects(#[case] image: &str, #[case] reason: &str) {
        let err = ImageRef::parse(image).expect_err("invalid");
        assert!(err.to_string().contains(reason), "{err}");
    }
}
