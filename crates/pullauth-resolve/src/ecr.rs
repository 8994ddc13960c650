//! Amazon ECR registry hosts: which account and region a host names.
//!
//! An image on `123456789012.dkr.ecr.eu-west-1.amazonaws.com/app` is pulled
//! with a token from ECR's `GetAuthorizationToken` for account
//! `123456789012` in `eu-west-1`. Recognizing the host is pure and lives
//! here, beside the rest of resolution; fetching the token is
//! `pullauth-aws`'s job.
//!
//! Accepted shapes: one row of [`HOST_SHAPES`] each (the registry
//! endpoints amazon-ecr-credential-helper recognizes, each held to its own
//! partition's regions and registry label):
//!
//! | host | partition | ECR API endpoint |
//! | --- | --- | --- |
//! | `<account>.dkr.ecr[-fips].<region>.amazonaws.com` | aws, aws-us-gov | `api.ecr[-fips].<region>.amazonaws.com` |
//! | `<account>.dkr.ecr[-fips].<region>.amazonaws.com.cn` | aws-cn (`cn-*`) | `api.ecr[-fips].<region>.amazonaws.com.cn` |
//! | `<account>.dkr-ecr[-fips].<region>.on.aws` (dual-stack) | aws, aws-us-gov | `ecr[-fips].<region>.api.aws` |
//! | `<account>.dkr-ecr[-fips].<region>.on.amazonwebservices.com.cn` (dual-stack) | aws-cn (`cn-*`) | `ecr[-fips].<region>.api.amazonwebservices.com.cn` |
//! | `<account>.dkr.ecr[-fips].<region>.amazonaws.eu` | aws-eusc (`eusc-*`) | `api.ecr[-fips].<region>.amazonaws.eu` |
//! | `<account>.dkr.ecr[-fips].<region>.c2s.ic.gov` | aws-iso (`us-iso-*`) | `api.ecr[-fips].<region>.c2s.ic.gov` |
//! | `<account>.dkr.ecr[-fips].<region>.sc2s.sgov.gov` | aws-iso-b (`us-isob-*`) | `api.ecr[-fips].<region>.sc2s.sgov.gov` |
//! | `<account>.dkr.ecr[-fips].<region>.cloud.adc-e.uk` | aws-iso-e (`eu-isoe-*`) | `api.ecr[-fips].<region>.cloud.adc-e.uk` |
//! | `<account>.dkr.ecr[-fips].<region>.csp.hci.ic.gov` | aws-iso-f (`us-isof-*`) | `api.ecr[-fips].<region>.csp.hci.ic.gov` |
//!
//! The API endpoints are the ones the SDK's endpoint rules give (`api.ecr.`
//! on a partition's DNS suffix, `ecr.` on its dual-stack suffix, `-fips`
//! in every partition); the table stays because this crate is pure (no
//! SDK), and `pullauth-aws`'s `partitions` tests hold every row, per
//! partition, with and without FIPS, against the endpoint resolver of the
//! aws-sdk-ecr the build links, so that an SDK update that disagrees fails
//! the build. The helper's pattern is looser (it takes either
//! registry label on any suffix, and any region name); pullauth refuses
//! a region of another partition, so that a token is never asked of the
//! wrong partition.
//!
//! The host must be the matching form of [`crate::ImageRef::registry`]
//! (lower case, no port): ECR registries have no port, and an upper-case
//! host here means the caller skipped normalization, which is a bug worth
//! an error rather than a silent match.

use std::fmt;

/// Length of an AWS account id.
const ACCOUNT_LEN: usize = 12;

/// One shape of ECR registry host.
#[derive(Debug)]
pub struct HostShape {
    /// The DNS suffix after the region, e.g. `amazonaws.com`.
    pub suffix: &'static str,
    /// Whether the shape is a dual-stack (IPv4 and IPv6) endpoint: registry
    /// label `dkr-ecr` instead of `dkr.ecr`, and a dual-stack API endpoint.
    pub dual_stack: bool,
    /// The partition; `aws` shapes hold `aws-us-gov` for `us-gov-*` regions.
    pub partition: &'static str,
    /// The region prefix the partition's regions carry; `None`: any region
    /// that no other partition claims.
    pub region_prefix: Option<&'static str>,
    /// The suffix of the ECR API endpoint, after `api.ecr[-fips].<region>.`
    /// (or `ecr[-fips].<region>.` for dual-stack shapes).
    pub api_suffix: &'static str,
}

