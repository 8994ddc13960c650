//! The partition facts pullauth keeps in tables of its own
//! (`pullauth_resolve::ecr::HOST_SHAPES`, whose partitions also name the
//! ARNs of S3's access-denied hints, and the partitions' DNS suffixes,
//! `pullauth_resolve::partition_dns_suffix`, by which S3 calls refuse FIPS
//! in aws-cn before they are made), held
//! against the endpoint resolver of the aws-sdk-ecr this build links: for
//! every row, a region of each of its partitions, with and without FIPS,
//! the ECR API endpoint pullauth calls must be the one the SDK's own
//! endpoint rules give, and FIPS must be refused exactly where the SDK has
//! no FIPS endpoint. An SDK update that disagrees fails here.

#[cfg(test)]
mod tests {
    use aws_sdk_ecr::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
    use pullauth_resolve::EcrRegistry;
    use pullauth_resolve::ecr::HOST_SHAPES;

    /// A region of each partition (aws-us-gov shares aws's rows).
    const REGIONS: [(&str, &str); 9] = [
        ("aws", "us-east-1"),
        ("aws", "ap-southeast-5"),
        ("aws-us-gov", "us-gov-west-1"),
        ("aws-cn", "cn-north-1"),
        ("aws-eusc", "eusc-de-east-1"),
        ("aws-iso", "us-iso-east-1"),
        ("aws-iso-b", "us-isob-east-1"),
        ("aws-iso-e", "eu-isoe-west-1"),
        ("aws-iso-f", "us-isof-south-1"),
    ];

    /// What the linked SDK's endpoint rules give ECR in `region`, or why not.
    async fn sdk_endpoint(region: &str, fips: bool, dual_stack: bool) -> Result<String, String> {
        let params = Params::builder()
            .region(region)
            .use_fips(fips)
            .use_dual_stack(dual_stack)
            .build()
            .expect("valid parameters");
        DefaultResolver::new()
            .resolve_endpoint(&params)
            .await
            .map(|endpoint| endpoint.url().to_owned())
            .map_err(|e| e.to_string())
    }

    /// The registry host of `shape` for `region`.
    fn host(suffix: &str, dual_stack: bool, fips: bool, region: &str) -> String {
        let fips = if fips { "-fips" } else { "" };
        if dual_stack {
            format!("123456789012.dkr-ecr{fips}.{region}.{suffix}")
        } else {
            format!("123456789012.dkr.ecr{fips}.{region}.{suffix}")
        }
    }

    #[tokio::test]
    async fn every_host_shape_calls_the_endpoint_the_sdk_resolves() {
        let mut checked = 0;
        let mut problems = Vec::new();
        for shape in &HOST_SHAPES {
            let regions = REGIONS.iter().filter(|(partition, _)| {
                *partition == shape.partition
                    || (shape.partition == "aws" && *partition == "aws-us-gov")
            });
            for (partition, region) in regions {
                for fips in [false, true] {
                    let host = host(shape.suffix, shape.dual_stack, fips, region);
                    let sdk = sdk_endpoint(region, fips, shape.dual_stack).await;
                    checked += 1;
                    match (EcrRegistry::parse(&host), sdk) {
                        (Ok(registry), Ok(sdk)) => {
                            if registry.api_endpoint() != sdk || registry.partition != *partition {
                                problems.push(format!(
                                    "{host}: pullauth calls {} ({}), the SDK resolves {sdk} ({partition})",
                                    registry.api_endpoint(),
                                    registry.partition
                                ));
                            }
                        }
                        (Err(refused), Ok(sdk)) => problems.push(format!(
                            "{host}: pullauth refuses it ({}), the SDK resolves {sdk}",
                            refused.reason
                        )),
                        (Ok(registry), Err(sdk)) => problems.push(format!(
                            "{host}: pullauth calls {}, the SDK has no such endpoint ({sdk})",
                            registry.api_endpoint()
                        )),
                        (Err(_), Err(_)) => {}
                    }
                }
            }
        }
        assert!(checked >= 20, "{checked}");
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// The DNS suffix S3's endpoints are built on, per partition.
    #[tokio::test]
    async fn partition_dns_suffixes_are_the_sdks() {
        for (_, region) in REGIONS {
            let sdk = sdk_endpoint(region, false, false).await.expect("resolves");
            let prefix = format!("https://api.ecr.{region}.");
            let suffix = sdk.strip_prefix(&prefix).unwrap_or_else(|| panic!("{sdk}"));
            assert_eq!(
                pullauth_resolve::partition_dns_suffix(region),
                suffix,
                "{region}"
            );
        }
    }
}
