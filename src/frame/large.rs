//! Large frames: a body of [`LARGE_BODY`] bytes or more is received
//! straight into a buffer of its own, which grows as bytes arrive, instead
//! of being copied out of the decoder's.
//!
//! Such buffers are reused: a frame dropped on a thread gives its buffer to
//! the thread's pool (a few, of bounded size), and the next large body
//! takes it. A fresh buffer costs more than its zeroing: its pages are
//! faulted in as the socket first writes to them, and handed back to the
//! kernel when the allocator trims its heap; for a stream of 64 KiB writes
//! that is a fifth of a server's time (BENCHMARKS.md). A reused buffer's
//! old bytes are only ever overwritten: a frame is read once its body is
//! whole, and then only as far as its body goes.

use super::BYTES_PER_WORD;
use capnp::Word;
use std::cell::RefCell;

/// Frames whose body is at least this large are received into their own
/// buffer.
pub(super) const LARGE_BODY: usize = 64 * 1024;

/// How far ahead of the bytes received a large body's buffer is zeroed
/// (made ready for the socket to write into). Bounds the memory a peer
/// that announces a large message and then stalls makes us touch.
pub(super) const LARGE_BODY_AHEAD: usize = 256 * 1024;

/// The largest buffer a thread's pool keeps, in bytes.
const POOLED_MAX: usize = 1024 * 1024;

/// Buffers a thread's pool keeps at most: with [`POOLED_MAX`], at most
/// 4 MiB held per thread between large frames.
const POOL_LIMIT: usize = 4;

thread_local! {
    /// Buffers of large frames dropped on this thread, ready for reuse;
    /// their length is how far they were written (initialized) before.
    static POOL: RefCell<Vec<Vec<Word>>> = const { RefCell::new(Vec::new()) };
}

/// The buffer of a dropped frame, for a later large body: kept if it was
/// one (at least [`LARGE_BODY`] bytes, at most [`POOLED_MAX`]) and the
/// thread's pool has room.
pub(super) fn give_back(words: Vec<Word>) {
    let bytes = words.capacity() * BYTES_PER_WORD;
    if !(LARGE_BODY..=POOLED_MAX).contains(&bytes) {
        return;
    }
    // (`try_with`: while the thread exits, its pool is gone.)
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_LIMIT {
            pool.push(words);
        }
    });
}

/// A pooled buffer with room for `words` words, if the pool has one.
fn reused(words: usize) -> Option<Vec<Word>> {
    POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let at = pool.iter().position(|w| w.capacity() >= words)?;
        let mut reused = pool.swap_remove(at);
        // (What stays is written memory, to be written over.)
        reused.truncate(words);
        Some(reused)
    })
    .ok()
    .flatten()
}

/// A large frame's body, being received.
#[derive(Debug)]
pub(super) struct LargeBody {
    /// The body so far. Its capacity is reserved for the whole body when
    /// the header arrives (address space only: no page is touched), or it
    /// is a reused buffer large enough; so it never moves. Its length grows
    /// (zeroed, past what a reused buffer held) as bytes are about to
    /// arrive.
    pub(super) words: Vec<Word>,
    /// Bytes of `words` received.
    pub(super) filled: usize,
    /// Bytes the body has in all.
    pub(super) total: usize,
    /// Segment sizes, in words.
    pub(super) sizes: Vec<usize>,
}

impl LargeBody {
    pub(super) fn new(total: usize, sizes: Vec<usize>) -> LargeBody {
        let count = total.div_ceil(BYTES_PER_WORD);
        let words = reused(count).unwrap_or_else(|| {
            let mut words = Vec::new();
            // If the reservation is refused, the body grows as it arrives
            // instead (with copies); either way only received bytes cost
            // memory.
            let _ = words.try_reserve_exact(count);
            words
        });
        LargeBody {
            words,
            filled: 0,
            total,
            sizes,
        }
    }

    /// Room for at least `want` more bytes (fewer only at the end of the
    /// body or past [`LARGE_BODY_AHEAD`] beyond the bytes received), as a
    /// writable slice: all the written room there is, so that one read can
    /// take in as much as the socket holds.
    pub(super) fn space(&mut self, want: usize) -> &mut [u8] {
        let needed = (self.filled + want.min(LARGE_BODY_AHEAD)).min(self.total);
        if needed > self.words.len() * BYTES_PER_WORD {
            // Zero at least a window ahead at a time (fewer, larger steps),
            // capped at the body's size.
            let grown = (self.filled + LARGE_BODY_AHEAD).max(needed).min(self.total);
            self.words.resize(
                grown.div_ceil(BYTES_PER_WORD),
                capnp::word(0, 0, 0, 0, 0, 0, 0, 0),
            );
        }
        let end = (self.words.len() * BYTES_PER_WORD).min(self.total);
        &mut Word::words_to_bytes_mut(&mut self.words)[self.filled..end]
    }

    /// Copies as much of `bytes` as the body still lacks; gives how much.
    pub(super) fn take_from(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.total - self.filled);
        let mut taken = 0;
        while taken < n {
            let space = self.space(n - taken);
            let step = space.len().min(n - taken);
            space[..step].copy_from_slice(&bytes[taken..taken + step]);
            self.filled += step;
            taken += step;
        }
        n
    }
}

/// How many buffers this thread's pool holds.
#[cfg(test)]
pub(super) fn pooled() -> usize {
    POOL.with(|pool| pool.borrow().len())
}
