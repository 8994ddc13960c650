//! Image references, parsed with Docker's grammar (via `oci-spec`) and
//! normalized for matching against registry keys.

use std::fmt;

use oci_spec::distribution::{ParseError, Reference};

use crate::key::{DOCKER_HUB, canonical_host};

/// The tag Docker pulls when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

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
        // engines then reject it); oci-spec would file it under Docker Hub.
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
        let reference = Reference::try_from(image).map_err(|e| fail(describe(image, &e)))?;
        let registry = canonical_host(&reference.registry().to_ascii_lowercase()).to_owned();
        let mut repository = reference.repository().to_owned();
        // `registry-1.docker.io/busybox` is Hub's `library/busybox` too.
        if registry == DOCKER_HUB && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        // oci-spec fills in "latest" when neither tag nor digest is given;
        // keep that, but drop it when a digest is present so we never send both.
        let digest = reference.digest().map(str::to_owned);
        let explicit_tag = reference
            .tag()
            .filter(|_| digest.is_none() || has_explicit_tag(image))
            .map(str::to_owned);
        Ok(ImageRef {
            original: image.to_owned(),
            registry,
            repository,
            tag: explicit_tag,
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

/// Whether the reference spells out a tag (a `:` after the last `/`, before any `@`).
fn has_explicit_tag(image: &str) -> bool {
    let name = image.split('@').next().unwrap_or(image);
    let last = name.rsplit('/').next().unwrap_or(name);
    last.contains(':')
}

/// A message for the person who wrote the reference.
fn describe(image: &str, err: &ParseError) -> String {
    match err {
        ParseError::ReferenceInvalidFormat => {
            let name = image.split(['@', ':']).next().unwrap_or(image);
            if name.chars().any(|c| c.is_ascii_uppercase())
                && Reference::try_from(image.to_ascii_lowercase().as_str()).is_ok()
            {
                "repository name must be lowercase".to_owned()
            } else {
                "expected [registry/]repository[:tag][@digest] with a lowercase repository \
                 (see `docker pull --help`)"
                    .to_owned()
            }
        }
        other => other.to_string(),
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

    #[rstest]
    #[case::empty("", "at least one component")]
    #[case::uppercase_repo("Busybox", "must be lowercase")]
    #[case::uppercase_path("r.io/Team/app", "must be lowercase")]
    #[case::uppercase_first_component_is_not_hub("UPPER/case:v1", "neither a registry host")]
    #[case::bad_digest("busybox@sha256:abc", "digest")]
    #[case::unknown_digest_algo(&format!("busybox@md5:{}", "a".repeat(32)), "unsupported digest")]
    #[case::bad_tag("busybox:-x", "expected [registry/]repository")]
    #[case::trailing_colon("busybox:", "expected")]
    #[case::space("busy box", "expected")]
    #[case::double_slash("r.io//app", "expected")]
    #[case::too_long(&format!("r.io/{}", "a".repeat(300)), "255")]
    fn rejects(#[case] image: &str, #[case] reason: &str) {
        let err = ImageRef::parse(image).expect_err("invalid");
        assert!(err.to_string().contains(reason), "{err}");
    }
}
