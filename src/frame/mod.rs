//! The two-party stream framing of Cap'n Proto messages.
//!
//! On a byte stream each message travels as:
//!
//! 1. a `u32` little-endian holding the number of segments minus one;
//! 2. one `u32` little-endian per segment, its size in 8-byte words;
//! 3. four zero bytes if the `u32`s so far are an odd number, so that the
//!    table ends on an 8-byte boundary;
//! 4. the segments' bytes, one after the other, unpacked.
//!
//! [`FrameDecoder`] turns received bytes back into messages, checking the
//! segment count and the total size against [`Limits`] as soon as the header
//! shows them, before any memory is set aside for the body. [`encode`]
//! writes a message in the same form.

mod large;

use capnp::message::ReaderSegments;
use capnp::message::{Allocator, Builder, Reader, ReaderOptions};
use capnp::Word;
#[cfg(test)]
use large::LARGE_BODY_AHEAD;
use large::{LargeBody, LARGE_BODY};
use std::cell::RefCell;
use std::fmt;

/// Bytes in one Cap'n Proto word.
const BYTES_PER_WORD: usize = 8;

/// Above this many bytes of spare capacity, the decoder gives memory back
/// once its buffer is mostly empty, so one large frame does not pin its size
/// for the life of the connection.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Room the decoder offers for a read of small frames: the bytes a
/// connection reads at a time (large bodies are read into their own
/// buffer). Small, since every connection has one; many small messages
/// still come in few reads.
pub const READ_ROOM: usize = 8 * 1024;

/// How large inbound (and outbound) messages may be, and how deeply they may
/// be read.
///
/// ```
/// use capnp_actix_proto::Limits;
/// let limits = Limits { max_segments: 16, ..Limits::default() };
/// assert_eq!(limits.max_segments, 16);
/// assert_eq!(limits.nesting_limit, 64);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most segments a received message may have. Checked as soon as the
    /// first four bytes of a frame are in, so a peer cannot make us read or
    /// keep a huge segment table.
    pub max_segments: usize,
    /// Most words a reader may traverse in one received message; guards
    /// against messages whose pointers overlap to look far larger than they
    /// are. Passed to the reader as `traversal_limit_in_words`.
    pub traversal_limit_words: usize,
    /// How deeply structs and lists may nest in a received message; guards
    /// the stack of code that reads recursive data.
    pub nesting_limit: i32,
    /// Largest message, in words of segments (the table not counted), that
    /// we accept from the peer and that we send. Checked as soon as the whole
    /// segment table is in, before waiting for the body.
    pub max_message_words: usize,
}

