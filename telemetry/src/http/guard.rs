//! Bounds on the monitoring server's connections, which axum's server sets none of: at most
//! [`Bounds::connections`] served at once (further ones wait in the kernel's listen backlog
//! until one ends), at most [`Bounds::per_source`] of them from one address (one more is closed
//! at once), each closed once it has been silent for [`Bounds::idle`], and each closed when a
//! request it began is not answered within [`Bounds::request`] of its first byte. A client that
//! opens connections and sends nothing, leaves them open, or sends a request a byte at a time
//! holds neither file descriptors nor tasks past those bounds, nor every place from one address.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// How many connections the server takes at once, how many from one address, how long one may
/// be silent, and how long a request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub connections: usize,
    /// A quarter of the places by default: a scraper and a few probes need one or two each, and
    /// one address cannot hold them all.
    pub per_source: usize,
    /// Longer than a scrape interval (15–60 s is usual), so a scraper's kept connection is not
    /// closed between two scrapes.
    pub idle: Duration,
    /// From a request's first byte to its answer's first: longer than a scrape's refresh may
    /// take ([`super::PROBE_TIMEOUT`]) behind the scrapes before it, so that only a request
    /// that does not come whole is cut.
    pub request: Duration,
}

impl Bounds {
    pub const DEFAULT: Bounds = Bounds {
        connections: 64,
        per_source: 16,
        idle: Duration::from_secs(120),
        request: Duration::from_secs(30),
    };
}

/// A listener that accepts only while fewer than its bound of connections are open.
#[derive(Debug)]
pub(super) struct Guarded {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    sources: Arc<Sources>,
    bounds: Bounds,
}

impl Guarded {
    pub(super) fn new(listener: TcpListener, bounds: Bounds) -> Guarded {
        Guarded {
            listener,
            slots: Arc::new(Semaphore::new(bounds.connections.max(1))),
            sources: Arc::default(),
            bounds,
        }
    }
}

/// The connections open from each address.
#[derive(Debug, Default)]
struct Sources(Mutex<HashMap<IpAddr, usize>>);

impl Sources {
    /// A place for one more connection from `address`, unless `most` are open from it.
    fn take(self: &Arc<Sources>, address: IpAddr, most: usize) -> Option<Source> {
        let address = address.to_canonical();
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(address).or_insert(0);
        if *count >= most.max(1) {
            return None;
        }
        *count += 1;
        Some(Source {
            sources: self.clone(),
            address,
        })
    }
}

/// One connection's place among its address's, given back when dropped.
#[derive(Debug)]
struct Source {
    sources: Arc<Sources>,
    address: IpAddr,
}

impl Drop for Source {
    fn drop(&mut self) {
        let mut open = self
            .sources
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

impl axum::serve::Listener for Guarded {
    type Io = Connection;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Connection, std::net::SocketAddr) {
        // The semaphore is never closed.
        let slot = self.slots.clone().acquire_owned().await;
        loop {
            match self.listener.accept().await {
                Ok((stream, address)) => {
                    let most = self.bounds.per_source;
                    let Some(source) = self.sources.take(address.ip(), most) else {
                        tracing::debug!(
                            %address,
                            "closed a monitoring connection: {most} are open from its address"
                        );
                        continue;
                    };
                    let connection = Connection {
                        stream,
                        _slot: slot.ok(),
                        _source: source,
                        idle: self.bounds.idle,
                        silence: Box::pin(tokio::time::sleep(self.bounds.idle)),
                        request: self.bounds.request,
                        answer: None,
                    };
                    return (connection, address);
                }
                // A connection gone before it was taken: the next one, at once.
                Err(error) if connection_error(&error) => {}
                // Out of descriptors, say: said, and a pause rather than a spin, as axum's own
                // listener does.
                Err(error) => {
                    tracing::warn!("the monitoring server cannot accept a connection: {error}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accept's failure that is the connection's, not the listener's.
fn connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection: its slot and its address's place are given back when it is
/// dropped, and it fails with `TimedOut` once nothing was read or written for its idle time, or
/// once bytes it read are not answered within the request's time.
#[derive(Debug)]
pub(super) struct Connection {
    stream: TcpStream,
    _slot: Option<OwnedSemaphorePermit>,
    _source: Source,
    idle: Duration,
    silence: Pin<Box<Sleep>>,
    request: Duration,
    /// When the bytes read since the last answer must be answered by: set by the first of them,
    /// cleared by an answer's first byte.
    answer: Option<Pin<Box<Sleep>>>,
}

impl Connection {
    /// `polled`, the inner stream's answer, seen through the idle bound: bytes that `moved`
    /// restart the silence; a stream still waiting fails with `TimedOut` once silent too long,
    /// and else registers the waker for that moment, so a silent connection is woken to end.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        moved: bool,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending if self.silence.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("silent for {:?}", self.idle),
                )))
            }
            Poll::Pending
                if self
                    .answer
                    .as_mut()
                    .is_some_and(|answer| answer.as_mut().poll(cx).is_ready()) =>
            {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("a request not whole and answered within {:?}", self.request),
                )))
            }
            Poll::Pending => Poll::Pending,
            ready => {
                if moved {
                    self.heard();
                }
                ready
            }
        }
    }

    fn heard(&mut self) {
        let now = Instant::now();
        // A bound too far to add is no bound: about thirty years on.
        let until = now
            .checked_add(self.idle)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        self.silence.as_mut().reset(until);
    }

    fn written(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let moved = matches!(written, Poll::Ready(Ok(bytes)) if bytes > 0);
        if moved {
            // Answered: the next request's time starts at its first byte.
            self.answer = None;
        }
        self.timed(cx, written, moved)
    }

    /// Bytes of a request arrived: the first since the last answer starts its time.
    fn asked(&mut self) {
        if self.answer.is_none() {
            self.answer = Some(Box::pin(tokio::time::sleep(self.request)));
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        let moved = buf.filled().len() > before;
        if moved {
            self.asked();
        }
        self.timed(cx, read, moved)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.written(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.written(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    // A TCP stream's flush and shutdown are ready at once (tokio's hold nothing back), so they
    // need no timer.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
