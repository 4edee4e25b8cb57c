//! `AnswerActor`: one per call (or bootstrap) a peer made on us. It runs
//! the call against its target and reports the outcome to the connection,
//! which sends the `Return`.
//!
//! Calls the peer pipelines on this answer do not pass through here: they
//! target the call's state, which queues them until the results exist. A
//! `Finish` that arrives first cancels the call (the actor drops its
//! interest, and the work stops when nothing else needs it).

use crate::call::PendingCall;
use crate::payload::Payload;
use crate::stats;
use actix::Recipient;
use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, SpawnHandle,
    WrapFuture,
};
use capnp_actix_proto::Error;
use std::rc::Rc;
use std::sync::Arc;

/// The actor of one inbound call.
pub(crate) struct AnswerActor {
    /// The peer's question id.
    answer_id: u32,
    /// The connection that sends the `Return` (shared with the other
    /// answers: the connection outlives them, as it cancels them all when
    /// it stops).
    conn: Rc<Recipient<ReturnReady>>,
    /// The call, until the actor starts waiting on it.
    pending: Option<PendingCall>,
    /// The wait, so that a `Finish` can cancel it.
    waiting: Option<SpawnHandle>,
}

impl AnswerActor {
    pub(crate) fn new(
        answer_id: u32,
        conn: Rc<Recipient<ReturnReady>>,
        pending: PendingCall,
    ) -> Self {
        AnswerActor {
            answer_id,
            conn,
            pending: Some(pending),
            waiting: None,
        }
    }

    fn report(&self, outcome: ReturnOutcome) {
        self.conn.do_send(ReturnReady {
            answer_id: self.answer_id,
            outcome,
        });
    }
}

impl Actor for AnswerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        stats::ANSWERS.started();
        let Some(pending) = self.pending.take() else {
            return;
        };
        let wait = pending.into_actor(self).map(|result, act, ctx| {
            act.waiting = None;
            act.report(match result {
                Ok(response) => ReturnOutcome::Results(response.payload),
                Err(e) => ReturnOutcome::Exception(e),
            });
            ctx.stop();
        });
        self.waiting = Some(ctx.spawn(wait));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        stats::ANSWERS.stopped();
    }
}

/// How an answer ends.
pub(crate) enum ReturnOutcome {
    /// The call completed with these results.
    Results(Arc<Payload>),
    /// The call failed.
    Exception(Error),
    /// The caller's `Finish` cancelled it first.
    Canceled,
}

/// Sent by an answer to its connection: the `Return` can go out.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ReturnReady {
    /// Which answer.
    pub(crate) answer_id: u32,
    /// Its outcome.
    pub(crate) outcome: ReturnOutcome,
}

/// Sent by the connection: the peer finished the question before the
/// answer returned (`report` true), or the connection is going away.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CancelAnswer {
    /// Whether to report `canceled` back (for a `Return`).
    pub(crate) report: bool,
}

impl Handler<CancelAnswer> for AnswerActor {
    type Result = ();

    fn handle(&mut self, msg: CancelAnswer, ctx: &mut Context<Self>) {
        if let Some(waiting) = self.waiting.take() {
            ctx.cancel_future(waiting);
            if msg.report {
                self.report(ReturnOutcome::Canceled);
            }
        }
        ctx.stop();
    }
}
