@0x9fedc87e438cde81;
# The schema of capnp-rpc's streaming example (same file id, interfaces and
# ordinals), so that examples/streaming-server and examples/streaming-client
# talk to capnp-rpc's `streaming server` and `streaming client`.

interface ByteStream {
  write @0 (bytes :Data) -> stream;
  # One chunk of the stream (a streaming call: its send completes when the
  # flow control has room, not when it returns).

  end @1 ();
  # No more chunks.
}

interface Receiver {
  writeStream @0 () -> (stream :ByteStream, sha256 :Data);
  # `stream` is available at once (set with setPipeline), to pipeline the
  # writes on; the call returns after `end()`, with the SHA-256 of every
  # byte written.
}
