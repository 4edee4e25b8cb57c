//! [`ConnOptions`]: how a connection behaves (its bootstrap capability and
//! its limits), with the defaults.

use crate::capability::Capability;
use capnp_actix_proto::frame::Limits;
use capnp_actix_proto::stream::FlowControl;
use std::sync::Arc;
use std::time::Duration;

/// Where a connection's bootstrap capability comes from.
#[derive(Clone)]
pub(super) enum BootstrapSource {
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
    pub(super) bootstrap: Option<BootstrapSource>,
    /// Limits on inbound messages and on what we send.
    pub(super) limits: Limits,
    /// How many bytes may wait for the transport before new calls fail.
    pub(super) send_buffer_size: usize,
    /// How many bytes of params the peer's unreturned calls may hold before
    /// we stop reading.
    pub(super) flow_limit: usize,
    /// How many questions the peer may leave open.
    pub(super) max_answers: usize,
    /// How many of the peer's exports we hold at most.
    pub(super) max_imports: usize,
    /// How many of the peer's calls may wait on one of its answers.
    pub(super) max_pipelined: usize,
    /// The deadline of every call sent on the connection.
    pub(super) call_timeout: Option<Duration>,
    /// The flow control of streaming calls sent on the connection.
    pub(super) flow_control: FlowControl,
    /// What a `Finish` does to the peer's running calls.
    pub(super) cancellation: Cancellation,
}

/// What a peer's `Finish` does to its call while the method still runs.
///
/// ```
/// use capnp_actix::{Cancellation, ConnOptions};
/// let options = ConnOptions::new().cancellation(Cancellation::RunToCompletion);
/// assert_eq!(Cancellation::default(), Cancellation::OnFinish);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cancellation {
    /// The method is cancelled: its future is dropped at its next
    /// `.await`, and the peer gets a `canceled` Return (capnp-rpc's
    /// behaviour, and the Rust norm).
    #[default]
    OnFinish,
    /// The method runs to completion, and its results are dropped (the C++
    /// reference 1.x's default), unless it called
    /// [`crate::allow_cancellation`]: then it is cancelled as with
    /// `OnFinish`.
    RunToCompletion,
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
            call_timeout: None,
            flow_control: FlowControl::default(),
            cancellation: Cancellation::OnFinish,
        }
    }
}

/// The default of [`ConnOptions::send_buffer_size`]: 64 MiB.
///
/// ```
/// assert_eq!(capnp_actix::DEFAULT_SEND_BUFFER_SIZE, 64 << 20);
/// ```
pub const DEFAULT_SEND_BUFFER_SIZE: usize = 64 << 20;

/// The default of [`ConnOptions::flow_limit`]: 64 MiB.
///
/// ```
/// assert_eq!(capnp_actix::DEFAULT_FLOW_LIMIT, 64 << 20);
/// ```
pub const DEFAULT_FLOW_LIMIT: usize = 64 << 20;

/// The default of [`ConnOptions::max_answers`].
///
/// ```
/// assert_eq!(capnp_actix::DEFAULT_MAX_ANSWERS, 65536);
/// ```
pub const DEFAULT_MAX_ANSWERS: usize = 65536;

/// The default of [`ConnOptions::max_imports`].
///
/// ```
/// assert_eq!(capnp_actix::DEFAULT_MAX_IMPORTS, 65536);
/// ```
pub const DEFAULT_MAX_IMPORTS: usize = 65536;

/// The default of [`ConnOptions::max_pipelined`].
///
/// ```
/// assert_eq!(capnp_actix::DEFAULT_MAX_PIPELINED, 16384);
/// ```
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

    /// A deadline for every call sent on this connection (to the peer's
    /// capabilities): one that has not returned within `timeout` fails with
    /// an `overloaded` error naming the deadline ("deadline exceeded ...
    /// (call_timeout)"), and `Finish` goes to the peer, which cancels it.
    /// A call given a deadline of its own ([`crate::PendingCall::timeout`])
    /// has that one instead, longer or shorter; [`crate::within`] bounds
    /// what the caller waits for on top of this. Default: none.
    ///
    /// ```
    /// let options = capnp_actix::ConnOptions::new()
    ///     .call_timeout(std::time::Duration::from_secs(30));
    /// ```
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// How the streaming calls (`-> stream`) sent on this connection are
    /// paced: how many bytes of each capability's streaming calls may be in
    /// flight before a streaming send waits. Default:
    /// [`FlowControl::Adaptive`] with its default settings, a window that
    /// follows the path's bandwidth-delay product (at most 16 MiB).
    ///
    /// ```
    /// use capnp_actix::{Adaptive, ConnOptions, FlowControl};
    /// // The adaptive window, with at most 4 MiB in flight:
    /// let options = ConnOptions::new()
    ///     .flow_control(FlowControl::Adaptive(Adaptive::default().max_window(4 << 20)));
    /// ```
    pub fn flow_control(mut self, flow_control: FlowControl) -> Self {
        self.flow_control = flow_control;
        self
    }

    /// A fixed window of `bytes` for the streaming calls sent on this
    /// connection, as the peers have (capnp-rpc: 64 KiB): the bytes in
    /// flight may pass it by the largest call. Short for
    /// `flow_control(FlowControl::Fixed(bytes))`.
    ///
    /// ```
    /// let options = capnp_actix::ConnOptions::new().stream_window(1 << 20);
    /// ```
    pub fn stream_window(self, bytes: usize) -> Self {
        self.flow_control(FlowControl::Fixed(bytes.max(1)))
    }

    /// What the peer's `Finish` does to its calls whose methods still run
    /// (see [`Cancellation`]). Default: [`Cancellation::OnFinish`].
    ///
    /// ```
    /// use capnp_actix::{Cancellation, ConnOptions};
    /// let options = ConnOptions::new().cancellation(Cancellation::RunToCompletion);
    /// ```
    pub fn cancellation(mut self, cancellation: Cancellation) -> Self {
        self.cancellation = cancellation;
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
