//! What the connection does for the flow gate of the core
//! (`capnp_actix_proto::flow`), which every inbound message passes once
//! read (`inbound::receive`): refusing a call it has no room for, and
//! handling what waited once there is room.

use super::ConnActor;
use crate::call::{CallState, PendingCall};
use actix::Context;
use capnp_actix_proto::Error;

impl ConnActor {
    /// Answers a call the flow limit has no room for with `overloaded`,
    /// without reading (or keeping) its params.
    pub(super) fn refuse(&mut self, question_id: u32) -> Result<(), Error> {
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
            let Some(received) = self.gate.next_ready() else {
                break;
            };
            if let Err(e) = self.handle_received(received, ctx) {
                self.abort(e, ctx);
                break;
            }
        }
        self.backpressure.hold(self.gate.reader_should_wait());
    }
}
