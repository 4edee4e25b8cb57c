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
use capnp_actix_proto::stream::{Admit, FixedWindow, Stream};
use capnp_actix_proto::Error;
use futures::channel::oneshot;
use futures::future::{self, Either, FutureExt};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

/// One client's streaming calls.
pub(crate) struct StreamSlot(RefCell<Inner>);

struct Inner {
    stream: Stream,
    /// Senders waiting for room, in the order they sent.
    waiting: VecDeque<oneshot::Sender<Result<(), Error>>>,
}

impl StreamSlot {
    /// A slot with the default window.
    pub(crate) fn new() -> Rc<StreamSlot> {
        Rc::new(StreamSlot(RefCell::new(Inner {
            stream: Stream::new(Box::new(FixedWindow::default())),
            waiting: VecDeque::new(),
        })))
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
    // The window is the connection's, once the target's connection is
    // known (a promise's may be known only from its second call on).
    let window = request.target().stream_window();
    let admitted = {
        let mut inner = slot.0.borrow_mut();
        if let Some(window) = window {
            inner.stream.set_window(window);
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
    let pending = request.send();
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
/// a failure, fails them all.
fn release_waiting(slot: &Rc<StreamSlot>) {
    let released: Vec<_> = {
        let mut inner = slot.0.borrow_mut();
        match inner.stream.ready() {
            Err(e) => inner
                .waiting
                .drain(..)
                .map(|w| (w, Err(e.clone())))
                .collect(),
            // (Their calls are in flight already: room now is room for all.)
            Ok(true) => inner.waiting.drain(..).map(|w| (w, Ok(()))).collect(),
            Ok(false) => Vec::new(),
        }
    };
    for (waiting, outcome) in released {
        let _ = waiting.send(outcome);
    }
}
