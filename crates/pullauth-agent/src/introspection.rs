//! Asks the local ECS agent which container instance this is: `GET
//! /v1/metadata` on its introspection API answers `ContainerInstanceArn`
//! once the instance is registered. With it, prefetch reads the instance's
//! own attributes (`ecs:DescribeContainerInstances`), so that `memberOf`
//! constraints on custom attributes are decided instead of pulled "just in
//! case".
//!
//! One plain HTTP/1 request on loopback, bounded as a whole; any failure
//! (no ECS agent yet, as at boot; another answer) means "not known".

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// The bound of the whole request (connect, answer, body).
pub const INTROSPECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Most bytes of the answer read: the metadata is a few hundred.
const MAX_ANSWER: usize = 64 * 1024;

/// The container instance ARN the ECS agent at `uri` (`http://host:port`)
/// reports, or why it could not be learnt.
pub async fn container_instance_arn(uri: &str) -> Result<String, String> {
    tokio::time::timeout(INTROSPECTION_TIMEOUT, ask(uri))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the ECS agent (PULLAUTH_ECS_AGENT_URI) did not answer within {INTROSPECTION_TIMEOUT:?}"
            ))
        })
}

async fn ask(uri: &str) -> Result<String, String> {
    // The URL is never quoted back: a mistyped one could hold anything.
    let not_url = || "PULLAUTH_ECS_AGENT_URI is not an http://host:port URL".to_owned();
    let parsed: hyper::Uri = uri.parse().map_err(|_| not_url())?;
    let (Some("http"), Some(host)) = (parsed.scheme_str(), parsed.host()) else {
        return Err(not_url());
    };
    let port = parsed.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("no ECS agent at {host}:{port}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("ECS agent at {host}:{port}: {e}"))?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/v1/metadata")
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("ECS agent at {host}:{port}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "the ECS agent at {host}:{port} answered GET /v1/metadata with {}",
            response.status()
        ));
    }
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("ECS agent at {host}:{port}: {e}"))?
        .to_bytes();
    let metadata: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| format!("the ECS agent at {host}:{port} answered no JSON metadata"))?;
    match metadata["ContainerInstanceArn"].as_str() {
        Some(arn) if !arn.is_empty() => Ok(arn.to_owned()),
        _ => Err(format!(
            "the ECS agent at {host}:{port} has no container instance yet (not registered)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `body` as JSON, once per connection, on a loopback port.
    async fn serve(body: &str) -> String {
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn reads_the_container_instance_arn() {
        let uri = serve(
            r#"{"Cluster":"prod","ContainerInstanceArn":"arn:aws:ecs:us-east-1:1:container-instance/prod/abc"}"#,
        )
        .await;
        assert_eq!(
            container_instance_arn(&uri).await,
            Ok("arn:aws:ecs:us-east-1:1:container-instance/prod/abc".to_owned())
        );
    }

    /// An ECS agent that accepts and never answers costs the bound, no
    /// more (paused time: the clock jumps to it).
    #[tokio::test(start_paused = true)]
    async fn a_stalled_agent_is_given_up_on_at_the_bound() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let started = tokio::time::Instant::now();
        let e = container_instance_arn(&format!("http://{addr}"))
            .await
            .expect_err("stalled");
        assert!(e.contains("did not answer"), "{e}");
        assert_eq!(started.elapsed(), INTROSPECTION_TIMEOUT);
    }

    /// Garbage instead of metadata is "not known", naming the agent.
    #[tokio::test]
    async fn an_answer_that_is_not_metadata_is_not_known() {
        let uri = serve("<html>502</html>").await;
        let e = container_instance_arn(&uri).await.expect_err("garbage");
        assert!(e.contains("no JSON metadata"), "{e}");
    }

    #[tokio::test]
    async fn an_unregistered_agent_or_none_at_all_is_not_known() {
        let uri = serve(r#"{"Cluster":"prod","ContainerInstanceArn":null}"#).await;
        let e = container_instance_arn(&uri).await.expect_err("null");
        assert!(e.contains("not registered"), "{e}");
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = free.local_addr().expect("addr").port();
        drop(free);
        let e = container_instance_arn(&format!("http://127.0.0.1:{port}"))
            .await
            .expect_err("nothing listens");
        assert!(e.contains("no ECS agent"), "{e}");
        let e = container_instance_arn("https://x")
            .await
            .expect_err("scheme");
        assert!(e.contains("not an http"), "{e}");
    }
}
