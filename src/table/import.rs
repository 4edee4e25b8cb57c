//! Imports: what we owe the peer in `Release`.

use std::collections::BTreeMap;

/// Imports: ids chosen by the peer; counts how many times the peer sent us
/// each id, which is what we owe it in Release.
///
/// ```
/// use capnp_actix_proto::table::ImportTable;
/// let mut imports = ImportTable::new();
/// imports.receive(3, || "remote cap");
/// imports.receive(3, || unreachable!());
/// assert_eq!(imports.remove(3), Some(("remote cap", 2)));
/// ```
#[derive(Debug, Clone)]
pub struct ImportTable<T> {
    /// Each import's value and how many times the peer sent its id (what
    /// our `Release` must give back); ordered so that `drain` is
    /// deterministic.
    entries: BTreeMap<u32, (T, u32)>,
}

impl<T> Default for ImportTable<T> {
    /// An empty table.
    ///
    /// ```
    /// use capnp_actix_proto::table::ImportTable;
    /// let table: ImportTable<u8> = Default::default();
    /// assert!(table.is_empty());
    /// ```
    fn default() -> Self {
        ImportTable {
            entries: BTreeMap::new(),
        }
    }
}

impl<T> ImportTable<T> {
    /// An empty table.
    ///
    /// ```
    /// use capnp_actix_proto::table::ImportTable;
    /// assert_eq!(ImportTable::<u8>::new().len(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one more reference to `id` received from the peer, creating
    /// the entry with `make` if the id is new, and gives access to its
    /// value. The count saturates at `u32::MAX`.
    ///
    /// ```
    /// use capnp_actix_proto::table::ImportTable;
    /// let mut imports = ImportTable::new();
    /// *imports.receive(8, || 0) += 1;
    /// *imports.receive(8, || 0) += 1;
    /// assert_eq!(imports.get(8), Some(&2));
    /// assert_eq!(imports.ref_count(8), Some(2));
    /// ```
    pub fn receive(&mut self, id: u32, make: impl FnOnce() -> T) -> &mut T {
        let entry = self.entries.entry(id).or_insert_with(|| (make(), 0));
        entry.1 = entry.1.saturating_add(1);
        &mut entry.0
    }

    /// The value imported under `id`, if any.
    ///
    /// ```
    /// use capnp_actix_proto::table::ImportTable;
    /// let mut imports = ImportTable::new();
    /// imports.receive(1, || "x");
    /// assert_eq!(imports.get(1), Some(&"x"));
    /// assert_eq!(imports.get(2), None);
    /// ```
    pub fn get(&self, id: u32) -> Option<&T> {
        self.entries.get(&id).map(|(value, _)| value)
    }

    /// The value imported under `id`, mutably, if any.
    ///
    /// ```
    /// use capnp_actix_proto::table::ImportTable;
    /// let mut imports = ImportTable::new();
    /// imports.receive(1, || 1);
    /// *imports.get_mut(1).unwrap() = 5;
    /// assert_eq!(imports.get(1), Some(&5));
    /// ```
    pub fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.entries.get_mut(&id).map(|(value, _)| value)
    }

    /// Drops the import `id`, giving back its value and the count to send
    /// in `Release { id, referenceCount }`.
    ///
    /// ```
    /// use capnp_actix_proto::table::ImportTable;
    /// let mut imports = ImportTable::new();
    /// imports.receive(4, || "x");
    /// assert_eq!(imports.remove(4), Some(("x", 1)));
    /// assert_eq!(imports.remove(4), None);
    /// ```
    pub fn remove(&mut self, id: u32) -> Option<(T, u32)> {
        self.entries.remove(&id)
    }

    /// How many times the peer sent us `id`, if it is imported.
    ///
    /// ```
    /// use capnp_actix_proto::table::ImportTable;
    /// let mut imports = ImportTable::new();
    /// imports.receive(4, || ());
    /// assert_eq!(imports.ref_count(4), Some(1));
    /// assert_eq!(imports.ref_count(5), None);
    /// ```
    pub fn ref_count(&self, id: u32) -> Option<u32> {
        self.entries.get(&id).map(|&(_, count)| count)
    }

    /// How many ids are imported.
    ///
    /// ```
    /// use capnp_actix_proto::table::ImportTable;
    /// let mut imports = ImportTable::new();
    /// imports.receive(4, || ());
    /// imports.receive(4, || ());
    /// assert_eq!(imports.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is imported.
    ///
    /// ```
    /// use capnp_actix_proto::table::ImportTable;
    /// assert!(ImportTable::<()>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties the table, giving back every id, value and count, lowest id
    /// first.
    ///
    /// ```
    /// use capnp_actix_proto::table::ImportTable;
    /// let mut imports = ImportTable::new();
    /// imports.receive(9, || "b");
    /// imports.receive(2, || "a");
    /// imports.receive(2, || "a");
    /// assert_eq!(imports.drain(), [(2, "a", 2), (9, "b", 1)]);
    /// ```
    pub fn drain(&mut self) -> Vec<(u32, T, u32)> {
        std::mem::take(&mut self.entries)
            .into_iter()
            .map(|(id, (value, count))| (id, value, count))
            .collect()
    }
}
