//! The real servers (`server::run_with_limits`) on 127.0.0.1:0 and a
//! temporary Unix socket, driven by hostile and honest clients, and the
//! control router's limits through `oneshot`. Limits are short here so that
//! every test takes about a second; production values are in
//! `ServerLimits::default()`.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use pullauth_agent::server::{self, ServerLimits};
use pullauth_agent::{Agent, Identity, Settings, api};
use pullauth_config::PullBehavior;
use pullauth_docker::{Engine, PullOptions};
use pullauth_resolve::RegistryTable;
use pullauth_store::Store;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// Upper bound for anything the server should do promptly.
const PROMPTLY: Duration = Duration::from_secs(5);

/// A real agent with an in-memory store and an engine address where nothing
/// answers (a submitted task's pull fails at once; no test looks at it).
async fn agent() -> Agent {
    let engine = Engine::connect(Some("tcp://127.0.0.1:9"))
        .await
        .expect("engine client");
    Agent::start(
        Store::in_memory(),
        std::sync::Arc::new(engine),
        Settings {
            table: RegistryTable::empty(),
            behavior: PullBehavior::Default,
            options: PullOptions::default(),
        },
        Identity {
            cluster: "test".into(),
            container_instance_arn: None,
            version: "0.0.0-test".into(),
        },
        1,
    )
    .expect("agent")
}

/// Short timeouts and generous caps; tests override what they exercise.
fn test_limits() -> ServerLimits {
    ServerLimits {
        header_read_timeout: Duration::from_millis(400),
        write_timeout: Duration::from_millis(400),
        max_introspection_connections: 64,
        max_control_connections: 64,
        shutdown_grace: Duration::from_secs(2),
    }
}

struct Running {
    addr: SocketAddr,
    socket: PathBuf,
    _guard: pullauth_agent::control_socket::SocketGuard,
    _dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<io::Result<()>>,
}

impl Running {
    async fn start(limits: ServerLimits) -> Running {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("control.sock");
        let (unix, guard) = pullauth_agent::control_socket::bind_control_socket(&socket)
            .await
            .expect("control socket");
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = tcp.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let agent = agent().await;
        let server = tokio::spawn(server::run_with_limits(
            agent,
            tcp,
            unix,
            async move {
                let _ = stopped.await;
            },
            limits,
        ));
        Running {
            addr,
            socket,
            _guard: guard,
            _dir: dir,
            stop: Some(stop),
            server,
        }
    }

    async fn tcp(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connect")
    }

    async fn unix(&self) -> UnixStream {
        UnixStream::connect(&self.socket).await.expect("connect")
    }

    /// Starts shutdown; returns how long the server took to stop (panics
    /// after `bound`).
    async fn shut_down(mut self, bound: Duration) -> Duration {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(bound, &mut self.server)
            .await
            .unwrap_or_else(|_| panic!("the server did not stop within {bound:?}"))
            .expect("server task")
            .expect("server result");
        started.elapsed()
    }
}

/// Reads until the peer closes; panics if that takes longer than `bound`.
async fn expect_eof<S: AsyncRead + Unpin>(stream: &mut S, bound: Duration, what: &str) {
    let mut sink = Vec::new();
    match tokio::time::timeout(bound, stream.read_to_end(&mut sink)).await {
        Ok(Ok(_)) => {}
        // A reset is also the server closing the connection.
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Ok(Err(e)) => panic!("{what}: read failed: {e}"),
        Err(_) => panic!("{what}: the server kept the connection open for {bound:?}"),
    }
}

/// Sends one keep-alive GET and reads its response (status, body).
async fn get<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, path: &str) -> (u16, Value) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: pullauth\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    tokio::time::timeout(PROMPTLY, read_response(stream))
        .await
        .unwrap_or_else(|_| panic!("no response to GET {path} within {PROMPTLY:?}"))
}

