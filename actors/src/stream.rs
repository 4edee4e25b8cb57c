//! The caller's side of streaming calls (`-> stream`, P-15): a typed
//! client's streaming requests go out through its [`StreamSlot`], which
//! carries out the core's [`Stream`]: a send completes once the window has
//! room (not when the call returns), requests that must wait go out in
//! order as returns make room, and after the first failure every later
//! streaming call on the client fails with it, unsent.
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
    /// Requests waiting for room, in the order they were sent.
    waiting: VecDeque<Waiting>,
}

/// A request waiting for room in the window.
struct Waiting {
    request: Request,
    bytes: usize,
    /// Told when it goes (or fails unsent).
    admitted: oneshot::Sender<Result<(), Error>>,
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

/// Sends `request` as a streaming call on `slot`: now if the window has
/// room and nothing waits before it, else once returns make room. The
/// future completes when the request goes out (or fails unsent).
pub(crate) fn send_streaming(
    slot: &Rc<StreamSlot>,
    request: Request,
) -> impl Future<Output = Result<(), Error>> {
    let bytes = request.bytes();
    let now = Instant::now();
    let admitted = {
        let mut inner = slot.0.borrow_mut();
        if inner.waiting.is_empty() {
            inner.stream.admit(bytes, now)
        } else {
            match inner.stream.failure() {
                Some(e) => Admit::Failed(e.clone()),
                None => Admit::Wait,
            }
        }
    };
    match admitted {
        Admit::Now => {
            go(slot, request, bytes, now);
            Either::Left(future::ready(Ok(())))
        }
        Admit::Failed(e) => Either::Left(future::ready(Err(e))),
        Admit::Wait => {
            let (tx, rx) = oneshot::channel();
            slot.0.borrow_mut().waiting.push_back(Waiting {
                request,
                bytes,
                admitted: tx,
            });
            Either::Right(rx.map(|admitted| {
                admitted.unwrap_or_else(|_| Err(Error::disconnected("the stream was dropped")))
            }))
        }
    }
}

/// Sends an admitted request; its return makes room for the next.
fn go(slot: &Rc<StreamSlot>, request: Request, bytes: usize, sent: Instant) {
    let pending = request.send();
    let slot = slot.clone();
    actix_rt::spawn(async move {
        let outcome = pending.await;
        slot.0.borrow_mut().stream.returned(
            bytes,
            sent,
            outcome.as_ref().map(|_| ()),
            Instant::now(),
        );
        drop(outcome);
        admit_waiting(&slot);
    });
}

/// Sends the waiting requests that fit now, in order; after a failure,
/// fails them all.
fn admit_waiting(slot: &Rc<StreamSlot>) {
    loop {
        let now = Instant::now();
        let next = {
            let mut inner = slot.0.borrow_mut();
            let Some(bytes) = inner.waiting.front().map(|w| w.bytes) else {
                return;
            };
            match inner.stream.admit(bytes, now) {
                Admit::Now => inner.waiting.pop_front(),
                Admit::Wait => return,
                Admit::Failed(e) => {
                    let failed: Vec<_> = inner.waiting.drain(..).collect();
                    drop(inner);
                    for waiting in failed {
                        let _ = waiting.admitted.send(Err(e.clone()));
                    }
                    return;
                }
            }
        };
        if let Some(Waiting {
            request,
            bytes,
            admitted,
        }) = next
        {
            go(slot, request, bytes, now);
            let _ = admitted.send(Ok(()));
        }
    }
}
