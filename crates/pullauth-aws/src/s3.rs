//! S3 objects: `s3://bucket/key` locations, and the calls made on them
//! with the generated S3 client (`aws-sdk-s3`), built like the other
//! clients from the one configuration ([`Aws`]: its HTTP client, timeouts,
//! standard retries, endpoint settings and credentials).
//!
//! - [`Aws::get_object`]: an env file (`--env-file s3://bucket/key`), at
//!   most [`MAX_OBJECT_BYTES`], zeroized when dropped.
//! - [`Aws::s3_get_if_changed`]: a read with `If-None-Match`, answered
//!   [`S3Fetch::NotModified`] while the object keeps its ETag.
//! - [`Aws::s3_put_if`]: a conditional write ([`PutCondition`]); a lost
//!   race is [`AwsError::PreconditionFailed`].
//!
//! What is added to the generated client: an object body is read chunk by
//! chunk and never past the caller's limit; an error answer's body (which
//! the SDK reads whole to find S3's error code) is read to
//! [`MAX_ERROR_BODY`] at most; a bucket in another region is read or
//! written there once, as S3's `x-amz-bucket-region` names it; what cannot
//! name an endpoint is refused before any call, in words that never quote
//! an override's user info or query; and `User-Agent` starts with
//! `pullauth/<version>`, for S3 server access logs and CloudTrail.
//!
//! The endpoint is what the SDK's S3 rules give: virtual-hosted style
//! (`https://<bucket>.s3.<region>.<suffix>`), path style for bucket names
//! with dots, and with an endpoint override (`AWS_ENDPOINT_URL_S3`,
//! `AWS_ENDPOINT_URL`) `<scheme>://<bucket>.<host>`, or path style when
//! the host is an IP address (moto, a local MinIO) or the bucket has dots.

use std::fmt;
use std::future::Future;
use std::time::SystemTime;

use aws_config::Region;
use aws_sdk_ecr::config::http::HttpResponse;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_types::body::SdkBody;
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

/// What [`Aws::s3_get_if_changed`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Fetch {
    /// The object still has the ETag the read named (S3 answered
    /// `304 Not Modified`); nothing was read.
    NotModified,
    /// The object, read whole.
    Object {
        /// The object's ETag as S3 gives it (quoted, `"<hex>"`): what to
        /// name in the next read's `If-None-Match` or a write's `If-Match`.
        etag: String,
        body: Vec<u8>,
        /// When S3 last stored it (`Last-Modified`), if it said.
        last_modified: Option<SystemTime>,
    },
}

/// The condition of [`Aws::s3_put_if`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PutCondition {
    /// Replace the object only while it has this ETag (`If-Match`), as
    /// [`S3Fetch::Object`] or an earlier write returned it.
    IfMatch(String),
    /// Create the object only if there is none (`If-None-Match: *`).
    IfNoneMatch,
}

/// What [`AwsError::Invalid`] calls the endpoint override.
const OVERRIDE: &str = "S3 endpoint override (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL)";

/// The most of an error answer's body that is read (S3's XML error
/// documents are well under 1 KiB).
pub(crate) const MAX_ERROR_BODY: usize = 64 * 1024;

/// What `User-Agent` starts with (the SDK's own follows it).
const USER_AGENT: &str = concat!("pullauth/", env!("CARGO_PKG_VERSION"));

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

/// The endpoint settings an S3 call is made with.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EndpointChoice<'a> {
    /// An endpoint override, as configured.
    pub(crate) endpoint_override: Option<&'a str>,
    pub(crate) fips: bool,
    pub(crate) dual_stack: bool,
}

