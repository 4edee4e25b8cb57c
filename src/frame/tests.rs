//! Unit tests of the framing.

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
    assert_eq!(decoder.end, one);
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
    // Then reads go to the decoder's own buffer again.
    assert!(decoder.read_space(10).unwrap().len() >= READ_ROOM / 2);
}

// covers: W-01
#[test]
fn small_frames_are_read_straight_into_the_decoder() {
    let (data, bytes) = data_message(100);
    let mut stream = Vec::new();
    for _ in 0..200 {
        stream.extend_from_slice(&bytes);
    }
    let mut decoder = FrameDecoder::new(Limits::default());
    let mut frames = 0;
    let mut at = 0;
    while at < stream.len() {
        let space = decoder.read_space(usize::MAX).unwrap();
        // The room for a read is bounded: one small buffer per connection.
        assert!(space.len() >= READ_ROOM / 2 && space.len() <= 2 * READ_ROOM);
        // Reads cut frames anywhere (here: 1000 bytes at a time).
        let n = space.len().min(1000).min(stream.len() - at);
        space[..n].copy_from_slice(&stream[at..at + n]);
        decoder.filled(n);
        at += n;
        while let Some(frame) = decoder.next_frame().unwrap() {
            assert_eq!(frame.get_root::<capnp::data::Reader>().unwrap(), &data[..]);
            frames += 1;
        }
    }
    assert_eq!(frames, 200);
    assert_eq!(decoder.buffered(), 0);
    assert!(decoder.buf.len() <= 2 * READ_ROOM);
    // `filled` never counts more than the room it gave.
    let room = decoder.read_space(usize::MAX).unwrap().len();
    decoder.filled(room + 100);
    assert_eq!(decoder.buffered(), room);
}

// covers: W-01
#[test]
fn a_large_body_is_read_in_large_steps_but_not_far_ahead_of_its_bytes() {
    // A header announcing 32 MiB of body, then only 100 bytes of it.
    let words = 4 << 20;
    let mut header = Vec::new();
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&(words as u32).to_le_bytes());
    let mut decoder = FrameDecoder::new(Limits::default());
    decoder.push(&header);
    decoder.push(&[0u8; 100]);
    assert!(decoder.next_frame().unwrap().is_none());
    let large = decoder.large.as_ref().expect("a large body is pending");
    // Zeroed (touched) memory stays within a window of the bytes received,
    // and the buffer never moves: the whole body was reserved up front.
    assert!(large.words.len() * 8 <= 100 + LARGE_BODY_AHEAD + 8);
    assert!(large.words.capacity() >= words);
    // One read may take in a whole window at once.
    let space = decoder.read_space(usize::MAX).unwrap();
    assert!(space.len() >= LARGE_BODY_AHEAD - 100, "{}", space.len());
    assert!(space.len() <= LARGE_BODY_AHEAD + 8);
    let before = decoder.large.as_ref().unwrap().words.as_ptr();
    decoder.filled(LARGE_BODY_AHEAD - 100);
    let _ = decoder.read_space(usize::MAX).unwrap();
    assert_eq!(decoder.large.as_ref().unwrap().words.as_ptr(), before);
}

