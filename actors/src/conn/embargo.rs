//! Embargoes on this connection: the `Disembargo` messages we send for our
//! own embargoes (`StartEmbargoes`, from a question whose paths need one,
//! and `handle_resolve` for promise imports), and the peer's, which we
//! lift (`receiverLoopback`) or reflect (`senderLoopback`) along exactly
//! what we described (the core's `embargo::reflect_to`).

use super::ConnActor;
use crate::question::StartEmbargoes;
use actix::{ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use capnp_actix_proto::cap_descriptor::MessageTarget;
use capnp_actix_proto::embargo::reflect_to;
use capnp_actix_proto::message::DisembargoContext;
use capnp_actix_proto::{message as out, CapDescriptor, Error, PromisedAnswer};

use super::EmbargoWaiter;

impl ConnActor {
    pub(super) fn handle_disembargo(
        &mut self,
        target: MessageTarget,
        context: DisembargoContext,
        ctx: &mut Context<Self>,
    ) -> Result<(), Error> {
        match context {
            DisembargoContext::ReceiverLoopback(id) => match self.embargoes.lift(id) {
                Some(waiter) => {
                    waiter.lift();
                    Ok(())
                }
                None => Err(Error::failed(format!(
                    "Disembargo receiverLoopback for embargo {id}, which we never started"
                ))),
            },
            DisembargoContext::SenderLoopback(id) => {
                // The peer resolved a promise we described to it to
                // something of its own, and calls it made through us may
                // still be on their way back. Reflect the Disembargo along
                // exactly what we described (the Tribble rule), behind
                // those calls.
                match target {
                    MessageTarget::ImportedCap(export_id) => {
                        let described = self
                            .exports
                            .get(export_id)
                            .and_then(|entry| entry.resolved.as_ref())
                            .map(|described| described.descriptor.clone());
                        self.reflect(id, described.as_ref())
                    }
                    MessageTarget::PromisedAnswer(promised) => {
                        self.reflect_on_answer(id, promised, ctx)
                    }
                }
            }
        }
    }

    /// Reflects a `senderLoopback` that names a path into one of our
    /// answers, once that path has settled here too (past any embargo of
    /// ours on it, when the call was forwarded to another vat).
    fn reflect_on_answer(
        &mut self,
        id: u32,
        promised: PromisedAnswer,
        ctx: &mut Context<Self>,
    ) -> Result<(), Error> {
        let question_id = promised.question_id;
        let path = promised.transform;
        let returned = self.answers.is_returned(question_id);
        let (state, described) = match self.answers.get(question_id) {
            // The peer learns what a path is from our Return, so it cannot
            // ask before it (and nothing unbounded waits for it, F-08).
            // What the Return described is taken now: a Finish may follow
            // the Disembargo and end the answer before the reflection.
            Some(entry) if returned => (
                entry.state.clone(),
                entry.described_at(&path).map(|d| d.descriptor),
            ),
            Some(_) => {
                return Err(Error::failed(format!(
                    "Disembargo senderLoopback names answer {question_id}, which has not returned"
                )))
            }
            None => {
                return Err(Error::failed(format!(
                    "Disembargo senderLoopback names answer {question_id}, which does not exist"
                )))
            }
        };
        if self.reflections_waiting >= self.max_pipelined {
            return Err(Error::failed(format!(
                "the peer has {} Disembargos waiting, the most allowed (max_pipelined)",
                self.reflections_waiting
            )));
        }
        self.reflections_waiting += 1;
        let settled = state.path_settled(&path);
        ctx.spawn(settled.into_actor(self).map(move |(), conn, ctx| {
            conn.reflections_waiting -= 1;
            if let Err(e) = conn.reflect(id, described.as_ref()) {
                conn.abort(e, ctx);
            }
        }));
        Ok(())
    }

    /// Sends `Disembargo{receiverLoopback: id}` along `described`, what we
    /// told the peer the capability was, behind the calls already on their
    /// way; an error if that does not point back to the peer.
    fn reflect(&mut self, id: u32, described: Option<&CapDescriptor>) -> Result<(), Error> {
        let target = described
            .ok_or_else(|| {
                Error::failed(
                    "Disembargo senderLoopback whose target does not resolve back to the sender",
                )
            })
            .and_then(reflect_to)?;
        // Through our own mailbox: calls forwarded to the peer before this
        // point are queued there, and go out first.
        if let Some(me) = &self.self_addr {
            me.do_send(SendDisembargo {
                target,
                context: DisembargoContext::ReceiverLoopback(id),
            });
        }
        Ok(())
    }
}

/// A `Disembargo` to send once every call queued before it in the
/// connection's mailbox has gone out.
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
        if self.closing.is_none() {
            self.write(&out::disembargo(&msg.target, msg.context));
        }
    }
}

impl Handler<StartEmbargoes> for ConnActor {
    type Result = ();

    fn handle(&mut self, msg: StartEmbargoes, _ctx: &mut Context<Self>) {
        let question = self.question_ids.get(&msg.key).copied();
        for path in msg.paths {
            let waiter = EmbargoWaiter::Pipelined(msg.state.clone(), path.clone());
            match (question, &self.closing) {
                (Some(question_id), None) => {
                    self.counts.embargoes_started += 1;
                    let id = self.embargoes.start(waiter);
                    let target = MessageTarget::PromisedAnswer(PromisedAnswer {
                        question_id,
                        transform: path.to_vec(),
                    });
                    self.write(&out::disembargo(
                        &target,
                        DisembargoContext::SenderLoopback(id),
                    ));
                }
                // The question is finished or the connection is closing:
                // nothing can still be on its way; go on at once.
                _ => waiter.lift(),
            }
        }
    }
}
