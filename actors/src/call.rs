//! The caller's side of one call: its state while it runs ([`CallState`]),
//! the future of its response ([`PendingCall`]), the response itself
//! ([`Response`]) and capabilities promised by it ([`Pipeline`]).
//!
//! A call's state lives while anyone cares about it: the pending future,
//! the response, and every pipelined capability hold it. When the last of
//! them goes, its guard goes too, and that cancels a local call or sends
//! `Finish` for a remote question.

use crate::capability::PromiseImport;
use crate::capability::{Capability, HandedOn};
use crate::delivery::Delivery;
use crate::few::Few;
use crate::payload::{Body, Payload};
use actix::{Message, Recipient};
use capnp::any_pointer;
pub(crate) use capnp_actix_proto::connection::Wants;
use capnp_actix_proto::Error;
use futures::channel::oneshot;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

/// Question keys: how a caller names its question before the connection
/// has given it an id. Unique process-wide.
static NEXT_QUESTION_KEY: AtomicU64 = AtomicU64::new(1);

/// A new question key.
pub(crate) fn next_question_key() -> u64 {
    NEXT_QUESTION_KEY.fetch_add(1, Ordering::Relaxed)
}

/// What calls and references need of a connection. Every method posts a
/// message and returns at once (it never blocks), so it may be called with
/// a lock held and from any thread. The connection actor implements it;
/// this module needs nothing else of the connection.
pub(crate) trait Link: Send + Sync {
    /// The connection's id (tells connections apart).
    fn id(&self) -> u64;
    /// Sends `call` to `target` on the peer, as question `key`; its
    /// outcome settles `state`.
    fn send_call(&self, target: CallTarget, call: OutCall, state: Weak<CallState>, key: u64);
    /// The caller let go of question `key`: the connection sends `Finish`.
    fn question_dropped(&self, key: u64);
    /// The last local reference to import `import_id` (of `generation`)
    /// went away: the connection sends `Release`.
    fn import_dropped(&self, import_id: u32, generation: u64);
    /// The flow control of streaming calls sent on the connection.
    fn flow_control(&self) -> capnp_actix_proto::stream::FlowControl;
}

/// A shared handle on a connection.
pub(crate) type LinkRef = Arc<dyn Link>;

/// Where a call goes on the peer.
pub(crate) enum CallTarget {
    /// One of the peer's exports.
    Import(u32),
    /// A capability inside the answer to one of our questions.
    Promised {
        /// The caller's key of that question.
        key: u64,
        /// Pointer fields from the results' root.
        transform: Arc<[u16]>,
    },
}

/// Sends `call` to `target` on the peer of `link`; its outcome settles
/// `state`. Callable from any thread.
pub(crate) fn send_call(link: &LinkRef, target: CallTarget, call: OutCall, state: &Arc<CallState>) {
    let key = next_question_key();
    link.send_call(target, call, Arc::downgrade(state), key);
    // After the call itself, so that calls pipelined on it follow it.
    state.set_remote(link, key);
}

/// The caller-side handle of a question; dropping it finishes the question.
pub(crate) struct QuestionRef {
    /// The connection.
    link: LinkRef,
    /// The question's key.
    key: u64,
    /// The question needs no `Finish` any more (its `Return` said
    /// `noFinishNeeded`): dropping tells the connection nothing.
    finished: bool,
}

impl QuestionRef {
    /// The handle of question `key`, asked on `link`.
    pub(crate) fn new(link: LinkRef, key: u64) -> Self {
        QuestionRef {
            link,
            key,
            finished: false,
        }
    }

    /// The question is finished already: saves the connection a message
    /// (and a turn) when the caller lets go.
    pub(crate) fn mark_finished(&mut self) {
        self.finished = true;
    }
}

impl Drop for QuestionRef {
    fn drop(&mut self) {
        if !self.finished {
            self.link.question_dropped(self.key);
        }
    }
}

/// What a reference to a local object needs of the actor hosting it (the
/// export module implements it for its actor).
pub(crate) trait ObjectActor: Send + Sync {
    /// Sends it a call.
    fn deliver(&self, msg: Deliver);
    /// Tells it the object's last reference went (after every call made
    /// through it).
    fn unhost(&self);
    /// Whether the actor still runs.
    fn connected(&self) -> bool;
}

