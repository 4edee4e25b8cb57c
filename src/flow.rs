//! The flow limit on inbound calls, as a gate every inbound message passes.
//!
//! A connection runs the peer's calls while the bytes of those that have not
//! returned stay under a limit. Over it, new calls wait ("park") in arrival
//! order, and so does every message behind them, so that nothing overtakes
//! a call it was sent after (a `Finish`, a `Release`, a `Disembargo` that
//! must follow the calls before it). Only a `Return` that names none of the
//! peer's questions goes straight through: the answer to one of our calls
//! depends on nothing the peer sent after it, and a handler that called the
//! peer back waits for exactly that `Return`. Stopping the reader instead
//! would leave it unread, and the handler, its caller and the connection
//! would wait for each other forever (F-07; the C++ reference warns of
//! this and keeps its flow limit off by default).
//!
//! Memory stays bounded (F-06, F-08): parked calls hold at most `limit`
//! bytes (one more call is refused, with an `overloaded` exception, and its
//! params are not kept), and when the other parked messages pass their own
//! bound ([`MIN_OTHER_BOUND`] or `limit`, whichever is larger) the reader
//! stops taking bytes off the transport. That bound is kept apart from the
//! flow limit, which may be small: a peer reaches it only by flooding
//! `Finish`es, `Release`s and the like while its calls are refused.

use std::collections::VecDeque;

/// The least bound on parked messages other than calls: 1 MiB.
pub const MIN_OTHER_BOUND: usize = 1 << 20;

/// What kind of message is offered to the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A `Call` of `bytes` bytes: it runs, waits, or is refused.
    Call,
    /// A `Return` whose handling names none of the peer's questions (no
    /// `takeFromOtherQuestion`, no `receiverAnswer` capability): it never
    /// waits.
    IndependentReturn,
    /// Anything else: it waits behind a waiting call.
    Other,
}

/// What [`FlowGate::admit`] says to do with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Handle it now.
    Now,
    /// Park it ([`FlowGate::park`]).
    Park,
    /// Refuse it (a call): answer `overloaded`, without keeping its params.
    Refuse,
}

/// What to do with an offered message.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<T> {
    /// Handle it now.
    Now(T),
    /// It waits in the gate: [`FlowGate::next_ready`] gives it back later.
    Parked,
    /// Refuse it (a call): answer `overloaded`, without keeping its params.
    Refuse(T),
}

/// The flow limit's state for one connection.
///
/// ```
/// use capnp_actix_proto::flow::{Admit, FlowGate, Kind};
/// let mut gate = FlowGate::new(100);
/// assert_eq!(gate.offer("call 1", Kind::Call, 80), Admit::Now("call 1"));
/// gate.started(80);
/// // Over the limit: the next call waits, and so does what follows it...
/// assert_eq!(gate.offer("call 2", Kind::Call, 80), Admit::Parked);
/// assert_eq!(gate.offer("finish", Kind::Other, 8), Admit::Parked);
/// // ...but not the answer to a call of ours.
/// assert_eq!(gate.offer("return", Kind::IndependentReturn, 8), Admit::Now("return"));
/// gate.returned(80);
/// assert_eq!(gate.next_ready(), Some("call 2"));
/// gate.started(80);
/// assert_eq!(gate.next_ready(), Some("finish"));
/// assert_eq!(gate.next_ready(), None);
/// ```
#[derive(Debug)]
pub struct FlowGate<T> {
    /// Most bytes of running calls, and of parked calls.
    limit: usize,
    /// Most bytes of other parked messages before the reader waits.
    other_bound: usize,
    /// Bytes of the calls running (handled, not yet returned).
    running: usize,
    /// What waits, in arrival order, with its kind and size.
    parked: VecDeque<(T, Kind, usize)>,
    /// Bytes of the parked calls.
    parked_calls: usize,
    /// Bytes of the other parked messages.
    parked_other: usize,
}

impl<T> FlowGate<T> {
    /// A gate for a connection whose calls may hold `limit` bytes at once
    /// (`usize::MAX`: no limit).
    ///
    /// ```
    /// let gate = capnp_actix_proto::flow::FlowGate::<()>::new(1 << 20);
    /// assert_eq!(gate.running(), 0);
    /// ```
    pub fn new(limit: usize) -> Self {
        FlowGate::with_bounds(limit, limit.max(MIN_OTHER_BOUND))
    }

    /// A gate with its own bound on parked messages other than calls.
    ///
    /// ```
    /// use capnp_actix_proto::flow::{FlowGate, Kind};
    /// let mut gate = FlowGate::with_bounds(10, 4);
    /// gate.started(10);
    /// gate.park((), Kind::Other, 5);
    /// assert!(gate.reader_should_wait());
    /// ```
    pub fn with_bounds(limit: usize, other_bound: usize) -> Self {
        FlowGate {
            limit,
            other_bound,
            running: 0,
            parked: VecDeque::new(),
            parked_calls: 0,
            parked_other: 0,
        }
    }

