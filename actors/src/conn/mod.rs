//! [`ConnActor`]: one per connection. It owns the transport, the four
//! tables, and the dispatch of inbound messages.
//!
//! - `mod.rs` (this file): the actor, its options, how it starts, the
//!   messages it takes, and its teardown.
//! - `inbound.rs`: one `handle_*` per kind of inbound message.
//! - `outbound.rs`: sending calls and returns, and translating
//!   capabilities to and from cap descriptors.
//! - `transport.rs`: frames in, batched writes out.

mod backpressure;
mod gate;
mod inbound;
mod outbound;
mod teardown;
mod transport;

use crate::answer::{AnswerActor, CancelAnswer, ReturnReady};
use crate::call::{next_question_key, CallState, CallTarget, Link, LinkRef, OutCall, PendingCall};
use crate::capability::PromiseImport;
use crate::capability::{Capability, ImportRef};
use crate::question::{QuestionActor, Returned};
use crate::stats;
use actix::{
    Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, MessageResult, Recipient,
    StreamHandler,
};
use backpressure::Backpressure;
use capnp_actix_proto::embargo::EmbargoTable;
use capnp_actix_proto::flow::FlowGate;
use capnp_actix_proto::frame::{Frame, Limits};
use capnp_actix_proto::table::{ExportTable, ImportTable, PeerTable, QuestionTable};
use capnp_actix_proto::{CapDescriptor, Error};
use futures::channel::{mpsc, oneshot};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use tokio::io::{AsyncRead, AsyncWrite};
use transport::{Outgoing, ReadFailure};

/// Connection ids, for logs and to tell connections apart.
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Where a connection's bootstrap capability comes from.
#[derive(Clone)]
enum BootstrapSource {
    /// One capability for every connection.
    Main(Capability),
    /// A new capability for each connection, made when it starts.
    Factory(Arc<dyn Fn() -> Capability + Send + Sync>),
}

/// How a connection behaves.
///
/// ```
/// use capnp_actix::{Capability, ConnOptions};
/// let options = ConnOptions::new().main_interface(Capability::null());
/// ```
#[derive(Clone)]
pub struct ConnOptions {
    /// What a peer's `Bootstrap` gets; `None` answers it with an exception.
    bootstrap: Option<BootstrapSource>,
    /// Limits on inbound messages and on what we send.
    limits: Limits,
    /// How many bytes may wait for the transport before new calls fail.
    send_buffer_size: usize,
    /// How many bytes of params the peer's unreturned calls may hold before
    /// we stop reading.
    flow_limit: usize,
    /// How many questions the peer may leave open.
    max_answers: usize,
    /// How many of the peer's exports we hold at most.
    max_imports: usize,
    /// How many of the peer's calls may wait on one of its answers.
    max_pipelined: usize,
}

impl Default for ConnOptions {
    fn default() -> Self {
        ConnOptions {
            bootstrap: None,
            limits: Limits::default(),
            send_buffer_size: DEFAULT_SEND_BUFFER_SIZE,
            flow_limit: DEFAULT_FLOW_LIMIT,
            max_answers: DEFAULT_MAX_ANSWERS,
            max_imports: DEFAULT_MAX_IMPORTS,
            max_pipelined: DEFAULT_MAX_PIPELINED,
        }
    }
}

/// The default of [`ConnOptions::send_buffer_size`]: 64 MiB.
pub const DEFAULT_SEND_BUFFER_SIZE: usize = 64 << 20;

/// The default of [`ConnOptions::flow_limit`]: 64 MiB.
pub const DEFAULT_FLOW_LIMIT: usize = 64 << 20;

/// The default of [`ConnOptions::max_answers`].
pub const DEFAULT_MAX_ANSWERS: usize = 65536;

/// The default of [`ConnOptions::max_imports`].
pub const DEFAULT_MAX_IMPORTS: usize = 65536;

/// The default of [`ConnOptions::max_pipelined`].
pub const DEFAULT_MAX_PIPELINED: usize = 16384;

