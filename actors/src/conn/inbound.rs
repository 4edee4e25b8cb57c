//! What a connection does with each inbound message: one `handle_*` per
//! kind. An `Err` from any of them is a protocol error: the connection
//! aborts with it.

use super::{AnswerEntry, ConnActor, ImportDropped, ImportEntry, QuestionDropped};
use crate::answer::{AnswerActor, CancelAnswer, ReturnOutcome, ReturnReady};
use crate::call::{CallState, OutCall, PendingCall};
use crate::capability::{CapKind, Capability, ImportRef};
use crate::payload::{Body, Payload};
use crate::question::Returned;
use actix::{Actor, AsyncContext, Context, Handler};
use capnp_actix_proto::cap_descriptor::MessageTarget;
use capnp_actix_proto::frame::Frame;
use capnp_actix_proto::rpc_capnp::{call, message, payload, return_};
use capnp_actix_proto::{message as out, CapDescriptor, Error};
use std::sync::Arc;

/// The parts of a `Call` needed once its frame has moved into the params.
struct CallHeader {
    question_id: u32,
    target: MessageTarget,
    interface_id: u64,
    method_id: u16,
    results_to_caller: bool,
    descriptors: Vec<CapDescriptor>,
}

/// How a `Return` ended its question.
enum ReturnKind {
    Results(Vec<CapDescriptor>),
    Exception(Error),
    Canceled,
    Unsupported(&'static str),
}

/// The parts of a `Return` needed once its frame has moved into the results.
struct ReturnHeader {
    answer_id: u32,
    release_param_caps: bool,
    no_finish_needed: bool,
    kind: ReturnKind,
}

/// An inbound message, read into owned form.
enum Inbound {
    Unimplemented(Unechoed),
    Abort(Error),
    Bootstrap(u32),
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
    /// Anything we answer with `unimplemented`.
    NotHandled,
}

/// What an `unimplemented` message echoed back to us.
enum Unechoed {
    Question(u32),
    Resolve,
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
            Ok(message::Resolve(_)) => Unechoed::Resolve,
            _ => Unechoed::Other,
        }),
        Ok(message::Abort(e)) => Inbound::Abort(Error::read(e?)),
        Ok(message::Bootstrap(b)) => Inbound::Bootstrap(b?.get_question_id()),
        Ok(message::Call(c)) => {
            let c = c?;
            let results_to_caller = matches!(
                c.get_send_results_to().which(),
                Ok(call::send_results_to::Caller(()))
            );
            Inbound::Call(CallHeader {
                question_id: c.get_question_id(),
                target: MessageTarget::read(c.get_target()?)?,
                interface_id: c.get_interface_id(),
                method_id: c.get_method_id(),
                results_to_caller,
                descriptors: descriptors(c.get_params()?)?,
            })
        }
        Ok(message::Return(r)) => {
            let r = r?;
            let kind = match r.which() {
                Ok(return_::Results(p)) => ReturnKind::Results(descriptors(p?)?),
                Ok(return_::Exception(e)) => ReturnKind::Exception(Error::read(e?)),
                Ok(return_::Canceled(())) => ReturnKind::Canceled,
                Ok(return_::ResultsSentElsewhere(())) => {
                    ReturnKind::Unsupported("resultsSentElsewhere")
                }
                Ok(return_::TakeFromOtherQuestion(_)) => {
                    ReturnKind::Unsupported("takeFromOtherQuestion")
                }
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
        // Not yet supported (level 1 promises, level 3 and 4): answered
        // with `unimplemented`, which the protocol lets a peer recover from.
        Ok(_) => Inbound::NotHandled,
    })
}

impl ConnActor {
    /// Handles one inbound frame.
    pub(crate) fn handle_frame(
        &mut self,
        frame: Frame,
        ctx: &mut Context<Self>,
    ) -> Result<(), Error> {
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
        match inbound {
            Inbound::Unimplemented(what) => self.handle_unimplemented(what),
            Inbound::Abort(e) => {
                self.end(e, ctx);
                Ok(())
            }
            Inbound::Bootstrap(id) => self.handle_bootstrap(id, ctx),
            Inbound::Call(header) => self.handle_call(header, frame, ctx),
            Inbound::Return(header) => self.handle_return(header, frame),
            Inbound::Finish {
                question_id,
                release_result_caps,
            } => self.handle_finish(question_id, release_result_caps),
            Inbound::Release { id, count } => self.handle_release(id, count),
            Inbound::NotHandled => Ok(()),
        }
    }

