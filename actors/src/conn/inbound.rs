//! What a connection does with each inbound message: one `handle_*` per
//! kind. An `Err` from any of them is a protocol error: the connection
//! aborts with it.

use super::embargo::SendDisembargo;
use super::outbound::SentResults;
use super::{
    AnswerEntry, ConnActor, EmbargoWaiter, ImportDropped, ImportEntry, QuestionDropped, SentCaps,
};
use crate::answer::{AnswerActor, CancelAnswer, ReturnOutcome, ReturnReady};
use crate::call::{CallState, OutCall, PendingCall};
use crate::capability::PromiseImport;
use crate::capability::{CapKind, Capability, ImportRef};
use crate::payload::{Body, Payload};
use crate::question::Returned;
use actix::{Actor, AsyncContext, Context, Handler};
use capnp_actix_proto::cap_descriptor::MessageTarget;
use capnp_actix_proto::embargo::Resolution;
use capnp_actix_proto::flow::{Admission, Kind};
use capnp_actix_proto::frame::Frame;
use capnp_actix_proto::message::DisembargoContext;
use capnp_actix_proto::rpc_capnp::{call, disembargo, message, payload, resolve, return_};
use capnp_actix_proto::table::{Ended, Finished};
use capnp_actix_proto::{message as out, CapDescriptor, Error};
use std::sync::Arc;

/// The parts of a `Call` needed once its frame has moved into the params.
pub(super) struct CallHeader {
    question_id: u32,
    target: MessageTarget,
    interface_id: u64,
    method_id: u16,
    results_to: ResultsTo,
    descriptors: Vec<CapDescriptor>,
}

/// Where a call's results go (`Call.sendResultsTo`).
pub(super) enum ResultsTo {
    /// Back to the caller, as usual.
    Caller,
    /// Nowhere yet: the caller will take them for another question.
    Yourself,
    /// To a third vat (level 3).
    ThirdParty,
}

