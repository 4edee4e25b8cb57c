//! The bridge to capnpc-generated code: implementations of the hook traits
//! of `capnp::private::capability`, so that generated `Client`s call
//! through this runtime and generated `Server`s are hosted by it.
//!
//! Generated clients are not `Send` (capnp's design); [`Capability`] is.
//! Convert with [`Capability::client`] and [`Capability::from_client`].

use crate::call::{CallState, PendingCall, Response};
use crate::capability::Capability;
use crate::payload::{Body, Payload};

use crate::request::Request;
use crate::stream::StreamSlot;
use capnp::any_pointer;
use capnp::capability::{FromClientHook, Promise, RemotePromise};
use capnp::private::capability::{
    ClientHook, ParamsHook, PipelineHook, PipelineOp, RequestHook, ResponseHook, ResultsHook,
};
use capnp::private::layout::CapTable;
use capnp::MessageSize;
use capnp_actix_proto::message::OutMessage;
use capnp_actix_proto::rpc_capnp::{message, return_};
use capnp_actix_proto::table::OwnKeys;
use capnp_actix_proto::Error;
use futures::channel::oneshot;
use futures::FutureExt;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Weak};

thread_local! {
    /// The `CapHook`s alive on this thread, by address, each with a copy of
    /// its capability. A hook is recognised as ours by where it lives, not
    /// by anything a hook reports about itself (F-09): `get_brand` and
    /// `get_ptr` are safe methods any foreign hook may implement to return
    /// our values. Hooks are not `Send`, so each one is made and dropped on
    /// the thread whose registry knows it.
    static LIVE_HOOKS: RefCell<HashMap<usize, Live, OwnKeys>> =
        RefCell::new(HashMap::default());
}

thread_local! {
    /// Where one of our request hooks leaves its request when asked to
    /// hand it over for a tail call (`RequestHook::tail_send`): the
    /// request is recognised as ours by arriving here, not by anything the
    /// hook reports about itself.
    static HANDED_OVER: RefCell<Option<Request>> = const { RefCell::new(None) };
}

/// Called by our request hook's `tail_send`: leaves its request for
/// [`take_request`] to take.
fn hand_over(request: Request) {
    HANDED_OVER.with(|slot| *slot.borrow_mut() = Some(request));
}

/// The request behind `hook`, if it is one of ours.
fn take_request(hook: Box<dyn RequestHook>) -> Option<Request> {
    HANDED_OVER.with(|slot| slot.borrow_mut().take());
    // (A foreign hook's answer is of no use: only ours hands over.)
    let _ = hook.tail_send();
    HANDED_OVER.with(|slot| slot.borrow_mut().take())
}

/// What `LIVE_HOOKS` knows of a live hook.
struct Live {
    cap: Capability,
    /// Its streaming calls, once it made any.
    stream: Option<Rc<StreamSlot>>,
}

/// The address of a hook's object: what identifies a live `CapHook`.
fn address_of(hook: &dyn ClientHook) -> usize {
    hook as *const dyn ClientHook as *const () as usize
}

/// A `ClientHook` over a [`Capability`]. Made only by [`client_hook`], so
/// every one lives in a box (its address is stable) and is registered in
/// `LIVE_HOOKS` from birth to drop.
struct CapHook {
    /// The capability calls go to.
    cap: Capability,
    /// Its streaming calls, shared with the hooks `add_ref` makes of it;
    /// made at the first.
    stream: RefCell<Option<Rc<StreamSlot>>>,
}

/// Wraps a capability as a capnp client hook.
pub(crate) fn client_hook(cap: Capability) -> Box<dyn ClientHook> {
    hook_with(cap, None)
}

/// A hook for `cap` whose streaming calls go through `stream`.
fn hook_with(cap: Capability, stream: Option<Rc<StreamSlot>>) -> Box<dyn ClientHook> {
    let hook = Box::new(CapHook {
        cap: cap.clone(),
        stream: RefCell::new(stream),
    });
    let address = &*hook as *const CapHook as usize;
    let stream = hook.stream.borrow().clone();
    LIVE_HOOKS.with(|live| live.borrow_mut().insert(address, Live { cap, stream }));
    hook
}

