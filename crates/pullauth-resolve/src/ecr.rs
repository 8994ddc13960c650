//! Amazon ECR registry hosts: which account and region a host names.
//!
//! An image on `123456789012.dkr.ecr.eu-west-1.amazonaws.com/app` is pulled
//! with a token from ECR's `GetAuthorizationToken` for account
//! `123456789012` in `eu-west-1`. Recognizing the host is pure and lives
//! here, beside the rest of resolution; fetching the token is
//! `pullauth-aws`'s job.
//!
//! Accepted shapes (the registry endpoints of the `aws` and `aws-cn`
//! partitions, see ECR's "Amazon ECR endpoints and quotas"):
//!
//! | host | partition |
//! | --- | --- |
//! | `<account>.dkr.ecr.<region>.amazonaws.com` | aws, aws-us-gov |
//! | `<account>.dkr.ecr-fips.<region>.amazonaws.com` | aws, aws-us-gov (FIPS) |
//! | `<account>.dkr.ecr.<region>.amazonaws.com.cn` | aws-cn (`cn-*` regions only) |
//!
//! The host must be the matching form of [`crate::ImageRef::registry`]
//! (lower case, no port): ECR registries have no port, and an upper-case
//! host here means the caller skipped normalization, which is a bug worth
//! an error rather than a silent match.

use std::fmt;

/// Length of an AWS account id.
const ACCOUNT_LEN: usize = 12;

/// One ECR registry: the account and region whose token pulls from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EcrRegistry {
    /// The 12-digit AWS account id (the registry id of `GetAuthorizationToken`).
    pub account: String,
    /// The region, e.g. `eu-west-1`.
    pub region: String,
    /// Whether the host is the FIPS endpoint (`dkr.ecr-fips`), so the token
    /// is fetched from ECR's FIPS API endpoint too.
    pub fips: bool,
    /// The host exactly as parsed, for messages and the proxy endpoint.
    pub host: String,
}

/// Why a host is not an ECR registry host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host:?} is not an Amazon ECR registry host: {reason}")]
pub struct NotEcr {
    pub host: String,
    pub reason: &'static str,
}

impl EcrRegistry {
    /// Parses an ECR registry host; see the module docs for the shapes.
    pub fn parse(host: &str) -> Result<EcrRegistry, NotEcr> {
        let fail = |reason| NotEcr {
            host: host.to_string(),
            reason,
        };
        if host.contains(':') {
            return Err(fail("ECR registries have no port"));
        }
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(fail("host must be lower case"));
        }
        let (rest, china) = if let Some(rest) = host.strip_suffix(".amazonaws.com.cn") {
            (rest, true)
        } else if let Some(rest) = host.strip_suffix(".amazonaws.com") {
            (rest, false)
        } else {
            return Err(fail("not under amazonaws.com or amazonaws.com.cn"));
        };
        let labels: Vec<&str> = rest.split('.').collect();
        let [account, "dkr", service, region] = labels[..] else {
            return Err(fail("expected <account>.dkr.ecr[-fips].<region>"));
        };
        let fips = match service {
            "ecr" => false,
            "ecr-fips" => true,
            _ => return Err(fail("expected dkr.ecr or dkr.ecr-fips")),
        };
        if account.len() != ACCOUNT_LEN || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail("the account id must be 12 digits"));
        }
        if !is_region(region) {
            return Err(fail("not a region name"));
        }
        if china != region.starts_with("cn-") {
            return Err(fail(
                "cn-* regions are under amazonaws.com.cn, and only they",
            ));
        }
        if china && fips {
            return Err(fail("the aws-cn partition has no FIPS endpoints"));
        }
        Ok(EcrRegistry {
            account: account.to_string(),
            region: region.to_string(),
            fips,
            host: host.to_string(),
        })
    }

    /// The DNS suffix of the region's partition (`amazonaws.com` or
    /// `amazonaws.com.cn`).
    pub fn dns_suffix(&self) -> &'static str {
        if self.region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        }
    }
}

impl fmt::Display for EcrRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)
    }
}