impl Default for Limits {
    /// 512 segments, a traversal limit of 8 Mi words, nesting 64 deep and
    /// messages of at most 8 Mi words (64 MiB).
    ///
    /// ```
    /// use capnp_actix_proto::Limits;
    /// let limits = Limits::default();
    /// assert_eq!(limits.max_segments, 512);
    /// assert_eq!(limits.traversal_limit_words, 8 * 1024 * 1024);
    /// assert_eq!(limits.nesting_limit, 64);
    /// assert_eq!(limits.max_message_words, 8 * 1024 * 1024);
    /// ```
    fn default() -> Self {
        Limits {
            max_segments: 512,
            traversal_limit_words: 8 * 1024 * 1024,
            nesting_limit: 64,
            max_message_words: 8 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The reader options that apply these limits to a received message.
    ///
    /// ```
    /// use capnp_actix_proto::Limits;
    /// let options = Limits::default().reader_options();
    /// assert_eq!(options.traversal_limit_in_words, Some(8 * 1024 * 1024));
    /// assert_eq!(options.nesting_limit, 64);
    /// ```
    pub fn reader_options(&self) -> ReaderOptions {
        let mut options = ReaderOptions::new();
        options
            .traversal_limit_in_words(Some(self.traversal_limit_words))
            .nesting_limit(self.nesting_limit);
        options
    }
}

/// One received message, its segments owned and 8-byte aligned, read with
/// the decoder's [`Limits`].
///
/// ```
/// use capnp_actix_proto::frame::{encode, Frame, FrameDecoder};
/// use capnp_actix_proto::Limits;
/// let mut msg = capnp::message::Builder::new_default();
/// msg.set_root::<capnp::text::Owned>("hi").unwrap();
/// let mut bytes = Vec::new();
/// encode(&msg, &mut bytes);
/// let mut decoder = FrameDecoder::new(Limits::default());
/// decoder.push(&bytes);
/// let frame: Frame = decoder.next_frame().unwrap().unwrap();
/// assert_eq!(frame.get_root::<capnp::text::Reader>().unwrap(), "hi");
/// ```
pub type Frame = Reader<FrameSegments>;

/// The segments of one received message, in one 8-byte-aligned buffer.
///
/// ```
/// use capnp::message::ReaderSegments;
/// use capnp_actix_proto::{frame::encode, FrameDecoder, Limits};
/// let mut msg = capnp::message::Builder::new_default();
/// msg.set_root::<capnp::text::Owned>("hi").unwrap();
/// let mut bytes = Vec::new();
/// encode(&msg, &mut bytes);
/// let mut decoder = FrameDecoder::new(Limits::default());
/// decoder.push(&bytes);
/// let frame = decoder.next_frame().unwrap().unwrap();
/// assert_eq!(frame.into_segments().len(), 1);
/// ```
#[derive(Debug)]
pub struct FrameSegments {
    /// The segments, back to back.
    words: Vec<Word>,
    /// Where each segment is in `words`.
    bounds: Bounds,
}

/// Where the segments of a frame are in its words.
#[derive(Debug)]
enum Bounds {
    /// One segment, all of the words: most messages (and no allocation).
    One,
    /// Where each segment starts and ends, in words.
    Many(Vec<(usize, usize)>),
}

impl FrameSegments {
    /// Segments of the given sizes (in words) laid out in `words`.
    fn new(words: Vec<Word>, sizes: impl Iterator<Item = usize>) -> FrameSegments {
        let mut sizes = sizes.peekable();
        let first = sizes.next().unwrap_or(0);
        if sizes.peek().is_none() && first == words.len() {
            return FrameSegments {
                words,
                bounds: Bounds::One,
            };
        }
        let mut bounds = vec![(0, first)];
        let mut at = first;
        for size in sizes {
            bounds.push((at, at + size));
            at += size;
        }
        FrameSegments {
            words,
            bounds: Bounds::Many(bounds),
        }
    }
}

impl ReaderSegments for FrameSegments {
    fn get_segment(&self, idx: u32) -> Option<&[u8]> {
        match &self.bounds {
            Bounds::One if idx == 0 => Some(Word::words_to_bytes(&self.words)),
            Bounds::One => None,
            Bounds::Many(bounds) => {
                let (start, end) = *bounds.get(idx as usize)?;
                self.words.get(start..end).map(Word::words_to_bytes)
            }
        }
    }

    fn len(&self) -> usize {
        match &self.bounds {
            Bounds::One => 1,
            Bounds::Many(bounds) => bounds.len(),
        }
    }
}

/// Words a pooled frame buffer holds: most RPC messages (calls, returns,
/// finishes, releases) fit.
const POOLED_WORDS: usize = 64;

/// Pooled frame buffers a thread keeps at most (32 KiB).
const POOL_LIMIT: usize = 64;

thread_local! {
    /// Buffers of [`POOLED_WORDS`] words that frames dropped on this thread
    /// gave back: a small frame needs no allocation of its own.
    static WORDS_POOL: RefCell<Vec<Vec<Word>>> = const { RefCell::new(Vec::new()) };
}

/// `bytes` (a whole number of words) as words, in a pooled buffer if they
/// fit in one. (Not `allocate_zeroed_vec` and a copy: zeroing memory about
/// to be overwritten costs a pass, and `calloc` bypasses the allocator's
/// per-thread cache.)
fn words_of(bytes: &[u8]) -> Vec<Word> {
    let count = bytes.len() / BYTES_PER_WORD;
    let mut words = if count <= POOLED_WORDS {
        // (`try_with`: while the thread exits, its pool is gone.)
        WORDS_POOL
            .try_with(|pool| pool.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| Vec::with_capacity(POOLED_WORDS))
    } else {
        Vec::with_capacity(count)
    };
    words.extend(
        bytes
            .chunks_exact(BYTES_PER_WORD)
            .map(|w| capnp::word(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7])),
    );
    words
}

impl Drop for FrameSegments {
    /// Gives a pooled buffer back to this thread's pool (its old content
    /// stays past the length, where no later frame reads), and a large
    /// frame's to the large frames' pool.
    fn drop(&mut self) {
        if self.words.capacity() != POOLED_WORDS {
            // (A large frame's buffer, to its own pool.)
            large::give_back(std::mem::take(&mut self.words));
            return;
        }
        let mut words = std::mem::take(&mut self.words);
        words.clear();
        let _ = WORDS_POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOL_LIMIT {
                pool.push(words);
            }
        });
    }
}

