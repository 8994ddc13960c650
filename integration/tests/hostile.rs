//! The agent against hostile local clients: thousands of connections that
//! send half a request line and then nothing. It must keep answering on
//! both APIs, drop such connections after its header-read timeout, and
//! still stop promptly on SIGTERM. (In-process tests of the same limits,
//! with short timeouts, are in crates/pullauth-agent/tests/server.rs.)

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pullauth_integration::agent::{AgentSpec, http_tcp, http_unix, wait_for};
use pullauth_integration::raise_fd_limit;

/// How many hostile connections the flood opens.
const FLOOD: usize = 5_000;
/// What each hostile connection sends: half a request line.
const HALF_REQUEST: &[u8] = b"GET /v1/meta";
/// The agent's header-read timeout is 10 s; this leaves room for a loaded machine.
const HEADER_TIMEOUT_BOUND: Duration = Duration::from_secs(30);

/// How many file descriptors process `pid` has open.
fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Opens `count` connections to `addr` that each send half a request line.
fn half_sent_connections(addr: &str, count: usize) -> Vec<TcpStream> {
    let addr: SocketAddr = addr.parse().expect("agent address");
    (0..count)
        .map(|i| {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("connection {i} of {count}: {e}"));
            stream
                .write_all(HALF_REQUEST)
                .unwrap_or_else(|e| panic!("connection {i} of {count}: {e}"));
            stream
        })
        .collect()
}

#[test]
fn five_thousand_half_sent_connections_do_not_take_the_agent_down() {
    let limit = raise_fd_limit().expect("cannot raise RLIMIT_NOFILE");
    assert!(
        limit > (FLOOD as u64) + 500,
        "this test needs more than {} file descriptors; the hard limit is {limit}",
        FLOOD + 500
    );
    let spec = AgentSpec::new();
    let agent = spec.start();
    let before = open_fds(agent.pid());

    let flood = half_sent_connections(agent.listen(), FLOOD);
    // The agent has accepted (not merely the kernel queued) every one.
    wait_for("the agent to hold the flood's connections", || {
        (open_fds(agent.pid()) >= before + FLOOD).then_some(())
    });

    let started = Instant::now();
    let metadata = http_tcp(agent.listen(), "GET", "/v1/metadata", b"")
        .expect("GET /v1/metadata during the flood");
    let took = started.elapsed();
    assert_eq!(metadata.status, 200, "{}", metadata.text());
    assert!(
        took < Duration::from_secs(1),
        "/v1/metadata took {took:?} during the flood"
    );
    let health = http_unix(agent.control_socket(), "GET", "/healthz", b"")
        .expect("control socket during the flood");
    assert_eq!(health.status, 200, "{}", health.text());
    let tasks = http_unix(agent.control_socket(), "GET", "/v1/tasks", b"")
        .expect("control socket during the flood");
    assert_eq!(tasks.status, 200, "{}", tasks.text());

    // The flood is still open on our side; shutdown must not wait for it.
    let started = Instant::now();
    let status = agent.terminate();
    let took = started.elapsed();
    assert!(status.success(), "pullauth serve exited with {status}");
    assert!(
        took < Duration::from_secs(10),
        "SIGTERM took {took:?} with {FLOOD} half-sent connections open"
    );
    drop(flood);
    assert!(
        spec.logs().contains("SIGTERM: shutting down"),
        "{}",
        spec.log_tail(20)
    );
}

#[test]
fn half_sent_connections_are_dropped_after_the_header_timeout() {
    raise_fd_limit().expect("cannot raise RLIMIT_NOFILE");
    let spec = AgentSpec::new();
    let agent = spec.start();
    let mut hostile = half_sent_connections(agent.listen(), 100);
    let started = Instant::now();
    for (i, stream) in hostile.iter_mut().enumerate() {
        let left = HEADER_TIMEOUT_BOUND.saturating_sub(started.elapsed());
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("read timeout");
        let mut rest = Vec::new();
        match stream.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!(
                "connection {i}: not closed by the agent within {HEADER_TIMEOUT_BOUND:?}: {e}"
            ),
        }
    }
    // Closed by the timeout, not because the agent went away.
    let metadata = http_tcp(agent.listen(), "GET", "/v1/metadata", b"").expect("GET /v1/metadata");
    assert_eq!(metadata.status, 200);
    agent.terminate();
}
