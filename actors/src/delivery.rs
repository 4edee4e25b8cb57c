//! How far an inbound call got towards its method, and what its caller's
//! `Finish` left to do: a part of the call's state (`CallState`), with a
//! lock of its own that is never held while taking another.
//!
//! - A `Finish` with `requireEarlyCancellationWorkaround` for a call still
//!   on its way to a local object waits until the method started
//!   ([`Delivery::once_delivered`]).
//! - Under `RunToCompletion` the method runs on after the `Finish`, but
//!   what it waits for on the caller's behalf (a tail call) hears that the
//!   caller left ([`Delivery::when_caller_left`]).

use futures::channel::oneshot;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Run once a call's method started.
pub(crate) type AfterDelivery = Box<dyn FnOnce() + Send>;

/// Not on its way yet (its target may still be unknown).
const NOT_YET: u8 = 0;
/// On its way to a local object's actor, which surely takes it.
const ON_ITS_WAY: u8 = 1;
/// On its way, and something waits for its delivery.
const AWAITED: u8 = 2;
/// Its method started.
const DELIVERED: u8 = 3;

/// A call's delivery, and its caller's leaving.
#[derive(Default)]
pub(crate) struct Delivery {
    /// How far the call got: an atomic, so that marking each local call
    /// takes no lock.
    stage: AtomicU8,
    waits: Mutex<Waits>,
}

/// What waits on a call's delivery or on its caller's leaving.
#[derive(Default)]
struct Waits {
    /// What to do once the method started.
    after: Option<AfterDelivery>,
    /// The caller let go while the method runs on, and who waits to hear.
    caller_left: bool,
    on_caller_left: Vec<oneshot::Sender<()>>,
}

impl Delivery {
    fn waits(&self) -> MutexGuard<'_, Waits> {
        // (A panic while holding it leaves plain data behind.)
        self.waits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The call is on its way to a local object's actor.
    pub(crate) fn on_its_way(&self) {
        let _ =
            self.stage
                .compare_exchange(NOT_YET, ON_ITS_WAY, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The call's method starts: gives what was to be done then.
    pub(crate) fn delivered(&self) -> Option<AfterDelivery> {
        // (What waits was stored under the lock with the stage set to
        // AWAITED: taking the lock finds it.)
        match self.stage.swap(DELIVERED, Ordering::AcqRel) {
            AWAITED => self.waits().after.take(),
            _ => None,
        }
    }

    /// Keeps `then` for when the call's method starts, if the call is on
    /// its way to it; otherwise gives it back (to be done now).
    pub(crate) fn once_delivered(&self, then: AfterDelivery) -> Option<AfterDelivery> {
        let mut waits = self.waits();
        let awaited =
            self.stage
                .compare_exchange(ON_ITS_WAY, AWAITED, Ordering::AcqRel, Ordering::Acquire);
        if awaited.is_ok() {
            waits.after = Some(then);
            None
        } else {
            Some(then)
        }
    }

    /// The caller let go of the call while its method runs on: what the
    /// method waits for on its behalf (a tail call) is not wanted any more.
    pub(crate) fn caller_left(&self) {
        let waiting = {
            let mut waits = self.waits();
            waits.caller_left = true;
            std::mem::take(&mut waits.on_caller_left)
        };
        for waiting in waiting {
            let _ = waiting.send(());
        }
    }

    /// Completes when the caller let go of the call (at once if it did),
    /// or when the call's state is dropped.
    pub(crate) fn when_caller_left(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut waits = self.waits();
        if waits.caller_left {
            let _ = tx.send(());
        } else {
            waits.on_caller_left.push(tx);
        }
        rx
    }
}
