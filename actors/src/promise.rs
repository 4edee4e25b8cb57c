//! [`PromiseImport`]: a capability the peer exported as a promise
//! (`senderPromise`). Calls go to the peer's promise until its `Resolve`
//! arrives; then they go to what it resolved to. If calls went to the peer
//! and the promise resolves to something the peer does not host, new calls
//! wait for an embargo, so that they cannot overtake the ones still on
//! their way back (E-order).

use crate::call::{CallState, OutCall, Queued};
use crate::capability::{Capability, HandedOn, ImportRef};
use crate::conn::{send_call, CallTarget};
use futures::channel::oneshot;
use std::sync::{Arc, Mutex, MutexGuard};

/// The mutable part of a promise import.
struct Inner {
    /// The peer's promise export, until the promise resolves.
    import: Option<Arc<ImportRef>>,
    /// Whether any call went to the peer's promise.
    calls_sent: bool,
    /// What the promise resolved to, once it has.
    resolution: Option<Capability>,
    /// Whether new calls wait for an embargo to lift.
    embargoed: bool,
    /// The calls waiting for it (and, while the embargo lifts, the ones
    /// made meanwhile).
    queue: Vec<Queued>,
    /// Who waits for the resolution.
    waiters: Vec<oneshot::Sender<Capability>>,
}

/// A promise the peer exported to us.
pub(crate) struct PromiseImport {
    /// Guarded by a mutex: capabilities are used from any thread.
    inner: Mutex<Inner>,
}

impl PromiseImport {
    pub(crate) fn new(import: Arc<ImportRef>) -> Arc<PromiseImport> {
        Arc::new(PromiseImport {
            inner: Mutex::new(Inner {
                import: Some(import),
                calls_sent: false,
                resolution: None,
                embargoed: false,
                queue: Vec::new(),
                waiters: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The peer's promise export, while unresolved.
    pub(crate) fn import(&self) -> Option<Arc<ImportRef>> {
        self.lock().import.clone()
    }

    /// What the promise resolved to, once it has and any embargo lifted:
    /// until then, only the calls held back may know.
    pub(crate) fn resolution(&self) -> Option<Capability> {
        let inner = self.lock();
        if inner.embargoed {
            return None;
        }
        inner.resolution.clone()
    }

    /// Delivers a call made on the promise.
    pub(crate) fn deliver(&self, call: OutCall, state: &Arc<CallState>) {
        let mut inner = self.lock();
        if inner.embargoed {
            inner.queue.push(Queued::new(call, state));
            return;
        }
        if let Some(target) = inner.resolution.clone() {
            drop(inner);
            target.deliver(call, state);
            return;
        }
        let Some(import) = inner.import.clone() else {
            drop(inner);
            state.resolve(Err(capnp_actix_proto::Error::failed(
                "promise has neither a target nor a resolution",
            )));
            return;
        };
        inner.calls_sent = true;
        // Sent under the lock: a resolution cannot slip between the check
        // and the send.
        send_call(
            &import.conn,
            CallTarget::Import(import.import_id),
            call,
            state,
        );
    }

    /// Takes the fact that calls went to the peer through a promise that
    /// resolved to this one (P-17).
    pub(crate) fn take_calls_sent(&self) -> HandedOn {
        let mut inner = self.lock();
        match &inner.resolution {
            None => {
                inner.calls_sent = true;
                HandedOn::Taken
            }
            Some(_) if inner.embargoed => HandedOn::Embargoed,
            Some(resolution) => HandedOn::Resolved(resolution.clone()),
        }
    }

    /// Resolves the promise. Gives whether an embargo started (calls went
    /// to the peer and `needs_embargo` holds for the resolution), and the
    /// reference to the peer's promise export, to drop once any
    /// `Disembargo` is written.
    pub(crate) fn resolve(
        &self,
        resolution: Capability,
        needs_embargo: impl Fn(&Capability) -> bool,
    ) -> (bool, Option<Arc<ImportRef>>) {
        // Decided without the lock (it may look at other capabilities);
        // decided again if a call went out meanwhile.
        let mut decided: Option<(bool, bool)> = None;
        let (mut inner, embargo) = loop {
            let inner = self.lock();
            if inner.resolution.is_some() {
                return (false, None);
            }
            match decided {
                Some((sent, embargo)) if sent == inner.calls_sent => break (inner, embargo),
                _ => {}
            }
            let sent = inner.calls_sent;
            drop(inner);
            decided = Some((sent, sent && needs_embargo(&resolution)));
        };
        inner.embargoed = embargo;
        inner.resolution = Some(resolution.clone());
        let import = inner.import.take();
        let waiters = if embargo {
            Vec::new()
        } else {
            std::mem::take(&mut inner.waiters)
        };
        drop(inner);
        for waiter in waiters {
            let _ = waiter.send(resolution.clone());
        }
        (embargo, import)
    }

    /// Lifts the embargo: waiting calls go to the resolution, in order,
    /// before any new call can.
    pub(crate) fn lift_embargo(&self) {
        loop {
            let (target, queue) = {
                let mut inner = self.lock();
                let Some(target) = inner.resolution.clone() else {
                    return;
                };
                if inner.queue.is_empty() {
                    inner.embargoed = false;
                    let waiters = std::mem::take(&mut inner.waiters);
                    drop(inner);
                    for waiter in waiters {
                        let _ = waiter.send(target.clone());
                    }
                    return;
                }
                (target, std::mem::take(&mut inner.queue))
            };
            // Delivered without the lock; calls made meanwhile queue behind.
            for queued in queue {
                queued.deliver_to(&target);
            }
        }
    }

    /// A receiver for the resolution.
    pub(crate) fn wait(&self) -> oneshot::Receiver<Capability> {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        match &inner.resolution {
            Some(cap) if !inner.embargoed => {
                let _ = tx.send(cap.clone());
            }
            _ => inner.waiters.push(tx),
        }
        rx
    }
}
