//! [`ConnActor`]: one per connection. It owns the transport and the
//! protocol core's `Connection` (the four tables, the flow gate, the
//! embargoes, and every decision on them), and carries out what the core
//! decides.
//!
//! - `mod.rs` (this file): the actor, the runtime's slots in the core's
//!   tables, how it starts, the messages it takes.
//! - `inbound.rs`: frames into the core, and one `on_*` per kind of event
//!   the core gives back.
//! - `outbound.rs`: sending calls and returns, and saying what a
//!   capability is, for the core to name it.
//! - `embargo.rs`: our embargoes and the peer's reflections, through the
//!   mailbox.
//! - `transport.rs`: frames in, batched writes out; `teardown.rs`: the end.

mod backpressure;
mod embargo;
mod inbound;
mod metrics;
mod options;
mod outbound;
mod teardown;
mod transport;

use crate::answer::{AnswerActor, AnswerConn, CancelAnswer};
use crate::call::{next_question_key, CallState, CallTarget, Link, LinkRef, OutCall, PendingCall};
use crate::capability::PromiseImport;
use crate::capability::{Capability, ImportRef};
use crate::question::{Ask, LiftEmbargo, QuestionActor, Returned, POOL as QUESTION_POOL};
use crate::stats;
use actix::{
    Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, MessageResult, Recipient,
    StreamHandler,
};
use backpressure::Backpressure;
use capnp_actix_proto::connection::{Config, Connection, Slots};
use capnp_actix_proto::frame::{Frame, Limits};
use capnp_actix_proto::stream::FlowControl;
use capnp_actix_proto::{CapDescriptor, Error};
use futures::channel::{mpsc, oneshot};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use tokio::io::{AsyncRead, AsyncWrite};
use transport::{Outgoing, ReadFailure};

use metrics::Metrics;
pub use metrics::{ConnStats, ErrorCounts, Stats};
use options::BootstrapSource;
pub use options::{
    Cancellation, ConnOptions, DEFAULT_FLOW_LIMIT, DEFAULT_MAX_ANSWERS, DEFAULT_MAX_IMPORTS,
    DEFAULT_MAX_PIPELINED, DEFAULT_SEND_BUFFER_SIZE,
};

/// Connection ids, for logs and to tell connections apart.
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// The runtime's side of one of the peer's questions (the core keeps the
/// rest). Kept small: the answers table moves entries as it grows and
/// shrinks, and most answers (results without capabilities) never need
/// more than this.
pub(crate) struct AnswerEntry {
    /// The call's state: calls the peer pipelines on this answer go here.
    pub(crate) state: Arc<CallState>,
    /// The actor running the call, until it reports (and after, while
    /// calls pipelined on the answer are still on their way to it).
    pub(crate) actor: Option<Addr<AnswerActor>>,
    /// Calls pipelined on the answer that went to its actor.
    pub(crate) pipelined: u32,
    /// What the `Return`'s capabilities stand for, once it carried any.
    pub(crate) sent: Option<Box<SentTargets>>,
}

/// What the capabilities of a `Return` stand for here.
#[derive(Default)]
pub(crate) struct SentTargets {
    /// What each result capability was described as standing for, by its
    /// index in the results: calls the peer pipelines on the answer reach
    /// exactly that (the Tribble 4-way race rule, P-18).
    pub(crate) described: Vec<Option<Capability>>,
    /// The capability a pipeline path settled to, once asked: calls the
    /// peer keeps making on the answer (as clients do on the bootstrap
    /// answer) go to it without reading the results again.
    pub(crate) settled_target: Option<(Box<[u16]>, Capability)>,
}

impl AnswerEntry {
    pub(crate) fn new(state: Arc<CallState>) -> Self {
        AnswerEntry {
            state,
            actor: None,
            pipelined: 0,
            sent: None,
        }
    }

