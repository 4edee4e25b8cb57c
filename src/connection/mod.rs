//! One connection's protocol as a state machine, with no runtime (in the
//! manner of quinn-proto's `Connection`).
//!
//! Inbound frames go in through [`Connection::receive`]; what the local
//! side does goes in through the other methods (asking a question, letting
//! go of one, exporting, returning, embargoing). What to do comes out:
//! messages to send, from [`Connection::poll_transmit`], in the order they
//! were decided, and [`Event`]s for the runtime, from
//! [`Connection::poll_event`]: calls to deliver, questions answered,
//! answers cancelled or ended, exports released, promises resolved,
//! embargoes lifted, `Disembargo`s to reflect.
//!
//! What only the runtime knows goes in as plain data: each table keeps a
//! slot of the runtime's own (the types of [`Slots`]) beside the protocol's
//! state, and the runtime says which capability a path into an answer leads
//! to ([`Slots::cap_index`]).
//!
//! Every decision is made here once: ids and their reuse, when a question
//! or an answer ends, what a `Finish`, `Release`, `Resolve`, `Disembargo` or
//! `unimplemented` does, which cap descriptors are valid and what they
//! import, the flow limit (which messages run, wait or are refused), the
//! bounds a peer may not pass, and where a `senderLoopback` is reflected
//! (the Tribble rule). A protocol error comes back as an `Err`: the runtime
//! aborts the connection with it ([`Connection::abort`]).
//!
//! [`pair`] wires two connections to each other in memory, so that races
//! are replayed message by message without a runtime.

mod event;
mod inbound;
pub mod pair;
mod read;
#[cfg(test)]
mod tests;
mod wants;

pub use event::{
    CallTo, Counts, Drained, Event, InboundCall, Incoming, Named, Outcome, Sending, Sent,
};
pub use read::ResultsTo;
pub use wants::Wants;

use crate::cap_descriptor::{CapDescriptor, MessageTarget, PromisedAnswer};
use crate::embargo::EmbargoTable;
use crate::error::Error;
use crate::flow::FlowGate;
use crate::message::{self as out, DisembargoContext, OutMessage};
use crate::table::{AnswerTable, Ended, ExportTable, ImportTable, OwnKeys, QuestionTable};
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// The runtime's data kept in the connection's tables, and what only the
/// runtime can say about it.
///
/// ```
/// use capnp_actix_proto::connection::Slots;
/// struct Mine;
/// impl Slots for Mine {
///     type Question = String; // who waits for each answer
///     type Answer = ();
///     type Export = &'static str;
///     type ExportKey = u64;
///     type Import = ();
///     type Embargo = Vec<String>; // calls held back
///     fn cap_index(_: &(), transform: &[u16]) -> Option<usize> {
///         transform.first().map(|&i| usize::from(i))
///     }
/// }
/// ```
pub trait Slots {
    /// Who takes the answer to one of our questions (given back once, in
    /// [`Event::Return`]).
    type Question;
    /// The runtime's side of one of the peer's questions (the running call).
    type Answer;
    /// What one of our exports stands for.
    type Export;
    /// What identifies an exported capability, so that it is exported once
    /// however often it is sent.
    type ExportKey: Hash + Eq + Clone;
    /// The runtime's side of one import (its local reference).
    type Import: Default;
    /// What waits for one of our embargoes.
    type Embargo;
    /// Which capability of `answer`'s results the path `transform` leads
    /// to: its index in the results' cap table (as sent in our `Return`),
    /// `None` if none.
    fn cap_index(answer: &Self::Answer, transform: &[u16]) -> Option<usize>;
}

