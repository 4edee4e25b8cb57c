//! Builders for the RPC messages whose content the core fully knows:
//! everything except the payloads of `Call` and `Return`, which the runtime
//! fills in place.
//!
//! Each function returns a ready `capnp::message::Builder` whose root is an
//! `rpc.capnp` `Message`; [`crate::frame::encode`] frames it for the wire.

use crate::cap_descriptor::{CapDescriptor, MessageTarget};
use crate::error::Error;
use crate::rpc_capnp::message;
use crate::segments::SegmentAllocator;
use capnp::message::Builder;

/// An outbound message under construction (its segments from a
/// [`SegmentAllocator`]).
pub type OutMessage = Builder<SegmentAllocator>;

/// An empty message to build an RPC message in, sized for the common
/// case (a small first segment; large content gets segments of its own).
///
/// ```
/// let mut m = capnp_actix_proto::message::new_message();
/// m.init_root::<capnp_actix_proto::rpc_capnp::message::Builder>();
/// ```
pub fn new_message() -> OutMessage {
    Builder::new(SegmentAllocator::new())
}

/// `Bootstrap{questionId}`.
///
/// ```
/// use capnp_actix_proto::{message, rpc_capnp};
/// let m = message::bootstrap(0);
/// let r: rpc_capnp::message::Reader = m.get_root_as_reader().unwrap();
/// assert!(matches!(r.which().unwrap(), rpc_capnp::message::Bootstrap(_)));
/// ```
pub fn bootstrap(question_id: u32) -> OutMessage {
    let mut m = new_message();
    m.init_root::<message::Builder>()
        .init_bootstrap()
        .set_question_id(question_id);
    m
}

/// `Finish{questionId, releaseResultCaps}`; `requireEarlyCancellationWorkaround`
/// is false, as protocol 1.0 senders set it.
///
/// ```
/// let m = capnp_actix_proto::message::finish(3, false);
/// ```
pub fn finish(question_id: u32, release_result_caps: bool) -> OutMessage {
    let mut m = new_message();
    let mut f = m.init_root::<message::Builder>().init_finish();
    f.set_question_id(question_id);
    f.set_release_result_caps(release_result_caps);
    f.set_require_early_cancellation_workaround(false);
    m
}

/// `Release{id, referenceCount}`.
///
/// ```
/// let m = capnp_actix_proto::message::release(1, 2);
/// ```
pub fn release(id: u32, count: u32) -> OutMessage {
    let mut m = new_message();
    let mut r = m.init_root::<message::Builder>().init_release();
    r.set_id(id);
    r.set_reference_count(count);
    m
}

/// `Abort{exception}`.
///
/// ```
/// use capnp_actix_proto::{message, Error};
/// let m = message::abort(&Error::failed("protocol error"));
/// ```
pub fn abort(error: &Error) -> OutMessage {
    let mut m = new_message();
    error.write(m.init_root::<message::Builder>().init_abort());
    m
}

/// `Return{answerId, exception}` with `releaseParamCaps = false`: the
/// receiver of the params releases them one by one.
///
/// ```
/// use capnp_actix_proto::{message, Error};
/// let m = message::return_exception(4, &Error::unimplemented("no such method"));
/// ```
pub fn return_exception(answer_id: u32, error: &Error) -> OutMessage {
    let mut m = new_message();
    let mut r = m.init_root::<message::Builder>().init_return();
    r.set_answer_id(answer_id);
    r.set_release_param_caps(false);
    error.write(r.init_exception());
    m
}

/// `Return{answerId, exception}` with `releaseParamCaps = true`: for a call
/// refused before its params were read, whose capabilities the caller
/// then counts as released.
///
/// ```
/// use capnp_actix_proto::{message, Error};
/// let m = message::return_refused(4, &Error::overloaded("over the flow limit"));
/// ```
pub fn return_refused(answer_id: u32, error: &Error) -> OutMessage {
    let mut m = new_message();
    let mut r = m.init_root::<message::Builder>().init_return();
    r.set_answer_id(answer_id);
    r.set_release_param_caps(true);
    error.write(r.init_exception());
    m
}

/// `Return{answerId, canceled}`.
///
/// ```
/// let m = capnp_actix_proto::message::return_canceled(4);
/// ```
pub fn return_canceled(answer_id: u32) -> OutMessage {
    let mut m = new_message();
    let mut r = m.init_root::<message::Builder>().init_return();
    r.set_answer_id(answer_id);
    r.set_release_param_caps(false);
    r.set_canceled(());
    m
}

/// `Return{answerId, resultsSentElsewhere}`: the answer to a call made with
/// `sendResultsTo.yourself`, whose results stay here for the caller to take.
///
/// ```
/// let m = capnp_actix_proto::message::return_results_sent_elsewhere(4);
/// ```
pub fn return_results_sent_elsewhere(answer_id: u32) -> OutMessage {
    let mut m = new_message();
    let mut r = m.init_root::<message::Builder>().init_return();
    r.set_answer_id(answer_id);
    r.set_release_param_caps(false);
    r.set_results_sent_elsewhere(());
    m
}

/// `Return{answerId, takeFromOtherQuestion}`: the results are those of
/// question `question_id`, our tail call back to the peer, which kept them
/// (its call said `sendResultsTo.yourself`).
///
/// ```
/// let m = capnp_actix_proto::message::return_take_from(4, 9);
/// ```
pub fn return_take_from(answer_id: u32, question_id: u32) -> OutMessage {
    let mut m = new_message();
    let mut r = m.init_root::<message::Builder>().init_return();
    r.set_answer_id(answer_id);
    r.set_release_param_caps(false);
    r.set_take_from_other_question(question_id);
    m
}