    /// What a call the peer pipelines on this answer at `transform` goes
    /// to: once the Return went out, what it described; the capability in
    /// the results once they are known (and nothing queued on them is
    /// still being delivered); the promise of it before.
    pub(crate) fn pipelined_target(&mut self, transform: &[u16], returned: bool) -> Capability {
        if let Some((path, cap)) = self.sent.as_ref().and_then(|s| s.settled_target.as_ref()) {
            if **path == *transform {
                return cap.clone();
            }
        }
        match self.state.settled_target(transform) {
            Some(payload) if returned => {
                let cap = match self.described_at(transform) {
                    Some(target) => target,
                    None => payload.cap_at(transform),
                };
                let sent = self.sent.get_or_insert_with(Box::default);
                sent.settled_target = Some((transform.into(), cap.clone()));
                cap
            }
            Some(payload) => payload.cap_at(transform),
            None => Capability::pipelined(self.state.clone(), transform.into()),
        }
    }

    /// What our `Return` described the capability at `transform` as
    /// standing for.
    fn described_at(&self, transform: &[u16]) -> Option<Capability> {
        let described = &self.sent.as_ref()?.described;
        if described.is_empty() {
            return None;
        }
        let index = Runtime::cap_index(self, transform)?;
        described.get(index)?.clone()
    }
}

/// Who takes the answer to one of our questions: its actor, and the
/// caller's key of it.
pub(crate) struct Taker {
    pub(crate) key: u64,
    pub(crate) actor: Addr<QuestionActor>,
}

/// The runtime's data in the core's tables.
pub(crate) struct Runtime;

impl Slots for Runtime {
    /// The question's actor, once given it (just after its `Call` is
    /// queued).
    type Question = Option<Taker>;
    type Answer = AnswerEntry;
    type Export = ExportEntry;
    type ExportKey = ExportKey;
    type Import = ImportEntry;
    type Embargo = EmbargoWaiter;

    fn cap_index(answer: &AnswerEntry, transform: &[u16]) -> Option<usize> {
        match answer.state.result()? {
            Ok(payload) => payload.cap_index_at(transform).ok(),
            Err(_) => None,
        }
    }
}

/// How we named a capability to the peer, and what a message the peer
/// addresses to that name reaches from then on.
#[derive(Clone)]
pub(crate) struct Described {
    /// The name, as sent.
    pub(crate) descriptor: CapDescriptor,
    /// Where calls (and a `Disembargo`) addressed to it go: exactly what
    /// the name stood for when sent, even if that is a promise that
    /// resolves later (the Tribble 4-way race rule, rpc.capnp).
    pub(crate) target: Capability,
}

impl Described {
    /// No capability: named `none`, and calls to it fail.
    pub(crate) fn none() -> Self {
        Described {
            descriptor: CapDescriptor::None,
            target: Capability::null(),
        }
    }
}

/// What identifies an exported capability, so that it is exported under
/// one id however often it is sent (T-04, P-20).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum ExportKey {
    /// An object, an import or a promise import, by its identity.
    Object(u64),
    /// A path into a call's results: the call's state, by address (the
    /// export holds the state, so the address is not reused while the key
    /// is in the table), and the path.
    Path(usize, Arc<[u16]>),
    /// Something without identity: never shared.
    Anonymous(u64),
}

/// The wait of a promise export for its resolution; dropped with the
/// export, it cancels the wait (P-19).
pub(crate) struct Resolving(pub(crate) futures::future::AbortHandle);

impl Drop for Resolving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One of our exports, as the runtime holds it.
pub(crate) struct ExportEntry {
    /// What calls on the export go to until it is resolved.
    pub(crate) cap: Capability,
    /// For a promise: the wait for its resolution, held so that dropping
    /// the export cancels it.
    #[allow(dead_code)]
    pub(crate) resolving: Option<Resolving>,
    /// What its `Resolve` described it as standing for, once sent.
    pub(crate) resolved: Option<Capability>,
}

impl ExportEntry {
    pub(crate) fn new(cap: Capability, resolving: Option<Resolving>) -> Self {
        ExportEntry {
            cap,
            resolving,
            resolved: None,
        }
    }

    /// What calls the peer makes on this export reach: after its
    /// `Resolve`, exactly what that described.
    pub(crate) fn target(&self) -> Capability {
        match &self.resolved {
            Some(target) => target.clone(),
            None => self.cap.clone(),
        }
    }
}

/// What waits for an embargo we started.
pub(crate) enum EmbargoWaiter {
    /// Calls on a path into the results of one of our questions, held by
    /// the question's actor.
    Pipelined {
        lift: Recipient<LiftEmbargo>,
        key: u64,
        path: Arc<[u16]>,
    },
    /// Calls on a promise the peer exported to us.
    Promise(Weak<PromiseImport>),
}

