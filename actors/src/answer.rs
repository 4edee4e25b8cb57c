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
//! The actor owns what waits on its answer. The calls the peer pipelines
//! on it before the results exist come here ([`Pipelined`]) and wait in the
//! actor's queue, in the order they came, until the call's outcome; then
//! they go where the call's state sends them (its results, past any
//! embargo of ours on their path), before the `Return` is reported. The
//! peer's `Disembargo`s on the answer are reflected from here too, once
//! those calls went ([`ReflectAfter`]). A call that was sent elsewhere (to
//! a peer, or that published its results early) takes pipelined calls at
//! once, so they are pipelined through; the calls held when a call
//! publishes its results early go on then. A `Finish` that arrives first
//! cancels the call unless the peer pipelined calls on it (the core
//! decides): the actor drops its interest, the work stops when nothing
//! else needs it, and calls pipelined after the `Finish` fail.

use crate::call::{CallState, PendingCall, Queued};
use crate::capability::Capability;
use crate::payload::Payload;
use crate::stats;
use actix::Recipient;
use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, SpawnHandle, WrapFuture,
};
use capnp_actix_proto::cap_descriptor::MessageTarget;
use capnp_actix_proto::Error;
use std::rc::Rc;
use std::sync::Arc;

/// Most idle answer actors a connection keeps for its next answers.
pub(crate) const POOL: usize = 64;

/// What the answer actors of one connection send it.
pub(crate) struct AnswerConn {
    /// Outcomes, for the `Return`.
    pub(crate) ready: Recipient<ReturnReady>,
    /// Reflections of the peer's embargoes, once the calls before them went.
    pub(crate) reflect: Recipient<ReflectSettled>,
    /// How many of the peer's calls may wait on one answer
    /// (`ConnOptions::max_pipelined`).
    pub(crate) max_pipelined: usize,
}

/// The actor of the answers of one connection, one at a time.
pub(crate) struct AnswerActor {
    /// The connection (shared with the other answers: the connection
    /// outlives them, as it stops them all when it stops).
    conn: Rc<AnswerConn>,
    /// The answer it runs, if any.
    current: Option<Running>,
    /// The answer it ended last, and why calls pipelined on it fail if it
    /// was cancelled: for the pipelined calls still on their way to it
    /// (the connection gives this actor no other answer while any are).
    last: Option<(u32, Option<Error>)>,
    /// The queue of its last answer, emptied, for the next one's.
    spare_queue: Vec<(Arc<[u16]>, Queued)>,
}

/// Queues longer than this are not kept for the next answer.
const SPARE_QUEUE: usize = 64;

/// The answer an actor runs: its id, the wait on it (which a `Finish`
/// cancels), what waits on it, and its place in the live count, given up
/// when it goes.
struct Running {
    answer_id: u32,
    waiting: SpawnHandle,
    /// The call's state: where the queued calls go once it settled.
    call: Arc<CallState>,
    /// Calls the peer pipelined on the answer, waiting for its outcome, in
    /// the order they came, with the path each is made on.
    queue: Vec<(Arc<[u16]>, Queued)>,
    /// How many `Pipelined` messages it took for this answer (the
    /// connection compares, to know that none is still on its way).
    taken: u32,
    /// Reflections of the peer's embargoes to send once the queue went.
    reflections: Vec<ReflectAfter>,
    _live: stats::Live,
}

impl AnswerActor {
    pub(crate) fn new(conn: Rc<AnswerConn>) -> Self {
        AnswerActor {
            conn,
            current: None,
            last: None,
            spare_queue: Vec::new(),
        }
    }

    fn report(&self, answer_id: u32, outcome: ReturnOutcome, pipelined: u32) {
        self.conn.ready.do_send(ReturnReady {
            answer_id,
            outcome,
            pipelined,
        });
    }

