//! The protocol core of capnp-actix: Cap'n Proto RPC without a runtime.
//!
//! This crate knows the wire protocol and the bookkeeping the protocol asks
//! for, and nothing about sockets, tasks or actors: the runtime crate
//! (`capnp-actix`, in `actors/`) drives it. Everything here is plain data
//! and functions, tested without an executor.
//!
//! # Layout
//! - [`frame`]: the two-party stream framing (segment table + segments),
//!   with the reader limits applied before anything is allocated.
//! - [`error`]: errors that mirror the wire `Exception` types.
//! - [`cap_descriptor`]: the owned form of a `CapDescriptor` and of a
//!   `PromisedAnswer` path, read from and written to messages.
//! - [`table`]: the four per-connection tables (questions, answers, exports,
//!   imports) with lowest-free id allocation and reference counts.
//! - [`embargo`]: the embargo rule (what a resolution requires, where a
//!   `Disembargo` is reflected), embargo ids and what waits on each.
//! - [`flow`]: the flow limit on inbound calls, as a gate every inbound
//!   message passes (park, refuse, or go now).
//! - [`stream`]: the caller's side of streaming calls: the window of
//!   bytes in flight ([`stream::FlowController`]) and the first failure.
//! - [`message`]: builders for every message the runtime sends.
//! - [`rpc_capnp`], [`rpc_twoparty_capnp`], [`stream_capnp`]: code generated
//!   from the project's copies of the RPC schemas in `schema/`.
#![warn(missing_docs)]

pub mod cap_descriptor;
pub mod connection;
pub mod embargo;
pub mod error;
pub mod flow;
pub mod frame;
pub mod message;
pub mod segments;
pub mod stream;
pub mod table;

/// Code generated from `schema/rpc.capnp` (protocol version 1.0).
#[allow(missing_docs, clippy::all, clippy::pedantic, unused)]
pub mod rpc_capnp {
    include!(concat!(env!("OUT_DIR"), "/rpc_capnp.rs"));
}

/// Code generated from `schema/rpc-twoparty.capnp`.
#[allow(missing_docs, clippy::all, clippy::pedantic, unused)]
pub mod rpc_twoparty_capnp {
    include!(concat!(env!("OUT_DIR"), "/rpc_twoparty_capnp.rs"));
}

/// Code generated from `schema/stream.capnp`.
#[allow(missing_docs, clippy::all, clippy::pedantic, unused)]
pub mod stream_capnp {
    include!(concat!(env!("OUT_DIR"), "/stream_capnp.rs"));
}

pub use cap_descriptor::{CapDescriptor, MessageTarget, PromisedAnswer};
pub use error::{Error, ErrorKind};
pub use frame::{FrameDecoder, FrameError, Limits};
