//! HTTP/2 answers that leave together: one write for every answer ready on
//! a connection, instead of one write an answer.
//!
//! hyper serves an HTTP/2 connection as a task that reads frames and
//! writes what its streams queued, and hands each stream (a request, the
//! handler's future, sending the response) to an executor. With tokio's
//! executor every stream is a task of its own: it sends its response and
//! wakes the connection task, which runs next and writes that one answer.
//! Ten requests read with one `recvfrom` left with ten `writev`s.
//!
//! Two pieces change that without leaving hyper:
//!
//! - [`StreamExecutor`] keeps a connection's streams inside the
//!   connection's own task: while [`Connection`] polls hyper's connection,
//!   the streams hyper hands over are put in that connection's set (no
//!   spawn), and [`Connection`] polls them itself, each when it is woken,
//!   so a slow stream (a long poll) waits on its own and holds up no other.
//! - [`Socket`] holds what the connection writes over HTTP/2 until the
//!   round is over: hyper's HTTP/2 codec flushes after every data frame of
//!   256 bytes or more (every answer), and the socket takes those flushes
//!   into a buffer; [`Connection`] writes the buffer once, after it has
//!   polled the connection, every stream that was ready, and the connection
//!   again to frame their answers. Past [`HIGH`] bytes the socket writes at
//!   once, so a large body does not grow the buffer.
//!
//! HTTP/1.1 connections pass through unchanged: the socket only starts
//! holding writes once the connection has handed over its first HTTP/2
//! stream. Everything else (limits, timers, graceful shutdown, errors) is
//! hyper's and the router's, as before.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes held before the socket writes without waiting for the end of the
/// round.
pub(crate) const HIGH: usize = 64 * 1024;

/// How many times one poll goes round (connection, streams, connection)
/// while there is new work, before it yields to the other tasks.
const ROUNDS: usize = 16;

/// A stream hyper hands over: its handler and the sending of its answer.
type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

thread_local! {
    /// Where [`StreamExecutor`] puts the streams of the connection being
    /// polled on this thread; none outside [`Connection`]'s poll.
    static HANDED: RefCell<Option<Vec<Stream>>> = const { RefCell::new(None) };
}

/// hyper's executor for HTTP/2 streams: inside [`Connection`]'s poll, the
/// stream joins that connection's set; anywhere else (which hyper does
/// not do), it is spawned as a task.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        let mut future = Some(future);
        HANDED.with(|handed| {
            if let Ok(mut handed) = handed.try_borrow_mut() {
                if let (Some(streams), Some(stream)) = (handed.as_mut(), future.take()) {
                    streams.push(Box::pin(stream));
                }
            }
        });
        if let Some(future) = future {
            tokio::spawn(future);
        }
    }
}

/// Lends `streams` to [`StreamExecutor`] while `f` runs, and takes back
/// what was handed over, even if `f` unwinds.
fn handing<T>(streams: &mut Vec<Stream>, f: impl FnOnce() -> T) -> T {
    struct Lent<'a>(&'a mut Vec<Stream>);
    impl Drop for Lent<'_> {
        fn drop(&mut self) {
            HANDED.with(|handed| {
                if let Ok(mut handed) = handed.try_borrow_mut() {
                    if let Some(streams) = handed.take() {
                        *self.0 = streams;
                    }
                }
            });
        }
    }
    HANDED.with(|handed| {
        if let Ok(mut handed) = handed.try_borrow_mut() {
            *handed = Some(std::mem::take(streams));
        }
    });
    let _lent = Lent(streams);
    f()
}

/// The TCP stream and the writes held for the end of the round.
#[derive(Debug)]
struct Wire {
    stream: TcpStream,
    /// Bytes written by the connection and not yet by the socket, from
    /// `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// Holding writes (the connection speaks HTTP/2).
    holding: bool,
}

