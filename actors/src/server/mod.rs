//! [`Server`]: listens on TCP and Unix endpoints and runs every accepted
//! connection, with all its actors, on one of N worker arbiters; knows
//! each live connection; stops gracefully.
//!
//! - `mod.rs` (this file): the builder, the actor, its messages, and
//!   graceful shutdown.
//! - `listen.rs`: binding, the accept loops, moving streams to workers.
//! - `snapshot.rs`: what the server tells of its connections.
//!
//! The server actor runs on the arbiter that starts it; it accepts there
//! and hands each connection to the worker with the fewest connections.
//! A connection's bootstrap capability is either the main interface (one
//! object, shared by every connection on every worker: calls from other
//! workers reach it through its actor's mailbox) or made for each
//! connection by a factory, on the connection's worker.

mod listen;
mod snapshot;

pub use snapshot::{ConnInfo, ConnSnapshot, ServerSnapshot};

use crate::capability::Capability;
use crate::conn::{
    next_conn_id, Close, ConnActor, ConnOptions, ConnStats, Drain, Ended, Stats, Supervision,
};
use crate::endpoint::{Endpoint, IntoEndpoint, PeerAddr};
use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, Arbiter, AsyncContext, Context, Handler, Message,
    ResponseActFuture, WrapFuture,
};
use capnp_actix_proto::{Error, ErrorKind};
use futures::channel::oneshot;
use futures::future::AbortHandle;
use listen::{Listener, Stream};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The default of [`ServerBuilder::max_connections`].
///
/// ```
/// assert_eq!(capnp_actix::DEFAULT_MAX_CONNECTIONS, 10_000);
/// ```
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Makes a connection's bootstrap capability from who connected.
type Factory = Arc<dyn Fn(&ConnInfo) -> Capability + Send + Sync>;

/// What the server's connections bootstrap to.
#[derive(Clone)]
enum Bootstrap {
    /// Nothing: `Bootstrap` gets an exception.
    None,
    /// One capability for all.
    Main(Capability),
    /// A capability per connection.
    Factory(Factory),
}

/// How to build a [`Server`]: where it listens, what it serves, on how
/// many workers, with what limits. [`start`](Self::start) binds and runs
/// it.
///
/// ```no_run
/// use capnp_actix::{Capability, Server};
/// use std::time::Duration;
///
/// #[actix::main]
/// async fn main() -> Result<(), capnp_actix::Error> {
///     // Your object, as in `Capability::from_server::<calculator::Client, _>(CalculatorImpl)`.
///     let calculator = Capability::null();
///     let server = Server::builder()
///         .listen("127.0.0.1:4000")?
///         .listen("unix:/tmp/calculator.sock")?
///         .main_interface(calculator)
///         .workers(4)
///         .shutdown_on_signals(Duration::from_secs(5))
///         .start()
///         .await?;
///     server.stopped().await; // after SIGINT or SIGTERM, once drained
///     Ok(())
/// }
/// ```
pub struct ServerBuilder {
    endpoints: Vec<Endpoint>,
    workers: usize,
    max_connections: usize,
    options: ConnOptions,
    bootstrap: Bootstrap,
    signals: Option<Duration>,
}

impl ServerBuilder {
    /// Listens on `endpoint` too (`"host:port"`, port 0 for any free one,
    /// or `"unix:/path"`); fails if it does not parse.
    ///
    /// ```
    /// let builder = capnp_actix::Server::builder().listen("127.0.0.1:0").unwrap();
    /// assert!(capnp_actix::Server::builder().listen("nowhere").is_err());
    /// ```
    pub fn listen(mut self, endpoint: impl IntoEndpoint) -> Result<Self, Error> {
        self.endpoints.push(endpoint.into_endpoint()?);
        Ok(self)
    }

    /// Serves `cap` to every connection's `Bootstrap`, on every worker.
    /// The server drops it once, when the last connection has ended after
    /// a stop.
    ///
    /// ```
    /// let builder = capnp_actix::Server::builder().main_interface(capnp_actix::Capability::null());
    /// ```
    pub fn main_interface(mut self, cap: Capability) -> Self {
        self.bootstrap = Bootstrap::Main(cap);
        self
    }

