//! `s3://bucket/key` locations, parsed once.

use std::fmt;

use crate::AwsError;

/// An object in S3, as `--env-file s3://bucket/key` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Location {
    pub bucket: String,
    pub key: String,
}

impl S3Location {
    /// Parses `s3://bucket/key`. The bucket must follow S3's naming rules
    /// (3-63 of `a-z0-9.-`, starting and ending with a letter or digit);
    /// the key is everything after the first `/` and must not be empty.
    pub fn parse(url: &str) -> Result<S3Location, AwsError> {
        let fail = |problem| AwsError::Invalid {
            what: "S3 location",
            value: url.to_string(),
            problem,
        };
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(fail("expected s3://bucket/key"));
        };
        let Some((bucket, key)) = rest.split_once('/') else {
            return Err(fail("expected s3://bucket/key"));
        };
        let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !(3..=63).contains(&bucket.len())
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            || !edge(bucket.bytes().next())
            || !edge(bucket.bytes().last())
        {
            return Err(fail(
                "bucket names are 3-63 of a-z 0-9 . - (letter or digit at both ends)",
            ));
        }
        if key.is_empty() {
            return Err(fail("the object key is empty"));
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case::simple("s3://my-bucket/ecs.env", "my-bucket", "ecs.env")]
    #[case::nested_key("s3://b.example/dir/sub/file.env", "b.example", "dir/sub/file.env")]
    #[case::key_keeps_slashes("s3://abc//x", "abc", "/x")]
    fn parses(#[case] url: &str, #[case] bucket: &str, #[case] key: &str) {
        let l = S3Location::parse(url).expect("valid");
        assert_eq!((l.bucket.as_str(), l.key.as_str()), (bucket, key));
        assert_eq!(l.to_string(), url);
    }

    #[rstest]
    #[case::no_scheme("my-bucket/key", "expected")]
    #[case::https("https://my-bucket.s3.amazonaws.com/key", "expected")]
    #[case::no_key("s3://my-bucket", "expected")]
    #[case::empty_key("s3://my-bucket/", "empty")]
    #[case::uppercase_bucket("s3://My-Bucket/key", "bucket")]
    #[case::short_bucket("s3://ab/key", "bucket")]
    #[case::dash_end("s3://bucket-/key", "bucket")]
    fn rejects(#[case] url: &str, #[case] problem: &str) {
        let e = S3Location::parse(url).expect_err("invalid");
        assert!(e.to_string().contains(problem), "{url}: {e}");
    }
}
