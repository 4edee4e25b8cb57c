//! Our questions: ids reused only after Return and Finish (T-03).

use super::IdTable;
use std::fmt;

/// One of our questions.
#[derive(Debug, Clone)]
struct Question<T> {
    /// What waits for the answer.
    value: T,
    /// Whether the peer's `Return` arrived; a second one is an error.
    returned: bool,
    /// Whether we sent our `Finish`; the id stays taken until both (but
    /// a call made only to pipeline on awaits no `Return`: its id is free
    /// once we finish it).
    finished: bool,
}

/// Our questions: an id is free again only after its Return arrived AND our
/// Finish was sent (T-03).
///
/// ```
/// use capnp_actix_proto::table::QuestionTable;
/// let mut questions = QuestionTable::new();
/// let id = questions.insert("call");
/// assert_eq!(questions.mark_returned(id), Ok(None));
/// assert_eq!(questions.mark_finished(id), Some("call"));
/// assert!(questions.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct QuestionTable<T> {
    /// The questions by id; ids are ours, lowest free first.
    entries: IdTable<Question<T>>,
    /// Calls made only to pipeline on, by ids from [`PIPELINE_IDS`] on,
    /// taken in turn (as the C++ reference does: a peer that ignores the
    /// hint may still send a `Return`, and an id that cycles comes back
    /// only after 2^31 others).
    pipeline_only: std::collections::HashMap<u32, Question<T>>,
    /// The next id to try for one.
    next_pipeline_id: u32,
}

/// Where the ids of calls made only to pipeline on start: the high half.
pub const PIPELINE_IDS: u32 = 1 << 31;

/// Whether `id` is one of a call made only to pipeline on.
///
/// ```
/// use capnp_actix_proto::table::{is_pipeline_id, PIPELINE_IDS};
/// assert!(is_pipeline_id(PIPELINE_IDS));
/// assert!(!is_pipeline_id(3));
/// ```
pub fn is_pipeline_id(id: u32) -> bool {
    id >= PIPELINE_IDS
}

impl<T> Default for QuestionTable<T> {
    /// An empty table.
    ///
    /// ```
    /// use capnp_actix_proto::table::QuestionTable;
    /// let table: QuestionTable<u8> = Default::default();
    /// assert!(table.is_empty());
    /// ```
    fn default() -> Self {
        QuestionTable {
            entries: IdTable::new(),
            pipeline_only: std::collections::HashMap::new(),
            next_pipeline_id: PIPELINE_IDS,
        }
    }
}

impl<T> QuestionTable<T> {
    /// An empty table.
    ///
    /// ```
    /// use capnp_actix_proto::table::QuestionTable;
    /// assert_eq!(QuestionTable::<u8>::new().len(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a new question under the lowest free id, and returns the id.
    ///
    /// ```
    /// use capnp_actix_proto::table::QuestionTable;
    /// let mut questions = QuestionTable::new();
    /// assert_eq!(questions.insert('a'), 0);
    /// assert_eq!(questions.insert('b'), 1);
    /// ```
    pub fn insert(&mut self, value: T) -> u32 {
        self.entries.insert(Question {
            value,
            returned: false,
            finished: false,
        })
    }

    /// The id the next [`insert_pipeline_only`](Self::insert_pipeline_only)
    /// will give.
    ///
    /// ```
    /// use capnp_actix_proto::table::{QuestionTable, PIPELINE_IDS};
    /// assert_eq!(QuestionTable::<()>::new().next_pipeline_id(), PIPELINE_IDS);
    /// ```
    pub fn next_pipeline_id(&self) -> u32 {
        let mut id = self.next_pipeline_id;
        while self.pipeline_only.contains_key(&id) {
            id = if id == u32::MAX { PIPELINE_IDS } else { id + 1 };
        }
        id
    }

    /// Records a call made only to pipeline on (`onlyPromisePipeline`): no
    /// `Return` is awaited, and its id is free once we finish it.
    ///
    /// ```
    /// use capnp_actix_proto::table::{QuestionTable, PIPELINE_IDS};
    /// let mut questions = QuestionTable::new();
    /// let id = questions.insert_pipeline_only("p");
    /// assert_eq!(id, PIPELINE_IDS);
    /// assert_eq!(questions.finish(id), Some(true));
    /// assert!(questions.is_empty());
    /// ```
    pub fn insert_pipeline_only(&mut self, value: T) -> u32 {
        let id = self.next_pipeline_id();
        self.next_pipeline_id = if id == u32::MAX { PIPELINE_IDS } else { id + 1 };
        self.pipeline_only.insert(
            id,
            Question {
                value,
                returned: false,
                finished: false,
            },
        );
        id
    }