impl EmbargoWaiter {
    /// The embargo is over: the waiting calls go on.
    pub(crate) fn lift(self) {
        match self {
            EmbargoWaiter::Pipelined { lift, key, path } => {
                lift.do_send(LiftEmbargo { key, path });
            }
            EmbargoWaiter::Promise(promise) => {
                if let Some(promise) = promise.upgrade() {
                    promise.lift_embargo();
                }
            }
        }
    }
}

/// The runtime's side of one import.
#[derive(Default)]
pub(crate) struct ImportEntry {
    /// The local reference, shared by every capability for this import.
    pub(crate) local: Weak<ImportRef>,
    /// For a `senderPromise` import: the promise, which a `Resolve` settles.
    pub(crate) promise: Option<Weak<PromiseImport>>,
}

/// The actor of one connection: it owns the transport and the protocol
/// state, and carries out what the protocol core decides. Start one over a
/// byte stream ([`ConnActor::start`], [`ConnActor::from_tcp`],
/// [`ConnActor::from_unix`]), or let a [`crate::Server`] or
/// [`crate::connect`] do it; wrap its address in a [`crate::Connection`]
/// for a handle with one error type.
///
/// ```
/// use capnp_actix::{ConnActor, ConnOptions, Stats};
/// # actix::System::new().block_on(async {
/// let (client, _server) = ConnActor::pair(ConnOptions::new(), ConnOptions::new());
/// let stats = client.send(Stats).await.unwrap();
/// assert_eq!(stats.calls_out, 0);
/// # });
/// ```
pub struct ConnActor {
    /// This connection's id (logs, and telling imports apart).
    pub(crate) id: u64,
    /// What a peer's `Bootstrap` gets.
    pub(crate) main: Option<Capability>,
    /// Limits on inbound messages and on what we send.
    pub(crate) limits: Limits,
    /// Frames for the writer task; `None` once the connection closes.
    pub(crate) writer: Option<mpsc::UnboundedSender<Outgoing>>,
    /// Flow control shared with the reader and the writer.
    pub(crate) backpressure: Arc<Backpressure>,
    /// Above this many queued bytes, new calls fail (`overloaded`).
    pub(crate) send_buffer_size: usize,
    /// The deadline of every call sent.
    pub(crate) call_timeout: Option<std::time::Duration>,
    /// What the peer's `Finish` does to its running calls.
    pub(crate) cancellation: Cancellation,
    /// The protocol: tables, flow gate, embargoes, and every decision on
    /// them.
    pub(crate) core: Connection<Runtime>,
    /// Export identities for capabilities that have none of their own.
    pub(crate) next_anonymous_export: u64,
    /// This actor's own address, for the imports it hands out.
    pub(crate) self_addr: Option<Addr<ConnActor>>,
    /// This connection as capabilities and calls see it; dropped at
    /// teardown.
    pub(crate) link: Option<LinkRef>,
    /// The same, shared by the answer actors (cloning an `Addr` allocates;
    /// cloning this does not).
    pub(crate) answer_conn: Rc<AnswerConn>,
    /// Answer actors that reported their last answer, for the next ones.
    pub(crate) idle_answers: Vec<Addr<AnswerActor>>,
    /// Question actors whose last question was answered, for the next ones.
    pub(crate) idle_questions: Vec<Addr<QuestionActor>>,
    /// Why the connection is ending, once it is.
    pub(crate) closing: Option<Error>,
    /// Whoever waits for the end.
    pub(crate) watchers: Vec<oneshot::Sender<Error>>,
    /// What happened on the connection so far.
    pub(crate) metrics: Metrics,
    /// Ending once no call runs (see [`Drain`]).
    pub(crate) draining: bool,
    /// Who hears of the end, with the final counts.
    supervisor: Option<Recipient<Ended>>,
}

/// How a connection started by a [`crate::Server`] reports to it.
pub(crate) struct Supervision {
    /// The id the server gave the connection.
    pub(crate) id: u64,
    /// Told when the connection ends.
    pub(crate) ended: Recipient<Ended>,
}

/// A supervised connection ended.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Ended {
    /// Its id.
    pub(crate) id: u64,
    /// Why.
    pub(crate) reason: Error,
    /// Its counts at the end.
    pub(crate) stats: ConnStats,
}