    fn handle_unimplemented(&mut self, what: Unechoed) -> Result<(), Error> {
        match what {
            Unechoed::Question(id) => {
                let error = Error::unimplemented("the peer does not implement this message");
                self.settle_question(id, false, false, Err(error))
            }
            // We send no Resolve yet; nothing to release.
            Unechoed::Resolve => Ok(()),
            Unechoed::Other => Err(Error::failed(
                "the peer echoed as unimplemented a message that must be implemented",
            )),
        }
    }

    fn start_answer(
        &mut self,
        id: u32,
        pending: PendingCall,
        ctx: &mut Context<Self>,
    ) -> Result<(), Error> {
        let state = pending.state().clone();
        let entry = AnswerEntry {
            state,
            actor: None,
            returned: false,
            finished: false,
            release_result_caps: false,
            result_exports: Vec::new(),
        };
        if self.answers.insert(id, entry).is_err() {
            return Err(Error::failed(format!(
                "duplicate question id {id} from the peer"
            )));
        }
        let actor = AnswerActor::new(id, ctx.address().downgrade(), pending).start();
        if let Some(entry) = self.answers.get_mut(id) {
            entry.actor = Some(actor);
        }
        Ok(())
    }

    fn handle_bootstrap(&mut self, id: u32, ctx: &mut Context<Self>) -> Result<(), Error> {
        if self.answers.contains(id) {
            return Err(Error::failed(format!(
                "duplicate question id {id} from the peer"
            )));
        }
        let result = match &self.main {
            Some(main) => Ok(Arc::new(Payload::single_cap(main.clone()))),
            None => Err(Error::failed("this vat serves no bootstrap interface")),
        };
        self.start_answer(id, PendingCall::new(CallState::settled(result)), ctx)
    }

    fn handle_call(
        &mut self,
        header: CallHeader,
        frame: Frame,
        ctx: &mut Context<Self>,
    ) -> Result<(), Error> {
        let id = header.question_id;
        if self.answers.contains(id) {
            return Err(Error::failed(format!(
                "duplicate question id {id} from the peer"
            )));
        }
        let target = match &header.target {
            MessageTarget::ImportedCap(export_id) => match self.exports.get(*export_id) {
                Some(cap) => cap.clone(),
                None => {
                    return Err(Error::failed(format!(
                        "call to export {export_id}, which does not exist"
                    )))
                }
            },
            MessageTarget::PromisedAnswer(promised) => {
                match self.answers.get(promised.question_id) {
                    Some(entry) => Capability::pipelined(
                        entry.state.clone(),
                        promised.transform.clone().into(),
                    ),
                    None => Capability::broken(Error::failed(format!(
                        "pipelined call on answer {}, which is finished or unknown",
                        promised.question_id
                    ))),
                }
            }
        };
        let caps = self.import_all(&header.descriptors);
        let pending = if header.results_to_caller {
            target.dispatch(OutCall {
                interface_id: header.interface_id,
                method_id: header.method_id,
                body: Body::Frame(frame),
                caps,
            })
        } else {
            PendingCall::new(CallState::settled(Err(Error::unimplemented(
                "sendResultsTo other than the caller is not supported yet",
            ))))
        };
        self.start_answer(id, pending, ctx)
    }

    fn handle_return(&mut self, header: ReturnHeader, frame: Frame) -> Result<(), Error> {
        let result = match header.kind {
            ReturnKind::Results(descriptors) => {
                // The peer's answer may name its own exports and our
                // exports; import them before anything else.
                let caps = self.import_all(&descriptors);
                Ok(Arc::new(Payload {
                    body: Body::Frame(frame),
                    caps,
                }))
            }
            ReturnKind::Exception(e) => Err(e),
            ReturnKind::Canceled => Err(Error::failed("the call was canceled")),
            ReturnKind::Unsupported(what) => Err(Error::unimplemented(format!(
                "the peer returned {what}, which is not supported yet"
            ))),
        };
        self.settle_question(
            header.answer_id,
            header.release_param_caps,
            header.no_finish_needed,
            result,
        )
    }

