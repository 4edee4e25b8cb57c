//! [`Capability`]: a reference to an object, local or remote, that can be
//! called from any thread.
//!
//! A capability is one of: an object hosted in this process (its
//! `ExportActor`), an import from a connection, a
//! promise for a capability inside a call's results, a broken capability,
//! or null. Callers do not need to know which: [`Capability::new_call`]
//! works the same on all of them.
//!
//! A promise import ([`PromiseImport`], a `senderPromise` from the peer)
//! lives here too: calls go to the peer's promise until its `Resolve`
//! arrives, then to what it resolved to; if calls went to the peer and the
//! resolution requires it, new calls wait for an embargo, so that they
//! cannot overtake the ones still on their way back (E-order).

use crate::call::KeepAlive;
use crate::call::{
    send_call, CallState, CallTarget, Deliver, LinkRef, ObjectActor, OutCall, PendingCall, Queued,
};
use capnp_actix_proto::embargo::{after_resolution, AfterResolution, Resolution};
use capnp_actix_proto::Error;
use futures::channel::oneshot;
use std::sync::{Arc, Mutex, MutexGuard};

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
/// use capnp_actix::Error;
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
    pub(crate) actor: Box<dyn ObjectActor>,
    /// Identity, so that exporting the same object twice reuses its id.
    pub(crate) id: u64,
}

impl Drop for LocalRef {
    fn drop(&mut self) {
        // The object goes; its actor hosts the next one.
        self.actor.unhost();
    }
}

/// A local reference to an import; dropping the last one releases the
/// import on the wire.
pub(crate) struct ImportRef {
    /// The connection the import belongs to.
    pub(crate) link: LinkRef,
    /// The peer's export id.
    pub(crate) import_id: u32,
    /// Distinguishes this reference from an older one for the same id that
    /// was dropped while the peer sent the id again.
    pub(crate) generation: u64,
}

impl Drop for ImportRef {
    fn drop(&mut self) {
        self.link.import_dropped(self.import_id, self.generation);
    }
}

impl Capability {
    /// For a capability in a call's results (a pipelined one, as a
    /// bootstrap capability is until its `Return`): a receiver that yields
    /// the call's outcome once it has one.
    pub(crate) fn question_settled(
        &self,
    ) -> Option<oneshot::Receiver<Result<Arc<crate::payload::Payload>, Error>>> {
        match &self.kind {
            CapKind::Pipelined { call, .. } => Some(call.wait()),
            _ => None,
        }
    }

    /// The id of the connection this capability is an import of, if it is
    /// one.
    pub(crate) fn import_link_id(&self) -> Option<u64> {
        match &self.kind {
            CapKind::Import(import) => Some(import.link.id()),
            _ => None,
        }
    }

    /// The streaming flow control of the connection calls on this
    /// capability go to, once known.
    pub(crate) fn flow_control(&self) -> Option<capnp_actix_proto::stream::FlowControl> {
        match &self.kind {
            CapKind::Import(import) => Some(import.link.flow_control()),
            CapKind::Promise(promise) => promise.import_link().map(|l| l.flow_control()),
            CapKind::Pipelined { call, .. } => call.remote().map(|r| r.link.flow_control()),
            _ => None,
        }
    }

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
    /// let cap = Capability::broken(capnp_actix::Error::failed("no"));
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

