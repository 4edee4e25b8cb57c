//! Embargo bookkeeping (E-order across a promise that resolves back home).
//!
//! When a promise with calls in flight resolves to a capability hosted by
//! the vat that holds the promise, new calls must wait until the calls
//! already sent through the peer have been reflected back. The vat sends
//! `Disembargo { context: senderLoopback = id }` down the old path and
//! queues new calls; the peer answers `receiverLoopback = id` after the
//! earlier calls, and the queue is released. This module keeps the ids of
//! those embargoes and what waits on each.

use crate::table::IdTable;

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
