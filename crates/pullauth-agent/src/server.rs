//! Serving both routers until shutdown, with limits that hold against
//! hostile clients.
//!
//! Each listener runs its own accept loop: a permit from a semaphore is
//! taken *before* `accept`, so once a listener has its maximum number of
//! connections the excess waits in the kernel's listen backlog and costs the
//! agent neither memory nor file descriptors. Every connection is one task
//! running hyper's HTTP/1 server with a header-read timeout, which also
//! closes idle keep-alive connections. On shutdown the listeners close at
//! once, connections without a request in flight are dropped, and the rest
//! get [`SHUTDOWN_GRACE`] before they are cut off.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;

use crate::agent::Agent;
use crate::api;

/// How long a client may take to send a request's head (request line and
/// headers), counted from the moment the server starts waiting for it. That
/// is also the idle timeout of a keep-alive connection: hyper starts this
/// timer again as it waits for each next request. Every honest client sends
/// its head in one write; 10 s leaves room for a loaded machine while a
/// client that sends half a request line is dropped quickly.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a response write may make no progress before the connection is
/// dropped: a client that sends requests but stops reading the answers
/// would otherwise hold its place under the cap for ever once the socket
/// buffers are full. A client reading at any pace keeps the write moving.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections the introspection listener holds open at once. Above
/// the 5,000 half-open connections one local process can easily open (the
/// case this limit was written for), so that `/v1/metadata` still answers
/// while they wait for [`HEADER_READ_TIMEOUT`]; yet far below the file
/// descriptors the agent has once [`raise_fd_limit`] ran (typically 524,288
/// under systemd). A half-sent connection costs the agent about 15 KiB
/// (measured: 9 MiB idle, 82 MiB with 5,000 of them), so ~120 MiB at the cap.
pub const MAX_INTROSPECTION_CONNECTIONS: usize = 8_192;

/// Most connections the control socket holds open at once. Only the
/// socket's owner (mode 0600) can connect, and its clients submit tasks one
/// request at a time; 128 is room for a busy scheduler and the bench's 50
/// concurrent submitters.
pub const MAX_CONTROL_CONNECTIONS: usize = 128;

/// File descriptors kept out of the connection caps: the state file, the
/// engine connections of concurrent pulls, logs, signals, the runtime.
pub const RESERVED_FDS: u64 = 256;

/// Largest request head (and read buffer) per connection. Requests to these
/// APIs are a short line and a few headers; 16 KiB (nginx allows 4 × 8 KiB)
/// keeps thousands of connections that each send a huge head from costing
/// gigabytes (hyper's default would allow ~400 KiB each).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How long requests in flight may take to finish once shutdown starts.
/// A request here is a read from the store or one task submission, which
/// takes milliseconds; after 5 s the agent stops regardless, well within the
/// 10 s a supervisor (systemd, Docker, ECS) waits before SIGKILL.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Listen backlog of the introspection socket: connections beyond the cap,
/// and bursts the accept loop has not caught up with, wait here in the
/// kernel at no cost to the agent. With tokio's default of 1,024 a burst of a
/// few thousand connects overflows it and clients stall for a second per
/// SYN retry; Linux clamps this to `net.core.somaxconn` (4,096 by default).
pub const LISTEN_BACKLOG: u32 = 4_096;

/// Pause after a failed `accept` (e.g. out of file descriptors), so that the
/// loop does not spin while the cause persists.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// What the servers allow each client; `Default` holds the production
/// values (the constants above). Tests use shorter ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time to send a request head; also the keep-alive idle timeout.
    pub header_read_timeout: Duration,
    /// Time a response write may stall (see [`WRITE_TIMEOUT`]).
    pub write_timeout: Duration,
    /// Connections open at once on the introspection listener.
    pub max_introspection_connections: usize,
    /// Connections open at once on the control socket.
    pub max_control_connections: usize,
    /// Time requests in flight get after shutdown starts.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            max_introspection_connections: MAX_INTROSPECTION_CONNECTIONS,
            max_control_connections: MAX_CONTROL_CONNECTIONS,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

impl ServerLimits {
    /// Lowers the connection caps so that both together, plus
    /// [`RESERVED_FDS`], fit in `fd_limit` descriptors: a cap the process
    /// cannot reach would let a flood of connections starve the store and
    /// the engine of descriptors. The control socket gets at most an eighth.
    pub fn fit_to_fd_limit(self, fd_limit: u64) -> ServerLimits {
        let budget = usize::try_from(fd_limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
        let control = self.max_control_connections.min((budget / 8).max(1));
        let introspection = self
            .max_introspection_connections
            .min(budget.saturating_sub(control).max(1));
        ServerLimits {
            max_introspection_connections: introspection,
            max_control_connections: control,
            ..self
        }
    }
}

/// The soft limit on open file descriptors (`RLIMIT_NOFILE`); `u64::MAX`
/// when unlimited.
pub fn fd_limit() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The soft descriptor limit to aim for when the hard limit is unlimited:
/// Linux's default `fs.nr_open`, above which the kernel refuses.
const UNLIMITED_FD_TARGET: u64 = 1 << 20;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as servers do at
/// start-up: the usual soft limit of 1,024 would make the connection caps
/// meaningless. Returns the soft limit in effect afterwards.
pub fn raise_fd_limit() -> io::Result<u64> {
    let limit = getrlimit(Resource::Nofile);
    let Some(soft) = limit.current else {
        return Ok(u64::MAX);
    };
    let target = limit.maximum.unwrap_or(UNLIMITED_FD_TARGET);
    if soft >= target {
        return Ok(soft);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        },
    )
    .map_err(io::Error::from)?;
    Ok(target)
}

