//! What goes in and out of a [`Connection`] as plain data: what the peer
//! names ([`Incoming`], [`CallTo`]), what the runtime is told to do
//! ([`Event`] and its parts), what it says of what it sends ([`Sending`],
//! [`Sent`]) and what a closed connection hands back ([`Drained`]).

use super::read::ResultsTo;
use super::wants::Wants;
#[cfg(doc)]
use super::Connection;
use super::Slots;
use crate::cap_descriptor::{CapDescriptor, MessageTarget, PromisedAnswer};
use crate::embargo::Resolution;
use crate::error::Error;
use crate::frame::Frame;

/// What a capability the peer names in a cap table is here, once its
/// reference is counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// No capability.
    None,
    /// One more reference to import `id` (the peer's export); a promise if
    /// the peer said `senderPromise`. Its slot is
    /// [`Connection::import_mut`].
    Import {
        /// The import id.
        id: u32,
        /// The peer exported a promise: a `Resolve` follows.
        promise: bool,
    },
    /// Our export `id`, which exists.
    Export(u32),
    /// A path into our answer to one of the peer's questions, which
    /// exists.
    Answer(PromisedAnswer),
    /// Nothing that exists: calls on it fail with this.
    Broken(Error),
}

/// What an inbound call is addressed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallTo {
    /// Our export `id`, which exists.
    Export(u32),
    /// A path into one of our answers, which exists.
    Answer {
        /// The answer.
        question_id: u32,
        /// The path into its results.
        transform: Vec<u16>,
        /// Whether our `Return` for it went out.
        returned: bool,
    },
    /// Nothing that exists (an answer that ended): the call fails with this.
    Broken(Error),
}

/// A call from the peer, to deliver. Start its answer with
/// [`Connection::start_answer`].
pub struct InboundCall {
    /// The peer's question id, which becomes our answer id.
    pub question_id: u32,
    /// What it calls.
    pub target: CallTo,
    /// The method's interface.
    pub interface_id: u64,
    /// The method.
    pub method_id: u16,
    /// Where the results go.
    pub results_to: ResultsTo,
    /// What the caller wants of the results (P-13, P-14): how the answer
    /// returns, given to [`Connection::start_answer`](super::Connection::start_answer).
    pub wants: Wants,
    /// The params' capabilities, counted.
    pub caps: Vec<Incoming>,
    /// The message, which holds the params.
    pub frame: Frame,
    /// Its size, which counts against the flow limit until the `Return`.
    pub bytes: usize,
}

/// What a question's answer is.
pub enum Outcome {
    /// Results, with their capabilities counted; the message holds them.
    Results {
        /// The cap table, counted.
        caps: Vec<Incoming>,
        /// The `Return` message.
        frame: Frame,
    },
    /// An exception (or a cancellation, or an echo of `unimplemented`).
    Error(Error),
    /// The results of our answer to the peer's question with this id (a
    /// call the peer made to us with `sendResultsTo.yourself`), once it
    /// settles.
    TakeFrom(u32),
    /// The peer kept the results (our tail call said
    /// `sendResultsTo.yourself`): calls pipelined on the question still go
    /// to it, until our `Finish`.
    SentElsewhere,
}

impl std::fmt::Debug for InboundCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundCall")
            .field("question_id", &self.question_id)
            .field("target", &self.target)
            .field("caps", &self.caps)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Results { caps, .. } => f
                .debug_struct("Results")
                .field("caps", caps)
                .finish_non_exhaustive(),
            Outcome::Error(e) => f.debug_tuple("Error").field(e).finish(),
            Outcome::TakeFrom(id) => f.debug_tuple("TakeFrom").field(id).finish(),
            Outcome::SentElsewhere => f.write_str("SentElsewhere"),
        }
    }
}

