//! What a connection counts as it runs: calls and bytes each way, and
//! exceptions by kind. The connection actor owns the counts (plain
//! integers: only it touches them); [`crate::Stats`] reads them, and a
//! [`crate::Server`] sums them over its connections.

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