impl Wire {
    fn held(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Writes what is held, as far as the socket takes it.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.out[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => self.sent += written,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.sent = 0;
        if self.out.capacity() > 4 * HIGH {
            self.out.shrink_to(HIGH);
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for more, writing first if [`HIGH`] bytes are held.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.held() >= HIGH {
            self.poll_drain(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

/// A connection's TCP stream as hyper sees it: reads go straight to the
/// stream; over HTTP/2, writes are held until [`Connection`] ends its
/// round (or [`HIGH`] bytes are held).
#[derive(Debug, Clone)]
pub(crate) struct Socket {
    wire: Arc<Mutex<Wire>>,
}

impl Socket {
    /// Wraps an accepted stream; it writes through until told to hold.
    pub(crate) fn new(stream: TcpStream) -> Socket {
        Socket {
            wire: Arc::new(Mutex::new(Wire {
                stream,
                out: Vec::new(),
                sent: 0,
                holding: false,
            })),
        }
    }

    fn wire(&self) -> MutexGuard<'_, Wire> {
        // Nothing panics while holding the lock; a poisoned one is still
        // consistent.
        self.wire
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.wire().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut wire = self.wire();
        if !wire.holding {
            return Pin::new(&mut wire.stream).poll_write(cx, buf);
        }
        std::task::ready!(wire.poll_room(cx))?;
        wire.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut wire = self.wire();
        if !wire.holding {
            return Pin::new(&mut wire.stream).poll_write_vectored(cx, bufs);
        }
        std::task::ready!(wire.poll_room(cx))?;
        let mut taken = 0;
        for buf in bufs {
            wire.out.extend_from_slice(buf);
            taken += buf.len();
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut wire = self.wire();
        if wire.holding && wire.held() < HIGH {
            // [`Connection`] writes it at the end of the round.
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(wire.poll_drain(cx))?;
        Pin::new(&mut wire.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut wire = self.wire();
        std::task::ready!(wire.poll_drain(cx))?;
        Pin::new(&mut wire.stream).poll_shutdown(cx)
    }
}

/// The waker [`Connection`] polls its connection and streams with. A
/// stream that queues its answer wakes the connection; while the task is
/// polling anyway, that wake-up only asks for one more round, instead of
/// scheduling the task again once the poll is over (which also woke a
/// parked worker: a `futex` and a context switch an answer).
#[derive(Debug, Default)]
struct Nudge {
    /// The task's own waker, for wake-ups outside its poll.
    task: AtomicWaker,
    /// The task is inside its poll.
    polling: AtomicBool,
    /// Something woke the task while it was polling.
    again: AtomicBool,
}

impl Wake for Nudge {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Marked first, then looked: either the poll sees the mark before
        // it ends, or this sees that it has ended and wakes the task.
        self.again.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

/// One connection's task: hyper's connection future `C` (over a
/// [`Socket`], built with [`StreamExecutor`]), the HTTP/2 streams it
/// handed over, and the held writes.
pub(crate) struct Connection<C> {
    /// hyper's connection; none once it has finished.
    conn: Option<Pin<Box<C>>>,
    streams: FuturesUnordered<Stream>,
    /// Streams handed over and not yet in `streams`.
    handed: Vec<Stream>,
    socket: Socket,
    nudge: Arc<Nudge>,
    /// `nudge` as a waker.
    waker: Waker,
}

impl<C> Connection<C> {
    /// Drives `conn`, which reads and writes through `socket`.
    pub(crate) fn new(conn: C, socket: Socket) -> Connection<C> {
        let nudge = Arc::new(Nudge::default());
        Connection {
            conn: Some(Box::pin(conn)),
            streams: FuturesUnordered::new(),
            handed: Vec::new(),
            socket,
            waker: Waker::from(nudge.clone()),
            nudge,
        }
    }

    /// Moves the handed-over streams into the set; whether there were any.
    fn adopt(&mut self) -> bool {
        if self.handed.is_empty() {
            return false;
        }
        let mut wire = self.socket.wire();
        wire.holding = true;
        drop(wire);
        self.streams.extend(self.handed.drain(..));
        true
    }
}

impl<C: Future> Future for Connection<C> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.nudge.task.register(cx.waker());
        this.nudge.polling.store(true, Ordering::SeqCst);
        let waker = this.waker.clone();
        let mut inner = Context::from_waker(&waker);
        let mut rounds = 0;
        loop {
            this.nudge.again.store(false, Ordering::SeqCst);
            // The connection reads requests (handing over their streams)
            // and frames the answers the streams queued last round.
            if let Some(conn) = this.conn.as_mut() {
                if handing(&mut this.handed, || conn.as_mut().poll(&mut inner)).is_ready() {
                    this.conn = None;
                }
            }
            let mut work = this.adopt();
            // Each stream that is ready decides and queues its answer.
            let streams = &mut this.streams;
            while let Poll::Ready(Some(())) =
                handing(&mut this.handed, || streams.poll_next_unpin(&mut inner))
            {
                work = true;
            }
            work |= this.adopt();
            rounds += 1;
            if this.conn.is_none() || !(work || this.nudge.again.load(Ordering::SeqCst)) {
                break;
            }
            if rounds == ROUNDS {
                // More keeps coming: let the other tasks run first.
                cx.waker().wake_by_ref();
                break;
            }
        }
        // One write for everything framed this round.
        if let Poll::Ready(Err(_)) = this.socket.wire().poll_drain(&mut inner) {
            // The peer is gone: dropping the connection ends its streams.
            this.conn = None;
        }
        this.nudge.polling.store(false, Ordering::SeqCst);
        if this.nudge.again.swap(false, Ordering::SeqCst) {
            cx.waker().wake_by_ref();
        }
        if this.conn.is_none() && this.streams.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}
