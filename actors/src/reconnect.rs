//! A reconnecting client: a [`Reconnect`] actor, run under actix's
//! [`Supervisor`], holds a connection to one endpoint and its bootstrap
//! capability. When the connection ends (or a dial fails), the actor stops
//! and the supervisor restarts it, and it dials again after an
//! exponential backoff.
//!
//! Callers hold one [`Capability`] that stays valid across reconnects: a
//! local object whose calls the actor forwards to the bootstrap
//! capability of the connection of the moment. While there is none, calls
//! wait (up to a configured time, in order) or fail `disconnected` at once.
//! Calls already sent when a connection ends fail `disconnected`, as do
//! calls on capabilities the old connection returned: only the bootstrap
//! capability is re-established.
//!
//! A connection counts as up once the peer has answered its bootstrap: a
//! server that accepts and then refuses (at its connection limit, say) is
//! a failed dial, and the backoff grows. Streaming calls go through like
//! any other; as everywhere, after one fails (as one in flight when the
//! connection drops does), later streaming calls through the same typed
//! client fail with its error: take a new client
//! ([`Reconnecting::bootstrap`]) for the next stream.

use crate::call::{Deliver, ObjectActor};
use crate::capability::Capability;
use crate::client::Connection;
use crate::conn::{Bootstrap, ConnOptions};
use crate::endpoint::{Endpoint, IntoEndpoint};
use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message,
    MessageResult, Supervised, Supervisor, WrapFuture,
};
use capnp::capability::FromClientHook;
use capnp_actix_proto::Error;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

/// How a [`Reconnect`] client behaves.
///
/// ```
/// use std::time::Duration;
/// let options = capnp_actix::ReconnectOptions::new()
///     .backoff(Duration::from_millis(20), Duration::from_secs(2))
///     .wait_while_down(Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct ReconnectOptions {
    conn: ConnOptions,
    first_backoff: Duration,
    max_backoff: Duration,
    wait: Duration,
    dial_timeout: Duration,
}

impl Default for ReconnectOptions {
    fn default() -> Self {
        ReconnectOptions {
            conn: ConnOptions::new(),
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            wait: Duration::from_secs(10),
            dial_timeout: Duration::from_secs(10),
        }
    }
}

impl ReconnectOptions {
    /// The defaults: backoff from 50 ms doubling up to 5 s, calls wait up
    /// to 10 s for a connection.
    ///
    /// ```
    /// let options = capnp_actix::ReconnectOptions::new();
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The options of each connection.
    ///
    /// ```
    /// let options = capnp_actix::ReconnectOptions::new()
    ///     .conn_options(capnp_actix::ConnOptions::new().max_answers(100));
    /// ```
    pub fn conn_options(mut self, options: ConnOptions) -> Self {
        self.conn = options;
        self
    }

    /// The wait before the first redial after a connection ends; it
    /// doubles with each failed dial, up to `max` (each wait varies by up
    /// to a quarter, so that many clients do not redial in step).
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = capnp_actix::ReconnectOptions::new()
    ///     .backoff(Duration::from_millis(10), Duration::from_secs(1));
    /// ```
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first_backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// How long a dial may take, from the connect to the peer's answer to
    /// the bootstrap; past it, the dial has failed (a peer that accepts
    /// and never answers is no connection). Default: 10 s.
    ///
    /// ```
    /// let options = capnp_actix::ReconnectOptions::new()
    ///     .dial_timeout(std::time::Duration::from_secs(2));
    /// ```
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// How long a call made while there is no connection waits for one
    /// before it fails `disconnected`. Zero: it fails at once.
    ///
    /// ```
    /// let options = capnp_actix::ReconnectOptions::new()
    ///     .wait_while_down(std::time::Duration::ZERO); // fail fast
    /// ```
    pub fn wait_while_down(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }
}