/// Why a frame header was refused. The stream cannot be resynchronised after
/// one: the connection should be aborted.
///
/// ```
/// use capnp_actix_proto::FrameError;
/// let e = FrameError::TooManySegments { count: 600, limit: 512 };
/// assert!(e.to_string().contains("max_segments"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The header announces more segments than [`Limits::max_segments`].
    TooManySegments {
        /// How many segments the header announced.
        count: u64,
        /// The limit in force.
        limit: usize,
    },
    /// The segment table adds up to more words than
    /// [`Limits::max_message_words`].
    TooLarge {
        /// How many words the segment table announced in all.
        words: u64,
        /// The limit in force.
        limit: usize,
    },
}

impl fmt::Display for FrameError {
    /// ```
    /// use capnp_actix_proto::FrameError;
    /// let e = FrameError::TooLarge { words: 10, limit: 8 };
    /// assert_eq!(
    ///     e.to_string(),
    ///     "message of 10 words is larger than the limit of 8 words (max_message_words)"
    /// );
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooManySegments { count, limit } => write!(
                f,
                "message has {count} segments, more than the limit of {limit} (max_segments)"
            ),
            FrameError::TooLarge { words, limit } => write!(
                f,
                "message of {words} words is larger than the limit of {limit} words \
                 (max_message_words)"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<FrameError> for crate::error::Error {
    /// A framing error becomes a `failed` error carrying its message.
    ///
    /// ```
    /// use capnp_actix_proto::{Error, ErrorKind, FrameError};
    /// let e: Error = FrameError::TooLarge { words: 10, limit: 8 }.into();
    /// assert_eq!(e.kind(), ErrorKind::Failed);
    /// assert!(e.reason().contains("max_message_words"));
    /// ```
    fn from(e: FrameError) -> Self {
        crate::error::Error::failed(e.to_string())
    }
}

/// What the decoder knows about the frame that starts at its read offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// Nothing yet: waiting for the first four bytes.
    Start,
    /// The segment count is known and within limits; waiting for the rest
    /// of the segment table.
    Table {
        /// Number of segments announced.
        segments: usize,
        /// Bytes of the segment table, padding included.
        table_bytes: usize,
    },
    /// The whole table is in and within limits; waiting for the body.
    Body {
        /// Number of segments announced.
        segments: usize,
        /// Bytes of the segment table, padding included.
        table_bytes: usize,
        /// Bytes of all segments together.
        body_bytes: usize,
    },
}

/// Turns a received byte stream into messages, one [`Frame`] at a time.
///
/// Only bytes actually received are buffered: a size in a header is checked
/// against the [`Limits`] but never used to set memory aside. Many small
/// frames in one [`push`](FrameDecoder::push) are cheap to take out.
///
/// ```
/// use capnp_actix_proto::{frame::encode, FrameDecoder, Limits};
/// let mut msg = capnp::message::Builder::new_default();
/// msg.set_root::<capnp::text::Owned>("hello").unwrap();
/// let mut bytes = Vec::new();
/// encode(&msg, &mut bytes);
///
/// let mut decoder = FrameDecoder::new(Limits::default());
/// decoder.push(&bytes[..5]);
/// assert!(decoder.next_frame().unwrap().is_none()); // needs more bytes
/// decoder.push(&bytes[5..]);
/// let frame = decoder.next_frame().unwrap().unwrap();
/// assert_eq!(frame.get_root::<capnp::text::Reader>().unwrap(), "hello");
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    /// Checked against every header; also gives each frame's reader options.
    limits: Limits,
    /// Received bytes up to `end`, then zeroed room for the next read
    /// (zeroed once, when the buffer grows, not before every read). Bytes
    /// before `start` are already decoded and are dropped at the next
    /// compaction.
    buf: Vec<u8>,
    /// Where the first undecoded byte is in `buf`. A read offset instead of
    /// draining the front on every frame keeps many small frames cheap.
    start: usize,
    /// Where the received bytes end in `buf`.
    end: usize,
    /// What is known of the frame at `start`, so a frame that arrives in
    /// pieces has its header checked once and not on every call.
    pending: Pending,
    /// The error returned before, returned again on every later call: after
    /// a refused header there is no trustworthy frame boundary left.
    failed: Option<FrameError>,
    /// A large frame's body being received (its header already consumed).
    large: Option<LargeBody>,
}