/// Every ECR registry host shape; see the module docs.
pub const HOST_SHAPES: [HostShape; 9] = [
    HostShape {
        suffix: "amazonaws.com",
        dual_stack: false,
        partition: "aws",
        region_prefix: None,
        api_suffix: "amazonaws.com",
    },
    HostShape {
        suffix: "amazonaws.com.cn",
        dual_stack: false,
        partition: "aws-cn",
        region_prefix: Some("cn-"),
        api_suffix: "amazonaws.com.cn",
    },
    HostShape {
        suffix: "on.aws",
        dual_stack: true,
        partition: "aws",
        region_prefix: None,
        api_suffix: "api.aws",
    },
    HostShape {
        suffix: "on.amazonwebservices.com.cn",
        dual_stack: true,
        partition: "aws-cn",
        region_prefix: Some("cn-"),
        api_suffix: "api.amazonwebservices.com.cn",
    },
    HostShape {
        suffix: "amazonaws.eu",
        dual_stack: false,
        partition: "aws-eusc",
        region_prefix: Some("eusc-"),
        api_suffix: "amazonaws.eu",
    },
    HostShape {
        suffix: "c2s.ic.gov",
        dual_stack: false,
        partition: "aws-iso",
        region_prefix: Some("us-iso-"),
        api_suffix: "c2s.ic.gov",
    },
    HostShape {
        suffix: "sc2s.sgov.gov",
        dual_stack: false,
        partition: "aws-iso-b",
        region_prefix: Some("us-isob-"),
        api_suffix: "sc2s.sgov.gov",
    },
    HostShape {
        suffix: "cloud.adc-e.uk",
        dual_stack: false,
        partition: "aws-iso-e",
        region_prefix: Some("eu-isoe-"),
        api_suffix: "cloud.adc-e.uk",
    },
    HostShape {
        suffix: "csp.hci.ic.gov",
        dual_stack: false,
        partition: "aws-iso-f",
        region_prefix: Some("us-isof-"),
        api_suffix: "csp.hci.ic.gov",
    },
];

/// ECR Public's registry hosts: `public.ecr.aws` and its dual-stack name.
/// Tokens for them come from `ecr-public:GetAuthorizationToken` in
/// us-east-1, whatever the host.
pub const ECR_PUBLIC_HOSTS: [&str; 2] = ["public.ecr.aws", "ecr-public.aws.com"];

/// The ECR Public host `host` is (exactly, as [`crate::ImageRef::registry`]
/// spells it), if it is one.
pub fn ecr_public_host(host: &str) -> Option<&'static str> {
    ECR_PUBLIC_HOSTS.iter().copied().find(|h| *h == host)
}