/// A new connection id, unique in this process.
pub(crate) fn next_conn_id() -> u64 {
    NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed)
}

impl ConnActor {
    /// Starts a connection over a pair of stream halves on the current
    /// arbiter.
    ///
    /// ```
    /// # actix::System::new().block_on(async {
    /// let (a, b) = tokio::io::duplex(4096);
    /// let (read, write) = tokio::io::split(a);
    /// let conn = capnp_actix::ConnActor::start(read, write, capnp_actix::ConnOptions::new());
    /// # drop(b);
    /// # });
    /// ```
    pub fn start<R, W>(read: R, write: W, options: ConnOptions) -> Addr<ConnActor>
    where
        R: AsyncRead + Unpin + 'static,
        W: AsyncWrite + Unpin + 'static,
    {
        ConnActor::start_supervised(read, write, options, None)
    }

    /// Starts a connection that reports its end to a supervisor, under the
    /// id the supervisor gave it.
    pub(crate) fn start_supervised<R, W>(
        read: R,
        write: W,
        options: ConnOptions,
        supervision: Option<Supervision>,
    ) -> Addr<ConnActor>
    where
        R: AsyncRead + Unpin + 'static,
        W: AsyncWrite + Unpin + 'static,
    {
        let limits = options.limits;
        ConnActor::create(move |ctx| {
            let backpressure = Arc::new(Backpressure::new(options.send_buffer_size));
            ctx.add_stream(transport::frames(read, limits, backpressure.clone()));
            let (tx, rx) = mpsc::unbounded();
            actix_rt::spawn(transport::write_frames(
                write,
                rx,
                backpressure.clone(),
                ctx.address().downgrade(),
            ));
            let main = match options.bootstrap {
                None => None,
                Some(BootstrapSource::Main(cap)) => Some(cap),
                Some(BootstrapSource::Factory(factory)) => Some(factory()),
            };
            let (id, supervisor) = match supervision {
                Some(Supervision { id, ended }) => (id, Some(ended)),
                None => (next_conn_id(), None),
            };
            let serves_bootstrap = main.is_some();
            ConnActor {
                id,
                main,
                limits,
                writer: Some(tx),
                backpressure,
                send_buffer_size: options.send_buffer_size,
                call_timeout: options.call_timeout,
                cancellation: options.cancellation,
                core: Connection::new(Config {
                    flow_limit: options.flow_limit,
                    max_answers: options.max_answers,
                    max_imports: options.max_imports,
                    max_reflections: options.max_pipelined,
                    serves_bootstrap,
                }),
                next_anonymous_export: 1 << 63,
                self_addr: Some(ctx.address()),
                link: Some(Arc::new(ConnLink {
                    id,
                    conn: ctx.address(),
                    flow_control: options.flow_control,
                })),
                answer_conn: Rc::new(AnswerConn {
                    ready: ctx.address().recipient(),
                    reflect: ctx.address().recipient(),
                    max_pipelined: options.max_pipelined,
                }),
                idle_answers: Vec::new(),
                idle_questions: Vec::new(),
                closing: None,
                watchers: Vec::new(),
                metrics: Metrics::default(),
                draining: false,
                supervisor,
            }
        })
    }

    /// Starts a connection over a TCP stream.
    ///
    /// ```no_run
    /// # actix::System::new().block_on(async {
    /// let stream = tokio::net::TcpStream::connect("127.0.0.1:4000").await.unwrap();
    /// let conn = capnp_actix::ConnActor::from_tcp(stream, capnp_actix::ConnOptions::new());
    /// # });
    /// ```
    pub fn from_tcp(stream: tokio::net::TcpStream, options: ConnOptions) -> Addr<ConnActor> {
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        ConnActor::start(read, write, options)
    }

    /// Starts a connection over a Unix-domain stream.
    ///
    /// ```no_run
    /// # actix::System::new().block_on(async {
    /// let stream = tokio::net::UnixStream::connect("/tmp/rpc.sock").await.unwrap();
    /// let conn = capnp_actix::ConnActor::from_unix(stream, capnp_actix::ConnOptions::new());
    /// # });
    /// ```
    #[cfg(unix)]
    pub fn from_unix(stream: tokio::net::UnixStream, options: ConnOptions) -> Addr<ConnActor> {
        let (read, write) = stream.into_split();
        ConnActor::start(read, write, options)
    }

