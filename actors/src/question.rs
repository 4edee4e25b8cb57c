//! `QuestionActor`: one per question we asked a peer (a call or a
//! bootstrap). It hands the answer to whoever waits for it.
//!
//! The connection gives it the question when it goes on the wire and sends it
//! the outcome when the `Return` arrives (or a `disconnected` error when
//! the connection dies first). The caller's interest is tracked by the
//! call's state, whose drop sends `Finish`; the actor holds it weakly so
//! that it never keeps a question open by itself.

use crate::call::{CallState, EmbargoHolder, Held, Queued};
use crate::payload::Payload;
use crate::stats;
use actix::{Actor, AsyncContext, Context, Handler, Message, Recipient};
use capnp_actix_proto::embargo::Resolution;
use capnp_actix_proto::Error;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// How many idle question actors a connection keeps for its next
/// questions.
pub(crate) const POOL: usize = 64;

/// The actor of one outbound question at a time. A connection keeps those
/// whose questions were answered and gives them the next ones ([`Ask`]), as
/// it does answer actors (see `answer.rs`): a question in flight has an
/// actor of its own, without a mailbox and a task started and torn down
/// per call.
pub(crate) struct QuestionActor {
    /// The connection that asked, for embargoes.
    conn: Recipient<StartEmbargoes>,
    /// Its id, to tell its imports from others.
    conn_id: u64,
    /// The question it waits for, if any.
    current: Option<Asked>,
    /// The embargoes on the result paths of its questions (the one it waits
    /// for, or ones answered before), with the calls they hold.
    embargoes: HashMap<(u64, Arc<[u16]>), Embargoed>,
}

/// The calls made on one result path under embargo, held until the
/// embargo lifts.
struct Embargoed {
    /// The question's state (the path's target, and the embargo's end).
    question: Weak<CallState>,
    /// The calls, in the order they were made.
    calls: Vec<Queued>,
    /// How many calls came here for the path.
    taken: u64,
    /// The `Disembargo` came back: calls still on their way here go on as
    /// they come, until the state says none is left.
    lifted: bool,
}

impl Embargoed {
    /// An embargo on a path of `question`, with nothing held yet.
    fn new(question: Weak<CallState>) -> Self {
        Embargoed {
            question,
            calls: Vec::new(),
            taken: 0,
            lifted: false,
        }
    }

    /// Once the embargo lifted, sends on what is held and gives whether
    /// the embargo is over (every call sent here taken): then this entry
    /// goes.
    fn go_on(&mut self, path: &[u16]) -> bool {
        if !self.lifted {
            return false;
        }
        self.deliver(path);
        self.ended(path)
    }

    /// Delivers the held calls to the path's target, in order.
    fn deliver(&mut self, path: &[u16]) {
        let calls = std::mem::take(&mut self.calls);
        if calls.is_empty() {
            return;
        }
        let target = match self.question.upgrade() {
            Some(question) => question.path_target(path),
            None => crate::capability::Capability::broken(Error::failed("the question is gone")),
        };
        for call in calls {
            call.deliver_to(&target);
        }
    }

    /// Whether the embargo is over on the state's side too (every call
    /// sent here was taken); then this entry goes.
    fn ended(&self, path: &[u16]) -> bool {
        match self.question.upgrade() {
            Some(question) => question.end_embargo(path, Some(self.taken)),
            None => true,
        }
    }
}

/// The question an actor waits for.
struct Asked {
    /// The caller's view of the call; gone if the caller lost interest.
    state: Weak<CallState>,
    /// The caller's key of the question.
    key: u64,
    /// Its place in the live count, given up when it goes.
    _live: stats::Live,
}

impl QuestionActor {
    pub(crate) fn new(conn: Recipient<StartEmbargoes>, conn_id: u64) -> Self {
        QuestionActor {
            conn,
            conn_id,
            current: None,
            embargoes: HashMap::new(),
        }
    }
}

impl Actor for QuestionActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // No `Disembargo` will come back any more (the connection went):
        // the held calls go on.
        for ((_, path), mut embargoed) in self.embargoes.drain() {
            embargoed.deliver(&path);
            if let Some(question) = embargoed.question.upgrade() {
                question.end_embargo(&path, None);
            }
        }
    }
}

/// Sent by the connection: wait for the answer to question `key`, for
/// `state`. The actor is idle (its last question was answered).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Ask {
    /// The caller's view of the call.
    pub(crate) state: Weak<CallState>,
    /// The caller's key of the question.
    pub(crate) key: u64,
}

impl Handler<Ask> for QuestionActor {
    type Result = ();

