//! What a connection counts as it runs: calls and bytes each way, and
//! exceptions by kind. The connection actor owns the counts (plain
//! integers: only it touches them); [`crate::Stats`] reads them, and a
//! [`crate::Server`] sums them over its connections.

use super::ConnActor;
use actix::{Context, Handler, Message};
use capnp_actix_proto::ErrorKind;
use std::ops::AddAssign;

/// Exceptions counted by kind.
///
/// ```
/// use capnp_actix::{ErrorCounts, ErrorKind};
/// let mut counts = ErrorCounts::default();
/// counts.add(ErrorKind::Overloaded);
/// assert_eq!((counts.overloaded, counts.total()), (1, 1));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// `failed`: something went wrong, and retrying will not help.
    pub failed: u64,
    /// `overloaded`: a limit was hit; retrying later may help.
    pub overloaded: u64,
    /// `disconnected`: the connection was lost.
    pub disconnected: u64,
    /// `unimplemented`: the method or message is not implemented.
    pub unimplemented: u64,
}

impl ErrorCounts {
    /// Counts one exception of `kind`.
    ///
    /// ```
    /// let mut counts = capnp_actix::ErrorCounts::default();
    /// counts.add(capnp_actix::ErrorKind::Failed);
    /// assert_eq!(counts.failed, 1);
    /// ```
    pub fn add(&mut self, kind: ErrorKind) {
        match kind {
            ErrorKind::Failed => self.failed += 1,
            ErrorKind::Overloaded => self.overloaded += 1,
            ErrorKind::Disconnected => self.disconnected += 1,
            ErrorKind::Unimplemented => self.unimplemented += 1,
        }
    }

    /// All of them.
    ///
    /// ```
    /// assert_eq!(capnp_actix::ErrorCounts::default().total(), 0);
    /// ```
    pub fn total(&self) -> u64 {
        self.failed + self.overloaded + self.disconnected + self.unimplemented
    }
}

impl AddAssign for ErrorCounts {
    fn add_assign(&mut self, other: ErrorCounts) {
        self.failed += other.failed;
        self.overloaded += other.overloaded;
        self.disconnected += other.disconnected;
        self.unimplemented += other.unimplemented;
    }
}

/// A connection's running counts (see [`crate::ConnStats`] for what each
/// means).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) calls_in: u64,
    pub(crate) calls_out: u64,
    pub(crate) bytes_out: u64,
    pub(crate) exceptions_sent: ErrorCounts,
    pub(crate) exceptions_received: ErrorCounts,
}

/// The sizes of a connection's tables and what it counted so far.
///
/// ```no_run
/// # async fn f(conn: actix::Addr<capnp_actix::ConnActor>) {
/// let stats = conn.send(capnp_actix::Stats).await.unwrap();
/// assert_eq!(stats.questions, 0);
/// # }
/// ```
#[derive(Message)]
#[rtype(result = "ConnStats")]
pub struct Stats;

/// Table sizes and counts of one connection.
///
/// The table sizes (`questions`, `answers`, `exports`, `imports`) and
/// `queued_bytes`, `inbound_bytes` are gauges: what is open now. The rest
/// count from the connection's start. [`ConnStats::add`] sums them, as a
/// [`crate::Server`] does over its connections.
///
/// ```
/// let mut total = capnp_actix::ConnStats::default();
/// let one = capnp_actix::ConnStats { calls_in: 2, ..Default::default() };
/// total.add(&one);
/// total.add(&one);
/// assert_eq!(total.calls_in, 4);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, actix::MessageResponse)]
pub struct ConnStats {
    /// Our questions whose ids are in use.
    pub questions: usize,
    /// The peer's questions whose ids are in use.
    pub answers: usize,
    /// Our exports.
    pub exports: usize,
    /// The peer's exports we hold.
    pub imports: usize,
    /// `Resolve` messages sent so far.
    pub resolves_sent: u64,
    /// `Resolve` messages received so far.
    pub resolves_received: u64,
    /// Embargoes started so far (`Disembargo{senderLoopback}` sent).
    pub embargoes_started: u64,
    /// Bytes waiting for the transport.
    pub queued_bytes: usize,
    /// Bytes of params of the peer's calls that have not returned.
    pub inbound_bytes: usize,
    /// Calls the peer made (`Call` messages received, refused ones
    /// included; bootstraps are not calls).
    pub calls_in: u64,
    /// Calls we made to the peer (`Call` messages sent).
    pub calls_out: u64,
    /// Bytes read off the transport.
    pub bytes_in: u64,
    /// Bytes handed to the transport (framed messages).
    pub bytes_out: u64,
    /// Exceptions we returned to the peer's calls and bootstraps, by kind
    /// (cancelled calls are not exceptions).
    pub exceptions_sent: ErrorCounts,
    /// Exceptions the peer returned to our calls, by kind.
    pub exceptions_received: ErrorCounts,
}

impl ConnStats {
    /// The counts alone, with every gauge zero: what an ended connection
    /// adds to a server's totals.
    ///
    /// ```
    /// let stats = capnp_actix::ConnStats { answers: 2, calls_in: 5, ..Default::default() };
    /// assert_eq!((stats.counts().answers, stats.counts().calls_in), (0, 5));
    /// ```
    pub fn counts(&self) -> ConnStats {
        ConnStats {
            questions: 0,
            answers: 0,
            exports: 0,
            imports: 0,
            queued_bytes: 0,
            inbound_bytes: 0,
            ..*self
        }
    }

    /// Adds `other` to these: gauges and counts alike.
    ///
    /// ```
    /// let mut a = capnp_actix::ConnStats { answers: 1, ..Default::default() };
    /// a.add(&capnp_actix::ConnStats { answers: 2, ..Default::default() });
    /// assert_eq!(a.answers, 3);
    /// ```
    pub fn add(&mut self, other: &ConnStats) {
        self.questions += other.questions;
        self.answers += other.answers;
        self.exports += other.exports;
        self.imports += other.imports;
        self.resolves_sent += other.resolves_sent;
        self.resolves_received += other.resolves_received;
        self.embargoes_started += other.embargoes_started;
        self.queued_bytes += other.queued_bytes;
        self.inbound_bytes += other.inbound_bytes;
        self.calls_in += other.calls_in;
        self.calls_out += other.calls_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.exceptions_sent += other.exceptions_sent;
        self.exceptions_received += other.exceptions_received;
    }
}

impl Handler<Stats> for ConnActor {
    type Result = ConnStats;

    fn handle(&mut self, _msg: Stats, _ctx: &mut Context<Self>) -> ConnStats {
        self.stats()
    }
}