/// A call delivered to a local object's actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Deliver {
    /// The call; taken when handled.
    pub(crate) call: Option<OutCall>,
    /// Where its outcome goes; gone if the caller lost interest.
    pub(crate) state: Weak<CallState>,
}

impl Deliver {
    pub(crate) fn new(call: OutCall, state: &Arc<CallState>) -> Deliver {
        state.delivery.on_its_way();
        Deliver {
            call: Some(call),
            state: Arc::downgrade(state),
        }
    }
}

impl Drop for Deliver {
    fn drop(&mut self) {
        // Dropped undelivered (the actor stopped first): the caller must
        // not wait forever.
        if self.call.is_some() {
            if let Some(state) = self.state.upgrade() {
                state.resolve(Err(Error::disconnected("the object's actor has stopped")));
            }
        }
    }
}

/// A call on its way to a capability.
pub(crate) struct OutCall {
    /// The method's interface.
    pub(crate) interface_id: u64,
    /// The method's ordinal.
    pub(crate) method_id: u16,
    /// The `Message{call}` whose params content carries the arguments.
    pub(crate) body: Body,
    /// The params' cap table.
    pub(crate) caps: Vec<Option<Capability>>,
    /// The connection and answer id of the inbound call this is, if it is
    /// one: a local object then builds its results as that answer's
    /// `Return`, which can go out without a copy.
    pub(crate) return_for: Option<(u64, u32)>,
    /// How many times the call waited in a queue (for results, or behind
    /// an embargo) and was delivered again: bounded, so that a path a peer
    /// made lead back to itself fails the call instead of cycling.
    pub(crate) hops: u32,
    /// What the caller wants of the results (to a peer, what its `Call`
    /// says: P-13, P-14).
    pub(crate) wants: Wants,
}

impl OutCall {
    /// The params as a payload, for delivery to a local object.
    pub(crate) fn into_payload(self) -> Payload {
        Payload {
            body: self.body,
            caps: self.caps,
            return_for: None,
        }
    }
}

