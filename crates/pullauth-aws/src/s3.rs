//! Env files in S3: `s3://bucket/key` locations, and the one call that
//! reads them, `s3:GetObject`.
//!
//! The call is made without the generated S3 client (`aws-sdk-s3`, the
//! largest crate of the build, for one operation). It runs on the SDK's own
//! machinery instead: the smithy orchestrator ([`Operation`]) with the
//! configuration's HTTP client, timeouts and standard retries, and SigV4
//! from the SDK's `aws-sigv4` with S3's settings (single URI encoding, no
//! path normalization, `x-amz-content-sha256`). What is written here is
//! only what the generated client would have derived from S3's model: the
//! URL of the object (see [`ObjectAddress`]) and the code and message of
//! S3's XML errors.

use std::fmt;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_runtime::retries::classifiers::AwsErrorCodeClassifier;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_smithy_http::label::{EncodingStrategy, fmt_string};
use aws_smithy_runtime::client::orchestrator::operation::Operation;
use aws_smithy_runtime::client::retries::classifiers::{
    HttpStatusCodeClassifier, TransientErrorClassifier,
};
use aws_smithy_runtime::client::stalled_stream_protection::StalledStreamProtectionInterceptor;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextMut, Error, Output,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse, OrchestratorError};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::client::ser_de::DeserializeResponse;
use aws_smithy_runtime_api::client::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::ErrorMetadata;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use secrecy::zeroize::Zeroizing;

use crate::client::{MAX_OBJECT_BYTES, Principal};
use crate::error::Call;
use crate::{Aws, AwsError};

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
        if bucket.ends_with("--x-s3") {
            return Err(fail(
                "directory buckets (S3 Express One Zone, --x-s3) are not supported: keep the env file in a general purpose bucket",
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

/// Where `s3:GetObject` of an object is sent: the endpoint (scheme and
/// host, plus the path of an endpoint override) and the object's path on
/// it, percent-encoded as S3 expects.
///
/// The rules are those of the SDK's S3 endpoint rules for a plain bucket
/// (no ARNs, access points or directory buckets; [`S3Location`] refuses
/// them):
/// - virtual-hosted style, `https://<bucket>.s3.<region>.<suffix>/<key>`
///   (`s3-fips`, `s3.dualstack`, `s3-fips.dualstack` as configured);
/// - path style, `https://s3.<region>.<suffix>/<bucket>/<key>`, for bucket
///   names with dots (a dotted name does not match the `*.s3` wildcard
///   certificate);
/// - with an endpoint override (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`):
///   `<scheme>://<bucket>.<host>/<key>`, or path style when the host is an
///   IP address (moto, a local MinIO) or the bucket has dots.
///
/// Like the SDK, it refuses what cannot name an endpoint: a region that
/// is not a DNS label, FIPS in a partition without FIPS endpoints, an
/// override combined with FIPS or dual-stack, and an override that is not
/// an `http`/`https` URL of a host (with no user info or query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectAddress {
    pub(crate) endpoint: String,
    pub(crate) path: String,
}

/// How the endpoint of [`ObjectAddress::new`] is chosen.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EndpointChoice<'a> {
    /// An endpoint override, as configured.
    pub(crate) endpoint_override: Option<&'a str>,
    pub(crate) fips: bool,
    pub(crate) dual_stack: bool,
}

/// What [`AwsError::Invalid`] calls the endpoint override.
const OVERRIDE: &str = "S3 endpoint override (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL)";

/// An endpoint URL as messages may quote it: scheme, host, port and path,
/// without user info (`user:password@`) or query and fragment (a presigned
/// URL's `X-Amz-Security-Token=...`), which say they were left out.
pub(crate) fn shown_endpoint(url: &str) -> String {
    let (base, cut) = match url.find(['?', '#']) {
        Some(at) => (&url[..at], "?<query not shown>"),
        None => (url, ""),
    };
    let (scheme, rest) = match base.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), base),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("<user info not shown>@{host}"),
        None => authority.to_owned(),
    };
    format!("{scheme}{authority}{path}{cut}")
}

