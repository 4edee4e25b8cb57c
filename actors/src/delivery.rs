//! How far an inbound call got towards its method, and what its caller's
//! `Finish` left to do: kept in the call's state (`CallState`), here apart.
//!
//! - A `Finish` with `requireEarlyCancellationWorkaround` for a call still
//!   on its way to a local object waits until the method started
//!   ([`Delivery::once_delivered`]).
//! - Under `RunToCompletion` the method runs on after the `Finish`, but
//!   what it waits for on the caller's behalf (a tail call) hears that the
//!   caller left ([`Delivery::when_caller_left`]).

use futures::channel::oneshot;

/// Run once a call's method started.
pub(crate) type AfterDelivery = Box<dyn FnOnce() + Send>;

/// How far a call got towards a local object's method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Not on its way yet (its target may still be unknown).
    NotYet,
    /// On its way to a local object's actor, which surely takes it.
    OnItsWay,
    /// Its method started.
    Delivered,
}

/// A call's delivery, and its caller's leaving.
pub(crate) struct Delivery {
    stage: Stage,
    /// What to do once the method started.
    after: Option<AfterDelivery>,
    /// The caller let go while the method runs on, and who waits to hear.
    caller_left: bool,
    on_caller_left: Vec<oneshot::Sender<()>>,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            stage: Stage::NotYet,
            after: None,
            caller_left: false,
            on_caller_left: Vec::new(),
        }
    }
}

impl Delivery {
    /// The call is on its way to a local object's actor.
    pub(crate) fn on_its_way(&mut self) {
        if self.stage == Stage::NotYet {
            self.stage = Stage::OnItsWay;
        }
    }

    /// The call's method starts: gives what was to be done then.
    pub(crate) fn delivered(&mut self) -> Option<AfterDelivery> {
        self.stage = Stage::Delivered;
        self.after.take()
    }

    /// Keeps `then` for when the method starts, if the call is on its way
    /// to it; otherwise gives it back, to be done now.
    pub(crate) fn once_delivered(&mut self, then: AfterDelivery) -> Option<AfterDelivery> {
        if self.stage == Stage::OnItsWay {
            self.after = Some(then);
            None
        } else {
            Some(then)
        }
    }

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