/// What ends a call when its state is dropped.
enum Guard {
    /// Dropping the sender tells the local object's task to stop the call.
    Local(#[allow(dead_code)] oneshot::Sender<()>),
    /// Dropping the question reference sends `Finish`.
    Remote(#[allow(dead_code)] QuestionRef),
}

/// What a call keeps alive until it settles: the promise it was made on.
/// A call pipelined on another call keeps that call going (and its question
/// open) even when nothing else wants it any more.
pub(crate) enum KeepAlive {
    /// The call whose results hold the target.
    Call(#[allow(dead_code)] Arc<CallState>),
    /// The peer's promise the call was made on.
    Promise(#[allow(dead_code)] Arc<PromiseImport>),
}

/// A call waiting for its target to be known (or for an embargo to lift).
pub(crate) struct Queued {
    /// The call itself.
    pub(crate) call: OutCall,
    /// Its state; gone if its caller lost interest meanwhile.
    pub(crate) state: Weak<CallState>,
}

impl Queued {
    pub(crate) fn new(call: OutCall, state: &Arc<CallState>) -> Queued {
        Queued {
            call,
            state: Arc::downgrade(state),
        }
    }

    /// Delivers the call to `target`, unless its caller lost interest.
    pub(crate) fn deliver_to(mut self, target: &Capability) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        self.call.hops += 1;
        if self.call.hops > crate::capability::MAX_RESOLUTION_DEPTH {
            state.resolve(Err(Error::failed(
                "capability resolves through too many promises (a cycle?)",
            )));
            return;
        }
        target.deliver(self.call, &state);
    }
}

/// An embargo on one pipeline path of a question: calls made on the path
/// are held by the question's actor until it lifts.
struct Embargo {
    /// Who holds the calls.
    holder: EmbargoHolder,
    /// How many calls went to the holder: the embargo ends only once it
    /// took them all, so that none still on its way is overtaken.
    posted: u64,
    /// Who waits for the path to be usable (promise exports of it).
    waiters: Vec<oneshot::Sender<()>>,
}

/// Who holds the calls made on a question's paths under embargo: the
/// question's actor.
#[derive(Clone)]
pub(crate) struct EmbargoHolder {
    /// The actor.
    pub(crate) actor: Recipient<Held>,
    /// The question's key, which the actor knows it by.
    pub(crate) key: u64,
    /// The question's state.
    pub(crate) question: Weak<CallState>,
}

/// A call made on a path of question `key` under embargo, for the
/// question's actor to hold (see `question.rs`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Held {
    /// The question's key.
    pub(crate) key: u64,
    /// The path.
    pub(crate) path: Arc<[u16]>,
    /// The question's state.
    pub(crate) question: Weak<CallState>,
    /// The call; taken when handled.
    pub(crate) call: Option<Queued>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Dropped unhandled (the actor stopped): the call goes on to the
        // path's target rather than wait for an embargo no one will lift.
        if let (Some(call), Some(question)) = (self.call.take(), self.question.upgrade()) {
            call.deliver_to(&question.path_target(&self.path));
        }
    }
}

/// Where a remote call went.
#[derive(Clone)]
pub(crate) struct Remote {
    /// The connection.
    pub(crate) link: LinkRef,
    /// The caller's key of the question.
    pub(crate) key: u64,
}

/// The mutable part of a call's state.
struct Inner {
    /// The outcome, once known.
    result: Option<Result<Arc<Payload>, Error>>,
    /// Set when the call went to a connection: until the `Return`, calls
    /// pipelined on it go to the peer at once (promisedAnswer targets).
    remote: Option<Remote>,
    /// Pipeline paths that carried calls to the peer before the `Return`:
    /// if one resolves to a capability the peer does not host, calls on it
    /// wait for an embargo.
    sent_paths: HashSet<Arc<[u16]>>,
    /// Paths under embargo, with the calls waiting for it to lift.
    embargoed: HashMap<Arc<[u16]>, Embargo>,
    /// Calls pipelined on a local call that has not returned yet (and,
    /// while `draining`, the ones made meanwhile).
    queued: Vec<(Arc<[u16]>, Queued)>,
    /// The outcome (or an early pipeline) is known and `queued` is being
    /// delivered: new calls join the queue so as not to overtake it.
    draining: bool,
    /// Results a local server published for pipelining before returning
    /// (`set_pipeline`): calls pipelined on the call go to them until the
    /// outcome is known.
    early: Option<Arc<Payload>>,
    /// Futures waiting for the outcome.
    waiters: Vec<oneshot::Sender<Result<Arc<Payload>, Error>>>,
    /// Tasks polling a [`PendingCall`] of this call, to wake with the
    /// outcome (cheaper than a channel per call).
    wakers: Few<Waker>,
    /// Ends the call when the state is dropped.
    guard: Option<Guard>,
    /// What this call keeps alive until it settles.
    holds: Few<KeepAlive>,
    /// The caller gave the call a deadline of its own, which replaces the
    /// connection's default.
    own_deadline: bool,
    /// The method allowed its own cancellation ([`crate::allow_cancellation`]).
    cancellable: bool,
}

/// The state of one call, shared by everything that waits on it.
pub(crate) struct CallState {
    /// Guarded by a mutex: capabilities are used from any thread. The lock
    /// is never held while calling into another state, except to send a
    /// message (which never blocks).
    inner: Mutex<Inner>,
    /// How far the call got towards its method, and whether its caller
    /// left.
    pub(crate) delivery: Delivery,
}

impl CallState {
    pub(crate) fn new() -> Arc<CallState> {
        Arc::new(CallState {
            inner: Mutex::new(Inner {
                result: None,
                remote: None,
                sent_paths: HashSet::new(),
                embargoed: HashMap::new(),
                queued: Vec::new(),
                draining: false,
                early: None,
                waiters: Vec::new(),
                wakers: Few::default(),
                guard: None,
                holds: Few::default(),
                own_deadline: false,
                cancellable: false,
            }),
            delivery: Delivery::default(),
        })
    }

