//! What a connection sends: calls (with their cap tables), returns, and the
//! translation of capabilities into cap descriptors.

use super::transport::{framed_len, Outgoing};
use super::{ConnActor, Described, ExportEntry, ExportKey, Resolving, SendCall};
use crate::call::{CallState, CallTarget, OutCall, Wants};
use crate::capability::PromiseImport;
use crate::capability::{CapKind, Capability};
use crate::payload::{Body, Payload};
use crate::placeholder::{index_of, with_index_table};

/// Messages this large go to the writer uncopied; smaller ones are copied
/// into its batch.
const UNCOPIED_WRITE_BYTES: usize = 64 * 1024;
use actix::{ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use capnp_actix_proto::cap_descriptor::MessageTarget;
use capnp_actix_proto::connection::{Sending, Sent};
use capnp_actix_proto::message::OutMessage;
use capnp_actix_proto::rpc_capnp::{message, payload};
use capnp_actix_proto::{frame, CapDescriptor, Error, PromisedAnswer};
use std::sync::Arc;

impl Handler<SendCall> for ConnActor {
    type Result = ();

    fn handle(&mut self, mut msg: SendCall, ctx: &mut Context<Self>) {
        crate::stats::worked();
        let Some(call) = msg.call.take() else { return };
        let Some(state) = msg.state.upgrade() else {
            return; // the caller lost interest before the call went out
        };
        if let Some(reason) = &self.closing {
            state.resolve(Err(Error::disconnected(format!(
                "the connection is closed: {reason}"
            ))));
            return;
        }
        let target = match &msg.target {
            CallTarget::Import(id) => MessageTarget::ImportedCap(*id),
            CallTarget::Promised { key, transform } => match self.core.question_id(*key) {
                Some(id) => MessageTarget::PromisedAnswer(PromisedAnswer {
                    question_id: id,
                    transform: transform.to_vec(),
                }),
                None => {
                    state.resolve(Err(Error::failed(
                        "pipelined call on a question that is already finished",
                    )));
                    return;
                }
            },
        };
        match self.send_call_message(call, target, msg.key, &state, ctx) {
            Ok(()) => {}
            Err(e) => state.resolve(Err(e)),
        }
    }
}

impl ConnActor {
    /// Frames `message` and queues it for the writer, after what the core
    /// decided to send before it.
    pub(crate) fn write(&mut self, message: &OutMessage) {
        self.flush();
        self.write_now(message);
    }

    /// Queues `message` for the writer (a large one as it is, uncopied),
    /// after what the core decided to send before it.
    pub(crate) fn write_owned(&mut self, message: OutMessage) {
        self.flush();
        self.write_owned_now(message);
    }

    /// Queues what the core decided to send, in order.
    pub(crate) fn flush(&mut self) {
        while let Some(message) = self.core.poll_transmit() {
            self.write_owned_now(message);
        }
    }

    fn write_now(&mut self, message: &OutMessage) {
        let mut bytes = Vec::new();
        frame::encode(message, &mut bytes);
        self.queue(Outgoing::Bytes(bytes));
    }

    fn write_owned_now(&mut self, message: OutMessage) {
        if framed_len(&message) >= UNCOPIED_WRITE_BYTES {
            self.queue(Outgoing::Built(message));
        } else {
            self.write_now(&message);
        }
    }

    /// Returns exception `e` for answer `answer_id`, and counts it.
    pub(crate) fn write_exception(&mut self, answer_id: u32, e: &Error) {
        self.metrics.exceptions_sent.add(e.kind());
        self.write(&capnp_actix_proto::message::return_exception(answer_id, e));
    }

    fn queue(&mut self, outgoing: Outgoing) {
        let Some(writer) = &self.writer else { return };
        let len = outgoing.len();
        self.metrics.bytes_out += len as u64;
        log::trace!("conn {}: sending {len} bytes", self.id);
        self.backpressure.add_queued(len);
        if writer.unbounded_send(outgoing).is_err() {
            self.writer = None;
        }
    }

    /// Refuses a message over the size limit (W-03); the connection lives.
    fn check_size(&self, message: &OutMessage) -> Result<(), Error> {
        let words = frame::encoded_words(message);
        if words > self.limits.max_message_words {
            return Err(Error::failed(format!(
                "message of {words} words is over the limit of {} words (max_message_words)",
                self.limits.max_message_words
            )));
        }
        Ok(())
    }

    fn send_call_message(
        &mut self,
        call: OutCall,
        target: MessageTarget,
        key: u64,
        state: &Arc<CallState>,
        ctx: &mut Context<Self>,
    ) -> Result<(), Error> {
        let OutCall {
            interface_id,
            method_id,
            body,
            caps,
            return_for: _,
            hops: _,
            wants,
        } = call;
        // A call that arrived from another connection is copied into a new
        // message; one built here is completed in place.
        let (mut message, caps) = match body {
            Body::Built(message) => (message, caps),
            Body::TakeFrom(_) => return Err(Error::failed("a tail call's results are no call")),
            Body::Frame(frame) => {
                let source = Payload {
                    body: Body::Frame(frame),
                    caps,
                    return_for: None,
                };
                let mut message = capnp_actix_proto::message::new_message();
                let caps = {
                    let mut call = message.init_root::<message::Builder>().init_call();
                    call.set_interface_id(interface_id);
                    call.set_method_id(method_id);
                    let origins = copy_content(&source, call.init_params())?;
                    caps_at(&source, &origins)
                };
                (message, caps)
            }
        };
        self.check_size(&message)?;
        let queued = self.backpressure.queued();
        if queued > self.send_buffer_size {
            return Err(Error::overloaded(format!(
                "{queued} bytes wait to be sent, over the limit of {} (send_buffer_size)",
                self.send_buffer_size
            )));
        }
        // What can fail comes before the question and its exports are
        // recorded: a call refused here leaves nothing behind. (The core
        // says what the call may say: P-14.)
        let (id, wants) = self.core.next_question(wants);
        {
            let root: message::Builder = message.get_root()?;
            let mut call = match root.which()? {
                message::Call(call) => call?,
                _ => return Err(Error::failed("a request message is not a Call")),
            };
            call.set_question_id(id);
            target.write(call.reborrow().init_target());
            wants.write(call.reborrow());
            let params = call.get_params()?;
            let (described, exports) = self.describe_all(&caps, ctx);
            write_cap_table(params, &described);
            let recorded = self.core.asked_with(key, None, exports, wants);
            debug_assert_eq!(recorded, id, "describing capabilities asks no question");
        }
        self.write_owned(message);
        self.metrics.calls_out += 1;
        if let Some(timeout) = self.call_timeout {
            crate::deadline::expire_after(state, timeout, crate::deadline::Deadline::Default);
        }
        match wants {
            // No Return comes: no actor waits for one. (Calls pipelined on
            // it go to the peer, which holds the results.)
            Wants::PipelineOnly => return Ok(()),
            // A tail call: its results stay with the peer, so no actor
            // waits for them (its Return says resultsSentElsewhere).
            Wants::Elsewhere => return Ok(()),
            Wants::Results | Wants::NoPipelining => {}
        }
        // The question's actor starts after the write is queued, so that
        // the writer (woken first) puts the call on the wire before the new
        // actor's first turn. Its `Return` cannot come before this handler
        // ends.
        let actor = self.start_question(state, key, ctx);
        if let Some(taker) = self.core.taker_mut(id) {
            *taker = Some(super::Taker { key, actor });
        }
        Ok(())
    }

    /// Sends the `Return` for answer `answer_id` with these results, or an
    /// exception if they cannot be sent. Says what it told the peer.
    pub(crate) fn send_results(
        &mut self,
        answer_id: u32,
        results: &Arc<Payload>,
        ctx: &mut Context<Self>,
    ) -> SentResults {
        // Our tail call back to the peer: it keeps the results (P-13).
        if let Body::TakeFrom(tail) = &results.body {
            let question = tail.remote().and_then(|r| self.core.question_id(r.key));
            let Some(question) = question else {
                let e = Error::failed("the tail call was finished before its results were taken");
                self.write_exception(answer_id, &e);
                return SentResults::default();
            };
            self.write(&capnp_actix_proto::message::return_take_from(
                answer_id, question,
            ));
            return SentResults {
                sent: Sent {
                    tail: Some(question),
                    ..Sent::default()
                },
                ..SentResults::default()
            };
        }
        // Results a local object built as this very `Return`, with no
        // capabilities to describe, go out as they are (saying
        // `noFinishNeeded`, which the object's results hook set).
        let as_built = results.return_for == Some((self.id, answer_id))
            && results.caps.iter().all(Option::is_none);
        if let Some(message) = results.built().filter(|_| as_built) {
            if let Err(e) = self.check_size(message) {
                self.write_exception(answer_id, &e);
            } else if framed_len(message) >= UNCOPIED_WRITE_BYTES {
                self.flush();
                self.queue(Outgoing::Shared(results.clone()));
            } else {
                self.write(message);
            }
            return SentResults {
                no_finish_needed: true,
                ..SentResults::default()
            };
        }
        match self.build_results(answer_id, results, ctx) {
            Ok((message, sent)) => {
                self.write(&message);
                sent
            }
            Err(e) => {
                self.write_exception(answer_id, &e);
                SentResults::default()
            }
        }
    }

    fn build_results(
        &mut self,
        answer_id: u32,
        results: &Payload,
        ctx: &mut Context<Self>,
    ) -> Result<(OutMessage, SentResults), Error> {
        let mut message = capnp_actix_proto::message::new_message();
        let origins = {
            let mut ret = message.init_root::<message::Builder>().init_return();
            ret.set_answer_id(answer_id);
            ret.set_release_param_caps(false);
            copy_content(results, ret.init_results())?
        };
        self.check_size(&message)?;
        // Without capabilities, the caller need not send `Finish` (P-14).
        let no_finish_needed = origins.is_empty();
        // By the index of each capability in the results payload: that is
        // how later calls and Disembargos on the answer find theirs.
        // The names go to the core, what they stand for stays here.
        let mut names: Vec<Option<CapDescriptor>> = Vec::new();
        let mut targets: Vec<Option<Capability>> = Vec::new();
        let mut exports = Vec::new();
        if !no_finish_needed {
            names.resize(results.caps.len(), None);
            targets.resize(results.caps.len(), None);
            let root: message::Builder = message.get_root()?;
            if let message::Return(ret) = root.which()? {
                let mut ret = ret?;
                ret.set_no_finish_needed(false);
                if let capnp_actix_proto::rpc_capnp::return_::Results(payload) = ret.which()? {
                    let mut table = payload?.init_cap_table(origins.len() as u32);
                    for (i, &origin) in origins.iter().enumerate() {
                        let described = match results.caps.get(origin).and_then(Option::as_ref) {
                            Some(cap) => self.describe(cap, ctx),
                            None => Described::none(),
                        };
                        described.descriptor.write(table.reborrow().get(i as u32));
                        if let CapDescriptor::SenderHosted(id) | CapDescriptor::SenderPromise(id) =
                            described.descriptor
                        {
                            exports.push(id);
                        }
                        if let (Some(name), Some(target)) =
                            (names.get_mut(origin), targets.get_mut(origin))
                        {
                            *name = Some(described.descriptor);
                            *target = Some(described.target);
                        }
                    }
                }
            }
        } else {
            let root: message::Builder = message.get_root()?;
            if let message::Return(ret) = root.which()? {
                ret?.set_no_finish_needed(true);
            }
        }
        let sent = SentResults {
            sent: Sent {
                exports,
                described: names,
                tail: None,
            },
            targets,
            no_finish_needed,
        };
        Ok((message, sent))
    }

    pub(crate) fn describe_all(
        &mut self,
        caps: &[Option<Capability>],
        ctx: &mut Context<Self>,
    ) -> (Vec<Described>, Vec<u32>) {
        let mut exports = Vec::new();
        let described = caps
            .iter()
            .map(|cap| match cap {
                None => Described::none(),
                Some(cap) => {
                    let d = self.describe(cap, ctx);
                    if let CapDescriptor::SenderHosted(id) | CapDescriptor::SenderPromise(id) =
                        d.descriptor
                    {
                        exports.push(id);
                    }
                    d
                }
            })
            .collect();
        (described, exports)
    }

    /// How to name `cap` to the peer: its own objects by their ids, answers
    /// to its questions by their paths (P-12), settled promises by what
    /// they settled to, unsettled ones as promises (P-10), anything else
    /// as an export. Also gives what a message the peer addresses to that
    /// name must reach from now on: for the peer's own promise, the peer's
    /// export itself, not what the promise may resolve to later (the
    /// Tribble 4-way race rule, rpc.capnp).
    pub(crate) fn describe(&mut self, cap: &Capability, ctx: &mut Context<Self>) -> Described {
        let me = self.id;
        let cap = cap.settled();
        // What this connection knows of the capability, as plain data for
        // the core's rule; what a promise export of it would wait on; and
        // what calls addressed to the name reach.
        let (sending, awaited, target) = match &cap.kind {
            CapKind::Null => (Sending::Null, None, cap.clone()),
            CapKind::Import(import) if import.link.id() == me => {
                (Sending::Import(import.import_id), None, cap.clone())
            }
            CapKind::Promise(promise) => match promise.import().filter(|i| i.link.id() == me) {
                // The peer's own promise: named as its export, and calls
                // reach that export, not what it may resolve to later.
                Some(import) => {
                    let id = import.import_id;
                    let target = Capability {
                        kind: CapKind::Import(import),
                    };
                    (Sending::Import(id), None, target)
                }
                None => {
                    let awaited = Awaited::Promise(promise.clone());
                    (
                        Sending::Promise(self.export_key(&cap)),
                        Some(awaited),
                        cap.clone(),
                    )
                }
            },
            CapKind::Pipelined { call, transform } => {
                let awaited = Some(Awaited::Pipelined(call.clone(), transform.clone()));
                let otherwise = self.export_key(&cap);
                let sending = match call.remote().filter(|r| r.link.id() == me) {
                    Some(remote) => Sending::QuestionPath {
                        key: remote.key,
                        transform: transform.to_vec(),
                        otherwise,
                    },
                    None => Sending::Promise(otherwise),
                };
                (sending, awaited, cap.clone())
            }
            _ => (Sending::Object(self.export_key(&cap)), None, cap.clone()),
        };
        let mut wait = None;
        let named = self.core.name(sending, || {
            // The wait is cancelled when the export goes (the peer released
            // it): what it waits on is dropped with it (P-19).
            let resolving = awaited.map(|awaited| {
                let (settled, handle) = futures::future::abortable(settled_cap(awaited));
                wait = Some(settled);
                Resolving(handle)
            });
            ExportEntry::new(cap.clone(), resolving)
        });
        if let (Some(settled), CapDescriptor::SenderPromise(id)) = (wait, &named.descriptor) {
            let id = *id;
            ctx.spawn(settled.into_actor(self).map(move |settled, conn, ctx| {
                if let Ok(target) = settled {
                    conn.send_resolve(id, target, ctx);
                }
            }));
        }
        Described {
            descriptor: named.descriptor,
            target,
        }
    }

    /// What identifies `cap` among our exports, so that sending it twice
    /// reuses its id (T-04, P-20).
    fn export_key(&mut self, cap: &Capability) -> ExportKey {
        if let CapKind::Pipelined { call, transform } = &cap.kind {
            return ExportKey::Path(Arc::as_ptr(call) as usize, transform.clone());
        }
        match cap.identity() {
            Some(key) => ExportKey::Object(key),
            None => {
                self.next_anonymous_export += 1;
                ExportKey::Anonymous(self.next_anonymous_export)
            }
        }
    }

    /// Sends the `Resolve` of promise export `id`: once, and only while
    /// the export lives (its wait is cancelled when it goes).
    fn send_resolve(&mut self, id: u32, target: Capability, ctx: &mut Context<Self>) {
        if self.closing.is_some() || !self.core.awaits_resolve(id) {
            return;
        }
        let (resolution, stands_for) = match &target.kind {
            CapKind::Broken(e) => (Err(e.clone()), target.clone()),
            _ => {
                let described = self.describe(&target, ctx);
                (Ok(described.descriptor), described.target)
            }
        };
        // Calls the peer makes on the id from now on reach exactly what
        // the Resolve described.
        if let Some(entry) = self.core.export_value_mut(id) {
            entry.resolved = Some(stands_for);
        }
        self.core.resolve_export(id, resolution);
        self.flush();
    }
}

/// What a `Return` told the peer.
#[derive(Default)]
pub(crate) struct SentResults {
    /// The names sent, by the index of each capability in the results
    /// payload, and the exports they added a reference to: for the core.
    pub(crate) sent: Sent,
    /// What each name stands for, by the same index: for the answer.
    pub(crate) targets: Vec<Option<Capability>>,
    /// Whether it said `noFinishNeeded`.
    pub(crate) no_finish_needed: bool,
}

/// What a promise export waits on.
enum Awaited {
    /// A path into a call's results.
    Pipelined(Arc<CallState>, Arc<[u16]>),
    /// A promise another connection imported.
    Promise(Arc<PromiseImport>),
}

/// What a promise export's promise settles to (past any embargo of ours
/// on it).
async fn settled_cap(awaited: Awaited) -> Capability {
    match awaited {
        Awaited::Pipelined(call, transform) => {
            call.path_settled(&transform).await;
            match call.settled_path(&transform) {
                Some(Ok(payload)) => payload.cap_at(&transform),
                Some(Err(e)) => Capability::broken(e),
                None => Capability::broken(Error::failed("the promise was dropped")),
            }
        }
        Awaited::Promise(promise) => match promise.wait().await {
            Ok(cap) => cap,
            Err(_) => Capability::broken(Error::failed("the promise was dropped")),
        },
    }
}

/// Copies the content of `source` into `target`'s content, with its
/// capabilities; gives, for each entry of the copy's cap table, the index
/// in `source.caps` it came from (`usize::MAX` for none).
pub(crate) fn copy_content(
    source: &Payload,
    mut target: payload::Builder<'_>,
) -> Result<Vec<usize>, Error> {
    // Copied with placeholders: the copy's table then says where each of
    // its entries came from, and no hook is made per capability.
    let mut target_table = Vec::new();
    with_index_table(source.caps.len(), |source_table| {
        let mut content = source.content()?;
        capnp::traits::Imbue::imbue(&mut content, source_table);
        let mut target_content = target.reborrow().get_content();
        capnp::traits::ImbueMut::imbue_mut(&mut target_content, &mut target_table);
        target_content.set_as(content)
    })?;
    Ok(target_table
        .iter()
        .map(|hook| hook.as_ref().map_or(usize::MAX, |h| index_of(h.as_ref())))
        .collect())
}

/// The capabilities of `source` at `origins` (as [`copy_content`] gives
/// them).
fn caps_at(source: &Payload, origins: &[usize]) -> Vec<Option<Capability>> {
    origins
        .iter()
        .map(|&i| source.caps.get(i).cloned().flatten())
        .collect()
}

fn write_cap_table(payload: payload::Builder<'_>, described: &[Described]) {
    if described.is_empty() {
        return;
    }
    let mut table = payload.init_cap_table(described.len() as u32);
    for (i, d) in described.iter().enumerate() {
        d.descriptor.write(table.reborrow().get(i as u32));
    }
}
