//! Unit tests of the tables.

use super::*;

// covers: T-02
#[test]
fn id_table_reuses_lowest_free_id() {
    let mut table = IdTable::new();
    for i in 0..10 {
        assert_eq!(table.insert(i), i);
    }
    assert_eq!(table.remove(7), Some(7));
    assert_eq!(table.remove(2), Some(2));
    assert_eq!(table.remove(5), Some(5));
    assert_eq!(table.remove(5), None);
    assert_eq!(table.len(), 7);
    assert_eq!(table.insert(100), 2);
    assert_eq!(table.insert(101), 5);
    assert_eq!(table.insert(102), 7);
    assert_eq!(table.insert(103), 10);
    assert_eq!(table.get(5), Some(&101));
    let ids: Vec<u32> = table.iter().map(|(id, _)| id).collect();
    assert_eq!(ids, (0..=10).collect::<Vec<_>>());
}

// covers: T-02
#[test]
fn id_table_memory_follows_live_ids() {
    let mut table = IdTable::new();
    for i in 0..1000u32 {
        table.insert(i);
    }
    // Free from the top: the slots go, not just their values.
    for id in (1..1000).rev() {
        assert_eq!(table.remove(id), Some(id));
    }
    assert_eq!(table.entries.len(), 1);
    assert!(table.free.is_empty());
    assert!(table.entries.capacity() < 1000);
    // Free from the bottom, then the top: the free set shrinks too.
    let mut table = IdTable::new();
    for i in 0..100u32 {
        table.insert(i);
    }
    for id in 0..99 {
        table.remove(id);
    }
    assert_eq!(table.free.len(), 99);
    table.remove(99);
    assert!(table.entries.is_empty());
    assert!(table.free.is_empty());
    assert!(table.is_empty());
    assert_eq!(table.insert(0), 0);
}

#[test]
fn id_table_drain_and_get_mut() {
    let mut table = IdTable::new();
    table.insert("a");
    table.insert("b");
    table.insert("c");
    table.remove(1);
    *table.get_mut(2).unwrap() = "z";
    assert_eq!(table.get_mut(1), None);
    assert_eq!(table.drain(), [(0, "a"), (2, "z")]);
    assert!(table.is_empty());
    assert_eq!(table.insert("n"), 0);
}

// covers: T-03
#[test]
fn question_id_not_reused_until_return_and_finish_return_first() {
    let mut questions = QuestionTable::new();
    let id = questions.insert("first");
    assert_eq!(questions.mark_returned(id), Ok(None));
    assert!(questions.is_returned(id));
    assert_eq!(questions.insert("second"), id + 1);
    assert_eq!(questions.mark_finished(id), Some("first"));
    assert!(!questions.is_returned(id));
    assert_eq!(questions.insert("third"), id);
}

// covers: T-03
#[test]
fn question_id_not_reused_until_return_and_finish_finish_first() {
    let mut questions = QuestionTable::new();
    let id = questions.insert("first");
    assert_eq!(questions.mark_finished(id), None);
    assert!(questions.is_finished(id));
    // Finish again: no change.
    assert_eq!(questions.mark_finished(id), None);
    assert_eq!(questions.insert("second"), id + 1);
    assert_eq!(questions.mark_returned(id), Ok(Some("first")));
    assert_eq!(questions.insert("third"), id);
}

// covers: T-03
#[test]
fn question_return_errors_change_nothing() {
    let mut questions = QuestionTable::new();
    let id = questions.insert(1);
    assert_eq!(
        questions.mark_returned(id + 1),
        Err(QuestionError::Unknown(id + 1))
    );
    assert_eq!(questions.mark_returned(id), Ok(None));
    assert_eq!(
        questions.mark_returned(id),
        Err(QuestionError::DuplicateReturn(id))
    );
    assert!(questions.is_returned(id));
    assert!(!questions.is_finished(id));
    assert_eq!(questions.mark_finished(id), Some(1));
    // Freed: a late Return is unknown, a late Finish does nothing.
    assert_eq!(questions.mark_returned(id), Err(QuestionError::Unknown(id)));
    assert_eq!(questions.mark_finished(id), None);
    assert!(questions.is_empty());
    questions.insert(5);
    questions.insert(6);
    assert_eq!(questions.drain(), [(0, 5), (1, 6)]);
}

// covers: T-04
#[test]
fn export_same_key_reuses_id_and_counts_references() {
    let mut exports = ExportTable::new();
    let mut made = 0;
    let a = exports.export(100, || {
        made += 1;
        "a"
    });
    let b = exports.export(200, || "b");
    assert_eq!((a, b), (0, 1));
    for _ in 0..3 {
        assert_eq!(exports.export(100, || unreachable!()), a);
    }
    assert_eq!(made, 1);
    assert_eq!(exports.ref_count(a), Some(4));
    assert_eq!(exports.ref_count(b), Some(1));
    assert_eq!(exports.id_of(&100), Some(a));
    assert_eq!(exports.release(a, 3), Ok(None));
    assert_eq!(exports.ref_count(a), Some(1));
    assert_eq!(exports.release(a, 0), Ok(None));
    assert_eq!(exports.release(a, 1), Ok(Some("a")));
    assert_eq!(exports.id_of(&100), None);
    assert_eq!(exports.get(a), None);
    assert_eq!(exports.len(), 1);
    // The key is forgotten: exporting it again is a new entry, and the
    // lowest free id is reused.
    assert_eq!(exports.export(300, || "c"), a);
    assert_eq!(exports.export(100, || "a2"), 2);
    assert_eq!(exports.get(2), Some(&"a2"));
    assert_eq!(exports.drain(), ["c", "b", "a2"]);
    assert!(exports.is_empty());
    assert_eq!(exports.id_of(&300), None);
}