impl Drop for CapHook {
    fn drop(&mut self) {
        let address = self as *const CapHook as usize;
        // Taken out first and dropped after the borrow: dropping a
        // capability may run other code. (At thread exit the registry may
        // be gone already; then there is nothing to forget.)
        let removed = LIVE_HOOKS
            .try_with(|live| live.borrow_mut().remove(&address))
            .ok()
            .flatten();
        drop(removed);
    }
}

/// The capability behind a client hook. Hooks of another RPC system
/// cannot travel through this one: they become broken capabilities.
///
/// A hook is ours when a live `CapHook` sits at its address. Two live
/// objects of non-zero size never share an address, and a `CapHook` is
/// not zero-sized, so a foreign hook of non-zero size cannot be taken for
/// one; a zero-sized one is refused by its size. No cast is involved, so
/// no hook, whatever it returns from its methods, can make this read
/// memory as the wrong type.
pub(crate) fn capability_of(hook: &dyn ClientHook) -> Capability {
    let found = with_live(hook, |live| live.cap.clone());
    found.unwrap_or_else(|| {
        Capability::broken(Error::failed(
            "a capability of another RPC system cannot be sent through capnp-actix",
        ))
    })
}

/// `f` of what the registry knows of `hook`, if it is one of ours.
fn with_live<T>(hook: &dyn ClientHook, f: impl FnOnce(&Live) -> T) -> Option<T> {
    let ours = std::mem::size_of_val(hook) == std::mem::size_of::<CapHook>();
    ours.then(|| LIVE_HOOKS.with(|live| live.borrow().get(&address_of(hook)).map(f)))
        .flatten()
}

/// Where a typed client's streaming calls stand: its window and the bytes
/// in flight, once it sent a call, or `None` before (or for a client of
/// another RPC system). For watching a stream's flow control at work.
///
/// ```ignore
/// let sink: sink::Client = cap.client();
/// sink.write_request().send().await?;
/// let state = capnp_actix::stream_state(&sink).unwrap();
/// println!("window {} bytes, {} in flight", state.window, state.in_flight);
/// ```
pub fn stream_state<C: FromClientHook>(client: &C) -> Option<crate::stream::StreamState> {
    with_live(client.as_client_hook(), |live| {
        live.stream.as_ref().map(|s| s.state())
    })
    .flatten()
}

/// A capnp cap table for a payload's capabilities.
pub(crate) fn cap_table(caps: &[Option<Capability>]) -> CapTable {
    caps.iter()
        .map(|cap| cap.as_ref().map(|c| client_hook(c.clone())))
        .collect()
}

/// The capabilities of a capnp cap table.
pub(crate) fn capabilities_of(table: &CapTable) -> Vec<Option<Capability>> {
    table
        .iter()
        .map(|hook| hook.as_ref().map(|h| capability_of(h.as_ref())))
        .collect()
}

impl Capability {
    /// A typed client (capnpc-generated `Client`) for this capability.
    /// Typed clients are not `Send`: convert where you make the calls.
    ///
    /// ```ignore
    /// let calc: calculator::Client = cap.client();
    /// ```
    pub fn client<C: FromClientHook>(&self) -> C {
        C::new(client_hook(self.clone()))
    }

    /// The capability behind a typed client.
    ///
    /// ```ignore
    /// let cap = Capability::from_client(&calc);
    /// ```
    pub fn from_client<C: FromClientHook>(client: &C) -> Capability {
        capability_of(client.as_client_hook())
    }
}

impl ClientHook for CapHook {
    fn add_ref(&self) -> Box<dyn ClientHook> {
        hook_with(self.cap.clone(), Some(self.stream_slot()))
    }

    fn new_call(
        &self,
        interface_id: u64,
        method_id: u16,
        _size_hint: Option<MessageSize>,
    ) -> capnp::capability::Request<any_pointer::Owned, any_pointer::Owned> {
        capnp::capability::Request::new(Box::new(RequestHookImpl {
            request: self.cap.new_call(interface_id, method_id),
            stream: self.stream_slot(),
        }))
    }

    fn call(
        &self,
        interface_id: u64,
        method_id: u16,
        params: Box<dyn ParamsHook>,
        mut results: Box<dyn ResultsHook>,
    ) -> Promise<(), capnp::Error> {
        // Forwarding a call received by another hook: copy the params in,
        // the results out.
        let mut request = self.cap.new_call(interface_id, method_id);
        let copied = params
            .get()
            .and_then(|content| request.params().set_as(content));
        if let Err(e) = copied {
            return Promise::err(e);
        }
        let pending = request.send();
        Promise::from_future(async move {
            let response = pending.await?;
            let hooks = cap_table(&response.payload.caps);
            let mut content = response.payload.content()?;
            capnp::traits::Imbue::imbue(&mut content, &hooks);
            results.get()?.set_as(content)
        })
    }