/// How a `Return` ended its question.
pub(super) enum ReturnKind {
    Results(Vec<CapDescriptor>),
    Exception(Error),
    Canceled,
    /// The results of a call the peer made to us with `yourself`.
    TakeFrom(u32),
    Unsupported(&'static str),
}

/// The parts of a `Return` needed once its frame has moved into the results.
pub(super) struct ReturnHeader {
    answer_id: u32,
    release_param_caps: bool,
    no_finish_needed: bool,
    kind: ReturnKind,
}

/// An inbound message, read into owned form.
pub(super) enum Inbound {
    Unimplemented(Unechoed),
    Abort(Error),
    Bootstrap {
        question_id: u32,
        /// Set by Cap'n Proto 0.4 peers naming an export: not supported.
        deprecated_object_id: bool,
    },
    Call(CallHeader),
    Return(ReturnHeader),
    Finish {
        question_id: u32,
        release_result_caps: bool,
    },
    Release {
        id: u32,
        count: u32,
    },
    Resolve {
        promise_id: u32,
        resolution: Result<CapDescriptor, Error>,
    },
    Disembargo {
        target: MessageTarget,
        context: DisembargoContext,
    },
    /// Anything we answer with `unimplemented`.
    NotHandled,
}

/// What an `unimplemented` message echoed back to us.
pub(super) enum Unechoed {
    Question(u32),
    /// A `Resolve` we sent, with the export it carried.
    Resolve(Option<u32>),
    Other,
}

fn descriptors(payload: payload::Reader<'_>) -> Result<Vec<CapDescriptor>, Error> {
    let table = payload.get_cap_table()?;
    table.iter().map(CapDescriptor::read).collect()
}

fn read_inbound(root: message::Reader<'_>) -> Result<Inbound, Error> {
    Ok(match root.which() {
        Err(_) => Inbound::NotHandled,
        Ok(message::Unimplemented(inner)) => Inbound::Unimplemented(match inner?.which() {
            Ok(message::Call(c)) => Unechoed::Question(c?.get_question_id()),
            Ok(message::Bootstrap(b)) => Unechoed::Question(b?.get_question_id()),
            Ok(message::Resolve(r)) => Unechoed::Resolve(match r?.which() {
                Ok(resolve::Cap(d)) => match CapDescriptor::read(d?)? {
                    CapDescriptor::SenderHosted(id) | CapDescriptor::SenderPromise(id) => Some(id),
                    _ => None,
                },
                _ => None,
            }),
            _ => Unechoed::Other,
        }),
        Ok(message::Abort(e)) => Inbound::Abort(Error::read(e?)),
        Ok(message::Bootstrap(b)) => {
            let b = b?;
            Inbound::Bootstrap {
                question_id: b.get_question_id(),
                deprecated_object_id: b.has_deprecated_object_id(),
            }
        }
        Ok(message::Call(c)) => {
            let c = c?;
            let results_to = match c.get_send_results_to().which()? {
                call::send_results_to::Caller(()) => ResultsTo::Caller,
                call::send_results_to::Yourself(()) => ResultsTo::Yourself,
                call::send_results_to::ThirdParty(_) => ResultsTo::ThirdParty,
            };
            Inbound::Call(CallHeader {
                question_id: c.get_question_id(),
                target: MessageTarget::read(c.get_target()?)?,
                interface_id: c.get_interface_id(),
                method_id: c.get_method_id(),
                results_to,
                descriptors: descriptors(c.get_params()?)?,
            })
        }
        Ok(message::Return(r)) => {
            let r = r?;
            let kind =
                match r.which() {
                    Ok(return_::Results(p)) => ReturnKind::Results(descriptors(p?)?),
                    Ok(return_::Exception(e)) => ReturnKind::Exception(Error::read(e?)),
                    Ok(return_::Canceled(())) => ReturnKind::Canceled,
                    // We never send `sendResultsTo.yourself`.
                    Ok(return_::ResultsSentElsewhere(())) => return Err(Error::failed(
                        "Return says resultsSentElsewhere for a call that asked for its results",
                    )),
                    Ok(return_::TakeFromOtherQuestion(id)) => ReturnKind::TakeFrom(id),
                    Ok(return_::AcceptFromThirdParty(_)) => {
                        ReturnKind::Unsupported("acceptFromThirdParty")
                    }
                    Err(_) => ReturnKind::Unsupported("an unknown kind of return"),
                };
            Inbound::Return(ReturnHeader {
                answer_id: r.get_answer_id(),
                release_param_caps: r.get_release_param_caps(),
                no_finish_needed: r.get_no_finish_needed(),
                kind,
            })
        }
        Ok(message::Finish(f)) => {
            let f = f?;
            Inbound::Finish {
                question_id: f.get_question_id(),
                release_result_caps: f.get_release_result_caps(),
            }
        }
        Ok(message::Release(r)) => {
            let r = r?;
            Inbound::Release {
                id: r.get_id(),
                count: r.get_reference_count(),
            }
        }
        Ok(message::Resolve(r)) => {
            let r = r?;
            let resolution = match r.which()? {
                resolve::Cap(d) => Ok(CapDescriptor::read(d?)?),
                resolve::Exception(e) => Err(Error::read(e?)),
            };
            Inbound::Resolve {
                promise_id: r.get_promise_id(),
                resolution,
            }
        }
        Ok(message::Disembargo(d)) => {
            let d = d?;
            let target = MessageTarget::read(d.get_target()?)?;
            match d.get_context().which()? {
                disembargo::context::SenderLoopback(id) => Inbound::Disembargo {
                    target,
                    context: DisembargoContext::SenderLoopback(id),
                },
                disembargo::context::ReceiverLoopback(id) => Inbound::Disembargo {
                    target,
                    context: DisembargoContext::ReceiverLoopback(id),
                },
                // Level 3 contexts.
                _ => Inbound::NotHandled,
            }
        }
        // Not yet supported (level 3 and 4): answered
        // with `unimplemented`, which the protocol lets a peer recover from.
        Ok(_) => Inbound::NotHandled,
    })
}

/// What a question's answer is.
enum Outcome {
    /// Known now.
    Now(Result<Arc<Payload>, Error>),
    /// The outcome of one of our answers, once it settles.
    Later(Arc<CallState>),
}

/// What waits in the flow gate that a `Return` could depend on.
#[derive(Default)]
pub(super) struct Waiting {
    /// `Resolve`s waiting.
    resolves: usize,
    /// The peer's question ids named by a waiting `Call`, `Finish` or
    /// refused call, with how many name each.
    questions: std::collections::HashMap<u32, usize>,
}

impl Waiting {
    /// What `received` names: whether it is a `Resolve`, and the question.
    fn keys(received: &Received) -> (bool, Option<u32>) {
        match received {
            Received::Message { inbound, .. } => match inbound {
                Inbound::Resolve { .. } => (true, None),
                Inbound::Call(header) => (false, Some(header.question_id)),
                Inbound::Finish { question_id, .. } => (false, Some(*question_id)),
                _ => (false, None),
            },
            Received::Refused { question_id, .. } => (false, Some(*question_id)),
        }
    }

