//! `ExportActor`: the actor that hosts one local object (a server) and
//! delivers the calls made on it, in the order they arrive.
//!
//! Calls start in arrival order and run concurrently: a call that waits
//! (for another call, even one back into the caller) does not block the
//! next one, so a handler that calls back into a capability it was given
//! cannot deadlock. The server is dropped when the last [`Capability`]
//! that refers to it is gone.
//!
//! Services often make an object per call (a call that returns a new
//! capability), and starting and stopping an actor costs more than such a
//! call's own work (a mailbox and a task made and torn down: about 5,000
//! instructions and ten allocations). So an actor whose object went is
//! kept, up to [`POOL`] per thread, and hosts the next object made on its
//! thread. An actor hosts one object at a time: the object's last
//! reference tells it [`Unhost`] after every call made through it, and only
//! then is the actor idle.

use crate::call::{Deliver, ObjectActor};
use crate::capability::Capability;
use crate::hooks::{capabilities_of, client_hook, BuiltResults, ParamsHookImpl, ResultsHookImpl};
use crate::payload::{Body, Payload};
use crate::stats;
use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, WrapFuture};
use capnp::any_pointer;
use capnp::capability::{DispatchCallResult, FromServer, Params, Results};
use capnp_actix_proto::Error;
use futures::channel::oneshot;
use futures::future::{select, Either};
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Identities of local objects; never reused.
static NEXT_OBJECT_ID: AtomicU64 = AtomicU64::new(1);

/// A server object in type-erased form: capnpc's generated dispatch.
trait HostedServer {
    fn dispatch(
        &self,
        interface_id: u64,
        method_id: u16,
        params: Params<any_pointer::Owned>,
        results: Results<any_pointer::Owned>,
    ) -> DispatchCallResult;
}

impl<D: capnp::capability::Server + Clone> HostedServer for D {
    fn dispatch(
        &self,
        interface_id: u64,
        method_id: u16,
        params: Params<any_pointer::Owned>,
        results: Results<any_pointer::Owned>,
    ) -> DispatchCallResult {
        self.clone()
            .dispatch_call(interface_id, method_id, params, results)
    }
}

/// Most idle export actors a thread keeps for its next objects.
pub(crate) const POOL: usize = 64;

thread_local! {
    /// The call whose method this thread is starting (its first poll).
    static STARTING: RefCell<Option<std::sync::Weak<crate::call::CallState>>> = const { RefCell::new(None) };
    /// This thread's idle export actors, each with its slot.
    static IDLE: RefCell<Vec<(Addr<ExportActor>, Rc<Slot>)>> = const { RefCell::new(Vec::new()) };
}

/// Where an actor's object is. The thread that hands an idle actor its
/// next object puts it here (objects are not `Send`, so they cannot travel
/// in a message); the actor runs on that thread too.
#[derive(Default)]
struct Slot(RefCell<Option<Hosted>>);

/// The object an actor hosts.
struct Hosted {
    /// capnpc's dispatch wrapper around the user's server.
    server: Box<dyn HostedServer>,
    /// Its place in the live count, given up when it goes.
    _live: stats::Live,
}

/// The actor hosting one local object at a time.
pub(crate) struct ExportActor {
    /// The object, if it hosts one.
    slot: Rc<Slot>,
    /// Its streaming calls, one at a time.
    stream: StreamOrder,
}

/// How an object's streaming calls (`-> stream`) run, as the C++
/// reference runs them: one at a time, in arrival order; a call that
/// arrives while one runs (streaming or not) waits for it; once one fails,
/// every later call fails with its error.
#[derive(Default)]
struct StreamOrder {
    /// A streaming call runs.
    running: bool,
    /// Calls that came while it ran, in order.
    blocked: std::collections::VecDeque<Deliver>,
    /// The error of the streaming call that failed.
    broken: Option<Error>,
    /// The object's last reference went while calls were blocked: it goes
    /// once they have run.
    unhost: bool,
}

impl Actor for ExportActor {
    type Context = Context<Self>;
}

impl ObjectActor for Addr<ExportActor> {
    fn deliver(&self, msg: Deliver) {
        self.do_send(msg);
    }
    fn unhost(&self) {
        self.do_send(Unhost);
    }
    fn connected(&self) -> bool {
        Addr::connected(self)
    }
}

/// Sent by an object's last reference when it goes: the object is dropped,
/// and the actor waits for the next one. Every call made through the
/// reference was sent before, so none finds the object gone.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Unhost;

impl Handler<Unhost> for ExportActor {
    type Result = ();

    fn handle(&mut self, _msg: Unhost, ctx: &mut Context<Self>) {
        if self.stream.running || !self.stream.blocked.is_empty() {
            self.stream.unhost = true; // after the calls made before
            return;
        }
        self.unhost(ctx);
    }
}

