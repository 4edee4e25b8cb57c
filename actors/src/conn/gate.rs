//! The connection's entrance: every inbound frame passes the flow gate of
//! the core (`capnp_actix_proto::flow`), which says whether it is handled
//! now, waits behind calls over the flow limit, or (a call) is refused.

use super::ConnActor;
use crate::call::{CallState, PendingCall};
use actix::Context;
use capnp_actix_proto::flow::{Admit, Kind};
use capnp_actix_proto::frame::Frame;
use capnp_actix_proto::rpc_capnp::{message, return_};
use capnp_actix_proto::{CapDescriptor, Error};

/// What the gate needs to know of a frame: its kind, and for a call, the
/// question id to refuse.
fn kind_of(frame: &Frame) -> (Kind, Option<u32>) {
    let Ok(root) = frame.get_root::<message::Reader>() else {
        return (Kind::Other, None);
    };
    match root.which() {
        Ok(message::Call(Ok(call))) => (Kind::Call, Some(call.get_question_id())),
        Ok(message::Return(Ok(ret))) if names_no_answer(ret) => (Kind::IndependentReturn, None),
        _ => (Kind::Other, None),
    }
}

/// Whether handling this `Return` looks up none of the peer's questions
/// (so it may pass calls that wait): not `takeFromOtherQuestion`, and no
/// `receiverAnswer` capability in its results.
fn names_no_answer(ret: capnp_actix_proto::rpc_capnp::return_::Reader<'_>) -> bool {
    match ret.which() {
        Ok(return_::Results(Ok(results))) => match results.get_cap_table() {
            Ok(table) => table
                .iter()
                .all(|d| !matches!(CapDescriptor::read(d), Ok(CapDescriptor::ReceiverAnswer(_)))),
            Err(_) => false,
        },
        Ok(return_::Exception(_)) | Ok(return_::Canceled(())) => true,
        _ => false,
    }
}

impl ConnActor {
    /// Takes one inbound frame through the flow gate.
    pub(crate) fn receive(&mut self, frame: Frame, ctx: &mut Context<Self>) -> Result<(), Error> {
        let (kind, question_id) = kind_of(&frame);
        let bytes = frame.size_in_words() * 8;
        let result = match self.gate.offer(frame, kind, bytes) {
            Admit::Now(frame) => self.handle_frame(frame, ctx),
            Admit::Parked => Ok(()),
            Admit::Refuse(_) => self.refuse(question_id.unwrap_or(u32::MAX)),
        };
        self.backpressure.hold(self.gate.reader_should_wait());
        result
    }

    /// Answers a call the flow limit has no room for with `overloaded`,
    /// without reading (or keeping) its params.
    fn refuse(&mut self, question_id: u32) -> Result<(), Error> {
        log::debug!(
            "conn {}: refusing call {question_id}: over the flow limit",
            self.id
        );
        let refusal = Error::overloaded(format!(
            "the peer's calls waiting to run hold more than {} bytes (flow_limit)",
            self.gate.limit()
        ));
        let pending = PendingCall::new(CallState::settled(Err(refusal)));
        self.start_answer(question_id, pending, false, 0)?;
        if let Some(entry) = self.answers.get_mut(question_id) {
            entry.refused = true;
        }
        Ok(())
    }

    /// Handles what waited in the gate and may go on now.
    pub(crate) fn drain_parked(&mut self, ctx: &mut Context<Self>) {
        while self.closing.is_none() {
            let Some(frame) = self.gate.next_ready() else {
                break;
            };
            if let Err(e) = self.handle_frame(frame, ctx) {
                self.abort(e, ctx);
                break;
            }
        }
        self.backpressure.hold(self.gate.reader_should_wait());
    }
}
