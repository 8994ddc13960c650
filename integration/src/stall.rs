//! A TCP peer that accepts connections and never answers, for timeout tests.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A loopback listener that accepts every connection, reads nothing and
/// writes nothing, holding the connections open until dropped.
#[derive(Debug)]
pub struct Stall {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Stall {
    /// Starts the listener on a free 127.0.0.1 port.
    pub fn start() -> Stall {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
        let port = listener.local_addr().expect("no local address").port();
        listener
            .set_nonblocking(true)
            .expect("cannot make the listener non-blocking");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            thread::Builder::new()
                .name(format!("stall-{port}"))
                .spawn(move || {
                    let mut held: Vec<TcpStream> = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                held.push(stream);
                                accepted.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => thread::sleep(Duration::from_millis(10)),
                        }
                    }
                })
                .expect("cannot start the stall thread")
        };
        Stall {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`, where clients connect and then wait forever.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many connections have been accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