    /// Two connected connections over an in-memory duplex, for tests.
    ///
    /// ```
    /// use capnp_actix::{ConnActor, ConnOptions};
    /// # actix::System::new().block_on(async {
    /// let (client, server) = ConnActor::pair(ConnOptions::new(), ConnOptions::new());
    /// # });
    /// ```
    pub fn pair(a: ConnOptions, b: ConnOptions) -> (Addr<ConnActor>, Addr<ConnActor>) {
        let (x, y) = tokio::io::duplex(256 * 1024);
        let (xr, xw) = tokio::io::split(x);
        let (yr, yw) = tokio::io::split(y);
        (ConnActor::start(xr, xw, a), ConnActor::start(yr, yw, b))
    }

    /// The actor of question `key` (an idle one, or a new one), which
    /// delivers its answer to `state`.
    pub(crate) fn start_question(
        &mut self,
        state: &Arc<CallState>,
        key: u64,
        ctx: &mut Context<Self>,
    ) -> Addr<QuestionActor> {
        let actor = match self.idle_questions.pop() {
            Some(actor) => actor,
            None => QuestionActor::new(ctx.address().recipient(), self.id).start(),
        };
        actor.do_send(Ask {
            state: Arc::downgrade(state),
            key,
        });
        actor
    }

    /// Gives question `key`'s outcome to its actor, which is then free for
    /// the next question (its mailbox takes the outcome first).
    pub(crate) fn answer_question(&mut self, actor: Addr<QuestionActor>, returned: Returned) {
        actor.do_send(returned);
        if self.idle_questions.len() < QUESTION_POOL {
            self.idle_questions.push(actor);
        }
    }

    /// Ends the connection: every table is dropped and waiters learn why.
    pub(crate) fn end(&mut self, reason: Error, ctx: &mut Context<Self>) {
        if self.closing.is_none() {
            log::debug!("conn {}: closing: {reason}", self.id);
            self.closing = Some(reason);
        }
        ctx.stop();
    }

    /// Ends the connection after telling the peer why.
    pub(crate) fn abort(&mut self, reason: Error, ctx: &mut Context<Self>) {
        log::warn!("conn {}: aborting: {reason}", self.id);
        if self.closing.is_none() {
            self.core.abort(&reason);
            self.flush();
        }
        self.end(reason, ctx);
    }

    /// Tears the connection down (see `teardown`), then tells the
    /// supervisor.
    fn teardown(&mut self) {
        let reason = self
            .closing
            .clone()
            .unwrap_or_else(|| Error::disconnected("the connection was closed"));
        let stats = self.stats();
        teardown::tear_down(self, reason.clone());
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.do_send(Ended {
                id: self.id,
                reason,
                stats,
            });
        }
    }

    /// The connection's table sizes and counts, now.
    pub(crate) fn stats(&self) -> ConnStats {
        let counts = self.core.counts();
        let metrics = &self.metrics;
        ConnStats {
            questions: self.core.questions(),
            answers: self.core.answers(),
            exports: self.core.exports(),
            imports: self.core.imports(),
            resolves_sent: counts.resolves_sent,
            resolves_received: counts.resolves_received,
            embargoes_started: counts.embargoes_started,
            queued_bytes: self.backpressure.queued(),
            inbound_bytes: self.core.inbound_bytes(),
            calls_in: metrics.calls_in,
            calls_out: metrics.calls_out,
            bytes_in: self.backpressure.bytes_read(),
            bytes_out: metrics.bytes_out,
            exceptions_sent: metrics.exceptions_sent,
            exceptions_received: metrics.exceptions_received,
        }
    }

    /// While draining: ends the connection once no call runs.
    pub(crate) fn end_if_drained(&mut self, ctx: &mut Context<Self>) {
        if self.draining && self.closing.is_none() && self.backpressure.running() == 0 {
            self.flush();
            self.end(Error::disconnected("the server is shutting down"), ctx);
        }
    }
}

impl Actor for ConnActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        stats::CONNS.started();
        log::debug!("conn {}: started", self.id);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.teardown();
        stats::CONNS.stopped();
    }
}

