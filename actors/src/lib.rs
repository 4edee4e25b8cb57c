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
//! # Layout
//! - [`conn`](ConnActor): the connection actor (`conn/`): transport,
//!   tables, inbound dispatch, outbound calls and returns.
//! - [`QuestionActor`], [`AnswerActor`], [`ExportActor`]: one per outbound
//!   question, per inbound call, per hosted object.
//! - `supervisor`: the teardown of a connection that ended.
//! - `capability`, `call`: the caller's side ([`Capability`],
//!   [`Request`], [`PendingCall`], [`Response`], [`Pipeline`]).
//! - `payload`: params and results as they move between actors.
//! - `hooks`: the bridge to capnpc-generated clients and servers.
//! - `stats`: live-actor counts.
#![warn(missing_docs)]

mod answer;
mod call;
mod capability;
mod conn;
mod export;
mod hooks;
mod payload;
mod promise;
mod question;
mod stats;
mod supervisor;

pub use answer::AnswerActor;
pub use call::{PendingCall, Pipeline, Response};
pub use capability::{Capability, Request};
pub use capnp_actix_proto::{Error, ErrorKind};
pub use conn::{
    Bootstrap, Call, Close, ConnActor, ConnOptions, ConnStats, Stats, Watch, DEFAULT_FLOW_LIMIT,
    DEFAULT_MAX_ANSWERS, DEFAULT_MAX_IMPORTS, DEFAULT_MAX_PIPELINED, DEFAULT_SEND_BUFFER_SIZE,
};
pub use export::{new_client, ExportActor};
pub use question::QuestionActor;
pub use stats::{live_actors, LiveActors};
