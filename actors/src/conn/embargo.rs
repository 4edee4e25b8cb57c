//! Embargoes on this connection, carried out: ours start through the
//! mailbox (`StartEmbargoes` from a question whose paths need one,
//! `EmbargoImport` from a promise import that resolved), behind the calls
//! already under way; the peer's are reflected the same way. The core
//! keeps the embargo ids and decides where a reflection goes.

use super::{ConnActor, EmbargoWaiter};
use crate::capability::PromiseImport;
use crate::question::StartEmbargoes;
use actix::{Context, Handler};
use capnp_actix_proto::cap_descriptor::MessageTarget;
use capnp_actix_proto::message::DisembargoContext;
use std::sync::Weak;

/// A `Disembargo` reflecting the peer's embargo, to send once every call
/// queued before it in the connection's mailbox has gone out.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(super) struct SendDisembargo {
    /// What the Disembargo names.
    pub(super) target: MessageTarget,
    /// Which way it goes, with the embargo id.
    pub(super) context: DisembargoContext,
}

impl Handler<SendDisembargo> for ConnActor {
    type Result = ();

    fn handle(&mut self, msg: SendDisembargo, _ctx: &mut Context<Self>) {
        if let DisembargoContext::ReceiverLoopback(id) = msg.context {
            self.core.reflect(&msg.target, id);
            self.flush();
        }
    }
}

/// A promise import that resolved with calls under way through the peer:
/// embargo it, once the calls queued before this went out.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub(super) struct EmbargoImport {
    /// The import.
    pub(super) promise_id: u32,
    /// The promise, which holds the calls made after it resolved; taken
    /// when handled.
    pub(super) promise: Option<Weak<PromiseImport>>,
}

impl Drop for EmbargoImport {
    fn drop(&mut self) {
        // Never handled (the connection stopped): nothing can still be on
        // its way; the held calls go on.
        if let Some(promise) = self.promise.take() {
            EmbargoWaiter::Promise(promise).lift();
        }
    }
}

impl Handler<EmbargoImport> for ConnActor {
    type Result = ();

    fn handle(&mut self, mut msg: EmbargoImport, _ctx: &mut Context<Self>) {
        let Some(promise) = msg.promise.take() else {
            return;
        };
        let waiter = EmbargoWaiter::Promise(promise);
        if self.closing.is_some() {
            // Nothing can still be on its way: go on at once.
            waiter.lift();
            return;
        }
        self.core
            .embargo(MessageTarget::ImportedCap(msg.promise_id), waiter);
        self.flush();
    }
}

impl Handler<StartEmbargoes> for ConnActor {
    type Result = ();

    fn handle(&mut self, mut msg: StartEmbargoes, _ctx: &mut Context<Self>) {
        let Some(lift) = msg.lift.take() else {
            return;
        };
        for path in std::mem::take(&mut msg.paths) {
            let waiter = EmbargoWaiter::Pipelined {
                lift: lift.clone(),
                key: msg.key,
                path: path.clone(),
            };
            // The question is let go or the connection is closing: nothing
            // can still be on its way; go on at once.
            if let Err(waiter) = self.core.embargo_path(msg.key, &path, waiter) {
                waiter.lift();
            }
        }
        self.flush();
    }
}