/// Whether `region` can stand in a host name: one DNS label of `a-z0-9-`,
/// as the SDK's rules check it (`isValidHostLabel`).
fn is_host_label(region: &str) -> bool {
    (1..=63).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-')
}

impl ObjectAddress {
    pub(crate) fn new(
        location: &S3Location,
        region: &str,
        choice: EndpointChoice<'_>,
    ) -> Result<ObjectAddress, AwsError> {
        let invalid = |what, value: &str, problem| AwsError::Invalid {
            what,
            value: value.to_string(),
            problem,
        };
        // The override as errors quote it (no user info, no query).
        let shown = choice.endpoint_override.map(shown_endpoint);
        let shown = shown.as_deref().unwrap_or_default();
        if !is_host_label(region) {
            return Err(invalid(
                "AWS region",
                region,
                "not a region name (a-z, 0-9 and -, as in eu-west-1): check AWS_REGION",
            ));
        }
        let key = fmt_string(&location.key, EncodingStrategy::Greedy);
        let dotted = location.bucket.contains('.');
        let (scheme, host, base_path) = match choice.endpoint_override {
            Some(url) => {
                if choice.fips {
                    return Err(invalid(
                        OVERRIDE,
                        shown,
                        "a custom endpoint cannot be combined with FIPS (AWS_USE_FIPS_ENDPOINT)",
                    ));
                }
                if choice.dual_stack {
                    return Err(invalid(
                        OVERRIDE,
                        shown,
                        "a custom endpoint cannot be combined with dual-stack (AWS_USE_DUALSTACK_ENDPOINT)",
                    ));
                }
                let uri: http::Uri = url.parse().map_err(|_| {
                    invalid(
                        OVERRIDE,
                        shown,
                        "not a URL (expected http(s)://host[:port][/path])",
                    )
                })?;
                let Some(authority) = uri.authority() else {
                    return Err(invalid(
                        OVERRIDE,
                        shown,
                        "no host (expected http(s)://host[:port][/path])",
                    ));
                };
                if authority.as_str().contains('@') {
                    // Quoted without it: the user info may hold a password.
                    return Err(invalid(
                        OVERRIDE,
                        shown,
                        "user info (user:password@) is not allowed in an endpoint URL",
                    ));
                }
                let scheme = match uri.scheme_str() {
                    Some(scheme @ ("http" | "https")) => scheme,
                    _ => {
                        return Err(invalid(OVERRIDE, shown, "the scheme must be http or https"));
                    }
                };
                if uri.query().is_some() {
                    return Err(invalid(OVERRIDE, shown, "a query string is not allowed"));
                }
                (
                    scheme.to_string(),
                    authority.as_str().to_string(),
                    uri.path().trim_end_matches('/').to_string(),
                )
            }
            None => {
                let suffix = pullauth_resolve::partition_dns_suffix(region);
                if choice.fips && suffix == "amazonaws.com.cn" {
                    return Err(invalid(
                        "AWS region",
                        region,
                        "the aws-cn partition has no FIPS endpoints: unset AWS_USE_FIPS_ENDPOINT",
                    ));
                }
                let service = match (choice.fips, choice.dual_stack) {
                    (false, false) => "s3",
                    (true, false) => "s3-fips",
                    (false, true) => "s3.dualstack",
                    (true, true) => "s3-fips.dualstack",
                };
                (
                    "https".to_string(),
                    format!("{service}.{region}.{suffix}"),
                    String::new(),
                )
            }
        };
        let is_ip = {
            let name = host.rsplit_once(':').map_or(host.as_str(), |(name, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    name
                } else {
                    host.as_str()
                }
            });
            name.starts_with('[') || name.parse::<std::net::Ipv4Addr>().is_ok()
        };
        Ok(if dotted || is_ip {
            ObjectAddress {
                endpoint: format!("{scheme}://{host}{base_path}"),
                path: format!("/{}/{key}", location.bucket),
            }
        } else {
            ObjectAddress {
                endpoint: format!("{scheme}://{}.{host}{base_path}", location.bucket),
                path: format!("/{key}"),
            }
        })
    }
}

