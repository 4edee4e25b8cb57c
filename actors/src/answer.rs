//! `AnswerActor`: runs a call (or bootstrap) a peer made on us, one at a
//! time, and reports its outcome to the connection, which sends the
//! `Return`.
//!
//! Each answer in flight has an actor of its own. Starting an actor costs
//! more than the rest of a small call's handling (a mailbox, a task, and
//! their teardown: about 3,400 instructions against 17,000 for a whole
//! no-op call), so a connection keeps the actors of answers that returned
//! and gives each one the next answer ([`RunAnswer`]), instead of starting
//! and stopping one per call. An actor is given an answer only once it
//! reported the last, so it never runs two at once; the connection's
//! pool is bounded, and its actors stop with it.
//!
//! Calls the peer pipelines on an answer do not pass through here: they
//! target the call's state, which queues them until the results exist. A
//! `Finish` that arrives first cancels the call (the actor drops its
//! interest, and the work stops when nothing else needs it).

use crate::call::PendingCall;
use crate::payload::Payload;
use crate::stats;
use actix::Recipient;
use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, SpawnHandle, WrapFuture,
};
use capnp_actix_proto::Error;
use std::rc::Rc;
use std::sync::Arc;

/// Most idle answer actors a connection keeps for its next answers.
pub(crate) const POOL: usize = 64;

/// The actor of the answers of one connection, one at a time.
pub(crate) struct AnswerActor {
    /// The connection that sends the `Return` (shared with the other
    /// answers: the connection outlives them, as it stops them all when it
    /// stops).
    conn: Rc<Recipient<ReturnReady>>,
    /// The answer it runs, if any.
    current: Option<Running>,
}

/// The answer an actor runs: its id, the wait on it (which a `Finish`
/// cancels), and its place in the live count, given up when it goes.
struct Running {
    answer_id: u32,
    waiting: SpawnHandle,
    _live: stats::Live,
}

impl AnswerActor {
    pub(crate) fn new(conn: Rc<Recipient<ReturnReady>>) -> Self {
        AnswerActor {
            conn,
            current: None,
        }
    }

    fn report(&self, answer_id: u32, outcome: ReturnOutcome) {
        self.conn.do_send(ReturnReady { answer_id, outcome });
    }
}

impl Actor for AnswerActor {
    type Context = Context<Self>;
}

/// Sent by the connection: run answer `answer_id`, the outcome of
/// `pending`. The actor is idle (it reported its last answer).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RunAnswer {
    /// The peer's question id.
    pub(crate) answer_id: u32,
    /// The call.
    pub(crate) pending: PendingCall,
}

impl Handler<RunAnswer> for AnswerActor {
    type Result = ();

    fn handle(&mut self, msg: RunAnswer, ctx: &mut Context<Self>) {
        crate::stats::worked();
        debug_assert!(
            self.current.is_none(),
            "an answer actor runs one answer at a time"
        );
        let answer_id = msg.answer_id;
        let wait = msg.pending.into_actor(self).map(move |result, act, _ctx| {
            act.current = None;
            act.report(
                answer_id,
                match result {
                    Ok(response) => ReturnOutcome::Results(response.payload),
                    Err(e) => ReturnOutcome::Exception(e),
                },
            );
        });
        let waiting = ctx.spawn(wait);
        // (A settled call completes on the first poll, after this.)
        self.current = Some(Running {
            answer_id,
            waiting,
            _live: stats::Live::new(&stats::ANSWERS),
        });
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

/// Sent by the connection: the peer finished question `answer_id` before
/// the answer returned (`report` true), or the connection is going away.
/// For an answer the actor no longer runs (it reported it already), it
/// does nothing.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CancelAnswer {
    /// Which answer.
    pub(crate) answer_id: u32,
    /// Whether to report `canceled` back (for a `Return`).
    pub(crate) report: bool,
}

impl Handler<CancelAnswer> for AnswerActor {
    type Result = ();

    fn handle(&mut self, msg: CancelAnswer, ctx: &mut Context<Self>) {
        let Some(running) = self
            .current
            .take_if(|running| running.answer_id == msg.answer_id)
        else {
            return;
        };
        ctx.cancel_future(running.waiting);
        if msg.report {
            self.report(running.answer_id, ReturnOutcome::Canceled);
        }
    }
}
