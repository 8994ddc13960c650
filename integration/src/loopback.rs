//! The accept loop every loopback stub of the harness runs on.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A TCP listener on a free 127.0.0.1 port, accepting on a thread of its
/// own until dropped. Each connection goes to the handler on that thread
/// (which may keep it, serve it, or hand it to a thread of its own). The
/// loop polls a stop flag every 10 ms, so a drop returns promptly.
#[derive(Debug)]
pub(crate) struct Loopback {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Loopback {
    /// Starts accepting; `name` names the thread (with the port).
    pub(crate) fn start(
        name: &str,
        mut on_connection: impl FnMut(TcpStream) + Send + 'static,
    ) -> Loopback {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
        let port = listener.local_addr().expect("no local address").port();
        listener
            .set_nonblocking(true)
            .expect("cannot make the listener non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            thread::Builder::new()
                .name(format!("{name}-{port}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((stream, _)) => on_connection(stream),
                            Err(_) => thread::sleep(Duration::from_millis(10)),
                        }
                    }
                })
                .expect("cannot start the accept thread")
        };
        Loopback {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// The port it listens on, on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
