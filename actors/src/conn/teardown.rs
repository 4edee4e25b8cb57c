//! Tearing a connection down, whatever ended it (an `Abort` from the peer,
//! a protocol error, end of stream, an I/O error, or a local `Close`).
//!
//! Runs once, when the connection actor stops:
//! - every pending question fails with a `disconnected` error naming why;
//! - every answer is cancelled (its work is dropped; the answer actors
//!   stop once the connection lets go of them);
//! - every export is dropped, releasing the objects it kept alive;
//! - every import is forgotten (nothing is sent: the peer is gone);
//! - the main interface is closed: the connection's reference to it is
//!   dropped, exactly once;
//! - the transport is closed (the writer finishes what is queued, then
//!   shuts the stream down);
//! - whoever waits on the connection ([`crate::Watch`]) learns why.

use super::{cancel_answer, fail_question, ConnActor};
use crate::capability::Capability;
use capnp_actix_proto::{Error, ErrorKind};

pub(crate) fn tear_down(conn: &mut ConnActor, reason: Error) {
    log::debug!("conn {}: tearing down: {reason}", conn.id);
    let failure = match reason.kind() {
        ErrorKind::Disconnected => reason.clone(),
        _ => Error::disconnected(format!("connection aborted: {}", reason.reason())),
    };
    let drained = conn.core.drain();
    for taker in drained.questions.iter().flatten() {
        fail_question(taker.key, &taker.actor, &failure);
    }
    conn.idle_questions.clear();
    for (id, answer) in &drained.answers {
        if let Some(actor) = &answer.actor {
            cancel_answer(*id, actor);
        }
    }
    conn.idle_answers.clear();
    // Calls held back by an embargo go on to their (local) targets.
    for waiter in drained.embargoes {
        waiter.lift();
    }
    drop(drained.exports);
    // Promises the peer gave us will never hear their Resolve now.
    for (import, _) in drained.imports {
        if let Some(promise) = import.promise.and_then(|p| p.upgrade()) {
            promise.resolve(Capability::broken(failure.clone()), |_| false);
        }
    }
    drop(drained.answers);
    drop(conn.main.take());
    conn.writer = None;
    conn.self_addr = None;
    conn.link = None;
    for watcher in conn.watchers.drain(..) {
        let _ = watcher.send(reason.clone());
    }
}