    /// A state that already holds its outcome.
    pub(crate) fn settled(result: Result<Arc<Payload>, Error>) -> Arc<CallState> {
        let state = CallState::new();
        state.lock().result = Some(result);
        state
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug of ours; the state stays
        // usable for everyone else.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Arms cancellation for a local call: the receiver completes when the
    /// state is dropped.
    pub(crate) fn guard_local(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.lock().guard = Some(Guard::Local(tx));
        rx
    }

    /// Keeps `what` alive until this call settles.
    pub(crate) fn hold(&self, what: KeepAlive) {
        let mut inner = self.lock();
        if inner.result.is_none() {
            inner.holds.push(what);
        }
    }

    /// Records that the call went to a connection as question `key`, and
    /// forwards the calls that were waiting on it.
    pub(crate) fn set_remote(&self, link: &LinkRef, key: u64) {
        let mut inner = self.lock();
        inner.guard = Some(Guard::Remote(QuestionRef::new(link.clone(), key)));
        inner.remote = Some(Remote {
            link: link.clone(),
            key,
        });
        // Forward while holding the lock (sending never blocks) so that no
        // later pipelined call overtakes the queued ones.
        for (transform, queued) in std::mem::take(&mut inner.queued) {
            if let Some(state) = queued.state.upgrade() {
                inner.sent_paths.insert(transform.clone());
                send_call(
                    link,
                    CallTarget::Promised { key, transform },
                    queued.call,
                    &state,
                );
            }
        }
    }

    /// The question of this call needs no `Finish` (its `Return` said so):
    /// dropping the state need not tell the connection.
    pub(crate) fn question_finished(&self) {
        if let Some(Guard::Remote(question)) = self.lock().guard.as_mut() {
            question.mark_finished();
        }
    }

    /// Where the call went, if it went to a peer.
    pub(crate) fn remote(&self) -> Option<Remote> {
        self.lock().remote.clone()
    }

    /// The outcome, if known.
    pub(crate) fn result(&self) -> Option<Result<Arc<Payload>, Error>> {
        self.lock().result.clone()
    }

    /// The outcome, if known and if `transform` is not under embargo: what
    /// the capability at `transform` has settled to, as far as anyone but
    /// the calls held back may know.
    pub(crate) fn settled_path(&self, transform: &[u16]) -> Option<Result<Arc<Payload>, Error>> {
        let inner = self.lock();
        if inner.embargoed.contains_key(transform) {
            return None;
        }
        inner.result.clone()
    }

    /// The results, if the call succeeded, `transform` is not under
    /// embargo and no queued call is still being delivered: then a new call
    /// on the capability at `transform` may go straight to it without
    /// overtaking any.
    pub(crate) fn settled_target(&self, transform: &[u16]) -> Option<Arc<Payload>> {
        let inner = self.lock();
        if inner.draining || inner.embargoed.contains_key(transform) {
            return None;
        }
        match &inner.result {
            Some(Ok(payload)) => Some(payload.clone()),
            _ => None,
        }
    }

    /// Completes once the outcome is known and `transform` is not under
    /// embargo.
    pub(crate) fn path_settled(self: &Arc<Self>, transform: &[u16]) -> impl Future<Output = ()> {
        let outcome = self.wait();
        let state = Arc::downgrade(self);
        let transform: Arc<[u16]> = transform.into();
        async move {
            let _ = outcome.await;
            let lifted = match state.upgrade() {
                Some(state) => {
                    let mut inner = state.lock();
                    match inner.embargoed.get_mut(&transform) {
                        Some(embargo) => {
                            let (tx, rx) = oneshot::channel();
                            embargo.waiters.push(tx);
                            Some(rx)
                        }
                        None => None,
                    }
                }
                None => None,
            };
            if let Some(lifted) = lifted {
                let _ = lifted.await;
            }
        }
    }

    /// The caller gave the call a deadline of its own.
    pub(crate) fn set_own_deadline(&self) {
        self.lock().own_deadline = true;
    }

    /// Whether the caller gave the call a deadline of its own (which
    /// replaces the connection's default).
    pub(crate) fn has_own_deadline(&self) -> bool {
        self.lock().own_deadline
    }

    /// The method running this call allowed its cancellation.
    pub(crate) fn allow_cancellation(&self) {
        self.lock().cancellable = true;
    }

    /// Whether the method running this call allowed its cancellation.
    pub(crate) fn cancellable(&self) -> bool {
        self.lock().cancellable
    }

    /// The call's deadline passed: unless it has settled, it fails with
    /// `error` and is cancelled (a remote call's question is finished, a
    /// local call's work is dropped).
    pub(crate) fn expire(&self, error: Error) {
        let guard = {
            let mut inner = self.lock();
            if inner.result.is_some() {
                return;
            }
            inner.guard.take()
        };
        self.resolve(Err(error));
        drop(guard);
    }

    /// Settles the call. The first outcome wins; later ones are ignored.
    pub(crate) fn resolve(&self, result: Result<Arc<Payload>, Error>) {
        self.settle(result, |_, _| false, None::<fn() -> EmbargoHolder>);
    }

    /// A local server published its results so far for pipelining: calls
    /// that waited for the results go to them, in order, and so do new
    /// ones until the call returns.
    pub(crate) fn set_pipeline(&self, results: Arc<Payload>) {
        {
            let mut inner = self.lock();
            if inner.result.is_some() || inner.remote.is_some() {
                return;
            }
            inner.early = Some(results.clone());
            inner.draining = true;
        }
        self.drain(&Ok(results));
        // Whoever polls the call hears of it too: an answer's actor holds
        // calls pipelined on the answer until its results are known, and
        // these go on now (see `answer.rs`).
        let wakers = std::mem::take(&mut self.lock().wakers);
        for waker in wakers {
            waker.wake();
        }
    }

    /// Whether a local server published results for pipelining before
    /// returning (`set_pipeline`): calls pipelined on the call go to them.
    pub(crate) fn published(&self) -> bool {
        self.lock().early.is_some()
    }

    /// Delivers the calls that waited for the results (`draining` is set),
    /// in order, to `results`, or fails them with its error; calls made
    /// meanwhile join the queue behind them.
    fn drain(&self, results: &Result<Arc<Payload>, Error>) {
        loop {
            let queued = {
                let mut inner = self.lock();
                if inner.queued.is_empty() {
                    inner.draining = false;
                    break;
                }
                std::mem::take(&mut inner.queued)
            };
            for (transform, queued) in queued {
                match results {
                    Ok(payload) => queued.deliver_to(&payload.cap_at(&transform)),
                    Err(e) => {
                        if let Some(state) = queued.state.upgrade() {
                            state.resolve(Err(e.clone()));
                        }
                    }
                }
            }
        }
    }

    /// Takes the fact that calls went to the peer through a promise that
    /// resolved to the capability at `transform` in this call's results
    /// (P-17).
    pub(crate) fn take_calls_sent(&self, transform: &Arc<[u16]>) -> HandedOn {
        let mut inner = self.lock();
        if inner.embargoed.contains_key(&**transform) {
            return HandedOn::Embargoed;
        }
        match (&inner.result, &inner.remote) {
            (Some(Ok(payload)), _) => HandedOn::Resolved(payload.cap_at(transform)),
            (Some(Err(e)), _) => HandedOn::Resolved(Capability::broken(e.clone())),
            (None, Some(_)) => {
                inner.sent_paths.insert(transform.clone());
                HandedOn::Taken
            }
            // Not sent anywhere yet: nothing the peer orders. Hold calls.
            (None, None) => HandedOn::Embargoed,
        }
    }

    /// Settles a call. Every pipeline path that carried calls to the peer
    /// and now leads to a capability for which `needs_embargo` holds is put
    /// under embargo, held by the one `holder` gives (the question's
    /// actor, made only when needed): calls on it go to the holder until
    /// [`CallState::end_embargo`]. Gives those paths. (Without a holder, no
    /// path is put under embargo.)
    pub(crate) fn settle(
        &self,
        result: Result<Arc<Payload>, Error>,
        needs_embargo: impl Fn(&Payload, &[u16]) -> bool,
        holder: Option<impl FnOnce() -> EmbargoHolder>,
    ) -> Vec<Arc<[u16]>> {
        crate::stats::worked();
        // Decide the embargoes without holding the lock: deciding looks at
        // other states, and a hostile peer can make a path lead back here.
        let mut decided: HashMap<Arc<[u16]>, bool> = HashMap::new();
        let mut inner = loop {
            let undecided: Vec<Arc<[u16]>> = {
                let inner = self.lock();
                if inner.result.is_some() {
                    return Vec::new();
                }
                let undecided: Vec<_> = inner
                    .sent_paths
                    .iter()
                    .filter(|path| !decided.contains_key(*path))
                    .cloned()
                    .collect();
                if undecided.is_empty() {
                    break inner;
                }
                undecided
            };
            for path in undecided {
                let needs = match (&result, &holder) {
                    (Ok(payload), Some(_)) => needs_embargo(payload, &path),
                    _ => false,
                };
                decided.insert(path, needs);
            }
        };
        let mut embargoed = Vec::new();
        if let Some(holder) = holder.filter(|_| decided.values().any(|needs| *needs)) {
            let holder = holder();
            for (path, needs) in decided {
                if needs {
                    let embargo = Embargo {
                        holder: holder.clone(),
                        posted: 0,
                        waiters: Vec::new(),
                    };
                    inner.embargoed.insert(path.clone(), embargo);
                    embargoed.push(path);
                }
            }
        }
        inner.sent_paths.clear();
        inner.result = Some(result.clone());
        inner.draining = true;
        let holds = std::mem::take(&mut inner.holds);
        drop(inner);
        drop(holds);
        // Deliver what waited, in order; calls made meanwhile join the
        // queue behind them.
        self.drain(&result);
        let (waiters, wakers) = {
            let mut inner = self.lock();
            (
                std::mem::take(&mut inner.waiters),
                std::mem::take(&mut inner.wakers),
            )
        };
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
        for waker in wakers {
            waker.wake();
        }
        embargoed
    }

    /// What the capability at `transform` in the results is, for calls
    /// held by an embargo on it.
    pub(crate) fn path_target(&self, transform: &[u16]) -> Capability {
        match self.result() {
            Some(Ok(payload)) => payload.cap_at(transform),
            _ => Capability::broken(Error::failed("embargo on a call without results")),
        }
    }

    /// Ends the embargo on `transform` if its holder took every call sent
    /// to it (`taken`); gives whether it ended. From then on, calls on the
    /// path go straight to its target.
    /// (`taken: None`: ends it whatever is on its way, when its holder
    /// stops.)
    pub(crate) fn end_embargo(&self, transform: &[u16], taken: Option<u64>) -> bool {
        let waiters = {
            let mut inner = self.lock();
            match inner.embargoed.get(transform) {
                Some(embargo) if taken.map_or(true, |taken| embargo.posted == taken) => {}
                Some(_) => return false,
                None => return true,
            }
            inner
                .embargoed
                .remove(transform)
                .map(|embargo| embargo.waiters)
                .unwrap_or_default()
        };
        for waiter in waiters {
            let _ = waiter.send(());
        }
        true
    }

    /// Delivers `call` to the capability at `transform` in this call's
    /// results: to the peer while a remote call has not returned, in order
    /// after an embargo, directly once the results are known, or later,
    /// in order, when a local call returns.
    pub(crate) fn pipeline(&self, transform: Arc<[u16]>, call: OutCall, state: &Arc<CallState>) {
        let _ = self.route(transform, call, state, true);
    }

    /// The same, except that a call that would wait here for a local
    /// call's outcome is given back, to wait with its owner (an answer's
    /// actor keeps the calls the peer pipelines on the answer).
    pub(crate) fn pipeline_unless_waiting(
        &self,
        transform: Arc<[u16]>,
        call: OutCall,
        state: &Arc<CallState>,
    ) -> Option<(Arc<[u16]>, OutCall)> {
        self.route(transform, call, state, false)
    }

    /// Where a pipelined call goes (see [`CallState::pipeline`]); one that
    /// must wait for the outcome is queued here if `queue_here`, else
    /// given back.
    fn route(
        &self,
        transform: Arc<[u16]>,
        call: OutCall,
        state: &Arc<CallState>,
        queue_here: bool,
    ) -> Option<(Arc<[u16]>, OutCall)> {
        let mut inner = self.lock();
        if let Some(embargo) = inner.embargoed.get_mut(&transform) {
            // Sent under the lock (sending never blocks): the embargo cannot
            // end between the count and the send.
            embargo.posted += 1;
            embargo.holder.actor.do_send(Held {
                key: embargo.holder.key,
                path: transform,
                question: embargo.holder.question.clone(),
                call: Some(Queued::new(call, state)),
            });
            return None;
        }
        if inner.draining {
            inner.queued.push((transform, Queued::new(call, state)));
            return None;
        }
        match (&inner.result, &inner.remote) {
            (Some(Ok(payload)), _) => {
                let payload = payload.clone();
                drop(inner);
                payload.cap_at(&transform).deliver(call, state);
            }
            (Some(Err(e)), _) => {
                let e = e.clone();
                drop(inner);
                state.resolve(Err(e));
            }
            (None, Some(remote)) => {
                let remote = remote.clone();
                inner.sent_paths.insert(transform.clone());
                send_call(
                    &remote.link,
                    CallTarget::Promised {
                        key: remote.key,
                        transform,
                    },
                    call,
                    state,
                );
            }
            (None, None) => match inner.early.clone() {
                Some(early) => {
                    drop(inner);
                    early.cap_at(&transform).deliver(call, state);
                }
                None if queue_here => inner.queued.push((transform, Queued::new(call, state))),
                None => return Some((transform, call)),
            },
        }
        None
    }

    /// A receiver for the outcome.
    pub(crate) fn wait(&self) -> oneshot::Receiver<Result<Arc<Payload>, Error>> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        match &inner.result {
            Some(result) if !inner.draining => {
                let _ = tx.send(result.clone());
            }
            _ => inner.waiters.push(tx),
        }
        rx
    }
}

/// The future result of a call. Awaiting it gives the [`Response`];
/// [`PendingCall::pipeline`] gives capabilities from the results before
/// they arrive. Dropping it (and everything pipelined on it) cancels the
/// call.
///
/// ```
/// # actix::System::new().block_on(async {
/// let pending = capnp_actix::Capability::null().new_call(1, 0).send();
/// assert!(pending.await.is_err());
/// # });
/// ```
pub struct PendingCall {
    /// Keeps the call alive, and holds its outcome once known.
    state: Arc<CallState>,
}

impl PendingCall {
    pub(crate) fn new(state: Arc<CallState>) -> PendingCall {
        PendingCall { state }
    }

