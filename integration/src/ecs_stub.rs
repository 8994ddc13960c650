//! A stub ECS endpoint (plain HTTP on loopback) for what moto will not do:
//! answer `ecs:ListServices` properly and `ecs:DescribeServices` with HTTP
//! 200 and a body of the test's choosing (not JSON, JSON of another shape),
//! and the calls moto lacks (service deployments and revisions) with fixed
//! bodies. Any other operation gets a 400 naming it. It checks no signature.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use crate::loopback::Loopback;

/// The service `ListServices` names.
pub const ECS_STUB_SERVICE_ARN: &str = "arn:aws:ecs:us-east-1:123456789012:service/stub/web";

#[derive(Debug)]
struct Shared {
    describe_services: Vec<u8>,
    /// Further operations and their HTTP 200 bodies.
    answers: Vec<(String, Vec<u8>)>,
    /// Operations called (`ListServices`, ...), in order.
    calls: Mutex<Vec<String>>,
}

/// See the module docs.
#[derive(Debug)]
pub struct EcsStub {
    shared: Arc<Shared>,
    server: Loopback,
}

impl EcsStub {
    /// Starts the stub on a free 127.0.0.1 port; `DescribeServices` gets
    /// `describe_services` with HTTP 200.
    pub fn start(describe_services: &[u8]) -> EcsStub {
        EcsStub::with_answers(describe_services, &[])
    }

    /// Like [`EcsStub::start`], and `answers` gives further operations
    /// (`DescribeTaskDefinition`, `ListServiceDeployments`, ...) a fixed
    /// HTTP 200 body each.
    pub fn with_answers(describe_services: &[u8], answers: &[(&str, &str)]) -> EcsStub {
        let shared = Arc::new(Shared {
            describe_services: describe_services.to_vec(),
            answers: answers
                .iter()
                .map(|(op, body)| ((*op).to_owned(), body.as_bytes().to_vec()))
                .collect(),
            calls: Mutex::new(Vec::new()),
        });
        let server = {
            let shared = shared.clone();
            Loopback::start("ecs-stub", move |stream| {
                let shared = shared.clone();
                thread::spawn(move || serve(stream, &shared));
            })
        };
        EcsStub { shared, server }
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }

    /// The operations called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Reads one request; returns its `X-Amz-Target` operation (after the
/// last dot), or `None` when the client went away.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut target = String::new();
    let mut length = 0usize;
    let mut head_bytes = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head_bytes += line.len();
        if head_bytes > 64 * 1024 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("x-amz-target") {
                target = value.rsplit('.').next().unwrap_or_default().to_owned();
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; length.min(1024 * 1024)];
    reader.read_exact(&mut body).ok()?;
    Some(target)
}

fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Some(target) = read_request(&mut reader) {
        shared
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(target.clone());
        let (status, body) = match target.as_str() {
            "ListServices" => (
                "200 OK",
                format!(r#"{{"serviceArns":["{ECS_STUB_SERVICE_ARN}"]}}"#).into_bytes(),
            ),
            "DescribeServices" => ("200 OK", shared.describe_services.clone()),
            other if shared.answers.iter().any(|(op, _)| op == other) => (
                "200 OK",
                shared
                    .answers
                    .iter()
                    .find(|(op, _)| op == other)
                    .map(|(_, body)| body.clone())
                    .unwrap_or_default(),
            ),
            other => (
                "400 Bad Request",
                format!(
                    r#"{{"__type":"InvalidParameterException","message":"the stub does not serve {other}"}}"#
                )
                .into_bytes(),
            ),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&body).is_err() {
            return;
        }
    }
}

/// The local ECS agent's introspection API, as far as prefetch asks it:
/// `GET /v1/metadata` names the cluster and the container instance ARN.
/// Any request gets that answer; the connection is closed after it.
#[derive(Debug)]
pub struct EcsAgentStub {
    server: Loopback,
}

impl EcsAgentStub {
    /// Starts answering with `container_instance_arn` for `cluster`.
    pub fn start(cluster: &str, container_instance_arn: &str) -> EcsAgentStub {
        let body = format!(
            r#"{{"Cluster":"{cluster}","ContainerInstanceArn":"{container_instance_arn}","Version":"Amazon ECS Agent - stub"}}"#
        );
        let server = Loopback::start("ecs-agent-stub", move |stream| {
            let body = body.clone();
            thread::spawn(move || {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(mut writer) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                // The request head, up to its blank line.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let _ = write!(
                    writer,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        });
        EcsAgentStub { server }
    }

    /// `http://127.0.0.1:PORT`, for `PULLAUTH_ECS_AGENT_URI`.
    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }
}
