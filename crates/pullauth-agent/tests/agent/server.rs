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
    // The server answers every request it reads until the socket buffers
    // fill: thousands of answers in a debug build, on a machine the rest of
    // the suite loads. The bound only has to be finite: without the write
    // timeout the client would never be dropped.
    let bound = Duration::from_secs(60);
    let dropped = tokio::time::timeout(bound, async {
        loop {
            if let Err(e) = writer.write_all(&requests).await {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a client that never reads kept its connection for {bound:?}"));
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

/// Reads one response whose body is plain text (`/metrics`).
async fn get_text<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: pullauth\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
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
                    let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + length]);
                    return (status, body.into_owned());
                }
            }
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed mid-response");
            raw.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(PROMPTLY, read)
        .await
        .unwrap_or_else(|_| panic!("no response to GET {path} within {PROMPTLY:?}"))
}

/// The value of the sample `name` in a Prometheus text exposition.
fn sample(metrics: &str, name: &str) -> i64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{metrics}"))
}

/// Whether the server has closed a connection that never got an answer:
/// a non-blocking read finds the end of the stream (or a reset) at once;
/// false while it is open. Loopback delivers the server's close before its
/// `close` returns, so this needs no waiting.
fn closed_without_answer(stream: &mut impl std::io::Read) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("a slow client got an answer"),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => true,
        Err(e) => panic!("read: {e}"),
    }
}

/// A request line and a header, never the blank line that ends the head.
const HALF_HEAD: &[u8] = b"GET /v1/metadata HTTP/1.1\r\nHost: pullauth\r\n";

#[tokio::test]
async fn a_fresh_client_is_answered_while_slow_clients_fill_the_cap() {
    const CAP: usize = 4;
    const SLOW: usize = 12;
    // The header timeout never fires here: only the cap can free places.
    let running = Running::start(ServerLimits {
        header_read_timeout: Duration::from_secs(600),
        max_introspection_connections: CAP,
        ..test_limits()
    })
    .await;
    // Blocking sockets: connecting only needs the kernel (the listen
    // backlog), and the reads below look at the socket without the runtime.
    let mut slow: Vec<std::net::TcpStream> = (0..SLOW)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(running.addr).expect("connect");
            std::io::Write::write_all(&mut stream, HALF_HEAD).expect("write");
            stream.set_nonblocking(true).expect("nonblocking");
            stream
        })
        .collect();

    let mut fresh = running.tcp().await;
    let (status, body) = get(&mut fresh, "/v1/metadata").await;
    assert_eq!(status, 200);
    assert_eq!(body["Cluster"], "test");

    // Every connection the server accepted beyond the cap took the place
    // of a slow one, closed before its place was given away: with the
    // fresh client in one place, CAP - 1 slow ones are still open.
    let states: Vec<bool> = slow.iter_mut().map(closed_without_answer).collect();
    let closed = states.iter().filter(|&&c| c).count();
    assert_eq!(closed, SLOW + 1 - CAP, "closed: {states:?}");
    // The longest-waiting go first: those closed come first.
    assert!(
        states.iter().skip_while(|&&c| c).all(|&c| !c),
        "not the longest-waiting ones were closed: {states:?}"
    );

    let (status, metrics) = get_text(&mut fresh, "/metrics").await;
    assert_eq!(status, 200);
    let server = "{server=\"introspection\"}";
    let cap = i64::try_from(CAP).expect("small");
    assert_eq!(
        sample(&metrics, &format!("pullauth_connection_limit{server}")),
        cap
    );
    // Never more than the cap, and the cap was reached.
    assert_eq!(
        sample(&metrics, &format!("pullauth_connections_open_max{server}")),
        cap
    );
    assert!(sample(&metrics, &format!("pullauth_connections_open{server}")) <= cap);
    let evicted = sample(
        &metrics,
        &format!("pullauth_connections_evicted_total{server}"),
    );
    assert_eq!(evicted, i64::try_from(SLOW + 1 - CAP).expect("small"));
    running.shut_down(PROMPTLY).await;
}