/// Reads one response with a Content-Length body.
async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> (u16, Value) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            if raw.len() >= end + 4 + length {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("status");
                let body = serde_json::from_slice(&raw[end + 4..end + 4 + length]).expect("json");
                return (status, body);
            }
        }
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "connection closed mid-response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn half_sent_request_line_is_closed_after_the_header_timeout() {
    let running = Running::start(test_limits()).await;
    let mut tcp = running.tcp().await;
    tcp.write_all(b"GET /v1/meta").await.expect("write");
    let mut unix = running.unix().await;
    unix.write_all(b"POST /v1/tas").await.expect("write");
    expect_eof(&mut tcp, PROMPTLY, "half-sent introspection request").await;
    expect_eof(&mut unix, PROMPTLY, "half-sent control request").await;
    running.shut_down(PROMPTLY).await;
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_the_timeout() {
    let running = Running::start(test_limits()).await;
    let mut tcp = running.tcp().await;
    let (status, body) = get(&mut tcp, "/v1/metadata").await;
    assert_eq!(status, 200);
    assert_eq!(body["Cluster"], "test");
    // Kept alive for a second request...
    assert_eq!(get(&mut tcp, "/healthz").await.0, 200);
    // ...but not forever once it goes quiet.
    expect_eof(&mut tcp, PROMPTLY, "idle keep-alive connection").await;
    let mut unix = running.unix().await;
    assert_eq!(get(&mut unix, "/healthz").await.0, 200);
    expect_eof(&mut unix, PROMPTLY, "idle control connection").await;
    running.shut_down(PROMPTLY).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let running = Running::start(ServerLimits {
        header_read_timeout: Duration::from_secs(60),
        ..test_limits()
    })
    .await;
    // Pipelined requests whose answers are never read: once the socket
    // buffers are full the server's writes stall, it stops reading, and
    // this client's writes stall too, until the server drops it.
    let (_never_read, mut writer) = running.tcp().await.into_split();
    let requests = b"GET /v1/metadata HTTP/1.1\r\nHost: pullauth\r\n\r\n".repeat(10_000);
    let dropped = tokio::time::timeout(PROMPTLY, async {
        loop {
            if let Err(e) = writer.write_all(&requests).await {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a client that never reads kept its connection for {PROMPTLY:?}"));
    assert!(
        matches!(
            dropped.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ),
        "{dropped}"
    );
    // The server itself is fine.
    let mut other = running.tcp().await;
    assert_eq!(get(&mut other, "/healthz").await.0, 200);
    running.shut_down(PROMPTLY).await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_while_existing_ones_are_served() {
    let limits = ServerLimits {
        header_read_timeout: Duration::from_secs(30),
        max_introspection_connections: 2,
        ..test_limits()
    };
    let running = Running::start(limits).await;
    let mut first = running.tcp().await;
    assert_eq!(get(&mut first, "/healthz").await.0, 200);
    let mut second = running.tcp().await;
    assert_eq!(get(&mut second, "/healthz").await.0, 200);

    // The cap is reached: a third client waits in the listen backlog.
    let mut third = running.tcp().await;
    third
        .write_all(b"GET /v1/metadata HTTP/1.1\r\nHost: pullauth\r\n\r\n")
        .await
        .expect("write");
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "a connection beyond the cap was served: {early:?}"
    );

    // Connections already open are still served, and so is the control socket.
    assert_eq!(get(&mut first, "/v1/metadata").await.0, 200);
    let mut control = running.unix().await;
    assert_eq!(get(&mut control, "/healthz").await.0, 200);

    // A freed place goes to the waiting client.
    drop(second);
    let (status, _) = tokio::time::timeout(PROMPTLY, read_response(&mut third))
        .await
        .expect("the waiting client was not served once a place was free");
    assert_eq!(status, 200);
    running.shut_down(PROMPTLY).await;
}

#[tokio::test]
async fn shutdown_drops_idle_and_half_sent_connections_at_once() {
    let limits = ServerLimits {
        header_read_timeout: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(30),
        ..test_limits()
    };
    let running = Running::start(limits).await;
    let mut idle = running.tcp().await;
    assert_eq!(get(&mut idle, "/healthz").await.0, 200);
    let mut half = running.tcp().await;
    half.write_all(b"GET /v1/").await.expect("write");
    let mut silent = running.unix().await;
    silent.write_all(b"G").await.expect("write");
    // Neither the 60 s header timeout nor the 30 s grace is waited for.
    let took = running.shut_down(PROMPTLY).await;
    assert!(took < PROMPTLY, "{took:?}");
    expect_eof(&mut idle, PROMPTLY, "idle connection after shutdown").await;
    expect_eof(&mut half, PROMPTLY, "half-sent connection after shutdown").await;
    expect_eof(&mut silent, PROMPTLY, "control connection after shutdown").await;
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let running = Running::start(ServerLimits {
        header_read_timeout: Duration::from_secs(60),
        ..test_limits()
    })
    .await;
    let mut client = running.unix().await;
    // Headers sent, body still on its way: the request is in flight.
    let body = json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "busybox"}]})
        .to_string();
    let (start, rest) = body.as_bytes().split_at(5);
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: pullauth\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await.expect("write");
    client.write_all(start).await.expect("write");
    // A request that was answered proves the server has read the head.
    let mut other = running.unix().await;
    assert_eq!(get(&mut other, "/healthz").await.0, 200);
    let stop = tokio::spawn(running.shut_down(PROMPTLY));
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.write_all(rest).await.expect("write");
    let (status, task) = tokio::time::timeout(PROMPTLY, read_response(&mut client))
        .await
        .expect("no response to the request in flight");
    assert_eq!(status, 201, "{task}");
    assert_eq!(task["Family"], "f");
    stop.await.expect("shutdown");
}

