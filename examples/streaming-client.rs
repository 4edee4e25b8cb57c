//! A streaming client on the schema and command line of capnp-rpc's own
//! streaming example (`capnp-rpc/examples/streaming`): it streams to that
//! example's server as well as to `streaming-server`.
//!
//! `streaming-client [client] ADDRESS STREAM_SIZE WINDOW_SIZE` connects,
//! calls `writeStream()` and, pipelined on its `stream`, writes
//! STREAM_SIZE bytes of pseudo-random data in 4 KiB chunks, each a
//! streaming `write` whose send completes when the flow control has room;
//! then `end()`, and checks the SHA-256 the server returns against its own.
//! WINDOW_SIZE is a fixed window in bytes, as capnp-rpc's
//! `set_window_size`; `0` (or `adaptive`) keeps the adaptive window, the
//! default. Prints `wrote N bytes with hash H` and the rate; exits 1 when
//! the hashes differ or a call fails, 2 on a usage error.

mod streaming;

// The generated code names its types `crate::streaming_capnp::...`.
use streaming::streaming_capnp;

use capnp_actix::{ConnOptions, FlowControl};
use std::time::Instant;
use streaming::{hex, Sha256};
use streaming_capnp::receiver;

const CHUNK: u64 = 4096;

/// A xorshift generator: the bytes only need to differ, not to be secret.
struct Bytes(u64);

impl Bytes {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

async fn stream(
    address: &str,
    size: u64,
    flow: FlowControl,
) -> Result<(), Box<dyn std::error::Error>> {
    let options = ConnOptions::new().flow_control(flow);
    let (_conn, receiver) = capnp_actix::connect_with::<receiver::Client>(address, options).await?;
    let call = receiver.write_stream_request().send();
    let stream = call.pipeline.get_stream();
    let mut hash = Sha256::new();
    let mut bytes = Bytes(0x9e37_79b9_7f4a_7c15 ^ size);
    let started = Instant::now();
    let mut written = 0u64;
    while written < size {
        let length = CHUNK.min(size - written) as u32;
        let mut request = stream.write_request();
        let buf = request.get().init_bytes(length);
        bytes.fill(buf);
        hash.update(buf);
        request.send().await?;
        written += u64::from(length);
    }
    let digest = hash.finish();
    println!("wrote {written} bytes with hash {}", hex(&digest));
    stream.end_request().send().promise.await?;
    let response = call.promise.await?;
    let theirs = response.get()?.get_sha256()?;
    let secs = started.elapsed().as_secs_f64();
    if theirs != digest {
        return Err(format!("the server's hash is {}, not ours", hex(theirs)).into());
    }
    println!(
        "hashes match; {:.1} MB/s",
        written as f64 / secs.max(f64::EPSILON) / 1e6
    );
    Ok(())
}

#[actix::main]
async fn main() {
    streaming::check_sha256();
    let args = streaming::args_after("client");
    let usage = || -> ! {
        eprintln!("usage: streaming-client [client] ADDRESS STREAM_SIZE WINDOW_SIZE");
        std::process::exit(2)
    };
    let [address, size, window] = args.as_slice() else {
        usage()
    };
    let Ok(size) = size.parse::<u64>() else {
        usage()
    };
    let flow = match window.as_str() {
        "0" | "adaptive" => FlowControl::default(),
        bytes => match bytes.parse::<usize>() {
            Ok(bytes) => FlowControl::Fixed(bytes),
            Err(_) => usage(),
        },
    };
    if let Err(e) = stream(address, size, flow).await {
        eprintln!("streaming-client: {e}");
        std::process::exit(1);
    }
}
