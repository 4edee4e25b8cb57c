//! Cap'n Proto RPC on the Actix actor framework.
//!
//! - **Serve**: a [`Server`] listens on TCP and Unix endpoints and runs
//!   each connection on one of its worker arbiters; its bootstrap is one
//!   shared main interface or a capability made per connection. It stops
//!   gracefully, and tells of its connections ([`ServerSnapshot`]).
//! - **Call**: [`connect`] gives a connection and its typed bootstrap
//!   client; [`Reconnect`] keeps one capability valid across reconnects;
//!   [`within`], [`PendingCall::timeout`] and [`ConnOptions::call_timeout`]
//!   bound how long calls take.
//! - **Host objects**: [`new_client`] and [`Capability::from_server`] run
//!   a capnpc-generated server as an actor; [`Capability`] is `Send +
//!   Sync` and converts to and from generated clients.
//! - **Underneath**: a [`ConnActor`] runs one connection over any byte
//!   stream, with its [`ConnOptions`] and limits.
//!
//! ```
//! use capnp_actix::{Capability, Server};
//! # actix::System::new().block_on(async {
//! // A server that serves nothing, and a client of it.
//! let server = Server::builder().listen("127.0.0.1:0").unwrap().workers(1).start().await.unwrap();
//! let (conn, peer) = capnp_actix::connect::<capnp::capability::Client>(&server.endpoints()[0])
//!     .await
//!     .unwrap();
//! let err = Capability::from_client(&peer).new_call(0x1234, 0).send().await.err().unwrap();
//! assert!(err.reason().contains("no bootstrap interface"));
//! conn.close().await;
//! server.stop(std::time::Duration::from_secs(1)).await;
//! # });
//! ```
//!
//! docs/guide.md in the repository walks through a service. Inside, each
//! outbound question, each inbound call (answer) and each hosted object
//! runs as an actor of its own; they are not part of the API (nothing can
//! be sent to them from outside), but [`live_actors`] counts them.
//! ARCHITECTURE.md has the code map.
#![warn(missing_docs)]

mod answer;
mod call;
mod capability;
mod client;
mod conn;
mod deadline;
mod delivery;
mod endpoint;
mod export;
mod few;
mod hooks;
mod payload;
mod placeholder;
mod question;
mod reconnect;
mod request;
mod server;
mod server_set;
mod stats;
mod stream;
mod tail;

pub use call::{PendingCall, Pipeline, Response};
pub use capability::Capability;
pub use capnp_actix_proto::frame::Limits;
pub use capnp_actix_proto::stream::{Adaptive, FlowControl};
pub use capnp_actix_proto::{Error, ErrorKind};
pub use client::{connect, connect_with, Connection};
pub use conn::{
    Bootstrap, Call, Cancellation, Close, ConnActor, ConnOptions, ConnStats, ErrorCounts, Stats,
    Watch, DEFAULT_FLOW_LIMIT, DEFAULT_MAX_ANSWERS, DEFAULT_MAX_IMPORTS, DEFAULT_MAX_PIPELINED,
    DEFAULT_SEND_BUFFER_SIZE,
};
pub use deadline::within;
pub use endpoint::{Endpoint, IntoEndpoint, PeerAddr};
pub use export::{allow_cancellation, new_client};
pub use hooks::{stream_state, SendForPipeline};
pub use reconnect::{Reconnect, ReconnectOptions, ReconnectStatus, Reconnecting};
pub use request::Request;
pub use server::{
    ConnInfo, ConnSnapshot, Server, ServerBuilder, ServerHandle, ServerSnapshot, Snapshot, Stop,
    DEFAULT_MAX_CONNECTIONS,
};
pub use server_set::ServerSet;
pub use stats::{live_actors, LiveActors};
pub use stream::StreamState;
pub use tail::TailCall;