    pub(crate) fn local(actor: Box<dyn ObjectActor>, id: u64) -> Capability {
        Capability {
            kind: CapKind::Local(Arc::new(LocalRef { actor, id })),
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
                if !local.actor.connected() {
                    state.resolve(Err(Error::disconnected("the object's actor has stopped")));
                    return;
                }
                local.actor.deliver(Deliver::new(call, state));
            }
            CapKind::Import(import) => {
                send_call(
                    &import.link,
                    CallTarget::Import(import.import_id),
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
    pub(crate) fn resolution_from(&self, conn: u64) -> Resolution {
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
    pub(crate) fn embargo_after(&self, resolution: Resolution, conn: u64) -> bool {
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

    /// Whether following this capability's resolutions reaches `promise`
    /// (a chain longer than any real one counts as reaching it).
    pub(crate) fn leads_to(&self, promise: &Arc<PromiseImport>) -> bool {
        let mut cap = self.clone();
        for _ in 0..MAX_RESOLUTION_DEPTH {
            let CapKind::Promise(next) = &cap.kind else {
                return false;
            };
            if Arc::ptr_eq(next, promise) {
                return true;
            }
            match next.resolved_to() {
                Some(resolution) => cap = resolution,
                None => return false,
            }
        }
        true
    }

    /// Whether calls on this capability go to the peer of `conn` (so that
    /// the peer orders them itself, and no embargo is needed).
    pub(crate) fn is_hosted_by_peer_of(&self, conn: u64) -> bool {
        let mut cap = self.clone();
        for _ in 0..MAX_RESOLUTION_DEPTH {
            cap = match &cap.kind {
                CapKind::Import(import) => return import.link.id() == conn,
                CapKind::Promise(promise) => match promise.resolution() {
                    Some(resolved) => resolved,
                    None => return promise.import().is_some_and(|i| i.link.id() == conn),
                },
                CapKind::Pipelined { call, transform } => match call.settled_path(transform) {
                    Some(Ok(payload)) => payload.cap_at(transform),
                    Some(Err(_)) => return false,
                    None => return call.remote().is_some_and(|r| r.link.id() == conn),
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
                i.import_id,
                i.link.id()
            ),
            CapKind::Pipelined { transform, .. } => {
                write!(f, "Capability(pipelined {transform:?})")
            }
        }
    }
}

/// The mutable part of a promise import.
struct PromiseInner {
    /// The peer's promise export, until the promise resolves.
    import: Option<Arc<ImportRef>>,
    /// Whether any call went to the peer's promise.
    calls_sent: bool,
    /// What the promise resolved to, once it has.
    resolution: Option<Capability>,
    /// Whether new calls wait for an embargo to lift.
    embargoed: bool,
    /// The calls waiting for it (and, while the embargo lifts, the ones
    /// made meanwhile).
    queue: Vec<Queued>,
    /// Who waits for the resolution.
    waiters: Vec<oneshot::Sender<Capability>>,
}

/// A promise the peer exported to us.
pub(crate) struct PromiseImport {
    /// Guarded by a mutex: capabilities are used from any thread.
    inner: Mutex<PromiseInner>,
}

impl PromiseImport {
    /// The connection of the peer's promise, until it resolves.
    pub(crate) fn import_link(&self) -> Option<LinkRef> {
        self.lock()
            .import
            .as_ref()
            .map(|import| import.link.clone())
    }

    pub(crate) fn new(import: Arc<ImportRef>) -> Arc<PromiseImport> {
        Arc::new(PromiseImport {
            inner: Mutex::new(PromiseInner {
                import: Some(import),
                calls_sent: false,
                resolution: None,
                embargoed: false,
                queue: Vec::new(),
                waiters: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PromiseInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The peer's promise export, while unresolved.
    pub(crate) fn import(&self) -> Option<Arc<ImportRef>> {
        self.lock().import.clone()
    }

    /// What the promise resolved to, once it has and any embargo lifted:
    /// until then, only the calls held back may know.
    pub(crate) fn resolution(&self) -> Option<Capability> {
        let inner = self.lock();
        if inner.embargoed {
            return None;
        }
        inner.resolution.clone()
    }

    /// Delivers a call made on the promise.
    pub(crate) fn deliver(&self, call: OutCall, state: &Arc<CallState>) {
        let mut inner = self.lock();
        if inner.embargoed {
            inner.queue.push(Queued::new(call, state));
            return;
        }
        if let Some(target) = inner.resolution.clone() {
            drop(inner);
            target.deliver(call, state);
            return;
        }
        let Some(import) = inner.import.clone() else {
            drop(inner);
            state.resolve(Err(capnp_actix_proto::Error::failed(
                "promise has neither a target nor a resolution",
            )));
            return;
        };
        inner.calls_sent = true;
        // Sent under the lock: a resolution cannot slip between the check
        // and the send.
        send_call(
            &import.link,
            CallTarget::Import(import.import_id),
            call,
            state,
        );
    }

    /// What the promise resolved to, embargoed or not.
    fn resolved_to(&self) -> Option<Capability> {
        self.lock().resolution.clone()
    }

    /// Takes the fact that calls went to the peer through a promise that
    /// resolved to this one (P-17).
    pub(crate) fn take_calls_sent(&self) -> HandedOn {
        let mut inner = self.lock();
        match &inner.resolution {
            None => {
                inner.calls_sent = true;
                HandedOn::Taken
            }
            Some(_) if inner.embargoed => HandedOn::Embargoed,
            Some(resolution) => HandedOn::Resolved(resolution.clone()),
        }
    }

    /// Resolves the promise. Gives whether an embargo started (calls went
    /// to the peer and `needs_embargo` holds for the resolution), and the
    /// reference to the peer's promise export, to drop once any
    /// `Disembargo` is written.
    pub(crate) fn resolve(
        &self,
        resolution: Capability,
        needs_embargo: impl Fn(&Capability) -> bool,
    ) -> (bool, Option<Arc<ImportRef>>) {
        // Decided without the lock (it may look at other capabilities);
        // decided again if a call went out meanwhile.
        let mut decided: Option<(bool, bool)> = None;
        let (mut inner, embargo) = loop {
            let inner = self.lock();
            if inner.resolution.is_some() {
                return (false, None);
            }
            match decided {
                Some((sent, embargo)) if sent == inner.calls_sent => break (inner, embargo),
                _ => {}
            }
            let sent = inner.calls_sent;
            drop(inner);
            decided = Some((sent, sent && needs_embargo(&resolution)));
        };
        inner.embargoed = embargo;
        inner.resolution = Some(resolution.clone());
        let import = inner.import.take();
        let waiters = if embargo {
            Vec::new()
        } else {
            std::mem::take(&mut inner.waiters)
        };
        drop(inner);
        for waiter in waiters {
            let _ = waiter.send(resolution.clone());
        }
        (embargo, import)
    }

    /// Lifts the embargo: waiting calls go to the resolution, in order,
    /// before any new call can.
    pub(crate) fn lift_embargo(&self) {
        loop {
            let (target, queue) = {
                let mut inner = self.lock();
                let Some(target) = inner.resolution.clone() else {
                    return;
                };
                if inner.queue.is_empty() {
                    inner.embargoed = false;
                    let waiters = std::mem::take(&mut inner.waiters);
                    drop(inner);
                    for waiter in waiters {
                        let _ = waiter.send(target.clone());
                    }
                    return;
                }
                (target, std::mem::take(&mut inner.queue))
            };
            // Delivered without the lock; calls made meanwhile queue behind.
            for queued in queue {
                queued.deliver_to(&target);
            }
        }
    }

    /// A receiver for the resolution.
    pub(crate) fn wait(&self) -> oneshot::Receiver<Capability> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        match &inner.resolution {
            Some(cap) if !inner.embargoed => {
                let _ = tx.send(cap.clone());
            }
            _ => inner.waiters.push(tx),
        }
        rx
    }
}
