//! [`Capability`]: a reference to an object, local or remote, that can be
//! called from any thread.
//!
//! A capability is one of: an object hosted in this process (its
//! [`ExportActor`](crate::ExportActor)), an import from a connection, a
//! promise for a capability inside a call's results, a broken capability,
//! or null. Callers do not need to know which: [`Capability::new_call`]
//! works the same on all of them.

use crate::call::KeepAlive;
use crate::call::{CallState, OutCall, PendingCall};
use crate::conn::{ConnActor, ImportDropped};
use crate::export::{Deliver, ExportActor};
use crate::payload::Body;
use crate::promise::PromiseImport;
use actix::Addr;
use capnp::any_pointer;
use capnp_actix_proto::embargo::{after_resolution, AfterResolution, Resolution};
use capnp_actix_proto::rpc_capnp::message;
use capnp_actix_proto::Error;
use std::sync::Arc;

/// The longest chain of promises followed when resolving a capability;
/// longer chains are treated as cycles.
pub(crate) const MAX_RESOLUTION_DEPTH: u32 = 64;

thread_local! {
    /// How deep `deliver` is in following promises, on this thread.
    static DELIVER_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A reference to a capability; cheap to clone, `Send + Sync`.
///
/// ```
/// use capnp_actix::Capability;
/// use capnp_actix_proto::Error;
/// let broken = Capability::broken(Error::failed("gone"));
/// let copy = broken.clone();
/// fn is_send_sync<T: Send + Sync>(_: &T) {}
/// is_send_sync(&copy);
/// ```
#[derive(Clone)]
pub struct Capability {
    /// What the reference points at.
    pub(crate) kind: CapKind,
}

/// The kinds of capability reference.
#[derive(Clone)]
pub(crate) enum CapKind {
    /// The null capability: every call fails.
    Null,
    /// A capability that failed: every call fails with this error.
    Broken(Error),
    /// An object hosted in this process.
    Local(Arc<LocalRef>),
    /// An object the peer of a connection exported to us.
    Import(Arc<ImportRef>),
    /// A promise the peer of a connection exported to us.
    Promise(Arc<PromiseImport>),
    /// The capability at `transform` in the results of a call.
    Pipelined {
        /// The call whose results hold the capability.
        call: Arc<CallState>,
        /// Pointer fields to follow from the results' root.
        transform: Arc<[u16]>,
    },
}

/// What became of "calls went to the peer through this" handed on to a
/// promise (see [`Capability::embargo_after`]).
pub(crate) enum HandedOn {
    /// The promise is unresolved and took it: it decides when it resolves.
    Taken,
    /// The promise resolved and is under an embargo of its own: calls
    /// must wait too.
    Embargoed,
    /// The promise resolved to this: decide as if resolved to it directly.
    Resolved(Capability),
}

/// A strong reference to a local object's actor; the object lives while
/// any capability (or export) holds one.
pub(crate) struct LocalRef {
    /// The actor hosting the object.
    pub(crate) addr: Addr<ExportActor>,
    /// Identity, so that exporting the same object twice reuses its id.
    pub(crate) id: u64,
}

/// A local reference to an import; dropping the last one releases the
/// import on the wire.
pub(crate) struct ImportRef {
    /// The connection the import belongs to.
    pub(crate) conn: Addr<ConnActor>,
    /// Which connection, to tell its imports apart from another's.
    pub(crate) conn_id: u64,
    /// The peer's export id.
    pub(crate) import_id: u32,
    /// Distinguishes this reference from an older one for the same id that
    /// was dropped while the peer sent the id again.
    pub(crate) generation: u64,
}

impl Drop for ImportRef {
    fn drop(&mut self) {
        self.conn.do_send(ImportDropped {
            import_id: self.import_id,
            generation: self.generation,
        });
    }
}

impl Capability {
    /// The null capability.
    ///
    /// ```
    /// assert!(capnp_actix::Capability::null().is_null());
    /// ```
    pub fn null() -> Capability {
        Capability {
            kind: CapKind::Null,
        }
    }

    /// A capability whose calls all fail with `error`.
    ///
    /// ```
    /// use capnp_actix::Capability;
    /// let cap = Capability::broken(capnp_actix_proto::Error::failed("no"));
    /// assert!(!cap.is_null());
    /// ```
    pub fn broken(error: Error) -> Capability {
        Capability {
            kind: CapKind::Broken(error),
        }
    }

    /// Whether this is the null capability.
    ///
    /// ```
    /// assert!(capnp_actix::Capability::null().is_null());
    /// ```
    pub fn is_null(&self) -> bool {
        matches!(self.kind, CapKind::Null)
    }

    pub(crate) fn local(addr: Addr<ExportActor>, id: u64) -> Capability {
        Capability {
            kind: CapKind::Local(Arc::new(LocalRef { addr, id })),
        }
    }

    pub(crate) fn pipelined(call: Arc<CallState>, transform: Arc<[u16]>) -> Capability {
        Capability {
            kind: CapKind::Pipelined { call, transform },
        }
    }

    /// A key that is equal for two references to the same object, used to
    /// export an object under one id however often it is sent.
    pub(crate) fn identity(&self) -> Option<u64> {
        match &self.kind {
            CapKind::Null | CapKind::Broken(_) => None,
            CapKind::Local(local) => Some(local.id),
            CapKind::Import(import) => Some(Arc::as_ptr(import) as u64),
            CapKind::Promise(promise) => Some(Arc::as_ptr(promise) as u64),
            CapKind::Pipelined { .. } => None,
        }
    }

    /// Starts a call of method `method_id` of interface `interface_id`.
    /// Fill its params with [`Request::params`], then [`Request::send`].
    ///
    /// Typed code does not need this: convert the capability with
    /// [`Capability::client`] and use the generated methods.
    ///
    /// ```
    /// use capnp_actix::Capability;
    /// # actix::System::new().block_on(async {
    /// let cap = Capability::null();
    /// let mut request = cap.new_call(0x1234, 0);
    /// request.params().clear();
    /// let result = request.send().await;
    /// assert!(result.is_err()); // a null capability fails every call
    /// # });
    /// ```
    pub fn new_call(&self, interface_id: u64, method_id: u16) -> Request {
        Request::new(self.clone(), interface_id, method_id)
    }

    /// Sends a prepared call and gives its pending result.
    pub(crate) fn dispatch(&self, call: OutCall) -> PendingCall {
        let state = CallState::new();
        let pending = PendingCall::new(state.clone());
        self.deliver(call, &state);
        pending
    }

    /// Delivers `call` to this capability; its outcome settles `state`.
    pub(crate) fn deliver(&self, call: OutCall, state: &Arc<CallState>) {
        // Promises that resolve to promises are followed here; a chain that
        // long is a cycle a hostile peer built (a path leading to itself).
        let depth = DELIVER_DEPTH.with(|d| d.get());
        if depth >= MAX_RESOLUTION_DEPTH {
            state.resolve(Err(Error::failed(
                "capability resolves through too many promises (a cycle?)",
            )));
            return;
        }
        DELIVER_DEPTH.with(|d| d.set(depth + 1));
        self.deliver_now(call, state);
        DELIVER_DEPTH.with(|d| d.set(depth));
    }

    fn deliver_now(&self, call: OutCall, state: &Arc<CallState>) {
        match &self.kind {
            CapKind::Null => state.resolve(Err(Error::failed("call on a null capability"))),
            CapKind::Broken(e) => state.resolve(Err(e.clone())),
            CapKind::Local(local) => {
                if !local.addr.connected() {
                    state.resolve(Err(Error::disconnected("the object's actor has stopped")));
                    return;
                }
                local.addr.do_send(Deliver::new(call, state));
            }
            CapKind::Import(import) => {
                crate::conn::send_call(
                    &import.conn,
                    crate::conn::CallTarget::Import(import.import_id),
                    call,
                    state,
                );
            }
            CapKind::Promise(promise) => {
                state.hold(KeepAlive::Promise(promise.clone()));
                promise.deliver(call, state)
            }
            CapKind::Pipelined {
                call: parent,
                transform,
            } => {
                state.hold(KeepAlive::Call(parent.clone()));
                parent.pipeline(transform.clone(), call, state)
            }
        }
    }

    /// How this capability, a promise's resolution, looks from `conn` when
    /// the peer's own description of it is not at hand (results made in
    /// this process): the peer's if calls on it go to the peer, ours
    /// otherwise.
    pub(crate) fn resolution_from(&self, conn: &Addr<ConnActor>) -> Resolution {
        if self.is_null_or_broken() {
            return Resolution::Broken;
        }
        if !self.is_hosted_by_peer_of(conn) {
            return Resolution::Reflected;
        }
        match &self.settled().kind {
            CapKind::Promise(_) | CapKind::Pipelined { .. } => Resolution::PeerPromise,
            _ => Resolution::PeerObject,
        }
    }

    /// Whether new calls must wait for an embargo after a promise through
    /// which calls went to the peer of `conn` resolved to this capability,
    /// which `resolution` says what it is. The rule is the core's
    /// ([`after_resolution`]); a promise of the peer's that is still
    /// unresolved inherits the fact that calls went through the peer, and
    /// decides in its turn (P-17).
    pub(crate) fn embargo_after(&self, resolution: Resolution, conn: &Addr<ConnActor>) -> bool {
        let mut cap = self.clone();
        let mut resolution = resolution;
        for _ in 0..MAX_RESOLUTION_DEPTH {
            match after_resolution(resolution, true) {
                AfterResolution::Nothing => return false,
                AfterResolution::Embargo => return true,
                AfterResolution::HandOn => {}
            }
            let handed = match &cap.kind {
                CapKind::Promise(promise) => promise.take_calls_sent(),
                CapKind::Pipelined { call, transform } => call.take_calls_sent(transform),
                _ => return false,
            };
            match handed {
                HandedOn::Taken => return false,
                HandedOn::Embargoed => return true,
                HandedOn::Resolved(next) => {
                    resolution = next.resolution_from(conn);
                    cap = next;
                }
            }
        }
        // A chain this long is a cycle a peer built: hold calls back.
        true
    }

    /// Whether calls on this capability go to the peer of `conn` (so that
    /// the peer orders them itself, and no embargo is needed).
    pub(crate) fn is_hosted_by_peer_of(&self, conn: &Addr<ConnActor>) -> bool {
        let mut cap = self.clone();
        for _ in 0..MAX_RESOLUTION_DEPTH {
            cap = match &cap.kind {
                CapKind::Import(import) => return import.conn == *conn,
                CapKind::Promise(promise) => match promise.resolution() {
                    Some(resolved) => resolved,
                    None => return promise.import().is_some_and(|i| i.conn == *conn),
                },
                CapKind::Pipelined { call, transform } => match call.settled_path(transform) {
                    Some(Ok(payload)) => payload.cap_at(transform),
                    Some(Err(_)) => return false,
                    None => return call.remote().is_some_and(|r| r.conn == *conn),
                },
                CapKind::Null | CapKind::Broken(_) | CapKind::Local(_) => return false,
            };
        }
        false
    }

    /// What this capability has settled to so far: itself unless it is a
    /// promise that settled (and whose embargo, if any, lifted). Gives up
    /// on chains longer than any real one.
    pub(crate) fn settled(&self) -> Capability {
        let mut cap = self.clone();
        for _ in 0..MAX_RESOLUTION_DEPTH {
            let next = match &cap.kind {
                CapKind::Promise(promise) => promise.resolution(),
                CapKind::Pipelined { call, transform } => match call.settled_path(transform) {
                    Some(Ok(payload)) => Some(payload.cap_at(transform)),
                    Some(Err(e)) => Some(Capability::broken(e)),
                    None => None,
                },
                _ => None,
            };
            match next {
                Some(next) => cap = next,
                None => return cap,
            }
        }
        Capability::broken(Error::failed(
            "capability resolves through too many promises (a cycle?)",
        ))
    }

    /// Completes once this capability has settled: it is no promise, or a
    /// promise whose resolution (and any embargo on it) is known, followed
    /// to its end. A promise that breaks has settled too (to a broken
    /// capability), as capnp's `whenResolved` has it.
    pub(crate) async fn when_settled(&self) {
        let mut cap = self.clone();
        for _ in 0..MAX_RESOLUTION_DEPTH {
            cap = match &cap.kind {
                CapKind::Promise(promise) => match promise.wait().await {
                    Ok(next) => next,
                    Err(_) => return, // dropped: the connection is gone
                },
                CapKind::Pipelined { call, transform } => {
                    call.path_settled(transform).await;
                    match call.settled_path(transform) {
                        Some(Ok(payload)) => payload.cap_at(transform),
                        _ => return,
                    }
                }
                _ => return,
            };
        }
    }

    /// Whether calls on this capability would fail without going anywhere
    /// (no embargo is needed for them).
    pub(crate) fn is_null_or_broken(&self) -> bool {
        matches!(self.kind, CapKind::Null | CapKind::Broken(_))
    }
}

impl std::fmt::Debug for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            CapKind::Null => write!(f, "Capability(null)"),
            CapKind::Broken(e) => write!(f, "Capability(broken: {e})"),
            CapKind::Local(l) => write!(f, "Capability(local #{})", l.id),
            CapKind::Promise(_) => write!(f, "Capability(promise import)"),
            CapKind::Import(i) => write!(
                f,
                "Capability(import {} of conn {})",
                i.import_id, i.conn_id
            ),
            CapKind::Pipelined { transform, .. } => {
                write!(f, "Capability(pipelined {transform:?})")
            }
        }
    }
}