/// What the runtime has to do, in the order the connection decided it.
pub enum Event<S: Slots> {
    /// The peer asks for our bootstrap interface as `question_id`: start
    /// its answer, with this exception if `refusal` says so.
    Bootstrap {
        /// The peer's question.
        question_id: u32,
        /// Why it gets an exception instead, if it does.
        refusal: Option<Error>,
    },
    /// A call to deliver.
    Call(InboundCall),
    /// A call the flow limit refused has its turn: its `Return` went out
    /// already. Start its answer (settled with `refusal`, kept for the
    /// peer's `takeFromOtherQuestion` if `results_elsewhere`) and mark it
    /// returned.
    Refused {
        /// The peer's question.
        question_id: u32,
        /// The call said `sendResultsTo.yourself`.
        results_elsewhere: bool,
        /// The exception it got.
        refusal: Error,
    },
    /// One of our questions is answered.
    Return {
        /// The question.
        question_id: u32,
        /// Who waits for the answer.
        taker: Option<S::Question>,
        /// The answer.
        outcome: Outcome,
        /// No `Finish` will be sent for it (its id is free already).
        no_finish_needed: bool,
    },
    /// The peer finished one of our answers before it returned: cancel the
    /// call (its `Return` still goes out).
    Cancel {
        /// The answer.
        question_id: u32,
        /// The `Finish` said `requireEarlyCancellationWorkaround`: a call
        /// not yet delivered to its object is delivered first, and only
        /// then cancelled (so that its method may refuse, as under
        /// `RunToCompletion`).
        after_delivery: bool,
    },
    /// One of our answers ended.
    AnswerEnded(S::Answer),
    /// The peer released one of our exports for good.
    Released(S::Export),
    /// A promise the peer exported to us resolved. What it resolved to is
    /// counted already; `resolution` is what the peer's word makes it (for
    /// the embargo rule).
    Resolve {
        /// The import.
        promise_id: u32,
        /// What it resolved to.
        to: Result<Incoming, Error>,
        /// What the peer's descriptor says it became.
        resolution: Resolution,
    },
    /// The peer reflected one of our embargoes: what waited goes on.
    EmbargoLifted(S::Embargo),
    /// Send `Disembargo{target, receiverLoopback: embargo_id}` once the
    /// calls the runtime already had under way to `target` are sent
    /// ([`Connection::reflect`]).
    Reflect {
        /// Where it goes back to (the Tribble rule).
        target: MessageTarget,
        /// The peer's embargo.
        embargo_id: u32,
    },
    /// The same, for a path into one of our answers: once that path has
    /// settled here (past our own embargo on it, if any), then
    /// [`Connection::reflect`] and [`Connection::reflection_done`].
    ReflectWhenSettled {
        /// The answer.
        question_id: u32,
        /// The path.
        transform: Vec<u16>,
        /// Where it goes back to.
        target: MessageTarget,
        /// The peer's embargo.
        embargo_id: u32,
    },
    /// The peer aborted the connection.
    Aborted(Error),
}

