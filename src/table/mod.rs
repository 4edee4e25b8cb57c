//! The four per-connection tables of the RPC protocol.
//!
//! - questions ([`QuestionTable`]): calls we made, by ids we choose;
//! - answers ([`AnswerTable`]): calls the peer made, by ids it chooses,
//!   and when each ends (its `Return` and the peer's `Finish`);
//! - exports ([`ExportTable`]): capabilities we host for the peer, by ids we
//!   choose, with the peer's reference count;
//! - imports ([`ImportTable`]): capabilities the peer hosts for us, by ids it
//!   chooses, with the count we owe it in `Release`.
//!
//! Ids we choose always reuse the lowest free one ([`IdTable`]), as the
//! protocol recommends, so that ids stay small.

mod answer;
mod export;
mod import;
mod question;
#[cfg(test)]
mod tests;

pub use answer::{AnswerError, AnswerTable, Ended, Finished};
pub use export::{ExportTable, ReleaseError};
pub use import::ImportTable;
pub use question::{is_pipeline_id, QuestionError, QuestionTable, PIPELINE_IDS};

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A fast hasher for keys this side chooses (addresses of its own
/// objects, its own ids): never for keys a peer picks, which could be
/// chosen to collide. The Fx hash of the Rust compiler: a rotate, a xor
/// and a multiply per word.
///
/// ```
/// use std::collections::HashMap;
/// use capnp_actix_proto::table::OwnKeys;
/// let mut map: HashMap<u64, &str, OwnKeys> = HashMap::default();
/// map.insert(0x5555_0000_1000, "an object");
/// assert_eq!(map.get(&0x5555_0000_1000), Some(&"an object"));
/// ```
#[derive(Default, Clone, Copy, Debug)]
pub struct OwnKeyHasher(u64);

impl OwnKeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for OwnKeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        for &byte in chunks.remainder() {
            self.add(u64::from(byte));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`OwnKeyHasher`]s, for maps keyed by what this side chooses.
pub type OwnKeys = BuildHasherDefault<OwnKeyHasher>;

/// Entries at or below this many slots are never shrunk.
const MIN_SHRINK_CAPACITY: usize = 64;

/// Ids chosen by us (questions, exports): always reuses the lowest free id.
///
/// Finding the lowest free id costs O(log n); memory is the slots up to the
/// highest live id plus the set of free ids below it.
///
/// ```
/// use capnp_actix_proto::table::IdTable;
/// let mut table = IdTable::new();
/// assert_eq!(table.insert("a"), 0);
/// assert_eq!(table.insert("b"), 1);
/// assert_eq!(table.remove(0), Some("a"));
/// assert_eq!(table.insert("c"), 0);
/// ```
#[derive(Debug, Clone)]
pub struct IdTable<T> {
    /// The value of each id, indexed by id; `None` for a free id. The last
    /// slot is always `Some`, so the vector ends at the highest live id.
    entries: Vec<Option<T>>,
    /// The free ids below `entries.len()`, so the lowest is found fast.
    free: BTreeSet<u32>,
    /// How many ids are in use, so `len` need not count.
    live: usize,
}

impl<T> Default for IdTable<T> {
    /// An empty table.
    ///
    /// ```
    /// use capnp_actix_proto::table::IdTable;
    /// let table: IdTable<u8> = Default::default();
    /// assert!(table.is_empty());
    /// ```
    fn default() -> Self {
        IdTable {
            entries: Vec::new(),
            free: BTreeSet::new(),
            live: 0,
        }
    }
}

impl<T> IdTable<T> {
    /// An empty table.
    ///
    /// ```
    /// use capnp_actix_proto::table::IdTable;
    /// let table: IdTable<u8> = IdTable::new();
    /// assert_eq!(table.len(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` under the lowest free id, and returns the id.
    ///
    /// # Panics
    ///
    /// When all 2^32 ids are in use at once, which would take far more
    /// memory than any machine has.
    ///
    /// ```
    /// use capnp_actix_proto::table::IdTable;
    /// let mut table = IdTable::new();
    /// let id = table.insert('x');
    /// assert_eq!(table.get(id), Some(&'x'));
    /// ```
    pub fn insert(&mut self, value: T) -> u32 {
        self.live += 1;
        if let Some(id) = self.free.pop_first() {
            if let Some(slot) = self.entries.get_mut(id as usize) {
                *slot = Some(value);
                return id;
            }
        }
        let id = u32::try_from(self.entries.len()).expect("all 2^32 ids are in use");
        self.entries.push(Some(value));
        id
    }

    /// The id the next [`insert`](Self::insert) will give: the lowest
    /// free one.
    ///
    /// ```
    /// use capnp_actix_proto::table::IdTable;
    /// let mut table = IdTable::new();
    /// table.insert("a");
    /// table.insert("b");
    /// table.remove(0);
    /// assert_eq!(table.next_id(), 0);
    /// assert_eq!(table.insert("c"), 0);
    /// assert_eq!(table.next_id(), 2);
    /// ```
    pub fn next_id(&self) -> u32 {
        match self.free.first() {
            Some(&id) => id,
            None => u32::try_from(self.entries.len()).unwrap_or(u32::MAX),
        }
    }

    /// The value under `id`, if the id is in use.
    ///
    /// ```
    /// use capnp_actix_proto::table::IdTable;
    /// let mut table = IdTable::new();
    /// let id = table.insert(5);
    /// assert_eq!(table.get(id), Some(&5));
    /// assert_eq!(table.get(id + 1), None);
    /// ```
    pub fn get(&self, id: u32) -> Option<&T> {
        self.entries.get(id as usize)?.as_ref()
    }

    /// The value under `id`, mutably, if the id is in use.
    ///
    /// ```
    /// use capnp_actix_proto::table::IdTable;
    /// let mut table = IdTable::new();
    /// let id = table.insert(5);
    /// *table.get_mut(id).unwrap() += 1;
    /// assert_eq!(table.get(id), Some(&6));
    /// ```
    pub fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.entries.get_mut(id as usize)?.as_mut()
    }

    /// Frees `id`, giving back its value; `None` if it was not in use.
    ///
    /// ```
    /// use capnp_actix_proto::table::IdTable;
    /// let mut table = IdTable::new();
    /// let id = table.insert("v");
    /// assert_eq!(table.remove(id), Some("v"));
    /// assert_eq!(table.remove(id), None);
    /// ```
    pub fn remove(&mut self, id: u32) -> Option<T> {
        let value = self.entries.get_mut(id as usize)?.take()?;
        self.live -= 1;
        if id as usize + 1 == self.entries.len() {
            // Drop the freed tail, so memory follows the highest live id.
            self.entries.pop();
            while let Some(None) = self.entries.last() {
                self.entries.pop();
                let tail = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
                self.free.remove(&tail);
            }
            let capacity = self.entries.capacity();
            if capacity > MIN_SHRINK_CAPACITY && self.entries.len() < capacity / 4 {
                self.entries.shrink_to(capacity / 2);
            }
        } else {
            self.free.insert(id);
        }
        Some(value)
    }

    /// How many ids are in use.
    ///
    /// ```
    /// use capnp_actix_proto::table::IdTable;
    /// let mut table = IdTable::new();
    /// table.insert(());
    /// assert_eq!(table.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no id is in use.
    ///
    /// ```
    /// use capnp_actix_proto::table::IdTable;
    /// assert!(IdTable::<()>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The ids in use and their values, lowest id first.
    ///
    /// ```
    /// use capnp_actix_proto::table::IdTable;
    /// let mut table = IdTable::new();
    /// table.insert("a");
    /// table.insert("b");
    /// let all: Vec<_> = table.iter().collect();
    /// assert_eq!(all, [(0, &"a"), (1, &"b")]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> + '_ {
        (0..=u32::MAX)
            .zip(self.entries.iter())
            .filter_map(|(id, slot)| Some((id, slot.as_ref()?)))
    }

    /// Empties the table, giving back every id and value, lowest id first.
    ///
    /// ```
    /// use capnp_actix_proto::table::IdTable;
    /// let mut table = IdTable::new();
    /// table.insert("a");
    /// assert_eq!(table.drain(), [(0, "a")]);
    /// assert!(table.is_empty());
    /// ```
    pub fn drain(&mut self) -> Vec<(u32, T)> {
        let entries = std::mem::take(&mut self.entries);
        self.free.clear();
        self.live = 0;
        (0..=u32::MAX)
            .zip(entries)
            .filter_map(|(id, slot)| Some((id, slot?)))
            .collect()
    }
}