/// Refuses, in words, what cannot name an endpoint, as the SDK's rules
/// would (whose errors quote the override whole): a region that is not a
/// DNS label, FIPS in a partition without FIPS endpoints, an override
/// combined with FIPS or dual-stack, and an override that is not an
/// `http`/`https` URL of a host (with no user info or query).
fn refuse_unnamable(region: &str, choice: EndpointChoice<'_>) -> Result<(), AwsError> {
    let invalid = |what, value: &str, problem| AwsError::Invalid {
        what,
        value: value.to_string(),
        problem,
    };
    if !is_host_label(region) {
        return Err(invalid(
            "AWS region",
            region,
            "not a region name (a-z, 0-9 and -, as in eu-west-1): check AWS_REGION",
        ));
    }
    let Some(url) = choice.endpoint_override else {
        if choice.fips && pullauth_resolve::partition_dns_suffix(region) == "amazonaws.com.cn" {
            return Err(invalid(
                "AWS region",
                region,
                "the aws-cn partition has no FIPS endpoints: unset AWS_USE_FIPS_ENDPOINT",
            ));
        }
        return Ok(());
    };
    // The override as errors quote it (no user info, no query).
    let shown = shown_endpoint(url);
    let refuse = |problem| Err(invalid(OVERRIDE, &shown, problem));
    if choice.fips {
        return refuse("a custom endpoint cannot be combined with FIPS (AWS_USE_FIPS_ENDPOINT)");
    }
    if choice.dual_stack {
        return refuse(
            "a custom endpoint cannot be combined with dual-stack (AWS_USE_DUALSTACK_ENDPOINT)",
        );
    }
    match crate::endpoint_env::endpoint_problem(url) {
        Some(problem) => refuse(problem),
        None => Ok(()),
    }
}

/// The partition of `region` as ARNs name it (`aws`, `aws-cn`,
/// `aws-us-gov`, ...), for the resource of an IAM hint.
fn arn_partition(region: &str) -> &'static str {
    if region.starts_with("us-gov-") {
        return "aws-us-gov";
    }
    pullauth_resolve::ecr::HOST_SHAPES
        .iter()
        .find(|shape| shape.region_prefix.is_some_and(|p| region.starts_with(p)))
        .map_or("aws", |shape| shape.partition)
}

/// The ETag an answer names, or why that is a bad answer.
fn etag_of(etag: Option<&str>, call: &Call) -> Result<String, AwsError> {
    match etag {
        Some(etag) if !etag.is_empty() => Ok(etag.to_owned()),
        _ => Err(AwsError::BadResponse {
            call: call.clone(),
            problem: "S3 named no ETag for the object".into(),
        }),
    }
}

/// The status and error code of a service error's answer.
fn status_and_code<E: ProvideErrorMetadata>(
    error: &SdkError<E, HttpResponse>,
) -> Option<(u16, Option<&str>)> {
    match error {
        SdkError::ServiceError(service) => {
            Some((service.raw().status().as_u16(), service.err().code()))
        }
        _ => None,
    }
}

/// The region an error answer says the bucket is in (`x-amz-bucket-region`).
fn bucket_region<E>(error: &SdkError<E, HttpResponse>) -> Option<&str> {
    match error {
        SdkError::ServiceError(service) => service.raw().headers().get("x-amz-bucket-region"),
        _ => None,
    }
}

/// Added to every S3 call (see the module docs): `User-Agent` starting
/// with `pullauth/<version>`, and error bodies read to
/// [`MAX_ERROR_BODY`] at most.
#[derive(Debug)]
struct S3Hygiene;

impl Intercept for S3Hygiene {
    fn name(&self) -> &'static str {
        "S3Hygiene"
    }

    /// After signing (SigV4 leaves `User-Agent` out of the signature), so
    /// every attempt's request carries it.
    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let headers = context.request_mut().headers_mut();
        let agent = match headers.get("user-agent") {
            Some(sdk) if !sdk.starts_with(USER_AGENT) => format!("{USER_AGENT} {sdk}"),
            Some(sdk) => sdk.to_owned(),
            None => USER_AGENT.to_owned(),
        };
        headers.insert("user-agent", agent);
        Ok(())
    }

    /// The orchestrator reads an error's body whole before the SDK parses
    /// it: bounded, so that an endpoint streaming an endless error body
    /// fails the read instead of filling memory.
    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        if !response.status().is_success() {
            let body = std::mem::replace(response.body_mut(), SdkBody::taken());
            *response.body_mut() =
                SdkBody::from_body_1_x(http_body_util::Limited::new(body, MAX_ERROR_BODY));
        }
        Ok(())
    }
}