    fn handle(&mut self, msg: Ask, _ctx: &mut Context<Self>) {
        crate::stats::worked();
        debug_assert!(
            self.current.is_none(),
            "a question actor waits for one answer at a time"
        );
        self.current = Some(Asked {
            state: msg.state,
            key: msg.key,
            _live: stats::Live::new(&stats::QUESTIONS),
        });
    }
}

/// The outcome of question `key`: results, or why there are none.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Returned {
    /// The caller's key of the question.
    pub(crate) key: u64,
    /// The outcome.
    pub(crate) result: Result<Arc<Payload>, Error>,
    /// The `Return` said `noFinishNeeded` (and the connection took it): the
    /// question is finished already.
    pub(crate) finished: bool,
    /// The results are the peer's `Return` itself (its cap table
    /// describes them), not results taken from one of our answers.
    pub(crate) from_peer: bool,
}

impl Handler<Returned> for QuestionActor {
    type Result = ();

    fn handle(&mut self, msg: Returned, ctx: &mut Context<Self>) {
        crate::stats::worked();
        let Some(asked) = self.current.take_if(|asked| asked.key == msg.key) else {
            return;
        };
        if let Some(state) = asked.state.upgrade() {
            if msg.finished {
                state.question_finished();
            }
            // Paths that carried calls to the peer and now lead back here
            // wait for an embargo (E-order). What the peer's Return says
            // each is decides; results made here (a tail call the peer
            // sent back to us) are judged by where calls on them go.
            let conn = self.conn_id;
            let from_peer = msg.from_peer;
            let holder = || EmbargoHolder {
                actor: ctx.address().recipient(),
                key: asked.key,
                question: Arc::downgrade(&state),
            };
            let paths = state.settle(
                msg.result,
                |payload, path| {
                    let target = payload.cap_at(path);
                    let described = from_peer
                        .then(|| payload.peer_descriptor_at(path))
                        .flatten();
                    let resolution = match described {
                        Some(descriptor) => Resolution::of(&descriptor),
                        None => target.resolution_from(conn),
                    };
                    target.embargo_after(resolution, conn)
                },
                Some(holder),
            );
            if !paths.is_empty() {
                for path in &paths {
                    self.embargoes.insert(
                        (asked.key, path.clone()),
                        Embargoed::new(Arc::downgrade(&state)),
                    );
                }
                self.conn.do_send(StartEmbargoes {
                    key: asked.key,
                    lift: Some(ctx.address().recipient()),
                    paths,
                });
            }
        }
    }
}

/// Sent by a question whose `Return` put pipeline paths under embargo to
/// its connection: send a `Disembargo` for each.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StartEmbargoes {
    /// The caller's key of the question.
    pub(crate) key: u64,
    /// The question's actor, which holds the waiting calls: told when each
    /// embargo lifts; taken when handled.
    pub(crate) lift: Option<Recipient<LiftEmbargo>>,
    /// The paths under embargo; taken when handled.
    pub(crate) paths: Vec<Arc<[u16]>>,
}

impl Drop for StartEmbargoes {
    fn drop(&mut self) {
        // Never handled (the connection stopped): nothing can still be on
        // its way; the held calls go on.
        if let Some(lift) = self.lift.take() {
            for path in self.paths.drain(..) {
                lift.do_send(LiftEmbargo {
                    key: self.key,
                    path,
                });
            }
        }
    }
}

impl Handler<Held> for QuestionActor {
    type Result = ();

    fn handle(&mut self, mut msg: Held, _ctx: &mut Context<Self>) {
        let Some(call) = msg.call.take() else {
            return;
        };
        let key = (msg.key, msg.path.clone());
        let embargoed = self
            .embargoes
            .entry(key.clone())
            .or_insert_with(|| Embargoed::new(msg.question.clone()));
        embargoed.taken += 1;
        embargoed.calls.push(call);
        if embargoed.go_on(&key.1) {
            self.embargoes.remove(&key);
        }
    }
}

/// Sent by the connection when our `Disembargo` on path `path` of question
/// `key` came back: the calls held on it go on, in order, before any new
/// call can.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct LiftEmbargo {
    pub(crate) key: u64,
    pub(crate) path: Arc<[u16]>,
}

impl Handler<LiftEmbargo> for QuestionActor {
    type Result = ();

    fn handle(&mut self, msg: LiftEmbargo, _ctx: &mut Context<Self>) {
        let key = (msg.key, msg.path);
        let Some(embargoed) = self.embargoes.get_mut(&key) else {
            return;
        };
        embargoed.lifted = true;
        if embargoed.go_on(&key.1) {
            self.embargoes.remove(&key);
        }
    }
}
