//! Answers: the peer's questions, by ids it picks, and the rule of when one
//! ends. An answer ends once our `Return` went out *and* the peer's
//! `Finish` arrived (or the `Return` said `noFinishNeeded`). A `Finish`
//! before the `Return` cancels the call, whose `Return` (`canceled`, or
//! whatever it had) then ends it; unless the peer pipelined calls on the
//! answer, which still need its results (rpc.capnp, `Finish`: cancel only
//! if nothing else cares about the result): then the call runs on, and
//! its `Return` ends the answer.

use super::PeerTable;
use std::fmt;

/// One answer and where it is in its life.
#[derive(Debug, Clone)]
struct Answer<T> {
    value: T,
    /// Our `Return` went out.
    returned: bool,
    /// The peer's `Finish` arrived (or none is needed).
    finished: bool,
    /// That `Finish` asked us to release the results' capabilities.
    release_result_caps: bool,
    /// The peer pipelined calls on it.
    pipelined_on: bool,
}

/// How an answer ended: its value, and whether the exports its results
/// carried are to be released (the peer's `Finish` said
/// `releaseResultCaps`).
#[derive(Debug, PartialEq, Eq)]
pub struct Ended<T> {
    /// The answer's value.
    pub value: T,
    /// Release the exports the results carried.
    pub release_result_caps: bool,
}

/// What a `Finish` from the peer does.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished<T> {
    /// No such answer (ended already, or never asked): tolerated.
    Unknown,
    /// A second `Finish`: ignored.
    Again,
    /// The `Return` went out already: the answer ends.
    Ended(Ended<T>),
    /// The call is still running: cancel it; its `Return` ends the answer.
    Cancel,
    /// The call is still running, and calls the peer pipelined on it need
    /// its results: it runs on, and its `Return` ends the answer.
    RunsOn,
}

/// Why the peer's question was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// An id whose answer has not ended.
    Duplicate(u32),
    /// More open questions than the limit.
    TooMany {
        /// Questions open.
        open: usize,
    },
}

impl fmt::Display for AnswerError {
    /// ```
    /// use capnp_actix_proto::table::AnswerError;
    /// assert_eq!(AnswerError::Duplicate(4).to_string(), "duplicate question id 4 from the peer");
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::Duplicate(id) => write!(f, "duplicate question id {id} from the peer"),
            AnswerError::TooMany { open } => write!(
                f,
                "the peer has {open} questions open, the most allowed (max_answers)"
            ),
        }
    }
}

impl std::error::Error for AnswerError {}

/// The peer's questions with their lifecycle.
///
/// ```
/// use capnp_actix_proto::table::{AnswerTable, Finished};
/// let mut answers = AnswerTable::new(100);
/// answers.start(7, "call").unwrap();
/// assert_eq!(answers.returned(7, false), None); // waits for the Finish
/// let Finished::Ended(ended) = answers.finish(7, true) else { panic!() };
/// assert_eq!((ended.value, ended.release_result_caps), ("call", true));
/// assert!(answers.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct AnswerTable<T> {
    entries: PeerTable<Answer<T>>,
    /// Most questions the peer may have open.
    max: usize,
}

impl<T> AnswerTable<T> {
    /// An empty table that holds at most `max` open questions.
    ///
    /// ```
    /// let answers = capnp_actix_proto::table::AnswerTable::<()>::new(10);
    /// assert_eq!(answers.len(), 0);
    /// ```
    pub fn new(max: usize) -> Self {
        AnswerTable {
            entries: PeerTable::new(),
            max,
        }
    }

