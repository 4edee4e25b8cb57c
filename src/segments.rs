//! [`SegmentAllocator`]: where the segments of the messages we build come
//! from.
//!
//! Every call builds at least one message (its request, or its results),
//! and most fit in one small first segment. `capnp`'s `HeapAllocator` gets
//! each from `calloc`, which bypasses the allocator's per-thread cache and
//! zeroes the whole segment; and frees it again when the message goes. Here
//! first segments are recycled instead, through a small pool per thread:
//! a recycled segment is re-zeroed only as far as its message wrote to it,
//! which for an RPC message is a few dozen words out of 128.
//!
//! Segments of any other size come from the heap, zeroed, as before.

use capnp::message::Allocator;
use capnp::Word;
use std::cell::RefCell;
use std::ptr::NonNull;

/// Words in the first segment of a message we build: most RPC messages
/// fit in 1 KiB, and larger ones grow more segments as needed.
pub const FIRST_SEGMENT_WORDS: u32 = 128;

/// The most a later segment grows to unless asked for more (as capnp's
/// own `HeapAllocator`).
const MAX_SEGMENT_WORDS: u32 = 1 << 29;

/// Recycled first segments a thread keeps at most (32 KiB).
const POOL_LIMIT: usize = 32;

thread_local! {
    /// Zeroed first segments, ready for reuse.
    static POOL: RefCell<Vec<Box<[Word]>>> = const { RefCell::new(Vec::new()) };
}

/// The allocator of the messages we build: first segments of
/// [`FIRST_SEGMENT_WORDS`] recycled per thread, later segments doubling in
/// size (at least as large as asked), straight from the heap.
///
/// ```
/// use capnp_actix_proto::segments::SegmentAllocator;
/// let mut message = capnp::message::Builder::new(SegmentAllocator::new());
/// message.set_root::<capnp::text::Owned>("hello").unwrap();
/// let segments = message.get_segments_for_output();
/// assert_eq!(segments.len(), 1);
/// ```
#[derive(Debug)]
pub struct SegmentAllocator {
    /// The size of the next segment, unless asked for more.
    next_size: u32,
}

impl SegmentAllocator {
    /// An allocator whose first segment is a pooled one.
    ///
    /// ```
    /// let _ = capnp_actix_proto::segments::SegmentAllocator::new();
    /// ```
    pub fn new() -> SegmentAllocator {
        SegmentAllocator {
            next_size: FIRST_SEGMENT_WORDS,
        }
    }
}

impl Default for SegmentAllocator {
    fn default() -> Self {
        SegmentAllocator::new()
    }
}

/// A zeroed segment of `words` words: a recycled one if there is one.
fn take_segment(words: u32) -> Box<[Word]> {
    if words == FIRST_SEGMENT_WORDS {
        // (`try_with`: while the thread exits, its pool is gone.)
        if let Some(segment) = POOL.try_with(|pool| pool.borrow_mut().pop()).ok().flatten() {
            return segment;
        }
    }
    Word::allocate_zeroed_vec(words as usize).into_boxed_slice()
}

/// Takes back a segment whose first `used` words may be non-zero.
fn give_back(mut segment: Box<[Word]>, used: usize) {
    if segment.len() != FIRST_SEGMENT_WORDS as usize {
        return;
    }
    // Thread-local storage is gone while the thread exits; the segment is
    // then simply freed.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_LIMIT {
            let used = used.min(segment.len());
            segment[..used].fill(capnp::word(0, 0, 0, 0, 0, 0, 0, 0));
            pool.push(std::mem::take(&mut segment));
        }
    });
}

// SAFETY: `allocate_segment` hands out the memory of a `Box<[Word]>` of
// exactly the length it reports (so 8-byte aligned, as capnp needs, and
// zeroed: fresh from `allocate_zeroed_vec`, or recycled by `give_back`,
// which zeroes every word that may have been written). The box is leaked
// while capnp uses it, and rebuilt with the same pointer and length (capnp
// passes back the length it was given) exactly once, in
// `deallocate_segment`.
unsafe impl Allocator for SegmentAllocator {
    fn allocate_segment(&mut self, minimum_size: u32) -> (NonNull<u8>, u32) {
        let words = minimum_size.max(self.next_size);
        self.next_size = words.saturating_mul(2).min(MAX_SEGMENT_WORDS);
        let segment = take_segment(words);
        let pointer = NonNull::from(Box::leak(segment)).cast::<u8>();
        (pointer, words)
    }

    unsafe fn deallocate_segment(&mut self, pointer: NonNull<u8>, word_size: u32, words_used: u32) {
        let slice =
            std::ptr::slice_from_raw_parts_mut(pointer.as_ptr().cast::<Word>(), word_size as usize);
        // SAFETY: `pointer` and `word_size` are what `allocate_segment`
        // returned for a leaked `Box<[Word]>` (capnp's contract for this
        // method), and it is given back only once.
        let segment = unsafe { Box::from_raw(slice) };
        give_back(segment, words_used as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooled() -> usize {
        POOL.with(|pool| pool.borrow().len())
    }

    #[test]
    fn first_segments_come_back_zeroed_and_are_reused() {
        POOL.with(|pool| pool.borrow_mut().clear());
        {
            let mut message = capnp::message::Builder::new(SegmentAllocator::new());
            let mut list = message.initn_root::<capnp::primitive_list::Builder<u64>>(100);
            for i in 0..100 {
                list.set(i, u64::MAX);
            }
        }
        assert_eq!(pooled(), 1, "the first segment went back to the pool");
        let segment = POOL.with(|pool| pool.borrow_mut().pop()).unwrap();
        assert!(Word::words_to_bytes(&segment).iter().all(|b| *b == 0));
        POOL.with(|pool| pool.borrow_mut().push(segment));
        // The next message takes it (and starts out zeroed, or its root
        // would not read as empty).
        let mut message = capnp::message::Builder::new(SegmentAllocator::new());
        let root = message.get_root::<capnp::any_pointer::Builder>().unwrap();
        assert!(root.is_null());
        assert_eq!(pooled(), 0);
    }

    #[test]
    fn large_messages_grow_segments_of_their_own() {
        POOL.with(|pool| pool.borrow_mut().clear());
        let data = vec![7u8; 10_000];
        {
            let mut message = capnp::message::Builder::new(SegmentAllocator::new());
            message.set_root::<capnp::data::Owned>(&data[..]).unwrap();
            let segments = message.get_segments_for_output();
            assert!(segments.len() >= 2, "{} segments", segments.len());
            let reader = message.get_root_as_reader::<capnp::data::Reader>().unwrap();
            assert_eq!(reader, &data[..]);
        }
        // Only the first segment is kept.
        assert_eq!(pooled(), 1);
    }

    #[test]
    fn the_pool_is_bounded() {
        POOL.with(|pool| pool.borrow_mut().clear());
        let messages: Vec<_> = (0..POOL_LIMIT + 10)
            .map(|_| {
                let mut m = capnp::message::Builder::new(SegmentAllocator::new());
                m.set_root::<capnp::text::Owned>("x").unwrap();
                m
            })
            .collect();
        drop(messages);
        assert_eq!(pooled(), POOL_LIMIT);
    }
}
