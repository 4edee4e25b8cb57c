//! Call deadlines: a connection's default (`ConnOptions::call_timeout`),
//! one call's own ([`crate::PendingCall::timeout`], which replaces the
//! default), and [`within`] for any future of a result. A call past its
//! deadline fails `overloaded` with an error naming the deadline and is
//! cancelled (`CallState::expire`).

use crate::call::{CallState, PendingCall};
use capnp_actix_proto::Error;
use std::future::Future;
use std::sync::Arc;

impl PendingCall {
    /// Fails the call with an `overloaded` error naming the deadline if it
    /// has not returned within `timeout`, and cancels it (`Finish` goes to
    /// the peer; a local object's work is dropped). Run it inside an actix
    /// system. (For typed calls, see [`crate::within`].)
    ///
    /// ```
    /// # actix::System::new().block_on(async {
    /// # let (client, _server) = capnp_actix::ConnActor::pair(Default::default(), Default::default());
    /// # let cap = client.send(capnp_actix::Bootstrap).await.unwrap().unwrap();
    /// let pending = cap.new_call(0x1234, 0).send().timeout(std::time::Duration::from_secs(5));
    /// # });
    /// ```
    pub fn timeout(self, timeout: std::time::Duration) -> PendingCall {
        self.state().set_own_deadline();
        expire_after(self.state(), timeout, Deadline::Own);
        self
    }
}

/// Which deadline a call has.
#[derive(Clone, Copy)]
pub(crate) enum Deadline {
    /// The caller's own ([`PendingCall::timeout`]).
    Own,
    /// The connection's default (`ConnOptions::call_timeout`): it does not
    /// apply to a call with a deadline of its own.
    Default,
}

/// The error of a call whose deadline passed; `setting` names what set it.
pub(crate) fn deadline_exceeded(timeout: std::time::Duration, setting: &str) -> Error {
    Error::overloaded(format!(
        "deadline exceeded: the call did not return within {timeout:?} ({setting})"
    ))
}

/// Expires `state` after `timeout`, unless it settles or goes away first
/// (the timer ends then too), or, for the connection's default, unless
/// the caller gave it a deadline of its own.
pub(crate) fn expire_after(
    state: &Arc<CallState>,
    timeout: std::time::Duration,
    deadline: Deadline,
) {
    let settled = state.wait();
    let state = Arc::downgrade(state);
    actix_rt::spawn(async move {
        let timer = std::pin::pin!(tokio::time::sleep(timeout));
        if let futures::future::Either::Right(_) = futures::future::select(timer, settled).await {
            return; // settled (or dropped) in time
        }
        let Some(state) = state.upgrade() else { return };
        let setting = match deadline {
            Deadline::Own => "timeout",
            Deadline::Default if state.has_own_deadline() => return,
            Deadline::Default => "call_timeout",
        };
        state.expire(deadline_exceeded(timeout, setting));
    });
}

/// Gives `call`'s outcome, or fails with an `overloaded` error naming the
/// deadline if it has not come within `timeout`; the call is dropped then,
/// which cancels it (for a call to a peer, `Finish` is sent). Works for
/// typed calls (`request.send().promise`) and any other future of a
/// result. Run it inside an actix system.
///
/// ```
/// # actix::System::new().block_on(async {
/// let never = futures::future::pending::<Result<(), capnp::Error>>();
/// let err = capnp_actix::within(std::time::Duration::from_millis(10), never).await.unwrap_err();
/// assert!(err.to_string().contains("deadline exceeded"));
/// # });
/// ```
pub async fn within<T, E, F>(timeout: std::time::Duration, call: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: From<Error>,
{
    match tokio::time::timeout(timeout, call).await {
        Ok(outcome) => outcome,
        Err(_) => Err(deadline_exceeded(timeout, "within").into()),
    }
}
