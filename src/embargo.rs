//! Embargo bookkeeping (E-order across a promise that resolves back home).
//!
//! When a promise with calls in flight resolves to a capability hosted by
//! the vat that holds the promise, new calls must wait until the calls
//! already sent through the peer have been reflected back. The vat sends
//! `Disembargo { context: senderLoopback = id }` down the old path and
//! queues new calls; the peer answers `receiverLoopback = id` after the
//! earlier calls, and the queue is released. This module keeps the ids of
//! those embargoes and what waits on each.

use crate::cap_descriptor::{CapDescriptor, MessageTarget};
use crate::error::Error;
use crate::table::IdTable;

/// What a promise (or a path into a question's results) through which we
/// sent calls to the peer turned out to be, as the peer named it.
///
/// ```
/// use capnp_actix_proto::embargo::Resolution;
/// use capnp_actix_proto::CapDescriptor;
/// assert_eq!(Resolution::of(&CapDescriptor::ReceiverHosted(3)), Resolution::Reflected);
/// assert_eq!(Resolution::of(&CapDescriptor::SenderPromise(1)), Resolution::PeerPromise);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// An object the peer hosts: calls made earlier and calls made now
    /// travel the same connection to it, in order.
    PeerObject,
    /// Another promise of the peer's, not resolved yet: calls made earlier
    /// went through the peer, so if it later resolves to something of
    /// ours, that promise must embargo as this one would have (P-17).
    PeerPromise,
    /// Something of ours (`receiverHosted`, `receiverAnswer`), even if it
    /// forwards back to the peer: calls made earlier are still on their
    /// way back through the peer and new ones would overtake them. The
    /// peer's word decides, not where our object forwards to (P-18).
    Reflected,
    /// Null, or an exception: calls fail wherever they are.
    Broken,
}

impl Resolution {
    /// The resolution the peer's descriptor names.
    ///
    /// ```
    /// use capnp_actix_proto::embargo::Resolution;
    /// use capnp_actix_proto::{CapDescriptor, PromisedAnswer};
    /// let ours = CapDescriptor::ReceiverAnswer(PromisedAnswer { question_id: 0, transform: vec![] });
    /// assert_eq!(Resolution::of(&ours), Resolution::Reflected);
    /// assert_eq!(Resolution::of(&CapDescriptor::None), Resolution::Broken);
    /// ```
    pub fn of(descriptor: &CapDescriptor) -> Resolution {
        match descriptor {
            CapDescriptor::None => Resolution::Broken,
            CapDescriptor::SenderHosted(_) | CapDescriptor::ThirdPartyHosted { .. } => {
                Resolution::PeerObject
            }
            CapDescriptor::SenderPromise(_) => Resolution::PeerPromise,
            CapDescriptor::ReceiverHosted(_) | CapDescriptor::ReceiverAnswer(_) => {
                Resolution::Reflected
            }
        }
    }
}

/// What resolving a promise (or a pipeline path) requires of its holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterResolution {
    /// Nothing: new calls may go straight to the resolution.
    Nothing,
    /// New calls wait until a `Disembargo{senderLoopback}` sent along the
    /// old path comes back.
    Embargo,
    /// The resolution is another promise of the peer: it inherits the fact
    /// that calls went through the peer, and decides when it resolves.
    HandOn,
}

/// The embargo rule, written once: what a resolution requires, given
/// whether calls were sent to the peer through the promise before it.
///
/// ```
/// use capnp_actix_proto::embargo::{after_resolution, AfterResolution, Resolution};
/// assert_eq!(after_resolution(Resolution::Reflected, true), AfterResolution::Embargo);
/// assert_eq!(after_resolution(Resolution::Reflected, false), AfterResolution::Nothing);
/// assert_eq!(after_resolution(Resolution::PeerPromise, true), AfterResolution::HandOn);
/// ```
pub fn after_resolution(resolution: Resolution, calls_sent: bool) -> AfterResolution {
    if !calls_sent {
        return AfterResolution::Nothing;
    }
    match resolution {
        Resolution::PeerObject | Resolution::Broken => AfterResolution::Nothing,
        Resolution::PeerPromise => AfterResolution::HandOn,
        Resolution::Reflected => AfterResolution::Embargo,
    }
}

