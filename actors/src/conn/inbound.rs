//! What a connection does with each inbound message: the core decides
//! (`capnp_actix_proto::connection`), and this carries out its events, one
//! `on_*` per kind. An `Err` is a protocol error: the connection aborts
//! with it.

use super::embargo::{EmbargoImport, SendDisembargo};
use super::{AnswerEntry, ConnActor, ImportDropped, QuestionDropped, SentTargets};
use crate::answer::{
    AnswerActor, CancelAnswer, Pipelined, ReflectAfter, ReflectSettled, ReturnOutcome, ReturnReady,
    RunAnswer, POOL,
};
use crate::call::{CallState, OutCall, PendingCall, Queued, Wants};
use crate::capability::PromiseImport;
use crate::capability::{CapKind, Capability, ImportRef};
use crate::payload::{Body, Payload};

use crate::question::Returned;
use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use capnp_actix_proto::cap_descriptor::MessageTarget;
use capnp_actix_proto::connection::{
    CallTo, Event, InboundCall, Incoming, Outcome, ResultsTo, Sent,
};
use capnp_actix_proto::embargo::Resolution;
use capnp_actix_proto::frame::Frame;
use capnp_actix_proto::message::DisembargoContext;
use capnp_actix_proto::{message as out, Error};
use std::sync::Arc;

/// What calls that come while the connection drains get.
fn shutting_down() -> Error {
    Error::disconnected("the server is shutting down")
}

impl ConnActor {
    /// Takes one inbound frame: the core reads it and decides (it may wait
    /// in the flow gate), and what it decided is carried out.
    pub(crate) fn receive(&mut self, frame: Frame, ctx: &mut Context<Self>) -> Result<(), Error> {
        let received = self.core.receive(frame);
        let handled = received.and_then(|()| self.run_events(ctx));
        self.backpressure.hold(self.core.reader_should_wait());
        self.flush();
        handled
    }

    /// Carries out what the core decided, in order.
    pub(super) fn run_events(&mut self, ctx: &mut Context<Self>) -> Result<(), Error> {
        while let Some(event) = self.core.poll_event() {
            self.on_event(event, ctx)?;
        }
        Ok(())
    }