    /// `received` starts waiting.
    pub(super) fn add(&mut self, received: &Received) {
        let (resolve, question) = Self::keys(received);
        self.resolves += usize::from(resolve);
        if let Some(id) = question {
            *self.questions.entry(id).or_default() += 1;
        }
    }

    /// `received` stops waiting.
    fn remove(&mut self, received: &Received) {
        let (resolve, question) = Self::keys(received);
        self.resolves -= usize::from(resolve);
        if let Some(id) = question {
            if let Some(count) = self.questions.get_mut(&id) {
                *count -= 1;
                if *count == 0 {
                    self.questions.remove(&id);
                }
            }
        }
    }
}

/// What waits in the flow gate, in arrival order.
pub(super) enum Received {
    /// An inbound message, read, with the frame it came in (which holds
    /// the payload of a call or a return).
    Message { inbound: Inbound, frame: Frame },
    /// A call the flow limit refused: its `Return` went out at once; its
    /// answer takes its place here, so that it follows what came before
    /// it (a `Finish` of an earlier question with the same id).
    Refused {
        question_id: u32,
        results_elsewhere: bool,
        refusal: Error,
    },
}

impl ConnActor {
    /// Takes one inbound frame: reads it, passes it through the flow gate
    /// (handled now, parked, or refused), and handles it. A message we do
    /// not implement is answered with `unimplemented` at once.
    pub(crate) fn receive(&mut self, frame: Frame, ctx: &mut Context<Self>) -> Result<(), Error> {
        let inbound = {
            let root: message::Reader = frame.get_root()?;
            let inbound = read_inbound(root)?;
            if let Inbound::NotHandled = inbound {
                log::debug!("conn {}: answering a message with unimplemented", self.id);
                self.write(&out::unimplemented(root)?);
                return Ok(());
            }
            inbound
        };
        let kind = self.flow_kind(&inbound);
        let bytes = frame.size_in_words() * 8;
        match self.gate.admit(kind, bytes) {
            Admission::Now => self.handle(inbound, frame, ctx),
            Admission::Park => {
                let received = Received::Message { inbound, frame };
                self.waiting.add(&received);
                self.gate.park(received, kind, bytes);
                self.backpressure.hold(self.gate.reader_should_wait());
                Ok(())
            }
            Admission::Refuse => match &inbound {
                Inbound::Call(header) => {
                    let elsewhere = matches!(header.results_to, ResultsTo::Yourself);
                    self.refuse(header.question_id, elsewhere);
                    Ok(())
                }
                _ => Err(Error::failed(
                    "the flow gate refused a message that is no call",
                )),
            },
        }
    }