    /// The peer asked question `id`.
    ///
    /// ```
    /// use capnp_actix_proto::table::{AnswerError, AnswerTable};
    /// let mut answers = AnswerTable::new(1);
    /// answers.start(1, ()).unwrap();
    /// assert_eq!(answers.start(1, ()), Err(AnswerError::Duplicate(1)));
    /// assert_eq!(answers.start(2, ()), Err(AnswerError::TooMany { open: 1 }));
    /// ```
    pub fn start(&mut self, id: u32, value: T) -> Result<(), AnswerError> {
        if self.entries.contains(id) {
            return Err(AnswerError::Duplicate(id));
        }
        if self.entries.len() >= self.max {
            return Err(AnswerError::TooMany {
                open: self.entries.len(),
            });
        }
        let answer = Answer {
            value,
            returned: false,
            finished: false,
            release_result_caps: false,
            pipelined_on: false,
        };
        self.entries
            .insert(id, answer)
            .map_err(|_| AnswerError::Duplicate(id))
    }

    /// Whether the answer's `Return` went out.
    ///
    /// ```
    /// let mut answers = capnp_actix_proto::table::AnswerTable::new(9);
    /// answers.start(3, ()).unwrap();
    /// assert!(!answers.is_returned(3));
    /// ```
    pub fn is_returned(&self, id: u32) -> bool {
        self.entries.get(id).is_some_and(|a| a.returned)
    }

    /// The peer pipelined a call on answer `id`: a `Finish` before the
    /// `Return` no longer cancels it.
    ///
    /// ```
    /// use capnp_actix_proto::table::{AnswerTable, Finished};
    /// let mut answers = AnswerTable::new(9);
    /// answers.start(3, "running").unwrap();
    /// answers.pipelined_on(3);
    /// assert_eq!(answers.finish(3, false), Finished::RunsOn);
    /// assert_eq!(answers.returned(3, false).unwrap().value, "running");
    /// ```
    pub fn pipelined_on(&mut self, id: u32) {
        if let Some(answer) = self.entries.get_mut(id) {
            answer.pipelined_on = true;
        }
    }

    /// Our `Return` for `id` goes out (`no_finish_needed`: it says the peer
    /// need not send `Finish`). Gives the answer if that ends it. A second
    /// `Return` changes nothing.
    ///
    /// ```
    /// use capnp_actix_proto::table::AnswerTable;
    /// let mut answers = AnswerTable::new(9);
    /// answers.start(3, "no caps").unwrap();
    /// let ended = answers.returned(3, true).unwrap();
    /// assert_eq!(ended.value, "no caps");
    /// ```
    pub fn returned(&mut self, id: u32, no_finish_needed: bool) -> Option<Ended<T>> {
        let answer = self.entries.get_mut(id)?;
        if answer.returned {
            return None;
        }
        answer.returned = true;
        answer.finished |= no_finish_needed;
        if answer.finished {
            self.end(id)
        } else {
            None
        }
    }

    /// The peer's `Finish` for `id`.
    ///
    /// ```
    /// use capnp_actix_proto::table::{AnswerTable, Finished};
    /// let mut answers = AnswerTable::new(9);
    /// answers.start(3, "running").unwrap();
    /// assert_eq!(answers.finish(3, false), Finished::Cancel);
    /// assert_eq!(answers.finish(3, false), Finished::Again);
    /// let ended = answers.returned(3, false).unwrap();
    /// assert_eq!(ended.value, "running");
    /// assert_eq!(answers.finish(3, false), Finished::Unknown);
    /// ```
    pub fn finish(&mut self, id: u32, release_result_caps: bool) -> Finished<T> {
        let Some(answer) = self.entries.get_mut(id) else {
            return Finished::Unknown;
        };
        if answer.finished {
            return Finished::Again;
        }
        answer.finished = true;
        answer.release_result_caps = release_result_caps;
        if !answer.returned {
            return if answer.pipelined_on {
                Finished::RunsOn
            } else {
                Finished::Cancel
            };
        }
        match self.end(id) {
            Some(ended) => Finished::Ended(ended),
            None => Finished::Unknown,
        }
    }

    fn end(&mut self, id: u32) -> Option<Ended<T>> {
        self.entries.remove(id).map(|answer| Ended {
            value: answer.value,
            release_result_caps: answer.release_result_caps,
        })
    }