impl ExportActor {
    /// Drops the object; the actor waits for the next one.
    fn unhost(&mut self, ctx: &mut Context<Self>) {
        self.stream = StreamOrder::default();
        // Dropped outside the borrow: a server's drop may make or drop
        // other objects.
        let hosted = self.slot.0.borrow_mut().take();
        drop(hosted);
        // Kept for the next object if the pool has room; otherwise no
        // address is left and the actor stops.
        let _ = IDLE.try_with(|idle| {
            let mut idle = idle.borrow_mut();
            if idle.len() < POOL {
                idle.push((ctx.address(), self.slot.clone()));
            }
        });
    }
}

/// Hosts `server` in a new `ExportActor` on the current arbiter and gives
/// a typed client for it. Must be called from within an Actix system.
///
/// ```ignore
/// let client: calculator::Client = capnp_actix::new_client(CalculatorImpl);
/// ```
pub fn new_client<C, S>(server: S) -> C
where
    C: FromServer<S>,
    S: 'static,
{
    C::new(client_hook(Capability::from_server::<C, S>(server)))
}

impl Capability {
    /// Hosts `server` in a new `ExportActor` on the current arbiter. `C`
    /// is the generated client type of the interface `server` implements.
    /// Must be called from within an Actix system.
    ///
    /// ```ignore
    /// let cap = Capability::from_server::<calculator::Client, _>(CalculatorImpl);
    /// ```
    pub fn from_server<C, S>(server: S) -> Capability
    where
        C: FromServer<S>,
        S: 'static,
    {
        host::<C, S>(Rc::new(server)).0
    }
}

/// Hosts `server` in a new `ExportActor`; gives its capability and its
/// object id.
pub(crate) fn host<C, S>(server: Rc<S>) -> (Capability, u64)
where
    C: FromServer<S>,
    S: 'static,
{
    let hosted = Hosted {
        server: Box::new(C::from_server(server)),
        _live: stats::Live::new(&stats::EXPORTS),
    };
    let addr = match idle_actor() {
        Some((addr, slot)) => {
            *slot.0.borrow_mut() = Some(hosted);
            addr
        }
        None => ExportActor {
            slot: Rc::new(Slot(RefCell::new(Some(hosted)))),
            stream: StreamOrder::default(),
        }
        .start(),
    };
    let id = next_object_id();
    (Capability::local(Box::new(addr), id), id)
}

/// A new local object identity.
pub(crate) fn next_object_id() -> u64 {
    NEXT_OBJECT_ID.fetch_add(1, Ordering::Relaxed)
}

/// An idle actor of this thread's pool that still runs (the pool outlives
/// the actix systems a thread runs one after another).
fn idle_actor() -> Option<(Addr<ExportActor>, Rc<Slot>)> {
    IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        while let Some((addr, slot)) = idle.pop() {
            if addr.connected() {
                return Some((addr, slot));
            }
        }
        None
    })
    .ok()
    .flatten()
}

impl Handler<Deliver> for ExportActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        crate::stats::worked();
        if self.stream.running || !self.stream.blocked.is_empty() {
            self.stream.blocked.push_back(msg);
            return;
        }
        self.run(msg, ctx);
    }
}

