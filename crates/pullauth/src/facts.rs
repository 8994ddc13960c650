//! Facts about the binary that both the argument parser (`cli`) and the
//! commands need. A leaf: it imports nothing from this crate, so that `cli`
//! never reaches back into `commands`, which imports `cli`.

use std::path::Path;

/// `pullauth v<version> (<git hash>)`, as `/v1/metadata` reports it.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("PULLAUTH_GIT_HASH"),
    ")"
);

/// Whether `path` names an S3 object rather than a file.
pub fn is_s3(path: &Path) -> bool {
    path.as_os_str().as_encoded_bytes().starts_with(b"s3://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_are_told_from_paths() {
        assert!(is_s3(Path::new("s3://bucket/key")));
        assert!(!is_s3(Path::new("/etc/ecs/ecs.config")));
        assert!(!is_s3(Path::new("./s3://x")));
    }

    #[test]
    fn version_carries_the_package_version_and_git_hash() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")), "{VERSION}");
        assert!(
            VERSION.ends_with(&format!("({})", env!("PULLAUTH_GIT_HASH"))),
            "{VERSION}"
        );
    }
}