impl ConnOptions {
    /// Options with no bootstrap capability and default limits.
    ///
    /// ```
    /// let options = capnp_actix::ConnOptions::new();
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve `cap` to every peer that asks for the bootstrap capability.
    ///
    /// ```
    /// let options = capnp_actix::ConnOptions::new().main_interface(capnp_actix::Capability::null());
    /// ```
    pub fn main_interface(mut self, cap: Capability) -> Self {
        self.bootstrap = Some(BootstrapSource::Main(cap));
        self
    }

    /// Make a bootstrap capability for each connection with `factory`; it
    /// runs on the connection's arbiter when the connection starts.
    ///
    /// ```
    /// let options = capnp_actix::ConnOptions::new().bootstrap_factory(capnp_actix::Capability::null);
    /// ```
    pub fn bootstrap_factory(
        mut self,
        factory: impl Fn() -> Capability + Send + Sync + 'static,
    ) -> Self {
        self.bootstrap = Some(BootstrapSource::Factory(Arc::new(factory)));
        self
    }

    /// How many bytes may wait for the transport (written by us, not yet
    /// taken by the socket) before new calls on the connection fail with an
    /// `overloaded` error instead of queueing more. Returns and other
    /// replies are always queued. Default: [`DEFAULT_SEND_BUFFER_SIZE`].
    ///
    /// ```
    /// let options = capnp_actix::ConnOptions::new().send_buffer_size(1 << 20);
    /// ```
    pub fn send_buffer_size(mut self, bytes: usize) -> Self {
        self.send_buffer_size = bytes;
        self
    }

    /// How many bytes of params the peer's calls that have not returned
    /// yet may hold (F-05). Over it, further calls wait, in arrival order,
    /// and so does every message behind them, except the `Return`s of our
    /// own calls: a handler that calls the peer back still gets its answer,
    /// so the limit cannot deadlock (F-07). Waiting calls may hold as many
    /// bytes again; a call beyond that is refused with an `overloaded`
    /// exception naming this limit. Reading also stops while more than
    /// twice [`send_buffer_size`](Self::send_buffer_size) bytes wait for
    /// the transport. Default: [`DEFAULT_FLOW_LIMIT`].
    ///
    /// ```
    /// let options = capnp_actix::ConnOptions::new().flow_limit(1 << 20);
    /// ```
    pub fn flow_limit(mut self, bytes: usize) -> Self {
        self.flow_limit = bytes;
        self
    }

    /// How many questions the peer may have open at once (calls and
    /// bootstraps without their `Finish`); one more aborts the connection
    /// with a reason naming this limit. Default: [`DEFAULT_MAX_ANSWERS`].
    ///
    /// ```
    /// let options = capnp_actix::ConnOptions::new().max_answers(1000);
    /// ```
    pub fn max_answers(mut self, answers: usize) -> Self {
        self.max_answers = answers;
        self
    }

    /// How many of the peer's capabilities we hold at once; one more
    /// aborts the connection with a reason naming this limit. Default:
    /// [`DEFAULT_MAX_IMPORTS`].
    ///
    /// ```
    /// let options = capnp_actix::ConnOptions::new().max_imports(1000);
    /// ```
    pub fn max_imports(mut self, imports: usize) -> Self {
        self.max_imports = imports;
        self
    }

    /// How many of the peer's calls may wait at once on one of its
    /// answers that has no results yet (promise pipelining); the next fails
    /// with an `overloaded` exception naming this limit, and the connection
    /// lives. Default: [`DEFAULT_MAX_PIPELINED`].
    ///
    /// ```
    /// let options = capnp_actix::ConnOptions::new().max_pipelined(1000);
    /// ```
    pub fn max_pipelined(mut self, calls: usize) -> Self {
        self.max_pipelined = calls;
        self
    }