    /// What the flow gate needs to know of a message. A `Return` passes
    /// calls that wait unless handling it depends on something that may
    /// wait behind them: one of the peer's questions (`receiverAnswer`,
    /// `takeFromOtherQuestion`) that is not open yet or that a waiting
    /// message names, an import while a `Resolve` waits (the peer may have
    /// reused its id), or exports it releases (`releaseParamCaps`) that a
    /// waiting call may name.
    fn flow_kind(&self, inbound: &Inbound) -> Kind {
        let Inbound::Return(header) = inbound else {
            return match inbound {
                Inbound::Call(_) => Kind::Call,
                _ => Kind::Other,
            };
        };
        let unsettled =
            |id: u32| !self.answers.contains(id) || self.waiting.questions.contains_key(&id);
        let depends = match &header.kind {
            ReturnKind::TakeFrom(id) => unsettled(*id),
            ReturnKind::Results(descriptors) => {
                descriptors.iter().any(|d| match d {
                    CapDescriptor::ReceiverAnswer(promised) => unsettled(promised.question_id),
                    _ => false,
                }) || (self.waiting.resolves > 0 && !descriptors.is_empty())
            }
            _ => false,
        };
        let releases = header.release_param_caps
            && self
                .questions
                .get(header.answer_id)
                .is_some_and(|q| !q.param_exports.is_empty());
        if depends || releases {
            Kind::Other
        } else {
            Kind::IndependentReturn
        }
    }

    /// Handles what waited in the flow gate.
    pub(super) fn handle_received(
        &mut self,
        received: Received,
        ctx: &mut Context<Self>,
    ) -> Result<(), Error> {
        self.waiting.remove(&received);
        match received {
            Received::Message { inbound, frame } => self.handle(inbound, frame, ctx),
            Received::Refused {
                question_id,
                results_elsewhere,
                refusal,
            } => self.enter_refused(question_id, results_elsewhere, refusal),
        }
    }

    /// Handles one inbound message.
    #[inline]
    fn handle(
        &mut self,
        inbound: Inbound,
        frame: Frame,
        ctx: &mut Context<Self>,
    ) -> Result<(), Error> {
        match inbound {
            Inbound::Unimplemented(what) => self.handle_unimplemented(what),
            Inbound::Abort(e) => {
                self.end(e, ctx);
                Ok(())
            }
            Inbound::Bootstrap {
                question_id,
                deprecated_object_id,
            } => self.handle_bootstrap(question_id, deprecated_object_id),
            Inbound::Call(header) => self.handle_call(header, frame),
            Inbound::Return(header) => self.handle_return(header, frame),
            Inbound::Finish {
                question_id,
                release_result_caps,
            } => self.handle_finish(question_id, release_result_caps),
            Inbound::Release { id, count } => self.handle_release(id, count),
            Inbound::Resolve {
                promise_id,
                resolution,
            } => self.handle_resolve(promise_id, resolution, ctx),
            Inbound::Disembargo { target, context } => self.handle_disembargo(target, context, ctx),
            Inbound::NotHandled => Ok(()),
        }
    }

    fn handle_unimplemented(&mut self, what: Unechoed) -> Result<(), Error> {
        match what {
            Unechoed::Question(id) => {
                // The peer never saw the params: release what they carried.
                let error = Error::unimplemented("the peer does not implement this message");
                self.settle_question(id, true, false, Outcome::Now(Err(error)))
            }
            // The peer will never use what the Resolve carried (P-08).
            Unechoed::Resolve(Some(export)) => {
                let _ = self.exports.release(export, 1);
                Ok(())
            }
            Unechoed::Resolve(None) => Ok(()),
            Unechoed::Other => Err(Error::failed(
                "the peer echoed as unimplemented a message that must be implemented",
            )),
        }
    }

    pub(crate) fn start_answer(
        &mut self,
        id: u32,
        pending: PendingCall,
        results_elsewhere: bool,
        inbound_bytes: usize,
    ) -> Result<(), Error> {
        let entry = AnswerEntry {
            state: pending.state().clone(),
            actor: None,
            inbound_bytes,
            results_elsewhere,
            sent: None,
        };
        self.answers
            .start(id, entry)
            .map_err(|e| Error::failed(e.to_string()))?;
        self.gate.started(inbound_bytes);
        let actor = AnswerActor::new(id, self.answer_conn.clone(), pending).start();
        if let Some(entry) = self.answers.get_mut(id) {
            entry.actor = Some(actor);
        }
        Ok(())
    }