    /// Makes each connection's bootstrap capability with `factory`, on the
    /// connection's worker, when it starts; it is given who connected
    /// ([`ConnInfo`]: the connection id, the peer's address). Objects made
    /// here live on the worker, and so does their work.
    ///
    /// ```
    /// use capnp_actix::{Capability, Server};
    /// let builder = Server::builder().bootstrap_factory(|conn| {
    ///     log::info!("conn {}: from {}", conn.id, conn.peer);
    ///     Capability::null()
    /// });
    /// ```
    pub fn bootstrap_factory(
        mut self,
        factory: impl Fn(&ConnInfo) -> Capability + Send + Sync + 'static,
    ) -> Self {
        self.bootstrap = Bootstrap::Factory(Arc::new(factory));
        self
    }

    /// How many worker arbiters (threads) run the connections. Default:
    /// the number of cores. (At least one.)
    ///
    /// ```
    /// let builder = capnp_actix::Server::builder().workers(2);
    /// ```
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// How many connections may be open at once. One more is refused: the
    /// peer gets an `Abort` (`overloaded`, naming this limit) and the
    /// stream closes, while the server goes on accepting. Default:
    /// [`DEFAULT_MAX_CONNECTIONS`].
    ///
    /// ```
    /// let builder = capnp_actix::Server::builder().max_connections(100);
    /// ```
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// The options of every connection (limits, flow control); the
    /// bootstrap comes from [`main_interface`](Self::main_interface) or
    /// [`bootstrap_factory`](Self::bootstrap_factory) instead.
    ///
    /// ```
    /// use capnp_actix::{ConnOptions, Server};
    /// let builder = Server::builder().conn_options(ConnOptions::new().max_answers(1000));
    /// ```
    pub fn conn_options(mut self, options: ConnOptions) -> Self {
        self.options = options;
        self
    }

    /// Stops gracefully, with this grace period, on SIGINT or SIGTERM (a
    /// second signal closes every connection at once). Unix only; without
    /// it, signals are left to the program. (Once watched, the two signals
    /// no longer end the process by themselves, even after the server has
    /// stopped: the program ends when its `main` returns.)
    ///
    /// ```
    /// let builder = capnp_actix::Server::builder()
    ///     .shutdown_on_signals(std::time::Duration::from_secs(5));
    /// ```
    pub fn shutdown_on_signals(mut self, grace: Duration) -> Self {
        self.signals = Some(grace);
        self
    }

    /// Binds every endpoint, starts the workers and the server actor on
    /// the current arbiter, and begins accepting. Fails if an endpoint
    /// cannot be bound (nothing is left running then) or none was given.
    ///
    /// ```
    /// # actix::System::new().block_on(async {
    /// let server = capnp_actix::Server::builder()
    ///     .listen("127.0.0.1:0").unwrap()
    ///     .workers(1)
    ///     .start().await.unwrap();
    /// println!("listening on {}", server.endpoints()[0]);
    /// server.stop(std::time::Duration::ZERO).await;
    /// # });
    /// ```
    pub async fn start(self) -> Result<ServerHandle, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::failed("the server has no endpoint to listen on"));
        }
        let mut listeners = Vec::new();
        for endpoint in &self.endpoints {
            listeners.push(listen::bind(endpoint).await?);
        }
        let endpoints: Vec<Endpoint> = listeners.iter().map(Listener::local).collect();
        let workers = (0..self.workers)
            .map(|_| {
                Arbiter::try_new()
                    .map(|arbiter| Worker { arbiter, live: 0 })
                    .map_err(|e| Error::failed(format!("cannot start a worker: {e}")))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let server = Server {
            endpoints: endpoints.clone(),
            workers,
            conns: BTreeMap::new(),
            accepting: Vec::new(),
            bootstrap: self.bootstrap,
            options: self.options,
            max_connections: self.max_connections,
            ended_totals: ConnStats::default(),
            accepted: 0,
            refused: 0,
            ended: 0,
            stopping: None,
            stopped: Some(stopped_tx),
        }
        .start();
        let accepting = listeners
            .into_iter()
            .map(|listener| listener.accept_into(server.clone()))
            .collect();
        server.do_send(Accepting(accepting));
        for endpoint in &endpoints {
            log::info!("server: listening on {endpoint}");
        }
        if let Some(grace) = self.signals {
            stop_on_signals(server.clone(), grace);
        }
        Ok(ServerHandle {
            server,
            endpoints,
            stopped: futures::FutureExt::shared(stopped_rx),
        })
    }
}