/// A call being prepared: its target, method and params.
///
/// ```
/// use capnp_actix::Capability;
/// let mut request = Capability::null().new_call(1, 2);
/// request.params().set_as::<capnp::text::Owned>("hi").unwrap();
/// ```
pub struct Request {
    /// Where the call goes.
    target: Capability,
    /// The method's interface.
    interface_id: u64,
    /// The method's ordinal in the interface.
    method_id: u16,
    /// A `Message{call}` whose params content the caller fills in place.
    message: capnp_actix_proto::message::OutMessage,
    /// Capabilities the caller put in the params, in pointer-index order.
    cap_table: capnp::private::layout::CapTable,
}

impl Request {
    fn new(target: Capability, interface_id: u64, method_id: u16) -> Request {
        let mut message = capnp_actix_proto::message::new_message();
        {
            let mut call = message.init_root::<message::Builder>().init_call();
            call.set_interface_id(interface_id);
            call.set_method_id(method_id);
            call.init_params();
        }
        Request {
            target,
            interface_id,
            method_id,
            message,
            cap_table: Vec::new(),
        }
    }

    /// The params content, to fill in place. Capabilities set in it travel
    /// with the call.
    ///
    /// ```
    /// let mut request = capnp_actix::Capability::null().new_call(1, 2);
    /// request.params().set_as::<capnp::text::Owned>("hello").unwrap();
    /// ```
    pub fn params(&mut self) -> any_pointer::Builder<'_> {
        params_of(&mut self.message, &mut self.cap_table)
    }

    /// Sends the call. The result is a future of the response that also
    /// offers pipelined capabilities before the response arrives.
    ///
    /// ```
    /// # actix::System::new().block_on(async {
    /// let pending = capnp_actix::Capability::null().new_call(1, 2).send();
    /// let promised = pending.pipeline().cap(&[0]);
    /// assert!(pending.await.is_err());
    /// # drop(promised);
    /// # });
    /// ```
    pub fn send(self) -> PendingCall {
        let caps = crate::hooks::capabilities_of(&self.cap_table);
        self.target.dispatch(OutCall {
            interface_id: self.interface_id,
            method_id: self.method_id,
            body: Body::Built(self.message),
            caps,
            return_for: None,
            hops: 0,
        })
    }
}

/// The params content of a `Message{call}` under construction, imbued with
/// `cap_table`.
fn params_of<'a>(
    message: &'a mut capnp_actix_proto::message::OutMessage,
    cap_table: &'a mut capnp::private::layout::CapTable,
) -> any_pointer::Builder<'a> {
    let root: message::Builder = message.get_root().expect("a request holds a Message");
    let call = match root.which() {
        Ok(message::Call(Ok(call))) => call,
        _ => unreachable!("a request's message is always a Call"),
    };
    let mut content = call.get_params().expect("params initialized").get_content();
    capnp::traits::ImbueMut::imbue_mut(&mut content, cap_table);
    content
}