/// The code and message of an S3 XML error body
/// (`<Error><Code>NoSuchKey</Code><Message>...</Message>...</Error>`).
/// Nothing else of the body is kept: a `SignatureDoesNotMatch` answer
/// also carries the string that was signed.
fn error_metadata(status: u16, bucket_region: Option<&str>, body: &[u8]) -> ErrorMetadata {
    let mut builder = ErrorMetadata::builder().custom("status", status.to_string());
    if let Some(region) = bucket_region {
        builder = builder.custom("bucket_region", region);
    }
    let Ok(mut document) = aws_smithy_xml::decode::Document::try_from(body) else {
        return builder.build();
    };
    let Ok(mut root) = document.root_element() else {
        return builder.build();
    };
    if !root.start_el().matches("Error") {
        return builder.build();
    }
    while let Some(mut tag) = root.next_tag() {
        let name = tag.start_el().local().to_string();
        let Ok(text) = aws_smithy_xml::decode::try_data(&mut tag) else {
            continue;
        };
        match name.as_str() {
            "Code" => builder = builder.code(text.into_owned()),
            "Message" => builder = builder.message(text.into_owned()),
            _ => {}
        }
    }
    builder.build()
}

/// The most of an error answer's body that is read (S3's XML error
/// documents are well under 1 KiB).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A `GetObject` answer: the body, not yet read.
#[derive(Debug)]
struct Object {
    length: Option<u64>,
    body: ByteStream,
}

/// Hands a success's body over unread (so that [`Aws::get_object`] reads
/// no further than its limit); reads an error's body into
/// [`ErrorMetadata`].
#[derive(Debug)]
struct ObjectDeserializer;

impl DeserializeResponse for ObjectDeserializer {
    fn deserialize_streaming(
        &self,
        response: &mut HttpResponse,
    ) -> Option<Result<Output, OrchestratorError<Error>>> {
        if !response.status().is_success() {
            // The orchestrator reads an error's body whole before handing
            // it to `deserialize_nonstreaming`: bounded, so that an endpoint
            // streaming an endless error body fails the read instead of
            // filling memory. S3's error documents are a few hundred bytes.
            let body = std::mem::replace(response.body_mut(), SdkBody::taken());
            *response.body_mut() =
                SdkBody::from_body_1_x(http_body_util::Limited::new(body, MAX_ERROR_BODY));
            return None;
        }
        let length = response
            .headers()
            .get("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        let body = std::mem::replace(response.body_mut(), SdkBody::taken());
        Some(Ok(Output::erase(Object {
            length,
            body: ByteStream::new(body),
        })))
    }

    fn deserialize_nonstreaming(
        &self,
        response: &HttpResponse,
    ) -> Result<Output, OrchestratorError<Error>> {
        let metadata = error_metadata(
            response.status().as_u16(),
            response.headers().get("x-amz-bucket-region"),
            response.body().bytes().unwrap_or_default(),
        );
        Err(OrchestratorError::operation(Error::erase(metadata)))
    }
}

/// Signs each attempt's request just before it is sent (SigV4, S3's
/// settings), with credentials resolved before the call.
struct SignForS3 {
    credentials: Credentials,
    region: String,
}

impl fmt::Debug for SignForS3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignForS3")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// The `User-Agent` of the S3 call (the generated clients send the SDK's).
const USER_AGENT: &str = concat!("pullauth/", env!("CARGO_PKG_VERSION"));

/// Headers a signature adds; a retried attempt's request is signed anew.
const SIGNATURE_HEADERS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
];

impl Intercept for SignForS3 {
    fn name(&self) -> &'static str {
        "SignForS3"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let now = components
            .time_source()
            .map_or_else(SystemTime::now, |clock| clock.now());
        sign_for_s3(context.request_mut(), &self.credentials, &self.region, now)
    }
}