/// Sends `Stop` on SIGINT or SIGTERM: with `grace` the first time, at once
/// the second.
fn stop_on_signals(server: Addr<Server>, grace: Duration) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // (Watched from now on, before the caller hears the server runs.)
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            log::error!("server: cannot watch for SIGINT and SIGTERM");
            return;
        };
        actix_rt::spawn(async move {
            let mut grace = grace;
            loop {
                let name = tokio::select! {
                    _ = interrupt.recv() => "SIGINT",
                    _ = terminate.recv() => "SIGTERM",
                };
                if !server.connected() {
                    return; // stopped already
                }
                log::info!("server: {name}: stopping, with a grace period of {grace:?}");
                server.do_send(Stop { grace });
                grace = Duration::ZERO;
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (server, grace);
        log::warn!("server: shutdown on signals needs a Unix system");
    }
}

/// A running server: its endpoints, and how to watch and stop it. Cheap to
/// clone; dropping it leaves the server running.
///
/// ```
/// # actix::System::new().block_on(async {
/// let server = capnp_actix::Server::builder()
///     .listen("127.0.0.1:0").unwrap()
///     .start().await.unwrap();
/// let snapshot = server.snapshot().await.unwrap();
/// assert_eq!(snapshot.connections.len(), 0);
/// server.stop(std::time::Duration::from_secs(1)).await;
/// # });
/// ```
#[derive(Clone)]
pub struct ServerHandle {
    server: Addr<Server>,
    endpoints: Vec<Endpoint>,
    stopped: futures::future::Shared<oneshot::Receiver<()>>,
}

impl ServerHandle {
    /// Where the server listens (with the ports the system chose for
    /// port 0).
    ///
    /// ```no_run
    /// # fn f(server: capnp_actix::ServerHandle) {
    /// let first = server.endpoints()[0].to_string();
    /// # }
    /// ```
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Stops gracefully, and resolves once every connection has ended:
    /// 1. no more connections are accepted (Unix socket files are removed);
    /// 2. calls already running go on, for up to `grace`; calls that come
    ///    meanwhile fail `disconnected` ("the server is shutting down"),
    ///    and a connection with no call running closes;
    /// 3. after `grace`, every connection still open is closed: the peers'
    ///    pending calls fail `disconnected`, running methods are cancelled;
    /// 4. the main interface is dropped, once, and the workers stop.
    ///
    /// Stopping a stopped server resolves at once.
    ///
    /// ```no_run
    /// # async fn f(server: capnp_actix::ServerHandle) {
    /// server.stop(std::time::Duration::from_secs(10)).await;
    /// # }
    /// ```
    pub async fn stop(&self, grace: Duration) {
        let _ = self.server.send(Stop { grace }).await;
        self.stopped().await;
    }

    /// Resolves once the server has stopped (after [`stop`](Self::stop),
    /// or a signal when [`ServerBuilder::shutdown_on_signals`] is on).
    ///
    /// ```no_run
    /// # async fn f(server: capnp_actix::ServerHandle) {
    /// server.stopped().await;
    /// # }
    /// ```
    pub async fn stopped(&self) {
        let _ = self.stopped.clone().await;
    }

    /// The live connections and the server's counts.
    ///
    /// ```no_run
    /// # async fn f(server: capnp_actix::ServerHandle) -> Result<(), capnp_actix::Error> {
    /// let snapshot = server.snapshot().await?;
    /// println!("{} open, {} calls in", snapshot.connections.len(), snapshot.totals.calls_in);
    /// # Ok(()) }
    /// ```
    pub async fn snapshot(&self) -> Result<ServerSnapshot, Error> {
        self.server
            .send(Snapshot)
            .await
            .map_err(|_| Error::disconnected("the server has stopped"))
    }

    /// The server's actor, for its messages ([`Snapshot`], [`Stop`]).
    ///
    /// ```no_run
    /// # fn f(server: capnp_actix::ServerHandle) {
    /// server.actor().do_send(capnp_actix::Stop { grace: std::time::Duration::ZERO });
    /// # }
    /// ```
    pub fn actor(&self) -> &Addr<Server> {
        &self.server
    }
}

/// `Instant::now() + wait`, or a time too far off to come if that is
/// beyond what an `Instant` holds.
pub(crate) fn after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// A worker arbiter and how many connections run on it.
struct Worker {
    arbiter: Arbiter,
    live: usize,
}

/// A live connection, as the server knows it.
struct Live {
    info: ConnInfo,
    /// Its actor, once started on its worker.
    actor: Option<Addr<ConnActor>>,
}

/// A graceful stop under way.
struct Stopping {
    /// When connections still open are closed.
    deadline: Instant,
}

/// The server actor: it accepts, hands each connection to a worker
/// arbiter, knows the live ones, and stops gracefully. Build one with
/// [`Server::builder`]; talk to it through its [`ServerHandle`] (or send
/// [`Snapshot`] and [`Stop`] to its address).
///
/// ```
/// # actix::System::new().block_on(async {
/// let server = capnp_actix::Server::builder()
///     .listen("127.0.0.1:0").unwrap()
///     .workers(1)
///     .start().await.unwrap();
/// let addr: &actix::Addr<capnp_actix::Server> = server.actor();
/// let snapshot = addr.send(capnp_actix::Snapshot).await.unwrap();
/// assert_eq!((snapshot.workers, snapshot.accepted), (1, 0));
/// server.stop(std::time::Duration::ZERO).await;
/// # });
/// ```
pub struct Server {
    endpoints: Vec<Endpoint>,
    workers: Vec<Worker>,
    conns: BTreeMap<u64, Live>,
    accepting: Vec<AbortHandle>,
    bootstrap: Bootstrap,
    options: ConnOptions,
    max_connections: usize,
    /// The counts of connections that ended.
    ended_totals: ConnStats,
    accepted: u64,
    refused: u64,
    ended: u64,
    stopping: Option<Stopping>,
    /// Told when the server has stopped.
    stopped: Option<oneshot::Sender<()>>,
}

impl Server {
    /// A builder with the defaults: no endpoint yet, no bootstrap
    /// capability, a worker per core, [`DEFAULT_MAX_CONNECTIONS`], default
    /// connection options, no signal handling.
    ///
    /// ```
    /// let builder = capnp_actix::Server::builder();
    /// ```
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            endpoints: Vec::new(),
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            options: ConnOptions::new(),
            bootstrap: Bootstrap::None,
            signals: None,
        }
    }

    /// Runs an accepted connection on the least busy worker, or refuses it.
    fn accept(&mut self, stream: Stream, peer: PeerAddr, ctx: &mut Context<Self>) {
        if self.stopping.is_some() {
            return; // dropped: closed
        }
        if self.conns.len() >= self.max_connections {
            self.refused += 1;
            log::warn!(
                "server: refusing a connection from {peer}: {} connections open (max_connections)",
                self.conns.len()
            );
            stream.refuse(Error::overloaded(format!(
                "the server is at its limit of {} connections (max_connections)",
                self.max_connections
            )));
            return;
        }
        let id = next_conn_id();
        let Some((worker, _)) = self.workers.iter().enumerate().min_by_key(|(_, w)| w.live) else {
            return;
        };
        self.workers[worker].live += 1;
        self.accepted += 1;
        let info = ConnInfo {
            id,
            peer,
            worker,
            started: SystemTime::now(),
        };
        log::info!("conn {id}: accepted from {} on worker {worker}", info.peer);
        let bootstrap = self.bootstrap.clone();
        let options = self.options.clone();
        let server = ctx.address();
        let conn_info = info.clone();
        self.conns.insert(id, Live { info, actor: None });
        let failed_to_start = move |server: &Addr<Server>, why: String| {
            server.do_send(Ended {
                id,
                reason: Error::failed(format!("the connection could not start: {why}")),
                stats: ConnStats::default(),
            })
        };
        let on_worker = server.clone();
        let spawned = self.workers[worker].arbiter.spawn_fn(move || {
            let server = on_worker;
            // A factory that panics refuses this connection only (the
            // worker lives on).
            let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match bootstrap {
                Bootstrap::None => None,
                Bootstrap::Main(cap) => Some(cap),
                Bootstrap::Factory(factory) => Some(factory(&conn_info)),
            }));
            let options = match made {
                Ok(Some(cap)) => options.main_interface(cap),
                Ok(None) => options,
                Err(_) => {
                    log::error!("conn {id}: the bootstrap factory panicked");
                    return failed_to_start(&server, "the bootstrap factory panicked".into());
                }
            };
            let supervision = Supervision {
                id,
                ended: server.clone().recipient(),
            };
            match stream.start(options, supervision) {
                Ok(actor) => server.do_send(Started { id, actor }),
                Err(e) => failed_to_start(&server, e.to_string()),
            }
        });
        if !spawned {
            failed_to_start(&server, format!("worker {worker} has stopped"));
        }
    }

    /// Begins a graceful stop, or brings its deadline nearer.
    fn stop(&mut self, grace: Duration, ctx: &mut Context<Self>) {
        let deadline = after(grace);
        if let Some(stopping) = &self.stopping {
            if stopping.deadline <= deadline {
                return;
            }
        } else {
            log::info!(
                "server: stopping: {} connections open, grace period {grace:?}",
                self.conns.len()
            );
            for accepting in self.accepting.drain(..) {
                accepting.abort();
            }
            for endpoint in &self.endpoints {
                listen::unlink(endpoint);
            }
            for live in self.conns.values() {
                if let Some(actor) = &live.actor {
                    actor.do_send(Drain);
                }
            }
        }
        self.stopping = Some(Stopping { deadline });
        ctx.run_later(grace, |server, ctx| server.close_all(ctx));
        self.stop_if_done(ctx);
    }

    /// The grace period is over: every connection still open closes.
    fn close_all(&mut self, _ctx: &mut Context<Self>) {
        let due = matches!(&self.stopping, Some(s) if s.deadline <= Instant::now());
        if !due {
            return; // a later deadline's timer (an earlier one closes)
        }
        if !self.conns.is_empty() {
            log::info!(
                "server: grace period over: closing {} connections",
                self.conns.len()
            );
        }
        for live in self.conns.values() {
            if let Some(actor) = &live.actor {
                actor.do_send(Close);
            }
        }
    }

    /// Once stopping and every connection has ended: drops the main
    /// interface, stops the workers, and says so.
    fn stop_if_done(&mut self, ctx: &mut Context<Self>) {
        if self.stopping.is_none() || !self.conns.is_empty() {
            return;
        }
        self.bootstrap = Bootstrap::None;
        for worker in &self.workers {
            worker.arbiter.stop();
        }
        log::info!(
            "server: stopped: {} connections served, {} refused",
            self.accepted,
            self.refused
        );
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.send(());
        }
        ctx.stop();
    }
}

