//! What the connection decides for each inbound message: read once, passed
//! through the flow gate (now, parked, or refused), then one `handle_*` per
//! kind. An `Err` is a protocol error: the runtime aborts with it.

use super::read::{
    read_inbound, CallHeader, Inbound, ResultsTo, ReturnHeader, ReturnKind, Unechoed,
};
use super::{CallTo, Connection, Event, Import, InboundCall, Incoming, Outcome, Slots, Wants};
use crate::cap_descriptor::{CapDescriptor, MessageTarget, PromisedAnswer};
use crate::embargo::{reflect_to, Resolution};
use crate::error::Error;
use crate::flow::{Admission, Kind};
use crate::frame::Frame;
use crate::message::{self as out, DisembargoContext};
use crate::rpc_capnp::message;
use crate::table::Finished;
use std::collections::HashMap;

/// What a refused call's place in the gate counts for.
const REFUSED_BYTES: usize = 8;

/// What waits in the flow gate, in arrival order.
pub(super) enum Received {
    /// An inbound message, read, with its frame (which holds the payload of
    /// a call or a return).
    Message { inbound: Inbound, frame: Frame },
    /// A call the flow limit refused: its `Return` went out at once; its
    /// answer takes its place here, so that it follows what came before it
    /// (a `Finish` of an earlier question with the same id).
    Refused {
        question_id: u32,
        results_elsewhere: bool,
    },
}

/// What waits in the flow gate that a `Return` could depend on.
#[derive(Default)]
pub(super) struct Waiting {
    /// `Resolve`s waiting.
    resolves: usize,
    /// The peer's question ids named by a waiting `Call`, `Finish` or
    /// refused call, with how many name each.
    questions: HashMap<u32, usize>,
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

    fn add(&mut self, received: &Received) {
        let (resolve, question) = Self::keys(received);
        self.resolves += usize::from(resolve);
        if let Some(id) = question {
            *self.questions.entry(id).or_default() += 1;
        }
    }

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

impl<S: Slots> Connection<S> {
    /// Takes one inbound frame: reads it, passes it through the flow gate,
    /// and handles it now, later ([`handle_waiting`](Self::handle_waiting)),
    /// or refuses it (a call over the flow limit gets an `overloaded`
    /// exception at once). A message we do not implement is answered with
    /// `unimplemented`.
    /// ```
    /// use capnp_actix_proto::connection::{pair::{reframe, Test}, Config, Connection, Event};
    /// use capnp_actix_proto::connection::Wants;
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// conn.receive(reframe(&capnp_actix_proto::message::bootstrap(0))).unwrap();
    /// assert!(matches!(conn.poll_event(), Some(Event::Bootstrap { question_id: 0, refusal: None })));
    /// // The same question id again, while it is open: a protocol error.
    /// conn.start_answer(0, vec![], Wants::Results, 0).unwrap();
    /// assert!(conn.receive(reframe(&capnp_actix_proto::message::bootstrap(0))).is_err());
    /// ```
    pub fn receive(&mut self, frame: Frame) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        let inbound = {
            let root: message::Reader = frame.get_root()?;
            let inbound = read_inbound(root)?;
            if let Inbound::NotHandled = inbound {
                self.send(out::unimplemented(root)?);
                return Ok(());
            }
            inbound
        };
        let kind = self.flow_kind(&inbound);
        let bytes = frame.size_in_words() * 8;
        match self.gate.admit(kind, bytes) {
            Admission::Now => self.handle(inbound, frame),
            Admission::Park => {
                let received = Received::Message { inbound, frame };
                self.waiting.add(&received);
                self.gate.park(received, kind, bytes);
                Ok(())
            }
            Admission::Refuse => match &inbound {
                Inbound::Call(header) => {
                    let elsewhere = header.results_to == ResultsTo::Yourself;
                    self.refuse(header.question_id, elsewhere);
                    Ok(())
                }
                _ => Err(Error::failed(
                    "the flow gate refused a message that is no call",
                )),
            },
        }
    }

    /// Handles the next message that waited in the flow gate, if one may go
    /// on now; gives whether one did. Call it until it gives `false` after
    /// every [`returned`](Self::returned), handling the events of each.
    /// ```
    /// use capnp_actix_proto::connection::{pair::{reframe, Test}, Config, Connection, Event};
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// assert!(!conn.handle_waiting().unwrap(), "nothing waits");
    /// ```
    pub fn handle_waiting(&mut self) -> Result<bool, Error> {
        if self.closed {
            return Ok(false);
        }
        let Some(received) = self.gate.next_ready() else {
            return Ok(false);
        };
        self.waiting.remove(&received);
        match received {
            Received::Message { inbound, frame } => self.handle(inbound, frame)?,
            Received::Refused {
                question_id,
                results_elsewhere,
            } => self.enter_refused(question_id, results_elsewhere)?,
        }
        Ok(true)
    }

