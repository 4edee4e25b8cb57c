//! What the connection does for the flow gate of the core
//! (`capnp_actix_proto::flow`), which every inbound message passes once
//! read (`inbound::receive`): refusing a call it has no room for, and
//! handling what waited once there is room.

use super::inbound::Received;
use super::{AnswerEntry, ConnActor};
use crate::call::CallState;
use actix::Context;
use capnp_actix_proto::flow::Kind;
use capnp_actix_proto::message as out;
use capnp_actix_proto::rpc_capnp::message;
use capnp_actix_proto::Error;

/// What a refused call's place in the gate counts for.
const REFUSED_BYTES: usize = 8;

impl ConnActor {
    /// Answers a call the flow limit has no room for, at once: an
    /// `overloaded` exception (or, for a call whose results the peer will
    /// take for another question, `resultsSentElsewhere`, with the same
    /// error left for that), saying `releaseParamCaps`: its params are not
    /// read, nor kept. Its answer waits in the gate for its turn.
    pub(super) fn refuse(&mut self, question_id: u32, results_elsewhere: bool) {
        log::debug!(
            "conn {}: refusing call {question_id}: over the flow limit",
            self.id
        );
        let refusal = Error::overloaded(format!(
            "the peer's calls waiting to run hold more than {} bytes (flow_limit)",
            self.gate.limit()
        ));
        let message = if results_elsewhere {
            let mut message = out::return_results_sent_elsewhere(question_id);
            if let Ok(root) = message.get_root::<message::Builder>() {
                if let Ok(message::Return(Ok(mut ret))) = root.which() {
                    ret.set_release_param_caps(true);
                }
            }
            message
        } else {
            out::return_refused(question_id, &refusal)
        };
        self.write(&message);
        let refused = Received::Refused {
            question_id,
            results_elsewhere,
            refusal,
        };
        self.waiting.add(&refused);
        self.gate.park(refused, Kind::Other, REFUSED_BYTES);
    }

    /// A refused call's turn in the gate: its answer, returned already.
    pub(super) fn enter_refused(
        &mut self,
        question_id: u32,
        results_elsewhere: bool,
        refusal: Error,
    ) -> Result<(), Error> {
        let entry = AnswerEntry {
            state: CallState::settled(Err(refusal)),
            actor: None,
            inbound_bytes: 0,
            results_elsewhere,
            sent: None,
        };
        self.answers
            .start(question_id, entry)
            .map_err(|e| Error::failed(e.to_string()))?;
        self.answers.returned(question_id, false);
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
