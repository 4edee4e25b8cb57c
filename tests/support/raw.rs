//! A hand-driven "raw peer" for wire-level tests: it writes frames to a
//! `ConnActor` and decodes what the actor sends back.
#![allow(dead_code)]

use capnp::any_pointer;
use capnp::private::layout::CapTable;
use capnp::traits::ImbueMut;
use capnp::traits::{HasTypeId, Imbue, IntoInternalStructReader};
use capnp_actix::{Bootstrap, Capability, ConnActor, ConnOptions, Watch};
use capnp_actix_proto::frame::{encode, Frame, FrameDecoder, Limits};
use capnp_actix_proto::message::{self as out, DisembargoContext, OutMessage};
use capnp_actix_proto::rpc_capnp::{call, disembargo, message, return_};
use capnp_actix_proto::{CapDescriptor, Error, MessageTarget};
use futures::channel::oneshot;
use std::future::Future;
use std::time::Duration;
// The generated code names its own types as `crate::test_capnp::...`.
use super::test_capnp;
use super::{Tally, TestImpl};
use test_capnp::test::{self, echo_params, hang_params};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// How long any single wait on the connection may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// How long the connection may stay silent before a fuzz case hangs up.
pub const QUIET: Duration = Duration::from_millis(10);

/// The interface id of `Test` in schema/test.capnp.
pub const TEST_ID: u64 = <test::Client as HasTypeId>::TYPE_ID;

/// Method ordinals of `Test`.
pub const ECHO: u16 = 0;
pub const HANG: u16 = 2;

/// The union discriminants of `Message` that tests look for.
pub const CALL: u16 = 2;
pub const RETURN: u16 = 3;

/// Runs one test in a fresh actix system, bounded in time.
pub fn run(test: impl Future<Output = ()>) {
    actix::System::new().block_on(async {
        actix_rt::time::timeout(Duration::from_secs(15), test)
            .await
            .expect("the test timed out");
    });
}

/// The test's end of a connection whose other end is a `ConnActor`.
pub struct Peer {
    pub conn: actix::Addr<ConnActor>,
    pub io: DuplexStream,
    pub decoder: FrameDecoder,
    /// Resolves with why the connection ended.
    pub ended: oneshot::Receiver<Error>,
}

impl Peer {
    /// Starts a connection serving a `Test` main interface.
    pub async fn start() -> Peer {
        Peer::serving(ConnOptions::new()).await
    }

    /// Starts a connection serving a `Test` main interface, with `options`.
    pub async fn serving(options: ConnOptions) -> Peer {
        let main = Capability::from_server::<test::Client, _>(TestImpl::new(&Tally::default()));
        Peer::connect(options.main_interface(main)).await
    }

    /// Starts a connection with `options`; the test plays its peer.
    pub async fn connect(options: ConnOptions) -> Peer {
        let (conn_end, peer_end) = tokio::io::duplex(1 << 20);
        let (read, write) = tokio::io::split(conn_end);
        let conn = ConnActor::start(read, write, options);
        let ended = conn.send(Watch).await.expect("the new connection is alive");
        Peer {
            conn,
            io: peer_end,
            decoder: FrameDecoder::new(Limits::default()),
            ended,
        }
    }

    pub async fn send(&mut self, message: &OutMessage) {
        let mut bytes = Vec::new();
        encode(message, &mut bytes);
        self.send_raw(&bytes).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io
            .write_all(bytes)
            .await
            .expect("write to the connection");
    }

    /// The next frame the connection sends, or `None` at a clean EOF.
    pub async fn next(&mut self) -> Option<Frame> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(frame) = self.decoder.next_frame().expect("a well-formed frame") {
                return Some(frame);
            }
            let read = actix_rt::time::timeout(WAIT, self.io.read(&mut buf))
                .await
                .expect("timed out waiting for the connection to send")
                .expect("read from the connection");
            if read == 0 {
                assert_eq!(self.decoder.buffered(), 0, "EOF in the middle of a frame");
                return None;
            }
            self.decoder.push(&buf[..read]);
        }
    }

    pub async fn recv(&mut self) -> Frame {
        self.next().await.expect("EOF where a message was expected")
    }

    /// Asks for the bootstrap capability under `question_id`; gives the
    /// export id it arrived as.
    pub async fn bootstrap(&mut self, question_id: u32) -> u32 {
        self.send(&out::bootstrap(question_id)).await;
        bootstrap_export(&self.recv().await, question_id)
    }

    /// Why the connection ended, as `Watch` reports it.
    pub async fn ended(&mut self) -> Error {
        actix_rt::time::timeout(WAIT, &mut self.ended)
            .await
            .expect("timed out waiting for the connection to end")
            .expect("the connection went away without saying why")
    }

    /// The next message must be an `Abort` with a reason, then EOF, and
    /// the connection must report its end. Gives the abort's exception.
    pub async fn expect_abort_and_close(&mut self) -> Error {
        let frame = self.recv().await;
        let abort = expect_abort(&frame);
        assert!(!abort.reason().is_empty(), "an Abort without a reason");
        assert!(self.next().await.is_none(), "a message after the Abort");
        let ended = self.ended().await;
        assert_eq!(ended, abort, "Watch names another reason than the Abort");
        abort
    }
}