/// Reads `body` into `into`, chunk by chunk, and stops at the first chunk
/// that would take it past `limit`: a body without a length (chunked) is
/// never read in full to learn that it is too large, and one whose length
/// says so is not read at all.
async fn read_bounded(
    call: &Call,
    mut body: ByteStream,
    length: Option<i64>,
    limit: usize,
    into: &mut Vec<u8>,
) -> Result<(), AwsError> {
    let bad = |problem: String| AwsError::BadResponse {
        call: call.clone(),
        problem,
    };
    if let Some(length) = length
        && u64::try_from(length).unwrap_or(0) > limit as u64
    {
        return Err(bad(format!(
            "the object has {length} bytes, more than the {limit} allowed"
        )));
    }
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| AwsError::Unreachable {
            call: call.clone(),
            detail: format!(
                "the connection failed while reading the object: {}",
                crate::client::chain(&e)
            ),
        })?;
        if into.len() + chunk.len() > limit {
            return Err(bad(format!("the object is larger than {limit} bytes")));
        }
        into.extend_from_slice(&chunk);
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
        let call = s3_call("s3:GetObject", location);
        self.s3_bounded(&call, async {
            // Without a condition, a 304 is an error like any other status.
            let Some(object) = self.s3_get(&call, location, None).await? else {
                return Err(AwsError::BadResponse {
                    call: call.clone(),
                    problem: "S3 answered 304 Not Modified to a read without a condition".into(),
                });
            };
            let limit = MAX_OBJECT_BYTES as usize;
            // Room for the whole limit up front: growing would leave copies
            // of the content behind that are never zeroized.
            let mut bytes = Zeroizing::new(Vec::with_capacity(limit));
            let length = object.content_length();
            read_bounded(&call, object.body, length, limit, &mut bytes).await?;
            Ok(bytes)
        })
        .await
    }

    /// `location` read with the default chain unless it still has `etag`
    /// (`If-None-Match`): [`S3Fetch::NotModified`] then, else the object
    /// with its ETag and `Last-Modified`. A body of more than `max_bytes`
    /// is an error naming the object and the limit, and is read no
    /// further. The time limit, retries and the second try in the bucket's
    /// own region are those of [`Aws::get_object`].
    pub async fn s3_get_if_changed(
        &self,
        location: &S3Location,
        etag: Option<&str>,
        max_bytes: usize,
    ) -> Result<S3Fetch, AwsError> {
        let call = s3_call("s3:GetObject", location);
        self.s3_bounded(&call, async {
            let Some(object) = self.s3_get(&call, location, etag).await? else {
                return Ok(S3Fetch::NotModified);
            };
            let etag = etag_of(object.e_tag(), &call)?;
            let last_modified = object
                .last_modified()
                .and_then(|at| SystemTime::try_from(*at).ok());
            let length = object.content_length();
            let capacity = length
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0)
                .min(max_bytes);
            let mut body = Vec::with_capacity(capacity);
            read_bounded(&call, object.body, length, max_bytes, &mut body).await?;
            Ok(S3Fetch::Object {
                etag,
                body,
                last_modified,
            })
        })
        .await
    }

    /// Writes `body` to `location` with the default chain if `condition`
    /// holds (`If-Match` of an ETag, or `If-None-Match: *` to create it),
    /// and returns the new ETag. When it does not hold (another writer came
    /// first) the error is [`AwsError::PreconditionFailed`], which
    /// [`AwsError::is_precondition_failed`] tells: read again, then decide.
    /// `content_type` is the object's `Content-Type` (S3's default,
    /// `binary/octet-stream`, when `None`). The time limit, retries and
    /// the second try in the bucket's own region are those of
    /// [`Aws::get_object`]; the body is sent again on a retry.
    pub async fn s3_put_if(
        &self,
        location: &S3Location,
        body: Vec<u8>,
        condition: PutCondition,
        content_type: Option<&str>,
    ) -> Result<String, AwsError> {
        let call = s3_call("s3:PutObject", location);
        self.s3_bounded(&call, async {
            let (body, condition) = (&body, &condition);
            let output = self
                .s3_send(&call, location, |client| async move {
                    let request = client
                        .put_object()
                        .bucket(&location.bucket)
                        .key(&location.key)
                        .set_content_type(content_type.map(str::to_owned))
                        .body(ByteStream::from(body.clone()));
                    match condition {
                        PutCondition::IfMatch(etag) => request.if_match(etag),
                        PutCondition::IfNoneMatch => request.if_none_match("*"),
                    }
                    .send()
                    .await
                })
                .await?;
            etag_of(output.e_tag(), &call)
        })
        .await
    }

    /// `s3:GetObject` of `location`, `If-None-Match: <etag>` when given;
    /// the answer's body not yet read, `None` for `304 Not Modified`.
    async fn s3_get(
        &self,
        call: &Call,
        location: &S3Location,
        if_none_match: Option<&str>,
    ) -> Result<Option<aws_sdk_s3::operation::get_object::GetObjectOutput>, AwsError> {
        self.inner.counters.add(&self.inner.counters.object_fetches);
        self.s3_send(call, location, |client| async move {
            let sent = client
                .get_object()
                .bucket(&location.bucket)
                .key(&location.key)
                .set_if_none_match(if_none_match.map(str::to_owned))
                .send()
                .await;
            // The SDK has 304 for an error (S3 models no output for it).
            match sent {
                Ok(object) => Ok(Some(object)),
                Err(e)
                    if if_none_match.is_some()
                        && status_and_code(&e).is_some_and(|(s, _)| s == 304) =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// `work`, bounded by the operation timeout (credentials, every
    /// attempt, the body), its failure counted.
    async fn s3_bounded<T>(
        &self,
        call: &Call,
        work: impl Future<Output = Result<T, AwsError>>,
    ) -> Result<T, AwsError> {
        let limit = self.inner.options.operation_timeout;
        let result = match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(AwsError::Timeout {
                call: call.clone(),
                limits: self.time_limits(),
            }),
        };
        self.counted(result)
    }

    /// The S3 client for calls in `region`.
    fn s3_client(&self, region: &str) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.inner.config)
            .region(Region::new(region.to_owned()))
            .interceptor(S3Hygiene)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Where an S3 call of `location` in `region` goes, as the SDK's rules
    /// resolve it with this configuration; what cannot name an endpoint is
    /// refused first, in words ([`refuse_unnamable`]).
    pub(crate) async fn s3_endpoint(
        &self,
        location: &S3Location,
        region: &str,
    ) -> Result<String, AwsError> {
        use aws_sdk_s3::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
        let config = &self.inner.config;
        let endpoint_override = self.endpoint_override("S3");
        let (fips, dual_stack) = (
            config.use_fips().unwrap_or(false),
            config.use_dual_stack().unwrap_or(false),
        );
        refuse_unnamable(
            region,
            EndpointChoice {
                endpoint_override: endpoint_override.as_deref(),
                fips,
                dual_stack,
            },
        )?;
        let unnamed = AwsError::Invalid {
            what: "S3 location",
            value: location.to_string(),
            problem: "the SDK's S3 endpoint rules name no endpoint for this bucket with the configured region, FIPS and dual-stack settings",
        };
        let params = Params::builder()
            .bucket(&location.bucket)
            .key(&location.key)
            .region(region)
            .use_fips(fips)
            .use_dual_stack(dual_stack)
            .set_endpoint(endpoint_override)
            .build()
            .map_err(|_| unnamed.clone())?;
        match DefaultResolver::new().resolve_endpoint(&params).await {
            Ok(endpoint) => Ok(endpoint.url().to_owned()),
            Err(_) => Err(unnamed),
        }
    }

    /// One S3 call, made by `send` with a client for the configured
    /// region, and once more in the bucket's region when S3 names another
    /// (`x-amz-bucket-region`, as on a 301 `PermanentRedirect`); its
    /// failure in words ([`Aws::s3_error`]).
    async fn s3_send<T, E, F, Fut>(
        &self,
        call: &Call,
        location: &S3Location,
        send: F,
    ) -> Result<T, AwsError>
    where
        F: Fn(aws_sdk_s3::Client) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        // What the configuration gets wrong is said before any call.
        let Some(region) = self.region().map(str::to_owned) else {
            return Err(AwsError::Invalid {
                what: "S3 location",
                value: location.to_string(),
                problem: "no AWS region is configured: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region) to the bucket's region",
            });
        };
        // The endpoint last called, for an unreachable one's message.
        let mut endpoint = self.s3_endpoint(location, &region).await?;
        let mut result = send(self.s3_client(&region)).await;
        // A name that could not be a region is not followed.
        let elsewhere = match &result {
            Err(e) => bucket_region(e)
                .filter(|other| *other != region && is_host_label(other))
                .map(str::to_owned),
            Ok(_) => None,
        };
        if let Some(other) = elsewhere
            && let Ok(there) = self.s3_endpoint(location, &other).await
        {
            let verb = if call.operation == "s3:PutObject" {
                "writing"
            } else {
                "reading"
            };
            tracing::info!(
                location = %location,
                region = %region,
                bucket_region = %other,
                "the bucket is in another region; {verb} it there"
            );
            endpoint = there;
            result = send(self.s3_client(&other)).await;
        }
        result.map_err(|e| {
            self.s3_error(call, location, &region, e)
                .at_endpoint(&endpoint)
        })
    }

    /// A failed S3 call in words: the region to set when the bucket is in
    /// another, [`AwsError::PreconditionFailed`] for a condition that did
    /// not hold, which of bucket or key is missing, and for access denied
    /// the permission the call needs on the object.
    fn s3_error<E>(
        &self,
        call: &Call,
        location: &S3Location,
        region: &str,
        error: SdkError<E, HttpResponse>,
    ) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        if let Some((status, code)) = status_and_code(&error) {
            if code == Some("PermanentRedirect") || status == 301 {
                let named = bucket_region(&error)
                    .map(|r| format!(" (S3 names {r})"))
                    .unwrap_or_default();
                return AwsError::Service {
                    call: call.clone(),
                    code: "PermanentRedirect".into(),
                    message: format!(
                        "the bucket is not in region {region}{named}: set AWS_REGION to the bucket's region"
                    ),
                };
            }
            let condition = match code {
                Some(code @ ("PreconditionFailed" | "ConditionalRequestConflict")) => Some(code),
                None if status == 412 => Some("PreconditionFailed"),
                _ => None,
            };
            if let Some(code) = condition {
                let message = match &error {
                    SdkError::ServiceError(service) => service.err().message(),
                    _ => None,
                };
                return AwsError::PreconditionFailed {
                    call: call.clone(),
                    code: code.to_owned(),
                    message: message
                        .unwrap_or("the object changed since it was read")
                        .to_owned(),
                };
            }
        }
        let error = self.sdk_error(call.clone(), error, |code| match code {
            "NoSuchBucket" => Some(format!("no such bucket {:?}", location.bucket)),
            "NoSuchKey" => Some(format!(
                "no such key {:?} in bucket {:?}",
                location.key, location.bucket
            )),
            _ => None,
        });
        match error {
            AwsError::AccessDenied {
                call,
                code,
                message,
            } if code == "AccessDenied" => {
                let arn = format!(
                    "arn:{}:s3:::{}/{}",
                    arn_partition(region),
                    location.bucket,
                    location.key
                );
                let mut hint = format!("; the principal needs {} on {arn}", call.operation);
                if call.operation == "s3:GetObject" {
                    hint.push_str(
                        " (without s3:ListBucket on the bucket, S3 answers a missing key with AccessDenied too)",
                    );
                }
                AwsError::AccessDenied {
                    call,
                    code,
                    message: format!("{message}{hint}"),
                }
            }
            other => other,
        }
    }
}