    /// Handles what waited in the flow gate and may go on now.
    pub(crate) fn drain_parked(&mut self, ctx: &mut Context<Self>) {
        loop {
            // What the core decided so far first, then the next that waited.
            let next = self.run_events(ctx).and_then(|()| match self.closing {
                Some(_) => Ok(false),
                None => self.core.handle_waiting(),
            });
            match next {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    self.abort(e, ctx);
                    break;
                }
            }
        }
        self.backpressure.hold(self.core.reader_should_wait());
        self.flush();
    }

    #[inline]
    fn on_event(
        &mut self,
        event: Event<super::Runtime>,
        ctx: &mut Context<Self>,
    ) -> Result<(), Error> {
        match event {
            Event::Bootstrap {
                question_id,
                refusal,
            } => self.on_bootstrap(question_id, refusal),
            Event::Call(call) => self.on_call(call),
            Event::Refused {
                question_id,
                results_elsewhere,
                refusal,
            } => {
                self.metrics.calls_in += 1;
                self.metrics.exceptions_sent.add(refusal.kind());
                let entry = AnswerEntry::new(CallState::settled(Err(refusal)));
                let wants = if results_elsewhere {
                    Wants::Elsewhere
                } else {
                    Wants::Results
                };
                self.core.start_answer(question_id, entry, wants, 0)?;
                drop(self.core.returned(question_id, Sent::default(), false));
                Ok(())
            }
            Event::Return {
                question_id: _,
                taker,
                outcome,
                no_finish_needed,
            } => {
                self.on_return(taker.flatten(), outcome, no_finish_needed);
                Ok(())
            }
            Event::Cancel {
                question_id,
                after_delivery,
            } => {
                let Some(answer) = self.core.answer(question_id) else {
                    return Ok(());
                };
                let cancel = cancellation_of(
                    question_id,
                    &answer.state,
                    answer.actor.clone(),
                    self.cancellation,
                );
                // (`requireEarlyCancellationWorkaround`: a call on its way
                // to its object is cancelled once delivered, not before.)
                let now = if after_delivery {
                    answer.state.delivery.once_delivered(cancel)
                } else {
                    Some(cancel)
                };
                if let Some(cancel) = now {
                    cancel();
                }
                Ok(())
            }
            Event::AnswerEnded(answer) => {
                drop(answer);
                Ok(())
            }
            Event::Released(export) => {
                drop(export);
                Ok(())
            }
            Event::Resolve {
                promise_id,
                to,
                resolution,
            } => {
                self.on_resolve(promise_id, to, resolution, ctx);
                Ok(())
            }
            Event::EmbargoLifted(waiter) => {
                waiter.lift();
                Ok(())
            }
            Event::Reflect { target, embargo_id } => {
                self.reflect_later(target, embargo_id);
                Ok(())
            }
            Event::ReflectWhenSettled {
                question_id,
                transform,
                target,
                embargo_id,
            } => {
                self.reflect_when_settled(question_id, &transform, target, embargo_id, ctx);
                Ok(())
            }
            Event::Aborted(reason) => {
                self.end(reason, ctx);
                Ok(())
            }
        }
    }

    /// Starts answer `id`, which returns as `wants` says: its actor reports
    /// the outcome of `pending`.
    pub(crate) fn start_answer(
        &mut self,
        id: u32,
        pending: PendingCall,
        wants: Wants,
        inbound_bytes: usize,
    ) -> Result<(), Error> {
        let entry = AnswerEntry::new(pending.state().clone());
        self.core.start_answer(id, entry, wants, inbound_bytes)?;
        self.backpressure.answer_started();
        let actor = match self.idle_answers.pop() {
            Some(actor) => actor,
            None => AnswerActor::new(self.answer_conn.clone()).start(),
        };
        actor.do_send(RunAnswer {
            answer_id: id,
            pending,
        });
        if let Some(entry) = self.core.answer_mut(id) {
            entry.actor = Some(actor);
        }
        Ok(())
    }

    fn on_bootstrap(&mut self, id: u32, refusal: Option<Error>) -> Result<(), Error> {
        let result = match (refusal, &self.main) {
            (Some(e), _) => Err(e),
            (None, Some(_)) if self.draining => Err(shutting_down()),
            (None, Some(main)) => Ok(Arc::new(Payload::single_cap(main.clone()))),
            // The core refuses a Bootstrap when there is no main interface;
            // it goes only at teardown, after which no event runs.
            (None, None) => Err(Error::disconnected("the connection is closing")),
        };
        let settled = PendingCall::new(CallState::settled(result));
        self.start_answer(id, settled, Wants::Results, 0)
    }

    fn on_call(&mut self, call: InboundCall) -> Result<(), Error> {
        let InboundCall {
            question_id: id,
            target,
            interface_id,
            method_id,
            results_to,
            wants,
            caps,
            frame,
            bytes,
        } = call;
        self.metrics.calls_in += 1;
        if self.draining {
            let refused = PendingCall::new(CallState::settled(Err(shutting_down())));
            return self.start_answer(id, refused, wants, bytes);
        }
        let call = OutCall {
            interface_id,
            method_id,
            body: Body::Frame(frame),
            caps: self.import_all(caps),
            return_for: Some((self.id, id)),
            hops: 0,
            wants: wants.passed_on(),
        };
        let target = match target {
            CallTo::Export(export_id) => match self.core.export_value(export_id) {
                Some(entry) => entry.target(),
                None => Capability::broken(Error::failed("the export is gone")),
            },
            CallTo::Answer {
                question_id,
                transform,
                returned,
            } => match self.core.answer_mut(question_id) {
                // Before the results are known here, the call goes to the
                // answer's actor, which holds what waits on the answer;
                // after, straight to what the `Return` described, unless
                // earlier calls are still on their way to the actor (then
                // it goes there, behind them).
                Some(entry) if entry.actor.is_some() && results_to != ResultsTo::ThirdParty => {
                    let target = returned.then(|| entry.pipelined_target(&transform, true));
                    if target.is_none() {
                        entry.pipelined += 1;
                    }
                    let state = CallState::new();
                    if let Some(actor) = &entry.actor {
                        actor.do_send(Pipelined {
                            answer_id: question_id,
                            on: entry.state.clone(),
                            transform: transform.into(),
                            call: Some(Queued::new(call, &state)),
                            target,
                        });
                    }
                    let pending = PendingCall::new(state);
                    return self.start_answer(id, pending, wants, bytes);
                }
                Some(entry) => entry.pipelined_target(&transform, returned),
                None => Capability::broken(Error::failed("the answer is gone")),
            },
            CallTo::Broken(e) => Capability::broken(e),
        };
        let pending = match results_to {
            ResultsTo::Caller | ResultsTo::Yourself => target.dispatch(call),
            ResultsTo::ThirdParty => PendingCall::new(CallState::settled(Err(
                Error::unimplemented("sendResultsTo.thirdParty (level 3) is not supported"),
            ))),
        };
        self.start_answer(id, pending, wants, bytes)
    }

    fn on_return(&mut self, taker: Option<super::Taker>, outcome: Outcome, no_finish_needed: bool) {
        let result = match outcome {
            Outcome::Results { caps, frame } => {
                let caps = self.import_all(caps);
                Ok(Arc::new(Payload {
                    body: Body::Frame(frame),
                    caps,
                    return_for: None,
                }))
            }
            Outcome::Error(e) => {
                self.metrics.exceptions_received.add(e.kind());
                Err(e)
            }
            // Our tail call: the peer keeps the results, for our answer's
            // caller to take; calls pipelined on it go on to the peer.
            Outcome::SentElsewhere => return,
            Outcome::TakeFrom(other) => {
                // The peer made a tail call back to us (P-13): the results
                // of its call `other` are this question's, once settled.
                let Some(state) = self.core.answer(other).map(|a| a.state.clone()) else {
                    return;
                };
                // Its actor gets the outcome later: it is not kept for
                // another question.
                if let Some(super::Taker { key, actor }) = taker {
                    let settled = state.wait();
                    actix_rt::spawn(async move {
                        let result = settled.await.unwrap_or_else(|_| {
                            Err(Error::failed(
                                "the call whose results were taken was dropped",
                            ))
                        });
                        actor.do_send(Returned {
                            key,
                            result,
                            finished: no_finish_needed,
                            from_peer: false,
                        });
                    });
                }
                return;
            }
        };
        if let Some(super::Taker { key, actor }) = taker {
            let returned = Returned {
                key,
                result,
                finished: no_finish_needed,
                from_peer: true,
            };
            self.answer_question(actor, returned);
        }
    }

    fn import_all(&mut self, caps: Vec<Incoming>) -> Vec<Option<Capability>> {
        caps.into_iter().map(|c| self.import(c)).collect()
    }

    /// The capability a counted cap descriptor from the peer names.
    fn import(&mut self, incoming: Incoming) -> Option<Capability> {
        Some(match incoming {
            Incoming::None => return None,
            Incoming::Import { id, promise: false } => self.import_ref(id),
            Incoming::Import { id, promise: true } => self.import_promise(id),
            Incoming::Export(id) => match self.core.export_value(id) {
                Some(entry) => entry.target(),
                None => Capability::broken(Error::failed("the export is gone")),
            },
            Incoming::Answer(promised) => match self.core.answer(promised.question_id) {
                Some(entry) => {
                    Capability::pipelined(entry.state.clone(), promised.transform.into())
                }
                None => Capability::broken(Error::failed("the answer is gone")),
            },
            Incoming::Broken(e) => Capability::broken(e),
        })
    }

    /// A reference to import `id` (counted by the core already).
    fn import_ref(&mut self, id: u32) -> Capability {
        let Some(link) = self.link.clone() else {
            return Capability::broken(Error::disconnected("connection not started"));
        };
        let local = match self.core.import_mut(id) {
            Some((entry, _)) => entry.local.upgrade(),
            None => return Capability::broken(Error::failed("the import is gone")),
        };
        let local = match local {
            Some(local) => local,
            None => {
                let generation = self.core.renew_import(id);
                let local = Arc::new(ImportRef {
                    link,
                    import_id: id,
                    generation,
                });
                if let Some((entry, _)) = self.core.import_mut(id) {
                    entry.local = Arc::downgrade(&local);
                }
                local
            }
        };
        Capability {
            kind: CapKind::Import(local),
        }
    }

    /// A reference to import `id`, which the peer says is a promise: calls
    /// go to it until its `Resolve`.
    fn import_promise(&mut self, id: u32) -> Capability {
        let existing = self
            .core
            .import_mut(id)
            .and_then(|(entry, _)| entry.promise.as_ref().and_then(|p| p.upgrade()));
        let promise = match existing {
            Some(promise) => promise,
            None => {
                let CapKind::Import(import) = self.import_ref(id).kind else {
                    return Capability::broken(Error::disconnected("connection not started"));
                };
                let promise = PromiseImport::new(import);
                if let Some((entry, _)) = self.core.import_mut(id) {
                    entry.promise = Some(Arc::downgrade(&promise));
                }
                promise
            }
        };
        Capability {
            kind: CapKind::Promise(promise),
        }
    }

    fn on_resolve(
        &mut self,
        promise_id: u32,
        to: Result<Incoming, Error>,
        resolution: Resolution,
        ctx: &mut Context<Self>,
    ) {
        // What the resolution names is made first: even when nobody waits
        // for the promise any more, its reference must be released (F-02).
        let target = match to {
            Ok(incoming) => self.import(incoming).unwrap_or_else(Capability::null),
            Err(e) => Capability::broken(e),
        };
        let promise = self
            .core
            .import_mut(promise_id)
            .and_then(|(entry, _)| entry.promise.as_ref().and_then(|p| p.upgrade()));
        let Some(promise) = promise else {
            return; // released already: dropping `target` releases it
        };
        // A promise that would resolve to itself (directly, or through
        // other promises) would hold itself forever: it breaks instead.
        let target = if target.leads_to(&promise) {
            Capability::broken(Error::failed(format!(
                "Resolve for import {promise_id} makes the promise resolve to itself"
            )))
        } else {
            target
        };
        // The core's rule on the peer's word (P-17, P-18), applied where
        // calls went.
        let (embargo, import) = promise.resolve(target, |t| t.embargo_after(resolution, self.id));
        if embargo {
            // Through the mailbox, behind calls other threads made on the
            // promise before it resolved.
            ctx.address().do_send(EmbargoImport {
                promise_id,
                promise: Some(Arc::downgrade(&promise)),
            });
        }
        // The peer's promise export is no longer needed: release it (the
        // Release queues behind the Disembargo, which still names it).
        drop(import);
    }

    /// Sends the reflection of the peer's embargo along `target` behind
    /// the calls forwarded to the peer before this point (they are queued
    /// in our mailbox, and go out first).
    fn reflect_later(&mut self, target: MessageTarget, embargo_id: u32) {
        if let Some(me) = &self.self_addr {
            me.do_send(SendDisembargo {
                target,
                context: DisembargoContext::ReceiverLoopback(embargo_id),
            });
        }
    }

    /// The same, once the path of answer `question_id` has settled here
    /// too (past any embargo of ours on it, when the call was forwarded to
    /// another vat), and the calls the peer pipelined on it before went:
    /// its actor sends it then.
    fn reflect_when_settled(
        &mut self,
        question_id: u32,
        transform: &[u16],
        target: MessageTarget,
        embargo_id: u32,
        ctx: &mut Context<Self>,
    ) {
        let Some(entry) = self.core.answer(question_id) else {
            self.core.reflection_done();
            return;
        };
        if let Some(actor) = &entry.actor {
            actor.do_send(ReflectAfter {
                answer_id: question_id,
                on: entry.state.clone(),
                transform: transform.into(),
                target,
                embargo_id,
            });
            return;
        }
        let settled = entry.state.path_settled(transform);
        ctx.spawn(settled.into_actor(self).map(move |(), conn, _ctx| {
            conn.core.reflection_done();
            conn.reflect_later(target, embargo_id);
        }));
    }
}