    fn slot(&self, id: u32) -> Option<&Question<T>> {
        if is_pipeline_id(id) {
            self.pipeline_only.get(&id)
        } else {
            self.entries.get(id)
        }
    }

    fn slot_mut(&mut self, id: u32) -> Option<&mut Question<T>> {
        if is_pipeline_id(id) {
            self.pipeline_only.get_mut(&id)
        } else {
            self.entries.get_mut(id)
        }
    }

    fn remove(&mut self, id: u32) -> Option<T> {
        let question = if is_pipeline_id(id) {
            self.pipeline_only.remove(&id)
        } else {
            self.entries.remove(id)
        };
        question.map(|q| q.value)
    }

    /// The id the next [`insert`](Self::insert) will give, so that a
    /// question can be written (which may fail) before it is recorded.
    ///
    /// ```
    /// use capnp_actix_proto::table::QuestionTable;
    /// let mut questions = QuestionTable::new();
    /// assert_eq!(questions.next_id(), 0);
    /// assert_eq!(questions.insert('a'), 0);
    /// assert_eq!(questions.next_id(), 1);
    /// ```
    pub fn next_id(&self) -> u32 {
        self.entries.next_id()
    }

    /// The value of question `id`, if it is still in the table.
    ///
    /// ```
    /// use capnp_actix_proto::table::QuestionTable;
    /// let mut questions = QuestionTable::new();
    /// let id = questions.insert("q");
    /// assert_eq!(questions.get(id), Some(&"q"));
    /// ```
    pub fn get(&self, id: u32) -> Option<&T> {
        self.slot(id).map(|q| &q.value)
    }