/// The call on `location`, as errors name it.
fn s3_call(operation: &'static str, location: &S3Location) -> Call {
    Call {
        operation,
        target: location.to_string(),
        principal: Principal::Default.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use aws_config::SdkConfig;
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_smithy_types::error::ErrorMetadata;
    use rstest::rstest;

    use super::*;
    use crate::{AwsOptions, ErrorClass};

    #[rstest]
    #[case::simple("s3://my-bucket/ecs.env", "my-bucket", "ecs.env")]
    #[case::nested_key("s3://b.example/dir/sub/file.env", "b.example", "dir/sub/file.env")]
    #[case::key_keeps_slashes("s3://abc//x", "abc", "/x")]
    fn parses(#[case] url: &str, #[case] bucket: &str, #[case] key: &str) {
        let l = S3Location::parse(url).expect("valid");
        assert_eq!((l.bucket.as_str(), l.key.as_str()), (bucket, key));
        assert_eq!(l.to_string(), url);
    }

    /// An [`Aws`] of `region` with these endpoint settings, no calls made.
    fn aws_with(region: &str, choice: EndpointChoice<'_>) -> Aws {
        let mut config = SdkConfig::builder()
            .region(Region::new(region.to_owned()))
            .use_fips(choice.fips)
            .use_dual_stack(choice.dual_stack);
        if let Some(url) = choice.endpoint_override {
            config = config.endpoint_url(url);
        }
        Aws::from_sdk_config(config.build(), AwsOptions::default())
    }

    async fn endpoint_of(url: &str, region: &str, choice: EndpointChoice<'_>) -> String {
        let location = S3Location::parse(url).expect("valid");
        aws_with(region, choice)
            .s3_endpoint(&location, region)
            .await
            .expect("an endpoint")
    }

    // The addresses the hand-written rules of earlier releases gave (and
    // docs/credentials.md describes), as the linked SDK's S3 rules give
    // them: virtual-hosted, path style for dotted buckets, FIPS and
    // dual-stack names, partitions' suffixes.
    #[rstest]
    #[case::virtual_hosted(
        "s3://env-files/ecs.config",
        "eu-west-1",
        false,
        false,
        "https://env-files.s3.eu-west-1.amazonaws.com"
    )]
    #[case::dotted_bucket_path_style(
        "s3://env.example.com/dir/ecs.config",
        "eu-west-1",
        false,
        false,
        "https://s3.eu-west-1.amazonaws.com/env.example.com"
    )]
    #[case::fips(
        "s3://env-files/ecs.config",
        "us-gov-west-1",
        true,
        false,
        "https://env-files.s3-fips.us-gov-west-1.amazonaws.com"
    )]
    #[case::dual_stack(
        "s3://env-files/ecs.config",
        "eu-west-1",
        false,
        true,
        "https://env-files.s3.dualstack.eu-west-1.amazonaws.com"
    )]
    #[case::fips_dual_stack(
        "s3://env-files/ecs.config",
        "us-east-1",
        true,
        true,
        "https://env-files.s3-fips.dualstack.us-east-1.amazonaws.com"
    )]
    #[case::china(
        "s3://env-files/ecs.config",
        "cn-north-1",
        false,
        false,
        "https://env-files.s3.cn-north-1.amazonaws.com.cn"
    )]
    #[case::iso_b(
        "s3://env-files/ecs.config",
        "us-isob-east-1",
        false,
        false,
        "https://env-files.s3.us-isob-east-1.sc2s.sgov.gov"
    )]
    #[tokio::test]
    async fn aws_endpoints(
        #[case] url: &str,
        #[case] region: &str,
        #[case] fips: bool,
        #[case] dual_stack: bool,
        #[case] endpoint: &str,
    ) {
        let choice = EndpointChoice {
            endpoint_override: None,
            fips,
            dual_stack,
        };
        assert_eq!(endpoint_of(url, region, choice).await, endpoint);
    }

    #[rstest]
    #[case::ip_is_path_style(
        "http://127.0.0.1:5000",
        "s3://env-files/k",
        "http://127.0.0.1:5000/env-files"
    )]
    #[case::ipv6_is_path_style(
        "http://[::1]:5000",
        "s3://env-files/k",
        "http://[::1]:5000/env-files"
    )]
    #[case::host_is_virtual_hosted(
        "https://minio.internal:9000",
        "s3://env-files/k",
        "https://env-files.minio.internal:9000"
    )]
    #[case::host_with_dotted_bucket(
        "https://minio.internal",
        "s3://a.b.c/k",
        "https://minio.internal/a.b.c"
    )]
    #[case::base_path_kept(
        "https://proxy.internal/s3/",
        "s3://env-files/k",
        "https://env-files.proxy.internal/s3/"
    )]
    #[tokio::test]
    async fn endpoint_overrides(
        #[case] endpoint_override: &str,
        #[case] url: &str,
        #[case] endpoint: &str,
    ) {
        let choice = EndpointChoice {
            endpoint_override: Some(endpoint_override),
            ..EndpointChoice::default()
        };
        assert_eq!(endpoint_of(url, "eu-west-1", choice).await, endpoint);
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
    #[tokio::test]
    async fn what_cannot_name_an_endpoint_is_refused(
        #[case] endpoint_override: Option<&str>,
        #[case] fips: bool,
        #[case] dual_stack: bool,
        #[case] region: &str,
        #[case] problem: &str,
    ) {
        let choice = EndpointChoice {
            endpoint_override,
            fips,
            dual_stack,
        };
        let e = refuse_unnamable(region, choice).expect_err("refused");
        assert_eq!(e.class(), ErrorClass::Invalid, "{e}");
        assert!(e.to_string().contains(problem), "{e}");
        // The same, before any call, on the way to one.
        let location = S3Location::parse("s3://env-files/k").expect("valid");
        let e = aws_with(region, choice)
            .s3_endpoint(&location, region)
            .await
            .expect_err("refused");
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
        let choice = EndpointChoice {
            endpoint_override: Some(url),
            fips,
            dual_stack: false,
        };
        let e = refuse_unnamable("eu-west-1", choice).expect_err("refused");
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("FwoGZXIvYXdzEXAMPLE"), "{shown}");
        assert!(shown.contains("s3.internal"), "{shown}");
    }

    #[test]
    fn an_override_with_user_info_is_refused_without_quoting_it() {
        let choice = EndpointChoice {
            endpoint_override: Some("https://admin:hunter2@minio.internal"),
            ..EndpointChoice::default()
        };
        let e = refuse_unnamable("eu-west-1", choice).expect_err("refused");
        assert!(e.to_string().contains("user info"), "{e}");
        assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");
    }

    /// A service error of S3 as the SDK hands it over: `status`, the
    /// `code` and `message` parsed from the body, `headers`.
    fn answer(
        status: u16,
        code: Option<&str>,
        message: Option<&str>,
        headers: &[(&'static str, &'static str)],
    ) -> SdkError<GetObjectError, HttpResponse> {
        let mut meta = ErrorMetadata::builder();
        if let Some(code) = code {
            meta = meta.code(code);
        }
        if let Some(message) = message {
            meta = meta.message(message);
        }
        let mut raw = HttpResponse::new(
            status.try_into().expect("a status code"),
            SdkBody::from("<Error><StringToSign>not kept</StringToSign></Error>"),
        );
        for (name, value) in headers {
            raw.headers_mut().insert(*name, *value);
        }
        SdkError::service_error(GetObjectError::generic(meta.build()), raw)
    }

    fn words(
        operation: &'static str,
        region: &str,
        error: SdkError<GetObjectError, HttpResponse>,
    ) -> AwsError {
        let location = S3Location::parse("s3://env-files/dir/ecs.env").expect("valid");
        let aws = aws_with(region, EndpointChoice::default());
        aws.s3_error(&s3_call(operation, &location), &location, region, error)
    }

    #[rstest]
    #[case::precondition_failed(412, Some("PreconditionFailed"))]
    #[case::no_code(412, None)]
    #[case::conflict(409, Some("ConditionalRequestConflict"))]
    fn a_condition_that_did_not_hold_is_told_apart(
        #[case] status: u16,
        #[case] code: Option<&str>,
    ) {
        let e = words("s3:PutObject", "eu-west-1", answer(status, code, None, &[]));
        assert!(e.is_precondition_failed(), "{e}");
        assert_eq!(e.class(), ErrorClass::PreconditionFailed);
        assert!(!e.is_transient(), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with("s3:PutObject for s3://env-files/dir/ecs.env as "),
            "{text}"
        );
        // Other conflicts are not.
        let e = words(
            "s3:PutObject",
            "eu-west-1",
            answer(409, Some("OperationAborted"), None, &[]),
        );
        assert!(!e.is_precondition_failed(), "{e}");
    }

    #[rstest]
    #[case::aws("eu-west-1", "arn:aws:s3:::env-files/dir/ecs.env")]
    #[case::china("cn-north-1", "arn:aws-cn:s3:::env-files/dir/ecs.env")]
    #[case::gov_cloud("us-gov-west-1", "arn:aws-us-gov:s3:::env-files/dir/ecs.env")]
    #[case::iso_b("us-isob-east-1", "arn:aws-iso-b:s3:::env-files/dir/ecs.env")]
    fn access_denied_names_the_permission_on_the_object(#[case] region: &str, #[case] arn: &str) {
        for operation in ["s3:GetObject", "s3:PutObject"] {
            let e = words(
                operation,
                region,
                answer(403, Some("AccessDenied"), Some("Access Denied"), &[]),
            );
            assert_eq!(e.class(), ErrorClass::AccessDenied);
            let text = e.to_string();
            assert!(
                text.contains(&format!("the principal needs {operation} on {arn}")),
                "{text}"
            );
        }
        // A wrong secret key is not a policy problem: no IAM hint.
        let e = words(
            "s3:GetObject",
            region,
            answer(403, Some("SignatureDoesNotMatch"), None, &[]),
        );
        assert_eq!(e.class(), ErrorClass::AccessDenied);
        assert!(!e.to_string().contains("needs"), "{e}");
    }

    #[test]
    fn missing_buckets_and_keys_are_named() {
        let e = words(
            "s3:GetObject",
            "eu-west-1",
            answer(404, Some("NoSuchKey"), None, &[]),
        );
        assert_eq!(e.class(), ErrorClass::NotFound);
        assert!(
            e.to_string()
                .ends_with(": no such key \"dir/ecs.env\" in bucket \"env-files\""),
            "{e}"
        );
        let e = words(
            "s3:PutObject",
            "eu-west-1",
            answer(404, Some("NoSuchBucket"), None, &[]),
        );
        assert_eq!(e.class(), ErrorClass::NotFound);
        assert!(
            e.to_string().ends_with(": no such bucket \"env-files\""),
            "{e}"
        );
    }

    #[test]
    fn a_bucket_in_another_region_says_what_to_set() {
        let e = words(
            "s3:GetObject",
            "us-east-1",
            answer(
                301,
                Some("PermanentRedirect"),
                Some(
                    "The bucket you are attempting to access must be addressed using the specified endpoint.",
                ),
                &[("x-amz-bucket-region", "eu-central-1")],
            ),
        );
        assert_eq!(
            e.to_string(),
            "s3:GetObject for s3://env-files/dir/ecs.env as the default credential chain: \
             PermanentRedirect: the bucket is not in region us-east-1 (S3 names eu-central-1): \
             set AWS_REGION to the bucket's region"
        );
        assert_eq!(
            bucket_region(&answer(
                301,
                None,
                None,
                &[("x-amz-bucket-region", "eu-central-1")]
            )),
            Some("eu-central-1")
        );
    }

    #[test]
    fn only_code_and_message_of_an_error_body_are_shown() {
        let e = words("s3:GetObject", "eu-west-1", answer(502, None, None, &[]));
        assert_eq!(e.class(), ErrorClass::Service);
        assert!(!format!("{e} {e:?}").contains("not kept"), "{e:?}");
    }

    #[test]
    fn arn_partitions() {
        for (region, partition) in [
            ("us-east-1", "aws"),
            ("us-gov-east-1", "aws-us-gov"),
            ("cn-northwest-1", "aws-cn"),
            ("us-iso-east-1", "aws-iso"),
            ("eusc-de-east-1", "aws-eusc"),
        ] {
            assert_eq!(arn_partition(region), partition, "{region}");
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