    /// Ends the answer it runs: what waited on it goes where the call's
    /// state sends it (or fails with `failure`, when the call was
    /// cancelled), the reflections follow, and the outcome is reported.
    fn finish(
        &mut self,
        running: Running,
        outcome: Option<ReturnOutcome>,
        failure: Option<Error>,
        ctx: &mut Context<Self>,
    ) {
        crate::stats::worked();
        let Running {
            answer_id,
            call,
            mut queue,
            taken,
            reflections,
            ..
        } = running;
        for (transform, queued) in queue.drain(..) {
            let Some(state) = queued.state.upgrade() else {
                continue;
            };
            match &failure {
                Some(e) => state.resolve(Err(e.clone())),
                None => call.pipeline(transform, queued.call, &state),
            }
        }
        for reflection in reflections {
            match failure {
                Some(_) => self.reflect_now(reflection),
                None => self.reflect(&call, reflection, ctx),
            }
        }
        if let Some(outcome) = outcome {
            self.report(answer_id, outcome, taken);
        }
        self.last = Some((answer_id, failure));
        if queue.capacity() <= SPARE_QUEUE {
            self.spare_queue = queue;
        }
    }

    /// The call published results for pipelining before returning: the
    /// calls held for its outcome go to them now, in order (and the next
    /// ones straight after them, as the queue is empty).
    fn send_on_held(&mut self, answer_id: u32) {
        let Some(running) = self.current.as_mut().filter(|r| r.answer_id == answer_id) else {
            return;
        };
        for (transform, queued) in running.queue.drain(..) {
            if let Some(state) = queued.state.upgrade() {
                running.call.pipeline(transform, queued.call, &state);
            }
        }
    }

    /// Sends `reflection` to the connection now.
    fn reflect_now(&self, reflection: ReflectAfter) {
        self.conn.reflect.do_send(ReflectSettled {
            target: reflection.target,
            embargo_id: reflection.embargo_id,
        });
    }

    /// Sends `reflection` once its path has settled (past any embargo of
    /// ours on it, when the call went to another vat).
    fn reflect(&self, call: &Arc<CallState>, reflection: ReflectAfter, ctx: &mut Context<Self>) {
        let settled = call.path_settled(&reflection.transform);
        ctx.spawn(
            settled
                .into_actor(self)
                .map(move |(), act, _ctx| act.reflect_now(reflection)),
        );
    }
}

/// The wait on an answer's call, in its actor: on the outcome, the answer
/// ends ([`AnswerActor::finish`]); once the call publishes results early
/// (`set_pipeline`, which wakes it), the calls held for them go on.
struct AnswerWait {
    answer_id: u32,
    pending: PendingCall,
    /// The held calls went to the published results.
    published: bool,
}

impl actix::ActorFuture<AnswerActor> for AnswerWait {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        act: &mut AnswerActor,
        ctx: &mut Context<AnswerActor>,
        task: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = self.get_mut();
        let answer_id = this.answer_id;
        let result = match std::future::Future::poll(std::pin::Pin::new(&mut this.pending), task) {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => {
                if !this.published && this.pending.state().published() {
                    this.published = true;
                    act.send_on_held(answer_id);
                }
                return std::task::Poll::Pending;
            }
        };
        let Some(running) = act
            .current
            .take_if(|running| running.answer_id == answer_id)
        else {
            return std::task::Poll::Ready(());
        };
        let outcome = match result {
            Ok(response) => ReturnOutcome::Results(response.payload),
            Err(e) => ReturnOutcome::Exception(e),
        };
        act.finish(running, Some(outcome), None, ctx);
        std::task::Poll::Ready(())
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
        let call = msg.pending.state().clone();
        let wait = AnswerWait {
            answer_id,
            pending: msg.pending,
            published: false,
        };
        let waiting = ctx.spawn(wait);
        // (A settled call completes on the first poll, after this.)
        self.last = None;
        self.current = Some(Running {
            answer_id,
            waiting,
            call,
            queue: std::mem::take(&mut self.spare_queue),
            taken: 0,
            reflections: Vec::new(),
            _live: stats::Live::new(&stats::ANSWERS),
        });
    }
}

