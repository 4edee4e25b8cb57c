//! The body of a call or a return as it moves between actors: an RPC
//! `Message` (built here or read off the wire) plus the capabilities its
//! cap table names, already translated into [`Capability`] handles.
//!
//! A payload is never copied on its way to a local server: the server reads
//! the params straight from the `Call` message, and a result built by a
//! local server already sits inside a `Return` message.

use crate::capability::Capability;
use crate::placeholder;
use capnp::any_pointer;
use capnp_actix_proto::frame::Frame;
use capnp_actix_proto::message::OutMessage;
use capnp_actix_proto::rpc_capnp::{message, return_};
use capnp_actix_proto::{CapDescriptor, Error};

/// Where the message of a payload lives.
pub(crate) enum Body {
    /// A message that arrived on a connection.
    Frame(Frame),
    /// A message built in this process (a request or local results).
    Built(OutMessage),
    /// Results that are those of this tail call (P-13), sent back to the
    /// peer whose call it ends, which keeps them: the `Return` names its
    /// question (`takeFromOtherQuestion`), and calls pipelined on the
    /// results go to it.
    TakeFrom(std::sync::Arc<crate::call::CallState>),
}

/// A call's params or a call's results, with their capabilities.
pub(crate) struct Payload {
    /// The `Message{call}` or `Message{return}` that holds the content.
    pub(crate) body: Body,
    /// The cap table: index `i` is what a capability pointer with index `i`
    /// in the content refers to.
    pub(crate) caps: Vec<Option<Capability>>,
    /// For results a local object built as the `Return` of an inbound call:
    /// that call's connection and answer id.
    pub(crate) return_for: Option<(u64, u32)>,
}

impl Payload {
    /// A results payload whose content is the capability `cap` itself: the
    /// form of a `Bootstrap` answer.
    pub(crate) fn single_cap(cap: Capability) -> Payload {
        let mut msg = capnp_actix_proto::message::new_message();
        let mut table: capnp::private::layout::CapTable = Vec::new();
        {
            let root: message::Builder = msg.init_root();
            let mut content = root.init_return().init_results().init_content();
            capnp::traits::ImbueMut::imbue_mut(&mut content, &mut table);
            content.set_as_capability(placeholder::placeholder(0));
        }
        Payload {
            body: Body::Built(msg),
            caps: vec![Some(cap)],
            return_for: None,
        }
    }

    /// The message, when built here: to send as it is.
    pub(crate) fn built(&self) -> Option<&OutMessage> {
        match &self.body {
            Body::Built(builder) => Some(builder),
            Body::Frame(_) | Body::TakeFrom(_) => None,
        }
    }

    /// The content pointer of the params or results, not imbued with caps.
    pub(crate) fn content(&self) -> capnp::Result<any_pointer::Reader<'_>> {
        let root: message::Reader = match &self.body {
            Body::Frame(frame) => frame.get_root()?,
            Body::Built(builder) => builder.get_root_as_reader()?,
            Body::TakeFrom(_) => {
                return Err(capnp::Error::failed(
                    "the results stayed with the peer (a tail call)".into(),
                ))
            }
        };
        content_of(root)
    }

    /// The capability at `transform` (pointer fields from the root struct):
    /// a null or missing one gives a broken capability, so that calls on it
    /// fail one by one.
    pub(crate) fn cap_at(&self, transform: &[u16]) -> Capability {
        if let Body::TakeFrom(tail) = &self.body {
            return Capability::pipelined(tail.clone(), transform.into());
        }
        let found = self
            .cap_index_at(transform)
            .and_then(|index| match self.caps.get(index) {
                Some(Some(cap)) => Ok(cap.clone()),
                _ => Err(capnp::Error::from_kind(
                    capnp::ErrorKind::MessageContainsInvalidCapabilityPointer,
                )),
            });
        found.unwrap_or_else(|e| {
            Capability::broken(Error::failed(format!(
                "no capability at pipeline path {transform:?}: {e}"
            )))
        })
    }

    /// How the peer described the capability at `transform`, when this
    /// payload arrived from it (a `Call` or `Return` off the wire); `None`
    /// for a payload made in this process.
    pub(crate) fn peer_descriptor_at(&self, transform: &[u16]) -> Option<CapDescriptor> {
        let Body::Frame(frame) = &self.body else {
            return None;
        };
        let index = u32::try_from(self.cap_index_at(transform).ok()?).ok()?;
        let root: message::Reader = frame.get_root().ok()?;
        let payload = match root.which().ok()? {
            message::Call(call) => call.ok()?.get_params().ok()?,
            message::Return(ret) => match ret.ok()?.which().ok()? {
                return_::Results(results) => results.ok()?,
                _ => return None,
            },
            _ => return None,
        };
        let table = payload.get_cap_table().ok()?;
        if index >= table.len() {
            return None;
        }
        CapDescriptor::read(table.get(index)).ok()
    }

    /// The cap-table index of the capability pointer at `transform`.
    pub(crate) fn cap_index_at(&self, transform: &[u16]) -> capnp::Result<usize> {
        // Paths are short: their ops go on the stack.
        use capnp::private::capability::PipelineOp;
        let mut on_stack = [PipelineOp::Noop; 8];
        let on_heap: Vec<PipelineOp>;
        let ops: &[PipelineOp] = match on_stack.get_mut(..transform.len()) {
            Some(ops) => {
                for (op, field) in ops.iter_mut().zip(transform) {
                    *op = PipelineOp::GetPointerField(*field);
                }
                ops
            }
            None => {
                on_heap = transform
                    .iter()
                    .map(|f| PipelineOp::GetPointerField(*f))
                    .collect();
                &on_heap
            }
        };
        placeholder::with_index_table(self.caps.len(), |table| {
            let mut content = self.content()?;
            capnp::traits::Imbue::imbue(&mut content, table);
            let hook = content.get_pipelined_cap(ops)?;
            Ok(placeholder::index_of(hook.as_ref()))
        })
    }
}

/// The content of a `Message{call}` (its params) or `Message{return}` (its
/// results).
pub(crate) fn content_of(root: message::Reader<'_>) -> capnp::Result<any_pointer::Reader<'_>> {
    match root.which()? {
        message::Call(call) => Ok(call?.get_params()?.get_content()),
        message::Return(ret) => match ret?.which()? {
            return_::Results(results) => Ok(results?.get_content()),
            _ => Err(capnp::Error::failed("return without results".into())),
        },
        _ => Err(capnp::Error::failed(
            "message carries no payload content".into(),
        )),
    }
}