/// The limits and settings of one connection.
///
/// ```
/// use capnp_actix_proto::connection::Config;
/// let config = Config { max_imports: 100, ..Config::default() };
/// assert!(config.serves_bootstrap);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// Most bytes of the peer's calls that run at once (the flow limit;
    /// `usize::MAX`: none).
    pub flow_limit: usize,
    /// Most of the peer's questions open at once.
    pub max_answers: usize,
    /// Most of the peer's exports we hold.
    pub max_imports: usize,
    /// Most of the peer's `Disembargo{senderLoopback}`s waiting to be
    /// reflected.
    pub max_reflections: usize,
    /// Whether a `Bootstrap` finds an interface here.
    pub serves_bootstrap: bool,
}

impl Default for Config {
    /// No flow limit, 65,536 answers and imports, 1,024 reflections, a
    /// bootstrap interface.
    fn default() -> Self {
        Config {
            flow_limit: usize::MAX,
            max_answers: 1 << 16,
            max_imports: 1 << 16,
            max_reflections: 1024,
            serves_bootstrap: true,
        }
    }
}

/// One of our questions.
struct Question<Q> {
    /// The runtime's key for it, until it lets go.
    key: Option<u64>,
    /// Who waits for the answer, until it comes.
    taker: Option<Q>,
    /// Exports sent in the params, released on a `Return` that says
    /// `releaseParamCaps`.
    param_exports: Vec<u32>,
    /// The call said `sendResultsTo.yourself` (our tail call): the peer
    /// keeps its results.
    results_elsewhere: bool,
}

/// One of the peer's questions.
struct Answer<A> {
    value: A,
    /// Bytes of the call, counted against the flow limit until the Return.
    inbound_bytes: usize,
    /// What the call said of its results: how the answer returns.
    wants: Wants,
    /// What the `Return` said about capabilities, if it carried any.
    sent: Option<Box<Sent>>,
}

/// One of our exports.
struct Export<E> {
    value: E,
    /// Exported as a promise; it gets one `Resolve`.
    promise: bool,
    /// Its `Resolve` went out, describing it as this (`None`: an
    /// exception).
    resolved: Option<Option<CapDescriptor>>,
}

/// One of the peer's exports, held here.
struct Import<I> {
    value: I,
    /// Which local reference is current.
    generation: u64,
    /// The peer said `senderPromise`.
    promise: bool,
}

/// One connection's protocol state.
pub struct Connection<S: Slots> {
    config: Config,
    questions: QuestionTable<Question<S::Question>>,
    question_ids: HashMap<u64, u32, OwnKeys>,
    /// Calls made only to pipeline on may say so (`onlyPromisePipeline`):
    /// until the peer sends a `Return` for one anyway, as a peer that
    /// ignores the hint does.
    pipeline_hint: bool,
    answers: AnswerTable<Answer<S::Answer>>,
    exports: ExportTable<Export<S::Export>, S::ExportKey>,
    imports: ImportTable<Import<S::Import>>,
    next_generation: u64,
    embargoes: EmbargoTable<S::Embargo>,
    gate: FlowGate<inbound::Received>,
    waiting: inbound::Waiting,
    reflections_waiting: usize,
    events: VecDeque<Event<S>>,
    transmits: VecDeque<OutMessage>,
    counts: Counts,
    closed: bool,
}

impl<S: Slots> Connection<S> {
    /// A connection with nothing asked, exported or imported.
    ///
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// let conn = Connection::<Test>::new(Config::default());
    /// assert_eq!(conn.questions(), 0);
    /// ```
    pub fn new(config: Config) -> Self {
        Connection {
            gate: FlowGate::new(config.flow_limit),
            answers: AnswerTable::new(config.max_answers),
            config,
            questions: QuestionTable::new(),
            question_ids: HashMap::default(),
            pipeline_hint: true,
            exports: ExportTable::new(),
            imports: ImportTable::new(),
            next_generation: 0,
            embargoes: EmbargoTable::new(),
            waiting: Default::default(),
            reflections_waiting: 0,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            counts: Counts::default(),
            closed: false,
        }
    }

