//! Frame decoding: any bytes, cut anywhere, must give frames, "need more",
//! or an error, and never a panic; every frame given must be readable
//! without a panic.
#![no_main]

use capnp::message::ReaderSegments;
use capnp_actix_proto::{FrameDecoder, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the input is cut, to try every way bytes
    // arrive: whole, in small pieces, or through `read_space`.
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_segments: 64,
        max_message_words: 1 << 16,
        ..Limits::default()
    };
    let mut decoder = FrameDecoder::new(limits);
    let piece = usize::from(cut % 64) + 1;
    for chunk in bytes.chunks(piece) {
        let mut chunk = chunk;
        if cut & 0x80 != 0 {
            if let Some(space) = decoder.read_space(chunk.len()) {
                let n = space.len().min(chunk.len());
                space[..n].copy_from_slice(&chunk[..n]);
                decoder.filled(n);
                chunk = &chunk[n..];
            }
        }
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    // Read what a connection would read first.
                    let root: capnp::Result<capnp_actix_proto::rpc_capnp::message::Reader> =
                        frame.get_root();
                    if let Ok(root) = root {
                        let _ = root.which();
                    }
                    let segments = frame.into_segments();
                    for i in 0..segments.len() {
                        let _ = segments.get_segment(i as u32);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