impl Handler<ReturnReady> for ConnActor {
    type Result = ();

    fn handle(&mut self, msg: ReturnReady, ctx: &mut Context<Self>) {
        crate::stats::worked();
        self.backpressure.answer_reported();
        let id = msg.answer_id;
        if self.closing.is_some() {
            return;
        }
        let Some((entry, wants)) = self.core.answer_to_return(id) else {
            return;
        };
        // Its actor reported: it runs the next answer, unless calls
        // pipelined on this one are still on their way to it (then it
        // keeps taking them, for this answer only).
        if msg.pipelined == entry.pipelined {
            if let Some(actor) = entry.actor.take() {
                if self.idle_answers.len() < POOL {
                    self.idle_answers.push(actor);
                }
            }
        }
        let sent = match msg.outcome {
            // The caller only pipelines on the results (P-14): no Return;
            // its calls reach the results here, and its Finish ends the
            // answer.
            _ if wants == Wants::PipelineOnly => Default::default(),
            // A tail call from the peer: the results stay here (P-13).
            _ if wants == Wants::Elsewhere => {
                self.write(&out::return_results_sent_elsewhere(id));
                Default::default()
            }
            ReturnOutcome::Results(payload) => self.send_results(id, &payload, ctx),
            ReturnOutcome::Exception(e) => {
                self.write_exception(id, &e);
                Default::default()
            }
            ReturnOutcome::Canceled => {
                self.write(&out::return_canceled(id));
                Default::default()
            }
        };
        let super::outbound::SentResults {
            sent,
            targets,
            no_finish_needed,
        } = sent;
        if let Some(entry) = self.core.answer_mut(id) {
            if !wants.keeps_results() {
                // The caller said it makes no calls pipelined on the
                // results (P-14): they go now, not at its Finish, and a
                // call pipelined anyway fails.
                entry.state = CallState::settled(Err(Error::failed(
                    "a call pipelined on results whose caller said noPromisePipelining",
                )));
            } else if !targets.is_empty() {
                entry.sent = Some(Box::new(SentTargets {
                    described: targets,
                    settled_target: None,
                }));
            }
        }
        // The Return went out; the core ends the answer if the Finish came
        // first, or if it told the peer none is needed (P-14: a Finish that
        // comes anyway finds nothing, which is tolerated). There is room
        // under the flow limit now: what waited goes on.
        let ended = self.core.returned(id, sent, no_finish_needed);
        drop(ended);
        // (What the core decided now runs first, then what waited.)
        self.drain_parked(ctx);
        self.end_if_drained(ctx);
    }
}