/// Where to reflect the peer's `Disembargo{senderLoopback}` that names a
/// capability we described to it as `described` (in a `Return` or a
/// `Resolve`): back along exactly that description, whatever it resolved
/// to since (the Tribble 4-way race rule, rpc.capnp). A description that
/// names something of ours does not point back to the peer: the peer broke
/// the protocol.
///
/// ```
/// use capnp_actix_proto::embargo::reflect_to;
/// use capnp_actix_proto::{CapDescriptor, MessageTarget};
/// assert_eq!(reflect_to(&CapDescriptor::ReceiverHosted(4)).unwrap(), MessageTarget::ImportedCap(4));
/// assert!(reflect_to(&CapDescriptor::SenderHosted(4)).is_err());
/// ```
pub fn reflect_to(described: &CapDescriptor) -> Result<MessageTarget, Error> {
    match described {
        CapDescriptor::ReceiverHosted(id) => Ok(MessageTarget::ImportedCap(*id)),
        CapDescriptor::ReceiverAnswer(promised) => {
            Ok(MessageTarget::PromisedAnswer(promised.clone()))
        }
        _ => Err(Error::failed(
            "Disembargo senderLoopback whose target does not resolve back to the sender",
        )),
    }
}

/// Embargoes we have sent as Disembargo{senderLoopback}: id -> what waits
/// for the matching receiverLoopback.
///
/// ```
/// use capnp_actix_proto::embargo::EmbargoTable;
/// let mut embargoes = EmbargoTable::new();
/// let id = embargoes.start(vec!["queued call"]);
/// // ... send Disembargo { senderLoopback: id } ...
/// // ... Disembargo { receiverLoopback: id } arrives:
/// assert_eq!(embargoes.lift(id), Some(vec!["queued call"]));
/// assert_eq!(embargoes.lift(id), None); // the peer is confused: abort
/// ```
#[derive(Debug, Clone)]
pub struct EmbargoTable<T> {
    /// What waits on each embargo, by the id we put in `senderLoopback`;
    /// ids are ours, lowest free first.
    entries: IdTable<T>,
}

impl<T> Default for EmbargoTable<T> {
    /// An empty table.
    ///
    /// ```
    /// use capnp_actix_proto::embargo::EmbargoTable;
    /// let table: EmbargoTable<u8> = Default::default();
    /// assert!(table.is_empty());
    /// ```
    fn default() -> Self {
        EmbargoTable {
            entries: IdTable::new(),
        }
    }
}

impl<T> EmbargoTable<T> {
    /// An empty table.
    ///
    /// ```
    /// use capnp_actix_proto::embargo::EmbargoTable;
    /// assert_eq!(EmbargoTable::<u8>::new().len(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts an embargo with `waiting` held until it lifts, and returns
    /// the id to send as `senderLoopback` (the lowest free one).
    ///
    /// ```
    /// use capnp_actix_proto::embargo::EmbargoTable;
    /// let mut embargoes = EmbargoTable::new();
    /// assert_eq!(embargoes.start("a"), 0);
    /// assert_eq!(embargoes.start("b"), 1);
    /// ```
    pub fn start(&mut self, waiting: T) -> u32 {
        self.entries.insert(waiting)
    }

    /// Ends embargo `id` because its `receiverLoopback` arrived, giving
    /// back what waited on it. `None` for an id we never gave (or already
    /// lifted): the peer broke the protocol and the caller aborts.
    ///
    /// ```
    /// use capnp_actix_proto::embargo::EmbargoTable;
    /// let mut embargoes = EmbargoTable::new();
    /// let id = embargoes.start("waiting");
    /// assert_eq!(embargoes.lift(id + 1), None);
    /// assert_eq!(embargoes.lift(id), Some("waiting"));
    /// ```
    pub fn lift(&mut self, id: u32) -> Option<T> {
        self.entries.remove(id)
    }

