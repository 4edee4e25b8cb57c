//! How far an inbound call got towards its method, and what its caller's
//! `Finish` left to do: kept in the call's state (`CallState`), here apart.
//!
//! - A `Finish` with `requireEarlyCancellationWorkaround` for a call still
//!   on its way to a local object waits until the method started
//!   (`CallState::once_delivered`, with [`Stage`]).
//! - Under `RunToCompletion` the method runs on after the `Finish`, but
//!   what it waits for on the caller's behalf (a tail call) hears that the
//!   caller left ([`Delivery::when_caller_left`]).

use futures::channel::oneshot;
use std::sync::atomic::{AtomicU8, Ordering};

/// Run once a call's method started.
pub(crate) type AfterDelivery = Box<dyn FnOnce() + Send>;

/// How far a call got towards a local object's method, kept apart from
/// the call's lock (an atomic: marking each local call costs no lock).
pub(crate) struct Stage(AtomicU8);

/// Not on its way yet (its target may still be unknown).
const NOT_YET: u8 = 0;
/// On its way to a local object's actor, which surely takes it.
const ON_ITS_WAY: u8 = 1;
/// On its way, and something waits for its delivery.
const AWAITED: u8 = 2;
/// Its method started.
const DELIVERED: u8 = 3;

impl Default for Stage {
    fn default() -> Self {
        Stage(AtomicU8::new(NOT_YET))
    }
}

impl Stage {
    /// The call is on its way to a local object's actor.
    pub(crate) fn on_its_way(&self) {
        let _ = self
            .0
            .compare_exchange(NOT_YET, ON_ITS_WAY, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The call's method starts: gives whether something waits for it
    /// (then take it under the call's lock: it is there, or about to be,
    /// since [`await_delivery`](Self::await_delivery) runs under it).
    pub(crate) fn delivered(&self) -> bool {
        self.0.swap(DELIVERED, Ordering::AcqRel) == AWAITED
    }

    /// Under the call's lock: whether something may wait for the delivery
    /// (the call is on its way and not delivered yet).
    pub(crate) fn await_delivery(&self) -> bool {
        self.0
            .compare_exchange(ON_ITS_WAY, AWAITED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// What waits for a call's delivery, and its caller's leaving.
#[derive(Default)]
pub(crate) struct Delivery {
    /// What to do once the method started.
    pub(crate) after: Option<AfterDelivery>,
    /// The caller let go while the method runs on, and who waits to hear.
    caller_left: bool,
    on_caller_left: Vec<oneshot::Sender<()>>,
}

impl Delivery {
    /// The caller left: gives who waited to hear it.
    pub(crate) fn caller_left(&mut self) -> Vec<oneshot::Sender<()>> {
        self.caller_left = true;
        std::mem::take(&mut self.on_caller_left)
    }

    /// A receiver that completes when the caller left (at once if it did).
    pub(crate) fn when_caller_left(&mut self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if self.caller_left {
            let _ = tx.send(());
        } else {
            self.on_caller_left.push(tx);
        }
        rx
    }
}
