//! What a [`crate::Server`] tells of itself: each live connection (who,
//! where, since when, its counts) and the counts summed over all the
//! connections it served.

use crate::conn::ConnStats;
use crate::endpoint::PeerAddr;
use std::time::SystemTime;

/// Who a server's connection is with, as its bootstrap factory and the
/// snapshot see it.
///
/// ```
/// use capnp_actix::{ConnInfo, PeerAddr};
/// let info = ConnInfo {
///     id: 7,
///     peer: PeerAddr::Unix(None),
///     worker: 0,
///     started: std::time::SystemTime::now(),
/// };
/// assert_eq!(info.id, 7);
/// ```
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The connection's id: the `conn N` of its log lines.
    pub id: u64,
    /// The peer's address.
    pub peer: PeerAddr,
    /// The worker arbiter it runs on (0-based).
    pub worker: usize,
    /// When it was accepted.
    pub started: SystemTime,
}

/// One live connection: who, and its table sizes and counts.
///
/// ```
/// use capnp_actix::{ConnInfo, ConnSnapshot, ConnStats, PeerAddr};
/// let conn = ConnSnapshot {
///     info: ConnInfo { id: 1, peer: PeerAddr::Unix(None), worker: 0, started: std::time::SystemTime::now() },
///     stats: ConnStats::default(),
/// };
/// assert_eq!(conn.stats.calls_in, 0);
/// ```
#[derive(Clone, Debug)]
pub struct ConnSnapshot {
    /// Who it is with.
    pub info: ConnInfo,
    /// Its tables and counts (all zero if it has not started on its
    /// worker yet).
    pub stats: ConnStats,
}

/// A server's live connections and its counts, at one moment.
///
/// ```no_run
/// # async fn f(server: capnp_actix::ServerHandle) -> Result<(), capnp_actix::Error> {
/// let snapshot = server.snapshot().await?;
/// for conn in &snapshot.connections {
///     println!("conn {} from {}: {} calls", conn.info.id, conn.info.peer, conn.stats.calls_in);
/// }
/// println!("{} exceptions sent", snapshot.totals.exceptions_sent.total());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ServerSnapshot {
    /// The live connections, oldest first.
    pub connections: Vec<ConnSnapshot>,
    /// Summed over every connection the server ran, live or ended: the
    /// counts (calls, bytes, exceptions) of all of them, and the gauges
    /// (open questions, answers, exports, imports, queued bytes) of the
    /// live ones.
    pub totals: ConnStats,
    /// Connections accepted so far.
    pub accepted: u64,
    /// Connections refused at the connection limit.
    pub refused: u64,
    /// Connections that ended.
    pub ended: u64,
    /// Worker arbiters.
    pub workers: usize,
    /// Whether a graceful stop is under way.
    pub stopping: bool,
}