    /// How many embargoes are in force.
    ///
    /// ```
    /// use capnp_actix_proto::embargo::EmbargoTable;
    /// let mut embargoes = EmbargoTable::new();
    /// embargoes.start(());
    /// assert_eq!(embargoes.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no embargo is in force.
    ///
    /// ```
    /// use capnp_actix_proto::embargo::EmbargoTable;
    /// assert!(EmbargoTable::<()>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Ends every embargo (when the connection ends), giving back what
    /// waited on each, lowest id first.
    ///
    /// ```
    /// use capnp_actix_proto::embargo::EmbargoTable;
    /// let mut embargoes = EmbargoTable::new();
    /// embargoes.start("a");
    /// embargoes.start("b");
    /// assert_eq!(embargoes.drain(), ["a", "b"]);
    /// assert!(embargoes.is_empty());
    /// ```
    pub fn drain(&mut self) -> Vec<T> {
        self.entries
            .drain()
            .into_iter()
            .map(|(_, waiting)| waiting)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PromisedAnswer;

    // covers: P-11, P-17, P-18
    #[test]
    fn the_peers_descriptor_decides_the_embargo() {
        let promised = PromisedAnswer {
            question_id: 2,
            transform: vec![0],
        };
        let cases = [
            (CapDescriptor::SenderHosted(1), AfterResolution::Nothing),
            (
                CapDescriptor::ThirdPartyHosted { vine_id: 1 },
                AfterResolution::Nothing,
            ),
            (CapDescriptor::None, AfterResolution::Nothing),
            (CapDescriptor::SenderPromise(1), AfterResolution::HandOn),
            (CapDescriptor::ReceiverHosted(1), AfterResolution::Embargo),
            (
                CapDescriptor::ReceiverAnswer(promised),
                AfterResolution::Embargo,
            ),
        ];
        for (descriptor, expected) in cases {
            let resolution = Resolution::of(&descriptor);
            assert_eq!(
                after_resolution(resolution, true),
                expected,
                "{descriptor:?}"
            );
            assert_eq!(
                after_resolution(resolution, false),
                AfterResolution::Nothing,
                "no calls went through: {descriptor:?}"
            );
        }
    }

    // covers: P-18
    #[test]
    fn a_sender_loopback_is_reflected_along_what_we_described() {
        let promised = PromisedAnswer {
            question_id: 5,
            transform: vec![1, 0],
        };
        assert_eq!(
            reflect_to(&CapDescriptor::ReceiverHosted(9)).unwrap(),
            MessageTarget::ImportedCap(9)
        );
        assert_eq!(
            reflect_to(&CapDescriptor::ReceiverAnswer(promised.clone())).unwrap(),
            MessageTarget::PromisedAnswer(promised)
        );
        for ours in [
            CapDescriptor::SenderHosted(1),
            CapDescriptor::SenderPromise(1),
            CapDescriptor::None,
            CapDescriptor::ThirdPartyHosted { vine_id: 1 },
        ] {
            let e = reflect_to(&ours).unwrap_err();
            assert!(e.reason().contains("senderLoopback"), "{ours:?}: {e}");
        }
    }

    // covers: P-11
    #[test]
    fn embargo_ids_reuse_the_lowest_free_id() {
        let mut embargoes = EmbargoTable::new();
        assert_eq!(embargoes.start("a"), 0);
        assert_eq!(embargoes.start("b"), 1);
        assert_eq!(embargoes.start("c"), 2);
        assert_eq!(embargoes.lift(1), Some("b"));
        assert_eq!(embargoes.lift(0), Some("a"));
        assert_eq!(embargoes.len(), 1);
        assert_eq!(embargoes.start("d"), 0);
        assert_eq!(embargoes.start("e"), 1);
        assert_eq!(embargoes.start("f"), 3);
        assert_eq!(embargoes.drain(), ["d", "e", "c", "f"]);
        assert!(embargoes.is_empty());
        assert_eq!(embargoes.start("g"), 0);
    }

    // covers: P-11
    #[test]
    fn lifting_an_unknown_embargo_gives_none() {
        let mut embargoes: EmbargoTable<&str> = EmbargoTable::new();
        assert_eq!(embargoes.lift(0), None);
        assert_eq!(embargoes.lift(u32::MAX), None);
        let id = embargoes.start("waiting");
        assert_eq!(embargoes.lift(id), Some("waiting"));
        // Lifted twice: the second is unknown and changes nothing.
        assert_eq!(embargoes.lift(id), None);
        assert!(embargoes.is_empty());
    }
}