    /// Capabilities promised by this call's results.
    ///
    /// ```
    /// # actix::System::new().block_on(async {
    /// let pending = capnp_actix::Capability::null().new_call(1, 0).send();
    /// let cap = pending.pipeline().cap(&[0]);
    /// assert!(cap.new_call(1, 0).send().await.is_err());
    /// # });
    /// ```
    pub fn pipeline(&self) -> Pipeline {
        Pipeline {
            state: self.state.clone(),
        }
    }

    pub(crate) fn state(&self) -> &Arc<CallState> {
        &self.state
    }
}

impl Future for PendingCall {
    type Output = Result<Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = {
            let mut inner = self.state.lock();
            match &inner.result {
                // (While queued calls are still being delivered, the
                // outcome is not out yet: they go first.)
                Some(result) if !inner.draining => result.clone(),
                _ => {
                    if !inner.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                        inner.wakers.push(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            }
        };
        Poll::Ready(outcome.map(|payload| Response {
            _state: self.state.clone(),
            payload,
        }))
    }
}

/// The results of a call.
///
/// ```
/// # async fn f(pending: capnp_actix::PendingCall) -> Result<(), capnp_actix::Error> {
/// let response = pending.await?;
/// let text: capnp::text::Reader = response.content()?.get_as()?;
/// # Ok(()) }
/// ```
pub struct Response {
    /// Keeps the question open (no `Finish` yet) while the response is read.
    _state: Arc<CallState>,
    /// The results.
    pub(crate) payload: Arc<Payload>,
}

impl Response {
    /// The results' content. Capabilities in it are read with
    /// [`Response::cap`] (typed code reads them through its generated
    /// response types instead).
    ///
    /// ```
    /// # async fn f(pending: capnp_actix::PendingCall) -> Result<(), capnp_actix::Error> {
    /// let response = pending.await?;
    /// assert!(!response.content()?.is_null());
    /// # Ok(()) }
    /// ```
    pub fn content(&self) -> Result<any_pointer::Reader<'_>, Error> {
        Ok(self.payload.content()?)
    }