/// `Resolve{promiseId, cap}` or `Resolve{promiseId, exception}`.
///
/// ```
/// use capnp_actix_proto::{message, CapDescriptor};
/// let m = message::resolve(2, Ok(&CapDescriptor::SenderHosted(5)));
/// ```
pub fn resolve(promise_id: u32, resolution: Result<&CapDescriptor, &Error>) -> OutMessage {
    let mut m = new_message();
    let mut r = m.init_root::<message::Builder>().init_resolve();
    r.set_promise_id(promise_id);
    match resolution {
        Ok(descriptor) => descriptor.write(r.init_cap()),
        Err(error) => error.write(r.init_exception()),
    }
    m
}

/// Which way a `Disembargo` travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisembargoContext {
    /// Sent by the vat that resolved a promise pointing back to itself.
    SenderLoopback(u32),
    /// The reflection of a `SenderLoopback`, sent back to its origin.
    ReceiverLoopback(u32),
}

/// `Disembargo{target, context}`.
///
/// ```
/// use capnp_actix_proto::{cap_descriptor::MessageTarget, message};
/// let m = message::disembargo(&MessageTarget::ImportedCap(1), message::DisembargoContext::SenderLoopback(0));
/// ```
pub fn disembargo(target: &MessageTarget, context: DisembargoContext) -> OutMessage {
    let mut m = new_message();
    let mut d = m.init_root::<message::Builder>().init_disembargo();
    target.write(d.reborrow().init_target());
    match context {
        DisembargoContext::SenderLoopback(id) => d.init_context().set_sender_loopback(id),
        DisembargoContext::ReceiverLoopback(id) => d.init_context().set_receiver_loopback(id),
    }
    m
}

/// `Unimplemented{the message we do not handle}`, echoing it back.
///
/// ```
/// use capnp_actix_proto::{message, rpc_capnp};
/// let original = message::release(1, 1);
/// let echo = message::unimplemented(original.get_root_as_reader().unwrap()).unwrap();
/// let r: rpc_capnp::message::Reader = echo.get_root_as_reader().unwrap();
/// assert!(matches!(r.which().unwrap(), rpc_capnp::message::Unimplemented(_)));
/// ```
pub fn unimplemented(original: message::Reader<'_>) -> capnp::Result<OutMessage> {
    let mut m = new_message();
    m.init_root::<message::Builder>()
        .set_unimplemented(original)?;
    Ok(m)
}

/// The name of a message's kind, as the schema spells it (for logs and
/// tests).
///
/// ```
/// use capnp_actix_proto::message;
/// let m = message::finish(1, false);
/// assert_eq!(message::kind(m.get_root_as_reader().unwrap()), "finish");
/// ```
pub fn kind(message: message::Reader<'_>) -> &'static str {
    use message::Which;
    match message.which() {
        Ok(Which::Unimplemented(_)) => "unimplemented",
        Ok(Which::Abort(_)) => "abort",
        Ok(Which::Bootstrap(_)) => "bootstrap",
        Ok(Which::Call(_)) => "call",
        Ok(Which::Return(_)) => "return",
        Ok(Which::Finish(_)) => "finish",
        Ok(Which::Resolve(_)) => "resolve",
        Ok(Which::Release(_)) => "release",
        Ok(Which::Disembargo(_)) => "disembargo",
        Ok(_) => "other",
        Err(_) => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc_capnp::message::Which;

    fn which_name(m: &OutMessage) -> &'static str {
        kind(m.get_root_as_reader().unwrap())
    }

    #[test]
    fn each_builder_makes_the_message_it_names() {
        assert_eq!(which_name(&bootstrap(1)), "bootstrap");
        assert_eq!(which_name(&finish(1, true)), "finish");
        assert_eq!(which_name(&release(1, 1)), "release");
        assert_eq!(which_name(&abort(&Error::failed("x"))), "abort");
        assert_eq!(which_name(&return_canceled(1)), "return");
        assert_eq!(which_name(&resolve(1, Err(&Error::failed("x")))), "resolve");
        assert_eq!(
            which_name(&disembargo(
                &MessageTarget::ImportedCap(1),
                DisembargoContext::ReceiverLoopback(2)
            )),
            "disembargo"
        );
    }

    // covers: P-08
    #[test]
    fn unimplemented_echoes_the_original_message() {
        let original = release(7, 3);
        let echo = unimplemented(original.get_root_as_reader().unwrap()).unwrap();
        let r: message::Reader = echo.get_root_as_reader().unwrap();
        let Which::Unimplemented(inner) = r.which().unwrap() else {
            panic!("not an unimplemented message")
        };
        let Which::Release(rel) = inner.unwrap().which().unwrap() else {
            panic!("echo lost its content")
        };
        let rel = rel.unwrap();
        assert_eq!((rel.get_id(), rel.get_reference_count()), (7, 3));
    }

    #[test]
    fn finish_says_no_early_cancellation_workaround() {
        let m = finish(5, false);
        let r: message::Reader = m.get_root_as_reader().unwrap();
        let Which::Finish(f) = r.which().unwrap() else {
            panic!()
        };
        let f = f.unwrap();
        assert_eq!(f.get_question_id(), 5);
        assert!(!f.get_release_result_caps());
        assert!(!f.get_require_early_cancellation_workaround());
    }
}
