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

use capnp::message::ReaderSegments;
use capnp::message::{Allocator, Builder, Reader, ReaderOptions};
use capnp::Word;
use std::fmt;

/// Bytes in one Cap'n Proto word.
const BYTES_PER_WORD: usize = 8;

/// Above this many bytes of spare capacity, the decoder gives memory back
/// once its buffer is mostly empty, so one large frame does not pin its size
/// for the life of the connection.
const KEEP_CAPACITY: usize = 64 * 1024;

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
    /// Where each segment starts and ends in `words`, in words.
    bounds: Vec<(usize, usize)>,
}

impl FrameSegments {
    /// Segments of the given sizes (in words) laid out in `words`.
    fn new(words: Vec<Word>, sizes: impl Iterator<Item = usize>) -> FrameSegments {
        let mut bounds = Vec::new();
        let mut at = 0;
        for size in sizes {
            bounds.push((at, at + size));
            at += size;
        }
        FrameSegments { words, bounds }
    }
}

impl ReaderSegments for FrameSegments {
    fn get_segment(&self, idx: u32) -> Option<&[u8]> {
        let (start, end) = *self.bounds.get(idx as usize)?;
        self.words.get(start..end).map(Word::words_to_bytes)
    }

    fn len(&self) -> usize {
        self.bounds.len()
    }
}

/// Frames whose body is at least this large are received straight into
/// their own buffer, which grows as bytes arrive, instead of being copied
/// out of the decoder's.
const LARGE_BODY: usize = 64 * 1024;

/// A large frame's body, being received.
#[derive(Debug)]
struct LargeBody {
    /// The body so far; grows (never past `total`) as bytes arrive.
    words: Vec<Word>,
    /// Bytes of `words` received.
    filled: usize,
    /// Bytes the body has in all.
    total: usize,
    /// Segment sizes, in words.
    sizes: Vec<usize>,
}

impl LargeBody {
    /// Room for at least `want` more bytes (never past the end of the
    /// body), as a writable slice.
    fn space(&mut self, want: usize) -> &mut [u8] {
        let needed = (self.filled + want).min(self.total);
        if needed > self.words.len() * BYTES_PER_WORD {
            // Grow geometrically, capped at the body's size: only memory
            // for bytes that are arriving is set aside.
            let grown = (self.words.len() * 2 * BYTES_PER_WORD)
                .max(needed)
                .min(self.total);
            self.words.resize(
                grown.div_ceil(BYTES_PER_WORD),
                capnp::word(0, 0, 0, 0, 0, 0, 0, 0),
            );
        }
        let end = needed.min(self.words.len() * BYTES_PER_WORD);
        &mut Word::words_to_bytes_mut(&mut self.words)[self.filled..end]
    }