    /// The capability at `transform` (pointer fields from the results'
    /// root struct).
    ///
    /// ```
    /// # async fn f(pending: capnp_actix::PendingCall) -> Result<(), capnp_actix::Error> {
    /// let response = pending.await?;
    /// let first = response.cap(&[0]);
    /// # Ok(()) }
    /// ```
    pub fn cap(&self, transform: &[u16]) -> Capability {
        self.payload.cap_at(transform)
    }
}

/// Capabilities promised by a call's results, usable before the results
/// arrive (promise pipelining).
///
/// ```
/// # actix::System::new().block_on(async {
/// let pending = capnp_actix::Capability::null().new_call(1, 0).send();
/// let promised = pending.pipeline().cap(&[0, 1]);
/// # });
/// ```
#[derive(Clone)]
pub struct Pipeline {
    /// The call whose results hold the capabilities.
    pub(crate) state: Arc<CallState>,
}

impl Pipeline {
    /// The capability at `transform` in the results.
    ///
    /// ```
    /// # actix::System::new().block_on(async {
    /// let pending = capnp_actix::Capability::null().new_call(1, 0).send();
    /// let cap = pending.pipeline().cap(&[0]);
    /// # });
    /// ```
    pub fn cap(&self, transform: &[u16]) -> Capability {
        Capability::pipelined(self.state.clone(), transform.into())
    }
}