impl FrameDecoder {
    /// A decoder with nothing buffered, applying `limits`.
    ///
    /// ```
    /// use capnp_actix_proto::{FrameDecoder, Limits};
    /// let decoder = FrameDecoder::new(Limits::default());
    /// assert_eq!(decoder.buffered(), 0);
    /// ```
    pub fn new(limits: Limits) -> Self {
        FrameDecoder {
            limits,
            buf: Vec::new(),
            start: 0,
            end: 0,
            pending: Pending::Start,
            failed: None,
            large: None,
        }
    }

    /// Where the next received bytes go, without a copy: write into it,
    /// then call [`filled`](Self::filled). While a large frame's body is
    /// being received this is the body's own buffer (up to `want` bytes,
    /// or all the room there is); otherwise the decoder's buffer, with at
    /// least half of [`READ_ROOM`] free. `None` after an error: nothing
    /// more will be decoded.
    ///
    /// ```
    /// use capnp_actix_proto::{FrameDecoder, Limits};
    /// let mut decoder = FrameDecoder::new(Limits::default());
    /// let space = decoder.read_space(4096).unwrap();
    /// space[..3].copy_from_slice(&[0, 0, 0]);
    /// decoder.filled(3);
    /// assert_eq!(decoder.buffered(), 3);
    /// ```
    pub fn read_space(&mut self, want: usize) -> Option<&mut [u8]> {
        if self.failed.is_some() {
            return None;
        }
        if self.large.is_some() {
            return self.large.as_mut().map(|large| large.space(want));
        }
        Some(self.room())
    }