    /// Limits on message size and shape.
    ///
    /// ```
    /// use capnp_actix::Limits;
    /// let options = capnp_actix::ConnOptions::new().limits(Limits::default());
    /// ```
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// One of our questions, while its id is in use.
pub(crate) struct QuestionEntry {
    /// The caller's key for it, until the caller lets go.
    pub(crate) key: Option<u64>,
    /// The actor that delivers the answer; gone once it has.
    pub(crate) actor: Option<Addr<QuestionActor>>,
    /// Exports we sent in the params: released on a `Return` that says
    /// `releaseParamCaps`.
    pub(crate) param_exports: Vec<u32>,
}

/// One of the peer's questions, while its id is in use. Kept small: the
/// answers table moves entries as it grows and shrinks, and most answers
/// (results without capabilities) never need more than this.
pub(crate) struct AnswerEntry {
    /// The call's state: calls the peer pipelines on this answer go here.
    pub(crate) state: Arc<CallState>,
    /// The actor running the call, until it reports.
    pub(crate) actor: Option<Addr<AnswerActor>>,
    /// Bytes of the call's message, counted against the flow limit until
    /// the `Return` goes out.
    pub(crate) inbound_bytes: usize,
    /// Whether our `Return` went out.
    pub(crate) returned: bool,
    /// Whether the peer's `Finish` arrived.
    pub(crate) finished: bool,
    /// Whether that `Finish` released the result capabilities.
    pub(crate) release_result_caps: bool,
    /// The call was refused by the flow limit, its params unread: its
    /// `Return` says `releaseParamCaps` (F-07).
    pub(crate) refused: bool,
    /// The call said `sendResultsTo.yourself`: its results stay here until
    /// the peer takes them with `Return.takeFromOtherQuestion`, and its own
    /// `Return` says `resultsSentElsewhere`.
    pub(crate) results_elsewhere: bool,
    /// What the `Return` told the peer about capabilities, once it did.
    pub(crate) sent: Option<Box<SentCaps>>,
}

/// What a `Return` told the peer about the capabilities of its results.
#[derive(Default)]
pub(crate) struct SentCaps {
    /// Exports we sent in the results, released by a `Finish` that says
    /// `releaseResultCaps`.
    pub(crate) exports: Vec<u32>,
    /// What each result capability was described as, by its index in the
    /// results: calls the peer pipelines on the answer reach exactly that,
    /// and its `Disembargo{senderLoopback}` is reflected along it (the
    /// Tribble 4-way race rule, P-18).
    pub(crate) described: Vec<Option<Described>>,
    /// The capability a pipeline path settled to, once asked: calls the
    /// peer keeps making on the answer (as clients do on the bootstrap
    /// answer) go to it without reading the results again.
    pub(crate) settled_target: Option<(Box<[u16]>, Capability)>,
}

impl AnswerEntry {
    /// What a call the peer pipelines on this answer at `transform` goes
    /// to: once the Return went out, what it described; the capability in
    /// the results once they are known (and nothing queued on them is
    /// still being delivered); the promise of it before.
    pub(crate) fn pipelined_target(&mut self, transform: &[u16]) -> Capability {
        if let Some((path, cap)) = self.sent.as_ref().and_then(|s| s.settled_target.as_ref()) {
            if **path == *transform {
                return cap.clone();
            }
        }
        match self.state.settled_target(transform) {
            Some(payload) if self.returned => {
                let cap = match self.described_at(transform) {
                    Some(described) => described.target,
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

    /// What our `Return` described the capability at `transform` as.
    pub(crate) fn described_at(&self, transform: &[u16]) -> Option<Described> {
        let described = &self.sent.as_ref()?.described;
        if described.is_empty() {
            return None;
        }
        let payload = match self.state.result()? {
            Ok(payload) => payload,
            Err(_) => return None,
        };
        let index = payload.cap_index_at(transform).ok()?;
        described.get(index)?.clone()
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

/// One of our exports.
pub(crate) struct ExportEntry {
    /// What calls on the export go to until it is resolved.
    pub(crate) cap: Capability,
    /// For a promise: the wait for its resolution.
    pub(crate) resolving: Option<Resolving>,
    /// What its `Resolve` described it as, once sent.
    pub(crate) resolved: Option<Described>,
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
            Some(described) => described.target.clone(),
            None => self.cap.clone(),
        }
    }
}

/// What waits for an embargo we started.
pub(crate) enum EmbargoWaiter {
    /// Calls on a path into the results of one of our questions.
    Pipelined(Weak<CallState>, Arc<[u16]>),
    /// Calls on a promise the peer exported to us.
    Promise(Weak<PromiseImport>),
}

impl EmbargoWaiter {
    /// The embargo is over: the waiting calls go on.
    pub(crate) fn lift(self) {
        match self {
            EmbargoWaiter::Pipelined(state, path) => {
                if let Some(state) = state.upgrade() {
                    state.lift_embargo(&path);
                }
            }
            EmbargoWaiter::Promise(promise) => {
                if let Some(promise) = promise.upgrade() {
                    promise.lift_embargo();
                }
            }
        }
    }
}

/// One import, while the peer's export is referenced here.
pub(crate) struct ImportEntry {
    /// The local reference, shared by every capability for this import.
    pub(crate) local: Weak<ImportRef>,
    /// Which reference is current (see [`ImportRef::generation`]).
    pub(crate) generation: u64,
    /// For a `senderPromise` import: the promise, which a `Resolve` settles.
    pub(crate) promise: Option<Weak<PromiseImport>>,
}

/// The actor of one connection.
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
    /// Most questions the peer may leave open.
    pub(crate) max_answers: usize,
    /// Most of the peer's exports we hold.
    pub(crate) max_imports: usize,
    /// Most of the peer's calls waiting on one answer (and most of its
    /// Disembargos waiting on the connection).
    pub(crate) max_pipelined: usize,
    /// The peer's `Disembargo{senderLoopback}`s waiting to be reflected.
    pub(crate) reflections_waiting: usize,
    /// The flow limit on the peer's calls: what may be handled now, what
    /// waits (F-05, F-07).
    pub(crate) gate: FlowGate<inbound::Received>,
    /// Our questions.
    pub(crate) questions: QuestionTable<QuestionEntry>,
    /// Question ids by caller key.
    pub(crate) question_ids: HashMap<u64, u32>,
    /// The peer's questions.
    pub(crate) answers: PeerTable<AnswerEntry>,
    /// Our exports.
    pub(crate) exports: ExportTable<ExportEntry, ExportKey>,
    /// Export identities for capabilities that have none of their own.
    pub(crate) next_anonymous_export: u64,
    /// The peer's exports that we hold.
    pub(crate) imports: ImportTable<ImportEntry>,
    /// Cumulative protocol counts, for [`Stats`].
    pub(crate) counts: ConnStats,
    /// Embargoes we started, until the peer reflects them.
    pub(crate) embargoes: EmbargoTable<EmbargoWaiter>,
    /// Generations for import references.
    pub(crate) next_generation: u64,
    /// This actor's own address, for the imports it hands out.
    pub(crate) self_addr: Option<Addr<ConnActor>>,
    /// This connection as capabilities and calls see it; dropped at
    /// teardown.
    pub(crate) link: Option<LinkRef>,
    /// The same, shared by the answer actors (cloning an `Addr` allocates;
    /// cloning this does not).
    pub(crate) answer_conn: Rc<Recipient<ReturnReady>>,
    /// Why the connection is ending, once it is.
    pub(crate) closing: Option<Error>,
    /// Whoever waits for the end.
    pub(crate) watchers: Vec<oneshot::Sender<Error>>,
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
            let id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
            ConnActor {
                id,
                main,
                limits,
                writer: Some(tx),
                backpressure,
                send_buffer_size: options.send_buffer_size,
                max_answers: options.max_answers,
                max_imports: options.max_imports,
                max_pipelined: options.max_pipelined,
                reflections_waiting: 0,
                gate: FlowGate::new(options.flow_limit),
                questions: QuestionTable::new(),
                question_ids: HashMap::new(),
                answers: PeerTable::new(),
                exports: ExportTable::new(),
                next_anonymous_export: 1 << 63,
                imports: ImportTable::new(),
                embargoes: EmbargoTable::new(),
                counts: ConnStats::default(),
                next_generation: 0,
                self_addr: Some(ctx.address()),
                link: Some(Arc::new(ConnLink {
                    id,
                    conn: ctx.address(),
                })),
                answer_conn: Rc::new(ctx.address().recipient()),
                closing: None,
                watchers: Vec::new(),
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

    /// Starts the actor of question `key`, which delivers its answer to
    /// `state`.
    pub(crate) fn start_question(
        &self,
        state: &Arc<CallState>,
        key: u64,
        ctx: &mut Context<Self>,
    ) -> Addr<QuestionActor> {
        QuestionActor::new(
            Arc::downgrade(state),
            ctx.address().recipient(),
            self.id,
            key,
        )
        .start()
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
            self.write(&capnp_actix_proto::message::abort(&reason));
        }
        self.end(reason, ctx);
    }

    /// Tears the connection down (see `teardown`).
    fn teardown(&mut self) {
        let reason = self
            .closing
            .clone()
            .unwrap_or_else(|| Error::disconnected("the connection was closed"));
        teardown::tear_down(self, reason);
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
        let id = self.questions.insert(QuestionEntry {
            key: Some(key),
            actor: Some(self.start_question(&state, key, ctx)),
            param_exports: Vec::new(),
        });
        self.question_ids.insert(key, id);
        if let Some(link) = &self.link {
            state.set_remote(link, key);
        }
        self.write(&capnp_actix_proto::message::bootstrap(id));
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

/// Gives a receiver that yields why the connection ended, once it has.
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

/// The sizes of a connection's tables.
///
/// ```no_run
/// # async fn f(conn: actix::Addr<capnp_actix::ConnActor>) {
/// let stats = conn.send(capnp_actix::Stats).await.unwrap();
/// assert_eq!(stats.questions, 0);
/// # }
/// ```
#[derive(Message)]
#[rtype(result = "ConnStats")]
pub struct Stats;

/// Table sizes of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, actix::MessageResponse)]
pub struct ConnStats {
    /// Our questions whose ids are in use.
    pub questions: usize,
    /// The peer's questions whose ids are in use.
    pub answers: usize,
    /// Our exports.
    pub exports: usize,
    /// The peer's exports we hold.
    pub imports: usize,
    /// `Resolve` messages sent so far.
    pub resolves_sent: u64,
    /// `Resolve` messages received so far.
    pub resolves_received: u64,
    /// Embargoes started so far (`Disembargo{senderLoopback}` sent).
    pub embargoes_started: u64,
    /// Bytes waiting for the transport.
    pub queued_bytes: usize,
    /// Bytes of params of the peer's calls that have not returned.
    pub inbound_bytes: usize,
}

impl Handler<Stats> for ConnActor {
    type Result = ConnStats;

    fn handle(&mut self, _msg: Stats, _ctx: &mut Context<Self>) -> ConnStats {
        ConnStats {
            questions: self.questions.len(),
            answers: self.answers.len(),
            exports: self.exports.len(),
            imports: self.imports.len(),
            queued_bytes: self.backpressure.queued(),
            inbound_bytes: self.gate.running(),
            ..self.counts
        }
    }
}

/// The connection as calls and capabilities reach it: each method posts a
/// message to the actor.
struct ConnLink {
    /// The connection's id.
    id: u64,
    /// Its actor.
    conn: Addr<ConnActor>,
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
pub(crate) fn cancel_answer(actor: &Addr<AnswerActor>) {
    actor.do_send(CancelAnswer { report: false });
}

/// Questions of a connection that is going away get this.
pub(crate) fn fail_question(actor: &Addr<QuestionActor>, reason: &Error) {
    actor.do_send(Returned(Err(reason.clone()), false, false));
}