impl StreamHandler<Result<Frame, ReadFailure>> for ConnActor {
    fn handle(&mut self, item: Result<Frame, ReadFailure>, ctx: &mut Context<Self>) {
        crate::stats::worked();
        if self.closing.is_some() {
            return;
        }
        match item {
            Ok(frame) => {
                if let Err(e) = self.receive(frame, ctx) {
                    self.abort(e, ctx);
                }
            }
            Err(ReadFailure::Protocol(e)) => self.abort(e, ctx),
            Err(ReadFailure::Disconnected(e)) => self.end(e, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.end(Error::disconnected("the peer closed the connection"), ctx);
    }
}

/// Asks the peer for its bootstrap capability. The capability is usable at
/// once (calls on it are pipelined on the bootstrap question).
///
/// ```no_run
/// # async fn f(conn: actix::Addr<capnp_actix::ConnActor>) {
/// let cap = conn.send(capnp_actix::Bootstrap).await.unwrap().unwrap();
/// # }
/// ```
#[derive(Message)]
#[rtype(result = "Result<Capability, Error>")]
pub struct Bootstrap;

impl Handler<Bootstrap> for ConnActor {
    type Result = Result<Capability, Error>;

    fn handle(&mut self, _msg: Bootstrap, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(reason) = &self.closing {
            return Err(reason.clone());
        }
        let state = CallState::new();
        let key = next_question_key();
        let actor = self.start_question(&state, key, ctx);
        self.core.bootstrap(key, Some(Taker { key, actor }));
        if let Some(link) = &self.link {
            state.set_remote(link, key);
        }
        self.flush();
        Ok(Capability::pipelined(state, Arc::from([])))
    }
}

/// Calls method `method_id` of interface `interface_id` on `target`, with
/// `params` (a message whose root is the params struct; it carries no
/// capabilities), and gives the pending call. The untyped, message-based
/// way to call; typed code uses generated clients instead.
///
/// ```no_run
/// # async fn f(conn: actix::Addr<capnp_actix::ConnActor>, cap: capnp_actix::Capability) {
/// let mut params = capnp::message::Builder::new_default();
/// params.set_root(capnp::text::Reader::from("hi")).unwrap();
/// let pending = conn
///     .send(capnp_actix::Call { target: cap, interface_id: 0xabcd, method_id: 0, params })
///     .await
///     .unwrap();
/// let response = pending.await;
/// # }
/// ```
#[derive(Message)]
#[rtype(result = "PendingCall")]
pub struct Call {
    /// The capability to call.
    pub target: Capability,
    /// The method's interface id.
    pub interface_id: u64,
    /// The method's ordinal in the interface.
    pub method_id: u16,
    /// The params: the message's root is the params struct.
    pub params: capnp::message::Builder<capnp::message::HeapAllocator>,
}

impl Handler<Call> for ConnActor {
    type Result = MessageResult<Call>;

    fn handle(&mut self, msg: Call, _ctx: &mut Context<Self>) -> Self::Result {
        let mut request = msg.target.new_call(msg.interface_id, msg.method_id);
        let copied = msg
            .params
            .get_root_as_reader::<capnp::any_pointer::Reader>()
            .and_then(|root| request.params().set_as(root));
        MessageResult(match copied {
            Ok(()) => request.send(),
            Err(e) => PendingCall::new(CallState::settled(Err(e.into()))),
        })
    }
}

/// Closes the connection from this side.
///
/// ```no_run
/// # async fn f(conn: actix::Addr<capnp_actix::ConnActor>) {
/// conn.send(capnp_actix::Close).await.unwrap();
/// # }
/// ```
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

impl Handler<Close> for ConnActor {
    type Result = ();

    fn handle(&mut self, _msg: Close, ctx: &mut Context<Self>) {
        self.end(
            Error::disconnected("the connection was closed locally"),
            ctx,
        );
    }
}

/// Gives a [`futures::channel::oneshot::Receiver`] that yields why the
/// connection ended, once it has. (Sent to a connection that has already
/// stopped, it fails with a mailbox error: [`crate::Connection::ended`]
/// does not.)
///
/// ```no_run
/// # async fn f(conn: actix::Addr<capnp_actix::ConnActor>) {
/// let ended = conn.send(capnp_actix::Watch).await.unwrap();
/// let why = ended.await;
/// # }
/// ```
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<Error>")]
pub struct Watch;

impl Handler<Watch> for ConnActor {
    type Result = MessageResult<Watch>;

    fn handle(&mut self, _msg: Watch, _ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        match &self.closing {
            Some(reason) => {
                let _ = tx.send(reason.clone());
            }
            None => self.watchers.push(tx),
        }
        MessageResult(rx)
    }
}

/// Sends why the connection ended to this sender, once it has (at once if
/// it has already).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WatchWith(pub(crate) oneshot::Sender<Error>);

impl Handler<WatchWith> for ConnActor {
    type Result = ();

    fn handle(&mut self, msg: WatchWith, _ctx: &mut Context<Self>) {
        match &self.closing {
            Some(reason) => {
                let _ = msg.0.send(reason.clone());
            }
            None => self.watchers.push(msg.0),
        }
    }
}

/// Ends the connection once the calls the peer made so far have returned;
/// calls that come meanwhile fail `disconnected` ("the server is shutting
/// down"). A [`crate::Server`]'s graceful stop sends it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Drain;

impl Handler<Drain> for ConnActor {
    type Result = ();

    fn handle(&mut self, _msg: Drain, ctx: &mut Context<Self>) {
        self.draining = true;
        self.end_if_drained(ctx);
    }
}

/// The connection as calls and capabilities reach it: each method posts a
/// message to the actor.
struct ConnLink {
    /// The connection's id.
    id: u64,
    /// Its actor.
    conn: Addr<ConnActor>,
    /// The flow control of streaming calls sent on it.
    flow_control: FlowControl,
}

impl Link for ConnLink {
    fn id(&self) -> u64 {
        self.id
    }

    fn send_call(&self, target: CallTarget, call: OutCall, state: Weak<CallState>, key: u64) {
        self.conn.do_send(SendCall {
            target,
            call: Some(call),
            state,
            key,
        });
    }

    fn question_dropped(&self, key: u64) {
        self.conn.do_send(QuestionDropped { key });
    }

    fn import_dropped(&self, import_id: u32, generation: u64) {
        self.conn.do_send(ImportDropped {
            import_id,
            generation,
        });
    }

    fn flow_control(&self) -> FlowControl {
        self.flow_control
    }
}

/// A call for the peer, from a capability of this connection.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SendCall {
    /// Where on the peer it goes.
    pub(crate) target: CallTarget,
    /// The call; taken when handled.
    pub(crate) call: Option<OutCall>,
    /// The caller's state.
    pub(crate) state: Weak<CallState>,
    /// The caller's key for the question.
    pub(crate) key: u64,
}

impl Drop for SendCall {
    fn drop(&mut self) {
        // Never handled: the connection is gone.
        if self.call.is_some() {
            if let Some(state) = self.state.upgrade() {
                state.resolve(Err(Error::disconnected("the connection is closed")));
            }
        }
    }
}

/// The caller let go of question `key`: send `Finish`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct QuestionDropped {
    /// The caller's key.
    pub(crate) key: u64,
}

