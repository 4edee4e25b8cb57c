//! The caller's side of streaming calls (`-> stream`, P-15): a typed
//! client's streaming requests go out through its [`StreamSlot`], which
//! carries out the core's [`Stream`]. Every request is sent at once, so
//! that no call made after it (streaming or not) can overtake it; what the
//! window holds back is the send's promise, which resolves once the window
//! has room again (not when the call returns). After the first failure,
//! every later streaming call on the client fails with it, unsent, and so
//! do the promises still waiting.
//!
//! A slot belongs to a client and its clones (capnp's `add_ref`), as the
//! C++ reference keeps a flow controller per client.

use crate::request::Request;
use capnp_actix_proto::stream::{Admit, FlowControl, Stream};
use capnp_actix_proto::Error;
use futures::channel::oneshot;
use futures::future::{self, Either, FutureExt};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

/// Where a client's streaming calls stand (see [`stream_state`]).
///
/// [`stream_state`]: crate::stream_state
///
/// ```
/// let state = capnp_actix::StreamState { window: 1 << 20, in_flight: 0, failed: false };
/// assert!(state.in_flight < state.window);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamState {
    /// The window, in bytes.
    pub window: usize,
    /// Bytes of streaming calls sent and not yet returned.
    pub in_flight: usize,
    /// Whether a streaming call failed (and every later one fails with it).
    pub failed: bool,
}

/// One client's streaming calls.
pub(crate) struct StreamSlot(RefCell<Inner>);

struct Inner {
    stream: Stream,
    /// The flow control `stream`'s controller is of.
    flow_control: FlowControl,
    /// Senders waiting for room, in the order they sent.
    waiting: VecDeque<oneshot::Sender<Result<(), Error>>>,
    /// Whether a timer will look at the waiting senders again (a pacing
    /// controller's window opens with time, not only with returns).
    timer: bool,
}

impl StreamSlot {
    /// A slot with the default flow control (the connection's replaces it
    /// at the first call sent once the connection is known).
    pub(crate) fn new() -> Rc<StreamSlot> {
        let flow_control = FlowControl::default();
        Rc::new(StreamSlot(RefCell::new(Inner {
            stream: Stream::new(flow_control.controller()),
            flow_control,
            waiting: VecDeque::new(),
            timer: false,
        })))
    }
}

impl StreamSlot {
    /// Where its calls stand.
    pub(crate) fn state(&self) -> StreamState {
        let inner = self.0.borrow();
        StreamState {
            window: inner.stream.window(),
            in_flight: inner.stream.in_flight(),
            failed: inner.stream.failure().is_some(),
        }
    }
}

/// Sends `request` now as a streaming call on `slot` (unless the stream
/// failed). The future completes when the sender may go on.
pub(crate) fn send_streaming(
    slot: &Rc<StreamSlot>,
    request: Request,
) -> impl Future<Output = Result<(), Error>> {
    let bytes = request.bytes();
    let now = Instant::now();
    // The flow control is the connection's, once the target's connection
    // is known (a promise's may be known only from its second call on).
    let flow_control = request.target().flow_control();
    let admitted = {
        let mut inner = slot.0.borrow_mut();
        if let Some(flow_control) = flow_control.filter(|f| *f != inner.flow_control) {
            inner.stream.set_controller(flow_control.controller());
            inner.flow_control = flow_control;
        }
        let admitted = inner.stream.send(bytes, now);
        // (Behind senders that wait already, a sender waits too.)
        match admitted {
            Admit::Now if !inner.waiting.is_empty() => Admit::Wait,
            other => other,
        }
    };
    if let Admit::Failed(e) = admitted {
        return Either::Left(future::ready(Err(e)));
    }
    let pending = request.send_streaming();
    let returned = slot.clone();
    actix_rt::spawn(async move {
        let outcome = pending.await;
        returned.0.borrow_mut().stream.returned(
            bytes,
            now,
            outcome.as_ref().map(|_| ()),
            Instant::now(),
        );
        drop(outcome);
        release_waiting(&returned);
    });
    match admitted {
        Admit::Now => Either::Left(future::ready(Ok(()))),
        _ => {
            let (tx, rx) = oneshot::channel();
            slot.0.borrow_mut().waiting.push_back(tx);
            // (The call may have returned already: look again.)
            release_waiting(slot);
            Either::Right(rx.map(|admitted| {
                admitted.unwrap_or_else(|_| Err(Error::disconnected("the stream was dropped")))
            }))
        }
    }
}

/// Lets waiting senders go on, in order, while the window has room; after
/// a failure, fails them all. Where the window opens with time, a timer
/// looks again when it will have.
fn release_waiting(slot: &Rc<StreamSlot>) {
    let now = Instant::now();
    let (released, wake_at): (Vec<_>, _) = {
        let mut inner = slot.0.borrow_mut();
        match inner.stream.ready(now) {
            Err(e) => {
                let failed = inner.waiting.drain(..).map(|w| (w, Err(e.clone())));
                (failed.collect(), None)
            }
            // (Their calls are in flight already: room now is room for all.)
            Ok(true) => (inner.waiting.drain(..).map(|w| (w, Ok(()))).collect(), None),
            Ok(false) if inner.waiting.is_empty() || inner.timer => (Vec::new(), None),
            Ok(false) => {
                let wake_at = inner.stream.wake_at(now);
                inner.timer = wake_at.is_some();
                (Vec::new(), wake_at)
            }
        }
    };
    for (waiting, outcome) in released {
        let _ = waiting.send(outcome);
    }
    if let Some(at) = wake_at {
        let slot = slot.clone();
        actix_rt::spawn(async move {
            actix_rt::time::sleep_until(at.into()).await;
            slot.0.borrow_mut().timer = false;
            release_waiting(&slot);
        });
    }
}