    /// The next message to send, in the order decided.
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// conn.bootstrap(1, "boot".into());
    /// let m = conn.poll_transmit().unwrap();
    /// assert_eq!(capnp_actix_proto::message::kind(m.get_root_as_reader().unwrap()), "bootstrap");
    /// assert!(conn.poll_transmit().is_none());
    /// ```
    pub fn poll_transmit(&mut self) -> Option<OutMessage> {
        self.transmits.pop_front()
    }

    /// Whether a message waits to be sent.
    pub fn has_transmit(&self) -> bool {
        !self.transmits.is_empty()
    }

    /// The next thing for the runtime to do.
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// let bootstrap = capnp_actix_proto::message::bootstrap(0);
    /// conn.receive(capnp_actix_proto::connection::pair::reframe(&bootstrap)).unwrap();
    /// assert!(conn.poll_event().is_some());
    /// assert!(conn.poll_event().is_none());
    /// ```
    pub fn poll_event(&mut self) -> Option<Event<S>> {
        self.events.pop_front()
    }

    /// Queues `message` to be sent after everything decided so far.
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// conn.send(capnp_actix_proto::message::release(3, 1));
    /// assert!(conn.has_transmit());
    /// ```
    pub fn send(&mut self, message: OutMessage) {
        if !self.closed {
            self.transmits.push_back(message);
        }
    }

    /// Ends the connection after telling the peer why: an `Abort` is the
    /// last message sent. Nothing is decided after this.
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// conn.abort(&capnp_actix_proto::Error::failed("bad peer"));
    /// assert!(conn.is_closed() && conn.has_transmit());
    /// ```
    pub fn abort(&mut self, reason: &Error) {
        if !self.closed {
            self.transmits.push_back(out::abort(reason));
        }
        self.close();
    }

    /// Ends the connection without a word (the peer is gone, or the local
    /// side closed it).
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Takes everything the tables hold, for the runtime to fail, cancel or
    /// drop; the connection is closed.
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// conn.bootstrap(1, "waits".into());
    /// let drained = conn.drain();
    /// assert_eq!(drained.questions, vec!["waits".to_string()]);
    /// assert!(conn.is_closed());
    /// ```
    pub fn drain(&mut self) -> Drained<S> {
        self.closed = true;
        self.question_ids.clear();
        self.events.clear();
        Drained {
            questions: self
                .questions
                .drain()
                .into_iter()
                .filter_map(|(_, q)| q.taker)
                .collect(),
            answers: self
                .answers
                .drain()
                .into_iter()
                .map(|(id, a)| (id, a.value))
                .collect(),
            embargoes: self.embargoes.drain(),
            exports: self.exports.drain().into_iter().map(|e| e.value).collect(),
            imports: self
                .imports
                .drain()
                .into_iter()
                .map(|(_, i, _)| (i.value, i.promise))
                .collect(),
        }
    }

    // ----- questions (ours) -----

    /// Asks the peer for its bootstrap interface: sends `Bootstrap`; the
    /// answer goes to `taker`. `key` is the runtime's name for the
    /// question.
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// let id = conn.bootstrap(7, "boot".into());
    /// assert_eq!(conn.question_id(7), Some(id));
    /// ```
    pub fn bootstrap(&mut self, key: u64, taker: S::Question) -> u32 {
        let id = self.asked(key, taker, Vec::new());
        self.send(out::bootstrap(id));
        id
    }

    /// The id the next question gets.
    pub fn next_question_id(&self) -> u32 {
        self.questions.next_id()
    }