    /// Whether a call of `bytes` may run now: it fits under the limit, or
    /// nothing else runs (a call larger than the limit runs alone).
    fn fits(&self, bytes: usize) -> bool {
        self.running == 0 || self.running.saturating_add(bytes) <= self.limit
    }

    /// What to do with an inbound message of this kind and size, without
    /// taking it: for a runtime that handles the message in place and
    /// hands it over only to [`park`](Self::park) it.
    ///
    /// ```
    /// use capnp_actix_proto::flow::{Admission, FlowGate, Kind};
    /// let mut gate = FlowGate::<()>::new(10);
    /// assert_eq!(gate.admit(Kind::Call, 6), Admission::Now);
    /// gate.started(6);
    /// assert_eq!(gate.admit(Kind::Call, 6), Admission::Park);
    /// assert_eq!(gate.admit(Kind::IndependentReturn, 6), Admission::Now);
    /// ```
    pub fn admit(&self, kind: Kind, bytes: usize) -> Admission {
        let waits = match kind {
            Kind::IndependentReturn => false,
            Kind::Call => !self.parked.is_empty() || !self.fits(bytes),
            Kind::Other => !self.parked.is_empty(),
        };
        if !waits {
            return Admission::Now;
        }
        // One call always finds room, so that the gate moves on.
        if kind == Kind::Call
            && self.parked_calls > 0
            && self.parked_calls.saturating_add(bytes) > self.limit
        {
            return Admission::Refuse;
        }
        Admission::Park
    }

    /// Parks a message that [`admit`](Self::admit) said must wait.
    ///
    /// ```
    /// use capnp_actix_proto::flow::{FlowGate, Kind};
    /// let mut gate = FlowGate::new(10);
    /// gate.started(10);
    /// gate.park("call", Kind::Call, 4);
    /// assert_eq!(gate.parked(), 4);
    /// ```
    pub fn park(&mut self, message: T, kind: Kind, bytes: usize) {
        if kind == Kind::Call {
            self.parked_calls += bytes;
        } else {
            self.parked_other += bytes;
        }
        self.parked.push_back((message, kind, bytes));
    }

    /// Offers an inbound message of `bytes` bytes: [`admit`](Self::admit),
    /// and [`park`](Self::park) it if it must wait.
    ///
    /// ```
    /// use capnp_actix_proto::flow::{Admit, FlowGate, Kind};
    /// let mut gate = FlowGate::new(10);
    /// gate.started(10);
    /// assert_eq!(gate.offer(1, Kind::Call, 6), Admit::Parked);
    /// // Parked calls are bounded by the limit too: the next is refused.
    /// assert_eq!(gate.offer(2, Kind::Call, 6), Admit::Refuse(2));
    /// ```
    pub fn offer(&mut self, message: T, kind: Kind, bytes: usize) -> Admit<T> {
        match self.admit(kind, bytes) {
            Admission::Now => Admit::Now(message),
            Admission::Refuse => Admit::Refuse(message),
            Admission::Park => {
                self.park(message, kind, bytes);
                Admit::Parked
            }
        }
    }

    /// A call of `bytes` bytes started running.
    ///
    /// ```
    /// let mut gate = capnp_actix_proto::flow::FlowGate::<()>::new(100);
    /// gate.started(30);
    /// assert_eq!(gate.running(), 30);
    /// ```
    pub fn started(&mut self, bytes: usize) {
        self.running = self.running.saturating_add(bytes);
    }

    /// A running call of `bytes` bytes returned.
    ///
    /// ```
    /// let mut gate = capnp_actix_proto::flow::FlowGate::<()>::new(100);
    /// gate.started(30);
    /// gate.returned(30);
    /// assert_eq!(gate.running(), 0);
    /// ```
    pub fn returned(&mut self, bytes: usize) {
        self.running = self.running.saturating_sub(bytes);
    }

    /// The next parked message that may be handled now, if any: in arrival
    /// order, a call only once it fits.
    ///
    /// ```
    /// use capnp_actix_proto::flow::{Admit, FlowGate, Kind};
    /// let mut gate = FlowGate::new(10);
    /// gate.started(10);
    /// gate.offer("call", Kind::Call, 10);
    /// assert_eq!(gate.next_ready(), None);
    /// gate.returned(10);
    /// assert_eq!(gate.next_ready(), Some("call"));
    /// ```
    pub fn next_ready(&mut self) -> Option<T> {
        let (_, kind, bytes) = self.parked.front()?;
        if *kind == Kind::Call && !self.fits(*bytes) {
            return None;
        }
        let (message, kind, bytes) = self.parked.pop_front()?;
        match kind {
            Kind::Call => self.parked_calls -= bytes,
            _ => self.parked_other -= bytes,
        }
        Some(message)
    }

    /// The limit the gate keeps.
    ///
    /// ```
    /// assert_eq!(capnp_actix_proto::flow::FlowGate::<()>::new(7).limit(), 7);
    /// ```
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes of the calls running.
    ///
    /// ```
    /// let gate = capnp_actix_proto::flow::FlowGate::<()>::new(100);
    /// assert_eq!(gate.running(), 0);
    /// ```
    pub fn running(&self) -> usize {
        self.running
    }