/// One ECR registry: the account and region whose token pulls from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EcrRegistry {
    /// The 12-digit AWS account id (the registry id of `GetAuthorizationToken`).
    pub account: String,
    /// The region, e.g. `eu-west-1`.
    pub region: String,
    /// Whether the host is a FIPS endpoint (`dkr.ecr-fips`), so the token
    /// is fetched from ECR's FIPS API endpoint too.
    pub fips: bool,
    /// Whether the host is a dual-stack endpoint (`dkr-ecr`), so the token
    /// is fetched from ECR's dual-stack API endpoint too.
    pub dual_stack: bool,
    /// The partition, e.g. `aws`, `aws-cn`, `aws-iso-b`.
    pub partition: &'static str,
    /// The suffix of the ECR API endpoint (see [`HostShape::api_suffix`]).
    pub api_suffix: &'static str,
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
        // The longest matching suffix: `amazonaws.com.cn` before `.com`
        // cannot be confused, as a suffix must follow a '.'.
        let Some((shape, rest)) = HOST_SHAPES
            .iter()
            .filter_map(|shape| {
                let rest = host.strip_suffix(shape.suffix)?.strip_suffix('.')?;
                Some((shape, rest))
            })
            .max_by_key(|(shape, _)| shape.suffix.len())
        else {
            return Err(fail(
                "not under an ECR registry domain (amazonaws.com, on.aws, ...)",
            ));
        };
        let labels: Vec<&str> = rest.split('.').collect();
        let (account, service, region) = match (shape.dual_stack, &labels[..]) {
            (false, [account, "dkr", service, region]) => (*account, *service, *region),
            (true, [account, service, region]) => (*account, *service, *region),
            (false, _) => return Err(fail("expected <account>.dkr.ecr[-fips].<region>")),
            (true, _) => return Err(fail("expected <account>.dkr-ecr[-fips].<region>")),
        };
        let fips = match (shape.dual_stack, service) {
            (false, "ecr") | (true, "dkr-ecr") => false,
            (false, "ecr-fips") | (true, "dkr-ecr-fips") => true,
            (false, _) => return Err(fail("expected dkr.ecr or dkr.ecr-fips")),
            (true, _) => return Err(fail("expected dkr-ecr or dkr-ecr-fips")),
        };
        if account.len() != ACCOUNT_LEN || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail("the account id must be 12 digits"));
        }
        if !is_region(region) {
            return Err(fail("not a region name"));
        }
        let claimed_elsewhere = HOST_SHAPES
            .iter()
            .filter_map(|s| s.region_prefix)
            .any(|prefix| region.starts_with(prefix));
        let in_partition = match shape.region_prefix {
            Some(prefix) => region.starts_with(prefix),
            None => !claimed_elsewhere,
        };
        if !in_partition {
            return Err(fail(
                "the region belongs to another partition than the host's domain \
                 (cn-* under amazonaws.com.cn, eusc-* under amazonaws.eu, us-iso-* under \
                 c2s.ic.gov, ...)",
            ));
        }
        let partition = if shape.partition == "aws" && region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            shape.partition
        };
        Ok(EcrRegistry {
            account: account.to_string(),
            region: region.to_string(),
            fips,
            dual_stack: shape.dual_stack,
            partition,
            api_suffix: shape.api_suffix,
            host: host.to_string(),
        })
    }

    /// The ECR API endpoint that serves this registry's tokens:
    /// `https://api.ecr[-fips].<region>.<suffix>`, or for dual-stack hosts
    /// `https://ecr[-fips].<region>.<dual-stack suffix>`.
    pub fn api_endpoint(&self) -> String {
        let fips = if self.fips { "-fips" } else { "" };
        let service = if self.dual_stack { "ecr" } else { "api.ecr" };
        format!(
            "https://{service}{fips}.{}.{}",
            self.region, self.api_suffix
        )
    }
}

impl fmt::Display for EcrRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)
    }
}

/// The DNS suffix of `region`'s partition, as AWS service endpoints
/// (`<service>.<region>.<suffix>`) use it: `amazonaws.com.cn` for `cn-*`,
/// `c2s.ic.gov` for `us-iso-*`, ..., and `amazonaws.com` for every region
/// no other partition claims (aws, aws-us-gov). The same table as the
/// registry hosts ([`HOST_SHAPES`], the shapes that are not dual-stack).
pub fn partition_dns_suffix(region: &str) -> &'static str {
    HOST_SHAPES
        .iter()
        .filter(|shape| !shape.dual_stack)
        .find(|shape| shape.region_prefix.is_some_and(|p| region.starts_with(p)))
        .map_or("amazonaws.com", |shape| shape.suffix)
}