/// The union discriminant of a message, for diagnostics.
pub fn tag(frame: &Frame) -> u16 {
    let root: message::Reader = frame.get_root().unwrap();
    root.into_internal_struct_reader().get_data_field::<u16>(0)
}

pub fn expect_return(frame: &Frame, answer_id: u32) -> return_::Reader<'_> {
    let ret = expect_return_any(frame);
    assert_eq!(ret.get_answer_id(), answer_id);
    ret
}

pub fn expect_results(
    frame: &Frame,
    answer_id: u32,
) -> capnp_actix_proto::rpc_capnp::payload::Reader<'_> {
    match expect_return(frame, answer_id).which().unwrap() {
        return_::Results(results) => results.unwrap(),
        return_::Exception(e) => panic!("exception: {}", Error::read(e.unwrap())),
        _ => panic!("a Return of another kind than results"),
    }
}

pub fn expect_abort(frame: &Frame) -> Error {
    let root: message::Reader = frame.get_root().unwrap();
    let message::Abort(e) = root.which().unwrap() else {
        panic!("expected an Abort, got message tag {}", tag(frame));
    };
    Error::read(e.unwrap())
}

pub fn expect_unimplemented(frame: &Frame) -> message::Reader<'_> {
    let root: message::Reader = frame.get_root().unwrap();
    let message::Unimplemented(echo) = root.which().unwrap() else {
        panic!("expected Unimplemented, got message tag {}", tag(frame));
    };
    echo.unwrap()
}

/// Whether `content` is a capability pointer with cap-table index 0: read
/// against a table of exactly one entry, only index 0 resolves.
pub fn is_cap_index_zero(content: any_pointer::Reader<'_>) -> bool {
    let table: CapTable = vec![Some(
        Capability::null()
            .client::<capnp::capability::Client>()
            .hook,
    )];
    let mut content = content;
    content.imbue(&table);
    content
        .get_as_capability::<capnp::capability::Client>()
        .is_ok()
}

/// Checks a bootstrap `Return`: results whose cap table holds one
/// `senderHosted` descriptor and whose content is capability pointer 0.
/// Gives the export id.
pub fn bootstrap_export(frame: &Frame, answer_id: u32) -> u32 {
    let results = expect_results(frame, answer_id);
    let table = results.get_cap_table().unwrap();
    assert_eq!(table.len(), 1, "cap table of the bootstrap Return");
    let CapDescriptor::SenderHosted(id) = CapDescriptor::read(table.get(0)).unwrap() else {
        panic!("the bootstrap capability is not senderHosted");
    };
    assert!(
        is_cap_index_zero(results.get_content()),
        "the bootstrap content is not capability pointer 0"
    );
    id
}

/// `Call{questionId, target, Test, method}` with `echo` params holding
/// `text`, or empty `hang` params.
pub fn call(question_id: u32, target: MessageTarget, method_id: u16, text: &str) -> OutMessage {
    let mut m = capnp_actix_proto::message::new_message();
    let mut c = m.init_root::<message::Builder>().init_call();
    c.set_question_id(question_id);
    target.write(c.reborrow().init_target());
    c.set_interface_id(TEST_ID);
    c.set_method_id(method_id);
    let content = c.init_params().get_content();
    if method_id == ECHO {
        content.init_as::<echo_params::Builder>().set_text(text);
    } else {
        content.init_as::<hang_params::Builder>();
    }
    m
}

pub fn echo_call(question_id: u32, export_id: u32, text: &str) -> OutMessage {
    call(
        question_id,
        MessageTarget::ImportedCap(export_id),
        ECHO,
        text,
    )
}

pub fn encoded(message: &OutMessage) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode(message, &mut bytes);
    bytes
}