/// Signs `request` for S3 in `region` as of `now`: SigV4 with S3's
/// settings (the path encoded once, not normalized; `x-amz-content-sha256`
/// of the empty body). Any earlier signature is replaced. The SDK's
/// orchestrator logs requests at `trace`, session token included, as it
/// does for the generated clients (its `Headers` keep no sensitive flag):
/// one more reason the binary caps the SDK's targets below `trace`
/// ([`crate::SDK_MAX_SAFE_LEVEL`]).
fn sign_for_s3(
    request: &mut HttpRequest,
    credentials: &Credentials,
    region: &str,
    now: SystemTime,
) -> Result<(), BoxError> {
    for name in SIGNATURE_HEADERS {
        request.headers_mut().remove(name);
    }
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("s3")
        .time(now)
        .settings(settings)
        .build()?
        .into();
    let (headers, _query) = {
        let signable = SignableRequest::new(
            request.method(),
            request.uri(),
            request.headers().iter(),
            SignableBody::Bytes(&[]),
        )?;
        sign(signable, &params)?.into_parts().0.into_parts()
    };
    for header in headers {
        request
            .headers_mut()
            .insert(header.name(), header.value().to_string());
    }
    Ok(())
}

impl Aws {
    /// The content of an S3 object (an `--env-file s3://bucket/key`), read
    /// with the default chain, at most [`MAX_OBJECT_BYTES`], within the
    /// operation timeout (credentials, every attempt and the body).
    ///
    /// The region is the configured one. When S3 answers that the bucket
    /// lives in another region (`x-amz-bucket-region`, as on a 301
    /// `PermanentRedirect`), the call is made once more there.
    pub async fn get_object(&self, location: &S3Location) -> Result<Zeroizing<Vec<u8>>, AwsError> {
        let call = Call {
            operation: "s3:GetObject",
            target: location.to_string(),
            principal: Principal::Default.to_string(),
        };
        let limit = self.inner.options.operation_timeout;
        let result = match tokio::time::timeout(limit, self.get_object_inner(location, &call)).await
        {
            Ok(result) => result,
            Err(_) => Err(AwsError::Timeout {
                call,
                limits: self.time_limits(),
            }),
        };
        self.counted(result)
    }

