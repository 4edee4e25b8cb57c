//! Flow control between a connection's reader, its writer and the actor.
//!
//! The reader stops taking bytes off the transport while either
//! - the connection's flow gate says so (messages parked behind calls
//!   over the flow limit hold more than it allows, see
//!   `capnp_actix_proto::flow`), or
//! - more than twice `send_buffer_size` bytes wait for the transport (the
//!   peer does not read what we owe it, so reading more would only queue
//!   more replies without bound).
//!
//! Whoever lowers a count wakes the reader, which looks again.

use futures::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

/// Counts shared by the reader, the writer task and the connection actor.
pub(crate) struct Backpressure {
    /// Bytes handed to the writer task and not yet written.
    queued: AtomicUsize,
    /// The flow gate asks the reader to wait.
    held: AtomicBool,
    /// Above this many `queued` bytes, the reader waits.
    queued_limit: usize,
    /// The reader, when it waits.
    reader: AtomicWaker,
    /// Answers started here and not yet returned: while there are any,
    /// more `Return`s may be on their way, and a write may wait for them.
    answers_running: AtomicUsize,
    /// Bytes read off the transport so far.
    bytes_read: AtomicU64,
}

impl Backpressure {
    pub(crate) fn new(send_buffer_size: usize) -> Self {
        Backpressure {
            queued: AtomicUsize::new(0),
            held: AtomicBool::new(false),
            queued_limit: send_buffer_size.saturating_mul(2),
            reader: AtomicWaker::new(),
            answers_running: AtomicUsize::new(0),
            bytes_read: AtomicU64::new(0),
        }
    }

    /// An answer started.
    pub(crate) fn answer_started(&self) {
        self.answers_running.fetch_add(1, Ordering::Relaxed);
    }

    /// An answer's actor reported its outcome.
    pub(crate) fn answer_reported(&self) {
        let _ = self
            .answers_running
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Whether answers started here have not returned yet.
    pub(crate) fn answers_running(&self) -> bool {
        self.answers_running.load(Ordering::Relaxed) > 0
    }

    /// The reader took `bytes` off the transport.
    pub(crate) fn read(&self, bytes: usize) {
        self.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Bytes read off the transport so far.
    pub(crate) fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// How many answers started here have not returned yet.
    pub(crate) fn running(&self) -> usize {
        self.answers_running.load(Ordering::Relaxed)
    }

    /// Bytes waiting for the transport.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub(crate) fn add_queued(&self, bytes: usize) {
        self.queued.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn written(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
        self.reader.wake();
    }

    /// Whether the flow gate holds the reader; letting go wakes it.
    pub(crate) fn hold(&self, held: bool) {
        // A load first: the usual call changes nothing, and needs no
        // read-modify-write on the per-return path.
        if self.held.load(Ordering::Relaxed) == held {
            return;
        }
        if self.held.swap(held, Ordering::Relaxed) && !held {
            self.reader.wake();
        }
    }

    fn may_read(&self) -> bool {
        self.queued() <= self.queued_limit && !self.held.load(Ordering::Relaxed)
    }

    /// Completes when the reader may take more bytes.
    pub(crate) fn permit(&self) -> Permit<'_> {
        Permit(self)
    }
}

/// The future of [`Backpressure::permit`].
pub(crate) struct Permit<'a>(&'a Backpressure);

impl Future for Permit<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.may_read() {
            return Poll::Ready(());
        }
        self.0.reader.register(cx.waker());
        // Looked at again after registering, so that a wake-up between the
        // first look and the registration is not lost.
        if self.0.may_read() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}