impl ExportActor {
    /// Runs one call on the object.
    fn run(&mut self, mut msg: Deliver, ctx: &mut Context<Self>) {
        let Some(call) = msg.call.take() else {
            return;
        };
        let state = msg.state.clone();
        if state.strong_count() == 0 {
            return; // cancelled before it started
        }
        let (interface_id, method_id) = (call.interface_id, call.method_id);
        let return_for = call.return_for;
        let params = Params::new(Box::new(ParamsHookImpl::new(Arc::new(call.into_payload()))));
        let (done_tx, done_rx) = oneshot::channel();
        let results = Results::new(Box::new(ResultsHookImpl::new(
            done_tx,
            return_for,
            state.clone(),
        )));
        if let Some(broken) = &self.stream.broken {
            if let Some(state) = state.upgrade() {
                state.resolve(Err(broken.clone()));
            }
            return;
        }
        let work = {
            let hosted = self.slot.0.borrow();
            hosted.as_ref().map(|hosted| {
                hosted
                    .server
                    .dispatch(interface_id, method_id, params, results)
            })
        };
        // (Only a reference made the call, so the object is there.)
        let Some(DispatchCallResult {
            promise: mut work,
            is_streaming,
        }) = work
        else {
            if let Some(state) = state.upgrade() {
                state.resolve(Err(Error::disconnected("the object is gone")));
            }
            return;
        };
        // Most calls complete without waiting: finish them here, and give a
        // task of its own only to a call that has to wait. (A pending call
        // is polled again by the executor, with a waker of its own.)
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        // (The method's code up to its first await runs in this poll: where
        // `allow_cancellation` finds its call.)
        let previous = STARTING.with(|s| s.replace(Some(state.clone())));
        let after_delivery = state.upgrade().and_then(|state| state.delivery.delivered());
        let polled = std::pin::Pin::new(&mut work).poll(&mut cx);
        STARTING.with(|s| *s.borrow_mut() = previous);
        if let (std::task::Poll::Pending, Some(then)) = (&polled, after_delivery) {
            // A cancellation that waited for the delivery (the method
            // could allow or refuse it in its first poll).
            then();
        }
        let std::task::Poll::Ready(outcome) = polled else {
            // From here on, dropping the caller's state cancels the call.
            let Some(cancel) = state.upgrade().map(|state| state.guard_local()) else {
                return; // the caller lost interest meanwhile: dropping `work` stops it
            };
            if is_streaming {
                // The next calls wait for this one (run by the actor, so
                // that its end unblocks them).
                self.stream.running = true;
                let running = async move {
                    match select(work, cancel).await {
                        Either::Left((outcome, _)) => {
                            // The method's verdict decides for the calls
                            // after it; its results may come later (if it
                            // kept its results object), apart.
                            let failed = outcome.as_ref().err().map(|e| Error::from(e.clone()));
                            actix_rt::spawn(async move {
                                let result = finish(outcome, done_rx.await.ok(), return_for);
                                if let Some(state) = state.upgrade() {
                                    state.resolve(result);
                                }
                            });
                            failed
                        }
                        Either::Right(_) => None, // cancelled: not a failure
                    }
                };
                ctx.spawn(running.into_actor(self).map(|failed, actor, ctx| {
                    actor.stream.running = false;
                    if actor.stream.broken.is_none() {
                        actor.stream.broken = failed;
                    }
                    actor.unblock(ctx);
                }));
                return;
            }
            actix_rt::spawn(async move {
                let outcome = match select(work, cancel).await {
                    Either::Left((outcome, _)) => outcome,
                    Either::Right(_) => return, // cancelled: dropping `work` stops it
                };
                let result = finish(outcome, done_rx.await.ok(), return_for);
                if let Some(state) = state.upgrade() {
                    state.resolve(result);
                }
            });
            return;
        };
        // The work is done, so its results object is normally dropped (and
        // the results sent) by now; if the server kept it, wait for it.
        drop(work);
        if is_streaming && self.stream.broken.is_none() {
            if let Err(e) = &outcome {
                self.stream.broken = Some(Error::from(e.clone()));
            }
        }
        let mut done_rx = done_rx;
        match done_rx.try_recv() {
            Ok(None) => {
                actix_rt::spawn(async move {
                    let result = finish(outcome, done_rx.await.ok(), return_for);
                    if let Some(state) = state.upgrade() {
                        state.resolve(result);
                    }
                });
            }
            built => {
                if let Some(state) = state.upgrade() {
                    state.resolve(finish(outcome, built.ok().flatten(), return_for));
                }
            }
        }
    }

    /// A streaming call ended: the calls that waited for it run, in order,
    /// until the next streaming one (or the object goes, if its last
    /// reference did meanwhile).
    fn unblock(&mut self, ctx: &mut Context<Self>) {
        while !self.stream.running {
            let Some(next) = self.stream.blocked.pop_front() else {
                break;
            };
            self.run(next, ctx);
        }
        if !self.stream.running && self.stream.unhost {
            self.unhost(ctx);
        }
    }
}

/// The outcome of a local call from the server's verdict and the results it
/// built (`None`: it dropped them unsent).
fn finish(
    outcome: Result<(), capnp::Error>,
    built: Option<BuiltResults>,
    return_for: Option<(u64, u32)>,
) -> Result<Arc<Payload>, Error> {
    match outcome {
        Ok(()) => match built {
            Some((_, _, Some(tail))) => Ok(Arc::new(Payload {
                body: Body::TakeFrom(tail),
                caps: Vec::new(),
                return_for,
            })),
            Some((mut message, cap_table, None)) => {
                if cap_table.iter().any(Option::is_some) {
                    // Capabilities must be released by the caller's Finish.
                    crate::hooks::clear_no_finish_needed(&mut message);
                }
                Ok(Arc::new(Payload {
                    body: Body::Built(message),
                    caps: capabilities_of(&cap_table),
                    return_for,
                }))
            }
            None => Err(Error::failed("the server kept its results object")),
        },
        Err(e) => Err(Error::from(e)),
    }
}

/// Lets the call this method is running for be cancelled when its caller
/// lets go (a `Finish` from the peer), on a connection whose
/// [`crate::Cancellation`] is `RunToCompletion`; on the default
/// (`OnFinish`), every call may be cancelled anyway. Call it in the
/// method before its first `.await`; gives whether it found a call (it
/// does not outside a method, or after that first `.await`).
///
/// ```
/// // Outside a method there is no call to allow.
/// assert!(!capnp_actix::allow_cancellation());
/// ```
pub fn allow_cancellation() -> bool {
    let call = STARTING.with(|s| s.borrow().as_ref().and_then(std::sync::Weak::upgrade));
    match call {
        Some(call) => {
            call.allow_cancellation();
            true
        }
        None => false,
    }
}
