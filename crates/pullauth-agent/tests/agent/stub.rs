//! What the tests against a stub AWS endpoint share: the endpoint itself
//! (HTTP/1 on loopback, one JSON answer per request) and an AWS client
//! that calls it with static keys and short bounds.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use pullauth_aws::{Aws, AwsOptions};

/// Serves HTTP/1 on 127.0.0.1 until the runtime ends. Each request's
/// headers and body go to `answer`, which gives the status and the JSON
/// body (`application/x-amz-json-1.1`, as AWS's JSON protocols answer).
/// Returns the endpoint's URL.
pub async fn serve_json(
    answer: impl Fn(&hyper::HeaderMap, &[u8]) -> (u16, String) + Send + Sync + 'static,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the stub");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = Arc::clone(&answer);
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let answer = Arc::clone(&answer);
                    async move {
                        let headers = request.headers().clone();
                        let body = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let (status, body) = answer(&headers, &body);
                        hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/x-amz-json-1.1")
                            .body(Full::new(Bytes::from(body)))
                    }
                },
            );
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    url
}

/// An AWS client whose calls go to `endpoint` with static keys, in
/// eu-west-1, one attempt of at most 2 s and 5 s a call.
pub async fn aws_at(endpoint: &str) -> Aws {
    aws_at_with(endpoint, stub_options()).await
}

/// The options of [`aws_at`]: one attempt of at most 2 s, 5 s a call.
pub fn stub_options() -> AwsOptions {
    AwsOptions {
        attempt_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(5),
        max_attempts: 1,
        ..AwsOptions::default()
    }
}

/// An AWS client whose calls go to `endpoint` with static keys, in
/// eu-west-1, with `options`.
pub async fn aws_at_with(endpoint: &str, options: AwsOptions) -> Aws {
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("eu-west-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::Credentials::new(
            "AKIDSTUBEXAMPLE",
            "stub-secret-key",
            None,
            None,
            "test",
        ));
    Aws::from_loader(loader, options).await
}
