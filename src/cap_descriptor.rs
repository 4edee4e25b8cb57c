//! Owned forms of the capability references that travel in messages:
//! `CapDescriptor` (an entry of a payload's cap table), `PromisedAnswer`
//! (a path into a not-yet-returned answer) and `MessageTarget`.
//!
//! Reading checks what the runtime relies on and reports the rest as an
//! [`Error`]: a peer's malformed descriptor never panics.

use crate::error::Error;
use crate::rpc_capnp::{cap_descriptor, message_target, promised_answer};

/// A capability reference inside a payload's cap table, from the point of
/// view of the vat that sent it.
///
/// ```
/// use capnp_actix_proto::CapDescriptor;
/// let mut msg = capnp::message::Builder::new_default();
/// let d = CapDescriptor::SenderHosted(7);
/// d.write(msg.init_root());
/// assert_eq!(CapDescriptor::read(msg.get_root_as_reader().unwrap()).unwrap(), d);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapDescriptor {
    /// A null capability.
    None,
    /// An object exported by the sender under this export id.
    SenderHosted(u32),
    /// A promise exported by the sender; a `Resolve` for it follows.
    SenderPromise(u32),
    /// An object the receiver exported to the sender earlier (the
    /// receiver's own export id).
    ReceiverHosted(u32),
    /// A capability inside an answer to a question the receiver asked.
    ReceiverAnswer(PromisedAnswer),
    /// A capability hosted by a third vat (level 3), reachable through the
    /// sender's `vine` export in the meantime.
    ThirdPartyHosted {
        /// The export that proxies the third-party capability.
        vine_id: u32,
    },
}

/// A path to a capability inside the answer to a question: the question,
/// then the pointer fields to follow from the results' root struct.
///
/// ```
/// use capnp_actix_proto::PromisedAnswer;
/// let p = PromisedAnswer { question_id: 3, transform: vec![0, 1] };
/// let mut msg = capnp::message::Builder::new_default();
/// p.write(msg.init_root());
/// assert_eq!(PromisedAnswer::read(msg.get_root_as_reader().unwrap()).unwrap(), p);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PromisedAnswer {
    /// The question (the receiver's answer) the path starts at.
    pub question_id: u32,
    /// Pointer field indexes to follow, in order; `noop` ops are dropped.
    pub transform: Vec<u16>,
}

/// What a `Call` or `Disembargo` is addressed to.
///
/// ```
/// use capnp_actix_proto::cap_descriptor::MessageTarget;
/// let t = MessageTarget::ImportedCap(2);
/// let mut msg = capnp::message::Builder::new_default();
/// t.write(msg.init_root());
/// assert_eq!(MessageTarget::read(msg.get_root_as_reader().unwrap()).unwrap(), t);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageTarget {
    /// An export of the receiver, by its export id.
    ImportedCap(u32),
    /// A capability inside an answer of the receiver.
    PromisedAnswer(PromisedAnswer),
}

impl CapDescriptor {
    /// Reads a descriptor; an unknown union member is an error.
    ///
    /// ```
    /// use capnp_actix_proto::CapDescriptor;
    /// let mut msg = capnp::message::Builder::new_default();
    /// CapDescriptor::None.write(msg.init_root());
    /// assert_eq!(CapDescriptor::read(msg.get_root_as_reader().unwrap()).unwrap(), CapDescriptor::None);
    /// ```
    pub fn read(reader: cap_descriptor::Reader<'_>) -> Result<Self, Error> {
        use cap_descriptor::Which;
        Ok(match reader.which().map_err(bad_descriptor)? {
            Which::None(()) => CapDescriptor::None,
            Which::SenderHosted(id) => CapDescriptor::SenderHosted(id),
            Which::SenderPromise(id) => CapDescriptor::SenderPromise(id),
            Which::ReceiverHosted(id) => CapDescriptor::ReceiverHosted(id),
            Which::ReceiverAnswer(answer) => {
                CapDescriptor::ReceiverAnswer(PromisedAnswer::read(answer?)?)
            }
            Which::ThirdPartyHosted(third) => CapDescriptor::ThirdPartyHosted {
                vine_id: third?.get_vine_id(),
            },
        })
    }

    /// Writes this descriptor.
    ///
    /// ```
    /// use capnp_actix_proto::CapDescriptor;
    /// let mut msg = capnp::message::Builder::new_default();
    /// CapDescriptor::ReceiverHosted(4).write(msg.init_root());
    /// ```
    pub fn write(&self, mut builder: cap_descriptor::Builder<'_>) {
        match self {
            CapDescriptor::None => builder.set_none(()),
            CapDescriptor::SenderHosted(id) => builder.set_sender_hosted(*id),
            CapDescriptor::SenderPromise(id) => builder.set_sender_promise(*id),
            CapDescriptor::ReceiverHosted(id) => builder.set_receiver_hosted(*id),
            CapDescriptor::ReceiverAnswer(answer) => answer.write(builder.init_receiver_answer()),
            CapDescriptor::ThirdPartyHosted { vine_id } => {
                builder.init_third_party_hosted().set_vine_id(*vine_id)
            }
        }
    }
}

