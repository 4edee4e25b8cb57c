# capnp-actix's copy of the cross-implementation benchmark interface
# (../shared/bench/bench.capnp); ids and ordinals are the contract.
@0xfcfdd4aa58e63606;

interface Bench {
  echo @0 (data :Data) -> (data :Data);
  noop @1 () -> ();
  next @2 () -> (next :Bench);
  add @3 (a :Int64, b :Int64) -> (sum :Int64);
  callMeBack @4 (callback :Callback, count :UInt32) -> ();
  sink @5 () -> (sink :Sink);
}

interface Callback {
  ping @0 () -> ();
}

# The `stream` workload: chunks written as a stream, then the total.
interface Sink {
  write @0 (data :Data) -> stream;
  done @1 () -> (bytes :UInt64);
}