    /// Copies as much of `bytes` as the body still lacks; gives how much.
    fn take_from(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.total - self.filled);
        let space = self.space(n);
        space[..n].copy_from_slice(&bytes[..n]);
        self.filled += n;
        n
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
    /// Received bytes; those before `start` are already decoded and are
    /// dropped at the next compaction.
    buf: Vec<u8>,
    /// Where the first undecoded byte is in `buf`. A read offset instead of
    /// draining the front on every frame keeps many small frames cheap.
    start: usize,
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
            pending: Pending::Start,
            failed: None,
            large: None,
        }
    }

    /// Where the next received bytes can go without a copy, when a large
    /// frame's body is being received: fill it, then call
    /// [`filled`](Self::filled). `None` otherwise: use [`push`](Self::push).
    ///
    /// ```
    /// use capnp_actix_proto::{FrameDecoder, Limits};
    /// let mut decoder = FrameDecoder::new(Limits::default());
    /// assert!(decoder.read_space(4096).is_none());
    /// ```
    pub fn read_space(&mut self, want: usize) -> Option<&mut [u8]> {
        if self.failed.is_some() {
            return None;
        }
        self.large.as_mut().map(|large| large.space(want))
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
        if let Some(large) = self.large.as_mut() {
            large.filled = (large.filled + n)
                .min(large.total)
                .min(large.words.len() * BYTES_PER_WORD);
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
        self.buf.extend_from_slice(bytes);
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
        self.buf.len() - self.start + large
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
            let available = self.buf.get(self.start..).unwrap_or_default();
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
                        let mut large = LargeBody {
                            words: Vec::new(),
                            filled: 0,
                            total: body_bytes,
                            sizes,
                        };
                        let body = available.get(table_bytes..).unwrap_or_default();
                        let taken = large.take_from(body);
                        self.start += table_bytes + taken;
                        self.pending = Pending::Start;
                        self.large = Some(large);
                        if self.start == self.buf.len() {
                            self.compact();
                        }
                        return self.decode();
                    }
                    let Some(bytes) = available.get(..total) else {
                        return Ok(None);
                    };
                    let body = &bytes[table_bytes..];
                    let mut words = Word::allocate_zeroed_vec(body_bytes / BYTES_PER_WORD);
                    Word::words_to_bytes_mut(&mut words).copy_from_slice(body);
                    let segments = FrameSegments::new(words, sizes()?.into_iter());
                    self.start += total;
                    self.pending = Pending::Start;
                    if self.start == self.buf.len() {
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
        let remaining = self.buf.len() - self.start;
        if self.start > 0 && self.start >= remaining {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let capacity = self.buf.capacity();
        if capacity > KEEP_CAPACITY && self.buf.len() < capacity / 4 {
            self.buf
                .shrink_to(KEEP_CAPACITY.max(self.buf.len().saturating_mul(2)));
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
pub fn encode_table(segments: &[&[u8]], out: &mut Vec<u8>) {
    let count = segments.len().max(1);
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
mod tests {
    use super::*;
    use capnp::message::{AllocationStrategy, HeapAllocator};

    /// A message whose root is a list of `n` texts, spread over many
    /// segments when `tiny_segments` is set.
    fn text_list_message(n: u32, tiny_segments: bool) -> Builder<HeapAllocator> {
        let allocator = if tiny_segments {
            HeapAllocator::new()
                .first_segment_words(1)
                .allocation_strategy(AllocationStrategy::FixedSize)
        } else {
            HeapAllocator::new()
        };
        let mut msg = Builder::new(allocator);
        let mut list = msg.initn_root::<capnp::text_list::Builder>(n);
        for i in 0..n {
            list.set(i, format!("entry number {i}").as_str());
        }
        msg
    }

    /// Checks that `frame` holds what `text_list_message(n, _)` built.
    fn assert_text_list(frame: &Frame, n: u32) {
        let list: capnp::text_list::Reader = frame.get_root().unwrap();
        assert_eq!(list.len(), n);
        for i in 0..n {
            assert_eq!(
                list.get(i).unwrap().to_str().unwrap(),
                format!("entry number {i}")
            );
        }
    }

    fn encoded(msg: &Builder<HeapAllocator>) -> Vec<u8> {
        let mut out = Vec::new();
        encode(msg, &mut out);
        out
    }

    fn segment_count(frame: &Frame) -> usize {
        use capnp::message::ReaderSegments;
        frame.get_segments().len()
    }

    // covers: W-01
    #[test]
    fn single_segment_round_trip() {
        let msg = text_list_message(3, false);
        assert_eq!(msg.get_segments_for_output().len(), 1);
        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.push(&encoded(&msg));
        let frame = decoder.next_frame().unwrap().unwrap();
        assert_text_list(&frame, 3);
        assert_eq!(segment_count(&frame), 1);
        assert!(decoder.next_frame().unwrap().is_none());
        assert_eq!(decoder.buffered(), 0);
    }

    // covers: W-01
    #[test]
    fn multi_segment_round_trip() {
        let msg = text_list_message(5, true);
        let segments = msg.get_segments_for_output().len();
        assert!(segments > 2, "expected many segments, got {segments}");
        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.push(&encoded(&msg));
        let frame = decoder.next_frame().unwrap().unwrap();
        assert_text_list(&frame, 5);
        assert_eq!(segment_count(&frame), segments);
    }

    // covers: W-01
    #[test]
    fn several_frames_in_one_push() {
        let mut bytes = Vec::new();
        for n in 0..20 {
            encode(&text_list_message(n, n % 2 == 1), &mut bytes);
        }
        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.push(&bytes);
        for n in 0..20 {
            let frame = decoder.next_frame().unwrap().unwrap();
            assert_text_list(&frame, n);
        }
        assert!(decoder.next_frame().unwrap().is_none());
        assert_eq!(decoder.buffered(), 0);
    }

    // covers: W-01
    #[test]
    fn frame_fed_one_byte_at_a_time() {
        let mut bytes = encoded(&text_list_message(4, true));
        bytes.extend(encoded(&text_list_message(2, false)));
        let mut decoder = FrameDecoder::new(Limits::default());
        let mut frames = Vec::new();
        for byte in &bytes {
            decoder.push(std::slice::from_ref(byte));
            if let Some(frame) = decoder.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_text_list(&frames[0], 4);
        assert_text_list(&frames[1], 2);
        assert_eq!(decoder.buffered(), 0);
    }

    // covers: W-02
    #[test]
    fn too_many_segments_rejected_from_the_first_four_bytes() {
        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.push(&512u32.to_le_bytes()); // 513 segments
        assert_eq!(
            decoder.next_frame().err().unwrap(),
            FrameError::TooManySegments {
                count: 513,
                limit: 512
            }
        );
        // The error sticks, and later bytes are not kept.
        decoder.push(&[0; 64]);
        assert_eq!(decoder.buffered(), 0);
        assert!(decoder.next_frame().is_err());

        // Exactly at the limit is fine (waits for the table).
        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.push(&511u32.to_le_bytes());
        assert!(decoder.next_frame().unwrap().is_none());

        // The largest count the header can express.
        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.push(&u32::MAX.to_le_bytes());
        assert_eq!(
            decoder.next_frame().err().unwrap(),
            FrameError::TooManySegments {
                count: 1 << 32,
                limit: 512
            }
        );
    }

    // covers: W-02
    #[test]
    fn oversized_table_rejected_before_any_body_bytes() {
        let limits = Limits {
            max_message_words: 100,
            ..Limits::default()
        };
        // Two segments of 60 words: 120 > 100. Table: 4 + 8 bytes + 4 padding.
        let mut header = Vec::new();
        header.extend(1u32.to_le_bytes());
        header.extend(60u32.to_le_bytes());
        header.extend(60u32.to_le_bytes());
        header.extend([0; 4]);
        let mut decoder = FrameDecoder::new(limits);
        decoder.push(&header[..12]);
        assert!(decoder.next_frame().unwrap().is_none());
        decoder.push(&header[12..]);
        assert_eq!(
            decoder.next_frame().err().unwrap(),
            FrameError::TooLarge {
                words: 120,
                limit: 100
            }
        );

        // Huge sizes do not overflow anything and are refused likewise.
        let mut decoder = FrameDecoder::new(Limits::default());
        let mut header = Vec::new();
        header.extend(2u32.to_le_bytes());
        header.extend([0xff; 12]);
        decoder.push(&header);
        assert_eq!(
            decoder.next_frame().err().unwrap(),
            FrameError::TooLarge {
                words: 3 * u64::from(u32::MAX),
                limit: 8 * 1024 * 1024
            }
        );

        // Exactly at the limit waits for the body.
        let mut decoder = FrameDecoder::new(limits);
        decoder.push(&0u32.to_le_bytes());
        decoder.push(&100u32.to_le_bytes());
        assert!(decoder.next_frame().unwrap().is_none());
    }

    // covers: W-01
    #[test]
    fn padding_follows_the_segment_count() {
        let mut counts_seen = std::collections::BTreeSet::new();
        for segments in 1..=6usize {
            let mut msg = Builder::new(
                HeapAllocator::new()
                    .first_segment_words(1)
                    .allocation_strategy(AllocationStrategy::FixedSize),
            );
            // A root pointer, then one word-sized struct list per further
            // segment: each allocation lands in a segment of its own.
            let mut list =
                msg.initn_root::<capnp::text_list::Builder>(u32::try_from(segments - 1).unwrap());
            for i in 0..segments - 1 {
                list.set(u32::try_from(i).unwrap(), "1234567");
            }
            let output = msg.get_segments_for_output();
            let count = output.len();
            counts_seen.insert(count);
            let bytes = encoded(&msg);
            let table_u32s = 1 + count;
            let padded = if table_u32s % 2 == 1 {
                table_u32s + 1
            } else {
                table_u32s
            };
            let body: usize = output.iter().map(|s| s.len()).sum();
            assert_eq!(bytes.len(), padded * 4 + body, "{count} segments");
            assert_eq!((padded * 4) % 8, 0);
            if padded != table_u32s {
                assert_eq!(&bytes[table_u32s * 4..padded * 4], &[0; 4]);
            }
            let mut decoder = FrameDecoder::new(Limits::default());
            decoder.push(&bytes);
            let frame = decoder.next_frame().unwrap().unwrap();
            assert_eq!(segment_count(&frame), count);
        }
        assert!(counts_seen.iter().any(|c| c % 2 == 0), "{counts_seen:?}");
        assert!(counts_seen.iter().any(|c| c % 2 == 1), "{counts_seen:?}");
    }

    // covers: W-01
    #[test]
    fn encode_matches_capnp_serialize() {
        for (n, tiny) in [(0, false), (1, false), (7, false), (3, true), (8, true)] {
            let msg = text_list_message(n, tiny);
            assert_eq!(
                encoded(&msg),
                capnp::serialize::write_message_to_words(&msg),
                "{n} entries, tiny segments: {tiny}"
            );
            let table_words = msg.get_segments_for_output().len() / 2 + 1;
            assert_eq!(
                encoded_words(&msg) + table_words,
                capnp::serialize::compute_serialized_size_in_words(&msg)
            );
            assert_eq!(
                encoded_words(&msg),
                msg.get_segments_for_output()
                    .iter()
                    .map(|s| s.len() / 8)
                    .sum::<usize>()
            );
        }
    }

    #[test]
    fn empty_builder_is_one_empty_segment() {
        let msg = Builder::new_default();
        let bytes = encoded(&msg);
        assert_eq!(bytes, [0u8; 8]);
        assert_eq!(encoded_words(&msg), 0);
        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.push(&bytes);
        let frame = decoder.next_frame().unwrap().unwrap();
        // Reading the root of an empty message must not panic.
        let _ = frame.get_root::<capnp::any_pointer::Reader>();
    }

    #[test]
    fn buffer_is_compacted_and_shrunk() {
        let big = text_list_message(20_000, false);
        let small = text_list_message(1, false);
        let mut decoder = FrameDecoder::new(Limits::default());
        decoder.push(&encoded(&big));
        assert!(decoder.next_frame().unwrap().is_some());
        assert_eq!(decoder.buffered(), 0);
        assert!(decoder.buf.capacity() <= KEEP_CAPACITY);
        // Many frames, a partial one at the end: the consumed prefix goes.
        let mut bytes = Vec::new();
        for _ in 0..100 {
            encode(&small, &mut bytes);
        }
        let one = encoded(&small).len();
        decoder.push(&bytes[..bytes.len() - 3]);
        for _ in 0..99 {
            assert!(decoder.next_frame().unwrap().is_some());
        }
        assert!(decoder.next_frame().unwrap().is_none());
        assert_eq!(decoder.buffered(), one - 3);
        decoder.push(&bytes[bytes.len() - 3..]);
        assert_eq!(decoder.start, 0);
        assert_eq!(decoder.buf.len(), one);
        assert!(decoder.next_frame().unwrap().is_some());
    }

    /// A deterministic xorshift64 generator.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    /// Reads everything reachable from a frame's root, ignoring errors.
    fn poke(frame: &Frame) {
        if let Ok(root) = frame.get_root::<capnp::any_pointer::Reader>() {
            let _ = root.target_size();
            let _ = root.get_as::<capnp::text_list::Reader>().map(|list| {
                for item in list.iter() {
                    let _ = item;
                }
            });
            let _ = root.get_as::<capnp::struct_list::Reader<crate::rpc_capnp::message::Owned>>();
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let limits = Limits {
            max_segments: 8,
            max_message_words: 64,
            traversal_limit_words: 256,
            nesting_limit: 8,
        };
        let mut frames = 0;
        let mut errors = 0;
        for round in 0..3000 {
            let mut decoder = FrameDecoder::new(if round % 2 == 0 {
                limits
            } else {
                Limits::default()
            });
            let mut bytes = Vec::new();
            // Half the rounds start with a plausible header so that random
            // bodies reach the message reader.
            if round % 2 == 0 {
                let segments = (rng.next() % 4) as u32 + 1;
                bytes.extend((segments - 1).to_le_bytes());
                for _ in 0..segments {
                    bytes.extend(((rng.next() % 6) as u32).to_le_bytes());
                }
                if segments & 1 == 0 {
                    bytes.extend([0; 4]);
                }
            }
            let len = (rng.next() % 300) as usize;
            bytes.extend((0..len).map(|_| rng.next() as u8));
            let mut at = 0;
            while at < bytes.len() {
                let step = 1 + (rng.next() % 40) as usize;
                let end = (at + step).min(bytes.len());
                decoder.push(&bytes[at..end]);
                at = end;
                loop {
                    match decoder.next_frame() {
                        Ok(Some(frame)) => {
                            frames += 1;
                            poke(&frame);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            errors += 1;
                            let _ = e.to_string();
                            let _: crate::error::Error = e.into();
                            break;
                        }
                    }
                }
                if decoder.failed.is_some() {
                    break;
                }
            }
        }
        assert!(frames > 100, "only {frames} frames decoded");
        assert!(errors > 100, "only {errors} errors");
    }

    /// A message holding `len` bytes of data, plus its framed form.
    fn data_message(len: usize) -> (Vec<u8>, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut msg = capnp::message::Builder::new_default();
        msg.set_root::<capnp::data::Owned>(&data[..]).unwrap();
        (data, encoded(&msg))
    }

    // covers: W-01
    #[test]
    fn large_frames_arrive_whole_however_they_are_cut() {
        let (data, mut bytes) = data_message(1 << 20);
        let (small, small_bytes) = data_message(10);
        bytes.extend_from_slice(&small_bytes);
        for chunk in [1usize, 7, 4096, 65536, 1 << 20] {
            let mut decoder = FrameDecoder::new(Limits::default());
            let mut frames = Vec::new();
            for piece in bytes.chunks(chunk) {
                decoder.push(piece);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    frames.push(frame);
                }
            }
            assert_eq!(frames.len(), 2, "chunk {chunk}");
            assert_eq!(
                frames[0].get_root::<capnp::data::Reader>().unwrap(),
                &data[..]
            );
            assert_eq!(
                frames[1].get_root::<capnp::data::Reader>().unwrap(),
                &small[..]
            );
            assert_eq!(decoder.buffered(), 0);
        }
    }

    // covers: W-01
    #[test]
    fn a_large_body_can_be_read_straight_into_place() {
        let (data, bytes) = data_message(300_000);
        let mut decoder = FrameDecoder::new(Limits::default());
        // The header and a little of the body through `push`...
        decoder.push(&bytes[..100]);
        assert!(decoder.next_frame().unwrap().is_none());
        // ...the rest written where the decoder says.
        let mut at = 100;
        while at < bytes.len() {
            let space = decoder.read_space(10_000).expect("a large body is pending");
            let n = space.len().min(bytes.len() - at);
            assert!(n > 0);
            space[..n].copy_from_slice(&bytes[at..at + n]);
            decoder.filled(n);
            at += n;
        }
        let frame = decoder.next_frame().unwrap().expect("the frame is whole");
        assert_eq!(frame.get_root::<capnp::data::Reader>().unwrap(), &data[..]);
        assert!(decoder.read_space(10).is_none());
    }
}