    async fn get_object_inner(
        &self,
        location: &S3Location,
        call: &Call,
    ) -> Result<Zeroizing<Vec<u8>>, AwsError> {
        let config = &self.inner.config;
        // What the configuration gets wrong is said before any call.
        let Some(region) = config.region().map(|r| r.as_ref().to_string()) else {
            return Err(AwsError::Invalid {
                what: "S3 location",
                value: location.to_string(),
                problem: "no AWS region is configured: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region) to the bucket's region",
            });
        };
        let address = self.object_address(location, &region)?;
        // The endpoint last called, for an unreachable one's message.
        let mut endpoint = address.endpoint.clone();
        let no_credentials = |detail: String| AwsError::NoCredentials {
            call: call.clone(),
            detail,
        };
        let Some(provider) = config.credentials_provider() else {
            return Err(no_credentials(
                "no credential provider is configured".into(),
            ));
        };
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| no_credentials(crate::client::chain(&e)))?;
        self.inner.counters.add(&self.inner.counters.object_fetches);
        let mut result = self
            .send_get_object(address, &region, credentials.clone())
            .await;
        // S3 names the bucket's region on a wrong-region answer (a 301
        // PermanentRedirect): read it there, once. A name that could not
        // be a region is not followed.
        if let Err(SdkError::ServiceError(e)) = &result
            && let Some(other) = e.err().extra("bucket_region")
            && other != region
            && let Ok(there) = self.object_address(location, other)
        {
            let other = other.to_string();
            tracing::info!(
                location = %location,
                region = %region,
                bucket_region = %other,
                "the bucket is in another region; reading it there"
            );
            endpoint = there.endpoint.clone();
            result = self.send_get_object(there, &other, credentials).await;
        }
        let object = result.map_err(|e| match &e {
            SdkError::ServiceError(service)
                if service.err().code() == Some("PermanentRedirect")
                    || service.raw().status().as_u16() == 301 =>
            {
                let named = service
                    .err()
                    .extra("bucket_region")
                    .map(|r| format!(" (S3 names {r})"))
                    .unwrap_or_default();
                AwsError::Service {
                    call: call.clone(),
                    code: "PermanentRedirect".into(),
                    message: format!(
                        "the bucket is not in region {region}{named}: set AWS_REGION to the bucket's region"
                    ),
                }
            }
            _ => self.sdk_error(call.clone(), e, |code| match code {
                "NoSuchBucket" => Some(format!("no such bucket {:?}", location.bucket)),
                "NoSuchKey" => Some(format!(
                    "no such key {:?} in bucket {:?}",
                    location.key, location.bucket
                )),
                _ => None,
            }),
        });
        let object = object.map_err(|e| e.at_endpoint(&endpoint))?;
        let bad = |problem: String| AwsError::BadResponse {
            call: call.clone(),
            problem,
        };
        if let Some(length) = object.length
            && length > MAX_OBJECT_BYTES
        {
            return Err(bad(format!(
                "the object has {length} bytes, more than the {MAX_OBJECT_BYTES} allowed"
            )));
        }
        // Read chunk by chunk, and stop one byte past the limit: a body
        // without a length (chunked) is never read in full to learn that
        // it is too large.
        let mut body = object.body;
        // Room for the whole limit up front: growing would leave copies of
        // the content behind that are never zeroized.
        let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_OBJECT_BYTES as usize));
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|_| AwsError::Unreachable {
                call: call.clone(),
                detail: "the connection failed while reading the object".into(),
            })?;
            if (bytes.len() + chunk.len()) as u64 > MAX_OBJECT_BYTES {
                return Err(bad(format!(
                    "the object is larger than {MAX_OBJECT_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// Where `location` is read in `region`, as configured.
    fn object_address(
        &self,
        location: &S3Location,
        region: &str,
    ) -> Result<ObjectAddress, AwsError> {
        let config = &self.inner.config;
        let endpoint_override = self.endpoint_override("S3");
        ObjectAddress::new(
            location,
            region,
            EndpointChoice {
                endpoint_override: endpoint_override.as_deref(),
                fips: config.use_fips().unwrap_or(false),
                dual_stack: config.use_dual_stack().unwrap_or(false),
            },
        )
    }

    /// One `s3:GetObject` of `address`, signed for `region`, retried as the
    /// configuration says.
    async fn send_get_object(
        &self,
        address: ObjectAddress,
        region: &str,
        credentials: Credentials,
    ) -> Result<Object, SdkError<ErrorMetadata, HttpResponse>> {
        let config = &self.inner.config;
        let Some(http_client) = config.http_client() else {
            return Err(SdkError::construction_failure(
                "no HTTP client is configured",
            ));
        };
        let mut operation = Operation::builder()
            .service_name("s3")
            .operation_name("GetObject")
            .http_client(http_client)
            .endpoint_url(&address.endpoint)
            .no_auth()
            .standard_retry(
                &config
                    .retry_config()
                    .cloned()
                    .unwrap_or_else(RetryConfig::standard),
            )
            .retry_classifier(HttpStatusCodeClassifier::default())
            .retry_classifier(TransientErrorClassifier::<ErrorMetadata>::new())
            .retry_classifier(AwsErrorCodeClassifier::<ErrorMetadata>::new())
            .timeout_config(
                config
                    .timeout_config()
                    .cloned()
                    .unwrap_or_else(TimeoutConfig::disabled),
            )
            .with_connection_poisoning()
            // As the generated client: a body that stops flowing fails after
            // the grace period (5 s), not at the operation's end.
            .stalled_stream_protection(StalledStreamProtectionConfig::enabled().build())
            .interceptor(StalledStreamProtectionInterceptor::default())
            .interceptor(SignForS3 {
                credentials,
                region: region.to_string(),
            });
        if let Some(sleep) = config.sleep_impl() {
            operation = operation.sleep_impl(sleep);
        }
        if let Some(clock) = config.time_source() {
            operation = operation.time_source(clock);
        }
        operation
            .serializer(|path: String| {
                Ok(HttpRequest::try_from(
                    http::Request::builder()
                        .method("GET")
                        .uri(path)
                        // S3 server access logs and CloudTrail name the caller.
                        .header("user-agent", USER_AGENT)
                        .body(SdkBody::empty())?,
                )?)
            })
            .deserializer_impl::<Object, ErrorMetadata>(ObjectDeserializer)
            .build()
            .invoke(address.path)
            .await
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

    fn address(url: &str, region: &str, choice: EndpointChoice<'_>) -> (String, String) {
        let location = S3Location::parse(url).expect("valid");
        let a = ObjectAddress::new(&location, region, choice).expect("an address");
        (a.endpoint, a.path)
    }

    #[rstest]
    #[case::virtual_hosted(
        "s3://env-files/ecs.config",
        "eu-west-1",
        false,
        false,
        "https://env-files.s3.eu-west-1.amazonaws.com",
        "/ecs.config"
    )]
    #[case::dotted_bucket_path_style(
        "s3://env.example.com/dir/ecs.config",
        "eu-west-1",
        false,
        false,
        "https://s3.eu-west-1.amazonaws.com",
        "/env.example.com/dir/ecs.config"
    )]
    #[case::fips(
        "s3://env-files/ecs.config",
        "us-gov-west-1",
        true,
        false,
        "https://env-files.s3-fips.us-gov-west-1.amazonaws.com",
        "/ecs.config"
    )]
    #[case::dual_stack(
        "s3://env-files/ecs.config",
        "eu-west-1",
        false,
        true,
        "https://env-files.s3.dualstack.eu-west-1.amazonaws.com",
        "/ecs.config"
    )]
    #[case::fips_dual_stack(
        "s3://env-files/ecs.config",
        "us-east-1",
        true,
        true,
        "https://env-files.s3-fips.dualstack.us-east-1.amazonaws.com",
        "/ecs.config"
    )]
    #[case::china(
        "s3://env-files/ecs.config",
        "cn-north-1",
        false,
        false,
        "https://env-files.s3.cn-north-1.amazonaws.com.cn",
        "/ecs.config"
    )]
    #[case::iso_b(
        "s3://env-files/ecs.config",
        "us-isob-east-1",
        false,
        false,
        "https://env-files.s3.us-isob-east-1.sc2s.sgov.gov",
        "/ecs.config"
    )]
    // Greedy label encoding, as the SDK encodes GetObject's Key: '/' kept,
    // everything outside the unreserved set percent-encoded once.
    #[case::key_encoding(
        "s3://env-files/a b/ü+c~d.env",
        "eu-west-1",
        false,
        false,
        "https://env-files.s3.eu-west-1.amazonaws.com",
        "/a%20b/%C3%BC%2Bc~d.env"
    )]
    fn aws_endpoints(
        #[case] url: &str,
        #[case] region: &str,
        #[case] fips: bool,
        #[case] dual_stack: bool,
        #[case] endpoint: &str,
        #[case] path: &str,
    ) {
        let choice = EndpointChoice {
            endpoint_override: None,
            fips,
            dual_stack,
        };
        assert_eq!(
            address(url, region, choice),
            (endpoint.to_string(), path.to_string())
        );
    }

    #[rstest]
    #[case::ip_is_path_style(
        "http://127.0.0.1:5000",
        "s3://env-files/k",
        "http://127.0.0.1:5000",
        "/env-files/k"
    )]
    #[case::ipv6_is_path_style(
        "http://[::1]:5000",
        "s3://env-files/k",
        "http://[::1]:5000",
        "/env-files/k"
    )]
    #[case::host_is_virtual_hosted(
        "https://minio.internal:9000",
        "s3://env-files/k",
        "https://env-files.minio.internal:9000",
        "/k"
    )]
    #[case::host_with_dotted_bucket(
        "https://minio.internal",
        "s3://a.b.c/k",
        "https://minio.internal",
        "/a.b.c/k"
    )]
    #[case::base_path_kept(
        "https://proxy.internal/s3/",
        "s3://env-files/k",
        "https://env-files.proxy.internal/s3",
        "/k"
    )]
    fn endpoint_overrides(
        #[case] endpoint_override: &str,
        #[case] url: &str,
        #[case] endpoint: &str,
        #[case] path: &str,
    ) {
        let choice = EndpointChoice {
            endpoint_override: Some(endpoint_override),
            ..EndpointChoice::default()
        };
        assert_eq!(
            address(url, "eu-west-1", choice),
            (endpoint.to_string(), path.to_string())
        );
    }

    #[rstest]
    #[case::not_a_url(Some("not a url"), false, false, "eu-west-1", "not a URL")]
    #[case::no_host(Some("/just/a/path"), false, false, "eu-west-1", "no host")]
    #[case::other_scheme(
        Some("ftp://files.internal"),
        false,
        false,
        "eu-west-1",
        "http or https"
    )]
    #[case::query(Some("https://s3.internal/?x=1"), false, false, "eu-west-1", "query")]
    #[case::override_and_fips(Some("https://s3.internal"), true, false, "eu-west-1", "FIPS")]
    #[case::override_and_dual_stack(
        Some("https://s3.internal"),
        false,
        true,
        "eu-west-1",
        "dual-stack"
    )]
    #[case::region_not_a_label(None, false, false, "eu west 1", "not a region name")]
    #[case::region_a_host(None, false, false, "evil.example/", "not a region name")]
    #[case::fips_in_china(None, true, false, "cn-north-1", "no FIPS endpoints")]
    fn what_cannot_name_an_endpoint_is_refused(
        #[case] endpoint_override: Option<&str>,
        #[case] fips: bool,
        #[case] dual_stack: bool,
        #[case] region: &str,
        #[case] problem: &str,
    ) {
        let location = S3Location::parse("s3://env-files/k").expect("valid");
        let choice = EndpointChoice {
            endpoint_override,
            fips,
            dual_stack,
        };
        let e = ObjectAddress::new(&location, region, choice).expect_err("refused");
        assert_eq!(e.class(), crate::ErrorClass::Invalid, "{e}");
        assert!(e.to_string().contains(problem), "{e}");
    }

    #[rstest]
    #[case::plain("https://s3.internal:9000/base", "https://s3.internal:9000/base")]
    #[case::query(
        "https://s3.internal/?X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE",
        "https://s3.internal/?<query not shown>"
    )]
    #[case::user_info(
        "http://admin:hunter2@10.0.0.5:9000",
        "http://<user info not shown>@10.0.0.5:9000"
    )]
    #[case::fragment("https://h/p#token=x", "https://h/p?<query not shown>")]
    #[case::not_a_url(
        "admin:hunter2@host?k=v",
        "<user info not shown>@host?<query not shown>"
    )]
    fn endpoints_are_shown_without_user_info_or_query(#[case] url: &str, #[case] shown: &str) {
        assert_eq!(shown_endpoint(url), shown);
    }

    // Regression (issue 25): an override's query string was quoted whole
    // in the error (`?X-Amz-Security-Token=...`). Every refusal of an
    // override quotes its host, never its user info or query.
    #[rstest]
    #[case::query("https://s3.internal/?X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE", false)]
    #[case::scheme_and_query("ftp://s3.internal/?X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE", false)]
    #[case::fips_and_query("https://s3.internal/?X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE", true)]
    #[case::user_info_and_query("https://a:FwoGZXIvYXdzEXAMPLE@s3.internal/?t=1", false)]
    fn refused_overrides_are_quoted_without_secrets(#[case] url: &str, #[case] fips: bool) {
        let location = S3Location::parse("s3://env-files/k").expect("valid");
        let choice = EndpointChoice {
            endpoint_override: Some(url),
            fips,
            dual_stack: false,
        };
        let e = ObjectAddress::new(&location, "eu-west-1", choice).expect_err("refused");
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("FwoGZXIvYXdzEXAMPLE"), "{shown}");
        assert!(shown.contains("s3.internal"), "{shown}");
    }

    #[test]
    fn an_override_with_user_info_is_refused_without_quoting_it() {
        let location = S3Location::parse("s3://env-files/k").expect("valid");
        let choice = EndpointChoice {
            endpoint_override: Some("https://admin:hunter2@minio.internal"),
            ..EndpointChoice::default()
        };
        let e = ObjectAddress::new(&location, "eu-west-1", choice).expect_err("refused");
        assert!(e.to_string().contains("user info"), "{e}");
        assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");
    }

    #[test]
    fn a_signature_covers_the_session_token_and_is_replaced_when_signed_again() {
        let mut request = HttpRequest::try_from(
            http::Request::builder()
                .method("GET")
                .uri("https://env-files.s3.eu-west-1.amazonaws.com/dir/a%20b.env")
                .body(SdkBody::empty())
                .expect("request"),
        )
        .expect("request");
        let credentials = Credentials::new(
            "ASIAEXAMPLE",
            "secret-key-never-shown",
            Some("session-token-never-shown".into()),
            None,
            "test",
        );
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_720_000);
        sign_for_s3(&mut request, &credentials, "eu-west-1", at).expect("signed");
        // Signed twice (a retried attempt): replaced, not repeated.
        sign_for_s3(&mut request, &credentials, "eu-west-1", at).expect("signed again");
        let headers = request.headers();
        assert_eq!(headers.get_all("authorization").count(), 1, "one signature");
        let auth = headers.get("authorization").expect("authorization");
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20251203/eu-west-1/s3/aws4_request, "
            ),
            "{auth}"
        );
        assert!(
            auth.contains(
                "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
            ),
            "{auth}"
        );
        assert_eq!(
            headers.get("x-amz-security-token"),
            Some("session-token-never-shown")
        );
        assert_eq!(
            headers.get("x-amz-content-sha256"),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(headers.get("x-amz-date"), Some("20251203T000000Z"));
        assert!(!format!("{request:?}").contains("secret-key-never-shown"));
    }

    #[test]
    fn s3_error_bodies_give_their_code_and_message_only() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message><AWSAccessKeyId>AKIDEXAMPLE</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256 secret-ish</StringToSign><RequestId>4442587FB7D0A2F9</RequestId></Error>"#;
        let e = error_metadata(403, None, body);
        assert_eq!(e.code(), Some("SignatureDoesNotMatch"));
        assert!(
            e.message()
                .is_some_and(|m| m.starts_with("The request signature"))
        );
        assert!(!format!("{e} {e:?}").contains("secret-ish"));

        let e = error_metadata(301, Some("eu-central-1"), b"");
        assert_eq!(e.code(), None);
        assert_eq!(e.extra("bucket_region"), Some("eu-central-1"));
        assert_eq!(e.extra("status"), Some("301"));

        for junk in [
            &b"<html>Bad gateway</html>"[..],
            b"{\"json\": 1}",
            b"\xff\xfe",
        ] {
            let e = error_metadata(502, None, junk);
            assert_eq!((e.code(), e.message()), (None, None));
        }
    }

    #[rstest]
    #[case::no_scheme("my-bucket/key", "expected")]
    #[case::https("https://my-bucket.s3.amazonaws.com/key", "expected")]
    #[case::no_key("s3://my-bucket", "expected")]
    #[case::empty_key("s3://my-bucket/", "empty")]
    #[case::uppercase_bucket("s3://My-Bucket/key", "bucket")]
    #[case::short_bucket("s3://ab/key", "bucket")]
    #[case::dash_end("s3://bucket-/key", "bucket")]
    #[case::directory_bucket("s3://env--usw2-az1--x-s3/key", "directory buckets")]
    fn rejects(#[case] url: &str, #[case] problem: &str) {
        let e = S3Location::parse(url).expect_err("invalid");
        assert!(e.to_string().contains(problem), "{url}: {e}");
    }
}
