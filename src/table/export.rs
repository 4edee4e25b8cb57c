//! Our exports, with the peer's reference counts (T-04).

use super::{IdTable, OwnKeys};
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

/// One of our exports.
#[derive(Debug, Clone)]
struct Export<T, K> {
    /// What identifies the exported capability, so exporting it again finds
    /// this entry; forgotten with the entry.
    key: K,
    /// Whether `ids` still maps `key` to this entry (see
    /// [`ExportTable::forget_key`]).
    keyed: bool,
    /// The exported value (what calls on this id go to).
    value: T,
    /// How many references the peer holds: one per time we sent the id,
    /// less what it released. The entry goes when this reaches zero.
    refs: u32,
}

/// Our exports: id, the exported value, and the peer's reference count.
/// `K` identifies what is exported (by default a `u64`), so that the same
/// capability exported twice gets one id.
///
/// ```
/// use capnp_actix_proto::table::ExportTable;
/// let mut exports = ExportTable::new();
/// let id = exports.export(42, || "cap");
/// assert_eq!(exports.export(42, || unreachable!()), id);
/// assert_eq!(exports.ref_count(id), Some(2));
/// assert_eq!(exports.release(id, 2), Ok(Some("cap")));
/// assert!(exports.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct ExportTable<T, K = u64> {
    /// The exports by id; ids are ours, lowest free first.
    entries: IdTable<Export<T, K>>,
    /// The id of each exported key, so the same capability is exported
    /// under one id (T-04).
    ids: HashMap<K, u32, OwnKeys>,
}

impl<T, K> Default for ExportTable<T, K> {
    /// An empty table.
    ///
    /// ```
    /// use capnp_actix_proto::table::ExportTable;
    /// let table: ExportTable<u8> = Default::default();
    /// assert!(table.is_empty());
    /// ```
    fn default() -> Self {
        ExportTable {
            entries: IdTable::new(),
            ids: HashMap::default(),
        }
    }
}

impl<T, K: Hash + Eq + Clone> ExportTable<T, K> {
    /// An empty table.
    ///
    /// ```
    /// use capnp_actix_proto::table::ExportTable;
    /// assert_eq!(ExportTable::<u8>::new().len(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that we send the peer one more reference to the capability
    /// `key`, and returns its export id. A key already exported keeps its
    /// id; a new key gets the lowest free id and the value `make` gives.
    /// The count saturates at `u32::MAX` (the entry then stays for good).
    ///
    /// ```
    /// use capnp_actix_proto::table::ExportTable;
    /// let mut exports = ExportTable::new();
    /// assert_eq!(exports.export(10, || 'a'), 0);
    /// assert_eq!(exports.export(20, || 'b'), 1);
    /// assert_eq!(exports.export(10, || 'c'), 0);
    /// assert_eq!(exports.get(0), Some(&'a'));
    /// ```
    pub fn export(&mut self, key: K, make: impl FnOnce() -> T) -> u32 {
        if let Some(&id) = self.ids.get(&key) {
            if let Some(entry) = self.entries.get_mut(id) {
                entry.refs = entry.refs.saturating_add(1);
                return id;
            }
        }
        let id = self.entries.insert(Export {
            key: key.clone(),
            keyed: true,
            value: make(),
            refs: 1,
        });
        self.ids.insert(key, id);
        id
    }

    /// Stops finding export `id` by its key: exporting that key again
    /// makes a new export, while `id` lives on until released. For a
    /// promise whose `Resolve` went out: the id now stands for what it
    /// resolved to, not for the promise (the C++ reference does the same).
    ///
    /// ```
    /// use capnp_actix_proto::table::ExportTable;
    /// let mut exports = ExportTable::new();
    /// let id = exports.export(7, || "promise");
    /// exports.forget_key(id);
    /// let again = exports.export(7, || "promise, again");
    /// assert_ne!(again, id);
    /// assert_eq!(exports.release(id, 1), Ok(Some("promise")));
    /// assert_eq!(exports.id_of(&7), Some(again));
    /// ```
    pub fn forget_key(&mut self, id: u32) {
        if let Some(entry) = self.entries.get_mut(id) {
            if entry.keyed {
                entry.keyed = false;
                self.ids.remove(&entry.key);
            }
        }
    }