impl PromisedAnswer {
    /// Reads a promised answer; unknown transform ops are an error.
    ///
    /// ```
    /// use capnp_actix_proto::PromisedAnswer;
    /// let mut msg = capnp::message::Builder::new_default();
    /// PromisedAnswer { question_id: 1, transform: vec![] }.write(msg.init_root());
    /// assert_eq!(PromisedAnswer::read(msg.get_root_as_reader().unwrap()).unwrap().question_id, 1);
    /// ```
    pub fn read(reader: promised_answer::Reader<'_>) -> Result<Self, Error> {
        let ops = reader.get_transform()?;
        let mut transform = Vec::with_capacity(ops.len() as usize);
        for op in ops.iter() {
            match op.which().map_err(bad_descriptor)? {
                promised_answer::op::Which::Noop(()) => {}
                promised_answer::op::Which::GetPointerField(field) => transform.push(field),
            }
        }
        Ok(PromisedAnswer {
            question_id: reader.get_question_id(),
            transform,
        })
    }

    /// Writes this promised answer.
    ///
    /// ```
    /// use capnp_actix_proto::PromisedAnswer;
    /// let mut msg = capnp::message::Builder::new_default();
    /// PromisedAnswer { question_id: 1, transform: vec![2] }.write(msg.init_root());
    /// ```
    pub fn write(&self, mut builder: promised_answer::Builder<'_>) {
        builder.set_question_id(self.question_id);
        if !self.transform.is_empty() {
            let mut ops = builder.init_transform(self.transform.len() as u32);
            for (i, field) in self.transform.iter().enumerate() {
                ops.reborrow().get(i as u32).set_get_pointer_field(*field);
            }
        }
    }
}

impl MessageTarget {
    /// Reads a message target.
    ///
    /// ```
    /// use capnp_actix_proto::cap_descriptor::MessageTarget;
    /// let mut msg = capnp::message::Builder::new_default();
    /// MessageTarget::ImportedCap(0).write(msg.init_root());
    /// assert!(MessageTarget::read(msg.get_root_as_reader().unwrap()).is_ok());
    /// ```
    pub fn read(reader: message_target::Reader<'_>) -> Result<Self, Error> {
        Ok(match reader.which().map_err(bad_descriptor)? {
            message_target::Which::ImportedCap(id) => MessageTarget::ImportedCap(id),
            message_target::Which::PromisedAnswer(answer) => {
                MessageTarget::PromisedAnswer(PromisedAnswer::read(answer?)?)
            }
        })
    }

    /// Writes this message target.
    ///
    /// ```
    /// use capnp_actix_proto::cap_descriptor::MessageTarget;
    /// let mut msg = capnp::message::Builder::new_default();
    /// MessageTarget::ImportedCap(9).write(msg.init_root());
    /// ```
    pub fn write(&self, mut builder: message_target::Builder<'_>) {
        match self {
            MessageTarget::ImportedCap(id) => builder.set_imported_cap(*id),
            MessageTarget::PromisedAnswer(answer) => answer.write(builder.init_promised_answer()),
        }
    }
}

fn bad_descriptor(e: capnp::NotInSchema) -> Error {
    Error::failed(format!(
        "unknown union member in a capability reference: {e}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(d: &CapDescriptor) -> CapDescriptor {
        let mut msg = capnp::message::Builder::new_default();
        d.write(msg.init_root());
        CapDescriptor::read(msg.get_root_as_reader().unwrap()).unwrap()
    }

    // covers: P-12
    #[test]
    fn every_descriptor_kind_round_trips() {
        for d in [
            CapDescriptor::None,
            CapDescriptor::SenderHosted(1),
            CapDescriptor::SenderPromise(2),
            CapDescriptor::ReceiverHosted(3),
            CapDescriptor::ReceiverAnswer(PromisedAnswer {
                question_id: 4,
                transform: vec![0, 5],
            }),
            CapDescriptor::ThirdPartyHosted { vine_id: 6 },
        ] {
            assert_eq!(round_trip(&d), d);
        }
    }

    #[test]
    fn noop_ops_are_dropped_from_a_transform() {
        let mut msg = capnp::message::Builder::new_default();
        {
            let mut pa: promised_answer::Builder = msg.init_root();
            pa.set_question_id(2);
            let mut ops = pa.init_transform(3);
            ops.reborrow().get(0).set_noop(());
            ops.reborrow().get(1).set_get_pointer_field(7);
            ops.reborrow().get(2).set_noop(());
        }
        let read = PromisedAnswer::read(msg.get_root_as_reader().unwrap()).unwrap();
        assert_eq!(read.transform, vec![7]);
    }

    #[test]
    fn an_unknown_union_member_is_an_error_not_a_panic() {
        // A descriptor whose union discriminant is 42: no such member.
        let mut msg = capnp::message::Builder::new_default();
        CapDescriptor::SenderHosted(1).write(msg.init_root());
        let mut words = capnp::serialize::write_message_to_words(&msg);
        // Segment table (8 bytes), root pointer (8 bytes), then the struct's
        // data section, which starts with the union discriminant (u16).
        words[8 + 8] = 42;
        let reader =
            capnp::serialize::read_message(&mut &words[..], capnp::message::ReaderOptions::new())
                .unwrap();
        let root: cap_descriptor::Reader = reader.get_root().unwrap();
        assert!(CapDescriptor::read(root).is_err());
    }
}