    /// Bytes of everything parked.
    ///
    /// ```
    /// use capnp_actix_proto::flow::{FlowGate, Kind};
    /// let mut gate = FlowGate::new(10);
    /// gate.started(10);
    /// gate.offer((), Kind::Call, 4);
    /// gate.offer((), Kind::Other, 2);
    /// assert_eq!(gate.parked(), 6);
    /// ```
    pub fn parked(&self) -> usize {
        self.parked_calls + self.parked_other
    }

    /// Whether the reader should stop taking bytes off the transport:
    /// messages other than calls parked past their bound (calls past the
    /// limit are refused instead).
    ///
    /// ```
    /// use capnp_actix_proto::flow::{FlowGate, Kind};
    /// let mut gate = FlowGate::with_bounds(10, 10);
    /// gate.started(10);
    /// gate.offer((), Kind::Call, 10);
    /// gate.offer((), Kind::Other, 8);
    /// assert!(!gate.reader_should_wait());
    /// gate.offer((), Kind::Other, 8);
    /// assert!(gate.reader_should_wait());
    /// ```
    pub fn reader_should_wait(&self) -> bool {
        self.parked_other > self.other_bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // covers: F-07
    #[test]
    fn a_return_passes_the_gate_while_calls_wait() {
        let mut gate = FlowGate::new(100);
        assert_eq!(
            gate.offer("handler", Kind::Call, 100),
            Admit::Now("handler")
        );
        gate.started(100);
        // The handler calls the peer back; the peer sends more calls,
        // then the Return the handler waits for.
        for i in 0..3 {
            assert_eq!(gate.offer("call", Kind::Call, 30), Admit::Parked, "{i}");
        }
        assert_eq!(
            gate.offer("return", Kind::IndependentReturn, 50),
            Admit::Now("return")
        );
        // A Return that names the peer's questions keeps its place.
        assert_eq!(gate.offer("take-from", Kind::Other, 50), Admit::Parked);
        gate.returned(100);
        assert_eq!(gate.next_ready(), Some("call"));
        gate.started(30);
        assert_eq!(gate.next_ready(), Some("call"));
        gate.started(30);
        assert_eq!(gate.next_ready(), Some("call"));
        gate.started(30);
        assert_eq!(gate.next_ready(), Some("take-from"));
        assert_eq!(gate.next_ready(), None);
        assert_eq!(gate.parked(), 0);
    }

    // covers: F-06, F-07
    #[test]
    fn parked_calls_are_bounded_and_later_ones_refused() {
        let mut gate = FlowGate::new(100);
        gate.started(100);
        assert_eq!(gate.offer(1, Kind::Call, 60), Admit::Parked);
        assert_eq!(gate.offer(2, Kind::Call, 40), Admit::Parked);
        assert_eq!(gate.offer(3, Kind::Call, 1), Admit::Refuse(3));
        assert_eq!(gate.parked(), 100);
        // A call larger than the limit still gets its turn, alone.
        let mut gate = FlowGate::new(10);
        gate.started(5);
        assert_eq!(gate.offer(1, Kind::Call, 50), Admit::Parked);
        assert_eq!(gate.next_ready(), None);
        gate.returned(5);
        assert_eq!(gate.next_ready(), Some(1));
    }

    // covers: F-05
    #[test]
    fn order_is_kept_behind_a_waiting_call() {
        let mut gate = FlowGate::new(10);
        gate.started(10);
        assert_eq!(gate.offer("call", Kind::Call, 5), Admit::Parked);
        assert_eq!(gate.offer("finish", Kind::Other, 1), Admit::Parked);
        // A small call that would fit still waits behind the parked one.
        gate.returned(5);
        assert_eq!(gate.offer("small", Kind::Call, 1), Admit::Parked);
        assert_eq!(gate.next_ready(), Some("call"));
        gate.started(5);
        assert_eq!(gate.next_ready(), Some("finish"));
        assert_eq!(gate.next_ready(), None, "the small call does not fit");
        gate.returned(10);
        assert_eq!(gate.next_ready(), Some("small"));
    }

    // covers: F-06
    #[test]
    fn the_reader_waits_only_for_other_messages_past_the_limit() {
        // A small flow limit does not make the reader wait early: other
        // messages have a bound of their own.
        let mut small = FlowGate::new(1);
        small.started(1);
        small.offer((), Kind::Other, 1000);
        assert!(!small.reader_should_wait());
        let mut gate = FlowGate::with_bounds(10, 10);
        gate.started(10);
        gate.offer((), Kind::Call, 10);
        assert!(!gate.reader_should_wait());
        gate.offer((), Kind::Other, 10);
        assert!(!gate.reader_should_wait());
        gate.offer((), Kind::Other, 1);
        assert!(gate.reader_should_wait());
        gate.returned(10);
        while gate.next_ready().is_some() {}
        assert!(!gate.reader_should_wait());
    }
}