    fn get_brand(&self) -> usize {
        // Not used to recognise our hooks (see `capability_of`); a value
        // that tells capnp's own code this is not one of its connections.
        0
    }

    fn get_ptr(&self) -> usize {
        self.cap.identity().unwrap_or(self as *const CapHook as u64) as usize
    }

    fn get_resolved(&self) -> Option<Box<dyn ClientHook>> {
        None
    }

    fn when_more_resolved(&self) -> Option<Promise<Box<dyn ClientHook>, capnp::Error>> {
        None
    }

    fn when_resolved(&self) -> Promise<(), capnp::Error> {
        let cap = self.cap.clone();
        Promise::from_future(async move {
            cap.when_settled().await;
            Ok(())
        })
    }
}

/// A typed request under construction: an untyped [`Request`] behind
/// capnp's hook.
struct RequestHookImpl {
    request: Request,
    /// Where a streaming send goes: its client's slot.
    stream: Rc<StreamSlot>,
}

impl RequestHookImpl {
    fn dispatch(self) -> PendingCall {
        self.request.send()
    }
}

impl CapHook {
    /// The client's streaming slot (made now if it has none yet).
    fn stream_slot(&self) -> Rc<StreamSlot> {
        if let Some(slot) = &*self.stream.borrow() {
            return slot.clone();
        }
        let slot = StreamSlot::new();
        *self.stream.borrow_mut() = Some(slot.clone());
        let address = self as *const CapHook as usize;
        LIVE_HOOKS.with(|live| {
            if let Some(live) = live.borrow_mut().get_mut(&address) {
                live.stream = Some(slot.clone());
            }
        });
        slot
    }
}

impl RequestHook for RequestHookImpl {
    fn get(&mut self) -> any_pointer::Builder<'_> {
        self.request.params()
    }

    fn get_brand(&self) -> usize {
        0
    }

    fn send(self: Box<Self>) -> RemotePromise<any_pointer::Owned> {
        let pending = (*self).dispatch();
        let pipeline = any_pointer::Pipeline::new(Box::new(PipelineHookImpl {
            state: pending.state().clone(),
        }));
        let promise = Promise::from_future(pending.map(|result| match result {
            Ok(response) => Ok(capnp::capability::Response::new(Box::new(
                ResponseHookImpl::new(response),
            ))),
            Err(e) => Err(e.into()),
        }));
        RemotePromise { promise, pipeline }
    }

    fn send_streaming(self: Box<Self>) -> Promise<(), capnp::Error> {
        let RequestHookImpl { request, stream } = *self;
        let sent = crate::stream::send_streaming(&stream, request);
        Promise::from_future(sent.map(|r| r.map_err(Into::into)))
    }

    /// Hands the request over to [`take_request`] (the only caller), which
    /// sends it itself.
    fn tail_send(
        self: Box<Self>,
    ) -> Option<(u32, Promise<(), capnp::Error>, Box<dyn PipelineHook>)> {
        hand_over(self.request);
        None
    }
}

/// A response read through typed code.
struct ResponseHookImpl {
    /// The results (and the question, kept open while they are read).
    response: Response,
    /// Hooks for the results' capabilities.
    cap_table: CapTable,
}

impl ResponseHookImpl {
    fn new(response: Response) -> Self {
        let cap_table = cap_table(&response.payload.caps);
        ResponseHookImpl {
            response,
            cap_table,
        }
    }
}

impl ResponseHook for ResponseHookImpl {
    fn get(&self) -> capnp::Result<any_pointer::Reader<'_>> {
        let mut content = self.response.payload.content()?;
        capnp::traits::Imbue::imbue(&mut content, &self.cap_table);
        Ok(content)
    }
}

/// Promised capabilities of a call, for typed pipelines.
struct PipelineHookImpl {
    /// The call whose results hold the capabilities.
    state: Arc<CallState>,
}

impl PipelineHook for PipelineHookImpl {
    fn add_ref(&self) -> Box<dyn PipelineHook> {
        Box::new(PipelineHookImpl {
            state: self.state.clone(),
        })
    }