    /// Takes `count` references back, as the peer's `Release` says.
    /// Returns the value when the count reaches zero and the entry is gone
    /// (its key forgotten, its id free). On error nothing changes.
    ///
    /// ```
    /// use capnp_actix_proto::table::{ExportTable, ReleaseError};
    /// let mut exports = ExportTable::new();
    /// let id = exports.export(1, || "cap");
    /// exports.export(1, || "cap");
    /// assert_eq!(exports.release(id, 1), Ok(None));
    /// assert_eq!(
    ///     exports.release(id, 2),
    ///     Err(ReleaseError::BelowZero { id, held: 1, released: 2 })
    /// );
    /// assert_eq!(exports.release(id, 1), Ok(Some("cap")));
    /// assert_eq!(exports.release(id, 1), Err(ReleaseError::UnknownExport(id)));
    /// ```
    pub fn release(&mut self, id: u32, count: u32) -> Result<Option<T>, ReleaseError> {
        let entry = self
            .entries
            .get_mut(id)
            .ok_or(ReleaseError::UnknownExport(id))?;
        if count > entry.refs {
            return Err(ReleaseError::BelowZero {
                id,
                held: entry.refs,
                released: count,
            });
        }
        entry.refs -= count;
        if entry.refs > 0 {
            return Ok(None);
        }
        let removed = self.entries.remove(id);
        if let Some(export) = &removed {
            // (A key forgotten, then exported again, names another id.)
            if export.keyed {
                self.ids.remove(&export.key);
            }
        }
        Ok(removed.map(|export| export.value))
    }

    /// The value exported under `id`, if any.
    ///
    /// ```
    /// use capnp_actix_proto::table::ExportTable;
    /// let mut exports = ExportTable::new();
    /// let id = exports.export(1, || "cap");
    /// assert_eq!(exports.get(id), Some(&"cap"));
    /// assert_eq!(exports.get(id + 1), None);
    /// ```
    pub fn get(&self, id: u32) -> Option<&T> {
        self.entries.get(id).map(|export| &export.value)
    }

    /// The value exported under `id`, to change it.
    ///
    /// ```
    /// use capnp_actix_proto::table::ExportTable;
    /// let mut exports = ExportTable::new();
    /// let id = exports.export(1, || 10);
    /// *exports.get_mut(id).unwrap() += 1;
    /// assert_eq!(exports.get(id), Some(&11));
    /// ```
    pub fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.entries.get_mut(id).map(|export| &mut export.value)
    }

    /// The id under which `key` is exported, if it is.
    ///
    /// ```
    /// use capnp_actix_proto::table::ExportTable;
    /// let mut exports = ExportTable::new();
    /// let id = exports.export(77, || ());
    /// assert_eq!(exports.id_of(&77), Some(id));
    /// assert_eq!(exports.id_of(&78), None);
    /// ```
    pub fn id_of(&self, key: &K) -> Option<u32> {
        self.ids.get(key).copied()
    }

    /// How many references the peer holds to `id`, if it is exported.
    ///
    /// ```
    /// use capnp_actix_proto::table::ExportTable;
    /// let mut exports = ExportTable::new();
    /// let id = exports.export(5, || ());
    /// exports.export(5, || ());
    /// assert_eq!(exports.ref_count(id), Some(2));
    /// assert_eq!(exports.ref_count(id + 1), None);
    /// ```
    pub fn ref_count(&self, id: u32) -> Option<u32> {
        self.entries.get(id).map(|export| export.refs)
    }

    /// How many capabilities are exported.
    ///
    /// ```
    /// use capnp_actix_proto::table::ExportTable;
    /// let mut exports = ExportTable::new();
    /// exports.export(1, || ());
    /// exports.export(1, || ());
    /// assert_eq!(exports.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is exported.
    ///
    /// ```
    /// use capnp_actix_proto::table::ExportTable;
    /// assert!(ExportTable::<()>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties the table (when the connection ends), giving back every
    /// exported value, lowest id first.
    ///
    /// ```
    /// use capnp_actix_proto::table::ExportTable;
    /// let mut exports = ExportTable::new();
    /// exports.export(1, || "a");
    /// exports.export(2, || "b");
    /// assert_eq!(exports.drain(), ["a", "b"]);
    /// assert_eq!(exports.id_of(&1), None);
    /// ```
    pub fn drain(&mut self) -> Vec<T> {
        self.ids.clear();
        self.entries
            .drain()
            .into_iter()
            .map(|(_, export)| export.value)
            .collect()
    }
}

/// Why a `Release` from the peer was refused.
///
/// ```
/// use capnp_actix_proto::table::ReleaseError;
/// let e = ReleaseError::UnknownExport(4);
/// assert_eq!(e.to_string(), "release of export 4, which is not exported");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseError {
    /// The id names no export.
    UnknownExport(u32),
    /// The peer released more references than it holds.
    BelowZero {
        /// The export id.
        id: u32,
        /// How many references the peer held.
        held: u32,
        /// How many it tried to release.
        released: u32,
    },
}

impl fmt::Display for ReleaseError {
    /// ```
    /// use capnp_actix_proto::table::ReleaseError;
    /// let e = ReleaseError::BelowZero { id: 1, held: 2, released: 3 };
    /// assert_eq!(
    ///     e.to_string(),
    ///     "release of 3 references to export 1, which has only 2"
    /// );
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseError::UnknownExport(id) => {
                write!(f, "release of export {id}, which is not exported")
            }
            ReleaseError::BelowZero { id, held, released } => write!(
                f,
                "release of {released} references to export {id}, which has only {held}"
            ),
        }
    }
}

impl std::error::Error for ReleaseError {}
