//! Inbound messages read into owned form, once, before the flow gate: what
//! the connection's decisions need of each kind. Payloads stay in their
//! frame, which travels with the message.

use super::wants::Wants;
use crate::cap_descriptor::{CapDescriptor, MessageTarget};
use crate::error::Error;
use crate::message::DisembargoContext;
use crate::rpc_capnp::{call, disembargo, message, payload, resolve, return_};

/// The parts of a `Call` its handling needs; the params stay in the frame.
#[derive(Debug)]
pub(crate) struct CallHeader {
    pub(crate) question_id: u32,
    pub(crate) target: MessageTarget,
    pub(crate) interface_id: u64,
    pub(crate) method_id: u16,
    pub(crate) results_to: ResultsTo,
    pub(crate) wants: Wants,
    pub(crate) descriptors: Vec<CapDescriptor>,
}

/// Where a call's results go (`Call.sendResultsTo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultsTo {
    /// Back to the caller, as usual.
    Caller,
    /// Nowhere yet: the caller will take them for another question
    /// (`Return.takeFromOtherQuestion`); the call's own `Return` says
    /// `resultsSentElsewhere`.
    Yourself,
    /// To a third vat (level 3): not supported, answered with an exception.
    ThirdParty,
}

/// How a `Return` ended its question.
#[derive(Debug)]
pub(crate) enum ReturnKind {
    Results(Vec<CapDescriptor>),
    Exception(Error),
    Canceled,
    /// The results of a call the peer made to us with `yourself`.
    TakeFrom(u32),
    /// The peer kept the results (our call said `yourself`).
    SentElsewhere,
    Unsupported(&'static str),
}

/// The parts of a `Return` its handling needs; the results stay in the
/// frame.
#[derive(Debug)]
pub(crate) struct ReturnHeader {
    pub(crate) answer_id: u32,
    pub(crate) release_param_caps: bool,
    pub(crate) no_finish_needed: bool,
    pub(crate) kind: ReturnKind,
}

/// An inbound message, read.
#[derive(Debug)]
pub(crate) enum Inbound {
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
        /// Cancellation waits until the call was delivered (old peers'
        /// behaviour some callers rely on; capnp-rpc sets it).
        require_early_cancellation_workaround: bool,
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
#[derive(Debug)]
pub(crate) enum Unechoed {
    Question(u32),
    /// A `Resolve` we sent, with the export it carried.
    Resolve(Option<u32>),
    Other,
}

fn descriptors(payload: payload::Reader<'_>) -> Result<Vec<CapDescriptor>, Error> {
    let table = payload.get_cap_table()?;
    table.iter().map(CapDescriptor::read).collect()
}

/// Reads one inbound message.
pub(crate) fn read_inbound(root: message::Reader<'_>) -> Result<Inbound, Error> {
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
                wants: Wants::of(
                    results_to,
                    c.get_only_promise_pipeline(),
                    c.get_no_promise_pipelining(),
                ),
                descriptors: descriptors(c.get_params()?)?,
            })
        }
        Ok(message::Return(r)) => {
            let r = r?;
            let kind = match r.which() {
                Ok(return_::Results(p)) => ReturnKind::Results(descriptors(p?)?),
                Ok(return_::Exception(e)) => ReturnKind::Exception(Error::read(e?)),
                Ok(return_::Canceled(())) => ReturnKind::Canceled,
                Ok(return_::ResultsSentElsewhere(())) => ReturnKind::SentElsewhere,
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
                require_early_cancellation_workaround: f
                    .get_require_early_cancellation_workaround(),
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
        // Not yet supported (level 3 and 4): answered with `unimplemented`,
        // which the protocol lets a peer recover from.
        Ok(_) => Inbound::NotHandled,
    })
}