impl Handler<QuestionDropped> for ConnActor {
    type Result = ();

    fn handle(&mut self, msg: QuestionDropped, _ctx: &mut Context<Self>) {
        // The core says whether a Finish goes out, and whether it asks the
        // peer to release the results (P-21).
        self.core.question_dropped(msg.key);
        self.flush();
    }
}

impl Handler<ImportDropped> for ConnActor {
    type Result = ();

    fn handle(&mut self, msg: ImportDropped, _ctx: &mut Context<Self>) {
        self.core.import_dropped(msg.import_id, msg.generation);
        self.flush();
    }
}

impl Handler<ReflectSettled> for ConnActor {
    type Result = ();

    fn handle(&mut self, msg: ReflectSettled, _ctx: &mut Context<Self>) {
        self.core.reflection_done();
        self.reflect_later(msg.target, msg.embargo_id);
    }
}

/// What the peer's `Finish` does to its call `answer_id` (whose state is
/// `state`, run by `actor`) under `policy`: cancel it, or, under
/// `RunToCompletion` unless its method allowed cancellation, let it run on
/// (what it waits for on the caller's behalf, a tail call, is cancelled).
fn cancellation_of(
    answer_id: u32,
    state: &std::sync::Arc<crate::call::CallState>,
    actor: Option<actix::Addr<crate::answer::AnswerActor>>,
    policy: super::Cancellation,
) -> crate::delivery::AfterDelivery {
    let state = std::sync::Arc::downgrade(state);
    Box::new(move || {
        let Some(state) = state.upgrade() else {
            return; // it ended meanwhile
        };
        if policy == super::Cancellation::RunToCompletion && !state.cancellable() {
            state.delivery.caller_left();
        } else if let Some(actor) = actor {
            actor.do_send(CancelAnswer {
                answer_id,
                report: true,
            });
        }
    })
}