    /// Room at the end of the buffer for a read: at least half of
    /// [`READ_ROOM`] (decoded bytes are dropped first, and the buffer grows
    /// only when a partial frame fills it).
    fn room(&mut self) -> &mut [u8] {
        if self.start > 0 {
            // The bytes left are a partial frame, usually none or a few.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < READ_ROOM / 2 {
            // A fresh zeroed allocation rather than `resize`: the allocator
            // hands out memory it knows is zero without writing it, so a
            // connection's pages are touched only as bytes arrive.
            let grown = (self.end + READ_ROOM).max(self.buf.len() * 2);
            let mut buf = vec![0; grown];
            buf[..self.end].copy_from_slice(&self.buf[..self.end]);
            self.buf = buf;
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were written at the front of
    /// [`read_space`](Self::read_space).
    ///
    /// ```
    /// use capnp_actix_proto::{FrameDecoder, Limits};
    /// let mut decoder = FrameDecoder::new(Limits::default());
    /// decoder.filled(0);
    /// ```
    pub fn filled(&mut self, n: usize) {
        match self.large.as_mut() {
            Some(large) => {
                large.filled = (large.filled + n)
                    .min(large.total)
                    .min(large.words.len() * BYTES_PER_WORD);
            }
            None if self.failed.is_none() => self.end = (self.end + n).min(self.buf.len()),
            None => {}
        }
    }

    /// Appends received bytes. After [`next_frame`](Self::next_frame) has
    /// returned an error, bytes are dropped instead: nothing more will be
    /// decoded.
    ///
    /// ```
    /// use capnp_actix_proto::{FrameDecoder, Limits};
    /// let mut decoder = FrameDecoder::new(Limits::default());
    /// decoder.push(&[0, 0, 0]);
    /// assert_eq!(decoder.buffered(), 3);
    /// ```
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() || bytes.is_empty() {
            return;
        }
        let mut bytes = bytes;
        if let Some(large) = self.large.as_mut() {
            let n = large.take_from(bytes);
            bytes = &bytes[n..];
            if bytes.is_empty() {
                return;
            }
        }
        self.compact();
        if self.buf.len() - self.end < bytes.len() {
            self.buf.resize(self.end + bytes.len(), 0);
        }
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Takes out the next whole message, if one is buffered.
    ///
    /// `Ok(None)` means more bytes are needed, which is normal. An error
    /// means the peer broke the [`Limits`]; the same error is returned on
    /// every later call.
    ///
    /// ```
    /// use capnp_actix_proto::{FrameDecoder, FrameError, Limits};
    /// let mut decoder = FrameDecoder::new(Limits::default());
    /// assert!(decoder.next_frame().unwrap().is_none());
    /// // A header announcing 1000 segments is refused at once.
    /// decoder.push(&999u32.to_le_bytes());
    /// assert_eq!(
    ///     decoder.next_frame().err(),
    ///     Some(FrameError::TooManySegments { count: 1000, limit: 512 })
    /// );
    /// ```
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.decode() {
            Ok(frame) => Ok(frame),
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf = Vec::new();
                self.start = 0;
                self.end = 0;
                self.large = None;
                Err(e)
            }
        }
    }

    /// How many received bytes are held and not yet decoded.
    ///
    /// ```
    /// use capnp_actix_proto::{frame::encode, FrameDecoder, Limits};
    /// let mut msg = capnp::message::Builder::new_default();
    /// msg.set_root::<capnp::text::Owned>("x").unwrap();
    /// let mut bytes = Vec::new();
    /// encode(&msg, &mut bytes);
    /// encode(&msg, &mut bytes);
    /// let mut decoder = FrameDecoder::new(Limits::default());
    /// decoder.push(&bytes);
    /// assert_eq!(decoder.buffered(), bytes.len());
    /// decoder.next_frame().unwrap().unwrap();
    /// assert_eq!(decoder.buffered(), bytes.len() / 2);
    /// ```
    pub fn buffered(&self) -> usize {
        let large = self.large.as_ref().map_or(0, |l| l.filled);
        self.end - self.start + large
    }