    fn handle_bootstrap(&mut self, id: u32, deprecated_object_id: bool) -> Result<(), Error> {
        if self.answers.contains(id) {
            return Err(Error::failed(format!(
                "duplicate question id {id} from the peer"
            )));
        }
        let result = match &self.main {
            // A 0.4-style named export: answered with an exception, as the
            // C++ reference does (P-21); the connection lives.
            _ if deprecated_object_id => Err(Error::failed(
                "Bootstrap names an object (deprecatedObjectId): this vat serves only its \
                 bootstrap interface, not Cap'n Proto 0.4 named exports",
            )),
            Some(main) => Ok(Arc::new(Payload::single_cap(main.clone()))),
            None => Err(Error::failed("this vat serves no bootstrap interface")),
        };
        self.start_answer(id, PendingCall::new(CallState::settled(result)), false, 0)
    }

    fn handle_call(&mut self, header: CallHeader, frame: Frame) -> Result<(), Error> {
        let id = header.question_id;
        if self.answers.contains(id) {
            return Err(Error::failed(format!(
                "duplicate question id {id} from the peer"
            )));
        }
        let target = match &header.target {
            MessageTarget::ImportedCap(export_id) => match self.exports.get(*export_id) {
                Some(entry) => entry.target(),
                None => {
                    return Err(Error::failed(format!(
                        "call to export {export_id}, which does not exist"
                    )))
                }
            },
            MessageTarget::PromisedAnswer(promised) => {
                let returned = self.answers.is_returned(promised.question_id);
                match self.answers.get_mut(promised.question_id) {
                    Some(entry) if entry.state.waiting() >= self.max_pipelined => {
                        Capability::broken(Error::overloaded(format!(
                            "{} calls already wait on answer {} (max_pipelined)",
                            self.max_pipelined, promised.question_id
                        )))
                    }
                    Some(entry) => entry.pipelined_target(&promised.transform, returned),
                    None => Capability::broken(Error::failed(format!(
                        "pipelined call on answer {}, which is finished or unknown",
                        promised.question_id
                    ))),
                }
            }
        };
        self.check_import_room(&header.descriptors)?;
        let caps = self.import_all(&header.descriptors);
        let inbound_bytes = frame.size_in_words() * 8;
        let pending = match header.results_to {
            ResultsTo::Caller | ResultsTo::Yourself => target.dispatch(OutCall {
                interface_id: header.interface_id,
                method_id: header.method_id,
                body: Body::Frame(frame),
                caps,
                return_for: Some((self.id, id)),
                hops: 0,
            }),
            ResultsTo::ThirdParty => PendingCall::new(CallState::settled(Err(
                Error::unimplemented("sendResultsTo.thirdParty (level 3) is not supported"),
            ))),
        };
        let results_elsewhere = matches!(header.results_to, ResultsTo::Yourself);
        self.start_answer(id, pending, results_elsewhere, inbound_bytes)
    }

    fn handle_return(&mut self, header: ReturnHeader, frame: Frame) -> Result<(), Error> {
        // `noFinishNeeded` is honoured only for results without capabilities
        // (as the schema implies): capabilities keep the question in use,
        // for embargoes that name it, until our `Finish`.
        let no_finish_needed = header.no_finish_needed
            && !matches!(&header.kind, ReturnKind::Results(descriptors) if !descriptors.is_empty());
        // We finished this question before its Return, asking the peer to
        // release the results' capabilities itself: they are not ours to
        // import (or release).
        let finished_early = self.questions.finished_early(header.answer_id);
        let result = match header.kind {
            ReturnKind::Results(_) if finished_early => Outcome::Now(Err(Error::failed(
                "the call was finished before its Return",
            ))),
            ReturnKind::Results(descriptors) => {
                // The peer's answer may name its own exports and our
                // exports; import them before anything else.
                self.check_import_room(&descriptors)?;
                let caps = self.import_all(&descriptors);
                Outcome::Now(Ok(Arc::new(Payload {
                    body: Body::Frame(frame),
                    caps,
                    return_for: None,
                })))
            }
            ReturnKind::Exception(e) => Outcome::Now(Err(e)),
            ReturnKind::Canceled => Outcome::Now(Err(Error::failed("the call was canceled"))),
            ReturnKind::TakeFrom(other) => {
                // The peer made a tail call back to us (P-13): the results
                // of its call `other` are this question's.
                let Some(answer) = self.answers.get(other) else {
                    return Err(Error::failed(format!(
                        "Return.takeFromOtherQuestion names answer {other}, which does not exist"
                    )));
                };
                if !answer.results_elsewhere {
                    return Err(Error::failed(format!(
                        "Return.takeFromOtherQuestion names answer {other}, \
                         whose call did not say sendResultsTo.yourself"
                    )));
                }
                Outcome::Later(answer.state.clone())
            }
            ReturnKind::Unsupported(what) => Outcome::Now(Err(Error::unimplemented(format!(
                "the peer returned {what}, which is not supported yet"
            )))),
        };
        self.settle_question(
            header.answer_id,
            header.release_param_caps,
            no_finish_needed,
            result,
        )
    }

