//! Serving both routers until shutdown, with limits that hold against
//! hostile clients.
//!
//! Each listener runs its own accept loop under a cap on the connections
//! it serves at once, sized for the listener's use (a few local clients,
//! scrapers, the CLI). A client accepted while the cap is reached takes the
//! place of the connection that has waited longest for a request (a
//! half-sent head, or an idle keep-alive connection) for at least
//! [`EVICT_MIN_IDLE`], which is closed: a flood of slow clients costs at
//! most the cap in memory, and a fresh client is still answered within
//! that second. Clients that arrive together (a burst of submissions) are
//! never closed for each other: they are too new. Only when no connection
//! may give way does the accepted client wait for a place, and
//! further clients wait in the kernel's listen backlog, where they cost the
//! agent neither memory nor file descriptors. Every connection is one task
//! running hyper's HTTP/1 server with a header-read timeout, which also
//! closes idle keep-alive connections. On shutdown the listeners close at
//! once, connections without a request in flight are dropped, and the rest
//! get [`SHUTDOWN_GRACE`] before they are cut off.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;

use crate::agent::Agent;
use crate::api;
use crate::memory;
use crate::metrics::ConnectionMetrics;

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

/// Most connections the introspection listener holds open at once. Its
/// clients are a few local processes (the ECS agent's tooling, a scraper,
/// `curl`), and the bench's `wrk -c200`; 256 leaves room for those. A
/// half-sent connection costs the agent about 15 KiB (82 MiB with 5,000 of
/// them, measured), so the cap bounds what a flood of slow clients can
/// cost to about 4 MiB: beyond it the longest-idle connection is closed to
/// make room (see the module documentation).
pub const MAX_INTROSPECTION_CONNECTIONS: usize = 256;

