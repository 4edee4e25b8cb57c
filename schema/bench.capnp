# capnp-actix's copy of the cross-implementation benchmark interface
# (../shared/bench/bench.capnp); ids and ordinals are the contract.
@0xfcfdd4aa58e63606;

interface Bench {
  echo @0 (data :Data) -> (data :Data);
  noop @1 () -> ();
  next @2 () -> (next :Bench);
  add @3 (a :Int64, b :Int64) -> (sum :Int64);
  callMeBack @4 (callback :Callback, count :UInt32) -> ();
}

interface Callback {
  ping @0 () -> ();
}