/// Ids below this are kept by index in a [`PeerTable`]: every known peer
/// picks the lowest free id, so its ids in use stay small.
const DENSE_IDS: u32 = 256;

/// Ids chosen by the peer (answers, imports).
///
/// The peer may pick any `u32`, so an id in use is refused, never
/// overwritten. Small ids (below 256, what lowest-free peers use) are kept
/// by index, the rest in an ordered map: a lookup never degrades, whatever
/// ids a hostile peer picks, and the indexed part never takes more than
/// 256 slots.
///
/// ```
/// use capnp_actix_proto::table::PeerTable;
/// let mut answers = PeerTable::new();
/// assert_eq!(answers.insert(7, "call"), Ok(()));
/// assert_eq!(answers.insert(7, "again"), Err("again"));
/// assert_eq!(answers.remove(7), Some("call"));
/// ```
#[derive(Debug, Clone)]
pub struct PeerTable<T> {
    /// Values by id, for ids below [`DENSE_IDS`].
    dense: Vec<Option<T>>,
    /// How many of `dense` are in use.
    dense_len: usize,
    /// Values by id for the other ids; ordered so that `drain` is
    /// deterministic.
    sparse: BTreeMap<u32, T>,
}

impl<T> Default for PeerTable<T> {
    /// An empty table.
    ///
    /// ```
    /// use capnp_actix_proto::table::PeerTable;
    /// let table: PeerTable<u8> = Default::default();
    /// assert!(table.is_empty());
    /// ```
    fn default() -> Self {
        PeerTable {
            dense: Vec::new(),
            dense_len: 0,
            sparse: BTreeMap::new(),
        }
    }
}

