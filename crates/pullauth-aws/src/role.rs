//! IAM role ARNs, validated once.

use std::fmt;

use crate::AwsError;

/// Partitions whose IAM role ARNs are accepted.
const PARTITIONS: [&str; 3] = ["aws", "aws-cn", "aws-us-gov"];
/// Longest role name IAM allows.
const ROLE_NAME_MAX: usize = 64;
/// Longest role path IAM allows (with its slashes).
const ROLE_PATH_MAX: usize = 512;

/// `arn:<partition>:iam::<12 digits>:role/<path/>name`: a role whose
/// credentials (from `sts:AssumeRole`) a task's pulls use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleArn(String);

impl RoleArn {
    /// Validates `arn`. Role names and paths use IAM's characters
    /// (`[A-Za-z0-9+=,.@_-]`, paths also `/`).
    pub fn parse(arn: &str) -> Result<RoleArn, AwsError> {
        let fail = |problem| AwsError::Invalid {
            what: "role ARN",
            value: arn.to_string(),
            problem,
        };
        let mut parts = arn.splitn(6, ':');
        let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(fail("expected arn:<partition>:iam::<account>:role/<name>"));
        };
        if !PARTITIONS.contains(&partition) {
            return Err(fail("partition must be aws, aws-cn or aws-us-gov"));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail("the account id must be 12 digits"));
        }
        let Some(path_and_name) = resource.strip_prefix("role/") else {
            return Err(fail("not a role (resource must start with role/)"));
        };
        let (path, name) = path_and_name
            .rsplit_once('/')
            .unwrap_or(("", path_and_name));
        let iam_char = |b: u8| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b);
        if name.is_empty() || name.len() > ROLE_NAME_MAX || !name.bytes().all(iam_char) {
            return Err(fail("role name must be 1-64 of A-Za-z0-9+=,.@_-"));
        }
        if path.len() + 2 > ROLE_PATH_MAX
            || path
                .split('/')
                .any(|seg| seg.is_empty() && !path.is_empty())
            || !path.bytes().all(|b| iam_char(b) || b == b'/')
        {
            return Err(fail(
                "role path must be /-separated names without empty parts",
            ));
        }
        Ok(RoleArn(arn.to_string()))
    }

    /// The ARN as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 12-digit account that owns the role.
    pub fn account(&self) -> &str {
        self.0.split(':').nth(4).unwrap_or_default()
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for RoleArn {
    type Err = AwsError;
    fn from_str(s: &str) -> Result<RoleArn, AwsError> {
        RoleArn::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case::plain("arn:aws:iam::123456789012:role/ecsTaskExecutionRole")]
    #[case::with_path("arn:aws:iam::123456789012:role/service-role/team/pull")]
    #[case::china("arn:aws-cn:iam::123456789012:role/pull")]
    #[case::gov_cloud("arn:aws-us-gov:iam::123456789012:role/pull")]
    #[case::iam_punctuation("arn:aws:iam::123456789012:role/a+b=c,d.e@f_g-h")]
    fn accepts(#[case] arn: &str) {
        let role = RoleArn::parse(arn).expect("valid");
        assert_eq!(role.as_str(), arn);
        assert_eq!(role.account(), "123456789012");
    }

    #[rstest]
    #[case::empty("", "expected")]
    #[case::user("arn:aws:iam::123456789012:user/alice", "not a role")]
    #[case::short_account("arn:aws:iam::12345678901:role/x", "12 digits")]
    #[case::region_given("arn:aws:iam:us-east-1:123456789012:role/x", "expected")]
    #[case::other_service("arn:aws:sts::123456789012:role/x", "expected")]
    #[case::bad_partition("arn:aws-xx:iam::123456789012:role/x", "partition")]
    #[case::no_name("arn:aws:iam::123456789012:role/", "role name")]
    #[case::trailing_slash("arn:aws:iam::123456789012:role/path/", "role name")]
    #[case::double_slash("arn:aws:iam::123456789012:role/a//b", "role path")]
    #[case::space("arn:aws:iam::123456789012:role/a b", "role name")]
    #[case::long_name(
        "arn:aws:iam::123456789012:role/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "role name"
    )]
    fn rejects(#[case] arn: &str, #[case] problem: &str) {
        let e = RoleArn::parse(arn).expect_err("invalid");
        assert!(e.to_string().contains(problem), "{arn}: {e}");
    }
}