/// The byte offset, in an encoded single-segment frame, of the root
/// struct's data section: where `Message`'s union discriminant lives
/// (`which()` reads `get_data_field::<u16>(0)`).
pub fn discriminant_offset(bytes: &[u8]) -> usize {
    assert_eq!(&bytes[..4], &[0; 4], "a single-segment frame");
    let root = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    assert_eq!(root & 3, 0, "the root is a struct pointer");
    let offset = (root as u32 as i32) >> 2;
    8 + 8 * usize::try_from(1 + offset).unwrap()
}

// The calling side: the test plays the server.

/// A `Return` whose results are one capability, named by `descriptor`.
pub fn return_cap(answer_id: u32, descriptor: CapDescriptor) -> OutMessage {
    let mut m = out::new_message();
    let mut table: CapTable = Vec::new();
    {
        let mut ret = m.init_root::<message::Builder>().init_return();
        ret.set_answer_id(answer_id);
        ret.set_release_param_caps(false);
        let mut results = ret.init_results();
        {
            let mut content = results.reborrow().get_content();
            content.imbue_mut(&mut table);
            content.set_as_capability(
                Capability::null()
                    .client::<capnp::capability::Client>()
                    .hook,
            );
        }
        descriptor.write(results.init_cap_table(1).get(0));
    }
    m
}

/// A `Return` with empty results; `release_param_caps` as given.
pub fn return_empty(answer_id: u32, release_param_caps: bool) -> OutMessage {
    let mut m = out::new_message();
    {
        let mut ret = m.init_root::<message::Builder>().init_return();
        ret.set_answer_id(answer_id);
        ret.set_release_param_caps(release_param_caps);
        ret.init_results();
    }
    m
}

pub fn expect_bootstrap(frame: &Frame) -> u32 {
    let root: message::Reader = frame.get_root().unwrap();
    let message::Bootstrap(b) = root.which().unwrap() else {
        panic!("expected a Bootstrap, got message tag {}", tag(frame));
    };
    b.unwrap().get_question_id()
}

pub fn expect_call(frame: &Frame) -> call::Reader<'_> {
    let root: message::Reader = frame.get_root().unwrap();
    let message::Call(c) = root.which().unwrap() else {
        panic!("expected a Call, got message tag {}", tag(frame));
    };
    c.unwrap()
}

/// What a message is, in a few words, for matching sequences.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Seen {
    Finish(u32),
    Release(u32, u32),
    Call(u32, MessageTarget),
    Disembargo(MessageTarget, DisembargoContext),
    /// `Resolve{promiseId, cap}` (an exception resolution reads as `None`).
    Resolve(u32, CapDescriptor),
    Return(u32),
    Other(u16),
}

pub fn seen(frame: &Frame) -> Seen {
    let root: message::Reader = frame.get_root().unwrap();
    match root.which().unwrap() {
        message::Finish(f) => Seen::Finish(f.unwrap().get_question_id()),
        message::Release(r) => {
            let r = r.unwrap();
            Seen::Release(r.get_id(), r.get_reference_count())
        }
        message::Call(c) => {
            let c = c.unwrap();
            Seen::Call(
                c.get_question_id(),
                MessageTarget::read(c.get_target().unwrap()).unwrap(),
            )
        }
        message::Disembargo(d) => {
            let d = d.unwrap();
            let target = MessageTarget::read(d.get_target().unwrap()).unwrap();
            let context = match d.get_context().which().unwrap() {
                disembargo::context::SenderLoopback(id) => DisembargoContext::SenderLoopback(id),
                disembargo::context::ReceiverLoopback(id) => {
                    DisembargoContext::ReceiverLoopback(id)
                }
                _ => panic!("a level 3 disembargo"),
            };
            Seen::Disembargo(target, context)
        }
        message::Resolve(r) => {
            let r = r.unwrap();
            let descriptor = match r.which().unwrap() {
                capnp_actix_proto::rpc_capnp::resolve::Cap(d) => {
                    CapDescriptor::read(d.unwrap()).unwrap()
                }
                capnp_actix_proto::rpc_capnp::resolve::Exception(_) => CapDescriptor::None,
            };
            Seen::Resolve(r.get_promise_id(), descriptor)
        }
        message::Return(r) => Seen::Return(r.unwrap().get_answer_id()),
        _ => Seen::Other(tag(frame)),
    }
}