/// The reconnecting client's actor: it keeps a connection to one endpoint
/// up, redialing with backoff, and forwards the calls made on its stable
/// capability to the connection of the moment. Start one with
/// [`Reconnect::start`].
///
/// ```
/// # actix::System::new().block_on(async {
/// use capnp_actix::{Reconnect, ReconnectOptions};
/// // Nobody listens on port 1: calls fail at once with a zero wait.
/// let client = Reconnect::start("127.0.0.1:1", ReconnectOptions::new()
///     .wait_while_down(std::time::Duration::ZERO)).unwrap();
/// let err = client.capability().new_call(1, 0).send().await.err().unwrap();
/// assert_eq!(err.kind(), capnp_actix::ErrorKind::Disconnected);
/// client.close().await;
/// # });
/// ```
pub struct Reconnect {
    endpoint: Endpoint,
    options: ReconnectOptions,
    /// The connection and its bootstrap capability, while up.
    current: Option<(Connection, Capability)>,
    /// Calls waiting for a connection, with when they stop waiting.
    waiting: VecDeque<(Deliver, Instant)>,
    /// Failed dials since the last connection.
    failures: u32,
    /// Connections made so far.
    connections: u64,
    /// Why the last connection ended or the last dial failed.
    last_error: Option<Error>,
    /// Closed for good: no more dials; calls fail.
    closed: bool,
}

/// A reconnecting client's stable capability and its actor.
///
/// ```no_run
/// # async fn f() -> Result<(), capnp_actix::Error> {
/// use capnp_actix::{Reconnect, ReconnectOptions};
/// let client = Reconnect::start("127.0.0.1:4000", ReconnectOptions::new())?;
/// let peer: capnp::capability::Client = client.bootstrap();
/// // Calls on `peer` go to whichever connection is up.
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Reconnecting {
    cap: Capability,
    actor: Addr<Reconnect>,
}

impl Reconnecting {
    /// The stable bootstrap capability, as a typed client.
    ///
    /// ```no_run
    /// # fn f(client: capnp_actix::Reconnecting) {
    /// let peer: capnp::capability::Client = client.bootstrap();
    /// # }
    /// ```
    pub fn bootstrap<C: FromClientHook>(&self) -> C {
        self.cap.client()
    }

    /// The stable bootstrap capability, untyped.
    ///
    /// ```no_run
    /// # fn f(client: capnp_actix::Reconnecting) {
    /// let cap = client.capability();
    /// # }
    /// ```
    pub fn capability(&self) -> Capability {
        self.cap.clone()
    }

    /// Whether a connection is up, how many were made, why the last ended.
    ///
    /// ```no_run
    /// # async fn f(client: capnp_actix::Reconnecting) -> Result<(), capnp_actix::Error> {
    /// let status = client.status().await?;
    /// println!("up: {}, {} connections so far", status.connected, status.connections);
    /// # Ok(()) }
    /// ```
    pub async fn status(&self) -> Result<ReconnectStatus, Error> {
        self.actor
            .send(GetStatus)
            .await
            .map_err(|_| Error::disconnected("the reconnecting client has stopped"))
    }

    /// Stops for good: the connection closes, waiting calls and later
    /// calls fail `disconnected`.
    ///
    /// ```no_run
    /// # async fn f(client: capnp_actix::Reconnecting) {
    /// client.close().await;
    /// # }
    /// ```
    pub async fn close(&self) {
        let _ = self.actor.send(CloseReconnect).await;
    }
}

/// What [`Reconnecting::status`] tells.
///
/// ```
/// let status = capnp_actix::ReconnectStatus::default();
/// assert!(!status.connected);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ReconnectStatus {
    /// A connection is up.
    pub connected: bool,
    /// Connections made so far.
    pub connections: u64,
    /// Failed dials since the last connection.
    pub failures: u32,
    /// Calls waiting for a connection.
    pub waiting: usize,
    /// Why the last connection ended or the last dial failed.
    pub last_error: Option<Error>,
}

impl Reconnect {
    /// Starts a reconnecting client of `endpoint` on the current arbiter,
    /// under a [`Supervisor`]; it dials at once. Fails only if `endpoint`
    /// does not parse.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), capnp_actix::Error> {
    /// let client = capnp_actix::Reconnect::start("unix:/tmp/rpc.sock", Default::default())?;
    /// # Ok(()) }
    /// ```
    pub fn start(
        endpoint: impl IntoEndpoint,
        options: ReconnectOptions,
    ) -> Result<Reconnecting, Error> {
        let endpoint = endpoint.into_endpoint()?;
        let actor = Supervisor::start(move |_| Reconnect {
            endpoint,
            options,
            current: None,
            waiting: VecDeque::new(),
            failures: 0,
            connections: 0,
            last_error: None,
            closed: false,
        });
        let cap = Capability::local(
            Box::new(Forward(actor.clone())),
            crate::export::next_object_id(),
        );
        Ok(Reconnecting { cap, actor })
    }