impl Actor for Server {
    type Context = Context<Self>;
}

/// The accept loops, started after the actor.
#[derive(Message)]
#[rtype(result = "()")]
struct Accepting(Vec<AbortHandle>);

impl Handler<Accepting> for Server {
    type Result = ();

    fn handle(&mut self, msg: Accepting, _ctx: &mut Context<Self>) {
        if self.stopping.is_some() {
            msg.0.iter().for_each(AbortHandle::abort);
        } else {
            self.accepting = msg.0;
        }
    }
}

/// A listener accepted a connection.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Accepted {
    stream: Stream,
    peer: PeerAddr,
}

impl Handler<Accepted> for Server {
    type Result = ();

    fn handle(&mut self, msg: Accepted, ctx: &mut Context<Self>) {
        self.accept(msg.stream, msg.peer, ctx);
    }
}

/// A connection's actor started on its worker.
#[derive(Message)]
#[rtype(result = "()")]
struct Started {
    id: u64,
    actor: Addr<ConnActor>,
}

impl Handler<Started> for Server {
    type Result = ();

    fn handle(&mut self, msg: Started, _ctx: &mut Context<Self>) {
        let Some(live) = self.conns.get_mut(&msg.id) else {
            return; // it ended already
        };
        match &self.stopping {
            // Past the grace period: it closes now, as the others did.
            Some(stopping) if stopping.deadline <= Instant::now() => msg.actor.do_send(Close),
            Some(_) => msg.actor.do_send(Drain),
            None => {}
        }
        live.actor = Some(msg.actor);
    }
}