    /// A question got its answer (a `Return`, or an `unimplemented` echo).
    fn settle_question(
        &mut self,
        id: u32,
        release_param_caps: bool,
        no_finish_needed: bool,
        result: Result<Arc<Payload>, Error>,
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
            actor.do_send(Returned(result));
        }
        Ok(())
    }

    fn handle_finish(&mut self, id: u32, release_result_caps: bool) -> Result<(), Error> {
        // A Finish for an unknown question is tolerated (F-02).
        let Some(entry) = self.answers.get_mut(id) else {
            return Ok(());
        };
        if entry.finished {
            return Ok(());
        }
        entry.finished = true;
        entry.release_result_caps = release_result_caps;
        if entry.returned {
            self.remove_answer(id);
        } else if let Some(actor) = &entry.actor {
            actor.do_send(CancelAnswer { report: true });
        }
        Ok(())
    }

    /// Forgets a returned and finished answer.
    fn remove_answer(&mut self, id: u32) {
        if let Some(entry) = self.answers.remove(id) {
            if entry.release_result_caps {
                for export in entry.result_exports {
                    let _ = self.exports.release(export, 1);
                }
            }
        }
    }

    fn handle_release(&mut self, id: u32, count: u32) -> Result<(), Error> {
        self.exports
            .release(id, count)
            .map(|_| ())
            .map_err(|e| Error::failed(format!("bad Release: {e}")))
    }

    fn import_all(&mut self, descriptors: &[CapDescriptor]) -> Vec<Option<Capability>> {
        descriptors.iter().map(|d| self.import(d)).collect()
    }

    /// The capability a descriptor from the peer names.
    fn import(&mut self, descriptor: &CapDescriptor) -> Option<Capability> {
        Some(match descriptor {
            CapDescriptor::None => return None,
            CapDescriptor::SenderHosted(id) | CapDescriptor::SenderPromise(id) => {
                self.import_ref(*id)
            }
            CapDescriptor::ThirdPartyHosted { vine_id } => self.import_ref(*vine_id),
            CapDescriptor::ReceiverHosted(id) => match self.exports.get(*id) {
                Some(cap) => cap.clone(),
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
        let conn = self.self_addr.clone();
        let conn_id = self.id;
        let next_generation = &mut self.next_generation;
        let entry = self.imports.receive(id, || ImportEntry {
            local: std::sync::Weak::new(),
            generation: 0,
        });
        let local = match entry.local.upgrade() {
            Some(local) => local,
            None => {
                *next_generation += 1;
                let Some(conn) = conn else {
                    return Capability::broken(Error::disconnected("connection not started"));
                };
                let local = Arc::new(ImportRef {
                    conn,
                    conn_id,
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

impl Handler<ReturnReady> for ConnActor {
    type Result = ();

    fn handle(&mut self, msg: ReturnReady, _ctx: &mut Context<Self>) {
        let id = msg.answer_id;
        let Some(entry) = self.answers.get_mut(id) else {
            return;
        };
        if entry.returned || self.closing.is_some() {
            return;
        }
        entry.returned = true;
        entry.actor = None;
        let exports = match msg.outcome {
            ReturnOutcome::Results(payload) => self.send_results(id, &payload),
            ReturnOutcome::Exception(e) => {
                self.write(&out::return_exception(id, &e));
                Vec::new()
            }
            ReturnOutcome::Canceled => {
                self.write(&out::return_canceled(id));
                Vec::new()
            }
        };
        if let Some(entry) = self.answers.get_mut(id) {
            entry.result_exports = exports;
            if entry.finished {
                self.remove_answer(id);
            }
        }
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
        if !self.questions.is_finished(id) {
            // Results capabilities were imported one by one; they are
            // released the same way, so the Finish does not release them.
            self.write(&out::finish(id, false));
            self.questions.mark_finished(id);
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