    /// Whether the reader should stop taking bytes off the transport: the
    /// messages waiting in the gate hold as much as they may.
    pub fn reader_should_wait(&self) -> bool {
        self.gate.reader_should_wait()
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

    /// Answers a call the flow limit has no room for, at once: an
    /// `overloaded` exception (or, for a call whose results the peer will
    /// take for another question, `resultsSentElsewhere`, with the same
    /// error left for that), saying `releaseParamCaps`: its params are not
    /// read, nor kept. Its answer waits in the gate for its turn.
    fn refuse(&mut self, question_id: u32, results_elsewhere: bool) {
        let message = if results_elsewhere {
            let mut message = out::return_results_sent_elsewhere(question_id);
            if let Ok(root) = message.get_root::<message::Builder>() {
                if let Ok(message::Return(Ok(mut ret))) = root.which() {
                    ret.set_release_param_caps(true);
                }
            }
            message
        } else {
            out::return_refused(question_id, &self.refusal())
        };
        self.send(message);
        let refused = Received::Refused {
            question_id,
            results_elsewhere,
        };
        self.waiting.add(&refused);
        self.gate.park(refused, Kind::Other, REFUSED_BYTES);
    }

    /// Why a call is refused.
    fn refusal(&self) -> Error {
        Error::overloaded(format!(
            "the peer's calls waiting to run hold more than {} bytes (flow_limit)",
            self.gate.limit()
        ))
    }

    /// A refused call's turn in the gate: its answer, returned already,
    /// whose results (for `yourself`) are the refusal.
    fn enter_refused(&mut self, question_id: u32, results_elsewhere: bool) -> Result<(), Error> {
        self.check_new_question(question_id)?;
        self.events.push_back(Event::Refused {
            question_id,
            results_elsewhere,
            refusal: self.refusal(),
        });
        Ok(())
    }

    /// Handles one inbound message.
    #[inline]
    fn handle(&mut self, inbound: Inbound, frame: Frame) -> Result<(), Error> {
        match inbound {
            Inbound::Unimplemented(what) => self.handle_unimplemented(what),
            Inbound::Abort(e) => {
                self.closed = true;
                self.events.push_back(Event::Aborted(e));
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
                require_early_cancellation_workaround,
            } => {
                self.handle_finish(
                    question_id,
                    release_result_caps,
                    require_early_cancellation_workaround,
                );
                Ok(())
            }
            Inbound::Release { id, count } => self
                .exports
                .release(id, count)
                .map(|released| {
                    if let Some(export) = released {
                        self.events.push_back(Event::Released(export.value));
                    }
                })
                .map_err(|e| Error::failed(format!("bad Release: {e}"))),
            Inbound::Resolve {
                promise_id,
                resolution,
            } => self.handle_resolve(promise_id, resolution),
            Inbound::Disembargo { target, context } => self.handle_disembargo(target, context),
            Inbound::NotHandled => Ok(()),
        }
    }

    fn handle_unimplemented(&mut self, what: Unechoed) -> Result<(), Error> {
        match what {
            Unechoed::Question(id) => {
                // The peer never saw the params: release what they carried.
                let error = Error::unimplemented("the peer does not implement this message");
                self.settle_question(id, true, false, Outcome::Error(error))
            }
            // The peer will never use what the Resolve carried (P-08).
            Unechoed::Resolve(Some(export)) => {
                self.release_export(export, 1);
                Ok(())
            }
            Unechoed::Resolve(None) => Ok(()),
            Unechoed::Other => Err(Error::failed(
                "the peer echoed as unimplemented a message that must be implemented",
            )),
        }
    }

    fn check_new_question(&self, id: u32) -> Result<(), Error> {
        if self.answers.contains(id) {
            return Err(Error::failed(format!(
                "duplicate question id {id} from the peer"
            )));
        }
        Ok(())
    }

    fn handle_bootstrap(&mut self, id: u32, deprecated_object_id: bool) -> Result<(), Error> {
        self.check_new_question(id)?;
        let refusal = if deprecated_object_id {
            // A 0.4-style named export: answered with an exception, as the
            // C++ reference does (P-21); the connection lives.
            Some(Error::failed(
                "Bootstrap names an object (deprecatedObjectId): this vat serves only its \
                 bootstrap interface, not Cap'n Proto 0.4 named exports",
            ))
        } else if !self.config.serves_bootstrap {
            Some(Error::failed("this vat serves no bootstrap interface"))
        } else {
            None
        };
        self.events.push_back(Event::Bootstrap {
            question_id: id,
            refusal,
        });
        Ok(())
    }

    fn handle_call(&mut self, header: CallHeader, frame: Frame) -> Result<(), Error> {
        let id = header.question_id;
        self.check_new_question(id)?;
        let target = match header.target {
            MessageTarget::ImportedCap(export_id) => {
                if self.exports.get(export_id).is_none() {
                    return Err(Error::failed(format!(
                        "call to export {export_id}, which does not exist"
                    )));
                }
                CallTo::Export(export_id)
            }
            MessageTarget::PromisedAnswer(promised) => {
                if self.answers.contains(promised.question_id) {
                    // The call needs the answer's results: a `Finish`
                    // before its `Return` no longer cancels it.
                    self.answers.pipelined_on(promised.question_id);
                    CallTo::Answer {
                        returned: self.answers.is_returned(promised.question_id),
                        question_id: promised.question_id,
                        transform: promised.transform,
                    }
                } else {
                    CallTo::Broken(Error::failed(format!(
                        "pipelined call on answer {}, which is finished or unknown",
                        promised.question_id
                    )))
                }
            }
        };
        let caps = self.import_all(&header.descriptors)?;
        let bytes = frame.size_in_words() * 8;
        self.events.push_back(Event::Call(InboundCall {
            question_id: id,
            target,
            interface_id: header.interface_id,
            method_id: header.method_id,
            results_to: header.results_to,
            wants: header.wants,
            caps,
            frame,
            bytes,
        }));
        Ok(())
    }

    fn handle_return(&mut self, header: ReturnHeader, frame: Frame) -> Result<(), Error> {
        // A Return for a call made only to pipeline on: the peer ignores
        // the hint, so it is not sent any more; one that comes after our
        // Finish freed the id is tolerated (P-14).
        if crate::table::is_pipeline_id(header.answer_id) {
            self.pipeline_hint = false;
            if self.questions.get(header.answer_id).is_none() {
                return Ok(());
            }
        }
        // `noFinishNeeded` is honoured only for results without capabilities
        // (as the schema implies): capabilities keep the question in use,
        // for embargoes that name it, until our `Finish`.
        let no_finish_needed = header.no_finish_needed
            && !matches!(&header.kind, ReturnKind::Results(descriptors) if !descriptors.is_empty());
        // We finished this question before its Return, asking the peer to
        // release the results' capabilities itself: they are not ours to
        // import (or release).
        let finished_early = self.questions.finished_early(header.answer_id);
        let outcome = match header.kind {
            ReturnKind::Results(_) if finished_early => {
                Outcome::Error(Error::failed("the call was finished before its Return"))
            }
            ReturnKind::Results(descriptors) => {
                // Only for a question we asked: its results may name the
                // peer's exports and ours.
                if self.questions.get(header.answer_id).is_none() {
                    return Err(Error::failed(format!(
                        "bad Return: {}",
                        crate::table::QuestionError::Unknown(header.answer_id)
                    )));
                }
                Outcome::Results {
                    caps: self.import_all(&descriptors)?,
                    frame,
                }
            }
            ReturnKind::Exception(e) => Outcome::Error(e),
            ReturnKind::Canceled => Outcome::Error(Error::failed("the call was canceled")),
            ReturnKind::SentElsewhere => {
                match self.questions.get(header.answer_id) {
                    Some(question) if question.results_elsewhere => Outcome::SentElsewhere,
                    _ => return Err(Error::failed(
                        "Return says resultsSentElsewhere for a call that asked for its results",
                    )),
                }
            }
            ReturnKind::TakeFrom(other) => {
                // The peer made a tail call back to us (P-13): the results
                // of its call `other` are this question's.
                match self.answers.get(other) {
                    Some(answer) if answer.wants == Wants::Elsewhere => Outcome::TakeFrom(other),
                    Some(_) => {
                        return Err(Error::failed(format!(
                            "Return.takeFromOtherQuestion names answer {other}, \
                             whose call did not say sendResultsTo.yourself"
                        )))
                    }
                    None => {
                        return Err(Error::failed(format!(
                        "Return.takeFromOtherQuestion names answer {other}, which does not exist"
                    )))
                    }
                }
            }
            ReturnKind::Unsupported(what) => Outcome::Error(Error::unimplemented(format!(
                "the peer returned {what}, which is not supported yet"
            ))),
        };
        self.settle_question(
            header.answer_id,
            header.release_param_caps,
            no_finish_needed,
            outcome,
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
        let (taker, param_exports) = match freed {
            Some(mut question) => (
                question.taker.take(),
                std::mem::take(&mut question.param_exports),
            ),
            None => match self.questions.get_mut(id) {
                Some(question) => (
                    question.taker.take(),
                    std::mem::take(&mut question.param_exports),
                ),
                None => (None, Vec::new()),
            },
        };
        if release_param_caps {
            for export in param_exports {
                self.release_export(export, 1);
            }
        }
        if no_finish_needed {
            if let Some(question) = self.questions.mark_finished(id) {
                if let Some(key) = question.key {
                    self.question_ids.remove(&key);
                }
            }
        }
        self.events.push_back(Event::Return {
            question_id: id,
            taker,
            outcome,
            no_finish_needed,
        });
        Ok(())
    }

    fn handle_finish(&mut self, id: u32, release_result_caps: bool, after_delivery: bool) {
        // The answer table decides; a Finish for an unknown question is
        // tolerated (F-02).
        match self.answers.finish(id, release_result_caps) {
            Finished::Unknown | Finished::Again | Finished::RunsOn => {}
            Finished::Ended(ended) => self.end_answer(ended),
            Finished::Cancel => self.events.push_back(Event::Cancel {
                question_id: id,
                after_delivery,
            }),
        }
    }

    /// Counts the capabilities of a cap table from the peer; refuses one
    /// that would make us hold more of its exports than `max_imports`.
    fn import_all(&mut self, descriptors: &[CapDescriptor]) -> Result<Vec<Incoming>, Error> {
        if descriptors.is_empty() {
            return Ok(Vec::new());
        }
        self.check_import_room(descriptors)?;
        Ok(descriptors.iter().map(|d| self.import(d)).collect())
    }

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
        let held = self.imports.len() + new.len();
        if held > self.config.max_imports {
            return Err(Error::failed(format!(
                "the peer would have us hold {held} of its capabilities, over the limit of {} \
                 (max_imports)",
                self.config.max_imports
            )));
        }
        Ok(())
    }

    /// What a descriptor from the peer names, with its reference counted.
    fn import(&mut self, descriptor: &CapDescriptor) -> Incoming {
        match descriptor {
            CapDescriptor::None => Incoming::None,
            CapDescriptor::SenderHosted(id) | CapDescriptor::ThirdPartyHosted { vine_id: id } => {
                self.count_import(*id, false)
            }
            CapDescriptor::SenderPromise(id) => self.count_import(*id, true),
            CapDescriptor::ReceiverHosted(id) => match self.exports.get(*id) {
                Some(_) => Incoming::Export(*id),
                None => Incoming::Broken(Error::failed(format!(
                    "the peer named our export {id}, which does not exist"
                ))),
            },
            CapDescriptor::ReceiverAnswer(promised) => {
                if self.answers.contains(promised.question_id) {
                    Incoming::Answer(promised.clone())
                } else {
                    Incoming::Broken(Error::failed(format!(
                        "the peer named our answer {}, which does not exist",
                        promised.question_id
                    )))
                }
            }
        }
    }

    fn count_import(&mut self, id: u32, promise: bool) -> Incoming {
        let import = self.imports.receive(id, || Import {
            value: S::Import::default(),
            generation: 0,
            promise: false,
        });
        // Once a promise, it stays one until it resolves (and the import
        // goes with it): the peer may send it again as senderHosted.
        import.promise |= promise;
        Incoming::Import { id, promise }
    }

    fn handle_resolve(
        &mut self,
        promise_id: u32,
        resolution: Result<CapDescriptor, Error>,
    ) -> Result<(), Error> {
        // A promise resolves to a capability or to an exception, never to
        // nothing: the C++ reference aborts on this too (P-21).
        if let Ok(CapDescriptor::None) = resolution {
            return Err(Error::failed(format!(
                "Resolve for import {promise_id} carries CapDescriptor.none"
            )));
        }
        // What the resolution names is counted first: even when nobody
        // waits for the promise any more, the reference must be counted
        // (and then released) (F-02).
        let to = match &resolution {
            Ok(descriptor) => {
                self.check_import_room(std::slice::from_ref(descriptor))?;
                Ok(self.import(descriptor))
            }
            Err(e) => Err(e.clone()),
        };
        self.counts.resolves_received += 1;
        if let Some(import) = self.imports.get(promise_id) {
            if !import.promise {
                return Err(Error::failed(format!(
                    "Resolve for import {promise_id}, which is not a promise"
                )));
            }
        }
        // The peer's descriptor says what the promise became (P-17, P-18).
        let resolution = match &resolution {
            Ok(descriptor) => Resolution::of(descriptor),
            Err(_) => Resolution::Broken,
        };
        self.events.push_back(Event::Resolve {
            promise_id,
            to,
            resolution,
        });
        Ok(())
    }

    fn handle_disembargo(
        &mut self,
        target: MessageTarget,
        context: DisembargoContext,
    ) -> Result<(), Error> {
        match context {
            DisembargoContext::ReceiverLoopback(id) => match self.embargoes.lift(id) {
                Some(waiter) => {
                    self.events.push_back(Event::EmbargoLifted(waiter));
                    Ok(())
                }
                None => Err(Error::failed(format!(
                    "Disembargo receiverLoopback for embargo {id}, which we never started"
                ))),
            },
            // The peer resolved a promise we described to it to something
            // of its own, and calls it made through us may still be on
            // their way back. The Disembargo goes back along exactly what
            // we described (the Tribble rule), behind those calls.
            DisembargoContext::SenderLoopback(embargo_id) => match target {
                MessageTarget::ImportedCap(export_id) => {
                    let described = self
                        .exports
                        .get(export_id)
                        .and_then(|e| e.resolved.as_ref())
                        .and_then(Option::as_ref);
                    let target = reflection(described)?;
                    self.events.push_back(Event::Reflect { target, embargo_id });
                    Ok(())
                }
                MessageTarget::PromisedAnswer(promised) => {
                    self.reflect_on_answer(embargo_id, promised)
                }
            },
        }
    }

    /// A `senderLoopback` naming a path into one of our answers: reflected
    /// once that path has settled here too.
    fn reflect_on_answer(
        &mut self,
        embargo_id: u32,
        promised: PromisedAnswer,
    ) -> Result<(), Error> {
        let question_id = promised.question_id;
        let Some(answer) = self.answers.get(question_id) else {
            return Err(Error::failed(format!(
                "Disembargo senderLoopback names answer {question_id}, which does not exist"
            )));
        };
        // The peer learns what a path is from our Return, so it cannot ask
        // before it (and nothing unbounded waits for it, F-08). What the
        // Return described is read now: a Finish may follow the Disembargo
        // and end the answer before the reflection.
        if !self.answers.is_returned(question_id) {
            return Err(Error::failed(format!(
                "Disembargo senderLoopback names answer {question_id}, which has not returned"
            )));
        }
        let tail = answer.sent.as_ref().and_then(|sent| sent.tail);
        let target = match tail {
            // Our Return handed the peer its own answer's results: the
            // path is the same path in that question of ours.
            Some(tail) => MessageTarget::PromisedAnswer(PromisedAnswer {
                question_id: tail,
                transform: promised.transform.clone(),
            }),
            None => {
                let described = answer.sent.as_ref().and_then(|sent| {
                    let index = S::cap_index(&answer.value, &promised.transform)?;
                    sent.described.get(index)?.as_ref()
                });
                reflection(described)?
            }
        };
        if self.reflections_waiting >= self.config.max_reflections {
            return Err(Error::failed(format!(
                "the peer has {} Disembargos waiting, the most allowed (max_pipelined)",
                self.reflections_waiting
            )));
        }
        self.reflections_waiting += 1;
        self.events.push_back(Event::ReflectWhenSettled {
            question_id,
            transform: promised.transform,
            target,
            embargo_id,
        });
        Ok(())
    }
}

/// Where a `senderLoopback` naming what we `described` goes back; an error
/// if that does not point back to the peer.
fn reflection(described: Option<&CapDescriptor>) -> Result<MessageTarget, Error> {
    described
        .ok_or_else(|| {
            Error::failed(
                "Disembargo senderLoopback whose target does not resolve back to the sender",
            )
        })
        .and_then(reflect_to)
}
