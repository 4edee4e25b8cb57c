//! Two connections wired to each other in memory (as quinn-proto's tests
//! wire two endpoints), for replaying exchanges message by message with no
//! runtime. What a runtime would do (write calls and returns, decide
//! embargoes) is done by hand with the helpers here, so each test says
//! exactly which message goes when.
//!
//! ```
//! use capnp_actix_proto::connection::pair::{Pair, Side};
//! use capnp_actix_proto::connection::Wants;
//! use capnp_actix_proto::connection::{Event, Incoming, Outcome};
//! use capnp_actix_proto::CapDescriptor;
//! let mut pair = Pair::new();
//! pair.a.bootstrap(1, "boot".into());
//! pair.deliver(Side::A).unwrap();
//! let Some(Event::Bootstrap { question_id, refusal: None }) = pair.b.poll_event() else { panic!() };
//! pair.b.start_answer(question_id, vec![vec![]], Wants::Results, 0).unwrap();
//! let (export, _) = pair.b.export(7, false, || "main".into());
//! pair.return_results(Side::B, question_id, &[CapDescriptor::SenderHosted(export)]);
//! pair.deliver(Side::B).unwrap();
//! let Some(Event::Return { outcome: Outcome::Results { caps, .. }, .. }) = pair.a.poll_event() else { panic!() };
//! assert_eq!(caps, vec![Incoming::Import { id: export, promise: false }]);
//! ```

use super::{Config, Connection, Sent, Slots};
use crate::cap_descriptor::{CapDescriptor, MessageTarget};
use crate::error::Error;
use crate::frame::{self, FrameDecoder, Limits};
use crate::message::{new_message, OutMessage};
use crate::rpc_capnp::message;

/// Plain slots for tests: questions, exports and embargoes are labels; an
/// answer is the path of each capability of its results, by cap table
/// index.
///
/// ```
/// use capnp_actix_proto::connection::{pair::Test, Slots};
/// assert_eq!(Test::cap_index(&vec![vec![0], vec![1, 2]], &[1, 2]), Some(1));
/// ```
pub struct Test;

impl Slots for Test {
    type Question = String;
    type Answer = Vec<Vec<u16>>;
    type Export = String;
    type ExportKey = u64;
    type Import = ();
    type Embargo = String;

    fn cap_index(answer: &Vec<Vec<u16>>, transform: &[u16]) -> Option<usize> {
        answer.iter().position(|path| path == transform)
    }
}

/// Which of the two connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Connection `a`.
    A,
    /// Connection `b`.
    B,
}

/// Two connections, each the other's peer.
pub struct Pair {
    /// One side.
    pub a: Connection<Test>,
    /// The other.
    pub b: Connection<Test>,
}

impl Default for Pair {
    fn default() -> Self {
        Pair::new()
    }
}

impl Pair {
    /// Two connections with the default configuration.
    pub fn new() -> Self {
        Pair::with_configs(Config::default(), Config::default())
    }

    /// Two connections configured as given.
    pub fn with_configs(a: Config, b: Config) -> Self {
        Pair {
            a: Connection::new(a),
            b: Connection::new(b),
        }
    }