    /// Advances through the header of the frame at `start` as far as the
    /// buffered bytes allow, and takes the frame out once it is whole.
    fn decode(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(large) = &self.large {
            if large.filled < large.total {
                return Ok(None);
            }
            let Some(large) = self.large.take() else {
                return Ok(None);
            };
            let segments = FrameSegments::new(large.words, large.sizes.into_iter());
            return Ok(Some(Reader::new(segments, self.limits.reader_options())));
        }
        loop {
            let available = self.buf.get(self.start..self.end).unwrap_or_default();
            match self.pending {
                Pending::Start => {
                    let Some(first) = available.first_chunk::<4>() else {
                        return Ok(None);
                    };
                    let count = u64::from(u32::from_le_bytes(*first)) + 1;
                    let limit = self.limits.max_segments;
                    let too_many = FrameError::TooManySegments { count, limit };
                    if count > u64::try_from(limit).unwrap_or(u64::MAX) {
                        return Err(too_many);
                    }
                    // Only possible where usize is narrower than the limit
                    // allows; refuse rather than wrap.
                    let segments = usize::try_from(count).map_err(|_| too_many.clone())?;
                    let table_bytes = (segments / 2 + 1)
                        .checked_mul(BYTES_PER_WORD)
                        .ok_or(too_many)?;
                    self.pending = Pending::Table {
                        segments,
                        table_bytes,
                    };
                }
                Pending::Table {
                    segments,
                    table_bytes,
                } => {
                    let Some(table) = available.get(..table_bytes) else {
                        return Ok(None);
                    };
                    let words = segment_sizes(table, segments)
                        .fold(0u64, |sum, size| sum.saturating_add(u64::from(size)));
                    let limit = self.limits.max_message_words;
                    let too_large = FrameError::TooLarge { words, limit };
                    if words > u64::try_from(limit).unwrap_or(u64::MAX) {
                        return Err(too_large);
                    }
                    let body_bytes = usize::try_from(words)
                        .ok()
                        .and_then(|w| w.checked_mul(BYTES_PER_WORD))
                        .ok_or(too_large)?;
                    self.pending = Pending::Body {
                        segments,
                        table_bytes,
                        body_bytes,
                    };
                }
                Pending::Body {
                    segments,
                    table_bytes,
                    body_bytes,
                } => {
                    let limit = self.limits.max_message_words;
                    let too_large = || FrameError::TooLarge {
                        words: (body_bytes / BYTES_PER_WORD) as u64,
                        limit,
                    };
                    let total = table_bytes.checked_add(body_bytes).ok_or_else(too_large)?;
                    let sizes = || -> Result<Vec<usize>, FrameError> {
                        let table = available.get(..table_bytes).unwrap_or_default();
                        segment_sizes(table, segments)
                            .map(|size| usize::try_from(size).map_err(|_| too_large()))
                            .collect()
                    };
                    if body_bytes >= LARGE_BODY {
                        // Receive the body into its own buffer from here on.
                        let sizes = sizes()?;
                        let mut large = LargeBody::new(body_bytes, sizes);
                        let body = available.get(table_bytes..).unwrap_or_default();
                        let taken = large.take_from(body);
                        self.start += table_bytes + taken;
                        self.pending = Pending::Start;
                        self.large = Some(large);
                        if self.start == self.end {
                            self.compact();
                        }
                        return self.decode();
                    }
                    let Some(bytes) = available.get(..total) else {
                        return Ok(None);
                    };
                    let words = words_of(&bytes[table_bytes..]);
                    let table = &bytes[..table_bytes];
                    // (Each size fits: their sum, `body_bytes`, did.)
                    let sizes = segment_sizes(table, segments).map(|size| size as usize);
                    let segments = FrameSegments::new(words, sizes);
                    self.start += total;
                    self.pending = Pending::Start;
                    if self.start == self.end {
                        self.compact();
                    }
                    return Ok(Some(Reader::new(segments, self.limits.reader_options())));
                }
            }
        }
    }

    /// Drops decoded bytes from the front of the buffer when that is cheap
    /// (all bytes are decoded, or at least as many decoded as remain, so the
    /// copy is paid for by bytes already consumed), and gives back capacity a
    /// large frame left behind.
    fn compact(&mut self) {
        let remaining = self.end - self.start;
        if self.start > 0 && self.start >= remaining {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = remaining;
        }
        if self.buf.len() > KEEP_CAPACITY && self.end < self.buf.len() / 4 {
            self.buf
                .truncate(KEEP_CAPACITY.max(self.end.saturating_mul(2)));
            self.buf.shrink_to_fit();
        }
    }
}

/// The segment sizes, in words, from a whole segment table (which is at
/// least `4 + 4 * segments` bytes long).
fn segment_sizes(table: &[u8], segments: usize) -> impl Iterator<Item = u32> + '_ {
    table
        .get(4..)
        .unwrap_or_default()
        .chunks_exact(4)
        .take(segments)
        .filter_map(|chunk| chunk.first_chunk::<4>())
        .map(|bytes| u32::from_le_bytes(*bytes))
}