impl Handler<Ended> for Server {
    type Result = ();

    fn handle(&mut self, msg: Ended, ctx: &mut Context<Self>) {
        let Some(live) = self.conns.remove(&msg.id) else {
            return;
        };
        if let Some(worker) = self.workers.get_mut(live.info.worker) {
            worker.live -= 1;
        }
        self.ended += 1;
        self.ended_totals.add(&msg.stats.counts());
        let lasted = live.info.started.elapsed().unwrap_or_default();
        let stats = &msg.stats;
        let summary = format!(
            "{} calls in, {} out, {} bytes in, {} out, lasted {lasted:.1?}",
            stats.calls_in, stats.calls_out, stats.bytes_in, stats.bytes_out
        );
        // A peer that leaves (cleanly or not: a reset or failed transport
        // is `disconnected` too), or a local close, is the normal end; an
        // abort either way, or a failure to start, is worth a warning.
        match msg.reason.kind() {
            ErrorKind::Disconnected => {
                log::info!(
                    "conn {}: ended: {} ({summary})",
                    msg.id,
                    msg.reason.reason()
                )
            }
            _ => log::warn!("conn {}: ended: {} ({summary})", msg.id, msg.reason),
        }
        self.stop_if_done(ctx);
    }
}

/// Asks a [`Server`] for a [`ServerSnapshot`] of its connections and
/// counts (as [`ServerHandle::snapshot`] does).
///
/// ```no_run
/// # async fn f(server: capnp_actix::ServerHandle) {
/// let snapshot = server.actor().send(capnp_actix::Snapshot).await.unwrap();
/// # }
/// ```
#[derive(Message)]
#[rtype(result = "ServerSnapshot")]
pub struct Snapshot;