    /// The value of answer `id`, while it lives.
    ///
    /// ```
    /// let mut answers = capnp_actix_proto::table::AnswerTable::new(9);
    /// answers.start(3, 'x').unwrap();
    /// assert_eq!(answers.get(3), Some(&'x'));
    /// ```
    pub fn get(&self, id: u32) -> Option<&T> {
        self.entries.get(id).map(|a| &a.value)
    }

    /// The value of answer `id`, to change it.
    ///
    /// ```
    /// let mut answers = capnp_actix_proto::table::AnswerTable::new(9);
    /// answers.start(3, 1).unwrap();
    /// *answers.get_mut(3).unwrap() += 1;
    /// assert_eq!(answers.get(3), Some(&2));
    /// ```
    pub fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.entries.get_mut(id).map(|a| &mut a.value)
    }

    /// Whether `id` names a live answer.
    ///
    /// ```
    /// let answers = capnp_actix_proto::table::AnswerTable::<()>::new(9);
    /// assert!(!answers.contains(0));
    /// ```
    pub fn contains(&self, id: u32) -> bool {
        self.entries.contains(id)
    }

    /// How many answers live.
    ///
    /// ```
    /// let answers = capnp_actix_proto::table::AnswerTable::<()>::new(9);
    /// assert_eq!(answers.len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no answer lives.
    ///
    /// ```
    /// assert!(capnp_actix_proto::table::AnswerTable::<()>::new(9).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Ends every answer (the connection ends), lowest id first.
    ///
    /// ```
    /// let mut answers = capnp_actix_proto::table::AnswerTable::new(9);
    /// answers.start(5, 'b').unwrap();
    /// answers.start(2, 'a').unwrap();
    /// assert_eq!(answers.drain(), [(2, 'a'), (5, 'b')]);
    /// ```
    pub fn drain(&mut self) -> Vec<(u32, T)> {
        self.entries
            .drain()
            .into_iter()
            .map(|(id, a)| (id, a.value))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // covers: T-03, P-07, P-14
    #[test]
    fn an_answer_ends_after_its_return_and_its_finish_in_either_order() {
        let mut answers = AnswerTable::new(10);
        // Return, then Finish.
        answers.start(1, "a").unwrap();
        assert_eq!(answers.returned(1, false), None);
        assert_eq!(
            answers.finish(1, false),
            Finished::Ended(Ended {
                value: "a",
                release_result_caps: false
            })
        );
        // Finish first: the call is cancelled, its Return ends it, with
        // what the Finish asked for.
        answers.start(1, "b").unwrap();
        assert_eq!(answers.finish(1, true), Finished::Cancel);
        assert!(answers.contains(1), "the id stays in use until the Return");
        assert_eq!(answers.start(1, "c"), Err(AnswerError::Duplicate(1)));
        assert_eq!(
            answers.returned(1, false),
            Some(Ended {
                value: "b",
                release_result_caps: true
            })
        );
        // noFinishNeeded: the Return ends it; a Finish after is tolerated.
        answers.start(1, "d").unwrap();
        assert_eq!(answers.returned(1, true).map(|e| e.value), Some("d"));
        assert_eq!(answers.finish(1, false), Finished::Unknown);
        assert!(answers.is_empty());
    }

    // covers: F-01, F-06
    #[test]
    fn duplicates_and_too_many_questions_are_refused() {
        let mut answers = AnswerTable::new(2);
        answers.start(1, ()).unwrap();
        answers.start(2, ()).unwrap();
        assert_eq!(answers.start(2, ()), Err(AnswerError::Duplicate(2)));
        assert_eq!(answers.start(3, ()), Err(AnswerError::TooMany { open: 2 }));
        assert!(answers
            .start(3, ())
            .unwrap_err()
            .to_string()
            .contains("max_answers"));
        // A second Return changes nothing; a second Finish is ignored.
        assert_eq!(answers.returned(1, false), None);
        assert_eq!(answers.returned(1, true), None);
        assert!(answers.contains(1));
        assert!(matches!(answers.finish(1, false), Finished::Ended(_)));
        assert_eq!(answers.finish(1, false), Finished::Unknown);
    }
}