// covers: W-01
#[test]
fn a_table_for_no_segments_frames_one_empty_segment() {
    let mut out = Vec::new();
    encode_table(&[], &mut out);
    assert_eq!(out.len(), table_len(1), "a whole word of table");
    let mut expected = Vec::new();
    encode_table(&[&[]], &mut expected);
    assert_eq!(out, expected);
    // The decoder reads it as a complete frame of one empty segment.
    let mut decoder = FrameDecoder::new(Limits::default());
    decoder.push(&out);
    let frame = decoder.next_frame().unwrap().expect("a whole frame");
    assert_eq!(segment_count(&frame), 1);
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn a_pooled_buffer_holds_only_the_next_frame() {
    // A frame of several words goes, and its buffer serves the next,
    // smaller frame on this thread: that frame reads as itself, with
    // nothing of the earlier one before or after it.
    let mut decoder = FrameDecoder::new(Limits::default());
    decoder.push(&encoded(&text_list_message(3, false)));
    let first = decoder.next_frame().unwrap().unwrap();
    assert_text_list(&first, 3);
    let first_words = first.into_segments().get_segment(0).unwrap().len() / 8;
    assert!(first_words <= POOLED_WORDS, "a frame the pool serves");

    decoder.push(&encoded(&text_list_message(1, false)));
    let second = decoder.next_frame().unwrap().unwrap();
    assert_text_list(&second, 1);
    let second_words = second.into_segments().get_segment(0).unwrap().len() / 8;
    assert!(second_words < first_words);
    let mut expected = Vec::new();
    encode(&text_list_message(1, false), &mut expected);
    assert_eq!(second_words * 8 + 8, expected.len(), "just its own words");
}

/// A message whose root is `n` bytes of data, each `byte`, framed.
fn data_frame_bytes(n: usize, byte: u8) -> Vec<u8> {
    let mut msg = Builder::new_default();
    msg.set_root::<capnp::data::Owned>(&vec![byte; n][..])
        .unwrap();
    encoded(&msg)
}

/// Decodes `bytes` (one frame), given to the decoder `step` bytes at a
/// time through its read space.
fn decode_in_steps(bytes: &[u8], step: usize) -> Frame {
    let mut decoder = FrameDecoder::new(Limits::default());
    let mut at = 0;
    while at < bytes.len() {
        let space = decoder.read_space(step).unwrap();
        let n = space.len().min(step).min(bytes.len() - at);
        space[..n].copy_from_slice(&bytes[at..at + n]);
        decoder.filled(n);
        at += n;
    }
    decoder.next_frame().unwrap().expect("a whole frame")
}

fn data_of(frame: &Frame) -> &[u8] {
    frame.get_root::<capnp::data::Reader>().unwrap()
}

// covers: W-01
#[test]
fn a_large_frames_buffer_is_reused_and_its_old_bytes_never_read() {
    let first = decode_in_steps(&data_frame_bytes(200_000, 0xAA), 7_000);
    let buffer = first.into_segments();
    let at = buffer.get_segment(0).unwrap().as_ptr();
    drop(buffer);
    assert_eq!(large::pooled(), 1, "kept for the next large frame");
    // A smaller large frame takes it: exactly its own bytes, none of the
    // first frame's past them.
    let second = decode_in_steps(&data_frame_bytes(70_000, 0x55), 5_000);
    assert_eq!(large::pooled(), 0);
    assert_eq!(data_of(&second), &vec![0x55; 70_000][..]);
    let segments = second.into_segments();
    assert_eq!(segments.get_segment(0).unwrap().as_ptr(), at, "reused");
    let body: usize = (0..segments.len() as u32)
        .map(|i| segments.get_segment(i).unwrap().len())
        .sum();
    let framed = data_frame_bytes(70_000, 0x55).len();
    assert_eq!(
        body,
        framed - table_len(segments.len()),
        "no more than its body"
    );
    drop(segments);
    // One larger than any pooled buffer gets a new one, and is whole.
    let third = decode_in_steps(&data_frame_bytes(300_000, 0x33), 64_000);
    assert_eq!(data_of(&third), &vec![0x33; 300_000][..]);
    assert_eq!(large::pooled(), 1, "the smaller buffer stays");
}

// covers: W-01
#[test]
fn the_large_frames_pool_is_bounded() {
    // Six large frames alive at once, then dropped: four are kept, and
    // none over a mebibyte.
    let frames: Vec<Frame> = (0..6)
        .map(|i| decode_in_steps(&data_frame_bytes(100_000, i), 100_000))
        .collect();
    drop(frames);
    assert_eq!(large::pooled(), 4);
    let mut decoder_frames = Vec::new();
    for _ in 0..4 {
        decoder_frames.push(decode_in_steps(&data_frame_bytes(100_000, 1), 100_000));
    }
    assert_eq!(large::pooled(), 0);
    drop(decoder_frames);
    drop(decode_in_steps(&data_frame_bytes(2 << 20, 9), 1 << 20));
    assert_eq!(large::pooled(), 4, "a 2 MiB buffer is not kept");
}