    fn get_pipelined_cap(&self, ops: &[PipelineOp]) -> Box<dyn ClientHook> {
        let transform: Vec<u16> = ops
            .iter()
            .filter_map(|op| match op {
                PipelineOp::Noop => None,
                PipelineOp::GetPointerField(field) => Some(*field),
            })
            .collect();
        client_hook(Capability::pipelined(self.state.clone(), transform.into()))
    }
}

/// Params as a local server reads them.
pub(crate) struct ParamsHookImpl {
    /// The `Message{call}` and its capabilities.
    payload: Arc<Payload>,
    /// Hooks for the params' capabilities.
    cap_table: CapTable,
}

impl ParamsHookImpl {
    pub(crate) fn new(payload: Arc<Payload>) -> Self {
        let cap_table = cap_table(&payload.caps);
        ParamsHookImpl { payload, cap_table }
    }
}

impl ParamsHook for ParamsHookImpl {
    fn get(&self) -> capnp::Result<any_pointer::Reader<'_>> {
        let mut content = self.payload.content()?;
        capnp::traits::Imbue::imbue(&mut content, &self.cap_table);
        Ok(content)
    }
}

/// The results of a finished local call: the `Message{return}` and the
/// capabilities the server put in it.
/// Clears `noFinishNeeded` on a results `Return` built by
/// [`ResultsHookImpl`].
pub(crate) fn clear_no_finish_needed(message: &mut OutMessage) {
    if let Ok(root) = message.get_root::<message::Builder>() {
        if let Ok(message::Return(Ok(mut ret))) = root.which() {
            ret.set_no_finish_needed(false);
        }
    }
}

/// Results as a local server left them: the `Return` message and its cap
/// table, or, for a tail call back to the calling peer, that call.
pub(crate) type BuiltResults = (OutMessage, CapTable, Option<Arc<CallState>>);

/// Results as a local server writes them, in place in a `Message{return}`.
/// When the server drops them, they go to the waiting export task.
pub(crate) struct ResultsHookImpl {
    /// The message under construction.
    message: Option<OutMessage>,
    /// Capabilities put in the results.
    cap_table: CapTable,
    /// Where the finished results go.
    done: Option<oneshot::Sender<BuiltResults>>,
    /// The call, for calls pipelined on results the server publishes
    /// early (`set_pipeline`).
    call: Weak<CallState>,
    /// The connection and answer id of the inbound call these results
    /// answer, if they do.
    return_for: Option<(u64, u32)>,
    /// The tail call whose results these are, when it went back to the
    /// calling peer, which keeps them.
    tail: Option<Arc<CallState>>,
}

impl ResultsHookImpl {
    pub(crate) fn new(
        done: oneshot::Sender<BuiltResults>,
        return_for: Option<(u64, u32)>,
        call: Weak<CallState>,
    ) -> Self {
        let answer_id = return_for.map(|(_, id)| id);
        let mut message = capnp_actix_proto::message::new_message();
        {
            let mut ret = message.init_root::<message::Builder>().init_return();
            ret.set_answer_id(answer_id.unwrap_or(0));
            ret.set_release_param_caps(false);
            // Results without capabilities need no `Finish` (P-14); the
            // flag is cleared if capabilities are put in them.
            ret.set_no_finish_needed(answer_id.is_some());
            ret.init_results();
        }
        ResultsHookImpl {
            message: Some(message),
            cap_table: Vec::new(),
            done: Some(done),
            call,
            return_for,
            tail: None,
        }
    }
}