impl<S: Slots> std::fmt::Debug for Event<S>
where
    S::Question: std::fmt::Debug,
    S::Answer: std::fmt::Debug,
    S::Export: std::fmt::Debug,
    S::Embargo: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Bootstrap {
                question_id,
                refusal,
            } => f
                .debug_struct("Bootstrap")
                .field("question_id", question_id)
                .field("refusal", refusal)
                .finish(),
            Event::Call(call) => f.debug_tuple("Call").field(call).finish(),
            Event::Refused {
                question_id,
                results_elsewhere,
                ..
            } => f
                .debug_struct("Refused")
                .field("question_id", question_id)
                .field("results_elsewhere", results_elsewhere)
                .finish_non_exhaustive(),
            Event::Return {
                question_id,
                taker,
                outcome,
                no_finish_needed,
            } => f
                .debug_struct("Return")
                .field("question_id", question_id)
                .field("taker", taker)
                .field("outcome", outcome)
                .field("no_finish_needed", no_finish_needed)
                .finish(),
            Event::Cancel {
                question_id,
                after_delivery,
            } => f
                .debug_struct("Cancel")
                .field("question_id", question_id)
                .field("after_delivery", after_delivery)
                .finish(),
            Event::AnswerEnded(a) => f.debug_tuple("AnswerEnded").field(a).finish(),
            Event::Released(e) => f.debug_tuple("Released").field(e).finish(),
            Event::Resolve {
                promise_id,
                to,
                resolution,
            } => f
                .debug_struct("Resolve")
                .field("promise_id", promise_id)
                .field("to", to)
                .field("resolution", resolution)
                .finish(),
            Event::EmbargoLifted(w) => f.debug_tuple("EmbargoLifted").field(w).finish(),
            Event::Reflect { target, embargo_id } => f
                .debug_struct("Reflect")
                .field("target", target)
                .field("embargo_id", embargo_id)
                .finish(),
            Event::ReflectWhenSettled {
                question_id,
                transform,
                target,
                embargo_id,
            } => f
                .debug_struct("ReflectWhenSettled")
                .field("question_id", question_id)
                .field("transform", transform)
                .field("target", target)
                .field("embargo_id", embargo_id)
                .finish(),
            Event::Aborted(e) => f.debug_tuple("Aborted").field(e).finish(),
        }
    }
}

/// What a `Return` of ours told the peer about capabilities.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// The exports it added a reference to (released by a `Finish` that
    /// says `releaseResultCaps`).
    pub exports: Vec<u32>,
    /// What each capability of the results was described as, by its index
    /// in the results' cap table: a `senderLoopback` naming it is
    /// reflected along exactly that.
    pub described: Vec<Option<CapDescriptor>>,
    /// It said `takeFromOtherQuestion` naming this question of ours (a
    /// tail call back to the peer, P-13): every path in the results is the
    /// same path in that question's, which the peer holds.
    pub tail: Option<u32>,
}

/// What the runtime knows of a capability it sends, as plain data, for
/// [`Connection::name`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sending<K> {
    /// No capability.
    Null,
    /// One of this connection's imports (the peer's export), settled.
    Import(u32),
    /// A path into the answer to our question `key` on this connection,
    /// not returned yet; exported as a promise under `otherwise` if the
    /// question is let go.
    QuestionPath {
        /// The runtime's key of the question.
        key: u64,
        /// The path.
        transform: Vec<u16>,
        /// Its export key, should it be exported.
        otherwise: K,
    },
    /// Anything of ours or of another connection, settled: an export.
    Object(K),
    /// A promise not settled yet: a promise export.
    Promise(K),
}

/// How a capability is named to the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    /// The name.
    pub descriptor: CapDescriptor,
    /// It is a new promise export: the runtime arranges its one `Resolve`
    /// ([`Connection::resolve_export`]) for when the promise settles.
    pub new_promise: bool,
}

impl Named {
    pub(super) fn plain(descriptor: CapDescriptor) -> Named {
        Named {
            descriptor,
            new_promise: false,
        }
    }
}

/// Cumulative counts of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// `Resolve`s sent.
    pub resolves_sent: u64,
    /// `Resolve`s received.
    pub resolves_received: u64,
    /// Embargoes started (`Disembargo{senderLoopback}` sent).
    pub embargoes_started: u64,
}

/// Everything a connection held when it closed, for the runtime to fail,
/// cancel or drop.
pub struct Drained<S: Slots> {
    /// Who waited for answers.
    pub questions: Vec<S::Question>,
    /// The running calls and the answers kept, by id.
    pub answers: Vec<(u32, S::Answer)>,
    /// What waited for embargoes.
    pub embargoes: Vec<S::Embargo>,
    /// Our exports.
    pub exports: Vec<S::Export>,
    /// The imports, with whether each was a promise.
    pub imports: Vec<(S::Import, bool)>,
}