/// `<area>(-<word>)+-<number>`: `us-east-1`, `us-gov-west-1`, `ap-southeast-5`,
/// `eusc-de-east-1`, `us-isob-east-1`.
fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let [first, middle @ .., last] = &parts[..] else {
        return false;
    };
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase());
    (2..=4).contains(&first.len())
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
    #[case::aws("eu-west-1", "amazonaws.com")]
    #[case::gov("us-gov-west-1", "amazonaws.com")]
    #[case::china("cn-north-1", "amazonaws.com.cn")]
    #[case::eusc("eusc-de-east-1", "amazonaws.eu")]
    #[case::iso("us-iso-east-1", "c2s.ic.gov")]
    #[case::iso_b("us-isob-east-1", "sc2s.sgov.gov")]
    #[case::iso_e("eu-isoe-west-1", "cloud.adc-e.uk")]
    #[case::iso_f("us-isof-south-1", "csp.hci.ic.gov")]
    fn regions_have_their_partitions_dns_suffix(#[case] region: &str, #[case] suffix: &str) {
        assert_eq!(partition_dns_suffix(region), suffix);
    }

    /// One row per host shape (and the aws-us-gov split): account,
    /// region, FIPS, dual-stack, partition and the API endpoint the token
    /// is fetched from.
    #[rstest]
    #[case::commercial(
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        "eu-west-1",
        false,
        false,
        "aws",
        "https://api.ecr.eu-west-1.amazonaws.com"
    )]
    #[case::fips(
        "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
        "us-east-1",
        true,
        false,
        "aws",
        "https://api.ecr-fips.us-east-1.amazonaws.com"
    )]
    #[case::gov_cloud(
        "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com",
        "us-gov-west-1",
        false,
        false,
        "aws-us-gov",
        "https://api.ecr.us-gov-west-1.amazonaws.com"
    )]
    #[case::gov_cloud_fips(
        "123456789012.dkr.ecr-fips.us-gov-east-1.amazonaws.com",
        "us-gov-east-1",
        true,
        false,
        "aws-us-gov",
        "https://api.ecr-fips.us-gov-east-1.amazonaws.com"
    )]
    #[case::china(
        "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
        "cn-north-1",
        false,
        false,
        "aws-cn",
        "https://api.ecr.cn-north-1.amazonaws.com.cn"
    )]
    #[case::china_northwest(
        "123456789012.dkr.ecr.cn-northwest-1.amazonaws.com.cn",
        "cn-northwest-1",
        false,
        false,
        "aws-cn",
        "https://api.ecr.cn-northwest-1.amazonaws.com.cn"
    )]
    #[case::two_digit_number(
        "123456789012.dkr.ecr.ap-southeast-10.amazonaws.com",
        "ap-southeast-10",
        false,
        false,
        "aws",
        "https://api.ecr.ap-southeast-10.amazonaws.com"
    )]
    #[case::dual_stack(
        "123456789012.dkr-ecr.eu-west-1.on.aws",
        "eu-west-1",
        false,
        true,
        "aws",
        "https://ecr.eu-west-1.api.aws"
    )]
    #[case::dual_stack_fips(
        "123456789012.dkr-ecr-fips.us-east-2.on.aws",
        "us-east-2",
        true,
        true,
        "aws",
        "https://ecr-fips.us-east-2.api.aws"
    )]
    #[case::dual_stack_gov(
        "123456789012.dkr-ecr.us-gov-west-1.on.aws",
        "us-gov-west-1",
        false,
        true,
        "aws-us-gov",
        "https://ecr.us-gov-west-1.api.aws"
    )]
    #[case::dual_stack_china(
        "123456789012.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn",
        "cn-north-1",
        false,
        true,
        "aws-cn",
        "https://ecr.cn-north-1.api.amazonwebservices.com.cn"
    )]
    // Regression (issue 25): FIPS in aws-cn was refused, while the linked
    // SDK's partition data and ECR endpoint rules serve it.
    #[case::china_fips(
        "123456789012.dkr.ecr-fips.cn-north-1.amazonaws.com.cn",
        "cn-north-1",
        true,
        false,
        "aws-cn",
        "https://api.ecr-fips.cn-north-1.amazonaws.com.cn"
    )]
    #[case::dual_stack_china_fips(
        "123456789012.dkr-ecr-fips.cn-north-1.on.amazonwebservices.com.cn",
        "cn-north-1",
        true,
        true,
        "aws-cn",
        "https://ecr-fips.cn-north-1.api.amazonwebservices.com.cn"
    )]
    #[case::european_sovereign(
        "123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu",
        "eusc-de-east-1",
        false,
        false,
        "aws-eusc",
        "https://api.ecr.eusc-de-east-1.amazonaws.eu"
    )]
    #[case::iso(
        "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov",
        "us-iso-east-1",
        false,
        false,
        "aws-iso",
        "https://api.ecr.us-iso-east-1.c2s.ic.gov"
    )]
    #[case::iso_b(
        "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
        "us-isob-east-1",
        false,
        false,
        "aws-iso-b",
        "https://api.ecr.us-isob-east-1.sc2s.sgov.gov"
    )]
    #[case::iso_e(
        "123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk",
        "eu-isoe-west-1",
        false,
        false,
        "aws-iso-e",
        "https://api.ecr.eu-isoe-west-1.cloud.adc-e.uk"
    )]
    #[case::iso_f(
        "123456789012.dkr.ecr.us-isof-south-1.csp.hci.ic.gov",
        "us-isof-south-1",
        false,
        false,
        "aws-iso-f",
        "https://api.ecr.us-isof-south-1.csp.hci.ic.gov"
    )]
    #[case::iso_fips(
        "123456789012.dkr.ecr-fips.us-iso-west-1.c2s.ic.gov",
        "us-iso-west-1",
        true,
        false,
        "aws-iso",
        "https://api.ecr-fips.us-iso-west-1.c2s.ic.gov"
    )]
    fn parses(
        #[case] host: &str,
        #[case] region: &str,
        #[case] fips: bool,
        #[case] dual_stack: bool,
        #[case] partition: &str,
        #[case] api: &str,
    ) {
        let r = EcrRegistry::parse(host).expect("an ECR host");
        assert_eq!(r.account, "123456789012");
        assert_eq!(r.region, region);
        assert_eq!(r.fips, fips);
        assert_eq!(r.dual_stack, dual_stack);
        assert_eq!(r.partition, partition);
        assert_eq!(r.api_endpoint(), api);
        assert_eq!(r.host, host);
        assert_eq!(r.to_string(), host);
    }

    /// Look-alikes of the newer shapes: wrong label for the domain, a
    /// region of another partition, suffix tricks, extra labels.
    #[rstest]
    #[case::dual_stack_label_on_ipv4_domain(
        "123456789012.dkr-ecr.eu-west-1.amazonaws.com",
        "expected"
    )]
    #[case::ipv4_label_on_dual_stack_domain("123456789012.dkr.ecr.eu-west-1.on.aws", "expected")]
    #[case::dual_stack_extra_label("123456789012.x.dkr-ecr.eu-west-1.on.aws", "expected")]
    #[case::dual_stack_bad_account("12345678901x.dkr-ecr.eu-west-1.on.aws", "12 digits")]
    #[case::dual_stack_china_region_on_aws("123456789012.dkr-ecr.cn-north-1.on.aws", "partition")]
    #[case::on_aws_lookalike("123456789012.dkr-ecr.eu-west-1.on.aws.evil.example", "not under")]
    #[case::on_aws_glued("123456789012.dkr-ecr.eu-west-1.notaws", "not under")]
    #[case::eu_with_commercial_region("123456789012.dkr.ecr.eu-west-1.amazonaws.eu", "partition")]
    #[case::sovereign_region_on_com(
        "123456789012.dkr.ecr.eusc-de-east-1.amazonaws.com",
        "partition"
    )]
    #[case::iso_region_on_com("123456789012.dkr.ecr.us-iso-east-1.amazonaws.com", "partition")]
    #[case::iso_b_region_on_iso("123456789012.dkr.ecr.us-isob-east-1.c2s.ic.gov", "partition")]
    #[case::iso_region_on_iso_f("123456789012.dkr.ecr.us-iso-east-1.csp.hci.ic.gov", "partition")]
    #[case::iso_glued_suffix("123456789012.dkr.ecr.us-iso-east-1.xc2s.ic.gov", "not under")]
    #[case::iso_lookalike("123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov.example", "not under")]
    #[case::adc_e_lookalike("123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk.co", "not under")]
    #[case::bare_suffix("on.aws", "not under")]
    #[case::region_word_too_long("123456789012.dkr.ecr.europe-west-1.amazonaws.com", "region")]
    fn rejects_new_shapes(#[case] host: &str, #[case] reason: &str) {
        let e = EcrRegistry::parse(host).expect_err("not an ECR host");
        assert!(e.reason.contains(reason), "{host}: {}", e.reason);
    }

    #[rstest]
    #[case::public("public.ecr.aws", Some("public.ecr.aws"))]
    #[case::dual_stack("ecr-public.aws.com", Some("ecr-public.aws.com"))]
    #[case::port("public.ecr.aws:443", None)]
    #[case::subdomain("x.public.ecr.aws", None)]
    #[case::lookalike("public.ecr.aws.evil.example", None)]
    #[case::glued("notpublic.ecr.aws", None)]
    #[case::private("123456789012.dkr.ecr.us-east-1.amazonaws.com", None)]
    fn ecr_public_hosts(#[case] host: &str, #[case] want: Option<&str>) {
        assert_eq!(ecr_public_host(host), want);
        if want.is_some() {
            assert!(
                EcrRegistry::parse(host).is_err(),
                "public hosts are not private ECR"
            );
        }
    }

    #[test]
    fn every_shape_is_reachable_and_suffixes_are_distinct() {
        let suffixes: std::collections::BTreeSet<_> =
            HOST_SHAPES.iter().map(|s| s.suffix).collect();
        assert_eq!(suffixes.len(), HOST_SHAPES.len());
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
    #[case::other_region_on_cn("123456789012.dkr.ecr.eu-west-1.amazonaws.com.cn", "partition")]
    #[case::trailing_dot("123456789012.dkr.ecr.eu-west-1.amazonaws.com.", "not under")]
    #[case::empty("", "not under")]
    fn rejects(#[case] host: &str, #[case] reason: &str) {
        let e = EcrRegistry::parse(host).expect_err("not an ECR host");
        assert!(e.reason.contains(reason), "{host}: {}", e.reason);
        assert!(e.to_string().contains(host));
    }
}