    /// The connection on `side`.
    pub fn side(&mut self, side: Side) -> &mut Connection<Test> {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// Delivers the next message `from` has to send to its peer, framed and
    /// read back as the transport would; gives whether there was one. An
    /// `Err` is the receiver's protocol error.
    pub fn deliver_one(&mut self, from: Side) -> Result<bool, Error> {
        let (sender, receiver) = match from {
            Side::A => (&mut self.a, &mut self.b),
            Side::B => (&mut self.b, &mut self.a),
        };
        let Some(message) = sender.poll_transmit() else {
            return Ok(false);
        };
        receiver.receive(reframe(&message))?;
        Ok(true)
    }

    /// Delivers everything `from` has to send; gives how many messages.
    pub fn deliver(&mut self, from: Side) -> Result<usize, Error> {
        let mut n = 0;
        while self.deliver_one(from)? {
            n += 1;
        }
        Ok(n)
    }

    /// Sends a `Call` from `side` to `target` with `caps` in its params, as
    /// a runtime would: the question is recorded (as `key`, answered to
    /// `taker`), with the exports among `caps` as its param exports. Gives
    /// the question id.
    pub fn call(
        &mut self,
        side: Side,
        key: u64,
        target: &MessageTarget,
        caps: &[CapDescriptor],
    ) -> u32 {
        let conn = self.side(side);
        let id = conn.next_question_id();
        let message = call_message(id, target, caps);
        let exports = caps.iter().filter_map(export_of).collect();
        let asked = conn.asked(key, format!("question {key}"), exports);
        debug_assert_eq!(asked, id);
        conn.send(message);
        id
    }

    /// Sends the `Return` of answer `answer_id` from `side` with `caps` in
    /// its results (each described as given), as a runtime would, and
    /// records it. Without capabilities it says `noFinishNeeded`. Gives the
    /// answer's slot if that ended it.
    pub fn return_results(
        &mut self,
        side: Side,
        answer_id: u32,
        caps: &[CapDescriptor],
    ) -> Option<Vec<Vec<u16>>> {
        let conn = self.side(side);
        let no_finish_needed = caps.is_empty();
        conn.send(return_message(answer_id, caps, no_finish_needed));
        let sent = Sent {
            exports: caps.iter().filter_map(export_of).collect(),
            described: caps.iter().cloned().map(Some).collect(),
            tail: None,
        };
        conn.returned(answer_id, sent, no_finish_needed)
    }
}

/// An export of ours that a descriptor we send adds a reference to.
fn export_of(descriptor: &CapDescriptor) -> Option<u32> {
    match descriptor {
        CapDescriptor::SenderHosted(id) | CapDescriptor::SenderPromise(id) => Some(*id),
        _ => None,
    }
}

/// `message` as the peer reads it off the wire.
///
/// ```
/// use capnp_actix_proto::connection::pair::reframe;
/// let frame = reframe(&capnp_actix_proto::message::finish(3, false));
/// assert!(frame.size_in_words() > 0);
/// ```
pub fn reframe(message: &OutMessage) -> frame::Frame {
    let mut bytes = Vec::new();
    frame::encode(message, &mut bytes);
    let mut decoder = FrameDecoder::new(Limits::default());
    decoder.push(&bytes);
    match decoder.next_frame() {
        Ok(Some(frame)) => frame,
        _ => unreachable!("a message we built frames and reads back"),
    }
}

fn write_caps(payload: crate::rpc_capnp::payload::Builder<'_>, caps: &[CapDescriptor]) {
    let mut table = payload.init_cap_table(caps.len() as u32);
    for (i, d) in caps.iter().enumerate() {
        d.write(table.reborrow().get(i as u32));
    }
}

/// `Call{question_id, target, params: caps}` (interface 0, method 0).
///
/// ```
/// use capnp_actix_proto::connection::pair::call_message;
/// use capnp_actix_proto::cap_descriptor::MessageTarget;
/// let m = call_message(0, &MessageTarget::ImportedCap(0), &[]);
/// ```
pub fn call_message(
    question_id: u32,
    target: &MessageTarget,
    caps: &[CapDescriptor],
) -> OutMessage {
    let mut m = new_message();
    let mut call = m.init_root::<message::Builder>().init_call();
    call.set_question_id(question_id);
    target.write(call.reborrow().init_target());
    call.reborrow().init_send_results_to().set_caller(());
    write_caps(call.init_params(), caps);
    m
}

/// `Return{answer_id, results: caps}`.
///
/// ```
/// use capnp_actix_proto::connection::pair::return_message;
/// let m = return_message(0, &[], true);
/// ```
pub fn return_message(
    answer_id: u32,
    caps: &[CapDescriptor],
    no_finish_needed: bool,
) -> OutMessage {
    let mut m = new_message();
    let mut ret = m.init_root::<message::Builder>().init_return();
    ret.set_answer_id(answer_id);
    ret.set_release_param_caps(false);
    ret.set_no_finish_needed(no_finish_needed);
    write_caps(ret.init_results(), caps);
    m
}
