# The scaling benchmark's interface (examples/scaling.rs): a method whose
# cost is CPU time on the server.
@0xae4c443cb7dd7430;

interface Work {
  burn @0 (micros :UInt32) -> (spins :UInt64);
  # Spins on the server's thread for `micros` microseconds of wall time
  # (CPU time on an idle core), and says how many loop turns that took.
}
