//! The client side in one call: [`connect`] dials an [`Endpoint`], starts
//! the connection and gives its typed bootstrap client; [`Connection`] is
//! a handle on a running connection whose methods fail with one error
//! type, [`Error`], which converts into `capnp::Error` (so `?` works in
//! functions returning `capnp::Result`).

use crate::conn::{Bootstrap, Close, ConnActor, ConnOptions, ConnStats, Stats, WatchWith};
use crate::endpoint::{Endpoint, IntoEndpoint};
use actix::{Addr, MailboxError};
use capnp::capability::FromClientHook;
use capnp_actix_proto::Error;
use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};

/// Connects to `endpoint` (`"host:port"` or `"unix:/path"`) with default
/// options and gives the connection and the peer's bootstrap capability
/// as a typed client `C`. Run it inside an actix system; the connection
/// runs on the current arbiter.
///
/// ```no_run
/// // `C` is any capnpc-generated client type (`calculator::Client`, say);
/// // this one is the untyped client.
/// async fn ask(address: &str) -> capnp::Result<()> {
///     let (conn, peer) = capnp_actix::connect::<capnp::capability::Client>(address).await?;
///     // ... calls on `peer` ...
///     conn.close().await;
///     Ok(())
/// }
/// ```
pub async fn connect<C: FromClientHook>(
    endpoint: impl IntoEndpoint,
) -> Result<(Connection, C), Error> {
    connect_with(endpoint, ConnOptions::new()).await
}

/// [`connect`] with these options (limits, a main interface of our own
/// for the peer to call, call deadlines).
///
/// ```no_run
/// # async fn f() -> Result<(), capnp_actix::Error> {
/// use capnp_actix::{connect_with, Capability, ConnOptions};
/// let options = ConnOptions::new().max_answers(100);
/// let (conn, peer) = connect_with::<capnp::capability::Client>("127.0.0.1:4000", options).await?;
/// # Ok(()) }
/// ```
pub async fn connect_with<C: FromClientHook>(
    endpoint: impl IntoEndpoint,
    options: ConnOptions,
) -> Result<(Connection, C), Error> {
    let conn = Connection::dial(&endpoint.into_endpoint()?, options).await?;
    let client = conn.bootstrap::<C>().await?;
    Ok((conn, client))
}

/// A handle on a running connection (its [`ConnActor`]'s address); cheap
/// to clone. Each method fails with a `disconnected` [`Error`] once the
/// connection has ended.
///
/// ```
/// use capnp_actix::{ConnActor, ConnOptions, Connection};
/// # actix::System::new().block_on(async {
/// let (client, _server) = ConnActor::pair(ConnOptions::new(), ConnOptions::new());
/// let conn = Connection::new(client);
/// let err = conn.bootstrap::<capnp::capability::Client>().await.unwrap()
///     .new_call::<capnp::any_pointer::Owned, capnp::any_pointer::Owned>(1, 0, None)
///     .send().promise.await.err().unwrap();
/// assert!(err.to_string().contains("no bootstrap interface"));
/// conn.close().await;
/// assert!(conn.ended().await.reason().contains("closed locally"));
/// # });
/// ```
#[derive(Clone)]
pub struct Connection {
    actor: Addr<ConnActor>,
    /// Why the connection ended, once it has.
    end: Shared<oneshot::Receiver<Error>>,
}

/// The error for a connection whose actor has stopped.
fn gone(_: MailboxError) -> Error {
    Error::disconnected("the connection has ended")
}

impl Connection {
    /// A handle on the connection `actor` runs.
    ///
    /// ```
    /// # actix::System::new().block_on(async {
    /// let (a, _b) = capnp_actix::ConnActor::pair(Default::default(), Default::default());
    /// let conn = capnp_actix::Connection::new(a);
    /// # });
    /// ```
    pub fn new(actor: Addr<ConnActor>) -> Connection {
        let (tx, rx) = oneshot::channel();
        actor.do_send(WatchWith(tx));
        Connection {
            actor,
            end: rx.shared(),
        }
    }