    /// The value of question `id`, mutably, if it is still in the table.
    ///
    /// ```
    /// use capnp_actix_proto::table::QuestionTable;
    /// let mut questions = QuestionTable::new();
    /// let id = questions.insert(1);
    /// *questions.get_mut(id).unwrap() = 2;
    /// assert_eq!(questions.get(id), Some(&2));
    /// ```
    pub fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.slot_mut(id).map(|q| &mut q.value)
    }

    /// Records the peer's `Return` for `id`. Gives back the value if our
    /// `Finish` was already sent, which frees the id. A `Return` for an id
    /// not in the table, or a second one, is an error and changes nothing.
    ///
    /// ```
    /// use capnp_actix_proto::table::{QuestionError, QuestionTable};
    /// let mut questions = QuestionTable::new();
    /// let id = questions.insert("q");
    /// assert_eq!(questions.mark_returned(id), Ok(None));
    /// assert_eq!(questions.mark_returned(id), Err(QuestionError::DuplicateReturn(id)));
    /// assert_eq!(questions.mark_returned(9), Err(QuestionError::Unknown(9)));
    /// ```
    pub fn mark_returned(&mut self, id: u32) -> Result<Option<T>, QuestionError> {
        let question = self.slot_mut(id).ok_or(QuestionError::Unknown(id))?;
        if question.returned {
            return Err(QuestionError::DuplicateReturn(id));
        }
        question.returned = true;
        if question.finished {
            Ok(self.remove(id))
        } else {
            Ok(None)
        }
    }

    /// Records that we sent `Finish` for `id`. Gives back the value if the
    /// `Return` had already arrived, which frees the id. An unknown or
    /// already finished id gives `None` and changes nothing.
    ///
    /// ```
    /// use capnp_actix_proto::table::QuestionTable;
    /// let mut questions = QuestionTable::new();
    /// let id = questions.insert("q");
    /// assert_eq!(questions.mark_finished(id), None);
    /// assert!(questions.is_finished(id));
    /// assert_eq!(questions.mark_returned(id), Ok(Some("q")));
    /// ```
    pub fn mark_finished(&mut self, id: u32) -> Option<T> {
        let question = self.slot_mut(id)?;
        if question.finished {
            return None;
        }
        question.finished = true;
        if question.returned || is_pipeline_id(id) {
            self.remove(id)
        } else {
            None
        }
    }

    /// We let go of question `id`: gives the `releaseResultCaps` of the
    /// `Finish` to send, or `None` when there is none to send (finished
    /// already, or unknown). Before the `Return` the `Finish` asks the peer
    /// to release what the `Return` will carry, which we then never import
    /// ([`finished_early`](Self::finished_early)); after it, the results'
    /// capabilities were imported one by one and are released the same
    /// way. The id is freed if the `Return` came.
    ///
    /// ```
    /// use capnp_actix_proto::table::QuestionTable;
    /// let mut questions = QuestionTable::new();
    /// let early = questions.insert("dropped before its Return");
    /// assert_eq!(questions.finish(early), Some(true));
    /// assert_eq!(questions.finish(early), None);
    /// assert!(questions.finished_early(early));
    /// let late = questions.insert("dropped after it");
    /// questions.mark_returned(late).unwrap();
    /// assert_eq!(questions.finish(late), Some(false));
    /// assert!(questions.get(late).is_none());
    /// ```
    pub fn finish(&mut self, id: u32) -> Option<bool> {
        let question = self.slot(id)?;
        if question.finished {
            return None;
        }
        let release_result_caps = !question.returned;
        self.mark_finished(id);
        Some(release_result_caps)
    }

    /// Whether we finished `id` before its `Return` arrived: that `Return`
    /// names capabilities the peer releases itself (our `Finish` said
    /// `releaseResultCaps`), so none of them is imported.
    ///
    /// ```
    /// use capnp_actix_proto::table::QuestionTable;
    /// let mut questions = QuestionTable::new();
    /// let id = questions.insert(());
    /// assert!(!questions.finished_early(id));
    /// questions.finish(id);
    /// assert!(questions.finished_early(id));
    /// ```
    pub fn finished_early(&self, id: u32) -> bool {
        self.slot(id).is_some_and(|q| q.finished && !q.returned)
    }

    /// Whether the `Return` for `id` arrived (false for ids not in the
    /// table).
    ///
    /// ```
    /// use capnp_actix_proto::table::QuestionTable;
    /// let mut questions = QuestionTable::new();
    /// let id = questions.insert(());
    /// assert!(!questions.is_returned(id));
    /// questions.mark_returned(id).unwrap();
    /// assert!(questions.is_returned(id));
    /// ```
    pub fn is_returned(&self, id: u32) -> bool {
        self.slot(id).is_some_and(|q| q.returned)
    }

    /// Whether we sent `Finish` for `id` (false for ids not in the table).
    ///
    /// ```
    /// use capnp_actix_proto::table::QuestionTable;
    /// let mut questions = QuestionTable::new();
    /// let id = questions.insert(());
    /// assert!(!questions.is_finished(id));
    /// questions.mark_finished(id);
    /// assert!(questions.is_finished(id));
    /// ```
    pub fn is_finished(&self, id: u32) -> bool {
        self.slot(id).is_some_and(|q| q.finished)
    }

    /// How many question ids are taken.
    ///
    /// ```
    /// use capnp_actix_proto::table::QuestionTable;
    /// let mut questions = QuestionTable::new();
    /// questions.insert(());
    /// assert_eq!(questions.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len() + self.pipeline_only.len()
    }

    /// Whether no question id is taken.
    ///
    /// ```
    /// use capnp_actix_proto::table::QuestionTable;
    /// assert!(QuestionTable::<()>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.pipeline_only.is_empty()
    }

    /// Empties the table (when the connection ends), giving back every id
    /// and value, lowest id first.
    ///
    /// ```
    /// use capnp_actix_proto::table::QuestionTable;
    /// let mut questions = QuestionTable::new();
    /// questions.insert("a");
    /// questions.insert("b");
    /// assert_eq!(questions.drain(), [(0, "a"), (1, "b")]);
    /// ```
    pub fn drain(&mut self) -> Vec<(u32, T)> {
        let mut drained: Vec<(u32, T)> = self
            .entries
            .drain()
            .into_iter()
            .map(|(id, q)| (id, q.value))
            .collect();
        let mut high: Vec<(u32, T)> = self
            .pipeline_only
            .drain()
            .map(|(id, q)| (id, q.value))
            .collect();
        high.sort_by_key(|(id, _)| *id);
        drained.extend(high);
        drained
    }
}

/// Why a `Return` from the peer was refused.
///
/// ```
/// use capnp_actix_proto::table::QuestionError;
/// assert_eq!(
///     QuestionError::DuplicateReturn(2).to_string(),
///     "second return for question 2"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuestionError {
    /// A `Return` for a question id we have not asked (or already freed).
    Unknown(u32),
    /// A second `Return` for the same question.
    DuplicateReturn(u32),
}

impl fmt::Display for QuestionError {
    /// ```
    /// use capnp_actix_proto::table::QuestionError;
    /// assert_eq!(
    ///     QuestionError::Unknown(3).to_string(),
    ///     "return for question 3, which is not asked"
    /// );
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuestionError::Unknown(id) => {
                write!(f, "return for question {id}, which is not asked")
            }
            QuestionError::DuplicateReturn(id) => write!(f, "second return for question {id}"),
        }
    }
}

impl std::error::Error for QuestionError {}