#[tokio::test]
async fn shutdown_cuts_off_a_request_that_outlasts_the_grace() {
    let running = Running::start(ServerLimits {
        header_read_timeout: Duration::from_secs(60),
        shutdown_grace: Duration::from_millis(500),
        ..test_limits()
    })
    .await;
    let mut client = running.unix().await;
    client
        .write_all(b"POST /v1/tasks HTTP/1.1\r\nHost: pullauth\r\nContent-Length: 100\r\n\r\n{")
        .await
        .expect("write");
    let mut other = running.unix().await;
    assert_eq!(get(&mut other, "/healthz").await.0, 200);
    drop(other);
    running.shut_down(PROMPTLY).await;
    expect_eof(&mut client, PROMPTLY, "request cut off after the grace").await;
}

async fn control_oneshot(request: Request<Body>) -> (StatusCode, Value) {
    let response = api::control(agent().await)
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {bytes:?}"));
    (status, body)
}

fn submission(body: impl Into<Body>) -> Request<Body> {
    Request::post("/v1/tasks")
        .header("content-type", "application/json")
        .body(body.into())
        .expect("request")
}

#[tokio::test]
async fn task_definition_over_one_mib_gets_413_with_a_json_error() {
    // Valid JSON, so only its size can be the reason.
    let padding = "x".repeat(api::MAX_TASK_DEFINITION_BYTES);
    let body = json!({"family": "f", "padding": padding,
        "containerDefinitions": [{"name": "a", "image": "busybox"}]})
    .to_string();
    assert!(body.len() > api::MAX_TASK_DEFINITION_BYTES);
    let (status, error) = control_oneshot(submission(body)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let message = error["error"].as_str().expect("error message");
    assert!(message.contains("1024 KiB"), "{message}");

    // Just under the limit is read (and then judged on its content).
    let fits = json!({"family": "f", "padding": "x".repeat(1000),
        "containerDefinitions": [{"name": "a", "image": "busybox"}]})
    .to_string();
    assert_eq!(
        control_oneshot(submission(fits)).await.0,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn eleven_containers_get_400_naming_the_limit() {
    let containers: Vec<Value> = (0..11)
        .map(|i| json!({"name": format!("c{i}"), "image": "busybox"}))
        .collect();
    let body = json!({"family": "f", "containerDefinitions": containers}).to_string();
    let (status, error) = control_oneshot(submission(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = error["error"].as_str().expect("error message");
    assert!(
        message.starts_with("containerDefinitions:") && message.contains("at most 10"),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_that_never_arrives_gets_408() {
    let never = Body::from_stream(futures_util::stream::pending::<Result<Vec<u8>, io::Error>>());
    // The clock is paused and jumps ahead; this bound stands for "never".
    let (status, error) =
        tokio::time::timeout(Duration::from_secs(600), control_oneshot(submission(never)))
            .await
            .expect("the body read never timed out");
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert!(error["error"].as_str().is_some(), "{error}");
}