    /// Dials `endpoint` and starts a connection on it, on the current
    /// arbiter.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), capnp_actix::Error> {
    /// let endpoint = "unix:/tmp/rpc.sock".parse()?;
    /// let conn = capnp_actix::Connection::dial(&endpoint, Default::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn dial(endpoint: &Endpoint, options: ConnOptions) -> Result<Connection, Error> {
        let failed =
            |e: std::io::Error| Error::disconnected(format!("cannot connect to {endpoint}: {e}"));
        let actor = match endpoint {
            Endpoint::Tcp(address) => {
                let stream = tokio::net::TcpStream::connect(address.as_str())
                    .await
                    .map_err(failed)?;
                ConnActor::from_tcp(stream, options)
            }
            #[cfg(unix)]
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(failed)?;
                ConnActor::from_unix(stream, options)
            }
            #[cfg(not(unix))]
            Endpoint::Unix(_) => {
                return Err(Error::unimplemented(
                    "Unix-domain sockets need a Unix system",
                ))
            }
        };
        Ok(Connection::new(actor))
    }

    /// The peer's bootstrap capability, as a typed client. It is usable at
    /// once: calls on it are pipelined on the bootstrap question, and fail
    /// as it does.
    ///
    /// ```no_run
    /// # async fn f(conn: capnp_actix::Connection) -> capnp::Result<()> {
    /// let peer: capnp::capability::Client = conn.bootstrap().await?;
    /// # Ok(()) }
    /// ```
    pub async fn bootstrap<C: FromClientHook>(&self) -> Result<C, Error> {
        let cap = self.actor.send(Bootstrap).await.map_err(gone)??;
        Ok(cap.client())
    }

    /// Closes the connection: our pending calls fail `disconnected`, the
    /// peer's running calls are cancelled, and the transport closes once
    /// what is queued has been written. Closing an ended connection does
    /// nothing.
    ///
    /// ```no_run
    /// # async fn f(conn: capnp_actix::Connection) {
    /// conn.close().await;
    /// # }
    /// ```
    pub async fn close(&self) {
        let _ = self.actor.send(Close).await;
    }

    /// The connection's table sizes and counts.
    ///
    /// ```no_run
    /// # async fn f(conn: capnp_actix::Connection) -> Result<(), capnp_actix::Error> {
    /// println!("{} calls made", conn.stats().await?.calls_out);
    /// # Ok(()) }
    /// ```
    pub async fn stats(&self) -> Result<ConnStats, Error> {
        self.actor.send(Stats).await.map_err(gone)
    }

    /// Waits for the connection to end, and gives why.
    ///
    /// ```no_run
    /// # async fn f(conn: capnp_actix::Connection) {
    /// let why = conn.ended().await;
    /// log::info!("connection ended: {why}");
    /// # }
    /// ```
    pub async fn ended(&self) -> Error {
        self.end
            .clone()
            .await
            .unwrap_or_else(|_| Error::disconnected("the connection has ended"))
    }

    /// Whether the connection has ended.
    ///
    /// ```
    /// # actix::System::new().block_on(async {
    /// let (a, _b) = capnp_actix::ConnActor::pair(Default::default(), Default::default());
    /// let conn = capnp_actix::Connection::new(a);
    /// assert!(!conn.is_ended());
    /// conn.close().await;
    /// conn.ended().await;
    /// assert!(conn.is_ended());
    /// # });
    /// ```
    pub fn is_ended(&self) -> bool {
        self.end.peek().is_some()
    }

    /// The connection's actor, for messages of its own ([`crate::Call`],
    /// [`Stats`]).
    ///
    /// ```no_run
    /// # async fn f(conn: capnp_actix::Connection) {
    /// let stats = conn.actor().send(capnp_actix::Stats).await;
    /// # }
    /// ```
    pub fn actor(&self) -> &Addr<ConnActor> {
        &self.actor
    }
}