impl ResultsHook for ResultsHookImpl {
    fn get(&mut self) -> capnp::Result<any_pointer::Builder<'_>> {
        let Some(message) = self.message.as_mut() else {
            return Err(capnp::Error::failed("results already sent".into()));
        };
        let root: message::Builder = message.get_root()?;
        let ret = match root.which()? {
            message::Return(ret) => ret?,
            _ => {
                return Err(capnp::Error::failed(
                    "results message is not a Return".into(),
                ))
            }
        };
        let results = match ret.which()? {
            return_::Results(results) => results?,
            _ => return Err(capnp::Error::failed("return holds no results".into())),
        };
        let mut content = results.get_content();
        capnp::traits::ImbueMut::imbue_mut(&mut content, &mut self.cap_table);
        Ok(content)
    }

    /// The server publishes its results so far for promise pipelining
    /// before it returns: calls pipelined on the call go to a snapshot of
    /// them from now on (the C++ reference's `setPipeline`).
    fn set_pipeline(&mut self) -> capnp::Result<()> {
        let Some(message) = self.message.as_ref() else {
            return Err(capnp::Error::failed("results already sent".into()));
        };
        let Some(call) = self.call.upgrade() else {
            return Ok(()); // nobody waits for the results any more
        };
        // A snapshot: the message as it stands, framed and read back (its
        // capability pointers keep their indexes into the same table).
        let mut bytes = Vec::new();
        capnp_actix_proto::frame::encode(message, &mut bytes);
        let mut decoder = capnp_actix_proto::FrameDecoder::new(capnp_actix_proto::frame::Limits {
            max_message_words: usize::MAX / 8,
            ..capnp_actix_proto::frame::Limits::default()
        });
        decoder.push(&bytes);
        let frame = decoder
            .next_frame()
            .map_err(|e| capnp::Error::failed(e.to_string()))?
            .ok_or_else(|| capnp::Error::failed("results snapshot incomplete".into()))?;
        call.set_pipeline(Arc::new(Payload {
            body: Body::Frame(frame),
            caps: capabilities_of(&self.cap_table),
            return_for: None,
        }));
        Ok(())
    }

    fn allow_cancellation(&self) {}

    fn tail_call(self: Box<Self>, request: Box<dyn RequestHook>) -> Promise<(), capnp::Error> {
        let Some(request) = take_request(request) else {
            return Promise::err(
                Error::failed("a request of another RPC system cannot be tail-called").into(),
            );
        };
        // Back to the peer that made this call: it keeps the results, and
        // our Return names its question (P-13).
        let conn = self.return_for.map(|(conn, _)| conn);
        if conn.is_some() && request.target().import_link_id() == conn {
            let mut results = self;
            results.tail = Some(request.send_results_elsewhere().state().clone());
            drop(results);
            return Promise::ok(());
        }
        let call = self.call.clone();
        crate::tail::tail_call(self, call, request.send(), |mut results, response| {
            let response = ResponseHookImpl::new(response);
            results.get()?.set_as(response.get()?)
        })
    }

    fn direct_tail_call(
        self: Box<Self>,
        _request: Box<dyn RequestHook>,
    ) -> (Promise<(), capnp::Error>, Box<dyn PipelineHook>) {
        let error = Error::unimplemented("tail calls are not supported yet");
        (
            Promise::err(error.clone().into()),
            Box::new(PipelineHookImpl {
                state: CallState::settled(Err(error)),
            }),
        )
    }
}

impl Drop for ResultsHookImpl {
    fn drop(&mut self) {
        if let (Some(message), Some(done)) = (self.message.take(), self.done.take()) {
            let table = std::mem::take(&mut self.cap_table);
            let _ = done.send((message, table, self.tail.take()));
        }
    }
}

/// Sends a typed request only to pipeline on its results (the C++
/// reference's `sendForPipeline`): to a peer the call says
/// `onlyPromisePipeline`, and no `Return` comes back (P-14). See
/// [`Request::send_for_pipeline`].
///
/// ```ignore
/// use capnp_actix::SendForPipeline;
/// let counter = test.new_counter_request().send_for_pipeline().get_counter();
/// let value = counter.get_request().send().promise.await?;
/// ```
pub trait SendForPipeline<R: capnp::traits::Pipelined> {
    /// Sends the request; gives the pipeline on its results.
    fn send_for_pipeline(self) -> R::Pipeline;
}

impl<P, R> SendForPipeline<R> for capnp::capability::Request<P, R>
where
    P: capnp::traits::Owned,
    R: capnp::traits::Owned + capnp::traits::Pipelined,
    R::Pipeline: capnp::capability::FromTypelessPipeline,
{
    fn send_for_pipeline(self) -> R::Pipeline {
        let state = match take_request(self.hook) {
            Some(request) => request.send_for_pipeline().state,
            None => CallState::settled(Err(Error::failed(
                "a request of another RPC system cannot be sent through capnp-actix",
            ))),
        };
        let typeless = any_pointer::Pipeline::new(Box::new(PipelineHookImpl { state }));
        capnp::capability::FromTypelessPipeline::new(typeless)
    }
}
