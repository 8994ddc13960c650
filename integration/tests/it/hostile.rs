//! The agent against hostile local clients: thousands of connections that
//! send half a request line and then nothing. It must keep answering on
//! both APIs, hold at most its connection cap whatever the flood (a new
//! client takes the place of the longest-waiting one), drop such
//! connections after its header-read timeout, and still stop promptly on
//! SIGTERM. The agent is the suite's debug build: each test sets
//! `--client-header-timeout` for what it proves (the flood must outlast its
//! own opening, the drop test wants it short), so neither needs a release
//! build nor waits out the 10 s default. (In-process tests of the same
//! limits are in crates/pullauth-agent/tests/agent/server.rs; the default
//! itself is pinned by the CLI tests.)

use std::collections::HashSet;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pullauth_agent::server::MAX_INTROSPECTION_CONNECTIONS;
use pullauth_integration::agent::{AgentSpec, http_tcp, http_unix};
use pullauth_integration::raise_fd_limit;

/// How many hostile connections the flood opens.
const FLOOD: usize = 5_000;
/// What each hostile connection sends: half a request line.
const HALF_REQUEST: &[u8] = b"GET /v1/meta";
/// The header-read timeout of the drop test's agent.
const SHORT_HEADER_TIMEOUT: &str = "1s";
/// How long the drop test waits for the agent to close the connections:
/// well past [`SHORT_HEADER_TIMEOUT`], for a loaded machine.
const HEADER_TIMEOUT_BOUND: Duration = Duration::from_secs(20);
/// The flood's header-read timeout: far longer than opening the flood takes
/// on a debug build (~400 connections a second on a busy 2-core machine),
/// so only the cap can free places.
const FLOOD_HEADER_TIMEOUT: &str = "10m";

/// How many connections to local port `port` process `pid` has accepted
/// and holds open: its socket descriptors whose inode /proc/net/tcp lists as
/// an established connection on that port. (Connections still waiting in the
/// listen backlog have no descriptor yet.)
fn accepted_connections(pid: u32, port: u16) -> usize {
    let tcp = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let inodes: HashSet<&str> = tcp
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit_once(':')?.1;
            let established = *fields.get(3)? == "01";
            (established && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| fields.get(9).copied())
                .flatten()
        })
        .collect();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| {
            target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .is_some_and(|inode| inodes.contains(inode))
        })
        .count()
}

/// Threads that open the flood: a connect that meets a full listen backlog
/// waits a second for the SYN to be retried, and these waits overlap.
const OPENERS: usize = 8;

/// Opens `count` connections to `addr` that each send half a request line.
fn half_sent_connections(addr: &str, count: usize) -> Vec<TcpStream> {
    let addr: SocketAddr = addr.parse().expect("agent address");
    let open = |i: usize| {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connection {i} of {count}: {e}"));
        stream
            .write_all(HALF_REQUEST)
            .unwrap_or_else(|e| panic!("connection {i} of {count}: {e}"));
        stream
    };
    std::thread::scope(|scope| {
        let openers: Vec<_> = (0..OPENERS)
            .map(|t| scope.spawn(move || (t..count).step_by(OPENERS).map(open).collect::<Vec<_>>()))
            .collect();
        openers
            .into_iter()
            .flat_map(|opener| opener.join().expect("opener thread"))
            .collect()
    })
}

/// How many of `streams` the peer has closed: a non-blocking read finds the
/// end of the stream or a reset.
fn closed_by_peer(streams: &mut [TcpStream]) -> usize {
    let mut closed = 0;
    for stream in streams {
        let mut byte = [0u8; 1];
        closed += match stream.read(&mut byte) {
            Ok(0) => 1,
            Ok(_) => panic!("a half-sent connection got an answer"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => 1,
            Err(_) => 0,
        };
    }
    closed
}

#[test]
fn five_thousand_half_sent_connections_cost_at_most_the_cap() {
    let limit = raise_fd_limit().expect("cannot raise RLIMIT_NOFILE");
    assert!(
        limit > (FLOOD as u64) + 500,
        "this test needs more than {} file descriptors; the hard limit is {limit}",
        FLOOD + 500
    );
    let spec = AgentSpec::new()
        .arg("--client-header-timeout")
        .arg(FLOOD_HEADER_TIMEOUT);
    let agent = spec.start();
    let port: u16 = agent
        .listen()
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("agent port");

    let opening = Instant::now();
    let mut flood = half_sent_connections(agent.listen(), FLOOD);
    let opened_in = opening.elapsed();
    for stream in &flood {
        stream.set_nonblocking(true).expect("nonblocking");
    }
    // The agent accepts every one, each in the place of the longest-waiting
    // connection: all but the cap's worth are closed (without an answer),
    // and it never holds more than the cap (plus the one just accepted
    // while the connection it replaces closes).
    let mut most = 0;
    let mut closed = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while closed < FLOOD - MAX_INTROSPECTION_CONNECTIONS {
        most = most.max(accepted_connections(agent.pid(), port));
        closed = closed_by_peer(&mut flood);
        assert!(
            Instant::now() < deadline,
            "the agent closed {closed} of the {FLOOD} connections (opened in {opened_in:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    most = most.max(accepted_connections(agent.pid(), port));
    assert!(
        most <= MAX_INTROSPECTION_CONNECTIONS + 1,
        "the agent held {most} connections at once"
    );
    assert_eq!(closed, FLOOD - MAX_INTROSPECTION_CONNECTIONS);

    let started = Instant::now();
    let metadata = http_tcp(agent.listen(), "GET", "/v1/metadata", b"")
        .expect("GET /v1/metadata during the flood");
    let took = started.elapsed();
    assert_eq!(metadata.status, 200, "{}", metadata.text());
    // A liveness bound, not a speed figure: an agent whose accept loop or
    // runtime the flood starved would not answer at all.
    assert!(
        took < Duration::from_secs(10),
        "/v1/metadata took {took:?} during the flood"
    );
    let metrics = http_tcp(agent.listen(), "GET", "/metrics", b"").expect("GET /metrics");
    let text = metrics.text();
    let cap_line = format!(
        "pullauth_connections_open_max{{server=\"introspection\"}} {MAX_INTROSPECTION_CONNECTIONS}"
    );
    assert!(
        text.lines().any(|l| l == cap_line),
        "{cap_line} not in:\n{text}"
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
    let spec = AgentSpec::new()
        .arg("--client-header-timeout")
        .arg(SHORT_HEADER_TIMEOUT);
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