impl Handler<Snapshot> for Server {
    type Result = ResponseActFuture<Self, ServerSnapshot>;

    fn handle(&mut self, _msg: Snapshot, _ctx: &mut Context<Self>) -> Self::Result {
        let asks: Vec<_> = self
            .conns
            .iter()
            .map(|(id, live)| (*id, live.actor.as_ref().map(|a| a.send(Stats))))
            .collect();
        let asked = async move {
            let mut answers = Vec::with_capacity(asks.len());
            for (id, ask) in asks {
                let stats = match ask {
                    Some(ask) => ask.await.ok(),
                    None => Some(ConnStats::default()), // not started yet
                };
                answers.push((id, stats));
            }
            answers
        };
        Box::pin(
            asked
                .into_actor(self)
                // A connection that could not answer has ended, and told us
                // before it stopped: once a message of ours sent now comes
                // back, its counts are in the totals.
                .then(|answers, server, ctx| {
                    let me = ctx.address();
                    async move {
                        let _ = me.send(Settle).await;
                        answers
                    }
                    .into_actor(server)
                })
                .map(|answers, server, _ctx| {
                    let mut snapshot = ServerSnapshot {
                        connections: Vec::new(),
                        totals: server.ended_totals,
                        accepted: server.accepted,
                        refused: server.refused,
                        ended: server.ended,
                        workers: server.workers.len(),
                        stopping: server.stopping.is_some(),
                    };
                    for (id, stats) in answers {
                        let (Some(live), Some(stats)) = (server.conns.get(&id), stats) else {
                            continue;
                        };
                        snapshot.totals.add(&stats);
                        snapshot.connections.push(ConnSnapshot {
                            info: live.info.clone(),
                            stats,
                        });
                    }
                    snapshot
                }),
        )
    }
}

/// Comes back once every message sent to the server before it has been
/// handled.
#[derive(Message)]
#[rtype(result = "()")]
struct Settle;

impl Handler<Settle> for Server {
    type Result = ();

    fn handle(&mut self, _msg: Settle, _ctx: &mut Context<Self>) {}
}

/// Stops a [`Server`] gracefully (see [`ServerHandle::stop`]); a second
/// `Stop` with a shorter grace period brings the closing forward.
///
/// ```no_run
/// # fn f(server: capnp_actix::ServerHandle) {
/// server.actor().do_send(capnp_actix::Stop { grace: std::time::Duration::from_secs(5) });
/// # }
/// ```
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop {
    /// How long running calls may go on before their connections close.
    pub grace: Duration,
}

impl Handler<Stop> for Server {
    type Result = ();

    fn handle(&mut self, msg: Stop, ctx: &mut Context<Self>) {
        self.stop(msg.grace, ctx);
    }
}