    /// The id of the next call the runtime writes, and what it says, for a
    /// caller that wants `wants`: a call made only to pipeline on gets an id
    /// of its own range and says `onlyPromisePipeline` (P-14), until the
    /// peer showed it ignores the hint (an ordinary call then). Write the
    /// call with both ([`Wants::write`]), then record it with
    /// [`asked_with`](Self::asked_with).
    ///
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection, Wants};
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// let (id, wants) = conn.next_question(Wants::PipelineOnly);
    /// assert_eq!(wants, Wants::PipelineOnly);
    /// assert_eq!(conn.asked_with(9, "caller".into(), vec![], wants), id);
    /// ```
    pub fn next_question(&self, wants: Wants) -> (u32, Wants) {
        match wants {
            Wants::PipelineOnly if self.pipeline_hint => (self.questions.next_pipeline_id(), wants),
            Wants::PipelineOnly => (self.questions.next_id(), Wants::Results),
            _ => (self.questions.next_id(), wants),
        }
    }

    /// Records a question the runtime is about to send (a `Call` written
    /// with [`next_question_id`](Self::next_question_id)), with the exports
    /// its params carry. Send its message next.
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// let id = conn.next_question_id();
    /// // ... write a Call with this id ...
    /// assert_eq!(conn.asked(9, "caller".into(), vec![]), id);
    /// ```
    pub fn asked(&mut self, key: u64, taker: S::Question, param_exports: Vec<u32>) -> u32 {
        self.asked_with(key, taker, param_exports, Wants::Results)
    }

    /// The same, for a call that says what `wants` says (as
    /// [`next_question`](Self::next_question) gave it): made only to
    /// pipeline on, no `Return` is awaited and dropping it sends `Finish`
    /// and frees its id; a tail call (P-13, `sendResultsTo.yourself`) gets
    /// a `Return` that says `resultsSentElsewhere`, and our answer's
    /// `Return` names it in `takeFromOtherQuestion`.
    ///
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection, Wants};
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// let (id, wants) = conn.next_question(Wants::Elsewhere);
    /// assert_eq!(conn.asked_with(7, "tail".into(), Vec::new(), wants), id);
    /// ```
    pub fn asked_with(
        &mut self,
        key: u64,
        taker: S::Question,
        param_exports: Vec<u32>,
        wants: Wants,
    ) -> u32 {
        let question = Question {
            key: Some(key),
            taker: Some(taker),
            param_exports,
            results_elsewhere: wants == Wants::Elsewhere,
        };
        let id = match wants {
            Wants::PipelineOnly => self.questions.insert_pipeline_only(question),
            _ => self.questions.insert(question),
        };
        self.question_ids.insert(key, id);
        id
    }

    /// Who takes the answer to question `id`, until it comes.
    pub fn taker_mut(&mut self, id: u32) -> Option<&mut S::Question> {
        self.questions.get_mut(id)?.taker.as_mut()
    }

    /// The id of the question the runtime knows as `key`, while it is
    /// asked and not let go.
    pub fn question_id(&self, key: u64) -> Option<u32> {
        self.question_ids.get(&key).copied()
    }

    /// The runtime let go of question `key`: a `Finish` goes out (saying
    /// `releaseResultCaps` if the `Return` has not come, whose capabilities
    /// are then not imported).
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// conn.bootstrap(1, "boot".into());
    /// conn.poll_transmit();
    /// conn.question_dropped(1);
    /// let finish = conn.poll_transmit().unwrap();
    /// assert_eq!(capnp_actix_proto::message::kind(finish.get_root_as_reader().unwrap()), "finish");
    /// ```
    pub fn question_dropped(&mut self, key: u64) {
        let Some(id) = self.question_ids.remove(&key) else {
            return;
        };
        if self.closed {
            return;
        }
        if let Some(question) = self.questions.get_mut(id) {
            question.key = None;
        }
        if let Some(release_result_caps) = self.questions.finish(id) {
            self.send(out::finish(id, release_result_caps));
        }
    }

    /// Our questions whose ids are in use.
    pub fn questions(&self) -> usize {
        self.questions.len()
    }

    // ----- answers (the peer's questions) -----

    /// Starts the answer to the peer's question `id` (after
    /// [`Event::Call`] or [`Event::Bootstrap`]), which returns as `wants`
    /// says (the call's [`InboundCall::wants`]); `bytes` count against the
    /// flow limit until its `Return`.
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// use capnp_actix_proto::connection::Wants;
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// conn.start_answer(0, vec![], Wants::Results, 64).unwrap();
    /// assert!(conn.start_answer(0, vec![], Wants::Results, 0).is_err(), "a duplicate");
    /// assert_eq!(conn.inbound_bytes(), 64);
    /// ```
    pub fn start_answer(
        &mut self,
        id: u32,
        value: S::Answer,
        wants: Wants,
        bytes: usize,
    ) -> Result<(), Error> {
        let answer = Answer {
            value,
            inbound_bytes: bytes,
            wants,
            sent: None,
        };
        self.answers
            .start(id, answer)
            .map_err(|e| Error::failed(e.to_string()))?;
        self.gate.started(bytes);
        Ok(())
    }

    /// The runtime's side of answer `id`.
    pub fn answer(&self, id: u32) -> Option<&S::Answer> {
        self.answers.get(id).map(|a| &a.value)
    }

    /// The same, to change.
    pub fn answer_mut(&mut self, id: u32) -> Option<&mut S::Answer> {
        self.answers.get_mut(id).map(|a| &mut a.value)
    }

    /// Whether our `Return` for answer `id` went out.
    pub fn is_returned(&self, id: u32) -> bool {
        self.answers.is_returned(id)
    }

    /// Our `Return` for answer `id` went out (the runtime wrote it), having
    /// said `sent` and `noFinishNeeded` as given. Its bytes leave the flow
    /// limit, so what waited may go on
    /// ([`handle_waiting`](Self::handle_waiting)). If the `Finish` came
    /// first, or none is needed, the answer ends: its slot comes back
    /// (exports the `Finish` asked to release come as [`Event::Released`]).
    ///
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection, Sent};
    /// use capnp_actix_proto::connection::Wants;
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// conn.start_answer(0, vec![], Wants::Results, 64).unwrap();
    /// // ... the Return goes out, saying noFinishNeeded ...
    /// assert!(conn.returned(0, Sent::default(), true).is_some(), "it ended");
    /// assert_eq!(conn.inbound_bytes(), 0);
    /// ```
    pub fn returned(&mut self, id: u32, sent: Sent, no_finish_needed: bool) -> Option<S::Answer> {
        let answer = self.answers.get_mut(id)?;
        let bytes = std::mem::take(&mut answer.inbound_bytes);
        if !sent.exports.is_empty() || !sent.described.is_empty() || sent.tail.is_some() {
            answer.sent = Some(Box::new(sent));
        }
        let ended = self.answers.returned(id, no_finish_needed);
        self.gate.returned(bytes);
        ended.map(|ended| self.release_answer(ended))
    }

    /// Answer `id`, to return: its slot and how it returns (what its call
    /// wants: [`Wants::PipelineOnly`] sends no `Return`,
    /// [`Wants::Elsewhere`] says `resultsSentElsewhere`, and results stay
    /// for pipelined calls if [`Wants::keeps_results`]); `None` if it
    /// returned already (or is unknown).
    ///
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection, Sent};
    /// use capnp_actix_proto::connection::Wants;
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// conn.start_answer(3, vec![], Wants::Elsewhere, 0).unwrap();
    /// assert!(matches!(conn.answer_to_return(3), Some((_, Wants::Elsewhere))));
    /// conn.returned(3, Sent::default(), false);
    /// assert!(conn.answer_to_return(3).is_none());
    /// ```
    pub fn answer_to_return(&mut self, id: u32) -> Option<(&mut S::Answer, Wants)> {
        if self.closed || self.answers.is_returned(id) {
            return None;
        }
        self.answers.get_mut(id).map(|a| (&mut a.value, a.wants))
    }

    /// The peer's questions whose ids are in use.
    pub fn answers(&self) -> usize {
        self.answers.len()
    }

    /// Bytes of the peer's calls that run (handled, not returned).
    pub fn inbound_bytes(&self) -> usize {
        self.gate.running()
    }

    /// An answer ended: what its results carried is released if the
    /// peer's `Finish` asked.
    fn end_answer(&mut self, ended: Ended<Answer<S::Answer>>) {
        let value = self.release_answer(ended);
        self.events.push_back(Event::AnswerEnded(value));
    }

    /// What an ended answer held: its exports go if the `Finish` asked;
    /// its slot comes back.
    fn release_answer(&mut self, ended: Ended<Answer<S::Answer>>) -> S::Answer {
        if ended.release_result_caps {
            for export in ended.value.sent.map(|s| s.exports).unwrap_or_default() {
                self.release_export(export, 1);
            }
        }
        ended.value.value
    }

    // ----- naming what we send -----

    /// How to name a capability we send to the peer (in a cap table or a
    /// `Resolve`), from what the runtime knows of it: the peer's own
    /// exports by their ids (`receiverHosted`), paths into the answers to
    /// our questions by their paths (`receiverAnswer`, P-12), anything else
    /// as our export, once per capability however often sent (T-04), a
    /// promise as `senderPromise` with one `Resolve` to come (P-10, P-20).
    /// A path into a question that is let go (or was never asked here)
    /// falls back to a promise export. `make` gives the export's slot if it
    /// is new; [`Named::new_promise`] says a `Resolve` must be arranged.
    ///
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection, Sending};
    /// use capnp_actix_proto::CapDescriptor;
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// let named = conn.name(Sending::Import(4), || unreachable!());
    /// assert_eq!(named.descriptor, CapDescriptor::ReceiverHosted(4));
    /// let named = conn.name(Sending::Promise(9), || "promise".into());
    /// assert_eq!((named.descriptor, named.new_promise), (CapDescriptor::SenderPromise(0), true));
    /// // Sent again: the same export, and its Resolve is arranged already.
    /// let again = conn.name(Sending::Promise(9), || unreachable!());
    /// assert_eq!((again.descriptor, again.new_promise), (CapDescriptor::SenderPromise(0), false));
    /// ```
    pub fn name(
        &mut self,
        sending: Sending<S::ExportKey>,
        make: impl FnOnce() -> S::Export,
    ) -> Named {
        let (key, promise) = match sending {
            Sending::Null => return Named::plain(CapDescriptor::None),
            Sending::Import(id) => return Named::plain(CapDescriptor::ReceiverHosted(id)),
            Sending::QuestionPath {
                key,
                transform,
                otherwise,
            } => match self.question_id(key) {
                Some(question_id) => {
                    return Named::plain(CapDescriptor::ReceiverAnswer(PromisedAnswer {
                        question_id,
                        transform,
                    }))
                }
                None => (otherwise, true),
            },
            Sending::Promise(key) => (key, true),
            Sending::Object(key) => (key, false),
        };
        let (id, new) = self.export(key, promise, make);
        match promise {
            true => Named {
                descriptor: CapDescriptor::SenderPromise(id),
                new_promise: new,
            },
            false => Named::plain(CapDescriptor::SenderHosted(id)),
        }
    }

    // ----- exports (ours) -----

    /// Exports the capability `key` names (made by `make` the first time),
    /// adding one reference; gives its id and whether it is new. A promise
    /// gets one `Resolve` ([`resolve_export`](Self::resolve_export)).
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// let (id, new) = conn.export(42, false, || "object".into());
    /// assert!(new);
    /// assert_eq!(conn.export(42, false, || unreachable!()), (id, false));
    /// assert_eq!(conn.export_refs(id), Some(2));
    /// ```
    pub fn export(
        &mut self,
        key: S::ExportKey,
        promise: bool,
        make: impl FnOnce() -> S::Export,
    ) -> (u32, bool) {
        let mut new = false;
        let id = self.exports.export(key, || {
            new = true;
            Export {
                value: make(),
                promise,
                resolved: None,
            }
        });
        (id, new)
    }

    /// The export of `key`, if it is exported (and, for a promise, not
    /// resolved yet).
    pub fn export_id(&self, key: &S::ExportKey) -> Option<u32> {
        self.exports.id_of(key)
    }

    /// What export `id` stands for.
    pub fn export_value(&self, id: u32) -> Option<&S::Export> {
        self.exports.get(id).map(|e| &e.value)
    }

    /// The same, to change.
    pub fn export_value_mut(&mut self, id: u32) -> Option<&mut S::Export> {
        self.exports.get_mut(id).map(|e| &mut e.value)
    }

    /// Whether export `id` is a promise that still awaits its `Resolve`.
    pub fn awaits_resolve(&self, id: u32) -> bool {
        !self.closed
            && self
                .exports
                .get(id)
                .is_some_and(|e| e.promise && e.resolved.is_none())
    }

    /// Sends the one `Resolve` of promise export `id`, describing what it
    /// became (or the exception it broke with). The id stands for that
    /// now: the promise, if sent again, is a new export. Gives `false` (and
    /// sends nothing) if the export is gone, no promise, or resolved.
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// use capnp_actix_proto::CapDescriptor;
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// let (promise, _) = conn.export(1, true, || "promise".into());
    /// let (object, _) = conn.export(2, false, || "object".into());
    /// assert!(conn.resolve_export(promise, Ok(CapDescriptor::SenderHosted(object))));
    /// assert!(!conn.resolve_export(promise, Ok(CapDescriptor::SenderHosted(object))), "once");
    /// ```
    pub fn resolve_export(&mut self, id: u32, to: Result<CapDescriptor, Error>) -> bool {
        if !self.awaits_resolve(id) {
            return false;
        }
        let message = out::resolve(id, to.as_ref());
        if let Some(export) = self.exports.get_mut(id) {
            export.resolved = Some(to.ok());
        }
        self.exports.forget_key(id);
        self.counts.resolves_sent += 1;
        self.send(message);
        true
    }

    /// Takes `count` references to export `id` back (the peer released
    /// them, or never saw them): an export that reaches zero goes.
    fn release_export(&mut self, id: u32, count: u32) {
        if let Ok(Some(export)) = self.exports.release(id, count) {
            self.events.push_back(Event::Released(export.value));
        }
    }

    /// Our exports.
    pub fn exports(&self) -> usize {
        self.exports.len()
    }

    /// How many references the peer holds to export `id`.
    pub fn export_refs(&self, id: u32) -> Option<u32> {
        self.exports.ref_count(id)
    }

    // ----- imports (the peer's exports) -----

    /// The runtime's side of import `id`, and which of its local references
    /// is current.
    pub fn import_mut(&mut self, id: u32) -> Option<(&mut S::Import, u64)> {
        self.imports
            .get_mut(id)
            .map(|i| (&mut i.value, i.generation))
    }

    /// Makes a new local reference to import `id` current (the last one
    /// went): gives its generation, which
    /// [`import_dropped`](Self::import_dropped) names.
    pub fn renew_import(&mut self, id: u32) -> u64 {
        self.next_generation += 1;
        let generation = self.next_generation;
        if let Some(import) = self.imports.get_mut(id) {
            import.generation = generation;
        }
        generation
    }

    /// The local reference `generation` to import `id` went: unless a newer
    /// one replaced it, a `Release` of every reference the peer gave goes
    /// out.
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// use capnp_actix_proto::connection::Wants;
    /// use capnp_actix_proto::connection::pair::{Pair, Side};
    /// use capnp_actix_proto::CapDescriptor;
    /// let mut pair = Pair::new();
    /// pair.b.asked(1, "q".into(), vec![]);
    /// let (export, _) = pair.a.export(5, false, || "object".into());
    /// pair.a.start_answer(0, vec![vec![0]], Wants::Results, 0).unwrap();
    /// pair.return_results(Side::A, 0, &[CapDescriptor::SenderHosted(export)]);
    /// pair.deliver(Side::A).unwrap();
    /// let (_, generation) = pair.b.import_mut(export).unwrap();
    /// pair.b.import_dropped(export, generation);
    /// assert!(pair.b.has_transmit(), "a Release goes out");
    /// assert_eq!(pair.b.imports(), 0);
    /// ```
    pub fn import_dropped(&mut self, id: u32, generation: u64) {
        let current = self
            .imports
            .get(id)
            .is_some_and(|i| i.generation == generation);
        if !current || self.closed {
            return;
        }
        if let Some((_, count)) = self.imports.remove(id) {
            self.send(out::release(id, count));
        }
    }

    /// The peer's exports we hold.
    pub fn imports(&self) -> usize {
        self.imports.len()
    }

    /// How many references the peer gave us to import `id`.
    pub fn import_refs(&self, id: u32) -> Option<u32> {
        self.imports.ref_count(id)
    }

    // ----- embargoes -----

    /// Starts an embargo on `target` (a promise import or a path into one
    /// of our questions' answers): `Disembargo{senderLoopback}` goes out,
    /// and `waiter` comes back in [`Event::EmbargoLifted`] when the peer
    /// reflects it.
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// use capnp_actix_proto::MessageTarget;
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// let id = conn.embargo(MessageTarget::ImportedCap(3), "held calls".into());
    /// assert_eq!(conn.embargoes(), 1);
    /// assert_eq!(conn.counts().embargoes_started, 1);
    /// # let _ = id;
    /// ```
    pub fn embargo(&mut self, target: MessageTarget, waiter: S::Embargo) -> u32 {
        self.counts.embargoes_started += 1;
        let id = self.embargoes.start(waiter);
        self.send(out::disembargo(
            &target,
            DisembargoContext::SenderLoopback(id),
        ));
        id
    }

    /// Starts an embargo on the path `transform` of question `key`; gives
    /// `waiter` back if there is nothing to wait for (the question is let
    /// go, or the connection closed: nothing can still be on its way).
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// assert_eq!(conn.embargo_path(1, &[0], "held".into()), Err("held".to_string()));
    /// conn.bootstrap(1, "boot".into());
    /// assert!(conn.embargo_path(1, &[0], "held".into()).is_ok());
    /// ```
    pub fn embargo_path(
        &mut self,
        key: u64,
        transform: &[u16],
        waiter: S::Embargo,
    ) -> Result<u32, S::Embargo> {
        match self.question_id(key) {
            Some(question_id) if !self.closed => {
                let target = MessageTarget::PromisedAnswer(PromisedAnswer {
                    question_id,
                    transform: transform.to_vec(),
                });
                Ok(self.embargo(target, waiter))
            }
            _ => Err(waiter),
        }
    }

    /// Sends the reflection of the peer's embargo `embargo_id` along
    /// `target` (after [`Event::Reflect`] or [`Event::ReflectWhenSettled`]).
    /// ```
    /// use capnp_actix_proto::connection::{pair::Test, Config, Connection};
    /// use capnp_actix_proto::MessageTarget;
    /// let mut conn = Connection::<Test>::new(Config::default());
    /// conn.reflect(&MessageTarget::ImportedCap(2), 0);
    /// assert!(conn.has_transmit());
    /// ```
    pub fn reflect(&mut self, target: &MessageTarget, embargo_id: u32) {
        self.send(out::disembargo(
            target,
            DisembargoContext::ReceiverLoopback(embargo_id),
        ));
    }

    /// A reflection that waited for its path to settle is done (sent or
    /// not): it no longer counts against the bound.
    pub fn reflection_done(&mut self) {
        self.reflections_waiting = self.reflections_waiting.saturating_sub(1);
    }

    /// Embargoes in force.
    pub fn embargoes(&self) -> usize {
        self.embargoes.len()
    }

    /// Cumulative counts.
    pub fn counts(&self) -> Counts {
        self.counts
    }
}
