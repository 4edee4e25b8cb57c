//! Cap'n Proto RPC on the Actix actor framework.
//!
//! A [`ConnActor`] runs one connection. Ask it for the peer's bootstrap
//! capability with the [`Bootstrap`] message, call capabilities through
//! capnpc-generated clients (convert with [`Capability::client`]) or
//! untyped with [`Capability::new_call`], and host your own objects with
//! [`new_client`] / [`Capability::from_server`].
//!
//! ```
//! use capnp_actix::{Bootstrap, Capability, ConnActor, ConnOptions};
//! # actix::System::new().block_on(async {
//! // Two connected vats in one process; the server side serves nothing.
//! let (client, _server) = ConnActor::pair(ConnOptions::new(), ConnOptions::new());
//! let cap = client.send(Bootstrap).await.unwrap().unwrap();
//! let err = cap.new_call(0x1234, 0).send().await.err().unwrap();
//! assert!(err.reason().contains("no bootstrap interface"));
//! # });
//! ```
//!
//! Inside, each outbound question, each inbound call (answer) and each
//! hosted object runs as an actor of its own; they are not part of the
//! API (nothing can be sent to them from outside), but
//! [`live_actors`] counts them. ARCHITECTURE.md has the code map.
#![warn(missing_docs)]

mod answer;
mod call;
mod capability;
mod client;
mod conn;
mod endpoint;
mod export;
mod hooks;
mod payload;
mod placeholder;
mod question;
mod reconnect;
mod request;
mod server;
mod server_set;
mod stats;

pub use call::{within, PendingCall, Pipeline, Response};
pub use capability::Capability;
pub use capnp_actix_proto::frame::Limits;
pub use capnp_actix_proto::{Error, ErrorKind};
pub use client::{connect, connect_with, Connection};
pub use conn::{
    Bootstrap, Call, Close, ConnActor, ConnOptions, ConnStats, ErrorCounts, Stats, Watch,
    DEFAULT_FLOW_LIMIT, DEFAULT_MAX_ANSWERS, DEFAULT_MAX_IMPORTS, DEFAULT_MAX_PIPELINED,
    DEFAULT_SEND_BUFFER_SIZE,
};
pub use endpoint::{Endpoint, IntoEndpoint, PeerAddr};
pub use export::new_client;
pub use reconnect::{Reconnect, ReconnectOptions, ReconnectStatus, Reconnecting};
pub use request::Request;
pub use server::{
    ConnInfo, ConnSnapshot, Server, ServerBuilder, ServerHandle, ServerSnapshot, Snapshot, Stop,
    DEFAULT_MAX_CONNECTIONS,
};
pub use server_set::ServerSet;
pub use stats::{live_actors, LiveActors};