    /// The wait before the next dial.
    fn backoff(&self) -> Duration {
        if self.failures == 0 && self.connections == 0 {
            return Duration::ZERO; // the first dial
        }
        let doublings = self.failures.min(20);
        let base = self
            .options
            .first_backoff
            .saturating_mul(1 << doublings)
            .min(self.options.max_backoff);
        // Up to a quarter less, at random.
        let random = std::collections::hash_map::RandomState::new().hash_one(self.failures);
        let quarter = base / 4;
        base - quarter.mul_f64((random % 1000) as f64 / 1000.0)
    }

    /// Delivers the waiting calls in order (those whose caller still
    /// waits); the ones past their wait fail.
    fn flush_waiting(&mut self) {
        let now = Instant::now();
        while let Some((mut deliver, until)) = self.waiting.pop_front() {
            let Some(state) = deliver.state.upgrade() else {
                deliver.call = None;
                continue;
            };
            if state.result().is_some() {
                deliver.call = None; // failed already (its own deadline)
                continue;
            }
            let waits_on = !self.closed && until > now;
            match &self.current {
                Some((_, cap)) if waits_on => {
                    if let Some(call) = deliver.call.take() {
                        cap.deliver(call, &state);
                    }
                }
                None if waits_on => {
                    // (Still down: it waits on, and so do those after it.)
                    self.waiting.push_front((deliver, until));
                    return;
                }
                _ => {
                    deliver.call = None;
                    state.resolve(Err(self.down_error()));
                }
            }
        }
    }

    /// What a call gets when there is no connection for it.
    fn down_error(&self) -> Error {
        if self.closed {
            return Error::disconnected("the reconnecting client was closed");
        }
        let why = match &self.last_error {
            Some(e) => format!(": {}", e.reason()),
            None => String::new(),
        };
        Error::disconnected(format!(
            "not connected to {} (waited {:?} for a connection){why}",
            self.endpoint, self.options.wait
        ))
    }

    /// Fails the calls whose wait is over.
    fn expire_waiting(&mut self) {
        let now = Instant::now();
        let error = self.down_error();
        self.waiting.retain(|(deliver, until)| {
            if *until > now {
                return true;
            }
            if let Some(state) = deliver.state.upgrade() {
                state.resolve(Err(error.clone()));
            }
            false
        });
    }
}