/// Sent by the connection: a call the peer pipelined on answer
/// `answer_id`, at `transform`, before the connection knew its results.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Pipelined {
    /// The answer the call is made on.
    pub(crate) answer_id: u32,
    /// The answer's call (its results, once it settled).
    pub(crate) on: Arc<CallState>,
    /// The path in its results.
    pub(crate) transform: Arc<[u16]>,
    /// The call; taken when handled.
    pub(crate) call: Option<Queued>,
    /// Where it goes, when the connection decided already (the answer's
    /// `Return` went out while earlier calls were still on their way
    /// here): it goes there after them.
    pub(crate) target: Option<Capability>,
}

impl Drop for Pipelined {
    fn drop(&mut self) {
        // Dropped unhandled (the actor stopped first): the caller must not
        // wait forever.
        if let Some(state) = self.call.take().and_then(|q| q.state.upgrade()) {
            state.resolve(Err(Error::disconnected("the answer's actor has stopped")));
        }
    }
}

impl Handler<Pipelined> for AnswerActor {
    type Result = ();

    fn handle(&mut self, mut msg: Pipelined, _ctx: &mut Context<Self>) {
        crate::stats::worked();
        let Some(queued) = msg.call.take() else {
            return;
        };
        let Some(state) = queued.state.upgrade() else {
            return; // the caller lost interest meanwhile
        };
        let answer_id = msg.answer_id;
        let transform = msg.transform.clone();
        if let Some(target) = msg.target.take() {
            queued.deliver_to(&target);
            return;
        }
        if let Some(running) = self.current.as_mut().filter(|r| r.answer_id == answer_id) {
            running.taken += 1;
            if running.queue.len() >= self.conn.max_pipelined {
                let max = self.conn.max_pipelined;
                state.resolve(Err(Error::overloaded(format!(
                    "{max} calls already wait on answer {answer_id} (max_pipelined)"
                ))));
                return;
            }
            // Behind the calls already waiting; else the call's state says
            // whether it goes at once (the call went to a peer, or
            // published results early) or waits for the outcome here.
            if running.queue.is_empty() {
                match running
                    .call
                    .pipeline_unless_waiting(transform, queued.call, &state)
                {
                    None => return,
                    Some((transform, call)) => {
                        running.queue.push((transform, Queued::new(call, &state)));
                    }
                }
            } else {
                running.queue.push((transform, queued));
            }
            return;
        }
        // The answer ended here: the call goes where its state sends it,
        // or fails as it did.
        match &self.last {
            Some((id, Some(e))) if *id == answer_id => state.resolve(Err(e.clone())),
            _ => msg.on.pipeline(transform, queued.call, &state),
        }
    }
}

/// Sent by the connection: reflect the peer's embargo `embargo_id` on the
/// path `transform` of answer `answer_id` along `target`, once the calls
/// the peer pipelined on that path before it went.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ReflectAfter {
    pub(crate) answer_id: u32,
    /// The answer's call.
    pub(crate) on: Arc<CallState>,
    pub(crate) transform: Arc<[u16]>,
    pub(crate) target: MessageTarget,
    pub(crate) embargo_id: u32,
}

impl Handler<ReflectAfter> for AnswerActor {
    type Result = ();

    fn handle(&mut self, msg: ReflectAfter, ctx: &mut Context<Self>) {
        if let Some(running) = self
            .current
            .as_mut()
            .filter(|r| r.answer_id == msg.answer_id)
        {
            running.reflections.push(msg);
            return;
        }
        match &self.last {
            // The answer was cancelled: its path leads nowhere, and the
            // reflection goes at once.
            Some((id, Some(_))) if *id == msg.answer_id => self.reflect_now(msg),
            _ => {
                let call = msg.on.clone();
                self.reflect(&call, msg, ctx);
            }
        }
    }
}

/// Sent by an answer to its connection: the peer's embargo can be
/// reflected now.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ReflectSettled {
    pub(crate) target: MessageTarget,
    pub(crate) embargo_id: u32,
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
    /// How many calls pipelined on it the actor took before it reported:
    /// if the connection sent more, they are still on their way to it.
    pub(crate) pipelined: u32,
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
        let outcome = msg.report.then_some(ReturnOutcome::Canceled);
        let failure = Error::failed("the call this call was pipelined on was cancelled");
        self.finish(running, outcome, Some(failure), ctx);
    }
}
