//! Which image a service revision pins. When ECS creates a service
//! revision it resolves every container's tag to a manifest digest
//! ("software version consistency"), and the ECS agent then pulls
//! `name@digest` and tags the result with the task's own reference, so
//! that the task starts exactly the image ECS resolved even if the tag has
//! moved since. Prefetch warms that same digest.
//!
//! `DescribeServiceRevisions` gives, per revision, its task definition and
//! `containerImages` (`containerName`, `image`, `imageDigest`). A digest
//! applies to a container of a task definition only when all three agree:
//! the same task definition ARN, the same container name and the same image
//! as written (a revision made before the task definition was edited names
//! another revision anyway, but an emulator or a partial answer must not
//! pin the wrong image).

/// One container image of a service revision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PinnedImage {
    pub container_name: String,
    /// As written in the task definition.
    pub image: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
}

/// A service revision, as far as pinning goes (immutable by ARN).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRevision {
    pub arn: String,
    /// The task definition ARN the revision runs.
    pub task_definition: String,
    pub images: Vec<PinnedImage>,
}

/// Whether `digest` is a manifest digest the engine can pull by: an
/// algorithm this build knows and the right number of lowercase hex digits.
pub fn is_manifest_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let length = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == length
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The digest ECS pinned for container `container` (image `image`) of task
/// definition `task_definition` (an ARN), if any revision says so. Two
/// revisions pinning different digests (a tag re-pushed between two
/// deployments of the same task definition) both run: the newest, the one
/// listed first, wins, as it is the one new tasks start.
pub fn pinned_digest<'r>(
    revisions: impl IntoIterator<Item = &'r ServiceRevision>,
    task_definition: &str,
    container: &str,
    image: &str,
) -> Option<&'r str> {
    revisions
        .into_iter()
        .filter(|r| r.task_definition == task_definition)
        .flat_map(|r| r.images.iter())
        .find(|p| {
            p.container_name == container && p.image == image && is_manifest_digest(&p.digest)
        })
        .map(|p| p.digest.as_str())
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const TD: &str = "arn:aws:ecs:us-east-1:1:task-definition/web:3";

    fn revision(arn: &str, td: &str, images: &[(&str, &str, &str)]) -> ServiceRevision {
        ServiceRevision {
            arn: arn.into(),
            task_definition: td.into(),
            images: images
                .iter()
                .map(|(c, i, d)| PinnedImage {
                    container_name: (*c).into(),
                    image: (*i).into(),
                    digest: (*d).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn pins_the_matching_container_of_the_matching_task_definition() {
        let revisions = [
            revision(
                "r2",
                TD,
                &[("app", "repo/app:1", D2), ("log", "repo/log:1", D1)],
            ),
            revision("r1", TD, &[("app", "repo/app:1", D1)]),
        ];
        assert_eq!(
            pinned_digest(&revisions, TD, "app", "repo/app:1"),
            Some(D2),
            "newest first"
        );
        assert_eq!(pinned_digest(&revisions, TD, "log", "repo/log:1"), Some(D1));
        assert_eq!(
            pinned_digest(&revisions, TD, "app", "repo/app:2"),
            None,
            "another image"
        );
        assert_eq!(
            pinned_digest(&revisions, TD, "db", "repo/app:1"),
            None,
            "another container"
        );
        assert_eq!(
            pinned_digest(
                &revisions,
                "arn:aws:ecs:us-east-1:1:task-definition/web:4",
                "app",
                "repo/app:1"
            ),
            None,
            "another revision of the family"
        );
    }

    #[test]
    fn a_malformed_digest_pins_nothing() {
        let revisions = [revision("r", TD, &[("app", "repo/app:1", "sha256:abc")])];
        assert_eq!(pinned_digest(&revisions, TD, "app", "repo/app:1"), None);
    }

    #[rstest]
    #[case(D1, true)]
    #[case(
        "sha512:0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        false
    )]
    #[case(
        "sha256:ABCDEF1111111111111111111111111111111111111111111111111111111111",
        false
    )]
    #[case("md5:d41d8cd98f00b204e9800998ecf8427e", false)]
    #[case("sha256", false)]
    fn manifest_digests(#[case] digest: &str, #[case] ok: bool) {
        assert_eq!(is_manifest_digest(digest), ok);
    }
}