/// Binds the introspection listener on the first address `addr` resolves
/// to, with [`LISTEN_BACKLOG`].
pub async fn bind_introspection(addr: &str) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As std and tokio do, so that a restart can bind while old
        // connections linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        match socket.bind(addr) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

/// Serves introspection on `tcp` and control on `unix` until `shutdown`
/// completes, with `wanted` (normally [`ServerLimits::default`]) fitted to
/// the process's descriptor limit; see [`run_with_limits`].
pub async fn run(
    agent: Agent,
    tcp: TcpListener,
    unix: UnixListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    wanted: ServerLimits,
) -> io::Result<()> {
    let limits = wanted.fit_to_fd_limit(fd_limit());
    if limits != wanted {
        tracing::warn!(
            fd_limit = fd_limit(),
            introspection_connections = limits.max_introspection_connections,
            control_connections = limits.max_control_connections,
            "the file descriptor limit (RLIMIT_NOFILE) is low, so fewer connections are \
             allowed; raise it (e.g. LimitNOFILE= in the systemd unit)"
        );
    }
    run_with_limits(agent, tcp, unix, shutdown, limits).await
}

/// Serves introspection on `tcp` and control on `unix` until `shutdown`
/// completes. Then both listeners close, idle connections are dropped and
/// requests in flight get `limits.shutdown_grace` to finish.
pub async fn run_with_limits(
    agent: Agent,
    tcp: TcpListener,
    unix: UnixListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServerLimits,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let introspection = serve(
        Endpoint {
            name: "introspection",
            listener: tcp,
            router: api::introspection(agent.clone()),
            max_connections: limits.max_introspection_connections,
        },
        limits,
        stop_rx.clone(),
    );
    let control = serve(
        Endpoint {
            name: "control",
            listener: unix,
            router: api::control(agent),
            max_connections: limits.max_control_connections,
        },
        limits,
        stop_rx,
    );
    tokio::join!(introspection, control);
    Ok(())
}

/// A listener the servers accept connections from.
trait Listener: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_io(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Listener for TcpListener {
    type Io = TcpStream;
    async fn accept_io(&self) -> io::Result<TcpStream> {
        let (stream, _) = self.accept().await?;
        // Responses are written whole; don't hold their last segment back.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Listener for UnixListener {
    type Io = UnixStream;
    async fn accept_io(&self) -> io::Result<UnixStream> {
        Ok(self.accept().await?.0)
    }
}

/// One listener and what it serves.
struct Endpoint<L> {
    /// For logs.
    name: &'static str,
    listener: L,
    router: Router,
    max_connections: usize,
}

/// Completes once shutdown was asked for (or nobody can ask any more).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Accepts and serves connections until `stop`, then waits (bounded) for
/// the connections still open.
async fn serve<L: Listener>(
    endpoint: Endpoint<L>,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
) {
    let Endpoint {
        name,
        listener,
        router,
        max_connections,
    } = endpoint;
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut connections = JoinSet::new();
    loop {
        // Finished connections leave the set here, so it stays within the cap.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let io = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            accepted = listener.accept_io() => match accepted {
                Ok(io) => io,
                Err(e) => {
                    tracing::warn!(server = name, error = %e, "cannot accept a connection");
                    tokio::select! {
                        () = stopped(&mut stop) => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                    }
                }
            },
        };
        connections.spawn(serve_connection(
            io,
            router.clone(),
            limits,
            stop.clone(),
            permit,
        ));
    }
    // New clients are refused from here on.
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            server = name,
            connections = connections.len(),
            grace = %humantime::format_duration(limits.shutdown_grace),
            "requests still running after the shutdown grace period; closing them"
        );
        connections.abort_all();
    }
}

/// Counts a connection's requests in flight while alive.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves one connection; `_permit` holds its place under the cap.
async fn serve_connection<I>(
    io: I,
    router: Router,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let in_flight = Arc::new(AtomicUsize::new(0));
    let service = {
        let in_flight = Arc::clone(&in_flight);
        let router = TowerToHyperService::new(router);
        hyper::service::service_fn(move |request| {
            let guard = InFlight::enter(&in_flight);
            let response = hyper::service::Service::call(&router, request);
            async move {
                let response = response.await;
                drop(guard);
                response
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_HEADER_BYTES);
    // Only writes need this: reads are bounded by the header timeout while a
    // head is awaited, and the control API bounds a body's arrival itself.
    let mut io = TimeoutStream::new(io);
    io.set_write_timeout(Some(limits.write_timeout));
    let connection = builder.serve_connection(TokioIo::new(Box::pin(io)), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            // Timeouts and clients that hang up: routine, not worth a warning.
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            return;
        }
        () = stopped(&mut stop) => {}
    }
    // Shutting down. Without a request in flight there is nothing to lose:
    // an idle or half-sent connection is closed now, not after its timeout.
    if in_flight.load(Ordering::SeqCst) == 0 {
        return;
    }
    connection.as_mut().graceful_shutdown();
    // Bounded by the grace period: `serve` aborts this task after it.
    let _ = connection.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_in_the_descriptor_limit() {
        let wanted = ServerLimits::default();
        // Room for everything: unchanged.
        assert_eq!(wanted.fit_to_fd_limit(524_288), wanted);
        assert_eq!(wanted.fit_to_fd_limit(u64::MAX), wanted);
        // The usual soft limit: both caps shrink and still leave the reserve.
        let low = wanted.fit_to_fd_limit(1_024);
        let total = low.max_introspection_connections + low.max_control_connections;
        assert_eq!(total as u64, 1_024 - RESERVED_FDS);
        assert_eq!(low.max_control_connections, 96);
        // Absurdly low: one connection each rather than none.
        let tiny = wanted.fit_to_fd_limit(10);
        assert_eq!(tiny.max_introspection_connections, 1);
        assert_eq!(tiny.max_control_connections, 1);
    }
}