/// Most connections the control socket holds open at once. Only the
/// socket's owner (mode 0600) can connect, and its clients submit tasks one
/// request at a time; 64 is room for a busy scheduler and the bench's 50
/// concurrent submitters.
pub const MAX_CONTROL_CONNECTIONS: usize = 64;

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
/// start-up: under the usual soft limit of 1,024, a flood of connections
/// would leave the store and the engine connections of concurrent pulls
/// few descriptors. Returns the soft limit in effect afterwards.
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
            metrics: agent.metrics().connections("introspection"),
        },
        limits,
        stop_rx.clone(),
    );
    let control = serve(
        Endpoint {
            name: "control",
            listener: unix,
            metrics: agent.metrics().connections("control"),
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
    /// For logs and the `server` label of the metrics.
    name: &'static str,
    listener: L,
    router: Router,
    max_connections: usize,
    metrics: ConnectionMetrics,
}

/// Completes once shutdown was asked for (or nobody can ask any more).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The connections one listener holds open, so that the accept loop can
/// close the one that has waited longest for a request when the cap is
/// reached.
#[derive(Debug, Default)]
struct Connections {
    /// Open connections by id.
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    /// Ids, and the order in which connections became idle: a connection
    /// takes the next number each time it starts waiting for a request.
    sequence: AtomicU64,
    /// Woken when a connection becomes idle, for an accept loop waiting
    /// for a place while every connection has a request in flight.
    became_idle: Notify,
}

/// What the accept loop knows about one open connection.
#[derive(Debug)]
struct Connection {
    /// Requests in flight on it (hyper serves one at a time; 0 or 1).
    in_flight: AtomicUsize,
    /// When it last started waiting for a request (a number from
    /// [`Connections::sequence`]; smaller is longer ago).
    idle_since: AtomicU64,
    /// The same moment in time: a connection is only closed for a new
    /// client once it has waited [`min_idle`] (one that has just connected
    /// and is sending its request is not slow, only new).
    idle_at: Mutex<tokio::time::Instant>,
    /// Tells the connection's task to close it.
    evict: Notify,
}

impl Connections {
    fn next(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        // The map stays consistent whatever panicked while holding it.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a new connection; it is open (and counted) until the
    /// returned guard drops.
    fn register(self: &Arc<Self>, metrics: &ConnectionMetrics) -> Registered {
        let id = self.next();
        let connection = Arc::new(Connection {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(id),
            idle_at: Mutex::new(tokio::time::Instant::now()),
            evict: Notify::new(),
        });
        self.lock().insert(id, Arc::clone(&connection));
        // Counts evicted connections too until they are closed. Only the
        // accept loop opens connections, so nothing races this maximum.
        let open = metrics.open.inc().saturating_add(1);
        if open > metrics.open_max.get() {
            metrics.open_max.set(open);
        }
        Registered {
            connections: Arc::clone(self),
            id,
            connection,
            open: metrics.open.clone(),
        }
    }

    /// Tells the connection that has waited longest for a request to close
    /// (it is forgotten at once, so it is not chosen twice). False if every
    /// connection has a request in flight.
    fn evict_longest_idle(&self, min_idle: Duration) -> bool {
        let mut map = self.lock();
        let longest = map
            .iter()
            .filter(|(_, c)| c.in_flight.load(Ordering::SeqCst) == 0)
            .filter(|(_, c)| {
                c.idle_at
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .elapsed()
                    >= min_idle
            })
            .min_by_key(|(_, c)| c.idle_since.load(Ordering::SeqCst))
            .map(|(id, _)| *id);
        let Some(connection) = longest.and_then(|id| map.remove(&id)) else {
            return false;
        };
        drop(map);
        // Stored if the task is not waiting yet: it closes when it looks.
        connection.evict.notify_one();
        true
    }
}

/// A connection's place in [`Connections`]; dropping it forgets the
/// connection.
struct Registered {
    connections: Arc<Connections>,
    id: u64,
    connection: Arc<Connection>,
    open: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
        self.open.dec();
        memory::note_release();
    }
}

/// How long a connection must have waited for a request before it may be
/// closed to make room for a new client: a second, or half the header
/// timeout when that is shorter. Many clients arriving together (a burst
/// of task submissions) are queued, never reset; slow ones still give way
/// well before their header timeout.
pub const EVICT_MIN_IDLE: Duration = Duration::from_secs(1);

fn min_idle(limits: &ServerLimits) -> Duration {
    EVICT_MIN_IDLE.min(limits.header_read_timeout / 2)
}

/// Takes a place under the cap for a connection just accepted. When there
/// is none, closes the connection that has waited longest for a request
/// and takes its place; when every connection has a request in flight,
/// waits for one to finish or close. `None` once shutdown starts.
async fn take_place(
    permits: &Arc<Semaphore>,
    connections: &Connections,
    metrics: &ConnectionMetrics,
    min_idle: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Option<OwnedSemaphorePermit> {
    loop {
        if let Ok(permit) = Arc::clone(permits).try_acquire_owned() {
            return Some(permit);
        }
        let idle = connections.became_idle.notified();
        tokio::pin!(idle);
        // Registered before looking, so a connection that becomes idle
        // after the look still wakes this loop.
        idle.as_mut().enable();
        let evicted = connections.evict_longest_idle(min_idle);
        if evicted {
            metrics.evicted.inc();
        }
        tokio::select! {
            biased;
            () = stopped(stop) => return None,
            permit = Arc::clone(permits).acquire_owned() => return permit.ok(),
            // Only worth waking for when nothing was evicted: the evicted
            // connection's place is on its way.
            () = idle, if !evicted => {}
            // A connection too new to close becomes old enough.
            () = tokio::time::sleep(min_idle), if !evicted => {}
        }
    }
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
        metrics,
    } = endpoint;
    metrics
        .limit
        .set(i64::try_from(max_connections).unwrap_or(i64::MAX));
    let permits = Arc::new(Semaphore::new(max_connections));
    let tracked = Arc::new(Connections::default());
    let mut connections = JoinSet::new();
    loop {
        // Finished connections leave the set here, so it stays within the cap.
        while connections.try_join_next().is_some() {}
        // A free place is taken before `accept`: under the cap, no client
        // waits for the bookkeeping below.
        let free = Arc::clone(&permits).try_acquire_owned().ok();
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
        // At the cap, this client is served once a place is made for it;
        // meanwhile further clients wait in the listen backlog.
        let permit = match free {
            Some(permit) => permit,
            None => {
                match take_place(&permits, &tracked, &metrics, min_idle(&limits), &mut stop).await {
                    Some(permit) => permit,
                    None => break,
                }
            }
        };
        let registered = tracked.register(&metrics);
        connections.spawn(serve_connection(
            io,
            router.clone(),
            limits,
            stop.clone(),
            (permit, registered),
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

/// Counts a connection's requests in flight while alive; the last one out
/// marks the connection idle.
struct InFlight {
    connection: Arc<Connection>,
    connections: Arc<Connections>,
}

impl InFlight {
    fn enter(registered: &Registered) -> InFlight {
        registered
            .connection
            .in_flight
            .fetch_add(1, Ordering::SeqCst);
        InFlight {
            connection: Arc::clone(&registered.connection),
            connections: Arc::clone(&registered.connections),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let idle_since = self.connections.next();
        self.connection
            .idle_since
            .store(idle_since, Ordering::SeqCst);
        *self
            .connection
            .idle_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = tokio::time::Instant::now();
        if self.connection.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.connections.became_idle.notify_one();
        }
    }
}

/// A response body that keeps its request counted as in flight until hyper
/// has taken all of it (and drops it), so that a connection is not taken
/// for idle, and closed to make room, while its response is being written.
struct Guarded {
    body: axum::body::Body,
    _guard: InFlight,
}

impl http_body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    // What gives a response its Content-Length.
    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves one connection; `place` holds its place under the cap and in the
/// listener's [`Connections`].
async fn serve_connection<I>(
    io: I,
    router: Router,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
    place: (OwnedSemaphorePermit, Registered),
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let registered = Arc::new(place.1);
    let service = {
        let registered = Arc::clone(&registered);
        let router = TowerToHyperService::new(router);
        hyper::service::service_fn(move |request| {
            let guard = InFlight::enter(&registered);
            let response = hyper::service::Service::call(&router, request);
            async move {
                // In flight until hyper has written the whole body.
                let response = response.await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    axum::body::Body::new(Guarded {
                        body,
                        _guard: guard,
                    })
                }))
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
    let in_flight = || registered.connection.in_flight.load(Ordering::SeqCst);
    tokio::select! {
        result = connection.as_mut() => {
            // Timeouts and clients that hang up: routine, not worth a warning.
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            return;
        }
        // Chosen to make room while it had no request in flight. A request
        // that arrived since is answered first.
        () = registered.connection.evict.notified() => {
            if in_flight() == 0 {
                return;
            }
            connection.as_mut().graceful_shutdown();
        }
        () = stopped(&mut stop) => {
            // Shutting down. Without a request in flight there is nothing to
            // lose: an idle or half-sent connection is closed now, not after
            // its timeout.
            if in_flight() == 0 {
                return;
            }
            connection.as_mut().graceful_shutdown();
        }
    }
    // Bounded by the header and write timeouts, and at shutdown by the
    // grace period: `serve` aborts this task after it.
    let _ = connection.await;
    // Locals drop before parameters: the socket is closed and the
    // connection forgotten before `place.0` releases its permit, so the
    // open connections never exceed the cap, even for a moment.
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
        // The usual soft limit of 1,024 fits both caps with the reserve.
        assert_eq!(wanted.fit_to_fd_limit(1_024), wanted);
        // Lower: both caps shrink and still leave the reserve.
        let low = wanted.fit_to_fd_limit(512);
        let total = low.max_introspection_connections + low.max_control_connections;
        assert_eq!(total as u64, 512 - RESERVED_FDS);
        assert_eq!(low.max_control_connections, 32);
        // Absurdly low: one connection each rather than none.
        let tiny = wanted.fit_to_fd_limit(10);
        assert_eq!(tiny.max_introspection_connections, 1);
        assert_eq!(tiny.max_control_connections, 1);
    }
}
