//! A TCP peer that accepts connections and never answers, for timeout tests.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::loopback::Loopback;

/// A loopback listener that accepts every connection, reads nothing and
/// writes nothing, holding the connections open until dropped.
#[derive(Debug)]
pub struct Stall {
    accepted: Arc<AtomicUsize>,
    /// Holds the accepted connections; dropping it closes them.
    server: Loopback,
}

impl Stall {
    /// Starts the listener on a free 127.0.0.1 port.
    pub fn start() -> Stall {
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let mut held: Vec<TcpStream> = Vec::new();
        let server = Loopback::start("stall", move |stream| {
            held.push(stream);
            counter.fetch_add(1, Ordering::Relaxed);
        });
        Stall { accepted, server }
    }

    /// `127.0.0.1:PORT`, where clients connect and then wait forever.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.server.port())
    }

    /// How many connections have been accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}