/// `<area>(-<word>)*-<number>`: `us-east-1`, `us-gov-west-1`, `ap-southeast-5`.
fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let [first, middle @ .., last] = &parts[..] else {
        return false;
    };
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase());
    first.len() == 2
        && word(first)
        && !middle.is_empty()
        && middle.iter().all(|m| word(m))
        && !last.is_empty()
        && last.len() <= 2
        && last.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case::commercial(
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        "123456789012",
        "eu-west-1",
        false
    )]
    #[case::fips(
        "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
        "123456789012",
        "us-east-1",
        true
    )]
    #[case::gov_cloud(
        "000000000001.dkr.ecr.us-gov-west-1.amazonaws.com",
        "000000000001",
        "us-gov-west-1",
        false
    )]
    #[case::gov_cloud_fips(
        "000000000001.dkr.ecr-fips.us-gov-east-1.amazonaws.com",
        "000000000001",
        "us-gov-east-1",
        true
    )]
    #[case::china(
        "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
        "123456789012",
        "cn-north-1",
        false
    )]
    #[case::china_northwest(
        "123456789012.dkr.ecr.cn-northwest-1.amazonaws.com.cn",
        "123456789012",
        "cn-northwest-1",
        false
    )]
    #[case::two_digit_number(
        "123456789012.dkr.ecr.ap-southeast-10.amazonaws.com",
        "123456789012",
        "ap-southeast-10",
        false
    )]
    fn parses(#[case] host: &str, #[case] account: &str, #[case] region: &str, #[case] fips: bool) {
        let r = EcrRegistry::parse(host).expect("an ECR host");
        assert_eq!(r.account, account);
        assert_eq!(r.region, region);
        assert_eq!(r.fips, fips);
        assert_eq!(r.host, host);
        assert_eq!(r.to_string(), host);
    }

    #[rstest]
    #[case::account_too_short("12345678901.dkr.ecr.eu-west-1.amazonaws.com", "12 digits")]
    #[case::account_too_long("1234567890123.dkr.ecr.eu-west-1.amazonaws.com", "12 digits")]
    #[case::account_not_digits("12345678901a.dkr.ecr.eu-west-1.amazonaws.com", "12 digits")]
    #[case::uppercase("123456789012.dkr.ecr.EU-WEST-1.amazonaws.com", "lower case")]
    #[case::uppercase_suffix("123456789012.dkr.ecr.eu-west-1.AmazonAWS.com", "lower case")]
    #[case::port("123456789012.dkr.ecr.eu-west-1.amazonaws.com:443", "port")]
    #[case::extra_leading_label("x.123456789012.dkr.ecr.eu-west-1.amazonaws.com", "expected")]
    #[case::extra_middle_label("123456789012.dkr.ecr.eu-west-1.x.amazonaws.com", "expected")]
    #[case::missing_dkr("123456789012.ecr.eu-west-1.amazonaws.com", "expected")]
    #[case::api_endpoint("api.ecr.eu-west-1.amazonaws.com", "expected")]
    #[case::public_ecr("public.ecr.aws", "not under")]
    #[case::lookalike_suffix(
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example",
        "not under"
    )]
    #[case::lookalike_domain("123456789012.dkr.ecr.eu-west-1.notamazonaws.com", "not under")]
    #[case::wrong_service("123456789012.dkr.ecs.eu-west-1.amazonaws.com", "dkr.ecr")]
    #[case::bad_region("123456789012.dkr.ecr.europe.amazonaws.com", "region")]
    #[case::region_without_number("123456789012.dkr.ecr.eu-west.amazonaws.com", "region")]
    #[case::empty_region("123456789012.dkr.ecr..amazonaws.com", "region")]
    #[case::china_region_on_com("123456789012.dkr.ecr.cn-north-1.amazonaws.com", "cn-*")]
    #[case::other_region_on_cn("123456789012.dkr.ecr.eu-west-1.amazonaws.com.cn", "cn-*")]
    #[case::china_fips("123456789012.dkr.ecr-fips.cn-north-1.amazonaws.com.cn", "FIPS")]
    #[case::trailing_dot("123456789012.dkr.ecr.eu-west-1.amazonaws.com.", "not under")]
    #[case::empty("", "not under")]
    fn rejects(#[case] host: &str, #[case] reason: &str) {
        let e = EcrRegistry::parse(host).expect_err("not an ECR host");
        assert!(e.reason.contains(reason), "{host}: {}", e.reason);
        assert!(e.to_string().contains(host));
    }
}