/// The last local reference to an import went away.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ImportDropped {
    /// The import.
    pub(crate) import_id: u32,
    /// Which reference (a newer one may have replaced it).
    pub(crate) generation: u64,
}

/// How long a connection whose writes fail keeps reading, for the reason
/// the peer may have sent before it closed.
const WRITE_FAILURE_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// The writer task could not write.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WriteFailed(pub(crate) Error);

impl Handler<WriteFailed> for ConnActor {
    type Result = ();

    fn handle(&mut self, msg: WriteFailed, ctx: &mut Context<Self>) {
        self.writer = None;
        // The peer may have closed after telling us why (an Abort still in
        // our read buffer): give the reader a moment to deliver it.
        ctx.run_later(WRITE_FAILURE_GRACE, move |conn, ctx| conn.end(msg.0, ctx));
    }
}

/// Answers of a connection that is going away get this.
pub(crate) fn cancel_answer(answer_id: u32, actor: &Addr<AnswerActor>) {
    actor.do_send(CancelAnswer {
        answer_id,
        report: false,
    });
}

/// Questions of a connection that is going away get this.
pub(crate) fn fail_question(key: u64, actor: &Addr<QuestionActor>, reason: &Error) {
    actor.do_send(Returned {
        key,
        result: Err(reason.clone()),
        finished: false,
        from_peer: false,
    });
}