/// A zero-word segment, sent for a builder that holds no segment at all.
const EMPTY_MESSAGE: [&[u8]; 1] = [&[]];

/// Appends `message`, framed, to `out`.
///
/// A builder that has never allocated is sent as one empty segment. Compare
/// [`encoded_words`] with [`Limits::max_message_words`] before sending.
///
/// ```
/// use capnp_actix_proto::frame::encode;
/// let mut msg = capnp::message::Builder::new_default();
/// msg.set_root::<capnp::text::Owned>("hi").unwrap();
/// let mut out = Vec::new();
/// encode(&msg, &mut out);
/// assert_eq!(out, capnp::serialize::write_message_to_words(&msg));
/// ```
pub fn encode<A: Allocator>(message: &Builder<A>, out: &mut Vec<u8>) {
    let output = message.get_segments_for_output();
    let segments = segments_to_send(&output);
    let body_bytes: usize = segments.iter().map(|s| s.len()).sum();
    out.reserve(table_len(segments.len()) + body_bytes);
    encode_table(segments, out);
    for segment in segments {
        out.extend_from_slice(segment);
    }
}

/// The segments to frame for a message's output segments: an empty
/// message still goes out as one empty segment.
///
/// ```
/// use capnp_actix_proto::frame::segments_to_send;
/// assert_eq!(segments_to_send(&[]).len(), 1);
/// ```
pub fn segments_to_send<'a>(output: &'a [&'a [u8]]) -> &'a [&'a [u8]] {
    if output.is_empty() {
        &EMPTY_MESSAGE
    } else {
        output
    }
}

/// Bytes of the segment table (with its padding) for `count` segments.
///
/// ```
/// assert_eq!(capnp_actix_proto::frame::table_len(1), 8);
/// assert_eq!(capnp_actix_proto::frame::table_len(2), 16);
/// ```
pub fn table_len(count: usize) -> usize {
    (count / 2 + 1) * BYTES_PER_WORD
}

/// Appends the segment table (with its padding) that frames `segments`;
/// the segments themselves follow it on the wire. For writers that send
/// large segments without copying them.
///
/// ```
/// use capnp_actix_proto::frame::encode_table;
/// let segment = [0u8; 16];
/// let mut out = Vec::new();
/// encode_table(&[&segment[..]], &mut out);
/// assert_eq!(out, [0, 0, 0, 0, 2, 0, 0, 0]);
/// ```
///
/// No segments frame as one empty segment, as [`encode`] sends them.
pub fn encode_table(segments: &[&[u8]], out: &mut Vec<u8>) {
    let segments = segments_to_send(segments);
    let count = segments.len();
    // A builder holds far fewer than 2^32 segments of fewer than 2^32 words
    // each (its own limits), so these conversions never saturate.
    let as_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    out.extend_from_slice(&as_u32(count - 1).to_le_bytes());
    for segment in segments {
        out.extend_from_slice(&as_u32(segment.len() / BYTES_PER_WORD).to_le_bytes());
    }
    if count & 1 == 0 {
        out.extend_from_slice(&[0; 4]);
    }
}

/// The size of `message`'s segments in words, without the segment table:
/// the number to check against [`Limits::max_message_words`] before sending.
///
/// ```
/// use capnp_actix_proto::frame::encoded_words;
/// let mut msg = capnp::message::Builder::new_default();
/// msg.set_root::<capnp::text::Owned>("hi").unwrap();
/// // One word of root pointer and one word for "hi\0".
/// assert_eq!(encoded_words(&msg), 2);
/// ```
pub fn encoded_words<A: Allocator>(message: &Builder<A>) -> usize {
    message
        .get_segments_for_output()
        .iter()
        .map(|segment| segment.len() / BYTES_PER_WORD)
        .sum()
}

#[cfg(test)]
mod tests;