#[tokio::test]
async fn the_control_socket_answers_a_fresh_client_while_slow_ones_fill_its_cap() {
    const CAP: usize = 3;
    const SLOW: usize = 10;
    let running = Running::start(ServerLimits {
        header_read_timeout: Duration::from_secs(600),
        max_control_connections: CAP,
        ..test_limits()
    })
    .await;
    let mut slow: Vec<std::os::unix::net::UnixStream> = (0..SLOW)
        .map(|_| {
            let mut stream =
                std::os::unix::net::UnixStream::connect(&running.socket).expect("connect");
            std::io::Write::write_all(&mut stream, b"POST /v1/tasks HTTP/1.1\r\n").expect("write");
            stream.set_nonblocking(true).expect("nonblocking");
            stream
        })
        .collect();
    let mut fresh = running.unix().await;
    assert_eq!(get(&mut fresh, "/healthz").await.0, 200);
    let states: Vec<bool> = slow.iter_mut().map(closed_without_answer).collect();
    let closed = states.iter().filter(|&&c| c).count();
    assert_eq!(closed, SLOW + 1 - CAP, "closed: {states:?}");
    let mut scraper = running.tcp().await;
    let (_, metrics) = get_text(&mut scraper, "/metrics").await;
    let server = "{server=\"control\"}";
    assert_eq!(
        sample(&metrics, &format!("pullauth_connections_open_max{server}")),
        i64::try_from(CAP).expect("small")
    );
    running.shut_down(PROMPTLY).await;
}

/// Sends a task submission's head asking `Expect: 100-continue` and waits
/// for the `100 Continue` that hyper sends once the handler reads the body:
/// from then on the request is in flight. Returns the body to send.
async fn start_submission<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    family: &str,
) -> String {
    let body =
        json!({"family": family, "containerDefinitions": [{"name": "a", "image": "busybox"}]})
            .to_string();
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: pullauth\r\nContent-Type: application/json\r\n\
         Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let expected = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(PROMPTLY, stream.read_exact(&mut got))
        .await
        .expect("no 100 Continue")
        .expect("read");
    assert_eq!(got, expected, "{}", String::from_utf8_lossy(&got));
    body
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_while_every_place_has_a_request_in_flight() {
    let running = Running::start(ServerLimits {
        header_read_timeout: Duration::from_secs(600),
        max_control_connections: 2,
        ..test_limits()
    })
    .await;
    let mut first = running.unix().await;
    let first_body = start_submission(&mut first, "first").await;
    let mut second = running.unix().await;
    let second_body = start_submission(&mut second, "second").await;

    // The cap is reached and nothing is idle: a third client waits in the
    // listen backlog, and no request in flight is cut off for it.
    let mut third = running.unix().await;
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: pullauth\r\n\r\n")
        .await
        .expect("write");
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "a connection beyond the cap was served: {early:?}"
    );
    // The introspection port has its own cap and still answers.
    let mut other = running.tcp().await;
    assert_eq!(get(&mut other, "/healthz").await.0, 200);

    // The first request completes; its connection, now idle, makes room.
    first.write_all(first_body.as_bytes()).await.expect("write");
    let (status, task) = tokio::time::timeout(PROMPTLY, read_response(&mut first))
        .await
        .expect("no response to the first submission");
    assert_eq!(status, 201, "{task}");
    expect_eof(&mut first, PROMPTLY, "the idle connection that made room").await;
    let (status, _) = tokio::time::timeout(PROMPTLY, read_response(&mut third))
        .await
        .expect("the waiting client was not served once a place was free");
    assert_eq!(status, 200);

    // The second request was in flight throughout and was not cut off.
    second
        .write_all(second_body.as_bytes())
        .await
        .expect("write");
    let (status, task) = tokio::time::timeout(PROMPTLY, read_response(&mut second))
        .await
        .expect("no response to the second submission");
    assert_eq!(status, 201, "{task}");
    assert_eq!(task["Family"], "second");
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