impl<T> PeerTable<T> {
    /// An empty table.
    ///
    /// ```
    /// use capnp_actix_proto::table::PeerTable;
    /// assert_eq!(PeerTable::<u8>::new().len(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` under the peer's `id`. If the id is already in use,
    /// nothing changes and `value` comes back as the error (the peer broke
    /// the protocol).
    ///
    /// ```
    /// use capnp_actix_proto::table::PeerTable;
    /// let mut table = PeerTable::new();
    /// assert!(table.insert(1, 'a').is_ok());
    /// assert_eq!(table.insert(1, 'b'), Err('b'));
    /// assert_eq!(table.get(1), Some(&'a'));
    /// ```
    pub fn insert(&mut self, id: u32, value: T) -> Result<(), T> {
        if id < DENSE_IDS {
            let index = id as usize;
            if self.dense.len() <= index {
                self.dense.resize_with(index + 1, || None);
            }
            let slot = &mut self.dense[index];
            if slot.is_some() {
                return Err(value);
            }
            *slot = Some(value);
            self.dense_len += 1;
            return Ok(());
        }
        match self.sparse.entry(id) {
            std::collections::btree_map::Entry::Occupied(_) => Err(value),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(value);
                Ok(())
            }
        }
    }

    /// The value under `id`, if any.
    ///
    /// ```
    /// use capnp_actix_proto::table::PeerTable;
    /// let mut table = PeerTable::new();
    /// table.insert(3, "x").unwrap();
    /// assert_eq!(table.get(3), Some(&"x"));
    /// assert_eq!(table.get(4), None);
    /// ```
    pub fn get(&self, id: u32) -> Option<&T> {
        if id < DENSE_IDS {
            return self.dense.get(id as usize)?.as_ref();
        }
        self.sparse.get(&id)
    }

    /// The value under `id`, mutably, if any.
    ///
    /// ```
    /// use capnp_actix_proto::table::PeerTable;
    /// let mut table = PeerTable::new();
    /// table.insert(3, 1).unwrap();
    /// *table.get_mut(3).unwrap() = 2;
    /// assert_eq!(table.get(3), Some(&2));
    /// ```
    pub fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        if id < DENSE_IDS {
            return self.dense.get_mut(id as usize)?.as_mut();
        }
        self.sparse.get_mut(&id)
    }

    /// Removes `id`, giving back its value; `None` if it was not in use.
    ///
    /// ```
    /// use capnp_actix_proto::table::PeerTable;
    /// let mut table = PeerTable::new();
    /// table.insert(3, "x").unwrap();
    /// assert_eq!(table.remove(3), Some("x"));
    /// assert_eq!(table.remove(3), None);
    /// ```
    pub fn remove(&mut self, id: u32) -> Option<T> {
        if id < DENSE_IDS {
            let value = self.dense.get_mut(id as usize)?.take();
            self.dense_len -= usize::from(value.is_some());
            return value;
        }
        self.sparse.remove(&id)
    }

    /// Whether `id` is in use.
    ///
    /// ```
    /// use capnp_actix_proto::table::PeerTable;
    /// let mut table = PeerTable::new();
    /// table.insert(3, ()).unwrap();
    /// assert!(table.contains(3));
    /// assert!(!table.contains(4));
    /// ```
    pub fn contains(&self, id: u32) -> bool {
        self.get(id).is_some()
    }

    /// How many ids are in use.
    ///
    /// ```
    /// use capnp_actix_proto::table::PeerTable;
    /// let mut table = PeerTable::new();
    /// table.insert(9, ()).unwrap();
    /// table.insert(90_000, ()).unwrap();
    /// assert_eq!(table.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.dense_len + self.sparse.len()
    }

    /// Whether no id is in use.
    ///
    /// ```
    /// use capnp_actix_proto::table::PeerTable;
    /// assert!(PeerTable::<()>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the table, giving back every id and value, lowest id first.
    ///
    /// ```
    /// use capnp_actix_proto::table::PeerTable;
    /// let mut table = PeerTable::new();
    /// table.insert(5000, "c").unwrap();
    /// table.insert(5, "b").unwrap();
    /// table.insert(2, "a").unwrap();
    /// assert_eq!(table.drain(), [(2, "a"), (5, "b"), (5000, "c")]);
    /// assert!(table.is_empty());
    /// ```
    pub fn drain(&mut self) -> Vec<(u32, T)> {
        self.dense_len = 0;
        let dense = std::mem::take(&mut self.dense);
        (0..DENSE_IDS)
            .zip(dense)
            .filter_map(|(id, slot)| Some((id, slot?)))
            .chain(std::mem::take(&mut self.sparse))
            .collect()
    }
}