    /// A question got its answer (a `Return`, or an `unimplemented` echo).
    fn settle_question(
        &mut self,
        id: u32,
        release_param_caps: bool,
        no_finish_needed: bool,
        outcome: Outcome,
    ) -> Result<(), Error> {
        let freed = self
            .questions
            .mark_returned(id)
            .map_err(|e| Error::failed(format!("bad Return: {e}")))?;
        let (actor, param_exports) = match freed {
            Some(mut entry) => (entry.actor.take(), std::mem::take(&mut entry.param_exports)),
            None => match self.questions.get_mut(id) {
                Some(entry) => (entry.actor.take(), std::mem::take(&mut entry.param_exports)),
                None => (None, Vec::new()),
            },
        };
        if release_param_caps {
            for export in param_exports {
                let _ = self.exports.release(export, 1);
            }
        }
        if no_finish_needed {
            if let Some(entry) = self.questions.mark_finished(id) {
                if let Some(key) = entry.key {
                    self.question_ids.remove(&key);
                }
            }
        }
        if let Some(actor) = actor {
            match outcome {
                Outcome::Now(result) => actor.do_send(Returned(result, no_finish_needed, true)),
                Outcome::Later(state) => {
                    let settled = state.wait();
                    actix_rt::spawn(async move {
                        let result = settled.await.unwrap_or_else(|_| {
                            Err(Error::failed(
                                "the call whose results were taken was dropped",
                            ))
                        });
                        actor.do_send(Returned(result, no_finish_needed, false));
                    });
                }
            }
        }
        Ok(())
    }

    fn handle_finish(&mut self, id: u32, release_result_caps: bool) -> Result<(), Error> {
        // The core's answer table decides; a Finish for an unknown question
        // is tolerated (F-02).
        match self.answers.finish(id, release_result_caps) {
            Finished::Unknown | Finished::Again => {}
            Finished::Ended(ended) => self.end_answer(ended),
            Finished::Cancel => {
                if let Some(actor) = self.answers.get(id).and_then(|e| e.actor.as_ref()) {
                    actor.do_send(CancelAnswer { report: true });
                }
            }
        }
        Ok(())
    }

    /// An answer ended: release what its results carried, if the peer's
    /// `Finish` asked.
    fn end_answer(&mut self, ended: Ended<AnswerEntry>) {
        if ended.release_result_caps {
            let exports = ended.value.sent.map(|sent| sent.exports);
            for export in exports.unwrap_or_default() {
                let _ = self.exports.release(export, 1);
            }
        }
    }

    fn handle_release(&mut self, id: u32, count: u32) -> Result<(), Error> {
        self.exports
            .release(id, count)
            .map(|_| ())
            .map_err(|e| Error::failed(format!("bad Release: {e}")))
    }

    /// Refuses descriptors that would make us hold more of the peer's
    /// exports than `max_imports`.
    fn check_import_room(&self, descriptors: &[CapDescriptor]) -> Result<(), Error> {
        let mut new: Vec<u32> = descriptors
            .iter()
            .filter_map(|d| match d {
                CapDescriptor::SenderHosted(id) | CapDescriptor::SenderPromise(id) => Some(*id),
                CapDescriptor::ThirdPartyHosted { vine_id } => Some(*vine_id),
                _ => None,
            })
            .filter(|id| self.imports.get(*id).is_none())
            .collect();
        new.sort_unstable();
        new.dedup();
        if self.imports.len() + new.len() > self.max_imports {
            return Err(Error::failed(format!(
                "the peer would have us hold {} of its capabilities, over the limit of {} \
                 (max_imports)",
                self.imports.len() + new.len(),
                self.max_imports
            )));
        }
        Ok(())
    }