// covers: T-04
#[test]
fn release_below_zero_is_an_error_and_changes_nothing() {
    let mut exports = ExportTable::new();
    let id = exports.export(1, || "cap");
    exports.export(1, || "cap");
    assert_eq!(
        exports.release(id, 3),
        Err(ReleaseError::BelowZero {
            id,
            held: 2,
            released: 3
        })
    );
    assert_eq!(exports.ref_count(id), Some(2));
    assert_eq!(exports.id_of(&1), Some(id));
    assert_eq!(
        exports.release(id, u32::MAX),
        Err(ReleaseError::BelowZero {
            id,
            held: 2,
            released: u32::MAX
        })
    );
    assert_eq!(
        exports.release(id + 1, 1),
        Err(ReleaseError::UnknownExport(id + 1))
    );
    assert_eq!(exports.ref_count(id), Some(2));
    assert_eq!(exports.release(id, 2), Ok(Some("cap")));
    assert_eq!(exports.release(id, 1), Err(ReleaseError::UnknownExport(id)));
}

// covers: T-01
#[test]
fn duplicate_peer_id_rejected() {
    let mut answers = PeerTable::new();
    assert_eq!(answers.insert(u32::MAX, "big"), Ok(()));
    assert_eq!(answers.insert(0, "zero"), Ok(()));
    assert_eq!(answers.insert(0, "again"), Err("again"));
    assert_eq!(answers.get(0), Some(&"zero"));
    assert!(answers.contains(u32::MAX));
    assert_eq!(answers.len(), 2);
    assert_eq!(answers.remove(0), Some("zero"));
    assert_eq!(answers.insert(0, "reused"), Ok(()));
    *answers.get_mut(0).unwrap() = "changed";
    assert_eq!(answers.drain(), [(0, "changed"), (u32::MAX, "big")]);
    assert!(answers.is_empty());
}

// covers: T-01
#[test]
fn import_counts_what_we_owe_in_release() {
    let mut imports = ImportTable::new();
    let mut made = 0;
    for _ in 0..3 {
        imports.receive(5, || {
            made += 1;
            "five"
        });
    }
    imports.receive(2, || "two");
    assert_eq!(made, 1);
    assert_eq!(imports.ref_count(5), Some(3));
    assert_eq!(imports.ref_count(2), Some(1));
    assert_eq!(imports.ref_count(9), None);
    assert_eq!(imports.len(), 2);
    assert_eq!(imports.remove(5), Some(("five", 3)));
    assert_eq!(imports.remove(5), None);
    // Received again after the release: counting starts afresh.
    imports.receive(5, || "five again");
    assert_eq!(imports.ref_count(5), Some(1));
    assert_eq!(imports.drain(), [(2, "two", 1), (5, "five again", 1)]);
    assert!(imports.is_empty());
}

#[test]
fn error_messages_name_the_ids() {
    assert_eq!(
        ReleaseError::BelowZero {
            id: 1,
            held: 2,
            released: 3
        }
        .to_string(),
        "release of 3 references to export 1, which has only 2"
    );
    assert_eq!(
        QuestionError::Unknown(4).to_string(),
        "return for question 4, which is not asked"
    );
}

// covers: P-21, T-03
#[test]
fn an_early_finish_asks_the_peer_to_release_the_results() {
    let mut questions = QuestionTable::new();
    let early = questions.insert("early");
    let late = questions.insert("late");
    // Dropped before the Return: releaseResultCaps, once.
    assert_eq!(questions.finish(early), Some(true));
    assert_eq!(questions.finish(early), None);
    assert!(questions.finished_early(early));
    // Its Return then frees the id; nothing of it is ours to import.
    assert_eq!(questions.mark_returned(early), Ok(Some("early")));
    assert!(!questions.finished_early(early));
    // Dropped after the Return: the Finish releases nothing.
    questions.mark_returned(late).unwrap();
    assert!(!questions.finished_early(late));
    assert_eq!(questions.finish(late), Some(false));
    assert!(questions.is_empty());
    assert_eq!(questions.finish(99), None, "unknown: nothing to send");
}

#[test]
fn peer_table_agrees_with_a_map_on_both_sides_of_the_indexed_ids() {
    use super::PeerTable;
    use std::collections::BTreeMap;
    let mut table = PeerTable::new();
    let mut model = BTreeMap::new();
    // Ids around the indexed range's end, and far beyond it.
    let ids = [0u32, 1, 7, 254, 255, 256, 257, 4096, 1 << 20, u32::MAX];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for step in 0..5000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let id = ids[(seed % ids.len() as u64) as usize];
        match (seed >> 32) % 4 {
            0 | 1 => {
                let expected = match model.entry(id) {
                    std::collections::btree_map::Entry::Occupied(_) => Err(step),
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(step);
                        Ok(())
                    }
                };
                assert_eq!(table.insert(id, step), expected);
            }
            2 => assert_eq!(table.remove(id), model.remove(&id)),
            _ => {
                if let Some(v) = table.get_mut(id) {
                    *v += 1;
                }
                if let Some(v) = model.get_mut(&id) {
                    *v += 1;
                }
            }
        }
        assert_eq!(table.get(id), model.get(&id));
        assert_eq!(table.contains(id), model.contains_key(&id));
        assert_eq!(table.len(), model.len());
    }
    let drained: Vec<_> = std::mem::take(&mut model).into_iter().collect();
    assert_eq!(table.drain(), drained);
    assert!(table.is_empty());
}
