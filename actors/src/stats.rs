//! Counts of live actors, per kind, for tests and diagnostics: after a
//! connection is torn down, none of its actors may remain.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

thread_local! {
    /// Messages this thread's actors handled (and calls it settled): a
    /// writer that sees it move knows that work which may have more to
    /// send is under way here.
    static WORK: Cell<u64> = const { Cell::new(0) };
}

/// Counts one piece of work done on this thread: a message handled, a
/// call settled.
#[inline]
pub(crate) fn worked() {
    WORK.with(|w| w.set(w.get().wrapping_add(1)));
}

/// The count of work done on this thread so far.
pub(crate) fn work_count() -> u64 {
    WORK.with(Cell::get)
}

/// A live-actor counter.
pub(crate) struct Counter(AtomicUsize);

impl Counter {
    const fn new() -> Self {
        Counter(AtomicUsize::new(0))
    }
    pub(crate) fn started(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    pub(crate) fn stopped(&self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// One live thing in a count, for as long as this lives.
pub(crate) struct Live(&'static Counter);

impl Live {
    pub(crate) fn new(counter: &'static Counter) -> Live {
        counter.started();
        Live(counter)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.stopped();
    }
}

pub(crate) static CONNS: Counter = Counter::new();
pub(crate) static QUESTIONS: Counter = Counter::new();
pub(crate) static ANSWERS: Counter = Counter::new();
pub(crate) static EXPORTS: Counter = Counter::new();

/// How many actors of each kind are alive in this process.
///
/// ```
/// let live = capnp_actix::live_actors();
/// assert!(live.questions <= live.questions + live.answers);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LiveActors {
    /// Connection actors.
    pub conns: usize,
    /// Question actors (outbound calls waiting for a `Return`).
    pub questions: usize,
    /// Answer actors (inbound calls not yet returned).
    pub answers: usize,
    /// Export actors (hosted local objects).
    pub exports: usize,
}

/// Counts the live actors of this crate, process-wide.
///
/// ```
/// let before = capnp_actix::live_actors();
/// # let _ = before;
/// ```
pub fn live_actors() -> LiveActors {
    LiveActors {
        conns: CONNS.get(),
        questions: QUESTIONS.get(),
        answers: ANSWERS.get(),
        exports: EXPORTS.get(),
    }
}