    fn import_all(&mut self, descriptors: &[CapDescriptor]) -> Vec<Option<Capability>> {
        descriptors.iter().map(|d| self.import(d)).collect()
    }

    /// The capability a descriptor from the peer names.
    fn import(&mut self, descriptor: &CapDescriptor) -> Option<Capability> {
        Some(match descriptor {
            CapDescriptor::None => return None,
            CapDescriptor::SenderHosted(id) => self.import_ref(*id),
            CapDescriptor::SenderPromise(id) => self.import_promise(*id),
            CapDescriptor::ThirdPartyHosted { vine_id } => self.import_ref(*vine_id),
            CapDescriptor::ReceiverHosted(id) => match self.exports.get(*id) {
                Some(entry) => entry.target(),
                None => Capability::broken(Error::failed(format!(
                    "the peer named our export {id}, which does not exist"
                ))),
            },
            CapDescriptor::ReceiverAnswer(promised) => match self.answers.get(promised.question_id)
            {
                Some(entry) => {
                    Capability::pipelined(entry.state.clone(), promised.transform.clone().into())
                }
                None => Capability::broken(Error::failed(format!(
                    "the peer named our answer {}, which does not exist",
                    promised.question_id
                ))),
            },
        })
    }

    /// One more reference to import `id`.
    fn import_ref(&mut self, id: u32) -> Capability {
        let link = self.link.clone();
        let next_generation = &mut self.next_generation;
        let entry = self.imports.receive(id, || ImportEntry {
            local: std::sync::Weak::new(),
            generation: 0,
            promise: None,
        });
        let local = match entry.local.upgrade() {
            Some(local) => local,
            None => {
                *next_generation += 1;
                let Some(link) = link else {
                    return Capability::broken(Error::disconnected("connection not started"));
                };
                let local = Arc::new(ImportRef {
                    link,
                    import_id: id,
                    generation: *next_generation,
                });
                entry.local = Arc::downgrade(&local);
                entry.generation = *next_generation;
                local
            }
        };
        Capability {
            kind: CapKind::Import(local),
        }
    }
}

impl ConnActor {
    /// One more reference to import `id`, which the peer says is a
    /// promise: calls go to it until its `Resolve`.
    fn import_promise(&mut self, id: u32) -> Capability {
        let existing = self
            .imports
            .get(id)
            .and_then(|entry| entry.promise.as_ref())
            .and_then(|promise| promise.upgrade());
        let promise = match existing {
            Some(promise) => {
                // Count the reference the peer just sent.
                self.import_ref(id);
                promise
            }
            None => {
                let CapKind::Import(import) = self.import_ref(id).kind else {
                    return Capability::broken(Error::disconnected("connection not started"));
                };
                let promise = PromiseImport::new(import);
                if let Some(entry) = self.imports.get_mut(id) {
                    entry.promise = Some(Arc::downgrade(&promise));
                }
                promise
            }
        };
        Capability {
            kind: CapKind::Promise(promise),
        }
    }