/// What our side sends until `done` holds for what came so far (or
/// [`WAIT`] passes: then what came, for the caller's assertion to fail on).
/// For a message that must come: no fixed window to race against.
pub async fn collect_until(peer: &mut Peer, done: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
    let mut all = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while !done(&all) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match actix_rt::time::timeout(left, peer.next()).await {
            Ok(Some(frame)) => all.push(seen(&frame)),
            Ok(None) | Err(_) => break,
        }
    }
    all
}

/// Everything our side sends within `window`.
pub async fn collect(peer: &mut Peer, window: Duration) -> Vec<Seen> {
    let mut all = Vec::new();
    let deadline = std::time::Instant::now() + window;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match actix_rt::time::timeout(left, peer.next()).await {
            Ok(Some(frame)) => all.push(seen(&frame)),
            Ok(None) | Err(_) => return all,
        }
    }
}

/// A client connection with a bootstrap capability the test answered as
/// `descriptor`. Gives the peer, the capability and the question id.
pub async fn bootstrapped(descriptor: CapDescriptor) -> (Peer, Capability, u32) {
    let mut peer = Peer::connect(ConnOptions::new()).await;
    let cap = peer.conn.send(Bootstrap).await.unwrap().unwrap();
    let question = expect_bootstrap(&peer.recv().await);
    peer.send(&return_cap(question, descriptor)).await;
    // Let the connection read the Return.
    actix_rt::time::sleep(Duration::from_millis(30)).await;
    (peer, cap, question)
}

pub fn echo(
    cap: &Capability,
    text: &str,
) -> capnp::capability::RemotePromise<test::echo_results::Owned> {
    let client: test::Client = cap.client();
    let mut req = client.echo_request();
    req.get().set_text(text);
    req.send()
}

/// A `Call` with hand-built params: `fill` writes the content (a capability
/// pointer in it gets index `i` of `caps`).
pub fn raw_call(
    question_id: u32,
    target: MessageTarget,
    interface_id: u64,
    method_id: u16,
    caps: &[capnp_actix_proto::CapDescriptor],
    fill: impl FnOnce(any_pointer::Builder<'_>),
) -> OutMessage {
    let mut m = capnp_actix_proto::message::new_message();
    let mut table: capnp::private::layout::CapTable = Vec::new();
    {
        let mut c = m.init_root::<message::Builder>().init_call();
        c.set_question_id(question_id);
        target.write(c.reborrow().init_target());
        c.set_interface_id(interface_id);
        c.set_method_id(method_id);
        let mut params = c.init_params();
        {
            let mut content = params.reborrow().get_content();
            capnp::traits::ImbueMut::imbue_mut(&mut content, &mut table);
            fill(content);
        }
        if !caps.is_empty() {
            let mut list = params.init_cap_table(caps.len() as u32);
            for (i, d) in caps.iter().enumerate() {
                d.write(list.reborrow().get(i as u32));
            }
        }
    }
    m
}

/// The `Call` in `message` changed by `edit` (to set a hint, say).
pub fn edit_call(mut message: OutMessage, edit: impl FnOnce(call::Builder<'_>)) -> OutMessage {
    {
        let root: message::Builder = message.get_root().unwrap();
        let message::Call(Ok(call)) = root.which().unwrap() else {
            panic!("not a Call");
        };
        edit(call);
    }
    message
}

/// The next `Call` the connection sends (past other messages).
pub async fn next_call(peer: &mut Peer) -> Frame {
    loop {
        let frame = peer.recv().await;
        if tag(&frame) == CALL {
            return frame;
        }
    }
}

/// The next `Return` the connection sends (past other messages).
pub async fn next_return(peer: &mut Peer) -> Frame {
    loop {
        let frame = peer.recv().await;
        if tag(&frame) == RETURN {
            return frame;
        }
    }
}

/// The first `Return` for `answer_id` the connection sends (past other
/// messages, and Returns for other questions).
pub async fn return_of(peer: &mut Peer, answer_id: u32) -> Frame {
    loop {
        let frame = next_return(peer).await;
        if expect_return_any(&frame).get_answer_id() == answer_id {
            return frame;
        }
    }
}

/// The `Return` in `frame`, for whichever question.
pub fn expect_return_any(frame: &Frame) -> return_::Reader<'_> {
    let root: message::Reader = frame.get_root().unwrap();
    let message::Return(ret) = root.which().unwrap() else {
        panic!("expected a Return, got message tag {}", tag(frame));
    };
    ret.unwrap()
}

/// A capability pointer's worth of client, to set in hand-built content.
pub fn placeholder<C: capnp::capability::FromClientHook>() -> C {
    capnp_actix::Capability::null().client()
}
