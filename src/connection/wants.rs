//! What the caller of a call wants of its results, as its `Call` says:
//! where they go (`sendResultsTo`, P-13) and the hints on pipelining
//! (`onlyPromisePipeline`, `noPromisePipelining`, P-14). Written here once
//! for the calls we send, read here once for the peer's, whose answers
//! return as it says.

use super::read::ResultsTo;
use crate::rpc_capnp::call;

/// What a call's caller wants of its results: for our calls, what their
/// `Call` says; for the peer's, how their answers return.
///
/// ```
/// use capnp_actix_proto::connection::Wants;
/// assert!(Wants::Results.keeps_results());
/// assert!(!Wants::NoPipelining.keeps_results());
/// assert_eq!(Wants::PipelineOnly.passed_on(), Wants::Results);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wants {
    /// The results, to read and to pipeline on: the `Return` carries
    /// them, and they stay for pipelined calls until the `Finish`.
    #[default]
    Results,
    /// The results, with no call pipelined on them
    /// (`noPromisePipelining`): they go once the `Return` went out.
    NoPipelining,
    /// Only to pipeline on (`onlyPromisePipeline`): no `Return`; the
    /// results stay for pipelined calls until the `Finish`.
    PipelineOnly,
    /// Nothing back: a tail call (`sendResultsTo.yourself`), whose results
    /// stay with its callee for the question that takes them; its `Return`
    /// says `resultsSentElsewhere`.
    Elsewhere,
}

impl Wants {
    /// What a `Call` says, from where its results go and its hints.
    /// Where they go comes first, then `onlyPromisePipeline`: a call whose
    /// results go elsewhere returns so, and one made only to pipeline on
    /// keeps its results for that.
    pub(crate) fn of(results_to: ResultsTo, only_pipeline: bool, no_pipelining: bool) -> Wants {
        match results_to {
            ResultsTo::Yourself => Wants::Elsewhere,
            _ if only_pipeline => Wants::PipelineOnly,
            _ if no_pipelining => Wants::NoPipelining,
            _ => Wants::Results,
        }
    }

    /// Writes what it says into a `Call` we send.
    ///
    /// ```
    /// use capnp_actix_proto::connection::Wants;
    /// use capnp_actix_proto::rpc_capnp::call;
    /// let mut message = capnp::message::Builder::new_default();
    /// let mut call = message.init_root::<call::Builder>();
    /// Wants::NoPipelining.write(call.reborrow());
    /// let call = call.into_reader();
    /// assert!(call.get_no_promise_pipelining() && !call.get_only_promise_pipeline());
    /// ```
    pub fn write(self, mut call: call::Builder<'_>) {
        if self == Wants::Elsewhere {
            call.reborrow().init_send_results_to().set_yourself(());
        } else {
            call.reborrow().init_send_results_to().set_caller(());
        }
        call.set_only_promise_pipeline(self == Wants::PipelineOnly);
        call.set_no_promise_pipelining(self == Wants::NoPipelining);
    }

    /// Whether the results stay past the `Return`, for calls pipelined on
    /// them (or for the question that takes them).
    pub fn keeps_results(self) -> bool {
        self != Wants::NoPipelining
    }

    /// What a call passed on to another vat wants, for the call it serves:
    /// only the hint that none pipelines on its results carries over.
    pub fn passed_on(self) -> Wants {
        match self {
            Wants::NoPipelining => Wants::NoPipelining,
            _ => Wants::Results,
        }
    }
}
