//! `QuestionActor`: one per question we asked a peer (a call or a
//! bootstrap). It hands the answer to whoever waits for it.
//!
//! The connection starts it when the question goes on the wire and sends it
//! the outcome when the `Return` arrives (or a `disconnected` error when
//! the connection dies first). The caller's interest is tracked by the
//! call's state, whose drop sends `Finish`; the actor holds it weakly so
//! that it never keeps a question open by itself.

use crate::call::CallState;
use crate::payload::Payload;
use crate::stats;
use actix::{Actor, ActorContext, Context, Handler, Message, Recipient};
use capnp_actix_proto::embargo::Resolution;
use capnp_actix_proto::Error;
use std::sync::{Arc, Weak};

/// The actor of one outbound question.
pub(crate) struct QuestionActor {
    /// The caller's view of the call; gone if the caller lost interest.
    state: Weak<CallState>,
    /// The connection that asked, for embargoes.
    conn: Recipient<StartEmbargoes>,
    /// Its id, to tell its imports from others.
    conn_id: u64,
    /// The caller's key of the question.
    key: u64,
}

impl QuestionActor {
    pub(crate) fn new(
        state: Weak<CallState>,
        conn: Recipient<StartEmbargoes>,
        conn_id: u64,
        key: u64,
    ) -> Self {
        QuestionActor {
            state,
            conn,
            conn_id,
            key,
        }
    }
}

impl Actor for QuestionActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        stats::QUESTIONS.started();
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        stats::QUESTIONS.stopped();
    }
}

/// The outcome of a question: results, or why there are none.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Returned(
    pub(crate) Result<Arc<Payload>, Error>,
    /// The `Return` said `noFinishNeeded` (and the connection took it): the
    /// question is finished already.
    pub(crate) bool,
    /// The results are the peer's `Return` itself (its cap table
    /// describes them), not results taken from one of our answers.
    pub(crate) bool,
);

impl Handler<Returned> for QuestionActor {
    type Result = ();

    fn handle(&mut self, msg: Returned, ctx: &mut Context<Self>) {
        if let Some(state) = self.state.upgrade() {
            if msg.1 {
                state.question_finished();
            }
            // Paths that carried calls to the peer and now lead back here
            // wait for an embargo (E-order). What the peer's Return says
            // each is decides; results made here (a tail call the peer
            // sent back to us) are judged by where calls on them go.
            let conn = self.conn_id;
            let from_peer = msg.2;
            let paths = state.settle(msg.0, |payload, path| {
                let target = payload.cap_at(path);
                let described = from_peer
                    .then(|| payload.peer_descriptor_at(path))
                    .flatten();
                let resolution = match described {
                    Some(descriptor) => Resolution::of(&descriptor),
                    None => target.resolution_from(conn),
                };
                target.embargo_after(resolution, conn)
            });
            if !paths.is_empty() {
                self.conn.do_send(StartEmbargoes {
                    key: self.key,
                    state: Arc::downgrade(&state),
                    paths,
                });
            }
        }
        ctx.stop();
    }
}

/// Sent by a question whose `Return` put pipeline paths under embargo to
/// its connection: send a `Disembargo` for each.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StartEmbargoes {
    /// The caller's key of the question.
    pub(crate) key: u64,
    /// The question's state, which holds the waiting calls.
    pub(crate) state: Weak<CallState>,
    /// The paths under embargo; taken when handled.
    pub(crate) paths: Vec<Arc<[u16]>>,
}

impl Drop for StartEmbargoes {
    fn drop(&mut self) {
        // Never handled (the connection stopped): nothing can still be on
        // its way; the held calls go on.
        if let Some(state) = self.state.upgrade() {
            for path in self.paths.drain(..) {
                state.lift_embargo(&path);
            }
        }
    }
}
