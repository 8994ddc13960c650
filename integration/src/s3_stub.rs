//! A stub S3 endpoint (plain HTTP on loopback) for what moto cannot do:
//! answer `GetObject` with a body, then stall, or stream a body without a
//! length while counting what it sent, or hold a bucket in one region and
//! redirect requests signed for another. It is a stub: it answers every
//! request alike, whatever the bucket, key or signature (only
//! [`S3Mode::InRegion`] reads the signature's scope).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use crate::loopback::Loopback;

/// What the stub does with the next request.
#[derive(Debug, Clone)]
pub enum S3Mode {
    /// `200` with this body and its `Content-Length`.
    Serve(Vec<u8>),
    /// Reads the request and never answers, holding the connection.
    Stall,
    /// `200` with a chunked body of up to this many bytes (no length), sent
    /// in 64 KiB chunks until the client goes away.
    Stream(u64),
    /// `503 SlowDown` for the first `failures` requests, then `200` with
    /// `body`.
    FailThenServe { failures: usize, body: Vec<u8> },
    /// `403` with a chunked error body of up to this many bytes, sent in
    /// 64 KiB chunks until the client goes away (counted like
    /// [`S3Mode::Stream`]).
    StreamError(u64),
    /// `200` announcing 1 KiB more than `body`, which it sends, and then
    /// nothing more, holding the connection.
    StallBody(Vec<u8>),
    /// The bucket lives in `region`: a request signed for that region
    /// (`Credential=.../<region>/s3/aws4_request`) gets `200` with `body`;
    /// any other gets S3's `301 PermanentRedirect` with
    /// `x-amz-bucket-region`.
    InRegion { region: String, body: Vec<u8> },
}

#[derive(Debug)]
struct Shared {
    mode: Mutex<S3Mode>,
    /// Connections held by [`S3Mode::Stall`].
    stalled: AtomicUsize,
    /// Body bytes written by [`S3Mode::Stream`] before the client left.
    streamed: AtomicU64,
    streams_done: AtomicUsize,
    /// Every request's head, in order.
    heads: Mutex<Vec<String>>,
}

/// See the module docs.
#[derive(Debug)]
pub struct S3Stub {
    shared: Arc<Shared>,
    server: Loopback,
}

impl S3Stub {
    /// Starts the stub on a free 127.0.0.1 port.
    pub fn start(mode: S3Mode) -> S3Stub {
        let shared = Arc::new(Shared {
            mode: Mutex::new(mode),
            stalled: AtomicUsize::new(0),
            streamed: AtomicU64::new(0),
            streams_done: AtomicUsize::new(0),
            heads: Mutex::new(Vec::new()),
        });
        let server = {
            let shared = shared.clone();
            let held = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
            Loopback::start("s3-stub", move |stream| {
                let (shared, held) = (shared.clone(), held.clone());
                thread::spawn(move || serve(stream, &shared, &held));
            })
        };
        S3Stub { shared, server }
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }

    /// Changes what the next requests get.
    pub fn set_mode(&self, mode: S3Mode) {
        *self
            .shared
            .mode
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = mode;
    }

    /// Connections being held ([`S3Mode::Stall`], [`S3Mode::StallBody`]).
    pub fn stalled(&self) -> usize {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    /// The head (request line and headers) of each request so far, in
    /// order.
    pub fn heads(&self) -> Vec<String> {
        self.shared
            .heads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The region each request so far was signed for, in order (`?` if
    /// unsigned).
    pub fn signed_for(&self) -> Vec<String> {
        self.heads()
            .iter()
            .map(|head| signing_region(head).unwrap_or("?").to_string())
            .collect()
    }

    /// Body bytes the finished streams wrote, and how many finished.
    pub fn streamed(&self) -> (u64, usize) {
        (
            self.shared.streamed.load(Ordering::SeqCst),
            self.shared.streams_done.load(Ordering::SeqCst),
        )
    }
}

/// Reads one request head (the stub's clients send no request body).
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// `200 OK` with `body` and its length.
fn ok_answer(body: &[u8]) -> Vec<u8> {
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body);
    answer
}

/// The region of a SigV4 `Authorization` header's credential scope
/// (`Credential=<key id>/<date>/<region>/<service>/aws4_request`).
fn signing_region(head: &str) -> Option<&str> {
    let auth = head.lines().find_map(|l| {
        l.strip_prefix("authorization: ")
            .or_else(|| l.strip_prefix("Authorization: "))
    })?;
    let scope = auth.split("Credential=").nth(1)?.split(',').next()?;
    scope.split('/').nth(2)
}

fn serve(mut stream: TcpStream, shared: &Shared, held: &Mutex<Vec<TcpStream>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    while let Some(head) = read_head(&mut stream) {
        shared
            .heads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(head.clone());
        let mode = shared
            .mode
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match mode {
            S3Mode::Serve(body) => {
                if stream.write_all(&ok_answer(&body)).is_err() {
                    return;
                }
            }
            S3Mode::InRegion { region, body } => {
                let answer = if signing_region(&head) == Some(region.as_str()) {
                    ok_answer(&body)
                } else {
                    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PermanentRedirect</Code>\
                               <Message>The bucket you are attempting to access must be addressed using the specified endpoint. \
                               Please send all future requests to this endpoint.</Message></Error>";
                    format!(
                        "HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: {region}\r\n\
                         Content-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                        xml.len()
                    )
                    .into_bytes()
                };
                if stream.write_all(&answer).is_err() {
                    return;
                }
            }
            S3Mode::FailThenServe { failures, body } => {
                let seen = shared
                    .heads
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len();
                let answer = if seen <= failures {
                    let xml = "<Error><Code>SlowDown</Code>\
                               <Message>Please reduce your request rate.</Message></Error>";
                    format!(
                        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n\
                         Content-Length: {}\r\n\r\n{xml}",
                        xml.len()
                    )
                    .into_bytes()
                } else {
                    ok_answer(&body)
                };
                if stream.write_all(&answer).is_err() {
                    return;
                }
            }
            S3Mode::StallBody(body) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                    body.len() + 1024
                );
                if stream.write_all(head.as_bytes()).is_err() || stream.write_all(&body).is_err() {
                    return;
                }
                if let Ok(clone) = stream.try_clone() {
                    held.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(clone);
                }
                shared.stalled.fetch_add(1, Ordering::SeqCst);
                return;
            }
            S3Mode::Stall => {
                if let Ok(clone) = stream.try_clone() {
                    held.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(clone);
                }
                shared.stalled.fetch_add(1, Ordering::SeqCst);
                return;
            }
            S3Mode::Stream(limit) | S3Mode::StreamError(limit) => {
                let head = if matches!(mode, S3Mode::Stream(_)) {
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
                     Transfer-Encoding: chunked\r\n\r\n"
                } else {
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n\
                     Transfer-Encoding: chunked\r\n\r\n"
                };
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0u64;
                if stream.write_all(head.as_bytes()).is_ok() {
                    while sent < limit {
                        let frame = format!("{:x}\r\n", chunk.len());
                        if stream.write_all(frame.as_bytes()).is_err()
                            || stream.write_all(&chunk).is_err()
                            || stream.write_all(b"\r\n").is_err()
                        {
                            break;
                        }
                        sent += chunk.len() as u64;
                    }
                    if sent >= limit {
                        let _ = stream.write_all(b"0\r\n\r\n");
                    }
                }
                shared.streamed.fetch_add(sent, Ordering::SeqCst);
                shared.streams_done.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}
