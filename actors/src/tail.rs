//! Tail calls sent (P-13): a server method ends by handing its call to
//! another one, whose results become its own.
//!
//! capnp 0.27's typed `Results` has no public tail call; [`TailCall`] adds
//! one. A tail call back to the peer that made the call it ends goes with
//! `sendResultsTo.yourself`, and the answer's `Return` says
//! `takeFromOtherQuestion`: the peer keeps the results, and calls pipelined
//! on the answer go to the tail call's question (`Body::TakeFrom`). Any
//! other tail call is sent as an ordinary call and its results are copied
//! into the method's own when it returns: pipelined calls on the method's
//! answer wait for them, as for any results. While the tail
//! call runs, it is cancelled when its caller goes: a `Finish` for the
//! original call cancels the method (and so the tail call) on a connection
//! that cancels on `Finish`; one that runs calls to completion
//! ([`crate::Cancellation::RunToCompletion`]) still cancels the tail call,
//! since nobody waits for its results any more.

use crate::call::CallState;
use crate::call::{PendingCall, Response};
use capnp::capability::{Promise, Results};
use capnp::traits::Owned;
use capnp_actix_proto::Error;
use futures::future::{select, Either};
use std::sync::Weak;

/// Ends a server method with a tail call: `results.tail_call(request)`
/// sends `request` and makes its results the method's own.
///
/// ```ignore
/// use capnp_actix::TailCall;
/// impl tail_caller::Server for Forwarder {
///     async fn foo(
///         self: Rc<Self>,
///         params: tail_caller::FooParams,
///         results: tail_caller::FooResults,
///     ) -> Result<(), capnp::Error> {
///         let params = params.get()?;
///         let mut request = params.get_callee()?.foo_request();
///         request.get().set_i(params.get_i());
///         results.tail_call(request).await
///     }
/// }
/// ```
pub trait TailCall<T> {
    /// Sends `request` as this method's tail call; the future completes
    /// once its results are the method's, or with its error.
    fn tail_call<P: Owned>(
        self,
        request: capnp::capability::Request<P, T>,
    ) -> Promise<(), capnp::Error>;
}

impl<T: Owned> TailCall<T> for Results<T> {
    fn tail_call<P: Owned>(
        self,
        request: capnp::capability::Request<P, T>,
    ) -> Promise<(), capnp::Error> {
        self.hook.tail_call(request.hook)
    }
}

/// What our results hook does for a tail call: waits for `pending` (the
/// tail call, sent), and copies its results into `results` (through
/// `copy`); cancels it if the caller of `call` goes first.
pub(crate) fn tail_call<R: 'static>(
    results: R,
    call: Weak<CallState>,
    pending: PendingCall,
    copy: impl FnOnce(R, Response) -> capnp::Result<()> + 'static,
) -> Promise<(), capnp::Error> {
    let left = call.upgrade().map(|call| call.delivery.when_caller_left());
    Promise::from_future(async move {
        let response = match left {
            None => pending.await,
            Some(left) => match select(pending, left).await {
                Either::Left((response, _)) => response,
                // (Dropping the pending call cancels it.)
                Either::Right(_) => Err(Error::failed(
                    "the caller went away: the tail call was cancelled",
                )),
            },
        };
        copy(results, response.map_err(capnp::Error::from)?)
    })
}