    fn handle_resolve(
        &mut self,
        promise_id: u32,
        resolution: Result<CapDescriptor, Error>,
        ctx: &mut Context<Self>,
    ) -> Result<(), Error> {
        // A promise resolves to a capability or to an exception, never to
        // nothing: the C++ reference aborts on this too (P-21).
        if let Ok(CapDescriptor::None) = resolution {
            return Err(Error::failed(format!(
                "Resolve for import {promise_id} carries CapDescriptor.none"
            )));
        }
        // Import what the resolution names first: even when nobody waits
        // for the promise any more, the reference must be counted (and then
        // released) (F-02).
        if let Ok(descriptor) = &resolution {
            self.check_import_room(std::slice::from_ref(descriptor))?;
        }
        let target = match &resolution {
            Ok(descriptor) => self.import(descriptor).unwrap_or_else(Capability::null),
            Err(e) => Capability::broken(e.clone()),
        };
        self.counts.resolves_received += 1;
        let Some(entry) = self.imports.get(promise_id) else {
            return Ok(()); // released already: dropping `target` releases it
        };
        let Some(promise) = &entry.promise else {
            return Err(Error::failed(format!(
                "Resolve for import {promise_id}, which is not a promise"
            )));
        };
        let Some(promise) = promise.upgrade() else {
            return Ok(());
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
        // The peer's descriptor says what the promise became (P-17, P-18).
        let resolution = match &resolution {
            Ok(descriptor) => Resolution::of(descriptor),
            Err(_) => Resolution::Broken,
        };
        let (embargo, import) = promise.resolve(target, |t| t.embargo_after(resolution, self.id));
        if embargo {
            self.counts.embargoes_started += 1;
            let id = self
                .embargoes
                .start(EmbargoWaiter::Promise(Arc::downgrade(&promise)));
            // Through the mailbox, behind calls other threads made on the
            // promise before it resolved.
            ctx.address().do_send(SendDisembargo {
                target: MessageTarget::ImportedCap(promise_id),
                context: DisembargoContext::SenderLoopback(id),
            });
        }
        // The peer's promise export is no longer needed: release it (the
        // Release queues behind the Disembargo, which still names it).
        drop(import);
        Ok(())
    }
}

impl Handler<ReturnReady> for ConnActor {
    type Result = ();

    fn handle(&mut self, msg: ReturnReady, ctx: &mut Context<Self>) {
        let id = msg.answer_id;
        if self.answers.is_returned(id) || self.closing.is_some() {
            return;
        }
        let Some(entry) = self.answers.get_mut(id) else {
            return;
        };
        let inbound_bytes = std::mem::take(&mut entry.inbound_bytes);
        entry.actor = None;
        let sent = match msg.outcome {
            // A tail call from the peer: the results stay here (P-13).
            _ if entry.results_elsewhere => {
                self.write(&out::return_results_sent_elsewhere(id));
                SentResults::default()
            }
            ReturnOutcome::Results(payload) => self.send_results(id, &payload, ctx),
            ReturnOutcome::Exception(e) => {
                self.write(&out::return_exception(id, &e));
                SentResults::default()
            }
            ReturnOutcome::Canceled => {
                self.write(&out::return_canceled(id));
                SentResults::default()
            }
        };
        let no_finish_needed = sent.no_finish_needed;
        if let Some(entry) = self.answers.get_mut(id) {
            if !sent.exports.is_empty() || !sent.described.is_empty() {
                entry.sent = Some(Box::new(SentCaps {
                    exports: sent.exports,
                    described: sent.described,
                    settled_target: None,
                }));
            }
        }
        // The Return went out; it ends the answer if the Finish came first,
        // or if it told the peer none is needed (P-14: a Finish that comes
        // anyway finds nothing, which is tolerated).
        if let Some(ended) = self.answers.returned(id, no_finish_needed) {
            self.end_answer(ended);
        }
        // Room under the flow limit: what waited goes on.
        self.gate.returned(inbound_bytes);
        self.drain_parked(ctx);
    }
}

impl Handler<QuestionDropped> for ConnActor {
    type Result = ();

    fn handle(&mut self, msg: QuestionDropped, _ctx: &mut Context<Self>) {
        let Some(id) = self.question_ids.remove(&msg.key) else {
            return;
        };
        if self.closing.is_some() {
            return;
        }
        if let Some(entry) = self.questions.get_mut(id) {
            entry.key = None;
        }
        // The core's question table says whether a Finish goes out, and
        // whether it asks the peer to release the results (P-21).
        if let Some(release_result_caps) = self.questions.finish(id) {
            self.write(&out::finish(id, release_result_caps));
        }
    }
}

impl Handler<ImportDropped> for ConnActor {
    type Result = ();

    fn handle(&mut self, msg: ImportDropped, _ctx: &mut Context<Self>) {
        let current = self
            .imports
            .get(msg.import_id)
            .is_some_and(|entry| entry.generation == msg.generation);
        if !current || self.closing.is_some() {
            return;
        }
        if let Some((_, count)) = self.imports.remove(msg.import_id) {
            self.write(&out::release(msg.import_id, count));
        }
    }
}