impl Actor for Reconnect {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.closed {
            self.flush_waiting();
            return;
        }
        let delay = self.backoff();
        let endpoint = self.endpoint.clone();
        let options = self.options.conn.clone();
        if delay > Duration::ZERO {
            log::info!("reconnect {endpoint}: dialing again in {delay:.0?}");
        }
        let dial_timeout = self.options.dial_timeout;
        let dialed = async move {
            tokio::time::sleep(delay).await;
            let dial = Connection::dial(&endpoint, options);
            let conn = tokio::time::timeout(dial_timeout, dial)
                .await
                .map_err(|_| {
                    Error::disconnected(format!(
                        "no connection within {dial_timeout:?} (dial_timeout)"
                    ))
                })??;
            let cap = conn
                .actor()
                .send(Bootstrap)
                .await
                .map_err(|_| Error::disconnected("the connection ended at once"))??;
            // Up once the peer has answered the bootstrap: a server that
            // accepts and then refuses (at its connection limit, say)
            // counts as a failed dial, and its backoff grows.
            if let Some(answered) = cap.question_settled() {
                let answered = tokio::time::timeout(dial_timeout, answered).await;
                let failed = match answered {
                    Ok(Ok(Ok(_))) => None,
                    Ok(Ok(Err(e))) => Some(e),
                    Ok(Err(_)) => Some(Error::disconnected("the connection ended at once")),
                    Err(_) => Some(Error::disconnected(format!(
                        "no answer to the bootstrap within {dial_timeout:?} (dial_timeout)"
                    ))),
                };
                if let Some(e) = failed {
                    conn.close().await;
                    return Err(e);
                }
            }
            Ok::<_, Error>((conn, cap))
        };
        ctx.spawn(dialed.into_actor(self).map(|dialed, this, ctx| {
            if this.closed {
                if let Ok((conn, _)) = dialed {
                    actix_rt::spawn(async move { conn.close().await });
                }
                return;
            }
            match dialed {
                Ok((conn, cap)) => {
                    log::info!(
                        "reconnect {}: connected (connection {})",
                        this.endpoint,
                        this.connections + 1
                    );
                    this.failures = 0;
                    this.connections += 1;
                    let watched = conn.clone();
                    this.current = Some((conn, cap));
                    this.flush_waiting();
                    // When it ends: stop, and the supervisor restarts us.
                    ctx.spawn(async move { watched.ended().await }.into_actor(this).map(
                        |why, this, ctx| {
                            log::info!("reconnect {}: connection ended: {why}", this.endpoint);
                            this.last_error = Some(why);
                            this.current = None;
                            ctx.stop();
                        },
                    ));
                }
                Err(e) => {
                    log::warn!("reconnect {}: dial failed: {e}", this.endpoint);
                    this.failures = this.failures.saturating_add(1);
                    this.last_error = Some(e);
                    this.expire_waiting();
                    ctx.stop();
                }
            }
        }));
    }
}

impl Supervised for Reconnect {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.current = None;
    }
}

/// The stable capability's link to the actor.
struct Forward(Addr<Reconnect>);

impl ObjectActor for Forward {
    fn deliver(&self, msg: Deliver) {
        self.0.do_send(msg);
    }
    fn unhost(&self) {
        self.0.do_send(CloseReconnect);
    }
    fn connected(&self) -> bool {
        self.0.connected()
    }
}

impl Handler<Deliver> for Reconnect {
    type Result = ();

    fn handle(&mut self, mut msg: Deliver, ctx: &mut Context<Self>) {
        let Some(state) = msg.state.upgrade() else {
            msg.call = None;
            return;
        };
        let Some(call) = msg.call.take() else { return };
        match &self.current {
            Some((_, cap)) if !self.closed => cap.deliver(call, &state),
            _ if self.closed || self.options.wait.is_zero() => {
                state.resolve(Err(self.down_error()))
            }
            _ => {
                msg.call = Some(call);
                let until = crate::server::after(self.options.wait);
                self.waiting.push_back((msg, until));
                // (The actor may restart meanwhile, which cancels its own
                // timers; this one is the arbiter's.)
                let me = ctx.address();
                let wait = self.options.wait;
                actix_rt::spawn(async move {
                    tokio::time::sleep(wait).await;
                    me.do_send(ExpireWaiting);
                });
            }
        }
    }
}

/// Calls may have waited long enough.
#[derive(Message)]
#[rtype(result = "()")]
struct ExpireWaiting;

impl Handler<ExpireWaiting> for Reconnect {
    type Result = ();

    fn handle(&mut self, _msg: ExpireWaiting, _ctx: &mut Context<Self>) {
        self.expire_waiting();
    }
}

/// Stop for good.
#[derive(Message)]
#[rtype(result = "()")]
struct CloseReconnect;

impl Handler<CloseReconnect> for Reconnect {
    type Result = ();

    fn handle(&mut self, _msg: CloseReconnect, _ctx: &mut Context<Self>) {
        self.closed = true;
        if let Some((conn, _)) = self.current.take() {
            actix_rt::spawn(async move { conn.close().await });
        }
        self.flush_waiting();
    }
}

#[derive(Message)]
#[rtype(result = "ReconnectStatus")]
struct GetStatus;

impl Handler<GetStatus> for Reconnect {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(ReconnectStatus {
            connected: self.current.is_some(),
            connections: self.connections,
            failures: self.failures,
            waiting: self.waiting.len(),
            last_error: self.last_error.clone(),
        })
    }
}
